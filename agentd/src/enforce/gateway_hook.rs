//! The gateway's allow hook for enforcement: an allowed tool call with a
//! grant template gets its kernel grant installed for the caller's agent
//! before the caller hears "allow". If that fails, the allow is overturned
//! (fail closed): the runtime must not act on a grant the kernel lacks.
use crate::gateway::{AllowHook, AllowedCall, HookError};

use super::Enforcer;

/// Installs grants of allowed calls. `None` = enforcement failed to start.
pub struct EnforceHook {
    /// The enforcer, if it started.
    pub enforcer: Option<Enforcer>,
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
        let Some(enforcer) = &self.enforcer else {
            return Err(err(
                "enforcement_unavailable",
                "the enforcement backend did not start".into(),
            ));
        };
        // The grant belongs to the agent whose process asked; a caller
        // outside every agent (an admin testing a policy) needs none.
        let Some(agent) = call.peer_pid.and_then(|pid| enforcer.agent_of_pid(pid)) else {
            return Ok(());
        };
        enforcer
            .install_grant(&agent, call.call_id, call.active_message_id, spec)
            .map_err(|e| err(e.reason_code(), e.to_string()))
    }
}
