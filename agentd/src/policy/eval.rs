//! Pure evaluation of one tool call against a compiled policy, for the
//! operator's roles: role allow-list, argument shape, destructive class,
//! argument constraints, grant. Rate limits (stateful) are the caller's.
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::compile::{
    is_identifier_value, parse_address, Action, ActionRules, CompiledPolicy, Constraint, Role,
};
use super::path;
use crate::grant_spec::GrantSpec;
use crate::protocol::reason;

/// Why the policy denies a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Stable reason code.
    pub reason: &'static str,
    /// Human explanation (argument and value involved).
    pub detail: String,
}

/// Substitutes `{operator}`, allocating only when the placeholder is present
/// (the decision path evaluates scopes on every call).
fn expand<'a>(s: &'a str, operator: &str) -> std::borrow::Cow<'a, str> {
    if s.contains("{operator}") {
        std::borrow::Cow::Owned(s.replace("{operator}", operator))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn deny(reason: &'static str, detail: impl Into<String>) -> Denial {
    Denial {
        reason,
        detail: detail.into(),
    }
}

/// What the policy allows for a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    /// The role that allowed it.
    pub role: String,
    /// Its rate limit, per minute, and burst.
    pub rate_per_minute: u32,
    /// Burst size for the rate limiter.
    pub burst: u32,
    /// Kernel grant, if the action has a template.
    pub grant: Option<GrantSpec>,
    /// The call is classed destructive (and the role may make it).
    pub destructive: bool,
    /// The action needs a human's approval before the call proceeds.
    pub approval_required: bool,
    /// The role's usage threshold for the action, if it has one.
    pub usage: Option<super::schema::UsageLimit>,
    /// The action's receipt cards hide the target (`receipt_redact`).
    pub receipt_redact: bool,
    /// The allowing role's calls are decided in a read-only session.
    pub read_only_session: bool,
}

/// One parsed argument value.
#[derive(Debug)]
enum Parsed<'a> {
    Path(String),
    /// `program` is the allow-listed absolute path argv[0] resolves to, if any;
    /// resolution failing is reported by `check`, after the destructive class.
    Command {
        program: Option<String>,
        base: String,
        argv: Vec<&'a str>,
    },
    Recipients(Vec<&'a str>),
    Domain(String),
    Text(&'a str),
    Str(&'a str),
    Int(i64),
    Json(&'a Value),
    Bool(bool),
}

impl CompiledPolicy {
    /// Evaluates a call by `operator` holding `roles`. The first role that allows
    /// it wins; if none does, the first allowing role's denial is returned.
    pub fn evaluate(
        &self,
        operator: &str,
        roles: &[String],
        action: &str,
        args: &Map<String, Value>,
    ) -> Result<Allowed, Denial> {
        let Some(act) = self.actions.get(action) else {
            return Err(deny(
                reason::UNKNOWN_ACTION,
                format!("action `{action}` is not defined by policy {}", self.id),
            ));
        };
        let mut first_denial = None;
        for role_name in roles {
            let Some(role) = self.roles.get(role_name) else {
                continue;
            };
            let Some(rules) = role.allow.get(action) else {
                continue;
            };
            match evaluate_role(role, act, rules, operator, args) {
                Ok(mut a) => {
                    a.usage = role.limits.get(action).copied();
                    return Ok(a);
                }
                Err(d) => {
                    first_denial.get_or_insert(d);
                }
            }
        }
        Err(first_denial.unwrap_or_else(|| {
            deny(
                reason::ROLE_NOT_IN_ALLOWLIST,
                format!(
                    "no role of `{operator}` ({}) allows `{action}`",
                    roles.join(", ")
                ),
            )
        }))
    }

    /// Names of the path-typed arguments `role` accepts for `action` (their
    /// values are resolved to real objects and the call re-evaluated).
    pub fn path_arguments(&self, role: &str, action: &str) -> Vec<&str> {
        self.roles
            .get(role)
            .and_then(|r| r.allow.get(action))
            .map(|rules| {
                rules
                    .args
                    .iter()
                    .filter(|(_, c)| matches!(c.check, Constraint::Path { .. }))
                    .map(|(n, _)| n.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the roles the policy defines.
    pub fn role_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.roles.keys().cloned().collect();
        v.sort();
        v
    }
}

fn evaluate_role(
    role: &Role,
    act: &Action,
    rules: &ActionRules,
    operator: &str,
    args: &Map<String, Value>,
) -> Result<Allowed, Denial> {
    // 1. Shape: no unknown argument, every required one present, right types.
    let parsed = parse_arguments(rules, args)?;
    // 2. Destructive class.
    let destructive = is_destructive(act, &parsed, operator);
    if destructive && !role.destructive_ok {
        return Err(deny(
            reason::DESTRUCTIVE_OP_OWNER_ONLY,
            format!(
                "the call is destructive and role `{}` may not make it",
                role.name
            ),
        ));
    }
    // 3. Constraints.
    for (name, c, p) in &parsed {
        check(name, c, p, operator)?;
    }
    // 4. Grant.
    let grant = act
        .grant
        .as_ref()
        .map(|t| instantiate_grant(t, &parsed, operator));
    Ok(Allowed {
        role: role.name.clone(),
        rate_per_minute: role.rate_per_minute,
        burst: role.burst,
        grant,
        destructive,
        approval_required: act.approval_required,
        usage: None,
        receipt_redact: act.receipt_redact,
        read_only_session: role.read_only,
    })
}

/// A call's arguments, each with its rule, parsed and typed.
type ParsedArgs<'r, 'v> = Vec<(&'r str, &'r Constraint, Parsed<'v>)>;

/// Step 1: no unknown argument, every required one present, each parsed
/// as its rule's type.
fn parse_arguments<'r, 'v>(
    rules: &'r ActionRules,
    args: &'v Map<String, Value>,
) -> Result<ParsedArgs<'r, 'v>, Denial> {
    for key in args.keys() {
        if rules
            .args
            .binary_search_by(|(n, _)| n.as_str().cmp(key))
            .is_err()
        {
            return Err(deny(
                reason::UNKNOWN_ARGUMENT,
                format!("argument `{key}` is not accepted"),
            ));
        }
    }
    let mut parsed: ParsedArgs<'r, 'v> = Vec::with_capacity(rules.args.len());
    for (name, c) in &rules.args {
        match args.get(name) {
            None if c.optional => {}
            None => {
                return Err(deny(
                    reason::MISSING_ARGUMENT,
                    format!("argument `{name}` is required"),
                ))
            }
            Some(v) => parsed.push((name, &c.check, parse(name, &c.check, v)?)),
        }
    }
    Ok(parsed)
}

/// Step 2: the action is destructive, or an argument names a destructive
/// path or command of it.
fn is_destructive(act: &Action, parsed: &ParsedArgs<'_, '_>, operator: &str) -> bool {
    act.destructive
        || parsed.iter().any(|(_, _, p)| match p {
            Parsed::Path(p) => act
                .destructive_paths
                .iter()
                .any(|s| path::within(p, &expand(s, operator))),
            Parsed::Command { base, argv, .. } => act.destructive_commands.iter().any(|pat| {
                pat[0] == *base
                    && pat.len() <= argv.len()
                    && pat[1..].iter().zip(&argv[1..]).all(|(a, b)| a == b)
            }),
            _ => false,
        })
}

/// Step 4: the action's grant template with `{operator}` and `{arg.NAME}`
/// filled in from the call.
fn instantiate_grant(
    t: &super::schema::GrantTemplate,
    parsed: &ParsedArgs<'_, '_>,
    operator: &str,
) -> GrantSpec {
    let subst = |s: &String| -> String {
        let mut out = s.replace("{operator}", operator);
        for (name, _, p) in parsed {
            let key = format!("{{arg.{name}}}");
            if out.contains(&key) {
                let v = match p {
                    Parsed::Path(p) => p.as_str(),
                    Parsed::Command { program, .. } => program.as_deref().unwrap_or(""),
                    Parsed::Str(s) => s,
                    _ => "",
                };
                out = out.replace(&key, v);
            }
        }
        out
    };
    GrantSpec {
        exec: t.exec.iter().map(|s| PathBuf::from(subst(s))).collect(),
        read: t.read.iter().map(|s| PathBuf::from(subst(s))).collect(),
        write: t.write.iter().map(|s| PathBuf::from(subst(s))).collect(),
        connect: t.connect.iter().map(subst).collect(),
        ttl_secs: t.ttl_secs,
        uses: t.uses,
        args: t.args.as_ref().map(|a| a.iter().map(subst).collect()),
        protected: vec![],
        protected_write: vec![],
    }
}

fn parse<'a>(name: &str, c: &Constraint, v: &'a Value) -> Result<Parsed<'a>, Denial> {
    let wrong = |what: &str| wrong_type(name, what);
    Ok(match c {
        Constraint::Path { .. } => {
            let s = v.as_str().ok_or_else(|| wrong("a string path"))?;
            Parsed::Path(
                path::normalize(s)
                    .map_err(|e| deny(reason::INVALID_PATH, format!("argument `{name}`: {e}")))?,
            )
        }
        Constraint::Command { programs, .. } => parse_command(name, programs, v)?,
        Constraint::Recipients { .. } => parse_recipients(name, v)?,
        Constraint::Domain { .. } => {
            let s = v.as_str().ok_or_else(|| wrong("a host name"))?;
            Parsed::Domain(s.trim_end_matches('.').to_ascii_lowercase())
        }
        Constraint::Text { .. } => Parsed::Text(v.as_str().ok_or_else(|| wrong("a string"))?),
        Constraint::Str { .. } => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            if !is_identifier_value(s) {
                return Err(deny(reason::INVALID_ARGUMENT, format!("argument `{name}` must be an identifier ([A-Za-z0-9._:@+-], not starting with '.')")));
            }
            Parsed::Str(s)
        }
        Constraint::Integer { .. } => Parsed::Int(v.as_i64().ok_or_else(|| wrong("an integer"))?),
        Constraint::Json { .. } => Parsed::Json(v),
        Constraint::Boolean { .. } => {
            Parsed::Bool(v.as_bool().ok_or_else(|| wrong("true or false"))?)
        }
    })
}

/// The `argument NAME must be WHAT` refusal of [`parse`].
fn wrong_type(name: &str, what: &str) -> Denial {
    deny(
        reason::INVALID_ARGUMENT,
        format!("argument `{name}` must be {what}"),
    )
}

/// A command argument: a string split on whitespace or an array of
/// strings; its program matched against the rule's `programs` by path (when
/// it has a `/`) or by file name.
fn parse_command<'a>(name: &str, programs: &[String], v: &'a Value) -> Result<Parsed<'a>, Denial> {
    let wrong = |what: &str| wrong_type(name, what);
    let argv: Vec<&str> = match v {
        Value::String(s) => s.split_ascii_whitespace().collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| wrong("a string or an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(wrong("a string or an array of strings")),
    };
    if argv.is_empty() {
        return Err(wrong("a non-empty command"));
    }
    if argv.iter().any(|a| a.chars().any(char::is_control)) {
        return Err(deny(
            reason::INVALID_ARGUMENT,
            format!("argument `{name}` contains a control character"),
        ));
    }
    let program = if argv[0].contains('/') {
        let p = path::normalize(argv[0]).map_err(|e| {
            deny(
                reason::INVALID_PATH,
                format!("argument `{name}` program: {e}"),
            )
        })?;
        programs.iter().find(|q| **q == p).cloned()
    } else {
        programs
            .iter()
            .find(|q| q.rsplit('/').next() == Some(argv[0]))
            .cloned()
    };
    let base = argv[0].rsplit('/').next().unwrap_or(argv[0]).to_owned();
    Ok(Parsed::Command {
        program,
        base,
        argv,
    })
}

/// A recipients argument: one address or a non-empty array of them.
fn parse_recipients<'a>(name: &str, v: &'a Value) -> Result<Parsed<'a>, Denial> {
    let wrong = |what: &str| wrong_type(name, what);
    let list: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| wrong("an address or an array of addresses"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(wrong("an address or an array of addresses")),
    };
    if list.is_empty() {
        return Err(wrong("at least one address"));
    }
    Ok(Parsed::Recipients(list))
}

fn domain_allowed(host: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host == p,
    })
}

/// Checks one parsed argument against its rule (the rule kind decides
/// which check; a value parsed for another kind fails closed).
fn check(name: &str, c: &Constraint, p: &Parsed, operator: &str) -> Result<(), Denial> {
    match (c, p) {
        (Constraint::Path { scopes }, Parsed::Path(p)) => in_scope(name, p, scopes, operator),
        (
            Constraint::Command {
                scopes,
                max_items,
                max_bytes,
                ..
            },
            Parsed::Command { program, argv, .. },
        ) => check_command(
            name,
            program.is_some(),
            argv,
            (*max_items, *max_bytes),
            scopes.as_deref(),
            operator,
        ),
        (
            Constraint::Recipients {
                domains,
                addresses,
                max_items,
            },
            Parsed::Recipients(list),
        ) => check_recipients(name, list, domains, addresses, *max_items),
        (Constraint::Domain { domains }, Parsed::Domain(host)) => {
            if domain_allowed(host, domains) {
                return Ok(());
            }
            Err(deny(
                reason::DOMAIN_NOT_ALLOWED,
                format!("argument `{name}`: `{host}` is not on the domain allow-list"),
            ))
        }
        (Constraint::Text { max_bytes }, Parsed::Text(s)) => {
            within_bytes(name, s.len(), *max_bytes)
        }
        (Constraint::Str { values, max_bytes }, Parsed::Str(s)) => {
            within_bytes(name, s.len(), *max_bytes)?;
            match values {
                Some(values) => one_of(name, s, values, operator),
                None => Ok(()),
            }
        }
        (Constraint::Integer { min, max }, Parsed::Int(i)) => {
            if i >= min && i <= max {
                return Ok(());
            }
            Err(deny(
                reason::VALUE_OUT_OF_RANGE,
                format!("argument `{name}`: {i} is outside {min}..={max}"),
            ))
        }
        (Constraint::Json { max_bytes }, Parsed::Json(v)) => {
            let len = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            within_bytes(name, len, *max_bytes)
        }
        (Constraint::Boolean { only }, Parsed::Bool(b)) => match only {
            Some(o) if o != b => Err(deny(
                reason::VALUE_NOT_ALLOWED,
                format!("argument `{name}`: `{b}` is not an allowed value"),
            )),
            _ => Ok(()),
        },
        _ => Err(deny(
            reason::INTERNAL_ERROR,
            format!("argument `{name}`: parsed value does not match its rule"),
        )),
    }
}

/// A path inside one of the scopes (`{operator}` expanded).
fn in_scope(name: &str, p: &str, scopes: &[String], operator: &str) -> Result<(), Denial> {
    if scopes.iter().any(|s| path::within(p, &expand(s, operator))) {
        return Ok(());
    }
    Err(deny(
        reason::PATH_OUTSIDE_SCOPE,
        format!("argument `{name}`: `{p}` is outside {}", scopes.join(", ")),
    ))
}

/// A value of `len` bytes within `max_bytes`.
fn within_bytes(name: &str, len: usize, max_bytes: usize) -> Result<(), Denial> {
    if len <= max_bytes {
        return Ok(());
    }
    Err(deny(
        reason::SIZE_LIMIT_EXCEEDED,
        format!("argument `{name}`: {len} bytes exceed {max_bytes}"),
    ))
}

/// A command: an allow-listed program, within the word and byte limits,
/// every absolute-path argument inside the scopes (when the rule has some).
fn check_command(
    name: &str,
    allowed_program: bool,
    argv: &[&str],
    (max_items, max_bytes): (usize, usize),
    scopes: Option<&[String]>,
    operator: &str,
) -> Result<(), Denial> {
    if !allowed_program {
        return Err(deny(
            reason::COMMAND_NOT_ALLOWED,
            format!(
                "argument `{name}`: program `{}` is not on the allow-list",
                argv[0]
            ),
        ));
    }
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    if argv.len() > max_items || bytes > max_bytes {
        return Err(deny(
            reason::SIZE_LIMIT_EXCEEDED,
            format!(
                "argument `{name}`: {} words / {bytes} bytes exceed {max_items} / {max_bytes}",
                argv.len()
            ),
        ));
    }
    let Some(scopes) = scopes else {
        return Ok(());
    };
    for a in argv[1..].iter().filter(|a| a.starts_with('/')) {
        let n = path::normalize(a)
            .map_err(|e| deny(reason::INVALID_PATH, format!("argument `{name}`: {e}")))?;
        in_scope(name, &n, scopes, operator)?;
    }
    Ok(())
}

/// Recipients: at most `max_items`, each a plain address on the address
/// list or in an allowed domain.
fn check_recipients(
    name: &str,
    list: &[&str],
    domains: &[String],
    addresses: &[String],
    max_items: usize,
) -> Result<(), Denial> {
    if list.len() > max_items {
        return Err(deny(
            reason::SIZE_LIMIT_EXCEEDED,
            format!(
                "argument `{name}`: {} recipients exceed {max_items}",
                list.len()
            ),
        ));
    }
    for a in list {
        let lower = a.to_ascii_lowercase();
        let Some((_, domain)) = parse_address(&lower) else {
            return Err(deny(
                reason::RECIPIENT_NOT_ALLOWED,
                format!("argument `{name}`: `{a}` is not a plain e-mail address"),
            ));
        };
        if !addresses.contains(&lower) && !domain_allowed(domain, domains) {
            return Err(deny(
                reason::RECIPIENT_NOT_ALLOWED,
                format!("argument `{name}`: `{a}` is not on the recipient allow-list"),
            ));
        }
    }
    Ok(())
}

/// A string equal to one of the allowed values (`{operator}` expanded).
fn one_of(name: &str, s: &str, values: &[String], operator: &str) -> Result<(), Denial> {
    let matches = |v: &String| {
        if v.contains("{operator}") {
            v.replace("{operator}", operator) == s
        } else {
            v == s
        }
    };
    if values.iter().any(matches) {
        return Ok(());
    }
    Err(deny(
        reason::VALUE_NOT_ALLOWED,
        format!("argument `{name}`: `{s}` is not an allowed value"),
    ))
}
