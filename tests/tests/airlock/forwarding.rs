//! What reaches the upstream: paths, query, the real key in the provider's auth style (never the
//! local key), provider headers; and what reaches the client: the answer, a request id, no
//! hop-by-hop headers.

use crate::{env, env_with};
use airlock_e2e::mock::text;
use airlock_e2e::support::client::{get, post};
use airlock_e2e::support::provider::{assert_no_local_key, assert_request_id};
use airlock_e2e::support::{AirlockSetup, Config, Provider};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_gets_the_real_key_and_never_the_local_key() {
    let env = env();
    for p in Provider::ALL {
        env.mock.reset();
        let prompt = format!("hello from {}", p.name());
        let res = p
            .chat(env.addr(), Some(&env.alk), &prompt, false)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}: {}", p.name(), res.text());
        assert_request_id(&res);
        assert_eq!(
            p.answer(&res.json()).as_deref(),
            Some(text::answer(&prompt).as_str()),
            "{}",
            p.name()
        );
        let recs = env.mock.requests();
        assert_eq!(recs.len(), 1, "{}: one request upstream", p.name());
        let rec = &recs[0];
        assert_eq!(
            rec.path,
            p.upstream_chat_path(),
            "{}: path mapping",
            p.name()
        );
        assert_no_local_key(rec);
        assert_eq!(
            p.upstream_credential(rec).as_deref(),
            Some(env.keys.get(p.name())),
            "{}: real key",
            p.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_is_kept_and_local_key_param_removed() {
    let env = env();
    let path = format!(
        "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={}",
        env.alk
    );
    let res = post(env.addr(), &path)
        .json(&Provider::Gemini.chat_body("q", true))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("recorded");
    let query = rec.query.clone().unwrap_or_default();
    assert!(
        query.split('&').any(|kv| kv == "alt=sse"),
        "alt=sse lost: {query}"
    );
    assert_no_local_key(&rec);

    let res = get(env.addr(), "/openai/v1/models?limit=5&order=desc")
        .header("authorization", &format!("Bearer {}", env.alk))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("recorded");
    assert_eq!(rec.path, "/v1/models");
    assert_eq!(rec.query.as_deref(), Some("limit=5&order=desc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_maps_to_the_upstream_path() {
    let env = env();
    let bearer = format!("Bearer {}", env.alk);
    type Case<'a> = (&'a str, &'a str, serde_json::Value, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (
            "/openai/v1/responses",
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "hi"}),
            vec![("authorization", bearer.clone())],
        ),
        (
            "/openai/v1/embeddings",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hi"}),
            vec![("authorization", bearer.clone())],
        ),
        (
            "/anthropic/v1/messages/count_tokens",
            "/v1/messages/count_tokens",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
            vec![
                ("x-api-key", env.alk.clone()),
                ("anthropic-version", "2023-06-01".into()),
            ],
        ),
        (
            "/gemini/v1beta/models/text-embedding-004:embedContent",
            "/v1beta/models/text-embedding-004:embedContent",
            json!({"content": {"parts": [{"text": "hi"}]}}),
            vec![("x-goog-api-key", env.alk.clone())],
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash:countTokens",
            "/v1beta/models/gemini-2.0-flash:countTokens",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
            vec![("x-goog-api-key", env.alk.clone())],
        ),
        (
            "/mycompat/v1/chat/completions",
            "/v1/chat/completions",
            json!({"model": "local-model", "messages": [{"role": "user", "content": "hi"}]}),
            vec![("authorization", bearer.clone())],
        ),
    ];
    for (path, upstream, body, headers) in cases {
        env.mock.reset();
        let res = post(env.addr(), path)
            .headers(headers)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert_request_id(&res);
        let rec = env
            .mock
            .requests()
            .pop()
            .unwrap_or_else(|| panic!("{path}: not forwarded"));
        assert_eq!(rec.path, upstream, "{path}");
        assert_no_local_key(&rec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_unique() {
    let env = env();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        for p in Provider::ALL {
            let res = p
                .chat(env.addr(), Some(&env.alk), "x", false)
                .send()
                .await
                .expect("send");
            assert_request_id(&res);
            let id = res
                .header("x-airlock-request-id")
                .unwrap_or_default()
                .to_owned();
            assert!(seen.insert(id.clone()), "request id {id} repeated");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_stripped() {
    let env = env();
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "hop", false)
        .header("connection", "keep-alive, x-hop-nominated")
        .header("x-hop-nominated", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("recorded");
    for h in [
        "x-hop-nominated",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
    ] {
        assert!(
            rec.header(h).is_none(),
            "hop-by-hop header {h} reached the upstream: {:?}",
            rec.headers
        );
    }
    if let Some(c) = rec.header("connection") {
        assert!(
            !c.contains("x-hop-nominated"),
            "connection header forwarded as is: {c}"
        );
    }
    assert_eq!(
        rec.header("x-end-to-end"),
        Some("kept"),
        "end-to-end header dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_stripped() {
    let env = env();
    let res = Provider::Anthropic
        .chat(env.addr(), Some(&env.alk), "hop", false)
        .header("x-mock-scenario", "hop_headers")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    for h in ["x-mock-hop", "keep-alive", "proxy-connection"] {
        assert!(
            res.header(h).is_none(),
            "hop-by-hop response header {h} reached the client"
        );
    }
    assert!(
        res.header("request-id").is_some(),
        "end-to-end response header `request-id` dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_version_and_beta_headers_pass_through() {
    let env = env();
    let res = Provider::Anthropic
        .chat(env.addr(), Some(&env.alk), "v", false)
        .header(
            "anthropic-beta",
            "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("recorded");
    assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        rec.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,interleaved-thinking-2025-05-14")
    );

    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), "v", false)
        .header("OpenAI-Beta", "assistants=v2")
        .header("OpenAI-Organization", "org-test")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let rec = env.mock.requests().pop().expect("recorded");
    assert_eq!(rec.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(rec.header("openai-organization"), Some("org-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_provider_uses_its_configured_auth_style() {
    let mock = airlock_e2e::mock::MockServer::start().expect("mock");
    for auth in ["bearer", "x-api-key", "x-goog-api-key", "query", "none"] {
        let mut cfg = Config::new(&mock.url());
        cfg.provider_mut("mycompat").expect("mycompat").auth = Some(auth.to_owned());
        let setup = AirlockSetup::new(cfg).expect("setup");
        let real = airlock_e2e::support::keys::compat();
        if auth != "none" {
            setup.set_key("mycompat", &real).expect("keys set");
        }
        let alk = setup.issue("compat", &[]).expect("issue");
        let airlock = setup.serve().expect("serve");
        mock.reset();
        let res = post(airlock.addr, "/mycompat/v1/chat/completions")
            .header("authorization", &format!("Bearer {alk}"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "auth={auth}: {}", res.text());
        let rec = mock.requests().pop().expect("recorded");
        assert_no_local_key(&rec);
        let bearer = format!("Bearer {real}");
        match auth {
            "bearer" => assert_eq!(rec.header("authorization"), Some(bearer.as_str())),
            "x-api-key" => assert_eq!(rec.header("x-api-key"), Some(real.as_str())),
            "x-goog-api-key" => assert_eq!(rec.header("x-goog-api-key"), Some(real.as_str())),
            "query" => assert!(
                rec.query.as_deref().is_some_and(|q| q.contains(&real)),
                "auth=query: key not in query {:?}",
                rec.query
            ),
            _ => {
                let all = format!("{:?} {:?}", rec.headers, rec.query);
                assert!(!all.contains(&real), "auth=none: the key was sent anyway");
                assert!(
                    rec.header("authorization").is_none(),
                    "auth=none: authorization sent"
                );
            }
        }
        if auth != "bearer" {
            assert!(
                rec.header("authorization").is_none(),
                "auth={auth}: authorization header sent too"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_answers_pass_through() {
    let env = env_with(|_| {});
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&env.alk), "call the tool", false)
            .header("x-mock-scenario", "tool_call")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}: {}", p.name(), res.text());
        assert!(
            res.text().contains("call the tool"),
            "{}: tool arguments lost: {}",
            p.name(),
            res.text()
        );
    }
}
