//! `agentctl audit …` end to end on a real log: public-key, verify (exit
//! code and first bad seq), export + verify --export, tail, prune.
use std::path::Path;
use std::process::{Command, Output};

use agentd::audit::{AuditEvent, AuditLog, AuditOptions, RecordKind};
use agentd::config::Durability;

mod cli_support;
use cli_support::agentctl;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn make_log(state: &Path, rows: u64, checkpoint_every: u64) {
    let log = AuditLog::open_with(
        state,
        AuditOptions {
            durability: Durability::Normal,
            checkpoint_interval: std::time::Duration::from_secs(3600),
        },
    )
    .unwrap();
    for i in 0..rows {
        let mut e = AuditEvent::new(RecordKind::Kernel, "file_open");
        e.target = format!("/etc/file{i}");
        e.decision = "deny".into();
        e.reason_code = "no_grant".into();
        let c = log.append_blocking(e).unwrap();
        if c.seq.is_multiple_of(checkpoint_every) {
            log.checkpoint_now().unwrap();
        }
    }
    log.shutdown().unwrap();
}

#[test]
fn verify_export_tail_prune_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    make_log(&state, 48, 10);
    let sd = state.to_str().unwrap();

    let o = agentctl(&["audit", "public-key", "--state-dir", sd]);
    assert!(o.status.success(), "{o:?}");
    let pem_path = dir.path().join("audit.pub.pem");
    std::fs::write(&pem_path, &o.stdout).unwrap();
    let pem = pem_path.to_str().unwrap();

    let o = agentctl(&["audit", "verify", "--state-dir", sd, "--public-key", pem]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("PASS"), "{}", stdout(&o));
    assert!(stdout(&o).contains("seq 1..=50"), "{}", stdout(&o));

    let export = dir.path().join("audit.jsonl");
    let o = agentctl(&[
        "audit",
        "export",
        "--state-dir",
        sd,
        "--format",
        "jsonl",
        "-o",
        export.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = agentctl(&[
        "audit",
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        pem,
    ]);
    assert!(o.status.success(), "{o:?}");

    let o = agentctl(&["audit", "tail", "--state-dir", sd, "-n", "3"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].trim_start().starts_with("48 "), "{text}");
    assert!(lines[2].contains("audit_close"), "{text}");

    let o = agentctl(&["audit", "prune", "--state-dir", sd, "--before-seq", "25"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("seq ≤ 20"), "{}", stdout(&o));
    let o = agentctl(&[
        "audit",
        "verify",
        "--state-dir",
        sd,
        "--public-key",
        pem,
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["result"], "pass");
    assert_eq!(v["first_seq"], 21);

    // Tamper: an attacker drops the trigger and edits row 33.
    let c = rusqlite::Connection::open(state.join("audit.db")).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_records_no_update;
         UPDATE audit_records SET decision = 'allow' WHERE seq = 33;",
    )
    .unwrap();
    drop(c);
    let o = agentctl(&["audit", "verify", "--state-dir", sd, "--public-key", pem]);
    assert!(!o.status.success(), "tampered log passed: {o:?}");
    assert!(stdout(&o).contains("first bad seq 33"), "{}", stdout(&o));
    assert!(stdout(&o).contains("row_hash_mismatch"), "{}", stdout(&o));
}

#[test]
fn prune_refuses_without_a_checkpoint_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    make_log(&state, 5, 1000);
    let sd = state.to_str().unwrap();
    let o = agentctl(&["audit", "prune", "--state-dir", sd, "--before-seq", "5"]);
    assert!(!o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no signed checkpoint"), "{err}");
    let c = rusqlite::Connection::open(state.join("audit.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM audit_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 7);
}

#[test]
fn verify_with_a_bad_key_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    make_log(&state, 2, 1000);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let o = agentctl(&[
        "audit",
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        "--public-key",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("public key"), "{err}");
}

#[test]
fn tail_follow_prints_rows_as_they_commit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = AuditLog::open(&state, Durability::Normal).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args([
            "audit",
            "tail",
            "--follow",
            "--json",
            "-n",
            "1",
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // The newest row (audit_open) arrives first: tail is running.
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("tail printed the newest row");
    assert!(first.contains("audit_open"), "{first}");
    let mut seqs = Vec::new();
    for i in 0..3 {
        let mut e = AuditEvent::new(RecordKind::Admin, "operator_add");
        e.target = format!("op{i}");
        seqs.push(log.append_blocking(e).unwrap().seq);
    }
    for seq in seqs {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("tail --follow printed the new row");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], seq, "{line}");
        assert_eq!(v["action"], "operator_add");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    log.shutdown().unwrap();
}

#[test]
fn checkpoint_kept_off_host_catches_truncation_with_checkpoints_removed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    make_log(&state, 30, 10);
    let sd = state.to_str().unwrap();
    let o = agentctl(&["audit", "public-key", "--state-dir", sd]);
    let pem_path = dir.path().join("k.pem");
    std::fs::write(&pem_path, &o.stdout).unwrap();
    let o = agentctl(&["audit", "checkpoint", "--state-dir", sd]);
    assert!(o.status.success(), "{o:?}");
    let held = dir.path().join("held.json");
    std::fs::write(&held, &o.stdout).unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cp["count"], 32);

    // Truncate the tail and remove the checkpoints that would reveal it.
    let c = rusqlite::Connection::open(state.join("audit.db")).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_records_no_delete; DROP TRIGGER audit_checkpoints_no_delete;
         DELETE FROM audit_records WHERE seq > 25; DELETE FROM audit_checkpoints WHERE count > 25;",
    )
    .unwrap();
    drop(c);
    let pem = pem_path.to_str().unwrap();
    let o = agentctl(&["audit", "verify", "--state-dir", sd, "--public-key", pem]);
    assert!(o.status.success(), "the file alone cannot show it: {o:?}");
    assert!(stdout(&o).contains("not yet covered"), "{}", stdout(&o));
    let o = agentctl(&[
        "audit",
        "verify",
        "--state-dir",
        sd,
        "--public-key",
        pem,
        "--checkpoint",
        held.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("first bad seq 26"), "{}", stdout(&o));
    assert!(stdout(&o).contains("truncated_tail"), "{}", stdout(&o));
}
