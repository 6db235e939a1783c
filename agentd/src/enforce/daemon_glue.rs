//! What `agentd run` calls to bring enforcement up: pick the backend from
//! the config and real probes, start the [`Enforcer`], serve the
//! enforcement socket, and hand the gateway its allow hook.
use std::{path::PathBuf, sync::Arc};

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

/// Starts enforcement for the daemon. Never fails the daemon: on error it
/// logs, audits `enforcer_unavailable`, and returns a hook that denies
/// every allow carrying a grant (fail closed).
pub fn start(config: &Config, audit: AuditLog) -> (Option<Enforcer>, Arc<EnforceHook>) {
    let started = choose_backend(config.backend).and_then(|backend| {
        Enforcer::start(backend, &config.state_dir, audit.clone()).map_err(|e| e.to_string())
    });
    let enforcer = match started {
        Ok(e) => {
            let sock = enforce_socket(config);
            match launch::serve(e.clone(), &sock) {
                Ok(_) => {
                    tracing::info!(backend = ?e.backend(), socket = %sock.display(), instance = e.instance(), "enforcement running")
                }
                Err(err) => {
                    tracing::error!(error = %err, socket = %sock.display(), "enforcement socket unavailable: agents cannot be launched")
                }
            }
            Some(e)
        }
        Err(message) => {
            tracing::error!(error = %message, "enforcement unavailable: allowed calls with grants will be denied");
            let _ = super::AuditSink::append_lifecycle(
                &audit,
                "enforcer_unavailable",
                &message,
                "enforcement_unavailable",
            );
            None
        }
    };
    let hook = Arc::new(EnforceHook {
        enforcer: enforcer.clone(),
    });
    (enforcer, hook)
}
