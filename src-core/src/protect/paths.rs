//! Where text lives in each provider's request, and whose text it is.
//!
//! Every string value is scanned except media and a few structural fields; the role (user,
//! system, tool result, document, assistant) says how much a prompt-injection signal weighs and
//! which text opens the conversation.

use super::json_text::{path_string, JsonString, Seg};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    System,
    Assistant,
    /// Tool and function results: text from outside, where indirect injection hides.
    Tool,
    /// Documents attached to a prompt.
    Document,
    /// Anything else (unknown endpoints, metadata).
    Other,
}

/// Fields that name things rather than carry text. `model` is not one of them: the client
/// writes it freely, and a key pasted there would go upstream like any other text.
const STRUCTURAL: [&str; 15] = [
    "role",
    "type",
    "id",
    "object",
    "tool_call_id",
    "call_id",
    "mime_type",
    "mimeType",
    "media_type",
    "format",
    "encoding_format",
    "reasoning_effort",
    "service_tier",
    "detail",
    "voice",
];

/// Base64 media (images, audio, files) is not text.
fn is_media(path: &[Seg], value: &str) -> bool {
    if value.starts_with("data:") && value[..value.len().min(100)].contains(";base64,") {
        return true;
    }
    let last = match path.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    matches!(last, "data" | "b64_json" | "file_data" | "audio")
        && value.len() >= 64
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r')
        })
}

/// For each string: `None` to skip it, or its role.
pub fn classify(strings: &[JsonString]) -> Vec<Option<Role>> {
    // Sibling `role` and `type` fields, by the path of the object holding them.
    let mut roles: HashMap<String, &str> = HashMap::new();
    let mut types: HashMap<String, &str> = HashMap::new();
    for s in strings {
        if let Some((Seg::Key(k), parent)) = s.path.split_last() {
            if k == "role" {
                roles.insert(path_string(parent), &s.text);
            } else if k == "type" {
                types.insert(path_string(parent), &s.text);
            }
        }
    }
    strings
        .iter()
        .map(|s| {
            if let Some(Seg::Key(k)) = s.path.last() {
                if STRUCTURAL.contains(&k.as_str()) {
                    return None;
                }
            }
            if is_media(&s.path, &s.text) {
                return None;
            }
            Some(role_of(&s.path, &roles, &types))
        })
        .collect()
}

fn role_of(path: &[Seg], roles: &HashMap<String, &str>, types: &HashMap<String, &str>) -> Role {
    let top = match path.first() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    if matches!(
        top,
        "system" | "instructions" | "systemInstruction" | "system_instruction"
    ) {
        return Role::System;
    }
    // The nearest enclosing object with a `type` that marks outside content.
    for n in (1..=path.len()).rev() {
        if let Some(t) = types.get(&path_string(&path[..n])) {
            match *t {
                "tool_result"
                | "function_call_output"
                | "tool"
                | "mcp_tool_result"
                | "web_search_tool_result" => return Role::Tool,
                "document" | "input_file" | "search_result" => return Role::Document,
                _ => {}
            }
        }
        if let Some(Seg::Key(k)) = path.get(n - 1) {
            if k == "functionResponse" || k == "function_response" {
                return Role::Tool;
            }
        }
    }
    // The message (or Gemini content) the string belongs to, and its role.
    if path.len() >= 2 && matches!(top, "messages" | "contents" | "input") {
        if let Some(r) = roles.get(&path_string(&path[..2])) {
            return match *r {
                "user" => Role::User,
                "system" | "developer" => Role::System,
                "assistant" | "model" => Role::Assistant,
                "tool" | "function" => Role::Tool,
                _ => Role::Other,
            };
        }
        if top == "input" {
            return Role::User;
        }
    }
    match top {
        "prompt" | "input" | "messages" | "contents" => Role::User,
        _ => Role::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::json_text::strings;

    fn roles(doc: &str) -> Vec<(String, Option<Role>)> {
        let s = strings(doc.as_bytes()).expect("json");
        let c = classify(&s);
        s.iter()
            .zip(c)
            .map(|(s, r)| (path_string(&s.path), r))
            .collect()
    }

    #[test]
    fn openai_chat_roles_and_skips() {
        let img = format!("data:image/png;base64,{}", "A".repeat(200));
        let doc = serde_json::json!({"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":img}}]},
            {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"result text"}]}).to_string();
        let r = roles(&doc);
        let get = |p: &str| r.iter().find(|(q, _)| q == p).map(|(_, r)| *r);
        assert_eq!(
            get("model"),
            Some(Some(Role::Other)),
            "the model is inspected"
        );
        assert_eq!(get("messages[0].content"), Some(Some(Role::System)));
        assert_eq!(get("messages[1].content[0].text"), Some(Some(Role::User)));
        assert_eq!(
            get("messages[1].content[1].image_url.url"),
            Some(None),
            "media is skipped"
        );
        assert_eq!(
            get("messages[2].tool_calls[0].function.arguments"),
            Some(Some(Role::Assistant))
        );
        assert_eq!(get("messages[3].content"), Some(Some(Role::Tool)));
    }

    #[test]
    fn anthropic_and_gemini_outside_content() {
        let doc = serde_json::json!({"system":"s","messages":[{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"from a web page"}]},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc text"}}]}]}).to_string();
        let r = roles(&doc);
        let get = |p: &str| r.iter().find(|(q, _)| q == p).map(|(_, r)| *r);
        assert_eq!(get("system"), Some(Some(Role::System)));
        assert_eq!(
            get("messages[0].content[0].content[0].text"),
            Some(Some(Role::Tool))
        );
        assert_eq!(
            get("messages[0].content[1].source.data"),
            Some(Some(Role::Document))
        );
        let g = serde_json::json!({"contents":[{"role":"user","parts":[{"text":"q"},{"functionResponse":{"name":"f","response":{"out":"tool says"}}}]}]}).to_string();
        let r = roles(&g);
        let get = |p: &str| r.iter().find(|(q, _)| q == p).map(|(_, r)| *r);
        assert_eq!(get("contents[0].parts[0].text"), Some(Some(Role::User)));
        assert_eq!(
            get("contents[0].parts[1].functionResponse.response.out"),
            Some(Some(Role::Tool))
        );
    }
}
