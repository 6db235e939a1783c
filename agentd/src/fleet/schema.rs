//! The fleet tables in PostgreSQL. Every host creates them if missing (under
//! an advisory lock, so hosts starting together do not race), and only ever
//! inserts: a row, once shipped, is never updated by agentd.
//!
//! - `agentd_hosts`: each host's Ed25519 checkpoint public key, registered
//!   once.
//! - `agentd_audit`: every host's audit rows, keyed by (host_id, seq), all
//!   record fields with the row's hash and prev_hash.
//! - `agentd_checkpoints`: each host's signed checkpoints.
//! - `agentd_nonces`: (operator, nonce) of every verified message, until
//!   the nonce expires.
use tokio_postgres::Client;

use super::conn::PgSettings;
use super::FleetError;

/// Arbitrary constant naming the advisory lock held while creating tables.
const SCHEMA_LOCK: i64 = 0x6167_656e_7464_0001;

/// The statements, each idempotent.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentd_hosts (
    host_id text PRIMARY KEY,
    public_key text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS agentd_audit (
    host_id text NOT NULL,
    seq bigint NOT NULL,
    ts text NOT NULL,
    kind text NOT NULL,
    operator text NOT NULL,
    session text NOT NULL,
    active_message_id text NOT NULL,
    call_id text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    decision text NOT NULL,
    reason_code text NOT NULL,
    policy_id text NOT NULL,
    latency_us bigint NOT NULL,
    agent text NOT NULL,
    pid bigint NOT NULL,
    access text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, seq)
);
CREATE TABLE IF NOT EXISTS agentd_checkpoints (
    host_id text NOT NULL,
    count bigint NOT NULL,
    head_hash text NOT NULL,
    ts text NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (host_id, count)
);
CREATE TABLE IF NOT EXISTS agentd_nonces (
    operator text NOT NULL,
    nonce text NOT NULL,
    host_id text NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (operator, nonce)
);
CREATE INDEX IF NOT EXISTS agentd_nonces_expiry ON agentd_nonces (expires_at);
";

/// Creates the tables that do not exist yet.
pub async fn ensure(pg: &PgSettings, client: &mut Client) -> Result<(), FleetError> {
    let tx = pg.bounded("begin", client.transaction()).await?;
    pg.bounded(
        "schema lock",
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]),
    )
    .await?;
    pg.bounded("creating the fleet tables", tx.batch_execute(SCHEMA))
        .await?;
    pg.bounded("commit", tx.commit()).await
}
