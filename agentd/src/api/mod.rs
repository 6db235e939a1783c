//! The HTTP/1.1 + JSON API on a Unix socket (and optionally TCP for remote
//! operators): routes and handlers (`server`), caller permissions from
//! SO_PEERCRED (`peer`), JSON bodies and errors (`json`), TLS for the TCP
//! listener (`tls`), and the client used by `agentctl`, tests and benches
//! (`client`).
//!
//! Routes (all under `/v1`; see docs/protocol.md §4):
//! `GET /v1/health`, `POST /v1/messages`, `POST /v1/tool-calls`,
//! `GET|POST /v1/operators`, `POST /v1/operators/{id}/rotate|revoke`,
//! `GET|PUT /v1/policy`, `POST /v1/policy/validate`, `POST /v1/mcp/stdio`
//! (upgraded to an MCP relay, `mcp_routes`), `GET|POST /v1/suspensions`
//! and `POST /v1/suspensions/resume` (the kill switch, `suspend_routes`),
//! `GET /v1/approvals` and `POST /v1/approvals/{id}/approve|deny|callback`
//! (human approval, `approval_routes`), `GET|POST /v1/delegations` and
//! `POST /v1/delegations/revoke` (sub-tokens, `delegation_routes`). The forward proxy's model socket
//! has a router of its own (`forward_routes`).
pub mod agent_routes;
pub mod approval_routes;
pub mod client;
pub mod delegation_routes;
pub mod enforce_routes;
pub mod forward_routes;
pub mod json;
pub mod mcp_http_routes;
pub mod mcp_routes;
pub mod peer;
pub mod server;
pub mod suspend_routes;
pub mod tls;

pub use client::{Client, ClientError};
pub use json::ApiError;
pub use peer::{Access, Peer, Transport};
pub use server::{router, serve, serve_limited, AppState, ConnLimits, Listener, PeerLookup};
