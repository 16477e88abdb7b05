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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
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
