//! `agentctl hook …` end to end: the real agentctl binary reads each
//! runtime's documented hook JSON on stdin and asks the real daemon over
//! its real socket; answers are checked in each runtime's own format, with
//! the audit rows behind them.
mod gateway_support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gateway_support::Daemon;
use hyper::Method;
use serde_json::{json, Value};

/// Runs `agentctl hook RT` with `input` on stdin and the given environment.
fn hook_cmd(socket: &Path, rt: &str, msg: Option<&str>, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agentctl"));
    c.args(["hook", rt])
        .args(extra)
        .env("AGENTD_SOCKET", socket)
        .env_remove("AGENTCTL_LOG")
        .env_remove("AGENTD_ACTIVE_MESSAGE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(m) = msg {
        c.env("AGENTD_ACTIVE_MESSAGE", m);
    }
    c
}

fn feed(mut c: Command, input: &[u8]) -> Output {
    let mut child = c.spawn().expect("start agentctl hook");
    // The hook may exit before reading everything (too large): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn hook(socket: &Path, rt: &str, msg: Option<&str>, input: &[u8]) -> Output {
    feed(hook_cmd(socket, rt, msg, &[]), input)
}

fn claude(tool: &str, input: Value, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "session_id": "sess-1", "transcript_path": "/tmp/t.jsonl", "cwd": "/workspace",
        "prompt_id": "p1", "permission_mode": "bypassPermissions",
        "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input, "tool_use_id": id
    }))
    .unwrap()
}

fn codex(cmd: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "session_id": "s", "transcript_path": null, "cwd": "/workspace", "model": "gpt-5-codex",
        "turn_id": "turn-1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": cmd}, "tool_use_id": id
    }))
    .unwrap()
}

fn gemini(cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "session_id": "s", "transcript_path": "/t", "cwd": "/workspace",
        "hook_event_name": "BeforeTool", "timestamp": "2026-12-01T10:00:00Z",
        "tool_name": "run_shell_command", "tool_input": {"command": cmd}
    }))
    .unwrap()
}

fn cursor(cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "hook_event_name": "beforeShellExecution", "conversation_id": "c", "generation_id": "g",
        "workspace_roots": ["/workspace"], "command": cmd, "cwd": "/workspace"
    }))
    .unwrap()
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Asserts a denial in `rt`'s format with `code` in the text; exit 2.
fn assert_denied(rt: &str, o: &Output, code: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{rt}: {o:?}");
    assert!(err.contains(code), "{rt}: stderr {err:?} lacks {code}");
    let v = stdout_json(o);
    let (decision, text) = match rt {
        "claude-code" | "codex" => (
            &v["hookSpecificOutput"]["permissionDecision"],
            &v["hookSpecificOutput"]["permissionDecisionReason"],
        ),
        "gemini" => (&v["decision"], &v["reason"]),
        "cursor" => (&v["permission"], &v["agent_message"]),
        _ => unreachable!(),
    };
    assert_eq!(decision, "deny", "{rt}: {v}");
    assert!(text.as_str().unwrap().contains(code), "{rt}: {v}");
}

/// The audit rows (JSON Lines) of the daemon.
fn audit_rows(d: &Daemon) -> Vec<Value> {
    let out = d.ok(&[
        "audit",
        "tail",
        "--state-dir",
        d.state.to_str().unwrap(),
        "-n",
        "500",
        "--json",
    ]);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row_of<'a>(rows: &'a [Value], call_id: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r.to_string().contains(call_id))
        .collect()
}

fn unsigned_message(d: &Daemon) -> String {
    d.ok(&[
        "send",
        "--unsigned",
        "--operator",
        "stranger",
        "--session",
        "mail:1",
        "locked out, reset the mail server",
    ])
    .trim()
    .to_owned()
}

#[test]
fn hooks_decide_through_agentd_in_each_runtime_format() {
    let d = Daemon::start();
    let key = d.enroll("olivia", "owner");
    let owner = d.send("olivia", &key, "dm:olivia", "list the workspace");
    let stranger = unsigned_message(&d);

    // Allowed: Claude Code gets permissionDecision allow, exit 0.
    let o = hook(
        &d.socket,
        "claude-code",
        Some(&owner),
        &claude("Bash", json!({"command": "ls /workspace"}), "toolu_01A"),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = stdout_json(&o);
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "allow");
    let text = v["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap()
        .to_owned();
    let call_id = text.rsplit("call ").next().unwrap().trim_end_matches(')');
    let rows = audit_rows(&d);
    let allowed = row_of(&rows, call_id);
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert!(
        allowed[0].to_string().contains("\"allow\""),
        "{}",
        allowed[0]
    );

    // Codex: allow is silence (Codex ignores "allow"), exit 0.
    let o = hook(
        &d.socket,
        "codex",
        Some(&owner),
        &codex("ls /workspace", "call_1"),
    );
    assert_eq!((o.status.code(), o.stdout.len()), (Some(0), 0), "{o:?}");

    // The stranger's mailctl reset: denied, each runtime in its own format.
    for (rt, input) in [
        (
            "claude-code",
            claude(
                "Bash",
                json!({"command": "mailctl reset --all"}),
                "toolu_02B",
            ),
        ),
        ("codex", codex("mailctl reset --all", "call_2")),
        ("gemini", gemini("mailctl reset --all")),
        ("cursor", cursor("mailctl reset --all")),
    ] {
        let o = hook(&d.socket, rt, Some(&stranger), &input);
        assert_denied(rt, &o, "unsigned_message");
    }
    // Audited: four denials on the stranger's message, action shell.
    let rows = audit_rows(&d);
    let denied: Vec<&Value> = rows
        .iter()
        .filter(|r| r.to_string().contains(&stranger) && r.to_string().contains("unsigned_message"))
        .filter(|r| r.to_string().contains("\"shell\""))
        .collect();
    assert_eq!(denied.len(), 4, "{rows:#?}");

    // The owner's destructive call is allowed for the owner (control for the denial above).
    let o = hook(
        &d.socket,
        "gemini",
        Some(&owner),
        &gemini("mailctl reset --all"),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout_json(&o)["decision"], "allow");

    // Decided by agentd: unknown tool, shell syntax, unknown message, no message.
    let o = hook(
        &d.socket,
        "claude-code",
        Some(&owner),
        &claude("TodoWrite", json!({"todos": []}), "toolu_03"),
    );
    assert_denied("claude-code", &o, "unknown_tool");
    let o = hook(
        &d.socket,
        "cursor",
        Some(&owner),
        &cursor("ls /workspace && mailctl reset --all"),
    );
    assert_denied("cursor", &o, "shell_syntax_not_allowed");
    let o = hook(
        &d.socket,
        "codex",
        Some("00000000000000000000000000000000"),
        &codex("ls", "call_3"),
    );
    assert_denied("codex", &o, "unknown_active_message");

    // One tool call, one decision: the same tool_use_id again returns the first call id.
    let again = hook(
        &d.socket,
        "claude-code",
        Some(&owner),
        &claude("Bash", json!({"command": "ls /workspace"}), "toolu_01A"),
    );
    let v = stdout_json(&again);
    assert!(
        v["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains(call_id),
        "{v}"
    );
    assert_eq!(row_of(&audit_rows(&d), call_id).len(), 1);
}

#[test]
fn bad_input_denies_in_each_runtime_format() {
    let d = Daemon::start();
    let key = d.enroll("olivia", "owner");
    let owner = d.send("olivia", &key, "dm:olivia", "hi");
    let full = claude("Bash", json!({"command": "ls"}), "toolu_x");
    let mut big =
        br#"{"hook_event_name":"PreToolUse","tool_name":"Write","tool_input":{"content":""#
            .to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend(br#""}}"#);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            full[..full.len() - 9].to_vec(),
            "malformed_hook_input",
        ),
        (
            "not json",
            b"PreToolUse Bash ls".to_vec(),
            "malformed_hook_input",
        ),
        ("empty", Vec::new(), "malformed_hook_input"),
        (
            "non-utf8",
            b"{\"hook_event_name\":\"\xff\"}".to_vec(),
            "invalid_utf8",
        ),
        ("over 1 MB", big, "hook_input_too_large"),
    ];
    for rt in ["claude-code", "codex", "gemini", "cursor"] {
        for (name, input, code) in &cases {
            let o = hook(&d.socket, rt, Some(&owner), input);
            assert_denied(rt, &o, code);
            let _ = name;
        }
    }
    // The daemon kept serving.
    let (status, _) = d.raw(Method::GET, "/v1/health", Vec::new());
    assert_eq!(status, 200);
}

#[test]
fn outside_any_agent_the_hook_has_no_opinion_only_when_agentd_says_so() {
    let mut d = Daemon::start();
    let input = claude("Bash", json!({"command": "rm -rf /tmp/x"}), "toolu_9");
    // A person's own runtime: not in an agent cgroup, no active message.
    for rt in ["claude-code", "codex", "gemini", "cursor"] {
        let i = match rt {
            "claude-code" | "codex" => input.clone(),
            "gemini" => gemini("rm -rf /tmp/x"),
            _ => cursor("rm -rf /tmp/x"),
        };
        let o = hook(&d.socket, rt, None, &i);
        assert_eq!(o.status.code(), Some(0), "{rt}: {o:?}");
        assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{rt}: {o:?}");
    }
    // Nothing was decided, so nothing was audited for it.
    assert!(!audit_rows(&d)
        .iter()
        .any(|r| r.to_string().contains("rm -rf")));

    // agentd stopped: no one says "not an agent", so the hook denies.
    d.stop();
    for rt in ["claude-code", "codex", "gemini", "cursor"] {
        let i = match rt {
            "claude-code" | "codex" => input.clone(),
            "gemini" => gemini("ls"),
            _ => cursor("ls"),
        };
        let o = hook(&d.socket, rt, None, &i);
        assert_denied(rt, &o, "agentd_unreachable");
    }
}

#[test]
fn agentd_failing_mid_call_denies() {
    let dir = tempfile::tempdir().unwrap();
    // A socket that accepts and closes without answering (agentd dying mid-call).
    let closing = dir.path().join("closing.sock");
    let l = std::os::unix::net::UnixListener::bind(&closing).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut buf);
            drop(s);
        }
    });
    // A socket that accepts and never answers (agentd hung).
    let hung = dir.path().join("hung.sock");
    let l2 = std::os::unix::net::UnixListener::bind(&hung).unwrap();
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for s in l2.incoming() {
            keep.push(s.unwrap());
        }
    });
    let input = claude("Bash", json!({"command": "ls"}), "toolu_1");
    for rt in ["claude-code", "codex", "gemini", "cursor"] {
        let i = if rt == "gemini" {
            gemini("ls")
        } else if rt == "cursor" {
            cursor("ls")
        } else {
            input.clone()
        };
        let o = hook(&closing, rt, Some("0123456789abcdef0123456789abcdef"), &i);
        assert_denied(rt, &o, "agentd_unreachable");
        let started = Instant::now();
        let o = feed(
            hook_cmd(
                &hung,
                rt,
                Some("0123456789abcdef0123456789abcdef"),
                &["--deadline-ms", "400"],
            ),
            &i,
        );
        assert_denied(rt, &o, "hook_timeout");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    // stdin never closed (a runtime that hangs writing): the watchdog still answers.
    let mut c = hook_cmd(&hung, "claude-code", Some("m"), &["--deadline-ms", "300"]);
    let mut child = c.spawn().unwrap();
    let held_open = child.stdin.take();
    let o = child.wait_with_output().unwrap();
    drop(held_open);
    assert_denied("claude-code", &o, "hook_timeout");
}

/// Creates an agent through the API (admin); None if enforcement cannot run here.
fn create_agent(d: &Daemon, name: &str) -> Option<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = d.raw(
            Method::POST,
            "/v1/agents",
            serde_json::to_vec(&json!({"name": name, "mode": "audit-only"})).unwrap(),
        );
        match status {
            200 => return Some(body["cgroup"].as_str().unwrap().into()),
            503 if body["message"].as_str().unwrap_or("").contains("starting")
                && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => {
                eprintln!(
                    "SKIPPED (in-agent hook cases): enforcement unavailable: {status} {body}"
                );
                return None;
            }
        }
    }
}

/// The hook run as a process of the agent whose cgroup is `cg`.
fn in_agent(mut c: Command, cg: &Path) -> Command {
    let procs = cg.join("cgroup.procs");
    // SAFETY: only async-signal-safe calls (open/write/close via std::fs on a
    // fixed path) between fork and exec.
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    c
}

#[test]
fn inside_an_agent_the_hook_never_stays_silent() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root to place the hook in an agent cgroup");
        return;
    }
    let mut d = Daemon::start();
    let Some(cg) = create_agent(&d, &format!("hook-{}", std::process::id())) else {
        return;
    };
    let key = d.enroll("olivia", "owner");
    let owner = d.send("olivia", &key, "dm:olivia", "list the workspace");
    let input = claude("Bash", json!({"command": "ls /workspace"}), "toolu_in_1");

    // Control: outside the agent with no message → no opinion.
    let o = hook(&d.socket, "claude-code", None, &input);
    assert_eq!((o.status.code(), o.stdout.len()), (Some(0), 0), "{o:?}");
    // Inside the agent with no message → denied.
    let o = feed(
        in_agent(hook_cmd(&d.socket, "claude-code", None, &[]), &cg),
        &input,
    );
    assert_denied("claude-code", &o, "no_active_message");

    // Inside the agent with the owner's message → allowed, and its grant
    // is installed for the agent once, even when the call arrives twice.
    let grants = |d: &Daemon| -> Vec<String> {
        let (_, v) = d.raw(Method::GET, "/v1/agents", Vec::new());
        v.as_array()
            .or(v["agents"].as_array())
            .unwrap()
            .iter()
            .filter(|a| cg.ends_with(a["name"].as_str().unwrap()))
            .flat_map(|a| {
                a["calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
            })
            .collect()
    };
    let o = feed(
        in_agent(hook_cmd(&d.socket, "claude-code", Some(&owner), &[]), &cg),
        &input,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        stdout_json(&o)["hookSpecificOutput"]["permissionDecision"],
        "allow"
    );
    let after_first = grants(&d);
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    // The same runtime call id again (as forward mode would send it): same decision, no second grant.
    let codex_same = serde_json::to_vec(&json!({
        "hook_event_name": "PreToolUse", "tool_name": "Bash", "turn_id": "t",
        "tool_input": {"command": "ls /workspace"}, "tool_use_id": "toolu_in_1"
    }))
    .unwrap();
    let o = feed(
        in_agent(hook_cmd(&d.socket, "codex", Some(&owner), &[]), &cg),
        &codex_same,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(grants(&d), after_first);

    // agentd stopped while the runtime runs inside the agent → denied.
    d.stop();
    let o = feed(
        in_agent(hook_cmd(&d.socket, "claude-code", None, &[]), &cg),
        &input,
    );
    assert_denied("claude-code", &o, "agentd_unreachable");
}

/// The fuzz targets' own property code, compiled and run in the ordinary
/// suite over the committed seed corpora (fuzz/seeds/), cut at every byte.
#[path = "../../fuzz/fuzz_targets/hook_common.rs"]
mod hook_common;

#[test]
fn fuzz_property_holds_on_the_seed_corpora() {
    use agentd::runtime::Runtime;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut checked = 0;
    for (dir, rt) in [
        ("hook_claude_code", Runtime::ClaudeCode),
        ("hook_codex", Runtime::Codex),
        ("hook_gemini", Runtime::Gemini),
        ("hook_cursor", Runtime::Cursor),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let seed = std::fs::read(entry.unwrap().path()).unwrap();
            for n in 0..=seed.len() {
                hook_common::check(rt, &seed[..n]);
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked}");
}
