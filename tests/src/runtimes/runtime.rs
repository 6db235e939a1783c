//! How each real runtime is started offline against the scripted model
//! server: its home and config files, its environment and arguments, and
//! where a test hook (crashing, hanging or denying) is installed.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

/// The three real agent CLIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Claude Code (Anthropic Messages).
    ClaudeCode,
    /// Codex (OpenAI Responses).
    Codex,
    /// Gemini CLI (Gemini API).
    Gemini,
}

/// The pre-tool hook a run is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// No hook at all.
    None,
    /// A hook that records it fired and exits 1 (runtimes fail open).
    Crash,
    /// A hook that records it fired and blocks past its timeout.
    Hang,
    /// A hook that would deny (exit 2), with the runtime told to skip hooks
    /// (Claude Code `--bare`).
    DenyButSkipped,
    /// agentd's own adapter, installed with `agentctl hook install`.
    Agentd,
}

/// Codex's system-wide config (hooks are read from here).
pub const CODEX_SYSTEM_CONFIG: &str = "/etc/codex/config.toml";

/// Per-run directories (all owned by the agent user except `bin`).
#[derive(Debug, Clone)]
pub struct RunDirs {
    /// The agent's HOME.
    pub home: PathBuf,
    /// Its TMPDIR.
    pub tmp: PathBuf,
    /// The runtime's working directory.
    pub workspace: PathBuf,
    /// Programs the model may ask for (`mailctl`), on PATH (shared by the suite).
    pub bin: PathBuf,
    /// The test hook script.
    pub hook: PathBuf,
    /// Written by the hook when it fires.
    pub hook_fired: PathBuf,
    /// A FIFO the hanging hook waits on.
    pub fifo: PathBuf,
    /// Claude Code's MCP servers (`--mcp-config`), used when the file exists.
    pub mcp_config: PathBuf,
}

impl RunDirs {
    /// Lays out a run under `root`, with the suite's programs in `bin`.
    pub fn new(root: &Path, bin: &Path) -> Self {
        Self {
            home: root.join("home"),
            tmp: root.join("tmp"),
            workspace: root.join("workspace"),
            bin: bin.to_path_buf(),
            hook: root.join("test-hook"),
            hook_fired: root.join("tmp/hook-fired"),
            fifo: root.join("tmp/hook-fifo"),
            // In HOME: the runtime's profile lets it read there.
            mcp_config: root.join("home/mcp.json"),
        }
    }
}

impl Runtime {
    /// All three.
    pub const ALL: [Runtime; 3] = [Runtime::ClaudeCode, Runtime::Codex, Runtime::Gemini];

    /// Short name (also its profile's name).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::ClaudeCode => "claude-code",
            Runtime::Codex => "codex",
            Runtime::Gemini => "gemini-cli",
        }
    }

    /// Its launcher under the install dir.
    pub fn binary(self, install: &Path) -> PathBuf {
        install.join("node_modules/.bin").join(match self {
            Runtime::ClaudeCode => "claude",
            Runtime::Codex => "codex",
            Runtime::Gemini => "gemini",
        })
    }

    /// Whether this runtime can be given `hook` in this suite.
    pub fn supports(self, hook: Hook) -> Result<(), &'static str> {
        match (self, hook) {
            (_, Hook::None) => Ok(()),
            (Runtime::ClaudeCode, _) => Ok(()),
            (_, Hook::Crash | Hook::Hang | Hook::Agentd) => Ok(()),
            (Runtime::Gemini, Hook::DenyButSkipped) => Err(
                "Gemini CLI has no switch that skips configured hooks (the no-hook run covers it)",
            ),
            (Runtime::Codex, Hook::DenyButSkipped) => {
                Err("Codex has no switch that skips configured hooks (the no-hook run covers it)")
            }
        }
    }

    /// Writes the runtime's config files into `d.home` (and the test hook).
    pub fn prepare(self, d: &RunDirs, model_url: &str, hook: Hook) -> std::io::Result<()> {
        let hook_cmd = d.hook.display().to_string();
        // Codex reads hooks only from its system config (a user hooks file is
        // ignored): /etc here is the suite's private overlay.
        let _ = std::fs::remove_file(CODEX_SYSTEM_CONFIG);
        if self == Runtime::Codex && matches!(hook, Hook::Crash | Hook::Hang | Hook::DenyButSkipped)
        {
            write(
                Path::new(CODEX_SYSTEM_CONFIG),
                &format!(
                    "[[hooks.PreToolUse]]\nmatcher = \"*\"\n\n[[hooks.PreToolUse.hooks]]\n\
                     type = \"command\"\ncommand = {hook_cmd:?}\ntimeout = 2\n"
                ),
            )?;
        }
        match self {
            Runtime::ClaudeCode => {
                let hooks = if matches!(hook, Hook::None | Hook::Agentd) {
                    serde_json::json!({})
                } else {
                    serde_json::json!({ "PreToolUse": [{ "matcher": "*", "hooks": [
                        { "type": "command", "command": hook_cmd, "timeout": 2 }] }] })
                };
                write(
                    &d.home.join(".claude/settings.json"),
                    &serde_json::json!({ "hooks": hooks }).to_string(),
                )?;
            }
            Runtime::Codex => {
                write(
                    &d.home.join(".codex/config.toml"),
                    &format!(
                        "model = \"gpt-scripted\"\nmodel_provider = \"scripted\"\n\
                         approval_policy = \"never\"\nsandbox_mode = \"danger-full-access\"\n\
                         check_for_update_on_startup = false\n\n\
                         [model_providers.scripted]\nname = \"scripted\"\n\
                         base_url = \"{model_url}/v1\"\nwire_api = \"responses\"\n\
                         env_key = \"SCRIPTED_API_KEY\"\n"
                    ),
                )?;
            }
            Runtime::Gemini => {
                let mut settings = serde_json::json!({
                    "security": { "auth": { "selectedType": "gemini-api-key" } },
                    "general": { "disableAutoUpdate": true, "disableUpdateNag": true },
                    "telemetry": { "enabled": false },
                    "privacy": { "usageStatisticsEnabled": false },
                });
                if !matches!(hook, Hook::None | Hook::Agentd) {
                    settings["hooks"] = serde_json::json!({ "BeforeTool": [{ "matcher": "*", "hooks": [
                        { "type": "command", "command": hook_cmd, "timeout": 2000 }] }] });
                }
                write(&d.home.join(".gemini/settings.json"), &settings.to_string())?;
            }
        }
        let body = match hook {
            Hook::None | Hook::Agentd => return Ok(()),
            Hook::Crash => "exit 1".to_string(),
            // `read` is a builtin: the hook hangs without running any program.
            Hook::Hang => format!("read -r -t 60 -u 9 9<>{:?}\nexit 0", d.fifo),
            Hook::DenyButSkipped => "echo 'denied by the test hook' >&2\nexit 2".to_string(),
        };
        write(
            &d.hook,
            &format!(
                "#!/bin/bash\n# Test hook for the runtime stage.\necho fired >> {:?}\n{body}\n",
                d.hook_fired
            ),
        )?;
        set_mode(&d.hook, 0o755)
    }

    /// The argv after `agentctl run … --`: `/usr/bin/env VAR=… RUNTIME ARGS…`.
    pub fn command(
        self,
        install: &Path,
        d: &RunDirs,
        model_url: &str,
        prompt: &str,
        hook: Hook,
        env: &[String],
    ) -> Vec<OsString> {
        let mut v: Vec<String> = vec![
            "/usr/bin/env".into(),
            "-i".into(),
            format!("HOME={}", d.home.display()),
            format!("TMPDIR={}", d.tmp.display()),
            format!("PATH={}:/usr/local/bin:/usr/bin:/bin", d.bin.display()),
            "LANG=C.UTF-8".into(),
            "TERM=dumb".into(),
        ];
        v.extend(env.iter().cloned());
        match self {
            Runtime::ClaudeCode => {
                v.extend([
                    format!("ANTHROPIC_BASE_URL={model_url}"),
                    "ANTHROPIC_API_KEY=scripted".into(),
                    "DISABLE_TELEMETRY=1".into(),
                    "DISABLE_ERROR_REPORTING=1".into(),
                    "DISABLE_AUTOUPDATER=1".into(),
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".into(),
                ]);
                v.push(self.binary(install).display().to_string());
                v.extend(["-p".into(), "--output-format".into(), "json".into()]);
                v.push("--dangerously-skip-permissions".into());
                if hook == Hook::DenyButSkipped {
                    v.push("--bare".into());
                }
                if d.mcp_config.exists() {
                    v.extend([
                        "--mcp-config".into(),
                        d.mcp_config.display().to_string(),
                        "--strict-mcp-config".into(),
                    ]);
                }
                // The prompt after `--`: never parsed as flags.
                v.extend(["--".into(), prompt.into()]);
            }
            Runtime::Codex => {
                v.extend([
                    format!("CODEX_HOME={}", d.home.join(".codex").display()),
                    "SCRIPTED_API_KEY=scripted".into(),
                ]);
                v.push(self.binary(install).display().to_string());
                v.extend([
                    "exec".into(),
                    "--skip-git-repo-check".into(),
                    "--".into(),
                    prompt.into(),
                ]);
            }
            Runtime::Gemini => {
                v.extend([
                    "GEMINI_API_KEY=scripted".into(),
                    format!("GOOGLE_GEMINI_BASE_URL={model_url}"),
                    "GEMINI_CLI_TRUST_WORKSPACE=true".into(),
                    "GEMINI_CLI_NO_RELAUNCH=true".into(),
                ]);
                v.push(self.binary(install).display().to_string());
                v.extend([
                    "--yolo".into(),
                    "--output-format".into(),
                    "json".into(),
                    "-p".into(),
                    prompt.into(),
                ]);
            }
        }
        v.into_iter().map(OsString::from).collect()
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
