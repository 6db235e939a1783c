//! v2 messages (audience and scope) through ingest and the decision, on a
//! real gateway store in a temporary state directory.
use std::sync::Arc;

use serde_json::json;

use super::resolve::{Lexical, PathResolver, ResolveError};
use super::*;
use crate::protocol::{reason, Scope, SignedMessage};

const DEMO: &str = include_str!("../../../policies/demo.toml");

fn open(dir: &Path) -> Gateway {
    let settings = Settings {
        timestamp_window_secs: 60,
        nonce_ttl_secs: 600,
        active_message_ttl_secs: 900,
        session_ttl_secs: 0,
        unverified_per_minute: 0,
    };
    let g = Gateway::open(dir, settings, None).unwrap();
    if g.current_policy().is_none() {
        g.load_policy(DEMO, "policies/demo.toml").unwrap();
    }
    g.set_host_id("ward-3");
    g
}

/// A signed v2 message from `op` (key `key`) with this audience and scope.
fn v2(
    key: &[u8],
    op: &str,
    nonce: &str,
    for_agent: Option<&str>,
    for_host: Option<&str>,
    scope: Option<serde_json::Value>,
) -> SignedMessage {
    let now = unix_now();
    let v1 = SignedMessage::new_signed(key, op, "s-v2", nonce, now, "read the chart");
    SignedMessage::new_signed_v2(
        key,
        &v1,
        for_agent.map(str::to_owned),
        for_host.map(str::to_owned),
        scope.map(|s| serde_json::from_value::<Scope>(s).unwrap()),
    )
}

fn call(id: &str, action: &str, args: serde_json::Value) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: action.into(),
        tool_use_id: None,
        arguments: args.as_object().unwrap().clone(),
    }
}

fn active_count(g: &Gateway) -> usize {
    g.store.active_messages(unix_now()).unwrap().len()
}

#[test]
fn wrong_host_is_refused_and_the_right_host_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let elsewhere = v2(
        &key,
        "olivia",
        "nonce-v2-00000001",
        None,
        Some("ward-4"),
        None,
    );
    let r = g.ingest(&elsewhere, now).unwrap_err();
    assert_eq!(r.reason_code, reason::MESSAGE_WRONG_HOST);
    assert!(
        r.message.contains("ward-4") && r.message.contains("ward-3"),
        "{r:?}"
    );
    assert_eq!(active_count(&g), 0, "nothing stored");
    // Its nonce was not spent: the same message re-addressed would need a
    // new signature, but a correct one with that nonce is accepted.
    let here = v2(
        &key,
        "olivia",
        "nonce-v2-00000001",
        None,
        Some("ward-3"),
        None,
    );
    assert_eq!(g.ingest(&here, now).unwrap().trust, Trust::Verified);
    // A re-addressed message (host edited after signing) does not verify.
    let mut edited = v2(
        &key,
        "olivia",
        "nonce-v2-00000002",
        None,
        Some("ward-4"),
        None,
    );
    edited.for_host = Some("ward-3".into());
    // (the demo policy delivers it untrusted: no tool rights).
    let out = g.ingest(&edited, now).unwrap();
    assert_eq!(
        (out.trust, out.reason_code.as_str()),
        (Trust::Untrusted, reason::SIGNATURE_MISMATCH)
    );
}

#[tokio::test]
async fn a_message_for_one_agent_is_refused_to_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.set_agent_resolver(Arc::new(ByPid));
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let msg = v2(&key, "olivia", "nonce-v2-00000010", Some("a"), None, None);
    let id = g.ingest(&msg, now).unwrap().active_message_id;
    let req = call(&id, "shell", json!({"command": "ls /workspace"}));
    // Agent b (or a plain user) learned the id first: refused, precisely.
    let stolen = g.tool_call(&req, agent(2)).await;
    assert_eq!(
        stolen.reason_code,
        reason::MESSAGE_OTHER_AUDIENCE,
        "{stolen:?}"
    );
    let user = g.tool_call(&req, agent(9)).await;
    assert_eq!(user.reason_code, reason::MESSAGE_OTHER_AUDIENCE);
    // Control: agent a's call is allowed.
    assert!(g.tool_call(&req, agent(1)).await.is_allow());
    // The audience is stored: after a restart b is still refused.
    drop(g);
    let g = open(dir.path());
    g.set_agent_resolver(Arc::new(ByPid));
    let again = g.tool_call(&req, agent(2)).await;
    assert_eq!(again.reason_code, reason::MESSAGE_OTHER_AUDIENCE);
    assert!(g.tool_call(&req, agent(1)).await.is_allow());
}

#[tokio::test]
async fn an_inbox_refuses_a_message_for_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let msg = v2(&key, "olivia", "nonce-v2-00000020", Some("a"), None, None);
    let r = g.submit_message_to_agent(&msg, "b").await.unwrap_err();
    assert_eq!(r.reason_code, reason::MESSAGE_OTHER_AUDIENCE);
    assert_eq!(active_count(&g), 0);
    // Control: the same message in a's inbox.
    assert!(g.submit_message_to_agent(&msg, "a").await.is_ok());
}

#[tokio::test]
async fn a_message_for_a_suspended_agent_is_refused_at_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    g.suspend(suspend::Scope::Agent("a".into()), "runaway", false, "root")
        .unwrap();
    let msg = v2(&key, "olivia", "nonce-v2-00000070", Some("a"), None, None);
    let r = g.submit_message(&msg).await.unwrap_err();
    assert_eq!(r.reason_code, reason::AGENT_SUSPENDED);
    assert_eq!(active_count(&g), 0);
    // Control: a message for another agent.
    let msg = v2(&key, "olivia", "nonce-v2-00000071", Some("b"), None, None);
    assert!(g.submit_message(&msg).await.is_ok());
}

#[test]
fn v1_is_refused_only_where_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let v1 = SignedMessage::new_signed(&key, "olivia", "s-v1", "nonce-v1-00000001", now, "hi");
    // Control: the demo policy accepts v1.
    g.ingest(&v1, now).unwrap();
    let strict = DEMO.replacen("v1 = \"accept\"", "v1 = \"refuse\"", 1);
    assert_ne!(strict, DEMO);
    g.load_policy(&strict, "strict.toml").unwrap();
    let v1b = SignedMessage::new_signed(&key, "olivia", "s-v1", "nonce-v1-00000002", now, "hi");
    let before = active_count(&g);
    let r = g.ingest(&v1b, now).unwrap_err();
    assert_eq!(r.reason_code, reason::MESSAGE_VERSION_REFUSED);
    assert_eq!(active_count(&g), before, "nothing stored");
    // A v2 message (even unscoped) is accepted.
    let m = v2(&key, "olivia", "nonce-v2-00000030", None, None, None);
    g.ingest(&m, now).unwrap();
    // A forged v1 message is still judged by its signature first.
    let forged =
        SignedMessage::new_signed(b"wrong", "olivia", "s-v1", "nonce-v1-00000003", now, "x");
    let out = g.ingest(&forged, now).unwrap();
    assert_eq!(out.reason_code, reason::SIGNATURE_MISMATCH);
    assert_eq!(out.trust, Trust::Untrusted);
}

#[test]
fn bad_scopes_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let entries: Vec<_> = (0..33).map(|_| json!({"action": "read_chart"})).collect();
    for (scope, says) in [
        (json!(entries), "33 entries"),
        (
            json!([{"action": "read_chart", "args": {"path": "/srv/*/x"}}]),
            "`*` before its end",
        ),
        (json!([{"action": "read chart"}]), "action `read chart`"),
    ] {
        let m = v2(&key, "olivia", "nonce-v2-00000040", None, None, Some(scope));
        let r = g.ingest(&m, now).unwrap_err();
        assert_eq!(r.reason_code, reason::INVALID_SCOPE);
        assert_eq!(r.class, RefusalClass::Malformed);
        assert!(r.message.contains(says), "{}", r.message);
    }
    assert_eq!(active_count(&g), 0);
    // The nonce was never spent: a good message with it is accepted.
    let good = v2(
        &key,
        "olivia",
        "nonce-v2-00000040",
        None,
        None,
        Some(json!([])),
    );
    g.ingest(&good, now).unwrap();
    // v2 fields in a v1 message are refused as unsigned fields.
    let mut v1 = SignedMessage::new_signed(&key, "olivia", "s", "nonce-v1-00000041", now, "x");
    v1.for_agent = Some("a".into());
    assert_eq!(g.ingest(&v1, now).unwrap_err().reason_code, "unknown_field");
}

/// Resolves `/srv/charts/patient-7-link` to `/srv/charts/patient-8.json`
/// (a symlink planted under patient 7's prefix).
struct Planted;

impl PathResolver for Planted {
    fn resolve(&self, path: &str) -> Result<String, ResolveError> {
        Ok(match path {
            "/srv/charts/patient-7-link" => "/srv/charts/patient-8.json".to_owned(),
            p => p.to_owned(),
        })
    }
}

#[test]
fn calls_outside_the_signed_scope_are_denied_though_the_role_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let scope = json!([{"action": "read_chart", "args": {"path": "/srv/charts/patient-7*"}}]);
    let m = v2(&key, "olivia", "nonce-v2-00000050", None, None, Some(scope));
    let id = g.ingest(&m, now).unwrap().active_message_id;
    let decide = |action: &str, args: serde_json::Value, r: &dyn PathResolver| {
        g.decide_with(&call(&id, action, args), now, r, None)
    };
    // In scope.
    let d = decide(
        "read_chart",
        json!({"path": "/srv/charts/patient-7/a.json"}),
        &Lexical,
    );
    assert!(d.is_allow(), "{d:?}");
    // The owner may read any chart and run ls, but the message says patient 7.
    let d = decide(
        "read_chart",
        json!({"path": "/srv/charts/patient-8.json"}),
        &Lexical,
    );
    assert_eq!(d.reason_code, reason::OUTSIDE_MESSAGE_SCOPE);
    assert!(d.detail.contains("read_chart"), "{}", d.detail);
    let d = decide("shell", json!({"command": "ls /workspace"}), &Lexical);
    assert_eq!(d.reason_code, reason::OUTSIDE_MESSAGE_SCOPE);
    // The pattern sees the normalised path, never the raw text ...
    let d = decide(
        "read_chart",
        json!({"path": "/srv/charts//patient-7/./a.json"}),
        &Lexical,
    );
    assert!(d.is_allow(), "{d:?}");
    // ... and the resolved one: a link under patient-7's prefix to patient 8.
    let link = json!({"path": "/srv/charts/patient-7-link"});
    assert!(
        decide("read_chart", link.clone(), &Lexical).is_allow(),
        "as written, in scope"
    );
    let d = decide("read_chart", link, &Planted);
    assert_eq!(
        d.reason_code,
        reason::OUTSIDE_MESSAGE_SCOPE,
        "as resolved, patient 8: {d:?}"
    );
    // The policy still decides first: out of the role's scope stays its code.
    let d = decide("read_chart", json!({"path": "/etc/passwd"}), &Lexical);
    assert_eq!(d.reason_code, reason::PATH_OUTSIDE_SCOPE);
    // Control: an unscoped message of the same operator allows them.
    let plain = v2(&key, "olivia", "nonce-v2-00000051", None, None, None);
    let pid = g.ingest(&plain, now).unwrap().active_message_id;
    let d = g.decide(
        &call(&pid, "shell", json!({"command": "ls /workspace"})),
        now,
    );
    assert!(d.is_allow(), "{d:?}");
    // The active message exposes its scope to later checks.
    let active = g.active.read().unwrap()[&ingest::parse_active_id(&id).unwrap()].clone();
    assert!(crate::protocol::scope_names_path(
        active.scope.as_ref(),
        "read_chart",
        "path",
        "/srv/charts/patient-7/a.json"
    ));
}

#[test]
fn an_out_of_scope_call_spends_no_rate_token() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let low = DEMO.replacen("rate_per_minute = 120", "rate_per_minute = 1", 1);
    assert_ne!(low, DEMO);
    g.load_policy(&low, "low.toml").unwrap();
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let m = v2(
        &key,
        "olivia",
        "nonce-v2-00000060",
        None,
        None,
        Some(json!([{"action": "shell"}])),
    );
    let id = g.ingest(&m, now).unwrap().active_message_id;
    for _ in 0..3 {
        let d = g.decide(
            &call(&id, "read_chart", json!({"path": "/srv/charts/p.json"})),
            now,
        );
        assert_eq!(d.reason_code, reason::OUTSIDE_MESSAGE_SCOPE);
    }
    let d = g.decide(
        &call(&id, "shell", json!({"command": "ls /workspace"})),
        now,
    );
    assert!(d.is_allow(), "the one token is still there: {d:?}");
}

struct ByPid;

impl AgentResolver for ByPid {
    fn agent_of_pid(&self, pid: u32) -> Option<String> {
        match pid {
            1 => Some("a".into()),
            2 => Some("b".into()),
            _ => None,
        }
    }
}

fn agent(pid: u32) -> Caller {
    Caller {
        pid: Some(pid),
        uid: Some(1000),
        gid: Some(1000),
        admin: false,
    }
}
