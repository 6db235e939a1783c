//! The MCP gateway suite: the official MCP Python SDK as the client, a real
//! MCP server written with the same SDK (`tests/mcp/server.py`), and a real
//! agentd between them (`agentctl mcp proxy` as the server command). One
//! `PASS`/`FAIL`/`SKIP` line per check.
//!
//! The agent's server runs under the host's backend (seccomp here) as the
//! agent user; the client runs outside the agent, as root (an admin may
//! open an agent's MCP session). Checks: a control without agentd; allowed
//! and denied calls with their audit rows; the malicious tools' reads,
//! shells and connects outside the call's grant refused by the kernel and
//! audited; raw bad input through the proxy.
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::runtimes::daemon::Agentd;
pub use crate::sdk_suite::repo_file;

pub mod http;
use crate::sdk_suite::{in_agent, json_lines, Daemon};

/// The agent the suite's servers work for.
pub const AGENT: &str = "mcp";
/// The server name in actions.
pub const SERVER: &str = "demo";

/// One check's outcome line.
pub struct Line(pub String);

/// The suite's fixture: agentd, paths, the owner's active message.
pub struct Suite {
    /// The running agentd.
    pub agentd: Agentd,
    /// Scratch root (agent-readable).
    pub root: PathBuf,
    /// The venv holding the SDK.
    pub venv: PathBuf,
    /// The owner's active message.
    pub active: String,
    /// The Streamable HTTP upstream and agentd's endpoint for it.
    pub http: http::HttpSide,
}

/// The suite's policy: the owner may call the demo tools, with scopes.
pub fn policy(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"id = "mcp-suite"
description = "MCP gateway suite."

[messages]
unsigned = "untrusted"
invalid = "untrusted"

[actions."mcp.demo.echo"]
description = "Echo text."

[actions."mcp.demo.read_file"]
description = "Read one file through the MCP server."
grant = {{ read = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[actions."mcp.demo.sneaky_read"]
description = "Read one file (the server also tries another)."
grant = {{ read = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[actions."mcp.demo.sneaky_shell"]
description = "Echo (the server also tries a shell)."

[actions."mcp.demo.sneaky_connect"]
description = "Nothing granted (the server tries to connect)."

[actions."mcp.demo.ask_model"]
description = "Ask the client's model (the server sends sampling/createMessage)."

[actions."mcp_request.demo.sampling"]
description = "The demo server asks the client's model."

[actions."mcp.demo.self_call"]
description = "The server tries to ask agentd for a tool call itself."

[actions."mcp_prompt.demo.get"]
description = "Get a prompt of the demo server."

[actions."mcp.demo.crash"]
description = "The server exits mid-call."

[actions."mcp.demo.hang"]
description = "The server never answers."

[actions."mcp.demo.stray"]
description = "The server answers an id nobody asked."

[actions."mcp.web.echo"]
description = "Echo text (the Streamable HTTP upstream)."

[actions."mcp.web.read_file"]
description = "Read one file through the HTTP upstream."
grant = {{ read = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[actions."mcp.web.ask_model"]
description = "Ask the client's model over HTTP (sampling on the SSE stream)."

[actions."mcp_request.web.sampling"]
description = "The HTTP upstream asks the client's model."

[actions."contacts.lookup"]
description = "Look a contact up (the HTTP upstream's FindContact, mapped by name)."

[mcp.servers.web]
filter_tools = true
tools = {{ FindContact = "contacts.lookup" }}

[roles.owner]
description = "Owns the demo tools."
rate_per_minute = 6000

[roles.owner.allow."mcp.demo.echo"]
text = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp.demo.read_file"]
path = {{ type = "path", scopes = ["{r}/allowed"] }}

[roles.owner.allow."mcp.demo.sneaky_read"]
path = {{ type = "path", scopes = ["{r}/allowed"] }}
other = {{ type = "text", max_bytes = 4096 }}

[roles.owner.allow."mcp.demo.sneaky_shell"]
text = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp.demo.sneaky_connect"]
port = {{ type = "integer", min = 1, max = 65535 }}

[roles.owner.allow."mcp.demo.ask_model"]
prompt = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp_request.demo.sampling"]
params = {{ type = "json", max_bytes = 400 }}

[roles.owner.allow."mcp.demo.self_call"]
socket_path = {{ type = "text", max_bytes = 4096 }}

[roles.owner.allow."mcp_prompt.demo.get"]
name = {{ type = "string", values = ["greeting"] }}
arguments = {{ type = "json", max_bytes = 1000, optional = true }}

[roles.owner.allow."mcp.web.echo"]
text = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp.web.read_file"]
path = {{ type = "path", scopes = ["{r}/allowed"] }}

[roles.owner.allow."mcp.web.ask_model"]
prompt = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp_request.web.sampling"]
params = {{ type = "json", max_bytes = 400 }}

[roles.owner.allow."contacts.lookup"]
name = {{ type = "text", max_bytes = 200 }}

[roles.owner.allow."mcp.demo.crash"]
[roles.owner.allow."mcp.demo.hang"]
[roles.owner.allow."mcp.demo.stray"]
"#
    )
}

impl Suite {
    /// Starts agentd, loads the policy, enrolls the owner, sends the
    /// owner's message and creates the agent.
    pub fn start(bin: &Path, root: &Path, venv: &Path, repo: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::remove_dir_all(root);
        for d in ["allowed", "secret", "srv"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::write(root.join("allowed/a.txt"), "alpha\n")?;
        std::fs::write(root.join("secret/b.txt"), "bravo\n")?;
        std::fs::copy(repo.join("tests/mcp/server.py"), root.join("srv/server.py"))?;
        std::fs::copy(repo.join("tests/mcp/client.py"), root.join("srv/client.py"))?;
        for f in ["http_client.py", "http_raw.py", "tls_certs.py"] {
            std::fs::copy(repo.join("tests/mcp").join(f), root.join("srv").join(f))?;
        }
        for p in ["", "allowed", "secret", "srv"] {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o755))?;
        }
        for p in [
            "allowed/a.txt",
            "secret/b.txt",
            "srv/server.py",
            "srv/client.py",
            "srv/http_client.py",
            "srv/http_raw.py",
        ] {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o644))?;
        }
        let http = http::HttpSide::start(root, venv)?;
        let daemon = Daemon::start(
            bin,
            root,
            &http.config(),
            &policy(root),
            "mcp-s",
            "use the demo tools",
        )?;
        // The server's own directory (Python reads its script's directory);
        // the HTTP client's certificates; agentd's loopback MCP endpoint.
        daemon.create_agent(
            AGENT,
            venv,
            &[root.join("srv"), PathBuf::from("/etc/ssl")],
            &[http.connect_rule()],
        )?;
        Ok(Suite {
            agentd: daemon.agentd,
            root: root.to_path_buf(),
            venv: venv.to_path_buf(),
            active: daemon.active,
            http,
        })
    }

    fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// The server command (as the runtime would configure it).
    pub fn server_cmd(&self) -> Vec<String> {
        vec![
            self.python().display().to_string(),
            self.root.join("srv/server.py").display().to_string(),
        ]
    }

    /// The proxy command standing in for the server.
    pub fn proxy_cmd(&self, timeout_ms: Option<u64>) -> Vec<String> {
        self.proxy_cmd_with(timeout_ms, &[])
    }

    /// [`Self::proxy_cmd`] with extra server arguments.
    pub fn proxy_cmd_with(&self, timeout_ms: Option<u64>, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.agentd.bin.join("agentctl").display().to_string(),
            "mcp".into(),
            "proxy".into(),
            "--socket".into(),
            self.agentd.socket.display().to_string(),
            "--agent".into(),
            AGENT.into(),
            "--server".into(),
            SERVER.into(),
        ];
        if let Some(t) = timeout_ms {
            v.push("--call-timeout-ms".into());
            v.push(t.to_string());
        }
        v.push("--".into());
        v.extend(self.server_cmd());
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    }

    /// `agentctl` against this agentd, its output.
    pub fn agentctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(self.agentd.agentctl().args(args).output()?)
    }

    /// Admin rows of one action.
    pub fn admin_rows(&self, action: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .agentd
            .audit()?
            .into_iter()
            .filter(|r| r["kind"] == "admin" && r["action"] == action)
            .collect())
    }

    /// Runs the SDK client with `steps` against `server_cmd`; returns its
    /// JSON lines.
    pub fn client(
        &self,
        steps: &Value,
        server_cmd: &[String],
        active: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut c = Command::new(self.python());
        c.arg(repo_file("tests/mcp/client.py"))
            .arg(steps.to_string())
            .arg("--")
            .args(server_cmd)
            .env_remove("AGENTD_ACTIVE_MESSAGE");
        if let Some(a) = active {
            c.env("AGENTD_ACTIVE_MESSAGE", a);
        }
        Ok(json_lines(c, Duration::from_secs(90), "the SDK client")?.0)
    }

    /// Runs the SDK client inside the agent (`agentctl run --message`), as
    /// a runtime would: the proxy it starts is an agent process.
    pub fn client_in_agent(&self, steps: &Value) -> anyhow::Result<Vec<Value>> {
        let mut argv = vec![
            self.python().display().to_string(),
            self.root.join("srv/client.py").display().to_string(),
            steps.to_string(),
            "--".into(),
        ];
        argv.extend(self.proxy_cmd(None));
        let c = in_agent(&self.agentd, AGENT, &self.active, &argv);
        Ok(json_lines(c, Duration::from_secs(90), "the SDK client in the agent")?.0)
    }

    /// Audit rows of tool calls on this suite's active message.
    pub fn call_rows(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .agentd
            .audit()?
            .into_iter()
            .filter(|r| r["kind"] == "tool_call" && r["active_message_id"] == self.active.as_str())
            .collect())
    }
}

/// A step's result line from the client output.
pub fn step<'a>(lines: &'a [Value], tool: &str, nth: usize) -> Option<&'a Value> {
    lines.iter().filter(|l| l["tool"] == tool).nth(nth)
}

/// A raw JSON-RPC session through the proxy (no SDK): for bad input.
pub struct Raw {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    rx: mpsc::Receiver<Value>,
}

impl Raw {
    /// Starts the proxy with piped stdio.
    pub fn start(s: &Suite, timeout_ms: u64) -> anyhow::Result<Self> {
        let cmd = s.proxy_cmd(Some(timeout_ms));
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("AGENTD_ACTIVE_MESSAGE", &s.active)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"unparsable": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Ok(Raw { child, stdin, rx })
    }

    /// Sends raw bytes (a newline is added).
    pub fn send(&mut self, line: &[u8]) -> anyhow::Result<()> {
        self.stdin.write_all(line)?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// The next message, or None after `wait`.
    pub fn recv(&self, wait: Duration) -> Option<Value> {
        self.rx.recv_timeout(wait).ok()
    }

    /// Every message until `id` answers (or `wait` passes): (the answer, the rest seen).
    pub fn until(&self, id: &Value, wait: Duration) -> (Option<Value>, Vec<Value>) {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(v) if &v["id"] == id => return (Some(v), seen),
                Some(v) => seen.push(v),
                None => break,
            }
        }
        (None, seen)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
