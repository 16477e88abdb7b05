//! Token estimates for when a provider's usage never arrived.
//!
//! OpenAI models are counted with their real tokenizer (`tiktoken-rs`, whose BPE tables are
//! compiled into the binary, so nothing is downloaded). Other providers do not publish theirs, so
//! their counts are the o200k count scaled by a per-provider factor that errs high: an estimate
//! feeds budgets, and under-counting is what lets a budget be bypassed. The factors and their
//! reasons are in `docs/metering.md`.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::providers::ProviderKind;

/// Longest text given to the BPE in one go. Longer text is counted on this prefix and scaled by
/// length, which keeps a cut multi-megabyte stream from stalling the proxy's finish path.
const MAX_TOKENIZE_BYTES: usize = 1 << 20;

/// Tokens added per chat message for the role and separators (OpenAI's documented overhead is
/// 3–4 per message plus 3 to prime the reply).
const PER_MESSAGE_OVERHEAD: u64 = 4;
const REPLY_PRIMING: u64 = 3;

/// The tokenizer an estimate used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tokenizer {
    /// gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o-series, gpt-oss, and the default for other models.
    O200kBase,
    /// gpt-4 (non-o), gpt-3.5, text-embedding-3 and ada-002.
    Cl100kBase,
}

// === impl Tokenizer ===

impl Tokenizer {
    /// The tokenizer an OpenAI model name uses.
    pub fn for_openai_model(model: &str) -> Tokenizer {
        let m = model.rsplit('/').next().unwrap_or(model);
        let old_gpt4 =
            m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.");
        let cl100k = old_gpt4
            || m.starts_with("gpt-3.5")
            || m.starts_with("text-embedding-3")
            || m.starts_with("text-embedding-ada");
        if cl100k {
            Tokenizer::Cl100kBase
        } else {
            Tokenizer::O200kBase
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Exact token count of `text` (for text up to `MAX_TOKENIZE_BYTES`, scaled beyond), in
    /// the helper process when the server set one up (see [`super::counter`]).
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() <= MAX_TOKENIZE_BYTES {
            return self.encoded_len(text);
        }
        let mut cut = MAX_TOKENIZE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = self.encoded_len(&text[..cut]);
        mul_div_ceil(head, text.len() as u64, cut as u64)
    }

    fn encoded_len(self, text: &str) -> u64 {
        super::counter::count_in_helper(self, text).unwrap_or_else(|| self.count_here(text))
    }

    /// The count in this process (loads the tables on first use).
    pub(super) fn count_here(self, text: &str) -> u64 {
        self.bpe().encode_ordinary(text).len() as u64
    }
}

fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    let v = (a as u128 * b as u128).div_ceil(c.max(1) as u128);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Which tokenizer and scale (in percent) stand in for a provider's own tokenizer.
fn tokenizer_for(kind: ProviderKind, model: &str) -> (Tokenizer, u64) {
    match kind {
        ProviderKind::OpenAi => (Tokenizer::for_openai_model(model), 100),
        // Claude's tokenizer yields noticeably more tokens than o200k for the same English and
        // code; +25% keeps the estimate on the high side.
        ProviderKind::Anthropic => (Tokenizer::O200kBase, 125),
        // Gemini's SentencePiece vocabulary is of o200k's size; +10% for safety.
        ProviderKind::Gemini => (Tokenizer::O200kBase, 110),
        // OpenAI models behind a compatible gateway (OpenRouter `openai/gpt-4o`) get the real
        // tokenizer; Llama/Mistral/Qwen/DeepSeek vocabularies are smaller than o200k, hence +20%.
        _ if looks_like_openai_model(model) => (Tokenizer::for_openai_model(model), 100),
        _ => (Tokenizer::O200kBase, 120),
    }
}

fn looks_like_openai_model(model: &str) -> bool {
    let m = model.strip_prefix("openai/").unwrap_or(model);
    m.starts_with("gpt-")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
        || m.starts_with("chatgpt-")
}

/// Estimated tokens of generated text for this provider and model (never 0 for non-empty text).
pub fn estimate_text_tokens(kind: ProviderKind, model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let (tokenizer, percent) = tokenizer_for(kind, model);
    mul_div_ceil(tokenizer.count(text), percent, 100).max(1)
}

/// Estimated prompt tokens of a request body: its text plus per-message overhead.
///
/// The text is every JSON string value except metadata (model name, roles, ids, enum-like
/// fields) and inline binary data (base64 images and audio, which are billed by other rules and
/// would be wildly over-counted as text). Tool definitions are included, as providers bill them.
/// A body that is not JSON is counted as plain text.
pub fn estimate_input_tokens(kind: ProviderKind, model: &str, request_body: &[u8]) -> u64 {
    let Ok(root) = serde_json::from_slice::<Value>(request_body) else {
        return estimate_text_tokens(kind, model, &String::from_utf8_lossy(request_body));
    };
    let mut text = String::new();
    collect_prompt_text(&root, None, &mut text);
    let messages = ["messages", "contents", "input"]
        .iter()
        .filter_map(|k| root.get(*k).and_then(Value::as_array))
        .map(|a| a.len() as u64)
        .sum::<u64>();
    let overhead = if messages > 0 {
        messages * PER_MESSAGE_OVERHEAD + REPLY_PRIMING
    } else {
        0
    };
    estimate_text_tokens(kind, model, &text).saturating_add(overhead)
}

/// Keys whose string values are metadata, not prompt text.
const SKIP_KEYS: &[&str] = &[
    "model",
    "role",
    "type",
    "id",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "stop_reason",
    "finish_reason",
    "detail",
    "format",
    "encoding_format",
    "mime_type",
    "mimeType",
    "media_type",
    "service_tier",
    "reasoning_effort",
    "user",
    "signature",
    "cache_control",
    "file_id",
    "fileUri",
    "url",
    "image_url",
    "data",
    "b64_json",
];

fn collect_prompt_text(v: &Value, key: Option<&str>, out: &mut String) {
    match v {
        Value::String(s) => {
            let skip = key.is_some_and(|k| SKIP_KEYS.contains(&k)) || s.starts_with("data:");
            if !skip {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(s);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_prompt_text(i, key, out)),
        Value::Object(map) => {
            for (k, v) in map {
                // Binary payloads nest their bytes under these keys.
                if matches!(k.as_str(), "inline_data" | "inlineData" | "input_audio") {
                    continue;
                }
                collect_prompt_text(v, Some(k), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_pick_their_tokenizer() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o3",
            "o4-mini",
        ] {
            assert_eq!(Tokenizer::for_openai_model(m), Tokenizer::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(Tokenizer::for_openai_model(m), Tokenizer::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn real_tokenizer_counts() {
        // Stable facts of the published vocabularies.
        assert_eq!(Tokenizer::O200kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::O200kBase.count(""), 0);
        assert!(Tokenizer::O200kBase.count("The quick brown fox jumps over the lazy dog.") >= 9);
    }

    #[test]
    fn scaled_estimates_err_high_and_never_zero() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let openai = estimate_text_tokens(ProviderKind::OpenAi, "gpt-4o", &text);
        let claude = estimate_text_tokens(ProviderKind::Anthropic, "claude-sonnet-4-5", &text);
        assert!(
            claude > openai && claude <= openai * 5 / 4 + 1,
            "{openai} {claude}"
        );
        assert_eq!(
            estimate_text_tokens(ProviderKind::Gemini, "gemini-2.5-flash", "a"),
            2
        );
        assert_eq!(estimate_text_tokens(ProviderKind::Gemini, "x", ""), 0);
    }

    #[test]
    fn long_text_is_scaled_from_a_prefix() {
        let text = "word ".repeat(MAX_TOKENIZE_BYTES / 5 * 2);
        let n = Tokenizer::O200kBase.count(&text);
        let per_word = Tokenizer::O200kBase.count(&"word ".repeat(1000)) as f64 / 1000.0;
        let exact = per_word * (MAX_TOKENIZE_BYTES / 5 * 2) as f64;
        assert!((n as f64 - exact).abs() / exact < 0.01, "{n} vs {exact}");
    }

    #[test]
    fn prompt_text_skips_metadata_and_binary() {
        let body = br#"{"model":"gpt-4o","messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","content":[{"type":"text","text":"hello world"},
              {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],
            "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather"}}]}"#;
        let root: Value = serde_json::from_slice(body).expect("json");
        let mut text = String::new();
        collect_prompt_text(&root, None, &mut text);
        assert_eq!(text, "You are terse.\nhello world\nget_weather\nWeather");
        let n = estimate_input_tokens(ProviderKind::OpenAi, "gpt-4o", body);
        let bare = Tokenizer::O200kBase.count(&text);
        assert_eq!(n, bare + 2 * PER_MESSAGE_OVERHEAD + REPLY_PRIMING);
    }

    #[test]
    fn gemini_inline_data_is_not_text() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"},
            {"inline_data":{"mime_type":"image/jpeg","data":"/9j/4AAQSkZJRg=="}}]}]}"#;
        let n = estimate_input_tokens(ProviderKind::Gemini, "gemini-2.5-flash", body);
        assert!(n <= 2 + PER_MESSAGE_OVERHEAD + REPLY_PRIMING, "{n}");
    }
}
