//! JSON request bodies (size-limited, UTF-8, unknown fields refused) and JSON
//! error responses carrying a reason code.
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::protocol::reason;

/// An API error: HTTP status plus `{"reason_code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable reason code.
    pub reason_code: String,
    /// Human explanation.
    pub message: String,
}

pub use crate::protocol::ErrorBody;

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, reason_code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason_code: reason_code.to_owned(),
            message: message.into(),
        }
    }

    /// A 500 `internal_error` (a failed task, a broken invariant).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::INTERNAL_ERROR,
            e.to_string(),
        )
    }
}

/// Runs blocking work (SQLite, BPF maps, cgroups) off the async runtime; a
/// task that panicked or was cancelled is a 500.
pub async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            reason_code: self.reason_code,
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The request body limit, set per router.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How long a client may take to send a request body (slow senders hold a
/// connection slot; they are answered 408 and cut off).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body: at most `BodyLimit` bytes, UTF-8, exactly the target type
/// (the types use `deny_unknown_fields`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(64 * 1024, |l| l.0);
        let bytes = read_body(req.into_body(), limit).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Reads a whole request body, at most `limit` bytes within
/// [`BODY_TIMEOUT`] (408 `request_timeout`, 413 `body_too_large`).
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                reason::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                reason::BODY_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            )
        })
}

/// Parses a body: UTF-8 first, then JSON into `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_UTF8,
            format!("request body is not UTF-8: {e}"),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("unknown field") {
            reason::UNKNOWN_FIELD
        } else {
            reason::INVALID_JSON
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, msg)
    })
}
