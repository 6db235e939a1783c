//! AgentGate YAML policies on arbitrary bytes, as `agentctl policy import
//! agentgate FILE.yaml` reads them: `interop::agentgate::parse` then
//! `convert`. Properties: parsing and converting never panic; a converted
//! policy always serializes and compiles; it is never wider than its
//! source where agentd can say so: an action whose (first) rule does not
//! allow it, or blocks it with a zero count, is never allowed; with an
//! allow-list, only its targets are, never one on the rule's deny-list; a
//! deny-list alone is refused unless the caller accepts dropping it (then
//! its targets are allowed, as the note says); an action without a rule is allowed only when
//! `default_deny` is false; nothing outside AgentGate's actions is
//! allowed, and nothing without the role.
#![no_main]
use agentd::interop::agentgate::{self, Policy, Rule, ACTIONS};
use agentd::interop::EmitError;
use agentd::policy::{compile, CompiledPolicy};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ROLE: &str = "agent";

fn args(target: Option<&str>) -> Map<String, Value> {
    target
        .map(|t| Map::from_iter([("target".to_owned(), Value::String(t.to_owned()))]))
        .unwrap_or_default()
}

fn targets(p: &Policy) -> Vec<Option<&str>> {
    let mut t: Vec<Option<&str>> = vec![None, Some(""), Some("x"), Some("/etc/shadow")];
    for r in &p.rules {
        t.extend(r.allowed_targets.iter().map(|s| Some(s.as_str())));
        t.extend(r.denied_targets.iter().map(|s| Some(s.as_str())));
    }
    t
}

fn check_rule(r: &Rule, target: Option<&str>, strict: bool) {
    let what = format!("{} {target:?}", r.action);
    assert!(r.allowed, "{what}: allowed, the rule does not allow it");
    assert!(
        r.hard_deny_above != Some(0) && r.max_per_minute != Some(0),
        "{what}: allowed past a zero count"
    );
    if let Some(t) = target.filter(|_| strict || !r.allowed_targets.is_empty()) {
        assert!(
            !r.denied_targets.iter().any(|d| d == t),
            "{what}: allowed a denied target"
        );
    }
    if !r.allowed_targets.is_empty() {
        let t = target.unwrap_or_else(|| panic!("{what}: allowed without a target"));
        assert!(
            r.allowed_targets.iter().any(|a| a == t),
            "{what}: allowed an unlisted target"
        );
    }
}

/// `strict`: the policy was emitted without dropping any constraint agentd
/// cannot enforce (a deny-list without an allow-list is one: with the
/// caller's consent the targets it lists are allowed, as the note says).
fn check(p: &Policy, policy: &CompiledPolicy, strict: bool) {
    assert_eq!(policy.role_names(), [ROLE.to_owned()]);
    let targets = targets(p);
    for action in ACTIONS
        .iter()
        .copied()
        .chain(["shell.exec", "tool-use", "agent"])
    {
        let rule = p.rules.iter().find(|r| r.action == action);
        for &t in &targets {
            let a = args(t);
            if policy
                .evaluate("fuzz-op", &[ROLE.into()], action, &a)
                .is_ok()
            {
                assert!(
                    ACTIONS.contains(&action),
                    "allowed {action}, not an AgentGate action"
                );
                match rule {
                    Some(r) => check_rule(r, t, strict),
                    None => assert!(
                        !p.default_deny,
                        "{action}: allowed without a rule under default_deny"
                    ),
                }
            }
            assert!(policy.evaluate("fuzz-op", &[], action, &a).is_err());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = agentgate::parse(text) else {
        return;
    };
    let Ok(converted) = agentgate::convert(&p, ROLE) else {
        return; // a second rule for an action: refused with its place
    };
    match converted.to_toml("fuzz.yaml", false) {
        Ok(toml) => check(
            &p,
            &compile(&toml, "fuzz").expect("checked by to_toml"),
            true,
        ),
        Err(EmitError::Unenforced(notes)) => assert!(!notes.is_empty()),
        Err(e) => panic!("a converted policy does not emit: {e}"),
    }
    let toml = converted
        .to_toml("fuzz.yaml", true)
        .unwrap_or_else(|e| panic!("a converted policy does not emit: {e}"));
    let policy = compile(&toml, "fuzz").expect("checked by to_toml");
    check(&p, &policy, false);
});
