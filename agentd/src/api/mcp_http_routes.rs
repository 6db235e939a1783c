//! The MCP gateway's Streamable HTTP listener (`[mcp]` socket_path and
//! listen): names the caller from its connection and hands the request to
//! `mcp::http`. On the Unix socket the caller is SO_PEERCRED's process (or
//! the agent process a deputy connection was made for); on loopback TCP
//! (`api::Listener::Loopback`) it is the process holding the connecting
//! socket, named by the cgroup the kernel reports for that socket
//! (`enforce::tcp_peer`). Only agent processes are served, and never an
//! MCP server agentd started.
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::{Extension, Router};

use super::peer::{Peer, Transport};
use crate::enforce::EnforceSlot;
use crate::gateway::Caller;
use crate::mcp::http::{HttpCaller, HttpGateway};

#[derive(Clone)]
struct HttpState {
    gateway: Arc<HttpGateway>,
    slot: EnforceSlot,
}

/// The endpoint's router (every path: `mcp::http` answers unknown ones).
pub fn routes(gateway: Arc<HttpGateway>, slot: EnforceSlot) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(HttpState { gateway, slot })
}

async fn handle(
    State(s): State<HttpState>,
    Extension(peer): Extension<Peer>,
    req: Request,
) -> Response<Body> {
    let who = {
        let slot = s.slot.clone();
        tokio::task::spawn_blocking(move || caller_of(&slot, peer))
            .await
            .unwrap_or_else(|e| Err(format!("naming the caller failed: {e}")))
    };
    s.gateway.handle(who, req).await
}

/// The agent process behind a connection, or why it is not one. A
/// loopback caller was named when its connection was accepted (the
/// kernel's record of the connecting socket: its cgroup, the process
/// holding it).
fn caller_of(slot: &EnforceSlot, peer: Peer) -> Result<HttpCaller, String> {
    let enforcer = slot
        .get()
        .ok_or_else(|| format!("enforcement is unavailable: {}", slot.unavailable_reason()))?;
    if peer.transport == Transport::Tcp {
        return Err("plain TCP callers cannot be named".into());
    }
    let pid = peer
        .pid
        .ok_or("the caller is unknown (no agent process holds the connecting socket)")?;
    let agent = enforcer
        .agent_of_pid(pid)
        .ok_or_else(|| format!("process {pid} is no agent's"))?;
    if crate::mcp::is_server_process(pid) {
        return Err("an MCP server agentd started may not call MCP tools".into());
    }
    // A loopback peer carries no group: the process's, as /proc has it
    // (its directory's owner).
    let gid = peer.gid.or_else(|| {
        std::fs::metadata(format!("/proc/{pid}"))
            .ok()
            .map(|m| m.gid())
    });
    Ok(HttpCaller {
        agent,
        caller: Caller {
            pid: Some(pid),
            uid: peer.uid,
            gid,
            admin: false,
        },
    })
}
