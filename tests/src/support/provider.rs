//! Per-provider knowledge the tests need: paths, request bodies, how a client authenticates,
//! where the answer text is, and what an error body must look like.

use super::client::{post, HttpResponse, RequestBuilder};
use crate::mock::record::RecordedRequest;
use serde_json::{json, Value};
use std::net::SocketAddr;

pub const REQUEST_ID_HEADER: &str = "x-airlock-request-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];

    /// The path prefix and config name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-sonnet-4-5",
            Provider::Gemini => "gemini-2.0-flash",
        }
    }

    /// The path on Airlock of this provider's main generation endpoint.
    pub fn chat_path(self, stream: bool) -> String {
        self.chat_path_for_model(self.model(), stream)
    }

    pub fn chat_path_for_model(self, model: &str, stream: bool) -> String {
        match self {
            Provider::OpenAi => "/openai/v1/chat/completions".to_owned(),
            Provider::Anthropic => "/anthropic/v1/messages".to_owned(),
            Provider::Gemini if stream => {
                format!("/gemini/v1beta/models/{model}:streamGenerateContent?alt=sse")
            }
            Provider::Gemini => format!("/gemini/v1beta/models/{model}:generateContent"),
        }
    }

    /// The path the mock should see for [`chat_path`](Self::chat_path) (without query).
    pub fn upstream_chat_path(self) -> String {
        match self {
            Provider::OpenAi => "/v1/chat/completions".to_owned(),
            Provider::Anthropic => "/v1/messages".to_owned(),
            Provider::Gemini => format!("/v1beta/models/{}:generateContent", self.model()),
        }
    }

    pub fn chat_body(self, text: &str, stream: bool) -> Value {
        self.chat_body_for_model(self.model(), text, stream)
    }

    pub fn chat_body_for_model(self, model: &str, text: &str, stream: bool) -> Value {
        match self {
            Provider::OpenAi => {
                let mut v =
                    json!({"model": model, "messages": [{"role": "user", "content": text}]});
                if stream {
                    v["stream"] = Value::from(true);
                    v["stream_options"] = json!({"include_usage": true});
                }
                v
            }
            Provider::Anthropic => {
                let mut v = json!({
                    "model": model, "max_tokens": 256,
                    "messages": [{"role": "user", "content": text}]
                });
                if stream {
                    v["stream"] = Value::from(true);
                }
                v
            }
            Provider::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}),
        }
    }

    /// The header this provider's SDK sends its key in.
    pub fn auth_header(self, key: &str) -> (&'static str, String) {
        match self {
            Provider::OpenAi => ("authorization", format!("Bearer {key}")),
            Provider::Anthropic => ("x-api-key", key.to_owned()),
            Provider::Gemini => ("x-goog-api-key", key.to_owned()),
        }
    }

    /// Headers the SDK always sends besides auth.
    pub fn sdk_headers(self) -> Vec<(&'static str, String)> {
        match self {
            Provider::Anthropic => vec![("anthropic-version", "2023-06-01".to_owned())],
            _ => Vec::new(),
        }
    }

    /// A complete generation request with `key` (None: no credentials at all).
    pub fn chat(
        self,
        addr: SocketAddr,
        key: Option<&str>,
        text: &str,
        stream: bool,
    ) -> RequestBuilder {
        let mut req = post(addr, &self.chat_path(stream)).headers(self.sdk_headers());
        if let Some(k) = key {
            let (n, v) = self.auth_header(k);
            req = req.header(n, &v);
        }
        req.json(&self.chat_body(text, stream))
    }

    /// The answer text of a non-streamed response.
    pub fn answer(self, body: &Value) -> Option<String> {
        let p = match self {
            Provider::OpenAi => "/choices/0/message/content",
            Provider::Anthropic => "/content/0/text",
            Provider::Gemini => "/candidates/0/content/parts/0/text",
        };
        body.pointer(p).and_then(Value::as_str).map(str::to_owned)
    }

    /// The text delta carried by one streamed event, if any.
    pub fn delta(self, data: &Value) -> Option<String> {
        let p = match self {
            Provider::OpenAi => "/choices/0/delta/content",
            Provider::Anthropic => "/delta/text",
            Provider::Gemini => "/candidates/0/content/parts/0/text",
        };
        data.pointer(p).and_then(Value::as_str).map(str::to_owned)
    }

    /// The credential the mock received in this provider's auth style.
    pub fn upstream_credential(self, rec: &RecordedRequest) -> Option<String> {
        match self {
            Provider::OpenAi => rec
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned),
            Provider::Anthropic => rec.header("x-api-key").map(str::to_owned),
            Provider::Gemini => rec.header("x-goog-api-key").map(str::to_owned).or_else(|| {
                rec.query.as_deref().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
                })
            }),
        }
    }

    /// Assert `res` is an error with `status`, Airlock's request id, and a body in this
    /// provider's own error format. Returns the error message.
    #[track_caller]
    pub fn assert_error(self, res: &HttpResponse, status: u16) -> String {
        assert_eq!(
            res.status,
            status,
            "{}: expected {status}, got {}: {}",
            self.name(),
            res.status,
            res.text()
        );
        assert_request_id(res);
        assert_error_format(self, res)
    }
}

/// Assert the error body of `res` has `provider`'s shape; returns the message.
#[track_caller]
pub fn assert_error_format(provider: Provider, res: &HttpResponse) -> String {
    let body = res.json();
    let ctx = format!("{} error body {body}", provider.name());
    match provider {
        Provider::OpenAi => {
            let err = body
                .get("error")
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("{ctx}: no `error` object"));
            assert!(
                err.get("message").is_some_and(Value::is_string),
                "{ctx}: error.message must be a string"
            );
            assert!(
                err.get("type").is_some_and(Value::is_string),
                "{ctx}: error.type must be a string"
            );
            assert!(
                err.contains_key("code"),
                "{ctx}: error.code must be present"
            );
            err["message"].as_str().unwrap_or_default().to_owned()
        }
        Provider::Anthropic => {
            assert_eq!(
                body.get("type").and_then(Value::as_str),
                Some("error"),
                "{ctx}: type must be \"error\""
            );
            let err = body
                .get("error")
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("{ctx}: no `error` object"));
            assert!(
                err.get("type").is_some_and(Value::is_string),
                "{ctx}: error.type must be a string"
            );
            assert!(
                err.get("message").is_some_and(Value::is_string),
                "{ctx}: error.message must be a string"
            );
            err["message"].as_str().unwrap_or_default().to_owned()
        }
        Provider::Gemini => {
            let err = body
                .get("error")
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("{ctx}: no `error` object"));
            assert_eq!(
                err.get("code").and_then(Value::as_u64),
                Some(u64::from(res.status)),
                "{ctx}: error.code must equal the HTTP status"
            );
            assert!(
                err.get("message").is_some_and(Value::is_string),
                "{ctx}: error.message must be a string"
            );
            let status = err
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{ctx}: error.status must be a string"));
            assert!(
                !status.is_empty() && status.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{ctx}: error.status must be a canonical code like PERMISSION_DENIED"
            );
            err["message"].as_str().unwrap_or_default().to_owned()
        }
    }
}

#[track_caller]
pub fn assert_request_id(res: &HttpResponse) {
    let id = res.header(REQUEST_ID_HEADER);
    assert!(
        id.is_some_and(|v| !v.trim().is_empty()),
        "status {}: response lacks {REQUEST_ID_HEADER}; headers {:?}",
        res.status,
        res.headers
    );
}

/// Assert that no `alk_` key reached the upstream in any header, the query or the body.
#[track_caller]
pub fn assert_no_local_key(rec: &RecordedRequest) {
    for (name, value) in &rec.headers {
        assert!(
            !value.contains("alk_"),
            "upstream got an alk_ key in header {name}: {value}"
        );
    }
    if let Some(q) = &rec.query {
        assert!(
            !q.contains("alk_"),
            "upstream got an alk_ key in the query: {q}"
        );
    }
    if let Some(b) = &rec.body {
        assert!(!b.contains("alk_"), "upstream got an alk_ key in the body");
    }
}
