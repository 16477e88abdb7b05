//! Error bodies in each provider's own format, so an SDK raises its usual exception with
//! Airlock's message in it.

use super::ProviderKind;
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// What kind of failure an error is, independent of any provider's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Timeout,
    Unavailable,
    Internal,
}

impl ErrorClass {
    /// The class an upstream's bare status stands for (its body said nothing usable).
    pub fn for_status(status: StatusCode) -> ErrorClass {
        match status {
            StatusCode::NOT_FOUND => ErrorClass::NotFound,
            StatusCode::UNAUTHORIZED => ErrorClass::Authentication,
            StatusCode::FORBIDDEN => ErrorClass::Permission,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorClass::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorClass::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => ErrorClass::RateLimited,
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => ErrorClass::Timeout,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => ErrorClass::Unavailable,
            s if s.is_client_error() => ErrorClass::InvalidRequest,
            _ => ErrorClass::Internal,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest
            | ErrorClass::TooLarge
            | ErrorClass::UnsupportedMediaType => "invalid_request_error",
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::RateLimited => "rate_limit_error",
            ErrorClass::Timeout | ErrorClass::Unavailable | ErrorClass::Internal => "api_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::UnsupportedMediaType => {
                "invalid_request_error"
            }
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::TooLarge => "request_too_large",
            ErrorClass::RateLimited => "rate_limit_error",
            ErrorClass::Timeout => "timeout_error",
            // `overloaded_error` is Anthropic's own 529 only (see `error_body`); a gateway
            // failure is an `api_error`.
            ErrorClass::Unavailable | ErrorClass::Internal => "api_error",
        }
    }

    fn gemini_status(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest
            | ErrorClass::TooLarge
            | ErrorClass::UnsupportedMediaType => "INVALID_ARGUMENT",
            ErrorClass::Authentication => "UNAUTHENTICATED",
            ErrorClass::Permission => "PERMISSION_DENIED",
            ErrorClass::NotFound => "NOT_FOUND",
            ErrorClass::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorClass::Timeout => "DEADLINE_EXCEEDED",
            ErrorClass::Unavailable => "UNAVAILABLE",
            ErrorClass::Internal => "INTERNAL",
        }
    }
}

/// The JSON error body for `kind`. `code` is Airlock's stable machine-readable reason.
pub fn error_body(
    kind: ProviderKind,
    status: StatusCode,
    class: ErrorClass,
    code: &str,
    message: &str,
) -> Bytes {
    let value = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => json!({
            "error": {"message": message, "type": class.openai_type(), "param": null, "code": code}
        }),
        ProviderKind::Anthropic => {
            let kind = if status.as_u16() == 529 {
                "overloaded_error"
            } else {
                class.anthropic_type()
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        ProviderKind::Gemini => json!({
            "error": {"code": status.as_u16(), "message": message, "status": class.gemini_status()}
        }),
    };
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn each_provider_gets_its_own_shape() {
        let parse = |kind| -> Value {
            serde_json::from_slice(&error_body(
                kind,
                StatusCode::UNAUTHORIZED,
                ErrorClass::Authentication,
                "airlock_unknown_key",
                "no such key",
            ))
            .expect("valid json")
        };
        let o = parse(ProviderKind::OpenAi);
        assert_eq!(o["error"]["type"], "authentication_error");
        assert_eq!(o["error"]["code"], "airlock_unknown_key");
        assert_eq!(o["error"]["message"], "no such key");
        let a = parse(ProviderKind::Anthropic);
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "authentication_error");
        let g = parse(ProviderKind::Gemini);
        assert_eq!(g["error"]["code"], 401);
        assert_eq!(g["error"]["status"], "UNAUTHENTICATED");
    }
}
