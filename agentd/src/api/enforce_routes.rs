//! Enforcement routes, merged into the `/v1` router:
//!
//! - `GET  /v1/agents` (admin): agents, their mode, pids and grants.
//! - `POST /v1/agents` (admin) `{"name", "mode"?, "baseline"?: GrantSpec}`: create an agent.
//! - `POST /v1/agents/{name}/mode` (admin) `{"mode": "enforce"|"audit-only"}`.
//! - `POST /v1/bind` `{"call_id", "pid"?}`: bind the caller (or `pid`) to a call;
//!   SO_PEERCRED must put the caller, and `pid`, in the call's agent cgroup.
//! - `GET  /v1/enforcement` (admin): backend and decision counters.
//!
//! The seccomp listener hand-over (SCM_RIGHTS) cannot ride HTTP; it uses the
//! enforcement socket (`enforce::launch`).
use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::{json::ApiError, peer::Access, Peer};
use crate::{
    enforce::{
        default_baseline, AgentHandle, AgentInfo, Counters, EnforceError, EnforceSlot, Enforcer,
        Mode,
    },
    grant_spec::GrantSpec,
};

struct RouteState {
    slot: EnforceSlot,
    access: Access,
}

impl RouteState {
    fn enforcer(&self) -> Result<Enforcer, ApiError> {
        self.slot.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "enforcement_unavailable",
                self.slot.unavailable_reason(),
            )
        })
    }
}

type St = State<Arc<RouteState>>;

/// The routes, as a stateless router ready to merge.
pub fn routes(slot: EnforceSlot, access: Access) -> Router {
    Router::new()
        .route("/v1/agents", get(list).post(create))
        .route("/v1/agents/{name}/mode", post(set_mode))
        .route("/v1/bind", post(bind))
        .route("/v1/enforcement", get(status))
        .with_state(Arc::new(RouteState { slot, access }))
}

fn status_of(e: &EnforceError) -> StatusCode {
    match e {
        EnforceError::UnknownAgent { .. } => StatusCode::NOT_FOUND,
        EnforceError::Bind(_) => StatusCode::FORBIDDEN,
        EnforceError::Grant { .. }
        | EnforceError::Cgroup(crate::enforce::agent_cgroup::CgroupError::BadName { .. }) => {
            StatusCode::BAD_REQUEST
        }
        EnforceError::DuplicateCall { .. } => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn api_err(e: EnforceError) -> ApiError {
    ApiError::new(status_of(&e), e.reason_code(), e.to_string())
}

fn admin(s: &RouteState, peer: &Peer) -> Result<(), ApiError> {
    if s.access.is_admin(peer) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            "this route is for administrators",
        ))
    }
}

/// `POST /v1/agents` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Agent name.
    pub name: String,
    /// Mode (default enforce).
    #[serde(default)]
    pub mode: Mode,
    /// Baseline for unbound processes (default: system libraries only).
    #[serde(default)]
    pub baseline: Option<GrantSpec>,
}

/// `POST /v1/agents/{name}/mode` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMode {
    /// New mode.
    pub mode: Mode,
}

/// `POST /v1/bind` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Tool-call id.
    pub call_id: String,
    /// Process to bind (default: the caller).
    #[serde(default)]
    pub pid: Option<u32>,
}

/// `GET /v1/enforcement` reply.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Backend in use.
    pub backend: crate::enforce::Backend,
    /// Instance (pin directory and slice name).
    pub instance: String,
    /// Counters.
    pub counters: Counters,
}

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    admin(&s, &peer)?;
    Ok(Json(s.enforcer()?.list_agents()))
}

async fn create(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Json(req): Json<CreateAgent>,
) -> Result<Json<AgentHandle>, ApiError> {
    admin(&s, &peer)?;
    let baseline = req.baseline.unwrap_or_else(default_baseline);
    let e = s.enforcer()?;
    tokio::task::spawn_blocking(move || e.create_agent_with(&req.name, req.mode, &baseline))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map(Json)
        .map_err(api_err)
}

async fn set_mode(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Json(req): Json<SetMode>,
) -> Result<StatusCode, ApiError> {
    admin(&s, &peer)?;
    s.enforcer()?.set_mode(&name, req.mode).map_err(api_err)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bind(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Json(req): Json<Bind>,
) -> Result<StatusCode, ApiError> {
    let Some(peer_pid) = peer.pid else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "peer_unknown",
            "binding needs the caller's pid (Unix socket, SO_PEERCRED)",
        ));
    };
    let pid = req.pid.unwrap_or(peer_pid);
    s.enforcer()?
        .bind_verified(peer_pid, pid, &req.call_id)
        .map_err(api_err)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(s): St, Extension(peer): Extension<Peer>) -> Result<Json<Status>, ApiError> {
    admin(&s, &peer)?;
    let e = s.enforcer()?;
    Ok(Json(Status {
        backend: e.backend(),
        instance: e.instance().to_string(),
        counters: e.counters(),
    }))
}
