//! Forward mode's parsers of what a runtime sends: the request path (which
//! provider, which error shape, which model), the query string passed
//! upstream, and the provider-run tools a request body declares.
//! Properties: no `key` parameter, however encoded, survives into the
//! upstream query, and every other parameter does, in order; and stripping
//! the denied provider-run tools leaves exactly the allowed ones — a denied
//! one never reaches the provider, an allowed one is never lost.
#![no_main]
use agentd::forward::{gemini, provider_tools, Provider};
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [Provider; 4] = [
    Provider::OpenAiChat,
    Provider::OpenAiResponses,
    Provider::Anthropic,
    Provider::Gemini,
];

/// What the provider would read as the parameter's name.
fn decoded_name(param: &str) -> Vec<u8> {
    let raw = param.split('=').next().unwrap_or_default();
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The identity of a provider-run tool, independent of where it sits.
fn identity(t: &provider_tools::ProviderTool) -> (String, String, String) {
    (
        t.kind.clone(),
        t.call.name.clone(),
        t.call.arguments.clone(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let provider = PROVIDERS[usize::from(selector) % PROVIDERS.len()];
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);

    // The head as a path: classification never panics and is consistent.
    let (path, query) = head.split_once('?').unwrap_or((&head, ""));
    if let Some(p) = Provider::of_path(path) {
        assert_eq!(
            p.family(),
            Provider::family_of_path(path),
            "a forwarded path's errors take its own provider's shape"
        );
    }
    let _ = gemini::model_of_path(path);

    // The query passed upstream.
    let kept = gemini::query_without_key(query);
    let kept_params: Vec<&str> = kept.split('&').filter(|p| !p.is_empty()).collect();
    for p in &kept_params {
        assert!(
            !decoded_name(p).eq_ignore_ascii_case(b"key"),
            "a key parameter reached the upstream query: {p:?} from {query:?}"
        );
    }
    let expected: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !decoded_name(p).eq_ignore_ascii_case(b"key"))
        .collect();
    assert_eq!(
        kept_params, expected,
        "a parameter other than the key was lost"
    );

    // The body's provider-run tools: deny every other one.
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let found = provider_tools::find(provider, &json);
    let denied: Vec<&provider_tools::Locator> = found.iter().step_by(2).map(|t| &t.at).collect();
    let allowed: Vec<_> = found.iter().skip(1).step_by(2).map(identity).collect();
    provider_tools::strip(&mut json, &denied);
    let mut left: Vec<_> = provider_tools::find(provider, &json)
        .iter()
        .map(identity)
        .collect();
    let mut want = allowed.clone();
    left.sort();
    want.sort();
    assert_eq!(
        left, want,
        "after stripping the denied provider-run tools, exactly the allowed ones remain"
    );
});
