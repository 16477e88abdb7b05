//! Gemini wire format: generateContent, streamGenerateContent (SSE with `alt=sse`, otherwise a
//! streamed JSON array), embedContent, countTokens, and Google's error shape.
//!
//! Gemini's SSE events end in `\r\n\r\n`, and `usageMetadata` rides on every chunk with running
//! totals; `cachedContentTokenCount` and `thoughtsTokenCount` appear only when non-zero.

use super::text::{self, Usage};
use super::{Call, Reply};
use crate::sse::{encode, LineEnd};
use bytes::Bytes;
use serde_json::{json, Value};

pub fn status_name(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        413 | 429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        400..=499 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": status, "message": message, "status": status_name(status)}}),
    )
}

fn usage_json(u: Usage, output_so_far: u64) -> Value {
    let prompt = u.uncached_input + u.cached;
    let mut v = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": output_so_far,
        "totalTokenCount": prompt + output_so_far + u.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if u.cached > 0 {
        v["cachedContentTokenCount"] = Value::from(u.cached);
    }
    if u.reasoning > 0 {
        v["thoughtsTokenCount"] = Value::from(u.reasoning);
    }
    v
}

fn user_text(call: &Call) -> String {
    text::last_user_text(call.body.get("contents"))
}

fn response(call: &Call, parts: Value, finish: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = Value::from(f);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": call.model,
        "responseId": format!("mockresp{}", call.id)
    })
}

/// `generateContent` and `streamGenerateContent`.
pub fn generate(call: &Call, stream: bool) -> Reply {
    let user_text = user_text(call);
    let tool_name = call
        .body
        .pointer("/tools/0/functionDeclarations/0/name")
        .and_then(Value::as_str)
        .unwrap_or("echo");
    let (pieces, output_text): (Vec<Value>, String) = if call.scenario.tool_call {
        let args = json!({ "text": user_text });
        let s = args.to_string();
        (
            vec![json!([{"functionCall": {"name": tool_name, "args": args}}])],
            s,
        )
    } else {
        let answer = text::answer(&user_text);
        let parts = if stream {
            call.text_deltas(&answer)
                .into_iter()
                .map(|d| json!([{ "text": d }]))
                .collect()
        } else {
            vec![json!([{ "text": answer }])]
        };
        (parts, answer)
    };
    let usage = Usage {
        uncached_input: text::input_tokens(&user_text),
        cached: call.scenario.cached,
        cache_write: 0,
        output: text::word_count(&output_text),
        reasoning: call.scenario.reasoning,
    };
    if !stream {
        let parts = pieces.into_iter().next().unwrap_or_else(|| json!([]));
        return Reply::json(
            200,
            response(call, parts, Some("STOP"), usage_json(usage, usage.output)),
        );
    }

    let n = pieces.len();
    let mut so_far = String::new();
    let chunks: Vec<Value> = pieces
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            if let Some(t) = parts.pointer("/0/text").and_then(Value::as_str) {
                so_far.push_str(t);
            } else {
                so_far = output_text.clone();
            }
            let last = i + 1 == n;
            let out = text::word_count(&so_far);
            response(call, parts, last.then_some("STOP"), usage_json(usage, out))
        })
        .collect();

    let sse = call
        .query
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    if sse {
        return Reply::sse(
            chunks
                .iter()
                .map(|c| encode(None, &c.to_string(), LineEnd::CrLf))
                .collect(),
        );
    }
    // Without alt=sse the answer is one JSON array whose elements arrive one by one.
    let mut events: Vec<Bytes> = Vec::with_capacity(n + 1);
    for (i, c) in chunks.iter().enumerate() {
        let sep = if i == 0 { "[" } else { "\n,\r\n" };
        events.push(Bytes::from(format!("{sep}{c}")));
    }
    events.push(Bytes::from_static(b"]"));
    Reply::stream("application/json; charset=UTF-8", events)
}

pub fn embed_content(call: &Call) -> Reply {
    let t = text::content_text(call.body.pointer("/content/parts").unwrap_or(&Value::Null));
    let dims = call
        .body
        .get("outputDimensionality")
        .and_then(Value::as_u64)
        .unwrap_or(8) as usize;
    Reply::json(
        200,
        json!({"embedding": {"values": text::embedding(&t, dims)}}),
    )
}

pub fn count_tokens(call: &Call) -> Reply {
    let t = user_text(call);
    let n = text::input_tokens(&t);
    Reply::json(
        200,
        json!({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}),
    )
}
