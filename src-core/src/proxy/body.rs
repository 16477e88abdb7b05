//! Bodies: reading the client's request body within the limit, and streaming the upstream's
//! response body back frame by frame, with an idle timeout and an end-of-body hook.

use super::error::ProxyError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
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

/// Reads the whole request body, refusing more than `limit` bytes without reading past it.
pub async fn read_limited(
    body: Incoming,
    declared_len: Option<u64>,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    if declared_len.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
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

/// Called once when the body ends, however it ends, with the bytes passed through.
pub type OnEnd = Box<dyn FnOnce(BodyEnd, u64) + Send>;

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?} (timeouts.idle); the response was cut off")]
pub struct IdleTimeout(Duration);

pin_project_lite::pin_project! {
    /// The upstream response body as it streams to the client. Frames pass through one at a
    /// time, never collected: an SSE event reaches the client as soon as it arrives.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        idle_after: Duration,
        bytes: u64,
        on_end: Option<OnEnd>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                f(BodyEnd::ClientGone, *this.bytes);
            }
        }
    }
}

impl UpstreamBody {
    pub fn new(inner: Incoming, idle_after: Duration, on_end: OnEnd) -> UpstreamBody {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(idle_after),
            idle_after,
            bytes: 0,
            on_end: Some(on_end),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                let deadline = Instant::now() + *this.idle_after;
                this.idle.as_mut().reset(deadline);
                // With a known length, hyper stops polling after the last byte, so a body that
                // is complete must be reported here rather than at a `None` that never comes.
                if this.inner.is_end_stream() {
                    if let Some(f) = this.on_end.take() {
                        f(BodyEnd::Complete, *this.bytes);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.on_end.take() {
                    f(BodyEnd::UpstreamError, *this.bytes);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                if let Some(f) = this.on_end.take() {
                    f(BodyEnd::Complete, *this.bytes);
                }
                Poll::Ready(None)
            }
            Poll::Pending => match this.idle.poll(cx) {
                Poll::Ready(()) => {
                    if let Some(f) = this.on_end.take() {
                        f(BodyEnd::IdleTimeout, *this.bytes);
                    }
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle_after)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
