//! Bodies: reading the client's request body within the limit, and streaming the upstream's
//! response body back frame by frame, with an idle timeout and an end-of-body hook.

use super::error::ProxyError;
use crate::protect::pseudonym::Mapping;
use crate::protect::restore::{OutputGuard, OutputNote, StreamRestorer};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response Airlock sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Reads the whole request body, refusing more than `limit` bytes without reading past it,
/// and giving up when the client sends nothing for `idle`.
pub async fn read_limited(
    mut body: Incoming,
    declared_len: Option<u64>,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, ProxyError> {
    if declared_len.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // Frames as they came: a body in one frame (the usual case) is kept without a copy.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0;
    loop {
        // A client that stops sending mid-body (a hung upload, a crashed sender that left
        // the socket open) gets an answer and a record, not a request held open for ever.
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ProxyError::BodyTimeout {
                    secs: idle.as_secs(),
                })
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ProxyError::BodyRead(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry no body bytes.
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            frames.push(data);
        }
    }
    Ok(match frames.len() {
        0 => Bytes::new(),
        1 => frames.swap_remove(0),
        _ => Bytes::from(frames.concat()),
    })
}

/// Decodes a compressed request body so it can be inspected, refusing to inflate past `limit`
/// (a small compressed body must not become a huge one).
pub fn decode_request(encoding: &str, body: &[u8], limit: usize) -> Result<Bytes, ProxyError> {
    use std::io::Read;
    let enc = encoding.trim().to_ascii_lowercase();
    let mut reader: Box<dyn Read + '_> = match enc.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body)),
        "br" => Box::new(brotli::Decompressor::new(body, 8192)),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| ProxyError::BodyRead(format!("zstd body: {e}")))?,
        ),
        _ => return Err(ProxyError::UnsupportedEncoding(enc)),
    };
    let mut out = Vec::new();
    (&mut reader)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ProxyError::BodyRead(format!("cannot decode the {enc} body: {e}")))?;
    if out.len() > limit {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// How a streamed response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyEnd {
    /// The upstream finished and the client got everything.
    Complete,
    /// The upstream failed mid-body (reset, protocol error).
    UpstreamError,
    /// Nothing arrived from the upstream for `timeouts.idle`.
    IdleTimeout,
    /// The client went away before the end.
    ClientGone,
}

impl BodyEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEnd::Complete => "complete",
            BodyEnd::UpstreamError => "upstream_error",
            BodyEnd::IdleTimeout => "idle_timeout",
            BodyEnd::ClientGone => "client_gone",
        }
    }
}

/// What the response filter learned, handed to the end hook.
pub enum Metered {
    /// Nothing was metered (not a response Airlock prices).
    Nothing,
    /// A whole JSON body (`None` if it outgrew the capture limit).
    Json(Option<Vec<u8>>),
    /// An event stream, metered event by event.
    Stream(Box<crate::meter::StreamMeter>),
}

/// Called once when the body ends, however it ends, with the bytes passed through, what was
/// metered and what the output guard found.
/// The request's ledger row is durable when it returns (spooled), or it returns a signal that
/// the row is committed: a complete response then holds its last bytes until the signal (at most
/// [`COMMIT_WAIT`]), so a client never sees a request finish whose record a crash could lose.
pub type OnEnd = Box<
    dyn FnOnce(BodyEnd, u64, Metered, Vec<OutputNote>) -> Option<crate::ledger::writer::Committed>
        + Send,
>;

/// The longest a response waits for its ledger row; a stuck disk must not stall clients.
pub const COMMIT_WAIT: Duration = Duration::from_millis(250);

/// JSON responses are kept (while being forwarded) up to this size to read their usage.
const JSON_CAPTURE_LIMIT: usize = 8 * 1024 * 1024;

/// Pseudonyms to put back and the guard for model output, for one response.
pub struct Restore {
    pub map: Option<Arc<Mapping>>,
    pub guard: Option<OutputGuard>,
}

/// How response bytes are watched, and changed where they must be, on their way to the client.
pub enum Filter {
    Pass,
    Json {
        buf: Vec<u8>,
        overflow: bool,
        /// Set when the body must be restored or guarded: it is then held whole (a non-streamed
        /// answer is only useful whole anyway) and rewritten at the end.
        restore: Option<Box<Restore>>,
        /// Set for an error status (the provider and the status): the body is held whole too,
        /// and one that turns out not to be JSON after all (empty, though typed
        /// `application/json`) is wrapped like [`Filter::ErrorText`].
        error: Option<(crate::providers::ProviderKind, http::StatusCode)>,
        notes: Vec<OutputNote>,
    },
    /// A non-JSON error body (HTML, plain text, empty): collected up to a limit, then sent in
    /// the provider's own error format with the upstream text, guarded, as the message.
    ErrorText {
        buf: Vec<u8>,
        wrap: Box<ErrorWrap>,
        notes: Vec<OutputNote>,
    },
    /// A stream sent as one JSON array (Gemini without `alt=sse`): metered element by element
    /// and, when it must change, restored and guarded like an SSE stream (held text per text
    /// stream, never the whole body) and sent re-framed as `[e1,e2,…]`.
    JsonArray {
        splitter: crate::sse::array::JsonArraySplitter,
        meter: Box<crate::meter::StreamMeter>,
        restorer: Option<Box<StreamRestorer>>,
        /// Elements sent so far (the first gets the `[`, the others a `,`).
        sent: usize,
        /// Unchanged stream: the bytes after the last whole element, held until it completes,
        /// so a stream that breaks ends with valid JSON (the error as the next element).
        held: Vec<u8>,
    },
    Sse {
        splitter: crate::sse::SseSplitter,
        meter: Box<crate::meter::StreamMeter>,
        /// Airlock added `stream_options.include_usage`: drop the usage chunk and the
        /// `"usage":null` fields it causes, so the client gets the stream it asked for.
        hide_usage: bool,
        restorer: Option<Box<StreamRestorer>>,
    },
}

/// What wrapping a non-JSON upstream error needs.
pub struct ErrorWrap {
    pub kind: crate::providers::ProviderKind,
    pub status: http::StatusCode,
    pub html: bool,
    pub guard: Option<OutputGuard>,
}

/// Of a non-JSON error body, only this much is read for the message; the rest is dropped.
const ERROR_TEXT_LIMIT: usize = 64 * 1024;

impl Filter {
    pub fn error_text(wrap: ErrorWrap) -> Filter {
        Filter::ErrorText {
            buf: Vec::new(),
            wrap: Box::new(wrap),
            notes: Vec::new(),
        }
    }

    pub fn json(restore: Option<Restore>) -> Filter {
        Filter::Json {
            buf: Vec::new(),
            overflow: false,
            restore: restore.map(Box::new),
            error: None,
            notes: Vec::new(),
        }
    }

    /// [`Filter::json`] for an error status.
    pub fn json_error(
        restore: Option<Restore>,
        kind: crate::providers::ProviderKind,
        status: http::StatusCode,
    ) -> Filter {
        let mut f = Filter::json(restore);
        if let Filter::Json { error, .. } = &mut f {
            *error = Some((kind, status));
        }
        f
    }

    pub fn json_array(meter: crate::meter::StreamMeter, restore: Option<Restore>) -> Filter {
        Filter::JsonArray {
            splitter: Default::default(),
            meter: Box::new(meter),
            restorer: restore.map(|r| Box::new(StreamRestorer::new(r.map, r.guard))),
            sent: 0,
            held: Vec::new(),
        }
    }

    pub fn sse(
        meter: crate::meter::StreamMeter,
        hide_usage: bool,
        restore: Option<Restore>,
    ) -> Filter {
        Filter::Sse {
            splitter: crate::sse::SseSplitter::new(),
            meter: Box::new(meter),
            hide_usage,
            restorer: restore.map(|r| Box::new(StreamRestorer::new(r.map, r.guard))),
        }
    }

    /// Whether the filter can change the bytes (then `Content-Length` must go).
    pub fn rewrites(&self) -> bool {
        match self {
            Filter::Pass => false,
            Filter::ErrorText { .. } => true,
            Filter::Json { restore, error, .. } => restore.is_some() || error.is_some(),
            Filter::JsonArray { restorer, .. } => restorer.is_some(),
            Filter::Sse {
                hide_usage,
                restorer,
                ..
            } => *hide_usage || restorer.is_some(),
        }
    }

    /// Handles one chunk, appending what the client should get to `out`. Only a rewriting
    /// filter holds bytes back: a stream only the part of an event that has not ended yet.
    fn on_chunk(&mut self, chunk: Bytes, out: &mut VecDeque<Bytes>) {
        match self {
            Filter::Pass => out.push_back(chunk),
            Filter::ErrorText { buf, .. } => {
                let room = ERROR_TEXT_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Filter::JsonArray {
                splitter,
                meter,
                restorer: None,
                held,
                ..
            } => {
                splitter.push(&chunk, |e| {
                    meter.on_event(None, &String::from_utf8_lossy(e));
                });
                match splitter.settled() {
                    Some(at) => {
                        if !held.is_empty() {
                            out.push_back(Bytes::from(std::mem::take(held)));
                        }
                        if at > 0 {
                            out.push_back(chunk.slice(..at));
                        }
                        held.extend_from_slice(&chunk[at..]);
                    }
                    None => held.extend_from_slice(&chunk),
                }
            }
            Filter::JsonArray {
                splitter,
                meter,
                restorer: Some(r),
                sent,
                ..
            } => {
                let mut buf = Vec::new();
                splitter.push(&chunk, |e| {
                    let text = String::from_utf8_lossy(e);
                    meter.on_event(None, &text);
                    match r.on_element(&text) {
                        Some(elements) => {
                            for el in elements {
                                array_element(&mut buf, sent, &el);
                            }
                        }
                        None => array_element(&mut buf, sent, e),
                    }
                });
                if !buf.is_empty() {
                    out.push_back(Bytes::from(buf));
                }
            }
            Filter::Json {
                buf,
                overflow,
                restore,
                error,
                ..
            } => {
                if !*overflow {
                    let holding = restore.is_some() || error.is_some();
                    if buf.len() + chunk.len() <= JSON_CAPTURE_LIMIT {
                        buf.extend_from_slice(&chunk);
                        if holding {
                            return;
                        }
                    } else {
                        *overflow = true;
                        // Too long to be an empty error: it goes out as it came.
                        error.take();
                        if restore.take().is_some() {
                            tracing::warn!(
                                "response too large to restore pseudonyms in; passed through as is"
                            );
                        }
                        if holding {
                            out.push_back(Bytes::from(std::mem::take(buf)));
                        }
                        *buf = Vec::new();
                    }
                }
                out.push_back(chunk);
            }
            Filter::Sse {
                splitter,
                meter,
                hide_usage: false,
                restorer: None,
            } => {
                splitter.push(&chunk, |ev| meter.on_sse_event(&ev));
                out.push_back(chunk);
            }
            Filter::Sse {
                splitter,
                meter,
                hide_usage,
                restorer,
            } => {
                let base = splitter.bytes_seen();
                let hide = *hide_usage;
                // Consecutive untouched events inside this chunk go out as one slice.
                let mut run: Option<(usize, usize)> = None;
                splitter.push(&chunk, |ev| {
                    meter.on_sse_event(&ev);
                    let replaced = rewrite_event(
                        hide,
                        restorer.as_deref_mut(),
                        ev.raw,
                        ev.event,
                        ev.data,
                        ev.has_data,
                    );
                    let inside = ev.span.start >= base;
                    match (replaced, inside) {
                        (None, true) => {
                            let (a, b) = (
                                (ev.span.start - base) as usize,
                                (ev.span.end - base) as usize,
                            );
                            run = match run {
                                Some((ra, rb)) if rb == a => Some((ra, b)),
                                Some((ra, rb)) => {
                                    out.push_back(chunk.slice(ra..rb));
                                    Some((a, b))
                                }
                                None => Some((a, b)),
                            };
                        }
                        (replaced, _) => {
                            if let Some((ra, rb)) = run.take() {
                                out.push_back(chunk.slice(ra..rb));
                            }
                            match replaced {
                                Some(bytes) if bytes.is_empty() => {} // the injected usage chunk
                                Some(bytes) => out.push_back(Bytes::from(bytes)),
                                None => out.push_back(Bytes::copy_from_slice(ev.raw)),
                            }
                        }
                    }
                });
                if let Some((ra, rb)) = run {
                    out.push_back(chunk.slice(ra..rb));
                }
            }
        }
    }

    /// For a stream cut short: the provider's own mid-stream error, framed for this stream.
    /// Anthropic sends `event: error` with `{"type":"error","error":{…}}`, OpenAI a `data:` line
    /// with an `{"error":{…}}` object, Gemini an `{"error":{…}}` event or array element. Text the
    /// restorer still holds is not sent (it may be the start of a secret).
    fn error_event(
        &mut self,
        kind: crate::providers::ProviderKind,
        how: BodyEnd,
        detail: &str,
    ) -> Option<Bytes> {
        use crate::providers::{error_body, ErrorClass, ProviderKind};
        let (status, class, code) = match how {
            BodyEnd::IdleTimeout => (
                http::StatusCode::GATEWAY_TIMEOUT,
                ErrorClass::Timeout,
                "airlock_upstream_idle_timeout",
            ),
            _ => (
                http::StatusCode::BAD_GATEWAY,
                ErrorClass::Unavailable,
                "airlock_upstream_stream_broken",
            ),
        };
        let message = format!("Airlock: the upstream stream ended early: {detail}");
        let body = error_body(kind, status, class, code, &message);
        let mut out = Vec::new();
        match self {
            Filter::Sse {
                splitter,
                hide_usage,
                restorer,
                ..
            } => {
                if !*hide_usage && restorer.is_none() && splitter.pending_len() > 0 {
                    // Part of an event already went out as it came: end it first.
                    out.extend_from_slice(b"\n\n");
                }
                if kind == ProviderKind::Anthropic {
                    out.extend_from_slice(b"event: error\n");
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\n\n");
            }
            Filter::JsonArray {
                splitter,
                restorer,
                sent,
                ..
            } => {
                let opened = if restorer.is_some() {
                    *sent > 0
                } else {
                    splitter.started()
                };
                let any = if restorer.is_some() {
                    *sent > 0
                } else {
                    splitter.elements() > 0
                };
                if !opened {
                    out.push(b'[');
                }
                if any {
                    out.push(b',');
                }
                out.extend_from_slice(&body);
                out.push(b']');
            }
            _ => return None,
        }
        Some(Bytes::from(out))
    }

    /// The body ended: meter what is left, and hand over everything still held (nothing is
    /// lost: an event that never completed still goes out).
    fn on_end(&mut self, out: &mut VecDeque<Bytes>) {
        match self {
            Filter::Pass => {}
            Filter::JsonArray {
                splitter,
                restorer,
                sent,
                held,
                ..
            } => {
                let Some(r) = restorer.as_deref_mut() else {
                    if !held.is_empty() {
                        out.push_back(Bytes::from(std::mem::take(held)));
                    }
                    return;
                };
                let mut buf = Vec::new();
                for el in r.finish_elements() {
                    array_element(&mut buf, sent, &el);
                }
                if splitter.closed() {
                    if *sent == 0 {
                        buf.push(b'[');
                    }
                    buf.push(b']');
                } else {
                    // Cut short: whatever never completed goes out as it came.
                    buf.extend_from_slice(&splitter.finish());
                }
                if !buf.is_empty() {
                    out.push_back(Bytes::from(buf));
                }
            }
            Filter::ErrorText { buf, wrap, notes } => {
                out.push_back(super::error::wrap_upstream_error(
                    wrap.kind,
                    wrap.status,
                    wrap.html,
                    buf,
                    wrap.guard.as_ref(),
                    notes,
                ));
            }
            Filter::Json {
                buf,
                restore,
                error,
                notes,
                ..
            } => {
                if let Some((kind, status)) = error.take() {
                    if serde_json::from_slice::<serde::de::IgnoredAny>(buf).is_err() {
                        let guard = restore.as_ref().and_then(|r| r.guard.as_ref());
                        out.push_back(super::error::wrap_upstream_error(
                            kind, status, false, buf, guard, notes,
                        ));
                        return;
                    }
                    if restore.is_none() {
                        out.push_back(Bytes::from(std::mem::take(buf)));
                        return;
                    }
                }
                if let Some(r) = restore.take() {
                    let rewritten = crate::protect::restore::restore_json(
                        buf,
                        r.map.as_deref(),
                        r.guard.as_ref(),
                        notes,
                    );
                    out.push_back(Bytes::from(rewritten.unwrap_or_else(|| buf.clone())));
                }
            }
            Filter::Sse {
                splitter,
                meter,
                hide_usage,
                restorer,
            } => {
                let rewriting = *hide_usage || restorer.is_some();
                let hide = *hide_usage;
                let mut tail = Vec::new();
                let leftover = splitter.finish(|ev| {
                    meter.on_sse_event(&ev);
                    if rewriting {
                        match rewrite_event(
                            hide,
                            restorer.as_deref_mut(),
                            ev.raw,
                            ev.event,
                            ev.data,
                            ev.has_data,
                        ) {
                            Some(bytes) => tail.extend_from_slice(&bytes),
                            None => tail.extend_from_slice(ev.raw),
                        }
                    }
                });
                if rewriting {
                    if let Some(r) = restorer.as_deref_mut() {
                        tail.extend_from_slice(&r.finish());
                    }
                    tail.extend_from_slice(&leftover);
                    if !tail.is_empty() {
                        out.push_back(Bytes::from(tail));
                    }
                }
            }
        }
    }

    fn into_metered(self) -> (Metered, Vec<OutputNote>) {
        match self {
            Filter::Pass => (Metered::Nothing, Vec::new()),
            Filter::ErrorText { notes, .. } => (Metered::Nothing, notes),
            Filter::JsonArray {
                meter, restorer, ..
            } => (
                Metered::Stream(meter),
                restorer.map(|r| r.notes).unwrap_or_default(),
            ),
            Filter::Json {
                buf,
                overflow,
                notes,
                ..
            } => (Metered::Json((!overflow).then_some(buf)), notes),
            Filter::Sse {
                meter, restorer, ..
            } => (
                Metered::Stream(meter),
                restorer.map(|r| r.notes).unwrap_or_default(),
            ),
        }
    }
}

/// Appends one element of a re-framed JSON array stream.
fn array_element(buf: &mut Vec<u8>, sent: &mut usize, element: &[u8]) {
    buf.push(if *sent == 0 { b'[' } else { b',' });
    buf.extend_from_slice(element);
    *sent += 1;
}

/// One complete event through the rewriting path: `None` to send it unchanged, `Some(empty)` to
/// drop it (the usage chunk Airlock asked for), or the bytes to send instead.
fn rewrite_event(
    hide_usage: bool,
    restorer: Option<&mut StreamRestorer>,
    raw: &[u8],
    event: Option<&str>,
    data: &str,
    has_data: bool,
) -> Option<Vec<u8>> {
    let mut stripped: Option<Vec<u8>> = None;
    if hide_usage {
        if has_data && crate::meter::is_usage_only_chunk(data) {
            return Some(Vec::new());
        }
        stripped = crate::meter::strip_null_usage(raw);
    }
    let Some(r) = restorer else { return stripped };
    match stripped {
        None => r.on_event(raw, event, data, has_data),
        Some(new_raw) => {
            // Re-read the stripped event so the restorer sees its data.
            let (events, _) = crate::sse::split_all(&new_raw);
            match events.first() {
                Some(e) => Some(
                    r.on_event(&new_raw, e.event.as_deref(), &e.data, e.has_data)
                        .unwrap_or(new_raw),
                ),
                None => Some(new_raw),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?} (timeouts.idle); the response was cut off")]
pub struct IdleTimeout(Duration);

pin_project_lite::pin_project! {
    /// The upstream response body as it streams to the client. Frames pass through as they
    /// arrive, never collected: an SSE event reaches the client as soon as it is complete.
    #[project = UpstreamBodyProj]
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        idle_after: Duration,
        bytes: u64,
        filter: Option<Filter>,
        out: VecDeque<Bytes>,
        upstream_done: bool,
        on_end: Option<OnEnd>,
        commit: Option<crate::ledger::writer::Committed>,
        #[pin]
        commit_deadline: Option<Sleep>,
        mask: super::key_mask::KeyMask,
        decoder: Option<super::decode::ResponseDecoder>,
        kind: crate::providers::ProviderKind,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                // hyper never polls a body whose length is known to be 0 (an upstream error with
                // `content-length: 0`): dropped unpolled, it was still delivered whole, unless a
                // filter had something of its own to send.
                let delivered = this.inner.is_end_stream()
                    && this.out.is_empty()
                    && !this.mask.is_holding()
                    && this.filter.as_ref().is_none_or(|f| !f.rewrites());
                let how = if delivered { BodyEnd::Complete } else { BodyEnd::ClientGone };
                let (metered, notes) = this.filter.take().map_or((Metered::Nothing, Vec::new()), Filter::into_metered);
                // Nobody is left to answer, so the commit signal is not awaited.
                drop(f(how, *this.bytes, metered, notes));
            }
        }
    }
}

impl UpstreamBody {
    pub fn new(
        inner: Incoming,
        idle_after: Duration,
        filter: Filter,
        mask: super::key_mask::KeyMask,
        decoder: Option<super::decode::ResponseDecoder>,
        kind: crate::providers::ProviderKind,
        on_end: OnEnd,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(idle_after),
            idle_after,
            bytes: 0,
            filter: Some(filter),
            out: VecDeque::new(),
            upstream_done: false,
            on_end: Some(on_end),
            commit: None,
            commit_deadline: None,
            mask,
            decoder,
            kind,
        }
    }
}

/// The compressed upstream body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's compressed body could not be decoded: {0}")]
pub struct BadEncoding(std::io::Error);

/// The upstream body is complete: the decoder's rest goes through the filter, then the filter
/// hands over what it still holds.
fn upstream_end(
    decoder: &mut Option<super::decode::ResponseDecoder>,
    filter: &mut Option<Filter>,
    out: &mut VecDeque<Bytes>,
) -> Result<(), BadEncoding> {
    if let Some(d) = decoder.take() {
        let rest = d.finish().map_err(BadEncoding)?;
        if !rest.is_empty() {
            match filter.as_mut() {
                Some(f) => f.on_chunk(rest, out),
                None => out.push_back(rest),
            }
        }
    }
    if let Some(f) = filter.as_mut() {
        f.on_end(out);
    }
    Ok(())
}

/// The upstream broke or went silent mid-body. The record says so (as before); then a stream
/// ends with the provider's own error event and closes cleanly, so the SDK raises a readable
/// error instead of "incomplete chunked read". Any other body fails: its framing cannot carry
/// an error once the status line has gone out.
fn broken(this: &mut UpstreamBodyProj<'_>, how: BodyEnd, err: BoxError) -> Result<(), BoxError> {
    let event = this
        .filter
        .as_mut()
        .and_then(|f| f.error_event(*this.kind, how, &err.to_string()));
    end(this.on_end, this.filter, how, *this.bytes);
    *this.decoder = None;
    match event {
        Some(ev) => {
            tracing::warn!("upstream stream ended early ({}): {err}", how.as_str());
            this.out.push_back(ev);
            *this.upstream_done = true;
            Ok(())
        }
        None => Err(err),
    }
}

/// Runs the end hook once, with what the filter metered.
fn end(
    on_end: &mut Option<OnEnd>,
    filter: &mut Option<Filter>,
    how: BodyEnd,
    bytes: u64,
) -> Option<crate::ledger::writer::Committed> {
    let f = on_end.take()?;
    let (metered, notes) = filter
        .take()
        .map_or((Metered::Nothing, Vec::new()), Filter::into_metered);
    f(how, bytes, metered, notes)
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.upstream_done && this.on_end.is_some() {
                // Complete upstream: record it before the client gets the last bytes.
                let sent = *this.bytes + this.out.iter().map(|b| b.len() as u64).sum::<u64>();
                *this.commit = end(this.on_end, this.filter, BodyEnd::Complete, sent);
                if this.commit.is_some() {
                    this.commit_deadline
                        .set(Some(tokio::time::sleep(COMMIT_WAIT)));
                }
            }
            if let Some(rx) = this.commit.as_mut() {
                let timed_out = this
                    .commit_deadline
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|d| d.poll(cx).is_ready());
                if Pin::new(rx).poll(cx).is_pending() && !timed_out {
                    return Poll::Pending;
                }
                if timed_out {
                    tracing::warn!("ledger row not committed within {COMMIT_WAIT:?}; finishing the response anyway");
                }
                *this.commit = None;
                this.commit_deadline.set(None);
            }
            if let Some(next) = this.out.pop_front() {
                // The last filter: keys never reach the client.
                let next = this.mask.push(next);
                if next.is_empty() {
                    continue;
                }
                *this.bytes += next.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(next))));
            }
            if *this.upstream_done {
                let tail = this.mask.finish();
                if !tail.is_empty() {
                    *this.bytes += tail.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + *this.idle_after;
                    this.idle.as_mut().reset(deadline);
                    match frame.into_data() {
                        Ok(data) => {
                            let data = match this.decoder.as_mut().map(|d| d.push(&data)) {
                                None => data,
                                Some(Ok(plain)) => plain,
                                Some(Err(e)) => {
                                    let e: BoxError = Box::new(BadEncoding(e));
                                    match broken(&mut this, BodyEnd::UpstreamError, e) {
                                        Ok(()) => continue,
                                        Err(e) => return Poll::Ready(Some(Err(e))),
                                    }
                                }
                            };
                            if !data.is_empty() {
                                match this.filter.as_mut() {
                                    Some(f) => f.on_chunk(data, this.out),
                                    None => this.out.push_back(data),
                                }
                            }
                            // With a known length, hyper stops polling after the last byte, so
                            // a complete body must be noticed here rather than at a `None`.
                            if this.inner.is_end_stream() {
                                if let Err(e) = upstream_end(this.decoder, this.filter, this.out) {
                                    match broken(&mut this, BodyEnd::UpstreamError, Box::new(e)) {
                                        Ok(()) => continue,
                                        Err(e) => return Poll::Ready(Some(Err(e))),
                                    }
                                }
                                *this.upstream_done = true;
                            }
                        }
                        // Trailers pass through untouched.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    match broken(&mut this, BodyEnd::UpstreamError, Box::new(e)) {
                        Ok(()) => continue,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                Poll::Ready(None) => {
                    if let Err(e) = upstream_end(this.decoder, this.filter, this.out) {
                        match broken(&mut this, BodyEnd::UpstreamError, Box::new(e)) {
                            Ok(()) => continue,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                    *this.upstream_done = true;
                }
                Poll::Pending => match this.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let e: BoxError = Box::new(IdleTimeout(*this.idle_after));
                        match broken(&mut this, BodyEnd::IdleTimeout, e) {
                            Ok(()) => continue,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream_done
            && self.out.is_empty()
            && self.on_end.is_none()
            && self.commit.is_none()
            && !self.mask.is_holding()
    }

    fn size_hint(&self) -> SizeHint {
        if self.decoder.is_some() {
            return SizeHint::default();
        }
        match &self.filter {
            Some(f) if f.rewrites() => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}
