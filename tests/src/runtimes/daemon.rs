//! A real agentd for the runtime stage: started from the built binary on a
//! temporary state directory, agents created through its API with a
//! profile-built baseline, its audit log read back with `agentctl audit export`.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agentd::{enforce::Mode, grant_spec::GrantSpec};
use anyhow::{bail, Context as _};
use serde_json::Value;

/// A running agentd and its paths.
pub struct Agentd {
    /// Directory holding the binaries (agentd, agentctl).
    pub bin: PathBuf,
    /// Its work directory.
    pub dir: PathBuf,
    /// State directory (audit database).
    pub state: PathBuf,
    /// API socket.
    pub socket: PathBuf,
    /// Enforcement socket.
    pub enforce_socket: PathBuf,
    child: Child,
}

impl Agentd {
    /// Starts agentd with its state under `dir` (created fresh).
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, dir, "")
    }

    /// [`Self::start`] with `extra` appended to the config file (its own
    /// tables, e.g. `[forward]`).
    pub fn start_with(bin: &Path, dir: &Path, extra: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::remove_dir_all(dir);
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
        let socket = dir.join("agentd.sock");
        let config = dir.join("agentd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nsocket_path = {socket:?}\nagent_user = {:?}\n{extra}",
                crate::harness::AGENT_USER
            ),
        )?;
        let log = std::fs::File::create(dir.join("agentd.log"))?;
        let child = Command::new(bin.join("agentd"))
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting agentd")?;
        let me = Self {
            bin: bin.to_path_buf(),
            enforce_socket: dir.join("enforce.sock"),
            dir: dir.to_path_buf(),
            state,
            socket,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !me.socket.exists() || !me.enforce_socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "agentd did not open its sockets within 60 s (see {})",
                    me.dir.join("agentd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// `agentctl` aimed at this agentd.
    pub fn agentctl(&self) -> Command {
        let mut c = Command::new(self.bin.join("agentctl"));
        c.env("AGENTD_SOCKET", &self.socket);
        c
    }

    /// Creates (or replaces) agent `name` with `baseline` in `mode`.
    pub fn create_agent(&self, name: &str, mode: Mode, baseline: &GrantSpec) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({
            "name": name, "mode": mode, "baseline": baseline,
        }))?;
        let (status, reply) = agentd::api::client::blocking(&self.socket, |mut c| async move {
            c.raw(axum::http::Method::POST, "/v1/agents", body).await
        })?;
        if !status.is_success() {
            bail!(
                "POST /v1/agents {name}: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }

    /// Every audit record so far (`agentctl audit export --format jsonl`).
    pub fn audit(&self) -> anyhow::Result<Vec<Value>> {
        let out = self
            .agentctl()
            .args(["audit", "export", "--format", "jsonl", "--state-dir"])
            .arg(&self.state)
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("agentctl audit export failed: {}", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "record")
            .collect())
    }

    /// Kernel rows of `agent` (rows name their agent in `agent`).
    pub fn kernel_rows(&self, agent: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .audit()?
            .into_iter()
            .filter(|r| r["kind"] == "kernel" && r["agent"] == agent)
            .collect())
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
