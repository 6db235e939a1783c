//! execve/execveat: the target is resolved to device+inode and decided; an
//! allowed exec is written to EXEC_EXPECT and CONTINUEd (the kernel verifies
//! the file it really executes at `sched_process_exec`).
use std::os::fd::AsRawFd as _;

use agentd_common::{baseline_call_id, ExecExpectation, FileId};

use super::{magic_link_denial, now_boot_ns, verdicts, Answer, Decided, Supervisor, Verdicts};
use crate::enforce::{bpf_state::ExecExpectMap, claim, grant, seccomp::resolve};

#[allow(clippy::too_many_arguments)]
pub(super) fn decide_exec(
    sup: &Supervisor,
    tid: u32,
    tgid: u32,
    dirfd: i32,
    path: &[u8],
    flags: u64,
    bound: Option<u64>,
    expect: &mut ExecExpectMap,
    argv: &dyn Fn() -> Option<Vec<Vec<u8>>>,
) -> (Answer, Option<Decided>) {
    let target_fd = if path.is_empty() && flags & libc::AT_EMPTY_PATH as u64 != 0 {
        resolve::tracee_dir(tid, dirfd)
    } else {
        let base = match resolve::base(tid, dirfd, path, 0) {
            Ok(b) => b,
            Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
        };
        let mut oflags = libc::O_PATH | libc::O_CLOEXEC;
        if flags & libc::AT_SYMLINK_NOFOLLOW as u64 != 0 {
            oflags |= libc::O_NOFOLLOW;
        }
        resolve::openat2(base.fd.as_raw_fd(), path, oflags as u64, 0, base.resolve)
    };
    let file = match target_fd {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && path.starts_with(b"/proc/") => {
            return magic_link_denial("exec", path)
        }
        Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
    };
    let st = match resolve::fstat(&file) {
        Ok(st) => st,
        Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
    };
    let target = resolve::real_path(&file)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| resolve::display(path));
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
    } = verdicts(sup, tgid, bound, claim::Kind::Exec { argv }, |g| {
        g.check_exec(id, now)
    });
    // Exec targets are not path scopes: an exec no grant names is `no_grant`
    // whether or not the process is bound (as in the lsm backend).
    let reason = if reason == "path_outside_scope" {
        "no_grant"
    } else {
        reason
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
    if let Err(e) = expect.insert(tgid, exp, 0) {
        // Fail closed: without the expectation the kernel check would kill
        // the exec anyway; refuse it cleanly instead.
        tracing::error!(error = %e, "EXEC_EXPECT update failed");
        return (
            Answer::Errno(libc::EPERM),
            Some(Decided {
                allowed: false,
                reason: crate::protocol::reason::ENFORCER_ERROR,
                ..decided
            }),
        );
    }
    (Answer::Continue, Some(decided))
}
