//! State shared by every request: the running config, the upstream client, the key snapshot
//! and the provider-key cache. Each is swapped whole, never locked across an await.

use super::forward::{build_client, ClientSetupError, UpstreamClient};
use super::record::Recorder;
use crate::config::Config;
use crate::keys::{KeySnapshot, KeyStore, Vault, VaultError, Verdict};
use arc_swap::ArcSwap;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The config and the client built from it, replaced together on reload.
pub struct Runtime {
    pub config: Arc<Config>,
    pub client: UpstreamClient,
}

pub struct State {
    runtime: ArcSwap<Runtime>,
    keys: ArcSwap<KeySnapshot>,
    store: Arc<Mutex<KeyStore>>,
    /// Serialises on-demand snapshot refreshes and remembers when the last one ran.
    refresh_gate: tokio::sync::Mutex<Instant>,
    secrets: Mutex<HashMap<(String, String), Arc<SecretString>>>,
    secrets_generation: Mutex<i64>,
    pub listen: SocketAddr,
    pub recorder: Recorder,
}

/// A cache miss may mean a key issued a moment ago; re-read the database at most this often.
const MISS_REFRESH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the database is polled for changes made by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

impl State {
    pub fn new(
        config: Config,
        store: KeyStore,
        listen: SocketAddr,
    ) -> Result<Arc<State>, StateError> {
        let client = build_client(&config)?;
        let keys = KeySnapshot::build(store.live_with_hashes()?, store.generation()?);
        let secrets_generation = store.secrets_generation()?;
        Ok(Arc::new(State {
            runtime: ArcSwap::from_pointee(Runtime {
                config: Arc::new(config),
                client,
            }),
            keys: ArcSwap::from_pointee(keys),
            store: Arc::new(Mutex::new(store)),
            refresh_gate: tokio::sync::Mutex::new(
                Instant::now()
                    .checked_sub(MISS_REFRESH_INTERVAL)
                    .unwrap_or_else(Instant::now),
            ),
            secrets: Mutex::new(HashMap::new()),
            secrets_generation: Mutex::new(secrets_generation),
            listen,
            recorder: Recorder::default(),
        }))
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Applies a reloaded config to new requests. Settings that need a restart are reported.
    pub fn apply_config(&self, config: Config) -> Result<(), ClientSetupError> {
        let old = self.runtime();
        if config.listen != old.config.listen || config.allow_remote != old.config.allow_remote {
            tracing::warn!(
                "config: listen/allow_remote changed; restart `airlock serve` to apply them"
            );
        }
        let client = if config.timeouts.connect == old.config.timeouts.connect
            && config.upstream_ca_file == old.config.upstream_ca_file
        {
            old.client.clone()
        } else {
            build_client(&config)?
        };
        self.runtime.store(Arc::new(Runtime {
            config: Arc::new(config),
            client,
        }));
        Ok(())
    }

    /// Verifies a presented Airlock key; an unknown key triggers one prompt re-read of the
    /// database, so a key issued a moment ago (as `airlock exec` does) works at once.
    pub async fn verify_key(&self, presented: &str) -> Verdict {
        let verdict = self.keys.load().verify(presented);
        if !matches!(verdict, Verdict::Unknown) {
            return verdict;
        }
        let arrived = Instant::now();
        {
            let mut last = self.refresh_gate.lock().await;
            // Skip if a refresh already ran since this request arrived. Otherwise wait out the
            // interval (holding the gate, so a flood of bad keys costs at most 20 reads a
            // second) and re-read: an unknown key is delayed a little, never wrongly refused.
            if *last < arrived {
                let wait = MISS_REFRESH_INTERVAL.saturating_sub(last.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                if let Err(e) = self.refresh_keys().await {
                    tracing::error!(error = %e, "cannot re-read Airlock keys");
                }
                *last = Instant::now();
            }
        }
        self.keys.load().verify(presented)
    }

    async fn refresh_keys(&self) -> Result<(), StateError> {
        let store = self.store.clone();
        let snapshot = tokio::task::spawn_blocking(move || -> Result<KeySnapshot, StateError> {
            let store = store.lock().map_err(|_| StateError::Poisoned)?;
            Ok(KeySnapshot::build(
                store.live_with_hashes()?,
                store.generation()?,
            ))
        })
        .await
        .map_err(|e| StateError::Join(e.to_string()))??;
        self.keys.store(Arc::new(snapshot));
        Ok(())
    }

    /// One poll of the database for changes made by the CLI: issued or revoked keys, and
    /// provider keys set or removed in the keyring.
    pub async fn poll_changes(&self) -> Result<(), StateError> {
        let store = self.store.clone();
        let (keys_gen, secrets_gen) =
            tokio::task::spawn_blocking(move || -> Result<(i64, i64), StateError> {
                let store = store.lock().map_err(|_| StateError::Poisoned)?;
                Ok((store.generation()?, store.secrets_generation()?))
            })
            .await
            .map_err(|e| StateError::Join(e.to_string()))??;
        if keys_gen != self.keys.load().generation {
            self.refresh_keys().await?;
        }
        let mut seen = self
            .secrets_generation
            .lock()
            .map_err(|_| StateError::Poisoned)?;
        if *seen != secrets_gen {
            *seen = secrets_gen;
            self.secrets
                .lock()
                .map_err(|_| StateError::Poisoned)?
                .clear();
        }
        Ok(())
    }

    /// The provider key for `entry`, from memory or (once) from the keyring.
    pub async fn provider_key(
        &self,
        service: &str,
        entry: &str,
    ) -> Result<Arc<SecretString>, VaultError> {
        let cache_key = (service.to_owned(), entry.to_owned());
        if let Some(k) = self
            .secrets
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).cloned())
        {
            return Ok(k);
        }
        let vault = Vault::new(service);
        let name = entry.to_owned();
        let key = tokio::task::spawn_blocking(move || vault.get(&name))
            .await
            .map_err(|e| VaultError::Failed {
                detail: format!("keyring task failed: {e}"),
            })??;
        let key = Arc::new(key);
        if let Ok(mut m) = self.secrets.lock() {
            m.insert(cache_key, key.clone());
        }
        Ok(key)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(transparent)]
    Client(#[from] ClientSetupError),
    #[error(transparent)]
    Store(#[from] crate::keys::StoreError),
    #[error("a background task failed: {0}")]
    Join(String),
    #[error("internal lock poisoned")]
    Poisoned,
}
