//! A tool call found in a model's answer → the runtime call the gateway
//! decides (the hook route's request: runtime, tool name, input, the
//! model's call id, the active message), or the reason it cannot be one.
//! Pure; the proxy sends the request through `Gateway::runtime_call`, so
//! the call is mapped by `runtime::mapping` and decided, recorded and
//! granted exactly as a hook's would be — and keyed by (agent, active
//! message, call id), so a call seen by both a hook and the proxy is
//! decided once.
use serde_json::{Map, Value};

use super::{CallVerdict, FoundCall};
use crate::gateway::Decision;
use crate::protocol::reason;
use crate::runtime::{Runtime, RuntimeCallRequest};

/// Longest argument text recorded for a call that could not be parsed.
const MAX_RAW_RECORDED: usize = 1024;

/// Why a found call cannot be put to the gateway as it is (it is denied,
/// and recorded, with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The arguments are not a JSON object.
    #[error("the arguments of tool `{tool}` are not a JSON object: {message}")]
    InvalidArguments {
        /// The tool name.
        tool: String,
        /// The parser's complaint.
        message: String,
    },
}

impl DecideError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecideError::InvalidArguments { .. } => reason::INVALID_TOOL_INPUT,
        }
    }
}

/// The request for one found call.
pub fn request_of(
    runtime: Runtime,
    active_message_id: Option<&str>,
    call: &FoundCall,
) -> Result<RuntimeCallRequest, DecideError> {
    let input: Map<String, Value> =
        serde_json::from_str(&call.arguments).map_err(|e| DecideError::InvalidArguments {
            tool: call.name.clone(),
            message: e.to_string(),
        })?;
    Ok(RuntimeCallRequest {
        runtime,
        active_message_id: active_message_id.map(str::to_owned),
        tool_name: call.name.clone(),
        tool_input: input,
        tool_use_id: (!call.id.is_empty()).then(|| call.id.clone()),
    })
}

/// The arguments recorded for a call whose input could not be parsed.
pub fn raw_arguments(call: &FoundCall) -> Map<String, Value> {
    let mut end = call.arguments.len().min(MAX_RAW_RECORDED);
    while !call.arguments.is_char_boundary(end) {
        end -= 1;
    }
    let mut m = Map::new();
    m.insert(
        "raw_arguments".into(),
        Value::String(call.arguments[..end].to_owned()),
    );
    m
}

/// The gateway's decision as a verdict on the call.
pub fn verdict_of(d: &Decision) -> CallVerdict {
    if d.is_allow() {
        CallVerdict::Allow
    } else {
        CallVerdict::Deny {
            reason_code: d.reason_code.clone(),
            detail: d.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &str) -> FoundCall {
        FoundCall {
            id: "call_1".into(),
            name: "exec_command".into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn a_call_becomes_the_hook_routes_request() {
        let r = request_of(Runtime::Codex, Some("m1"), &call(r#"{"cmd":"ls -l"}"#)).unwrap();
        assert_eq!(r.tool_name, "exec_command");
        assert_eq!(r.tool_input["cmd"], "ls -l");
        assert_eq!(r.tool_use_id.as_deref(), Some("call_1"));
        assert_eq!(r.active_message_id.as_deref(), Some("m1"));
        // The same mapping as the hook's: exec_command {cmd} is `shell`.
        let m = crate::runtime::mapping::map(r.runtime, &r.tool_name, &r.tool_input, None).unwrap();
        assert_eq!(m.action, "shell");
        assert_eq!(m.arguments["command"], serde_json::json!(["ls", "-l"]));
    }

    #[test]
    fn arguments_that_are_not_an_object_are_refused() {
        for bad in ["", "[1]", "{\"cmd\":", "\"x\"", "nul"] {
            let e = request_of(Runtime::Codex, None, &call(bad)).unwrap_err();
            assert_eq!(e.reason_code(), "invalid_tool_input", "{bad}");
        }
        let long = call(&"é".repeat(2000));
        let raw = raw_arguments(&long);
        assert!(raw["raw_arguments"].as_str().unwrap().len() <= MAX_RAW_RECORDED);
    }

    #[test]
    fn no_id_no_tool_use_id() {
        let mut c = call("{}");
        c.id.clear();
        assert_eq!(
            request_of(Runtime::Codex, None, &c).unwrap().tool_use_id,
            None
        );
    }
}
