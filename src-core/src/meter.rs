//! Metering: how many tokens a request used and what they cost, for every provider's wire format.
//!
//! This module is pure (no I/O, no async, no globals beyond lazily built tokenizer tables), so the
//! proxy, the CLI and the tests all share it. The pieces:
//!
//! - [`usage_from_json`] reads the usage block of a whole (non-streamed) response body.
//! - [`StreamMeter`] is fed the parsed SSE events of a streamed response (see [`crate::sse`]) and
//!   on [`StreamMeter::finish`] returns the provider's usage, or an estimate for whatever part of it
//!   never arrived (client gone, upstream reset, timeout). A stream that delivered output is never
//!   metered as zero.
//! - [`add_include_usage`] / [`is_usage_only_chunk`] / [`strip_null_usage`] let the proxy ask OpenAI
//!   for a usage chunk the client did not request, and hide it again on the way back.
//! - [`PriceTable`] holds per-model prices (a bundled LiteLLM-format table plus overrides) as exact
//!   integers; [`cost`] turns a [`Usage`] into [`MicroUsd`].
//!
//! Normalised meaning of [`Usage`] (every provider is converted to it, see `docs/metering.md`):
//! `input_tokens` is the *whole* prompt, and `cached_input_tokens` and `cache_write_tokens` are
//! parts of it; `output_tokens` is the whole output, and `reasoning_tokens` is part of it.
//!
//! ```
//! use airlock::meter::{cost, usage_from_json, PriceTable};
//! use airlock::providers::ProviderKind;
//!
//! let body = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":200,
//!                 "prompt_tokens_details":{"cached_tokens":400}}}"#;
//! let usage = usage_from_json(ProviderKind::OpenAi, body).expect("usage");
//! assert_eq!((usage.input_tokens, usage.cached_input_tokens), (1000, 400));
//! let table = PriceTable::bundled();
//! let price = table.lookup(Some("openai"), "gpt-4o-mini-2024-07-18").expect("known model");
//! // 600 × $0.15/M + 400 × $0.075/M + 200 × $0.60/M = $0.00024
//! assert_eq!(cost(&usage, price).to_string(), "$0.000240");
//! ```

pub mod counter;
mod estimate;
mod extract;
mod price;
mod stream;

pub use estimate::{estimate_input_tokens, estimate_text_tokens, Tokenizer};
pub use extract::{usage_from_json, usage_or_estimate};
pub use price::{
    cost, validate_prices, validate_update, MicroUsd, ModelPrice, PriceError, PriceOverride,
    PriceTable, MAX_FREE_CHAT_PERCENT, MIN_MODELS_IN_UPDATE, MIN_UPDATE_RATIO_PERCENT,
};
pub use stream::{add_include_usage, is_usage_only_chunk, strip_null_usage, StreamMeter};

/// Tokens used by one request, in Airlock's normalised meaning.
///
/// Invariants kept by every constructor in this module: `cached_input_tokens +
/// cache_write_tokens <= input_tokens` and `reasoning_tokens <= output_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached or not.
    pub input_tokens: u64,
    /// Output tokens, reasoning/thinking included.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache (part of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (part of `input_tokens`).
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning (part of `output_tokens`).
    pub reasoning_tokens: u64,
    /// Some part of this was estimated by Airlock rather than reported by the provider.
    pub estimated: bool,
}

// === impl Usage ===

impl Usage {
    /// Prompt tokens billed at the plain input rate.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Restores the invariants if a provider reported parts larger than the whole.
    fn normalised(mut self) -> Usage {
        let parts = self
            .cached_input_tokens
            .saturating_add(self.cache_write_tokens);
        self.input_tokens = self.input_tokens.max(parts);
        self.output_tokens = self.output_tokens.max(self.reasoning_tokens);
        self
    }
}
