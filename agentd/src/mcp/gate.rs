//! The gateway's half of every MCP transport: what `decide` classified is
//! decided here against the policy and audited, the same way for the stdio
//! relay and for Streamable HTTP. Transports keep their own I/O (framing,
//! ids, sessions) and ask this module what to answer.
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::decide::reason;
use super::framing::{self, code, Id};
use super::naming;
use super::pins::{self, PinStore, Seen};
use crate::gateway::{Caller, Decision, Gateway, ToolCallRequest};

/// One server's decisions for one agent under one active message.
pub struct Gate {
    /// The gateway deciding and auditing.
    pub gateway: Arc<Gateway>,
    /// Tool definitions pinned by hash.
    pub pins: Arc<PinStore>,
    /// The server's name in actions.
    pub server: String,
    /// The agent whose server it is.
    pub agent: String,
    /// The runtime's active message.
    pub active: Option<String>,
}

impl Gate {
    /// The gateway request for `action` with `arguments`.
    pub fn call_request(&self, action: String, arguments: Map<String, Value>) -> ToolCallRequest {
        ToolCallRequest {
            active_message_id: self.active.clone().unwrap_or_default(),
            action,
            arguments,
            tool_use_id: None,
        }
    }

    /// The action a call of `tool` is decided as: the policy's mapping
    /// (`[mcp.servers.<server>.tools]`) when it names one, else `default`
    /// (`mcp.<server>.<tool>`, see `naming`).
    pub fn action_for(&self, tool: &str, default: String) -> String {
        self.gateway
            .current_policy()
            .and_then(|p| p.mcp_tool_action(&self.server, tool).map(str::to_owned))
            .unwrap_or(default)
    }

    /// Takes out of a `tools/list` result the tools the current operator
    /// could not call, when the policy asks (`filter_tools`): those whose
    /// action no role of the active message's operator allows (all of them
    /// without an active message). Returns how many were taken out.
    pub fn filter_tools(&self, raw: &mut Map<String, Value>) -> usize {
        let Some(policy) = self.gateway.current_policy() else {
            return 0;
        };
        if !policy.mcp_filter_tools(&self.server) {
            return 0;
        }
        let Some(Value::Array(tools)) = raw
            .get_mut("result")
            .and_then(|r| r.as_object_mut())
            .and_then(|r| r.get_mut("tools"))
        else {
            return 0;
        };
        let roles = self
            .active
            .as_deref()
            .map(|a| self.gateway.operator_roles(a, crate::gateway::unix_now()))
            .unwrap_or_default();
        let before = tools.len();
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return false;
            };
            naming::action_of(&self.server, name)
                .map(|default| self.action_for(name, default))
                .is_ok_and(|action| {
                    policy.roles_allow(&roles, &action)
                        // A delegated message sees only its token's actions.
                        && self
                            .active
                            .as_deref()
                            .is_some_and(|a| self.gateway.message_may_use(a, &action))
                })
        });
        let hidden = before - tools.len();
        if hidden > 0 {
            tracing::info!(agent = %self.agent, server = %self.server, hidden, "MCP tools the operator may not call left out of tools/list");
        }
        hidden
    }

    /// Records a denial decided before the policy (audited like any).
    pub async fn deny(
        &self,
        action: String,
        arguments: Map<String, Value>,
        caller: Caller,
        reason_code: &str,
        detail: &str,
    ) -> Decision {
        let req = self.call_request(action, arguments);
        self.gateway
            .deny_and_record(&req, caller, reason_code, detail)
            .await
    }

    /// Decides `action` (a resource read, a prompt, a server request);
    /// without an active message it is denied `no_active_message`.
    pub async fn decide(
        &self,
        action: String,
        arguments: Map<String, Value>,
        caller: Caller,
    ) -> Decision {
        let req = self.call_request(action, arguments);
        match &self.active {
            None => {
                self.gateway
                    .deny_and_record(
                        &req,
                        caller,
                        crate::protocol::reason::NO_ACTIVE_MESSAGE,
                        "the runtime has no active message",
                    )
                    .await
            }
            Some(_) => self.gateway.tool_call(&req, caller).await,
        }
    }

    /// Decides a `tools/call` of `tool` as `action`: a tool the listing did
    /// not show with an approved definition (`listed` false) is denied
    /// (`mcp_tool_definition_changed` when a change awaits approval, else
    /// `mcp_tool_not_listed`), then a call without an active message, then
    /// one the transport cannot carry (`unavailable`: reason and why);
    /// the rest is the policy's.
    pub async fn tool_call(
        &self,
        tool: &str,
        action: String,
        arguments: Map<String, Value>,
        caller: Caller,
        listed: bool,
        unavailable: Option<(&'static str, &str)>,
    ) -> Decision {
        let action = self.action_for(tool, action);
        let req = self.call_request(action, arguments);
        let unlisted = (!listed).then(|| match self.pins.get(&self.agent, &self.server, tool) {
            Some(p) if p.pending.is_some() => (
                reason::TOOL_DEFINITION_CHANGED,
                "the tool's definition changed since it was approved; an admin must approve it (agentctl mcp approve)",
            ),
            _ => (
                reason::TOOL_NOT_LISTED,
                "the tool was not in this session's tools/list",
            ),
        });
        let d = match (&self.active, unlisted, unavailable) {
            (_, Some((code, why)), _) => {
                self.gateway.deny_and_record(&req, caller, code, why).await
            }
            (None, None, _) => {
                self.gateway
                    .deny_and_record(
                        &req,
                        caller,
                        crate::protocol::reason::NO_ACTIVE_MESSAGE,
                        "the runtime has no active message (AGENTD_ACTIVE_MESSAGE is unset)",
                    )
                    .await
            }
            (Some(_), None, Some((code, why))) => {
                self.gateway.deny_and_record(&req, caller, code, why).await
            }
            (Some(_), None, None) => self.gateway.tool_call(&req, caller).await,
        };
        tracing::info!(server = %self.server, tool = %tool, action = %d.action, decision = %d.decision, reason = %d.reason_code, call_id = %d.call_id, "MCP tool call decided");
        d
    }

    /// Pins the definitions of a `tools/list` result: new tools are pinned
    /// (and audited), approved ones pass, changed ones are taken out of the
    /// list and their refusal audited; a store error keeps the tool out.
    /// Returns each tool seen with whether it stays listed.
    pub async fn pin_tools(
        &self,
        raw: &mut Map<String, Value>,
        caller: Caller,
    ) -> Vec<(String, bool)> {
        let mut seen_tools = Vec::new();
        let Some(Value::Array(tools)) = raw
            .get_mut("result")
            .and_then(|r| r.as_object_mut())
            .and_then(|r| r.get_mut("tools"))
        else {
            return seen_tools;
        };
        let mut kept = Vec::with_capacity(tools.len());
        for t in std::mem::take(tools) {
            let Some(name) = t.get("name").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let hash = pins::definition_hash(&t);
            let seen = self.pins.see(&self.agent, &self.server, &name, &hash);
            let action = match naming::action_of(&self.server, &name) {
                Ok(default) => self.action_for(&name, default),
                Err(_) => format!("{}{}", naming::ACTION_PREFIX, self.server),
            };
            match seen {
                Ok(Seen::Same) => {
                    seen_tools.push((name, true));
                    kept.push(t);
                }
                Ok(Seen::Pinned) => {
                    tracing::info!(agent = %self.agent, server = %self.server, tool = %name, sha256 = %hash, "MCP tool definition pinned");
                    if let Some(audit) = self.gateway.audit() {
                        let mut ev = crate::audit::AuditEvent::new(
                            crate::audit::RecordKind::Admin,
                            "mcp_tool_pinned",
                        );
                        ev.target = format!("{action} sha256:{hash}");
                        ev.agent.clone_from(&self.agent);
                        ev.decision = "allow".into();
                        ev.reason_code = crate::protocol::reason::OK.into();
                        if let Err(e) = audit.append(ev).await {
                            tracing::error!(error = %e, tool = %name, "could not audit a pinned MCP tool");
                        }
                    }
                    seen_tools.push((name, true));
                    kept.push(t);
                }
                Ok(Seen::Changed { pinned }) => {
                    let mut args = Map::new();
                    args.insert("definition_sha256".into(), json!(hash));
                    args.insert("pinned_sha256".into(), json!(pinned));
                    let d = self
                        .deny(
                            action,
                            args,
                            caller,
                            reason::TOOL_DEFINITION_CHANGED,
                            "the tool's definition differs from the approved one; kept out of tools/list",
                        )
                        .await;
                    tracing::warn!(agent = %self.agent, server = %self.server, tool = %name, call_id = %d.call_id, "MCP tool definition changed; refused until approved");
                    seen_tools.push((name, false));
                }
                Err(e) => {
                    tracing::error!(error = %e, tool = %name, "MCP pin store failed; tool kept out of tools/list");
                    seen_tools.push((name, false));
                }
            }
        }
        *tools = kept;
        seen_tools
    }

    /// Decides a request the server sent the client (`sampling`,
    /// `elicitation`, `roots`) as `action`, with one argument, `params`
    /// (MCP's camelCase field names are not policy argument names):
    /// None when allowed, else the error to answer the server with.
    pub async fn server_request(
        &self,
        action: String,
        id: &Id,
        raw: &Map<String, Value>,
        caller: Caller,
    ) -> Option<Value> {
        let mut arguments = Map::new();
        arguments.insert(
            "params".into(),
            raw.get("params").cloned().unwrap_or_else(|| json!({})),
        );
        let d = self.decide(action, arguments, caller).await;
        (!d.is_allow()).then(|| refusal(id, &d))
    }
}

/// The JSON-RPC error answering a request `d` denied (not a tool call:
/// those get [`super::decide::denied_result`]).
pub fn refusal(id: &Id, d: &Decision) -> Value {
    framing::error_response(
        Some(id),
        code::INVALID_REQUEST,
        &d.reason_code,
        &format!(
            "agentd denied this request ({}): {}",
            d.reason_code, d.detail
        ),
    )
}

/// Two tools of a `tools/list` result mapping to one action: the message
/// saying so, or None.
pub fn tool_collision(server: &str, raw: &Map<String, Value>) -> Option<String> {
    let tools = raw.get("result")?.get("tools")?.as_array()?;
    let mut seen: HashMap<String, &str> = HashMap::new();
    for t in tools {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Ok(action) = naming::action_of(server, name) else {
            continue;
        };
        if let Some(prev) = seen.insert(action.clone(), name) {
            if prev != name {
                return Some(format!(
                    "tools `{prev}` and `{name}` both map to `{action}`"
                ));
            }
        }
    }
    None
}
