//! A call's receipt as the daemon issues it, read back from the audit
//! database: the claims and tag sealed in the queue row, and the card's face
//! — the target from the allow's own audit row, hidden if the policy sealed
//! the row with `redact`.
//!
//! The allow path stores nothing for the face but the one redaction flag in
//! the queue row it already inserts: the target is read from the audit row
//! (same database, by primary key) when the card is drawn.
use rusqlite::{params, Connection, OptionalExtension};

use super::{Face, ReceiptClaims, ReceiptError};

/// A sealed receipt and the face its card shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The claims sealed with the allow's audit row.
    pub claims: ReceiptClaims,
    /// Their HMAC tag under the operator's key at decision time (None for
    /// rows queued outside the audit batch).
    pub tag: Option<String>,
    /// Queue state: `pending`, `done` or `failed`.
    pub state: String,
    /// What the card shows besides the claims.
    pub face: Face,
}

/// The target of the allow row the claims name (same seq, call id and row
/// hash); None if there is none (pruned, or a queue used without an audit
/// log, as by tools and tests).
pub fn audit_target(conn: &Connection, claims: &ReceiptClaims) -> Option<String> {
    let found = conn
        .prepare_cached(
            "SELECT target FROM audit_records WHERE seq = ?1 AND call_id = ?2 AND hash = ?3
             AND kind = 'tool_call' AND decision = 'allow'",
        )
        .and_then(|mut st| {
            st.query_row(
                params![claims.seq as i64, claims.call_id, claims.row_hash],
                |r| r.get::<_, String>(0),
            )
            .optional()
        });
    match found {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, call_id = claims.call_id, "no audit row for a receipt's face");
            None
        }
    }
}

/// The face of a sealed receipt: the audit row's target, or nothing when
/// `redact` (or when the row is gone: the card shows `-`).
pub fn face_of(conn: &Connection, claims: &ReceiptClaims, redact: bool) -> Face {
    if redact {
        return Face::of_call("", true);
    }
    Face::of_call(&audit_target(conn, claims).unwrap_or_default(), false)
}

/// One row of the queue as `read` takes it.
struct QueueRow {
    claims: String,
    tag: Option<String>,
    state: String,
    redact: bool,
    last_error: Option<String>,
}

/// A receipt sealed with its audit row and not yet taken by the worker
/// (pending); None where no daemon with the seals table has run.
fn sealed_row(conn: &Connection, call_id: &str) -> rusqlite::Result<Option<QueueRow>> {
    if !crate::audit::store::has_column(conn, "receipt_seals", "seq")? {
        return Ok(None);
    }
    conn.query_row(
        "SELECT claims, tag, redact FROM receipt_seals WHERE call_id = ?1",
        params![call_id],
        |r| {
            Ok(QueueRow {
                claims: r.get(0)?,
                tag: r.get(1)?,
                state: "pending".into(),
                redact: r.get(2)?,
                last_error: None,
            })
        },
    )
    .optional()
}

/// The receipt the daemon sealed for `call_id`. Fails with
/// `receipt_not_found` (no sealed receipt: the call was not allowed, or is
/// unknown) or `receipt_void` (the allow was overturned after its row).
pub fn read(conn: &Connection, call_id: &str) -> Result<Issued, ReceiptError> {
    let store = |source| ReceiptError::Store {
        op: "read_receipt",
        source,
    };
    // A queue no daemon of this version has opened yet has no `redact`
    // column: nothing in it was redacted.
    let has_redact =
        crate::audit::store::has_column(conn, "receipt_queue", "redact").map_err(store)?;
    let sql = if has_redact {
        "SELECT claims, tag, state, redact, last_error FROM receipt_queue WHERE call_id = ?1"
    } else {
        "SELECT claims, tag, state, 0, last_error FROM receipt_queue WHERE call_id = ?1"
    };
    let row = conn
        .query_row(sql, params![call_id], |r| {
            Ok(QueueRow {
                claims: r.get(0)?,
                tag: r.get(1)?,
                state: r.get(2)?,
                redact: r.get(3)?,
                last_error: r.get(4)?,
            })
        })
        .optional()
        .map_err(store)?;
    let row = match row {
        Some(row) => Some(row),
        None => sealed_row(conn, call_id).map_err(store)?,
    };
    let Some(row) = row else {
        return Err(ReceiptError::InvalidClaims {
            reason: "receipt_not_found",
            detail: format!("no receipt was sealed for call {call_id}"),
        });
    };
    if row.state == "void" {
        return Err(ReceiptError::InvalidClaims {
            reason: "receipt_void",
            detail: format!(
                "call {call_id}'s allow was overturned ({})",
                row.last_error.unwrap_or_default()
            ),
        });
    }
    let claims: ReceiptClaims =
        serde_json::from_str(&row.claims).map_err(|e| ReceiptError::InvalidClaims {
            reason: "bad_queued_claims",
            detail: e.to_string(),
        })?;
    let face = face_of(conn, &claims, row.redact);
    Ok(Issued {
        claims,
        tag: row.tag,
        state: row.state,
        face,
    })
}

/// Draws the sealed receipt of `call_id` again, `size` pixels square (a
/// multiple of 256 up to 1024), under the key `key_of` gives for its
/// operator; `redact` hides the target even if the policy did not. At 256
/// pixels it is the daemon's card byte for byte. Fails like [`read`], and
/// with `operator_key_unknown` (no key) or `operator_key_changed` (not the
/// key the receipt was sealed under: the card would be one the row never
/// had).
pub fn render(
    conn: &Connection,
    call_id: &str,
    key_of: impl FnOnce(&str) -> Option<Vec<u8>>,
    size: usize,
    redact: bool,
) -> Result<(Issued, Vec<u8>), ReceiptError> {
    let mut issued = read(conn, call_id)?;
    let operator = &issued.claims.operator;
    let key = key_of(operator).ok_or_else(|| ReceiptError::InvalidClaims {
        reason: "operator_key_unknown",
        detail: format!("no key for operator {operator}"),
    })?;
    if let Some(sealed) = &issued.tag {
        let keys = super::keys::ReceiptKeys::derive(&key)?;
        if !super::claims::tag_matches(&keys, &issued.claims, sealed) {
            return Err(ReceiptError::InvalidClaims {
                reason: "operator_key_changed",
                detail: format!(
                    "not the key call {call_id}'s receipt was sealed under (operator {operator})"
                ),
            });
        }
    }
    if redact {
        issued.face = Face::of_call("", true);
    }
    let png = super::seal_card(&key, &issued.claims, &issued.face, size)?;
    Ok((issued, png))
}
