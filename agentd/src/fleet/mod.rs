//! Fleet mode (`[fleet]`, off by default): one PostgreSQL for many hosts.
//! Each host ships its audit rows and signed checkpoints there (`ship`),
//! a security team verifies every host's chain centrally (`verify`), and
//! verified messages' nonces are checked fleet-wide (`nonces`), so a
//! message accepted on one host cannot be replayed to another. An
//! administrator manages operators (Ed25519 public keys only), the policy
//! and suspensions centrally (`central`); each host follows them (`sync`)
//! into its local store. Everything that decides stays local: PostgreSQL down, hosts keep deciding and
//! auditing, and catch up when it returns. See docs/fleet.md.
pub mod central;
pub mod conn;
pub mod nonces;
pub mod roles;
pub mod schema;
pub mod ship;
pub mod sync;
pub mod verify;

use std::sync::Arc;

use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::gateway::Gateway;

/// Errors of fleet mode.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The connection settings could not be read or are unsafe.
    #[error("fleet credentials {path}: {message}")]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// PostgreSQL refused or failed a statement.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// PostgreSQL did not answer within `[fleet] timeout_ms`.
    #[error("PostgreSQL did not answer in time ({0})")]
    Timeout(&'static str),
    /// Another key is registered for this host id.
    #[error("another checkpoint key (fingerprint {registered}) is registered for this host id")]
    KeyConflict {
        /// Fingerprint of the registered key.
        registered: String,
    },
    /// The local audit log could not be read.
    #[error("local audit log: {0}")]
    Local(String),
}

/// Fleet mode running: its shipper and nonce register.
pub struct Fleet {
    /// This host's id in the fleet tables.
    pub host_id: String,
    /// The audit shipper.
    pub shipper: Arc<ship::Shipper>,
    /// The fleet-wide nonce register (also set on the gateway).
    pub nonces: Arc<nonces::FleetNonces>,
    /// The follower of the central operators, policy and suspensions.
    pub central: Arc<sync::CentralSync>,
}

/// Starts fleet mode if `[fleet]` is configured: ships `audit` and makes
/// `gateway` check nonces fleet-wide. Only bad settings fail; PostgreSQL
/// being down does not.
pub fn start(
    all: &Config,
    audit: &AuditLog,
    gateway: &Arc<Gateway>,
    stop: watch::Receiver<bool>,
) -> Result<Option<Fleet>, FleetError> {
    let Some(config) = &all.fleet else {
        return Ok(None);
    };
    let pg = conn::PgSettings::from_config(config)?;
    let host_id = conn::host_id(all);
    tracing::info!(host_id = %host_id, settings = ?pg, lease_secs = config.lease_secs,
        "fleet mode: audit shipping and fleet-wide nonces on PostgreSQL");
    let shipper = ship::start(pg.clone(), host_id.clone(), audit, stop.clone());
    let nonces = nonces::start(
        pg.clone(),
        host_id.clone(),
        std::time::Duration::from_secs(config.lease_secs),
        audit.clone(),
        stop.clone(),
    );
    gateway.set_shared_nonces(nonces.clone());
    let central = sync::start(
        pg,
        host_id.clone(),
        gateway.clone(),
        audit.clone(),
        std::time::Duration::from_secs(config.resync_secs.max(1)),
        stop,
    );
    Ok(Some(Fleet {
        host_id,
        shipper,
        nonces,
        central,
    }))
}
