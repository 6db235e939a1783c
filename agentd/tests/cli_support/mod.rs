//! Shared by the tests that drive the real `agentctl` binary without a
//! daemon (policy import and test, OAP, offline audit commands).
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `agentctl args…` and waits for it.
pub fn agentctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(args)
        .output()
        .expect("run agentctl")
}

/// stdout then stderr, as text (for assertion messages and matching).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
