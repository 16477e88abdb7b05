//! `record`: one record per request, whether it succeeded, was refused or failed.
//!
//! Records never hold a key, a header value, a query string or body text.

use super::body::BodyEnd;
use super::error::ErrorSource;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub started_at: i64,
    pub method: String,
    pub provider: Option<String>,
    /// The path after the provider prefix, without the query string.
    pub endpoint: String,
    pub model: Option<String>,
    /// The account use is attributed to (the key's name, or its parent's).
    pub account: Option<String>,
    pub key_name: Option<String>,
    pub status: u16,
    pub streamed: bool,
    pub error_code: Option<&'static str>,
    pub error_source: Option<ErrorSource>,
    pub body_end: Option<BodyEnd>,
    pub response_bytes: u64,
    /// Time until the upstream's response headers, if the request went upstream.
    pub upstream_headers_ms: Option<f64>,
    pub total_ms: f64,
}

/// Where finished records go. It logs one line per request; the ledger subscribes here too.
#[derive(Debug, Default)]
pub struct Recorder {}

impl Recorder {
    pub fn record(&self, r: RequestRecord) {
        let provider = r.provider.as_deref().unwrap_or("-");
        let account = r.account.as_deref().unwrap_or("-");
        if let Some(code) = r.error_code {
            let level_is_warn = matches!(
                r.error_source,
                Some(ErrorSource::Airlock | ErrorSource::Upstream)
            );
            if level_is_warn {
                tracing::warn!(id = %r.id, provider, account, status = r.status, code, "{} {}", r.method, r.endpoint);
            } else {
                tracing::info!(id = %r.id, provider, account, status = r.status, code, "blocked {} {}", r.method, r.endpoint);
            }
        } else {
            tracing::info!(
                id = %r.id,
                provider,
                account,
                status = r.status,
                ms = format_args!("{:.1}", r.total_ms),
                end = ?r.body_end,
                "{} {}",
                r.method,
                r.endpoint
            );
        }
    }
}
