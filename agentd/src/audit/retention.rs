//! Retention: drop an old prefix of the log, cut exactly at a signed
//! checkpoint so what remains still verifies (its first row's prev_hash is
//! the checkpoint's head).
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::store::{self, StoreError};
use super::timefmt::now_rfc3339_micros;
use super::verify::{self, Finding, VerifyError};
use crate::config::Durability;

/// Errors pruning.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log does not verify; pruning would destroy the evidence.
    #[error("refusing to prune {path}: the log does not verify ({finding})")]
    NotVerified { path: PathBuf, finding: Finding },
    /// No valid checkpoint lies inside the requested prefix.
    #[error("no signed checkpoint below seq {before_seq} that leaves at least one row after it; nothing pruned (checkpoints are written every audit.checkpoint_interval_secs)")]
    NoCheckpoint { before_seq: u64 },
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Rows with seq ≤ this are gone; the log now starts at this + 1.
    pub pruned_through: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// The checkpoint the remaining log is anchored to.
    pub anchor: Checkpoint,
}

/// Deletes every record with seq ≤ the newest valid checkpoint below
/// `before_seq`, after verifying the whole log.
///
/// Safe while agentd runs: the verification reads a snapshot without
/// holding the write lock, and the deletion advances one checkpoint at a
/// time, each step its own short transaction, so appends keep committing and
/// the log verifies after every step.
pub fn prune_before(
    path: &Path,
    key: &VerifyingKey,
    before_seq: u64,
) -> Result<PruneReport, RetentionError> {
    let conn = store::open_rw(path, Durability::Full)?;
    let report = match verify::verify_conn(&conn, path, key, &[]) {
        Ok(r) => r,
        Err(VerifyError::Tampered(finding)) => {
            return Err(RetentionError::NotVerified {
                path: path.to_owned(),
                finding,
            })
        }
        Err(VerifyError::Store(e)) => return Err(e.into()),
        Err(VerifyError::ExportRead { .. }) => unreachable!("no export involved"),
    };
    let (Some(first), Some(last)) = (report.first_seq, report.last_seq) else {
        return Err(RetentionError::NoCheckpoint { before_seq });
    };
    // The chain verified, so every valid checkpoint in range matches its row.
    let mut steps: Vec<Checkpoint> = store::checkpoints(&conn, path)?
        .into_iter()
        .filter(|c| c.count >= first && c.count < before_seq && c.count < last)
        .filter(|c| c.signature_is_valid(key))
        .collect();
    steps.sort_by_key(|c| c.count);
    steps.dedup_by_key(|c| c.count);
    let Some(anchor) = steps.last().cloned() else {
        return Err(RetentionError::NoCheckpoint { before_seq });
    };
    let mut deleted = 0;
    for cp in &steps {
        deleted += prune_step(&conn, path, cp)?;
    }
    tracing::info!(path = %path.display(), pruned_through = anchor.count, deleted, "audit prefix pruned");
    Ok(PruneReport {
        pruned_through: anchor.count,
        deleted,
        anchor,
    })
}

/// One short write transaction: drop the rows up to `cp.count`.
fn prune_step(
    conn: &rusqlite::Connection,
    path: &Path,
    cp: &Checkpoint,
) -> Result<u64, RetentionError> {
    let op = |op| store::sql(path, op);
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(op("begin prune"))?;
    let result = (|| -> Result<u64, RetentionError> {
        // Re-check the cut under the write lock: the row the checkpoint signs is still there.
        match store::record_at(conn, path, cp.count)? {
            Some(r) if r.hash == cp.head_hash => {}
            _ => {
                return Err(RetentionError::NotVerified {
                    path: path.to_owned(),
                    finding: Finding::CheckpointHeadMismatch { count: cp.count },
                })
            }
        }
        conn.execute_batch("DROP TRIGGER IF EXISTS audit_records_no_delete")
            .map_err(op("lift delete guard"))?;
        let deleted = conn
            .execute(
                "DELETE FROM audit_records WHERE seq <= ?1",
                [cp.count as i64],
            )
            .map_err(op("delete prefix"))?;
        conn.execute_batch(&store::guard_sql("audit_records"))
            .map_err(op("restore delete guard"))?;
        conn.execute(
            "INSERT INTO audit_prunes (pruned_through, timestamp) VALUES (?1, ?2)",
            rusqlite::params![cp.count as i64, now_rfc3339_micros()],
        )
        .map_err(op("record prune"))?;
        Ok(deleted as u64)
    })();
    match result {
        Ok(n) => {
            conn.execute_batch("COMMIT").map_err(op("commit prune"))?;
            Ok(n)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
