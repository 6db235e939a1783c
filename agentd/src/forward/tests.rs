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
    let mut rw = stream_rewriter(provider);
    let mut out = Vec::new();
    let mut decided = 0;
    let chunks: Vec<&[u8]> = if split == 0 {
        vec![stream]
    } else {
        stream.chunks(split).collect()
    };
    let mut pieces: Vec<Vec<sse::Event>> = chunks.iter().map(|c| p.push(c).unwrap()).collect();
    pieces.push(p.end());
    'outer: for events in pieces {
        for ev in events {
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
    let mut rw = stream_rewriter(Provider::OpenAiChat);
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

/// A Responses stream as the API sends it: numbered events, text in
/// deltas, two function calls with argument deltas, the final response.
fn responses_stream() -> Vec<u8> {
    let mut seq = 0;
    let mut s = String::new();
    let mut ev = |v: Value| {
        let mut v = v;
        v["sequence_number"] = json!(seq);
        seq += 1;
        s.push_str(&format!(
            "event: {}\ndata: {v}\n\n",
            v["type"].as_str().unwrap()
        ));
    };
    let resp = |status: &str, output: Value| {
        json!({ "id": "resp_1", "object": "response", "model": "gpt-r", "status": status,
            "output": output, "usage": if status == "completed" {
                json!({ "input_tokens": 21, "output_tokens": 8 }) } else { Value::Null } })
    };
    ev(json!({ "type": "response.created", "response": resp("in_progress", json!([])) }));
    ev(json!({ "type": "response.in_progress", "response": resp("in_progress", json!([])) }));
    let msg = json!({ "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
        "content": [{ "type": "output_text", "text": "Looking", "annotations": [] }] });
    ev(
        json!({ "type": "response.output_item.added", "output_index": 0,
        "item": { "type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": [] } }),
    );
    ev(
        json!({ "type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
        "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } }),
    );
    ev(
        json!({ "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
        "content_index": 0, "delta": "Looking" }),
    );
    ev(
        json!({ "type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
        "content_index": 0, "text": "Looking" }),
    );
    ev(
        json!({ "type": "response.content_part.done", "item_id": "msg_1", "output_index": 0,
        "content_index": 0, "part": { "type": "output_text", "text": "Looking", "annotations": [] } }),
    );
    ev(json!({ "type": "response.output_item.done", "output_index": 0, "item": msg }));
    let mut items = vec![msg];
    for (oi, id, cmd) in [(1, "fc_a", "curl x"), (2, "fc_b", "ls")] {
        let args = json!({ "cmd": cmd }).to_string();
        let call = |a: &str, st: &str| {
            json!({ "type": "function_call", "id": id,
            "call_id": format!("call_{id}"), "name": "exec_command", "arguments": a, "status": st })
        };
        ev(
            json!({ "type": "response.output_item.added", "output_index": oi, "item": call("", "in_progress") }),
        );
        let (a, b) = args.split_at(4);
        for piece in [a, b] {
            ev(
                json!({ "type": "response.function_call_arguments.delta", "item_id": id,
                "output_index": oi, "delta": piece }),
            );
        }
        ev(
            json!({ "type": "response.function_call_arguments.done", "item_id": id,
            "output_index": oi, "arguments": args }),
        );
        ev(
            json!({ "type": "response.output_item.done", "output_index": oi, "item": call(&args, "completed") }),
        );
        items.push(call(&args, "completed"));
    }
    ev(json!({ "type": "response.completed", "response": resp("completed", Value::Array(items)) }));
    s.into_bytes()
}

#[test]
fn responses_stream_denied_call_becomes_a_message_and_numbers_stay_in_order() {
    let (out, decided) = rewrite_stream(
        Provider::OpenAiResponses,
        &responses_stream(),
        0,
        OnDeny::Rewrite,
    );
    assert_eq!(decided, 2);
    let ev = events(&out);
    // Contiguous sequence numbers, event name = data type.
    for (i, (name, v)) in ev.iter().enumerate() {
        assert_eq!(v["sequence_number"], i as u64, "{name}");
        assert_eq!(v["type"], name.as_str());
    }
    let added: Vec<(u64, &str)> = ev
        .iter()
        .filter(|(n, _)| n == "response.output_item.added")
        .map(|(_, v)| {
            (
                v["output_index"].as_u64().unwrap(),
                v["item"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        added,
        [(0, "message"), (1, "message"), (2, "function_call")]
    );
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("curl x\\\"}"), "{text}");
    let deltas: Vec<&str> = ev
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, v)| v["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["fc_b", "fc_b"]);
    let denial = ev
        .iter()
        .find(|(n, v)| n == "response.output_text.delta" && v["output_index"] == 1)
        .unwrap();
    assert!(denial.1["delta"]
        .as_str()
        .unwrap()
        .contains("[agentd] the tool call `exec_command` was denied: command_not_allowed"));
    let (_, done) = ev.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    let types: Vec<&str> = done["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["message", "message", "function_call"]);
    assert_eq!(done["response"]["output"][2]["call_id"], "call_fc_b");
}

#[test]
fn responses_stream_allowed_calls_pass_byte_for_byte() {
    let s = String::from_utf8(responses_stream())
        .unwrap()
        .replace("curl x", "ls -l");
    let (out, decided) =
        rewrite_stream(Provider::OpenAiResponses, s.as_bytes(), 0, OnDeny::Rewrite);
    assert_eq!(decided, 2);
    assert_eq!(out, s.as_bytes());
}

#[test]
fn responses_stream_any_split_gives_the_same_output() {
    let stream = responses_stream();
    let (whole, _) = rewrite_stream(Provider::OpenAiResponses, &stream, 0, OnDeny::Rewrite);
    for split in 1..48 {
        let (out, decided) =
            rewrite_stream(Provider::OpenAiResponses, &stream, split, OnDeny::Rewrite);
        assert_eq!(out, whole, "split {split}");
        assert_eq!(decided, 2);
    }
}

#[test]
fn responses_stream_block_and_cut() {
    let (out, _) = rewrite_stream(
        Provider::OpenAiResponses,
        &responses_stream(),
        0,
        OnDeny::Block,
    );
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(
        ev[names.len() - 2].1["error"]["code"],
        "command_not_allowed"
    );
    assert!(ev.iter().all(|(_, v)| v["item"]["type"] != "function_call"));
    // Cut inside the first call: nothing of it passes, it is abandoned.
    let stream = responses_stream();
    let cut = String::from_utf8_lossy(&stream)
        .find("function_call_arguments.done")
        .unwrap();
    let mut p = sse::Parser::new();
    let mut rw = stream_rewriter(Provider::OpenAiResponses);
    let mut out = Vec::new();
    for ev in p.push(&stream[..cut]).unwrap() {
        let step = rw.push(ev);
        assert!(step.calls.is_empty());
        out.extend(step.emit);
    }
    assert_eq!(rw.abandoned(), 1);
    assert!(!String::from_utf8_lossy(&out).contains("function_call"));
}

#[test]
fn responses_whole_answer_is_rewritten() {
    let mut body = json!({ "id": "resp_1", "object": "response", "output": [
        { "type": "reasoning", "id": "rs_1", "summary": [] },
        { "type": "function_call", "id": "fc_a", "call_id": "call_a", "name": "exec_command",
          "arguments": "{\"cmd\":\"curl x\"}" },
        { "type": "custom_tool_call", "id": "ct_b", "call_id": "call_b", "name": "apply_patch",
          "input": "*** Begin Patch" },
        { "type": "web_search_call", "id": "ws_1", "status": "completed" }
    ], "usage": { "input_tokens": 5, "output_tokens": 6 } });
    let calls = calls_in(Provider::OpenAiResponses, &body);
    assert_eq!(
        calls.len(),
        2,
        "the provider's own web search is not the client's call"
    );
    assert_eq!(calls[0].id, "call_a");
    assert_eq!(calls[1].arguments, "{\"input\":\"*** Begin Patch\"}");
    let v: Vec<CallVerdict> = calls.iter().map(judge).collect();
    rewrite(Provider::OpenAiResponses, &mut body, &v);
    assert_eq!(body["output"][1]["type"], "message");
    assert!(body["output"][1]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("command_not_allowed"));
    assert_eq!(body["output"][2]["type"], "custom_tool_call");
    assert_eq!(
        usage_of(Provider::OpenAiResponses, &body).input_tokens,
        Some(5)
    );
    // An unknown client-side call type is a call (denied by the mapping).
    let odd =
        json!({ "output": [{ "type": "teleport_call", "id": "x", "action": { "to": "mars" } }] });
    assert_eq!(
        calls_in(Provider::OpenAiResponses, &odd)[0].name,
        "teleport"
    );
}

fn gemini_chunk(parts: Value) -> Value {
    json!({ "candidates": [{ "content": { "role": "model", "parts": parts },
        "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5 },
        "modelVersion": "gemini-x" })
}

fn gemini_stream() -> Vec<u8> {
    let mut s = String::new();
    s.push_str(&format!(
        "data: {}\r\n\r\n",
        gemini_chunk(json!([{ "text": "Let me" }]))
    ));
    s.push_str(&format!(
        "data: {}\r\n\r\n",
        gemini_chunk(json!([
            { "functionCall": { "name": "run_shell_command", "args": { "command": "curl x" } } },
            { "functionCall": { "id": "g2", "name": "run_shell_command", "args": { "command": "ls" } },
              "thoughtSignature": "c2ln" }
        ]))
    ));
    s.into_bytes()
}

#[test]
fn gemini_stream_denied_part_becomes_text() {
    let stream = gemini_stream();
    let (whole, decided) = rewrite_stream(Provider::Gemini, &stream, 0, OnDeny::Rewrite);
    assert_eq!(decided, 2);
    let ev = events(&whole);
    assert_eq!(ev.len(), 2);
    // Text passes byte for byte.
    assert!(whole.starts_with(&stream[..stream.iter().position(|b| *b == b'\n').unwrap()]));
    let parts = &ev[1].1["candidates"][0]["content"]["parts"];
    assert!(parts[0]["text"]
        .as_str()
        .unwrap()
        .contains("the tool call `run_shell_command` was denied: command_not_allowed"));
    assert_eq!(parts[1]["functionCall"]["id"], "g2");
    assert_eq!(parts[1]["thoughtSignature"], "c2ln");
    for split in 1..40 {
        let (out, _) = rewrite_stream(Provider::Gemini, &stream, split, OnDeny::Rewrite);
        assert_eq!(out, whole, "split {split}");
    }
    let (out, _) = rewrite_stream(Provider::Gemini, &stream, 0, OnDeny::Block);
    let ev = events(&out);
    assert_eq!(ev.last().unwrap().1["error"]["status"], "PERMISSION_DENIED");
    assert!(!String::from_utf8_lossy(&out).contains("functionCall"));
}

#[test]
fn gemini_whole_answers_and_arrays_are_rewritten() {
    let mut one = gemini_chunk(json!([{ "functionCall": { "name": "run_shell_command",
        "args": { "command": "curl x" } } }]));
    let calls = calls_in(Provider::Gemini, &one);
    assert_eq!(calls[0].arguments, "{\"command\":\"curl x\"}");
    let v: Vec<CallVerdict> = calls.iter().map(judge).collect();
    rewrite(Provider::Gemini, &mut one, &v);
    assert!(one["candidates"][0]["content"]["parts"][0]["text"].is_string());
    let mut arr = json!([
        gemini_chunk(json!([{ "text": "a" }])),
        gemini_chunk(
            json!([{ "functionCall": { "name": "read_file", "args": { "file_path": "/x" } } }])
        )
    ]);
    assert_eq!(calls_in(Provider::Gemini, &arr).len(), 1);
    rewrite(Provider::Gemini, &mut arr, &[]);
    assert!(arr[1]["candidates"][0]["content"]["parts"][0]["text"].is_string());
    assert_eq!(usage_of(Provider::Gemini, &arr).input_tokens, Some(10));
}

#[test]
fn gemini_paths() {
    for p in [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "/v1/models/gemini-pro:generateContent",
    ] {
        assert_eq!(Provider::of_path(p), Some(Provider::Gemini), "{p}");
    }
    for p in [
        "/v1beta/models/gemini-2.5-flash:countTokens",
        "/v1beta/models/gemini-2.5-flash:embedContent",
        "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
        "/v1beta/files",
        "/v1beta/cachedContents",
        "/v1beta/models/a/b:generateContent",
        "/v1beta/models/:generateContent",
    ] {
        assert_eq!(Provider::of_path(p), None, "{p}");
        assert_eq!(Provider::family_of_path(p), Family::Gemini, "{p}");
    }
    assert_eq!(
        gemini::model_of_path("/v1beta/models/gemini-x:streamGenerateContent"),
        Some("gemini-x")
    );
    let (status, body) = Family::Gemini.error_body(ErrorKind::NotFound, "not_found", "no");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    assert_eq!(v["error"]["code"], 404);
    assert_eq!(
        Provider::of_path("/v1/responses"),
        Some(Provider::OpenAiResponses)
    );
}

/// Found by the `forward_stream` fuzz target: rewriting an answer whose
/// JSON is not the object each provider sends (a string, a number, parts
/// of the wrong type) indexed it mutably and panicked.
#[test]
fn answers_of_the_wrong_shape_are_rewritten_without_panicking() {
    let bodies = [
        json!("{"),
        json!(7),
        json!(["x", 1]),
        json!({ "choices": ["x", 1], "output": "y", "candidates": [1], "content": "z" }),
        json!({ "choices": [{ "message": "m" }], "candidates": [{ "content": "c" }] }),
        json!({ "choices": [{ "message": { "tool_calls": "t" } }] }),
    ];
    for provider in [
        Provider::OpenAiChat,
        Provider::OpenAiResponses,
        Provider::Anthropic,
        Provider::Gemini,
    ] {
        for body in &bodies {
            let mut b = body.clone();
            let n = calls_in(provider, &b).len();
            let deny = CallVerdict::Deny {
                reason_code: "x".into(),
                detail: String::new(),
            };
            rewrite(provider, &mut b, &vec![deny; n]);
            assert!(calls_in(provider, &b).is_empty(), "{provider:?} {body}");
        }
    }
}
