//! Which syscalls are path-mutating, and their arguments as the tracee
//! passed them.
use super::super::super::resolve;

/// Syscalls this module decides, by number.
pub const SYSCALLS: &[(i64, &str)] = &[
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_truncate, "truncate"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_unlink, "unlink"),
    (libc::SYS_unlinkat, "unlinkat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_rmdir, "rmdir"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mkdir, "mkdir"),
    (libc::SYS_mkdirat, "mkdirat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mknod, "mknod"),
    (libc::SYS_mknodat, "mknodat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_symlink, "symlink"),
    (libc::SYS_symlinkat, "symlinkat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_link, "link"),
    (libc::SYS_linkat, "linkat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_rename, "rename"),
    (libc::SYS_renameat, "renameat"),
    (libc::SYS_renameat2, "renameat2"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_chmod, "chmod"),
    (libc::SYS_fchmod, "fchmod"),
    (libc::SYS_fchmodat, "fchmodat"),
    (SYS_FCHMODAT2, "fchmodat2"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_chown, "chown"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_lchown, "lchown"),
    (libc::SYS_fchown, "fchown"),
    (libc::SYS_fchownat, "fchownat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_utime, "utime"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_utimes, "utimes"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_futimesat, "futimesat"),
    (libc::SYS_utimensat, "utimensat"),
    (libc::SYS_setxattr, "setxattr"),
    (libc::SYS_lsetxattr, "lsetxattr"),
    (libc::SYS_fsetxattr, "fsetxattr"),
    (libc::SYS_removexattr, "removexattr"),
    (libc::SYS_lremovexattr, "lremovexattr"),
    (libc::SYS_fremovexattr, "fremovexattr"),
];

/// Newer path-mutating syscalls the supervisor does not perform: ENOSYS in
/// the filter, so callers fall back to the ones above.
pub const UNSUPPORTED: &[(i64, &str)] = &[
    (SYS_SETXATTRAT, "setxattrat"),
    (SYS_REMOVEXATTRAT, "removexattrat"),
    (SYS_FILE_SETATTR, "file_setattr"),
];

/// fchmodat2 (6.6), the same number on every architecture.
pub(super) const SYS_FCHMODAT2: i64 = 452;
/// setxattrat (6.13).
pub(super) const SYS_SETXATTRAT: i64 = 463;
/// removexattrat (6.13).
pub(super) const SYS_REMOVEXATTRAT: i64 = 466;
/// file_setattr (6.17): sets fsxattr flags and project ids by path.
pub(super) const SYS_FILE_SETATTR: i64 = 469;

/// Whether `nr` is decided here.
pub fn handles(nr: i64) -> bool {
    SYSCALLS.iter().any(|(n, _)| *n == nr)
}

/// A name in a directory, as the tracee passed it.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryArg {
    pub(super) dirfd: i32,
    pub(super) path: u64,
}

/// A file the operation changes, as the tracee passed it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ObjectArg {
    pub(super) dirfd: i32,
    /// `None`: the fd `dirfd` itself (fchmod, fsetxattr, utimensat(fd, NULL)).
    pub(super) path: Option<u64>,
    /// Follow a final symlink.
    pub(super) follow: bool,
    /// An empty path means `dirfd` itself (AT_EMPTY_PATH).
    pub(super) empty: bool,
}

/// How utimes-family times are laid out in the tracee's memory.
#[derive(Debug, Clone, Copy)]
pub(super) enum Times {
    /// `struct utimbuf` (seconds).
    Utimbuf(u64),
    /// `struct timeval[2]`.
    Timeval(u64),
    /// `struct timespec[2]`.
    Timespec(u64),
}

/// One decoded operation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Truncate(ObjectArg, i64),
    Unlink(EntryArg, i32),
    Mkdir(EntryArg, u32),
    Mknod(EntryArg, u32, u64),
    Symlink(u64, EntryArg),
    Link(ObjectArg, EntryArg),
    Rename(EntryArg, EntryArg, u32),
    Chmod(ObjectArg, u32),
    Chown(ObjectArg, u32, u32),
    Utimes(ObjectArg, Times),
    SetXattr(ObjectArg, u64, u64, usize, i32),
    RemoveXattr(ObjectArg, u64),
}

impl Op {
    /// The audit row's action.
    pub(super) fn action(&self) -> &'static str {
        match self {
            Op::Truncate(..) => "truncate",
            Op::Unlink(_, f) if f & libc::AT_REMOVEDIR != 0 => "rmdir",
            Op::Unlink(..) => "unlink",
            Op::Mkdir(..) => "mkdir",
            Op::Mknod(..) => "mknod",
            Op::Symlink(..) => "symlink",
            Op::Link(..) => "link",
            Op::Rename(..) => "rename",
            Op::Chmod(..) => "chmod",
            Op::Chown(..) => "chown",
            Op::Utimes(..) => "utimes",
            Op::SetXattr(..) => "setxattr",
            Op::RemoveXattr(..) => "removexattr",
        }
    }
}

pub(super) const CWD: i32 = resolve::AT_FDCWD;

pub(super) fn entry(dirfd: u64, path: u64) -> EntryArg {
    EntryArg {
        dirfd: dirfd as i32,
        path,
    }
}

pub(super) fn object(dirfd: i32, path: u64, flags: i32) -> ObjectArg {
    ObjectArg {
        dirfd,
        path: Some(path),
        follow: flags & libc::AT_SYMLINK_NOFOLLOW == 0,
        empty: flags & libc::AT_EMPTY_PATH != 0,
    }
}

pub(super) fn fd_object(fd: u64) -> ObjectArg {
    ObjectArg {
        dirfd: fd as i32,
        path: None,
        follow: true,
        empty: true,
    }
}

pub(super) fn decode(data: &libc::seccomp_data) -> Option<Op> {
    #[cfg(target_arch = "x86_64")]
    if let Some(op) = decode_legacy(data) {
        return Some(op);
    }
    decode_at(data)
}

/// The x86_64 path syscalls that predate the `*at` family: relative to the
/// working directory.
#[cfg(target_arch = "x86_64")]
fn decode_legacy(data: &libc::seccomp_data) -> Option<Op> {
    let a = data.args;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    let cwd = CWD as u64;
    match data.nr as i64 {
        libc::SYS_truncate => Some(Op::Truncate(object(CWD, a[0], 0), a[1] as i64)),
        libc::SYS_unlink => Some(Op::Unlink(entry(cwd, a[0]), 0)),
        libc::SYS_rmdir => Some(Op::Unlink(entry(cwd, a[0]), libc::AT_REMOVEDIR)),
        libc::SYS_mkdir => Some(Op::Mkdir(entry(cwd, a[0]), a[1] as u32)),
        libc::SYS_mknod => Some(Op::Mknod(entry(cwd, a[0]), a[1] as u32, a[2])),
        libc::SYS_symlink => Some(Op::Symlink(a[0], entry(cwd, a[1]))),
        libc::SYS_link => Some(Op::Link(object(CWD, a[0], nofollow), entry(cwd, a[1]))),
        libc::SYS_rename => Some(Op::Rename(entry(cwd, a[0]), entry(cwd, a[1]), 0)),
        libc::SYS_chmod => Some(Op::Chmod(object(CWD, a[0], 0), a[1] as u32)),
        libc::SYS_chown => Some(Op::Chown(object(CWD, a[0], 0), a[1] as u32, a[2] as u32)),
        libc::SYS_lchown => Some(Op::Chown(
            object(CWD, a[0], nofollow),
            a[1] as u32,
            a[2] as u32,
        )),
        libc::SYS_utime => Some(Op::Utimes(object(CWD, a[0], 0), Times::Utimbuf(a[1]))),
        libc::SYS_utimes => Some(Op::Utimes(object(CWD, a[0], 0), Times::Timeval(a[1]))),
        libc::SYS_futimesat => Some(Op::Utimes(
            object(a[0] as i32, a[1], 0),
            Times::Timeval(a[2]),
        )),
        _ => None,
    }
}

/// The `*at` and fd-based syscalls, on every architecture.
fn decode_at(data: &libc::seccomp_data) -> Option<Op> {
    let a = data.args;
    let nr = data.nr as i64;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    Some(match nr {
        libc::SYS_unlinkat => Op::Unlink(entry(a[0], a[1]), a[2] as i32),
        libc::SYS_mkdirat => Op::Mkdir(entry(a[0], a[1]), a[2] as u32),
        libc::SYS_mknodat => Op::Mknod(entry(a[0], a[1]), a[2] as u32, a[3]),
        libc::SYS_symlinkat => Op::Symlink(a[0], entry(a[1], a[2])),
        libc::SYS_linkat => {
            let flags = a[4] as i32;
            // linkat follows the source only with AT_SYMLINK_FOLLOW.
            let mut src = object(a[0] as i32, a[1], nofollow);
            src.follow = flags & libc::AT_SYMLINK_FOLLOW != 0;
            src.empty = flags & libc::AT_EMPTY_PATH != 0;
            Op::Link(src, entry(a[2], a[3]))
        }
        libc::SYS_renameat => Op::Rename(entry(a[0], a[1]), entry(a[2], a[3]), 0),
        libc::SYS_renameat2 => Op::Rename(entry(a[0], a[1]), entry(a[2], a[3]), a[4] as u32),
        libc::SYS_fchmod => Op::Chmod(fd_object(a[0]), a[1] as u32),
        libc::SYS_fchmodat => Op::Chmod(object(a[0] as i32, a[1], 0), a[2] as u32),
        SYS_FCHMODAT2 => Op::Chmod(object(a[0] as i32, a[1], a[3] as i32), a[2] as u32),
        libc::SYS_fchown => Op::Chown(fd_object(a[0]), a[1] as u32, a[2] as u32),
        libc::SYS_fchownat => Op::Chown(
            object(a[0] as i32, a[1], a[4] as i32),
            a[2] as u32,
            a[3] as u32,
        ),
        libc::SYS_utimensat => {
            let o = if a[1] == 0 {
                fd_object(a[0])
            } else {
                object(a[0] as i32, a[1], a[3] as i32)
            };
            Op::Utimes(o, Times::Timespec(a[2]))
        }
        libc::SYS_setxattr => {
            Op::SetXattr(object(CWD, a[0], 0), a[1], a[2], a[3] as usize, a[4] as i32)
        }
        libc::SYS_lsetxattr => Op::SetXattr(
            object(CWD, a[0], nofollow),
            a[1],
            a[2],
            a[3] as usize,
            a[4] as i32,
        ),
        libc::SYS_fsetxattr => {
            Op::SetXattr(fd_object(a[0]), a[1], a[2], a[3] as usize, a[4] as i32)
        }
        libc::SYS_removexattr => Op::RemoveXattr(object(CWD, a[0], 0), a[1]),
        libc::SYS_lremovexattr => Op::RemoveXattr(object(CWD, a[0], nofollow), a[1]),
        libc::SYS_fremovexattr => Op::RemoveXattr(fd_object(a[0]), a[1]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_syscall_decodes() {
        for (nr, name) in SYSCALLS {
            let data = libc::seccomp_data {
                nr: *nr as i32,
                arch: 0,
                instruction_pointer: 0,
                args: [resolve::AT_FDCWD as u64, 1, 1, 1, 0, 0],
            };
            assert!(decode(&data).is_some(), "{name}");
        }
        let linkat = libc::seccomp_data {
            nr: libc::SYS_linkat as i32,
            arch: 0,
            instruction_pointer: 0,
            args: [0, 1, 0, 2, libc::AT_SYMLINK_FOLLOW as u64, 0],
        };
        assert!(matches!(decode(&linkat), Some(Op::Link(o, _)) if o.follow));
        let utimens_fd = libc::seccomp_data {
            nr: libc::SYS_utimensat as i32,
            arch: 0,
            instruction_pointer: 0,
            args: [5, 0, 0, 0, 0, 0],
        };
        assert!(matches!(decode(&utimens_fd), Some(Op::Utimes(o, _)) if o.path.is_none()));
    }
}
