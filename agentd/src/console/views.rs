//! What the console's pages show besides the stream: one call end to end,
//! the chain's state, agents with their modes and live grants, and counts
//! for the charts. Each reads the audit database read-only (off the async
//! runtime) and reuses the code the CLI uses: `explain` for the checks,
//! `audit::verify_db` for the chain, `receipt::verify_with_claims` for
//! receipts.
use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::filter::RowView;
use crate::audit::store::{self, StoreError};
use crate::audit::{Checkpoint, Record, RecordKind};
use crate::explain::Explanation;
use crate::policy::schema::GrantTemplate;
use crate::receipt::{ExactCheck, ReceiptClaims};

/// Most rows of one kind a call view lists (a call that claimed its grant
/// in a loop can have many kernel rows).
const MAX_CALL_ROWS: usize = 500;

/// The message that authorised a call.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Its audit row.
    pub row: RowView,
    /// `verified` when its signature checked, else the reason code
    /// (`unsigned_message`, `signature_mismatch`, …).
    pub signature: String,
}

/// The grant of an allowed call.
#[derive(Debug, Clone, Serialize)]
pub struct GrantView {
    /// The policy's grant template for the action (placeholders such as
    /// `{arg.command}` filled from the call's arguments at decision time).
    pub template: Option<GrantTemplate>,
    /// Whether the enforcer still holds it (pending or bound).
    pub live: bool,
    /// The agent it is installed for, while live.
    pub agent: Option<String>,
}

/// A call's receipt and what verifying it found.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptView {
    /// `verified`, `failed`, `pending` (not rendered yet), `unavailable`
    /// (rendering failed: see `detail`) or `none` (denied calls have none).
    pub state: String,
    /// The exact check: `pass`, `missing` or the failure's reason code.
    pub exact: Option<String>,
    /// The watermark check passed.
    pub watermark: Option<bool>,
    /// Watermark bit error rate.
    pub bit_error_rate: Option<f32>,
    /// The receipt's own claims name this call's decision row.
    pub claims_match_row: Option<bool>,
    /// More about a failure.
    pub detail: Option<String>,
    /// Where the page loads the image from.
    pub image: Option<String>,
}

/// One call end to end.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// Tool-call id.
    pub call_id: String,
    /// The gateway's decision row (the newest, if a runtime asked twice).
    pub decision: Option<RowView>,
    /// Every gateway row of the call (normally one).
    pub decisions: Vec<RowView>,
    /// The message whose active-message id the call echoed.
    pub message: Option<MessageView>,
    /// Which check decided, and why (the `agentctl explain` logic).
    pub explanation: Option<Explanation>,
    /// The grant, for an allowed call.
    pub grant: Option<GrantView>,
    /// Kernel rows of processes bound to the call or claiming its grant.
    pub kernel: Vec<RowView>,
    /// The receipt.
    pub receipt: ReceiptView,
}

/// Rows of the call, oldest first: (gateway rows, kernel rows).
pub fn call_rows(
    conn: &Connection,
    path: &Path,
    call_id: &str,
) -> Result<(Vec<Record>, Vec<Record>), StoreError> {
    let q = format!(
        "SELECT {} FROM audit_records WHERE call_id = ?1 ORDER BY seq LIMIT {}",
        store::RECORD_COLUMNS,
        MAX_CALL_ROWS * 2
    );
    let rows = query(conn, path, &q, rusqlite::params![call_id])?;
    let (gw, k): (Vec<Record>, Vec<Record>) = rows
        .into_iter()
        .partition(|r| r.event.kind != RecordKind::Kernel);
    Ok((gw, k.into_iter().take(MAX_CALL_ROWS).collect()))
}

/// The message row that handed out `active_message_id`.
pub fn message_row(
    conn: &Connection,
    path: &Path,
    active_message_id: &str,
) -> Result<Option<Record>, StoreError> {
    if active_message_id.is_empty() {
        return Ok(None);
    }
    let q = format!(
        "SELECT {} FROM audit_records WHERE kind = 'message' AND active_message_id = ?1 ORDER BY seq LIMIT 1",
        store::RECORD_COLUMNS
    );
    Ok(query(conn, path, &q, rusqlite::params![active_message_id])?
        .into_iter()
        .next())
}

/// Audit records a query over `store::RECORD_COLUMNS` returns; a row
/// that does not parse fails the read (`StoreError::Malformed`).
pub(super) fn query(
    conn: &Connection,
    path: &Path,
    q: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Record>, StoreError> {
    let mut stmt = conn
        .prepare_cached(q)
        .map_err(store::sql(path, "prepare read"))?;
    let rows = stmt
        .query_map(params, store::record_from_row)
        .map_err(store::sql(path, "read records"))?;
    let mut out = Vec::new();
    for r in rows {
        match r.map_err(store::sql(path, "read records"))? {
            Ok(r) => out.push(r),
            Err((seq, message)) => {
                return Err(StoreError::Malformed {
                    path: path.to_owned(),
                    seq,
                    message,
                })
            }
        }
    }
    Ok(out)
}

/// The signature status a message row records.
pub fn signature_status(r: &Record) -> String {
    if r.event.decision == "allow" {
        "verified".into()
    } else if r.event.reason_code.is_empty() {
        "unverified".into()
    } else {
        r.event.reason_code.clone()
    }
}

/// The receipt claims an allowed call's decision row binds.
pub fn claims_of(r: &Record) -> ReceiptClaims {
    ReceiptClaims {
        seq: r.seq,
        row_hash: r.hash.clone(),
        operator: r.event.operator.clone(),
        call_id: r.event.call_id.clone(),
        action: r.event.action.clone(),
        timestamp: r.timestamp.clone(),
    }
}

/// Verifies receipt `png` against the decision row `row` under the
/// operator's key.
pub fn check_receipt(png: &[u8], key: &[u8], row: &Record, image: String) -> ReceiptView {
    let claims = claims_of(row);
    match crate::receipt::verify_with_claims(png, key, Some(&claims)) {
        Ok(rep) => {
            let exact = match &rep.exact {
                ExactCheck::Valid => "pass".to_owned(),
                ExactCheck::Missing => "missing".to_owned(),
                ExactCheck::Invalid { reason } => (*reason).to_owned(),
            };
            let matches = rep.document.as_ref().map(|d| d.claims == claims);
            let ok = rep.passed() && matches != Some(false);
            ReceiptView {
                state: if ok { "verified" } else { "failed" }.into(),
                exact: Some(exact),
                watermark: Some(rep.watermark.verified),
                bit_error_rate: rep.watermark.bit_error_rate,
                claims_match_row: matches,
                detail: None,
                image: Some(image),
            }
        }
        Err(e) => ReceiptView {
            state: "failed".into(),
            exact: None,
            watermark: None,
            bit_error_rate: None,
            claims_match_row: None,
            detail: Some(format!("{}: {e}", e.reason_code())),
            image: Some(image),
        },
    }
}

/// A receipt view saying only `state` (and why).
pub fn receipt_state(state: &str, detail: Option<String>) -> ReceiptView {
    ReceiptView {
        state: state.into(),
        exact: None,
        watermark: None,
        bit_error_rate: None,
        claims_match_row: None,
        detail,
        image: None,
    }
}

/// The chain's state.
#[derive(Debug, Clone, Serialize)]
pub struct ChainView {
    /// The whole log verified.
    pub ok: bool,
    /// Rows checked (when it verified).
    pub records: u64,
    /// First seq present.
    pub first_seq: Option<u64>,
    /// Last seq present (verified through this row when `ok`).
    pub last_seq: Option<u64>,
    /// Highest seq a valid checkpoint anchors.
    pub anchored_through: u64,
    /// Rows after the newest checkpoint.
    pub unanchored_tail: u64,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// The newest stored checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// The break, if one was found.
    pub finding: Option<FindingView>,
    /// The log could not be read at all.
    pub error: Option<String>,
    /// Fingerprint of the checkpoint key the log was verified with.
    pub key_fingerprint: String,
}

/// A break in the chain.
#[derive(Debug, Clone, Serialize)]
pub struct FindingView {
    /// First bad seq.
    pub seq: u64,
    /// Stable reason code (`row_hash_mismatch`, …).
    pub code: String,
    /// In words.
    pub message: String,
}

/// Verifies the log at `path` with `key` (the offline verifier's walk).
pub fn chain(path: &Path, key: &ed25519_dalek::VerifyingKey) -> ChainView {
    let last_checkpoint = store::open_ro(path)
        .ok()
        .and_then(|c| store::checkpoints(&c, path).ok())
        .and_then(|v| v.into_iter().last());
    let mut v = ChainView {
        ok: false,
        records: 0,
        first_seq: None,
        last_seq: None,
        anchored_through: 0,
        unanchored_tail: 0,
        checkpoints: 0,
        last_checkpoint,
        finding: None,
        error: None,
        key_fingerprint: crate::audit::checkpoint::fingerprint(key),
    };
    match crate::audit::verify_db(path, key, &[]) {
        Ok(r) => {
            v.ok = true;
            v.records = r.records;
            v.first_seq = r.first_seq;
            v.last_seq = r.last_seq;
            v.anchored_through = r.anchored_through;
            v.unanchored_tail = r.unanchored_tail;
            v.checkpoints = r.checkpoints;
        }
        Err(e) => match e.finding() {
            Some(f) => {
                v.finding = Some(FindingView {
                    seq: f.seq(),
                    code: f.code().into(),
                    message: f.to_string(),
                });
                if let Ok(c) = store::open_ro(path) {
                    if let Ok(Some((lo, hi))) = store::seq_range(&c, path) {
                        v.first_seq = Some(lo);
                        v.last_seq = Some(hi);
                    }
                }
            }
            None => v.error = Some(e.to_string()),
        },
    }
    v
}

/// One agent on the agents page.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    /// Name.
    pub name: String,
    /// `enforce` or `audit-only`.
    pub mode: crate::enforce::Mode,
    /// Processes in its cgroup.
    pub pids: Vec<u32>,
    /// Live grants (call ids).
    pub grants: Vec<String>,
    /// Registered with the enforcer (a cgroup exists).
    pub registered: bool,
    /// Kept in the agents' settings (`agentctl agent add`).
    pub configured: bool,
}

/// Decisions per minute by result, and denials by reason.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Counts {
    /// The minutes shown, oldest first (`2026-12-02T08:14`).
    pub minutes: Vec<String>,
    /// Per decision (`allow`, `deny`, `would_deny`, …): a count per minute.
    pub per_minute: BTreeMap<String, Vec<u64>>,
    /// Denials (and would-be denials) by reason code, most first.
    pub denials_by_reason: Vec<(String, u64)>,
}

/// Counts decisions (gateway, kernel and message rows) since `since`
/// (an RFC 3339 time) over `minutes` minutes starting at `since`.
pub fn counts(
    conn: &Connection,
    path: &Path,
    since_micros: i64,
    minutes: usize,
) -> Result<Counts, StoreError> {
    let since = crate::audit::timefmt::format_micros(since_micros);
    let mut c = Counts::default();
    for m in 0..minutes {
        let t = crate::audit::timefmt::format_micros(since_micros + m as i64 * 60_000_000);
        c.minutes.push(t[..16].to_owned());
    }
    let index: BTreeMap<String, usize> = c
        .minutes
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), i))
        .collect();
    let mut stmt = conn
        .prepare(
            "SELECT substr(timestamp, 1, 16), decision, COUNT(*) FROM audit_records
             WHERE timestamp >= ?1 AND kind IN ('tool_call', 'kernel', 'message')
             GROUP BY 1, 2",
        )
        .map_err(store::sql(path, "prepare counts"))?;
    let rows = stmt
        .query_map([&since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(store::sql(path, "count decisions"))?;
    for row in rows {
        let (minute, decision, n) = row.map_err(store::sql(path, "count decisions"))?;
        if let Some(&i) = index.get(&minute) {
            c.per_minute
                .entry(decision)
                .or_insert_with(|| vec![0; minutes])[i] += n as u64;
        }
    }
    let mut stmt = conn
        .prepare(
            "SELECT reason_code, COUNT(*) FROM audit_records
             WHERE timestamp >= ?1 AND decision IN ('deny', 'would_deny')
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12",
        )
        .map_err(store::sql(path, "prepare counts"))?;
    let rows = stmt
        .query_map([&since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(store::sql(path, "count denials"))?;
    for row in rows {
        c.denials_by_reason
            .push(row.map_err(store::sql(path, "count denials"))?);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};
    use crate::config::Durability;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn call_rows_chain_and_counts_from_a_real_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Durability::Normal).unwrap();
        let mut m = AuditEvent::new(RecordKind::Message, "message");
        m.active_message_id = "am1".into();
        m.decision = "allow".into();
        m.reason_code = "ok".into();
        log.append(m).await.unwrap();
        let mut t = AuditEvent::new(RecordKind::ToolCall, "shell");
        t.active_message_id = "am1".into();
        t.call_id = "c1".into();
        t.decision = "deny".into();
        t.reason_code = "role_not_in_allowlist".into();
        log.append(t).await.unwrap();
        let mut k = AuditEvent::new(RecordKind::Kernel, "exec");
        k.call_id = "c1".into();
        k.decision = "deny".into();
        k.reason_code = "no_grant".into();
        log.append(k).await.unwrap();
        let path = log.db_path().to_owned();
        let conn = store::open_ro(&path).unwrap();
        let (gw, kernel) = call_rows(&conn, &path, "c1").unwrap();
        assert_eq!((gw.len(), kernel.len()), (1, 1));
        let msg = message_row(&conn, &path, "am1").unwrap().unwrap();
        assert_eq!(signature_status(&msg), "verified");
        let v = chain(&path, &log.verifying_key());
        assert!(
            v.ok && v.last_seq == Some(4) && v.finding.is_none(),
            "{v:?}"
        );
        let since = chrono_minus_minutes(5);
        let c = counts(&conn, &path, since, 10).unwrap();
        assert_eq!(c.minutes.len(), 10);
        assert_eq!(c.per_minute["deny"].iter().sum::<u64>(), 2);
        assert_eq!(c.per_minute["allow"].iter().sum::<u64>(), 1);
        assert_eq!(c.denials_by_reason[0].1, 1);
        // Tampering with a row shows as a break at that row.
        drop(conn);
        let rw = rusqlite::Connection::open(&path).unwrap();
        rw.execute_batch(
            "DROP TRIGGER audit_records_no_update;
             UPDATE audit_records SET target = 'edited' WHERE seq = 3;",
        )
        .unwrap();
        let v = chain(&path, &log.verifying_key());
        let f = v.finding.unwrap();
        assert!(!v.ok);
        assert_eq!((f.seq, f.code.as_str()), (3, "row_hash_mismatch"));
    }

    fn chrono_minus_minutes(m: i64) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        now - m * 60_000_000
    }
}
