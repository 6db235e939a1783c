//! Path resolution on behalf of a tracee: relative to its cwd or dirfd,
//! never through magic links, with decisions taken on the real path of the
//! object actually opened (so a path swapped after the check cannot win).
use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::{OsStrExt as _, OsStringExt as _},
    },
    path::PathBuf,
    rc::Rc,
};

/// `AT_FDCWD` as the tracee passes it (a 32-bit int in a 64-bit register).
pub const AT_FDCWD: i32 = -100;

use super::sys::cstr;
pub use super::sys::{openat2, status_field, tgid_from_status};

/// Opens one of a tracee's `/proc` entries (named by agentd, never by the
/// agent). Without CAP_SYS_PTRACE first: the supervisor thread's fs ids are
/// the agent's, which is all the kernel asks of an agent process that is
/// dumpable (almost all are); the capability is raised only for one that
/// is not.
pub fn proc_handle(path: &str, flags: i32) -> io::Result<OwnedFd> {
    let open = || openat2(AT_FDCWD, path.as_bytes(), flags as u64, 0, 0);
    match open() {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            super::caps::with_ptrace(open)
        }
        other => other,
    }
}

/// An O_PATH handle on the tracee's cwd (`AT_FDCWD`) or on one of its fds.
pub fn tracee_dir(tid: u32, dirfd: i32) -> io::Result<OwnedFd> {
    let p = if dirfd == AT_FDCWD {
        format!("/proc/{tid}/cwd")
    } else if dirfd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    } else {
        format!("/proc/{tid}/fd/{dirfd}")
    };
    // Following this magic link is the point: it is the tracee's own handle.
    proc_handle(&p, libc::O_PATH | libc::O_CLOEXEC)
}

/// Where a tracee's path is looked up from, with the resolve flags to use.
#[derive(Debug)]
pub struct Base {
    /// The tracee's root (absolute paths; kept per process), cwd or dirfd,
    /// as an O_PATH handle.
    pub fd: Rc<OwnedFd>,
    /// Resolve flags: the tracee's own, never magic links, and
    /// RESOLVE_IN_ROOT for absolute paths.
    pub resolve: u64,
}

/// The lookup base of `path` as tracee `tid` would resolve it: absolute
/// paths from *its* root (`/proc/TID/root` with RESOLVE_IN_ROOT, so an
/// agent in another mount namespace or chroot gets its own files, and
/// agentd's own namespace — ProtectSystem and friends — never decides what
/// an agent's path reaches), relative ones from its cwd or `dirfd`. With the
/// tracee's own RESOLVE_BENEATH/RESOLVE_IN_ROOT, `dirfd` is the base even
/// for absolute paths, as for the kernel.
pub fn base(tid: u32, dirfd: i32, path: &[u8], user_resolve: u64) -> io::Result<Base> {
    let scoped = user_resolve & (libc::RESOLVE_BENEATH | libc::RESOLVE_IN_ROOT) != 0;
    let resolve = user_resolve | libc::RESOLVE_NO_MAGICLINKS;
    if path.first() == Some(&b'/') && !scoped {
        let root = super::tracee::root_of(tid, |p| {
            proc_handle(p, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        })?;
        Ok(Base {
            fd: root,
            resolve: resolve | libc::RESOLVE_IN_ROOT,
        })
    } else {
        Ok(Base {
            fd: Rc::new(tracee_dir(tid, dirfd)?),
            resolve,
        })
    }
}

/// Resolve flags for one final component under an already-checked parent:
/// no symlinks, nothing above the parent (RESOLVE_IN_ROOT, exclusive with
/// RESOLVE_BENEATH, is dropped: the component has no `/` to anchor).
pub fn single_component(resolve: u64) -> u64 {
    (resolve & !libc::RESOLVE_IN_ROOT) | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH
}

thread_local! {
    /// This thread's O_PATH handle on `/proc/self/fd`: reading or reopening
    /// one of agentd's fds through it looks up one name, not four.
    static SELF_FDS: Option<OwnedFd> = openat2(
        AT_FDCWD,
        b"/proc/self/fd",
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
    .ok();
}

/// `f(dirfd, name)` with the name of `fd` in `/proc/self/fd`: relative to
/// this thread's handle on that directory, or the whole path without one.
fn via_self_fds<T>(fd: &OwnedFd, f: impl FnOnce(RawFd, &CString) -> T) -> io::Result<T> {
    SELF_FDS.with(|dir| match dir {
        Some(dir) => Ok(f(
            dir.as_raw_fd(),
            &cstr(fd.as_raw_fd().to_string().as_bytes())?,
        )),
        None => Ok(f(
            AT_FDCWD,
            &cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?,
        )),
    })
}

/// The real path of an fd we hold, as the kernel reports it.
pub fn real_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: readlinkat into a buffer we own, of the length given.
        let n = via_self_fds(fd, |dir, name| unsafe {
            libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)));
        }
        if buf.len() >= 1 << 16 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        // Possibly cut short: read again with room to spare.
        buf.resize(buf.len() * 2, 0);
    }
}

/// `/proc/self` and `/proc/thread-self` would resolve to agentd itself;
/// rewrite them to the tracee's own entries.
pub fn rewrite_proc_self(path: &[u8], tgid: u32, tid: u32) -> Vec<u8> {
    // The replacement is formatted only for a path that needs it: this
    // runs for every notified open.
    if let Some(rest) = entry_rest(path, b"/proc/thread-self") {
        return [format!("/proc/{tgid}/task/{tid}").as_bytes(), rest].concat();
    }
    if let Some(rest) = entry_rest(path, b"/proc/self") {
        return [format!("/proc/{tgid}").as_bytes(), rest].concat();
    }
    path.to_vec()
}

/// What follows `entry` in `path` when `path` is `entry` or below it.
fn entry_rest<'a>(path: &'a [u8], entry: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(entry)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// Splits `path` into (parent, final component) for creating a file.
/// `None` when the final component is empty, `.` or `..`.
pub fn split_parent(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let trimmed = path;
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/".to_vec(), trimmed[1..].to_vec()),
        Some(i) => (trimmed[..i].to_vec(), trimmed[i + 1..].to_vec()),
        None => (b".".to_vec(), trimmed.to_vec()),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    Some((parent, name))
}

/// Reopens an O_PATH handle with real open flags (same inode, no lookup).
pub fn reopen(fd: &OwnedFd, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: valid C string; the fd returned is new.
    let n = via_self_fds(fd, |dir, name| unsafe {
        libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0)
    })?;
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// `fstat` of an fd.
pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat buffer owned by us.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The thread group (process) id of thread `tid`, remembered per thread
/// while it lives ([`super::tracee`]).
pub fn tgid_of(tid: u32) -> io::Result<u32> {
    super::tracee::tgid_of(tid)
}

/// Renders bytes as a path for audit rows.
pub fn display(bytes: &[u8]) -> String {
    PathBuf::from(OsStr::from_bytes(bytes))
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_rewritten_only_as_a_component() {
        assert_eq!(
            rewrite_proc_self(b"/proc/self/fd/3", 10, 11),
            b"/proc/10/fd/3"
        );
        assert_eq!(rewrite_proc_self(b"/proc/self", 10, 11), b"/proc/10");
        assert_eq!(
            rewrite_proc_self(b"/proc/thread-self/comm", 10, 11),
            b"/proc/10/task/11/comm"
        );
        assert_eq!(
            rewrite_proc_self(b"/proc/selfish", 10, 11),
            b"/proc/selfish"
        );
        assert_eq!(rewrite_proc_self(b"etc/passwd", 10, 11), b"etc/passwd");
    }

    #[test]
    fn parents_split() {
        assert_eq!(
            split_parent(b"/tmp/x"),
            Some((b"/tmp".to_vec(), b"x".to_vec()))
        );
        assert_eq!(split_parent(b"/x"), Some((b"/".to_vec(), b"x".to_vec())));
        assert_eq!(split_parent(b"x"), Some((b".".to_vec(), b"x".to_vec())));
        assert_eq!(split_parent(b"/tmp/"), None);
        assert_eq!(split_parent(b"a/.."), None);
    }

    #[test]
    fn magic_links_are_refused_and_real_paths_read() {
        let f = openat2(
            AT_FDCWD,
            b"/etc/hostname",
            (libc::O_PATH | libc::O_CLOEXEC) as u64,
            0,
            0,
        );
        let Ok(f) = f else {
            eprintln!("SKIPPED: /etc/hostname not present");
            return;
        };
        assert_eq!(real_path(&f).unwrap(), PathBuf::from("/etc/hostname"));
        let via_magic = format!("/proc/self/fd/{}", f.as_raw_fd());
        let err = openat2(
            AT_FDCWD,
            via_magic.as_bytes(),
            libc::O_RDONLY as u64,
            0,
            libc::RESOLVE_NO_MAGICLINKS,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert!(reopen(&f, libc::O_RDONLY).is_ok());
        assert_eq!(tgid_of(std::process::id()).unwrap(), std::process::id());
    }
}
