//! Codex hook stdin on arbitrary bytes: a request for agentd or a well-formed
//! denial in Codex's format, never an allow (see hook_common.rs).
#![no_main]
use agentd::runtime::Runtime;
use libfuzzer_sys::fuzz_target;

#[path = "hook_common.rs"]
mod hook_common;

fuzz_target!(|data: &[u8]| hook_common::check(Runtime::Codex, data));
