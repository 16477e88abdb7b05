//! Limits through the real binary: budgets (per key, per day and for an `exec` key's lifetime),
//! rpm, per-request caps, the global and per-key pause switches, and anomaly detectors.

use crate::free_port;
use airlock_e2e::support::client::HttpResponse;
use airlock_e2e::support::prices::{generation_usage, Extra, PriceTable};
use airlock_e2e::support::provider::REQUEST_ID_HEADER;
use airlock_e2e::support::{poll, Admin, Provider, TestEnv};
use serde_json::Value;
use std::time::Duration;

fn start(extra: &str, before: impl FnOnce(&airlock_e2e::support::AirlockSetup)) -> TestEnv {
    let extra = extra.to_owned();
    match TestEnv::start_with(
        |c| c.extra = extra,
        |s| {
            before(s);
            Ok(())
        },
    ) {
        Ok(env) => env,
        Err(e) => panic!("starting airlock: {e:#}"),
    }
}

/// A pricey model per provider, so a $0.01 budget runs out in a handful of requests.
fn pricey(p: Provider) -> (&'static str, &'static str) {
    match p {
        Provider::OpenAi => ("gpt-4o", "gpt-4o"),
        Provider::Anthropic => ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        Provider::Gemini => ("gemini-2.5-pro", "gemini/gemini-2.5-pro"),
    }
}

async fn call(env: &TestEnv, p: Provider, key: &str, model: &str, prompt: &str) -> HttpResponse {
    let (n, v) = p.auth_header(key);
    airlock_e2e::support::client::post(env.addr(), &p.chat_path_for_model(model, false))
        .headers(p.sdk_headers())
        .header(n, &v)
        .json(&p.chat_body_for_model(model, prompt, false))
        .send()
        .await
        .expect("send")
}

/// The Airlock error code of a refused request: OpenAI carries it in the body; for every
/// provider the ledger row's `reason` has it.
async fn reason(env: &TestEnv, res: &HttpResponse) -> String {
    let id = res
        .header(REQUEST_ID_HEADER)
        .expect("request id")
        .to_owned();
    let row = env.airlock.ledger_row(&id).await;
    row["reason"].as_str().unwrap_or("").to_owned()
}

/// `body` posted to `path` as `p`'s SDK would, with `key`.
async fn post_as(env: &TestEnv, p: Provider, key: &str, path: &str, body: &Value) -> HttpResponse {
    let (h, v) = p.auth_header(key);
    airlock_e2e::support::client::post(env.addr(), path)
        .headers(p.sdk_headers())
        .header(h, &v)
        .json(body)
        .send()
        .await
        .expect("send")
}

fn prompt(n: usize) -> String {
    crate::words(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_daily_budget_stops_mid_run_in_the_provider_format_and_never_reaches_upstream() {
    let mut cfg = String::new();
    for p in Provider::ALL {
        cfg.push_str(&format!(
            "[limits.keys.bud-{}]\ndaily_usd = 0.01\n",
            p.name()
        ));
    }
    let mut keys = Vec::new();
    let env = start(&cfg, |s| {
        for p in Provider::ALL {
            keys.push(s.issue(&format!("bud-{}", p.name()), &[]).expect("issue"));
        }
    });
    let admin = Admin::new(&env.airlock).expect("admin");
    let mut events = admin.events().await.expect("events");
    let table = PriceTable::load().expect("prices");
    let text = prompt(150);
    for (p, key) in Provider::ALL.into_iter().zip(&keys) {
        env.mock.reset();
        let (model, price_key) = pricey(p);
        let each = generation_usage(&text, Extra::default()).cost_micros(&table.price(price_key));
        // Requests are refused once spent >= budget: the first n pass, where n is the first
        // count whose cumulative cost reaches $0.01.
        let n = (10_000 + each - 1) / each;
        assert!(
            n >= 2,
            "{}: budget would be hit by the first request",
            p.name()
        );
        for i in 0..n {
            let res = call(&env, p, key, model, &text).await;
            assert_eq!(res.status, 200, "{} request {i}: {}", p.name(), res.text());
        }
        let res = call(&env, p, key, model, &text).await;
        p.assert_error(&res, 429);
        let retry: u64 = res
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: no numeric Retry-After: {:?}", p.name(), res.headers));
        assert!(
            (1..=86_400).contains(&retry),
            "{}: Retry-After {retry} is not the time to the end of the UTC day",
            p.name()
        );
        if p == Provider::OpenAi {
            assert_eq!(
                res.json().pointer("/error/code").and_then(Value::as_str),
                Some("airlock_budget_exceeded")
            );
        }
        assert_eq!(reason(&env, &res).await, "airlock_budget_exceeded");
        assert_eq!(
            env.mock.requests().len() as i64,
            n,
            "{}: the mock saw a request after the budget was used up",
            p.name()
        );
        // Soft alert first, then exhausted, for this key.
        let name = format!("bud-{}", p.name());
        let seen = events
            .until(Duration::from_secs(5), "budget_alert", |d| {
                d["level"] == "exhausted" && d["scope"].to_string().contains(&name)
            })
            .await;
        let levels: Vec<&str> = seen
            .iter()
            .filter(|(k, d)| k == "budget_alert" && d["scope"].to_string().contains(&name))
            .filter_map(|(_, d)| d["level"].as_str())
            .collect();
        assert_eq!(levels, ["soft", "exhausted"], "{}: {seen:#?}", p.name());
    }
}

/// A key's lifetime budget survives a crash: at start the server takes what each budgeted key
/// has spent since it was issued from the ledger (the rows the dead server had spooled
/// included), so after `kill -9` the key is refused at the same request as it would have been
/// without a restart, and the admin API reports each key's spend to the micro-dollar; a key
/// revoked and issued again under the same name starts from nothing, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_budgets_are_taken_from_the_ledger_after_a_crash() {
    let table = PriceTable::load().expect("prices");
    let text = prompt(150);
    let (model, price_key) = pricey(Provider::OpenAi);
    let each = generation_usage(&text, Extra::default()).cost_micros(&table.price(price_key));
    // Room for five requests and a half: the sixth passes (5 × each < budget), the seventh not.
    let budget = format!("{:.6}usd", (each * 11 / 2) as f64 / 1e6);
    let (mut a, mut b) = (String::new(), String::new());
    let mut env = start("", |s| {
        a = s.issue("life-a", &["--budget", &budget]).expect("issue");
        b = s.issue("life-b", &["--budget", &budget]).expect("issue");
        s.issue("life-c", &["--budget", &budget]).expect("issue");
    });
    for (key, n) in [(&a, 4), (&b, 1)] {
        for i in 0..n {
            let res = call(&env, Provider::OpenAi, key, model, &text).await;
            assert_eq!(res.status, 200, "request {i}: {}", res.text());
        }
    }
    // `life-b` is revoked and issued again: the new key has spent nothing, whatever rows the
    // old one of that name left.
    let setup = &env.airlock.setup;
    setup
        .run_ok(&["keys", "revoke", "life-b"], None)
        .expect("revoke");
    setup
        .issue("life-b", &["--budget", &budget])
        .expect("issue again");
    let spent_in = |limits: &Value, name: &str| {
        limits["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["key"] == name))
            .and_then(|k| k["lifetime_spent_micros"].as_i64())
            .unwrap_or_else(|| panic!("no lifetime spend for {name}: {limits}"))
    };
    let before = Admin::new(&env.airlock)
        .expect("admin")
        .get_json("limits")
        .await;
    assert_eq!(spent_in(&before, "life-a"), 4 * each, "{before}");
    assert_eq!(
        spent_in(&before, "life-b"),
        0,
        "issued again, same server: {before}"
    );
    env.airlock.kill9_and_restart().expect("restart");
    let admin = Admin::new(&env.airlock).expect("admin");
    let limits = admin.get_json("limits").await;
    let spent = |name: &str| spent_in(&limits, name);
    assert_eq!(spent("life-a"), 4 * each, "{limits}");
    assert_eq!(
        spent("life-b"),
        0,
        "a key issued again under its old name: {limits}"
    );
    assert_eq!(spent("life-c"), 0, "a budgeted key with no rows: {limits}");
    env.mock.reset();
    for i in 5..=6 {
        let res = call(&env, Provider::OpenAi, &a, model, &text).await;
        assert_eq!(
            res.status,
            200,
            "request {i} after the restart: {}",
            res.text()
        );
    }
    let res = call(&env, Provider::OpenAi, &a, model, &text).await;
    Provider::OpenAi.assert_error(&res, 429);
    assert_eq!(
        res.json().pointer("/error/code").and_then(Value::as_str),
        Some("airlock_key_budget_exceeded"),
        "{}",
        res.text()
    );
    assert_eq!(
        env.mock.requests().len(),
        2,
        "the refused request reached the mock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_lifetime_budget_refuses_the_child_once_spent() {
    // `exec` hands the child base URLs built from `listen`, so it needs a real port.
    let port = free_port();
    let env =
        TestEnv::start_with(|c| c.listen = format!("127.0.0.1:{port}"), |_| Ok(())).expect("start");
    let table = PriceTable::load().expect("prices");
    let text = prompt(150);
    let each = generation_usage(&text, Extra::default()).cost_micros(&table.price("gpt-4o"));
    let n = (5_000 + each - 1) / each;
    let body =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    let out_dir = env.airlock.setup.dir().join("exec-out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let script = r#"for i in 1 2 3 4 5 6 7 8; do
  curl -s -o "$OUT/$i.json" -w '%{http_code}\n' -H "authorization: Bearer $OPENAI_API_KEY" \
    -H 'content-type: application/json' -d "$BODY" "$OPENAI_BASE_URL/chat/completions"
done"#;
    let stdout = exec_script(&env, &["--budget", "0.005usd"], script, &body, &out_dir);
    let codes: Vec<&str> = stdout.lines().collect();
    let mut want = vec!["200"; n as usize];
    want.resize(8, "429");
    assert_eq!(codes, want, "each request costs {each} µ$, budget 5000 µ$");
    let refused: Value = serde_json::from_slice(
        &std::fs::read(out_dir.join(format!("{}.json", n + 1))).expect("body"),
    )
    .expect("json");
    assert_eq!(
        refused.pointer("/error/code").and_then(Value::as_str),
        Some("airlock_key_budget_exceeded"),
        "{refused}"
    );
    assert_eq!(
        env.mock.requests().len() as i64,
        n,
        "refused requests reached the mock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_two_refuses_the_third_call_with_retry_after() {
    let mut keys = Vec::new();
    let env = start("", |s| {
        for p in Provider::ALL {
            keys.push(
                s.issue(&format!("rpm-{}", p.name()), &["--rpm", "2"])
                    .expect("issue"),
            );
        }
    });
    for (p, key) in Provider::ALL.into_iter().zip(&keys) {
        for i in 0..2 {
            let res = call(&env, p, key, p.model(), &format!("hello {i}")).await;
            assert_eq!(res.status, 200, "{} call {i}: {}", p.name(), res.text());
        }
        let res = call(&env, p, key, p.model(), "hello 3").await;
        p.assert_error(&res, 429);
        let retry: u64 = res
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: no Retry-After", p.name()));
        assert!(
            (1..=60).contains(&retry),
            "{}: Retry-After {retry}",
            p.name()
        );
        assert_eq!(
            reason(&env, &res).await,
            "airlock_rate_limited",
            "{}",
            p.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_caps_tpm_and_model_rules() {
    let cfg = r#"[limits]
max_tokens = 100

[limits.keys.capped]
tpm = 60
models_allow = ["gpt-4o*"]
models_deny = ["gpt-4o-audio*"]
"#;
    let mut key = String::new();
    let env = start(cfg, |s| key = s.issue("capped", &[]).expect("issue"));
    let oa = Provider::OpenAi;
    let post = |body: Value| {
        airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
            .header("authorization", &format!("Bearer {key}"))
            .json(&body)
    };
    let msg = serde_json::json!([{"role": "user", "content": "hi"}]);
    for field in ["max_tokens", "max_completion_tokens"] {
        let res = post(serde_json::json!({"model": "gpt-4o", "messages": msg, field: 101}))
            .send()
            .await
            .expect("send");
        oa.assert_error(&res, 400);
        assert_eq!(res.json()["error"]["code"], "airlock_max_tokens", "{field}");
    }
    let res = call(
        &env,
        Provider::Anthropic,
        &env.alk,
        "claude-sonnet-4-5",
        "hi",
    )
    .await;
    // Anthropic's body asks for max_tokens 256 > 100.
    Provider::Anthropic.assert_error(&res, 400);
    assert_eq!(reason(&env, &res).await, "airlock_max_tokens");
    // A model the lists cannot be checked against (none, a number) is refused too.
    for model in [
        serde_json::json!("gpt-4o-audio-preview"),
        serde_json::json!("o1-mini"),
        Value::Null,
        serde_json::json!(4),
    ] {
        let res = post(serde_json::json!({"model": model, "messages": msg}))
            .send()
            .await
            .expect("send");
        oa.assert_error(&res, 403);
        assert_eq!(
            res.json()["error"]["code"],
            "airlock_model_denied",
            "{model}"
        );
    }
    assert!(
        env.mock.requests().is_empty(),
        "a refused request reached the mock"
    );
    // tpm 60: a request using ~40 tokens passes, then the window is full.
    let mut codes = Vec::new();
    for i in 0..4 {
        let res = post(serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt(20 + i)}]}))
            .send()
            .await
            .expect("send");
        if res.status != 200 {
            oa.assert_error(&res, 429);
            assert_eq!(res.json()["error"]["code"], "airlock_token_rate_limited");
            assert!(res.header("retry-after").is_some(), "no Retry-After on tpm");
        }
        codes.push(res.status);
    }
    assert_eq!(codes[0], 200, "{codes:?}");
    assert!(codes.contains(&429), "tpm 60 never refused: {codes:?}");
}

/// QA: `limits.max_tokens` refused a request asking for more, but one that asked for nothing
/// went upstream uncapped, to the provider's default. Such a request now gets the cap written
/// into the field its endpoint reads, and what the caller did set is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_sets_no_output_cap_gets_the_keys() {
    let mut key = String::new();
    let env = start("[limits.keys.kmax]\nmax_tokens = 100\n", |s| {
        key = s.issue("kmax", &[]).expect("issue");
    });
    let msgs = serde_json::json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            Provider::OpenAi,
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "messages": msgs, "max_tokens": null}),
            "/max_completion_tokens",
        ),
        (
            Provider::OpenAi,
            "/openai/v1/responses",
            serde_json::json!({"model": "gpt-4.1", "input": "hi"}),
            "/max_output_tokens",
        ),
        (
            Provider::Anthropic,
            "/anthropic/v1/messages",
            serde_json::json!({"model": "claude-sonnet-4-5", "messages": msgs}),
            "/max_tokens",
        ),
        (
            Provider::Gemini,
            "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            serde_json::json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"temperature": 0.25}
            }),
            "/generationConfig/maxOutputTokens",
        ),
    ];
    for (p, path, body, field) in cases {
        env.mock.reset();
        let res = post_as(&env, p, &key, path, &body).await;
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        let sent = env.mock.requests().remove(0).json().expect("json body");
        assert_eq!(
            sent.pointer(field),
            Some(&Value::from(100)),
            "{path}: {sent}"
        );
        if p == Provider::Gemini {
            assert_eq!(sent["generationConfig"]["temperature"], 0.25, "{sent}");
        }
    }
    // A cap the request sets itself, under the key's, goes up as it was.
    env.mock.reset();
    let res = airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
        .header("authorization", &format!("Bearer {key}"))
        .json(&serde_json::json!({"model": "gpt-4o", "messages": msgs, "max_tokens": 7}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = env.mock.requests().remove(0).json().expect("json body");
    assert_eq!(sent["max_tokens"], 7, "{sent}");
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
}

/// Poll until a request gets `status` (the server sees pause changes within ~250 ms).
async fn until_status(env: &TestEnv, p: Provider, key: &str, status: u16) -> HttpResponse {
    let k = key.to_owned();
    poll(
        Duration::from_secs(3),
        &format!("{} -> {status}", p.name()),
        || {
            let k = k.clone();
            async move {
                let res = call(env, p, &k, p.model(), "are we paused").await;
                (res.status == status).then_some(res)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_key_pause_switches_via_cli_and_admin_api() {
    let mut other = String::new();
    let env = start("", |s| other = s.issue("other", &[]).expect("issue"));
    let admin = Admin::new(&env.airlock).expect("admin");
    env.airlock.run_ok(&["pause"], None).expect("pause");
    for p in Provider::ALL {
        let res = until_status(&env, p, &env.alk, 403).await;
        p.assert_error(&res, 403);
        assert_eq!(reason(&env, &res).await, "airlock_paused");
    }
    env.airlock.run_ok(&["resume"], None).expect("resume");
    until_status(&env, Provider::OpenAi, &env.alk, 200).await;

    env.airlock
        .run_ok(&["keys", "pause", "test-all"], None)
        .expect("keys pause");
    let res = until_status(&env, Provider::Anthropic, &env.alk, 403).await;
    assert_eq!(reason(&env, &res).await, "airlock_key_paused");
    // Only that key.
    assert_eq!(
        call(&env, Provider::Anthropic, &other, "claude-sonnet-4-5", "x")
            .await
            .status,
        200
    );
    env.airlock
        .run_ok(&["keys", "resume", "test-all"], None)
        .expect("keys resume");
    until_status(&env, Provider::Anthropic, &env.alk, 200).await;

    let res = admin
        .post("keys/other/pause", None)
        .await
        .expect("admin pause");
    assert_eq!(res.status, 200, "{}", res.text());
    let res = until_status(&env, Provider::Gemini, &other, 403).await;
    assert_eq!(
        res.json()["error"]["status"]
            .as_str()
            .map(|s| !s.is_empty()),
        Some(true)
    );
    assert_eq!(reason(&env, &res).await, "airlock_key_paused");
    let res = admin
        .post("keys/other/resume", None)
        .await
        .expect("admin resume");
    assert_eq!(res.status, 200, "{}", res.text());
    until_status(&env, Provider::Gemini, &other, 200).await;

    let res = admin.post("pause", None).await.expect("admin pause");
    assert_eq!(res.status, 200);
    let res = until_status(&env, Provider::OpenAi, &env.alk, 403).await;
    assert_eq!(res.json()["error"]["code"], "airlock_paused");
    admin.post("resume", None).await.expect("admin resume");
    until_status(&env, Provider::OpenAi, &env.alk, 200).await;
}

/// Runs `airlock exec ARGS -- sh -c SCRIPT` with `$BODY` and `$OUT` set; asserts it succeeded
/// and returns its stdout.
fn exec_script(
    env: &TestEnv,
    args: &[&str],
    script: &str,
    body: &Value,
    out_dir: &std::path::Path,
) -> String {
    let out = env
        .airlock
        .setup
        .command(
            ["exec"]
                .iter()
                .chain(args)
                .chain(&["--", "sh", "-c", script]),
        )
        .env("BODY", body.to_string())
        .env("OUT", out_dir)
        .output()
        .expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exec failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Like [`start`], on a fixed port.
fn start_on_a_port(before: impl FnOnce(&airlock_e2e::support::AirlockSetup)) -> TestEnv {
    let port = free_port();
    match TestEnv::start_with(
        |c| c.listen = format!("127.0.0.1:{port}"),
        |s| {
            before(s);
            Ok(())
        },
    ) {
        Ok(env) => env,
        Err(e) => panic!("starting airlock: {e:#}"),
    }
}

/// QA: `airlock pause` then two requests at once gave 200 200, though the CLI had said every
/// request is refused; after `airlock resume` the next request was still 403; `keys pause qa1`
/// then 200 200 403; an `exec` key got 3 × 200 for ~300 ms after exec exited. The server saw
/// the database only at its next poll (every 250 ms). Each check below runs with no wait at all
/// after the CLI returns, a few rounds, so a poll that happens to land in between cannot pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pause_resume_and_revoke_are_in_force_when_the_cli_returns() {
    let mut other = String::new();
    let env = start_on_a_port(|s| other = s.issue("other", &[]).expect("issue"));
    let p = Provider::OpenAi;
    let status = |key: String| {
        let env = &env;
        async move { call(env, p, &key, p.model(), "now?").await }
    };
    for round in 0..3 {
        let out = env.airlock.run_ok(&["pause"], None).expect("pause");
        assert!(out.contains("in force now"), "{out}");
        for _ in 0..2 {
            let res = status(env.alk.clone()).await;
            assert_eq!(
                res.status, 403,
                "round {round}: right after `airlock pause`"
            );
            assert_eq!(reason(&env, &res).await, "airlock_paused");
        }
        let out = env.airlock.run_ok(&["resume"], None).expect("resume");
        assert!(out.contains("in force now"), "{out}");
        let res = status(env.alk.clone()).await;
        assert_eq!(
            res.status, 200,
            "round {round}: right after `airlock resume`"
        );

        let out = env
            .airlock
            .run_ok(&["keys", "pause", "test-all"], None)
            .expect("keys pause");
        assert!(out.contains("in force now"), "{out}");
        for _ in 0..2 {
            let res = status(env.alk.clone()).await;
            assert_eq!(res.status, 403, "round {round}: right after `keys pause`");
            assert_eq!(reason(&env, &res).await, "airlock_key_paused");
        }
        assert_eq!(status(other.clone()).await.status, 200, "only that key");
        env.airlock
            .run_ok(&["keys", "resume", "test-all"], None)
            .expect("keys resume");
        let res = status(env.alk.clone()).await;
        assert_eq!(res.status, 200, "round {round}: right after `keys resume`");
    }

    let out = env
        .airlock
        .run_ok(&["keys", "revoke", "other"], None)
        .expect("revoke");
    assert!(out.contains("in force now"), "{out}");
    assert_eq!(
        status(other.clone()).await.status,
        401,
        "right after revoke"
    );

    // The exec child leaves its key behind; it is dead once `exec` has returned.
    let out_dir = env.airlock.setup.dir().join("exec-out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let body = p.chat_body("from the child", false);
    let script = r#"printf '%s' "$OPENAI_API_KEY" > "$OUT/key"
curl -s -o /dev/null -w '%{http_code}\n' -H "authorization: Bearer $OPENAI_API_KEY" \
  -H 'content-type: application/json' -d "$BODY" "$OPENAI_BASE_URL/chat/completions""#;
    let stdout = exec_script(&env, &[], script, &body, &out_dir);
    assert_eq!(stdout.trim(), "200", "the child's own request");
    let child_key = std::fs::read_to_string(out_dir.join("key")).expect("child key");
    assert!(child_key.starts_with("alk_"), "{child_key:?}");
    for _ in 0..3 {
        let res = status(child_key.clone()).await;
        assert_eq!(res.status, 401, "exec's key right after exec returned");
    }
}

/// With no server at the configured address the CLI still changes the state, quietly, and says
/// when it applies; something else on that port only earns a warning. A server started later
/// reads the state from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pause_without_a_server_says_when_it_applies() {
    let env = start_on_a_port(|s| {
        let out = s.run(&["pause"], None).expect("pause");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("applies when `airlock serve` starts"),
            "{stdout}"
        );
        assert!(!stderr.contains("warning"), "{stderr}");
    });
    let res = call(
        &env,
        Provider::OpenAi,
        &env.alk,
        Provider::OpenAi.model(),
        "x",
    )
    .await;
    assert_eq!(res.status, 403);

    // The mock upstream is no Airlock: it answers, but does not confirm.
    let mut cfg = airlock_e2e::support::Config::new(&env.mock.url());
    cfg.listen = env.mock.addr().to_string();
    let setup = airlock_e2e::support::AirlockSetup::new(cfg).expect("setup");
    let out = setup.run(&["resume"], None).expect("resume");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("not confirmed"), "{stdout}");
    assert!(stderr.contains("warning"), "{stderr}");
}

const ANOMALY: &str = r#"[anomaly]
enabled = true
auto_pause = false
window = "5s"
baseline = "30s"
repeat_threshold = 4
variation_threshold = 5
burst_factor = 2.0
burst_min_requests = 8
"#;

/// Distinct words whose first letters differ, so prompts built from them differ in shape.
const VARIED: [&str; 9] = [
    "apples and pears",
    "bridges over rivers",
    "cats sleeping",
    "dunes at dusk",
    "engines humming",
    "forests in fog",
    "glaciers melting",
    "harbours at night",
    "islands",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_detectors_fire_on_their_patterns_and_stay_quiet_on_normal_work() {
    let mut k = Vec::new();
    let env = start(ANOMALY, |s| {
        for n in ["loop", "extract", "burst", "normal"] {
            k.push(s.issue(n, &[]).expect("issue"));
        }
    });
    let admin = Admin::new(&env.airlock).expect("admin");
    let mut events = admin.events().await.expect("events");
    let p = Provider::OpenAi;
    // Normal: 5 different prompts, below every threshold.
    for t in VARIED.iter().take(5) {
        assert_eq!(call(&env, p, &k[3], p.model(), t).await.status, 200);
    }
    // Loop: the same prompt 4 times.
    for _ in 0..4 {
        assert_eq!(
            call(&env, p, &k[0], p.model(), "summarise the file again")
                .await
                .status,
            200
        );
    }
    // Extraction-like: 5 variations of one template.
    for i in 0..5 {
        let t = format!("what is the secret for user {i}{i}7 please");
        assert_eq!(call(&env, p, &k[1], p.model(), &t).await.status, 200);
    }
    // Burst: 9 requests at once, all different, from a key with no history.
    for t in VARIED {
        assert_eq!(call(&env, p, &k[2], p.model(), t).await.status, 200);
    }
    let seen = events.drain(Duration::from_millis(700)).await;
    let anomalies: Vec<(String, String)> = seen
        .iter()
        .filter(|(kind, _)| kind == "anomaly")
        .map(|(_, d)| {
            (
                d["account"].as_str().unwrap_or("").to_owned(),
                d["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("loop", "repeated_prompt"),
        ("extract", "extraction_like"),
        ("burst", "request_burst"),
    ] {
        assert!(
            anomalies
                .iter()
                .any(|(a, k)| (a.as_str(), k.as_str()) == want),
            "no {want:?} anomaly; got {anomalies:?}"
        );
    }
    let noisy: Vec<_> = anomalies
        .iter()
        .filter(|(a, k)| a == "normal" || (a == "burst" && k != "request_burst"))
        .collect();
    assert!(noisy.is_empty(), "false alarms on normal work: {noisy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_auto_pause_blocks_the_key_until_keys_resume() {
    let cfg = ANOMALY.replace("auto_pause = false", "auto_pause = true");
    let mut key = String::new();
    let env = start(&cfg, |s| key = s.issue("looper", &[]).expect("issue"));
    let p = Provider::Anthropic;
    for i in 0..3 {
        let res = call(&env, p, &key, p.model(), "do it again").await;
        assert_eq!(res.status, 200, "call {i}: {}", res.text());
    }
    let res = call(&env, p, &key, p.model(), "do it again").await;
    p.assert_error(&res, 403);
    assert_eq!(reason(&env, &res).await, "airlock_key_paused");
    let res = call(&env, p, &key, p.model(), "something else").await;
    p.assert_error(&res, 403);
    assert_eq!(
        env.mock.requests().len(),
        3,
        "the alerting request reached the mock"
    );
    env.airlock
        .run_ok(&["keys", "resume", "looper"], None)
        .expect("resume");
    until_status(&env, p, &key, 200).await;
}

/// `n` copies of one Anthropic request sent at once, each held 1 s by the mock; their statuses.
async fn at_once(env: &TestEnv, key: &str, body: &Value, n: usize) -> Vec<HttpResponse> {
    let p = Provider::Anthropic;
    let (h, v) = p.auth_header(key);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let req = airlock_e2e::support::client::post(env.addr(), "/anthropic/v1/messages")
            .headers(p.sdk_headers())
            .header(h, &v)
            .header("x-mock-scenario", "delay_ms=1000")
            .json(body);
        set.spawn(async move { req.send().await.expect("send") });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("join"));
    }
    out
}

/// Regression (QA: 20 concurrent requests on a 100 µ$ budget all reached the upstream, 9600 µ$
/// spent). An admitted request holds its worst-case cost against every budget it is subject to
/// until it ends, so requests in flight count: on a budget smaller than one request, exactly one
/// of 20 sent at once goes upstream (the one-request overshoot a sequential run allows too),
/// for a key's own `--budget` and for a config daily budget alike, and the rest get the usual
/// 429 in Anthropic's format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_multiply_a_budget_overshoot() {
    let cfg = "[limits.keys.conc-daily]\ndaily_usd = 0.0001\n";
    let (mut life, mut daily) = (String::new(), String::new());
    let env = start(cfg, |s| {
        life = s
            .issue("conc-life", &["--budget", "0.0001usd"])
            .expect("issue");
        daily = s.issue("conc-daily", &[]).expect("issue");
    });
    let table = PriceTable::load().expect("prices");
    let text = "how much is this";
    let one = generation_usage(text, Extra::default()).cost_micros(&table.price("claude-opus-4-1"));
    assert!(one > 100, "one request ({one} µ$) must be over the budget");
    let body = serde_json::json!({
        "model": "claude-opus-4-1", "max_tokens": 100,
        "messages": [{"role": "user", "content": text}]
    });
    for (name, key, code) in [
        ("conc-life", &life, "airlock_key_budget_exceeded"),
        ("conc-daily", &daily, "airlock_budget_exceeded"),
    ] {
        env.mock.reset();
        let results = at_once(&env, key, &body, 20).await;
        let ok = results.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            ok,
            1,
            "{name}: {:?}",
            results.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        for r in results.iter().filter(|r| r.status != 200) {
            Provider::Anthropic.assert_error(r, 429);
            assert_eq!(reason(&env, r).await, code, "{name}: {}", r.text());
        }
        assert_eq!(
            env.mock.requests().len(),
            1,
            "{name}: more than one request reached the mock"
        );
        // The one that went through spent the budget: the next is refused before upstream.
        let res = at_once(&env, key, &body, 1).await.remove(0);
        Provider::Anthropic.assert_error(&res, 429);
        assert_eq!(
            env.mock.requests().len(),
            1,
            "{name}: refused request reached the mock"
        );
    }
    let spend = env.airlock.setup.spend_json(&[]).expect("spend");
    assert_eq!(
        spend["total"]["cost_micros"].as_i64(),
        Some(2 * one),
        "one request per key was charged: {spend}"
    );
}

/// QA: eight requests sent at once all passed `tpm = 60` (272 tokens in the minute), since
/// tokens were counted only as each ended. Each request now holds its prompt and its
/// `max_tokens` until it ends, so only one of them is admitted; the rest are told to retry when
/// it finishes, and none of them reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_at_once_cannot_all_pass_a_tokens_per_minute_limit() {
    let mut key = String::new();
    let env = start("[limits.keys.ktpm]\ntpm = 60\n", |s| {
        key = s.issue("ktpm", &[]).expect("issue");
    });
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 50,
        "messages": [{"role": "user", "content": "say something short"}]
    });
    let results = at_once(&env, &key, &body, 8).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    for r in results.iter().filter(|r| r.status != 200) {
        Provider::Anthropic.assert_error(r, 429);
        assert_eq!(
            reason(&env, r).await,
            "airlock_token_rate_limited",
            "{}",
            r.text()
        );
        assert_eq!(r.header("retry-after"), Some("5"), "{}", r.text());
        assert!(
            r.text().contains("held by requests still in flight"),
            "{}",
            r.text()
        );
    }
    assert_eq!(
        env.mock.requests().len(),
        1,
        "more than one reached the mock"
    );
    // Its hold is given back when it ends: the key is under its limit again, and the next
    // request passes.
    let res = at_once(&env, &key, &body, 1).await.remove(0);
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Regression (QA: `exec --as qa9` ran five requests on a key whose own `--budget` was used up,
/// and `exec --as qar` ignored qar's `--rpm 2`). A child key's requests count against, and are
/// limited by, its parent's own budget and rpm as well as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_as_a_key_is_bound_by_that_keys_own_budget_and_rpm() {
    let port = free_port();
    let table = PriceTable::load().expect("prices");
    let text = prompt(150);
    let each = generation_usage(&text, Extra::default()).cost_micros(&table.price("gpt-4o"));
    // Room for one request and a half: the parent's second request is refused.
    let budget = format!("{:.6}usd", (each * 3 / 2) as f64 / 1e6);
    let (mut qa9, mut qar) = (String::new(), String::new());
    let env = TestEnv::start_with(
        |c| c.listen = format!("127.0.0.1:{port}"),
        |s| {
            qa9 = s.issue("qa9", &["--budget", &budget])?;
            qar = s.issue("qar", &["--rpm", "2"])?;
            Ok(())
        },
    )
    .expect("start");
    let oa = Provider::OpenAi;
    for i in 0..2 {
        let res = call(&env, oa, &qa9, "gpt-4o", &text).await;
        assert_eq!(res.status, 200, "qa9 request {i}: {}", res.text());
    }
    let res = call(&env, oa, &qa9, "gpt-4o", &text).await;
    oa.assert_error(&res, 429);
    let body =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    let script = r#"for i in 1 2 3 4 5; do
  curl -s -o /dev/null -w '%{http_code}\n' -H "authorization: Bearer $OPENAI_API_KEY" \
    -H 'content-type: application/json' -d "$BODY" "$OPENAI_BASE_URL/chat/completions"
done"#;
    let exec_as = |name: &str| {
        exec_script(
            &env,
            &["--as", name],
            script,
            &body,
            env.airlock.setup.dir(),
        )
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    env.mock.reset();
    assert_eq!(exec_as("qa9"), ["429"; 5], "qa9's budget is used up");
    assert!(
        env.mock.requests().is_empty(),
        "a child of a spent key reached the mock"
    );
    assert_eq!(
        exec_as("qar"),
        ["200", "200", "429", "429", "429"],
        "qar's rpm is 2"
    );
    assert_eq!(exec_as("qar"), ["429"; 5], "still within the same minute");
    let res = call(&env, oa, &qar, "gpt-4o", "hi").await;
    oa.assert_error(&res, 429);
    assert_eq!(
        res.json().pointer("/error/code").and_then(Value::as_str),
        Some("airlock_rate_limited")
    );
}

/// Regression (QA: a key with `--budget 0.0001usd` sent model "gpt-7-ultra", which has no price,
/// five times: all went upstream and cost "$0.00"). A model with no known price is refused,
/// naming the budget and how to add a price, wherever a USD budget applies; a key under no
/// budget may still use it, and so may a budgeted one once the model has a configured price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_models_cannot_bypass_a_usd_budget() {
    let cfg = "[limits.keys.cfg-budget]\ndaily_usd = 1.0\n\n[prices.\"gpt-7-priced\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n";
    let (mut life, mut daily, mut free) = (String::new(), String::new(), String::new());
    let env = start(cfg, |s| {
        life = s
            .issue("life-budget", &["--budget", "0.0001usd"])
            .expect("issue");
        daily = s.issue("cfg-budget", &[]).expect("issue");
        free = s.issue("no-budget", &[]).expect("issue");
    });
    let oa = Provider::OpenAi;
    for (key, scope) in [
        (&life, "key life-budget lifetime"),
        (&daily, "key cfg-budget daily"),
    ] {
        for model in ["gpt-7-ultra", "GPT-7-ULTRA"] {
            let res = call(&env, oa, key, model, "hi").await;
            oa.assert_error(&res, 403);
            let err = &res.json()["error"];
            assert_eq!(err["code"], "airlock_model_unpriced", "{}", res.text());
            let msg = err["message"].as_str().unwrap_or("");
            assert!(
                msg.contains("no known price") && msg.contains(scope) && msg.contains("[prices."),
                "{msg}"
            );
        }
    }
    assert!(
        env.mock.requests().is_empty(),
        "an unpriced request reached the mock"
    );
    let res = call(&env, oa, &free, "gpt-7-ultra", "hi").await;
    assert_eq!(res.status, 200, "no budget applies: {}", res.text());
    let res = call(&env, oa, &daily, "gpt-7-priced", "hi").await;
    assert_eq!(res.status, 200, "priced in the config: {}", res.text());
    assert_eq!(env.mock.requests().len(), 2);
}

/// Regression (QA: `models_deny = ["o1*", "gemini-2.5-pro*", "claude-opus*"]` let through
/// `%67emini-2.5-pro` in a Gemini path, `O1-mini`, `" o1-mini"`, `openai/o1-mini` and
/// `Claude-Opus-4-1`, which the price lookup already read as the denied models). Allow and deny
/// lists match the model as the upstream reads it: percent-decoded path, trimmed, any case,
/// with or without a provider prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_lists_match_every_spelling_of_a_model() {
    let cfg = r#"[limits.keys.qa6]
models_deny = ["o1*", "gemini-2.5-pro*", "claude-opus*"]

[limits.keys.only4o]
models_allow = ["gpt-4o*"]
"#;
    let (mut qa6, mut only) = (String::new(), String::new());
    let env = start(cfg, |s| {
        qa6 = s.issue("qa6", &[]).expect("issue");
        only = s.issue("only4o", &[]).expect("issue");
    });
    let denied = [
        (Provider::Gemini, "%67emini-2.5-pro"),
        (Provider::Gemini, "%67emini-2.5-pro%3AgenerateContent?x="),
        (Provider::Gemini, "Gemini-2.5-Pro"),
        (Provider::OpenAi, "O1-mini"),
        (Provider::OpenAi, " o1-mini"),
        (Provider::OpenAi, "openai/o1-mini"),
        (Provider::Anthropic, "Claude-Opus-4-1"),
    ];
    for (p, model) in denied {
        let res = call(&env, p, &qa6, model, "hi").await;
        p.assert_error(&res, 403);
        assert_eq!(
            reason(&env, &res).await,
            "airlock_model_denied",
            "{} {model:?}",
            p.name()
        );
    }
    for (model, want) in [
        ("GPT-4o", 200),
        ("openai/gpt-4o-mini", 200),
        ("O1-MINI", 403),
        ("openai/o1", 403),
    ] {
        let res = call(&env, Provider::OpenAi, &only, model, "hi").await;
        assert_eq!(res.status, want, "{model:?}: {}", res.text());
    }
    assert_eq!(
        env.mock.requests().len(),
        2,
        "a denied model reached the mock"
    );
}

/// Regression (QA: with `max_tokens = 100`, `"max_tokens": 1e9` and `"max_tokens": "5000"` were
/// forwarded). Every field that carries the output cap, in every provider's API, is refused with
/// a 400 in that provider's format when its value is not a non-negative integer, and an integral
/// float is read as the integer it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_cap_fails_closed_on_values_it_cannot_read() {
    let mut key = String::new();
    let env = start("[limits.keys.capped]\nmax_tokens = 100\n", |s| {
        key = s.issue("capped", &[]).expect("issue")
    });
    let msg = serde_json::json!([{"role": "user", "content": "hi"}]);
    let gem = serde_json::json!([{"role": "user", "parts": [{"text": "hi"}]}]);
    let cases = [
        (
            Provider::OpenAi,
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "messages": msg, "max_tokens": 1e9}),
        ),
        (
            Provider::OpenAi,
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "messages": msg, "max_tokens": "5000"}),
        ),
        (
            Provider::OpenAi,
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "messages": msg, "max_completion_tokens": "5000"}),
        ),
        (
            Provider::OpenAi,
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "messages": msg, "max_tokens": -1}),
        ),
        (
            Provider::OpenAi,
            "/openai/v1/responses",
            serde_json::json!({"model": "gpt-4o", "input": "hi", "max_output_tokens": "5000"}),
        ),
        (
            Provider::OpenAi,
            "/openai/v1/responses",
            serde_json::json!({"model": "gpt-4o", "input": "hi", "max_output_tokens": 50.5}),
        ),
        (
            Provider::Anthropic,
            "/anthropic/v1/messages",
            serde_json::json!({"model": "claude-sonnet-4-5", "messages": msg, "max_tokens": "5000"}),
        ),
        (
            Provider::Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            serde_json::json!({"contents": gem, "generationConfig": {"maxOutputTokens": "5000"}}),
        ),
    ];
    for (p, path, body) in cases {
        let res = post_as(&env, p, &key, path, &body).await;
        p.assert_error(&res, 400);
        assert_eq!(reason(&env, &res).await, "airlock_max_tokens", "{body}");
    }
    assert!(
        env.mock.requests().is_empty(),
        "an unreadable cap reached the mock"
    );
    let ok = serde_json::json!({"model": "gpt-4o", "messages": msg, "max_tokens": 100.0});
    let res = airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
        .header("authorization", &format!("Bearer {key}"))
        .json(&ok)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Regression: `airlock limits` had no column for a `keys issue --budget` lifetime budget and
/// showed an exhausted key as `active`; `keys issued` showed a paused key as `active`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_issued_show_lifetime_budgets_and_paused_or_exhausted_keys() {
    let table = PriceTable::load().expect("prices");
    let text = prompt(50);
    let (model, price_key) = pricey(Provider::OpenAi);
    let each = generation_usage(&text, Extra::default()).cost_micros(&table.price(price_key));
    // Less than one request: the first passes and spends it all.
    let budget = format!("{:.6}usd", (each / 2) as f64 / 1e6);
    let mut spent_key = String::new();
    let env = start("", |s| {
        spent_key = s.issue("spent", &["--budget", &budget]).expect("issue");
        s.issue("held", &[]).expect("issue");
        s.issue("fresh", &["--budget", "5usd"]).expect("issue");
    });
    let res = call(&env, Provider::OpenAi, &spent_key, model, &text).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let setup = &env.airlock.setup;
    setup
        .run_ok(&["keys", "pause", "held"], None)
        .expect("pause");
    env.airlock.ledger_rows_at_least(1).await;

    // `airlock limits` asks the running server, at the address its config names.
    let config = std::fs::read_to_string(&setup.config_path)
        .expect("config")
        .replace("\"127.0.0.1:0\"", &format!("\"{}\"", env.addr()));
    let config_path = setup.dir().join("limits-config.toml");
    std::fs::write(&config_path, config).expect("write config");
    let out = std::process::Command::new(airlock_e2e::support::airlock::airlock_bin())
        .arg("--config")
        .arg(&config_path)
        .arg("limits")
        .env("AIRLOCK_DATA_DIR", &setup.data_dir)
        .output()
        .expect("limits");
    let limits = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{limits}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = limits
        .lines()
        .find(|l| l.starts_with("KEY"))
        .unwrap_or_else(|| panic!("{limits}"));
    assert!(
        header.contains("LIFETIME") && header.contains("LIFE BUDGET"),
        "{limits}"
    );
    let row = |name: &str| {
        limits
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {limits}"))
            .to_owned()
    };
    let spent = row("spent");
    assert!(
        spent.contains("exhausted: lifetime budget spent"),
        "{limits}"
    );
    let cells: Vec<&str> = spent.split_whitespace().collect();
    assert!(
        cells[3].starts_with('$') && cells[4].starts_with('$'),
        "lifetime spend and budget: {limits}"
    );
    assert!(row("held").contains("paused"), "{limits}");
    let fresh = row("fresh");
    assert!(
        fresh.contains("$5.00") && fresh.ends_with("active"),
        "{limits}"
    );

    let issued = setup.run_ok(&["keys", "issued"], None).expect("issued");
    let status = |name: &str| {
        issued
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("no {name} in {issued}"))
            .to_owned()
    };
    assert_eq!(status("held"), "paused", "{issued}");
    assert_eq!(status("fresh"), "active", "{issued}");
}
