//! The local database and the audit ledger: one SQLite file in the data dir (WAL, versioned
//! migrations).
//!
//! It holds issued Airlock keys (hashes only) and one row per request with its usage, cost,
//! verdict and findings (rule, location, keyed hash). It never holds a raw secret, a provider key,
//! a header value or prompt text, unless prompt storage is switched on, and then only the text
//! after redaction. Rows are written by one thread fed through a channel ([`writer`]), never
//! inline on the request path.

mod background;
pub mod db;
pub mod query;
pub mod spool;
pub mod writer;

pub use db::{open, DbError, DB_FILE};
pub use writer::{LedgerWriter, WriterStats};

use serde::Serialize;

/// What happened to a request, as the ledger and the UI show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Forwarded unchanged.
    Allowed,
    /// Forwarded after findings were redacted or pseudonymized.
    Redacted,
    /// Forwarded with findings that policy only warns about.
    Warned,
    /// Refused by Airlock (policy, limits, auth, bad input).
    Blocked,
    /// Airlock or the upstream failed.
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Redacted => "redacted",
            Verdict::Warned => "warned",
            Verdict::Blocked => "blocked",
            Verdict::Failed => "failed",
        }
    }
}

/// Token counts by class, as the provider bills them: `input` is the whole prompt, with
/// `cached` (cache reads) and `cache_write` as parts of it; `output` is the whole output, with
/// `reasoning` as part of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// One decision of the inspection stage, as stored: never the value, only a keyed hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FindingRecord {
    pub rule: String,
    pub kind: String,
    pub location: String,
    pub action: String,
    pub value_hash: String,
}

/// One request, as the ledger stores it (and as the spool holds it until then).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Record {
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub ts: i64,
    pub account: Option<String>,
    pub key_name: Option<String>,
    pub provider: Option<String>,
    pub method: String,
    /// The path after the provider prefix, without the query string.
    pub endpoint: String,
    pub model: Option<String>,
    pub streamed: bool,
    pub status: u16,
    pub verdict: Verdict,
    /// Why it was blocked or failed: Airlock's error code.
    pub reason: Option<String>,
    pub error_source: Option<String>,
    pub tokens: Tokens,
    /// `None` when the model's price is unknown: shown as "unknown", never as $0.
    pub cost_micros: Option<i64>,
    pub estimated: bool,
    /// How the response body ended (`complete`, `client_gone`, …).
    pub body_end: Option<String>,
    pub response_bytes: u64,
    pub total_ms: f64,
    pub upstream_ms: Option<f64>,
    /// Airlock's own share: total time minus time spent waiting on the upstream.
    pub overhead_ms: f64,
    /// Only with `ledger.store_prompts = true`, and only after redaction.
    pub prompt: Option<String>,
    pub findings: Vec<FindingRecord>,
}

/// A notable event (budget alert, anomaly, pause), stored and streamed to the UI.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub ts: i64,
    pub kind: String,
    pub account: Option<String>,
    pub detail: serde_json::Value,
}
