//! Canned answers for the forward-proxy suite: a client names the answer
//! it wants in its last user message (`agentd-script: {json}`), and the
//! server plays it in the addressed API's real wire format — OpenAI Chat
//! Completions, OpenAI Responses, Anthropic Messages or Gemini, streamed or
//! not — including the
//! failures a proxy must survive (an error status that quotes the key the
//! server received, a connection reset mid-stream, a stall, a body that is
//! not JSON, tool arguments that are not JSON).
//!
//! Directive fields: `text`; `calls` (`[{name, input}]`, or `{name, raw}`
//! for argument text as is); `fail` (an HTTP status; `echo_key` quotes
//! the key masked, as OpenAI's 401s do); `reset`, `stall` (after the first
//! events); `garbage` (a 200 whose body is not JSON).
use std::time::Duration;

use axum::{body::Body, http::HeaderMap, response::Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::sse;

/// Answers played so far: tool-call ids are unique per answer, as a real
/// model's are (agentd decides each id once per active message).
static ANSWERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Prefix of a directive in the last user message.
pub const PREFIX: &str = "agentd-script:";

/// One tool call the answer makes.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// Tool name.
    pub name: String,
    /// Input object (serialized as the arguments).
    #[serde(default)]
    pub input: Value,
    /// Argument text sent as is instead of `input` (may be invalid JSON).
    #[serde(default)]
    pub raw: Option<String>,
}

impl Call {
    fn arguments(&self) -> String {
        self.raw.clone().unwrap_or_else(|| match &self.input {
            Value::Null => "{}".into(),
            v => v.to_string(),
        })
    }
}

/// What to answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Directive {
    /// Text before any calls.
    #[serde(default)]
    pub text: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub calls: Vec<Call>,
    /// Answer this HTTP status with the provider's error body.
    #[serde(default)]
    pub fail: Option<u16>,
    /// The error quotes the received key, masked.
    #[serde(default)]
    pub echo_key: bool,
    /// Reset the connection after the first events of a stream.
    #[serde(default)]
    pub reset: bool,
    /// Stop sending after the first events of a stream.
    #[serde(default)]
    pub stall: bool,
    /// A 200 whose body is not JSON.
    #[serde(default)]
    pub garbage: bool,
}

/// Which wire format to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions.
    Chat,
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses.
    Responses,
    /// Gemini: `stream` for `:streamGenerateContent`, `sse` with `alt=sse`.
    Gemini {
        /// `:streamGenerateContent`.
        stream: bool,
        /// `?alt=sse` (else a stream is one JSON array).
        sse: bool,
    },
}

/// The directive in a request's last user message, if any (Chat and
/// Messages `messages`, Responses `input`, Gemini `contents`).
pub fn directive(body: &Value) -> Option<Directive> {
    let text = |content: &Value| match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    };
    let text = if let Some(msgs) = body["messages"].as_array() {
        text(&msgs.iter().rev().find(|m| m["role"] == "user")?["content"])?
    } else if let Some(s) = body["input"].as_str() {
        s.to_owned()
    } else if let Some(items) = body["input"].as_array() {
        text(&items.iter().rev().find(|m| m["role"] == "user")?["content"])?
    } else {
        let contents = body["contents"].as_array()?;
        text(&contents.iter().rev().find(|m| m["role"] == "user")?["parts"])?
    };
    let rest = text.trim().strip_prefix(PREFIX)?;
    serde_json::from_str(rest.trim()).ok()
}

/// The key the client (the proxy) presented.
fn presented_key(headers: &HeaderMap) -> String {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string());
    auth.or_else(|| {
        ["x-api-key", "x-goog-api-key"]
            .iter()
            .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
            .map(str::to_string)
    })
    .unwrap_or_default()
}

/// Plays `d` in `wire`'s format.
pub fn respond(wire: Wire, d: &Directive, body: &Value, headers: &HeaderMap) -> Response {
    let model = body["model"].as_str().unwrap_or("model").to_string();
    if let Some(status) = d.fail {
        let key = presented_key(headers);
        let masked = if d.echo_key && key.len() > 8 {
            format!(
                "Incorrect API key provided: {}{}{}",
                &key[..3],
                "*".repeat(key.len() - 7),
                &key[key.len() - 4..]
            )
        } else {
            "upstream failure".into()
        };
        let v = match wire {
            Wire::Anthropic => {
                json!({ "type": "error", "error": { "type": "api_error", "message": masked } })
            }
            Wire::Gemini { .. } => {
                json!({ "error": { "code": status, "message": masked, "status": "UNAVAILABLE" } })
            }
            Wire::Chat | Wire::Responses => {
                json!({ "error": { "message": masked, "type": "server_error", "param": null, "code": "upstream" } })
            }
        };
        return sse::json(status, &v);
    }
    if d.garbage {
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from("<html>not json"))
            .unwrap_or_default();
    }
    let n = ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stream = match wire {
        Wire::Gemini { stream, .. } => stream,
        _ => body["stream"] == true,
    };
    if !stream {
        let v = match wire {
            Wire::Anthropic => anthropic_message(d, &model, n),
            Wire::Chat => chat_completion(d, &model, n),
            Wire::Responses => responses_object(d, &model, n, "completed"),
            Wire::Gemini { .. } => gemini_chunk(gemini_parts(d, n), true),
        };
        return sse::json(200, &v);
    }
    let events = match wire {
        Wire::Anthropic => anthropic_events(d, &model, n),
        Wire::Chat => chat_chunks(
            d,
            &model,
            n,
            body["stream_options"]["include_usage"] == true,
        ),
        Wire::Responses => responses_events(d, &model, n),
        Wire::Gemini { sse: true, .. } => gemini_chunks(d, n),
        Wire::Gemini { sse: false, .. } => {
            // Without alt=sse: one JSON array of the same chunks.
            let arr: Vec<Value> = gemini_chunks(d, n)
                .into_iter()
                .filter_map(|(_, c)| serde_json::from_str(&c).ok())
                .collect();
            return sse::json(200, &Value::Array(arr));
        }
    };
    let mut bytes: Vec<Vec<u8>> = events
        .into_iter()
        .map(|(name, data)| {
            let mut s = String::new();
            if !name.is_empty() {
                s.push_str(&format!("event: {name}\n"));
            }
            s.push_str(&format!("data: {data}\n\n"));
            s.into_bytes()
        })
        .collect();
    if d.reset || d.stall {
        bytes.truncate(3);
    }
    let first: Vec<Result<Vec<u8>, std::io::Error>> = bytes.into_iter().map(Ok).collect();
    let tail: futures_util::stream::BoxStream<'static, Result<Vec<u8>, std::io::Error>> = if d.reset
    {
        Box::pin(futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(std::io::Error::other("reset by the script"))
        }))
    } else if d.stall {
        Box::pin(futures_util::stream::pending())
    } else {
        Box::pin(futures_util::stream::empty())
    };
    use futures_util::StreamExt as _;
    let body = Body::from_stream(futures_util::stream::iter(first).chain(tail));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_default()
}

fn chat_completion(d: &Directive, model: &str, n: usize) -> Value {
    let tool_calls: Vec<Value> = d
        .calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({ "id": format!("call_fwd_{n}_{i}"), "type": "function",
            "function": { "name": c.name, "arguments": c.arguments() } })
        })
        .collect();
    let mut message = json!({ "role": "assistant", "content": d.text, "refusal": null });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    json!({ "id": "chatcmpl-fwd", "object": "chat.completion", "created": 1_700_000_000,
        "model": model, "choices": [{ "index": 0, "message": message, "logprobs": null,
            "finish_reason": if d.calls.is_empty() { "stop" } else { "tool_calls" } }],
        "usage": { "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 } })
}

fn chat_chunks(d: &Directive, model: &str, n: usize, usage: bool) -> Vec<(&'static str, String)> {
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": "chatcmpl-fwd", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{ "index": 0, "delta": delta, "logprobs": null,
                "finish_reason": finish }] })
        .to_string()
    };
    let mut out = vec![(
        "",
        chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
    )];
    if let Some(t) = &d.text {
        // Two pieces: text passes as it comes.
        let mid = t
            .char_indices()
            .nth(t.chars().count() / 2)
            .map_or(0, |(i, _)| i);
        for piece in [&t[..mid], &t[mid..]] {
            out.push(("", chunk(json!({ "content": piece }), Value::Null)));
        }
    }
    for (i, c) in d.calls.iter().enumerate() {
        out.push((
            "",
            chunk(
                json!({ "tool_calls": [{ "index": i, "id": format!("call_fwd_{n}_{i}"), "type": "function",
                    "function": { "name": c.name, "arguments": "" } }] }),
                Value::Null,
            ),
        ));
        // Arguments in three fragments, as models stream them.
        let args = c.arguments();
        let cuts = [0, args.len() / 3, 2 * args.len() / 3, args.len()];
        for w in cuts.windows(2) {
            let (mut a, mut b) = (w[0], w[1]);
            while !args.is_char_boundary(a) {
                a -= 1;
            }
            while !args.is_char_boundary(b) {
                b -= 1;
            }
            out.push((
                "",
                chunk(
                    json!({ "tool_calls": [{ "index": i, "function": { "arguments": &args[a..b] } }] }),
                    Value::Null,
                ),
            ));
        }
    }
    let finish = if d.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push(("", chunk(json!({}), json!(finish))));
    if usage {
        out.push((
            "",
            json!({ "id": "chatcmpl-fwd", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [],
                "usage": { "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 } })
            .to_string(),
        ));
    }
    out.push(("", "[DONE]".into()));
    out
}

fn anthropic_message(d: &Directive, model: &str, n: usize) -> Value {
    let mut content = Vec::new();
    if let Some(t) = &d.text {
        content.push(json!({ "type": "text", "text": t }));
    }
    for (i, c) in d.calls.iter().enumerate() {
        let input: Value = serde_json::from_str(&c.arguments()).unwrap_or(json!({}));
        content.push(
            json!({ "type": "tool_use", "id": format!("toolu_fwd_{n}_{i}"),
            "name": c.name, "input": input }),
        );
    }
    json!({ "id": "msg_fwd", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": if d.calls.is_empty() { "end_turn" } else { "tool_use" },
        "stop_sequence": null, "usage": { "input_tokens": 13, "output_tokens": 9 } })
}

fn anthropic_events(d: &Directive, model: &str, n: usize) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "message_start",
        json!({ "type": "message_start", "message": { "id": "msg_fwd", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": { "input_tokens": 13, "output_tokens": 1 } } })
        .to_string(),
    )];
    let mut index = 0;
    if let Some(t) = &d.text {
        out.push((
            "content_block_start",
            json!({ "type": "content_block_start", "index": index,
            "content_block": { "type": "text", "text": "" } })
            .to_string(),
        ));
        out.push(("ping", json!({ "type": "ping" }).to_string()));
        out.push((
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index,
            "delta": { "type": "text_delta", "text": t } })
            .to_string(),
        ));
        out.push((
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }).to_string(),
        ));
        index += 1;
    }
    for (i, c) in d.calls.iter().enumerate() {
        out.push(("content_block_start", json!({ "type": "content_block_start", "index": index,
            "content_block": { "type": "tool_use", "id": format!("toolu_fwd_{n}_{i}"), "name": c.name,
                "input": {} } }).to_string()));
        let args = c.arguments();
        let mid = args.len() / 2;
        let mid = (0..=mid)
            .rev()
            .find(|m| args.is_char_boundary(*m))
            .unwrap_or(0);
        for piece in [&args[..mid], &args[mid..]] {
            out.push((
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index,
                "delta": { "type": "input_json_delta", "partial_json": piece } })
                .to_string(),
            ));
        }
        out.push((
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }).to_string(),
        ));
        index += 1;
    }
    out.push((
        "message_delta",
        json!({ "type": "message_delta",
        "delta": { "stop_reason": if d.calls.is_empty() { "end_turn" } else { "tool_use" },
            "stop_sequence": null }, "usage": { "output_tokens": 9 } })
        .to_string(),
    ));
    out.push((
        "message_stop",
        json!({ "type": "message_stop" }).to_string(),
    ));
    out
}

/// The items of a Responses answer: a message with the text, then one
/// `function_call` per call.
fn responses_items(d: &Directive, n: usize) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(t) = &d.text {
        items.push(
            json!({ "type": "message", "id": format!("msg_fwd_{n}"), "role": "assistant",
            "status": "completed",
            "content": [{ "type": "output_text", "text": t, "annotations": [] }] }),
        );
    }
    for (i, c) in d.calls.iter().enumerate() {
        items.push(
            json!({ "type": "function_call", "id": format!("fc_fwd_{n}_{i}"),
            "call_id": format!("call_fwd_{n}_{i}"), "name": c.name, "arguments": c.arguments(),
            "status": "completed" }),
        );
    }
    items
}

fn responses_object(d: &Directive, model: &str, n: usize, status: &str) -> Value {
    let done = status == "completed";
    json!({ "id": format!("resp_fwd_{n}"), "object": "response", "created_at": 1_700_000_000,
        "status": status, "model": model, "error": null, "incomplete_details": null,
        "output": if done { Value::Array(responses_items(d, n)) } else { json!([]) },
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": if done { json!({ "input_tokens": 17, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": 6, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": 23 }) } else { Value::Null } })
}

/// A Responses stream as the API sends it: numbered events, text in two
/// deltas, each call's arguments in three deltas, the final response.
fn responses_events(d: &Directive, model: &str, n: usize) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |name: &'static str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(out.len());
        out.push((name, v.to_string()));
    };
    push(
        "response.created",
        json!({ "response": responses_object(d, model, n, "in_progress") }),
    );
    push(
        "response.in_progress",
        json!({ "response": responses_object(d, model, n, "in_progress") }),
    );
    let items = responses_items(d, n);
    for (oi, item) in items.iter().enumerate() {
        let id = item["id"].as_str().unwrap_or_default();
        if item["type"] == "message" {
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            push(
                "response.output_item.added",
                json!({ "output_index": oi, "item": { "type": "message", "id": id,
                    "role": "assistant", "status": "in_progress", "content": [] } }),
            );
            push(
                "response.content_part.added",
                json!({ "item_id": id, "output_index": oi, "content_index": 0,
                    "part": { "type": "output_text", "text": "", "annotations": [] } }),
            );
            let mid = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            for piece in [&text[..mid], &text[mid..]] {
                push(
                    "response.output_text.delta",
                    json!({ "item_id": id, "output_index": oi, "content_index": 0,
                        "delta": piece, "logprobs": [] }),
                );
            }
            push(
                "response.output_text.done",
                json!({ "item_id": id, "output_index": oi, "content_index": 0,
                    "text": text, "logprobs": [] }),
            );
            push(
                "response.content_part.done",
                json!({ "item_id": id, "output_index": oi, "content_index": 0,
                    "part": item["content"][0] }),
            );
        } else {
            let mut open = item.clone();
            open["arguments"] = json!("");
            open["status"] = json!("in_progress");
            push(
                "response.output_item.added",
                json!({ "output_index": oi, "item": open }),
            );
            let args = item["arguments"].as_str().unwrap_or_default();
            let cuts = [0, args.len() / 3, 2 * args.len() / 3, args.len()];
            for w in cuts.windows(2) {
                let (mut a, mut b) = (w[0], w[1]);
                while !args.is_char_boundary(a) {
                    a -= 1;
                }
                while !args.is_char_boundary(b) {
                    b -= 1;
                }
                push(
                    "response.function_call_arguments.delta",
                    json!({ "item_id": id, "output_index": oi, "delta": &args[a..b] }),
                );
            }
            push(
                "response.function_call_arguments.done",
                json!({ "item_id": id, "output_index": oi, "arguments": args }),
            );
        }
        push(
            "response.output_item.done",
            json!({ "output_index": oi, "item": item }),
        );
    }
    push(
        "response.completed",
        json!({ "response": responses_object(d, model, n, "completed") }),
    );
    out
}

/// The parts of a Gemini answer: the text, then one `functionCall` each.
fn gemini_parts(d: &Directive, n: usize) -> Vec<Value> {
    let mut parts = Vec::new();
    if let Some(t) = &d.text {
        parts.push(json!({ "text": t }));
    }
    for (i, c) in d.calls.iter().enumerate() {
        let args: Value = serde_json::from_str(&c.arguments()).unwrap_or(json!({}));
        parts.push(
            json!({ "functionCall": { "id": format!("gfc_{n}_{i}"), "name": c.name,
            "args": args } }),
        );
    }
    parts
}

fn gemini_chunk(parts: Vec<Value>, last: bool) -> Value {
    let mut cand = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
    if last {
        cand["finishReason"] = json!("STOP");
    }
    json!({ "candidates": [cand],
        "usageMetadata": { "promptTokenCount": 19, "candidatesTokenCount": 4, "totalTokenCount": 23 },
        "modelVersion": "gemini-fwd", "responseId": "gresp" })
}

/// A Gemini stream: the text in its own chunk, then the calls (whole, as
/// Gemini sends them) with the finish reason.
fn gemini_chunks(d: &Directive, n: usize) -> Vec<(&'static str, String)> {
    let mut parts = gemini_parts(d, n);
    let mut out = Vec::new();
    if d.text.is_some() && parts.len() > 1 {
        let text = parts.remove(0);
        out.push(("", gemini_chunk(vec![text], false).to_string()));
    }
    out.push(("", gemini_chunk(parts, true).to_string()));
    out
}
