//! State shared by every request: the running config, the upstream client, the key snapshot
//! and the provider-key cache. Each is swapped whole, never locked across an await.

use super::forward::{build_client, ClientSetupError, UpstreamClient};
use crate::admin::events::{Event, EventBus};
use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::keys::store::now_ms;
use crate::keys::vault::KEYRING_TIMEOUT;
use crate::keys::{KeySnapshot, KeyStore, Vault, VaultError, Verdict};
use crate::ledger::{EventRecord, LedgerWriter};
use crate::limits::{anomaly::Detector, budget::SpendBook, rate::RateBook};
use crate::meter::PriceTable;
use arc_swap::ArcSwap;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The config and the client built from it, replaced together on reload.
pub struct Runtime {
    pub config: Arc<Config>,
    pub client: UpstreamClient,
    /// The detection engine compiled from the built-in rules and the config's `[rules]`.
    pub engine: Arc<crate::inspect::Engine>,
    /// The engine's secret keywords, for holding streamed tokens that could become secrets.
    pub secret_keywords: Arc<Vec<String>>,
}

/// Compiles the detection engine for a config.
pub fn build_engine(config: &Config) -> Result<crate::inspect::Engine, StateError> {
    crate::inspect::EngineBuilder::new()
        .overrides(config.rules.clone())
        .build()
        .map_err(|e| StateError::Rules(e.to_string()))
}

pub struct State {
    runtime: ArcSwap<Runtime>,
    keys: ArcSwap<KeySnapshot>,
    store: Arc<Mutex<KeyStore>>,
    /// Serialises on-demand snapshot refreshes and remembers when the last one ran.
    refresh_gate: tokio::sync::Mutex<Instant>,
    /// Serialises polls for changes (the timer's and [`State::sync_changes`]) and remembers when
    /// the last complete one started.
    poll_gate: tokio::sync::Mutex<Instant>,
    secrets: Arc<Mutex<HashMap<SecretId, Arc<SecretString>>>>,
    /// Keyring reads in progress, one per key, shared by every request that needs it meanwhile.
    lookups: Arc<Mutex<HashMap<SecretId, Lookup>>>,
    /// Bumped whenever the cache is emptied for changed keys: a keyring read started before
    /// does not put what it read into the cache, nor stays shared with later requests.
    secrets_epoch: Arc<std::sync::atomic::AtomicU64>,
    secrets_generation: Mutex<i64>,
    control_generation: Mutex<i64>,
    paused: AtomicBool,
    admin_token: Mutex<Option<Arc<SecretString>>>,
    pub listen: SocketAddr,
    pub started: std::time::Instant,
    pub ledger: LedgerWriter,
    pub events: EventBus,
    pub metrics: Metrics,
    pub spend: SpendBook,
    pub rates: RateBook,
    pub anomaly: Detector,
    /// The price table with the config's overrides applied; swapped on reload.
    pub prices: ArcSwap<PriceTable>,
    data_dir: std::path::PathBuf,
    /// Pseudonym mappings, per key and conversation; memory only.
    pub vault: crate::protect::pseudonym::Vault,
    /// Key for the keyed hashes of found values in the ledger.
    pub hash_key: [u8; 32],
}

/// A provider key's place in the keyring: (service, entry).
type SecretId = (String, String);

/// One keyring read of a provider key, started by the first request that missed the cache.
struct Lookup {
    /// `None` until the keyring answers.
    answer: tokio::sync::watch::Receiver<Option<Result<Arc<SecretString>, VaultError>>>,
    /// The cache's epoch when the read started.
    epoch: u64,
}

/// The keyring entry holding the key for hashing found values.
pub const HASH_KEY_ENTRY: &str = "__airlock_finding_key__";

/// The finding-hash key from the keyring (created on first use), so hashes stay comparable
/// across restarts; a random one for this run if the keyring cannot be reached.
fn finding_hash_key(service: &str) -> [u8; 32] {
    use rand::RngCore;
    use secrecy::ExposeSecret;
    let vault = Vault::new(service);
    let from_keyring = match vault.get(HASH_KEY_ENTRY) {
        Ok(k) => hex::decode(k.expose_secret()).ok(),
        Err(VaultError::NotSet { .. }) => {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            vault
                .set(HASH_KEY_ENTRY, &hex::encode(k))
                .ok()
                .map(|()| k.to_vec())
        }
        Err(_) => None,
    };
    match from_keyring.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
        Some(k) => k,
        None => {
            tracing::warn!(
                "finding hashes use a key for this run only (the keyring is not reachable)"
            );
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            k
        }
    }
}

/// The price table Airlock uses: a file written by `airlock prices update` in the data dir if
/// there is one, else the bundled table; then the config's overrides.
pub fn load_prices(
    data_dir: &std::path::Path,
    config: &Config,
) -> Result<PriceTable, crate::meter::PriceError> {
    let path = data_dir.join(PRICES_FILE);
    let mut table = match std::fs::read_to_string(&path) {
        Ok(text) => PriceTable::from_litellm_json(&text)?,
        Err(_) => PriceTable::bundled(),
    };
    table.set_overrides(&config.prices)?;
    Ok(table)
}

/// Where `airlock prices update` keeps the newer table.
pub const PRICES_FILE: &str = "model_prices.json";

/// The keyring entry (under the configured service) that holds the admin API token.
pub const ADMIN_TOKEN_ENTRY: &str = "__airlock_admin_token__";

/// A cache miss may mean a key issued a moment ago; re-read the database at most this often.
const MISS_REFRESH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the database is polled for changes made by other processes. The CLI does not wait
/// for it: it asks for a poll at once (`POST /_airlock/sync`) after each change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

impl State {
    pub fn new(
        config: Config,
        store: KeyStore,
        listen: SocketAddr,
        ledger: LedgerWriter,
        data_dir: &std::path::Path,
    ) -> Result<Arc<State>, StateError> {
        let client = build_client(&config)?;
        let prices =
            load_prices(data_dir, &config).map_err(|e| StateError::Prices(e.to_string()))?;
        let engine = Arc::new(build_engine(&config)?);
        let hash_key = finding_hash_key(&config.keyring_service);
        let keys = KeySnapshot::build(store.live_with_hashes()?, store.generation()?);
        let secrets_generation = store.secrets_generation()?;
        let control_generation = store.control_generation()?;
        let paused = store.is_paused()?;
        let spend = SpendBook::default();
        seed_spend(&spend, &store)?;
        Ok(Arc::new(State {
            runtime: ArcSwap::from_pointee(Runtime {
                config: Arc::new(config),
                client,
                secret_keywords: Arc::new(crate::protect::restore::secret_keywords(&engine)),
                engine,
            }),
            keys: ArcSwap::from_pointee(keys),
            store: Arc::new(Mutex::new(store)),
            refresh_gate: tokio::sync::Mutex::new(
                Instant::now()
                    .checked_sub(MISS_REFRESH_INTERVAL)
                    .unwrap_or_else(Instant::now),
            ),
            poll_gate: tokio::sync::Mutex::new(Instant::now()),
            secrets: Arc::default(),
            lookups: Arc::default(),
            secrets_epoch: Arc::default(),
            secrets_generation: Mutex::new(secrets_generation),
            control_generation: Mutex::new(control_generation),
            paused: AtomicBool::new(paused),
            admin_token: Mutex::new(None),
            listen,
            started: std::time::Instant::now(),
            ledger,
            events: EventBus::default(),
            metrics: Metrics::default(),
            spend,
            rates: RateBook::default(),
            anomaly: Detector::default(),
            prices: ArcSwap::from_pointee(prices),
            data_dir: data_dir.to_owned(),
            vault: crate::protect::pseudonym::Vault::default(),
            hash_key,
        }))
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Flips the global pause switch, records it, and tells every UI.
    pub async fn set_paused(&self, paused: bool) -> Result<(), StateError> {
        self.with_store(move |s| s.set_paused(paused)).await?;
        if self.paused.swap(paused, Ordering::Relaxed) != paused {
            self.publish(if paused {
                Event::Paused { ts: now_ms() }
            } else {
                Event::Resumed { ts: now_ms() }
            });
        }
        Ok(())
    }

    /// Pauses or resumes one key and applies it at once.
    pub async fn set_key_paused(
        &self,
        name: &str,
        reason: Option<&str>,
    ) -> Result<bool, StateError> {
        let n = name.to_owned();
        let r = reason.map(str::to_owned);
        let changed = self
            .with_store(move |s| match &r {
                Some(reason) => s.pause(&n, reason),
                None => s.resume(&n),
            })
            .await?;
        // The refresh publishes the key_paused / key_resumed event.
        self.refresh_keys().await?;
        Ok(changed)
    }

    /// Publishes a live event, and stores the notable ones.
    pub fn publish(&self, e: Event) {
        if e.is_notable() {
            let account = match &e {
                Event::Anomaly { account, .. } => Some(account.clone()),
                Event::KeyPaused { key, .. } | Event::KeyResumed { key, .. } => Some(key.clone()),
                _ => None,
            };
            let detail = serde_json::to_value(&e).unwrap_or(serde_json::Value::Null);
            self.ledger.event(EventRecord {
                ts: now_ms(),
                kind: e.kind().to_owned(),
                account,
                detail,
            });
        }
        self.events.publish(e);
    }

    /// Runs `f` on the key store on a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut KeyStore) -> Result<T, crate::keys::StoreError> + Send + 'static,
    ) -> Result<T, StateError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<T, StateError> {
            let mut s = store.lock().map_err(|_| StateError::Poisoned)?;
            Ok(f(&mut s)?)
        })
        .await
        .map_err(|e| StateError::Join(e.to_string()))?
    }

    /// The admin API token, from the keyring (created on first use).
    pub async fn admin_token(&self) -> Result<Arc<SecretString>, VaultError> {
        if let Some(t) = self.admin_token.lock().ok().and_then(|t| t.clone()) {
            return Ok(t);
        }
        let service = self.runtime().config.keyring_service.clone();
        let token =
            tokio::task::spawn_blocking(move || admin_token_get_or_create(&Vault::new(service)))
                .await
                .map_err(|e| VaultError::Failed {
                    detail: format!("keyring task failed: {e}"),
                })??;
        let token = Arc::new(token);
        if let Ok(mut t) = self.admin_token.lock() {
            *t = Some(token.clone());
        }
        Ok(token)
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Applies a reloaded config to new requests. Settings that need a restart are reported.
    pub fn apply_config(&self, config: Config) -> Result<(), StateError> {
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
        match load_prices(&self.data_dir, &config) {
            Ok(t) => self.prices.store(Arc::new(t)),
            Err(e) => tracing::error!("price table not reloaded: {e}"),
        }
        // Recompile the rules only when they changed.
        let engine = if serde_json::to_string(&config.rules).ok()
            == serde_json::to_string(&old.config.rules).ok()
        {
            old.engine.clone()
        } else {
            Arc::new(build_engine(&config)?)
        };
        let secret_keywords = Arc::new(crate::protect::restore::secret_keywords(&engine));
        self.runtime.store(Arc::new(Runtime {
            config: Arc::new(config),
            client,
            engine,
            secret_keywords,
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

    pub async fn refresh_keys(&self) -> Result<(), StateError> {
        let snapshot = self
            .with_store(|s| Ok(KeySnapshot::build(s.live_with_hashes()?, s.generation()?)))
            .await?;
        let old = self.keys.swap(Arc::new(snapshot));
        // Pauses can come from the CLI, the admin API or an anomaly; announce each change once,
        // here, whichever it was.
        let new = self.keys.load();
        for (key, reason) in new.pause_changes(&old) {
            self.publish(match reason {
                Some(reason) => Event::KeyPaused {
                    ts: now_ms(),
                    key,
                    reason,
                },
                None => Event::KeyResumed { ts: now_ms(), key },
            });
        }
        Ok(())
    }

    /// One poll of the database for changes made by the CLI: issued, revoked, paused or resumed
    /// keys, the pause switch, and provider keys set or removed in the keyring.
    pub async fn poll_changes(&self) -> Result<(), StateError> {
        let mut last = self.poll_gate.lock().await;
        let started = Instant::now();
        self.poll_changes_locked().await?;
        *last = started;
        Ok(())
    }

    /// Applies every change committed to the database before this call, and returns once it is
    /// in force (`POST /_airlock/sync`, sent by the CLI after it writes). A poll that started
    /// after the call arrived has read those changes already, so a burst of calls costs about
    /// one poll.
    pub async fn sync_changes(&self) -> Result<(), StateError> {
        let arrived = Instant::now();
        let mut last = self.poll_gate.lock().await;
        if *last > arrived {
            return Ok(());
        }
        let started = Instant::now();
        self.poll_changes_locked().await?;
        *last = started;
        Ok(())
    }

    /// The poll itself; the caller holds `poll_gate`, so a poll that returns has applied what it
    /// read (two at once could each see the other's half done).
    async fn poll_changes_locked(&self) -> Result<(), StateError> {
        let (keys_gen, secrets_gen, control_gen) = self
            .with_store(|s| {
                Ok((
                    s.generation()?,
                    s.secrets_generation()?,
                    s.control_generation()?,
                ))
            })
            .await?;
        if keys_gen != self.keys.load().generation {
            self.refresh_keys().await?;
        }
        {
            let mut seen = self
                .secrets_generation
                .lock()
                .map_err(|_| StateError::Poisoned)?;
            if *seen != secrets_gen {
                *seen = secrets_gen;
                let mut secrets = self.secrets.lock().map_err(|_| StateError::Poisoned)?;
                self.secrets_epoch.fetch_add(1, Ordering::SeqCst);
                secrets.clear();
                drop(secrets);
                self.lookups
                    .lock()
                    .map_err(|_| StateError::Poisoned)?
                    .clear();
            }
        }
        let control_changed = {
            let mut seen = self
                .control_generation
                .lock()
                .map_err(|_| StateError::Poisoned)?;
            std::mem::replace(&mut *seen, control_gen) != control_gen
        };
        if control_changed {
            // The pause switch was flipped from another process (the CLI).
            let paused = self.with_store(|s| s.is_paused()).await?;
            if self.paused.swap(paused, Ordering::Relaxed) != paused {
                self.publish(if paused {
                    Event::Paused { ts: now_ms() }
                } else {
                    Event::Resumed { ts: now_ms() }
                });
            }
        }
        Ok(())
    }

    /// The provider key for `entry`, from memory or (once) from the keyring.
    ///
    /// A miss starts one keyring read on its own thread, and every request for the same key
    /// meanwhile waits on that read, each for at most [`KEYRING_TIMEOUT`] from its arrival, then
    /// fails with [`VaultError::Timeout`]. A keyring that stopped answering therefore holds one thread per
    /// key (not one per request, and no async worker); when it answers again, that read ends,
    /// fills the cache, and the next request goes through. The thread is not the runtime's
    /// blocking pool, whose shutdown would wait for it.
    pub async fn provider_key(
        &self,
        service: &str,
        entry: &str,
    ) -> Result<Arc<SecretString>, VaultError> {
        let id: SecretId = (service.to_owned(), entry.to_owned());
        if let Some(k) = self.secrets.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(k);
        }
        let deadline = Instant::now() + KEYRING_TIMEOUT;
        let mut answer = {
            let mut lookups = self.lookups.lock().map_err(|_| VaultError::Failed {
                detail: "internal lock poisoned".into(),
            })?;
            match lookups.get(&id) {
                // A read whose thread died without answering is replaced, never waited on.
                Some(l) if l.answer.has_changed().is_ok() => l.answer.clone(),
                _ => {
                    let l = self.start_lookup(id.clone())?;
                    let answer = l.answer.clone();
                    lookups.insert(id, l);
                    answer
                }
            }
        };
        let waited = tokio::time::timeout_at(deadline, answer.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(got)) => match &*got {
                Some(result) => result.clone(),
                None => Err(lookup_lost()),
            },
            Ok(Err(_)) => Err(lookup_lost()),
            Err(_) => Err(VaultError::Timeout {
                secs: KEYRING_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Starts the keyring read for `id` on its own thread. When the keyring answers, the key
    /// goes into the cache and the lookup is removed before the waiters hear the answer, so a
    /// request arriving meanwhile finds one or the other.
    fn start_lookup(&self, id: SecretId) -> Result<Lookup, VaultError> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let secrets = self.secrets.clone();
        let lookups = self.lookups.clone();
        let epochs = self.secrets_epoch.clone();
        let epoch = epochs.load(Ordering::SeqCst);
        std::thread::Builder::new()
            .name("airlock-keyring".into())
            .spawn(move || {
                let result = Vault::new(&id.0).get_unbounded(&id.1).map(Arc::new);
                // Checked under the cache's lock, which the emptying holds while it bumps the
                // epoch: a key read before a change is never cached after it.
                if let (Ok(key), Ok(mut m)) = (&result, secrets.lock()) {
                    if epochs.load(Ordering::SeqCst) == epoch {
                        m.insert(id.clone(), key.clone());
                    }
                }
                if let Ok(mut l) = lookups.lock() {
                    if l.get(&id).is_some_and(|x| x.epoch == epoch) {
                        l.remove(&id);
                    }
                }
                // No receiver left means every waiter gave up; the cache has the key anyway.
                tx.send_replace(Some(result));
            })
            .map_err(|e| VaultError::Failed {
                detail: format!("cannot start a thread for the keyring read: {e}"),
            })?;
        Ok(Lookup { answer: rx, epoch })
    }
}

fn lookup_lost() -> VaultError {
    VaultError::Failed {
        detail: "the keyring read ended without an answer".into(),
    }
}

/// Seeds the budget counters from the ledger: this month, today, and per-key lifetimes.
fn seed_spend(spend: &SpendBook, store: &KeyStore) -> Result<(), StateError> {
    let now = now_ms();
    let p = crate::limits::calendar::periods(now);
    let conn = store.connection();
    let month = crate::ledger::query::cost_since(conn, p.month_start_ms)
        .map_err(crate::keys::StoreError::from)?;
    let today = crate::ledger::query::cost_since(conn, p.day_start_ms)
        .map_err(crate::keys::StoreError::from)?;
    let budgeted: Vec<(i64, String, i64, bool)> = store
        .live_with_hashes()?
        .into_iter()
        .filter(|(k, _)| k.budget_micros.is_some())
        .map(|(k, _)| (k.id, k.name, k.created_at, k.parent.is_none()))
        .collect();
    let lifetimes = lifetime_spend(conn, &budgeted).map_err(crate::keys::StoreError::from)?;
    spend.seed(now, &month, &today, &lifetimes);
    Ok(())
}

/// What each key of `keys` (id, name, creation time, top-level) has spent since it was issued:
/// rows of an earlier, revoked key of the same name are not its spend. A top-level key's spend
/// includes its child keys' (`exec --as`), whose rows carry its name as `account`. Each key's
/// rows are searched from its creation on through the time index, so a short-lived `exec` key
/// reads only its own minutes of the ledger.
fn lifetime_spend(
    conn: &rusqlite::Connection,
    keys: &[(i64, String, i64, bool)],
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut own = conn.prepare_cached(crate::ledger::query::KEY_SPEND_SINCE_SQL)?;
    let mut with_children = conn.prepare_cached(crate::ledger::query::ACCOUNT_SPEND_SINCE_SQL)?;
    keys.iter()
        .map(|(id, name, since, top_level)| {
            let stmt = if *top_level {
                &mut with_children
            } else {
                &mut own
            };
            let spent = stmt.query_row(rusqlite::params![name, since], |r| r.get(0))?;
            Ok((*id, spent))
        })
        .collect()
}

/// Reads the admin token from the keyring, creating it on first use.
pub fn admin_token_get_or_create(vault: &Vault) -> Result<SecretString, VaultError> {
    match vault.get(ADMIN_TOKEN_ENTRY) {
        Ok(t) => Ok(t),
        Err(VaultError::NotSet { .. }) => {
            let token = crate::keys::token::generate_with_prefix("adm_");
            vault.set(
                ADMIN_TOKEN_ENTRY,
                secrecy::ExposeSecret::expose_secret(&token),
            )?;
            Ok(token)
        }
        Err(e) => Err(e),
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
    #[error("price table: {0}")]
    Prices(String),
    #[error("detection rules: {0}")]
    Rules(String),
}
