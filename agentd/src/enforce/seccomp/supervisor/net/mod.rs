//! Sockets: unix `connect`/`sendto`/`bind` (path and abstract names) and
//! inbound TCP/UDP (`bind` to a fixed port, `listen`), decided by grant and
//! baseline. The filter cannot see a socket's family (an fd) or an
//! address (memory), so `connect`, `bind`, `listen` and addressed `sendto`
//! are notified; here the tracee's socket is duplicated (`pidfd_getfd`) and
//! its family read:
//!
//! - TCP/UDP `connect`/`sendto` run untouched (CONTINUE): the cgroup
//!   connect/sendmsg programs decide their destination in the kernel.
//! - unix `connect`/`sendto`: a path is resolved by agentd (the tracee's
//!   root and cwd, its credentials, no magic links) to the socket file
//!   itself and decided on *that file* (device+inode against the files
//!   `unix:/path` destinations name, or agentd's own sockets); an abstract
//!   name must be listed exactly (`unix:@name`). The supervisor then
//!   **performs** the operation on the duplicate with the address it copied
//!   (a path as `/proc/self/fd/N` of the handle it decided on), under the
//!   agent's uid and gid — never CONTINUE after reading a pointer a sibling
//!   thread could rewrite.
//! - unix `bind`: a path creates a socket file, decided like `mknod` on
//!   the real `parent/name` against write scopes and created relative to
//!   the pinned parent; an abstract name needs `unix:@name`; autobind runs.
//! - inbound: `bind` to a fixed IP port and `listen` on an IP socket need
//!   a `listen:PORT` rule (`listen:0`: any port); port-0 binds (clients)
//!   run. Both are performed here, so a socket swapped behind the decision
//!   changes nothing.
//!
//! Other families (netlink route) run untouched.
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::PathBuf;

use super::{
    metadata::{operand::resolve_entry, perform::adopt_umask},
    now_boot_ns, verdicts, Answer, Decided, Supervisor, Verdicts,
};
use crate::enforce::{
    claim,
    deputy::{self, DeputyPeer},
    grant::{Access, UnixTarget},
    seccomp::{caps, notif, resolve},
};

mod perform;
pub mod sockaddr;

use sockaddr::{display_abstract, parse, Addr, MAX_ADDR};

/// Syscalls decided here (`sendto` only with an address: the filter lets
/// the connected form run).
pub const SYSCALLS: &[(i64, &str)] = &[
    (libc::SYS_connect, "connect"),
    (libc::SYS_bind, "bind"),
    (libc::SYS_listen, "listen"),
    (libc::SYS_sendto, "sendto"),
];

/// Performs a socket operation under the agent's ids, as an answer.
type AsAgent<'a> = dyn Fn(&dyn Fn() -> std::io::Result<i64>) -> Answer + 'a;

/// Largest datagram the supervisor copies for an addressed unix `sendto`.
const MAX_SEND: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect,
    Bind,
    Listen,
    Sendto,
}

impl Op {
    fn action(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::Sendto => "sendto",
        }
    }
}

fn fail(e: i32) -> (Answer, Option<Decided>) {
    (Answer::Errno(e), None)
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn answer(r: std::io::Result<i64>) -> Answer {
    match r {
        Ok(v) => Answer::Value(v),
        Err(e) => Answer::Errno(errno(&e)),
    }
}

/// Decides `n` if it is a socket syscall handled here.
pub(super) fn decide(
    sup: &Supervisor,
    listener: &OwnedFd,
    n: &libc::seccomp_notif,
    bound: impl FnOnce(u32) -> Option<u64>,
) -> Option<(Answer, Option<Decided>)> {
    let op = match n.data.nr as i64 {
        libc::SYS_connect => Op::Connect,
        libc::SYS_bind => Op::Bind,
        libc::SYS_listen => Op::Listen,
        libc::SYS_sendto => Op::Sendto,
        _ => return None,
    };
    Some(handle(sup, listener, n, op, bound))
}

/// What one request carries, copied out of the tracee.
struct Request {
    op: Op,
    tid: u32,
    tgid: u32,
    sock: OwnedFd,
    addr: Vec<u8>,
    data: Vec<u8>,
    flags: i32,
    backlog: i32,
}

fn handle(
    sup: &Supervisor,
    listener: &OwnedFd,
    n: &libc::seccomp_notif,
    op: Op,
    bound: impl FnOnce(u32) -> Option<u64>,
) -> (Answer, Option<Decided>) {
    let tid = n.pid;
    let a = n.data.args;
    let Ok(tgid) = resolve::tgid_of(tid) else {
        return fail(libc::ESRCH);
    };
    let sock = match perform::tracee_socket(tid, tgid, a[0] as i32) {
        Ok(s) => s,
        Err(e) => return fail(errno(&e)),
    };
    let family = match perform::domain(&sock) {
        Ok(f) => f,
        Err(e) => return fail(errno(&e)),
    };
    let ip = matches!(family, libc::AF_INET | libc::AF_INET6);
    if family != libc::AF_UNIX && !ip {
        // netlink route: its own family's rules (agentd's filter let it be created).
        return (Answer::Continue, None);
    }
    if ip && matches!(op, Op::Connect | Op::Sendto) {
        // The cgroup connect/sendmsg programs decide IP destinations in the kernel.
        return (Answer::Continue, None);
    }
    let (addr, data) = match copy_arguments(tid, op, &a) {
        Ok(copies) => copies,
        Err(e) => return fail(e),
    };
    // The copies are only trusted if the task is still the one that asked.
    if !notif::id_valid(listener.as_fd(), n.id) {
        sup.stats
            .stale
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return fail(libc::ESRCH);
    }
    let req = Request {
        op,
        tid,
        tgid,
        sock,
        addr,
        data,
        flags: a[3] as i32,
        backlog: a[1] as i32,
    };
    let bound = bound(tgid);
    if ip {
        inbound(sup, &req, bound)
    } else {
        unix(sup, &req, bound)
    }
}

/// Copies the socket address (and, for sendto, the payload) out of the
/// tracee; an errno when either is too large or cannot be read in full.
fn copy_arguments(tid: u32, op: Op, a: &[u64; 6]) -> Result<(Vec<u8>, Vec<u8>), i32> {
    let (ptr, len) = match op {
        Op::Connect | Op::Bind => (a[1], a[2] as usize),
        Op::Sendto => (a[4], a[5] as usize),
        Op::Listen => (0, 0),
    };
    let mut addr = Vec::new();
    if op != Op::Listen {
        if len > MAX_ADDR {
            return Err(libc::EINVAL);
        }
        addr = vec![0u8; len];
        match notif::read_mem(tid, ptr, &mut addr) {
            Ok(got) if got == len => {}
            _ => return Err(libc::EFAULT),
        }
    }
    let mut data = Vec::new();
    if op == Op::Sendto {
        let size = a[2] as usize;
        if size > MAX_SEND {
            return Err(libc::EMSGSIZE);
        }
        data = vec![0u8; size];
        if size > 0 {
            match notif::read_mem(tid, a[1], &mut data) {
                Ok(got) if got == size => {}
                _ => return Err(libc::EFAULT),
            }
        }
    }
    Ok((addr, data))
}

/// A decision through the bound call, pending grants and the baseline.
fn judge(
    sup: &Supervisor,
    req: &Request,
    bound: Option<u64>,
    target: String,
    check: impl Fn(&crate::enforce::grant::KernelGrant) -> crate::enforce::grant::Verdict,
) -> (Decided, bool) {
    let Verdicts {
        allowed,
        reason,
        call,
        audit_only,
    } = verdicts(sup, req.tgid, bound, claim::Kind::Open, check);
    (
        Decided {
            action: req.op.action(),
            target,
            allowed,
            reason,
            call,
            access: None,
        },
        audit_only,
    )
}

/// bind to a fixed port and listen, on TCP/UDP sockets.
fn inbound(sup: &Supervisor, req: &Request, bound: Option<u64>) -> (Answer, Option<Decided>) {
    let port = match req.op {
        Op::Bind => match parse(&req.addr) {
            Addr::Inet { port: 0, .. } | Addr::Other | Addr::Unnamed => {
                // A client's ephemeral bind, or an address the kernel refuses itself.
                return (answer(perform::bind(&req.sock, &req.addr)), None);
            }
            Addr::Inet { port, .. } => port,
            Addr::Abstract(_) | Addr::Path(_) => return fail(libc::EINVAL),
        },
        Op::Listen => match perform::local_port(&req.sock) {
            Ok(p) => p,
            Err(e) => return fail(errno(&e)),
        },
        Op::Connect | Op::Sendto => return (Answer::Continue, None),
    };
    let now = now_boot_ns();
    let target = if port == 0 {
        "port 0 (ephemeral)".to_string()
    } else {
        format!("port {port}")
    };
    let (decided, audit_only) = judge(sup, req, bound, target, |g| g.check_inbound(port, now));
    if !decided.allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    let r = match req.op {
        Op::Bind => perform::bind(&req.sock, &req.addr),
        _ => perform::listen(&req.sock, req.backlog),
    };
    (answer(r), Some(decided))
}

/// Whether (dev, ino) is one of agentd's own listening sockets.
fn own_socket(dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    deputy::own_sockets()
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

fn unix(sup: &Supervisor, req: &Request, bound: Option<u64>) -> (Answer, Option<Decided>) {
    let (uid, gid) = (sup.creds.uid, sup.creds.gid);
    let as_agent = |f: &dyn Fn() -> std::io::Result<i64>| -> Answer {
        match caps::with_agent_ids(uid, gid, f) {
            Ok(r) => answer(r),
            Err(e) => {
                tracing::error!(agent = %sup.agent, error = %e, "cannot take the agent's ids for a socket operation; refused");
                Answer::Errno(libc::EPERM)
            }
        }
    };
    if req.op == Op::Listen {
        // The name was decided at bind; listening under the agent's ids
        // makes the socket's peer credentials the agent's, not root's.
        return (as_agent(&|| perform::listen(&req.sock, req.backlog)), None);
    }
    let now = now_boot_ns();
    let addr = parse(&req.addr);
    match (req.op, addr) {
        (_, Addr::Unnamed | Addr::Other | Addr::Inet { .. }) => {
            // Autobind, or an address the kernel refuses itself (EINVAL).
            let a = req.addr.clone();
            let r = match req.op {
                Op::Bind => as_agent(&|| perform::bind(&req.sock, &a)),
                Op::Connect => as_agent(&|| perform::connect(&req.sock, &a)),
                _ => as_agent(&|| perform::sendto(&req.sock, &req.data, req.flags, &a)),
            };
            (r, None)
        }
        (op, Addr::Abstract(name)) => {
            let target = UnixTarget::Abstract(name.clone());
            let (decided, audit_only) = judge(sup, req, bound, display_abstract(&name), |g| {
                g.check_unix(&target, now)
            });
            if !decided.allowed && !audit_only {
                return (Answer::Errno(libc::EPERM), Some(decided));
            }
            let a = req.addr.clone();
            let r = match op {
                Op::Bind => as_agent(&|| perform::bind(&req.sock, &a)),
                Op::Connect => as_agent(&|| perform::connect(&req.sock, &a)),
                _ => as_agent(&|| perform::sendto(&req.sock, &req.data, req.flags, &a)),
            };
            (r, Some(decided))
        }
        (Op::Bind, Addr::Path(path)) => {
            // A new socket file: decided like mknod, on the real parent/name.
            let entry = match resolve_entry(req.tid, req.tgid, resolve::AT_FDCWD, &path) {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            let real = entry.real.clone();
            let target = crate::enforce::grant::WriteTarget {
                real: &real,
                file: None,
                moves_name: false,
            };
            let v = super::write_verdicts(sup, req.tgid, bound, &target, |g| {
                g.check_path(&real, Access::Write, req.tgid, now)
            });
            let (decided, audit_only) = (
                Decided {
                    action: req.op.action(),
                    target: real.display().to_string(),
                    allowed: v.allowed,
                    reason: v.reason,
                    call: v.call,
                    access: None,
                },
                v.audit_only,
            );
            if !decided.allowed && !audit_only {
                return (Answer::Errno(libc::EPERM), Some(decided));
            }
            adopt_umask(req.tid);
            let r = as_agent(&|| perform::bind_in(&entry.parent, &req.sock, &entry.name));
            (r, Some(decided))
        }
        (op, Addr::Path(path)) => connect_path(sup, req, bound, op, &path, now, &as_agent),
    }
}

/// connect/sendto to a socket file: resolved, decided on the file itself,
/// performed through the handle that was decided on.
fn connect_path(
    sup: &Supervisor,
    req: &Request,
    bound: Option<u64>,
    op: Op,
    path: &[u8],
    now: u64,
    as_agent: &AsAgent<'_>,
) -> (Answer, Option<Decided>) {
    let (handle, real, dev, ino) = match socket_file(req, path) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    let own = own_socket(dev, ino);
    let (decided, audit_only) = if own {
        (
            Decided {
                action: op.action(),
                target: real.display().to_string(),
                allowed: true,
                reason: crate::protocol::reason::BASELINE,
                call: None,
                access: None,
            },
            false,
        )
    } else {
        let target = UnixTarget::File { dev, ino };
        judge(sup, req, bound, real.display().to_string(), |g| {
            g.check_unix(&target, now)
        })
    };
    if !decided.allowed && !audit_only {
        return (Answer::Errno(libc::EPERM), Some(decided));
    }
    let via = match perform::unix_path(format!("/proc/self/fd/{}", handle.as_raw_fd()).as_bytes()) {
        Ok(v) => v,
        Err(e) => return fail(errno(&e)),
    };
    if op == Op::Sendto {
        let r = as_agent(&|| perform::sendto(&req.sock, &req.data, req.flags, &via));
        return (r, Some(decided));
    }
    // agentd's own servers learn which agent process this connection is for.
    let name = if own {
        register_deputy_peer(sup, req, as_agent)
    } else {
        None
    };
    let r = as_agent(&|| perform::connect(&req.sock, &via));
    if let (Answer::Errno(_), Some(n)) = (&r, &name) {
        deputy::forget(n);
    }
    (r, Some(decided))
}

/// The socket file `path` names for the tracee: an O_PATH handle on it,
/// its real path, device and inode; the kernel's errno where it would fail
/// (`ECONNREFUSED` for a file that is not a socket).
fn socket_file(req: &Request, path: &[u8]) -> Result<(OwnedFd, PathBuf, u64, u64), i32> {
    let path = resolve::rewrite_proc_self(path, req.tgid, req.tid);
    let base = resolve::base(req.tid, resolve::AT_FDCWD, &path, 0).map_err(|e| errno(&e))?;
    let handle = resolve::openat2(
        base.fd.as_raw_fd(),
        &path,
        (libc::O_PATH | libc::O_CLOEXEC) as u64,
        0,
        base.resolve,
    )
    .map_err(|e| errno(&e))?;
    let st = resolve::fstat(&handle).map_err(|e| errno(&e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        // What the kernel answers for a file that is not a socket.
        return Err(libc::ECONNREFUSED);
    }
    let real = resolve::real_path(&handle).map_err(|e| errno(&e))?;
    Ok((handle, real, st.st_dev, st.st_ino))
}

/// Names the agent's socket (binding it to an autobind name if it has
/// none) and tells agentd's own servers which agent process will connect
/// from that name; the name, if there is one.
fn register_deputy_peer(
    sup: &Supervisor,
    req: &Request,
    as_agent: &AsAgent<'_>,
) -> Option<Vec<u8>> {
    let named = deputy::local_name(req.sock.as_raw_fd()).or_else(|| {
        let family = (libc::AF_UNIX as u16).to_ne_bytes();
        as_agent(&|| perform::bind(&req.sock, &family));
        deputy::local_name(req.sock.as_raw_fd())
    });
    if let Some(n) = &named {
        deputy::register(
            n.clone(),
            DeputyPeer {
                pid: req.tgid,
                uid: sup.creds.uid,
                gid: sup.creds.gid,
            },
        );
    }
    named
}
