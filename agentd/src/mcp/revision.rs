//! Which MCP revision a Streamable HTTP request speaks, and whether its
//! routing headers agree with its body (pure).
//!
//! 2025-11-25: an `initialize` handshake, then `Mcp-Session-Id` on every
//! request. 2026-07-28: stateless; every request carries the protocol
//! version in `params._meta`, and every POST mirrors its method in
//! `Mcp-Method` and, for `tools/call`, `prompts/get` and `resources/read`,
//! the tool or prompt name or resource URI in `Mcp-Name`, so
//! intermediaries can route without reading bodies. agentd decides on the
//! body; a request whose headers say something else could be routed or
//! counted as one call and executed as another, so it is refused — in
//! either revision, whenever such a header is present.
use base64::Engine as _;
use serde_json::Value;

use super::framing::Message;

/// The revision without sessions (headers mirrored from the body).
pub const STATELESS: &str = "2026-07-28";
/// `_meta` key of the protocol version (2026-07-28).
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// JSON-RPC error code of a header that disagrees with the body
/// (`HeaderMismatch`, 2026-07-28).
pub const HEADER_MISMATCH_CODE: i64 = -32020;

/// The routing headers of one request (values as sent; absent: None).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// `MCP-Protocol-Version`.
    pub version: Option<String>,
    /// `Mcp-Method`.
    pub method: Option<String>,
    /// `Mcp-Name`.
    pub name: Option<String>,
}

/// Which revision a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2025-11-25 and earlier (handshake and sessions).
    Handshake,
    /// 2026-07-28 (stateless).
    Stateless,
}

/// A header that disagrees with the body (or is missing where required).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} header {problem}")]
pub struct Mismatch {
    /// The header.
    pub header: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Shapes a result agentd itself answers (a denied tool call) for the
/// revision: 2026-07-28 results say they are complete (`resultType`).
pub fn shape_result(rev: Revision, answer: &mut Value) {
    if rev == Revision::Stateless {
        if let Some(r) = answer.get_mut("result").and_then(Value::as_object_mut) {
            r.insert("resultType".into(), Value::String("complete".into()));
        }
    }
}

/// The params key whose value `Mcp-Name` mirrors, per method.
pub fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Decodes an `Mcp-Name` value: plain visible ASCII, or `=?base64?…?=`
/// for anything else.
fn decode(v: &str) -> Option<String> {
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

/// The revision of `m` with headers `h`, or the mismatch that refuses it.
/// A request is stateless when its `MCP-Protocol-Version` header or its
/// `_meta` names 2026-07-28; then `Mcp-Method` (and `Mcp-Name` where the
/// body names something) must be present. In both revisions a present
/// header must equal the body.
pub fn check(m: &Message, h: &Headers) -> Result<Revision, Mismatch> {
    let (method, raw) = match m {
        Message::Request { method, raw, .. } | Message::Notification { method, raw } => {
            (method.as_str(), raw)
        }
        // Responses (answers to the server's requests) carry no routing headers.
        Message::Response { .. } => return Ok(Revision::Handshake),
    };
    let params = raw.get("params").and_then(Value::as_object);
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let stateless = h.version.as_deref() == Some(STATELESS) || meta_version == Some(STATELESS);
    let bad = |header, problem: &str| Mismatch {
        header,
        problem: problem.into(),
    };
    if stateless && h.version.as_deref() != meta_version {
        return Err(bad(
            "MCP-Protocol-Version",
            "does not match the request's _meta protocol version",
        ));
    }
    match &h.method {
        Some(v) if v != method => {
            return Err(bad(
                "Mcp-Method",
                "does not match the request body's method",
            ))
        }
        None if stateless => return Err(bad("Mcp-Method", "is missing")),
        _ => {}
    }
    if let Some(key) = name_key(method) {
        let body = params.and_then(|p| p.get(key)).and_then(Value::as_str);
        match (&h.name, body) {
            (Some(v), Some(b)) if decode(v).as_deref() != Some(b) => {
                return Err(bad(
                    "Mcp-Name",
                    &format!("does not match the request body's `{key}`"),
                ))
            }
            (Some(_), None) => {
                return Err(bad(
                    "Mcp-Name",
                    &format!("is set but the body has no `{key}`"),
                ))
            }
            (None, Some(_)) if stateless => return Err(bad("Mcp-Name", "is missing")),
            _ => {}
        }
    } else if h.name.is_some() {
        return Err(bad("Mcp-Name", "is set for a method that names nothing"));
    }
    Ok(if stateless {
        Revision::Stateless
    } else {
        Revision::Handshake
    })
}

#[cfg(test)]
mod tests {
    use super::super::framing::parse;
    use super::*;

    fn h(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> Headers {
        Headers {
            version: version.map(str::to_owned),
            method: method.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const OLD_CALL: &str =
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

    #[test]
    fn stateless_requests_need_agreeing_headers() {
        let m = parse(CALL.as_bytes()).unwrap();
        let v = Some(STATELESS);
        assert_eq!(
            check(&m, &h(v, Some("tools/call"), Some("echo"))),
            Ok(Revision::Stateless)
        );
        assert_eq!(
            check(&m, &h(v, Some("tools/call"), Some("=?base64?ZWNobw==?="))),
            Ok(Revision::Stateless)
        );
        for (hs, header) in [
            (h(v, Some("tools/call"), Some("read_file")), "Mcp-Name"),
            (h(v, Some("tools/list"), Some("echo")), "Mcp-Method"),
            (h(v, None, Some("echo")), "Mcp-Method"),
            (h(v, Some("tools/call"), None), "Mcp-Name"),
            (
                h(Some("2025-11-25"), Some("tools/call"), Some("echo")),
                "MCP-Protocol-Version",
            ),
            (
                h(None, Some("tools/call"), Some("echo")),
                "MCP-Protocol-Version",
            ),
        ] {
            assert_eq!(check(&m, &hs).unwrap_err().header, header, "{hs:?}");
        }
    }

    #[test]
    fn stateless_results_say_they_are_complete() {
        let mut v = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"isError": true}});
        shape_result(Revision::Handshake, &mut v);
        assert!(v["result"].get("resultType").is_none());
        shape_result(Revision::Stateless, &mut v);
        assert_eq!(v["result"]["resultType"], "complete");
    }

    #[test]
    fn handshake_requests_check_the_headers_they_carry() {
        let m = parse(OLD_CALL.as_bytes()).unwrap();
        let v = Some("2025-11-25");
        assert_eq!(check(&m, &h(v, None, None)), Ok(Revision::Handshake));
        assert_eq!(
            check(&m, &h(v, Some("tools/call"), Some("echo"))),
            Ok(Revision::Handshake)
        );
        assert_eq!(
            check(&m, &h(v, Some("tools/call"), Some("other")))
                .unwrap_err()
                .header,
            "Mcp-Name"
        );
        let list = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            check(&list, &h(v, None, Some("echo"))).unwrap_err().header,
            "Mcp-Name"
        );
    }
}
