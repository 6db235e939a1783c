//! Adapter and mapping tests against each runtime's documented hook JSON.
use serde_json::{json, Value};

use super::mapping::{self, MapError, Overrides, Source, ToolRule};
use super::*;

fn bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn claude_bash(cmd: &str) -> Value {
    json!({
        "session_id": "abc123",
        "transcript_path": "/home/agent/.claude/projects/x/abc123.jsonl",
        "cwd": "/workspace",
        "prompt_id": "p-1",
        "permission_mode": "bypassPermissions",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": cmd, "description": "reset the mail server", "timeout": 120000},
        "tool_use_id": "toolu_01ABCdef234"
    })
}

#[test]
fn claude_code_pre_tool_use_parses_and_maps() {
    let req = prepare(
        Runtime::ClaudeCode,
        &bytes(claude_bash("mailctl reset --all")),
        Some("0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    assert_eq!(req.tool_name, "Bash");
    assert_eq!(req.tool_use_id.as_deref(), Some("toolu_01ABCdef234"));
    assert_eq!(
        req.active_message_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    let m = mapping::map(Runtime::ClaudeCode, &req.tool_name, &req.tool_input, None).unwrap();
    assert_eq!(m.action, "shell");
    // `description` and `timeout` are not passed on.
    assert_eq!(
        Value::Object(m.arguments),
        json!({"command": ["mailctl", "reset", "--all"]})
    );
}

#[test]
fn codex_hook_and_model_api_names_map_alike() {
    let hook = json!({
        "session_id": "s", "transcript_path": null, "cwd": "/workspace",
        "hook_event_name": "PreToolUse", "model": "gpt-5-codex", "turn_id": "turn-7",
        "tool_name": "Bash", "tool_input": {"command": "mailctl reset --all"},
        "tool_use_id": "call_Xy12"
    });
    let req = prepare(Runtime::Codex, &bytes(hook), Some("m")).unwrap();
    assert_eq!(req.tool_use_id.as_deref(), Some("call_Xy12"));
    let via_hook = mapping::map(Runtime::Codex, "Bash", &req.tool_input, None).unwrap();
    let api_input = json!({"cmd": "mailctl reset --all", "workdir": "/workspace"});
    let via_api = mapping::map(
        Runtime::Codex,
        "exec_command",
        api_input.as_object().unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(via_hook, via_api);
    let argv = json!({"command": ["bash", "-lc", "mailctl reset --all"]});
    let via_shell = mapping::map(Runtime::Codex, "shell", argv.as_object().unwrap(), None).unwrap();
    assert_eq!(via_hook, via_shell);
    // A shell given more than one script argument is not one program.
    let odd = json!({"command": ["bash", "-c", "ls", "x"]});
    assert_eq!(
        mapping::map(Runtime::Codex, "shell", odd.as_object().unwrap(), None)
            .unwrap_err()
            .reason_code(),
        reason::SHELL_SYNTAX_NOT_ALLOWED
    );
}

#[test]
fn gemini_before_tool_parses_and_maps() {
    let v = json!({
        "session_id": "s", "transcript_path": "/t", "cwd": "/workspace",
        "hook_event_name": "BeforeTool", "timestamp": "2026-12-01T10:00:00Z",
        "tool_name": "run_shell_command",
        "tool_input": {"command": "mailctl reset --all", "description": "d"}
    });
    let req = prepare(Runtime::Gemini, &bytes(v), Some("m")).unwrap();
    assert_eq!(req.tool_use_id, None);
    let m = mapping::map(Runtime::Gemini, &req.tool_name, &req.tool_input, None).unwrap();
    assert_eq!(m.action, "shell");
    let read = json!({"absolute_path": "/workspace/a.txt"});
    let m = mapping::map(
        Runtime::Gemini,
        "read_file",
        read.as_object().unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(
        (m.action.as_str(), Value::Object(m.arguments)),
        ("read_file", json!({"path": "/workspace/a.txt"}))
    );
}

#[test]
fn cursor_documented_events() {
    let shell = json!({
        "hook_event_name": "beforeShellExecution", "conversation_id": "c", "generation_id": "g",
        "workspace_roots": ["/workspace"], "command": "ls -la /workspace", "cwd": "/workspace"
    });
    let req = prepare(Runtime::Cursor, &bytes(shell), Some("m")).unwrap();
    assert_eq!(req.tool_name, "Shell");
    let m = mapping::map(Runtime::Cursor, "Shell", &req.tool_input, None).unwrap();
    assert_eq!(m.arguments["command"], json!(["ls", "-la", "/workspace"]));

    let read = json!({
        "hook_event_name": "beforeReadFile", "conversation_id": "c", "generation_id": "g",
        "workspace_roots": ["/workspace"], "file_path": "/workspace/.env", "content": "SECRET=1",
        "attachments": []
    });
    let req = prepare(Runtime::Cursor, &bytes(read), Some("m")).unwrap();
    assert_eq!(req.tool_name, "Read");
    // The file's content never leaves the hook.
    assert!(!serde_json::to_string(&req).unwrap().contains("SECRET"));

    for input in [
        json!({"query": "SELECT 1"}),
        json!("{\"query\": \"SELECT 1\"}"),
    ] {
        let mcp = json!({
            "hook_event_name": "beforeMCPExecution", "conversation_id": "c", "generation_id": "g",
            "workspace_roots": [], "tool_name": "database_query", "tool_input": input,
            "url": "http://localhost:3000"
        });
        let req = prepare(Runtime::Cursor, &bytes(mcp), Some("m")).unwrap();
        assert_eq!(req.tool_name, "mcp__unnamed__database_query");
        let m = mapping::map(Runtime::Cursor, &req.tool_name, &req.tool_input, None).unwrap();
        assert_eq!(m.action, "mcp.tool_call");
        assert_eq!(
            Value::Object(m.arguments),
            json!({"server": "unnamed", "tool": "database_query", "input": {"query": "SELECT 1"}})
        );
    }
    let other = json!({"hook_event_name": "afterFileEdit", "file_path": "/x"});
    assert_eq!(
        prepare(Runtime::Cursor, &bytes(other), None).unwrap_err(),
        Verdict::deny(
            reason::UNSUPPORTED_HOOK_EVENT,
            "cursor hook event `afterFileEdit` is not a pre-tool event agentd decides"
        )
    );
}

#[test]
fn claude_code_built_in_tools_and_mcp() {
    let cases = [
        (
            "Read",
            json!({"file_path": "/workspace/a", "offset": 1}),
            "read_file",
            json!({"path": "/workspace/a"}),
        ),
        (
            "Write",
            json!({"file_path": "/workspace/a", "content": "x"}),
            "write_file",
            json!({"path": "/workspace/a", "content": "x"}),
        ),
        (
            "Edit",
            json!({"file_path": "/workspace/a", "old_string": "a", "new_string": "b"}),
            "edit_file",
            json!({"path": "/workspace/a"}),
        ),
        (
            "Grep",
            json!({"pattern": "x", "path": "/srv"}),
            "search_files",
            json!({"pattern": "x", "path": "/srv"}),
        ),
        (
            "Glob",
            json!({"pattern": "*.rs"}),
            "search_files",
            json!({"pattern": "*.rs"}),
        ),
        (
            "WebFetch",
            json!({"url": "https://User@Docs.Example.com:8443/a?b#c", "prompt": "p"}),
            "web_fetch",
            json!({"domain": "docs.example.com", "url": "https://User@Docs.Example.com:8443/a?b#c"}),
        ),
        (
            "mcp__crm__find_contact",
            json!({"name": "Ann"}),
            "mcp.tool_call",
            json!({"server": "crm", "tool": "find_contact", "input": {"name": "Ann"}}),
        ),
    ];
    for (tool, input, action, args) in cases {
        let m = mapping::map(Runtime::ClaudeCode, tool, input.as_object().unwrap(), None)
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert_eq!(
            (m.action.as_str(), Value::Object(m.arguments)),
            (action, args),
            "{tool}"
        );
    }
    for tool in ["TodoWrite", "mcp__", "mcp__crm", "mcp____x", "bash"] {
        let e = mapping::map(Runtime::ClaudeCode, tool, &Map::new(), None).unwrap_err();
        assert_eq!(e.reason_code(), reason::UNKNOWN_TOOL, "{tool}");
    }
    let e = mapping::map(
        Runtime::ClaudeCode,
        "Bash",
        json!({"command": "ls /workspace && mailctl reset --all"})
            .as_object()
            .unwrap(),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, MapError::ShellSyntax { .. }), "{e}");
    let e = mapping::map(
        Runtime::ClaudeCode,
        "Bash",
        json!({"command": 5}).as_object().unwrap(),
        None,
    )
    .unwrap_err();
    assert_eq!(e.reason_code(), reason::INVALID_TOOL_INPUT);
}

#[test]
fn policy_overrides_win_over_defaults() {
    let mut o = Overrides::new();
    o.insert(
        "TodoWrite".into(),
        ToolRule {
            action: "todo".into(),
            args: vec![("items".into(), Source::parse("/todos").unwrap())],
        },
    );
    o.insert(
        "Bash".into(),
        ToolRule {
            action: "run".into(),
            args: vec![("argv".into(), Source::parse("words:command").unwrap())],
        },
    );
    o.insert(
        mapping::MCP_WILDCARD.into(),
        ToolRule {
            action: "crm_call".into(),
            args: vec![("tool".into(), Source::ToolName)],
        },
    );
    let m = mapping::map(
        Runtime::ClaudeCode,
        "TodoWrite",
        json!({"todos": [1]}).as_object().unwrap(),
        Some(&o),
    )
    .unwrap();
    assert_eq!(
        (m.action.as_str(), &m.arguments["items"]),
        ("todo", &json!([1]))
    );
    let m = mapping::map(
        Runtime::ClaudeCode,
        "Bash",
        json!({"command": "ls"}).as_object().unwrap(),
        Some(&o),
    )
    .unwrap();
    assert_eq!(m.action, "run");
    let m = mapping::map(Runtime::ClaudeCode, "mcp__crm__x", &Map::new(), Some(&o)).unwrap();
    assert_eq!(
        (m.action.as_str(), &m.arguments["tool"]),
        ("crm_call", &json!("mcp__crm__x"))
    );
    // Defaults still apply where the policy says nothing.
    let m = mapping::map(
        Runtime::ClaudeCode,
        "Read",
        json!({"file_path": "/a"}).as_object().unwrap(),
        Some(&o),
    )
    .unwrap();
    assert_eq!(m.action, "read_file");
    assert!(Source::parse("$nope").is_err());
    assert!(Source::parse("a b").is_err());
    assert!(Source::parse("words:").is_err());
}

#[test]
fn every_default_maps_to_a_known_action_shape() {
    for rt in Runtime::ALL {
        for tool in mapping::default_tools(rt) {
            let rule = mapping::default_rule(rt, tool).unwrap();
            assert!(!rule.action.is_empty(), "{rt} {tool}");
        }
        assert_eq!(Runtime::parse(rt.name()), Some(rt));
    }
}

#[test]
fn bad_input_is_a_deny_in_the_runtime_format_with_exit_2() {
    let big = vec![b' '; MAX_HOOK_INPUT + 1];
    let full = bytes(claude_bash("ls"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            full[..full.len() / 2].to_vec(),
            reason::MALFORMED_HOOK_INPUT,
        ),
        ("not json", b"hello".to_vec(), reason::MALFORMED_HOOK_INPUT),
        ("empty", Vec::new(), reason::MALFORMED_HOOK_INPUT),
        ("array", b"[]".to_vec(), reason::MALFORMED_HOOK_INPUT),
        ("non-utf8", vec![b'{', 0xff, b'}'], reason::INVALID_UTF8),
        ("too large", big, reason::HOOK_INPUT_TOO_LARGE),
    ];
    for rt in Runtime::ALL {
        for (name, input, code) in &cases {
            let v = prepare(rt, input, Some("m")).unwrap_err();
            let Verdict::Deny { reason_code, .. } = &v else {
                panic!("{rt} {name}: {v:?}");
            };
            assert_eq!(reason_code, code, "{rt} {name}");
            let a = render(rt, &v);
            assert_eq!(a.exit_code, EXIT_DENY, "{rt} {name}");
            assert!(a.stderr.contains(code), "{rt} {name}: {}", a.stderr);
            let out: Value = serde_json::from_str(&a.stdout).unwrap();
            let denied = match rt {
                Runtime::ClaudeCode | Runtime::Codex => {
                    out["hookSpecificOutput"]["permissionDecision"] == "deny"
                        && out["hookSpecificOutput"]["hookEventName"] == "PreToolUse"
                }
                Runtime::Gemini => out["decision"] == "deny",
                Runtime::Cursor => out["permission"] == "deny",
            };
            assert!(denied, "{rt} {name}: {out}");
        }
    }
    // Claude-shaped inputs with the wrong parts.
    for v in [
        json!({"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {}}),
        json!({"hook_event_name": "PreToolUse", "tool_input": {}}),
        json!({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": "ls"}),
        json!({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {}, "tool_use_id": "a b"}),
        json!({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {}, "tool_use_id": 7}),
    ] {
        assert!(
            prepare(Runtime::ClaudeCode, &bytes(v.clone()), Some("m")).is_err(),
            "{v}"
        );
    }
}

#[test]
fn allow_and_no_opinion_per_runtime() {
    let allow = Verdict::Allow {
        call_id: "c".repeat(32),
    };
    let c = render(Runtime::ClaudeCode, &allow);
    let out: Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(
        (
            c.exit_code,
            &out["hookSpecificOutput"]["permissionDecision"]
        ),
        (0, &json!("allow"))
    );
    // Codex ignores allow: silence lets the tool run.
    assert_eq!(render(Runtime::Codex, &allow), silent());
    let g: Value = serde_json::from_str(&render(Runtime::Gemini, &allow).stdout).unwrap();
    assert_eq!(g["decision"], "allow");
    let cu: Value = serde_json::from_str(&render(Runtime::Cursor, &allow).stdout).unwrap();
    assert_eq!(cu["permission"], "allow");
    for rt in Runtime::ALL {
        assert_eq!(render(rt, &Verdict::NoOpinion), silent(), "{rt}");
    }
}

/// The fuzz targets' property (fuzz/fuzz_targets/hook_common.rs) over the
/// seed corpora cut at every byte and with bytes replaced: the local half
/// builds a request for agentd or denies in the runtime's format; it never
/// allows and never stays silent.
#[test]
fn no_input_is_allowed_without_agentd() {
    let seeds: [(Runtime, &str); 6] = [
        (
            Runtime::ClaudeCode,
            include_str!("../../../fuzz/seeds/hook_claude_code/bash.json"),
        ),
        (
            Runtime::ClaudeCode,
            include_str!("../../../fuzz/seeds/hook_claude_code/mcp.json"),
        ),
        (
            Runtime::Codex,
            include_str!("../../../fuzz/seeds/hook_codex/bash.json"),
        ),
        (
            Runtime::Gemini,
            include_str!("../../../fuzz/seeds/hook_gemini/shell.json"),
        ),
        (
            Runtime::Cursor,
            include_str!("../../../fuzz/seeds/hook_cursor/shell.json"),
        ),
        (
            Runtime::Cursor,
            include_str!("../../../fuzz/seeds/hook_cursor/mcp.json"),
        ),
    ];
    let mut checked = 0;
    for (rt, seed) in seeds {
        let seed = seed.as_bytes();
        assert!(prepare(rt, seed, Some("m")).is_ok(), "{rt} seed must parse");
        let mut inputs: Vec<Vec<u8>> = (0..seed.len()).map(|n| seed[..n].to_vec()).collect();
        for i in 0..seed.len() {
            for b in [b'"', b'{', b'}', b'\\', 0xff, 0, b'a'] {
                let mut v = seed.to_vec();
                v[i] = b;
                inputs.push(v);
            }
        }
        for input in inputs {
            match prepare(rt, &input, Some("m")) {
                Ok(req) => {
                    assert_eq!(req.runtime, rt);
                    let _ = mapping::map(rt, &req.tool_name, &req.tool_input, None);
                }
                Err(Verdict::Deny { reason_code, .. }) => {
                    let a = render(rt, &Verdict::deny(&reason_code, ""));
                    assert_eq!(a.exit_code, EXIT_DENY);
                    assert!(serde_json::from_str::<Value>(&a.stdout).is_ok());
                }
                Err(other) => panic!("{rt}: {other:?} without agentd"),
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn numbers_in_tool_input_keep_their_value_across_the_wire() {
    // Found by the hook fuzz targets: `70e000100` parsed to
    // 6.999999999999999e101 and re-parsed to 7e101 after being sent on, so the
    // value decided on was neither what the runtime sent nor what arrived.
    for (raw, want) in [
        ("70e000100", 7e101),
        ("8.300000000444444e141", 8.300000000444444e141),
    ] {
        let stdin = format!(
            r#"{{"hook_event_name":"PreToolUse","tool_name":"mcp__crm__find","tool_input":{{"n":{raw}}}}}"#
        );
        let req = prepare(
            Runtime::ClaudeCode,
            stdin.as_bytes(),
            Some("0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(req.tool_input["n"].as_f64(), Some(want), "{raw}");
        let back: RuntimeCallRequest =
            serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(back, req, "{raw}");
    }
}
