//! JSON-RPC 2.0 over newline-delimited JSON (MCP's stdio transport): split
//! a byte stream into bounded lines, parse one line into a message, and
//! build error responses. Pure: no I/O, fuzzed by `fuzz_targets/mcp_framing.rs`.
use serde_json::{json, Map, Value};

/// Largest message accepted by default, bytes (without the newline).
pub use crate::config::MCP_DEFAULT_MAX_MESSAGE as DEFAULT_MAX_MESSAGE;

/// JSON-RPC error codes used here.
pub mod code {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a valid JSON-RPC request (batches, bad ids, ...).
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method is not forwarded.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway or the server failed.
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// One piece cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line (without its newline; a trailing `\r` is dropped).
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded.
    TooLong {
        /// Bytes seen before it ended (or the limit tripped).
        len: usize,
    },
}

/// Splits a byte stream into lines of at most `max` bytes. A longer line is
/// reported once as [`Frame::TooLong`] and skipped to its newline, so one
/// huge message costs at most `max` bytes of memory and the stream goes on.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    max: usize,
    discarding: Option<usize>,
}

impl Splitter {
    /// A splitter with a limit of `max` bytes per line.
    pub fn new(max: usize) -> Self {
        Splitter {
            buf: Vec::new(),
            max,
            discarding: None,
        }
    }

    /// Feeds bytes; returns the frames they complete.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (chunk, rest, ended) = match nl {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &[][..], false),
            };
            data = rest;
            if let Some(seen) = self.discarding.as_mut() {
                *seen += chunk.len();
                if ended {
                    let len = *seen;
                    self.discarding = None;
                    out.push(Frame::TooLong { len });
                }
                continue;
            }
            if self.buf.len() + chunk.len() > self.max {
                self.discarding = Some(self.buf.len() + chunk.len());
                self.buf.clear();
                if ended {
                    let len = self.discarding.take().unwrap_or_default();
                    out.push(Frame::TooLong { len });
                }
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if ended {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                // Blank lines carry nothing; skip them.
                if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Frame::Line(line));
                }
            }
        }
        out
    }

    /// Bytes of an unfinished line held (for end-of-stream handling).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A JSON-RPC id: a string or an integer (null and fractions are refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A number id.
    Num(i64),
    /// A string id.
    Str(String),
}

impl Id {
    /// Reads an id from JSON.
    pub fn from_value(v: &Value) -> Option<Id> {
        match v {
            Value::String(s) => Some(Id::Str(s.clone())),
            Value::Number(n) => n.as_i64().map(Id::Num),
            _ => None,
        }
    }

    /// The id as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Id::Num(n) => json!(n),
            Id::Str(s) => json!(s),
        }
    }
}

/// One parsed message, keeping the whole object for forwarding.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (method and id).
    Request {
        /// Its id.
        id: Id,
        /// Method name.
        method: String,
        /// The object as received.
        raw: Map<String, Value>,
    },
    /// A notification (method, no id).
    Notification {
        /// Method name.
        method: String,
        /// The object as received.
        raw: Map<String, Value>,
    },
    /// A response (id, and `result` or `error`).
    Response {
        /// The id it answers.
        id: Id,
        /// The object as received.
        raw: Map<String, Value>,
    },
}

/// Why a line is not a usable message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON (or not UTF-8).
    #[error("not JSON: {detail}")]
    Parse {
        /// Parser's message.
        detail: String,
    },
    /// A JSON array: MCP has no batches since its 2025-06-18 revision.
    #[error("JSON-RPC batches are not accepted")]
    Batch,
    /// Valid JSON, invalid JSON-RPC.
    #[error("invalid JSON-RPC message: {detail}")]
    Invalid {
        /// The id, when one could be read (the error answers it).
        id: Option<Id>,
        /// What is wrong.
        detail: String,
    },
    /// The line exceeded the size limit.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl FrameError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            FrameError::Parse { .. } => code::PARSE_ERROR,
            _ => code::INVALID_REQUEST,
        }
    }

    /// The id the error response carries (null when unknown).
    pub fn id(&self) -> Option<&Id> {
        match self {
            FrameError::Invalid { id, .. } => id.as_ref(),
            _ => None,
        }
    }
}

/// Parses one line into a message.
pub fn parse(line: &[u8]) -> Result<Message, FrameError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| FrameError::Parse {
        detail: e.to_string(),
    })?;
    let obj = match v {
        Value::Object(o) => o,
        Value::Array(_) => return Err(FrameError::Batch),
        _ => {
            return Err(FrameError::Invalid {
                id: None,
                detail: "a message must be a JSON object".into(),
            })
        }
    };
    let raw_id = obj.get("id");
    let id = raw_id.and_then(Id::from_value);
    let invalid = |detail: &str| FrameError::Invalid {
        id: id.clone(),
        detail: detail.into(),
    };
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    if raw_id.is_some() && id.is_none() {
        return Err(invalid("`id` must be a string or an integer"));
    }
    match (obj.get("method"), id.clone()) {
        (Some(Value::String(m)), Some(id)) => {
            if m.starts_with("notifications/") {
                return Err(FrameError::Invalid {
                    id: Some(id),
                    detail: "a notification must not carry an id".into(),
                });
            }
            if obj.contains_key("result") || obj.contains_key("error") {
                return Err(invalid("a request must not carry `result` or `error`"));
            }
            check_params(&obj).map_err(|d| invalid(&d))?;
            Ok(Message::Request {
                id,
                method: m.clone(),
                raw: obj,
            })
        }
        (Some(Value::String(m)), None) => {
            check_params(&obj).map_err(|d| invalid(&d))?;
            Ok(Message::Notification {
                method: m.clone(),
                raw: obj,
            })
        }
        (Some(_), _) => Err(invalid("`method` must be a string")),
        (None, Some(id)) => {
            if obj.contains_key("result") == obj.contains_key("error") {
                return Err(FrameError::Invalid {
                    id: Some(id),
                    detail: "a response carries exactly one of `result` and `error`".into(),
                });
            }
            Ok(Message::Response { id, raw: obj })
        }
        (None, None) => Err(invalid("neither a method nor an id")),
    }
}

fn check_params(obj: &Map<String, Value>) -> Result<(), String> {
    match obj.get("params") {
        None | Some(Value::Object(_)) => Ok(()),
        // MCP's params are always objects (JSON-RPC also allows arrays).
        Some(_) => Err("`params` must be an object".into()),
    }
}

/// An error response to `id` (null when unknown) with agentd's reason code
/// in `data.reason`.
pub fn error_response(id: Option<&Id>, code: i64, reason: &str, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.map_or(Value::Null, Id::to_value),
        "error": {"code": code, "message": message, "data": {"reason": reason}},
    })
}

/// Serialises a message as one line (with its newline).
pub fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_skips_over_long_ones() {
        let mut s = Splitter::new(8);
        let f = s.push(b"{\"a\":1}\n\n{\"b\":");
        assert_eq!(f, vec![Frame::Line(b"{\"a\":1}".to_vec())]);
        assert_eq!(s.pending(), 5);
        let f = s.push(b"2}\r\n0123456789abcdef");
        assert_eq!(f, vec![Frame::Line(b"{\"b\":2}".to_vec())]);
        let f = s.push(b"more\nok\n");
        assert_eq!(
            f,
            vec![Frame::TooLong { len: 20 }, Frame::Line(b"ok".to_vec())]
        );
        // Exactly at the limit is accepted.
        assert_eq!(
            s.push(b"12345678\n"),
            vec![Frame::Line(b"12345678".to_vec())]
        );
        assert_eq!(s.push(b"123456789\n"), vec![Frame::TooLong { len: 9 }]);
    }

    #[test]
    fn parses_the_three_kinds() {
        let m = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(
            matches!(m, Message::Request { id: Id::Num(1), ref method, .. } if method == "tools/list")
        );
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(m, Message::Response { id: Id::Str(ref s), .. } if s == "a"));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert!(matches!(parse(b"{nope"), Err(FrameError::Parse { .. })));
        assert!(matches!(parse(b"\xff"), Err(FrameError::Parse { .. })));
        assert_eq!(
            parse(br#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#),
            Err(FrameError::Batch)
        );
        for bad in [
            &br#"{"id":1,"method":"x"}"#[..],
            br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
            br#"{"jsonrpc":"2.0"}"#,
            br#"3"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e.code(),
                code::INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let e =
            parse(br#"{"jsonrpc":"2.0","id":4,"method":"notifications/cancelled"}"#).unwrap_err();
        assert_eq!(e.id(), Some(&Id::Num(4)));
    }

    #[test]
    fn error_responses_carry_the_reason() {
        let v = error_response(
            Some(&Id::Str("q".into())),
            code::INVALID_REQUEST,
            "mcp_batch",
            "no",
        );
        assert_eq!(v["id"], "q");
        assert_eq!(v["error"]["data"]["reason"], "mcp_batch");
        assert_eq!(error_response(None, -1, "r", "m")["id"], Value::Null);
    }
}
