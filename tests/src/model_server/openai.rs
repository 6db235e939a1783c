//! OpenAI Responses API, streamed (what Codex speaks): `POST /v1/responses`
//! answered with response.created, response.output_item.added/done (a
//! `function_call` or an assistant `message`) and response.completed.
use axum::response::Response;
use serde_json::{json, Value};

use super::{sse, Script, ToolResult, Turn};

/// Codex's shell tool.
pub const SHELL_TOOL: &str = "exec_command";

/// The tool results a Responses request carries (`function_call_output` items).
pub fn tool_results(body: &Value) -> Vec<ToolResult> {
    body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| {
            item["type"] == "function_call_output" || item["type"] == "custom_tool_call_output"
        })
        .map(|item| ToolResult {
            call: item["call_id"].as_str().unwrap_or("").to_string(),
            text: match &item["output"] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            },
            is_error: false,
        })
        .collect()
}

/// Answers a Responses request with the script's next turn.
pub fn respond(script: &Script, body: &Value) -> Response {
    let n = tool_results(body).len();
    sse::stream(&events(&script.turn(n), n))
}

/// The SSE events for `turn` (the `n`-th, which names ids).
pub fn events(turn: &Turn, n: usize) -> Vec<(&'static str, Value)> {
    let id = format!("resp_agentd_{n}");
    let item = match turn {
        Turn::Text(text) => json!({
            "type": "message", "id": format!("msg_agentd_{n}"), "role": "assistant",
            "status": "completed",
            "content": [{ "type": "output_text", "text": text, "annotations": [] }] }),
        Turn::Shell(cmd) => function_call(n, SHELL_TOOL, &json!({ "cmd": cmd })),
        Turn::Tool { name, input } => function_call(n, name, input),
    };
    let usage = json!({
        "input_tokens": 10, "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": 5, "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": 15 });
    vec![
        (
            "response.created",
            json!({ "type": "response.created", "response": { "id": id, "status": "in_progress", "output": [] } }),
        ),
        (
            "response.output_item.added",
            json!({ "type": "response.output_item.added", "output_index": 0, "item": item }),
        ),
        (
            "response.output_item.done",
            json!({ "type": "response.output_item.done", "output_index": 0, "item": item }),
        ),
        (
            "response.completed",
            json!({ "type": "response.completed", "response": {
                "id": id, "status": "completed", "output": [item], "usage": usage } }),
        ),
    ]
}

fn function_call(n: usize, name: &str, args: &Value) -> Value {
    json!({ "type": "function_call", "id": format!("fc_agentd_{n}"),
        "call_id": format!("call_agentd_{n}"), "name": name,
        "arguments": args.to_string(), "status": "completed" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_turn_is_an_exec_command_function_call() {
        let ev = events(&Turn::Shell("mailctl reset --all".into()), 0);
        let names: Vec<&str> = ev.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.output_item.added",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let item = &ev[2].1["item"];
        assert_eq!(item["name"], "exec_command");
        assert_eq!(item["call_id"], "call_agentd_0");
        let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["cmd"], "mailctl reset --all");
        assert_eq!(ev[3].1["response"]["id"], "resp_agentd_0");
    }

    #[test]
    fn text_turn_is_an_assistant_message() {
        let ev = events(&Turn::Text("fin".into()), 1);
        assert_eq!(ev[2].1["item"]["content"][0]["text"], "fin");
    }

    #[test]
    fn function_call_outputs_are_tool_results() {
        let body = json!({ "input": [
            { "type": "message", "role": "user", "content": [] },
            { "type": "function_call", "call_id": "call_0" },
            { "type": "function_call_output", "call_id": "call_0", "output": "denied" },
        ]});
        let r = tool_results(&body);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].call.as_str(), r[0].text.as_str()),
            ("call_0", "denied")
        );
    }
}
