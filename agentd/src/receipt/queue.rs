//! Persisted receipt queue (`state_dir/receipts.db`) and the worker that
//! renders receipts to `state_dir/receipts/<call_id>.png` off the hot path.
//!
//! `enqueue` is one small SQLite insert (WAL); the PNG work happens on the
//! worker thread. A row leaves `pending` only after its file is written,
//! synced and renamed into place, so a crash or restart at any point loses
//! nothing: the next worker renders what is still pending (rendering is
//! deterministic, so a repeated render rewrites identical bytes).
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{seal, ReceiptClaims, ReceiptError};
use crate::config::Durability;

/// Database file name under the state directory.
pub const DB_FILE: &str = "receipts.db";
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
    state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    enqueued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    done_at     TEXT
);
CREATE INDEX IF NOT EXISTS receipt_queue_state ON receipt_queue (state, id);
";

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
}

struct Inner {
    db_path: PathBuf,
    out_dir: PathBuf,
    durability: Durability,
    conn: Mutex<Connection>,
    wake: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
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
        restrict(&db_path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db_path,
                out_dir,
                durability,
                conn: Mutex::new(conn),
                wake: Mutex::new(false),
                cv: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
        })
    }

    /// Queues a receipt; durable when it returns `Ok`. Enqueuing the same
    /// call again with the same claims is a no-op; with different claims it
    /// is refused (`duplicate_call_id`).
    pub fn enqueue(&self, claims: &ReceiptClaims) -> Result<(), ReceiptError> {
        claims.validate()?;
        let json = serde_json::to_string(claims).expect("claims serialize");
        let conn = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO receipt_queue (call_id, claims) VALUES (?1, ?2)",
                params![claims.call_id, json],
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
        *self.inner.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.cv.notify_all();
        Ok(())
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
                "pending" => out.pending = n,
                "done" => out.done = n,
                _ => out.failed = n,
            }
        }
        Ok(out)
    }

    /// The failure reason recorded for `call_id`, if it failed.
    pub fn failure_of(&self, call_id: &str) -> Result<Option<String>, ReceiptError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row(
            "SELECT last_error FROM receipt_queue WHERE call_id = ?1 AND state = 'failed'",
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
            let n = process_batch(&conn, &self.inner.out_dir, key_of)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }
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
        let progressed = match process_batch_until(&conn, &inner.out_dir, &key_of, &inner.stop) {
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

/// Nice value of the worker thread: rendering (a few ms of CPU per receipt)
/// must not compete on equal terms with the decision path; the queue absorbs
/// bursts and the worker catches up when the CPU is less busy.
const WORKER_NICE: libc::c_int = 10;

fn lower_priority() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its integer arguments. On Linux,
    // PRIO_PROCESS with a thread id sets that thread's nice value.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICE) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower receipt worker priority");
    }
}

fn process_batch(
    conn: &Connection,
    out_dir: &Path,
    key_of: &KeyLookup,
) -> Result<usize, ReceiptError> {
    process_batch_until(conn, out_dir, key_of, &AtomicBool::new(false))
}

fn process_batch_until(
    conn: &Connection,
    out_dir: &Path,
    key_of: &KeyLookup,
    stop: &AtomicBool,
) -> Result<usize, ReceiptError> {
    let rows: Vec<(i64, String, String, i64)> = {
        let mut st = conn
            .prepare_cached(
                "SELECT id, call_id, claims, attempts FROM receipt_queue
                 WHERE state = 'pending' ORDER BY id LIMIT ?1",
            )
            .map_err(store("fetch_pending"))?;
        let it = st
            .query_map(params![BATCH], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(store("fetch_pending"))?;
        it.collect::<Result<_, _>>()
            .map_err(store("fetch_pending"))?
    };
    let mut progressed = 0;
    for (id, call_id, claims_json, attempts) in rows {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match render_one(out_dir, &claims_json, key_of) {
            Ok(path) => {
                conn.execute(
                    "UPDATE receipt_queue SET state = 'done', attempts = attempts + 1, last_error = NULL,
                     done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                    params![id],
                )
                .map_err(store("mark_done"))?;
                tracing::debug!(call_id, path = %path.display(), "receipt rendered");
                progressed += 1;
            }
            Err((reason, detail, permanent)) => {
                let give_up = permanent || attempts + 1 >= MAX_ATTEMPTS;
                conn.execute(
                    "UPDATE receipt_queue SET attempts = attempts + 1, last_error = ?2,
                     state = CASE WHEN ?3 THEN 'failed' ELSE state END WHERE id = ?1",
                    params![id, format!("{reason}: {detail}"), give_up],
                )
                .map_err(store("mark_failed"))?;
                tracing::warn!(
                    call_id,
                    reason,
                    detail,
                    gave_up = give_up,
                    "receipt not rendered"
                );
                if give_up {
                    progressed += 1;
                }
            }
        }
    }
    Ok(progressed)
}

/// Renders one queued receipt; errors are (reason, detail, permanent).
fn render_one(
    out_dir: &Path,
    claims_json: &str,
    key_of: &KeyLookup,
) -> Result<PathBuf, (&'static str, String, bool)> {
    let claims: ReceiptClaims = serde_json::from_str(claims_json)
        .map_err(|e| ("bad_queued_claims", e.to_string(), true))?;
    let key = key_of(&claims.operator).ok_or_else(|| {
        (
            "operator_key_unknown",
            format!("no key for operator {}", claims.operator),
            true,
        )
    })?;
    let png = seal(&key, &claims).map_err(|e| (e.reason_code(), e.to_string(), true))?;
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
