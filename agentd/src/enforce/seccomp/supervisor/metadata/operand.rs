//! Resolving an operation's operands on the tracee's behalf: entries (a
//! pinned parent and one name) and objects (an O_PATH handle on the inode).
use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::{decode::ObjectArg, errno_of};
use crate::enforce::seccomp::resolve;

/// A resolved entry: the pinned parent, the final name (with its trailing
/// slash, if any, so the kernel keeps "must be a directory"), the real path.
pub(in crate::enforce::seccomp::supervisor) struct Entry {
    pub(in crate::enforce::seccomp::supervisor) parent: OwnedFd,
    pub(in crate::enforce::seccomp::supervisor) name: CString,
    pub(in crate::enforce::seccomp::supervisor) real: PathBuf,
}

/// (parent, final component, trailing slashes) of a path.
pub(super) type Split = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Splits off the final component; trailing slashes stay on the name.
pub(super) fn split_entry(path: &[u8]) -> Result<Split, i32> {
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let trimmed_len = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    if trimmed_len == 0 {
        // "/" (or "//"): the root itself.
        return Err(libc::EBUSY);
    }
    let trimmed = &path[..trimmed_len];
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => {
            let p = &trimmed[..i];
            (
                if p.is_empty() {
                    b"/".to_vec()
                } else {
                    p.to_vec()
                },
                trimmed[i + 1..].to_vec(),
            )
        }
        None => (b".".to_vec(), trimmed.to_vec()),
    };
    Ok((parent, name, path[trimmed_len..].to_vec()))
}

pub(in crate::enforce::seccomp::supervisor) fn resolve_entry(
    tid: u32,
    tgid: u32,
    dirfd: i32,
    raw: &[u8],
) -> Result<Entry, i32> {
    let path = resolve::rewrite_proc_self(raw, tgid, tid);
    let (parent, name, slashes) = split_entry(&path)?;
    if name == b"." || name == b".." {
        return Err(libc::EBUSY);
    }
    let base = resolve::base(tid, dirfd, &parent, 0).map_err(|e| errno_of(&e))?;
    let parent_fd = resolve::openat2(
        base.fd.as_raw_fd(),
        &parent,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        base.resolve,
    )
    .map_err(|e| errno_of(&e))?;
    let real_parent = resolve::real_path(&parent_fd).map_err(|e| errno_of(&e))?;
    let real = real_parent.join(Path::new(&resolve::display(&name)));
    let mut full = name;
    full.extend_from_slice(&slashes);
    Ok(Entry {
        parent: parent_fd,
        name: CString::new(full).map_err(|_| libc::EINVAL)?,
        real,
    })
}

/// A resolved object: an O_PATH handle on exactly the inode to change.
pub(super) struct Object {
    pub(super) handle: OwnedFd,
    pub(super) real: PathBuf,
}

pub(super) fn resolve_object(
    tid: u32,
    tgid: u32,
    o: &ObjectArg,
    raw: &[u8],
) -> Result<Object, i32> {
    let handle = if o.path.is_none() || (raw.is_empty() && o.empty) {
        resolve::tracee_dir(tid, o.dirfd).map_err(|e| errno_of(&e))?
    } else if raw.is_empty() {
        return Err(libc::ENOENT);
    } else {
        let path = resolve::rewrite_proc_self(raw, tgid, tid);
        let base = resolve::base(tid, o.dirfd, &path, 0).map_err(|e| errno_of(&e))?;
        let mut flags = libc::O_PATH | libc::O_CLOEXEC;
        if !o.follow {
            flags |= libc::O_NOFOLLOW;
        }
        resolve::openat2(base.fd.as_raw_fd(), &path, flags as u64, 0, base.resolve)
            .map_err(|e| errno_of(&e))?
    };
    let real = resolve::real_path(&handle).map_err(|e| errno_of(&e))?;
    Ok(Object { handle, real })
}

/// `/proc/self/fd/N` of a handle: following it lands on exactly its inode
/// (a symlink handle stays the symlink).
pub(super) fn via(handle: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_keeping_trailing_slashes() {
        let s = split_entry;
        assert_eq!(s(b"/tmp/x"), Ok((b"/tmp".to_vec(), b"x".to_vec(), vec![])));
        assert_eq!(s(b"/x"), Ok((b"/".to_vec(), b"x".to_vec(), vec![])));
        assert_eq!(s(b"d/"), Ok((b".".to_vec(), b"d".to_vec(), b"/".to_vec())));
        assert_eq!(
            s(b"a/b//"),
            Ok((b"a".to_vec(), b"b".to_vec(), b"//".to_vec()))
        );
        assert_eq!(s(b"/"), Err(libc::EBUSY));
        assert_eq!(s(b""), Err(libc::ENOENT));
    }
}
