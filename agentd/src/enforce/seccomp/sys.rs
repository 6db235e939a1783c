//! The system calls and `/proc` reads the supervisor's modules share,
//! below both the per-task cache ([`super::tracee`]) and path resolution
//! ([`super::resolve`]).
use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

/// `bytes` as a C string (`EINVAL` if it holds a NUL).
pub(super) fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat2(dirfd, path, how)`; `dirfd` may be `AT_FDCWD`.
pub fn openat2(
    dirfd: RawFd,
    path: &[u8],
    flags: u64,
    mode: u64,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let path = cstr(path)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.mode = mode;
    how.resolve = resolve;
    // SAFETY: valid C string and open_how owned by us.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A value from `/proc/<tid>/status` (e.g. `Tgid`, `Umask`).
pub fn status_field(tid: u32, field: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// The thread group id of `tid`, from /proc.
pub fn tgid_from_status(tid: u32) -> io::Result<u32> {
    status_field(tid, "Tgid")?
        .parse()
        .map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))
}
