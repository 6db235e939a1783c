//! The MCP gateway's JSON-RPC framing and verdicts on arbitrary bytes, as
//! a runtime (or a server) could send them. Properties: never panics;
//! splitting the same bytes in any two chunkings gives the same frames; no
//! frame exceeds the limit; a message that parses re-parses from its own serialisation with
//! the same kind, id and method; a `tools/call` verdict names an
//! action of `[a-z0-9_.-]{1,64}` starting with `mcp.`.
#![no_main]
use agentd::mcp::{decide, framing};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 256;

fn shape(m: &framing::Message) -> (u8, Option<framing::Id>, Option<String>) {
    match m {
        framing::Message::Request { id, method, .. } => (0, Some(id.clone()), Some(method.clone())),
        framing::Message::Notification { method, .. } => (1, None, Some(method.clone())),
        framing::Message::Response { id, .. } => (2, Some(id.clone()), None),
    }
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut whole = framing::Splitter::new(MAX);
    let a = whole.push(data);
    let mut parts = framing::Splitter::new(MAX);
    let mut b = parts.push(&data[..cut]);
    b.extend(parts.push(&data[cut..]));
    assert_eq!(a, b, "chunking changed the frames");
    for f in a {
        let framing::Frame::Line(line) = f else {
            continue;
        };
        assert!(line.len() <= MAX);
        let Ok(m) = framing::parse(&line) else {
            continue;
        };
        let raw = match &m {
            framing::Message::Request { raw, .. }
            | framing::Message::Notification { raw, .. }
            | framing::Message::Response { raw, .. } => raw.clone(),
        };
        let again = framing::to_line(&serde_json::Value::Object(raw));
        // Kind, id and method survive (numbers inside params may move by
        // an ulp through serde_json's float parsing; they are not compared).
        let again = framing::parse(&again[..again.len() - 1]).expect("re-parses");
        assert_eq!(shape(&again), shape(&m), "re-parse differs");
        if let decide::ClientVerdict::ToolCall { action, .. } = decide::client_message("srv", &m) {
            assert!(action.starts_with("mcp.srv."));
            assert!(action.len() <= 64);
            assert!(action
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c)));
        }
        let _ = decide::server_message("srv", &m);
    }
});
