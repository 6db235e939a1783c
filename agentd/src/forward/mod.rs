//! Forward mode: agentd is the agent's model-API upstream. It holds the
//! provider key (the agent never sees it), forwards inference requests
//! only, and decides every tool call in the model's answer before the
//! runtime receives it — with the same mapping and pipeline as the hook
//! route (`runtime::mapping`, `Gateway::runtime_call`), so a runtime with no
//! hook at all is governed like one with a hook.
//!
//! Split by job: [`sse`] parses event streams incrementally, [`openai`]
//! (Chat Completions), [`responses`] (OpenAI Responses), [`anthropic`] and
//! [`gemini`] know each provider's wire format (finding tool calls in a
//! body or reassembling them from stream events, rewriting denied ones,
//! error shapes), [`decide`] turns a found call into the runtime call the
//! gateway decides, and [`proxy`] does the I/O (client ↔ upstream).
pub mod anthropic;
pub mod decide;
pub mod gemini;
pub mod openai;
pub mod provider_tools;
pub mod proxy;
pub mod responses;
pub mod spend;
pub mod sse;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::runtime::Runtime;

/// Header naming the runtime whose tool names the calls use (optional).
pub const RUNTIME_HEADER: &str = "x-agentd-runtime";
/// Header carrying the runtime's active-message id.
pub const ACTIVE_MESSAGE_HEADER: &str = "x-agentd-active-message";

/// The inference API a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAiChat,
    /// OpenAI Responses (`POST /v1/responses`).
    OpenAiResponses,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// Gemini (`POST /v1beta/models/{model}:generateContent` and
    /// `:streamGenerateContent`).
    Gemini,
}

/// Whether `path` is a Gemini inference endpoint:
/// `/{v1,v1beta,v1alpha}/models/{model}:{generateContent,streamGenerateContent}`.
fn is_gemini_inference(path: &str) -> bool {
    let Some(rest) = ["/v1beta/models/", "/v1/models/", "/v1alpha/models/"]
        .iter()
        .find_map(|p| path.strip_prefix(p))
    else {
        return false;
    };
    match rest.split_once(':') {
        Some((model, method)) => {
            !model.is_empty()
                && !model.contains('/')
                && matches!(method, "generateContent" | "streamGenerateContent")
        }
        None => false,
    }
}

impl Provider {
    /// The provider whose endpoint `path` (without query) is, if it is an
    /// inference endpoint agentd forwards.
    pub fn of_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Provider::OpenAiChat),
            "/v1/responses" => Some(Provider::OpenAiResponses),
            "/v1/messages" => Some(Provider::Anthropic),
            p if is_gemini_inference(p) => Some(Provider::Gemini),
            _ => None,
        }
    }

    /// The family whose error shape a path's client expects (for 404s of
    /// paths that are not forwarded): Anthropic's under `/v1/messages…` and
    /// `/v1/complete`, Gemini's under `/v1beta`, `/v1alpha` and for
    /// `…:method` paths, else OpenAI's.
    pub fn family_of_path(path: &str) -> Family {
        if path.starts_with("/v1/messages") || path.starts_with("/v1/complete") {
            Family::Anthropic
        } else if path.starts_with("/v1beta")
            || path.starts_with("/v1alpha")
            || path.starts_with("/upload/")
            || path.contains(':')
        {
            Family::Gemini
        } else {
            Family::OpenAi
        }
    }

    /// The upstream family (key, URL, error shape).
    pub fn family(self) -> Family {
        match self {
            Provider::OpenAiChat | Provider::OpenAiResponses => Family::OpenAi,
            Provider::Anthropic => Family::Anthropic,
            Provider::Gemini => Family::Gemini,
        }
    }

    /// Stable name (audit rows).
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAiChat => "openai_chat",
            Provider::OpenAiResponses => "openai_responses",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
        }
    }

    /// Whose tool names to expect when the client does not say
    /// ([`RUNTIME_HEADER`]): Claude Code speaks Messages, Codex speaks
    /// OpenAI's APIs, Gemini CLI speaks Gemini's.
    pub fn default_runtime(self) -> Runtime {
        match self {
            Provider::Anthropic => Runtime::ClaudeCode,
            Provider::Gemini => Runtime::Gemini,
            Provider::OpenAiChat | Provider::OpenAiResponses => Runtime::Codex,
        }
    }
}

/// An upstream provider: one key, one base URL, one error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// OpenAI.
    OpenAi,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
}

impl Family {
    /// Stable name (config keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            Family::OpenAi => "openai",
            Family::Anthropic => "anthropic",
            Family::Gemini => "gemini",
        }
    }

    /// An error body in this provider's own shape.
    pub fn error_body(self, kind: ErrorKind, code: &str, message: &str) -> (u16, Vec<u8>) {
        let v = match self {
            Family::OpenAi => openai::error_value(kind, code, message),
            Family::Anthropic => anthropic::error_value(kind, message),
            Family::Gemini => gemini::error_value(kind, message),
        };
        (kind.status(), v.to_string().into_bytes())
    }
}

/// What kind of failure an error response reports (its status and the
/// provider's error type follow from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not an endpoint agentd forwards.
    NotFound,
    /// The request is malformed or too large.
    BadRequest,
    /// A tool call in the answer was denied (block mode) or the caller may
    /// not use the proxy.
    Denied,
    /// The spend limit is reached.
    RateLimited,
    /// The upstream failed, answered malformed data or could not be reached.
    Upstream,
    /// The upstream did not answer in time.
    Timeout,
}

impl ErrorKind {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::BadRequest => 400,
            ErrorKind::Denied => 403,
            ErrorKind::RateLimited => 429,
            ErrorKind::Upstream => 502,
            ErrorKind::Timeout => 504,
        }
    }
}

/// A tool call found in a model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCall {
    /// The provider's id of the call (`call_…`, `toolu_…`; empty if none).
    pub id: String,
    /// The tool's name as the runtime declared it.
    pub name: String,
    /// Its arguments as JSON text, as the model wrote them (maybe invalid).
    pub arguments: String,
}

/// What was decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallVerdict {
    /// Pass it on unchanged.
    Allow,
    /// Never pass it on.
    Deny {
        /// Stable reason code.
        reason_code: String,
        /// Human explanation.
        detail: String,
    },
}

impl CallVerdict {
    /// True for [`CallVerdict::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, CallVerdict::Allow)
    }

    /// The text that replaces a denied call (the model reads it and can
    /// plan around the refusal).
    pub fn denial_text(&self, call: &FoundCall) -> String {
        match self {
            CallVerdict::Allow => String::new(),
            CallVerdict::Deny {
                reason_code,
                detail,
            } => {
                let mut s = format!(
                    "[agentd] the tool call `{}` was denied: {reason_code}",
                    call.name
                );
                if !detail.is_empty() {
                    s.push_str(": ");
                    s.push_str(detail);
                }
                s
            }
        }
    }
}

pub use crate::config::OnDeny;

/// Token counts an answer reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

/// What a stream rewriter does with one event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Bytes to send the client now.
    pub emit: Vec<u8>,
    /// Complete tool calls to decide; while non-empty, the rewriter holds
    /// what follows them until [`StreamRewriter::resolve`].
    pub calls: Vec<FoundCall>,
}

/// A provider's stream, rewritten event by event: text passes at once,
/// tool calls are held until complete, decided, then emitted or replaced.
pub trait StreamRewriter: Send {
    /// Takes the next upstream event.
    fn push(&mut self, ev: sse::Event) -> Step;
    /// The verdicts of the last [`Step::calls`], in order; returns what to
    /// send the client (in block mode, on a denial, the provider's error
    /// event, after which the stream is [`StreamRewriter::ended`]).
    fn resolve(&mut self, verdicts: &[CallVerdict], on_deny: OnDeny) -> Vec<u8>;
    /// The stream ended upstream: tool calls still held (never completed)
    /// are dropped, never passed undecided; returns their count.
    fn abandoned(&mut self) -> usize;
    /// An error event in the provider's stream shape.
    fn error_event(&self, kind: ErrorKind, code: &str, message: &str) -> Vec<u8>;
    /// True once the rewriter ended the stream (blocked).
    fn ended(&self) -> bool;
    /// Token counts seen so far.
    fn usage(&self) -> Usage;
    /// The model named in the stream, if any.
    fn model(&self) -> Option<String>;
}

/// A non-streamed answer's tool calls (in body order).
pub fn calls_in(provider: Provider, body: &serde_json::Value) -> Vec<FoundCall> {
    match provider {
        Provider::OpenAiChat => openai::chat_calls(body),
        Provider::Anthropic => anthropic::calls(body),
        Provider::OpenAiResponses => responses::calls(body),
        Provider::Gemini => gemini::calls(body),
    }
}

/// Applies the verdicts (in the order of [`calls_in`]) to a non-streamed
/// answer: denied calls become text.
pub fn rewrite(provider: Provider, body: &mut serde_json::Value, verdicts: &[CallVerdict]) {
    match provider {
        Provider::OpenAiChat => openai::chat_rewrite(body, verdicts),
        Provider::Anthropic => anthropic::rewrite(body, verdicts),
        Provider::OpenAiResponses => responses::rewrite(body, verdicts),
        Provider::Gemini => gemini::rewrite(body, verdicts),
    }
}

/// A non-streamed answer's token counts.
pub fn usage_of(provider: Provider, body: &serde_json::Value) -> Usage {
    match provider {
        Provider::OpenAiChat => openai::chat_usage(body),
        Provider::Anthropic => anthropic::usage(body),
        Provider::OpenAiResponses => responses::usage(body),
        Provider::Gemini => gemini::usage(body),
    }
}

/// A stream rewriter for the provider.
pub fn stream_rewriter(provider: Provider) -> Box<dyn StreamRewriter> {
    match provider {
        Provider::OpenAiChat => Box::new(openai::ChatStream::default()),
        Provider::OpenAiResponses => Box::new(responses::Stream::default()),
        Provider::Anthropic => Box::new(anthropic::Stream::default()),
        Provider::Gemini => Box::new(gemini::Stream::default()),
    }
}
