//! The kill switch's routes, merged into the `/v1` router (admin only):
//!
//! - `GET  /v1/suspensions`: every suspension in force.
//! - `POST /v1/suspensions` body [`SuspendRequest`]: suspend an operator, an
//!   agent or everything; 201 with what it did ([`SuspendOutcome`]).
//! - `POST /v1/suspensions/resume` body [`ResumeRequest`]: lift one.
//!
//! Each change is audited (who, scope, reason, what it ended) before the
//! answer.
use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::json::{ApiError, JsonBody};
use super::peer::{Access, Peer};
use crate::agents::AgentManager;
use crate::audit::{AuditEvent, RecordKind};
use crate::enforce::EnforceSlot;
use crate::gateway::{Gateway, Scope, SuspendError, SuspendOutcome, Suspension};
use crate::protocol::reason;

/// `POST /v1/suspensions` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// `operator`, `agent` or `all`.
    pub scope: String,
    /// The operator or agent (not for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why (kept with the suspension and in the audit row).
    #[serde(default)]
    pub reason: String,
    /// Also kill the processes of the agents in scope.
    #[serde(default)]
    pub stop: bool,
}

/// `POST /v1/suspensions/resume` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// `operator`, `agent` or `all`.
    pub scope: String,
    /// The operator or agent (not for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `GET /v1/suspensions` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspensionList {
    /// Every suspension in force.
    pub suspensions: Vec<Suspension>,
}

/// `POST /v1/suspensions/resume` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeAnswer {
    /// The suspension lifted.
    pub resumed: Suspension,
}

struct RouteState {
    gateway: Arc<Gateway>,
    agents: Arc<AgentManager>,
    enforce: EnforceSlot,
    access: Access,
}

type St = State<Arc<RouteState>>;

/// The routes, ready to merge.
pub fn routes(
    gateway: Arc<Gateway>,
    agents: Arc<AgentManager>,
    enforce: EnforceSlot,
    access: Access,
) -> Router {
    Router::new()
        .route("/v1/suspensions", get(list).post(suspend))
        .route("/v1/suspensions/resume", post(resume))
        .with_state(Arc::new(RouteState {
            gateway,
            agents,
            enforce,
            access,
        }))
}

fn admin(s: &RouteState, peer: &Peer) -> Result<(), ApiError> {
    if s.access.is_admin(peer) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        reason::PERMISSION_DENIED,
        "suspending and resuming (root or the admin group) is not permitted for this caller",
    ))
}

fn suspend_error(e: SuspendError) -> ApiError {
    let status = match &e {
        SuspendError::Invalid(_) => StatusCode::BAD_REQUEST,
        SuspendError::UnknownOperator { .. } | SuspendError::NotSuspended { .. } => {
            StatusCode::NOT_FOUND
        }
        SuspendError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.reason_code(), e.to_string())
}

fn who(peer: &Peer) -> String {
    peer.uid
        .map(|u| format!("uid:{u}"))
        .unwrap_or_else(|| "tcp".into())
}

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<SuspensionList>, ApiError> {
    admin(&s, &peer)?;
    Ok(Json(SuspensionList {
        suspensions: s.gateway.suspensions(),
    }))
}

/// An agent is known if it is configured (agents.db) or the enforcer
/// tracks it (`agentctl run --agent`).
fn agent_known(s: &RouteState, name: &str) -> Result<bool, ApiError> {
    let configured = s.agents.is_configured(name).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.reason_code(),
            e.to_string(),
        )
    })?;
    Ok(configured
        || s.enforce
            .get()
            .is_some_and(|e| e.baseline_of(name).is_some()))
}

async fn suspend(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<SuspendRequest>,
) -> Result<(StatusCode, Json<SuspendOutcome>), ApiError> {
    admin(&s, &peer)?;
    let scope =
        Scope::parse(&req.scope, req.name.as_deref()).map_err(|e| suspend_error(e.into()))?;
    if let Scope::Agent(name) = &scope {
        if !agent_known(&s, name)? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                reason::UNKNOWN_AGENT,
                format!("no agent `{name}`"),
            ));
        }
    }
    let by = who(&peer);
    let agent = scope_agent(&scope);
    let gateway = s.gateway.clone();
    // Ending grants and killing cgroups write maps and files: off the runtime.
    let out = super::json::off_runtime(move || gateway.suspend(scope, &req.reason, req.stop, &by))
        .await?
        .map_err(suspend_error)?;
    let target = format!(
        "{} stop={} grants_revoked={} processes_stopped={} reason={:?}",
        scope_of(&out.suspension),
        out.suspension.stop,
        out.grants_revoked,
        out.processes_stopped,
        out.suspension.reason
    );
    audit(&s, &peer, "suspend", &target, &agent).await;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn resume(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<ResumeRequest>,
) -> Result<Json<ResumeAnswer>, ApiError> {
    admin(&s, &peer)?;
    let scope =
        Scope::parse(&req.scope, req.name.as_deref()).map_err(|e| suspend_error(e.into()))?;
    let resumed = s.gateway.resume(&scope).map_err(suspend_error)?;
    let target = format!("{scope} suspended_since={}", resumed.since);
    audit(&s, &peer, "resume", &target, &scope_agent(&scope)).await;
    Ok(Json(ResumeAnswer { resumed }))
}

fn scope_of(s: &Suspension) -> String {
    match &s.name {
        Some(n) => format!("{}:{n}", s.scope),
        None => s.scope.clone(),
    }
}

/// The agent a scope names (empty for an operator or all): the row's subject.
fn scope_agent(scope: &Scope) -> String {
    match scope {
        Scope::Agent(name) => name.clone(),
        _ => String::new(),
    }
}

/// Records a suspension or resume. The change has happened (a suspension
/// must not wait for the log); a failure is logged loudly.
async fn audit(s: &RouteState, peer: &Peer, action: &str, target: &str, agent: &str) {
    let Some(audit) = s.gateway.audit() else {
        return;
    };
    let mut ev = AuditEvent::new(RecordKind::Admin, action);
    ev.operator = who(peer);
    ev.agent = agent.chars().take(1024).collect();
    ev.target = target.chars().take(1024).collect();
    ev.decision = "allow".into();
    ev.reason_code = reason::OK.into();
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, action, target, "could not audit a suspension change");
    }
}
