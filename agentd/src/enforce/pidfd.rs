//! Process file descriptors: a handle on a task that a reused pid can
//! never take over, and whether that task still lives. The caller-identity
//! cache and the seccomp supervisor's per-task cache both validate their
//! entries with them.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `pidfd_open(pid, flags)` (`flags` 0, or `PIDFD_THREAD` for a thread).
pub fn open(pid: u32, flags: libc::c_long) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes integers and returns a new fd we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned to us by the kernel and is owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the task behind `pidfd` has not exited (a pidfd polls readable
/// once it has; a thread-group leader's, once its whole group has).
pub fn alive(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0
}
