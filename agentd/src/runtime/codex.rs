//! Codex's `PreToolUse` hook: Claude Code's input shape plus `turn_id` and
//! `model`; the shell tool arrives as `Bash` with `{"command": ...}`. Codex
//! honours only denials (`permissionDecision: "deny"` or exit 2): an allow
//! is answered with silence, which lets the tool run.
use super::{claude_code, deny_answer, silent, Answer, HookCall, HookInputError, Runtime, Verdict};

/// Parses a Codex `PreToolUse` input.
pub fn parse(bytes: &[u8]) -> Result<HookCall, HookInputError> {
    claude_code::parse_as(Runtime::Codex, bytes)
}

/// Renders a verdict: deny → exit 2, reason on stderr, the deny JSON on
/// stdout; allow and no opinion → exit 0, nothing printed.
pub fn render(verdict: &Verdict) -> Answer {
    match verdict {
        Verdict::Deny { .. } => deny_answer(
            verdict,
            claude_code::decision_json("deny", &verdict.text()) + "\n",
        ),
        Verdict::Allow { .. } | Verdict::NoOpinion => silent(),
    }
}
