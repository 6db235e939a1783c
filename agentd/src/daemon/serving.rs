//! What `agentd run` serves besides the API socket, in named steps: the
//! forward proxy, the MCP HTTP endpoint, the remote operators' TCP
//! listener, the agents' re-application on policy changes, pruning, and
//! the signal loop. Every listener serves under the same connection
//! limits and stops with the same signal.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};

use super::{audit_lifecycle, bind_unix, load_policy_file, loopback_lookup, SHUTDOWN_GRACE};
use crate::{
    agents::AgentManager,
    api::{self, Access, ConnLimits, Listener},
    audit::AuditLog,
    config::Config,
    enforce::EnforceSlot,
    gateway::{unix_now, Gateway},
    mcp::pins::PinStore,
};

/// How often expired nonces and active messages are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The running listeners: one task each, one stop signal, one set of limits.
pub(super) struct Servers {
    stop: watch::Receiver<bool>,
    limits: ConnLimits,
    handles: Vec<JoinHandle<()>>,
}

impl Servers {
    /// No listener yet.
    pub(super) fn new(stop: watch::Receiver<bool>, limits: ConnLimits) -> Self {
        Servers {
            stop,
            limits,
            handles: Vec::new(),
        }
    }

    /// Serves `router` on `listener` until the stop signal.
    pub(super) fn spawn(&mut self, listener: Listener, router: Router) {
        self.handles.push(tokio::spawn(api::serve_limited(
            listener,
            router,
            self.stop.clone(),
            SHUTDOWN_GRACE,
            self.limits,
        )));
    }

    /// Waits for every listener to finish (after the stop signal).
    pub(super) async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Re-applies every agent's baseline when a policy loads (synchronously:
/// when a load returns, running agents have the baselines the new
/// policy's profiles give them), and once enforcement has started.
pub(super) fn reapply_agents_on_change(
    gateway: &Gateway,
    agents: &Arc<AgentManager>,
    enforce: &EnforceSlot,
) -> anyhow::Result<()> {
    let m = Arc::downgrade(agents);
    gateway.add_policy_listener(Arc::new(move || {
        if let Some(m) = m.upgrade() {
            let failed = m.reapply_all();
            if !failed.is_empty() {
                tracing::error!(
                    ?failed,
                    "policy reload: some agents kept their previous baseline"
                );
            }
        }
    }));
    let m = agents.clone();
    let slot = enforce.clone();
    std::thread::Builder::new()
        .name("agentd-agents-apply".into())
        .spawn(move || {
            while !slot.settled() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let failed = m.reapply_all();
            if !failed.is_empty() {
                tracing::error!(?failed, "start-up: some agents could not be applied");
            }
        })
        .context("spawning the agents thread")?;
    Ok(())
}

/// Forward mode: the model-API proxy on a socket of its own, and
/// optionally on loopback TCP (callers named by their socket's cgroup).
pub(super) async fn serve_forward(
    config: &Config,
    gateway: &Arc<Gateway>,
    access: &Access,
    agents: &Arc<AgentManager>,
    enforce: &EnforceSlot,
    servers: &mut Servers,
) -> anyhow::Result<()> {
    if config.forward.tcp_listen.is_some() && config.forward.socket_path.is_none() {
        anyhow::bail!("[forward] tcp_listen needs socket_path (the proxy is off without it)");
    }
    let Some(path) = &config.forward.socket_path else {
        return Ok(());
    };
    let proxy = Arc::new(
        crate::forward::proxy::Proxy::new(gateway.clone(), &config.forward, true)
            .context("starting the forward proxy ([forward])")?,
    );
    let listener = bind_unix(path)?;
    agents.set_forward_socket(path.clone());
    tracing::info!(socket = %path.display(), on_deny = ?config.forward.on_deny, "forward proxy serving");
    let routes = api::forward_routes::routes(proxy, access.clone());
    servers.spawn(Listener::Unix(listener), routes.clone());
    let Some(addr) = &config.forward.tcp_listen else {
        return Ok(());
    };
    let sa: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("[forward] tcp_listen `{addr}`: expected IP:PORT"))?;
    if !sa.ip().is_loopback() {
        anyhow::bail!("[forward] tcp_listen `{addr}` must be a loopback address: only there can the kernel name the connecting agent");
    }
    let tcp = tokio::net::TcpListener::bind(sa)
        .await
        .with_context(|| format!("binding the forward proxy's TCP {addr}"))?;
    let bound = tcp.local_addr().unwrap_or(sa);
    agents.set_forward_tcp(bound);
    tracing::info!(%bound, "forward proxy serving on loopback TCP (callers named by their socket's cgroup)");
    servers.spawn(
        Listener::Loopback(tcp, loopback_lookup(enforce.clone())),
        routes,
    );
    Ok(())
}

/// The MCP gateway's Streamable HTTP endpoint, on its own socket and
/// loopback port.
pub(super) async fn serve_mcp_http(
    config: &Config,
    gateway: &Arc<Gateway>,
    pins: &Arc<PinStore>,
    enforce: &EnforceSlot,
    servers: &mut Servers,
) -> anyhow::Result<()> {
    if config.mcp.socket_path.is_none() && config.mcp.listen.is_none() {
        return Ok(());
    }
    let http = Arc::new(
        crate::mcp::http::HttpGateway::new(gateway.clone(), pins.clone(), &config.mcp)
            .context("starting the MCP HTTP endpoint ([mcp])")?,
    );
    let router = api::mcp_http_routes::routes(http, enforce.clone());
    if let Some(path) = &config.mcp.socket_path {
        let listener = bind_unix(path)?;
        tracing::info!(socket = %path.display(), servers = config.mcp.servers.len(), "MCP HTTP endpoint serving");
        servers.spawn(Listener::Unix(listener), router.clone());
    }
    if let Some(addr) = &config.mcp.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the MCP endpoint {addr}"))?;
        tracing::info!(
            addr,
            servers = config.mcp.servers.len(),
            "MCP HTTP endpoint serving (loopback)"
        );
        servers.spawn(
            Listener::Loopback(tcp, loopback_lookup(enforce.clone())),
            router,
        );
    }
    Ok(())
}

/// The optional TCP listener for remote operators (messages only), with
/// TLS when configured.
pub(super) async fn serve_remote(
    config: &Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    servers: &mut Servers,
) -> anyhow::Result<()> {
    let Some(addr) = &config.tcp_listen else {
        return Ok(());
    };
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding TCP {addr}"))?;
    let listener = match tls {
        Some(acceptor) => {
            tracing::info!(
                addr,
                mutual = config.tls_client_ca.is_some(),
                "TLS listener for remote operators (messages only)"
            );
            Listener::Tls(tcp, acceptor)
        }
        None => {
            tracing::info!(
                addr,
                "plain HTTP loopback listener for remote operators (messages only)"
            );
            Listener::Tcp(tcp)
        }
    };
    servers.spawn(listener, app);
    Ok(())
}

/// Once enforcement has started, ends again the grants it re-adopted that
/// a stored suspension covers (they were installed before the suspension
/// was set, or its revocation did not reach the state file).
pub(super) fn reapply_suspensions_when_enforcing(gateway: Arc<Gateway>, enforce: EnforceSlot) {
    if gateway.suspensions().is_empty() {
        return;
    }
    tokio::spawn(async move {
        while !enforce.settled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ended = tokio::task::spawn_blocking(move || gateway.reapply_suspensions())
            .await
            .unwrap_or(0);
        tracing::info!(
            grants_revoked = ended,
            "suspensions re-applied to the enforcer"
        );
    });
}

/// Prunes expired nonces and active messages every [`PRUNE_INTERVAL`].
pub(super) fn spawn_pruner(gateway: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tick.tick().await;
            match gateway.prune(unix_now()) {
                Ok(n) if n > 0 => {
                    tracing::debug!(removed = n, "pruned expired nonces and active messages")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "pruning failed"),
            }
        }
    })
}

/// Tells the service manager agentd is ready, then serves until SIGTERM or
/// SIGINT; SIGHUP reloads the configured policy file (a refused one
/// leaves the old policy in force), audited either way.
pub(super) async fn until_stopped(
    config: &Config,
    gateway: &Gateway,
    audit: &AuditLog,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %config.socket_path.display(), state_dir = %config.state_dir.display(),
        policy = gateway.current_policy().map(|p| p.id.clone()).unwrap_or_default(), "agentd serving");
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload_policy(config, gateway, audit).await,
        }
    }
}

/// SIGHUP: reloads `gateway.policy_file`, if one is configured.
async fn reload_policy(config: &Config, gateway: &Gateway, audit: &AuditLog) {
    let Some(p) = &config.gateway.policy_file else {
        tracing::info!("SIGHUP: no gateway.policy_file configured; nothing to reload");
        return;
    };
    match load_policy_file(gateway, p) {
        Ok(id) => {
            tracing::info!(policy_id = %id, "SIGHUP: policy reloaded");
            audit_lifecycle(audit, "policy_load", "ok", &p.display().to_string(), &id).await;
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: policy refused; the old policy stays in force");
            audit_lifecycle(
                audit,
                "policy_load",
                "invalid_policy",
                &p.display().to_string(),
                "",
            )
            .await;
        }
    }
}
