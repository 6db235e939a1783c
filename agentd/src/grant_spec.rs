//! What an allowed tool call may do in the kernel, as decided by policy.
//! The gateway produces it; an enforcement backend turns it into a grant.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kernel-facing part of an allowed decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// Executables the call may run (matched by device+inode once resolved).
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    /// Path scopes the call may open for reading (a directory covers its subtree).
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Path scopes the call may open for writing (implies read).
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Connect destinations: `CIDR:PORT` (port 0 = any), `[v6CIDR]:PORT`, or `unix:/path`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Seconds the grant lives after the decision.
    pub ttl_secs: u64,
    /// How many times it may be used — process bindings (`agentctl exec`)
    /// and claims of the pending grant alike; 0 = unlimited until expiry.
    #[serde(default)]
    pub uses: u32,
    /// Exact arguments (after argv[0]) an exec claim must carry; `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}
