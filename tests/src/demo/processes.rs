//! The processes a demo run starts: agentd on the demo config, and the
//! scripted agent under `agentctl run`.
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

use super::world::Layout;
use crate::harness::AGENT_USER;

/// The daemon, started on the demo config.
pub(super) struct Daemon {
    child: Child,
}

impl Daemon {
    pub(super) fn start(l: &Layout) -> anyhow::Result<Self> {
        l.step("demo: starting agentd on a temporary state directory");
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
        l.line(&format!("agentd is serving on {}", l.socket.display()));
        Ok(Self { child })
    }

    /// Receipts render off the hot path: wait until every allowed call has one.
    pub(super) fn wait_for_receipts(
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
                // A token's calls are sealed with its root operator's key.
                let operator = r["operator"].as_str().unwrap_or("");
                let root = operator.split('/').next().unwrap_or(operator);
                (
                    r["call_id"].as_str().unwrap_or("").to_string(),
                    root.to_string(),
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

    pub(super) fn stop(&mut self) -> anyhow::Result<()> {
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

/// What the driver does while a step waits (it may add events of its own).
pub(super) type Poll<'a> = &'a mut dyn FnMut(&mut Vec<Value>) -> anyhow::Result<()>;

/// The scripted agent under `agentctl run`.
pub(super) struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
}

impl Agent {
    pub(super) fn start(l: &Layout) -> anyhow::Result<Self> {
        l.step(&format!(
            "demo: starting the scripted agent as {AGENT_USER} under `agentctl run`"
        ));
        let mut child = l
            .agentctl()
            .args([
                "run",
                "--agent",
                super::DEMO_AGENT,
                "--user",
                AGENT_USER,
                "--socket",
            ])
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
        let narrate = l.narrate;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) if narrate => println!("    agent: {line}"),
                    Err(_) => {}
                }
            }
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            events,
        })
    }

    /// Hands the agent one message and collects its events until the step
    /// is done. While it waits, `poll` (if any) runs every 50 ms and may add
    /// events of its own (the driver answering an approval).
    pub(super) fn instruct(
        &mut self,
        step: &str,
        text: &str,
        active: Option<&str>,
        via_inbox: bool,
        mut poll: Option<Poll<'_>>,
    ) -> anyhow::Result<Vec<Value>> {
        let ins = serde_json::json!({ "step": step, "text": text, "active_message_id": active, "via_inbox": via_inbox });
        let stdin = self.stdin.as_mut().context("agent stdin closed")?;
        writeln!(stdin, "{ins}")?;
        stdin.flush()?;
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = match poll {
                Some(_) => left.min(Duration::from_millis(50)),
                None => left,
            };
            match self.events.recv_timeout(wait) {
                Ok(e) if e["event"] == "done" && e["step"] == step => return Ok(events),
                Ok(e) => events.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Some(p) = poll.as_mut() {
                        p(&mut events)?;
                    }
                }
                Err(_) => bail!("the agent did not finish step {step} within 30 s"),
            }
        }
    }

    /// Closes the agent's input and waits for it to exit.
    pub(super) fn finish(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        Ok(self.child.wait()?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // After finish() this finds the child already reaped; after an
        // error mid-scenario it stops the agent instead of leaving it behind.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
