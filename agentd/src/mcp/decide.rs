//! What the gateway does with each message, decided from the message alone
//! (pure): forward it, decide it as a policy action, or refuse it.
//!
//! Client → server: `tools/call` is decided (action `mcp.<server>.<tool>`,
//! see `naming`), and so are `resources/read` (`mcp_resource.<server>.read`,
//! argument `uri`) and `prompts/get` (`mcp_prompt.<server>.get`, arguments
//! `name`, `arguments`); a fixed list of other methods and notifications passes;
//! anything else is refused (`mcp_method_not_allowed`) — an unknown method
//! could make the server act without a decision.
//! Server → client: responses are matched to what the client asked;
//! `sampling/createMessage`, `elicitation/create` and `roots/list` are
//! decided as `mcp_request.<server>.<kind>`; `ping` and notifications pass;
//! other requests are refused.
use serde_json::{json, Map, Value};

use super::framing::{code, Id, Message};
use super::naming;

/// Reason codes of the MCP gateway (defined in `protocol::reason`).
pub mod reason {
    pub use crate::protocol::reason::{
        MCP_BAD_TOOL_NAME as BAD_TOOL_NAME, MCP_DUPLICATE_ID as DUPLICATE_ID,
        MCP_INVALID_MESSAGE as INVALID_MESSAGE, MCP_INVALID_PARAMS as INVALID_PARAMS,
        MCP_MESSAGE_TOO_LARGE as MESSAGE_TOO_LARGE, MCP_METHOD_NOT_ALLOWED as METHOD_NOT_ALLOWED,
        MCP_SERVER_EXITED as SERVER_EXITED, MCP_SERVER_TIMEOUT as SERVER_TIMEOUT,
        MCP_TOOL_DEFINITION_CHANGED as TOOL_DEFINITION_CHANGED,
        MCP_TOOL_NAME_COLLISION as TOOL_NAME_COLLISION, MCP_TOOL_NOT_LISTED as TOOL_NOT_LISTED,
        MCP_TOO_MANY_IN_FLIGHT as TOO_MANY_IN_FLIGHT,
    };
}

/// Client requests forwarded without a decision: session set-up, listing,
/// and reads the server answers from its own state.
const CLIENT_METHODS: &[&str] = &[
    "initialize",
    // 2026-07-28's stateless capability discovery (its `initialize`).
    "server/discover",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
];

pub use super::naming::{PROMPT_PREFIX, RESOURCE_PREFIX, SERVER_REQUEST_PREFIX};

/// Client notifications forwarded.
const CLIENT_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// What to do with a message from the client (the runtime).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientVerdict {
    /// Forward to the server.
    Forward,
    /// A `tools/call` to decide as `action` with `arguments`.
    ToolCall {
        /// The MCP tool name.
        tool: String,
        /// The policy action.
        action: String,
        /// The call's arguments (the policy's argument rules check them).
        arguments: Map<String, Value>,
    },
    /// A request other than a tool call (`resources/read`, `prompts/get`)
    /// to decide as `action` with `arguments`: allowed → forwarded,
    /// denied → a JSON-RPC error.
    Decide {
        /// The policy action.
        action: String,
        /// Its arguments.
        arguments: Map<String, Value>,
    },
    /// A `tools/call` refused before any policy decision (still audited).
    DenyCall {
        /// Action recorded (`mcp.<server>` when the tool has no action).
        action: String,
        /// Reason code.
        reason: &'static str,
        /// Why.
        detail: String,
    },
    /// Answer the request with a JSON-RPC error; nothing reaches the server.
    Refuse {
        /// JSON-RPC code.
        code: i64,
        /// Reason code.
        reason: &'static str,
        /// Why.
        detail: String,
    },
    /// A notification that must not pass (it cannot be answered).
    Drop {
        /// Reason code.
        reason: &'static str,
    },
}

/// Decides what to do with a client message for `server`.
pub fn client_message(server: &str, m: &Message) -> ClientVerdict {
    match m {
        Message::Request { method, raw, .. } if method == "tools/call" => tool_call(server, raw),
        Message::Request { method, raw, .. } if method == "resources/read" => {
            read_request(raw, format!("{RESOURCE_PREFIX}{server}.read"), &["uri"])
        }
        Message::Request { method, raw, .. } if method == "prompts/get" => read_request(
            raw,
            format!("{PROMPT_PREFIX}{server}.get"),
            &["name", "arguments"],
        ),
        Message::Request { method, .. } if CLIENT_METHODS.contains(&method.as_str()) => {
            ClientVerdict::Forward
        }
        Message::Request { method, .. } => ClientVerdict::Refuse {
            code: code::METHOD_NOT_FOUND,
            reason: reason::METHOD_NOT_ALLOWED,
            detail: format!("agentd does not forward `{}`", clip(method)),
        },
        Message::Notification { method, .. } if CLIENT_NOTIFICATIONS.contains(&method.as_str()) => {
            ClientVerdict::Forward
        }
        Message::Notification { .. } => ClientVerdict::Drop {
            reason: reason::METHOD_NOT_ALLOWED,
        },
        // Answers to the server's own requests: the relay matches the id.
        Message::Response { .. } => ClientVerdict::Forward,
    }
}

/// `resources/read` and `prompts/get`: decided with the named params as
/// arguments (absent and null ones left out); params that are not an object are
/// refused.
fn read_request(raw: &Map<String, Value>, action: String, fields: &[&str]) -> ClientVerdict {
    let params = match raw.get("params") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return ClientVerdict::Refuse {
                code: code::INVALID_PARAMS,
                reason: reason::INVALID_PARAMS,
                detail: "`params` must be an object".into(),
            }
        }
    };
    let arguments = fields
        .iter()
        .filter_map(|f| params.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .filter(|(_, v)| !v.is_null())
        .collect();
    ClientVerdict::Decide { action, arguments }
}

fn tool_call(server: &str, raw: &Map<String, Value>) -> ClientVerdict {
    let fallback = format!("{}{server}", naming::ACTION_PREFIX);
    let invalid = |detail: &str| ClientVerdict::DenyCall {
        action: fallback.clone(),
        reason: reason::INVALID_PARAMS,
        detail: detail.into(),
    };
    let Some(Value::Object(params)) = raw.get("params") else {
        return invalid("tools/call needs params {name, arguments}");
    };
    let Some(Value::String(tool)) = params.get("name") else {
        return invalid("tools/call needs a string `name`");
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return invalid("tools/call `arguments` must be an object"),
    };
    match naming::action_of(server, tool) {
        Ok(action) => ClientVerdict::ToolCall {
            tool: tool.clone(),
            action,
            arguments,
        },
        Err(e) => ClientVerdict::DenyCall {
            action: fallback,
            reason: reason::BAD_TOOL_NAME,
            detail: e.to_string(),
        },
    }
}

/// What to do with a message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerVerdict {
    /// A response: match it to the client's request.
    Response,
    /// Forward to the client (notifications, ping).
    Forward,
    /// A server-initiated request to decide as `action`.
    Decide {
        /// The policy action (`mcp_request.<server>.<kind>`).
        action: String,
    },
    /// Answer the server with an error.
    Refuse {
        /// Reason code.
        reason: &'static str,
        /// Why.
        detail: String,
    },
}

/// Decides what to do with a server message for `server`.
pub fn server_message(server: &str, m: &Message) -> ServerVerdict {
    match m {
        Message::Response { .. } => ServerVerdict::Response,
        Message::Notification { .. } => ServerVerdict::Forward,
        Message::Request { method, .. } => {
            let kind = match method.as_str() {
                "ping" => return ServerVerdict::Forward,
                "sampling/createMessage" => "sampling",
                "elicitation/create" => "elicitation",
                "roots/list" => "roots",
                other => {
                    return ServerVerdict::Refuse {
                        reason: reason::METHOD_NOT_ALLOWED,
                        detail: format!("agentd does not forward `{}` to the client", clip(other)),
                    }
                }
            };
            ServerVerdict::Decide {
                action: format!("{SERVER_REQUEST_PREFIX}{server}.{kind}"),
            }
        }
    }
}

/// The result of a denied `tools/call`: a tool error the model can read
/// and recover from, with the reason code in text and in `_meta`.
pub fn denied_result(id: &Id, reason: &str, detail: &str, call_id: &str) -> Value {
    let text = if detail.is_empty() {
        format!("agentd denied this tool call ({reason})")
    } else {
        format!("agentd denied this tool call ({reason}): {detail}")
    };
    json!({
        "jsonrpc": "2.0",
        "id": id.to_value(),
        "result": {
            "content": [{"type": "text", "text": text}],
            "isError": true,
            "_meta": {"agentd/reason_code": reason, "agentd/call_id": call_id},
        },
    })
}

fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::super::framing::parse;
    use super::*;

    fn client(line: &str) -> ClientVerdict {
        client_message("fs", &parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn tool_calls_are_decided_by_action() {
        let v = client(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/x"}}}"#,
        );
        let ClientVerdict::ToolCall {
            action,
            arguments,
            tool,
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(action, "mcp.fs.read_file");
        assert_eq!(tool, "read_file");
        assert_eq!(arguments["path"], "/x");
        let v = client(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ReadFile"}}"#,
        );
        assert!(
            matches!(v, ClientVerdict::ToolCall { ref action, .. } if action.starts_with("mcp.fs.readfile--"))
        );
    }

    #[test]
    fn bad_tool_calls_are_denied_and_unknown_methods_refused() {
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
        ] {
            assert!(
                matches!(
                    client(bad),
                    ClientVerdict::DenyCall {
                        reason: reason::INVALID_PARAMS,
                        ..
                    }
                ),
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{}"}}}}"#,
            "x".repeat(200)
        );
        assert!(matches!(
            client(&long),
            ClientVerdict::DenyCall {
                reason: reason::BAD_TOOL_NAME,
                ..
            }
        ));
        assert!(matches!(
            client(r#"{"jsonrpc":"2.0","id":1,"method":"tools/exec"}"#),
            ClientVerdict::Refuse {
                reason: reason::METHOD_NOT_ALLOWED,
                ..
            }
        ));
        assert_eq!(
            client(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            ClientVerdict::Forward
        );
        assert_eq!(
            client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            ClientVerdict::Forward
        );
        assert!(matches!(
            client(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#),
            ClientVerdict::Drop { .. }
        ));
    }

    #[test]
    fn server_requests_are_decided_or_refused() {
        let s = |l: &str| server_message("fs", &parse(l.as_bytes()).unwrap());
        assert_eq!(
            s(r#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{}}"#),
            ServerVerdict::Decide {
                action: "mcp_request.fs.sampling".into()
            }
        );
        assert!(matches!(
            s(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#),
            ServerVerdict::Refuse { .. }
        ));
        assert_eq!(
            s(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#),
            ServerVerdict::Forward
        );
        assert_eq!(
            s(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#),
            ServerVerdict::Response
        );
    }

    #[test]
    fn a_denial_is_a_tool_error() {
        let v = denied_result(&Id::Num(3), "role_not_in_allowlist", "no", "c1");
        assert_eq!(v["id"], 3);
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(
            v["result"]["_meta"]["agentd/reason_code"],
            "role_not_in_allowlist"
        );
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("role_not_in_allowlist"));
    }
}
