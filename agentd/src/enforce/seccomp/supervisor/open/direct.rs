//! The direct open: a read of a plain absolute path — every component a
//! name (no `.` or `..`), outside `/proc` and `/dev`, by a process whose
//! root is agentd's own — is decided on that path before anything is
//! opened, then opened once with the agent's flags and no symlink or magic
//! link allowed anywhere on the way (RESOLVE_NO_SYMLINKS). Whatever that
//! open reaches is what the path names, so its real path is the path
//! decided on: no O_PATH handle, no `readlink`, no reopen. A path whose
//! first component is a symlink with a plain target (`/lib` → `usr/lib`
//! on merged-/usr systems, the way the loader reaches libc) is tried once
//! more as the path that link names, read at that moment: decided on and
//! opened the same way, so what is opened is still exactly what was
//! decided on. Anything else — a write, O_CREAT, any other symlink met on
//! the way (the open fails ELOOP and nothing was opened), a denial, a
//! pending grant to claim, an audit-only agent, an open that fails or
//! reaches neither a regular file nor a directory — goes the general way
//! ([`super::decide_open`]), which decides on the real path of what it
//! resolves.
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
    plain_path(req.path)?;
    // The agent's root decides what an absolute path names; only when it
    // is agentd's own is the path the real path agentd would read back.
    let root = resolve::base(req.tid, req.dirfd, req.path, 0).ok()?;
    if !tracee::root_is_ours(req.tid, &root.fd) {
        return None;
    }
    match attempt(sup, req, req.path, iflags) {
        Attempt::Done(answered) => Some(answered),
        Attempt::GeneralWay => None,
        // A symlink on the way, or a path not allowed as it stands: with a
        // first component that is a plain symlink (`/lib` → `usr/lib` on
        // merged-/usr systems), the path it names is tried the same way.
        Attempt::NotAsIs => {
            let through = through_first_symlink(req.path)?;
            match attempt(sup, req, &through, iflags) {
                Attempt::Done(answered) => Some(answered),
                Attempt::GeneralWay | Attempt::NotAsIs => None,
            }
        }
    }
}

/// What one direct attempt on a path came to.
enum Attempt {
    /// Decided and opened (or refused by the open itself): the answer.
    Done((Answer, Option<Decided>)),
    /// Not allowed as it stands, or a symlink met on the way.
    NotAsIs,
    /// Anything else the general way decides.
    GeneralWay,
}

/// Decides `path` (a plain path, re-checked) as it stands and opens it
/// with no symlink followed.
fn attempt(sup: &Supervisor, req: &OpenRequest<'_>, bytes: &[u8], iflags: i32) -> Attempt {
    let Some(path) = plain_path(bytes) else {
        return Attempt::GeneralWay;
    };
    let now = now_boot_ns();
    let Some(verdict) = allowed_as_is(sup, req.bound, |g| {
        g.check_open(path, None, Access::Read, req.tgid, now)
    }) else {
        return Attempt::NotAsIs;
    };
    let file = match open_plain(bytes, iflags) {
        Ok(Some(f)) => f,
        Ok(None) => return Attempt::GeneralWay,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Attempt::NotAsIs,
        Err(_) => return Attempt::GeneralWay,
    };
    let decided = Decided {
        action: "file_open",
        target: path.display().to_string(),
        allowed: true,
        reason: verdict.reason,
        call: verdict.call,
        access: Some(Access::Read.name()),
    };
    Attempt::Done((
        Answer::AddFd(file, iflags & libc::O_CLOEXEC != 0),
        Some(decided),
    ))
}

/// `path` with its first component replaced by what that component links
/// to, when it is a symlink in agentd's root (the tracee's too, checked by
/// the caller) whose target is plain: absolute or relative to `/`, each
/// component a name. The link is read now, for this open; the path it
/// gives is then decided and opened with no symlink followed, so what is
/// opened is exactly what was decided on whatever the link said. `None`
/// (the general way) for anything else.
pub(in crate::enforce::seccomp::supervisor) fn through_first_symlink(
    path: &[u8],
) -> Option<Vec<u8>> {
    let rest = path.strip_prefix(b"/")?;
    let end = rest.iter().position(|&b| b == b'/')?;
    let target = read_link(&path[..end + 1])?;
    let target = target.strip_prefix(b"/").unwrap_or(&target);
    if target.is_empty()
        || target
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return None;
    }
    let mut out = Vec::with_capacity(path.len() + target.len());
    out.push(b'/');
    out.extend_from_slice(target);
    out.extend_from_slice(&rest[end..]);
    Some(out)
}

/// The target of the symlink at `path` (agentd's own view); `None` when
/// it is not a symlink or cannot be read.
fn read_link(path: &[u8]) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: readlink into a buffer we own, of the length given.
    let n = unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    // A target that fills the buffer may have been cut short.
    (n < buf.len()).then(|| buf[..n].to_vec())
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
fn open_plain(path: &[u8], iflags: i32) -> std::io::Result<Option<OwnedFd>> {
    let flags = iflags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    let f = resolve::openat2(
        resolve::AT_FDCWD,
        path,
        flags as u64,
        0,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )?;
    let Ok(st) = resolve::fstat(&f) else {
        return Ok(None);
    };
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR {
        return Ok(None);
    }
    if iflags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl on an fd we own.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, iflags & SETFL_FLAGS) };
        if r != 0 {
            return Ok(None);
        }
    }
    Ok(Some(f))
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
