//! Configuration: the raw TOML file ([`ConfigFile`]) validated into a resolved [`Config`].
//!
//! The file is optional; every field has a default. Unknown keys are errors with a line number,
//! so a typo never silently weakens a policy. [`watch`] hot-reloads the file: a valid edit applies
//! to new requests, an invalid one keeps the running config and logs why.

mod file;
pub mod paths;
mod units;
pub mod watch;

pub use file::{
    AnomalyFile, BudgetFile, ConfigFile, KeyLimitsFile, LedgerFile, LimitsFile, ProviderFile,
};
pub use units::{parse_byte_size, parse_duration};

use crate::providers::{self, AuthStyle, ProviderKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_KEYRING_SERVICE: &str = "airlock";
const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// Why a config could not be used. Messages name the file and, where known, the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// What to do when a client sends a real provider key instead of an Airlock key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKeyPolicy {
    /// Refuse with 401 and say how to move the key into the keyring.
    #[default]
    Reject,
    /// Forward the client's own key unchanged (explicit opt-in).
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the upstream's response headers arrive.
    pub first_byte: Duration,
    /// Between two chunks of a response body.
    pub idle: Duration,
    /// Between two chunks of a request body from the client (and before the first).
    pub request_body: Duration,
    /// How long in-flight requests may run on after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(300),
            request_body: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Browser origins allowed to call Airlock (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Extra Host header values accepted besides loopback names.
    pub allowed_hosts: Vec<String>,
    pub client_provider_keys: ClientKeyPolicy,
}

/// One resolved provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Upstream base, e.g. `https://api.openai.com` or `http://127.0.0.1:9000/prefix`, no trailing `/`.
    pub upstream: http::Uri,
    pub auth: AuthStyle,
    /// The keyring entry (user name under the keyring service) that holds the real key.
    pub key_entry: String,
    pub client_provider_keys: ClientKeyPolicy,
    /// The SDK base URL suffix, e.g. `/v1`.
    pub sdk_suffix: String,
    /// `.env` variables that hold this provider's key.
    pub env_keys: Vec<String>,
    pub env_base_url: String,
}

impl Provider {
    pub fn needs_key(&self) -> bool {
        self.auth != AuthStyle::None
    }
}

/// The resolved configuration every stage reads from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub keyring_service: String,
    pub max_body: usize,
    pub timeouts: Timeouts,
    pub security: Security,
    /// Extra CA certificates (PEM) trusted for upstream TLS, besides the system and webpki roots.
    pub upstream_ca_file: Option<PathBuf>,
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub limits: Limits,
    pub anomaly: Anomaly,
    pub ledger: LedgerSettings,
    pub prices: BTreeMap<String, crate::meter::PriceOverride>,
    pub rules: crate::inspect::RuleOverrides,
    pub policy: crate::protect::policy::Policy,
}

/// A budget in integer micro-dollars per day and per month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub daily_micros: Option<i64>,
    pub monthly_micros: Option<i64>,
}

impl Budget {
    pub fn is_set(&self) -> bool {
        self.daily_micros.is_some() || self.monthly_micros.is_some()
    }
}

/// Model name globs, compiled once when the config loads.
#[derive(Debug, Clone)]
pub struct ModelGlobs {
    patterns: Vec<String>,
    set: globset::GlobSet,
}

impl PartialEq for ModelGlobs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Default for ModelGlobs {
    fn default() -> Self {
        ModelGlobs {
            patterns: Vec::new(),
            set: globset::GlobSet::empty(),
        }
    }
}

impl ModelGlobs {
    pub fn new(patterns: &[String]) -> Result<ModelGlobs, String> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            b.add(model_glob(p).map_err(|e| format!("{p:?}: {e}"))?);
        }
        let set = b.build().map_err(|e| e.to_string())?;
        Ok(ModelGlobs {
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern matches the model under any of its names: normalized
    /// (`crate::providers::normalize_model`) and with provider prefixes peeled off, so
    /// `O1-mini`, `" o1-mini"` and `openai/o1-mini` all meet `o1*`.
    pub fn matches(&self, model: &str) -> bool {
        let model = crate::providers::normalize_model(model);
        let hit = crate::providers::model_names(&model).any(|name| self.set.is_match(name));
        hit
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// A model-name glob; case-insensitive, since model names are compared lowercased.
pub fn model_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .case_insensitive(true)
        .build()
}

/// The effective limits for one key: `[limits.keys.NAME]` over the `[limits]` defaults, merged
/// when the config loads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyLimits {
    pub budget: Budget,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_tokens: Option<u64>,
    pub models_allow: ModelGlobs,
    pub models_deny: ModelGlobs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub global: Budget,
    pub providers: BTreeMap<String, Budget>,
    /// Every key without its own `[limits.keys.NAME]`.
    pub default_key: KeyLimits,
    /// Keys with their own settings, already merged over the defaults.
    pub keys: BTreeMap<String, KeyLimits>,
    pub soft_alert: f64,
    /// `limits.allow_unpriced_models`: a model with no known price may be used where a USD
    /// budget applies (uncounted). Off by default, so no budget is bypassed by one.
    pub allow_unpriced_models: bool,
}

impl Limits {
    /// The effective limits of `account`.
    pub fn for_key(&self, account: &str) -> &KeyLimits {
        self.keys.get(account).unwrap_or(&self.default_key)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub enabled: bool,
    pub auto_pause: bool,
    pub window: Duration,
    pub baseline: Duration,
    pub repeat_threshold: u32,
    pub variation_threshold: u32,
    pub burst_factor: f64,
    pub burst_min_requests: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    /// How long request rows are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// `false` writes no rows at all (spend still counts in memory for budgets while running).
    pub enabled: bool,
}

/// USD in config (a float, for people) to integer micro-dollars (for arithmetic).
fn usd_to_micros(
    field: &str,
    usd: f64,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<i64, ConfigError> {
    if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
        return Err(invalid(
            field,
            format!("{usd} is not a budget in USD (0 to 1e9)"),
        ));
    }
    Ok((usd * 1e6).round() as i64)
}

impl Config {
    /// Loads from `path` if given and present; a missing default file means all defaults,
    /// a missing explicit file is an error.
    pub fn load(path: Option<&Path>, explicit: bool) -> Result<Config, ConfigError> {
        match path {
            Some(p) if p.exists() || explicit => {
                let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                    path: p.to_owned(),
                    error,
                })?;
                Config::from_toml(&text, Some(p))
            }
            _ => ConfigFile::default().resolve(None),
        }
    }

    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("<inline>")),
            message: crate::inspect::rules::describe_toml_error(text, &e),
        })?;
        file.resolve(path)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// `http://127.0.0.1:8787`, as clients should address this instance.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn sdk_base_url(&self, provider: &Provider) -> String {
        format!(
            "{}/{}{}",
            self.base_url(),
            provider.name,
            provider.sdk_suffix
        )
    }
}

// === impl ConfigFile ===

impl ConfigFile {
    pub fn resolve(self, path: Option<&Path>) -> Result<Config, ConfigError> {
        let src = || {
            path.map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("<defaults>"))
        };
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: src(),
            field: field.to_owned(),
            message,
        };

        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8787 ({e})"),
            )
        })?;

        let max_body = match &self.max_body {
            Some(s) => parse_byte_size(s).map_err(|m| invalid("max_body", m))?,
            None => DEFAULT_MAX_BODY,
        };

        let d = Timeouts::default();
        let t = &self.timeouts;
        let dur = |field: &str, v: &Option<String>, default: Duration| match v {
            Some(s) => parse_duration(s).map_err(|m| invalid(field, m)),
            None => Ok(default),
        };
        let timeouts = Timeouts {
            connect: dur("timeouts.connect", &t.connect, d.connect)?,
            first_byte: dur("timeouts.first_byte", &t.first_byte, d.first_byte)?,
            idle: dur("timeouts.idle", &t.idle, d.idle)?,
            request_body: dur("timeouts.request_body", &t.request_body, d.request_body)?,
            shutdown_grace: dur(
                "timeouts.shutdown_grace",
                &t.shutdown_grace,
                d.shutdown_grace,
            )?,
        };

        for origin in &self.security.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "security.allowed_origins",
                    format!("{origin:?} must look like http://localhost:5173 (scheme, host, optional port, no path)"),
                ));
            }
        }
        let security = Security {
            allowed_origins: self.security.allowed_origins.clone(),
            allowed_hosts: self
                .security
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            client_provider_keys: self.security.client_provider_keys.unwrap_or_default(),
        };

        let mut providers = BTreeMap::new();
        for name in providers::PRESET_NAMES {
            let over = self.providers.get(name).cloned().unwrap_or_default();
            if over.enabled == Some(false) {
                continue;
            }
            providers.insert(
                name.to_owned(),
                Arc::new(resolve_provider(name, over, &security, &invalid)?),
            );
        }
        for (name, over) in &self.providers {
            if providers::preset(name).is_some() || over.enabled == Some(false) {
                continue;
            }
            providers.insert(
                name.clone(),
                Arc::new(resolve_provider(name, over.clone(), &security, &invalid)?),
            );
        }

        let budget = |field: &str, d: Option<f64>, m: Option<f64>| -> Result<Budget, ConfigError> {
            Ok(Budget {
                daily_micros: d
                    .map(|v| usd_to_micros(&format!("{field}.daily_usd"), v, &invalid))
                    .transpose()?,
                monthly_micros: m
                    .map(|v| usd_to_micros(&format!("{field}.monthly_usd"), v, &invalid))
                    .transpose()?,
            })
        };
        let l = &self.limits;
        // A key's own setting wins over the `[limits]` default for it.
        let key_limits = |field: &str, k: &file::KeyLimitsFile| -> Result<KeyLimits, ConfigError> {
            let globs = |name: &str, patterns: &[String]| {
                ModelGlobs::new(patterns).map_err(|m| invalid(&format!("{field}.{name}"), m))
            };
            Ok(KeyLimits {
                budget: budget(field, k.daily_usd, k.monthly_usd)?,
                rpm: k.rpm.filter(|v| *v > 0).or(l.rpm.filter(|v| *v > 0)),
                tpm: k.tpm.filter(|v| *v > 0).or(l.tpm.filter(|v| *v > 0)),
                max_tokens: k.max_tokens.or(l.max_tokens),
                models_allow: globs("models_allow", &k.models_allow)?,
                models_deny: globs("models_deny", &k.models_deny)?,
            })
        };
        let soft_alert = l.soft_alert.unwrap_or(0.8);
        if !(0.0..=1.0).contains(&soft_alert) {
            return Err(invalid(
                "limits.soft_alert",
                format!("{soft_alert} must be between 0 and 1"),
            ));
        }
        let limits = Limits {
            global: budget("limits", l.daily_usd, l.monthly_usd)?,
            providers: l
                .providers
                .iter()
                .map(|(n, b)| {
                    Ok((
                        n.clone(),
                        budget(&format!("limits.providers.{n}"), b.daily_usd, b.monthly_usd)?,
                    ))
                })
                .collect::<Result<_, ConfigError>>()?,
            default_key: key_limits("limits", &file::KeyLimitsFile::default())?,
            keys: l
                .keys
                .iter()
                .map(|(n, k)| Ok((n.clone(), key_limits(&format!("limits.keys.{n}"), k)?)))
                .collect::<Result<_, ConfigError>>()?,
            soft_alert,
            allow_unpriced_models: l.allow_unpriced_models.unwrap_or(false),
        };
        let a = &self.anomaly;
        let anomaly = Anomaly {
            enabled: a.enabled.unwrap_or(true),
            auto_pause: a.auto_pause.unwrap_or(false),
            window: dur("anomaly.window", &a.window, Duration::from_secs(60))?,
            baseline: dur(
                "anomaly.baseline",
                &a.baseline,
                Duration::from_secs(15 * 60),
            )?,
            repeat_threshold: a.repeat_threshold.unwrap_or(10).max(2),
            variation_threshold: a.variation_threshold.unwrap_or(30).max(2),
            burst_factor: a.burst_factor.unwrap_or(10.0).max(1.0),
            burst_min_requests: a.burst_min_requests.unwrap_or(120).max(1),
        };
        if anomaly.baseline <= anomaly.window {
            return Err(invalid(
                "anomaly.baseline",
                "must be longer than anomaly.window".into(),
            ));
        }
        let ledger = LedgerSettings {
            retention: match &self.ledger.retention {
                Some(s) if s == "forever" => None,
                Some(s) => Some(parse_duration(s).map_err(|m| invalid("ledger.retention", m))?),
                None => Some(Duration::from_secs(180 * 86_400)),
            },
            enabled: self.ledger.enabled.unwrap_or(true),
        };

        Ok(Config {
            source: path.map(Path::to_owned),
            listen,
            allow_remote: self.allow_remote.unwrap_or(false),
            keyring_service: self
                .keyring_service
                .unwrap_or_else(|| DEFAULT_KEYRING_SERVICE.to_owned()),
            max_body,
            timeouts,
            security,
            upstream_ca_file: self.upstream_ca_file.map(PathBuf::from),
            providers,
            limits,
            anomaly,
            ledger,
            prices: {
                // Validate now, so a bad price is a config error with its field, not a surprise later.
                let mut probe = crate::meter::PriceTable::default();
                probe
                    .set_overrides(&self.prices)
                    .map_err(|e| invalid("prices", e.to_string()))?;
                self.prices
            },
            rules: self.rules,
            policy: crate::protect::policy::Policy::from_file(self.policy)
                .map_err(|m| invalid("policy", m))?,
        })
    }
}

fn resolve_provider(
    name: &str,
    over: ProviderFile,
    security: &Security,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Provider, ConfigError> {
    let field = |f: &str| format!("providers.{name}.{f}");
    if name.is_empty()
        || name.starts_with('_')
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            &format!("providers.{name}"),
            "a provider name is the URL prefix: lowercase letters, digits, - and _ (not starting with _)".into(),
        ));
    }
    let preset = providers::preset(name);
    let kind = over.kind.or(preset.map(|p| p.kind)).ok_or_else(|| {
        invalid(
            &field("kind"),
            "a custom provider needs kind = \"openai-compatible\" (or openai, anthropic, gemini)"
                .into(),
        )
    })?;
    let upstream_text = over
        .upstream
        .or(preset.map(|p| p.upstream.to_owned()))
        .ok_or_else(|| {
            invalid(
                &field("upstream"),
                "a custom provider needs an upstream URL".into(),
            )
        })?;
    let upstream_text = upstream_text.trim_end_matches('/').to_owned();
    let upstream: http::Uri = upstream_text.parse().map_err(|e| {
        invalid(
            &field("upstream"),
            format!("{upstream_text:?} is not a URL ({e})"),
        )
    })?;
    match upstream.scheme_str() {
        Some("http") | Some("https") if upstream.authority().is_some() => {}
        _ => {
            return Err(invalid(
                &field("upstream"),
                format!("{upstream_text:?} must be an http:// or https:// URL with a host"),
            ))
        }
    }
    if upstream.query().is_some() {
        return Err(invalid(
            &field("upstream"),
            "the upstream URL must not have a query string".into(),
        ));
    }
    let default_auth = match kind {
        ProviderKind::Anthropic => AuthStyle::XApiKey,
        ProviderKind::Gemini => AuthStyle::XGoogApiKey,
        _ => AuthStyle::Bearer,
    };
    let auth = over.auth.or(preset.map(|p| p.auth)).unwrap_or(default_auth);
    let upper = name.to_ascii_uppercase().replace('-', "_");
    Ok(Provider {
        name: name.to_owned(),
        kind,
        upstream,
        auth,
        key_entry: over.key.unwrap_or_else(|| name.to_owned()),
        client_provider_keys: over
            .client_provider_keys
            .unwrap_or(security.client_provider_keys),
        sdk_suffix: over
            .sdk_suffix
            .or(preset.map(|p| p.sdk_suffix.to_owned()))
            .unwrap_or_else(|| {
                if kind.speaks_openai() {
                    "/v1".into()
                } else {
                    String::new()
                }
            }),
        env_keys: preset
            .map(|p| p.env_keys.iter().map(|s| (*s).to_owned()).collect())
            .unwrap_or_else(|| vec![format!("{upper}_API_KEY")]),
        env_base_url: preset
            .map(|p| p.env_base_url.to_owned())
            .unwrap_or_else(|| format!("{upper}_BASE_URL")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_every_preset_on_loopback() {
        let c = Config::from_toml("", None).expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        for name in providers::PRESET_NAMES {
            assert!(c.provider(name).is_some(), "{name}");
        }
        assert_eq!(
            c.provider("openai").map(|p| p.upstream.to_string()),
            Some("https://api.openai.com/".into())
        );
        assert!(!c.provider("ollama").expect("ollama").needs_key());
    }

    #[test]
    fn unpriced_models_are_refused_under_a_budget_unless_allowed() {
        let c = Config::from_toml("", None).expect("config");
        assert!(!c.limits.allow_unpriced_models);
        let c =
            Config::from_toml("[limits]\nallow_unpriced_models = true\n", None).expect("config");
        assert!(c.limits.allow_unpriced_models);
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = Config::from_toml(
            "listen = \"127.0.0.1:1\"\n\n[timeouts]\nconect = \"1s\"\n",
            None,
        )
        .expect_err("typo must fail");
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("conect"), "{msg}");
    }

    #[test]
    fn custom_provider_needs_kind_and_upstream() {
        let err = Config::from_toml("[providers.corp]\nupstream = \"https://llm.corp\"\n", None)
            .expect_err("no kind");
        assert!(err.to_string().contains("providers.corp.kind"), "{err}");
        let c = Config::from_toml(
            "[providers.corp]\nkind = \"openai-compatible\"\nupstream = \"https://llm.corp/api/\"\n",
            None,
        )
        .expect("valid");
        let p = c.provider("corp").expect("corp");
        assert_eq!(p.upstream.path(), "/api");
        assert_eq!(p.env_base_url, "CORP_BASE_URL");
        assert_eq!(c.sdk_base_url(p), "http://127.0.0.1:8787/corp/v1");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (toml, field) in [
            ("listen = \"localhost\"", "listen"),
            ("max_body = \"lots\"", "max_body"),
            ("[timeouts]\nidle = \"forever\"", "timeouts.idle"),
            (
                "[providers.openai]\nupstream = \"ftp://x\"",
                "providers.openai.upstream",
            ),
            (
                "[security]\nallowed_origins = [\"localhost:3000\"]",
                "security.allowed_origins",
            ),
        ] {
            let err = Config::from_toml(toml, None).expect_err(toml);
            assert!(err.to_string().contains(field), "{toml}: {err}");
        }
    }

    #[test]
    fn a_preset_can_be_disabled_or_pointed_elsewhere() {
        let c = Config::from_toml(
            "[providers.xai]\nenabled = false\n[providers.openai]\nupstream = \"http://127.0.0.1:9000\"\n",
            None,
        )
        .expect("valid");
        assert!(c.provider("xai").is_none());
        assert_eq!(
            c.provider("openai").map(|p| p.upstream.to_string()),
            Some("http://127.0.0.1:9000/".into())
        );
    }
}
