//! The SQLite ledger: every completed request survives `kill -9`, the file stays intact, and no
//! raw secret lands in it (or in the server's output, or the CLI's).

use crate::{env, words};
use airlock_e2e::support::provider::REQUEST_ID_HEADER;
use airlock_e2e::support::{Admin, Provider};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open_ledger(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("airlock.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_completed_request_survives_kill_9() {
    let mut env = env();
    let addr = env.addr();
    let done = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (done, count, alk) = (done.clone(), count.clone(), env.alk.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..80 {
                let p = Provider::ALL[(t + i) % 3];
                let res = p
                    .chat(
                        addr,
                        Some(&alk),
                        &format!("load {t} {i} {}", words(3)),
                        false,
                    )
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status == 200 => {
                        let id = r.header(REQUEST_ID_HEADER).expect("id").to_owned();
                        done.lock().expect("lock").push(id);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < 120 {
        assert!(Instant::now() < deadline, "load too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.airlock.kill9_and_restart().expect("restart");
    for t in tasks {
        t.await.expect("task");
    }
    let completed: Vec<String> = done.lock().expect("lock").clone();
    assert!(completed.len() >= 120, "{}", completed.len());
    assert!(
        completed.len() < 320,
        "the load finished before kill -9; nothing was tested mid-load"
    );
    // The restarted server serves and records.
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "after restart", false)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let after = res.header(REQUEST_ID_HEADER).expect("id").to_owned();
    env.airlock.ledger_row(&after).await;

    let db = open_ledger(&env.airlock.setup.data_dir);
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok");
    let mut stmt = db.prepare("SELECT id FROM requests").expect("prepare");
    let ids: HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let missing: Vec<&String> = completed.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} completed requests have no ledger row after kill -9: {:?}",
        missing.len(),
        completed.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_secret_in_the_ledger_server_output_or_cli_output() {
    let env = env();
    for p in Provider::ALL {
        for stream in [false, true] {
            let res = p
                .chat(env.addr(), Some(&env.alk), &words(5), stream)
                .send()
                .await
                .expect("send");
            assert_eq!(res.status, 200);
        }
        // A refused one: a real provider key sent by the client.
        let res = p
            .chat(env.addr(), Some(env.keys.get(p.name())), "hi", false)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 401, "{}", res.text());
    }
    let admin = Admin::new(&env.airlock).expect("admin");
    let mut outputs = Vec::new();
    for path in [
        "spend?by=key",
        "requests?limit=100",
        "limits",
        "keys",
        "status",
        "metrics",
    ] {
        outputs.push(admin.get(path).await.expect("admin").text());
    }
    env.airlock.ledger_rows_at_least(9).await;
    let setup = &env.airlock.setup;
    for args in [
        &["spend", "--by", "key", "--since", "all"][..],
        &["spend", "--format", "json", "--since", "all"],
        &["log", "--format", "json"],
        &["log", "--format", "csv"],
        &["log"],
        &["limits", "--json"],
        &["keys", "list"],
    ] {
        let out = setup.run(args, None).expect("run");
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut files = vec![(
        "serve stderr".to_owned(),
        env.airlock.stderr_tail().into_bytes(),
    )];
    files.push((
        "serve stdout".to_owned(),
        env.airlock.more_stdout().join("\n").into_bytes(),
    ));
    for f in ["airlock.db", "airlock.db-wal"] {
        let path = setup.data_dir.join(f);
        if let Ok(b) = std::fs::read(&path) {
            files.push((f.to_owned(), b));
        }
    }
    let full_stderr = std::fs::read(setup.dir().join("serve.stderr")).expect("serve stderr file");
    files.push(("serve stderr (whole)".to_owned(), full_stderr));
    for (i, o) in outputs.into_iter().enumerate() {
        files.push((format!("output {i}"), o.into_bytes()));
    }
    let secrets = [
        env.keys.openai.as_str(),
        env.keys.anthropic.as_str(),
        env.keys.gemini.as_str(),
        env.keys.mycompat.as_str(),
        env.alk.as_str(),
    ];
    for (name, bytes) in &files {
        for s in secrets {
            // The whole key, and its secret tail (a prefix alone is not a secret).
            let tail = &s[s.len() - 24..];
            for needle in [s, tail] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{name} contains a raw key ({}…)",
                    &s[..8]
                );
            }
        }
    }
}

/// Regression: a client's model name was printed raw by `log` and `spend --by model` (escape
/// sequences set the terminal title and cleared the screen, a newline forged a row), and
/// `spend --format csv` wrote a cell starting with `=HYPERLINK(` that a spreadsheet runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_model_names_are_escaped_in_tables_and_neutralised_in_csv() {
    let env = env();
    let escape = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let newline = "two\nlines";
    let formula = "=HYPERLINK(\"http://evil.example/\",\"x\")";
    let p = Provider::OpenAi;
    for model in [escape, newline, formula] {
        let res = airlock_e2e::support::client::post(env.addr(), &p.chat_path(false))
            .header("authorization", &format!("Bearer {}", env.alk))
            .json(&p.chat_body_for_model(model, "hi", false))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let rows = env.airlock.ledger_rows_at_least(3).await;
    // JSON stays exact.
    for model in [escape, newline, formula] {
        assert!(
            rows.iter().any(|r| r["model"] == model),
            "{model:?} in {rows:?}"
        );
    }
    let setup = &env.airlock.setup;
    for args in [&["log"][..], &["spend", "--by", "model", "--since", "all"]] {
        let out = setup.run_ok(args, None).expect("run");
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {out:?}"
        );
        assert!(
            out.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
            "{args:?}: {out}"
        );
        assert!(out.contains("two\\nlines"), "{args:?}: {out}");
        assert!(
            !out.lines().any(|l| l.trim_start().starts_with("lines")),
            "{args:?}: a newline in a model forged a row: {out}"
        );
    }
    for args in [
        &[
            "spend", "--by", "model", "--since", "all", "--format", "csv",
        ][..],
        &["log", "--format", "csv"],
    ] {
        let out = setup.run_ok(args, None).expect("run");
        assert!(
            out.contains("\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"x\"\")\""),
            "{args:?}: {out}"
        );
        assert!(
            !out.split([',', '\n'])
                .any(|cell| cell.starts_with("=HYPERLINK") || cell.starts_with("\"=HYPERLINK")),
            "{args:?}: {out}"
        );
    }
}

/// QA: `airlock spend --key nosuchkey` (or `--provider nosuch`, or `log --key …`) printed an
/// empty table and $0, so a typo read as "no spend". A name Airlock has never known is an
/// error; a known one with no spend is still a plain $0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_and_log_refuse_a_key_or_provider_that_names_nothing() {
    let env = env();
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    env.airlock.ledger_rows_at_least(1).await;
    let setup = &env.airlock.setup;
    for (args, want) in [
        (
            &["spend", "--key", "nosuchkey"][..],
            "no key named \"nosuchkey\"",
        ),
        (&["log", "--key", "nosuchkey"], "no key named \"nosuchkey\""),
        (
            &["spend", "--provider", "nosuch"],
            "no provider named \"nosuch\"",
        ),
        (
            &["log", "--provider", "nosuch"],
            "no provider named \"nosuch\"",
        ),
    ] {
        let out = setup.run(args, None).expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A configured provider with no requests, and the key that made the one above, are fine.
    let account = env.airlock.ledger_rows_at_least(1).await[0]["account"]
        .as_str()
        .expect("account")
        .to_owned();
    for args in [
        &["spend", "--provider", "mistral", "--format", "json"][..],
        &["spend", "--key", &account, "--format", "json"],
        &["log", "--key", &account],
    ] {
        setup.run_ok(args, None).expect("a known name");
    }
}
