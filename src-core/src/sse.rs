//! Incremental server-sent events (SSE) splitting for a body filter that forwards bytes unchanged.
//!
//! [`SseSplitter`] takes response chunks as they arrive and reports each *complete* event (a block
//! of lines ended by a blank line) once, with its exact raw bytes and its absolute byte range in the
//! stream, plus a parsed view ([`SseEvent::event`], [`SseEvent::data`], …) following the WHATWG
//! event-stream rules: `\n`, `\r\n` and `\r` line endings, multi-line `data:` joined with `\n`, one
//! optional space after the colon, `:` comments, a leading BOM ignored.
//!
//! Because each event comes with its raw bytes, a proxy can forward it byte-for-byte, or drop it,
//! without re-serialising anything. Bytes of an unfinished event are held until the blank line
//! arrives; [`SseSplitter::finish`] hands back whatever never completed.
//!
//! Results never depend on how the stream was chunked. The one subtle case is a blank line ended
//! by a bare `\r` as the last byte seen so far: a following `\n` would belong to the same line
//! ending, so that event is reported only when the next byte (or `finish`) settles it.
//!
//! ```
//! use airlock::sse::SseSplitter;
//!
//! let mut splitter = SseSplitter::new();
//! let mut seen = Vec::new();
//! for chunk in [&b"data: hel"[..], b"lo\n\nda", b"ta: x\n"] {
//!     splitter.push(chunk, |ev| seen.push((ev.data.to_string(), ev.raw.to_vec(), ev.span.clone())));
//! }
//! assert_eq!(seen, vec![("hello".to_string(), b"data: hello\n\n".to_vec(), 0..13)]);
//! assert_eq!(splitter.finish(|_| unreachable!()), b"data: x\n");
//! ```

use std::ops::Range;

pub mod array;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One complete event block, borrowed for the duration of the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The exact bytes of the block as received, including its terminating blank line.
    pub raw: &'a [u8],
    /// Where `raw` sits in the whole stream (byte offsets from the first byte pushed).
    pub span: Range<u64>,
    /// The `event:` field, if the block set a non-empty one (WHATWG's default is `message`).
    pub event: Option<&'a str>,
    /// The `data:` lines joined with `\n` (empty if there were none).
    pub data: &'a str,
    /// Whether the block had at least one `data` field. WHATWG dispatches only such blocks;
    /// comment-only keep-alives and stray blank lines are still reported so they can be forwarded.
    pub has_data: bool,
    /// The `id:` field of this block, if any (ignored when it contains NUL, as WHATWG says).
    pub id: Option<&'a str>,
    /// The `retry:` field, if it was all ASCII digits and fits in a `u64`.
    pub retry: Option<u64>,
}

/// Splits a byte stream into SSE events. See the [module docs](self).
#[derive(Debug, Default)]
pub struct SseSplitter {
    /// Raw bytes of the current, unfinished event carried over from earlier chunks.
    held: Vec<u8>,
    /// Stream offset of the first byte not yet reported in an event.
    event_start: u64,
    /// Total bytes pushed so far.
    offset: u64,
    /// The current line has at least one byte before its terminator.
    line_has_content: bool,
    /// The last byte seen was `\r`: a `\n` next is part of the same line ending.
    after_cr: bool,
    /// That `\r` ended a blank line, so an event ends after it (and after a `\n`, if one follows).
    cr_blank: bool,
    /// BOM bytes matched at the start of the stream; `None` once the question is settled.
    bom_matched: Option<u8>,
    /// Reused buffer for joining multi-line `data`.
    scratch: String,
}

// === impl SseSplitter ===

impl SseSplitter {
    pub fn new() -> Self {
        SseSplitter {
            bom_matched: Some(0),
            ..SseSplitter::default()
        }
    }

    /// Bytes held for an event that has not completed yet. A proxy may cap this and fall back to
    /// plain forwarding if an upstream never sends a blank line.
    pub fn pending_len(&self) -> usize {
        self.held.len()
    }

    /// Total bytes pushed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.offset
    }

    /// Feeds one chunk and calls `on_event` for every event it completes, in stream order.
    ///
    /// Events that lie wholly inside `chunk` borrow from it; only an event that straddles chunks
    /// is copied (into a buffer whose capacity is reused).
    pub fn push<F>(&mut self, chunk: &[u8], mut on_event: F)
    where
        F: FnMut(SseEvent<'_>),
    {
        let base = self.offset;
        let mut start = 0; // first byte of chunk not yet reported or held
        let mut at = 0;
        while let Some(end) = self.next_boundary(chunk, at) {
            at = end;
            let span = self.event_start..base + end as u64;
            self.event_start = span.end;
            if self.held.is_empty() {
                emit(&chunk[start..end], span, &mut self.scratch, &mut on_event);
            } else {
                self.held.extend_from_slice(&chunk[start..end]);
                let held = std::mem::take(&mut self.held);
                emit(&held, span, &mut self.scratch, &mut on_event);
                self.held = held;
                self.held.clear();
            }
            start = end;
        }
        self.held.extend_from_slice(&chunk[start..]);
        self.offset = base + chunk.len() as u64;
    }

    /// Ends the stream. An event whose blank line was a final bare `\r` is reported now; the bytes
    /// of an event that never completed are returned (empty if the stream ended cleanly).
    pub fn finish<F>(&mut self, mut on_event: F) -> Vec<u8>
    where
        F: FnMut(SseEvent<'_>),
    {
        if self.after_cr && self.cr_blank {
            self.after_cr = false;
            self.cr_blank = false;
            let span = self.event_start..self.offset;
            self.event_start = self.offset;
            let held = std::mem::take(&mut self.held);
            emit(&held, span, &mut self.scratch, &mut on_event);
            return Vec::new();
        }
        self.event_start = self.offset;
        self.after_cr = false;
        self.line_has_content = false;
        std::mem::take(&mut self.held)
    }

    /// Scans `chunk` from `at` and returns the chunk index just past the next event's end, if the
    /// end is in this chunk. The line state carries across calls, so chunking never matters.
    fn next_boundary(&mut self, chunk: &[u8], mut at: usize) -> Option<usize> {
        if let Some(matched) = self.bom_matched {
            // Only the very first bytes of the stream can be a BOM; it is never line content.
            let mut matched = matched;
            while matched < 3 {
                let &b = chunk.get(at)?;
                if b != BOM[matched as usize] {
                    self.line_has_content |= matched > 0;
                    break;
                }
                matched += 1;
                at += 1;
                self.bom_matched = Some(matched);
            }
            self.bom_matched = None;
        }
        if self.after_cr {
            let &b = chunk.get(at)?;
            self.after_cr = false;
            if b == b'\n' {
                at += 1;
            }
            if std::mem::take(&mut self.cr_blank) {
                return Some(at);
            }
        }
        loop {
            let rest = chunk.get(at..)?;
            let Some(rel) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.line_has_content |= !rest.is_empty();
                return None;
            };
            let blank = !self.line_has_content && rel == 0;
            self.line_has_content = false;
            let term = at + rel;
            at = term + 1;
            if chunk[term] == b'\r' {
                match chunk.get(at) {
                    Some(b'\n') => at += 1,
                    Some(_) => {}
                    None => {
                        self.after_cr = true;
                        self.cr_blank = blank;
                        return None;
                    }
                }
            }
            if blank {
                return Some(at);
            }
        }
    }
}

/// Parses one complete block and hands it to the callback.
fn emit<F>(raw: &[u8], span: Range<u64>, scratch: &mut String, on_event: &mut F)
where
    F: FnMut(SseEvent<'_>),
{
    let body = if span.start == 0 {
        raw.strip_prefix(&BOM[..]).unwrap_or(raw)
    } else {
        raw
    };
    // Lossy like a browser's decoder; borrowed (no copy) for the usual valid UTF-8.
    let text = String::from_utf8_lossy(body);
    let mut event = None;
    let mut id = None;
    let mut retry = None;
    let mut first_data: Option<&str> = None;
    let mut joined = false;
    scratch.clear();
    for line in Lines(&text) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match first_data {
                None => first_data = Some(value),
                Some(first) => {
                    if !joined {
                        scratch.push_str(first);
                        joined = true;
                    }
                    scratch.push('\n');
                    scratch.push_str(value);
                }
            },
            "event" => event = Some(value),
            "id" if !value.contains('\0') => id = Some(value),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse().ok();
            }
            _ => {}
        }
    }
    let data = if joined {
        scratch.as_str()
    } else {
        first_data.unwrap_or("")
    };
    on_event(SseEvent {
        raw,
        span,
        event: event.filter(|e| !e.is_empty()),
        data,
        has_data: first_data.is_some(),
        id,
        retry,
    });
}

/// Lines split on `\r\n`, `\r` or `\n`.
struct Lines<'a>(&'a str);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let bytes = self.0.as_bytes();
        match memchr::memchr2(b'\n', b'\r', bytes) {
            None => Some(std::mem::take(&mut self.0)),
            Some(i) => {
                let line = &self.0[..i];
                let skip = if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.0 = &self.0[i + skip..];
                Some(line)
            }
        }
    }
}

/// Convenience for callers that want owned events (tests, tools): splits a whole buffer.
pub fn split_all(bytes: &[u8]) -> (Vec<OwnedSseEvent>, Vec<u8>) {
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    splitter.push(bytes, |ev| events.push(OwnedSseEvent::from(&ev)));
    let rest = splitter.finish(|ev| events.push(OwnedSseEvent::from(&ev)));
    (events, rest)
}

/// An [`SseEvent`] that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSseEvent {
    pub raw: Vec<u8>,
    pub span: Range<u64>,
    pub event: Option<String>,
    pub data: String,
    pub has_data: bool,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

impl From<&SseEvent<'_>> for OwnedSseEvent {
    fn from(ev: &SseEvent<'_>) -> Self {
        OwnedSseEvent {
            raw: ev.raw.to_vec(),
            span: ev.span.clone(),
            event: ev.event.map(str::to_owned),
            data: ev.data.to_owned(),
            has_data: ev.has_data,
            id: ev.id.map(str::to_owned),
            retry: ev.retry,
        }
    }
}

#[cfg(test)]
mod tests;
