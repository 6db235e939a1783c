//! The approval queue on the API, merged into the `/v1` router:
//!
//! - `GET  /v1/approvals` (admin): the calls waiting for a human.
//! - `POST /v1/approvals/{id}/approve` (admin) body `{"reason": "..."}`.
//! - `POST /v1/approvals/{id}/deny` (admin) body `{"reason": "..."}`.
//! - `POST /v1/approvals/{id}/callback` (anyone: the HMAC decides) — the
//!   chat-ops bridge's signed answer (docs/approvals.md).
//!
//! An admin's answer is recorded as an admin approval (`uid:N`, channel
//! `api`), never as an operator's signature — unless it carries one: an
//! owner operator's HMAC over the answer (`signed`), verified here, makes
//! it an owner-signed approval (`operator:NAME (uid:N)`), the only kind
//! that lets a call write a protected file.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::json::{ApiError, BodyLimit, JsonBody};
use super::peer::{Access, Peer};
use crate::gateway::approvals::{
    Answer, Answered, ApprovalError, Approvals, Channel, PendingApproval,
};
use crate::gateway::Gateway;
use crate::policy::approval::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::protocol::reason;

/// Largest callback body, bytes.
const MAX_CALLBACK: usize = 16 * 1024;

struct RouteState {
    gateway: Arc<Gateway>,
    access: Access,
}

type St = State<Arc<RouteState>>;

/// `GET /v1/approvals` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalList {
    /// Waiting calls, oldest first.
    pub approvals: Vec<PendingApproval>,
    /// Seconds each call waits.
    pub timeout_secs: u64,
}

/// `POST /v1/approvals/{id}/approve|deny` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// Why (recorded in the audit row; at most 512 bytes).
    #[serde(default)]
    pub reason: String,
    /// An owner operator's signature over this answer
    /// (`agentctl approvals approve ID --operator O --key-file K`): only
    /// such an approval lets the call write a protected file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::policy::owner_approval::OwnerSignature>,
}

/// Answer of approve, deny and callback: the approval as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDone {
    /// `approved` or `denied`.
    pub outcome: String,
    /// The approval answered.
    pub approval: PendingApproval,
}

/// The routes, as a router ready to merge.
pub fn routes(gateway: Arc<Gateway>, access: Access) -> Router {
    Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/approvals/{id}/callback", post(callback))
        .layer(Extension(BodyLimit(MAX_CALLBACK)))
        .with_state(Arc::new(RouteState { gateway, access }))
}

fn admin(s: &RouteState, peer: &Peer) -> Result<(), ApiError> {
    if s.access.is_admin(peer) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        reason::PERMISSION_DENIED,
        "administration (root or the admin group) is not permitted for this caller",
    ))
}

fn queue(s: &RouteState) -> Result<Arc<Approvals>, ApiError> {
    s.gateway.approvals().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::APPROVAL_UNAVAILABLE,
            "this daemon has no approval queue",
        )
    })
}

/// Maps a queue error to the API's error shape.
pub fn api_error(e: ApprovalError) -> ApiError {
    let status = match &e {
        ApprovalError::Unknown { .. } => StatusCode::NOT_FOUND,
        ApprovalError::AlreadyDecided { .. } => StatusCode::CONFLICT,
        ApprovalError::Callback(crate::policy::approval::CallbackError::Malformed(_))
        | ApprovalError::Callback(crate::policy::approval::CallbackError::IdMismatch { .. }) => {
            StatusCode::BAD_REQUEST
        }
        ApprovalError::Callback(crate::policy::approval::CallbackError::Replayed) => {
            StatusCode::CONFLICT
        }
        ApprovalError::Callback(_) => StatusCode::UNAUTHORIZED,
        ApprovalError::NoWebhook => StatusCode::NOT_FOUND,
        ApprovalError::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.reason_code(), e.to_string())
}

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<ApprovalList>, ApiError> {
    admin(&s, &peer)?;
    let q = queue(&s)?;
    Ok(Json(ApprovalList {
        approvals: q.list(),
        timeout_secs: q.timeout_secs(),
    }))
}

/// Who an admin on the Unix socket is, as approval rows say it.
fn admin_name(peer: &Peer) -> String {
    peer.uid
        .map(|u| format!("uid:{u}"))
        .unwrap_or_else(|| "unknown".into())
}

async fn answer(
    s: &RouteState,
    peer: &Peer,
    id: &str,
    body: ApprovalAnswer,
    answer: Answer,
) -> Result<Json<ApprovalDone>, ApiError> {
    admin(s, peer)?;
    if body.reason.len() > 512 || body.reason.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_ARGUMENT,
            "reason must be at most 512 bytes without control characters",
        ));
    }
    let q = queue(s)?;
    let owner = match &body.signed {
        None => None,
        Some(sig) => {
            match s
                .gateway
                .verify_owner_answer(sig, id, answer, crate::gateway::unix_now())
            {
                Ok(op) => Some(op),
                Err((code, detail)) => {
                    q.audit_refused_owner(id, &sig.operator, code, &detail)
                        .await;
                    let status = if code == reason::APPROVAL_SIGNATURE_INVALID {
                        StatusCode::UNAUTHORIZED
                    } else {
                        StatusCode::FORBIDDEN
                    };
                    return Err(ApiError::new(status, code, detail));
                }
            }
        }
    };
    let approver = match &owner {
        Some(op) => format!("operator:{op} ({})", admin_name(peer)),
        None => admin_name(peer),
    };
    let approval = q
        .answer(
            id,
            Answered {
                answer,
                approver,
                channel: Channel::Api,
                reason: body.reason,
                owner,
            },
        )
        .await
        .map_err(api_error)?;
    Ok(Json(ApprovalDone {
        outcome: outcome_name(answer).into(),
        approval,
    }))
}

/// `approved` / `denied`.
pub fn outcome_name(a: Answer) -> &'static str {
    match a {
        Answer::Approve => "approved",
        Answer::Deny => "denied",
    }
}

async fn approve(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ApprovalAnswer>,
) -> Result<Json<ApprovalDone>, ApiError> {
    answer(&s, &peer, &id, body, Answer::Approve).await
}

async fn deny(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ApprovalAnswer>,
) -> Result<Json<ApprovalDone>, ApiError> {
    answer(&s, &peer, &id, body, Answer::Deny).await
}

/// The chat bridge's answer: authenticated by its HMAC over the timestamp
/// header and the exact body bytes, so the body is read raw.
async fn callback(
    State(s): St,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ApprovalDone>, ApiError> {
    let q = queue(&s)?;
    let bytes = super::json::read_body(body, MAX_CALLBACK).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let approval = q
        .callback(
            &id,
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            &bytes,
        )
        .await
        .map_err(api_error)?;
    // The answer given is in the body the signature covered.
    let outcome = serde_json::from_slice::<crate::policy::approval::CallbackBody>(&bytes)
        .map(|c| outcome_name(c.answer))
        .unwrap_or("answered");
    Ok(Json(ApprovalDone {
        outcome: outcome.into(),
        approval,
    }))
}
