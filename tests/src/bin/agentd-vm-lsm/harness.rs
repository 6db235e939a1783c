//! Test plumbing: result lines, running an operation in a forked child
//! inside (or outside) the agent cgroup, and reading kernel events.
use std::{ffi::CString, path::Path};

use agentd_common::{Hook, KernelEvent, KernelReason};
use aya::maps::{MapData, RingBuf};

/// Prints `PASS|FAIL name: detail` lines and counts failures.
pub struct Report {
    pub failed: usize,
}

impl Report {
    pub fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("PASS {name}: {detail}"),
            Err(detail) => {
                self.failed += 1;
                println!("FAIL {name}: {detail}");
            }
        }
    }
}

/// Child exit code when it could not join the cgroup.
const JOIN_FAILED: i32 = 99;
/// Child exit code = EXEC_FAILED_BASE + errno when execv fails.
const EXEC_FAILED_BASE: i32 = 100;

/// How a test exec ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecResult {
    /// The program ran and exited with this status.
    Ran(i32),
    /// execv failed with this errno.
    Refused(i32),
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks; the child joins `cgroup` (if any), waits until `before` has run in
/// the parent with the child's pid, then runs `op` and exits with its code.
pub fn run_in(
    cgroup: Option<&Path>,
    before: impl FnOnce(u32),
    op: impl FnOnce() -> i32,
) -> Result<i32, String> {
    let procs =
        cgroup.map(|c| CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()).unwrap());
    let mut fds = [0i32; 2];
    // SAFETY: plain syscalls; the test binary is single-threaded, so the
    // child may run ordinary code until it exits.
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
                        libc::_exit(JOIN_FAILED);
                    }
                    libc::close(fd);
                }
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                libc::close(fds[0]);
                libc::_exit(op());
            }
            pid => {
                libc::close(fds[0]);
                before(pid as u32);
                libc::write(fds[1], b"x".as_ptr().cast(), 1);
                libc::close(fds[1]);
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                if !libc::WIFEXITED(status) {
                    return Err(format!("child did not exit normally (status {status:#x})"));
                }
                match libc::WEXITSTATUS(status) {
                    JOIN_FAILED => Err("child could not join the agent cgroup".into()),
                    c => Ok(c),
                }
            }
        }
    }
}

/// Execs `path` in a child (see [`run_in`]).
pub fn exec_in(
    cgroup: Option<&Path>,
    path: &str,
    before: impl FnOnce(u32),
) -> Result<ExecResult, String> {
    let prog = CString::new(path).unwrap();
    let code = run_in(cgroup, before, || {
        let argv = [prog.as_ptr(), std::ptr::null()];
        // SAFETY: NUL-terminated argv.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        EXEC_FAILED_BASE + errno()
    })?;
    Ok(if code >= EXEC_FAILED_BASE {
        ExecResult::Refused(code - EXEC_FAILED_BASE)
    } else {
        ExecResult::Ran(code)
    })
}

pub fn expect(got: Result<ExecResult, String>, want: ExecResult) -> Result<String, String> {
    match got? {
        g if g == want => Ok(format!("{want:?}")),
        g => Err(format!("expected {want:?}, got {g:?}")),
    }
}

/// Expects a child operation to end with `want` (0 = success, else errno).
pub fn expect_code(got: Result<i32, String>, want: i32) -> Result<String, String> {
    let name = |c: i32| {
        if c == 0 {
            "ok".to_string()
        } else {
            std::io::Error::from_raw_os_error(c).to_string()
        }
    };
    match got? {
        g if g == want => Ok(name(want)),
        g => Err(format!("expected {}, got {}", name(want), name(g))),
    }
}

/// Drains the ring buffer into owned events.
pub fn drain(events: &mut RingBuf<MapData>) -> Vec<KernelEvent> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        if item.len() >= std::mem::size_of::<KernelEvent>() {
            // SAFETY: KernelEvent is repr(C) plain data written by our program.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<KernelEvent>()) });
        }
    }
    out
}

pub fn describe(e: &KernelEvent) -> String {
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

/// The latest event of `hook` (from `tgid`, if given), or an error listing what arrived.
pub fn event(
    events: &mut RingBuf<MapData>,
    hook: Hook,
    tgid: Option<u32>,
) -> Result<KernelEvent, String> {
    // Ring buffer records are committed before the syscall returns.
    let all = drain(events);
    all.iter()
        .rev()
        .find(|e| e.hook == hook as u8 && tgid.is_none_or(|t| e.tgid == t))
        .copied()
        .ok_or_else(|| {
            format!(
                "no {} event; got [{}]",
                hook.name(),
                all.iter().map(describe).collect::<Vec<_>>().join("; ")
            )
        })
}

/// Checks a denial event's hook and reason.
pub fn expect_event(
    events: &mut RingBuf<MapData>,
    hook: Hook,
    reason: KernelReason,
    tgid: Option<u32>,
) -> Result<String, String> {
    let e = event(events, hook, tgid)?;
    if e.allowed == 0 && e.reason == reason as u8 {
        Ok(describe(&e))
    } else {
        Err(format!(
            "expected a {} denial, got {}",
            reason.code(),
            describe(&e)
        ))
    }
}
