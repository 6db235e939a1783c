//! Telemetry in the formats operators already use: Prometheus metrics on an
//! opt-in loopback endpoint (`[metrics] listen`).
pub mod metrics;
pub mod server;
