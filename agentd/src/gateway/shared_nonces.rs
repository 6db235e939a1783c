//! A nonce register shared by several hosts (fleet mode): after a message
//! passes every local check, its (operator, nonce) is claimed there too, so
//! a message accepted on one host is refused as a replay on another. The
//! gateway only defines the question; `fleet::nonces` answers it.
use std::future::Future;
use std::pin::Pin;

/// What the shared register said about a verified message's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedNonceVerdict {
    /// First use fleet-wide (or accepted under the lease while the
    /// register is unreachable): accept the message.
    Fresh,
    /// Already used, on `host`.
    Replayed {
        /// The host that accepted it first (empty if unknown).
        host: String,
    },
    /// The register cannot be asked and the lease is over: refuse
    /// (`fleet_unavailable`).
    Unavailable {
        /// Why, for the refusal's message.
        detail: String,
    },
}

/// The shared register (see the module doc).
pub trait SharedNonces: Send + Sync {
    /// Claims `nonce` for `operator` until `expires_at` (Unix seconds) at
    /// Unix time `now`; waits a bounded time.
    fn claim<'a>(
        &'a self,
        operator: &'a str,
        nonce: &'a str,
        now: i64,
        expires_at: i64,
    ) -> Pin<Box<dyn Future<Output = SharedNonceVerdict> + Send + 'a>>;
}
