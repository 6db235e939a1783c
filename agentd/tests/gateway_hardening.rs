//! Gateway hardening, end to end through the real daemon and socket: calls
//! are decided on the objects their paths really name (planted symlinks),
//! and an allow overturned by a later hook leaves no grant behind. Every
//! refusal is checked with its audit row and beside a control that succeeds.
mod gateway_support;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, Daemon};
use hyper::Method;
use serde_json::Value;

/// Audit records of the daemon's log (exported offline, as root).
fn records(d: &Daemon) -> Vec<Value> {
    let out = d.ok(&[
        "audit",
        "export",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "record")
        .collect()
}

/// The audit rows of one call, in order.
fn rows_of(d: &Daemon, call_id: &Value) -> Vec<Value> {
    records(d)
        .into_iter()
        .filter(|r| r["call_id"] == *call_id)
        .collect()
}

fn symlink_policy(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"id = "symlinks"
[actions.write_file]
description = "Write one file."
destructive_paths = ["{d}/home"]
grant = {{ write = ["{{arg.path}}"], ttl_secs = 30, uses = 1 }}

[roles.owner]
destructive = true
[roles.owner.allow.write_file]
path = {{ type = "path", scopes = ["{d}/workspace", "{d}/home"] }}

[roles.member]
[roles.member.allow.write_file]
path = {{ type = "path", scopes = ["{d}/workspace"] }}
"#
    )
}

#[test]
fn planted_symlinks_are_decided_on_their_target() {
    let d = Daemon::start_full("", |dir| {
        let p = dir.join("policy.toml");
        std::fs::write(&p, symlink_policy(dir)).unwrap();
        p
    });
    let root = d.dir.path().canonicalize().unwrap();
    let ws = root.join("workspace");
    let home = root.join("home");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(home.join(".profile"), "PATH=/usr/bin\n").unwrap();
    // What an agent would plant in its workspace.
    std::os::unix::fs::symlink(home.join(".profile"), ws.join("n")).unwrap();
    std::fs::create_dir(root.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(root.join("elsewhere/f"), ws.join("out")).unwrap();
    std::fs::write(root.join("elsewhere/f"), "").unwrap();
    std::os::unix::fs::symlink(home.join("new"), ws.join("dangling")).unwrap();
    std::os::unix::fs::symlink(
        format!("/proc/self/root{}", home.display()),
        ws.join("magic"),
    )
    .unwrap();
    // A directory only root may traverse, and a link into it.
    let vault = root.join("workspace/vault");
    std::fs::create_dir(&vault).unwrap();
    std::fs::write(vault.join("x"), "").unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(vault.join("x"), ws.join("into-vault")).unwrap();

    let member = d.enroll("mia", "member");
    let owner = d.enroll("olivia", "owner");
    let m = d.send("mia", &member, "s:mia", "write the notes");
    let o = d.send("olivia", &owner, "s:olivia", "fix my profile");
    let arg = |p: &Path| format!("path={}", p.display());

    // Control: a plain file in the workspace is allowed, the grant names it.
    let plain = ws.join("notes.txt");
    let ok = d.check(&m, "write_file", &[&arg(&plain)]);
    assert_decision(&ok, "allow", "ok");
    assert_eq!(ok["grant"]["write"][0], plain.to_str().unwrap());

    // The planted link: lexically in the workspace, really the owner's
    // profile (a destructive path, which the member may not write), and a
    // link to a file outside every scope.
    let link = d.check(&m, "write_file", &[&arg(&ws.join("n"))]);
    assert_decision(&link, "deny", "destructive_op_owner_only");
    let out = d.check(&m, "write_file", &[&arg(&ws.join("out"))]);
    assert_decision(&out, "deny", "path_outside_scope");
    assert!(
        out["detail"].as_str().unwrap().contains("elsewhere"),
        "{out}"
    );
    for (v, code) in [
        (&link, "destructive_op_owner_only"),
        (&out, "path_outside_scope"),
    ] {
        let rows = rows_of(&d, &v["call_id"]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["decision"], "deny");
        assert_eq!(rows[0]["reason_code"], code);
    }

    // The owner may write the profile; the grant names the real file, not the link.
    let own = d.check(&o, "write_file", &[&arg(&ws.join("n"))]);
    assert_decision(&own, "allow", "ok");
    assert_eq!(
        own["grant"]["write"][0],
        home.join(".profile").to_str().unwrap()
    );

    // A dangling link (a create would land in home) and a magic link are refused.
    let dangling = d.check(&m, "write_file", &[&arg(&ws.join("dangling"))]);
    assert_decision(&dangling, "deny", "path_unresolvable");
    let magic = d.check(&m, "write_file", &[&arg(&ws.join("magic/.profile"))]);
    assert_decision(&magic, "deny", "path_unresolvable");
    for v in [&dangling, &magic] {
        let rows = rows_of(&d, &v["call_id"]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["reason_code"], "path_unresolvable");
    }

    // Resolution runs with the caller's credentials: root sees into the
    // vault (in scope: allowed), the agent user cannot (refused).
    let as_root = d.check(&m, "write_file", &[&arg(&ws.join("into-vault"))]);
    assert_decision(&as_root, "allow", "ok");
    match nix::unistd::User::from_name("agentd-agent").unwrap() {
        None => {
            println!("SKIPPED: user agentd-agent does not exist; caller credentials not tested")
        }
        Some(u) => {
            let mut c = d.agentctl_cmd(&[
                "check",
                "--json",
                "--message",
                &m,
                "write_file",
                &arg(&ws.join("into-vault")),
            ]);
            // agentd-agent is not an admin: let it call tools.
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            let out = c.output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {out:?}\n{}", d.log_text()));
            assert_decision(&v, "deny", "path_unresolvable");
            let rows = rows_of(&d, &v["call_id"]);
            assert_eq!(rows[0]["reason_code"], "path_unresolvable");
        }
    }
}

/// Waits until the daemon's enforcement is up; None (with the reason) if it
/// cannot start on this machine.
fn enforcement_ready(d: &Daemon) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = d.raw(Method::GET, "/v1/enforcement", vec![]);
        if status == 200 {
            return Some(body);
        }
        let starting = body["message"]
            .as_str()
            .is_some_and(|m| m.contains("starting"));
        if !starting || Instant::now() > deadline {
            println!("SKIPPED: enforcement unavailable: {body}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs agentctl with `args` from inside the agent cgroup `cgroup` (as root).
fn in_agent(d: &Daemon, cgroup: &str, args: &[&str]) -> std::process::Output {
    let script = format!("echo 0 > {}/cgroup.procs && exec \"$0\" \"$@\"", cgroup);
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_agentctl"))
        .args(args)
        .env("AGENTD_SOCKET", &d.socket)
        .output()
        .unwrap()
}

fn calls_of(d: &Daemon, agent: &str) -> Vec<Value> {
    let (status, list) = d.raw(Method::GET, "/v1/agents", vec![]);
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == agent)
        .map(|a| a["calls"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[test]
fn an_allow_overturned_by_a_failing_receipt_leaves_no_grant() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root (agent cgroups, BPF)");
        return;
    }
    let mut d = Daemon::start();
    if enforcement_ready(&d).is_none() {
        return;
    }
    // The agent may run agentctl (its tool runner), as `agentctl run` arranges.
    let enforce_sock = d.socket.with_file_name("enforce.sock");
    let agent = agentd::enforce::launch::call(
        &enforce_sock,
        &agentd::enforce::launch::Request::CreateAgent {
            agent: "rollback".into(),
            mode: None,
            command: Some(env!("CARGO_BIN_EXE_agentctl").into()),
        },
        None,
    )
    .unwrap()
    .unwrap();
    let cgroup = agent["cgroup"].as_str().unwrap().to_owned();
    let olivia = d.enroll("olivia", "owner");
    let m = d.send("olivia", &olivia, "slack:D-olivia", "mail the invoice");
    let send_email = |d: &Daemon| -> Value {
        let out = in_agent(
            d,
            &cgroup,
            &[
                "check",
                "--json",
                "--message",
                &m,
                "send_email",
                "to=billing@acme-supplies.example",
                "subject=inv",
                "body=attached",
            ],
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let bind = |call_id: &str| {
        in_agent(
            &d,
            &cgroup,
            &[
                "exec",
                "--socket",
                enforce_sock.to_str().unwrap(),
                "--call",
                call_id,
                "--",
                env!("CARGO_BIN_EXE_agentctl"),
                "--help",
            ],
        )
    };

    // Control: the receipt is queued, the grant is installed and bindable.
    let ok = send_email(&d);
    assert_decision(&ok, "allow", "ok");
    let ok_id = ok["call_id"].as_str().unwrap();
    assert!(calls_of(&d, "rollback").iter().any(|c| c == ok_id));
    let out = bind(ok_id);
    assert!(out.status.success(), "control bind: {out:?}");

    // The receipt store now refuses every enqueue (as a full or broken disk would).
    let db = rusqlite::Connection::open(d.state.join("receipts.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_enqueue BEFORE INSERT ON receipt_queue
         BEGIN SELECT RAISE(ABORT, 'receipt store refuses'); END;",
    )
    .unwrap();
    let over = send_email(&d);
    assert_decision(&over, "deny", "receipt_unavailable");
    let over_id = over["call_id"].as_str().unwrap();
    assert!(
        !calls_of(&d, "rollback").iter().any(|c| c == over_id),
        "the overturned call's grant is gone: {:?}",
        calls_of(&d, "rollback")
    );
    let out = bind(over_id);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_grant"),
        "{out:?}"
    );
    // Audit: the allow, then the row that overturned it.
    let rows = rows_of(&d, &over["call_id"]);
    let outcome: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap(),
                r["reason_code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        vec![("allow", "ok"), ("deny", "receipt_unavailable")],
        "{rows:?}"
    );
    d.stop();
}
