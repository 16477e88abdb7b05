//! Limits, checked before a request goes upstream (so an over-budget request never costs money),
//! and anomaly detection.
//!
//! - [`budget`]: USD budgets per key, per provider and globally, per UTC day and month, in integer
//!   micro-dollars, with a soft alert at a share of each budget.
//! - [`rate`]: requests per minute (GCRA, `governor`) and tokens per minute (sliding window) per key.
//! - [`anomaly`]: bursts far above a key's own baseline, runaway loops (the same prompt again and
//!   again) and extraction-like traffic (many systematic variations of one prompt).
//!
//! Everything here is in memory and cheap; the counters are seeded from the ledger at start.

pub mod anomaly;
pub mod budget;
pub mod calendar;
pub mod output_cap;
pub mod rate;

use std::time::Duration;

/// Why a request was stopped by a limit.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum LimitError {
    #[error(
        "{scope} {period} budget of {limit} is used up ({spent} spent); it resets in {}",
        fmt_wait(retry_after)
    )]
    Budget {
        scope: String,
        period: &'static str,
        limit: String,
        spent: String,
        retry_after: Duration,
    },
    #[error("Airlock key {key:?} has used its budget of {limit} ({spent} spent)")]
    KeyBudget {
        key: String,
        limit: String,
        spent: String,
    },
    /// Not used up yet, but what is spent plus what requests in flight hold reaches it.
    #[error(
        "{scope} {period} budget of {limit} is taken: {spent} spent and {held} held by requests still in flight (each holds its worst-case cost until it ends); retry when they finish"
    )]
    BudgetHeld {
        scope: String,
        period: &'static str,
        limit: String,
        spent: String,
        held: String,
    },
    #[error(
        "rate limit: key {key:?} may send {rpm} requests per minute; retry in {}",
        fmt_wait(retry_after)
    )]
    Rpm {
        key: String,
        rpm: u32,
        retry_after: Duration,
    },
    #[error(
        "token limit: key {key:?} may use {tpm} tokens per minute; retry in {}",
        fmt_wait(retry_after)
    )]
    Tpm {
        key: String,
        tpm: u64,
        retry_after: Duration,
    },
    #[error(
        "token limit: key {key:?} may use {tpm} tokens per minute: {used} used in the last minute and {held} held by requests still in flight (each holds its prompt and its max_tokens until it ends); retry when they finish"
    )]
    TpmHeld {
        key: String,
        tpm: u64,
        used: u64,
        held: u64,
    },
    #[error("max tokens {asked} is above the {limit} allowed per request for key {key:?} (limits.max_tokens)")]
    MaxTokens { key: String, asked: u64, limit: u64 },
    #[error("{field} must be a non-negative integer: Airlock checks it against the {limit} allowed per request for key {key:?} (limits.max_tokens)")]
    MaxTokensUnreadable {
        key: String,
        field: &'static str,
        limit: u64,
    },
    #[error("key {key:?} allows at most {limit} output tokens a request (limits.max_tokens), and this request sets none; Airlock cannot write {field} into this body, so set it yourself")]
    MaxTokensUnset {
        key: String,
        field: &'static str,
        limit: u64,
    },
    #[error("model {model:?} is not allowed for key {key:?} by limits.keys.{key}.models_allow / models_deny")]
    ModelDenied { key: String, model: String },
    #[error("limits.keys.{key}.models_allow / models_deny cannot be checked: this request names no model that Airlock can read (send the model as a string \"model\" field of a JSON object body)")]
    ModelUnread { key: String },
    #[error(
        "model {model:?} has no known price, so Airlock cannot count it against the {budget} budget; add its price to the config ([prices.\"{model}\"] with input_per_mtok and output_per_mtok, USD per million tokens), or set limits.allow_unpriced_models = true to let unpriced models through uncounted"
    )]
    Unpriced { model: String, budget: String },
    #[error("Airlock is paused; resume it with `airlock resume` (or from the tray)")]
    Paused,
    #[error(
        "Airlock key {key:?} is paused ({reason}); resume it with `airlock keys resume {resume}`"
    )]
    KeyPaused {
        key: String,
        reason: String,
        /// The key whose pause it is: `key`, or the parent a child key inherits it from.
        resume: String,
    },
}

impl LimitError {
    /// How long waiting helps, for `Retry-After`; `None` where waiting does not help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LimitError::Budget { retry_after, .. }
            | LimitError::Rpm { retry_after, .. }
            | LimitError::Tpm { retry_after, .. } => Some(*retry_after),
            LimitError::BudgetHeld { .. } | LimitError::TpmHeld { .. } => {
                Some(budget::HELD_RETRY_AFTER)
            }
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            LimitError::Budget { .. } => "airlock_budget_exceeded",
            LimitError::KeyBudget { .. } => "airlock_key_budget_exceeded",
            // The same codes as a used-up budget: a client handles both alike.
            LimitError::BudgetHeld {
                period: "lifetime", ..
            } => "airlock_key_budget_exceeded",
            LimitError::BudgetHeld { .. } => "airlock_budget_exceeded",
            LimitError::Rpm { .. } => "airlock_rate_limited",
            LimitError::Tpm { .. } | LimitError::TpmHeld { .. } => "airlock_token_rate_limited",
            LimitError::MaxTokens { .. }
            | LimitError::MaxTokensUnreadable { .. }
            | LimitError::MaxTokensUnset { .. } => "airlock_max_tokens",
            LimitError::ModelDenied { .. } | LimitError::ModelUnread { .. } => {
                "airlock_model_denied"
            }
            LimitError::Unpriced { .. } => "airlock_model_unpriced",
            LimitError::Paused => "airlock_paused",
            LimitError::KeyPaused { .. } => "airlock_key_paused",
        }
    }
}

fn fmt_wait(d: &Duration) -> String {
    let s = d.as_secs().max(1);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    }
}

/// `$0.0123` from micro-dollars, with as many decimals as needed to be exact.
pub fn fmt_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let whole = m / 1_000_000;
    let frac = m % 1_000_000;
    if frac == 0 {
        return format!("{sign}${whole}.00");
    }
    let mut f = format!("{frac:06}");
    while f.len() > 2 && f.ends_with('0') {
        f.pop();
    }
    format!("{sign}${whole}.{f}")
}

/// Parses an amount of USD (`2usd`, `$0.50`, `1.25`) exactly into micro-dollars.
pub fn parse_usd(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_start_matches('$').trim_end_matches("usd").trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let bad = || format!("{text:?} is not an amount like 2usd or $0.50");
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > 6 {
        return Err(format!(
            "{text:?} has more than 6 decimals (a micro-dollar is the smallest unit)"
        ));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(|| {
            format!(
                "{text:?} is more than Airlock can count (at most {})",
                fmt_usd(i64::MAX)
            )
        })
}

/// Parses a `--budget` amount: as [`parse_usd`], and more than nothing (a $0 budget would refuse
/// every request the key makes).
pub fn parse_budget(text: &str) -> Result<i64, String> {
    match parse_usd(text)? {
        0 => Err(format!(
            "a budget of {text:?} would allow nothing; give an amount above $0, or leave --budget out for no budget"
        )),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_usd_exactly() {
        assert_eq!(parse_usd("2usd"), Ok(2_000_000));
        assert_eq!(parse_usd("$0.50"), Ok(500_000));
        assert_eq!(parse_usd("0.000001"), Ok(1));
        assert_eq!(parse_usd(".25"), Ok(250_000));
        assert!(parse_usd("0.0000001").is_err());
        assert!(parse_usd("two").is_err());
        assert!(parse_usd("-1").is_err());
        // QA: a number too large was said not to be an amount at all.
        let err = parse_usd("99999999999999usd").expect_err("too large");
        assert!(err.contains("more than Airlock can count"), "{err}");
        assert_eq!(parse_budget("0.5usd"), Ok(500_000));
        let err = parse_budget("0usd").expect_err("nothing");
        assert!(err.contains("would allow nothing"), "{err}");
        assert!(parse_budget("$0.000000").is_err());
    }

    #[test]
    fn usd_formatting_is_exact() {
        assert_eq!(fmt_usd(0), "$0.00");
        assert_eq!(fmt_usd(10_000), "$0.01");
        assert_eq!(fmt_usd(1_234_567), "$1.234567");
        assert_eq!(fmt_usd(2_500_000), "$2.50");
        assert_eq!(fmt_usd(-5), "-$0.000005");
    }
}
