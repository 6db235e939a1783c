//! Retention: pruning a prefix at a signed checkpoint keeps the rest
//! verifiable (database and export), survives reopening, and is refused on
//! a log that does not verify.
use agentd::audit::{
    export_jsonl, prune_before, store, verify_db, verify_export, AuditEvent, AuditLog,
    AuditOptions, RecordKind, RetentionError,
};
use agentd::config::Durability;

fn opts() -> AuditOptions {
    AuditOptions {
        durability: Durability::Normal,
        checkpoint_interval: std::time::Duration::from_secs(3600),
    }
}

fn fill(log: &AuditLog, n: u64) {
    for i in 0..n {
        let mut e = AuditEvent::new(RecordKind::Admin, "policy_load");
        e.target = format!("policy-{i}");
        let c = log.append_blocking(e).unwrap();
        if c.seq.is_multiple_of(8) {
            log.checkpoint_now().unwrap();
        }
    }
}

#[test]
fn pruned_log_verifies_reopens_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(dir.path(), opts()).unwrap();
    fill(&log, 30);
    let key = log.verifying_key();
    let db = log.db_path().to_owned();

    // Live pruning while the writer is open.
    let r = prune_before(&db, &key, 20).unwrap();
    assert_eq!(r.pruned_through, 16);
    assert_eq!(r.deleted, 16);
    let rep = verify_db(&db, &key, &[]).unwrap();
    assert_eq!(rep.first_seq, Some(17));
    assert_eq!(rep.anchored_through, 24);

    fill(&log, 5);
    log.shutdown().unwrap();
    drop(log);
    let log = AuditLog::open_with(dir.path(), opts()).unwrap();
    fill(&log, 3);
    log.shutdown().unwrap();
    let rep = verify_db(&db, &key, &[]).unwrap();
    assert_eq!(rep.first_seq, Some(17));
    assert_eq!(rep.unanchored_tail, 0);

    let out = dir.path().join("x.jsonl");
    let conn = store::open_ro(&db).unwrap();
    export_jsonl(&conn, &db, 0, &mut std::fs::File::create(&out).unwrap()).unwrap();
    let first_line = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(first_line.lines().next().unwrap()).unwrap();
    // Earlier checkpoints lead the export, anchoring its first record.
    assert_eq!(first["type"], "checkpoint");
    let rep2 = verify_export(&out, &key, &[]).unwrap();
    assert_eq!(rep2.records, rep.records);

    // A partial export verifies when it starts right after a checkpoint (32)…
    let part = dir.path().join("part.jsonl");
    export_jsonl(&conn, &db, 32, &mut std::fs::File::create(&part).unwrap()).unwrap();
    let rep3 = verify_export(&part, &key, &[]).unwrap();
    assert_eq!(rep3.first_seq, Some(33));
    // …and not when nothing signed anchors its first row (31 needs one at 30).
    let bad = dir.path().join("bad.jsonl");
    export_jsonl(&conn, &db, 30, &mut std::fs::File::create(&bad).unwrap()).unwrap();
    let err = verify_export(&bad, &key, &[]).unwrap_err();
    assert_eq!(err.finding().map(|f| f.code()), Some("unanchored_prefix"));
}

#[test]
fn prune_is_refused_on_a_tampered_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(dir.path(), opts()).unwrap();
    fill(&log, 20);
    let key = log.verifying_key();
    let db = log.db_path().to_owned();
    log.shutdown().unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_records_no_update;
         UPDATE audit_records SET target = 'x' WHERE seq = 3;",
    )
    .unwrap();
    let err = prune_before(&db, &key, 18).unwrap_err();
    match err {
        RetentionError::NotVerified { finding, .. } => assert_eq!(finding.seq(), 3),
        other => panic!("expected NotVerified, got {other}"),
    }
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM audit_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 22, "nothing was deleted");
}

#[test]
fn pruning_while_the_writer_appends_loses_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(dir.path(), opts()).unwrap();
    fill(&log, 400);
    let key = log.verifying_key();
    let db = log.db_path().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    log.append_blocking(AuditEvent::new(RecordKind::Kernel, "file_open"))
                        .expect("append during prune");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let r = prune_before(&db, &key, 300).unwrap();
    assert_eq!(r.pruned_through, 296);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(appended > 0);
    log.shutdown().unwrap();
    let rep = verify_db(&db, &key, &[]).unwrap();
    assert_eq!(rep.first_seq, Some(297));
    assert_eq!(rep.last_seq, Some(401 + appended + 1));
    // One prune step per checkpoint crossed, each recorded.
    let conn = store::open_ro(&db).unwrap();
    let steps: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_prunes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(steps, 296 / 8);
}
