//! `agentd-mcp [--bin DIR] [--venv DIR]`: the MCP gateway suite (see
//! `agentd_tests::mcp`), one `PASS`/`FAIL`/`SKIP` line per check.
use std::time::Duration;

use agentd_tests::mcp::http::{HttpSide, Via};
use agentd_tests::mcp::{repo_file, step, Raw, Suite, AGENT};
use agentd_tests::sdk_suite::{clean_up, Args, Report};
use serde_json::{json, Value};

fn main() {
    let args = Args::parse();
    if !args.ready(
        "mcp",
        "starts agentd and creates cgroups",
        "mcp",
        "the MCP Python SDK is",
    ) {
        return;
    }
    let report = agentd::doctor::run();
    if report.backend == agentd::doctor::Backend::None {
        println!("SKIP mcp: no enforcement backend here: {}", report.reason);
        return;
    }
    let root = std::env::temp_dir().join(format!("agentd-mcp-{}", std::process::id()));
    let suite = match Suite::start(&args.bin, &root, &args.venv, &repo_file("")) {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL mcp: setting up: {e:#}");
            std::process::exit(1);
        }
    };
    let mut r = Report::default();
    scenarios(&suite, &mut r);
    drop(suite);
    clean_up(&[&root]);
    if r.failed() > 0 {
        std::process::exit(1);
    }
}

fn text(v: Option<&Value>) -> String {
    v.map(|v| v.to_string())
        .unwrap_or_else(|| "no result".into())
}

fn is_denied(v: Option<&Value>, reason: &str) -> bool {
    v.is_some_and(|v| {
        v["is_error"] == true && v["text"].as_str().is_some_and(|t| t.contains(reason))
    })
}

fn scenarios(s: &Suite, r: &mut Report) {
    let a = s.root.join("allowed/a.txt").display().to_string();
    let b = s.root.join("secret/b.txt").display().to_string();
    // A listener the malicious server will try to reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(1);
    let steps = json!([
        ["echo", {"text": "hi"}],
        ["read_file", {"path": a}],
        ["read_file", {"path": b}],
        ["FindContact", {"name": "ann"}],
        ["sneaky_read", {"path": a, "other": b}],
        ["sneaky_shell", {"text": "x"}],
        ["sneaky_connect", {"port": port}],
        ["ask_model", {"prompt": "hi"}],
        ["ask_model", {"prompt": "y".repeat(600)}],
        ["self_call", {"socket_path": s.agentd.socket.display().to_string()}],
        ["prompt:greeting", {"name": "ann"}],
        ["prompt:exfiltrate", {}],
        ["resource:demo://note", {}],
    ]);

    // Control: the same client and server, no agentd.
    match s.client(&steps, &s.server_cmd(), None) {
        Err(e) => r.check(
            "control: SDK client with the server directly",
            false,
            || format!("{e:#}"),
        ),
        Ok(l) => {
            r.check(
                "control: echo works without agentd",
                step(&l, "echo", 0).is_some_and(|v| v["text"] == "hi"),
                || text(step(&l, "echo", 0)),
            );
            r.check(
                "control: without agentd the malicious server reads the other file, runs a shell and connects",
                step(&l, "sneaky_read", 0).is_some_and(|v| v["text"] == "read:alpha|read:bravo")
                    && step(&l, "sneaky_shell", 0).is_some_and(|v| v["text"] == "shell:ran:pwned")
                    && step(&l, "sneaky_connect", 0).is_some_and(|v| v["text"] == "connect:ok"),
                || format!("{l:?}"),
            );
            r.check(
                "control: without agentd both prompts and the resource are served",
                step(&l, "prompt:exfiltrate", 0)
                    .is_some_and(|v| v["text"].as_str().is_some_and(|t| t.contains("id_rsa")))
                    && step(&l, "resource:demo://note", 0).is_some_and(|v| v["text"] == "a note"),
                || format!("{l:?}"),
            );
            r.check(
                "control: without agentd the server's sampling requests reach the client",
                step(&l, "ask_model", 1).is_some_and(|v| v["text"] == "sampling:ok:model-says-hi"),
                || text(step(&l, "ask_model", 1)),
            );
        }
    }

    // Through agentd, as the owner's message.
    let l = match s.client(&steps, &s.proxy_cmd(None), Some(&s.active)) {
        Ok(l) => l,
        Err(e) => {
            r.check("SDK client through agentctl mcp proxy", false, || {
                format!("{e:#}")
            });
            return;
        }
    };
    r.check(
        "tools/list passes through the gateway",
        l[0]["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 11 && t.contains(&json!("FindContact"))),
        || l[0].to_string(),
    );
    r.check(
        "allowed call: echo answers",
        step(&l, "echo", 0).is_some_and(|v| v["text"] == "hi" && v["is_error"] == false),
        || text(step(&l, "echo", 0)),
    );
    r.check(
        "allowed call: read_file in scope reads through the call's pending grant",
        step(&l, "read_file", 0)
            .is_some_and(|v| v["text"].as_str().is_some_and(|t| t.contains("alpha"))),
        || text(step(&l, "read_file", 0)),
    );
    r.check(
        "denied call: read_file out of scope is a tool error with the reason",
        is_denied(step(&l, "read_file", 1), "path_outside_scope"),
        || text(step(&l, "read_file", 1)),
    );
    r.check(
        "mixed-case tool maps to a hashed action (unknown to the policy: denied)",
        is_denied(step(&l, "FindContact", 0), "unknown_action"),
        || text(step(&l, "FindContact", 0)),
    );
    r.check(
        "malicious server: the granted read works, the other file is refused by the kernel",
        step(&l, "sneaky_read", 0).is_some_and(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("read:alpha|refused:"))
        }),
        || text(step(&l, "sneaky_read", 0)),
    );
    r.check(
        "malicious server: its shell is refused by the kernel",
        step(&l, "sneaky_shell", 0).is_some_and(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("shell:refused"))
        }),
        || text(step(&l, "sneaky_shell", 0)),
    );
    r.check(
        "malicious server: its connect is refused by the kernel",
        step(&l, "sneaky_connect", 0).is_some_and(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("connect:refused"))
        }),
        || text(step(&l, "sneaky_connect", 0)),
    );
    r.check(
        "server request allowed by policy: sampling reaches the client",
        step(&l, "ask_model", 0).is_some_and(|v| v["text"] == "sampling:ok:model-says-hi"),
        || text(step(&l, "ask_model", 0)),
    );
    r.check(
        "server request denied by policy: the server hears the reason, the client is never asked",
        step(&l, "ask_model", 1).is_some_and(|v| {
            v["text"].as_str().is_some_and(|t| {
                t.starts_with("sampling:refused:") && t.contains("size_limit_exceeded")
            })
        }),
        || text(step(&l, "ask_model", 1)),
    );
    r.check(
        "prompts/get allowed by policy (the prompt's name is on its list)",
        step(&l, "prompt:greeting", 0).is_some_and(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("hello to ann"))
        }),
        || text(step(&l, "prompt:greeting", 0)),
    );
    r.check(
        "prompts/get denied by policy: a JSON-RPC error with the reason (value_not_allowed)",
        step(&l, "prompt:exfiltrate", 0).is_some_and(|v| {
            v["exception"]
                .as_str()
                .is_some_and(|e| e.contains("value_not_allowed"))
        }),
        || text(step(&l, "prompt:exfiltrate", 0)),
    );
    r.check(
        "resources/read with no action in the policy is denied (unknown_action)",
        step(&l, "resource:demo://note", 0).is_some_and(|v| {
            v["exception"]
                .as_str()
                .is_some_and(|e| e.contains("unknown_action"))
        }),
        || text(step(&l, "resource:demo://note", 0)),
    );
    r.check(
        "the MCP server may not ask agentd for tool calls itself (mcp_server_may_not_call)",
        step(&l, "self_call", 0).is_some_and(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains(" 403 ") && t.contains("mcp_server_may_not_call"))
        }),
        || text(step(&l, "self_call", 0)),
    );
    std::thread::sleep(Duration::from_millis(500));
    match s.call_rows() {
        Err(e) => r.check("audit rows", false, || format!("{e:#}")),
        Ok(rows) => {
            let row = |action: &str, decision: &str, reason: &str| {
                rows.iter().any(|x| {
                    x["action"] == action && x["decision"] == decision && x["reason_code"] == reason
                })
            };
            r.check(
                "audit: allowed echo row",
                row("mcp.demo.echo", "allow", "ok"),
                || format!("{rows:?}"),
            );
            r.check(
                "audit: the MCP call rows name the agent whose server asked",
                rows.iter()
                    .filter(|x| x["action"] == "mcp.demo.echo")
                    .any(|x| x["agent"] == AGENT && x["pid"].as_u64().is_some_and(|p| p > 0)),
                || format!("{rows:?}"),
            );
            r.check(
                "audit: denied read_file row (path_outside_scope)",
                row("mcp.demo.read_file", "deny", "path_outside_scope"),
                || format!("{rows:?}"),
            );
            r.check(
                "audit: hashed FindContact action denied",
                rows.iter().any(|x| {
                    x["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("mcp.demo.findcontact--"))
                        && x["decision"] == "deny"
                }),
                || format!("{rows:?}"),
            );
        }
    }
    // The gateway's allowed reads: the kernel's allow on a.txt must be one of them.
    let read_calls: Vec<Value> = s
        .call_rows()
        .unwrap_or_default()
        .into_iter()
        .filter(|x| {
            x["decision"] == "allow"
                && (x["action"] == "mcp.demo.read_file" || x["action"] == "mcp.demo.sneaky_read")
        })
        .map(|x| x["call_id"].clone())
        .collect();
    match s.agentd.kernel_rows(AGENT) {
        Err(e) => r.check("kernel rows", false, || format!("{e:#}")),
        Ok(k) => {
            let denied = |pred: &dyn Fn(&Value) -> bool| {
                k.iter().any(|x| x["decision"] == "deny" && pred(x))
            };
            r.check(
                "audit: the kernel's deny row for the other file",
                denied(&|x| {
                    x["target"]
                        .as_str()
                        .is_some_and(|t| t.contains("secret/b.txt"))
                }),
                || format!("{k:?}"),
            );
            r.check(
                "audit: the kernel's deny row for the shell",
                denied(&|x| {
                    x["action"].as_str().is_some_and(|a| a.contains("exec"))
                        && x["target"].as_str().is_some_and(|t| t.contains("sh"))
                }),
                || format!("{k:?}"),
            );
            r.check(
                "audit: the kernel's deny row for the connect",
                denied(&|x| {
                    x["target"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!(":{port}")))
                }),
                || format!("{k:?}"),
            );
            r.check(
                "audit: the granted read is the call's (kernel allow row on a.txt)",
                k.iter().any(|x| {
                    x["decision"] == "allow"
                        && x["target"]
                            .as_str()
                            .is_some_and(|t| t.contains("allowed/a.txt"))
                        && read_calls.contains(&x["call_id"])
                }),
                || format!("{k:?}"),
            );
        }
    }

    // No active message: denied, as a tool error.
    match s.client(&json!([["echo", {"text": "hi"}]]), &s.proxy_cmd(None), None) {
        Err(e) => r.check("no active message", false, || format!("{e:#}")),
        Ok(l) => r.check(
            "no active message: echo is a tool error (no_active_message)",
            is_denied(step(&l, "echo", 0), "no_active_message"),
            || text(step(&l, "echo", 0)),
        ),
    }

    // The runtime's own path: the client inside the agent starts the proxy.
    let steps = json!([["echo", {"text": "inside"}], ["read_file", {"path": b}]]);
    match s.client_in_agent(&steps) {
        Err(e) => r.check("client inside the agent", false, || format!("{e:#}")),
        Ok(l) => {
            r.check(
                "client inside the agent: the proxy, an agent process, opens the session; echo answers",
                step(&l, "echo", 0).is_some_and(|v| v["text"] == "inside"),
                || format!("{l:?}"),
            );
            r.check(
                "client inside the agent: read_file out of scope is a tool error",
                is_denied(step(&l, "read_file", 0), "path_outside_scope"),
                || format!("{l:?}"),
            );
        }
    }

    http_transport(s, r);
    pinning(s, r);
    bad_input(s, r);
}

/// Streamable HTTP: the SDK's HTTP client inside the agent reaches the
/// upstream SDK server through agentd, in both revisions, on the Unix
/// socket and the loopback port; raw requests for the bad input.
fn http_transport(s: &Suite, r: &mut Report) {
    let a = s.root.join("allowed/a.txt").display().to_string();
    let b = s.root.join("secret/b.txt").display().to_string();
    let steps = json!([
        ["echo", {"text": "hi"}],
        ["read_file", {"path": a}],
        ["read_file", {"path": b}],
        ["ask_model", {"prompt": "hi"}],
        ["ask_model", {"prompt": "y".repeat(600)}],
        ["FindContact", {"name": "ann"}],
        ["sneaky_shell", {"text": "x"}],
    ]);
    match s.http_client(&steps, "legacy", Via::Direct) {
        Ok(l) => r.check(
            "http control: without agentd all 11 tools are listed and the out-of-scope read_file succeeds",
            l[0]["tools"].as_array().is_some_and(|t| t.len() == 11)
                && step(&l, "read_file", 1).is_some_and(|v| v["text"].as_str().is_some_and(|t| t.contains("bravo"))),
            || format!("{l:?}"),
        ),
        Err(e) => r.check("http control: SDK client direct", false, || format!("{e:#}")),
    }
    match s.http_client(&steps, "legacy", Via::Socket) {
        Err(e) => r.check("http 2025-11-25: SDK client through agentd", false, || {
            format!("{e:#}")
        }),
        Ok(l) => {
            r.check(
                "http 2025-11-25 (Unix socket): initialize and session through agentd; tools/list filtered to the 4 tools the owner may call (filter_tools)",
                l[0]["protocol"] == "2025-11-25"
                    && l[0]["tools"] == json!(["FindContact", "ask_model", "echo", "read_file"]),
                || l[0].to_string(),
            );
            r.check(
                "http: FindContact is decided as the action the policy maps it to (contacts.lookup) and answers",
                step(&l, "FindContact", 0).is_some_and(|v| v["text"] == "found:ann"),
                || text(step(&l, "FindContact", 0)),
            );
            r.check(
                "http: a tool left out of the list is still decided if called (unknown_action, a tool error)",
                is_denied(step(&l, "sneaky_shell", 0), "unknown_action"),
                || text(step(&l, "sneaky_shell", 0)),
            );
            r.check(
                "http 2025-11-25: allowed calls answer (echo; read_file in scope)",
                step(&l, "echo", 0).is_some_and(|v| v["text"] == "hi" && v["is_error"] == false)
                    && step(&l, "read_file", 0)
                        .is_some_and(|v| v["text"].as_str().is_some_and(|t| t.contains("alpha"))),
                || format!("{l:?}"),
            );
            r.check(
                "http 2025-11-25: denied call is a tool error with the reason (path_outside_scope)",
                is_denied(step(&l, "read_file", 1), "path_outside_scope"),
                || text(step(&l, "read_file", 1)),
            );
            r.check(
                "http 2025-11-25: the server's sampling request on the SSE stream, allowed, reaches the client",
                step(&l, "ask_model", 0).is_some_and(|v| v["text"] == "sampling:ok:model-says-hi"),
                || text(step(&l, "ask_model", 0)),
            );
            r.check(
                "http 2025-11-25: a sampling request denied by an argument rule is answered to the server (size_limit_exceeded)",
                step(&l, "ask_model", 1).is_some_and(|v| {
                    v["text"].as_str().is_some_and(|t| t.starts_with("sampling:refused:") && t.contains("size_limit_exceeded"))
                }),
                || text(step(&l, "ask_model", 1)),
            );
        }
    }
    match s.http_client(
        &json!([["echo", {"text": "modern"}], ["read_file", {"path": b}]]),
        "auto",
        Via::Tcp,
    ) {
        Err(e) => r.check("http 2026-07-28: SDK client through agentd", false, || {
            format!("{e:#}")
        }),
        Ok(l) => {
            r.check(
                "http 2026-07-28 (loopback TCP, caller named by its socket's cgroup): server/discover, stateless; echo answers",
                l[0]["protocol"] == "2026-07-28"
                    && step(&l, "echo", 0).is_some_and(|v| v["text"] == "modern"),
                || format!("{l:?}"),
            );
            r.check(
                "http 2026-07-28: denied call is a tool error with the reason (path_outside_scope)",
                is_denied(step(&l, "read_file", 0), "path_outside_scope"),
                || format!("{l:?}"),
            );
        }
    }
    let p = HttpSide::path();
    let call = |tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args,
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}})
        .to_string()
    };
    let modern = |name: &str, tool: &str, args: Value| {
        json!({"path": p, "headers": {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": name},
            "body": call(tool, args)})
    };
    let reqs = json!([
        modern("echo", "echo", json!({"text": "raw"})),
        modern("echo", "read_file", json!({"path": a})),
        {"path": p, "body": "{nope"},
        {"path": p, "body": r#"[{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#},
        {"path": p, "headers": {"mcp-session-id": "0123456789abcdef0123456789abcdef", "mcp-protocol-version": "2025-11-25"},
            "body": r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#},
        modern("echo", "echo", json!({"text": "still"})),
        {"path": p, "no_active": true,
            "headers": {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"},
            "body": json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}).to_string()},
    ]);
    match s.http_raw(&reqs, Via::Tcp, false) {
        Err(e) => r.check("http raw requests", false, || format!("{e:#}")),
        Ok(l) => {
            let st = |i: usize| l.get(i).map(|v| v["status"].clone()).unwrap_or(Value::Null);
            let err = |i: usize| {
                l.get(i)
                    .map(|v| {
                        (
                            v["body"]["error"]["code"].clone(),
                            v["body"]["error"]["data"]["reason"].clone(),
                        )
                    })
                    .unwrap_or_default()
            };
            r.check(
                "http raw control: a 2026-07-28 call whose headers agree with its body answers",
                st(0) == 200 && l[0]["body"]["result"]["content"][0]["text"] == "raw",
                || format!("{:?}", l.first()),
            );
            r.check(
                "http raw: Mcp-Name disagreeing with the body is refused (400, -32020, mcp_header_mismatch)",
                st(1) == 400 && err(1) == (json!(-32020), json!("mcp_header_mismatch")),
                || format!("{:?}", l.get(1)),
            );
            r.check(
                "http raw: a malformed body is a parse error (400, -32700, mcp_invalid_message)",
                st(2) == 400 && err(2) == (json!(-32700), json!("mcp_invalid_message")),
                || format!("{:?}", l.get(2)),
            );
            r.check(
                "http raw: a batch is refused (400, -32600)",
                st(3) == 400 && err(3).0 == json!(-32600),
                || format!("{:?}", l.get(3)),
            );
            r.check(
                "http raw: an unknown session id is 404 (mcp_unknown_session)",
                st(4) == 404 && err(4).1 == json!("mcp_unknown_session"),
                || format!("{:?}", l.get(4)),
            );
            r.check(
                "http raw: without an active message the filtered tools/list is empty (no operator, nothing callable)",
                st(6) == 200 && l.get(6).is_some_and(|v| v["body"]["result"]["tools"] == json!([])),
                || format!("{:?}", l.get(6)),
            );
            r.check(
                "http raw: the endpoint keeps serving after bad input",
                st(5) == 200 && l[5]["body"]["result"]["content"][0]["text"] == "still",
                || format!("{:?}", l.get(5)),
            );
        }
    }
    match s.http_raw(
        &json!([modern("echo", "echo", json!({"text": "root"}))]),
        Via::Socket,
        true,
    ) {
        Err(e) => r.check("http raw outside the agent", false, || format!("{e:#}")),
        Ok(l) => r.check(
            "http: a caller outside every agent (root on the Unix socket) is refused (403)",
            l[0]["status"] == 403 && l[0]["body"]["error"]["data"]["reason"] == "permission_denied",
            || l[0].to_string(),
        ),
    }
    std::thread::sleep(Duration::from_millis(300));
    match s.call_rows() {
        Err(e) => r.check("http audit rows", false, || format!("{e:#}")),
        Ok(rows) => {
            let n = |action: &str, decision: &str, reason: &str| {
                rows.iter()
                    .filter(|x| {
                        x["action"] == action
                            && x["decision"] == decision
                            && x["reason_code"] == reason
                    })
                    .count()
            };
            r.check(
                "http audit: decision rows for both revisions (echo allowed 3x, read_file denied 2x, sampling denied 1x)",
                n("mcp.web.echo", "allow", "ok") >= 3
                    && n("mcp.web.read_file", "deny", "path_outside_scope") >= 2
                    && n("mcp_request.web.sampling", "deny", "size_limit_exceeded") >= 1,
                || format!("{rows:?}"),
            );
            r.check(
                "http audit: the mapped call's row is under the policy's action (contacts.lookup allowed)",
                n("contacts.lookup", "allow", "ok") == 1,
                || format!("{rows:?}"),
            );
            r.check(
                "http audit: the header mismatch's row (mcp.web.read_file, mcp_header_mismatch)",
                n("mcp.web.read_file", "deny", "mcp_header_mismatch") == 1,
                || format!("{rows:?}"),
            );
        }
    }
}

fn pinning(s: &Suite, r: &mut Report) {
    r.check(
        "pins: the first tools/list pinned every tool (audited)",
        s.admin_rows("mcp_tool_pinned").is_ok_and(|rows| {
            rows.iter()
                .filter(|x| {
                    x["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("mcp.demo."))
                })
                .count()
                == 11
        }),
        || format!("{:?}", s.admin_rows("mcp_tool_pinned")),
    );
    let steps = json!([["echo", {"text": "hi"}]]);
    let changed = s.proxy_cmd_with(None, &["--changed"]);
    match s.client(&steps, &changed, Some(&s.active)) {
        Err(e) => r.check("pins: changed server", false, || format!("{e:#}")),
        Ok(l) => {
            r.check(
                "pins: a changed definition is kept out of tools/list",
                l[0]["tools"]
                    .as_array()
                    .is_some_and(|t| t.len() == 10 && !t.contains(&json!("echo"))),
                || l[0].to_string(),
            );
            r.check(
                "pins: calling the changed tool is a tool error (mcp_tool_definition_changed)",
                is_denied(step(&l, "echo", 0), "mcp_tool_definition_changed"),
                || text(step(&l, "echo", 0)),
            );
        }
    }
    r.check(
        "audit: the changed definition's refusal row",
        s.call_rows().is_ok_and(|rows| {
            rows.iter().any(|x| {
                x["action"] == "mcp.demo.echo" && x["reason_code"] == "mcp_tool_definition_changed"
            })
        }),
        || "no row".into(),
    );
    let out = s.agentctl(&[
        "mcp", "approve", "--agent", AGENT, "--server", "demo", "--tool", "echo",
    ]);
    r.check(
        "pins: agentctl mcp approve accepts the new definition (audited)",
        out.as_ref().is_ok_and(|o| o.status.success())
            && s.admin_rows("mcp_tool_approved")
                .is_ok_and(|rows| rows.len() == 1),
        || format!("{out:?}"),
    );
    match s.client(&steps, &changed, Some(&s.active)) {
        Err(e) => r.check("pins: approved server", false, || format!("{e:#}")),
        Ok(l) => r.check(
            "pins: once approved, the changed tool is listed and callable",
            l[0]["tools"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("echo")))
                && step(&l, "echo", 0).is_some_and(|v| v["text"] == "hi"),
            || format!("{l:?}"),
        ),
    }
}

fn bad_input(s: &Suite, r: &mut Report) {
    let mut raw = match Raw::start(s, 8000) {
        Ok(x) => x,
        Err(e) => return r.check("raw session", false, || format!("{e:#}")),
    };
    let wait = Duration::from_secs(20);
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
    let (init, _) = raw.until(&json!(1), wait);
    r.check(
        "raw: initialize answers",
        init.as_ref()
            .is_some_and(|v| v["result"]["protocolVersion"].is_string()),
        || format!("{init:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":"list","method":"tools/list"}"#);
    let (list, _) = raw.until(&json!("list"), wait);
    r.check(
        "raw: tools/list answers",
        list.as_ref()
            .is_some_and(|v| v["result"]["tools"].is_array()),
        || format!("{list:?}"),
    );
    let err_of = |v: &Option<Value>| {
        (
            v.as_ref().map(|v| v["error"]["code"].clone()),
            v.as_ref().map(|v| v["error"]["data"]["reason"].clone()),
        )
    };
    let _ = raw.send(b"{nope");
    let (v, _) = raw.until(&Value::Null, wait);
    r.check(
        "raw: malformed JSON → -32700",
        err_of(&v) == (Some(json!(-32700)), Some(json!("mcp_invalid_message"))),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#);
    let (v, _) = raw.until(&Value::Null, wait);
    r.check(
        "raw: batch → -32600",
        err_of(&v).0 == Some(json!(-32600)),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":3,"method":"notifications/initialized"}"#);
    let (v, _) = raw.until(&json!(3), wait);
    r.check(
        "raw: notification with an id → -32600",
        err_of(&v).0 == Some(json!(-32600)),
        || format!("{v:?}"),
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let _ = raw.send(huge.as_bytes());
    let (v, _) = raw.until(&Value::Null, wait);
    r.check(
        "raw: huge message → mcp_message_too_large",
        err_of(&v).1 == Some(json!("mcp_message_too_large")),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":5,"method":"tools/exec","params":{}}"#);
    let (v, _) = raw.until(&json!(5), wait);
    r.check(
        "raw: unknown method refused (mcp_method_not_allowed)",
        err_of(&v).1 == Some(json!("mcp_method_not_allowed")),
        || format!("{v:?}"),
    );
    // Duplicate ids: a hanging call with id 6, then another request with id 6.
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"hang","arguments":{}}}"#);
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#);
    let (v, _) = raw.until(&json!(6), wait);
    r.check(
        "raw: duplicate id in flight → mcp_duplicate_id",
        err_of(&v).1 == Some(json!("mcp_duplicate_id")),
        || format!("{v:?}"),
    );
    let (v, _) = raw.until(&json!(6), wait);
    r.check(
        "raw: hanging server call → mcp_server_timeout",
        err_of(&v).1 == Some(json!("mcp_server_timeout")),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"stray","arguments":{}}}"#);
    let (v, seen) = raw.until(&json!(7), wait);
    r.check(
        "raw: a server answer to an id nobody asked is dropped; the real answer arrives",
        v.as_ref()
            .is_some_and(|v| v["result"]["content"][0]["text"] == "after-stray")
            && !seen.iter().any(|x| x["id"] == 987654),
        || format!("{v:?} {seen:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#);
    let (v, _) = raw.until(&json!(8), wait);
    r.check(
        "raw: the session keeps serving after bad input (ping)",
        v.as_ref().is_some_and(|v| v["result"].is_object()),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"crash","arguments":{}}}"#);
    let (v, _) = raw.until(&json!(9), wait);
    r.check(
        "raw: server crash mid-call → mcp_server_exited",
        err_of(&v).1 == Some(json!("mcp_server_exited")),
        || format!("{v:?}"),
    );
    let _ = raw.send(br#"{"jsonrpc":"2.0","id":10,"method":"ping"}"#);
    let (v, _) = raw.until(&json!(10), wait);
    r.check(
        "raw: after the crash requests get a clean error",
        err_of(&v).1 == Some(json!("mcp_server_exited")),
        || format!("{v:?}"),
    );
}
