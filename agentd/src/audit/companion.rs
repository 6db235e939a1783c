//! Rows stored in the audit batch's own transaction, beside the audit row
//! they follow from (a receipt's sealed claims and tag): one commit makes
//! both durable, so an allow never needs a second transaction elsewhere.
use rusqlite::Connection;

use super::Committed;

/// Something stored in the same transaction as its audit row, made from the
/// row once it is sealed (its seq, hash and timestamp are known only then).
pub trait Companion: Send {
    /// Stores the companion of `row` on the writer's connection, inside the
    /// batch's transaction. An error leaves the audit row committed and is
    /// reported to whoever appended it ([`Committed::companion_error`]).
    fn store(&self, conn: &Connection, row: &Committed) -> rusqlite::Result<()>;
}

/// A companion that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanionError {
    /// Its index in the list given to the append.
    pub index: usize,
    /// What SQLite said.
    pub message: String,
}

/// Stores the companions of `row` in order; stops at the first error.
pub(super) fn store_all(
    conn: &Connection,
    companions: &[Box<dyn Companion>],
    row: &Committed,
) -> Option<CompanionError> {
    companions.iter().enumerate().find_map(|(index, c)| {
        c.store(conn, row).err().map(|e| CompanionError {
            index,
            message: e.to_string(),
        })
    })
}
