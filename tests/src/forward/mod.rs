//! The forward-mode suite: the official `openai` and `anthropic` Python
//! SDKs (`tests/forward/client.py`) talk to a real agentd's model socket;
//! agentd forwards to the scripted model server on loopback
//! (`model_server::canned`), holding a canary key. One `PASS`/`FAIL`/`SKIP`
//! line per check.
//!
//! Checks: a control without agentd (the denied call does reach the
//! client); for both SDKs, streamed and not, an allowed call passes
//! unchanged and a denied one never reaches the client (rewritten into text
//! the SDK parses, stop reason intact), each with its decision row and the
//! exchange row; calls without an active message or with arguments that
//! are not JSON are denied and recorded; endpoints that are not inference
//! are refused in the provider's shape without reaching the upstream;
//! upstream failures (5xx, a 401 quoting the key, a reset, a stall, a body
//! that is not JSON) reach the client as the provider's errors; the canary
//! key reaches the upstream and nowhere else (client output, audit log,
//! agentd's log).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::model_server::{ModelServer, Script};
use crate::runtimes::daemon::Agentd;
use crate::sdk_suite::{in_agent, json_lines, repo_file, Daemon};

/// How long one run of the SDK client may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(600);

pub mod gemini;
pub mod limits;
pub mod tcp;

/// The agent the in-agent checks run as.
pub const AGENT: &str = "fwd";

/// The suite's fixture.
pub struct Suite {
    /// The fake upstream.
    pub upstream: ModelServer,
    /// The running agentd.
    pub agentd: Agentd,
    /// Scratch root.
    pub root: PathBuf,
    /// The venv holding the SDKs.
    pub venv: PathBuf,
    /// agentd's model socket.
    pub model_socket: PathBuf,
    /// agentd's loopback TCP listener for the proxy.
    pub tcp_port: u16,
    /// The owner's active message.
    pub active: String,
    /// The canary upstream key.
    pub canary: String,
}

/// The suite's policy: the owner may run `ls`, nothing else.
pub fn policy(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"id = "forward-suite"
description = "Forward-mode suite."

[messages]
unsigned = "untrusted"
invalid = "untrusted"

[actions.shell]
description = "Run one program with arguments."
grant = {{ exec = ["{{arg.command}}"], ttl_secs = 60, uses = 1 }}

[roles.owner]
description = "May list files."
rate_per_minute = 6000

[roles.owner.allow.shell]
command = {{ type = "command", programs = ["/usr/bin/ls"], scopes = ["{r}"], max_items = 8 }}

# A provider-run tool: the model's web search (decided in the request).
[actions.web_search]
description = "Search the web (the provider runs it)."

[roles.owner.allow.web_search]
query = {{ type = "text", max_bytes = 1024, optional = true }}
"#
    )
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Suite {
    /// Starts the upstream and agentd (forward proxy on, `on_deny`),
    /// loads the policy, enrolls the owner and sends the owner's message.
    pub fn start(bin: &Path, root: &Path, venv: &Path, on_deny: &str) -> anyhow::Result<Self> {
        Self::start_with(bin, root, venv, on_deny, "")
    }

    /// [`Self::start`] with `forward_extra` appended to `[forward]` (its
    /// keys, and its sub-tables after them).
    pub fn start_with(
        bin: &Path,
        root: &Path,
        venv: &Path,
        on_deny: &str,
        forward_extra: &str,
    ) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
        let upstream = ModelServer::start(Script::default(), 0)?;
        let canary = format!("sk-agentd-canary-{}", random_hex(16));
        let key_dir = root.join("keys");
        std::fs::create_dir_all(&key_dir)?;
        std::fs::set_permissions(&key_dir, std::fs::Permissions::from_mode(0o700))?;
        let key_file = key_dir.join("upstream.key");
        std::fs::write(&key_file, format!("{canary}\n"))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        let model_socket = root.join("agentd/model.sock");
        let tcp_port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let extra = format!(
            "\n[forward]\nsocket_path = {model_socket:?}\ntcp_listen = \"127.0.0.1:{tcp_port}\"\non_deny = {on_deny:?}\nupstream_timeout_secs = 3\n{forward_extra}\n\
             [forward.openai]\nurl = \"{u}/v1\"\nkey_file = {key_file:?}\n\
             [forward.anthropic]\nurl = \"{u}\"\nkey_file = {key_file:?}\n\
             [forward.gemini]\nurl = \"{u}\"\nkey_file = {key_file:?}\n",
            u = upstream.url()
        );
        let daemon = Daemon::start(bin, root, &extra, &policy(root), "fwd-s", "list the files")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !model_socket.exists() {
            if Instant::now() > deadline {
                bail!("agentd did not open its model socket");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The in-agent client: its copy, readable by the agent user, and an
        // agent whose baseline runs Python from the venv and nothing else.
        std::fs::copy(repo_file("tests/forward/client.py"), root.join("client.py"))?;
        std::fs::set_permissions(
            root.join("client.py"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        daemon.create_agent(
            AGENT,
            venv,
            &[root.to_path_buf(), PathBuf::from("/etc/ssl")],
            &[format!("127.0.0.1/32:{tcp_port}")],
        )?;
        Ok(Suite {
            upstream,
            agentd: daemon.agentd,
            root: root.to_path_buf(),
            venv: venv.to_path_buf(),
            model_socket,
            tcp_port,
            active: daemon.active,
            canary,
        })
    }

    /// Runs the SDK client with `steps`; returns its lines and its whole
    /// output (stdout and stderr, for the canary check). `direct`: talk
    /// to the upstream itself (the control), not to agentd.
    pub fn client(
        &self,
        steps: &Value,
        active: Option<&str>,
        direct: bool,
    ) -> anyhow::Result<(Vec<Value>, String)> {
        let mut c = Command::new(self.venv.join("bin/python"));
        c.arg(repo_file("tests/forward/client.py"))
            .arg(steps.to_string())
            .env_remove("AGENTD_ACTIVE_MESSAGE");
        if direct {
            c.env("AGENTD_MODEL_DIRECT", self.upstream.url());
        } else {
            c.env("AGENTD_MODEL_SOCKET", &self.model_socket);
        }
        if let Some(a) = active {
            c.env("AGENTD_ACTIVE_MESSAGE", a);
        }
        json_lines(c, CLIENT_LIMIT, "the SDK client")
    }

    /// Runs the SDK client inside the agent (`agentctl run --message`), as
    /// a runtime with no hook would run: its tool runner executes what the
    /// model's answers ask for. Returns its lines and whole output.
    pub fn client_in_agent(&self, steps: &Value) -> anyhow::Result<(Vec<Value>, String)> {
        let argv = [
            self.venv.join("bin/python").display().to_string(),
            self.root.join("client.py").display().to_string(),
            steps.to_string(),
        ];
        let mut c = in_agent(&self.agentd, AGENT, &self.active, &argv);
        c.env("AGENTD_MODEL_SOCKET", &self.model_socket);
        json_lines(c, CLIENT_LIMIT, "the SDK client in the agent")
    }

    /// [`Self::client_in_agent`] over the proxy's loopback TCP listener.
    pub fn client_in_agent_tcp(&self, steps: &Value) -> anyhow::Result<(Vec<Value>, String)> {
        let argv = [
            self.venv.join("bin/python").display().to_string(),
            self.root.join("client.py").display().to_string(),
            steps.to_string(),
        ];
        let mut c = in_agent(&self.agentd, AGENT, &self.active, &argv);
        c.env(
            "AGENTD_MODEL_URL",
            format!("http://127.0.0.1:{}", self.tcp_port),
        );
        json_lines(c, CLIENT_LIMIT, "the SDK client in the agent (TCP)")
    }

    /// Audit rows of decisions on this suite's active message.
    pub fn call_rows(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .agentd
            .audit()?
            .into_iter()
            .filter(|r| r["kind"] == "tool_call")
            .collect())
    }

    /// Exchange rows (kind `model`).
    pub fn exchange_rows(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .agentd
            .audit()?
            .into_iter()
            .filter(|r| r["kind"] == "model")
            .collect())
    }

    /// One raw HTTP/1.1 request on the model socket: (status, body).
    pub fn raw(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        self.raw_with(
            method,
            path,
            &[("authorization", "Bearer client-side".into())],
            body,
        )
    }

    /// [`Self::raw`] with these headers; a chunked body is decoded.
    pub fn raw_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        use std::io::{Read as _, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(&self.model_socket)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: agentd\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }
}

/// A step for the client.
pub fn step(name: &str, api: &str, stream: bool, directive: &Value) -> Value {
    json!({ "name": name, "api": api, "stream": stream,
        "prompt": format!("{} {directive}", crate::model_server::canned::PREFIX) })
}

/// The 8-character runs of the canary's random part found in `text`
/// (none: the key did not leak, whole or in pieces).
pub fn key_fragments(text: &str, key: &str) -> Vec<String> {
    let secret = key.rsplit('-').next().unwrap_or(key).as_bytes();
    let mut found: Vec<String> = secret
        .windows(8)
        .filter(|w| text.as_bytes().windows(8).any(|t| t == *w))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    found.dedup();
    found
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        s = after.strip_prefix("\r\n").unwrap_or(after);
    }
    out
}
