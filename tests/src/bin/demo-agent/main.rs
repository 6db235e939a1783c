//! The demo's scripted agent: a small, deterministic ReAct-style loop with no
//! model. It does whatever a message asks, asking agentd for every tool call
//! through its tool runner — and, like a careless runtime, it also tries some
//! tools directly without asking, so the kernel layer has something to stop.
//!
//! Protocol with the demo driver: one JSON [`Instruction`] per stdin line in,
//! JSON [`Event`] lines out on stdout.
//!
//! `demo-agent tool …` is the tool side: the runner executes it bound to an
//! allowed call (`agentctl exec --call ID -- demo-agent tool …`).
use std::{
    io::{BufRead as _, Write as _},
    path::PathBuf,
};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

mod plan;
mod runner;
mod tools;

#[derive(Parser)]
#[command(name = "demo-agent", about = "agentd's scripted demo agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The agent loop: instructions on stdin, events on stdout.
    Run {
        /// agentd's API socket.
        #[arg(long)]
        socket: PathBuf,
        /// agentd's enforcement socket (for `agentctl exec`).
        #[arg(long)]
        enforce_socket: PathBuf,
        /// The agentctl binary the tool runner uses.
        #[arg(long)]
        agentctl: PathBuf,
    },
    /// Run one tool (bound to a call by the runner).
    #[command(subcommand)]
    Tool(tools::Tool),
}

/// One instruction from the driver: a message the agent received.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instruction {
    /// Label of the scenario step.
    pub step: String,
    /// The message text.
    pub text: String,
    /// Active-message id from agentd (operator messages).
    pub active_message_id: Option<String>,
    /// The message came through the agent's own inbox, unsigned: the runtime
    /// must hand it to agentd itself to get an (untrusted) active-message id.
    #[serde(default)]
    pub via_inbox: bool,
}

/// What the agent reports, one per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The runtime handed an inbox message to agentd.
    Ingested {
        step: String,
        trust: String,
        reason_code: String,
        active_message_id: String,
    },
    /// A reasoning step.
    Thought { step: String, text: String },
    /// agentd's answer to a tool call.
    Decision {
        step: String,
        action: String,
        target: String,
        decision: String,
        reason_code: String,
        call_id: String,
        latency_us: u64,
    },
    /// The bound tool ran.
    ToolResult {
        step: String,
        action: String,
        ok: bool,
        output: String,
    },
    /// The runtime tried the tool directly, without asking agentd.
    DirectAttempt {
        step: String,
        argv: Vec<String>,
        outcome: String,
        blocked: bool,
    },
    /// The instruction is finished.
    Done { step: String },
    /// Something went wrong in the agent itself.
    Error { step: String, message: String },
}

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, event);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Tool(tool) => {
            if let Err(e) = tools::run(tool) {
                // One line, so the runner can show (and classify) it.
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run {
            socket,
            enforce_socket,
            agentctl,
        } => {
            let runner = runner::Runner::new(socket, enforce_socket, agentctl);
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Instruction>(&line) {
                    Ok(instruction) => runner.handle(&instruction),
                    Err(e) => emit(&Event::Error {
                        step: "?".into(),
                        message: format!("bad instruction: {e}"),
                    }),
                }
            }
            Ok(())
        }
    }
}
