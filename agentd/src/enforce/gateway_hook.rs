//! The gateway's allow hook for enforcement: an allowed tool call with a
//! grant template gets its kernel grant installed for the caller's agent —
//! pending, claimable by the caller's own process tree — before the caller
//! hears "allow". If that fails, the allow is overturned
//! (fail closed): the runtime must not act on a grant the kernel lacks.
use crate::gateway::{AgentResolver, AllowHook, AllowedCall, HookError};

use super::slot::EnforceSlot;

/// Installs grants of allowed calls.
pub struct EnforceHook {
    /// The enforcer, once (and if) it has started.
    pub slot: EnforceSlot,
}

impl AllowHook for EnforceHook {
    fn name(&self) -> &str {
        "enforce"
    }

    fn after_allow(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        let Some(spec) = call.grant else {
            return Ok(());
        };
        let err = |reason: &str, message: String| HookError {
            hook: "enforce".into(),
            reason_code: reason.into(),
            message,
        };
        // A caller outside every agent (an admin testing a policy) needs no
        // grant; the gateway already looked (no second /proc read per call).
        if call.agent.is_none() {
            return Ok(());
        }
        let Some(enforcer) = self.slot.get() else {
            return Err(err(
                crate::protocol::reason::ENFORCEMENT_UNAVAILABLE,
                self.slot.unavailable_reason(),
            ));
        };
        // The grant belongs to the agent whose process asked (as the
        // gateway resolved it for this call), if the enforcer runs it.
        let Some(agent) = call
            .agent
            .filter(|a| call.peer_pid.is_some() && enforcer.has_agent(a))
        else {
            return Ok(());
        };
        // Pending for the asking process's own tree: it (the hook, the
        // runtime behind it) and what it starts from now on may claim it.
        let requester = call
            .peer_pid
            .and_then(|pid| enforcer.requester_of(agent, pid));
        enforcer
            .install_grant_for(agent, call.call_id, call.active_message_id, spec, requester)
            .map_err(|e| err(e.reason_code(), e.to_string()))
    }

    fn rollback(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        // Revoking a call that has no grant is a no-op, so no need to know
        // whether `after_allow` installed one.
        let Some(enforcer) = self.slot.get() else {
            return Ok(());
        };
        enforcer.revoke(call.call_id).map_err(|e| HookError {
            hook: "enforce".into(),
            reason_code: e.reason_code().into(),
            message: format!(
                "revoking the grant of overturned call {}: {e}",
                call.call_id
            ),
        })?;
        tracing::warn!(
            call_id = call.call_id,
            "grant of an overturned allow revoked"
        );
        Ok(())
    }

    fn revoke_messages(&self, active_message_ids: &[String]) -> Result<usize, HookError> {
        let Some(enforcer) = self.slot.get() else {
            // Not started: this run installed no grant (persisted ones come
            // back only with a running enforcer).
            return Ok(0);
        };
        let ids: std::collections::HashSet<&str> =
            active_message_ids.iter().map(String::as_str).collect();
        enforcer
            .revoke_calls_of_messages(&ids)
            .map(|calls| calls.len())
            .map_err(|e| HookError {
                hook: "enforce".into(),
                reason_code: e.reason_code().into(),
                message: format!("revoking the grants of revoked messages: {e}"),
            })
    }
}

/// Tells agents apart by cgroup (under this instance's slice), whether or
/// not the enforcer has started.
impl AgentResolver for EnforceSlot {
    fn agent_of_pid(&self, pid: u32) -> Option<String> {
        self.agent_name_of_pid(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant_spec::GrantSpec;

    fn call<'a>(spec: Option<&'a GrantSpec>, pid: Option<u32>) -> AllowedCall<'a> {
        // The test process is in no agent.
        AllowedCall {
            call_id: "c1",
            active_message_id: "m1",
            operator: "op",
            session: "s",
            action: "shell",
            grant: spec,
            peer_pid: pid,
            peer_uid: Some(0),
            agent: None,
            audit: None,
            receipt_redact: false,
        }
    }

    #[test]
    fn callers_outside_agents_need_no_enforcer() {
        let hook = EnforceHook {
            slot: EnforceSlot::default(),
        };
        let spec = GrantSpec::default();
        assert!(hook
            .after_allow(&call(Some(&spec), Some(std::process::id())))
            .is_ok());
        assert!(hook
            .after_allow(&call(None, Some(std::process::id())))
            .is_ok());
        assert_eq!(
            hook.slot.unavailable_reason(),
            "enforcement is still starting"
        );
    }
}
