//! Human approval end to end: the real daemon, the real `agentctl`, the real
//! socket. A call whose action needs approval waits; an admin's answer
//! (`agentctl approvals approve|deny`) or the deadline ends it; every step
//! is in the audit chain, which still verifies.
mod gateway_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

/// `deploy` needs approval; `target = dev` is outside the allowed values.
const POLICY: &str = r#"
id = "approvals-test"

[actions.deploy]
description = "Deploy a service."
approval = "required"

[actions.status]
description = "Read a service's status."

[roles.owner]
[roles.owner.allow.deploy.target]
type = "string"
values = ["prod", "staging"]
[roles.owner.allow.status.target]
type = "string"
"#;

fn policy_file(dir: &Path, text: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn start(extra: &str) -> Daemon {
    Daemon::start_full(extra, |dir| policy_file(dir, POLICY, "approvals.toml"))
}

/// `agentctl check` in a thread (it blocks while the call waits).
fn check_async(d: &Daemon, msg: &str, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let mut a = vec!["check", "--json", "--message", msg, "deploy"];
    a.extend_from_slice(args);
    let mut cmd = d.agentctl_cmd(&a);
    std::thread::spawn(move || cmd.output().unwrap())
}

fn decision_of(out: Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "decision JSON: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn pending(d: &Daemon) -> Vec<Value> {
    let v: Value = serde_json::from_str(&d.ok(&["approvals", "list", "--json"])).unwrap();
    v["approvals"].as_array().unwrap().clone()
}

/// Waits until `n` approvals are pending; returns them.
fn wait_pending(d: &Daemon, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pending(d);
        if p.len() == n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} pending, have {p:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn export(d: &Daemon) -> Vec<Value> {
    d.ok(&[
        "audit",
        "export",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--format",
        "jsonl",
    ])
    .lines()
    .map(|l| serde_json::from_str::<Value>(l).unwrap())
    .filter(|l| l["type"] == "record")
    .collect()
}

fn rows_of(d: &Daemon, call_id: &str) -> Vec<Value> {
    export(d)
        .into_iter()
        .filter(|r| r["call_id"] == call_id)
        .collect()
}

fn verify_chain(d: &Daemon) {
    let pem = d.dir.path().join("audit.pub.pem");
    std::fs::write(
        &pem,
        d.ok(&[
            "audit",
            "public-key",
            "--state-dir",
            d.state.to_str().unwrap(),
        ]),
    )
    .unwrap();
    let out = d.ok(&[
        "audit",
        "verify",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--public-key",
        pem.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["result"], "pass", "{v}");
}

/// (kind, action, decision, reason_code) of each row, in order.
fn summary(rows: &[Value]) -> Vec<(String, String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["action"].as_str().unwrap_or("").to_owned(),
                r["decision"].as_str().unwrap_or("").to_owned(),
                r["reason_code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn row(kind: &str, action: &str, decision: &str, reason: &str) -> (String, String, String, String) {
    (kind.into(), action.into(), decision.into(), reason.into())
}

#[test]
fn approve_and_deny_by_an_admin_with_the_control_and_the_audit_chain() {
    let d = start("[approvals]\ntimeout_secs = 60\n");
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy prod please");

    // A call that would be denied is denied at once, never escalated.
    assert_decision(
        &d.check(&m, "deploy", &["target=dev"]),
        "deny",
        "value_not_allowed",
    );
    assert!(pending(&d).is_empty());

    // Approve: the call waits, then returns allowed with its receipt.
    let waiting = check_async(&d, &m, &["target=prod"]);
    let p = wait_pending(&d, 1);
    let id = p[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(p[0]["operator"], "olivia");
    assert_eq!(p[0]["session"], "slack:D-olivia");
    assert_eq!(p[0]["action"], "deploy");
    assert_eq!(p[0]["arguments"]["target"], "prod");
    assert!(p[0]["deadline"].as_i64().unwrap() > p[0]["created_at"].as_i64().unwrap());
    let said = d.ok(&[
        "approvals",
        "approve",
        &id,
        "--reason",
        "change window open",
    ]);
    assert!(said.contains("approved"), "{said}");
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "allowed call exits 0");
    let dec = decision_of(out);
    assert_decision(&dec, "allow", "ok");
    assert_eq!(dec["call_id"], id.as_str());
    let receipt = d.state.join("receipts").join(format!("{id}.png"));
    let until = Instant::now() + Duration::from_secs(60);
    while !receipt.exists() {
        assert!(
            Instant::now() < until,
            "no receipt at {}",
            receipt.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = rows_of(&d, &id);
    assert_eq!(
        summary(&rows),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_approve", "allow", "approval_granted"),
            row("tool_call", "deploy", "allow", "ok"),
        ],
        "{rows:#?}"
    );
    // Recorded as an admin's approval: who and through what, not an operator.
    assert_eq!(rows[1]["operator"], "uid:0");
    assert!(rows[1]["target"].as_str().unwrap().contains("channel:api"));
    assert!(rows[1]["target"]
        .as_str()
        .unwrap()
        .contains("change window open"));
    assert_eq!(rows[2]["seq"], dec["audit_seq"]);
    // A second answer is refused, and changes nothing.
    let again = d.agentctl(&["approvals", "deny", &id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("approval_already_decided"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let unknown = d.agentctl(&["approvals", "approve", "00000000000000000000000000000000"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_approval"));

    // Deny: the call is refused with approval_denied.
    let waiting = check_async(&d, &m, &["target=staging"]);
    let id2 = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    d.ok(&["approvals", "deny", &id2, "--reason", "not today"]);
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "denied call exits 2");
    let dec = decision_of(out);
    assert_decision(&dec, "deny", "approval_denied");
    assert!(
        dec["detail"].as_str().unwrap().contains("not today"),
        "{dec}"
    );
    assert_eq!(
        summary(&rows_of(&d, &id2)),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_deny", "deny", "approval_denied"),
            row("tool_call", "deploy", "deny", "approval_denied"),
        ]
    );
    assert!(!d.state.join("receipts").join(format!("{id2}.png")).exists());

    // Control: the same call under a policy without `approval` is allowed at once.
    let control = policy_file(
        d.dir.path(),
        &POLICY.replace("approval = \"required\"\n", ""),
        "control.toml",
    );
    d.ok(&["policy", "load", control.to_str().unwrap()]);
    let started = Instant::now();
    let dec = d.check(&m, "deploy", &["target=prod"]);
    assert_decision(&dec, "allow", "ok");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(pending(&d).is_empty());
    assert_eq!(
        summary(&rows_of(&d, dec["call_id"].as_str().unwrap())),
        vec![row("tool_call", "deploy", "allow", "ok")]
    );

    // Approvals are admin-only: the agent user's uid is refused.
    let nobody = d
        .agentctl_cmd(&["approvals", "list"])
        .uid(65534)
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("permission_denied"));
    verify_chain(&d);
}

#[test]
fn no_answer_times_out_a_full_queue_refuses_and_a_restart_expires() {
    let mut d = start("[approvals]\ntimeout_secs = 2\nmax_pending = 1\n");
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy");

    // Nobody answers: approval_timeout after the configured 2 s. Meanwhile
    // the queue (max 1) refuses a second call at once.
    let started = Instant::now();
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    let full = d.check(&m, "deploy", &["target=staging"]);
    assert_decision(&full, "deny", "approval_queue_full");
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "deny", "approval_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(
        summary(&rows_of(&d, &id)),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("tool_call", "deploy", "deny", "approval_timeout"),
        ]
    );
    // Too late to answer.
    let late = d.agentctl(&["approvals", "approve", &id]);
    assert!(String::from_utf8_lossy(&late.stderr).contains("approval_already_decided"));

    // SIGTERM while a call waits: the caller hears approval_expired.
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    assert!(d.stop().success(), "{}", d.log_text());
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "deny", "approval_expired");

    // A crash (SIGKILL) while a call waits: the next start expires it, audited.
    d.spawn();
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy again");
    let waiting = check_async(&d, &m, &["target=prod"]);
    let crashed = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = waiting.join().unwrap();
    let _ = d.stop_killed();
    d.spawn();
    assert!(pending(&d).is_empty());
    let rows = summary(&rows_of(&d, &crashed));
    assert_eq!(
        rows,
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_expire", "deny", "approval_expired"),
        ]
    );
    assert!(summary(&rows_of(&d, &id)).contains(&row(
        "admin",
        "approval_expire",
        "deny",
        "approval_expired"
    )));
    let never = d.agentctl(&["approvals", "approve", &crashed]);
    assert!(String::from_utf8_lossy(&never.stderr).contains("approval_already_decided"));
    verify_chain(&d);
}
