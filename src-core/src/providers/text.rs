//! Where the user's own words are in each provider's request: the last user turn, which the
//! anomaly detectors compare across requests. Fields arrive as raw JSON and are parsed only here,
//! only when needed.

use serde_json::value::RawValue;
use serde_json::Value;

/// The request fields that can hold prompt text, left unparsed until asked for.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PromptFields<'a> {
    #[serde(borrow, default)]
    pub messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub contents: Option<&'a RawValue>,
}

impl PromptFields<'_> {
    /// The text of the last user turn, whichever API shape carries it.
    pub fn last_user_text(&self) -> Option<String> {
        if let Some(raw) = self.messages {
            // OpenAI chat and Anthropic messages: [{role, content: string | [parts]}]
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            let last = v.as_array()?.iter().rev().find(|m| m["role"] == "user")?;
            return text_of(&last["content"]);
        }
        if let Some(raw) = self.contents {
            // Gemini: [{role, parts: [{text}]}]
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            let arr = v.as_array()?;
            let last = arr
                .iter()
                .rev()
                .find(|c| c["role"] != "model")
                .or(arr.last())?;
            return text_of(&last["parts"]);
        }
        // Responses API, completions, embeddings: string | [string] | [items]
        if let Some(raw) = self.input.or(self.prompt) {
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            return match &v {
                Value::String(s) => Some(s.clone()),
                Value::Array(items) => {
                    let last = items
                        .iter()
                        .rev()
                        .find(|i| i.is_string() || i["role"] == "user")?;
                    match last {
                        Value::String(s) => Some(s.clone()),
                        item => text_of(&item["content"]),
                    }
                }
                _ => None,
            };
        }
        None
    }
}

/// A string, or the joined `text` of an array of parts/blocks.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let joined: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            (!joined.is_empty()).then(|| joined.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(body: &str) -> Option<String> {
        serde_json::from_str::<PromptFields<'_>>(body)
            .expect("json")
            .last_user_text()
    }

    #[test]
    fn each_shape() {
        assert_eq!(
            last(
                r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","content":"a"}]}"#
            ),
            Some("hi".into())
        );
        assert_eq!(
            last(
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}]}"#
            ),
            Some("a\nb".into())
        );
        assert_eq!(
            last(r#"{"contents":[{"role":"user","parts":[{"text":"g"}]}]}"#),
            Some("g".into())
        );
        assert_eq!(last(r#"{"input":"r"}"#), Some("r".into()));
        assert_eq!(last(r#"{"input":["e1","e2"]}"#), Some("e2".into()));
        assert_eq!(
            last(r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}]}"#),
            Some("x".into())
        );
        assert_eq!(last(r#"{"model":"m"}"#), None);
    }
}
