//! Explanations of real rows: tool calls decided by a real gateway over the
//! demo policy and written to a real audit log, and kernel records written
//! by the same code the enforcement backends use.
use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::audit::{store, AuditLog, Record};
use crate::config::Durability;
use crate::enforce::{AuditSink, KernelRecord};
use crate::gateway::{unix_now, Caller, Gateway, Settings, ToolCallRequest};
use crate::policy::compile;
use crate::protocol::{reason, SignedMessage};
use crate::runtime::{Runtime, RuntimeCallRequest};

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

fn rows(dir: &Path) -> Vec<Record> {
    let db = store::db_path(dir);
    let conn = store::open_ro(&db).unwrap();
    store::records_after(&conn, &db, 0, 10_000).unwrap()
}

struct World {
    _dir: tempfile::TempDir,
    rows: Vec<Record>,
    roles: HashMap<String, Vec<String>>,
    policy_id: String,
}

impl World {
    fn row(&self, seq: u64) -> &Record {
        self.rows.iter().find(|r| r.seq == seq).unwrap()
    }

    fn explain(&self, seq: u64) -> Explanation {
        let r = self.row(seq);
        let op = r.event.operator.trim_start_matches("claimed:");
        let call_row = self.rows.iter().find(|c| {
            c.event.kind == crate::audit::RecordKind::ToolCall
                && !r.event.call_id.is_empty()
                && c.event.call_id == r.event.call_id
        });
        let profiles = vec!["generic".to_owned()];
        let ctx = Context {
            policy_source: Some(DEMO),
            policy_id: Some(&self.policy_id),
            operator_roles: self.roles.get(op).map(|v| v.as_slice()),
            agent_profiles: Some(&profiles),
            call_row,
        };
        let e = explain(r, &ctx);
        // Every explanation renders, and names its row and reason.
        let text = e.render_text();
        assert!(text.contains(&format!("row {seq} ")), "{text}");
        assert!(text.contains(&r.event.reason_code), "{text}");
        e
    }
}

async fn msg(g: &Gateway, key: &[u8], op: &str, n: u32, now: i64) -> String {
    let m = SignedMessage::new_signed(
        key,
        op,
        &format!("dm:{op}"),
        &format!("nonce-{n:012}"),
        now,
        "please",
    );
    g.submit_message(&m).await.unwrap().active_message_id
}

fn call(id: &str, action: &str, args: Value) -> ToolCallRequest {
    ToolCallRequest {
        active_message_id: id.into(),
        action: action.into(),
        tool_use_id: None,
        arguments: args.as_object().unwrap().clone(),
    }
}

/// Plays calls that are each refused for another reason, plus kernel
/// records, into one real audit log; returns the seq of each by name.
async fn world() -> (World, HashMap<&'static str, u64>) {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(dir.path(), Durability::Normal).unwrap();
    let g = Gateway::open(dir.path(), settings(), Some(audit.clone())).unwrap();
    g.load_policy(DEMO, "policies/demo.toml").unwrap();
    let mut roles = HashMap::new();
    let mut keys = HashMap::new();
    for (op, role) in [
        ("olivia", "owner"),
        ("dr-chen", "clinician"),
        ("max", "member"),
    ] {
        let (_, key) = g.add_operator(op, &[role.into()]).unwrap();
        keys.insert(op, key);
        roles.insert(op.to_owned(), vec![role.to_owned()]);
    }
    let now = unix_now();
    let chen = msg(&g, &keys["dr-chen"], "dr-chen", 1, now).await;
    let max = msg(&g, &keys["max"], "max", 2, now).await;
    let olivia = msg(&g, &keys["olivia"], "olivia", 3, now).await;
    let mut stranger = SignedMessage::new_signed(
        b"k",
        "dr-chen",
        "dm:stranger",
        "nonce-x",
        now,
        "reset the mail server",
    );
    stranger.signature = None;
    stranger.nonce = None;
    stranger.timestamp = None;
    let unsigned = g.submit_message(&stranger).await.unwrap().active_message_id;
    let mut seqs = HashMap::new();
    let mut decide = |name: &'static str, d: crate::gateway::Decision| {
        seqs.insert(name, d.audit_seq.unwrap());
        d
    };
    let c = Caller::default();
    let d = g
        .tool_call(
            &call(&chen, "read_chart", json!({"path": "/srv/charts/p1.json"})),
            c,
        )
        .await;
    assert!(decide("allowed", d).is_allow());
    let d = g
        .tool_call(
            &call(&chen, "shell", json!({"command": "ls /workspace"})),
            c,
        )
        .await;
    assert_eq!(decide("role", d).reason_code, reason::ROLE_NOT_IN_ALLOWLIST);
    let d = g
        .tool_call(
            &call(&chen, "read_chart", json!({"path": "/srv/other/p1.json"})),
            c,
        )
        .await;
    assert_eq!(decide("scope", d).reason_code, reason::PATH_OUTSIDE_SCOPE);
    let d = g
        .tool_call(
            &call(
                &max,
                "shell",
                json!({"command": "/usr/bin/grep x /workspace/a"}),
            ),
            c,
        )
        .await;
    assert_eq!(
        decide("command", d).reason_code,
        reason::COMMAND_NOT_ALLOWED
    );
    let d = g
        .tool_call(
            &call(&max, "shell", json!({"command": "mailctl reset --all"})),
            c,
        )
        .await;
    assert_eq!(
        decide("destructive", d).reason_code,
        reason::DESTRUCTIVE_OP_OWNER_ONLY
    );
    let d = g
        .tool_call(
            &call(
                &max,
                "read_mailbox",
                json!({"mailbox": "max", "folder": "inbox"}),
            ),
            c,
        )
        .await;
    assert_eq!(
        decide("unknown_arg", d).reason_code,
        reason::UNKNOWN_ARGUMENT
    );
    let d = g
        .tool_call(
            &call(
                &chen,
                "send_email",
                json!({"to": "x@evil.example", "subject": "s", "body": "b"}),
            ),
            c,
        )
        .await;
    assert_eq!(
        decide("recipient", d).reason_code,
        reason::RECIPIENT_NOT_ALLOWED
    );
    let d = g
        .tool_call(&call(&chen, "launch_rocket", json!({"target": "moon"})), c)
        .await;
    assert_eq!(
        decide("unknown_action", d).reason_code,
        reason::UNKNOWN_ACTION
    );
    let d = g
        .tool_call(
            &call(
                &unsigned,
                "shell",
                json!({"command": "mailctl reset --all"}),
            ),
            c,
        )
        .await;
    assert_eq!(decide("unsigned", d).reason_code, reason::UNSIGNED_MESSAGE);
    let d = g
        .tool_call(&call("am-nope", "shell", json!({"command": "ls"})), c)
        .await;
    assert_eq!(
        decide("unknown_message", d).reason_code,
        reason::UNKNOWN_ACTIVE_MESSAGE
    );
    let d = g
        .runtime_call(
            &RuntimeCallRequest {
                runtime: Runtime::ClaudeCode,
                active_message_id: Some(olivia.clone()),
                tool_name: "TodoWrite".into(),
                tool_input: json!({"todos": []}).as_object().unwrap().clone(),
                tool_use_id: None,
            },
            c,
        )
        .await
        .decision
        .unwrap();
    assert_eq!(decide("unknown_tool", d).reason_code, reason::UNKNOWN_TOOL);
    let granted = g
        .tool_call(
            &call(
                &olivia,
                "shell",
                json!({"command": "/usr/local/bin/mailctl reset --all"}),
            ),
            c,
        )
        .await;
    assert!(granted.is_allow(), "{granted:?}");

    // Kernel records, as the backends write them.
    let k = |action: &str, target: &str, decision: &'static str, code: &str, call: &str, access| {
        KernelRecord {
            agent: "claude".into(),
            call_id: call.into(),
            active_message_id: String::new(),
            action: action.into(),
            target: target.into(),
            decision,
            reason_code: code.into(),
            pid: 4242,
            latency_us: 3,
            access,
        }
    };
    let kernel = [
        (
            "k_exec",
            k("exec", "/usr/bin/curl", "deny", "no_grant", "", None),
        ),
        (
            "k_write",
            k(
                "file_open",
                "/srv/notes/today.md",
                "would_deny",
                "no_grant",
                "",
                Some("write"),
            ),
        ),
        (
            "k_connect",
            k("connect", "203.0.113.7:443", "deny", "no_grant", "", None),
        ),
        (
            "k_used_up",
            k(
                "exec",
                "/usr/local/bin/mailctl",
                "deny",
                "grant_used_up",
                &granted.call_id,
                None,
            ),
        ),
        (
            "k_spent",
            k(
                "grant_dropped",
                "uses=1",
                "info",
                "grant_spent",
                &granted.call_id,
                None,
            ),
        ),
        (
            "k_full",
            k(
                "file_open",
                "/srv/notes/today.md",
                "deny",
                "use_tickets_full",
                "",
                None,
            ),
        ),
        (
            "k_sibling",
            k(
                "exec",
                "/usr/local/bin/mailctl",
                "deny",
                "claim_not_requester_tree",
                "",
                None,
            ),
        ),
        (
            "k_baseline",
            k("exec", "/usr/bin/node", "allow", "baseline", "", None),
        ),
        (
            "k_summary",
            k(
                "file_open",
                "notes.md [count=500 first_ns=1796284800000000000 last_ns=1796284801500000000]",
                "allow",
                "access_summary",
                &granted.call_id,
                None,
            ),
        ),
    ];
    for (name, rec) in kernel {
        audit.append_kernel(&rec).unwrap();
        let last = rows(dir.path()).last().unwrap().seq;
        seqs.insert(name, last);
    }
    let policy_id = g.current_policy().unwrap().id.clone();
    audit.shutdown().unwrap();
    let all = rows(dir.path());
    (
        World {
            _dir: dir,
            rows: all,
            roles,
            policy_id,
        },
        seqs,
    )
}

/// The demo policy with `snippet`'s tables replacing (or adding) its own.
fn patched(snippet: &str) -> String {
    let mut doc: toml_edit::DocumentMut = DEMO.parse().unwrap();
    let add: toml_edit::DocumentMut = snippet.parse().unwrap();
    fn merge(into: &mut toml_edit::Table, from: &toml_edit::Table) {
        for (k, v) in from.iter() {
            match (into.get_mut(k).and_then(|x| x.as_table_mut()), v.as_table()) {
                (Some(t), Some(f)) if f.iter().any(|(_, x)| x.is_table()) => merge(t, f),
                _ => {
                    into.insert(k, v.clone());
                }
            }
        }
    }
    merge(doc.as_table_mut(), add.as_table());
    doc.to_string()
}

/// The call of `row` re-decided against the demo policy with `snippet` applied.
fn allowed_with(w: &World, row: u64, snippet: &str) -> bool {
    let r = w.row(row);
    let p = compile(&patched(snippet), "patched").unwrap();
    let args: serde_json::Map<String, Value> = serde_json::from_str(&r.event.target).unwrap();
    let roles = &w.roles[r.event.operator.as_str()];
    p.evaluate(&r.event.operator, roles, &r.event.action, &args)
        .is_ok()
}

#[tokio::test]
async fn gateway_refusals_get_a_rule_that_allows_exactly_that_call() {
    let (w, s) = world().await;
    // Allowed: said so, nothing to change.
    let e = w.explain(s["allowed"]);
    assert_eq!(e.outcome, Outcome::Allowed);
    assert!(e.fixes.is_empty());
    assert!(e.why.contains("clinician"), "{}", e.why);

    // Each policy refusal: the check that decided, and a snippet that —
    // applied to the policy independently of explain — allows the call.
    for (name, check, must_contain) in [
        (
            "role",
            "step 4",
            vec![
                "[roles.clinician.allow.shell]",
                "\"/usr/bin/ls\"",
                "\"/workspace\"",
            ],
        ),
        (
            "scope",
            "step 7",
            vec![
                "[roles.clinician.allow.read_chart]",
                "scopes = [\"/srv/charts\", \"/srv/other\"]",
            ],
        ),
        (
            "command",
            "step 7",
            vec!["[roles.member.allow.shell]", "\"/usr/bin/grep\""],
        ),
        (
            "destructive",
            "step 6",
            vec![
                "[roles.member]",
                "destructive = true",
                "\"/usr/bin/mailctl\"",
            ],
        ),
        (
            "unknown_arg",
            "step 5",
            vec![
                "[roles.member.allow.read_mailbox]",
                "folder = { type = \"string\", values = [\"inbox\"] }",
            ],
        ),
        (
            "recipient",
            "step 7",
            vec!["[roles.clinician.allow.send_email]", "\"evil.example\""],
        ),
        (
            "unknown_action",
            "step 4",
            vec![
                "[actions.launch_rocket]",
                "[roles.clinician.allow.launch_rocket]",
                "target = { type = \"string\", values = [\"moon\"] }",
            ],
        ),
    ] {
        let e = w.explain(s[name]);
        assert_eq!(e.outcome, Outcome::Denied, "{name}");
        assert!(e.check.contains(check), "{name}: {}", e.check);
        assert_eq!(e.fixes.len(), 1, "{name}: {e:#?}");
        let f = &e.fixes[0];
        assert!(f.verified, "{name}: {f:#?}");
        let t = f.toml.as_deref().unwrap();
        for m in must_contain {
            assert!(t.contains(m), "{name}: `{m}` missing from\n{t}");
        }
        assert!(
            allowed_with(&w, s[name], t),
            "{name}: snippet does not allow the call:\n{t}"
        );
        assert!(
            !allowed_with(&w, s[name], ""),
            "{name}: control: the policy alone refuses"
        );
    }

    // Refusals no policy line can lift: said so, with what to do instead.
    let e = w.explain(s["unsigned"]);
    assert!(e.check.contains("step 2"), "{}", e.check);
    assert!(e.why.contains("no signature"), "{}", e.why);
    assert!(e.fixes[0].toml.is_none());
    assert!(e.fixes[0]
        .command
        .as_deref()
        .unwrap()
        .contains("agentctl send"));
    let e = w.explain(s["unknown_message"]);
    assert!(e.check.contains("step 1"));
    assert!(e.fixes[0].toml.is_none());

    // A runtime tool with no mapping: the mapping section to add.
    let e = w.explain(s["unknown_tool"]);
    assert!(e.check.contains("tool mapping"), "{}", e.check);
    let t = e.fixes[0].toml.as_deref().unwrap();
    assert!(t.contains("[runtime.claude-code.tools.TodoWrite]"), "{t}");
    assert!(t.contains("todos = \"todos\""), "{t}");
}

#[tokio::test]
async fn kernel_rows_say_which_grant_or_baseline_and_the_profile_line() {
    let (w, s) = world().await;
    let e = w.explain(s["k_exec"]);
    assert_eq!(e.outcome, Outcome::Denied);
    assert!(
        e.why
            .contains("process 4242 of agent `claude` ran the program `/usr/bin/curl`"),
        "{}",
        e.why
    );
    assert!(e.why.contains("profiles: generic"), "{}", e.why);
    let t = e.fixes[0].toml.as_deref().unwrap();
    assert_eq!(t, "[profiles.claude-extra]\nexec = [\"/usr/bin/curl\"]\n");
    assert!(e.fixes[0]
        .command
        .as_deref()
        .unwrap()
        .contains("--profile generic --profile claude-extra"));
    // The demo's `shell` action grants the program of its command per call.
    assert!(
        e.fixes.iter().any(|f| f.summary.contains("`shell`")),
        "{e:#?}"
    );
    // The snippet is a valid profile.
    let p: crate::policy::schema::PolicyFile = toml::from_str(&patched(t)).unwrap();
    p.profiles["claude-extra"]
        .validate("profiles.claude-extra")
        .unwrap();

    let e = w.explain(s["k_write"]);
    assert_eq!(e.outcome, Outcome::WouldDeny);
    assert!(e.why.contains("opened for write"), "{}", e.why);
    assert!(e.fixes[0]
        .toml
        .as_deref()
        .unwrap()
        .contains("write = [\"/srv/notes/today.md\"]"));
    assert!(e.fixes[0]
        .summary
        .contains("never a write scope over start-up scripts"));

    let e = w.explain(s["k_connect"]);
    assert!(e.fixes[0]
        .toml
        .as_deref()
        .unwrap()
        .contains("connect = [\"203.0.113.7/32:443\"]"));

    // Bound to a call: the action it was allowed as, and its grant template.
    let e = w.explain(s["k_used_up"]);
    assert!(e.check.contains("the grant of tool call"), "{}", e.check);
    let t = e.fixes[0].toml.as_deref().unwrap();
    assert!(t.starts_with("[actions.shell]\ngrant = {"), "{t}");
    assert!(t.contains("uses = 2"), "{t}");
    compile(&patched(t), "patched").unwrap();

    // A spent grant dropped early, and a refusal for want of room to
    // count a use: each said for what it is.
    let e = w.explain(s["k_spent"]);
    assert_eq!(e.outcome, Outcome::Info);
    assert!(
        e.why.contains("every one of its `uses` was spent"),
        "{}",
        e.why
    );
    let e = w.explain(s["k_full"]);
    assert_eq!(e.outcome, Outcome::Denied);
    assert!(e.why.contains("USE_TICKETS) was full"), "{}", e.why);
    assert!(e.why.contains("not because the grant"), "{}", e.why);

    let e = w.explain(s["k_sibling"]);
    assert!(
        e.why.contains("only the process tree that asked"),
        "{}",
        e.why
    );
    assert!(e.fixes.is_empty(), "no policy change lets a sibling claim");

    let e = w.explain(s["k_baseline"]);
    assert_eq!(e.outcome, Outcome::Allowed);
    assert!(e.why.contains("baseline"));

    // Counted accesses: how many of what, when, under which call.
    let e = w.explain(s["k_summary"]);
    assert_eq!(e.outcome, Outcome::Allowed);
    assert!(
        e.why
            .contains("opened `notes.md` 500 time(s) under the grant of tool call"),
        "{}",
        e.why
    );
    assert!(e.why.contains("2026-12-03T08:00:00.000000Z"), "{}", e.why);
    assert!(e.why.contains("counted these accesses"), "{}", e.why);
}

#[tokio::test]
async fn without_context_it_still_explains_and_says_what_is_missing() {
    let (w, s) = world().await;
    let e = explain(w.row(s["scope"]), &Context::default());
    assert!(e.check.contains("step 7"));
    assert!(e.fixes.is_empty());
    assert!(e.notes.iter().any(|n| n.contains("--policy")), "{e:#?}");
    // A row decided by another policy is flagged.
    let ctx = Context {
        policy_source: Some(DEMO),
        policy_id: Some("demo@000000000000"),
        ..Default::default()
    };
    let e = explain(w.row(s["scope"]), &ctx);
    assert!(e
        .notes
        .iter()
        .any(|n| n.contains("in force is demo@000000000000")));
}

#[tokio::test]
async fn delegation_codes_are_said_in_words_with_the_issuers_step() {
    use crate::protocol::delegation::{IssueRequest, ScopeMap};
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(dir.path(), Durability::Normal).unwrap();
    let g = Gateway::open(dir.path(), settings(), Some(audit.clone())).unwrap();
    g.load_policy(DEMO, "policies/demo.toml").unwrap();
    let (_, key) = g.add_operator("olivia", &["owner".into()]).unwrap();
    let now = unix_now();
    let scope: ScopeMap = [(
        "read_chart".to_owned(),
        [("path".to_owned(), "/srv/charts/p-*".to_owned())].into(),
    )]
    .into();
    let req = IssueRequest::new_signed(
        &key,
        "olivia",
        "bob",
        scope,
        600,
        1,
        "nonce-issue-0001",
        now,
    );
    let issued = g.issue_delegation(&req, now).unwrap();
    let secret = hex::decode(&issued.secret).unwrap();
    let id = msg(&g, &secret, &issued.delegation.id, 9, now).await;
    let c = Caller::default();
    let out = g
        .tool_call(
            &call(&id, "read_chart", json!({"path": "/srv/charts/q.json"})),
            c,
        )
        .await;
    assert_eq!(out.reason_code, reason::OUTSIDE_DELEGATION);
    let ok = g
        .tool_call(
            &call(&id, "read_chart", json!({"path": "/srv/charts/p-1.json"})),
            c,
        )
        .await;
    assert!(ok.is_allow(), "{ok:?}");
    let spent = g
        .tool_call(
            &call(&id, "read_chart", json!({"path": "/srv/charts/p-1.json"})),
            c,
        )
        .await;
    assert_eq!(spent.reason_code, reason::DELEGATION_USED_UP);
    let rows = rows(dir.path());
    let ctx = Context {
        policy_source: Some(DEMO),
        ..Default::default()
    };
    for (d, words) in [
        (&out, "outside the scope"),
        (&spent, "used all of its tool calls"),
    ] {
        let r = rows.iter().find(|r| r.seq == d.audit_seq.unwrap()).unwrap();
        let e = explain(r, &ctx);
        assert!(e.check.contains("step 3a"), "{}", e.check);
        assert!(e.why.contains(words), "{}", e.why);
        let cmd = e.fixes[0].command.as_deref().unwrap();
        assert!(
            cmd.starts_with("agentctl delegate issue --operator olivia "),
            "{cmd}"
        );
    }
}

#[test]
fn a_central_change_row_says_what_the_fleet_changed() {
    let mut ev =
        crate::audit::AuditEvent::new(crate::audit::RecordKind::Lifecycle, "fleet_central");
    ev.decision = "deny".into();
    ev.reason_code = "fleet_policy_refused".into();
    ev.target = "rev=7 error=bad".into();
    let r = Record::seal(
        1,
        "2026-12-03T05:00:00.000000Z".into(),
        ev,
        crate::audit::GENESIS_HASH.into(),
    );
    let e = explain(&r, &Context::default());
    assert!(
        e.why.contains("did not compile on this host") && e.why.contains("rev=7"),
        "{}",
        e.why
    );
    assert!(e.check.contains("central state"), "{}", e.check);
}

/// An escalation row's target leads with the approval it opened (and, for
/// a read-only session, the elevation asked): explain reads the call's
/// arguments after it, says what was asked, and names the approval.
#[tokio::test]
async fn escalation_rows_are_read_past_their_approval_prefix() {
    let (w, s) = world().await;
    let base = w.row(s["allowed"]).clone();
    let args = base.event.target.clone();
    let explain_as = |target: String, reason: &str| {
        let mut r = base.clone();
        r.event.decision = "escalate".into();
        r.event.reason_code = reason.into();
        r.event.target = target;
        let roles = w.roles["dr-chen"].clone();
        let ctx = Context {
            policy_source: Some(DEMO),
            policy_id: Some(&w.policy_id),
            operator_roles: Some(&roles),
            ..Context::default()
        };
        explain(&r, &ctx)
    };
    for (target, reason, asked) in [
        (
            format!("approval:ab12 deadline:1796212345 {args}"),
            reason::APPROVAL_REQUIRED,
            "to approve the call",
        ),
        (
            format!(
                "approval:ab12 deadline:1796212345 elevation:read_chart effect:mutating {args}"
            ),
            reason::ELEVATION_REQUIRED,
            "to elevate the read-only session for `read_chart` (effect class mutating)",
        ),
    ] {
        let e = explain_as(target, reason);
        assert_eq!(e.outcome, Outcome::Escalated);
        assert!(e.render_text().contains("ESCALATED"), "{}", e.render_text());
        let notes = e.notes.join("\n");
        assert!(!notes.contains("not JSON"), "{notes}");
        assert!(
            notes.contains(asked) && notes.contains("approval ab12"),
            "{notes}"
        );
        assert_eq!(
            e.fixes[0].command.as_deref(),
            Some("agentctl approvals list; agentctl approvals approve ab12")
        );
    }
    // Control: the same arguments with a prefix the gateway never writes
    // are not arguments (said so), and nothing is named.
    let e = explain_as(format!("approval:ab12 {args}"), reason::APPROVAL_REQUIRED);
    assert!(e.notes.join("\n").contains("not JSON"), "{:?}", e.notes);
    assert_eq!(
        e.fixes[0].command.as_deref(),
        Some("agentctl approvals list; agentctl approvals approve ID")
    );
}
