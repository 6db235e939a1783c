//! OCSF export and sink against the real daemon: `agentctl audit export
//! --format ocsf` and the `[ocsf] path` sink write the same events, one per
//! audit row, none repeated or skipped across a restart or a rotation; every
//! event passes the OCSF 1.8 schema (ocsf-json-schema + jsonschema from
//! PyPI, installed by `cargo xtask setup` into target/mcp-venv); the hash
//! chain verifies from the OCSF file alone and an edited event is caught.
mod gateway_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentd::audit::{AuditEvent, AuditLog, RecordKind};
use agentd::config::Durability;
use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

/// The suites' Python venv, if `cargo xtask setup` made it with the OCSF schema tools.
fn validator_python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let python = target.join("mcp-venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import ocsf_json_schema, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// Runs tests/ocsf/validate.py on `file`: (passed, its report).
fn validate(python: &Path, file: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/ocsf/validate.py");
    let out = Command::new(python).arg(script).arg(file).output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn export_ocsf(d: &Daemon, out: &Path) -> Vec<Value> {
    d.ok(&[
        "audit",
        "export",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--format",
        "ocsf",
        "-o",
        out.to_str().unwrap(),
    ]);
    lines(out)
}

/// Waits until the sink file holds an event for every audit row.
fn sink_caught_up(d: &Daemon, sink: &Path) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (rows, events) = (d.audit_records().len(), lines(sink));
        if events.len() >= rows {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "sink has {} events for {rows} rows",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["metadata"]["sequence"].as_u64().unwrap())
        .collect()
}

fn some_calls(d: &Daemon, session: &str) {
    let key = d.enroll(&format!("op-{session}"), "clinician");
    let m = d.send(&format!("op-{session}"), &key, session, "read the chart");
    assert_decision(
        &d.check(&m, "read_chart", &["path=/srv/charts/p1.txt"]),
        "allow",
        "ok",
    );
    assert_decision(
        &d.check(&m, "shell", &["command=ls"]),
        "deny",
        "role_not_in_allowlist",
    );
}

#[test]
fn sink_and_export_agree_row_for_row_across_restart_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("agentd.ocsf.jsonl");
    let mut d = Daemon::start_with(&format!("[ocsf]\npath = {:?}\n", sink));
    some_calls(&d, "s1");
    let events = sink_caught_up(&d, &sink);
    let exported = export_ocsf(&d, &dir.path().join("export.jsonl"));
    assert_eq!(
        events, exported,
        "the sink and the export write the same events"
    );
    let classes: Vec<u64> = events
        .iter()
        .map(|e| e["class_uid"].as_u64().unwrap())
        .collect();
    for class in [6002, 6003, 3003] {
        assert!(classes.contains(&class), "class {class} in {classes:?}");
    }
    let allow = events
        .iter()
        .find(|e| e["class_uid"] == 6003 && e["api"]["operation"] == "read_chart")
        .expect("the allowed call");
    assert_eq!(
        (allow["action_id"].clone(), allow["disposition"].clone()),
        (1.into(), "Allowed".into())
    );
    assert_eq!(
        allow["api"]["request"]["data"]["path"],
        "/srv/charts/p1.txt"
    );
    assert_eq!(allow["actor"]["user"]["name"], "op-s1");
    let deny = events
        .iter()
        .find(|e| e["api"]["operation"] == "shell")
        .unwrap();
    assert_eq!(
        (deny["action_id"].clone(), deny["status_code"].clone()),
        (2.into(), "role_not_in_allowlist".into())
    );

    // A restart resumes after the file's last event: no row twice, none skipped.
    d.stop();
    d.spawn();
    some_calls(&d, "s2");
    let events = sink_caught_up(&d, &sink);
    let n = d.audit_records().len() as u64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>());

    // Rotated away (a log shipper's rename): the new file starts after the
    // position the sink recorded.
    d.stop();
    let rotated = dir.path().join("agentd.ocsf.jsonl.1");
    std::fs::rename(&sink, &rotated).unwrap();
    d.spawn();
    some_calls(&d, "s3");
    let before = lines(&rotated);
    let fresh = sink_caught_up_from(&d, &sink, before.len());
    let mut all = seqs(&before);
    all.extend(seqs(&fresh));
    let n = d.audit_records().len() as u64;
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "rotation neither repeats nor skips rows"
    );
    assert_eq!(
        std::fs::metadata(&sink)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
}

fn sink_caught_up_from(d: &Daemon, sink: &Path, already: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (rows, events) = (d.audit_records().len(), lines(sink));
        if already + events.len() >= rows {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "sink has {}+{} events for {rows} rows",
            already,
            events.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kernel rows of every class, written through the real audit log.
fn kernel_log(state: &Path) {
    let log = AuditLog::open(state, Durability::Normal).unwrap();
    let rows = [
        ("exec", "/usr/bin/ls", "allow", "grant_matched", ""),
        (
            "bprm_check_security",
            "/usr/bin/curl",
            "deny",
            "no_grant",
            "",
        ),
        (
            "file_open",
            "/srv/charts/patient-17.txt",
            "allow",
            "grant_matched",
            "read",
        ),
        (
            "file_open",
            "/home/agent/.bashrc",
            "deny",
            "no_grant",
            "write",
        ),
        (
            "unlinkat",
            "/workspace/SOUL.md",
            "would_deny",
            "path_outside_scope",
            "",
        ),
        (
            "path_rename",
            "/workspace/a",
            "deny",
            "path_outside_scope",
            "",
        ),
        (
            "inode_setattr",
            "/workspace/b",
            "deny",
            "path_outside_scope",
            "",
        ),
        ("connect", "127.0.0.1:25", "allow", "grant_matched", ""),
        (
            "socket_connect",
            "[2001:db8::1]:443",
            "deny",
            "no_grant",
            "",
        ),
        (
            "unix_stream_connect",
            "unix:/run/docker.sock",
            "deny",
            "no_grant",
            "",
        ),
        ("signal", "pid:1 sig:9", "deny", "signal_outside_agent", ""),
    ];
    for (i, (action, target, decision, reason, access)) in rows.into_iter().enumerate() {
        let mut ev = AuditEvent::new(RecordKind::Kernel, action);
        ev.target = target.into();
        ev.decision = decision.into();
        ev.reason_code = reason.into();
        ev.agent = "demo".into();
        ev.pid = 4000 + i as u32;
        ev.access = access.into();
        ev.call_id = if decision == "allow" {
            format!("{:032x}", i)
        } else {
            String::new()
        };
        log.append_blocking(ev).unwrap();
    }
    log.shutdown().unwrap();
}

#[test]
fn every_event_passes_the_ocsf_schema_and_the_chain_verifies_from_it() {
    let Some(python) = validator_python() else {
        println!("SKIP OCSF schema validation: target/mcp-venv lacks ocsf-json-schema/jsonschema (`cargo xtask setup` installs tests/mcp/requirements.txt)");
        return;
    };
    let d = Daemon::start();
    some_calls(&d, "v1");
    let gateway = export_ocsf(&d, &d.state.join("../gateway.ocsf.jsonl"));
    assert!(gateway.len() >= 6);

    let kernel_state = tempfile::tempdir().unwrap();
    kernel_log(kernel_state.path());
    let file = kernel_state.path().join("kernel.ocsf.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args([
            "audit",
            "export",
            "--format",
            "ocsf",
            "--hostname",
            "host-7",
            "--db",
        ])
        .arg(kernel_state.path().join("audit.db"))
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel = lines(&file);
    let class_of = |action: &str| {
        kernel
            .iter()
            .find(|e| e["unmapped"]["agentd"]["action"] == action)
            .map(|e| e["class_uid"].as_u64().unwrap())
    };
    assert_eq!(class_of("exec"), Some(1007));
    assert_eq!(class_of("file_open"), Some(1001));
    assert_eq!(class_of("connect"), Some(4001));
    assert_eq!(class_of("unix_stream_connect"), Some(4001));
    assert!(kernel
        .iter()
        .filter(|e| e["class_uid"] != 6002)
        .all(|e| e["device"]["hostname"] == "host-7"));

    let (ok, report) = validate(&python, &d.state.join("../gateway.ocsf.jsonl"));
    assert!(ok, "gateway events fail the OCSF schema:\n{report}");
    let (ok, report) = validate(&python, &file);
    assert!(ok, "kernel events fail the OCSF schema:\n{report}");
    for class in ["class 1001", "class 1007", "class 4001"] {
        assert!(report.contains(class), "{class} validated:\n{report}");
    }

    // Control: the validator does fail an event missing a required field.
    let mut broken = kernel.clone();
    broken[3].as_object_mut().unwrap().remove("file");
    let broken_file = kernel_state.path().join("broken.jsonl");
    std::fs::write(
        &broken_file,
        broken
            .iter()
            .map(|e| e.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ok, report) = validate(&python, &broken_file);
    assert!(
        !ok && report.contains("'file' is a required property"),
        "{report}"
    );

    // The chain verifies from the OCSF file alone; an edit inside an event is caught.
    let key = kernel_state.path().join("audit-public.pem");
    let pem = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["audit", "public-key", "--state-dir"])
        .arg(kernel_state.path())
        .output()
        .unwrap();
    std::fs::write(&key, &pem.stdout).unwrap();
    let verify = |f: &Path| {
        Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .args(["audit", "verify", "--public-key"])
            .arg(&key)
            .arg("--export")
            .arg(f)
            .output()
            .unwrap()
    };
    let v = verify(&file);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let mut edited = kernel.clone();
    edited[3]["unmapped"]["agentd"]["target"] = "/srv/charts/patient-99.txt".into();
    let edited_file = kernel_state.path().join("edited.jsonl");
    std::fs::write(
        &edited_file,
        edited
            .iter()
            .map(|e| e.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let v = verify(&edited_file);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        !v.status.success() && text.contains("first bad seq 4"),
        "{text}"
    );
}
