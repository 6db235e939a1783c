//! Forward mode under the real runtimes: agentd's model proxy (loopback
//! TCP, the agent told by its socket's cgroup) is the runtime's model API,
//! holding the upstream key; its upstream is each run's scripted model
//! server, reached through a [`Relay`] whose target changes per run (agentd
//! starts once, with one upstream URL). The runtime has no hook: the proxy
//! decides each tool call in the model's answers before the runtime sees it.
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

/// A loopback TCP relay to a port that can change (the current run's model server).
pub struct Relay {
    port: u16,
    target: Arc<AtomicU16>,
}

impl Relay {
    /// Starts on a free loopback port; relays nowhere until [`Self::set_target`].
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let target = Arc::new(AtomicU16::new(0));
        let t = target.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let to = t.load(Ordering::SeqCst);
                std::thread::spawn(move || {
                    let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                        return;
                    };
                    let (Ok(c2), Ok(u2)) = (client.try_clone(), up.try_clone()) else {
                        return;
                    };
                    let a = std::thread::spawn(move || pump(client, up));
                    pump(u2, c2);
                    let _ = a.join();
                });
            }
        });
        Ok(Self { port, target })
    }

    /// Its URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Relays new connections to `port`.
    pub fn set_target(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// agentd's forward proxy as the runtimes suite runs it.
pub struct Rig {
    /// The relay agentd's upstream URLs point at.
    pub relay: Relay,
    /// The proxy's loopback TCP port.
    pub port: u16,
    /// The upstream key agentd holds.
    pub canary: String,
}

impl Rig {
    /// A relay, a free port for the proxy, and a root-only key file in
    /// `dir`; returns the rig and the `[forward]` config text.
    pub fn prepare(dir: &Path) -> anyhow::Result<(Self, String)> {
        use std::os::unix::fs::PermissionsExt as _;
        let relay = Relay::start()?;
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let canary = format!("sk-agentd-runtimes-canary-{port}-{}", std::process::id());
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let key = dir.join("upstream.key");
        std::fs::write(&key, &canary)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let model_socket = dir.join("model.sock");
        let config = format!(
            "\n[forward]\nsocket_path = {model_socket:?}\ntcp_listen = \"127.0.0.1:{port}\"\n\
             [forward.openai]\nurl = \"{u}/v1\"\nkey_file = {key:?}\n\
             [forward.anthropic]\nurl = \"{u}\"\nkey_file = {key:?}\n\
             [forward.gemini]\nurl = \"{u}\"\nkey_file = {key:?}\n",
            u = relay.url()
        );
        Ok((
            Self {
                relay,
                port,
                canary,
            },
            config,
        ))
    }

    /// The proxy's URL for the runtime.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The model-exchange rows (kind `model`) that name `agent` (the proxy
/// told it by the connecting socket's cgroup), as parsed summaries.
pub fn exchanges_of(audit: &[serde_json::Value], agent: &str) -> Vec<serde_json::Value> {
    audit
        .iter()
        .filter(|r| r["kind"] == "model")
        .filter_map(|r| {
            r["target"]
                .as_str()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        })
        .filter(|t| t["agent"] == agent)
        .collect()
}

/// Checks a forward run whose tool call the proxy allowed: the owner's
/// checks (the decision, the runtime's own tool claiming the grant in the
/// kernel, the tool ran, a receipt), plus the exchange rows naming the
/// agent with the call allowed.
pub fn allowed(
    r: &super::RunResult,
    agentd: &super::daemon::Agentd,
    active: &str,
) -> super::Outcome {
    let owner = super::owner_allowed(r, agentd, active);
    let super::Outcome::Pass(msg) = owner else {
        return owner;
    };
    let audit = match agentd.audit() {
        Ok(a) => a,
        Err(e) => return super::Outcome::Fail(format!("{e:#}")),
    };
    let ex = exchanges_of(&audit, &r.agent);
    let allowed = ex
        .iter()
        .flat_map(|e| e["tool_calls"].as_array().cloned().unwrap_or_default())
        .any(|c| c["decision"] == "allow");
    if !allowed {
        return super::Outcome::Fail(format!(
            "no model exchange row names agent {} with an allowed call: {ex:?}",
            r.agent
        ));
    }
    super::Outcome::Pass(format!(
        "through agentd's proxy, no hook: {msg}; {} exchange rows name the agent",
        ex.len()
    ))
}

/// Checks a forward run whose tool call the proxy denied: the runtime never
/// received it (no tool result reached the model, no kernel row, the
/// marker absent), the model's answer reached it as agentd's text, and the
/// gateway's deny row and the exchange row exist.
pub fn denied(r: &super::RunResult, audit: &[serde_json::Value], active: &str) -> super::Outcome {
    let mut why = Vec::new();
    let results = r.server.tool_results();
    if !results.is_empty() {
        why.push(format!("the runtime ran a tool: {results:?}"));
    }
    if r.server.requests().is_empty() {
        why.push("the model server got no request (the proxy did not forward)".into());
    }
    if let Some(row) = r.rows.iter().find(|row| {
        row["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("/mailctl"))
    }) {
        why.push(format!("a kernel row exists for mailctl: {row}"));
    }
    if r.dirs.tmp.join(super::MAILCTL_RAN).exists() {
        why.push("mailctl's marker exists: it ran".into());
    }
    if !r.output.contains("[agentd]") {
        why.push("the runtime's output does not show agentd's replacement text".into());
    }
    let deny = super::gateway_rows(audit, active)
        .into_iter()
        .find(|g| g["decision"] == "deny");
    if deny.is_none() {
        why.push("no tool_call deny row for the message".into());
    }
    let ex = exchanges_of(audit, &r.agent);
    if !ex.iter().any(|e| {
        e["tool_calls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["decision"] == "deny"))
    }) {
        why.push(format!(
            "no exchange row names agent {} with a denied call",
            r.agent
        ));
    }
    if why.is_empty() {
        super::Outcome::Pass(format!(
            "the proxy denied ({}); the runtime never saw the call (no tool ran, no kernel row); {:.1} s",
            deny.and_then(|d| d["reason_code"].as_str()).unwrap_or(""),
            r.elapsed.as_secs_f64()
        ))
    } else {
        super::Outcome::Fail(format!("{} [{}]", why.join("; "), r.context()))
    }
}
