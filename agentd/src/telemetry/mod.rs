//! Telemetry in the formats operators already use: Prometheus metrics on an
//! opt-in loopback endpoint (`[metrics] listen`), and OCSF events appended
//! to a file a SIEM shipper tails (`[ocsf] path`).
pub mod follow;
pub mod metrics;
pub mod ocsf_sink;
pub mod server;

/// The highest audit seq a shipper's destination holds (fleet mode:
/// PostgreSQL), which the shipper advances and `/metrics` reads.
pub type ShippedSeq = std::sync::Arc<std::sync::atomic::AtomicU64>;
