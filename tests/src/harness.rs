//! The scenario harness: an in-process [`Enforcer`] with its enforcement
//! socket, a world-readable work directory, and helpers to start an agent
//! (through the real launcher, in a fresh process) running one probe.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use agentd::{
    doctor::Backend,
    enforce::{default_baseline, launch, Enforcer, KernelRecord, MemorySink, Mode},
    grant_spec::GrantSpec,
};

/// The unprivileged user agents run as.
pub const AGENT_USER: &str = "agentd-agent";

/// Shared state of one suite run.
pub struct Harness {
    /// The enforcer under test.
    pub enforcer: Enforcer,
    /// Its kernel-event audit records.
    pub sink: MemorySink,
    /// Enforcement socket.
    pub socket: PathBuf,
    /// This binary (the probe inside agents).
    pub exe: PathBuf,
    /// Scratch directory readable by the agent user.
    pub work: PathBuf,
    /// State directory of the enforcer.
    pub state_dir: PathBuf,
    /// Backend in use.
    pub backend: Backend,
}

/// What a probe run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The `result=` value (empty if missing).
    pub result: String,
    /// The launcher's exit code.
    pub code: i32,
    /// Everything printed, for failure messages.
    pub output: String,
}

impl Run {
    /// Whether the result starts with `prefix`.
    pub fn is(&self, prefix: &str) -> bool {
        self.result.starts_with(prefix)
    }
}

/// Creates the agent user if missing (idempotent).
pub fn ensure_user() -> Result<(), String> {
    let exists = || {
        Command::new("id")
            .arg(AGENT_USER)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if exists() {
        return Ok(());
    }
    let st = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            AGENT_USER,
        ])
        .status()
        .map_err(|e| format!("useradd: {e}"))?;
    if st.success() || exists() {
        Ok(())
    } else {
        Err(format!("useradd {AGENT_USER} failed: {st}"))
    }
}

impl Harness {
    /// Starts the enforcer for `backend` with a fresh state directory.
    pub fn start(backend: Backend) -> Result<Self, String> {
        let base = std::env::temp_dir().join(format!("agentd-scenarios-{}", std::process::id()));
        let state_dir = base.join("state");
        let work = base.join("work");
        std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        for d in [&base, &work] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let sink = MemorySink::default();
        let enforcer =
            Enforcer::start(backend, &state_dir, sink.clone()).map_err(|e| e.to_string())?;
        let socket = base.join("enforce.sock");
        launch::serve(enforcer.clone(), &socket).map_err(|e| e.to_string())?;
        let exe = std::fs::canonicalize(std::env::current_exe().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(Harness {
            enforcer,
            sink,
            socket,
            exe,
            work,
            state_dir,
            backend,
        })
    }

    /// Creates agent `name` whose baseline is the default plus this binary
    /// (its own code) and the work directory for reading.
    pub fn agent(&self, name: &str, mode: Mode) -> Result<(), String> {
        let mut baseline = default_baseline();
        baseline.exec.push(self.exe.clone());
        baseline.read.push(self.exe.clone());
        self.enforcer
            .create_agent(
                name,
                agentd::enforce::AgentOptions::with_baseline(mode, baseline.clone()),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Installs a grant for `call` on `agent`.
    pub fn grant(&self, agent: &str, call: &str, spec: GrantSpec) -> Result<(), String> {
        self.enforcer
            .install_grant(agent, call, &format!("msg-{call}"), &spec)
            .map_err(|e| e.to_string())
    }

    /// A file in the work directory (created with `contents`, mode `mode`).
    pub fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let p = self.work.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, contents).expect("write work file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .expect("chmod work file");
        p
    }

    /// Copies a system file into the work directory.
    pub fn copy(&self, src: &str, name: &str, mode: u32) -> PathBuf {
        let bytes = std::fs::read(src).expect("read source file");
        self.file(name, &bytes, mode)
    }

    /// Launches agent `agent` running `probe [--bind call] op…` and waits.
    pub fn run(&self, agent: &str, bind: Option<&str>, op: &[&str]) -> Run {
        self.run_with(agent, bind, op, |_| {})
    }

    /// Like [`Self::run`], calling `during(pid)` right after the launcher starts.
    pub fn run_with(
        &self,
        agent: &str,
        bind: Option<&str>,
        op: &[&str],
        during: impl FnOnce(u32),
    ) -> Run {
        self.run_prepared(agent, bind, op, None, during)
    }

    /// Like [`Self::run_with`], running `prepare` in the launcher's process
    /// just before it starts (as root: a network namespace, an inherited fd).
    pub fn run_prepared(
        &self,
        agent: &str,
        bind: Option<&str>,
        op: &[&str],
        prepare: Option<fn() -> std::io::Result<()>>,
        during: impl FnOnce(u32),
    ) -> Run {
        let mut cmd = Command::new(&self.exe);
        if let Some(f) = prepare {
            // SAFETY: `prepare` makes raw syscalls only (no allocation).
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, f) };
        }
        cmd.arg("launch")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--agent", agent, "--"]);
        cmd.arg(&self.exe).arg("probe");
        if let Some(call) = bind {
            cmd.arg("--socket").arg(&self.socket).args(["--bind", call]);
        }
        cmd.args(op);
        cmd.current_dir(&self.work);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Run {
                    result: String::new(),
                    code: -1,
                    output: format!("spawn: {e}"),
                };
            }
        };
        during(child.id());
        collect(child)
    }

    /// Runs the probe `op` directly, outside any agent (as root, no filter,
    /// no cgroup): the control that shows a step succeeds unenforced.
    pub fn run_unenforced(&self, op: &[&str], prepare: Option<fn() -> std::io::Result<()>>) -> Run {
        let mut cmd = Command::new(&self.exe);
        if let Some(f) = prepare {
            // SAFETY: `prepare` makes raw syscalls only (no allocation).
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, f) };
        }
        cmd.arg("probe").args(op).current_dir(&self.work);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match cmd.spawn() {
            Ok(c) => collect(c),
            Err(e) => Run {
                result: String::new(),
                code: -1,
                output: format!("spawn: {e}"),
            },
        }
    }

    /// Waits (up to 2 s) for an audit record matching all given fields.
    pub fn record(
        &self,
        agent: &str,
        action: &str,
        target_suffix: &str,
        decision: &str,
    ) -> Option<KernelRecord> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let found = self
                .sink
                .0
                .lock()
                .ok()?
                .iter()
                .find(|r| {
                    r.agent == agent
                        && r.action == action
                        && r.target.ends_with(target_suffix)
                        && r.decision == decision
                })
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lifecycle records (action, target, reason).
    pub fn lifecycle(&self, action: &str) -> Option<KernelRecord> {
        self.sink
            .0
            .lock()
            .ok()?
            .iter()
            .find(|r| r.action == action)
            .cloned()
    }

    /// Removes everything the run created (agents, cgroups, pins, files).
    pub fn finish(&self) {
        self.enforcer.uninstall();
        if let Some(base) = self.work.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }

    /// The work directory as a string.
    pub fn work_str(&self) -> String {
        self.work.display().to_string()
    }

    /// Path as `&str` helper.
    pub fn s(p: &Path) -> String {
        p.display().to_string()
    }
}

/// Waits for a launcher or probe and parses its `result=` line.
fn collect(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("wait for the launcher");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result="))
        .unwrap_or("")
        .trim()
        .to_string();
    Run {
        result,
        code: out.status.code().unwrap_or(-1),
        output: format!("stdout: {stdout}\nstderr: {stderr}"),
    }
}

/// A grant spec helper.
pub fn spec(
    exec: &[&str],
    read: &[&str],
    write: &[&str],
    connect: &[&str],
    ttl_secs: u64,
) -> GrantSpec {
    GrantSpec {
        exec: exec.iter().map(PathBuf::from).collect(),
        read: read.iter().map(PathBuf::from).collect(),
        write: write.iter().map(PathBuf::from).collect(),
        connect: connect.iter().map(|s| s.to_string()).collect(),
        ttl_secs,
        uses: 0,
        args: None,
        ..GrantSpec::default()
    }
}
