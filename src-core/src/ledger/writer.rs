//! The ledger's single writer: a thread that owns its own connection and writes what the request
//! path sends it through a bounded channel, in batches of one transaction each.
//!
//! The request path never waits on SQLite: a full channel drops the row and counts it (visible in
//! metrics and the log) rather than slowing a request. A crash loses at most the rows still in the
//! channel; every committed row is intact (WAL).

use super::{db, EventRecord, Record};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHANNEL_CAPACITY: usize = 65_536;
const MAX_BATCH: usize = 1_024;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Resolves once a row is committed (or the writer gave up on it).
pub type Committed = tokio::sync::oneshot::Receiver<()>;

enum Msg {
    Request(Box<Record>, Option<tokio::sync::oneshot::Sender<()>>),
    Event(EventRecord),
    /// Answered once everything sent before it is committed.
    Flush(SyncSender<()>),
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
}

#[derive(Clone)]
pub struct LedgerWriter {
    tx: SyncSender<Msg>,
    pub stats: Arc<WriterStats>,
}

impl LedgerWriter {
    /// Opens the database and starts the writer thread. `retention` prunes older rows.
    pub fn spawn(
        data_dir: &Path,
        retention: Option<Duration>,
    ) -> Result<(LedgerWriter, JoinHandle<()>), db::DbError> {
        let conn = db::open(data_dir)?;
        // Checkpoints copy the WAL into the database file and fsync it. Done by the writer they
        // would stall the commits responses wait for, so a separate connection does them.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|error| db::DbError::Open {
                path: data_dir.join(db::DB_FILE),
                error,
            })?;
        spawn_checkpointer(data_dir)?;
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let handle = std::thread::Builder::new()
            .name("airlock-ledger".into())
            .spawn(move || run(conn, rx, st, retention))
            .map_err(|e| db::DbError::Dir {
                path: data_dir.to_owned(),
                error: e,
            })?;
        Ok((LedgerWriter { tx, stats }, handle))
    }

    /// Queues a request row. Never blocks.
    pub fn record(&self, r: Record) {
        self.send(Msg::Request(Box::new(r), None));
    }

    /// Queues a request row and returns a signal that resolves when it is committed, so the
    /// response can be finished only after its row is safe. Never blocks.
    pub fn record_acked(&self, r: Record) -> Committed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Request(Box::new(r), Some(tx)));
        rx
    }

    pub fn event(&self, e: EventRecord) {
        self.send(Msg::Event(e));
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped = n,
                        "ledger writer is behind; dropping rows rather than slowing requests"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("ledger writer has stopped; a row was not recorded");
            }
        }
    }

    /// Waits until everything queued so far is committed (used at shutdown and by tests).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

/// Every second, a passive checkpoint from its own connection: it never blocks the writer, and
/// keeps the WAL from growing. It stops when the process does.
fn spawn_checkpointer(data_dir: &Path) -> Result<(), db::DbError> {
    let conn = db::open(data_dir)?;
    std::thread::Builder::new()
        .name("airlock-checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!("ledger checkpoint: {e}");
            }
        })
        .map_err(|e| db::DbError::Dir {
            path: data_dir.to_owned(),
            error: e,
        })?;
    Ok(())
}

fn run(
    mut conn: Connection,
    rx: Receiver<Msg>,
    stats: Arc<WriterStats>,
    retention: Option<Duration>,
) {
    // Prune once at start: `None` means "never pruned".
    let mut last_prune = Instant::now()
        .checked_sub(PRUNE_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                maybe_prune(&conn, retention, &mut last_prune);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut acks = Vec::new();
        match write_batch(&mut conn, batch, &mut flushes, &mut acks) {
            Ok(n) => {
                stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!("ledger write failed: {e}");
            }
        }
        // Senders dropped with a failed batch also wake their waiters: nothing waits forever.
        for a in acks {
            if a.send(()).is_err() {
                tracing::trace!("request finished before its row was committed");
            }
        }
        for f in flushes {
            // The flusher may have given up waiting; nothing to do then.
            if f.send(()).is_err() {
                tracing::debug!("ledger flush waiter went away");
            }
        }
        maybe_prune(&conn, retention, &mut last_prune);
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: Vec<Msg>,
    flushes: &mut Vec<SyncSender<()>>,
    acks: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut req = tx.prepare_cached(
            "INSERT OR REPLACE INTO requests (id, ts, account, key_name, provider, method, endpoint, model, streamed,
               status, verdict, reason, error_source, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
               reasoning_tokens, cost_micros, estimated, body_end, response_bytes, total_ms, upstream_ms, overhead_ms, prompt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22,
               ?23, ?24, ?25, ?26)",
        )?;
        let mut finding = tx.prepare_cached(
            "INSERT INTO findings (request_id, rule, kind, location, action, value_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (ts, kind, account, detail) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for msg in batch {
            match msg {
                Msg::Request(r, ack) => {
                    acks.extend(ack);
                    let t = &r.tokens;
                    req.execute(params![
                        r.id,
                        r.ts,
                        r.account,
                        r.key_name,
                        r.provider,
                        r.method,
                        r.endpoint,
                        r.model,
                        r.streamed,
                        r.status,
                        r.verdict.as_str(),
                        r.reason,
                        r.error_source,
                        t.input as i64,
                        t.output as i64,
                        t.cached as i64,
                        t.cache_write as i64,
                        t.reasoning as i64,
                        r.cost_micros,
                        r.estimated,
                        r.body_end,
                        r.response_bytes as i64,
                        r.total_ms,
                        r.upstream_ms,
                        r.overhead_ms,
                        r.prompt,
                    ])?;
                    for f in &r.findings {
                        finding.execute(params![
                            r.id,
                            f.rule,
                            f.kind,
                            f.location,
                            f.action,
                            f.value_hash
                        ])?;
                    }
                    n += 1;
                }
                Msg::Event(e) => {
                    event.execute(params![e.ts, e.kind, e.account, e.detail.to_string()])?;
                }
                Msg::Flush(done) => flushes.push(done),
            }
        }
    }
    tx.commit()?;
    Ok(n)
}

fn maybe_prune(conn: &Connection, retention: Option<Duration>, last: &mut Instant) {
    let Some(keep) = retention else { return };
    if last.elapsed() < PRUNE_EVERY {
        return;
    }
    *last = Instant::now();
    let cutoff = crate::keys::store::now_ms() - keep.as_millis() as i64;
    match conn.execute("DELETE FROM requests WHERE ts < ?1", [cutoff]) {
        Ok(n) if n > 0 => tracing::info!(rows = n, "ledger retention: pruned old requests"),
        Ok(_) => {}
        Err(e) => tracing::warn!("ledger retention prune failed: {e}"),
    }
    if let Err(e) = conn.execute("DELETE FROM events WHERE ts < ?1", [cutoff]) {
        tracing::warn!("ledger retention prune of events failed: {e}");
    }
}
