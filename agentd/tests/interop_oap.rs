//! Open Agent Passport interop: OAP 1.0's conformance cases (transcribed
//! in tests/fixtures/oap/) decided by the policy a passport imports to, as
//! signed OAP decisions; decisions exported from a real audit log by
//! `agentctl oap decisions` and checked by `agentctl oap verify`; bad
//! passports refused with their place and nothing written.
use std::path::Path;

use agentd::audit::{AuditEvent, AuditLog, AuditOptions, Record, RecordKind};
use agentd::config::Durability;
use agentd::interop::denied_argument;
use agentd::interop::oap::{self, decision};
use serde_json::Value;

mod cli_support;
use cli_support::{agentctl, text};

#[derive(serde::Deserialize)]
struct Fixture {
    capability: String,
    passport: String,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    context: String,
    expected: String,
}

fn record(seq: u64, action: &str, decision: &str, reason: &str) -> Record {
    let mut event = AuditEvent::new(RecordKind::ToolCall, action);
    event.decision = decision.into();
    event.reason_code = reason.into();
    event.operator = "op".into();
    Record {
        seq,
        timestamp: "2024-01-15T10:30:00.000000Z".into(),
        event,
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064x}"),
    }
}

/// Every transcribed case: the passport passes the schema, imports, and
/// the imported policy decides the context as the expected decision says
/// (allow, and the OAP reason code), in a decision object that carries the
/// expected policy, agent, owner and assurance, verifies under our key,
/// and carries the passport's real digest.
#[test]
fn conformance_cases_decide_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oap");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut ran = 0;
    for file in ["payments.refunds.v1.toml", "data.export.v1.toml"] {
        let fx: Fixture =
            toml::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let passport = oap::parse(&fx.passport).expect("the conformance passport is schema-valid");
        let converted = oap::import(&passport, "agent").unwrap();
        let source = converted.to_toml(file, true).unwrap();
        let policy = agentd::policy::compile(&source, file).unwrap();
        let issuer = decision::Issuer {
            passport: &passport,
            digest: decision::passport_digest(&passport.document).unwrap(),
            key: &key,
            kid: "oap:owner:agentd-test".into(),
            expires_in: 3600,
            policy: None,
        };
        for (i, c) in fx.cases.iter().enumerate() {
            let expected: Value = serde_json::from_str(&c.expected).unwrap();
            let args: serde_json::Map<String, Value> = serde_json::from_str(&c.context).unwrap();
            let verdict = policy.evaluate("op", &["agent".into()], &fx.capability, &args);
            let (decided, reason, argument) = match &verdict {
                Ok(_) => ("allow", "ok", None),
                Err(d) => ("deny", d.reason, denied_argument(&d.detail)),
            };
            let r = record(i as u64 + 1, &fx.capability, decided, reason);
            let d = issuer.decision_naming(&r, argument).unwrap().unwrap();
            let name = format!("{file} {}", c.name);
            assert_eq!(
                Value::Bool(d.allow),
                expected["allow"],
                "{name}: {verdict:?}"
            );
            assert_eq!(
                d.reasons[0].code, expected["reasons"][0]["code"],
                "{name}: {verdict:?}"
            );
            for member in [
                "policy_id",
                "agent_id",
                "owner_id",
                "assurance_level",
                "expires_in",
            ] {
                let ours = serde_json::to_value(&d).unwrap()[member].clone();
                assert_eq!(ours, expected[member], "{name}: {member}");
            }
            let ours = serde_json::to_value(&d).unwrap();
            decision::verify(&ours, &key.verifying_key(), Some(&issuer.digest)).unwrap();
            // The expected decisions pass the decision format, but their
            // digest and signature are placeholders (docs/interop.md).
            decision::validate(&expected).unwrap();
            assert_ne!(
                expected["passport_digest"], ours["passport_digest"],
                "{name}"
            );
            assert!(decision::verify(&expected, &key.verifying_key(), None).is_err());
            ran += 1;
        }
    }
    assert_eq!(ran, 5);
}

/// The same cases through the CLI and the real gateway: `agentctl policy
/// import oap` writes the policy, `agentctl policy test` decides each
/// context as a signed operator's tool call.
#[test]
fn conformance_cases_through_agentctl_policy_test() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oap");
    for (file, expect) in [
        (
            "payments.refunds.v1.toml",
            [
                ("allow", "ok"),
                ("deny", "value_out_of_range"),
                ("deny", "value_not_allowed"),
            ]
            .as_slice(),
        ),
        (
            "data.export.v1.toml",
            [("allow", "ok"), ("deny", "value_not_allowed")].as_slice(),
        ),
    ] {
        let fx: Fixture =
            toml::from_str(&std::fs::read_to_string(fixtures.join(file)).unwrap()).unwrap();
        let passport = dir.path().join(format!("{file}.json"));
        std::fs::write(&passport, &fx.passport).unwrap();
        let policy = dir.path().join(format!("{file}.policy.toml"));
        let o = agentctl(&[
            "policy",
            "import",
            "oap",
            passport.to_str().unwrap(),
            "--out",
            policy.to_str().unwrap(),
            "--drop-unenforced",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let mut cases = String::from("[operators]\nop = [\"agent\"]\n");
        for (c, (decision, reason)) in fx.cases.iter().zip(expect) {
            let args: Value = serde_json::from_str(&c.context).unwrap();
            let args = toml::Value::try_from(&args).unwrap();
            cases.push_str(&format!(
                "\n[[case]]\nname = {:?}\noperator = \"op\"\naction = {:?}\nexpect = {decision:?}\nreason = {reason:?}\n[case.args]\n{}",
                c.name,
                fx.capability,
                toml::to_string(&args).unwrap()
            ));
        }
        let case_file = dir.path().join(format!("{file}.cases.toml"));
        std::fs::write(&case_file, &cases).unwrap();
        let o = agentctl(&[
            "policy",
            "test",
            policy.to_str().unwrap(),
            case_file.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{cases}\n{}", text(&o));
        assert!(
            text(&o).contains(&format!("{} passed, 0 failed", expect.len())),
            "{}",
            text(&o)
        );
    }
}

/// A control for the denials above: the same refund context within the
/// limits is allowed, and each limit moved past denies with the pack's
/// code.
#[test]
fn each_refund_limit_denies_with_its_code_and_the_control_allows() {
    let fx: Fixture = toml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/oap/payments.refunds.v1.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let passport = oap::parse(&fx.passport).unwrap();
    let source = oap::import(&passport, "agent")
        .unwrap()
        .to_toml("t", true)
        .unwrap();
    let policy = agentd::policy::compile(&source, "t").unwrap();
    let base: serde_json::Map<String, Value> = serde_json::from_str(&fx.cases[0].context).unwrap();
    let decide = |k: &str, v: Value| {
        let mut a = base.clone();
        if v.is_null() {
            a.remove(k);
        } else {
            a.insert(k.into(), v);
        }
        match policy.evaluate("op", &["agent".into()], "finance.payment.refund", &a) {
            Ok(_) => "oap.allowed".to_owned(),
            Err(d) => oap::packs::oap_code(
                "finance.payment.refund",
                d.reason,
                denied_argument(&d.detail),
            ),
        }
    };
    assert_eq!(decide("amount", 5000.into()), "oap.allowed");
    assert_eq!(decide("amount", 5001.into()), "oap.limit_exceeded");
    // EUR is in currency_limits, but the capability's params name USD only.
    assert_eq!(decide("currency", "EUR".into()), "oap.currency_unsupported");
    assert_eq!(decide("region", "JP".into()), "oap.region_blocked");
    assert_eq!(decide("reason_code", "whim".into()), "oap.invalid_reason");
    assert_eq!(
        decide("idempotency_key", Value::Null),
        "oap.invalid_context"
    );
    // An operator without the role: the capability is not granted.
    let r = policy.evaluate("op", &["other".into()], "finance.payment.refund", &base);
    assert_eq!(r.unwrap_err().reason, "role_not_in_allowlist");
}

fn make_log(state: &Path) {
    let log = AuditLog::open_with(
        state,
        AuditOptions {
            durability: Durability::Normal,
            checkpoint_interval: std::time::Duration::from_secs(3600),
        },
    )
    .unwrap();
    let args = |collection: &str, rows: u64| {
        serde_json::json!({"collection": collection, "estimated_rows": rows, "region": "US"})
            .to_string()
    };
    for (action, decision, reason, target) in [
        ("data.export", "allow", "ok", args("users", 10)),
        (
            "data.export",
            "deny",
            "value_out_of_range",
            args("users", 100_001),
        ),
        ("send_email", "deny", "role_not_in_allowlist", String::new()),
        (
            "data.export",
            "escalate",
            "approval_required",
            String::new(),
        ),
        (
            "data.export",
            "deny",
            "value_not_allowed",
            args("secrets", 10),
        ),
        // Arguments that the passport's policy refuses for another reason
        // than the row's: no argument is named.
        (
            "data.export",
            "deny",
            "value_not_allowed",
            args("users", 100_001),
        ),
    ] {
        let mut e = AuditEvent::new(RecordKind::ToolCall, action);
        e.target = target;
        e.decision = decision.into();
        e.reason_code = reason.into();
        e.operator = "alice".into();
        e.policy_id = "oap-x@0123456789ab".into();
        log.append_blocking(e).unwrap();
    }
    let mut k = AuditEvent::new(RecordKind::Kernel, "file_open");
    k.decision = "deny".into();
    k.reason_code = "no_grant".into();
    log.append_blocking(k).unwrap();
    log.shutdown().unwrap();
}

#[test]
fn decisions_export_from_the_audit_log_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    make_log(&state);
    let fx: Fixture = toml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oap/data.export.v1.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let passport = d.join("passport.json");
    std::fs::write(&passport, &fx.passport).unwrap();
    let key = d.join("oap.key");
    let o = agentctl(&["oap", "keygen", "--out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let jwks: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let o = agentctl(&["oap", "keygen", "--out", key.to_str().unwrap()]);
    assert!(!o.status.success(), "keygen overwrote a key");

    let out = d.join("decisions.jsonl");
    let o = agentctl(&[
        "oap",
        "decisions",
        "--state-dir",
        state.to_str().unwrap(),
        "--passport",
        passport.to_str().unwrap(),
        "--signing-key",
        key.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Five decided tool calls; the escalation and the kernel row are no
    // OAP decision.
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0]["allow"], true);
    assert_eq!(lines[0]["policy_id"], "data.export.create.v1");
    assert_eq!(lines[0]["reasons"][0]["code"], "oap.allowed");
    assert_eq!(lines[1]["allow"], false);
    assert_eq!(lines[1]["reasons"][0]["code"], "oap.limit_exceeded");
    assert_eq!(lines[2]["policy_id"], "agentd.send.email.v1");
    assert_eq!(lines[2]["reasons"][0]["code"], "oap.unknown_capability");
    // Re-decided from the row's arguments: the collection was refused.
    assert_eq!(lines[3]["reasons"][0]["code"], "oap.collection_forbidden");
    assert_eq!(lines[4]["reasons"][0]["code"], "agentd.value_not_allowed");
    let digest = decision::passport_digest(&serde_json::from_str(&fx.passport).unwrap()).unwrap();
    assert!(lines
        .iter()
        .all(|l| l["passport_digest"] == digest.as_str()));

    let public = format!("{}.pub", key.display());
    let verify = |file: &Path, passport: Option<&Path>| {
        let mut args = vec![
            "oap",
            "verify",
            file.to_str().unwrap(),
            "--public-key",
            &public,
        ];
        if let Some(p) = passport {
            args.extend(["--passport", p.to_str().unwrap()]);
        }
        agentctl(&args)
    };
    let o = verify(&out, Some(&passport));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("5 decisions verified"), "{}", text(&o));

    // Tampering with one decision: line 2 is named, nothing passes.
    let tampered = d.join("tampered.jsonl");
    let body = std::fs::read_to_string(&out).unwrap();
    let mut ls: Vec<String> = body.lines().map(str::to_owned).collect();
    ls[1] = ls[1].replace("\"allow\":false", "\"allow\":true");
    std::fs::write(&tampered, ls.join("\n")).unwrap();
    let o = verify(&tampered, None);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("tampered.jsonl:2: decision refused"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("signature does not verify"),
        "{}",
        text(&o)
    );

    // Another passport: the digest does not match.
    let mut other: Value = serde_json::from_str(&fx.passport).unwrap();
    other["version"] = "1.0.1".into();
    let other_path = d.join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let o = verify(&out, Some(&other_path));
    assert!(!o.status.success());
    assert!(text(&o).contains("passport_digest is"), "{}", text(&o));
}

/// An edit that breaks a passport.
type Change = Box<dyn Fn(&mut Value)>;

#[test]
fn bad_passports_are_refused_with_their_place_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let fx: Fixture = toml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oap/data.export.v1.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let good: Value = serde_json::from_str(&fx.passport).unwrap();
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|p| p["did"] = "did:web:x".into()),
            "/did: unknown member",
        ),
        (
            Box::new(|p| p["passport_id"] = "not-a-uuid".into()),
            "/passport_id: is not a UUID",
        ),
        (
            Box::new(|p| {
                p.as_object_mut().unwrap().remove("regions");
            }),
            "required member `regions` is missing",
        ),
        (
            Box::new(|p| p["regions"][1] = "Canada".into()),
            "/regions/1: does not match",
        ),
        (
            Box::new(|p| p["created_at"] = "2024-02-30T00:00:00Z".into()),
            "/created_at: is not an RFC 3339 date-time",
        ),
        (
            Box::new(|p| p["limits"]["data.export"]["max_rows"] = 0.into()),
            "/limits/data.export/max_rows: must be >= 1",
        ),
        (
            Box::new(|p| p["capabilities"][0]["id"] = "Data.Export".into()),
            "/capabilities/0/id: does not match",
        ),
        (
            Box::new(|p| p["capabilities"][0]["scope"] = "all".into()),
            "/capabilities/0/scope: unknown member",
        ),
        (
            Box::new(|p| p["spec_version"] = "oap/2.0".into()),
            "/spec_version: must be the constant",
        ),
        (
            Box::new(|p| p["status"] = "suspended".into()),
            "the passport is `suspended`",
        ),
        (
            Box::new(|p| {
                p["limits"]["messaging.send"] = serde_json::json!({"allowed_recipients": []})
            }),
            "/limits/messaging.send/allowed_recipients: matches both forms of oneOf",
        ),
    ];
    for (i, (change, want)) in cases.iter().enumerate() {
        let mut p = good.clone();
        change(&mut p);
        let f = dir.path().join(format!("p{i}.json"));
        let out = dir.path().join(format!("p{i}.toml"));
        std::fs::write(&f, p.to_string()).unwrap();
        let o = agentctl(&[
            "policy",
            "import",
            "oap",
            f.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{want}");
        assert!(text(&o).contains(want), "want {want:?} in {}", text(&o));
        assert!(!out.exists());
    }
    // A duplicate member (JSON parsers keep one or the other) is refused.
    let dup = good
        .to_string()
        .replacen("\"regions\":", "\"regions\":[\"US\"],\"regions\":", 1);
    let f = dir.path().join("dup.json");
    std::fs::write(&f, &dup).unwrap();
    let o = agentctl(&["policy", "import", "oap", f.to_str().unwrap()]);
    assert!(!o.status.success(), "{dup}");
    assert!(
        text(&o).contains("duplicate member `regions`"),
        "{}",
        text(&o)
    );
    // Control: the unchanged passport imports.
    let f = dir.path().join("good.json");
    let out = dir.path().join("good.toml");
    std::fs::write(&f, good.to_string()).unwrap();
    let o = agentctl(&[
        "policy",
        "import",
        "oap",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = agentctl(&["policy", "validate", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}
