//! Anthropic Messages API, streamed (what Claude Code speaks): `POST
//! /v1/messages?beta=true` with `stream: true`, answered with the SSE
//! sequence message_start, content_block_start/delta/stop, message_delta
//! (stop_reason), message_stop.
use axum::response::Response;
use serde_json::{json, Value};

use super::{sse, Script, ToolResult, Turn};

/// The tool results a Messages request carries (`tool_result` blocks).
pub fn tool_results(body: &Value) -> Vec<ToolResult> {
    let mut out = Vec::new();
    for msg in body["messages"].as_array().into_iter().flatten() {
        for block in msg["content"].as_array().into_iter().flatten() {
            if block["type"] != "tool_result" {
                continue;
            }
            let text = match &block["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            out.push(ToolResult {
                call: block["tool_use_id"].as_str().unwrap_or("").to_string(),
                text,
                is_error: block["is_error"] == true,
            });
        }
    }
    out
}

/// Answers a Messages request with the script's next turn.
pub fn respond(script: &Script, body: &Value) -> Response {
    let n = tool_results(body).len();
    sse::stream(&events(
        &script.turn(n),
        n,
        body["model"].as_str().unwrap_or("claude"),
    ))
}

/// The SSE events for `turn` (the `n`-th, which names the tool-use id).
pub fn events(turn: &Turn, n: usize, model: &str) -> Vec<(&'static str, Value)> {
    let (block, delta, stop_reason) = match turn {
        Turn::Text(text) => (
            json!({ "type": "text", "text": "" }),
            json!({ "type": "text_delta", "text": text }),
            "end_turn",
        ),
        Turn::Shell(cmd) => tool_use(
            n,
            "Bash",
            &json!({ "command": cmd, "description": "run it" }),
        ),
        Turn::Tool { name, input } => tool_use(n, name, input),
    };
    vec![
        (
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": format!("msg_agentd_{n}"), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 10, "output_tokens": 1 } } }),
        ),
        (
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": block }),
        ),
        (
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        ),
        (
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 0 }),
        ),
        (
            "message_delta",
            json!({ "type": "message_delta",
                "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                "usage": { "output_tokens": 5 } }),
        ),
        ("message_stop", json!({ "type": "message_stop" })),
    ]
}

fn tool_use(n: usize, name: &str, input: &Value) -> (Value, Value, &'static str) {
    (
        json!({ "type": "tool_use", "id": format!("toolu_agentd_{n}"), "name": name, "input": {} }),
        json!({ "type": "input_json_delta", "partial_json": input.to_string() }),
        "tool_use",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_turn_is_a_bash_tool_use_in_the_documented_order() {
        let ev = events(&Turn::Shell("mailctl reset --all".into()), 0, "m");
        let names: Vec<&str> = ev.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev[1].1["content_block"]["name"], "Bash");
        assert_eq!(ev[1].1["content_block"]["id"], "toolu_agentd_0");
        let input: Value =
            serde_json::from_str(ev[2].1["delta"]["partial_json"].as_str().unwrap()).unwrap();
        assert_eq!(input["command"], "mailctl reset --all");
        assert_eq!(ev[4].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn text_turn_ends_the_turn() {
        let ev = events(&Turn::Text("ok".into()), 1, "m");
        assert_eq!(ev[2].1["delta"]["type"], "text_delta");
        assert_eq!(ev[4].1["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn tool_results_are_read_in_both_content_forms() {
        let body = json!({ "messages": [
            { "role": "user", "content": "do it" },
            { "role": "assistant", "content": [{ "type": "tool_use", "id": "t0" }] },
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t0",
                "content": "refused by agentd", "is_error": true }] },
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t1",
                "content": [{ "type": "text", "text": "ran" }] }] },
        ]});
        let r = tool_results(&body);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].text, "refused by agentd");
        assert!(r[0].is_error);
        assert_eq!(r[1].call, "t1");
        assert_eq!(r[1].text, "ran");
    }

    #[test]
    fn respond_plays_the_turn_after_the_results_seen() {
        let script = Script(vec![Turn::Shell("x".into()), Turn::Text("fin".into())]);
        let body = json!({ "messages": [{ "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "t0", "content": "out" }] }] });
        let resp = respond(&script, &body);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
    }
}
