//! OpenAI Chat Completions: tool calls in a completion
//! (`choices[].message.tool_calls`, and the legacy `function_call`) and in
//! a stream of `chat.completion.chunk`s (`delta.tool_calls[]` fragments by
//! index, ended by the choice's `finish_reason`); error shapes.
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{sse, CallVerdict, ErrorKind, FoundCall, OnDeny, Step, StreamRewriter, Usage};

/// OpenAI's error body: `{"error": {message, type, param, code}}`.
pub fn error_value(kind: ErrorKind, code: &str, message: &str) -> Value {
    let etype = match kind {
        ErrorKind::NotFound | ErrorKind::BadRequest => "invalid_request_error",
        ErrorKind::Denied => "permission_denied",
        ErrorKind::RateLimited => "rate_limit_exceeded",
        ErrorKind::Upstream | ErrorKind::Timeout => "server_error",
    };
    json!({ "error": { "message": message, "type": etype, "param": null, "code": code } })
}

/// The tool calls of a completion, choice by choice.
pub fn chat_calls(body: &Value) -> Vec<FoundCall> {
    let mut out = Vec::new();
    for choice in body["choices"].as_array().into_iter().flatten() {
        let msg = &choice["message"];
        for tc in msg["tool_calls"].as_array().into_iter().flatten() {
            out.push(call_of(tc));
        }
        if msg["function_call"].is_object() {
            out.push(function_call_of(&msg["function_call"]));
        }
    }
    out
}

fn call_of(tc: &Value) -> FoundCall {
    let f = &tc["function"];
    FoundCall {
        id: tc["id"].as_str().unwrap_or_default().to_owned(),
        // A custom (free-form) tool carries `custom.input`, not JSON.
        name: f["name"]
            .as_str()
            .or(tc["custom"]["name"].as_str())
            .unwrap_or_default()
            .to_owned(),
        arguments: match (&f["arguments"], &tc["custom"]["input"]) {
            (Value::String(s), _) => s.clone(),
            (_, Value::String(s)) => s.clone(),
            _ => String::new(),
        },
    }
}

fn function_call_of(f: &Value) -> FoundCall {
    FoundCall {
        id: String::new(),
        name: f["name"].as_str().unwrap_or_default().to_owned(),
        arguments: f["arguments"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Applies verdicts (order of [`chat_calls`]): denied calls leave
/// `tool_calls` and their text joins the message's content; a choice left
/// without calls finishes with `stop`.
pub fn chat_rewrite(body: &mut Value, verdicts: &[CallVerdict]) {
    let mut verdicts = verdicts.iter();
    // `get_mut`, never `[]` for writing: indexing a string or a number
    // mutably panics, and the body is the upstream's to shape.
    let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for choice in choices {
        if !choice.get("message").is_some_and(Value::is_object) {
            // No calls were found there either (`chat_calls`).
            continue;
        }
        let mut texts = Vec::new();
        let mut kept = Vec::new();
        let msg = &mut choice["message"];
        if let Some(tcs) = msg["tool_calls"].as_array() {
            for tc in tcs {
                // A missing verdict denies (fail closed).
                let v = verdicts.next().cloned().unwrap_or(CallVerdict::Deny {
                    reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
                    detail: "no decision".into(),
                });
                if v.is_allow() {
                    kept.push(tc.clone());
                } else {
                    texts.push(v.denial_text(&call_of(tc)));
                }
            }
        }
        let had_calls = msg["tool_calls"].is_array();
        let mut kept_function_call = false;
        if msg["function_call"].is_object() {
            let v = verdicts.next().cloned().unwrap_or(CallVerdict::Deny {
                reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
                detail: "no decision".into(),
            });
            if !v.is_allow() {
                texts.push(v.denial_text(&function_call_of(&msg["function_call"])));
                if let Some(m) = msg.as_object_mut() {
                    m.remove("function_call");
                }
            } else {
                kept_function_call = true;
            }
        }
        if let Some(m) = msg.as_object_mut() {
            if had_calls {
                if !kept.is_empty() {
                    m.insert("tool_calls".into(), Value::Array(kept.clone()));
                } else {
                    m.remove("tool_calls");
                }
            }
            if !texts.is_empty() {
                let mut content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                for t in texts {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&t);
                }
                m.insert("content".into(), Value::String(content));
            }
        }
        if kept.is_empty()
            && !kept_function_call
            && matches!(
                choice["finish_reason"].as_str(),
                Some("tool_calls" | "function_call")
            )
        {
            choice["finish_reason"] = Value::String("stop".into());
        }
    }
}

/// A completion's (or final chunk's) token counts.
pub fn chat_usage(body: &Value) -> Usage {
    Usage {
        input_tokens: body["usage"]["prompt_tokens"].as_u64(),
        output_tokens: body["usage"]["completion_tokens"].as_u64(),
    }
}

/// One tool call being reassembled from fragments.
#[derive(Debug, Default, Clone)]
struct Partial {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

/// A Chat Completions stream under rewrite.
#[derive(Debug, Default)]
pub struct ChatStream {
    /// choice index → (tool index → partial call).
    pending: BTreeMap<u64, BTreeMap<u64, Partial>>,
    /// Choices whose next allowed call gets this index.
    next_index: BTreeMap<u64, u64>,
    /// Held: the chunk that finished the choices being decided, and which choices.
    held: Option<(Value, Vec<u64>)>,
    /// Fields every synthesized chunk copies (id, created, model, ...).
    template: Map<String, Value>,
    usage: Usage,
    model: Option<String>,
    ended: bool,
}

impl ChatStream {
    fn chunk(&self, choice: u64, delta: Value, finish: Value) -> Vec<u8> {
        let mut c = self.template.clone();
        c.insert(
            "choices".into(),
            json!([{ "index": choice, "delta": delta, "finish_reason": finish }]),
        );
        sse::render("", &Value::Object(c).to_string())
    }

    fn take_calls(&mut self, choices: &[u64]) -> Vec<FoundCall> {
        choices
            .iter()
            .flat_map(|c| self.pending.get(c).into_iter().flat_map(|m| m.values()))
            .map(|p| FoundCall {
                id: p.id.clone(),
                name: p.name.clone(),
                arguments: p.arguments.clone(),
            })
            .collect()
    }
}

impl ChatStream {
    /// A data-less event or the `[DONE]`: calls never finished by a
    /// finish_reason are decided now, with the `[DONE]` held.
    fn end_or_pass(&mut self, ev: sse::Event) -> Step {
        let open: Vec<u64> = self.pending.keys().copied().collect();
        if ev.data.trim() == "[DONE]" && !open.is_empty() {
            let calls = self.take_calls(&open);
            self.held = Some((Value::Null, open));
            return Step {
                emit: Vec::new(),
                calls,
            };
        }
        Step {
            emit: ev.raw,
            calls: Vec::new(),
        }
    }

    /// Notes the chunk's model and usage, and the fields synthesized
    /// chunks copy.
    fn note(&mut self, chunk: &Value) {
        if let Some(m) = chunk["model"].as_str() {
            self.model = Some(m.to_owned());
        }
        let u = chat_usage(chunk);
        if u.input_tokens.is_some() || u.output_tokens.is_some() {
            self.usage = u;
        }
        if let Some(obj) = chunk.as_object() {
            for k in [
                "id",
                "object",
                "created",
                "model",
                "system_fingerprint",
                "service_tier",
            ] {
                if let Some(v) = obj.get(k) {
                    self.template.insert(k.into(), v.clone());
                }
            }
        }
    }

    /// Takes the tool-call fragments out of the chunk's choices into the
    /// pending calls; returns whether any were taken and which choices
    /// with pending calls the chunk finishes.
    fn take_fragments(&mut self, chunk: &mut Value) -> (bool, Vec<u64>) {
        let mut touched = false;
        let mut finished = Vec::new();
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return (touched, finished);
        };
        for choice in choices.iter_mut() {
            if !choice.is_object() {
                continue;
            }
            let idx = choice["index"].as_u64().unwrap_or(0);
            let delta = &mut choice["delta"];
            // The legacy `function_call` is one call at index 0.
            let tcs = delta
                .as_object_mut()
                .and_then(|d| d.remove("tool_calls"))
                .or_else(|| {
                    delta
                        .as_object_mut()
                        .and_then(|d| d.remove("function_call"))
                        .map(|f| json!([{ "index": 0, "function": f }]))
                });
            if let Some(tcs) = tcs {
                touched = true;
                self.add_fragments(idx, &tcs);
            }
            if !choice["finish_reason"].is_null() && self.pending.contains_key(&idx) {
                finished.push(idx);
            }
        }
        (touched, finished)
    }

    /// Appends one choice's tool-call fragments to its pending calls.
    fn add_fragments(&mut self, choice: u64, tcs: &Value) {
        for (n, tc) in tcs.as_array().into_iter().flatten().enumerate() {
            let ti = tc["index"].as_u64().unwrap_or(n as u64);
            let p = self
                .pending
                .entry(choice)
                .or_default()
                .entry(ti)
                .or_default();
            if let Some(s) = tc["id"].as_str() {
                p.id.push_str(s);
            }
            if let Some(s) = tc["type"].as_str() {
                p.kind = s.to_owned();
            }
            if let Some(s) = tc["function"]["name"].as_str() {
                p.name.push_str(s);
            }
            if let Some(s) = tc["function"]["arguments"].as_str() {
                p.arguments.push_str(s);
            }
        }
    }
}

/// Whether a chunk whose tool-call fragments were taken out still says
/// something (role, text, usage).
fn says_more(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["delta"]
                .as_object()
                .is_some_and(|d| d.values().any(|v| !v.is_null()))
        })
    }) || !chunk["usage"].is_null()
}

impl StreamRewriter for ChatStream {
    fn push(&mut self, ev: sse::Event) -> Step {
        if self.ended {
            return Step::default();
        }
        let data = ev.data.trim();
        if !ev.has_data || data == "[DONE]" {
            return self.end_or_pass(ev);
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            // Not JSON: it cannot carry a tool call the client would parse.
            return Step {
                emit: ev.raw,
                calls: Vec::new(),
            };
        };
        self.note(&chunk);
        let (touched, finished) = self.take_fragments(&mut chunk);
        if !finished.is_empty() {
            let calls = self.take_calls(&finished);
            self.held = Some((chunk, finished));
            return Step {
                emit: Vec::new(),
                calls,
            };
        }
        if !touched {
            return Step {
                emit: ev.raw,
                calls: Vec::new(),
            };
        }
        // Fragments held; pass what else the chunk says (role, text).
        Step {
            emit: if says_more(&chunk) {
                sse::render(&ev.event, &chunk.to_string())
            } else {
                Vec::new()
            },
            calls: Vec::new(),
        }
    }

    fn resolve(&mut self, verdicts: &[CallVerdict], on_deny: OnDeny) -> Vec<u8> {
        let Some((mut chunk, choices)) = self.held.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut verdicts = verdicts.iter();
        let mut no_calls_left = Vec::new();
        for c in &choices {
            let partials = self.pending.remove(c).unwrap_or_default();
            let mut kept = 0;
            for p in partials.values() {
                let v = verdicts.next().cloned().unwrap_or(CallVerdict::Deny {
                    reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
                    detail: "no decision".into(),
                });
                let call = FoundCall {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    arguments: p.arguments.clone(),
                };
                match (&v, on_deny) {
                    (CallVerdict::Allow, _) => {
                        let n = self.next_index.entry(*c).or_default();
                        let tc = json!([{ "index": *n, "id": p.id,
                            "type": if p.kind.is_empty() { "function" } else { p.kind.as_str() },
                            "function": { "name": p.name, "arguments": p.arguments } }]);
                        *n += 1;
                        kept += 1;
                        out.extend(self.chunk(*c, json!({ "tool_calls": tc }), Value::Null));
                    }
                    (_, OnDeny::Rewrite) => {
                        let text = format!("\n{}", v.denial_text(&call));
                        out.extend(self.chunk(*c, json!({ "content": text }), Value::Null));
                    }
                    (_, OnDeny::Block) => {
                        self.ended = true;
                        let code = match &v {
                            CallVerdict::Deny { reason_code, .. } => reason_code.as_str(),
                            CallVerdict::Allow => "",
                        };
                        out.extend(self.error_event(
                            ErrorKind::Denied,
                            code,
                            &v.denial_text(&call),
                        ));
                        return out;
                    }
                }
            }
            if kept == 0 {
                no_calls_left.push(*c);
            }
        }
        if chunk.is_null() {
            // Held at [DONE].
            out.extend(sse::render("", "[DONE]"));
            return out;
        }
        if let Some(cs) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in cs {
                let idx = choice["index"].as_u64().unwrap_or(0);
                if no_calls_left.contains(&idx)
                    && matches!(
                        choice["finish_reason"].as_str(),
                        Some("tool_calls" | "function_call")
                    )
                {
                    choice["finish_reason"] = Value::String("stop".into());
                }
            }
        }
        out.extend(sse::render("", &chunk.to_string()));
        out
    }

    fn abandoned(&mut self) -> usize {
        let n = self.pending.values().map(BTreeMap::len).sum();
        self.pending.clear();
        n
    }

    fn error_event(&self, kind: ErrorKind, code: &str, message: &str) -> Vec<u8> {
        sse::render("", &error_value(kind, code, message).to_string())
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
