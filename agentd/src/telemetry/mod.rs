//! Telemetry in the formats operators already use: Prometheus metrics on an
//! opt-in loopback endpoint (`[metrics] listen`), and OCSF events appended
//! to a file a SIEM shipper tails (`[ocsf] path`).
pub mod follow;
pub mod metrics;
pub mod ocsf_sink;
pub mod server;
