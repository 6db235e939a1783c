//! Thin wrappers over the seccomp user-notification ioctls.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, RawFd},
};

/// Result of a syscall that may fail with errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Receives the next notification (blocks until one arrives).
pub fn recv(fd: BorrowedFd<'_>) -> io::Result<libc::seccomp_notif> {
    // SAFETY: the kernel requires a zeroed struct; it fills it in.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) })?;
    Ok(n)
}

/// Whether notification `id` is still pending (its task has not died or
/// been interrupted): checked after reading the tracee's memory and before
/// acting on it, so a reused pid is never mistaken for the tracee.
pub fn id_valid(fd: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ioctl reads a u64 we own.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

fn send(fd: BorrowedFd<'_>, resp: &mut libc::seccomp_notif_resp) -> io::Result<()> {
    // SAFETY: ioctl reads a struct we own.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            resp as *mut _,
        )
    })
    .map(|_| ())
}

/// Lets the syscall proceed in the kernel.
pub fn respond_continue(fd: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    send(
        fd,
        &mut libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        },
    )
}

/// Fails the syscall with `errno`.
pub fn respond_errno(fd: BorrowedFd<'_>, id: u64, errno: i32) -> io::Result<()> {
    send(
        fd,
        &mut libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    )
}

/// Completes the syscall with return value `val` (the supervisor performed it).
pub fn respond_value(fd: BorrowedFd<'_>, id: u64, val: i64) -> io::Result<()> {
    send(
        fd,
        &mut libc::seccomp_notif_resp {
            id,
            val,
            error: 0,
            flags: 0,
        },
    )
}

/// Installs `src` in the tracee and completes the syscall with the new fd
/// number as its return value (SECCOMP_ADDFD_FLAG_SEND), atomically.
pub fn addfd_send(fd: BorrowedFd<'_>, id: u64, src: RawFd, cloexec: bool) -> io::Result<i32> {
    let mut add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: src as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: ioctl reads a struct we own.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut add) })
}

/// Asks the kernel to wake the notifying task on the supervisor's CPU
/// (kernel ≥ 6.6); returns whether it was accepted.
pub fn set_sync_wakeup(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: ioctl with an integer argument.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// Reads a NUL-terminated string (at most `max` bytes) from another
/// process's memory, page by page so a string near an unmapped page still reads.
pub fn read_cstring(pid: u32, addr: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    let mut addr = addr;
    while out.len() < max {
        let page_left = 4096 - (addr as usize & 4095);
        let want = page_left.min(max - out.len());
        let start = out.len();
        out.resize(start + want, 0);
        let n = read_mem(pid, addr, &mut out[start..])?;
        out.truncate(start + n);
        if let Some(nul) = out[start..].iter().position(|&b| b == 0) {
            out.truncate(start + nul);
            return Ok(out);
        }
        if n < want {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        addr += n as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// Reads `buf.len()` bytes at `addr` of `pid`: through the process's
/// `/proc/PID/mem` handle the supervisor keeps ([`super::tracee`]), or
/// with `process_vm_readv` (CAP_SYS_PTRACE raised around it) without one.
pub fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let kept = super::tracee::read_mem(pid, addr, buf, |p| {
        super::resolve::proc_handle(p, libc::O_RDONLY | libc::O_CLOEXEC)
    });
    if let Some(read) = kept {
        return read;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: buf.len(),
    };
    // SAFETY: local iovec points at our buffer; the remote one is only read by the kernel.
    let n = super::caps::with_ptrace(|| unsafe {
        libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0)
    });
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` flag: wake the supervisor on the same CPU.
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
