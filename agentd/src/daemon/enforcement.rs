//! What `agentd run` calls to bring enforcement up: pick the backend from
//! the config and real probes, start the [`Enforcer`], serve the
//! enforcement socket, and hand the gateway its allow hook.
use std::path::PathBuf;

use crate::{
    audit::AuditLog,
    config::{BackendChoice, Config},
    doctor,
    enforce::{
        backend::{decide_backend, BackendChoiceError},
        bpf_state::Instance,
        control::AdminRule,
        events,
        fdstore::{self, StoredFd},
        launch,
        slot::StartError,
        AuditSink, Backend, EnforceSlot, Enforcer,
    },
    protocol::reason,
};

/// The enforcement socket next to the API socket (`/run/agentd/enforce.sock`).
pub fn enforce_socket(config: &Config) -> PathBuf {
    config.socket_path.with_file_name("enforce.sock")
}

/// The backend to run: probed, and a configured choice the kernel cannot
/// honour is refused rather than silently downgraded.
pub fn choose_backend(choice: BackendChoice) -> Result<Backend, BackendChoiceError> {
    let report = doctor::run();
    let chosen = decide_backend(choice, report.backend, report.reason);
    if chosen.is_err() {
        // Which probes failed, for a start that found no backend where an
        // earlier one did (a probe failing under load, a kernel change).
        for p in report.probes.iter().filter(|p| !p.ok) {
            tracing::warn!(probe = p.name, detail = %p.detail, "enforcement probe failed");
        }
    }
    chosen
}

/// Starts enforcement for the daemon in the background. Never fails the
/// daemon: an error is logged and audited (`enforcer_unavailable`).
/// `stored`: the fds the service manager kept for the previous agentd.
/// `admin`: the API's rule for who is an admin, which the enforcement
/// socket applies too. `gate`: who may be launched (the gateway's
/// suspensions), in force before the enforcement socket opens.
pub fn start(
    config: &Config,
    audit: AuditLog,
    stored: Vec<StoredFd>,
    admin: AdminRule,
    gate: std::sync::Arc<dyn crate::enforce::LaunchGate>,
) -> EnforceSlot {
    let slot = EnforceSlot::starting(Instance::for_state_dir(&config.state_dir).slice());
    let filled = slot.clone();
    let config = config.clone();
    let spawned = std::thread::Builder::new().name("agentd-enforce-start".into()).spawn(move || {
        // Stored listeners nobody will supervise must leave the store, or
        // their agents' syscalls would wait for ever instead of failing.
        let names: Vec<String> = stored.iter().map(|s| s.name.clone()).collect();
        let started = choose_backend(config.backend).map_err(StartError::from).and_then(|backend| {
            Ok(Enforcer::start_with_stored(
                backend,
                &config.state_dir,
                std::sync::Arc::new(audit.clone()),
                events::AUDIT_QUEUE,
                stored,
            )?)
        });
        if started.is_err() {
            for name in &names {
                let _ = fdstore::remove(name);
            }
        }
        match &started {
            Ok(e) => {
                e.set_launch_gate(gate);
                // The baseline's "connect to agentd": tool runners submit
                // calls on the API socket (lsm gates unix connects by path).
                e.allow_baseline_socket(&config.socket_path.to_string_lossy());
                // The model socket too: an agent's runtime reaches its model there.
                if let Some(p) = &config.forward.socket_path {
                    e.allow_baseline_socket(&p.to_string_lossy());
                }
                // And the MCP endpoint: an agent's runtime reaches its MCP servers there.
                if let Some(p) = &config.mcp.socket_path {
                    e.allow_baseline_socket(&p.to_string_lossy());
                }
                let sock = enforce_socket(&config);
                match launch::serve_with(e.clone(), &sock, &config.agent_user, Default::default(), admin) {
                    Ok(_) => tracing::info!(backend = ?e.backend(), socket = %sock.display(), instance = e.instance(), "enforcement running"),
                    Err(err) => tracing::error!(error = %err, socket = %sock.display(), "enforcement socket unavailable: agents cannot be launched"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "enforcement unavailable: allowed calls with grants will be denied");
                let _ = AuditSink::append_lifecycle(&audit, "enforcer_unavailable", &e.to_string(), reason::ENFORCEMENT_UNAVAILABLE);
            }
        }
        filled.fill(started);
    });
    if let Err(e) = spawned {
        slot.fill(Err(StartError::Thread(e)));
    }
    slot
}
