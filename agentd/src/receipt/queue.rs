//! Receipt queue and the worker that renders receipts to
//! `state_dir/receipts/<call_id>.png` off the decision path.
//!
//! The queue lives in the audit database (`state_dir/audit.db`) as two
//! tables. The daemon's allowed calls are sealed in `receipt_seals` by
//! [`ReceiptSeal`], a companion of the allow's audit row, so the claims and
//! their HMAC tag commit in the same transaction as the row itself (no
//! second commit per call). That table is keyed by the audit row's seq and
//! has one index, so a batch of allows adds to the end of two b-trees: the
//! allow path writes as few pages as it can. The worker moves sealed rows
//! into `receipt_queue` (the render history: state, attempts, errors) when
//! it takes them, off the decision path. A row leaves `pending` only after its file is
//! written, synced and renamed into place, so a crash or restart at any
//! point loses nothing: the next worker renders what is still pending
//! (rendering is deterministic, so a repeated render rewrites identical
//! bytes). An allow overturned after its row (its grant could not be
//! installed) voids its receipt ([`ReceiptVoid`]): it is never rendered, or
//! its file is removed.
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use super::claims::{tag, tag_matches};
use super::{seal_card, ReceiptClaims, ReceiptError, ReceiptKeys};
use crate::audit::{Committed, Companion};
use crate::config::Durability;

/// Database file name under the state directory (the audit database).
pub const DB_FILE: &str = "audit.db";
/// Where earlier versions kept the queue; its rows move into [`DB_FILE`].
pub const LEGACY_DB_FILE: &str = "receipts.db";
/// Directory of rendered receipts under the state directory.
pub const OUT_DIR: &str = "receipts";
/// Attempts before a receipt failing with an I/O error is marked failed.
const MAX_ATTEMPTS: i64 = 5;
const BATCH: i64 = 32;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS receipt_queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     TEXT NOT NULL UNIQUE,
    claims      TEXT NOT NULL,
    tag         TEXT,
    redact      INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'void')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    enqueued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    done_at     TEXT
);
CREATE INDEX IF NOT EXISTS receipt_queue_state ON receipt_queue (state, id);
CREATE TABLE IF NOT EXISTS receipt_seals (
    seq     INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL UNIQUE,
    claims  TEXT NOT NULL,
    tag     TEXT NOT NULL,
    redact  INTEGER NOT NULL DEFAULT 0
);
";

/// Seals an allow in the audit batch (see [`ReceiptSeal`]).
const SEAL_SQL: &str =
    "INSERT INTO receipt_seals (seq, call_id, claims, tag, redact) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Copies the sealed rows with seq in `?1..=?2` into the render history as
/// pending; `enqueued_at` is the sealed row's time.
const PROMOTE_SQL: &str = "
INSERT OR IGNORE INTO receipt_queue (call_id, claims, tag, redact, enqueued_at)
    SELECT call_id, claims, tag, redact,
           COALESCE(json_extract(claims, '$.timestamp'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    FROM receipt_seals WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq";

const INSERT_SQL: &str =
    "INSERT OR IGNORE INTO receipt_queue (call_id, claims, tag, redact) VALUES (?1, ?2, ?3, ?4)";

/// Looks up an operator's HMAC key (the gateway's `OperatorStore::key_of`).
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// Counts of queue rows by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Waiting to be rendered.
    pub pending: u64,
    /// Rendered to disk.
    pub done: u64,
    /// Given up (reason in `last_error`).
    pub failed: u64,
    /// Voided: the allow was overturned after its row.
    pub void: u64,
}

/// Worker throughput since the queue was opened.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RenderStats {
    /// Receipts rendered.
    pub rendered: u64,
    /// CPU-side time spent rendering them (wall time of the render calls).
    pub render_secs: f64,
}

impl RenderStats {
    /// Receipts per second of one busy core.
    pub fn per_core_per_sec(&self) -> f64 {
        if self.render_secs > 0.0 {
            self.rendered as f64 / self.render_secs
        } else {
            0.0
        }
    }
}

struct Inner {
    db_path: PathBuf,
    out_dir: PathBuf,
    durability: Durability,
    conn: Mutex<Connection>,
    wake: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
    rendered: AtomicU64,
    render_nanos: AtomicU64,
    /// When the last allowed call was sealed (ns since `epoch`).
    last_sealed: AtomicU64,
    epoch: Instant,
}

/// How long the daemon must go without sealing an allow before the worker
/// renders: rendering (a few ms of CPU and cache per card) waits for a pause
/// in the calls, so it never sits between a call and its answer.
pub const QUIET: Duration = Duration::from_millis(20);

impl Inner {
    /// Time left before the queue has been quiet for [`QUIET`].
    fn busy_for(&self) -> Option<Duration> {
        let since = Duration::from_nanos(
            u64::try_from(self.epoch.elapsed().as_nanos())
                .unwrap_or(u64::MAX)
                .saturating_sub(self.last_sealed.load(Ordering::Relaxed)),
        );
        QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }
}

/// The persisted queue; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct ReceiptQueue {
    inner: Arc<Inner>,
}

fn store(op: &'static str) -> impl Fn(rusqlite::Error) -> ReceiptError {
    move |source| ReceiptError::Store { op, source }
}

fn open_conn(path: &Path, durability: Durability) -> Result<Connection, ReceiptError> {
    let conn = Connection::open(path).map_err(store("open"))?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;"
    ))
    .map_err(store("configure"))?;
    Ok(conn)
}

impl ReceiptQueue {
    /// Opens (creating if needed) the queue with `synchronous=NORMAL`: an
    /// enqueued receipt survives a process crash; after a power failure the
    /// last few may need re-rendering from the audit log.
    pub fn open(state_dir: &Path) -> Result<Self, ReceiptError> {
        Self::open_with(state_dir, Durability::Normal)
    }

    /// Opens the queue with an explicit durability level.
    pub fn open_with(state_dir: &Path, durability: Durability) -> Result<Self, ReceiptError> {
        let out_dir = state_dir.join(OUT_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&out_dir)
            .map_err(|source| ReceiptError::Io {
                op: "create_dir",
                path: out_dir.clone(),
                source,
            })?;
        let db_path = state_dir.join(DB_FILE);
        let conn = open_conn(&db_path, durability)?;
        conn.execute_batch(SCHEMA).map_err(store("create_schema"))?;
        add_redact_column(&conn)?;
        restrict(&db_path)?;
        migrate_legacy(&conn, &state_dir.join(LEGACY_DB_FILE))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db_path,
                out_dir,
                durability,
                conn: Mutex::new(conn),
                wake: Mutex::new(false),
                cv: Condvar::new(),
                stop: AtomicBool::new(false),
                rendered: AtomicU64::new(0),
                render_nanos: AtomicU64::new(0),
                last_sealed: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// Queues a receipt outside the audit batch (tools, tests, re-issuing
    /// a receipt from its audit row); durable when it returns `Ok`. The
    /// daemon's allowed calls are sealed by [`ReceiptSeal`] instead.
    /// Enqueuing the same call again with the same claims is a no-op; with
    /// different claims it is refused (`duplicate_call_id`).
    pub fn enqueue(&self, claims: &ReceiptClaims) -> Result<(), ReceiptError> {
        claims.validate()?;
        let json = serde_json::to_string(claims).expect("claims serialize");
        let conn = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        // A call the daemon sealed is compared with its seal, wherever it is.
        promote_call(&conn, &claims.call_id).map_err(store("enqueue"))?;
        let n = conn
            .execute(
                INSERT_SQL,
                params![claims.call_id, json, None::<String>, false],
            )
            .map_err(store("enqueue"))?;
        if n == 0 {
            let existing: Option<String> = conn
                .query_row(
                    "SELECT claims FROM receipt_queue WHERE call_id = ?1",
                    params![claims.call_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(store("enqueue"))?;
            let same = existing
                .and_then(|s| serde_json::from_str::<ReceiptClaims>(&s).ok())
                .is_some_and(|c| &c == claims);
            if !same {
                return Err(ReceiptError::InvalidClaims {
                    reason: "duplicate_call_id",
                    detail: format!(
                        "call {} already has a different receipt queued",
                        claims.call_id
                    ),
                });
            }
        }
        drop(conn);
        self.notify();
        Ok(())
    }

    /// Wakes the worker: something was queued (it renders once the calls
    /// pause for [`QUIET`]).
    pub fn notify(&self) {
        let now = u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner.last_sealed.store(now, Ordering::Relaxed);
        *self.inner.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.cv.notify_all();
    }

    /// What the worker has rendered since open, and how fast.
    pub fn render_stats(&self) -> RenderStats {
        RenderStats {
            rendered: self.inner.rendered.load(Ordering::Relaxed),
            render_secs: self.inner.render_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Where the receipt of `call_id` is (or will be) written.
    pub fn receipt_path(&self, call_id: &str) -> PathBuf {
        self.inner.out_dir.join(format!("{call_id}.png"))
    }

    /// Row counts by state.
    pub fn stats(&self) -> Result<QueueStats, ReceiptError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = conn
            .prepare("SELECT state, COUNT(*) FROM receipt_queue GROUP BY state")
            .map_err(store("stats"))?;
        let mut out = QueueStats::default();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(store("stats"))?;
        for row in rows {
            let (state, n) = row.map_err(store("stats"))?;
            match state.as_str() {
                "pending" => out.pending += n,
                "done" => out.done = n,
                "void" => out.void = n,
                _ => out.failed = n,
            }
        }
        // Sealed and not yet taken by the worker: pending too.
        out.pending += conn
            .query_row("SELECT COUNT(*) FROM receipt_seals", [], |r| {
                r.get::<_, u64>(0)
            })
            .map_err(store("stats"))?;
        Ok(out)
    }

    /// The failure reason recorded for `call_id`, if it failed.
    pub fn failure_of(&self, call_id: &str) -> Result<Option<String>, ReceiptError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row(
            "SELECT last_error FROM receipt_queue WHERE call_id = ?1 AND state IN ('failed', 'void')",
            params![call_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(store("failure_of"))
    }

    /// Asks the worker to stop after the receipt it is rendering; pending
    /// rows stay queued for the next start.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        *self.inner.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.cv.notify_all();
    }

    /// Starts the worker thread: renders pending receipts to
    /// `state_dir/receipts/<call_id>.png` until [`ReceiptQueue::shutdown`].
    pub fn spawn_worker(&self, key_of: KeyLookup) -> JoinHandle<()> {
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("receipt-worker".into())
            .spawn(move || worker(inner, key_of))
            .expect("spawn receipt worker thread")
    }

    /// Renders every pending receipt now, on the calling thread; returns how
    /// many left the pending state. For tools and tests; the daemon uses the
    /// worker.
    pub fn drain(&self, key_of: &KeyLookup) -> Result<usize, ReceiptError> {
        let conn = open_conn(&self.inner.db_path, self.inner.durability)?;
        let mut total = 0;
        loop {
            let n =
                process_batch_until(&conn, &self.inner, key_of, &AtomicBool::new(false), false)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }
}

/// A queue created before cards could be redacted gains the `redact`
/// column (0: its receipts show their targets).
fn add_redact_column(conn: &Connection) -> Result<(), ReceiptError> {
    let has = crate::audit::store::has_column(conn, "receipt_queue", "redact")
        .map_err(store("migrate_redact"))?;
    if !has {
        conn.execute_batch(
            "ALTER TABLE receipt_queue ADD COLUMN redact INTEGER NOT NULL DEFAULT 0",
        )
        .map_err(store("migrate_redact"))?;
    }
    Ok(())
}

fn restrict(path: &Path) -> Result<(), ReceiptError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ReceiptError::Io {
            op: "chmod",
            path: path.to_path_buf(),
            source,
        }
    })
}

fn worker(inner: Arc<Inner>, key_of: KeyLookup) {
    let conn = match open_conn(&inner.db_path, inner.durability) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, reason = e.reason_code(), "receipt worker cannot open its queue");
            return;
        }
    };
    lower_priority();
    tracing::info!(db = %inner.db_path.display(), "receipt worker started");
    while !inner.stop.load(Ordering::SeqCst) {
        if let Some(wait) = inner.busy_for() {
            std::thread::sleep(wait);
            continue;
        }
        let progressed = match process_batch_until(&conn, &inner, &key_of, &inner.stop, true) {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::error!(error = %e, reason = e.reason_code(), "receipt worker batch failed");
                false
            }
        };
        if progressed {
            continue;
        }
        let mut woken = inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken {
            // The timeout retries rows that failed with transient I/O errors.
            woken = inner
                .cv
                .wait_timeout(woken, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
    }
    tracing::info!("receipt worker stopped");
}

/// Nice value of the worker thread where SCHED_IDLE is refused.
const WORKER_NICE: libc::c_int = 19;

/// Rendering (a few ms of CPU per receipt) must never compete with the
/// decision path: the worker runs under SCHED_IDLE (CFS's lowest weight,
/// and any other runnable thread preempts it at once), so it renders in
/// the CPU time decisions leave; the sealed rows wait in the queue (their
/// count is the backlog the metrics report). Not starved: SCHED_IDLE still
/// gets a small share of a busy CPU.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let idle_refused = std::io::Error::last_os_error();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its integer arguments. On Linux,
    // PRIO_PROCESS with a thread id sets that thread's nice value.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICE) };
    if rc != 0 {
        tracing::warn!(sched_idle = %idle_refused, error = %std::io::Error::last_os_error(), "cannot lower receipt worker priority");
    }
}

/// One queued row the worker takes.
struct Pending {
    id: i64,
    call_id: String,
    claims: String,
    tag: Option<String>,
    redact: bool,
    attempts: i64,
}

/// What rendering a row came to; applied in one short transaction per
/// batch, so the worker never holds the audit database's write lock while
/// it renders.
enum Outcome {
    Done {
        id: i64,
        path: PathBuf,
    },
    Failed {
        id: i64,
        error: String,
        give_up: bool,
    },
}

fn process_batch_until(
    conn: &Connection,
    inner: &Inner,
    key_of: &KeyLookup,
    stop: &AtomicBool,
    yield_to_calls: bool,
) -> Result<usize, ReceiptError> {
    remove_voided_files(conn, &inner.out_dir)?;
    promote_sealed(conn, BATCH)?;
    let rows: Vec<Pending> = {
        let mut st = conn
            .prepare_cached(
                "SELECT id, call_id, claims, tag, redact, attempts FROM receipt_queue
                 WHERE state = 'pending' ORDER BY id LIMIT ?1",
            )
            .map_err(store("fetch_pending"))?;
        let it = st
            .query_map(params![BATCH], |r| {
                Ok(Pending {
                    id: r.get(0)?,
                    call_id: r.get(1)?,
                    claims: r.get(2)?,
                    tag: r.get(3)?,
                    redact: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })
            .map_err(store("fetch_pending"))?;
        it.collect::<Result<_, _>>()
            .map_err(store("fetch_pending"))?
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        if stop.load(Ordering::SeqCst) || (yield_to_calls && inner.busy_for().is_some()) {
            break;
        }
        let started = Instant::now();
        let rendered = render_one(conn, &inner.out_dir, &row, key_of);
        match rendered {
            Ok(path) => {
                inner.rendered.fetch_add(1, Ordering::Relaxed);
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                inner.render_nanos.fetch_add(nanos, Ordering::Relaxed);
                outcomes.push(Outcome::Done { id: row.id, path });
            }
            Err((reason, detail, permanent)) => {
                let give_up = permanent || row.attempts + 1 >= MAX_ATTEMPTS;
                tracing::warn!(
                    call_id = row.call_id,
                    reason,
                    detail,
                    gave_up = give_up,
                    "receipt not rendered"
                );
                outcomes.push(Outcome::Failed {
                    id: row.id,
                    error: format!("{reason}: {detail}"),
                    give_up,
                });
            }
        }
    }
    apply_outcomes(conn, outcomes)
}

/// Moves up to `limit` of the oldest sealed rows into the render history
/// (`receipt_queue`, state pending), in one short transaction.
fn promote_sealed(conn: &Connection, limit: i64) -> Result<usize, ReceiptError> {
    let range: (Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT MIN(seq), MAX(seq) FROM (SELECT seq FROM receipt_seals ORDER BY seq LIMIT ?1)",
            params![limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(store("promote_sealed"))?;
    let (Some(first), Some(last)) = range else {
        return Ok(0);
    };
    let tx = conn
        .unchecked_transaction()
        .map_err(store("promote_sealed"))?;
    let moved = move_sealed(&tx, first, last).map_err(store("promote_sealed"))?;
    tx.commit().map_err(store("promote_sealed"))?;
    Ok(moved)
}

/// Moves one call's sealed row (if it is still sealed) into the render
/// history, inside the caller's transaction: a void or a re-enqueue then
/// finds it where every state lives.
fn promote_call(conn: &Connection, call_id: &str) -> rusqlite::Result<()> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM receipt_seals WHERE call_id = ?1")?
        .query_row(params![call_id], |r| r.get(0))
        .optional()?;
    match seq {
        Some(seq) => move_sealed(conn, seq, seq).map(|_| ()),
        None => Ok(()),
    }
}

/// Copies the sealed rows `first..=last` into the render history and
/// removes them from the seals; returns how many moved.
fn move_sealed(conn: &Connection, first: i64, last: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(PROMOTE_SQL)?
        .execute(params![first, last])?;
    conn.prepare_cached("DELETE FROM receipt_seals WHERE seq BETWEEN ?1 AND ?2")?
        .execute(params![first, last])
}

/// Records a batch's outcomes; returns how many rows left `pending`. A row
/// voided while it was rendered keeps `void`, and its file is removed.
fn apply_outcomes(conn: &Connection, outcomes: Vec<Outcome>) -> Result<usize, ReceiptError> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction().map_err(store("mark_batch"))?;
    let mut left_pending = 0;
    let mut voided = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Done { id, path } => {
                let n = tx
                    .execute(
                        "UPDATE receipt_queue SET state = 'done', attempts = attempts + 1, last_error = NULL,
                         done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1 AND state = 'pending'",
                        params![id],
                    )
                    .map_err(store("mark_done"))?;
                if n == 0 {
                    voided.push(path);
                }
                left_pending += 1;
            }
            Outcome::Failed { id, error, give_up } => {
                tx.execute(
                    "UPDATE receipt_queue SET attempts = attempts + 1, last_error = ?2,
                     state = CASE WHEN ?3 THEN 'failed' ELSE state END WHERE id = ?1 AND state = 'pending'",
                    params![id, error, give_up],
                )
                .map_err(store("mark_failed"))?;
                if give_up {
                    left_pending += 1;
                }
            }
        }
    }
    tx.commit().map_err(store("mark_batch"))?;
    for path in voided {
        remove_file(&path);
    }
    Ok(left_pending)
}

/// Removes the files of receipts voided after they were rendered.
fn remove_voided_files(conn: &Connection, out_dir: &Path) -> Result<(), ReceiptError> {
    let ids: Vec<(i64, String)> = {
        let mut st = conn
            .prepare_cached(
                "SELECT id, call_id FROM receipt_queue WHERE state = 'void' AND done_at IS NOT NULL",
            )
            .map_err(store("fetch_voided"))?;
        let it = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(store("fetch_voided"))?;
        it.collect::<Result<_, _>>()
            .map_err(store("fetch_voided"))?
    };
    for (id, call_id) in ids {
        remove_file(&out_dir.join(format!("{call_id}.png")));
        conn.execute(
            "UPDATE receipt_queue SET done_at = NULL WHERE id = ?1",
            params![id],
        )
        .map_err(store("mark_voided"))?;
    }
    Ok(())
}

fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "receipt of an overturned allow removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot remove the receipt of an overturned allow")
        }
    }
}

/// Renders one queued receipt, its face from the allow's audit row;
/// errors are (reason, detail, permanent).
fn render_one(
    conn: &Connection,
    out_dir: &Path,
    row: &Pending,
    key_of: &KeyLookup,
) -> Result<PathBuf, (&'static str, String, bool)> {
    let claims: ReceiptClaims = serde_json::from_str(&row.claims)
        .map_err(|e| ("bad_queued_claims", e.to_string(), true))?;
    let key = key_of(&claims.operator).ok_or_else(|| {
        (
            "operator_key_unknown",
            format!("no key for operator {}", claims.operator),
            true,
        )
    })?;
    if let Some(sealed) = &row.tag {
        // Sealed at decision time: the card must carry that tag. Another key
        // now (rotated since) would make a receipt the row never had.
        let keys = ReceiptKeys::derive(&key).map_err(|e| (e.reason_code(), e.to_string(), true))?;
        if !tag_matches(&keys, &claims, sealed) {
            return Err((
                "operator_key_changed",
                format!(
                    "operator {}'s key changed since the call was sealed",
                    claims.operator
                ),
                true,
            ));
        }
    }
    let face = super::issued::face_of(conn, &claims, row.redact);
    let png = seal_card(&key, &claims, &face, super::card::SIZE)
        .map_err(|e| (e.reason_code(), e.to_string(), true))?;
    let path = out_dir.join(format!("{}.png", claims.call_id));
    write_atomic(&path, &png).map_err(|e| ("receipt_io_failed", e.to_string(), false))?;
    Ok(path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("png.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Moves the rows of a queue kept by an earlier version in its own
/// database into the audit database's table, once; the old file is kept
/// beside as `receipts.db.migrated`.
fn migrate_legacy(conn: &Connection, legacy: &Path) -> Result<(), ReceiptError> {
    if !legacy.exists() {
        return Ok(());
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS legacy",
        params![legacy.to_string_lossy()],
    )
    .map_err(store("migrate_attach"))?;
    let copied = conn
        .execute(
            "INSERT OR IGNORE INTO receipt_queue (call_id, claims, state, attempts, last_error, enqueued_at, done_at)
             SELECT call_id, claims, state, attempts, last_error, enqueued_at, done_at FROM legacy.receipt_queue",
            [],
        )
        .map_err(store("migrate_copy"));
    let _ = conn.execute("DETACH DATABASE legacy", []);
    let copied = copied?;
    let done = legacy.with_extension("db.migrated");
    std::fs::rename(legacy, &done).map_err(|source| ReceiptError::Io {
        op: "rename",
        path: legacy.to_path_buf(),
        source,
    })?;
    tracing::info!(rows = copied, from = %legacy.display(), "receipt queue moved into the audit database");
    Ok(())
}

/// Seals an allowed call's receipt in its audit row's transaction: the
/// claims (made from the committed row) and their HMAC tag, under the
/// operator's key at decision time.
pub struct ReceiptSeal {
    keys: ReceiptKeys,
    operator: String,
    call_id: String,
    action: String,
    redact: bool,
}

impl ReceiptSeal {
    /// A seal for `call_id` by `operator`, under the receipt `keys` derived
    /// from the operator's HMAC key; `redact`: its card hides the target
    /// (policy `receipt_redact`).
    pub fn new(
        keys: ReceiptKeys,
        operator: &str,
        call_id: &str,
        action: &str,
        redact: bool,
    ) -> Result<Self, ReceiptError> {
        let seal = Self {
            keys,
            operator: operator.to_owned(),
            call_id: call_id.to_owned(),
            action: action.to_owned(),
            redact,
        };
        // Fail before the row, not in the writer: the call id must name a file.
        seal.claims(&Committed {
            seq: 1,
            hash: String::new(),
            timestamp: String::new(),
            companion_error: None,
        })
        .validate()?;
        Ok(seal)
    }

    fn claims(&self, row: &Committed) -> ReceiptClaims {
        ReceiptClaims {
            seq: row.seq,
            row_hash: row.hash.clone(),
            operator: self.operator.clone(),
            call_id: self.call_id.clone(),
            action: self.action.clone(),
            timestamp: row.timestamp.clone(),
        }
    }
}

impl Companion for ReceiptSeal {
    fn store(&self, conn: &Connection, row: &Committed) -> rusqlite::Result<()> {
        let claims = self.claims(row);
        let json = serde_json::to_string(&claims).expect("claims serialize");
        // A call id is decided once: a second seal of one (UNIQUE) fails,
        // and with it the allow.
        conn.prepare_cached(SEAL_SQL)?.execute(params![
            row.seq as i64,
            claims.call_id,
            json,
            tag(&self.keys, &claims),
            self.redact
        ])?;
        Ok(())
    }
}

/// Voids the receipt of an allow overturned after its row (stored with the
/// overturning row): it is never rendered, or its file is removed.
pub struct ReceiptVoid {
    /// The overturned call.
    pub call_id: String,
    /// Why (the overturn's reason code).
    pub reason: String,
}

impl Companion for ReceiptVoid {
    fn store(&self, conn: &Connection, _row: &Committed) -> rusqlite::Result<()> {
        promote_call(conn, &self.call_id)?;
        conn.prepare_cached(
            "UPDATE receipt_queue SET state = 'void', last_error = ?2 WHERE call_id = ?1",
        )?
        .execute(params![
            self.call_id,
            format!("overturned: {}", self.reason)
        ])?;
        Ok(())
    }
}
