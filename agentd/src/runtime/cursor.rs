//! Cursor's agent hooks (no offline binary exists; the format is Cursor's
//! documented hook JSON). Pre-action events and the tool each becomes:
//!
//! - `beforeShellExecution` `{"command", "cwd"}` → tool `Shell`;
//! - `beforeReadFile` `{"file_path", "content", "attachments"}` → tool `Read`
//!   (the file content is not forwarded);
//! - `beforeMCPExecution` `{"tool_name", "tool_input", "url" | "command"}` →
//!   tool `mcp__unnamed__<tool_name>`: Cursor does not name the MCP server.
//!
//! Common fields: `conversation_id`, `generation_id`, `workspace_roots`,
//! `hook_event_name`. Output: `{"permission": "allow"|"deny",
//! "user_message", "agent_message"}` (plus the older camelCase keys).
use serde_json::{json, Map, Value};

use super::{
    decode_object, deny_answer, malformed, silent, str_field, Answer, HookCall, HookInputError,
    Runtime, Verdict,
};

/// The server name used for Cursor's MCP calls (its hook JSON has none).
pub const UNNAMED_MCP_SERVER: &str = "unnamed";

/// Parses a Cursor pre-action hook input.
pub fn parse(bytes: &[u8]) -> Result<HookCall, HookInputError> {
    let rt = Runtime::Cursor;
    let obj = decode_object(rt, bytes)?;
    let event = str_field(rt, &obj, "hook_event_name")?;
    let mut input = Map::new();
    let tool_name = match event {
        "beforeShellExecution" => {
            input.insert(
                "command".into(),
                Value::String(str_field(rt, &obj, "command")?.to_owned()),
            );
            if let Some(cwd) = obj.get("cwd") {
                input.insert("cwd".into(), cwd.clone());
            }
            "Shell".to_owned()
        }
        "beforeReadFile" => {
            input.insert(
                "file_path".into(),
                Value::String(str_field(rt, &obj, "file_path")?.to_owned()),
            );
            "Read".to_owned()
        }
        "beforeMCPExecution" => {
            let tool = str_field(rt, &obj, "tool_name")?;
            if tool.is_empty() || tool.contains("__") {
                return Err(malformed(rt, "`tool_name` must be a plain MCP tool name"));
            }
            // Documented both as an object and as a JSON-encoded string.
            input = match obj.get("tool_input") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(malformed(rt, "`tool_input` string must hold a JSON object")),
                },
                Some(_) => return Err(malformed(rt, "`tool_input` must be an object")),
            };
            format!("mcp__{UNNAMED_MCP_SERVER}__{tool}")
        }
        other => {
            return Err(HookInputError::UnsupportedEvent {
                runtime: rt,
                event: other.to_owned(),
            })
        }
    };
    Ok(HookCall {
        tool_name,
        tool_input: input,
        // Cursor's generation_id names a model turn, not a tool call.
        tool_use_id: None,
    })
}

fn permission_json(permission: &str, text: &str) -> String {
    json!({
        "permission": permission,
        "user_message": text,
        "agent_message": text,
        "userMessage": text,
        "agentMessage": text,
    })
    .to_string()
        + "\n"
}

/// Renders a verdict: allow → exit 0 and `permission: "allow"`; deny → exit
/// 2, `permission: "deny"` and the reason on stderr; no opinion → exit 0,
/// nothing printed.
pub fn render(verdict: &Verdict) -> Answer {
    match verdict {
        Verdict::Allow { .. } => Answer {
            exit_code: 0,
            stdout: permission_json("allow", &verdict.text()),
            stderr: String::new(),
        },
        Verdict::Deny { .. } => deny_answer(verdict, permission_json("deny", &verdict.text())),
        Verdict::NoOpinion => silent(),
    }
}
