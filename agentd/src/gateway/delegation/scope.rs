//! A token's scope, pure: which actions, and which argument values (exact,
//! or a prefix ending in `*`). Narrowing between links and the check of one
//! call against one link.
use serde_json::{Map, Value};

use crate::protocol::delegation::ScopeMap;

/// One argument pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// The value must equal this.
    Exact(&'a str),
    /// The value must start with this (the pattern without its `*`).
    Prefix(&'a str),
}

impl<'a> Pattern<'a> {
    /// Reads a pattern (checked by `protocol::delegation::check_scope`).
    pub fn parse(p: &'a str) -> Self {
        match p.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix),
            None => Self::Exact(p),
        }
    }

    /// The value matches.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => v == *e,
            Self::Prefix(p) => v.starts_with(p),
        }
    }

    /// Every value this pattern matches, `parent` matches too.
    pub fn within(&self, parent: &Pattern<'_>) -> bool {
        match (self, parent) {
            (Self::Exact(v), p) => p.matches(v),
            (Self::Prefix(c), Pattern::Prefix(p)) => c.starts_with(p),
            (Self::Prefix(_), Pattern::Exact(_)) => false,
        }
    }
}

/// Ok if `child` allows nothing `parent` does not: every action of the
/// child is in the parent, and every argument the parent constrains the
/// child constrains within it. Else the first widening, in words.
pub fn within(child: &ScopeMap, parent: &ScopeMap) -> Result<(), String> {
    for (action, args) in child {
        let Some(pargs) = parent.get(action) else {
            return Err(format!("`{action}` is not in the issuer's scope"));
        };
        for (name, ppat) in pargs {
            let Some(cpat) = args.get(name) else {
                return Err(format!(
                    "`{action}` argument `{name}` is limited to `{ppat}` by the issuer; the request leaves it open"
                ));
            };
            if !Pattern::parse(cpat).within(&Pattern::parse(ppat)) {
                return Err(format!(
                    "`{action}` argument `{name}`: `{cpat}` reaches beyond the issuer's `{ppat}`"
                ));
            }
        }
    }
    Ok(())
}

/// Ok if the scope allows `action` with `args`; else why not.
pub fn permits(scope: &ScopeMap, action: &str, args: &Map<String, Value>) -> Result<(), String> {
    let Some(patterns) = scope.get(action) else {
        return Err(format!("`{action}` is not in the token's scope"));
    };
    for (name, pattern) in patterns {
        let value = match args.get(name) {
            Some(Value::String(v)) => v,
            Some(_) => {
                return Err(format!(
                    "argument `{name}` must be a string matching `{pattern}`"
                ))
            }
            None => {
                return Err(format!(
                    "argument `{name}` is missing; the token requires `{pattern}`"
                ))
            }
        };
        if !Pattern::parse(pattern).matches(value) {
            return Err(format!(
                "argument `{name}` = `{value}` does not match `{pattern}`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn scope(entries: &[(&str, &[(&str, &str)])]) -> ScopeMap {
        entries
            .iter()
            .map(|(a, args)| {
                let m: BTreeMap<String, String> = args
                    .iter()
                    .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                    .collect();
                ((*a).to_owned(), m)
            })
            .collect()
    }

    #[test]
    fn patterns_narrow_only() {
        let p = Pattern::parse;
        assert!(p("/x/a").within(&p("/x/*")));
        assert!(p("/x/a/*").within(&p("/x/*")));
        assert!(p("/x/*").within(&p("/x/*")));
        assert!(p("/x/a").within(&p("/x/a")));
        assert!(!p("/x/*").within(&p("/x/a")));
        assert!(!p("/*").within(&p("/x/*")));
        assert!(!p("/y").within(&p("/x/*")));
        assert!(p("*").matches(""));
    }

    #[test]
    fn scope_within_parent() {
        let parent = scope(&[
            ("read_chart", &[("path", "/srv/charts/*")]),
            ("send_email", &[]),
        ]);
        assert!(within(
            &scope(&[("read_chart", &[("path", "/srv/charts/p-1*")])]),
            &parent
        )
        .is_ok());
        assert!(within(
            &scope(&[("send_email", &[("to", "a@clinic.example")])]),
            &parent
        )
        .is_ok());
        let e = within(&scope(&[("shell", &[])]), &parent).unwrap_err();
        assert!(e.contains("`shell` is not in"), "{e}");
        let e = within(&scope(&[("read_chart", &[])]), &parent).unwrap_err();
        assert!(e.contains("leaves it open"), "{e}");
        let e = within(&scope(&[("read_chart", &[("path", "/srv/*")])]), &parent).unwrap_err();
        assert!(e.contains("reaches beyond"), "{e}");
    }

    #[test]
    fn permits_checks_action_and_every_pattern() {
        let s = scope(&[("read_chart", &[("path", "/srv/charts/p-*")])]);
        let args = |v: Value| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({ "path": v })).unwrap()
        };
        assert!(permits(&s, "read_chart", &args("/srv/charts/p-1".into())).is_ok());
        assert!(permits(&s, "read_chart", &args("/srv/charts/q".into())).is_err());
        assert!(permits(&s, "read_chart", &args(5.into())).is_err());
        assert!(permits(&s, "read_chart", &Map::new()).is_err());
        assert!(permits(&s, "send_email", &Map::new()).is_err());
    }
}
