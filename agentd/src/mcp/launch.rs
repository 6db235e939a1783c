//! Starting an MCP server for a session: the request the proxy sends, its
//! checks, and the launch itself — agentd runs its launcher (`agentctl
//! run`) in a fresh run cgroup `mcp-<server>-<hex>` under the agent, as the
//! agent's user, with a scrubbed environment.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Child;

use super::naming;
use crate::enforce::Enforcer;

/// Prefix of the run cgroups MCP servers live in (agentd alone names
/// cgroups; a process in one is an MCP server).
pub const LEAF_PREFIX: &str = "mcp-";
/// Longest a call may wait for the server, whatever the proxy asks.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Default wait for the server's answer.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Environment the server gets (nothing of agentd's or the proxy's).
const SERVER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the proxy asks for (`POST /v1/mcp/stdio` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The agent whose server this is.
    pub agent: String,
    /// The server's name in actions (`mcp.<server>.<tool>`).
    pub server: String,
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// The runtime's active message (`AGENTD_ACTIVE_MESSAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_message_id: Option<String>,
    /// How long one call may wait for the server (ms; capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
}

/// Errors starting a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is malformed.
    #[error("bad MCP session request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The run cgroup could not be made.
    #[error("creating the MCP server's run cgroup: {0}")]
    Enforce(#[from] crate::enforce::EnforceError),
    /// The launcher could not start.
    #[error("starting the MCP server through {launcher}: {source}")]
    Spawn {
        /// The launcher path.
        launcher: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl SessionError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            SessionError::BadRequest { .. } => "bad_request",
            SessionError::Enforce(e) => e.reason_code(),
            SessionError::Spawn { .. } => "mcp_server_start_failed",
        }
    }
}

/// How agentd starts servers.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// `agentctl` (its `run` is the launcher).
    pub agentctl: PathBuf,
    /// The enforcement socket the launcher talks to.
    pub enforce_socket: PathBuf,
}

impl OpenRequest {
    /// Checks the request's shape.
    pub fn check(&self) -> Result<(), SessionError> {
        let bad = |detail: String| SessionError::BadRequest { detail };
        naming::check_server(&self.server).map_err(|e| bad(e.to_string()))?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(bad("empty server command".into()));
        }
        if self.command.len() > 256
            || self
                .command
                .iter()
                .any(|a| a.len() > 4096 || a.contains('\0'))
        {
            return Err(bad("server command too long or holding NUL".into()));
        }
        Ok(())
    }

    pub(super) fn call_timeout(&self) -> Duration {
        self.call_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CALL_TIMEOUT)
            .clamp(Duration::from_millis(10), MAX_CALL_TIMEOUT)
    }
}

/// A started server, not yet relaying.
pub struct Started {
    pub(super) req: OpenRequest,
    pub(super) leaf: String,
    pub(super) child: Child,
    pub(super) cgroup: PathBuf,
    pub(super) creds: crate::enforce::Creds,
    pub(super) enforcer: Enforcer,
}

/// Whether `pid` is an MCP server started by agentd (its cgroup is an
/// `mcp-` run cgroup).
pub fn is_server_process(pid: u32) -> bool {
    crate::enforce::pid_cgroups::cgroup_of(pid).is_some_and(|p| {
        p.rsplit('/')
            .next()
            .is_some_and(|leaf| leaf.starts_with(LEAF_PREFIX))
    })
}

/// Creates the server's run cgroup and starts it there through the
/// launcher, as `user`.
pub fn start(
    enforcer: &Enforcer,
    launcher: &Launcher,
    req: OpenRequest,
    user: &str,
) -> Result<Started, SessionError> {
    req.check()?;
    let creds =
        crate::enforce::launch::creds_of_user(user).map_err(|e| SessionError::BadRequest {
            detail: e.to_string(),
        })?;
    let leaf = format!("{LEAF_PREFIX}{}-{:08x}", req.server, rand::random::<u32>());
    let handle = enforcer.create_leaf(&req.agent, &leaf)?;
    let mut cmd = tokio::process::Command::new(&launcher.agentctl);
    cmd.arg("run")
        .args(["--agent", &req.agent, "--user", user])
        .arg("--socket")
        .arg(&launcher.enforce_socket)
        .arg("--run-cgroup")
        .arg(&handle.cgroup)
        .arg("--")
        .args(&req.command)
        .env_clear()
        .env("PATH", SERVER_PATH)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            let _ = enforcer.remove_leaf(&req.agent, &leaf);
            return Err(SessionError::Spawn {
                launcher: launcher.agentctl.clone(),
                source,
            });
        }
    };
    tracing::info!(agent = %req.agent, server = %req.server, leaf, "MCP server started");
    Ok(Started {
        req,
        leaf,
        child,
        cgroup: handle.cgroup,
        creds,
        enforcer: enforcer.clone(),
    })
}

impl Started {
    /// Stops a server whose session never began (the upgrade failed) and
    /// removes its run cgroup.
    pub async fn abandon(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let (enforcer, agent, leaf) = (self.enforcer, self.req.agent, self.leaf);
        let _ = tokio::task::spawn_blocking(move || enforcer.remove_leaf(&agent, &leaf)).await;
    }
}
