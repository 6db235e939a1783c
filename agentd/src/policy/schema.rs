//! The policy file as written by people (TOML). `compile` turns it into the
//! checked, precomputed form the decision path uses.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole policy file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Policy id, recorded with every decision (with a hash of the file).
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// What happens to messages that cannot be trusted.
    #[serde(default)]
    pub messages: MessageRules,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleDef>,
    /// Actions by name.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionDef>,
    /// Runtime profiles by name (agents' baselines); one named like a
    /// built-in profile replaces it.
    #[serde(default)]
    pub profiles: BTreeMap<String, crate::profile::ProfileDef>,
    /// Per-runtime tool mappings (`[runtime.<name>.tools.<Tool>]`), added to
    /// or replacing the built-in defaults of `runtime::mapping`.
    #[serde(default)]
    pub runtime: BTreeMap<String, RuntimeDef>,
    /// The MCP gateway: `tools/list` filtering and tool → action mappings.
    #[serde(default)]
    pub mcp: McpDef,
    /// How sessions start (`full` or `read_only`) and how long an
    /// elevation lasts (docs/effects.md).
    #[serde(default, skip_serializing_if = "SessionsDef::is_default")]
    pub sessions: SessionsDef,
    /// Anomaly escalation per session; absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyDef>,
    /// Files no agent may write without its owner's signed word (identity
    /// files, start-up scripts): `[protected] paths = [...]`.
    #[serde(default, skip_serializing_if = "ProtectedDef::is_empty")]
    pub protected: ProtectedDef,
}

/// `[sessions]`: the mode a session starts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsDef {
    /// `full` (default): the allow-list decides alone. `read_only`: only
    /// `read`-class calls proceed; others wait for an elevation.
    #[serde(default)]
    pub start: SessionStart,
    /// How long an approved elevation lasts, seconds (1 to 86,400).
    #[serde(default = "default_elevation_secs")]
    pub elevation_secs: u64,
}

impl Default for SessionsDef {
    fn default() -> Self {
        Self {
            start: SessionStart::default(),
            elevation_secs: default_elevation_secs(),
        }
    }
}

impl SessionsDef {
    /// True when it says nothing a policy without `[sessions]` would not.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_elevation_secs() -> u64 {
    300
}

/// The mode a session starts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStart {
    /// Every call the allow-list allows proceeds.
    #[default]
    Full,
    /// Only `read`-class calls proceed without an elevation.
    ReadOnly,
}

/// `[anomaly]`: when a session's calls look wrong, ask a human (or deny).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyDef {
    /// Calls in the session before the rates are judged (1 to 10,000).
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Share of denied calls above which the session trips (0 < x ≤ 1).
    #[serde(default = "default_denial_rate")]
    pub max_denial_rate: f64,
    /// Share of non-`read` calls above which the session trips (0 < x ≤ 1;
    /// 1 never trips).
    #[serde(default = "default_write_ratio")]
    pub max_write_ratio: f64,
    /// What a tripped session's next calls need.
    #[serde(default)]
    pub then: AnomalyThen,
}

fn default_min_calls() -> u32 {
    5
}
fn default_denial_rate() -> f64 {
    0.30
}
fn default_write_ratio() -> f64 {
    0.80
}

/// What a tripped session's next calls need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyThen {
    /// A human's approval (an approval resets the session's counts).
    #[default]
    Approval,
    /// Denied (`anomaly_denied`) until the session is released.
    Deny,
}

/// `[protected]`: files (and directories) protected per agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedDef {
    /// Absolute paths with the profiles' placeholders (`{workspace}/SOUL.md`,
    /// `{home}/.bashrc`), expanded for each agent; an entry whose
    /// placeholder has no value for an agent does not apply to it.
    #[serde(default)]
    pub paths: Vec<String>,
}

impl ProtectedDef {
    /// True when it protects nothing (a policy without `[protected]`).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// `[mcp]`: how the MCP gateway treats tools.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpDef {
    /// `tools/list` shows only the tools the current operator's roles may
    /// call (every server; a server's own `filter_tools` overrides).
    #[serde(default)]
    pub filter_tools: bool,
    /// Per server (`[mcp.servers.<server>]`).
    #[serde(default)]
    pub servers: BTreeMap<String, McpServerDef>,
}

/// `[mcp.servers.<server>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerDef {
    /// Overrides `[mcp] filter_tools` for this server.
    #[serde(default)]
    pub filter_tools: Option<bool>,
    /// MCP tool name (exact, case-sensitive) → the policy action its calls
    /// are decided as, instead of the default `mcp.<server>.<tool>`.
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
}

/// One runtime's section: how its tools map to policy actions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDef {
    /// Tool name (or `mcp__*` for every MCP tool) → mapping.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolDef>,
}

/// How one runtime tool maps to a policy action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// The policy action the call becomes.
    pub action: String,
    /// Policy argument name → source in the tool input (`file_path`,
    /// `words:command`, `host:url`, `/a/b`, `$input`, `$mcp_server`, ...).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// Delivery of a message that failed verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Refuse with the reason code; no active-message id.
    #[default]
    Refuse,
    /// Deliver marked untrusted: an active-message id with no tool rights.
    Untrusted,
}

/// Message handling rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRules {
    /// Messages without a signature.
    #[serde(default)]
    pub unsigned: Delivery,
    /// Messages with a bad signature, an unknown or revoked operator.
    #[serde(default)]
    pub invalid: Delivery,
    /// Signed v1 messages (no audience, no scope): accepted (the default)
    /// or refused `message_version_refused`.
    #[serde(default)]
    pub v1: VersionRule,
}

/// Whether a signed message of an older wire version is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionRule {
    /// Accepted as before.
    #[default]
    Accept,
    /// Refused (`message_version_refused`) once verified.
    Refuse,
}

/// One role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Allowed tool calls per minute per operator holding this role.
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    /// Largest burst above the steady rate (defaults to rate_per_minute).
    #[serde(default)]
    pub burst: Option<u32>,
    /// May this role perform destructive actions? Defaults to true only for a role named `owner`.
    #[serde(default)]
    pub destructive: Option<bool>,
    /// Is this an owner role — may its operators authorise writes to
    /// protected files (a signed scope naming the file, or a signed
    /// approval)? Defaults to true only for a role named `owner`.
    #[serde(default)]
    pub owner: Option<bool>,
    /// Allowed actions, each with its argument rules (argument name → rule).
    #[serde(default)]
    pub allow: BTreeMap<String, BTreeMap<String, ArgRule>>,
    /// Usage thresholds of allowed actions (action → threshold), beside the
    /// rate limit: above `max_uses` in `window_secs`, calls are denied.
    #[serde(default)]
    pub limits: BTreeMap<String, UsageLimit>,
    /// The session mode of calls this role allows, overriding `[sessions]
    /// start` (e.g. `"read_only"` for a role whose writes should ask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_start: Option<SessionStart>,
}

/// A usage threshold of one action for one role, counted per operator over
/// a sliding window: the call that would be use `max_uses + 1` within
/// `window_secs` is denied (`usage_threshold`); with `escalate_after = N`,
/// uses N+1 to `max_uses` wait for a human's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    /// Allowed calls within the window (1 to 10,000).
    pub max_uses: u32,
    /// The window, seconds (1 to 30 days).
    pub window_secs: u64,
    /// Uses within the window allowed without a human; later ones (up to
    /// `max_uses`) are escalated for approval. Must be below `max_uses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<u32>,
}

fn default_rate() -> u32 {
    60
}

/// The type of a tool-call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    /// Absolute file path; `scopes` required.
    Path,
    /// A command line (string split on whitespace, or an array argv); `programs` required.
    Command,
    /// One e-mail address or an array of them; `domains` and/or `addresses`.
    Recipients,
    /// A host name; `domains` required.
    Domain,
    /// Free text; `max_bytes` required.
    Text,
    /// An identifier (`A-Z a-z 0-9 . _ : @ + -`, not starting with `.`); optional `values`.
    String,
    /// An integer; optional `min`/`max`.
    Integer,
    /// Any JSON value; `max_bytes` required.
    Json,
    /// A JSON `true` or `false`; optional `values` (`["false"]`: only false).
    Boolean,
}

/// The rule for one argument of one action for one role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgRule {
    /// Argument type.
    #[serde(rename = "type")]
    pub kind: ArgKind,
    /// May the argument be absent?
    #[serde(default)]
    pub optional: bool,
    /// path: allowed scopes; command: scopes for arguments that look like absolute paths.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// command: allowed programs, absolute paths.
    #[serde(default)]
    pub programs: Option<Vec<String>>,
    /// recipients/domain: allowed domains (`example.com` exact, `*.example.com` subdomains).
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// recipients: allowed exact addresses.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// string: allowed values (`{operator}` is replaced by the operator id);
    /// boolean: `"true"` and/or `"false"`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// text/json/string/command: size limit in bytes.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// recipients: most addresses; command: most argv entries.
    #[serde(default)]
    pub max_items: Option<usize>,
    /// integer: smallest value.
    #[serde(default)]
    pub min: Option<i64>,
    /// integer: largest value.
    #[serde(default)]
    pub max: Option<i64>,
}

impl ArgRule {
    /// A rule of `kind` with no constraint set (importers and `explain`
    /// start from it and add what they know).
    pub fn of(kind: ArgKind) -> Self {
        Self {
            kind,
            optional: false,
            scopes: None,
            programs: None,
            domains: None,
            addresses: None,
            values: None,
            max_bytes: None,
            max_items: None,
            min: None,
            max: None,
        }
    }
}

/// One action: its classification and grant template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The action is always destructive (its effect class is
    /// `destructive` unless `effect = "admin"`).
    #[serde(default)]
    pub destructive: bool,
    /// Effect class: `read`, `mutating`, `destructive` or `admin`; absent,
    /// it is classed by its name (policy::effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// A call is destructive if a path argument lies in one of these scopes.
    #[serde(default)]
    pub destructive_paths: Vec<String>,
    /// A call is destructive if its command starts with one of these
    /// (program basename, then leading arguments, whitespace-separated: `"mailctl reset"`).
    #[serde(default)]
    pub destructive_commands: Vec<String>,
    /// What an allowed call may do in the kernel.
    #[serde(default)]
    pub grant: Option<GrantTemplate>,
    /// `"required"`: a call every other check allows waits for a human's
    /// approval (the decision is `escalate`; see docs/approvals.md).
    #[serde(default)]
    pub approval: Approval,
    /// The call's target (its arguments) is not for every screenshot: its
    /// receipt card shows `[redacted]` on the target line (the audit row
    /// keeps the arguments, and the card's row hash binds that row).
    #[serde(default)]
    pub receipt_redact: bool,
}

/// Whether an allowed call of an action needs a human's approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Allowed calls proceed at once.
    #[default]
    None,
    /// Allowed calls wait for an approver (`agentctl approvals`, the console
    /// or the chat-ops webhook); no answer in time is a denial.
    Required,
}

/// Template for a `GrantSpec`. Entries may use `{operator}` and `{arg.NAME}`
/// (the normalised value of a path, command — its program — or string argument).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantTemplate {
    /// Executables.
    #[serde(default)]
    pub exec: Vec<String>,
    /// Read scopes.
    #[serde(default)]
    pub read: Vec<String>,
    /// Write scopes.
    #[serde(default)]
    pub write: Vec<String>,
    /// Connect destinations (`CIDR:PORT`, `[v6CIDR]:PORT`, `unix:/path`).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Seconds the grant lives.
    pub ttl_secs: u64,
    /// Uses allowed (process bindings and claims); 0 = unlimited until expiry.
    #[serde(default)]
    pub uses: u32,
    /// Exact arguments (after the program name) an exec claim must carry;
    /// absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}
