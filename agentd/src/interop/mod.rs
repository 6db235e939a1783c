//! Interoperability with other agent-authorization tools: policies
//! imported from an Open Agent Passport (`oap`) or an AgentGate YAML policy
//! (`agentgate`), and agentd's decisions exported as signed OAP decision
//! objects (`oap::decision`). All of it is pure conversion: files in,
//! values out; the CLI reads and writes.
//!
//! An import maps what has a faithful agentd equivalent, narrows where
//! agentd can only be stricter (noted), and refuses what agentd cannot
//! enforce at all unless the caller accepts dropping it (`Unenforced`
//! notes): a converted policy is never silently wider than its source.
pub mod agentgate;
pub mod oap;

use crate::policy::schema::PolicyFile;

/// How a converted policy departs from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// agentd is stricter than the source here (some call the source
    /// allows is denied, or needs more).
    Narrowed,
    /// The source constrains something agentd cannot check: the converted
    /// policy is wider there. Refused unless the caller accepts it.
    Unenforced,
}

/// One departure of a converted policy from its source, with its place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    /// Narrowed or unenforced.
    pub kind: NoteKind,
    /// Where in the source (`limits.data.export.max_rows`, `rules[2]`).
    pub at: String,
    /// What happens instead, in words.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            NoteKind::Narrowed => "narrowed",
            NoteKind::Unenforced => "NOT ENFORCED",
        };
        write!(f, "{kind}: {}: {}", self.at, self.message)
    }
}

/// A policy converted from another tool's format.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The agentd policy.
    pub policy: PolicyFile,
    /// Where it departs from the source.
    pub notes: Vec<Note>,
}

/// Why a converted policy cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The source constrains what agentd cannot enforce, and dropping it
    /// was not accepted.
    #[error("{} constraint(s) agentd cannot enforce (pass --drop-unenforced to accept a wider policy):\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Unenforced(Vec<Note>),
    /// The converted policy did not serialize (a bug, reported as such).
    #[error("the converted policy does not serialize: {0}")]
    Serialize(String),
    /// The converted policy does not compile (a bug, reported as such).
    #[error("the converted policy does not compile: {0}")]
    Compile(#[from] crate::policy::PolicyError),
}

impl Converted {
    /// Records a narrowing.
    pub(crate) fn narrowed(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.note(NoteKind::Narrowed, at, message);
    }

    /// Records a constraint agentd cannot enforce.
    pub(crate) fn unenforced(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.note(NoteKind::Unenforced, at, message);
    }

    fn note(&mut self, kind: NoteKind, at: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Note {
            kind,
            at: at.into(),
            message: message.into(),
        });
    }

    /// The policy as TOML, headed by `source` and the notes as comments,
    /// checked by compiling it. Unenforced constraints are an error unless
    /// `drop_unenforced`.
    pub fn to_toml(&self, source: &str, drop_unenforced: bool) -> Result<String, EmitError> {
        let unenforced: Vec<Note> = self
            .notes
            .iter()
            .filter(|n| n.kind == NoteKind::Unenforced)
            .cloned()
            .collect();
        if !unenforced.is_empty() && !drop_unenforced {
            return Err(EmitError::Unenforced(unenforced));
        }
        let mut value =
            toml::Value::try_from(&self.policy).map_err(|e| EmitError::Serialize(e.to_string()))?;
        prune_defaults(&mut value, "");
        let body =
            toml::to_string_pretty(&value).map_err(|e| EmitError::Serialize(e.to_string()))?;
        let mut out = format!("# Converted by agentctl from {}.\n", comment_text(source));
        if self.notes.is_empty() {
            out.push_str("# Every rule of the source has an exact equivalent here.\n");
        } else {
            out.push_str("# Where this policy departs from its source:\n");
            for n in &self.notes {
                for (i, line) in comment_text(&n.to_string()).lines().enumerate() {
                    out.push_str(if i == 0 { "#   " } else { "#     " });
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push('\n');
        out.push_str(&body);
        crate::policy::compile(&out, source)?;
        Ok(out)
    }
}

/// Text for a TOML comment: a comment may hold no control character but
/// tab, and notes quote the source's own strings (a target, a key), so
/// each other one is written escaped (`\u{7}`); line breaks stay, for the
/// caller to start each line as a comment.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Drops what the policy schema would default to anyway (empty tables and
/// lists, `optional = false`, `approval = "none"`, an action's
/// `destructive = false`, the default `[messages]`), so the file reads as
/// written by hand. A role's `destructive` stays: its default depends on
/// the role's name, and so does an argument's empty allow-list (`values`,
/// `scopes`, `programs`, `domains`, `addresses`): empty, it allows
/// nothing; absent, anything.
fn prune_defaults(v: &mut toml::Value, path: &str) {
    let toml::Value::Table(t) = v else { return };
    t.retain(|k, child| {
        let here = format!("{path}.{k}");
        prune_defaults(child, &here);
        let in_action = path.starts_with(".actions.");
        // An empty action or allow entry means something (defined; allowed
        // with no arguments): only these tables may go when empty.
        let optional_table = matches!(
            k,
            "limits" | "profiles" | "runtime" | "mcp" | "servers" | "messages"
        );
        !match (k, &*child) {
            (_, toml::Value::Table(c)) => optional_table && c.is_empty(),
            ("values" | "scopes" | "programs" | "domains" | "addresses", _) => false,
            (_, toml::Value::Array(a)) => a.is_empty(),
            ("description", toml::Value::String(s)) => s.is_empty(),
            ("optional" | "receipt_redact" | "filter_tools", toml::Value::Boolean(b)) => !b,
            ("destructive", toml::Value::Boolean(b)) => in_action && !b,
            ("approval", toml::Value::String(s)) => s == "none",
            ("unsigned" | "invalid", toml::Value::String(s)) => {
                path == ".messages" && s == "refuse"
            }
            _ => false,
        }
    });
}

/// The argument an evaluator denial names (`argument `NAME`: ...`), if any.
pub fn denied_argument(detail: &str) -> Option<&str> {
    let rest = detail.split("argument `").nth(1)?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests;
