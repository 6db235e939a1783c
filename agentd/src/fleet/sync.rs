//! Applying the central state on a host: a task LISTENs on the central
//! channel and re-reads everything when told (a NOTIFY), every
//! `resync_secs` (the fallback), and on every (re)connection; each read is
//! compared with what the host holds and the differences are applied
//! through the gateway — which writes them to `gateway.db`, so the host's
//! copy survives a restart and keeps being enforced while PostgreSQL is
//! down. Every change applied (or refused) is audited on the host with
//! the revision it came from.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::central::{self, CentralState};
use super::conn::PgSettings;
use super::{schema, FleetError};
use crate::audit::{AuditEvent, AuditLog, RecordKind};
use crate::gateway::{Gateway, KeyKind, Scope};

/// Audit action of the rows recording a central change applied (or refused).
pub const CENTRAL_ACTION: &str = "fleet_central";
/// Who central suspensions are set by, in the host's suspension list.
pub const CENTRAL_BY: &str = "fleet";

/// Reason code: the central policy was loaded.
pub const REASON_POLICY_APPLIED: &str = "fleet_policy_applied";
/// Reason code: the central policy did not compile here; the old one stays.
pub const REASON_POLICY_REFUSED: &str = "fleet_policy_refused";
/// Reason code: a central operator was enrolled here.
pub const REASON_OPERATOR_ADDED: &str = "fleet_operator_added";
/// Reason code: a central operator was removed (revoked here).
pub const REASON_OPERATOR_REMOVED: &str = "fleet_operator_removed";
/// Reason code: a central operator's roles were changed here.
pub const REASON_OPERATOR_ROLES: &str = "fleet_operator_roles";
/// Reason code: a central operator could not be enrolled here.
pub const REASON_OPERATOR_REFUSED: &str = "fleet_operator_refused";
/// Reason code: a central suspension was put in force here.
pub const REASON_SUSPENDED: &str = "fleet_suspended";
/// Reason code: a central suspension was lifted here.
pub const REASON_RESUMED: &str = "fleet_resumed";
/// Reason code: a central suspension could not be put in force here.
pub const REASON_SUSPENSION_REFUSED: &str = "fleet_suspension_refused";
/// Reason code: a delegation token was revoked centrally and here.
pub const REASON_DELEGATION_REVOKED: &str = "fleet_delegation_revoked";

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The host's follower of the central state.
pub struct CentralSync {
    pg: PgSettings,
    host_id: String,
    gateway: Arc<Gateway>,
    audit: AuditLog,
    resync: Duration,
    /// Highest central revision applied (0: none yet).
    pub applied_rev: AtomicI64,
    /// Full reads done.
    pub reads: AtomicU64,
    /// Refusals already audited (key: what and its revision), so a
    /// re-read does not audit them again.
    refused: std::sync::Mutex<HashSet<String>>,
}

/// One change applied or refused, for the audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Reason code (`fleet_*`).
    pub reason: &'static str,
    /// What it was about, with the revision.
    pub target: String,
}

/// Starts following the central state (until `stop`).
pub fn start(
    pg: PgSettings,
    host_id: String,
    gateway: Arc<Gateway>,
    audit: AuditLog,
    resync: Duration,
    stop: watch::Receiver<bool>,
) -> Arc<CentralSync> {
    let sync = Arc::new(CentralSync {
        pg,
        host_id,
        gateway,
        audit,
        resync,
        applied_rev: AtomicI64::new(0),
        reads: AtomicU64::new(0),
        refused: std::sync::Mutex::new(HashSet::new()),
    });
    tokio::spawn(follow(sync.clone(), stop));
    sync
}

async fn follow(sync: Arc<CentralSync>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match sync.listen_and_apply(&mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(host_id = %sync.host_id, error = %e,
                    "fleet: central state link lost; the host keeps its copy");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl CentralSync {
    /// One connection's life: LISTEN, a full read, then a read per
    /// notification (coalesced) or per `resync`. Ok only when stopped.
    async fn listen_and_apply(&self, stop: &mut watch::Receiver<bool>) -> Result<(), FleetError> {
        let (mut conn, mut notes) = self.pg.connect_listening().await?;
        schema::ensure(&self.pg, &mut conn.client).await?;
        self.pg
            .bounded(
                "LISTEN",
                conn.client
                    .batch_execute(&format!("LISTEN {}", schema::CENTRAL_CHANNEL)),
            )
            .await?;
        tracing::info!(host_id = %self.host_id, "fleet: following the central state");
        loop {
            let state = central::read(&self.pg, &mut conn.client).await?;
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.apply(&state).await;
            // For `agentctl fleet status`; a role that may not write it
            // (an older database) loses nothing else.
            if let Err(e) =
                central::report_applied(&self.pg, &conn.client, &self.host_id, state.rev).await
            {
                tracing::debug!(error = %e, "fleet: could not report the applied revision");
            }
            tokio::select! {
                note = notes.recv() => {
                    if note.is_none() {
                        return Err(FleetError::Postgres("the connection ended".into()));
                    }
                    // Changes that arrived together are one read.
                    while notes.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(self.resync) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Applies `state` and audits each change; returns what was done.
    pub async fn apply(&self, state: &CentralState) -> Vec<Applied> {
        let changes = self.diff_and_apply(state);
        for c in &changes {
            let mut ev = AuditEvent::new(RecordKind::Lifecycle, CENTRAL_ACTION);
            ev.decision = if c.reason.ends_with("_refused") {
                "deny"
            } else {
                "info"
            }
            .into();
            ev.reason_code = c.reason.into();
            ev.target = c.target.clone();
            if let Err(e) = self.audit.append(ev).await {
                tracing::error!(error = %e, "fleet: could not audit a central change");
            }
        }
        self.applied_rev.fetch_max(state.rev, Ordering::Relaxed);
        changes
    }

    /// The differences between `state` and what the host holds, applied:
    /// the policy first (operators' roles are checked against it), then
    /// operators, suspensions, delegation revocations.
    fn diff_and_apply(&self, state: &CentralState) -> Vec<Applied> {
        let mut out = Vec::new();
        self.apply_policy(state, &mut out);
        self.apply_operators(state, &mut out);
        self.apply_suspensions(state, &mut out);
        self.apply_revocations(state, &mut out);
        out
    }

    /// A refusal is audited once per subject and revision.
    fn first_refusal(&self, key: String) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key)
    }

    fn apply_policy(&self, state: &CentralState, out: &mut Vec<Applied>) {
        let Some(p) = &state.policy else { return };
        let sha = p.sha256();
        let origin = format!("{}{}", crate::gateway::CENTRAL_POLICY_ORIGIN, p.rev);
        // In force already, from this revision.
        if self
            .gateway
            .policy_info()
            .is_some_and(|i| i.sha256 == sha && i.origin == origin)
        {
            return;
        }
        match self.gateway.load_policy(&p.source, &origin) {
            Ok(info) => {
                tracing::info!(host_id = %self.host_id, rev = p.rev, policy_id = %info.policy_id,
                    "fleet: central policy applied");
                out.push(Applied {
                    reason: REASON_POLICY_APPLIED,
                    target: format!("rev={} policy_id={}", p.rev, info.policy_id),
                });
            }
            Err(e) => {
                if self.first_refusal(format!("policy@{}", p.rev)) {
                    tracing::error!(host_id = %self.host_id, rev = p.rev, error = %e,
                        "fleet: central policy refused here; the old one stays in force");
                    out.push(Applied {
                        reason: REASON_POLICY_REFUSED,
                        target: format!("rev={} error={e}", p.rev),
                    });
                }
            }
        }
    }

    fn apply_operators(&self, state: &CentralState, out: &mut Vec<Applied>) {
        let local: HashMap<String, crate::gateway::OperatorInfo> = self
            .gateway
            .list_operators()
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        for op in &state.operators {
            let here = local.get(&op.id);
            let ours = here.is_some_and(|h| {
                h.key_kind == KeyKind::Ed25519
                    && h.public_key.as_deref() == Some(&op.public_key.to_ascii_lowercase())
            });
            let refuse = |why: String, out: &mut Vec<Applied>| {
                if self.first_refusal(format!("operator {}@{}", op.id, op.rev)) {
                    tracing::error!(host_id = %self.host_id, operator = %op.id, rev = op.rev, %why,
                        "fleet: central operator not applied here");
                    out.push(Applied {
                        reason: REASON_OPERATOR_REFUSED,
                        target: format!("rev={} operator={} error={why}", op.rev, op.id),
                    });
                }
            };
            match (op.removed, here) {
                (true, Some(h)) if ours && !h.revoked => {
                    match self.gateway.revoke_operator_and_grants(&op.id) {
                        Ok((_, ended)) => out.push(Applied {
                            reason: REASON_OPERATOR_REMOVED,
                            target: format!(
                                "rev={} operator={} grants_ended={ended}",
                                op.rev, op.id
                            ),
                        }),
                        Err(e) => refuse(e.to_string(), out),
                    }
                }
                (true, _) => {}
                (false, None) => {
                    let added = central::parse_public_key(&op.public_key)
                        .map_err(|e| e.to_string())
                        .and_then(|k| {
                            self.gateway
                                .add_operator_public(&op.id, &op.roles, &k)
                                .map_err(|e| e.to_string())
                        });
                    match added {
                        Ok(_) => out.push(Applied {
                            reason: REASON_OPERATOR_ADDED,
                            target: format!(
                                "rev={} operator={} roles={}",
                                op.rev,
                                op.id,
                                op.roles.join(",")
                            ),
                        }),
                        Err(e) => refuse(e, out),
                    }
                }
                (false, Some(h)) if ours && !h.revoked && h.roles != op.roles => {
                    match self.gateway.set_operator_roles(&op.id, &op.roles) {
                        Ok((_, ended)) => out.push(Applied {
                            reason: REASON_OPERATOR_ROLES,
                            target: format!(
                                "rev={} operator={} roles={} grants_ended={ended}",
                                op.rev,
                                op.id,
                                op.roles.join(",")
                            ),
                        }),
                        Err(e) => refuse(e.to_string(), out),
                    }
                }
                (false, Some(_)) if ours => {}
                (false, Some(h)) if h.key_kind == KeyKind::Ed25519 => refuse(
                    "this host holds the id with another public key (keys are not changed in place: remove the operator and add a new id)".into(),
                    out,
                ),
                (false, Some(_)) => refuse(
                    "a local operator holds this id (remove or rename one of them)".into(),
                    out,
                ),
            }
        }
    }

    fn apply_suspensions(&self, state: &CentralState, out: &mut Vec<Applied>) {
        let local: Vec<crate::gateway::Suspension> = self.gateway.suspensions();
        let held = |scope: &Scope| {
            local
                .iter()
                .find(|s| s.scope().ok().as_ref() == Some(scope))
                .cloned()
        };
        let mut wanted = Vec::new();
        for s in &state.suspensions {
            let scope = match s.scope() {
                Ok(scope) => scope,
                Err(e) => {
                    if self.first_refusal(format!("suspension {}:{}@{}", s.scope, s.name, s.rev)) {
                        out.push(Applied {
                            reason: REASON_SUSPENSION_REFUSED,
                            target: format!("rev={} error={e}", s.rev),
                        });
                    }
                    continue;
                }
            };
            if s.lifted {
                if held(&scope).is_some_and(|h| h.by == CENTRAL_BY)
                    && self.gateway.resume(&scope).is_ok()
                {
                    out.push(Applied {
                        reason: REASON_RESUMED,
                        target: format!("rev={} scope={scope}", s.rev),
                    });
                }
                continue;
            }
            wanted.push(scope.clone());
            if held(&scope).is_some() {
                continue;
            }
            match self
                .gateway
                .suspend(scope.clone(), &s.reason, s.stop, CENTRAL_BY)
            {
                Ok(o) => out.push(Applied {
                    reason: REASON_SUSPENDED,
                    target: format!(
                        "rev={} scope={scope} grants_revoked={} processes_stopped={}",
                        s.rev, o.grants_revoked, o.processes_stopped
                    ),
                }),
                Err(e) => {
                    if self.first_refusal(format!("suspension {scope}@{}", s.rev)) {
                        out.push(Applied {
                            reason: REASON_SUSPENSION_REFUSED,
                            target: format!("rev={} scope={scope} error={e}", s.rev),
                        });
                    }
                }
            }
        }
        // A central suspension whose row is gone (deleted by hand) ends too.
        for s in local.iter().filter(|s| s.by == CENTRAL_BY) {
            let Ok(scope) = s.scope() else { continue };
            let listed = state
                .suspensions
                .iter()
                .any(|c| c.scope().ok().as_ref() == Some(&scope));
            if !listed && !wanted.contains(&scope) && self.gateway.resume(&scope).is_ok() {
                out.push(Applied {
                    reason: REASON_RESUMED,
                    target: format!("rev={} scope={scope} (no longer listed)", state.rev),
                });
            }
        }
    }

    fn apply_revocations(&self, state: &CentralState, out: &mut Vec<Applied>) {
        if state.revoked_delegations.is_empty() {
            return;
        }
        let live: HashSet<String> = self
            .gateway
            .list_delegations()
            .into_iter()
            .filter(|d| !d.revoked)
            .map(|d| d.id)
            .collect();
        for (token, rev) in &state.revoked_delegations {
            if !live.contains(token) {
                continue;
            }
            let req = crate::protocol::delegation::RevokeRequest {
                v: crate::protocol::message::VERSION,
                id: token.clone(),
                by: None,
                nonce: None,
                timestamp: None,
                signature: None,
            };
            match self
                .gateway
                .revoke_delegation(&req, true, crate::gateway::unix_now())
            {
                Ok(r) => out.push(Applied {
                    reason: REASON_DELEGATION_REVOKED,
                    target: format!(
                        "rev={rev} token={token} tokens={} grants_ended={}",
                        r.tokens.len(),
                        r.grants_revoked
                    ),
                }),
                Err(e) => tracing::error!(host_id = %self.host_id, token, error = %e.message,
                    "fleet: central delegation revocation not applied here"),
            }
        }
    }
}
