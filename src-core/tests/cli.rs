//! The CLI as a user runs it: real binary, real keyring (private Secret Service), temp dirs.

mod support;

use predicates::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use support::{fake_key, read_to_string, TestEnv};

#[test]
fn keys_set_list_rm_round_trip_without_showing_the_key() {
    let env = TestEnv::new();
    let key = fake_key("sk-proj-");
    env.set_key("openai", &key);
    let tail = &key[key.len() - 4..];
    let out = env.airlock().args(["keys", "list"]).output().expect("list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(&format!("…{tail}")), "{text}");
    assert!(
        !text.contains(&key[..key.len() - 4]),
        "list must show at most the last 4 characters"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("anthropic") && l.contains("not set")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ollama") && l.contains("not needed")),
        "{text}"
    );

    env.airlock()
        .args(["keys", "rm", "openai"])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed"));
    env.airlock()
        .args(["keys", "list"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^openai\s+not set").expect("regex"));
    env.airlock()
        .args(["keys", "rm", "openai"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no openai key"));
}

#[test]
fn keys_set_refuses_airlock_keys_empty_input_and_unknown_providers() {
    let env = TestEnv::new();
    env.airlock()
        .args(["keys", "set", "openai"])
        .write_stdin("alk_0123456789abcdef\n")
        .assert()
        .failure()
        .stderr(predicate::str::contains("that is an Airlock key"));
    env.airlock()
        .args(["keys", "set", "openai"])
        .write_stdin("\n")
        .assert()
        .failure();
    env.airlock()
        .args(["keys", "set", "nosuch"])
        .write_stdin("x\n")
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown provider"));
}

#[test]
fn issue_prints_only_the_key_and_issued_lists_it_without_the_key() {
    let env = TestEnv::new();
    let key = env.issue(&[
        "app",
        "--provider",
        "openai",
        "--model",
        "gpt-4o*",
        "--expires",
        "2h",
    ]);
    assert!(
        key.starts_with("alk_") && key.len() == 47 && !key.contains(char::is_whitespace),
        "{key:?}"
    );
    let out = env
        .airlock()
        .args(["keys", "issued"])
        .output()
        .expect("issued");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app") && text.contains("gpt-4o*") && text.contains("active"),
        "{text}"
    );
    assert!(!text.contains(&key[8..]), "the key must never be listed");
    // A live name cannot be issued twice; an unknown provider is refused.
    env.airlock()
        .args(["keys", "issue", "app"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
    env.airlock()
        .args(["keys", "issue", "x", "--provider", "nope"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown provider"));
    env.airlock()
        .args(["keys", "revoke", "app"])
        .assert()
        .success();
    env.airlock()
        .args(["keys", "revoke", "app"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no live key"));
    let json = env
        .airlock()
        .args(["keys", "issued", "--all", "--json"])
        .output()
        .expect("json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(v[0]["revoked_at"].is_i64(), "{v}");
    assert!(!String::from_utf8_lossy(&json.stdout).contains(&key[8..]));
}

#[test]
fn exec_gives_the_command_a_scoped_key_and_revokes_it_after() {
    let env = TestEnv::new();
    env.issue(&["parent", "--provider", "openai"]);
    let out = env
        .airlock()
        .args([
            "exec",
            "--as",
            "parent",
            "--",
            "sh",
            "-c",
            "echo \"$OPENAI_BASE_URL|$OPENAI_API_KEY|${ANTHROPIC_API_KEY:-none}\"; exit 7",
        ])
        .output()
        .expect("exec");
    assert_eq!(
        out.status.code(),
        Some(7),
        "exec must pass the command's exit code through"
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parts: Vec<&str> = line.split('|').collect();
    assert_eq!(parts[0], "http://127.0.0.1:8787/openai/v1");
    assert!(parts[1].starts_with("alk_"), "{line}");
    assert_eq!(
        parts[2], "none",
        "a child of an openai-only key gets no anthropic settings"
    );
    let all = env
        .airlock()
        .args(["keys", "issued", "--all", "--json"])
        .output()
        .expect("json");
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).expect("json");
    let exec_key = v
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["ephemeral"] == true)
        .expect("exec key");
    assert_eq!(exec_key["parent"], "parent");
    assert!(
        exec_key["revoked_at"].is_i64(),
        "the command's key must be revoked when it exits: {exec_key}"
    );
}

#[test]
fn exec_without_as_sets_every_provider_and_fails_cleanly_on_a_missing_command() {
    let env = TestEnv::new();
    let out = env
        .airlock()
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "echo $ANTHROPIC_BASE_URL $GEMINI_API_KEY $GROQ_BASE_URL",
        ])
        .output()
        .expect("exec");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("http://127.0.0.1:8787/anthropic ")
            && text.contains(" alk_")
            && text.contains("/groq/v1"),
        "{text}"
    );
    env.airlock()
        .args(["exec", "--", "definitely-not-a-command-xyz"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("cannot run"));
}

#[test]
fn env_prints_exports_with_a_lasting_key() {
    let env = TestEnv::new();
    let out = env.airlock().args(["env"]).output().expect("env");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("export OPENAI_BASE_URL='http://127.0.0.1:8787/openai/v1'"),
        "{text}"
    );
    assert!(text.contains("export OPENAI_API_KEY='alk_"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("airlock keys revoke env-"));
    let issued = env
        .airlock()
        .args(["keys", "issued"])
        .output()
        .expect("issued");
    assert!(
        String::from_utf8_lossy(&issued.stdout).contains("env-"),
        "the env key stays live until revoked"
    );
}

#[test]
fn import_env_moves_keys_into_the_keyring_and_leaves_no_raw_key() {
    let env = TestEnv::new();
    let openai = fake_key("sk-proj-");
    let anthropic = fake_key("sk-ant-api03-");
    let dotenv = env.dir.path().join(".env");
    std::fs::write(
        &dotenv,
        format!(
            "# my app\nDEBUG=1\nOPENAI_API_KEY={openai}\nexport ANTHROPIC_API_KEY=\"{anthropic}\"\nOTHER=keep me\n"
        ),
    )
    .expect("write");
    let out = env
        .airlock()
        .args(["keys", "import-env"])
        .arg(&dotenv)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("OPENAI_API_KEY") && stdout.contains("ANTHROPIC_API_KEY"),
        "{stdout}"
    );
    for raw in [&openai, &anthropic] {
        assert!(
            !stdout.contains(raw.as_str()),
            "stdout must not show the key"
        );
    }
    let rewritten = read_to_string(&dotenv);
    for raw in [&openai, &anthropic] {
        assert!(
            !rewritten.contains(raw.as_str()),
            "raw key left in the file:\n{rewritten}"
        );
    }
    // No stray copies next to it (backups, temp files).
    for entry in std::fs::read_dir(env.dir.path()).expect("dir").flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(openai.as_str()),
                "raw key in {}",
                entry.path().display()
            );
        }
    }
    assert!(
        rewritten.contains("DEBUG=1\n")
            && rewritten.contains("OTHER=keep me")
            && rewritten.starts_with("# my app\n")
    );
    assert!(
        rewritten.contains("OPENAI_BASE_URL=http://127.0.0.1:8787/openai/v1"),
        "{rewritten}"
    );
    assert!(
        rewritten.contains("export ANTHROPIC_BASE_URL=http://127.0.0.1:8787/anthropic"),
        "{rewritten}"
    );
    let alk: Vec<&str> = rewritten
        .lines()
        .filter_map(|l| l.split("_API_KEY=").nth(1))
        .collect();
    assert_eq!(alk.len(), 2);
    assert!(
        alk.iter().all(|k| k.starts_with("alk_") && *k == alk[0]),
        "{alk:?}"
    );
    // The keys are in the keyring now.
    let list = env.airlock().args(["keys", "list"]).output().expect("list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains(&format!("…{}", &openai[openai.len() - 4..])),
        "{list}"
    );
    assert!(
        list.contains(&format!("…{}", &anthropic[anthropic.len() - 4..])),
        "{list}"
    );
    // Running it again changes nothing.
    env.airlock()
        .args(["keys", "import-env"])
        .arg(&dotenv)
        .assert()
        .success()
        .stdout(predicate::str::contains("already an Airlock key"));
    assert_eq!(read_to_string(&dotenv), rewritten);
}

#[test]
fn config_init_writes_a_valid_commented_file_and_check_reads_it() {
    let env = TestEnv::new();
    env.airlock().args(["config", "init"]).assert().success();
    let text = read_to_string(&env.config_path());
    assert!(text.contains("# listen = \"127.0.0.1:8787\""));
    env.airlock()
        .args(["config", "init"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--force"));
    env.airlock()
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains("is valid").and(predicate::str::contains("/anthropic")));
    env.write_config("listen = \"127.0.0.1:8787\"\n[timeouts]\nidel = \"5s\"\n");
    env.airlock()
        .args(["config", "check"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("line 3").and(predicate::str::contains("idel")));
}

#[test]
fn doctor_names_each_problem_and_passes_once_fixed() {
    let env = TestEnv::new();
    env.write_config("listen = \"127.0.0.1:0\"\n");
    env.airlock().arg("doctor").assert().failure().stdout(
        predicate::str::contains("no provider key is stored")
            .and(predicate::str::contains("airlock keys set")),
    );
    env.set_key("openai", &fake_key("sk-"));
    env.airlock().arg("doctor").assert().success().stdout(
        predicate::str::contains("keyring reachable and unlocked")
            .and(predicate::str::contains("all checks passed")),
    );
}

#[test]
fn an_unreachable_keyring_is_an_actionable_error_never_a_file_fallback() {
    let env = TestEnv::new();
    env.airlock()
        .args(["keys", "set", "openai"])
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/airlock-test-bus",
        )
        .write_stdin(format!("{}\n", fake_key("sk-")))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("OS keyring is not reachable")
                .and(predicate::str::contains("never falls back")),
        );
    // Nothing was written anywhere as a fallback.
    let files: Vec<_> = walk(env.dir.path());
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        assert!(!text.contains("sk-"), "key material in {}", f.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn serve_prints_its_address_and_base_urls_and_exits_cleanly_on_sigterm() {
    let env = TestEnv::new();
    env.write_config("listen = \"127.0.0.1:0\"\n");
    let mut child = env
        .std_airlock()
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let port: u16 = first
        .strip_prefix("airlock listening on http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    assert_ne!(port, 0);
    let rest: Vec<String> = lines.by_ref().take(3).map(|l| l.expect("line")).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}/anthropic"))),
        "{rest:?}"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        child.wait().expect("wait").success(),
        "SIGTERM must end serve with status 0"
    );
}

#[test]
fn serve_refuses_a_non_loopback_address_without_allow_remote() {
    let env = TestEnv::new();
    env.airlock()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--allow-remote"));
}

/// The bundled price table with `edit` applied to every model entry, written to `name`.
fn edited_price_file(
    env: &TestEnv,
    name: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> std::path::PathBuf {
    let mut root: serde_json::Value =
        serde_json::from_str(include_str!("../prices/model_prices.json")).expect("json");
    for (model, entry) in root.as_object_mut().expect("object") {
        if model != "sample_spec" {
            edit(entry.as_object_mut().expect("entry"));
        }
    }
    let path = env.dir.path().join(name);
    std::fs::write(&path, root.to_string()).expect("write");
    path
}

fn gpt_4o_input_price(env: &TestEnv) -> String {
    let out = env
        .airlock()
        .args(["prices", "show", "gpt-4o"])
        .output()
        .expect("show");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("input"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned()
}

/// Regression: `prices update` accepted a table whose prices were strings (read as $0, so every
/// cost ignored input) and a table that priced everything at $0 (no budget could trigger).
#[test]
fn prices_update_refuses_unusable_and_zero_prices() {
    let env = TestEnv::new();
    let before = gpt_4o_input_price(&env);
    assert!(before.contains("2.50"), "{before}");
    let strings = edited_price_file(&env, "strings.json", |e| {
        if let Some(v) = e.get("input_cost_per_token").and_then(|v| v.as_f64()) {
            e.insert("input_cost_per_token".into(), v.to_string().into());
        }
    });
    env.airlock()
        .args(["prices", "update"])
        .arg(&strings)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a number >= 0"));
    let zero = edited_price_file(&env, "zero.json", |e| {
        for k in ["input_cost_per_token", "output_cost_per_token"] {
            if e.contains_key(k) {
                e.insert(k.into(), 0.into());
            }
        }
    });
    env.airlock()
        .args(["prices", "update"])
        .arg(&zero)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "chat models in the price table cost $0",
        ));
    assert_eq!(
        gpt_4o_input_price(&env),
        before,
        "the table in use is unchanged"
    );
}

/// Regression: once a much bigger table was loaded (by mistake), the bundled one could not be
/// loaded back: "price table would shrink … (below 80%)", and there was no other way back.
#[test]
fn a_bad_price_update_can_be_undone_by_reset_or_force() {
    let env = TestEnv::new();
    let bundled = env.dir.path().join("bundled.json");
    std::fs::write(&bundled, include_str!("../prices/model_prices.json")).expect("write");
    let mut big: serde_json::Value =
        serde_json::from_str(include_str!("../prices/model_prices.json")).expect("json");
    for i in 0..2000 {
        big[format!("fake-model-{i}")] = serde_json::json!({
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "mode": "chat"
        });
    }
    let big_path = env.dir.path().join("big.json");
    std::fs::write(&big_path, big.to_string()).expect("write");
    let update = |file: &std::path::Path, force: bool| {
        let mut c = env.airlock();
        c.args(["prices", "update"]).arg(file);
        if force {
            c.arg("--force");
        }
        c.assert()
    };
    let fake_known = || {
        let out = env
            .airlock()
            .args(["prices", "show", "fake-model-7"])
            .output()
            .expect("show");
        !String::from_utf8_lossy(&out.stdout).contains("unknown price")
    };

    update(&big_path, false).success();
    assert!(fake_known());
    update(&bundled, false)
        .failure()
        .stderr(predicate::str::contains("would shrink").and(predicate::str::contains("--force")));
    env.airlock()
        .args(["prices", "reset"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("reset to the bundled one")
                .and(predicate::str::contains("(was 2126)")),
        );
    assert!(!fake_known(), "back to the bundled table");
    env.airlock()
        .args(["prices", "reset"])
        .assert()
        .success()
        .stdout(predicate::str::contains("already using the bundled"));

    update(&big_path, false).success();
    update(&bundled, true).success();
    assert!(!fake_known(), "--force replaced the big table");
    // --force skips the size checks only: the prices are still checked.
    let mut zero: serde_json::Value =
        serde_json::from_str(include_str!("../prices/model_prices.json")).expect("json");
    for (_, e) in zero.as_object_mut().expect("object") {
        for k in ["input_cost_per_token", "output_cost_per_token"] {
            if e.get(k).is_some() {
                e[k] = 0.into();
            }
        }
    }
    let zero_path = env.dir.path().join("zero.json");
    std::fs::write(&zero_path, zero.to_string()).expect("write");
    update(&zero_path, true).failure();
}

/// Regression: `keys issue NAME --rpm 0` was stored and meant "no limit" (while `--budget 0usd`
/// blocks everything).
#[test]
fn rpm_zero_is_refused() {
    let env = TestEnv::new();
    env.airlock()
        .args(["keys", "issue", "zero", "--rpm", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("leave --rpm out for no limit"));
    env.airlock()
        .args(["exec", "--rpm", "0", "--", "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("leave --rpm out for no limit"));
    let listed = env
        .airlock()
        .args(["keys", "issued", "--json"])
        .output()
        .expect("issued");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("\"zero\""),
        "the key was not issued"
    );
    env.issue(&["one", "--rpm", "1"]);
}

/// Regression: `spend --since 2099-01-01` and a since after the until were accepted (an empty
/// range reads as "$0 spent"), and the JSON's `until_ms` was i64::MAX rather than now.
#[test]
fn spend_refuses_a_future_or_reversed_range_and_reports_until_as_now() {
    let env = TestEnv::new();
    env.airlock()
        .args(["spend", "--since", "2099-01-01"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is in the future"));
    env.airlock()
        .args(["log", "--since", "2099-01-01"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is in the future"));
    env.airlock()
        .args(["spend", "--since", "7d", "--until", "30d"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is after until"));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let out = env
        .airlock()
        .args(["spend", "--since", "all", "--format", "json"])
        .output()
        .expect("spend");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let until = v["until_ms"].as_i64().expect("until_ms");
    assert!(
        (before..before + 60_000).contains(&until),
        "until_ms {until} is not now ({before})"
    );
}
