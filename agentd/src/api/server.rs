//! Routes, handlers and the connection loop. Handlers are thin: permission
//! check, parse, call the gateway, map the result to JSON.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tower::ServiceExt;

use super::json::{ApiError, BodyLimit, JsonBody};
use super::peer::{Access, Peer};
use crate::audit::{AuditEvent, RecordKind};
use crate::gateway::{
    Caller, Decision, Gateway, GatewayError, IngestOutcome, OperatorInfo, PolicyInfo, RefusalClass,
    RuntimeCallAnswer, SessionRow, ToolCallRequest,
};
use crate::protocol::{reason, SignedMessage};
use crate::runtime::RuntimeCallRequest;

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Permission classes.
    pub access: Access,
    /// Largest request body, bytes.
    pub max_body: usize,
}

type St = State<Arc<AppState>>;

/// The full `/v1` router. Other components merge their routes into it
/// (e.g. `router(state).merge(enforce_routes::routes(..))`); their handlers
/// can read the caller with `Extension<Peer>`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = BodyLimit(state.max_body);
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/messages", post(submit_message))
        .route("/v1/tool-calls", post(tool_call))
        .route("/v1/runtime-calls", post(runtime_call))
        .route("/v1/operators", get(list_operators).post(add_operator))
        .route("/v1/operators/{id}/rotate", post(rotate_operator))
        .route("/v1/operators/{id}/revoke", post(revoke_operator))
        .route("/v1/policy", get(show_policy).put(load_policy))
        .route("/v1/policy/validate", post(validate_policy))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/release", post(release_session))
        .fallback(not_found)
        .layer(Extension(limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        reason::NOT_FOUND,
        "no such route (the API lives under /v1)",
    )
}

fn forbidden(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        reason::PERMISSION_DENIED,
        format!("{what} is not permitted for this caller"),
    )
}

/// An MCP server agentd started is held to the calls agentd decided for
/// it: it may not ask for tool calls of its own.
fn refuse_mcp_server(peer: &Peer) -> Result<(), ApiError> {
    if peer.pid.is_some_and(crate::mcp::is_server_process) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::MCP_SERVER_MAY_NOT_CALL,
            "an MCP server started by agentd may not ask for tool calls",
        ));
    }
    Ok(())
}

fn require_admin(s: &AppState, peer: &Peer) -> Result<(), ApiError> {
    if s.access.is_admin(peer) {
        Ok(())
    } else {
        Err(forbidden("administration (root or the admin group)"))
    }
}

fn gateway_error(e: GatewayError) -> ApiError {
    let status = match &e {
        GatewayError::Store(_) | GatewayError::StoredPolicy { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        GatewayError::Policy(_) => StatusCode::UNPROCESSABLE_ENTITY,
        GatewayError::OperatorExists { .. } | GatewayError::CentralPolicy { .. } => {
            StatusCode::CONFLICT
        }
        GatewayError::UnknownOperator { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.reason_code(), e.to_string())
}

/// Records an administrative change (best effort: the change has happened).
async fn audit_admin(s: &AppState, peer: &Peer, action: &str, target: &str, policy_id: &str) {
    let Some(audit) = s.gateway.audit() else {
        return;
    };
    let mut ev = AuditEvent::new(RecordKind::Admin, action);
    ev.operator = peer
        .uid
        .map(|u| format!("uid:{u}"))
        .unwrap_or_else(|| "tcp".into());
    ev.target = target.to_owned();
    ev.decision = "allow".into();
    ev.reason_code = reason::OK.into();
    ev.policy_id = policy_id.to_owned();
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, action, target, "could not audit an administrative change");
    }
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always "ok" when answering.
    pub status: String,
    /// Daemon version.
    pub version: String,
    /// Policy in force, if any.
    pub policy_id: Option<String>,
}

async fn health(State(s): St) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        policy_id: s.gateway.current_policy().map(|p| p.id.clone()),
    })
}

async fn submit_message(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(msg): JsonBody<SignedMessage>,
) -> Result<Json<IngestOutcome>, ApiError> {
    let source = match peer.uid {
        Some(u) => format!("uid:{u}"),
        None => "tcp".to_owned(),
    };
    match s.gateway.submit_message_from(&msg, &source).await {
        Ok(o) => Ok(Json(o)),
        Err(r) => {
            let status = match r.class {
                RefusalClass::Malformed => StatusCode::BAD_REQUEST,
                RefusalClass::Unverified => StatusCode::FORBIDDEN,
                RefusalClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                RefusalClass::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            };
            Err(ApiError::new(status, r.reason_code, r.message))
        }
    }
}

async fn tool_call(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<ToolCallRequest>,
) -> Result<Json<Decision>, ApiError> {
    if !s.access.may_call_tools(&peer) {
        return Err(forbidden(
            "submitting tool calls (the agent user or an admin)",
        ));
    }
    refuse_mcp_server(&peer)?;
    Ok(Json(
        s.gateway
            .tool_call(
                &req,
                Caller {
                    pid: peer.pid,
                    uid: peer.uid,
                    gid: peer.gid,
                    admin: s.access.is_admin(&peer),
                },
            )
            .await,
    ))
}

/// `POST /v1/runtime-calls`: a runtime's own tool call (from `agentctl
/// hook`). Open to every local caller so that a process outside every agent
/// hears "outside_agent" (and its hook stays out of the way); deciding needs
/// the same rights as `/v1/tool-calls`.
async fn runtime_call(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<RuntimeCallRequest>,
) -> Result<Json<RuntimeCallAnswer>, ApiError> {
    let caller = Caller {
        pid: peer.pid,
        uid: peer.uid,
        gid: peer.gid,
        admin: s.access.is_admin(&peer),
    };
    if peer.transport != super::peer::Transport::Unix {
        return Err(forbidden("runtime calls over TCP"));
    }
    let agent = s.gateway.caller_agent(caller);
    if agent.is_none() && req.active_message_id.is_none() {
        return Ok(Json(RuntimeCallAnswer::outside()));
    }
    if !s.access.may_call_tools(&peer) {
        return Err(forbidden(
            "submitting tool calls (the agent user or an admin)",
        ));
    }
    refuse_mcp_server(&peer)?;
    Ok(Json(s.gateway.runtime_call(&req, caller).await))
}

/// `POST /v1/operators` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOperator {
    /// Operator id.
    pub id: String,
    /// Role names.
    pub roles: Vec<String>,
    /// The operator's existing key (64 hex digits), to enrol the same
    /// operator on another host of a fleet; absent: a fresh key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// An operator with its freshly generated key (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorWithKey {
    /// The operator.
    pub operator: OperatorInfo,
    /// HMAC key, 64 hex digits (32 bytes). Not retrievable later.
    pub key: String,
}

/// `GET /v1/operators` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorList {
    /// All operators.
    pub operators: Vec<OperatorInfo>,
}

async fn list_operators(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<OperatorList>, ApiError> {
    require_admin(&s, &peer)?;
    Ok(Json(OperatorList {
        operators: s.gateway.list_operators(),
    }))
}

async fn add_operator(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<AddOperator>,
) -> Result<(StatusCode, Json<OperatorWithKey>), ApiError> {
    require_admin(&s, &peer)?;
    let imported = match &req.key {
        Some(k) => Some(hex::decode(k.trim()).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_key",
                format!("the key is not hex: {e}"),
            )
        })?),
        None => None,
    };
    let was_imported = imported.is_some();
    let (operator, key) = s
        .gateway
        .add_operator_with_key(&req.id, &req.roles, imported)
        .map_err(gateway_error)?;
    audit_admin(
        &s,
        &peer,
        "operator_add",
        &format!(
            "{} roles={}{}",
            req.id,
            req.roles.join(","),
            if was_imported { " key=imported" } else { "" }
        ),
        "",
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(OperatorWithKey {
            operator,
            key: hex::encode(key),
        }),
    ))
}

async fn rotate_operator(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Json<OperatorWithKey>, ApiError> {
    require_admin(&s, &peer)?;
    let (operator, key, ended) = s
        .gateway
        .rotate_operator_and_grants(&id)
        .map_err(gateway_error)?;
    audit_admin(
        &s,
        &peer,
        "operator_rotate",
        &format!("{id} grants_revoked={ended}"),
        "",
    )
    .await;
    Ok(Json(OperatorWithKey {
        operator,
        key: hex::encode(key),
    }))
}

async fn revoke_operator(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Json<OperatorInfo>, ApiError> {
    require_admin(&s, &peer)?;
    let (info, ended) = s
        .gateway
        .revoke_operator_and_grants(&id)
        .map_err(gateway_error)?;
    audit_admin(
        &s,
        &peer,
        "operator_revoke",
        &format!("{id} grants_revoked={ended}"),
        "",
    )
    .await;
    Ok(Json(info))
}

/// `GET /v1/sessions` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionList {
    /// Every bound session.
    pub sessions: Vec<SessionRow>,
}

/// `POST /v1/sessions/release` body and response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRelease {
    /// Session id.
    pub session: String,
    /// The operator it was bound to (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

async fn list_sessions(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<SessionList>, ApiError> {
    require_admin(&s, &peer)?;
    Ok(Json(SessionList {
        sessions: s.gateway.list_sessions().map_err(gateway_error)?,
    }))
}

async fn release_session(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<SessionRelease>,
) -> Result<Json<SessionRelease>, ApiError> {
    require_admin(&s, &peer)?;
    let Some(previous) = s
        .gateway
        .release_session(&req.session)
        .map_err(gateway_error)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            reason::UNKNOWN_SESSION,
            format!("session `{}` is not bound", req.session),
        ));
    };
    audit_admin(
        &s,
        &peer,
        "session_release",
        &format!("{} previous_operator:{previous}", req.session),
        "",
    )
    .await;
    Ok(Json(SessionRelease {
        session: req.session,
        operator: Some(previous),
    }))
}

/// `PUT /v1/policy` and `POST /v1/policy/validate` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySource {
    /// The TOML text.
    pub source: String,
    /// Label for errors and history (e.g. the file name).
    #[serde(default)]
    pub origin: Option<String>,
}

async fn show_policy(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<PolicyInfo>, ApiError> {
    require_admin(&s, &peer)?;
    s.gateway.policy_info().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            reason::NO_POLICY,
            "no policy is loaded",
        )
    })
}

async fn load_policy(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<PolicySource>,
) -> Result<Json<PolicyInfo>, ApiError> {
    require_admin(&s, &peer)?;
    let origin = req.origin.as_deref().unwrap_or("api");
    let info = s
        .gateway
        .load_local_policy(&req.source, origin)
        .map_err(gateway_error)?;
    audit_admin(&s, &peer, "policy_load", origin, &info.policy_id).await;
    Ok(Json(info))
}

async fn validate_policy(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<PolicySource>,
) -> Result<Json<PolicyInfo>, ApiError> {
    require_admin(&s, &peer)?;
    Gateway::validate_policy(&req.source, req.origin.as_deref().unwrap_or("api"))
        .map(Json)
        .map_err(gateway_error)
}

/// A listener the API can serve.
pub enum Listener {
    /// The Unix socket (callers identified by SO_PEERCRED).
    Unix(tokio::net::UnixListener),
    /// TCP for remote operators (messages and health only), plain HTTP.
    Tcp(tokio::net::TcpListener),
    /// TCP for remote operators behind TLS (the handshake runs in the
    /// connection's own task, under the header deadline).
    Tls(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
    /// Loopback TCP whose callers `PeerLookup` names from the kernel's view
    /// of the connecting socket (the forward proxy's listener).
    Loopback(tokio::net::TcpListener, PeerLookup),
}

/// Names the caller of an accepted loopback connection from its (local,
/// remote) addresses; blocking (netlink, /proc), run off the runtime.
pub type PeerLookup = Arc<dyn Fn(std::net::SocketAddr, std::net::SocketAddr) -> Peer + Send + Sync>;

/// Limits of one listener: how many connections it holds at once (in all,
/// and per peer: a Unix uid, or all of TCP), and how long a client may take
/// to send a request's headers. A connection over a limit is closed at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once, all peers together.
    pub max_connections: usize,
    /// Connections open at once from one peer (root and admins included:
    /// the limit is per uid, so one flooding uid never starves another).
    pub max_per_peer: usize,
    /// Time allowed for a request's headers (slow clients are cut off).
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_per_peer: 64,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections by peer key, shared by a listener's tasks.
#[derive(Debug, Default)]
struct ConnCount {
    total: usize,
    by_peer: std::collections::HashMap<Option<u32>, usize>,
}

/// A held connection slot; released on drop.
struct ConnSlot {
    counts: Arc<std::sync::Mutex<ConnCount>>,
    peer: Option<u32>,
}

impl ConnSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<ConnCount>>,
        peer: Option<u32>,
        limits: &ConnLimits,
    ) -> Option<Self> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_peer.get(&peer).copied().unwrap_or(0);
        if c.total >= limits.max_connections || mine >= limits.max_per_peer {
            return None;
        }
        c.total += 1;
        *c.by_peer.entry(peer).or_default() += 1;
        Some(Self {
            counts: counts.clone(),
            peer,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets open
/// connections finish their current request (up to `grace`).
pub async fn serve(
    listener: Listener,
    app: Router,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_limited(listener, app, shutdown, grace, ConnLimits::default()).await
}

/// [`serve`] with explicit connection limits.
pub async fn serve_limited(
    listener: Listener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: ConnLimits,
) {
    let mut conns = tokio::task::JoinSet::new();
    let counts = Arc::new(std::sync::Mutex::new(ConnCount::default()));
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = accept(&listener) => a,
        };
        let (stream, peer, tls) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
        let Some(slot) = ConnSlot::take(&counts, peer.uid, &limits) else {
            refused += 1;
            // One line per 1000 refusals: a flood must not flood the log.
            if refused % 1000 == 1 {
                tracing::warn!(uid = ?peer.uid, refused, max = limits.max_connections, per_peer = limits.max_per_peer, "connection limit reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            let io = match handshake(stream, tls, limits.header_timeout).await {
                Some(io) => io,
                None => return,
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer);
                    let app = app.clone();
                    async move {
                        Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {}))
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, svc)
                // `POST /v1/mcp/stdio` turns its connection into an MCP relay.
                .with_upgrades();
            tokio::pin!(conn);
            let stopping = tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    false
                }
                // A dropped sender also means the daemon is going away.
                r = stop.wait_for(|s| *s) => { drop(r); true }
            };
            if stopping {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
}

type Io = TokioIo<Box<dyn AsyncStream>>;

/// A connected byte stream of either transport.
pub trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncStream for T {}

/// An accepted stream, its peer, and the TLS acceptor it must pass first.
type Accepted = (
    Box<dyn AsyncStream>,
    Peer,
    Option<tokio_rustls::TlsAcceptor>,
);

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let peer = Peer::of_unix(&stream);
            Ok((Box::new(stream), peer, None))
        }
        Listener::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream), Peer::tcp(), None))
        }
        Listener::Tls(l, acceptor) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream), Peer::tcp(), Some(acceptor.clone())))
        }
        Listener::Loopback(l, lookup) => {
            let (stream, remote) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            let lookup = lookup.clone();
            // Looked up while the client's socket is surely open (it is
            // waiting for our answer); unknown on any failure.
            let peer = tokio::task::spawn_blocking(move || lookup(local, remote))
                .await
                .unwrap_or_else(|_| Peer::loopback(None, None));
            Ok((Box::new(stream), peer, None))
        }
    }
}

/// Runs the TLS handshake where there is one, within `deadline` (a client
/// that never finishes it holds its slot no longer than a slow header).
async fn handshake(
    stream: Box<dyn AsyncStream>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    deadline: Duration,
) -> Option<Io> {
    let Some(acceptor) = tls else {
        return Some(TokioIo::new(stream));
    };
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(TokioIo::new(Box::new(tls) as Box<dyn AsyncStream>)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?deadline, "TLS handshake timed out");
            None
        }
    }
}
