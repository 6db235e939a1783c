//! `POST /v1/mcp/stdio` (Unix socket, `Upgrade: agentd-mcp`): opens an MCP
//! session for `agentctl mcp proxy`. The body is an `mcp::OpenRequest`.
//! The caller must be a process of the named agent or an admin (SO_PEERCRED);
//! an MCP server started by agentd may not open one. agentd starts the
//! server (see `mcp::launch`), answers `101 Switching Protocols`, and the
//! connection then carries newline-delimited JSON-RPC both ways.
//!
//! `GET /v1/mcp/pins` (admin): the pinned tool definitions;
//! `POST /v1/mcp/pins/approve` (admin) `{"agent", "server", "tool"}`:
//! approve a tool's changed definition.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use super::{json::ApiError, peer::Access, Peer, Transport};
use crate::enforce::{EnforceSlot, Enforcer};
use crate::gateway::Gateway;
use crate::mcp::pins::{Pin, PinStore};
use crate::mcp::{self, framing, Launcher, OpenRequest};
use crate::protocol::reason;

/// MCP sessions open at once (each holds a server process).
pub const MAX_SESSIONS: usize = 64;
/// MCP sessions one agent may hold open at once (one agent cannot take
/// every session).
pub const MAX_SESSIONS_PER_AGENT: usize = 16;
/// Largest open request body.
const MAX_OPEN_BODY: usize = 64 * 1024;

struct RouteState {
    gateway: Arc<Gateway>,
    slot: EnforceSlot,
    access: Access,
    launcher: Launcher,
    agent_user: String,
    pins: Arc<PinStore>,
    open: Arc<Sessions>,
}

/// The route, as a router ready to merge.
pub fn routes(
    gateway: Arc<Gateway>,
    slot: EnforceSlot,
    access: Access,
    launcher: Launcher,
    agent_user: String,
    pins: Arc<PinStore>,
) -> Router {
    Router::new()
        .route(mcp::STDIO_ROUTE, post(open_stdio))
        .route("/v1/mcp/pins", get(list_pins))
        .route("/v1/mcp/pins/approve", post(approve_pin))
        .with_state(Arc::new(RouteState {
            gateway,
            slot,
            access,
            launcher,
            agent_user,
            pins,
            open: Arc::new(Sessions::default()),
        }))
}

/// Open sessions, in all and per agent.
#[derive(Debug, Default)]
struct Sessions(Mutex<(usize, HashMap<String, usize>)>);

impl Sessions {
    /// Takes a slot for `agent`, or None when the limits are reached.
    fn take(self: &Arc<Self>, agent: &str, max: usize, per_agent: usize) -> Option<SessionSlot> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = g.1.get(agent).copied().unwrap_or(0);
        if g.0 >= max || mine >= per_agent {
            return None;
        }
        g.0 += 1;
        *g.1.entry(agent.to_owned()).or_default() += 1;
        Some(SessionSlot(self.clone(), agent.to_owned()))
    }
}

/// Counts an open session; released on drop.
struct SessionSlot(Arc<Sessions>, String);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut g = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.1);
            }
        }
    }
}

fn err(status: StatusCode, code: &str, msg: impl Into<String>) -> Response {
    ApiError::new(status, code, msg).into_response()
}

async fn open_stdio(
    State(s): State<Arc<RouteState>>,
    Extension(peer): Extension<Peer>,
    mut req: Request,
) -> Response {
    if peer.transport != Transport::Unix {
        return err(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "MCP sessions need the Unix socket",
        );
    }
    let on_upgrade = match take_upgrade(&mut req) {
        Ok(u) => u,
        Err(refusal) => return refusal.into_response(),
    };
    let open = match read_open(req).await {
        Ok(o) => o,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(enforcer) = s.slot.get() else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "enforcement_unavailable",
            s.slot.unavailable_reason(),
        );
    };
    let user = match server_user(&s, &peer, &enforcer, &open) {
        Ok(u) => u,
        Err(refusal) => return refusal.into_response(),
    };
    if !s.launcher.agentctl.is_file() {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::MCP_LAUNCHER_MISSING,
            format!("the launcher {} is missing", s.launcher.agentctl.display()),
        );
    }
    let Some(slot) = s
        .open
        .take(&open.agent, MAX_SESSIONS, MAX_SESSIONS_PER_AGENT)
    else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::MCP_TOO_MANY_SESSIONS,
            format!(
                "too many MCP sessions are open (at most {MAX_SESSIONS}, {MAX_SESSIONS_PER_AGENT} per agent)"
            ),
        );
    };
    let started = match start_server(&s, &enforcer, &open, user).await {
        Ok(st) => st,
        Err(refusal) => return refusal.into_response(),
    };
    spawn_relay(&s, slot, on_upgrade, started);
    switching_protocols()
}

/// Relays the session once the connection is upgraded (the server is
/// stopped if the upgrade fails).
fn spawn_relay(
    s: &RouteState,
    slot: SessionSlot,
    on_upgrade: hyper::upgrade::OnUpgrade,
    started: mcp::launch::Started,
) {
    let gateway = s.gateway.clone();
    let pins = s.pins.clone();
    tokio::spawn(async move {
        // The session counts as open until its relay ends.
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                mcp::relay::relay(
                    started,
                    gateway,
                    pins,
                    TokioIo::new(upgraded),
                    framing::DEFAULT_MAX_MESSAGE,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "MCP upgrade failed; stopping the server");
                started.abandon().await;
            }
        }
    });
}

/// `101 Switching Protocols` to our upgrade.
fn switching_protocols() -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, mcp::UPGRADE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| {
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                reason::INTERNAL_ERROR,
                "response",
            )
        })
}

/// The connection's pending upgrade, when the request asks for ours.
fn take_upgrade(req: &mut Request) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    let upgrade_ok = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(mcp::UPGRADE_PROTOCOL));
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "this route needs a connection upgrade",
        ));
    };
    if !upgrade_ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected `Upgrade: {}`", mcp::UPGRADE_PROTOCOL),
        ));
    }
    Ok(on_upgrade)
}

/// The open request in the body (bounded), parsed and checked.
async fn read_open(req: Request) -> Result<OpenRequest, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), MAX_OPEN_BODY)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                reason::BODY_TOO_LARGE,
                e.to_string(),
            )
        })?;
    let open: OpenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    open.check()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.reason_code(), e.to_string()))?;
    Ok(open)
}

/// Whether the peer may open this agent's session (a process of the agent
/// or an admin, never an MCP server), and the user its server runs as.
fn server_user(
    s: &RouteState,
    peer: &Peer,
    enforcer: &Enforcer,
    open: &OpenRequest,
) -> Result<String, ApiError> {
    let admin = s.access.is_admin(peer);
    let peer_agent = peer.pid.and_then(|p| enforcer.agent_of_pid(p));
    if peer.pid.is_some_and(mcp::is_server_process) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::MCP_SERVER_MAY_NOT_CALL,
            "an MCP server may not open MCP sessions",
        ));
    }
    if peer_agent.as_deref() != Some(open.agent.as_str()) && !admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            format!(
                "only a process of agent `{}` (or an admin) may open its MCP sessions",
                open.agent
            ),
        ));
    }
    // The server runs as the calling agent process's user; an admin
    // outside the agent gets the configured agent user.
    let user = match (peer_agent.is_some(), peer.uid) {
        (true, Some(uid)) if uid != 0 => {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        }
        _ => Some(s.agent_user.clone()),
    };
    user.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "the caller's user has no name",
        )
    })
}

/// Starts the session's MCP server (blocking work, off the runtime).
async fn start_server(
    s: &RouteState,
    enforcer: &Enforcer,
    open: &OpenRequest,
    user: String,
) -> Result<mcp::launch::Started, ApiError> {
    let (enforcer, launcher, req) = (enforcer.clone(), s.launcher.clone(), open.clone());
    match tokio::task::spawn_blocking(move || mcp::launch::start(&enforcer, &launcher, req, &user))
        .await
    {
        Ok(Ok(st)) => Ok(st),
        Ok(Err(e)) => {
            tracing::warn!(agent = %open.agent, server = %open.server, error = %e, "MCP server not started");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.reason_code(),
                e.to_string(),
            ))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            e.to_string(),
        )),
    }
}

/// `GET /v1/mcp/pins` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinList {
    /// Every pinned tool.
    pub pins: Vec<Pin>,
}

/// `POST /v1/mcp/pins/approve` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePin {
    /// Agent.
    pub agent: String,
    /// Server name.
    pub server: String,
    /// MCP tool name.
    pub tool: String,
}

async fn list_pins(
    State(s): State<Arc<RouteState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<PinList>, ApiError> {
    if !s.access.is_admin(&peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "listing MCP pins needs an admin",
        ));
    }
    Ok(Json(PinList {
        pins: s.pins.list(),
    }))
}

async fn approve_pin(
    State(s): State<Arc<RouteState>>,
    Extension(peer): Extension<Peer>,
    super::json::JsonBody(req): super::json::JsonBody<ApprovePin>,
) -> Result<Json<Pin>, ApiError> {
    if !s.access.is_admin(&peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "approving MCP tools needs an admin",
        ));
    }
    let pin = s
        .pins
        .approve(&req.agent, &req.server, &req.tool)
        .map_err(|e| {
            let status = match e {
                mcp::pins::PinError::NothingPending { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            ApiError::new(status, e.reason_code(), e.to_string())
        })?;
    if let Some(audit) = s.gateway.audit() {
        let mut ev =
            crate::audit::AuditEvent::new(crate::audit::RecordKind::Admin, "mcp_tool_approved");
        ev.operator = peer.uid.map(|u| format!("uid:{u}")).unwrap_or_default();
        ev.agent.clone_from(&pin.agent);
        ev.target = format!(
            "{}/{}/{} sha256:{}",
            pin.agent, pin.server, pin.tool, pin.sha256
        );
        ev.decision = "allow".into();
        ev.reason_code = reason::OK.into();
        if let Err(e) = audit.append(ev).await {
            tracing::error!(error = %e, "could not audit an MCP tool approval");
        }
    }
    Ok(Json(pin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limits_hold_in_all_and_per_agent() {
        let s = Arc::new(Sessions::default());
        let a: Vec<_> = (0..2).map(|_| s.take("a", 3, 2).unwrap()).collect();
        assert!(s.take("a", 3, 2).is_none(), "per agent");
        let b = s.take("b", 3, 2).unwrap();
        assert!(s.take("c", 3, 2).is_none(), "in all");
        drop(a);
        assert!(s.take("a", 3, 2).is_some(), "slots come back");
        drop(b);
        assert_eq!(s.0.lock().unwrap().0, 0);
        assert!(s.0.lock().unwrap().1.is_empty());
    }
}
