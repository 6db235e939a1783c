//! OpenAI Responses (what Codex speaks): tool calls are output items
//! (`function_call` with JSON `arguments`, `custom_tool_call` with free-form
//! `input`, `local_shell_call` with an argv), in a whole response's
//! `output` and in a stream as `response.output_item.added`, argument
//! deltas, `response.output_item.done` (the whole item), and the final
//! `response.completed` that repeats every item.
//!
//! A stream's call item is held from its `added` to its `done` event (with
//! anything that arrives in between, so the order never changes), then
//! decided: an allowed call's events pass as they came; a denied one is
//! replaced by an assistant `message` item at the same output index naming
//! the reason, and the final response's `output` says the same. Events are
//! renumbered (`sequence_number`) only when a replacement changed their
//! count. Items the provider ran itself (web search, remote MCP, file
//! search, code interpreter, image generation) are not calls for the
//! client: they are decided, or stripped, in the request.
use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};

use super::{sse, CallVerdict, ErrorKind, FoundCall, OnDeny, Step, StreamRewriter, Usage};
use crate::protocol::reason;

/// Output item types that ask the client to act (decided like any tool).
/// Any other `*_call` type the provider did not run is treated as one too
/// (fail closed): it maps to no tool and is denied.
fn is_client_call(item_type: &str) -> bool {
    match item_type {
        "function_call" | "custom_tool_call" | "local_shell_call" | "computer_call"
        | "shell_call" | "apply_patch_call" => true,
        // Run by the provider before the answer is sent.
        "web_search_call"
        | "file_search_call"
        | "mcp_call"
        | "code_interpreter_call"
        | "image_generation_call"
        | "tool_search_call" => false,
        t => t.ends_with("_call"),
    }
}

/// The call an output item asks for (name and arguments as JSON text).
fn call_of(item: &Value) -> FoundCall {
    let id = item["call_id"]
        .as_str()
        .or(item["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let t = item["type"].as_str().unwrap_or_default();
    let (name, arguments) = match t {
        "function_call" => (
            item["name"].as_str().unwrap_or_default().to_owned(),
            item["arguments"].as_str().unwrap_or_default().to_owned(),
        ),
        // Free-form input (Codex's apply_patch): the mapping reads `input`.
        "custom_tool_call" => (
            item["name"].as_str().unwrap_or_default().to_owned(),
            json!({ "input": item["input"].as_str().unwrap_or_default() }).to_string(),
        ),
        // The model's argv for the client's shell.
        "local_shell_call" | "shell_call" => (
            "shell".to_owned(),
            json!({ "command": item["action"]["command"] }).to_string(),
        ),
        _ => (
            t.trim_end_matches("_call").to_owned(),
            match &item["action"] {
                Value::Null => "{}".to_owned(),
                v => json!({ "action": v }).to_string(),
            },
        ),
    };
    FoundCall {
        id,
        name,
        arguments,
    }
}

/// The id of the message replacing call item `item_id` (the API checks
/// that a message's id names a message when a client sends it back).
fn message_id(item_id: &str, output_index: usize) -> String {
    if item_id.is_empty() {
        format!("msg_agentd_{output_index}")
    } else {
        format!("msg_agentd_{item_id}")
    }
}

/// The assistant message that replaces a denied call item.
fn message_item(id: &str, text: &str) -> Value {
    json!({ "type": "message", "id": id, "role": "assistant", "status": "completed",
        "content": [{ "type": "output_text", "text": text, "annotations": [] }] })
}

fn no_decision() -> CallVerdict {
    CallVerdict::Deny {
        reason_code: reason::INTERNAL_ERROR.into(),
        detail: "no decision".into(),
    }
}

/// The tool calls of a whole response, in output order.
pub fn calls(body: &Value) -> Vec<FoundCall> {
    body["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"].as_str().is_some_and(is_client_call))
        .map(call_of)
        .collect()
}

/// Applies verdicts (order of [`calls`]): a denied item becomes an
/// assistant message naming the reason.
pub fn rewrite(body: &mut Value, verdicts: &[CallVerdict]) {
    let mut verdicts = verdicts.iter();
    for (i, item) in body
        .get_mut("output")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !item["type"].as_str().is_some_and(is_client_call) {
            continue;
        }
        let v = verdicts.next().cloned().unwrap_or_else(no_decision);
        if !v.is_allow() {
            let id = message_id(item["id"].as_str().unwrap_or_default(), i);
            *item = message_item(&id, &v.denial_text(&call_of(item)));
        }
    }
}

/// A response's token counts.
pub fn usage(body: &Value) -> Usage {
    Usage {
        input_tokens: body["usage"]["input_tokens"].as_u64(),
        output_tokens: body["usage"]["output_tokens"].as_u64(),
    }
}

/// The stream's error: an `error` event (what the API sends, carrying an
/// `error` object the SDKs raise on), then `response.failed` for the
/// stream's response (what Codex ends a turn on).
pub fn error_events(
    kind: ErrorKind,
    code: &str,
    message: &str,
    seq: Option<u64>,
    response_id: Option<&str>,
) -> Vec<u8> {
    let err = super::openai::error_value(kind, code, message);
    let mut first = json!({ "type": "error", "code": code, "message": message, "param": null,
        "error": err["error"] });
    let mut failed = json!({ "type": "response.failed", "response": {
        "id": response_id, "object": "response", "status": "failed",
        "error": { "code": code, "message": message }, "output": [] } });
    if let Some(s) = seq {
        first["sequence_number"] = json!(s);
        failed["sequence_number"] = json!(s + 1);
    }
    let mut out = sse::render("error", &first.to_string());
    out.extend(sse::render("response.failed", &failed.to_string()));
    out
}

/// One event held while a call is open.
#[derive(Debug)]
struct Held {
    /// Output index the event belongs to (None: not an item's event).
    output_index: Option<u64>,
    name: String,
    data: Option<Value>,
    raw: Vec<u8>,
}

/// A Responses stream under rewrite.
#[derive(Debug, Default)]
pub struct Stream {
    /// Output indexes of call items between `added` and `done`.
    open: BTreeSet<u64>,
    /// Events held (in order) while a call is open or awaiting its verdict.
    held: Vec<Held>,
    /// The call decided now: output index, the call, its item.
    awaiting: Option<(u64, FoundCall, Value)>,
    /// Item ids of calls passed on.
    allowed: HashSet<String>,
    /// Item id → the message that replaced the call.
    replaced: HashMap<String, Value>,
    /// Next `sequence_number` to send (once the stream shows one).
    next_seq: Option<u64>,
    /// The response's id (`response.created`).
    response_id: Option<String>,
    usage: Usage,
    model: Option<String>,
    ended: bool,
}

impl Stream {
    /// Renders an event, renumbered in sequence; its raw bytes when they
    /// already say the right number.
    fn emit(&mut self, name: &str, data: Option<Value>, raw: Vec<u8>) -> Vec<u8> {
        let Some(mut data) = data else {
            return raw;
        };
        let Some(seq) = data["sequence_number"].as_u64() else {
            return raw;
        };
        let want = *self.next_seq.get_or_insert(seq);
        self.next_seq = Some(want + 1);
        if seq == want {
            return raw;
        }
        data["sequence_number"] = json!(want);
        sse::render(name, &data.to_string())
    }

    /// A synthesized event (numbered when the stream numbers its events).
    fn synth(&mut self, name: &str, mut data: Value) -> Vec<u8> {
        if let Some(n) = self.next_seq {
            data["sequence_number"] = json!(n);
            self.next_seq = Some(n + 1);
        }
        sse::render(name, &data.to_string())
    }

    /// The events that replace a denied call item at `oi`.
    fn replacement(&mut self, oi: u64, id: &str, text: &str) -> Vec<u8> {
        let part = json!({ "type": "output_text", "text": text, "annotations": [] });
        let mut out = Vec::new();
        out.extend(self.synth(
            "response.output_item.added",
            json!({ "type": "response.output_item.added", "output_index": oi,
                "item": { "type": "message", "id": id, "role": "assistant",
                    "status": "in_progress", "content": [] } }),
        ));
        out.extend(self.synth(
            "response.content_part.added",
            json!({ "type": "response.content_part.added", "item_id": id, "output_index": oi,
                "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } }),
        ));
        out.extend(self.synth(
            "response.output_text.delta",
            json!({ "type": "response.output_text.delta", "item_id": id, "output_index": oi,
                "content_index": 0, "delta": text, "logprobs": [] }),
        ));
        out.extend(self.synth(
            "response.output_text.done",
            json!({ "type": "response.output_text.done", "item_id": id, "output_index": oi,
                "content_index": 0, "text": text, "logprobs": [] }),
        ));
        out.extend(self.synth(
            "response.content_part.done",
            json!({ "type": "response.content_part.done", "item_id": id, "output_index": oi,
                "content_index": 0, "part": part }),
        ));
        out.extend(self.synth(
            "response.output_item.done",
            json!({ "type": "response.output_item.done", "output_index": oi,
                "item": message_item(id, text) }),
        ));
        out
    }

    /// The final response's `output` as decided: allowed calls kept,
    /// denied ones replaced, calls never decided dropped (fail closed).
    fn fix_output(&self, response: &mut Value) {
        let Some(out) = response["output"].as_array_mut() else {
            return;
        };
        out.retain_mut(|item| {
            if !item["type"].as_str().is_some_and(is_client_call) {
                return true;
            }
            let id = item["id"].as_str().unwrap_or_default();
            if let Some(m) = self.replaced.get(id) {
                *item = m.clone();
                return true;
            }
            self.allowed.contains(id)
        });
    }

    fn track(&mut self, data: &Value) {
        let r = &data["response"];
        if let Some(id) = r["id"].as_str() {
            self.response_id = Some(id.to_owned());
        }
        if let Some(m) = r["model"].as_str() {
            self.model = Some(m.to_owned());
        }
        let u = usage(r);
        if u.input_tokens.is_some() || u.output_tokens.is_some() {
            self.usage = u;
        }
    }

    /// Sends held events whose item is no longer open (in order).
    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        let mut rest = Vec::new();
        for h in held {
            if h.output_index.is_some_and(|oi| self.open.contains(&oi)) || !rest.is_empty() {
                rest.push(h);
                continue;
            }
            out.extend(self.pass(h.name, h.data, h.raw));
        }
        self.held = rest;
        out
    }

    /// Passes one event (the final response's output fixed).
    fn pass(&mut self, name: String, data: Option<Value>, raw: Vec<u8>) -> Vec<u8> {
        let Some(mut d) = data else {
            return raw;
        };
        if d["response"]["output"].is_array() && !(self.replaced.is_empty() && self.all_allowed(&d))
        {
            self.fix_output(&mut d["response"]);
            let rendered = sse::render(&name, &d.to_string());
            return self.emit(&name, Some(d), rendered);
        }
        self.emit(&name, Some(d), raw)
    }

    /// Whether every call item in a final response was passed on.
    fn all_allowed(&self, d: &Value) -> bool {
        d["response"]["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["type"].as_str().is_some_and(is_client_call))
            .all(|i| self.allowed.contains(i["id"].as_str().unwrap_or_default()))
    }
}

impl StreamRewriter for Stream {
    fn push(&mut self, ev: sse::Event) -> Step {
        if self.ended {
            return Step::default();
        }
        let holding = !self.open.is_empty() || !self.held.is_empty();
        if !ev.has_data || ev.data.trim() == "[DONE]" {
            if holding {
                self.held.push(Held {
                    output_index: None,
                    name: ev.event,
                    data: None,
                    raw: ev.raw,
                });
                return Step::default();
            }
            return Step {
                emit: ev.raw,
                calls: Vec::new(),
            };
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            // Not JSON: no client parses a call out of it; inside a call it
            // is dropped with nothing else.
            return Step {
                emit: if holding { Vec::new() } else { ev.raw },
                calls: Vec::new(),
            };
        };
        let etype = data["type"].as_str().unwrap_or(&ev.event).to_owned();
        self.track(&data);
        let oi = data["output_index"].as_u64();
        let item_type = data["item"]["type"].as_str().unwrap_or_default();
        match etype.as_str() {
            "response.output_item.added" if is_client_call(item_type) => {
                self.open.insert(oi.unwrap_or(0));
            }
            "response.output_item.done" if is_client_call(item_type) => {
                let oi = oi.unwrap_or(0);
                self.open.remove(&oi);
                let call = call_of(&data["item"]);
                let item = data["item"].clone();
                self.held.push(Held {
                    output_index: Some(oi),
                    name: ev.event,
                    data: Some(data),
                    raw: ev.raw,
                });
                self.awaiting = Some((oi, call.clone(), item));
                return Step {
                    emit: Vec::new(),
                    calls: vec![call],
                };
            }
            _ if !holding => {
                let emit = self.pass(ev.event, Some(data), ev.raw);
                return Step {
                    emit,
                    calls: Vec::new(),
                };
            }
            _ => {}
        }
        self.held.push(Held {
            output_index: oi,
            name: ev.event,
            data: Some(data),
            raw: ev.raw,
        });
        Step::default()
    }

    fn resolve(&mut self, verdicts: &[CallVerdict], on_deny: OnDeny) -> Vec<u8> {
        let Some((oi, call, item)) = self.awaiting.take() else {
            return Vec::new();
        };
        let v = verdicts.first().cloned().unwrap_or_else(no_decision);
        let item_id = item["id"].as_str().unwrap_or_default().to_owned();
        match (&v, on_deny) {
            (CallVerdict::Allow, _) => {
                self.allowed.insert(item_id);
                self.flush()
            }
            (CallVerdict::Deny { .. }, OnDeny::Rewrite) => {
                let text = v.denial_text(&call);
                let msg_id = message_id(&item_id, oi as usize);
                self.replaced.insert(item_id, message_item(&msg_id, &text));
                // The call's own events go; the message takes the place of
                // the first of them.
                let held = std::mem::take(&mut self.held);
                let mut out = Vec::new();
                let mut placed = false;
                let mut rest = Vec::new();
                for h in held {
                    if h.output_index == Some(oi) {
                        if !placed {
                            placed = true;
                            out.extend(self.replacement(oi, &msg_id, &text));
                        }
                        continue;
                    }
                    rest.push(h);
                }
                self.held = rest;
                out.extend(self.flush());
                out
            }
            (CallVerdict::Deny { reason_code, .. }, OnDeny::Block) => {
                self.ended = true;
                self.held.clear();
                let code = reason_code.clone();
                self.error_event(ErrorKind::Denied, &code, &v.denial_text(&call))
            }
        }
    }

    fn abandoned(&mut self) -> usize {
        let n = self.open.len() + usize::from(self.awaiting.take().is_some());
        self.open.clear();
        self.held.clear();
        n
    }

    fn error_event(&self, kind: ErrorKind, code: &str, message: &str) -> Vec<u8> {
        error_events(
            kind,
            code,
            message,
            self.next_seq,
            self.response_id.as_deref(),
        )
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
