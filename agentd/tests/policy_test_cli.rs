//! `agentctl policy test`: the shipped demo policy passes its shipped cases;
//! a case whose expectation the policy does not meet fails the run (exit 1)
//! and says why; a malformed case file is refused before anything runs.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cli_support;
use cli_support::text;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn policy_test(policy: &Path, cases: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["policy", "test"])
        .arg(policy)
        .arg(cases)
        .args(extra)
        .output()
        .expect("run agentctl")
}

#[test]
fn the_demo_policy_passes_its_cases() {
    let cases = repo().join("policies/tests/demo.toml");
    let out = policy_test(&repo().join("policies/demo.toml"), &cases, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("14 passed, 0 failed"), "{t}");
    let json = policy_test(&repo().join("policies/demo.toml"), &cases, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 14);
    assert!(rows.iter().all(|r| r["passed"] == true));
    assert!(rows
        .iter()
        .any(|r| r["decision"] == "refused" && r["reason"] == "session_operator_mismatch"));
}

#[test]
fn a_policy_that_allows_what_a_case_denies_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // The control: the demo policy with the stranger's scratch scope widened
    // to all of /workspace lets the stranger rewrite RULES.md.
    let demo = std::fs::read_to_string(repo().join("policies/demo.toml")).unwrap();
    let widened = demo.replace(
        "path = { type = \"path\", scopes = [\"/workspace/scratch\"] }",
        "path = { type = \"path\", scopes = [\"/workspace\"] }",
    );
    assert_ne!(widened, demo, "the demo policy's guest scope moved");
    let policy = dir.path().join("widened.toml");
    std::fs::write(&policy, widened).unwrap();
    let out = policy_test(&policy, &repo().join("policies/tests/demo.toml"), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL a stranger asks the agent to rewrite its own rules: expected deny (path_outside_scope), got allow (ok)"),
        "{t}"
    );
    assert!(t.contains("13 passed, 1 failed"), "{t}");
}

#[test]
fn a_malformed_case_file_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"typo\"\nmessage = \"unsigned\"\naction = \"read_chart\"\nexpect = \"deny\"\nexpcet_reason = \"x\"\n",
    )
    .unwrap();
    let out = policy_test(&repo().join("policies/demo.toml"), &cases, &[]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("expcet_reason") && t.contains("cases.toml"),
        "{t}"
    );
    assert!(!t.contains("PASS") && !t.contains("FAIL"), "{t}");
}
