//! Open Agent Passports on arbitrary bytes, as `agentctl policy import oap
//! PASSPORT.json` reads them: `interop::oap::parse` (JSON with duplicate
//! members refused, the passport schema's rules) then `import`.
//! Properties: parsing never panics; the document a parsed passport keeps
//! validates again and, serialized, parses to the same passport (the
//! digest covers what the importer read); only an active passport
//! imports; an imported policy always serializes and compiles; its one
//! role allows only the passport's capabilities, never one whose pack
//! needs more assurance than the passport has, never in a region the
//! passport does not list; no role held, no allow.
#![no_main]
use agentd::interop::oap::{self, packs, passport, ImportError, Passport};
use agentd::interop::EmitError;
use agentd::policy::compile;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const ROLE: &str = "agent";

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// Arguments worth trying: a few fixed ones, and for each capability one
/// built from its limits (each limit's value, or its list's first item).
fn calls(p: &Passport) -> Vec<Map<String, Value>> {
    let mut v = vec![
        json!({}),
        json!({"amount": 1, "currency": "USD", "region": "US", "reason_code": "customer_request"}),
        json!({"collection": "users", "include_pii": false, "estimated_rows": 10}),
        json!({"repo": "org.p", "branch": "main", "tag": "v1.0.0", "artifact_sha": "ab12", "signer": "ci@org"}),
    ];
    for limits in p.limits.values() {
        let args: Map<String, Value> = limits
            .iter()
            .map(|(k, l)| {
                let val = match l {
                    Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
                    other => other.clone(),
                };
                (k.clone(), val)
            })
            .collect();
        v.push(Value::Object(args));
    }
    v.into_iter()
        .filter_map(|c| c.as_object().cloned())
        .collect()
}

fn check_policy(p: &Passport, toml: &str) {
    let policy = compile(toml, "fuzz").expect("checked by to_toml");
    assert_eq!(policy.role_names(), [ROLE.to_owned()]);
    let mut actions: Vec<String> = p.capabilities.iter().map(|c| c.id.clone()).collect();
    actions.extend(p.limits.keys().cloned());
    actions.extend(packs::PACKS.iter().map(|k| k.capability.to_owned()));
    for action in &actions {
        for args in calls(p) {
            if policy
                .evaluate("fuzz-op", &[ROLE.into()], action, &args)
                .is_ok()
            {
                assert!(
                    p.capabilities.iter().any(|c| &c.id == action),
                    "allowed {action}, not a capability of the passport"
                );
                if let Some(pk) = packs::pack(action) {
                    assert!(
                        passport::assurance_rank(&p.assurance_level)
                            >= passport::assurance_rank(pk.min_assurance),
                        "allowed {action} below its pack's assurance"
                    );
                }
                if let Some(r) = args.get("region").and_then(Value::as_str) {
                    assert!(
                        p.regions.iter().any(|x| x == r),
                        "allowed {action} in region {r}, not one of the passport's"
                    );
                }
            }
            assert!(policy.evaluate("fuzz-op", &[], action, &args).is_err());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = oap::parse(text) else {
        return;
    };
    assert!(passport::validate(&p.document).is_ok());
    let again = oap::parse(&p.document.to_string()).expect("a parsed passport re-parses");
    // Floats may move by an ulp through text; everything else must not.
    if !has_float(&p.document) {
        assert_eq!(again, p);
    }
    match oap::import(&p, ROLE) {
        Err(ImportError::NotActive(s)) => assert_ne!(p.status, "active", "{s}"),
        Err(e) => panic!("role `{ROLE}` refused: {e}"),
        Ok(converted) => {
            assert_eq!(p.status, "active");
            match converted.to_toml("fuzz.json", false) {
                Ok(toml) => check_policy(&p, &toml),
                Err(EmitError::Unenforced(notes)) => assert!(!notes.is_empty()),
                Err(e) => panic!("an imported passport does not emit: {e}"),
            }
            let toml = converted
                .to_toml("fuzz.json", true)
                .unwrap_or_else(|e| panic!("an imported passport does not emit: {e}"));
            check_policy(&p, &toml);
        }
    }
});
