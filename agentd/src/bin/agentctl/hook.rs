//! `agentctl hook claude-code|codex|gemini|cursor`: a runtime's pre-tool
//! hook. Reads the runtime's hook JSON on stdin, asks agentd
//! (`POST /v1/runtime-calls`, with `AGENTD_ACTIVE_MESSAGE`), and answers in
//! that runtime's format.
//!
//! Fails closed: bad input, agentd unreachable or slow, any unexpected
//! answer → a denial with a reason code, exit 2. The one exception is
//! agentd saying, positively, that the caller is in no agent and named no
//! active message: then the hook has no opinion (exit 0, nothing printed),
//! so a person's own runtime on the same host is not broken by a managed
//! hook. A watchdog answers `hook_timeout` before the runtime's own hook
//! timeout could fire (on which the runtimes let the tool run).
//!
//! `agentctl hook install RUNTIME [--managed] [--root DIR]` writes the hook
//! into the runtime's settings (see `install`).
mod install;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::SocketArg;
use agentd::api::client::{Client, ClientError};
use agentd::protocol::reason;
use agentd::runtime::{self, Runtime, RuntimeCallRequest, Verdict, MAX_HOOK_INPUT};

/// Environment variable carrying the active-message id.
pub const ACTIVE_MESSAGE_ENV: &str = "AGENTD_ACTIVE_MESSAGE";

/// Default time the hook gives itself, milliseconds (below the runtime's
/// hook timeout that `install` writes).
pub const DEFAULT_DEADLINE_MS: u64 = 3000;

/// Arguments of `agentctl hook`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Claude Code's PreToolUse hook.
    #[command(name = "claude-code")]
    ClaudeCode(RunArgs),
    /// Codex's PreToolUse hook.
    Codex(RunArgs),
    /// Gemini CLI's BeforeTool hook.
    Gemini(RunArgs),
    /// Cursor's beforeShellExecution / beforeReadFile / beforeMCPExecution hook.
    Cursor(RunArgs),
    /// Install the hook into a runtime's settings.
    Install(install::Args),
}

/// Options of one hook run.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Time allowed for the whole hook, milliseconds; then it denies (hook_timeout).
    #[arg(long, default_value_t = DEFAULT_DEADLINE_MS)]
    deadline_ms: u64,
}

/// Runs `agentctl hook`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (rt, a) = match args.command {
        Command::Install(i) => return install::run(i),
        Command::ClaudeCode(a) => (Runtime::ClaudeCode, a),
        Command::Codex(a) => (Runtime::Codex, a),
        Command::Gemini(a) => (Runtime::Gemini, a),
        Command::Cursor(a) => (Runtime::Cursor, a),
    };
    run_hook(
        rt,
        &a.socket.path(),
        Duration::from_millis(a.deadline_ms.max(1)),
    )
}

/// Set once an answer was written: the main path and the watchdog race, and
/// exactly one of them answers.
static ANSWERED: Mutex<bool> = Mutex::new(false);

/// Writes the answer (once) and exits with its code.
fn answer_and_exit(rt: Runtime, verdict: &Verdict) -> ! {
    let mut done = ANSWERED.lock().unwrap_or_else(|p| p.into_inner());
    if !*done {
        *done = true;
        let a = runtime::render(rt, verdict);
        // Output errors cannot change the answer; the exit code still denies.
        let _ = std::io::stdout().write_all(a.stdout.as_bytes());
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().write_all(a.stderr.as_bytes());
        std::process::exit(a.exit_code);
    }
    drop(done);
    // The other path is answering; wait for it to exit the process.
    loop {
        std::thread::park();
    }
}

fn run_hook(rt: Runtime, socket: &std::path::Path, budget: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + budget;
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        answer_and_exit(
            rt,
            &Verdict::deny(
                reason::HOOK_TIMEOUT,
                format!("no answer from agentd within {} ms", budget.as_millis()),
            ),
        );
    });
    let mut bytes = Vec::new();
    // One byte more than the limit tells "too large" from "exactly the limit".
    let read = std::io::stdin()
        .lock()
        .take(MAX_HOOK_INPUT as u64 + 1)
        .read_to_end(&mut bytes);
    let verdict = match read {
        Err(e) => Verdict::deny(
            reason::MALFORMED_HOOK_INPUT,
            format!("reading the hook input failed: {e}"),
        ),
        Ok(_) => {
            let active = std::env::var(ACTIVE_MESSAGE_ENV).ok();
            match runtime::prepare(rt, &bytes, active.as_deref()) {
                Err(v) => v,
                Ok(req) => ask(socket, &req, deadline),
            }
        }
    };
    answer_and_exit(rt, &verdict)
}

/// Asks agentd; every failure is a denial.
fn ask(socket: &std::path::Path, req: &RuntimeCallRequest, deadline: Instant) -> Verdict {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Verdict::deny(reason::INTERNAL_ERROR, format!("tokio: {e}")),
    };
    let socket: PathBuf = socket.to_owned();
    let result = rt.block_on(async {
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, async {
            let mut c = Client::connect(&socket).await?;
            c.runtime_call(req).await
        })
        .await
    });
    match result {
        Err(_) => Verdict::deny(reason::HOOK_TIMEOUT, "agentd did not answer in time"),
        Ok(Err(e)) => verdict_of_error(&e),
        Ok(Ok(a)) if a.outside_agent => Verdict::NoOpinion,
        Ok(Ok(a)) => match a.decision {
            Some(d) if d.is_allow() => Verdict::Allow { call_id: d.call_id },
            Some(d) => Verdict::Deny {
                reason_code: d.reason_code,
                detail: d.detail,
            },
            None => Verdict::deny(reason::INTERNAL_ERROR, "agentd answered without a decision"),
        },
    }
}

fn verdict_of_error(e: &ClientError) -> Verdict {
    match e {
        // agentd answered with its own reason (permission_denied, body_too_large …).
        ClientError::Api {
            reason_code,
            message,
            ..
        } => Verdict::deny(reason_code, message.clone()),
        other => Verdict::deny(reason::AGENTD_UNREACHABLE, other.to_string()),
    }
}
