//! The request path, as named stages with one job each:
//!
//! `guard → route → authenticate → admit → forward → respond`, with `record` on every exit and
//! `fail` as the only place an error becomes a response. Per-request state lives in one
//! [`RequestCtx`]; each stage takes only what it needs.

use super::body::{self, ProxyBody, UpstreamBody};
use super::error::ProxyError;
use super::forward::{self, UpstreamAuth};
use super::record;
use super::state::{Runtime, State};
use crate::admin::events::Event;
use crate::config::{ClientKeyPolicy, Config, Provider};
use crate::keys::snapshot::Identity;
use crate::keys::{token, Verdict};
use crate::ledger::{self, Tokens};
use crate::limits::anomaly::Alert;
use crate::limits::budget::{Charge, ParentCharge, Reservation};
use crate::limits::LimitError;
use crate::protect::policy::Unparseable;
use crate::providers::text::PromptFields;
use crate::providers::{self, AuthStyle, ProviderKind};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Everything known about one request as it moves through the stages.
pub struct RequestCtx {
    pub id: String,
    started: Instant,
    started_at: i64,
    method: Method,
    endpoint: String,
    provider: Option<Arc<Provider>>,
    identity: Option<Arc<Identity>>,
    model: Option<String>,
    streamed: bool,
    cors_origin: Option<HeaderValue>,
    /// When the request was sent upstream; upstream time runs from here to the body's end.
    sent_upstream: Option<Instant>,
    /// The `max_tokens`-like field the request asked for, in any provider's spelling.
    max_tokens: Option<u64>,
    /// A `max_tokens`-like field whose value is not a non-negative integer.
    max_tokens_unreadable: Option<&'static str>,
    /// The last user turn, for the anomaly detectors (never stored).
    prompt: Option<String>,
    pub tokens: Tokens,
    pub cost_micros: Option<i64>,
    pub estimated: bool,
    /// The request body as the client sent it (kept for estimating a stream cut short).
    request_body: Bytes,
    /// Airlock added `stream_options.include_usage`, so the response must hide it again.
    hide_usage: bool,
    /// `limits.max_tokens` to write into a body that set no output cap, and where.
    output_cap: Option<(crate::limits::output_cap::CapField, u64)>,
    /// The request body arrived compressed and was decoded for inspection.
    decoded: bool,
    /// The body could not be parsed and policy lets it through (`policy.unparseable =
    /// "passthrough"`): it is scanned whole as bytes, not field by field.
    uninspected: bool,
    /// What inspection decided, as stored in the ledger.
    findings: Vec<ledger::FindingRecord>,
    findings_header: Option<String>,
    verdict: Option<ledger::Verdict>,
    /// The pseudonyms this request put in: the only ones its response may restore.
    restore_map: Option<Arc<crate::protect::pseudonym::Mapping>>,
    /// The request's worst-case cost held against its budgets until it ends; given back only
    /// after `record` has added the real cost (dropping it on any other path gives it back too).
    held: Option<Reservation>,
    /// The tokens it may use, held against its key's tokens per minute until it ends (dropped
    /// with the context, after `record` has charged the real ones).
    tokens_held: Option<crate::limits::rate::TokenHold>,
    /// The request body while no stage has read it. A refusal before the body is read drains
    /// it first (see [`drain_unread`]), so the client is not reset while still sending.
    unread: Option<Incoming>,
    drain_unread: bool,
}

impl RequestCtx {
    fn new(method: &Method, path: &str) -> RequestCtx {
        RequestCtx {
            id: new_request_id(),
            started: Instant::now(),
            started_at: crate::keys::store::now_ms(),
            method: method.clone(),
            endpoint: path.to_owned(),
            provider: None,
            identity: None,
            model: None,
            streamed: false,
            cors_origin: None,
            sent_upstream: None,
            max_tokens: None,
            max_tokens_unreadable: None,
            prompt: None,
            tokens: Tokens::default(),
            cost_micros: None,
            estimated: false,
            request_body: Bytes::new(),
            hide_usage: false,
            output_cap: None,
            decoded: false,
            uninspected: false,
            findings: Vec::new(),
            findings_header: None,
            verdict: None,
            restore_map: None,
            held: None,
            tokens_held: None,
            unread: None,
            drain_unread: false,
        }
    }

    /// The ledger row for this request as it stands now.
    fn record(&self, status: StatusCode, error: Option<&ProxyError>) -> ledger::Record {
        let total_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let upstream_ms = self.sent_upstream.map(|t| t.elapsed().as_secs_f64() * 1e3);
        let verdict = match error {
            Some(e) if e.source() == super::ErrorSource::Client => ledger::Verdict::Blocked,
            Some(_) => ledger::Verdict::Failed,
            None => self.verdict.unwrap_or(ledger::Verdict::Allowed),
        };
        ledger::Record {
            id: self.id.clone(),
            ts: self.started_at,
            account: self.identity.as_ref().map(|i| i.account.clone()),
            key_name: self.identity.as_ref().map(|i| i.key_name.clone()),
            provider: self.provider.as_ref().map(|p| p.name.clone()),
            method: self.method.to_string(),
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            streamed: self.streamed,
            status: status.as_u16(),
            verdict,
            reason: error.map(|e| e.code().to_owned()),
            error_source: error.map(|e| format!("{:?}", e.source()).to_ascii_lowercase()),
            tokens: self.tokens,
            cost_micros: self.cost_micros,
            estimated: self.estimated,
            body_end: None,
            response_bytes: 0,
            total_ms,
            upstream_ms,
            overhead_ms: (total_ms - upstream_ms.unwrap_or(0.0)).max(0.0),
            prompt: None,
            findings: self.findings.clone(),
        }
    }
}

/// `req_` + 12 hex digits of Unix milliseconds + 12 random hex digits: ids sort by time, so the
/// ledger's primary-key index grows at its end instead of dirtying a random page per row, and
/// requests in the same millisecond still differ (48 random bits).
fn new_request_id() -> String {
    let ms = crate::keys::store::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let random = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("req_{ms:012x}{random:012x}")
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn request_ids_sort_by_time_and_differ() {
        let a = super::new_request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_request_id();
        let c = super::new_request_id();
        assert_eq!(a.len(), 28, "{a}");
        assert!(a.starts_with("req_") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "{a} then {b}");
        assert_ne!(b, c);
    }
}

/// Serves one request. Never fails: errors become provider-format responses in `fail`.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let rt = state.runtime();
    let is_admin = req.uri().path().starts_with("/_airlock/");
    // Every request that is refused or proxied ends in exactly one `record::finish`, which
    // undoes this. Admin requests are not proxied requests and never count: a status read
    // would otherwise report itself in flight.
    if !is_admin {
        state
            .metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut pending = Unanswered {
        ctx: RequestCtx::new(req.method(), req.uri().path()),
        state: state.clone(),
        rt: rt.clone(),
        is_admin,
        answered: false,
    };
    let result = run(&state, &rt, &mut pending.ctx, req).await;
    pending.answered = true;
    let ctx = &mut pending.ctx;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            if is_admin {
                // A refused admin request is recorded, and `record::finish` counts it out.
                state
                    .metrics
                    .in_flight
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drain_unread(ctx).await;
            // Like a complete response, a refusal is answered once its record is safe.
            let (resp, committed) = fail(&state, &rt, ctx, err);
            let waited = match committed {
                Some(c) => tokio::time::timeout(body::COMMIT_WAIT, c).await.is_ok(),
                None => true,
            };
            if !waited {
                tracing::warn!(
                    "ledger row not committed within {:?}; answering anyway",
                    body::COMMIT_WAIT
                );
            }
            resp
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        h.insert("x-airlock-request-id", v);
    }
    if let Some(origin) = ctx.cors_origin.take() {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-airlock-request-id, x-request-id, request-id"),
        );
    }
    resp
}

/// The request body, which only one stage reads.
fn take_body(ctx: &mut RequestCtx) -> Result<Incoming, ProxyError> {
    ctx.unread
        .take()
        .ok_or_else(|| ProxyError::Internal("the request body was read twice".into()))
}

/// How much of an unread body a refusal reads (and drops) before answering, and for how long.
const DRAIN_LIMIT: usize = 256 << 10;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads and drops the body of a request refused before its body was read (a foreign Host, a
/// bad key), up to [`DRAIN_LIMIT`] bytes or [`DRAIN_WAIT`]. Answering with the body unread makes
/// the server close the connection with bytes still in its receive buffer, and the kernel then
/// resets it: a client still sending, or whose body arrives after the close, gets "connection
/// reset" instead of the refusal (seen with the Anthropic SDK on a refused Host). A longer body
/// is left, and the connection closes after the answer as before. A request with `Expect:
/// 100-continue` is not drained: reading its body would ask the client to send it.
async fn drain_unread(ctx: &mut RequestCtx) {
    use http_body_util::BodyExt;
    let Some(mut body) = ctx.unread.take().filter(|_| ctx.drain_unread) else {
        return;
    };
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, read).await;
}

/// A request not yet answered. If the client goes away first, hyper drops the request's future
/// wherever it is waiting (the keyring, the body, the upstream's headers); dropping this then
/// records it, so no request leaves the ledger without a row or stays counted in flight.
struct Unanswered {
    ctx: RequestCtx,
    state: Arc<State>,
    rt: Arc<Runtime>,
    is_admin: bool,
    /// `run` returned: from here on `fail` or the response body records the request.
    answered: bool,
}

/// The status recorded for a request whose client left before the answer (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.is_admin {
            return;
        }
        if self.ctx.sent_upstream.is_none() {
            record_client_gone(&self.state, &self.rt, &self.ctx);
            return;
        }
        // The upstream has the request and bills it whether or not anyone reads the answer:
        // its input is counted with a tokenizer (the first use loads tables for a tenth of a
        // second, so not on a worker thread), and the row is marked estimated.
        let mut ctx = std::mem::replace(&mut self.ctx, RequestCtx::new(&Method::GET, ""));
        let (state, rt) = (self.state.clone(), self.rt.clone());
        let job: crate::meter::counter::Job = Box::new(move || {
            let kind = ctx.provider.as_ref().map(|p| p.kind);
            if let (Some(kind), false) = (kind, ctx.request_body.is_empty()) {
                let (end, metered) = (body::BodyEnd::ClientGone, body::Metered::Json(None));
                meter_response(&state, &mut ctx, kind, end, metered);
            }
            record_client_gone(&state, &rt, &ctx);
            // The held budget goes back only now, with the estimate added.
            drop(ctx);
        });
        // A full queue (thousands cut at once): count here rather than drop the row.
        if let Err(job) = crate::meter::counter::in_background(job) {
            job();
        }
    }
}

/// Records a request whose client left before Airlock answered. Nobody is left to answer, so
/// the commit is not awaited.
fn record_client_gone(state: &State, rt: &Runtime, ctx: &RequestCtx) {
    let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = ctx.record(status, None);
    r.verdict = ledger::Verdict::Failed;
    r.reason = Some("client_gone".into());
    r.error_source = Some("client".into());
    drop(record::finish(
        state,
        &rt.config,
        &rt.engine,
        r,
        Some("the client closed the connection before Airlock answered".into()),
        ctx.identity.as_deref(),
    ));
}

async fn run(
    state: &Arc<State>,
    rt: &Runtime,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &rt.config;
    let (parts, incoming) = req.into_parts();
    ctx.unread = Some(incoming);
    // A client that asked to be told before sending its body is told no, and sends none.
    ctx.drain_unread = !parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Know the provider before the guard, so even a refused Host or Origin gets the error in the
    // format the client's SDK expects.
    ctx.provider = first_segment(parts.uri.path())
        .and_then(|p| config.provider(p))
        .cloned();
    ctx.cors_origin = guard(config, state.listen.port(), &parts.headers, &parts.uri)?;
    if parts.method == Method::OPTIONS && ctx.cors_origin.is_some() {
        return Ok(preflight());
    }
    let path = parts.uri.path().to_owned();
    if path.starts_with("/_airlock/") {
        let body = take_body(ctx)?;
        let req = Request::from_parts(parts, body);
        return Ok(crate::admin::handle(state, config, req).await);
    }
    let (provider, rest) = route(config, &path)?;
    ctx.provider = Some(provider.clone());
    ctx.endpoint = rest.to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let auth = authenticate(state, &provider, &parts.headers, query.as_deref()).await?;
    if let Auth::Key(identity) = &auth {
        ctx.identity = Some(identity.clone());
        if !identity.allows_provider(&provider.name) {
            return Err(ProxyError::ProviderOutOfScope {
                key: identity.key_name.clone(),
                provider: provider.name.clone(),
                allowed: identity.providers().join(", "),
            });
        }
    }
    let incoming = take_body(ctx)?;
    let body = admit(config, &provider, ctx, &parts.headers, incoming).await?;
    let body = inspect_filter(
        state,
        rt,
        &provider,
        ctx,
        &parts.headers,
        query.as_deref(),
        body,
    )?;
    if let Auth::Key(identity) = &auth {
        admit_limits(state, config, &provider, ctx, identity, body.len()).await?;
    }
    // Whatever the upstream answers, neither key this request involves reaches the client.
    let mut keys = super::key_mask::KeyMask::default();
    if let Some((presented, _)) = providers::client_key(&parts.headers, query.as_deref()) {
        keys.add(presented, "airlock-key");
    }
    let upstream = forward(
        state,
        rt,
        &provider,
        ctx,
        &auth,
        &parts,
        query.as_deref(),
        body,
        &mut keys,
    )
    .await?;
    respond(state, rt, ctx, upstream, keys)
}

// === guard ===

/// Refuses requests not addressed to a loopback name (DNS rebinding) and requests from browser
/// origins that are not allowed. Returns the origin to echo in CORS headers, if allowed.
fn guard(
    config: &Config,
    self_port: u16,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<Option<HeaderValue>, ProxyError> {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if !host_allowed(config, &host) {
        return Err(ProxyError::HostNotAllowed(host));
    }
    match headers.get(header::ORIGIN) {
        None => Ok(None),
        Some(origin) => {
            let text = origin.to_str().unwrap_or("");
            // Airlock's own dashboard, served from this listener, is same-origin.
            let own = [
                format!("http://127.0.0.1:{self_port}"),
                format!("http://localhost:{self_port}"),
            ];
            if config.security.allowed_origins.iter().any(|o| o == text)
                || own.iter().any(|o| o == text)
            {
                Ok(Some(origin.clone()))
            } else {
                Err(ProxyError::OriginNotAllowed(text.to_owned()))
            }
        }
    }
}

fn host_allowed(config: &Config, host_port: &str) -> bool {
    let host = strip_port(host_port).to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if config.security.allowed_hosts.contains(&host) {
        return true;
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        // An IP literal cannot be rebound by DNS; remote ones only make sense with --allow-remote.
        Ok(ip) => ip.is_loopback() || config.allow_remote,
        Err(_) => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8787
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

fn preflight() -> Response<ProxyBody> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, x-api-key, x-goog-api-key, anthropic-version, anthropic-beta, \
             openai-beta, anthropic-dangerous-direct-browser-access",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

// === route ===

fn first_segment(path: &str) -> Option<&str> {
    path.strip_prefix('/')?
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// `/<provider>/<rest>` to a configured provider and the upstream path.
fn route<'p>(config: &Config, path: &'p str) -> Result<(Arc<Provider>, &'p str), ProxyError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let (prefix, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    };
    let provider = config
        .provider(prefix)
        .ok_or_else(|| ProxyError::UnknownProvider {
            prefix: prefix.to_owned(),
            known: config.providers.keys().cloned().collect(),
        })?;
    // A `..` segment could climb out of the upstream base path (e.g. groq's `/openai`).
    let lowered = rest.to_ascii_lowercase().replace("%2e", ".");
    if lowered.split('/').any(|seg| seg == "." || seg == "..") || rest.contains('\\') {
        return Err(ProxyError::BadPath(
            "dot segments and backslashes are not allowed",
        ));
    }
    Ok((provider.clone(), rest))
}

// === authenticate ===

enum Auth {
    /// A verified Airlock key: the real key comes from the keyring.
    Key(Arc<Identity>),
    /// `passthrough`: the client's own provider key goes upstream unchanged.
    Passthrough,
}

async fn authenticate(
    state: &State,
    provider: &Provider,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Auth, ProxyError> {
    let Some((presented, _)) = providers::client_key(headers, query) else {
        return Err(ProxyError::MissingKey);
    };
    if !token::is_airlock_key(presented) {
        return if provider.client_provider_keys == ClientKeyPolicy::Passthrough {
            Ok(Auth::Passthrough)
        } else if let Some(key_of) = providers::provider_key_kind(presented) {
            Err(ProxyError::ProviderKeyFromClient {
                provider: provider.name.clone(),
                key_of,
            })
        } else {
            Err(ProxyError::NotAnAirlockKey)
        };
    }
    match state.verify_key(presented).await {
        Verdict::Allowed(identity) => Ok(Auth::Key(identity)),
        Verdict::Expired(identity) => Err(ProxyError::KeyExpired(identity.key_name.clone())),
        Verdict::Unknown => Err(ProxyError::UnknownKey),
    }
}

// === admit ===

/// Reads the body within the limit and checks its encoding, type and JSON shape, then the
/// key's model scope. Returns the body to forward.
async fn admit(
    config: &Config,
    provider: &Provider,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<Bytes, ProxyError> {
    let encoding = content_encoding(headers);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body::read_limited(
        incoming,
        declared,
        config.max_body,
        config.timeouts.request_body,
    )
    .await?;
    // A compressed body is decoded and inspected like any other: compression is never a way
    // around inspection. An encoding Airlock cannot decode is refused.
    if let Some(enc) = encoding {
        body = body::decode_request(&enc, &body, config.max_body)?;
        ctx.decoded = true;
    }

    if provider.kind == ProviderKind::Gemini {
        ctx.model = providers::model_from_path(&ctx.endpoint);
        ctx.streamed = providers::gemini_streams(&ctx.endpoint);
    }
    if !body.is_empty() {
        let media = media_type(headers);
        let is_json = is_json_media(media);
        if expects_json(provider.kind, &ctx.endpoint) && !is_json {
            let shown = if media.is_empty() {
                "(none)".to_owned()
            } else {
                media.to_ascii_lowercase()
            };
            return Err(ProxyError::UnsupportedMediaType(shown));
        }
        let parsed = is_json.then(|| {
            let fields = serde_json::from_slice::<JsonFields<'_>>(&body)
                .map_err(|e| describe_json_error(&e))?;
            // serde reads an array into the struct too, field by field, by position.
            if body.trim_ascii_start().first() == Some(&b'[') {
                return Err(ProxyError::MalformedJson(
                    "the body must be a JSON object, not an array".into(),
                ));
            }
            Ok(fields)
        });
        let fields = match parsed {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                let account = ctx.identity.as_ref().map(|i| i.account.as_str());
                if config.policy.unparseable(&provider.name, account, None)
                    != Unparseable::Passthrough
                {
                    return Err(e);
                }
                // Let through unparsed (its bytes are scanned whole later); the model scope
                // below still holds.
                ctx.uninspected = true;
                None
            }
        };
        if let Some(fields) = fields {
            if let Some(model) = fields.model.as_ref().and_then(serde_json::Value::as_str) {
                match (provider.kind, ctx.model.as_deref()) {
                    // Gemini serves and bills the model in the path. One the body names besides
                    // must be the same, or the key's scope, its deny list and the price would be
                    // checked against one model while the upstream runs another.
                    (ProviderKind::Gemini, Some(path_model)) => {
                        let same = providers::normalize_model(model)
                            == providers::normalize_model(path_model);
                        if !same {
                            return Err(ProxyError::ModelMismatch {
                                path: path_model.to_owned(),
                                body: clip_chars(model, 80),
                            });
                        }
                    }
                    _ => ctx.model = Some(model.to_owned()),
                }
            }
            ctx.streamed |=
                fields.stream.as_ref().and_then(serde_json::Value::as_bool) == Some(true);
            match fields.max_tokens() {
                Ok(n) => ctx.max_tokens = n,
                Err(field) => ctx.max_tokens_unreadable = Some(field),
            }
            if config.anomaly.enabled {
                ctx.prompt = fields.prompt_fields().last_user_text();
            }
        }
    }
    if let Some(identity) = &ctx.identity {
        match &ctx.model {
            Some(model) if !identity.allows_model(model) => {
                return Err(ProxyError::ModelOutOfScope {
                    key: identity.key_name.clone(),
                    model: model.clone(),
                    allowed: identity.model_patterns().join(", "),
                });
            }
            // Fail closed: a body with no model Airlock can read (none, a number, a list, a
            // body left unparsed) goes to whatever model the upstream picks, which the key's
            // scope cannot vouch for. A bodiless request (listing models) names none and costs
            // nothing.
            None if !body.is_empty() && !identity.model_patterns().is_empty() => {
                return Err(ProxyError::ModelUnread {
                    key: identity.key_name.clone(),
                    allowed: identity.model_patterns().join(", "),
                });
            }
            _ => {}
        }
    }
    Ok(body)
}

/// At most `max` characters of `s`, with `…` when cut: a client's text echoed in an error.
fn clip_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// The codings of every `Content-Encoding` header, in order, as one list without `identity`
/// (`gzip` for the two headers `identity` and `gzip`): a second header must not hide a coding
/// from the decoder, and so from inspection. `None` when nothing is left.
fn content_encoding(headers: &HeaderMap) -> Option<String> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = String::from_utf8_lossy(v.as_bytes());
        codings.extend(
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
                .map(str::to_owned),
        );
    }
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// The request's media type as sent, without parameters.
fn media_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
}

/// `application/json` or a `+json` type, in any case (media types are case-insensitive): the
/// bodies read as JSON documents.
fn is_json_media(media: &str) -> bool {
    let has = |at: Option<&str>, s: &str| at.is_some_and(|a| a.eq_ignore_ascii_case(s));
    media.eq_ignore_ascii_case("application/json")
        || (has(media.get(..12), "application/")
            && has(
                media.len().checked_sub(5).and_then(|i| media.get(i..)),
                "+json",
            ))
}

/// The few fields the stages need; parsing into this also validates the whole document.
/// Prompt fields stay raw until something asks for their text.
#[derive(Debug, serde::Deserialize)]
struct JsonFields<'a> {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
    #[serde(default, alias = "generation_config", rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    // Not `#[serde(flatten)]`: serde cannot flatten into borrowed raw values.
    #[serde(borrow, default)]
    messages: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    contents: Option<&'a serde_json::value::RawValue>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct GenerationConfig {
    #[serde(default, alias = "max_output_tokens", rename = "maxOutputTokens")]
    max_output_tokens: Option<serde_json::Value>,
}

impl<'a> JsonFields<'a> {
    fn prompt_fields(&self) -> PromptFields<'a> {
        PromptFields {
            messages: self.messages,
            input: self.input,
            prompt: self.prompt,
            contents: self.contents,
        }
    }

    /// The output cap the request asks for, in whichever spelling its API uses (the largest, if
    /// it uses several). `Err(field)` names a field whose value is not a non-negative integer
    /// (`"5000"`, `-1`, `1.5`), which a cap check cannot read; `null` counts as absent and an
    /// integral float (`1e9`) as its integer.
    fn max_tokens(&self) -> Result<Option<u64>, &'static str> {
        let fields = [
            ("max_tokens", self.max_tokens.as_ref()),
            ("max_completion_tokens", self.max_completion_tokens.as_ref()),
            ("max_output_tokens", self.max_output_tokens.as_ref()),
            (
                "generationConfig.maxOutputTokens",
                self.generation_config
                    .as_ref()
                    .and_then(|g| g.max_output_tokens.as_ref()),
            ),
        ];
        let mut max = None;
        for (name, value) in fields {
            let n = match value {
                None | Some(serde_json::Value::Null) => continue,
                Some(v) => v.as_u64().or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                        // Saturates: anything past u64 is over every cap anyway.
                        .map(|f| f as u64)
                }),
            };
            let n = n.ok_or(name)?;
            max = max.max(Some(n));
        }
        Ok(max)
    }
}

/// Pause switches, model lists, output caps, budgets, rates and anomalies: everything that can
/// stop a request before it costs money.
async fn admit_limits(
    state: &State,
    config: &Config,
    provider: &Provider,
    ctx: &mut RequestCtx,
    identity: &Arc<Identity>,
    body_len: usize,
) -> Result<(), ProxyError> {
    if state.is_paused() {
        return Err(LimitError::Paused.into());
    }
    if let Some(pause) = &identity.paused {
        return Err(LimitError::KeyPaused {
            key: identity.key_name.clone(),
            reason: pause.reason.clone(),
            resume: pause.key.clone(),
        }
        .into());
    }
    let account = identity.account.as_str();
    let limits = config.limits.for_key(account);
    match &ctx.model {
        Some(model)
            if limits.models_deny.matches(model)
                || (!limits.models_allow.is_empty() && !limits.models_allow.matches(model)) =>
        {
            return Err(LimitError::ModelDenied {
                key: account.to_owned(),
                model: model.clone(),
            }
            .into());
        }
        // Fail closed, as for a key's own model scope: a list that cannot be checked.
        None if body_len > 0
            && !(limits.models_deny.is_empty() && limits.models_allow.is_empty()) =>
        {
            return Err(LimitError::ModelUnread {
                key: account.to_owned(),
            }
            .into());
        }
        _ => {}
    }
    // Fail closed: a cap that cannot be read cannot be checked.
    if let (Some(limit), Some(field)) = (limits.max_tokens, ctx.max_tokens_unreadable) {
        return Err(LimitError::MaxTokensUnreadable {
            key: account.to_owned(),
            field,
            limit,
        }
        .into());
    }
    if let (Some(limit), Some(asked)) = (limits.max_tokens, ctx.max_tokens) {
        if asked > limit {
            return Err(LimitError::MaxTokens {
                key: account.to_owned(),
                asked,
                limit,
            }
            .into());
        }
    }
    // A request that sets no cap would get the provider's default, far above any cap: it gets
    // the key's, written into its body on the way upstream (`forward`).
    if let (Some(limit), None) = (limits.max_tokens, ctx.max_tokens) {
        if let Some(field) = crate::limits::output_cap::cap_field(provider.kind, &ctx.endpoint) {
            if body_len > 0 {
                ctx.output_cap = Some((field, limit));
                ctx.max_tokens = Some(limit);
            }
        }
    }
    let charge = Charge {
        account: Some(account),
        provider: Some(&provider.name),
        key_name: Some(&identity.key_name),
        key_id: Some(identity.key_id),
        parent: identity.parent.as_ref().map(|p| ParentCharge {
            name: &p.name,
            id: p.key_id,
            budget: p.budget_micros,
        }),
    };
    // Held, not only checked: requests in flight count against the budgets (docs/metering.md).
    let worst_case = match ctx.model.as_deref() {
        None => 0,
        Some(model) => match state.prices.load().lookup(Some(&provider.name), model) {
            Some(p) => crate::limits::budget::worst_case_micros(p, body_len, ctx.max_tokens),
            // Its cost would be unknown, and no budget could count it.
            None if !config.limits.allow_unpriced_models => {
                let first = crate::limits::budget::first_budget(
                    &config.limits,
                    &charge,
                    identity.budget_micros,
                );
                if let Some(budget) = first {
                    return Err(LimitError::Unpriced {
                        model: model.to_owned(),
                        budget,
                    }
                    .into());
                }
                0
            }
            None => 0,
        },
    };
    ctx.held = Some(state.spend.reserve(
        &config.limits,
        ctx.started_at,
        &charge,
        identity.budget_micros,
        worst_case,
    )?);
    let now = std::time::Instant::now();
    if let Some(tpm) = limits.tpm {
        // Held like the budgets: the prompt from the body's size, the answer at its cap.
        let (input, output) = crate::limits::budget::worst_case_tokens(body_len, ctx.max_tokens);
        let want = input.saturating_add(output);
        ctx.tokens_held = state.rates.reserve_tpm(account, tpm, want, now)?;
    }
    // A key's own --rpm is counted under the key itself; a child key's requests count
    // against its parent's own --rpm as well.
    if let Some(rpm) = identity.rpm {
        state.rates.check_rpm(&identity.key_name, rpm)?;
    }
    if let Some(parent) = &identity.parent {
        if let Some(rpm) = parent.rpm {
            state.rates.check_rpm(&parent.name, rpm)?;
        }
    }
    if let Some(rpm) = limits.rpm {
        state.rates.check_rpm(account, rpm)?;
    }
    let alerts =
        state
            .anomaly
            .observe_request(&config.anomaly, account, ctx.prompt.as_deref(), now);
    let mut pause_now = false;
    for alert in alerts {
        pause_now |= raise_anomaly(state, config, alert);
    }
    if pause_now {
        let reason = "paused by an anomaly alert";
        if let Err(e) = state.set_key_paused(account, Some(reason)).await {
            tracing::error!("could not pause key {account}: {e}");
        }
        return Err(LimitError::KeyPaused {
            key: account.to_owned(),
            reason: reason.to_owned(),
            resume: account.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// Records and publishes an anomaly alert. Returns whether policy wants the key paused.
pub fn raise_anomaly(state: &State, config: &Config, alert: Alert) -> bool {
    let pause = config.anomaly.auto_pause;
    state
        .metrics
        .anomalies
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(account = %alert.account, kind = ?alert.kind, "anomaly: {}", alert.detail);
    state.publish(Event::Anomaly {
        ts: crate::keys::store::now_ms(),
        kind: alert.kind,
        account: alert.account,
        detail: alert.detail,
        paused: pause,
    });
    pause
}

/// serde_json's own messages can quote input; build one that never does. Only the kind of
/// error is taken from its message, and a duplicated key is named only when it is one of
/// [`JsonFields`]' own (schema names, never input).
fn describe_json_error(e: &serde_json::Error) -> ProxyError {
    use serde_json::error::Category;
    let msg = e.to_string();
    let what: std::borrow::Cow<'static, str> = match e.classify() {
        Category::Syntax if msg.starts_with("recursion limit exceeded") => format!(
            "the body is nested more than {} levels deep",
            crate::protect::json_text::MAX_DEPTH
        )
        .into(),
        Category::Syntax if msg.starts_with("number out of range") => {
            "a number is too long (beyond the range of a 64-bit float)".into()
        }
        Category::Syntax => "syntax error".into(),
        Category::Eof => "unexpected end of input".into(),
        Category::Data => match duplicate_field(&msg) {
            Some(field) => {
                format!("duplicate key \"{field}\" (a key may appear once per object)").into()
            }
            None if msg.contains("expected struct JsonFields") => {
                "the body must be a JSON object".into()
            }
            None => "a field has a value of the wrong type".into(),
        },
        Category::Io => "could not read the body".into(),
    };
    ProxyError::MalformedJson(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// The field serde names in "duplicate field `model`", if it is one of ours.
fn duplicate_field(msg: &str) -> Option<&'static str> {
    const OURS: [&str; 11] = [
        "model",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "generationConfig",
        "maxOutputTokens",
        "messages",
        "input",
        "prompt",
        "contents",
    ];
    let name = msg.strip_prefix("duplicate field `")?.split('`').next()?;
    OURS.iter().find(|f| **f == name).copied()
}

/// Upload endpoints take multipart or raw bytes; everything else takes JSON.
fn expects_json(kind: ProviderKind, endpoint: &str) -> bool {
    const NON_JSON: [&str; 6] = [
        "/v1/files",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/uploads/",
    ];
    match kind {
        ProviderKind::Gemini => !endpoint.starts_with("/upload/"),
        _ => !NON_JSON
            .iter()
            .any(|p| endpoint == *p || (p.ends_with('/') && endpoint.starts_with(p))),
    }
}

// === forward ===

#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &State,
    rt: &Runtime,
    provider: &Provider,
    ctx: &mut RequestCtx,
    auth: &Auth,
    parts: &http::request::Parts,
    query: Option<&str>,
    body: Bytes,
    keys: &mut super::key_mask::KeyMask,
) -> Result<Response<Incoming>, ProxyError> {
    let config = &rt.config;
    let mut uri = forward::upstream_uri(provider, &ctx.endpoint, query)
        .map_err(|_| ProxyError::BadPath("the path cannot be joined to the upstream URL"))?;
    let real_key = match auth {
        Auth::Key(_) if provider.needs_key() => Some(
            state
                .provider_key(&config.keyring_service, &provider.key_entry)
                .await
                .map_err(|source| ProxyError::Vault {
                    provider: provider.name.clone(),
                    source,
                })?,
        ),
        _ => None,
    };
    if let Some(k) = &real_key {
        keys.add(
            secrecy::ExposeSecret::expose_secret(k.as_ref()),
            "provider-key",
        );
    }
    let upstream_auth = match (auth, &real_key) {
        (Auth::Passthrough, _) => UpstreamAuth::ClientKey,
        (Auth::Key(_), Some(k)) => UpstreamAuth::Real(k),
        (Auth::Key(_), None) => UpstreamAuth::None,
    };
    if let (Some(key), AuthStyle::Query) = (&real_key, provider.auth) {
        uri = forward::with_query_key(uri, key)
            .map_err(|_| ProxyError::Internal("cannot put the key in the query string".into()))?;
    }
    let mut headers = forward::upstream_headers(&parts.headers, provider, upstream_auth);
    let body = match ctx.output_cap {
        None => body,
        Some((field, cap)) => match crate::limits::output_cap::with_cap(&body, field, cap) {
            Some(capped) => Bytes::from(capped),
            None => {
                return Err(LimitError::MaxTokensUnset {
                    key: ctx
                        .identity
                        .as_ref()
                        .map(|i| i.account.clone())
                        .unwrap_or_default(),
                    field: field.name(),
                    limit: cap,
                }
                .into())
            }
        },
    };
    ctx.request_body = body.clone();
    // OpenAI streams report usage only when asked; ask, and hide the answer from the client.
    let body = match (provider.kind, ctx.streamed) {
        (ProviderKind::OpenAi, true) if ctx.endpoint.ends_with("/chat/completions") => {
            match crate::meter::add_include_usage(&body) {
                Some(with_usage) => {
                    ctx.hide_usage = true;
                    Bytes::from(with_usage)
                }
                None => body,
            }
        }
        _ => body,
    };
    let mut up = Request::new(Full::new(body));
    if ctx.decoded {
        headers.remove(header::CONTENT_ENCODING);
    }
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;

    let host = provider.upstream.host().unwrap_or("upstream").to_owned();
    ctx.sent_upstream = Some(Instant::now());
    let result = tokio::time::timeout(config.timeouts.first_byte, rt.client.request(up)).await;
    match result {
        Err(_) => Err(ProxyError::UpstreamTimeout {
            host,
            phase: "first_byte",
            secs: config.timeouts.first_byte.as_secs(),
        }),
        Ok(Err(e)) => {
            let detail = error_chain(&e);
            if e.is_connect() && detail.contains("timed out") {
                Err(ProxyError::UpstreamTimeout {
                    host,
                    phase: "connect",
                    secs: config.timeouts.connect.as_secs(),
                })
            } else {
                Err(ProxyError::UpstreamUnreachable { host, detail })
            }
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

// === respond ===

/// Streams the upstream response back, frame by frame; `record` runs when the body ends.
fn respond(
    state: &Arc<State>,
    rt: &Runtime,
    ctx: &mut RequestCtx,
    upstream: Response<Incoming>,
    keys: super::key_mask::KeyMask,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, incoming) = upstream.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    keys.headers(&mut parts.headers);
    // Airlock asked for `identity`; an upstream that compresses anyway is decoded here, so the
    // guard, the restorer and the meter read the real text and the client gets it plain.
    let encoding = content_encoding(&parts.headers);
    let decoder = match encoding {
        Some(enc) => super::decode::ResponseDecoder::for_encoding(&enc)?,
        None => None,
    };
    if decoder.is_some() {
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    ctx.streamed |= is_sse;
    let status = parts.status;
    let st = state.clone();
    let config = rt.config.clone();
    let engine = rt.engine.clone();
    let done = std::mem::replace(ctx, RequestCtx::new(&Method::GET, ""));
    let id = done.id.clone();
    ctx.id = id;
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let kind = done
        .provider
        .as_ref()
        .map_or(ProviderKind::OpenAi, |p| p.kind);
    let restore = restore_for(rt, &done);
    // Every body, whatever its status, passes the output guard; an error that is not JSON is
    // put in the provider's error format (status and Retry-After kept), so SDKs can read it.
    // (Only errors: a 304 or other 3xx has no body to wrap.)
    let filter = if (status.is_client_error() || status.is_server_error()) && !is_json {
        let html = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("html"));
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        body::Filter::error_text(body::ErrorWrap {
            kind,
            status,
            html,
            guard: restore.and_then(|r| r.guard),
        })
    } else if status.is_client_error() || status.is_server_error() {
        body::Filter::json_error(restore, kind, status)
    } else if !status.is_success() {
        body::Filter::json(restore)
    } else if is_sse {
        body::Filter::sse(
            crate::meter::StreamMeter::new(kind, done.model.as_deref().unwrap_or("")),
            done.hide_usage,
            restore,
        )
    } else if is_json
        && kind == ProviderKind::Gemini
        && crate::providers::gemini_streams(&done.endpoint)
    {
        // Without `alt=sse`, Gemini streams one JSON array element by element.
        body::Filter::json_array(
            crate::meter::StreamMeter::new(kind, done.model.as_deref().unwrap_or("")),
            restore,
        )
    } else if is_json {
        body::Filter::json(restore)
    } else {
        body::Filter::Pass
    };
    if let Some(h) = done
        .findings_header
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert("x-airlock-findings", h);
    }
    if filter.rewrites() {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let finish = move |end: body::BodyEnd,
                       bytes: u64,
                       metered: body::Metered,
                       notes: Vec<crate::protect::restore::OutputNote>| {
        let mut done = done;
        // An error answer is not a model call: nothing is priced or estimated.
        let metered = if status.is_success() {
            metered
        } else {
            body::Metered::Nothing
        };
        meter_response(&st, &mut done, kind, end, metered);
        for n in notes {
            done.findings.push(ledger::FindingRecord {
                rule: n.rule,
                kind: n.kind.to_owned(),
                location: "response".to_owned(),
                action: n.action.to_owned(),
                value_hash: String::new(),
            });
        }
        let mut r = done.record(status, None);
        r.body_end = Some(end.as_str().to_owned());
        r.response_bytes = bytes;
        if !status.is_success() {
            r.verdict = ledger::Verdict::Failed;
            r.reason = Some(format!("upstream_{}", status.as_u16()));
            r.error_source = Some("upstream".into());
        }
        let held = done.held.take();
        let committed = record::finish(&st, &config, &engine, r, None, done.identity.as_deref());
        // Only now, with the real cost added: never a moment where neither counts.
        drop(held);
        committed
    };
    let on_end: body::OnEnd = Box::new(move |end, bytes, metered, notes| {
        // A stream cut short is counted with a tokenizer (its first use loads tables for a
        // tenth of a second): never on a worker thread other requests are waiting for. Nobody
        // waits on this row: the client is gone or already has its error.
        let cut = end != body::BodyEnd::Complete && matches!(metered, body::Metered::Stream(_));
        if cut {
            let job: crate::meter::counter::Job = Box::new(move || {
                finish(end, bytes, metered, notes);
            });
            // A full queue (thousands cut at once): count here rather than drop the row.
            if let Err(job) = crate::meter::counter::in_background(job) {
                job();
            }
            return None;
        }
        finish(end, bytes, metered, notes)
    });
    let body = UpstreamBody::new(
        incoming,
        rt.config.timeouts.idle,
        filter,
        keys,
        decoder,
        kind,
        on_end,
    );
    Ok(Response::from_parts(
        parts,
        http_body_util::BodyExt::boxed_unsync(body),
    ))
}

// === inspect ===

/// Runs the detection engine over the request: redacts, pseudonymizes or blocks per policy,
/// scores prompt injection, and returns the body to send upstream.
fn inspect_filter(
    state: &State,
    rt: &Runtime,
    provider: &Provider,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Bytes,
) -> Result<Bytes, ProxyError> {
    use crate::protect::policy::Action;
    use crate::protect::request::{Inspector, Outcome};
    let config = &rt.config;
    let account = ctx.identity.as_ref().map(|i| i.account.clone());
    let project = ctx.identity.as_ref().and_then(|i| i.project_policy.clone());
    let inspector = Inspector {
        engine: &rt.engine,
        policy: &config.policy,
        vault: &state.vault,
        provider: &provider.name,
        account: account.as_deref(),
        project: project.as_deref(),
        hash_key: &state.hash_key,
        now: std::time::Instant::now(),
    };
    let is_json = is_json_media(media_type(headers));
    // The path first: it goes upstream whatever the body holds (Gemini names the model there).
    let mut from_path = inspector.inspect_path(&ctx.endpoint);
    // The query goes upstream too (all but Gemini's `key`, which Airlock replaces).
    if let Some(q) = query.map(providers::query_without_key) {
        let from_query = inspector.inspect_query(&q);
        from_path.blocked = from_path.blocked.or(from_query.blocked);
        from_path.decisions.extend(from_query.decisions);
    }
    let passthrough = || {
        config
            .policy
            .unparseable(&provider.name, account.as_deref(), project.as_deref())
            == Unparseable::Passthrough
    };
    // A body policy lets through unread (`unparseable = "passthrough"`) cannot be rewritten, but
    // its bytes can still be scanned whole: a finding stricter than `warn` blocks it.
    let scan_whole = |body: &[u8]| {
        let mut o = Outcome::default();
        inspector.inspect_raw(body, &mut o);
        o
    };
    let mut outcome = if body.is_empty() {
        Outcome::default()
    } else if ctx.uninspected {
        scan_whole(&body)
    } else if is_json {
        match inspector.inspect_json(&body) {
            Ok(o) => o,
            Err(_) if passthrough() => {
                ctx.uninspected = true;
                scan_whole(&body)
            }
            Err(e) => return Err(ProxyError::Uninspectable(e.to_string())),
        }
    } else {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match inspector.inspect_other(ct, &body) {
            Ok(o) => o,
            // Its parts cannot be placed, but its bytes can still be scanned whole.
            Err(_) if passthrough() => scan_whole(&body),
            Err(e) => return Err(ProxyError::Uninspectable(e.to_string())),
        }
    };
    if from_path.blocked.is_some() {
        outcome.blocked = from_path.blocked;
    }
    outcome.decisions.splice(0..0, from_path.decisions);
    ctx.findings = outcome
        .decisions
        .iter()
        .map(|d| ledger::FindingRecord {
            rule: d.rule.clone(),
            kind: d.kind.to_owned(),
            location: d.location.clone(),
            action: d.action.as_str().to_owned(),
            value_hash: d.value_hash.clone(),
        })
        .collect();
    ctx.findings_header = outcome.counts_header();
    ctx.restore_map =
        (!outcome.restore.is_empty()).then(|| Arc::new(std::mem::take(&mut outcome.restore)));
    if let Some(b) = &outcome.blocked {
        let what = match b.kind {
            "secret" => "a secret",
            "pii" => "personal data",
            _ => "prompt injection",
        };
        return Err(ProxyError::Blocked {
            what,
            rule: b.rule.clone(),
            location: b.location.clone(),
        });
    }
    let acts = |a: Action| outcome.decisions.iter().any(|d| d.action == a);
    ctx.verdict = if acts(Action::Redact) || acts(Action::Pseudonymize) {
        Some(ledger::Verdict::Redacted)
    } else if acts(Action::Warn) {
        Some(ledger::Verdict::Warned)
    } else {
        None
    };
    Ok(outcome.body.map(Bytes::from).unwrap_or(body))
}

/// What the response needs: the pseudonyms this request put in back, and the output guard.
fn restore_for(rt: &Runtime, ctx: &RequestCtx) -> Option<body::Restore> {
    use crate::protect::policy::{LinkAction, OutputAction};
    let policy = &rt.config.policy;
    let map = ctx.restore_map.clone();
    let guard = (policy.output_secrets != OutputAction::Allow
        || policy.exfil_links != LinkAction::Allow)
        .then(|| crate::protect::restore::OutputGuard {
            engine: rt.engine.clone(),
            secret_keywords: rt.secret_keywords.clone(),
            redact_secrets: policy.output_secrets == OutputAction::Redact,
            neutralize_links: policy.exfil_links == LinkAction::Neutralize,
            warn_only: policy.output_secrets != OutputAction::Redact
                && policy.exfil_links != LinkAction::Neutralize,
            link_allowlist: policy.link_allowlist.clone(),
        });
    (map.is_some() || guard.is_some()).then_some(body::Restore { map, guard })
}

// === meter ===

/// Turns what the response filter saw into tokens and cost. Usage the provider reported is used
/// as is; a stream cut short, or a response without usage for a model request, is estimated
/// (and marked so). A model with no known price costs "unknown", never $0.
fn meter_response(
    state: &State,
    ctx: &mut RequestCtx,
    kind: ProviderKind,
    end: body::BodyEnd,
    metered: body::Metered,
) {
    use crate::meter::{usage_from_json, usage_or_estimate};
    let model = ctx.model.clone();
    let usage = match metered {
        body::Metered::Stream(meter) => {
            Some(meter.finish(end == body::BodyEnd::Complete, &ctx.request_body))
        }
        body::Metered::Json(Some(buf)) => usage_from_json(kind, &buf).or_else(|| {
            model
                .as_deref()
                .map(|m| usage_or_estimate(kind, m, &ctx.request_body, &buf))
        }),
        body::Metered::Json(None) => model
            .as_deref()
            .map(|m| usage_or_estimate(kind, m, &ctx.request_body, &[])),
        body::Metered::Nothing => None,
    };
    let Some(u) = usage else {
        // Nothing billable: an error, or an endpoint that is not a model call.
        ctx.cost_micros = Some(0);
        return;
    };
    ctx.tokens = Tokens {
        input: u.input_tokens,
        output: u.output_tokens,
        cached: u.cached_input_tokens,
        cache_write: u.cache_write_tokens,
        reasoning: u.reasoning_tokens,
    };
    ctx.estimated = u.estimated;
    ctx.cost_micros = if u.total_tokens() == 0 {
        Some(0)
    } else {
        let provider = ctx.provider.as_ref().map(|p| p.name.as_str());
        let prices = state.prices.load();
        model
            .as_deref()
            .and_then(|m| prices.lookup(provider, m))
            .map(|p| i64::try_from(crate::meter::cost(&u, p).0).unwrap_or(i64::MAX))
    };
}

// === fail ===

/// The one place an error becomes a response: status, provider-format body, and a record.
fn fail(
    state: &State,
    rt: &Runtime,
    ctx: &RequestCtx,
    err: ProxyError,
) -> (
    Response<ProxyBody>,
    Option<crate::ledger::writer::Committed>,
) {
    let status = err.status();
    let kind = ctx.provider.as_ref().map(|p| p.kind);
    // A message can quote what the client sent (a model name, a media type), which may hold a
    // secret: masked here, for the response and the record alike.
    let mut message = format!("Airlock: {err}");
    crate::protect::mask::mask_in_place(&rt.engine, &mut message);
    let mut resp = json_response(status, err.body_with(kind, &message));
    if let Some(after) = err.retry_after() {
        if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    let committed = record::finish(
        state,
        &rt.config,
        &rt.engine,
        ctx.record(status, Some(&err)),
        Some(message),
        ctx.identity.as_deref(),
    );
    (resp, committed)
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let c = Config::from_toml("[security]\nallowed_hosts = [\"airlock.internal\"]", None)
            .expect("config");
        for ok in [
            "localhost",
            "localhost:8787",
            "127.0.0.1:8787",
            "127.9.9.9",
            "[::1]:8787",
            "app.localhost",
            "airlock.internal:1",
        ] {
            assert!(host_allowed(&c, ok), "{ok}");
        }
        for bad in [
            "",
            "evil.com",
            "evil.com:8787",
            "192.168.1.5:8787",
            "localhost.evil.com",
            "[2001:db8::1]:80",
        ] {
            assert!(!host_allowed(&c, bad), "{bad}");
        }
        let remote = Config::from_toml("allow_remote = true", None).expect("config");
        assert!(host_allowed(&remote, "192.168.1.5:8787"));
        assert!(!host_allowed(&remote, "rebind.evil.com"));
    }

    #[test]
    fn routes_and_refuses_dot_segments() {
        let c = Config::from_toml("", None).expect("config");
        let (p, rest) = route(&c, "/openai/v1/chat/completions").expect("route");
        assert_eq!((p.name.as_str(), rest), ("openai", "/v1/chat/completions"));
        assert!(matches!(
            route(&c, "/nope/v1"),
            Err(ProxyError::UnknownProvider { .. })
        ));
        assert!(matches!(
            route(&c, "/groq/v1/../../admin"),
            Err(ProxyError::BadPath(_))
        ));
        assert!(matches!(
            route(&c, "/groq/v1/%2E%2e/x"),
            Err(ProxyError::BadPath(_))
        ));
    }

    #[test]
    fn request_fields_parse_from_every_api_shape() {
        let cases = [
            (
                r#"{"model":"gpt-4o","stream":true,"max_completion_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#,
                Some(50),
                "hi",
            ),
            (
                r#"{"model":"claude","max_tokens":64,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"yo"}]}]}"#,
                Some(64),
                "yo",
            ),
            (
                r#"{"model":"gpt-4.1","input":"resp","max_output_tokens":9}"#,
                Some(9),
                "resp",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"gem"}]}],"generationConfig":{"maxOutputTokens":7}}"#,
                Some(7),
                "gem",
            ),
            (
                r#"{"model":"text-embedding-3-small","input":["a","b"]}"#,
                None,
                "b",
            ),
        ];
        for (body, max, text) in cases {
            let f: JsonFields<'_> =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(f.max_tokens(), Ok(max), "{body}");
            assert_eq!(
                f.prompt_fields().last_user_text().as_deref(),
                Some(text),
                "{body}"
            );
        }
    }

    #[test]
    fn max_tokens_that_are_not_integers_are_unreadable() {
        for (body, want) in [
            (r#"{"max_tokens":1e9}"#, Ok(Some(1_000_000_000))),
            (
                r#"{"max_tokens":100.0,"max_completion_tokens":7}"#,
                Ok(Some(100)),
            ),
            (r#"{"max_tokens":null}"#, Ok(None)),
            (r#"{"max_tokens":"5000"}"#, Err("max_tokens")),
            (r#"{"max_tokens":-1}"#, Err("max_tokens")),
            (
                r#"{"max_completion_tokens":1.5}"#,
                Err("max_completion_tokens"),
            ),
            (r#"{"max_output_tokens":true}"#, Err("max_output_tokens")),
            (
                r#"{"generationConfig":{"maxOutputTokens":"9"}}"#,
                Err("generationConfig.maxOutputTokens"),
            ),
            (r#"{"max_tokens":1e400}"#, Err("max_tokens")),
        ] {
            match serde_json::from_str::<JsonFields<'_>>(body) {
                Ok(f) => assert_eq!(f.max_tokens(), want, "{body}"),
                // serde_json refuses numbers out of f64 range outright: refused either way.
                Err(e) => assert!(body.contains("1e400"), "{body}: {e}"),
            }
        }
    }

    /// Regression: a duplicated key was reported as "the body must be a JSON object", deep
    /// nesting and a 5,000-digit number as a bare "syntax error".
    #[test]
    fn json_errors_say_what_is_wrong() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for (body, want) in [
            (
                r#"{"model":"a","model":"b"}"#.to_owned(),
                "duplicate key \"model\"",
            ),
            (deep(10_000), "nested more than 127 levels deep"),
            (
                format!("{{\"model\":\"m\",\"max_tokens\":{}}}", "9".repeat(5000)),
                "a number is too long",
            ),
            (
                r#"{"generationConfig":5}"#.to_owned(),
                "a field has a value of the wrong type",
            ),
            ("5".to_owned(), "the body must be a JSON object"),
            ("{\"model\" 1}".to_owned(), "syntax error"),
        ] {
            let e = serde_json::from_slice::<JsonFields>(body.as_bytes()).expect_err("bad");
            let msg = describe_json_error(&e).to_string();
            assert!(msg.contains(want), "{want}: {msg}");
            assert!(msg.contains("line 1"), "{msg}");
        }
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        let e = serde_json::from_slice::<JsonFields>(b"{\"model\": \"sk-secret-value\" oops")
            .expect_err("bad");
        let msg = describe_json_error(&e).to_string();
        assert!(!msg.contains("sk-secret"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn json_media_types_match_in_any_case() {
        for m in [
            "application/json",
            "Application/JSON",
            "application/vnd.api+JSON",
        ] {
            assert!(is_json_media(m), "{m}");
        }
        for m in [
            "",
            "text/plain",
            "application/x-ndjson",
            "text/json",
            "+json",
            "application/",
        ] {
            assert!(!is_json_media(m), "{m}");
        }
    }

    #[test]
    fn upload_endpoints_are_not_json() {
        assert!(expects_json(ProviderKind::OpenAi, "/v1/chat/completions"));
        assert!(!expects_json(
            ProviderKind::OpenAi,
            "/v1/audio/transcriptions"
        ));
        assert!(!expects_json(
            ProviderKind::OpenAi,
            "/v1/uploads/up_1/parts"
        ));
        assert!(!expects_json(ProviderKind::Gemini, "/upload/v1beta/files"));
    }
}
