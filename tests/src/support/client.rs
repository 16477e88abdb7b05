//! A tiny HTTP/1.1 client over hyper: one connection per request, full control of the headers
//! (including `Host`), whole-body and event-by-event reading.

use crate::mock::record::now_ms;
use crate::sse::{Event, Parser};
use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Requests that get no answer in this long fail the test instead of hanging it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RequestBuilder {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    timeout: Duration,
}

pub fn request(addr: SocketAddr, method: Method, path: &str) -> RequestBuilder {
    RequestBuilder {
        addr,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: Bytes::new(),
        timeout: DEFAULT_TIMEOUT,
    }
}

pub fn get(addr: SocketAddr, path: &str) -> RequestBuilder {
    request(addr, Method::GET, path)
}

pub fn post(addr: SocketAddr, path: &str) -> RequestBuilder {
    request(addr, Method::POST, path)
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn headers<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        for (n, v) in pairs {
            self.headers.push((n.to_owned(), v));
        }
        self
    }

    /// JSON body with `content-type: application/json` (unless one was set already).
    pub fn json(mut self, v: &Value) -> Self {
        if !self.has_header("content-type") {
            self = self.header("content-type", "application/json");
        }
        self.body = Bytes::from(v.to_string());
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    async fn send_raw(self) -> anyhow::Result<http::Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Expected when a test provokes a reset; the response side reports it.
                eprintln!("client connection ended: {e}");
            }
        });
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(&self.path);
        if !self.has_header("host") {
            req = req.header("host", self.addr.to_string());
        }
        for (n, v) in &self.headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let req = req.body(Full::new(self.body.clone()))?;
        let res = tokio::time::timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| anyhow!("no response head within {:?}", self.timeout))??;
        Ok(res)
    }

    /// Send and read the whole body.
    pub async fn send(self) -> anyhow::Result<HttpResponse> {
        let timeout = self.timeout;
        let what = format!("{} {}", self.method, self.path);
        let fut = async move {
            let res = self.send_raw().await?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .context("reading response body")?
                .to_bytes();
            Ok::<_, anyhow::Error>(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow!("{what}: no complete response within {timeout:?}"))?
    }

    /// Send and hand back the body unread, to read event by event.
    pub async fn send_streaming(self) -> anyhow::Result<StreamingResponse> {
        let res = self.send_raw().await?;
        let (parts, body) = res.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            parser: Parser::new(),
            pending: std::collections::VecDeque::new(),
            raw: Vec::new(),
        })
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            ),
        }
    }

    /// Parse the whole body as SSE events.
    pub fn events(&self) -> Vec<Event> {
        Parser::new().feed(&self.body)
    }
}

/// A response whose body is read as it arrives.
pub struct StreamingResponse {
    pub status: u16,
    pub headers: HeaderMap,
    body: Incoming,
    parser: Parser,
    pending: std::collections::VecDeque<(Event, f64)>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
}

/// How a body ended.
#[derive(Debug)]
pub enum End {
    /// The body finished normally.
    Clean,
    /// The connection broke or the body was cut short.
    Error(String),
    /// Nothing arrived in time.
    TimedOut,
}

impl StreamingResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next SSE event and the wall-clock time (ms since epoch) it was read. `Ok(None)` at
    /// the clean end of the body.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Option<(Event, f64)>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let frame = tokio::time::timeout(timeout, self.body.frame())
                .await
                .map_err(|_| anyhow!("no event within {timeout:?}"))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("body error: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let t = now_ms();
                        self.raw.extend_from_slice(&data);
                        for ev in self.parser.feed(&data) {
                            self.pending.push_back((ev, t));
                        }
                    }
                }
            }
        }
    }

    /// Read every remaining event until the body ends, and say how it ended.
    pub async fn drain(&mut self, timeout: Duration) -> (Vec<(Event, f64)>, End) {
        let mut out = Vec::new();
        loop {
            match self.next_event(timeout).await {
                Ok(Some(e)) => out.push(e),
                Ok(None) => return (out, End::Clean),
                Err(e) if e.to_string().starts_with("no event within") => {
                    return (out, End::TimedOut)
                }
                Err(e) => return (out, End::Error(e.to_string())),
            }
        }
    }

    /// Read the rest of the body as bytes (for non-SSE streams).
    pub async fn collect(mut self, timeout: Duration) -> anyhow::Result<Bytes> {
        let rest = tokio::time::timeout(timeout, self.body.collect())
            .await
            .map_err(|_| anyhow!("body not complete within {timeout:?}"))??
            .to_bytes();
        self.raw.extend_from_slice(&rest);
        Ok(Bytes::from(self.raw))
    }
}
