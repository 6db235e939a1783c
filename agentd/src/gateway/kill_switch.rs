//! The kill switch: suspending an operator, an agent or everything. A
//! suspension is stored in gateway.db before it takes effect (it survives
//! a restart), refuses new messages and tool calls in its scope from then
//! on, and ends at once the kernel grants already installed in its scope
//! (and, when asked, stops the agents' processes) through a [`KillSwitch`]
//! the enforcement layer provides. Auditing is the API's (who, scope, reason).
use std::sync::Arc;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::decide::{Decision, ToolCallRequest};
use super::ingest::{parse_active_id, ActiveMessage, Refusal, RefusalClass};
use super::pipeline::Caller;
use super::store::{sql, Store, StoreError};
use super::suspend::{check_reason, InvalidSuspension, Scope, Subject, Suspension};
use super::{unix_now, Gateway};
use crate::protocol::{reason, SignedMessage};

/// Which installed grants a suspension ends.
#[derive(Debug, Clone, Copy)]
pub enum GrantTarget<'a> {
    /// The grants of calls made on these active messages (an operator's).
    Messages(&'a [String]),
    /// Every grant of this agent.
    Agent(&'a str),
    /// Every grant.
    All,
}

/// What the enforcement layer does for the kill switch.
pub trait KillSwitch: Send + Sync {
    /// Ends the installed grants of `target` (map entries and bindings);
    /// returns how many calls' grants were ended.
    fn end_grants(&self, target: GrantTarget<'_>) -> Result<usize, String>;
    /// Kills every process of the named agents (None: of every agent);
    /// returns how many processes were signalled.
    fn stop_agents(&self, agents: Option<&[String]>) -> Result<usize, String>;
}

/// Errors of suspend and resume.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    /// The scope or reason is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidSuspension),
    /// The operator named is not enrolled.
    #[error("no operator `{id}`")]
    UnknownOperator {
        /// The id asked for.
        id: String,
    },
    /// Resume of a scope that is not suspended.
    #[error("{scope} is not suspended")]
    NotSuspended {
        /// The scope asked for.
        scope: String,
    },
    /// gateway.db failed: nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SuspendError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => reason::INVALID_SUSPENSION,
            Self::UnknownOperator { .. } => reason::UNKNOWN_OPERATOR,
            Self::NotSuspended { .. } => reason::NOT_SUSPENDED,
            Self::Store(_) => reason::STORE_ERROR,
        }
    }
}

/// What a suspension did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendOutcome {
    /// The suspension now in force.
    pub suspension: Suspension,
    /// Calls whose kernel grants were ended.
    pub grants_revoked: usize,
    /// Processes killed (with `stop`).
    pub processes_stopped: usize,
    /// What could not be done (the suspension stands regardless: the
    /// gateway refuses in its scope whatever the kernel side managed).
    pub warnings: Vec<String>,
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS suspensions (
    kind TEXT NOT NULL, name TEXT NOT NULL, reason TEXT NOT NULL,
    stop INTEGER NOT NULL, set_by TEXT NOT NULL, since INTEGER NOT NULL,
    PRIMARY KEY (kind, name))";

impl Store {
    /// Every stored suspension (creating the table on first use).
    pub(super) fn suspensions(&self) -> Result<Vec<(Scope, Suspension)>, StoreError> {
        let path = self.path().to_owned();
        self.with(|c| {
            c.execute_batch(TABLE)
                .map_err(sql(&path, "create suspensions"))?;
            let mut st = c
                .prepare("SELECT kind, name, reason, stop, set_by, since FROM suspensions")
                .map_err(sql(&path, "select suspensions"))?;
            let rows = st
                .query_map([], |r| {
                    let name: String = r.get(1)?;
                    Ok(Suspension {
                        scope: r.get(0)?,
                        name: (!name.is_empty()).then_some(name),
                        reason: r.get(2)?,
                        stop: r.get(3)?,
                        by: r.get(4)?,
                        since: r.get(5)?,
                    })
                })
                .map_err(sql(&path, "select suspensions"))?;
            let mut out = Vec::new();
            for row in rows {
                let s = row.map_err(sql(&path, "read suspension"))?;
                // A row that no longer parses must not silently lift a suspension.
                let scope = s.scope().map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    table: "suspensions",
                    message: e.to_string(),
                })?;
                out.push((scope, s));
            }
            Ok(out)
        })
    }

    fn put_suspension(&self, s: &Suspension) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO suspensions (kind, name, reason, stop, set_by, since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.scope,
                    s.name.as_deref().unwrap_or(""),
                    s.reason,
                    s.stop,
                    s.by,
                    s.since
                ],
            )
            .map(drop)
            .map_err(sql(self.path(), "insert suspension"))
        })
    }

    fn delete_suspension(&self, scope: &Scope) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM suspensions WHERE kind = ?1 AND name = ?2",
                params![scope.kind(), scope.name().unwrap_or("")],
            )
            .map(|n| n == 1)
            .map_err(sql(self.path(), "delete suspension"))
        })
    }
}

impl Gateway {
    /// Wires the enforcement layer's side of the kill switch.
    pub fn set_kill_switch(&self, k: Arc<dyn KillSwitch>) {
        *self.kill_switch.write().unwrap_or_else(|p| p.into_inner()) = Some(k);
    }

    fn kill_switch(&self) -> Option<Arc<dyn KillSwitch>> {
        self.kill_switch
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The suspension covering agent `name` (its own, or `all`), as a
    /// reason code and message: nothing new may start in it.
    pub fn agent_suspension(&self, name: &str) -> Option<(&'static str, String)> {
        self.suspensions.refusal(&Subject {
            operator: None,
            agents: [Some(name), None],
        })
    }

    /// Every suspension in force.
    pub fn suspensions(&self) -> Vec<Suspension> {
        self.suspensions
            .list()
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    /// Suspends `scope`: stored first, then in force for every later
    /// message and tool call, then the grants in scope are ended (and with
    /// `stop` the agents' processes killed). An agent's existence is the
    /// caller's to check (agents live above the gateway).
    pub fn suspend(
        &self,
        scope: Scope,
        why: &str,
        stop: bool,
        by: &str,
    ) -> Result<SuspendOutcome, SuspendError> {
        check_reason(why)?;
        if let Scope::Operator(id) = &scope {
            let known = self
                .operators
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id);
            if !known {
                return Err(SuspendError::UnknownOperator { id: id.clone() });
            }
        }
        let s = Suspension {
            scope: scope.kind().to_owned(),
            name: scope.name().map(str::to_owned),
            reason: why.to_owned(),
            stop,
            by: by.to_owned(),
            since: unix_now(),
        };
        self.store.put_suspension(&s)?;
        self.suspensions.insert(scope.clone(), s.clone());
        // Elevations in scope end: after a resume their sessions ask again.
        let elevations_ended = self.sessions_state().end_elevations(|e| match &scope {
            Scope::All => true,
            // A delegate's elevation ends with its root operator's suspension.
            Scope::Operator(id) => {
                crate::protocol::delegation::token_root(&e.operator).unwrap_or(&e.operator) == id
            }
            Scope::Agent(name) => e.agent == *name,
        });
        tracing::warn!(scope = %scope, by, reason = why, stop, elevations_ended, "suspended");
        let mut out = SuspendOutcome {
            suspension: s,
            grants_revoked: 0,
            processes_stopped: 0,
            warnings: Vec::new(),
        };
        self.enforce_suspension(&scope, stop, &mut out);
        Ok(out)
    }

    /// Ends the grants in `scope` and, with `stop`, kills its processes.
    fn enforce_suspension(&self, scope: &Scope, stop: bool, out: &mut SuspendOutcome) {
        let Some(k) = self.kill_switch() else {
            out.warnings
                .push("no enforcement layer: no kernel grants to end".into());
            return;
        };
        let ids = match scope {
            Scope::Operator(id) => self.store.active_ids_of(id).unwrap_or_else(|e| {
                out.warnings
                    .push(format!("listing the operator's messages: {e}"));
                Vec::new()
            }),
            _ => Vec::new(),
        };
        let target = match scope {
            Scope::Operator(_) => GrantTarget::Messages(&ids),
            Scope::Agent(a) => GrantTarget::Agent(a),
            Scope::All => GrantTarget::All,
        };
        match k.end_grants(target) {
            Ok(n) => out.grants_revoked = n,
            Err(e) => out.warnings.push(format!("ending grants: {e}")),
        }
        if !stop {
            return;
        }
        let agents = match scope {
            Scope::Operator(id) => Some(self.agents_holding_messages_of(id)),
            Scope::Agent(a) => Some(vec![a.clone()]),
            Scope::All => None,
        };
        match k.stop_agents(agents.as_deref()) {
            Ok(n) => out.processes_stopped = n,
            Err(e) => out.warnings.push(format!("stopping processes: {e}")),
        }
    }

    /// The agents holding a verified message of `operator`: those acting
    /// on its instructions, stopped with a suspension of the operator.
    fn agents_holding_messages_of(&self, operator: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|m| m.authority() == operator && m.key_gen.is_some())
            .filter_map(|m| m.holder.get()?.strip_prefix("agent:").map(str::to_owned))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Lifts the suspension of exactly `scope` (a suspension of `all` does
    /// not lift an operator's, nor the reverse). Returns what was lifted.
    pub fn resume(&self, scope: &Scope) -> Result<Suspension, SuspendError> {
        let not = || SuspendError::NotSuspended {
            scope: scope.to_string(),
        };
        if self.suspensions.get(scope).is_none() {
            return Err(not());
        }
        self.store.delete_suspension(scope)?;
        let lifted = self.suspensions.remove(scope).ok_or_else(not)?;
        tracing::warn!(scope = %scope, "suspension lifted");
        Ok(lifted)
    }

    /// Ends, again, the grants in the scope of every suspension in force:
    /// for grants the enforcer re-adopted after a restart. Returns calls ended.
    pub fn reapply_suspensions(&self) -> usize {
        let mut ended = 0;
        for (scope, s) in self.suspensions.list() {
            let mut out = SuspendOutcome {
                suspension: s,
                grants_revoked: 0,
                processes_stopped: 0,
                warnings: Vec::new(),
            };
            self.enforce_suspension(&scope, false, &mut out);
            for w in &out.warnings {
                tracing::error!(scope = %scope, warning = %w, "re-applying a suspension");
            }
            ended += out.grants_revoked;
        }
        ended
    }

    /// The decision's suspension check: the message's verified operator,
    /// the calling agent (`holder`) and the message's holder.
    pub(super) fn not_suspended(
        &self,
        msg: &ActiveMessage,
        holder: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let subject = Subject {
            operator: msg.key_gen.map(|_| msg.authority()),
            agents: [
                holder.and_then(|h| h.strip_prefix("agent:")),
                msg.holder.get().and_then(|h| h.strip_prefix("agent:")),
            ],
        };
        match self.suspensions.refusal(&subject) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// A message refused by a suspension: every message under `all`, one
    /// claiming a suspended operator (refused before it is verified, so
    /// nothing of it is stored), one addressed to a suspended agent.
    pub(super) fn message_suspended(
        &self,
        msg: &SignedMessage,
        agent: Option<&str>,
    ) -> Option<Refusal> {
        // A v2 message names its agent itself (`for_agent`): addressed to it
        // as an inbox message would be.
        let addressed = msg
            .for_agent
            .as_deref()
            .filter(|_| msg.v == crate::protocol::message::VERSION_2);
        // A token's messages are its root operator's to suspend.
        let operator = msg
            .operator
            .as_deref()
            .map(|o| crate::protocol::delegation::token_root(o).unwrap_or(o));
        let subject = Subject {
            operator,
            agents: [agent, addressed],
        };
        let (code, message) = self.suspensions.refusal(&subject)?;
        Some(Refusal {
            reason_code: code,
            message,
            class: RefusalClass::Unverified,
        })
    }

    /// Why an allowed call must be denied after all because a suspension
    /// covering it took effect while it was being decided (`generation`:
    /// the suspensions' generation when its decision started).
    fn suspended_since(
        &self,
        d: &Decision,
        caller: Caller,
        generation: u64,
    ) -> Option<(&'static str, String)> {
        if !d.is_allow() || self.suspensions.generation() == generation {
            return None;
        }
        self.call_suspended(d, caller)
    }

    /// The suspension covering a decided call now, if any (a repeated
    /// runtime tool-call id must not get an allow given before it).
    pub(super) fn call_suspended(
        &self,
        d: &Decision,
        caller: Caller,
    ) -> Option<(&'static str, String)> {
        let msg = parse_active_id(&d.active_message_id).and_then(|k| {
            self.active
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
                .cloned()
        })?;
        let holder = self.holder_of(caller);
        self.not_suspended(&msg, holder.as_deref()).err()
    }

    /// Closes the race between a decision and a suspension: a call allowed
    /// (and its grant installed) while a suspension covering it took effect
    /// is rolled back and denied, with its own audit row. A suspension set
    /// after this check found its grant installed, and ended it.
    pub(super) async fn recheck_suspension(
        &self,
        d: &mut Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
        generation: u64,
    ) {
        let Some((code, detail)) = self.suspended_since(d, caller, generation) else {
            return;
        };
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Rollback ends the call's grant by call id; no agent needed.
        let call = super::pipeline::allowed_call(d, caller, None, None);
        for hook in hooks.iter().rev() {
            if let Err(e) = hook.rollback(&call) {
                tracing::error!(hook = hook.name(), error = %e, call_id = %d.call_id, "rollback after a suspension failed");
            }
        }
        tracing::warn!(call_id = %d.call_id, reason = code, "allow overturned by a suspension");
        d.overturn(code, detail);
        if let Some(audit) = &self.audit {
            let ev = super::pipeline::event_of(d, req, agent, caller);
            if let Ok(c) = audit.append(ev).await {
                d.audit_seq = Some(c.seq);
                d.audit_hash = Some(c.hash);
            }
        }
    }

    /// The suspensions' generation, read when a decision starts.
    pub(super) fn suspension_generation(&self) -> u64 {
        self.suspensions.generation()
    }
}
