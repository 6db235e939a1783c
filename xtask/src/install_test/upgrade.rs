//! The upgrade check: the installed package's agentd runs as the unit runs
//! it (emulated where systemd is not PID 1: the unit's capabilities,
//! NoNewPrivileges, `NOTIFY_SOCKET` with an fd store as
//! `FileDescriptorStoreMax=` gives it; root's capabilities where the
//! cgroup2 root is not owner-writable) on the service's own state
//! (`/var/lib/agentd`), with an operator, a policy and an agent running.
//! The same package with a bumped version is installed over it (a
//! "previous release" package would need a second release build), then
//! agentd is restarted as `systemctl restart` does: operators, policy,
//! audit chain and pins must be kept, and the agent must keep running,
//! supervised by the new agentd.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{bounding_set_of, capture, run_quiet, Outcome, PIN_DIR, PKG, UNIT_DIR};
use crate::fd_store::FdStore;

const AGENT: &str = "upgrade-check";
const AGENT_USER: &str = "agentd-agent";
const CONFIG: &str = "/etc/agentd/agentd.toml";
const API_SOCKET: &str = "/run/agentd/agentd.sock";
const ENFORCE_SOCKET: &str = "/run/agentd/enforce.sock";
const POLICY: &str = "/usr/share/agentd/policies/demo.toml";

/// Runs the check; one outcome per property.
pub(super) fn upgrade_keeps_state_and_agents(deb: &Path) -> Vec<(String, Outcome)> {
    let work = std::env::temp_dir().join(format!("agentd-upgrade-{}", std::process::id()));
    let mut run = Run {
        work: work.clone(),
        daemon: None,
        agent: None,
        out: Vec::new(),
    };
    if let Err(e) = run.go(deb) {
        run.out.push((
            "upgrade over the installed package (state kept, agents keep running)".into(),
            Outcome::Fail(format!("{e:#}; agentd said: {}", run.log_tail())),
        ));
    }
    run.cleanup();
    let _ = std::fs::remove_dir_all(&work);
    run.out
}

struct Run {
    work: PathBuf,
    daemon: Option<Child>,
    agent: Option<Child>,
    out: Vec<(String, Outcome)>,
}

impl Run {
    fn log(&self) -> PathBuf {
        self.work.join("agentd.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(4).collect();
        super::strip_ansi(&lines.join(" | "))
    }

    fn pass(&mut self, name: &str) {
        println!("    ok      {name}");
        self.out.push((name.to_owned(), Outcome::Pass));
    }

    /// Starts the installed agentd as the unit does, under `store`, with
    /// the unit's capability bounding set (`None`: full root's).
    fn start_agentd(&mut self, store: &FdStore, caps: Option<&str>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut args = vec!["--no-new-privs"];
        if let Some(caps) = caps {
            args.extend(["--inh-caps=-all", "--bounding-set", caps]);
        }
        args.extend(["--", "/usr/bin/agentd", "run", "--config", CONFIG]);
        let mut cmd = store.command("/usr/bin/setpriv", &args);
        // setpriv execs agentd in place, so LISTEN_PID (the shell's pid) is
        // agentd's.
        cmd.env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
        self.daemon = Some(cmd.spawn().context("starting the installed agentd")?);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(ENFORCE_SOCKET).is_ok() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            if log.contains("enforcement unavailable") {
                bail!("enforcement unavailable");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("enforcement did not come up within 90 s ({ENFORCE_SOCKET})")
    }

    fn stop_agentd(&mut self) -> anyhow::Result<()> {
        let Some(mut d) = self.daemon.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = d.try_wait()? {
                if !st.success() {
                    bail!("agentd exited {st} after SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = d.kill();
                let _ = d.wait();
                bail!("agentd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn go(&mut self, deb: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.work)?;
        let caps = unit_caps()?;
        let caps = caps.as_deref();
        let (bumped, old_version, new_version) = bump_version(deb, &self.work)?;

        // The installed release, running with state and an agent.
        let store = FdStore::start(&self.work.join("notify.sock"))?;
        self.start_agentd(&store, caps)?;
        if !store.saw("READY=1") {
            bail!("agentd sent no READY=1");
        }
        let (operators, policy) = self.seed_state()?;
        let mut agent = self.start_agent()?;
        wait_for_listener(&store)?;
        let before = Kept {
            operators,
            policy,
            pins: list_dir(PIN_DIR),
        };

        // The upgrade: new files while the old daemon runs, then a restart.
        run_quiet(Command::new("dpkg").arg("-i").arg(&bumped))?;
        let installed = capture(Command::new("dpkg-query").args(["-W", "-f=${Version}", PKG]))?;
        if installed != new_version {
            bail!("dpkg says {installed}, want {new_version}");
        }
        self.pass(&format!(
            "upgrade: dpkg -i of the same package as {new_version} over {old_version}"
        ));
        self.restart_under_agent(&store, caps, &mut agent)?;
        self.check_readopted()?;
        self.check_kept(&before)?;
        self.check_audit_verifies()?;
        self.stop_agentd()?;
        Ok(())
    }

    /// Loads a policy, adds an operator and creates the agent; returns the
    /// operator list and the policy as agentctl shows them.
    fn seed_state(&self) -> anyhow::Result<(String, String)> {
        agentctl(&["policy", "load", POLICY])?;
        let key_file = self.work.join("operator.key");
        agentctl(&[
            "operator",
            "add",
            "upgrade-op",
            "--role",
            "owner",
            "--key-file",
            &key_file.to_string_lossy(),
        ])?;
        let operators = agentctl(&["operator", "list", "--json"])?;
        let policy = agentctl(&["policy", "show", "--json"])?;
        let reply = post(
            API_SOCKET,
            "/v1/agents",
            &format!(
                r#"{{"name":"{AGENT}","baseline":{{"exec":["/usr/bin/true"],"read":["/usr","/lib","/lib64","/etc/ld.so.cache"],"ttl_secs":0}}}}"#
            ),
        )?;
        if !reply.starts_with("HTTP/1.1 200") {
            bail!("creating agent {AGENT}: {reply}");
        }
        Ok((operators, policy))
    }

    /// Starts the agent (a shell that execs once, then again on each line
    /// it reads) and checks its first exec was allowed.
    fn start_agent(&mut self) -> anyhow::Result<AgentIo> {
        let script = "/usr/bin/true; echo before=$?; read x; /usr/bin/true; echo after=$?; read y; echo done";
        let mut agent = Command::new("/usr/bin/agentctl")
            .args(["run", "--agent", AGENT, "--user", AGENT_USER, "--"])
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("agentctl run")?;
        let stdin = agent.stdin.take().context("agent stdin")?;
        let lines = line_reader(agent.stdout.take().context("agent stdout")?);
        self.agent = Some(agent);
        let io = AgentIo { stdin, lines };
        let first = io.next(30);
        if first != "before=0" {
            bail!("the agent's allowed exec before the upgrade: {first:?}");
        }
        Ok(io)
    }

    /// Restarts agentd while the agent runs: the agent must outlive the
    /// stop, and its next exec be decided by the new agentd.
    fn restart_under_agent(
        &mut self,
        store: &FdStore,
        caps: Option<&str>,
        agent: &mut AgentIo,
    ) -> anyhow::Result<()> {
        let restart = Instant::now();
        self.stop_agentd()?;
        if !store.saw("STOPPING=1") {
            bail!("agentd sent no STOPPING=1 on SIGTERM");
        }
        if self
            .agent
            .as_mut()
            .is_some_and(|a| matches!(a.try_wait(), Ok(Some(_))))
        {
            bail!("the agent ended when agentd stopped");
        }
        writeln!(agent.stdin, "go")?;
        self.start_agentd(store, caps)?;
        let after = agent.next(60);
        if after != "after=0" {
            bail!("the agent's exec across the restart: {after:?} (want after=0, decided by the new agentd)");
        }
        println!(
            "            exec made while agentd restarted decided after {:.2} s",
            restart.elapsed().as_secs_f64()
        );
        writeln!(agent.stdin, "end")?;
        if agent.next(30) != "done" {
            bail!("the agent did not finish after the restart");
        }
        let status = self.agent.take().map(|mut a| a.wait()).transpose()?;
        if !status.is_some_and(|s| s.success()) {
            bail!("the agent ended with {status:?}");
        }
        Ok(())
    }

    /// The new agentd readopted the agent (its row) and stopped none.
    fn check_readopted(&mut self) -> anyhow::Result<()> {
        let rows = agentctl(&["audit", "tail", "-n", "400", "--json"])?;
        let readopted = rows
            .lines()
            .any(|l| l.contains("\"agent_readopted\"") && l.contains(&format!("agent={AGENT} ")));
        if !readopted {
            bail!("no agent_readopted row for {AGENT}");
        }
        if rows.lines().any(|l| l.contains("\"agent_stopped\"")) {
            bail!("an agent was stopped at the restart");
        }
        self.pass("upgrade: the running agent keeps running across the restart, supervised by the new agentd (agent_readopted)");
        Ok(())
    }

    /// Operators, policy and pins are as before the upgrade.
    fn check_kept(&mut self, before: &Kept) -> anyhow::Result<()> {
        let mut lost = Vec::new();
        if agentctl(&["operator", "list", "--json"])? != before.operators {
            lost.push("operators");
        }
        if agentctl(&["policy", "show", "--json"])? != before.policy {
            lost.push("policy");
        }
        let pins_after = list_dir(PIN_DIR);
        if before.pins.is_empty() || before.pins.iter().any(|p| !pins_after.contains(p)) {
            lost.push("pins");
        }
        if !lost.is_empty() {
            bail!("lost across the upgrade: {}", lost.join(", "));
        }
        self.pass(&format!(
            "upgrade: operators, policy and {} pins kept",
            before.pins.len()
        ));
        Ok(())
    }

    /// The audit chain verifies after the restart.
    fn check_audit_verifies(&mut self) -> anyhow::Result<()> {
        let public_key = self.work.join("audit-public.pem");
        std::fs::write(&public_key, agentctl(&["audit", "public-key"])?)?;
        run_quiet(
            Command::new("/usr/bin/agentctl")
                .args(["audit", "verify", "--public-key"])
                .arg(&public_key),
        )?;
        self.pass("upgrade: `agentctl audit verify` passes after the restart");
        Ok(())
    }

    /// Stops what is left and removes the agent's cgroup (the package's
    /// removal, checked next, removes pins, state and runtime directory).
    fn cleanup(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = self.stop_agentd();
        if let Some(root) = super::cgroup2_root() {
            let slice = root.join("agentd.slice");
            let cg = slice.join(AGENT);
            let _ = std::fs::write(cg.join("cgroup.kill"), "1");
            for _ in 0..50 {
                if std::fs::remove_dir(&cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir(&slice);
        }
    }
}

/// State the upgrade must keep, as it was before.
struct Kept {
    operators: String,
    policy: String,
    pins: Vec<String>,
}

/// The running agent's stdin and its stdout's lines.
struct AgentIo {
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl AgentIo {
    /// The agent's next line ("" if none comes within `secs`).
    fn next(&self, secs: u64) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_default()
    }
}

/// Runs the installed agentctl; its stdout.
fn agentctl(args: &[&str]) -> anyhow::Result<String> {
    capture(Command::new("/usr/bin/agentctl").args(args))
}

/// The unit's capability bounding set for agentd (`None`: root's full set,
/// where the cgroup2 root is not owner-writable); the unit must keep an
/// fd store.
fn unit_caps() -> anyhow::Result<Option<String>> {
    let unit = std::fs::read_to_string(Path::new(UNIT_DIR).join("agentd.service"))?;
    if !unit
        .lines()
        .any(|l| l.trim().starts_with("FileDescriptorStoreMax="))
    {
        bail!("agentd.service has no FileDescriptorStoreMax=: systemd would keep no listener");
    }
    // Where the cgroup2 root is not owner-writable (not a systemd host),
    // the unit's capabilities cannot create agent cgroups (the emulated
    // start above says so): this check then runs agentd with root's.
    match super::cgroup_root_mode_quirk() {
        Some(why) => {
            println!(
                "            {why}: the upgrade check runs agentd with full root capabilities"
            );
            Ok(None)
        }
        None => Ok(Some(bounding_set_of(&unit)?)),
    }
}

/// Waits (up to 10 s) for agentd to keep the agent's listener in the fd
/// store, which is what lets the new agentd take it over.
fn wait_for_listener(store: &FdStore) -> anyhow::Result<()> {
    let kept = || {
        store
            .names()
            .iter()
            .any(|n| n.ends_with(&format!(".{AGENT}")))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kept() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !kept() {
        bail!(
            "agentd kept no listener in the fd store (stored: {:?})",
            store.names()
        );
    }
    Ok(())
}

/// The same .deb with `+upgrade1` appended to its version.
fn bump_version(deb: &Path, work: &Path) -> anyhow::Result<(PathBuf, String, String)> {
    let tree = work.join("pkg");
    run_quiet(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree))?;
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control)?;
    let old = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .context("no Version in DEBIAN/control")?
        .trim()
        .to_owned();
    let new = format!("{old}+upgrade1");
    std::fs::write(
        &control,
        text.replace(&format!("Version: {old}"), &format!("Version: {new}")),
    )?;
    let bumped = work.join(format!("{PKG}_{new}_amd64.deb"));
    run_quiet(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&bumped),
    )?;
    Ok((bumped, old, new))
}

fn list_dir(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn post(socket: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting {socket}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: agentd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn line_reader(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
