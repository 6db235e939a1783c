//! `POST /v1/runtime-calls` bodies on arbitrary bytes: parsed as the API
//! parses them, mapped to a policy action (with the demo policy's runtime
//! overrides and with the built-in defaults) and evaluated for every role.
//! Properties: never panics; a parsed request survives a JSON round trip;
//! mapping is deterministic; an allow names the role asked about; and a
//! shell command (`command` / `cmd` text) with shell syntax outside quotes
//! (`;`, `&&`, `$(…)`, redirections, globs …, per an independent scanner)
//! is never allowed as the demo policy's `shell` action.
#![no_main]
use std::sync::OnceLock;

use agentd::api::json::parse;
use agentd::policy::{compile, CompiledPolicy};
use agentd::runtime::{mapping, RuntimeCallRequest};
use libfuzzer_sys::fuzz_target;

#[path = "shell_scan.rs"]
mod shell_scan;

fn policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| compile(include_str!("../../policies/demo.toml"), "demo").unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse::<RuntimeCallRequest>(data) else {
        return;
    };
    let wire = serde_json::to_vec(&req).unwrap();
    let back: RuntimeCallRequest = serde_json::from_slice(&wire).unwrap();
    assert_eq!(back, req);
    let shell_syntax = ["command", "cmd"].iter().any(|f| {
        req.tool_input
            .get(*f)
            .and_then(|v| v.as_str())
            .is_some_and(shell_scan::has_unquoted_refused)
    });
    let p = policy();
    for overrides in [p.runtime_tools(req.runtime), None] {
        let mapped = mapping::map(req.runtime, &req.tool_name, &req.tool_input, overrides);
        let again = mapping::map(req.runtime, &req.tool_name, &req.tool_input, overrides);
        assert_eq!(mapped, again);
        let Ok(m) = mapped else {
            continue;
        };
        for role in p.role_names() {
            if let Ok(a) = p.evaluate(
                "fuzz-op",
                std::slice::from_ref(&role),
                &m.action,
                &m.arguments,
            ) {
                assert_eq!(a.role, role);
                assert!(
                    !(shell_syntax && m.action == "shell"),
                    "allowed a shell command with shell syntax: {req:?} as {m:?}"
                );
            }
        }
    }
});
