//! Grants of allowed tool calls: install, bind a process, revoke.
use agentd_common::Binding;

use super::{
    binding, grant::KernelGrant, registry::CallEntry, seccomp::supervisor, EnforceError, Enforcer,
};
use crate::grant_spec::GrantSpec;

impl Enforcer {
    /// Installs the grant of an allowed tool call.
    pub fn install_grant(
        &self,
        agent: &str,
        call_id: &str,
        active_message_id: &str,
        spec: &GrantSpec,
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
        let grant =
            KernelGrant::from_spec(spec, handle, supervisor::boot_ns()).map_err(|source| {
                EnforceError::Grant {
                    call_id: call_id.into(),
                    source,
                }
            })?;
        self.bpf().install(&grant)?;
        self.lsm_install(&grant)?;
        reg.next_handle += 1;
        reg.handles.insert(call_id.to_string(), handle);
        reg.calls.insert(
            handle,
            CallEntry {
                call_id: call_id.into(),
                active_message_id: active_message_id.into(),
                agent: agent.into(),
                grant,
                uses_left: (spec.uses != 0).then_some(spec.uses),
            },
        );
        drop(reg);
        self.save()?;
        tracing::info!(agent, call_id, handle, "grant installed");
        Ok(())
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
        binding::authorize(call, peer_pid, pid, supervisor::boot_ns(), |p| {
            binding::agent_of_pid(&slice, p)
        })?;
        self.bpf().bind(
            pid,
            Binding {
                call_id: handle,
                agent_id,
                _pad: 0,
            },
        )?;
        drop(reg);
        self.save()?;
        tracing::info!(pid, call_id, "process bound");
        Ok(())
    }

    /// Ends a grant: its map entries and every binding to it go.
    pub fn revoke(&self, call_id: &str) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let Some(handle) = reg.handles.remove(call_id) else {
            return Ok(());
        };
        if let Some(call) = reg.calls.remove(&handle) {
            let mut bpf = self.bpf();
            bpf.uninstall(&call.grant);
            bpf.unbind_call(handle);
            self.lsm_uninstall(handle);
        }
        drop(reg);
        self.save()
    }
}
