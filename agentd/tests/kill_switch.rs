//! The kill switch end to end: the real daemon, the real `agentctl`, the
//! real socket and SQLite. Suspending an operator, an agent or everything
//! refuses its messages and tool calls (each refusal checked with its audit
//! row, beside a control that is still allowed); resume restores them; a
//! suspension survives a restart; bad requests change nothing.
mod gateway_support;

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use gateway_support::{assert_decision, Daemon};
use hyper::Method;
use serde_json::{json, Value};

const USER: &str = "agentd-agent";

/// The decision row of one call.
fn row_of(d: &Daemon, decision: &Value) -> Value {
    d.audit_records()
        .into_iter()
        .rfind(|r| r["call_id"] == decision["call_id"])
        .unwrap_or_else(|| panic!("no audit row for {decision}"))
}

/// Admin rows with `action`.
fn admin_rows(d: &Daemon, action: &str) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "admin" && r["action"] == action)
        .collect()
}

/// The audit chain verifies offline.
fn chain_intact(d: &Daemon) {
    let db = agentd::audit::store::db_path(&d.state);
    let key = agentd::audit::checkpoint::load_key(&d.state)
        .unwrap()
        .verifying_key();
    agentd::audit::verify_db(&db, &key, &[]).expect("the audit chain verifies");
}

/// A signed message that agentd refuses; returns agentctl's stderr.
fn send_refused(d: &Daemon, op: &str, key: &std::path::Path, extra: &[&str]) -> String {
    let mut a = vec![
        "send",
        "--operator",
        op,
        "--key-file",
        key.to_str().unwrap(),
        "--session",
        "slack:D-ks",
    ];
    a.extend_from_slice(extra);
    a.push("hello");
    let out = d.agentctl(&a);
    assert!(!out.status.success(), "message accepted: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const EXPORT: [&str; 1] = ["format=jsonl"];
const CHART: [&str; 1] = ["path=/srv/charts/p-0042.json"];

#[test]
fn suspend_operator_then_all_then_resume() {
    let d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let chen = d.enroll("dr-chen", "clinician");
    let m = d.send("olivia", &olivia, "slack:D-olivia", "export the log");
    let c = d.send("dr-chen", &chen, "slack:D-chen", "read chart 42");
    // Control: both allowed before any suspension.
    assert_decision(&d.check(&m, "export_audit", &EXPORT), "allow", "ok");
    assert_decision(&d.check(&c, "read_chart", &CHART), "allow", "ok");

    let out = d.ok(&[
        "suspend",
        "operator",
        "olivia",
        "--reason",
        "leaked key INC-7",
    ]);
    assert!(out.contains("suspended operator olivia"), "{out}");
    // Her message's next call is refused, and recorded so.
    let denied = d.check(&m, "export_audit", &EXPORT);
    assert_decision(&denied, "deny", "operator_suspended");
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("leaked key INC-7"),
        "{denied}"
    );
    let row = row_of(&d, &denied);
    assert_eq!(
        (row["decision"].as_str(), row["reason_code"].as_str()),
        (Some("deny"), Some("operator_suspended"))
    );
    assert_eq!(row["operator"], "olivia");
    // Her new messages are refused (audited); the other operator still works.
    let err = send_refused(&d, "olivia", &olivia, &[]);
    assert!(err.contains("operator_suspended"), "{err}");
    let msg_row = d
        .audit_records()
        .into_iter()
        .rfind(|r| r["kind"] == "message")
        .unwrap();
    assert_eq!(msg_row["reason_code"], "operator_suspended");
    assert_decision(&d.check(&c, "read_chart", &CHART), "allow", "ok");
    let c2 = d.send("dr-chen", &chen, "slack:D-chen", "again");
    assert_decision(&d.check(&c2, "read_chart", &CHART), "allow", "ok");
    // The change itself is audited: who, scope, reason.
    let s = admin_rows(&d, "suspend");
    assert_eq!(s.len(), 1);
    let target = s[0]["target"].as_str().unwrap();
    assert!(
        target.starts_with("operator:olivia stop=false") && target.contains("leaked key INC-7"),
        "{target}"
    );
    assert_eq!(s[0]["operator"], "uid:0");

    // Everything: the other operator's calls and messages too.
    d.ok(&["suspend", "all", "--reason", "drill"]);
    let all = d.check(&c, "read_chart", &CHART);
    assert_decision(&all, "deny", "all_suspended");
    assert_eq!(row_of(&d, &all)["reason_code"], "all_suspended");
    let err = send_refused(&d, "dr-chen", &chen, &[]);
    assert!(err.contains("all_suspended"), "{err}");
    let out = d.agentctl(&["send", "--unsigned", "--session", "mail:x", "hi"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("all_suspended"),
        "{out:?}"
    );
    let listed = d.ok(&["suspend", "list"]);
    assert!(
        listed.contains("operator olivia") && listed.contains("drill"),
        "{listed}"
    );

    // Resume all: chen is back; olivia's own suspension stays until lifted.
    assert!(d.ok(&["resume", "all"]).contains("resumed all"));
    assert_decision(&d.check(&c, "read_chart", &CHART), "allow", "ok");
    assert_decision(
        &d.check(&m, "export_audit", &EXPORT),
        "deny",
        "operator_suspended",
    );
    d.ok(&["resume", "operator", "olivia"]);
    assert_decision(&d.check(&m, "export_audit", &EXPORT), "allow", "ok");
    let m2 = d.send("olivia", &olivia, "slack:D-olivia", "back");
    assert_decision(&d.check(&m2, "export_audit", &EXPORT), "allow", "ok");
    let r = admin_rows(&d, "resume");
    assert_eq!(r.len(), 2);
    assert!(r[1]["target"]
        .as_str()
        .unwrap()
        .starts_with("operator:olivia"));
    // Resuming what is not suspended is refused.
    let out = d.agentctl(&["resume", "operator", "olivia"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_suspended"));
    chain_intact(&d);
}

#[test]
fn a_suspension_survives_a_restart() {
    let mut d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let m = d.send("olivia", &olivia, "slack:D-olivia", "export the log");
    assert_decision(&d.check(&m, "export_audit", &EXPORT), "allow", "ok");
    d.ok(&[
        "suspend",
        "operator",
        "olivia",
        "--reason",
        "pending review",
    ]);
    assert!(d.stop().success());
    d.spawn();
    assert_decision(
        &d.check(&m, "export_audit", &EXPORT),
        "deny",
        "operator_suspended",
    );
    let err = send_refused(&d, "olivia", &olivia, &[]);
    assert!(err.contains("operator_suspended"), "{err}");
    let listed: Value = serde_json::from_str(&d.ok(&["suspend", "list", "--json"])).unwrap();
    assert_eq!(listed["suspensions"][0]["name"], "olivia");
    assert_eq!(listed["suspensions"][0]["reason"], "pending review");
    d.ok(&["resume", "operator", "olivia"]);
    assert_decision(&d.check(&m, "export_audit", &EXPORT), "allow", "ok");
    chain_intact(&d);
}

#[test]
fn bad_requests_are_refused_and_store_nothing() {
    let d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let m = d.send("olivia", &olivia, "slack:D-olivia", "export the log");
    // Lifecycle rows are the daemon's own (enforcement starts in the
    // background and may log after this count): what must not grow is
    // every other row.
    let requests_rows = || {
        d.audit_records()
            .into_iter()
            .filter(|r| r["kind"] != "lifecycle")
            .count()
    };
    let before = requests_rows();
    let cases: [(Value, u16, &str); 7] = [
        (
            json!({"scope": "operator", "name": "nobody"}),
            404,
            "unknown_operator",
        ),
        (
            json!({"scope": "agent", "name": "no-such-agent"}),
            404,
            "unknown_agent",
        ),
        (json!({"scope": "operator"}), 400, "invalid_suspension"),
        (
            json!({"scope": "all", "name": "x"}),
            400,
            "invalid_suspension",
        ),
        (
            json!({"scope": "galaxy", "name": "x"}),
            400,
            "invalid_suspension",
        ),
        (
            json!({"scope": "operator", "name": "olivia", "reason": "a\nb"}),
            400,
            "invalid_suspension",
        ),
        (json!({"scope": "all", "extra": 1}), 400, "unknown_field"),
    ];
    for (body, status, code) in cases {
        let (st, v) = d.raw(
            Method::POST,
            "/v1/suspensions",
            serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(
            (st, v["reason_code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    // A caller who is not an administrator.
    let mut nobody = d.agentctl_cmd(&["suspend", "all"]);
    nobody.uid(65534);
    let out = nobody.output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission_denied"),
        "{out:?}"
    );
    // Nothing stored, nothing audited, everything still allowed.
    let (st, v) = d.raw(Method::GET, "/v1/suspensions", vec![]);
    assert_eq!(
        (st, v["suspensions"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(requests_rows(), before);
    assert_decision(&d.check(&m, "export_audit", &EXPORT), "allow", "ok");
    chain_intact(&d);
}

/// Agents need root (the agent user, its cgroup): skipped loudly without.
fn agent_skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (an agent's user and cgroup)".into());
    }
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status();
        if !st.is_ok_and(|s| s.success()) {
            return Some(format!("cannot create the user {USER}"));
        }
    }
    None
}

#[test]
fn suspend_an_agent_refuses_its_inbox_and_the_calls_on_its_messages() {
    if let Some(why) = agent_skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let d = Daemon::start();
    let name = format!("ks-{}", std::process::id() % 100000);
    d.ok(&["agent", "add", &name, "--user", USER]);
    let olivia = d.enroll("olivia", "owner");
    let inbox = |d: &Daemon| -> String {
        let out = d.ok(&[
            "send",
            "--operator",
            "olivia",
            "--key-file",
            olivia.to_str().unwrap(),
            "--session",
            "slack:D-olivia",
            "--agent",
            &name,
            "--",
            "export the log",
        ]);
        out.split_whitespace().nth(1).unwrap().to_owned()
    };
    let am = inbox(&d);
    let direct = d.send("olivia", &olivia, "slack:D-olivia", "not for the agent");
    // Control.
    assert_decision(&d.check(&am, "export_audit", &EXPORT), "allow", "ok");

    d.ok(&["suspend", "agent", &name, "--reason", "runaway loop"]);
    let denied = d.check(&am, "export_audit", &EXPORT);
    assert_decision(&denied, "deny", "agent_suspended");
    assert_eq!(row_of(&d, &denied)["reason_code"], "agent_suspended");
    let err = send_refused(&d, "olivia", &olivia, &["--agent", &name]);
    assert!(err.contains("agent_suspended"), "{err}");
    // The operator's message not addressed to the agent is not in scope.
    assert_decision(&d.check(&direct, "export_audit", &EXPORT), "allow", "ok");

    d.ok(&["resume", "agent", &name]);
    // The suspension's rows, and the inbox message's, name the agent.
    for action in ["suspend", "resume"] {
        let rows = admin_rows(&d, action);
        assert!(
            rows.iter().any(|r| r["agent"] == name.as_str()),
            "{action}: {rows:?}"
        );
    }
    assert!(
        d.audit_records()
            .iter()
            .any(|r| r["kind"] == "message" && r["agent"] == name.as_str()),
        "no message row names the agent"
    );
    assert_decision(&d.check(&am, "export_audit", &EXPORT), "allow", "ok");
    let am2 = inbox(&d);
    assert_decision(&d.check(&am2, "export_audit", &EXPORT), "allow", "ok");
    chain_intact(&d);
}

/// `agentctl run --agent NAME -- /bin/true` on the daemon's enforcement
/// socket (waiting for it: enforcement starts in the background).
fn launch(d: &Daemon, agent: &str) -> std::process::Output {
    let sock = d.dir.path().join("enforce.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "no enforce.sock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["run", "--socket"])
        .arg(&sock)
        .args(["--agent", agent, "--user", USER, "--", "/bin/true"])
        .output()
        .expect("agentctl run")
}

#[test]
fn a_suspended_agent_is_not_launched() {
    if let Some(why) = agent_skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let d = Daemon::start();
    let tag = std::process::id() % 100000;
    let (name, other) = (format!("ksl-{tag}"), format!("kso-{tag}"));
    d.ok(&["agent", "add", &name, "--user", USER]);
    // Control: it starts, and so does another agent.
    let out = launch(&d, &name);
    assert!(out.status.success(), "control launch: {out:?}");

    d.ok(&["suspend", "agent", &name, "--reason", "runaway loop"]);
    let out = launch(&d, &name);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a suspended agent started: {out:?}");
    assert!(
        err.contains("agent_suspended") && err.contains("runaway loop"),
        "{err}"
    );
    // Its suspension is its own: another agent still starts.
    let out = launch(&d, &other);
    assert!(out.status.success(), "another agent: {out:?}");

    d.ok(&["suspend", "all", "--reason", "drill"]);
    for agent in [&name, &other] {
        let out = launch(&d, agent);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{agent} started under all: {out:?}");
        assert!(err.contains("all_suspended"), "{err}");
    }
    // `resume all` leaves the agent's own suspension in force.
    d.ok(&["resume", "all"]);
    assert!(launch(&d, &other).status.success());
    assert!(!launch(&d, &name).status.success());
    d.ok(&["resume", "agent", &name]);
    let out = launch(&d, &name);
    assert!(out.status.success(), "after resume: {out:?}");
    chain_intact(&d);
}
