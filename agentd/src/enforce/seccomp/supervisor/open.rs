//! open/openat/openat2/creat: resolved by agentd itself, decided on the
//! real path of what was resolved, reopened from that handle and injected
//! with ADDFD (no second lookup to race); O_CREAT of a missing file creates
//! exactly one component under the checked parent.
use std::{
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use super::{magic_link_denial, now_boot_ns, verdicts, Answer, Decided, Supervisor, Verdicts};
use agentd_common::FileId;

use crate::enforce::{
    claim,
    grant::{kernel_dev, Access},
    seccomp::resolve,
};

#[allow(clippy::too_many_arguments)]
pub(super) fn decide_open(
    sup: &Supervisor,
    tid: u32,
    tgid: u32,
    dirfd: i32,
    path: &[u8],
    flags: u64,
    mode: u64,
    user_resolve: u64,
    bound: Option<u64>,
) -> (Answer, Option<Decided>) {
    let iflags = flags as i32;
    let access = Access::of_flags(flags);
    let cloexec = iflags & libc::O_CLOEXEC != 0;
    let errno = |e: io::Error| (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None);
    let base = match resolve::base(tid, dirfd, path, user_resolve) {
        Ok(b) => b,
        Err(e) => return errno(e),
    };
    let dir = base.fd.as_raw_fd();
    let resolve_flags = base.resolve;
    let lookup_flags =
        (libc::O_PATH | libc::O_CLOEXEC | (iflags & (libc::O_NOFOLLOW | libc::O_DIRECTORY))) as u64;
    let found = if iflags & libc::O_TMPFILE == libc::O_TMPFILE {
        resolve::openat2(
            dir,
            path,
            (libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY) as u64,
            0,
            resolve_flags,
        )
    } else {
        resolve::openat2(dir, path, lookup_flags, 0, resolve_flags)
    };
    let now = now_boot_ns();
    match found {
        Ok(handle) => {
            if iflags & (libc::O_CREAT | libc::O_EXCL) == (libc::O_CREAT | libc::O_EXCL) {
                return (Answer::Errno(libc::EEXIST), None);
            }
            if resolve::fstat(&handle).is_ok_and(|st| is_current_tty(&st)) {
                // /dev/tty means the *opener's* controlling terminal: opened
                // here it would be agentd's. Agents run in a session of
                // their own with none, so the kernel's answer is ENXIO.
                return (Answer::Errno(libc::ENXIO), None);
            }
            let real = match resolve::real_path(&handle) {
                Ok(p) => p,
                Err(e) => return errno(e),
            };
            let file = resolve::fstat(&handle).ok().map(|st| FileId {
                dev: kernel_dev(st.st_dev),
                ino: st.st_ino,
            });
            let Verdicts {
                allowed,
                reason,
                call,
                audit_only,
            } = verdicts(sup, tgid, bound, claim::Kind::Open, |g| {
                g.check_open(&real, file, access, tgid, now)
            });
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
            let is_fifo =
                resolve::fstat(&handle).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
            let mut rflags = iflags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
            if is_fifo {
                // A FIFO without a peer would block this thread; the agent
                // gets ENXIO instead of waiting, which it can retry.
                rflags |= libc::O_NONBLOCK;
            }
            match resolve::reopen(&handle, rflags) {
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
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && path.starts_with(b"/proc/") => {
            magic_link_denial("file_open", path)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && iflags & libc::O_CREAT != 0 => create(
            sup,
            tid,
            tgid,
            dir,
            path,
            iflags,
            mode,
            resolve_flags,
            bound,
            now,
        ),
        Err(e) => errno(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    sup: &Supervisor,
    tid: u32,
    tgid: u32,
    dir: i32,
    path: &[u8],
    iflags: i32,
    mode: u64,
    resolve_flags: u64,
    bound: Option<u64>,
    now: u64,
) -> (Answer, Option<Decided>) {
    let errno = |e: io::Error| (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None);
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
    } = verdicts(sup, tgid, bound, claim::Kind::Open, |g| {
        g.check_path(&real, Access::Write, tgid, now)
    });
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
