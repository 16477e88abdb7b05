use super::*;

const OPENAI: ProviderKind = ProviderKind::OpenAi;

fn usage(kind: ProviderKind, body: &str) -> Usage {
    usage_from_json(kind, body.as_bytes()).expect("usage present")
}

#[test]
fn openai_chat_completion_with_cache_hits() {
    let body = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion",
      "created":1741570283,"model":"gpt-4o-2024-08-06",
      "choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,
        "annotations":[]},"logprobs":null,"finish_reason":"stop"}],
      "usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,
        "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,
          "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
      "service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;
    let u = usage(OPENAI, body);
    assert_eq!(
        u,
        Usage {
            input_tokens: 1117,
            output_tokens: 46,
            cached_input_tokens: 1024,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            estimated: false
        }
    );
    assert_eq!(u.uncached_input_tokens(), 93);
}

#[test]
fn openai_reasoning_tokens_are_part_of_completion_tokens() {
    let body = r#"{"object":"chat.completion","model":"o3-2025-04-16","choices":[],
      "usage":{"prompt_tokens":75,"completion_tokens":1186,"total_tokens":1261,
        "prompt_tokens_details":{"cached_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":1024}}}"#;
    let u = usage(OPENAI, body);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.reasoning_tokens),
        (75, 1186, 1024)
    );
}

#[test]
fn openai_responses_api() {
    let body = r#"{"id":"resp_67ccd3a9da748190baa7f1570fe91ac6","object":"response",
      "created_at":1741476777,"status":"completed","model":"o4-mini-2025-04-16",
      "output":[{"type":"reasoning","id":"rs_1","summary":[]},
        {"type":"message","id":"msg_1","status":"completed","role":"assistant",
         "content":[{"type":"output_text","text":"In a peaceful grove...","annotations":[]}]}],
      "usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":256},
        "output_tokens":152,"output_tokens_details":{"reasoning_tokens":128},
        "total_tokens":480}}"#;
    let u = usage(OPENAI, body);
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.output_tokens,
            u.reasoning_tokens
        ),
        (328, 256, 152, 128)
    );
}

#[test]
fn openai_embeddings_and_legacy_completions() {
    let emb = r#"{"object":"list","data":[{"object":"embedding","index":0,
      "embedding":[0.0023064255,-0.009327292]}],"model":"text-embedding-3-small",
      "usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    let u = usage(OPENAI, emb);
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (8, 0, false)
    );

    let legacy = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion",
      "created":1589478378,"model":"gpt-3.5-turbo-instruct",
      "choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,
        "finish_reason":"length"}],
      "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    let u = usage(OPENAI, legacy);
    assert_eq!((u.input_tokens, u.output_tokens), (5, 7));
}

#[test]
fn anthropic_input_excludes_cache_reads_and_writes() {
    let body = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",
      "model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi!"}],
      "stop_reason":"end_turn","stop_sequence":null,
      "usage":{"input_tokens":21,"cache_creation_input_tokens":188086,
        "cache_read_input_tokens":0,"output_tokens":393,"service_tier":"standard"}}"#;
    let u = usage(ProviderKind::Anthropic, body);
    assert_eq!(u.input_tokens, 21 + 188_086);
    assert_eq!(u.cache_write_tokens, 188_086);
    assert_eq!(u.cached_input_tokens, 0);
    assert_eq!(u.uncached_input_tokens(), 21);
    assert_eq!(u.output_tokens, 393);

    let read = r#"{"type":"message","usage":{"input_tokens":50,
      "cache_creation_input_tokens":null,"cache_read_input_tokens":4000,"output_tokens":10}}"#;
    // Recognised as Anthropic by shape even through an OpenAI-compatible provider entry.
    let u = usage(ProviderKind::OpenAiCompatible, read);
    assert_eq!((u.input_tokens, u.cached_input_tokens), (4050, 4000));
}

#[test]
fn same_field_names_different_meaning_decided_by_provider() {
    let body = r#"{"usage":{"input_tokens":100,"output_tokens":5}}"#;
    // Anthropic: 100 uncached. Responses: 100 in total. Without cache fields they agree.
    assert_eq!(usage(ProviderKind::Anthropic, body).input_tokens, 100);
    assert_eq!(usage(OPENAI, body).input_tokens, 100);
}

#[test]
fn gemini_generate_content_thoughts_are_output_and_cache_is_part_of_prompt() {
    let body = r#"{"candidates":[{"content":{"parts":[{"text":"Fox."}],"role":"model"},
        "finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":2048,"candidatesTokenCount":120,
        "totalTokenCount":2568,"cachedContentTokenCount":1024,"thoughtsTokenCount":400,
        "promptTokensDetails":[{"modality":"TEXT","tokenCount":2048}]},
      "modelVersion":"gemini-2.5-flash","responseId":"mOZ1aPuXKs"}"#;
    let u = usage(ProviderKind::Gemini, body);
    assert_eq!(
        u,
        Usage {
            input_tokens: 2048,
            output_tokens: 520,
            cached_input_tokens: 1024,
            cache_write_tokens: 0,
            reasoning_tokens: 400,
            estimated: false
        }
    );
}

#[test]
fn gemini_tool_use_prompt_is_input() {
    let body = r#"{"usageMetadata":{"promptTokenCount":30,"toolUsePromptTokenCount":70,
      "candidatesTokenCount":12}}"#;
    let u = usage(ProviderKind::Gemini, body);
    assert_eq!((u.input_tokens, u.output_tokens), (100, 12));
}

#[test]
fn gemini_embed_content_without_usage_is_estimated() {
    let response = br#"{"embedding":{"values":[0.013168523,-0.008711934,-0.046782676]}}"#;
    let request = br#"{"model":"models/text-embedding-004",
      "content":{"parts":[{"text":"What is the meaning of life?"}]}}"#;
    assert_eq!(usage_from_json(ProviderKind::Gemini, response), None);
    let u = usage_or_estimate(
        ProviderKind::Gemini,
        "text-embedding-004",
        request,
        response,
    );
    assert!(u.estimated);
    assert!(u.input_tokens >= 7, "{u:?}");
    assert_eq!(u.output_tokens, 0);

    let with_usage = br#"{"embedding":{"values":[0.1]},"usageMetadata":{"promptTokenCount":8,
      "totalTokenCount":8}}"#;
    let u = usage_or_estimate(
        ProviderKind::Gemini,
        "gemini-embedding-001",
        request,
        with_usage,
    );
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.estimated),
        (8, 0, false)
    );
}

#[test]
fn missing_and_null_fields() {
    let u = usage(
        OPENAI,
        r#"{"usage":{"prompt_tokens":10,"completion_tokens":null}}"#,
    );
    assert_eq!((u.input_tokens, u.output_tokens), (10, 0));
    let u = usage(
        OPENAI,
        r#"{"usage":{"prompt_tokens":10.0,"completion_tokens":3}}"#,
    );
    assert_eq!(u.input_tokens, 10);
    for body in [
        r#"{"usage":null}"#,
        r#"{"usage":{}}"#,
        r#"{}"#,
        r#"[]"#,
        "not json",
        r#"{"usage":{"prompt_tokens":-1}}"#,
        r#"{"usageMetadata":{}}"#,
    ] {
        assert_eq!(usage_from_json(OPENAI, body.as_bytes()), None, "{body}");
    }
}

#[test]
fn deepseek_cache_hits_and_parts_never_exceed_whole() {
    let body = r#"{"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,
      "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36,
      "completion_tokens_details":{"reasoning_tokens":12}}}"#;
    let u = usage(ProviderKind::OpenAiCompatible, body);
    assert_eq!((u.cached_input_tokens, u.uncached_input_tokens()), (64, 36));
    // A provider reporting a part larger than its whole is clamped, not underflowed.
    let bad = r#"{"usage":{"prompt_tokens":10,"completion_tokens":1,
      "prompt_tokens_details":{"cached_tokens":50},
      "completion_tokens_details":{"reasoning_tokens":9}}}"#;
    let u = usage(OPENAI, bad);
    assert_eq!((u.input_tokens, u.output_tokens), (50, 9));
}

#[test]
fn response_without_usage_is_estimated_from_its_text() {
    let request = br#"{"model":"llama-3.3-70b","messages":[{"role":"user","content":"Say hi"}]}"#;
    let response = br#"{"choices":[{"index":0,"message":{"role":"assistant",
      "content":"Hello there, how can I help you today?",
      "tool_calls":[{"id":"c1","type":"function",
        "function":{"name":"f","arguments":"{\"city\":\"Paris\"}"}}]}}]}"#;
    let u = usage_or_estimate(
        ProviderKind::OpenAiCompatible,
        "llama-3.3-70b",
        request,
        response,
    );
    assert!(u.estimated);
    assert!(u.input_tokens > 0 && u.output_tokens >= 10, "{u:?}");
}
