//! `agentctl policy import agentgate` on policies written by the real
//! AgentGate package (agent-gatekeeper 1.0.0, installed into
//! target/mcp-venv by `cargo xtask setup`): its own `to_yaml` writes them
//! and its own `PermissionPolicy.check` gives the verdict each probe gets
//! there; the converted policies then decide the same probes through
//! `agentctl policy test` (the real gateway on a temporary state).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod cli_support;
use cli_support::{agentctl, text};

fn venv_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let py = target.join("mcp-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import agentgate"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import agentgate: run `cargo xtask setup` (installs tests/mcp/requirements.txt)",
        py.display()
    );
    py
}

/// Writes the policies and AgentGate's verdicts with the real package.
fn make_policies(dir: &Path) -> Vec<Value> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agentgate/make_policies.py");
    let o = Command::new(venv_python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run python");
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap()
}

fn import(dir: &Path, name: &str, drop_unenforced: bool) -> Output {
    let yaml = dir.join(format!("{name}.yaml"));
    let out = dir.join(format!("{name}.toml"));
    let mut args = vec![
        "policy",
        "import",
        "agentgate",
        yaml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if drop_unenforced {
        args.push("--drop-unenforced");
    }
    agentctl(&args)
}

/// One `agentctl policy test` case: the call, and what agentd must decide.
struct Case {
    name: String,
    action: String,
    target: Option<String>,
    expect: &'static str,
    reason: &'static str,
}

fn case(
    name: &str,
    action: &str,
    target: &str,
    expect: &'static str,
    reason: &'static str,
) -> Case {
    Case {
        name: name.into(),
        action: action.into(),
        target: Some(target.into()),
        expect,
        reason,
    }
}

/// Runs the cases in order on one gateway; all must pass.
fn policy_test(dir: &Path, name: &str, cases: &[Case]) {
    let mut toml = String::from("[operators]\nop = [\"agent\"]\n");
    for c in cases {
        toml.push_str(&format!(
            "\n[[case]]\nname = {:?}\noperator = \"op\"\nsession = \"s\"\naction = {:?}\nexpect = {:?}\nreason = {:?}\n",
            c.name, c.action, c.expect, c.reason
        ));
        if let Some(t) = &c.target {
            toml.push_str(&format!("args = {{ target = {t:?} }}\n"));
        }
    }
    let file = dir.join(format!("{name}.cases.toml"));
    std::fs::write(&file, toml).unwrap();
    let policy = dir.join(format!("{name}.toml"));
    let o = agentctl(&[
        "policy",
        "test",
        policy.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{name}:\n{}", text(&o));
    assert!(
        text(&o).contains(&format!("{} passed, 0 failed", cases.len())),
        "{}",
        text(&o)
    );
}

/// What agentd decides for AgentGate's verdict: the same, except that a
/// target AgentGate would escalate (not on a non-empty allow-list) is
/// denied (a documented narrowing).
fn from_agentgate(
    verdict: &str,
    action: &str,
    listed: bool,
    ruled: bool,
) -> (&'static str, &'static str) {
    match verdict {
        "allow" => ("allow", "ok"),
        "escalate" => ("deny", "value_not_allowed"),
        _ if listed => ("deny", "value_not_allowed"),
        _ if ruled || action.is_empty() => ("deny", "role_not_in_allowlist"),
        _ => ("deny", "role_not_in_allowlist"),
    }
}

fn probes(cases: &[Value], policy: &str, denied_targets: &[&str]) -> Vec<Case> {
    cases
        .iter()
        .filter(|c| c["policy"] == policy)
        .map(|c| {
            let (action, target) = (c["action"].as_str().unwrap(), c["target"].as_str().unwrap());
            let listed = denied_targets.contains(&target);
            let (expect, reason) =
                from_agentgate(c["agentgate"].as_str().unwrap(), action, listed, true);
            case(
                &format!(
                    "{policy}: {action} {target} (AgentGate: {})",
                    c["agentgate"].as_str().unwrap()
                ),
                action,
                target,
                expect,
                reason,
            )
        })
        .collect()
}

#[test]
fn agentgate_policies_convert_and_decide_as_agentgate_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = make_policies(d);
    assert_eq!(cases.len(), 12);

    // research: every rule has an exact equivalent (narrowings only).
    let o = import(d, "research", false);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("narrowed: rules[0].allowed_targets"),
        "{}",
        text(&o)
    );
    let mut research = probes(&cases, "research", &["summarize"]);
    // max_per_minute = 2: the third call in a minute is denied; the first
    // two are the control.
    research.push(case(
        "research: llm_call 2nd",
        "llm_call",
        "gpt",
        "allow",
        "ok",
    ));
    research.push(case(
        "research: llm_call 3rd in a minute",
        "llm_call",
        "gpt",
        "deny",
        "usage_threshold",
    ));
    research.push(Case {
        name: "research: tool_use without a target (AgentGate skips its list)".into(),
        action: "tool_use".into(),
        target: None,
        expect: "deny",
        reason: "missing_argument",
    });
    policy_test(d, "research", &research);

    // counted: use counts are approximated by a 30-day window, so the
    // import is refused until that is accepted, and nothing is written.
    let o = import(d, "counted", false);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("NOT ENFORCED: rules[0]: AgentGate counts uses"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join("counted.toml").exists(),
        "a refused import wrote a file"
    );
    let o = import(d, "counted", true);
    assert!(o.status.success(), "{}", text(&o));
    let mut counted = probes(&cases, "counted", &[]);
    counted.extend([
        // hard_deny_above 2: the 2nd use is allowed, the 3rd denied.
        case(
            "counted: network 2nd use",
            "network",
            "api.example.com",
            "allow",
            "ok",
        ),
        case(
            "counted: network 3rd use",
            "network",
            "api.example.com",
            "deny",
            "usage_threshold",
        ),
        // require_approval_above 1: the 2nd use waits for a human.
        case(
            "counted: data_access 2nd use",
            "data_access",
            "crm",
            "escalate",
            "approval_required",
        ),
    ]);
    policy_test(d, "counted", &counted);

    // open: default_deny false allows the actions without a rule; the
    // deny-list without an allow-list is refused unless accepted.
    let o = import(d, "open", false);
    assert!(!o.status.success());
    assert!(text(&o).contains("rules[0].denied_targets"), "{}", text(&o));
    assert!(!d.join("open.toml").exists());
    let o = import(d, "open", true);
    assert!(o.status.success(), "{}", text(&o));
    let mut open = probes(&cases, "open", &[]);
    open.push(case(
        "open: file_read /etc/shadow (AgentGate denies; accepted as NOT ENFORCED)",
        "file_read",
        "/etc/shadow",
        "allow",
        "ok",
    ));
    policy_test(d, "open", &open);
    let written = std::fs::read_to_string(d.join("open.toml")).unwrap();
    assert!(
        written.contains("NOT ENFORCED: rules[0].denied_targets"),
        "{written}"
    );
}

#[test]
fn bad_agentgate_files_are_refused_with_their_place_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("name: x\nrules: []\nextra: 1\n", "extra: unknown key"),
        (
            "rules:\n- action: shell\n  allowed: true\n  colour: red\n",
            "rules[0].colour: unknown key",
        ),
        (
            "rules:\n- action: teleport\n",
            "rules[0].action: `teleport` is not an AgentGate action",
        ),
        (
            "rules:\n- action: shell\n  allowed: 'yes'\n",
            "rules[0].allowed: must be true or false",
        ),
        (
            "rules:\n- action: shell\n  max_per_minute: -1\n",
            "rules[0].max_per_minute: must not be negative",
        ),
        (
            "rules:\n- action: shell\n- action: shell\n",
            "rules[1]: a second rule for `shell`",
        ),
        ("approval_default: maybe\n", "approval_default: `maybe`"),
        ("rules: [unclosed\n", "not YAML"),
        ("name: a\nname: b\n", "duplicated key"),
    ];
    for (i, (yaml, want)) in bad.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.yaml"));
        let out = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&f, yaml).unwrap();
        let o = agentctl(&[
            "policy",
            "import",
            "agentgate",
            f.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--drop-unenforced",
        ]);
        assert!(!o.status.success(), "{yaml}");
        assert!(
            text(&o).contains(want),
            "{yaml}: want {want:?} in {}",
            text(&o)
        );
        assert!(
            !out.exists(),
            "{yaml}: a refused file wrote {}",
            out.display()
        );
    }
}
