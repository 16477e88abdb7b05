//! Providers: where each AI API lives, how it authenticates, and how it spells its errors.
//!
//! A provider is data (kind, upstream, auth style, keyring entry) plus the little behaviour that
//! differs per wire format: where the client puts its key, where the model name lives, and the
//! shape of an error body. Everything else in the request path is provider-neutral.

mod error_format;
mod presets;
pub mod text;

pub use error_format::{error_body, ErrorClass};
pub use presets::{preset, PRESET_NAMES};

use http::HeaderMap;
use serde::Deserialize;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }

    /// Whether errors should be written in OpenAI's shape (OpenAI and every compatible API).
    pub fn speaks_openai(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::OpenAiCompatible)
    }
}

/// How the real key is put on the upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuthStyle {
    /// `Authorization: Bearer KEY`
    Bearer,
    /// `x-api-key: KEY` (Anthropic)
    XApiKey,
    /// `x-goog-api-key: KEY` (Gemini)
    XGoogApiKey,
    /// `api-key: KEY` (Azure OpenAI)
    ApiKey,
    /// `?key=KEY` in the query string
    Query,
    /// No key at all (a local model server)
    None,
}

/// Headers in which SDKs send a key. Airlock accepts its own key in any of them and never
/// forwards any of them upstream.
pub const CLIENT_KEY_HEADERS: [&str; 4] =
    ["authorization", "x-api-key", "x-goog-api-key", "api-key"];

/// A client credential found on an incoming request, and where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Header(&'static str),
    Query,
}

/// Finds the key a client sent, whichever header its SDK uses.
///
/// Returns the first non-empty one; `Authorization` must be a bearer token.
pub fn client_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<(&'a str, KeySource)> {
    for name in CLIENT_KEY_HEADERS {
        let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let value = if name == "authorization" {
            match strip_bearer(value) {
                Some(token) => token,
                None => continue,
            }
        } else {
            value.trim()
        };
        if !value.is_empty() {
            return Some((value, KeySource::Header(name)));
        }
    }
    query
        .and_then(|q| query_param(q, "key"))
        .filter(|v| !v.is_empty())
        .map(|v| (v, KeySource::Query))
}

fn strip_bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The raw value of one `name=value` pair in a query string (no percent-decoding: keys
/// are URL-safe and a decoded form is never needed).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The query string without any `key=` pair, so an Airlock key never travels upstream.
pub fn query_without_key(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("key"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Gemini carries the model in the path: `/v1beta/models/gemini-2.0-flash:generateContent`.
/// The path is percent-decoded first, as the upstream decodes it: `%67emini-2.5-pro` is
/// `gemini-2.5-pro` there, and must be here.
pub fn model_from_path(path: &str) -> Option<String> {
    let path = percent_decode(path);
    let rest = path.split("/models/").nth(1)?;
    let end = rest.find([':', '/', '?']).unwrap_or(rest.len());
    let model = &rest[..end];
    (!model.is_empty()).then(|| model.to_owned())
}

/// Whether a Gemini request path asks for a stream. Google decodes the path before routing, so
/// `%3AstreamGenerateContent` streams as `:streamGenerateContent` does.
pub fn gemini_streams(path: &str) -> bool {
    percent_decode(path).contains(":streamGenerateContent")
}

/// `%XX` escapes decoded (invalid UTF-8 replaced); a `%` not followed by two hex digits stays.
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return s.into();
    }
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

/// A model name as limits and prices compare it: trimmed, ASCII-lowercased, without a leading
/// `models/` (Gemini's resource name). Providers treat these spellings as one model, so a
/// deny list must too.
pub fn normalize_model(model: &str) -> String {
    let m = model.trim().to_ascii_lowercase();
    match m.strip_prefix("models/") {
        Some(rest) => rest.to_owned(),
        None => m,
    }
}

/// The names a normalized model answers to, most specific first: itself, then with each
/// provider prefix peeled off (`openrouter/openai/o1-mini` → `openai/o1-mini` → `o1-mini`).
pub fn model_names(normalized: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(normalized), |m| {
        m.split_once('/').map(|(_, rest)| rest)
    })
}

/// Whether a client-sent key looks like a real provider key rather than a typo or a dummy, and
/// whose it is when its prefix says (`Some(None)`: a provider key of a shape several providers
/// use, such as a bare `sk-`). Used only to choose the error message: any non-Airlock key is
/// refused either way.
pub fn provider_key_kind(key: &str) -> Option<Option<&'static str>> {
    // Most specific prefix first.
    const PREFIXES: [(&str, Option<&str>); 17] = [
        ("sk-ant-", Some("anthropic")),
        ("sk-proj-", Some("openai")),
        ("sk-svcacct-", Some("openai")),
        ("sk-admin-", Some("openai")),
        ("sk-or-", Some("openrouter")),
        ("AIza", Some("gemini")),
        ("gsk_", Some("groq")),
        ("xai-", Some("xai")),
        ("pplx-", Some("perplexity")),
        ("hf_", Some("huggingface")),
        ("r8_", Some("replicate")),
        ("fw_", Some("fireworks")),
        ("csk-", Some("cerebras")),
        ("nvapi-", Some("nvidia")),
        ("tgp_", Some("together")),
        ("sk-", None),
        ("sk_", None),
    ];
    if key.len() < 20 {
        return None;
    }
    PREFIXES
        .iter()
        .find(|(p, _)| key.starts_with(p))
        .map(|(_, who)| *who)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_key_in_each_sdk_header() {
        for (name, value, want) in [
            ("authorization", "Bearer alk_abc", "alk_abc"),
            ("authorization", "bearer   alk_abc ", "alk_abc"),
            ("x-api-key", "alk_abc", "alk_abc"),
            ("x-goog-api-key", "alk_abc", "alk_abc"),
            ("api-key", "alk_abc", "alk_abc"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(client_key(&h, None).map(|k| k.0), Some(want), "{name}");
        }
    }

    #[test]
    fn basic_auth_is_not_a_key_and_query_key_is() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(client_key(&h, None), None);
        assert_eq!(
            client_key(&h, Some("alt=sse&key=alk_q")),
            Some(("alk_q", KeySource::Query))
        );
    }

    #[test]
    fn query_key_is_removed_and_the_rest_kept() {
        assert_eq!(
            query_without_key("alt=sse&key=alk_x&foo=1"),
            "alt=sse&foo=1"
        );
        assert_eq!(query_without_key("key=alk_x"), "");
        assert_eq!(query_without_key("keys=1"), "keys=1");
    }

    #[test]
    fn gemini_model_comes_from_the_path() {
        assert_eq!(
            model_from_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent").as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            model_from_path("/v1beta/models/text-embedding-004").as_deref(),
            Some("text-embedding-004")
        );
        assert_eq!(model_from_path("/v1beta/models"), None);
    }

    #[test]
    fn gemini_model_in_an_escaped_path_is_decoded() {
        for path in [
            "/v1beta/models/%67emini-2.5-pro:generateContent",
            "/v1beta/%6Dodels/gemini-2.5-pro:generateContent",
            "/v1beta/models/gemini-2.5-pro%3AgenerateContent",
        ] {
            assert_eq!(
                model_from_path(path).as_deref(),
                Some("gemini-2.5-pro"),
                "{path}"
            );
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("100%zz"), "100%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn model_names_normalize_and_peel_prefixes() {
        assert_eq!(normalize_model(" Claude-Opus-4-1 "), "claude-opus-4-1");
        assert_eq!(normalize_model("models/Gemini-2.5-Pro"), "gemini-2.5-pro");
        assert_eq!(
            model_names("openrouter/openai/o1-mini").collect::<Vec<_>>(),
            ["openrouter/openai/o1-mini", "openai/o1-mini", "o1-mini"]
        );
        assert_eq!(model_names("gpt-4o").collect::<Vec<_>>(), ["gpt-4o"]);
    }

    #[test]
    fn provider_keys_are_named_by_their_prefix() {
        let tail = "x".repeat(24);
        for (prefix, want) in [
            ("sk-ant-api03-", Some(Some("anthropic"))),
            ("AIza", Some(Some("gemini"))),
            ("sk-proj-", Some(Some("openai"))),
            ("gsk_", Some(Some("groq"))),
            ("sk-", Some(None)),
            ("alk_", None),
        ] {
            assert_eq!(
                provider_key_kind(&format!("{prefix}{tail}")),
                want,
                "{prefix}"
            );
        }
        assert_eq!(provider_key_kind("sk-short"), None);
    }
}
