//! Path-mutating syscalls other than open: truncate, unlink, rmdir, mkdir,
//! mknod, symlink, link, rename, chmod, chown, utimes, set/remove xattr
//! (by path and by fd). Each is decided against *write* scopes on the real
//! path of what it changes, and the supervisor **performs it itself** on
//! the handles it resolved (relative to the tracee's root and cwd, under
//! the agent's credentials) and returns its result — it never answers
//! CONTINUE after reading a pointer argument, which a sibling thread could
//! rewrite before the kernel reads it again.
//!
//! Two kinds of operand:
//! - an *entry* (a name in a directory: unlink, rmdir, mkdir, mknod, the new
//!   name of symlink/link, both names of rename): the parent is resolved
//!   and pinned as a handle, the decision is on `real parent/name`, and the
//!   operation runs as `*at(parent handle, name)` — one component, so
//!   nothing else is looked up;
//! - an *object* (chmod, chown, utimes, xattrs, truncate, link's source):
//!   resolved to an O_PATH handle (following the final symlink or not, as
//!   the syscall would), decided on its real path, and changed through that
//!   handle (`AT_EMPTY_PATH`, or `/proc/self/fd/N`, which lands on exactly
//!   that inode).
//!
//! `link` needs a write scope on its source as well as on its new name, and
//! `rename` on both names: a file outside the agent's write scopes cannot be
//! given a name inside a read scope and opened there. A protected file
//! (and, for unlink and rename, a directory holding one) needs a grant that
//! names it as a protected write, whatever write scope covers it.
use std::{io, os::fd::OwnedFd};

use super::{now_boot_ns, write_verdicts, Answer, Decided, Supervisor, Verdicts};
use crate::enforce::{
    grant::{kernel_dev, Access, WriteTarget},
    seccomp::{notif, resolve},
};
use agentd_common::FileId;

mod args;
mod decode;
pub(super) mod operand;
pub(super) mod perform;

use args::{copy_args, Copied};
use decode::{decode, Op};
pub use decode::{handles, SYSCALLS, UNSUPPORTED};
use operand::{resolve_entry, resolve_object, Entry, Object};
use perform::{adopt_umask, perform, Operands};

/// An errno answer without an audit row (the syscall failed before any
/// decision: bad pointer, missing file, …).
pub(super) fn fail(e: i32) -> (Answer, Option<Decided>) {
    (Answer::Errno(e), None)
}

pub(super) fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Decides and performs one path-mutating syscall.
pub(super) fn handle(
    sup: &Supervisor,
    listener: &OwnedFd,
    n: &libc::seccomp_notif,
    bound: impl FnOnce(u32) -> Option<u64>,
) -> (Answer, Option<Decided>) {
    let tid = n.pid;
    let Some(op) = decode(&n.data) else {
        return fail(libc::ENOSYS);
    };
    let copied = match copy_args(tid, &op) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Ok(tgid) = resolve::tgid_of(tid) else {
        return fail(libc::ESRCH);
    };
    // The copies are only trusted if the task is still the one that asked.
    if !notif::id_valid(std::os::fd::AsFd::as_fd(listener), n.id) {
        sup.stats
            .stale
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return fail(libc::ESRCH);
    }
    let bound = bound(tgid);
    // Resolve every operand first (errors such as ENOENT answer as the
    // kernel would, without a row), then decide, then act.
    let resolved = match resolve_operands(tid, tgid, &op, &copied) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let moves_name = matches!(op, Op::Unlink(..) | Op::Rename(..));
    let Some((decided, audit_only)) = decide(sup, tgid, bound, &op, &resolved.targets(moves_name))
    else {
        return fail(libc::EPERM);
    };
    if !decided.allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    if matches!(op, Op::Mkdir(..) | Op::Mknod(..)) {
        adopt_umask(tid);
    }
    let result = perform(&op, &resolved.operands(), &copied);
    let answer = match result {
        Ok(()) => Answer::Value(0),
        Err(e) => Answer::Errno(errno_of(&e)),
    };
    (answer, Some(decided))
}

/// The resolved operands of one operation, by kind.
enum Resolved {
    E(Entry),
    O(Object),
    OE(Object, Entry),
    EE(Entry, Entry),
}

impl Resolved {
    /// What each operand writes, for the protected-file check: objects
    /// with their device+inode (another name of a protected file is still
    /// that file), entries by name.
    fn targets<'a>(&'a self, moves_name: bool) -> Vec<WriteTarget<'a>> {
        fn object(o: &Object) -> WriteTarget<'_> {
            WriteTarget {
                real: &o.real,
                file: resolve::fstat(&o.handle).ok().map(|st| FileId {
                    dev: kernel_dev(st.st_dev),
                    ino: st.st_ino,
                }),
                moves_name: false,
            }
        }
        let entry = |e: &'a Entry| WriteTarget {
            real: &e.real,
            file: None,
            moves_name,
        };
        match self {
            Resolved::E(e) => vec![entry(e)],
            Resolved::O(o) => vec![object(o)],
            Resolved::OE(o, e) => vec![object(o), entry(e)],
            Resolved::EE(a, b) => vec![entry(a), entry(b)],
        }
    }

    /// The handles `perform` acts on.
    fn operands(&self) -> Operands<'_> {
        match self {
            Resolved::E(e) => Operands {
                entry: Some(e),
                object: None,
                second: None,
            },
            Resolved::O(o) => Operands {
                entry: None,
                object: Some(o),
                second: None,
            },
            Resolved::OE(o, e) => Operands {
                entry: Some(e),
                object: Some(o),
                second: None,
            },
            Resolved::EE(a, b) => Operands {
                entry: Some(a),
                object: None,
                second: Some(b),
            },
        }
    }
}

/// Resolves each operand of `op` as the tracee would (an errno where the
/// kernel would fail the syscall).
fn resolve_operands(tid: u32, tgid: u32, op: &Op, copied: &Copied) -> Result<Resolved, i32> {
    let p = |i: usize| copied.paths.get(i).map(Vec::as_slice).unwrap_or_default();
    match op {
        Op::Unlink(e, _) | Op::Mkdir(e, _) | Op::Mknod(e, ..) | Op::Symlink(_, e) => {
            resolve_entry(tid, tgid, e.dirfd, p(0)).map(Resolved::E)
        }
        Op::Truncate(o, _)
        | Op::Chmod(o, _)
        | Op::Chown(o, ..)
        | Op::Utimes(o, _)
        | Op::SetXattr(o, ..)
        | Op::RemoveXattr(o, _) => resolve_object(tid, tgid, o, p(0)).map(Resolved::O),
        Op::Link(o, e) => {
            if o.empty && p(0).is_empty() {
                // linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, which
                // agents never have: the kernel's answer is ENOENT.
                return Err(libc::ENOENT);
            }
            resolve_object(tid, tgid, o, p(0)).and_then(|src| {
                resolve_entry(tid, tgid, e.dirfd, p(1)).map(|dst| Resolved::OE(src, dst))
            })
        }
        Op::Rename(a, b, _) => resolve_entry(tid, tgid, a.dirfd, p(0)).and_then(|src| {
            resolve_entry(tid, tgid, b.dirfd, p(1)).map(|dst| Resolved::EE(src, dst))
        }),
    }
}

/// Every operand needs a write scope. The row names them all; its verdict
/// is the first refusal, else a grant's allow, else the baseline's. Also
/// says whether the agent is in audit-only mode; None when there is no
/// operand.
fn decide(
    sup: &Supervisor,
    tgid: u32,
    bound: Option<u64>,
    op: &Op,
    targets: &[WriteTarget<'_>],
) -> Option<(Decided, bool)> {
    let now = now_boot_ns();
    let target = targets
        .iter()
        .map(|t| t.real.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ");
    let mut decided: Option<Decided> = None;
    let mut audit_only = false;
    for t in targets {
        let Verdicts {
            allowed,
            reason,
            call,
            audit_only: ao,
        } = write_verdicts(sup, tgid, bound, t, |g| {
            g.check_path(t.real, Access::Write, tgid, now)
        });
        audit_only = ao;
        let better = match &decided {
            None => true,
            Some(d) => d.allowed && (!allowed || (d.call.is_none() && call.is_some())),
        };
        if better {
            decided = Some(Decided {
                action: op.action(),
                target: target.clone(),
                allowed,
                reason,
                call,
                access: None,
            });
        }
    }
    decided.map(|d| (d, audit_only))
}
