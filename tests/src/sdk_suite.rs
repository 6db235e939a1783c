//! What the suites driven by official Python SDKs share (the MCP gateway's
//! `agentd-mcp`, forward mode's `agentd-forward`): their command line
//! (`--bin DIR --venv DIR`), their preconditions (root, the SDKs in the
//! venv), the `PASS`/`FAIL` report, a real agentd with the suite's policy
//! loaded and the owner's message accepted, the agent the in-agent checks
//! run in, running an SDK script (outside or inside the agent) for its JSON
//! lines, and the clean-up after the run.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentd::enforce::Mode;
use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::runtimes::daemon::Agentd;

/// The operator every suite enrolls, with role `owner`.
pub const OWNER: &str = "olivia";

/// Counts failed checks; prints one line per check.
#[derive(Debug, Default)]
pub struct Report {
    failed: usize,
}

impl Report {
    /// Prints `PASS name`, or `FAIL name: why` and counts it.
    pub fn check(&mut self, name: &str, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            println!("PASS {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {}", why());
        }
    }

    /// Failed checks so far.
    pub fn failed(&self) -> usize {
        self.failed
    }
}

/// The suites' command line: `--bin DIR` (agentd, agentctl; default: the
/// suite binary's own directory) and `--venv DIR` (default: `target/mcp-venv`).
#[derive(Debug, Clone)]
pub struct Args {
    /// Directory holding agentd and agentctl.
    pub bin: PathBuf,
    /// The venv holding the Python SDKs.
    pub venv: PathBuf,
}

impl Args {
    /// Parses the process's arguments; exits 2 on an unknown one.
    pub fn parse() -> Self {
        let mut args = std::env::args().skip(1);
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."));
        let mut bin = exe_dir.clone();
        // target/debug/agentd-mcp → target/mcp-venv
        let mut venv = exe_dir
            .parent()
            .map(|t| t.join("mcp-venv"))
            .unwrap_or_default();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bin" => bin = args.next().map(PathBuf::from).unwrap_or(bin),
                "--venv" => venv = args.next().map(PathBuf::from).unwrap_or(venv),
                other => {
                    eprintln!("unknown argument {other}");
                    std::process::exit(2);
                }
            }
        }
        Args { bin, venv }
    }

    /// Whether the suite can run: as root, with `modules` importable from
    /// the venv's Python. Otherwise prints `SKIP stage: why` and says no.
    pub fn ready(&self, stage: &str, why_root: &str, modules: &str, what: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP {stage}: needs root ({why_root})");
            return false;
        }
        let found = Command::new(self.venv.join("bin/python"))
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            println!(
                "SKIP {stage}: {what} not installed in {} (run `cargo xtask setup`)",
                self.venv.display()
            );
        }
        found
    }
}

/// Removes the suites' scratch roots, then this run's agentd instances
/// (slices, pins): orphans once their state directories are gone, removed
/// here rather than left to the next agentd's start (`cargo xtask test`'s
/// leftover check).
pub fn clean_up(roots: &[&Path]) {
    for r in roots {
        let _ = std::fs::remove_dir_all(r);
    }
    if let Ok(cg) = agentd::enforce::cgroup_root() {
        agentd::enforce::bpf_state::gc_orphans(&cg);
    }
}

/// A real agentd with a suite's policy loaded, the owner enrolled and the
/// owner's message accepted.
pub struct Daemon {
    /// The running agentd.
    pub agentd: Agentd,
    /// The owner's active message.
    pub active: String,
}

impl Daemon {
    /// Starts agentd under `root/agentd` (`extra` appended to its config),
    /// loads `policy` (written to `root/policy.toml`), enrolls the owner and
    /// sends `text` in `session`.
    pub fn start(
        bin: &Path,
        root: &Path,
        extra: &str,
        policy: &str,
        session: &str,
        text: &str,
    ) -> anyhow::Result<Self> {
        let agentd = Agentd::start_with(bin, &root.join("agentd"), extra)?;
        let pol = root.join("policy.toml");
        std::fs::write(&pol, policy)?;
        let st = agentd
            .agentctl()
            .args(["policy", "load"])
            .arg(&pol)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("agentctl policy load failed: {st}");
        }
        let key = agentd.dir.join(format!("{OWNER}.key"));
        let st = agentd
            .agentctl()
            .args(["operator", "add", OWNER, "--role", "owner", "--key-file"])
            .arg(&key)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("agentctl operator add failed: {st}");
        }
        let out = agentd
            .agentctl()
            .args([
                "send",
                "--json",
                "--operator",
                OWNER,
                "--session",
                session,
                "--key-file",
            ])
            .arg(&key)
            .arg(text)
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let active = v["active_message_id"]
            .as_str()
            .map(String::from)
            .with_context(|| {
                format!(
                    "agentctl send gave no active message: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?;
        Ok(Daemon { agentd, active })
    }

    /// Creates agent `name` in enforce mode: the default baseline, plus
    /// reading the venv and `reads`, plus connecting to `connects`
    /// (`addr/prefix:port` rules).
    pub fn create_agent(
        &self,
        name: &str,
        venv: &Path,
        reads: &[PathBuf],
        connects: &[String],
    ) -> anyhow::Result<()> {
        let mut baseline = agentd::enforce::default_baseline();
        baseline.read.push(venv.to_path_buf());
        baseline.read.extend(reads.iter().cloned());
        baseline.connect.extend(connects.iter().cloned());
        self.agentd.create_agent(name, Mode::Enforce, &baseline)
    }
}

/// `agentctl run --agent AGENT --message ACTIVE -- ARGV`: a command inside
/// the agent, as a runtime runs there.
pub fn in_agent(agentd: &Agentd, agent: &str, active: &str, argv: &[String]) -> Command {
    let mut c = agentd.agentctl();
    c.args(["run", "--agent", agent, "--message", active, "--socket"])
        .arg(&agentd.enforce_socket)
        .arg("--")
        .args(argv);
    c
}

/// Runs `cmd` (stdin closed) for at most `limit`: its JSON stdout lines
/// and its whole output (stdout, then stderr). No JSON line is an error
/// naming `what`, with the output's tail.
pub fn json_lines(
    mut cmd: Command,
    limit: Duration,
    what: &str,
) -> anyhow::Result<(Vec<Value>, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let (out, err) = wait_output(child, limit)?;
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&err));
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        bail!("{what} printed nothing; output: {}", tail(all.as_bytes()));
    }
    Ok((lines, all))
}

/// A file of the repository (the suites run from the workspace).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The last 1500 characters of `b`.
pub fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let skip = s.chars().count().saturating_sub(1500);
    s.chars().skip(skip).collect()
}

/// Waits for a child with a deadline (killing it after), returning stdout and stderr.
pub fn wait_output(
    mut child: std::process::Child,
    limit: Duration,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((t1.join().unwrap_or_default(), t2.join().unwrap_or_default()))
}
