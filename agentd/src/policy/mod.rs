//! Policy as data: the TOML file people write (`schema`), its checked and
//! compiled form (`compile`), and pure evaluation of a tool call (`eval`).
//! Storage and hot reload live in `gateway` (`store`, `Gateway::load_policy`).
pub mod anomaly;
pub mod approval;
pub mod compile;
pub mod effect;
pub mod eval;
pub mod owner_approval;
pub mod path;
pub mod schema;

pub use compile::{compile, CompiledPolicy};
pub use eval::{Allowed, Denial};

/// Errors refusing a policy file; the message says exactly where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML, or not the policy schema (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// Valid TOML that breaks a policy rule.
    #[error("{origin}: `{at}`: {message}")]
    Invalid {
        origin: String,
        at: String,
        message: String,
    },
}

#[cfg(test)]
mod tests;
