//! Policy tests against the real demo policy file and small broken variants.
use serde_json::{json, Map, Value};

use super::*;
use crate::protocol::reason;

const DEMO: &str = include_str!("../../../policies/demo.toml");

fn demo() -> CompiledPolicy {
    compile(DEMO, "policies/demo.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn eval(
    p: &CompiledPolicy,
    op: &str,
    role: &str,
    action: &str,
    a: Value,
) -> Result<Allowed, Denial> {
    p.evaluate(op, &[role.to_owned()], action, &args(a))
}

fn reason_of(r: Result<Allowed, Denial>) -> &'static str {
    match r {
        Ok(a) => panic!("expected a denial, got allow by {}", a.role),
        Err(d) => d.reason,
    }
}

#[test]
fn demo_policy_compiles_with_versioned_id() {
    let p = demo();
    assert!(
        p.id.starts_with("demo@") && p.id.len() == "demo@".len() + 12,
        "{}",
        p.id
    );
    assert_eq!(
        p.role_names(),
        [
            "clinician",
            "guest",
            "member",
            "owner",
            "scribe",
            "service",
            "vendor"
        ]
    );
}

#[test]
fn clinician_reads_chart_in_scope_and_gets_grant() {
    let a = eval(
        &demo(),
        "dr-chen",
        "clinician",
        "read_chart",
        json!({"path": "/srv/charts//p-0042.json"}),
    )
    .unwrap();
    let g = a.grant.unwrap();
    assert_eq!(
        g.read,
        [std::path::PathBuf::from("/srv/charts/p-0042.json")]
    );
    assert_eq!((g.ttl_secs, g.uses), (60, 1));
}

#[test]
fn an_action_can_keep_its_target_off_receipt_cards() {
    let p = demo();
    let chart = eval(
        &p,
        "dr-chen",
        "clinician",
        "read_chart",
        json!({"path": "/srv/charts/p-0042.json"}),
    )
    .unwrap();
    assert!(chart.receipt_redact, "demo: a chart's path is redacted");
    let mail = eval(
        &p,
        "dr-chen",
        "clinician",
        "send_email",
        json!({"to": "ward3@clinic.example", "subject": "s", "body": "b"}),
    )
    .unwrap();
    assert!(!mail.receipt_redact, "the default shows the target");
    // A misspelt key is refused, not ignored (a redaction that silently
    // does nothing would show what it was meant to hide).
    let typo = DEMO.replace("receipt_redact = true", "receipt_redacted = true");
    assert_ne!(typo, DEMO);
    let err = compile(&typo, "typo.toml").unwrap_err().to_string();
    assert!(err.contains("receipt_redacted"), "{err}");
    let wrong_type = DEMO.replace("receipt_redact = true", "receipt_redact = \"yes\"");
    assert!(compile(&wrong_type, "type.toml").is_err());
}

#[test]
fn path_scope_and_traversal() {
    let p = demo();
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "read_chart",
            json!({"path": "/etc/shadow"})
        )),
        reason::PATH_OUTSIDE_SCOPE
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "read_chart",
            json!({"path": "/srv/charts/../../etc/shadow"})
        )),
        reason::INVALID_PATH
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "read_chart",
            json!({"path": "/srv/charts/a\u{0}b"})
        )),
        reason::INVALID_PATH
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "read_chart",
            json!({"path": "/srv/chartsX/a"})
        )),
        reason::PATH_OUTSIDE_SCOPE
    );
}

#[test]
fn recipients_domain_allow_list() {
    let p = demo();
    let mail = |to: Value| json!({"to": to, "subject": "s", "body": "b"});
    eval(
        &p,
        "d",
        "clinician",
        "send_email",
        mail(json!("nurse@clinic.example")),
    )
    .unwrap();
    eval(
        &p,
        "d",
        "clinician",
        "send_email",
        mail(json!(["a@ward3.clinic.example", "B@Clinic.Example"])),
    )
    .unwrap();
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "send_email",
            mail(json!("x@evil.example"))
        )),
        reason::RECIPIENT_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "send_email",
            mail(json!("x@clinic.example.evil.example"))
        )),
        reason::RECIPIENT_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "send_email",
            mail(json!("x@clinic.example, y@evil.example"))
        )),
        reason::RECIPIENT_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "send_email",
            mail(json!([
                "a@clinic.example",
                "b@clinic.example",
                "c@clinic.example",
                "d@clinic.example"
            ]))
        )),
        reason::SIZE_LIMIT_EXCEEDED
    );
    // Owner may mail the vendor; the clinician may not.
    eval(
        &p,
        "o",
        "owner",
        "send_email",
        mail(json!("billing@acme-supplies.example")),
    )
    .unwrap();
    assert_eq!(
        reason_of(eval(
            &p,
            "d",
            "clinician",
            "send_email",
            mail(json!("billing@acme-supplies.example"))
        )),
        reason::RECIPIENT_NOT_ALLOWED
    );
}

#[test]
fn guest_gets_role_and_destructive_denials() {
    let p = demo();
    assert_eq!(
        reason_of(eval(
            &p,
            "g",
            "guest",
            "shell",
            json!({"command": "ls -la /workspace"})
        )),
        reason::ROLE_NOT_IN_ALLOWLIST
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "g",
            "guest",
            "read_mailbox",
            json!({"mailbox": "g"})
        )),
        reason::ROLE_NOT_IN_ALLOWLIST
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "g",
            "guest",
            "write_file",
            json!({"path": "/home/agent/heartbeat.sh", "content": "curl x|sh"})
        )),
        reason::DESTRUCTIVE_OP_OWNER_ONLY
    );
    eval(
        &p,
        "g",
        "guest",
        "write_file",
        json!({"path": "/workspace/scratch/n.txt", "content": "hi"}),
    )
    .unwrap();
    // The owner may write the same file.
    let a = eval(
        &p,
        "o",
        "owner",
        "write_file",
        json!({"path": "/home/agent/heartbeat.sh", "content": "x"}),
    )
    .unwrap();
    assert!(a.destructive);
}

#[test]
fn commands_are_allow_listed_and_destructive_ones_owner_only() {
    let p = demo();
    let a = eval(
        &p,
        "m",
        "member",
        "shell",
        json!({"command": "ls -la /workspace"}),
    )
    .unwrap();
    assert_eq!(
        a.grant.unwrap().exec,
        [std::path::PathBuf::from("/usr/bin/ls")]
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "m",
            "member",
            "shell",
            json!({"command": "rm -rf /workspace/*"})
        )),
        reason::DESTRUCTIVE_OP_OWNER_ONLY
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "o",
            "owner",
            "shell",
            json!({"command": "rm -rf /workspace/*"})
        )),
        reason::COMMAND_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "m",
            "member",
            "shell",
            json!({"command": ["mailctl", "reset", "--all"]})
        )),
        reason::DESTRUCTIVE_OP_OWNER_ONLY
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "m",
            "member",
            "shell",
            json!({"command": "cat /etc/passwd"})
        )),
        reason::PATH_OUTSIDE_SCOPE
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "m",
            "member",
            "shell",
            json!({"command": "/tmp/ls /workspace"})
        )),
        reason::COMMAND_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "m",
            "member",
            "shell",
            json!({"command": "curl x"})
        )),
        reason::COMMAND_NOT_ALLOWED
    );
    let a = eval(
        &p,
        "o",
        "owner",
        "shell",
        json!({"command": "mailctl reset --all"}),
    )
    .unwrap();
    assert!(a.destructive);
}

#[test]
fn vendor_reads_only_its_own_invoices() {
    let p = demo();
    eval(
        &p,
        "acme",
        "vendor",
        "read_invoice",
        json!({"path": "/srv/invoices/acme/inv_2042.pdf"}),
    )
    .unwrap();
    assert_eq!(
        reason_of(eval(
            &p,
            "acme",
            "vendor",
            "read_invoice",
            json!({"path": "/srv/invoices/globex/inv_7.pdf"})
        )),
        reason::PATH_OUTSIDE_SCOPE
    );
}

#[test]
fn service_mcp_call_and_argument_shapes() {
    let p = demo();
    eval(
        &p,
        "svc",
        "service",
        "mcp.tool_call",
        json!({"server": "crm", "tool": "lookup_contact", "input": {"q": "acme"}}),
    )
    .unwrap();
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": "shell", "tool": "x"})
        )),
        reason::VALUE_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": "crm"})
        )),
        reason::MISSING_ARGUMENT
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": "crm", "tool": "t", "x": 1})
        )),
        reason::UNKNOWN_ARGUMENT
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": 5, "tool": "t"})
        )),
        reason::INVALID_ARGUMENT
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": "crm", "tool": "../x"})
        )),
        reason::INVALID_ARGUMENT
    );
    let big = "x".repeat(9000);
    assert_eq!(
        reason_of(eval(
            &p,
            "svc",
            "service",
            "mcp.tool_call",
            json!({"server": "crm", "tool": "t", "input": big})
        )),
        reason::SIZE_LIMIT_EXCEEDED
    );
    assert_eq!(
        reason_of(eval(&p, "svc", "service", "launch_missiles", json!({}))),
        reason::UNKNOWN_ACTION
    );
}

#[test]
fn mailbox_value_bound_to_operator_and_integer_range() {
    let p = demo();
    let a = eval(
        &p,
        "sam",
        "member",
        "read_mailbox",
        json!({"mailbox": "sam", "limit": 10}),
    )
    .unwrap();
    assert_eq!(
        a.grant.unwrap().read,
        [std::path::PathBuf::from("/var/mail/sam")]
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "sam",
            "member",
            "read_mailbox",
            json!({"mailbox": "olivia"})
        )),
        reason::VALUE_NOT_ALLOWED
    );
    assert_eq!(
        reason_of(eval(
            &p,
            "sam",
            "member",
            "read_mailbox",
            json!({"mailbox": "sam", "limit": 500})
        )),
        reason::VALUE_OUT_OF_RANGE
    );
}

#[test]
fn multiple_roles_first_allowing_role_wins() {
    let p = demo();
    let roles = ["guest".to_owned(), "owner".to_owned()];
    let a = p
        .evaluate(
            "o",
            &roles,
            "write_file",
            &args(json!({"path": "/home/agent/x", "content": ""})),
        )
        .unwrap();
    assert_eq!(a.role, "owner");
    assert_eq!(
        p.evaluate("o", &[], "write_file", &Map::new())
            .unwrap_err()
            .reason,
        reason::ROLE_NOT_IN_ALLOWLIST
    );
}

fn refused(src: &str) -> String {
    compile(src, "bad.toml").unwrap_err().to_string()
}

#[test]
fn broken_policies_are_refused_precisely() {
    let e = refused("id = \"x\"\nrolez = {}\n");
    assert!(e.contains("rolez"), "{e}");
    let e = refused("id = \"x\"\n[roles.r.allow.nope]\n");
    assert!(
        e.contains("roles.r.allow.nope") && e.contains("not defined"),
        "{e}"
    );
    let e = refused("id = \"x\"\n[actions.a]\n[roles.r.allow.a]\np = { type = \"path\", scopes = [\"rel/dir\"] }\n");
    assert!(
        e.contains("roles.r.allow.a.p.scopes[0]") && e.contains("not absolute"),
        "{e}"
    );
    let e = refused("id = \"x\"\n[actions.a]\n[roles.r.allow.a]\np = { type = \"text\", scopes = [\"/x\"], max_bytes = 3 }\n");
    assert!(
        e.contains("roles.r.allow.a.p.scopes") && e.contains("not valid"),
        "{e}"
    );
    let e = refused("id = \"x\"\n[actions.a]\ngrant = { read = [\"{arg.p}\"], ttl_secs = 5 }\n[roles.r.allow.a]\np = { type = \"text\", max_bytes = 3 }\n");
    assert!(e.contains("actions.a.grant.read[0]"), "{e}");
    let e = refused(
        "id = \"x\"\n[actions.a]\ngrant = { connect = [\"example.com:25\"], ttl_secs = 5 }\n",
    );
    assert!(e.contains("actions.a.grant.connect[0]"), "{e}");
    let e = refused("id = \"x\"\n[actions.a]\n[roles.r.allow.a]\nto = { type = \"recipients\", domains = [\"Bad Domain\"] }\n");
    assert!(e.contains("domains[0]"), "{e}");
    let e = refused("id = \"x\"\n[roles.r]\nrate_per_minute = 0\n");
    assert!(e.contains("rate_per_minute"), "{e}");
    let e = refused("id = \"x\"\n[actions.a]\n[roles.r.allow.a]\np = { type = \"nonsense\" }\n");
    assert!(e.contains("nonsense"), "{e}");
    let e = refused("id = 3");
    assert!(e.contains("bad.toml"), "{e}");
}

#[test]
fn the_runtime_mapping_example_in_the_docs_compiles() {
    use crate::runtime::{mapping, Runtime};
    let doc = include_str!("../../../docs/runtimes.md");
    let marker = "```toml\n# Claude Code's TodoWrite";
    let start = doc.find(marker).expect("the mapping example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let text = format!(
        "{}\n{}",
        include_str!("../../../policies/demo.toml"),
        &doc[start..end]
    );
    let p = compile(&text, "docs/runtimes.md").unwrap_or_else(|e| panic!("{e}"));
    let claude = p.runtime_tools(Runtime::ClaudeCode).unwrap();
    assert_eq!(claude["TodoWrite"].action, "todo");
    assert_eq!(claude["Bash"].action, "run_program");
    assert!(p
        .runtime_tools(Runtime::Gemini)
        .unwrap()
        .contains_key(mapping::MCP_WILDCARD));
    let m = mapping::map(
        Runtime::ClaudeCode,
        "Bash",
        serde_json::json!({"command": "ls /srv"})
            .as_object()
            .unwrap(),
        Some(claude),
    )
    .unwrap();
    let allowed = p
        .evaluate("olivia", &["owner".into()], &m.action, &m.arguments)
        .unwrap();
    assert_eq!(
        allowed.grant.unwrap().exec,
        [std::path::PathBuf::from("/usr/bin/ls")]
    );
}

#[test]
fn mcp_tool_mappings_and_the_filter_switch() {
    let src = "id = \"x\"\n[actions.\"contacts.lookup\"]\n[actions.\"mcp.crm.notes\"]\n\
               [roles.sales.allow.\"contacts.lookup\"]\n\
               [mcp]\nfilter_tools = true\n\
               [mcp.servers.crm]\ntools = { FindContact = \"contacts.lookup\" }\n\
               [mcp.servers.web]\nfilter_tools = false\n";
    let p = compile(src, "mcp.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.mcp_tool_action("crm", "FindContact"),
        Some("contacts.lookup")
    );
    assert_eq!(p.mcp_tool_action("crm", "findcontact"), None, "exact names");
    assert_eq!(p.mcp_tool_action("web", "FindContact"), None);
    assert!(p.mcp_filter_tools("crm") && p.mcp_filter_tools("other"));
    assert!(!p.mcp_filter_tools("web"));
    let sales = ["sales".to_owned()];
    assert!(p.roles_allow(&sales, "contacts.lookup"));
    assert!(
        !p.roles_allow(&sales, "mcp.crm.notes"),
        "defined, not allowed"
    );
    assert!(!p.roles_allow(&[], "contacts.lookup"));
    let e = refused("id = \"x\"\n[mcp.servers.crm]\ntools = { FindContact = \"nope\" }\n");
    assert!(
        e.contains("mcp.servers.crm.tools.FindContact") && e.contains("unknown action"),
        "{e}"
    );
    let e = refused("id = \"x\"\n[actions.\"mcp_request.crm.sampling\"]\n[mcp.servers.crm]\ntools = { Ask = \"mcp_request.crm.sampling\" }\n");
    assert!(e.contains("not a tool call"), "{e}");
    let e = refused("id = \"x\"\n[mcp.servers.Crm]\n");
    assert!(e.contains("mcp.servers.Crm"), "{e}");
}

#[test]
fn usage_thresholds_compile_and_bad_ones_are_refused() {
    let base = "id = \"x\"\n[actions.a]\n[roles.r]\n[roles.r.allow.a]\n";
    let p = compile(
        &format!("{base}[roles.r.limits.a]\nmax_uses = 5\nwindow_secs = 3600\n"),
        "t.toml",
    )
    .unwrap();
    let allowed = p
        .evaluate("op", &["r".into()], "a", &serde_json::Map::new())
        .unwrap();
    assert_eq!(
        allowed.usage,
        Some(crate::policy::schema::UsageLimit {
            max_uses: 5,
            window_secs: 3600,
            escalate_after: None,
        })
    );
    // Control: without a threshold there is none.
    let p = compile(base, "t.toml").unwrap();
    let allowed = p
        .evaluate("op", &["r".into()], "a", &serde_json::Map::new())
        .unwrap();
    assert_eq!(allowed.usage, None);
    for (limits, expect) in [
        (
            "[roles.r.limits.b]\nmax_uses = 1\nwindow_secs = 1\n",
            "roles.r.limits.b",
        ),
        (
            "[roles.r.limits.a]\nmax_uses = 0\nwindow_secs = 1\n",
            "roles.r.limits.a.max_uses",
        ),
        (
            "[roles.r.limits.a]\nmax_uses = 10001\nwindow_secs = 1\n",
            "max_uses",
        ),
        (
            "[roles.r.limits.a]\nmax_uses = 1\nwindow_secs = 0\n",
            "roles.r.limits.a.window_secs",
        ),
        (
            "[roles.r.limits.a]\nmax_uses = 1\nwindow_secs = 2592001\n",
            "window_secs",
        ),
        ("[roles.r.limits.a]\nmax_uses = 1\n", "window_secs"),
        (
            "[roles.r.limits.a]\nmax_uses = 2\nwindow_secs = 1\nescalate_after = 2\n",
            "roles.r.limits.a.escalate_after",
        ),
        (
            "[roles.r.limits.a]\nmax_uses = 2\nwindow_secs = 1\nescalate_afterr = 1\n",
            "escalate_afterr",
        ),
    ] {
        let e = refused(&format!("{base}{limits}"));
        assert!(e.contains(expect), "{limits}: {e}");
    }
}

/// `policy` refused at load, the error's location and message.
fn refused_at(policy: &str) -> (String, String) {
    match compile(policy, "t.toml") {
        Err(PolicyError::Invalid { at, message, .. }) => (at, message),
        Err(e @ PolicyError::Parse { .. }) => ("(parse)".into(), e.to_string()),
        Ok(_) => panic!("compiled:\n{policy}"),
    }
}

#[test]
fn effect_classes_come_from_the_policy_the_flag_or_the_name() {
    let p = compile(
        r#"
id = "effects"
[actions.send_email]
effect = "read"
[actions.wipe_disk]
[actions.archive]
destructive = true
[actions.rotate_keys]
effect = "admin"
destructive = true
[actions."mcp.fs.list_dir"]
[actions.frobnicate]
"#,
        "t.toml",
    )
    .unwrap();
    let got: Vec<(String, &str, String)> = p
        .effects()
        .into_iter()
        .map(|(n, e, s)| (n, e.as_str(), s.to_string()))
        .collect();
    let want = [
        ("archive", "destructive", "destructive = true"),
        ("frobnicate", "mutating", "no keyword: default"),
        ("mcp.fs.list_dir", "read", "name keyword `list`"),
        ("rotate_keys", "admin", "declared"),
        ("send_email", "read", "declared"),
        ("wipe_disk", "destructive", "name keyword `wipe`"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b, c)| (a.to_owned(), b, c.to_owned()))
            .to_vec()
    );
    // An undefined action is classed by its name.
    assert_eq!(p.effect_of("drop_table").0, effect::Effect::Destructive);
}

#[test]
fn a_declared_destructive_effect_is_owner_only_a_guessed_one_is_not() {
    let p = compile(
        r#"
id = "effects"
[actions.purge]
effect = "destructive"
[actions.delete_draft]
[roles.member]
[roles.member.allow.purge]
[roles.member.allow.delete_draft]
"#,
        "t.toml",
    )
    .unwrap();
    let m = |a: &str| p.evaluate("olivia", &["member".into()], a, &Map::new());
    assert_eq!(reason_of(m("purge")), reason::DESTRUCTIVE_OP_OWNER_ONLY);
    // Classed destructive by its name only: the allow-list decides as before.
    assert!(m("delete_draft").is_ok());
}

#[test]
fn bad_effects_sessions_and_anomaly_are_refused_with_their_location() {
    let (at, msg) = refused_at("id = \"x\"\n[actions.a]\neffect = \"write\"\n");
    assert_eq!(at, "actions.a.effect");
    assert!(msg.contains("unknown effect `write`"), "{msg}");
    let (at, msg) = refused_at("id = \"x\"\n[actions.a]\ndestructive = true\neffect = \"read\"\n");
    assert_eq!(at, "actions.a.effect");
    assert!(msg.contains("contradicts"), "{msg}");
    let (at, _) = refused_at("id = \"x\"\n[sessions]\nelevation_secs = 0\n");
    assert_eq!(at, "sessions.elevation_secs");
    let (at, msg) = refused_at("id = \"x\"\n[sessions]\nstart = \"readonly\"\n");
    assert_eq!(at, "(parse)");
    assert!(msg.contains("readonly"), "{msg}");
    let (at, _) = refused_at("id = \"x\"\n[sessions]\nmode = \"full\"\n");
    assert_eq!(at, "(parse)");
    let (at, msg) = refused_at("id = \"x\"\n[anomaly]\nmax_denial_rate = 30\n");
    assert_eq!(at, "anomaly.max_denial_rate");
    assert!(msg.contains("0.3 = 30 %"), "{msg}");
    let (at, _) = refused_at("id = \"x\"\n[anomaly]\nmax_write_ratio = 0\n");
    assert_eq!(at, "anomaly.max_write_ratio");
    let (at, _) = refused_at("id = \"x\"\n[anomaly]\nmin_calls = 0\n");
    assert_eq!(at, "anomaly.min_calls");
    let (at, _) = refused_at("id = \"x\"\n[anomaly]\nthen = \"block\"\n");
    assert_eq!(at, "(parse)");
    // Defaults: a full session start, 300 s elevations, anomaly off.
    let p = compile("id = \"x\"\n", "t.toml").unwrap();
    assert_eq!(p.sessions.start, schema::SessionStart::Full);
    assert_eq!(p.sessions.elevation_secs, 300);
    assert!(p.anomaly.is_none());
    let p = compile("id = \"x\"\n[anomaly]\n", "t.toml").unwrap();
    let a = p.anomaly.unwrap();
    assert_eq!(
        (a.min_calls, a.max_denial_rate, a.max_write_ratio),
        (5, 0.3, 0.8)
    );
    assert_eq!(a.then, schema::AnomalyThen::Approval);
}
