//! The session checks (7c, 7d) through a real `Gateway`'s decision, with
//! the decision's clock passed in: read-only sessions and elevations,
//! admin actions, anomaly trips; each with its control.
use serde_json::json;

use super::session_state::Elevation;
use super::*;
use crate::protocol::{reason, SignedMessage};

const POLICY: &str = r#"
id = "sessions"
[sessions]
start = "read_only"
elevation_secs = 60
[actions.read_chart]
[actions.send_email]
[actions.deploy]
[actions.grant_access]
[actions.cleanup]
destructive_paths = ["/srv/old"]
effect = "read"
[roles.owner.allow.read_chart]
[roles.owner.allow.send_email]
[roles.owner.allow.deploy]
[roles.owner.allow.grant_access]
[roles.owner.allow.cleanup.path]
type = "path"
scopes = ["/srv"]
"#;

fn gateway(dir: &Path, policy: &str) -> (Gateway, Vec<u8>) {
    let g = Gateway::open(
        dir,
        Settings {
            timestamp_window_secs: 60,
            nonce_ttl_secs: 600,
            active_message_ttl_secs: 900,
            session_ttl_secs: 0,
            unverified_per_minute: 0,
        },
        None,
    )
    .unwrap();
    g.load_policy(policy, "t.toml").unwrap();
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    (g, key)
}

fn message(g: &Gateway, key: &[u8], session: &str, nonce: &str) -> String {
    let now = unix_now();
    g.ingest(
        &SignedMessage::new_signed(key, "olivia", session, nonce, now, "go"),
        now,
    )
    .unwrap()
    .active_message_id
}

fn call(id: &str, action: &str) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: action.into(),
        tool_use_id: None,
        arguments: Default::default(),
    }
}

fn outcome(d: &Decision) -> (&str, &str) {
    (d.decision.as_str(), d.reason_code.as_str())
}

#[test]
fn a_read_only_session_reads_asks_to_write_and_never_elevates_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (g, key) = gateway(dir.path(), POLICY);
    let m = message(&g, &key, "s1", "nonce-000000000001");
    let now = unix_now();
    assert_eq!(
        outcome(&g.decide(&call(&m, "read_chart"), now)),
        ("allow", "ok")
    );
    let d = g.decide(&call(&m, "send_email"), now);
    assert_eq!(outcome(&d), ("escalate", reason::ELEVATION_REQUIRED));
    assert!(d.sessions.elevation);
    assert_eq!(
        d.sessions.effect,
        Some(crate::policy::effect::Effect::Mutating)
    );
    assert!(d.detail.contains("class mutating"), "{}", d.detail);
    let d = g.decide(&call(&m, "grant_access"), now);
    assert_eq!(outcome(&d), ("deny", reason::ADMIN_NOT_ELEVATABLE));
    assert!(d.detail.contains("name keyword `grant`"), "{}", d.detail);
    // A read-class action made destructive by its path is not a read.
    let mut c = call(&m, "cleanup");
    c.arguments.insert("path".into(), json!("/srv/new/x"));
    assert_eq!(outcome(&g.decide(&c, now)), ("allow", "ok"));
    c.arguments.insert("path".into(), json!("/srv/old/x"));
    let d = g.decide(&c, now);
    assert_eq!(outcome(&d), ("escalate", reason::ELEVATION_REQUIRED));
    assert_eq!(
        d.sessions.effect,
        Some(crate::policy::effect::Effect::Destructive)
    );
}

#[test]
fn an_elevation_covers_its_action_in_its_session_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (g, key) = gateway(dir.path(), POLICY);
    let m = message(&g, &key, "s1", "nonce-000000000001");
    let other = message(&g, &key, "s2", "nonce-000000000002");
    let now = unix_now();
    g.session_states.elevate(
        "s1",
        Elevation {
            action: "send_email".into(),
            until: now + 60,
            approver: "uid:0".into(),
            operator: "olivia".into(),
            agent: String::new(),
        },
    );
    assert_eq!(
        outcome(&g.decide(&call(&m, "send_email"), now)),
        ("allow", "ok")
    );
    assert_eq!(
        outcome(&g.decide(&call(&m, "send_email"), now + 59)),
        ("allow", "ok")
    );
    // Another action, another session: they ask.
    let ask = ("escalate", reason::ELEVATION_REQUIRED);
    assert_eq!(outcome(&g.decide(&call(&m, "deploy"), now)), ask);
    assert_eq!(outcome(&g.decide(&call(&other, "send_email"), now)), ask);
    // Expired: it asks again.
    assert_eq!(outcome(&g.decide(&call(&m, "send_email"), now + 60)), ask);
    // Release ends it.
    g.session_states.elevate(
        "s1",
        Elevation {
            action: "send_email".into(),
            until: now + 60,
            approver: "uid:0".into(),
            operator: "olivia".into(),
            agent: String::new(),
        },
    );
    assert_eq!(g.release_session("s1").unwrap().as_deref(), Some("olivia"));
    assert!(g.session_states.views(now).is_empty());
}

#[test]
fn control_a_full_session_decides_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let full = POLICY.replace("start = \"read_only\"\n", "");
    let (g, key) = gateway(dir.path(), &full);
    let m = message(&g, &key, "s1", "nonce-000000000001");
    let now = unix_now();
    for a in ["read_chart", "send_email", "deploy", "grant_access"] {
        let d = g.decide(&call(&m, a), now);
        assert_eq!(outcome(&d), ("allow", "ok"), "{a}");
        assert!(!d.sessions.elevation);
    }
}

/// A full-session policy with an anomaly check.
fn anomaly_policy(then: &str) -> String {
    format!(
        "{}[anomaly]\nmin_calls = 5\nmax_denial_rate = 0.3\nmax_write_ratio = 0.8\nthen = \"{then}\"\n",
        POLICY.replace("start = \"read_only\"\n", "")
    )
}

#[test]
fn many_denials_trip_the_session_once_then_deny_and_other_sessions_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (g, key) = gateway(dir.path(), &anomaly_policy("deny"));
    let m = message(&g, &key, "s1", "nonce-000000000001");
    let other = message(&g, &key, "s2", "nonce-000000000002");
    let now = unix_now();
    for _ in 0..2 {
        assert_eq!(
            outcome(&g.decide(&call(&m, "read_chart"), now)),
            ("allow", "ok")
        );
    }
    for _ in 0..2 {
        let d = g.decide(&call(&m, "nope"), now);
        assert_eq!(d.reason_code, reason::UNKNOWN_ACTION);
        assert_eq!(d.sessions.tripped, None);
    }
    // The 5th call: 3 denials of 5 (60 % > 30 %) trips, once.
    let d = g.decide(&call(&m, "nope"), now);
    assert_eq!(
        d.sessions.tripped.as_deref(),
        Some("denials=3/5 (60%) threshold=30%")
    );
    let d = g.decide(&call(&m, "read_chart"), now);
    assert_eq!(outcome(&d), ("deny", reason::ANOMALY_DENIED));
    assert!(d.detail.contains("denials=3/5 (60%)"), "{}", d.detail);
    assert_eq!(d.sessions.tripped, None);
    // Control: another session of the same operator is not affected.
    assert_eq!(
        outcome(&g.decide(&call(&other, "read_chart"), now)),
        ("allow", "ok")
    );
    // Release resets it.
    g.release_session("s1").unwrap();
    let m = message(&g, &key, "s1", "nonce-000000000003");
    assert_eq!(
        outcome(&g.decide(&call(&m, "read_chart"), now)),
        ("allow", "ok")
    );
}

#[test]
fn many_writes_trip_to_approval_and_untrusted_calls_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let (g, key) = gateway(dir.path(), &anomaly_policy("approval"));
    let m = message(&g, &key, "s1", "nonce-000000000001");
    let now = unix_now();
    // Calls refused before the session check (an unknown message id) are
    // not the session's: they do not count.
    for _ in 0..10 {
        let d = g.decide(&call("00000000000000000000000000000000", "nope"), now);
        assert_eq!(d.reason_code, reason::UNKNOWN_ACTIVE_MESSAGE);
    }
    for i in 0..4 {
        let d = g.decide(&call(&m, "send_email"), now);
        assert_eq!(outcome(&d), ("allow", "ok"), "call {i}");
    }
    // 5 writes of 5 (100 % > 80 %): tripped by the 5th.
    let d = g.decide(&call(&m, "deploy"), now);
    assert_eq!(outcome(&d), ("allow", "ok"));
    assert_eq!(
        d.sessions.tripped.as_deref(),
        Some("writes=5/5 (100%) threshold=80%")
    );
    let d = g.decide(&call(&m, "read_chart"), now);
    assert_eq!(outcome(&d), ("escalate", reason::ANOMALY_ESCALATED));
    assert!(d.detail.contains("writes=5/5"), "{}", d.detail);
    // An approval resets the counts (the pipeline does this on approve).
    g.session_states.reset_anomaly("s1");
    assert_eq!(
        outcome(&g.decide(&call(&m, "read_chart"), now)),
        ("allow", "ok")
    );
}

#[test]
fn a_role_can_start_its_sessions_read_only_and_another_not() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
id = "by-role"
[actions.read_chart]
[actions.send_email]
[roles.owner.allow.read_chart]
[roles.owner.allow.send_email]
[roles.member]
session_start = "read_only"
[roles.member.allow.read_chart]
[roles.member.allow.send_email]
"#;
    let (g, key) = gateway(dir.path(), policy);
    let (_, chen) = g.add_operator("chen", &["member".into()]).unwrap();
    let now = unix_now();
    let m = g
        .ingest(
            &SignedMessage::new_signed(&chen, "chen", "s-chen", "nonce-000000000009", now, "go"),
            now,
        )
        .unwrap()
        .active_message_id;
    assert_eq!(
        outcome(&g.decide(&call(&m, "read_chart"), now)),
        ("allow", "ok")
    );
    let d = g.decide(&call(&m, "send_email"), now);
    assert_eq!(outcome(&d), ("escalate", reason::ELEVATION_REQUIRED));
    // Control: the owner's role starts full (the policy's default).
    let o = message(&g, &key, "s-olivia", "nonce-000000000010");
    assert_eq!(
        outcome(&g.decide(&call(&o, "send_email"), now)),
        ("allow", "ok")
    );
    assert_eq!(g.list_sessions().unwrap()[0].mode, "by_role");
    // A role's unknown mode is refused at load; the policy stays.
    let bad = policy.replace("session_start = \"read_only\"", "session_start = \"ro\"");
    let e = g.load_policy(&bad, "bad.toml").unwrap_err().to_string();
    assert!(e.contains("unknown variant `ro`"), "{e}");
    assert!(g.current_policy().unwrap().id.starts_with("by-role@"));
}
