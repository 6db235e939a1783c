//! A runtime's own tool call (`POST /v1/runtime-calls`): mapped to a policy
//! action with `runtime::mapping` (the policy's per-runtime overrides over
//! the built-in defaults), then decided like any tool call. A call that
//! cannot be mapped, or that an agent makes without an active message, is
//! denied and recorded like any other denial.
use serde::{Deserialize, Serialize};

use super::decide::{Decision, ToolCallRequest, MAX_ACTION_LEN};
use super::pipeline::Caller;
use super::Gateway;
use crate::protocol::reason;
use crate::runtime::{mapping, RuntimeCallRequest};

/// The answer to a runtime call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeCallAnswer {
    /// The agent the caller's process belongs to (None: no agent).
    pub agent: Option<String>,
    /// True when the caller is in no agent and named no active message:
    /// nothing was decided and the hook has no opinion (a person's own
    /// runtime on the same host).
    pub outside_agent: bool,
    /// The decision, unless `outside_agent`.
    pub decision: Option<Decision>,
}

impl RuntimeCallAnswer {
    /// The answer for a caller outside every agent.
    pub fn outside() -> Self {
        RuntimeCallAnswer {
            agent: None,
            outside_agent: true,
            decision: None,
        }
    }
}

impl Gateway {
    /// Maps and decides a runtime call for `caller` (who is an agent process,
    /// or named an active message). Never fails: errors are denials.
    pub async fn runtime_call(
        &self,
        req: &RuntimeCallRequest,
        caller: Caller,
    ) -> RuntimeCallAnswer {
        let agent = self.caller_agent(caller);
        let policy = self.current_policy();
        let mapped = mapping::map(
            req.runtime,
            &req.tool_name,
            &req.tool_input,
            policy.as_deref().and_then(|p| p.runtime_tools(req.runtime)),
        );
        let active_message_id = req.active_message_id.clone().unwrap_or_default();
        let decision = match mapped {
            Ok(m) => {
                let call = ToolCallRequest {
                    active_message_id,
                    action: m.action,
                    arguments: m.arguments,
                    tool_use_id: req.tool_use_id.clone(),
                };
                if req.active_message_id.is_none() {
                    let d = Decision::denied(
                        &call,
                        reason::NO_ACTIVE_MESSAGE,
                        "the runtime has no active message (AGENTD_ACTIVE_MESSAGE is unset)",
                    );
                    self.decide_and_record(&call, caller, Some(d)).await
                } else {
                    self.tool_call(&call, caller).await
                }
            }
            Err(e) => {
                // Recorded under the runtime's own tool name.
                let mut action = format!("{}:{}", req.runtime, req.tool_name);
                let mut end = action.len().min(MAX_ACTION_LEN);
                while !action.is_char_boundary(end) {
                    end -= 1;
                }
                action.truncate(end);
                let call = ToolCallRequest {
                    active_message_id,
                    action,
                    arguments: req.tool_input.clone(),
                    tool_use_id: req.tool_use_id.clone(),
                };
                let d = Decision::denied(&call, e.reason_code(), &e.to_string());
                self.decide_and_record(&call, caller, Some(d)).await
            }
        };
        RuntimeCallAnswer {
            agent,
            outside_agent: false,
            decision: Some(decision),
        }
    }
}
