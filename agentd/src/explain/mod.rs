//! `agentctl explain SEQ`: why one audit row was denied (or allowed), which
//! check decided it, and what change to the policy or to the agent's
//! profile would allow it — as a TOML snippet to paste.
//!
//! Pure: the caller reads the row and its context (the policy in force, the
//! operator's roles, the agent's profiles, the gateway row of the call a
//! kernel row names); nothing here does I/O. Gateway fixes are checked by
//! re-deciding the call against the patched policy, so a proposed rule is
//! one the policy compiler accepts and that allows exactly this call.
mod delegation;
mod gateway;
mod kernel;
mod render;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::audit::{Record, RecordKind};
use crate::policy::schema::PolicyFile;

/// What the caller knows around the row.
#[derive(Debug, Default, Clone)]
pub struct Context<'a> {
    /// Source text of the policy in force (TOML), if known.
    pub policy_source: Option<&'a str>,
    /// Compiled id of that policy (`demo@1a2b…`), to say when the row was
    /// decided by another one.
    pub policy_id: Option<&'a str>,
    /// Roles of the row's operator (None: unknown or not enrolled).
    pub operator_roles: Option<&'a [String]>,
    /// For kernel rows: the profiles the agent's baseline is built from.
    pub agent_profiles: Option<&'a [String]>,
    /// For kernel rows bound to a call: the gateway row that allowed it.
    pub call_row: Option<&'a Record>,
}

/// How the row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Allowed,
    /// Denied.
    Denied,
    /// Audit-only mode: would have been denied, was let through.
    WouldDeny,
    /// Every check passed and a person was asked (approval, elevation or
    /// a tripped anomaly check); later rows with the call id say the end.
    Escalated,
    /// Neither (lifecycle, administration, escalation).
    Info,
}

/// One change that would allow what the row refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    /// What the change is, in one sentence.
    pub summary: String,
    /// The TOML to add or replace (tables as they should read afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
    /// A command to run with it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// True when the patched policy was compiled and re-decided the call as allowed.
    #[serde(default)]
    pub verified: bool,
}

/// The explanation of one audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The row's sequence number.
    pub seq: u64,
    /// Row kind (`tool_call`, `kernel`, `message`, …).
    pub kind: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The stable reason code of the row.
    pub reason_code: String,
    /// Which check decided, e.g. `gateway: role allow-list (step 4)`.
    pub check: String,
    /// Why, in plain words.
    pub why: String,
    /// Changes that would allow it (empty: nothing in policy can, or nothing to do).
    pub fixes: Vec<Fix>,
    /// Anything else worth knowing (a row decided by an older policy, clipped arguments).
    pub notes: Vec<String>,
}

impl Explanation {
    fn new(r: &Record, check: impl Into<String>, why: impl Into<String>) -> Self {
        Explanation {
            seq: r.seq,
            kind: r.event.kind.as_str().to_owned(),
            outcome: outcome_of(&r.event.decision),
            reason_code: r.event.reason_code.clone(),
            check: check.into(),
            why: why.into(),
            fixes: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Plain text for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "row {} ({}): {} — {}\n",
            self.seq,
            self.kind,
            match self.outcome {
                Outcome::Allowed => "allowed",
                Outcome::Denied => "DENIED",
                Outcome::WouldDeny => "WOULD BE DENIED (audit-only mode let it through)",
                Outcome::Escalated => "ESCALATED (waited for a person's answer)",
                Outcome::Info => "recorded",
            },
            if self.reason_code.is_empty() {
                "-"
            } else {
                &self.reason_code
            }
        );
        out.push_str(&format!("decided by: {}\n", self.check));
        out.push_str(&format!("why: {}\n", self.why));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for (i, f) in self.fixes.iter().enumerate() {
            out.push_str(&format!(
                "\nto allow it ({}): {}{}\n",
                i + 1,
                f.summary,
                if f.verified {
                    " [checked: the patched policy allows this call]"
                } else {
                    ""
                }
            ));
            if let Some(t) = &f.toml {
                out.push('\n');
                for l in t.lines() {
                    out.push_str("    ");
                    out.push_str(l);
                    out.push('\n');
                }
            }
            if let Some(c) = &f.command {
                out.push_str(&format!("\n    $ {c}\n"));
            }
        }
        out
    }
}

fn outcome_of(decision: &str) -> Outcome {
    match decision {
        "allow" => Outcome::Allowed,
        "deny" => Outcome::Denied,
        "would_deny" => Outcome::WouldDeny,
        "escalate" => Outcome::Escalated,
        _ => Outcome::Info,
    }
}

/// Explains one row. Never fails: what cannot be worked out is said in the text.
pub fn explain(r: &Record, ctx: &Context<'_>) -> Explanation {
    let policy = ctx
        .policy_source
        .and_then(|s| toml::from_str::<PolicyFile>(s).ok());
    let mut e = match r.event.kind {
        RecordKind::ToolCall => gateway::tool_call(r, ctx, policy.as_ref()),
        RecordKind::Message => gateway::message(r),
        RecordKind::Kernel => kernel::explain(r, ctx, policy.as_ref()),
        RecordKind::Model => Explanation::new(
            r,
            "the forward proxy (model)".to_string(),
            format!(
                "a model-API exchange ({}); each tool call in the answer has its own decision row",
                r.event.target
            ),
        ),
        RecordKind::Admin if r.event.action.starts_with("delegation_") => {
            gateway::delegation_row(r)
        }
        RecordKind::Lifecycle if r.event.action == "fleet_central" => Explanation::new(
            r,
            "the fleet's central state (agentctl fleet)".to_owned(),
            fleet_central_why(&r.event.reason_code, &r.event.target),
        ),
        RecordKind::Admin | RecordKind::Lifecycle => Explanation::new(
            r,
            format!("agentd itself ({})", r.event.kind.as_str()),
            format!(
                "`{}` on `{}`: an administration or lifecycle record, not a decision about an agent",
                r.event.action, r.event.target
            ),
        ),
    };
    if ctx.policy_source.is_some() && policy.is_none() {
        e.notes
            .push("the policy in force could not be parsed; no rule could be proposed".into());
    }
    if r.event.kind == RecordKind::ToolCall {
        if let Some(id) = ctx.policy_id {
            if !r.event.policy_id.is_empty() && r.event.policy_id != id {
                e.notes.push(format!(
                    "the row was decided by policy {}; the policy in force is {id} (the proposal is against the one in force)",
                    r.event.policy_id
                ));
            }
        }
    }
    e
}

/// What a `fleet_central` row (a central change applied on this host) says.
fn fleet_central_why(reason: &str, target: &str) -> String {
    let what = match reason {
        "fleet_policy_applied" => "the fleet's central policy was put in force on this host",
        "fleet_policy_refused" => "the fleet's central policy did not compile on this host; the policy it had stays in force",
        "fleet_operator_added" => "a central operator (Ed25519 public key) was enrolled on this host",
        "fleet_operator_roles" => "a central operator's roles were changed on this host, and the grants of its earlier calls ended",
        "fleet_operator_removed" => "a central operator was removed: revoked on this host, its calls' grants ended",
        "fleet_operator_refused" => "a central operator could not be enrolled on this host (a local operator holds the id, or a role this host's policy lacks)",
        "fleet_suspended" => "a central suspension was put in force on this host",
        "fleet_resumed" => "a central suspension was lifted on this host",
        "fleet_suspension_refused" => "a central suspension could not be put in force on this host",
        "fleet_delegation_revoked" => "a delegation token this host held was revoked centrally, with the tokens below it",
        _ => "a change from the fleet's central state",
    };
    format!("{what} ({target}); see docs/fleet.md")
}
