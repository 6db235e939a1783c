//! Protected files at the gateway: the policy step (check 7c) and the
//! approval that may give a protected write (an owner-signed one).
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::policy::approval::Answer;
use crate::policy::owner_approval;
use crate::protocol::{reason, SignedMessage};

const POLICY: &str = r#"
id = "protect-test"

[protected]
paths = ["/w/SOUL.md", "/w/.agent", "{workspace}/RULES.md"]

[roles.owner]
[roles.member]
[roles.lead]
owner = true

[actions.write_file]
grant = { write = ["{arg.path}"], ttl_secs = 30, uses = 1 }

[actions.edit_identity]
approval = "required"
grant = { write = ["{arg.path}"], ttl_secs = 30, uses = 1 }

[roles.owner.allow.write_file.path]
type = "path"
scopes = ["/w"]
[roles.owner.allow.edit_identity.path]
type = "path"
scopes = ["/w"]
[roles.member.allow.write_file.path]
type = "path"
scopes = ["/w"]
[roles.member.allow.edit_identity.path]
type = "path"
scopes = ["/w"]
"#;

fn gateway(dir: &std::path::Path) -> Arc<Gateway> {
    let settings = Settings {
        timestamp_window_secs: 60,
        nonce_ttl_secs: 600,
        active_message_ttl_secs: 900,
        session_ttl_secs: 0,
        unverified_per_minute: 0,
    };
    let g = Gateway::open(dir, settings, None).unwrap();
    g.load_policy(POLICY, "protect-test").unwrap();
    Arc::new(g)
}

/// Enrols `op` with `role` and returns (key, an active message of theirs).
fn message(g: &Gateway, op: &str, role: &str, n: u32) -> (Vec<u8>, String) {
    let (_, key) = g.add_operator(op, &[role.into()]).unwrap();
    let now = unix_now();
    let msg = SignedMessage::new_signed(
        &key,
        op,
        &format!("s-{op}"),
        &format!("nonce-protect-{n:06}"),
        now,
        "edit it",
    );
    (key, g.ingest(&msg, now).unwrap().active_message_id)
}

fn write(id: &str, action: &str, path: &str) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: action.into(),
        tool_use_id: None,
        arguments: json!({ "path": path }).as_object().unwrap().clone(),
    }
}

#[test]
fn a_call_naming_a_protected_file_for_writing_is_refused_before_any_grant() {
    let dir = tempfile::tempdir().unwrap();
    let g = gateway(dir.path());
    let (_, member) = message(&g, "mo", "member", 1);
    let (_, owner) = message(&g, "olivia", "owner", 2);
    let now = unix_now();
    // Control: an ordinary file in the same scope.
    let d = g.decide(&write(&member, "write_file", "/w/notes.txt"), now);
    assert!(d.is_allow(), "{d:?}");
    assert!(d.grant.unwrap().protected_write.is_empty());
    for (id, path) in [
        (&member, "/w/SOUL.md"),
        (&member, "/w/.agent/hooks.sh"),
        // An owner too, without a signed scope naming the file.
        (&owner, "/w/SOUL.md"),
    ] {
        let d = g.decide(&write(id, "write_file", path), now);
        assert_eq!(d.reason_code, reason::PROTECTED_FILE, "{path}: {d:?}");
        assert!(d.grant.is_none());
        assert!(d.detail.contains(path), "{}", d.detail);
    }
    // A placeholder entry applies once an agent's value is published.
    let d = g.decide(&write(&member, "write_file", "/w/RULES.md"), now);
    assert!(d.is_allow(), "no agent has {{workspace}} = /w yet");
    g.set_agent_protected(vec![PathBuf::from("/w/RULES.md")]);
    let d = g.decide(&write(&member, "write_file", "/w/RULES.md"), now);
    assert_eq!(d.reason_code, reason::PROTECTED_FILE);
    // `owner = true` makes a role an owner as the name `owner` does.
    let p = g.current_policy().unwrap();
    assert!(p.is_owner(&["lead".into()]) && p.is_owner(&["owner".into()]));
    assert!(!p.is_owner(&["member".into()]));
}

#[tokio::test]
async fn only_an_owner_signed_approval_gives_the_protected_write() {
    let dir = tempfile::tempdir().unwrap();
    let g = gateway(dir.path());
    let settings = approvals::ApprovalSettings {
        timeout_secs: 30,
        max_pending: 4,
        webhook: None,
    };
    g.attach_approvals(Arc::new(
        approvals::Approvals::open(dir.path(), settings, None)
            .unwrap()
            .0,
    ));
    let (_, member) = message(&g, "mo", "member", 3);
    let (owner_key, _) = message(&g, "olivia", "owner", 4);
    let q = g.approvals().unwrap();
    let wait = |g: &Arc<Gateway>| {
        let (g2, req) = (g.clone(), write(&member, "edit_identity", "/w/SOUL.md"));
        tokio::spawn(async move { g2.tool_call(&req, Caller::default()).await })
    };
    let pending = |q: Arc<approvals::Approvals>| async move {
        for _ in 0..500 {
            if let Some(p) = q.list().into_iter().next() {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("nothing became pending");
    };
    // An admin's approval approves the call but gives no protected write.
    let task = wait(&g);
    let p = pending(q.clone()).await;
    let admin = approvals::Answered {
        answer: Answer::Approve,
        approver: "uid:0".into(),
        channel: approvals::Channel::Api,
        reason: String::new(),
        owner: None,
    };
    q.answer(&p.id, admin.clone()).await.unwrap();
    let d = task.await.unwrap();
    assert_eq!(d.reason_code, reason::PROTECTED_FILE_NEEDS_OWNER, "{d:?}");
    assert!(d.grant.is_none());
    // An owner's signed approval does.
    let task = wait(&g);
    let p = pending(q.clone()).await;
    let now = unix_now();
    let sig = owner_approval::sign(
        &owner_key,
        "olivia",
        &p.id,
        Answer::Approve,
        now,
        "nonce-approve-000001",
    );
    let who = g
        .verify_owner_answer(&sig, &p.id, Answer::Approve, now)
        .unwrap();
    assert_eq!(who, "olivia");
    q.answer(
        &p.id,
        approvals::Answered {
            owner: Some(who),
            ..admin
        },
    )
    .await
    .unwrap();
    let d = task.await.unwrap();
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(
        d.grant.unwrap().protected_write,
        [PathBuf::from("/w/SOUL.md")]
    );
}

#[test]
fn an_owner_signature_is_checked_against_key_role_window_and_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let g = gateway(dir.path());
    let (owner_key, _) = message(&g, "olivia", "owner", 5);
    let (member_key, _) = message(&g, "mo", "member", 6);
    let now = unix_now();
    let sign = |key: &[u8], op: &str, ts: i64, nonce: &str| {
        owner_approval::sign(key, op, "abc", Answer::Approve, ts, nonce)
    };
    let code = |r: Result<String, (&'static str, String)>| r.map_err(|e| e.0);
    let ok = sign(&owner_key, "olivia", now, "nonce-sig-00000001");
    assert_eq!(
        code(g.verify_owner_answer(&ok, "abc", Answer::Approve, now)),
        Ok("olivia".into())
    );
    // The same nonce again: replayed.
    assert_eq!(
        code(g.verify_owner_answer(&ok, "abc", Answer::Approve, now)),
        Err(reason::APPROVAL_SIGNATURE_INVALID)
    );
    // Signed for another approval, or another answer.
    let s = sign(&owner_key, "olivia", now, "nonce-sig-00000002");
    assert_eq!(
        code(g.verify_owner_answer(&s, "abd", Answer::Approve, now)),
        Err(reason::APPROVAL_SIGNATURE_INVALID)
    );
    assert_eq!(
        code(g.verify_owner_answer(&s, "abc", Answer::Deny, now)),
        Err(reason::APPROVAL_SIGNATURE_INVALID)
    );
    // Another operator's key under olivia's name.
    let s = sign(&member_key, "olivia", now, "nonce-sig-00000003");
    assert_eq!(
        code(g.verify_owner_answer(&s, "abc", Answer::Approve, now)),
        Err(reason::APPROVAL_SIGNATURE_INVALID)
    );
    // Stale.
    let s = sign(&owner_key, "olivia", now - 600, "nonce-sig-00000004");
    assert_eq!(
        code(g.verify_owner_answer(&s, "abc", Answer::Approve, now)),
        Err(reason::APPROVAL_SIGNATURE_INVALID)
    );
    // A valid signature by an operator with no owner role.
    let s = sign(&member_key, "mo", now, "nonce-sig-00000005");
    assert_eq!(
        code(g.verify_owner_answer(&s, "abc", Answer::Approve, now)),
        Err(reason::APPROVAL_SIGNER_NOT_OWNER)
    );
}

/// A v2 message of `op` whose signed scope is `scope`.
fn scoped(g: &Gateway, key: &[u8], op: &str, nonce: &str, scope: serde_json::Value) -> String {
    let now = unix_now();
    let v1 = SignedMessage::new_signed(key, op, &format!("s-{op}"), nonce, now, "edit it");
    let scope = serde_json::from_value::<crate::protocol::Scope>(scope).unwrap();
    let msg = SignedMessage::new_signed_v2(key, &v1, None, None, Some(scope));
    g.ingest(&msg, now).unwrap().active_message_id
}

#[test]
fn an_owners_signed_scope_naming_the_file_gives_the_protected_write() {
    let dir = tempfile::tempdir().unwrap();
    let g = gateway(dir.path());
    let (owner_key, _) = message(&g, "olivia", "owner", 7);
    let (member_key, _) = message(&g, "mo", "member", 8);
    let now = unix_now();
    let exact = json!([{"action": "write_file", "args": {"path": "/w/SOUL.md"}}]);
    let id = scoped(
        &g,
        &owner_key,
        "olivia",
        "nonce-scope-0000001",
        exact.clone(),
    );
    let d = g.decide(&write(&id, "write_file", "/w/SOUL.md"), now);
    assert!(d.is_allow(), "{d:?}");
    let grant = d.grant.unwrap();
    assert_eq!(grant.protected_write, [PathBuf::from("/w/SOUL.md")]);
    assert_eq!(grant.write, [PathBuf::from("/w/SOUL.md")]);
    // A prefix pattern covers the file but does not name it.
    let prefix = json!([{"action": "write_file", "args": {"path": "/w/*"}}]);
    let id = scoped(&g, &owner_key, "olivia", "nonce-scope-0000002", prefix);
    let d = g.decide(&write(&id, "write_file", "/w/SOUL.md"), now);
    assert_eq!(d.reason_code, reason::PROTECTED_FILE, "{d:?}");
    // Control: the same prefix scope writes an ordinary file.
    let d = g.decide(&write(&id, "write_file", "/w/notes.txt"), now);
    assert!(d.is_allow(), "{d:?}");
    // A member naming the file exactly is no owner.
    let id = scoped(&g, &member_key, "mo", "nonce-scope-0000003", exact);
    let d = g.decide(&write(&id, "write_file", "/w/SOUL.md"), now);
    assert_eq!(d.reason_code, reason::PROTECTED_FILE, "{d:?}");
    assert!(d.detail.contains("no owner role"), "{}", d.detail);
}

#[test]
fn a_message_signed_under_a_delegation_token_never_counts_as_the_owners() {
    use crate::protocol::delegation::{IssueRequest, ScopeMap};
    let dir = tempfile::tempdir().unwrap();
    let g = gateway(dir.path());
    let (key, _) = message(&g, "olivia", "owner", 9);
    let now = unix_now();
    let scope: ScopeMap = [("write_file".to_owned(), Default::default())].into();
    let req = IssueRequest::new_signed(
        &key,
        "olivia",
        "bob",
        scope,
        600,
        5,
        "nonce-issue-000009",
        now,
    );
    let issued = g.issue_delegation(&req, now).unwrap();
    let (token, secret) = (issued.delegation.id, hex::decode(issued.secret).unwrap());
    let exact = json!([
        {"action": "write_file", "args": {"path": "/w/SOUL.md"}},
        {"action": "write_file", "args": {"path": "/w/notes.txt"}}
    ]);
    let id = scoped(&g, &secret, &token, "nonce-scope-0000009", exact);
    // Control: the same message writes an ordinary file it names.
    let d = g.decide(&write(&id, "write_file", "/w/notes.txt"), now);
    assert!(d.is_allow(), "{d:?}");
    let d = g.decide(&write(&id, "write_file", "/w/SOUL.md"), now);
    assert_eq!(d.reason_code, reason::PROTECTED_FILE, "{d:?}");
    assert!(d.detail.contains("delegation token"), "{}", d.detail);
}
