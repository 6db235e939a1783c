//! Agent settings, profiles and inboxes, merged into the `/v1` router:
//!
//! - `GET    /v1/agent-settings` (admin): every configured agent with its composed baseline.
//! - `GET    /v1/agent-settings/{name}` (admin): one agent.
//! - `PUT    /v1/agent-settings/{name}` (admin) body `AgentDef`: add or replace; applied at once.
//! - `DELETE /v1/agent-settings/{name}` (admin): remove (refused while it runs: `agent_running`).
//! - `POST   /v1/agent-settings/{name}/mode` (admin) `{"mode": "enforce"|"audit-only"}`.
//! - `GET    /v1/profiles` (admin): built-in and policy profiles.
//! - `POST   /v1/inbox/{agent}` (anyone, like `/v1/messages`) body `SignedMessage`:
//!   ingest (signature, nonce, session) and queue for the agent.
//! - `GET    /v1/inbox/{agent}` (admin): entries with outcomes and replies.
//! - `POST   /v1/inbox/{agent}/next` (admin): the driver takes the oldest queued entry.
//! - `POST   /v1/inbox/{agent}/{id}/result` (admin) body `RunResult`: the driver records a run's end.
use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::json::{ApiError, BodyLimit, JsonBody};
use super::peer::{Access, Peer};
use crate::agents::manager::{NextRun, ProfileView};
use crate::agents::{AgentDef, AgentManager, AgentView, AgentsError, InboxEntry, RunResult};
use crate::enforce::{EnforceError, Mode};
use crate::gateway::RefusalClass;
use crate::protocol::{reason, SignedMessage};

/// Largest body these routes take (a run's reply is bounded well below).
const MAX_BODY: usize = 512 * 1024;

struct RouteState {
    agents: Arc<AgentManager>,
    access: Access,
}

type St = State<Arc<RouteState>>;

/// The routes, as a stateless router ready to merge.
pub fn routes(agents: Arc<AgentManager>, access: Access) -> Router {
    Router::new()
        .route("/v1/agent-settings", get(list))
        .route(
            "/v1/agent-settings/{name}",
            get(show).put(put).delete(remove),
        )
        .route("/v1/agent-settings/{name}/mode", post(set_mode))
        .route("/v1/profiles", get(profiles))
        .route("/v1/inbox/{agent}", get(entries).post(submit))
        .route("/v1/inbox/{agent}/next", post(next))
        .route("/v1/inbox/{agent}/{id}/result", post(result))
        .layer(Extension(BodyLimit(MAX_BODY)))
        .with_state(Arc::new(RouteState { agents, access }))
}

fn admin(s: &RouteState, peer: &Peer) -> Result<(), ApiError> {
    if s.access.is_admin(peer) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "administration (root or the admin group) is not permitted for this caller",
        ))
    }
}

fn api_err(e: AgentsError) -> ApiError {
    let status = match &e {
        AgentsError::Unknown { .. } | AgentsError::UnknownEntry { .. } => StatusCode::NOT_FOUND,
        AgentsError::EntryState { .. } | AgentsError::SharedUser { .. } => StatusCode::CONFLICT,
        AgentsError::Store { .. } | AgentsError::EnforcementUnavailable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        AgentsError::Enforce(EnforceError::AgentBusy { .. }) => StatusCode::CONFLICT,
        AgentsError::Enforce(EnforceError::UnknownAgent { .. }) => StatusCode::NOT_FOUND,
        AgentsError::Enforce(EnforceError::Grant { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        AgentsError::Enforce(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.reason_code(), e.to_string())
}

/// Runs blocking manager work (cgroups, BPF maps, SQLite) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentsError> + Send + 'static,
) -> Result<T, ApiError> {
    super::json::off_runtime(f).await?.map_err(api_err)
}

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    blocking(move || m.list()).await.map(Json)
}

async fn show(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    blocking(move || m.show(&name)).await.map(Json)
}

async fn put(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    JsonBody(def): JsonBody<AgentDef>,
) -> Result<Json<AgentView>, ApiError> {
    admin(&s, &peer)?;
    if def.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_AGENT,
            format!("body names agent `{}`, the path `{name}`", def.name),
        ));
    }
    let m = s.agents.clone();
    let v = blocking(move || m.put(def)).await?;
    audit_admin(&s, &peer, "agent_put", &name).await;
    Ok(Json(v))
}

async fn remove(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    let n = name.clone();
    blocking(move || m.remove(&n)).await?;
    audit_admin(&s, &peer, "agent_remove", &name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent-settings/{name}/mode` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMode {
    /// New mode.
    pub mode: Mode,
}

async fn set_mode(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetMode>,
) -> Result<Json<AgentView>, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    let n = name.clone();
    let v = blocking(move || m.set_mode(&n, req.mode)).await?;
    let mode = serde_json::to_value(req.mode).unwrap_or_default();
    audit_admin(
        &s,
        &peer,
        "agent_mode",
        &format!("{name} mode={}", mode.as_str().unwrap_or("")),
    )
    .await;
    Ok(Json(v))
}

async fn profiles(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<std::collections::BTreeMap<String, ProfileView>>, ApiError> {
    admin(&s, &peer)?;
    Ok(Json(s.agents.profiles()))
}

async fn submit(
    State(s): St,
    Path(agent): Path<String>,
    JsonBody(msg): JsonBody<SignedMessage>,
) -> Result<(StatusCode, Json<InboxEntry>), ApiError> {
    match s.agents.submit(&agent, &msg).await.map_err(api_err)? {
        Ok(e) => Ok((StatusCode::CREATED, Json(e))),
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

async fn entries(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(agent): Path<String>,
) -> Result<Json<Vec<InboxEntry>>, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    blocking(move || m.entries(&agent)).await.map(Json)
}

async fn next(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(agent): Path<String>,
) -> Result<Json<NextRun>, ApiError> {
    admin(&s, &peer)?;
    let m = s.agents.clone();
    blocking(move || m.take_next(&agent)).await.map(Json)
}

async fn result(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path((agent, id)): Path<(String, i64)>,
    JsonBody(res): JsonBody<RunResult>,
) -> Result<Json<InboxEntry>, ApiError> {
    admin(&s, &peer)?;
    if res.reply.len() > crate::agents::inbox::MAX_REPLY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            reason::SIZE_LIMIT_EXCEEDED,
            format!(
                "a reply is kept up to {} bytes; the driver must cut it",
                crate::agents::inbox::MAX_REPLY_BYTES
            ),
        ));
    }
    s.agents
        .finish(&agent, id, res)
        .await
        .map(Json)
        .map_err(api_err)
}

/// Records an administrative change (best effort: the change has happened).
async fn audit_admin(s: &RouteState, peer: &Peer, action: &str, target: &str) {
    s.agents.audit_admin(peer.uid, action, target).await;
}
