//! VM test: the daemon's enforcement core on the lsm backend, end to end.
//! A real `Enforcer` (pinned maps and links under /sys/fs/bpf/agentd), a
//! real agent launched as an unprivileged user through the enforcement
//! socket (no seccomp filter under lsm), tool runners bound with the real
//! `agentctl exec`, grants, revocation, expiry, audit-only mode, kernel
//! events reaching the audit sink, protected files — and enforcement
//! surviving agentd being killed, then re-adopted. Prints `PASS|FAIL|SKIP name: detail` lines.
#[path = "agentd-vm-lsm/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::{
    ffi::{CString, OsString},
    io::Read as _,
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use agentd::{
    audit::AuditLog,
    config::Durability,
    doctor::{self, Backend},
    enforce::{
        default_baseline, launch, AuditSink, Enforcer, KernelRecord, MemorySink, Mode, SinkError,
    },
    grant_spec::GrantSpec,
};
use harness::{errno, expect_code, run_in, Report};

const STATE: &str = "/var/lib/agentd-vm";
/// The real audit log this suite's records also go to.
const AUDIT_DIR: &str = "/var/lib/agentd-vm-audit";
const BASE: &str = "/tmp/e2e";
const TOOL: &str = "/tmp/e2e/bin/busybox";
const AGENTCTL: &str = "/agentd/bin/agentctl";
const SOCKET: &str = launch::DEFAULT_SOCKET;
/// The unprivileged user this suite's agent runs as (the VM's /etc/passwd).
const AGENT_USER: &str = "agent";

fn main() {
    let mut r = Report { failed: 0 };
    let d = doctor::run();
    if d.backend != Backend::Lsm {
        println!(
            "SKIP enforcer_lsm_suite: backend is {:?}, not lsm ({})",
            d.backend, d.reason
        );
        return;
    }
    if let Err(e) = run(&mut r) {
        r.check("enforcer_setup", Err(e));
    }
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}

fn setup() -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let _ = std::fs::remove_dir_all(BASE);
    for d in ["data", "other", "bin"] {
        std::fs::create_dir_all(format!("{BASE}/{d}")).map_err(e)?;
    }
    std::fs::write(format!("{BASE}/data/secret.txt"), "s\n").map_err(e)?;
    std::fs::write(format!("{BASE}/other/x.txt"), "x\n").map_err(e)?;
    // A copy: its own inode, so granting it grants nothing else.
    std::fs::copy("/bin/busybox", TOOL).map_err(e)?;
    // The agent user must be able to traverse and read.
    for p in [BASE, "/tmp/e2e/data", "/tmp/e2e/other", "/tmp/e2e/bin"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).map_err(e)?;
    }
    Ok(())
}

fn baseline() -> GrantSpec {
    let mut b = default_baseline();
    b.exec.push(AGENTCTL.into());
    b.read.push(AGENTCTL.into());
    // The VM's libraries live under /lib (no /usr in the initramfs).
    b.read.push("/agentd/bin".into());
    b
}

/// Exec of TOOL from a process joined into `cgroup` directly.
fn tool_exec_in(cgroup: &Path) -> Result<harness::ExecResult, String> {
    harness::exec_in(Some(cgroup), TOOL, |_| {})
}

fn run(r: &mut Report) -> Result<(), String> {
    setup()?;
    let _ = std::fs::remove_dir_all(STATE);
    std::fs::create_dir_all(STATE).map_err(|e| e.to_string())?;

    // 1. An agentd that gets SIGKILLed: enforcement must stay.
    let cgroup = start_and_kill_enforcer()?;
    let pins = agentd::enforce::bpf_state::Instance::for_state_dir(Path::new(STATE)).pin_dir();
    r.check(
        "restart_links_pinned",
        if pins.join("links/lsm_bprm_check_security").exists() {
            Ok(format!("{}/links/lsm_* present", pins.display()))
        } else {
            Err(format!("no pinned lsm links in {}", pins.display()))
        },
    );
    r.check(
        "restart_enforcement_survives_agentd_kill",
        harness::expect(
            tool_exec_in(&cgroup),
            harness::ExecResult::Refused(libc::EPERM),
        ),
    );

    // 2. A new agentd re-adopts the pinned state and audits the gap.
    let sink = MemorySink::default();
    let _ = std::fs::remove_dir_all(AUDIT_DIR);
    std::fs::create_dir_all(AUDIT_DIR).map_err(|e| e.to_string())?;
    let log = Arc::new(
        AuditLog::open(Path::new(AUDIT_DIR), Durability::Normal)
            .map_err(|e| format!("audit log: {e}"))?,
    );
    let tee = Tee {
        mem: sink.clone(),
        log: log.clone(),
    };
    let enforcer = Enforcer::start(Backend::Lsm, Path::new(STATE), tee)
        .map_err(|e| format!("enforcer start: {e}"))?;
    r.check("restart_readopted_and_gap_audited", {
        let recs = sink.0.lock().unwrap().clone();
        let agent_kept = enforcer.list_agents().iter().any(|a| a.name == "persist");
        match recs.iter().find(|r| r.action == "enforcer_restart") {
            Some(rec) if agent_kept => Ok(format!("{} ({})", rec.action, rec.target)),
            Some(_) => Err("agent `persist` not re-adopted".into()),
            None => Err(format!("no enforcer_restart record: {recs:?}")),
        }
    });
    r.check(
        "restart_enforcement_after_readopt",
        harness::expect(
            tool_exec_in(&cgroup),
            harness::ExecResult::Refused(libc::EPERM),
        ),
    );

    // 3. A real agent through the enforcement socket and agentctl.
    // The socket's group is the agent user's (0660): this suite's agent runs
    // as `agent`, not the default `agentd-agent`.
    launch::serve_for(
        enforcer.clone(),
        Path::new(SOCKET),
        AGENT_USER,
        Default::default(),
    )
    .map_err(|e| format!("serve: {e}"))?;
    e2e(r, &enforcer, &sink)?;
    grants(r, &enforcer, &sink)?;
    summaries(r, &enforcer, &sink)?;
    repeats(r, &enforcer, &sink)?;
    protected(r, &enforcer, &sink)?;
    // Opens counted under a grant that is still live at shutdown: the
    // shutdown writes (and commits) their row before it returns.
    let counted = bound_opens(&enforcer, "call-sum-live", SUMMARY_OPENS, false)?;
    enforcer.shutdown();
    r.check(
        "summary_written_at_shutdown",
        last_summary(&sink, "call-sum-live", "secret.txt").and_then(|(count, rows)| {
            if count == SUMMARY_OPENS as u64 && counted == 0 {
                Ok(format!(
                    "count={count} in the last of {rows} summary row(s)"
                ))
            } else {
                Err(format!(
                    "count={count} (want {SUMMARY_OPENS}), opens result {counted}"
                ))
            }
        }),
    );
    r.check("summary_audit_chain_verifies", chain_verifies(&log));
    // Clean uninstall: unpinning the instance detaches its programs (later
    // suites and the benchmark start from a kernel without them).
    let _ = std::fs::remove_dir_all(&pins);
    Ok(())
}

/// Allowed opens per summary case.
const SUMMARY_OPENS: usize = 200;

/// Installs `call` (read scope on `data/`) and runs, in a process of agent
/// `e2e` bound to it, `n` opens of `data/secret.txt` and, with `denied`,
/// one open of `other/x.txt` outside the grant. Returns 0 when the opens
/// succeeded and the denied one got EPERM.
fn bound_opens(enforcer: &Enforcer, call: &str, n: usize, denied: bool) -> Result<i32, String> {
    let grant = GrantSpec {
        read: vec![format!("{BASE}/data").into()],
        ttl_secs: 120,
        ..Default::default()
    };
    enforcer
        .install_grant("e2e", call, &format!("msg-{call}"), &grant)
        .map_err(|e| e.to_string())?;
    let secret = CString::new(format!("{BASE}/data/secret.txt")).unwrap();
    let other = CString::new(format!("{BASE}/other/x.txt")).unwrap();
    run_in(
        None,
        |pid| {
            let _ = enforcer.join("e2e", pid);
            let _ = enforcer.bind(pid, call);
        },
        || {
            for _ in 0..n {
                // SAFETY: NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::open(secret.as_ptr(), libc::O_RDONLY) };
                if fd < 0 {
                    return errno();
                }
                unsafe { libc::close(fd) };
            }
            if !denied {
                return 0;
            }
            // SAFETY: as above.
            let fd = unsafe { libc::open(other.as_ptr(), libc::O_RDONLY) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
                return 1;
            }
            if errno() == libc::EPERM {
                0
            } else {
                errno()
            }
        },
    )
}

/// The count of the last `access_summary` row of `call` for `object`, and
/// how many such rows there were.
fn last_summary(sink: &MemorySink, call: &str, object: &str) -> Result<(u64, usize), String> {
    let recs = sink.0.lock().unwrap().clone();
    let rows: Vec<_> = recs
        .iter()
        .filter(|k| k.call_id == call && k.reason_code == "access_summary")
        .collect();
    let last = rows
        .last()
        .ok_or_else(|| format!("no access_summary row of {call}"))?;
    match agentd::audit::kernel_row::access_summary(&last.target) {
        Some((o, count, first, latest))
            if o == object && last.decision == "allow" && first <= latest =>
        {
            Ok((count, rows.len()))
        }
        _ => Err(format!("unexpected summary row {last:?}")),
    }
}

/// N allowed opens under a bound grant: the first has its own row, the
/// rest are counted, and revoking the grant writes one `access_summary`
/// row with count N before `revoke` returns. A denied open in the same
/// process keeps its own row.
fn summaries(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    let call = "call-sum";
    let opened = bound_opens(enforcer, call, SUMMARY_OPENS, true)?;
    // The ring-buffer reader polls (allows do not wake it): the events
    // name the call only while it is known, so wait for them first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && !sink
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|k| k.call_id == call && k.decision == "deny" && k.target.ends_with("x.txt"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    enforcer.revoke(call).map_err(|e| e.to_string())?;
    let recs = sink.0.lock().unwrap().clone();
    let mine: Vec<_> = recs.iter().filter(|k| k.call_id == call).collect();
    let singles = mine
        .iter()
        .filter(|k| k.reason_code == "grant_matched" && k.target.ends_with("secret.txt"))
        .count();
    r.check(
        "summary_counts_allowed_opens_of_a_bound_grant",
        last_summary(sink, call, "secret.txt").and_then(|(count, rows)| {
            if opened == 0 && count == SUMMARY_OPENS as u64 && singles == 1 {
                Ok(format!(
                    "{SUMMARY_OPENS} opens: 1 grant_matched row, last of {rows} access_summary row(s) count={count}, written at revoke"
                ))
            } else {
                Err(format!(
                    "opens result {opened}, count {count} (want {SUMMARY_OPENS}), {singles} grant_matched rows (want 1)"
                ))
            }
        }),
    );
    // The denial of the same process: its own row, never counted.
    let recs = sink.0.lock().unwrap().clone();
    let denials = recs
        .iter()
        .filter(|k| k.call_id == call && k.decision == "deny" && k.target.ends_with("x.txt"))
        .count();
    r.check(
        "summary_denials_keep_their_own_rows",
        if denials == 1 {
            Ok("the denied open of x.txt has its own deny row".into())
        } else {
            Err(format!(
                "{denials} deny rows for x.txt under {call} (want 1)"
            ))
        },
    );
    Ok(())
}

/// Where the repeated-read cases work: `in/` is the grants' read scope,
/// `out/` is outside every scope, `base/` is in the baseline for one case.
const REPEAT: &str = "/tmp/e2e/repeat";

/// Opens `path` read-only `n` times; 0 when every open succeeded, else the
/// errno of the first that failed.
fn open_n(path: &str, n: usize) -> i32 {
    let c = CString::new(path).unwrap();
    for _ in 0..n {
        // SAFETY: NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return errno();
        }
        unsafe { libc::close(fd) };
    }
    0
}

/// Runs `first` in a process of agent `e2e` bound to `call`, then
/// `between` in this (outside, root) process, then `then` in the same
/// bound process: the process keeps what the kernel learned from its
/// first reads. Returns both results (errno-style codes).
fn bound_then(
    enforcer: &Enforcer,
    call: &str,
    first: impl FnOnce() -> i32,
    between: impl FnOnce() -> Result<(), String>,
    then: impl FnOnce() -> i32,
) -> Result<(i32, i32), String> {
    let mut go = [0i32; 2];
    let mut back = [0i32; 2];
    // SAFETY: pipes + fork; the test binary is single-threaded here, so
    // the child may run ordinary code until it exits.
    unsafe {
        if libc::pipe(go.as_mut_ptr()) != 0 || libc::pipe(back.as_mut_ptr()) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let mut b = 0u8;
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
            let r = first() as u8;
            libc::write(back[1], (&r as *const u8).cast(), 1);
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(then());
        }
        libc::close(go[0]);
        libc::close(back[1]);
        let joined = enforcer
            .join("e2e", pid as u32)
            .and_then(|()| enforcer.bind(pid as u32, call))
            .map_err(|e| format!("join/bind: {e}"));
        libc::write(go[1], b"x".as_ptr().cast(), 1);
        let mut r1 = 0u8;
        let got = libc::read(back[0], (&mut r1 as *mut u8).cast(), 1);
        let between = between();
        libc::write(go[1], b"x".as_ptr().cast(), 1);
        libc::close(go[1]);
        libc::close(back[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        joined?;
        between?;
        if got != 1 || !libc::WIFEXITED(status) {
            return Err(format!("bound process died (status {status:#x})"));
        }
        Ok((r1 as i32, libc::WEXITSTATUS(status)))
    }
}

/// Deny rows whose target ends with `name`.
fn deny_rows(sink: &MemorySink, name: &str) -> usize {
    sink.0
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.decision == "deny" && k.target.ends_with(name))
        .count()
}

/// Waits (up to 3 s: the reader is woken by denials, then appends) for
/// more than `before` deny rows of `name`; the count seen.
fn new_deny_rows(sink: &MemorySink, name: &str, before: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let n = deny_rows(sink, name);
        if n > before || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A read repeated under a bound grant skips the scope walk when the scope
/// that allowed it still does (the hint in its access summary). Each case:
/// the control — the same file read 50 times under the live grant — then a
/// change made from outside the agent, then the same process reads again
/// and must be refused with its own deny row: the grant revoked, the file
/// renamed out of the scope, its directory renamed out, a hard link to it
/// outside the scope (while its own name still reads), the grant expired,
/// and a baseline scope that allowed it removed.
fn repeats(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let _ = std::fs::remove_dir_all(REPEAT);
    for d in ["in/sub", "out", "base"] {
        std::fs::create_dir_all(format!("{REPEAT}/{d}")).map_err(e)?;
    }
    for f in [
        "in/a.txt",
        "in/b.txt",
        "in/c.txt",
        "in/sub/d.txt",
        "in/f.txt",
        "base/e.txt",
    ] {
        std::fs::write(format!("{REPEAT}/{f}"), "r\n").map_err(e)?;
    }
    let install = |call: &str, ttl_secs: u64| {
        let grant = GrantSpec {
            read: vec![format!("{REPEAT}/in").into()],
            ttl_secs,
            ..Default::default()
        };
        enforcer
            .install_grant("e2e", call, &format!("msg-{call}"), &grant)
            .map_err(|e| e.to_string())
    };
    let path = |p: &str| format!("{REPEAT}/{p}");
    // Judges one case: the control reads succeeded, the read after the
    // change was refused (EPERM) with a new deny row for `name`.
    let judge = |got: Result<(i32, i32), String>, name: &str, before: usize| {
        let (control, after) = got?;
        let rows = new_deny_rows(sink, name, before);
        if control == 0 && after == libc::EPERM && rows > before {
            Ok(format!(
                "control: 50 reads allowed; after: EPERM with its own deny row ({name})"
            ))
        } else {
            Err(format!(
                "control={control} (want 0), after={after} (want EPERM), deny rows {before}->{rows}"
            ))
        }
    };

    install("call-rep-revoke", 120)?;
    let before = deny_rows(sink, "a.txt");
    let hinted_before = enforcer.counters().reads_by_scope_hint;
    let mut hinted = 0;
    let got = bound_then(
        enforcer,
        "call-rep-revoke",
        || open_n(&path("in/a.txt"), 50),
        || {
            hinted = enforcer.counters().reads_by_scope_hint - hinted_before;
            enforcer
                .revoke("call-rep-revoke")
                .map_err(|e| e.to_string())
        },
        || open_n(&path("in/a.txt"), 1),
    );
    // The first read walks (one per CPU); the repeats are decided by the
    // hint (the VM has one vCPU; ≥ 40 leaves room for a few more).
    r.check(
        "repeat_reads_decided_by_the_scope_hint",
        if hinted >= 40 {
            Ok(format!(
                "{hinted} of 50 reads allowed by the hint, without the walk"
            ))
        } else {
            Err(format!(
                "{hinted} of 50 reads allowed by the hint (want >= 40)"
            ))
        },
    );
    r.check(
        "repeat_read_after_revoke_denied",
        judge(got, "a.txt", before),
    );

    install("call-rep-rename", 120)?;
    let before = deny_rows(sink, "b.txt");
    let got = bound_then(
        enforcer,
        "call-rep-rename",
        || open_n(&path("in/b.txt"), 50),
        || std::fs::rename(path("in/b.txt"), path("out/b.txt")).map_err(e),
        || open_n(&path("out/b.txt"), 1),
    );
    r.check(
        "repeat_read_renamed_out_of_scope_denied",
        judge(got, "b.txt", before),
    );

    install("call-rep-dir", 120)?;
    let before = deny_rows(sink, "d.txt");
    let got = bound_then(
        enforcer,
        "call-rep-dir",
        || open_n(&path("in/sub/d.txt"), 50),
        || std::fs::rename(path("in/sub"), path("out/sub")).map_err(e),
        || open_n(&path("out/sub/d.txt"), 1),
    );
    r.check(
        "repeat_read_directory_renamed_out_of_scope_denied",
        judge(got, "d.txt", before),
    );

    install("call-rep-link", 120)?;
    let before = deny_rows(sink, "c-link.txt");
    let got = bound_then(
        enforcer,
        "call-rep-link",
        || open_n(&path("in/c.txt"), 50),
        || std::fs::hard_link(path("in/c.txt"), path("out/c-link.txt")).map_err(e),
        || match open_n(&path("out/c-link.txt"), 1) {
            // The same inode still reads through its name in the scope.
            libc::EPERM if open_n(&path("in/c.txt"), 1) == 0 => libc::EPERM,
            libc::EPERM => 200,
            other => other,
        },
    );
    r.check(
        "repeat_read_hard_link_out_of_scope_denied",
        judge(got, "c-link.txt", before).map(|ok| format!("{ok}; in/c.txt still reads")),
    );

    install("call-rep-expire", 2)?;
    let before = deny_rows(sink, "f.txt");
    let got = bound_then(
        enforcer,
        "call-rep-expire",
        || open_n(&path("in/f.txt"), 50),
        || {
            std::thread::sleep(Duration::from_millis(2300));
            Ok(())
        },
        || open_n(&path("in/f.txt"), 1),
    );
    r.check(
        "repeat_read_after_expiry_denied",
        judge(got, "f.txt", before),
    );

    // The bound process reads a file only the baseline covers; the
    // baseline is then replaced without that scope.
    let original = enforcer
        .baseline_of("e2e")
        .ok_or("agent e2e has no baseline")?;
    let mut wider = original.clone();
    wider.read.push(path("base").into());
    let set_baseline = |b: &GrantSpec| {
        enforcer
            .create_agent(
                "e2e",
                agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, b.clone()),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    set_baseline(&wider)?;
    install("call-rep-base", 120)?;
    let before = deny_rows(sink, "e.txt");
    let got = bound_then(
        enforcer,
        "call-rep-base",
        || open_n(&path("base/e.txt"), 50),
        || set_baseline(&original),
        || open_n(&path("base/e.txt"), 1),
    );
    r.check(
        "repeat_read_baseline_scope_removed_denied",
        judge(got, "e.txt", before),
    );
    for call in [
        "call-rep-rename",
        "call-rep-dir",
        "call-rep-link",
        "call-rep-base",
    ] {
        let _ = enforcer.revoke(call);
    }
    Ok(())
}

/// The audit log the suite's records went to verifies offline.
fn chain_verifies(log: &AuditLog) -> Result<String, String> {
    log.shutdown().map_err(|e| e.to_string())?;
    let rep = agentd::audit::verify_db(log.db_path(), &log.verifying_key(), &[])
        .map_err(|e| e.to_string())?;
    let db = agentd::audit::store::open_ro(log.db_path()).map_err(|e| e.to_string())?;
    let summaries = agentd::audit::store::records_after(&db, log.db_path(), 0, 100_000)
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|r| r.event.reason_code == "access_summary")
        .count();
    if summaries == 0 {
        return Err("no access_summary row in the audit log".into());
    }
    Ok(format!(
        "{} rows verified, {summaries} access_summary",
        rep.records
    ))
}

/// Kernel records into memory (the checks read them) and into a real
/// audit log (its chain is verified at the end).
struct Tee {
    mem: MemorySink,
    log: Arc<AuditLog>,
}

impl AuditSink for Tee {
    fn append_kernel(&self, rec: &KernelRecord) -> Result<(), SinkError> {
        AuditSink::append_kernel(&*self.log, rec)?;
        self.mem.append_kernel(rec)
    }

    fn append_lifecycle(
        &self,
        action: &str,
        target: &str,
        reason_code: &str,
    ) -> Result<(), SinkError> {
        AuditSink::append_lifecycle(&*self.log, action, target, reason_code)?;
        self.mem.append_lifecycle(action, target, reason_code)
    }
}

/// Forks an agentd (Enforcer) that creates agent `persist`, then SIGKILLs
/// it. Returns the agent's cgroup.
fn start_and_kill_enforcer() -> Result<PathBuf, String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe + fork; the child never returns.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err("pipe".into());
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::close(fds[0]);
            let msg = match Enforcer::start(Backend::Lsm, Path::new(STATE), MemorySink::default())
                .and_then(|e| {
                    e.create_agent(
                        "persist",
                        agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, baseline()),
                    )
                    .map(|h| (e, h))
                }) {
                Ok((e, h)) => {
                    std::mem::forget(e);
                    format!("ok {}", h.cgroup.display())
                }
                Err(e) => format!("err {e}"),
            };
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::close(fds[1]);
            loop {
                libc::pause();
            }
        }
        libc::close(fds[1]);
        let mut out = String::new();
        let mut f = std::fs::File::from_raw_fd(fds[0]);
        let _ = f.read_to_string(&mut out);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        match out.strip_prefix("ok ") {
            Some(path) => Ok(PathBuf::from(path)),
            None => Err(format!("first agentd failed: {out}")),
        }
    }
}

/// Runs `script` as an agent (uid `agent`) via `launch::run_agent`,
/// returning its stdout.
fn run_agent_script(agent: &str, script: &str) -> Result<String, String> {
    let creds = launch::creds_of_user(AGENT_USER).map_err(|e| e.to_string())?;
    let spec = launch::LaunchSpec {
        socket: SOCKET.into(),
        agent: agent.into(),
        mode: None,
        creds,
        argv: ["/bin/sh", "-c", script]
            .into_iter()
            .map(OsString::from)
            .collect(),
    };
    let mut fds = [0i32; 2];
    // SAFETY: redirect our stdout into a pipe while the agent runs (its
    // output is small, well under the pipe buffer), then restore it.
    let (code, out) = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err("pipe".into());
        }
        let saved = libc::dup(1);
        libc::dup2(fds[1], 1);
        libc::close(fds[1]);
        let code = launch::run_agent(&spec);
        libc::dup2(saved, 1);
        libc::close(saved);
        let mut out = String::new();
        let _ = std::fs::File::from_raw_fd(fds[0]).read_to_string(&mut out);
        (code, out)
    };
    match code {
        Ok(0) => Ok(out),
        Ok(c) => Err(format!("agent exited {c}: {out}")),
        Err(e) => Err(format!("run_agent: {e}")),
    }
}

fn value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

fn e2e(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    enforcer
        .create_agent(
            "e2e",
            agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, baseline()),
        )
        .map_err(|e| format!("create agent: {e}"))?;
    let grant = GrantSpec {
        exec: vec![TOOL.into()],
        read: vec![format!("{BASE}/data").into()],
        ttl_secs: 120,
        ..Default::default()
    };
    enforcer
        .install_grant("e2e", "call-1", "msg-1", &grant)
        .map_err(|e| format!("install grant: {e}"))?;
    let bound = |call: &str, cmd: &str| {
        format!("{AGENTCTL} exec --socket {SOCKET} --call {call} -- {TOOL} {cmd}")
    };
    let script = [
        format!("{TOOL} true; echo unbound_exec=$?"),
        format!("cat {BASE}/data/secret.txt >/dev/null 2>&1; echo unbound_read=$?"),
        format!(
            "{} >/dev/null 2>&1; echo bound_read=$?",
            bound("call-1", &format!("cat {BASE}/data/secret.txt"))
        ),
        format!(
            "{} >/dev/null 2>&1; echo bound_outside=$?",
            bound("call-1", &format!("cat {BASE}/other/x.txt"))
        ),
        format!(
            "{} 2>/dev/null; echo bound_write=$?",
            bound("call-1", &format!("sh -c 'echo x > {BASE}/data/new.txt'"))
        ),
        format!(
            "{} >/dev/null 2>&1; echo unknown_call=$?",
            bound("nope", "true")
        ),
    ]
    .join("; ");
    let out = match run_agent_script("e2e", &script) {
        Ok(out) => {
            r.check(
                "agent_launched_without_seccomp_filter",
                Ok("agentctl-style launch under lsm ran".into()),
            );
            out
        }
        Err(e) => {
            r.check("agent_launched_without_seccomp_filter", Err(e));
            return Ok(());
        }
    };
    let check = |r: &mut Report, name: &str, key: &str, want_ok: bool| {
        let got = value(&out, key);
        r.check(
            name,
            match got.as_deref() {
                Some("0") if want_ok => Ok(format!("{key}=0")),
                Some(v) if !want_ok && v != "0" => Ok(format!("{key}={v}")),
                other => Err(format!(
                    "{key}={other:?} (want {}); output: {out:?}",
                    if want_ok { "0" } else { "non-zero" }
                )),
            },
        );
    };
    check(
        r,
        "e2e_unbound_exec_of_granted_tool_denied",
        "unbound_exec",
        false,
    );
    check(r, "e2e_unbound_read_denied", "unbound_read", false);
    check(
        r,
        "e2e_bound_exec_and_read_in_grant_allowed",
        "bound_read",
        true,
    );
    check(
        r,
        "e2e_bound_read_outside_scope_denied",
        "bound_outside",
        false,
    );
    check(
        r,
        "e2e_bound_write_in_read_scope_denied",
        "bound_write",
        false,
    );
    check(r, "e2e_bind_to_unknown_call_refused", "unknown_call", false);
    // The ring-buffer reader hands events to the sink asynchronously.
    std::thread::sleep(Duration::from_millis(300));
    let recs = sink.0.lock().unwrap().clone();
    let found = |action: &str, decision: &str, call: &str, target: &str| {
        recs.iter().any(|k| {
            k.action == action
                && k.decision == decision
                && k.call_id == call
                && k.target.contains(target)
        })
    };
    r.check(
        "audit_records_kernel_decisions",
        if found("file_open", "deny", "", "secret.txt")
            && found("exec", "allow", "call-1", "busybox")
        {
            Ok("deny (baseline) and allow (call-1) records reached the sink".into())
        } else {
            Err(format!(
                "records: {:?}",
                recs.iter()
                    .map(|k| format!("{}/{}/{}/{}", k.action, k.decision, k.call_id, k.target))
                    .collect::<Vec<_>>()
            ))
        },
    );
    Ok(())
}

/// Revocation, expiry and audit-only mode through the Enforcer API.
fn grants(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    let secret = CString::new(format!("{BASE}/data/secret.txt")).unwrap();
    let open_secret = || {
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(secret.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            errno()
        } else {
            0
        }
    };
    let in_agent_bound = |call: &'static str| {
        move |pid: u32| {
            let _ = enforcer.join("e2e", pid);
            let _ = enforcer.bind(pid, call);
        }
    };
    let spec = |ttl| GrantSpec {
        read: vec![format!("{BASE}/data").into()],
        ttl_secs: ttl,
        ..Default::default()
    };
    enforcer
        .install_grant("e2e", "call-2", "msg-2", &spec(120))
        .map_err(|e| e.to_string())?;
    r.check(
        "grant_read_allowed",
        expect_code(run_in(None, in_agent_bound("call-2"), open_secret), 0),
    );
    enforcer.revoke("call-2").map_err(|e| e.to_string())?;
    r.check(
        "grant_revoked_denies",
        expect_code(
            run_in(
                None,
                |pid| {
                    let _ = enforcer.join("e2e", pid);
                },
                open_secret,
            ),
            libc::EPERM,
        ),
    );
    enforcer
        .install_grant("e2e", "call-3", "msg-3", &spec(1))
        .map_err(|e| e.to_string())?;
    let mut bound_then_wait = Some(in_agent_bound("call-3"));
    r.check(
        "grant_expiry_denies",
        expect_code(
            run_in(
                None,
                |pid| {
                    if let Some(f) = bound_then_wait.take() {
                        f(pid);
                    }
                    std::thread::sleep(Duration::from_millis(1300));
                },
                open_secret,
            ),
            libc::EPERM,
        ),
    );
    enforcer
        .set_mode("e2e", Mode::AuditOnly)
        .map_err(|e| e.to_string())?;
    r.check(
        "audit_only_allows",
        expect_code(
            run_in(
                None,
                |pid| {
                    let _ = enforcer.join("e2e", pid);
                },
                open_secret,
            ),
            0,
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    r.check(
        "audit_only_records_would_deny",
        if sink
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|k| k.decision == "would_deny" && k.target.contains("secret.txt"))
        {
            Ok("would_deny record for secret.txt".into())
        } else {
            Err("no would_deny record".into())
        },
    );
    enforcer
        .set_mode("e2e", Mode::Enforce)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The agent's home (a baseline write scope) and workspace in it.
const HOME: &str = "/tmp/e2e/home";
const WS: &str = "/tmp/e2e/home/ws";
const SOUL: &str = "/tmp/e2e/home/ws/SOUL.md";
/// Protected, and missing when the agent is created.
const RULES: &str = "/tmp/e2e/home/ws/RULES.md";

/// Protected files on the lsm backend: the baseline's write scope covers
/// the workspace, yet every write-side operation on SOUL.md (and on a hard
/// link to it, and moving its directory away) is refused `protected_file`
/// with a kernel row; the control file beside it is written. A call whose
/// grant names SOUL.md as a protected write writes it; audit-only mode
/// records would_deny and blocks nothing.
fn protected(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    let creds = launch::creds_of_user(AGENT_USER).map_err(|e| e.to_string())?;
    let e = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(WS).map_err(e)?;
    std::fs::write(SOUL, "soul\n").map_err(e)?;
    std::fs::write(format!("{WS}/notes.md"), "notes\n").map_err(e)?;
    // Another name of the same file, made before enforcement.
    std::fs::hard_link(SOUL, format!("{HOME}/soul-link")).map_err(e)?;
    // The agent owns everything: whatever is refused is refused by the hooks.
    for p in [HOME, WS, SOUL, &format!("{WS}/notes.md")] {
        std::os::unix::fs::chown(p, Some(creds.uid), Some(creds.gid)).map_err(e)?;
    }
    let mut base = baseline();
    base.write.push(HOME.into());
    base.protected = vec![SOUL.into(), RULES.into()];
    enforcer
        .create_agent(
            "prot",
            agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, base),
        )
        .map_err(|e| format!("create agent: {e}"))?;
    let steps: &[(&str, String)] = &[
        ("control", format!("echo ok > {WS}/notes.md")),
        ("read", format!("cat {SOUL} >/dev/null")),
        ("write", format!("echo x > {SOUL}")),
        ("append", format!("echo x >> {SOUL}")),
        ("truncate", format!("truncate -s 0 {SOUL}")),
        (
            "rename_over",
            format!("echo y > {WS}/other.md && mv -f {WS}/other.md {SOUL}"),
        ),
        ("rename_away", format!("mv {SOUL} {WS}/moved.md")),
        ("rm", format!("rm -f {SOUL}")),
        ("chmod", format!("chmod 600 {SOUL}")),
        ("ln", format!("ln {SOUL} {WS}/link.md")),
        ("hardlink_write", format!("echo x > {HOME}/soul-link")),
        ("dir_rename", format!("mv {WS} {HOME}/ws2")),
        ("create_missing", format!("echo x > {RULES}")),
        (
            "rename_onto_missing",
            format!("echo y > {WS}/other2.md && mv {WS}/other2.md {RULES}"),
        ),
    ];
    let script = steps
        .iter()
        .map(|(k, cmd)| format!("{cmd} 2>/dev/null; echo {k}=$?"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = run_agent_script("prot", &script)?;
    for (k, _) in steps {
        let want_ok = matches!(*k, "control" | "read");
        let got = value(&out, k);
        r.check(
            &format!("protected_{k}"),
            match got.as_deref() {
                Some("0") if want_ok => Ok(format!("{k}=0")),
                Some(v) if !want_ok && v != "0" => Ok(format!("{k}={v} (refused)")),
                other => Err(format!("{k}={other:?}; output: {out:?}")),
            },
        );
    }
    let soul = std::fs::read_to_string(SOUL).unwrap_or_else(|e| format!("<{e}>"));
    r.check(
        "protected_file_unchanged",
        if soul == "soul\n" {
            Ok("SOUL.md still reads `soul`".into())
        } else {
            Err(format!("SOUL.md now {soul:?}"))
        },
    );
    std::thread::sleep(Duration::from_millis(400));
    let recs: Vec<_> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.agent == "prot")
        .cloned()
        .collect();
    let rows = |decision: &str, reason: &str| -> Vec<String> {
        recs.iter()
            .filter(|k| k.decision == decision && k.reason_code == reason)
            .map(|k| format!("{} {}", k.action, k.target))
            .collect()
    };
    let denied = rows("deny", "protected_file");
    let want = [
        ("file_open", "SOUL.md"),
        ("path_rename", "SOUL.md"),
        ("path_unlink", "SOUL.md"),
        ("path_chmod", "SOUL.md"),
        ("path_link", "SOUL.md"),
        ("file_open", "soul-link"),
        ("path_rename", "ws"),
        ("path_create", "RULES.md"),
        ("path_rename", "RULES.md"),
    ];
    let missing: Vec<String> = want
        .iter()
        .filter(|(a, t)| !denied.iter().any(|d| d.starts_with(a) && d.ends_with(t)))
        .map(|(a, t)| format!("{a} {t}"))
        .collect();
    r.check(
        "protected_file_rows",
        if missing.is_empty() {
            Ok(format!("{} protected_file rows: {denied:?}", denied.len()))
        } else {
            Err(format!(
                "missing {missing:?}; protected_file rows: {denied:?}"
            ))
        },
    );
    protected_write(r, enforcer, sink)
}

/// A call whose grant names SOUL.md as a protected write replaces it (a
/// new inode, renamed over it); once the call ends, the new file is the
/// protected one. Then audit-only mode.
fn protected_write(r: &mut Report, enforcer: &Enforcer, sink: &MemorySink) -> Result<(), String> {
    ordinary_grant(r, enforcer)?;
    let grant = GrantSpec {
        exec: vec![TOOL.into()],
        write: vec![WS.into()],
        protected_write: vec![SOUL.into(), RULES.into()],
        ttl_secs: 120,
        ..Default::default()
    };
    enforcer
        .install_grant("prot", "call-owner", "msg-owner", &grant)
        .map_err(|e| format!("install grant: {e}"))?;
    let owner = format!(
        "{AGENTCTL} exec --socket {SOCKET} --call call-owner -- {TOOL} sh -c \
         'echo owner > {SOUL} && echo new > {WS}/new.md && {TOOL} mv -f {WS}/new.md {SOUL} \
          && echo rules > {RULES}'"
    );
    let out = run_agent_script("prot", &format!("{owner}; echo owner_write=$?"))?;
    let soul = std::fs::read_to_string(SOUL).unwrap_or_default();
    let rules = std::fs::read_to_string(RULES).unwrap_or_default();
    r.check(
        "protected_write_by_granted_call",
        match value(&out, "owner_write").as_deref() {
            Some("0") if soul == "new\n" && rules == "rules\n" => {
                Ok("wrote and replaced SOUL.md, created RULES.md".into())
            }
            v => Err(format!(
                "owner_write={v:?}, SOUL.md {soul:?}, RULES.md {rules:?}; output {out:?}"
            )),
        },
    );
    std::thread::sleep(Duration::from_millis(400));
    r.check(
        "protected_write_row",
        if sink.0.lock().unwrap().iter().any(|k| {
            k.call_id == "call-owner"
                && k.decision == "allow"
                && k.action == "file_open"
                && k.target.contains("SOUL.md")
        }) {
            Ok("allow row under call-owner for SOUL.md".into())
        } else {
            Err("no allow row under call-owner".into())
        },
    );
    enforcer.revoke("call-owner").map_err(|e| e.to_string())?;
    let out = run_agent_script(
        "prot",
        &format!("echo x > {SOUL} 2>/dev/null; echo after=$?"),
    )?;
    r.check(
        "protected_replacement_protected_after_the_call",
        match value(&out, "after").as_deref() {
            Some(v) if v != "0" => Ok(format!("after={v} (the new inode is protected)")),
            v => Err(format!("after={v:?}; output {out:?}")),
        },
    );
    // Replaced by someone else (an administrator's editor renaming a new
    // file over it): protected by its name at once. The new file is the
    // agent's, so only the hooks can refuse the agent's write.
    let tmp = format!("{WS}/.SOUL.md.swp");
    let creds = launch::creds_of_user(AGENT_USER).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, "admin\n").map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&tmp, Some(creds.uid), Some(creds.gid)).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, SOUL).map_err(|e| e.to_string())?;
    let refusals = || {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .filter(|k| {
                k.agent == "prot"
                    && k.decision == "deny"
                    && k.reason_code == "protected_file"
                    && k.target.ends_with("SOUL.md")
            })
            .count()
    };
    let before = refusals();
    let out = run_agent_script(
        "prot",
        &format!("echo x > {SOUL} 2>/dev/null; echo admin=$?"),
    )?;
    std::thread::sleep(Duration::from_millis(400));
    let rows = refusals() - before;
    r.check(
        "protected_replaced_by_admin_still_protected",
        match value(&out, "admin").as_deref() {
            Some(v) if v != "0" && rows > 0 => {
                Ok(format!("admin={v}, protected_file row (protected by name)"))
            }
            v => Err(format!("admin={v:?}, {rows} new rows; output {out:?}")),
        },
    );
    pending_protected_write(r, enforcer, sink)?;
    enforcer
        .set_mode("prot", Mode::AuditOnly)
        .map_err(|e| e.to_string())?;
    let out = run_agent_script("prot", &format!("echo audit > {SOUL}; echo audit=$?"))?;
    std::thread::sleep(Duration::from_millis(400));
    let would = sink.0.lock().unwrap().iter().any(|k| {
        k.agent == "prot" && k.decision == "would_deny" && k.reason_code == "protected_file"
    });
    r.check(
        "protected_audit_only_would_deny",
        match value(&out, "audit").as_deref() {
            Some("0") if would => Ok("written, would_deny protected_file row".into()),
            v => Err(format!("audit={v:?}, would_deny row: {would}")),
        },
    );
    enforcer
        .set_mode("prot", Mode::Enforce)
        .map_err(|e| e.to_string())
}

/// An ordinary call whose write scope covers the workspace writes the
/// control file, never SOUL.md.
fn ordinary_grant(r: &mut Report, enforcer: &Enforcer) -> Result<(), String> {
    let grant = GrantSpec {
        exec: vec![TOOL.into()],
        write: vec![WS.into()],
        ttl_secs: 120,
        ..Default::default()
    };
    enforcer
        .install_grant("prot", "call-plain", "msg-plain", &grant)
        .map_err(|e| format!("install grant: {e}"))?;
    let bound = |cmd: &str| {
        format!("{AGENTCTL} exec --socket {SOCKET} --call call-plain -- {TOOL} sh -c '{cmd}'")
    };
    let script = format!(
        "{} 2>/dev/null; echo plain_control=$?; {} 2>/dev/null; echo plain_soul=$?",
        bound(&format!("echo plain > {WS}/notes.md")),
        bound(&format!("echo plain > {SOUL}"))
    );
    let out = run_agent_script("prot", &script)?;
    r.check(
        "protected_ordinary_grant_covering_it_refused",
        match (
            value(&out, "plain_control").as_deref(),
            value(&out, "plain_soul").as_deref(),
        ) {
            (Some("0"), Some(v)) if v != "0" => {
                Ok(format!("notes.md written, SOUL.md refused ({v})"))
            }
            v => Err(format!("{v:?}; output {out:?}")),
        },
    );
    enforcer.revoke("call-plain").map_err(|e| e.to_string())
}

/// A pending grant naming SOUL.md as a protected write: the requester
/// claims it by writing (no binding), with an allow row under the call.
fn pending_protected_write(
    r: &mut Report,
    enforcer: &Enforcer,
    sink: &MemorySink,
) -> Result<(), String> {
    let soul = CString::new(SOUL).unwrap();
    let write_soul = || {
        // SAFETY: NUL-terminated path; a short write is enough.
        unsafe {
            let fd = libc::open(soul.as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
            if fd < 0 {
                return errno();
            }
            libc::write(fd, b"pending\n".as_ptr().cast(), 8);
            libc::close(fd);
        }
        0
    };
    r.check(
        "protected_pending_control_refused",
        expect_code(
            run_in(
                None,
                |pid| {
                    let _ = enforcer.join("prot", pid);
                },
                write_soul,
            ),
            libc::EPERM,
        ),
    );
    let grant = GrantSpec {
        protected_write: vec![SOUL.into()],
        ttl_secs: 120,
        ..Default::default()
    };
    r.check(
        "protected_pending_grant_claimed",
        expect_code(
            run_in(
                None,
                |pid| {
                    let _ = enforcer.join("prot", pid);
                    let req = enforcer.requester_of("prot", pid);
                    let _ =
                        enforcer.install_grant_for("prot", "call-pend", "msg-pend", &grant, req);
                },
                write_soul,
            ),
            0,
        )
        .and_then(|ok| {
            std::thread::sleep(Duration::from_millis(400));
            let row = sink.0.lock().unwrap().iter().any(|k| {
                k.call_id == "call-pend" && k.decision == "allow" && k.target.contains("SOUL.md")
            });
            let body = std::fs::read_to_string(SOUL).unwrap_or_default();
            match (row, body.as_str()) {
                (true, "pending\n") => Ok(format!("{ok}; allow row under call-pend")),
                _ => Err(format!("row {row}, SOUL.md {body:?}")),
            }
        }),
    );
    enforcer.revoke("call-pend").map_err(|e| e.to_string())
}
