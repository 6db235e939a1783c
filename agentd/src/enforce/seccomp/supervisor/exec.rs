//! execve/execveat: the target is resolved to device+inode and decided; an
//! allowed exec is written to EXEC_EXPECT and CONTINUEd (the kernel verifies
//! the file it really executes at `sched_process_exec`).
use std::os::fd::AsRawFd as _;

use agentd_common::{baseline_call_id, ExecExpectation, FileId};

use super::{magic_link_denial, now_boot_ns, verdicts, Answer, Decided, Supervisor, Verdicts};
use crate::{
    enforce::{bpf_state::ExecExpectMap, claim, grant, seccomp::resolve},
    protocol::reason,
};

/// Where an allowed exec's expectation goes: the pinned EXEC_EXPECT map
/// (which `sched_process_exec` verifies), or a recorder in unit tests.
pub(super) trait ExpectExec {
    /// Records that `tgid` is about to execute what `exp` names.
    fn expect(&mut self, tgid: u32, exp: ExecExpectation) -> Result<(), String>;
}

impl ExpectExec for ExecExpectMap {
    fn expect(&mut self, tgid: u32, exp: ExecExpectation) -> Result<(), String> {
        self.insert(tgid, exp, 0).map_err(|e| e.to_string())
    }
}

/// One notified execve/execveat, as decoded.
pub(super) struct ExecRequest<'a> {
    /// The thread that asked.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// execveat's dirfd (AT_FDCWD for execve).
    pub dirfd: i32,
    /// The path, as the tracee gave it.
    pub path: &'a [u8],
    /// execveat's flags.
    pub flags: u64,
    /// The call the process is bound to, if any.
    pub bound: Option<u64>,
}

/// Decides an exec: resolves the target, decides on its device+inode,
/// and on allow records the expectation the kernel verifies at exec.
pub(super) fn decide_exec(
    sup: &Supervisor,
    req: &ExecRequest<'_>,
    expect: &mut dyn ExpectExec,
    argv: &dyn Fn() -> Option<Vec<Vec<u8>>>,
) -> (Answer, Option<Decided>) {
    let errno = |e: std::io::Error| (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None);
    let file = match open_target(req) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && req.path.starts_with(b"/proc/") => {
            return magic_link_denial("exec", req.path)
        }
        Err(e) => return errno(e),
    };
    let st = match resolve::fstat(&file) {
        Ok(st) => st,
        Err(e) => return errno(e),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return (Answer::Errno(libc::EACCES), None);
    }
    let id = FileId {
        dev: grant::kernel_dev(st.st_dev),
        ino: st.st_ino,
    };
    let now = now_boot_ns();
    let Verdicts {
        allowed,
        reason,
        call,
        audit_only,
    } = verdicts(sup, req.tgid, req.bound, claim::Kind::Exec { argv }, |g| {
        g.check_exec(id, now)
    });
    // Exec targets are not path scopes: an exec no grant names is `no_grant`
    // whether or not the process is bound (as in the lsm backend).
    let reason = if reason == reason::PATH_OUTSIDE_SCOPE {
        reason::NO_GRANT
    } else {
        reason
    };
    // The real path names the target in a row; an exec the baseline
    // allows has none (counted only), so its link is not read. (Should
    // its CONTINUE then fail, the refusal row names the path as asked.)
    let target = if allowed && call.is_none() {
        resolve::display(req.path)
    } else {
        resolve::real_path(&file)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| resolve::display(req.path))
    };
    let decided = Decided {
        action: "exec",
        target,
        allowed,
        reason,
        call,
        access: None,
    };
    if !allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    expect_exec(sup, expect, req.tgid, id, call, decided)
}

/// The file an exec names, opened O_PATH as the tracee would find it.
fn open_target(req: &ExecRequest<'_>) -> std::io::Result<std::os::fd::OwnedFd> {
    if req.path.is_empty() && req.flags & libc::AT_EMPTY_PATH as u64 != 0 {
        return resolve::tracee_dir(req.tid, req.dirfd);
    }
    let base = resolve::base(req.tid, req.dirfd, req.path, 0)?;
    let mut oflags = libc::O_PATH | libc::O_CLOEXEC;
    if req.flags & libc::AT_SYMLINK_NOFOLLOW as u64 != 0 {
        oflags |= libc::O_NOFOLLOW;
    }
    resolve::openat2(
        base.fd.as_raw_fd(),
        req.path,
        oflags as u64,
        0,
        base.resolve,
    )
}

/// Records the allowed exec in EXEC_EXPECT (what `sched_process_exec`
/// verifies) and lets it go on; refuses it when that write fails.
fn expect_exec(
    sup: &Supervisor,
    expect: &mut dyn ExpectExec,
    tgid: u32,
    id: FileId,
    call: Option<u64>,
    decided: Decided,
) -> (Answer, Option<Decided>) {
    let agent_id = sup
        .registry
        .read()
        .ok()
        .and_then(|r| r.agents.get(&sup.agent).map(|a| a.id))
        .unwrap_or(0);
    let exp = ExecExpectation {
        file: id,
        call_id: call.unwrap_or_else(|| baseline_call_id(agent_id)),
    };
    if let Err(e) = expect.expect(tgid, exp) {
        // Fail closed: without the expectation the kernel check would kill
        // the exec anyway; refuse it cleanly instead.
        tracing::error!(error = %e, "EXEC_EXPECT update failed");
        return (
            Answer::Errno(libc::EPERM),
            Some(Decided {
                allowed: false,
                reason: reason::ENFORCER_ERROR,
                ..decided
            }),
        );
    }
    // The address space read so far is about to be replaced.
    crate::enforce::seccomp::tracee::exec_continued(tgid);
    (Answer::Continue, Some(decided))
}
