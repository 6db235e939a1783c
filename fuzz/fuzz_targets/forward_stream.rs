//! Forward mode's parsers of what a model API answers, on arbitrary bytes:
//! the SSE reassembler, each provider's stream rewriter and its finder of
//! tool calls in a non-streamed body. Properties: the SSE parser gives the
//! same events however the bytes are split, and their raw bytes plus the
//! remainder are the input, byte for byte; and a denied call never
//! passes through — with every call denied, neither the rewritten stream
//! nor the rewritten body holds a tool call the same provider's parser
//! would find.
#![no_main]
use agentd::forward::{self, sse, CallVerdict, OnDeny, Provider};
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [Provider; 4] = [
    Provider::OpenAiChat,
    Provider::OpenAiResponses,
    Provider::Anthropic,
    Provider::Gemini,
];

fn events(chunks: &[&[u8]]) -> (Vec<sse::Event>, Vec<u8>) {
    let mut p = sse::Parser::new();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(
            p.push(c)
                .expect("fuzz inputs are far below the event limit"),
        );
    }
    // An event held for the LF after its final CR is complete at the end.
    out.extend(p.end());
    let rest = p.finish();
    (out, rest)
}

fn deny(n: usize) -> Vec<CallVerdict> {
    vec![
        CallVerdict::Deny {
            reason_code: "fuzz_denied".into(),
            detail: String::new(),
        };
        n
    ]
}

/// Runs the stream through `provider`'s rewriter denying every call;
/// returns what the client would receive.
fn rewritten(provider: Provider, evs: &[sse::Event], on_deny: OnDeny) -> Vec<u8> {
    let mut rw = forward::stream_rewriter(provider);
    let mut out = Vec::new();
    for ev in evs {
        if rw.ended() {
            break;
        }
        let step = rw.push(ev.clone());
        out.extend(step.emit);
        if !step.calls.is_empty() {
            out.extend(rw.resolve(&deny(step.calls.len()), on_deny));
        }
    }
    rw.abandoned();
    out
}

/// Every tool call `provider`'s rewriter finds in a stream.
fn calls_in_stream(provider: Provider, bytes: &[u8]) -> Vec<forward::FoundCall> {
    let (evs, _) = events(&[bytes]);
    let mut rw = forward::stream_rewriter(provider);
    let mut found = Vec::new();
    for ev in evs {
        let step = rw.push(ev);
        if !step.calls.is_empty() {
            let n = step.calls.len();
            found.extend(step.calls);
            // Allow, to keep reading what follows them.
            rw.resolve(&vec![CallVerdict::Allow; n], OnDeny::Rewrite);
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    // Two cut points from the first bytes: any three-way split.
    let n = data.len();
    let a = data.first().map_or(0, |b| *b as usize * 7) % (n + 1);
    let b = data
        .get(1)
        .map_or(n, |b| a + *b as usize * 13 % (n - a + 1));
    let b = b.min(n);
    let (whole, rest_whole) = events(&[data]);
    let (split, rest_split) = events(&[&data[..a], &data[a..b], &data[b..]]);
    assert_eq!(whole, split, "the split changed the events");
    assert_eq!(rest_whole, rest_split);
    let mut raw: Vec<u8> = whole.iter().flat_map(|e| e.raw.iter().copied()).collect();
    raw.extend(&rest_whole);
    assert_eq!(raw, data, "raw bytes are not the input");

    for provider in PROVIDERS {
        for on_deny in [OnDeny::Rewrite, OnDeny::Block] {
            let out = rewritten(provider, &whole, on_deny);
            let leaked = calls_in_stream(provider, &out);
            assert!(
                leaked.is_empty(),
                "{provider:?} {on_deny:?}: denied calls passed: {leaked:?}"
            );
        }
        // The same bytes as a non-streamed answer.
        if let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(data) {
            let calls = forward::calls_in(provider, &body);
            forward::rewrite(provider, &mut body, &deny(calls.len()));
            let leaked = forward::calls_in(provider, &body);
            assert!(
                leaked.is_empty(),
                "{provider:?}: denied calls left in the body: {leaked:?}"
            );
        }
    }
});
