//! Streamable HTTP: agentd as the local endpoint of configured upstream MCP
//! servers (`[mcp.servers.NAME] url`). An agent's MCP client posts to
//! `/mcp/NAME` on agentd's MCP socket or loopback port; each message is
//! classified by `decide` and decided by `gate`, exactly as on the stdio
//! path, and only what passed reaches the upstream. Answers come back as
//! JSON or as an SSE stream whose events are looked at one by one: a
//! `tools/list` result is pinned (changed tools taken out), a request the
//! server makes of the client (sampling, elicitation, roots) is decided,
//! and a denied one is answered to the server, never shown to the client.
//!
//! Both revisions: 2025-11-25 (`initialize`, `Mcp-Session-Id`; agentd
//! hands the client a session id of its own, bound to the caller's agent
//! and the server, and keeps the upstream's to itself) and 2026-07-28
//! (stateless; `revision` checks the `Mcp-Method`/`Mcp-Name` headers
//! against the body, and a disagreement is refused and audited).
//!
//! The caller is named by the listener (`api::mcp_http_routes`) from its
//! connection — SO_PEERCRED on the Unix socket, the connecting socket's
//! cgroup on loopback TCP — never from anything the caller sends. An
//! allowed call's grant is pending for the calling agent's process tree
//! (the upstream server is not on this host's leash; a local server the
//! kernel should hold runs through the stdio path).
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::decide::{self, ClientVerdict, ServerVerdict};
use super::framing::{self, code, Id, Message};
use super::gate::{self, Gate};
use super::naming;
use super::pins::PinStore;
use super::revision::{self, Headers};
use crate::config::McpConfig;
use crate::forward::sse;
use crate::gateway::{Caller, Gateway};
use crate::protocol::reason;

/// The header carrying the runtime's active-message id (as in forward mode).
pub const ACTIVE_MESSAGE_HEADER: &str = "x-agentd-active-message";
/// The session header of the 2025-11-25 revision.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The endpoint path prefix: server `NAME` is at `/mcp/NAME`.
pub const PATH_PREFIX: &str = "/mcp/";
/// Sessions agentd remembers at once (the least recently used goes first).
pub const MAX_SESSIONS: usize = 1024;
/// Request headers passed to the upstream (everything else stays here:
/// agentd's own, the session id it translates, hop-by-hop).
const PASSED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// Errors of this module's configuration.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// An upstream URL agentd cannot use.
    #[error("upstream URL `{url}`: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: &'static str,
    },
    /// An `https` upstream, and the CA certificates to trust cannot be read.
    #[error("TLS to the upstream MCP servers: {0}")]
    Tls(#[from] crate::upstream_tls::CaStoreError),
}

/// One upstream endpoint (`http://` or `https://host[:port]/path`).
#[derive(Debug, Clone)]
pub struct Upstream {
    uri: Uri,
}

impl Upstream {
    /// Parses and checks an upstream URL (`http` or `https`, with a host).
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let uri = crate::config::mcp_upstream_uri(url).map_err(bad)?;
        Ok(Self { uri })
    }
}

/// The caller of one request, as the listener named it.
#[derive(Debug, Clone)]
pub struct HttpCaller {
    /// The caller's agent.
    pub agent: String,
    /// Its process and ids (the requester of every decision).
    pub caller: Caller,
}

/// A session of the 2025-11-25 revision.
#[derive(Debug, Clone)]
struct Session {
    agent: String,
    server: String,
    /// The upstream's own session id.
    upstream: String,
    used: Instant,
}

/// The Streamable HTTP endpoint's state.
pub struct HttpGateway {
    gateway: Arc<Gateway>,
    pins: Arc<PinStore>,
    servers: HashMap<String, Upstream>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Tools each agent's listing of each server showed with an approved
    /// definition (the stateless revision has no session to keep them in).
    listed: Mutex<HashMap<(String, String), HashSet<String>>>,
    timeout: Duration,
    max_message: usize,
}

/// What the request is about (for the answer's treatment).
struct Exchange {
    gate: Gate,
    caller: Caller,
    /// The client's request (method, id), when the message is one.
    request: Option<(String, Id)>,
    /// Our session id, when the request has one (or opens one).
    session: Option<String>,
    /// The upstream's session id.
    upstream_session: Option<String>,
    /// `MCP-Protocol-Version` as sent.
    version: Option<HeaderValue>,
}

impl HttpGateway {
    /// The endpoint for `config`'s servers (their URLs were checked when
    /// the configuration loaded; a bad one here is refused again).
    pub fn new(
        gateway: Arc<Gateway>,
        pins: Arc<PinStore>,
        config: &McpConfig,
    ) -> Result<Self, HttpError> {
        let mut servers = HashMap::new();
        for (name, s) in &config.servers {
            servers.insert(name.clone(), Upstream::parse(&s.url)?);
        }
        // The CA bundle is read only when some upstream speaks TLS.
        let tls = if servers
            .values()
            .any(|u| u.uri.scheme_str() == Some("https"))
        {
            let mut c = crate::upstream_tls::client_config(&config.ca_file)?;
            // The connector sets ALPN itself (and refuses a config that has it).
            c.alpn_protocols.clear();
            c
        } else {
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::upstream_tls::CaStoreError {
                path: config.ca_file.clone(),
                message: e.to_string(),
            })?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            gateway,
            pins,
            servers,
            client: Client::builder(TokioExecutor::new()).build(connector),
            sessions: Mutex::new(HashMap::new()),
            listed: Mutex::new(HashMap::new()),
            timeout: Duration::from_secs(config.upstream_timeout_secs),
            max_message: config.max_message_bytes,
        })
    }

    /// Answers one request from `who` (Err: why the listener could not
    /// name the caller as an agent process; refused).
    pub async fn handle(
        self: &Arc<Self>,
        who: Result<HttpCaller, String>,
        req: Request<Body>,
    ) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let Some(server) = path
            .strip_prefix(PATH_PREFIX)
            .filter(|s| self.servers.contains_key(*s))
            .map(str::to_owned)
        else {
            let refusal = error(
                StatusCode::NOT_FOUND,
                None,
                code::INVALID_REQUEST,
                reason::MCP_UNKNOWN_SERVER,
                &format!("no MCP server is configured at {}", clip(&path)),
            );
            return after_reading(req, self.max_message, refusal).await;
        };
        let who = match who {
            Ok(w) => w,
            Err(why) => {
                tracing::warn!(server = %server, why = %why, "MCP HTTP caller refused");
                let refusal = error(
                    StatusCode::FORBIDDEN,
                    None,
                    code::INVALID_REQUEST,
                    reason::PERMISSION_DENIED,
                    &format!("only an agent's processes may use the MCP endpoint: {why}"),
                );
                return after_reading(req, self.max_message, refusal).await;
            }
        };
        let sid = header(req.headers(), SESSION_HEADER);
        let upstream_session = match &sid {
            None => None,
            Some(s) => match self.session(s, &who.agent, &server) {
                Some(up) => Some(up),
                None => {
                    let refusal = error(
                        StatusCode::NOT_FOUND,
                        None,
                        code::INVALID_REQUEST,
                        reason::MCP_UNKNOWN_SESSION,
                        "unknown MCP session (closed, expired or not this agent's); initialize a new one",
                    );
                    return after_reading(req, self.max_message, refusal).await;
                }
            },
        };
        let gate = Gate {
            gateway: self.gateway.clone(),
            pins: self.pins.clone(),
            server: server.clone(),
            agent: who.agent.clone(),
            active: header(req.headers(), ACTIVE_MESSAGE_HEADER).filter(|s| !s.is_empty()),
        };
        let ex = Exchange {
            gate,
            caller: who.caller,
            request: None,
            session: sid.clone(),
            upstream_session,
            version: req.headers().get("mcp-protocol-version").cloned(),
        };
        self.by_method(ex, req).await
    }

    /// The exchange by HTTP method: POST a message, GET the session's
    /// stream, DELETE the session; anything else is 405.
    async fn by_method(self: &Arc<Self>, ex: Exchange, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        if method == Method::POST {
            self.post(ex, req).await
        } else if method == Method::GET && ex.session.is_some() {
            self.get(ex, req).await
        } else if method == Method::DELETE && ex.session.is_some() {
            let resp = self.plain(&ex, Method::DELETE, req.headers()).await;
            if let Some(s) = &ex.session {
                self.lock_sessions().remove(s);
            }
            resp
        } else {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header("allow", "POST, GET, DELETE")
                .body(Body::empty())
                .unwrap_or_default()
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream session behind our session `sid`, if it is this
    /// agent's session with this server.
    fn session(&self, sid: &str, agent: &str, server: &str) -> Option<String> {
        let mut g = self.lock_sessions();
        let s = g.get_mut(sid)?;
        if s.agent != agent || s.server != server {
            return None;
        }
        s.used = Instant::now();
        Some(s.upstream.clone())
    }

    /// Opens a session for an upstream session id; returns ours.
    fn open_session(&self, agent: &str, server: &str, upstream: String) -> String {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let mut g = self.lock_sessions();
        if g.len() >= MAX_SESSIONS {
            if let Some(oldest) = g.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone()) {
                g.remove(&oldest);
            }
        }
        g.insert(
            id.clone(),
            Session {
                agent: agent.to_owned(),
                server: server.to_owned(),
                upstream,
                used: Instant::now(),
            },
        );
        id
    }

    async fn post(self: &Arc<Self>, mut ex: Exchange, req: Request<Body>) -> Response<Body> {
        let headers = req.headers().clone();
        let msg = match self.read_message(&ex, req).await {
            Ok(m) => m,
            Err(refusal) => return refusal,
        };
        if let Message::Request { id, method, .. } = &msg {
            ex.request = Some((method.clone(), id.clone()));
        }
        let routing = Headers {
            version: header(&headers, "mcp-protocol-version"),
            method: header(&headers, "mcp-method"),
            name: header(&headers, "mcp-name"),
        };
        let rev = match revision::check(&msg, &routing) {
            Ok(rev) => rev,
            Err(mm) => return self.mismatch(&ex, &msg, &mm).await,
        };
        self.answer(ex, msg, &headers, rev).await
    }

    /// The posted message (bounded), or the error answer when it is too
    /// large, unreadable or not JSON-RPC.
    async fn read_message(
        &self,
        ex: &Exchange,
        req: Request<Body>,
    ) -> Result<Message, Response<Body>> {
        let body = match read_limited(req.into_body(), self.max_message).await {
            Ok(b) => b,
            Err(Limited::TooLarge) => {
                return Err(ex.error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    code::INVALID_REQUEST,
                    reason::MCP_MESSAGE_TOO_LARGE,
                    &format!("message exceeds {} bytes", self.max_message),
                ))
            }
            Err(Limited::Failed(e)) => {
                return Err(ex.error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    reason::MCP_INVALID_MESSAGE,
                    &format!("reading the body: {e}"),
                ))
            }
        };
        framing::parse(&body).map_err(|e| {
            ex.error(
                StatusCode::BAD_REQUEST,
                e.id(),
                e.code(),
                reason::MCP_INVALID_MESSAGE,
                &e.to_string(),
            )
        })
    }

    /// Decides the message and answers: forwarded upstream when allowed,
    /// else a denied result, a refusal or an error, per its verdict.
    async fn answer(
        self: &Arc<Self>,
        ex: Exchange,
        msg: Message,
        headers: &HeaderMap,
        rev: revision::Revision,
    ) -> Response<Body> {
        match decide::client_message(&ex.gate.server, &msg) {
            ClientVerdict::Forward => self.forward(ex, msg, headers).await,
            ClientVerdict::ToolCall {
                tool,
                action,
                arguments,
            } => {
                let listed = self.is_listed(&ex, &tool);
                let d = ex
                    .gate
                    .tool_call(&tool, action, arguments, ex.caller, listed, None)
                    .await;
                if d.is_allow() {
                    return self.forward(ex, msg, headers).await;
                }
                denied_answer(&ex, &d, rev)
            }
            ClientVerdict::Decide { action, arguments } => {
                let d = ex.gate.decide(action, arguments, ex.caller).await;
                if d.is_allow() {
                    return self.forward(ex, msg, headers).await;
                }
                let Some((_, id)) = &ex.request else {
                    return accepted();
                };
                ex.json(StatusCode::OK, &gate::refusal(id, &d))
            }
            ClientVerdict::DenyCall {
                action,
                reason,
                detail,
            } => {
                let d = ex
                    .gate
                    .deny(action, Map::new(), ex.caller, reason, &detail)
                    .await;
                denied_answer(&ex, &d, rev)
            }
            ClientVerdict::Refuse {
                code: c,
                reason,
                detail,
            } => {
                let status = if c == code::METHOD_NOT_FOUND {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                let id = ex.request.as_ref().map(|r| r.1.clone());
                ex.error(status, id.as_ref(), c, reason, &detail)
            }
            ClientVerdict::Drop { reason } => {
                tracing::info!(server = %ex.gate.server, reason, "MCP notification dropped");
                accepted()
            }
        }
    }

    /// Whether this agent's session with this server saw the tool listed
    /// with an approved definition (only those are decided at all).
    fn is_listed(&self, ex: &Exchange, tool: &str) -> bool {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ex.gate.agent.clone(), ex.gate.server.clone()))
            .is_some_and(|l| l.contains(tool))
    }

    /// Refuses (and audits) a request whose routing headers disagree with
    /// its body.
    async fn mismatch(
        &self,
        ex: &Exchange,
        msg: &Message,
        mm: &revision::Mismatch,
    ) -> Response<Body> {
        let d = ex
            .gate
            .deny(
                action_of(&ex.gate.server, msg),
                Map::new(),
                ex.caller,
                reason::MCP_HEADER_MISMATCH,
                &mm.to_string(),
            )
            .await;
        tracing::warn!(server = %ex.gate.server, agent = %ex.gate.agent, call_id = %d.call_id, mismatch = %mm, "MCP request refused: headers disagree with the body");
        ex.error(
            StatusCode::BAD_REQUEST,
            ex.request.as_ref().map(|r| &r.1),
            revision::HEADER_MISMATCH_CODE,
            reason::MCP_HEADER_MISMATCH,
            &mm.to_string(),
        )
    }

    /// Sends the (decided) message upstream and relays the answer.
    async fn forward(
        self: &Arc<Self>,
        ex: Exchange,
        msg: Message,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let raw = match msg {
            Message::Request { raw, .. }
            | Message::Notification { raw, .. }
            | Message::Response { raw, .. } => raw,
        };
        // What was decided is what goes: the parsed body, re-encoded.
        let body = serde_json::to_vec(&Value::Object(raw)).unwrap_or_default();
        let resp = match self.upstream_request(&ex, Method::POST, headers, Bytes::from(body)) {
            Ok(up) => self.send(up).await,
            Err(why) => Err(why),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(why) => {
                return ex.error(
                    StatusCode::BAD_GATEWAY,
                    ex.request.as_ref().map(|r| &r.1),
                    code::INTERNAL_ERROR,
                    reason::MCP_UPSTREAM_FAILED,
                    &why,
                )
            }
        };
        let mut ex = ex;
        if ex.request.as_ref().is_some_and(|r| r.0 == "initialize") && resp.status().is_success() {
            if let Some(up) = header(resp.headers(), SESSION_HEADER) {
                let ours = self.open_session(&ex.gate.agent, &ex.gate.server, up.clone());
                tracing::info!(agent = %ex.gate.agent, server = %ex.gate.server, "MCP HTTP session opened");
                ex.session = Some(ours);
                ex.upstream_session = Some(up);
            }
        }
        self.relay_answer(ex, resp).await
    }

    /// `GET` (the session's server-to-client stream) or `DELETE`.
    async fn get(self: &Arc<Self>, ex: Exchange, req: Request<Body>) -> Response<Body> {
        let resp = match self.upstream_request(&ex, Method::GET, req.headers(), Bytes::new()) {
            Ok(up) => self.send(up).await,
            Err(why) => Err(why),
        };
        match resp {
            Ok(resp) => self.relay_answer(ex, resp).await,
            Err(why) => ex.error(
                StatusCode::BAD_GATEWAY,
                None,
                code::INTERNAL_ERROR,
                reason::MCP_UPSTREAM_FAILED,
                &why,
            ),
        }
    }

    /// A bodiless request passed on (DELETE), its status relayed.
    async fn plain(&self, ex: &Exchange, method: Method, headers: &HeaderMap) -> Response<Body> {
        let resp = match self.upstream_request(ex, method, headers, Bytes::new()) {
            Ok(up) => self.send(up).await,
            Err(why) => Err(why),
        };
        match resp {
            Ok(resp) => Response::builder()
                .status(resp.status())
                .body(Body::empty())
                .unwrap_or_default(),
            Err(why) => ex.error(
                StatusCode::BAD_GATEWAY,
                None,
                code::INTERNAL_ERROR,
                reason::MCP_UPSTREAM_FAILED,
                &why,
            ),
        }
    }

    fn upstream_request(
        &self,
        ex: &Exchange,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let up = self
            .servers
            .get(&ex.gate.server)
            .ok_or_else(|| format!("no MCP server `{}`", ex.gate.server))?;
        let mut b = Request::builder().method(method).uri(up.uri.clone());
        for name in PASSED_HEADERS {
            for v in headers.get_all(*name) {
                b = b.header(*name, v);
            }
        }
        if let Some(a) = up.uri.authority() {
            b = b.header("host", a.as_str());
        }
        if let Some(s) = &ex.upstream_session {
            b = b.header(SESSION_HEADER, s.as_str());
        }
        b.body(Full::new(body)).map_err(|e| e.to_string())
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("the upstream MCP server could not be reached: {e}")),
            Err(_) => Err(format!(
                "the upstream MCP server did not answer within {} s",
                self.timeout.as_secs()
            )),
        }
    }

    /// Relays the upstream's answer: JSON looked at whole, SSE event by
    /// event, anything else passed with its status.
    async fn relay_answer(
        self: &Arc<Self>,
        ex: Exchange,
        resp: Response<Incoming>,
    ) -> Response<Body> {
        let status = resp.status();
        let ctype = header(resp.headers(), "content-type").unwrap_or_default();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return ex
                .with_session(Response::builder().status(status))
                .body(Body::empty())
                .unwrap_or_default();
        }
        if ctype.starts_with("text/event-stream") && status.is_success() {
            let (tx, rx) = mpsc::channel::<Bytes>(64);
            let me = self.clone();
            let builder = ex
                .with_session(Response::builder().status(status))
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache");
            tokio::spawn(async move { me.relay_events(ex, resp.into_body(), tx).await });
            return builder
                .body(Body::new(ChannelBody { rx }))
                .unwrap_or_default();
        }
        let read = read_limited(resp.into_body(), sse::MAX_EVENT_BYTES);
        let body = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(b)) => b,
            _ => {
                return ex.error(
                    StatusCode::BAD_GATEWAY,
                    ex.request.as_ref().map(|r| &r.1),
                    code::INTERNAL_ERROR,
                    reason::MCP_UPSTREAM_FAILED,
                    "the upstream MCP server's answer could not be read",
                )
            }
        };
        if ctype.starts_with("application/json") {
            if let Ok(Message::Response { raw, .. }) = framing::parse(&body) {
                let out = self.server_answer(&ex, raw).await;
                return ex.json(status, &out);
            }
        }
        ex.with_session(Response::builder().status(status))
            .header("content-type", ctype)
            .body(Body::from(body))
            .unwrap_or_default()
    }

    /// The upstream's answer to the client's request, after pinning a
    /// `tools/list` result.
    async fn server_answer(&self, ex: &Exchange, mut raw: Map<String, Value>) -> Value {
        let Some((method, id)) = &ex.request else {
            return Value::Object(raw);
        };
        if method == "tools/list" && raw.contains_key("result") {
            let seen = ex.gate.pin_tools(&mut raw, ex.caller).await;
            {
                let mut g = self.listed.lock().unwrap_or_else(|p| p.into_inner());
                let set = g
                    .entry((ex.gate.agent.clone(), ex.gate.server.clone()))
                    .or_default();
                for (name, listed) in seen {
                    if listed {
                        set.insert(name);
                    } else {
                        set.remove(&name);
                    }
                }
            }
            if let Some(clash) = gate::tool_collision(&ex.gate.server, &raw) {
                return framing::error_response(
                    Some(id),
                    code::INTERNAL_ERROR,
                    reason::MCP_TOOL_NAME_COLLISION,
                    &clash,
                );
            }
            ex.gate.filter_tools(&mut raw);
        }
        Value::Object(raw)
    }

    /// Relays an SSE stream event by event (see the module's doc): an
    /// event kept as it is passes byte for byte.
    async fn relay_events(
        self: Arc<Self>,
        ex: Exchange,
        mut body: Incoming,
        tx: mpsc::Sender<Bytes>,
    ) {
        let mut parser = sse::Parser::new();
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(server = %ex.gate.server, error = %e, "MCP upstream stream failed");
                    break;
                }
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = match parser.push(&data) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(server = %ex.gate.server, error = %e, "MCP upstream stream refused");
                    break;
                }
            };
            for ev in events {
                if !self.relay_event(&ex, ev, &tx).await {
                    return;
                }
            }
        }
        // An event whose blank line ended in a CR that was the stream's
        // last byte is complete only now.
        for ev in parser.end() {
            if !self.relay_event(&ex, ev, &tx).await {
                return;
            }
        }
    }

    /// Relays one event; false once the client is gone.
    async fn relay_event(&self, ex: &Exchange, ev: sse::Event, tx: &mpsc::Sender<Bytes>) -> bool {
        let out = if ev.data.is_empty() {
            // Priming events (an id, no message) and comments.
            ev.raw
        } else {
            match self.event(ex, &ev.data).await {
                Relayed::Same => ev.raw,
                Relayed::Changed(data) => reencode(&ev, &data),
                Relayed::Withheld => return true,
            }
        };
        tx.send(Bytes::from(out)).await.is_ok()
    }

    /// Looks at one event's message.
    async fn event(&self, ex: &Exchange, data: &str) -> Relayed {
        let msg = match framing::parse(data.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(server = %ex.gate.server, error = %e, "MCP upstream sent an invalid message; dropped");
                return Relayed::Withheld;
            }
        };
        match decide::server_message(&ex.gate.server, &msg) {
            ServerVerdict::Response => {
                let Message::Response { raw, .. } = msg else {
                    return Relayed::Withheld;
                };
                let out = self.server_answer(ex, raw).await;
                Relayed::Changed(serde_json::to_string(&out).unwrap_or_default())
            }
            ServerVerdict::Forward => Relayed::Same,
            ServerVerdict::Refuse { reason, detail } => {
                if let Message::Request { id, .. } = &msg {
                    let err =
                        framing::error_response(Some(id), code::METHOD_NOT_FOUND, reason, &detail);
                    self.answer_server(ex, err);
                }
                Relayed::Withheld
            }
            ServerVerdict::Decide { action } => {
                let Message::Request { id, raw, .. } = &msg else {
                    return Relayed::Withheld;
                };
                match ex.gate.server_request(action, id, raw, ex.caller).await {
                    None => Relayed::Same,
                    Some(refusal) => {
                        self.answer_server(ex, refusal);
                        Relayed::Withheld
                    }
                }
            }
        }
    }

    /// Posts agentd's answer to a request the server made (off the stream).
    fn answer_server(&self, ex: &Exchange, answer: Value) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "accept",
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(v) = &ex.version {
            headers.insert("mcp-protocol-version", v.clone());
        }
        let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
        let Ok(req) = self.upstream_request(ex, Method::POST, &headers, body) else {
            return;
        };
        let client = self.client.clone();
        let server = ex.gate.server.clone();
        tokio::spawn(async move {
            if let Err(e) = client.request(req).await {
                tracing::warn!(server = %server, error = %e, "could not answer the MCP server's request");
            }
        });
    }
}

impl Exchange {
    fn with_session(&self, b: hyper::http::response::Builder) -> hyper::http::response::Builder {
        match &self.session {
            Some(s) => b.header(SESSION_HEADER, s.as_str()),
            None => b,
        }
    }

    fn json(&self, status: StatusCode, v: &Value) -> Response<Body> {
        self.with_session(Response::builder().status(status))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
            .unwrap_or_default()
    }

    fn error(
        &self,
        status: StatusCode,
        id: Option<&Id>,
        c: i64,
        reason: &str,
        message: &str,
    ) -> Response<Body> {
        tracing::info!(server = %self.gate.server, reason, message, "MCP HTTP request refused");
        self.json(status, &framing::error_response(id, c, reason, message))
    }
}

/// A JSON-RPC error answer outside any exchange.
fn error(
    status: StatusCode,
    id: Option<&Id>,
    c: i64,
    reason: &str,
    message: &str,
) -> Response<Body> {
    tracing::info!(reason, message, "MCP HTTP request refused");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::to_vec(&framing::error_response(id, c, reason, message))
                .unwrap_or_default(),
        ))
        .unwrap_or_default()
}

/// A denied call's answer: a tool result saying so, shaped for the
/// revision (a notification gets no answer).
fn denied_answer(
    ex: &Exchange,
    d: &crate::gateway::Decision,
    rev: revision::Revision,
) -> Response<Body> {
    let Some((_, id)) = &ex.request else {
        return accepted();
    };
    let mut answer = decide::denied_result(id, &d.reason_code, &d.detail, &d.call_id);
    revision::shape_result(rev, &mut answer);
    ex.json(StatusCode::OK, &answer)
}

fn accepted() -> Response<Body> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Body::empty())
        .unwrap_or_default()
}

/// The action a refused message is recorded under: a tool call's own,
/// else `mcp.<server>`.
fn action_of(server: &str, m: &Message) -> String {
    let fallback = format!("{}{server}", naming::ACTION_PREFIX);
    let Message::Request { method, raw, .. } = m else {
        return fallback;
    };
    if method != "tools/call" {
        return fallback;
    }
    raw.get("params")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .and_then(|t| naming::action_of(server, t).ok())
        .unwrap_or(fallback)
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Sends a refusal once the request's body is read (bounded in size and
/// time): answered before its body was read, a request's connection is
/// closed under a client still writing it, which then sees a broken pipe
/// instead of the refusal.
async fn after_reading(req: Request<Body>, max: usize, refusal: Response<Body>) -> Response<Body> {
    let read = read_limited(req.into_body(), max);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    refusal
}

enum Limited {
    TooLarge,
    Failed(String),
}

/// Reads a whole body of at most `max` bytes.
async fn read_limited<B>(mut body: B, max: usize) -> Result<Vec<u8>, Limited>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| Limited::Failed(e.to_string()))?;
        if let Ok(d) = f.into_data() {
            if out.len() + d.len() > max {
                return Err(Limited::TooLarge);
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out)
}

/// What becomes of one upstream event.
enum Relayed {
    /// Passed as the upstream sent it.
    Same,
    /// Passed with this message instead.
    Changed(String),
    /// Kept from the client.
    Withheld,
}

/// An event with its message replaced, keeping its name and `id:` line
/// (the client resumes from it).
fn reencode(ev: &sse::Event, data: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&ev.raw).lines() {
        if line.starts_with("id:") {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.extend(sse::render(&ev.event, data));
    out
}

/// A response body fed from a channel (the relayed SSE stream).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_http_or_https_with_a_host() {
        assert!(Upstream::parse("http://127.0.0.1:9000/mcp").is_ok());
        assert!(Upstream::parse("https://mcp.example.test/mcp").is_ok());
        for bad in ["ftp://x", "/mcp", "not a url", "https:///mcp"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_are_recorded_under_the_tool_s_action() {
        let m = framing::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
        .unwrap();
        assert_eq!(action_of("demo", &m), "mcp.demo.echo");
        let m = framing::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(action_of("demo", &m), "mcp.demo");
    }
}
