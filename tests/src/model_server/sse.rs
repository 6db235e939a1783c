//! Response helpers: server-sent event bodies and plain JSON.
use axum::{
    body::Body,
    http::{header, StatusCode},
    response::Response,
};
use serde_json::Value;

/// A complete `text/event-stream` body from `(event name, data)` pairs; an
/// empty name writes a `data:` line only (Gemini's and Codex's style differ).
pub fn stream(events: &[(&str, Value)]) -> Response {
    let mut body = String::new();
    for (name, data) in events {
        if !name.is_empty() {
            body.push_str("event: ");
            body.push_str(name);
            body.push('\n');
        }
        body.push_str("data: ");
        body.push_str(&data.to_string());
        body.push_str("\n\n");
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// A JSON response with `status`.
pub fn json(status: u16, v: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
/// Parses an SSE body back into `(event, data)` pairs (for tests).
pub fn parse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or(Value::Null);
                }
            }
            (name, data)
        })
        .collect()
}
