//! The console's routes on the Unix API (admins only), merged into `/v1`:
//!
//! - `POST /v1/console/login-links`: a one-time login link (`agentctl console`);
//! - `POST /v1/console/confirmations`: a confirmation token for a change
//!   made in the console (`agentctl console --confirm`).
//!
//! Both are audited; both answer `console_disabled` when `[console] listen`
//! is not set.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};

use super::{Confirmation, Console, LoginLink};
use crate::api::{Access, ApiError, Peer};
use crate::protocol::reason;

struct St {
    console: Option<Arc<Console>>,
    access: Access,
}

type S = State<Arc<St>>;

/// The routes, ready to merge into the API router.
pub fn routes(console: Option<Arc<Console>>, access: Access) -> Router {
    Router::new()
        .route("/v1/console/login-links", post(login_link))
        .route("/v1/console/confirmations", post(confirmation))
        .with_state(Arc::new(St { console, access }))
}

fn check(s: &St, peer: &Peer) -> Result<(Arc<Console>, String), ApiError> {
    if !s.access.is_admin(peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::PERMISSION_DENIED,
            "the console is for administrators (root or the admin group)",
        ));
    }
    let console = s.console.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            reason::CONSOLE_DISABLED,
            "the web console is off: set [console] listen = \"127.0.0.1:PORT\" in agentd.toml",
        )
    })?;
    let admin = peer
        .uid
        .map(|u| format!("uid:{u}"))
        .unwrap_or_else(|| "unknown".into());
    Ok((console, admin))
}

async fn login_link(
    State(s): S,
    Extension(peer): Extension<Peer>,
) -> Result<Json<LoginLink>, ApiError> {
    let (console, admin) = check(&s, &peer)?;
    console.login_link(&admin).await.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reason::CONSOLE_DISABLED,
            "the console is not listening yet",
        )
    })
}

async fn confirmation(
    State(s): S,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Confirmation>, ApiError> {
    let (console, admin) = check(&s, &peer)?;
    Ok(Json(console.confirmation(&admin).await))
}
