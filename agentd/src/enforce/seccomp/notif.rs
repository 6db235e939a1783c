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

/// Whether no task uses the listener's filter any more (it polls HUP).
pub fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own; no wait.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
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

/// Bytes asked for by the first read of a string: most paths fit, and the
/// kernel copies every byte asked for (twice, through `/proc/PID/mem`), so
/// reading to the end of the page would cost more than a second read does
/// for the few longer ones.
const FIRST_READ: usize = 256;

/// Reads a NUL-terminated string (at most `max` bytes) from another
/// process's memory, in reads that never cross a page (so a string that
/// ends just before an unmapped page still reads), the first a short one.
pub fn read_cstring(pid: u32, addr: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(FIRST_READ);
    let mut addr = addr;
    let mut chunk = FIRST_READ;
    while out.len() < max {
        let page_left = 4096 - (addr as usize & 4095);
        let want = page_left.min(max - out.len()).min(chunk);
        chunk = usize::MAX;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pages of our own memory, the second unmapped: `string` is
    /// written to end (with its NUL) at the first page's last byte.
    fn at_end_of_page(string: &[u8]) -> (u64, *mut libc::c_void) {
        // SAFETY: a fresh anonymous mapping of two pages, the second
        // unmapped again; every write stays inside the first.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            assert_eq!(libc::munmap(base.cast::<u8>().add(4096).cast(), 4096), 0);
            let start = base.cast::<u8>().add(4096 - string.len() - 1);
            std::ptr::copy_nonoverlapping(string.as_ptr(), start, string.len());
            *start.add(string.len()) = 0;
            (start as u64, base)
        }
    }

    #[test]
    fn strings_of_every_length_around_the_first_read_are_read_whole() {
        let pid = std::process::id();
        for len in [0, 1, FIRST_READ - 1, FIRST_READ, FIRST_READ + 1, 1000, 4000] {
            let s: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let (addr, base) = at_end_of_page(&s);
            let read = read_cstring(pid, addr, libc::PATH_MAX as usize);
            // SAFETY: the page mapped above.
            unsafe { libc::munmap(base, 4096) };
            assert_eq!(read.unwrap(), s, "a string of {len} bytes");
        }
    }

    #[test]
    fn a_string_that_runs_into_an_unmapped_page_is_a_bad_address() {
        let (addr, base) = at_end_of_page(&[b'x'; 500]);
        // Past the NUL: the string now runs to the unmapped page.
        // SAFETY: the last byte of the page mapped above.
        unsafe { *((addr + 500) as *mut u8) = b'x' };
        let read = read_cstring(std::process::id(), addr, libc::PATH_MAX as usize);
        // SAFETY: the page mapped above.
        unsafe { libc::munmap(base, 4096) };
        assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn a_string_longer_than_the_limit_is_refused() {
        let (addr, base) = at_end_of_page(&[b'y'; 3000]);
        let read = read_cstring(std::process::id(), addr, 1000);
        // SAFETY: the page mapped above.
        unsafe { libc::munmap(base, 4096) };
        assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::ENAMETOOLONG));
    }
}
