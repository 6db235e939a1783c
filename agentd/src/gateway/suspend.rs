//! Suspensions (the kill switch's state), pure: what a suspension covers
//! (an operator, an agent, or everything), the set in force, and which one
//! refuses a given message or tool call. No I/O; `kill_switch` stores them,
//! ends grants and stops processes.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::protocol::reason;

/// Longest reason text a suspension keeps, in bytes.
pub const MAX_REASON_LEN: usize = 512;
/// Longest operator or agent name a scope names, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A malformed suspension request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSuspension(pub String);

/// What one suspension covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every message and every tool call.
    All,
    /// Messages signed by this operator, and tool calls on its messages.
    Operator(String),
    /// Messages addressed to this agent, tool calls its processes make or
    /// make on messages it holds.
    Agent(String),
}

impl Scope {
    /// Parses the wire form: `kind` is `operator`, `agent` or `all`; a name
    /// is required for the first two and refused for `all`.
    pub fn parse(kind: &str, name: Option<&str>) -> Result<Self, InvalidSuspension> {
        let named = |name: Option<&str>| -> Result<String, InvalidSuspension> {
            let n =
                name.ok_or_else(|| InvalidSuspension(format!("scope `{kind}` needs a name")))?;
            check_name(n)?;
            Ok(n.to_owned())
        };
        match kind {
            "all" if name.is_some() => {
                Err(InvalidSuspension("scope `all` takes no name".to_owned()))
            }
            "all" => Ok(Scope::All),
            "operator" => Ok(Scope::Operator(named(name)?)),
            "agent" => Ok(Scope::Agent(named(name)?)),
            other => Err(InvalidSuspension(format!(
                "unknown scope `{other}` (operator, agent or all)"
            ))),
        }
    }

    /// `operator`, `agent` or `all`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Operator(_) => "operator",
            Scope::Agent(_) => "agent",
        }
    }

    /// The operator or agent named (None for `all`).
    pub fn name(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Operator(n) | Scope::Agent(n) => Some(n),
        }
    }

    /// The reason code of what this suspension refuses.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Scope::All => reason::ALL_SUSPENDED,
            Scope::Operator(_) => reason::OPERATOR_SUSPENDED,
            Scope::Agent(_) => reason::AGENT_SUSPENDED,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{}:{n}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// Names are operator ids or agent names: short, printable, no separators
/// (the exact rules are checked where the operator or agent is looked up).
fn check_name(n: &str) -> Result<(), InvalidSuspension> {
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidSuspension(format!(
            "name `{}` is not an operator id or agent name ([A-Za-z0-9._-], 1 to {MAX_NAME_LEN} bytes)",
            n.escape_debug()
        )))
    }
}

/// Checks a reason text: bounded, no control characters (it lands in audit
/// rows and terminals).
pub fn check_reason(text: &str) -> Result<(), InvalidSuspension> {
    if text.len() > MAX_REASON_LEN {
        return Err(InvalidSuspension(format!(
            "reason longer than {MAX_REASON_LEN} bytes"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidSuspension(
            "reason contains control characters".to_owned(),
        ));
    }
    Ok(())
}

/// One suspension in force, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspension {
    /// `operator`, `agent` or `all`.
    pub scope: String,
    /// The operator or agent (absent for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why (free text, may be empty).
    pub reason: String,
    /// The agents' processes in scope were stopped when it was set.
    pub stop: bool,
    /// Who set it (`uid:N`).
    pub by: String,
    /// Unix seconds when it was set.
    pub since: i64,
}

impl Suspension {
    /// Its scope (stored rows were checked when they were written; a row
    /// that no longer parses is reported by the store).
    pub fn scope(&self) -> Result<Scope, InvalidSuspension> {
        Scope::parse(&self.scope, self.name.as_deref())
    }
}

/// What a message or tool call is, for matching against suspensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The verified operator behind it (None when unverified or unknown).
    pub operator: Option<&'a str>,
    /// The agents involved: the calling agent, the agent holding (or
    /// addressed by) the message.
    pub agents: [Option<&'a str>; 2],
}

/// The suspension that covers `subject`, if any: `all` first, then the
/// operator, then the agents (the most general reason is reported).
pub fn covering<'m>(
    set: &'m BTreeMap<Scope, Suspension>,
    subject: &Subject<'_>,
) -> Option<(&'m Scope, &'m Suspension)> {
    if set.is_empty() {
        return None;
    }
    if let Some(hit) = set.get_key_value(&Scope::All) {
        return Some(hit);
    }
    if let Some(op) = subject.operator {
        if let Some(hit) = set.get_key_value(&Scope::Operator(op.to_owned())) {
            return Some(hit);
        }
    }
    subject
        .agents
        .iter()
        .flatten()
        .find_map(|a| set.get_key_value(&Scope::Agent((*a).to_owned())))
}

/// The suspensions in force, in memory (the decision path reads only this).
#[derive(Debug, Default)]
pub struct Suspensions {
    set: RwLock<BTreeMap<Scope, Suspension>>,
    /// Bumped before each new suspension takes effect: a decision that saw
    /// an older value re-checks itself after its grant was installed.
    generation: AtomicU64,
}

impl Suspensions {
    /// A set holding `rows` (loaded from the store).
    pub fn from_rows(rows: impl IntoIterator<Item = (Scope, Suspension)>) -> Self {
        Self {
            set: RwLock::new(rows.into_iter().collect()),
            generation: AtomicU64::new(0),
        }
    }

    /// Why `subject` is refused, if a suspension covers it: (reason code, detail).
    pub fn refusal(&self, subject: &Subject<'_>) -> Option<(&'static str, String)> {
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        let (scope, s) = covering(&set, subject)?;
        let why = if s.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", s.reason)
        };
        Some((
            scope.reason_code(),
            format!("{scope} is suspended (by {} at {}){why}", s.by, s.since),
        ))
    }

    /// Puts `s` in force (replacing a suspension of the same scope).
    pub fn insert(&self, scope: Scope, s: Suspension) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        set.insert(scope, s);
    }

    /// Lifts the suspension of `scope`; returns it, if there was one.
    pub fn remove(&self, scope: &Scope) -> Option<Suspension> {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(scope)
    }

    /// The suspension of exactly `scope`, if in force.
    pub fn get(&self, scope: &Scope) -> Option<Suspension> {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .cloned()
    }

    /// Every suspension in force, ordered by scope.
    pub fn list(&self) -> Vec<(Scope, Suspension)> {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The current generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(scope: &Scope) -> Suspension {
        Suspension {
            scope: scope.kind().into(),
            name: scope.name().map(str::to_owned),
            reason: "incident 7".into(),
            stop: false,
            by: "uid:0".into(),
            since: 1,
        }
    }

    fn set(scopes: &[Scope]) -> Suspensions {
        Suspensions::from_rows(scopes.iter().map(|x| (x.clone(), s(x))))
    }

    fn subject<'a>(op: Option<&'a str>, a: Option<&'a str>, b: Option<&'a str>) -> Subject<'a> {
        Subject {
            operator: op,
            agents: [a, b],
        }
    }

    #[test]
    fn operator_scope_matches_only_that_operator() {
        let set = set(&[Scope::Operator("olivia".into())]);
        let (code, detail) = set.refusal(&subject(Some("olivia"), None, None)).unwrap();
        assert_eq!(code, "operator_suspended");
        assert!(detail.contains("operator:olivia") && detail.contains("incident 7"));
        assert!(set.refusal(&subject(Some("chen"), None, None)).is_none());
        // An agent named like the operator is another scope.
        assert!(set.refusal(&subject(None, Some("olivia"), None)).is_none());
    }

    #[test]
    fn agent_scope_matches_caller_or_holder() {
        let set = set(&[Scope::Agent("mailbot".into())]);
        for subj in [
            subject(Some("olivia"), Some("mailbot"), None),
            subject(Some("olivia"), None, Some("mailbot")),
            subject(None, Some("other"), Some("mailbot")),
        ] {
            assert_eq!(set.refusal(&subj).unwrap().0, "agent_suspended");
        }
        assert!(set
            .refusal(&subject(Some("olivia"), Some("other"), None))
            .is_none());
        assert!(set.refusal(&subject(Some("mailbot"), None, None)).is_none());
    }

    #[test]
    fn all_scope_matches_everything_and_wins() {
        let set = set(&[Scope::All, Scope::Operator("olivia".into())]);
        assert_eq!(set.refusal(&Subject::default()).unwrap().0, "all_suspended");
        assert_eq!(
            set.refusal(&subject(Some("olivia"), None, None)).unwrap().0,
            "all_suspended"
        );
    }

    #[test]
    fn operator_is_reported_before_agent() {
        let set = set(&[Scope::Agent("bot".into()), Scope::Operator("olivia".into())]);
        assert_eq!(
            set.refusal(&subject(Some("olivia"), Some("bot"), None))
                .unwrap()
                .0,
            "operator_suspended"
        );
    }

    #[test]
    fn empty_set_and_resume() {
        let set = set(&[]);
        assert!(set.refusal(&subject(Some("a"), Some("b"), None)).is_none());
        let g = set.generation();
        set.insert(Scope::All, s(&Scope::All));
        assert!(
            set.generation() > g,
            "a new suspension bumps the generation"
        );
        assert!(set.refusal(&Subject::default()).is_some());
        assert!(set.remove(&Scope::All).is_some());
        assert!(set.remove(&Scope::All).is_none());
        assert!(set.refusal(&Subject::default()).is_none());
    }

    #[test]
    fn scope_parsing() {
        assert_eq!(Scope::parse("all", None).unwrap(), Scope::All);
        assert_eq!(
            Scope::parse("agent", Some("mail-bot.1")).unwrap(),
            Scope::Agent("mail-bot.1".into())
        );
        assert_eq!(
            Scope::parse("operator", Some("olivia"))
                .unwrap()
                .to_string(),
            "operator:olivia"
        );
        for (kind, name) in [
            ("all", Some("x")),
            ("operator", None),
            ("agent", Some("")),
            ("agent", Some("a/b")),
            ("agent", Some("a b")),
            ("group", Some("x")),
        ] {
            assert!(Scope::parse(kind, name).is_err(), "{kind} {name:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(Scope::parse("operator", Some(&long)).is_err());
    }

    #[test]
    fn reason_text_is_bounded_and_printable() {
        assert!(check_reason("").is_ok());
        assert!(check_reason("leaked key, see INC-7 — ü").is_ok());
        assert!(check_reason("line\nbreak").is_err());
        assert!(check_reason("\u{1b}[31m").is_err());
        assert!(check_reason(&"r".repeat(MAX_REASON_LEN + 1)).is_err());
    }
}
