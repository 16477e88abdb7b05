//! A minimal upstream for the server tests: records what it receives and answers with JSON, or
//! with an SSE stream whose events are spaced out in time. Optionally served over real TLS with
//! a certificate from a test CA made by rcgen.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Log {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When the upstream wrote its last SSE event.
    pub last_event_at: Arc<Mutex<Option<Instant>>>,
}

impl Log {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Log,
    pub tag: &'static str,
}

/// A test CA and a leaf for 127.0.0.1/localhost signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Airlock Test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key_der)
    .expect("server config");
    TestPki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

impl Upstream {
    pub async fn start(tag: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Log::default();
        let l2 = log.clone();
        tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = l2.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(tag, log.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _done = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _done = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Upstream { addr, log, tag }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    tag: &'static str,
    log: Log,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    log.seen.lock().expect("lock").push(Seen {
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if text.contains("\"delay_headers\"") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if text.contains("\"stream\":true") {
        let stall = text.contains("\"stall\"");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
        let last = log.last_event_at.clone();
        tokio::spawn(async move {
            for i in 0..4 {
                let event = format!("data: {{\"n\":{i},\"from\":\"{tag}\"}}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                    return;
                }
                if i == 3 {
                    *last.lock().expect("lock") = Some(Instant::now());
                }
                if stall && i == 1 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let stream = tokio_stream_from(rx);
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("response");
        return Ok(resp);
    }
    let out = format!("{{\"from\":\"{tag}\",\"path\":\"{}\"}}", parts.uri.path());
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(out))))
        .expect("response"))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
