//! The enforcement socket (`/run/agentd/enforce.sock`): the second transport
//! of the enforcement control plane ([`super::control`]: the same requests,
//! auth rule and refusals as the `/v1` enforcement routes). It exists for
//! what HTTP cannot carry: `agentctl run` hands agentd the seccomp listener
//! fd as SCM_RIGHTS, from a process about to become the agent (it also
//! creates the agent and joins its cgroup here); `agentctl exec` binds
//! itself to a call. The frame: one JSON [`Request`] per connection,
//! newline-ended, at most [`MAX_REQUEST`] bytes, in the first `sendmsg`
//! with the fd (if any) attached; one JSON [`Reply`] back, newline-ended.
//! Reads and writes have deadlines ([`Limits`]). The caller is identified
//! by SO_PEERCRED, never by what it claims.
//!
//! Also holds the launcher itself ([`run_agent`]), shared by `agentctl run`
//! and the scenario suite.
use std::{
    ffi::{CString, OsString},
    io::{IoSlice, IoSliceMut, Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::{
            ffi::OsStrExt as _,
            fs::PermissionsExt as _,
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use super::{
    conn_limit::{self, Limits},
    control::{self, AdminRule, Caller, Refusal},
    registry::Creds,
    Enforcer, Mode,
};
use crate::protocol::{reason, ErrorBody};

/// Default path of the enforcement socket.
pub const DEFAULT_SOCKET: &str = "/run/agentd/enforce.sock";

/// Largest request accepted (a request still arriving past it is cut there,
/// give or take one read, and then fails to parse).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Errors of the socket protocol and the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Connecting or talking to agentd failed.
    #[error("enforcement socket {path}: {message}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// agentd refused the request.
    #[error("agentd refused ({reason}): {message}")]
    Refused {
        /// Stable reason code.
        reason: String,
        /// Human message.
        message: String,
    },
    /// A local step of the launcher failed.
    #[error("{step}: {message}")]
    Local {
        /// Which step.
        step: &'static str,
        /// What failed.
        message: String,
    },
}

pub use super::control::Request;

/// The reply frame: `{"ok": true, "data"?: …}` or `{"ok": false, "error":
/// {"reason_code", "message"}}` (the API's error body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The refusal, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Result data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Reply {
    fn ok(data: Option<serde_json::Value>) -> Self {
        Reply {
            ok: true,
            error: None,
            data,
        }
    }
    fn err(reason_code: &str, message: impl ToString) -> Self {
        Reply {
            ok: false,
            error: Some(ErrorBody {
                reason_code: reason_code.into(),
                message: message.to_string(),
            }),
            data: None,
        }
    }
}

impl From<Result<Option<serde_json::Value>, Refusal>> for Reply {
    fn from(r: Result<Option<serde_json::Value>, Refusal>) -> Self {
        match r {
            Ok(data) => Reply::ok(data),
            Err(e) => Reply::err(&e.reason_code, e.message),
        }
    }
}

/// Starts serving the enforcement socket at `path` for agents running as
/// the default agent user (`agentd-agent`); see [`serve_for`].
pub fn serve(enforcer: Enforcer, path: &Path) -> std::io::Result<JoinHandle<()>> {
    serve_for(enforcer, path, DEFAULT_AGENT_USER, Limits::default())
}

/// [`serve_with`] with root as the only admin.
pub fn serve_for(
    enforcer: Enforcer,
    path: &Path,
    agent_user: &str,
    limits: Limits,
) -> std::io::Result<JoinHandle<()>> {
    serve_with(enforcer, path, agent_user, limits, control::root_only())
}

/// The agent user whose group may reach the enforcement socket by default.
pub const DEFAULT_AGENT_USER: &str = "agentd-agent";

/// Starts serving the enforcement socket at `path`: owner root, group the
/// primary group of `agent_user` (the group agents' users belong to),
/// mode 0660 — other local users cannot reach it (0600 when that user does
/// not exist). At most `limits.max_conns` connections are served at once,
/// one bounded handler thread each, `limits.max_unprivileged` of them for
/// callers other than root; each read and write has a deadline. A caller
/// over the limits gets `enforce_socket_busy` at once. Every request is
/// still authorised by the peer's credentials, under `admin` (the API's
/// rule, so both transports agree on who is an admin).
pub fn serve_with(
    enforcer: Enforcer,
    path: &Path,
    agent_user: &str,
    limits: Limits,
    admin: AdminRule,
) -> std::io::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    // Agents must reach this socket to bind tool runners (lsm gates unix connects).
    enforcer.allow_baseline_socket(&path.to_string_lossy());
    let listener = UnixListener::bind(path)?;
    let group = nix::unistd::User::from_name(agent_user)
        .ok()
        .flatten()
        .map(|u| u.gid);
    std::os::unix::fs::chown(path, Some(0), Some(group.map_or(0, |g| g.as_raw())))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let counter = std::sync::Arc::new(conn_limit::Counter::default());
    std::thread::Builder::new()
        .name("agentd-enforce-sock".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let uid = socket::getsockopt(&conn, socket::sockopt::PeerCredentials)
                    .map(|c| c.uid())
                    .unwrap_or(u32::MAX);
                let Some(slot) = conn_limit::admit(&counter, &limits, uid) else {
                    tracing::warn!(uid, open = conn_limit::open(&counter), "enforcement socket full; connection refused");
                    refuse_busy(conn);
                    continue;
                };
                let e = enforcer.clone();
                let admin = admin.clone();
                let _ = std::thread::Builder::new()
                    .name("agentd-enf-conn".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(err) = conn
                            .set_read_timeout(Some(limits.io_timeout))
                            .and_then(|_| conn.set_write_timeout(Some(limits.io_timeout)))
                        {
                            tracing::warn!(error = %err, "enforcement socket: cannot set timeouts; connection dropped");
                            return;
                        }
                        handle_conn(&e, &admin, conn, limits.request_deadline)
                    });
            }
        })
}

/// Answers a connection over the limits with `enforce_socket_busy`
/// without blocking the accept loop.
fn refuse_busy(mut conn: UnixStream) {
    let _ = conn.set_nonblocking(true);
    let reply = Reply::err(
        reason::ENFORCE_SOCKET_BUSY,
        "the enforcement socket is serving as many connections as it may; retry",
    );
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = conn.write_all(&out);
}

/// Reads one request: the first datagram-sized piece with its attached fd
/// (SCM_RIGHTS), then more until a newline ends it, the peer stops sending,
/// it reaches [`MAX_REQUEST`], or `deadline` passes. Public for the fuzz
/// target.
pub fn read_request(
    conn: &UnixStream,
    deadline: std::time::Instant,
) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            // A signal handled meanwhile (found by the enforce_request fuzz
            // target: libFuzzer's timer) is no reason to refuse the request.
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.map_err(|e| format!("recvmsg: {e}"))?,
        };
        let mut fd = None;
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for (i, raw) in fds.into_iter().enumerate() {
                    // SAFETY: the kernel installed these fds for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if i == 0 {
                        fd = Some(owned);
                    }
                }
            }
        }
        break (msg.bytes, fd);
    };
    buf.truncate(n);
    // The rest of the request, if it did not arrive in one piece.
    while !buf.ends_with(b"\n") && buf.len() < MAX_REQUEST {
        if std::time::Instant::now() > deadline {
            return Err("the request did not arrive in time".into());
        }
        let mut more = [0u8; 4096];
        let m = match (&*conn).read(&mut more) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.map_err(|e| e.to_string())?,
        };
        if m == 0 {
            break;
        }
        buf.extend_from_slice(&more[..m]);
    }
    Ok((buf, fd))
}

fn handle_conn(
    enforcer: &Enforcer,
    admin: &AdminRule,
    mut conn: UnixStream,
    request_deadline: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + request_deadline;
    let reply = match socket::getsockopt(&conn, socket::sockopt::PeerCredentials) {
        Err(e) => Reply::err(reason::PEER_UNKNOWN, e),
        Ok(cred) => match read_request(&conn, deadline) {
            Err(e) => Reply::err(reason::BAD_REQUEST, e),
            Ok((bytes, fd)) => match serde_json::from_slice::<Request>(&bytes) {
                Err(e) => Reply::err(reason::BAD_REQUEST, e),
                Ok(req) => {
                    // A connection the supervisor made for an agent is the agent's.
                    let peer = super::deputy::real_peer(
                        conn.as_raw_fd(),
                        cred.pid() as u32,
                        cred.uid(),
                        cred.gid(),
                    );
                    let caller = Caller {
                        pid: Some(peer.pid),
                        uid: Some(peer.uid),
                        admin: admin(peer.uid, peer.gid),
                    };
                    control::dispatch(enforcer, &caller, req, fd).into()
                }
            },
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    let _ = conn.write_all(&out);
}

/// Sends one request (with an optional fd) and waits for the reply.
pub fn request(
    socket_path: &Path,
    req: &Request,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Reply, LaunchError> {
    let sock_err = |message: String| LaunchError::Socket {
        path: socket_path.to_owned(),
        message,
    };
    let conn = UnixStream::connect(socket_path).map_err(|e| sock_err(e.to_string()))?;
    request_on(conn, socket_path, req, fd)
}

/// [`request`] on a connection made beforehand.
pub fn request_on(
    mut conn: UnixStream,
    socket_path: &Path,
    req: &Request,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Reply, LaunchError> {
    let sock_err = |message: String| LaunchError::Socket {
        path: socket_path.to_owned(),
        message,
    };
    let mut body = serde_json::to_vec(req).map_err(|e| sock_err(e.to_string()))?;
    body.push(b'\n');
    let raw: Vec<RawFd> = fd.map(|f| f.as_raw_fd()).into_iter().collect();
    let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    socket::sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&body)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| sock_err(format!("sendmsg: {e}")))?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out)
        .map_err(|e| sock_err(e.to_string()))?;
    let reply: Reply =
        serde_json::from_slice(&out).map_err(|e| sock_err(format!("bad reply: {e}")))?;
    Ok(reply)
}

/// [`request`], turning a refusal into an error.
pub fn call(
    socket_path: &Path,
    req: &Request,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Option<serde_json::Value>, LaunchError> {
    refusal(request(socket_path, req, fd)?)
}

/// [`call`] on a connection made beforehand.
pub fn call_on(
    conn: UnixStream,
    socket_path: &Path,
    req: &Request,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Option<serde_json::Value>, LaunchError> {
    refusal(request_on(conn, socket_path, req, fd)?)
}

fn refusal(reply: Reply) -> Result<Option<serde_json::Value>, LaunchError> {
    if reply.ok {
        Ok(reply.data)
    } else {
        let error = reply.error.unwrap_or(ErrorBody {
            reason_code: reason::INTERNAL_ERROR.into(),
            message: "refused without a reason".into(),
        });
        Err(LaunchError::Refused {
            reason: error.reason_code,
            message: error.message,
        })
    }
}

/// Finds an executable the way a shell would, without executing anything.
pub fn resolve_command(cmd: &std::ffi::OsStr) -> Option<PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        return std::fs::canonicalize(p).ok();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .and_then(|c| std::fs::canonicalize(c).ok())
}

/// Credentials of a user by name.
pub fn creds_of_user(name: &str) -> Result<Creds, LaunchError> {
    let local = |message: String| LaunchError::Local {
        step: "user lookup",
        message,
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| local(e.to_string()))?
        .ok_or_else(|| local(format!("no user `{name}`")))?;
    let cname = CString::new(name).map_err(|e| local(e.to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(|e| local(e.to_string()))?;
    Ok(Creds {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    })
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Enforcement socket.
    pub socket: PathBuf,
    /// Agent name.
    pub agent: String,
    /// Mode; `None` keeps the agent's current one.
    pub mode: Option<Mode>,
    /// User to run as.
    pub creds: Creds,
    /// Command and arguments.
    pub argv: Vec<OsString>,
}

/// `agentctl run`: create the agent, fork; the child starts its own session,
/// joins the cgroup, sets no_new_privs, installs the filter, hands the
/// listener to agentd, drops to the agent user, marks every fd above 2
/// close-on-exec and execs the command; the parent forwards SIGINT, SIGTERM,
/// SIGHUP and SIGQUIT to the agent's process group. Returns the child's exit code
/// (128 + signal when killed). Must be called from a single-threaded process.
pub fn run_agent(spec: &LaunchSpec) -> Result<i32, LaunchError> {
    let first = spec
        .argv
        .first()
        .ok_or_else(|| local("command")(&"empty command"))?;
    let path = resolve_command(first)
        .ok_or_else(|| local("command")(&format!("{} not found", first.to_string_lossy())))?;
    let created = call(
        &spec.socket,
        &Request::CreateAgent {
            agent: spec.agent.clone(),
            mode: spec.mode,
            command: Some(path.clone()),
            baseline: None,
        },
        None,
    )?;
    // The lsm backend needs no filter: its hooks see every process of the cgroup.
    let seccomp = created
        .as_ref()
        .and_then(|d| d.get("backend"))
        .and_then(|b| b.as_str())
        .is_none_or(|b| b == "seccomp");
    // Landlock scopes are fixed for the process tree's life, so they go on
    // only when the agent starts enforcing (an audit-only agent must run).
    let enforcing = created
        .as_ref()
        .and_then(|d| d.get("mode"))
        .and_then(|m| m.as_str())
        .is_none_or(|m| m == "enforce");
    // SAFETY: the launcher is single-threaded; the child only runs the steps below.
    match unsafe { libc::fork() } {
        -1 => Err(local("fork")(&std::io::Error::last_os_error())),
        0 => {
            let code = match child(spec, &path, seccomp, enforcing) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("agentctl run: {e}");
                    126
                }
            };
            // SAFETY: exit without running the parent's atexit handlers twice.
            unsafe { libc::_exit(code) }
        }
        pid => {
            forward_signals_to(pid);
            let mut status = 0;
            loop {
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid {
                    break;
                }
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return Err(local("waitpid")(&std::io::Error::last_os_error()));
                }
            }
            Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            })
        }
    }
}

enum Never {}

/// The agent's process group, for [`forward_signal`].
static AGENT_PGID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pgid = AGENT_PGID.load(std::sync::atomic::Ordering::Relaxed);
    if pgid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// The agent runs in its own session (no controlling terminal), so the
/// terminal's Ctrl-C and hangup reach only this launcher: pass them on to
/// the agent's process group.
fn forward_signals_to(pid: libc::pid_t) {
    AGENT_PGID.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing a handler that only calls kill().
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// What `LaunchError::Local` is built from in the child: the step that
/// failed and its error.
fn local(step: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LaunchError {
    move |e| LaunchError::Local {
        step,
        message: e.to_string(),
    }
}

/// The last OS error as a failed local step.
fn os_error(step: &'static str) -> LaunchError {
    local(step)(&std::io::Error::last_os_error())
}

/// The command and arguments as C strings, made before the filter goes on:
/// after it, an allocation is fine but an open would wait for a supervisor
/// that does not exist yet.
struct ExecImage {
    path: CString,
    args: Vec<CString>,
}

impl ExecImage {
    fn new(spec: &LaunchSpec, path: &Path) -> Result<Self, LaunchError> {
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|e| local("command")(&e))?;
        let args = spec
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| local("arguments")(&e))?;
        Ok(Self { path, args })
    }
}

fn child(
    spec: &LaunchSpec,
    path: &Path,
    seccomp: bool,
    enforcing: bool,
) -> Result<Never, LaunchError> {
    let image = ExecImage::new(spec, path)?;
    // A session of its own: the agent loses the caller's controlling
    // terminal, so it cannot push input into it (TIOCSTI) or signal the
    // caller's job through it.
    // SAFETY: setsid in the freshly forked child (never a group leader).
    if unsafe { libc::setsid() } < 0 {
        return Err(os_error("setsid"));
    }
    join_agent(spec, seccomp)?;
    if enforcing {
        landlock_scopes();
    }
    become_agent_and_exec(spec, &image)
}

/// Joins the agent's cgroup through agentd, sets no_new_privs and, under
/// seccomp, installs the filter and hands its listener to agentd.
fn join_agent(spec: &LaunchSpec, seccomp: bool) -> Result<(), LaunchError> {
    // The connection that will hand over the listener is made now, outside
    // the agent: once the filter is on, a connect would wait for the very
    // supervisor it is meant to start, and the agents' cgroup refuses unix
    // connects its processes make themselves.
    let handover = if seccomp {
        Some(
            UnixStream::connect(&spec.socket).map_err(|e| LaunchError::Socket {
                path: spec.socket.clone(),
                message: e.to_string(),
            })?,
        )
    } else {
        None
    };
    call(
        &spec.socket,
        &Request::Join {
            agent: spec.agent.clone(),
        },
        None,
    )?;
    // SAFETY: prctl on ourselves. no_new_privs for every backend: a setuid
    // binary must not lift the agent's privileges.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_error("no_new_privs"));
    }
    if let Some(handover) = handover {
        let listener =
            super::seccomp::filter::install().map_err(|e| local("seccomp filter")(&e))?;
        let req = Request::Listener {
            agent: spec.agent.clone(),
            creds: spec.creds.clone(),
        };
        // `call_on` allocates, which is fine (no opens, no connect).
        call_on(
            handover,
            &spec.socket,
            &req,
            Some(std::os::fd::AsFd::as_fd(&listener)),
        )?;
        // The agent must never hold its own listener (it could answer itself).
        drop(listener);
    }
    Ok(())
}

/// Drops to the agent user's credentials, closes every fd beyond stdio at
/// exec, and execs the command.
fn become_agent_and_exec(spec: &LaunchSpec, image: &ExecImage) -> Result<Never, LaunchError> {
    let mut argv: Vec<*const libc::c_char> = image.args.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let groups = &spec.creds.groups;
    // SAFETY: plain credential syscalls and execv in the single-threaded child.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(os_error("setgroups"));
        }
        if libc::setresgid(spec.creds.gid, spec.creds.gid, spec.creds.gid) != 0 {
            return Err(os_error("setresgid"));
        }
        if libc::setresuid(spec.creds.uid, spec.creds.uid, spec.creds.uid) != 0 {
            return Err(os_error("setresuid"));
        }
        // Only stdin, stdout and stderr cross into the agent: any other fd
        // the caller held (a terminal, a socket, agentd's files) is closed
        // at exec.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            return Err(os_error("close_range"));
        }
        libc::execv(image.path.as_ptr(), argv.as_ptr());
    }
    Err(os_error("exec"))
}

/// Landlock scopes (ABI 6, kernel ≥ 6.12) for the agent's process tree:
/// signals only to its own processes (`LANDLOCK_SCOPE_SIGNAL`: not agentd,
/// not another agent, not the caller) and abstract unix sockets only to
/// sockets its own processes created (`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`).
/// No file or network rights are handled: those stay agentd's decisions.
/// Where Landlock lacks scopes the launcher says so and goes on: the
/// supervisor's signal decisions still hold, without this backstop.
fn landlock_scopes() {
    const LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
    const LANDLOCK_SCOPE_SIGNAL: u64 = 2;
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL,
    };
    // SAFETY: landlock syscalls with a struct we own; no_new_privs is set.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        );
        if fd < 0 {
            eprintln!(
                "agentctl run: Landlock scopes unavailable ({}); signals and abstract sockets are decided by agentd alone",
                std::io::Error::last_os_error()
            );
            return;
        }
        let r = libc::syscall(libc::SYS_landlock_restrict_self, fd, 0);
        libc::close(fd as i32);
        if r != 0 {
            eprintln!(
                "agentctl run: Landlock restrict_self failed ({})",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// `agentctl exec --call ID -- CMD`: bind this process, then exec.
pub fn exec_bound(
    socket: &Path,
    call_id: &str,
    argv: &[OsString],
) -> Result<std::convert::Infallible, LaunchError> {
    let first = argv
        .first()
        .ok_or_else(|| local("command")(&"empty command"))?;
    let path = resolve_command(first)
        .ok_or_else(|| local("command")(&format!("{} not found", first.to_string_lossy())))?;
    call(
        socket,
        &Request::Bind {
            call_id: call_id.into(),
            pid: None,
        },
        None,
    )?;
    let err =
        std::os::unix::process::CommandExt::exec(std::process::Command::new(path).args(&argv[1..]));
    Err(local("exec")(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal arriving while agentd waits for a request (a handler without
    /// SA_RESTART, as libFuzzer's timer has) must not fail the request.
    #[test]
    fn a_signal_during_the_read_does_not_fail_the_request() {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        extern "C" fn ignore(_: libc::c_int) {}
        let sa = SigAction::new(
            SigHandler::Handler(ignore),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing.
        unsafe { sigaction(Signal::SIGUSR2, &sa) }.unwrap();
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            read_request(
                &rx,
                std::time::Instant::now() + std::time::Duration::from_secs(10),
            )
        });
        let tid = tid_rx.recv().unwrap();
        // Let the reader block in recvmsg, interrupt it, then send.
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: the thread is alive (it waits for our write).
        assert_eq!(unsafe { libc::pthread_kill(tid, libc::SIGUSR2) }, 0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        tx.write_all(b"{\"op\":\"list\"}\n").unwrap();
        let (bytes, fd) = reader.join().unwrap().expect("the request reads");
        assert_eq!(bytes, b"{\"op\":\"list\"}\n");
        assert!(fd.is_none());
        assert_eq!(
            serde_json::from_slice::<Request>(&bytes).unwrap(),
            Request::List
        );
    }

    /// The frame carries the request and the listener fd together: what
    /// `request_on` sends, `read_request` reads, fd included.
    #[test]
    fn a_request_and_its_fd_arrive_in_one_frame() {
        let (client, server) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let req = Request::Listener {
            agent: "mail".into(),
            creds: Creds {
                uid: 1000,
                gid: 1000,
                groups: vec![],
            },
        };
        let answer = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let (bytes, fd) = read_request(&server, deadline).unwrap();
            let got: Request = serde_json::from_slice(&bytes).unwrap();
            let reply = Reply::err(reason::PEER_NOT_IN_AGENT, "not in the agent");
            let mut out = serde_json::to_vec(&reply).unwrap();
            out.push(b'\n');
            (&server).write_all(&out).unwrap();
            (got, fd.is_some())
        });
        let reply = request_on(
            client,
            Path::new("/test"),
            &req,
            Some(std::os::fd::AsFd::as_fd(&r)),
        )
        .unwrap();
        let (got, had_fd) = answer.join().unwrap();
        assert_eq!(got, req);
        assert!(had_fd, "the listener fd rode along");
        // A refusal reads back as the API's error body, and as a LaunchError.
        let body = reply.error.clone().unwrap();
        assert_eq!(body.reason_code, "peer_not_in_agent");
        match refusal(reply).unwrap_err() {
            LaunchError::Refused { reason, message } => {
                assert_eq!(reason, "peer_not_in_agent");
                assert_eq!(message, "not in the agent");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn replies_have_one_shape_for_either_outcome() {
        let ok = serde_json::to_value(Reply::ok(Some(serde_json::json!({"id": 1})))).unwrap();
        assert_eq!(ok, serde_json::json!({"ok": true, "data": {"id": 1}}));
        let refused = Reply::from(Err::<Option<serde_json::Value>, _>(control::Refusal::new(
            control::RefusalKind::Forbidden,
            reason::NOT_ADMIN,
            "no",
        )));
        assert_eq!(
            serde_json::to_value(refused).unwrap(),
            serde_json::json!({"ok": false, "error": {"reason_code": "not_admin", "message": "no"}})
        );
        assert_eq!(refusal(Reply::ok(None)).unwrap(), None);
    }

    #[test]
    fn commands_resolve_like_a_shell_without_running() {
        let sh = resolve_command(std::ffi::OsStr::new("sh")).expect("sh on PATH");
        assert!(sh.is_absolute() && sh.is_file());
        assert_eq!(
            resolve_command(std::ffi::OsStr::new("/nonexistent/prog")),
            None
        );
        assert_eq!(
            resolve_command(std::ffi::OsStr::new("agentd-no-such-command-here")),
            None
        );
        let root = creds_of_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(matches!(
            creds_of_user("agentd-no-such-user"),
            Err(LaunchError::Local {
                step: "user lookup",
                ..
            })
        ));
    }
}
