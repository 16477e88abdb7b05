//! The response body of a streamed answer: events arrive through a channel from a pacing task,
//! and each one is time-stamped in the request log at the moment hyper takes it for writing.

use super::record::{now_ms, Store};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub type Chunk = Result<Bytes, io::Error>;

pub struct EventBody {
    rx: mpsc::Receiver<Chunk>,
    store: Arc<Store>,
    id: u64,
}

impl EventBody {
    pub fn new(rx: mpsc::Receiver<Chunk>, store: Arc<Store>, id: u64) -> Self {
        Self { rx, store, id }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let t = now_ms();
                self.store.update(self.id, |r| {
                    if let Some(s) = r.stream.as_mut() {
                        s.events_written += 1;
                        s.first_event_ms.get_or_insert(t);
                        s.last_event_ms = Some(t);
                    }
                });
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.store.update(self.id, |r| {
                    if let Some(s) = r.stream.as_mut() {
                        s.finished = s.events_written == s.events_planned;
                    }
                });
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
