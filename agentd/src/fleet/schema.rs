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
//!
//! And the central state an administrator changes with `agentctl fleet`
//! (`central`), which hosts only read: `agentd_central_policy` (every
//! pushed policy; the highest revision is in force),
//! `agentd_central_operators` (id, roles, Ed25519 public key — never a
//! secret), `agentd_central_suspensions` and
//! `agentd_central_delegation_revocations`. Every change takes a fresh
//! revision from one sequence, and a statement trigger NOTIFYs channel
//! [`CENTRAL_CHANNEL`] so hosts re-read at once. Each host reports the
//! revision it has applied in `agentd_host_central` (`agentctl fleet
//! status` lists hosts behind).
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
CREATE SEQUENCE IF NOT EXISTS agentd_central_rev;
CREATE TABLE IF NOT EXISTS agentd_central_policy (
    rev bigint PRIMARY KEY DEFAULT nextval('agentd_central_rev'),
    source text NOT NULL,
    sha256 text NOT NULL,
    policy_id text NOT NULL,
    pushed_by text NOT NULL,
    pushed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS agentd_central_operators (
    id text PRIMARY KEY,
    roles text[] NOT NULL,
    public_key text NOT NULL,
    removed boolean NOT NULL DEFAULT false,
    rev bigint NOT NULL DEFAULT nextval('agentd_central_rev'),
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS agentd_central_suspensions (
    scope text NOT NULL,
    name text NOT NULL,
    reason text NOT NULL,
    stop boolean NOT NULL,
    lifted boolean NOT NULL DEFAULT false,
    rev bigint NOT NULL DEFAULT nextval('agentd_central_rev'),
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS agentd_central_delegation_revocations (
    token text PRIMARY KEY,
    rev bigint NOT NULL DEFAULT nextval('agentd_central_rev'),
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS agentd_host_central (
    host_id text PRIMARY KEY,
    applied_rev bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION agentd_central_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agentd_central', TG_TABLE_NAME);
    RETURN NULL;
END $$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agentd_central_policy', 'agentd_central_operators',
                             'agentd_central_suspensions', 'agentd_central_delegation_revocations']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS agentd_central_notify ON %I', t);
        EXECUTE format('CREATE TRIGGER agentd_central_notify AFTER INSERT OR UPDATE OR DELETE
                        ON %I FOR EACH STATEMENT EXECUTE FUNCTION agentd_central_notify()', t);
    END LOOP;
END $$;
";

/// The channel central changes are announced on.
pub const CENTRAL_CHANNEL: &str = "agentd_central";

/// Every table `SCHEMA` makes: when all exist, nothing is created (so a
/// host whose role may not create tables still starts, see `roles`).
pub const TABLES: [&str; 9] = [
    "agentd_hosts",
    "agentd_audit",
    "agentd_checkpoints",
    "agentd_nonces",
    "agentd_central_policy",
    "agentd_central_operators",
    "agentd_central_suspensions",
    "agentd_central_delegation_revocations",
    "agentd_host_central",
];

/// Creates the tables that do not exist yet.
pub async fn ensure(pg: &PgSettings, client: &mut Client) -> Result<(), FleetError> {
    let tables: Vec<&str> = TABLES.to_vec();
    let present: i64 = pg
        .bounded(
            "looking for the fleet tables",
            client.query_one(
                "SELECT count(*) FROM pg_catalog.pg_class c
                 WHERE c.relname = ANY($1) AND c.relkind IN ('r', 'p')
                   AND pg_catalog.pg_table_is_visible(c.oid)",
                &[&tables],
            ),
        )
        .await?
        .get(0);
    if present == TABLES.len() as i64 {
        return Ok(());
    }
    match create(pg, client).await {
        Ok(()) => Ok(()),
        // A role that may not create tables, on a database made before
        // the central tables existed: shipping and nonces still work; the
        // central follower reports the missing tables until an
        // administrator runs `agentctl fleet init-db`.
        Err(e) if host_tables_present(pg, client).await => {
            tracing::warn!(error = %e, "fleet: cannot create the central tables (run agentctl fleet init-db as their owner)");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether the four tables hosts write exist.
async fn host_tables_present(pg: &PgSettings, client: &Client) -> bool {
    let tables: Vec<&str> = TABLES[..4].to_vec();
    pg.bounded(
        "looking for the fleet tables",
        client.query_one(
            "SELECT count(*) FROM pg_catalog.pg_class c
             WHERE c.relname = ANY($1) AND c.relkind IN ('r', 'p')
               AND pg_catalog.pg_table_is_visible(c.oid)",
            &[&tables],
        ),
    )
    .await
    .is_ok_and(|r| r.get::<_, i64>(0) == 4)
}

/// Creates the missing tables under the advisory lock.
async fn create(pg: &PgSettings, client: &mut Client) -> Result<(), FleetError> {
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
