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
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    thread::JoinHandle,
    time::Instant,
};

use agentd_common::maps;

use super::{notif, resolve};
use crate::enforce::{
    bpf_state::{open_pinned_hash, BindingsMap, ExecExpectMap},
    claim::{self, ClaimMaps},
    events::AuditTx,
    grant::{self, Verdict},
    registry::{Creds, Mode, Registry},
};

mod audit;
mod creds;
mod exec;
mod guarded;
pub mod metadata;
pub mod net;
mod open;
pub mod signal;
pub mod stop;

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
    /// Asks the thread to stop.
    pub stop: Arc<stop::Stop>,
    /// Ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
    pub sync_wakeup: bool,
    /// Shared counters.
    pub stats: Arc<SupervisorStats>,
    /// The instance's bpffs pin directory (maps are opened from there).
    pub pin_dir: PathBuf,
    /// Maps for claiming pending grants (this thread's own handles).
    /// `None` only where no pinned maps exist (the unit tests): then no
    /// pending grant can be claimed and the bound call and the baseline
    /// decide alone.
    pub claims: Mutex<Option<ClaimMaps>>,
}

/// Whether, and how, one notified syscall was answered.
enum Answer {
    Continue,
    Errno(i32),
    /// The syscall's return value (the supervisor performed it).
    Value(i64),
    AddFd(OwnedFd, bool),
}

/// What was decided, for the audit row.
#[derive(Debug)]
struct Decided {
    action: &'static str,
    target: String,
    allowed: bool,
    reason: &'static str,
    call: Option<u64>,
    /// `read` or `write` for file opens (what `agent learn` groups by).
    access: Option<&'static str>,
}

/// The syscall arguments that matter, decoded from seccomp_data.
#[derive(Debug, Clone, Copy)]
enum Call {
    Exec {
        dirfd: i32,
        path: u64,
        flags: u64,
        argv: u64,
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
            argv: a[1],
        })
    } else if nr == libc::SYS_execveat {
        Ok(Call::Exec {
            dirfd: a[0] as i32,
            path: a[1],
            flags: a[4],
            argv: a[2],
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
    creds::set_fs_creds(&sup.creds)?;
    super::caps::drop_to_deputy()?;
    tracing::info!(agent = %sup.agent, uid = sup.creds.uid, "supervisor running");
    let fd = listener.as_fd();
    loop {
        let received = {
            let _waiting = sup.stop.waiting();
            if sup.stop.is_requested() {
                return Ok(());
            }
            notif::recv(fd)
        };
        let n = match received {
            Ok(n) => n,
            // A stop request's signal; checked at the top.
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // The notification's task died before it was read, or no task
            // uses the filter any more (the listener then polls HUP).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if notif::hung_up(fd) {
                    tracing::info!(agent = %sup.agent, "every task of this listener has exited");
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        sup.stats.notifications.fetch_add(1, Ordering::Relaxed);
        super::tracee::next_notification();
        let started = Instant::now();
        // Every notification is answered, whatever fails below: a panic in
        // a decision becomes a refusal, and a failed injection becomes the
        // errno of that failure (an unanswered notification would hang the
        // agent's thread for ever).
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(sup, listener, &n, &bindings, &mut expect)
        }));
        let (answer, decided) = handled.unwrap_or_else(|_| {
            tracing::error!(agent = %sup.agent, nr = n.data.nr, "a decision panicked; refused");
            (
                Answer::Errno(libc::EPERM),
                Some(Decided {
                    action: "syscall",
                    target: format!("nr {}", n.data.nr),
                    allowed: false,
                    reason: crate::protocol::reason::ENFORCER_ERROR,
                    call: None,
                    access: None,
                }),
            )
        });
        // The row first: the answer lets the decision take effect.
        let answer = match &decided {
            Some(d) => audit::commit_then_answer(sup, &n, d, started, answer),
            None => answer,
        };
        if let Err(e) = answer_notification(fd, n.id, answer) {
            if e.raw_os_error() == Some(libc::ENOENT) {
                sup.stats.stale.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!(agent = %sup.agent, error = %e, "answering a notification failed; refused");
                if let Some(d) = decided {
                    audit::answer_failed(sup, &n, d, started);
                }
            }
        }
    }
}

/// Sends `answer`. When injecting the fd fails for any reason but the
/// task's death (ENOENT), the syscall is failed with that errno instead.
fn answer_notification(fd: BorrowedFd<'_>, id: u64, answer: Answer) -> io::Result<()> {
    match answer {
        Answer::Continue => notif::respond_continue(fd, id),
        Answer::Errno(e) => notif::respond_errno(fd, id, e),
        Answer::Value(v) => notif::respond_value(fd, id, v),
        Answer::AddFd(file, cloexec) => {
            match notif::addfd_send(fd, id, file.as_raw_fd(), cloexec) {
                Ok(_) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(e),
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    notif::respond_errno(fd, id, errno)?;
                    Err(e)
                }
            }
        }
    }
}

fn handle(
    sup: &Supervisor,
    listener: &OwnedFd,
    n: &libc::seccomp_notif,
    bindings: &BindingsMap,
    expect: &mut ExecExpectMap,
) -> (Answer, Option<Decided>) {
    if let Some(answered) = guarded::decide(sup, listener, n) {
        return answered;
    }
    if let Some(answered) = signal::decide(sup, n) {
        return answered;
    }
    if let Some(answered) = net::decide(sup, listener, n, |tgid| {
        bindings.get(&tgid, 0).ok().map(|b| b.call_id)
    }) {
        return answered;
    }
    if metadata::handles(n.data.nr as i64) {
        return metadata::handle(sup, listener, n, |tgid| {
            bindings.get(&tgid, 0).ok().map(|b| b.call_id)
        });
    }
    exec_or_open(sup, listener, n, bindings, expect)
}

/// An execve/execveat or open/openat/openat2/creat notification: its path
/// read from the tracee, then decided by `exec` or `open`.
fn exec_or_open(
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
    if let Call::Open { flags, .. } = call {
        if flags & libc::O_PATH as u64 != 0 {
            // Only openat2 gets here (the filter lets O_PATH open/openat run).
            // An O_PATH handle cannot be injected (ADDFD refuses it) and
            // `how` lives in memory the agent can rewrite, so CONTINUE is no
            // answer either: ENOSYS makes callers fall back to openat.
            return (Answer::Errno(libc::ENOSYS), None);
        }
    }
    let path = resolve::rewrite_proc_self(&raw, tgid, tid);
    let bound = bindings.get(&tgid, 0).ok().map(|b| b.call_id);
    match call {
        Call::Exec { flags, argv, .. } => {
            let read_argv = || read_argv(tid, argv);
            let req = exec::ExecRequest {
                tid,
                tgid,
                dirfd,
                path: &path,
                flags,
                bound,
            };
            exec::decide_exec(sup, &req, expect, &read_argv)
        }
        Call::Open {
            flags,
            mode,
            resolve,
            ..
        } => open::decide_open(
            sup,
            &open::OpenRequest {
                tid,
                tgid,
                dirfd,
                path: &path,
                flags,
                mode,
                resolve,
                bound,
            },
        ),
    }
}

/// Reads an exec's argv (at most 256 arguments of up to 4 KiB) from the tracee.
fn read_argv(tid: u32, argv: u64) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if argv == 0 {
        return Some(out);
    }
    for i in 0..256u64 {
        let mut ptr = [0u8; 8];
        if notif::read_mem(tid, argv + i * 8, &mut ptr).ok()? != 8 {
            return None;
        }
        let p = u64::from_ne_bytes(ptr);
        if p == 0 {
            return Some(out);
        }
        out.push(notif::read_cstring(tid, p, 4096).ok()?);
    }
    None
}

/// What [`verdicts`] decided for one operation.
struct Verdicts {
    /// Whether the operation may proceed (before the mode is applied).
    allowed: bool,
    /// Stable reason code.
    reason: &'static str,
    /// The grant that covered it (bound or claimed), if any.
    call: Option<u64>,
    /// The agent is audit-only: a denial is recorded, not enforced.
    audit_only: bool,
}

/// Verdicts of the bound call (if any), a pending grant the process
/// claims, and the baseline; and the mode. An exec claims a pending grant
/// before the baseline is asked (the claim binds the process to the call);
/// an open claims only what neither its bound call nor the baseline covers.
fn verdicts(
    sup: &Supervisor,
    tgid: u32,
    bound: Option<u64>,
    kind: claim::Kind<'_>,
    check: impl Fn(&grant::KernelGrant) -> Verdict,
) -> Verdicts {
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let Some(agent) = reg.agents.get(&sup.agent) else {
        // Fail closed: an agent we no longer know gets nothing.
        return Verdicts {
            allowed: false,
            reason: crate::protocol::reason::NO_GRANT,
            call: None,
            audit_only: false,
        };
    };
    let decided = settled(&reg, agent, bound, &check);
    let claim_first = matches!(kind, claim::Kind::Exec { .. });
    if decided.reason == crate::protocol::reason::GRANT_MATCHED || (decided.allowed && !claim_first)
    {
        return decided;
    }
    let audit_only = decided.audit_only;
    let mut maps = sup.claims.lock().unwrap_or_else(|p| p.into_inner());
    let claimed = match maps.as_mut() {
        Some(maps) => claim::claim(&reg, maps, agent, tgid, &check, kind),
        None => Err(claim::reason::NO_GRANT),
    };
    match claimed {
        Ok(handle) => Verdicts {
            allowed: true,
            reason: crate::protocol::reason::GRANT_MATCHED,
            call: Some(handle),
            audit_only,
        },
        Err(claim::reason::NO_GRANT) => decided,
        // The baseline still covers what a refused claim would have.
        Err(_) if decided.allowed => decided,
        Err(why) => Verdicts {
            allowed: false,
            reason: why,
            call: None,
            audit_only,
        },
    }
}

/// What the bound call (if any) and the baseline decide, and the mode —
/// without claiming anything (no side effect).
fn settled(
    reg: &Registry,
    agent: &crate::enforce::registry::AgentEntry,
    bound: Option<u64>,
    check: &impl Fn(&grant::KernelGrant) -> Verdict,
) -> Verdicts {
    let call = bound.and_then(|h| reg.call(h).map(|c| (h, check(&c.grant))));
    let base = check(&agent.baseline);
    let (allowed, reason) = grant::decide(call.map(|(_, v)| v), base);
    let used_call = call
        .filter(|_| reason != crate::protocol::reason::BASELINE)
        .map(|(h, _)| h);
    Verdicts {
        allowed,
        reason,
        call: used_call,
        audit_only: agent.mode == Mode::AuditOnly,
    }
}

/// An open the bound call or the baseline allows as it stands (no pending
/// grant to claim, no audit-only denial); `None` otherwise.
fn allowed_as_is(
    sup: &Supervisor,
    bound: Option<u64>,
    check: impl Fn(&grant::KernelGrant) -> Verdict,
) -> Option<Verdicts> {
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let agent = reg.agents.get(&sup.agent)?;
    Some(settled(&reg, agent, bound, &check)).filter(|v| v.allowed)
}

/// [`verdicts`] for a write to `target`: when it touches one of the
/// agent's protected files, only a grant naming that file as a protected
/// write (`protected_write`) may cover it — never the baseline, never a
/// grant whose write scope merely covers it — and a refusal says
/// `protected_file`.
fn write_verdicts(
    sup: &Supervisor,
    tgid: u32,
    bound: Option<u64>,
    target: &grant::WriteTarget<'_>,
    check: impl Fn(&grant::KernelGrant) -> Verdict,
) -> Verdicts {
    let hit = {
        let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.agents
            .get(&sup.agent)
            .and_then(|a| a.baseline.protected.hit(target).map(PathBuf::from))
    };
    let Some(hit) = hit else {
        return verdicts(sup, tgid, bound, claim::Kind::Open, check);
    };
    let mut v = verdicts(sup, tgid, bound, claim::Kind::Open, |g| {
        if g.may_write_protected(&hit, target.real) {
            check(g)
        } else {
            Verdict::NotCovered
        }
    });
    use crate::protocol::reason;
    if !v.allowed && matches!(v.reason, reason::NO_GRANT | reason::PATH_OUTSIDE_SCOPE) {
        v.reason = reason::PROTECTED_FILE;
    }
    v
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

#[cfg(test)]
mod protected_tests;
#[cfg(test)]
mod tests;

fn magic_link_denial(action: &'static str, path: &[u8]) -> (Answer, Option<Decided>) {
    (
        Answer::Errno(libc::EPERM),
        Some(Decided {
            action,
            target: resolve::display(path),
            allowed: false,
            reason: crate::protocol::reason::MAGIC_LINK_REFUSED,
            call: None,
            access: None,
        }),
    )
}
