//! Performing an allowed operation on the resolved handles, under the
//! agent's credentials, with the tracee's copied arguments.
use std::{ffi::CString, io, os::fd::AsRawFd as _};

use super::{
    args::Copied,
    decode::Op,
    operand::{via, Entry, Object},
};
use crate::enforce::seccomp::resolve;

pub(super) struct Operands<'a> {
    pub(super) entry: Option<&'a Entry>,
    pub(super) object: Option<&'a Object>,
    pub(super) second: Option<&'a Entry>,
}

/// The tracee's umask for what the supervisor creates (this thread has its
/// own fs_struct, so the umask is its alone).
pub(in crate::enforce::seccomp::supervisor) fn adopt_umask(tid: u32) {
    let umask = resolve::status_field(tid, "Umask")
        .ok()
        .and_then(|u| u32::from_str_radix(&u, 8).ok())
        .unwrap_or(0o022);
    // SAFETY: umask of this thread's own fs_struct (CLONE_FS unshared).
    unsafe { libc::umask(umask as libc::mode_t) };
}

pub(super) fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Performs `op` on its resolved operands with the tracee's copied arguments.
pub(super) fn perform(op: &Op, o: &Operands<'_>, c: &Copied) -> io::Result<()> {
    match op {
        Op::Unlink(..)
        | Op::Mkdir(..)
        | Op::Mknod(..)
        | Op::Symlink(..)
        | Op::Link(..)
        | Op::Rename(..) => perform_naming(op, o, c),
        Op::Truncate(..)
        | Op::Chmod(..)
        | Op::Chown(..)
        | Op::Utimes(..)
        | Op::SetXattr(..)
        | Op::RemoveXattr(..) => perform_on_object(op, o, c),
    }
}

/// The operations that add, remove or change names in a directory.
fn perform_naming(op: &Op, o: &Operands<'_>, c: &Copied) -> io::Result<()> {
    let missing = || io::Error::from_raw_os_error(libc::EINVAL);
    let ent = || o.entry.ok_or_else(missing);
    let obj = || o.object.ok_or_else(missing);
    // SAFETY (all blocks below): syscalls on handles and C strings we own.
    match *op {
        Op::Unlink(_, flags) => {
            let e = ent()?;
            check(unsafe {
                libc::unlinkat(
                    e.parent.as_raw_fd(),
                    e.name.as_ptr(),
                    flags & libc::AT_REMOVEDIR,
                )
            })
        }
        Op::Mkdir(_, mode) => {
            let e = ent()?;
            check(unsafe {
                libc::mkdirat(e.parent.as_raw_fd(), e.name.as_ptr(), mode as libc::mode_t)
            })
        }
        Op::Mknod(_, mode, dev) => {
            let e = ent()?;
            check(unsafe {
                libc::mknodat(
                    e.parent.as_raw_fd(),
                    e.name.as_ptr(),
                    mode as libc::mode_t,
                    dev as libc::dev_t,
                )
            })
        }
        Op::Symlink(..) => {
            let e = ent()?;
            let target = CString::new(c.symlink_target.clone().unwrap_or_default())
                .map_err(|_| missing())?;
            check(unsafe {
                libc::symlinkat(target.as_ptr(), e.parent.as_raw_fd(), e.name.as_ptr())
            })
        }
        Op::Link(..) => {
            let (src, dst) = (obj()?, ent()?);
            let from = via(&src.handle);
            check(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    dst.parent.as_raw_fd(),
                    dst.name.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })
        }
        Op::Rename(_, _, flags) => {
            let (a, b) = (ent()?, o.second.ok_or_else(missing)?);
            check(unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    a.parent.as_raw_fd(),
                    a.name.as_ptr(),
                    b.parent.as_raw_fd(),
                    b.name.as_ptr(),
                    flags,
                ) as libc::c_int
            })
        }
        _ => Err(missing()),
    }
}

/// The operations that change an object's contents or attributes.
fn perform_on_object(op: &Op, o: &Operands<'_>, c: &Copied) -> io::Result<()> {
    let missing = || io::Error::from_raw_os_error(libc::EINVAL);
    let obj = || o.object.ok_or_else(missing);
    // SAFETY (all blocks below): syscalls on handles and C strings we own.
    match *op {
        Op::Truncate(_, len) => {
            let h = obj()?;
            let st = resolve::fstat(&h.handle)?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
            let f = resolve::reopen(&h.handle, libc::O_WRONLY | libc::O_NONBLOCK)?;
            check(unsafe { libc::ftruncate(f.as_raw_fd(), len) })
        }
        Op::Chmod(_, mode) => {
            let h = obj()?;
            let p = via(&h.handle);
            check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
        }
        Op::Chown(_, uid, gid) => {
            let h = obj()?;
            check(unsafe {
                libc::fchownat(
                    h.handle.as_raw_fd(),
                    c"".as_ptr(),
                    uid,
                    gid,
                    libc::AT_EMPTY_PATH,
                )
            })
        }
        Op::Utimes(..) => {
            let h = obj()?;
            let times = c.times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
            check(unsafe {
                libc::utimensat(
                    h.handle.as_raw_fd(),
                    c"".as_ptr(),
                    times,
                    libc::AT_EMPTY_PATH,
                )
            })
        }
        Op::SetXattr(_, _, _, _, flags) => {
            let h = obj()?;
            let p = via(&h.handle);
            let name = c.xattr_name.as_ref().ok_or_else(missing)?;
            check(unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    c.xattr_value.as_ptr().cast(),
                    c.xattr_value.len(),
                    flags,
                )
            })
        }
        Op::RemoveXattr(..) => {
            let h = obj()?;
            let p = via(&h.handle);
            let name = c.xattr_name.as_ref().ok_or_else(missing)?;
            check(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) })
        }
        _ => Err(missing()),
    }
}
