//! Least privilege in the fleet database: one PostgreSQL role per host,
//! members of the group role `agentd_host`, with row-level security so a
//! host inserts only its own audit rows, checkpoints, key and nonces,
//! reads the central state, and nothing else (no UPDATE or DELETE of
//! audit rows, no DDL, no central writes). `agentctl fleet init-db` runs
//! this as the tables' owner; the owner (the administrator) is not bound
//! by the policies.
use tokio_postgres::Client;

use super::conn::PgSettings;
use super::{schema, FleetError};

/// The group role every host role belongs to.
pub const HOST_GROUP: &str = "agentd_host";

/// A host's own row: the host id its session user was given.
const MINE: &str = "(SELECT r.host_id FROM agentd_host_roles r WHERE r.role = session_user)";

/// The PostgreSQL role of `host_id`: `agentd_host_` and the id with
/// anything outside `[a-z0-9_]` as `_` (at most 63 bytes).
pub fn role_name(host_id: &str) -> String {
    let mut name: String = format!("agentd_host_{host_id}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    name
}

/// The grants and policies, idempotent.
pub fn policies_sql() -> String {
    let own_rows = |table: &str| {
        format!(
            "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             GRANT SELECT, INSERT ON {table} TO {HOST_GROUP};
             DROP POLICY IF EXISTS agentd_host_read ON {table};
             CREATE POLICY agentd_host_read ON {table} FOR SELECT TO {HOST_GROUP} USING (host_id = {MINE});
             DROP POLICY IF EXISTS agentd_host_insert ON {table};
             CREATE POLICY agentd_host_insert ON {table} FOR INSERT TO {HOST_GROUP} WITH CHECK (host_id = {MINE});"
        )
    };
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS agentd_host_roles (role name PRIMARY KEY, host_id text NOT NULL UNIQUE);
         GRANT SELECT ON agentd_host_roles TO {HOST_GROUP};
         GRANT SELECT ON agentd_central_policy, agentd_central_operators,
             agentd_central_suspensions, agentd_central_delegation_revocations TO {HOST_GROUP};
         -- Every host's public key is public; a host registers only its own.
         ALTER TABLE agentd_hosts ENABLE ROW LEVEL SECURITY;
         GRANT SELECT, INSERT ON agentd_hosts TO {HOST_GROUP};
         DROP POLICY IF EXISTS agentd_host_read ON agentd_hosts;
         CREATE POLICY agentd_host_read ON agentd_hosts FOR SELECT TO {HOST_GROUP} USING (true);
         DROP POLICY IF EXISTS agentd_host_insert ON agentd_hosts;
         CREATE POLICY agentd_host_insert ON agentd_hosts FOR INSERT TO {HOST_GROUP} WITH CHECK (host_id = {MINE});
         -- The central revision a host has applied: its own row only.
         ALTER TABLE agentd_host_central ENABLE ROW LEVEL SECURITY;
         GRANT SELECT, INSERT, UPDATE ON agentd_host_central TO {HOST_GROUP};
         DROP POLICY IF EXISTS agentd_host_own ON agentd_host_central;
         CREATE POLICY agentd_host_own ON agentd_host_central FOR ALL TO {HOST_GROUP}
             USING (host_id = {MINE}) WITH CHECK (host_id = {MINE});
         -- Nonces: any host's claim is visible (that is the replay check);
         -- a host claims in its own name, takes over and prunes only expired ones.
         ALTER TABLE agentd_nonces ENABLE ROW LEVEL SECURITY;
         GRANT SELECT, INSERT, UPDATE, DELETE ON agentd_nonces TO {HOST_GROUP};
         DROP POLICY IF EXISTS agentd_host_read ON agentd_nonces;
         CREATE POLICY agentd_host_read ON agentd_nonces FOR SELECT TO {HOST_GROUP} USING (true);
         DROP POLICY IF EXISTS agentd_host_insert ON agentd_nonces;
         CREATE POLICY agentd_host_insert ON agentd_nonces FOR INSERT TO {HOST_GROUP} WITH CHECK (host_id = {MINE});
         DROP POLICY IF EXISTS agentd_host_update ON agentd_nonces;
         CREATE POLICY agentd_host_update ON agentd_nonces FOR UPDATE TO {HOST_GROUP}
             USING (expires_at <= extract(epoch FROM now())::bigint) WITH CHECK (host_id = {MINE});
         DROP POLICY IF EXISTS agentd_host_delete ON agentd_nonces;
         CREATE POLICY agentd_host_delete ON agentd_nonces FOR DELETE TO {HOST_GROUP}
             USING (expires_at < extract(epoch FROM now())::bigint);
"
    );
    sql.push_str(&own_rows("agentd_audit"));
    sql.push_str(&own_rows("agentd_checkpoints"));
    sql
}

/// Creates the tables, the group role, the policies, and a login role for
/// each of `hosts` (mapped to its host id). Idempotent.
pub async fn init_db(
    pg: &PgSettings,
    client: &mut Client,
    hosts: &[String],
) -> Result<(), FleetError> {
    schema::ensure(pg, client).await?;
    let tx = pg.bounded("begin", client.transaction()).await?;
    pg.bounded(
        "creating the host group role",
        tx.batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{HOST_GROUP}') THEN
                 CREATE ROLE {HOST_GROUP} NOLOGIN;
               END IF;
             END $$;"
        )),
    )
    .await?;
    pg.bounded("row-level security", tx.batch_execute(&policies_sql()))
        .await?;
    for host in hosts {
        crate::protocol::message::check_operator_id(host)
            .map_err(|e| FleetError::Postgres(format!("host id `{host}`: {e}")))?;
        let role = role_name(host);
        // Names are [a-z0-9_] by construction: safe to splice.
        pg.bounded(
            "creating a host role",
            tx.batch_execute(&format!(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                     CREATE ROLE {role} LOGIN;
                   END IF;
                 END $$;
                 GRANT {HOST_GROUP} TO {role};"
            )),
        )
        .await?;
        let n = pg
            .bounded(
                "mapping the role to its host",
                tx.execute(
                    "INSERT INTO agentd_host_roles (role, host_id) VALUES ($1, $2)
                     ON CONFLICT (role) DO UPDATE SET host_id = excluded.host_id
                       WHERE agentd_host_roles.host_id = excluded.host_id",
                    &[&role, host],
                ),
            )
            .await?;
        if n == 0 {
            return Err(FleetError::Postgres(format!(
                "role {role} is already mapped to another host id"
            )));
        }
    }
    pg.bounded("commit", tx.commit()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_role_name_is_safe_to_splice() {
        assert_eq!(role_name("host-a"), "agentd_host_host_a");
        assert_eq!(role_name("Ward.3'; DROP"), "agentd_host_ward_3___drop");
        assert_eq!(role_name(&"x".repeat(100)).len(), 63);
        let sql = policies_sql();
        for table in [
            "agentd_audit",
            "agentd_checkpoints",
            "agentd_hosts",
            "agentd_nonces",
        ] {
            assert!(sql.contains(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")));
        }
    }
}
