//! What the mock answers and how it counts tokens. Everything here is deterministic so a test can
//! compute the expected answer, deltas and usage from its own prompt.
//!
//! - answer: `echo: <last user text>`;
//! - deltas: the answer split on single spaces into groups of `chunk_words` pieces; every group
//!   after the first starts with the space that separated it, so the deltas concatenate to the
//!   answer exactly;
//! - uncached input tokens: `8 + ceil(bytes(last user text) / 4)`;
//! - output tokens: whitespace-separated words of the answer (for a tool call: of the arguments
//!   JSON), plus `reasoning` tokens where the provider counts them in output.

use serde_json::Value;

/// The fixed overhead every prompt is charged, standing in for role and framing tokens.
pub const PROMPT_OVERHEAD_TOKENS: u64 = 8;

pub fn answer(user_text: &str) -> String {
    format!("echo: {user_text}")
}

pub fn deltas(answer: &str, chunk_words: usize) -> Vec<String> {
    let chunk_words = chunk_words.max(1);
    let pieces: Vec<&str> = answer.split(' ').collect();
    pieces
        .chunks(chunk_words)
        .enumerate()
        .map(|(i, group)| {
            let joined = group.join(" ");
            if i == 0 {
                joined
            } else {
                format!(" {joined}")
            }
        })
        .collect()
}

/// Split a string into about `parts` pieces on char boundaries (for tool-call argument deltas).
pub fn split_chars(s: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Cut a string every `n` chars (the last piece may be shorter).
pub fn chunk_chars(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

pub fn input_tokens(user_text: &str) -> u64 {
    PROMPT_OVERHEAD_TOKENS + (user_text.len() as u64).div_ceil(4)
}

pub fn word_count(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Token counts for one answer, before each provider arranges them in its own shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens not served from a cache.
    pub uncached_input: u64,
    /// Input tokens read from the prompt cache (scenario `cached=N`).
    pub cached: u64,
    /// Input tokens written to the prompt cache (scenario `cache_write=N`, Anthropic only).
    pub cache_write: u64,
    /// Visible output tokens.
    pub output: u64,
    /// Reasoning/thinking tokens (scenario `reasoning=N`).
    pub reasoning: u64,
}

/// Concatenate the text parts of a content value that is a string or an array of parts whose
/// text sits under `text` (OpenAI `text`/`input_text`, Anthropic `text`, Gemini parts).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => match o.get("text") {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => match o.get("content") {
                        // Anthropic tool_result blocks carry their text under `content`.
                        Some(inner) if o.get("type") == Some(&Value::from("tool_result")) => {
                            Some(content_text(inner))
                        }
                        _ => None,
                    },
                },
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of the last message whose role is `user` in an array of messages with `content`
/// (OpenAI chat, Anthropic) or `parts` (Gemini, where a missing role means user).
pub fn last_user_text(messages: Option<&Value>) -> String {
    let Some(Value::Array(items)) = messages else {
        return String::new();
    };
    for m in items.iter().rev() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        if role != "user" {
            continue;
        }
        if let Some(parts) = m.get("parts") {
            return content_text(parts);
        }
        if let Some(content) = m.get("content") {
            return content_text(content);
        }
    }
    String::new()
}

/// A deterministic unit vector-ish embedding of `dims` floats derived from the text bytes.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u32 = 2_166_136_261;
    for b in text.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    (0..dims)
        .map(|i| {
            h = h
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12_345 + i as u32);
            ((h >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deltas_concatenate_to_the_answer() {
        for text in [
            "",
            "one",
            "a b c d e",
            "two  spaces and\ttab",
            "<EMAIL_1> wrote to <EMAIL_2>",
        ] {
            let a = answer(text);
            for n in 1..5 {
                let d = deltas(&a, n);
                assert_eq!(d.concat(), a, "text {text:?} chunk {n}");
            }
        }
        assert_eq!(deltas("echo: a b c", 2), vec!["echo: a", " b c"]);
    }

    #[test]
    fn usage_is_a_function_of_the_prompt() {
        assert_eq!(input_tokens(""), 8);
        assert_eq!(input_tokens("abcd"), 9);
        assert_eq!(input_tokens("abcde"), 10);
        assert_eq!(word_count("echo: hello there"), 3);
    }

    #[test]
    fn finds_last_user_text_in_each_shape() {
        let openai = json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]}
        ]);
        assert_eq!(last_user_text(Some(&openai)), "hello world");
        let gemini = json!([{"parts": [{"text": "hi"}]}]);
        assert_eq!(last_user_text(Some(&gemini)), "hi");
        let tool_result = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]);
        assert_eq!(last_user_text(Some(&tool_result)), "42");
    }

    #[test]
    fn chunk_chars_cuts_mid_word() {
        assert_eq!(
            chunk_chars("echo: <EMAIL_1>", 4),
            ["echo", ": <E", "MAIL", "_1>"]
        );
        assert_eq!(chunk_chars("", 3), [""]);
    }

    #[test]
    fn split_chars_keeps_every_char() {
        let s = "{\"text\":\"héllo wörld\"}";
        assert_eq!(split_chars(s, 3).concat(), s);
        assert_eq!(split_chars("", 3), vec![""]);
    }
}
