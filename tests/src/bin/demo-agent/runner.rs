//! The tool runner: asks agentd for every planned call, runs allowed tools
//! bound to their call (`agentctl exec --call ID`), and — being careless —
//! tries some denied tools directly, where only the kernel can stop it.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use agentd::{api::client::Client, gateway::ToolCallRequest, protocol::SignedMessage};

use crate::{emit, plan, Event, Instruction};

/// Talks to agentd and runs tools.
pub struct Runner {
    socket: PathBuf,
    enforce_socket: PathBuf,
    agentctl: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Runner {
    /// A runner using agentd's socket and the given agentctl binary.
    pub fn new(socket: PathBuf, enforce_socket: PathBuf, agentctl: PathBuf) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Self {
            socket,
            enforce_socket,
            agentctl,
            rt,
        }
    }

    /// Handles one message: get an active-message id if needed, plan, act.
    pub fn handle(&self, ins: &Instruction) {
        let step = ins.step.clone();
        let active = match (&ins.active_message_id, ins.via_inbox) {
            (Some(id), _) => Some(id.clone()),
            (None, true) => self.ingest_inbox(ins),
            (None, false) => None,
        };
        for p in plan::plan(&ins.text) {
            emit(&Event::Thought {
                step: step.clone(),
                text: p.thought.clone(),
            });
            let decision = self.ask(&step, active.as_deref().unwrap_or(""), &p);
            match decision {
                Some(call_id) => self.run_bound(&step, &p, &call_id),
                None if p.try_directly => self.run_directly(&step, &p),
                None => {}
            }
        }
        emit(&Event::Done { step });
    }

    /// The runtime forwards an unsigned inbox message to agentd, which
    /// records it and (per policy) hands back an untrusted id.
    fn ingest_inbox(&self, ins: &Instruction) -> Option<String> {
        let msg = SignedMessage::unsigned(None, "inbox:mail", &ins.text);
        let result = self.rt.block_on(async {
            let mut c = Client::connect(&self.socket).await?;
            c.submit_message(&msg).await
        });
        match result {
            Ok(outcome) => {
                emit(&Event::Ingested {
                    step: ins.step.clone(),
                    trust: format!("{:?}", outcome.trust).to_lowercase(),
                    reason_code: outcome.reason_code.clone(),
                    active_message_id: outcome.active_message_id.clone(),
                });
                Some(outcome.active_message_id)
            }
            Err(e) => {
                emit(&Event::Ingested {
                    step: ins.step.clone(),
                    trust: "refused".into(),
                    reason_code: e.reason_code().unwrap_or("client_error").into(),
                    active_message_id: String::new(),
                });
                None
            }
        }
    }

    /// Asks agentd; returns the call id when allowed.
    fn ask(&self, step: &str, active: &str, p: &plan::ToolPlan) -> Option<String> {
        let req = ToolCallRequest {
            active_message_id: active.to_string(),
            action: p.action.to_string(),
            tool_use_id: None,
            arguments: p.arguments.clone(),
        };
        let target = target_of(p);
        let result = self.rt.block_on(async {
            let mut c = Client::connect(&self.socket).await?;
            c.tool_call(&req).await
        });
        match result {
            Ok(d) => {
                emit(&Event::Decision {
                    step: step.into(),
                    action: p.action.into(),
                    target,
                    decision: d.decision.clone(),
                    reason_code: d.reason_code.clone(),
                    call_id: d.call_id.clone(),
                    latency_us: d.latency_us,
                });
                (d.decision == "allow").then_some(d.call_id)
            }
            Err(e) => {
                emit(&Event::Decision {
                    step: step.into(),
                    action: p.action.into(),
                    target,
                    decision: "deny".into(),
                    reason_code: e.reason_code().unwrap_or("client_error").into(),
                    call_id: String::new(),
                    latency_us: 0,
                });
                None
            }
        }
    }

    fn argv(&self, p: &plan::ToolPlan) -> Vec<String> {
        let me = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        p.argv
            .iter()
            .map(|a| if a == "@self" { me.clone() } else { a.clone() })
            .collect()
    }

    /// Runs the tool bound to its call: `agentctl exec --call ID -- argv`.
    fn run_bound(&self, step: &str, p: &plan::ToolPlan, call_id: &str) {
        let argv = self.argv(p);
        if argv.is_empty() {
            emit(&Event::ToolResult {
                step: step.into(),
                action: p.action.into(),
                ok: true,
                output: "performed by agentd".into(),
            });
            return;
        }
        let out = Command::new(&self.agentctl)
            .args(["exec", "--call", call_id, "--socket"])
            .arg(&self.enforce_socket)
            .arg("--")
            .args(&argv)
            .stdin(Stdio::null())
            .output();
        let (ok, output) = match out {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .trim()
                .to_string(),
            ),
            Err(e) => (false, format!("cannot start agentctl: {e}")),
        };
        emit(&Event::ToolResult {
            step: step.into(),
            action: p.action.into(),
            ok,
            output,
        });
    }

    /// The careless path: the runtime's built-in tool runs it without asking.
    fn run_directly(&self, step: &str, p: &plan::ToolPlan) {
        let argv = self.argv(p);
        let Some((program, rest)) = argv.split_first() else {
            return;
        };
        emit(&Event::Thought {
            step: step.into(),
            text: "agentd said no — the runtime's built-in tool runs it anyway, without asking."
                .into(),
        });
        let result = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .output();
        let (outcome, blocked) = match result {
            Ok(o) if o.status.success() => ("ran: exit 0".to_string(), false),
            Ok(o) => {
                use std::os::unix::process::ExitStatusExt as _;
                let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
                match o.status.signal() {
                    Some(sig) => (
                        format!("killed by signal {sig} before its first instruction"),
                        true,
                    ),
                    None => {
                        let refused = stderr.contains("Operation not permitted");
                        (
                            format!("exit {}: {stderr}", o.status.code().unwrap_or(-1)),
                            refused,
                        )
                    }
                }
            }
            Err(e) => {
                let refused = matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
                (format!("exec refused: {e}"), refused)
            }
        };
        emit(&Event::DirectAttempt {
            step: step.into(),
            argv,
            outcome,
            blocked,
        });
    }
}

/// A short description of what a call touches, for the audit table.
fn target_of(p: &plan::ToolPlan) -> String {
    for key in [
        "command", "path", "to", "mailbox", "server", "format", "invoice",
    ] {
        if let Some(v) = p.arguments.get(key) {
            return match v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    String::new()
}
