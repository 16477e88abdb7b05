//! Responses on their way back: scanned for secrets and exfiltration links, and pseudonyms put
//! back, in whole JSON bodies and in streams.
//!
//! In a stream, text arrives in pieces (`delta` fields). A placeholder can be split across
//! events, so each field keeps back only the bytes at its end that could still be the start of a
//! placeholder (`<EMA`) or of a link's URL; everything else goes out at once, and no event is
//! held: an event whose text is all held back goes out with that text empty.

use super::json_text::{self, Seg};
use super::pseudonym::Mapping;
use crate::inspect::{Engine, Kind};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest placeholder Airlock makes (`<` + label + `_` + number + `>`), bounding the hold-back.
const MAX_PLACEHOLDER: usize = 64;
/// A markdown link URL is held at most this long while it streams in.
const MAX_LINK_HOLD: usize = 2048;

/// What the output guard did, for the record (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputNote {
    pub rule: String,
    pub kind: &'static str,
    pub action: &'static str,
}

/// Scans model output for secrets and for markdown links that would carry data to an unknown
/// host (the zero-click exfiltration trick), before pseudonyms are restored.
pub struct OutputGuard {
    pub engine: Arc<Engine>,
    /// Lowercased keywords of the secret rules: a streamed token that could still become a
    /// secret is held until it is whole.
    pub secret_keywords: Arc<Vec<String>>,
    pub redact_secrets: bool,
    pub neutralize_links: bool,
    pub warn_only: bool,
    pub link_allowlist: Vec<String>,
}

/// The lowercased keywords of every secret rule, for [`OutputGuard::secret_keywords`].
pub fn secret_keywords(engine: &Engine) -> Vec<String> {
    let mut k: Vec<String> = engine
        .rules()
        .iter()
        .filter(|r| r.kind == Kind::Secret)
        .flat_map(|r| r.keywords.iter().map(|k| k.to_ascii_lowercase()))
        .filter(|k| k.len() >= 3)
        .collect();
    k.sort();
    k.dedup();
    k
}

/// A token longer than this is not held (a secret is shorter; prose must keep moving).
const MAX_TOKEN_HOLD: usize = 512;
/// An unfinished PEM block is held at most this long.
const MAX_PEM_HOLD: usize = 16 * 1024;

impl OutputGuard {
    /// Where the part of streamed `text` that could still grow into a secret begins: an open
    /// PEM block, or a trailing token that holds a secret rule's keyword or is the start of one.
    pub fn partial_secret_start(&self, text: &str) -> Option<usize> {
        if !self.redact_secrets {
            return None;
        }
        if let Some(b) = text.rfind("-----BEGIN") {
            if !text[b..].contains("-----END") && text.len() - b <= MAX_PEM_HOLD {
                return Some(b);
            }
        }
        let start = text
            .rfind(|c: char| {
                c.is_whitespace()
                    || matches!(c, '"' | '\'' | '`' | '(' | ')' | '<' | '>' | ',' | ';')
            })
            .map_or(0, |i| {
                i + text[i..].chars().next().map_or(1, char::len_utf8)
            });
        let token = &text[start..];
        if token.is_empty() || token.len() > MAX_TOKEN_HOLD {
            return None;
        }
        let lower = token.to_ascii_lowercase();
        let risky = self
            .secret_keywords
            .iter()
            .any(|k| lower.contains(k.as_str()) || k.starts_with(lower.as_str()));
        risky.then_some(start)
    }

    /// Returns the text to send if anything changed, and notes what was found.
    pub fn check(&self, text: &str, notes: &mut Vec<OutputNote>) -> Option<String> {
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        self.engine.scan(text, |f| {
            if f.kind == Kind::Secret {
                let act = if self.redact_secrets {
                    "redact"
                } else {
                    "warn"
                };
                notes.push(OutputNote {
                    rule: f.rule_id.to_owned(),
                    kind: "secret",
                    action: act,
                });
                if self.redact_secrets {
                    edits.push((f.span.clone(), format!("[REDACTED:{}]", f.rule_id)));
                }
            }
            true
        });
        for (span, host) in exfil_links(text, &self.link_allowlist) {
            let act = if self.neutralize_links {
                "neutralize"
            } else {
                "warn"
            };
            notes.push(OutputNote {
                rule: format!("exfil-link:{host}"),
                kind: "exfil",
                action: act,
            });
            if self.neutralize_links
                && !edits
                    .iter()
                    .any(|(e, _)| e.start < span.end && span.start < e.end)
            {
                edits.push((span, "#airlock-removed-link".to_owned()));
            }
        }
        if edits.is_empty() || self.warn_only {
            return None;
        }
        edits.sort_by_key(|(s, _)| s.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (span, rep) in edits {
            if span.start < at {
                continue;
            }
            out.push_str(&text[at..span.start]);
            out.push_str(&rep);
            at = span.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

/// Markdown links and images `[..](url)` whose URL has a query string and a host not on the
/// allowlist: the span of the URL and the host.
pub fn exfil_links(text: &str, allow: &[String]) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find("](") {
        let url_start = from + rel + 2;
        let rest = &text[url_start..];
        let end = rest.find([')', ' ', '\n', '"']).unwrap_or(rest.len());
        let url = &rest[..end];
        from = url_start;
        let Some(after_scheme) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            continue;
        };
        let host = after_scheme
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let host = host
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        let has_data = url.contains('?') && url.split('?').nth(1).is_some_and(|q| !q.is_empty());
        let allowed = allow
            .iter()
            .any(|a| host == *a || host.ends_with(&format!(".{a}")));
        if has_data && !allowed && !host.is_empty() {
            out.push((url_start..url_start + end, host));
        }
    }
    out
}

/// Puts pseudonyms back in `text`. `inner_json`: the text is itself JSON source (tool-call
/// arguments), so values are escaped for a JSON string.
pub fn restore_text<'t>(map: &Mapping, text: &'t str, inner_json: bool) -> Cow<'t, str> {
    if !text.contains('<') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if let Some(len) = placeholder_len(&text[i..]) {
                if let Some(v) = map.get(&text[i..i + len]) {
                    out.push_str(&text[at..i]);
                    if inner_json {
                        out.push_str(&json_text::escape_inner(v));
                    } else {
                        out.push_str(v);
                    }
                    i += len;
                    at = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if at == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Length of a complete placeholder `<LABEL_N>` at the start of `s`.
fn placeholder_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len()
        && i < MAX_PLACEHOLDER
        && (b[i].is_ascii_uppercase() || b[i].is_ascii_digit() || b[i] == b'_')
    {
        i += 1;
    }
    (i < b.len() && b[i] == b'>' && i > 3).then_some(i + 1)
}

/// Where the part of `text` that may be the start of a placeholder begins, if anywhere.
fn partial_placeholder_start(text: &str) -> Option<usize> {
    let lt = text.rfind('<')?;
    let tail = &text.as_bytes()[lt + 1..];
    let could_be = tail.len() < MAX_PLACEHOLDER
        && tail
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    could_be.then_some(lt)
}

/// Where an unfinished markdown link URL begins, if the text ends inside one.
fn partial_link_start(text: &str) -> Option<usize> {
    if text.ends_with(']') {
        // Could be the `](` of a link whose `(` is in the next piece.
        return Some(text.len() - 1);
    }
    let open = text.rfind("](")?;
    let url = &text[open + 2..];
    let open_url = !url.contains([')', ' ', '\n']) && text.len() - open <= MAX_LINK_HOLD;
    open_url.then_some(open)
}

/// A whole (non-streamed) JSON response: guard then restore every string; `None` if unchanged.
pub fn restore_json(
    body: &[u8],
    map: Option<&Mapping>,
    guard: Option<&OutputGuard>,
    notes: &mut Vec<OutputNote>,
) -> Option<Vec<u8>> {
    let strings = json_text::strings(body).ok()?;
    let mut edits = Vec::new();
    for s in strings {
        let inner = is_inner_json(&s.path, None);
        let guarded = guard.and_then(|g| g.check(&s.text, notes));
        let text = guarded.as_deref().unwrap_or(&s.text);
        let restored = match map {
            Some(m) => restore_text(m, text, inner),
            None => Cow::Borrowed(text),
        };
        if guarded.is_some() || matches!(restored, Cow::Owned(_)) {
            edits.push((s.span, restored.into_owned()));
        }
    }
    (!edits.is_empty()).then(|| json_text::splice(body, edits))
}

/// Strings whose content is JSON source: tool-call arguments in every provider's shape.
fn is_inner_json(path: &[Seg], event_type: Option<&str>) -> bool {
    match path.last() {
        Some(Seg::Key(k)) if k == "arguments" || k == "partial_json" => true,
        Some(Seg::Key(k)) if k == "delta" && path.len() == 1 => event_type.is_some_and(|t| {
            t.contains("function_call_arguments") || t.contains("custom_tool_call_input")
        }),
        _ => false,
    }
}

/// Whether a string in an event is one piece of a longer streamed text.
fn is_piece(path: &[Seg]) -> bool {
    let has = |name: &str| path.iter().any(|s| matches!(s, Seg::Key(k) if k == name));
    // OpenAI chat `choices[].delta.*`, Anthropic `delta.text|partial_json|thinking`, Responses
    // `delta`, Gemini `candidates[].content.parts[].text`.
    has("delta") || (has("candidates") && matches!(path.last(), Some(Seg::Key(k)) if k == "text"))
}

struct Held {
    text: String,
    /// The last event that carried this field, to send held text in if the stream ends first.
    template: Vec<u8>,
    event_name: Option<String>,
    span: std::ops::Range<usize>,
}

/// Restores (and guards) one streamed response, event by event.
pub struct StreamRestorer {
    map: Option<Arc<Mapping>>,
    guard: Option<OutputGuard>,
    held: BTreeMap<String, Held>,
    pub notes: Vec<OutputNote>,
}

#[derive(serde::Deserialize, Default)]
struct EventIds {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(default)]
    content_index: Option<u64>,
    #[serde(default)]
    item_id: Option<String>,
}

impl StreamRestorer {
    pub fn new(map: Option<Arc<Mapping>>, guard: Option<OutputGuard>) -> StreamRestorer {
        StreamRestorer {
            map,
            guard,
            held: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Whether this restorer can change anything at all (else the stream passes untouched).
    pub fn is_active(&self) -> bool {
        self.map.is_some() || self.guard.is_some()
    }

    /// One complete SSE event in; the bytes to send in its place out (`None`: send it
    /// unchanged).
    pub fn on_event(
        &mut self,
        raw: &[u8],
        event_name: Option<&str>,
        data: &str,
        has_data: bool,
    ) -> Option<Vec<u8>> {
        let emits = self.on_data(event_name, data, has_data)?;
        let mut out = Vec::new();
        for e in emits {
            match e {
                Emit::Held { name, data } => sse_event(&mut out, name.as_deref(), &data),
                Emit::This(None) => out.extend_from_slice(raw),
                Emit::This(Some(new_data)) => {
                    out.extend(rebuild(raw, std::str::from_utf8(&new_data).unwrap_or(data)))
                }
            }
        }
        Some(out)
    }

    /// One element of a streamed JSON array (Gemini without `alt=sse`) in; the elements to send
    /// in its place out (`None`: send it unchanged).
    pub fn on_element(&mut self, element: &str) -> Option<Vec<Vec<u8>>> {
        let emits = self.on_data(None, element, true)?;
        Some(
            emits
                .into_iter()
                .map(|e| match e {
                    Emit::Held { data, .. } => data,
                    Emit::This(None) => element.as_bytes().to_vec(),
                    Emit::This(Some(d)) => d,
                })
                .collect(),
        )
    }

    /// The stream ended: whatever is still held goes out, in events shaped like the last one
    /// that carried each field.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.flush_all() {
            if let Emit::Held { name, data } = e {
                sse_event(&mut out, name.as_deref(), &data);
            }
        }
        out
    }

    /// [`StreamRestorer::finish`] for a JSON array stream: the held text as extra elements.
    pub fn finish_elements(&mut self) -> Vec<Vec<u8>> {
        self.flush_all()
            .into_iter()
            .filter_map(|e| match e {
                Emit::Held { data, .. } => Some(data),
                Emit::This(_) => None,
            })
            .collect()
    }

    /// The core, independent of framing. Held text is kept per text stream (field path plus the
    /// event's choice/block/item ids); an event that carries no text (a ping, a keep-alive
    /// comment, an empty delta, a block start) passes by without touching it. Only an event
    /// that ends text (a stop, a finish reason, `[DONE]`, something unreadable) sends what is
    /// held first, so the client never gets text after its block was closed.
    fn on_data(
        &mut self,
        event_name: Option<&str>,
        data: &str,
        has_data: bool,
    ) -> Option<Vec<Emit>> {
        if !has_data {
            return None; // a comment or keep-alive: carries no text, ends nothing
        }
        let strings = if data.starts_with('{') {
            json_text::strings(data.as_bytes()).ok()
        } else {
            None
        };
        let Some(strings) = strings else {
            // `[DONE]` or something unreadable: what is held goes out before it.
            return self.flush_before();
        };
        let pieces: Vec<_> = strings.iter().filter(|s| is_piece(&s.path)).collect();
        let has_lt = data.contains('<') || data.contains("](");
        if pieces.is_empty() {
            // Whole strings in it (e.g. `response.output_text.done`) are guarded and restored.
            let whole = if has_lt || self.guard.is_some() {
                self.rewrite_whole(data)
            } else {
                None
            };
            // Nothing held, nothing to flush: the event is not parsed to ask.
            let mut out = if !self.held.is_empty() && ends_text(event_name, data) {
                self.flush_all()
            } else {
                Vec::new()
            };
            if whole.is_none() && out.is_empty() {
                return None;
            }
            out.push(Emit::This(whole.map(String::into_bytes)));
            return Some(out);
        }
        let ids: EventIds = serde_json::from_str(data).unwrap_or_default();
        let id_suffix = format!(
            "|{:?}|{:?}|{:?}|{:?}",
            ids.index, ids.output_index, ids.content_index, ids.item_id
        );
        let mut edits = Vec::new();
        for s in pieces {
            let key = format!("{}{id_suffix}", json_text::path_string(&s.path));
            let inner = is_inner_json(&s.path, ids.kind.as_deref());
            let mut combined = self.held.remove(&key).map(|h| h.text).unwrap_or_default();
            let had_held = !combined.is_empty();
            combined.push_str(&s.text);
            let mut cut = combined.len();
            if self.map.is_some() {
                if let Some(p) = partial_placeholder_start(&combined) {
                    cut = cut.min(p);
                }
            }
            if let Some(g) = &self.guard {
                if g.neutralize_links {
                    if let Some(p) = partial_link_start(&combined) {
                        cut = cut.min(p);
                    }
                }
                if let Some(p) = g.partial_secret_start(&combined) {
                    cut = cut.min(p);
                }
            }
            let (emit, keep) = combined.split_at(cut);
            let guarded = self
                .guard
                .as_ref()
                .and_then(|g| g.check(emit, &mut self.notes));
            let emit_text = guarded.as_deref().unwrap_or(emit);
            let restored = match &self.map {
                Some(m) => restore_text(m, emit_text, inner),
                None => Cow::Borrowed(emit_text),
            };
            if !keep.is_empty() {
                self.held.insert(
                    key,
                    Held {
                        text: keep.to_owned(),
                        template: data.as_bytes().to_vec(),
                        event_name: event_name.map(str::to_owned),
                        span: s.span.clone(),
                    },
                );
            }
            if had_held
                || !keep.is_empty()
                || guarded.is_some()
                || matches!(restored, Cow::Owned(_))
            {
                edits.push((s.span.clone(), restored.into_owned()));
            }
        }
        if edits.is_empty() {
            return None;
        }
        Some(vec![Emit::This(Some(json_text::splice(
            data.as_bytes(),
            edits,
        )))])
    }

    fn flush_before(&mut self) -> Option<Vec<Emit>> {
        if self.held.is_empty() {
            return None;
        }
        let mut out = self.flush_all();
        out.push(Emit::This(None));
        Some(out)
    }

    fn flush_all(&mut self) -> Vec<Emit> {
        let mut out = Vec::new();
        for (_, h) in std::mem::take(&mut self.held) {
            let inner = h.template.windows(9).any(|w| w == b"arguments")
                || h.template.windows(12).any(|w| w == b"partial_json");
            let guarded = self
                .guard
                .as_ref()
                .and_then(|g| g.check(&h.text, &mut self.notes));
            let text = guarded.as_deref().unwrap_or(&h.text);
            let restored = match &self.map {
                Some(m) => restore_text(m, text, inner).into_owned(),
                None => text.to_owned(),
            };
            out.push(Emit::Held {
                name: h.event_name,
                data: json_text::splice(&h.template, vec![(h.span, restored)]),
            });
        }
        out
    }

    fn rewrite_whole(&mut self, data: &str) -> Option<String> {
        let changed = restore_json(
            data.as_bytes(),
            self.map.as_deref(),
            self.guard.as_ref(),
            &mut self.notes,
        )?;
        String::from_utf8(changed).ok()
    }
}

/// What goes out in place of one event: held text flushed in an event shaped like the last one
/// that carried it, or the event itself (unchanged, or with new data).
enum Emit {
    Held { name: Option<String>, data: Vec<u8> },
    This(Option<Vec<u8>>),
}

fn sse_event(out: &mut Vec<u8>, name: Option<&str>, data: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Whether an event without text ends a text stream, so what is held must go out before it:
/// OpenAI's `finish_reason`, Gemini's `finishReason`, Anthropic's `content_block_stop`,
/// `message_delta`, `message_stop` and `error`, the Responses API's `*.done`, `*.completed`,
/// `*.failed`, `*.incomplete`. Anything else (a ping, an empty delta, a start) does not.
fn ends_text(event_name: Option<&str>, data: &str) -> bool {
    let ending = |t: &str| {
        [
            "stop",
            "done",
            "complete",
            "fail",
            "incomplete",
            "error",
            "message_delta",
        ]
        .iter()
        .any(|w| t.contains(w))
    };
    if event_name.is_some_and(ending) {
        return true;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        return true;
    };
    if v.get("type").and_then(|t| t.as_str()).is_some_and(ending) || v.get("error").is_some() {
        return true;
    }
    let finished = |list: &str, field: &str| {
        v.get(list)
            .and_then(|c| c.as_array())
            .is_some_and(|a| a.iter().any(|c| c.get(field).is_some_and(|f| !f.is_null())))
    };
    finished("choices", "finish_reason") || finished("candidates", "finishReason")
}

/// The event's raw bytes with its `data:` line(s) replaced by one line holding `data`.
fn rebuild(raw: &[u8], data: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let crlf = text.contains("\r\n");
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(raw.len() + 32);
    let mut wrote_data = false;
    for line in text.split(nl) {
        if line.starts_with("data:") {
            if !wrote_data {
                out.push_str("data: ");
                out.push_str(data);
                out.push_str(nl);
                wrote_data = true;
            }
        } else if !line.is_empty() {
            out.push_str(line);
            out.push_str(nl);
        }
    }
    out.push_str(nl);
    out.into_bytes()
}

#[cfg(test)]
mod tests;
