//! The kernel-enforcement scenario suite shared by both backends: allowed
//! and denied exec/open/connect, inheritance across fork/vfork/clone3/double
//! fork, expiry, the bypass list, audit-only mode, fail-closed and restart.
//!
//! The `agentd-scenarios` binary runs it (one line per scenario: `PASS
//! name`, `FAIL name: why`, `SKIP name: reason`), and doubles as the
//! launcher (`launch`) and the in-agent probe (`probe`).

pub mod console;
pub mod demo;
pub mod forward;
pub mod hardening;
pub mod harness;
pub mod mcp;
pub mod model_server;
pub mod probe;
pub mod probe_hardening;
pub mod probe_side;
pub mod runtimes;
pub mod scenarios;
pub mod scenarios_side;
pub mod sdk_suite;
