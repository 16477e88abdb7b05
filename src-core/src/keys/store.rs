//! Issued Airlock keys in SQLite. Only the SHA-256 of a key is stored.

use super::token;
use crate::ledger::db;
use rusqlite::{params, Connection, OptionalExtension, Row};
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a live key named {0:?} already exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("no live key named {0:?} (see `airlock keys issued`)")]
    NotFound(String),
    #[error("key name {0:?} is invalid: use 1-64 letters, digits, '.', '_', ':' or '-'")]
    InvalidName(String),
    #[error("{0}")]
    Invalid(String),
}

/// What to issue.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    pub name: String,
    /// Providers the key may use; empty means all.
    pub providers: Vec<String>,
    /// Model globs the key may use; empty means all.
    pub models: Vec<String>,
    pub expires_in: Option<Duration>,
    /// A child key takes its scope from, and is attributed to, this live key.
    pub parent: Option<String>,
    /// Short-lived keys made for one command (`airlock exec`).
    pub ephemeral: bool,
    /// A lifetime budget for this key alone, in micro-dollars (`airlock exec --budget`).
    pub budget_micros: Option<i64>,
    /// Requests per minute for this key alone (`airlock exec --rpm`).
    pub rpm: Option<u32>,
    /// A project's `[policy]` (JSON), which can only tighten the configured policy.
    pub policy: Option<String>,
}

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedKey {
    pub id: i64,
    pub name: String,
    pub hint: String,
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub parent: Option<String>,
    pub ephemeral: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub paused_at: Option<i64>,
    pub paused_reason: Option<String>,
    pub budget_micros: Option<i64>,
    pub rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl IssuedKey {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_ms)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct KeyStore {
    conn: Connection,
}

const SELECT: &str =
    "SELECT k.id, k.name, k.hint, k.providers, k.models, p.name, k.ephemeral, k.created_at, \
     k.expires_at, k.revoked_at, k.hash, k.paused_at, k.paused_reason, k.budget_micros, k.rpm, k.policy \
     FROM airlock_keys k LEFT JOIN airlock_keys p ON p.id = k.parent_id";

impl KeyStore {
    pub fn open(data_dir: &std::path::Path) -> Result<KeyStore, StoreError> {
        Ok(KeyStore {
            conn: db::open(data_dir)?,
        })
    }

    pub fn from_connection(conn: Connection) -> KeyStore {
        KeyStore { conn }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Issues a key and returns it: the only time the key exists outside the client.
    pub fn issue(&mut self, req: &IssueRequest) -> Result<(IssuedKey, SecretString), StoreError> {
        validate_name(&req.name)?;
        for m in &req.models {
            globset::Glob::new(m)
                .map_err(|e| StoreError::Invalid(format!("model pattern {m:?}: {e}")))?;
        }
        // IMMEDIATE: take the write lock up front. A deferred transaction that reads and
        // then writes fails at once (no busy wait) if the ledger committed in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let parent_id: Option<i64> = match &req.parent {
            Some(parent) => Some(
                tx.query_row(
                    "SELECT id FROM airlock_keys WHERE name = ?1 AND revoked_at IS NULL",
                    [parent],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(parent.clone()))?,
            ),
            None => None,
        };
        let taken: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM airlock_keys WHERE name = ?1 AND revoked_at IS NULL)",
            [&req.name],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::NameTaken(req.name.clone()));
        }
        let key = token::generate();
        let now = now_ms();
        let expires_at = req
            .expires_in
            .map(|d| now.saturating_add(d.as_millis() as i64));
        let providers = serde_json::to_string(&req.providers).unwrap_or_else(|_| "[]".into());
        let models = serde_json::to_string(&req.models).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO airlock_keys (name, hash, hint, providers, models, parent_id, ephemeral, created_at, expires_at,
               budget_micros, rpm, policy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                req.name,
                token::hash(key.expose_secret()).as_slice(),
                token::hint(key.expose_secret()),
                providers,
                models,
                parent_id,
                req.ephemeral,
                now,
                expires_at,
                req.budget_micros,
                req.rpm,
                req.policy
            ],
        )?;
        db::bump(&tx, "keys_generation")?;
        tx.commit()?;
        let issued = self
            .get(&req.name)?
            .ok_or_else(|| StoreError::NotFound(req.name.clone()))?;
        Ok((issued, key))
    }

    /// Revokes a live key and every child key made from it. Returns how many were revoked.
    pub fn revoke(&mut self, name: &str) -> Result<usize, StoreError> {
        // IMMEDIATE: take the write lock up front. A deferred transaction that reads and
        // then writes fails at once (no busy wait) if the ledger committed in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let id: i64 = tx
            .query_row(
                "SELECT id FROM airlock_keys WHERE name = ?1 AND revoked_at IS NULL",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let n = tx.execute(
            "UPDATE airlock_keys SET revoked_at = ?1 WHERE (id = ?2 OR parent_id = ?2) AND revoked_at IS NULL",
            params![now, id],
        )?;
        db::bump(&tx, "keys_generation")?;
        tx.commit()?;
        Ok(n)
    }

    /// Pauses a live key (and so its children) until [`KeyStore::resume`]. Returns false if it
    /// was already paused.
    pub fn pause(&mut self, name: &str, reason: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE airlock_keys SET paused_at = ?1, paused_reason = ?2 WHERE name = ?3 AND revoked_at IS NULL AND paused_at IS NULL",
            params![now_ms(), reason, name],
        )?;
        if n == 0 && self.get(name)?.is_none() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        db::bump(&self.conn, "keys_generation")?;
        Ok(n > 0)
    }

    /// Returns false if the key was not paused.
    pub fn resume(&mut self, name: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE airlock_keys SET paused_at = NULL, paused_reason = NULL WHERE name = ?1 AND revoked_at IS NULL AND paused_at IS NOT NULL",
            [name],
        )?;
        if n == 0 && self.get(name)?.is_none() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        db::bump(&self.conn, "keys_generation")?;
        Ok(n > 0)
    }

    /// The global pause switch, shared by the CLI, the admin API and the tray.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'paused'",
            [paused as i64],
        )?;
        db::bump(&self.conn, "control_generation")?;
        Ok(())
    }

    pub fn is_paused(&self) -> Result<bool, StoreError> {
        Ok(db::generation(&self.conn, "paused")? != 0)
    }

    pub fn control_generation(&self) -> Result<i64, StoreError> {
        Ok(db::generation(&self.conn, "control_generation")?)
    }

    pub fn get(&self, name: &str) -> Result<Option<IssuedKey>, StoreError> {
        let sql = format!("{SELECT} WHERE k.name = ?1 AND k.revoked_at IS NULL");
        Ok(self
            .conn
            .query_row(&sql, [name], |r| row_to_key(r).map(|(k, _)| k))
            .optional()?)
    }

    /// Keys for display. Ephemeral keys that are done (revoked or expired) are left out unless
    /// `all` is set, so `airlock exec` runs do not flood the list.
    pub fn list(&self, all: bool) -> Result<Vec<IssuedKey>, StoreError> {
        let sql = format!("{SELECT} ORDER BY k.created_at, k.id");
        let mut stmt = self.conn.prepare(&sql)?;
        let now = now_ms();
        let rows = stmt.query_map([], |r| row_to_key(r).map(|(k, _)| k))?;
        let mut out = Vec::new();
        for row in rows {
            let k = row?;
            let done = k.revoked_at.is_some() || k.is_expired(now);
            if all || !(done && (k.ephemeral || k.revoked_at.is_some())) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Every live (unrevoked) key with its hash, for the server's snapshot.
    pub fn live_with_hashes(&self) -> Result<Vec<(IssuedKey, [u8; 32])>, StoreError> {
        let sql = format!(
            "{SELECT} WHERE k.revoked_at IS NULL AND (k.parent_id IS NULL OR p.revoked_at IS NULL)"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], row_to_key)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The scope (providers, models) a child key inherits from its parent.
    pub fn scope_of(&self, name: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let k = self
            .get(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        Ok((k.providers, k.models))
    }

    pub fn generation(&self) -> Result<i64, StoreError> {
        Ok(db::generation(&self.conn, "keys_generation")?)
    }

    /// Tells a running server that provider keys in the keyring changed.
    pub fn bump_secrets(&self) -> Result<(), StoreError> {
        Ok(db::bump(&self.conn, "secrets_generation")?)
    }

    pub fn secrets_generation(&self) -> Result<i64, StoreError> {
        Ok(db::generation(&self.conn, "secrets_generation")?)
    }
}

fn row_to_key(r: &Row<'_>) -> rusqlite::Result<(IssuedKey, [u8; 32])> {
    let json_list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    let hash: Vec<u8> = r.get(10)?;
    let mut h = [0u8; 32];
    if hash.len() == 32 {
        h.copy_from_slice(&hash);
    }
    Ok((
        IssuedKey {
            id: r.get(0)?,
            name: r.get(1)?,
            hint: r.get(2)?,
            providers: json_list(r.get(3)?),
            models: json_list(r.get(4)?),
            parent: r.get(5)?,
            ephemeral: r.get(6)?,
            created_at: r.get(7)?,
            expires_at: r.get(8)?,
            revoked_at: r.get(9)?,
            paused_at: r.get(11)?,
            paused_reason: r.get(12)?,
            budget_micros: r.get(13)?,
            rpm: r.get(14)?,
            policy: r.get(15)?,
        },
        h,
    ))
}

fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = KeyStore::open(dir.path()).expect("open");
        (dir, s)
    }

    #[test]
    fn issuing_and_revoking_keys_while_the_ledger_commits_never_fails_busy() {
        let (dir, mut s) = store();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, stop) = (dir.path().to_owned(), stop.clone());
            std::thread::spawn(move || {
                let conn = db::open(&path).expect("open");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.execute(
                        "INSERT INTO events (ts, kind, account, detail) VALUES (?1, 'test', NULL, '{}')",
                        [i as i64],
                    )
                    .expect("ledger-like write");
                    i += 1;
                }
            })
        };
        // A parent key makes `issue` read (the parent) before it writes.
        s.issue(&IssueRequest {
            name: "parent".into(),
            ..Default::default()
        })
        .expect("issue parent");
        for i in 0..100 {
            let name = format!("child-{i}");
            s.issue(&IssueRequest {
                name: name.clone(),
                parent: Some("parent".into()),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("issue {name}: {e}"));
            s.revoke(&name)
                .unwrap_or_else(|e| panic!("revoke {name}: {e}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer");
    }

    #[test]
    fn issue_stores_only_a_hash() {
        let (dir, mut s) = store();
        let (k, key) = s
            .issue(&IssueRequest {
                name: "app".into(),
                providers: vec!["openai".into()],
                ..Default::default()
            })
            .expect("issue");
        assert_eq!(k.providers, vec!["openai"]);
        let raw = std::fs::read(dir.path().join(db::DB_FILE)).expect("db");
        let wal = std::fs::read(dir.path().join("airlock.db-wal")).unwrap_or_default();
        let needle = key.expose_secret().as_bytes();
        for bytes in [raw, wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "raw key on disk"
            );
        }
    }

    #[test]
    fn names_are_unique_among_live_keys_only() {
        let (_d, mut s) = store();
        let req = IssueRequest {
            name: "app".into(),
            ..Default::default()
        };
        s.issue(&req).expect("first");
        assert!(matches!(s.issue(&req), Err(StoreError::NameTaken(_))));
        assert_eq!(s.revoke("app").expect("revoke"), 1);
        s.issue(&req).expect("reissue after revoke");
        assert!(matches!(s.revoke("nope"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn revoking_a_parent_revokes_its_children() {
        let (_d, mut s) = store();
        s.issue(&IssueRequest {
            name: "app".into(),
            ..Default::default()
        })
        .expect("parent");
        let (child, _) = s
            .issue(&IssueRequest {
                name: "exec-1".into(),
                parent: Some("app".into()),
                ephemeral: true,
                ..Default::default()
            })
            .expect("child");
        assert_eq!(child.parent.as_deref(), Some("app"));
        assert_eq!(s.live_with_hashes().expect("live").len(), 2);
        assert_eq!(s.revoke("app").expect("revoke"), 2);
        assert!(s.live_with_hashes().expect("live").is_empty());
    }

    #[test]
    fn bad_names_and_globs_are_refused() {
        let (_d, mut s) = store();
        for name in ["", "has space", "x".repeat(65).as_str()] {
            assert!(matches!(
                s.issue(&IssueRequest {
                    name: name.into(),
                    ..Default::default()
                }),
                Err(StoreError::InvalidName(_))
            ));
        }
        let bad = IssueRequest {
            name: "g".into(),
            models: vec!["gpt-[".into()],
            ..Default::default()
        };
        assert!(matches!(s.issue(&bad), Err(StoreError::Invalid(_))));
    }
}
