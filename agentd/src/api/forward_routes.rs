//! The forward proxy's listeners: every request on the model socket goes to
//! `forward::proxy` with the caller's credentials (SO_PEERCRED). Only an
//! agent's processes, the agent user and administrators may use it: the
//! upstream key it holds is not for anyone else on the host. On the
//! loopback TCP listener only agents may: the caller is the process holding
//! the connecting socket, in the agent's cgroup the kernel named.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::{Extension, Router};

use super::peer::{Access, Peer, Transport};
use crate::forward::proxy::Proxy;
use crate::gateway::Caller;

#[derive(Clone)]
struct ForwardState {
    proxy: Arc<Proxy>,
    access: Access,
}

/// The model socket's router (every path: the proxy answers 404 in the
/// provider's shape for what it does not forward).
pub fn routes(proxy: Arc<Proxy>, access: Access) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(ForwardState { proxy, access })
}

async fn handle(
    State(s): State<ForwardState>,
    Extension(peer): Extension<Peer>,
    req: Request,
) -> Response<Body> {
    let caller = Caller {
        pid: peer.pid,
        uid: peer.uid,
        gid: peer.gid,
        admin: s.access.is_admin(&peer),
    };
    let agent = peer.pid.and_then(|_| s.proxy.agent_of(caller)).is_some();
    let may_use = match peer.transport {
        Transport::Unix => agent || s.access.may_call_tools(&peer),
        Transport::Loopback => agent,
        Transport::Tcp => false,
    } && !peer.pid.is_some_and(crate::mcp::is_server_process);
    s.proxy.handle(caller, may_use, req).await
}
