//! Pending grants claimed in the kernel (seccomp backend), end to end: an
//! agent launched by the real `agentctl run` as an unprivileged user, whose
//! shell is the requester of several calls, and a hostile background
//! sibling of the same agent started before the decisions. Checks what
//! each process could do and the audit row of each step.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agentd::{
    doctor::Backend,
    enforce::{default_baseline, launch, Enforcer, KernelRecord, MemorySink, Mode},
    grant_spec::GrantSpec,
};

const USER: &str = "agentd-agent";

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    let report = agentd::doctor::run();
    if report.backend == Backend::None {
        return Some(format!("no enforcement backend: {}", report.reason));
    }
    None
}

fn ensure_user() {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status();
    }
    assert!(nix::unistd::User::from_name(USER).ok().flatten().is_some());
}

fn agentctl() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_agentctl")).unwrap()
}

/// A loopback HTTP server answering 200 to anything, forever.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    port
}

fn spec(f: impl FnOnce(&mut GrantSpec)) -> GrantSpec {
    let mut s = GrantSpec {
        ttl_secs: 60,
        ..Default::default()
    };
    f(&mut s);
    s
}

struct Env {
    enforcer: Enforcer,
    sink: MemorySink,
    sock: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn env() -> Env {
    ensure_user();
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("enforce.sock");
    let sink = MemorySink::default();
    let enforcer =
        Enforcer::start(Backend::Seccomp, state.path(), sink.clone()).expect("enforcer starts");
    launch::serve(enforcer.clone(), &sock).expect("socket");
    // Keep the state directory alive as long as the test.
    std::mem::forget(state);
    let dir = tempfile::Builder::new()
        .prefix("agentd-claims")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["granted", "inproc", "once", "again", "two", "exp", "secret"] {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{name}-contents\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    Env {
        enforcer,
        sink,
        sock,
        dir,
        port: http_server(),
    }
}

/// The agent's script. `$D` is the file directory, `$P` the HTTP port.
/// The sibling is forked before the shell reports `ready`, so before every
/// decision; it acts at `go`, then the shell (the requester) acts at `go2`.
const SCRIPT: &str = r#"
wait_for() { while [ ! -e "$D/$1" ]; do /usr/bin/sleep 0.05; done; }
(
  wait_for go
  /usr/bin/cat "$D/granted" >/dev/null 2>&1; echo sib_exec=$?
  (read l < "$D/inproc") 2>/dev/null; echo sib_open=$?
  (read l < "$D/once") 2>/dev/null; echo sib_once=$?
  /usr/bin/curl -s -o /dev/null "http://127.0.0.1:$P/" ; echo sib_connect=$?
  echo sibdone
) &
echo ready $$
wait_for go2
/usr/bin/cat "$D/secret" >/dev/null 2>&1; echo args_mismatch=$?
/usr/bin/cat "$D/granted"; echo exec_claim=$?
/usr/bin/cat "$D/granted" >/dev/null 2>&1; echo exec_again=$?
read l < "$D/inproc"; echo inproc=$? "$l"
(read l < "$D/once") 2>/dev/null; echo once_1=$?
(read l < "$D/once") 2>/dev/null; echo once_2=$?
read l < "$D/again"; echo again_1=$?
read l < "$D/again"; echo again_2=$?
(read l < "$D/again") 2>/dev/null; echo again_3=$?
(read l < "$D/two") 2>/dev/null; echo two_1=$?
(read l < "$D/two") 2>/dev/null; echo two_2=$?
(read l < "$D/two") 2>/dev/null; echo two_3=$?
/usr/bin/curl -s -o /dev/null "http://127.0.0.1:$P/"; echo connect=$?
(read l < "$D/exp") 2>/dev/null; echo exp_1=$?
wait_for go3
(read l < "$D/exp") 2>/dev/null; echo exp_2=$?
echo done
"#;

/// Runs the script as agent `agent` in `mode`; returns its output lines.
fn run_agent(e: &Env, agent: &str, mode: Mode) -> Vec<String> {
    let mut baseline = default_baseline();
    let ctl = agentctl();
    for exe in [ctl.clone(), "/usr/bin/sleep".into(), "/usr/bin/curl".into()] {
        baseline.exec.push(exe.clone());
        baseline.read.push(exe);
    }
    e.enforcer
        .create_agent(
            agent,
            agentd::enforce::AgentOptions::with_baseline(mode, baseline.clone()),
        )
        .unwrap();
    let d = e.dir.path();
    let mut child = Command::new(&ctl)
        .args(["run", "--socket"])
        .arg(&e.sock)
        .args([
            "--agent", agent, "--user", USER, "--", "/bin/sh", "-c", SCRIPT,
        ])
        .env("D", d)
        .env("P", e.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentctl run");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let next = |lines: &mut Vec<String>, want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    lines.push(l.clone());
                    if l.starts_with(want) {
                        return l;
                    }
                }
                Err(_) => panic!("no `{want}` from the agent; so far: {lines:#?}"),
            }
        }
    };
    let ready = next(&mut lines, "ready ");
    let shell: u32 = ready["ready ".len()..].trim().parse().unwrap();
    let requester = e.enforcer.requester_of(agent, shell).expect("requester");
    assert_eq!(requester.chain[0], shell);
    let grants = [
        (
            "c-exec",
            spec(|s| {
                s.exec = vec!["/usr/bin/cat".into()];
                s.read = vec![d.join("granted")];
                s.args = Some(vec![d.join("granted").display().to_string()]);
                s.uses = 1;
            }),
        ),
        ("c-open", spec(|s| s.read = vec![d.join("inproc")])),
        (
            "c-once",
            spec(|s| {
                s.read = vec![d.join("once")];
                s.uses = 1;
            }),
        ),
        (
            "c-again",
            spec(|s| {
                s.read = vec![d.join("again")];
                s.uses = 1;
            }),
        ),
        (
            "c-two-a",
            spec(|s| {
                s.read = vec![d.join("two")];
                s.uses = 1;
            }),
        ),
        (
            "c-two-b",
            spec(|s| {
                s.read = vec![d.join("two")];
                s.uses = 1;
            }),
        ),
        (
            "c-net",
            spec(|s| s.connect = vec![format!("127.0.0.1:{}", e.port)]),
        ),
        (
            "c-exp",
            spec(|s| {
                s.read = vec![d.join("exp")];
                s.ttl_secs = 2;
            }),
        ),
    ];
    for (call, g) in grants {
        let call = format!("{agent}-{call}");
        e.enforcer
            .install_grant_for(
                agent,
                &call,
                &format!("m-{call}"),
                &g,
                Some(requester.clone()),
            )
            .unwrap();
        // Distinct decision times: "the oldest" is well defined.
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(d.join("go"), "").unwrap();
    next(&mut lines, "sibdone");
    std::fs::write(d.join("go2"), "").unwrap();
    next(&mut lines, "exp_1=");
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(d.join("go3"), "").unwrap();
    next(&mut lines, "done");
    let _ = child.wait();
    for f in ["go", "go2", "go3"] {
        let _ = std::fs::remove_file(d.join(f));
    }
    lines
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
}

/// Waits for a record of `agent` matching the fields; returns it.
fn record(
    sink: &MemorySink,
    agent: &str,
    action: &str,
    target: &str,
    decision: &str,
    reason: &str,
) -> KernelRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let recs = sink.0.lock().unwrap().clone();
        if let Some(r) = recs.iter().find(|r| {
            r.agent == agent
                && r.action == action
                && r.target.ends_with(target)
                && r.decision == decision
                && r.reason_code == reason
        }) {
            return r.clone();
        }
        if Instant::now() > deadline {
            let mine: Vec<_> = recs.iter().filter(|r| r.agent == agent).collect();
            panic!("no {action} {target} {decision} {reason} row for {agent}: {mine:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok(v: &str) -> bool {
    v.split_whitespace().next() == Some("0")
}

#[test]
fn pending_grants_are_claimed_only_by_the_requesters_tree() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let e = env();
    let agent = format!("t-claim-{}", std::process::id());
    let lines = run_agent(&e, &agent, Mode::Enforce);
    let s = &e.sink;
    let d = e.dir.path().display().to_string();
    let granted = format!("{d}/granted");
    let call = |c: &str| format!("{agent}-{c}");

    // The hostile sibling: every step refused, and audited as such.
    assert!(!ok(value(&lines, "sib_exec")), "{lines:#?}");
    record(
        s,
        &agent,
        "exec",
        "/usr/bin/cat",
        "deny",
        "claim_not_requester_tree",
    );
    assert!(!ok(value(&lines, "sib_open")), "{lines:#?}");
    record(
        s,
        &agent,
        "file_open",
        "/inproc",
        "deny",
        "claim_not_requester_tree",
    );
    assert!(!ok(value(&lines, "sib_once")), "{lines:#?}");
    record(
        s,
        &agent,
        "file_open",
        "/once",
        "deny",
        "claim_not_requester_tree",
    );
    assert!(!ok(value(&lines, "sib_connect")), "{lines:#?}");
    let port = format!("127.0.0.1:{}", e.port);
    record(
        s,
        &agent,
        "connect",
        &port,
        "deny",
        "claim_not_requester_tree",
    );

    // The requester's tree: a fresh child's exec claims (with the granted
    // arguments only), and its open is then decided by the bound call.
    assert!(!ok(value(&lines, "args_mismatch")), "{lines:#?}");
    record(
        s,
        &agent,
        "exec",
        "/usr/bin/cat",
        "deny",
        "exec_args_mismatch",
    );
    assert!(ok(value(&lines, "exec_claim")), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "granted-contents"), "{lines:#?}");
    let r = record(s, &agent, "exec", "/usr/bin/cat", "allow", "grant_matched");
    assert_eq!(r.call_id, call("c-exec"));
    let r = record(s, &agent, "file_open", &granted, "allow", "grant_matched");
    assert_eq!(r.call_id, call("c-exec"));
    assert_eq!(r.active_message_id, format!("m-{}", call("c-exec")));
    // One use: the second exec claim is refused.
    assert!(!ok(value(&lines, "exec_again")), "{lines:#?}");
    record(s, &agent, "exec", "/usr/bin/cat", "deny", "grant_used_up");

    // In-process open by the requester itself.
    let v = value(&lines, "inproc");
    assert!(ok(v) && v.ends_with("inproc-contents"), "{lines:#?}");
    let r = record(s, &agent, "file_open", "/inproc", "allow", "grant_matched");
    assert_eq!(r.call_id, call("c-open"));

    // Uses: the sibling's attempt did not spend the single use.
    assert!(ok(value(&lines, "once_1")), "{lines:#?}");
    assert!(!ok(value(&lines, "once_2")), "{lines:#?}");
    record(s, &agent, "file_open", "/once", "deny", "grant_used_up");

    // One process's file claims spend one use: the requester reads twice
    // under a single-use grant; a fresh process then finds it spent.
    assert!(ok(value(&lines, "again_1")), "{lines:#?}");
    assert!(ok(value(&lines, "again_2")), "{lines:#?}");
    assert!(!ok(value(&lines, "again_3")), "{lines:#?}");
    let again: Vec<_> = e
        .sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.agent == agent && r.target.ends_with("/again"))
        .map(|r| (r.decision, r.call_id.clone(), r.reason_code.clone()))
        .collect();
    assert_eq!(
        again,
        vec![
            ("allow", call("c-again"), "grant_matched".to_string()),
            ("allow", call("c-again"), "grant_matched".to_string()),
            ("deny", String::new(), "grant_used_up".to_string()),
        ]
    );

    // Two matching grants: the oldest first, then the other, then none.
    assert!(ok(value(&lines, "two_1")), "{lines:#?}");
    assert!(ok(value(&lines, "two_2")), "{lines:#?}");
    assert!(!ok(value(&lines, "two_3")), "{lines:#?}");
    let recs = e.sink.0.lock().unwrap().clone();
    let two: Vec<_> = recs
        .iter()
        .filter(|r| r.agent == agent && r.target.ends_with("/two"))
        .map(|r| (r.decision, r.call_id.clone(), r.reason_code.clone()))
        .collect();
    assert_eq!(
        two,
        vec![
            ("allow", call("c-two-a"), "grant_matched".to_string()),
            ("allow", call("c-two-b"), "grant_matched".to_string()),
            ("deny", String::new(), "grant_used_up".to_string()),
        ]
    );

    // Connect claimed in the kernel by a fresh child of the requester.
    assert!(ok(value(&lines, "connect")), "{lines:#?}");
    let r = record(s, &agent, "connect", &port, "allow", "grant_matched");
    assert_eq!(r.call_id, call("c-net"));

    // Expiry: claimable before, refused after.
    assert!(ok(value(&lines, "exp_1")), "{lines:#?}");
    assert!(!ok(value(&lines, "exp_2")), "{lines:#?}");
    record(s, &agent, "file_open", "/exp", "deny", "grant_expired");
    e.enforcer.uninstall();
}

#[test]
fn without_enforcement_the_siblings_steps_succeed() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let e = env();
    let agent = format!("t-claimao-{}", std::process::id());
    let lines = run_agent(&e, &agent, Mode::AuditOnly);
    let s = &e.sink;
    // The same sibling steps work in audit-only mode, and are recorded as
    // what enforcement would have refused.
    for k in ["sib_exec", "sib_open", "sib_once", "sib_connect"] {
        assert!(ok(value(&lines, k)), "{k}: {lines:#?}");
    }
    record(
        s,
        &agent,
        "exec",
        "/usr/bin/cat",
        "would_deny",
        "claim_not_requester_tree",
    );
    record(
        s,
        &agent,
        "file_open",
        "/inproc",
        "would_deny",
        "claim_not_requester_tree",
    );
    let port = format!("127.0.0.1:{}", e.port);
    record(
        s,
        &agent,
        "connect",
        &port,
        "would_deny",
        "claim_not_requester_tree",
    );
    e.enforcer.uninstall();
}
