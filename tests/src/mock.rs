//! A mock AI upstream that speaks the OpenAI, Anthropic and Gemini wire formats on plain HTTP,
//! records every request, and can be told per request (header `x-mock-scenario`) to fail, delay,
//! stall or reset. See `tests/README.md` for the scenario list and the usage formula.
//!
//! Run it in-process with [`MockServer::start`], or as the `mock-upstream` binary for the SDK
//! tests in other languages.

pub mod anthropic;
pub mod body;
pub mod gemini;
pub mod openai;
pub mod record;
pub mod scenario;
pub mod text;

use body::{Chunk, EventBody};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use record::{now_ms, RecordedRequest, Store, StreamTimes};
use scenario::Scenario;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub use record::RecordedRequest as Recorded;

/// Gap between streamed events unless a scenario or option says otherwise.
pub const DEFAULT_GAP: Duration = Duration::from_millis(30);
/// Words per streamed text delta unless `chunk_words=N` says otherwise.
pub const DEFAULT_CHUNK_WORDS: usize = 2;

type ResBody = BoxBody<Bytes, io::Error>;

#[derive(Debug, Clone)]
pub struct Options {
    pub default_gap: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_gap: DEFAULT_GAP,
        }
    }
}

/// Shared state of one mock server.
#[derive(Debug, Default)]
pub struct State {
    pub store: Arc<Store>,
    pub options: Options,
}

/// What a provider handler sees of one request.
pub struct Call<'a> {
    pub id: u64,
    /// Unix seconds, for `created` fields.
    pub created: u64,
    pub query: Option<&'a str>,
    pub body: &'a Value,
    pub scenario: &'a Scenario,
    /// Gemini: the model from the path.
    pub model: String,
}

impl Call<'_> {
    pub fn chunk_words(&self) -> usize {
        self.scenario.chunk_words.unwrap_or(DEFAULT_CHUNK_WORDS)
    }

    /// The streamed text deltas of `answer`: `chunk_chars` pieces if set, else word groups.
    pub fn text_deltas(&self, answer: &str) -> Vec<String> {
        match self.scenario.chunk_chars {
            Some(n) => text::chunk_chars(answer, n),
            None => text::deltas(answer, self.chunk_words()),
        }
    }

    /// The streamed deltas of tool-call arguments: `chunk_chars` pieces if set, else 4 pieces.
    pub fn arg_deltas(&self, args: &str) -> Vec<String> {
        match self.scenario.chunk_chars {
            Some(n) => text::chunk_chars(args, n),
            None => text::split_chars(args, 4),
        }
    }
}

/// A provider handler's answer, before delays and pacing are applied.
pub enum Reply {
    Json {
        status: u16,
        body: Value,
    },
    Stream {
        content_type: &'static str,
        events: Vec<Bytes>,
    },
    /// A body that is not JSON (an error page from a load balancer, say).
    Raw {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply::Json { status, body }
    }

    pub fn sse(events: Vec<Bytes>) -> Self {
        Reply::Stream {
            content_type: "text/event-stream; charset=utf-8",
            events,
        }
    }

    pub fn stream(content_type: &'static str, events: Vec<Bytes>) -> Self {
        Reply::Stream {
            content_type,
            events,
        }
    }
}

/// Which provider's conventions (error shape, request-id header) a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Flavor {
    fn error(self, status: u16, message: &str) -> Reply {
        match self {
            Flavor::OpenAi => openai::error(status, message),
            Flavor::Anthropic => anthropic::error(status, message),
            Flavor::Gemini => gemini::error(status, message),
        }
    }
}

fn flavor_of(path: &str, headers: &HeaderMap) -> Flavor {
    if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && path.contains(':')) {
        Flavor::Gemini
    } else if path.starts_with("/v1/messages")
        || (path == "/v1/models" && headers.contains_key("anthropic-version"))
    {
        Flavor::Anthropic
    } else {
        Flavor::OpenAi
    }
}

fn dispatch(method: &Method, path: &str, headers: &HeaderMap, call: &mut Call) -> Reply {
    let flavor = flavor_of(path, headers);
    match (method.as_str(), path) {
        ("POST", "/v1/chat/completions") => openai::chat_completions(call),
        ("POST", "/v1/responses") => openai::responses(call),
        ("POST", "/v1/embeddings") => openai::embeddings(call),
        ("GET", "/v1/models") if flavor == Flavor::OpenAi => openai::models(call),
        ("GET", "/v1/models") => anthropic::models(),
        ("POST", "/v1/messages") => anthropic::messages(call),
        ("POST", "/v1/messages/count_tokens") => anthropic::count_tokens(call),
        ("POST", _) if flavor == Flavor::Gemini => {
            // Google routes on the decoded path: `%3A` is a `:`.
            let tail = percent_decoded(path.rsplit('/').next().unwrap_or(""));
            let Some((model, action)) = tail.split_once(':') else {
                return gemini::error(404, "mock upstream: expected models/{model}:{method}");
            };
            call.model = model.to_owned();
            match action {
                "generateContent" => gemini::generate(call, false),
                "streamGenerateContent" => gemini::generate(call, true),
                "embedContent" => gemini::embed_content(call),
                "countTokens" => gemini::count_tokens(call),
                _ => gemini::error(404, &format!("mock upstream: unknown method {action}")),
            }
        }
        _ => flavor.error(404, &format!("mock upstream: no route for {method} {path}")),
    }
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut res = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        res.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    res
}

fn headers_map(headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let received_ms = now_ms();
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            eprintln!("mock-upstream: reading request body: {e}");
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "body read failed",
            ));
        }
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);

    if let Some(control) = path.strip_prefix("/_mock/") {
        return Ok(control_endpoint(&state, &parts.method, control));
    }

    let id = state.store.next_id();
    let flavor = flavor_of(&path, &parts.headers);
    state.store.push(RecordedRequest {
        id,
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers_map(&parts.headers),
        body: std::str::from_utf8(&body).ok().map(str::to_owned),
        body_base64: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body),
        received_ms,
        body_read_ms: now_ms(),
        response_status: None,
        stream: None,
    });

    let scenario_header = parts
        .headers
        .get(scenario::HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let (scenario, reply) = match Scenario::parse(&scenario_header) {
        Err(e) => (
            Scenario::default(),
            flavor.error(400, &format!("mock upstream: {e}")),
        ),
        Ok(scenario) => {
            let json = if body.is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_slice::<Value>(&body)
            };
            let reply = match (json, scenario.error_status()) {
                (_, Some(status)) => error_reply(
                    flavor,
                    status,
                    &scenario,
                    &parts.headers,
                    query.as_deref(),
                    &body,
                ),
                (Err(e), None) => flavor.error(
                    400,
                    &format!("mock upstream: request body is not JSON: {e}"),
                ),
                (Ok(json), None) => {
                    let mut call = Call {
                        id,
                        created: unix_secs(),
                        query: query.as_deref(),
                        body: &json,
                        scenario: &scenario,
                        model: String::new(),
                    };
                    dispatch(&parts.method, &path, &parts.headers, &mut call)
                }
            };
            (scenario, reply)
        }
    };

    if !scenario.delay.is_zero() {
        tokio::time::sleep(scenario.delay).await;
    }

    let mut res = match reply {
        Reply::Json { status, body } => {
            let status = scenario
                .status
                .filter(|s| (200..300).contains(s))
                .unwrap_or(status);
            full(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                "application/json",
                compress(scenario.encoding.as_deref(), body.to_string().as_bytes()),
            )
        }
        Reply::Stream {
            content_type,
            events,
        } => {
            let events = match scenario.interleave.as_deref() {
                Some(kind) if content_type.starts_with("text/event-stream") => {
                    interleave(flavor, kind, events)
                }
                _ => events,
            };
            let events = match scenario.encoding.as_deref() {
                Some("gzip") => gzip_events(events),
                _ => events,
            };
            stream_response(&state, id, &scenario, content_type, events)
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => full(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            content_type,
            body,
        ),
    };
    decorate(&mut res, flavor, id, &scenario);
    if let Some(enc) = scenario.encoding.as_deref() {
        if let Ok(v) = HeaderValue::from_str(enc) {
            res.headers_mut().insert(http::header::CONTENT_ENCODING, v);
        }
    }
    if scenario.echo_auth && scenario.error_status().is_some() {
        if let Some(v) = presented_key(&parts.headers, query.as_deref())
            .and_then(|k| HeaderValue::from_str(&k).ok())
        {
            res.headers_mut().insert("x-mock-auth-echo", v);
        }
    }
    let status = res.status().as_u16();
    state.store.update(id, |r| r.response_status = Some(status));
    Ok(res)
}

/// `events` with an event that carries no text between every two.
fn interleave(flavor: Flavor, kind: &str, events: Vec<Bytes>) -> Vec<Bytes> {
    let ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
    let extra: &'static str = match (kind, flavor) {
        ("comment", _) => ": keepalive\n\n",
        ("empty", Flavor::OpenAi) => "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":null}]}\n\n",
        ("empty", Flavor::Anthropic) => "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\n",
        _ => ping,
    };
    let mut out = Vec::with_capacity(events.len() * 2);
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(Bytes::from_static(extra.as_bytes()));
        }
        out.push(e);
    }
    out
}

/// `data` compressed with `encoding` (`bogus` and none: as is).
fn compress(encoding: Option<&str>, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let run = || -> io::Result<Vec<u8>> {
        Ok(match encoding {
            Some("gzip") => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data)?;
                e.finish()?
            }
            Some("deflate") => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data)?;
                e.finish()?
            }
            Some("br") => {
                let mut out = Vec::new();
                {
                    let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    e.write_all(data)?;
                }
                out
            }
            Some("zstd") => zstd::encode_all(data, 3)?,
            _ => data.to_vec(),
        })
    };
    run().unwrap_or_else(|e| panic!("mock upstream: compressing: {e}"))
}

/// One gzip stream over all events, flushed after each so every event is decodable on arrival.
fn gzip_events(events: Vec<Bytes>) -> Vec<Bytes> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut out = Vec::with_capacity(events.len());
    for ev in &events {
        let step = e.write_all(ev).and_then(|()| e.flush());
        if let Err(err) = step {
            panic!("mock upstream: gzip: {err}");
        }
        out.push(Bytes::from(std::mem::take(e.get_mut())));
    }
    match e.finish() {
        Ok(tail) => match out.last_mut() {
            Some(last) => {
                let mut joined = last.to_vec();
                joined.extend_from_slice(&tail);
                *last = Bytes::from(joined);
            }
            None => out.push(Bytes::from(tail)),
        },
        Err(err) => panic!("mock upstream: gzip: {err}"),
    }
    out
}

/// The key a request carried, as the client sent it (`Bearer …` included).
fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    ["authorization", "x-api-key", "x-goog-api-key"]
        .iter()
        .find_map(|h| headers.get(*h))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| {
            query?
                .split('&')
                .find_map(|kv| kv.strip_prefix("key="))
                .map(str::to_owned)
        })
}

/// The answer to a request whose scenario asks for an error status.
fn error_reply(
    flavor: Flavor,
    status: u16,
    scenario: &Scenario,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Reply {
    use scenario::ErrorBody;
    let raw = |content_type, body: String| Reply::Raw {
        status,
        content_type,
        body: Bytes::from(body),
    };
    match scenario.error_body {
        Some(ErrorBody::Html) => raw(
            "text/html; charset=utf-8",
            format!("<html><head><title>{status}</title><style>h1{{color:red}}</style></head><body><h1>mock upstream: {status} from the load balancer</h1><p>try again &amp; later</p></body></html>"),
        ),
        Some(ErrorBody::Text) => raw("text/plain", format!("mock upstream: {status} slow down")),
        Some(ErrorBody::Empty) => raw("text/plain", String::new()),
        Some(ErrorBody::EmptyJson) => raw("application/json", String::new()),
        Some(ErrorBody::Echo) => flavor.error(
            status,
            &format!("mock upstream: you sent {}", String::from_utf8_lossy(body)),
        ),
        None if scenario.echo_auth => flavor.error(
            status,
            &format!(
                "mock upstream: Incorrect API key provided: {}",
                presented_key(headers, query).unwrap_or_default()
            ),
        ),
        None => flavor.error(status, &format!("mock upstream: scenario status {status}")),
    }
}

/// Provider request-id headers, `retry-after` on 429, and the optional hop-by-hop headers.
fn decorate(res: &mut Response<ResBody>, flavor: Flavor, id: u64, scenario: &Scenario) {
    let h = res.headers_mut();
    let rid = format!("req_mock{id}");
    let name = match flavor {
        Flavor::OpenAi => "x-request-id",
        Flavor::Anthropic => "request-id",
        Flavor::Gemini => "x-mock-request-id",
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert(name, v);
    }
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    if scenario.hop_headers {
        let h = res.headers_mut();
        h.insert("connection", HeaderValue::from_static("x-mock-hop"));
        h.insert("x-mock-hop", HeaderValue::from_static("must-not-pass"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    }
}

fn stream_response(
    state: &Arc<State>,
    id: u64,
    scenario: &Scenario,
    content_type: &str,
    events: Vec<Bytes>,
) -> Response<ResBody> {
    state.store.update(id, |r| {
        r.stream = Some(StreamTimes {
            events_planned: events.len(),
            ..StreamTimes::default()
        })
    });
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let gap = scenario.gap.unwrap_or(state.options.default_gap);
    let stall_after = scenario.stall_after;
    let reset_after = scenario.reset_after;
    let reset_mid = scenario.reset_mid;
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if reset_mid == Some(i) {
                let half = event.slice(..event.len() / 2);
                let err = io::Error::new(io::ErrorKind::ConnectionReset, "mock reset_mid");
                if tx.send(Ok(half)).await.is_ok() {
                    // Apart, so the half is on the wire before the reset.
                    tokio::time::sleep(gap).await;
                    let _ = tx.send(Err(err)).await;
                }
                return;
            }
            if reset_after == Some(i) {
                let err = io::Error::new(io::ErrorKind::ConnectionReset, "mock reset_after");
                if tx.send(Err(err)).await.is_err() {
                    return;
                }
                return;
            }
            if stall_after == Some(i) {
                tx.closed().await;
                return;
            }
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    let mut res = Response::new(EventBody::new(rx, state.store.clone(), id).boxed());
    if let Ok(v) = HeaderValue::from_str(content_type) {
        res.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    res
}

fn control_endpoint(state: &State, method: &Method, what: &str) -> Response<ResBody> {
    match (method.as_str(), what) {
        ("GET", "requests") => {
            let all = state.store.all();
            let json = serde_json::to_string(&all).unwrap_or_else(|_| "[]".to_owned());
            full(StatusCode::OK, "application/json", json)
        }
        ("POST", "reset") => {
            state.store.clear();
            full(StatusCode::OK, "application/json", "{\"ok\":true}")
        }
        _ => full(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown mock control endpoint",
        ),
    }
}

/// Accept connections until `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("mock-upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("mock-upstream: set_nodelay: {e}");
        }
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("mock-upstream: connection: {e}");
            }
        });
    }
}

/// A mock upstream running on its own thread and runtime, stopped on drop.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            store: Arc::default(),
            options,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("mock-upstream".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => {
                            serve(l, thread_state, async {
                                // Err means the handle was dropped: stop as well.
                                let _dropped = stopped.await;
                            })
                            .await
                        }
                        Err(e) => eprintln!("mock-upstream: listener: {e}"),
                    }
                });
            })?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the value for a provider's `upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.store.all()
    }

    pub fn reset(&self) {
        self.state.store.clear();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may already be gone; nothing to do then.
            let _gone = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                eprintln!("mock-upstream thread panicked");
            }
        }
    }
}
