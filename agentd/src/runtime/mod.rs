//! Agent runtimes: what each one's pre-tool hook sends and expects back, and
//! the shared mapping from a runtime's tool call (tool name + input) to a
//! policy action and its arguments.
//!
//! Everything here is pure (bytes in, values out): the `agentctl hook` CLI
//! does the I/O, the gateway applies the mapping (with the policy's
//! per-runtime overrides) so every route — hook, forward mode, MCP gateway —
//! decides the same call alike.
pub mod claude_code;
pub mod codex;
pub mod cursor;
pub mod gemini;
pub mod mapping;
pub mod shell_words;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::protocol::reason;

/// Largest hook input accepted on stdin, in bytes (larger → deny).
pub const MAX_HOOK_INPUT: usize = 1 << 20;

/// Longest runtime tool-call id accepted (`toolu_…`, `call_…`), in bytes.
pub const MAX_TOOL_USE_ID: usize = 128;

/// The runtimes agentd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Anthropic's Claude Code.
    ClaudeCode,
    /// OpenAI's Codex CLI.
    Codex,
    /// Google's Gemini CLI.
    Gemini,
    /// Cursor's agent.
    Cursor,
}

impl Runtime {
    /// Every runtime, in a stable order.
    pub const ALL: [Runtime; 4] = [
        Runtime::ClaudeCode,
        Runtime::Codex,
        Runtime::Gemini,
        Runtime::Cursor,
    ];

    /// The name used in policies and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::ClaudeCode => "claude-code",
            Runtime::Codex => "codex",
            Runtime::Gemini => "gemini",
            Runtime::Cursor => "cursor",
        }
    }

    /// Parses a runtime name (`claude-code`, `codex`, `gemini`, `cursor`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A runtime's tool call as sent to agentd (`POST /v1/runtime-calls`): the
/// runtime's own tool name and input; agentd maps it to a policy action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeCallRequest {
    /// The runtime that makes the call.
    pub runtime: Runtime,
    /// The active-message id from the runtime's environment, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_message_id: Option<String>,
    /// The runtime's tool name (`Bash`, `run_shell_command`, `mcp__crm__find`).
    pub tool_name: String,
    /// The runtime's tool input.
    #[serde(default)]
    pub tool_input: Map<String, Value>,
    /// The runtime's id of this tool call (`toolu_…`, `call_…`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
}

/// What a hook answers the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// agentd allowed the call.
    Allow {
        /// agentd's call id (for the runtime's log).
        call_id: String,
    },
    /// Denied: by agentd, or by the hook failing closed.
    Deny {
        /// Stable reason code.
        reason_code: String,
        /// Human explanation.
        detail: String,
    },
    /// agentd says the caller is not an agent: the hook has no opinion and the
    /// runtime proceeds as if no hook were installed.
    NoOpinion,
}

impl Verdict {
    /// A denial with a reason code and explanation.
    pub fn deny(reason_code: &str, detail: impl Into<String>) -> Self {
        Verdict::Deny {
            reason_code: reason_code.to_owned(),
            detail: detail.into(),
        }
    }

    /// The one-line text shown to the runtime (and its model) for a denial.
    pub fn text(&self) -> String {
        match self {
            Verdict::Allow { call_id } => format!("agentd: allowed (call {call_id})"),
            Verdict::Deny {
                reason_code,
                detail,
            } if detail.is_empty() => format!("agentd denied this tool call: {reason_code}"),
            Verdict::Deny {
                reason_code,
                detail,
            } => format!("agentd denied this tool call: {reason_code}: {detail}"),
            Verdict::NoOpinion => String::new(),
        }
    }
}

/// The hook process's answer: exit code, stdout, stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Process exit code (0, or 2 for a denial).
    pub exit_code: i32,
    /// What to print on stdout (may be empty).
    pub stdout: String,
    /// What to print on stderr (the denial reason; may be empty).
    pub stderr: String,
}

/// Exit code of a denial: every supported runtime treats 2 as "block".
pub const EXIT_DENY: i32 = 2;

/// Why a hook input was refused before agentd was asked (the hook denies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookInputError {
    /// More than [`MAX_HOOK_INPUT`] bytes.
    #[error("hook input larger than {MAX_HOOK_INPUT} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("hook input is not UTF-8: {message}")]
    NotUtf8 {
        /// Where decoding failed.
        message: String,
    },
    /// Not JSON, truncated, or not the runtime's shape.
    #[error("{runtime} hook input is malformed: {message}")]
    Malformed {
        /// The runtime whose format was expected.
        runtime: Runtime,
        /// What is wrong.
        message: String,
    },
    /// An event the adapter does not decide (e.g. a post-tool event).
    #[error("{runtime} hook event `{event}` is not a pre-tool event agentd decides")]
    UnsupportedEvent {
        /// The runtime.
        runtime: Runtime,
        /// The event name received.
        event: String,
    },
    /// The runtime's tool-call id is malformed.
    #[error("tool-call id is malformed: {message}")]
    BadToolUseId {
        /// What is wrong.
        message: String,
    },
}

impl HookInputError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::TooLarge => reason::HOOK_INPUT_TOO_LARGE,
            Self::NotUtf8 { .. } => reason::INVALID_UTF8,
            Self::Malformed { .. } => reason::MALFORMED_HOOK_INPUT,
            Self::UnsupportedEvent { .. } => reason::UNSUPPORTED_HOOK_EVENT,
            Self::BadToolUseId { .. } => reason::INVALID_TOOL_USE_ID,
        }
    }

    /// The denial this error becomes.
    pub fn verdict(&self) -> Verdict {
        Verdict::deny(self.reason_code(), self.to_string())
    }
}

/// The runtime-neutral content of one pre-tool hook input.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCall {
    /// Tool name as the runtime calls it.
    pub tool_name: String,
    /// Tool input.
    pub tool_input: Map<String, Value>,
    /// The runtime's id of the call, if it sends one.
    pub tool_use_id: Option<String>,
}

/// Checks a runtime tool-call id: 1..=128 bytes of `A-Z a-z 0-9 _ - . :`.
pub fn check_tool_use_id(id: &str) -> Result<(), HookInputError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TOOL_USE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(HookInputError::BadToolUseId {
            message: format!(
                "expected 1-{MAX_TOOL_USE_ID} characters of [A-Za-z0-9_.:-], got {} bytes",
                id.len()
            ),
        })
    }
}

/// Decodes raw hook stdin: size limit, UTF-8, JSON object.
pub(crate) fn decode_object(
    runtime: Runtime,
    bytes: &[u8],
) -> Result<Map<String, Value>, HookInputError> {
    if bytes.len() > MAX_HOOK_INPUT {
        return Err(HookInputError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| HookInputError::NotUtf8 {
        message: e.to_string(),
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(malformed(runtime, "expected a JSON object")),
        Err(e) => Err(malformed(runtime, &e.to_string())),
    }
}

pub(crate) fn malformed(runtime: Runtime, message: &str) -> HookInputError {
    HookInputError::Malformed {
        runtime,
        message: message.to_owned(),
    }
}

/// A required string field of the hook input.
pub(crate) fn str_field<'a>(
    runtime: Runtime,
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str, HookInputError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(runtime, &format!("`{name}` must be a string"))),
        None => Err(malformed(runtime, &format!("`{name}` is missing"))),
    }
}

/// An optional tool-call id field, checked.
pub(crate) fn tool_use_id_field(
    runtime: Runtime,
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, HookInputError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_tool_use_id(s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(malformed(runtime, &format!("`{name}` must be a string"))),
    }
}

/// Parses one runtime's pre-tool hook input.
pub fn parse_hook(runtime: Runtime, bytes: &[u8]) -> Result<HookCall, HookInputError> {
    match runtime {
        Runtime::ClaudeCode => claude_code::parse(bytes),
        Runtime::Codex => codex::parse(bytes),
        Runtime::Gemini => gemini::parse(bytes),
        Runtime::Cursor => cursor::parse(bytes),
    }
}

/// Renders a verdict in one runtime's hook output format.
pub fn render(runtime: Runtime, verdict: &Verdict) -> Answer {
    match runtime {
        Runtime::ClaudeCode => claude_code::render(verdict),
        Runtime::Codex => codex::render(verdict),
        Runtime::Gemini => gemini::render(verdict),
        Runtime::Cursor => cursor::render(verdict),
    }
}

/// The local half of a hook: hook stdin and the active-message id from the
/// environment → the request to send agentd, or the denial to answer at
/// once. Never an allow: only agentd allows.
pub fn prepare(
    runtime: Runtime,
    bytes: &[u8],
    active_message_id: Option<&str>,
) -> Result<RuntimeCallRequest, Verdict> {
    let call = parse_hook(runtime, bytes).map_err(|e| e.verdict())?;
    Ok(RuntimeCallRequest {
        runtime,
        active_message_id: active_message_id
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        tool_name: call.tool_name,
        tool_input: call.tool_input,
        tool_use_id: call.tool_use_id,
    })
}

/// Exit 2 with the reason on stderr: the denial form all runtimes honour.
pub(crate) fn deny_answer(verdict: &Verdict, stdout: String) -> Answer {
    Answer {
        exit_code: EXIT_DENY,
        stdout,
        stderr: format!("{}\n", verdict.text()),
    }
}

/// Exit 0, nothing printed: "no opinion" in every runtime.
pub(crate) fn silent() -> Answer {
    Answer {
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
    }
}

#[cfg(test)]
mod tests;
