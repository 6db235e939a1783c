//! Agents as administrators configure them: their settings ([`def`]), the
//! store that keeps them and their inboxes ([`store`]), and the manager
//! that turns settings into enforcement (baselines composed from profiles,
//! re-applied on every change and every policy reload) and queues operators'
//! messages for the driver ([`manager`]).
pub mod def;
pub mod inbox;
pub mod manager;
pub mod store;

pub use def::AgentDef;
pub use inbox::{InboxEntry, RunResult};
pub use manager::{AgentManager, AgentView};

use crate::enforce::EnforceError;
use crate::profile::ProfileError;

/// Errors of agent configuration and inboxes.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// A setting is invalid.
    #[error("agent `{agent}`: `{field}`: {message}")]
    Invalid {
        /// The agent.
        agent: String,
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
    /// A profile is invalid, unknown, or needs a value the agent lacks.
    #[error("agent `{agent}`: {source}")]
    Profile {
        /// The agent.
        agent: String,
        /// The profile error.
        source: ProfileError,
    },
    /// No agent by that name is configured.
    #[error("no agent `{agent}` is configured (agentctl agent add)")]
    Unknown {
        /// The name.
        agent: String,
    },
    /// Another configured agent already runs as this uid.
    #[error("agent `{agent}`: user `{user}` (uid {uid}) is already the user of agent `{other}`; agents sharing a uid are not isolated from each other: give `{agent}` its own user (e.g. useradd --system --gid agentd-agent --create-home agentd-{agent}), or share on purpose with --share-user")]
    SharedUser {
        /// The agent.
        agent: String,
        /// Its user.
        user: String,
        /// The uid.
        uid: u32,
        /// The agent already running as that uid.
        other: String,
    },
    /// The agent user does not exist.
    #[error("agent `{agent}`: user `{user}` does not exist")]
    UnknownUser {
        /// The agent.
        agent: String,
        /// The user.
        user: String,
    },
    /// `model_api = "proxy"` without a forward proxy.
    #[error("agent `{agent}`: model_api = \"proxy\" needs agentd's forward proxy, which this agentd does not run; name a direct upstream HOST:PORT")]
    ProxyUnavailable {
        /// The agent.
        agent: String,
    },
    /// A direct model upstream's host name did not resolve.
    #[error("agent `{agent}`: model_api host `{host}` did not resolve: {message}")]
    Unresolved {
        /// The agent.
        agent: String,
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error("agents store {path}: {message}")]
    Store {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Enforcement refused or is unavailable.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// Enforcement has not started (or failed to).
    #[error("enforcement is unavailable: {reason}")]
    EnforcementUnavailable {
        /// Why.
        reason: String,
    },
    /// No inbox entry by that id for that agent.
    #[error("agent `{agent}` has no inbox entry {id}")]
    UnknownEntry {
        /// The agent.
        agent: String,
        /// Entry id.
        id: i64,
    },
    /// The entry is not running (a result was already recorded).
    #[error("inbox entry {id} is {state}, not running")]
    EntryState {
        /// Entry id.
        id: i64,
        /// Its state.
        state: String,
    },
}

impl AgentsError {
    /// Stable snake_case reason code.
    pub fn reason_code(&self) -> &'static str {
        use crate::protocol::reason;
        match self {
            AgentsError::Invalid { .. } => reason::INVALID_AGENT,
            AgentsError::Profile { source, .. } => source.reason_code(),
            AgentsError::Unknown { .. } => reason::UNKNOWN_AGENT,
            AgentsError::UnknownUser { .. } => reason::UNKNOWN_USER,
            AgentsError::SharedUser { .. } => reason::AGENT_USER_SHARED,
            AgentsError::ProxyUnavailable { .. } => reason::MODEL_API_UNAVAILABLE,
            AgentsError::Unresolved { .. } => reason::MODEL_API_UNRESOLVED,
            AgentsError::Store { .. } => reason::STORE_ERROR,
            AgentsError::Enforce(e) => e.reason_code(),
            AgentsError::EnforcementUnavailable { .. } => "enforcement_unavailable",
            AgentsError::UnknownEntry { .. } => reason::UNKNOWN_INBOX_ENTRY,
            AgentsError::EntryState { .. } => reason::INBOX_ENTRY_NOT_RUNNING,
        }
    }
}
