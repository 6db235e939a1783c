//! `/etc/agentd/agentd.toml`: every key has a default; unknown keys and bad
//! values are refused at start-up with a precise message.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default config file location.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/agentd/agentd.toml";

// Defaults and bounds of settings that the modules reading them re-export
// under their own names; they live here so the config imports none of them.

/// Largest `[approvals] timeout_secs` accepted: a tool call never waits
/// longer than this for a human.
pub const APPROVAL_MAX_TIMEOUT_SECS: u64 = 900;
/// Default wait for an approver, seconds.
pub const APPROVAL_DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Default free-space threshold of the audit log's filesystem, bytes:
/// below it, allows become denials.
pub const AUDIT_DEFAULT_MIN_FREE: u64 = 32 << 20;
/// Default size of the audit log's reserve file, bytes.
pub const AUDIT_DEFAULT_RESERVE: u64 = 4 << 20;
/// Largest MCP message accepted by default, bytes (without the newline).
pub const MCP_DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}` in {path}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Which enforcement backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Probe the kernel and pick the strongest backend that really loads.
    #[default]
    Auto,
    /// BPF LSM (refused at start-up if it does not load).
    Lsm,
    /// seccomp user notification + cgroup BPF.
    Seccomp,
}

/// SQLite `synchronous` level for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL + synchronous=NORMAL: a committed row survives a process crash;
    /// the last transactions may be lost on power failure.
    #[default]
    Normal,
    /// WAL + synchronous=FULL: a committed row survives power failure.
    Full,
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the policy store, audit log, keys and queues (0700).
    pub state_dir: PathBuf,
    /// Unix socket of the HTTP API.
    pub socket_path: PathBuf,
    /// Group whose members may administer agentd (root always may).
    pub admin_group: String,
    /// Unprivileged user agents run as by default.
    pub agent_user: String,
    /// Optional TCP listener for remote operators, e.g. "0.0.0.0:7700".
    /// With `tls_cert` and `tls_key` it speaks HTTPS on any address; without
    /// them it speaks plain HTTP, so it must be a loopback address and
    /// `tcp_plaintext_loopback` must say so.
    pub tcp_listen: Option<String>,
    /// Explicitly accept plain HTTP on the loopback TCP listener.
    pub tcp_plaintext_loopback: bool,
    /// PEM certificate chain (leaf first) of the TCP listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TCP listener (mode 0600 or stricter).
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that clients must present a certificate from
    /// (mutual TLS); unset accepts any client, operators still sign.
    pub tls_client_ca: Option<PathBuf>,
    /// Enforcement backend.
    pub backend: BackendChoice,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Forward mode: the model-API proxy (`[forward]`, off unless `socket_path` is set).
    pub forward: ForwardConfig,
    /// The MCP gateway's Streamable HTTP endpoint (`[mcp]`, off unless
    /// `socket_path` or `listen` is set and servers are configured).
    pub mcp: McpConfig,
    /// The live web console (`[console]`, off unless `listen` is set).
    pub console: ConsoleConfig,
    /// Human approval of escalated calls (`[approvals]`, docs/approvals.md).
    pub approvals: ApprovalsConfig,
    /// Prometheus metrics (`[metrics]`, off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// The OCSF sink (`[ocsf]`, off unless `path` is set).
    pub ocsf: OcsfConfig,
    /// Fleet mode on PostgreSQL (`[fleet]`, off unless the section is
    /// present): audit shipping and fleet-wide nonces (docs/fleet.md).
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: ship the audit log to one PostgreSQL and check every verified
/// message's nonce fleet-wide (docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// File holding the libpq-style connection string (`host=… user=…
    /// dbname=… password=…`), root-owned, mode 0600 or stricter. None: the
    /// systemd credential `fleet-postgres` in `$CREDENTIALS_DIRECTORY`.
    pub credentials_file: Option<PathBuf>,
    /// This host's name in the fleet tables; None: `[gateway] host_id`,
    /// else the machine's host name.
    pub host_id: Option<String>,
    /// How long after the last successful contact with PostgreSQL new
    /// messages are still accepted without the fleet-wide nonce check; 0
    /// refuses them (`fleet_unavailable`) as soon as it cannot be made.
    pub lease_secs: u64,
    /// Longest wait for PostgreSQL on the message path and per statement,
    /// in milliseconds; past it PostgreSQL counts as unreachable.
    pub timeout_ms: u64,
    /// PEM CA bundle: connect over TLS (rustls), trusting only these CAs.
    /// None: no TLS (a Unix socket or a trusted network).
    pub tls_ca_file: Option<PathBuf>,
    /// Seconds between full re-reads of the central operators, policy and
    /// suspensions, the fallback behind LISTEN/NOTIFY (docs/fleet.md).
    pub resync_secs: u64,
}

/// Default `[fleet] lease_secs`.
pub const DEFAULT_FLEET_LEASE_SECS: u64 = 30;

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            credentials_file: None,
            host_id: None,
            lease_secs: DEFAULT_FLEET_LEASE_SECS,
            timeout_ms: 2_000,
            tls_ca_file: None,
            resync_secs: 30,
        }
    }
}

/// `[ocsf]`: append every audit row as an OCSF 1.8 event to a JSON Lines
/// file (docs/ocsf.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcsfConfig {
    /// Absolute path of the file; None: no sink.
    pub path: Option<PathBuf>,
}

/// `[metrics]`: the Prometheus endpoint (`GET /metrics`), plain HTTP on a
/// loopback address only (docs/metrics.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Loopback address to serve on, e.g. "127.0.0.1:9464"; None: no endpoint.
    pub listen: Option<String>,
}

/// `[approvals]`: how long an escalated call waits for a human, how many
/// may wait at once, and the optional chat-ops webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Seconds a call waits for an answer (1..=900); then `approval_timeout`.
    pub timeout_secs: u64,
    /// Calls waiting at once (1..=4096); more are denied `approval_queue_full`.
    pub max_pending: usize,
    /// `[approvals.webhook]`: POST each new pending approval to a chat bridge.
    pub webhook: Option<WebhookConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            timeout_secs: APPROVAL_DEFAULT_TIMEOUT_SECS,
            max_pending: 64,
            webhook: None,
        }
    }
}

/// `[approvals.webhook]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// File holding the shared HMAC secret (at least 16 bytes; trimmed).
    pub secret_file: PathBuf,
    /// Callbacks signed further than this from now are refused (seconds).
    #[serde(default = "default_callback_window")]
    pub callback_window_secs: u64,
    /// Time allowed for one delivery, seconds.
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout_secs: u64,
    /// CA certificates (PEM) trusted for an `https://` URL.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
}

fn default_callback_window() -> u64 {
    300
}

fn default_delivery_timeout() -> u64 {
    10
}

fn default_ca_file() -> PathBuf {
    PathBuf::from(crate::upstream_tls::SYSTEM_CA_BUNDLE)
}

/// `[console]`: the live web console for admins (docs/console.md), served
/// on a loopback TCP address only. Off unless `listen` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Loopback address to serve on, e.g. "127.0.0.1:7780" (port 0: any
    /// free port, reported by `agentctl console`); None: no console.
    pub listen: Option<String>,
    /// Lifetime of a one-time login link (`agentctl console`), seconds.
    pub login_ttl_secs: u64,
    /// Lifetime of a console session (its cookie), seconds.
    pub session_ttl_secs: u64,
    /// Lifetime of a confirmation token (`agentctl console --confirm`),
    /// which a change made in the console (an agent's mode) needs, seconds.
    pub confirm_ttl_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: None,
            login_ttl_secs: 120,
            session_ttl_secs: 8 * 3600,
            confirm_ttl_secs: 300,
        }
    }
}

/// `[mcp]`: agentd as the local Streamable HTTP endpoint of configured
/// upstream MCP servers (docs/mcp.md). Agents reach server `NAME` at
/// `/mcp/NAME` on the Unix socket or the loopback TCP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// The endpoint's Unix socket (SO_PEERCRED tells the agent); None: none.
    pub socket_path: Option<PathBuf>,
    /// The endpoint's loopback TCP address, e.g. "127.0.0.1:7710" (the
    /// connecting socket's cgroup tells the agent); None: none.
    pub listen: Option<String>,
    /// Time allowed for an upstream's answer to start, seconds.
    pub upstream_timeout_secs: u64,
    /// Largest client message, bytes.
    pub max_message_bytes: usize,
    /// Upstream servers by name (the `<server>` of `mcp.<server>.<tool>`).
    pub servers: std::collections::BTreeMap<String, McpServerConfig>,
    /// CA certificates (PEM) trusted for `https://` upstreams.
    pub ca_file: PathBuf,
}

/// One upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Its Streamable HTTP endpoint (`http://` or `https://host[:port]/path`).
    pub url: String,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            socket_path: None,
            listen: None,
            upstream_timeout_secs: 120,
            max_message_bytes: MCP_DEFAULT_MAX_MESSAGE,
            servers: Default::default(),
            ca_file: PathBuf::from(crate::upstream_tls::SYSTEM_CA_BUNDLE),
        }
    }
}

/// Message and tool-call gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Accepted clock skew of a message timestamp, either way, in seconds.
    pub timestamp_window_secs: u64,
    /// How long a nonce is remembered (must be ≥ 2 × timestamp window).
    pub nonce_ttl_secs: u64,
    /// Lifetime of an active-message id, in seconds.
    pub active_message_ttl_secs: u64,
    /// A session's binding to its operator lapses this many seconds after
    /// the operator's latest verified message in it; another operator may
    /// then bind it (0 = bindings never lapse; admins can always release).
    pub session_ttl_secs: u64,
    /// Messages that do not verify (unsigned, bad signature, unknown
    /// operator) accepted per minute from one peer (Unix uid, or all of
    /// TCP) and per claimed operator; 0 disables the limit.
    pub unverified_per_minute: u32,
    /// Connections the API holds open at once (each listener).
    pub max_connections: usize,
    /// Connections one peer (Unix uid, or all of TCP) holds open at once.
    pub max_connections_per_peer: usize,
    /// Seconds a client may take to send a request's headers, and its body.
    pub request_timeout_secs: u64,
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Policy file loaded at start-up and on SIGHUP (if set); `agentctl policy load` also works.
    pub policy_file: Option<PathBuf>,
    /// This host's name as v2 messages' `for_host` must give it (1-253
    /// bytes of `A-Z a-z 0-9 . _ -`); default: the machine's host name,
    /// read once at start.
    pub host_id: Option<String>,
}

/// Audit log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// SQLite durability of each committed audit row.
    pub durability: Durability,
    /// Seconds between signed checkpoints (one is also written at shutdown).
    pub checkpoint_interval_secs: u64,
    /// Below this much free space (MiB) on the state directory's
    /// filesystem, calls are denied `audit_storage_low` (and recorded).
    pub min_free_mb: u64,
    /// Size (MiB) of the reserve file given back when space runs low, so
    /// the denial rows still fit.
    pub reserve_mb: u64,
}

/// `[forward]`: agentd as the agents' model-API upstream (docs/forward.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// The proxy's Unix socket (SO_PEERCRED tells the agent); None: no proxy.
    pub socket_path: Option<PathBuf>,
    /// Also a loopback TCP listener (`127.0.0.1:PORT` or `[::1]:PORT`), for
    /// runtimes that speak HTTP to a host and port only; the agent is told
    /// by the cgroup of the connecting socket (sock_diag). Needs `socket_path`.
    pub tcp_listen: Option<String>,
    /// What becomes of a denied tool call: `rewrite` (text naming the
    /// reason) or `block` (the provider's error ends the answer).
    pub on_deny: OnDeny,
    /// Time allowed for the upstream's answer to start, and between two
    /// pieces of a stream, seconds.
    pub upstream_timeout_secs: u64,
    /// Largest client request body, bytes.
    pub max_request_bytes: usize,
    /// Largest non-streamed upstream answer, bytes.
    pub max_response_bytes: usize,
    /// Tools the provider runs itself (web search, remote MCP, URL
    /// context…): `decide` each as a tool call, stripping denied ones, or
    /// `strip` them all.
    pub provider_tools: ProviderTools,
    /// Per-agent spend limit (`[forward.spend]`).
    pub spend: SpendConfig,
    /// OpenAI (Chat Completions, Responses).
    pub openai: UpstreamConfig,
    /// Anthropic (Messages).
    pub anthropic: UpstreamConfig,
    /// Google Gemini (generateContent, streamGenerateContent).
    pub gemini: UpstreamConfig,
}

/// What becomes of a denied call in forward mode (`[forward] on_deny`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeny {
    /// Replace the call by text naming the reason.
    #[default]
    Rewrite,
    /// End the response with the provider's own error.
    Block,
}

/// What becomes of provider-run tools a request declares
/// (`[forward] provider_tools`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderTools {
    /// Each is decided as a tool call; denied ones are stripped.
    #[default]
    Decide,
    /// Every one is stripped, undecided.
    Strip,
}

/// `[forward.spend]`: limits per agent and window (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    /// Window length, seconds.
    pub window_secs: u64,
    /// Requests one agent may send per window (0: unlimited).
    pub max_requests: u64,
    /// Tokens (input + output) one agent may spend per window (0: unlimited).
    pub max_tokens: u64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            max_requests: 0,
            max_tokens: 0,
        }
    }
}

/// One upstream provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL (`https://host[:port][/prefix]`; a trailing `/v1` is the client's).
    pub url: String,
    /// File holding the API key: a regular file owned by root, mode 0600 or
    /// 0400 (a systemd credential under $CREDENTIALS_DIRECTORY qualifies).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            socket_path: None,
            tcp_listen: None,
            on_deny: OnDeny::Rewrite,
            upstream_timeout_secs: 300,
            max_request_bytes: 32 << 20,
            max_response_bytes: 64 << 20,
            provider_tools: Default::default(),
            spend: Default::default(),
            openai: UpstreamConfig {
                url: "https://api.openai.com".into(),
                key_file: None,
            },
            anthropic: UpstreamConfig {
                url: "https://api.anthropic.com".into(),
                key_file: None,
            },
            gemini: UpstreamConfig {
                url: "https://generativelanguage.googleapis.com".into(),
                key_file: None,
            },
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/agentd"),
            socket_path: PathBuf::from("/run/agentd/agentd.sock"),
            admin_group: "agentd-admin".into(),
            agent_user: "agentd-agent".into(),
            tcp_listen: None,
            tcp_plaintext_loopback: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            backend: BackendChoice::Auto,
            gateway: GatewayConfig::default(),
            audit: AuditConfig::default(),
            forward: ForwardConfig::default(),
            mcp: McpConfig::default(),
            console: ConsoleConfig::default(),
            approvals: ApprovalsConfig::default(),
            metrics: MetricsConfig::default(),
            ocsf: OcsfConfig::default(),
            fleet: None,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            timestamp_window_secs: 60,
            nonce_ttl_secs: 600,
            active_message_ttl_secs: 900,
            session_ttl_secs: 7 * 24 * 3600,
            unverified_per_minute: 60,
            max_connections: 512,
            max_connections_per_peer: 64,
            request_timeout_secs: 10,
            max_request_bytes: 64 * 1024,
            policy_file: None,
            host_id: None,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Normal,
            checkpoint_interval_secs: 60,
            min_free_mb: AUDIT_DEFAULT_MIN_FREE >> 20,
            reserve_mb: AUDIT_DEFAULT_RESERVE >> 20,
        }
    }
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate_approvals(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let a = &self.approvals;
        if a.timeout_secs == 0 || a.timeout_secs > APPROVAL_MAX_TIMEOUT_SECS {
            return Err(invalid("approvals.timeout_secs", "must be 1..=900"));
        }
        if a.max_pending == 0 || a.max_pending > 4096 {
            return Err(invalid("approvals.max_pending", "must be 1..=4096"));
        }
        if let Some(w) = &a.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || w.url.parse::<hyper::Uri>().is_err()
            {
                return Err(invalid(
                    "approvals.webhook.url",
                    "must be an http:// or https:// URL",
                ));
            }
            if !w.secret_file.is_absolute() {
                return Err(invalid(
                    "approvals.webhook.secret_file",
                    "must be an absolute path",
                ));
            }
            if w.callback_window_secs == 0 || w.callback_window_secs > 3600 {
                return Err(invalid(
                    "approvals.webhook.callback_window_secs",
                    "must be 1..=3600",
                ));
            }
            if w.delivery_timeout_secs == 0 || w.delivery_timeout_secs > 120 {
                return Err(invalid(
                    "approvals.webhook.delivery_timeout_secs",
                    "must be 1..=120",
                ));
            }
        }
        Ok(())
    }

    /// Every section's checks, in the order their errors are reported.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate_listeners(path)?;
        self.validate_approvals(path)?;
        self.validate_gateway(path)?;
        self.validate_mcp(path)?;
        self.validate_console(path)?;
        self.validate_fleet(path)?;
        self.validate_metrics(path)?;
        if self.ocsf.path.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "ocsf.path",
                message: "must be an absolute path".to_owned(),
            });
        }
        Ok(())
    }

    /// The state directory, the API socket, TLS material and the TCP
    /// listener (plain HTTP only on loopback, and only when asked for).
    fn validate_fleet(&self, path: &Path) -> Result<(), ConfigError> {
        let Some(f) = &self.fleet else {
            return Ok(());
        };
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if f.timeout_ms == 0 || f.timeout_ms > 60_000 {
            return Err(invalid(
                "fleet.timeout_ms",
                "must be between 1 and 60000 milliseconds",
            ));
        }
        if let Some(h) = &f.host_id {
            let ok = !h.is_empty()
                && h.len() <= crate::protocol::message::MAX_HOST_LEN
                && h.bytes().all(crate::protocol::message::is_host_byte);
            if !ok {
                return Err(invalid(
                    "fleet.host_id",
                    "must be 1-253 characters of [A-Za-z0-9._-]",
                ));
            }
        }
        Ok(())
    }

    fn validate_listeners(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if !self.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        if !self.socket_path.is_absolute() {
            return Err(invalid("socket_path", "must be an absolute path"));
        }
        for (key, p) in [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ] {
            if p.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(invalid(key, "must be an absolute path"));
            }
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => return Err(invalid("tls_key", "tls_cert needs tls_key")),
            (None, Some(_)) => return Err(invalid("tls_cert", "tls_key needs tls_cert")),
        };
        if self.tls_client_ca.is_some() && !tls {
            return Err(invalid(
                "tls_client_ca",
                "needs tls_cert and tls_key (client certificates are a TLS feature)",
            ));
        }
        match &self.tcp_listen {
            Some(addr) => {
                let parsed: std::net::SocketAddr = addr
                    .parse()
                    .map_err(|_| invalid("tcp_listen", "must be IP:PORT"))?;
                if !tls && !parsed.ip().is_loopback() {
                    return Err(invalid(
                        "tcp_listen",
                        "without tls_cert and tls_key the TCP listener speaks plain HTTP, so it may only listen on a loopback address",
                    ));
                }
                if !tls && !self.tcp_plaintext_loopback {
                    return Err(invalid(
                        "tcp_listen",
                        "the TCP listener speaks plain HTTP without tls_cert and tls_key; set tcp_plaintext_loopback = true to accept that on loopback",
                    ));
                }
            }
            None if tls => {
                return Err(invalid(
                    "tls_cert",
                    "TLS applies to the TCP listener; set tcp_listen too",
                ))
            }
            None => {}
        }
        Ok(())
    }

    /// `[gateway]` bounds and `[audit]` checkpoints.
    fn validate_gateway(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let g = &self.gateway;
        if g.timestamp_window_secs == 0 || g.timestamp_window_secs > 3600 {
            return Err(invalid("gateway.timestamp_window_secs", "must be 1..=3600"));
        }
        if g.nonce_ttl_secs < 2 * g.timestamp_window_secs {
            return Err(invalid(
                "gateway.nonce_ttl_secs",
                "must be at least twice gateway.timestamp_window_secs, or a replay could outlive its nonce",
            ));
        }
        if g.session_ttl_secs != 0 && g.session_ttl_secs < g.active_message_ttl_secs {
            return Err(invalid(
                "gateway.session_ttl_secs",
                "must be 0 (never lapse) or at least gateway.active_message_ttl_secs",
            ));
        }
        if g.max_connections == 0 || g.max_connections_per_peer == 0 {
            return Err(invalid(
                "gateway.max_connections",
                "connection limits must be at least 1",
            ));
        }
        if g.request_timeout_secs == 0 || g.request_timeout_secs > 300 {
            return Err(invalid("gateway.request_timeout_secs", "must be 1..=300"));
        }
        if g.max_request_bytes < 1024 || g.max_request_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "gateway.max_request_bytes",
                "must be 1024..=16777216",
            ));
        }
        if let Some(h) = &g.host_id {
            if h.is_empty()
                || h.len() > crate::protocol::message::MAX_HOST_LEN
                || !h.bytes().all(crate::protocol::message::is_host_byte)
            {
                return Err(invalid(
                    "gateway.host_id",
                    "must be 1-253 characters of [A-Za-z0-9._-]",
                ));
            }
        }
        if g.policy_file.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid("gateway.policy_file", "must be an absolute path"));
        }
        if self.audit.checkpoint_interval_secs == 0 {
            return Err(invalid(
                "audit.checkpoint_interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self, path: &Path) -> Result<(), ConfigError> {
        let Some(addr) = &self.metrics.listen else {
            return Ok(());
        };
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key: "metrics.listen",
            message: message.to_owned(),
        };
        let parsed: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| invalid("must be IP:PORT, e.g. 127.0.0.1:9464"))?;
        if !parsed.ip().is_loopback() {
            return Err(invalid(
                "must be a loopback address (127.0.0.1 or ::1): the endpoint has no authentication; scrape it from this host (or through a tunnel or a local agent)",
            ));
        }
        Ok(())
    }

    fn validate_console(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let c = &self.console;
        if let Some(addr) = &c.listen {
            let parsed: std::net::SocketAddr = addr
                .parse()
                .map_err(|_| invalid("console.listen", "must be IP:PORT, e.g. 127.0.0.1:7780"))?;
            if !parsed.ip().is_loopback() {
                return Err(invalid(
                    "console.listen",
                    "must be a loopback address (127.0.0.1 or ::1): the console speaks plain HTTP and is reached from this host only (use an SSH tunnel from elsewhere)",
                ));
            }
        }
        if c.login_ttl_secs == 0 || c.login_ttl_secs > 3600 {
            return Err(invalid("console.login_ttl_secs", "must be 1..=3600"));
        }
        if c.confirm_ttl_secs == 0 || c.confirm_ttl_secs > 3600 {
            return Err(invalid("console.confirm_ttl_secs", "must be 1..=3600"));
        }
        if c.session_ttl_secs == 0 || c.session_ttl_secs > 7 * 24 * 3600 {
            return Err(invalid("console.session_ttl_secs", "must be 1..=604800"));
        }
        Ok(())
    }

    fn validate_mcp(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let m = &self.mcp;
        if m.socket_path.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid(
                "mcp.socket_path",
                "must be an absolute path".into(),
            ));
        }
        if let Some(addr) = &m.listen {
            let parsed: std::net::SocketAddr = addr
                .parse()
                .map_err(|_| invalid("mcp.listen", "must be IP:PORT".into()))?;
            if !parsed.ip().is_loopback() {
                return Err(invalid(
                    "mcp.listen",
                    "must be a loopback address: callers are named by their socket's cgroup, which only this kernel knows".into(),
                ));
            }
        }
        if m.upstream_timeout_secs == 0 || m.upstream_timeout_secs > 600 {
            return Err(invalid(
                "mcp.upstream_timeout_secs",
                "must be 1..=600".into(),
            ));
        }
        if m.max_message_bytes < 1024 || m.max_message_bytes > 64 << 20 {
            return Err(invalid(
                "mcp.max_message_bytes",
                "must be 1024..=67108864".into(),
            ));
        }
        for (name, server) in &m.servers {
            crate::mcp_naming::check_server(name)
                .map_err(|e| invalid("mcp.servers", format!("server `{name}`: {e}")))?;
            mcp_upstream_uri(&server.url).map_err(|why| {
                invalid(
                    "mcp.servers",
                    format!("server `{name}`: upstream URL `{}`: {why}", server.url),
                )
            })?;
        }
        Ok(())
    }
}

/// An upstream MCP server's URL, checked: `http` or `https`, with a host.
/// Here, at the bottom, so that loading the configuration and the MCP
/// endpoint (`mcp::http`) check it alike without config importing it.
pub fn mcp_upstream_uri(url: &str) -> Result<hyper::Uri, &'static str> {
    let uri: hyper::Uri = url.parse().map_err(|_| "not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("only http:// and https:// upstreams are supported");
    }
    if uri.host().is_none() {
        return Err("no host");
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(c.gateway.timestamp_window_secs, 60);
        assert_eq!(c.backend, BackendChoice::Auto);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let err = Config::parse("socket_pth = \"/x\"", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("socket_pth"), "{err}");
    }

    #[test]
    fn plain_tcp_only_on_loopback_and_only_when_asked() {
        let p = Path::new("t.toml");
        let e = Config::parse(
            "tcp_listen = \"0.0.0.0:7700\"\ntcp_plaintext_loopback = true",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = Config::parse("tcp_listen = \"127.0.0.1:7700\"", p).unwrap_err();
        assert!(e.to_string().contains("tcp_plaintext_loopback"), "{e}");
        let c = Config::parse(
            "tcp_listen = \"[::1]:7700\"\ntcp_plaintext_loopback = true",
            p,
        )
        .unwrap();
        assert_eq!(c.tcp_listen.as_deref(), Some("[::1]:7700"));
    }

    #[test]
    fn tls_opens_any_address_and_its_keys_come_together() {
        let p = Path::new("t.toml");
        let tls =
            "tls_cert = \"/etc/agentd/tls/cert.pem\"\ntls_key = \"/etc/agentd/tls/key.pem\"\n";
        let c = Config::parse(&format!("{tls}tcp_listen = \"0.0.0.0:7700\""), p).unwrap();
        assert_eq!(c.tcp_listen.as_deref(), Some("0.0.0.0:7700"));
        for (text, key) in [
            ("tcp_listen = \"0.0.0.0:7700\"\ntls_cert = \"/c.pem\"", "tls_key"),
            ("tcp_listen = \"0.0.0.0:7700\"\ntls_key = \"/k.pem\"", "tls_cert"),
            (tls, "tls_cert"),
            (&format!("{tls}tcp_listen = \"0.0.0.0:1\"\ntls_client_ca = \"ca.pem\""), "tls_client_ca"),
            ("tcp_listen = \"127.0.0.1:1\"\ntcp_plaintext_loopback = true\ntls_client_ca = \"/ca.pem\"", "tls_client_ca"),
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn mcp_endpoints_are_local_and_servers_well_named() {
        let p = Path::new("t.toml");
        let c = Config::parse(
            "[mcp]\nlisten = \"127.0.0.1:7710\"\n[mcp.servers.crm]\nurl = \"http://127.0.0.1:9000/mcp\"",
            p,
        )
        .unwrap();
        assert_eq!(c.mcp.servers["crm"].url, "http://127.0.0.1:9000/mcp");
        for (text, key) in [
            ("[mcp]\nlisten = \"0.0.0.0:7710\"", "mcp.listen"),
            ("[mcp]\nsocket_path = \"mcp.sock\"", "mcp.socket_path"),
            (
                "[mcp.servers.Crm]\nurl = \"http://127.0.0.1:1/mcp\"",
                "mcp.servers",
            ),
            ("[mcp.servers.crm]\nurl = \"ftp://x/mcp\"", "mcp.servers"),
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn console_listens_on_loopback_only() {
        let p = Path::new("t.toml");
        let c = Config::parse("[console]\nlisten = \"127.0.0.1:7780\"", p).unwrap();
        assert_eq!(c.console.listen.as_deref(), Some("127.0.0.1:7780"));
        assert!(Config::parse("[console]\nlisten = \"[::1]:0\"", p).is_ok());
        assert_eq!(Config::parse("", p).unwrap().console.listen, None);
        for (text, key) in [
            ("[console]\nlisten = \"0.0.0.0:7780\"", "console.listen"),
            ("[console]\nlisten = \"192.168.1.5:7780\"", "console.listen"),
            ("[console]\nlisten = \"localhost:7780\"", "console.listen"),
            ("[console]\nlogin_ttl_secs = 0", "console.login_ttl_secs"),
            (
                "[console]\nsession_ttl_secs = 604801",
                "console.session_ttl_secs",
            ),
            (
                "[console]\nsession_ttl_secs = 0",
                "console.session_ttl_secs",
            ),
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        for text in [
            "[metrics]\nlisten = \"0.0.0.0:9464\"",
            "[metrics]\nlisten = \"localhost\"",
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains("`metrics.listen`"), "{text}: {e}");
        }
        assert!(Config::parse("[metrics]\nlisten = \"127.0.0.1:9464\"", p).is_ok());
        let e = Config::parse("[console]\nlisten = \"0.0.0.0:7780\"", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::parse("[gateway]\nnonce_ttl_secs = 10", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("gateway.nonce_ttl_secs"), "{err}");
    }
}
