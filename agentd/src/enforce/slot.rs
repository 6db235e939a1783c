//! [`EnforceSlot`]: the enforcer as the daemon holds it while it starts.
use std::sync::{Arc, OnceLock};

use super::backend::BackendChoiceError;
use super::{EnforceError, Enforcer};

/// Why the daemon's enforcer did not start (the slot keeps it, and every
/// refusal for want of enforcement quotes it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No backend can run, or not the configured one.
    #[error(transparent)]
    Backend(#[from] BackendChoiceError),
    /// The enforcer failed to start on the chosen backend.
    #[error(transparent)]
    Enforcer(#[from] EnforceError),
    /// The start-up thread could not be spawned.
    #[error("cannot start the enforcement thread: {0}")]
    Thread(std::io::Error),
}

/// Enforcement as the daemon holds it: filled in by a background thread
/// (probing and loading BPF takes seconds), so the API serves at once;
/// until then, and forever if start-up failed, allows carrying a grant are
/// denied (`enforcement_unavailable`) and the enforcement routes answer 503.
#[derive(Clone, Default)]
pub struct EnforceSlot {
    /// The enforcer, or why it could not start; empty while starting.
    enforcer: Arc<OnceLock<Result<Enforcer, StartError>>>,
    /// The instance's cgroup slice, for telling agent processes apart before
    /// the enforcer is up.
    slice: Arc<String>,
}

impl EnforceSlot {
    /// An empty slot for the instance whose cgroup slice is `slice`.
    pub fn starting(slice: String) -> Self {
        EnforceSlot {
            enforcer: Arc::default(),
            slice: Arc::new(slice),
        }
    }

    /// Records the outcome of start-up (only the first call counts).
    pub fn fill(&self, started: Result<Enforcer, StartError>) {
        let _ = self.enforcer.set(started);
    }

    /// The running enforcer, if start-up finished and succeeded.
    pub fn get(&self) -> Option<Enforcer> {
        self.enforcer.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    /// Whether start-up has finished (successfully or not).
    pub fn settled(&self) -> bool {
        self.enforcer.get().is_some()
    }

    /// Why enforcement is not available (starting, or the start-up error).
    pub fn unavailable_reason(&self) -> String {
        match self.enforcer.get() {
            None => "enforcement is still starting".into(),
            Some(Err(e)) => e.to_string(),
            Some(Ok(_)) => String::new(),
        }
    }

    /// The agent whose cgroup (under this instance's slice) holds `pid`.
    pub fn agent_name_of_pid(&self, pid: u32) -> Option<String> {
        super::agent_cgroup::caller_agent_name(&self.slice, pid)
    }

    /// A slot holding `enforcer` (tests, or callers that start it themselves).
    pub fn ready(enforcer: Enforcer) -> Self {
        let slot = EnforceSlot::starting(format!("{}.slice", enforcer.instance()));
        slot.fill(Ok(enforcer));
        slot
    }
}
