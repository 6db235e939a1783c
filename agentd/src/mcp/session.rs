//! One MCP session: agentd starts the server (as the agent's user, in a run
//! cgroup of its own under the agent, scrubbed environment, through the
//! `agentctl run` launcher) and relays newline-delimited JSON-RPC between
//! it and the runtime-facing proxy, deciding each message on the way
//! (`decide`). The proxy only relays bytes: the server hears only what
//! passed here, so a tampered proxy cannot send it a call nobody approved.
//!
//! Ids: every request forwarded to the server gets a fresh numeric id of
//! ours (the client's id is restored on the answer), so duplicate client
//! ids, answers to ids nobody asked for, and late answers after a timeout
//! are caught here, not passed on.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::decide::{self, reason, ClientVerdict, ServerVerdict};
use super::framing::{self, code, Frame, Id, Message, Splitter};
use super::naming;
use crate::enforce::Enforcer;
use crate::gateway::{Caller, Gateway, ToolCallRequest};

/// Prefix of the run cgroups MCP servers live in (agentd alone names
/// cgroups; a process in one is an MCP server).
pub const LEAF_PREFIX: &str = "mcp-";
/// Longest a call may wait for the server, whatever the proxy asks.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Default wait for the server's answer.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests in flight on one session.
pub const MAX_IN_FLIGHT: usize = 64;
/// Environment the server gets (nothing of agentd's or the proxy's).
const SERVER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the proxy asks for (`POST /v1/mcp/stdio` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The agent whose server this is.
    pub agent: String,
    /// The server's name in actions (`mcp.<server>.<tool>`).
    pub server: String,
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// The runtime's active message (`AGENTD_ACTIVE_MESSAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_message_id: Option<String>,
    /// How long one call may wait for the server (ms; capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
}

/// Errors starting a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is malformed.
    #[error("bad MCP session request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The run cgroup could not be made.
    #[error("creating the MCP server's run cgroup: {0}")]
    Enforce(#[from] crate::enforce::EnforceError),
    /// The launcher could not start.
    #[error("starting the MCP server through {launcher}: {source}")]
    Spawn {
        /// The launcher path.
        launcher: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl SessionError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            SessionError::BadRequest { .. } => "bad_request",
            SessionError::Enforce(e) => e.reason_code(),
            SessionError::Spawn { .. } => "mcp_server_start_failed",
        }
    }
}

/// How agentd starts servers.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// `agentctl` (its `run` is the launcher).
    pub agentctl: PathBuf,
    /// The enforcement socket the launcher talks to.
    pub enforce_socket: PathBuf,
}

impl OpenRequest {
    /// Checks the request's shape.
    pub fn check(&self) -> Result<(), SessionError> {
        let bad = |detail: String| SessionError::BadRequest { detail };
        naming::check_server(&self.server).map_err(|e| bad(e.to_string()))?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(bad("empty server command".into()));
        }
        if self.command.len() > 256
            || self
                .command
                .iter()
                .any(|a| a.len() > 4096 || a.contains('\0'))
        {
            return Err(bad("server command too long or holding NUL".into()));
        }
        Ok(())
    }

    fn call_timeout(&self) -> Duration {
        self.call_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CALL_TIMEOUT)
            .clamp(Duration::from_millis(10), MAX_CALL_TIMEOUT)
    }
}

/// A started server, not yet relaying.
pub struct Started {
    req: OpenRequest,
    leaf: String,
    child: Child,
    cgroup: PathBuf,
    creds: crate::enforce::Creds,
    enforcer: Enforcer,
}

/// Whether `pid` is an MCP server started by agentd (its cgroup is an
/// `mcp-` run cgroup).
pub fn is_server_process(pid: u32) -> bool {
    crate::enforce::agent_cgroup::cgroup_of_pid(pid).is_some_and(|p| {
        p.rsplit('/')
            .next()
            .is_some_and(|leaf| leaf.starts_with(LEAF_PREFIX))
    })
}

/// Creates the server's run cgroup and starts it there through the
/// launcher, as `user`.
pub fn start(
    enforcer: &Enforcer,
    launcher: &Launcher,
    req: OpenRequest,
    user: &str,
) -> Result<Started, SessionError> {
    req.check()?;
    let creds =
        crate::enforce::launch::creds_of_user(user).map_err(|e| SessionError::BadRequest {
            detail: e.to_string(),
        })?;
    let leaf = format!("{LEAF_PREFIX}{}-{:08x}", req.server, rand::random::<u32>());
    let handle = enforcer.create_leaf(&req.agent, &leaf)?;
    let mut cmd = tokio::process::Command::new(&launcher.agentctl);
    cmd.arg("run")
        .args(["--agent", &req.agent, "--user", user])
        .arg("--socket")
        .arg(&launcher.enforce_socket)
        .arg("--run-cgroup")
        .arg(&handle.cgroup)
        .arg("--")
        .args(&req.command)
        .env_clear()
        .env("PATH", SERVER_PATH)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            let _ = enforcer.remove_leaf(&req.agent, &leaf);
            return Err(SessionError::Spawn {
                launcher: launcher.agentctl.clone(),
                source,
            });
        }
    };
    tracing::info!(agent = %req.agent, server = %req.server, leaf, "MCP server started");
    Ok(Started {
        req,
        leaf,
        child,
        cgroup: handle.cgroup,
        creds,
        enforcer: enforcer.clone(),
    })
}

impl Started {
    /// Stops a server whose session never began (the upgrade failed) and
    /// removes its run cgroup.
    pub async fn abandon(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let (enforcer, agent, leaf) = (self.enforcer, self.req.agent, self.leaf);
        let _ = tokio::task::spawn_blocking(move || enforcer.remove_leaf(&agent, &leaf)).await;
    }
}

/// A request forwarded to the server, awaiting its answer.
struct Pending {
    client_id: Id,
    method: String,
    deadline: Instant,
}

/// The relay's state.
struct Relay {
    gateway: Arc<Gateway>,
    server: String,
    agent: String,
    active: Option<String>,
    timeout: Duration,
    launcher_pid: Option<u32>,
    server_pid: Option<u32>,
    cgroup: PathBuf,
    creds: crate::enforce::Creds,
    to_client: mpsc::Sender<Vec<u8>>,
    to_server: Option<mpsc::Sender<Vec<u8>>>,
    next_id: i64,
    in_flight: HashMap<i64, Pending>,
    client_ids: HashSet<Id>,
    /// Server requests forwarded to the client: our id → the server's.
    server_requests: HashMap<String, Id>,
}

/// Runs the session until the client closes its side; then stops the
/// server and removes its run cgroup.
pub async fn relay<C>(started: Started, gateway: Arc<Gateway>, client: C, max_message: usize)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Started {
        req,
        leaf,
        mut child,
        cgroup,
        creds,
        enforcer,
    } = started;
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (to_client, mut client_rx) = mpsc::channel::<Vec<u8>>(256);
    let client_writer = tokio::spawn(async move {
        while let Some(line) = client_rx.recv().await {
            if client_wr.write_all(&line).await.is_err() {
                break;
            }
            let _ = client_wr.flush().await;
        }
        let _ = client_wr.shutdown().await;
    });
    let stdin: Option<ChildStdin> = child.stdin.take();
    let mut stdout: Option<ChildStdout> = child.stdout.take();
    if let Some(stderr) = child.stderr.take() {
        let server = req.server.clone();
        tokio::spawn(log_stderr(server, stderr));
    }
    let (to_server, mut server_rx) = mpsc::channel::<Vec<u8>>(256);
    if let Some(mut stdin) = stdin {
        tokio::spawn(async move {
            while let Some(line) = server_rx.recv().await {
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
    }
    let mut r = Relay {
        gateway,
        server: req.server.clone(),
        agent: req.agent.clone(),
        active: req.active_message_id.clone(),
        timeout: req.call_timeout(),
        launcher_pid: child.id(),
        server_pid: None,
        cgroup,
        creds,
        to_client,
        to_server: Some(to_server),
        next_id: 1,
        in_flight: HashMap::new(),
        client_ids: HashSet::new(),
        server_requests: HashMap::new(),
    };
    let mut from_client = Splitter::new(max_message);
    let mut from_server = Splitter::new(max_message);
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    loop {
        let next_deadline = r.in_flight.values().map(|p| p.deadline).min();
        tokio::select! {
            n = client_rd.read(&mut cbuf) => {
                let n = match n { Ok(0) | Err(_) => break, Ok(n) => n };
                for f in from_client.push(&cbuf[..n]) {
                    r.client_frame(f).await;
                }
            }
            n = async { match stdout.as_mut() { Some(s) => s.read(&mut sbuf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => { stdout = None; r.server_exited(); }
                    Ok(n) => for f in from_server.push(&sbuf[..n]) { r.server_frame(f).await; },
                }
            }
            _ = async { match next_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                r.expire().await;
            }
        }
    }
    tracing::info!(agent = %req.agent, server = %req.server, "MCP session closed by the client");
    drop(r);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = client_writer.await;
    let (agent, leaf2) = (req.agent.clone(), leaf.clone());
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = enforcer.remove_leaf(&agent, &leaf2) {
            tracing::warn!(agent, leaf = %leaf2, error = %e, "removing the MCP server's run cgroup failed");
        }
    })
    .await;
}

async fn log_stderr(server: String, mut stderr: tokio::process::ChildStderr) {
    let mut buf = vec![0u8; 8192];
    let mut split = Splitter::new(4096);
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for f in split.push(&buf[..n]) {
            if let Frame::Line(l) = f {
                tracing::info!(server = %server, line = %String::from_utf8_lossy(&l), "MCP server stderr");
            }
        }
    }
}

impl Relay {
    async fn send_client(&self, v: &Value) {
        let _ = self.to_client.send(framing::to_line(v)).await;
    }

    async fn send_server(&self, v: &Value) -> bool {
        match &self.to_server {
            Some(tx) => tx.send(framing::to_line(v)).await.is_ok(),
            None => false,
        }
    }

    async fn client_error(&self, id: Option<&Id>, code: i64, reason: &str, message: &str) {
        tracing::info!(server = %self.server, reason, message, "MCP message refused");
        self.send_client(&framing::error_response(id, code, reason, message))
            .await;
    }

    async fn client_frame(&mut self, f: Frame) {
        let line = match f {
            Frame::Line(l) => l,
            Frame::TooLong { len } => {
                return self
                    .client_error(
                        None,
                        code::INVALID_REQUEST,
                        reason::MESSAGE_TOO_LARGE,
                        &format!("message of {len} bytes exceeds the size limit"),
                    )
                    .await;
            }
        };
        let msg = match framing::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .client_error(e.id(), e.code(), reason::INVALID_MESSAGE, &e.to_string())
                    .await
            }
        };
        match decide::client_message(&self.server, &msg) {
            ClientVerdict::Forward => self.forward_client(msg).await,
            ClientVerdict::Refuse {
                code,
                reason,
                detail,
            } => {
                let id = match &msg {
                    Message::Request { id, .. } => Some(id.clone()),
                    _ => None,
                };
                self.client_error(id.as_ref(), code, reason, &detail).await
            }
            ClientVerdict::Drop { reason } => {
                tracing::info!(server = %self.server, reason, "MCP notification dropped");
            }
            ClientVerdict::DenyCall {
                action,
                reason,
                detail,
            } => {
                let Message::Request { id, .. } = &msg else {
                    return;
                };
                let req = self.call_request(action, Map::new());
                let caller = self.caller();
                let d = self
                    .gateway
                    .deny_and_record(&req, caller, reason, &detail)
                    .await;
                self.send_client(&decide::denied_result(
                    id,
                    &d.reason_code,
                    &d.detail,
                    &d.call_id,
                ))
                .await;
            }
            ClientVerdict::ToolCall {
                tool,
                action,
                arguments,
            } => {
                let Message::Request { id, .. } = &msg else {
                    return;
                };
                if self.client_ids.contains(id) {
                    return self
                        .client_error(
                            Some(id),
                            code::INVALID_REQUEST,
                            reason::DUPLICATE_ID,
                            "a request with this id is still in flight",
                        )
                        .await;
                }
                let req = self.call_request(action, arguments);
                let caller = self.caller();
                let d = match &self.active {
                    None => self
                        .gateway
                        .deny_and_record(
                            &req,
                            caller,
                            crate::protocol::reason::NO_ACTIVE_MESSAGE,
                            "the runtime has no active message (AGENTD_ACTIVE_MESSAGE is unset)",
                        )
                        .await,
                    Some(_) if caller.pid.is_none() => {
                        self.gateway
                            .deny_and_record(
                                &req,
                                caller,
                                reason::SERVER_EXITED,
                                "the MCP server is not running",
                            )
                            .await
                    }
                    Some(_) => self.gateway.tool_call(&req, caller).await,
                };
                tracing::info!(server = %self.server, tool = %tool, action = %d.action, decision = %d.decision, reason = %d.reason_code, call_id = %d.call_id, "MCP tool call decided");
                if d.is_allow() {
                    self.forward_client(msg).await;
                } else {
                    self.send_client(&decide::denied_result(
                        id,
                        &d.reason_code,
                        &d.detail,
                        &d.call_id,
                    ))
                    .await;
                }
            }
        }
    }

    /// The requesting process of every decision: the server itself, so an
    /// allowed call's grant is pending for the server's own tree.
    fn caller(&mut self) -> Caller {
        if self.server_pid.is_none() {
            self.server_pid = self.find_server_pid();
        }
        Caller {
            pid: self.server_pid,
            uid: Some(self.creds.uid),
            gid: Some(self.creds.gid),
            admin: false,
        }
    }

    /// The launcher's child in the run cgroup (the launcher forks once and
    /// the child execs the server, keeping its pid).
    fn find_server_pid(&self) -> Option<u32> {
        let launcher = self.launcher_pid?;
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).ok()?;
        procs
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .find(|p| crate::enforce::claim::ppid_of(*p) == Some(launcher))
    }

    fn call_request(&self, action: String, arguments: Map<String, Value>) -> ToolCallRequest {
        ToolCallRequest {
            active_message_id: self.active.clone().unwrap_or_default(),
            action,
            arguments,
            tool_use_id: None,
        }
    }

    /// Forwards a client message, giving a request an id of ours.
    async fn forward_client(&mut self, msg: Message) {
        match msg {
            Message::Request {
                id,
                method,
                mut raw,
            } => {
                if self.client_ids.contains(&id) {
                    return self
                        .client_error(
                            Some(&id),
                            code::INVALID_REQUEST,
                            reason::DUPLICATE_ID,
                            "a request with this id is still in flight",
                        )
                        .await;
                }
                if self.in_flight.len() >= MAX_IN_FLIGHT {
                    return self
                        .client_error(
                            Some(&id),
                            code::INTERNAL_ERROR,
                            reason::TOO_MANY_IN_FLIGHT,
                            "too many requests in flight",
                        )
                        .await;
                }
                if self.to_server.is_none() {
                    return self
                        .client_error(
                            Some(&id),
                            code::INTERNAL_ERROR,
                            reason::SERVER_EXITED,
                            "the MCP server has exited",
                        )
                        .await;
                }
                let ours = self.next_id;
                self.next_id += 1;
                raw.insert("id".into(), json!(ours));
                self.client_ids.insert(id.clone());
                self.in_flight.insert(
                    ours,
                    Pending {
                        client_id: id,
                        method,
                        deadline: Instant::now() + self.timeout,
                    },
                );
                self.send_server(&Value::Object(raw)).await;
            }
            Message::Notification { method, mut raw } => {
                if method == "notifications/cancelled" {
                    // The client names its own id; the server knows ours.
                    let theirs = raw
                        .get("params")
                        .and_then(|p| p.get("requestId"))
                        .and_then(Id::from_value);
                    let ours = theirs.and_then(|t| {
                        self.in_flight
                            .iter()
                            .find(|(_, p)| p.client_id == t)
                            .map(|(k, _)| *k)
                    });
                    let Some(ours) = ours else { return };
                    if let Some(Value::Object(p)) = raw.get_mut("params") {
                        p.insert("requestId".into(), json!(ours));
                    }
                }
                self.send_server(&Value::Object(raw)).await;
            }
            Message::Response { id, mut raw } => {
                // An answer to a server request we passed to the client.
                let key = match &id {
                    Id::Str(s) => s.clone(),
                    Id::Num(n) => n.to_string(),
                };
                let Some(server_id) = self.server_requests.remove(&key) else {
                    tracing::warn!(server = %self.server, ?id, "client answered an id the server never asked; dropped");
                    return;
                };
                raw.insert("id".into(), server_id.to_value());
                self.send_server(&Value::Object(raw)).await;
            }
        }
    }

    async fn server_frame(&mut self, f: Frame) {
        let Frame::Line(line) = f else {
            tracing::warn!(server = %self.server, "MCP server sent an over-long message; dropped");
            return;
        };
        let msg = match framing::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(server = %self.server, error = %e, "MCP server sent an invalid message; dropped");
                return;
            }
        };
        match decide::server_message(&self.server, &msg) {
            ServerVerdict::Response => {
                let Message::Response { id, mut raw } = msg else {
                    return;
                };
                let pending = match id {
                    Id::Num(n) => self.in_flight.remove(&n),
                    Id::Str(_) => None,
                };
                let Some(p) = pending else {
                    tracing::warn!(server = %self.server, ?id, "MCP server answered an id nobody asked (or one already timed out); dropped");
                    return;
                };
                self.client_ids.remove(&p.client_id);
                if p.method == "tools/list" {
                    if let Some(clash) = tool_collision(&self.server, &raw) {
                        return self
                            .client_error(
                                Some(&p.client_id),
                                code::INTERNAL_ERROR,
                                reason::TOOL_NAME_COLLISION,
                                &clash,
                            )
                            .await;
                    }
                }
                raw.insert("id".into(), p.client_id.to_value());
                self.send_client(&Value::Object(raw)).await;
            }
            ServerVerdict::Forward => {
                self.forward_server_message(msg).await;
            }
            ServerVerdict::Refuse { reason, detail } => {
                if let Message::Request { id, .. } = &msg {
                    self.send_server(&framing::error_response(
                        Some(id),
                        code::METHOD_NOT_FOUND,
                        reason,
                        &detail,
                    ))
                    .await;
                }
            }
            ServerVerdict::Decide { action } => {
                let Message::Request {
                    ref id, ref raw, ..
                } = msg
                else {
                    return;
                };
                let arguments = match raw.get("params") {
                    Some(Value::Object(p)) => p.clone(),
                    _ => Map::new(),
                };
                let req = self.call_request(action, arguments);
                let caller = self.caller();
                let d = match &self.active {
                    None => {
                        self.gateway
                            .deny_and_record(
                                &req,
                                caller,
                                crate::protocol::reason::NO_ACTIVE_MESSAGE,
                                "the runtime has no active message",
                            )
                            .await
                    }
                    Some(_) => self.gateway.tool_call(&req, caller).await,
                };
                if d.is_allow() {
                    self.forward_server_message(msg).await;
                } else {
                    self.send_server(&framing::error_response(
                        Some(id),
                        code::INVALID_REQUEST,
                        &d.reason_code,
                        &format!(
                            "agentd denied this request ({}): {}",
                            d.reason_code, d.detail
                        ),
                    ))
                    .await;
                }
            }
        }
    }

    async fn forward_server_message(&mut self, msg: Message) {
        match msg {
            Message::Request { id, mut raw, .. } => {
                let ours = format!("agentd-{}", self.next_id);
                self.next_id += 1;
                raw.insert("id".into(), json!(ours));
                self.server_requests.insert(ours, id);
                self.send_client(&Value::Object(raw)).await;
            }
            Message::Notification { raw, .. } => self.send_client(&Value::Object(raw)).await,
            Message::Response { .. } => {}
        }
    }

    /// The server's stdout closed: every request in flight fails, and so
    /// will every later one.
    fn server_exited(&mut self) {
        tracing::warn!(agent = %self.agent, server = %self.server, in_flight = self.in_flight.len(), "MCP server exited");
        self.to_server = None;
        let pending: Vec<Pending> = self.in_flight.drain().map(|(_, p)| p).collect();
        self.client_ids.clear();
        for p in pending {
            let v = framing::error_response(
                Some(&p.client_id),
                code::INTERNAL_ERROR,
                reason::SERVER_EXITED,
                "the MCP server exited before answering",
            );
            let _ = self.to_client.try_send(framing::to_line(&v));
        }
    }

    async fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<i64> = self
            .in_flight
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for ours in late {
            let Some(p) = self.in_flight.remove(&ours) else {
                continue;
            };
            self.client_ids.remove(&p.client_id);
            self.client_error(
                Some(&p.client_id),
                code::INTERNAL_ERROR,
                reason::SERVER_TIMEOUT,
                &format!(
                    "the MCP server did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            )
            .await;
            self.send_server(&json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": ours, "reason": "agentd: timed out"},
            }))
            .await;
        }
    }
}

/// Two tools of a `tools/list` result mapping to one action: the message
/// saying so, or None.
fn tool_collision(server: &str, raw: &Map<String, Value>) -> Option<String> {
    let tools = raw.get("result")?.get("tools")?.as_array()?;
    let mut seen: HashMap<String, &str> = HashMap::new();
    for t in tools {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Ok(action) = naming::action_of(server, name) else {
            continue;
        };
        if let Some(prev) = seen.insert(action.clone(), name) {
            if prev != name {
                return Some(format!(
                    "tools `{prev}` and `{name}` both map to `{action}`"
                ));
            }
        }
    }
    None
}
