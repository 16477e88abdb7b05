//! `airlock serve` start-up output, config errors and graceful shutdown.

use crate::{env, words};
use airlock_e2e::support::client::End;
use airlock_e2e::support::{AirlockSetup, Config, Provider};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_address_then_one_base_url_per_provider() {
    let env = env();
    assert_eq!(
        env.airlock.first_line,
        format!(
            "airlock listening on http://127.0.0.1:{}",
            env.addr().port()
        )
    );
    assert_ne!(
        env.addr().port(),
        0,
        "printed port 0 instead of the bound port"
    );
    let lines = env.airlock.stdout_lines_within(Duration::from_secs(2));
    let base = env.airlock.url();
    for (name, url) in [
        ("openai", format!("{base}/openai/v1")),
        ("anthropic", format!("{base}/anthropic")),
        ("gemini", format!("{base}/gemini")),
        ("mycompat", format!("{base}/mycompat")),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(name) && l.contains(&url)),
            "no stdout line for {name} with {url}; got {lines:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_key_is_an_error_naming_the_line() {
    let setup = AirlockSetup::new(Config::new("http://127.0.0.1:9")).expect("setup");
    let good = std::fs::read_to_string(&setup.config_path).expect("read");
    let bad = good.replacen("[timeouts]\n", "[timeouts]\nconect = \"2s\"\n", 1);
    let line = bad
        .lines()
        .position(|l| l.starts_with("conect"))
        .expect("inserted")
        + 1;
    std::fs::write(&setup.config_path, bad).expect("write");
    let out = setup.run(&["serve"], None).expect("run");
    assert!(
        !out.status.success(),
        "serve accepted a config with an unknown key"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("conect"),
        "error does not name the key: {stderr}"
    );
    assert!(
        stderr.contains(&line.to_string()),
        "error does not name line {line}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let mut env = env(); // shutdown_grace = 5s
    let prompt = words(14);
    let mut res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), &prompt, true)
        .header("x-mock-scenario", "gap_ms=150")
        .send_streaming()
        .await
        .expect("send");
    assert_eq!(res.status, 200);
    let first = res
        .next_event(Duration::from_secs(10))
        .await
        .expect("first event");
    assert!(first.is_some(), "stream ended before the first event");
    env.airlock.signal("TERM").expect("kill -TERM");

    // New connections are refused (or fail) while the stream is still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "late", false)
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    if let Ok(r) = &late {
        assert_ne!(r.status, 200, "a new request was served after SIGTERM");
    }

    let (events, end) = res.drain(Duration::from_secs(10)).await;
    assert!(
        matches!(end, End::Clean),
        "in-flight stream cut by SIGTERM: {end:?}"
    );
    assert_eq!(
        events.last().map(|(e, _)| e.data.as_str()),
        Some("[DONE]"),
        "stream incomplete"
    );
    let status = env.airlock.wait_exit(Duration::from_secs(8)).expect("wait");
    let status = status.expect("airlock still running 8s after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle_exits_zero_promptly() {
    let mut env = env();
    env.airlock.signal("INT").expect("kill -INT");
    let status = env.airlock.wait_exit(Duration::from_secs(5)).expect("wait");
    let status = status.expect("airlock still running 5s after SIGINT with nothing in flight");
    assert!(status.success(), "exit status after SIGINT: {status}");
}
