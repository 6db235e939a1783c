//! What `agentd run` calls to bring enforcement up: pick the backend from
//! the config and real probes, start the [`Enforcer`], serve the
//! enforcement socket, and hand the gateway its allow hook.
use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use crate::{
    audit::AuditLog,
    config::{BackendChoice, Config},
    doctor::{self, Backend},
};

use super::{gateway_hook::EnforceHook, launch, Enforcer};

/// The enforcement socket next to the API socket (`/run/agentd/enforce.sock`).
pub fn enforce_socket(config: &Config) -> PathBuf {
    config.socket_path.with_file_name("enforce.sock")
}

/// The backend to run: probed, and a configured choice the kernel cannot
/// honour is refused rather than silently downgraded.
pub fn choose_backend(choice: BackendChoice) -> Result<Backend, String> {
    let report = doctor::run();
    let probed = report.backend;
    match (choice, probed) {
        (BackendChoice::Auto, Backend::None) => Err(report.reason),
        (BackendChoice::Auto, b) => Ok(b),
        (BackendChoice::Lsm, Backend::Lsm) => Ok(Backend::Lsm),
        (BackendChoice::Lsm, _) => Err(format!(
            "backend = \"lsm\" configured, but {}",
            report.reason
        )),
        (BackendChoice::Seccomp, Backend::None) => Err(report.reason),
        // seccomp works wherever lsm does (both need tp_btf and cgroup BPF).
        (BackendChoice::Seccomp, _) => Ok(Backend::Seccomp),
    }
}

/// Enforcement as the daemon holds it: filled in by a background thread
/// (probing and loading BPF takes seconds), so the API serves at once;
/// until then, and forever if start-up failed, allows carrying a grant are
/// denied (`enforcement_unavailable`) and the enforcement routes answer 503.
#[derive(Clone, Default)]
pub struct EnforceSlot(Arc<OnceLock<Result<Enforcer, String>>>, Arc<String>);

impl EnforceSlot {
    /// The running enforcer, if start-up finished and succeeded.
    pub fn get(&self) -> Option<Enforcer> {
        self.0.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    /// Why enforcement is not available (starting, or the start-up error).
    pub fn unavailable_reason(&self) -> String {
        match self.0.get() {
            None => "enforcement is still starting".into(),
            Some(Err(e)) => e.clone(),
            Some(Ok(_)) => String::new(),
        }
    }

    /// Whether `pid` is a process of one of this instance's agents (known
    /// from its cgroup even before the enforcer is up).
    pub fn is_agent_process(&self, pid: u32) -> bool {
        match self.get() {
            Some(e) => e.agent_of_pid(pid).is_some(),
            None => super::agent_cgroup::agent_name_of_pid(&self.1, pid).is_some(),
        }
    }

    /// A slot holding `enforcer` (tests, or callers that start it themselves).
    pub fn ready(enforcer: Enforcer) -> Self {
        let slot = EnforceSlot(
            Arc::default(),
            Arc::new(format!("{}.slice", enforcer.instance())),
        );
        let _ = slot.0.set(Ok(enforcer));
        slot
    }

    /// The gateway allow hook backed by this slot.
    pub fn hook(&self) -> Arc<EnforceHook> {
        Arc::new(EnforceHook { slot: self.clone() })
    }
}

/// Starts enforcement for the daemon in the background. Never fails the
/// daemon: an error is logged and audited (`enforcer_unavailable`).
pub fn start(config: &Config, audit: AuditLog) -> EnforceSlot {
    let slice = super::bpf_state::Instance::for_state_dir(&config.state_dir).slice();
    let slot = EnforceSlot(Arc::default(), Arc::new(slice));
    let filled = slot.clone();
    let config = config.clone();
    let spawned = std::thread::Builder::new().name("agentd-enforce-start".into()).spawn(move || {
        let started = choose_backend(config.backend)
            .and_then(|backend| Enforcer::start(backend, &config.state_dir, audit.clone()).map_err(|e| e.to_string()));
        match &started {
            Ok(e) => {
                // The baseline's "connect to agentd": tool runners submit
                // calls on the API socket (lsm gates unix connects by path).
                e.allow_baseline_socket(&config.socket_path.to_string_lossy());
                let sock = enforce_socket(&config);
                match launch::serve(e.clone(), &sock) {
                    Ok(_) => tracing::info!(backend = ?e.backend(), socket = %sock.display(), instance = e.instance(), "enforcement running"),
                    Err(err) => tracing::error!(error = %err, socket = %sock.display(), "enforcement socket unavailable: agents cannot be launched"),
                }
            }
            Err(message) => {
                tracing::error!(error = %message, "enforcement unavailable: allowed calls with grants will be denied");
                let _ = super::AuditSink::append_lifecycle(&audit, "enforcer_unavailable", message, "enforcement_unavailable");
            }
        }
        let _ = filled.0.set(started);
    });
    if let Err(e) = spawned {
        let _ = slot
            .0
            .set(Err(format!("cannot start the enforcement thread: {e}")));
    }
    slot
}
