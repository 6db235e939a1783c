//! VM test: the BPF LSM exec gate really denies. Runs as root inside the
//! test VM (see xtask/src/vm.rs); prints `PASS|FAIL|SKIP name: detail` lines
//! and exits non-zero when anything failed.
//!
//! With the real loader it attaches `bprm_check_security`, makes a cgroup,
//! registers it in AGENT_CGROUPS, and checks that an exec inside fails with
//! EPERM while the same exec outside succeeds — then that grants (baseline,
//! bound call, expired) and audit-only mode change exactly that.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
    time::Duration,
};

use agentd::{
    doctor::{self, Backend},
    enforce::lsm::{file_id_of, LsmBackend},
};
use agentd_common::{
    baseline_call_id, maps, AgentCgroup, Binding, ExecKey, GrantExpiry, Hook, KernelEvent,
    KernelReason, Mode,
};
use aya::maps::{HashMap, MapData, RingBuf};

/// The binary every exec test runs: busybox's `true` applet inside the VM.
const TARGET: &str = "/bin/true";
const AGENT_ID: u32 = 7;
/// Child exit code = EXEC_FAILED_BASE + errno when execv fails.
const EXEC_FAILED_BASE: i32 = 100;

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("PASS {name}: {detail}"),
            Err(detail) => {
                self.failed += 1;
                println!("FAIL {name}: {detail}");
            }
        }
    }
}

/// How a test exec ended.
#[derive(Debug, PartialEq, Eq)]
enum ExecResult {
    /// The program ran and exited with this status.
    Ran(i32),
    /// execv failed with this errno.
    Refused(i32),
}

/// Forks; the child joins `cgroup` (if any), waits until `before_exec` has
/// run in the parent with the child's pid, then execs `path`.
fn exec_in(
    cgroup: Option<&Path>,
    path: &str,
    before_exec: impl FnOnce(u32),
) -> Result<ExecResult, String> {
    let procs =
        cgroup.map(|c| CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()).unwrap());
    let prog = CString::new(path).unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: plain syscalls; the child only makes async-signal-safe calls.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        match libc::fork() {
            -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                libc::close(fds[1]);
                if let Some(procs) = &procs {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(99);
                    }
                    libc::close(fd);
                }
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                let argv = [prog.as_ptr(), std::ptr::null()];
                libc::execv(prog.as_ptr(), argv.as_ptr());
                let errno = *libc::__errno_location();
                libc::_exit(EXEC_FAILED_BASE + errno);
            }
            pid => {
                libc::close(fds[0]);
                before_exec(pid as u32);
                libc::write(fds[1], b"x".as_ptr().cast(), 1);
                libc::close(fds[1]);
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                if !libc::WIFEXITED(status) {
                    return Err(format!("child did not exit normally (status {status:#x})"));
                }
                match libc::WEXITSTATUS(status) {
                    99 => Err(format!(
                        "child could not join {}",
                        cgroup.unwrap().display()
                    )),
                    c if c >= EXEC_FAILED_BASE => Ok(ExecResult::Refused(c - EXEC_FAILED_BASE)),
                    c => Ok(ExecResult::Ran(c)),
                }
            }
        }
    }
}

fn expect(got: Result<ExecResult, String>, want: ExecResult) -> Result<String, String> {
    match got? {
        g if g == want => Ok(format!("{want:?}")),
        g => Err(format!("expected {want:?}, got {g:?}")),
    }
}

/// Drains the ring buffer into owned events.
fn drain(events: &mut RingBuf<MapData>) -> Vec<KernelEvent> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        if item.len() >= std::mem::size_of::<KernelEvent>() {
            // SAFETY: KernelEvent is repr(C) plain data written by our program.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<KernelEvent>()) });
        }
    }
    out
}

fn describe(e: &KernelEvent) -> String {
    let target = String::from_utf8_lossy(&e.target[..(e.target_len as usize).min(e.target.len())]);
    format!(
        "hook={} allowed={} reason={} call={} target={}",
        Hook::from_u8(e.hook).map_or("?", Hook::name),
        e.allowed,
        KernelReason::from_u8(e.reason).map_or("?", KernelReason::code),
        e.call_id,
        target.trim_end_matches('\0')
    )
}

/// The exec event for `tgid`, or an error listing what arrived.
fn exec_event(events: &mut RingBuf<MapData>, tgid: Option<u32>) -> Result<KernelEvent, String> {
    // Ring buffer records are committed before execv returns; no waiting needed.
    let all = drain(events);
    all.iter()
        .rev()
        .find(|e| e.hook == Hook::Exec as u8 && tgid.is_none_or(|t| e.tgid == t))
        .copied()
        .ok_or_else(|| {
            format!(
                "no exec event; got [{}]",
                all.iter().map(describe).collect::<Vec<_>>().join("; ")
            )
        })
}

fn main() {
    let mut r = Report { failed: 0 };
    let doctor = doctor::run();
    if doctor.backend != Backend::Lsm {
        r.check(
            "doctor_backend_lsm",
            Err(format!(
                "doctor chose {:?}: {}",
                doctor.backend, doctor.reason
            )),
        );
        println!(
            "SKIP lsm_exec_suite: BPF LSM unavailable on this kernel ({})",
            doctor.reason
        );
        std::process::exit(1);
    }
    r.check("doctor_backend_lsm", Ok(doctor.reason.clone()));
    if let Err(e) = run(&mut r) {
        r.check("lsm_exec_setup", Err(e));
    }
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}

fn run(r: &mut Report) -> Result<(), String> {
    let mut backend = LsmBackend::attach().map_err(|e| format!("attach: {e}"))?;
    r.check(
        "lsm_attach",
        Ok("bprm_check_security + fork/exit tracepoints attached".into()),
    );

    let root = agentd::enforce::cgroup_root().map_err(|e| e.to_string())?;
    let cgroup: PathBuf = root.join("agentd-vm-lsm");
    let _ = std::fs::create_dir(&cgroup);
    use std::os::unix::fs::MetadataExt as _;
    let cgroup_id = std::fs::metadata(&cgroup).map_err(|e| e.to_string())?.ino();
    let target = file_id_of(Path::new(TARGET)).map_err(|e| format!("stat {TARGET}: {e}"))?;

    let ebpf = backend.ebpf_mut();
    let mut events = RingBuf::try_from(ebpf.take_map(maps::EVENTS).ok_or("EVENTS map missing")?)
        .map_err(|e| e.to_string())?;
    let mut agents: HashMap<MapData, u64, AgentCgroup> = HashMap::try_from(
        ebpf.take_map(maps::AGENT_CGROUPS)
            .ok_or("AGENT_CGROUPS missing")?,
    )
    .map_err(|e| e.to_string())?;
    let mut grants: HashMap<MapData, ExecKey, GrantExpiry> = HashMap::try_from(
        ebpf.take_map(maps::EXEC_GRANTS)
            .ok_or("EXEC_GRANTS missing")?,
    )
    .map_err(|e| e.to_string())?;
    let mut bindings: HashMap<MapData, u32, Binding> =
        HashMap::try_from(ebpf.take_map(maps::BINDINGS).ok_or("BINDINGS missing")?)
            .map_err(|e| e.to_string())?;
    let set_mode = |agents: &mut HashMap<MapData, u64, AgentCgroup>, mode: Mode| {
        agents
            .insert(
                cgroup_id,
                AgentCgroup {
                    agent_id: AGENT_ID,
                    mode: mode as u8,
                    _pad: [0; 3],
                },
                0,
            )
            .map_err(|e| e.to_string())
    };

    // Before registration the cgroup is an ordinary one.
    r.check(
        "exec_in_unregistered_cgroup_runs",
        expect(exec_in(Some(&cgroup), TARGET, |_| {}), ExecResult::Ran(0)),
    );
    set_mode(&mut agents, Mode::Enforce)?;
    drain(&mut events);

    r.check(
        "exec_outside_agent_cgroup_runs",
        expect(exec_in(None, TARGET, |_| {}), ExecResult::Ran(0)),
    );
    r.check(
        "exec_inside_agent_cgroup_denied_eperm",
        expect(
            exec_in(Some(&cgroup), TARGET, |_| {}),
            ExecResult::Refused(libc::EPERM),
        ),
    );
    r.check(
        "exec_deny_reported_no_grant",
        exec_event(&mut events, None).and_then(|e| {
            let ok = e.allowed == 0
                && e.reason == KernelReason::NoGrant as u8
                && e.call_id == baseline_call_id(AGENT_ID)
                && describe(&e).contains("true");
            if ok {
                Ok(describe(&e))
            } else {
                Err(describe(&e))
            }
        }),
    );

    // Baseline grant for the file's device+inode.
    let baseline = ExecKey {
        call_id: baseline_call_id(AGENT_ID),
        file: target,
    };
    grants
        .insert(baseline, GrantExpiry { expires_at_ns: 0 }, 0)
        .map_err(|e| e.to_string())?;
    r.check(
        "exec_with_baseline_grant_runs",
        expect(exec_in(Some(&cgroup), TARGET, |_| {}), ExecResult::Ran(0)),
    );
    // The same file under another name (busybox applet link) is the same inode.
    r.check(
        "exec_grant_follows_inode_not_path",
        match exec_in(Some(&cgroup), "/bin/busybox", |_| {}) {
            // busybox without an applet prints usage; any exit status means it ran.
            Ok(ExecResult::Ran(code)) => Ok(format!("/bin/busybox ran (status {code})")),
            other => Err(format!("expected the exec to run, got {other:?}")),
        },
    );
    grants.remove(&baseline).map_err(|e| e.to_string())?;

    // A grant for call 42 covers only processes bound to call 42.
    let call = 42u64;
    let key = ExecKey {
        call_id: call,
        file: target,
    };
    grants
        .insert(key, GrantExpiry { expires_at_ns: 0 }, 0)
        .map_err(|e| e.to_string())?;
    let mut bind_err = None;
    r.check(
        "exec_bound_to_granted_call_runs",
        expect(
            exec_in(Some(&cgroup), TARGET, |pid| {
                if let Err(e) = bindings.insert(
                    pid,
                    Binding {
                        call_id: call,
                        agent_id: AGENT_ID,
                        _pad: 0,
                    },
                    0,
                ) {
                    bind_err = Some(e.to_string());
                }
            }),
            ExecResult::Ran(0),
        )
        .and_then(|d| bind_err.take().map_or(Ok(d), Err)),
    );
    r.check(
        "exec_unbound_with_other_calls_grant_denied",
        expect(
            exec_in(Some(&cgroup), TARGET, |_| {}),
            ExecResult::Refused(libc::EPERM),
        ),
    );

    // An expired grant denies, with its own reason.
    grants
        .insert(key, GrantExpiry { expires_at_ns: 1 }, 0)
        .map_err(|e| e.to_string())?;
    drain(&mut events);
    let mut bound_pid = 0;
    let got = exec_in(Some(&cgroup), TARGET, |pid| {
        bound_pid = pid;
        let _ = bindings.insert(
            pid,
            Binding {
                call_id: call,
                agent_id: AGENT_ID,
                _pad: 0,
            },
            0,
        );
    });
    r.check(
        "exec_expired_grant_denied",
        expect(got, ExecResult::Refused(libc::EPERM)).and_then(|_| {
            let e = exec_event(&mut events, Some(bound_pid))?;
            if e.reason == KernelReason::GrantExpired as u8 {
                Ok(describe(&e))
            } else {
                Err(format!("wrong reason: {}", describe(&e)))
            }
        }),
    );
    grants.remove(&key).map_err(|e| e.to_string())?;

    // Audit-only: nothing blocked, the would-deny still reported.
    set_mode(&mut agents, Mode::AuditOnly)?;
    drain(&mut events);
    r.check(
        "audit_only_mode_runs_and_reports_would_deny",
        expect(exec_in(Some(&cgroup), TARGET, |_| {}), ExecResult::Ran(0)).and_then(|_| {
            let e = exec_event(&mut events, None)?;
            if e.allowed == 0 && e.mode == Mode::AuditOnly as u8 {
                Ok(describe(&e))
            } else {
                Err(describe(&e))
            }
        }),
    );

    // Unregistering the cgroup ends enforcement at once.
    agents.remove(&cgroup_id).map_err(|e| e.to_string())?;
    set_mode(&mut agents, Mode::Enforce)?;
    agents.remove(&cgroup_id).map_err(|e| e.to_string())?;
    r.check(
        "exec_after_unregister_runs",
        expect(exec_in(Some(&cgroup), TARGET, |_| {}), ExecResult::Ran(0)),
    );
    std::thread::sleep(Duration::from_millis(10));
    let _ = std::fs::remove_dir(&cgroup);
    Ok(())
}
