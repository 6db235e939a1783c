//! Delegation through a real `Gateway` on real SQLite: what the root
//! operator's fate does to its tokens, uses across a reopen, and the race
//! for a token's last use.
use std::sync::Arc;

use serde_json::json;

use crate::gateway::{unix_now, Caller, Gateway, Scope, Settings, ToolCallRequest};
use crate::protocol::delegation::{IssueRequest, RevokeRequest, ScopeMap};
use crate::protocol::{reason, SignedMessage};

const DEMO: &str = include_str!("../../../../policies/demo.toml");

fn open(dir: &std::path::Path) -> Gateway {
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
    g
}

fn charts() -> ScopeMap {
    [("read_chart".to_owned(), Default::default())].into()
}

/// Issues a token by `signer` (key `key`); returns (name, secret).
fn issue(g: &Gateway, signer: &str, key: &[u8], to: &str, uses: u32, n: u32) -> (String, Vec<u8>) {
    let now = unix_now();
    let req = IssueRequest::new_signed(
        key,
        signer,
        to,
        charts(),
        600,
        uses,
        &format!("nonce-issue-{n:06}"),
        now,
    );
    let i = g.issue_delegation(&req, now).unwrap();
    (i.delegation.id, hex::decode(i.secret).unwrap())
}

fn message(g: &Gateway, key: &[u8], principal: &str, n: u32) -> Result<String, &'static str> {
    let now = unix_now();
    let m = SignedMessage::new_signed(
        key,
        principal,
        &format!("dm:{n}"),
        &format!("nonce-msg-{n:08}"),
        now,
        "go",
    );
    g.ingest(&m, now)
        .map(|o| o.active_message_id)
        .map_err(|r| r.reason_code)
}

/// The reason a message is refused or delivered untrusted with (the demo
/// policy delivers messages that do not verify untrusted).
fn ingest_code(g: &Gateway, key: &[u8], principal: &str, n: u32) -> String {
    let now = unix_now();
    let m = SignedMessage::new_signed(
        key,
        principal,
        &format!("dm:{n}"),
        &format!("nonce-msg-{n:08}"),
        now,
        "go",
    );
    match g.ingest(&m, now) {
        Ok(o) => o.reason_code,
        Err(r) => r.reason_code.to_owned(),
    }
}

fn chart(id: &str) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: "read_chart".into(),
        tool_use_id: None,
        arguments: json!({"path": "/srv/charts/p1.json"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

#[test]
fn the_roots_rotation_revocation_and_suspension_reach_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let (t, secret) = issue(&g, "olivia", &key, "bob", 10, 1);
    let m = message(&g, &secret, &t, 1).unwrap();
    assert!(g.decide(&chart(&m), unix_now()).is_allow());
    // What MCP tools/list may show it: the token's actions only.
    let own = message(&g, &key, "olivia", 9).unwrap();
    assert!(g.message_may_use(&m, "read_chart") && !g.message_may_use(&m, "send_email"));
    assert!(g.message_may_use(&own, "send_email"));

    // Suspended: calls refused, no new tokens (the token's own included).
    g.suspend(Scope::Operator("olivia".into()), "drill", false, "test")
        .unwrap();
    assert_eq!(
        g.decide(&chart(&m), unix_now()).reason_code,
        reason::OPERATOR_SUSPENDED
    );
    let now = unix_now();
    let sub = IssueRequest::new_signed(
        &secret,
        &t,
        "carol",
        charts(),
        60,
        1,
        "nonce-issue-sub001",
        now,
    );
    assert_eq!(
        g.issue_delegation(&sub, now).unwrap_err().reason_code,
        reason::OPERATOR_SUSPENDED
    );
    g.resume(&Scope::Operator("olivia".into())).unwrap();
    assert!(g.decide(&chart(&m), unix_now()).is_allow());

    // Rotated: the token is dead, for new messages and old ones alike.
    let (_, new_key) = g.rotate_operator("olivia").unwrap();
    assert_eq!(ingest_code(&g, &secret, &t, 2), reason::DELEGATION_REVOKED);
    assert_eq!(
        g.decide(&chart(&m), unix_now()).reason_code,
        reason::SIGNATURE_MISMATCH
    );
    // A token issued under the new key works; revoking the operator ends it.
    let (t2, s2) = issue(&g, "olivia", &new_key, "bob", 10, 2);
    let m2 = message(&g, &s2, &t2, 3).unwrap();
    assert!(g.decide(&chart(&m2), unix_now()).is_allow());
    g.revoke_operator("olivia").unwrap();
    assert_eq!(
        g.decide(&chart(&m2), unix_now()).reason_code,
        reason::OPERATOR_REVOKED
    );
    assert_eq!(ingest_code(&g, &s2, &t2, 4), reason::OPERATOR_REVOKED);
}

#[tokio::test]
async fn uses_survive_a_reopen_and_revocation_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (t, m, sibling) = {
        let g = open(dir.path());
        let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
        let (t, secret) = issue(&g, "olivia", &key, "bob", 2, 1);
        let (sib, _) = issue(&g, "olivia", &key, "dave", 2, 2);
        let m = message(&g, &secret, &t, 1).unwrap();
        assert!(g.tool_call(&chart(&m), Caller::default()).await.is_allow());
        (t, m, sib)
    };
    let g = open(dir.path());
    let left = |g: &Gateway, id: &str| {
        g.list_delegations()
            .into_iter()
            .find(|d| d.id == id)
            .unwrap()
            .uses_left
    };
    assert_eq!(left(&g, &t), 1);
    assert!(g.tool_call(&chart(&m), Caller::default()).await.is_allow());
    assert_eq!(
        g.tool_call(&chart(&m), Caller::default()).await.reason_code,
        reason::DELEGATION_USED_UP
    );
    let unsigned = RevokeRequest {
        v: 1,
        id: sibling.clone(),
        by: None,
        nonce: None,
        timestamp: None,
        signature: None,
    };
    // An unsigned revocation is an administrator's only.
    assert_eq!(
        g.revoke_delegation(&unsigned, false, unix_now())
            .unwrap_err()
            .reason_code,
        reason::PERMISSION_DENIED
    );
    assert_eq!(
        g.revoke_delegation(&unsigned, true, unix_now())
            .unwrap()
            .tokens,
        vec![sibling.clone()]
    );
    drop(g);
    let g = open(dir.path());
    assert!(g
        .list_delegations()
        .iter()
        .any(|d| d.id == sibling && d.revoked));
    assert_eq!(left(&g, &t), 0);
}

#[test]
fn racing_calls_share_the_last_use_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(open(dir.path()));
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let (t, secret) = issue(&g, "olivia", &key, "bob", 3, 1);
    let m = message(&g, &secret, &t, 1).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (g, m) = (g.clone(), m.clone());
            std::thread::spawn(move || g.decide(&chart(&m), unix_now()))
        })
        .collect();
    let decisions: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(decisions.iter().filter(|d| d.is_allow()).count(), 3);
    assert!(decisions
        .iter()
        .filter(|d| !d.is_allow())
        .all(|d| d.reason_code == reason::DELEGATION_USED_UP));
}

#[test]
fn a_call_waiting_for_approval_ends_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let (t, secret) = issue(&g, "olivia", &key, "bob", 1, 1);
    let m = message(&g, &secret, &t, 1).unwrap();
    // Its one use spent by the call that waits: still vouched for.
    assert!(g.decide(&chart(&m), unix_now()).is_allow());
    assert!(g.still_vouched(&m, None, unix_now()).is_ok());
    let admin = RevokeRequest {
        v: 1,
        id: t.clone(),
        by: None,
        nonce: None,
        timestamp: None,
        signature: None,
    };
    g.revoke_delegation(&admin, true, unix_now()).unwrap();
    assert_eq!(
        g.still_vouched(&m, None, unix_now()).unwrap_err().0,
        reason::DELEGATION_REVOKED
    );
    // Past the token's lifetime likewise.
    let (t2, s2) = issue(&g, "olivia", &key, "carol", 1, 2);
    let m2 = message(&g, &s2, &t2, 2).unwrap();
    assert_eq!(
        g.still_vouched(&m2, None, unix_now() + 601).unwrap_err().0,
        reason::DELEGATION_EXPIRED
    );
}

#[tokio::test]
async fn a_tokens_calls_count_against_its_roots_usage_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let limited =
        format!("{DEMO}\n[roles.owner.limits.read_chart]\nmax_uses = 2\nwindow_secs = 3600\n");
    g.load_policy(&limited, "limited.toml").unwrap();
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let (t, secret) = issue(&g, "olivia", &key, "bob", 10, 1);
    let own = message(&g, &key, "olivia", 1).unwrap();
    let delegated = message(&g, &secret, &t, 2).unwrap();
    let c = Caller::default();
    assert!(g.tool_call(&chart(&own), c).await.is_allow());
    assert!(g.tool_call(&chart(&delegated), c).await.is_allow());
    // Delegating does not multiply the threshold: both are olivia's uses.
    for m in [&delegated, &own] {
        assert_eq!(
            g.tool_call(&chart(m), c).await.reason_code,
            reason::USAGE_THRESHOLD
        );
    }
    // A denial spends none of the token's uses.
    let left = g
        .list_delegations()
        .into_iter()
        .find(|d| d.id == t)
        .unwrap();
    assert_eq!(left.uses_left, 9);
}
