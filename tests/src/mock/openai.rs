//! OpenAI wire format: Chat Completions, Responses, Embeddings, Models, and its error shape.

use super::text::{self, Usage};
use super::{Call, Reply};
use crate::sse::{encode, LineEnd};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

pub fn error(status: u16, message: &str) -> Reply {
    let (kind, code) = match status {
        401 => ("invalid_request_error", Value::from("invalid_api_key")),
        403 => (
            "invalid_request_error",
            Value::from("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", Value::from("model_not_found")),
        429 => ("requests", Value::from("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    Reply::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn model(call: &Call) -> String {
    call.body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_owned()
}

fn usage_chat(u: Usage) -> Value {
    let prompt = u.uncached_input + u.cached;
    let completion = u.output + u.reasoning;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn usage_responses(u: Usage) -> Value {
    let input = u.uncached_input + u.cached;
    let output = u.output + u.reasoning;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + output
    })
}

fn usage_for(call: &Call, user_text: &str, output_text: &str) -> Usage {
    Usage {
        uncached_input: text::input_tokens(user_text),
        cached: call.scenario.cached,
        cache_write: 0,
        output: text::word_count(output_text),
        reasoning: call.scenario.reasoning,
    }
}

fn data(v: &Value) -> Bytes {
    encode(None, &v.to_string(), LineEnd::Lf)
}

/// Name of the first function tool in a Chat Completions request, or `echo`.
fn chat_tool_name(body: &Value) -> String {
    body.pointer("/tools/0/function/name")
        .and_then(Value::as_str)
        .unwrap_or("echo")
        .to_owned()
}

fn tool_arguments(user_text: &str) -> String {
    json!({ "text": user_text }).to_string()
}

// === Chat Completions ===

pub fn chat_completions(call: &Call) -> Reply {
    let user_text = text::last_user_text(call.body.get("messages"));
    let id = format!("chatcmpl-mock{}", call.id);
    let created = call.created;
    let model = model(call);
    let stream = call
        .body
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let call_id = format!("call_mock{}", call.id);

    if call.scenario.tool_call {
        let name = chat_tool_name(call.body);
        let args = tool_arguments(&user_text);
        let usage = usage_for(call, &user_text, &args);
        if !stream {
            return Reply::json(
                200,
                json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": [{
                        "index": 0,
                        "message": {
                            "role": "assistant", "content": null, "refusal": null, "annotations": [],
                            "tool_calls": [{"id": call_id, "type": "function",
                                            "function": {"name": name, "arguments": args}}]
                        },
                        "logprobs": null,
                        "finish_reason": "tool_calls"
                    }],
                    "usage": usage_chat(usage),
                    "service_tier": "default"
                }),
            );
        }
        let mut deltas = vec![json!({
            "role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                            "function": {"name": name, "arguments": ""}}]
        })];
        for piece in call.arg_deltas(&args) {
            deltas.push(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}));
        }
        return chat_stream(call, &id, &model, deltas, "tool_calls", usage);
    }

    let answer = text::answer(&user_text);
    let usage = usage_for(call, &user_text, &answer);
    if !stream {
        return Reply::json(
            200,
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": null, "annotations": []},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": usage_chat(usage),
                "service_tier": "default"
            }),
        );
    }
    let mut deltas = vec![json!({"role": "assistant", "content": "", "refusal": null})];
    for piece in call.text_deltas(&answer) {
        deltas.push(json!({"content": piece}));
    }
    chat_stream(call, &id, &model, deltas, "stop", usage)
}

fn chat_stream(
    call: &Call,
    id: &str,
    model: &str,
    deltas: Vec<Value>,
    finish: &str,
    usage: Usage,
) -> Reply {
    let include_usage = call
        .body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": id, "object": "chat.completion.chunk", "created": call.created, "model": model,
            "system_fingerprint": "fp_mock", "service_tier": "default", "choices": choices
        });
        if include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        data(&v)
    };
    let mut events: Vec<Bytes> = deltas
        .into_iter()
        .map(|d| {
            chunk(
                json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": null}]),
                None,
            )
        })
        .collect();
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        None,
    ));
    if include_usage {
        events.push(chunk(json!([]), Some(usage_chat(usage))));
    }
    events.push(encode(None, "[DONE]", LineEnd::Lf));
    Reply::sse(events)
}

// === Responses ===

/// The user text of a Responses API `input`: a string, or the last user message item.
fn responses_user_text(body: &Value) -> String {
    match body.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(items @ Value::Array(_)) => text::last_user_text(Some(items)),
        _ => String::new(),
    }
}

pub fn responses(call: &Call) -> Reply {
    let user_text = responses_user_text(call.body);
    let resp_id = format!("resp_mock{}", call.id);
    let msg_id = format!("msg_mock{}", call.id);
    let model = model(call);
    let stream = call
        .body
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let (final_item, output_text, usage) = if call.scenario.tool_call {
        let name = call
            .body
            .pointer("/tools/0/name")
            .and_then(Value::as_str)
            .unwrap_or("echo");
        let args = tool_arguments(&user_text);
        let item = json!({
            "type": "function_call", "id": format!("fc_mock{}", call.id),
            "call_id": format!("call_mock{}", call.id), "name": name,
            "arguments": args, "status": "completed"
        });
        let usage = usage_for(call, &user_text, &args);
        (item, args, usage)
    } else {
        let answer = text::answer(&user_text);
        let item = json!({
            "type": "message", "id": msg_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": answer, "annotations": [], "logprobs": []}]
        });
        let usage = usage_for(call, &user_text, &answer);
        (item, answer, usage)
    };

    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": resp_id, "object": "response", "created_at": call.created, "status": status,
            "background": false, "error": null, "incomplete_details": null,
            "instructions": call.body.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": null, "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "service_tier": "default",
            "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": call.body.get("tools").cloned().unwrap_or(json!([])),
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
        })
    };

    if !stream {
        return Reply::json(
            200,
            response("completed", json!([final_item]), usage_responses(usage)),
        );
    }

    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |kind: &str, mut v: Value| {
        v["type"] = Value::from(kind);
        v["sequence_number"] = Value::from(seq);
        seq += 1;
        events.push(encode(Some(kind), &v.to_string(), LineEnd::Lf));
    };
    push(
        "response.created",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    push(
        "response.in_progress",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    if call.scenario.tool_call {
        let item_id = final_item["id"].clone();
        let mut added = final_item.clone();
        added["arguments"] = Value::from("");
        added["status"] = Value::from("in_progress");
        push(
            "response.output_item.added",
            json!({"output_index": 0, "item": added}),
        );
        for piece in call.arg_deltas(&output_text) {
            push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": piece}),
            );
        }
        push(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": 0, "arguments": output_text}),
        );
    } else {
        let part_empty =
            json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
        push(
            "response.output_item.added",
            json!({"output_index": 0, "item": {
                "type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []
            }}),
        );
        push(
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part_empty}),
        );
        for piece in call.text_deltas(&output_text) {
            push(
                "response.output_text.delta",
                json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
            );
        }
        push(
            "response.output_text.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": output_text, "logprobs": []}),
        );
        push(
            "response.content_part.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0,
                   "part": final_item["content"][0].clone()}),
        );
    }
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": final_item}),
    );
    push(
        "response.completed",
        json!({"response": response("completed", json!([final_item]), usage_responses(usage))}),
    );
    Reply::sse(events)
}

// === Embeddings, Models ===

pub fn embeddings(call: &Call) -> Reply {
    let inputs: Vec<String> = match call.body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => return error(400, "mock upstream: 'input' is required"),
    };
    let dims = call
        .body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8) as usize;
    let base64 = call.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = text::embedding(s, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| text::input_tokens(s)).sum();
    Reply::json(
        200,
        json!({
            "object": "list", "data": data, "model": model(call),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }),
    )
}

pub fn models(call: &Call) -> Reply {
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": call.created, "owned_by": "mock"}))
        .collect();
    Reply::json(200, json!({"object": "list", "data": data}))
}
