//! Runtime profiles: what an agent runtime needs to live (its install dir,
//! node or native binary, home and config dirs, DNS, CA certificates, temp
//! dir) and where it reaches its model API. A profile is data
//! (`policies/profiles/<name>.toml`, embedded in the binary, overridable by
//! `[profiles.NAME]` in the policy); an agent's baseline is composed from
//! named profiles plus the agent's own extra paths.
//!
//! Pure: parsing, placeholder expansion and composition do no I/O. The
//! values of the placeholders (the agent user's home, DNS servers from
//! `/etc/resolv.conf`) are looked up by the caller (`agents::manager`).
pub mod builtin;
pub mod compose;
pub mod expand;
pub mod learn;
pub mod schema;

pub use compose::{compose, expand_protected, Extras, NoProtectedFiles, ProtectedFiles};
pub use expand::{check_entry, Vars, PLACEHOLDERS};
pub use schema::{ModelApiInfo, ProfileDef};

/// Errors refusing a profile or a composition; each names the exact place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not valid TOML, or not the profile schema (unknown key, wrong type).
    #[error("profile {origin}: {message}")]
    Parse {
        /// File or policy section.
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// An entry breaks a rule (unknown placeholder, relative path, bad destination).
    #[error("`{at}`: {message}")]
    Invalid {
        /// Where: `profiles.NAME.read[2]`.
        at: String,
        /// Why.
        message: String,
    },
    /// An agent names a profile that does not exist.
    #[error("unknown profile `{name}` (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Names that exist.
        known: String,
    },
    /// A placeholder has no value for this agent.
    #[error("`{at}` uses {{{placeholder}}}, which has no value for this agent: {hint}")]
    Unset {
        /// Where.
        at: String,
        /// The placeholder name.
        placeholder: String,
        /// What to set.
        hint: String,
    },
}

impl ProfileError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            ProfileError::Parse { .. } | ProfileError::Invalid { .. } => "invalid_profile",
            ProfileError::Unknown { .. } => "unknown_profile",
            ProfileError::Unset { .. } => "profile_placeholder_unset",
        }
    }
}
