//! The tamper-evident audit log: one hash-chained row per decision, kernel
//! event and administrative change, committed durably before a call is
//! answered, with signed checkpoints. Format and verification: docs/audit.md.
//!
//! Files: `state_dir/audit.db` (+ `-wal`, `-shm`) and
//! `state_dir/audit-signing.key`, all 0600.
mod appender;
pub mod checkpoint;
pub mod companion;
pub mod export;
pub mod kernel_row;
pub mod line;
pub mod ocsf;
pub mod record;
pub mod retention;
pub mod storage;
pub mod store;
pub mod timefmt;
pub mod verify;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Durability};
use appender::{Command, Reply, StatsCounters, Writer};
pub use appender::{COMMIT_BUCKETS_US, MAX_GATHER};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use companion::{Companion, CompanionError};
pub use export::{export_jsonl, verify_export, ExportError};
pub use line::ExportLine;
pub use record::{clip, AuditEvent, Record, RecordError, RecordKind, GENESIS_HASH};
pub use retention::{prune_before, PruneReport, RetentionError};
pub use store::StoreError;
pub use verify::{verify_db, ChainVerifier, Finding, VerifyError, VerifyReport};

/// Reason code a caller reports when it denies because the audit write failed.
pub const REASON_AUDIT_UNAVAILABLE: &str = "audit_unavailable";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening or reading the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing key could not be loaded or used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The event was refused before reaching the log.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The transaction holding the row did not commit; the row does not exist.
    #[error("audit commit to {path} failed: {message}")]
    CommitFailed { path: PathBuf, message: String },
    /// The writer has stopped (after shutdown, or it died).
    #[error("the audit log is closed")]
    Closed,
    /// The state directory could not be prepared.
    #[error("audit state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// At open, the stored log contradicts its own signed checkpoint or chain.
    #[error("audit log {path} fails its integrity check at seq {seq}: {message}; run `agentctl audit verify`")]
    Tampered {
        path: PathBuf,
        seq: u64,
        message: String,
    },
}

impl AuditError {
    /// Stable reason code for a decision denied because of this error.
    pub fn reason_code(&self) -> &'static str {
        REASON_AUDIT_UNAVAILABLE
    }
}

/// What a successful append returns: the row's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Sequence number of the committed row.
    pub seq: u64,
    /// Hex SHA-256 of the row (see docs/audit.md).
    pub hash: String,
    /// RFC 3339 UTC timestamp with microseconds stored in the row.
    pub timestamp: String,
    /// Why a companion of the row (see [`AuditLog::append_with`]) was not
    /// stored; the row itself is committed.
    #[serde(skip)]
    pub companion_error: Option<CompanionError>,
}

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// SQLite synchronous level (config key `audit.durability`).
    pub durability: Durability,
    /// Time between signed checkpoints (config key `audit.checkpoint_interval_secs`).
    pub checkpoint_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// Totals of the writer since open (for benchmarks and health reports).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendStats {
    /// Rows committed.
    pub rows: u64,
    /// Transactions committed (rows / commits = mean group-commit batch).
    pub commits: u64,
    /// Transactions that failed (their calls were denied).
    pub failed_commits: u64,
    /// Committed transactions per commit-time bucket: one count per bound
    /// of [`COMMIT_BUCKETS_US`], then those above the last (not cumulative).
    pub commit_buckets: [u64; COMMIT_BUCKETS_US.len() + 1],
    /// Sum of commit times, microseconds.
    pub commit_us_sum: u64,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    stats: Arc<StatsCounters>,
    db_path: PathBuf,
    verifying_key: VerifyingKey,
    public_key_pem: String,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    wal: Mutex<wal::WalCheckpointer>,
    storage: std::sync::RwLock<storage::Storage>,
    committed: tokio::sync::watch::Receiver<u64>,
    /// Appends announced and not yet sent (see [`AuditLog::announce`]).
    announced: Arc<AtomicUsize>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut t) = self.thread.lock() {
            if let Some(handle) = t.take() {
                let (reply, rx) = mpsc::sync_channel(1);
                if self.tx.send(Command::Shutdown { reply }).is_ok() {
                    let _ = rx.recv();
                }
                let _ = handle.join();
            }
        }
        if let Ok(mut w) = self.wal.lock() {
            w.stop();
        }
    }
}

/// Handle to the audit log. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// A row announced to the writer ([`AuditLog::announce`]); dropping it
/// withdraws the announcement.
#[must_use = "drop it just before the append it announces"]
pub struct Announced(Arc<AtomicUsize>);

impl Drop for Announced {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("db_path", &self.inner.db_path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating if needed) `state_dir/audit.db` with default checkpoint interval.
    pub fn open(state_dir: &Path, durability: Durability) -> Result<Self, AuditError> {
        Self::open_with(
            state_dir,
            AuditOptions {
                durability,
                ..AuditOptions::default()
            },
        )
    }

    /// Opens the log as the config file says (`state_dir`, `audit.*`).
    pub fn open_config(config: &Config) -> Result<Self, AuditError> {
        let log = Self::open_with(
            &config.state_dir,
            AuditOptions {
                durability: config.audit.durability,
                checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_secs),
            },
        )?;
        log.set_storage_limits(
            config.audit.min_free_mb.saturating_mul(1 << 20),
            config.audit.reserve_mb.saturating_mul(1 << 20),
        );
        Ok(log)
    }

    /// Sets the low-space threshold and the reserve size (bytes) of the
    /// log's filesystem (defaults: [`storage::DEFAULT_MIN_FREE`],
    /// [`storage::DEFAULT_RESERVE`]).
    pub fn set_storage_limits(&self, min_free: u64, reserve: u64) {
        let dir = self
            .inner
            .db_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        *self
            .inner
            .storage
            .write()
            .unwrap_or_else(|p| p.into_inner()) = storage::Storage::new(&dir, min_free, reserve);
    }

    /// Whether free space on the log's filesystem is below its threshold:
    /// the gateway then denies what it would allow (`audit_storage_low`),
    /// and those denial rows are still written (the reserve was released
    /// for them).
    pub fn storage_low(&self) -> bool {
        self.inner
            .storage
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .low()
    }

    /// Opens the log with explicit options. Checks the head against the
    /// newest signed checkpoint, then appends a `lifecycle/audit_open` row
    /// whose reason code says whether the previous run closed cleanly.
    pub fn open_with(state_dir: &Path, opts: AuditOptions) -> Result<Self, AuditError> {
        prepare_state_dir(state_dir)?;
        let key = checkpoint::load_or_create_key(state_dir)?;
        let verifying_key = key.verifying_key();
        let path = store::db_path(state_dir);
        let conn = store::open_rw(&path, opts.durability)?;
        let last = store::last_record(&conn, &path)?;
        let cps = store::checkpoints(&conn, &path)?;
        check_head(&conn, &path, last.as_ref(), cps.last(), &verifying_key)?;
        let open_reason = match &last {
            None => "new_log",
            Some(r) if r.event.kind == RecordKind::Lifecycle && r.event.action == "audit_close" => {
                "clean_start"
            }
            Some(_) => "previous_run_unclean",
        };
        let (committed_tx, committed) =
            tokio::sync::watch::channel(last.as_ref().map_or(0, |r| r.seq));
        let writer = Writer {
            conn,
            path: path.clone(),
            key,
            next_seq: last.as_ref().map_or(1, |r| r.seq + 1),
            head_hash: last.map_or_else(|| GENESIS_HASH.to_owned(), |r| r.hash),
            checkpointed: cps.last().map_or(0, |c| c.count),
            interval: opts.checkpoint_interval,
            stats: Arc::new(StatsCounters::default()),
            committed: committed_tx,
            announced: Arc::new(AtomicUsize::new(0)),
        };
        let stats = writer.stats.clone();
        let announced = writer.announced.clone();
        let wal = wal::WalCheckpointer::spawn(&path)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Spawn {
                what: "audit writer",
                source,
            })?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                tx,
                stats,
                db_path: path,
                public_key_pem: checkpoint::public_key_pem(&verifying_key),
                verifying_key,
                thread: Mutex::new(Some(thread)),
                wal: Mutex::new(wal),
                storage: std::sync::RwLock::new(storage::Storage::new(
                    state_dir,
                    storage::DEFAULT_MIN_FREE,
                    storage::DEFAULT_RESERVE,
                )),
                committed,
                announced,
            }),
        };
        let mut ev = AuditEvent::new(RecordKind::Lifecycle, "audit_open");
        ev.reason_code = open_reason.into();
        let c = log.append_blocking(ev)?;
        tracing::info!(path = %log.inner.db_path.display(), seq = c.seq, reason = open_reason,
            durability = ?opts.durability, "audit log open");
        Ok(log)
    }

    /// Appends an event; returns once its row is committed (durable per
    /// `audit.durability`). On error the row does not exist: deny the call
    /// with [`REASON_AUDIT_UNAVAILABLE`].
    pub async fn append(&self, ev: AuditEvent) -> Result<Committed, AuditError> {
        self.append_with(ev, Vec::new()).await
    }

    /// Says a row is coming: the caller is deciding something it will
    /// append. While announced rows are on their way the writer holds its
    /// next commit a little (at most [`MAX_GATHER`]), so
    /// concurrent decisions share one transaction instead of each paying
    /// for its own; a lone caller never waits. Drop the guard just before
    /// appending (or on giving up).
    pub fn announce(&self) -> Announced {
        self.inner.announced.fetch_add(1, Ordering::SeqCst);
        Announced(self.inner.announced.clone())
    }

    /// [`AuditLog::append`], storing `companions` in the same transaction
    /// as the row (made from the sealed row: its seq, hash, timestamp). A
    /// companion that fails to store is reported in
    /// [`Committed::companion_error`]; the row stays committed.
    pub async fn append_with(
        &self,
        ev: AuditEvent,
        companions: Vec<Box<dyn Companion>>,
    ) -> Result<Committed, AuditError> {
        ev.validate()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .tx
            .send(Command::Append {
                event: ev,
                companions,
                reply: Reply::Async(tx),
            })
            .map_err(|_| AuditError::Closed)?;
        rx.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Blocking form of [`AuditLog::append`], for threads outside the runtime.
    /// Must not be called from an async task.
    pub fn append_blocking(&self, ev: AuditEvent) -> Result<Committed, AuditError> {
        ev.validate()?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Command::Append {
                event: ev,
                companions: Vec::new(),
                reply: Reply::Blocking(tx),
            })
            .map_err(|_| AuditError::Closed)?;
        rx.recv().unwrap_or(Err(AuditError::Closed))
    }

    /// Appends `events` in order and waits until each is committed. Queued
    /// back to back, they normally share one transaction (one fsync with
    /// `full`), so a thread draining a queue of events should hand over what
    /// it has with this rather than call [`append_blocking`](Self::append_blocking)
    /// per event. One result per event, in order; seqs ascend in that order.
    /// Must not be called from an async task.
    pub fn append_all_blocking(
        &self,
        events: Vec<AuditEvent>,
    ) -> Vec<Result<Committed, AuditError>> {
        type Waiter = mpsc::Receiver<Result<Committed, AuditError>>;
        let waits: Vec<Result<Waiter, AuditError>> = events
            .into_iter()
            .map(|ev| {
                ev.validate()?;
                let (tx, rx) = mpsc::sync_channel(1);
                self.inner
                    .tx
                    .send(Command::Append {
                        event: ev,
                        companions: Vec::new(),
                        reply: Reply::Blocking(tx),
                    })
                    .map_err(|_| AuditError::Closed)?;
                Ok(rx)
            })
            .collect();
        waits
            .into_iter()
            .map(|w| w.and_then(|rx| rx.recv().unwrap_or(Err(AuditError::Closed))))
            .collect()
    }

    /// Writes a checkpoint now if rows were added since the last one.
    pub fn checkpoint_now(&self) -> Result<Option<Checkpoint>, AuditError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Command::Checkpoint { reply })
            .map_err(|_| AuditError::Closed)?;
        rx.recv().unwrap_or(Err(AuditError::Closed))
    }

    /// SPKI PEM of the Ed25519 checkpoint key (give it to verifiers).
    pub fn public_key_pem(&self) -> String {
        self.inner.public_key_pem.clone()
    }

    /// The Ed25519 checkpoint verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.inner.verifying_key
    }

    /// Rows and transactions committed since open.
    pub fn stats(&self) -> AppendStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.inner.stats;
        AppendStats {
            rows: s.rows.load(Relaxed),
            commits: s.commits.load(Relaxed),
            failed_commits: s.failed_commits.load(Relaxed),
            commit_buckets: std::array::from_fn(|i| s.commit_buckets[i].load(Relaxed)),
            commit_us_sum: s.commit_us_sum.load(Relaxed),
        }
    }

    /// The seq of the newest committed row, updated after every commit:
    /// live readers (the web console's stream) wait on it and read the new
    /// rows from the database themselves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Appends `lifecycle/audit_close`, writes a final checkpoint and stops
    /// the writer. Later appends fail with [`AuditError::Closed`]. Idempotent.
    pub fn shutdown(&self) -> Result<(), AuditError> {
        let handle = match self.inner.thread.lock() {
            Ok(mut t) => t.take(),
            Err(_) => return Err(AuditError::Closed),
        };
        let Some(handle) = handle else {
            return Ok(());
        };
        let (reply, rx) = mpsc::sync_channel(1);
        let result = match self.inner.tx.send(Command::Shutdown { reply }) {
            Ok(()) => rx.recv().unwrap_or(Err(AuditError::Closed)),
            Err(_) => Err(AuditError::Closed),
        };
        let _ = handle.join();
        if let Ok(mut w) = self.inner.wal.lock() {
            w.stop();
        }
        result
    }
}

fn prepare_state_dir(dir: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuditError::StateDir {
            path: dir.to_owned(),
            source,
        })
}

/// Cheap integrity check at open: the head row's own hash, and the newest
/// checkpoint's signature and head against the stored rows. A full check is
/// `agentctl audit verify`.
fn check_head(
    conn: &rusqlite::Connection,
    path: &Path,
    last: Option<&Record>,
    newest_cp: Option<&Checkpoint>,
    key: &VerifyingKey,
) -> Result<(), AuditError> {
    let tampered = |seq, message: String| AuditError::Tampered {
        path: path.to_owned(),
        seq,
        message,
    };
    if let Some(r) = last {
        if !r.hash_is_valid() {
            return Err(tampered(
                r.seq,
                "the last row's hash does not match its fields".into(),
            ));
        }
    }
    let Some(cp) = newest_cp else {
        return Ok(());
    };
    if !cp.signature_is_valid(key) {
        return Err(tampered(
            cp.count,
            "the newest checkpoint's signature is not valid for this log's key".into(),
        ));
    }
    let last_seq = last.map_or(0, |r| r.seq);
    if cp.count > last_seq {
        return Err(tampered(
            last_seq + 1,
            format!(
                "signed checkpoint covers {} rows but the log ends at seq {last_seq} (truncated)",
                cp.count
            ),
        ));
    }
    if cp.count == 0 {
        return Ok(());
    }
    match store::record_at(conn, path, cp.count)? {
        Some(r) if r.hash == cp.head_hash => Ok(()),
        Some(_) => Err(tampered(
            cp.count,
            "row hash differs from the signed checkpoint's head".into(),
        )),
        // Pruned below the newest checkpoint cannot happen: pruning keeps
        // everything after the checkpoint it is anchored to.
        None => Err(tampered(
            cp.count,
            "the row a checkpoint covers is missing".into(),
        )),
    }
}
