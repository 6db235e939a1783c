//! A compiled policy never allows what a small reference evaluator, written
//! here from the documented rules alone, denies. The fuzzer builds a policy
//! (roles, actions, path / string / integer / domain rules, destructive
//! classes, `{operator}` scopes) and a call from small pools of awkward
//! values (`..`, `x.`, `//`, trailing dots, upper case, `{operator}`); the
//! policy is rendered to TOML and compiled by agentd; whenever agentd
//! allows, the reference must allow too.
#![no_main]
use std::collections::BTreeMap;

use agentd::policy::compile;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ROLES: [&str; 3] = ["owner", "member", "guest"];
const ACTIONS: [&str; 2] = ["act_a", "act_b"];
const ARGS: [&str; 3] = ["p", "q", "r"];
const OPERATORS: [&str; 4] = ["alice", "bob", "a.b", "x/y"];
const PATH_PARTS: [&str; 10] = [
    "",
    ".",
    "..",
    "x.",
    "work",
    "space",
    "alice",
    "{operator}",
    "etc",
    "a b",
];
const WORDS: [&str; 8] = [
    "alice",
    "bob",
    "{operator}",
    "x-1",
    ".hidden",
    "a@b",
    "",
    "Alice",
];
const HOSTS: [&str; 8] = [
    "example.com",
    "*.example.com",
    "api.example.com",
    "API.Example.com.",
    "badexample.com",
    ".example.com",
    "com",
    "a.b.example.com",
];

#[derive(Debug, Arbitrary)]
enum Kind {
    Path(Vec<Vec<u8>>),
    Str(Option<Vec<u8>>),
    Int(Option<i64>, Option<i64>),
    Domain(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct ArgSpec {
    name: u8,
    optional: bool,
    kind: Kind,
}

#[derive(Debug, Arbitrary)]
struct RoleSpec {
    name: u8,
    destructive: Option<bool>,
    allow: Vec<(u8, Vec<ArgSpec>)>,
}

#[derive(Debug, Arbitrary)]
struct ActionSpec {
    destructive: bool,
    destructive_paths: Vec<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
enum ArgValue {
    Path(Vec<u8>),
    Word(u8),
    Int(i64),
    Host(u8),
    Null,
}

#[derive(Debug, Arbitrary)]
struct Input {
    roles: Vec<RoleSpec>,
    actions: [ActionSpec; 2],
    operator: u8,
    held: Vec<u8>,
    action: u8,
    args: Vec<(u8, ArgValue)>,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[i as usize % pool.len()]
}

fn path_of(parts: &[u8]) -> String {
    let mut s = String::new();
    for p in parts.iter().take(5) {
        s.push('/');
        s.push_str(pick(&PATH_PARTS, *p));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

// ---- the reference evaluator -------------------------------------------

/// Components of an absolute path, or None when the documented rules refuse
/// it (relative, control characters, `..` or a dot-terminated component).
fn components(p: &str) -> Option<Vec<&str>> {
    if !p.starts_with('/') || p.chars().any(char::is_control) || p.len() > 4096 {
        return None;
    }
    let mut out = Vec::new();
    for c in p.split('/') {
        if c.is_empty() || c == "." {
            continue;
        }
        if c.ends_with('.') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

fn inside(path: &str, scope: &str) -> bool {
    match (components(path), components(scope)) {
        (Some(p), Some(s)) => p.len() >= s.len() && p[..s.len()] == s[..],
        _ => false,
    }
}

fn host_allowed(host: &str, pattern: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let labels: Vec<&str> = host.split('.').collect();
            let want: Vec<&str> = suffix.split('.').collect();
            labels.len() > want.len()
                && labels[labels.len() - want.len()..] == want[..]
                && labels[..labels.len() - want.len()]
                    .iter()
                    .all(|l| !l.is_empty())
        }
        None => host == pattern,
    }
}

fn identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@+-".contains(&b))
}

struct Rule {
    optional: bool,
    kind: RuleKind,
}

enum RuleKind {
    Path(Vec<String>),
    Str(Option<Vec<String>>),
    Int(i64, i64),
    Domain(Vec<String>),
}

/// Does `role` allow `action` with `args` for `operator`?
fn reference_allows(
    role_destructive: bool,
    action_destructive: bool,
    destructive_paths: &[String],
    rules: &BTreeMap<String, Rule>,
    operator: &str,
    args: &Map<String, Value>,
) -> bool {
    let op = |s: &str| s.replace("{operator}", operator);
    if args.keys().any(|k| !rules.contains_key(k)) {
        return false;
    }
    let mut destructive = action_destructive;
    for (name, rule) in rules {
        let Some(v) = args.get(name) else {
            if rule.optional {
                continue;
            }
            return false;
        };
        let ok = match &rule.kind {
            RuleKind::Path(scopes) => match v.as_str() {
                Some(p) if components(p).is_some() => {
                    if destructive_paths.iter().any(|d| inside(p, &op(d))) {
                        destructive = true;
                    }
                    scopes.iter().any(|s| inside(p, &op(s)))
                }
                _ => false,
            },
            RuleKind::Str(values) => match v.as_str() {
                Some(s) => {
                    identifier(s)
                        && s.len() <= 128
                        && values
                            .as_ref()
                            .is_none_or(|vs| vs.iter().any(|x| op(x) == s))
                }
                None => false,
            },
            RuleKind::Int(min, max) => v.as_i64().is_some_and(|i| *min <= i && i <= *max),
            RuleKind::Domain(domains) => v
                .as_str()
                .is_some_and(|h| domains.iter().any(|d| host_allowed(h, d))),
        };
        if !ok {
            return false;
        }
    }
    !destructive || role_destructive
}

// ---- rendering the policy as TOML ---------------------------------------

fn render(
    input: &Input,
) -> (
    String,
    BTreeMap<(String, String), (bool, BTreeMap<String, Rule>)>,
) {
    let mut doc = toml::Table::new();
    doc.insert("id".into(), "fuzz".into());
    let mut actions = toml::Table::new();
    for (i, a) in input.actions.iter().enumerate() {
        let mut t = toml::Table::new();
        t.insert("destructive".into(), a.destructive.into());
        let paths: Vec<toml::Value> = a
            .destructive_paths
            .iter()
            .take(2)
            .map(|p| path_of(p).into())
            .collect();
        t.insert("destructive_paths".into(), paths.into());
        actions.insert(ACTIONS[i].into(), t.into());
    }
    doc.insert("actions".into(), actions.into());
    let mut roles = toml::Table::new();
    let mut reference = BTreeMap::new();
    for r in input.roles.iter().take(3) {
        let name = pick(&ROLES, r.name);
        if roles.contains_key(name) {
            continue;
        }
        let mut t = toml::Table::new();
        if let Some(d) = r.destructive {
            t.insert("destructive".into(), d.into());
        }
        let role_destructive = r.destructive.unwrap_or(name == "owner");
        let mut allow = toml::Table::new();
        for (a, specs) in r.allow.iter().take(2) {
            let action = pick(&ACTIONS, *a);
            if allow.contains_key(action) {
                continue;
            }
            let mut args = toml::Table::new();
            let mut rules = BTreeMap::new();
            for s in specs.iter().take(3) {
                let arg = pick(&ARGS, s.name);
                if args.contains_key(arg) {
                    continue;
                }
                let mut rt = toml::Table::new();
                rt.insert("optional".into(), s.optional.into());
                let kind = match &s.kind {
                    Kind::Path(scopes) => {
                        let scopes: Vec<String> =
                            scopes.iter().take(2).map(|p| path_of(p)).collect();
                        rt.insert("type".into(), "path".into());
                        rt.insert("scopes".into(), scopes.clone().into());
                        RuleKind::Path(scopes)
                    }
                    Kind::Str(values) => {
                        rt.insert("type".into(), "string".into());
                        let values: Option<Vec<String>> = values.as_ref().map(|v| {
                            v.iter()
                                .take(3)
                                .map(|w| pick(&WORDS, *w).to_string())
                                .collect()
                        });
                        if let Some(v) = &values {
                            rt.insert("values".into(), v.clone().into());
                        }
                        RuleKind::Str(values)
                    }
                    Kind::Int(min, max) => {
                        rt.insert("type".into(), "integer".into());
                        if let Some(m) = min {
                            rt.insert("min".into(), (*m).into());
                        }
                        if let Some(m) = max {
                            rt.insert("max".into(), (*m).into());
                        }
                        RuleKind::Int(min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX))
                    }
                    Kind::Domain(d) => {
                        rt.insert("type".into(), "domain".into());
                        let d: Vec<String> = d
                            .iter()
                            .take(3)
                            .map(|h| pick(&HOSTS, *h).to_string())
                            .collect();
                        rt.insert("domains".into(), d.clone().into());
                        RuleKind::Domain(d)
                    }
                };
                args.insert(arg.into(), rt.into());
                rules.insert(
                    arg.to_string(),
                    Rule {
                        optional: s.optional,
                        kind,
                    },
                );
            }
            allow.insert(action.into(), args.into());
            reference.insert(
                (name.to_string(), action.to_string()),
                (role_destructive, rules),
            );
        }
        t.insert("allow".into(), allow.into());
        roles.insert(name.into(), t.into());
    }
    doc.insert("roles".into(), roles.into());
    (toml::to_string(&doc).expect("a table renders"), reference)
}

fuzz_target!(|input: Input| {
    let (text, reference) = render(&input);
    let Ok(policy) = compile(&text, "fuzz") else {
        return;
    };
    let operator = pick(&OPERATORS, input.operator);
    let held: Vec<String> = input
        .held
        .iter()
        .take(3)
        .map(|r| pick(&ROLES, *r).to_string())
        .collect();
    let action_index = input.action as usize % 3;
    let action = ACTIONS.get(action_index).copied().unwrap_or("undefined");
    let mut args = Map::new();
    for (n, v) in input.args.iter().take(4) {
        let v = match v {
            ArgValue::Path(p) => Value::from(path_of(p).replace("{operator}", operator)),
            ArgValue::Word(w) => Value::from(pick(&WORDS, *w).replace("{operator}", operator)),
            ArgValue::Int(i) => Value::from(*i),
            ArgValue::Host(h) => Value::from(pick(&HOSTS, *h)),
            ArgValue::Null => Value::Null,
        };
        args.insert(pick(&ARGS, *n).to_string(), v);
    }
    let Ok(allowed) = policy.evaluate(operator, &held, action, &args) else {
        return;
    };
    assert!(held.contains(&allowed.role));
    let a = &input.actions[action_index];
    let destructive_paths: Vec<String> = a
        .destructive_paths
        .iter()
        .take(2)
        .map(|p| path_of(p))
        .collect();
    let (role_destructive, rules) = reference
        .get(&(allowed.role.clone(), action.to_string()))
        .unwrap_or_else(|| panic!("{} does not list {action}\n{text}", allowed.role));
    assert!(
        reference_allows(
            *role_destructive,
            a.destructive,
            &destructive_paths,
            rules,
            operator,
            &args
        ),
        "agentd allowed what the reference denies\npolicy:\n{text}\noperator {operator}, roles {held:?}, action {action}, args {args:?}"
    );
});
