//! The property every hook target checks, for one runtime: on any stdin,
//! the hook's local half either builds a request for agentd (whose mapping
//! then never panics) or denies — well-formed, in the runtime's format,
//! exit 2, with the reason code in the text. It never allows and never
//! stays silent: only agentd can allow, and only agentd can say "not an
//! agent".
use agentd::runtime::{self, mapping, Runtime, Verdict, EXIT_DENY};
use serde_json::Value;

pub fn check(rt: Runtime, data: &[u8]) {
    match runtime::prepare(rt, data, Some("0123456789abcdef0123456789abcdef")) {
        Ok(req) => {
            assert_eq!(req.runtime, rt);
            if let Some(id) = &req.tool_use_id {
                runtime::check_tool_use_id(id).expect("accepted ids are well-formed");
            }
            // The gateway's half: mapping is total (a result or an error).
            let _ = mapping::map(rt, &req.tool_name, &req.tool_input, None);
            // The request survives the wire as sent.
            let wire = serde_json::to_vec(&req).unwrap();
            let back: runtime::RuntimeCallRequest = serde_json::from_slice(&wire).unwrap();
            assert_eq!(back, req);
        }
        Err(v) => {
            let Verdict::Deny { reason_code, .. } = &v else {
                panic!("the local half answered {v:?} without agentd");
            };
            let a = runtime::render(rt, &v);
            assert_eq!(a.exit_code, EXIT_DENY);
            assert!(a.stderr.contains(reason_code.as_str()));
            let out: Value = serde_json::from_str(&a.stdout).expect("deny output is JSON");
            let decision = match rt {
                Runtime::ClaudeCode | Runtime::Codex => {
                    &out["hookSpecificOutput"]["permissionDecision"]
                }
                Runtime::Gemini => &out["decision"],
                Runtime::Cursor => &out["permission"],
            };
            assert_eq!(decision, "deny");
        }
    }
}
