//! Gemini API (what Gemini CLI speaks): a routing `:generateContent` call
//! whose answer is JSON `{complexity_reasoning, complexity_score}` (and other
//! JSON side calls, answered from their schema), then the conversation on
//! `:streamGenerateContent?alt=sse`, answered as `data:` lines of
//! GenerateContentResponse chunks.
use axum::response::Response;
use serde_json::{json, Value};

use super::{sse, Script, ToolResult, Turn};

/// Gemini CLI's shell tool.
pub const SHELL_TOOL: &str = "run_shell_command";

/// The tool results a request carries (`functionResponse` parts).
pub fn tool_results(body: &Value) -> Vec<ToolResult> {
    let mut out = Vec::new();
    for content in body["contents"].as_array().into_iter().flatten() {
        for part in content["parts"].as_array().into_iter().flatten() {
            let fr = &part["functionResponse"];
            if fr.is_null() {
                continue;
            }
            let response = &fr["response"];
            let text = response["output"]
                .as_str()
                .or_else(|| response["error"].as_str())
                .map(String::from)
                .unwrap_or_else(|| response.to_string());
            out.push(ToolResult {
                call: fr["id"]
                    .as_str()
                    .or_else(|| fr["name"].as_str())
                    .unwrap_or("")
                    .to_string(),
                is_error: !response["error"].is_null(),
                text,
            });
        }
    }
    out
}

/// Answers a Gemini request: JSON side calls by their schema, the
/// conversation with the script's next turn.
pub fn respond(script: &Script, path: &str, body: &Value) -> Response {
    if path.contains(":generateContent") {
        return sse::json(
            200,
            &chunk(vec![json!({ "text": side_answer(body).to_string() })]),
        );
    }
    let n = tool_results(body).len();
    let parts = match script.turn(n) {
        Turn::Text(text) => vec![json!({ "text": text })],
        Turn::Shell(cmd) => vec![json!({ "functionCall": {
            "id": format!("call_agentd_{n}"), "name": SHELL_TOOL,
            "args": { "command": cmd, "description": "run it" } } })],
        Turn::Tool { name, input } => vec![json!({ "functionCall": {
            "id": format!("call_agentd_{n}"), "name": name, "args": input } })],
    };
    sse::stream(&[("", chunk(parts))])
}

/// The JSON a non-streamed side call expects, read from its response schema:
/// the model router wants a complexity verdict, the next-speaker check a speaker.
pub fn side_answer(body: &Value) -> Value {
    let schema = body["generationConfig"].to_string() + &body["config"].to_string();
    if schema.contains("complexity_score") {
        json!({ "complexity_reasoning": "a single scripted step", "complexity_score": 10 })
    } else if schema.contains("next_speaker") {
        json!({ "reasoning": "the scripted turn is complete", "next_speaker": "user" })
    } else {
        json!({})
    }
}

fn chunk(parts: Vec<Value>) -> Value {
    json!({
        "candidates": [{ "content": { "role": "model", "parts": parts },
            "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15 },
        "modelVersion": "gemini-scripted"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_call_gets_a_complexity_verdict() {
        let body = json!({ "generationConfig": { "responseJsonSchema": {
            "properties": { "complexity_reasoning": {}, "complexity_score": {} } } } });
        let v = side_answer(&body);
        assert_eq!(v["complexity_score"], 10);
        assert!(v["complexity_reasoning"].is_string());
    }

    #[test]
    fn function_responses_are_tool_results() {
        let body = json!({ "contents": [
            { "role": "user", "parts": [{ "text": "go" }] },
            { "role": "model", "parts": [{ "functionCall": { "name": "run_shell_command" } }] },
            { "role": "user", "parts": [{ "functionResponse": { "id": "call_agentd_0",
                "name": "run_shell_command", "response": { "error": "blocked by hook" } } }] },
        ]});
        let r = tool_results(&body);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].call, "call_agentd_0");
        assert_eq!(r[0].text, "blocked by hook");
        assert!(r[0].is_error);
    }

    #[test]
    fn shell_turn_streams_a_function_call() {
        let c = chunk(vec![json!({ "functionCall": { "name": SHELL_TOOL } })]);
        assert_eq!(
            c["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
            "run_shell_command"
        );
        assert_eq!(c["candidates"][0]["finishReason"], "STOP");
    }
}
