//! What a supervisor thread remembers about the tasks it serves, so that a
//! notification from a thread already seen costs no `/proc` lookup: the
//! thread's process (tgid), and per process its root (an O_PATH handle on
//! `/proc/TID/root`) and its memory (`/proc/TID/mem`, read with `pread`
//! instead of `process_vm_readv` — which needs CAP_SYS_PTRACE raised
//! around every read, as agentd's real uid is not the agent's).
//!
//! Every entry holds a pidfd of the task it was made for. A pid is reused
//! only after its task exited, and a pidfd polls readable once its task has
//! exited, so an entry is used only while its pidfd does not poll readable:
//! a reused pid or an exited thread never inherits what an older task left
//! (checked once per notification, [`next_notification`]). A memory handle
//! belongs to one address space, not to a pid: it is dropped when its
//! process is let through an exec ([`exec_continued`]), and one that reads
//! nothing (its address space is gone) is opened again.
//!
//! The cache is per thread (one supervisor thread per listener) and bounded;
//! a kernel without thread pidfds (`PIDFD_THREAD`, Linux 6.9) caches only
//! thread-group leaders.
use crate::enforce::pidfd;
use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::FileExt as _,
    },
    rc::Rc,
};

/// `PIDFD_THREAD` (= O_EXCL): a pidfd for one thread, which polls readable
/// when that thread exits.
const PIDFD_THREAD: libc::c_long = libc::O_EXCL as libc::c_long;

/// Threads remembered per supervisor (each holds a pidfd).
const MAX_THREADS: usize = 256;
/// Processes remembered per supervisor (each holds a pidfd and up to two handles).
const MAX_PROCESSES: usize = 64;

struct Thread {
    /// The thread's own pidfd; `None` for a thread-group leader, whose
    /// process pidfd says the same.
    pidfd: Option<OwnedFd>,
    tgid: u32,
    /// The notification it was last checked for.
    checked: u64,
}

struct Process {
    /// Polls readable once every thread of the process has exited.
    pidfd: OwnedFd,
    root: Option<Rc<OwnedFd>>,
    /// Whether that root is the supervisor thread's own (same mount, same
    /// inode), found once.
    root_is_ours: Option<bool>,
    mem: Option<Rc<File>>,
}

#[derive(Default)]
struct Tracees {
    threads: HashMap<u32, Thread>,
    processes: HashMap<u32, Process>,
}

thread_local! {
    static CACHE: RefCell<Tracees> = RefCell::new(Tracees::default());
    /// Bumped per notification: an entry checked for this one is not polled again.
    static NOTIFICATION: Cell<u64> = const { Cell::new(1) };
}

/// A new notification is being handled: entries are checked again before use.
pub fn next_notification() {
    NOTIFICATION.with(|n| n.set(n.get().wrapping_add(1)));
}

/// Forgets everything (tests; and a supervisor that stops).
pub fn clear() {
    CACHE.with(|c| *c.borrow_mut() = Tracees::default());
}

/// The thread group (process) id of thread `tid`, remembered while the
/// thread lives.
pub fn tgid_of(tid: u32) -> io::Result<u32> {
    CACHE.with(|c| c.borrow_mut().tgid(tid))
}

/// The O_PATH handle on `/proc/TID/root` of `tid`'s process, opened once
/// per process by `open` (called with the `/proc` path).
pub fn root_of(
    tid: u32,
    open: impl FnOnce(&str) -> io::Result<OwnedFd>,
) -> io::Result<Rc<OwnedFd>> {
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let tgid = c.tgid(tid).ok()?;
        c.processes.get(&tgid).and_then(|p| p.root.clone())
    });
    if let Some(root) = cached {
        return Ok(root);
    }
    let root = Rc::new(open(&format!("/proc/{tid}/root"))?);
    CACHE.with(|c| c.borrow_mut().keep(tid, |p| p.root = Some(root.clone())));
    Ok(root)
}

/// Whether `tid`'s process has the supervisor thread's own root (the
/// same directory of the same mount): then an absolute path means the
/// same to both. Found once per process from `root` (its `/proc/TID/root`).
pub fn root_is_ours(tid: u32, root: &OwnedFd) -> bool {
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let tgid = c.tgid(tid).ok()?;
        c.processes.get(&tgid)?.root_is_ours
    });
    if let Some(same) = cached {
        return same;
    }
    let same = match (our_root(), mount_and_inode(root)) {
        (Some(a), Ok(b)) => a == b,
        _ => false,
    };
    CACHE.with(|c| c.borrow_mut().keep(tid, |p| p.root_is_ours = Some(same)));
    same
}

/// (mount id, device, inode) of a directory.
type DirId = (u64, u32, u32, u64);

thread_local! {
    /// This thread's own root, found once: agentd never changes its root,
    /// and a mount id is never reused while its mount is attached (the
    /// root's is for as long as agentd runs).
    static OUR_ROOT: Option<DirId> = super::sys::openat2(
        libc::AT_FDCWD,
        b"/",
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
    .and_then(|o| mount_and_inode(&o))
    .ok();
}

/// (mount id, device, inode) of this thread's root; `None` if unknown
/// (then no tracee's root is taken for ours).
fn our_root() -> Option<DirId> {
    OUR_ROOT.with(|r| *r)
}

/// (mount id, device, inode) of an fd.
fn mount_and_inode(fd: &OwnedFd) -> io::Result<DirId> {
    // SAFETY: statx fills a struct we own; the empty path names `fd` itself.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok((
        st.stx_mnt_id,
        st.stx_dev_major,
        st.stx_dev_minor,
        st.stx_ino,
    ))
}

/// Reads `buf.len()` bytes at `addr` of `tid`'s memory through the
/// process's `/proc/TID/mem` (opened once per address space by `open`).
/// `None` when no such handle can be had; the caller reads another way.
pub fn read_mem(
    tid: u32,
    addr: u64,
    buf: &mut [u8],
    open: impl Fn(&str) -> io::Result<OwnedFd>,
) -> Option<io::Result<usize>> {
    for _ in 0..2 {
        let mem = mem_of(tid, &open)?;
        match mem.read_at(buf, addr) {
            // Nothing read: the address space this handle names is gone
            // (the process exec'd behind our back): open it again.
            Ok(0) if !buf.is_empty() => forget_mem(tid),
            Ok(n) => return Some(Ok(n)),
            // An unmapped address (EIO from /proc/TID/mem) is the
            // caller's bad pointer, as process_vm_readv would say.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                return Some(Err(io::Error::from_raw_os_error(libc::EFAULT)))
            }
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

fn mem_of(tid: u32, open: &impl Fn(&str) -> io::Result<OwnedFd>) -> Option<Rc<File>> {
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let tgid = c.tgid(tid).ok()?;
        Some(c.processes.get(&tgid)?.mem.clone())
    })?;
    if let Some(m) = cached {
        return Some(m);
    }
    // A handle that cannot be opened (a process that made itself
    // non-dumpable, say) leaves the reading to the caller's other way.
    let mem = Rc::new(File::from(open(&format!("/proc/{tid}/mem")).ok()?));
    CACHE.with(|c| c.borrow_mut().keep(tid, |p| p.mem = Some(mem.clone())));
    Some(mem)
}

fn forget_mem(tid: u32) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(t) = c.threads.get(&tid).map(|t| t.tgid) {
            if let Some(p) = c.processes.get_mut(&t) {
                p.mem = None;
            }
        }
    });
}

/// Process `tgid` was let through an exec: its address space is about to
/// be replaced, so its memory handle is dropped.
pub fn exec_continued(tgid: u32) {
    CACHE.with(|c| {
        if let Some(p) = c.borrow_mut().processes.get_mut(&tgid) {
            p.mem = None;
        }
    });
}

impl Tracees {
    fn tgid(&mut self, tid: u32) -> io::Result<u32> {
        let now = NOTIFICATION.with(Cell::get);
        if let Some(t) = self.threads.get(&tid) {
            let tgid = t.tgid;
            if t.checked == now {
                return Ok(tgid);
            }
            let live = match &t.pidfd {
                Some(fd) => pidfd::alive(fd),
                None => self
                    .processes
                    .get(&tgid)
                    .is_some_and(|p| pidfd::alive(&p.pidfd)),
            };
            if live {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.checked = now;
                }
                // A live thread's process is alive: an entry evicted
                // for room is made again.
                if !self.processes.contains_key(&tgid) {
                    self.process(tgid, None);
                }
                return Ok(tgid);
            }
            self.threads.remove(&tid);
            if tid == tgid {
                self.processes.remove(&tgid);
            }
        }
        self.learn(tid, now)
    }

    /// A thread not seen yet (or whose entry was stale).
    fn learn(&mut self, tid: u32, now: u64) -> io::Result<u32> {
        // The pidfd first: what is read next belongs to the task it names
        // as long as that task is alive once the read is done.
        if let Some(pidfd) = pidfd::open(tid, 0) {
            // pidfd_open without PIDFD_THREAD succeeds only for a leader.
            self.process(tid, Some(pidfd));
            self.remember_thread(
                tid,
                Thread {
                    pidfd: None,
                    tgid: tid,
                    checked: now,
                },
            );
            return Ok(tid);
        }
        let pidfd = pidfd::open(tid, PIDFD_THREAD);
        let tgid = super::sys::tgid_from_status(tid)?;
        let Some(pidfd) = pidfd.filter(pidfd::alive) else {
            return Ok(tgid);
        };
        if self.process(tgid, None) {
            self.remember_thread(
                tid,
                Thread {
                    pidfd: Some(pidfd),
                    tgid,
                    checked: now,
                },
            );
        }
        Ok(tgid)
    }

    /// Makes sure a live entry for process `tgid` exists (a stale one is
    /// replaced); whether there is one.
    fn process(&mut self, tgid: u32, pidfd: Option<OwnedFd>) -> bool {
        if let Some(p) = self.processes.get(&tgid) {
            if pidfd::alive(&p.pidfd) {
                return true;
            }
            self.processes.remove(&tgid);
        }
        let Some(pidfd) = pidfd.or_else(|| pidfd::open(tgid, 0)) else {
            return false;
        };
        if self.processes.len() >= MAX_PROCESSES {
            self.processes.retain(|_, p| pidfd::alive(&p.pidfd));
            if self.processes.len() >= MAX_PROCESSES {
                self.processes.clear();
                self.threads.clear();
            }
        }
        self.processes.insert(
            tgid,
            Process {
                pidfd,
                root: None,
                root_is_ours: None,
                mem: None,
            },
        );
        true
    }

    fn remember_thread(&mut self, tid: u32, t: Thread) {
        if self.threads.len() >= MAX_THREADS {
            let processes = &self.processes;
            self.threads.retain(|_, t| match &t.pidfd {
                Some(fd) => pidfd::alive(fd),
                None => processes
                    .get(&t.tgid)
                    .is_some_and(|p| pidfd::alive(&p.pidfd)),
            });
            if self.threads.len() >= MAX_THREADS {
                self.threads.clear();
            }
        }
        self.threads.insert(tid, t);
    }

    /// Stores something in the entry of `tid`'s process (if it has one).
    fn keep(&mut self, tid: u32, f: impl FnOnce(&mut Process)) {
        let Some(tgid) = self.threads.get(&tid).map(|t| t.tgid) else {
            return;
        };
        if let Some(p) = self.processes.get_mut(&tgid) {
            f(p);
        }
    }
}

#[cfg(test)]
mod tests;
