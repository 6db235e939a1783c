//! Tools the provider runs itself, off-host and beyond the kernel's reach:
//! OpenAI's web search and remote MCP servers, Anthropic's web search, web
//! fetch, code execution and `mcp_servers`, Gemini's Google Search, URL
//! context and code execution. By the time their calls show in an answer
//! they have already run, so they are decided in the *request*: each one
//! the request declares becomes a tool call (named as the runtime's own
//! tool of that kind, so `runtime::mapping` and the policy see it like any
//! other) and is kept if allowed, stripped if not — or every one is
//! stripped (`provider_tools = "strip"`). Pure: finding and stripping.
use serde_json::{json, Value};

use super::{FoundCall, Provider};

pub use crate::config::ProviderTools;

/// Where a provider-run tool sits in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// `tools[i]` (the whole entry).
    Tool(usize),
    /// `tools[i][key]` (Gemini: one entry may hold several tools).
    ToolKey(usize, String),
    /// `mcp_servers[i]` (Anthropic).
    McpServer(usize),
    /// The top-level field (Chat Completions' `web_search_options`).
    Field(&'static str),
}

/// One provider-run tool a request declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTool {
    /// Where it is.
    pub at: Locator,
    /// The provider's name for it (`web_search`, `mcp`, `url_context`…).
    pub kind: String,
    /// The call it is decided as.
    pub call: FoundCall,
}

fn tool(at: Locator, kind: &str, name: &str, input: Value) -> ProviderTool {
    ProviderTool {
        at,
        kind: kind.to_owned(),
        call: FoundCall {
            id: String::new(),
            name: name.to_owned(),
            arguments: input.to_string(),
        },
    }
}

/// An MCP tool name for a remote server (`mcp__<label>__*`: every tool).
fn mcp_name(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    format!(
        "mcp__{}__*",
        if clean.is_empty() { "remote" } else { &clean }
    )
}

/// The provider-run tools a request declares, in request order.
pub fn find(provider: Provider, body: &Value) -> Vec<ProviderTool> {
    match provider {
        Provider::OpenAiChat => openai_chat_tools(body),
        Provider::OpenAiResponses => openai_responses_tools(body),
        Provider::Anthropic => anthropic_tools(body),
        Provider::Gemini => gemini_tools(body),
    }
}

/// The entries of the request's `tools` list (none when it is absent or
/// not a list), with their positions: a Locator points back at them.
fn tool_entries(body: &Value) -> impl Iterator<Item = (usize, &Value)> {
    body["tools"].as_array().into_iter().flatten().enumerate()
}

/// Chat Completions has no tools list entry for search: a non-null
/// `web_search_options` field turns it on.
fn openai_chat_tools(body: &Value) -> Vec<ProviderTool> {
    let mut out = Vec::new();
    if body.get("web_search_options").is_some_and(|v| !v.is_null()) {
        out.push(tool(
            Locator::Field("web_search_options"),
            "web_search",
            "web_search",
            json!({}),
        ));
    }
    out
}

/// The Responses API's hosted tools: search, remote MCP servers, and the
/// other built-ins named by their own type.
fn openai_responses_tools(body: &Value) -> Vec<ProviderTool> {
    let mut out = Vec::new();
    for (i, t) in tool_entries(body) {
        let ty = t["type"].as_str().unwrap_or_default();
        if ty.starts_with("web_search") {
            out.push(tool(Locator::Tool(i), ty, "web_search", json!({})));
        } else if ty == "mcp" {
            let label = t["server_label"].as_str().unwrap_or_default();
            out.push(tool(
                Locator::Tool(i),
                ty,
                &mcp_name(label),
                json!({ "server_url": t["server_url"], "connector_id": t["connector_id"] }),
            ));
        } else if matches!(
            ty,
            "file_search" | "code_interpreter" | "image_generation" | "tool_search"
        ) {
            out.push(tool(Locator::Tool(i), ty, ty, json!({})));
        }
    }
    out
}

/// Anthropic's server tools (versioned types such as `web_search_20250305`)
/// and the MCP connector's `mcp_servers`, listed after the tools.
fn anthropic_tools(body: &Value) -> Vec<ProviderTool> {
    let mut out = Vec::new();
    for (i, t) in tool_entries(body) {
        let ty = t["type"].as_str().unwrap_or_default();
        let name = if ty.starts_with("web_search_") {
            "WebSearch"
        } else if ty.starts_with("web_fetch_") {
            "WebFetch"
        } else if ty.starts_with("code_execution_") {
            "code_execution"
        } else {
            continue;
        };
        out.push(tool(Locator::Tool(i), ty, name, json!({})));
    }
    for (i, s) in body["mcp_servers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let label = s["name"].as_str().unwrap_or_default();
        out.push(tool(
            Locator::McpServer(i),
            "mcp_server",
            &mcp_name(label),
            json!({ "server_url": s["url"] }),
        ));
    }
    out
}

/// Gemini names a built-in tool by a key of a `tools` entry (either case
/// spelling is accepted by the API), so one entry can hold several.
fn gemini_tools(body: &Value) -> Vec<ProviderTool> {
    let mut out = Vec::new();
    for (i, t) in tool_entries(body) {
        let Some(obj) = t.as_object() else { continue };
        for key in obj.keys() {
            let name = match key.as_str() {
                "googleSearch"
                | "google_search"
                | "googleSearchRetrieval"
                | "google_search_retrieval" => "google_web_search",
                "urlContext" | "url_context" => "web_fetch",
                "codeExecution" | "code_execution" => "code_execution",
                "googleMaps" | "google_maps" => "google_maps",
                "fileSearch" | "file_search" => "file_search",
                "computerUse" | "computer_use" => "computer_use",
                // Client tools (functionDeclarations) and unknown keys.
                _ => continue,
            };
            out.push(tool(Locator::ToolKey(i, key.clone()), key, name, json!({})));
        }
    }
    out
}

/// Removes the tools at `gone` from the request (an emptied `tools` or
/// `mcp_servers` list is removed, as an API refuses an empty one). The
/// body is walked with `get_mut`: a request of any shape (a JSON string, a
/// `tools` that is not a list) is left as it is rather than indexed into.
pub fn strip(body: &mut Value, gone: &[&Locator]) {
    let mut tools: Vec<usize> = Vec::new();
    let mut servers: Vec<usize> = Vec::new();
    for at in gone {
        match at {
            Locator::Tool(i) => tools.push(*i),
            Locator::McpServer(i) => servers.push(*i),
            Locator::ToolKey(i, key) => {
                let entry = body.get_mut("tools").and_then(|t| t.get_mut(*i));
                if let Some(o) = entry.and_then(Value::as_object_mut) {
                    o.remove(key);
                    if o.is_empty() {
                        tools.push(*i);
                    }
                }
            }
            Locator::Field(f) => {
                if let Some(o) = body.as_object_mut() {
                    o.remove(*f);
                }
            }
        }
    }
    for (field, mut idx) in [("tools", tools), ("mcp_servers", servers)] {
        idx.sort_unstable();
        idx.dedup();
        if idx.is_empty() {
            continue;
        }
        let Some(list) = body.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for i in idx.into_iter().rev() {
            if i < list.len() {
                list.remove(i);
            }
        }
        if list.is_empty() {
            if let Some(o) = body.as_object_mut() {
                o.remove(field);
                // A tool choice naming no tool left would be refused.
                if field == "tools" {
                    o.remove("tool_choice");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_responses_web_search_and_remote_mcp() {
        let mut b = json!({ "tools": [
            { "type": "function", "name": "exec_command" },
            { "type": "web_search" },
            { "type": "mcp", "server_label": "deep wiki", "server_url": "https://mcp.example/sse" }
        ] });
        let found = find(Provider::OpenAiResponses, &b);
        let names: Vec<&str> = found.iter().map(|t| t.call.name.as_str()).collect();
        assert_eq!(names, ["web_search", "mcp__deep-wiki__*"]);
        assert!(found[1].call.arguments.contains("mcp.example"));
        strip(&mut b, &[&found[0].at, &found[1].at]);
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(b["tools"][0]["name"], "exec_command");
    }

    #[test]
    fn anthropic_server_tools_and_mcp_servers() {
        let mut b = json!({ "tools": [
            { "type": "web_fetch_20250910", "name": "web_fetch" },
            { "name": "Bash", "input_schema": {} },
            { "type": "bash_20250124", "name": "bash" }
        ], "mcp_servers": [{ "type": "url", "url": "https://x.example/mcp", "name": "x" }] });
        let found = find(Provider::Anthropic, &b);
        let names: Vec<&str> = found.iter().map(|t| t.call.name.as_str()).collect();
        assert_eq!(names, ["WebFetch", "mcp__x__*"]);
        let all: Vec<&Locator> = found.iter().map(|t| &t.at).collect();
        strip(&mut b, &all);
        assert_eq!(b["tools"].as_array().unwrap().len(), 2);
        assert!(b.get("mcp_servers").is_none());
    }

    #[test]
    fn gemini_keys_in_one_entry() {
        let mut b = json!({ "tools": [
            { "functionDeclarations": [{ "name": "run_shell_command" }], "googleSearch": {} },
            { "url_context": {} }
        ] });
        let found = find(Provider::Gemini, &b);
        let names: Vec<&str> = found.iter().map(|t| t.call.name.as_str()).collect();
        assert_eq!(names, ["google_web_search", "web_fetch"]);
        let all: Vec<&Locator> = found.iter().map(|t| &t.at).collect();
        strip(&mut b, &all);
        assert_eq!(
            b["tools"],
            json!([{ "functionDeclarations": [{ "name": "run_shell_command" }] }])
        );
    }

    #[test]
    fn chat_web_search_options_and_emptied_lists() {
        let mut b = json!({ "web_search_options": {}, "messages": [] });
        let found = find(Provider::OpenAiChat, &b);
        assert_eq!(found.len(), 1);
        strip(&mut b, &[&found[0].at]);
        assert!(b.get("web_search_options").is_none());
        let mut b = json!({ "tools": [{ "type": "web_search" }], "tool_choice": "required" });
        let found = find(Provider::OpenAiResponses, &b);
        strip(&mut b, &[&found[0].at]);
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none());
    }

    #[test]
    fn requests_of_the_wrong_shape_are_left_as_they_are() {
        // Found by the forward_request fuzz target: a body that is a JSON
        // string was indexed mutably and panicked.
        let locators = [
            Locator::Tool(0),
            Locator::ToolKey(0, "googleSearch".into()),
            Locator::McpServer(1),
            Locator::Field("web_search_options"),
        ];
        let all: Vec<&Locator> = locators.iter().collect();
        for body in [
            json!("des{arc%_20250303"),
            json!(7),
            json!([1, 2]),
            json!({ "tools": "not a list", "mcp_servers": { "a": 1 } }),
            json!({ "tools": [3, "x"] }),
        ] {
            let mut b = body.clone();
            strip(&mut b, &all);
            strip(&mut b, &[]);
            if !body.is_object() {
                assert_eq!(b, body);
            }
        }
        // Nothing to strip leaves even an empty list alone.
        let mut b = json!({ "tools": [], "tool_choice": "auto" });
        strip(&mut b, &[]);
        assert_eq!(b, json!({ "tools": [], "tool_choice": "auto" }));
    }
}
