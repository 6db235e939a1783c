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
    state: PathBuf,
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
    let state = state.keep();
    let dir = tempfile::Builder::new()
        .prefix("agentd-claims")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in [
        "granted", "inproc", "once", "again", "two", "exp", "secret", "held", "gone", "full",
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{name}-contents\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    Env {
        enforcer,
        sink,
        state,
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

/// The script of the spent-grant test: the shell claims `held` for its
/// own reads (and lives on), a subshell claims `gone` and exits.
const SPENT_SCRIPT: &str = r#"
wait_for() { while [ ! -e "$D/$1" ]; do /usr/bin/sleep 0.05; done; }
echo ready $$
wait_for go
read l < "$D/held"; echo held_1=$?
(read l < "$D/gone") 2>/dev/null; echo gone_1=$?
echo claimed
wait_for go2
read l < "$D/held"; echo held_2=$? "$l"
(read l < "$D/gone") 2>/dev/null; echo gone_2=$?
echo done
"#;

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shell running SCRIPT in a new agent (launched by `agentctl run` as
/// the agent user, `D` the test's directory, `P` its port), read line by
/// line; killed when dropped.
struct AgentShell {
    child: KillOnDrop,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
    lines: Vec<String>,
}

impl AgentShell {
    /// Creates `agent` (the default baseline, plus `exec`) and starts
    /// `script` in it; returns once the shell printed `ready PID`, with
    /// its requester.
    fn start(
        e: &Env,
        agent: &str,
        exec: &[&str],
        script: &str,
    ) -> (Self, agentd::enforce::pending::Requester) {
        let mut baseline = default_baseline();
        baseline.exec.extend(exec.iter().map(PathBuf::from));
        e.enforcer
            .create_agent(
                agent,
                agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, baseline),
            )
            .unwrap();
        let mut child = Command::new(agentctl())
            .args(["run", "--socket"])
            .arg(&e.sock)
            .args([
                "--agent", agent, "--user", USER, "--", "/bin/sh", "-c", script,
            ])
            .env("D", e.dir.path())
            .env("P", e.port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("agentctl run");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        // A failed assertion must not leave the agent behind.
        let mut shell = AgentShell {
            child: KillOnDrop(child),
            out,
            lines: Vec::new(),
        };
        let (ready, _) = shell.until("ready ");
        let pid: u32 = ready["ready ".len()..].trim().parse().unwrap();
        let requester = e.enforcer.requester_of(agent, pid).expect("requester");
        (shell, requester)
    }

    /// Reads lines until one starts with `want`: that line, and every line so far.
    fn until(&mut self, want: &str) -> (String, Vec<String>) {
        loop {
            let l = self
                .out
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("no `{want}`: {:#?}", self.lines));
            self.lines.push(l.clone());
            if l.starts_with(want) {
                return (l, self.lines.clone());
            }
        }
    }
}

/// Entries in one of the instance's pinned maps.
fn map_entries<K: aya::Pod, V: aya::Pod>(state: &std::path::Path, map: &'static str) -> usize {
    let pins = agentd::enforce::bpf_state::Instance::for_state_dir(state).pin_dir();
    agentd::enforce::bpf_state::open_pinned_hash::<K, V>(&pins, map)
        .unwrap()
        .keys()
        .count()
}

/// The calls the enforcer holds for `agent`.
fn calls_of(enforcer: &Enforcer, agent: &str) -> Vec<String> {
    let mut calls = enforcer
        .list_agents()
        .into_iter()
        .find(|a| a.name == agent)
        .map(|a| a.calls)
        .unwrap_or_default();
    calls.sort();
    calls
}

#[test]
fn a_spent_grant_is_dropped_once_its_claimant_exits_and_stays_dropped() {
    use agentd_common::{maps, PendingGrant, PendingKey, UseTicket};
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let e = env();
    let agent = format!("t-spent-{}", std::process::id());
    let d = e.dir.path();
    let (mut shell, requester) = AgentShell::start(&e, &agent, &["/usr/bin/sleep"], SPENT_SCRIPT);
    let call = |c: &str| format!("{agent}-{c}");
    for name in ["held", "gone"] {
        let g = spec(|s| {
            s.read = vec![d.join(name)];
            s.uses = 1;
        });
        e.enforcer
            .install_grant_for(&agent, &call(name), "m", &g, Some(requester.clone()))
            .unwrap();
    }
    std::fs::write(d.join("go"), "").unwrap();
    let (_, lines) = shell.until("claimed");
    assert!(
        ok(value(&lines, "held_1")) && ok(value(&lines, "gone_1")),
        "{lines:#?}"
    );
    assert_eq!(map_entries::<UseTicket, u8>(&e.state, maps::USE_TICKETS), 2);

    // The subshell that claimed `gone` has exited: its grant is dropped
    // (after the settling time), with its row; `held`'s claimant lives.
    let dropped = || {
        let recs = e.sink.0.lock().unwrap().clone();
        recs.iter()
            .filter(|r| r.action == "grant_dropped" && r.reason_code == "grant_spent")
            .filter(|r| r.agent == agent && r.decision == "info" && r.target == "uses=1")
            .map(|r| r.call_id.clone())
            .collect::<Vec<_>>()
    };
    let wait_dropped = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while dropped().len() < n {
            assert!(Instant::now() < deadline, "{n} drops: {:?}", dropped());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_dropped(1);
    assert_eq!(dropped(), vec![call("gone")]);
    assert_eq!(calls_of(&e.enforcer, &agent), vec![call("held")]);
    assert_eq!(map_entries::<UseTicket, u8>(&e.state, maps::USE_TICKETS), 1);
    assert_eq!(
        map_entries::<PendingKey, PendingGrant>(&e.state, maps::PENDING),
        1
    );

    // The live claimant keeps its grant (a further read spends nothing);
    // the dropped grant covers nothing any more.
    std::fs::write(d.join("go2"), "").unwrap();
    let (_, lines) = shell.until("done");
    let held = value(&lines, "held_2");
    assert!(ok(held) && held.ends_with("held-contents"), "{lines:#?}");
    assert!(!ok(value(&lines, "gone_2")), "{lines:#?}");
    record(&e.sink, &agent, "file_open", "/gone", "deny", "no_grant");
    let _ = shell.child.0.wait();

    // The shell has exited too: `held` goes; registry and maps agree.
    wait_dropped(2);
    assert_eq!(dropped(), vec![call("gone"), call("held")]);
    assert!(calls_of(&e.enforcer, &agent).is_empty());
    assert_eq!(map_entries::<UseTicket, u8>(&e.state, maps::USE_TICKETS), 0);
    assert_eq!(
        map_entries::<PendingKey, PendingGrant>(&e.state, maps::PENDING),
        0
    );

    // A restart over the pinned maps reads the journal: neither comes back.
    e.enforcer.shutdown();
    let again = Enforcer::start(Backend::Seccomp, &e.state, MemorySink::default()).unwrap();
    assert!(calls_of(&again, &agent).is_empty());
    assert!(again.list_agents().iter().any(|a| a.name == agent));
    again.uninstall();
}

/// The script of the full-ticket-map test: a claim of each kind while the
/// map is full (`filled`), then again with room (`done`).
const FULL_SCRIPT: &str = r#"
wait_for() { while [ ! -e "$D/$1" ]; do /usr/bin/sleep 0.05; done; }
echo ready $$
wait_for go
(read l < "$D/full") 2>/dev/null; echo full_open=$?
/usr/bin/curl -s -o /dev/null "http://127.0.0.1:$P/"; echo full_connect=$?
echo filled
wait_for go2
(read l < "$D/full") 2>/dev/null; echo room_open=$?
/usr/bin/curl -s -o /dev/null "http://127.0.0.1:$P/"; echo room_connect=$?
echo done
"#;

#[test]
fn a_full_use_ticket_map_refuses_claims_under_its_own_reason() {
    use agentd_common::{maps, UseTicket};
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let e = env();
    let agent = format!("t-full-{}", std::process::id());
    let d = e.dir.path();
    let (mut shell, requester) = AgentShell::start(
        &e,
        &agent,
        &["/usr/bin/sleep", "/usr/bin/curl"],
        FULL_SCRIPT,
    );
    let file = spec(|s| {
        s.read = vec![d.join("full")];
        s.uses = 1;
    });
    let net = spec(|s| {
        s.connect = vec![format!("127.0.0.1:{}", e.port)];
        s.uses = 1;
    });
    for (call, g) in [("file", file), ("net", net)] {
        let call = format!("{agent}-{call}");
        e.enforcer
            .install_grant_for(&agent, &call, "m", &g, Some(requester.clone()))
            .unwrap();
    }
    // Other grants' tickets fill the map (ids no grant of this instance has).
    let pins = agentd::enforce::bpf_state::Instance::for_state_dir(&e.state).pin_dir();
    let mut tickets =
        agentd::enforce::bpf_state::open_pinned_hash::<UseTicket, u8>(&pins, maps::USE_TICKETS)
            .unwrap();
    let filler = |n: u32| UseTicket {
        call_id: u64::MAX - 1,
        n,
        _pad: 0,
    };
    let mut n = 0;
    while tickets.insert(filler(n), 1, 0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 65536, "USE_TICKETS holds 65,536 tickets");
    std::fs::write(d.join("go"), "").unwrap();
    let (_, lines) = shell.until("filled");
    assert!(!ok(value(&lines, "full_open")), "{lines:#?}");
    assert!(!ok(value(&lines, "full_connect")), "{lines:#?}");
    // Refused, each under the reason that says why: the supervisor's file
    // claim and the kernel's connect claim alike.
    let port = format!("127.0.0.1:{}", e.port);
    record(
        &e.sink,
        &agent,
        "file_open",
        "/full",
        "deny",
        "use_tickets_full",
    );
    record(
        &e.sink,
        &agent,
        "connect",
        &port,
        "deny",
        "use_tickets_full",
    );
    let used_up = e
        .sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.agent == agent && r.reason_code == "grant_used_up")
        .count();
    assert_eq!(used_up, 0, "a full map must not read as a spent grant");

    // Control: with room, the same claims succeed, each spending its use.
    tickets.remove(&filler(0)).unwrap();
    tickets.remove(&filler(1)).unwrap();
    std::fs::write(d.join("go2"), "").unwrap();
    let (_, lines) = shell.until("done");
    assert!(ok(value(&lines, "room_open")), "{lines:#?}");
    assert!(ok(value(&lines, "room_connect")), "{lines:#?}");
    let r = record(
        &e.sink,
        &agent,
        "file_open",
        "/full",
        "allow",
        "grant_matched",
    );
    assert_eq!(r.call_id, format!("{agent}-file"));
    let r = record(&e.sink, &agent, "connect", &port, "allow", "grant_matched");
    assert_eq!(r.call_id, format!("{agent}-net"));
    for n in 2..n {
        let _ = tickets.remove(&filler(n));
    }
    e.enforcer.uninstall();
}
