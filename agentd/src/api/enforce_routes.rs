//! Enforcement routes, merged into the `/v1` router:
//!
//! - `GET  /v1/agents` (admin): agents, their mode, pids and grants.
//! - `POST /v1/agents` (admin) `{"name", "mode"?, "baseline"?: GrantSpec}`: create an agent.
//! - `POST /v1/agents/{name}/mode` (admin) `{"mode": "enforce"|"audit-only"}`.
//! - `POST /v1/bind` `{"call_id", "pid"?}`: bind the caller (or `pid`) to a call;
//!   SO_PEERCRED must put the caller, and `pid`, in the call's agent cgroup.
//! - `GET  /v1/enforcement` (admin): backend and decision counters.
//!
//! Each is a [`Request`] of the enforcement control plane
//! ([`crate::enforce::control`]): the same auth rule (admin as the API
//! defines it; refusals `not_admin`), reason codes and decision as on the
//! enforcement socket, with the API's bodies (size limit, body timeout,
//! unknown fields refused) and error shape. The seccomp listener hand-over
//! (SCM_RIGHTS) cannot ride HTTP; it uses the enforcement socket
//! (`enforce::launch`).
use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::{
    json::{ApiError, JsonBody},
    peer::Access,
    Peer,
};
use crate::{
    enforce::{
        control::{self, Caller, Refusal, RefusalKind, Request},
        default_baseline, EnforceSlot, Enforcer, Mode,
    },
    grant_spec::GrantSpec,
    protocol::reason,
};

pub use crate::enforce::control::Status;

struct RouteState {
    slot: EnforceSlot,
    access: Access,
}

impl RouteState {
    fn enforcer(&self) -> Result<Enforcer, ApiError> {
        self.slot.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                reason::ENFORCEMENT_UNAVAILABLE,
                self.slot.unavailable_reason(),
            )
        })
    }

    /// Decides `req` for `peer` on the control plane (off the async
    /// threads: cgroup and map writes block).
    async fn decide(
        &self,
        peer: &Peer,
        req: Request,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        let caller = Caller {
            pid: peer.pid,
            uid: peer.uid,
            admin: self.access.is_admin(peer),
        };
        // The auth rule before the enforcer: a refusal does not depend on
        // whether enforcement has started.
        control::authorize(&req, &caller).map_err(api_err)?;
        let e = self.enforcer()?;
        super::json::off_runtime(move || control::dispatch(&e, &caller, req, None))
            .await?
            .map_err(api_err)
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

fn api_err(r: Refusal) -> ApiError {
    let status = match r.kind {
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, &r.reason_code, r.message)
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

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.decide(&peer, Request::List).await?;
    Ok(Json(v.unwrap_or_default()))
}

async fn create(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<CreateAgent>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Over HTTP a create sets the whole agent: its mode and baseline.
    let req = Request::CreateAgent {
        agent: req.name,
        mode: Some(req.mode),
        command: None,
        baseline: Some(req.baseline.unwrap_or_else(default_baseline)),
    };
    let v = s.decide(&peer, req).await?;
    Ok(Json(v.unwrap_or_default()))
}

async fn set_mode(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetMode>,
) -> Result<StatusCode, ApiError> {
    let req = Request::SetMode {
        agent: name,
        mode: req.mode,
    };
    s.decide(&peer, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bind(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<Bind>,
) -> Result<StatusCode, ApiError> {
    let req = Request::Bind {
        call_id: req.call_id,
        pid: req.pid,
    };
    s.decide(&peer, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.decide(&peer, Request::Status).await?;
    Ok(Json(v.unwrap_or_default()))
}
