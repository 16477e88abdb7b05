use super::*;
use crate::sse::SseSplitter;

const CHAT_REQUEST: &[u8] = br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the world in one short sentence."}]}"#;

/// Runs a whole SSE stream (optionally only its first `cut` bytes) through splitter and meter.
fn meter(kind: ProviderKind, model: &str, stream: &[u8], cut: Option<usize>) -> StreamMeter {
    let bytes = &stream[..cut.unwrap_or(stream.len())];
    let mut splitter = SseSplitter::new();
    let mut meter = StreamMeter::new(kind, model);
    // Awkward chunking on purpose: the meter must not care.
    for chunk in bytes.chunks(7) {
        splitter.push(chunk, |ev| meter.on_sse_event(&ev));
    }
    splitter.finish(|ev| meter.on_sse_event(&ev));
    meter
}

/// Byte offset just past the end of the `n`th event (1-based) of a `\n\n`-separated stream.
fn after_events(stream: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        at += memmem::find(&stream[at..], b"\n\n").expect("event") + 2;
    }
    at
}

/// An OpenAI chat stream as the API sends it, with or without `include_usage`.
fn openai_chat_stream(include_usage: bool) -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-AxdVw","object":"chat.completion.chunk","created":1738377600,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","#;
    let usage_null = if include_usage {
        r#","usage":null"#
    } else {
        ""
    };
    let choices = [
        r#""choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]"#,
        r#""choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]"#,
        r#""choices":[{"index":0,"delta":{"content":", world!"},"logprobs":null,"finish_reason":null}]"#,
        r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#,
    ];
    let mut out = String::new();
    for c in choices {
        out.push_str(&format!("data: {head}{c}{usage_null}}}\n\n"));
    }
    if include_usage {
        out.push_str(&format!(
            "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":27,\"completion_tokens\":4,\"total_tokens\":31,\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n"
        ));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

#[test]
fn openai_chat_final_usage_chunk_is_exact() {
    let stream = openai_chat_stream(true);
    let m = meter(ProviderKind::OpenAi, "gpt-4o-mini", &stream, None);
    let u = m.finish(true, CHAT_REQUEST);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (27, 4, false)
    );
    assert_eq!(m.output_text_bytes(), "Hello, world!".len() as u64);
}

#[test]
fn openai_chat_cut_before_usage_is_estimated_and_nonzero() {
    let stream = openai_chat_stream(true);
    let cut = after_events(&stream, 3);
    let m = meter(ProviderKind::OpenAi, "gpt-4o-mini", &stream, Some(cut));
    assert_eq!(m.reported(), None);
    let u = m.finish(false, CHAT_REQUEST);
    assert!(u.estimated);
    // "Hello" ", world!" is 4 o200k tokens; the prompt text plus message overhead is more.
    assert_eq!(u.output_tokens, 4);
    assert!(u.input_tokens > 15, "{u:?}");
    // Cut inside an event: the partial event is not counted, the earlier output still is.
    let m = meter(ProviderKind::OpenAi, "gpt-4o-mini", &stream, Some(cut - 10));
    assert!(m.finish(false, CHAT_REQUEST).output_tokens > 0);
}

#[test]
fn openai_stream_without_usage_is_estimated_even_when_complete() {
    let stream = openai_chat_stream(false);
    let u = meter(ProviderKind::OpenAi, "gpt-4o-mini", &stream, None).finish(true, CHAT_REQUEST);
    assert!(
        u.estimated && u.output_tokens == 4 && u.input_tokens > 0,
        "{u:?}"
    );
}

#[test]
fn openai_tool_call_argument_deltas_count_as_output() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"location\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris, France\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    );
    let m = meter(ProviderKind::OpenAi, "gpt-4.1", stream.as_bytes(), None);
    assert_eq!(
        m.output_text_bytes(),
        r#"{"location":"Paris, France"}"#.len() as u64
    );
    let u = m.finish(false, CHAT_REQUEST);
    assert!(u.estimated && u.output_tokens >= 5, "{u:?}");
}

#[test]
fn include_usage_round_trip_gives_the_client_its_own_stream() {
    let asked = openai_chat_stream(false);
    let upstream = openai_chat_stream(true);
    // Every chunking of the upstream stream must yield exactly the stream the client asked for.
    for cut in 0..=upstream.len() {
        let mut splitter = SseSplitter::new();
        let mut meter = StreamMeter::new(ProviderKind::OpenAi, "gpt-4o-mini");
        let mut client = Vec::new();
        let mut forward = |ev: crate::sse::SseEvent<'_>| {
            meter.on_sse_event(&ev);
            if ev.has_data && is_usage_only_chunk(ev.data) {
                return;
            }
            match strip_null_usage(ev.raw) {
                Some(stripped) => client.extend_from_slice(&stripped),
                None => client.extend_from_slice(ev.raw),
            }
        };
        splitter.push(&upstream[..cut], &mut forward);
        splitter.push(&upstream[cut..], &mut forward);
        let rest = splitter.finish(&mut forward);
        assert!(rest.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&client),
            String::from_utf8_lossy(&asked),
            "cut {cut}"
        );
        let u = meter.finish(true, CHAT_REQUEST);
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.estimated),
            (27, 4, false)
        );
    }
}

#[test]
fn add_include_usage_inserts_without_touching_other_bytes() {
    let body =
        br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"h\u00e9 1.0"}]}"#;
    let out = add_include_usage(body).expect("rewritten");
    let want = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"h\u00e9 1.0"}],"stream_options":{"include_usage":true}}"#;
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));

    let pretty = b"{\n  \"stream\": true,\n  \"messages\": []\n}\n";
    let out = add_include_usage(pretty).expect("rewritten");
    assert!(out.starts_with(b"{\n  \"stream\": true,\n  \"messages\": []\n,"));
    let v: Value = serde_json::from_slice(&out).expect("still JSON");
    assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));
}

#[test]
fn add_include_usage_merges_into_existing_options_in_order() {
    let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}"#;
    let out = add_include_usage(body).expect("rewritten");
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[]}"#
    );
    let body = br#"{"stream":true,"stream_options":null,"prompt":"Say this"}"#;
    let out = add_include_usage(body).expect("rewritten");
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"stream":true,"stream_options":{"include_usage":true},"prompt":"Say this"}"#
    );
}

#[test]
fn add_include_usage_leaves_other_requests_alone() {
    for body in [
        &br#"{"model":"gpt-4o","messages":[]}"#[..],
        br#"{"model":"gpt-4o","stream":false,"messages":[]}"#,
        br#"{"model":"gpt-4o","stream":"true","messages":[]}"#,
        br#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        br#"{"stream":true,"stream_options":"yes","messages":[]}"#,
        // Responses API: no `messages`, and it rejects stream_options.include_usage.
        br#"{"model":"gpt-4.1","stream":true,"input":"hi"}"#,
        b"not json",
        br#"[{"stream":true}]"#,
    ] {
        assert_eq!(
            add_include_usage(body),
            None,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn usage_only_chunk_recognition() {
    let usage = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    assert!(is_usage_only_chunk(usage));
    for data in [
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#,
        r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#,
        r#"{"choices":[],"usage":null}"#,
        "[DONE]",
        r#"{"usage""#,
    ] {
        assert!(!is_usage_only_chunk(data), "{data}");
    }
}

#[test]
fn strip_null_usage_only_removes_the_member() {
    assert_eq!(
        strip_null_usage(b"data: {\"a\":1,\"usage\":null}\n\n").as_deref(),
        Some(&b"data: {\"a\":1}\n\n"[..])
    );
    assert_eq!(
        strip_null_usage(b"data: {\"usage\":null,\"a\":1}\n\n").as_deref(),
        Some(&b"data: {\"a\":1}\n\n"[..])
    );
    // Inside a string the quotes are escaped, so the text is not touched.
    assert_eq!(
        strip_null_usage(br#"data: {"content":"x,\"usage\":null"}"#),
        None
    );
}

const RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
    "event: response.output_text.delta\n",
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there, friend\"}\n\n",
    "event: response.output_text.done\n",
    "data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi there, friend\"}\n\n",
    "event: response.completed\n",
    "data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there, friend\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
);

#[test]
fn responses_api_stream_completed_and_cut() {
    let request = br#"{"model":"gpt-4.1","stream":true,"input":"Greet me"}"#;
    let stream = RESPONSES_STREAM.as_bytes();
    let m = meter(ProviderKind::OpenAi, "gpt-4.1", stream, None);
    let u = m.finish(true, request);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (37, 11, false)
    );
    // Deltas only: the `.done` and `completed` summaries are not counted twice.
    assert_eq!(m.output_text_bytes(), "Hi there, friend".len() as u64);

    let m = meter(
        ProviderKind::OpenAi,
        "gpt-4.1",
        stream,
        Some(after_events(stream, 4)),
    );
    let u = m.finish(false, request);
    assert!(
        u.estimated && u.input_tokens > 0 && u.output_tokens >= 4,
        "{u:?}"
    );
}

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"! How can I help you today?\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

const ANTHROPIC_REQUEST: &[u8] = br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"system":[{"type":"text","text":"Long cached context","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hello, Claude"}]}"#;

#[test]
fn anthropic_stream_complete_is_exact() {
    let m = meter(
        ProviderKind::Anthropic,
        "claude-sonnet-4-5",
        ANTHROPIC_STREAM.as_bytes(),
        None,
    );
    let u = m.finish(true, ANTHROPIC_REQUEST);
    assert_eq!(
        u,
        Usage {
            input_tokens: 2073,
            output_tokens: 15,
            cached_input_tokens: 2048,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            estimated: false
        }
    );
}

#[test]
fn anthropic_cut_before_message_delta_keeps_real_input() {
    let stream = ANTHROPIC_STREAM.as_bytes();
    let m = meter(
        ProviderKind::Anthropic,
        "claude-sonnet-4-5",
        stream,
        Some(after_events(stream, 5)),
    );
    let u = m.finish(false, ANTHROPIC_REQUEST);
    assert!(u.estimated);
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens),
        (2073, 2048),
        "real parts kept"
    );
    // message_start's initial output count plus the estimate of the text streamed after it.
    let text = "Hello! How can I help you today?";
    let est = estimate_text_tokens(ProviderKind::Anthropic, "claude-sonnet-4-5", text);
    assert_eq!(u.output_tokens, 1 + est);
}

#[test]
fn anthropic_tool_use_and_thinking_deltas_count() {
    let stream = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":400,\"output_tokens\":2}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAh\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San Fra\"}}\n\n",
    );
    let m = meter(
        ProviderKind::Anthropic,
        "claude-opus-4-1",
        stream.as_bytes(),
        None,
    );
    assert_eq!(
        m.output_text_bytes(),
        ("Let me think".len() + r#"{"location": "San Fra"#.len()) as u64
    );
    let u = m.finish(false, ANTHROPIC_REQUEST);
    assert_eq!(u.input_tokens, 400);
    assert!(u.output_tokens > 2 && u.estimated);
}

fn gemini_chunk(text: &str, usage: &str, finish: bool) -> String {
    let finish = if finish {
        r#","finishReason": "STOP""#
    } else {
        ""
    };
    let usage = if usage.is_empty() {
        String::new()
    } else {
        format!(r#","usageMetadata": {{{usage}}}"#)
    };
    format!(
        "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\"}}],\"role\": \"model\"}}{finish},\"index\": 0}}]{usage},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"3zp1aO\"}}\r\n\r\n"
    )
}

#[test]
fn gemini_stream_last_usage_wins_and_thoughts_are_output() {
    let stream = [
        gemini_chunk("The", r#""promptTokenCount": 10,"candidatesTokenCount": 1,"totalTokenCount": 11"#, false),
        gemini_chunk(" quick brown fox", r#""promptTokenCount": 10,"candidatesTokenCount": 5,"totalTokenCount": 15"#, false),
        gemini_chunk(" jumps.", r#""promptTokenCount": 10,"candidatesTokenCount": 8,"totalTokenCount": 58,"thoughtsTokenCount": 40"#, true),
    ]
    .concat();
    let request = br#"{"contents":[{"role":"user","parts":[{"text":"Write a story"}]}]}"#;
    let m = meter(
        ProviderKind::Gemini,
        "gemini-2.5-flash",
        stream.as_bytes(),
        None,
    );
    let u = m.finish(true, request);
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.estimated
        ),
        (10, 48, 40, false)
    );

    // Cut after the second chunk: its running count covers the text so far and is kept as is,
    // but the response never finished, so the record is marked estimated.
    let cut = memmem::find_iter(stream.as_bytes(), b"\r\n\r\n")
        .nth(1)
        .expect("2 events")
        + 4;
    let m = meter(
        ProviderKind::Gemini,
        "gemini-2.5-flash",
        stream.as_bytes(),
        Some(cut),
    );
    let u = m.finish(false, request);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (10, 5, true)
    );
}

#[test]
fn gemini_text_after_last_count_is_estimated_on_top() {
    let stream = [
        gemini_chunk(
            "The",
            r#""promptTokenCount": 10,"candidatesTokenCount": 1"#,
            false,
        ),
        gemini_chunk(" quick brown fox jumps", "", false),
    ]
    .concat();
    let m = meter(
        ProviderKind::Gemini,
        "gemini-2.5-pro",
        stream.as_bytes(),
        None,
    );
    let u = m.finish(false, b"{}");
    let tail = estimate_text_tokens(
        ProviderKind::Gemini,
        "gemini-2.5-pro",
        " quick brown fox jumps",
    );
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (10, 1 + tail, true)
    );
}

#[test]
fn cut_streams_of_every_provider_are_never_zero() {
    let openai = openai_chat_stream(false);
    let gemini = gemini_chunk("Once upon a time", "", false);
    let cases: [(ProviderKind, &str, &[u8]); 4] = [
        (ProviderKind::OpenAi, "gpt-5", &openai),
        (
            ProviderKind::OpenAiCompatible,
            "llama-3.3-70b-versatile",
            &openai,
        ),
        (ProviderKind::Gemini, "gemini-2.5-flash", gemini.as_bytes()),
        (
            ProviderKind::Anthropic,
            "claude-haiku-4-5",
            ANTHROPIC_STREAM.as_bytes(),
        ),
    ];
    for (kind, model, stream) in cases {
        let cut = if kind == ProviderKind::Anthropic {
            after_events(stream, 4) // just after the first text delta
        } else {
            stream.len()
        };
        let m = meter(kind, model, stream, Some(cut));
        let u = m.finish(false, CHAT_REQUEST);
        assert!(
            u.output_tokens > 0 && u.input_tokens > 0 && u.estimated,
            "{kind:?} {u:?}"
        );
    }
}

#[test]
fn nothing_streamed_means_estimated_input_and_zero_output() {
    let m = StreamMeter::new(ProviderKind::OpenAi, "gpt-4o");
    let u = m.finish(false, CHAT_REQUEST);
    assert!(u.estimated && u.input_tokens > 0);
    assert_eq!(u.output_tokens, 0);
}

#[test]
fn garbage_events_are_ignored() {
    let mut m = StreamMeter::new(ProviderKind::OpenAi, "gpt-4o");
    for data in [
        "",
        "[DONE]",
        "{",
        "{\"choices\":7}",
        "{\"usage\":[1]}",
        "\u{0}\u{1}",
    ] {
        m.on_event(None, data);
    }
    assert_eq!(m.reported(), None);
    assert_eq!(m.output_text_bytes(), 0);
}
