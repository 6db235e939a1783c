//! The console's approval queue: `GET /api/approvals` (session) and
//! `POST /api/approvals/{id}/approve|deny` (session and CSRF token, like
//! every state-changing console request). An answer here is recorded by
//! the queue as an admin approval from the console (`console:uid:N`,
//! channel `console`), never as an operator's signature.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::Console;
use crate::api::approval_routes::{
    api_error, outcome_name, ApprovalAnswer, ApprovalDone, ApprovalList,
};
use crate::api::ApiError;
use crate::gateway::approvals::{Answer, Answered, Approvals, Channel};
use crate::protocol::reason;

type St = State<Arc<Console>>;

/// Largest answer body, bytes.
const MAX_BODY: usize = 4096;

fn queue(c: &Console) -> Result<Arc<Approvals>, ApiError> {
    c.parts.gateway.approvals().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::APPROVAL_UNAVAILABLE,
            "this daemon has no approval queue",
        )
    })
}

/// `GET /api/approvals`: the calls waiting, oldest first.
pub async fn list(State(c): St, h: HeaderMap) -> Result<Json<ApprovalList>, ApiError> {
    c.session_of(&h)?;
    let q = queue(&c)?;
    Ok(Json(ApprovalList {
        approvals: q.list(),
        timeout_secs: q.timeout_secs(),
    }))
}

/// `POST /api/approvals/{id}/{verb}` with `{"reason": "..."}`.
pub async fn answer(
    State(c): St,
    h: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalDone>, ApiError> {
    let (_, s) = c.session_csrf(&h)?;
    let answer = match verb.as_str() {
        "approve" => Answer::Approve,
        "deny" => Answer::Deny,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                reason::NOT_FOUND,
                "answer with approve or deny",
            ))
        }
    };
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            reason::BODY_TOO_LARGE,
            "body too large",
        ));
    }
    let req: ApprovalAnswer = crate::api::json::parse(&body)?;
    if req.reason.len() > 512 || req.reason.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_ARGUMENT,
            "reason must be at most 512 bytes without control characters",
        ));
    }
    let approval = queue(&c)?
        .answer(
            &id,
            Answered {
                answer,
                approver: format!("console:{}", s.admin),
                channel: Channel::Console,
                reason: format!("{} (console session {})", req.reason, s.id),
                // A console click is an admin's, never an owner's signature.
                owner: None,
            },
        )
        .await
        .map_err(api_error)?;
    Ok(Json(ApprovalDone {
        outcome: outcome_name(answer).into(),
        approval,
    }))
}
