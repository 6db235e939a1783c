//! The operator message wire format: fields, limits, canonical bytes and the
//! HMAC-SHA256 signature. Pure: no I/O, no clock. `docs/protocol.md` is the
//! language-neutral description; `vectors` holds the published test vectors.
pub mod canonical;
pub mod error_body;
pub mod message;
pub mod reason;
pub mod vectors;

pub use canonical::{canonical_bytes, sign, verify, DOMAIN_TAG};
pub use error_body::ErrorBody;
pub use message::{MessageError, Signature, SignedMessage};
