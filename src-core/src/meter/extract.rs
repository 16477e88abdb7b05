//! Reading usage blocks and output text out of each provider's JSON.
//!
//! Every provider counts differently; this is the one place that knows how, and converts to the
//! normalised [`Usage`] (whole prompt in `input_tokens`, cache reads/writes as parts of it; whole
//! output in `output_tokens`, reasoning as part of it).

use serde_json::Value;

use super::estimate::{estimate_input_tokens, estimate_text_tokens};
use super::Usage;
use crate::providers::ProviderKind;

/// Usage fields as reported, each possibly missing. Streams fill these in piece by piece.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Parts {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cached: Option<u64>,
    pub cache_write: Option<u64>,
    pub reasoning: Option<u64>,
}

// === impl Parts ===

impl Parts {
    pub fn is_empty(&self) -> bool {
        *self == Parts::default()
    }

    /// Later reports win field by field (streams repeat or refine their counts).
    pub fn merge(&mut self, later: Parts) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cached = later.cached.or(self.cached);
        self.cache_write = later.cache_write.or(self.cache_write);
        self.reasoning = later.reasoning.or(self.reasoning);
    }

    /// A usage from reported parts only (missing parts count as zero, nothing estimated).
    pub fn to_usage(self) -> Usage {
        Usage {
            input_tokens: self.input.unwrap_or(0),
            output_tokens: self.output.unwrap_or(0),
            cached_input_tokens: self.cached.unwrap_or(0),
            cache_write_tokens: self.cache_write.unwrap_or(0),
            reasoning_tokens: self.reasoning.unwrap_or(0),
            estimated: false,
        }
        .normalised()
    }
}

/// Which counting convention a usage block follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Chat completions, legacy completions, embeddings and most OpenAI-compatible APIs:
    /// `prompt_tokens` includes `prompt_tokens_details.cached_tokens`.
    OpenAiChat,
    /// Responses API: `input_tokens` includes `input_tokens_details.cached_tokens`.
    OpenAiResponses,
    /// Messages API: `input_tokens` excludes cache reads and cache writes.
    Anthropic,
    /// `usageMetadata`: `promptTokenCount` includes `cachedContentTokenCount`, and
    /// `thoughtsTokenCount` is billed as output but not counted in `candidatesTokenCount`.
    Gemini,
}

pub(super) fn num(v: &Value, key: &str) -> Option<u64> {
    let v = v.get(key)?;
    v.as_u64().or_else(|| {
        // Some compatible servers send `12.0`; accept whole, finite, non-negative floats only.
        let f = v.as_f64()?;
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 1e18).then_some(f as u64)
    })
}

fn path_num(v: &Value, outer: &str, key: &str) -> Option<u64> {
    num(v.get(outer)?, key)
}

/// Reads one usage object in the given dialect.
pub(super) fn parts_from_usage(dialect: Dialect, u: &Value) -> Parts {
    if !u.is_object() {
        return Parts::default();
    }
    match dialect {
        Dialect::OpenAiChat => Parts {
            input: num(u, "prompt_tokens"),
            output: num(u, "completion_tokens"),
            // DeepSeek reports its cache hits at the top level instead of in the details.
            cached: path_num(u, "prompt_tokens_details", "cached_tokens")
                .or_else(|| num(u, "prompt_cache_hit_tokens")),
            cache_write: None,
            reasoning: path_num(u, "completion_tokens_details", "reasoning_tokens"),
        },
        Dialect::OpenAiResponses => Parts {
            input: num(u, "input_tokens"),
            output: num(u, "output_tokens"),
            cached: path_num(u, "input_tokens_details", "cached_tokens"),
            cache_write: None,
            reasoning: path_num(u, "output_tokens_details", "reasoning_tokens"),
        },
        Dialect::Anthropic => {
            let plain = num(u, "input_tokens");
            let read = num(u, "cache_read_input_tokens");
            let write = num(u, "cache_creation_input_tokens");
            let input = match (plain, read, write) {
                (None, None, None) => None,
                _ => Some(
                    plain
                        .unwrap_or(0)
                        .saturating_add(read.unwrap_or(0))
                        .saturating_add(write.unwrap_or(0)),
                ),
            };
            Parts {
                input,
                output: num(u, "output_tokens"),
                cached: read.or(input.map(|_| 0)),
                cache_write: write.or(input.map(|_| 0)),
                reasoning: None,
            }
        }
        Dialect::Gemini => {
            let prompt = num(u, "promptTokenCount");
            let tool_prompt = num(u, "toolUsePromptTokenCount");
            let candidates = num(u, "candidatesTokenCount");
            let thoughts = num(u, "thoughtsTokenCount");
            let input = match (prompt, tool_prompt) {
                (None, None) => None,
                _ => Some(prompt.unwrap_or(0).saturating_add(tool_prompt.unwrap_or(0))),
            };
            let output = match (candidates, thoughts) {
                (None, None) => None,
                _ => Some(
                    candidates
                        .unwrap_or(0)
                        .saturating_add(thoughts.unwrap_or(0)),
                ),
            };
            Parts {
                input,
                output,
                cached: num(u, "cachedContentTokenCount"),
                cache_write: None,
                reasoning: thoughts,
            }
        }
    }
}

/// Which dialect a usage object with `input_tokens`/`output_tokens` speaks: Anthropic and the
/// Responses API share the names but not the meaning.
fn input_tokens_dialect(kind: ProviderKind, root: &Value, u: &Value) -> Dialect {
    let anthropic_shape = root.get("type").and_then(Value::as_str) == Some("message")
        || u.get("cache_read_input_tokens").is_some()
        || u.get("cache_creation_input_tokens").is_some();
    if kind == ProviderKind::Anthropic
        || (anthropic_shape && u.get("input_tokens_details").is_none())
    {
        Dialect::Anthropic
    } else {
        Dialect::OpenAiResponses
    }
}

/// Finds and reads the usage in one JSON document (a whole response, or one stream event).
pub(super) fn parts_from_value(kind: ProviderKind, root: &Value) -> Option<(Dialect, Parts)> {
    if let Some(u) = root.get("usageMetadata").filter(|u| u.is_object()) {
        return Some((Dialect::Gemini, parts_from_usage(Dialect::Gemini, u)));
    }
    // Responses API stream events wrap the response; Anthropic's message_start wraps the message;
    // Groq puts stream usage under `x_groq`.
    let holder = [
        Some(root),
        root.get("response"),
        root.get("message"),
        root.get("x_groq"),
    ]
    .into_iter()
    .flatten()
    .find(|h| h.get("usage").is_some_and(Value::is_object))?;
    let u = holder.get("usage")?;
    let dialect = if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        Dialect::OpenAiChat
    } else {
        input_tokens_dialect(kind, holder, u)
    };
    Some((dialect, parts_from_usage(dialect, u)))
}

/// The provider-reported usage of a whole (non-streamed) JSON response body, if it has one.
///
/// Handles OpenAI chat completions, legacy completions, embeddings, the Responses API, Anthropic
/// Messages, Gemini `usageMetadata`, and OpenAI-compatible variants (DeepSeek cache hits, Groq).
/// `kind` decides the meaning of `usage.input_tokens`, which Anthropic and OpenAI's Responses API
/// count differently.
pub fn usage_from_json(kind: ProviderKind, body: &[u8]) -> Option<Usage> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let (_, parts) = parts_from_value(kind, &root)?;
    (!parts.is_empty()).then(|| parts.to_usage())
}

/// The reported usage of a whole response, or an estimate when the provider sent none (some
/// Gemini embedding responses, compatible servers that omit `usage`). Reported parts are kept and
/// only the missing ones estimated.
pub fn usage_or_estimate(
    kind: ProviderKind,
    model: &str,
    request_body: &[u8],
    response_body: &[u8],
) -> Usage {
    let root: Option<Value> = serde_json::from_slice(response_body).ok();
    let parts = root
        .as_ref()
        .and_then(|r| parts_from_value(kind, r))
        .map(|(_, p)| p)
        .unwrap_or_default();
    if parts.input.is_some() && parts.output.is_some() {
        return parts.to_usage();
    }
    let mut text = String::new();
    if let Some(root) = &root {
        response_output_text(root, &mut text);
    }
    fill_missing(parts, kind, model, request_body, || {
        (!text.is_empty()).then(|| estimate_text_tokens(kind, model, &text))
    })
}

/// Completes reported parts with estimates for the missing input/output counts. The output
/// estimate is `None` when there was no output text at all: zero output is then a fact, not an
/// estimate.
pub(super) fn fill_missing(
    parts: Parts,
    kind: ProviderKind,
    model: &str,
    request_body: &[u8],
    output_estimate: impl FnOnce() -> Option<u64>,
) -> Usage {
    let mut usage = parts.to_usage();
    if parts.input.is_none() {
        usage.input_tokens = estimate_input_tokens(kind, model, request_body);
        usage.estimated = true;
    }
    if parts.output.is_none() {
        if let Some(n) = output_estimate() {
            usage.output_tokens = n;
            usage.estimated = true;
        }
    }
    usage.normalised()
}

fn push_str(out: &mut String, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str) {
        out.push_str(s);
    }
}

/// Pushes a tool call's arguments, whether sent as a JSON string or as an object.
fn push_json(out: &mut String, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) => out.push_str(s),
        Some(v @ (Value::Object(_) | Value::Array(_))) => out.push_str(&v.to_string()),
        _ => {}
    }
}

fn each<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// Collects the generated text of a whole response (for estimating when usage is missing).
fn response_output_text(root: &Value, out: &mut String) {
    // OpenAI chat / legacy completions.
    for choice in each(root, "choices") {
        push_str(out, choice.get("text"));
        if let Some(msg) = choice.get("message") {
            match msg.get("content") {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Array(parts)) => {
                    parts.iter().for_each(|p| push_str(out, p.get("text")))
                }
                _ => {}
            }
            push_str(out, msg.get("reasoning_content"));
            push_str(out, msg.get("refusal"));
            for call in each(msg, "tool_calls") {
                push_json(out, call.get("function").and_then(|f| f.get("arguments")));
            }
        }
    }
    // Responses API.
    for item in each(root, "output") {
        for part in each(item, "content") {
            push_str(out, part.get("text"));
        }
        for part in each(item, "summary") {
            push_str(out, part.get("text"));
        }
        push_json(out, item.get("arguments"));
    }
    // Anthropic Messages.
    for block in each(root, "content") {
        push_str(out, block.get("text"));
        push_str(out, block.get("thinking"));
        push_json(out, block.get("input"));
    }
    // Gemini.
    for cand in each(root, "candidates") {
        if let Some(content) = cand.get("content") {
            gemini_parts_text(content, out);
        }
    }
}

pub(super) fn gemini_parts_text(content: &Value, out: &mut String) {
    for part in each(content, "parts") {
        push_str(out, part.get("text"));
        push_json(out, part.get("functionCall").and_then(|c| c.get("args")));
    }
}

/// Appends the output text carried by one stream event (deltas only, never the final summaries
/// that repeat them, so nothing is counted twice).
pub(super) fn stream_delta_text(dialect: Dialect, root: &Value, out: &mut String) {
    match dialect {
        Dialect::OpenAiChat => {
            for choice in each(root, "choices") {
                push_str(out, choice.get("text"));
                let Some(delta) = choice.get("delta") else {
                    continue;
                };
                push_str(out, delta.get("content"));
                push_str(out, delta.get("reasoning_content"));
                push_str(out, delta.get("reasoning"));
                push_str(out, delta.get("refusal"));
                for call in each(delta, "tool_calls") {
                    push_str(out, call.get("function").and_then(|f| f.get("arguments")));
                }
                push_str(
                    out,
                    delta.get("function_call").and_then(|f| f.get("arguments")),
                );
            }
        }
        Dialect::OpenAiResponses => {
            let ty = root.get("type").and_then(Value::as_str).unwrap_or("");
            // Audio deltas are base64, not text.
            if ty.ends_with(".delta") && !ty.contains("audio") {
                push_str(out, root.get("delta"));
            }
        }
        Dialect::Anthropic => {
            if let Some(delta) = root.get("delta") {
                push_str(out, delta.get("text"));
                push_str(out, delta.get("partial_json"));
                push_str(out, delta.get("thinking"));
            }
        }
        Dialect::Gemini => {
            for cand in each(root, "candidates") {
                if let Some(content) = cand.get("content") {
                    gemini_parts_text(content, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
