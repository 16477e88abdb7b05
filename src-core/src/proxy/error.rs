//! Every way a request can fail, and `fail`: the one place an error becomes a response.

use crate::keys::VaultError;
use crate::limits::LimitError;
use crate::providers::{error_body, ErrorClass, ProviderKind};
use bytes::Bytes;
use http::StatusCode;

/// Who caused a failure; decides the log level and helps the reader of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorSource {
    Client,
    Airlock,
    Upstream,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("unknown provider prefix {prefix:?}; known providers: {}. Point your SDK at http://HOST:PORT/<provider>/…", known.join(", "))]
    UnknownProvider { prefix: String, known: Vec<String> },
    #[error("invalid request path: {0}")]
    BadPath(&'static str),
    #[error("Host {0:?} is not a loopback name; Airlock only answers requests addressed to localhost (this blocks DNS rebinding). Add it to security.allowed_hosts if you really mean it")]
    HostNotAllowed(String),
    #[error("requests from browser origin {0:?} are refused; add it to security.allowed_origins to allow a local web app")]
    OriginNotAllowed(String),
    #[error("no API key: send an Airlock key (alk_…) the way your SDK sends its API key. Create one with `airlock keys issue NAME`, or run your command under `airlock exec -- …`")]
    MissingKey,
    #[error("unknown or revoked Airlock key; issue a new one with `airlock keys issue NAME`")]
    UnknownKey,
    #[error("that is not an Airlock key; Airlock only accepts local keys (alk_…). Issue one with `airlock keys issue NAME`")]
    NotAnAirlockKey,
    /// `key_of` names whose key it is, when its prefix says: an Anthropic key sent to the
    /// `openai` route is called an Anthropic key.
    #[error("this request carries {}. Keep it out of your app: move it into the OS keyring with `airlock keys set {}` (or `airlock keys import-env .env`), then use an Airlock key from `airlock keys issue NAME` instead", provider_key_phrase(*.key_of), .key_of.unwrap_or(.provider))]
    ProviderKeyFromClient {
        /// The route the request came in on.
        provider: String,
        key_of: Option<&'static str>,
    },
    #[error("Airlock key {0:?} has expired; issue a new one with `airlock keys issue`")]
    KeyExpired(String),
    #[error(
        "Airlock key {key:?} is not allowed to use provider {provider:?} (allowed: {allowed})"
    )]
    ProviderOutOfScope {
        key: String,
        provider: String,
        allowed: String,
    },
    #[error("Airlock key {key:?} is not allowed to use model {model:?} (allowed: {allowed})")]
    ModelOutOfScope {
        key: String,
        model: String,
        allowed: String,
    },
    #[error("Airlock key {key:?} may only use some models ({allowed}), and this request names none that Airlock can read: send the model as a string \"model\" field of a JSON object body")]
    ModelUnread { key: String, allowed: String },
    #[error("the body names the model {body:?} but the path names {path:?}: Gemini serves and bills the model in the path, so Airlock checks and prices that one; drop \"model\" from the body or make the two agree")]
    ModelMismatch { path: String, body: String },
    #[error("Content-Type {0:?} is not supported here: send the body as application/json")]
    UnsupportedMediaType(String),
    #[error("Content-Encoding {0:?} request bodies are not accepted: Airlock must inspect the body and does not decode this encoding; send it uncompressed")]
    UnsupportedEncoding(String),
    #[error("request body is larger than the {limit}-byte limit (max_body in the Airlock config)")]
    BodyTooLarge { limit: usize },
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the client sent no request body bytes for {secs}s (timeouts.request_body in the Airlock config); the request was not sent upstream")]
    BodyTimeout { secs: u64 },
    #[error("Airlock cannot use the {provider} key: {source}")]
    Vault {
        provider: String,
        source: VaultError,
    },
    #[error("upstream {host} is unreachable: {detail}")]
    UpstreamUnreachable { host: String, detail: String },
    /// The upstream compressed its answer in a way Airlock cannot decode, so it cannot be
    /// guarded: refused rather than passed on unread.
    #[error(transparent)]
    UpstreamEncoding(#[from] super::decode::UnknownEncoding),
    #[error(
        "upstream {host} did not answer within {secs}s (timeouts.{phase} in the Airlock config)"
    )]
    UpstreamTimeout {
        host: String,
        phase: &'static str,
        secs: u64,
    },
    #[error("internal Airlock error: {0}")]
    Internal(String),
    #[error("{0}")]
    Limit(#[from] crate::limits::LimitError),
    #[error("this request was blocked: it contains {what} (rule {rule}) at {location}. Remove it and retry; if this is a false alarm, set policy.rules.\"{rule}\" in the Airlock config")]
    Blocked {
        what: &'static str,
        rule: String,
        location: String,
    },
    #[error("this request body cannot be inspected ({0}), and the policy blocks what Airlock cannot inspect (set policy.unparseable = \"passthrough\" for this provider to allow it)")]
    Uninspectable(String),
}

/// "a real anthropic API key", or "a real provider API key" when the prefix does not say whose.
fn provider_key_phrase(key_of: Option<&str>) -> String {
    format!("a real {} API key", key_of.unwrap_or("provider"))
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            UnknownProvider { .. } => StatusCode::NOT_FOUND,
            BadPath(_) | MalformedJson(_) | BodyRead(_) | ModelMismatch { .. } => {
                StatusCode::BAD_REQUEST
            }
            HostNotAllowed(_) | OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            MissingKey | UnknownKey | NotAnAirlockKey | ProviderKeyFromClient { .. } => {
                StatusCode::UNAUTHORIZED
            }
            KeyExpired(_)
            | ProviderOutOfScope { .. }
            | ModelOutOfScope { .. }
            | ModelUnread { .. } => StatusCode::FORBIDDEN,
            UnsupportedMediaType(_) | UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Vault {
                source: VaultError::NotSet { .. },
                ..
            } => StatusCode::UNAUTHORIZED,
            Vault { source, .. } if source.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Vault { .. } | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            UpstreamUnreachable { .. } | UpstreamEncoding(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Blocked { .. } | Uninspectable(_) => StatusCode::BAD_REQUEST,
            Limit(l) => match l {
                LimitError::Budget { .. }
                | LimitError::KeyBudget { .. }
                | LimitError::BudgetHeld { .. }
                | LimitError::Rpm { .. }
                | LimitError::Tpm { .. }
                | LimitError::TpmHeld { .. } => StatusCode::TOO_MANY_REQUESTS,
                LimitError::MaxTokens { .. }
                | LimitError::MaxTokensUnreadable { .. }
                | LimitError::MaxTokensUnset { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::FORBIDDEN,
            },
        }
    }

    /// How long a client should wait before retrying, where waiting helps.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ProxyError::Limit(l) => l.retry_after(),
            ProxyError::Vault { source, .. } if source.is_transient() => {
                Some(std::time::Duration::from_secs(5))
            }
            _ => None,
        }
    }

    pub fn source(&self) -> ErrorSource {
        use ProxyError::*;
        match self {
            Vault { .. } | Internal(_) => ErrorSource::Airlock,
            UpstreamUnreachable { .. } | UpstreamTimeout { .. } | UpstreamEncoding(_) => {
                ErrorSource::Upstream
            }
            _ => ErrorSource::Client,
        }
    }

    /// Airlock's stable, machine-readable reason, used as the OpenAI `code` and in records.
    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            UnknownProvider { .. } => "airlock_unknown_provider",
            BadPath(_) => "airlock_bad_path",
            HostNotAllowed(_) => "airlock_host_not_allowed",
            OriginNotAllowed(_) => "airlock_origin_not_allowed",
            MissingKey => "airlock_missing_key",
            UnknownKey => "airlock_unknown_key",
            NotAnAirlockKey => "airlock_not_an_airlock_key",
            ProviderKeyFromClient { .. } => "airlock_provider_key_from_client",
            KeyExpired(_) => "airlock_key_expired",
            ProviderOutOfScope { .. } => "airlock_provider_out_of_scope",
            ModelOutOfScope { .. } | ModelUnread { .. } => "airlock_model_out_of_scope",
            ModelMismatch { .. } => "airlock_model_mismatch",
            UnsupportedMediaType(_) => "airlock_unsupported_media_type",
            UnsupportedEncoding(_) => "airlock_unsupported_encoding",
            BodyTooLarge { .. } => "airlock_body_too_large",
            MalformedJson(_) => "airlock_malformed_json",
            BodyRead(_) => "airlock_body_read",
            BodyTimeout { .. } => "airlock_body_timeout",
            Vault {
                source: VaultError::NotSet { .. },
                ..
            } => "airlock_provider_key_missing",
            Vault {
                source: VaultError::Locked { .. },
                ..
            } => "airlock_keyring_locked",
            Vault {
                source: VaultError::Unreachable { .. },
                ..
            } => "airlock_keyring_unreachable",
            Vault {
                source: VaultError::Timeout { .. },
                ..
            } => "airlock_keyring_timeout",
            Vault { .. } => "airlock_keyring_error",
            UpstreamUnreachable { .. } => "airlock_upstream_unreachable",
            UpstreamEncoding(_) => "airlock_upstream_encoding",
            UpstreamTimeout { .. } => "airlock_upstream_timeout",
            Internal(_) => "airlock_internal",
            Limit(l) => l.code(),
            Blocked {
                what: "prompt injection",
                ..
            } => "airlock_blocked_injection",
            Blocked {
                what: "personal data",
                ..
            } => "airlock_blocked_pii",
            Blocked { .. } => "airlock_blocked_secret",
            Uninspectable(_) => "airlock_uninspectable",
        }
    }

    fn class(&self) -> ErrorClass {
        // Every refusal's status says what it is; the only 500s are Airlock's own failures.
        ErrorClass::for_status(self.status())
    }

    /// The body in the provider's own error format; an unknown prefix gets OpenAI's.
    pub fn body(&self, kind: Option<ProviderKind>) -> Bytes {
        self.body_with(kind, &format!("Airlock: {self}"))
    }

    /// [`Self::body`] with `message` (this error's own, masked) as the text.
    pub fn body_with(&self, kind: Option<ProviderKind>, message: &str) -> Bytes {
        error_body(
            kind.unwrap_or(ProviderKind::OpenAi),
            self.status(),
            self.class(),
            self.code(),
            message,
        )
    }
}

/// The upstream's error message is cut to this many characters.
const UPSTREAM_MESSAGE_MAX: usize = 1000;

/// An upstream error whose body is not JSON (an HTML page from a load balancer, a plain-text
/// 429, nothing at all), in the provider's own error format, so the SDK raises its usual error.
/// The upstream's text is kept as the message: tags stripped from HTML, whitespace collapsed,
/// passed through the output guard, and cut between words to [`UPSTREAM_MESSAGE_MAX`] characters.
pub fn wrap_upstream_error(
    kind: ProviderKind,
    status: StatusCode,
    html: bool,
    raw: &[u8],
    guard: Option<&crate::protect::restore::OutputGuard>,
    notes: &mut Vec<crate::protect::restore::OutputNote>,
) -> Bytes {
    let text = String::from_utf8_lossy(raw);
    let text = if html {
        strip_tags(&text)
    } else {
        text.into_owned()
    };
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Guarded whole, then cut between words: a cut inside a value would leave a part of it
    // that neither the guard nor the key mask could recognise.
    if let Some(g) = guard {
        if let Some(t) = g.check(&text, notes) {
            text = t;
        }
    }
    if let Some((cut, _)) = text.char_indices().nth(UPSTREAM_MESSAGE_MAX) {
        let cut = text[..cut].rfind(' ').unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.is_empty() {
        format!(
            "upstream returned {} {reason} with an empty body",
            status.as_u16()
        )
    } else {
        format!("upstream returned {} {reason}: {text}", status.as_u16())
    };
    error_body(
        kind,
        status,
        ErrorClass::for_status(status),
        &format!("upstream_{}", status.as_u16()),
        &message,
    )
}

/// The text of an HTML page: tags, scripts and styles removed, a few entities decoded.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if rest.starts_with("<script") || rest.starts_with("<style") {
            let close = if rest.starts_with("<script") {
                "</script>"
            } else {
                "</style>"
            };
            i = rest.find(close).map_or(html.len(), |e| i + e + close.len());
            out.push(' ');
        } else if rest.starts_with('<') {
            i = rest.find('>').map_or(html.len(), |e| i + e + 1);
            out.push(' ');
        } else {
            let next = rest.find('<').map_or(html.len(), |e| i + e);
            out.push_str(&html[i..next]);
            i = next;
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_contract() {
        let cases = [
            (
                ProxyError::UnknownProvider {
                    prefix: "x".into(),
                    known: vec!["openai".into()],
                },
                404,
            ),
            (ProxyError::MissingKey, 401),
            (
                ProxyError::ProviderKeyFromClient {
                    provider: "openai".into(),
                    key_of: Some("anthropic"),
                },
                401,
            ),
            (ProxyError::KeyExpired("k".into()), 403),
            (ProxyError::BodyTooLarge { limit: 1 }, 413),
            (ProxyError::MalformedJson("x".into()), 400),
            (
                ProxyError::ModelMismatch {
                    path: "a".into(),
                    body: "b".into(),
                },
                400,
            ),
            (ProxyError::UnsupportedMediaType("text/plain".into()), 415),
            (
                ProxyError::UpstreamUnreachable {
                    host: "h".into(),
                    detail: "d".into(),
                },
                502,
            ),
            (
                ProxyError::UpstreamTimeout {
                    host: "h".into(),
                    phase: "first_byte",
                    secs: 1,
                },
                504,
            ),
            (
                ProxyError::Vault {
                    provider: "openai".into(),
                    source: VaultError::Locked {
                        detail: "locked".into(),
                    },
                },
                503,
            ),
            (
                ProxyError::Vault {
                    provider: "gemini".into(),
                    source: VaultError::Timeout { secs: 5 },
                },
                503,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
        }
    }

    /// Regression: an Anthropic or Gemini key sent on the openai route was called "a real
    /// openai API key".
    #[test]
    fn a_provider_key_is_named_by_whose_it_is() {
        let msg = |key_of| {
            ProxyError::ProviderKeyFromClient {
                provider: "openai".into(),
                key_of,
            }
            .to_string()
        };
        let m = msg(Some("anthropic"));
        assert!(m.contains("a real anthropic API key"), "{m}");
        assert!(m.contains("`airlock keys set anthropic`"), "{m}");
        let m = msg(None);
        assert!(m.contains("a real provider API key"), "{m}");
        assert!(m.contains("`airlock keys set openai`"), "{m}");
    }

    #[test]
    fn non_json_upstream_errors_are_wrapped_in_the_provider_format() {
        let html = b"<html><head><style>p{}</style></head><body><h1>500 Internal Server Error</h1>\n<p>nginx &amp; co</p></body></html>";
        let mut notes = Vec::new();
        let body = wrap_upstream_error(
            ProviderKind::Anthropic,
            StatusCode::INTERNAL_SERVER_ERROR,
            true,
            html,
            None,
            &mut notes,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(
            v["error"]["message"],
            "upstream returned 500 Internal Server Error: 500 Internal Server Error nginx & co"
        );
        let long = "x".repeat(5000);
        let body = wrap_upstream_error(
            ProviderKind::Gemini,
            StatusCode::TOO_MANY_REQUESTS,
            false,
            long.as_bytes(),
            None,
            &mut notes,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], 429);
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert!(v["error"]["message"].as_str().expect("msg").chars().count() < 1100);
        let body = wrap_upstream_error(
            ProviderKind::OpenAi,
            StatusCode::BAD_GATEWAY,
            false,
            b"",
            None,
            &mut notes,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v["error"]["message"],
            "upstream returned 502 Bad Gateway with an empty body"
        );
        assert_eq!(v["error"]["code"], "upstream_502");
    }

    #[test]
    fn anthropic_body_names_the_reason() {
        let body = ProxyError::BodyTooLarge { limit: 10 }.body(Some(ProviderKind::Anthropic));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["type"], "request_too_large");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10-byte limit")));
    }
}
