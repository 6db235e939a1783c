//! The MCP gateway's Streamable HTTP listener (`[mcp]` socket_path and
//! listen): names the caller from its connection and hands the request to
//! `mcp::http`. On the Unix socket the caller is SO_PEERCRED's process (or
//! the agent process a deputy connection was made for); on loopback TCP it
//! is the process holding the connecting socket, named by the cgroup the
//! kernel reports for that socket (`enforce::tcp_peer`). Only agent
//! processes are served, and never an MCP server agentd started.
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::{Extension, Router};

use super::peer::{Peer, TcpEnds, Transport};
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
        let ends = req.extensions().get::<TcpEnds>().copied();
        tokio::task::spawn_blocking(move || caller_of(&slot, peer, ends))
            .await
            .unwrap_or_else(|e| Err(format!("naming the caller failed: {e}")))
    };
    s.gateway.handle(who, req).await
}

/// The agent process behind a connection, or why it is not one.
fn caller_of(slot: &EnforceSlot, peer: Peer, ends: Option<TcpEnds>) -> Result<HttpCaller, String> {
    let enforcer = slot
        .get()
        .ok_or_else(|| format!("enforcement is unavailable: {}", slot.unavailable_reason()))?;
    let (agent, pid, uid, gid) = match (peer.transport, ends) {
        // A loopback peer the forward listener already named carries its pid.
        (Transport::Unix | Transport::Loopback, _) => {
            let pid = peer.pid.ok_or("the caller's credentials are unknown")?;
            let agent = enforcer
                .agent_of_pid(pid)
                .ok_or_else(|| format!("process {pid} is no agent's"))?;
            (agent, pid, peer.uid, peer.gid)
        }
        (Transport::Tcp, Some(e)) => {
            let found = enforcer
                .agent_of_tcp_peer(e.local, e.remote)
                .map_err(|err| err.to_string())?
                .ok_or_else(|| format!("the socket connecting from {} is no agent's", e.remote))?;
            let pid = found.pid.ok_or_else(|| {
                format!(
                    "no process of agent `{}` holds the socket connecting from {}",
                    found.agent, e.remote
                )
            })?;
            // The process's group, as /proc has it (its directory's owner).
            let gid = std::fs::metadata(format!("/proc/{pid}"))
                .ok()
                .map(|m| m.gid());
            (found.agent, pid, Some(found.uid), gid)
        }
        (Transport::Tcp, None) => return Err("the connection's addresses are unknown".into()),
    };
    if crate::mcp::is_server_process(pid) {
        return Err("an MCP server agentd started may not call MCP tools".into());
    }
    Ok(HttpCaller {
        agent,
        caller: Caller {
            pid: Some(pid),
            uid,
            gid,
            admin: false,
        },
    })
}
