//! `limits.max_tokens` for a request that sets no output cap of its own.
//!
//! Refusing every request above the cap is not enough: one that sets none gets the provider's
//! default, which for most models is far above any cap a user would set. So Airlock writes the cap
//! into the body itself, in the field the endpoint reads, before the request goes upstream.

use crate::providers::ProviderKind;
use serde_json::{Map, Value};

/// Where an endpoint reads its output cap: a top-level field, or one inside an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapField {
    Top(&'static str),
    /// Gemini's `generationConfig.maxOutputTokens` (or `generation_config`, as the body
    /// spells it).
    GeminiConfig,
}

impl CapField {
    /// The field as a user would write it, for messages.
    pub fn name(self) -> &'static str {
        match self {
            CapField::Top(f) => f,
            CapField::GeminiConfig => "generationConfig.maxOutputTokens",
        }
    }
}

/// The field that caps the output of `endpoint`, or `None` for an endpoint with no output to
/// cap (embeddings, listings, files).
pub fn cap_field(kind: ProviderKind, endpoint: &str) -> Option<CapField> {
    let path = endpoint.split('?').next().unwrap_or(endpoint);
    match kind {
        // Current OpenAI models (the o-series among them) take only `max_completion_tokens`.
        ProviderKind::OpenAi if path.ends_with("/chat/completions") => {
            Some(CapField::Top("max_completion_tokens"))
        }
        ProviderKind::OpenAiCompatible if path.ends_with("/chat/completions") => {
            Some(CapField::Top("max_tokens"))
        }
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible if path.ends_with("/responses") => {
            Some(CapField::Top("max_output_tokens"))
        }
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible if path.ends_with("/completions") => {
            Some(CapField::Top("max_tokens"))
        }
        ProviderKind::Anthropic if path.ends_with("/messages") => Some(CapField::Top("max_tokens")),
        ProviderKind::Gemini => {
            let decoded = crate::providers::percent_decode(path);
            (decoded.ends_with(":generateContent") || decoded.ends_with(":streamGenerateContent"))
                .then_some(CapField::GeminiConfig)
        }
        _ => None,
    }
}

/// `body` with `cap` written into `field`. `None` when the body is not a JSON object Airlock
/// can rewrite (a number past a 64-bit float, a lone surrogate) or its Gemini config is not an
/// object: the caller refuses it rather than let it through uncapped.
pub fn with_cap(body: &[u8], field: CapField, cap: u64) -> Option<Vec<u8>> {
    let mut root: Value = serde_json::from_slice(body).ok()?;
    let obj = root.as_object_mut()?;
    match field {
        CapField::Top(name) => {
            obj.insert(name.to_owned(), Value::from(cap));
        }
        CapField::GeminiConfig => {
            let (config_key, cap_key) = if obj.contains_key("generation_config") {
                ("generation_config", "max_output_tokens")
            } else {
                ("generationConfig", "maxOutputTokens")
            };
            let config = obj
                .entry(config_key)
                .or_insert_with(|| Value::Object(Map::new()));
            if config.is_null() {
                *config = Value::Object(Map::new());
            }
            let config = config.as_object_mut()?;
            // A `null` cap already there, in either spelling, is the one replaced.
            let key = ["maxOutputTokens", "max_output_tokens"]
                .into_iter()
                .find(|k| config.contains_key(*k))
                .unwrap_or(cap_key);
            config.insert(key.to_owned(), Value::from(cap));
        }
    }
    serde_json::to_vec(&root).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capped(kind: ProviderKind, endpoint: &str, body: Value) -> Value {
        let field = cap_field(kind, endpoint).expect("a capped endpoint");
        let out = with_cap(body.to_string().as_bytes(), field, 100).expect("rewritten");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn each_endpoint_gets_the_cap_in_its_own_field() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let b = capped(
            ProviderKind::OpenAi,
            "/v1/chat/completions",
            json!({"model": "o3", "messages": msgs, "max_tokens": null}),
        );
        assert_eq!(b["max_completion_tokens"], 100);
        assert_eq!(b["messages"], msgs, "the rest is kept");
        let b = capped(
            ProviderKind::OpenAiCompatible,
            "/v1/chat/completions",
            json!({"model": "llama", "messages": msgs}),
        );
        assert_eq!(b["max_tokens"], 100);
        let b = capped(
            ProviderKind::OpenAi,
            "/v1/responses",
            json!({"model": "gpt-4.1", "input": "hi"}),
        );
        assert_eq!(b["max_output_tokens"], 100);
        let b = capped(
            ProviderKind::Anthropic,
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "messages": msgs}),
        );
        assert_eq!(b["max_tokens"], 100);
        let b = capped(
            ProviderKind::Gemini,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            json!({"contents": [], "generationConfig": {"temperature": 0.5}}),
        );
        assert_eq!(b["generationConfig"]["maxOutputTokens"], 100);
        assert_eq!(b["generationConfig"]["temperature"], 0.5);
        let b = capped(
            ProviderKind::Gemini,
            "/v1beta/models/gemini-2.5-pro%3AgenerateContent",
            json!({"contents": [], "generation_config": {"top_k": 3}}),
        );
        assert_eq!(b["generation_config"]["max_output_tokens"], 100);
        assert!(b.get("generationConfig").is_none(), "{b}");
        let b = capped(
            ProviderKind::Gemini,
            "/v1beta/models/gemini-2.5-pro:generateContent",
            json!({"contents": [], "generationConfig": null}),
        );
        assert_eq!(b["generationConfig"]["maxOutputTokens"], 100);
    }

    #[test]
    fn endpoints_without_output_are_left_alone_and_bodies_it_cannot_rewrite_say_so() {
        for (kind, endpoint) in [
            (ProviderKind::OpenAi, "/v1/embeddings"),
            (ProviderKind::OpenAi, "/v1/models"),
            (ProviderKind::Anthropic, "/v1/messages/count_tokens"),
            (
                ProviderKind::Gemini,
                "/v1beta/models/text-embedding-004:embedContent",
            ),
            (
                ProviderKind::Gemini,
                "/v1beta/models/gemini-2.5-pro:countTokens",
            ),
        ] {
            assert_eq!(cap_field(kind, endpoint), None, "{endpoint}");
        }
        let field = CapField::Top("max_tokens");
        assert_eq!(with_cap(br#"{"n": 1e400}"#, field, 1), None);
        assert_eq!(with_cap(br#"["a"]"#, field, 1), None);
        assert_eq!(
            with_cap(br#"{"generationConfig": 5}"#, CapField::GeminiConfig, 1),
            None
        );
    }
}
