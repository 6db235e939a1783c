//! Checks a policy file and turns it into the form the decision path reads:
//! normalised scopes, resolved names, validated templates. Every refusal names
//! the exact place in the file (`roles.guest.allow.write_file.path.scopes[0]`).
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::effect::{self, Effect};
use super::path;
use super::schema::{
    ActionDef, ArgKind, ArgRule, GrantTemplate, MessageRules, PolicyFile, RuntimeDef,
};
use super::PolicyError;
use crate::runtime::mapping::{Overrides, Source, ToolRule, MCP_WILDCARD};
use crate::runtime::Runtime;

/// A compiled, immutable policy.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// `<file id>@<first 12 hex digits of the file's SHA-256>`; recorded with decisions.
    pub id: String,
    /// SHA-256 of the source text, hex.
    pub sha256: String,
    /// The source text as loaded.
    pub source: String,
    /// Message delivery rules.
    pub messages: MessageRules,
    pub(crate) roles: HashMap<String, Role>,
    pub(crate) actions: HashMap<String, Action>,
    /// Runtime profiles the policy defines (validated; built-ins not included).
    pub profiles: std::collections::BTreeMap<String, crate::profile::ProfileDef>,
    /// Per-runtime tool mappings that override the built-in defaults.
    pub(crate) runtimes: HashMap<Runtime, Overrides>,
    /// The MCP gateway's tool settings (`[mcp]`).
    pub(crate) mcp: super::schema::McpDef,
    /// `[sessions]`: start mode and elevation length.
    pub sessions: super::schema::SessionsDef,
    /// `[anomaly]`, checked; None: off.
    pub anomaly: Option<super::schema::AnomalyDef>,
    /// `[protected] paths`, validated, placeholders not yet expanded.
    pub protected: Vec<String>,
    /// Some role's calls are decided in a read-only session (the session
    /// checks have work to do).
    pub any_read_only: bool,
    /// Every role's calls are (`agentctl session list` says `read_only`;
    /// some but not all: `by_role`).
    pub all_read_only: bool,
}

impl CompiledPolicy {
    /// The policy's tool mappings for `runtime` (None: defaults only).
    pub fn runtime_tools(&self, runtime: Runtime) -> Option<&Overrides> {
        self.runtimes.get(&runtime)
    }

    /// The action the policy maps MCP tool `tool` of `server` to, when it
    /// names one (`[mcp.servers.<server>.tools]`); None: the default.
    pub fn mcp_tool_action(&self, server: &str, tool: &str) -> Option<&str> {
        self.mcp
            .servers
            .get(server)
            .and_then(|s| s.tools.get(tool))
            .map(String::as_str)
    }

    /// Whether `tools/list` of `server` shows only what the current
    /// operator may call.
    pub fn mcp_filter_tools(&self, server: &str) -> bool {
        self.mcp
            .servers
            .get(server)
            .and_then(|s| s.filter_tools)
            .unwrap_or(self.mcp.filter_tools)
    }

    /// Whether one of `roles` has `action` on its allow-list (arguments
    /// aside: what an operator with these roles could call at all).
    pub fn roles_allow(&self, roles: &[String], action: &str) -> bool {
        self.actions.contains_key(action)
            && roles.iter().any(|r| {
                self.roles
                    .get(r)
                    .is_some_and(|role| role.allow.contains_key(action))
            })
    }

    /// The effect class of `action` and where it comes from: the policy's
    /// table for a defined action, else the name's keywords.
    pub fn effect_of(&self, action: &str) -> (Effect, effect::Source) {
        match self.actions.get(action) {
            Some(a) => (a.effect, a.effect_source.clone()),
            None => effect::classify_name(action),
        }
    }

    /// Every defined action with its effect class and source, by name.
    pub fn effects(&self) -> Vec<(String, Effect, effect::Source)> {
        let mut v: Vec<_> = self
            .actions
            .iter()
            .map(|(n, a)| (n.clone(), a.effect, a.effect_source.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl CompiledPolicy {
    /// Whether some role in `roles` is an owner role (`owner = true`, or
    /// named `owner` without the flag): may authorise protected writes.
    pub fn is_owner(&self, roles: &[String]) -> bool {
        roles
            .iter()
            .any(|r| self.roles.get(r).is_some_and(|role| role.owner))
    }
}

/// A compiled role.
#[derive(Debug)]
pub(crate) struct Role {
    pub name: String,
    pub rate_per_minute: u32,
    pub burst: u32,
    pub destructive_ok: bool,
    /// Counts as an owner (protected files, signed approvals).
    pub owner: bool,
    pub allow: HashMap<String, Arc<ActionRules>>,
    /// Usage thresholds by action (checked: each action is allowed).
    pub limits: HashMap<String, super::schema::UsageLimit>,
    /// Calls this role allows are decided in a read-only session (its own
    /// `session_start`, else `[sessions] start`).
    pub read_only: bool,
}

/// Argument rules of one (role, action).
#[derive(Debug)]
pub(crate) struct ActionRules {
    /// Sorted by name.
    pub args: Vec<(String, ArgConstraint)>,
}

/// One compiled argument rule.
#[derive(Debug)]
pub(crate) struct ArgConstraint {
    pub optional: bool,
    pub check: Constraint,
}

/// What a compiled argument rule checks.
#[derive(Debug)]
pub(crate) enum Constraint {
    Path {
        scopes: Vec<String>,
    },
    Command {
        programs: Vec<String>,
        scopes: Option<Vec<String>>,
        max_items: usize,
        max_bytes: usize,
    },
    Recipients {
        domains: Vec<String>,
        addresses: Vec<String>,
        max_items: usize,
    },
    Domain {
        domains: Vec<String>,
    },
    Text {
        max_bytes: usize,
    },
    Str {
        values: Option<Vec<String>>,
        max_bytes: usize,
    },
    Integer {
        min: i64,
        max: i64,
    },
    Json {
        max_bytes: usize,
    },
    /// `None`: either value.
    Boolean {
        only: Option<bool>,
    },
}

/// A compiled action.
#[derive(Debug)]
pub(crate) struct Action {
    pub destructive: bool,
    pub destructive_paths: Vec<String>,
    /// Each entry: program basename, then leading arguments.
    pub destructive_commands: Vec<Vec<String>>,
    pub grant: Option<GrantTemplate>,
    /// Allowed calls wait for a human's approval.
    pub approval_required: bool,
    /// Receipt cards of allowed calls hide the target.
    pub receipt_redact: bool,
    /// Effect class (declared, from `destructive`, or from the name).
    pub effect: Effect,
    /// Where the class comes from.
    pub effect_source: effect::Source,
}

fn is_ident(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || extra.contains(&b)
        })
}

/// Validates a domain pattern: lowercase labels, optionally `*.` first.
fn check_domain(d: &str) -> bool {
    let host = d.strip_prefix("*.").unwrap_or(d);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Parses, validates and compiles policy text. `origin` labels errors (a file name).
pub fn compile(source: &str, origin: &str) -> Result<CompiledPolicy, PolicyError> {
    let file: PolicyFile = toml::from_str(source).map_err(|e| PolicyError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let invalid = |(at, message): Located| PolicyError::Invalid {
        origin: origin.to_owned(),
        at,
        message,
    };
    if !is_ident(&file.id, b"-.") {
        return Err(invalid((
            "id".into(),
            "must be 1-64 characters of [a-z0-9_.-]".into(),
        )));
    }
    let actions = compile_actions(&file).map_err(invalid)?;
    let roles = compile_roles(&file, &actions).map_err(invalid)?;
    check_grants(&actions, &roles).map_err(invalid)?;
    check_profiles(&file).map_err(invalid)?;
    let runtimes = compile_runtimes(&file, &actions).map_err(invalid)?;
    check_mcp(&file, &actions).map_err(invalid)?;
    check_sessions(&file).map_err(invalid)?;
    check_protected(&file).map_err(invalid)?;

    let any_read_only = roles.values().any(|r| r.read_only);
    let all_read_only = roles.values().all(|r| r.read_only);
    let sha256 = hex::encode(Sha256::digest(source.as_bytes()));
    Ok(CompiledPolicy {
        id: format!("{}@{}", file.id, &sha256[..12]),
        sha256,
        source: source.to_owned(),
        messages: file.messages,
        roles,
        actions,
        profiles: file.profiles,
        runtimes,
        mcp: file.mcp,
        any_read_only,
        all_read_only,
        sessions: file.sessions,
        anomaly: file.anomaly,
        protected: file.protected.paths,
    })
}

/// `[protected] paths`: absolute paths with known placeholders, like a
/// profile's `write` entries.
fn check_protected(file: &PolicyFile) -> Result<(), Located> {
    for (i, e) in file.protected.paths.iter().enumerate() {
        let at = format!("protected.paths[{i}]");
        crate::profile::check_entry(e, "write", &at).map_err(|e| match e {
            crate::profile::ProfileError::Invalid { at, message } => (at, message),
            other => (at, other.to_string()),
        })?;
    }
    Ok(())
}

/// An action name: 1-64 characters of `[a-z0-9_.-]`.
pub(crate) fn is_action_name(s: &str) -> bool {
    is_ident(s, b".-")
}

/// `[actions.*]`.
fn compile_actions(file: &PolicyFile) -> Result<HashMap<String, Action>, Located> {
    let mut actions = HashMap::new();
    for (name, def) in &file.actions {
        let at = format!("actions.{name}");
        if !is_action_name(name) {
            return Err((at, "action names are 1-64 characters of [a-z0-9_.-]".into()));
        }
        actions.insert(name.clone(), compile_action(name, def, &at)?);
    }
    Ok(actions)
}

/// `[roles.*]`: rates, allow-lists (each action defined in `actions`) and
/// usage limits.
fn compile_roles(
    file: &PolicyFile,
    actions: &HashMap<String, Action>,
) -> Result<HashMap<String, Role>, Located> {
    let mut roles = HashMap::new();
    for (name, def) in &file.roles {
        let at = format!("roles.{name}");
        if !is_ident(name, b"-") {
            return Err((at, "role names are 1-64 characters of [a-z0-9_-]".into()));
        }
        if def.rate_per_minute == 0 {
            return Err((
                format!("{at}.rate_per_minute"),
                "must be at least 1 (remove the allow entries to forbid)".into(),
            ));
        }
        let mut allow = HashMap::new();
        for (action, args) in &def.allow {
            let at = format!("{at}.allow.{action}");
            if !actions.contains_key(action) {
                return Err((at, format!("action `{action}` is not defined in [actions]")));
            }
            allow.insert(action.clone(), Arc::new(compile_allow(args, &at)?));
        }
        let limits = compile_limits(def, &at)?;
        roles.insert(
            name.clone(),
            Role {
                name: name.clone(),
                rate_per_minute: def.rate_per_minute,
                burst: def.burst.unwrap_or(def.rate_per_minute).max(1),
                destructive_ok: def.destructive.unwrap_or(name == "owner"),
                owner: def.owner.unwrap_or(name == "owner"),
                allow,
                limits,
                read_only: def.session_start.unwrap_or(file.sessions.start)
                    == super::schema::SessionStart::ReadOnly,
            },
        );
    }
    Ok(roles)
}

/// One role's argument rules for one action, sorted by argument name.
fn compile_allow(
    args: &std::collections::BTreeMap<String, ArgRule>,
    at: &str,
) -> Result<ActionRules, Located> {
    let mut compiled = Vec::with_capacity(args.len());
    for (arg, rule) in args {
        let at = format!("{at}.{arg}");
        if !is_ident(arg, b"") {
            return Err((at, "argument names are 1-64 characters of [a-z0-9_]".into()));
        }
        compiled.push((arg.clone(), compile_arg(rule, &at)?));
    }
    compiled.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ActionRules { args: compiled })
}

/// Grant templates may only reference arguments every allowing role requires
/// and that are safe inside a path.
fn check_grants(
    actions: &HashMap<String, Action>,
    roles: &HashMap<String, Role>,
) -> Result<(), Located> {
    for (name, action) in actions {
        let Some(grant) = &action.grant else { continue };
        let at = format!("actions.{name}.grant");
        check_grant(grant, &at, name, roles)?;
    }
    Ok(())
}

/// `[profiles.*]`: names and each profile's own validation.
fn check_profiles(file: &PolicyFile) -> Result<(), Located> {
    for (name, def) in &file.profiles {
        let at = format!("profiles.{name}");
        if !is_ident(name, b"-.") {
            return Err((
                at,
                "profile names are 1-64 characters of [a-z0-9_.-]".into(),
            ));
        }
        def.validate(&at).map_err(|e| match e {
            crate::profile::ProfileError::Invalid { at, message } => (at, message),
            other => (format!("profiles.{name}"), other.to_string()),
        })?;
    }
    Ok(())
}

/// `[runtime.*]`: per-runtime tool mappings.
fn compile_runtimes(
    file: &PolicyFile,
    actions: &HashMap<String, Action>,
) -> Result<HashMap<Runtime, Overrides>, Located> {
    let mut runtimes = HashMap::new();
    for (name, def) in &file.runtime {
        let at = format!("runtime.{name}");
        let Some(rt) = Runtime::parse(name) else {
            return Err((
                at,
                "unknown runtime (claude-code, codex, gemini, cursor)".into(),
            ));
        };
        runtimes.insert(rt, compile_runtime(def, &at, actions)?);
    }
    Ok(runtimes)
}

/// `[mcp.servers.*.tools]`: each maps an MCP tool to a defined action that
/// is a tool call (not a resource, prompt or server request).
fn check_mcp(file: &PolicyFile, actions: &HashMap<String, Action>) -> Result<(), Located> {
    for (server, def) in &file.mcp.servers {
        let at = format!("mcp.servers.{server}");
        crate::mcp_naming::check_server(server).map_err(|e| (at.clone(), e.to_string()))?;
        for (tool, action) in &def.tools {
            let at = format!("{at}.tools.{tool}");
            if tool.is_empty() || tool.len() > crate::mcp_naming::MAX_TOOL {
                return Err((at, "an MCP tool name is 1 to 128 characters".into()));
            }
            if !actions.contains_key(action) {
                return Err((at, format!("unknown action `{action}`")));
            }
            if [
                crate::mcp_naming::RESOURCE_PREFIX,
                crate::mcp_naming::PROMPT_PREFIX,
                crate::mcp_naming::SERVER_REQUEST_PREFIX,
            ]
            .iter()
            .any(|p| action.starts_with(p))
            {
                return Err((
                    at,
                    format!(
                        "`{action}` names a resource, prompt or server request, not a tool call"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn compile_runtime(
    def: &RuntimeDef,
    at: &str,
    actions: &HashMap<String, Action>,
) -> Result<Overrides, Located> {
    let mut out = Overrides::new();
    for (tool, t) in &def.tools {
        let at = format!("{at}.tools.{tool}");
        let name_ok = !tool.is_empty()
            && tool.len() <= 128
            && tool.bytes().all(|b| b.is_ascii_graphic() && b != b'*')
            || tool == MCP_WILDCARD;
        if !name_ok {
            return Err((
                at,
                "tool names are 1-128 printable characters without spaces or `*` (or exactly `mcp__*`)"
                    .into(),
            ));
        }
        if !actions.contains_key(&t.action) {
            return Err((
                format!("{at}.action"),
                format!("action `{}` is not defined in [actions]", t.action),
            ));
        }
        let mut args = Vec::with_capacity(t.args.len());
        for (arg, src) in &t.args {
            let at = format!("{at}.args.{arg}");
            if !is_ident(arg, b"") {
                return Err((at, "argument names are 1-64 characters of [a-z0-9_]".into()));
            }
            args.push((arg.clone(), Source::parse(src).map_err(|m| (at, m))?));
        }
        out.insert(
            tool.clone(),
            ToolRule {
                action: t.action.clone(),
                args,
            },
        );
    }
    Ok(out)
}

type Located = (String, String);

fn normalize_scope(s: &str, at: &str) -> Result<String, Located> {
    // `{operator}` is substituted at decision time; operator ids cannot contain `/` or start with `.`.
    let probe = s.replace("{operator}", "x");
    if probe.contains('{') || probe.contains('}') {
        return Err((
            at.into(),
            format!("`{s}`: only the {{operator}} placeholder is allowed here"),
        ));
    }
    path::normalize(s).map_err(|e| (at.to_owned(), format!("`{s}`: {e}")))
}

fn compile_action(name: &str, def: &ActionDef, at: &str) -> Result<Action, Located> {
    let destructive_paths = def
        .destructive_paths
        .iter()
        .enumerate()
        .map(|(i, p)| normalize_scope(p, &format!("{at}.destructive_paths[{i}]")))
        .collect::<Result<_, _>>()?;
    let mut destructive_commands = Vec::new();
    for (i, c) in def.destructive_commands.iter().enumerate() {
        let words: Vec<String> = c.split_ascii_whitespace().map(str::to_owned).collect();
        if words.is_empty() || words[0].contains('/') {
            return Err((
                format!("{at}.destructive_commands[{i}]"),
                "must start with a program basename, e.g. \"mailctl reset\"".into(),
            ));
        }
        destructive_commands.push(words);
    }
    if let Some(g) = &def.grant {
        if g.ttl_secs == 0 || g.ttl_secs > 86_400 {
            return Err((format!("{at}.grant.ttl_secs"), "must be 1..=86400".into()));
        }
    }
    let declared = match &def.effect {
        None => None,
        Some(e) => Some(Effect::parse(e).ok_or_else(|| {
            (
                format!("{at}.effect"),
                format!("unknown effect `{e}` (read, mutating, destructive, admin)"),
            )
        })?),
    };
    if def.destructive && declared.is_some_and(effect::contradicts_destructive) {
        return Err((
            format!("{at}.effect"),
            "contradicts `destructive = true` (use \"destructive\" or \"admin\", or drop one)"
                .into(),
        ));
    }
    let (effect, effect_source) = effect::classify(name, declared, def.destructive);
    Ok(Action {
        // A declared destructive class is the same as `destructive = true`
        // (owner-only); a class guessed from the name changes no check.
        destructive: def.destructive || declared == Some(Effect::Destructive),
        effect,
        effect_source,
        destructive_paths,
        destructive_commands,
        grant: def.grant.clone(),
        approval_required: def.approval == super::schema::Approval::Required,
        receipt_redact: def.receipt_redact,
    })
}

fn compile_arg(rule: &ArgRule, at: &str) -> Result<ArgConstraint, Located> {
    only_fields_of_its_kind(rule, at)?;
    let field_err = |f: &str, m: &str| (format!("{at}.{f}"), m.to_owned());
    let check = match rule.kind {
        ArgKind::Path => {
            let s = scopes(rule, at)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| field_err("scopes", "a path argument needs at least one scope"))?;
            Constraint::Path { scopes: s }
        }
        ArgKind::Command => command(rule, at)?,
        ArgKind::Recipients => recipients(rule, at)?,
        ArgKind::Domain => {
            let d = domains(rule, at)?;
            if d.is_empty() {
                return Err(field_err(
                    "domains",
                    "a domain argument needs at least one domain",
                ));
            }
            Constraint::Domain { domains: d }
        }
        ArgKind::Text => Constraint::Text {
            max_bytes: rule
                .max_bytes
                .ok_or_else(|| field_err("max_bytes", "a text argument needs max_bytes"))?,
        },
        ArgKind::Json => Constraint::Json {
            max_bytes: rule
                .max_bytes
                .ok_or_else(|| field_err("max_bytes", "a json argument needs max_bytes"))?,
        },
        ArgKind::String => string(rule, at)?,
        ArgKind::Boolean => boolean(rule, at)?,
        ArgKind::Integer => {
            let (min, max) = (rule.min.unwrap_or(i64::MIN), rule.max.unwrap_or(i64::MAX));
            if min > max {
                return Err(field_err("min", "is greater than max"));
            }
            Constraint::Integer { min, max }
        }
    };
    Ok(ArgConstraint {
        optional: rule.optional,
        check,
    })
}

/// Refuses fields the argument's kind does not use: set anyway, they are
/// a mistake worth refusing (the author expected them to constrain).
fn only_fields_of_its_kind(rule: &ArgRule, at: &str) -> Result<(), Located> {
    let allowed: &[&str] = match rule.kind {
        ArgKind::Path => &["scopes"],
        ArgKind::Command => &["programs", "scopes", "max_items", "max_bytes"],
        ArgKind::Recipients => &["domains", "addresses", "max_items"],
        ArgKind::Domain => &["domains"],
        ArgKind::Text | ArgKind::Json => &["max_bytes"],
        ArgKind::String => &["values", "max_bytes"],
        ArgKind::Boolean => &["values"],
        ArgKind::Integer => &["min", "max"],
    };
    let set = [
        ("scopes", rule.scopes.is_some()),
        ("programs", rule.programs.is_some()),
        ("domains", rule.domains.is_some()),
        ("addresses", rule.addresses.is_some()),
        ("values", rule.values.is_some()),
        ("max_bytes", rule.max_bytes.is_some()),
        ("max_items", rule.max_items.is_some()),
        ("min", rule.min.is_some()),
        ("max", rule.max.is_some()),
    ];
    for (f, present) in set {
        if present && !allowed.contains(&f) {
            return Err((
                format!("{at}.{f}"),
                format!("not valid for an argument of type {:?}", rule.kind).to_lowercase(),
            ));
        }
    }
    Ok(())
}

/// The rule's path scopes, normalised.
fn scopes(rule: &ArgRule, at: &str) -> Result<Option<Vec<String>>, Located> {
    rule.scopes
        .as_ref()
        .map(|v| {
            v.iter()
                .enumerate()
                .map(|(i, s)| normalize_scope(s, &format!("{at}.scopes[{i}]")))
                .collect()
        })
        .transpose()
}

/// The rule's domains, each a lowercase domain (optionally `*.` first).
fn domains(rule: &ArgRule, at: &str) -> Result<Vec<String>, Located> {
    let list = rule.domains.clone().unwrap_or_default();
    for (i, d) in list.iter().enumerate() {
        if !check_domain(d) {
            return Err((
                format!("{at}.domains[{i}]"),
                format!("`{d}` is not a lowercase domain (optionally `*.` first)"),
            ));
        }
    }
    Ok(list)
}

/// A command argument: at least one program (normalised paths).
fn command(rule: &ArgRule, at: &str) -> Result<Constraint, Located> {
    let programs = rule
        .programs
        .as_ref()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            (
                format!("{at}.programs"),
                "a command argument needs at least one program".to_owned(),
            )
        })?;
    let mut progs = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        let n = path::normalize(p)
            .map_err(|e| (format!("{at}.programs[{i}]"), format!("`{p}`: {e}")))?;
        progs.push(n);
    }
    Ok(Constraint::Command {
        programs: progs,
        scopes: scopes(rule, at)?,
        max_items: rule.max_items.unwrap_or(64),
        max_bytes: rule.max_bytes.unwrap_or(4096),
    })
}

/// A recipients argument: addresses (lowercased) and/or domains.
fn recipients(rule: &ArgRule, at: &str) -> Result<Constraint, Located> {
    let addresses: Vec<String> = rule
        .addresses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    for (i, a) in addresses.iter().enumerate() {
        if parse_address(a).is_none() {
            return Err((
                format!("{at}.addresses[{i}]"),
                format!("`{a}` is not an e-mail address"),
            ));
        }
    }
    let domains = domains(rule, at)?;
    if domains.is_empty() && addresses.is_empty() {
        return Err((
            format!("{at}.domains"),
            "a recipients argument needs `domains` or `addresses`".to_owned(),
        ));
    }
    Ok(Constraint::Recipients {
        domains,
        addresses,
        max_items: rule.max_items.unwrap_or(10),
    })
}

/// A string argument: its allowed values must be identifiers.
fn string(rule: &ArgRule, at: &str) -> Result<Constraint, Located> {
    for (i, v) in rule.values.iter().flatten().enumerate() {
        if !is_identifier_value(&v.replace("{operator}", "x")) {
            return Err((
                format!("{at}.values[{i}]"),
                format!("`{v}` is not an identifier value"),
            ));
        }
    }
    Ok(Constraint::Str {
        values: rule.values.clone(),
        max_bytes: rule.max_bytes.unwrap_or(128),
    })
}

/// A boolean argument: `values` names the allowed values (`"true"`,
/// `"false"`); absent or both means either.
fn boolean(rule: &ArgRule, at: &str) -> Result<Constraint, Located> {
    let (mut t, mut f) = (rule.values.is_none(), rule.values.is_none());
    for (i, v) in rule.values.iter().flatten().enumerate() {
        match v.as_str() {
            "true" => t = true,
            "false" => f = true,
            _ => {
                return Err((
                    format!("{at}.values[{i}]"),
                    format!("`{v}`: a boolean's values are \"true\" and \"false\""),
                ))
            }
        }
    }
    let only = match (t, f) {
        (true, true) => None,
        (true, false) => Some(true),
        (false, true) => Some(false),
        (false, false) => {
            return Err((
                format!("{at}.values"),
                "allows no value: name \"true\" and/or \"false\"".into(),
            ))
        }
    };
    Ok(Constraint::Boolean { only })
}

/// The alphabet of `string` arguments: safe inside a path component.
pub(crate) fn is_identifier_value(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'+' | b'-')
        })
}

/// Splits `local@domain`; lowercase domain. None if not a plain address.
pub(crate) fn parse_address(a: &str) -> Option<(&str, &str)> {
    let (local, domain) = a.split_once('@')?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let ok_domain = check_domain(domain) && !domain.starts_with("*.");
    (ok_local && ok_domain).then_some((local, domain))
}

fn check_grant(
    g: &GrantTemplate,
    at: &str,
    action: &str,
    roles: &HashMap<String, Role>,
) -> Result<(), Located> {
    let lists: [(&str, &Vec<String>); 4] = [
        ("exec", &g.exec),
        ("read", &g.read),
        ("write", &g.write),
        ("connect", &g.connect),
    ];
    for (field, list) in lists {
        for (i, entry) in list.iter().enumerate() {
            let at = format!("{at}.{field}[{i}]");
            let mut rest = entry.as_str();
            let mut probe = String::new();
            while let Some(start) = rest.find('{') {
                probe.push_str(&rest[..start]);
                let end = rest[start..]
                    .find('}')
                    .ok_or_else(|| (at.clone(), format!("`{entry}`: unclosed placeholder")))?
                    + start;
                let name = &rest[start + 1..end];
                if name == "operator" {
                    probe.push('x');
                } else if let Some(arg) = name.strip_prefix("arg.") {
                    for role in roles.values() {
                        let Some(rules) = role.allow.get(action) else {
                            continue;
                        };
                        let found = rules.args.iter().find(|(n, _)| n == arg);
                        match found {
                            Some((_, c))
                                if !c.optional
                                    && matches!(
                                        c.check,
                                        Constraint::Path { .. }
                                            | Constraint::Command { .. }
                                            | Constraint::Str { .. }
                                    ) => {}
                            _ => {
                                return Err((at, format!("`{{arg.{arg}}}`: role `{}` does not require a path, command or string argument `{arg}` for `{action}`", role.name)));
                            }
                        }
                    }
                    // Path and command values are absolute paths; stand in with one.
                    probe.push_str(if probe.is_empty() { "/x" } else { "x" });
                } else {
                    return Err((
                        at,
                        format!(
                            "`{{{name}}}`: unknown placeholder (use {{operator}} or {{arg.NAME}})"
                        ),
                    ));
                }
                rest = &rest[end + 1..];
            }
            probe.push_str(rest);
            if field == "connect" {
                if !valid_connect(&probe) {
                    return Err((
                        at,
                        format!("`{entry}`: expected CIDR:PORT, [v6CIDR]:PORT or unix:/path"),
                    ));
                }
            } else if let Err(e) = path::normalize(&probe) {
                return Err((at, format!("`{entry}`: {e}")));
            }
        }
    }
    Ok(())
}

fn valid_connect(s: &str) -> bool {
    if let Some(p) = s.strip_prefix("unix:") {
        return path::normalize(p).is_ok();
    }
    let (host, port) = match s.rsplit_once(':') {
        Some(x) => x,
        None => return false,
    };
    if port.parse::<u16>().is_err() {
        return false;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let (addr, prefix) = host.split_once('/').unwrap_or((host, "128"));
    addr.parse::<std::net::IpAddr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 128)
}

/// Largest `max_uses` of a usage threshold (each use is remembered for the
/// window: the bound keeps that memory small).
pub const MAX_USAGE_USES: u32 = 10_000;
/// Longest usage-threshold window, seconds (30 days).
pub const MAX_USAGE_WINDOW_SECS: u64 = 30 * 24 * 3600;

/// A role's usage thresholds: only for actions the role allows, within bounds.
fn compile_limits(
    def: &super::schema::RoleDef,
    at: &str,
) -> Result<HashMap<String, super::schema::UsageLimit>, (String, String)> {
    let mut out = HashMap::new();
    for (action, limit) in &def.limits {
        let at = format!("{at}.limits.{action}");
        if !def.allow.contains_key(action) {
            return Err((
                at,
                format!("the role does not allow `{action}`: a threshold needs an allow entry"),
            ));
        }
        if !(1..=MAX_USAGE_USES).contains(&limit.max_uses) {
            return Err((
                format!("{at}.max_uses"),
                format!("must be 1 to {MAX_USAGE_USES} (remove the allow entry to forbid)"),
            ));
        }
        if !(1..=MAX_USAGE_WINDOW_SECS).contains(&limit.window_secs) {
            return Err((
                format!("{at}.window_secs"),
                format!("must be 1 to {MAX_USAGE_WINDOW_SECS} (30 days)"),
            ));
        }
        if limit.escalate_after.is_some_and(|n| n >= limit.max_uses) {
            return Err((
                format!("{at}.escalate_after"),
                "must be below max_uses (uses after it wait for approval)".into(),
            ));
        }
        out.insert(action.clone(), *limit);
    }
    Ok(out)
}

/// Longest elevation, seconds (one day).
pub const MAX_ELEVATION_SECS: u64 = 86_400;
/// Largest `[anomaly] min_calls`.
pub const MAX_ANOMALY_MIN_CALLS: u32 = 10_000;

/// `[sessions]` and `[anomaly]`: within bounds.
fn check_sessions(file: &PolicyFile) -> Result<(), Located> {
    if !(1..=MAX_ELEVATION_SECS).contains(&file.sessions.elevation_secs) {
        return Err((
            "sessions.elevation_secs".into(),
            format!("must be 1 to {MAX_ELEVATION_SECS} (one day)"),
        ));
    }
    let Some(a) = &file.anomaly else {
        return Ok(());
    };
    if !(1..=MAX_ANOMALY_MIN_CALLS).contains(&a.min_calls) {
        return Err((
            "anomaly.min_calls".into(),
            format!("must be 1 to {MAX_ANOMALY_MIN_CALLS}"),
        ));
    }
    for (field, v) in [
        ("max_denial_rate", a.max_denial_rate),
        ("max_write_ratio", a.max_write_ratio),
    ] {
        // NaN fails both comparisons, so it is refused too.
        if !(v > 0.0 && v <= 1.0) {
            return Err((
                format!("anomaly.{field}"),
                format!("must be a share above 0 and at most 1 (0.3 = 30 %), not {v}"),
            ));
        }
    }
    Ok(())
}
