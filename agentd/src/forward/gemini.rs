//! Gemini `generateContent` / `streamGenerateContent` (what Gemini CLI
//! speaks): tool calls are `functionCall` parts (`{name, args, id?}`) of a
//! candidate's content. A stream (`?alt=sse`) is `data:` lines of whole
//! `GenerateContentResponse` chunks, and a call always arrives whole in one
//! chunk: that chunk is held, its calls decided, and it is sent on with
//! each denied part replaced by a text part naming the reason. Without
//! `alt=sse` the stream is one JSON array of chunks, read whole like a
//! non-streamed answer. Gemini ends a turn with `STOP` whether or not it
//! calls tools, so no finish reason changes.
use serde_json::{json, Value};

use super::{sse, CallVerdict, ErrorKind, FoundCall, OnDeny, Step, StreamRewriter, Usage};
use crate::protocol::reason;

/// Gemini's error body: `{"error": {code, message, status}}`.
pub fn error_value(kind: ErrorKind, message: &str) -> Value {
    let status = match kind {
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::BadRequest => "INVALID_ARGUMENT",
        ErrorKind::Denied => "PERMISSION_DENIED",
        ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
        ErrorKind::Upstream => "UNAVAILABLE",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
    };
    json!({ "error": { "code": kind.status(), "message": message, "status": status } })
}

/// A query string without its `key` parameters (Gemini's API key), for
/// the upstream request. A name is compared the way the server reads it:
/// percent-decoded and in any case, so `k%65y=` or `KEY=` never carry a
/// client's key past the proxy either. Empty parameters are dropped.
pub fn query_without_key(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !names_the_key(p.split('=').next().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a query parameter's raw name is `key` once decoded.
fn names_the_key(raw: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    // `+` is a space in a form-encoded name; "key" has none, so a name
    // holding one is not the key whichever way it is read.
    decoded.eq_ignore_ascii_case(b"key")
}

/// The model a request path names (`/v1beta/models/{model}:…`).
pub fn model_of_path(path: &str) -> Option<&str> {
    let rest = path.split_once("/models/")?.1;
    Some(rest.split_once(':').map_or(rest, |(m, _)| m))
}

fn call_of(fc: &Value) -> FoundCall {
    FoundCall {
        id: fc["id"].as_str().unwrap_or_default().to_owned(),
        name: fc["name"].as_str().unwrap_or_default().to_owned(),
        arguments: match &fc["args"] {
            Value::Null => "{}".into(),
            v => v.to_string(),
        },
    }
}

/// The chunks of an answer: one object, or the array a stream without
/// `alt=sse` sends.
fn chunks(body: &Value) -> Vec<&Value> {
    match body {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    }
}

/// The tool calls of an answer (object or array of chunks), in order.
pub fn calls(body: &Value) -> Vec<FoundCall> {
    let mut out = Vec::new();
    for chunk in chunks(body) {
        for cand in chunk["candidates"].as_array().into_iter().flatten() {
            for part in cand["content"]["parts"].as_array().into_iter().flatten() {
                if part["functionCall"].is_object() {
                    out.push(call_of(&part["functionCall"]));
                }
            }
        }
    }
    out
}

/// Applies verdicts (order of [`calls`]): a denied `functionCall` part
/// becomes a text part naming the reason.
pub fn rewrite(body: &mut Value, verdicts: &[CallVerdict]) {
    let mut verdicts = verdicts.iter();
    let chunks: Vec<&mut Value> = match body {
        Value::Array(a) => a.iter_mut().collect(),
        v => vec![v],
    };
    for chunk in chunks {
        let candidates = chunk.get_mut("candidates").and_then(Value::as_array_mut);
        for cand in candidates.into_iter().flatten() {
            for part in cand
                .get_mut("content")
                .and_then(|c| c.get_mut("parts"))
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if !part["functionCall"].is_object() {
                    continue;
                }
                let v = verdicts.next().cloned().unwrap_or(CallVerdict::Deny {
                    reason_code: reason::INTERNAL_ERROR.into(),
                    detail: "no decision".into(),
                });
                if !v.is_allow() {
                    *part = json!({ "text": v.denial_text(&call_of(&part["functionCall"])) });
                }
            }
        }
    }
}

/// An answer's token counts (the last chunk that reports them).
pub fn usage(body: &Value) -> Usage {
    let mut u = Usage::default();
    for chunk in chunks(body) {
        let m = &chunk["usageMetadata"];
        if let Some(n) = m["promptTokenCount"].as_u64() {
            u.input_tokens = Some(n);
        }
        if let Some(n) = m["candidatesTokenCount"].as_u64() {
            u.output_tokens = Some(n);
        }
    }
    u
}

/// A Gemini SSE stream under rewrite.
#[derive(Debug, Default)]
pub struct Stream {
    /// The chunk whose calls are being decided.
    held: Option<Value>,
    usage: Usage,
    model: Option<String>,
    ended: bool,
}

impl StreamRewriter for Stream {
    fn push(&mut self, ev: sse::Event) -> Step {
        if self.ended {
            return Step::default();
        }
        let pass = Step {
            emit: ev.raw.clone(),
            calls: Vec::new(),
        };
        if !ev.has_data {
            return pass;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            return pass;
        };
        if let Some(m) = chunk["modelVersion"].as_str() {
            self.model = Some(m.to_owned());
        }
        let u = usage(&chunk);
        self.usage.input_tokens = u.input_tokens.or(self.usage.input_tokens);
        self.usage.output_tokens = u.output_tokens.or(self.usage.output_tokens);
        let found = calls(&chunk);
        if found.is_empty() {
            return pass;
        }
        self.held = Some(chunk);
        Step {
            emit: Vec::new(),
            calls: found,
        }
    }

    fn resolve(&mut self, verdicts: &[CallVerdict], on_deny: OnDeny) -> Vec<u8> {
        let Some(mut chunk) = self.held.take() else {
            return Vec::new();
        };
        let found = calls(&chunk);
        if on_deny == OnDeny::Block {
            for (i, c) in found.iter().enumerate() {
                let v = verdicts.get(i).cloned().unwrap_or(CallVerdict::Deny {
                    reason_code: reason::INTERNAL_ERROR.into(),
                    detail: "no decision".into(),
                });
                if let CallVerdict::Deny { reason_code, .. } = &v {
                    self.ended = true;
                    let code = reason_code.clone();
                    return self.error_event(ErrorKind::Denied, &code, &v.denial_text(c));
                }
            }
        }
        rewrite(&mut chunk, verdicts);
        sse::render("", &chunk.to_string())
    }

    fn abandoned(&mut self) -> usize {
        self.held.take().map_or(0, |c| calls(&c).len())
    }

    fn error_event(&self, kind: ErrorKind, _code: &str, message: &str) -> Vec<u8> {
        sse::render("", &error_value(kind, message).to_string())
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

#[cfg(test)]
mod tests {
    use super::query_without_key;

    #[test]
    fn the_key_parameter_leaves_the_query() {
        assert_eq!(query_without_key("alt=sse&key=AIzaSECRET"), "alt=sse");
        assert_eq!(query_without_key("key=AIzaSECRET"), "");
        assert_eq!(
            query_without_key("keyword=1&key&alt=sse"),
            "keyword=1&alt=sse"
        );
    }

    #[test]
    fn an_encoded_or_upper_cased_key_parameter_leaves_the_query_too() {
        // The server decodes parameter names: `k%65y` is `key` to it.
        assert_eq!(query_without_key("alt=sse&k%65y=AIzaSECRET"), "alt=sse");
        assert_eq!(query_without_key("%6B%45%59=AIzaSECRET&alt=sse"), "alt=sse");
        assert_eq!(query_without_key("KEY=AIzaSECRET"), "");
        // Names that only look alike stay.
        assert_eq!(query_without_key("k+ey=1&ke%79s=2"), "k+ey=1&ke%79s=2");
    }
}
