//! AgentGate policies (the YAML `PermissionPolicy.to_yaml` of the
//! `agent-gatekeeper` 1.0.0 package writes) as agentd policies.
//!
//! AgentGate decides `(action, target)` for one agent: seven action types,
//! each with at most one effective rule (the first) — allowed or not,
//! exact-string target allow- and deny-lists, escalation for unlisted
//! targets, and per-action counts (escalate above N uses, deny above M,
//! at most K a minute). The converted policy has one role holding one
//! agentd action per AgentGate action type, each taking one argument,
//! `target`. Every key is checked; unknown ones are refused with their
//! place.
use std::collections::BTreeMap;

use yaml_rust2::{Yaml, YamlLoader};

use crate::interop::Converted;
use crate::policy::compile::is_identifier_value;
use crate::policy::schema::{
    ActionDef, ArgKind, ArgRule, MessageRules, PolicyFile, RoleDef, UsageLimit,
};

/// AgentGate's action types (`agentgate.policy.Action`).
pub const ACTIONS: [&str; 7] = [
    "tool_use",
    "llm_call",
    "file_read",
    "file_write",
    "network",
    "shell",
    "data_access",
];

/// Largest target accepted where AgentGate accepts any (bytes).
pub const ANY_TARGET_MAX_BYTES: usize = 4096;

/// agentd's longest usage window, standing in for AgentGate's counts since
/// the GateKeeper started.
const COUNT_WINDOW_SECS: u64 = 30 * 86_400;

/// agentd's largest usage threshold.
const MAX_USES: u32 = 10_000;

/// The rate limit of the converted role (AgentGate has no per-agent rate).
pub const ROLE_RATE_PER_MINUTE: u32 = 600;

/// Why an AgentGate file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentGateError {
    /// Not YAML.
    #[error("not YAML: {0}")]
    Yaml(String),
    /// A key, type or value AgentGate 1.0.0 does not write.
    #[error("{at}: {message}")]
    Invalid {
        /// Where (`rules[2].max_per_minute`).
        at: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(at: &str, message: impl Into<String>) -> AgentGateError {
    AgentGateError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

/// One rule as AgentGate reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Action type.
    pub action: String,
    /// `allowed` (default false).
    pub allowed: bool,
    /// `allowed_targets`.
    pub allowed_targets: Vec<String>,
    /// `denied_targets`.
    pub denied_targets: Vec<String>,
    /// `require_approval_above`.
    pub require_approval_above: Option<i64>,
    /// `hard_deny_above`.
    pub hard_deny_above: Option<i64>,
    /// `max_per_minute`.
    pub max_per_minute: Option<i64>,
}

/// A whole AgentGate policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `name` (default `unnamed`).
    pub name: String,
    /// `description`.
    pub description: String,
    /// `default_deny` (default true).
    pub default_deny: bool,
    /// `approval_timeout_seconds` (default 300).
    pub approval_timeout_seconds: i64,
    /// `approval_default`: `deny` or `allow`.
    pub approval_default: String,
    /// `rules`, in order.
    pub rules: Vec<Rule>,
}

const TOP_KEYS: [&str; 6] = [
    "name",
    "description",
    "default_deny",
    "approval_timeout_seconds",
    "approval_default",
    "rules",
];

const RULE_KEYS: [&str; 7] = [
    "action",
    "allowed",
    "allowed_targets",
    "denied_targets",
    "require_approval_above",
    "hard_deny_above",
    "max_per_minute",
];

/// Parses an AgentGate YAML policy, refusing what AgentGate would not
/// read the same way.
pub fn parse(text: &str) -> Result<Policy, AgentGateError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| AgentGateError::Yaml(e.to_string()))?;
    let [doc] = docs.as_slice() else {
        return Err(invalid(
            "/",
            format!("expected one YAML document, found {}", docs.len()),
        ));
    };
    let top = hash(doc, "/")?;
    known_keys(top, "", &TOP_KEYS)?;
    let get = |k: &str| top.get(&Yaml::String(k.into()));
    let mut p = Policy {
        name: get("name")
            .map(|v| string(v, "name"))
            .transpose()?
            .unwrap_or_else(|| "unnamed".into()),
        description: get("description")
            .map(|v| string(v, "description"))
            .transpose()?
            .unwrap_or_default(),
        default_deny: get("default_deny")
            .map(|v| boolean(v, "default_deny"))
            .transpose()?
            .unwrap_or(true),
        approval_timeout_seconds: get("approval_timeout_seconds")
            .map(|v| integer(v, "approval_timeout_seconds"))
            .transpose()?
            .unwrap_or(300),
        approval_default: get("approval_default")
            .map(|v| string(v, "approval_default"))
            .transpose()?
            .unwrap_or_else(|| "deny".into()),
        rules: Vec::new(),
    };
    if !matches!(p.approval_default.as_str(), "deny" | "allow") {
        return Err(invalid(
            "approval_default",
            format!(
                "`{}`: AgentGate knows \"deny\" and \"allow\"",
                p.approval_default
            ),
        ));
    }
    if let Some(rules) = get("rules") {
        let Yaml::Array(items) = rules else {
            return Err(invalid("rules", "must be a list"));
        };
        for (i, r) in items.iter().enumerate() {
            p.rules.push(parse_rule(r, &format!("rules[{i}]"))?);
        }
    }
    Ok(p)
}

fn parse_rule(r: &Yaml, at: &str) -> Result<Rule, AgentGateError> {
    let h = hash(r, at)?;
    known_keys(h, &format!("{at}."), &RULE_KEYS)?;
    let get = |k: &str| {
        h.get(&Yaml::String(k.into()))
            .filter(|v| !matches!(v, Yaml::Null))
    };
    let key = |k: &str| format!("{at}.{k}");
    let action = get("action")
        .ok_or_else(|| invalid(at, "`action` is required"))
        .and_then(|v| string(v, &key("action")))?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(invalid(
            &key("action"),
            format!(
                "`{action}` is not an AgentGate action ({})",
                ACTIONS.join(", ")
            ),
        ));
    }
    let count = |k: &str| -> Result<Option<i64>, AgentGateError> {
        let v = get(k).map(|v| integer(v, &key(k))).transpose()?;
        if v.is_some_and(|n| n < 0) {
            return Err(invalid(&key(k), "must not be negative"));
        }
        Ok(v)
    };
    Ok(Rule {
        allowed: get("allowed")
            .map(|v| boolean(v, &key("allowed")))
            .transpose()?
            .unwrap_or(false),
        allowed_targets: get("allowed_targets")
            .map(|v| strings(v, &key("allowed_targets")))
            .transpose()?
            .unwrap_or_default(),
        denied_targets: get("denied_targets")
            .map(|v| strings(v, &key("denied_targets")))
            .transpose()?
            .unwrap_or_default(),
        require_approval_above: count("require_approval_above")?,
        hard_deny_above: count("hard_deny_above")?,
        max_per_minute: count("max_per_minute")?,
        action,
    })
}

fn hash<'a>(v: &'a Yaml, at: &str) -> Result<&'a yaml_rust2::yaml::Hash, AgentGateError> {
    match v {
        Yaml::Hash(h) => Ok(h),
        _ => Err(invalid(at, "must be a mapping")),
    }
}

fn known_keys(
    h: &yaml_rust2::yaml::Hash,
    prefix: &str,
    known: &[&str],
) -> Result<(), AgentGateError> {
    for k in h.keys() {
        match k {
            Yaml::String(s) if known.contains(&s.as_str()) => {}
            Yaml::String(s) => {
                return Err(invalid(
                    &format!("{prefix}{s}"),
                    format!("unknown key (AgentGate 1.0.0 writes {})", known.join(", ")),
                ))
            }
            other => {
                return Err(invalid(
                    prefix.trim_end_matches('.'),
                    format!("a key that is not a string: {other:?}"),
                ))
            }
        }
    }
    Ok(())
}

fn string(v: &Yaml, at: &str) -> Result<String, AgentGateError> {
    match v {
        Yaml::String(s) => Ok(s.clone()),
        _ => Err(invalid(at, "must be a string")),
    }
}

fn boolean(v: &Yaml, at: &str) -> Result<bool, AgentGateError> {
    match v {
        Yaml::Boolean(b) => Ok(*b),
        _ => Err(invalid(at, "must be true or false")),
    }
}

fn integer(v: &Yaml, at: &str) -> Result<i64, AgentGateError> {
    match v {
        Yaml::Integer(i) => Ok(*i),
        _ => Err(invalid(at, "must be an integer")),
    }
}

fn strings(v: &Yaml, at: &str) -> Result<Vec<String>, AgentGateError> {
    let Yaml::Array(items) = v else {
        return Err(invalid(at, "must be a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| string(s, &format!("{at}[{i}]")))
        .collect()
}

/// A policy id from AgentGate's name: `agentgate-` + the name in
/// lowercase, other characters as `-`.
fn policy_id(name: &str) -> String {
    let mut id = String::from("agentgate-");
    for c in name.chars() {
        id.push(if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c.to_ascii_lowercase()
        } else {
            '-'
        });
    }
    id.truncate(64);
    id.trim_end_matches(['-', '.']).to_owned()
}

/// Converts a parsed policy; its rules go to role `role`.
pub fn convert(p: &Policy, role: &str) -> Result<Converted, AgentGateError> {
    let mut out = Converted {
        policy: PolicyFile {
            id: policy_id(&p.name),
            description: format!("AgentGate policy `{}`: {}", p.name, p.description),
            messages: MessageRules::default(),
            roles: BTreeMap::new(),
            actions: ACTIONS
                .iter()
                .map(|a| ((*a).to_owned(), ActionDef::default()))
                .collect(),
            profiles: BTreeMap::new(),
            runtime: BTreeMap::new(),
            mcp: Default::default(),
            sessions: Default::default(),
            anomaly: None,
            protected: Default::default(),
        },
        notes: Vec::new(),
    };
    out.narrowed(
        "/",
        format!("role `{role}` may make {ROLE_RATE_PER_MINUTE} calls a minute per operator (agentd's per-role rate limit)"),
    );
    let mut def = RoleDef {
        description: format!("The agent governed by AgentGate policy `{}`.", p.name),
        rate_per_minute: ROLE_RATE_PER_MINUTE,
        burst: None,
        destructive: Some(false),
        owner: Some(false),
        allow: BTreeMap::new(),
        limits: BTreeMap::new(),
        session_start: None,
    };
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in p.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        if let Some(j) = first.get(r.action.as_str()) {
            return Err(invalid(&at, format!("a second rule for `{}`: AgentGate reads only the first (rules[{j}]); remove one", r.action)));
        }
        first.insert(&r.action, i);
        if let Some((args, usage)) = convert_rule(&mut out, p, r, &at) {
            def.allow.insert(r.action.clone(), args);
            if let Some(u) = usage {
                def.limits.insert(r.action.clone(), u);
            }
        }
    }
    if !p.default_deny {
        for a in ACTIONS.iter().filter(|a| !first.contains_key(*a)) {
            out.narrowed("default_deny", format!("`{a}` has no rule and default_deny is false: allowed with targets up to {ANY_TARGET_MAX_BYTES} bytes"));
            def.allow.insert((*a).to_owned(), any_target());
        }
    }
    if p.rules.iter().any(escalates) {
        out.narrowed(
            "approval_timeout_seconds",
            format!("{} s: agentd's approval wait is [approvals] timeout_secs in agentd.toml, for every policy", p.approval_timeout_seconds),
        );
    }
    out.policy.roles.insert(role.to_owned(), def);
    Ok(out)
}

/// Whether a rule can escalate to a human.
fn escalates(r: &Rule) -> bool {
    r.allowed && (!r.allowed_targets.is_empty() || r.require_approval_above.is_some())
}

/// `target`: optional text of any content (AgentGate accepts any target,
/// or none).
fn any_target() -> BTreeMap<String, ArgRule> {
    let mut t = ArgRule::of(ArgKind::Text);
    t.optional = true;
    t.max_bytes = Some(ANY_TARGET_MAX_BYTES);
    BTreeMap::from([("target".to_owned(), t)])
}

type RuleOut = Option<(BTreeMap<String, ArgRule>, Option<UsageLimit>)>;

/// One allowed rule as argument rules and a usage threshold; None when it
/// allows nothing.
fn convert_rule(out: &mut Converted, p: &Policy, r: &Rule, at: &str) -> RuleOut {
    let blocked = r.hard_deny_above == Some(0) || r.max_per_minute == Some(0);
    if !r.allowed || blocked {
        return None;
    }
    let args = target_rule(out, p, r, at);
    let usage = usage(out, p, r, at);
    Some((args, usage))
}

fn target_rule(out: &mut Converted, p: &Policy, r: &Rule, at: &str) -> BTreeMap<String, ArgRule> {
    if r.allowed_targets.is_empty() {
        if !r.denied_targets.is_empty() {
            out.unenforced(
                format!("{at}.denied_targets"),
                "a deny-list without an allow-list: agentd has no deny-list for arguments, so these targets would be allowed",
            );
        }
        out.narrowed(
            at,
            format!("any target up to {ANY_TARGET_MAX_BYTES} bytes (AgentGate sets no size)"),
        );
        return any_target();
    }
    let mut values = Vec::new();
    for (j, t) in r.allowed_targets.iter().enumerate() {
        if r.denied_targets.contains(t) {
            continue; // AgentGate checks the deny-list first
        }
        if is_identifier_value(t) {
            values.push(t.clone());
        } else {
            out.narrowed(
                format!("{at}.allowed_targets[{j}]"),
                format!("`{t}` is not an identifier ([A-Za-z0-9._:@+-]): agentd cannot match it exactly, so it is denied"),
            );
        }
    }
    let fallback = if p.approval_default == "allow" {
        "approval_default is allow, so AgentGate lets them through whatever the human says"
    } else {
        "AgentGate asks a human"
    };
    out.narrowed(
        format!("{at}.allowed_targets"),
        format!("a target not listed is denied (value_not_allowed; {fallback}); a call without a target is denied (missing_argument), AgentGate skips the list"),
    );
    let mut t = ArgRule::of(ArgKind::String);
    t.values = Some(values);
    BTreeMap::from([("target".to_owned(), t)])
}

fn usage(out: &mut Converted, p: &Policy, r: &Rule, at: &str) -> Option<UsageLimit> {
    let hard = r.hard_deny_above;
    // Escalation above N uses is only reached below the hard limit.
    let approve = r
        .require_approval_above
        .filter(|a| hard.is_none_or(|h| *a < h));
    if hard.is_none() && approve.is_none() {
        return r.max_per_minute.map(|m| UsageLimit {
            max_uses: cap(out, &format!("{at}.max_per_minute"), m),
            window_secs: 60,
            escalate_after: None,
        });
    }
    if r.max_per_minute.is_some() {
        out.unenforced(
            format!("{at}.max_per_minute"),
            "agentd keeps one usage threshold per role and action, here the use count",
        );
    }
    out.unenforced(
        at,
        "AgentGate counts uses since its GateKeeper started; agentd counts per operator over the last 30 days, so uses older than that free up again",
    );
    let max_uses = match hard {
        Some(h) => cap(out, &format!("{at}.hard_deny_above"), h),
        None => {
            out.narrowed(
                at,
                format!("agentd needs a ceiling: at most {MAX_USES} uses in 30 days"),
            );
            MAX_USES
        }
    };
    if approve.is_some() && p.approval_default == "allow" {
        out.narrowed(
            format!("{at}.require_approval_above"),
            "approval_default is allow (AgentGate allows when the human says no or does not answer); agentd denies then",
        );
    }
    Some(UsageLimit {
        max_uses,
        window_secs: COUNT_WINDOW_SECS,
        escalate_after: approve.map(|a| a as u32),
    })
}

fn cap(out: &mut Converted, at: &str, n: i64) -> u32 {
    if n > i64::from(MAX_USES) {
        out.narrowed(
            at,
            format!("{n} exceeds agentd's largest usage threshold: {MAX_USES}"),
        );
        return MAX_USES;
    }
    n as u32
}
