//! Signed messages v2 (audience and scope), end to end through the real
//! daemon, socket and `agentctl`: every refusal is checked with its audit
//! row and beside a control that succeeds; bad input stores nothing, the
//! daemon keeps serving and the audit chain verifies.
mod gateway_support;

use std::path::Path;
use std::process::{Command, Output};

use gateway_support::{assert_decision, create_agent, demo_policy, enforcement_ready, Daemon};
use hyper::Method;
use serde_json::{json, Value};

/// `agentctl send` with extra flags; the raw output.
fn send(d: &Daemon, op: &str, key: &Path, flags: &[&str], text: &str) -> Output {
    let mut a = vec![
        "send",
        "--operator",
        op,
        "--key-file",
        key.to_str().unwrap(),
        "--session",
        "slack:C-v2",
    ];
    a.extend_from_slice(flags);
    a.push(text);
    d.agentctl(&a)
}

/// `send` that must be accepted; the active-message id.
fn accepted(d: &Daemon, op: &str, key: &Path, flags: &[&str]) -> String {
    let out = send(d, op, key, flags, "do the thing");
    assert!(out.status.success(), "send {flags:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `send` that must be refused with `code` (exit 2), with its audit row.
fn refused(d: &Daemon, op: &str, key: &Path, flags: &[&str], code: &str) -> Value {
    let text = format!("refused {code} {flags:?}");
    let out = send(d, op, key, flags, &text);
    assert_eq!(out.status.code(), Some(2), "send {flags:?}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("message refused: {code}")),
        "{stderr}"
    );
    let row = d
        .audit_records()
        .into_iter()
        .rfind(|r| r["kind"] == "message")
        .expect("a message row");
    assert_eq!(
        (row["decision"].as_str(), row["reason_code"].as_str()),
        (Some("deny"), Some(code)),
        "{row}"
    );
    assert_eq!(row["active_message_id"], "", "{row}");
    row
}

fn rows_of(d: &Daemon, call_id: &Value) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["call_id"] == *call_id)
        .collect()
}

fn active_messages(d: &Daemon) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        d.state.join("gateway.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row("SELECT count(*) FROM active_messages", [], |r| r.get(0))
        .unwrap()
}

/// The daemon on the demo policy (or `policy_text`) with host id `ward-3`.
fn daemon(policy_text: Option<String>) -> Daemon {
    Daemon::start_gateway("", "host_id = \"ward-3\"", |dir| match policy_text {
        Some(text) => {
            let p = dir.join("policy.toml");
            std::fs::write(&p, text).unwrap();
            p
        }
        None => demo_policy().canonicalize().unwrap(),
    })
}

#[test]
fn a_message_for_another_host_is_refused_with_its_row() {
    let d = daemon(None);
    let key = d.enroll("olivia", "owner");
    let row = refused(
        &d,
        "olivia",
        &key,
        &["--for-host", "ward-4"],
        "message_wrong_host",
    );
    assert!(
        row["target"]
            .as_str()
            .unwrap()
            .ends_with(" for_host:ward-4"),
        "{row}"
    );
    let seq = row["seq"].to_string();
    let ex = d.ok(&["explain", &seq, "--state-dir", d.state.to_str().unwrap()]);
    assert!(
        ex.contains("another host") && ex.contains("--for-host"),
        "{ex}"
    );
    assert_eq!(active_messages(&d), 0, "nothing stored");
    // Control: the same operator, this host.
    let id = accepted(&d, "olivia", &key, &["--for-host", "ward-3"]);
    assert_decision(
        &d.check(&id, "read_chart", &["path=/srv/charts/p1.json"]),
        "allow",
        "ok",
    );
    assert!(
        d.log_text().contains("ward-3"),
        "the host id is logged at start"
    );
    d.verify_chain();
}

#[test]
fn a_call_outside_the_signed_scope_is_denied_though_the_role_allows_it() {
    let d = daemon(None);
    let key = d.enroll("olivia", "owner");
    let id = accepted(
        &d,
        "olivia",
        &key,
        &["--scope", "read_chart:path=/srv/charts/patient-7*"],
    );
    // The message's row records what the operator signed.
    let row = d
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "message" && r["active_message_id"] == id.as_str())
        .expect("the message's row");
    assert!(
        row["target"].as_str().unwrap().ends_with(
            r#" scope:[{"action":"read_chart","args":{"path":"/srv/charts/patient-7*"}}]"#
        ),
        "{row}"
    );
    // In scope.
    assert_decision(
        &d.check(&id, "read_chart", &["path=/srv/charts/patient-7/a.json"]),
        "allow",
        "ok",
    );
    // The injected follow-up: the owner's role allows ls, the message does not.
    let out = d.check(&id, "shell", &["command=ls /workspace"]);
    assert_decision(&out, "deny", "outside_message_scope");
    let rows = rows_of(&d, &out["call_id"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason_code"], "outside_message_scope");
    assert_eq!(rows[0]["decision"], "deny");
    // Another patient's chart, and a path that only looks like patient 7's.
    let other = d.check(&id, "read_chart", &["path=/srv/charts/patient-8.json"]);
    assert_decision(&other, "deny", "outside_message_scope");
    let dotted = d.check(
        &id,
        "read_chart",
        &["path=/srv/charts/patient-7/../patient-8.json"],
    );
    assert_decision(&dotted, "deny", "invalid_path");
    // explain says it in words.
    let seq = rows[0]["seq"].to_string();
    let ex = d.ok(&["explain", &seq, "--state-dir", d.state.to_str().unwrap()]);
    assert!(ex.contains("step 7b") && ex.contains("scope"), "{ex}");
    // Control: an unscoped v2 message and a v1 message of the same operator.
    for flags in [&["--v2"][..], &[][..]] {
        let plain = accepted(&d, "olivia", &key, flags);
        assert_decision(
            &d.check(&plain, "shell", &["command=ls /workspace"]),
            "allow",
            "ok",
        );
    }
    d.verify_chain();
}

#[test]
fn a_policy_may_refuse_v1_and_still_accept_v2() {
    let demo = std::fs::read_to_string(demo_policy()).unwrap();
    let strict = demo.replacen("v1 = \"accept\"", "v1 = \"refuse\"", 1);
    assert_ne!(strict, demo);
    let d = daemon(Some(strict));
    let key = d.enroll("olivia", "owner");
    refused(&d, "olivia", &key, &[], "message_version_refused");
    assert_eq!(active_messages(&d), 0, "nothing stored");
    let id = accepted(&d, "olivia", &key, &["--v2"]);
    assert_decision(
        &d.check(&id, "read_chart", &["path=/srv/charts/p1.json"]),
        "allow",
        "ok",
    );
    d.verify_chain();
}

/// A v2 message JSON signed with `key`, with `scope` spliced in after
/// signing (the bad ones never reach the signature check).
fn raw_v2(key: &[u8], nonce: &str, scope: Value) -> Vec<u8> {
    let now = agentd::gateway::unix_now();
    let m = agentd::protocol::SignedMessage::new_signed(key, "olivia", "s", nonce, now, "x");
    let m = agentd::protocol::SignedMessage::new_signed_v2(key, &m, None, None, None);
    let mut v = serde_json::to_value(&m).unwrap();
    v["scope"] = scope;
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn bad_scopes_are_refused_precisely_and_store_nothing() {
    let d = daemon(None);
    let key_file = d.enroll("olivia", "owner");
    let key = hex::decode(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    let many: Vec<Value> = (0..33).map(|_| json!({"action": "read_chart"})).collect();
    let cases = [
        (json!(many), 400, "invalid_scope", "33 entries"),
        (
            json!([{"action": "read_chart", "args": {"path": "/srv/*.json"}}]),
            400,
            "invalid_scope",
            "`*` before its end",
        ),
        (
            json!([{"action": "read_chart", "args": {"path": "x".repeat(1025)}}]),
            400,
            "invalid_scope",
            "1025 bytes",
        ),
        (
            json!([{"action": "read_chart", "argz": {}}]),
            400,
            "unknown_field",
            "argz",
        ),
        (
            json!([{"action": "read_chart", "args": {"path": 7}}]),
            400,
            "invalid_json",
            "string",
        ),
    ];
    for (scope, status, code, says) in cases {
        let (s, v) = d.raw(
            Method::POST,
            "/v1/messages",
            raw_v2(&key, "nonce-bad-0000001", scope),
        );
        assert_eq!((s, v["reason_code"].as_str()), (status, Some(code)), "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    // A key given twice (JSON text: serde_json::Value would merge it).
    let dup = String::from_utf8(raw_v2(&key, "nonce-bad-0000001", json!([])))
        .unwrap()
        .replace(
            r#""scope":[]"#,
            r#""scope":[{"action":"read_chart","args":{"path":"/a","path":"/b"}}]"#,
        );
    let (s, v) = d.raw(Method::POST, "/v1/messages", dup.into_bytes());
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("twice"), "{v}");
    assert_eq!(active_messages(&d), 0, "nothing stored");
    // Still serving; the nonce was never spent: a good message with it works.
    let (s, v) = d.raw(Method::GET, "/v1/health", vec![]);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let good = raw_v2(&key, "nonce-bad-0000001", json!([{"action": "read_chart"}]));
    let good = {
        // Re-sign with the scope in place.
        let mut m: agentd::protocol::SignedMessage = serde_json::from_slice(&good).unwrap();
        m.sign_with(&key);
        serde_json::to_vec(&m).unwrap()
    };
    let (s, v) = d.raw(Method::POST, "/v1/messages", good);
    assert_eq!((s, v["trust"].as_str()), (200, Some("verified")), "{v}");
    assert_eq!(active_messages(&d), 1);
    d.verify_chain();
}

/// `agentctl check --json` of a read_chart on message `m` from `cgroup`.
fn chart_from(d: &Daemon, cgroup: &str, m: &str) -> Value {
    let script = format!("echo 0 > {cgroup}/cgroup.procs && exec \"$0\" \"$@\"");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_agentctl"))
        .args(["check", "--json", "--message", m, "read_chart"])
        .arg("path=/srv/charts/p1.json")
        .env("AGENTD_SOCKET", &d.socket)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn a_message_for_one_agent_is_refused_to_another() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root (agent cgroups, BPF)");
        return;
    }
    let d = daemon(None);
    if enforcement_ready(&d).is_none() {
        return;
    }
    let alpha = create_agent(&d, "alpha");
    let beta = create_agent(&d, "beta");
    let key = d.enroll("olivia", "owner");
    let m = accepted(&d, "olivia", &key, &["--for-agent", "alpha"]);
    // beta learned the id and uses it before alpha: refused, audited.
    let stolen = chart_from(&d, &beta, &m);
    assert_decision(&stolen, "deny", "message_other_audience");
    assert!(
        stolen["detail"].as_str().unwrap().contains("alpha"),
        "{stolen}"
    );
    let rows = rows_of(&d, &stolen["call_id"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason_code"], "message_other_audience");
    assert_eq!(rows[0]["agent"], "beta");
    // Control: alpha's call on the same message is allowed.
    assert_decision(&chart_from(&d, &alpha, &m), "allow", "ok");
    // Control for beta: a message for beta works for beta.
    let mb = accepted(&d, "olivia", &key, &["--for-agent", "beta"]);
    assert_decision(&chart_from(&d, &beta, &mb), "allow", "ok");
    d.verify_chain();
}
