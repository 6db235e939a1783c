//! Tool-call bodies on arbitrary bytes: parse, then evaluate the arguments
//! against the demo policy for every role. Must never panic; an allow must
//! only ever name a role the operator holds.
#![no_main]
use std::sync::OnceLock;

use agentd::api::json::parse;
use agentd::gateway::ToolCallRequest;
use agentd::policy::{compile, CompiledPolicy};
use libfuzzer_sys::fuzz_target;

fn policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| compile(include_str!("../../policies/demo.toml"), "demo").unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse::<ToolCallRequest>(data) else {
        return;
    };
    for role in policy().role_names() {
        if let Ok(a) = policy().evaluate(
            "fuzz-op",
            std::slice::from_ref(&role),
            &req.action,
            &req.arguments,
        ) {
            assert_eq!(a.role, role);
        }
    }
});
