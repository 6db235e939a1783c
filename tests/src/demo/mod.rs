//! The ownership scenario end to end on embedded defaults — a temporary
//! state directory, the demo policy, the backend `agentd doctor` picks —
//! ending with the audit chain and receipts verified. The `agentd-demo`
//! binary runs it (`cargo xtask demo` builds and starts that binary, on the
//! host or, with `--vm`, inside the BPF LSM VM).
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

mod fixtures;
mod scenario;
mod table;

use scenario::{Expect, Sender, OPERATORS, STEPS};

// The unprivileged user the demo agent runs as (shared with the scenario suite).
use crate::harness::AGENT_USER;

/// Paths of one demo run.
struct Layout {
    bin: PathBuf,
    dir: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    keys: PathBuf,
    config: PathBuf,
}

impl Layout {
    fn new(bin: PathBuf, dir: PathBuf) -> Self {
        Self {
            bin,
            state: dir.join("state"),
            socket: dir.join("agentd.sock"),
            keys: dir.join("keys"),
            config: dir.join("agentd.toml"),
            dir,
        }
    }

    fn agentctl(&self) -> Command {
        let mut c = Command::new(self.bin.join("agentctl"));
        c.env("AGENTD_SOCKET", &self.socket);
        c
    }
}

/// The demo policy, embedded so the demo runs anywhere its binaries do.
pub const DEMO_POLICY: &str = include_str!("../../../policies/demo.toml");

/// Runs the demo with the binaries in `bin` (agentd, agentctl, demo-agent)
/// and its state under `work_dir`. Returns the summary; an error or any
/// deviation from the scenario is `Err`.
pub fn run(bin: PathBuf, work_dir: PathBuf) -> anyhow::Result<String> {
    let started = Instant::now();
    let l = Layout::new(bin, work_dir);
    prepare_dirs(&l)?;
    crate::harness::ensure_user().map_err(anyhow::Error::msg)?;
    let fixtures = fixtures::Fixtures::create()?;

    let doctor: Value = serde_json::from_str(&output(
        Command::new(l.bin.join("agentd")).args(["doctor", "--json"]),
    )?)?;
    step(&format!(
        "demo: kernel {} — backend {} ({})",
        doctor["kernel"].as_str().unwrap_or("?"),
        doctor["backend"].as_str().unwrap_or("?"),
        doctor["reason"].as_str().unwrap_or("")
    ));

    let mut daemon = Daemon::start(&l)?;
    step("demo: loading policies/demo.toml and enrolling operators");
    let policy = l.dir.join("demo.toml");
    std::fs::write(&policy, DEMO_POLICY)?;
    run_cmd(l.agentctl().args(["policy", "load"]).arg(&policy))?;
    for (id, role) in OPERATORS {
        run_cmd(
            l.agentctl()
                .args(["operator", "add", id, "--role", role, "--key-file"])
                .arg(l.keys.join(format!("{id}.key")))
                .stdout(Stdio::null()),
        )?;
        println!("    enrolled {id:<9} role {role}");
    }
    // The spoofer's key: well-formed, but not the owner's.
    std::fs::write(l.keys.join("spoofer.key"), hex32(0x5a))?;

    let mut agent = Agent::start(&l)?;
    let mut deviations = Vec::new();
    for (n, s) in STEPS.iter().enumerate() {
        println!();
        step(&format!("step {}: {}", n + 1, s.label));
        let (active, via_inbox) = deliver(&l, s)?;
        let events = agent.instruct(&format!("{}", n + 1), s.text, active.as_deref(), via_inbox)?;
        for e in &events {
            print_event(e);
        }
        deviations.extend(check(n + 1, s.expect, &events));
    }
    agent.finish()?;

    println!();
    step("demo: the owner's export of the audit log (agentctl audit export --format jsonl)");
    let export = output(
        l.agentctl()
            .args(["audit", "export", "--format", "jsonl", "--state-dir"])
            .arg(&l.state),
    )?;
    let rows: Vec<Value> = export
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["type"] == "record")
        .collect();
    table::print(&rows);

    step("demo: waiting for the receipt worker (receipts render off the decision path)");
    let receipts = daemon.wait_for_receipts(&l, &rows)?;
    println!("    {} receipts rendered", receipts.len());
    daemon.stop()?;

    step("demo: agentctl audit verify (offline: the database file and the exported public key)");
    let pem = output(
        l.agentctl()
            .args(["audit", "public-key", "--state-dir"])
            .arg(&l.state),
    )?;
    std::fs::write(l.dir.join("audit-public.pem"), pem)?;
    let verified = l
        .agentctl()
        .args(["audit", "verify", "--db"])
        .arg(l.state.join("audit.db"))
        .arg("--public-key")
        .arg(l.dir.join("audit-public.pem"))
        .status()?;
    if !verified.success() {
        deviations.push("audit verify failed".into());
    }

    step("demo: agentctl receipt verify, for every receipt");
    for (path, operator) in &receipts {
        let ok = l
            .agentctl()
            .args(["receipt", "verify"])
            .arg(path)
            .arg("--key-file")
            .arg(l.keys.join(format!("{operator}.key")))
            .status()?
            .success();
        if !ok {
            deviations.push(format!("receipt {} did not verify", path.display()));
        }
    }
    // What really left the agent: only allowed, bound tools reach the relays.
    let want_mail = count_expected(|e| {
        matches!(
            e,
            Expect::ToolOk {
                action: "send_email"
            }
        )
    });
    let want_mcp = count_expected(|e| {
        matches!(
            e,
            Expect::ToolOk {
                action: "mcp.tool_call"
            }
        )
    });
    let (mail, mcp) = (
        fixtures.relayed.load(std::sync::atomic::Ordering::Relaxed),
        fixtures
            .mcp_calls
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    println!("    the mail relay accepted {mail} message(s) (expected {want_mail}); the MCP server answered {mcp} call(s) (expected {want_mcp})");
    if mail != want_mail || mcp != want_mcp {
        deviations.push(format!(
            "relay traffic {mail}/{mcp}, expected {want_mail}/{want_mcp}"
        ));
    }
    drop(fixtures);

    let count = |kind: &str, decision: &str| {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["decision"] == decision)
            .count()
    };
    println!();
    let summary = format!(
        "demo summary: {} steps in {:.1} s; {} audit records — tool calls {} allowed / {} denied, \
         messages {} verified / {} refused or untrusted, kernel {} denied; {} receipts verified",
        STEPS.len(),
        started.elapsed().as_secs_f64(),
        rows.len(),
        count("tool_call", "allow"),
        count("tool_call", "deny"),
        count("message", "allow"),
        count("message", "deny"),
        count("kernel", "deny"),
        receipts.len(),
    );
    println!("{summary}");
    if !deviations.is_empty() {
        println!("DEVIATIONS:");
        for d in &deviations {
            println!("  - {d}");
        }
        bail!("{} outcome(s) deviated from the scenario", deviations.len());
    }
    println!("every outcome is as expected; the audit chain and all receipts verify");
    Ok(summary)
}

/// Prints a step header.
fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs a command, streaming its output; fails on a non-zero exit.
fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn prepare_dirs(l: &Layout) -> anyhow::Result<()> {
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
        "# Demo config: embedded defaults, temporary state.\nstate_dir = {:?}\nsocket_path = {:?}\nagent_user = {AGENT_USER:?}\n",
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
            println!("    stranger → agent inbox: {:?}", s.text);
            return Ok((None, true));
        }
        Sender::Operator(id) => (id, format!("{id}.key")),
        Sender::Spoofing(id) => (id, "spoofer.key".to_string()),
    };
    println!(
        "    {operator} ({}) → agentd: {:?}",
        if key == "spoofer.key" {
            "spoofed"
        } else {
            "signed"
        },
        s.text
    );
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
    println!(
        "    agentd: trust {} reason {} → active-message id {}",
        answer["trust"].as_str().unwrap_or("refused"),
        answer["reason_code"].as_str().unwrap_or("?"),
        id.as_deref()
            .map(|i| &i[..12.min(i.len())])
            .unwrap_or("none")
    );
    Ok((id, false))
}

fn print_event(e: &Value) {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    match e["event"].as_str().unwrap_or("") {
        "ingested" => println!(
            "    agent runtime hands the inbox message to agentd: trust {} ({})",
            s("trust"),
            s("reason_code")
        ),
        "thought" => println!("    agent thinks: {}", s("text")),
        "decision" => println!(
            "    agentd decides {} {} → {} ({}) in {} µs",
            s("action"),
            s("target"),
            s("decision").to_uppercase(),
            s("reason_code"),
            e["latency_us"]
        ),
        "tool_result" => println!(
            "    tool {} {}: {}",
            s("action"),
            if e["ok"] == true { "ran" } else { "FAILED" },
            s("output")
        ),
        "direct_attempt" => println!(
            "    runtime runs {:?} directly → {}{}",
            e["argv"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default(),
            s("outcome"),
            if e["blocked"] == true {
                " (stopped by the kernel)"
            } else {
                ""
            }
        ),
        "error" => println!("    agent error: {}", s("message")),
        _ => {}
    }
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
            Expect::DirectBlocked => e["event"] == "direct_attempt" && e["blocked"] == true,
        });
        match found {
            Some(i) => cursor += i + 1,
            None => deviations.push(format!("step {n}: expected {want:?}, not seen")),
        }
    }
    deviations
}

fn count_expected(pred: impl Fn(&Expect) -> bool) -> usize {
    STEPS
        .iter()
        .flat_map(|s| s.expect.iter())
        .filter(|e| pred(e))
        .count()
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hex32(byte: u8) -> String {
    (0..32)
        .map(|i| format!("{:02x}", byte.wrapping_add(i)))
        .collect()
}

/// The daemon, started on the demo config.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(l: &Layout) -> anyhow::Result<Self> {
        step("demo: starting agentd on a temporary state directory");
        let log = std::fs::File::create(l.dir.join("agentd.log"))?;
        let child = Command::new(l.bin.join("agentd"))
            .args(["run", "--config"])
            .arg(&l.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting agentd")?;
        // Generous: under TCG emulation (demo --vm) start-up takes far longer.
        let deadline = Instant::now() + Duration::from_secs(120);
        // Enforcement comes up in the background; agents need its socket.
        while !l.socket.exists() || !l.dir.join("enforce.sock").exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(l.dir.join("agentd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                for line in tail.iter().rev() {
                    println!("    agentd.log: {line}");
                }
                bail!(
                    "agentd did not open {} and enforce.sock (see {})",
                    l.socket.display(),
                    l.dir.join("agentd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("    agentd is serving on {}", l.socket.display());
        Ok(Self { child })
    }

    /// Receipts render off the hot path: wait until every allowed call has one.
    fn wait_for_receipts(
        &mut self,
        l: &Layout,
        rows: &[Value],
    ) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let allowed: HashMap<String, String> = rows
            .iter()
            .filter(|r| {
                r["decision"] == "allow"
                    && r["call_id"].as_str().is_some_and(|c| !c.is_empty())
                    && r["kind"] == "tool_call"
            })
            .map(|r| {
                (
                    r["call_id"].as_str().unwrap_or("").to_string(),
                    r["operator"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let dir = l.state.join("receipts");
        // Generous for TCG emulation (demo --vm), where rendering is ~50× slower.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let present: Vec<(PathBuf, String)> = allowed
                .iter()
                .map(|(call, op)| (dir.join(format!("{call}.png")), op.clone()))
                .filter(|(p, _)| p.exists())
                .collect();
            if present.len() == allowed.len() || Instant::now() > deadline {
                if present.len() < allowed.len() {
                    bail!(
                        "only {} of {} receipts were rendered",
                        present.len(),
                        allowed.len()
                    );
                }
                return Ok(present);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scripted agent under `agentctl run`.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
}

impl Agent {
    fn start(l: &Layout) -> anyhow::Result<Self> {
        step(&format!(
            "demo: starting the scripted agent as {AGENT_USER} under `agentctl run`"
        ));
        let mut child = l
            .agentctl()
            .args(["run", "--agent", "demo", "--user", AGENT_USER, "--socket"])
            .arg(l.dir.join("enforce.sock"))
            .arg("--")
            .arg(l.bin.join("demo-agent"))
            .args(["run", "--socket"])
            .arg(&l.socket)
            .arg("--enforce-socket")
            .arg(l.dir.join("enforce.sock"))
            .arg("--agentctl")
            .arg(l.bin.join("agentctl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting agentctl run")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => println!("    agent: {line}"),
                }
            }
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            events,
        })
    }

    fn instruct(
        &mut self,
        step: &str,
        text: &str,
        active: Option<&str>,
        via_inbox: bool,
    ) -> anyhow::Result<Vec<Value>> {
        let ins = serde_json::json!({ "step": step, "text": text, "active_message_id": active, "via_inbox": via_inbox });
        let stdin = self.stdin.as_mut().context("agent stdin closed")?;
        writeln!(stdin, "{ins}")?;
        stdin.flush()?;
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if e["event"] == "done" && e["step"] == step => return Ok(events),
                Ok(e) => events.push(e),
                Err(_) => bail!("the agent did not finish step {step} within 30 s"),
            }
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        println!("    agent exited: {status}");
        Ok(())
    }
}
