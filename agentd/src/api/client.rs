//! A small HTTP/1.1 client for the API over the Unix socket (keep-alive, one
//! connection per `Client`). Used by `agentctl`, the integration tests and
//! the benchmark; other components may use it too.
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::json::ErrorBody;
use crate::gateway::{Decision, IngestOutcome, RuntimeCallAnswer, ToolCallRequest};
use crate::protocol::SignedMessage;
use crate::runtime::RuntimeCallRequest;

/// Errors talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to agentd at {path}: {source} (is the daemon running? --socket / AGENTD_SOCKET)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// HTTP-level failure.
    #[error("HTTP error talking to agentd: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// The daemon answered with an error.
    #[error("agentd refused ({status}): {reason_code}: {message}")]
    Api {
        status: u16,
        reason_code: String,
        message: String,
    },
    /// The daemon's answer was not the expected JSON.
    #[error("unexpected response ({status}): {message}")]
    Decode { status: u16, message: String },
}

impl ClientError {
    /// The API reason code, if the daemon answered with one.
    pub fn reason_code(&self) -> Option<&str> {
        match self {
            Self::Api { reason_code, .. } => Some(reason_code),
            _ => None,
        }
    }
}

/// One keep-alive connection to the API.
#[derive(Debug)]
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to the Unix socket (must be called inside a tokio runtime).
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection closed");
            }
        });
        Ok(Self { sender })
    }

    /// Sends raw body bytes; returns status and body bytes.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agentd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// Sends JSON (or nothing) and decodes a JSON answer; non-2xx becomes `ClientError::Api`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Request(e.to_string()))?,
            None => Vec::new(),
        };
        let (status, resp) = self.raw(method, path, bytes).await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&resp) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    reason_code: e.reason_code,
                    message: e.message,
                },
                Err(_) => ClientError::Decode {
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&resp).into_owned(),
                },
            });
        }
        serde_json::from_slice(&resp).map_err(|e| ClientError::Decode {
            status: status.as_u16(),
            message: format!("{e}: {}", String::from_utf8_lossy(&resp)),
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    /// `POST /v1/messages`.
    pub async fn submit_message(
        &mut self,
        msg: &SignedMessage,
    ) -> Result<IngestOutcome, ClientError> {
        self.call(Method::POST, "/v1/messages", Some(msg)).await
    }

    /// `POST /v1/tool-calls`.
    pub async fn tool_call(&mut self, req: &ToolCallRequest) -> Result<Decision, ClientError> {
        self.call(Method::POST, "/v1/tool-calls", Some(req)).await
    }

    /// `POST /v1/runtime-calls`.
    pub async fn runtime_call(
        &mut self,
        req: &RuntimeCallRequest,
    ) -> Result<RuntimeCallAnswer, ClientError> {
        self.call(Method::POST, "/v1/runtime-calls", Some(req))
            .await
    }
}

/// Runs `f` with a connected client on a private current-thread runtime
/// (for synchronous callers such as `agentctl`).
pub fn blocking<T, F, Fut>(socket: &Path, f: F) -> Result<T, ClientError>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Connect {
            path: socket.to_owned(),
            source: e,
        })?;
    rt.block_on(async {
        let c = Client::connect(socket).await?;
        f(c).await
    })
}
