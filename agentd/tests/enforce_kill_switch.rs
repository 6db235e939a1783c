//! The kill switch in the kernel (seccomp backend here; root and a backend
//! needed, else SKIPPED with the reason): a process bound to an approved
//! call execs and opens under its grant; a suspension of its agent ends the
//! grant at once, and the same process's next exec and open are refused.
//! Control: a suspension of another agent leaves the grant working.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agentd::{
    doctor::Backend,
    enforce::{
        bpf_state::{open_pinned_hash, Instance},
        default_baseline, launch, AgentOptions, EnforceKillSwitch, EnforceSlot, Enforcer,
        MemorySink, Mode,
    },
    gateway::{GrantTarget, KillSwitch},
    grant_spec::GrantSpec,
};
use agentd_common::{maps, ExecKey, GrantExpiry};

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

/// The requester shell starts a granted tool shell (a copy of dash, so only
/// the grant covers it), which execs and opens under the grant, waits for
/// `go2`, and tries the same again.
const SCRIPT: &str = r#"
while [ ! -e "$D/go" ]; do /usr/bin/sleep 0.02; done
"$D/toolsh" -c '
  /usr/bin/cat "$D/granted" >/dev/null 2>&1; echo first_exec=$?
  (read l < "$D/granted") 2>/dev/null; echo first_open=$?
  echo bound $$
  while [ ! -e "$D/go2" ]; do :; done
  /usr/bin/cat "$D/granted" >/dev/null 2>&1; echo second_exec=$?
  (read l < "$D/granted") 2>/dev/null; echo second_open=$?
'
echo done
"#;

struct Env {
    enforcer: Enforcer,
    sock: PathBuf,
    state: tempfile::TempDir,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    ensure_user();
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("enforce.sock");
    let enforcer = Enforcer::start(Backend::Seccomp, state.path(), MemorySink::default())
        .expect("enforcer starts");
    launch::serve(enforcer.clone(), &sock).expect("socket");
    let dir = tempfile::Builder::new()
        .prefix("agentd-ks")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("granted"), "granted\n").unwrap();
    std::fs::copy("/usr/bin/dash", dir.path().join("toolsh")).unwrap();
    for f in ["granted", "toolsh"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    Env {
        enforcer,
        sock,
        state,
        dir,
    }
}

/// Entries of the pinned EXEC_GRANTS map (what the kernel checks execs against).
fn exec_entries(state: &Path) -> usize {
    let pin = Instance::for_state_dir(state).pin_dir();
    let m = open_pinned_hash::<ExecKey, GrantExpiry>(&pin, maps::EXEC_GRANTS).unwrap();
    m.keys().filter_map(Result::ok).count()
}

/// Runs the script as `agent`; between the two halves, suspends `target`
/// through the kill switch. Returns the output lines and (grants ended,
/// time the suspension took, EXEC_GRANTS entries before/after).
fn run(e: &Env, agent: &str, target: &str) -> (Vec<String>, usize, Duration, (usize, usize)) {
    let ctl = std::fs::canonicalize(env!("CARGO_BIN_EXE_agentctl")).unwrap();
    let mut baseline = default_baseline();
    for exe in [ctl.clone(), "/usr/bin/sleep".into()] {
        baseline.exec.push(exe.clone());
        baseline.read.push(exe);
    }
    e.enforcer
        .create_agent(agent, AgentOptions::with_baseline(Mode::Enforce, baseline))
        .unwrap();
    let d = e.dir.path();
    let mut child = Command::new(&ctl)
        .args(["run", "--socket"])
        .arg(&e.sock)
        .args([
            "--agent", agent, "--user", USER, "--", "/bin/sh", "-c", SCRIPT,
        ])
        .env("D", d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentctl run");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut next = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.starts_with(want) => {
                    lines.push(l.clone());
                    return l;
                }
                Ok(l) => lines.push(l),
                Err(_) => panic!("no `{want}` from the agent; so far: {lines:#?}"),
            }
        }
    };
    // The requester is the shell agentctl started: the agent's only process.
    let deadline = Instant::now() + Duration::from_secs(30);
    let shell = loop {
        let pids = e
            .enforcer
            .list_agents()
            .into_iter()
            .find(|a| a.name == agent)
            .map(|a| a.pids)
            .unwrap_or_default();
        if let Some(p) = pids.first() {
            break *p;
        }
        assert!(Instant::now() < deadline, "agent never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let requester = e.enforcer.requester_of(agent, shell).expect("requester");
    let spec = GrantSpec {
        exec: vec![d.join("toolsh"), "/usr/bin/cat".into()],
        read: vec![d.join("granted")],
        ttl_secs: 60,
        ..Default::default()
    };
    let before = exec_entries(e.state.path());
    e.enforcer
        .install_grant_for(agent, &format!("{agent}-c1"), "m1", &spec, Some(requester))
        .unwrap();
    std::fs::write(d.join("go"), "").unwrap();
    next("bound ");
    let installed = exec_entries(e.state.path());
    assert!(
        installed > before,
        "the grant's exec entries are in the kernel"
    );
    let k = EnforceKillSwitch {
        slot: EnforceSlot::ready(e.enforcer.clone()),
    };
    let t = Instant::now();
    let ended = k.end_grants(GrantTarget::Agent(target)).unwrap();
    let took = t.elapsed();
    let after = exec_entries(e.state.path());
    std::fs::write(d.join("go2"), "").unwrap();
    next("done");
    let _ = child.wait();
    for f in ["go", "go2"] {
        let _ = std::fs::remove_file(d.join(f));
    }
    (lines, ended, took, (installed, after))
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
}

#[test]
fn suspending_an_agent_ends_its_bound_process_grant_in_the_kernel() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let e = env();
    let tag = std::process::id() % 100000;
    // Control: suspending another agent ends nothing of this one's.
    let ctl_agent = format!("ks-ctl-{tag}");
    let (lines, ended, _, (installed, after)) = run(&e, &ctl_agent, "someone-else");
    assert_eq!(ended, 0);
    assert_eq!(after, installed);
    for k in ["first_exec", "first_open", "second_exec", "second_open"] {
        assert_eq!(value(&lines, k), "0", "{k} in the control: {lines:#?}");
    }

    let agent = format!("ks-{tag}");
    let (lines, ended, took, (installed, after)) = run(&e, &agent, &agent);
    assert_eq!(value(&lines, "first_exec"), "0", "{lines:#?}");
    assert_eq!(value(&lines, "first_open"), "0", "{lines:#?}");
    assert_eq!(ended, 1);
    assert!(
        after < installed,
        "exec entries left the kernel map: {installed} -> {after}"
    );
    assert_ne!(
        value(&lines, "second_exec"),
        "0",
        "exec after the suspension: {lines:#?}"
    );
    assert_ne!(
        value(&lines, "second_open"),
        "0",
        "open after the suspension: {lines:#?}"
    );
    println!(
        "suspension ended {ended} grant(s) in {took:?}; EXEC_GRANTS entries {installed} -> {after}"
    );
    // A generous bound: the benchmark measures it properly.
    assert!(
        took < Duration::from_secs(1),
        "ending the grant took {took:?}"
    );
    e.enforcer.uninstall();
}
