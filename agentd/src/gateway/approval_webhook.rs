//! The chat-ops webhook: each new pending approval is POSTed, signed, to a
//! chat bridge (`[approvals.webhook]`). Delivery is best effort and never
//! approves anything; its outcome is audited by the queue. The bridge
//! answers on `POST /v1/approvals/{id}/callback` (see `approvals`).
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::config::WebhookConfig;
use crate::policy::approval::{self as rules, PendingApproval, WebhookEvent};

/// Shortest accepted secret, bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Errors setting the webhook up (start-up refuses them).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The secret file could not be read or is too short.
    #[error("approvals.webhook.secret_file {path}: {message}")]
    Secret { path: String, message: String },
    /// The CA bundle for an https URL is unusable.
    #[error(transparent)]
    Tls(#[from] crate::upstream_tls::CaStoreError),
    /// The URL does not parse.
    #[error("approvals.webhook.url: {0}")]
    Url(String),
}

/// A configured webhook.
#[derive(Clone)]
pub struct Webhook {
    url: hyper::Uri,
    secret: Vec<u8>,
    window_secs: i64,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Reads the secret and sets up the client.
    pub fn from_config(c: &WebhookConfig) -> Result<Self, WebhookError> {
        let secret_err = |message: String| WebhookError::Secret {
            path: c.secret_file.display().to_string(),
            message,
        };
        let raw = std::fs::read(&c.secret_file).map_err(|e| secret_err(e.to_string()))?;
        let secret = raw.trim_ascii().to_vec();
        if secret.len() < MIN_SECRET_LEN {
            return Err(secret_err(format!(
                "the secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        let url: hyper::Uri = c
            .url
            .parse()
            .map_err(|e| WebhookError::Url(format!("{e}")))?;
        let tls = if url.scheme_str() == Some("https") {
            crate::upstream_tls::client_config(&c.ca_file)?
        } else {
            // Plain http: no TLS is ever negotiated, so no roots are needed.
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Url(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url,
            secret,
            window_secs: c.callback_window_secs as i64,
            timeout: Duration::from_secs(c.delivery_timeout_secs),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The shared secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Accepted age of a callback's signature, seconds.
    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }

    /// POSTs the signed event for `p`; Ok(status) on a 2xx answer.
    pub async fn deliver(&self, p: &PendingApproval) -> Result<u16, String> {
        let body =
            serde_json::to_vec(&WebhookEvent::pending(p.clone())).map_err(|e| e.to_string())?;
        let ts = super::unix_now();
        let req = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .header(rules::TIMESTAMP_HEADER, ts.to_string())
            .header(
                rules::SIGNATURE_HEADER,
                rules::sign(&self.secret, ts, &body),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| format!("{e}"))?;
        let status = resp.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    }
}
