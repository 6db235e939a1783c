//! The enforcement backends agentd can run (chosen by `agentd doctor`'s probes).
use serde::Serialize;

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
