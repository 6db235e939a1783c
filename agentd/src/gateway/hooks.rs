//! Hook point for what follows an allow: the receipt sealed with the allow's
//! audit row, then the enforcement grant install (wired by the daemon).
use crate::audit::Companion;
use crate::grant_spec::GrantSpec;

/// An allowed, durably audited tool call, as hooks see it.
#[derive(Debug, Clone)]
pub struct AllowedCall<'a> {
    /// Call id (32 hex digits).
    pub call_id: &'a str,
    /// The active-message id it echoed.
    pub active_message_id: &'a str,
    /// Operator of the originating message.
    pub operator: &'a str,
    /// Session of the originating message.
    pub session: &'a str,
    /// Action name.
    pub action: &'a str,
    /// Kernel grant, if the action has a template.
    pub grant: Option<&'a GrantSpec>,
    /// PID of the API caller (SO_PEERCRED), if known — the agent's runtime.
    pub peer_pid: Option<u32>,
    /// The agent whose cgroup holds `peer_pid` (resolved once per call by
    /// the gateway), None for a caller outside every agent.
    pub agent: Option<&'a str>,
    /// UID of the API caller, if known.
    pub peer_uid: Option<u32>,
    /// Audit row of the allow (seq, hash, timestamp), if an audit log is attached.
    pub audit: Option<&'a crate::audit::Committed>,
    /// The policy hides the call's target on its receipt card.
    pub receipt_redact: bool,
}

/// Why a hook overturned an allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{hook}: {message}")]
pub struct HookError {
    /// Hook name.
    pub hook: String,
    /// Stable reason code the call is denied with (e.g. `enforcement_unavailable`).
    pub reason_code: String,
    /// Human explanation.
    pub message: String,
}

/// A row a hook stores in the allow's own audit transaction.
pub struct AllowCompanion {
    /// Reason code the call is denied with if the row cannot be stored.
    pub reason_code: &'static str,
    /// The row.
    pub companion: Box<dyn Companion>,
}

/// Runs after every durably audited allow, before the caller hears it.
/// An error turns the answer into a denial (recorded in the audit log).
pub trait AllowHook: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// What to store with the allow's audit row, in the same transaction
    /// (a receipt's sealed claims and tag). Called before the row is
    /// written (`call.audit` is None); an error denies the call.
    fn companion(&self, call: &AllowedCall<'_>) -> Result<Option<AllowCompanion>, HookError> {
        let _ = call;
        Ok(None)
    }
    /// What to store with the row that overturns an allow after its row
    /// was written, undoing what [`AllowHook::companion`] stored.
    fn void_companion(
        &self,
        call: &AllowedCall<'_>,
        reason_code: &str,
    ) -> Option<Box<dyn Companion>> {
        let _ = (call, reason_code);
        None
    }
    /// Acts on the allowed call (install a grant, enqueue a receipt, …).
    fn after_allow(&self, call: &AllowedCall<'_>) -> Result<(), HookError>;
    /// Undoes what `after_allow` did for `call`, because a later hook failed
    /// and the answer became a denial (fail closed: an installed grant must
    /// not stay usable under a denied call id). Hooks whose effect is
    /// harmless after a denial keep the default, which does nothing.
    fn rollback(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        let _ = call;
        Ok(())
    }
    /// The messages `active_message_ids` lost their tool rights (their
    /// operator was revoked or its key rotated): end whatever their allowed
    /// calls still hold (installed grants) at once. Returns how many calls
    /// were ended.
    fn revoke_messages(&self, active_message_ids: &[String]) -> Result<usize, HookError> {
        let _ = active_message_ids;
        Ok(0)
    }
}

/// Tells which agent a process belongs to (implemented by the enforcement
/// layer from the process's cgroup). Used to key runtime tool-call ids per
/// agent and to answer "not an agent" to hooks run outside every agent.
pub trait AgentResolver: Send + Sync {
    /// The agent `pid` belongs to, or None if it is in no agent.
    fn agent_of_pid(&self, pid: u32) -> Option<String>;
}
