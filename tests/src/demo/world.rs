//! The demo's world and the scenario played in it: agentd on the demo
//! policy with the operators enrolled and the fixtures in place ([`World`]),
//! and the scripted agent taken through every step ([`World::play`]). The
//! `agentd-demo` binary and the console's browser suite both play it.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{
    fixtures::Fixtures,
    narrate,
    processes::{Agent, Daemon, Poll},
    scenario::{self, Admin, Expect, Sender, OPERATORS, STEPS},
    DEMO_POLICY,
};
use crate::harness::AGENT_USER;

/// Paths of one demo run, and whether it tells its story on stdout.
pub(super) struct Layout {
    pub(super) bin: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) state: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) keys: PathBuf,
    pub(super) config: PathBuf,
    pub(super) narrate: bool,
}

impl Layout {
    fn new(bin: PathBuf, dir: PathBuf, narrate: bool) -> Self {
        Self {
            bin,
            state: dir.join("state"),
            socket: dir.join("agentd.sock"),
            keys: dir.join("keys"),
            config: dir.join("agentd.toml"),
            dir,
            narrate,
        }
    }

    pub(super) fn agentctl(&self) -> Command {
        let mut c = Command::new(self.bin.join("agentctl"));
        c.env("AGENTD_SOCKET", &self.socket);
        c
    }

    /// Prints a step header (when narrating).
    pub(super) fn step(&self, msg: &str) {
        if self.narrate {
            println!("==> {msg}");
        }
    }

    /// Prints an indented line under the current step (when narrating).
    pub(super) fn line(&self, msg: &str) {
        if self.narrate {
            println!("    {msg}");
        }
    }
}

/// agentd on the demo policy, its operators enrolled, the fixtures in place.
/// Dropping it stops agentd and removes the fixtures.
pub struct World {
    pub(super) l: Layout,
    pub(super) daemon: Daemon,
    pub(super) fixtures: Fixtures,
}

/// What playing the scenario produced.
pub struct Played {
    /// Each step's events from the agent, in step order.
    pub events: Vec<Vec<Value>>,
    /// Outcomes that differ from the scenario's.
    pub deviations: Vec<String>,
}

impl World {
    /// Starts agentd with the binaries in `bin` (agentd, agentctl,
    /// demo-agent) and its state under `work_dir`, `extra_config` appended to
    /// its configuration (TOML tables, e.g. `[console]`); loads the demo
    /// policy and enrolls the operators. `narrate` prints each step.
    pub fn start(
        bin: PathBuf,
        work_dir: PathBuf,
        extra_config: &str,
        narrate: bool,
    ) -> anyhow::Result<Self> {
        let l = Layout::new(bin, work_dir, narrate);
        prepare_dirs(&l, extra_config)?;
        crate::harness::ensure_user().map_err(anyhow::Error::msg)?;
        let fixtures = Fixtures::create()?;
        let doctor: Value = serde_json::from_str(&output(
            Command::new(l.bin.join("agentd")).args(["doctor", "--json"]),
        )?)?;
        l.step(&format!(
            "demo: kernel {} — backend {} ({})",
            doctor["kernel"].as_str().unwrap_or("?"),
            doctor["backend"].as_str().unwrap_or("?"),
            doctor["reason"].as_str().unwrap_or("")
        ));
        let daemon = Daemon::start(&l)?;
        l.step("demo: loading policies/demo.toml and enrolling operators");
        let policy = l.dir.join("demo.toml");
        std::fs::write(&policy, DEMO_POLICY)?;
        run_cmd(
            l.agentctl()
                .args(["policy", "load"])
                .arg(&policy)
                .stdout(quiet(narrate)),
        )?;
        // As a real agent would, it may write its workspace: all of it but
        // its protected SOUL.md, which the kernel carves out of the scope.
        run_cmd(
            l.agentctl()
                .args(["agent", "add", super::DEMO_AGENT, "--user", AGENT_USER])
                .args(["--profile", "demo-agent", "--workspace", "/workspace"])
                .stdout(Stdio::null()),
        )?;
        l.line(&format!(
            "configured agent {}: profile demo-agent (its baseline writes /workspace, SOUL.md excepted)",
            super::DEMO_AGENT
        ));
        for (id, role) in OPERATORS {
            run_cmd(
                l.agentctl()
                    .args(["operator", "add", id, "--role", role, "--key-file"])
                    .arg(l.keys.join(format!("{id}.key")))
                    .stdout(Stdio::null()),
            )?;
            l.line(&format!("enrolled {id:<9} role {role}"));
        }
        // The spoofer's key: well-formed, but not the owner's.
        std::fs::write(l.keys.join("spoofer.key"), hex32(0x5a))?;
        Ok(Self {
            l,
            daemon,
            fixtures,
        })
    }

    /// Takes the scripted agent through every step of the scenario, each
    /// message sent the way its sender would, and compares what happened
    /// with what the step expects.
    pub fn play(&self) -> anyhow::Result<Played> {
        let l = &self.l;
        let mut agent = Agent::start(l)?;
        let mut played = Played {
            events: Vec::new(),
            deviations: Vec::new(),
        };
        // Delegation tokens the steps issued: holder -> token name.
        let mut tokens = HashMap::new();
        for (n, s) in STEPS.iter().enumerate() {
            if l.narrate {
                println!();
            }
            l.step(&format!("step {}: {}", n + 1, s.label));
            for a in s.before {
                administer(l, a, &mut tokens)?;
            }
            let (active, via_inbox) = deliver(l, s, &tokens)?;
            let mut approver = s.approve.map(|why| Approver::new(l, why));
            let mut answer = |events: &mut Vec<Value>| match approver.as_mut() {
                Some(a) => a.answer(events),
                None => Ok(()),
            };
            let poll = s.approve.is_some().then_some(&mut answer as Poll<'_>);
            let events = agent.instruct(
                &format!("{}", n + 1),
                s.text,
                active.as_deref(),
                via_inbox,
                poll,
            )?;
            if l.narrate {
                events.iter().for_each(narrate::event);
            }
            played.deviations.extend(check(n + 1, s.expect, &events));
            played.events.push(events);
        }
        let status = agent.finish()?;
        l.line(&format!("agent exited: {status}"));
        Ok(played)
    }

    /// An agentctl talking to this world's agentd.
    pub fn agentctl(&self) -> Command {
        self.l.agentctl()
    }

    /// agentd's state directory (audit.db, receipts/).
    pub fn state_dir(&self) -> &Path {
        &self.l.state
    }

    /// The operator key files' directory (`ID.key`).
    pub fn keys_dir(&self) -> &Path {
        &self.l.keys
    }

    /// Every audit record, oldest first (`agentctl audit export --format jsonl`).
    pub fn audit_rows(&self) -> anyhow::Result<Vec<Value>> {
        // Quiet, its "exported N records" line goes only with the story.
        let export = output_with(
            self.l
                .agentctl()
                .args(["audit", "export", "--format", "jsonl", "--state-dir"])
                .arg(&self.l.state),
            quiet(self.l.narrate),
        )?;
        Ok(export
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["type"] == "record")
            .collect())
    }
}

impl Played {
    /// The allowed calls whose bound tool the kernel refused (the steps
    /// expecting [`Expect::BoundBlocked`]), in step order: (call id, the
    /// file or program the kernel must have refused under it).
    pub fn bound_blocked_calls(&self) -> Vec<(String, &'static str)> {
        let mut calls = Vec::new();
        for (s, events) in STEPS.iter().zip(&self.events) {
            for want in s.expect {
                let Expect::BoundBlocked {
                    action,
                    kernel_target,
                } = *want
                else {
                    continue;
                };
                let mut allowed = None;
                for e in events {
                    if e["event"] == "decision" && e["action"] == action {
                        allowed = (e["decision"] == "allow")
                            .then(|| e["call_id"].as_str().unwrap_or("").to_string());
                    } else if is_bound_blocked(e, action) {
                        calls.extend(allowed.take().map(|id| (id, kernel_target)));
                    }
                }
            }
        }
        calls
    }

    /// Deviations when a bound tool's refusal has no kernel denial of its
    /// target in `rows` carrying its call's id.
    pub fn untied_denials(&self, rows: &[Value]) -> Vec<String> {
        let want = STEPS
            .iter()
            .flat_map(|s| s.expect)
            .filter(|e| matches!(e, Expect::BoundBlocked { .. }))
            .count();
        let calls = self.bound_blocked_calls();
        let mut deviations = Vec::new();
        if calls.len() != want {
            deviations.push(format!(
                "{} bound tool(s) refused by the kernel, expected {want}",
                calls.len()
            ));
        }
        for (id, target) in calls {
            if tied_denial(rows, &id, target).is_none() {
                deviations.push(format!("no kernel denial of {target} carries call {id}"));
            }
        }
        deviations
    }
}

impl Played {
    /// Deviations when a step's [`Expect::KernelRefused`] has no kernel
    /// denial of its target with its reason in `rows`.
    pub fn kernel_refusals(&self, rows: &[Value]) -> Vec<String> {
        let mut deviations = Vec::new();
        for want in STEPS.iter().flat_map(|s| s.expect) {
            let Expect::KernelRefused { target, reason } = *want else {
                continue;
            };
            if kernel_refusal(rows, target, reason).is_none() {
                deviations.push(format!("no kernel denial of {target} with reason {reason}"));
            }
        }
        deviations
    }

    /// Deviations when an escalation the driver answered has no
    /// `escalate` row of its call with its reason in `rows`.
    pub fn untied_escalations(&self, rows: &[Value]) -> Vec<String> {
        let mut deviations = Vec::new();
        for e in self.events.iter().flatten() {
            if e["event"] != "escalated" {
                continue;
            }
            let found = rows.iter().any(|r| {
                r["kind"] == "tool_call"
                    && r["decision"] == "escalate"
                    && r["call_id"] == e["approval_id"]
                    && r["reason_code"] == e["reason_code"]
            });
            if !found {
                deviations.push(format!("no escalate row for approval {}", e["approval_id"]));
            }
        }
        deviations
    }
}

/// The kernel row denying `target` with `reason`. The seccomp supervisor
/// names the file by its path, the BPF LSM backend by its last component
/// (the dentry's name): either matches.
pub fn kernel_refusal<'a>(rows: &'a [Value], target: &str, reason: &str) -> Option<&'a Value> {
    let name = Path::new(target).file_name().and_then(|n| n.to_str());
    rows.iter().find(|r| {
        r["kind"] == "kernel"
            && r["decision"] == "deny"
            && (r["target"] == target || r["target"].as_str() == name)
            && r["reason_code"] == reason
    })
}

/// The kernel row denying `target` under call `call_id`, if there is one.
/// The seccomp supervisor names the file by its path, the BPF LSM backend
/// by its last component (the dentry's name): either matches.
pub fn tied_denial<'a>(rows: &'a [Value], call_id: &str, target: &str) -> Option<&'a Value> {
    let name = Path::new(target).file_name().and_then(|n| n.to_str());
    rows.iter().find(|r| {
        r["kind"] == "kernel"
            && r["decision"] == "deny"
            && r["call_id"] == call_id
            && (r["target"] == target || r["target"].as_str() == name)
    })
}

/// A bound tool that failed because the kernel refused it what it touched.
fn is_bound_blocked(e: &Value, action: &str) -> bool {
    let output = e["output"].as_str().unwrap_or("");
    e["event"] == "tool_result"
        && e["action"] == action
        && e["ok"] == false
        && (output.contains("Permission denied") || output.contains("Operation not permitted"))
}

/// Output of a set-up command: shown when narrating, dropped otherwise.
fn quiet(narrate: bool) -> Stdio {
    if narrate {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// Runs a command, streaming its output; fails on a non-zero exit.
pub(super) fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A command's stdout (its stderr goes to `stderr`); fails on a non-zero exit.
pub(super) fn output_with(cmd: &mut Command, stderr: Stdio) -> anyhow::Result<String> {
    let out = cmd
        .stderr(stderr)
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command's stdout, its stderr going to ours; fails on a non-zero exit.
pub(super) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    output_with(cmd, Stdio::inherit())
}

fn prepare_dirs(l: &Layout, extra_config: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::remove_dir_all(&l.dir);
    std::fs::create_dir_all(&l.keys)?;
    std::fs::create_dir_all(&l.state)?;
    std::fs::set_permissions(&l.state, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(&l.keys, std::fs::Permissions::from_mode(0o700))?;
    // The agent user must reach the socket and the binaries.
    for dir in [&l.dir, &l.bin] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    // A call waiting for a person gives up soon: a step whose approver
    // never comes fails in seconds, not minutes.
    let config = format!(
        "# Demo config: embedded defaults, temporary state.\nstate_dir = {:?}\nsocket_path = {:?}\nagent_user = {AGENT_USER:?}\n{extra_config}\n[approvals]\ntimeout_secs = 25\n",
        l.state, l.socket
    );
    std::fs::write(&l.config, config)?;
    Ok(())
}

/// Gets the message to agentd the way its sender would, returning the
/// active-message id for the agent (inbox messages are handed over by the agent).
fn deliver(
    l: &Layout,
    s: &scenario::Step,
    tokens: &HashMap<&str, String>,
) -> anyhow::Result<(Option<String>, bool)> {
    let mut send = l.agentctl();
    send.args(["send", "--json", "--session", s.session]);
    let (who, how) = match s.sender {
        Sender::Inbox => {
            l.line(&format!("stranger → agent inbox: {:?}", s.text));
            return Ok((None, true));
        }
        Sender::Operator(id) => {
            send.args(["--operator", id, "--key-file"])
                .arg(l.keys.join(format!("{id}.key")));
            (id.to_owned(), "signed")
        }
        Sender::Spoofing(id) => {
            send.args(["--operator", id, "--key-file"])
                .arg(l.keys.join("spoofer.key"));
            (id.to_owned(), "spoofed")
        }
        Sender::Token(holder) => {
            let token = tokens
                .get(holder)
                .with_context(|| format!("no token was issued to {holder}"))?;
            send.args(["--token", token, "--token-key-file"])
                .arg(l.keys.join(format!("{holder}.secret")));
            (format!("{holder} (token {})", short_token(token)), "signed")
        }
    };
    let how = match s.scope {
        Some(scope) => {
            send.args(["--for-agent", super::DEMO_AGENT, "--scope", scope]);
            format!("{how} v2, scope {scope}")
        }
        None => how.to_owned(),
    };
    l.line(&format!("{who} ({how}) → agentd: {:?}", s.text));
    let out = send.arg("--").arg(s.text).output()?;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let id = answer["active_message_id"].as_str().map(String::from);
    l.line(&format!(
        "agentd: trust {} reason {} → active-message id {}",
        answer["trust"].as_str().unwrap_or("refused"),
        answer["reason_code"].as_str().unwrap_or("?"),
        id.as_deref().map(short).unwrap_or("none")
    ));
    Ok((id, false))
}

/// The first 12 characters of an id, for the story.
fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// A token's name with its random part cut short (`dr-alice/d-d953dd0f…`).
fn short_token(token: &str) -> String {
    match token.split_once("/d-") {
        Some((root, hex)) => format!("{root}/d-{}…", &hex[..8.min(hex.len())]),
        None => token.to_owned(),
    }
}

/// Does what an operator does outside a message: issue or revoke a
/// delegation token (signed with the issuer's key).
fn administer(
    l: &Layout,
    a: &Admin,
    tokens: &mut HashMap<&'static str, String>,
) -> anyhow::Result<()> {
    match *a {
        Admin::Delegate {
            issuer,
            to,
            action,
            arg,
        } => {
            let secret = l.keys.join(format!("{to}.secret"));
            let _ = std::fs::remove_file(&secret);
            let out = output(
                l.agentctl()
                    .args(["delegate", "issue", "--operator", issuer, "--key-file"])
                    .arg(l.keys.join(format!("{issuer}.key")))
                    .args(["--to", to, "--actions", action, "--arg", arg])
                    .args(["--ttl", "10m", "--uses", "3", "--secret-file"])
                    .arg(&secret),
            )?;
            let token = out.lines().next().unwrap_or("").trim().to_owned();
            l.line(&format!(
                "{issuer} issues {to} a token (agentctl delegate issue): {token}, `{arg}`, 3 uses, 10 minutes"
            ));
            tokens.insert(to, token);
        }
        Admin::Revoke { issuer, to } => {
            let token = tokens
                .get(to)
                .with_context(|| format!("no token was issued to {to}"))?;
            run_cmd(
                l.agentctl()
                    .args([
                        "delegate",
                        "revoke",
                        token,
                        "--operator",
                        issuer,
                        "--key-file",
                    ])
                    .arg(l.keys.join(format!("{issuer}.key")))
                    .stdout(Stdio::null()),
            )?;
            l.line(&format!(
                "{issuer} revokes {to}'s token {} (agentctl delegate revoke)",
                short_token(token)
            ));
        }
    }
    Ok(())
}

/// An administrator answering the approvals a step raises: every pending
/// approval seen is approved once, with the step's reason, and reported
/// as an `escalated` event among the step's events.
struct Approver<'a> {
    l: &'a Layout,
    why: &'static str,
    answered: HashSet<String>,
}

impl<'a> Approver<'a> {
    fn new(l: &'a Layout, why: &'static str) -> Self {
        Self {
            l,
            why,
            answered: HashSet::new(),
        }
    }

    fn answer(&mut self, events: &mut Vec<Value>) -> anyhow::Result<()> {
        let list: Value = serde_json::from_str(&output(self.l.agentctl().args([
            "approvals",
            "list",
            "--json",
        ]))?)?;
        for a in list["approvals"].as_array().into_iter().flatten() {
            let id = a["id"].as_str().unwrap_or("").to_owned();
            if id.is_empty() || !self.answered.insert(id.clone()) {
                continue;
            }
            let reason = if a["elevation"].is_object() {
                "elevation_required"
            } else if a["anomaly"].is_string() {
                "anomaly_escalated"
            } else {
                "approval_required"
            };
            run_cmd(
                self.l
                    .agentctl()
                    .args(["approvals", "approve", &id, "--reason", self.why])
                    .stdout(Stdio::null()),
            )?;
            events.push(serde_json::json!({
                "event": "escalated",
                "action": a["action"],
                "reason_code": reason,
                "approval_id": id,
                "elevation": a["elevation"],
                "why": self.why,
            }));
        }
        Ok(())
    }
}

/// Compares a step's events with its expectations, in order.
fn check(n: usize, expect: &[Expect], events: &[Value]) -> Vec<String> {
    let mut deviations = Vec::new();
    let mut cursor = 0;
    for want in expect {
        if matches!(want, Expect::KernelRefused { .. }) {
            continue; // in the audit log, not the agent's events
        }
        let found = events[cursor..].iter().position(|e| match *want {
            Expect::Decision {
                action,
                decision,
                reason,
            } => {
                e["event"] == "decision"
                    && e["action"] == action
                    && e["decision"] == decision
                    && e["reason_code"] == reason
            }
            Expect::ToolOk { action } => {
                e["event"] == "tool_result" && e["action"] == action && e["ok"] == true
            }
            Expect::BoundBlocked { action, .. } => is_bound_blocked(e, action),
            Expect::DirectBlocked => e["event"] == "direct_attempt" && e["blocked"] == true,
            Expect::Escalated { action, reason } => {
                e["event"] == "escalated" && e["action"] == action && e["reason_code"] == reason
            }
            // Checked against the audit log ([`Played::kernel_refusals`]).
            Expect::KernelRefused { .. } => true,
        });
        match found {
            Some(i) => cursor += i + 1,
            None => deviations.push(format!("step {n}: expected {want:?}, not seen")),
        }
    }
    deviations
}

fn hex32(byte: u8) -> String {
    (0..32)
        .map(|i| format!("{:02x}", byte.wrapping_add(i)))
        .collect()
}
