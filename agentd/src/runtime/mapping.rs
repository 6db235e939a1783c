//! One runtime tool call (tool name + input) → one policy action and its
//! arguments. Pure, and shared by every route a call can take (the hook
//! adapters, forward mode, the MCP gateway), so a call decides alike
//! whichever way it reaches agentd — and keys to the same decision.
//!
//! Each runtime has defaults for its built-in tools under every name the
//! call has on each route (Codex's hook says `Bash` with `{"command"}`, its
//! model API `exec_command` with `{"cmd"}`), plus `mcp__<server>__<tool>`
//! for MCP tools. A policy overrides or adds entries per runtime
//! (`[runtime.<name>.tools.<Tool>]`, compiled by `policy::compile` into
//! [`ToolRule`]s). A tool with no entry is denied (`unknown_tool`).
//!
//! An argument's source is written as text (the same syntax in the defaults
//! and in policies):
//!
//! | source | value |
//! |---|---|
//! | `file_path` | the input's top-level field (omitted when absent) |
//! | `file_path\|absolute_path` | the first of these fields present |
//! | `/edits/0/old_string` | a JSON pointer into the input |
//! | `words:command` | the field's shell command, split into argv (strictly: see `shell_words`); an array is taken as argv (`["bash","-lc",S]` splits S) |
//! | `host:url` | the host name of the URL in the field |
//! | `$input` | the whole input object |
//! | `$tool` | the runtime's tool name |
//! | `$mcp_server`, `$mcp_tool` | the parts of an MCP tool name |
//!
//! Input fields no source names are not passed on (e.g. Bash's
//! `description`); the policy constrains only what it receives.
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::shell_words::{self, ShellWordsError};
use super::Runtime;
use crate::protocol::reason;

/// The key under which a policy maps every MCP tool of a runtime.
pub const MCP_WILDCARD: &str = "mcp__*";

/// Where one argument's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The first of these top-level input fields that is present.
    Fields(Vec<String>),
    /// A JSON pointer into the input.
    Pointer(String),
    /// A shell command (string or argv array) in the first present field, as argv.
    Words(Vec<String>),
    /// The host of a URL in the first present field.
    Host(Vec<String>),
    /// The whole input.
    Input,
    /// The runtime's tool name.
    ToolName,
    /// The server part of an MCP tool name.
    McpServer,
    /// The tool part of an MCP tool name.
    McpTool,
}

fn field_list(s: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = s.split('|').map(str::to_owned).collect();
    if v.iter().any(|f| {
        f.is_empty()
            || f.len() > 64
            || !f
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        return Err(format!(
            "`{s}`: field names are 1-64 characters of [A-Za-z0-9_-], alternatives separated by |"
        ));
    }
    Ok(v)
}

impl Source {
    /// Parses the text form (see the module documentation).
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "$input" => Source::Input,
            "$tool" => Source::ToolName,
            "$mcp_server" => Source::McpServer,
            "$mcp_tool" => Source::McpTool,
            _ if s.starts_with('$') => {
                return Err(format!(
                    "`{s}`: unknown source (use $input, $tool, $mcp_server or $mcp_tool)"
                ))
            }
            _ if s.starts_with('/') => Source::Pointer(s.to_owned()),
            _ => {
                if let Some(rest) = s.strip_prefix("words:") {
                    Source::Words(field_list(rest)?)
                } else if let Some(rest) = s.strip_prefix("host:") {
                    Source::Host(field_list(rest)?)
                } else {
                    Source::Fields(field_list(s)?)
                }
            }
        })
    }
}

/// How one runtime tool maps to a policy action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    /// Policy action name.
    pub action: String,
    /// Policy argument name → where its value comes from.
    pub args: Vec<(String, Source)>,
}

impl ToolRule {
    /// Builds a rule from text sources (panics on a bad source: for built-in tables).
    fn builtin(action: &str, args: &[(&str, &str)]) -> Self {
        ToolRule {
            action: action.to_owned(),
            args: args
                .iter()
                .map(|(n, s)| {
                    (
                        (*n).to_owned(),
                        Source::parse(s).expect("built-in mapping source"),
                    )
                })
                .collect(),
        }
    }
}

/// A policy's per-runtime overrides: tool name (or [`MCP_WILDCARD`]) → rule.
pub type Overrides = HashMap<String, ToolRule>;

/// The result: a policy action and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Policy action.
    pub action: String,
    /// Arguments by policy name.
    pub arguments: Map<String, Value>,
}

/// Why a call could not be mapped (the call is denied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Neither the policy nor the defaults map this tool.
    #[error("{runtime} tool `{tool}` has no mapping to a policy action (add [runtime.{runtime}.tools.\"{tool}\"] to the policy)")]
    UnknownTool {
        /// The runtime.
        runtime: Runtime,
        /// The tool name.
        tool: String,
    },
    /// An input field has the wrong type or shape.
    #[error("{runtime} tool `{tool}`: argument `{arg}`: {message}")]
    InvalidInput {
        /// The runtime.
        runtime: Runtime,
        /// The tool name.
        tool: String,
        /// The policy argument being built.
        arg: String,
        /// What is wrong.
        message: String,
    },
    /// A shell command does more than run one program.
    #[error("{runtime} tool `{tool}`: argument `{arg}`: {source}")]
    ShellSyntax {
        /// The runtime.
        runtime: Runtime,
        /// The tool name.
        tool: String,
        /// The policy argument being built.
        arg: String,
        /// The tokenizer's refusal.
        source: ShellWordsError,
    },
}

impl MapError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::UnknownTool { .. } => reason::UNKNOWN_TOOL,
            Self::InvalidInput { .. } => reason::INVALID_TOOL_INPUT,
            Self::ShellSyntax { .. } => reason::SHELL_SYNTAX_NOT_ALLOWED,
        }
    }
}

/// Splits an MCP tool name into (server, tool): `mcp__<server>__<tool>`
/// for every runtime; Gemini CLI also names MCP tools `<server>__<tool>`.
pub fn mcp_name(runtime: Runtime, name: &str) -> Option<(&str, &str)> {
    let rest = match name.strip_prefix("mcp__") {
        Some(r) => r,
        None if runtime == Runtime::Gemini => name,
        None => return None,
    };
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

type Table = &'static [(
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
)];

const CLAUDE_CODE: Table = &[
    ("Bash", "shell", &[("command", "words:command")]),
    ("Read", "read_file", &[("path", "file_path")]),
    (
        "Write",
        "write_file",
        &[("path", "file_path"), ("content", "content")],
    ),
    ("Edit", "edit_file", &[("path", "file_path")]),
    ("MultiEdit", "edit_file", &[("path", "file_path")]),
    ("NotebookEdit", "edit_file", &[("path", "notebook_path")]),
    (
        "Glob",
        "search_files",
        &[("path", "path"), ("pattern", "pattern")],
    ),
    (
        "Grep",
        "search_files",
        &[("path", "path"), ("pattern", "pattern")],
    ),
    ("LS", "list_dir", &[("path", "path")]),
    (
        "WebFetch",
        "web_fetch",
        &[("domain", "host:url"), ("url", "url")],
    ),
    ("WebSearch", "web_search", &[("query", "query")]),
];

const CODEX: Table = &[
    // The hook's name for the shell tool.
    ("Bash", "shell", &[("command", "words:command")]),
    // The model API's names (forward mode).
    ("exec_command", "shell", &[("command", "words:cmd|command")]),
    ("shell", "shell", &[("command", "words:command")]),
    ("apply_patch", "apply_patch", &[("patch", "input|patch")]),
    ("view_image", "read_file", &[("path", "path")]),
    ("web_search", "web_search", &[("query", "query")]),
];

const GEMINI: Table = &[
    (
        "run_shell_command",
        "shell",
        &[("command", "words:command")],
    ),
    (
        "read_file",
        "read_file",
        &[("path", "file_path|absolute_path")],
    ),
    (
        "write_file",
        "write_file",
        &[("path", "file_path"), ("content", "content")],
    ),
    ("replace", "edit_file", &[("path", "file_path")]),
    ("list_directory", "list_dir", &[("path", "dir_path|path")]),
    (
        "glob",
        "search_files",
        &[("path", "dir_path|path"), ("pattern", "pattern")],
    ),
    (
        "search_file_content",
        "search_files",
        &[("path", "dir_path|path"), ("pattern", "pattern")],
    ),
    (
        "grep_search",
        "search_files",
        &[("path", "dir_path|path"), ("pattern", "pattern")],
    ),
    ("google_web_search", "web_search", &[("query", "query")]),
];

const CURSOR: Table = &[
    ("Shell", "shell", &[("command", "words:command")]),
    ("Read", "read_file", &[("path", "file_path")]),
];

const MCP_DEFAULT: (&str, &[(&str, &str)]) = (
    "mcp.tool_call",
    &[
        ("server", "$mcp_server"),
        ("tool", "$mcp_tool"),
        ("input", "$input"),
    ],
);

fn table(runtime: Runtime) -> Table {
    match runtime {
        Runtime::ClaudeCode => CLAUDE_CODE,
        Runtime::Codex => CODEX,
        Runtime::Gemini => GEMINI,
        Runtime::Cursor => CURSOR,
    }
}

/// The built-in rule for a runtime's tool, if any.
pub fn default_rule(runtime: Runtime, tool: &str) -> Option<ToolRule> {
    if let Some((_, action, args)) = table(runtime).iter().find(|(n, _, _)| *n == tool) {
        return Some(ToolRule::builtin(action, args));
    }
    mcp_name(runtime, tool).map(|_| ToolRule::builtin(MCP_DEFAULT.0, MCP_DEFAULT.1))
}

/// Every built-in tool name of a runtime (for documentation and tests).
pub fn default_tools(runtime: Runtime) -> Vec<&'static str> {
    table(runtime).iter().map(|(n, _, _)| *n).collect()
}

/// The rule that applies: the policy's entry for the tool, its MCP wildcard
/// for an MCP tool, then the built-in defaults.
pub fn rule_for(runtime: Runtime, tool: &str, overrides: Option<&Overrides>) -> Option<ToolRule> {
    if let Some(o) = overrides {
        if let Some(r) = o.get(tool) {
            return Some(r.clone());
        }
        if mcp_name(runtime, tool).is_some() {
            if let Some(r) = o.get(MCP_WILDCARD) {
                return Some(r.clone());
            }
        }
    }
    default_rule(runtime, tool)
}

/// Maps one call. Pure: the same inputs always give the same action and arguments.
pub fn map(
    runtime: Runtime,
    tool: &str,
    input: &Map<String, Value>,
    overrides: Option<&Overrides>,
) -> Result<Mapped, MapError> {
    let rule = rule_for(runtime, tool, overrides).ok_or_else(|| MapError::UnknownTool {
        runtime,
        tool: tool.to_owned(),
    })?;
    let mut arguments = Map::new();
    for (name, source) in &rule.args {
        let invalid = |message: String| MapError::InvalidInput {
            runtime,
            tool: tool.to_owned(),
            arg: name.clone(),
            message,
        };
        let first = |fields: &[String]| first_field(input, fields);
        let value = match source {
            Source::Fields(fields) => first(fields).map(|(_, v)| v.clone()),
            Source::Pointer(p) => input_pointer(input, p).cloned(),
            Source::Input => Some(Value::Object(input.clone())),
            Source::ToolName => Some(Value::String(tool.to_owned())),
            Source::McpServer | Source::McpTool => {
                let (server, t) = mcp_name(runtime, tool)
                    .ok_or_else(|| invalid(format!("`{tool}` is not an MCP tool name")))?;
                Some(Value::String(
                    if *source == Source::McpServer {
                        server
                    } else {
                        t
                    }
                    .to_owned(),
                ))
            }
            Source::Words(fields) => match first(fields) {
                None => None,
                Some((f, v)) => Some(
                    words_of(v)
                        .map_err(|e| match e {
                            WordsError::Shell(source) => MapError::ShellSyntax {
                                runtime,
                                tool: tool.to_owned(),
                                arg: name.clone(),
                                source,
                            },
                            WordsError::Shape(m) => invalid(format!("field `{f}`: {m}")),
                        })?
                        .into_iter()
                        .map(Value::String)
                        .collect(),
                ),
            },
            Source::Host(fields) => match first(fields) {
                None => None,
                Some((f, v)) => {
                    let url = v
                        .as_str()
                        .ok_or_else(|| invalid(format!("field `{f}` must be a URL string")))?;
                    Some(Value::String(host_of(url).ok_or_else(|| {
                        invalid(format!("field `{f}`: no host name in the URL"))
                    })?))
                }
            },
        };
        if let Some(v) = value {
            arguments.insert(name.clone(), v);
        }
    }
    Ok(Mapped {
        action: rule.action,
        arguments,
    })
}

/// The first of `fields` present in `input`, with its name.
fn first_field<'a>(
    input: &'a Map<String, Value>,
    fields: &[String],
) -> Option<(String, &'a Value)> {
    fields
        .iter()
        .find_map(|f| input.get(f).map(|v| (f.clone(), v)))
}

fn input_pointer<'a>(input: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let (first, rest) = match pointer[1..].split_once('/') {
        Some((a, b)) => (a, format!("/{b}")),
        None => (&pointer[1..], String::new()),
    };
    let first = first.replace("~1", "/").replace("~0", "~");
    input.get(&first)?.pointer(&rest)
}

enum WordsError {
    Shell(ShellWordsError),
    Shape(String),
}

/// A shell command as argv: a string is split strictly; an array is argv,
/// except `[sh|bash|zsh, -c|-lc, SCRIPT]`, whose script is split.
fn words_of(v: &Value) -> Result<Vec<String>, WordsError> {
    match v {
        Value::String(s) => shell_words::split(s).map_err(WordsError::Shell),
        Value::Array(items) => {
            let argv: Vec<&str> = items
                .iter()
                .map(|i| i.as_str())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    WordsError::Shape("must be a string or an array of strings".into())
                })?;
            if argv.is_empty() {
                return Err(WordsError::Shape("empty argv".into()));
            }
            let shell = argv[0].rsplit('/').next().unwrap_or("");
            if matches!(shell, "sh" | "bash" | "zsh" | "dash") && argv.len() >= 2 {
                return match (argv[1], argv.len()) {
                    ("-c" | "-lc", 3) => shell_words::split(argv[2]).map_err(WordsError::Shell),
                    _ => Err(WordsError::Shell(ShellWordsError::Syntax {
                        construct: argv[..2].join(" "),
                        at: 0,
                    })),
                };
            }
            Ok(argv.into_iter().map(str::to_owned).collect())
        }
        _ => Err(WordsError::Shape(
            "must be a string or an array of strings".into(),
        )),
    }
}

/// The lowercase host of `scheme://[user@]host[:port]/…`.
fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}
