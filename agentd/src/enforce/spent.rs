//! Spent grants dropped early. A grant with a use count whose every use
//! is spent can be claimed by nothing more; what it still does is cover
//! the processes that claimed it: a process bound to it by an exec claim
//! or a bind (and its children), and a process that claimed it for its
//! file operations (its further opens under the grant spend no use).
//! Once none of those lives, the grant grants nothing to anyone, so it is
//! revoked at once — registry, kernel maps (its use tickets too), journal
//! — with an audit row (`grant_dropped`, reason `grant_spent`), instead of
//! being held until its TTL and a minute's grace have passed: at a steady
//! rate of `uses = 1` calls that hold would be two minutes of calls.
//!
//! Liveness comes from the kernel: `BINDINGS` (the exit tracepoint
//! removes a process's entry; children inherit at fork) and `FILE_CLAIMS`
//! (the lsm hooks and the seccomp supervisors record each file claim with
//! the claimant's start time, checked against its `LINEAGE` record, which
//! exit removes; see [`super::holders`]). A grant is looked at only once
//! it has been seen spent for [`SPENT_SETTLE_NS`]: a claim records its
//! claimant right after it takes the last ticket (in the same BPF program
//! run, or in a supervisor under the registry's read lock it spent under),
//! so by then every claimant it will ever have is recorded; and a tool
//! run again at once (a retry) is still refused `grant_used_up`, which
//! says more than the `no_grant` it gets once the grant is gone.
use std::collections::{HashMap, HashSet};

use super::{access_summary, events::KernelRecord, journal, registry::CallEntry, Enforcer};
use crate::protocol::reason;

/// How long a grant must have been seen spent before its claimants are
/// looked for: far longer than a claim takes from its last ticket to the
/// record of its claimant. At a steady rate of calls the registry holds
/// this long's worth of spent grants (≈ 4,000 at 800 calls/s).
pub(super) const SPENT_SETTLE_NS: u64 = 5_000_000_000;

/// The audit row's action for a grant dropped once spent.
pub const GRANT_DROPPED: &str = "grant_dropped";

impl Enforcer {
    /// Drops every grant that has been spent for [`SPENT_SETTLE_NS`] and
    /// that no live process holds; returns the call ids dropped. Called by
    /// the housekeeping thread every tick.
    pub(super) fn drop_spent_grants(&self) -> Vec<String> {
        let now = self.ops().now_ns();
        let settled = self.settled_spent(now);
        if settled.is_empty() {
            return Vec::new();
        }
        // Walked before the registry's lock is taken (the walk reads every
        // binding and file claim): each of these grants took its last
        // ticket seconds ago, so every claim of it has recorded its
        // claimant by now, and an unheld spent grant gains no holder (a
        // new one needs a ticket, or a bound parent to fork from).
        let holders = self.ops().grants_held(&settled);
        let mut reg = self.registry_w();
        let mut dropped: Vec<(u64, CallEntry)> = Vec::new();
        for &handle in settled.difference(&holders.held) {
            let Some(call) = reg.remove_call(handle) else {
                continue;
            };
            let names = names_of(&call);
            // A periodic flush while this runs still names the call.
            self.call_ending(handle, names);
            let agent = reg.agents.get(&call.agent);
            let agent_id = agent.map_or(0, |a| a.id);
            let ops = self.ops();
            if let Some(p) = &call.pending {
                ops.withdraw_pending(agent_id, p.slot, handle);
            }
            ops.uninstall_grant(&call.grant);
            // No binding to unbind: none was there, and none can come (no
            // ticket is left for a claim or a bind; no bound parent forks).
            ops.clear_tickets(handle, call.grant.spec.uses);
            if !call.grant.protected_write.is_empty() {
                if let Some(a) = agent {
                    ops.refresh_protected(&a.baseline);
                }
            }
            dropped.push((handle, call));
        }
        let gone: HashSet<u64> = dropped.iter().map(|(h, _)| *h).collect();
        self.spent_since().retain(|h, _| !gone.contains(h));
        if dropped.is_empty() {
            return Vec::new();
        }
        let entries: Vec<journal::Entry> = dropped
            .iter()
            .map(|(_, c)| journal::Entry::Del {
                call_id: c.call_id.clone(),
            })
            .collect();
        let journaled = self.journal(&reg, &entries);
        drop(reg);
        let claims: Vec<(u64, u32)> = holders
            .file_claims
            .into_iter()
            .filter(|(h, _)| gone.contains(h))
            .collect();
        if !claims.is_empty() {
            self.ops().forget_file_claims(&claims);
        }
        self.audit_dropped(&dropped);
        match journaled {
            Ok(compact) => self.compact(compact),
            // The kernel and the registry no longer hold them; a restart
            // would bring back registry entries whose maps are gone, which
            // grant nothing (fail closed) until they expire.
            Err(e) => {
                tracing::error!(error = %e, dropped = dropped.len(), "spent grants dropped but not journaled")
            }
        }
        dropped.into_iter().map(|(_, c)| c.call_id).collect()
    }

    /// The use-counted, unexpired grants seen spent at least
    /// [`SPENT_SETTLE_NS`] ago. Each grant's tickets are read until it is
    /// first seen spent (a spent grant stays spent until it expires).
    fn settled_spent(&self, now: u64) -> HashSet<u64> {
        let reg = self.registry_r();
        let mut since = self.spent_since();
        // Expired ones are the expiry's (their tickets are freed, their
        // entry kept a minute so denials say `grant_expired`).
        since.retain(|h, _| reg.calls.get(h).is_some_and(|c| !c.grant.expired(now)));
        for (&handle, c) in &reg.calls {
            let uses = c.grant.spec.uses;
            if uses == 0 || c.grant.expired(now) || since.contains_key(&handle) {
                continue;
            }
            if self.ops().uses_spent(handle, uses) {
                since.insert(handle, now);
            }
        }
        since
            .iter()
            .filter(|(_, seen)| now.saturating_sub(**seen) >= SPENT_SETTLE_NS)
            .map(|(h, _)| *h)
            .collect()
    }

    fn spent_since(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.inner
            .spent_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// One `grant_dropped` row per grant (queued, not waited for: the
    /// journal is what a restart reads), and the last rows of the
    /// accesses the kernel counted under them.
    fn audit_dropped(&self, dropped: &[(u64, CallEntry)]) {
        for (_, c) in dropped {
            let rec = KernelRecord {
                agent: c.agent.clone(),
                call_id: c.call_id.clone(),
                active_message_id: c.active_message_id.clone(),
                action: GRANT_DROPPED.into(),
                target: format!("uses={}", c.grant.spec.uses),
                decision: "info",
                reason_code: reason::GRANT_SPENT.into(),
                pid: 0,
                latency_us: 0,
                access: None,
            };
            if let Err(e) = self.inner.audit_tx.send(rec) {
                tracing::error!(error = %e, call_id = %c.call_id, "grant_dropped row not written");
            }
            tracing::debug!(agent = %c.agent, call_id = %c.call_id, "spent grant dropped");
        }
        tracing::debug!(count = dropped.len(), "spent grants dropped");
        let ended: Vec<(u64, access_summary::Names)> =
            dropped.iter().map(|(h, c)| (*h, names_of(c))).collect();
        self.flush_ended_calls(&ended);
    }
}

fn names_of(c: &CallEntry) -> access_summary::Names {
    access_summary::Names {
        agent: c.agent.clone(),
        call_id: c.call_id.clone(),
        active_message_id: c.active_message_id.clone(),
    }
}
