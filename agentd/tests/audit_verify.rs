//! `verify` catches each kind of tampering on a real SQLite file, altered the
//! way an attacker with write access would (dropping the guard triggers
//! first), and on a JSON Lines export; it names the first bad seq.
use std::path::{Path, PathBuf};

use agentd::audit::checkpoint::parse_public_key_pem;
use agentd::audit::{
    export_jsonl, store, verify_db, verify_export, AuditError, AuditEvent, AuditLog, AuditOptions,
    Checkpoint, Finding, Record, RecordKind, VerifyError,
};
use agentd::config::Durability;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::Connection;

struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    db: PathBuf,
    key: VerifyingKey,
}

fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(RecordKind::ToolCall, "shell.exec");
    e.operator = "alice".into();
    e.session = "C1".into();
    e.call_id = format!("call-{i}");
    e.target = format!("/usr/bin/tool{i}");
    e.decision = "deny".into();
    e.reason_code = "path_outside_scope".into();
    e.latency_us = 10 + i;
    e
}

/// A closed log: audit_open (1), events 2..=30, checkpoints at 10 and 20,
/// audit_close (31) and the final checkpoint at 31.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = AuditLog::open_with(
        &state,
        AuditOptions {
            durability: Durability::Normal,
            checkpoint_interval: std::time::Duration::from_secs(3600),
        },
    )
    .unwrap();
    for i in 2..=30 {
        let c = log.append_blocking(event(i)).unwrap();
        assert_eq!(c.seq, i);
        if i == 10 || i == 20 {
            assert_eq!(log.checkpoint_now().unwrap().unwrap().count, i);
        }
    }
    let key = parse_public_key_pem(&log.public_key_pem()).unwrap();
    log.shutdown().unwrap();
    Fixture {
        db: store::db_path(&state),
        state,
        key,
        _dir: dir,
    }
}

/// Opens the file as an attacker would: guard triggers dropped.
fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;
         DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;",
    )
    .unwrap();
    c
}

fn finding(r: Result<agentd::audit::VerifyReport, VerifyError>) -> Finding {
    match r {
        Err(VerifyError::Tampered(f)) => f,
        other => panic!("expected tampering to be detected, got {other:?}"),
    }
}

fn read_all(db: &Path) -> Vec<Record> {
    let c = store::open_ro(db).unwrap();
    store::records_after(&c, db, 0, u64::MAX).unwrap()
}

/// Rewrites rows `from..` so each hash is recomputed and links to the
/// previous one: a careful attacker hiding an edit in the middle.
fn rechain_from(c: &Connection, db: &Path, from: u64) {
    let all = read_all(db);
    let mut prev = all[(from - 2) as usize].hash.clone();
    for r in all.into_iter().filter(|r| r.seq >= from) {
        let sealed = Record::seal(r.seq, r.timestamp, r.event, prev);
        c.execute(
            "UPDATE audit_records SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![sealed.prev_hash, sealed.hash, sealed.seq as i64],
        )
        .unwrap();
        prev = sealed.hash;
    }
}

#[test]
fn untouched_log_verifies_with_full_anchoring() {
    let f = fixture();
    let report = verify_db(&f.db, &f.key, &[]).unwrap();
    assert_eq!(report.records, 31);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.last_seq, Some(31));
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.anchored_through, 31);
    assert_eq!(report.unanchored_tail, 0);
}

#[test]
fn edited_row_is_caught_at_its_seq() {
    let f = fixture();
    attacker(&f.db)
        .execute(
            "UPDATE audit_records SET decision = 'allow' WHERE seq = 7",
            [],
        )
        .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::RowHashMismatch { seq: 7 });
    assert_eq!(fd.seq(), 7);
}

#[test]
fn edited_row_with_recomputed_hashes_is_caught_by_the_checkpoint() {
    let f = fixture();
    let c = attacker(&f.db);
    c.execute(
        "UPDATE audit_records SET target = '/bin/true' WHERE seq = 12",
        [],
    )
    .unwrap();
    rechain_from(&c, &f.db, 12);
    // The whole chain is consistent again; only the signed head at 20 disagrees.
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::CheckpointHeadMismatch { count: 20 });
}

#[test]
fn edited_row_rehashed_but_not_relinked_is_caught_at_the_next_seq() {
    let f = fixture();
    let c = attacker(&f.db);
    let mut r = read_all(&f.db).remove(4); // seq 5
    r.event.decision = "allow".into();
    let sealed = Record::seal(r.seq, r.timestamp, r.event, r.prev_hash);
    c.execute(
        "UPDATE audit_records SET decision = 'allow', hash = ?1 WHERE seq = 5",
        [sealed.hash],
    )
    .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::PrevHashMismatch { seq: 6 });
}

#[test]
fn deleted_row_is_caught_at_its_seq() {
    let f = fixture();
    attacker(&f.db)
        .execute("DELETE FROM audit_records WHERE seq = 15", [])
        .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(
        fd,
        Finding::SeqGap {
            expected: 15,
            found: 16
        }
    );
    assert_eq!(fd.seq(), 15);
}

#[test]
fn reordered_rows_are_caught() {
    let f = fixture();
    let c = attacker(&f.db);
    // Swap the contents of rows 5 and 6, keeping their seq numbers.
    c.execute_batch(
        "UPDATE audit_records SET seq = -5 WHERE seq = 5;
         UPDATE audit_records SET seq = 5 WHERE seq = 6;
         UPDATE audit_records SET seq = 6 WHERE seq = -5;",
    )
    .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd.seq(), 5, "{fd}");
}

#[test]
fn truncated_tail_past_a_checkpoint_is_caught() {
    let f = fixture();
    attacker(&f.db)
        .execute("DELETE FROM audit_records WHERE seq > 24", [])
        .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(
        fd,
        Finding::TruncatedTail {
            last_seq: 24,
            checkpoint_count: 31
        }
    );
    assert_eq!(fd.seq(), 25);
    assert_eq!(fd.code(), "truncated_tail");
}

#[test]
fn truncation_that_also_deletes_checkpoints_is_caught_by_a_checkpoint_held_elsewhere() {
    let f = fixture();
    // The verifier kept the final checkpoint from an earlier export.
    let held: Vec<Checkpoint> = {
        let c = store::open_ro(&f.db).unwrap();
        store::checkpoints(&c, &f.db).unwrap()
    };
    let c = attacker(&f.db);
    c.execute_batch(
        "DELETE FROM audit_records WHERE seq > 22; DELETE FROM audit_checkpoints WHERE count > 22;",
    )
    .unwrap();
    // Alone, the file cannot show it (rows 21-22 are simply unanchored)...
    let report = verify_db(&f.db, &f.key, &[]).unwrap();
    assert_eq!(report.anchored_through, 20);
    assert_eq!(report.unanchored_tail, 2);
    // ...but the held checkpoint does.
    let fd = finding(verify_db(&f.db, &f.key, &held));
    assert_eq!(fd.seq(), 23);
}

#[test]
fn forged_checkpoint_is_caught() {
    let f = fixture();
    let c = attacker(&f.db);
    // Rewrite history from row 25 on and sign a new head with the attacker's own key.
    c.execute("DELETE FROM audit_records WHERE seq > 25", [])
        .unwrap();
    c.execute(
        "UPDATE audit_records SET decision = 'allow' WHERE seq = 25",
        [],
    )
    .unwrap();
    rechain_from(&c, &f.db, 25);
    let head = read_all(&f.db).pop().unwrap();
    let mallory = SigningKey::generate(&mut rand::rngs::OsRng);
    let forged = Checkpoint::sign(
        &mallory,
        25,
        &head.hash,
        "2026-11-22T00:00:00.000000Z".into(),
    )
    .unwrap();
    c.execute("DELETE FROM audit_checkpoints WHERE count > 20", [])
        .unwrap();
    store::insert_checkpoint(&c, &forged).unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::CheckpointSignatureInvalid { count: 25 });
}

#[test]
fn altered_checkpoint_count_is_caught() {
    let f = fixture();
    attacker(&f.db)
        .execute(
            "UPDATE audit_checkpoints SET count = 11 WHERE count = 10",
            [],
        )
        .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::CheckpointSignatureInvalid { count: 11 });
}

#[test]
fn wrong_public_key_fails() {
    let f = fixture();
    let other = SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
    let fd = finding(verify_db(&f.db, &other, &[]));
    assert_eq!(fd.code(), "checkpoint_signature_invalid");
}

#[test]
fn deleted_prefix_without_a_checkpoint_is_caught() {
    let f = fixture();
    attacker(&f.db)
        .execute("DELETE FROM audit_records WHERE seq <= 4", [])
        .unwrap();
    let fd = finding(verify_db(&f.db, &f.key, &[]));
    assert_eq!(fd, Finding::UnanchoredStart { first_seq: 5 });
}

#[test]
fn open_refuses_a_truncated_log() {
    let f = fixture();
    attacker(&f.db)
        .execute("DELETE FROM audit_records WHERE seq > 28", [])
        .unwrap();
    let err = AuditLog::open(&f.state, Durability::Normal).unwrap_err();
    match err {
        AuditError::Tampered { seq, .. } => assert_eq!(seq, 29),
        other => panic!("expected Tampered, got {other}"),
    }
}

fn export(db: &Path, out: &Path) {
    let c = store::open_ro(db).unwrap();
    let mut file = std::fs::File::create(out).unwrap();
    export_jsonl(&c, db, 0, &mut file).unwrap();
}

#[test]
fn export_verifies_and_each_line_is_one_flat_object() {
    let f = fixture();
    let out = f.state.join("export.jsonl");
    export(&f.db, &out);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 31 + 3);
    assert_eq!(lines[0]["type"], "record");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["action"], "audit_open");
    // The checkpoint for 10 rows follows row 10.
    assert_eq!(lines[10]["type"], "checkpoint");
    assert_eq!(lines[10]["count"], 10);
    let report = verify_export(&out, &f.key, &[]).unwrap();
    assert_eq!(report.records, 31);
    assert_eq!(report.anchored_through, 31);
}

#[test]
fn export_with_reordered_edited_or_dropped_lines_fails() {
    let f = fixture();
    let out = f.state.join("export.jsonl");
    export(&f.db, &out);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let write = |name: &str, ls: &[String]| {
        let p = f.state.join(name);
        std::fs::write(&p, ls.join("\n") + "\n").unwrap();
        p
    };
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();

    // Reordered: swap rows 5 and 6 (lines 4 and 5).
    let mut re = owned.clone();
    re.swap(4, 5);
    let fd = finding(verify_export(&write("re.jsonl", &re), &f.key, &[]));
    assert_eq!(fd.seq(), 5, "{fd}");

    // Edited: change the decision of row 3.
    let mut ed = owned.clone();
    ed[2] = ed[2].replace("\"deny\"", "\"allow\"");
    assert_ne!(ed[2], owned[2]);
    let fd = finding(verify_export(&write("ed.jsonl", &ed), &f.key, &[]));
    assert_eq!(fd, Finding::RowHashMismatch { seq: 3 });

    // Dropped: remove row 8.
    let mut dr = owned.clone();
    dr.remove(7);
    let fd = finding(verify_export(&write("dr.jsonl", &dr), &f.key, &[]));
    assert_eq!(fd.seq(), 8);

    // Truncated: cut after row 25 (the final checkpoint line is kept).
    let mut tr: Vec<String> = owned[..27].to_vec();
    tr.push(owned.last().unwrap().clone());
    let fd = finding(verify_export(&write("tr.jsonl", &tr), &f.key, &[]));
    assert_eq!(fd.code(), "truncated_tail", "{fd}");

    // Garbage line.
    let mut gb = owned.clone();
    gb.insert(3, "{not json".into());
    let fd = finding(verify_export(&write("gb.jsonl", &gb), &f.key, &[]));
    assert_eq!(fd.code(), "malformed_record");
}
