//! The live web console: a read-mostly view of the audit log, calls,
//! the chain, agents and charts for admins, served by agentd on a loopback
//! address (`[console] listen`). See docs/console.md.
//!
//! - `auth`: one-time login links, sessions (the HttpOnly SameSite=Strict
//!   cookie) and confirmation tokens (pure);
//! - `csrf`: Host, Origin and CSRF-token checks (pure);
//! - `filter`: which rows the stream shows, and a row's JSON shape (pure);
//! - `sse`: the live audit stream (server-sent events), woken by the audit
//!   writer's commit counter and reading new rows from the database;
//! - `views`: one call end to end, the chain's state, agents, counts;
//! - `routes`: the console's HTTP routes; `admin`: the `/v1/console/*`
//!   routes on the Unix API through which `agentctl console` asks for a
//!   login link or a confirmation token;
//! - `assets`: the hand-written page, script and style, compiled in.
pub mod admin;
pub mod approvals;
pub mod assets;
pub mod auth;
pub mod csrf;
pub mod filter;
pub mod routes;
pub mod sse;
pub mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agents::AgentManager;
use crate::audit::{AuditEvent, AuditLog, RecordKind};
use crate::config::ConsoleConfig;
use crate::enforce::EnforceSlot;
use crate::gateway::Gateway;
use crate::receipt::ReceiptQueue;

/// Errors starting the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// `[console] listen` is not a loopback IP:PORT (config validation
    /// refuses this first; checked again where the socket is bound).
    #[error("[console] listen `{addr}`: {why}")]
    BadAddress {
        /// The configured address.
        addr: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The address could not be bound.
    #[error("binding the console on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What the console reads and changes.
pub struct Parts {
    /// The gateway (policy, operators and their keys).
    pub gateway: Arc<Gateway>,
    /// The audit log (rows, commits, checkpoint key).
    pub audit: AuditLog,
    /// The enforcer, once started (agents, modes, live grants).
    pub enforce: EnforceSlot,
    /// Agents' stored settings (their mode is kept there too).
    pub agents: Option<Arc<AgentManager>>,
    /// The receipt queue (where a call's receipt is, and why it failed).
    pub receipts: Option<ReceiptQueue>,
}

/// The console: its settings, token store and what it shows.
pub struct Console {
    config: ConsoleConfig,
    parts: Parts,
    tokens: Mutex<auth::Tokens>,
    origins: OnceLock<csrf::Origins>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

/// A one-time login link (`agentctl console`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLink {
    /// The URL to open (works once).
    pub url: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
}

/// A confirmation token (`agentctl console --confirm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The token to paste into the console (works once).
    pub token: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Console {
    /// A console with `config`; `stop` turning true ends its live streams
    /// (so shutdown does not wait on open pages).
    pub fn new(config: ConsoleConfig, parts: Parts, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            config,
            parts,
            tokens: Mutex::new(auth::Tokens::default()),
            origins: OnceLock::new(),
            stop,
        })
    }

    /// Binds `[console] listen` (loopback only) and remembers the address
    /// its pages are served from.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, ConsoleError> {
        let addr = self.config.listen.clone().unwrap_or_default();
        let sa: SocketAddr = addr.parse().map_err(|_| ConsoleError::BadAddress {
            addr: addr.clone(),
            why: "expected IP:PORT",
        })?;
        if !sa.ip().is_loopback() {
            return Err(ConsoleError::BadAddress {
                addr,
                why: "must be a loopback address",
            });
        }
        let l = tokio::net::TcpListener::bind(sa)
            .await
            .map_err(|source| ConsoleError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let bound = l.local_addr().unwrap_or(sa);
        let _ = self.origins.set(csrf::Origins::of(bound));
        Ok(l)
    }

    /// Serves on a listener bound elsewhere (tests, benchmarks).
    pub fn set_bound(&self, addr: SocketAddr) {
        let _ = self.origins.set(csrf::Origins::of(addr));
    }

    /// The address pages are served from (after [`Self::bind`]).
    pub fn origins(&self) -> Option<&csrf::Origins> {
        self.origins.get()
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, auth::Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a one-time login link for `admin` (audited).
    pub async fn login_link(&self, admin: &str) -> Option<LoginLink> {
        let base = self.origins()?.base_url();
        let ttl = self.config.login_ttl_secs;
        let token = self.tokens().issue_link(admin, now_secs(), ttl);
        self.record(
            admin,
            "console_login_link",
            &format!("expires_in={ttl}s"),
            "allow",
            crate::protocol::reason::OK,
        )
        .await;
        Some(LoginLink {
            url: format!("{base}/login?token={token}"),
            expires_in_secs: ttl,
        })
    }

    /// Issues a confirmation token for `admin` (audited).
    pub async fn confirmation(&self, admin: &str) -> Confirmation {
        let ttl = self.config.confirm_ttl_secs;
        let token = self.tokens().issue_confirm(admin, now_secs(), ttl);
        self.record(
            admin,
            "console_confirmation",
            &format!("expires_in={ttl}s"),
            "allow",
            crate::protocol::reason::OK,
        )
        .await;
        Confirmation {
            token,
            expires_in_secs: ttl,
        }
    }

    /// Signs a session in directly (benchmarks and tests that bypass the
    /// browser): returns the cookie value and the CSRF token.
    pub fn session_for_bench(&self, admin: &str) -> (String, String) {
        let now = now_secs();
        let mut t = self.tokens();
        let link = t.issue_link(admin, now, 60);
        let (cookie, s) = t
            .redeem_link(&link, now, self.config.session_ttl_secs)
            .expect("a fresh link redeems");
        (cookie, s.csrf)
    }

    /// Appends an administrative row for something done through the
    /// console (best effort: the change has happened, or it was a refusal
    /// that is answered either way).
    async fn record(
        &self,
        operator: &str,
        action: &str,
        target: &str,
        decision: &str,
        reason: &str,
    ) {
        let mut ev = AuditEvent::new(RecordKind::Admin, action);
        ev.operator = operator.to_owned();
        ev.target = target.to_owned();
        ev.decision = decision.to_owned();
        ev.reason_code = reason.to_owned();
        ev.policy_id = "console".into();
        if let Err(e) = self.parts.audit.append(ev).await {
            tracing::error!(error = %e, action, "could not audit a console event");
        }
    }
}
