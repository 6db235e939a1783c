//! The direct open: a read of a plain absolute path — every component a
//! name (no `.` or `..`), outside `/proc` and `/dev`, by a process whose
//! root is agentd's own — is decided on that path before anything is
//! opened, then opened once with the agent's flags and no symlink or magic
//! link allowed anywhere on the way (RESOLVE_NO_SYMLINKS). Whatever that
//! open reaches is what the path names, so its real path is the path
//! decided on: no O_PATH handle, no `readlink`, no reopen. Anything else —
//! a write, O_CREAT, a symlink met on the way (the open fails ELOOP and
//! nothing was opened), a denial, a pending grant to claim, an audit-only
//! agent, an open that fails or reaches neither a regular file nor a
//! directory — goes the general way ([`super::decide_open`]), which decides
//! on the real path of what it resolves.
use std::os::fd::{AsRawFd as _, OwnedFd};

use super::{OpenRequest, Supervisor};
use crate::enforce::{
    grant::Access,
    seccomp::{
        resolve,
        supervisor::{allowed_as_is, now_boot_ns, Answer, Decided},
        tracee,
    },
};

/// Flags `fcntl(F_SETFL)` sets (the rest of the open flags are fixed at open).
const SETFL_FLAGS: i32 =
    libc::O_APPEND | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME | libc::O_NONBLOCK;

/// The answer to `req` if it can be opened directly; `None` for the general way.
pub(super) fn open(sup: &Supervisor, req: &OpenRequest<'_>) -> Option<(Answer, Option<Decided>)> {
    let iflags = req.flags as i32;
    let plain_read = iflags & libc::O_ACCMODE == libc::O_RDONLY
        && iflags & (libc::O_CREAT | libc::O_TRUNC | libc::O_TMPFILE) == 0
        && req.resolve == 0;
    if !plain_read {
        return None;
    }
    let path = plain_path(req.path)?;
    // The agent's root decides what an absolute path names; only when it
    // is agentd's own is the path the real path agentd would read back.
    let root = resolve::base(req.tid, req.dirfd, req.path, 0).ok()?;
    if !tracee::root_is_ours(req.tid, &root.fd) {
        return None;
    }
    let now = now_boot_ns();
    let verdict = allowed_as_is(sup, req.bound, |g| {
        g.check_open(path, None, Access::Read, req.tgid, now)
    })?;
    let file = open_plain(req.path, iflags)?;
    let decided = Decided {
        action: "file_open",
        target: path.display().to_string(),
        allowed: true,
        reason: verdict.reason,
        call: verdict.call,
        access: Some(Access::Read.name()),
    };
    Some((
        Answer::AddFd(file, iflags & libc::O_CLOEXEC != 0),
        Some(decided),
    ))
}

/// `path` as a real path, if it is one already: absolute, each component
/// a name (not empty, `.` or `..`; no trailing slash), not under `/proc`
/// (whose `self` means the asking process) or `/dev` (devices: opening one
/// may do something, so it is decided before, on what was resolved).
fn plain_path(path: &[u8]) -> Option<&std::path::Path> {
    let rest = path.strip_prefix(b"/")?;
    if rest.is_empty() {
        return None;
    }
    let mut parts = rest.split(|&b| b == b'/');
    let first = parts.clone().next()?;
    if first == b"proc" || first == b"dev" {
        return None;
    }
    if parts.any(|c| c.is_empty() || c == b"." || c == b"..") {
        return None;
    }
    Some(std::path::Path::new(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path),
    ))
}

/// Opens `path` with the agent's flags (non-blocking, so a FIFO cannot
/// hold this thread; the agent's own blocking mode is put back), with no
/// symlink or magic link followed. Only a regular file or a directory is
/// kept; anything else is closed again (`None`: the general way decides it).
fn open_plain(path: &[u8], iflags: i32) -> Option<OwnedFd> {
    let flags = iflags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    let f = resolve::openat2(
        resolve::AT_FDCWD,
        path,
        flags as u64,
        0,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let kind = resolve::fstat(&f).ok()?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR {
        return None;
    }
    if iflags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl on an fd we own.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, iflags & SETFL_FLAGS) };
        if r != 0 {
            return None;
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::plain_path;

    #[test]
    fn only_plain_absolute_paths_outside_proc_and_dev_are_direct() {
        for ok in [
            &b"/usr/bin/true"[..],
            b"/etc/hostname",
            b"/processes/x",
            b"/devices",
        ] {
            assert!(plain_path(ok).is_some(), "{}", String::from_utf8_lossy(ok));
        }
        for no in [
            &b"usr/bin/true"[..],
            b"/",
            b"/usr//bin",
            b"/usr/./bin",
            b"/usr/../etc/shadow",
            b"/tmp/",
            b"/proc/self/environ",
            b"/proc",
            b"/dev/tty",
            b"/dev",
            b"./x",
        ] {
            assert!(plain_path(no).is_none(), "{}", String::from_utf8_lossy(no));
        }
    }
}
