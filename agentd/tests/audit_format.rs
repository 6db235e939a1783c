//! Record format v2 (rows that name their agent, pid and access) beside the
//! rows and exports written before it. The v1 log under
//! `tests/fixtures/audit-v1/` was written by the code before format v2
//! (see its README): it verifies read-only as it is, migrates in place when
//! agentd opens it, goes on with v2 rows in the same chain, exports, prunes;
//! and an edit of the new fields is caught at its row.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agentd::audit::checkpoint::{parse_public_key_pem, KEY_FILE};
use agentd::audit::{
    export_jsonl, prune_before, store, verify_db, verify_export, AuditEvent, AuditLog,
    AuditOptions, Finding, Record, RecordKind, VerifyError,
};
use agentd::config::Durability;
use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit-v1")
        .join(name)
}

fn fixture_key() -> VerifyingKey {
    parse_public_key_pem(&std::fs::read_to_string(fixture("public-key.pem")).unwrap()).unwrap()
}

/// A state directory holding the v1 log exactly as the old code left it.
fn v1_state() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = state.join(KEY_FILE);
    std::fs::copy(fixture(KEY_FILE), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let db = store::db_path(&state);
    let sql = std::fs::read_to_string(fixture("audit.sql")).unwrap();
    Connection::open(&db).unwrap().execute_batch(&sql).unwrap();
    (dir, db)
}

fn opts() -> AuditOptions {
    AuditOptions {
        durability: Durability::Normal,
        checkpoint_interval: std::time::Duration::from_secs(3600),
    }
}

fn columns(db: &Path) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT name FROM pragma_table_info('audit_records')")
        .unwrap();
    let names = st.query_map([], |r| r.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

fn finding(r: Result<agentd::audit::VerifyReport, VerifyError>) -> Finding {
    match r {
        Err(VerifyError::Tampered(f)) => f,
        other => panic!("expected tampering to be detected, got {other:?}"),
    }
}

/// Opens the file as an attacker would: guard triggers dropped.
fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_records_no_update; DROP TRIGGER IF EXISTS audit_records_no_delete;",
    )
    .unwrap();
    c
}

#[test]
fn the_old_export_and_database_verify_as_they_are() {
    let key = fixture_key();
    let rep = verify_export(&fixture("export.jsonl"), &key, &[]).unwrap();
    assert_eq!(
        (rep.records, rep.checkpoints, rep.anchored_through),
        (5, 2, 5)
    );

    // Read-only, as `agentctl audit verify --db` reads evidence: not migrated.
    let (_dir, db) = v1_state();
    let rep = verify_db(&db, &key, &[]).unwrap();
    assert_eq!((rep.records, rep.anchored_through), (5, 5));
    assert!(
        !columns(&db).contains(&"agent".to_owned()),
        "a read must not migrate"
    );
    let rows = store::records_after(&store::open_ro(&db).unwrap(), &db, 0, 100).unwrap();
    assert!(rows
        .iter()
        .all(|r| r.format() == 1 && r.event.agent.is_empty()));
    assert_eq!(rows[2].event.policy_id, "agent:legacy pid:4242 access:read");
}

#[test]
fn a_v1_log_migrates_in_place_and_continues_with_v2_rows() {
    let (dir, db) = v1_state();
    let key = fixture_key();
    let log = AuditLog::open_with(db.parent().unwrap(), opts()).unwrap();
    assert_eq!(log.verifying_key(), key, "the old signing key is kept");
    let cols = columns(&db);
    assert!(["agent", "pid", "access"]
        .iter()
        .all(|c| cols.contains(&c.to_string())));
    let version: String = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT value FROM audit_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "2");

    let mut call = AuditEvent::new(RecordKind::ToolCall, "shell");
    call.operator = "olivia".into();
    call.call_id = "call-2".into();
    call.decision = "allow".into();
    call.reason_code = "ok".into();
    call.policy_id = "demo@0123456789ab".into();
    call.agent = "claude".into();
    call.pid = 31337;
    let c = log.append_blocking(call).unwrap();
    assert_eq!(c.seq, 7, "after the old 5 rows and this run's audit_open");
    let mut k = AuditEvent::new(RecordKind::Kernel, "file_open");
    k.call_id = "call-2".into();
    k.target = "/etc/shadow".into();
    k.decision = "deny".into();
    k.reason_code = "no_grant".into();
    (k.agent, k.pid, k.access) = ("claude".into(), 31338, "read".into());
    log.append_blocking(k).unwrap();
    log.shutdown().unwrap();
    drop(log);

    let rep = verify_db(&db, &key, &[]).unwrap();
    assert_eq!(
        (rep.records, rep.first_seq, rep.unanchored_tail),
        (9, Some(1), 0)
    );
    let rows = store::records_after(&store::open_ro(&db).unwrap(), &db, 0, 100).unwrap();
    let formats: Vec<u8> = rows.iter().map(Record::format).collect();
    assert_eq!(formats, [1, 1, 1, 1, 1, 1, 2, 2, 1]);
    assert_eq!(
        (
            rows[7].event.agent.as_str(),
            rows[7].event.pid,
            rows[7].event.access.as_str()
        ),
        ("claude", 31338, "read")
    );
    assert_eq!(rows[7].event.policy_id, "");

    // Its export verifies; so does the same export in the old shape (no
    // subject keys on the rows that have none), as an old export would be.
    let out = dir.path().join("all.jsonl");
    export_jsonl(
        &store::open_ro(&db).unwrap(),
        &db,
        0,
        &mut std::fs::File::create(&out).unwrap(),
    )
    .unwrap();
    assert_eq!(verify_export(&out, &key, &[]).unwrap().records, 9);
    let old_shape: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            if o.get("agent").is_some_and(|a| a == "") && o.get("pid").is_some_and(|p| p == 0) {
                for k in ["agent", "pid", "access"] {
                    o.remove(k);
                }
            }
            v.to_string()
        })
        .collect();
    let old = dir.path().join("old-shape.jsonl");
    std::fs::write(&old, old_shape.join("\n") + "\n").unwrap();
    assert_eq!(verify_export(&old, &key, &[]).unwrap().records, 9);

    // Retention works across the formats: cut at the old checkpoint (5).
    let pruned = prune_before(&db, &key, 6).unwrap();
    assert_eq!(pruned.pruned_through, 5);
    assert_eq!(verify_db(&db, &key, &[]).unwrap().first_seq, Some(6));

    // And the log keeps going after a restart.
    let log = AuditLog::open_with(db.parent().unwrap(), opts()).unwrap();
    log.shutdown().unwrap();
    assert_eq!(verify_db(&db, &key, &[]).unwrap().last_seq, Some(11));
}

#[test]
fn edits_of_the_subject_fields_break_the_chain() {
    let (dir, db) = v1_state();
    let key = fixture_key();
    let log = AuditLog::open_with(db.parent().unwrap(), opts()).unwrap();
    let mut call = AuditEvent::new(RecordKind::ToolCall, "shell");
    call.decision = "deny".into();
    call.agent = "claude".into();
    call.pid = 5;
    assert_eq!(log.append_blocking(call).unwrap().seq, 7);
    log.shutdown().unwrap();
    drop(log);
    assert!(verify_db(&db, &key, &[]).is_ok());

    let c = attacker(&db);
    let edits = [
        // (the edit, its undo, the row it touches)
        ("agent = 'codex'", "agent = 'claude'", 7),
        ("agent = ''", "agent = 'claude'", 7),
        ("pid = 6", "pid = 5", 7),
        ("access = 'write'", "access = ''", 7),
        ("agent = '', pid = 0", "agent = 'claude', pid = 5", 7),
        // A subject given to an old (v1) row.
        ("agent = 'claude'", "agent = ''", 3),
    ];
    for (edit, undo, seq) in edits {
        c.execute_batch(&format!(
            "UPDATE audit_records SET {edit} WHERE seq = {seq}"
        ))
        .unwrap();
        assert_eq!(
            finding(verify_db(&db, &key, &[])),
            Finding::RowHashMismatch { seq },
            "edit `{edit}` of seq {seq}"
        );
        c.execute_batch(&format!(
            "UPDATE audit_records SET {undo} WHERE seq = {seq}"
        ))
        .unwrap();
        assert!(verify_db(&db, &key, &[]).is_ok(), "undo of `{edit}`");
    }

    // The same in an export.
    let out = dir.path().join("x.jsonl");
    export_jsonl(
        &store::open_ro(&db).unwrap(),
        &db,
        0,
        &mut std::fs::File::create(&out).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(r#""agent":"claude","pid":5"#), "{text}");
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(
        &edited,
        text.replace(r#""agent":"claude""#, r#""agent":"codex""#),
    )
    .unwrap();
    assert_eq!(
        finding(verify_export(&edited, &key, &[])),
        Finding::RowHashMismatch { seq: 7 }
    );
}
