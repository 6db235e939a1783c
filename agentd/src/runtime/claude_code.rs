//! Claude Code's `PreToolUse` hook.
//!
//! Input (stdin): `{"session_id", "transcript_path", "cwd", "permission_mode",
//! "hook_event_name": "PreToolUse", "tool_name", "tool_input", "tool_use_id"}`
//! (and `prompt_id`). Output: exit 0 with
//! `{"hookSpecificOutput": {"hookEventName": "PreToolUse",
//! "permissionDecision": "allow"|"deny", "permissionDecisionReason"}}`, or
//! exit 2 with the reason on stderr (Claude Code then ignores stdout).
use serde_json::json;

use super::{
    decode_object, deny_answer, malformed, silent, str_field, tool_use_id_field, Answer, HookCall,
    HookInputError, Runtime, Verdict,
};

/// The pre-tool event name.
pub const EVENT: &str = "PreToolUse";

/// Parses a `PreToolUse` input.
pub fn parse(bytes: &[u8]) -> Result<HookCall, HookInputError> {
    parse_as(Runtime::ClaudeCode, bytes)
}

/// The Claude-shaped input, shared with Codex (which adds `turn_id`, `model`).
pub(crate) fn parse_as(runtime: Runtime, bytes: &[u8]) -> Result<HookCall, HookInputError> {
    let obj = decode_object(runtime, bytes)?;
    let event = str_field(runtime, &obj, "hook_event_name")?;
    if event != EVENT {
        return Err(HookInputError::UnsupportedEvent {
            runtime,
            event: event.to_owned(),
        });
    }
    let tool_name = str_field(runtime, &obj, "tool_name")?.to_owned();
    let tool_input = match obj.get("tool_input") {
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => return Err(malformed(runtime, "`tool_input` must be an object")),
        None => return Err(malformed(runtime, "`tool_input` is missing")),
    };
    Ok(HookCall {
        tool_name,
        tool_input,
        tool_use_id: tool_use_id_field(runtime, &obj, "tool_use_id")?,
    })
}

/// `hookSpecificOutput` with a permission decision.
pub(crate) fn decision_json(decision: &str, reason: &str) -> String {
    json!({
        "hookSpecificOutput": {
            "hookEventName": EVENT,
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    })
    .to_string()
}

/// Renders a verdict: allow → exit 0 + `permissionDecision: "allow"`; deny →
/// exit 2, the reason on stderr and the deny JSON on stdout; no opinion →
/// exit 0, nothing printed.
pub fn render(verdict: &Verdict) -> Answer {
    match verdict {
        Verdict::Allow { .. } => Answer {
            exit_code: 0,
            stdout: decision_json("allow", &verdict.text()) + "\n",
            stderr: String::new(),
        },
        Verdict::Deny { .. } => deny_answer(verdict, decision_json("deny", &verdict.text()) + "\n"),
        Verdict::NoOpinion => silent(),
    }
}
