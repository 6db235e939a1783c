//! Relaying one MCP session between the runtime-facing proxy and the
//! server agentd started, deciding each message on the way (`decide`). The
//! proxy only relays bytes: the server hears only what passed here, so a
//! tampered proxy cannot send it a call nobody approved.
//!
//! Ids: every request forwarded to the server gets a fresh numeric id of
//! ours (the client's id is restored on the answer), so duplicate client
//! ids, answers to ids nobody asked for, and late answers after a timeout
//! are caught here, not passed on.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::decide::{self, reason, ClientVerdict, ServerVerdict};
use super::framing::{self, code, Frame, Id, Message, Splitter};
use super::gate::{self, Gate};
use super::launch::Started;
use super::pins::PinStore;
use crate::gateway::{Caller, Gateway};

/// Requests in flight on one session.
pub const MAX_IN_FLIGHT: usize = 64;

/// A request forwarded to the server, awaiting its answer.
struct Pending {
    client_id: Id,
    method: String,
    deadline: Instant,
}

/// The relay's state.
struct Relay {
    gate: Gate,
    server: String,
    agent: String,
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
    /// Tools this session's `tools/list` showed with an approved definition.
    listed: HashSet<String>,
}

/// Runs the session until the client closes its side; then stops the
/// server and removes its run cgroup.
pub async fn relay<C>(
    started: Started,
    gateway: Arc<Gateway>,
    pins: Arc<PinStore>,
    client: C,
    max_message: usize,
) where
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
    let (client_rd, client_wr) = tokio::io::split(client);
    let (to_client, client_rx) = mpsc::channel::<Vec<u8>>(256);
    let client_writer = tokio::spawn(write_client(client_wr, client_rx));
    let stdin: Option<ChildStdin> = child.stdin.take();
    let stdout: Option<ChildStdout> = child.stdout.take();
    if let Some(stderr) = child.stderr.take() {
        let server = req.server.clone();
        tokio::spawn(log_stderr(server, stderr));
    }
    let (to_server, server_rx) = mpsc::channel::<Vec<u8>>(256);
    if let Some(stdin) = stdin {
        tokio::spawn(write_server(stdin, server_rx));
    }
    let mut r = Relay {
        gate: Gate {
            gateway,
            pins,
            server: req.server.clone(),
            agent: req.agent.clone(),
            active: req.active_message_id.clone(),
        },
        server: req.server.clone(),
        agent: req.agent.clone(),
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
        listed: HashSet::new(),
    };
    r.run(client_rd, stdout, max_message).await;
    tracing::info!(agent = %req.agent, server = %req.server, "MCP session closed by the client");
    // The relay's senders go first: the writers finish what they hold.
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

/// Writes the relay's lines to the client until the relay is done, then
/// shuts the client's side.
async fn write_client<W: AsyncWrite + Unpin>(
    mut client_wr: W,
    mut client_rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(line) = client_rx.recv().await {
        if client_wr.write_all(&line).await.is_err() {
            break;
        }
        let _ = client_wr.flush().await;
    }
    let _ = client_wr.shutdown().await;
}

/// Writes the relay's lines to the server's stdin until either ends.
async fn write_server(mut stdin: ChildStdin, mut server_rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = server_rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Lines of a server's stderr logged per session; the rest is read and
/// dropped (a chatty or hostile server must not flood agentd's log).
const MAX_STDERR_LINES: usize = 200;

async fn log_stderr(server: String, mut stderr: tokio::process::ChildStderr) {
    let mut buf = vec![0u8; 8192];
    let mut split = Splitter::new(4096);
    let mut logged = 0usize;
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for f in split.push(&buf[..n]) {
            if let Frame::Line(l) = f {
                logged += 1;
                if logged <= MAX_STDERR_LINES {
                    tracing::info!(server = %server, line = %String::from_utf8_lossy(&l), "MCP server stderr");
                } else if logged == MAX_STDERR_LINES + 1 {
                    tracing::warn!(server = %server, "MCP server stderr: more lines dropped");
                }
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

    /// Relays until the client closes its side: client and server frames
    /// as they arrive, and expired requests at their deadline.
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        mut client_rd: R,
        mut stdout: Option<ChildStdout>,
        max_message: usize,
    ) {
        let mut from_client = Splitter::new(max_message);
        let mut from_server = Splitter::new(max_message);
        let mut cbuf = vec![0u8; 64 * 1024];
        let mut sbuf = vec![0u8; 64 * 1024];
        loop {
            let next_deadline = self.in_flight.values().map(|p| p.deadline).min();
            tokio::select! {
                n = client_rd.read(&mut cbuf) => {
                    let n = match n { Ok(0) | Err(_) => break, Ok(n) => n };
                    for f in from_client.push(&cbuf[..n]) {
                        self.client_frame(f).await;
                    }
                }
                n = async { match stdout.as_mut() { Some(s) => s.read(&mut sbuf).await, None => std::future::pending().await } } => {
                    match n {
                        Ok(0) | Err(_) => { stdout = None; self.server_exited(); }
                        Ok(n) => for f in from_server.push(&sbuf[..n]) { self.server_frame(f).await; },
                    }
                }
                _ = async { match next_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    self.expire().await;
                }
            }
        }
    }

    async fn client_frame(&mut self, f: Frame) {
        let Some(msg) = self.parse_client(f).await else {
            return;
        };
        match decide::client_message(&self.server, &msg) {
            ClientVerdict::Forward => self.forward_client(msg).await,
            ClientVerdict::Decide { action, arguments } => {
                self.decide_client(msg, action, arguments).await
            }
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
            } => self.deny_client_call(&msg, action, reason, &detail).await,
            ClientVerdict::ToolCall {
                tool,
                action,
                arguments,
            } => self.tool_call(msg, &tool, action, arguments).await,
        }
    }

    /// A client frame's message; an over-long or unparsable one is
    /// answered with an error instead.
    async fn parse_client(&self, f: Frame) -> Option<Message> {
        let line = match f {
            Frame::Line(l) => l,
            Frame::TooLong { len } => {
                self.client_error(
                    None,
                    code::INVALID_REQUEST,
                    reason::MESSAGE_TOO_LARGE,
                    &format!("message of {len} bytes exceeds the size limit"),
                )
                .await;
                return None;
            }
        };
        match framing::parse(&line) {
            Ok(m) => Some(m),
            Err(e) => {
                self.client_error(e.id(), e.code(), reason::INVALID_MESSAGE, &e.to_string())
                    .await;
                None
            }
        }
    }

    /// A request the gateway decides before it is forwarded; a denial is
    /// answered with the gateway's refusal.
    async fn decide_client(&mut self, msg: Message, action: String, arguments: Map<String, Value>) {
        let Message::Request { id, .. } = &msg else {
            return;
        };
        let id = id.clone();
        let caller = self.caller();
        let d = self.gate.decide(action, arguments, caller).await;
        if d.is_allow() {
            self.forward_client(msg).await;
        } else {
            tracing::info!(server = %self.server, reason = %d.reason_code, "MCP message refused");
            self.send_client(&gate::refusal(&id, &d)).await;
        }
    }

    /// A call denied without asking the policy: recorded, and answered as
    /// a denied tool result.
    async fn deny_client_call(
        &mut self,
        msg: &Message,
        action: String,
        reason: &'static str,
        detail: &str,
    ) {
        let Message::Request { id, .. } = msg else {
            return;
        };
        let caller = self.caller();
        let d = self
            .gate
            .deny(action, Map::new(), caller, reason, detail)
            .await;
        self.send_client(&decide::denied_result(
            id,
            &d.reason_code,
            &d.detail,
            &d.call_id,
        ))
        .await;
    }

    /// A `tools/call`: decided (only tools this session saw listed with an
    /// approved definition can be allowed), then forwarded or answered as
    /// a denied tool result.
    async fn tool_call(
        &mut self,
        msg: Message,
        tool: &str,
        action: String,
        arguments: Map<String, Value>,
    ) {
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
        let caller = self.caller();
        let listed = self.listed.contains(tool);
        let unavailable = caller
            .pid
            .is_none()
            .then_some((reason::SERVER_EXITED, "the MCP server is not running"));
        let d = self
            .gate
            .tool_call(tool, action, arguments, caller, listed, unavailable)
            .await;
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

    /// Pins a `tools/list` result's definitions (see [`Gate::pin_tools`])
    /// and keeps this session's listed tools.
    async fn pin_tools(&mut self, raw: &mut Map<String, Value>) {
        let caller = self.caller();
        for (name, listed) in self.gate.pin_tools(raw, caller).await {
            if listed {
                self.listed.insert(name);
            } else {
                self.listed.remove(&name);
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

    /// Forwards a client message, giving a request an id of ours.
    async fn forward_client(&mut self, msg: Message) {
        match msg {
            Message::Request { id, method, raw } => self.forward_request(id, method, raw).await,
            Message::Notification { method, raw } => self.forward_notification(&method, raw).await,
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

    /// Forwards a client request under a fresh id of ours, remembering the
    /// client's; refused when its id is in flight, too many are, or the
    /// server is gone.
    async fn forward_request(&mut self, id: Id, method: String, mut raw: Map<String, Value>) {
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

    /// Forwards a client notification; a cancellation names the client's
    /// id, so it is rewritten to ours (and dropped if nothing matches).
    async fn forward_notification(&mut self, method: &str, mut raw: Map<String, Value>) {
        if method == "notifications/cancelled" {
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
                    self.pin_tools(&mut raw).await;
                    if let Some(clash) = gate::tool_collision(&self.server, &raw) {
                        return self
                            .client_error(
                                Some(&p.client_id),
                                code::INTERNAL_ERROR,
                                reason::TOOL_NAME_COLLISION,
                                &clash,
                            )
                            .await;
                    }
                    self.gate.filter_tools(&mut raw);
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
                let caller = self.caller();
                match self.gate.server_request(action, id, raw, caller).await {
                    None => self.forward_server_message(msg).await,
                    Some(refusal) => {
                        self.send_server(&refusal).await;
                    }
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
