//! The seccomp supervisor: one thread per listener fd (one per `agentctl
//! run`), deciding the agent's exec and open syscalls.
//!
//! - open/openat/openat2/creat: the path is read from the tracee, resolved
//!   by agentd itself (O_PATH, no magic links, relative to the tracee's cwd
//!   or dirfd, under the agent's credentials), decided on the *real path* of
//!   what was resolved, then reopened from that handle and injected with
//!   SECCOMP_IOCTL_NOTIF_ADDFD — there is no second path lookup to race.
//! - execve/execveat: the target is resolved to device+inode and decided;
//!   an allowed exec is written to EXEC_EXPECT and CONTINUEd, and the
//!   tp_btf `sched_process_exec` program kills the task before its first
//!   instruction if the kernel ended up executing a different file.
//!
//! If this thread dies or agentd exits, the listener closes and every
//! notified syscall fails with ENOSYS: fail closed.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    thread::JoinHandle,
    time::Instant,
};

use agentd_common::{baseline_call_id, maps, ExecExpectation, FileId};

use super::{notif, resolve};
use crate::enforce::{
    bpf_state::{open_pinned_hash, BindingsMap, ExecExpectMap},
    events::{decision, AuditTx, KernelRecord},
    grant::{self, Access, Verdict},
    registry::{Creds, Mode, Registry},
};

/// Counters of one supervisor (or all, when shared).
#[derive(Debug, Default)]
pub struct SupervisorStats {
    /// Notifications received.
    pub notifications: AtomicU64,
    /// Syscalls allowed (including audit-only would-deny).
    pub allowed: AtomicU64,
    /// Syscalls denied.
    pub denied: AtomicU64,
    /// Notifications whose task was gone before a decision.
    pub stale: AtomicU64,
}

/// Everything a supervisor thread needs.
pub struct Supervisor {
    /// Agent the listener belongs to.
    pub agent: String,
    /// Credentials files are opened under.
    pub creds: Creds,
    /// Shared agent/grant registry.
    pub registry: Arc<RwLock<Registry>>,
    /// Audit writer.
    pub audit: AuditTx,
    /// Set to stop the thread (it polls).
    pub stop: Arc<AtomicBool>,
    /// Ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
    pub sync_wakeup: bool,
    /// Shared counters.
    pub stats: Arc<SupervisorStats>,
    /// The instance's bpffs pin directory (maps are opened from there).
    pub pin_dir: PathBuf,
}

/// Whether, and how, one notified syscall was answered.
enum Answer {
    Continue,
    Errno(i32),
    AddFd(OwnedFd, bool),
}

/// What was decided, for the audit row.
struct Decided {
    action: &'static str,
    target: String,
    allowed: bool,
    reason: &'static str,
    call: Option<u64>,
}

/// The syscall arguments that matter, decoded from seccomp_data.
#[derive(Debug, Clone, Copy)]
enum Call {
    Exec {
        dirfd: i32,
        path: u64,
        flags: u64,
    },
    Open {
        dirfd: i32,
        path: u64,
        flags: u64,
        mode: u64,
        resolve: u64,
    },
}

fn decode(pid: u32, data: &libc::seccomp_data) -> io::Result<Call> {
    let a = data.args;
    let nr = data.nr as i64;
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_open {
            return Ok(Call::Open {
                dirfd: resolve::AT_FDCWD,
                path: a[0],
                flags: a[1] & 0xffff_ffff,
                mode: a[2],
                resolve: 0,
            });
        }
        if nr == libc::SYS_creat {
            let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
            return Ok(Call::Open {
                dirfd: resolve::AT_FDCWD,
                path: a[0],
                flags,
                mode: a[1],
                resolve: 0,
            });
        }
    }
    if nr == libc::SYS_execve {
        Ok(Call::Exec {
            dirfd: resolve::AT_FDCWD,
            path: a[0],
            flags: 0,
        })
    } else if nr == libc::SYS_execveat {
        Ok(Call::Exec {
            dirfd: a[0] as i32,
            path: a[1],
            flags: a[4],
        })
    } else if nr == libc::SYS_openat {
        Ok(Call::Open {
            dirfd: a[0] as i32,
            path: a[1],
            flags: a[2] & 0xffff_ffff,
            mode: a[3],
            resolve: 0,
        })
    } else if nr == libc::SYS_openat2 {
        let size = std::mem::size_of::<libc::open_how>();
        if (a[3] as usize) < size {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut buf = [0u8; 24];
        if notif::read_mem(pid, a[2], &mut buf)? != size {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let word =
            |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        Ok(Call::Open {
            dirfd: a[0] as i32,
            path: a[1],
            flags: word(0),
            mode: word(1),
            resolve: word(2),
        })
    } else {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// Sets this thread's file-system credentials (raw syscalls: per thread,
/// unlike glibc's set*id wrappers that change every thread of agentd).
fn set_fs_creds(c: &Creds) -> io::Result<()> {
    // SAFETY: raw credential syscalls on the calling thread only.
    unsafe {
        if libc::syscall(libc::SYS_unshare, libc::CLONE_FS) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        // setfs*id return the previous value; read back to confirm.
        let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        if uid != c.uid || gid != c.gid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

/// Starts a supervisor thread for `listener`.
pub fn spawn(listener: OwnedFd, sup: Supervisor) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("agentd-sup-{}", sup.agent))
        .spawn(move || {
            if let Err(e) = run(&listener, &sup) {
                // Dropping the listener makes every pending and future
                // notified syscall fail: the agent is stopped, not freed.
                tracing::error!(agent = %sup.agent, error = %e, "supervisor stopped; notified syscalls now fail");
            }
        })
}

fn run(listener: &OwnedFd, sup: &Supervisor) -> io::Result<()> {
    let to_io = |e: crate::enforce::bpf_state::BpfStateError| io::Error::other(e.to_string());
    let bindings: BindingsMap = open_pinned_hash(&sup.pin_dir, maps::BINDINGS).map_err(to_io)?;
    let mut expect: ExecExpectMap =
        open_pinned_hash(&sup.pin_dir, maps::EXEC_EXPECT).map_err(to_io)?;
    if sup.sync_wakeup && !notif::set_sync_wakeup(listener.as_fd()) {
        tracing::debug!("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
    }
    set_fs_creds(&sup.creds)?;
    tracing::info!(agent = %sup.agent, uid = sup.creds.uid, "supervisor running");
    let fd = listener.as_fd();
    loop {
        if sup.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, 250) };
        if r <= 0 {
            continue;
        }
        if pfd.revents & libc::POLLIN == 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            tracing::info!(agent = %sup.agent, "every task of this listener has exited");
            return Ok(());
        }
        let n = match notif::recv(fd) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT)) => continue,
            Err(e) => return Err(e),
        };
        sup.stats.notifications.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (answer, decided) = handle(sup, listener, &n, &bindings, &mut expect);
        let result = match answer {
            Answer::Continue => notif::respond_continue(fd, n.id),
            Answer::Errno(e) => notif::respond_errno(fd, n.id, e),
            Answer::AddFd(file, cloexec) => {
                notif::addfd_send(fd, n.id, file.as_raw_fd(), cloexec).map(|_| ())
            }
        };
        if let Err(e) = result {
            if e.raw_os_error() == Some(libc::ENOENT) {
                sup.stats.stale.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!(error = %e, "answering a notification failed");
            }
        }
        if let Some(d) = decided {
            audit(sup, &n, d, started);
        }
    }
}

fn audit(sup: &Supervisor, n: &libc::seccomp_notif, d: Decided, started: Instant) {
    if d.allowed {
        sup.stats.allowed.fetch_add(1, Ordering::Relaxed);
    } else {
        sup.stats.denied.fetch_add(1, Ordering::Relaxed);
    }
    // Baseline allows (the loader reading libc, …) are counted, not logged row by row.
    if d.allowed && d.call.is_none() {
        return;
    }
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let audit_only = reg
        .agents
        .get(&sup.agent)
        .is_some_and(|a| a.mode == Mode::AuditOnly);
    let (call_id, active_message_id) = d
        .call
        .and_then(|h| reg.call(h))
        .map(|c| (c.call_id.clone(), c.active_message_id.clone()))
        .unwrap_or_default();
    drop(reg);
    let _ = sup.audit.send(KernelRecord {
        agent: sup.agent.clone(),
        call_id,
        active_message_id,
        action: d.action.into(),
        target: d.target,
        decision: decision(d.allowed, audit_only),
        reason_code: d.reason.into(),
        pid: n.pid,
        latency_us: started.elapsed().as_micros() as u64,
    });
}

fn handle(
    sup: &Supervisor,
    listener: &OwnedFd,
    n: &libc::seccomp_notif,
    bindings: &BindingsMap,
    expect: &mut ExecExpectMap,
) -> (Answer, Option<Decided>) {
    let tid = n.pid;
    let call = match decode(tid, &n.data) {
        Ok(c) => c,
        Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
    };
    let (path_ptr, dirfd) = match call {
        Call::Exec { path, dirfd, .. } | Call::Open { path, dirfd, .. } => (path, dirfd),
    };
    let raw = match notif::read_cstring(tid, path_ptr, libc::PATH_MAX as usize) {
        Ok(p) => p,
        Err(e) => {
            return (
                Answer::Errno(e.raw_os_error().unwrap_or(libc::EFAULT)),
                None,
            )
        }
    };
    let tgid = match resolve::tgid_of(tid) {
        Ok(t) => t,
        Err(_) => return (Answer::Errno(libc::ESRCH), None),
    };
    // The memory and /proc reads above are only trusted if the task is still
    // the one that made the call.
    if !notif::id_valid(listener.as_fd(), n.id) {
        sup.stats.stale.fetch_add(1, Ordering::Relaxed);
        return (Answer::Errno(libc::ESRCH), None);
    }
    let path = resolve::rewrite_proc_self(&raw, tgid, tid);
    let bound = bindings.get(&tgid, 0).ok().map(|b| b.call_id);
    match call {
        Call::Exec { flags, .. } => decide_exec(sup, tid, tgid, dirfd, &path, flags, bound, expect),
        Call::Open {
            flags,
            mode,
            resolve,
            ..
        } => decide_open(sup, tid, tgid, dirfd, &path, flags, mode, resolve, bound),
    }
}

/// Verdicts of the bound call (if any) and the baseline, and the mode.
fn verdicts(
    sup: &Supervisor,
    bound: Option<u64>,
    check: impl Fn(&grant::KernelGrant) -> Verdict,
) -> (bool, &'static str, Option<u64>, bool) {
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let Some(agent) = reg.agents.get(&sup.agent) else {
        // Fail closed: an agent we no longer know gets nothing.
        return (false, "no_grant", None, false);
    };
    let call = bound.and_then(|h| reg.call(h).map(|c| (h, check(&c.grant))));
    let base = check(&agent.baseline);
    let (allowed, reason) = grant::decide(call.map(|(_, v)| v), base);
    let used_call = call.filter(|_| reason != "baseline").map(|(h, _)| h);
    (allowed, reason, used_call, agent.mode == Mode::AuditOnly)
}

fn now_boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Boot-clock nanoseconds, the clock grant expiries use.
pub fn boot_ns() -> u64 {
    now_boot_ns()
}

fn lookup_dir(tid: u32, dirfd: i32, path: &[u8]) -> io::Result<Option<OwnedFd>> {
    if path.first() == Some(&b'/') {
        Ok(None)
    } else {
        resolve::tracee_dir(tid, dirfd).map(Some)
    }
}

fn magic_link_denial(action: &'static str, path: &[u8]) -> (Answer, Option<Decided>) {
    (
        Answer::Errno(libc::EPERM),
        Some(Decided {
            action,
            target: resolve::display(path),
            allowed: false,
            reason: "magic_link_refused",
            call: None,
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn decide_exec(
    sup: &Supervisor,
    tid: u32,
    tgid: u32,
    dirfd: i32,
    path: &[u8],
    flags: u64,
    bound: Option<u64>,
    expect: &mut ExecExpectMap,
) -> (Answer, Option<Decided>) {
    let target_fd = if path.is_empty() && flags & libc::AT_EMPTY_PATH as u64 != 0 {
        resolve::tracee_dir(tid, dirfd)
    } else {
        let base = match lookup_dir(tid, dirfd, path) {
            Ok(b) => b,
            Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
        };
        let mut oflags = libc::O_PATH | libc::O_CLOEXEC;
        if flags & libc::AT_SYMLINK_NOFOLLOW as u64 != 0 {
            oflags |= libc::O_NOFOLLOW;
        }
        let dir = base.as_ref().map_or(resolve::AT_FDCWD, |b| b.as_raw_fd());
        resolve::openat2(dir, path, oflags as u64, 0, libc::RESOLVE_NO_MAGICLINKS)
    };
    let file = match target_fd {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && path.starts_with(b"/proc/") => {
            return magic_link_denial("exec", path)
        }
        Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
    };
    let st = match resolve::fstat(&file) {
        Ok(st) => st,
        Err(e) => return (Answer::Errno(e.raw_os_error().unwrap_or(libc::EPERM)), None),
    };
    let target = resolve::real_path(&file)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| resolve::display(path));
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return (Answer::Errno(libc::EACCES), None);
    }
    let id = FileId {
        dev: grant::kernel_dev(st.st_dev),
        ino: st.st_ino,
    };
    let now = now_boot_ns();
    let (allowed, reason, call, audit_only) = verdicts(sup, bound, |g| g.check_exec(id, now));
    // Exec targets are not path scopes: an exec no grant names is `no_grant`
    // whether or not the process is bound (as in the lsm backend).
    let reason = if reason == "path_outside_scope" {
        "no_grant"
    } else {
        reason
    };
    let decided = Decided {
        action: "exec",
        target,
        allowed,
        reason,
        call,
    };
    if !allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    let agent_id = sup
        .registry
        .read()
        .ok()
        .and_then(|r| r.agents.get(&sup.agent).map(|a| a.id))
        .unwrap_or(0);
    let exp = ExecExpectation {
        file: id,
        call_id: call.unwrap_or_else(|| baseline_call_id(agent_id)),
    };
    if let Err(e) = expect.insert(tgid, exp, 0) {
        // Fail closed: without the expectation the kernel check would kill
        // the exec anyway; refuse it cleanly instead.
        tracing::error!(error = %e, "EXEC_EXPECT update failed");
        return (
            Answer::Errno(libc::EPERM),
            Some(Decided {
                allowed: false,
                reason: "enforcer_error",
                ..decided
            }),
        );
    }
    (Answer::Continue, Some(decided))
}

#[allow(clippy::too_many_arguments)]
fn decide_open(
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
    let base = match lookup_dir(tid, dirfd, path) {
        Ok(b) => b,
        Err(e) => return errno(e),
    };
    let dir = base.as_ref().map_or(resolve::AT_FDCWD, |b| b.as_raw_fd());
    let resolve_flags = user_resolve | libc::RESOLVE_NO_MAGICLINKS;
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
            let real = match resolve::real_path(&handle) {
                Ok(p) => p,
                Err(e) => return errno(e),
            };
            let (allowed, reason, call, audit_only) =
                verdicts(sup, bound, |g| g.check_path(&real, access, tgid, now));
            let decided = Decided {
                action: "file_open",
                target: real.display().to_string(),
                allowed,
                reason,
                call,
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
    let (allowed, reason, call, audit_only) = verdicts(sup, bound, |g| {
        g.check_path(&real, Access::Write, tgid, now)
    });
    let decided = Decided {
        action: "file_open",
        target: real.display().to_string(),
        allowed,
        reason,
        call,
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
        resolve_flags | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH,
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
