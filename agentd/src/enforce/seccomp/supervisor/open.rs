//! open/openat/openat2/creat: resolved by agentd itself, decided on the
//! real path of what was resolved, reopened from that handle and injected
//! with ADDFD (no second lookup to race); O_CREAT of a missing file creates
//! exactly one component under the checked parent.
use std::{
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

mod direct;
#[cfg(test)]
pub(in crate::enforce::seccomp::supervisor) use direct::through_first_symlink;

use super::{
    magic_link_denial, now_boot_ns, verdicts, write_verdicts, Answer, Decided, Supervisor, Verdicts,
};
use agentd_common::FileId;

use crate::enforce::{
    claim,
    grant::{kernel_dev, Access, WriteTarget},
    seccomp::resolve,
};

/// One notified open/openat/openat2/creat, as decoded.
pub(super) struct OpenRequest<'a> {
    /// The thread that asked.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// The dirfd (AT_FDCWD for open/creat).
    pub dirfd: i32,
    /// The path, as the tracee gave it (`/proc/self` rewritten).
    pub path: &'a [u8],
    /// Open flags.
    pub flags: u64,
    /// Creation mode.
    pub mode: u64,
    /// openat2's resolve flags (0 otherwise).
    pub resolve: u64,
    /// The call the process is bound to, if any.
    pub bound: Option<u64>,
}

fn errno(e: io::Error) -> (Answer, Option<Decided>) {
    (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None)
}

/// Decides an open: resolves it as the tracee would (no magic links), then
/// decides on the real path of an existing file ([`open_existing`]) or of
/// the one O_CREAT would make ([`create`]).
pub(super) fn decide_open(sup: &Supervisor, req: &OpenRequest<'_>) -> (Answer, Option<Decided>) {
    if let Some(answered) = direct::open(sup, req) {
        return answered;
    }
    let iflags = req.flags as i32;
    let base = match resolve::base(req.tid, req.dirfd, req.path, req.resolve) {
        Ok(b) => b,
        Err(e) => return errno(e),
    };
    let dir = base.fd.as_raw_fd();
    let lookup_flags = if iflags & libc::O_TMPFILE == libc::O_TMPFILE {
        (libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY) as u64
    } else {
        (libc::O_PATH | libc::O_CLOEXEC | (iflags & (libc::O_NOFOLLOW | libc::O_DIRECTORY))) as u64
    };
    let found = resolve::openat2(dir, req.path, lookup_flags, 0, base.resolve);
    let now = now_boot_ns();
    match found {
        Ok(handle) => open_existing(sup, req, handle, now),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && req.path.starts_with(b"/proc/") => {
            magic_link_denial("file_open", req.path)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && iflags & libc::O_CREAT != 0 => {
            create(sup, req, dir, base.resolve, now)
        }
        Err(e) => errno(e),
    }
}

/// An open of a file that exists: decided on the real path of `handle`,
/// reopened from it with the tracee's flags (no second lookup).
fn open_existing(
    sup: &Supervisor,
    req: &OpenRequest<'_>,
    handle: std::os::fd::OwnedFd,
    now: u64,
) -> (Answer, Option<Decided>) {
    let iflags = req.flags as i32;
    let access = Access::of_flags(req.flags);
    if iflags & (libc::O_CREAT | libc::O_EXCL) == (libc::O_CREAT | libc::O_EXCL) {
        return (Answer::Errno(libc::EEXIST), None);
    }
    // One fstat serves the terminal check, the file's identity and the FIFO test.
    let st = match resolve::fstat(&handle) {
        Ok(st) => st,
        Err(e) => return errno(e),
    };
    if is_current_tty(&st) {
        // /dev/tty means the *opener's* controlling terminal: opened
        // here it would be agentd's. Agents run in a session of
        // their own with none, so the kernel's answer is ENXIO.
        return (Answer::Errno(libc::ENXIO), None);
    }
    let real = match resolve::real_path(&handle) {
        Ok(p) => p,
        Err(e) => return errno(e),
    };
    let file = Some(FileId {
        dev: kernel_dev(st.st_dev),
        ino: st.st_ino,
    });
    let Verdicts {
        allowed,
        reason,
        call,
        audit_only,
    } = if access == Access::Write {
        let target = WriteTarget {
            real: &real,
            file,
            moves_name: false,
        };
        write_verdicts(sup, req.tgid, req.bound, &target, |g| {
            g.check_open(&real, file, access, req.tgid, now)
        })
    } else {
        verdicts(sup, req.tgid, req.bound, claim::Kind::Open, |g| {
            g.check_open(&real, file, access, req.tgid, now)
        })
    };
    let decided = Decided {
        action: "file_open",
        target: real.display().to_string(),
        allowed,
        reason,
        call,
        access: Some(access.name()),
    };
    if !allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    let is_fifo = st.st_mode & libc::S_IFMT == libc::S_IFIFO;
    reopen(&handle, iflags, is_fifo, decided)
}

/// Reopens the decided file with the tracee's flags, for ADDFD.
fn reopen(
    handle: &std::os::fd::OwnedFd,
    iflags: i32,
    is_fifo: bool,
    decided: Decided,
) -> (Answer, Option<Decided>) {
    let cloexec = iflags & libc::O_CLOEXEC != 0;
    let mut rflags = iflags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
    if is_fifo {
        // A FIFO without a peer would block this thread; the agent
        // gets ENXIO instead of waiting, which it can retry.
        rflags |= libc::O_NONBLOCK;
    }
    match resolve::reopen(handle, rflags) {
        Ok(f) => {
            if is_fifo && iflags & libc::O_NONBLOCK == 0 {
                // SAFETY: fcntl on an fd we own.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
            }
            (Answer::AddFd(f, cloexec), Some(decided))
        }
        Err(e) => (
            Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)),
            Some(decided),
        ),
    }
}

/// O_CREAT of a missing file: the parent is resolved and decided on, then
/// exactly one component is created under it.
fn create(
    sup: &Supervisor,
    req: &OpenRequest<'_>,
    dir: i32,
    resolve_flags: u64,
    now: u64,
) -> (Answer, Option<Decided>) {
    let (tid, tgid, path, bound) = (req.tid, req.tgid, req.path, req.bound);
    let (iflags, mode) = (req.flags as i32, req.mode);
    let Some((parent, name)) = resolve::split_parent(path) else {
        return (Answer::Errno(libc::EISDIR), None);
    };
    let parent_fd = match resolve::openat2(
        dir,
        &parent,
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        resolve_flags,
    ) {
        Ok(f) => f,
        Err(e) => return errno(e),
    };
    let real_parent = match resolve::real_path(&parent_fd) {
        Ok(p) => p,
        Err(e) => return errno(e),
    };
    let real: PathBuf = real_parent.join(Path::new(&resolve::display(&name)));
    let Verdicts {
        allowed,
        reason,
        call,
        audit_only,
    } = write_verdicts(
        sup,
        tgid,
        bound,
        &WriteTarget {
            real: &real,
            file: None,
            moves_name: false,
        },
        |g| g.check_path(&real, Access::Write, tgid, now),
    );
    let decided = Decided {
        action: "file_open",
        target: real.display().to_string(),
        allowed,
        reason,
        call,
        access: Some(Access::Write.name()),
    };
    if !allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    let umask = resolve::status_field(tid, "Umask")
        .ok()
        .and_then(|u| u32::from_str_radix(&u, 8).ok())
        .unwrap_or(0o022);
    // SAFETY: this thread has its own fs_struct (CLONE_FS unshared).
    unsafe { libc::umask(umask as libc::mode_t) };
    // One component, relative to the checked parent, no symlinks: exactly
    // the file that was decided on.
    let r = resolve::openat2(
        parent_fd.as_raw_fd(),
        &name,
        (iflags | libc::O_CLOEXEC) as u64,
        mode & 0o7777,
        resolve::single_component(resolve_flags),
    );
    match r {
        Ok(f) => (
            Answer::AddFd(f, iflags & libc::O_CLOEXEC != 0),
            Some(decided),
        ),
        Err(e) => (
            Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)),
            Some(decided),
        ),
    }
}

/// Whether `st` is `/dev/tty` (character device 5:0), whatever its name.
fn is_current_tty(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(5, 0)
}
