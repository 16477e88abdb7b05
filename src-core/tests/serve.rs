//! `airlock serve` as a running process: real TLS upstream, hot reload, live key changes,
//! streaming, timeouts and graceful shutdown.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::upstream::{test_pki, Upstream};
use support::{fake_key, TestEnv};

/// A running `airlock serve` whose stderr is collected for assertions.
struct Server {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(env: &TestEnv) -> Server {
        let mut child = env
            .std_airlock()
            .arg("serve")
            .env("AIRLOCK_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("first line");
        let port = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad first line {first:?}"));
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _drained = out.read_to_string(&mut sink);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Server {
            child,
            port,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.kill().is_ok() && self.child.wait().is_err() {
            eprintln!("could not reap airlock serve");
        }
    }
}

type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post(url: &str, key: &str, body: &str) -> (u16, http::HeaderMap, String) {
    let req = http::Request::post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The `authorization` header of the last request the upstream received.
fn last_authorization(up: &Upstream) -> Option<String> {
    up.log
        .requests()
        .last()
        .and_then(|r| r.headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn config_for(upstream: &str, extra: &str) -> String {
    format!("listen = \"127.0.0.1:0\"\n{extra}\n[providers.openai]\nupstream = \"{upstream}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_over_real_tls_with_the_keyring_key_and_refuses_an_unknown_ca() {
    let pki = test_pki();
    let upstream = Upstream::start("tls", Some(pki.server.clone())).await;
    let env = TestEnv::new();
    let ca = env.dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("ca");
    let real = fake_key("sk-proj-");
    env.set_key("openai", &real);
    let key = env.issue(&["app"]);
    let https = format!("https://localhost:{}", upstream.addr.port());
    env.write_config(&config_for(
        &https,
        &format!("upstream_ca_file = \"{}\"", ca.display()),
    ));
    let server = Server::start(&env);

    let (status, headers, body) = post(
        &server.url("/openai/v1/chat/completions"),
        &key,
        "{\"model\":\"gpt-4o\"}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"from\":\"tls\""), "{body}");
    assert!(headers.get("x-airlock-request-id").is_some());
    let seen = upstream.log.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {real}").as_str())
    );
    assert!(
        seen.iter()
            .all(|s| !format!("{:?}{:?}", s.headers, s.body).contains("alk_")),
        "no alk_ key upstream"
    );
    drop(server);

    // The same upstream without its CA trusted: a TLS failure is a 502 that says so.
    env.write_config(&config_for(&https, ""));
    let server = Server::start(&env);
    let (status, _, body) = post(&server.url("/openai/v1/chat/completions"), &key, "{}").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("certificate") || body.contains("UnknownIssuer"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_reads_keys_again_after_the_keyring_daemon_restarts() {
    let up = Upstream::start("a", None).await;
    let mut env = TestEnv::new();
    env.set_key("openai", &fake_key("sk-"));
    let key = env.issue(&["app"]);
    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        "",
    ));
    let server = Server::start(&env);
    let url = server.url("/openai/v1/chat/completions");
    let (status, _, body) = post(&url, &key, "{\"model\":\"gpt-4o\"}").await;
    assert_eq!(status, 200, "{body}");
    // The daemon dies and comes back (gnome-keyring can abort under many clients; a session
    // starts it again). The server's connection to the old one is dead: a key changed now must
    // still be read.
    env.keyring.restart();
    let new = fake_key("sk-");
    env.set_key("openai", &new);
    let (status, _, body) = post(&url, &key, "{\"model\":\"gpt-4o\"}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_authorization(&up), Some(format!("Bearer {new}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_edits_apply_without_restart_and_bad_edits_keep_the_running_config() {
    let a = Upstream::start("a", None).await;
    let b = Upstream::start("b", None).await;
    let env = TestEnv::new();
    env.set_key("openai", &fake_key("sk-"));
    let key = env.issue(&["app"]);
    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", a.addr.port()),
        "",
    ));
    let server = Server::start(&env);
    let url = server.url("/openai/v1/chat/completions");
    assert!(post(&url, &key, "{}").await.2.contains("\"from\":\"a\""));

    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", b.addr.port()),
        "",
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if post(&url, &key, "{}").await.2.contains("\"from\":\"b\"") {
            break;
        }
        assert!(Instant::now() < deadline, "config change not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    env.write_config("listen = \"127.0.0.1:0\"\n[providers.openai]\nupstream = \"http://127.0.0.1:1\"\nbogus_setting = 1\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("bogus_setting") {
        assert!(
            Instant::now() < deadline,
            "bad edit not reported: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.stderr().contains("line 4"), "{}", server.stderr());
    assert!(
        post(&url, &key, "{}").await.2.contains("\"from\":\"b\""),
        "running config must be kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_issued_revoked_and_set_while_running_apply_at_once() {
    let up = Upstream::start("up", None).await;
    let env = TestEnv::new();
    env.set_key("openai", &fake_key("sk-first-"));
    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        "",
    ));
    let server = Server::start(&env);
    let url = server.url("/openai/v1/chat/completions");

    // Issued after start: usable on the very next request.
    let key = env.issue(&["late"]);
    assert_eq!(post(&url, &key, "{}").await.0, 200);

    // A new provider key in the keyring replaces the cached one.
    let second = fake_key("sk-second-");
    env.set_key("openai", &second);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        post(&url, &key, "{}").await;
        if last_authorization(&up) == Some(format!("Bearer {second}")) {
            break;
        }
        assert!(Instant::now() < deadline, "new provider key not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revoked: refused within the poll interval.
    env.airlock()
        .args(["keys", "revoke", "late"])
        .assert()
        .success();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, _, body) = post(&url, &key, "{}").await;
        if status == 401 {
            assert!(body.contains("airlock_unknown_key"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_events_arrive_one_by_one_and_shutdown_lets_the_stream_finish() {
    let up = Upstream::start("sse", None).await;
    let env = TestEnv::new();
    env.set_key("openai", &fake_key("sk-"));
    let key = env.issue(&["app"]);
    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        "",
    ));
    let mut server = Server::start(&env);
    let req = http::Request::post(server.url("/openai/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"stream\":true}")))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("frame").expect("ok");
    let first_at = Instant::now();
    assert!(String::from_utf8_lossy(first.data_ref().expect("data")).contains("\"n\":0"));
    assert!(
        up.log.last_event_at.lock().expect("lock").is_none(),
        "first event must arrive before the last is sent"
    );

    // Ask the server to stop mid-stream: the stream still completes.
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let mut rest = String::new();
    let mut frames = 1;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(d) = frame.data_ref() {
            rest.push_str(&String::from_utf8_lossy(d));
            frames += 1;
        }
    }
    assert!(
        rest.contains("\"n\":3"),
        "stream must finish during graceful shutdown: {rest}"
    );
    assert!(
        frames >= 4,
        "events must not be coalesced ({frames} frames)"
    );
    assert!(first_at.elapsed() >= Duration::from_millis(400));
    assert!(server.terminate().success() || server.child.try_wait().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn first_byte_and_idle_timeouts() {
    let up = Upstream::start("slow", None).await;
    let env = TestEnv::new();
    env.set_key("openai", &fake_key("sk-"));
    let key = env.issue(&["app"]);
    env.write_config(&config_for(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        "[timeouts]\nfirst_byte = \"500ms\"\nidle = \"500ms\"",
    ));
    // `[timeouts]` above starts a table; the provider table follows it in config_for.
    let server = Server::start(&env);
    let url = server.url("/openai/v1/chat/completions");
    let started = Instant::now();
    let (status, _, body) = post(&url, &key, "{\"delay_headers\":1}").await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("first_byte") && started.elapsed() < Duration::from_secs(2),
        "{body}"
    );

    let req = http::Request::post(&url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"stream\":true,\"stall\":1}",
        )))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let started = Instant::now();
    // The stream is cut at the idle timeout and ends with the provider's error event (an
    // OpenAI stream's `data: {"error": …}` line), so the client's SDK raises it.
    let collected = resp
        .into_body()
        .collect()
        .await
        .expect("a cleanly ended stream");
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("data: {\"error\"") && l.contains("idle")),
        "a stalled stream must end with an error event: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle timeout must cut the stream"
    );
}
