//! The enforcement backends agentd can run (chosen by `agentd doctor`'s probes).
use serde::Serialize;

use crate::config::BackendChoice;

/// Which enforcement backend agentd runs (or would run).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// BPF LSM hooks.
    Lsm,
    /// seccomp user notification + cgroup BPF + tp_btf exec verification.
    Seccomp,
    /// Nothing usable: agentd refuses to enforce.
    None,
}

/// Why no backend can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendChoiceError {
    /// The probes found no usable backend.
    #[error("{reason}")]
    NoneUsable {
        /// What `agentd doctor` found.
        reason: String,
    },
    /// lsm was configured, but BPF LSM cannot run here.
    #[error("backend = \"lsm\" configured, but {reason}")]
    LsmUnavailable {
        /// What `agentd doctor` found.
        reason: String,
    },
}

/// The backend to run given the configured choice, the backend the probes
/// found and why (pure): a configured choice the kernel cannot honour is
/// refused rather than silently downgraded.
pub fn decide_backend(
    choice: BackendChoice,
    probed: Backend,
    reason: String,
) -> Result<Backend, BackendChoiceError> {
    match (choice, probed) {
        (BackendChoice::Auto | BackendChoice::Seccomp, Backend::None) => {
            Err(BackendChoiceError::NoneUsable { reason })
        }
        (BackendChoice::Auto, b) => Ok(b),
        (BackendChoice::Lsm, Backend::Lsm) => Ok(Backend::Lsm),
        (BackendChoice::Lsm, _) => Err(BackendChoiceError::LsmUnavailable { reason }),
        // seccomp works wherever lsm does (both need tp_btf and cgroup BPF).
        (BackendChoice::Seccomp, _) => Ok(Backend::Seccomp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_backend_the_kernel_lacks_is_refused_not_downgraded() {
        let why = || "BPF LSM programs do not load".to_string();
        assert_eq!(
            decide_backend(BackendChoice::Auto, Backend::Seccomp, why()),
            Ok(Backend::Seccomp)
        );
        assert_eq!(
            decide_backend(BackendChoice::Seccomp, Backend::Lsm, why()),
            Ok(Backend::Seccomp)
        );
        let lsm = decide_backend(BackendChoice::Lsm, Backend::Seccomp, why()).unwrap_err();
        assert_eq!(
            lsm.to_string(),
            "backend = \"lsm\" configured, but BPF LSM programs do not load"
        );
        for choice in [
            BackendChoice::Auto,
            BackendChoice::Seccomp,
            BackendChoice::Lsm,
        ] {
            assert!(decide_backend(choice, Backend::None, why()).is_err());
        }
    }
}
