//! Anthropic Messages: `tool_use` blocks in a message's `content`, and in
//! a stream (`content_block_start` with a `tool_use` block, its
//! `input_json_delta` fragments, `content_block_stop`); error shapes.
//!
//! A denied block is replaced by a text block at the same index, so the
//! indices of the blocks around it never change; a message left without
//! tool calls stops with `end_turn` instead of `tool_use`.
use serde_json::{json, Value};

use super::{sse, CallVerdict, ErrorKind, FoundCall, OnDeny, Step, StreamRewriter, Usage};

/// Block types that are tool calls (the client's tools, and provider-side
/// tools that act off-host: decided like any tool).
fn is_call(block_type: &str) -> bool {
    matches!(block_type, "tool_use" | "server_tool_use" | "mcp_tool_use")
}

/// Anthropic's error body: `{"type":"error","error":{type, message}}`.
pub fn error_value(kind: ErrorKind, message: &str) -> Value {
    let etype = match kind {
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::BadRequest => "invalid_request_error",
        ErrorKind::Denied => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream => "api_error",
        ErrorKind::Timeout => "timeout_error",
    };
    json!({ "type": "error", "error": { "type": etype, "message": message } })
}

fn call_of(block: &Value) -> FoundCall {
    FoundCall {
        id: block["id"].as_str().unwrap_or_default().to_owned(),
        name: block["name"].as_str().unwrap_or_default().to_owned(),
        arguments: match &block["input"] {
            Value::Null => "{}".into(),
            v => v.to_string(),
        },
    }
}

/// The tool calls of a message, in content order.
pub fn calls(body: &Value) -> Vec<FoundCall> {
    body["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"].as_str().is_some_and(is_call))
        .map(call_of)
        .collect()
}

/// Applies verdicts (order of [`calls`]): a denied block becomes a text
/// block naming the reason.
pub fn rewrite(body: &mut Value, verdicts: &[CallVerdict]) {
    let mut verdicts = verdicts.iter();
    let mut kept = 0;
    if let Some(content) = body.get_mut("content").and_then(Value::as_array_mut) {
        for block in content.iter_mut() {
            if !block["type"].as_str().is_some_and(is_call) {
                continue;
            }
            let v = verdicts.next().cloned().unwrap_or(CallVerdict::Deny {
                reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
                detail: "no decision".into(),
            });
            if v.is_allow() {
                kept += 1;
            } else {
                *block = json!({ "type": "text", "text": v.denial_text(&call_of(block)) });
            }
        }
    }
    if kept == 0 && body["stop_reason"] == "tool_use" {
        body["stop_reason"] = Value::String("end_turn".into());
    }
}

/// A message's token counts.
pub fn usage(body: &Value) -> Usage {
    Usage {
        input_tokens: body["usage"]["input_tokens"].as_u64(),
        output_tokens: body["usage"]["output_tokens"].as_u64(),
    }
}

/// A Messages stream under rewrite.
#[derive(Debug, Default)]
pub struct Stream {
    /// The tool block being read: its index, start block and JSON so far.
    open: Option<(u64, Value, String)>,
    /// A complete block awaiting its verdict: index, call, start block.
    held: Option<(u64, FoundCall, Value)>,
    /// Tool calls passed on in this message.
    kept: usize,
    /// Tool calls replaced in this message.
    replaced: usize,
    usage: Usage,
    model: Option<String>,
    ended: bool,
}

/// An event passed on as it came.
fn pass(raw: Vec<u8>) -> Step {
    Step {
        emit: raw,
        calls: Vec::new(),
    }
}

impl Stream {
    /// A new message: its counts start afresh, its model and input usage
    /// are noted.
    fn message_start(&mut self, data: &Value) {
        self.kept = 0;
        self.replaced = 0;
        if let Some(m) = data["message"]["model"].as_str() {
            self.model = Some(m.to_owned());
        }
        let u = usage(&data["message"]);
        self.usage.input_tokens = u.input_tokens.or(self.usage.input_tokens);
        self.usage.output_tokens = u.output_tokens.or(self.usage.output_tokens);
    }

    /// A tool block opens: held (with its input so far) until it stops.
    fn open_block(&mut self, data: &mut Value) -> Step {
        let index = data["index"].as_u64().unwrap_or(0);
        let block = data["content_block"].take();
        // The start block may already hold the whole input.
        let initial = match &block["input"] {
            Value::Object(m) if !m.is_empty() => block["input"].to_string(),
            _ => String::new(),
        };
        self.open = Some((index, block, initial));
        Step::default()
    }

    /// The open tool block stops: its call is complete, to be decided.
    fn close_block(&mut self) -> Step {
        let Some((index, block, json)) = self.open.take() else {
            return Step::default();
        };
        let call = FoundCall {
            id: block["id"].as_str().unwrap_or_default().to_owned(),
            name: block["name"].as_str().unwrap_or_default().to_owned(),
            arguments: if json.trim().is_empty() {
                "{}".into()
            } else {
                json
            },
        };
        self.held = Some((index, call.clone(), block));
        Step {
            emit: Vec::new(),
            calls: vec![call],
        }
    }

    /// The message's closing counts; a message whose every call was
    /// replaced no longer stops for tool use.
    fn message_delta(&mut self, ev: sse::Event, mut data: Value) -> Step {
        if let Some(n) = data["usage"]["output_tokens"].as_u64() {
            self.usage.output_tokens = Some(n);
        }
        if let Some(n) = data["usage"]["input_tokens"].as_u64() {
            self.usage.input_tokens = Some(n);
        }
        if self.replaced > 0 && self.kept == 0 && data["delta"]["stop_reason"] == "tool_use" {
            data["delta"]["stop_reason"] = Value::String("end_turn".into());
            return pass(sse::render(&ev.event, &data.to_string()));
        }
        pass(ev.raw)
    }
}

impl StreamRewriter for Stream {
    fn push(&mut self, ev: sse::Event) -> Step {
        if self.ended {
            return Step::default();
        }
        if !ev.has_data {
            return pass(ev.raw);
        }
        let Ok(mut data) = serde_json::from_str::<Value>(&ev.data) else {
            if self.open.is_some() {
                // Inside a tool block nothing unparsed passes.
                return Step::default();
            }
            return pass(ev.raw);
        };
        let etype = data["type"].as_str().unwrap_or(&ev.event).to_owned();
        match etype.as_str() {
            "message_start" => {
                self.message_start(&data);
                pass(ev.raw)
            }
            "content_block_start"
                if data["content_block"]["type"].as_str().is_some_and(is_call) =>
            {
                self.open_block(&mut data)
            }
            "content_block_delta" if self.open.is_some() => {
                if let Some((_, _, json)) = &mut self.open {
                    if let Some(s) = data["delta"]["partial_json"].as_str() {
                        json.push_str(s);
                    }
                }
                Step::default()
            }
            "content_block_stop" if self.open.is_some() => self.close_block(),
            "message_delta" => self.message_delta(ev, data),
            // Anything else while a tool block is open (a block interleaved,
            // an unknown event) is held back with it: dropped, since the
            // stream never interleaves blocks.
            _ if self.open.is_some() => Step::default(),
            _ => pass(ev.raw),
        }
    }

    fn resolve(&mut self, verdicts: &[CallVerdict], on_deny: OnDeny) -> Vec<u8> {
        let Some((index, call, mut block)) = self.held.take() else {
            return Vec::new();
        };
        let v = verdicts.first().cloned().unwrap_or(CallVerdict::Deny {
            reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
            detail: "no decision".into(),
        });
        let mut out = Vec::new();
        match (&v, on_deny) {
            (CallVerdict::Allow, _) => {
                self.kept += 1;
                // The start block as sent (input empty), then the whole
                // input in one delta: what the SDKs' accumulators expect.
                block["input"] = json!({});
                out.extend(sse::render(
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index, "content_block": block })
                        .to_string(),
                ));
                out.extend(sse::render(
                    "content_block_delta",
                    &json!({ "type": "content_block_delta", "index": index,
                        "delta": { "type": "input_json_delta", "partial_json": call.arguments } })
                    .to_string(),
                ));
            }
            (CallVerdict::Deny { .. }, OnDeny::Rewrite) => {
                self.replaced += 1;
                out.extend(sse::render(
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                        "content_block": { "type": "text", "text": "" } })
                    .to_string(),
                ));
                out.extend(sse::render(
                    "content_block_delta",
                    &json!({ "type": "content_block_delta", "index": index,
                        "delta": { "type": "text_delta", "text": v.denial_text(&call) } })
                    .to_string(),
                ));
            }
            (CallVerdict::Deny { reason_code, .. }, OnDeny::Block) => {
                self.ended = true;
                out.extend(self.error_event(ErrorKind::Denied, reason_code, &v.denial_text(&call)));
                return out;
            }
        }
        out.extend(sse::render(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": index }).to_string(),
        ));
        out
    }

    fn abandoned(&mut self) -> usize {
        usize::from(self.open.take().is_some()) + usize::from(self.held.take().is_some())
    }

    fn error_event(&self, kind: ErrorKind, _code: &str, message: &str) -> Vec<u8> {
        sse::render("error", &error_value(kind, message).to_string())
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }
}
