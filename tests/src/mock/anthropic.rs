//! Anthropic wire format: Messages (JSON and named SSE events), token counting, models, errors.

use super::text::{self, Usage};
use super::{Call, Reply};
use crate::sse::{encode, LineEnd};
use bytes::Bytes;
use serde_json::{json, Value};

pub fn error(status: u16, message: &str) -> Reply {
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.uncached_input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "output_tokens": u.output
    })
}

fn event(name: &str, v: &Value) -> Bytes {
    encode(Some(name), &v.to_string(), LineEnd::Lf)
}

pub fn messages(call: &Call) -> Reply {
    let user_text = text::last_user_text(call.body.get("messages"));
    let id = format!("msg_mock{}", call.id);
    let model = call
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-sonnet-4-5");
    let stream = call
        .body
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tool_name = call
        .body
        .pointer("/tools/0/name")
        .and_then(Value::as_str)
        .unwrap_or("echo");
    let tool_id = format!("toolu_mock{}", call.id);

    let (block, output_text, stop_reason) = if call.scenario.tool_call {
        let input = json!({ "text": user_text });
        let args = input.to_string();
        (
            json!({"type": "tool_use", "id": tool_id, "name": tool_name, "input": input}),
            args,
            "tool_use",
        )
    } else {
        let answer = text::answer(&user_text);
        (json!({"type": "text", "text": answer}), answer, "end_turn")
    };
    let usage = Usage {
        uncached_input: text::input_tokens(&user_text),
        cached: call.scenario.cached,
        cache_write: call.scenario.cache_write,
        output: text::word_count(&output_text),
        reasoning: 0,
    };
    let message = |content: Value, stop: Value, usage: Value| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage
        })
    };

    if !stream {
        return Reply::json(
            200,
            message(json!([block]), Value::from(stop_reason), usage_json(usage)),
        );
    }

    let start_usage = usage_json(Usage { output: 1, ..usage });
    let mut events = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": message(json!([]), Value::Null, start_usage)}),
    )];
    let empty_block = if call.scenario.tool_call {
        json!({"type": "tool_use", "id": tool_id, "name": tool_name, "input": {}})
    } else {
        json!({"type": "text", "text": ""})
    };
    events.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": empty_block}),
    ));
    events.push(event("ping", &json!({"type": "ping"})));
    let deltas: Vec<Value> = if call.scenario.tool_call {
        call.arg_deltas(&output_text)
            .into_iter()
            .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
            .collect()
    } else {
        call.text_deltas(&output_text)
            .into_iter()
            .map(|p| json!({"type": "text_delta", "text": p}))
            .collect()
    };
    for d in deltas {
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": d}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": usage_json(usage)
        }),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    Reply::sse(events)
}

pub fn count_tokens(call: &Call) -> Reply {
    let user_text = text::last_user_text(call.body.get("messages"));
    Reply::json(200, json!({"input_tokens": text::input_tokens(&user_text)}))
}

pub fn models() -> Reply {
    let data: Vec<Value> = ["claude-sonnet-4-5", "claude-haiku-4-5"]
        .iter()
        .map(|id| {
            json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    Reply::json(
        200,
        json!({"data": data, "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"}),
    )
}
