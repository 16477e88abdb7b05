//! The OS keyring on the request path: a Secret Service that stops answering costs a request
//! a bounded wait and a 503 in the provider's format, never a hang or a lost ledger row.

use airlock_e2e::mock::MockServer;
use airlock_e2e::support::keyring::PrivateKeyring;
use airlock_e2e::support::{AirlockSetup, Config, Provider};
use std::time::{Duration, Instant};

/// Airlock's limit on one keyring call (`keys::vault::KEYRING_TIMEOUT`).
const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);
/// What a loaded test machine may add to it.
const MARGIN: Duration = Duration::from_secs(3);

/// Threads of process `pid` named `name` (Linux: /proc/PID/task/*/comm).
fn threads_named(pid: u32, name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

/// QA: with the keyring daemon stopped (`kill -STOP`), requests hung for 300 s and left no
/// serve log line or ledger row, even after `kill -CONT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyring_that_stops_answering_gives_503_in_time_and_a_ledger_row() {
    // This test's own daemon: stopping the shared one would stall every other test.
    let keyring = PrivateKeyring::start().expect("private keyring");
    let mock = MockServer::start().expect("mock");
    let mut setup = AirlockSetup::new(Config::new(&mock.url())).expect("setup");
    setup.env = keyring.env();
    let p = Provider::Gemini;
    setup
        .set_key(p.name(), &airlock_e2e::support::keys::gemini())
        .expect("keys set");
    let alk = setup.issue("app", &[]).expect("issue");
    // Started with the keyring answering, so nothing holds the provider key yet.
    let airlock = setup.serve().expect("serve");
    let pid = airlock.pid().expect("pid");

    keyring.stop().expect("SIGSTOP the test's keyring daemon");
    let started = Instant::now();
    let res = p
        .chat(airlock.addr, Some(&alk), "hello", false)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("an answer while the keyring is stopped");
    let took = started.elapsed();
    let message = p.assert_error(&res, 503);
    assert!(
        took < KEYRING_TIMEOUT + MARGIN,
        "503 after {took:?}, limit {KEYRING_TIMEOUT:?}"
    );
    assert!(
        message.contains("did not answer within 5 s") && message.contains("airlock doctor"),
        "{message}"
    );
    assert_eq!(
        res.json()["error"]["status"],
        "UNAVAILABLE",
        "{}",
        res.text()
    );
    let id = res
        .header("x-airlock-request-id")
        .expect("request id")
        .to_owned();
    let row = airlock.ledger_row(&id).await;
    assert_eq!(row["status"], 503, "{row}");
    assert_eq!(row["reason"], "airlock_keyring_timeout", "{row}");

    // Requests meanwhile share the one pending keyring read, instead of a thread each.
    let burst: Vec<_> = (0..4)
        .map(|i| {
            p.chat(airlock.addr, Some(&alk), &format!("burst {i}"), false)
                .timeout(Duration::from_secs(30))
                .send()
        })
        .collect();
    let burst = tokio::spawn(futures_join(burst));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        threads_named(pid, "airlock-keyring"),
        1,
        "one keyring read for five requests of the same key"
    );
    for res in burst.await.expect("burst") {
        p.assert_error(&res.expect("burst answer"), 503);
    }

    // A client that gives up before the keyring answers still leaves a row.
    let gave_up = p
        .chat(airlock.addr, Some(&alk), "impatient", false)
        .timeout(Duration::from_millis(800))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client should have given up first");
    let setup = &airlock.setup;
    airlock_e2e::support::poll(
        Duration::from_secs(5),
        "a row for the client that left",
        || async move {
            let rows = setup.log_rows(&["--limit", "100"]).ok()?;
            rows.into_iter()
                .find(|r| r["reason"] == "client_gone" && r["status"] == 499)
        },
    )
    .await;

    // Once the keyring answers again, so does Airlock, without a restart.
    keyring.resume().expect("SIGCONT");
    let res = p
        .chat(airlock.addr, Some(&alk), "back", false)
        .send()
        .await
        .expect("answer after resume");
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Awaits every request at once (the crate has no `futures` dependency).
async fn futures_join<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}
