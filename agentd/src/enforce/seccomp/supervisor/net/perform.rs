//! The socket operations the supervisor performs itself, on a duplicate of
//! the tracee's socket (`pidfd_getfd`: the same open file description, so
//! the tracee's socket is what gets bound, connected or put to listen) and
//! with addresses copied once out of the tracee's memory.
use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::enforce::seccomp::caps;

/// `PIDFD_THREAD` (= `O_EXCL`, kernel ≥ 6.9): a pidfd on one thread, whose
/// own fd table `pidfd_getfd` then reads.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

fn check(r: libc::c_long) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A duplicate of tracee thread `tid`'s fd `fd` (process `tgid`).
pub(super) fn tracee_socket(tid: u32, tgid: u32, fd: i32) -> io::Result<OwnedFd> {
    caps::with_ptrace(|| {
        // SAFETY: pidfd syscalls with integer arguments; fds we then own.
        unsafe {
            let mut pidfd = libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, PIDFD_THREAD);
            if pidfd < 0 {
                pidfd = libc::syscall(libc::SYS_pidfd_open, tgid as libc::pid_t, 0);
            }
            let pidfd = OwnedFd::from_raw_fd(check(pidfd)? as i32);
            let s = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
            Ok(OwnedFd::from_raw_fd(check(s)? as i32))
        }
    })
}

fn sockopt_int(s: &OwnedFd, opt: libc::c_int) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int we own.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    check(r as libc::c_long).map(|_| v)
}

/// The socket's family (`ENOTSOCK` for anything but a socket).
pub(super) fn domain(s: &OwnedFd) -> io::Result<i32> {
    sockopt_int(s, libc::SO_DOMAIN)
}

/// The local port an IP socket is bound to (0 = not bound).
pub(super) fn local_port(s: &OwnedFd) -> io::Result<u16> {
    // SAFETY: a zeroed sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname into our buffer.
    let r = unsafe {
        libc::getsockname(
            s.as_raw_fd(),
            &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    // sin_port and sin6_port sit at the same offset.
    // SAFETY: reading the port field of the family the kernel wrote.
    let port =
        unsafe { (*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in)).sin_port };
    Ok(u16::from_be(port))
}

/// Runs `f` with the socket non-blocking (restoring its flags after): a
/// full backlog or queue answers EAGAIN instead of stalling the supervisor,
/// which serves every thread of the agent.
fn nonblocking<T>(s: &OwnedFd, f: impl FnOnce() -> T) -> T {
    // SAFETY: fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFL) };
    let set = flags >= 0 && flags & libc::O_NONBLOCK == 0;
    if set {
        // SAFETY: as above.
        unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }
    let out = f();
    if set {
        // SAFETY: as above.
        unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFL, flags) };
    }
    out
}

fn sa(addr: &[u8]) -> (*const libc::sockaddr, libc::socklen_t) {
    (addr.as_ptr().cast(), addr.len() as libc::socklen_t)
}

/// `bind(s, addr)`.
pub(super) fn bind(s: &OwnedFd, addr: &[u8]) -> io::Result<i64> {
    let (p, l) = sa(addr);
    // SAFETY: bind with a buffer we own.
    check(unsafe { libc::bind(s.as_raw_fd(), p, l) } as libc::c_long)
}

/// `connect(s, addr)`.
pub(super) fn connect(s: &OwnedFd, addr: &[u8]) -> io::Result<i64> {
    let (p, l) = sa(addr);
    nonblocking(s, || {
        // SAFETY: connect with a buffer we own.
        check(unsafe { libc::connect(s.as_raw_fd(), p, l) } as libc::c_long)
    })
}

/// `sendto(s, data, flags, addr)`.
pub(super) fn sendto(s: &OwnedFd, data: &[u8], flags: i32, addr: &[u8]) -> io::Result<i64> {
    let (p, l) = sa(addr);
    nonblocking(s, || {
        // SAFETY: sendto with buffers we own.
        check(
            unsafe { libc::sendto(s.as_raw_fd(), data.as_ptr().cast(), data.len(), flags, p, l) }
                as libc::c_long,
        )
    })
}

/// `listen(s, backlog)`.
pub(super) fn listen(s: &OwnedFd, backlog: i32) -> io::Result<i64> {
    // SAFETY: listen with integer arguments.
    check(unsafe { libc::listen(s.as_raw_fd(), backlog) } as libc::c_long)
}

/// A `sockaddr_un` naming `path`, as bytes (`ENAMETOOLONG` past 107 bytes).
pub(super) fn unix_path(path: &[u8]) -> io::Result<Vec<u8>> {
    if path.len() >= 108 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(path);
    v.push(0);
    Ok(v)
}

/// `bind(s, name)` relative to directory `parent` (an O_PATH handle the
/// decision was made on): one component, looked up from this thread's own
/// cwd, which is moved there and back to `/`.
pub(super) fn bind_in(parent: &OwnedFd, s: &OwnedFd, name: &CStr) -> io::Result<i64> {
    let addr = unix_path(name.to_bytes())?;
    // SAFETY: fchdir on a directory handle we own; this thread has its own
    // fs_struct (CLONE_FS unshared), so agentd's other threads keep theirs.
    if unsafe { libc::fchdir(parent.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let r = bind(s, &addr);
    // SAFETY: static path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    r
}
