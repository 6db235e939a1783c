//! The MCP gateway: agentd starts each MCP server itself and sits between
//! it and the runtime, deciding every `tools/call` (and every request the
//! server makes of the client) against the policy, so an allowed call's
//! grant is pending for the server's own process tree and the kernel holds
//! the server to it.
//!
//! - `framing`: newline-delimited JSON-RPC (size limit, batches, ids);
//! - `naming` (the crate's `mcp_naming`, below the policy and the config,
//!   which check these names too): MCP tool names → policy actions,
//!   collision-free;
//! - `decide`: pure per-message verdicts (forward, decide, refuse);
//! - `pins`: tool definitions pinned by hash, changes held for approval;
//! - `gate`: deciding what `decide` classified, against the policy, audited
//!   (one path for every transport);
//! - `launch`: starting a session's server (as the agent, in its own run cgroup);
//! - `relay`: relaying one stdio session and deciding on the way (I/O);
//! - `revision`: which MCP revision an HTTP request speaks, its routing
//!   headers checked against its body;
//! - `http`: Streamable HTTP, agentd as the local endpoint of configured
//!   upstream servers (I/O).
//!
//! The runtime-facing side is `agentctl mcp proxy`, a byte relay on an
//! upgraded connection of the API socket (`POST /v1/mcp/stdio`), or the
//! Streamable HTTP endpoint (`[mcp]` socket and loopback port).
pub mod decide;
pub mod framing;
pub mod gate;
pub mod http;
pub mod launch;
pub mod pins;
pub mod relay;
pub mod revision;

pub use crate::mcp_naming as naming;
pub use launch::{is_server_process, Launcher, OpenRequest, Started};

/// The `Upgrade` protocol name of an MCP stdio session.
pub const UPGRADE_PROTOCOL: &str = "agentd-mcp";
/// The route that opens one.
pub const STDIO_ROUTE: &str = "/v1/mcp/stdio";
