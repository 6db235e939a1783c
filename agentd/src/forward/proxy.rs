//! The proxy's I/O: one client request in, one upstream request out (the
//! held key in place of whatever the client sent), the answer back with
//! every tool call decided. Non-streamed answers are read whole, decided and
//! rewritten; streams are rewritten event by event (text at once, tool calls
//! held until complete). Every exchange is an audit row.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    decide, sse, stream_rewriter, CallVerdict, ErrorKind, Family, FoundCall, OnDeny, Provider,
    Usage, ACTIVE_MESSAGE_HEADER, RUNTIME_HEADER,
};
use crate::audit::{AuditEvent, RecordKind};
use crate::config::ForwardConfig;
use crate::gateway::decide::MAX_ACTION_LEN;
use crate::gateway::{Caller, Gateway, ToolCallRequest};
use crate::runtime::Runtime;

/// Errors setting the proxy up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A key file cannot be read.
    #[error("reading the {provider} key file {path}: {source}")]
    KeyFile {
        /// The provider.
        provider: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file others could read.
    #[error("the {provider} key file {path} must be a regular file owned by root and readable by root alone (mode 0600 or 0400); it is uid {uid}, mode {mode:o}")]
    KeyFileExposed {
        /// The provider.
        provider: &'static str,
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its mode.
        mode: u32,
    },
    /// An upstream URL agentd cannot use.
    #[error("forward.{provider}.url `{url}`: {message}")]
    BadUrl {
        /// The provider.
        provider: &'static str,
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The system CA store cannot be read.
    #[error("reading the CA store {path}: {message}")]
    CaStore {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The key for one provider; never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads a key from a root-only file (trailing whitespace trimmed).
fn read_key(provider: &'static str, path: &Path, require_root: bool) -> Result<Secret, ProxyError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|source| ProxyError::KeyFile {
        provider,
        path: path.to_owned(),
        source,
    })?;
    if require_root && (!meta.is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0) {
        return Err(ProxyError::KeyFileExposed {
            provider,
            path: path.to_owned(),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ProxyError::KeyFile {
        provider,
        path: path.to_owned(),
        source,
    })?;
    Ok(Secret(text.trim().to_owned()))
}

/// One upstream: where, and with which key.
#[derive(Debug, Clone)]
struct Upstream {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix of the base URL (no trailing slash).
    base_path: String,
    key: Option<Secret>,
}

fn parse_url(provider: &'static str, url: &str) -> Result<Upstream, ProxyError> {
    let bad = |message: &str| ProxyError::BadUrl {
        provider,
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with https:// or http://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
        return Err(bad("expected scheme://host[:port][/path]"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().map_err(|_| bad("bad port"))?,
        ),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    // Why a base path without `/v1`: the client's path carries it.
    let base_path = path.strip_suffix("/v1").unwrap_or(path).to_owned();
    Ok(Upstream {
        tls,
        host: host.to_owned(),
        port,
        base_path,
        key: None,
    })
}

/// The forward proxy.
pub struct Proxy {
    gateway: Arc<Gateway>,
    openai: Upstream,
    anthropic: Upstream,
    gemini: Upstream,
    on_deny: OnDeny,
    timeout: Duration,
    max_request: usize,
    max_response: usize,
    tls: Option<tokio_rustls::TlsConnector>,
    provider_tools: super::provider_tools::ProviderTools,
    /// Requests and tokens per agent in the current window.
    spend: std::sync::Mutex<super::spend::Ledger>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("openai", &self.openai)
            .field("anthropic", &self.anthropic)
            .field("gemini", &self.gemini)
            .field("on_deny", &self.on_deny)
            .finish_non_exhaustive()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, ProxyError> {
    let ca = std::path::Path::new(crate::upstream_tls::SYSTEM_CA_BUNDLE);
    let config = crate::upstream_tls::client_config(ca).map_err(|e| ProxyError::CaStore {
        path: e.path,
        message: e.message,
    })?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Proxy {
    /// Sets the proxy up from the config: parses the upstream URLs, reads
    /// the keys (root-only files unless `require_root_keys` is off, for
    /// tests as a normal user) and, if an upstream uses TLS, the CA store.
    pub fn new(
        gateway: Arc<Gateway>,
        config: &ForwardConfig,
        require_root_keys: bool,
    ) -> Result<Self, ProxyError> {
        let mut openai = parse_url("openai", &config.openai.url)?;
        let mut anthropic = parse_url("anthropic", &config.anthropic.url)?;
        let mut gemini = parse_url("gemini", &config.gemini.url)?;
        if let Some(p) = &config.openai.key_file {
            openai.key = Some(read_key("openai", p, require_root_keys)?);
        }
        if let Some(p) = &config.anthropic.key_file {
            anthropic.key = Some(read_key("anthropic", p, require_root_keys)?);
        }
        if let Some(p) = &config.gemini.key_file {
            gemini.key = Some(read_key("gemini", p, require_root_keys)?);
        }
        let tls = if openai.tls || anthropic.tls || gemini.tls {
            Some(tls_connector()?)
        } else {
            None
        };
        Ok(Self {
            gateway,
            openai,
            anthropic,
            gemini,
            on_deny: config.on_deny,
            timeout: Duration::from_secs(config.upstream_timeout_secs.max(1)),
            max_request: config.max_request_bytes,
            max_response: config.max_response_bytes,
            tls,
            provider_tools: config.provider_tools,
            spend: std::sync::Mutex::new(super::spend::Ledger::new(config.spend)),
        })
    }

    /// The agent the caller's process belongs to, if any.
    pub fn agent_of(&self, caller: Caller) -> Option<String> {
        self.gateway.caller_agent(caller)
    }

    fn upstream(&self, family: Family) -> &Upstream {
        match family {
            Family::OpenAi => &self.openai,
            Family::Anthropic => &self.anthropic,
            Family::Gemini => &self.gemini,
        }
    }

    /// Handles one client request. `may_use`: the caller is an agent's
    /// process, the agent user or an administrator.
    pub async fn handle(
        self: &Arc<Self>,
        caller: Caller,
        may_use: bool,
        req: Request<Body>,
    ) -> Response<Body> {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let Some(provider) = Provider::of_path(&path).filter(|_| req.method() == "POST") else {
            return self.not_inference(req, &path).await;
        };
        let family = provider.family();
        if !may_use {
            drain(req, self.max_request).await;
            return error_response(
                family,
                ErrorKind::Denied,
                crate::protocol::reason::PERMISSION_DENIED,
                "only agents, the agent user and administrators may use agentd's model proxy",
            );
        }
        let Some(runtime) = runtime_of(req.headers(), provider) else {
            return error_response(
                family,
                ErrorKind::BadRequest,
                "bad_request",
                &format!("{RUNTIME_HEADER}: expected claude-code, codex, gemini or cursor"),
            );
        };
        let mut ex = Exchange {
            caller,
            agent: self.gateway.caller_agent(caller),
            provider,
            runtime,
            active: active_message_of(req.headers()),
            model: String::new(),
            stream: false,
            status: 0,
            usage: Usage::default(),
            calls: Vec::new(),
            stripped: Vec::new(),
            outcome: "ok",
            started,
        };
        let (parts, body) = req.into_parts();
        let (body, mut json) = match self.read_request(&mut ex, body).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
        name_model_and_stream(&mut ex, &path, &json);
        // The spend limit, before anything leaves.
        if let Err(resp) = self.admit(&mut ex).await {
            return resp;
        }
        // Tools the provider would run itself: decided here, or stripped.
        let body = match self.provider_tools(&mut ex, &mut json).await {
            true => Bytes::from(json.to_string()),
            false => body,
        };
        self.forward(ex, &parts, body).await
    }

    /// The answer to a request that is not a POST to an inference endpoint.
    async fn not_inference(&self, req: Request<Body>, path: &str) -> Response<Body> {
        let family = Provider::family_of_path(path);
        let method = req.method().clone();
        drain(req, self.max_request).await;
        tracing::info!(path = %path, method = %method, "forward: not an inference endpoint; refused");
        error_response(
            family,
            ErrorKind::NotFound,
            "not_found",
            &format!(
                "agentd forwards only POST /v1/chat/completions, /v1/responses, /v1/messages and Gemini's models/MODEL:generateContent and :streamGenerateContent, not {method} {path}",
            ),
        )
    }

    /// Ends an exchange early: its outcome, its audit row, and `resp`.
    async fn refuse(
        &self,
        ex: &mut Exchange,
        outcome: &'static str,
        resp: Response<Body>,
    ) -> Response<Body> {
        ex.outcome = outcome;
        self.record(ex).await;
        resp
    }

    /// The request body (bounded) and its JSON object; a refusal (recorded)
    /// when it is unreadable, too large or not an object.
    async fn read_request(
        &self,
        ex: &mut Exchange,
        body: Body,
    ) -> Result<(Bytes, Value), Response<Body>> {
        let family = ex.provider.family();
        let body = match http_body_util::Limited::new(body, self.max_request)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let resp = error_response(
                    family,
                    ErrorKind::BadRequest,
                    "bad_request",
                    &format!(
                        "request body unreadable or over {} bytes: {e}",
                        self.max_request
                    ),
                );
                return Err(self.refuse(ex, "bad_request", resp).await);
            }
        };
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => Ok((body, v)),
            _ => {
                let resp = error_response(
                    family,
                    ErrorKind::BadRequest,
                    "bad_request",
                    "the request body is not a JSON object",
                );
                Err(self.refuse(ex, "bad_request", resp).await)
            }
        }
    }

    /// Admits the exchange under its spender's limit, or refuses it
    /// (recorded, with the seconds to wait in Retry-After).
    async fn admit(&self, ex: &mut Exchange) -> Result<(), Response<Body>> {
        let spender = spender_of(ex);
        let admitted = self
            .spend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&spender, now_secs());
        let Err(e) = admitted else {
            return Ok(());
        };
        tracing::warn!(spender = %spender, error = %e, "forward: spend limit reached; refused");
        let mut resp = error_response(
            ex.provider.family(),
            ErrorKind::RateLimited,
            crate::protocol::reason::SPEND_LIMIT_REACHED,
            &e.to_string(),
        );
        if let Ok(v) = HeaderValue::from_str(&e.retry_after_secs().to_string()) {
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        Err(self
            .refuse(ex, crate::protocol::reason::SPEND_LIMIT_REACHED, resp)
            .await)
    }

    /// Sends the request upstream and passes the answer on: streamed when
    /// it is a successful event stream, else read whole.
    async fn forward(
        self: &Arc<Self>,
        mut ex: Exchange,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Body> {
        let family = ex.provider.family();
        let up = self.upstream(family).clone();
        let upstream_req = match build_request(&up, family, parts, body) {
            Ok(r) => r,
            Err(message) => {
                let resp = error_response(family, ErrorKind::BadRequest, "bad_request", &message);
                return self.refuse(&mut ex, "bad_request", resp).await;
            }
        };
        let resp = match tokio::time::timeout(self.timeout, self.send(&up, upstream_req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(message)) => {
                tracing::warn!(provider = family.name(), error = %message, "forward: upstream unreachable");
                let resp = error_response(
                    family,
                    ErrorKind::Upstream,
                    "upstream_unreachable",
                    &format!("agentd could not reach the {} upstream", family.name()),
                );
                return self.refuse(&mut ex, "upstream_unreachable", resp).await;
            }
            Err(_) => {
                let resp = error_response(
                    family,
                    ErrorKind::Timeout,
                    "upstream_timeout",
                    &format!(
                        "the {} upstream did not answer in {:?}",
                        family.name(),
                        self.timeout
                    ),
                );
                return self.refuse(&mut ex, "upstream_timeout", resp).await;
            }
        };
        ex.status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if resp.status().is_success() && is_sse {
            return self.clone().stream(ex, resp, up.key);
        }
        self.whole(ex, resp, up.key.as_ref()).await
    }

    /// Connects to the upstream and sends one request (one connection per
    /// request: no pool to leak one agent's connection to another).
    async fn send(
        &self,
        up: &Upstream,
        req: Request<http_body_util::Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect((up.host.as_str(), up.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", up.host, up.port))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Stream> = if up.tls {
            let Some(tls) = &self.tls else {
                return Err("no TLS configuration".into());
            };
            let name = rustls_pki_types::ServerName::try_from(up.host.clone())
                .map_err(|e| format!("server name {}: {e}", up.host))?;
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", up.host))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "forward: upstream connection ended with an error");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| format!("sending the request: {e}"))
    }

    /// A non-streamed answer: read whole, decided, rewritten (or blocked).
    async fn whole(
        &self,
        mut ex: Exchange,
        resp: Response<hyper::body::Incoming>,
        key: Option<&Secret>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let bytes = match self.read_answer(&mut ex, body).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if !parts.status.is_success() {
            let resp = upstream_refusal(ex.provider.family(), &parts, bytes, key);
            return self.refuse(&mut ex, "upstream_status", resp).await;
        }
        let mut json = match self.parse_answer(&mut ex, &bytes).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        ex.usage = super::usage_of(ex.provider, &json);
        let verdicts = match self.decide_answer(&mut ex, &json).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        let out = if verdicts.iter().all(CallVerdict::is_allow) {
            // Unchanged: the upstream's bytes.
            bytes
        } else {
            super::rewrite(ex.provider, &mut json, &verdicts);
            Bytes::from(json.to_string())
        };
        let mut r = Response::new(Body::from(out));
        *r.status_mut() = parts.status;
        copy_headers(&parts.headers, r.headers_mut());
        self.record(&ex).await;
        r
    }

    /// The upstream's answer, read whole (bounded, within the timeout); a
    /// recorded error response when it broke or stalled.
    async fn read_answer(
        &self,
        ex: &mut Exchange,
        body: hyper::body::Incoming,
    ) -> Result<Bytes, Response<Body>> {
        let family = ex.provider.family();
        let read = tokio::time::timeout(
            self.timeout,
            http_body_util::Limited::new(body, self.max_response).collect(),
        )
        .await;
        match read {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) => {
                let resp = error_response(
                    family,
                    ErrorKind::Upstream,
                    "upstream_error",
                    &format!("reading the upstream's answer: {e}"),
                );
                Err(self.refuse(ex, "upstream_error", resp).await)
            }
            Err(_) => {
                let resp = error_response(
                    family,
                    ErrorKind::Timeout,
                    "upstream_timeout",
                    "the upstream's answer did not finish in time",
                );
                Err(self.refuse(ex, "upstream_timeout", resp).await)
            }
        }
    }

    /// The answer's JSON; anything else is refused (recorded): nothing
    /// unparsed passes, it could hold a call undecided.
    async fn parse_answer(
        &self,
        ex: &mut Exchange,
        bytes: &Bytes,
    ) -> Result<Value, Response<Body>> {
        match serde_json::from_slice(bytes) {
            Ok(v @ Value::Object(_)) => Ok(v),
            // Gemini's stream without `alt=sse` is one array of chunks.
            Ok(v @ Value::Array(_)) if ex.provider == Provider::Gemini => Ok(v),
            _ => {
                let resp = error_response(
                    ex.provider.family(),
                    ErrorKind::Upstream,
                    "upstream_malformed",
                    "the upstream's answer is not a JSON object",
                );
                Err(self.refuse(ex, "upstream_malformed", resp).await)
            }
        }
    }

    /// Decides every tool call in the answer; in block mode the first
    /// denial refuses the whole answer (recorded).
    async fn decide_answer(
        &self,
        ex: &mut Exchange,
        json: &Value,
    ) -> Result<Vec<CallVerdict>, Response<Body>> {
        let calls = super::calls_in(ex.provider, json);
        let mut verdicts = Vec::with_capacity(calls.len());
        for c in &calls {
            verdicts.push(self.decide(ex, c).await);
        }
        if self.on_deny == OnDeny::Block {
            if let Some((c, v)) = calls.iter().zip(&verdicts).find(|(_, v)| !v.is_allow()) {
                let code = match v {
                    CallVerdict::Deny { reason_code, .. } => reason_code.clone(),
                    CallVerdict::Allow => String::new(),
                };
                let resp = error_response(
                    ex.provider.family(),
                    ErrorKind::Denied,
                    &code,
                    &v.denial_text(c),
                );
                return Err(self.refuse(ex, "blocked", resp).await);
            }
        }
        Ok(verdicts)
    }

    /// A streamed answer: a task pumps upstream events through the
    /// rewriter into the client's body.
    fn stream(
        self: Arc<Self>,
        ex: Exchange,
        resp: Response<hyper::body::Incoming>,
        key: Option<Secret>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let (tx, rx) = mpsc::channel::<Bytes>(32);
        let pump = Pump {
            rw: stream_rewriter(ex.provider),
            proxy: self,
            ex,
            tx,
            parser: sse::Parser::new(),
            full_key: key.as_ref().map(|k| k.0.as_bytes().to_vec()),
        };
        tokio::spawn(pump.run(body));
        let mut r = Response::new(Body::new(ChannelBody { rx }));
        *r.status_mut() = parts.status;
        copy_headers(&parts.headers, r.headers_mut());
        r
    }

    /// Decides one call through the gateway (the hook route's pipeline).
    async fn decide(&self, ex: &mut Exchange, call: &FoundCall) -> CallVerdict {
        let decision = match decide::request_of(ex.runtime, ex.active.as_deref(), call) {
            Ok(req) => self.gateway.runtime_call(&req, ex.caller).await.decision,
            Err(e) => {
                let mut action = format!("{}:{}", ex.runtime, call.name);
                let mut end = action.len().min(MAX_ACTION_LEN);
                while !action.is_char_boundary(end) {
                    end -= 1;
                }
                action.truncate(end);
                let req = ToolCallRequest {
                    active_message_id: ex.active.clone().unwrap_or_default(),
                    action,
                    arguments: decide::raw_arguments(call),
                    tool_use_id: None,
                };
                Some(
                    self.gateway
                        .deny_and_record(&req, ex.caller, e.reason_code(), &e.to_string())
                        .await,
                )
            }
        };
        let verdict = match &decision {
            Some(d) => decide::verdict_of(d),
            None => CallVerdict::Deny {
                reason_code: crate::protocol::reason::INTERNAL_ERROR.into(),
                detail: "no decision".into(),
            },
        };
        ex.calls.push(CallRecord {
            id: call.id.clone(),
            name: call.name.clone(),
            call_id: decision
                .as_ref()
                .map(|d| d.call_id.clone())
                .unwrap_or_default(),
            decision: if verdict.is_allow() { "allow" } else { "deny" },
            reason_code: match &verdict {
                CallVerdict::Allow => "ok".into(),
                CallVerdict::Deny { reason_code, .. } => reason_code.clone(),
            },
        });
        tracing::info!(
            provider = ex.provider.name(),
            tool = %call.name,
            decision = if verdict.is_allow() { "allow" } else { "deny" },
            "forward: tool call decided"
        );
        verdict
    }

    /// Decides (or strips, per config) the provider-run tools the request
    /// declares; true when the request changed.
    async fn provider_tools(&self, ex: &mut Exchange, json: &mut Value) -> bool {
        use super::provider_tools::{find, strip, ProviderTools};
        let found = find(ex.provider, json);
        if found.is_empty() {
            return false;
        }
        let mut gone = Vec::new();
        for t in &found {
            let keep = match self.provider_tools {
                ProviderTools::Strip => false,
                ProviderTools::Decide => {
                    // No call id: decided afresh with every request.
                    let v = self.decide(ex, &t.call).await;
                    if let Some(last) = ex.calls.last_mut() {
                        last.id = format!("provider_tool:{}", t.kind);
                    }
                    v.is_allow()
                }
            };
            if !keep {
                ex.stripped.push(t.kind.clone());
                gone.push(&t.at);
            }
        }
        if gone.is_empty() {
            return false;
        }
        tracing::info!(stripped = ?ex.stripped, "forward: provider-run tools stripped from the request");
        strip(json, &gone);
        true
    }

    /// The exchange's audit row (failures are logged: the decisions
    /// themselves are already durable rows of their own). Charges the
    /// answer's tokens to the spender.
    async fn record(&self, ex: &Exchange) {
        let tokens = ex.usage.input_tokens.unwrap_or(0) + ex.usage.output_tokens.unwrap_or(0);
        if tokens > 0 {
            self.spend.lock().unwrap_or_else(|p| p.into_inner()).charge(
                &spender_of(ex),
                now_secs(),
                tokens,
            );
        }
        let Some(audit) = self.gateway.audit() else {
            return;
        };
        let mut ev = AuditEvent::new(RecordKind::Model, "model_exchange");
        ev.agent = ex.agent.clone().unwrap_or_default();
        ev.pid = ex.caller.pid.unwrap_or(0);
        ev.active_message_id = ex
            .active
            .clone()
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect();
        let summary = Summary {
            agent: ex.agent.as_deref().unwrap_or(""),
            provider: ex.provider.name(),
            runtime: ex.runtime.name(),
            model: &ex.model,
            stream: ex.stream,
            status: ex.status,
            input_tokens: ex.usage.input_tokens,
            output_tokens: ex.usage.output_tokens,
            tool_calls: &ex.calls,
            stripped: &ex.stripped,
        };
        ev.target = serde_json::to_string(&summary).unwrap_or_default();
        if ev.target.len() > crate::audit::record::MAX_FIELD_BYTES {
            ev.target.truncate(0);
        }
        ev.decision = if ex.calls.iter().any(|c| c.decision == "deny")
            || ex.outcome == crate::protocol::reason::SPEND_LIMIT_REACHED
        {
            "deny"
        } else {
            "info"
        }
        .into();
        ev.reason_code = ex.outcome.into();
        ev.policy_id = self
            .gateway
            .current_policy()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        ev.latency_us = ex.started.elapsed().as_micros() as u64;
        if let Err(e) = audit.append(ev).await {
            tracing::error!(error = %e, "forward: could not record the model exchange");
        }
    }
}

/// A non-success answer passed on, unless it quotes the key (some
/// providers quote the masked key in their refusals): then an error of
/// our own, with the upstream's status (the client's retry logic keys on it).
fn upstream_refusal(
    family: Family,
    parts: &hyper::http::response::Parts,
    bytes: Bytes,
    key: Option<&Secret>,
) -> Response<Body> {
    if leaks_key(&bytes, key) {
        let mut r = error_response(
            family,
            ErrorKind::Upstream,
            "upstream_error",
            &format!(
                "the upstream answered {} (its message is withheld: it quoted the key)",
                parts.status.as_u16()
            ),
        );
        *r.status_mut() = parts.status;
        r
    } else {
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = parts.status;
        copy_headers(&parts.headers, r.headers_mut());
        r
    }
}

/// The runtime the request names in its header, else the provider's own;
/// None when the header names none agentd knows.
fn runtime_of(headers: &HeaderMap, provider: Provider) -> Option<Runtime> {
    match headers.get(RUNTIME_HEADER) {
        None => Some(provider.default_runtime()),
        Some(v) => v.to_str().ok().and_then(Runtime::parse),
    }
}

/// The active message the request names, if any.
fn active_message_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ACTIVE_MESSAGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The exchange's model and whether it streams: Gemini names them in the
/// path, the others in the body.
fn name_model_and_stream(ex: &mut Exchange, path: &str, json: &Value) {
    let model = match ex.provider {
        Provider::Gemini => super::gemini::model_of_path(path).unwrap_or_default(),
        _ => json["model"].as_str().unwrap_or_default(),
    };
    ex.model = model.chars().take(128).collect();
    ex.stream = match ex.provider {
        Provider::Gemini => path.ends_with(":streamGenerateContent"),
        _ => json["stream"] == true,
    };
}

/// A streamed answer in flight: upstream events go through the rewriter
/// (tool calls decided as they complete) into the client's body.
struct Pump {
    proxy: Arc<Proxy>,
    ex: Exchange,
    tx: mpsc::Sender<Bytes>,
    rw: Box<dyn super::StreamRewriter>,
    parser: sse::Parser,
    /// The key, to withhold a stream that quotes it.
    full_key: Option<Vec<u8>>,
}

impl Pump {
    /// Pumps until the upstream ends, breaks, stalls or is blocked, or the
    /// client goes; then records the exchange.
    async fn run(mut self, mut body: hyper::body::Incoming) {
        let mut last = false;
        while !last {
            let frame = match tokio::time::timeout(self.proxy.timeout, body.frame()).await {
                Err(_) => {
                    self.fail(
                        "upstream_timeout",
                        ErrorKind::Timeout,
                        "upstream_timeout",
                        "the upstream stream stalled",
                    )
                    .await;
                    break;
                }
                // The end: an event held for the LF after its CR goes now.
                Ok(None) => {
                    last = true;
                    None
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "forward: upstream stream broke");
                    self.fail(
                        "upstream_reset",
                        ErrorKind::Upstream,
                        "upstream_reset",
                        "the upstream connection broke mid-stream",
                    )
                    .await;
                    break;
                }
                Ok(Some(Ok(f))) => Some(f),
            };
            let data = match frame.map(|f| f.into_data()) {
                Some(Ok(d)) => d,
                Some(Err(_)) => continue,
                None => Bytes::new(),
            };
            let pushed = if last {
                Ok(self.parser.end())
            } else {
                self.parser.push(&data)
            };
            let events = match pushed {
                Ok(ev) => ev,
                Err(e) => {
                    let message = e.to_string();
                    self.fail(
                        "upstream_malformed",
                        ErrorKind::Upstream,
                        "upstream_malformed",
                        &message,
                    )
                    .await;
                    break;
                }
            };
            if !self.pass(events).await {
                break;
            }
        }
        self.finish().await;
    }

    /// Sets the outcome and sends the client an error event.
    async fn fail(&mut self, outcome: &'static str, kind: ErrorKind, code: &str, message: &str) {
        self.ex.outcome = outcome;
        let _ = self
            .tx
            .send(Bytes::from(self.rw.error_event(kind, code, message)))
            .await;
    }

    /// Passes events through the rewriter to the client, deciding the tool
    /// calls they complete; false when the stream must stop (the key was
    /// quoted, the client went, or a denial blocked it).
    async fn pass(&mut self, events: Vec<sse::Event>) -> bool {
        for ev in events {
            let step = self.rw.push(ev);
            let mut out = step.emit;
            if !step.calls.is_empty() {
                let mut verdicts = Vec::with_capacity(step.calls.len());
                for c in &step.calls {
                    verdicts.push(self.proxy.decide(&mut self.ex, c).await);
                }
                out.extend(self.rw.resolve(&verdicts, self.proxy.on_deny));
            }
            if let Some(k) = &self.full_key {
                if !k.is_empty() && out.windows(k.len()).any(|w| w == k.as_slice()) {
                    self.fail(
                        "key_withheld",
                        ErrorKind::Upstream,
                        "upstream_error",
                        "the upstream's stream quoted the key; withheld",
                    )
                    .await;
                    return false;
                }
            }
            if !out.is_empty() && self.tx.send(Bytes::from(out)).await.is_err() {
                self.ex.outcome = "client_gone";
                return false;
            }
            if self.rw.ended() {
                self.ex.outcome = "blocked";
                return false;
            }
        }
        true
    }

    /// The stream's end: tool calls left incomplete are dropped (and said
    /// so), the usage and model taken, the client's body closed, the
    /// exchange recorded.
    async fn finish(mut self) {
        // An event never finished is dropped (a client would drop it too).
        let _ = self.parser.finish();
        let dropped = self.rw.abandoned();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "forward: the stream ended inside a tool call; dropped undecided"
            );
            if self.ex.outcome == "ok" {
                self.fail(
                    "incomplete_tool_call",
                    ErrorKind::Upstream,
                    "upstream_malformed",
                    "the upstream stream ended inside a tool call",
                )
                .await;
            }
        }
        self.ex.usage = self.rw.usage();
        if let Some(m) = self.rw.model() {
            if self.ex.model.is_empty() {
                self.ex.model = m.chars().take(128).collect();
            }
        }
        let Pump { proxy, ex, tx, .. } = self;
        drop(tx);
        proxy.record(&ex).await;
    }
}

/// A connected byte stream (TCP or TLS over it).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// One exchange being handled.
struct Exchange {
    caller: Caller,
    agent: Option<String>,
    provider: Provider,
    runtime: Runtime,
    active: Option<String>,
    model: String,
    stream: bool,
    status: u16,
    usage: Usage,
    calls: Vec<CallRecord>,
    /// Provider-run tools taken out of the request.
    stripped: Vec<String>,
    outcome: &'static str,
    started: Instant,
}

/// Who an exchange's spend is charged to: its agent, else the caller's uid.
fn spender_of(ex: &Exchange) -> String {
    match (&ex.agent, ex.caller.uid) {
        (Some(a), _) => a.clone(),
        (None, Some(uid)) => format!("uid:{uid}"),
        (None, None) => "unknown".into(),
    }
}

fn now_secs() -> u64 {
    u64::try_from(crate::gateway::unix_now()).unwrap_or(0)
}

/// A decided call, as the exchange's row lists it.
#[derive(Debug, Serialize)]
struct CallRecord {
    id: String,
    name: String,
    call_id: String,
    decision: &'static str,
    reason_code: String,
}

#[derive(Serialize)]
struct Summary<'a> {
    agent: &'a str,
    provider: &'a str,
    runtime: &'a str,
    model: &'a str,
    stream: bool,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<u64>,
    tool_calls: &'a [CallRecord],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stripped: &'a [String],
}

/// A response body fed by the pump task.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads what the client sent (bounded) before a refusal is answered: a
/// socket closed on unread data resets, and the client would see the
/// reset instead of the answer.
async fn drain(req: Request<Body>, max: usize) {
    let _ = http_body_util::Limited::new(req.into_body(), max)
        .collect()
        .await;
}

/// Request headers never forwarded: credentials (replaced), agentd's own,
/// hop-by-hop, and encodings the proxy could not read.
fn dropped_request_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "cookie"
            | "proxy-authorization"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "accept-encoding"
            | "expect"
    ) || name.starts_with("x-agentd-")
}

fn build_request(
    up: &Upstream,
    family: Family,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Request<http_body_util::Full<Bytes>>, String> {
    let mut uri = format!("{}{}", up.base_path, parts.uri.path());
    if let Some(q) = parts.uri.query() {
        // Gemini's clients may put their key in the query: never forwarded.
        let kept = super::gemini::query_without_key(q);
        if !kept.is_empty() {
            uri.push('?');
            uri.push_str(&kept);
        }
    }
    let mut b = Request::builder().method("POST").uri(uri);
    let headers = b.headers_mut().ok_or("building the request")?;
    for (name, value) in &parts.headers {
        if !dropped_request_header(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let host = if (up.tls && up.port == 443) || (!up.tls && up.port == 80) {
        up.host.clone()
    } else {
        format!("{}:{}", up.host, up.port)
    };
    headers.insert(
        hyper::header::HOST,
        HeaderValue::from_str(&host).map_err(|e| e.to_string())?,
    );
    headers.insert(
        hyper::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some(key) = &up.key {
        let (name, value) = match family {
            Family::OpenAi => (hyper::header::AUTHORIZATION, format!("Bearer {}", key.0)),
            Family::Anthropic => (HeaderName::from_static("x-api-key"), key.0.clone()),
            Family::Gemini => (HeaderName::from_static("x-goog-api-key"), key.0.clone()),
        };
        let mut v =
            HeaderValue::from_str(&value).map_err(|_| "the key is not a valid header value")?;
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    b.body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())
}

/// Response headers passed to the client (not hop-by-hop or lengths, which
/// the rewriting changes).
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "set-cookie"
                | "content-encoding"
        ) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A provider-shaped error response.
pub fn error_response(
    family: Family,
    kind: ErrorKind,
    code: &str,
    message: &str,
) -> Response<Body> {
    let (status, body) = family.error_body(kind, code, message);
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether `body` quotes the key or any 4-byte run of it (masked keys
/// show their last characters).
fn leaks_key(body: &[u8], key: Option<&Secret>) -> bool {
    let Some(key) = key.map(|k| k.0.as_bytes()).filter(|k| k.len() >= 4) else {
        return false;
    };
    let grams: HashSet<&[u8]> = key.windows(4).collect();
    body.windows(4).any(|w| grams.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = parse_url("openai", "https://api.example.com/v1").unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("api.example.com", 443, "")
        );
        let u = parse_url("anthropic", "http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let u = parse_url("openai", "http://[::1]:9/prefix").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 9, "/prefix")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://u@h",
            "http://h:x",
            "http://h/p?q",
        ] {
            assert!(parse_url("openai", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_fragments_are_caught() {
        let k = Secret("sk-canary-0123456789abcdef".into());
        assert!(leaks_key(
            b"Incorrect API key provided: sk-can***********cdef",
            Some(&k)
        ));
        assert!(!leaks_key(
            b"{\"error\":{\"message\":\"overloaded\"}}",
            Some(&k)
        ));
        assert!(!leaks_key(b"anything", None));
    }

    #[test]
    fn credentials_and_agentd_headers_are_not_forwarded() {
        for h in [
            "authorization",
            "x-api-key",
            "x-agentd-active-message",
            "accept-encoding",
            "cookie",
        ] {
            assert!(dropped_request_header(h), "{h}");
        }
        for h in [
            "content-type",
            "anthropic-version",
            "anthropic-beta",
            "openai-beta",
            "user-agent",
        ] {
            assert!(!dropped_request_header(h), "{h}");
        }
    }
}
