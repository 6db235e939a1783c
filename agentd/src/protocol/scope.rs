//! A v2 message's signed scope: the actions, and the argument patterns, its
//! tool calls may use. Pure: parsing, bounds, the canonical encoding's
//! pieces and matching. A call outside its message's scope is refused
//! (`outside_message_scope`) even where the operator's role would allow it.
//!
//! Pattern syntax (deliberately minimal): a pattern is an exact value, or,
//! when its last character is `*`, a prefix (every value starting with the
//! characters before the `*`). A `*` anywhere else, and control characters,
//! are refused, so no pattern is ambiguous.
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Most entries a scope may carry.
pub const MAX_SCOPE_ENTRIES: usize = 32;
/// Most argument patterns one entry may carry.
pub const MAX_SCOPE_ARGS: usize = 8;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest action or argument name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What is wrong with a scope; each is refused `invalid_scope`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// More entries than [`MAX_SCOPE_ENTRIES`].
    #[error("scope has {found} entries; the limit is {MAX_SCOPE_ENTRIES}")]
    TooManyEntries { found: usize },
    /// More argument patterns in one entry than [`MAX_SCOPE_ARGS`].
    #[error("scope entry {entry} has {found} argument patterns; the limit is {MAX_SCOPE_ARGS}")]
    TooManyArgs { entry: usize, found: usize },
    /// An action name outside its alphabet or length.
    #[error("scope entry {entry}: action `{action}` is not 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_.-]")]
    BadAction { entry: usize, action: String },
    /// An argument name outside its alphabet or length.
    #[error("scope entry {entry}: argument name `{name}` is not 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_]")]
    BadArgName { entry: usize, name: String },
    /// A pattern longer than [`MAX_PATTERN_LEN`].
    #[error("scope entry {entry}: the pattern of `{name}` is {len} bytes; the limit is {MAX_PATTERN_LEN}")]
    PatternTooLong {
        entry: usize,
        name: String,
        len: usize,
    },
    /// A `*` that is not the pattern's last character.
    #[error("scope entry {entry}: the pattern of `{name}` has a `*` before its end (only a trailing `*`, a prefix, is allowed)")]
    InteriorStar { entry: usize, name: String },
    /// A control character in a pattern.
    #[error("scope entry {entry}: the pattern of `{name}` contains a control character")]
    ControlCharacter { entry: usize, name: String },
}

/// One scope entry: an action, and patterns some of its arguments must
/// match (arguments not named are not constrained by the scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeEntry {
    /// The action (as in the policy).
    pub action: String,
    /// Argument name → pattern. Sorted by name (the canonical order);
    /// a name given twice in the JSON is refused.
    #[serde(default, deserialize_with = "unique_keys")]
    pub args: BTreeMap<String, String>,
}

/// A message's scope: the calls its tool calls may make. An empty scope
/// allows no call at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope {
    /// Entries in the order the operator signed them.
    pub entries: Vec<ScopeEntry>,
}

fn is_name(s: &str, extra: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
}

impl Scope {
    /// Bounds, names and pattern syntax.
    pub fn check(&self) -> Result<(), ScopeError> {
        if self.entries.len() > MAX_SCOPE_ENTRIES {
            return Err(ScopeError::TooManyEntries {
                found: self.entries.len(),
            });
        }
        for (entry, e) in self.entries.iter().enumerate() {
            if !is_name(&e.action, b".-") {
                return Err(ScopeError::BadAction {
                    entry,
                    action: e.action.chars().take(80).collect(),
                });
            }
            if e.args.len() > MAX_SCOPE_ARGS {
                return Err(ScopeError::TooManyArgs {
                    entry,
                    found: e.args.len(),
                });
            }
            for (name, pattern) in &e.args {
                check_arg(entry, name, pattern)?;
            }
        }
        Ok(())
    }

    /// Does some entry allow `action` with these argument values? `value`
    /// gives an argument's value as the policy decided it (a path argument
    /// normalised and resolved), or None when the call lacks it.
    pub fn allows<'v>(
        &self,
        action: &str,
        mut value: impl FnMut(&str) -> Option<ArgValue<'v>>,
    ) -> bool {
        self.entries.iter().any(|e| {
            e.action == action
                && e.args
                    .iter()
                    .all(|(name, pattern)| value(name).is_some_and(|v| v.matches(pattern)))
        })
    }
}

fn check_arg(entry: usize, name: &str, pattern: &str) -> Result<(), ScopeError> {
    if !is_name(name, b"") {
        return Err(ScopeError::BadArgName {
            entry,
            name: name.chars().take(80).collect(),
        });
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(ScopeError::PatternTooLong {
            entry,
            name: name.to_owned(),
            len: pattern.len(),
        });
    }
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err(ScopeError::InteriorStar {
            entry,
            name: name.to_owned(),
        });
    }
    if pattern.chars().any(char::is_control) {
        return Err(ScopeError::ControlCharacter {
            entry,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// True if `value` matches `pattern`: equal to it, or, for a pattern
/// ending in `*`, starting with the characters before the `*`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

/// An argument's value as a scope pattern sees it.
#[derive(Debug, Clone, Copy)]
pub enum ArgValue<'a> {
    /// A string (a path argument: its normalised, resolved form).
    Text(&'a str),
    /// Any other JSON value: a number or boolean matches as its JSON text;
    /// an array matches when every element does; anything else never.
    Json(&'a serde_json::Value),
}

impl ArgValue<'_> {
    fn matches(self, pattern: &str) -> bool {
        match self {
            ArgValue::Text(s) => pattern_matches(pattern, s),
            ArgValue::Json(v) => json_matches(pattern, v),
        }
    }
}

fn json_matches(pattern: &str, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => pattern_matches(pattern, s),
        Value::Number(n) => pattern_matches(pattern, &n.to_string()),
        Value::Bool(b) => pattern_matches(pattern, if *b { "true" } else { "false" }),
        // Nested arrays never match: every element must be a scalar.
        Value::Array(items) => items
            .iter()
            .all(|i| !matches!(i, Value::Array(_) | Value::Object(_)) && json_matches(pattern, i)),
        Value::Null | Value::Object(_) => false,
    }
}

/// Does `scope` name `path` for argument `arg` of `action`: some entry for
/// the action has a pattern for `arg` that `path` (normalised and resolved,
/// as the policy computed it) matches? For later checks that need the
/// operator's signed word for one object (a protected file): an unscoped
/// message (None) names nothing.
pub fn scope_names_path(scope: Option<&Scope>, action: &str, arg: &str, path: &str) -> bool {
    scope.is_some_and(|s| {
        s.entries.iter().any(|e| {
            e.action == action && e.args.get(arg).is_some_and(|p| pattern_matches(p, path))
        })
    })
}

/// The scope's part of the v2 canonical bytes, as fields (each then written
/// length-prefixed): the entry count in decimal, then per entry its action,
/// its argument count in decimal, and each argument's name and pattern in
/// ascending byte order of the names. None (an unscoped message) is the
/// single empty field.
pub fn canonical_fields(scope: Option<&Scope>) -> Vec<Vec<u8>> {
    let Some(scope) = scope else {
        return vec![Vec::new()];
    };
    let mut out = vec![scope.entries.len().to_string().into_bytes()];
    for e in &scope.entries {
        out.push(e.action.as_bytes().to_vec());
        out.push(e.args.len().to_string().into_bytes());
        for (name, pattern) in &e.args {
            out.push(name.as_bytes().to_vec());
            out.push(pattern.as_bytes().to_vec());
        }
    }
    out
}

/// Deserialises an object into a map, refusing a key given twice (JSON
/// parsers disagree on which duplicate wins; a signer's and agentd's
/// reading must not differ).
fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of argument name → pattern string")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "argument `{k}` appears twice in a scope entry"
                    )));
                }
                if out.len() >= MAX_SCOPE_ARGS {
                    return Err(serde::de::Error::custom(format!(
                        "a scope entry has more than {MAX_SCOPE_ARGS} argument patterns"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn scope(v: Value) -> Scope {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn exact_and_prefix_patterns() {
        assert!(pattern_matches("/srv/a", "/srv/a"));
        assert!(!pattern_matches("/srv/a", "/srv/ab"));
        assert!(!pattern_matches("/srv/a", "/srv/"));
        assert!(pattern_matches(
            "/srv/charts/patient-7*",
            "/srv/charts/patient-7/x"
        ));
        assert!(pattern_matches(
            "/srv/charts/patient-7*",
            "/srv/charts/patient-70"
        ));
        assert!(!pattern_matches(
            "/srv/charts/patient-7*",
            "/srv/charts/patient-8"
        ));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("*", "anything at all"));
        assert!(pattern_matches("", ""));
        assert!(!pattern_matches("", "x"));
        // Matching is by bytes of UTF-8: no case folding, no normalisation.
        assert!(!pattern_matches("/SRV*", "/srv/a"));
        assert!(!pattern_matches("é*", "e\u{301}"));
    }

    #[test]
    fn calls_match_by_action_and_every_named_argument() {
        let s = scope(json!([
            {"action": "read_chart", "args": {"path": "/srv/charts/patient-7*"}},
            {"action": "send_email", "args": {"to": "billing@vendor.example", "subject": "inv*"}},
            {"action": "list_files"}
        ]));
        s.check().unwrap();
        let args = json!({"path": "/srv/charts/patient-7/a.pdf", "to": "billing@vendor.example",
                          "subject": "invoice 7", "n": 42, "many": ["a1", "a2"], "deep": [["a"]]});
        let get = |n: &str| args.get(n).map(ArgValue::Json);
        assert!(s.allows("read_chart", get));
        assert!(s.allows("send_email", get));
        // An action without patterns allows any arguments; other actions none.
        assert!(s.allows("list_files", |_| None));
        assert!(!s.allows("run_command", get));
        // A named argument the call lacks does not match.
        assert!(!s.allows("read_chart", |_| None));
        let other = json!({"path": "/srv/charts/patient-8"});
        assert!(!s.allows("read_chart", |n| other.get(n).map(ArgValue::Json)));
        // Numbers match as JSON text, arrays element by element.
        let n = scope(json!([{"action": "a", "args": {"n": "4*", "many": "a*"}}]));
        assert!(n.allows("a", get));
        let bad = scope(json!([{"action": "a", "args": {"deep": "*"}}]));
        assert!(!bad.allows("a", get), "nested arrays never match");
        // An empty scope allows nothing.
        assert!(!Scope::default().allows("list_files", |_| None));
    }

    #[test]
    fn scope_names_path_for_later_checks() {
        let s = scope(json!([{"action": "write_file", "args": {"path": "/home/a/.profile"}}]));
        assert!(scope_names_path(
            Some(&s),
            "write_file",
            "path",
            "/home/a/.profile"
        ));
        assert!(!scope_names_path(
            Some(&s),
            "write_file",
            "path",
            "/home/a/.bashrc"
        ));
        assert!(!scope_names_path(
            Some(&s),
            "read_file",
            "path",
            "/home/a/.profile"
        ));
        assert!(!scope_names_path(
            Some(&s),
            "write_file",
            "dest",
            "/home/a/.profile"
        ));
        assert!(!scope_names_path(
            None,
            "write_file",
            "path",
            "/home/a/.profile"
        ));
    }

    #[test]
    fn hostile_scopes_are_refused_precisely() {
        let too_many: Vec<Value> = (0..=MAX_SCOPE_ENTRIES)
            .map(|_| json!({"action": "a"}))
            .collect();
        assert_eq!(
            scope(Value::Array(too_many)).check(),
            Err(ScopeError::TooManyEntries { found: 33 })
        );
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(matches!(
            scope(json!([{"action": "a", "args": {"p": long}}])).check(),
            Err(ScopeError::PatternTooLong { len: 1025, .. })
        ));
        assert!(matches!(
            scope(json!([{"action": "a", "args": {"p": "/srv/*/x"}}])).check(),
            Err(ScopeError::InteriorStar { .. })
        ));
        assert!(matches!(
            scope(json!([{"action": "a", "args": {"p": "**"}}])).check(),
            Err(ScopeError::InteriorStar { .. })
        ));
        assert!(matches!(
            scope(json!([{"action": "a", "args": {"p": "x\ny"}}])).check(),
            Err(ScopeError::ControlCharacter { .. })
        ));
        assert!(matches!(
            scope(json!([{"action": "a b"}])).check(),
            Err(ScopeError::BadAction { .. })
        ));
        assert!(matches!(
            scope(json!([{"action": ""}])).check(),
            Err(ScopeError::BadAction { .. })
        ));
        assert!(matches!(
            scope(json!([{"action": "a", "args": {"p-q": "x"}}])).check(),
            Err(ScopeError::BadArgName { .. })
        ));
        // Shape errors are the parser's: unknown fields, duplicates, non-strings.
        for bad in [
            r#"[{"action":"a","argz":{}}]"#,
            r#"[{"action":"a","args":{"p":"x","p":"y"}}]"#,
            r#"[{"action":"a","args":{"p":7}}]"#,
            r#"[{"args":{}}]"#,
            r#"{"action":"a"}"#,
        ] {
            assert!(serde_json::from_str::<Scope>(bad).is_err(), "{bad}");
        }
        let nine: serde_json::Map<String, Value> =
            (0..9).map(|i| (format!("a{i}"), json!("x"))).collect();
        let e =
            serde_json::from_value::<Scope>(json!([{"action": "a", "args": nine}])).unwrap_err();
        assert!(e.to_string().contains("more than 8"), "{e}");
    }

    #[test]
    fn canonical_fields_distinguish_absent_empty_and_entries() {
        assert_eq!(canonical_fields(None), vec![Vec::<u8>::new()]);
        assert_eq!(
            canonical_fields(Some(&Scope::default())),
            vec![b"0".to_vec()]
        );
        let s = scope(json!([{"action": "a", "args": {"z": "1", "b": "2*"}}]));
        let f: Vec<String> = canonical_fields(Some(&s))
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(f, ["1", "a", "2", "b", "2*", "z", "1"]);
    }
}
