//! `agentd run`: config → private state directory → audit log and gateway
//! stores → API on the Unix socket (and optional TCP) → READY=1 to systemd;
//! SIGHUP reloads `gateway.policy_file`; SIGTERM/SIGINT shut down gracefully
//! (in-flight requests finish, the audit log writes its final checkpoint).
pub mod enforcement;
mod malloc;
mod serving;

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;

use crate::api::{self, Access, AppState, Listener};
use crate::audit::{AuditEvent, AuditLog, RecordKind};
use crate::config::Config;
use crate::gateway::{Gateway, Settings};

/// The API's admin rule (root or the admin group), for the enforcement
/// socket too: one rule for both transports of the control plane.
fn admin_rule(access: &Access) -> crate::enforce::control::AdminRule {
    let access = access.clone();
    Arc::new(move |uid, gid| {
        access.is_admin(&api::Peer {
            transport: api::peer::Transport::Unix,
            pid: None,
            uid: Some(uid),
            gid: Some(gid),
        })
    })
}

/// How long open connections may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before any thread starts: this reads and unsets LISTEN_FDS & co.
    let stored = crate::enforce::fdstore::take_inherited();
    if !stored.is_empty() {
        tracing::info!(
            fds = stored.len(),
            "the service manager handed back stored fds"
        );
    }
    malloc::configure();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentd")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_with_stored(config, stored))
}

/// Creates the state directory 0700 (tightening an existing one).
fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    Ok(())
}

/// Names the caller of a loopback connection (the forward proxy's and the
/// MCP endpoint's listeners): the agent whose cgroup created the connecting
/// socket, and the process holding it; anyone else (or a failed lookup) is
/// unknown, and refused.
fn loopback_lookup(slot: crate::enforce::EnforceSlot) -> api::PeerLookup {
    Arc::new(move |local, remote| {
        let unknown = api::peer::Peer::loopback(None, None);
        let Some(e) = slot.get() else {
            return unknown;
        };
        match e.agent_of_tcp_peer(local, remote) {
            Ok(Some(c)) if c.pid.is_some() => api::peer::Peer::loopback(c.pid, Some(c.uid)),
            Ok(Some(c)) => {
                tracing::warn!(agent = %c.agent, "loopback: no process of the agent holds the connecting socket; refused");
                unknown
            }
            Ok(None) => unknown,
            Err(err) => {
                tracing::warn!(error = %err, "loopback: the caller of a connection is unknown; refused");
                unknown
            }
        }
    })
}

/// Binds the API socket, replacing a stale socket file but never a live daemon's
/// socket or a non-socket file. Mode 0666: SO_PEERCRED decides permissions.
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another agentd is serving on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// Whether the policy in force is the fleet's central one (local policy
/// files are then not loaded).
fn config_is_fleet_central(gateway: &Gateway) -> bool {
    gateway.policy_is_central()
}

fn load_policy_file(gateway: &Gateway, path: &Path) -> anyhow::Result<String> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy file {}", path.display()))?;
    let origin = path.display().to_string();
    if config_is_fleet_central(gateway) {
        return Err(crate::gateway::GatewayError::CentralPolicy {
            origin: gateway.policy_info().map(|i| i.origin).unwrap_or_default(),
        }
        .into());
    }
    if gateway.current_policy().is_some_and(|p| p.source == source) {
        return Ok(gateway
            .current_policy()
            .map(|p| p.id.clone())
            .unwrap_or_default());
    }
    let info = gateway.load_policy(&source, &origin)?;
    Ok(info.policy_id)
}

async fn audit_lifecycle(
    audit: &AuditLog,
    action: &str,
    reason_code: &str,
    target: &str,
    policy_id: &str,
) {
    let mut ev = AuditEvent::new(RecordKind::Lifecycle, action);
    ev.reason_code = reason_code.into();
    ev.target = target.into();
    ev.policy_id = policy_id.into();
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, action, "could not audit a lifecycle event");
    }
}

/// Opens the approval queue (`[approvals]`), expires and audits what a
/// previous daemon left waiting, and attaches it to the gateway.
async fn open_approvals(
    config: &Config,
    gateway: &Gateway,
    audit: &AuditLog,
) -> anyhow::Result<()> {
    use crate::gateway::approvals::{ApprovalSettings, Approvals};
    let webhook = config
        .approvals
        .webhook
        .as_ref()
        .map(crate::gateway::approval_webhook::Webhook::from_config)
        .transpose()
        .context("setting up [approvals.webhook]")?;
    let settings = ApprovalSettings {
        timeout_secs: config.approvals.timeout_secs,
        max_pending: config.approvals.max_pending,
        webhook,
    };
    let (queue, expired) = Approvals::open(&config.state_dir, settings, Some(audit.clone()))
        .context("opening the approval queue")?;
    if !expired.is_empty() {
        tracing::warn!(
            count = expired.len(),
            "calls waiting for approval when agentd stopped are denied (approval_expired)"
        );
    }
    queue.audit_expired(&expired).await;
    gateway.attach_approvals(Arc::new(queue));
    Ok(())
}

/// The daemon body (inside a tokio runtime).
pub async fn run_async(config: Config) -> anyhow::Result<()> {
    run_with_stored(config, Vec::new()).await
}

/// [`run_async`] with the fds the service manager kept for the previous
/// agentd (seccomp listeners: see `enforce::fdstore`).
pub async fn run_with_stored(
    config: Config,
    stored: Vec<crate::enforce::fdstore::StoredFd>,
) -> anyhow::Result<()> {
    // Everything agentd creates is private unless chmod-ed on purpose.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    prepare_state_dir(&config.state_dir)?;
    // Bad TLS material stops start-up before anything else is opened.
    let tls = tls_acceptor(&config)?;
    let services = open_services(&config, stored).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let console = start_console(&config, &services, stop_rx.clone()).await?;
    let app = api_routes(&config, &services, console.as_ref().map(|(c, _)| c.clone()));
    let Services {
        audit,
        gateway,
        access,
        enforce,
        agents,
        receipts,
        pins,
    } = services;

    let unix = bind_unix(&config.socket_path)?;
    let mut servers = serving::Servers::new(stop_rx.clone(), conn_limits(&config));
    servers.spawn(Listener::Unix(unix), app.clone());
    serving::serve_forward(&config, &gateway, &access, &agents, &enforce, &mut servers).await?;
    serving::serve_mcp_http(&config, &gateway, &pins, &enforce, &mut servers).await?;
    if let Some((c, listener)) = console {
        tracing::info!(url = %c.origins().map(|o| o.base_url()).unwrap_or_default(), "web console serving (loopback; `agentctl console` prints a login link)");
        servers.spawn(Listener::Tcp(listener), crate::console::routes::router(c));
    }
    let fleet = crate::fleet::start(&config, &audit, &gateway, stop_rx.clone())
        .context("starting fleet mode ([fleet])")?;
    let shipped = fleet.as_ref().map(|f| f.shipper.position());
    serve_metrics(
        &config,
        &audit,
        &enforce,
        &receipts,
        shipped,
        &stop_rx,
        &mut servers,
    )
    .await?;
    if let Some(path) = &config.ocsf.path {
        crate::telemetry::ocsf_sink::start(path, &config.state_dir, &audit, stop_rx.clone())
            .context("starting the OCSF sink ([ocsf])")?;
    }
    serving::serve_remote(&config, tls, app.clone(), &mut servers).await?;
    let pruner = serving::spawn_pruner(gateway.clone());

    serving::until_stopped(&config, &gateway, &audit).await?;

    expire_waiting_approvals(&gateway).await;
    stop(
        &config, stop_tx, servers, pruner, &enforce, &receipts, &audit,
    )
    .await
}

/// The TLS acceptor of the remote operators' listener, if one is configured.
fn tls_acceptor(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::acceptor(&api::tls::TlsFiles {
            cert,
            key,
            client_ca: config.tls_client_ca.as_deref(),
        })?),
        _ => None,
    })
}

/// What the daemon's listeners serve, opened by [`open_services`].
struct Services {
    audit: AuditLog,
    gateway: Arc<Gateway>,
    access: Access,
    enforce: crate::enforce::EnforceSlot,
    agents: Arc<crate::agents::AgentManager>,
    receipts: crate::receipt::queue::ReceiptQueue,
    pins: Arc<crate::mcp::pins::PinStore>,
}

/// Opens, in order: the audit log, the gateway (its approvals and policy),
/// enforcement (in the background), the receipt queue, the agents' store
/// and the MCP pin store; the gateway's allow hooks run in that order.
async fn open_services(
    config: &Config,
    stored: Vec<crate::enforce::fdstore::StoredFd>,
) -> anyhow::Result<Services> {
    let audit = AuditLog::open_config(config).context("opening the audit log")?;
    let gateway = open_gateway(config, &audit).await?;
    let access = Access::resolve(&config.admin_group, &config.agent_user);
    let enforce = start_enforcement(config, &gateway, &audit, stored, &access);
    // After the grant: every allowed call is sealed with a receipt (queued
    // durably here, rendered off the decision path by the worker).
    let (receipt_hook, receipts) =
        crate::receipt::gateway_hook::start(&config.state_dir, gateway.clone())
            .context("opening the receipt queue")?;
    gateway.add_allow_hook(receipt_hook);
    // Agents' settings live in agents.db; their baselines are composed from
    // profiles (built-in and the policy's) and re-applied on every policy load.
    let agents =
        crate::agents::AgentManager::open(&config.state_dir, gateway.clone(), enforce.clone())
            .context("opening the agents store")?;
    serving::reapply_agents_on_change(&gateway, &agents, &enforce)?;
    // One pin store for both MCP transports.
    let pins = Arc::new(
        crate::mcp::pins::PinStore::open(&config.state_dir).context("opening the MCP pin store")?,
    );
    Ok(Services {
        audit,
        gateway,
        access,
        enforce,
        agents,
        receipts,
        pins,
    })
}

/// The gateway with its approval queue and the configured policy file.
async fn open_gateway(config: &Config, audit: &AuditLog) -> anyhow::Result<Arc<Gateway>> {
    let gateway = Arc::new(
        Gateway::open(
            &config.state_dir,
            Settings::from(&config.gateway),
            Some(audit.clone()),
        )
        .context("opening the gateway store")?,
    );
    if let Some(host_id) = &config.gateway.host_id {
        gateway.set_host_id(host_id);
    }
    tracing::info!(host_id = %gateway.host_id(), "v2 messages naming another host are refused");
    open_approvals(config, &gateway, audit).await?;
    match &config.gateway.policy_file {
        // The fleet's central policy stays in force over the local file.
        Some(p) if config_is_fleet_central(&gateway) => {
            tracing::warn!(file = %p.display(), "the fleet's central policy is in force; gateway.policy_file is not loaded");
        }
        Some(p) => {
            let id = load_policy_file(&gateway, p)?;
            audit_lifecycle(audit, "policy_load", "ok", &p.display().to_string(), &id).await;
        }
        None => {}
    }
    if gateway.current_policy().is_none() {
        tracing::warn!("no policy loaded: every tool call is denied (no_policy_loaded) until `agentctl policy load`");
    }
    Ok(gateway)
}

/// Starts enforcement in the background and wires it into the gateway: the
/// grant hook, the agent resolver and the kill switch.
fn start_enforcement(
    config: &Config,
    gateway: &Arc<Gateway>,
    audit: &AuditLog,
    stored: Vec<crate::enforce::fdstore::StoredFd>,
    access: &Access,
) -> crate::enforce::EnforceSlot {
    let enforce = enforcement::start(
        config,
        audit.clone(),
        stored,
        admin_rule(access),
        gateway.clone(),
    );
    gateway.add_allow_hook(Arc::new(crate::enforce::gateway_hook::EnforceHook {
        slot: enforce.clone(),
    }));
    gateway.set_agent_resolver(Arc::new(enforce.clone()));
    // The kill switch ends grants and stops agents through the enforcer;
    // grants it re-adopts at start are ended again for stored suspensions.
    gateway.set_kill_switch(Arc::new(crate::enforce::EnforceKillSwitch {
        slot: enforce.clone(),
    }));
    serving::reapply_suspensions_when_enforcing(gateway.clone(), enforce.clone());
    enforce
}

/// The web console (opt-in): its own loopback listener, bound now; `agentctl
/// console` asks the API for a login link.
async fn start_console(
    config: &Config,
    s: &Services,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<(Arc<crate::console::Console>, tokio::net::TcpListener)>> {
    if config.console.listen.is_none() {
        return Ok(None);
    }
    let c = crate::console::Console::new(
        config.console.clone(),
        crate::console::Parts {
            gateway: s.gateway.clone(),
            audit: s.audit.clone(),
            enforce: s.enforce.clone(),
            agents: Some(s.agents.clone()),
            receipts: Some(s.receipts.clone()),
        },
        stop,
    );
    let listener = c
        .bind()
        .await
        .context("starting the web console ([console])")?;
    Ok(Some((c, listener)))
}

/// Every route of the API socket (and of the remote listener).
fn api_routes(
    config: &Config,
    s: &Services,
    console: Option<Arc<crate::console::Console>>,
) -> axum::Router {
    let state = Arc::new(AppState {
        gateway: s.gateway.clone(),
        access: s.access.clone(),
        max_body: config.gateway.max_request_bytes,
    });
    // MCP servers start through the launcher beside this binary.
    let launcher = crate::mcp::Launcher {
        agentctl: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("agentctl")))
            .unwrap_or_else(|| "/usr/bin/agentctl".into()),
        enforce_socket: enforcement::enforce_socket(config),
    };
    api::router(state)
        .merge(api::mcp_routes::routes(
            s.gateway.clone(),
            s.enforce.clone(),
            s.access.clone(),
            launcher,
            config.agent_user.clone(),
            s.pins.clone(),
        ))
        .merge(api::suspend_routes::routes(
            s.gateway.clone(),
            s.agents.clone(),
            s.enforce.clone(),
            s.access.clone(),
        ))
        .merge(api::enforce_routes::routes(
            s.enforce.clone(),
            s.access.clone(),
        ))
        .merge(api::approval_routes::routes(
            s.gateway.clone(),
            s.access.clone(),
        ))
        .merge(api::delegation_routes::routes(
            s.gateway.clone(),
            s.access.clone(),
        ))
        .merge(api::agent_routes::routes(
            s.agents.clone(),
            s.access.clone(),
        ))
        .merge(crate::console::admin::routes(console, s.access.clone()))
}

/// The API listeners' connection limits and header timeout.
fn conn_limits(config: &Config) -> api::ConnLimits {
    api::ConnLimits {
        max_connections: config.gateway.max_connections,
        max_per_peer: config.gateway.max_connections_per_peer,
        header_timeout: Duration::from_secs(config.gateway.request_timeout_secs),
    }
}

/// The Prometheus endpoint (`[metrics] listen`, opt-in).
async fn serve_metrics(
    config: &Config,
    audit: &AuditLog,
    enforce: &crate::enforce::EnforceSlot,
    receipts: &crate::receipt::queue::ReceiptQueue,
    shipped: Option<crate::telemetry::ShippedSeq>,
    stop: &watch::Receiver<bool>,
    servers: &mut serving::Servers,
) -> anyhow::Result<()> {
    let Some(addr) = &config.metrics.listen else {
        return Ok(());
    };
    let router = crate::telemetry::server::start(
        crate::telemetry::server::Sources {
            audit: audit.clone(),
            enforce: enforce.clone(),
            receipts: Some(receipts.clone()),
            shipped,
        },
        stop.clone(),
    )
    .context("starting the metrics endpoint ([metrics])")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    tracing::info!(%addr, "Prometheus metrics serving on /metrics (loopback)");
    servers.spawn(Listener::Tcp(listener), router);
    Ok(())
}

/// Calls waiting for a human are answered (denied, approval_expired)
/// before the listeners' grace runs out and drops them unanswered.
async fn expire_waiting_approvals(gateway: &Gateway) {
    if let Some(q) = gateway.approvals() {
        let n = q.expire_all().await;
        if n > 0 {
            tracing::warn!(
                count = n,
                "calls waiting for approval denied: agentd is stopping"
            );
        }
    }
}

/// Stops in order: the listeners (after their grace), the pruner, the
/// supervisors (each answers what it holds), the receipt worker, the
/// sockets, and last the audit log (the others' final rows go there).
async fn stop(
    config: &Config,
    stop_tx: watch::Sender<bool>,
    servers: serving::Servers,
    pruner: tokio::task::JoinHandle<()>,
    enforce_at_stop: &crate::enforce::EnforceSlot,
    receipts: &crate::receipt::queue::ReceiptQueue,
    audit: &AuditLog,
) -> anyhow::Result<()> {
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    servers.join().await;
    pruner.abort();
    // Supervisors answer what they hold, then stop; their listeners stay in
    // the service manager's fd store, so agents wait for the next agentd
    // instead of failing. Before the audit log closes: their rows go there.
    if let Some(e) = enforce_at_stop.get() {
        let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    }
    receipts.shutdown();
    let _ = std::fs::remove_file(&config.socket_path);
    if let Some(p) = &config.forward.socket_path {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = &config.mcp.socket_path {
        let _ = std::fs::remove_file(p);
    }
    audit.shutdown().context("closing the audit log")?;
    tracing::info!("stopped");
    Ok(())
}

/// Applies `agentd run` command-line overrides to a loaded config.
pub fn apply_overrides(
    mut config: Config,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    policy: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let abs = |p: PathBuf| -> anyhow::Result<PathBuf> {
        if p.is_absolute() {
            Ok(p)
        } else {
            Ok(std::env::current_dir()?.join(p))
        }
    };
    if let Some(d) = state_dir {
        config.state_dir = abs(d)?;
    }
    if let Some(s) = socket {
        config.socket_path = abs(s)?;
    }
    if let Some(p) = policy {
        config.gateway.policy_file = Some(abs(p)?);
    }
    Ok(config)
}
