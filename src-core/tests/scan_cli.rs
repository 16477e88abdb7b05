//! `airlock scan` as a user runs it: real binary, temporary directories, generated credentials.

use airlock::inspect::testgen::Gen;
use assert_cmd::Command;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn airlock() -> Command {
    match Command::cargo_bin("airlock") {
        Ok(c) => c,
        Err(e) => panic!("airlock binary: {e}"),
    }
}

fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
    }
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(dir: &Path, args: &[&str]) -> Run {
    let out = airlock()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn git(dir: &Path, args: &[&str]) {
    let st = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("git: {e}"));
    assert!(st.success(), "git {args:?}");
}

#[test]
fn clean_tree_exits_zero() {
    let d = tmp();
    write(
        d.path(),
        "README.md",
        "# Hello\nNothing to see here, just prose and code.\n",
    );
    write(
        d.path(),
        "src/main.py",
        "print('hi')\nkey = os.environ['OPENAI_API_KEY']\n",
    );
    let r = run(d.path(), &["scan", "."]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn findings_in_a_tree_exit_one_with_locations_and_previews_only() {
    let d = tmp();
    let mut g = Gen::new(1);
    let gh = g.github("ghp_");
    let aws = g.expand("AKIA{{z:16}}").unwrap_or_default();
    write(d.path(), ".env", &format!("# env\nGITHUB_TOKEN={gh}\n"));
    write(
        d.path(),
        "app/config.py",
        &format!("import os\n\nAWS = \"{aws}\"\n"),
    );
    write(d.path(), ".gitignore", "ignored.txt\n");
    write(d.path(), "ignored.txt", &format!("{gh}\n"));
    let r = run(d.path(), &["scan", "."]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains(".env:2:14: github-pat [secret/github] ghp_****"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("app/config.py:3:8: aws-access-key-id"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("ignored.txt"),
        "gitignored files are skipped"
    );
    for out in [&r.stdout, &r.stderr] {
        assert!(
            !out.contains(&gh[4..]) && !out.contains(&aws[4..]),
            "never print a secret"
        );
    }
}

#[test]
fn stdin_json_lines_have_the_stable_fields() {
    let mut g = Gen::new(2);
    let key = g.expand("sk-ant-api03-{{B:93}}AA").unwrap_or_default();
    let text = format!("line one\nuse {key} now\n");
    let out = airlock()
        .args(["scan", "-", "--format", "json"])
        .write_stdin(text.clone())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines.len(), 1);
    let f = &lines[0];
    assert_eq!(f["path"], "-");
    assert_eq!(f["line"], 2);
    assert_eq!(f["rule"], "anthropic-api-key");
    assert_eq!(f["kind"], "secret");
    assert_eq!(f["preview"], "sk-a****");
    let (s, e) = (
        f["start"].as_u64().unwrap_or(0) as usize,
        f["end"].as_u64().unwrap_or(0) as usize,
    );
    assert_eq!(
        &text[s..e],
        key,
        "start/end are byte offsets into the input"
    );
    let keys: Vec<&str> = f
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        &keys[..7],
        ["path", "line", "start", "end", "rule", "kind", "preview"]
    );
}

#[test]
fn json_offsets_point_into_the_file() {
    let d = tmp();
    let mut g = Gen::new(3);
    let card = g.card("visa_spaced");
    let text = format!("héllo wörld\npay with {card} today\n");
    write(d.path(), "notes.txt", &text);
    let r = run(d.path(), &["scan", "notes.txt", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let f = &json_lines(&r.stdout)[0];
    assert_eq!(f["path"], "notes.txt");
    assert_eq!(f["kind"], "pii");
    assert_eq!(f["family"], "card");
    let (s, e) = (
        f["start"].as_u64().unwrap_or(0) as usize,
        f["end"].as_u64().unwrap_or(0) as usize,
    );
    assert_eq!(&text.as_bytes()[s..e], card.as_bytes());
    assert_eq!(f["column"], 10);
}

#[test]
fn sarif_has_the_2_1_0_shape() {
    let d = tmp();
    let mut g = Gen::new(4);
    write(d.path(), "a.txt", &format!("token {}\n", g.github("gho_")));
    write(
        d.path(),
        "b/c.yaml",
        &format!(
            "slack: xoxb-{}-{}-{}\n",
            g.expand("{{d:12}}").unwrap_or_default(),
            g.expand("{{d:12}}").unwrap_or_default(),
            g.expand("{{m:24}}").unwrap_or_default()
        ),
    );
    let r = run(d.path(), &["scan", ".", "--format", "sarif"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(doc["version"], "2.1.0");
    assert!(doc["$schema"]
        .as_str()
        .is_some_and(|s| s.contains("sarif-2.1.0")));
    let run0 = &doc["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "airlock");
    let rules = run0["tool"]["driver"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let results = run0["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2);
    for res in &results {
        let idx = res["ruleIndex"].as_u64().unwrap_or(999) as usize;
        assert_eq!(
            rules[idx]["id"], res["ruleId"],
            "ruleIndex points at the rule"
        );
        assert!(res["message"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        let loc = &res["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap_or_default();
        assert!(
            !uri.starts_with('/') && !uri.starts_with("./") && !uri.contains('\\'),
            "{uri}"
        );
        assert!(loc["region"]["startLine"].as_u64().is_some_and(|l| l >= 1));
        assert!(loc["region"]["startColumn"]
            .as_u64()
            .is_some_and(|c| c >= 1));
        assert!(res["partialFingerprints"]
            .as_object()
            .is_some_and(|o| !o.is_empty()));
        assert!(matches!(
            res["level"].as_str(),
            Some("error" | "warning" | "note")
        ));
    }
    for rule in &rules {
        assert!(rule["shortDescription"]["text"].is_string());
        assert!(rule["properties"]["security-severity"].is_string());
    }
}

#[test]
fn sarif_uri_of_a_path_with_spaces_and_non_ascii_is_percent_encoded() {
    let d = tmp();
    let mut g = Gen::new(6);
    write(
        d.path(),
        "team notes/naïve #1.txt",
        &format!("token {}\n", g.github("ghp_")),
    );
    let r = run(d.path(), &["scan", ".", "--format", "sarif"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let loc = &doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"];
    assert_eq!(
        loc["artifactLocation"]["uri"],
        "team%20notes/na%C3%AFve%20%231.txt"
    );
    let text = run(d.path(), &["scan", "."]);
    assert!(
        text.stdout.starts_with("team notes/naïve #1.txt:1:7:"),
        "text output keeps the plain path: {}",
        text.stdout
    );
}

#[test]
fn missing_path_is_an_error() {
    let d = tmp();
    let r = run(d.path(), &["scan", "does-not-exist"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does-not-exist"));
}

#[test]
fn inline_pragma_and_airlockignore_suppress() {
    let d = tmp();
    let mut g = Gen::new(5);
    let a = g.github("ghp_");
    let b = g.github("ghp_");
    let c = g.github("ghp_");
    write(
        d.path(),
        "src/x.py",
        &format!("A = '{a}'  # airlock:allow\nB = '{b}'\n"),
    );
    write(d.path(), "fixtures/data.txt", &format!("{c}\n"));
    let r = run(d.path(), &["scan", ".", "--format", "json"]);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 2, "pragma hides line 1: {}", r.stdout);
    let fp_b = found
        .iter()
        .find(|f| f["path"] == "src/x.py")
        .map(|f| f["fingerprint"].as_str().unwrap_or("").to_string());
    let fp_b = fp_b.unwrap_or_default();
    write(
        d.path(),
        ".airlockignore",
        &format!("# fixtures are fake\nfixtures/\nfingerprint:{fp_b}\n"),
    );
    let r = run(d.path(), &["scan", "."]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn baseline_accepts_old_findings_and_fails_on_new() {
    let d = tmp();
    let mut g = Gen::new(6);
    write(
        d.path(),
        "old.env",
        &format!("TOKEN={}\n", g.github("ghp_")),
    );
    let r = run(
        d.path(),
        &["scan", ".", "--write-baseline", "baseline.json"],
    );
    assert_eq!(r.code, 0, "writing a baseline succeeds: {}", r.stderr);
    let base = std::fs::read_to_string(d.path().join("baseline.json")).unwrap_or_default();
    assert!(
        base.contains("github-pat") && !base.contains("ghp_"),
        "no values in the baseline"
    );
    let r = run(d.path(), &["scan", ".", "--baseline", "baseline.json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    write(
        d.path(),
        "new.env",
        &format!("TOKEN={}\n", g.github("ghs_")),
    );
    let r = run(
        d.path(),
        &[
            "scan",
            ".",
            "--baseline",
            "baseline.json",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 1);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["path"], "new.env");
}

#[test]
fn staged_mode_scans_only_added_lines_with_file_line_numbers() {
    let d = tmp();
    let dir = d.path();
    git(dir, &["init", "-q"]);
    git(dir, &["config", "user.email", "dev@localhost"]);
    git(dir, &["config", "user.name", "dev"]);
    let mut g = Gen::new(7);
    let old = g.github("ghp_");
    write(
        dir,
        "app.py",
        &format!("a = 1\nb = 2\nOLD = '{old}'  # airlock:allow\nc = 3\n"),
    );
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "init"]);
    let r = run(dir, &["scan", "--staged"]);
    assert_eq!(r.code, 0, "nothing staged: {}{}", r.stdout, r.stderr);
    let new = g.github("ghp_");
    let text = format!("a = 1\nb = 2\nOLD = '{old}'  # airlock:allow\nc = 3\nNEW = '{new}'\n");
    write(dir, "app.py", &text);
    write(dir, "unstaged.py", &format!("X = '{}'\n", g.github("ghp_")));
    git(dir, &["add", "app.py"]);
    let r = run(dir, &["scan", "--staged", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1, "{}", r.stdout);
    assert_eq!(found[0]["path"], "app.py");
    assert_eq!(found[0]["line"], 5);
    let (s, e) = (
        found[0]["start"].as_u64().unwrap_or(0) as usize,
        found[0]["end"].as_u64().unwrap_or(0) as usize,
    );
    assert_eq!(&text[s..e], new);
}

#[test]
fn binary_files_are_skipped() {
    let d = tmp();
    let mut g = Gen::new(8);
    let mut bytes = vec![0u8, 1, 2, 3];
    bytes.extend_from_slice(g.github("ghp_").as_bytes());
    std::fs::write(d.path().join("blob.bin"), bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(d.path(), &["scan", "."]).code, 0);
}

#[test]
fn large_files_are_scanned_in_chunks_without_loss_or_duplicates() {
    let d = tmp();
    let mut g = Gen::new(9);
    let mut text = String::new();
    let line = "The quick brown fox jumps over the lazy dog, again and again.\n";
    let mut keys = Vec::new();
    // Put keys around the 8 MiB chunk boundary and elsewhere.
    while text.len() < 17 << 20 {
        let near_boundary = [(8 << 20) - 40_000, (8 << 20) - 70, (16 << 20) - 65_000];
        if near_boundary
            .iter()
            .any(|&b| text.len() <= b && b < text.len() + line.len())
            || text.is_empty()
        {
            let k = g.github("ghp_");
            text.push_str(&format!("key {k}\n"));
            keys.push(k);
        }
        text.push_str(line);
    }
    write(d.path(), "big.log", &text);
    let r = run(d.path(), &["scan", "big.log", "--format", "json"]);
    assert_eq!(r.code, 1);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), keys.len(), "{}", r.stdout);
    for f in &found {
        let (s, e) = (
            f["start"].as_u64().unwrap_or(0) as usize,
            f["end"].as_u64().unwrap_or(0) as usize,
        );
        assert!(keys.contains(&text[s..e].to_string()));
        let line_no = text[..s].matches('\n').count() + 1;
        assert_eq!(f["line"], line_no);
    }
}

#[test]
fn watch_reports_a_key_pasted_into_dotenv() {
    let d = tmp();
    write(d.path(), "README.md", "clean\n");
    let bin = assert_cmd::cargo::cargo_bin("airlock");
    let mut child = std::process::Command::new(bin)
        .current_dir(d.path())
        .args(["scan", "--watch", ".", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("stderr"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send((false, l)).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((true, l)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut watching = false;
    while !watching && Instant::now() < deadline {
        if let Ok((false, l)) = rx.recv_timeout(Duration::from_millis(200)) {
            watching = l.contains("watching");
        }
    }
    assert!(watching, "watcher did not start");
    let mut g = Gen::new(10);
    let key = g
        .expand("sk-proj-{{B:74}}T3BlbkFJ{{B:74}}")
        .unwrap_or_default();
    write(d.path(), ".env", &format!("OPENAI_API_KEY={key}\n"));
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        if let Ok((true, l)) = rx.recv_timeout(Duration::from_millis(200)) {
            got = Some(l);
        }
    }
    let kill = child.kill();
    let _reaped = child.wait();
    assert!(kill.is_ok());
    let line = got.unwrap_or_else(|| panic!("no finding reported for the pasted key"));
    let f: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(f["rule"], "openai-project-key");
    assert!(
        f["path"].as_str().is_some_and(|p| p.ends_with(".env")),
        "{line}"
    );
    assert!(!line.contains(&key[10..]));
}

fn fingerprints(stdout: &str) -> Vec<String> {
    json_lines(stdout)
        .iter()
        .map(|f| f["fingerprint"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn each_secret_has_its_own_fingerprint_and_a_baseline_accepts_only_its_own() {
    let d = tmp();
    let mut g = Gen::new(21);
    let (a, b) = (g.github("ghp_"), g.github("ghp_"));
    write(d.path(), "a.env", &format!("TOKEN={a}\n"));
    write(d.path(), "b.env", &format!("TOKEN={b}\n"));
    let r = run(d.path(), &["scan", ".", "--format", "json"]);
    let fps = fingerprints(&r.stdout);
    assert_eq!(fps.len(), 2, "{}", r.stdout);
    assert_ne!(fps[0], fps[1], "two different tokens, two fingerprints");
    // The same token elsewhere has the same fingerprint.
    write(d.path(), "c.env", &format!("X={a}\n"));
    let r = run(d.path(), &["scan", "a.env", "c.env", "--format", "json"]);
    let fps = fingerprints(&r.stdout);
    assert_eq!(fps.len(), 2, "{}", r.stdout);
    assert_eq!(fps[0], fps[1]);
    // A baseline taken of a.env does not accept a new token added to it.
    let r = run(
        d.path(),
        &["scan", "a.env", "--write-baseline", "base.json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    write(
        d.path(),
        "a.env",
        &format!("TOKEN={a}\nNEW={}\n", g.github("ghp_")),
    );
    let r = run(
        d.path(),
        &[
            "scan",
            "a.env",
            "--baseline",
            "base.json",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1, "{}", r.stdout);
    assert_eq!(found[0]["line"], 2);
}

#[test]
fn a_file_of_exactly_one_chunk_is_scanned_to_its_end() {
    let d = tmp();
    let mut g = Gen::new(22);
    let key = g.github("ghp_");
    let size = 8 << 20;
    let secret_line = format!("K={key}\n");
    let mut text = "a\n".repeat((size - 600 - secret_line.len()) / 2);
    text.push_str(&secret_line);
    text.push_str(&"z".repeat(size - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), size);
    write(d.path(), "e.txt", &text);
    let r = run(d.path(), &["scan", "e.txt", "--format", "json"]);
    assert_eq!(
        r.code, 1,
        "the key in the last 32 KiB is found: {}",
        r.stderr
    );
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1);
    let s = found[0]["start"].as_u64().unwrap_or(0) as usize;
    assert_eq!(&text[s..s + key.len()], key);
}

#[test]
fn columns_and_pragma_hold_on_a_line_longer_than_a_chunk() {
    let d = tmp();
    let mut g = Gen::new(23);
    let key = g.github("ghp_");
    let text = format!("a\n{}k {key}\n", "word ".repeat(2_000_000));
    write(d.path(), "l.txt", &text);
    let r = run(d.path(), &["scan", "l.txt", "--format", "json"]);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), 1, "{}", r.stderr);
    assert_eq!(found[0]["line"], 2);
    assert_eq!(found[0]["column"], 10_000_003);
    // The pragma 10 MB before the key, on the same line, still counts.
    let text = format!("# airlock:allow {}k {key}\n", "x".repeat(10 << 20));
    write(d.path(), "p.txt", &text);
    let r = run(d.path(), &["scan", "p.txt"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

/// Thousands of findings on one line (minified code): each has its own column, counted in
/// chars, and a pragma at the line's end covers every one of them.
#[test]
fn many_findings_on_one_line_have_their_own_columns_and_share_its_pragma() {
    let d = tmp();
    let mut g = Gen::new(31);
    let keys: Vec<String> = (0..3000).map(|_| g.github("ghp_")).collect();
    let line = keys.join(" é ");
    write(d.path(), "min.js", &format!("x\n{line}\n"));
    let r = run(d.path(), &["scan", "min.js", "--format", "json"]);
    let found = json_lines(&r.stdout);
    assert_eq!(found.len(), keys.len(), "{}", r.stderr);
    let mut at = 0;
    for (f, key) in found.iter().zip(&keys) {
        at += line[at..]
            .find(key.as_str())
            .unwrap_or_else(|| panic!("{key}"));
        assert_eq!(f["line"], 2);
        assert_eq!(f["start"], 2 + at);
        assert_eq!(f["column"], line[..at].chars().count() + 1, "{f}");
    }
    write(d.path(), "min.js", &format!("x\n{line} // airlock:allow\n"));
    let r = run(d.path(), &["scan", "min.js"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

/// Output that cannot be written (a full disk here; a closed pipe alike) stops the scan with
/// that error, and no file is blamed for it.
#[test]
fn an_unwritable_stdout_is_an_error_of_its_own() {
    let d = tmp();
    let mut g = Gen::new(37);
    let keys: Vec<String> = (0..50).map(|_| g.github("ghp_")).collect();
    write(d.path(), "a.env", &keys.join("\n"));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap_or_else(|e| panic!("/dev/full: {e}"));
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("airlock"))
        .current_dir(d.path())
        .args(["scan", "a.env"])
        .stdout(full)
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("writing the findings to stdout"),
        "{stderr}"
    );
    assert!(!stderr.contains("a.env"), "{stderr}");
    assert!(!stderr.contains("could not be scanned"), "{stderr}");
    assert!(!stderr.contains("no findings"), "{stderr}");
}

#[test]
fn a_pipe_named_on_the_command_line_is_read() {
    let d = tmp();
    let mut g = Gen::new(24);
    let key = g.github("ghp_");
    let out = airlock()
        .current_dir(d.path())
        .args(["scan", "/dev/stdin", "--format", "json"])
        .write_stdin(format!("K={key}\n"))
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&String::from_utf8_lossy(&out.stdout)).len(), 1);
}

#[test]
fn a_path_named_twice_is_scanned_once() {
    let d = tmp();
    let mut g = Gen::new(25);
    write(d.path(), "o.env", &format!("K={}\n", g.github("ghp_")));
    let r = run(
        d.path(),
        &["scan", "o.env", "./o.env", ".", "--format", "json"],
    );
    assert_eq!(json_lines(&r.stdout).len(), 1, "{}", r.stdout);
}

#[test]
fn errors_never_print_a_secret_from_the_input() {
    let d = tmp();
    let mut g = Gen::new(26);
    let key = g.github("ghp_");
    write(d.path(), "r.toml", &format!("k={key}\n"));
    write(d.path(), "s.toml", &format!("disabled = \"{key}\"\n"));
    write(d.path(), "t.toml", &format!("disabled = [\"{key}\"]\n"));
    for file in ["r.toml", "s.toml", "t.toml"] {
        let r = run(d.path(), &["scan", "--rules", file, "r.toml"]);
        assert_eq!(r.code, 2, "{file}: {}", r.stderr);
        assert!(!r.stderr.contains(&key[4..]), "{file}: {}", r.stderr);
        assert!(r.stderr.contains(file), "{file}: {}", r.stderr);
    }
}

/// QA: a path that could not be read was printed whole, secret and all; a file name with a
/// line break or an escape sequence was printed raw in text output, forging lines.
#[test]
fn paths_in_messages_are_masked_and_control_characters_escaped() {
    let d = tmp();
    let mut g = Gen::new(33);
    let key = g.github("ghp_");
    let missing = format!("nope/{key}.txt");
    let dangling = format!("l-{key}");
    std::os::unix::fs::symlink("gone", d.path().join(&dangling)).unwrap_or_else(|e| panic!("{e}"));
    let r = run(d.path(), &["scan", &missing]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("ghp_"), "{}", r.stderr);
    assert!(!r.stderr.contains(&key[4..]), "{}", r.stderr);
    let r = run(d.path(), &["scan", &dangling]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains(&key[4..]), "{}", r.stderr);
    std::fs::remove_file(d.path().join(&dangling)).unwrap_or_else(|e| panic!("{e}"));

    let name = "evil\u{1b}[31mred\nfake.txt:9:9: ok";
    write(d.path(), name, &format!("k = {}\n", g.github("ghp_")));
    let r = run(d.path(), &["scan", "."]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains('\u{1b}'), "{:?}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 1, "{:?}", r.stdout);
    assert!(
        r.stdout.starts_with("evil\\u{1b}[31mred\\u{a}fake"),
        "{:?}",
        r.stdout
    );
}

#[test]
fn bad_suppression_files_are_errors() {
    let d = tmp();
    let mut g = Gen::new(27);
    write(d.path(), "o.env", &format!("K={}\n", g.github("ghp_")));
    for shape in [
        "[]",
        "{\"findings\": \"x\"}",
        "{\"findings\": [{\"path\": 1}]}",
    ] {
        write(d.path(), "w.json", shape);
        let r = run(d.path(), &["scan", "--baseline", "w.json", "o.env"]);
        assert_eq!(r.code, 2, "{shape}: {}", r.stderr);
        assert!(r.stderr.contains("invalid baseline"), "{}", r.stderr);
    }
    write(d.path(), "v.json", "{\"version\": 2, \"findings\": []}");
    let r = run(d.path(), &["scan", "--baseline", "v.json", "o.env"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("version 2"), "{}", r.stderr);
    // A fingerprint cut short or mistyped would suppress nothing, silently.
    for line in ["fingerprint:", "fingerprint:zzzz", "fingerprint:5430824d"] {
        write(d.path(), "i.txt", &format!("{line}\n"));
        let r = run(d.path(), &["scan", "--ignore-file", "i.txt", "o.env"]);
        assert_eq!(r.code, 2, "{line}: {}", r.stderr);
        assert!(
            r.stderr.contains("i.txt:1: a fingerprint is 32 hex digits"),
            "{}",
            r.stderr
        );
    }
    let r = run(d.path(), &["scan", "--ignore-file", "missing", "o.env"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(d.path(), &["scan", "missing.env", "--format", "sarif"]);
    assert_eq!(r.code, 2);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    assert_eq!(
        doc["runs"][0]["invocations"][0]["executionSuccessful"], false,
        "{}",
        r.stdout
    );
}

#[test]
fn a_new_baseline_keeps_what_the_old_one_accepted() {
    let d = tmp();
    let mut g = Gen::new(28);
    write(d.path(), "b.env", &format!("S={}\n", g.github("ghp_")));
    let r = run(d.path(), &["scan", "b.env", "--write-baseline", "b1.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    write(
        d.path(),
        "b.env",
        &format!(
            "{}O={}\n",
            std::fs::read_to_string(d.path().join("b.env")).unwrap_or_default(),
            g.github("gho_")
        ),
    );
    let r = run(
        d.path(),
        &[
            "scan",
            "b.env",
            "--baseline",
            "b1.json",
            "--write-baseline",
            "b2.json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(d.path(), &["scan", "b.env", "--baseline", "b2.json"]);
    assert_eq!(r.code, 0, "both findings are in b2.json: {}", r.stdout);
}

#[test]
fn the_config_rules_apply_to_scan() {
    let d = tmp();
    let mut g = Gen::new(29);
    write(d.path(), "o.env", &format!("K={}\n", g.github("ghp_")));
    write(d.path(), "c.toml", "[rules]\ndisabled = [\"github-pat\"]\n");
    let r = run(d.path(), &["--config", "c.toml", "scan", "o.env"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = run(d.path(), &["scan", "o.env"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
}

/// A repository with one commit, for the staged tests.
fn repo() -> tempfile::TempDir {
    let d = tmp();
    let dir = d.path();
    git(dir, &["init", "-q"]);
    git(dir, &["config", "user.email", "dev@localhost"]);
    git(dir, &["config", "user.name", "dev"]);
    write(dir, "README", "x\n");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "init"]);
    d
}

#[test]
fn staged_paths_are_exact_whatever_their_names_and_diff_settings() {
    let d = repo();
    let dir = d.path();
    let mut g = Gen::new(30);
    let mut expected = Vec::new();
    for name in ["my file.env", "q\"t.env", "sub dir/naïve.env", "notes.md"] {
        let key = g.github("ghp_");
        let text = if name == "notes.md" {
            // An added line that reads like a file header.
            format!("++ b/docs/x\nK={key}\n")
        } else {
            format!("x\ny\nK={key}\n")
        };
        write(dir, name, &text);
        expected.push((name.to_string(), text, key));
    }
    git(dir, &["add", "-A"]);
    for config in [
        &[][..],
        &["config", "diff.noprefix", "true"][..],
        &["config", "diff.mnemonicPrefix", "true"][..],
        &["config", "diff.relative", "true"][..],
    ] {
        if !config.is_empty() {
            git(dir, config);
        }
        let r = run(dir, &["scan", "--staged", "--format", "json"]);
        assert_eq!(r.code, 1, "{config:?}: {}", r.stderr);
        let mut found: Vec<(String, usize, usize)> = json_lines(&r.stdout)
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap_or_default().to_string(),
                    f["start"].as_u64().unwrap_or(0) as usize,
                    f["end"].as_u64().unwrap_or(0) as usize,
                )
            })
            .collect();
        found.sort();
        let mut want: Vec<_> = expected.iter().map(|(p, _, _)| p.clone()).collect();
        want.sort();
        assert_eq!(
            found.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            want,
            "{config:?}"
        );
        for (path, s, e) in &found {
            let (_, text, key) = expected.iter().find(|x| &x.0 == path).expect("listed");
            assert_eq!(&text[*s..*e], key, "{config:?} {path}");
        }
    }
    // `.airlockignore` names a staged path with a space, anchored, and run from a subdirectory.
    write(dir, ".airlockignore", "/my file.env\n/sub dir/\n");
    let sub = dir.join("sub dir");
    let r = run(&sub, &["scan", "--staged", "--format", "json"]);
    let paths: Vec<String> = json_lines(&r.stdout)
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !paths
            .iter()
            .any(|p| p == "my file.env" || p.starts_with("sub dir")),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 2, "{paths:?}");
}

#[test]
fn staged_type_change_from_symlink_to_file_is_scanned() {
    let d = repo();
    let dir = d.path();
    std::os::unix::fs::symlink("README", dir.join("l.env")).unwrap_or_else(|e| panic!("{e}"));
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "link"]);
    std::fs::remove_file(dir.join("l.env")).unwrap_or_else(|e| panic!("{e}"));
    let mut g = Gen::new(31);
    write(dir, "l.env", &format!("K={}\n", g.github("ghp_")));
    git(dir, &["add", "l.env"]);
    let r = run(dir, &["scan", "--staged"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
}

#[test]
fn staged_files_marked_binary_or_no_diff_in_gitattributes_are_still_scanned() {
    let d = repo();
    let dir = d.path();
    write(dir, ".gitattributes", "*.env -diff\n*.cfg binary\n");
    git(dir, &["add", ".gitattributes"]);
    git(dir, &["commit", "-qm", "attributes"]);
    let mut g = Gen::new(32);
    let (k1, k2) = (g.github("ghp_"), g.github("ghp_"));
    write(dir, "a.env", &format!("x\nTOKEN={k1}\n"));
    write(dir, "a.cfg", &format!("TOKEN={k2}\n"));
    // A file that really is binary (a NUL in its added bytes) stays skipped.
    std::fs::write(dir.join("b.cfg"), format!("\0TOKEN={}\n", g.github("ghp_")))
        .unwrap_or_else(|e| panic!("{e}"));
    git(dir, &["add", "-A"]);
    let r = run(dir, &["scan", "--staged", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let mut found: Vec<(String, u64, u64)> = json_lines(&r.stdout)
        .iter()
        .map(|f| {
            let at = |k: &str| f[k].as_u64().unwrap_or(0);
            let path = f["path"].as_str().unwrap_or_default().to_string();
            (path, at("start"), at("end"))
        })
        .collect();
    found.sort();
    let start = "x\nTOKEN=".len() as u64;
    let want = vec![
        ("a.cfg".to_string(), 6, 6 + k2.len() as u64),
        ("a.env".to_string(), start, start + k1.len() as u64),
    ];
    assert_eq!(found, want, "{}", r.stdout);
}

/// `text` in UTF-16, little- or big-endian, with or without a byte order mark.
fn utf16(text: &str, little: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let units = bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16());
    for u in units {
        out.extend(if little {
            u.to_le_bytes()
        } else {
            u.to_be_bytes()
        });
    }
    out
}

/// The text of `bytes`, UTF-16 in the given byte order.
fn from_utf16(bytes: &[u8], little: bool) -> String {
    let units = bytes.chunks_exact(2).map(|p| {
        if little {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or('?'))
        .collect()
}

/// (start, end, line) of each finding.
fn spans(stdout: &str) -> Vec<(usize, usize, u64)> {
    json_lines(stdout)
        .iter()
        .map(|f| {
            let at = |k: &str| f[k].as_u64().unwrap_or(0);
            (at("start") as usize, at("end") as usize, at("line"))
        })
        .collect()
}

#[test]
fn utf16_files_are_decoded_and_their_offsets_point_into_the_file() {
    let d = tmp();
    let mut g = Gen::new(41);
    for (name, little, bom) in [
        ("le.ps1", true, true),
        ("be.txt", false, true),
        ("nobom.reg", true, false),
    ] {
        let (key, hidden) = (g.github("ghp_"), g.github("ghp_"));
        // A character beyond the BMP (two code units) before the key, where a mark allows.
        let wide = if bom { "\u{1F600} " } else { "" };
        let text = format!(
            "Windows Registry Editor Version 5.00\r\n{wide}\"Token\"=\"{key}\"\r\n\"Old\"=\"{hidden}\" ; airlock:allow\r\n"
        );
        let bytes = utf16(&text, little, bom);
        std::fs::write(d.path().join(name), &bytes).unwrap_or_else(|e| panic!("{e}"));
        let r = run(d.path(), &["scan", name, "--format", "json"]);
        assert_eq!(r.code, 1, "{name}: {}{}", r.stdout, r.stderr);
        let found = spans(&r.stdout);
        assert_eq!(found.len(), 1, "{name}: {}", r.stdout);
        let (s, e, line) = found[0];
        assert_eq!(line, 2, "{name}");
        assert_eq!(from_utf16(&bytes[s..e], little), key, "{name}");
        // The same bytes on stdin.
        let out = airlock()
            .current_dir(d.path())
            .args(["scan", "-", "--format", "json"])
            .write_stdin(bytes.clone())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            spans(&String::from_utf8_lossy(&out.stdout)),
            found,
            "{name} on stdin"
        );
    }
    // NULs at random, not every other byte: still binary, still skipped.
    let mut bytes = utf16("abcdefgh", true, false);
    bytes[3] = b'x';
    bytes.extend_from_slice(format!("\"{}\"", g.github("ghp_")).as_bytes());
    std::fs::write(d.path().join("blob.bin"), bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(d.path(), &["scan", "blob.bin"]).code, 0);
}

#[test]
fn staged_utf16_files_are_scanned_on_their_added_lines() {
    let d = repo();
    let mut g = Gen::new(42);
    let old = g.github("ghp_");
    let before = format!("$old = \"{old}\"\r\n$x = 1\r\n");
    let new = g.github("ghp_");
    let after = format!("{before}$new = \"{new}\"\r\n");
    let (bytes, r) = stage_utf16_edit(d.path(), "setup.ps1", &before, &after);
    let found = spans(&r.stdout);
    assert_eq!(found.len(), 1, "only the added line: {}", r.stdout);
    let (s, e, line) = found[0];
    assert_eq!(line, 3);
    assert_eq!(from_utf16(&bytes[s..e], true), new);
}

/// Commits `before` as a UTF-16LE file with a mark, stages `after` over it and runs
/// `scan --staged --format json`, which must find something. Returns the staged bytes and the run.
fn stage_utf16_edit(dir: &Path, name: &str, before: &str, after: &str) -> (Vec<u8>, Run) {
    std::fs::write(dir.join(name), utf16(before, true, true)).unwrap_or_else(|e| panic!("{e}"));
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "utf-16"]);
    let bytes = utf16(after, true, true);
    std::fs::write(dir.join(name), &bytes).unwrap_or_else(|e| panic!("{e}"));
    git(dir, &["add", "."]);
    let r = run(dir, &["scan", "--staged", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    (bytes, r)
}

/// Old Mac line endings (a lone `\r`): a pragma covers its own line, not the whole file.
#[test]
fn a_pragma_covers_its_own_line_when_lines_end_in_a_lone_cr() {
    let d = repo();
    let dir = d.path();
    let mut g = Gen::new(43);
    let (allowed, key) = (g.github("ghp_"), g.github("ghp_"));
    let text = format!("a = 1\rOLD = '{allowed}'  # airlock:allow\rNEW = '{key}'\r");
    write(dir, "mac.py", &text);
    let r = run(dir, &["scan", "mac.py", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let found = spans(&r.stdout);
    assert_eq!(found.len(), 1, "{}", r.stdout);
    assert_eq!(&text[found[0].0..found[0].1], key);
    git(dir, &["add", "mac.py"]);
    let r = run(dir, &["scan", "--staged", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let found = spans(&r.stdout);
    assert_eq!(found.len(), 1, "{}", r.stdout);
    assert_eq!(&text[found[0].0..found[0].1], key);
}

/// Two bytes that look like a UTF-16 byte order mark before plain text do not turn the text
/// into noise: with no NUL after them it is scanned as before.
#[test]
fn a_mark_before_plain_text_does_not_hide_it() {
    let d = tmp();
    let mut g = Gen::new(44);
    let key = g.github("ghp_");
    for (name, mark) in [("le.txt", [0xFF, 0xFE]), ("be.txt", [0xFE, 0xFF])] {
        let mut bytes = mark.to_vec();
        bytes.extend_from_slice(format!(" header\nTOKEN={key}\n").as_bytes());
        std::fs::write(d.path().join(name), &bytes).unwrap_or_else(|e| panic!("{e}"));
        let r = run(d.path(), &["scan", name, "--format", "json"]);
        assert_eq!(r.code, 1, "{name}: {}{}", r.stdout, r.stderr);
        let found = spans(&r.stdout);
        assert_eq!(found.len(), 1, "{name}: {}", r.stdout);
        assert_eq!(&bytes[found[0].0..found[0].1], key.as_bytes(), "{name}");
    }
}

/// Git counts lines at every 0x0A byte, and `上` (U+4E0A) is `0A 4E` in UTF-16LE: an edit to a
/// line holding one is still mapped to the whole decoded line, and only to it.
#[test]
fn staged_utf16_lines_split_by_git_inside_a_character_are_whole() {
    let d = repo();
    let mut g = Gen::new(45);
    let (key, other) = (g.github("ghp_"), g.github("ghp_"));
    let line = |tail: &str| format!("$k = \"{key}\" # \u{4E0A} {tail}\r\n");
    let file = |tail: &str| format!("$a = 1\r\n$o = \"{other}\"\r\n{}$z = 2\r\n", line(tail));
    let (bytes, r) = stage_utf16_edit(d.path(), "s.ps1", &file("airlock:allow"), &file("changed"));
    let found = spans(&r.stdout);
    assert_eq!(found.len(), 1, "only the edited line: {}", r.stdout);
    let (s, e, no) = found[0];
    assert_eq!(no, 3);
    assert_eq!(from_utf16(&bytes[s..e], true), key);
}
