//! The config file as written: every field optional, unknown fields rejected.

use super::ClientKeyPolicy;
use crate::providers::{AuthStyle, ProviderKind};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub keyring_service: Option<String>,
    pub max_body: Option<String>,
    pub upstream_ca_file: Option<String>,
    pub timeouts: TimeoutsFile,
    pub security: SecurityFile,
    pub providers: BTreeMap<String, ProviderFile>,
    pub limits: LimitsFile,
    pub anomaly: AnomalyFile,
    pub ledger: LedgerFile,
    /// Per-model prices (USD per million tokens) that win over the bundled table.
    pub prices: BTreeMap<String, crate::meter::PriceOverride>,
    /// Detection rules: extra rules, overrides, disabled ids and families.
    pub rules: crate::inspect::RuleOverrides,
    /// What happens to findings, per kind, family or rule, globally, per provider and per key.
    pub policy: crate::protect::policy::PolicyFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
    pub request_body: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityFile {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub client_provider_keys: Option<ClientKeyPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderFile {
    pub enabled: Option<bool>,
    pub kind: Option<ProviderKind>,
    pub upstream: Option<String>,
    pub auth: Option<AuthStyle>,
    /// Keyring entry name; defaults to the provider name.
    pub key: Option<String>,
    pub sdk_suffix: Option<String>,
    pub client_provider_keys: Option<ClientKeyPolicy>,
}

/// Budgets in USD per day and per month.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetFile {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyLimitsFile {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_tokens: Option<u64>,
    pub models_allow: Vec<String>,
    pub models_deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsFile {
    /// Global budget, all keys and providers together.
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    /// Defaults for every key.
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Share of a budget at which a soft alert fires (default 0.8).
    pub soft_alert: Option<f64>,
    /// Let requests for models with no known price through even where a USD budget applies
    /// (their cost is unknown, so no budget counts them). Default false: refused.
    pub allow_unpriced_models: Option<bool>,
    pub providers: BTreeMap<String, BudgetFile>,
    pub keys: BTreeMap<String, KeyLimitsFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyFile {
    pub enabled: Option<bool>,
    /// Pause a key when one of its alerts fires (default false: alert only).
    pub auto_pause: Option<bool>,
    /// The short window the detectors look at (default 60s).
    pub window: Option<String>,
    /// The longer history a key's baseline comes from (default 15m).
    pub baseline: Option<String>,
    /// Same prompt this many times in the window: runaway loop (default 10).
    pub repeat_threshold: Option<u32>,
    /// This many distinct prompts of one shape in the window: extraction-like (default 30).
    pub variation_threshold: Option<u32>,
    /// Rate or token burn this many times the baseline: burst (default 10).
    pub burst_factor: Option<f64>,
    /// No burst alert below this many requests in the window (default 120).
    pub burst_min_requests: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerFile {
    /// How long request rows are kept (default 180d).
    pub retention: Option<String>,
    /// Record requests at all (default true). Off, nothing is written: no history, no spend
    /// across restarts. For measuring Airlock's own cost and for throwaway setups.
    pub enabled: Option<bool>,
}
