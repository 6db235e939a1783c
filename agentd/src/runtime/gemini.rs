//! Gemini CLI's `BeforeTool` hook.
//!
//! Input: `{"session_id", "transcript_path", "cwd", "hook_event_name":
//! "BeforeTool", "timestamp", "tool_name", "tool_input"}` (no call id).
//! Output: `{"decision": "deny", "reason"}` or exit 2; Claude's
//! `hookSpecificOutput` form is ignored by Gemini (the tool would run).
use serde_json::json;

use super::{
    decode_object, deny_answer, malformed, silent, str_field, tool_use_id_field, Answer, HookCall,
    HookInputError, Runtime, Verdict,
};

/// The pre-tool event name.
pub const EVENT: &str = "BeforeTool";

/// Parses a `BeforeTool` input.
pub fn parse(bytes: &[u8]) -> Result<HookCall, HookInputError> {
    let rt = Runtime::Gemini;
    let obj = decode_object(rt, bytes)?;
    let event = str_field(rt, &obj, "hook_event_name")?;
    if event != EVENT {
        return Err(HookInputError::UnsupportedEvent {
            runtime: rt,
            event: event.to_owned(),
        });
    }
    let tool_name = str_field(rt, &obj, "tool_name")?.to_owned();
    let tool_input = match obj.get("tool_input") {
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => return Err(malformed(rt, "`tool_input` must be an object")),
        None => return Err(malformed(rt, "`tool_input` is missing")),
    };
    Ok(HookCall {
        tool_name,
        tool_input,
        // Not sent by today's Gemini CLI; accepted if a later one does.
        tool_use_id: tool_use_id_field(rt, &obj, "tool_use_id")?,
    })
}

/// Renders a verdict: deny → exit 2, reason on stderr and
/// `{"decision":"deny","reason"}` on stdout; allow → exit 0 with
/// `{"decision":"allow"}`; no opinion → exit 0, nothing printed.
pub fn render(verdict: &Verdict) -> Answer {
    match verdict {
        Verdict::Allow { .. } => Answer {
            exit_code: 0,
            stdout: json!({"decision": "allow", "reason": verdict.text()}).to_string() + "\n",
            stderr: String::new(),
        },
        Verdict::Deny { .. } => deny_answer(
            verdict,
            json!({"decision": "deny", "reason": verdict.text()}).to_string() + "\n",
        ),
        Verdict::NoOpinion => silent(),
    }
}
