//! A policy's own unit tests (`agentctl policy test POLICY CASES`): a case
//! file names operators with their roles and a list of cases — a message
//! (signed, unsigned or badly signed, in a session) and one tool call —
//! each with the decision and reason it expects. The cases run in order
//! through the real gateway on a temporary state directory (real SQLite,
//! real HMAC keys), so message rules, session binding, the allow-list,
//! argument rules and rate limits decide exactly as in the daemon.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gateway::{unix_now, Gateway, GatewayError, Settings, ToolCallRequest};
use crate::protocol::SignedMessage;

/// Most cases one file may hold.
pub const MAX_CASES: usize = 10_000;

/// A case file (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Operator id → roles. Each gets a fresh key.
    #[serde(default)]
    pub operators: BTreeMap<String, Vec<String>>,
    /// The cases, run in order (`[[case]]`).
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

/// How a case's message is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Signed with the operator's key.
    #[default]
    Signed,
    /// No signature (the operator is only claimed).
    Unsigned,
    /// Signed with a key that is not the operator's.
    BadSignature,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows (printed with its result).
    pub name: String,
    /// The operator the message comes from (or claims to; none: an
    /// anonymous unsigned message).
    #[serde(default)]
    pub operator: Option<String>,
    /// How the message is sent.
    #[serde(default)]
    pub message: MessageKind,
    /// Session; default: one of the case's own (`case-N`). Name one to
    /// test session binding across cases.
    #[serde(default)]
    pub session: Option<String>,
    /// The tool call's action.
    pub action: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Map<String, Value>,
    /// `allow`, `deny`, `escalate`, or `refused` (the message itself was
    /// refused, so no call could be made).
    pub expect: String,
    /// The reason code expected (any, if absent).
    #[serde(default)]
    pub reason: Option<String>,
    /// The scope the operator signs into the message (makes it a v2
    /// message, docs/protocol.md §1.5); absent: an unscoped v1 message.
    #[serde(default)]
    pub scope: Option<crate::protocol::Scope>,
}

/// What one case got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether decision and reason are the expected ones.
    pub passed: bool,
    /// Expected decision.
    pub expect: String,
    /// Expected reason, if one was named.
    pub expect_reason: Option<String>,
    /// The decision got.
    pub decision: String,
    /// The reason code got.
    pub reason: String,
    /// The gateway's explanation.
    pub detail: String,
}

/// Why a case file could not run.
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    /// The case file is not valid TOML of the documented shape.
    #[error("case file {path}: {message}")]
    Cases {
        /// The file.
        path: String,
        /// What is wrong (with line and column).
        message: String,
    },
    /// A case names something the file does not define.
    #[error("case {index} ({name}): {message}")]
    Case {
        /// 1-based position in the file.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The policy does not compile, or the gateway refused an operator.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The temporary state directory.
    #[error("temporary state directory {path}: {source}")]
    TempDir {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

const EXPECTED: &[&str] = &["allow", "deny", "escalate", "refused"];

/// Parses a case file and checks what can be checked before running it.
pub fn parse(text: &str, path: &str) -> Result<CaseFile, PolicyTestError> {
    let file: CaseFile = toml::from_str(text).map_err(|e| PolicyTestError::Cases {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if file.cases.is_empty() || file.cases.len() > MAX_CASES {
        return Err(PolicyTestError::Cases {
            path: path.to_owned(),
            message: format!("holds {} cases (1..={MAX_CASES})", file.cases.len()),
        });
    }
    for (i, c) in file.cases.iter().enumerate() {
        let bad = |message: String| PolicyTestError::Case {
            index: i + 1,
            name: c.name.clone(),
            message,
        };
        if !EXPECTED.contains(&c.expect.as_str()) {
            return Err(bad(format!(
                "expect = `{}`: must be one of {}",
                c.expect,
                EXPECTED.join(", ")
            )));
        }
        match &c.operator {
            Some(op) if c.message != MessageKind::Unsigned && !file.operators.contains_key(op) => {
                return Err(bad(format!(
                    "operator `{op}` is not in [operators] (a signed message needs its key)"
                )))
            }
            None if c.message != MessageKind::Unsigned => {
                return Err(bad("a signed message needs an operator".into()))
            }
            _ => {}
        }
    }
    Ok(file)
}

/// A state directory removed when dropped.
struct TempState(PathBuf);

impl TempState {
    fn new() -> Result<Self, PolicyTestError> {
        let path = std::env::temp_dir().join(format!(
            "agentd-policy-test-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&path).map_err(|source| PolicyTestError::TempDir {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for TempState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings() -> Settings {
    Settings {
        timestamp_window_secs: 60,
        nonce_ttl_secs: 600,
        active_message_ttl_secs: 900,
        session_ttl_secs: 0,
        unverified_per_minute: 0,
    }
}

/// Runs every case of `cases` against the policy `source` (read from
/// `origin`), in order, on a fresh gateway.
pub fn run(
    source: &str,
    origin: &str,
    cases: &CaseFile,
) -> Result<Vec<CaseResult>, PolicyTestError> {
    let state = TempState::new()?;
    run_in(&state.0, source, origin, cases)
}

fn run_in(
    dir: &Path,
    source: &str,
    origin: &str,
    cases: &CaseFile,
) -> Result<Vec<CaseResult>, PolicyTestError> {
    let gateway = Gateway::open(dir, settings(), None)?;
    gateway.load_policy(source, origin)?;
    let mut keys = BTreeMap::new();
    for (id, roles) in &cases.operators {
        let (_, key) = gateway.add_operator(id, roles)?;
        keys.insert(id.clone(), key);
    }
    let wrong_key = [0x5au8; 32];
    let now = unix_now();
    let mut results = Vec::with_capacity(cases.cases.len());
    for (i, case) in cases.cases.iter().enumerate() {
        let session = case
            .session
            .clone()
            .unwrap_or_else(|| format!("case-{}", i + 1));
        let nonce = format!("policy-test-{:012}", i + 1);
        let body = format!("policy test case {}", i + 1);
        let message = match (case.message, case.operator.as_deref()) {
            (MessageKind::Unsigned, op) => {
                SignedMessage::unsigned(op.map(str::to_owned), &session, &body)
            }
            (kind, Some(op)) => {
                let key = match kind {
                    MessageKind::BadSignature => &wrong_key[..],
                    _ => keys.get(op).map(Vec::as_slice).unwrap_or(&wrong_key),
                };
                let v1 = SignedMessage::new_signed(key, op, &session, &nonce, now, &body);
                match &case.scope {
                    Some(scope) => {
                        SignedMessage::new_signed_v2(key, &v1, None, None, Some(scope.clone()))
                    }
                    None => v1,
                }
            }
            (_, None) => unreachable!("parse refuses a signed message without an operator"),
        };
        let (decision, reason, detail) = match gateway.ingest(&message, now) {
            Err(refusal) => (
                "refused".to_owned(),
                refusal.reason_code.to_owned(),
                refusal.message,
            ),
            Ok(outcome) => {
                let d = gateway.decide(
                    &ToolCallRequest {
                        active_message_id: outcome.active_message_id,
                        action: case.action.clone(),
                        tool_use_id: None,
                        arguments: case.args.clone(),
                    },
                    now,
                );
                (d.decision, d.reason_code, d.detail)
            }
        };
        let passed = decision == case.expect && case.reason.as_deref().is_none_or(|r| r == reason);
        results.push(CaseResult {
            name: case.name.clone(),
            passed,
            expect: case.expect.clone(),
            expect_reason: case.reason.clone(),
            decision,
            reason,
            detail,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../policies/demo.toml");

    fn cases(text: &str) -> CaseFile {
        parse(text, "cases.toml").unwrap()
    }

    #[test]
    fn cases_decide_as_the_gateway_does() {
        let file = cases(
            r#"
[operators]
dr-chen = ["clinician"]

[[case]]
name = "a clinician reads a chart"
operator = "dr-chen"
action = "read_chart"
args = { path = "/srv/charts/p1.json" }
expect = "allow"
reason = "ok"

[[case]]
name = "a clinician may not run a shell"
operator = "dr-chen"
action = "shell"
args = { command = "ls" }
expect = "deny"
reason = "role_not_in_allowlist"

[[case]]
name = "a forged signature gets no tool rights"
operator = "dr-chen"
message = "bad_signature"
action = "read_chart"
args = { path = "/srv/charts/p1.json" }
expect = "deny"

[[case]]
name = "a wrong expectation fails"
operator = "dr-chen"
action = "read_chart"
args = { path = "/etc/shadow" }
expect = "allow"
"#,
        );
        let r = run(DEMO, "policies/demo.toml", &file).unwrap();
        let passed: Vec<bool> = r.iter().map(|c| c.passed).collect();
        assert_eq!(passed, [true, true, true, false], "{r:#?}");
        assert_eq!(r[3].decision, "deny");
        assert!(!r[3].reason.is_empty());
    }

    #[test]
    fn sessions_named_across_cases_stay_bound_to_their_first_operator() {
        let file = cases(
            r#"
[operators]
dr-chen = ["clinician"]
dr-ng = ["clinician"]

[[case]]
name = "first in the session"
operator = "dr-chen"
session = "dm:1"
action = "read_chart"
args = { path = "/srv/charts/p1.json" }
expect = "allow"

[[case]]
name = "another operator in the same session"
operator = "dr-ng"
session = "dm:1"
action = "read_chart"
args = { path = "/srv/charts/p1.json" }
expect = "refused"
reason = "session_operator_mismatch"
"#,
        );
        let r = run(DEMO, "policies/demo.toml", &file).unwrap();
        assert!(r.iter().all(|c| c.passed), "{r:#?}");
    }

    #[test]
    fn bad_case_files_are_refused_with_where_and_why() {
        let e = parse("[[case]]\nname = \"x\"\nactoin = \"y\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("actoin"), "{e}");
        let e = parse(
            "[[case]]\nname = \"x\"\noperator = \"nobody\"\naction = \"y\"\nexpect = \"allow\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("case 1 (x)") && e.contains("nobody"), "{e}");
        let e = parse(
            "[[case]]\nname = \"x\"\nmessage = \"unsigned\"\naction = \"y\"\nexpect = \"maybe\"\n",
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expect = `maybe`"), "{e}");
        assert!(parse("", "c.toml")
            .unwrap_err()
            .to_string()
            .contains("0 cases"));
    }

    #[test]
    fn an_action_needing_approval_expects_escalate_and_a_denial_still_denies() {
        let policy = DEMO.replace(
            "[actions.read_chart]\ndescription = \"Read one patient chart.\"\n",
            "[actions.read_chart]\ndescription = \"Read one patient chart.\"\napproval = \"required\"\n",
        );
        assert_ne!(policy, DEMO);
        let file = cases(
            r#"
[operators]
dr-chen = ["clinician"]

[[case]]
name = "a chart read waits for a human"
operator = "dr-chen"
action = "read_chart"
args = { path = "/srv/charts/p1.json" }
expect = "escalate"
reason = "approval_required"

[[case]]
name = "outside the scope is denied, not escalated"
operator = "dr-chen"
action = "read_chart"
args = { path = "/etc/shadow" }
expect = "deny"
reason = "path_outside_scope"
"#,
        );
        let r = run(&policy, "approvals.toml", &file).unwrap();
        assert!(r.iter().all(|c| c.passed), "{r:#?}");
    }

    #[test]
    fn a_read_only_session_expects_an_elevation_and_admin_is_refused() {
        let policy = r#"
id = "read-only"
[sessions]
start = "read_only"
[actions.read_status]
[actions.deploy]
[actions.grant_access]
[roles.owner.allow.read_status]
[roles.owner.allow.deploy]
[roles.owner.allow.grant_access]
"#;
        let file = cases(
            r#"
[operators]
olivia = ["owner"]

[[case]]
name = "a read proceeds"
operator = "olivia"
action = "read_status"
expect = "allow"

[[case]]
name = "a write waits for an elevation"
operator = "olivia"
action = "deploy"
expect = "escalate"
reason = "elevation_required"

[[case]]
name = "an admin action is never elevated"
operator = "olivia"
action = "grant_access"
expect = "deny"
reason = "admin_not_elevatable"
"#,
        );
        let r = run(policy, "read-only.toml", &file).unwrap();
        assert!(r.iter().all(|c| c.passed), "{r:#?}");
    }

    #[test]
    fn a_policy_that_does_not_compile_is_an_error_not_a_failed_case() {
        let file = cases(
            "[[case]]\nname = \"x\"\nmessage = \"unsigned\"\naction = \"y\"\nexpect = \"deny\"\n",
        );
        assert!(run("id = ", "broken.toml", &file).is_err());
    }
}
