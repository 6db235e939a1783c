//! The MCP gateway's check of Streamable HTTP routing headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) against the JSON-RPC
//! body, on arbitrary headers and bodies. Properties: a request that passes
//! has no header saying something other than its body (method, the tool or
//! prompt name or resource URI, the protocol version); the revision is the
//! stateless one exactly when the header or the body's `_meta` names it;
//! and a request whose headers mirror its body is never refused.
#![no_main]
use agentd::mcp::{
    framing::{self, Message},
    revision::{self, Headers, Revision, META_VERSION, STATELESS},
};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The reading of `Mcp-Name` the documentation gives: `=?base64?…?=`, or
/// the value itself.
fn decoded(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

fn field(part: Option<&[u8]>) -> Option<String> {
    // An empty field is an absent header.
    part.filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

fuzz_target!(|data: &[u8]| {
    // Three header values and the body, separated by 0xff (never in UTF-8).
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let h = Headers {
        version: field(parts.next()),
        method: field(parts.next()),
        name: field(parts.next()),
    };
    let Some(body) = parts.next() else { return };
    let Ok(m) = framing::parse(body) else { return };
    let (method, raw) = match &m {
        Message::Request { method, raw, .. } | Message::Notification { method, raw } => {
            (method.clone(), raw.clone())
        }
        Message::Response { .. } => return,
    };
    let params = raw.get("params").and_then(Value::as_object);
    let meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let named = revision::name_key(&method)
        .and_then(|k| params.and_then(|p| p.get(k)))
        .and_then(Value::as_str)
        .map(str::to_owned);

    if let Ok(rev) = revision::check(&m, &h) {
        if let Some(v) = &h.method {
            assert_eq!(v, &method, "Mcp-Method disagrees yet passed");
        }
        if let Some(v) = &h.name {
            assert!(
                named.is_some(),
                "Mcp-Name set for a body that names nothing"
            );
            assert_eq!(decoded(v), named, "Mcp-Name disagrees yet passed");
        }
        let stateless =
            h.version.as_deref() == Some(STATELESS) || meta.as_deref() == Some(STATELESS);
        assert_eq!(rev == Revision::Stateless, stateless);
        if stateless {
            assert_eq!(h.version, meta, "protocol versions disagree yet passed");
        }
    }

    // The same body with headers mirrored from it, as a conforming client
    // sends them, plain and base64-encoded.
    for encode in [false, true] {
        let name = named.as_ref().map(|n| {
            if encode || n.starts_with("=?base64?") {
                format!(
                    "=?base64?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(n)
                )
            } else {
                n.clone()
            }
        });
        let mirrored = Headers {
            version: meta.clone(),
            method: Some(method.clone()),
            name,
        };
        if let Err(e) = revision::check(&m, &mirrored) {
            panic!("headers mirrored from the body refused: {e} ({mirrored:?})");
        }
    }
});
