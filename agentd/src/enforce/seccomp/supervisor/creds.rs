//! The supervisor thread's own credentials: it acts as the agent's deputy.
use std::io;

use crate::enforce::registry::Creds;

/// Sets this thread's file-system credentials (raw syscalls: per thread,
/// unlike glibc's set*id wrappers that change every thread of agentd).
pub(super) fn set_fs_creds(c: &Creds) -> io::Result<()> {
    // SAFETY: raw credential syscalls on the calling thread only.
    unsafe {
        if libc::syscall(libc::SYS_unshare, libc::CLONE_FS) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        // setfs*id return the previous value; read back to confirm.
        let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        if uid != c.uid || gid != c.gid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}
