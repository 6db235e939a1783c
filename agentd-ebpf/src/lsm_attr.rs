//! BPF LSM hooks for attribute changes: `chmod`, `chown`, timestamps
//! (`utimes`, `touch`) and extended attributes need a write scope on the
//! file, like any other change to it — owning the file is not enough.
//!
//! `path_chmod`/`path_chown` see the path (mount crossings included); the
//! inode hooks see only the dentry, so their scope walk stops at the root of
//! the file's filesystem.
use agentd_common::{lsm::ACCESS_WRITE, Hook};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::{
    lsm_file::{check, check_path},
    lsm_scope::creds_overridden,
};

/// `iattr.ia_valid` bits (include/linux/fs.h).
const ATTR_MODE: u32 = 1 << 0;
const ATTR_UID: u32 = 1 << 1;
const ATTR_GID: u32 = 1 << 2;
const ATTR_SIZE: u32 = 1 << 3;
const ATTR_ATIME: u32 = 1 << 4;
const ATTR_MTIME: u32 = 1 << 5;

/// `path_chmod(path, mode)`: chmod, fchmod, fchmodat.
#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    check_path(Hook::PathChmod, ctx.arg(0), ACCESS_WRITE)
}

/// `path_chown(path, uid, gid)`: chown, fchown, lchown, fchownat.
#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    check_path(Hook::PathChown, ctx.arg(0), ACCESS_WRITE)
}

/// `inode_setattr(dentry, attr)` (6.1): decides timestamp-only changes
/// (utimes, utimensat, futimesat). Mode, owner and size changes have their
/// own path hooks (`path_chmod`, `path_chown`, `path_truncate`).
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    decide_setattr(ctx.arg(0), ctx.arg(1))
}

/// `inode_setattr(idmap, dentry, attr)`: the same hook on kernels after
/// 6.2; the loader attaches whichever matches the running kernel's BTF
/// (context offsets must be constants, so one program cannot serve both).
#[lsm(hook = "inode_setattr_idmap")]
pub fn inode_setattr_idmap(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    decide_setattr(ctx.arg(1), ctx.arg(2))
}

/// Changes the kernel makes with borrowed credentials are its own.
#[inline(always)]
fn decide_setattr(dentry: *const u8, attr: *const u8) -> i32 {
    // `ia_valid` is the first member of `struct iattr`.
    let Ok(valid) = (unsafe { bpf_probe_read_kernel(attr as *const u32) }) else {
        return check(
            Hook::PathSetattr,
            core::ptr::null(),
            core::ptr::null(),
            ACCESS_WRITE,
        );
    };
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0
        || valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) != 0
        || creds_overridden()
    {
        return 0;
    }
    check(Hook::PathSetattr, dentry, core::ptr::null(), ACCESS_WRITE)
}

/// `inode_setxattr(idmap, dentry, name, value, size, flags)`: setxattr,
/// fsetxattr, lsetxattr (POSIX ACLs too on 6.1).
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(6);
    if previous != 0 {
        return previous;
    }
    if creds_overridden() {
        return 0;
    }
    check(Hook::PathXattr, ctx.arg(1), core::ptr::null(), ACCESS_WRITE)
}

/// `inode_removexattr(idmap, dentry, name)`.
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if creds_overridden() {
        return 0;
    }
    check(Hook::PathXattr, ctx.arg(1), core::ptr::null(), ACCESS_WRITE)
}
