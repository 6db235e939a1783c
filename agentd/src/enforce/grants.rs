//! Grants of allowed tool calls: install (pending for the requester's tree,
//! or for explicit binding only), bind a process, revoke.
use agentd_common::Binding;

use super::{
    access_summary, binding,
    claim::{self, PendingInfo, Requester},
    grant::KernelGrant,
    journal,
    registry::{CallEntry, Registry},
    EnforceError, Enforcer,
};
use crate::grant_spec::GrantSpec;

impl Enforcer {
    /// Installs the grant of an allowed tool call for explicit binding only
    /// (`agentctl exec --call`): no process claims it by itself.
    pub fn install_grant(
        &self,
        agent: &str,
        call_id: &str,
        active_message_id: &str,
        spec: &GrantSpec,
    ) -> Result<(), EnforceError> {
        self.install_grant_for(agent, call_id, active_message_id, spec, None)
    }

    /// The requester of a call asked by process `pid` of `agent`: `pid`, its
    /// ancestors inside the agent, and its leaf cgroup.
    pub fn requester_of(&self, agent: &str, pid: u32) -> Option<Requester> {
        claim::requester_of(pid, |p| self.agent_of_pid(p).as_deref() == Some(agent))
    }

    /// Installs the grant of an allowed tool call. With a `requester` the
    /// grant is *pending*: the requester's own process tree may claim it by
    /// doing what it grants (see [`claim`]); explicit binding works either way.
    pub fn install_grant_for(
        &self,
        agent: &str,
        call_id: &str,
        active_message_id: &str,
        spec: &GrantSpec,
        requester: Option<Requester>,
    ) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        if !reg.agents.contains_key(agent) {
            return Err(EnforceError::UnknownAgent {
                agent: agent.into(),
            });
        }
        if reg.handles.contains_key(call_id) {
            return Err(EnforceError::DuplicateCall {
                call_id: call_id.into(),
            });
        }
        let handle = reg.next_handle;
        let now = self.ops().now_ns();
        let grant =
            KernelGrant::from_spec(spec, handle, now).map_err(|source| EnforceError::Grant {
                call_id: call_id.into(),
                source,
            })?;
        let agent_id = reg.agents.get(agent).map(|a| a.id).unwrap_or(0);
        let uses = (spec.uses != 0).then_some(spec.uses);
        // A call whose pending slot is taken over changes too.
        let mut withdrawn = None;
        let pending = match requester {
            Some(requester) => {
                let (slot, from) = self
                    .free_pending_slot(&mut reg, agent, agent_id, now)
                    .ok_or_else(|| EnforceError::TooManyPending {
                        agent: agent.into(),
                        call_id: call_id.into(),
                    })?;
                withdrawn = from;
                Some(PendingInfo {
                    slot,
                    requester,
                    decided_at_ns: now,
                })
            }
            None => None,
        };
        // The handle is used up whatever happens next: a grant that failed
        // half-way must never lend its map entries to the next call.
        reg.next_handle += 1;
        if let Err(e) = self.write_grant(agent_id, &grant, pending.as_ref(), uses) {
            // The slot taken over stays withdrawn: record that much.
            let taken: Vec<_> = withdrawn.into_iter().filter_map(|h| put(&reg, h)).collect();
            if !taken.is_empty() {
                let _ = self.journal(&reg, &taken);
            }
            drop(reg);
            self.audit_not_installed(agent, call_id, &e);
            return Err(e);
        }
        reg.insert_call(
            handle,
            CallEntry {
                call_id: call_id.into(),
                active_message_id: active_message_id.into(),
                agent: agent.into(),
                grant,
                uses_left: uses,
                pending,
            },
        );
        let changed: Vec<journal::Entry> = withdrawn
            .into_iter()
            .chain([handle])
            .filter_map(|h| put(&reg, h))
            .collect();
        let compact = self.journal(&reg, &changed)?;
        drop(reg);
        self.compact(compact);
        tracing::info!(agent, call_id, handle, "grant installed");
        Ok(())
    }

    /// Writes an installed grant (and its pending entry) to the kernel; on
    /// failure, removes whatever part was written (fail closed: nothing of
    /// a grant the caller is told was refused stays in the maps).
    fn write_grant(
        &self,
        agent_id: u32,
        grant: &KernelGrant,
        pending: Option<&PendingInfo>,
        uses: Option<u32>,
    ) -> Result<(), EnforceError> {
        let written = self
            .ops()
            .install_grant(grant)
            .and_then(|()| match pending {
                Some(p) => {
                    self.ops()
                        .publish_pending(agent_id, p.slot, grant, p.kernel(grant, uses))
                }
                None => Ok(()),
            });
        if written.is_err() {
            if let Some(p) = pending {
                self.ops().withdraw_pending(agent_id, p.slot, grant.handle);
            }
            self.ops().uninstall_grant(grant);
        }
        written
    }

    /// Records in the kernel audit stream that a grant could not be
    /// written (the gateway turns the allow into a denial with the same
    /// reason code).
    fn audit_not_installed(&self, agent: &str, call_id: &str, e: &EnforceError) {
        tracing::error!(agent, call_id, error = %e, "grant not installed; the call is refused");
        let _ = self.inner.sink.append_lifecycle(
            "grant_not_installed",
            &format!("agent={agent} call={call_id}: {e}"),
            e.reason_code(),
        );
    }

    /// A pending slot of the agent for a new grant: a free one, else one
    /// whose grant has expired or is spent (that grant stays installed for
    /// its bound processes, but is no longer claimable; its handle is
    /// returned with the slot).
    fn free_pending_slot(
        &self,
        reg: &mut Registry,
        agent: &str,
        agent_id: u32,
        now: u64,
    ) -> Option<(u32, Option<u64>)> {
        let holders = reg.pending_of(agent);
        if let Some(slot) = claim::free_slot(holders.iter().map(|(_, s)| *s)) {
            return Some((slot, None));
        }
        for (handle, slot) in holders {
            let expired = reg.calls.get(&handle).is_some_and(|c| c.grant.expired(now));
            let spent = self
                .ops()
                .pending(agent_id, slot)
                .is_some_and(|g| g.uses_left == 0);
            if expired || spent {
                self.ops().withdraw_pending(agent_id, slot, handle);
                reg.withdraw_pending(handle);
                return Some((slot, Some(handle)));
            }
        }
        None
    }

    /// Binds `pid` to `call_id`; the caller vouches that `pid` asked itself.
    pub fn bind(&self, pid: u32, call_id: &str) -> Result<(), EnforceError> {
        self.bind_verified(pid, pid, call_id)
    }

    /// Binds `pid` to `call_id` on behalf of `peer_pid` (from SO_PEERCRED):
    /// both must be in the call's agent; spends one use of the grant.
    pub fn bind_verified(
        &self,
        peer_pid: u32,
        pid: u32,
        call_id: &str,
    ) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let handle = *reg
            .handles
            .get(call_id)
            .ok_or_else(|| binding::BindError::NoGrant {
                call_id: call_id.into(),
            })?;
        let agent_id = {
            let call = reg
                .calls
                .get(&handle)
                .ok_or_else(|| binding::BindError::NoGrant {
                    call_id: call_id.into(),
                })?;
            reg.agents.get(&call.agent).map(|a| a.id).unwrap_or(0)
        };
        let call = reg
            .calls
            .get_mut(&handle)
            .ok_or_else(|| binding::BindError::NoGrant {
                call_id: call_id.into(),
            })?;
        let slice = self.inner.instance.slice();
        let pending = call.pending.as_ref().map(|p| (agent_id, p.slot));
        binding::authorize(
            call,
            peer_pid,
            pid,
            self.ops().now_ns(),
            |p| self.ops().agent_of_pid(&slice, p),
            |hint| self.ops().spend_use(handle, hint, pending),
        )?;
        self.ops().bind(
            pid,
            Binding {
                call_id: handle,
                agent_id,
                _pad: 0,
            },
        )?;
        let compact = self.journal(&reg, &put(&reg, handle).into_iter().collect::<Vec<_>>())?;
        drop(reg);
        self.compact(compact);
        tracing::info!(pid, call_id, "process bound");
        Ok(())
    }

    /// Ends a grant: its map entries and every binding to it go.
    pub fn revoke(&self, call_id: &str) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let Some(handle) = reg.handles.remove(call_id) else {
            return Ok(());
        };
        let mut ended = None;
        if let Some(call) = reg.remove_call(handle) {
            let names = access_summary::Names {
                agent: call.agent.clone(),
                call_id: call.call_id.clone(),
                active_message_id: call.active_message_id.clone(),
            };
            // A periodic flush between here and the last rows below still
            // names the call (and leaves its counts to them).
            self.call_ending(handle, names.clone());
            ended = Some(names);
            let agent_id = reg.agents.get(&call.agent).map(|a| a.id).unwrap_or(0);
            let ops = self.ops();
            if let Some(p) = &call.pending {
                ops.withdraw_pending(agent_id, p.slot, handle);
            }
            ops.uninstall_grant(&call.grant);
            ops.unbind_call(handle);
            ops.clear_tickets(handle, call.grant.spec.uses);
            // The call may have replaced a protected file (a new inode):
            // protect what is there now.
            if !call.grant.protected_write.is_empty() {
                if let Some(a) = reg.agents.get(&call.agent) {
                    ops.refresh_protected(&a.baseline);
                }
            }
        }
        let journaled = self.journal(
            &reg,
            &[journal::Entry::Del {
                call_id: call_id.to_owned(),
            }],
        );
        drop(reg);
        // The grant's accesses counted in the kernel get their last rows.
        if let Some(names) = ended {
            self.flush_ended_call(handle, names);
        }
        self.compact(journaled?);
        Ok(())
    }

    /// Revokes every call made on one of `active_message_ids` (their
    /// operator lost its rights); returns the call ids revoked.
    pub fn revoke_calls_of_messages(
        &self,
        active_message_ids: &std::collections::HashSet<&str>,
    ) -> Result<Vec<String>, EnforceError> {
        let calls: Vec<String> = self
            .registry_r()
            .calls
            .values()
            .filter(|c| active_message_ids.contains(c.active_message_id.as_str()))
            .map(|c| c.call_id.clone())
            .collect();
        for call_id in &calls {
            self.revoke(call_id)?;
            tracing::info!(call_id, "grant revoked with its operator");
        }
        Ok(calls)
    }
}

/// The journal entry setting call `handle` to what `reg` holds now.
fn put(reg: &Registry, handle: u64) -> Option<journal::Entry> {
    reg.calls.get(&handle).map(|c| journal::Entry::Put {
        call: Box::new(super::persist::CallState::of(c)),
        next_handle: reg.next_handle,
    })
}
