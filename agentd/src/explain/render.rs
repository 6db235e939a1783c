//! TOML text of the policy pieces a fix touches, in the style of the
//! shipped policies (one inline table per argument rule).
use std::collections::BTreeMap;

use crate::policy::schema::{ArgRule, GrantTemplate};

/// A TOML string literal.
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML table key (bare when it can be).
pub fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_owned()
    } else {
        quote(s)
    }
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One argument rule as an inline table, `type` first.
pub fn arg_rule(r: &ArgRule) -> String {
    let kind = serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut parts = vec![format!("type = {}", quote(&kind))];
    for (name, v) in [
        ("programs", &r.programs),
        ("scopes", &r.scopes),
        ("domains", &r.domains),
        ("addresses", &r.addresses),
        ("values", &r.values),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} = {}", list(v)));
        }
    }
    for (name, v) in [("max_bytes", r.max_bytes), ("max_items", r.max_items)] {
        if let Some(v) = v {
            parts.push(format!("{name} = {v}"));
        }
    }
    for (name, v) in [("min", r.min), ("max", r.max)] {
        if let Some(v) = v {
            parts.push(format!("{name} = {v}"));
        }
    }
    if r.optional {
        parts.push("optional = true".into());
    }
    format!("{{ {} }}", parts.join(", "))
}

/// `[roles.R.allow.A]` with every argument rule.
pub fn allow_table(role: &str, action: &str, rules: &BTreeMap<String, ArgRule>) -> String {
    let mut out = format!("[roles.{}.allow.{}]\n", key(role), key(action));
    for (n, r) in rules {
        out.push_str(&format!("{} = {}\n", key(n), arg_rule(r)));
    }
    out
}

/// A grant template as an inline table.
pub fn grant(g: &GrantTemplate) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("exec", &g.exec),
        ("read", &g.read),
        ("write", &g.write),
        ("connect", &g.connect),
    ] {
        if !v.is_empty() {
            parts.push(format!("{name} = {}", list(v)));
        }
    }
    parts.push(format!("ttl_secs = {}", g.ttl_secs));
    parts.push(format!("uses = {}", g.uses));
    if let Some(a) = &g.args {
        parts.push(format!("args = {}", list(a)));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// A profile section with one list.
pub fn profile(name: &str, lists: &[(&str, Vec<String>)]) -> String {
    let mut out = format!("[profiles.{}]\n", key(name));
    for (l, items) in lists {
        if !items.is_empty() {
            out.push_str(&format!("{l} = {}\n", list(items)));
        }
    }
    out
}
