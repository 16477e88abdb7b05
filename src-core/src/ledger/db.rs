//! Opening the database and running migrations.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DB_FILE: &str = "airlock.db";

/// Ordered migrations; `PRAGMA user_version` records how many have run. Never edit one that has
/// shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: issued Airlock keys (hash only) and change counters the server polls.
    "CREATE TABLE airlock_keys (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        hash        BLOB NOT NULL UNIQUE,
        hint        TEXT NOT NULL,
        providers   TEXT NOT NULL DEFAULT '[]',
        models      TEXT NOT NULL DEFAULT '[]',
        parent_id   INTEGER REFERENCES airlock_keys(id),
        ephemeral   INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        revoked_at  INTEGER
    );
    CREATE UNIQUE INDEX airlock_keys_live_name ON airlock_keys(name) WHERE revoked_at IS NULL;
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('keys_generation', 0), ('secrets_generation', 0);",
    // 2: the audit ledger (one row per request, findings, events), key limits and pause state.
    "CREATE TABLE requests (
        id              TEXT PRIMARY KEY,
        ts              INTEGER NOT NULL,
        account         TEXT,
        key_name        TEXT,
        provider        TEXT,
        method          TEXT NOT NULL,
        endpoint        TEXT NOT NULL,
        model           TEXT,
        streamed        INTEGER NOT NULL,
        status          INTEGER NOT NULL,
        verdict         TEXT NOT NULL,
        reason          TEXT,
        error_source    TEXT,
        input_tokens    INTEGER NOT NULL DEFAULT 0,
        output_tokens   INTEGER NOT NULL DEFAULT 0,
        cached_tokens   INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_micros     INTEGER,
        estimated       INTEGER NOT NULL DEFAULT 0,
        body_end        TEXT,
        response_bytes  INTEGER NOT NULL DEFAULT 0,
        total_ms        REAL NOT NULL,
        upstream_ms     REAL,
        overhead_ms     REAL NOT NULL,
        prompt          TEXT
    );
    CREATE INDEX requests_ts ON requests(ts);
    CREATE INDEX requests_account_ts ON requests(account, ts);
    CREATE TABLE findings (
        request_id  TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        rule        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        location    TEXT NOT NULL,
        action      TEXT NOT NULL,
        value_hash  TEXT NOT NULL
    );
    CREATE INDEX findings_request ON findings(request_id);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        ts      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        account TEXT,
        detail  TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events(ts);
    ALTER TABLE airlock_keys ADD COLUMN paused_at INTEGER;
    ALTER TABLE airlock_keys ADD COLUMN paused_reason TEXT;
    ALTER TABLE airlock_keys ADD COLUMN budget_micros INTEGER;
    ALTER TABLE airlock_keys ADD COLUMN rpm INTEGER;
    INSERT INTO meta VALUES ('paused', 0), ('control_generation', 0);",
    // 3: a project's airlock.toml policy, carried by the key `airlock exec` issues in it.
    "ALTER TABLE airlock_keys ADD COLUMN policy TEXT;",
    // 4: no query used the (account, ts) index to search (`--key` matches account or key name),
    // yet every row paid for it, and without statistics SQLite chose it for the start-up spend
    // query, reading the whole index instead of this month's rows by `requests_ts`.
    "DROP INDEX IF EXISTS requests_account_ts;",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("cannot create data dir {path}: {error}")]
    Dir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open database {path}: {error}")]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("database {path} is from a newer Airlock (schema {found}, this build knows {known}); upgrade airlock")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("migration {version} of {path} failed: {error}")]
    Migrate {
        path: PathBuf,
        version: usize,
        error: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Opens (creating if needed) the database in `dir`, in WAL mode, migrated to the latest schema.
pub fn open(dir: &Path) -> Result<Connection, DbError> {
    std::fs::create_dir_all(dir).map_err(|error| DbError::Dir {
        path: dir.to_owned(),
        error,
    })?;
    restrict_permissions(dir);
    let path = dir.join(DB_FILE);
    create_private(&path);
    let open_err = |error| DbError::Open {
        path: path.clone(),
        error,
    };
    let mut conn = Connection::open(&path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    // Switching a new database to WAL needs a moment alone with it, and SQLite answers "busy"
    // at once (no busy wait) while another process is creating it too: retry for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(open_err(e)),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    migrate(&mut conn, &path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        // One IMMEDIATE transaction per migration, with the version read inside it: a crash
        // never leaves half a schema behind, and two processes opening a new database at once
        // (`airlock serve` and `airlock keys set`, say) apply each migration exactly once.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(DbError::Sql)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > known {
            return Err(DbError::TooNew {
                path: path.to_owned(),
                found,
                known,
            });
        }
        if found == known {
            tx.commit()?;
            return Ok(());
        }
        let version = found as usize + 1;
        let fail = |error| DbError::Migrate {
            path: path.to_owned(),
            version,
            error,
        };
        tx.execute_batch(MIGRATIONS[found as usize]).map_err(fail)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict data dir permissions");
    }
}

/// Creates the database file readable by its owner only, before SQLite does (its `-wal` and
/// `-shm` files then get the same mode).
#[cfg(unix)]
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot pre-create the database file")
        }
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) {}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) {}

/// Bumps a change counter so a running server notices a change made by another process.
pub fn bump(conn: &Connection, counter: &str) -> Result<(), rusqlite::Error> {
    conn.execute(
        "UPDATE meta SET value = value + 1 WHERE name = ?1",
        [counter],
    )?;
    Ok(())
}

pub fn generation(conn: &Connection, counter: &str) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [counter], |r| {
        r.get(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_new_database_at_once_migrate_it_once() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (dir.path().to_owned(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread").expect("every opener succeeds");
            }
            let conn = open(dir.path()).expect("open");
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .expect("version");
            assert_eq!(v, MIGRATIONS.len() as i64);
        }
    }

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(dir.path()).expect("open");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
                let m = std::fs::metadata(dir.path().join(&f))
                    .expect("file")
                    .permissions()
                    .mode();
                assert_eq!(m & 0o777, 0o600, "{f} is readable by others");
            }
        }
        bump(&conn, "keys_generation").expect("bump");
        drop(conn);
        let conn = open(dir.path()).expect("reopen");
        assert_eq!(generation(&conn, "keys_generation").expect("gen"), 1);
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let zeros = rusqlite::params_from_iter(vec![0; stmt.parameter_count()]);
        let rows = stmt
            .query_map(zeros, |r| r.get::<_, String>(3))
            .expect("plan");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_start_up_spend_query_searches_by_time_after_the_index_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(dir.path()).expect("open");
        // A database from before migration 4, with the index still there.
        conn.execute_batch(
            "CREATE INDEX requests_account_ts ON requests(account, ts); PRAGMA user_version = 3;",
        )
        .expect("downgrade");
        drop(conn);
        let conn = open(dir.path()).expect("reopen");
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'requests_account_ts'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(indexes, 0);
        let p = plan(&conn, crate::ledger::query::COST_SINCE_SQL);
        assert!(p.contains("USING INDEX requests_ts (ts>?)"), "{p}");
        // A budgeted key's lifetime spend at start: its rows from its creation on, not a scan.
        let p = plan(&conn, crate::ledger::query::KEY_SPEND_SINCE_SQL);
        assert!(p.contains("USING INDEX requests_ts (ts>?)"), "{p}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(dir.path()).expect("open");
        conn.pragma_update(None, "user_version", 999).expect("set");
        drop(conn);
        let err = open(dir.path()).expect_err("too new");
        assert!(err.to_string().contains("newer Airlock"), "{err}");
    }
}
