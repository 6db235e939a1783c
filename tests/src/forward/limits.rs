//! The spend limit and provider-run tools, on an agentd of their own
//! (`[forward.spend] max_tokens`, `provider_tools = "decide"`):
//! - tokens the answers report are charged to the caller; once the window's
//!   limit is reached the next request is refused 429 in the provider's
//!   shape (the SDK raises its rate-limit error), never forwarded, and the
//!   refusal is an exchange row (`spend_limit_reached`, deny);
//! - a Responses request declaring the provider's web search (allowed by the
//!   policy) and a remote MCP server (not allowed) reaches the upstream with
//!   the web search and without the MCP server; both decisions are rows.
use serde_json::{json, Value};

use super::{step, Suite};
use crate::model_server::canned::PREFIX;

/// One check: name, outcome, and what was seen when it failed.
pub type Check = (String, bool, String);

/// `[forward]` keys and tables for this instance: 50 tokens per hour (the
/// canned Responses answer reports 23, a Chat Completions one 18: after
/// the provider-tools request and two chat requests the third is refused).
pub const FORWARD_EXTRA: &str =
    "provider_tools = \"decide\"\n[forward.spend]\nwindow_secs = 3600\nmax_tokens = 50\n";

/// The checks.
pub fn checks(s: &Suite) -> Vec<Check> {
    let mut out = Vec::new();
    // Provider-run tools, decided in the request.
    let before = s.upstream.requests().len();
    let body = json!({ "model": "gpt-fwd", "input": format!("{PREFIX} {}", json!({ "text": "ok" })),
        "tools": [
            { "type": "function", "name": "exec_command", "parameters": { "type": "object" } },
            { "type": "web_search" },
            { "type": "mcp", "server_label": "wiki", "server_url": "https://mcp.example/sse",
              "require_approval": "never" }
        ] });
    let r = s.raw_with(
        "POST",
        "/v1/responses",
        &[("x-agentd-active-message", s.active.clone())],
        &body.to_string(),
    );
    let reqs = s.upstream.requests();
    let sent: Vec<String> = reqs
        .get(before)
        .map(|q| {
            q.body["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t["type"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let rows = s.call_rows().unwrap_or_default();
    let web = rows
        .iter()
        .any(|r| r["action"] == "web_search" && r["decision"] == "allow");
    let mcp = rows
        .iter()
        .any(|r| r["action"] == "mcp.tool_call" && r["decision"] == "deny");
    let stripped = s.exchange_rows().unwrap_or_default().iter().any(|x| {
        x["target"]
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|t| t["stripped"] == json!(["mcp"]))
    });
    out.push((
        "forward provider tools: the allowed web search reaches the upstream, the remote MCP server is stripped; both decisions are rows".into(),
        matches!(&r, Ok((200, _))) && sent == ["function", "web_search"] && web && mcp && stripped,
        format!("{r:?}; upstream tools {sent:?}; web_search allow row {web}; mcp deny row {mcp}; exchange lists it stripped {stripped}"),
    ));
    // The spend limit: 23 + 18 + 18 tokens, then refused.
    let steps: Vec<Value> = (0..3)
        .map(|i| {
            step(
                &format!("spend-{i}"),
                "openai",
                false,
                &json!({ "text": "hi" }),
            )
        })
        .collect();
    let before = s.upstream.requests().len();
    match s.client(&Value::Array(steps), Some(&s.active), false) {
        Ok((lines, _)) => {
            let after = s.upstream.requests().len();
            let oks: Vec<bool> = lines.iter().map(|l| l["ok"] == true).collect();
            let third = lines.get(2).cloned().unwrap_or(Value::Null);
            let row = s
                .exchange_rows()
                .unwrap_or_default()
                .into_iter()
                .any(|x| x["reason_code"] == "spend_limit_reached" && x["decision"] == "deny");
            out.push((
                "forward spend limit: past the window's tokens the next request is refused 429 in the provider's shape, not forwarded, and recorded".into(),
                oks == [true, true, false]
                    && third["error"]["status"] == 429
                    && third["error"]["type"] == "RateLimitError"
                    && third["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("spend_limit_reached") || m.contains("tokens"))
                    && after - before == 2
                    && row,
                format!("{lines:?}; forwarded {}; row {row}", after - before),
            ));
        }
        Err(e) => out.push((
            "forward spend limit: SDK client".into(),
            false,
            format!("{e:#}"),
        )),
    }
    out
}
