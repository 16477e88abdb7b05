//! Metering streamed responses, and the OpenAI `include_usage` round trip.
//!
//! [`StreamMeter`] is fed every parsed SSE event of a response. It keeps the provider's usage
//! reports (which arrive in provider-specific places and times) and the streamed output text, so
//! that [`StreamMeter::finish`] can return exact usage when it arrived and estimate only the parts
//! that did not.

use memchr::memmem;
use serde_json::Value;

use super::estimate::estimate_text_tokens;
use super::extract::{fill_missing, parts_from_value, stream_delta_text, Dialect, Parts};
use super::Usage;
use crate::providers::ProviderKind;
use crate::sse::SseEvent;

/// Output text kept for estimating. Beyond it only the byte count grows and the estimate scales.
const MAX_KEPT_TEXT: usize = 4 << 20;

/// Accumulates usage and output text from one streamed response. See the module docs.
#[derive(Debug)]
pub struct StreamMeter {
    kind: ProviderKind,
    model: String,
    parts: Parts,
    /// The reported output count is the final one (OpenAI's usage chunk, the Responses API's
    /// `response.completed`, Anthropic's `message_delta`), not a running or initial figure.
    output_final: bool,
    /// Streamed output text, up to [`MAX_KEPT_TEXT`] bytes.
    text: String,
    /// All output text bytes seen, kept or not.
    text_bytes: u64,
    /// `text.len()` and `text_bytes` when the output count was last reported: text after that
    /// point is what a cut stream's estimate must add.
    kept_at_report: usize,
    bytes_at_report: u64,
}

// === impl StreamMeter ===

impl StreamMeter {
    pub fn new(kind: ProviderKind, model: &str) -> Self {
        StreamMeter {
            kind,
            model: model.to_owned(),
            parts: Parts::default(),
            output_final: false,
            text: String::new(),
            text_bytes: 0,
            kept_at_report: 0,
            bytes_at_report: 0,
        }
    }

    /// Feeds one event from [`crate::sse::SseSplitter`].
    pub fn on_sse_event(&mut self, ev: &SseEvent<'_>) {
        if ev.has_data {
            self.on_event(ev.event, ev.data);
        }
    }

    /// Feeds one event by its `event:` name and `data`. Non-JSON data (`[DONE]`) is ignored.
    pub fn on_event(&mut self, event: Option<&str>, data: &str) {
        let trimmed = data.trim_start();
        if !trimmed.starts_with('{') {
            return;
        }
        let Ok(root) = serde_json::from_str::<Value>(trimmed) else {
            return;
        };
        let dialect = self.dialect(event, &root);
        let mut delta = String::new();
        stream_delta_text(dialect, &root, &mut delta);
        self.push_text(&delta);

        let Some((usage_dialect, parts)) = parts_from_value(self.kind, &root) else {
            return;
        };
        if parts.is_empty() {
            return;
        }
        let ty = root.get("type").and_then(Value::as_str);
        let is_final = match usage_dialect {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => true,
            // message_start carries the input count and an initial output count of ~1.
            Dialect::Anthropic => ty != Some("message_start") && event != Some("message_start"),
            // Every chunk carries a running count; the last chunk has a finishReason.
            Dialect::Gemini => has_finish_reason(&root),
        };
        self.parts.merge(parts);
        if parts.output.is_some() {
            self.output_final |= is_final;
            // Text that came in this same event is covered by the count that came with it.
            self.kept_at_report = self.text.len();
            self.bytes_at_report = self.text_bytes;
        }
    }

    /// The usage the provider has reported so far, if any (nothing estimated).
    pub fn reported(&self) -> Option<Usage> {
        (!self.parts.is_empty()).then(|| self.parts.to_usage())
    }

    /// Bytes of output text streamed so far.
    pub fn output_text_bytes(&self) -> u64 {
        self.text_bytes
    }

    /// The usage of the whole response.
    ///
    /// Reported counts are used as they are. Whatever the provider never reported is estimated
    /// (and `estimated` set): the input from `request_body`, the output from the text streamed
    /// after the last output count (all of it if there was none). `complete` says whether the
    /// stream ended normally: the counts depend only on what arrived, but a stream cut before
    /// the provider's final count is always marked estimated, and one whose final usage had
    /// already arrived stays exact.
    pub fn finish(&self, complete: bool, request_body: &[u8]) -> Usage {
        let mut parts = self.parts;
        let tail_bytes = self.text_bytes - self.bytes_at_report;
        let needs_tail = !self.output_final && (tail_bytes > 0 || parts.output.is_none());
        let reported_output = parts.output.unwrap_or(0);
        if needs_tail {
            parts.output = None;
        }
        let tail = &self.text[self.kept_at_report.min(self.text.len())..];
        let mut usage = fill_missing(parts, self.kind, &self.model, request_body, || {
            let kept = tail.len() as u64;
            let estimate = if kept > 0 {
                let e = estimate_text_tokens(self.kind, &self.model, tail);
                (e as u128 * tail_bytes as u128).div_ceil(kept as u128)
            } else if tail_bytes > 0 {
                // Everything after the report was beyond the kept text: ~4 bytes a token.
                tail_bytes.div_ceil(4) as u128
            } else {
                // Nothing was reported and no text came: zero output is a fact.
                return None;
            };
            Some(reported_output.saturating_add(u64::try_from(estimate).unwrap_or(u64::MAX)))
        });
        // A stream cut short before the provider's final count is an estimate, even when every
        // number in it came from the provider: they describe a response that never finished.
        if !complete && !self.output_final {
            usage.estimated = true;
        }
        usage
    }

    fn dialect(&self, event: Option<&str>, root: &Value) -> Dialect {
        match self.kind {
            ProviderKind::Anthropic => return Dialect::Anthropic,
            ProviderKind::Gemini => return Dialect::Gemini,
            _ => {}
        }
        let ty = root
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or("");
        if ty.starts_with("response.") {
            Dialect::OpenAiResponses
        } else if ty.starts_with("message_") || ty.starts_with("content_block_") {
            Dialect::Anthropic
        } else if root.get("candidates").is_some() || root.get("usageMetadata").is_some() {
            Dialect::Gemini
        } else {
            Dialect::OpenAiChat
        }
    }

    fn push_text(&mut self, s: &str) {
        self.text_bytes = self.text_bytes.saturating_add(s.len() as u64);
        let room = MAX_KEPT_TEXT.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
        }
    }
}

fn has_finish_reason(root: &Value) -> bool {
    root.get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c.get("finishReason").is_some()))
}

const INCLUDE_USAGE: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// For an OpenAI chat-completions (or legacy completions) request with `"stream": true` that did
/// not ask for `stream_options.include_usage`, the body with it set; `None` to forward as is.
///
/// When `stream_options` is absent (the usual case) the field is inserted before the final `}`,
/// so every other byte is unchanged. Otherwise the body is re-serialised (field order kept).
/// Only call this for chat/completions endpoints: the Responses API and several compatible
/// servers reject `stream_options`.
pub fn add_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut root: Value = serde_json::from_slice(body).ok()?;
    let obj = root.as_object_mut()?;
    if obj.get("stream") != Some(&Value::Bool(true))
        || !(obj.contains_key("messages") || obj.contains_key("prompt"))
    {
        return None;
    }
    match obj.get_mut("stream_options") {
        None => {
            let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
            if body[end] != b'}' {
                return None;
            }
            let mut out = Vec::with_capacity(body.len() + INCLUDE_USAGE.len());
            out.extend_from_slice(&body[..end]);
            out.extend_from_slice(INCLUDE_USAGE);
            out.extend_from_slice(&body[end..]);
            Some(out)
        }
        Some(Value::Object(opts)) => {
            if opts.get("include_usage") == Some(&Value::Bool(true)) {
                return None;
            }
            opts.insert("include_usage".into(), Value::Bool(true));
            serde_json::to_vec(&root).ok()
        }
        Some(v @ Value::Null) => {
            *v = serde_json::json!({ "include_usage": true });
            serde_json::to_vec(&root).ok()
        }
        // Not ours to fix: let the provider report the client's mistake.
        Some(_) => None,
    }
}

/// Whether a chat-completions stream event's `data` is the usage-only chunk that
/// `include_usage` adds (`"choices": []` and a `usage` object). Azure's leading
/// `prompt_filter_results` chunk also has empty choices but no usage, so it is not matched.
pub fn is_usage_only_chunk(data: &str) -> bool {
    if memmem::find(data.as_bytes(), b"\"usage\"").is_none() {
        return false;
    }
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    obj.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && obj.get("usage").is_some_and(Value::is_object)
}

/// With `include_usage` set, OpenAI also adds `"usage":null` to every other chunk. For an event
/// whose raw bytes contain that field, the bytes without it, so the client receives what it
/// would have received had the proxy not asked for usage; `None` if there is nothing to strip.
///
/// In valid JSON an unescaped `"` only delimits strings, so the byte sequence `,"usage":null`
/// cannot occur inside a string value: removing it always removes exactly that member.
pub fn strip_null_usage(raw_event: &[u8]) -> Option<Vec<u8>> {
    const MIDDLE: &[u8] = br#","usage":null"#;
    const FIRST: &[u8] = br#"{"usage":null,"#;
    let (at, len, keep) = if let Some(at) = memmem::find(raw_event, MIDDLE) {
        (at, MIDDLE.len(), &b""[..])
    } else {
        (memmem::find(raw_event, FIRST)?, FIRST.len(), &b"{"[..])
    };
    let mut out = Vec::with_capacity(raw_event.len() - len + keep.len());
    out.extend_from_slice(&raw_event[..at]);
    out.extend_from_slice(keep);
    out.extend_from_slice(&raw_event[at + len..]);
    Some(out)
}

#[cfg(test)]
mod tests;
