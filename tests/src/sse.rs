//! Server-Sent Events framing: the encoder the mock writes with, and an incremental parser the
//! tests read with.
//!
//! The parser accepts `\n`, `\r\n` and `\r` line endings (Gemini frames its events with `\r\n`)
//! and can be fed arbitrary byte chunks, so an event split across TCP reads is handled.

use bytes::{Bytes, BytesMut};

/// Line ending used between fields and after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    Lf,
    CrLf,
}

impl LineEnd {
    fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf => "\n",
            LineEnd::CrLf => "\r\n",
        }
    }
}

/// Encode one event. `event` is the optional `event:` name; `data` may span several lines and
/// is then written as several `data:` fields, as the SSE spec requires.
pub fn encode(event: Option<&str>, data: &str, end: LineEnd) -> Bytes {
    let nl = end.as_str();
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = event {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str(nl);
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push_str(nl);
    }
    out.push_str(nl);
    Bytes::from(out)
}

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` fields joined with `\n`.
    pub data: String,
}

impl Event {
    /// The data parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// Incremental SSE parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    current: Event,
    has_field: bool,
    data_lines: usize,
    /// A `\r` ended the previous chunk; a `\n` at the start of the next chunk belongs to it.
    pending_cr: bool,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed a chunk and return every event it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line = self.buf.split_to(pos);
            let terminator = self.buf.split_to(1);
            if terminator[0] == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => {
                        let _lf = self.buf.split_to(1);
                    }
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            if let Some(ev) = self.line(&line) {
                events.push(ev);
            }
        }
        events
    }

    fn line(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            if !self.has_field {
                return None;
            }
            self.has_field = false;
            self.data_lines = 0;
            return Some(std::mem::take(&mut self.current));
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => {
                self.current.event = Some(value.to_owned());
                self.has_field = true;
            }
            "data" => {
                if self.data_lines > 0 {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.data_lines += 1;
                self.has_field = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut all = Vec::new();
        all.extend_from_slice(&encode(Some("message_start"), r#"{"a":1}"#, LineEnd::Lf));
        all.extend_from_slice(b": keep-alive comment\n\n");
        all.extend_from_slice(&encode(None, "line one\nline two", LineEnd::CrLf));
        all.extend_from_slice(&encode(None, "[DONE]", LineEnd::Lf));
        all
    }

    fn expected() -> Vec<Event> {
        vec![
            Event {
                event: Some("message_start".into()),
                data: r#"{"a":1}"#.into(),
            },
            Event {
                event: None,
                data: "line one\nline two".into(),
            },
            Event {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn encode_writes_named_event_and_blank_line() {
        let got = encode(Some("ping"), r#"{"type": "ping"}"#, LineEnd::Lf);
        assert_eq!(&got[..], b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
        let got = encode(None, "x", LineEnd::CrLf);
        assert_eq!(&got[..], b"data: x\r\n\r\n");
    }

    #[test]
    fn parses_whole_stream() {
        let mut p = Parser::new();
        assert_eq!(p.feed(&sample()), expected());
    }

    #[test]
    fn parses_stream_split_at_every_offset() {
        let all = sample();
        for cut in 0..=all.len() {
            let mut p = Parser::new();
            let mut got = p.feed(&all[..cut]);
            got.extend(p.feed(&all[cut..]));
            assert_eq!(got, expected(), "split at byte {cut}");
        }
    }

    #[test]
    fn parses_stream_fed_byte_by_byte() {
        let mut p = Parser::new();
        let got: Vec<Event> = sample().iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, expected());
    }
}
