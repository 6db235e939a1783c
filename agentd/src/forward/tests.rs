//! Wire-format tests: calls found and rewritten in whole answers, streams
//! rewritten event by event (split at every byte), block mode, and the
//! calls of a stream that ends mid-call never passing.
use serde_json::{json, Value};

use super::*;

/// Deny any call whose arguments mention curl.
fn judge(c: &FoundCall) -> CallVerdict {
    if c.arguments.contains("curl") {
        CallVerdict::Deny {
            reason_code: "command_not_allowed".into(),
            detail: "curl is not allowed".into(),
        }
    } else {
        CallVerdict::Allow
    }
}

/// Runs `stream` through a rewriter in chunks of `split` bytes (0: whole).
fn rewrite_stream(
    provider: Provider,
    stream: &[u8],
    split: usize,
    on_deny: OnDeny,
) -> (Vec<u8>, usize) {
    let mut p = sse::Parser::new();
    let mut rw = stream_rewriter(provider).unwrap();
    let mut out = Vec::new();
    let mut decided = 0;
    let chunks: Vec<&[u8]> = if split == 0 {
        vec![stream]
    } else {
        stream.chunks(split).collect()
    };
    'outer: for chunk in chunks {
        for ev in p.push(chunk).unwrap() {
            let step = rw.push(ev);
            out.extend(step.emit);
            if !step.calls.is_empty() {
                decided += step.calls.len();
                let v: Vec<CallVerdict> = step.calls.iter().map(judge).collect();
                out.extend(rw.resolve(&v, on_deny));
            }
            if rw.ended() {
                break 'outer;
            }
        }
    }
    (out, decided)
}

fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut p = sse::Parser::new();
    p.push(bytes)
        .unwrap()
        .into_iter()
        .filter(|e| e.has_data)
        .map(|e| {
            (
                e.event,
                serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
            )
        })
        .collect()
}

fn chat_stream() -> Vec<u8> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let mut s = String::new();
    s.push_str(&chunk(
        json!({ "role": "assistant", "content": "" }),
        Value::Null,
    ));
    s.push_str(&chunk(json!({ "content": "Looking" }), Value::Null));
    s.push_str(&chunk(
        json!({ "tool_calls": [{ "index": 0, "id": "call_a", "type": "function",
        "function": { "name": "exec_command", "arguments": "" } }] }),
        Value::Null,
    ));
    s.push_str(&chunk(
        json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"cmd\":\"cu" } }] }),
        Value::Null,
    ));
    s.push_str(&chunk(
        json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "rl x\"}" } }] }),
        Value::Null,
    ));
    s.push_str(&chunk(
        json!({ "tool_calls": [{ "index": 1, "id": "call_b", "type": "function",
        "function": { "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}" } }] }),
        Value::Null,
    ));
    s.push_str(&chunk(json!({}), json!("tool_calls")));
    s.push_str(&format!("data: {}\n\n", json!({ "id": "c1", "object": "chat.completion.chunk",
        "created": 1, "model": "gpt", "choices": [], "usage": { "prompt_tokens": 5, "completion_tokens": 3 } })));
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

#[test]
fn chat_stream_denied_call_becomes_text_and_allowed_is_renumbered() {
    let (out, decided) = rewrite_stream(Provider::OpenAiChat, &chat_stream(), 0, OnDeny::Rewrite);
    assert_eq!(decided, 2);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("curl x\\\"}\"") || text.contains("[agentd]"));
    let ev = events(&out);
    // Every tool-call fragment that reaches the client belongs to call_b, index 0.
    let tcs: Vec<&Value> = ev
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(tcs.len(), 1, "{text}");
    assert_eq!(tcs[0]["id"], "call_b");
    assert_eq!(tcs[0]["index"], 0);
    assert_eq!(tcs[0]["function"]["arguments"], "{\"cmd\":\"ls\"}");
    let content: String = ev
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.starts_with("Looking"));
    assert!(
        content.contains("[agentd] the tool call `exec_command` was denied: command_not_allowed")
    );
    let finish: Vec<&str> = ev
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn chat_stream_all_denied_finishes_with_stop() {
    let s = String::from_utf8(chat_stream())
        .unwrap()
        .replace("\\\"ls\\\"", "\\\"curl y\\\"");
    let (out, _) = rewrite_stream(Provider::OpenAiChat, s.as_bytes(), 0, OnDeny::Rewrite);
    let ev = events(&out);
    assert!(ev
        .iter()
        .all(|(_, v)| v["choices"][0]["delta"]["tool_calls"].is_null()));
    let finish: Vec<&str> = ev
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
}

#[test]
fn chat_stream_any_split_gives_the_same_output() {
    let stream = chat_stream();
    let (whole, _) = rewrite_stream(Provider::OpenAiChat, &stream, 0, OnDeny::Rewrite);
    for split in 1..64 {
        let (out, decided) = rewrite_stream(Provider::OpenAiChat, &stream, split, OnDeny::Rewrite);
        assert_eq!(out, whole, "split {split}");
        assert_eq!(decided, 2);
    }
}

#[test]
fn chat_stream_block_ends_with_the_error_chunk() {
    let (out, _) = rewrite_stream(Provider::OpenAiChat, &chat_stream(), 0, OnDeny::Block);
    let ev = events(&out);
    let last = &ev.last().unwrap().1;
    assert_eq!(last["error"]["code"], "command_not_allowed");
    assert!(ev
        .iter()
        .all(|(_, v)| v["choices"][0]["delta"]["tool_calls"].is_null()));
}

#[test]
fn chat_stream_cut_inside_a_call_passes_nothing_of_it() {
    let stream = chat_stream();
    let cut = String::from_utf8_lossy(&stream).find("rl x").unwrap();
    let mut p = sse::Parser::new();
    let mut rw = stream_rewriter(Provider::OpenAiChat).unwrap();
    let mut out = Vec::new();
    for ev in p.push(&stream[..cut]).unwrap() {
        let step = rw.push(ev);
        assert!(step.calls.is_empty());
        out.extend(step.emit);
    }
    assert_eq!(rw.abandoned(), 1);
    assert!(!String::from_utf8_lossy(&out).contains("tool_calls"));
}

fn anthropic_stream() -> Vec<u8> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut s = String::new();
    s.push_str(&ev(
        "message_start",
        json!({ "type": "message_start", "message": { "id": "m",
        "type": "message", "role": "assistant", "model": "claude", "content": [],
        "usage": { "input_tokens": 9, "output_tokens": 1 } } }),
    ));
    s.push_str(&ev(
        "content_block_start",
        json!({ "type": "content_block_start", "index": 0,
        "content_block": { "type": "text", "text": "" } }),
    ));
    s.push_str(&ev(
        "content_block_delta",
        json!({ "type": "content_block_delta", "index": 0,
        "delta": { "type": "text_delta", "text": "Let me look" } }),
    ));
    s.push_str(&ev(
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }),
    ));
    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    for (i, (id, cmd)) in [(1, ("toolu_a", "curl x")), (2, ("toolu_b", "ls"))] {
        s.push_str(&ev(
            "content_block_start",
            json!({ "type": "content_block_start", "index": i,
            "content_block": { "type": "tool_use", "id": id, "name": "Bash", "input": {} } }),
        ));
        let args = json!({ "command": cmd }).to_string();
        let (a, b) = args.split_at(5);
        for piece in [a, b] {
            s.push_str(&ev(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": i,
                "delta": { "type": "input_json_delta", "partial_json": piece } }),
            ));
        }
        s.push_str(&ev(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": i }),
        ));
    }
    s.push_str(&ev(
        "message_delta",
        json!({ "type": "message_delta",
        "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 12 } }),
    ));
    s.push_str(&ev("message_stop", json!({ "type": "message_stop" })));
    s.into_bytes()
}

#[test]
fn anthropic_stream_denied_block_becomes_text_at_the_same_index() {
    let (out, decided) =
        rewrite_stream(Provider::Anthropic, &anthropic_stream(), 0, OnDeny::Rewrite);
    assert_eq!(decided, 2);
    let ev = events(&out);
    let starts: Vec<(u64, &str)> = ev
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, v)| {
            (
                v["index"].as_u64().unwrap(),
                v["content_block"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(starts, [(0, "text"), (1, "text"), (2, "tool_use")]);
    let stops = ev.iter().filter(|(n, _)| n == "content_block_stop").count();
    assert_eq!(stops, 3);
    let denial = ev
        .iter()
        .find(|(_, v)| v["index"] == 1 && v["delta"]["type"] == "text_delta")
        .unwrap();
    assert!(denial.1["delta"]["text"]
        .as_str()
        .unwrap()
        .contains("command_not_allowed"));
    let json_in: String = ev
        .iter()
        .filter(|(_, v)| v["index"] == 2)
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(json_in, "{\"command\":\"ls\"}");
    // One call still stands: the stop reason is kept.
    let md = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(md.1["delta"]["stop_reason"], "tool_use");
    assert!(!String::from_utf8_lossy(&out).contains("curl x\\\"}"));
}

#[test]
fn anthropic_stream_any_split_gives_the_same_output() {
    let stream = anthropic_stream();
    let (whole, _) = rewrite_stream(Provider::Anthropic, &stream, 0, OnDeny::Rewrite);
    for split in 1..64 {
        let (out, decided) = rewrite_stream(Provider::Anthropic, &stream, split, OnDeny::Rewrite);
        assert_eq!(out, whole, "split {split}");
        assert_eq!(decided, 2);
    }
}

#[test]
fn anthropic_stream_all_denied_ends_the_turn_and_block_errors() {
    let s = String::from_utf8(anthropic_stream())
        .unwrap()
        .replace("\\\"ls", "\\\"curl");
    let (out, _) = rewrite_stream(Provider::Anthropic, s.as_bytes(), 0, OnDeny::Rewrite);
    let ev = events(&out);
    let md = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(md.1["delta"]["stop_reason"], "end_turn");
    let (out, _) = rewrite_stream(Provider::Anthropic, &anthropic_stream(), 0, OnDeny::Block);
    let ev = events(&out);
    let (name, last) = ev.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(last["error"]["type"], "permission_error");
    assert!(ev
        .iter()
        .all(|(_, v)| v["content_block"]["type"] != "tool_use"));
}

#[test]
fn whole_answers_are_rewritten() {
    let mut chat = json!({ "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_a", "type": "function", "function": { "name": "exec_command", "arguments": "{\"cmd\":\"curl x\"}" } },
            { "id": "call_b", "type": "function", "function": { "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}" } }
        ] } }], "usage": { "prompt_tokens": 3, "completion_tokens": 4 } });
    let calls = calls_in(Provider::OpenAiChat, &chat);
    assert_eq!(calls.len(), 2);
    let v: Vec<CallVerdict> = calls.iter().map(judge).collect();
    rewrite(Provider::OpenAiChat, &mut chat, &v);
    let msg = &chat["choices"][0]["message"];
    assert_eq!(msg["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(msg["tool_calls"][0]["id"], "call_b");
    assert!(msg["content"]
        .as_str()
        .unwrap()
        .contains("command_not_allowed"));
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(usage_of(Provider::OpenAiChat, &chat).output_tokens, Some(4));

    let mut msg = json!({ "content": [
        { "type": "text", "text": "hi" },
        { "type": "tool_use", "id": "t1", "name": "Bash", "input": { "command": "curl x" } }
    ], "stop_reason": "tool_use", "usage": { "input_tokens": 1, "output_tokens": 2 } });
    let calls = calls_in(Provider::Anthropic, &msg);
    assert_eq!(calls[0].arguments, "{\"command\":\"curl x\"}");
    let v: Vec<CallVerdict> = calls.iter().map(judge).collect();
    rewrite(Provider::Anthropic, &mut msg, &v);
    assert_eq!(msg["content"][1]["type"], "text");
    assert_eq!(msg["stop_reason"], "end_turn");
}

#[test]
fn a_missing_verdict_denies() {
    let mut msg = json!({ "content": [
        { "type": "tool_use", "id": "t1", "name": "Bash", "input": { "command": "ls" } }
    ], "stop_reason": "tool_use" });
    rewrite(Provider::Anthropic, &mut msg, &[]);
    assert_eq!(msg["content"][0]["type"], "text");
}

#[test]
fn paths_and_error_shapes() {
    assert_eq!(
        Provider::of_path("/v1/chat/completions"),
        Some(Provider::OpenAiChat)
    );
    assert_eq!(Provider::of_path("/v1/messages"), Some(Provider::Anthropic));
    for p in [
        "/v1/files",
        "/v1/batches",
        "/v1/fine_tuning/jobs",
        "/v1/messages/batches",
        "/v1/models",
        "/",
    ] {
        assert_eq!(Provider::of_path(p), None, "{p}");
    }
    let (status, body) = Family::Anthropic.error_body(ErrorKind::NotFound, "not_found", "no");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    let (status, body) = Family::OpenAi.error_body(ErrorKind::Timeout, "upstream_timeout", "slow");
    assert_eq!(status, 504);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}
