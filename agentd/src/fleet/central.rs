//! The fleet's central state in PostgreSQL: the policy, the operators
//! (roles and Ed25519 public keys), suspensions and delegation
//! revocations. An administrator changes it (`agentctl fleet`, through
//! the functions here, which validate before anything is stored); hosts
//! read it (`read`) and apply it locally (`sync`). Every change takes a
//! fresh revision; a trigger announces it (`schema::CENTRAL_CHANNEL`).
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::conn::PgSettings;
use super::FleetError;
use crate::gateway::Scope;
use crate::protocol::message::check_operator_id;

/// Advisory lock serialising administrators' changes (a policy push checks
/// the operators' roles, an operator add the policy's).
const CENTRAL_LOCK: i64 = 0x6167_656e_7464_0002;

/// Errors of a central change: refused (nothing stored) or PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// The change was refused; nothing was stored.
    #[error("{0}")]
    Refused(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The central policy in force (the highest revision pushed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralPolicy {
    /// Its revision.
    pub rev: i64,
    /// Source text.
    pub source: String,
}

impl CentralPolicy {
    /// SHA-256 of the source, hex (as the gateway reports a loaded policy's).
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.source.as_bytes()))
    }
}

/// A central operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralOperator {
    /// Operator id.
    pub id: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Removed: revoked on every host.
    pub removed: bool,
    /// Revision of its last change.
    pub rev: i64,
}

/// A central suspension (lifted ones stay, so hosts see the lift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralSuspension {
    /// `operator`, `agent` or `all`.
    pub scope: String,
    /// The operator or agent; empty for `all`.
    pub name: String,
    /// Why.
    pub reason: String,
    /// Stop the agents' processes in scope.
    pub stop: bool,
    /// Lifted (resumed).
    pub lifted: bool,
    /// Revision of its last change.
    pub rev: i64,
}

impl CentralSuspension {
    /// Its scope, as the gateway names it.
    pub fn scope(&self) -> Result<Scope, String> {
        let name = (!self.name.is_empty()).then_some(self.name.as_str());
        Scope::parse(&self.scope, name).map_err(|e| e.0)
    }
}

/// Everything a host applies, read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CentralState {
    /// Highest revision of any change (0: nothing central yet).
    pub rev: i64,
    /// The policy in force, if one was pushed.
    pub policy: Option<CentralPolicy>,
    /// Every operator, removed ones too.
    pub operators: Vec<CentralOperator>,
    /// Every suspension, lifted ones too.
    pub suspensions: Vec<CentralSuspension>,
    /// Revoked delegation tokens, with their revisions.
    pub revoked_delegations: Vec<(String, i64)>,
}

/// Where a host stands: the central revision it last applied, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// Host id.
    pub host_id: String,
    /// Highest central revision applied.
    pub applied_rev: i64,
    /// Seconds since it reported it.
    pub age_secs: i64,
}

/// Records that `host_id` has applied revision `rev` (never lowers it).
pub async fn report_applied(
    pg: &PgSettings,
    client: &Client,
    host_id: &str,
    rev: i64,
) -> Result<(), FleetError> {
    pg.bounded(
        "reporting the applied revision",
        client.execute(
            "INSERT INTO agentd_host_central (host_id, applied_rev) VALUES ($1, $2)
             ON CONFLICT (host_id) DO UPDATE
               SET applied_rev = greatest(agentd_host_central.applied_rev, excluded.applied_rev),
                   applied_at = now()",
            &[&host_id, &rev],
        ),
    )
    .await
    .map(|_| ())
}

/// Every host's reported revision, by host id.
pub async fn host_status(pg: &PgSettings, client: &Client) -> Result<Vec<HostStatus>, FleetError> {
    let rows = pg
        .bounded(
            "reading the hosts' revisions",
            client.query(
                "SELECT host_id, applied_rev, extract(epoch FROM now() - applied_at)::bigint
                 FROM agentd_host_central ORDER BY host_id",
                &[],
            ),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HostStatus {
            host_id: r.get(0),
            applied_rev: r.get(1),
            age_secs: r.get(2),
        })
        .collect())
}

/// Reads the central state in one repeatable-read snapshot.
pub async fn read(pg: &PgSettings, client: &mut Client) -> Result<CentralState, FleetError> {
    let tx = pg
        .bounded(
            "begin",
            client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start(),
        )
        .await?;
    let policy = pg
        .bounded(
            "reading the central policy",
            tx.query_opt(
                "SELECT rev, source FROM agentd_central_policy ORDER BY rev DESC LIMIT 1",
                &[],
            ),
        )
        .await?
        .map(|r| CentralPolicy {
            rev: r.get(0),
            source: r.get(1),
        });
    let operators = pg
        .bounded(
            "reading the central operators",
            tx.query(
                "SELECT id, roles, public_key, removed, rev FROM agentd_central_operators ORDER BY id",
                &[],
            ),
        )
        .await?
        .iter()
        .map(|r| CentralOperator {
            id: r.get(0),
            roles: r.get(1),
            public_key: r.get(2),
            removed: r.get(3),
            rev: r.get(4),
        })
        .collect::<Vec<_>>();
    let suspensions = pg
        .bounded(
            "reading the central suspensions",
            tx.query(
                "SELECT scope, name, reason, stop, lifted, rev FROM agentd_central_suspensions
                 ORDER BY scope, name",
                &[],
            ),
        )
        .await?
        .iter()
        .map(|r| CentralSuspension {
            scope: r.get(0),
            name: r.get(1),
            reason: r.get(2),
            stop: r.get(3),
            lifted: r.get(4),
            rev: r.get(5),
        })
        .collect::<Vec<_>>();
    let revoked_delegations = pg
        .bounded(
            "reading the central delegation revocations",
            tx.query(
                "SELECT token, rev FROM agentd_central_delegation_revocations ORDER BY token",
                &[],
            ),
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect::<Vec<_>>();
    pg.bounded("commit", tx.commit()).await?;
    let rev = policy
        .iter()
        .map(|p| p.rev)
        .chain(operators.iter().map(|o| o.rev))
        .chain(suspensions.iter().map(|s| s.rev))
        .chain(revoked_delegations.iter().map(|d| d.1))
        .max()
        .unwrap_or(0);
    Ok(CentralState {
        rev,
        policy,
        operators,
        suspensions,
        revoked_delegations,
    })
}

/// A transaction holding the administrators' lock (the tables made first
/// if missing). Dropped without commit, it stores nothing.
async fn begin<'c>(
    pg: &PgSettings,
    client: &'c mut Client,
) -> Result<tokio_postgres::Transaction<'c>, CentralError> {
    super::schema::ensure(pg, client).await?;
    let tx = pg.bounded("begin", client.transaction()).await?;
    pg.bounded(
        "the administrators' lock",
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CENTRAL_LOCK]),
    )
    .await?;
    Ok(tx)
}

/// Roles of the central policy in force, if one was pushed.
async fn central_roles(
    pg: &PgSettings,
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Option<Vec<String>>, CentralError> {
    let row = pg
        .bounded(
            "reading the central policy",
            tx.query_opt(
                "SELECT source FROM agentd_central_policy ORDER BY rev DESC LIMIT 1",
                &[],
            ),
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let source: String = row.get(0);
    let compiled = crate::policy::compile(&source, "fleet")
        .map_err(|e| CentralError::Refused(format!("the central policy does not compile: {e}")))?;
    Ok(Some(compiled.role_names()))
}

/// Pushes a policy: compiled first (refused with the compiler's error,
/// nothing stored), and refused if a central operator holds a role it
/// lacks. Returns the revision and the compiled policy id.
pub async fn push_policy(
    pg: &PgSettings,
    client: &mut Client,
    source: &str,
    by: &str,
) -> Result<(i64, String), CentralError> {
    let compiled = crate::policy::compile(source, "fleet")
        .map_err(|e| CentralError::Refused(format!("the policy does not compile: {e}")))?;
    let roles = compiled.role_names();
    let id = compiled.id.clone();
    let sha = compiled.sha256.clone();
    let source = source.to_owned();
    let by = by.to_owned();
    let txo = begin(pg, client).await?;
    let rev: i64 = {
        let tx = &txo;
        {
            let ops = pg
                .bounded(
                    "reading the central operators",
                    tx.query(
                        "SELECT id, roles FROM agentd_central_operators WHERE NOT removed ORDER BY id",
                        &[],
                    ),
                )
                .await?;
            for op in &ops {
                let (op_id, op_roles): (String, Vec<String>) = (op.get(0), op.get(1));
                if let Some(r) = op_roles.iter().find(|r| !roles.contains(r)) {
                    return Err(CentralError::Refused(format!(
                        "operator `{op_id}` holds role `{r}`, which the policy does not define (roles: {}); remove the operator first or keep the role",
                        roles.join(", ")
                    )));
                }
            }
            let row = pg
                .bounded(
                    "storing the policy",
                    tx.query_one(
                        "INSERT INTO agentd_central_policy (source, sha256, policy_id, pushed_by)
                         VALUES ($1, $2, $3, $4) RETURNING rev",
                        &[&source, &sha, &id, &by],
                    ),
                )
                .await?;
            row.get(0)
        }
    };
    pg.bounded("commit", txo.commit()).await?;
    Ok((rev, compiled.id))
}

/// Adds an operator with its Ed25519 public key (64 hex digits); refused if
/// the id is malformed or taken (removed ones too: ids are not reused), a
/// role is unknown to the central policy, or the key is not a valid point.
pub async fn add_operator(
    pg: &PgSettings,
    client: &mut Client,
    id: &str,
    roles: &[String],
    public_key: &str,
    by: &str,
) -> Result<i64, CentralError> {
    check_operator_id(id).map_err(|e| CentralError::Refused(format!("operator id: {e}")))?;
    if roles.is_empty() {
        return Err(CentralError::Refused(
            "an operator needs at least one role".into(),
        ));
    }
    parse_public_key(public_key).map_err(CentralError::Refused)?;
    let (id, roles, key, by) = (
        id.to_owned(),
        roles.to_vec(),
        public_key.to_ascii_lowercase(),
        by.to_owned(),
    );
    let txo = begin(pg, client).await?;
    let rev = {
        let tx = &txo;
        {
            if let Some(known) = central_roles(pg, tx).await? {
                if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
                    return Err(CentralError::Refused(format!(
                        "role `{r}` is not defined by the central policy (roles: {})",
                        known.join(", ")
                    )));
                }
            }
            let row = pg
                .bounded(
                    "storing the operator",
                    tx.query_opt(
                        "INSERT INTO agentd_central_operators (id, roles, public_key, changed_by)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING rev",
                        &[&id, &roles, &key, &by],
                    ),
                )
                .await?;
            row.map(|r| r.get(0)).ok_or_else(|| {
                CentralError::Refused(format!(
                    "operator `{id}` already exists centrally (ids of removed operators are not reused)"
                ))
            })
        }
    }?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

/// Replaces a central operator's roles (each defined by the central
/// policy); refused if unknown, removed, or a role is unknown.
pub async fn set_roles(
    pg: &PgSettings,
    client: &mut Client,
    id: &str,
    roles: &[String],
    by: &str,
) -> Result<i64, CentralError> {
    if roles.is_empty() {
        return Err(CentralError::Refused(
            "an operator needs at least one role".into(),
        ));
    }
    let txo = begin(pg, client).await?;
    let tx = &txo;
    if let Some(known) = central_roles(pg, tx).await? {
        if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
            return Err(CentralError::Refused(format!(
                "role `{r}` is not defined by the central policy (roles: {})",
                known.join(", ")
            )));
        }
    }
    let roles = roles.to_vec();
    let row = pg
        .bounded(
            "changing the operator's roles",
            tx.query_opt(
                "UPDATE agentd_central_operators
                 SET roles = $2, rev = nextval('agentd_central_rev'), changed_by = $3, changed_at = now()
                 WHERE id = $1 AND NOT removed RETURNING rev",
                &[&id, &roles, &by],
            ),
        )
        .await?;
    let rev = row.map(|r| r.get(0)).ok_or_else(|| {
        CentralError::Refused(format!("no central operator `{id}` (or it was removed)"))
    })?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

/// Removes an operator: it is revoked on every host (its earlier calls'
/// grants end). Refused if unknown or already removed.
pub async fn remove_operator(
    pg: &PgSettings,
    client: &mut Client,
    id: &str,
    by: &str,
) -> Result<i64, CentralError> {
    let (id, by) = (id.to_owned(), by.to_owned());
    let txo = begin(pg, client).await?;
    let rev = {
        let tx = &txo;
        {
            let row = pg
                .bounded(
                    "removing the operator",
                    tx.query_opt(
                        "UPDATE agentd_central_operators
                         SET removed = true, rev = nextval('agentd_central_rev'),
                             changed_by = $2, changed_at = now()
                         WHERE id = $1 AND NOT removed RETURNING rev",
                        &[&id, &by],
                    ),
                )
                .await?;
            row.map(|r| r.get(0)).ok_or_else(|| {
                CentralError::Refused(format!("no central operator `{id}` (or already removed)"))
            })
        }
    }?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

/// Suspends `scope` on every host (again, if it had been lifted).
pub async fn suspend(
    pg: &PgSettings,
    client: &mut Client,
    scope: &Scope,
    reason: &str,
    stop: bool,
    by: &str,
) -> Result<i64, CentralError> {
    crate::gateway::suspend::check_reason(reason).map_err(|e| CentralError::Refused(e.0))?;
    let (kind, name) = (
        scope.kind().to_owned(),
        scope.name().unwrap_or("").to_owned(),
    );
    let (reason, by) = (reason.to_owned(), by.to_owned());
    let txo = begin(pg, client).await?;
    let rev = {
        let tx = &txo;
        {
            if kind == "operator" {
                let known = pg
                    .bounded(
                        "looking up the operator",
                        tx.query_opt(
                            "SELECT 1 FROM agentd_central_operators WHERE id = $1 AND NOT removed",
                            &[&name],
                        ),
                    )
                    .await?;
                if known.is_none() {
                    return Err(CentralError::Refused(format!(
                        "no central operator `{name}` (local operators are suspended on their host: agentctl suspend)"
                    )));
                }
            }
            let row = pg
                .bounded(
                    "storing the suspension",
                    tx.query_opt(
                        "INSERT INTO agentd_central_suspensions (scope, name, reason, stop, changed_by)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (scope, name) DO UPDATE
                           SET reason = excluded.reason, stop = excluded.stop, lifted = false,
                               rev = nextval('agentd_central_rev'), changed_by = excluded.changed_by,
                               changed_at = now()
                           WHERE agentd_central_suspensions.lifted
                         RETURNING rev",
                        &[&kind, &name, &reason, &stop, &by],
                    ),
                )
                .await?;
            row.map(|r| r.get(0)).ok_or_else(|| {
                CentralError::Refused(format!(
                    "{} is already suspended centrally",
                    scope_text(&kind, &name)
                ))
            })
        }
    }?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

/// Lifts the central suspension of exactly `scope` on every host.
pub async fn resume(
    pg: &PgSettings,
    client: &mut Client,
    scope: &Scope,
    by: &str,
) -> Result<i64, CentralError> {
    let (kind, name) = (
        scope.kind().to_owned(),
        scope.name().unwrap_or("").to_owned(),
    );
    let by = by.to_owned();
    let txo = begin(pg, client).await?;
    let rev = {
        let tx = &txo;
        {
            let row = pg
                .bounded(
                    "lifting the suspension",
                    tx.query_opt(
                        "UPDATE agentd_central_suspensions
                         SET lifted = true, rev = nextval('agentd_central_rev'),
                             changed_by = $3, changed_at = now()
                         WHERE scope = $1 AND name = $2 AND NOT lifted RETURNING rev",
                        &[&kind, &name, &by],
                    ),
                )
                .await?;
            row.map(|r| r.get(0)).ok_or_else(|| {
                CentralError::Refused(format!(
                    "{} is not suspended centrally",
                    scope_text(&kind, &name)
                ))
            })
        }
    }?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

/// Revokes a delegation token (and its subtree) on every host holding it.
pub async fn revoke_delegation(
    pg: &PgSettings,
    client: &mut Client,
    token: &str,
    by: &str,
) -> Result<i64, CentralError> {
    crate::protocol::delegation::Principal::parse(token)
        .ok()
        .filter(|p| matches!(p, crate::protocol::delegation::Principal::Token { .. }))
        .ok_or_else(|| {
            CentralError::Refused(format!(
                "`{token}` is not a delegation token's name (ROOT/d-…)"
            ))
        })?;
    let (token, by) = (token.to_owned(), by.to_owned());
    let txo = begin(pg, client).await?;
    let rev = {
        let tx = &txo;
        {
            let row = pg
                .bounded(
                    "storing the revocation",
                    tx.query_opt(
                        "INSERT INTO agentd_central_delegation_revocations (token, changed_by)
                         VALUES ($1, $2) ON CONFLICT (token) DO NOTHING RETURNING rev",
                        &[&token, &by],
                    ),
                )
                .await?;
            row.map(|r| r.get(0)).ok_or_else(|| {
                CentralError::Refused(format!("`{token}` is already revoked centrally"))
            })
        }
    }?;
    pg.bounded("commit", txo.commit()).await?;
    Ok(rev)
}

fn scope_text(kind: &str, name: &str) -> String {
    if name.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} `{name}`")
    }
}

/// Parses an Ed25519 public key given as 64 hex digits.
pub fn parse_public_key(hex_key: &str) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key)
        .map_err(|_| "an Ed25519 public key is 64 hex digits".to_owned())?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| "not a valid Ed25519 public key".to_owned())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked_points() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let hex_key = hex::encode(sk.verifying_key().as_bytes());
        assert_eq!(
            parse_public_key(&hex_key).unwrap(),
            sk.verifying_key().to_bytes()
        );
        assert!(parse_public_key("abcd").is_err());
        assert!(parse_public_key(&"zz".repeat(32)).is_err());
        // Not a point on the curve.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        bad[31] = 0x80;
        let r = parse_public_key(&hex::encode(bad));
        assert!(
            r.is_err() || r.is_ok_and(|k| k == bad),
            "decoded or refused"
        );
    }

    #[test]
    fn a_central_policy_hashes_like_a_loaded_one() {
        let src = include_str!("../../../policies/demo.toml");
        let p = CentralPolicy {
            rev: 1,
            source: src.into(),
        };
        let compiled = crate::policy::compile(src, "x").unwrap();
        assert_eq!(p.sha256(), compiled.sha256);
    }
}
