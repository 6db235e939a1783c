//! The demo's world and the scenario played in it: agentd on the demo
//! policy with the operators enrolled and the fixtures in place ([`World`]),
//! and the scripted agent taken through every step ([`World::play`]). The
//! `agentd-demo` binary and the console's browser suite both play it.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{
    fixtures::Fixtures,
    narrate,
    processes::{Agent, Daemon},
    scenario::{self, Expect, Sender, OPERATORS, STEPS},
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
        if narrate {
            let doctor: Value = serde_json::from_str(&output(
                Command::new(l.bin.join("agentd")).args(["doctor", "--json"]),
            )?)?;
            l.step(&format!(
                "demo: kernel {} — backend {} ({})",
                doctor["kernel"].as_str().unwrap_or("?"),
                doctor["backend"].as_str().unwrap_or("?"),
                doctor["reason"].as_str().unwrap_or("")
            ));
        }
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
        for (n, s) in STEPS.iter().enumerate() {
            if l.narrate {
                println!();
            }
            l.step(&format!("step {}: {}", n + 1, s.label));
            let (active, via_inbox) = deliver(l, s)?;
            let events =
                agent.instruct(&format!("{}", n + 1), s.text, active.as_deref(), via_inbox)?;
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
    let config = format!(
        "# Demo config: embedded defaults, temporary state.\nstate_dir = {:?}\nsocket_path = {:?}\nagent_user = {AGENT_USER:?}\n{extra_config}",
        l.state, l.socket
    );
    std::fs::write(&l.config, config)?;
    Ok(())
}

/// Gets the message to agentd the way its sender would, returning the
/// active-message id for the agent (inbox messages are handed over by the agent).
fn deliver(l: &Layout, s: &scenario::Step) -> anyhow::Result<(Option<String>, bool)> {
    let (operator, key) = match s.sender {
        Sender::Inbox => {
            l.line(&format!("stranger → agent inbox: {:?}", s.text));
            return Ok((None, true));
        }
        Sender::Operator(id) => (id, format!("{id}.key")),
        Sender::Spoofing(id) => (id, "spoofer.key".to_string()),
    };
    l.line(&format!(
        "{operator} ({}) → agentd: {:?}",
        if key == "spoofer.key" {
            "spoofed"
        } else {
            "signed"
        },
        s.text
    ));
    let out = l
        .agentctl()
        .args([
            "send",
            "--json",
            "--operator",
            operator,
            "--session",
            s.session,
            "--key-file",
        ])
        .arg(l.keys.join(&key))
        .arg(s.text)
        .output()?;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let id = answer["active_message_id"].as_str().map(String::from);
    l.line(&format!(
        "agentd: trust {} reason {} → active-message id {}",
        answer["trust"].as_str().unwrap_or("refused"),
        answer["reason_code"].as_str().unwrap_or("?"),
        id.as_deref()
            .map(|i| &i[..12.min(i.len())])
            .unwrap_or("none")
    ));
    Ok((id, false))
}

/// Compares a step's events with its expectations, in order.
fn check(n: usize, expect: &[Expect], events: &[Value]) -> Vec<String> {
    let mut deviations = Vec::new();
    let mut cursor = 0;
    for want in expect {
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
