//! The dedicated writer thread: assigns seq and chain hashes, commits
//! concurrent appends together (group commit) and writes checkpoints.
//!
//! One thread owns the connection, so the chain head lives in memory and
//! never races; a batch is everything queued while the last commit ran.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rusqlite::Connection;

use super::checkpoint::Checkpoint;
use super::companion::{self, Companion};
use super::record::{AuditEvent, Record, RecordKind};
use super::store;
use super::timefmt::now_rfc3339_micros;
use super::{AuditError, Committed};

/// Most rows committed in one transaction; bounds a batch's latency.
pub const MAX_BATCH: usize = 4096;

/// Longest a commit waits for announced rows ([`super::AuditLog::announce`])
/// to arrive. A commit costs about as much for one row as for eight (the
/// b-trees' last pages are written whole), so concurrent calls that share
/// one commit each pay a fraction of it; a lone call is never held.
pub const MAX_GATHER: Duration = Duration::from_micros(200);

/// Where an append's outcome goes.
pub(crate) enum Reply {
    /// An async caller awaiting a oneshot.
    Async(tokio::sync::oneshot::Sender<Result<Committed, AuditError>>),
    /// A blocking caller parked on a channel.
    Blocking(SyncSender<Result<Committed, AuditError>>),
}

impl Reply {
    fn send(self, r: Result<Committed, AuditError>) {
        // A caller that gave up waiting is not an error of the log.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(r);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Work for the writer thread.
// Appends are nearly all the traffic; boxing them would add an allocation per row.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Append one event (and its companions, same transaction); reply once
    /// it is committed.
    Append {
        event: AuditEvent,
        companions: Vec<Box<dyn Companion>>,
        reply: Reply,
    },
    /// Write a checkpoint now (if anything is new) and reply with it.
    Checkpoint {
        reply: SyncSender<Result<Option<Checkpoint>, AuditError>>,
    },
    /// Append the close record, write a final checkpoint and stop.
    Shutdown {
        reply: SyncSender<Result<(), AuditError>>,
    },
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub conn: Connection,
    pub path: PathBuf,
    pub key: SigningKey,
    /// Seq the next record gets.
    pub next_seq: u64,
    /// Hash of record `next_seq - 1` (genesis when empty).
    pub head_hash: String,
    /// `count` of the newest checkpoint written.
    pub checkpointed: u64,
    pub interval: Duration,
    /// Counters shared with [`super::AuditLog::stats`].
    pub stats: Arc<StatsCounters>,
    /// The seq of the newest committed row, for live readers
    /// ([`super::AuditLog::subscribe`]); one store per batch, no copy of
    /// the rows, so a reader never slows the writer.
    pub committed: tokio::sync::watch::Sender<u64>,
    /// Rows announced and not yet sent: the batch waits for them.
    pub announced: Arc<AtomicUsize>,
}

/// Running totals of the writer, readable from any thread.
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    pub rows: AtomicU64,
    pub commits: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Commit times per bucket of [`COMMIT_BUCKETS_US`] (the last: above all).
    pub commit_buckets: [AtomicU64; COMMIT_BUCKETS_US.len() + 1],
    /// Sum of commit times, microseconds.
    pub commit_us_sum: AtomicU64,
}

/// Upper bounds (µs) of the commit-time buckets `AuditLog::stats` reports.
pub const COMMIT_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

impl StatsCounters {
    fn observe_commit(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = COMMIT_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(COMMIT_BUCKETS_US.len());
        self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.commit_us_sum.fetch_add(us, Ordering::Relaxed);
    }
}

impl Writer {
    /// Runs until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let mut last_cp = Instant::now();
        let mut events: Vec<(AuditEvent, Vec<Box<dyn Companion>>)> = Vec::with_capacity(256);
        let mut replies: Vec<Reply> = Vec::with_capacity(256);
        // Control commands run after the batch queued before them is committed.
        let mut checkpoint_replies = Vec::new();
        let mut shutdown_reply = None;
        loop {
            let wait = self.interval.saturating_sub(last_cp.elapsed());
            let first = match rx.recv_timeout(wait) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint_logged();
                    last_cp = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without shutdown(): still close cleanly.
                    let _ = self.close();
                    return;
                }
            };
            let mut next = Some(first);
            let gather_until = Instant::now() + MAX_GATHER;
            loop {
                while let Some(cmd) = next.take() {
                    match cmd {
                        Command::Append {
                            event,
                            companions,
                            reply,
                        } => {
                            events.push((event, companions));
                            replies.push(reply);
                        }
                        Command::Checkpoint { reply } => checkpoint_replies.push(reply),
                        Command::Shutdown { reply } => shutdown_reply = Some(reply),
                    }
                    if events.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                // Announced rows on their way join this batch.
                let left = gather_until.saturating_duration_since(Instant::now());
                if events.len() >= MAX_BATCH
                    || shutdown_reply.is_some()
                    || left.is_zero()
                    || self.announced.load(Ordering::SeqCst) == 0
                {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(cmd) => next = Some(cmd),
                    Err(_) => break,
                }
            }
            if !events.is_empty() {
                self.commit_batch(&mut events, &mut replies);
            }
            if last_cp.elapsed() >= self.interval {
                self.checkpoint_logged();
                last_cp = Instant::now();
            }
            for reply in checkpoint_replies.drain(..) {
                let _ = reply.send(self.checkpoint());
                last_cp = Instant::now();
            }
            if let Some(reply) = shutdown_reply.take() {
                let _ = reply.send(self.close());
                return;
            }
        }
    }

    /// Commits `batch` in one transaction and answers every caller.
    /// On failure nothing of the batch is kept and every caller gets an error.
    fn commit_batch(
        &mut self,
        events: &mut Vec<(AuditEvent, Vec<Box<dyn Companion>>)>,
        replies: &mut Vec<Reply>,
    ) {
        let start_seq = self.next_seq;
        let start_head = self.head_hash.clone();
        let started = Instant::now();
        let mut committed = Vec::with_capacity(events.len());
        let result = (|| -> rusqlite::Result<()> {
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            // One statement lookup per batch, not per row.
            let mut insert = self.conn.prepare_cached(store::INSERT_RECORD_SQL)?;
            for (event, companions) in events.drain(..) {
                let record = Record::seal(
                    self.next_seq,
                    now_rfc3339_micros(),
                    event,
                    std::mem::take(&mut self.head_hash),
                );
                store::insert_record_with(&mut insert, &record)?;
                self.next_seq += 1;
                let mut row = Committed {
                    seq: record.seq,
                    hash: record.hash.clone(),
                    timestamp: record.timestamp,
                    companion_error: None,
                };
                row.companion_error = companion::store_all(&self.conn, &companions, &row);
                committed.push(row);
                self.head_hash = record.hash;
            }
            drop(insert);
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.stats.observe_commit(started.elapsed());
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .rows
                    .fetch_add(committed.len() as u64, Ordering::Relaxed);
                for (reply, c) in replies.drain(..).zip(committed) {
                    reply.send(Ok(c));
                }
                self.committed.send_replace(self.next_seq - 1);
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                events.clear();
                self.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                self.next_seq = start_seq;
                self.head_hash = start_head;
                tracing::error!(path = %self.path.display(), rows = replies.len(), error = %e,
                    "audit commit failed; the calls are denied");
                for reply in replies.drain(..) {
                    reply.send(Err(AuditError::CommitFailed {
                        path: self.path.clone(),
                        message: e.to_string(),
                    }));
                }
            }
        }
    }

    fn checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(path = %self.path.display(), error = %e, "audit checkpoint failed");
        }
    }

    /// Signs and stores a checkpoint of the current head if it moved.
    pub fn checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let count = self.next_seq - 1;
        if count == self.checkpointed {
            return Ok(None);
        }
        let cp = Checkpoint::sign(&self.key, count, &self.head_hash, now_rfc3339_micros())?;
        store::insert_checkpoint(&self.conn, &cp).map_err(|e| AuditError::CommitFailed {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.checkpointed = count;
        tracing::debug!(count, head = %cp.head_hash, "audit checkpoint written");
        Ok(Some(cp))
    }

    /// Appends the close record and writes the final checkpoint.
    fn close(&mut self) -> Result<(), AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut ev = AuditEvent::new(RecordKind::Lifecycle, "audit_close");
        ev.reason_code = "clean_shutdown".into();
        self.commit_batch(&mut vec![(ev, Vec::new())], &mut vec![Reply::Blocking(tx)]);
        let closed = rx.recv().unwrap_or(Err(AuditError::Closed));
        self.checkpoint()?;
        closed.map(|_| ())
    }
}
