//! Central verification: every host's chain in PostgreSQL, checked with the
//! key that host registered and its signed checkpoints. Unlike the local
//! verifier, which stops at the first bad row, this names every finding a
//! security team needs per host: gaps, edited rows, moved or duplicated
//! rows, broken links, checkpoints that do not match, and rows of hosts that
//! never registered. [`verify_host`] is pure; [`load`] reads PostgreSQL.
use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use tokio_postgres::{Client, Row};

use super::conn::PgSettings;
use super::FleetError;
use crate::audit::checkpoint::parse_public_key_pem;
use crate::audit::{AuditEvent, Checkpoint, Record, RecordKind, GENESIS_HASH};

/// The `agentd_audit` columns [`record_of`] reads, in order.
pub const ROW_COLUMNS: &str = "seq, ts, kind, operator, session, active_message_id, call_id, \
    action, target, decision, reason_code, policy_id, latency_us, agent, pid, access, prev_hash, hash";

/// One thing wrong with a host's chain in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum HostFinding {
    /// Rows `from..=to` are missing (deleted, or never shipped).
    Gap { from: u64, to: u64 },
    /// The row's stored hash does not match its fields.
    EditedRow { seq: u64 },
    /// The row links to a previous hash other than row `seq - 1`'s: that
    /// row was rewritten with a fresh hash (or rows were swapped).
    BrokenLink { seq: u64 },
    /// The row at `seq` is the row that belongs at `belongs_at`, moved.
    MovedRow { seq: u64, belongs_at: u64 },
    /// The row at `seq` is a copy of the row at `copy_of`.
    DuplicatedRow { seq: u64, copy_of: u64 },
    /// A row's fields cannot be decoded.
    MalformedRow { seq: u64, message: String },
    /// The host has rows but no registered key.
    UnknownHost { rows: u64 },
    /// The registered key is not an Ed25519 public key PEM.
    UnreadableKey { message: String },
    /// A checkpoint is not signed by the host's key.
    CheckpointForged { count: u64 },
    /// A validly signed checkpoint's head differs from row `count`'s hash.
    CheckpointMismatch { count: u64 },
    /// The witness (a head the host signed) is not signed by its key.
    WitnessForged { count: u64 },
    /// Row `count` differs from the witness's head hash.
    WitnessMismatch { count: u64 },
}

impl HostFinding {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            HostFinding::Gap { .. } => "gap",
            HostFinding::EditedRow { .. } => "edited_row",
            HostFinding::BrokenLink { .. } => "broken_link",
            HostFinding::MovedRow { .. } => "moved_row",
            HostFinding::DuplicatedRow { .. } => "duplicated_row",
            HostFinding::MalformedRow { .. } => "malformed_row",
            HostFinding::UnknownHost { .. } => "unknown_host",
            HostFinding::UnreadableKey { .. } => "unreadable_key",
            HostFinding::CheckpointForged { .. } => "checkpoint_forged",
            HostFinding::CheckpointMismatch { .. } => "checkpoint_mismatch",
            HostFinding::WitnessForged { .. } => "witness_forged",
            HostFinding::WitnessMismatch { .. } => "witness_mismatch",
        }
    }
}

impl std::fmt::Display for HostFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFinding::Gap { from, to } if from == to => write!(f, "gap: seq {from} missing"),
            HostFinding::Gap { from, to } => write!(f, "gap: seq {from}..={to} missing"),
            HostFinding::EditedRow { seq } => {
                write!(f, "edited_row: seq {seq}'s hash does not match its fields")
            }
            HostFinding::BrokenLink { seq } => write!(
                f,
                "broken_link: seq {seq} does not link to seq {} (that row rewritten, or rows swapped)",
                seq.saturating_sub(1)
            ),
            HostFinding::MovedRow { seq, belongs_at } => write!(
                f,
                "moved_row: the row at seq {seq} is seq {belongs_at}'s row (reordered)"
            ),
            HostFinding::DuplicatedRow { seq, copy_of } => write!(
                f,
                "duplicated_row: the row at seq {seq} is a copy of seq {copy_of}"
            ),
            HostFinding::MalformedRow { seq, message } => {
                write!(f, "malformed_row: seq {seq}: {message}")
            }
            HostFinding::UnknownHost { rows } => write!(
                f,
                "unknown_host: {rows} rows from a host that never registered a key"
            ),
            HostFinding::UnreadableKey { message } => {
                write!(f, "unreadable_key: the registered key: {message}")
            }
            HostFinding::CheckpointForged { count } => write!(
                f,
                "checkpoint_forged: the checkpoint for {count} rows is not signed by the host's key"
            ),
            HostFinding::CheckpointMismatch { count } => write!(
                f,
                "checkpoint_mismatch: the signed checkpoint's head differs from seq {count}'s hash"
            ),
            HostFinding::WitnessForged { count } => write!(
                f,
                "witness_forged: the witness for {count} rows is not signed by the host's key"
            ),
            HostFinding::WitnessMismatch { count } => write!(
                f,
                "witness_mismatch: seq {count}'s hash differs from the witness's head"
            ),
        }
    }
}

/// What PostgreSQL holds for one host.
#[derive(Debug, Clone, Default)]
pub struct HostChain {
    /// The host id.
    pub host_id: String,
    /// Its registered public key PEM (None: never registered).
    pub public_key: Option<String>,
    /// Its rows by seq (a row that does not decode: its seq and why).
    pub rows: Vec<Result<Record, (u64, String)>>,
    /// Its checkpoints.
    pub checkpoints: Vec<Checkpoint>,
}

/// The verdict on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The host id.
    pub host_id: String,
    /// Rows found.
    pub rows: u64,
    /// Lowest seq found.
    pub first_seq: Option<u64>,
    /// Highest seq found.
    pub last_seq: Option<u64>,
    /// Checkpoints found.
    pub checkpoints: u64,
    /// Everything wrong, in seq order (empty: the chain verifies).
    pub findings: Vec<HostFinding>,
}

/// Checks one host's chain; `witness` is a checkpoint taken from the host
/// itself (newer than what PostgreSQL holds, perhaps), whose rows must all
/// be there.
pub fn verify_host(chain: &HostChain, witness: Option<&Checkpoint>) -> HostReport {
    let mut findings = Vec::new();
    let key = match &chain.public_key {
        None => {
            findings.push(HostFinding::UnknownHost {
                rows: chain.rows.len() as u64,
            });
            None
        }
        Some(pem) => match parse_public_key_pem(pem) {
            Ok(k) => Some(k),
            Err(e) => {
                findings.push(HostFinding::UnreadableKey {
                    message: e.to_string(),
                });
                None
            }
        },
    };
    let rows: Vec<&Record> = chain.rows.iter().filter_map(|r| r.as_ref().ok()).collect();
    for bad in chain.rows.iter().filter_map(|r| r.as_ref().err()) {
        findings.push(HostFinding::MalformedRow {
            seq: bad.0,
            message: bad.1.clone(),
        });
    }
    let valid_cps: Vec<&Checkpoint> = match &key {
        Some(k) => chain
            .checkpoints
            .iter()
            .filter(|c| c.signature_is_valid(k))
            .collect(),
        None => Vec::new(),
    };
    walk_rows(&rows, &valid_cps, &mut findings);
    check_checkpoints(chain, key.as_ref(), &rows, &mut findings);
    if let (Some(w), Some(k)) = (witness, key.as_ref()) {
        check_witness(w, k, &rows, &mut findings);
    }
    findings.sort_by_key(first_seq_of);
    HostReport {
        host_id: chain.host_id.clone(),
        rows: chain.rows.len() as u64,
        first_seq: chain.rows.iter().map(seq_of).min(),
        last_seq: chain.rows.iter().map(seq_of).max(),
        checkpoints: chain.checkpoints.len() as u64,
        findings,
    }
}

fn seq_of(r: &Result<Record, (u64, String)>) -> u64 {
    match r {
        Ok(r) => r.seq,
        Err((s, _)) => *s,
    }
}

fn first_seq_of(f: &HostFinding) -> u64 {
    match f {
        HostFinding::Gap { from: s, .. }
        | HostFinding::EditedRow { seq: s }
        | HostFinding::BrokenLink { seq: s }
        | HostFinding::MovedRow { seq: s, .. }
        | HostFinding::DuplicatedRow { seq: s, .. }
        | HostFinding::MalformedRow { seq: s, .. }
        | HostFinding::CheckpointForged { count: s }
        | HostFinding::CheckpointMismatch { count: s }
        | HostFinding::WitnessForged { count: s }
        | HostFinding::WitnessMismatch { count: s } => *s,
        HostFinding::UnknownHost { .. } | HostFinding::UnreadableKey { .. } => 0,
    }
}

/// Gaps, edits, moves, copies and broken links along the rows (by seq).
fn walk_rows(rows: &[&Record], valid_cps: &[&Checkpoint], out: &mut Vec<HostFinding>) {
    let links = Links {
        by_hash: rows
            .iter()
            .rev()
            .map(|r| (r.hash.as_str(), r.seq))
            .collect(),
        by_prev: rows
            .iter()
            .rev()
            .map(|r| (r.prev_hash.as_str(), r.seq))
            .collect(),
        hash_at: rows.iter().map(|r| (r.seq, r.hash.as_str())).collect(),
    };
    let mut prev: Option<&Record> = None;
    for r in rows {
        match prev {
            None if r.seq > 1 => {
                // A log pruned before shipping starts later, anchored by a
                // signed checkpoint at the row before; otherwise rows are gone.
                let anchored = valid_cps
                    .iter()
                    .any(|c| c.count + 1 == r.seq && c.head_hash == r.prev_hash);
                if !anchored {
                    out.push(HostFinding::Gap {
                        from: 1,
                        to: r.seq - 1,
                    });
                }
            }
            Some(p) if r.seq > p.seq + 1 => out.push(HostFinding::Gap {
                from: p.seq + 1,
                to: r.seq - 1,
            }),
            _ => {}
        }
        if !r.hash_is_valid() {
            out.push(misplaced(r, &links).unwrap_or(HostFinding::EditedRow { seq: r.seq }));
        } else {
            let expected_prev = match prev {
                Some(p) if p.seq + 1 == r.seq => Some(p.hash.as_str()),
                None if r.seq == 1 => Some(GENESIS_HASH),
                _ => None,
            };
            let prev_ok = prev.is_none_or(|p| p.seq + 1 != r.seq || p.hash_is_valid());
            if expected_prev.is_some_and(|h| h != r.prev_hash) && prev_ok {
                out.push(HostFinding::BrokenLink { seq: r.seq });
            }
        }
        prev = Some(r);
    }
}

/// A row whose hash fails at its seq but holds at another: the seq after
/// the row its prev_hash names, the seq before the row that names its hash
/// as prev_hash, or a neighbour. There it is a row moved, or a copy of a
/// row still in place.
fn misplaced(r: &Record, links: &Links<'_>) -> Option<HostFinding> {
    let mut candidates = Vec::with_capacity(4);
    if r.prev_hash == GENESIS_HASH {
        candidates.push(1);
    } else if let Some(s) = links.by_hash.get(r.prev_hash.as_str()) {
        candidates.push(s + 1);
    }
    if let Some(s) = links.by_prev.get(r.hash.as_str()) {
        candidates.push(s.saturating_sub(1));
    }
    candidates.extend([r.seq.saturating_sub(1), r.seq + 1]);
    let belongs_at = candidates.into_iter().find(|&c| {
        c != 0 && c != r.seq && {
            let mut moved = r.clone();
            moved.seq = c;
            moved.hash_is_valid()
        }
    })?;
    Some(
        if links.hash_at.get(&belongs_at) == Some(&r.hash.as_str()) {
            HostFinding::DuplicatedRow {
                seq: r.seq,
                copy_of: belongs_at,
            }
        } else {
            HostFinding::MovedRow {
                seq: r.seq,
                belongs_at,
            }
        },
    )
}

/// Where each stored hash and prev_hash sits.
struct Links<'a> {
    by_hash: HashMap<&'a str, u64>,
    by_prev: HashMap<&'a str, u64>,
    hash_at: BTreeMap<u64, &'a str>,
}

/// Each checkpoint: signed by the host, agreeing with its row, and not
/// covering rows that are gone from the end.
fn check_checkpoints(
    chain: &HostChain,
    key: Option<&VerifyingKey>,
    rows: &[&Record],
    out: &mut Vec<HostFinding>,
) {
    let Some(key) = key else { return };
    let last = rows.last().map_or(0, |r| r.seq);
    for cp in &chain.checkpoints {
        if !cp.signature_is_valid(key) {
            out.push(HostFinding::CheckpointForged { count: cp.count });
            continue;
        }
        if cp.count > last {
            push_tail_gap(out, last + 1, cp.count);
        } else if let Some(r) = rows.iter().find(|r| r.seq == cp.count) {
            if r.hash != cp.head_hash {
                out.push(HostFinding::CheckpointMismatch { count: cp.count });
            }
        }
    }
}

/// The witness, like a checkpoint, but its own findings: rows it covers
/// that PostgreSQL lacks are a gap even when their checkpoints went too.
fn check_witness(w: &Checkpoint, key: &VerifyingKey, rows: &[&Record], out: &mut Vec<HostFinding>) {
    if !w.signature_is_valid(key) {
        out.push(HostFinding::WitnessForged { count: w.count });
        return;
    }
    let last = rows.last().map_or(0, |r| r.seq);
    if w.count > last {
        push_tail_gap(out, last + 1, w.count);
    } else if let Some(r) = rows.iter().find(|r| r.seq == w.count) {
        if r.hash != w.head_hash {
            out.push(HostFinding::WitnessMismatch { count: w.count });
        }
    }
}

/// Adds (or widens) the gap at the end of the chain.
fn push_tail_gap(out: &mut Vec<HostFinding>, from: u64, to: u64) {
    for f in out.iter_mut() {
        if let HostFinding::Gap { from: f0, to: t0 } = f {
            if *f0 == from {
                *t0 = (*t0).max(to);
                return;
            }
        }
    }
    out.push(HostFinding::Gap { from, to });
}

/// A record from an `agentd_audit` row read with [`ROW_COLUMNS`].
pub fn record_of(row: &Row) -> Result<Record, (u64, String)> {
    let seq = row.try_get::<_, i64>("seq").unwrap_or(0).max(0) as u64;
    let text = |c: &str| {
        row.try_get::<_, String>(c)
            .map_err(|e| (seq, e.to_string()))
    };
    let int = |c: &str| row.try_get::<_, i64>(c).map_err(|e| (seq, e.to_string()));
    let kind = RecordKind::parse(&text("kind")?).map_err(|e| (seq, e.to_string()))?;
    let mut ev = AuditEvent::new(kind, text("action")?);
    ev.operator = text("operator")?;
    ev.session = text("session")?;
    ev.active_message_id = text("active_message_id")?;
    ev.call_id = text("call_id")?;
    ev.target = text("target")?;
    ev.decision = text("decision")?;
    ev.reason_code = text("reason_code")?;
    ev.policy_id = text("policy_id")?;
    ev.latency_us = u64::try_from(int("latency_us")?).map_err(|e| (seq, e.to_string()))?;
    ev.agent = text("agent")?;
    ev.pid = u32::try_from(int("pid")?).map_err(|e| (seq, e.to_string()))?;
    ev.access = text("access")?;
    Ok(Record {
        seq,
        timestamp: text("ts")?,
        event: ev,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}

/// Reads every host's chain (or only `only`'s) from PostgreSQL: the
/// registered hosts and any host id that has rows without registering.
pub async fn load(pg: &PgSettings, only: Option<&str>) -> Result<Vec<HostChain>, FleetError> {
    let conn = pg.connect().await?;
    let c = &conn.client;
    let mut hosts: BTreeMap<String, HostChain> = BTreeMap::new();
    for row in pg
        .bounded(
            "listing hosts",
            c.query(
                "SELECT host_id, public_key FROM agentd_hosts
                 UNION ALL SELECT DISTINCT host_id, NULL FROM agentd_audit
                 WHERE host_id NOT IN (SELECT host_id FROM agentd_hosts)",
                &[],
            ),
        )
        .await?
    {
        let host_id: String = row.get(0);
        if only.is_some_and(|o| o != host_id) {
            continue;
        }
        let public_key: Option<String> = row.get(1);
        hosts.insert(
            host_id.clone(),
            HostChain {
                host_id,
                public_key,
                ..HostChain::default()
            },
        );
    }
    for chain in hosts.values_mut() {
        load_host(pg, c, chain).await?;
    }
    Ok(hosts.into_values().collect())
}

async fn load_host(pg: &PgSettings, c: &Client, chain: &mut HostChain) -> Result<(), FleetError> {
    // A central verify reads a whole host; it may take longer than one
    // decision-path statement, so it gets its own, longer bound.
    let long = pg.with_timeout(pg.timeout.max(std::time::Duration::from_secs(300)));
    let rows = long
        .bounded(
            "reading a host's rows",
            c.query(
                &format!("SELECT {ROW_COLUMNS} FROM agentd_audit WHERE host_id = $1 ORDER BY seq"),
                &[&chain.host_id],
            ),
        )
        .await?;
    chain.rows = rows.iter().map(record_of).collect();
    let cps = long
        .bounded(
            "reading a host's checkpoints",
            c.query(
                "SELECT count, head_hash, ts, signature FROM agentd_checkpoints
                 WHERE host_id = $1 ORDER BY count",
                &[&chain.host_id],
            ),
        )
        .await?;
    chain.checkpoints = cps
        .iter()
        .map(|r| Checkpoint {
            count: r.get::<_, i64>(0).max(0) as u64,
            head_hash: r.get(1),
            timestamp: r.get(2),
            signature: r.get(3),
        })
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::public_key_pem;
    use ed25519_dalek::SigningKey;

    fn chain(n: u64) -> (HostChain, SigningKey) {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let mut prev = GENESIS_HASH.to_owned();
        let mut rows = Vec::new();
        for seq in 1..=n {
            let mut e = AuditEvent::new(RecordKind::ToolCall, "read");
            e.target = format!("/srv/{seq}");
            let r = Record::seal(seq, format!("t{seq}"), e, prev.clone());
            prev = r.hash.clone();
            rows.push(Ok(r));
        }
        let cp = Checkpoint::sign(&key, n / 2, &hash(&rows, n / 2), "t".into()).unwrap();
        let c = HostChain {
            host_id: "h1".into(),
            public_key: Some(public_key_pem(&key.verifying_key())),
            rows,
            checkpoints: vec![cp],
        };
        (c, key)
    }

    fn hash(rows: &[Result<Record, (u64, String)>], seq: u64) -> String {
        rows[(seq - 1) as usize].as_ref().unwrap().hash.clone()
    }

    fn codes(c: &HostChain, w: Option<&Checkpoint>) -> Vec<HostFinding> {
        verify_host(c, w).findings
    }

    #[test]
    fn an_intact_chain_has_no_findings() {
        let (c, _) = chain(10);
        let r = verify_host(&c, None);
        assert_eq!(r.findings, vec![]);
        assert_eq!((r.rows, r.first_seq, r.last_seq), (10, Some(1), Some(10)));
    }

    #[test]
    fn each_tampering_is_named() {
        let (base, key) = chain(10);
        // Edited row.
        let mut c = base.clone();
        c.rows[3].as_mut().unwrap().event.target = "/etc/shadow".into();
        assert_eq!(codes(&c, None), vec![HostFinding::EditedRow { seq: 4 }]);
        // Deleted middle row.
        let mut c = base.clone();
        let _ = c.rows.remove(4);
        assert_eq!(codes(&c, None), vec![HostFinding::Gap { from: 5, to: 5 }]);
        // Row 7 replaced by a copy of row 6 (seq column rewritten).
        let mut c = base.clone();
        let mut copy = c.rows[5].as_ref().unwrap().clone();
        copy.seq = 7;
        c.rows[6] = Ok(copy);
        let f = codes(&c, None);
        assert!(
            f.contains(&HostFinding::DuplicatedRow { seq: 7, copy_of: 6 }),
            "{f:?}"
        );
        // Rows 8 and 9 swapped.
        let mut c = base.clone();
        let (a, b) = (c.rows[7].clone().unwrap(), c.rows[8].clone().unwrap());
        let (mut a2, mut b2) = (b.clone(), a.clone());
        a2.seq = 8;
        b2.seq = 9;
        c.rows[7] = Ok(a2);
        c.rows[8] = Ok(b2);
        let f = codes(&c, None);
        assert!(
            f.contains(&HostFinding::MovedRow {
                seq: 8,
                belongs_at: 9
            }),
            "{f:?}"
        );
        assert!(
            f.contains(&HostFinding::MovedRow {
                seq: 9,
                belongs_at: 8
            }),
            "{f:?}"
        );
        // Unknown host.
        let mut c = base.clone();
        c.public_key = None;
        assert_eq!(codes(&c, None), vec![HostFinding::UnknownHost { rows: 10 }]);
        // Newest rows deleted with their checkpoints: only a witness shows it.
        let mut c = base.clone();
        c.rows.truncate(8);
        assert_eq!(codes(&c, None), vec![]);
        let w = Checkpoint::sign(&key, 10, &hash(&base.rows, 10), "t".into()).unwrap();
        assert_eq!(
            codes(&c, Some(&w)),
            vec![HostFinding::Gap { from: 9, to: 10 }]
        );
        let mut forged = w.clone();
        forged.count = 12;
        assert_eq!(
            codes(&c, Some(&forged)),
            vec![HostFinding::WitnessForged { count: 12 }]
        );
        // A row rewritten with a fresh hash breaks the next link.
        let mut c = base.clone();
        let r = c.rows[2].as_ref().unwrap();
        let mut ev = r.event.clone();
        ev.target = "/x".into();
        c.rows[2] = Ok(Record::seal(
            3,
            r.timestamp.clone(),
            ev,
            r.prev_hash.clone(),
        ));
        assert_eq!(codes(&c, None), vec![HostFinding::BrokenLink { seq: 4 }]);
        // The checkpoint over row 5 now disagrees when row 5 is rewritten.
        let mut c = base.clone();
        let r = c.rows[4].as_ref().unwrap();
        let mut ev = r.event.clone();
        ev.target = "/y".into();
        c.rows[4] = Ok(Record::seal(
            5,
            r.timestamp.clone(),
            ev,
            r.prev_hash.clone(),
        ));
        let f = codes(&c, None);
        assert!(
            f.contains(&HostFinding::CheckpointMismatch { count: 5 }),
            "{f:?}"
        );
    }
}
