//! Expected costs, derived at test time from the price table Airlock ships
//! (`src-core/prices/model_prices.json`, LiteLLM format, USD per token) and the mock's
//! documented usage formula, so no test hard-codes a dollar figure.

use crate::mock::text;
use anyhow::{anyhow, Context};
use serde_json::Value;
use std::path::PathBuf;

/// The shipped price table.
pub fn table_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("src-core")
        .join("prices")
        .join("model_prices.json")
}

/// One model's prices in pico-dollars per token (USD per token × 10¹²).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u128,
    pub output: u128,
    pub cache_read: Option<u128>,
    pub cache_write: Option<u128>,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    models: serde_json::Map<String, Value>,
}

/// USD per token as written in the JSON, in pico-dollars. The table's figures have at most a
/// few significant digits, so rounding the f64 product recovers the exact integer.
fn pico(v: &Value) -> Option<u128> {
    let usd = v.as_f64()?;
    let p = (usd * 1e12).round();
    (p >= 0.0).then_some(p as u128)
}

impl PriceTable {
    pub fn load() -> anyhow::Result<Self> {
        let path = table_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)?;
        let models = v
            .as_object()
            .cloned()
            .ok_or_else(|| anyhow!("{} is not a JSON object", path.display()))?;
        Ok(Self { models })
    }

    /// The entry under exactly `key` (Gemini models are keyed `gemini/<model>`).
    pub fn price(&self, key: &str) -> Price {
        let m = self
            .models
            .get(key)
            .unwrap_or_else(|| panic!("no {key:?} in the shipped price table"));
        let field = |f: &str| m.get(f).and_then(pico);
        Price {
            input: field("input_cost_per_token")
                .unwrap_or_else(|| panic!("{key}: no input_cost_per_token")),
            output: field("output_cost_per_token").unwrap_or(0),
            cache_read: field("cache_read_input_token_cost"),
            cache_write: field("cache_creation_input_token_cost"),
        }
    }
}

/// Normalised usage as the ledger stores it: `input` is the whole prompt (cached and
/// cache-write are parts of it), `output` the whole output (reasoning is part of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.input += o.input;
        self.output += o.output;
        self.cached += o.cached;
        self.cache_write += o.cache_write;
        self.reasoning += o.reasoning;
    }

    /// Micro-dollars: every class at its price in pico-dollars, rounded half-up once.
    pub fn cost_micros(&self, p: &Price) -> i64 {
        let uncached = self.input - self.cached - self.cache_write;
        let pico = u128::from(uncached) * p.input
            + u128::from(self.cached) * p.cache_read.unwrap_or(p.input)
            + u128::from(self.cache_write) * p.cache_write.unwrap_or(p.input)
            + u128::from(self.output) * p.output;
        i64::try_from((pico + 500_000) / 1_000_000).expect("cost fits i64")
    }
}

/// Extra token classes a request asks the mock for with `x-mock-scenario`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra {
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Extra {
    /// The `x-mock-scenario` value producing these counts (empty when all zero).
    pub fn scenario(&self) -> String {
        let mut parts = Vec::new();
        if self.cached > 0 {
            parts.push(format!("cached={}", self.cached));
        }
        if self.cache_write > 0 {
            parts.push(format!("cache_write={}", self.cache_write));
        }
        if self.reasoning > 0 {
            parts.push(format!("reasoning={}", self.reasoning));
        }
        parts.join("; ")
    }
}

/// What the mock reports for a text generation answering `prompt` (tests/README.md), normalised.
pub fn generation_usage(prompt: &str, extra: Extra) -> Usage {
    let u = text::input_tokens(prompt);
    let o = text::word_count(&text::answer(prompt));
    Usage {
        input: u + extra.cached + extra.cache_write,
        output: o + extra.reasoning,
        cached: extra.cached,
        cache_write: extra.cache_write,
        reasoning: extra.reasoning,
    }
}

/// What the mock reports for an embeddings request over `inputs`.
pub fn embedding_usage(inputs: &[&str]) -> Usage {
    Usage {
        input: inputs.iter().map(|t| text::input_tokens(t)).sum(),
        ..Usage::default()
    }
}
