//! Copies of everything an operation reads from the tracee's memory, taken
//! before acting, so later writes by the agent change nothing.
use std::ffi::CString;

use super::{
    decode::{ObjectArg, Op, Times},
    errno_of,
};
use crate::enforce::seccomp::notif;

/// Largest xattr value read from the tracee (the kernel's XATTR_SIZE_MAX).
pub(super) const XATTR_SIZE_MAX: usize = 65536;
/// Longest xattr name (XATTR_NAME_MAX).
pub(super) const XATTR_NAME_MAX: usize = 255;

/// Everything read from the tracee before acting: copied, so later writes
/// by the agent change nothing.
pub(super) struct Copied {
    pub(super) paths: Vec<Vec<u8>>,
    pub(super) times: Option<[libc::timespec; 2]>,
    pub(super) xattr_name: Option<CString>,
    pub(super) xattr_value: Vec<u8>,
    pub(super) symlink_target: Option<Vec<u8>>,
}

pub(super) fn read_path(tid: u32, ptr: u64) -> Result<Vec<u8>, i32> {
    notif::read_cstring(tid, ptr, libc::PATH_MAX as usize).map_err(|e| errno_of(&e))
}

pub(super) fn read_times(tid: u32, t: Times) -> Result<Option<[libc::timespec; 2]>, i32> {
    let ptr = match t {
        Times::Utimbuf(p) | Times::Timeval(p) | Times::Timespec(p) => p,
    };
    if ptr == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 32];
    let want = match t {
        Times::Utimbuf(_) => 16,
        _ => 32,
    };
    match notif::read_mem(tid, ptr, &mut buf[..want]) {
        Ok(n) if n == want => {}
        Ok(_) => return Err(libc::EFAULT),
        Err(e) => return Err(errno_of(&e)),
    }
    let w = |i: usize| i64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let ts = |sec: i64, nsec: i64| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    Ok(Some(match t {
        Times::Utimbuf(_) => [ts(w(0), 0), ts(w(1), 0)],
        Times::Timeval(_) => {
            if !(0..1_000_000).contains(&w(1)) || !(0..1_000_000).contains(&w(3)) {
                return Err(libc::EINVAL);
            }
            [ts(w(0), w(1) * 1000), ts(w(2), w(3) * 1000)]
        }
        Times::Timespec(_) => [ts(w(0), w(1)), ts(w(2), w(3))],
    }))
}

pub(super) fn copy_args(tid: u32, op: &Op) -> Result<Copied, i32> {
    let mut c = Copied {
        paths: Vec::new(),
        times: None,
        xattr_name: None,
        xattr_value: Vec::new(),
        symlink_target: None,
    };
    let obj_path = |o: &ObjectArg| -> Result<Vec<u8>, i32> {
        match o.path {
            Some(p) => read_path(tid, p),
            None => Ok(Vec::new()),
        }
    };
    match op {
        Op::Truncate(o, _) | Op::Chmod(o, _) | Op::Chown(o, ..) => c.paths.push(obj_path(o)?),
        Op::Unlink(e, _) | Op::Mkdir(e, _) | Op::Mknod(e, ..) => {
            c.paths.push(read_path(tid, e.path)?)
        }
        Op::Symlink(target, e) => {
            c.symlink_target = Some(read_path(tid, *target)?);
            c.paths.push(read_path(tid, e.path)?);
        }
        Op::Link(o, e) => {
            c.paths.push(obj_path(o)?);
            c.paths.push(read_path(tid, e.path)?);
        }
        Op::Rename(a, b, _) => {
            c.paths.push(read_path(tid, a.path)?);
            c.paths.push(read_path(tid, b.path)?);
        }
        Op::Utimes(o, t) => {
            c.paths.push(obj_path(o)?);
            c.times = read_times(tid, *t)?;
        }
        Op::SetXattr(o, name, value, size, _) => {
            c.paths.push(obj_path(o)?);
            c.xattr_name = Some(read_xattr_name(tid, *name)?);
            if *size > XATTR_SIZE_MAX {
                return Err(libc::E2BIG);
            }
            let mut v = vec![0u8; *size];
            if *size > 0 {
                match notif::read_mem(tid, *value, &mut v) {
                    Ok(n) if n == *size => {}
                    Ok(_) => return Err(libc::EFAULT),
                    Err(e) => return Err(errno_of(&e)),
                }
            }
            c.xattr_value = v;
        }
        Op::RemoveXattr(o, name) => {
            c.paths.push(obj_path(o)?);
            c.xattr_name = Some(read_xattr_name(tid, *name)?);
        }
    }
    Ok(c)
}

pub(super) fn read_xattr_name(tid: u32, ptr: u64) -> Result<CString, i32> {
    let name = notif::read_cstring(tid, ptr, XATTR_NAME_MAX + 1).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
            libc::ERANGE
        } else {
            errno_of(&e)
        }
    })?;
    if name.is_empty() {
        return Err(libc::ERANGE);
    }
    CString::new(name).map_err(|_| libc::EINVAL)
}
