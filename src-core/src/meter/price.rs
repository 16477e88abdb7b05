//! Model prices and cost in exact integer money.
//!
//! Prices come as per-token USD floats in LiteLLM's `model_prices_and_context_window.json`
//! format (a bundled copy lives in `src-core/prices/model_prices.json`). Each is converted once,
//! at load, to an integer number of **pico-dollars per token** — the same number as micro-dollars
//! per million tokens, so `$2.50 / 1M` is `2_500_000`. Every price in the file has at most 12
//! decimal places, and `round(f64 × 10¹²)` recovers that integer exactly (the float's relative
//! error is ~10⁻¹⁶, far below half a unit). Costs are summed in pico-dollars in `u128` and rounded
//! half-up to micro-dollars once, at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::Usage;

/// Fewest priced models a replacement table may have: the real LiteLLM file has well over a
/// thousand, so fewer than this means a truncated or wrong download.
pub const MIN_MODELS_IN_UPDATE: usize = 50;

/// A replacement table must keep at least this share (in percent) of the current model count:
/// providers retire a few models at a time, never most of them.
pub const MIN_UPDATE_RATIO_PERCENT: usize = 80;

/// A replacement table is refused when more than this share (in percent) of its chat models
/// cost $0 for input or output: a few local or free-tier models are, a real table is not.
pub const MAX_FREE_CHAT_PERCENT: usize = 50;

/// The per-token price fields read from LiteLLM's format (USD per token).
const PRICE_FIELDS: [&str; 5] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
];

/// How many offending model names an error lists before "and N more".
const NAMES_SHOWN: usize = 5;

const BUNDLED: &str = include_str!("../../prices/model_prices.json");

/// Pico-dollars (10⁻¹² USD) per micro-dollar.
const PICO_PER_MICRO: u128 = 1_000_000;

/// An amount of money in whole micro-dollars (10⁻⁶ USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroUsd(pub u64);

// === impl MicroUsd ===

impl MicroUsd {
    pub const ZERO: MicroUsd = MicroUsd(0);

    pub fn saturating_add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl std::iter::Sum for MicroUsd {
    fn sum<I: Iterator<Item = MicroUsd>>(iter: I) -> MicroUsd {
        iter.fold(MicroUsd::ZERO, MicroUsd::saturating_add)
    }
}

/// Errors from loading, overriding or replacing a price table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceError {
    #[error("price table is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("price table must be a JSON object of model name to prices")]
    NotAnObject,
    #[error("price table has {found} priced models, fewer than the {min} a real table has")]
    TooFewModels { found: usize, min: usize },
    #[error("price table would shrink from {old} to {new} models (below {min_percent}%)")]
    ShrankTooMuch {
        old: usize,
        new: usize,
        min_percent: usize,
    },
    #[error("price table has {count} models with a price that is not a number >= 0 ({models}); fix or remove those fields")]
    InvalidPrices { count: usize, models: String },
    #[error("{free} of the {chat} chat models in the price table cost $0 for input or output (more than {max_percent}%): a real table prices them")]
    MostlyFree {
        free: usize,
        chat: usize,
        max_percent: usize,
    },
    #[error("price override for {model:?}: {reason}")]
    InvalidOverride { model: String, reason: &'static str },
}

/// One model's prices, as exact integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Pico-dollars per uncached input token (= micro-dollars per million tokens).
    pub input_pico_per_token: u64,
    /// Pico-dollars per output token.
    pub output_pico_per_token: u64,
    /// Per cache-read input token; `None` means no discount is known (input rate applies).
    pub cache_read_pico_per_token: Option<u64>,
    /// Per cache-write input token; `None` means the input rate applies.
    pub cache_write_pico_per_token: Option<u64>,
    /// Per reasoning token, for the rare model that prices them apart from output.
    pub reasoning_pico_per_token: Option<u64>,
    /// LiteLLM's `litellm_provider`, e.g. `openai`, `gemini`, `groq`.
    pub provider: Option<String>,
    /// LiteLLM's `mode`, e.g. `chat`, `embedding`.
    pub mode: Option<String>,
    pub max_input_tokens: Option<u64>,
}

/// Prices per million tokens in USD, as a user writes them in the config:
///
/// ```toml
/// [prices."my-finetune"]
/// input_per_mtok = 3.0
/// output_per_mtok = 12.0
/// cached_input_per_mtok = 1.5
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

/// Model name to price, plus user overrides that win over the table.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    overrides: HashMap<String, ModelPrice>,
    /// Models left unpriced because a price field held something other than a number >= 0
    /// (a string, a negative number), sorted: such a model is unknown, never $0.
    invalid: Vec<String>,
}

/// USD per token (a float from the file) to pico-dollars per token; `None` if not a usable price.
fn pico_from_usd_per_token(v: &Value) -> Option<u64> {
    let usd = v.as_f64()?;
    let pico = (usd * 1e12).round();
    (usd.is_finite() && usd >= 0.0 && pico < u64::MAX as f64).then_some(pico as u64)
}

/// USD per million tokens to pico-dollars per token (= micro-dollars per million).
fn pico_from_usd_per_mtok(usd: f64) -> Option<u64> {
    let pico = (usd * 1e6).round();
    (usd.is_finite() && usd >= 0.0 && pico < u64::MAX as f64).then_some(pico as u64)
}

/// Provider-name prefixes LiteLLM uses in its keys (OpenAI and Anthropic keys have none).
fn litellm_prefix(provider: &str) -> &str {
    match provider {
        "together" => "together_ai",
        "google" => "gemini",
        other => other,
    }
}

/// Drops a date or snapshot suffix: `-2024-08-06`, `-20250929`, `@20250929`, `-0613`, `-001`,
/// `-latest`.
fn strip_version_suffix(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let b = model.as_bytes();
    // -YYYY-MM-DD
    if b.len() > 11 {
        let (head, tail) = model.split_at(model.len() - 11);
        let t = tail.as_bytes();
        if t[0] == b'-'
            && t[5] == b'-'
            && t[8] == b'-'
            && digits(&tail[1..5])
            && digits(&tail[6..8])
            && digits(&tail[9..11])
        {
            return Some(head);
        }
    }
    if let Some(head) = model.strip_suffix("-latest") {
        return Some(head);
    }
    let (head, tail) = model.rsplit_once(['-', '@'])?;
    // -YYYYMMDD, -MMDD (old OpenAI snapshots), -001 (Gemini versions).
    (digits(tail) && matches!(tail.len(), 3 | 4 | 8) && !head.is_empty()).then_some(head)
}

// === impl PriceTable ===

impl PriceTable {
    /// The table compiled into Airlock.
    pub fn bundled() -> PriceTable {
        // The bundled file is checked by a unit test; should it ever fail to parse, an empty
        // table prices nothing (every cost "unknown") rather than taking the process down.
        PriceTable::from_litellm_json(BUNDLED).unwrap_or_default()
    }

    /// Parses LiteLLM's `model_prices_and_context_window.json` format. Unknown fields are
    /// ignored; entries without a token price (images, audio-per-second, `sample_spec`) skipped.
    pub fn from_litellm_json(json: &str) -> Result<PriceTable, PriceError> {
        let root: Value = serde_json::from_str(json)?;
        let Value::Object(entries) = root else {
            return Err(PriceError::NotAnObject);
        };
        let mut models = HashMap::with_capacity(entries.len());
        let mut invalid = Vec::new();
        for (name, entry) in &entries {
            if name == "sample_spec" {
                continue;
            }
            // A price that is there but unusable makes the whole model unknown: reading it as 0
            // would make every request of it free.
            let unusable = PRICE_FIELDS.iter().any(|k| {
                entry
                    .get(*k)
                    .is_some_and(|v| !v.is_null() && pico_from_usd_per_token(v).is_none())
            });
            if unusable {
                invalid.push(name.to_ascii_lowercase());
                continue;
            }
            let field = |k: &str| entry.get(k).and_then(pico_from_usd_per_token);
            let (input, output) = (
                field("input_cost_per_token"),
                field("output_cost_per_token"),
            );
            if input.is_none() && output.is_none() {
                continue;
            }
            let text = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_owned);
            let price = ModelPrice {
                input_pico_per_token: input.unwrap_or(0),
                output_pico_per_token: output.unwrap_or(0),
                cache_read_pico_per_token: field("cache_read_input_token_cost"),
                cache_write_pico_per_token: field("cache_creation_input_token_cost"),
                reasoning_pico_per_token: field("output_cost_per_reasoning_token"),
                provider: text("litellm_provider"),
                mode: text("mode"),
                max_input_tokens: entry.get("max_input_tokens").and_then(Value::as_u64),
            };
            models.insert(name.to_ascii_lowercase(), price);
        }
        invalid.sort();
        Ok(PriceTable {
            models,
            overrides: HashMap::new(),
            invalid,
        })
    }

    /// Models the file names with an unusable price (see [`PriceTable::from_litellm_json`]).
    pub fn invalid_models(&self) -> &[String] {
        &self.invalid
    }

    /// Chat models (LiteLLM `mode` chat, responses or completion), and how many of them cost $0
    /// for input or output.
    fn free_chat_models(&self) -> (usize, usize) {
        let chat = self.models.values().filter(|p| {
            p.mode
                .as_deref()
                .is_some_and(|m| matches!(m, "chat" | "responses" | "completion"))
        });
        chat.fold((0, 0), |(free, all), p| {
            let zero = p.input_pico_per_token == 0 || p.output_pico_per_token == 0;
            (free + usize::from(zero), all + 1)
        })
    }

    /// Number of priced models in the table (overrides not counted).
    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The priced model names (lowercased), in no particular order.
    #[cfg(test)]
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Adds user prices that take precedence over the table (including for dated variants of
    /// the overridden name). Replaces earlier overrides.
    pub fn set_overrides(
        &mut self,
        overrides: &BTreeMap<String, PriceOverride>,
    ) -> Result<(), PriceError> {
        let mut out = HashMap::with_capacity(overrides.len());
        for (model, o) in overrides {
            let bad = |reason| PriceError::InvalidOverride {
                model: model.clone(),
                reason,
            };
            let conv =
                |v: f64| pico_from_usd_per_mtok(v).ok_or(bad("prices must be finite and >= 0"));
            let price = ModelPrice {
                input_pico_per_token: conv(o.input_per_mtok)?,
                output_pico_per_token: conv(o.output_per_mtok)?,
                cache_read_pico_per_token: o.cached_input_per_mtok.map(conv).transpose()?,
                cache_write_pico_per_token: o.cache_write_per_mtok.map(conv).transpose()?,
                reasoning_pico_per_token: None,
                provider: None,
                mode: None,
                max_input_tokens: None,
            };
            out.insert(model.to_ascii_lowercase(), price);
        }
        self.overrides = out;
        Ok(())
    }

    /// The price of `model` as sent to `provider` (Airlock's provider name, e.g. `openai`,
    /// `groq`, `together`), or `None` if unknown — never a zero price in disguise.
    ///
    /// Tries, in order, overrides then the table, each with: the provider-prefixed name
    /// (`groq/llama-3.3-70b-versatile`), the bare name, the name without a date or version
    /// suffix, and the name without a provider prefix the client put on it (`gemini/…`,
    /// `openai/gpt-4o` through OpenRouter). A `models/` prefix (Gemini paths) is dropped first.
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<&ModelPrice> {
        // The same normal form the model allow and deny lists match.
        let model = crate::providers::normalize_model(model);
        let candidates = candidates(provider, &model);
        [&self.overrides, &self.models]
            .into_iter()
            .find_map(|map| candidates.iter().find_map(|c| map.get(c.as_str())))
    }
}

/// Names to try for a model, most specific first.
fn candidates(provider: Option<&str>, model: &str) -> Vec<String> {
    let mut names = vec![model.to_owned()];
    // Peel off provider prefixes one by one: `openrouter/openai/gpt-4o` → `openai/gpt-4o` → …
    let mut cur = model;
    while let Some((_, rest)) = cur.split_once('/') {
        names.push(rest.to_owned());
        cur = rest;
    }
    let mut undated: Vec<String> = Vec::new();
    for n in &names {
        let mut cur = n.as_str();
        while let Some(shorter) = strip_version_suffix(cur) {
            undated.push(shorter.to_owned());
            cur = shorter;
        }
    }
    names.extend(undated);
    let mut out = Vec::with_capacity(names.len() * 2);
    if let Some(p) = provider.map(|p| p.to_ascii_lowercase()) {
        let prefix = litellm_prefix(&p);
        for n in &names {
            if !n.starts_with(&format!("{prefix}/")) {
                out.push(format!("{prefix}/{n}"));
            }
        }
    }
    out.extend(names);
    out
}

/// `a, b, c and 4 more`.
fn some_names(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(NAMES_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        out.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    out
}

/// Checks what any replacement table must be, forced or not: every price present is a
/// non-negative number ([`PriceError::InvalidPrices`]), and no more than
/// [`MAX_FREE_CHAT_PERCENT`] of its chat models cost $0 ([`PriceError::MostlyFree`]).
pub fn validate_prices(new: &PriceTable) -> Result<(), PriceError> {
    if !new.invalid.is_empty() {
        return Err(PriceError::InvalidPrices {
            count: new.invalid.len(),
            models: some_names(&new.invalid),
        });
    }
    let (free, chat) = new.free_chat_models();
    if free.saturating_mul(100) > chat.saturating_mul(MAX_FREE_CHAT_PERCENT) {
        return Err(PriceError::MostlyFree {
            free,
            chat,
            max_percent: MAX_FREE_CHAT_PERCENT,
        });
    }
    Ok(())
}

/// Checks that a downloaded table can replace the current one: its prices valid
/// ([`validate_prices`]), big enough to be a real LiteLLM file ([`MIN_MODELS_IN_UPDATE`]) and
/// not much smaller than what it replaces ([`MIN_UPDATE_RATIO_PERCENT`]).
pub fn validate_update(old: &PriceTable, new: &PriceTable) -> Result<(), PriceError> {
    validate_prices(new)?;
    if new.len() < MIN_MODELS_IN_UPDATE {
        return Err(PriceError::TooFewModels {
            found: new.len(),
            min: MIN_MODELS_IN_UPDATE,
        });
    }
    if new.len().saturating_mul(100) < old.len().saturating_mul(MIN_UPDATE_RATIO_PERCENT) {
        return Err(PriceError::ShrankTooMuch {
            old: old.len(),
            new: new.len(),
            min_percent: MIN_UPDATE_RATIO_PERCENT,
        });
    }
    Ok(())
}

/// What `usage` costs at `price`: uncached input, cache reads, cache writes and output (with
/// reasoning, at the reasoning rate if the model has one) each at its rate, summed exactly in
/// pico-dollars and rounded half-up to micro-dollars once.
pub fn cost(usage: &Usage, price: &ModelPrice) -> MicroUsd {
    let input = price.input_pico_per_token;
    let output = price.output_pico_per_token;
    let reasoning = usage.reasoning_tokens.min(usage.output_tokens);
    // Reasoning is part of output; it is split out only where the model prices it apart.
    let (plain_out, reasoning_term) = match price.reasoning_pico_per_token {
        Some(rate) => (usage.output_tokens - reasoning, (reasoning, rate)),
        None => (usage.output_tokens, (0, 0)),
    };
    let terms = [
        (usage.uncached_input_tokens(), input),
        (
            usage.cached_input_tokens,
            price.cache_read_pico_per_token.unwrap_or(input),
        ),
        (
            usage.cache_write_tokens,
            price.cache_write_pico_per_token.unwrap_or(input),
        ),
        (plain_out, output),
        reasoning_term,
    ];
    let pico: u128 = terms
        .iter()
        .map(|&(tokens, rate)| tokens as u128 * rate as u128)
        .sum();
    let micro = (pico + PICO_PER_MICRO / 2) / PICO_PER_MICRO;
    MicroUsd(u64::try_from(micro).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
