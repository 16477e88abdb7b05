//! Upstream failures and malformed requests become the right status, in the provider's format.

use crate::{env, env_with};
use airlock_e2e::support::client::post;
use airlock_e2e::support::provider::assert_error_format;
use airlock_e2e::support::Provider;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_is_502_in_provider_format() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let env = env_with(|c| {
        for p in &mut c.providers {
            p.upstream = dead.clone();
        }
    });
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&env.alk), "hello", false)
            .send()
            .await
            .expect("send");
        let msg = p.assert_error(&res, 502);
        assert!(!msg.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_first_byte_timeout_is_504() {
    let env = env();
    for p in Provider::ALL {
        let started = Instant::now();
        let res = p
            .chat(env.addr(), Some(&env.alk), "hello", false)
            .header("x-mock-scenario", "delay_ms=6000")
            .send()
            .await
            .expect("send");
        let took = started.elapsed();
        p.assert_error(&res, 504);
        // first_byte is 2s in the test config: Airlock's timer fired, not the mock's delay.
        assert!(
            took < Duration::from_millis(5500),
            "{}: 504 after {took:?}",
            p.name()
        );
        assert!(
            took >= Duration::from_millis(1500),
            "{}: 504 after only {took:?}",
            p.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_status_passes_through_with_its_body() {
    let env = env();
    for p in Provider::ALL {
        for status in [500u16, 429] {
            let res = p
                .chat(env.addr(), Some(&env.alk), "hello", false)
                .header("x-mock-scenario", &format!("status={status}"))
                .send()
                .await
                .expect("send");
            let msg = p.assert_error(&res, status);
            assert!(
                msg.contains("mock upstream"),
                "{}: upstream error body replaced: {msg}",
                p.name()
            );
            if status == 429 {
                assert_eq!(
                    res.header("retry-after"),
                    Some("1"),
                    "{}: retry-after dropped",
                    p.name()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_limit_is_413_and_under_limit_passes() {
    let env = env(); // max_body = "1MiB"
    for p in Provider::ALL {
        let big = "x".repeat(1024 * 1024 + 4096);
        let res = p
            .chat(env.addr(), Some(&env.alk), &big, false)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 413);

        let fits = "y".repeat(900 * 1024);
        let res = p
            .chat(env.addr(), Some(&env.alk), &fits, false)
            .send()
            .await
            .expect("send");
        assert_eq!(
            res.status,
            200,
            "{}: {}",
            p.name(),
            res.text().chars().take(300).collect::<String>()
        );
    }
    let oversized: Vec<_> = env
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.body.as_ref().is_some_and(|b| b.len() > 1024 * 1024))
        .collect();
    assert!(
        oversized.is_empty(),
        "an over-limit body reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_not_forwarded() {
    let env = env();
    for p in Provider::ALL {
        let (n, v) = p.auth_header(&env.alk);
        let res = post(env.addr(), &p.chat_path(false))
            .headers(p.sdk_headers())
            .header(n, &v)
            .header("content-type", "application/json")
            .body(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}"#)
            .send()
            .await
            .expect("send");
        p.assert_error(&res, 400);
    }
    assert!(
        env.mock.requests().is_empty(),
        "malformed JSON reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_is_415() {
    let env = env();
    for p in Provider::ALL {
        for ct in ["text/plain", "application/x-www-form-urlencoded"] {
            let (n, v) = p.auth_header(&env.alk);
            let res = post(env.addr(), &p.chat_path(false))
                .headers(p.sdk_headers())
                .header(n, &v)
                .header("content-type", ct)
                .body(p.chat_body("hi", false).to_string())
                .send()
                .await
                .expect("send");
            p.assert_error(&res, 415);
        }
    }
    assert!(
        env.mock.requests().is_empty(),
        "a non-JSON request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_provider_prefix_is_404_listing_known_providers() {
    let env = env();
    let res = post(env.addr(), "/nosuchprovider/v1/chat/completions")
        .header("authorization", &format!("Bearer {}", env.alk))
        .json(&Provider::OpenAi.chat_body("hi", false))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 404, "{}", res.text());
    airlock_e2e::support::provider::assert_request_id(&res);
    let msg = assert_error_format(Provider::OpenAi, &res);
    for known in ["openai", "anthropic", "gemini", "mycompat"] {
        assert!(
            msg.contains(known),
            "404 message does not list {known}: {msg}"
        );
    }
    assert!(env.mock.requests().is_empty());
}

/// The provider key the test env stored for `p`.
fn real_key(env: &airlock_e2e::support::TestEnv, p: Provider) -> &str {
    match p {
        Provider::OpenAi => &env.keys.openai,
        Provider::Anthropic => &env.keys.anthropic,
        Provider::Gemini => &env.keys.gemini,
    }
}

/// QA: an upstream 401 that quotes the key it got ("Incorrect API key provided: …") handed the
/// app the real provider key from the keyring. Neither that key nor the Airlock key may appear
/// in any response, header or body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_echoing_the_key_never_shows_it() {
    let env = env();
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&env.alk), "hello", false)
            .header("x-mock-scenario", "status=401; echo_auth")
            .send()
            .await
            .expect("send");
        let msg = p.assert_error(&res, 401);
        assert!(msg.contains("Incorrect API key provided"), "{msg}");
        let key = real_key(&env, p);
        let echoed = env.mock.requests().pop().expect("forwarded");
        assert!(
            format!("{echoed:?}").contains(key),
            "{}: the mock got the real key",
            p.name()
        );
        let headers = format!("{:?}", res.headers);
        for (what, secret) in [("provider key", key), ("airlock key", env.alk.as_str())] {
            assert!(
                !res.text().contains(secret),
                "{}: the {what} reached the client in the body",
                p.name()
            );
            assert!(
                !headers.contains(secret),
                "{}: the {what} reached the client in a header",
                p.name()
            );
        }
        assert!(
            res.header("x-mock-auth-echo")
                .is_some_and(|v| v.contains("[REDACTED:provider-key]")),
            "{}: {headers}",
            p.name()
        );
    }
}

/// QA: error bodies skipped the output guard, so a GitHub token in one reached the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_body_goes_through_the_output_guard() {
    let env = env_with(|c| c.extra = "[policy.rules]\n\"github-pat\" = \"allow\"".into());
    for p in Provider::ALL {
        let gh = airlock_e2e::support::fakes::github_pat();
        let res = p
            .chat(
                env.addr(),
                Some(&env.alk),
                &format!("token {gh} end"),
                false,
            )
            .header("x-mock-scenario", "status=400; error_body=echo")
            .send()
            .await
            .expect("send");
        let msg = p.assert_error(&res, 400);
        assert!(msg.contains("mock upstream: you sent"), "{msg}");
        assert!(
            !res.text().contains(&gh[4..]),
            "{}: a secret in an error body reached the client: {}",
            p.name(),
            res.text()
        );
        assert!(msg.contains("[REDACTED:github-pat]"), "{msg}");
    }
}

/// QA: an HTML 500, a text/plain 429 and an empty 502 were passed as they came, so SDKs could
/// not read them. They arrive in the provider's format, status and Retry-After kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_upstream_errors_arrive_in_the_provider_format() {
    let env = env();
    for p in Provider::ALL {
        for (status, body, want) in [
            (500u16, "html", "from the load balancer try again & later"),
            (429, "text", "mock upstream: 429 slow down"),
            (502, "empty", "with an empty body"),
            // Typed `application/json`, but empty: it was passed on as an empty body.
            (500, "empty_json", "with an empty body"),
            (429, "empty_json", "with an empty body"),
        ] {
            let res = p
                .chat(env.addr(), Some(&env.alk), "hello", false)
                .header(
                    "x-mock-scenario",
                    &format!("status={status}; error_body={body}"),
                )
                .send()
                .await
                .expect("send");
            assert_eq!(
                res.header("content-type"),
                Some("application/json"),
                "{} {status}",
                p.name()
            );
            let msg = p.assert_error(&res, status);
            assert!(msg.contains(want), "{} {status}: {msg}", p.name());
            assert!(
                !msg.contains('<'),
                "{} {status}: tags kept: {msg}",
                p.name()
            );
            if status == 429 {
                assert_eq!(res.header("retry-after"), Some("1"), "{}", p.name());
            }
            // Anthropic keeps `overloaded_error` for its own 529; a bad gateway is an
            // `api_error`.
            if p == Provider::Anthropic && status == 502 {
                assert_eq!(res.json()["error"]["type"], "api_error", "{}", res.text());
            }
        }
    }
}

/// QA defect 6: an upstream 502 with `content-length: 0`, delivered completely, was recorded
/// as `body_end = "client_gone"`: hyper never polls a body whose length is known to be 0, so
/// the body was dropped unpolled. Both the wrapped (text) case and an empty JSON body (output
/// guard off) must record `complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_upstream_error_body_is_recorded_complete() {
    let env = env_with(|c| {
        c.extra = "[policy]\noutput_secrets = \"allow\"\nexfil_links = \"allow\"".into()
    });
    for body in ["empty", "empty_json"] {
        let res = Provider::OpenAi
            .chat(env.addr(), Some(&env.alk), "hello", false)
            .header("x-mock-scenario", &format!("status=502; error_body={body}"))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 502, "{body}");
        let id = res
            .header(airlock_e2e::support::provider::REQUEST_ID_HEADER)
            .expect("id");
        let row = env.airlock.ledger_row(id).await;
        assert_eq!(row["body_end"], "complete", "{body}: {row}");
    }
}

/// A client that stops sending its body part way (a hung upload) gets a 408 in its provider's
/// format after `timeouts.request_body`, nothing goes upstream, and the ledger records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_is_408_and_recorded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env_with(|c| c.request_body = "1s".to_owned());
    let p = Provider::OpenAi;
    let body =
        serde_json::to_vec(&p.chat_body_for_model("gpt-4o-mini", "hello", false)).expect("json");
    let mut stream = tokio::net::TcpStream::connect(env.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        p.chat_path(false),
        env.addr(),
        env.alk,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&body[..body.len() / 2])
        .await
        .expect("half the body");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the response is whole (its head and Content-Length bytes) or the peer closes.
    let response = loop {
        let n = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf))
            .await
            .expect("an answer within 8 s")
            .expect("read");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if n == 0 || body.len() >= len {
                break (head.to_owned(), body.to_owned());
            }
        }
        assert!(n > 0, "closed without a response: {text:?}");
    };
    let waited = started.elapsed();
    let (head, body) = response;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(v["error"]["code"], "airlock_body_timeout", "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeouts.request_body")),
        "{v}"
    );
    let id = header(&head, "x-airlock-request-id").expect("request id");
    let row = env.airlock.ledger_row(&id).await;
    assert_eq!(row["status"], 408, "{row}");
    assert_eq!(row["reason"], "airlock_body_timeout", "{row}");
    assert!(
        env.mock.requests().is_empty(),
        "nothing may reach the upstream"
    );
}

/// The value of header `name` (lowercase) in a raw response head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}
