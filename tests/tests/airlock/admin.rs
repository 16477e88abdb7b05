//! The admin API under `/_airlock/`: auth, status, metrics, key management, live events in
//! order; and `airlock prices update|show`.

use crate::{env, words};
use airlock_e2e::support::client::get;
use airlock_e2e::support::prices::{table_path, PriceTable};
use airlock_e2e::support::{poll, Admin, Provider};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_reports_status_and_metrics() {
    let env = env();
    let admin = Admin::new(&env.airlock).expect("admin");
    let health = get(env.addr(), "/_airlock/health")
        .send()
        .await
        .expect("health");
    assert_eq!(
        health.status,
        200,
        "health needs no token: {}",
        health.text()
    );
    for auth in [None, Some("Bearer wrong-token"), Some("Bearer ")] {
        let mut req = get(env.addr(), "/_airlock/status");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status, 401, "{auth:?}: {}", res.text());
        let body = res.json();
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{body}"
        );
    }
    let foreign = get(env.addr(), "/_airlock/status")
        .header("host", "evil.example:80")
        .header("authorization", &format!("Bearer {}", admin.token))
        .send()
        .await
        .expect("send");
    assert_eq!(foreign.status, 403, "foreign Host: {}", foreign.text());
    // QA: an admin request counted itself in flight, so an idle server reported one. Neither
    // it nor the refused one above is a proxied request.
    let idle = admin.get_json("status").await;
    assert_eq!(idle["in_flight"], 0, "{idle}");
    let gauge = admin.get("metrics").await.expect("metrics").text();
    assert!(gauge.contains("\nairlock_in_flight 0\n"), "{gauge}");

    let before = admin.get("metrics").await.expect("metrics").text();
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), &words(4), false)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200);
    let status = admin.get_json("status").await;
    assert_eq!(status["paused"], false, "{status}");
    assert_eq!(
        status["listen"],
        format!("http://{}", env.addr()),
        "{status}"
    );
    assert!(
        status["spend_today_micros"].as_i64().is_some_and(|v| v > 0),
        "{status}"
    );
    let metrics = admin.get("metrics").await.expect("metrics").text();
    assert!(
        metrics.contains("# TYPE airlock_overhead_seconds histogram")
            && metrics.contains("airlock_overhead_seconds_bucket"),
        "{metrics}"
    );
    let counter = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("airlock_requests_total{")
                    && l.contains("provider=\"openai\"")
                    && l.contains("verdict=\"allowed\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counter(&metrics), counter(&before) + 1.0, "{metrics}");
    assert!(metrics.contains("airlock_tokens_total") && metrics.contains("airlock_cost_usd_total"));
    // The writer commits the first row after a pause at once, and counts its transactions.
    poll(Duration::from_secs(5), "the row committed", || {
        let admin = admin.clone();
        async move {
            let status = admin.get_json("status").await;
            let ledger = &status["ledger"];
            (ledger["written"].as_u64()? >= 1 && ledger["commits"].as_u64()? >= 1).then_some(())
        }
    })
    .await;
    let metrics = admin.get("metrics").await.expect("metrics").text();
    assert!(
        metrics.contains("# TYPE airlock_ledger_commits counter\nairlock_ledger_commits "),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issues_lists_and_revokes_keys() {
    let env = env();
    let admin = Admin::new(&env.airlock).expect("admin");
    let res = admin
        .post(
            "keys",
            Some(&json!({"name": "from-api", "providers": ["anthropic"]})),
        )
        .await
        .expect("issue");
    assert_eq!(res.status, 201, "{}", res.text());
    let key = res.json()["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("alk_"));
    let listed = admin.get_json("keys").await;
    assert!(listed.to_string().contains("from-api"), "{listed}");
    assert!(
        !listed.to_string().contains(&key),
        "GET keys shows a raw key"
    );
    let ok = Provider::Anthropic
        .chat(env.addr(), Some(&key), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let scoped = Provider::OpenAi
        .chat(env.addr(), Some(&key), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(scoped.status, 403, "{}", scoped.text());
    let res = admin
        .post("keys/from-api/revoke", None)
        .await
        .expect("revoke");
    assert_eq!(res.status, 200, "{}", res.text());
    let gone = Provider::Anthropic
        .chat(env.addr(), Some(&key), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(gone.status, 401, "{}", gone.text());
    let res = admin.post("keys/nobody/pause", None).await.expect("pause");
    assert_eq!(res.status, 404, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_scripted_session_arrive_in_order() {
    let env = env();
    let admin = Admin::new(&env.airlock).expect("admin");
    let mut events = admin.events().await.expect("events");
    let p = Provider::OpenAi;
    let wait = Duration::from_secs(5);
    let ok = p
        .chat(env.addr(), Some(&env.alk), "one", false)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status, 200);
    let bad = p
        .chat(env.addr(), Some("alk_nope"), "two", false)
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status, 401);
    env.airlock.run_ok(&["pause"], None).expect("pause");
    // The pause reaches the server within ~250 ms; the events say when.
    events.until(wait, "paused", |_| true).await;
    let refused = p
        .chat(env.addr(), Some(&env.alk), "three", false)
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status, 403);
    env.airlock.run_ok(&["resume"], None).expect("resume");
    events.until(wait, "resumed", |_| true).await;
    admin
        .post("keys/test-all/pause", None)
        .await
        .expect("key pause");
    admin
        .post("keys/test-all/resume", None)
        .await
        .expect("key resume");
    events.until(wait, "key_resumed", |_| true).await;
    drop(events);

    // Replay: a fresh subscriber sees only new events, so check the whole order on a second run.
    let mut events = admin.events().await.expect("events");
    let ok = p
        .chat(env.addr(), Some(&env.alk), "four", false)
        .send()
        .await
        .expect("send");
    let bad = p
        .chat(env.addr(), Some("alk_nope"), "five", false)
        .send()
        .await
        .expect("send");
    admin.post("pause", None).await.expect("pause");
    admin.post("resume", None).await.expect("resume");
    admin
        .post("keys/test-all/pause", None)
        .await
        .expect("key pause");
    admin
        .post("keys/test-all/resume", None)
        .await
        .expect("key resume");
    let seen = events.until(wait, "key_resumed", |_| true).await;
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "request_finished",
            "request_blocked",
            "paused",
            "resumed",
            "key_paused",
            "key_resumed"
        ],
        "{seen:#?}"
    );
    let id = |r: &airlock_e2e::support::HttpResponse| {
        r.header("x-airlock-request-id").map(str::to_owned)
    };
    assert_eq!(seen[0].1["id"].as_str().map(str::to_owned), id(&ok));
    assert_eq!(seen[1].1["id"].as_str().map(str::to_owned), id(&bad));
    assert_eq!(seen[1].1["status"], 401);
    assert_eq!(seen[4].1["key"], "test-all");
}

/// A LiteLLM-format table of `n` made-up models (plus the shipped ones if `keep`).
fn price_file(n: usize, keep: bool) -> String {
    let mut v: serde_json::Map<String, Value> = if keep {
        serde_json::from_str(&std::fs::read_to_string(table_path()).expect("table")).expect("json")
    } else {
        serde_json::Map::new()
    };
    for i in 0..n {
        v.insert(
            format!("test-model-{i}"),
            json!({
                "input_cost_per_token": 0.000001 * (i as f64 + 1.0),
                "output_cost_per_token": 0.000002,
                "litellm_provider": "openai",
                "mode": "chat"
            }),
        );
    }
    Value::Object(v).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_update_refuses_a_tiny_table_and_accepts_a_valid_one() {
    let env = env();
    let setup = &env.airlock.setup;
    let tiny = setup.dir().join("tiny.json");
    std::fs::write(&tiny, price_file(3, false)).expect("write");
    let out = setup
        .run(
            &["prices", "update", tiny.to_str().expect("utf-8 path")],
            None,
        )
        .expect("run");
    assert!(!out.status.success(), "a 3-model table was accepted");
    let show = setup
        .run_ok(&["prices", "show", "test-model-1"], None)
        .expect("show");
    assert!(show.contains("unknown"), "{show}");

    let good = setup.dir().join("good.json");
    std::fs::write(&good, price_file(70, true)).expect("write");
    setup
        .run_ok(
            &["prices", "update", good.to_str().expect("utf-8 path")],
            None,
        )
        .expect("a valid table was refused");
    let show = setup
        .run_ok(&["prices", "show", "test-model-1"], None)
        .expect("show");
    // 2e-6 USD per token is $2 per million.
    assert!(show.contains("2.00") || show.contains("2.0"), "{show}");
    // And the shipped prices are still there, for Gemini under its prefix.
    let p = PriceTable::load()
        .expect("table")
        .price("gemini/gemini-2.0-flash");
    let show = setup
        .run_ok(
            &["prices", "show", "gemini-2.0-flash", "--provider", "gemini"],
            None,
        )
        .expect("show");
    let per_m = format!("{:.2}", p.input as f64 / 1e6);
    assert!(show.contains(&per_m), "want input ${per_m}/M in {show}");
}

/// Regression: a wrong method on a known endpoint answered 404 "no admin endpoint", and bad or
/// unknown query values were silently ignored (`limit=abc` gave 100 rows, `limit=100000` 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_get_405_with_allow_and_bad_queries_400() {
    let env = env();
    let admin = Admin::new(&env.airlock).expect("admin");
    let res = admin.post("status", None).await.expect("post");
    assert_eq!(res.status, 405, "{}", res.text());
    assert_eq!(res.header("allow"), Some("GET"));
    assert_eq!(
        res.json()["error"]["code"],
        "airlock_admin_method_not_allowed"
    );
    let res = admin.get("pause").await.expect("get");
    assert_eq!(res.status, 405, "{}", res.text());
    assert_eq!(res.header("allow"), Some("POST"));
    let res = admin.get("keys/app/revoke").await.expect("get");
    assert_eq!(res.header("allow"), Some("POST"), "{}", res.text());
    let res = admin.get("nothing-here").await.expect("get");
    assert_eq!(res.status, 404, "{}", res.text());

    for path in [
        "requests?limit=abc",
        "requests?limit=-1",
        "requests?limit=0",
        "requests?limit=100000",
        "requests?blocked=maybe",
        "requests?foo=bar",
        "spend?foo=bar",
        "spend?since=today&bogus",
        "spend?since=2099-01-01",
        "requests?since=7d&until=30d",
    ] {
        let res = admin.get(path).await.expect("get");
        assert_eq!(res.status, 400, "{path}: {}", res.text());
        assert_eq!(
            res.json()["error"]["code"],
            "airlock_admin_bad_query",
            "{path}"
        );
    }
    for path in [
        "requests?limit=1000&blocked=false",
        "requests?blocked=1&since=7d&until=today",
        "spend?since=all&by=model&key=app&provider=openai",
        "spend",
    ] {
        let res = admin.get(path).await.expect("get");
        assert_eq!(res.status, 200, "{path}: {}", res.text());
    }
}
