//! The operator message wire format: fields, limits, canonical bytes and the
//! HMAC-SHA256 signature. Pure: no I/O, no clock. `docs/protocol.md` is the
//! language-neutral description; `vectors` holds the published test vectors.
pub mod canonical;
pub mod delegation;
pub mod error_body;
pub mod message;
pub mod reason;
pub mod scope;
pub mod vectors;

pub use canonical::{
    canonical_bytes, canonical_bytes_v2, sign, verify, verify_ed25519, V2Fields, DOMAIN_TAG,
    DOMAIN_TAG_V2,
};
pub use error_body::ErrorBody;
pub use message::{MessageError, MessageSig, Signature, SignedMessage};
pub use scope::{scope_names_path, Scope, ScopeEntry};
