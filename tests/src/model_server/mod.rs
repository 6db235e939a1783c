//! A scripted model server on loopback: the fake upstream the real agent
//! runtimes (Claude Code, Codex, Gemini CLI) talk to in tests. It speaks each
//! provider's real streaming wire format (one module per provider), plays a
//! [`Script`] of turns (a shell tool call, a raw tool call, final text), and
//! records every request so tests can read what the runtime sent back as
//! each tool's result (for example a hook's refusal).
//!
//! The turn to play is derived from the request itself — the number of tool
//! results the conversation already carries — so a runtime's retries and
//! side requests (Gemini's routing call) never shift the script.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{body::Bytes, extract::State, http::Method, http::Uri, response::Response, Router};
use serde_json::Value;

pub mod anthropic;
pub mod canned;
pub mod gemini;
pub mod openai;
mod sse;

/// One scripted model turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Run a shell command through the runtime's own shell tool (Claude
    /// `Bash`, Codex `exec_command`, Gemini `run_shell_command`).
    Shell(String),
    /// Call a tool by its provider-specific name with this input.
    Tool {
        /// The tool's name as the runtime declares it (`Write`, `Read`…).
        name: String,
        /// Its input object.
        input: Value,
    },
    /// Answer with final text (ends the runtime's loop).
    Text(String),
}

/// What the model answers, turn by turn; after the last, it says "done.".
#[derive(Debug, Clone, Default)]
pub struct Script(pub Vec<Turn>);

impl Script {
    /// The turn to play once the conversation carries `results` tool results.
    pub fn turn(&self, results: usize) -> Turn {
        self.0
            .get(results)
            .cloned()
            .unwrap_or_else(|| Turn::Text("done.".into()))
    }
}

/// The wire API a request was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`).
    OpenAi,
    /// OpenAI Chat Completions (`POST /v1/chat/completions`; canned answers only).
    OpenAiChat,
    /// Gemini (`…:generateContent`, `…:streamGenerateContent`).
    Gemini,
    /// Anything else (answered 404 or, for `HEAD`/`GET`, an empty 200).
    Other,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which provider's API it addressed.
    pub provider: Provider,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The JSON body (`Null` if none or not JSON).
    pub body: Value,
    /// The request's headers (name, value), in order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The tool results this request carries back to the model, in order.
    pub fn tool_results(&self) -> Vec<ToolResult> {
        match self.provider {
            Provider::Anthropic => anthropic::tool_results(&self.body),
            Provider::OpenAi => openai::tool_results(&self.body),
            Provider::Gemini => gemini::tool_results(&self.body),
            Provider::OpenAiChat | Provider::Other => Vec::new(),
        }
    }
}

/// A tool result as the runtime reported it to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The tool-call id the model gave (Anthropic, OpenAI), or the tool name (Gemini).
    pub call: String,
    /// The result text (errors included).
    pub text: String,
    /// Whether the runtime marked it an error (Anthropic `is_error`).
    pub is_error: bool,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

/// A running model server (stops when dropped).
pub struct ModelServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelServer {
    /// Starts on `127.0.0.1:port` (0: any free port) playing `script`.
    pub fn start(script: Script, port: u16) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            script: Arc::new(script),
            log: log.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new().fallback(handle).with_state(shared);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The tool results of the latest model request (the fullest conversation).
    pub fn tool_results(&self) -> Vec<ToolResult> {
        self.requests()
            .iter()
            .filter(|r| r.provider != Provider::Other)
            .map(Recorded::tool_results)
            .max_by_key(Vec::len)
            .unwrap_or_default()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which provider a request path addresses.
pub fn provider_of(path: &str) -> Provider {
    if path.starts_with("/v1/messages") {
        Provider::Anthropic
    } else if path.ends_with("/chat/completions") {
        Provider::OpenAiChat
    } else if path.ends_with("/responses") {
        Provider::OpenAi
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        Provider::Gemini
    } else {
        Provider::Other
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let provider = provider_of(&path);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut log) = s.log.lock() {
        log.push(Recorded {
            provider,
            method: method.to_string(),
            uri: uri.to_string(),
            body: json.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        });
    }
    if let Some(d) = canned::directive(&json) {
        let wire = match provider {
            Provider::Anthropic => Some(canned::Wire::Anthropic),
            Provider::OpenAiChat => Some(canned::Wire::Chat),
            Provider::OpenAi => Some(canned::Wire::Responses),
            Provider::Gemini => Some(canned::Wire::Gemini {
                stream: path.contains(":streamGenerateContent"),
                sse: uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "alt=sse")),
            }),
            Provider::Other => None,
        };
        if let Some(wire) = wire {
            return canned::respond(wire, &d, &json, &headers);
        }
    }
    match provider {
        Provider::Anthropic => anthropic::respond(&s.script, &json),
        Provider::OpenAi => openai::respond(&s.script, &json),
        Provider::Gemini => gemini::respond(&s.script, &path, &json),
        Provider::OpenAiChat => sse::json(
            400,
            &serde_json::json!({ "error": { "message": "chat completions answer canned directives only" } }),
        ),
        Provider::Other if method == Method::HEAD || method == Method::GET => {
            sse::json(200, &serde_json::json!({ "data": [], "models": [] }))
        }
        Provider::Other => sse::json(
            404,
            &serde_json::json!({ "error": { "message": format!("no such endpoint: {path}") } }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_providers() {
        assert_eq!(provider_of("/v1/messages"), Provider::Anthropic);
        assert_eq!(provider_of("/v1/responses"), Provider::OpenAi);
        assert_eq!(
            provider_of("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Provider::Gemini
        );
        assert_eq!(provider_of("/"), Provider::Other);
    }

    /// One raw HTTP/1.1 request over a real socket; returns the body.
    fn post(url_port: u16, path: &str, body: &str) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", url_port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    #[test]
    fn server_plays_the_script_and_records_the_tool_result() {
        let server = ModelServer::start(
            Script(vec![
                Turn::Shell("mailctl reset --all".into()),
                Turn::Text("fin".into()),
            ]),
            0,
        )
        .unwrap();
        let first = sse::parse(&post(
            server.port(),
            "/v1/messages?beta=true",
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"go"}]}"#,
        ));
        assert_eq!(first[1].1["content_block"]["name"], "Bash");
        let second = sse::parse(&post(
            server.port(),
            "/v1/messages?beta=true",
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_agentd_0","content":"denied by agentd","is_error":true}]}]}"#,
        ));
        assert_eq!(second[2].1["delta"]["text"], "fin");
        let results = server.tool_results();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].text, "denied by agentd");
        assert_eq!(server.requests().len(), 2);
    }

    #[test]
    fn script_ends_with_done() {
        let s = Script(vec![Turn::Shell("true".into())]);
        assert_eq!(s.turn(0), Turn::Shell("true".into()));
        assert_eq!(s.turn(1), Turn::Text("done.".into()));
    }
}
