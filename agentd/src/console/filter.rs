//! Which audit rows a view shows, and the JSON shape a row has in the
//! console. Pure.
use serde::{Deserialize, Serialize};

use crate::audit::{kernel_row, Record};

/// The stream's filters (query parameters; empty or absent = any).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RowFilter {
    /// The agent a row names (its `agent` field: tool calls, kernel
    /// events, forward-mode and MCP rows; in rows written before record
    /// format v2, a kernel row's `agent:NAME pid:N` policy id or a
    /// forward-mode row's `"agent":"NAME"` target).
    pub agent: Option<String>,
    /// Operator (exact).
    pub operator: Option<String>,
    /// Action, kernel hook or verb (exact).
    pub action: Option<String>,
    /// `allow`, `deny`, `would_deny`, `escalate`, `info` (exact).
    pub decision: Option<String>,
    /// Reason code (exact).
    pub reason: Option<String>,
    /// Row kind (`tool_call`, `kernel`, `message`, …).
    pub kind: Option<String>,
    /// Rows at or after this time (RFC 3339, a prefix such as
    /// `2026-12-02T08:10` works: timestamps compare as text).
    pub since: Option<String>,
    /// Rows before this time (same form).
    pub until: Option<String>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The agent a row names, if it names one.
pub fn agent_of(r: &Record) -> Option<String> {
    let e = &r.event;
    let o = kernel_row::origin(e);
    if !o.agent.is_empty() {
        return Some(o.agent);
    }
    // A forward-mode row written before its agent had a field of its own.
    if e.kind == crate::audit::RecordKind::Model
        && e.target.starts_with('{')
        && e.target.contains("\"agent\"")
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.target) {
            return v["agent"]
                .as_str()
                .filter(|a| !a.is_empty())
                .map(str::to_owned);
        }
    }
    None
}

impl RowFilter {
    /// The filters a stream's query string sets (decoded pairs; the last
    /// value of a key counts, unknown keys are other parameters').
    pub fn from_query(q: &[(String, String)]) -> Self {
        let get = |key: &str| {
            q.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        RowFilter {
            agent: get("agent"),
            operator: get("operator"),
            action: get("action"),
            decision: get("decision"),
            reason: get("reason"),
            kind: get("kind"),
            since: get("since"),
            until: get("until"),
        }
    }

    /// Whether `r` passes every filter that is set.
    pub fn matches(&self, r: &Record) -> bool {
        let e = &r.event;
        let eq = |f: &Option<String>, v: &str| set(f).is_none_or(|f| f == v);
        eq(&self.operator, &e.operator)
            && eq(&self.action, &e.action)
            && eq(&self.decision, &e.decision)
            && eq(&self.reason, &e.reason_code)
            && eq(&self.kind, e.kind.as_str())
            && set(&self.since).is_none_or(|s| r.timestamp.as_str() >= s)
            && set(&self.until).is_none_or(|u| r.timestamp.as_str() < u)
            && set(&self.agent).is_none_or(|a| agent_of(r).as_deref() == Some(a))
    }
}

/// One row as the console's pages receive it (every field is text the
/// page puts in the DOM as text, never as markup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowView {
    /// Sequence number.
    pub seq: u64,
    /// RFC 3339 time.
    pub timestamp: String,
    /// Row kind.
    pub kind: String,
    /// Operator (or the claim, for an unverified message).
    pub operator: String,
    /// Session.
    pub session: String,
    /// Active-message id.
    pub active_message_id: String,
    /// Tool-call id.
    pub call_id: String,
    /// Action.
    pub action: String,
    /// Target.
    pub target: String,
    /// Decision.
    pub decision: String,
    /// Reason code.
    pub reason_code: String,
    /// Policy id (on kernel rows written before record format v2,
    /// `agent:NAME pid:N`).
    pub policy_id: String,
    /// Decision time, µs.
    pub latency_us: u64,
    /// This row's hash.
    pub hash: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// The agent the row names, if any.
    pub agent: Option<String>,
    /// The process that asked, if the row names it.
    pub pid: Option<u32>,
    /// `read` / `write` for a file open whose mode was recorded.
    pub access: Option<String>,
}

impl From<&Record> for RowView {
    fn from(r: &Record) -> Self {
        let e = &r.event;
        let o = kernel_row::origin(e);
        RowView {
            seq: r.seq,
            timestamp: r.timestamp.clone(),
            kind: e.kind.as_str().to_owned(),
            operator: e.operator.clone(),
            session: e.session.clone(),
            active_message_id: e.active_message_id.clone(),
            call_id: e.call_id.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            decision: e.decision.clone(),
            reason_code: e.reason_code.clone(),
            policy_id: e.policy_id.clone(),
            latency_us: e.latency_us,
            hash: r.hash.clone(),
            prev_hash: r.prev_hash.clone(),
            agent: agent_of(r),
            pid: o.pid,
            access: o.access,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, RecordKind, GENESIS_HASH};

    fn row(seq: u64, kind: RecordKind, f: impl FnOnce(&mut AuditEvent)) -> Record {
        let mut e = AuditEvent::new(kind, "shell");
        e.operator = "olivia".into();
        e.decision = "deny".into();
        e.reason_code = "no_grant".into();
        f(&mut e);
        Record::seal(
            seq,
            format!("2026-12-02T08:1{seq}:00.000000Z"),
            e,
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn every_filter_narrows() {
        let k = row(1, RecordKind::Kernel, |e| {
            (e.agent, e.pid, e.access) = ("fwd".into(), 42, "read".into())
        });
        let t = row(2, RecordKind::ToolCall, |e| {
            e.decision = "allow".into();
            e.reason_code = "ok".into();
        });
        let any = RowFilter::default();
        assert!(any.matches(&k) && any.matches(&t));
        let f = |g: fn(&mut RowFilter)| {
            let mut x = RowFilter::default();
            g(&mut x);
            (x.matches(&k), x.matches(&t))
        };
        assert_eq!(f(|x| x.agent = Some("fwd".into())), (true, false));
        assert_eq!(f(|x| x.agent = Some("fw".into())), (false, false));
        assert_eq!(f(|x| x.decision = Some("allow".into())), (false, true));
        assert_eq!(f(|x| x.reason = Some("no_grant".into())), (true, false));
        assert_eq!(f(|x| x.kind = Some("kernel".into())), (true, false));
        assert_eq!(f(|x| x.operator = Some("olivia".into())), (true, true));
        assert_eq!(f(|x| x.operator = Some("bob".into())), (false, false));
        assert_eq!(f(|x| x.action = Some("shell".into())), (true, true));
        assert_eq!(
            f(|x| x.since = Some("2026-12-02T08:12".into())),
            (false, true)
        );
        assert_eq!(
            f(|x| x.until = Some("2026-12-02T08:12".into())),
            (true, false)
        );
        // Blank parameters (an empty form field) filter nothing.
        assert_eq!(f(|x| x.agent = Some("  ".into())), (true, true));
    }

    #[test]
    fn tool_call_rows_match_their_callers_agent_filter() {
        let t = row(2, RecordKind::ToolCall, |e| {
            (e.agent, e.pid) = ("claude".into(), 7);
            e.policy_id = "demo@0123".into();
        });
        let by = |a: &str| RowFilter {
            agent: Some(a.into()),
            ..RowFilter::default()
        };
        assert!(by("claude").matches(&t));
        assert!(!by("codex").matches(&t));
        let v = RowView::from(&t);
        assert_eq!((v.agent.as_deref(), v.pid), (Some("claude"), Some(7)));
        assert_eq!(v.policy_id, "demo@0123");
    }

    #[test]
    fn rows_written_before_the_agent_field_still_match() {
        let k = row(1, RecordKind::Kernel, |e| {
            e.policy_id = "agent:fwd pid:42 access:read".into()
        });
        assert_eq!(agent_of(&k).as_deref(), Some("fwd"));
        let v = RowView::from(&k);
        assert_eq!((v.pid, v.access.as_deref()), (Some(42), Some("read")));
        // A tool call's policy id is never read as an agent.
        let t = row(2, RecordKind::ToolCall, |e| e.policy_id = "agent:x".into());
        assert_eq!(agent_of(&t), None);
    }

    #[test]
    fn forward_rows_name_their_agent() {
        let m = row(3, RecordKind::Model, |e| {
            e.target = r#"{"provider":"openai_chat","agent":"fwd"}"#.into()
        });
        assert_eq!(agent_of(&m).as_deref(), Some("fwd"));
        let v = RowView::from(&m);
        assert_eq!(v.agent.as_deref(), Some("fwd"));
        assert_eq!(v.kind, "model");
    }
}
