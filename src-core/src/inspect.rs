//! The detection engine: finds secrets and personal data in text.
//!
//! It is pure: no I/O, no async, no globals. The proxy, `airlock scan`, the benchmarks and the
//! fuzz target all call the same [`Engine`].
//!
//! How a scan works:
//! 1. **Rules are data.** `rules/secrets.toml` and `rules/pii.toml` are embedded in the binary.
//!    Each rule has an id, a kind (`secret`/`pii`), a family, keywords (or a digit trigger with a
//!    stated reason), a regex, an optional validator, an optional entropy floor, an allowlist,
//!    and example templates. Users add, override and disable rules through [`RuleOverrides`].
//! 2. **One prefilter pass.** Every keyword, plus the base64 and percent-encoded forms of the
//!    secret keywords, is found by a hashed four-byte-window table (confirmed by a second table
//!    and a prefix test) that runs an anchored Aho-Corasick search only where a keyword may
//!    start. A hit queues the owning rules' regexes on a window around it; digit-shaped PII
//!    (cards, phones, IBANs, national IDs) is triggered by a digit-cluster scan over the blocks
//!    the same pass marked as holding digits. Text that triggers nothing costs one pass.
//! 3. **Checks.** A regex match goes through the placeholder test, the rule allowlist, the
//!    entropy floor, the validator (Luhn, mod-97, Verhoeff, CRC32 …) and context words.
//! 4. **Evasion.** Text with invisible characters or compatibility forms is normalised (NFKC,
//!    invisibles removed) with a byte map back to the original; base64 and percent-encoded
//!    tokens are decoded one level deep. Spans always refer to the original text and cover the
//!    whole hidden value, so the proxy can replace exactly that span.
//! 5. **Report.** Overlapping findings are resolved (more specific rule wins) and passed to the
//!    callback in order; the callback returns `false` to stop.
//!
//! ```
//! use airlock::inspect::{Engine, Kind};
//! use std::sync::Arc;
//!
//! let engine = Arc::new(Engine::new().expect("embedded rules compile"));
//! // Built from pieces so this file itself holds no credential.
//! let key = format!("{}{}", "AKIA", "Q3ZLWB4T7HXVN2PR");
//! let mail = format!("{}@{}", "ops.lead", "gmail.com");
//! let prompt = format!("deploy with {key} and mail {mail}");
//! let mut seen = Vec::new();
//! engine.scan(&prompt, |f| {
//!     seen.push((f.rule_id.to_string(), f.kind, f.span.clone(), f.preview().to_string()));
//!     true // keep going
//! });
//! assert_eq!(seen[0].0, "aws-access-key-id");
//! assert_eq!(&prompt[seen[0].2.clone()], key);
//! assert_eq!(seen[0].3, "AKIA****");
//! assert_eq!(seen[1].1, Kind::Pii);
//! ```

mod engine;
pub mod normalize;
pub mod rules;
#[doc(hidden)]
pub mod testgen;
pub mod validate;
pub mod value_bound;
pub mod value_span;

pub use engine::{mask, Encoding, Engine, EngineBuilder, Finding};
pub use rules::{CompiledRule, Kind, RuleOverride, RuleOverrides, RuleSpec};

/// Errors from building an engine. Scanning itself cannot fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    #[error("rule file: {0}")]
    RuleFile(String),
    #[error("rule `{rule}`: {message}")]
    Rule { rule: String, message: String },
    #[error("rule `{rule}`: bad regex: {message}")]
    Regex { rule: String, message: String },
}

#[cfg(test)]
mod tests;
