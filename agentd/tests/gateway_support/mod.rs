//! Shared by the gateway integration tests: starts the real `agentd` binary
//! on a temporary state directory and socket, and drives it with the real
//! `agentctl` binary or the API client over the real socket.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use agentd::api::client::Client;
use hyper::Method;
use serde_json::Value;

/// The demo policy shipped in policies/.
pub fn demo_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml")
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    /// Temporary root (0755 so other users can reach the socket).
    pub dir: tempfile::TempDir,
    /// API socket.
    pub socket: PathBuf,
    /// State directory.
    pub state: PathBuf,
    /// Config file used.
    pub config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts agentd with the demo policy.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts agentd with extra config TOML (appended to the generated file).
    pub fn start_with(extra_config: &str) -> Self {
        Self::start_full(extra_config, |_| demo_policy().canonicalize().unwrap())
    }

    /// Starts agentd with extra config and a policy file chosen inside the temp dir.
    pub fn start_full(extra_config: &str, policy: impl FnOnce(&Path) -> PathBuf) -> Self {
        Self::start_gateway(extra_config, "", policy)
    }

    /// [`Self::start_full`] with extra `[gateway]` keys (`host_id = "h"`).
    pub fn start_gateway(
        extra_config: &str,
        gateway: &str,
        policy: impl FnOnce(&Path) -> PathBuf,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy(dir.path());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("agentd.sock");
        let state = dir.path().join("state");
        let config = dir.path().join("agentd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nsocket_path = {:?}\n{extra_config}\n[gateway]\npolicy_file = {:?}\n{gateway}\n",
                state, socket, policy
            ),
        )
        .unwrap();
        let log = dir.path().join("agentd.log");
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            state,
            config,
            log,
        };
        d.spawn();
        d
    }

    /// (Re)starts the process on the same state and waits until it serves.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("AGENTD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agentd");
        self.child = Some(child);
        // Start-up probes the kernel and loads BPF (enforcement): slow in debug builds on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agentd exited early ({status}):\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agentd did not start serving:\n{}", self.log_text());
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agentd did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reaps a daemon that was killed (`signal(SIGKILL)`); returns its status.
    pub fn stop_killed(&mut self) -> ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }

    /// Runs agentctl against this daemon.
    pub fn agentctl(&self, args: &[&str]) -> Output {
        self.agentctl_cmd(args).output().expect("run agentctl")
    }

    /// An agentctl command against this daemon (to adjust uid etc.).
    pub fn agentctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agentctl"));
        c.args(args)
            .env("AGENTD_SOCKET", &self.socket)
            .env_remove("AGENTCTL_LOG");
        c
    }

    /// Runs agentctl and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.agentctl(args);
        assert!(
            out.status.success(),
            "agentctl {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Enrolls an operator and returns its key file.
    pub fn enroll(&self, id: &str, role: &str) -> PathBuf {
        let key = self.dir.path().join(format!("{id}.key"));
        self.ok(&[
            "operator",
            "add",
            id,
            "--role",
            role,
            "--key-file",
            key.to_str().unwrap(),
        ]);
        key
    }

    /// Sends a signed message; returns the active-message id.
    pub fn send(&self, op: &str, key: &Path, session: &str, text: &str) -> String {
        self.ok(&[
            "send",
            "--operator",
            op,
            "--key-file",
            key.to_str().unwrap(),
            "--session",
            session,
            text,
        ])
        .trim()
        .to_owned()
    }

    /// `agentctl check --json`; returns the decision JSON.
    pub fn check(&self, id: &str, action: &str, args: &[&str]) -> Value {
        let mut a = vec!["check", "--json", "--message", id, action];
        a.extend_from_slice(args);
        let out = self.agentctl(&a);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("check {a:?}: {e}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        let expect_code = if v["decision"] == "allow" { 0 } else { 2 };
        assert_eq!(
            out.status.code(),
            Some(expect_code),
            "exit code of check {a:?}"
        );
        v
    }

    /// Audit records of the daemon's log (`agentctl audit export`, offline,
    /// as root).
    pub fn audit_records(&self) -> Vec<Value> {
        self.ok(&[
            "audit",
            "export",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "record")
        .collect()
    }

    /// Raw HTTP over the real socket: (status, JSON body or Null).
    pub fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Client::connect(&self.socket).await.unwrap();
            let (status, bytes) = c.raw(method, path, body).await.unwrap();
            (
                status.as_u16(),
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// Verifies the whole audit chain offline with `agentctl audit verify`
    /// and the exported checkpoint key; panics unless the result is `pass`.
    pub fn verify_chain(&self) {
        let pem = self.dir.path().join("audit.pub.pem");
        let state = self.state.to_str().unwrap();
        std::fs::write(
            &pem,
            self.ok(&["audit", "public-key", "--state-dir", state]),
        )
        .unwrap();
        let out = self.ok(&[
            "audit",
            "verify",
            "--state-dir",
            state,
            "--public-key",
            pem.to_str().unwrap(),
            "--json",
        ]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["result"], "pass", "{v}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts a decision's outcome and reason code.
pub fn assert_decision(d: &Value, decision: &str, reason: &str) {
    assert_eq!(
        (d["decision"].as_str(), d["reason_code"].as_str()),
        (Some(decision), Some(reason)),
        "decision: {d:#}"
    );
}

/// Waits until the daemon's enforcement is up; None (with the reason) if it
/// cannot start on this machine.
pub fn enforcement_ready(d: &Daemon) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = d.raw(Method::GET, "/v1/enforcement", vec![]);
        if status == 200 {
            return Some(body);
        }
        let starting = body["message"]
            .as_str()
            .is_some_and(|m| m.contains("starting"));
        if !starting || Instant::now() > deadline {
            println!("SKIPPED: enforcement unavailable: {body}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs agentctl with `args` from inside the agent cgroup `cgroup` (as root).
pub fn in_agent(d: &Daemon, cgroup: &str, args: &[&str]) -> std::process::Output {
    let script = format!("echo 0 > {}/cgroup.procs && exec \"$0\" \"$@\"", cgroup);
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_agentctl"))
        .args(args)
        .env("AGENTD_SOCKET", &d.socket)
        .output()
        .unwrap()
}

/// Creates agent `name` allowed to run agentctl (its tool runner, as
/// `agentctl run` arranges); returns its cgroup directory.
pub fn create_agent(d: &Daemon, name: &str) -> String {
    let agent = agentd::enforce::launch::call(
        &d.socket.with_file_name("enforce.sock"),
        &agentd::enforce::launch::Request::CreateAgent {
            agent: name.into(),
            mode: None,
            command: Some(env!("CARGO_BIN_EXE_agentctl").into()),
            baseline: None,
        },
        None,
    )
    .unwrap()
    .unwrap();
    agent["cgroup"].as_str().unwrap().to_owned()
}

/// The ids of the calls agent `agent` holds grants for (`GET /v1/agents`).
pub fn calls_of(d: &Daemon, agent: &str) -> Vec<Value> {
    let (status, list) = d.raw(Method::GET, "/v1/agents", vec![]);
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == agent)
        .map(|a| a["calls"].as_array().unwrap().clone())
        .unwrap_or_default()
}

/// A loopback TCP port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` over a plain TCP connection: (status, body).
pub fn scrape(port: u16) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// The value of the sample named exactly `series` (name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
