//! The ledger's single writer: a thread that owns its own connection and commits what the
//! request path hands it, in batches of one transaction each, never on the request path.
//!
//! Request rows reach it through the [spool](super::spool): the request path appends the row to
//! an append-only file with one write (page cache, no fsync, no lock held across I/O), and the
//! response finishes without waiting. The rows are durable there, so the writer commits them
//! when it costs requests nothing: once no row has come for [`Pacing::quiet`], or, under load
//! that never pauses, once the oldest has waited [`Pacing::max_wait`] or the backlog reaches
//! [`Pacing::max_bytes`]. Readers never see the lag: admin reads flush first, and `airlock
//! spend`/`log` commit the spool themselves. A `kill -9` loses nothing the spool holds: the next
//! start commits it before serving.
//! Events, flush requests and rows too large for the spool take a bounded channel; a full
//! channel drops the message and counts it (visible in metrics and the log) rather than slowing
//! a request.

use super::spool::{self, Cursor, Spool};
use super::{db, EventRecord, Record};
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError,
    TrySendError,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHANNEL_CAPACITY: usize = 65_536;
/// At most this many spooled rows per transaction (a backlog after a crash commits in steps).
const MAX_BATCH: usize = 4_096;
/// When the writer commits the spooled rows. Each commit costs CPU (SQLite's inserts, about
/// 3 µs a row here) that a 2-core laptop takes from the requests in flight, and the rows are
/// durable in the spool meanwhile, so commits wait for a quiet spell. Committing every 250 ms
/// while rows kept coming left p99 at 2,000 requests/s 0.03–0.04 ms above the ledger turned
/// off in every round of every run (BENCHMARKS.md); commit cadence, thread priority and time
/// slices moved that gap but never closed it.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    /// No row for this long: the proxy is quiet, commit.
    quiet: Duration,
    /// Under load that never pauses, the oldest row waits at most this long.
    max_wait: Duration,
    /// ... and the backlog grows at most this large (well below the spool's own
    /// back-pressure threshold, where rows start waiting for their commit).
    max_bytes: u64,
}

const PACING: Pacing = Pacing {
    quiet: Duration::from_millis(100),
    max_wait: Duration::from_secs(30),
    max_bytes: 16 << 20,
};

const IDLE: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Resolves once a row is committed (or the writer gave up on it).
pub type Committed = tokio::sync::oneshot::Receiver<()>;

enum Msg {
    /// A row that did not go through the spool; the sender waits for its commit.
    Request(Box<Record>, Option<tokio::sync::oneshot::Sender<()>>),
    Event(Box<EventRecord>),
    /// Answered once everything sent or spooled before it is committed.
    Flush(SyncSender<()>),
    /// The writer was parked and a row was spooled.
    Wake,
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub written: AtomicU64,
    /// Transactions committed (rows come in groups: see [`Pacing`]).
    pub commits: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
}

#[derive(Clone)]
pub struct LedgerWriter {
    /// `None` when the ledger is turned off (`[ledger] enabled = false`).
    inner: Option<Inner>,
    pub stats: Arc<WriterStats>,
}

#[derive(Clone)]
struct Inner {
    tx: Queue,
    spool: Arc<Spool>,
}

/// The writer's inbox, bounded like a `sync_channel` but with storage that grows with use: a
/// `sync_channel` of [`CHANNEL_CAPACITY`] takes its 9 MB up front, for a queue that is nearly
/// always empty now that request rows go through the spool.
#[derive(Clone)]
struct Queue {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
}

struct Inbox {
    rx: Receiver<Msg>,
    queued: Arc<AtomicUsize>,
}

fn queue() -> (Queue, Inbox) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Queue {
            tx,
            queued: queued.clone(),
        },
        Inbox { rx, queued },
    )
}

impl Queue {
    /// Fails with `Full` once [`CHANNEL_CAPACITY`] messages wait (senders racing at the
    /// bound may pass it by one each, which is harmless).
    fn try_send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        if self.queued.load(Ordering::Acquire) >= CHANNEL_CAPACITY {
            return Err(TrySendError::Full(msg));
        }
        self.send(msg).map_err(TrySendError::Disconnected)
    }

    /// Queues past the bound (flush requests, which must not be dropped).
    fn send(&self, msg: Msg) -> Result<(), Msg> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(msg).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }
}

impl Inbox {
    fn took(&self, m: Msg) -> Msg {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        m
    }

    fn try_recv(&self) -> Result<Msg, TryRecvError> {
        self.rx.try_recv().map(|m| self.took(m))
    }

    fn recv_timeout(&self, wait: Duration) -> Result<Msg, RecvTimeoutError> {
        self.rx.recv_timeout(wait).map(|m| self.took(m))
    }
}

impl LedgerWriter {
    /// Opens the database, commits whatever the spool still holds from a previous run (a crash
    /// or `kill -9`), then starts the writer thread. `retention` prunes older rows.
    pub fn spawn(
        data_dir: &Path,
        retention: Option<Duration>,
    ) -> Result<(LedgerWriter, JoinHandle<()>), db::DbError> {
        Self::spawn_paced(data_dir, retention, PACING)
    }

    fn spawn_paced(
        data_dir: &Path,
        retention: Option<Duration>,
        pacing: Pacing,
    ) -> Result<(LedgerWriter, JoinHandle<()>), db::DbError> {
        let open_err = |error| db::DbError::Open {
            path: data_dir.join(db::DB_FILE),
            error,
        };
        let dir_err = |error| db::DbError::Dir {
            path: data_dir.to_owned(),
            error,
        };
        let conn = db::open(data_dir)?;
        // Checkpoints copy the WAL into the database file and fsync it. Done by the writer they
        // would delay commits, so a separate connection does them.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        let stored = stored_cursor(&conn).map_err(open_err)?;
        let (spool, cursor) = Spool::open(data_dir, stored).map_err(dir_err)?;
        let spool = Arc::new(spool);
        let stats = Arc::new(WriterStats::default());
        let mut w = Writer {
            conn,
            spool: spool.clone(),
            cursor,
            buf: Vec::new(),
            stats: stats.clone(),
        };
        let replayed = w.replay().map_err(open_err)?;
        if replayed > 0 {
            tracing::info!(
                rows = replayed,
                "ledger: committed rows spooled before the last exit"
            );
        }
        spawn_checkpointer(data_dir)?;
        let (tx, rx) = queue();
        let handle = std::thread::Builder::new()
            .name("airlock-ledger".into())
            .spawn(move || run(w, rx, retention, pacing))
            .map_err(dir_err)?;
        Ok((
            LedgerWriter {
                inner: Some(Inner { tx, spool }),
                stats,
            },
            handle,
        ))
    }

    /// A ledger that records nothing (`[ledger] enabled = false`): spend is still counted in
    /// memory for budgets, but no row is written.
    pub fn disabled() -> LedgerWriter {
        LedgerWriter {
            inner: None,
            stats: Arc::new(WriterStats::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Makes a request row durable. Usually that is one append to the spool, and `None` is
    /// returned: the row survives a crash from here on, so the response need not wait. A row
    /// the spool cannot take goes through the channel, and the returned signal resolves when it
    /// is committed. Never blocks.
    pub fn record(&self, r: Record) -> Option<Committed> {
        let inner = self.inner.as_ref()?;
        if inner.spool.usable() {
            match encode_row(&r, spool::framed(384)) {
                Ok(entry) if entry.len() - spool::ENTRY_HEAD <= spool::MAX_ENTRY => {
                    match inner.spool.append_framed(entry) {
                        Ok(wake) => {
                            if wake {
                                self.send(inner, Msg::Wake);
                            }
                            return None;
                        }
                        Err(e) => tracing::error!(
                            spool = %inner.spool.path().display(),
                            "cannot append to the ledger spool ({e}); rows now wait for their commit"
                        ),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!("cannot encode a ledger row: {e}"),
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(inner, Msg::Request(Box::new(r), Some(tx)));
        Some(rx)
    }

    pub fn event(&self, e: EventRecord) {
        if let Some(inner) = &self.inner {
            self.send(inner, Msg::Event(Box::new(e)));
        }
    }

    fn send(&self, inner: &Inner, msg: Msg) {
        match inner.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Wake)) => {} // a full channel wakes it anyway
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

    /// Waits until everything queued or spooled so far is committed (used at shutdown, before
    /// admin reads, and by tests).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let (tx, rx) = sync_channel(1);
        if inner.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

/// Commits, from another process, the rows the spool in `data_dir` holds that the database
/// does not have yet, so a reader (`airlock spend`, `airlock log`) sees every request that has
/// finished, whether the server's writer is waiting for a quiet spell ([`Pacing`]), starved
/// of CPU, or gone (a crash before the next start). The server's cursor is left alone: its
/// writer commits the same rows again later, and inserts are idempotent (a row already there
/// is left as it is, with its findings). Returns how many rows it took.
pub fn commit_spooled(data_dir: &Path) -> Result<u64, db::DbError> {
    let db_err = |error| db::DbError::Open {
        path: data_dir.join(db::DB_FILE),
        error,
    };
    let mut conn = db::open(data_dir)?;
    let stored = stored_cursor(&conn).map_err(db_err)?;
    let buf = spool::read_uncommitted(data_dir, stored).map_err(|error| db::DbError::Dir {
        path: data_dir.to_owned(),
        error,
    })?;
    let rows = decode(&buf, usize::MAX).rows;
    if rows.is_empty() {
        return Ok(0);
    }
    write_batch(
        &mut conn,
        rows,
        Vec::new(),
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .map_err(db_err)
}

/// Every second, a passive checkpoint from its own connection: it never blocks the writer, and
/// keeps the WAL from growing. It stops when the process does.
fn spawn_checkpointer(data_dir: &Path) -> Result<(), db::DbError> {
    let conn = db::open(data_dir)?;
    std::thread::Builder::new()
        .name("airlock-checkpoint".into())
        .spawn(move || {
            super::background::lower_current_thread("ledger checkpoint");
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!("ledger checkpoint: {e}");
                }
            }
        })
        .map_err(|e| db::DbError::Dir {
            path: data_dir.to_owned(),
            error: e,
        })?;
    Ok(())
}

/// The spool cursor the database last committed, if it ever did.
fn stored_cursor(conn: &Connection) -> rusqlite::Result<Option<Cursor>> {
    let get = |name: &str| -> rusqlite::Result<Option<i64>> {
        match conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        }) {
            Ok(v) => Ok(Some(v)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    };
    Ok(match (get("spool_generation")?, get("spool_offset")?) {
        (Some(g), Some(o)) => Some(Cursor {
            generation: g as u64,
            offset: o as u64,
        }),
        _ => None,
    })
}

struct Writer {
    conn: Connection,
    spool: Arc<Spool>,
    /// Everything before this point of the spool is committed.
    cursor: Cursor,
    buf: Vec<u8>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Commits everything in the spool (at start, before serving), and starts a fresh spool
    /// generation past anything unreadable a crash left behind.
    fn replay(&mut self) -> rusqlite::Result<u64> {
        let mut total = self.commit_all()?;
        match self.spool.rotate(self.cursor, true) {
            Ok(Some(next)) => self.cursor = next,
            Ok(None) => {}
            Err(e) => tracing::error!("ledger spool: cannot start a new generation: {e}"),
        }
        // The rotation keeps whole entries that sat behind a torn one: commit them too, so the
        // spend seeded from the database at start counts them.
        total += self.commit_all()?;
        self.spool.reset_backlog();
        Ok(total)
    }

    /// Commits everything the spool holds past the cursor, in as many transactions as it takes.
    fn commit_all(&mut self) -> rusqlite::Result<u64> {
        let mut total = 0;
        loop {
            let n = self.commit(Vec::new(), &mut Vec::new(), &mut Vec::new())?;
            total += n.rows;
            if !n.more {
                return Ok(total);
            }
        }
    }

    /// One transaction: the spooled rows from the cursor on (at most [`MAX_BATCH`]), plus
    /// `msgs`, plus the new cursor. Acks and flushes are collected for after the commit.
    fn commit(
        &mut self,
        msgs: Vec<Msg>,
        flushes: &mut Vec<SyncSender<()>>,
        acks: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> rusqlite::Result<Batch> {
        if let Err(e) = self.spool.read_from(self.cursor.offset, &mut self.buf) {
            tracing::error!("cannot read the ledger spool: {e}");
            self.buf.clear();
        }
        let Decoded { rows, end, bad } = decode(&self.buf, MAX_BATCH);
        let more = rows.len() == MAX_BATCH;
        let spooled = rows.len() as u64;
        if rows.is_empty() && end == 0 && msgs.is_empty() {
            return Ok(Batch {
                rows: 0,
                more: false,
            });
        }
        let cursor = Cursor {
            generation: self.cursor.generation,
            offset: self.cursor.offset + end as u64,
        };
        let n = write_batch(&mut self.conn, rows, msgs, Some(cursor), flushes, acks)?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.cursor = cursor;
        self.spool.consumed(end as u64);
        self.stats.written.fetch_add(n, Ordering::Relaxed);
        self.stats.dropped.fetch_add(bad, Ordering::Relaxed);
        Ok(Batch {
            rows: spooled + bad,
            more,
        })
    }
}

/// The first byte of a spooled row in the current encoding: the row in postcard's binary wire
/// format follows. Rows were spooled as JSON before (a payload starting with `{`); those are
/// still read, so what an older Airlock left in its spool is committed after an upgrade.
///
/// Postcard is positional: a change to [`Record`]'s fields (or to the order of the verdicts)
/// changes what these bytes mean. Such a change takes a new format byte, and the old one keeps a
/// decoder for as long as a spool written by the previous release may still hold rows. Two tests
/// pin the encoding and fail on any such change, as the reminder. An older release cannot read
/// these rows; migration 4 makes it refuse the database ("newer Airlock") rather than skip them.
/// Decoding cost is why: JSON decoding was about 30% of the writer's CPU time per row, the
/// largest single share after SQLite itself (BENCHMARKS.md, ledger).
const ROW_POSTCARD: u8 = 1;

/// Appends `r`'s spool encoding to `entry` (a [`spool::framed`] buffer).
fn encode_row(r: &Record, mut entry: Vec<u8>) -> postcard::Result<Vec<u8>> {
    entry.push(ROW_POSTCARD);
    postcard::to_extend(r, entry)
}

/// A request row as the writer inserts it, borrowed: a postcard row is decoded in place, its
/// text pointing into the spool buffer (no allocation per field, which the owned [`Record`]
/// cost the writer for each of its strings), and a [`Record`] is only looked at. The fields
/// are [`Record`]'s, in its order: postcard is positional (a test decodes every encoded
/// [`Record`] as this and compares).
#[derive(Debug, PartialEq, serde::Deserialize)]
struct RowRef<'a> {
    id: &'a str,
    ts: i64,
    #[serde(borrow)]
    account: Option<&'a str>,
    #[serde(borrow)]
    key_name: Option<&'a str>,
    #[serde(borrow)]
    provider: Option<&'a str>,
    method: &'a str,
    endpoint: &'a str,
    #[serde(borrow)]
    model: Option<&'a str>,
    streamed: bool,
    status: u16,
    verdict: super::Verdict,
    #[serde(borrow)]
    reason: Option<&'a str>,
    #[serde(borrow)]
    error_source: Option<&'a str>,
    tokens: super::Tokens,
    cost_micros: Option<i64>,
    estimated: bool,
    #[serde(borrow)]
    body_end: Option<&'a str>,
    response_bytes: u64,
    total_ms: f64,
    upstream_ms: Option<f64>,
    overhead_ms: f64,
    #[serde(borrow)]
    prompt: Option<&'a str>,
    #[serde(borrow)]
    findings: Vec<FindingRef<'a>>,
}

/// A [`super::FindingRecord`], borrowed.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct FindingRef<'a> {
    rule: &'a str,
    kind: &'a str,
    location: &'a str,
    action: &'a str,
    value_hash: &'a str,
}

impl<'a> From<&'a Record> for RowRef<'a> {
    fn from(r: &'a Record) -> Self {
        RowRef {
            id: &r.id,
            ts: r.ts,
            account: r.account.as_deref(),
            key_name: r.key_name.as_deref(),
            provider: r.provider.as_deref(),
            method: &r.method,
            endpoint: &r.endpoint,
            model: r.model.as_deref(),
            streamed: r.streamed,
            status: r.status,
            verdict: r.verdict,
            reason: r.reason.as_deref(),
            error_source: r.error_source.as_deref(),
            tokens: r.tokens,
            cost_micros: r.cost_micros,
            estimated: r.estimated,
            body_end: r.body_end.as_deref(),
            response_bytes: r.response_bytes,
            total_ms: r.total_ms,
            upstream_ms: r.upstream_ms,
            overhead_ms: r.overhead_ms,
            prompt: r.prompt.as_deref(),
            findings: (r.findings.iter())
                .map(|f| FindingRef {
                    rule: &f.rule,
                    kind: &f.kind,
                    location: &f.location,
                    action: &f.action,
                    value_hash: &f.value_hash,
                })
                .collect(),
        }
    }
}

/// A spooled row, decoded.
// JSON rows are the rare case (what an older release left in its spool); boxing the common one
// would cost an allocation per row, which decoding in place exists to avoid.
#[allow(clippy::large_enum_variant)]
enum Row<'a> {
    /// The current encoding, in place.
    Spooled(RowRef<'a>),
    /// A JSON row, spooled by an older release.
    Json(Box<Record>),
}

/// One spooled row, in either encoding. A postcard row must use every byte of its entry.
fn decode_row(payload: &[u8]) -> Result<Row<'_>, String> {
    match payload.split_first() {
        Some((&ROW_POSTCARD, rest)) => match postcard::take_from_bytes::<RowRef>(rest) {
            Ok((r, [])) => Ok(Row::Spooled(r)),
            Ok((_, extra)) => Err(format!("{} bytes past the end of the row", extra.len())),
            Err(e) => Err(e.to_string()),
        },
        Some((b'{', _)) => serde_json::from_slice(payload)
            .map(|r| Row::Json(Box::new(r)))
            .map_err(|e| e.to_string()),
        Some((b, _)) => Err(format!("unknown row format {b:#04x}")),
        None => Err("empty entry".into()),
    }
}

/// Spooled rows decoded from the start of a buffer read from the spool.
struct Decoded<'a> {
    /// At most the `max` asked for.
    rows: Vec<Row<'a>>,
    /// Where the last entry taken ends in the buffer.
    end: usize,
    /// Entries that did not decode (skipped, logged).
    bad: u64,
}

fn decode(buf: &[u8], max: usize) -> Decoded<'_> {
    let mut d = Decoded {
        rows: Vec::new(),
        end: 0,
        bad: 0,
    };
    for (payload, next) in spool::entries(buf) {
        if d.rows.len() == max {
            break;
        }
        d.end = next;
        match decode_row(payload) {
            Ok(r) => d.rows.push(r),
            Err(e) => {
                d.bad += 1;
                tracing::error!("ledger spool: skipping an unreadable row: {e}");
            }
        }
    }
    d
}

struct Batch {
    /// Spool entries consumed.
    rows: u64,
    /// The batch was full: more may be waiting.
    more: bool,
}

fn run(mut w: Writer, rx: Inbox, retention: Option<Duration>, pacing: Pacing) {
    super::background::lower_current_thread("ledger writer");
    // Prune once at start: `None` means "never pruned".
    let mut last_prune = Instant::now()
        .checked_sub(PRUNE_EVERY)
        .unwrap_or_else(Instant::now);
    let mut first: Option<Msg> = None;
    // Since when spooled rows have been waiting for a commit (`None`: none are).
    let mut waiting_since: Option<Instant> = None;
    // The spool's append count at the last look: a change means rows are still coming.
    let mut seen = w.spool.appended();
    loop {
        let mut msgs: Vec<Msg> = first.take().into_iter().collect();
        let mut disconnected = false;
        while msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        msgs.retain(|m| !matches!(m, Msg::Wake));
        let appended = w.spool.appended();
        let arriving = appended != seen;
        seen = appended;
        let backlog = w.spool.pending();
        let since = *waiting_since.get_or_insert_with(Instant::now);
        // A flush, an event or a row whose request waits for it is committed at once, with
        // everything spooled before it; so is a backlog past its bounds.
        let urgent = !msgs.is_empty() || disconnected;
        let overdue = since.elapsed() >= pacing.max_wait || backlog >= pacing.max_bytes;
        let due = urgent || overdue || (backlog > 0 && !arriving);
        if due {
            let mut flushes = Vec::new();
            let mut acks = Vec::new();
            let mut yielded = false;
            // Everything spooled so far, in as many transactions as it takes, before any flush
            // waiting on it is answered.
            let mut msgs = Some(msgs);
            loop {
                match w.commit(msgs.take().unwrap_or_default(), &mut flushes, &mut acks) {
                    Ok(b) if b.more => {
                        // A quiet-spell commit of a long backlog stops between transactions
                        // when requests come back.
                        if !urgent && !overdue && w.spool.appended() != seen {
                            yielded = true;
                            break;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        w.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("ledger write failed: {e}");
                    }
                }
                break;
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
            match w.spool.rotate(w.cursor, false) {
                Ok(Some(next)) => w.cursor = next,
                Ok(None) => {}
                Err(e) => tracing::error!("ledger spool: cannot start a new generation: {e}"),
            }
            // Rows that came during the commit have waited since it began at most; a backlog
            // left by a yield keeps its age.
            if !yielded {
                waiting_since = None;
            }
        }
        if due || backlog == 0 {
            maybe_prune(&w.conn, retention, &mut last_prune);
        }
        if disconnected {
            return;
        }
        let wait = if w.spool.pending() > 0 {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            pacing
                .quiet
                .min(pacing.max_wait.saturating_sub(since.elapsed()))
        } else {
            waiting_since = None;
            // Nothing waits: sleep until an append wakes us. Park first, then look once more,
            // so a row spooled in between is not left waiting.
            w.spool.park();
            if w.has_backlog() {
                w.spool.unpark();
                continue;
            }
            IDLE
        };
        match rx.recv_timeout(wait) {
            Ok(m) => first = Some(m),
            Err(RecvTimeoutError::Timeout) => {}
            // Commit what is left, then stop (next round sees the disconnect).
            Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

impl Writer {
    /// The spool holds bytes past the cursor (complete entries, or one still being written).
    fn has_backlog(&self) -> bool {
        std::fs::metadata(self.spool.path()).is_ok_and(|m| m.len() > self.cursor.offset)
    }
}

fn write_batch(
    conn: &mut Connection,
    rows: Vec<Row<'_>>,
    batch: Vec<Msg>,
    cursor: Option<Cursor>,
    flushes: &mut Vec<SyncSender<()>>,
    acks: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0;
    {
        let mut req = tx.prepare_cached(
            "INSERT INTO requests (id, ts, account, key_name, provider, method, endpoint, model, streamed,
               status, verdict, reason, error_source, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
               reasoning_tokens, cost_micros, estimated, body_end, response_bytes, total_ms, upstream_ms, overhead_ms, prompt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22,
               ?23, ?24, ?25, ?26)
             ON CONFLICT (id) DO NOTHING",
        )?;
        let mut finding = tx.prepare_cached(
            "INSERT INTO findings (request_id, rule, kind, location, action, value_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (ts, kind, account, detail) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut insert = |r: &RowRef| -> rusqlite::Result<()> {
            let t = &r.tokens;
            // A row committed twice (replayed after a crash between commit and cursor, or by a
            // reader's `commit_spooled` before the writer got to it) is the same spool entry
            // both times: the second insert is skipped, and so are its findings. Other broken
            // constraints still fail the batch. No row is deleted, so SQLite needs no statement
            // journal, which `OR REPLACE` (delete, cascade, insert) did.
            let inserted = req.execute(params![
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
            if inserted == 0 {
                return Ok(());
            }
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
            Ok(())
        };
        for r in &rows {
            match r {
                Row::Spooled(r) => insert(r)?,
                Row::Json(r) => insert(&RowRef::from(&**r))?,
            }
            n += 1;
        }
        for msg in batch {
            match msg {
                Msg::Request(r, ack) => {
                    acks.extend(ack);
                    insert(&RowRef::from(&*r))?;
                    n += 1;
                }
                Msg::Event(e) => {
                    event.execute(params![e.ts, e.kind, e.account, e.detail.to_string()])?;
                }
                Msg::Flush(done) => flushes.push(done),
                Msg::Wake => {}
            }
        }
        if let Some(cursor) = cursor {
            let mut meta =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)")?;
            meta.execute(params!["spool_generation", cursor.generation as i64])?;
            meta.execute(params!["spool_offset", cursor.offset as i64])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{FindingRecord, Tokens, Verdict};

    /// Appends `n` rows one every 2 ms and returns how many were committed when the last
    /// was appended.
    fn trickle(w: &LedgerWriter, dir: &Path, n: u32) -> i64 {
        for i in 0..n {
            assert!(w.record(row(i, 0)).is_none());
            std::thread::sleep(Duration::from_millis(2));
        }
        count(dir, "requests")
    }

    fn wait_for_rows(dir: &Path, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(dir, "requests") < n {
            assert!(Instant::now() < deadline, "rows were left uncommitted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn rows_arriving_steadily_wait_for_a_quiet_spell_then_commit_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pacing = Pacing {
            quiet: Duration::from_secs(1),
            ..PACING
        };
        let (w, _t) = LedgerWriter::spawn_paced(dir.path(), None, pacing).expect("spawn");
        assert!(w.flush(Duration::from_secs(10)));
        let before = w.stats.commits.load(Ordering::Relaxed);
        // 150 rows over about 300 ms, never 1 s apart: nothing is committed while they come.
        assert_eq!(trickle(&w, dir.path(), 150), 0);
        // Then, without a flush, all of them in one transaction.
        wait_for_rows(dir.path(), 150);
        assert_eq!(w.stats.commits.load(Ordering::Relaxed) - before, 1);
    }

    #[test]
    fn under_load_that_never_pauses_the_oldest_row_waits_at_most_max_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pacing = Pacing {
            quiet: Duration::from_secs(5),
            max_wait: Duration::from_millis(100),
            ..PACING
        };
        let (w, _t) = LedgerWriter::spawn_paced(dir.path(), None, pacing).expect("spawn");
        // About 800 ms of rows: the first ones are committed while the rest still come.
        let committed = trickle(&w, dir.path(), 400);
        assert!(committed > 0, "nothing committed under load");
        assert!(w.stats.commits.load(Ordering::Relaxed) >= 2);
        wait_for_rows(dir.path(), 400);
    }

    #[test]
    fn a_backlog_past_max_bytes_is_committed_without_waiting_for_quiet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pacing = Pacing {
            quiet: Duration::from_secs(5),
            max_bytes: 1,
            ..PACING
        };
        let (w, _t) = LedgerWriter::spawn_paced(dir.path(), None, pacing).expect("spawn");
        assert!(trickle(&w, dir.path(), 150) > 0, "nothing committed");
        wait_for_rows(dir.path(), 150);
    }

    #[test]
    fn queue_holds_at_most_its_capacity_and_frees_a_place_per_message_taken() {
        let (q, inbox) = queue();
        for _ in 0..CHANNEL_CAPACITY {
            assert!(q.try_send(Msg::Wake).is_ok());
        }
        assert!(matches!(q.try_send(Msg::Wake), Err(TrySendError::Full(_))));
        // Flush requests are never dropped, even on a full queue.
        let (done, _wait) = sync_channel(1);
        assert!(q.send(Msg::Flush(done)).is_ok());
        assert!(inbox.try_recv().is_ok());
        assert!(matches!(q.try_send(Msg::Wake), Err(TrySendError::Full(_))));
        assert!(inbox.try_recv().is_ok());
        assert!(inbox.try_recv().is_ok());
        assert!(q.try_send(Msg::Wake).is_ok());
        drop(inbox);
        assert!(matches!(
            q.try_send(Msg::Wake),
            Err(TrySendError::Disconnected(_))
        ));
        assert_eq!(q.queued.load(Ordering::Acquire), CHANNEL_CAPACITY - 1);
    }

    fn row(i: u32, findings: usize) -> Record {
        Record {
            id: format!("req_test_{i:06}"),
            ts: 1_790_000_000_000 + i64::from(i),
            account: Some("acct".into()),
            key_name: Some("app".into()),
            provider: Some("openai".into()),
            method: "POST".into(),
            endpoint: "/v1/chat/completions".into(),
            model: Some("gpt-4o-mini".into()),
            streamed: false,
            status: 200,
            verdict: Verdict::Allowed,
            reason: None,
            error_source: None,
            tokens: Tokens {
                input: 10,
                output: 2,
                ..Tokens::default()
            },
            cost_micros: Some(7),
            estimated: false,
            body_end: Some("complete".into()),
            response_bytes: 100,
            total_ms: 1.0,
            upstream_ms: Some(0.5),
            overhead_ms: 0.5,
            prompt: None,
            findings: (0..findings)
                .map(|f| FindingRecord {
                    rule: "email".into(),
                    kind: "pii".into(),
                    location: format!("messages[{f}].content"),
                    action: "redact".into(),
                    value_hash: "00ff".into(),
                })
                .collect(),
        }
    }

    fn count(dir: &Path, table: &str) -> i64 {
        let conn = db::open(dir).expect("open");
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn spooled_rows_need_no_wait_and_are_committed_by_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        for i in 0..50 {
            assert!(
                w.record(row(i, 1)).is_none(),
                "a spooled row has no commit to wait for"
            );
        }
        assert!(w.flush(Duration::from_secs(10)));
        assert_eq!(count(dir.path(), "requests"), 50);
        assert_eq!(count(dir.path(), "findings"), 50);
        assert_eq!(w.stats.written.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn rows_are_committed_without_a_flush_once_the_writer_wakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        // Let the writer park first, so the append has to wake it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.record(row(1, 0)).is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(dir.path(), "requests") < 1 {
            assert!(
                Instant::now() < deadline,
                "the parked writer was never woken"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What a killed process leaves: `n` rows (two findings each) in the spool, uncommitted.
    fn spool_uncommitted(dir: &Path, n: u32) {
        let conn = db::open(dir).expect("open");
        let stored = stored_cursor(&conn).expect("cursor");
        let (spool, _) = Spool::open(dir, stored).expect("spool");
        for i in 0..n {
            let bytes = encode_row(&row(i, 2), Vec::new()).expect("encode");
            spool.append(&bytes).expect("append");
        }
    }

    #[test]
    fn rows_spooled_before_a_crash_are_committed_on_the_next_start_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        spool_uncommitted(dir.path(), 30);
        let (w, t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        // Replayed before `spawn` returned: nothing to wait for.
        assert_eq!(count(dir.path(), "requests"), 30);
        assert_eq!(count(dir.path(), "findings"), 60);
        drop(w);
        t.join().expect("writer thread");
        // Another start finds nothing new to commit.
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn again");
        assert!(w.flush(Duration::from_secs(10)));
        assert_eq!(count(dir.path(), "requests"), 30);
        assert_eq!(count(dir.path(), "findings"), 60);
    }

    #[test]
    fn rows_spooled_after_a_torn_entry_are_committed_before_the_next_start_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), None).expect("spool");
        let append = |range: std::ops::Range<u32>| {
            for i in range {
                let bytes = encode_row(&row(i, 2), Vec::new()).expect("encode");
                spool.append(&bytes).expect("append");
            }
        };
        append(0..10);
        // A row cut short: its header promises more than follows, then the next rows.
        let mut torn = 500u32.to_le_bytes().to_vec();
        torn.extend_from_slice(&[0xAB; 4]);
        torn.extend_from_slice(br#"{"id":"req_cut"#);
        std::fs::OpenOptions::new()
            .append(true)
            .open(spool.path())
            .and_then(|mut f| std::io::Write::write_all(&mut f, &torn))
            .expect("torn write");
        append(10..20);
        drop(spool);
        let (_w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        // All twenty, before `spawn` returned (the server seeds its spend right after).
        assert_eq!(count(dir.path(), "requests"), 20);
        assert_eq!(count(dir.path(), "findings"), 40);
    }

    #[test]
    fn a_reader_commits_spooled_rows_itself_and_the_writer_does_not_double_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Rows a killed (or not yet committing) server left in the spool.
        spool_uncommitted(dir.path(), 12);
        assert_eq!(count(dir.path(), "requests"), 0);
        assert_eq!(commit_spooled(dir.path()).expect("commit"), 12);
        assert_eq!(count(dir.path(), "requests"), 12);
        assert_eq!(count(dir.path(), "findings"), 24);
        // Again: the same rows, not more of them.
        assert_eq!(commit_spooled(dir.path()).expect("commit"), 12);
        assert_eq!(count(dir.path(), "requests"), 12);
        // The server's writer then commits them as its own, once, and moves its cursor on.
        let (w, t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        assert_eq!(count(dir.path(), "requests"), 12);
        assert_eq!(count(dir.path(), "findings"), 24);
        assert_eq!(commit_spooled(dir.path()).expect("commit"), 0);
        drop(w);
        t.join().expect("writer thread");
    }

    #[test]
    fn a_replay_over_rows_already_committed_does_not_double_their_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (w, t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
            for i in 0..10 {
                assert!(w.record(row(i, 3)).is_none());
            }
            assert!(w.flush(Duration::from_secs(10)));
            drop(w);
            t.join().expect("writer thread");
        }
        // A crash between the commit and the cursor update: the database's cursor is behind.
        let conn = db::open(dir.path()).expect("open");
        let gen: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'spool_generation'",
                [],
                |r| r.get(0),
            )
            .expect("generation");
        drop(conn);
        {
            // Put the same rows back in the spool, as if never rotated away.
            let (spool, _) = Spool::open(
                dir.path(),
                Some(Cursor {
                    generation: gen as u64,
                    offset: spool::HEADER_LEN,
                }),
            )
            .expect("spool");
            for i in 0..10 {
                let bytes = encode_row(&row(i, 3), Vec::new()).expect("encode");
                spool.append(&bytes).expect("append");
            }
        }
        let (_w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        assert_eq!(count(dir.path(), "requests"), 10);
        assert_eq!(count(dir.path(), "findings"), 30);
    }

    /// Every optional field set, so the pinned bytes cover each kind of value.
    fn full_row() -> Record {
        let mut r = row(7, 1);
        r.streamed = true;
        r.status = 403;
        r.verdict = Verdict::Blocked;
        r.reason = Some("secret_detected".into());
        r.error_source = Some("airlock".into());
        r.tokens = Tokens {
            input: 300,
            output: 2,
            cached: 128,
            cache_write: 1,
            reasoning: 70_000,
        };
        r.cost_micros = Some(-1);
        r.estimated = true;
        r.upstream_ms = None;
        r.prompt = Some("[REDACTED]".into());
        r
    }

    /// A row decodes, in place, as the [`Record`] it was encoded from: every field, in
    /// [`Record`]'s order.
    #[test]
    fn rows_round_trip_through_the_spool_encoding() {
        let mut bare = row(3, 0);
        (bare.account, bare.key_name, bare.provider, bare.model) = (None, None, None, None);
        (bare.body_end, bare.cost_micros, bare.upstream_ms) = (None, None, Some(0.5));
        for r in [full_row(), row(1, 0), row(2, 3), bare] {
            let entry = encode_row(&r, Vec::new()).expect("encode");
            assert_eq!(entry[0], ROW_POSTCARD);
            let Ok(Row::Spooled(back)) = decode_row(&entry) else {
                panic!("not decoded in place");
            };
            assert_eq!(back, RowRef::from(&r));
            let json = serde_json::to_vec(&r).expect("json");
            let Ok(Row::Json(back)) = decode_row(&json) else {
                panic!("JSON row not decoded");
            };
            assert_eq!(RowRef::from(&*back), RowRef::from(&r));
        }
    }

    /// The encoding of a row is pinned: postcard is positional, so a field added to, removed
    /// from or moved in [`Record`] (or one of its parts) changes these bytes. When this fails,
    /// give the new layout a new format byte and keep decoding [`ROW_POSTCARD`] rows (a spool
    /// written by the previous release may hold some after a crash); then pin the new bytes.
    #[test]
    fn row_encoding_is_pinned() {
        let entry = encode_row(&full_row(), Vec::new()).expect("encode");
        let pinned = concat!(
            "010f7265715f746573745f3030303030378eb083c59868010461636374010361",
            "707001066f70656e616904504f5354142f76312f636861742f636f6d706c6574",
            "696f6e73010b6770742d346f2d6d696e6901930303010f7365637265745f6465",
            "74656374656401076169726c6f636bac0202800101f0a2040101010108636f6d",
            "706c65746564000000000000f03f00000000000000e03f010a5b524544414354",
            "45445d0105656d61696c03706969136d657373616765735b305d2e636f6e7465",
            "6e74067265646163740430306666",
        );
        assert_eq!(hex::encode(&entry), pinned);
    }

    /// Postcard writes an enum as its variant's index: the verdicts keep their places.
    #[test]
    fn verdicts_encode_as_their_index() {
        let all = [
            Verdict::Allowed,
            Verdict::Redacted,
            Verdict::Warned,
            Verdict::Blocked,
            Verdict::Failed,
        ];
        for (i, v) in all.into_iter().enumerate() {
            assert_eq!(postcard::to_allocvec(&v).expect("encode"), [i as u8]);
        }
    }

    #[test]
    fn a_spool_left_by_an_older_release_is_committed_and_unreadable_rows_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (spool, _) = Spool::open(dir.path(), None).expect("spool");
            // Before the binary encoding, rows were spooled as JSON.
            for i in 0..5 {
                let json = serde_json::to_vec(&row(i, 2)).expect("json");
                spool.append(&json).expect("append");
            }
            let binary = encode_row(&row(5, 1), Vec::new()).expect("encode");
            spool.append(&binary).expect("append");
            // A format this build does not know, and a binary row with a byte too many: each
            // is skipped and counted, the rows around them kept.
            spool.append(&[9, 1, 2, 3]).expect("append");
            let mut long = binary.clone();
            long.push(0);
            spool.append(&long).expect("append");
            let binary = encode_row(&row(6, 0), Vec::new()).expect("encode");
            spool.append(&binary).expect("append");
        }
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        assert_eq!(count(dir.path(), "requests"), 7);
        assert_eq!(count(dir.path(), "findings"), 11);
        assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_row_too_large_for_the_spool_takes_the_channel_and_is_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        let mut big = row(1, 0);
        big.prompt = Some("x".repeat(spool::MAX_ENTRY + 1));
        let mut ack = w.record(big).expect("a large row waits for its commit");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ack.try_recv() {
                Ok(()) => break,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "never acknowledged");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("ack dropped: {e}"),
            }
        }
        assert_eq!(count(dir.path(), "requests"), 1);
    }

    #[test]
    fn a_disabled_ledger_writes_nothing_and_never_waits() {
        let w = LedgerWriter::disabled();
        assert!(!w.enabled());
        assert!(w.record(row(1, 1)).is_none());
        assert!(w.flush(Duration::from_millis(1)));
    }

    #[test]
    fn the_spool_is_emptied_once_its_rows_are_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        // About 3 MB of rows: past the rotation threshold.
        for i in 0..6_000 {
            assert!(w.record(row(i, 1)).is_none());
        }
        assert!(w.flush(Duration::from_secs(30)));
        // One more round lets the writer rotate after the flush's commit.
        assert!(w.flush(Duration::from_secs(30)));
        let len = std::fs::metadata(dir.path().join(spool::SPOOL_FILE))
            .expect("spool")
            .len();
        assert!(len < 1 << 20, "spool still {len} bytes long");
        assert_eq!(count(dir.path(), "requests"), 6_000);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod priority_tests {
    use super::*;

    /// The `/proc/self/task/<tid>` directories of this process's threads called `name`.
    fn threads(name: &str) -> Vec<std::path::PathBuf> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .map(|t| t.path())
            .filter(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == name))
            .collect()
    }

    /// Fields `n` (1-based, as in proc(5)) of the stat lines of this process's threads `name`.
    fn stat_fields(name: &str, n: &[usize]) -> Vec<Vec<i64>> {
        threads(name)
            .into_iter()
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                // Fields after the parenthesised name start at field 3 (state).
                let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                n.iter().map(|&i| rest.get(i - 3)?.parse().ok()).collect()
            })
            .collect()
    }

    #[test]
    fn the_writer_thread_runs_at_background_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _t) = LedgerWriter::spawn(dir.path(), None).expect("spawn");
        assert!(w.flush(Duration::from_secs(10)), "writer running");
        // Thread names are cut to 15 bytes by the kernel. Field 41 is the scheduling policy
        // (SCHED_BATCH is 3), field 19 the nice value. Other tests' writers may be starting at
        // this moment, so allow them a moment to lower themselves too.
        // On Linux 6.12 and later, which grant a thread the slice it asks for, the writer and
        // the checkpointer have the shortest one (0.1 ms, against 0.7 ms or more by default).
        // A thread takes its name once it first runs, which on a busy machine can come after
        // `spawn` returns (the checkpointer has no work to wait for): an unnamed one is not yet
        // a failure.
        let slices_granted = kernel_at_least(6, 12);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = stat_fields("airlock-ledger", &[41, 19]);
            let slices: Vec<_> = ["airlock-ledger", "airlock-checkpo"]
                .map(|name| (name, sched_values(name, "se.slice")))
                .into();
            let short = |s: &Option<u64>| !slices_granted || *s == Some(100_000);
            if !seen.is_empty()
                && seen.iter().all(|f| f == &[3, 19])
                && slices
                    .iter()
                    .all(|(_, s)| !s.is_empty() && s.iter().all(short))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "policy and nice: {seen:?}; slices: {slices:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The running kernel's version is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }

    /// The value of `key` in `/proc/self/task/<tid>/sched` of each thread called `name`
    /// (`None` where the kernel does not report it).
    fn sched_values(name: &str, key: &str) -> Vec<Option<u64>> {
        threads(name)
            .into_iter()
            .map(|t| {
                let sched = std::fs::read_to_string(t.join("sched")).unwrap_or_default();
                sched.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().parse().ok())?
                })
            })
            .collect()
    }
}
