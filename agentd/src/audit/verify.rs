//! Offline verification of a chain of records against signed checkpoints.
//!
//! [`ChainVerifier`] is pure: it is fed records in the order they are read
//! (by seq from the database, by line from an export) and knows nothing of
//! files. It names the first bad sequence number it can prove.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::record::{Record, GENESIS_HASH};
use super::store::{self, StoreError};

/// Evidence that the log was altered, with the first bad seq it proves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    /// A row's stored hash does not match its fields (edited row).
    #[error("seq {seq}: row_hash_mismatch: the stored hash does not match the row's fields (row edited)")]
    RowHashMismatch { seq: u64 },
    /// A row does not link to the one before it.
    #[error("seq {seq}: prev_hash_mismatch: prev_hash is not the hash of seq {} (a row was edited, removed or moved)", seq.saturating_sub(1))]
    PrevHashMismatch { seq: u64 },
    /// A sequence number is missing.
    #[error("seq {expected}: seq_gap: the next row found is seq {found} (rows deleted)")]
    SeqGap { expected: u64, found: u64 },
    /// A sequence number repeats or goes backwards.
    #[error(
        "seq {found}: seq_out_of_order: it follows seq {previous} (rows reordered or duplicated)"
    )]
    SeqOutOfOrder { previous: u64, found: u64 },
    /// A row or line cannot be decoded.
    #[error("seq {seq}: malformed_record: {message}")]
    MalformedRecord { seq: u64, message: String },
    /// A checkpoint's signature is not valid for the given key (forged).
    #[error("seq {count}: checkpoint_signature_invalid: the checkpoint for {count} rows is not signed by this key (forged)")]
    CheckpointSignatureInvalid { count: u64 },
    /// A validly signed checkpoint disagrees with the row it covers.
    #[error("seq {count}: checkpoint_head_mismatch: the signed checkpoint's head hash differs from row {count}'s hash (rows rewritten)")]
    CheckpointHeadMismatch { count: u64 },
    /// Rows a signed checkpoint covers are gone from the end.
    #[error("seq {}: truncated_tail: a signed checkpoint covers {checkpoint_count} rows but the log ends at seq {last_seq}", last_seq + 1)]
    TruncatedTail {
        last_seq: u64,
        checkpoint_count: u64,
    },
    /// The log starts after seq 1 without a signed checkpoint anchoring it.
    #[error("seq {first_seq}: unanchored_prefix: the log starts at seq {first_seq} but no valid checkpoint covers seq {} with this row's prev_hash", first_seq - 1)]
    UnanchoredStart { first_seq: u64 },
}

impl Finding {
    /// The first sequence number shown to be bad.
    pub fn seq(&self) -> u64 {
        match self {
            Finding::RowHashMismatch { seq }
            | Finding::PrevHashMismatch { seq }
            | Finding::MalformedRecord { seq, .. } => *seq,
            Finding::SeqGap { expected, .. } => *expected,
            Finding::SeqOutOfOrder { found, .. } => *found,
            Finding::CheckpointSignatureInvalid { count }
            | Finding::CheckpointHeadMismatch { count } => *count,
            Finding::TruncatedTail { last_seq, .. } => last_seq + 1,
            Finding::UnanchoredStart { first_seq } => *first_seq,
        }
    }

    /// Stable snake_case reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::RowHashMismatch { .. } => "row_hash_mismatch",
            Finding::PrevHashMismatch { .. } => "prev_hash_mismatch",
            Finding::SeqGap { .. } => "seq_gap",
            Finding::SeqOutOfOrder { .. } => "seq_out_of_order",
            Finding::MalformedRecord { .. } => "malformed_record",
            Finding::CheckpointSignatureInvalid { .. } => "checkpoint_signature_invalid",
            Finding::CheckpointHeadMismatch { .. } => "checkpoint_head_mismatch",
            Finding::TruncatedTail { .. } => "truncated_tail",
            Finding::UnanchoredStart { .. } => "unanchored_prefix",
        }
    }
}

/// What a passing verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows checked.
    pub records: u64,
    /// First and last seq present (None when empty).
    pub first_seq: Option<u64>,
    /// Last seq present.
    pub last_seq: Option<u64>,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// Highest seq covered by a valid checkpoint that matched its row.
    pub anchored_through: u64,
    /// Rows after the newest checkpoint: their truncation would not show.
    pub unanchored_tail: u64,
}

/// Errors verifying a file: either tampering evidence or an unreadable input.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log was altered.
    #[error("audit log verification FAILED at {0}")]
    Tampered(Finding),
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The export file could not be read.
    #[error("cannot read export {path}: {source}")]
    ExportRead {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl VerifyError {
    /// The tampering evidence, if that is what this is.
    pub fn finding(&self) -> Option<&Finding> {
        match self {
            VerifyError::Tampered(f) => Some(f),
            _ => None,
        }
    }
}

/// Streaming chain check. Feed records in read order, then [`finish`](Self::finish).
pub struct ChainVerifier {
    /// Validly signed checkpoints by count.
    valid: BTreeMap<u64, Vec<Checkpoint>>,
    forged_min: Option<u64>,
    checkpoints: u64,
    last: Option<(u64, String)>,
    first_seq: Option<u64>,
    records: u64,
    anchored_through: u64,
    finding: Option<Finding>,
}

impl ChainVerifier {
    /// Starts a verification against `key` with every checkpoint known
    /// (stored, exported, or held elsewhere).
    pub fn new(key: &VerifyingKey, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
        let mut valid: BTreeMap<u64, Vec<Checkpoint>> = BTreeMap::new();
        let mut forged_min: Option<u64> = None;
        let mut n = 0;
        for cp in checkpoints {
            n += 1;
            if cp.signature_is_valid(key) {
                valid.entry(cp.count).or_default().push(cp);
            } else {
                forged_min = Some(forged_min.map_or(cp.count, |m| m.min(cp.count)));
            }
        }
        Self {
            valid,
            forged_min,
            checkpoints: n,
            last: None,
            first_seq: None,
            records: 0,
            anchored_through: 0,
            finding: None,
        }
    }

    /// Whether a finding already stopped the chain walk.
    pub fn failed(&self) -> bool {
        self.finding.is_some()
    }

    /// Checks the next record. Returns false once the chain is proven bad.
    pub fn push(&mut self, record: Result<Record, (u64, String)>) -> bool {
        if self.finding.is_some() {
            return false;
        }
        let r = match record {
            Ok(r) => r,
            Err((seq, message)) => {
                self.finding = Some(Finding::MalformedRecord { seq, message });
                return false;
            }
        };
        if let Some(f) = self.check(&r) {
            self.finding = Some(f);
            return false;
        }
        self.records += 1;
        self.first_seq.get_or_insert(r.seq);
        self.last = Some((r.seq, r.hash));
        true
    }

    fn check(&mut self, r: &Record) -> Option<Finding> {
        match &self.last {
            None if r.seq == 0 => {
                return Some(Finding::MalformedRecord {
                    seq: 0,
                    message: "seq 0 does not exist; the first row is seq 1".into(),
                })
            }
            None if r.seq == 1 => {
                if r.prev_hash != GENESIS_HASH {
                    return Some(Finding::PrevHashMismatch { seq: 1 });
                }
            }
            None => {
                // A pruned log: the first row must continue a signed head.
                let anchored = self
                    .valid
                    .get(&(r.seq - 1))
                    .is_some_and(|cps| cps.iter().any(|c| c.head_hash == r.prev_hash));
                if !anchored {
                    return Some(Finding::UnanchoredStart { first_seq: r.seq });
                }
                self.anchored_through = r.seq - 1;
            }
            Some((prev_seq, prev_hash)) => {
                if r.seq <= *prev_seq {
                    return Some(Finding::SeqOutOfOrder {
                        previous: *prev_seq,
                        found: r.seq,
                    });
                }
                if r.seq != prev_seq + 1 {
                    return Some(Finding::SeqGap {
                        expected: prev_seq + 1,
                        found: r.seq,
                    });
                }
                if r.prev_hash != *prev_hash {
                    return Some(Finding::PrevHashMismatch { seq: r.seq });
                }
            }
        }
        if !r.hash_is_valid() {
            return Some(Finding::RowHashMismatch { seq: r.seq });
        }
        if let Some(cps) = self.valid.get(&r.seq) {
            if cps.iter().any(|c| c.head_hash != r.hash) {
                return Some(Finding::CheckpointHeadMismatch { count: r.seq });
            }
            self.anchored_through = r.seq;
        }
        None
    }

    /// Ends the walk: the earliest of chain, forgery and truncation findings.
    pub fn finish(self) -> Result<VerifyReport, Finding> {
        let last_seq = self.last.as_ref().map_or(0, |(s, _)| *s);
        let mut findings: Vec<Finding> = Vec::new();
        // A walk stopped early has not seen the real end: no truncation verdict.
        let walked_to_end = self.finding.is_none();
        if let Some(f) = self.finding {
            findings.push(f);
        }
        if let Some(count) = self.forged_min {
            findings.push(Finding::CheckpointSignatureInvalid { count });
        }
        if let Some((&count, _)) = self.valid.iter().next_back() {
            if walked_to_end && count > last_seq {
                findings.push(Finding::TruncatedTail {
                    last_seq,
                    checkpoint_count: count,
                });
            }
        }
        if let Some(first) = findings.into_iter().min_by_key(|f| f.seq()) {
            return Err(first);
        }
        Ok(VerifyReport {
            records: self.records,
            first_seq: self.first_seq,
            last_seq: self.last.map(|(s, _)| s),
            checkpoints: self.checkpoints,
            anchored_through: self.anchored_through,
            unanchored_tail: last_seq - self.anchored_through.min(last_seq),
        })
    }
}

/// Verifies a database file (opened read-only, read in one snapshot).
pub fn verify_db(
    path: &Path,
    key: &VerifyingKey,
    extra_checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    let conn = store::open_ro(path)?;
    verify_conn(&conn, path, key, extra_checkpoints)
}

/// Verifies through an open connection, inside one read transaction.
pub fn verify_conn(
    conn: &rusqlite::Connection,
    path: &Path,
    key: &VerifyingKey,
    extra_checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    let in_tx = !conn.is_autocommit();
    if !in_tx {
        conn.execute_batch("BEGIN")
            .map_err(store::sql(path, "begin read"))?;
    }
    let result = (|| {
        let mut cps = store::checkpoints(conn, path)?;
        cps.extend_from_slice(extra_checkpoints);
        let mut v = ChainVerifier::new(key, cps);
        let q = format!(
            "SELECT {} FROM audit_records ORDER BY seq",
            store::RECORD_COLUMNS
        );
        let mut stmt = conn
            .prepare(&q)
            .map_err(store::sql(path, "prepare verify"))?;
        let rows = stmt
            .query_map([], store::record_from_row)
            .map_err(store::sql(path, "read records"))?;
        for row in rows {
            let row = row.map_err(store::sql(path, "read records"))?;
            if !v.push(row) {
                break;
            }
        }
        v.finish().map_err(VerifyError::Tampered)
    })();
    if !in_tx {
        let _ = conn.execute_batch("COMMIT");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEvent, RecordKind};
    use ed25519_dalek::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn chain(n: u64) -> Vec<Record> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let r = Record::seal(
                    seq,
                    "t".into(),
                    AuditEvent::new(RecordKind::Admin, "x"),
                    prev.clone(),
                );
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn run(records: Vec<Record>, cps: Vec<Checkpoint>) -> Result<VerifyReport, Finding> {
        let mut v = ChainVerifier::new(&key().verifying_key(), cps);
        for r in records {
            if !v.push(Ok(r)) {
                break;
            }
        }
        v.finish()
    }

    fn cp(records: &[Record], count: u64) -> Checkpoint {
        let head = if count == 0 {
            GENESIS_HASH.to_owned()
        } else {
            records[count as usize - 1].hash.clone()
        };
        Checkpoint::sign(&key(), count, &head, "t".into()).unwrap()
    }

    #[test]
    fn empty_log() {
        let rep = run(vec![], vec![]).unwrap();
        assert_eq!(rep.records, 0);
        let c = chain(3);
        let err = run(vec![], vec![cp(&c, 3)]).unwrap_err();
        assert_eq!(
            err,
            Finding::TruncatedTail {
                last_seq: 0,
                checkpoint_count: 3
            }
        );
    }

    #[test]
    fn anchoring_and_unanchored_tail_are_reported() {
        let c = chain(10);
        let rep = run(c.clone(), vec![cp(&c, 4), cp(&c, 7)]).unwrap();
        assert_eq!(rep.anchored_through, 7);
        assert_eq!(rep.unanchored_tail, 3);
        // A pruned start anchored at 4 verifies; at 5 it does not.
        let rep = run(c[4..].to_vec(), vec![cp(&c, 4)]).unwrap();
        assert_eq!(rep.first_seq, Some(5));
        let err = run(c[5..].to_vec(), vec![cp(&c, 4)]).unwrap_err();
        assert_eq!(err, Finding::UnanchoredStart { first_seq: 6 });
    }

    #[test]
    fn duplicate_and_backward_seqs() {
        let c = chain(5);
        let mut dup = c.clone();
        dup.insert(3, c[2].clone());
        assert_eq!(
            run(dup, vec![]).unwrap_err(),
            Finding::SeqOutOfOrder {
                previous: 3,
                found: 3
            }
        );
    }

    #[test]
    fn first_row_must_start_from_genesis() {
        let mut c = chain(2);
        c[0] = Record::seal(
            1,
            "t".into(),
            AuditEvent::new(RecordKind::Admin, "x"),
            "1".repeat(64),
        );
        assert_eq!(
            run(c, vec![]).unwrap_err(),
            Finding::PrevHashMismatch { seq: 1 }
        );
    }

    #[test]
    fn the_earliest_finding_wins() {
        let c = chain(10);
        let mut edited = c.clone();
        edited[7].event.action = "y".into(); // seq 8
        let mut forged = cp(&c, 3);
        forged.timestamp = "u".into(); // signature no longer matches: seq 3
        let err = run(edited.clone(), vec![forged]).unwrap_err();
        assert_eq!(err, Finding::CheckpointSignatureInvalid { count: 3 });
        let err = run(edited, vec![cp(&c, 9)]).unwrap_err();
        assert_eq!(err, Finding::RowHashMismatch { seq: 8 });
    }
}
