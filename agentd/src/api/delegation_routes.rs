//! Delegation on the API, merged into the `/v1` router (Unix socket only):
//!
//! - `POST /v1/delegations` body [`IssueRequest`] (any local caller: the
//!   issuer's signature decides): 201 [`Issued`], the secret shown once.
//! - `GET  /v1/delegations` (admin): every token, without secrets.
//! - `POST /v1/delegations/revoke` body [`RevokeRequest`]: unsigned from an
//!   admin, or signed by the token or a link up its chain.
//!
//! Every outcome is audited (`delegation_issue`, `delegation_revoke`),
//! refusals included; a flood of refusals is cut like unverified messages.
use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};

use super::json::{ApiError, JsonBody};
use super::peer::{Access, Peer, Transport};
use crate::audit::{AuditEvent, RecordKind};
use crate::gateway::decide::claimed_operator;
use crate::gateway::delegation::{DelegationError, DelegationInfo, ErrorClass, Issued, Revoked};
use crate::gateway::{unix_now, Gateway};
use crate::protocol::delegation::{IssueRequest, RevokeRequest};
use crate::protocol::reason;

/// `GET /v1/delegations` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationList {
    /// Every token, newest first.
    pub delegations: Vec<DelegationInfo>,
}

struct RouteState {
    gateway: Arc<Gateway>,
    access: Access,
}

type St = State<Arc<RouteState>>;

/// The routes, ready to merge.
pub fn routes(gateway: Arc<Gateway>, access: Access) -> Router {
    Router::new()
        .route("/v1/delegations", get(list).post(issue))
        .route("/v1/delegations/revoke", post(revoke))
        .with_state(Arc::new(RouteState { gateway, access }))
}

fn local_only(peer: &Peer) -> Result<(), ApiError> {
    if peer.transport == Transport::Unix {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        reason::PERMISSION_DENIED,
        "delegations are managed on the Unix socket only",
    ))
}

fn who(peer: &Peer) -> String {
    peer.uid
        .map(|u| format!("uid:{u}"))
        .unwrap_or_else(|| "tcp".into())
}

fn status_of(e: &DelegationError) -> StatusCode {
    match e.class {
        ErrorClass::Malformed => StatusCode::BAD_REQUEST,
        ErrorClass::Refused => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A refusal, audited unless it is part of a flood (then 429, unaudited
/// after the first of the run).
async fn refuse(
    s: &RouteState,
    peer: &Peer,
    claimed: &str,
    action: &str,
    target: String,
    e: DelegationError,
) -> ApiError {
    let unverified = matches!(e.class, ErrorClass::Malformed | ErrorClass::NotFound)
        || matches!(
            e.reason_code,
            reason::SIGNATURE_MISMATCH | reason::UNKNOWN_OPERATOR | reason::OPERATOR_REVOKED
        );
    if unverified {
        if let Some(first) = s.gateway.delegation_flood(&who(peer), claimed) {
            if first {
                record(
                    s,
                    &claimed_operator(claimed),
                    action,
                    &target,
                    reason::RATE_LIMITED,
                )
                .await;
            }
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                reason::RATE_LIMITED,
                format!("too many refused delegation requests from {} or claiming `{claimed}`; try later", who(peer)),
            );
        }
    }
    // Only a verified signer is named as such.
    let by = if unverified {
        claimed_operator(claimed)
    } else {
        claimed.to_owned()
    };
    record(s, &by, action, &target, e.reason_code).await;
    ApiError::new(status_of(&e), e.reason_code, e.message)
}

/// Appends the row; the change (or refusal) has happened, so a failure is
/// logged loudly rather than undone.
async fn record(s: &RouteState, by: &str, action: &str, target: &str, code: &str) {
    let Some(audit) = s.gateway.audit() else {
        return;
    };
    let mut ev = AuditEvent::new(RecordKind::Admin, action);
    ev.operator = by.chars().take(1024).collect();
    ev.target = target.chars().take(1024).collect();
    ev.decision = if code == reason::OK { "allow" } else { "deny" }.into();
    ev.reason_code = code.to_owned();
    ev.policy_id = s
        .gateway
        .current_policy()
        .map(|p| p.id.clone())
        .unwrap_or_default();
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, action, "could not audit a delegation change");
    }
}

async fn issue(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<IssueRequest>,
) -> Result<(StatusCode, Json<Issued>), ApiError> {
    local_only(&peer)?;
    let actions: Vec<&str> = req.scope.keys().map(String::as_str).collect();
    let asked = format!(
        "to={} actions={} ttl_secs={} uses={}",
        req.to,
        actions.join(","),
        req.ttl_secs,
        req.uses
    );
    let gateway = s.gateway.clone();
    let r = req.clone();
    let out = super::json::off_runtime(move || gateway.issue_delegation(&r, unix_now())).await?;
    match out {
        Ok(issued) => {
            let d = &issued.delegation;
            let target = format!(
                "{} {asked} depth={} expires_at={}",
                d.id, d.depth, d.expires_at
            );
            record(&s, &req.issuer, "delegation_issue", &target, reason::OK).await;
            Ok((StatusCode::CREATED, Json(issued)))
        }
        Err(e) => Err(refuse(&s, &peer, &req.issuer, "delegation_issue", asked, e).await),
    }
}

async fn list(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<DelegationList>, ApiError> {
    if !s.access.is_admin(&peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "listing delegations (root or the admin group) is not permitted for this caller",
        ));
    }
    Ok(Json(DelegationList {
        delegations: s.gateway.list_delegations(),
    }))
}

async fn revoke(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> Result<Json<Revoked>, ApiError> {
    local_only(&peer)?;
    let admin = s.access.is_admin(&peer);
    let by = req.by.clone().unwrap_or_else(|| who(&peer));
    let gateway = s.gateway.clone();
    let r = req.clone();
    // Ending grants writes BPF maps: off the runtime.
    let out =
        super::json::off_runtime(move || gateway.revoke_delegation(&r, admin, unix_now())).await?;
    match out {
        Ok(done) => {
            let target = format!(
                "{} tokens_ended={} grants_revoked={}",
                done.id,
                done.tokens.len(),
                done.grants_revoked
            );
            record(&s, &by, "delegation_revoke", &target, reason::OK).await;
            Ok(Json(done))
        }
        Err(e) => Err(refuse(&s, &peer, &by, "delegation_revoke", req.id.clone(), e).await),
    }
}
