//! Gateway tests on real SQLite files in a temporary state directory.
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::audit::AuditLog;
use crate::config::Durability;
use crate::protocol::{reason, SignedMessage};

const DEMO: &str = include_str!("../../../policies/demo.toml");

fn settings() -> Settings {
    Settings {
        timestamp_window_secs: 60,
        nonce_ttl_secs: 600,
        active_message_ttl_secs: 900,
        session_ttl_secs: 0,
        unverified_per_minute: 0,
    }
}

fn open(dir: &Path) -> Gateway {
    let g = Gateway::open(dir, settings(), None).unwrap();
    if g.current_policy().is_none() {
        g.load_policy(DEMO, "policies/demo.toml").unwrap();
    }
    g
}

fn signed(key: &[u8], op: &str, session: &str, nonce: &str, ts: i64) -> SignedMessage {
    SignedMessage::new_signed(key, op, session, nonce, ts, "please do it")
}

fn call(id: &str, action: &str, args: serde_json::Value) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: action.into(),
        tool_use_id: None,
        arguments: args.as_object().unwrap().clone(),
    }
}

fn chart(id: &str) -> ToolCallRequest {
    call(id, "read_chart", json!({"path": "/srv/charts/p1.json"}))
}

#[test]
fn verified_message_allows_in_policy_call() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    assert_eq!(key.len(), 32);
    let now = unix_now();
    let out = g
        .ingest(
            &signed(&key, "dr-chen", "dm:1", "nonce-000000000001", now),
            now,
        )
        .unwrap();
    assert_eq!(out.trust, Trust::Verified);
    assert_eq!(out.active_message_id.len(), 32);
    assert!(out.session_bound);
    let d = g.decide(&chart(&out.active_message_id), now);
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.reason_code, "ok");
    assert!(d.policy_id.starts_with("demo@"));
    assert_eq!(
        d.grant.unwrap().read,
        [std::path::PathBuf::from("/srv/charts/p1.json")]
    );
    let d = g.decide(
        &call(&out.active_message_id, "shell", json!({"command": "ls"})),
        now,
    );
    assert_eq!(d.reason_code, reason::ROLE_NOT_IN_ALLOWLIST);
}

#[test]
fn replay_is_refused_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let msg;
    {
        let g = open(dir.path());
        let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
        msg = signed(&key, "olivia", "s1", "nonce-000000000002", now);
        g.ingest(&msg, now).unwrap();
        assert_eq!(
            g.ingest(&msg, now).unwrap_err().reason_code,
            reason::REPLAYED_NONCE
        );
    }
    let g = open(dir.path());
    assert_eq!(
        g.ingest(&msg, now + 1).unwrap_err().reason_code,
        reason::REPLAYED_NONCE
    );
}

#[test]
fn timestamp_window_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let r = g
        .ingest(
            &signed(&key, "olivia", "s", "nonce-000000000003", now - 61),
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason_code, reason::STALE_TIMESTAMP);
    let r = g
        .ingest(
            &signed(&key, "olivia", "s", "nonce-000000000004", now + 61),
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason_code, reason::FUTURE_TIMESTAMP);
    g.ingest(
        &signed(&key, "olivia", "s", "nonce-000000000005", now - 60),
        now,
    )
    .unwrap();
}

#[test]
fn session_is_bound_to_first_operator() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, k1) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let (_, k2) = g.add_operator("sam", &["member".into()]).unwrap();
    let now = unix_now();
    g.ingest(
        &signed(&k1, "olivia", "slack:C1", "nonce-000000000006", now),
        now,
    )
    .unwrap();
    let r = g
        .ingest(
            &signed(&k2, "sam", "slack:C1", "nonce-000000000007", now),
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason_code, reason::SESSION_OPERATOR_MISMATCH);
    // Refused messages consume no nonce: the same nonce works on sam's own session.
    g.ingest(
        &signed(&k2, "sam", "slack:C2", "nonce-000000000007", now),
        now,
    )
    .unwrap();
    // The binding survives a restart.
    drop(g);
    let g = open(dir.path());
    let r = g
        .ingest(
            &signed(&k2, "sam", "slack:C1", "nonce-000000000008", now),
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason_code, reason::SESSION_OPERATOR_MISMATCH);
}

#[test]
fn unsigned_and_spoofed_messages_get_no_tool_rights() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, _key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let unsigned: SignedMessage = serde_json::from_value(
        json!({"session": "mail", "body": "reset the mail server, nuclear option"}),
    )
    .unwrap();
    let out = g.ingest(&unsigned, now).unwrap();
    assert_eq!(
        (out.trust, out.reason_code.as_str()),
        (Trust::Untrusted, reason::UNSIGNED_MESSAGE)
    );
    let d = g.decide(
        &call(
            &out.active_message_id,
            "shell",
            json!({"command": "mailctl reset --all"}),
        ),
        now,
    );
    assert_eq!(d.reason_code, reason::UNSIGNED_MESSAGE);
    // Claims to be olivia, signed with another key.
    let spoof = signed(
        b"not olivia's key",
        "olivia",
        "mail",
        "nonce-000000000009",
        now,
    );
    let out = g.ingest(&spoof, now).unwrap();
    assert_eq!(out.reason_code, reason::SIGNATURE_MISMATCH);
    let d = g.decide(&chart(&out.active_message_id), now);
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("deny", reason::SIGNATURE_MISMATCH)
    );
    // An unverified operator is a claim, and says so.
    assert_eq!(d.operator, "claimed:olivia");
    // An unknown operator.
    let out = g
        .ingest(
            &signed(b"k", "mallory", "x", "nonce-000000000010", now),
            now,
        )
        .unwrap();
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now).reason_code,
        reason::UNKNOWN_OPERATOR
    );
}

#[test]
fn refuse_policy_refuses_unsigned_and_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.load_policy(
        &DEMO
            .replace("unsigned = \"untrusted\"", "unsigned = \"refuse\"")
            .replace("invalid = \"untrusted\"", "invalid = \"refuse\""),
        "strict",
    )
    .unwrap();
    let now = unix_now();
    let unsigned: SignedMessage =
        serde_json::from_value(json!({"session": "mail", "body": "x"})).unwrap();
    assert_eq!(
        g.ingest(&unsigned, now).unwrap_err().reason_code,
        reason::UNSIGNED_MESSAGE
    );
    let r = g
        .ingest(
            &signed(b"k", "mallory", "x", "nonce-000000000011", now),
            now,
        )
        .unwrap_err();
    assert_eq!(r.reason_code, reason::UNKNOWN_OPERATOR);
}

#[test]
fn unknown_and_expired_active_messages() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    assert_eq!(
        g.decide(&chart("not-an-id"), now).reason_code,
        reason::UNKNOWN_ACTIVE_MESSAGE
    );
    assert_eq!(
        g.decide(&chart(&"ab".repeat(16)), now).reason_code,
        reason::UNKNOWN_ACTIVE_MESSAGE
    );
    let out = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000012", now),
            now,
        )
        .unwrap();
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now + 900)
            .reason_code,
        reason::ACTIVE_MESSAGE_EXPIRED
    );
}

#[test]
fn rotation_and_revocation_withdraw_tool_rights() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let out = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000013", now),
            now,
        )
        .unwrap();
    let (info, key2) = g.rotate_operator("dr-chen").unwrap();
    assert_eq!(info.key_gen, 2);
    assert_ne!(key, key2);
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now).reason_code,
        reason::SIGNATURE_MISMATCH
    );
    // The old key no longer verifies; the new one does.
    let r = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000014", now),
            now,
        )
        .unwrap();
    assert_eq!(r.trust, Trust::Untrusted);
    let out = g
        .ingest(
            &signed(&key2, "dr-chen", "s", "nonce-000000000015", now),
            now,
        )
        .unwrap();
    assert!(g.decide(&chart(&out.active_message_id), now).is_allow());
    g.revoke_operator("dr-chen").unwrap();
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now).reason_code,
        reason::OPERATOR_REVOKED
    );
    assert!(g.key_of("dr-chen").is_none());
    // Revocation survives restart.
    drop(g);
    let g = open(dir.path());
    assert!(g.list_operators()[0].revoked);
}

#[test]
fn rate_limit_per_role() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("guest-1", &["guest".into()]).unwrap();
    let now = unix_now();
    let out = g
        .ingest(
            &signed(&key, "guest-1", "g", "nonce-000000000016", now),
            now,
        )
        .unwrap();
    let w = call(
        &out.active_message_id,
        "write_file",
        json!({"path": "/workspace/scratch/a", "content": "x"}),
    );
    for i in 0..10 {
        assert!(g.decide(&w, now).is_allow(), "call {i}");
    }
    assert_eq!(g.decide(&w, now).reason_code, reason::RATE_LIMITED);
}

#[test]
fn bad_policy_is_refused_and_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let before = g.policy_info().unwrap();
    let e = g
        .load_policy("id = \"x\"\n[roles.r.allow.nope]\n", "bad.toml")
        .unwrap_err();
    assert_eq!(e.reason_code(), reason::INVALID_POLICY);
    assert!(e.to_string().contains("roles.r.allow.nope"), "{e}");
    assert_eq!(g.policy_info().unwrap().policy_id, before.policy_id);
    // A new good policy replaces it and survives a restart.
    let v2 = DEMO.replace("id = \"demo\"", "id = \"demo2\"");
    let info = g.load_policy(&v2, "v2.toml").unwrap();
    drop(g);
    let g = Gateway::open(dir.path(), settings(), None).unwrap();
    assert_eq!(g.policy_info().unwrap().policy_id, info.policy_id);
}

#[test]
fn operator_admin_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.add_operator("olivia", &["owner".into()]).unwrap();
    assert_eq!(
        g.add_operator("olivia", &["owner".into()])
            .unwrap_err()
            .reason_code(),
        reason::OPERATOR_EXISTS
    );
    assert_eq!(
        g.add_operator("x", &["wizard".into()])
            .unwrap_err()
            .reason_code(),
        "unknown_role"
    );
    assert_eq!(
        g.add_operator("bad id", &["owner".into()])
            .unwrap_err()
            .reason_code(),
        "invalid_character"
    );
    assert_eq!(
        g.rotate_operator("nobody").unwrap_err().reason_code(),
        reason::UNKNOWN_OPERATOR
    );
}

#[test]
fn store_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let _g = open(dir.path());
    let mode = std::fs::metadata(dir.path().join("gateway.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

struct FailingHook;
impl AllowHook for FailingHook {
    fn name(&self) -> &str {
        "failing"
    }
    fn after_allow(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        assert!(call.audit.is_some(), "hooks run after the audit record");
        Err(HookError {
            hook: "failing".into(),
            reason_code: "enforcement_unavailable".into(),
            message: "no backend".into(),
        })
    }
}

#[tokio::test]
async fn pipeline_audits_every_decision_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(dir.path(), Durability::Normal).unwrap();
    let g = Gateway::open(dir.path(), settings(), Some(audit.clone())).unwrap();
    g.load_policy(DEMO, "demo").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let out = g
        .submit_message(&signed(&key, "dr-chen", "s", "nonce-000000000017", now))
        .await
        .unwrap();
    let d = g
        .tool_call(&chart(&out.active_message_id), Caller::default())
        .await;
    assert!(d.is_allow());
    let seq1 = d.audit_seq.unwrap();
    let d = g.tool_call(&chart("nope"), Caller::default()).await;
    assert_eq!(d.reason_code, reason::UNKNOWN_ACTIVE_MESSAGE);
    assert_eq!(d.audit_seq, Some(seq1 + 1), "denials are audited too");
    // A failing allow hook overturns the allow, and that is recorded.
    g.add_allow_hook(Arc::new(FailingHook));
    let d = g
        .tool_call(&chart(&out.active_message_id), Caller::default())
        .await;
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("deny", "enforcement_unavailable")
    );
    assert_eq!(d.audit_seq, Some(seq1 + 3));
    assert!(d.grant.is_none());
    // Audit down: nothing is allowed, messages are refused.
    audit.shutdown().unwrap();
    let d = g
        .tool_call(&chart(&out.active_message_id), Caller::default())
        .await;
    assert_eq!(d.reason_code, reason::AUDIT_UNAVAILABLE);
    let r = g
        .submit_message(&signed(&key, "dr-chen", "s", "nonce-000000000018", now))
        .await
        .unwrap_err();
    assert_eq!(r.reason_code, reason::AUDIT_UNAVAILABLE);
}

struct PanickingHook;
impl AllowHook for PanickingHook {
    fn name(&self) -> &str {
        "panicking"
    }
    fn after_allow(&self, _call: &AllowedCall<'_>) -> Result<(), HookError> {
        panic!("bug in a hook")
    }
}

#[tokio::test]
async fn a_panicking_hook_denies_with_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let out = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000019", now),
            now,
        )
        .unwrap();
    g.add_allow_hook(Arc::new(PanickingHook));
    let d = g
        .tool_call(&chart(&out.active_message_id), Caller::default())
        .await;
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("deny", reason::INTERNAL_ERROR)
    );
    assert!(d.grant.is_none());
}

#[test]
fn prune_forgets_expired_active_messages_and_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let out = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000020", now),
            now,
        )
        .unwrap();
    // Nothing is expired yet.
    assert_eq!(g.prune(now).unwrap(), 0);
    assert!(g.decide(&chart(&out.active_message_id), now).is_allow());
    // After both TTLs: the active message and the nonce are gone, from memory and store.
    let later = now + 901;
    assert_eq!(g.prune(later).unwrap(), 2);
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now).reason_code,
        reason::UNKNOWN_ACTIVE_MESSAGE
    );
    drop(g);
    let g = open(dir.path());
    assert_eq!(
        g.decide(&chart(&out.active_message_id), now).reason_code,
        reason::UNKNOWN_ACTIVE_MESSAGE
    );
}

/// Counts allow-hook runs (each would install a kernel grant).
#[derive(Default)]
struct CountingHook(std::sync::atomic::AtomicUsize);

impl AllowHook for CountingHook {
    fn name(&self) -> &str {
        "count"
    }
    fn after_allow(&self, _: &AllowedCall<'_>) -> Result<(), HookError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// pid 1 → agent "a", pid 2 → agent "b", others → no agent.
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

fn owner_message(g: &Gateway) -> String {
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    g.ingest(
        &signed(&key, "olivia", "s-own", "nonce-000000000777", now),
        now,
    )
    .unwrap()
    .active_message_id
}

fn agent(pid: u32) -> Caller {
    Caller {
        pid: Some(pid),
        uid: Some(1000),
        gid: Some(1000),
        admin: false,
    }
}

fn runtime_req(
    rt: crate::runtime::Runtime,
    msg: Option<&str>,
    tool: &str,
    input: serde_json::Value,
    id: Option<&str>,
) -> crate::runtime::RuntimeCallRequest {
    crate::runtime::RuntimeCallRequest {
        runtime: rt,
        active_message_id: msg.map(str::to_owned),
        tool_name: tool.into(),
        tool_input: input.as_object().unwrap().clone(),
        tool_use_id: id.map(str::to_owned),
    }
}

#[tokio::test]
async fn one_tool_call_one_decision_across_routes() {
    use crate::runtime::Runtime;
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let hook = Arc::new(CountingHook::default());
    g.add_allow_hook(hook.clone());
    g.set_agent_resolver(Arc::new(ByPid));
    let id = owner_message(&g);
    let runs = || hook.0.load(std::sync::atomic::Ordering::SeqCst);

    // The hook's route: Codex says Bash {"command"} ...
    let first = g
        .runtime_call(
            &runtime_req(
                Runtime::Codex,
                Some(&id),
                "Bash",
                json!({"command": "ls /workspace"}),
                Some("call_abc"),
            ),
            agent(1),
        )
        .await;
    assert_eq!(first.agent.as_deref(), Some("a"));
    let first = first.decision.unwrap();
    assert!(first.is_allow(), "{first:?}");
    assert_eq!(runs(), 1);
    // ... forward mode sees exec_command {"cmd"}: the same call, the first decision, no second grant.
    let second = g
        .runtime_call(
            &runtime_req(
                Runtime::Codex,
                Some(&id),
                "exec_command",
                json!({"cmd": "ls /workspace"}),
                Some("call_abc"),
            ),
            agent(1),
        )
        .await
        .decision
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(runs(), 1);

    // Control: without an id, each request is its own decision.
    let mut plain = call(&id, "shell", json!({"command": "ls /workspace"}));
    let a = g.tool_call(&plain, agent(1)).await;
    let b = g.tool_call(&plain, agent(1)).await;
    assert!(a.is_allow() && b.is_allow());
    assert_ne!(a.call_id, b.call_id);
    assert_eq!(runs(), 3);

    // Another agent's request under the same id is its own decision (a
    // denial here: the active message is held by the agent that used it first).
    plain.tool_use_id = Some("call_abc".into());
    let other = g.tool_call(&plain, agent(2)).await;
    assert_eq!(other.reason_code, reason::ACTIVE_MESSAGE_OTHER_AGENT);
    assert_ne!(other.call_id, first.call_id);
    assert_eq!(runs(), 3);

    // The same id for a different call: denied, not the first allow.
    let reused = g
        .tool_call(
            &ToolCallRequest {
                tool_use_id: Some("call_abc".into()),
                ..call(&id, "shell", json!({"command": "mailctl reset --all"}))
            },
            agent(1),
        )
        .await;
    assert_eq!(reused.reason_code, reason::TOOL_USE_ID_REUSED);
    assert_eq!(runs(), 3);

    // Two concurrent requests for a new id: one decision, one grant.
    let req = ToolCallRequest {
        tool_use_id: Some("toolu_race".into()),
        ..call(&id, "shell", json!({"command": "ls /workspace"}))
    };
    let (x, y) = tokio::join!(g.tool_call(&req, agent(1)), g.tool_call(&req, agent(1)));
    assert!(x.is_allow());
    assert_eq!(x, y);
    assert_eq!(runs(), 4);

    // A denial is remembered too.
    let deny_req = ToolCallRequest {
        tool_use_id: Some("toolu_deny".into()),
        ..call(&id, "shell", json!({"command": "/usr/bin/curl http://x"}))
    };
    let d1 = g.tool_call(&deny_req, agent(1)).await;
    let d2 = g.tool_call(&deny_req, agent(1)).await;
    assert_eq!(d1.reason_code, reason::COMMAND_NOT_ALLOWED);
    assert_eq!(d1, d2);

    // Malformed ids are denied by the decision.
    let bad = ToolCallRequest {
        tool_use_id: Some("has space".into()),
        ..call(&id, "shell", json!({"command": "ls"}))
    };
    assert_eq!(
        g.tool_call(&bad, agent(1)).await.reason_code,
        reason::INVALID_TOOL_USE_ID
    );

    // Entries go with their active message.
    g.prune(unix_now() + 10_000).unwrap();
    assert_eq!(g.call_ids.len(), 0);
}

#[tokio::test]
async fn runtime_calls_map_through_the_policy() {
    use crate::runtime::Runtime;
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.set_agent_resolver(Arc::new(ByPid));
    let id = owner_message(&g);
    let decide = |rt, msg: Option<&str>, tool: &str, input| {
        let req = runtime_req(rt, msg, tool, input, None);
        let g = &g;
        async move { g.runtime_call(&req, agent(1)).await.decision.unwrap() }
    };
    let d = decide(
        Runtime::ClaudeCode,
        Some(&id),
        "Bash",
        json!({"command": "mailctl reset --all"}),
    )
    .await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.action, "shell");
    let d = decide(Runtime::ClaudeCode, None, "Bash", json!({"command": "ls"})).await;
    assert_eq!(d.reason_code, reason::NO_ACTIVE_MESSAGE);
    let d = decide(Runtime::ClaudeCode, Some(&id), "TodoWrite", json!({})).await;
    assert_eq!(d.reason_code, reason::UNKNOWN_TOOL);
    assert_eq!(d.action, "claude-code:TodoWrite");
    let d = decide(
        Runtime::Gemini,
        Some(&id),
        "run_shell_command",
        json!({"command": "ls; mailctl reset --all"}),
    )
    .await;
    assert_eq!(d.reason_code, reason::SHELL_SYNTAX_NOT_ALLOWED);
    // Write → write_file with path + content; /etc is outside the owner's scopes.
    let d = decide(
        Runtime::ClaudeCode,
        Some(&id),
        "Write",
        json!({"file_path": "/etc/passwd", "content": "x"}),
    )
    .await;
    assert_eq!(d.reason_code, reason::PATH_OUTSIDE_SCOPE);
    let d = decide(
        Runtime::ClaudeCode,
        Some(&id),
        "Write",
        json!({"file_path": "/workspace/a.txt", "content": "x"}),
    )
    .await;
    assert!(d.is_allow(), "{d:?}");

    // A policy section maps a tool the defaults do not know.
    let with_runtime = format!(
        "{DEMO}\n[runtime.claude-code.tools.TodoWrite]\naction = \"export_audit\"\n\n[runtime.claude-code.tools.Bash]\naction = \"read_chart\"\nargs = {{ path = \"command\" }}\n"
    );
    g.load_policy(&with_runtime, "test").unwrap();
    let d = decide(
        Runtime::ClaudeCode,
        Some(&id),
        "TodoWrite",
        json!({"todos": []}),
    )
    .await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.action, "export_audit");
    let d = decide(
        Runtime::ClaudeCode,
        Some(&id),
        "Bash",
        json!({"command": "/srv/charts/p1.json"}),
    )
    .await;
    assert_eq!((d.action.as_str(), d.is_allow()), ("read_chart", true));
    for (bad, at) in [
        (
            "[runtime.nope.tools.X]\naction = \"shell\"\n",
            "runtime.nope",
        ),
        (
            "[runtime.codex.tools.X]\naction = \"missing\"\n",
            "runtime.codex.tools.X.action",
        ),
        (
            "[runtime.codex.tools.X]\naction = \"shell\"\nargs = { command = \"$bogus\" }\n",
            "runtime.codex.tools.X.args.command",
        ),
        (
            "[runtime.codex.tools.\"a b\"]\naction = \"shell\"\n",
            "runtime.codex.tools.a b",
        ),
    ] {
        let e = g
            .load_policy(&format!("{DEMO}\n{bad}"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(at), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_message_addressed_to_an_agent_is_refused_to_every_other_agent() {
    let dir = tempfile::tempdir().unwrap();
    let plain = call("", "shell", json!({"command": "ls /workspace"}));
    {
        let g = open(dir.path());
        g.set_agent_resolver(Arc::new(ByPid));
        let id = owner_message(&g);
        let req = ToolCallRequest {
            active_message_id: id.clone(),
            ..plain.clone()
        };
        g.address_to_agent(&id, "a").unwrap();
        // Agent b learned the id and races to use it first: refused.
        let stolen = g.tool_call(&req, agent(2)).await;
        assert_eq!(stolen.reason_code, reason::ACTIVE_MESSAGE_OTHER_AGENT);
        // Control: the addressed agent's call is allowed.
        assert!(g.tool_call(&req, agent(1)).await.is_allow());
    }
    // The address is stored: after a restart b is still refused.
    let g = open(dir.path());
    g.set_agent_resolver(Arc::new(ByPid));
    let id = g
        .store
        .active_messages(unix_now())
        .unwrap()
        .into_iter()
        .next()
        .expect("the active message survives")
        .id;
    let req = ToolCallRequest {
        active_message_id: id,
        ..plain
    };
    let again = g.tool_call(&req, agent(2)).await;
    assert_eq!(again.reason_code, reason::ACTIVE_MESSAGE_OTHER_AGENT);
}

fn approval_policy() -> String {
    let s = DEMO.replace(
        "[actions.read_chart]\ndescription = \"Read one patient chart.\"\n",
        "[actions.read_chart]\ndescription = \"Read one patient chart.\"\napproval = \"required\"\n",
    );
    assert_ne!(s, DEMO);
    s
}

fn queue(dir: &Path) -> Arc<approvals::Approvals> {
    let settings = approvals::ApprovalSettings {
        timeout_secs: 30,
        max_pending: 4,
        webhook: None,
    };
    Arc::new(approvals::Approvals::open(dir, settings, None).unwrap().0)
}

async fn first_pending(q: &approvals::Approvals) -> approvals::PendingApproval {
    for _ in 0..500 {
        if let Some(p) = q.list().into_iter().next() {
            return p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nothing became pending");
}

fn waiting_call(id: &str) -> approvals::PendingApproval {
    approvals::PendingApproval {
        id: id.into(),
        operator: "dr-chen".into(),
        session: "s".into(),
        action: "read_chart".into(),
        arguments: serde_json::Map::new(),
        agent: String::new(),
        active_message_id: "am".into(),
        policy_id: "demo".into(),
        created_at: unix_now(),
        deadline: unix_now() + 30,
        elevation: None,
        anomaly: None,
    }
}

#[test]
fn a_reserved_place_counts_against_the_bound_and_is_seen_only_once_registered() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());
    // max_pending 4: four places held, none listed yet, a fifth refused.
    let mut places: Vec<_> = (0..4).map(|_| q.reserve().unwrap()).collect();
    assert!(q.list().is_empty());
    assert!(matches!(
        q.reserve(),
        Err(approvals::ApprovalError::Full { max: 4 })
    ));
    // One dropped unused gives its place back.
    drop(places.pop());
    places.push(q.reserve().unwrap());
    // Registered: listed and answerable, in the place it held (still full).
    let _ticket = places.pop().unwrap().register(waiting_call("c1")).unwrap();
    assert_eq!(q.list().len(), 1);
    assert!(q.reserve().is_err());
    // Every reservation given back: three places free beside the one waiting.
    places.clear();
    let again: Vec<_> = (0..3).map(|_| q.reserve().unwrap()).collect();
    assert!(q.reserve().is_err(), "{} reserved", again.len());
}

#[tokio::test]
async fn a_call_whose_place_was_reserved_before_the_stop_is_refused_not_left_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());
    let place = q.reserve().unwrap();
    // agentd stops while that call's escalation row is being written.
    assert_eq!(q.expire_all().await, 0);
    let refused = place.register(waiting_call("c1")).err().unwrap();
    assert_eq!(refused.reason_code(), reason::APPROVAL_EXPIRED);
    assert!(q.list().is_empty());
    assert!(matches!(
        q.reserve(),
        Err(approvals::ApprovalError::Stopping)
    ));
}

fn by_admin(answer: approvals::Answer) -> approvals::Answered {
    approvals::Answered {
        answer,
        approver: "uid:0".into(),
        channel: approvals::Channel::Api,
        reason: String::new(),
        owner: None,
    }
}

#[tokio::test]
async fn escalation_waits_for_an_answer_and_a_denial_is_never_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Gateway::open(dir.path(), settings(), None).unwrap());
    g.load_policy(&approval_policy(), "approvals").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let id = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000031", now),
            now,
        )
        .unwrap()
        .active_message_id;
    // The pure decision escalates, keeping the grant for after the answer.
    let d = g.decide(&chart(&id), now);
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("escalate", reason::APPROVAL_REQUIRED)
    );
    assert!(d.grant.is_some() && !d.is_allow());
    // A call that fails any check is denied, not escalated.
    let outside = call(&id, "read_chart", json!({"path": "/etc/shadow"}));
    assert_eq!(
        g.decide(&outside, now).reason_code,
        reason::PATH_OUTSIDE_SCOPE
    );
    // No queue attached: fail closed.
    let d = g.tool_call(&chart(&id), Caller::default()).await;
    assert_eq!(d.reason_code, reason::APPROVAL_UNAVAILABLE);
    // With a queue: the call waits until an admin approves.
    g.attach_approvals(queue(dir.path()));
    let q = g.approvals().unwrap();
    let (g2, req) = (g.clone(), chart(&id));
    let task = tokio::spawn(async move { g2.tool_call(&req, Caller::default()).await });
    let p = first_pending(&q).await;
    assert_eq!(
        (p.operator.as_str(), p.action.as_str()),
        ("dr-chen", "read_chart")
    );
    q.answer(&p.id, by_admin(approvals::Answer::Approve))
        .await
        .unwrap();
    let d = task.await.unwrap();
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.call_id, p.id);
    assert!(d.grant.is_some());
    let again = q.answer(&p.id, by_admin(approvals::Answer::Deny)).await;
    assert!(matches!(
        again,
        Err(approvals::ApprovalError::AlreadyDecided {
            status: "approved",
            ..
        })
    ));
    assert!(matches!(
        q.answer("feed", by_admin(approvals::Answer::Deny)).await,
        Err(approvals::ApprovalError::Unknown { .. })
    ));
}

#[tokio::test]
async fn an_approval_does_not_outlive_the_operators_authority() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(Gateway::open(dir.path(), settings(), None).unwrap());
    g.load_policy(&approval_policy(), "approvals").unwrap();
    g.attach_approvals(queue(dir.path()));
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let id = g
        .ingest(
            &signed(&key, "dr-chen", "s", "nonce-000000000032", now),
            now,
        )
        .unwrap()
        .active_message_id;
    let q = g.approvals().unwrap();
    let (g2, req) = (g.clone(), chart(&id));
    let task = tokio::spawn(async move { g2.tool_call(&req, Caller::default()).await });
    let p = first_pending(&q).await;
    // Revoked while the call waited: the approval cannot revive it.
    g.revoke_operator("dr-chen").unwrap();
    q.answer(&p.id, by_admin(approvals::Answer::Approve))
        .await
        .unwrap();
    let d = task.await.unwrap();
    assert_eq!(d.reason_code, reason::OPERATOR_REVOKED, "{d:?}");
    assert!(d.grant.is_none());
}

#[test]
fn usage_threshold_per_role_and_action() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let limited =
        format!("{DEMO}\n[roles.clinician.limits.read_chart]\nmax_uses = 3\nwindow_secs = 3600\n");
    g.load_policy(&limited, "limited.toml").unwrap();
    let (_, k1) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let (_, k2) = g.add_operator("dr-who", &["clinician".into()]).unwrap();
    let now = unix_now();
    let m1 = g
        .ingest(
            &signed(&k1, "dr-chen", "c1", "nonce-000000000101", now),
            now,
        )
        .unwrap();
    let m2 = g
        .ingest(&signed(&k2, "dr-who", "c2", "nonce-000000000102", now), now)
        .unwrap();
    for i in 0..3 {
        assert!(
            g.decide(&chart(&m1.active_message_id), now).is_allow(),
            "use {i}"
        );
    }
    let d = g.decide(&chart(&m1.active_message_id), now);
    assert_eq!(d.reason_code, reason::USAGE_THRESHOLD);
    assert!(
        d.detail.contains("at most 3 times per 3600 s"),
        "{}",
        d.detail
    );
    // Controls: another action of the same role, another operator.
    let mail = call(
        &m1.active_message_id,
        "send_email",
        json!({"to": "ward3@clinic.example", "subject": "s", "body": "b"}),
    );
    assert!(g.decide(&mail, now).is_allow());
    assert!(g.decide(&chart(&m2.active_message_id), now).is_allow());
    // A denied call is no use: a refused out-of-scope read does not count.
    let outside = call(
        &m2.active_message_id,
        "read_chart",
        json!({"path": "/etc/shadow"}),
    );
    assert_eq!(
        g.decide(&outside, now).reason_code,
        reason::PATH_OUTSIDE_SCOPE
    );
    assert!(g.decide(&chart(&m2.active_message_id), now).is_allow());
    assert!(g.decide(&chart(&m2.active_message_id), now).is_allow());
    assert_eq!(
        g.decide(&chart(&m2.active_message_id), now).reason_code,
        reason::USAGE_THRESHOLD
    );
}

#[test]
fn usage_past_escalate_after_waits_for_a_human_and_max_uses_still_denies() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let limited = format!(
        "{DEMO}\n[roles.clinician.limits.read_chart]\nmax_uses = 3\nwindow_secs = 3600\nescalate_after = 1\n"
    );
    g.load_policy(&limited, "limited.toml").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let m = g
        .ingest(
            &signed(&key, "dr-chen", "c1", "nonce-000000000111", now),
            now,
        )
        .unwrap()
        .active_message_id;
    let outcome = |d: Decision| (d.decision, d.reason_code);
    let allow = ("allow".to_owned(), reason::OK.to_owned());
    let escalate = ("escalate".to_owned(), reason::APPROVAL_REQUIRED.to_owned());
    assert_eq!(outcome(g.decide(&chart(&m), now)), allow);
    assert_eq!(outcome(g.decide(&chart(&m), now)), escalate);
    assert_eq!(outcome(g.decide(&chart(&m), now)), escalate);
    assert_eq!(
        g.decide(&chart(&m), now).reason_code,
        reason::USAGE_THRESHOLD
    );
    // Control: the same role's other action is neither escalated nor counted.
    let mail = call(
        &m,
        "send_email",
        json!({"to": "ward3@clinic.example", "subject": "s", "body": "b"}),
    );
    assert_eq!(outcome(g.decide(&mail, now)), allow);
}

/// Tool-call rows name their caller: the agent resolved for the calling
/// process (allows, denials, overturned allows alike) and its pid; a
/// caller outside every agent leaves `agent` empty.
#[tokio::test]
async fn tool_call_rows_name_the_calling_agent() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(dir.path(), Durability::Normal).unwrap();
    let g = Gateway::open(dir.path(), settings(), Some(audit.clone())).unwrap();
    g.load_policy(DEMO, "demo").unwrap();
    g.set_agent_resolver(Arc::new(ByPid));
    let id = owner_message(&g);
    let row = |seq: Option<u64>| {
        let db = audit.db_path();
        let conn = crate::audit::store::open_ro(db).unwrap();
        crate::audit::store::record_at(&conn, db, seq.unwrap())
            .unwrap()
            .unwrap()
            .event
    };
    let subject = |e: &crate::audit::AuditEvent| (e.agent.clone(), e.pid, e.access.clone());

    let allowed = g
        .tool_call(
            &call(&id, "shell", json!({"command": "ls /workspace"})),
            agent(1),
        )
        .await;
    assert!(allowed.is_allow(), "{allowed:?}");
    let e = row(allowed.audit_seq);
    assert_eq!(subject(&e), ("a".into(), 1, String::new()));
    assert_eq!(
        e.policy_id,
        g.current_policy().unwrap().id,
        "policy_id is the policy's"
    );

    // A denial names its caller too: agent b may not act on a's message.
    let denied = g
        .tool_call(
            &call(&id, "shell", json!({"command": "ls /workspace"})),
            agent(2),
        )
        .await;
    assert_eq!(denied.reason_code, reason::ACTIVE_MESSAGE_OTHER_AGENT);
    assert_eq!(
        subject(&row(denied.audit_seq)),
        ("b".into(), 2, String::new())
    );

    // Outside every agent: the pid only; an admin over TCP: nothing.
    let d = g.tool_call(&chart("nope"), agent(3)).await;
    assert_eq!(
        subject(&row(d.audit_seq)),
        (String::new(), 3, String::new())
    );
    let d = g.tool_call(&chart("nope"), Caller::default()).await;
    let e = row(d.audit_seq);
    assert!(!e.has_subject(), "{e:?}");

    // An allow overturned by a failing hook: both rows name the agent.
    g.add_allow_hook(Arc::new(FailingHook));
    let d = g
        .tool_call(
            &call(&id, "shell", json!({"command": "ls /workspace"})),
            agent(1),
        )
        .await;
    assert_eq!(d.reason_code, "enforcement_unavailable");
    let overturn = d.audit_seq.unwrap();
    assert_eq!(subject(&row(Some(overturn))).0, "a");
    assert_eq!(subject(&row(Some(overturn - 1))).0, "a");
    audit.shutdown().unwrap();
    let key = audit.verifying_key();
    crate::audit::verify_db(audit.db_path(), &key, &[]).unwrap();
}

#[test]
fn an_ed25519_operator_is_verified_by_its_public_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let pk = sk.verifying_key().to_bytes();
    let info = g
        .add_operator_public("fleet-op", &["clinician".into()], &pk)
        .unwrap();
    assert_eq!(info.key_kind, KeyKind::Ed25519);
    assert_eq!(info.public_key.as_deref(), Some(hex::encode(pk).as_str()));
    let now = unix_now();
    let mut m = signed(b"", "fleet-op", "dm:ed", "nonce-ed-0000000001", now);
    assert!(m.sign_ed25519(&sk));
    assert_eq!(m.signature.as_ref().unwrap().len(), 128);
    let out = g.ingest(&m, now).unwrap();
    assert_eq!(out.trust, Trust::Verified, "{out:?}");
    assert!(g.decide(&chart(&out.active_message_id), now).is_allow());
    // An HMAC made with the (public) key, and another key's Ed25519
    // signature, are not the operator's.
    let forged = signed(&pk, "fleet-op", "dm:ed", "nonce-ed-0000000002", now);
    let out = g.ingest(&forged, now).unwrap();
    assert_eq!(
        (out.trust, out.reason_code.as_str()),
        (Trust::Untrusted, reason::SIGNATURE_MISMATCH)
    );
    let mut other = signed(b"", "fleet-op", "dm:ed", "nonce-ed-0000000003", now);
    other.sign_ed25519(&ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]));
    let out = g.ingest(&other, now).unwrap();
    assert_eq!(out.reason_code, reason::SIGNATURE_MISMATCH);
    // Receipts are not sealed with the public key; no local rotation.
    assert_ne!(g.key_of("fleet-op").unwrap(), pk.to_vec());
    assert!(matches!(
        g.rotate_operator("fleet-op"),
        Err(GatewayError::PublicKeyOperator { .. })
    ));
    // A restart keeps the kind.
    drop(g);
    let g = open(dir.path());
    let mut m = signed(b"", "fleet-op", "dm:ed", "nonce-ed-0000000004", now);
    m.sign_ed25519(&sk);
    assert_eq!(g.ingest(&m, now).unwrap().trust, Trust::Verified);
}

#[test]
fn a_central_policy_refuses_local_loads() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    // Control: a local load works while the policy is local.
    g.load_local_policy(DEMO, "policies/demo.toml").unwrap();
    g.load_policy(DEMO, &format!("{CENTRAL_POLICY_ORIGIN}4"))
        .unwrap();
    assert!(g.policy_is_central());
    let e = g.load_local_policy(DEMO, "policies/demo.toml").unwrap_err();
    assert_eq!(e.reason_code(), reason::POLICY_MANAGED_CENTRALLY);
}

#[test]
fn an_operators_roles_change_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    assert!(matches!(
        g.set_operator_roles("dr-chen", &["nobody".into()]),
        Err(GatewayError::UnknownRole { .. })
    ));
    g.set_operator_roles("dr-chen", &["member".into()]).unwrap();
    drop(g);
    let g = open(dir.path());
    let ops = g.list_operators();
    assert_eq!(ops[0].roles, ["member"]);
}
