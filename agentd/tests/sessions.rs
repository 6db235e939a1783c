//! Read-only sessions, elevations and anomaly escalation end to end: the
//! real daemon, the real `agentctl`, the real socket. A read-only
//! session's read proceeds, its write waits for an elevation; once an
//! approver elevates the session, the same action proceeds without asking
//! until the elevation expires, while another action still asks; an admin
//! action is refused without asking. A session with many denials trips
//! the anomaly check (audited once, with its figures). Every denial has its
//! control, and the audit chain verifies.
mod gateway_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

/// Read-only sessions, elevations of 3 s. `grant_access` is admin by its
/// name; `deploy` and `send_report` are mutating.
const POLICY: &str = r#"
id = "sessions-test"

[sessions]
start = "read_only"
elevation_secs = 3

[actions.read_status]
[actions.deploy]
[actions.send_report]
[actions.grant_access]

[roles.owner]
[roles.owner.allow.read_status]
[roles.owner.allow.deploy]
[roles.owner.allow.send_report]
[roles.owner.allow.grant_access]
"#;

fn policy_file(dir: &Path, text: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `agentctl check` in a thread (it blocks while the call waits).
fn check_async(d: &Daemon, msg: &str, action: &str) -> std::thread::JoinHandle<Output> {
    let mut cmd = d.agentctl_cmd(&["check", "--json", "--message", msg, action]);
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

/// Waits until one approval is pending; returns it.
fn one_pending(d: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pending(d);
        if p.len() == 1 {
            return p[0].clone();
        }
        assert!(Instant::now() < deadline, "expected 1 pending, have {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (kind, action, decision, reason_code) of the rows of call `id`.
fn rows_of(d: &Daemon, id: &str) -> Vec<(String, String, String, String)> {
    d.audit_records()
        .iter()
        .filter(|r| r["call_id"] == id)
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            (f("kind"), f("action"), f("decision"), f("reason_code"))
        })
        .collect()
}

fn row(kind: &str, action: &str, decision: &str, reason: &str) -> (String, String, String, String) {
    (kind.into(), action.into(), decision.into(), reason.into())
}

fn record(d: &Daemon, call_id: &str, action: &str) -> Value {
    d.audit_records()
        .into_iter()
        .find(|r| r["call_id"] == call_id && r["action"] == action)
        .unwrap_or_else(|| panic!("no `{action}` row for call {call_id}"))
}

/// Escalates `action` on `msg` and answers it (`approve` or `deny`);
/// returns the approval and the call's decision.
fn escalate_and(d: &Daemon, msg: &str, action: &str, answer: &str) -> (Value, Value) {
    let waiting = check_async(d, msg, action);
    let p = one_pending(d);
    d.ok(&["approvals", answer, p["id"].as_str().unwrap()]);
    (p, decision_of(waiting.join().unwrap()))
}

#[test]
fn a_read_only_session_is_elevated_per_action_until_expiry() {
    let d = Daemon::start_full("[approvals]\ntimeout_secs = 60\n", |dir| {
        policy_file(dir, POLICY, "sessions.toml")
    });
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "ship it");

    // A read proceeds at once.
    assert_decision(&d.check(&m, "read_status", &[]), "allow", "ok");

    // A write waits for an elevation; the approval record says so.
    let (p, dec) = escalate_and(&d, &m, "deploy", "approve");
    assert_eq!(p["elevation"]["actions"], serde_json::json!(["deploy"]));
    assert_eq!(p["elevation"]["effect"], "mutating");
    assert_eq!(p["elevation"]["secs"], 3);
    assert_decision(&dec, "allow", "ok");
    let id = p["id"].as_str().unwrap();
    assert_eq!(
        rows_of(&d, id),
        vec![
            row("tool_call", "deploy", "escalate", "elevation_required"),
            row("admin", "approval_approve", "allow", "approval_granted"),
            row("admin", "session_elevate", "allow", "elevation_granted"),
            row("tool_call", "deploy", "allow", "ok"),
        ]
    );
    let esc = record(&d, id, "deploy");
    assert!(
        esc["target"]
            .as_str()
            .unwrap()
            .contains("elevation:deploy effect:mutating"),
        "{esc}"
    );
    let elevate = record(&d, id, "session_elevate");
    assert_eq!(elevate["operator"], "uid:0");
    assert_eq!(elevate["session"], "slack:D-olivia");
    let target = elevate["target"].as_str().unwrap();
    assert!(target.starts_with("actions:deploy until:"), "{target}");
    let list = d.ok(&["session", "list"]);
    assert!(
        list.contains("read_only") && list.contains("elevated deploy until"),
        "{list}"
    );

    // The same action again: allowed without asking (one row, no approval).
    let again = d.check(&m, "deploy", &[]);
    assert_decision(&again, "allow", "ok");
    assert_eq!(
        rows_of(&d, again["call_id"].as_str().unwrap()),
        vec![row("tool_call", "deploy", "allow", "ok")]
    );
    assert!(pending(&d).is_empty());

    // Another action is not elevated: it asks, and a denial denies.
    let (p, dec) = escalate_and(&d, &m, "send_report", "deny");
    assert_eq!(
        p["elevation"]["actions"],
        serde_json::json!(["send_report"])
    );
    assert_decision(&dec, "deny", "approval_denied");

    // An admin action is refused at once: nobody is asked.
    let admin = d.check(&m, "grant_access", &[]);
    assert_decision(&admin, "deny", "admin_not_elevatable");
    assert!(pending(&d).is_empty());
    assert_eq!(
        rows_of(&d, admin["call_id"].as_str().unwrap()),
        vec![row(
            "tool_call",
            "grant_access",
            "deny",
            "admin_not_elevatable"
        )]
    );
    let seq = admin["audit_seq"].as_u64().unwrap().to_string();
    let why = d.ok(&["explain", &seq, "--state-dir", d.state.to_str().unwrap()]);
    assert!(why.contains("never elevates an admin action"), "{why}");
    assert!(why.contains("effect class admin"), "{why}");

    // After the elevation's 3 s the action asks again.
    std::thread::sleep(Duration::from_millis(3100));
    let (_, dec) = escalate_and(&d, &m, "deploy", "deny");
    assert_decision(&dec, "deny", "approval_denied");

    // The kill switch ends an elevation: after a resume the action asks again.
    let (_, dec) = escalate_and(&d, &m, "deploy", "approve");
    assert_decision(&dec, "allow", "ok");
    d.ok(&["suspend", "operator", "olivia", "--reason", "incident"]);
    d.ok(&["resume", "operator", "olivia"]);
    let (_, dec) = escalate_and(&d, &m, "deploy", "deny");
    assert_decision(&dec, "deny", "approval_denied");

    // Control: the same calls in a `full` session proceed at once.
    let full = policy_file(
        d.dir.path(),
        &POLICY.replace("start = \"read_only\"\n", ""),
        "full.toml",
    );
    d.ok(&["policy", "load", full.to_str().unwrap()]);
    for action in ["deploy", "send_report", "grant_access"] {
        assert_decision(&d.check(&m, action, &[]), "allow", "ok");
    }
    assert!(pending(&d).is_empty());
    d.verify_chain();
}

/// A full-session policy with an anomaly check that denies.
fn anomaly_policy() -> String {
    format!(
        "{}[anomaly]\nmin_calls = 5\nmax_denial_rate = 0.3\nthen = \"deny\"\n",
        POLICY.replace("start = \"read_only\"\n", "")
    )
}

#[test]
fn many_denials_trip_the_session_and_bad_settings_are_refused() {
    let d = Daemon::start_full("", |dir| {
        policy_file(dir, &anomaly_policy(), "anomaly.toml")
    });
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-busy", "try things");
    let calm = d.send("olivia", &key, "slack:D-calm", "check status");

    // 2 reads, then 3 calls of an action the policy does not define.
    for _ in 0..2 {
        assert_decision(&d.check(&m, "read_status", &[]), "allow", "ok");
    }
    for _ in 0..2 {
        assert_decision(
            &d.check(&m, "wipe_everything", &[]),
            "deny",
            "unknown_action",
        );
    }
    let tripping = d.check(&m, "wipe_everything", &[]);
    assert_decision(&tripping, "deny", "unknown_action");
    // Audited once, with the figures that tripped it.
    let trips: Vec<Value> = d
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "session_anomaly")
        .collect();
    assert_eq!(trips.len(), 1, "{trips:#?}");
    assert_eq!(
        trips[0]["target"],
        "denials=3/5 (60%) threshold=30% then:deny"
    );
    assert_eq!(trips[0]["reason_code"], "anomaly_denied");
    assert_eq!(trips[0]["session"], "slack:D-busy");
    assert_eq!(trips[0]["call_id"], tripping["call_id"]);
    // The session's next calls are denied, even a read.
    let denied = d.check(&m, "read_status", &[]);
    assert_decision(&denied, "deny", "anomaly_denied");
    assert!(denied["detail"]
        .as_str()
        .unwrap()
        .contains("denials=3/5 (60%)"));
    let seq = denied["audit_seq"].as_u64().unwrap().to_string();
    let why = d.ok(&["explain", &seq, "--state-dir", d.state.to_str().unwrap()]);
    assert!(why.contains("anomaly check"), "{why}");
    assert!(
        why.contains("agentctl session release slack:D-busy"),
        "{why}"
    );
    assert!(d.ok(&["session", "list"]).contains("anomaly denials=3/5"));
    assert_eq!(
        d.audit_records()
            .iter()
            .filter(|r| r["action"] == "session_anomaly")
            .count(),
        1,
        "tripped once"
    );

    // Control: a session under the threshold (1 denial in 6) is unaffected.
    for _ in 0..5 {
        assert_decision(&d.check(&calm, "read_status", &[]), "allow", "ok");
    }
    assert_decision(&d.check(&calm, "nope", &[]), "deny", "unknown_action");
    assert_decision(&d.check(&calm, "read_status", &[]), "allow", "ok");

    // Release resets it: the next message in the session proceeds.
    d.ok(&["session", "release", "slack:D-busy"]);
    let m = d.send("olivia", &key, "slack:D-busy", "again, carefully");
    assert_decision(&d.check(&m, "read_status", &[]), "allow", "ok");

    // Bad settings are refused at load with their location; the policy stays.
    let before = d.ok(&["policy", "show", "--json"]);
    for (text, at) in [
        (
            anomaly_policy().replace("max_denial_rate = 0.3", "max_denial_rate = 30"),
            "anomaly.max_denial_rate",
        ),
        (
            anomaly_policy().replace("min_calls = 5", "min_calls = 0"),
            "anomaly.min_calls",
        ),
        (
            POLICY.replace("elevation_secs = 3", "elevation_secs = 0"),
            "sessions.elevation_secs",
        ),
        (
            POLICY.replace("[actions.deploy]", "[actions.deploy]\neffect = \"write\""),
            "actions.deploy.effect",
        ),
        (
            POLICY.replace("elevation_secs = 3", "elevation_secs = 3\nmode = \"full\""),
            "unknown field `mode`",
        ),
        (
            POLICY.replace("start = \"read_only\"", "start = \"readonly\""),
            "unknown variant `readonly`",
        ),
    ] {
        let bad = policy_file(d.dir.path(), &text, "bad.toml");
        let out = d.agentctl(&["policy", "load", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(at), "{at}: {err}");
    }
    assert_eq!(d.ok(&["policy", "show", "--json"]), before);
    // The daemon keeps serving.
    assert_decision(&d.check(&m, "read_status", &[]), "allow", "ok");
    d.verify_chain();
}

#[test]
fn a_tripped_session_asks_and_an_approval_resets_it() {
    let policy = format!(
        "{}[anomaly]\nmin_calls = 5\nmax_write_ratio = 0.8\nthen = \"approval\"\n",
        POLICY.replace("start = \"read_only\"\n", "")
    );
    let d = Daemon::start_full("[approvals]\ntimeout_secs = 60\n", |dir| {
        policy_file(dir, &policy, "anomaly-approval.toml")
    });
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-writer", "write a lot");
    // 5 writes of 5 calls (100 % > 80 %): the 5th trips the session.
    for _ in 0..5 {
        assert_decision(&d.check(&m, "send_report", &[]), "allow", "ok");
    }
    let trip = d
        .audit_records()
        .into_iter()
        .find(|r| r["action"] == "session_anomaly")
        .expect("the trip's row");
    assert_eq!(
        trip["target"],
        "writes=5/5 (100%) threshold=80% then:approval"
    );
    assert_eq!(trip["reason_code"], "anomaly_escalated");
    assert_eq!(trip["decision"], "escalate");
    // The next call, even a read, waits for a human; the approval says why.
    let (p, dec) = escalate_and(&d, &m, "read_status", "approve");
    assert_eq!(p["anomaly"], "writes=5/5 (100%) threshold=80%");
    assert!(p.get("elevation").is_none(), "{p}");
    assert_decision(&dec, "allow", "ok");
    assert_eq!(
        rows_of(&d, p["id"].as_str().unwrap()),
        vec![
            row("tool_call", "read_status", "escalate", "anomaly_escalated"),
            row("admin", "approval_approve", "allow", "approval_granted"),
            row("tool_call", "read_status", "allow", "ok"),
        ]
    );
    // The approval reset the counts: the session's calls proceed again.
    assert_decision(&d.check(&m, "send_report", &[]), "allow", "ok");
    assert_decision(&d.check(&m, "read_status", &[]), "allow", "ok");
    assert!(pending(&d).is_empty());
    d.verify_chain();
}
