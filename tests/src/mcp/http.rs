//! The Streamable HTTP side of the MCP gateway suite: a real MCP server
//! written with the SDK (`tests/mcp/server.py --http PORT`) on loopback as
//! the configured upstream `web`, agentd's MCP endpoint on a Unix socket
//! and a loopback port, the SDK's Streamable HTTP client
//! (`tests/mcp/http_client.py`) and raw requests (`tests/mcp/http_raw.py`)
//! run inside the agent so agentd names the caller from its connection.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use super::{Suite, AGENT};
use crate::sdk_suite::{in_agent, json_lines};

/// The upstream server's name in actions.
pub const SERVER: &str = "web";

/// The upstream server and where agentd serves it.
pub struct HttpSide {
    upstream: Child,
    /// The upstream's own URL, https (the control talks to it directly).
    pub upstream_url: String,
    /// The test CA that signed the upstream's certificate (agentd's
    /// `[mcp] ca_file`; the control client trusts it too).
    pub ca: PathBuf,
    /// agentd's MCP Unix socket.
    pub socket: PathBuf,
    /// agentd's MCP loopback address.
    pub addr: String,
}

/// A loopback port free right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl HttpSide {
    /// Starts the upstream over TLS, with a certificate of a test CA (as
    /// root, outside every agent: a server of its own elsewhere) and picks
    /// agentd's endpoint.
    pub fn start(root: &Path, venv: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let tls = root.join("tls");
        std::fs::create_dir_all(&tls)?;
        let made = Command::new(venv.join("bin/python"))
            .arg(root.join("srv/tls_certs.py"))
            .arg(&tls)
            .status()?;
        if !made.success() {
            bail!("tls_certs.py could not write the test certificates: {made}");
        }
        let log = std::fs::File::create(root.join("upstream.log"))?;
        let upstream = Command::new(venv.join("bin/python"))
            .arg(root.join("srv/server.py"))
            .args(["--http", &port.to_string(), "--tls"])
            .arg(tls.join("cert.pem"))
            .arg(tls.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let me = HttpSide {
            upstream,
            upstream_url: format!("https://127.0.0.1:{port}/mcp"),
            ca: tls.join("ca.pem"),
            socket: root.join("agentd/mcp.sock"),
            addr: format!("127.0.0.1:{}", free_port()?),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the upstream MCP server did not listen on {port} (see upstream.log)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// agentd's `[mcp]` section.
    pub fn config(&self) -> String {
        format!(
            "\n[mcp]\nsocket_path = {:?}\nlisten = {:?}\nupstream_timeout_secs = 20\nca_file = {:?}\n[mcp.servers.{SERVER}]\nurl = {:?}\n",
            self.socket, self.addr, self.ca, self.upstream_url
        )
    }

    /// The baseline connect rule for the loopback endpoint.
    pub fn connect_rule(&self) -> String {
        let port = self.addr.rsplit(':').next().unwrap_or("0");
        format!("127.0.0.1/32:{port}")
    }

    /// The endpoint's URL path.
    pub fn path() -> String {
        format!("/mcp/{SERVER}")
    }
}

impl Drop for HttpSide {
    fn drop(&mut self) {
        let _ = self.upstream.kill();
        let _ = self.upstream.wait();
    }
}

/// Where a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The upstream itself (the control), from outside the agent.
    Direct,
    /// agentd's Unix socket, from inside the agent.
    Socket,
    /// agentd's loopback port, from inside the agent.
    Tcp,
}

impl Suite {
    /// Runs the SDK's Streamable HTTP client with `steps` in `mode`
    /// (`legacy` or `auto`).
    pub fn http_client(&self, steps: &Value, mode: &str, via: Via) -> anyhow::Result<Vec<Value>> {
        let py = self.venv.join("bin/python").display().to_string();
        let script = self.root.join("srv/http_client.py").display().to_string();
        let h = &self.http;
        let mut argv = vec![py, script, steps.to_string()];
        match via {
            Via::Direct => argv.extend([h.upstream_url.clone(), mode.into()]),
            Via::Socket => argv.extend([
                format!("http://agentd{}", HttpSide::path()),
                mode.into(),
                h.socket.display().to_string(),
            ]),
            Via::Tcp => argv.extend([
                format!("http://{}{}", h.addr, HttpSide::path()),
                mode.into(),
            ]),
        }
        let cmd = match via {
            Via::Direct => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]).env("AGENTD_TEST_CA", &h.ca);
                c
            }
            _ => in_agent(&self.agentd, AGENT, &self.active, &argv),
        };
        Ok(json_lines(cmd, Duration::from_secs(90), "the SDK HTTP client")?.0)
    }

    /// Sends raw requests from inside the agent (or, `outside`, as root
    /// outside every agent) to agentd's endpoint; one answer per request.
    pub fn http_raw(&self, reqs: &Value, via: Via, outside: bool) -> anyhow::Result<Vec<Value>> {
        let argv = vec![
            self.venv.join("bin/python").display().to_string(),
            self.root.join("srv/http_raw.py").display().to_string(),
            reqs.to_string(),
            match via {
                Via::Tcp => self.http.addr.clone(),
                _ => self.http.socket.display().to_string(),
            },
        ];
        let cmd = if outside {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        } else {
            in_agent(&self.agentd, AGENT, &self.active, &argv)
        };
        Ok(json_lines(cmd, Duration::from_secs(90), "the raw HTTP client")?.0)
    }
}
