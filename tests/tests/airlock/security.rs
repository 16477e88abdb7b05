//! DNS-rebinding and browser defences: Host must be a loopback name, Origin must be allowed.

use crate::env;
use airlock_e2e::support::Provider;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_host_is_rejected() {
    let env = env();
    let port = env.addr().port();
    for p in Provider::ALL {
        for host in [
            format!("evil.example.com:{port}"),
            "attacker.test".to_owned(),
            format!("192.0.2.7:{port}"),
        ] {
            let res = p
                .chat(env.addr(), Some(&env.alk), "hi", false)
                .header("host", &host)
                .send()
                .await
                .expect("send");
            assert!(
                res.status == 403 || res.status == 421,
                "{}: Host {host} answered {} {}",
                p.name(),
                res.status,
                res.text()
            );
            p.assert_error(&res, res.status);
        }
    }
    assert!(
        env.mock.requests().is_empty(),
        "a request with a foreign Host reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_host_names_are_accepted() {
    let env = env();
    let port = env.addr().port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let res = Provider::OpenAi
            .chat(env.addr(), Some(&env.alk), "hi", false)
            .header("host", &host)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "Host {host}: {}", res.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_browser_origin_is_403() {
    let env = env();
    for p in Provider::ALL {
        for origin in ["http://evil.example", "http://localhost:5174", "null"] {
            let res = p
                .chat(env.addr(), Some(&env.alk), "hi", false)
                .header("origin", origin)
                .send()
                .await
                .expect("send");
            p.assert_error(&res, 403);
        }
    }
    assert!(
        env.mock.requests().is_empty(),
        "a request from a foreign Origin reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origin_passes() {
    let env = env();
    for p in Provider::ALL {
        let res = p
            .chat(env.addr(), Some(&env.alk), "hi", false)
            .header("origin", "http://localhost:5173")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}: {}", p.name(), res.text());
    }
}
