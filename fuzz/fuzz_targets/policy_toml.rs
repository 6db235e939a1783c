//! Policy TOML on arbitrary text, as `agentctl policy validate` / `PUT
//! /v1/policy` hand it to `compile`. Properties: compiling never panics; a
//! compiled policy evaluates a spread of calls for every role without
//! panicking, answers an allow only for the role asked about, never allows
//! a caller holding no role, and decides the same call the same way twice.
//! (What an allow may contain is `policy_reference`'s property.)
#![no_main]
use agentd::policy::compile;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fn calls() -> Vec<Map<String, Value>> {
    let v = [
        json!({}),
        json!({"path": "/workspace/a", "command": "ls -la /workspace", "to": "a@example.com"}),
        json!({"path": "/etc/shadow"}),
        json!({"command": ["/usr/bin/rm", "-rf", "/"]}),
        json!({"host": "api.example.com", "n": 5, "text": "hello"}),
        json!({"mailbox": "alice", "value": {"k": [1, 2]}}),
    ];
    v.into_iter()
        .map(|c| c.as_object().cloned().unwrap_or_default())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = compile(text, "fuzz") else {
        return;
    };
    let roles = policy.role_names();
    // Action names worth trying: every word of the text that could be one.
    let mut actions: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .take(32)
        .collect();
    actions.push("shell");
    for action in actions {
        for args in calls() {
            for role in &roles {
                if let Ok(a) = policy.evaluate("fuzz-op", std::slice::from_ref(role), action, &args)
                {
                    assert_eq!(&a.role, role);
                    let again =
                        policy.evaluate("fuzz-op", std::slice::from_ref(role), action, &args);
                    assert_eq!(again, Ok(a));
                }
            }
            // No role held: never an allow.
            assert!(policy.evaluate("fuzz-op", &[], action, &args).is_err());
        }
    }
});
