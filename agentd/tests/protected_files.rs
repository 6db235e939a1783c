//! Protected files end to end: the real daemon on the seccomp backend, a
//! real agent whose baseline writes its workspace, the policy protecting
//! `{workspace}/SOUL.md`. Writing an ordinary file works (control); every
//! way of writing SOUL.md (open for write, append, truncate, rename over it
//! or away, unlink, chmod, a hard link) is refused in the kernel with a
//! `protected_file` row, while reading it works. At the gateway a call
//! naming it for writing is refused `protected_file`; an escalated call
//! approved by an admin is refused `protected_file_needs_owner` and the
//! kernel still refuses the write; approved with an owner's key, or asked
//! for in an owner's v2 message whose signed scope names the file, the
//! agent's tree writes it. Needs root and the seccomp backend: otherwise
//! SKIPPED (the lsm backend's cases run in the VM suite).
mod gateway_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, Daemon};
use hyper::Method;
use serde_json::Value;

const USER: &str = "agentd-agent";

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (agent cgroups, seccomp, BPF)".into());
    }
    match agentd::doctor::run().backend {
        agentd::doctor::Backend::Seccomp => None,
        agentd::doctor::Backend::None => Some("no enforcement backend here".into()),
        _ => Some("this suite drives the seccomp backend (lsm: the VM suite)".into()),
    }
}

fn ensure_user() {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let st = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("useradd");
        assert!(st.success() || nix::unistd::User::from_name(USER).ok().flatten().is_some());
    }
}

fn policy(ws: &Path) -> String {
    format!(
        r#"
id = "protected-test"

[protected]
paths = ["{{workspace}}/SOUL.md"]

[actions.write_file]
grant = {{ write = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[actions.edit_identity]
approval = "required"
grant = {{ write = ["{{arg.path}}"], ttl_secs = 60 }}

[roles.owner]
[roles.owner.allow.write_file.path]
type = "path"
scopes = ["{ws}"]
[roles.member]
[roles.member.allow.write_file.path]
type = "path"
scopes = ["{ws}"]
[roles.member.allow.edit_identity.path]
type = "path"
scopes = ["{ws}"]
"#,
        ws = ws.display()
    )
}

fn wait_enforcement(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.raw(Method::GET, "/v1/enforcement", vec![]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "enforcement never started:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn records(d: &Daemon) -> Vec<agentd::audit::Record> {
    let db = agentd::audit::store::db_path(&d.state);
    let conn = agentd::audit::store::open_ro(&db).unwrap();
    agentd::audit::store::records_after(&conn, &db, 0, 1_000_000).unwrap()
}

fn last_seq(d: &Daemon) -> u64 {
    records(d).last().map_or(0, |r| r.seq)
}

/// The agent's kernel rows after `since`, once one satisfies `want` (or
/// after 10 s: the audit writer is asynchronous).
fn kernel_rows(
    d: &Daemon,
    agent: &str,
    since: u64,
    want: impl Fn(&agentd::audit::Record) -> bool,
) -> Vec<agentd::audit::Record> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<_> = records(d)
            .into_iter()
            .filter(|r| r.seq > since && r.event.kind == agentd::audit::RecordKind::Kernel)
            .filter(|r| r.event.agent == agent)
            .collect();
        if rows.iter().any(&want) || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sh(d: &Daemon, agent: &str, script: &str) -> std::process::Command {
    let enforce = d.socket.with_file_name("enforce.sock");
    let mut c = d.agentctl_cmd(&[
        "run",
        "--socket",
        enforce.to_str().unwrap(),
        "--agent",
        agent,
        "--user",
        USER,
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(d: &Daemon, agent: &str, script: &str) -> Output {
    sh(d, agent, script).output().unwrap()
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    // World-writable: the kernel carve-out, not file permissions, must refuse.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// Waits for one pending approval; returns its id.
fn pending_id(d: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = serde_json::from_str(&d.ok(&["approvals", "list", "--json"])).unwrap();
        if let Some(a) = v["approvals"].as_array().and_then(|a| a.first()) {
            return a["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "nothing became pending:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

struct World {
    d: Daemon,
    root: PathBuf,
    ws: PathBuf,
    soul: PathBuf,
    agent: String,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn world() -> World {
    ensure_user();
    let root = PathBuf::from(format!("/var/tmp/agentd-protected-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ws = root.join("workspace");
    mkdir(&root, 0o755);
    mkdir(&ws, 0o777);
    let soul = ws.join("SOUL.md");
    write(&soul, "original\n");
    write(&ws.join("other.md"), "other\n");
    write(&ws.join("notes.txt"), "");
    let text = policy(&ws);
    let d = Daemon::start_full("", |dir| {
        let p = dir.join("protected.toml");
        std::fs::write(&p, &text).unwrap();
        p
    });
    wait_enforcement(&d);
    let agent = format!("p-prot-{}", std::process::id() % 100000);
    let ws_s = ws.to_str().unwrap();
    let mut args = vec![
        "agent",
        "add",
        &agent,
        "--user",
        USER,
        "--profile",
        "generic",
        "--workspace",
        ws_s,
        "--write",
        ws_s,
    ];
    for p in ["mv", "rm", "chmod", "ln", "cat", "truncate"] {
        args.push("--exec");
        args.push(Box::leak(format!("/usr/bin/{p}").into_boxed_str()));
    }
    d.ok(&args);
    World {
        d,
        root,
        ws,
        soul,
        agent,
    }
}

#[test]
fn protected_files_hold_in_the_kernel_and_only_an_owner_gives_a_write() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let w = world();
    let view: Value =
        serde_json::from_str(&w.d.ok(&["agent", "show", &w.agent, "--json"])).unwrap();
    assert_eq!(
        view["write_exceptions"],
        serde_json::json!([w.soul.to_str().unwrap()]),
        "{view}"
    );
    kernel_refusals(&w);
    gateway_and_approvals(&w);
}

/// Control, then every way of writing the file, each refused and audited.
fn kernel_refusals(w: &World) {
    let (d, ws, soul) = (&w.d, w.ws.to_str().unwrap(), w.soul.to_str().unwrap());
    let out = run(
        d,
        &w.agent,
        &format!("echo note >> {ws}/notes.txt && cat {soul} > {ws}/read.out"),
    );
    assert!(
        out.status.success(),
        "control: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(w.ws.join("notes.txt")).unwrap(),
        "note\n"
    );
    assert_eq!(
        std::fs::read_to_string(w.ws.join("read.out")).unwrap(),
        "original\n"
    );
    let attacks = [
        (format!("echo evil > {soul}"), "file_open"),
        (format!("echo evil >> {soul}"), "file_open"),
        (format!("truncate -s 0 {soul}"), "file_open"),
        (format!("mv {ws}/other.md {soul}"), "rename"),
        (format!("mv {soul} {ws}/moved.md"), "rename"),
        (format!("rm -f {soul}"), "unlink"),
        (format!("chmod 600 {soul}"), "chmod"),
        (format!("ln {soul} {ws}/hard"), "link"),
    ];
    for (script, action) in attacks {
        let since = last_seq(d);
        let out = run(d, &w.agent, &script);
        assert!(!out.status.success(), "`{script}` must fail");
        let rows = kernel_rows(d, &w.agent, since, |r| {
            r.event.reason_code == "protected_file"
        });
        let row = rows
            .iter()
            .find(|r| r.event.reason_code == "protected_file")
            .unwrap_or_else(|| panic!("`{script}`: no protected_file row: {rows:#?}"));
        assert_eq!(
            (row.event.decision.as_str(), row.event.action.as_str()),
            ("deny", action),
            "{row:?}"
        );
        assert!(row.event.target.contains("SOUL.md"), "{row:?}");
        assert_eq!(
            std::fs::read_to_string(&w.soul).unwrap(),
            "original\n",
            "after `{script}`"
        );
        let mode = std::fs::metadata(&w.soul).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666, "after `{script}`");
    }
    assert!(!w.ws.join("moved.md").exists() && !w.ws.join("hard").exists());
    assert!(w.ws.join("other.md").exists());
}

/// The gateway's refusal, then the approvals: an admin's does not give the
/// protected write (and the kernel still refuses it), an owner's does.
fn gateway_and_approvals(w: &World) {
    let d = &w.d;
    let mo = d.enroll("mo", "member");
    let olivia = d.enroll("olivia", "owner");
    let m = d.send("mo", &mo, "s-mo", "update your soul");
    let notes = format!("path={}/notes.txt", w.ws.display());
    assert_decision(&d.check(&m, "write_file", &[&notes]), "allow", "ok");
    let path = format!("path={}", w.soul.display());
    let v = d.check(&m, "write_file", &[&path]);
    assert_decision(&v, "deny", "protected_file");
    assert!(v["grant"].is_null());

    // An admin's approval: the call is refused at the gateway, and the
    // agent's write after it is refused in the kernel.
    let script = |text: &str| {
        format!(
            "{agentctl} check --message {m} edit_identity {path}; echo {text} > {soul}",
            agentctl = env!("CARGO_BIN_EXE_agentctl"),
            soul = w.soul.display()
        )
    };
    let since = last_seq(d);
    let child = sh(d, &w.agent, &script("by-admin")).spawn().unwrap();
    let id = pending_id(d);
    // A member's key is no owner's: refused, nothing answered.
    let out = d.agentctl(&[
        "approvals",
        "approve",
        &id,
        "--operator",
        "mo",
        "--key-file",
        mo.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approval_signer_not_owner"),
        "{out:?}"
    );
    d.ok(&["approvals", "approve", &id]);
    let out = finish(child);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("protected_file_needs_owner"),
        "{out:?}"
    );
    assert!(!out.status.success(), "the write after it fails");
    assert_eq!(std::fs::read_to_string(&w.soul).unwrap(), "original\n");
    let rows = kernel_rows(d, &w.agent, since, |r| {
        r.event.reason_code == "protected_file"
    });
    assert!(
        rows.iter()
            .any(|r| r.event.reason_code == "protected_file" && r.event.decision == "deny"),
        "{rows:#?}"
    );

    // An owner's signed approval: the agent's tree writes the file.
    let since = last_seq(d);
    let child = sh(d, &w.agent, &script("by-owner")).spawn().unwrap();
    let id = pending_id(d);
    d.ok(&[
        "approvals",
        "approve",
        &id,
        "--operator",
        "olivia",
        "--key-file",
        olivia.to_str().unwrap(),
    ]);
    let out = finish(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&w.soul).unwrap(), "by-owner\n");
    let rows = kernel_rows(d, &w.agent, since, |r| {
        r.event.reason_code == "grant_matched" && r.event.target.contains("SOUL.md")
    });
    assert!(
        rows.iter()
            .any(|r| r.event.decision == "allow" && r.event.target.contains("SOUL.md")),
        "{rows:#?}"
    );
    let admin_rows: Vec<_> = records(d)
        .into_iter()
        .filter(|r| r.event.action == "approval_approve" || r.event.action == "approval_sign")
        .map(|r| (r.event.action, r.event.operator, r.event.reason_code))
        .collect();
    assert!(
        admin_rows
            .iter()
            .any(|(a, o, _)| a == "approval_approve" && o.starts_with("operator:olivia")),
        "{admin_rows:?}"
    );
    assert!(
        admin_rows
            .iter()
            .any(|(a, _, c)| a == "approval_sign" && c == "approval_signer_not_owner"),
        "{admin_rows:?}"
    );
    signed_scope(w, &olivia);
    d.verify_chain();
}

/// An owner's v2 message whose signed scope names SOUL.md: the agent's
/// call gets the protected write and its tree writes the file. A prefix
/// pattern covering the file does not name it.
fn signed_scope(w: &World, olivia: &Path) {
    let d = &w.d;
    let key = olivia.to_str().unwrap();
    let soul = w.soul.display().to_string();
    let send = |session: &str, scope: &str| {
        d.ok(&[
            "send",
            "--operator",
            "olivia",
            "--key-file",
            key,
            "--session",
            session,
            "--scope",
            scope,
            "rewrite your soul",
        ])
        .trim()
        .to_owned()
    };
    let prefix = send(
        "s-olivia-1",
        &format!("write_file:path={}/*", w.ws.display()),
    );
    let v = d.check(&prefix, "write_file", &[&format!("path={soul}")]);
    assert_decision(&v, "deny", "protected_file");
    let exact = send("s-olivia-2", &format!("write_file:path={soul}"));
    let since = last_seq(d);
    let out = run(
        d,
        &w.agent,
        &format!(
            "{} check --message {exact} write_file path={soul} && echo by-scope > {soul}",
            env!("CARGO_BIN_EXE_agentctl")
        ),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&w.soul).unwrap(), "by-scope\n");
    let rows = kernel_rows(d, &w.agent, since, |r| {
        r.event.reason_code == "grant_matched" && r.event.target.contains("SOUL.md")
    });
    assert!(
        rows.iter()
            .any(|r| r.event.decision == "allow" && r.event.target == soul),
        "{rows:#?}"
    );
}
