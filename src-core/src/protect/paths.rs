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

/// Fields that name things rather than carry text. They go upstream like any other string, so a
/// key pasted into one is found (ordinary ids such as `call_…`, `toolu_…`, `msg_…`, `resp_…` are
/// not findings), but they are read as names ([`Form::Name`]): not prose for the injection
/// heuristics, and never the text that names a conversation. `model` is read as text.
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

/// How a string that is inspected is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As it is.
    Plain,
    /// Base64 of a textual document (a `data:` URL's text after `prefix` bytes, or a `data`
    /// field next to a textual `media_type`/`mimeType`): decoded and scanned.
    Base64 { prefix: usize },
    /// A name (a structural field such as `role`, `type` or `id`, or an object key): scanned
    /// for values, but not prose.
    Name,
}

/// One inspected string: whose text it is and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub role: Role,
    pub form: Form,
}

/// Keys whose value may be a base64 payload.
const PAYLOAD_KEYS: [&str; 4] = ["data", "b64_json", "file_data", "audio"];

/// Media types whose bytes are text, so a base64 payload of them is decoded and scanned.
/// `application/octet-stream` is decoded too (a `.env` is often sent so) and then skipped if
/// it is recognisably binary. Images, audio, video and PDFs are never decoded.
pub fn is_textual(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, sub)) = m.split_once('/') else {
        return false;
    };
    match top {
        "text" => true,
        "message" => sub == "rfc822",
        "application" => {
            sub.ends_with("+json")
                || sub.ends_with("+xml")
                || matches!(
                    sub,
                    "json"
                        | "jsonl"
                        | "x-ndjson"
                        | "x-jsonlines"
                        | "xml"
                        | "yaml"
                        | "x-yaml"
                        | "toml"
                        | "x-toml"
                        | "javascript"
                        | "x-javascript"
                        | "ecmascript"
                        | "typescript"
                        | "x-typescript"
                        | "x-sh"
                        | "x-shellscript"
                        | "x-pem-file"
                        | "x-x509-ca-cert"
                        | "pkcs8"
                        | "x-pkcs12-text"
                        | "sql"
                        | "x-sql"
                        | "graphql"
                        | "csv"
                        | "x-csv"
                        | "x-www-form-urlencoded"
                        | "x-httpd-php"
                        | "x-python"
                        | "x-python-code"
                        | "x-perl"
                        | "x-ruby"
                        | "x-tex"
                        | "rtf"
                        | "x-ipynb+json"
                        | "octet-stream"
                )
        }
        _ => false,
    }
}

/// `None` for media (skipped), or how to read the string.
fn form_of(
    path: &[Seg],
    value: &str,
    mimes: &HashMap<String, &str>,
    types: &HashMap<String, &str>,
) -> Option<Form> {
    if let Some(rest) = value.strip_prefix("data:") {
        // Bytes, not a `&str` cut: byte 100 may fall inside a character. `;` is ASCII, so a
        // match ends on a char boundary.
        let head = &rest.as_bytes()[..rest.len().min(100)];
        if let Some(at) = memchr::memmem::find(head, b";base64,") {
            let mime = &rest[..at];
            let mime = mime.split(';').next().unwrap_or(mime);
            let prefix = 5 + at + ";base64,".len();
            return (mime.is_empty() || is_textual(mime)).then_some(Form::Base64 { prefix });
        }
    }
    let Some((Seg::Key(last), parent)) = path.split_last() else {
        return Some(Form::Plain);
    };
    if !PAYLOAD_KEYS.contains(&last.as_str()) {
        return Some(Form::Plain);
    }
    let parent = path_string(parent);
    // Anthropic's `{"type":"text","media_type":"text/plain","data":…}` is plain text.
    if types.get(&parent) == Some(&"text") {
        return Some(Form::Plain);
    }
    match mimes.get(&parent) {
        Some(mime) if is_textual(mime) => Some(Form::Base64 { prefix: 0 }),
        Some(_) => None,
        // No type beside it: base64 media (images, audio) as before, anything else is text.
        None => {
            let media = value.len() >= 64
                && value.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r')
                });
            (!media).then_some(Form::Plain)
        }
    }
}

/// For each string: `None` to skip it, or its role.
#[cfg(test)]
pub fn classify(strings: &[JsonString]) -> Vec<Option<Role>> {
    classify_fields(strings)
        .into_iter()
        .map(|f| f.map(|f| f.role))
        .collect()
}

/// For each string: `None` to skip it (media, structural fields), or its role and form.
pub fn classify_fields(strings: &[JsonString]) -> Vec<Option<Field>> {
    // Sibling `role`, `type` and media type fields, by the path of the object holding them.
    let mut roles: HashMap<String, &str> = HashMap::new();
    let mut types: HashMap<String, &str> = HashMap::new();
    let mut mimes: HashMap<String, &str> = HashMap::new();
    for s in strings.iter().filter(|s| !s.key) {
        if let Some((Seg::Key(k), parent)) = s.path.split_last() {
            let map = match k.as_str() {
                "role" => &mut roles,
                "type" => &mut types,
                "media_type" | "mimeType" | "mime_type" => &mut mimes,
                _ => continue,
            };
            map.insert(path_string(parent), &s.text);
        }
    }
    strings
        .iter()
        .map(|s| {
            if s.key {
                // A key is a name, but one that holds a value goes upstream like any text.
                return Some(Field {
                    role: role_of(&s.path, &roles, &types),
                    form: Form::Name,
                });
            }
            if let Some(Seg::Key(k)) = s.path.last() {
                if STRUCTURAL.contains(&k.as_str()) {
                    return Some(Field {
                        role: Role::Other,
                        form: Form::Name,
                    });
                }
            }
            let form = form_of(&s.path, &s.text, &mimes, &types)?;
            Some(Field {
                role: role_of(&s.path, &roles, &types),
                form,
            })
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

    /// Regression: base64 text documents were skipped as media.
    #[test]
    fn base64_documents_are_read_by_their_media_type() {
        let b64 = "QUJD".repeat(20);
        let doc = serde_json::json!({"messages":[{"role":"user","content":[
            {"type":"document","source":{"type":"base64","media_type":"text/plain","data":b64}},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":b64}},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":b64}},
            {"type":"input_file","file_data":format!("data:application/json;base64,{b64}")},
            {"type":"image_url","image_url":{"url":format!("data:image/png;base64,{b64}")}}]}]})
        .to_string();
        let s = strings(doc.as_bytes()).expect("json");
        let f = classify_fields(&s);
        let get = |p: &str| {
            s.iter()
                .zip(&f)
                .find(|(s, _)| path_string(&s.path) == p)
                .and_then(|(_, f)| f.map(|f| f.form))
        };
        assert_eq!(
            get("messages[0].content[0].source.data"),
            Some(Form::Base64 { prefix: 0 })
        );
        assert_eq!(
            get("messages[0].content[1].source.data"),
            Some(Form::Plain),
            "type text"
        );
        assert_eq!(get("messages[0].content[2].source.data"), None, "an image");
        assert_eq!(
            get("messages[0].content[3].file_data"),
            Some(Form::Base64 {
                prefix: "data:application/json;base64,".len()
            })
        );
        assert_eq!(get("messages[0].content[4].image_url.url"), None);
        assert!(is_textual("application/x-sh") && is_textual("TEXT/Markdown; charset=utf-8"));
        assert!(!is_textual("application/pdf") && !is_textual("image/svg"));
    }
}
