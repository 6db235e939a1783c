//! `agentctl hook install claude-code|codex|gemini [--managed] [--root DIR]`:
//! writes `agentctl hook RUNTIME` into the runtime's settings as its
//! pre-tool hook, with a short timeout, merged into whatever the file holds
//! (other hooks and settings are kept; running it twice changes nothing).
//!
//! | runtime | file | `--managed` file | timeout unit |
//! |---|---|---|---|
//! | claude-code | `$HOME/.claude/settings.json` | `/etc/claude-code/managed-settings.json` | seconds |
//! | codex | `/etc/codex/config.toml` | `/etc/codex/managed_config.toml` | seconds |
//! | gemini | `$HOME/.gemini/settings.json` | `/etc/gemini-cli/settings.json` | milliseconds |
//!
//! Codex ignores a user's `$CODEX_HOME/hooks.json`, so both of its files are
//! system files. `--root DIR` puts every path under DIR (tests, images).
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

/// The runtime's hook timeout written into its settings, seconds. The hook's
/// own deadline (3 s by default) is shorter, so the hook answers
/// `hook_timeout` itself instead of the runtime timing it out (and running
/// the tool).
pub const RUNTIME_TIMEOUT_SECS: u64 = 5;

/// Runtimes the installer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Claude Code.
    #[value(name = "claude-code")]
    ClaudeCode,
    /// Codex.
    Codex,
    /// Gemini CLI.
    Gemini,
}

/// Arguments of `agentctl hook install`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The runtime.
    #[arg(value_enum)]
    runtime: Target,
    /// Write the system-wide managed settings instead of the user's.
    #[arg(long)]
    managed: bool,
    /// Prefix every path with this directory (a private root for tests).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// agentctl to run (default: this executable).
    #[arg(long, value_name = "PATH")]
    agentctl: Option<PathBuf>,
    /// agentd's API socket, written into the hook command.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Where the settings file lives.
pub fn settings_path(target: Target, managed: bool, home: &Path, root: Option<&Path>) -> PathBuf {
    let p = match (target, managed) {
        (Target::ClaudeCode, false) => home.join(".claude/settings.json"),
        (Target::ClaudeCode, true) => PathBuf::from("/etc/claude-code/managed-settings.json"),
        (Target::Codex, false) => PathBuf::from("/etc/codex/config.toml"),
        (Target::Codex, true) => PathBuf::from("/etc/codex/managed_config.toml"),
        (Target::Gemini, false) => home.join(".gemini/settings.json"),
        (Target::Gemini, true) => PathBuf::from("/etc/gemini-cli/settings.json"),
    };
    match root {
        Some(r) => r.join(p.strip_prefix("/").unwrap_or(&p)),
        None => p,
    }
}

/// Quotes a word for a POSIX shell (the runtimes run hook commands with `sh -c`).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The hook command line.
pub fn hook_command(agentctl: &Path, target: Target, socket: Option<&Path>) -> String {
    let rt = match target {
        Target::ClaudeCode => "claude-code",
        Target::Codex => "codex",
        Target::Gemini => "gemini",
    };
    let mut cmd = format!("{} hook {rt}", sh_quote(&agentctl.to_string_lossy()));
    if let Some(s) = socket {
        cmd.push_str(&format!(" --socket {}", sh_quote(&s.to_string_lossy())));
    }
    cmd
}

/// Is `cmd` an agentctl hook command for `rt` (ours, from any install)?
fn is_our_command(cmd: &str, rt: &str) -> bool {
    // The program may be single-quoted (see `sh_quote`).
    let (program, rest) = match cmd.strip_prefix('\'') {
        Some(q) => match q.split_once('\'') {
            Some((p, rest)) => (p, rest),
            None => return false,
        },
        None => cmd.split_once(' ').unwrap_or((cmd, "")),
    };
    let mut words = rest.split_whitespace();
    program.ends_with("agentctl") && words.next() == Some("hook") && words.next() == Some(rt)
}

/// Merges the hook into JSON settings (Claude Code, Gemini): one matcher
/// group under `hooks.<event>` holding our command; an existing one is
/// updated in place.
pub fn merge_json(
    settings: &mut Map<String, Value>,
    event: &str,
    matcher: &str,
    rt: &str,
    command: &str,
    timeout: u64,
) -> anyhow::Result<()> {
    let hooks = settings
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(hooks) = hooks else {
        bail!("`hooks` is not an object");
    };
    let groups = hooks
        .entry(event)
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(groups) = groups else {
        bail!("`hooks.{event}` is not an array");
    };
    let ours = json!({"type": "command", "command": command, "timeout": timeout});
    for g in groups.iter_mut() {
        let Some(list) = g.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        if let Some(h) = list.iter_mut().find(|h| {
            h.get("command")
                .and_then(Value::as_str)
                .is_some_and(|c| is_our_command(c, rt))
        }) {
            *h = ours;
            g["matcher"] = Value::String(matcher.to_owned());
            return Ok(());
        }
    }
    groups.push(json!({"matcher": matcher, "hooks": [ours]}));
    Ok(())
}

/// Merges the hook into Codex's TOML config, keeping the rest of the file
/// (comments included): `[[hooks.PreToolUse]]` with one
/// `[[hooks.PreToolUse.hooks]]` entry.
pub fn merge_codex(text: &str, command: &str, timeout: u64) -> anyhow::Result<String> {
    use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};
    let mut doc: DocumentMut = text.parse().context("parsing the Codex config as TOML")?;
    let hooks = doc
        .entry("hooks")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .context("`hooks` is not a table")?;
    let groups = hooks
        .entry("PreToolUse")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .context("`hooks.PreToolUse` is not an array of tables")?;
    let mut ours = Table::new();
    ours["type"] = value("command");
    ours["command"] = value(command);
    ours["timeout"] = value(timeout as i64);
    let existing = groups.iter_mut().find_map(|g| {
        g.get_mut("hooks")
            .and_then(Item::as_array_of_tables_mut)?
            .iter_mut()
            .find(|h| {
                h.get("command")
                    .and_then(Item::as_str)
                    .is_some_and(|c| is_our_command(c, "codex"))
            })
    });
    match existing {
        Some(h) => *h = ours,
        None => {
            let mut group = Table::new();
            let mut list = ArrayOfTables::new();
            list.push(ours);
            group.insert("hooks", Item::ArrayOfTables(list));
            groups.push(group);
        }
    }
    Ok(doc.to_string())
}

/// Writes `text` to `path` atomically (temporary file + rename), mode 0644,
/// creating the parent directories.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("settings path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.agentctl-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("settings"),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Installs into one file; returns the path written.
pub fn install(
    target: Target,
    managed: bool,
    home: &Path,
    root: Option<&Path>,
    command: &str,
) -> anyhow::Result<PathBuf> {
    let path = settings_path(target, managed, home, root);
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let text = match target {
        Target::Codex => merge_codex(&existing, command, RUNTIME_TIMEOUT_SECS)?,
        Target::ClaudeCode | Target::Gemini => {
            let mut settings = if existing.trim().is_empty() {
                Map::new()
            } else {
                match serde_json::from_str::<Value>(&existing)
                    .with_context(|| format!("{} is not JSON", path.display()))?
                {
                    Value::Object(m) => m,
                    _ => bail!("{} does not hold a JSON object", path.display()),
                }
            };
            let (event, matcher, rt, timeout) = match target {
                // Claude Code: "*" matches every tool; timeout in seconds.
                Target::ClaudeCode => ("PreToolUse", "*", "claude-code", RUNTIME_TIMEOUT_SECS),
                // Gemini: the matcher is a regex; timeout in milliseconds.
                _ => ("BeforeTool", ".*", "gemini", RUNTIME_TIMEOUT_SECS * 1000),
            };
            merge_json(&mut settings, event, matcher, rt, command, timeout)
                .with_context(|| format!("merging into {}", path.display()))?;
            serde_json::to_string_pretty(&Value::Object(settings))? + "\n"
        }
    };
    if text != existing {
        write_atomic(&path, &text)?;
    }
    Ok(path)
}

/// Runs `agentctl hook install`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let agentctl = match args.agentctl {
        Some(p) => p,
        None => std::env::current_exe().context("locating agentctl")?,
    };
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let command = hook_command(&agentctl, args.runtime, args.socket.as_deref());
    let path = install(
        args.runtime,
        args.managed,
        &home,
        args.root.as_deref(),
        &command,
    )?;
    println!("{}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_merge_keeps_other_hooks_and_is_idempotent() {
        let mut s: Map<String, Value> = serde_json::from_value(json!({
            "model": "x",
            "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "/usr/bin/other"}]}],
                      "PostToolUse": []}
        }))
        .unwrap();
        let cmd = "/usr/bin/agentctl hook claude-code";
        merge_json(&mut s, "PreToolUse", "*", "claude-code", cmd, 5).unwrap();
        let once = s.clone();
        merge_json(&mut s, "PreToolUse", "*", "claude-code", cmd, 5).unwrap();
        assert_eq!(s, once);
        let groups = s["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["hooks"][0]["command"], "/usr/bin/other");
        assert_eq!(groups[1]["matcher"], "*");
        assert_eq!(groups[1]["hooks"][0]["command"], cmd);
        assert_eq!(groups[1]["hooks"][0]["timeout"], 5);
        assert_eq!(s["model"], "x");
        // A reinstall from another path replaces ours in place.
        merge_json(
            &mut s,
            "PreToolUse",
            "*",
            "claude-code",
            "/opt/agentctl hook claude-code",
            7,
        )
        .unwrap();
        let groups = s["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1]["hooks"][0]["timeout"], 7);
        // Not an object: refused, not overwritten.
        let mut bad: Map<String, Value> = serde_json::from_value(json!({"hooks": []})).unwrap();
        assert!(merge_json(&mut bad, "PreToolUse", "*", "claude-code", cmd, 5).is_err());
    }

    #[test]
    fn codex_merge_keeps_the_file_and_is_idempotent() {
        let orig = "# provider\nmodel_provider = \"local\"\n\n[model_providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n";
        let cmd = "/usr/bin/agentctl hook codex";
        let once = merge_codex(orig, cmd, 5).unwrap();
        assert!(once.starts_with(orig), "{once}");
        let twice = merge_codex(&once, cmd, 5).unwrap();
        assert_eq!(once, twice);
        let v: toml::Value = toml::from_str(&twice).unwrap();
        let h = &v["hooks"]["PreToolUse"][0]["hooks"][0];
        assert_eq!(h["command"].as_str(), Some(cmd));
        assert_eq!(h["type"].as_str(), Some("command"));
        assert_eq!(h["timeout"].as_integer(), Some(5));
        assert_eq!(v["hooks"]["PreToolUse"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn paths_and_commands() {
        let home = Path::new("/home/u");
        let root = Path::new("/tmp/r");
        assert_eq!(
            settings_path(Target::ClaudeCode, true, home, Some(root)),
            Path::new("/tmp/r/etc/claude-code/managed-settings.json")
        );
        assert_eq!(
            settings_path(Target::Gemini, false, home, None),
            Path::new("/home/u/.gemini/settings.json")
        );
        assert_eq!(
            hook_command(
                Path::new("/a b/agentctl"),
                Target::Gemini,
                Some(Path::new("/run/s.sock"))
            ),
            "'/a b/agentctl' hook gemini --socket /run/s.sock"
        );
        assert!(is_our_command(
            "'/a b/agentctl' hook gemini --socket x",
            "gemini"
        ));
        assert!(!is_our_command("/usr/bin/agentctl hook codex", "gemini"));
    }
}
