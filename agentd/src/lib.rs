//! agentd: identity, authorization and kernel-level enforcement for AI agents.
//!
//! See `docs/ARCHITECTURE.md` for how the modules fit together.

pub mod agents;
pub mod api;
pub mod audit;
pub mod config;
pub mod console;
pub mod daemon;
pub mod doctor;
pub mod enforce;
pub mod explain;
pub mod fleet;
pub mod forward;
pub mod gateway;
pub mod grant_spec;
pub mod interop;
pub mod mcp;
pub mod mcp_naming;
pub mod policy;
pub mod policy_test;
pub mod profile;
pub mod protocol;
pub mod receipt;
pub mod runtime;
pub mod telemetry;
pub mod upstream_tls;
