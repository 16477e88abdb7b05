//! Local keys: missing, unknown, revoked, out of scope, expired; real provider keys sent by a
//! client are refused (or forwarded with `passthrough`).

use crate::{env, env_with};
use airlock_e2e::support::provider::assert_no_local_key;
use airlock_e2e::support::{keys, Provider, TestEnv};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_401() {
    let env = env();
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), None, "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 401);
    }
    assert!(
        env.mock.requests().is_empty(),
        "an unauthenticated request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_local_key_is_401() {
    let env = env();
    // Same shape as a real one, never issued.
    let forged = format!("alk_{}", &env.alk[4..].chars().rev().collect::<String>());
    assert_ne!(forged, env.alk);
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&forged), "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 401);
        let res = p
            .chat(env.addr(), Some("alk_"), "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 401);
    }
    assert!(env.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_key_in_query_authenticates() {
    let env = env();
    let path = format!(
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent?key={}",
        env.alk
    );
    let res = airlock_e2e::support::client::post(env.addr(), &path)
        .json(&Provider::Gemini.chat_body("via query", false))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("mock saw the request");
    assert_no_local_key(&rec);
    assert_eq!(
        Provider::Gemini.upstream_credential(&rec).as_deref(),
        Some(env.keys.gemini.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_401_without_restart() {
    let env = env();
    let key = env.airlock.setup.issue("short-lived", &[]).expect("issue");
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&key), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(
        res.status,
        200,
        "a freshly issued key must work: {}",
        res.text()
    );
    env.airlock
        .run_ok(&["keys", "revoke", "short-lived"], None)
        .expect("revoke");
    // The contract sets no exact delay; a running server must notice within a second or two.
    let revoked_at = Instant::now();
    loop {
        let res = Provider::OpenAi
            .chat(env.addr(), Some(&key), "hi", false)
            .send()
            .await
            .expect("send");
        if res.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "revoked key still accepted 2s after `airlock keys revoke`: {} {}",
            res.status,
            res.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&key), "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 401);
    }
    // The other key is untouched.
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "hi", false)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_scoped_to_another_provider_is_403() {
    let mut scoped = String::new();
    let env = TestEnv::start_with(
        |_| {},
        |setup| {
            scoped = setup.issue("anthropic-only", &["--provider", "anthropic"])?;
            Ok(())
        },
    )
    .expect("start");
    for p in [Provider::OpenAi, Provider::Gemini] {
        let res = p
            .chat(env.addr(), Some(&scoped), "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 403);
    }
    let res = Provider::Anthropic
        .chat(env.addr(), Some(&scoped), "hello", false)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "in-scope provider refused: {}", res.text());
    assert_eq!(
        env.mock.requests().len(),
        1,
        "only the in-scope request may reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_scoped_to_models_is_403_for_other_models() {
    let mut scoped = String::new();
    let env = TestEnv::start_with(
        |_| {},
        |setup| {
            scoped = setup.issue(
                "mini-only",
                &[
                    "--model",
                    "gpt-4o-mini*",
                    "--model",
                    "claude-haiku-*",
                    "--model",
                    "gemini-2.0-flash-lite",
                ],
            )?;
            Ok(())
        },
    )
    .expect("start");
    let cases = [
        (Provider::OpenAi, "gpt-4o-mini-2024-07-18", "gpt-4o"),
        (Provider::Anthropic, "claude-haiku-4-5", "claude-opus-4-1"),
        (Provider::Gemini, "gemini-2.0-flash-lite", "gemini-2.5-pro"),
    ];
    for (p, allowed, denied) in cases {
        let (n, v) = p.auth_header(&scoped);
        let denied_req =
            airlock_e2e::support::client::post(env.addr(), &p.chat_path_for_model(denied, false))
                .headers(p.sdk_headers())
                .header(n, &v)
                .json(&p.chat_body_for_model(denied, "hi", false));
        let res = denied_req.send().await.expect("send");
        p.assert_error(&res, 403);
        let allowed_req =
            airlock_e2e::support::client::post(env.addr(), &p.chat_path_for_model(allowed, false))
                .headers(p.sdk_headers())
                .header(n, &v)
                .json(&p.chat_body_for_model(allowed, "hi", false));
        let res = allowed_req.send().await.expect("send");
        assert_eq!(
            res.status,
            200,
            "{}: model {allowed} refused: {}",
            p.name(),
            res.text()
        );
    }
}

/// QA: Gemini serves and bills the model in the path, but a `"model"` in the body took its
/// place in Airlock, so a key scoped to one model ran another and the ledger priced the wrong
/// one. A body model that names another model is refused before it goes upstream, and the
/// path's model is the one checked and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_checks_and_records_the_model_in_the_path_not_the_body() {
    let mut scoped = String::new();
    let env = TestEnv::start_with(
        |_| {},
        |setup| {
            scoped = setup.issue("flash-only", &["--model", "gemini-2.0-flash*"])?;
            Ok(())
        },
    )
    .expect("start");
    let p = Provider::Gemini;
    let (n, v) = p.auth_header(&scoped);
    let send = |model_in_path: &str, body_model: Option<&str>| {
        let mut body = p.chat_body_for_model(model_in_path, "hi", false);
        if let Some(m) = body_model {
            body["model"] = serde_json::json!(m);
        }
        airlock_e2e::support::client::post(env.addr(), &p.chat_path_for_model(model_in_path, false))
            .headers(p.sdk_headers())
            .header(n, &v)
            .json(&body)
            .send()
    };
    for body_model in ["gemini-2.0-flash", "models/gemini-2.0-flash-lite"] {
        let res = send("gemini-2.5-pro", Some(body_model))
            .await
            .expect("send");
        let text = p.assert_error(&res, 400);
        assert!(text.contains("gemini-2.5-pro"), "{text}");
        let id = res
            .header(airlock_e2e::support::provider::REQUEST_ID_HEADER)
            .expect("id");
        let row = env.airlock.ledger_row(id).await;
        assert_eq!(row["reason"], "airlock_model_mismatch", "{row}");
        assert_eq!(row["model"], "gemini-2.5-pro", "{row}");
        assert_eq!(row["status"], 400, "{row}");
    }
    assert!(
        env.mock.requests().is_empty(),
        "a request whose body named another model reached the upstream"
    );
    // The same model in both places, written either way, is fine, and is what gets recorded.
    for body_model in ["gemini-2.0-flash", "models/gemini-2.0-flash"] {
        let res = send("gemini-2.0-flash", Some(body_model))
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}", res.text());
        let id = res
            .header(airlock_e2e::support::provider::REQUEST_ID_HEADER)
            .expect("id");
        let row = env.airlock.ledger_row(id).await;
        assert_eq!(row["model"], "gemini-2.0-flash", "{row}");
    }
}

/// QA: a key scoped to models let through a request whose model Airlock could not read (none,
/// a number, a list), so the upstream's default model, or any, was used. Such a body is
/// refused; a bodiless request (listing models) names none and still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_scoped_to_models_refuses_a_body_whose_model_it_cannot_read() {
    let mut scoped = String::new();
    let env = TestEnv::start_with(
        |_| {},
        |setup| {
            scoped = setup.issue("mini-only", &["--model", "gpt-4o-mini*"])?;
            Ok(())
        },
    )
    .expect("start");
    let p = Provider::OpenAi;
    let (n, v) = p.auth_header(&scoped);
    let msg = serde_json::json!([{"role": "user", "content": "hi"}]);
    for body in [
        serde_json::json!({"messages": msg}),
        serde_json::json!({"model": 5, "messages": msg}),
        serde_json::json!({"model": ["gpt-4o"], "messages": msg}),
    ] {
        let res = airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
            .headers(p.sdk_headers())
            .header(n, &v)
            .json(&body)
            .send()
            .await
            .expect("send");
        let text = p.assert_error(&res, 403);
        assert_eq!(
            res.json()["error"]["code"],
            "airlock_model_out_of_scope",
            "{body}"
        );
        assert!(text.contains("names none"), "{text}");
    }
    // A model the scope refuses is quoted in the error, masked: it may be a pasted secret.
    let gh = airlock_e2e::support::fakes::github_pat();
    let res = airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
        .headers(p.sdk_headers())
        .header(n, &v)
        .json(&serde_json::json!({"model": gh, "messages": msg}))
        .send()
        .await
        .expect("send");
    let text = p.assert_error(&res, 403);
    assert!(text.contains("ghp_"), "{text}");
    assert!(!res.text().contains(&gh[4..]), "{}", res.text());
    // serde reads an array into a struct by position: refused as not an object.
    let res = airlock_e2e::support::client::post(env.addr(), "/openai/v1/chat/completions")
        .headers(p.sdk_headers())
        .header(n, &v)
        .json(&serde_json::json!([{"model": "gpt-4o", "messages": msg}]))
        .send()
        .await
        .expect("send");
    let text = p.assert_error(&res, 400);
    assert!(text.contains("must be a JSON object"), "{text}");
    assert!(
        env.mock.requests().is_empty(),
        "a refused body reached the mock"
    );
    let res = airlock_e2e::support::client::get(env.addr(), "/openai/v1/models")
        .headers(p.sdk_headers())
        .header(n, &v)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_is_403() {
    let mut expiring = String::new();
    let mut issued_at = Instant::now();
    let env = TestEnv::start_with(
        |_| {},
        |setup| {
            expiring = setup.issue("brief", &["--expires", "3s"])?;
            issued_at = Instant::now();
            Ok(())
        },
    )
    .expect("start");
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&expiring), "hi", false)
        .send()
        .await
        .expect("send");
    if issued_at.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            res.status,
            200,
            "key refused before it expired: {}",
            res.text()
        );
    }
    let wait = Duration::from_millis(3600).saturating_sub(issued_at.elapsed());
    tokio::time::sleep(wait).await;
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&expiring), "hello", false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 403);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_provider_key_from_client_is_401_naming_airlock_keys() {
    let env = env();
    for p in Provider::ALL {
        let real = match p {
            Provider::OpenAi => keys::openai(),
            Provider::Anthropic => keys::anthropic(),
            Provider::Gemini => keys::gemini(),
        };
        let res = p
            .chat(env.addr(), Some(&real), "hello", false)
            .send()
            .await
            .expect("send");
        let msg = p.assert_error(&res, 401);
        assert!(
            msg.contains("airlock keys"),
            "{}: message should say how to store the key: {msg}",
            p.name()
        );
        assert!(
            !msg.contains(&real),
            "{}: the error echoes the key back",
            p.name()
        );
    }
    assert!(
        env.mock.requests().is_empty(),
        "a client-supplied provider key reached the upstream"
    );
}

/// Regression: an Anthropic or Gemini key sent on /openai was called "a real openai API key".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_provider_key_is_named_by_whose_it_is() {
    let env = env();
    let p = Provider::OpenAi;
    for (real, who) in [
        (keys::anthropic(), "a real anthropic API key"),
        (keys::gemini(), "a real gemini API key"),
        (keys::compat(), "a real provider API key"),
    ] {
        let res = p
            .chat(env.addr(), Some(&real), "hello", false)
            .send()
            .await
            .expect("send");
        let msg = p.assert_error(&res, 401);
        assert!(msg.contains(who), "{who}: {msg}");
        assert!(!msg.contains("openai API key"), "{msg}");
        assert!(!res.text().contains(&real[8..]), "the error echoes the key");
    }
    assert!(env.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_the_client_provider_key() {
    let env = env_with(|c| c.client_provider_keys = "passthrough".to_owned());
    for p in Provider::ALL {
        let real = match p {
            Provider::OpenAi => keys::openai(),
            Provider::Anthropic => keys::anthropic(),
            Provider::Gemini => keys::gemini(),
        };
        env.mock.reset();
        let res = p
            .chat(env.addr(), Some(&real), "hello", false)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}: {}", p.name(), res.text());
        let rec = env.mock.requests().pop().expect("mock saw the request");
        assert_eq!(
            p.upstream_credential(&rec).as_deref(),
            Some(real.as_str()),
            "{}: client key not forwarded",
            p.name()
        );
    }
}
