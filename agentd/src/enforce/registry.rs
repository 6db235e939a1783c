//! What the enforcer knows in user space: agents (cgroup, mode, baseline,
//! credentials) and installed grants by numeric handle. Shared read-mostly
//! between the [`super::Enforcer`] (writer) and the supervisor threads.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{agent_cgroup::AgentCgroupDir, grant::KernelGrant};

/// Enforcement mode of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Deny what no grant covers.
    #[default]
    Enforce,
    /// Record would-deny, block nothing.
    AuditOnly,
}

impl Mode {
    /// The kernel-side encoding.
    pub fn kernel(self) -> agentd_common::Mode {
        match self {
            Mode::Enforce => agentd_common::Mode::Enforce,
            Mode::AuditOnly => agentd_common::Mode::AuditOnly,
        }
    }

    /// Parses `enforce` / `audit-only`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "audit-only" | "audit_only" => Some(Mode::AuditOnly),
            _ => None,
        }
    }
}

/// File-system credentials the supervisor opens files under for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// fsuid.
    pub uid: u32,
    /// fsgid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// One agent.
#[derive(Debug, Clone)]
pub struct AgentEntry {
    /// Agent name (also its cgroup directory name).
    pub name: String,
    /// Index in the BPF maps.
    pub id: u32,
    /// Its cgroup.
    pub cgroup: AgentCgroupDir,
    /// Current mode.
    pub mode: Mode,
    /// What unbound processes may do.
    pub baseline: KernelGrant,
}

/// One installed grant.
#[derive(Debug, Clone)]
pub struct CallEntry {
    /// Tool-call id (the gateway's).
    pub call_id: String,
    /// Active-message id the call echoed.
    pub active_message_id: String,
    /// Agent the call belongs to.
    pub agent: String,
    /// The resolved grant (its `handle` is the key of this entry).
    pub grant: KernelGrant,
    /// Uses the grant was given; `None` = unlimited until expiry. (Uses are
    /// spent by taking tickets in the kernel's `USE_TICKETS` map.)
    pub uses_left: Option<u32>,
    /// Who may claim it, if it is pending (installed for a requester).
    pub pending: Option<super::pending::PendingInfo>,
}

/// A seccomp listener a supervisor answers, by its fd-store name: what a
/// restarted agentd needs to supervise it again when the service manager
/// hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerEntry {
    /// The agent whose processes it belongs to.
    pub agent: String,
    /// Credentials the supervisor opens files under.
    pub creds: Creds,
}

/// The whole user-space view.
#[derive(Debug, Default)]
pub struct Registry {
    /// Agents by name.
    pub agents: BTreeMap<String, AgentEntry>,
    /// Grants by handle.
    pub calls: HashMap<u64, CallEntry>,
    /// Handle of each call id.
    pub handles: HashMap<String, u64>,
    /// Next grant handle (never 0, never with the baseline bit).
    pub next_handle: u64,
    /// Next agent id.
    pub next_agent_id: u32,
    /// Supervised listeners by fd-store name.
    pub listeners: BTreeMap<String, ListenerEntry>,
    /// Each agent's pending slots and the call holding each: an index of
    /// `calls`, kept by [`Self::insert_call`], [`Self::remove_call`] and
    /// [`Self::withdraw_pending`], so choosing a slot or the grants a claim
    /// may take costs the same however many calls are held.
    pub(super) pending_slots: HashMap<String, BTreeMap<u32, u64>>,
}

impl Registry {
    /// The agent with BPF index `id`.
    pub fn agent_by_id(&self, id: u32) -> Option<&AgentEntry> {
        self.agents.values().find(|a| a.id == id)
    }

    /// The call with grant handle `handle`.
    pub fn call(&self, handle: u64) -> Option<&CallEntry> {
        self.calls.get(&handle)
    }

    /// Adds a call (and its handle under its call id).
    pub fn insert_call(&mut self, handle: u64, call: CallEntry) {
        if let Some(p) = &call.pending {
            self.pending_slots
                .entry(call.agent.clone())
                .or_default()
                .insert(p.slot, handle);
        }
        self.handles.insert(call.call_id.clone(), handle);
        self.calls.insert(handle, call);
    }

    /// Removes a call (its handle under its call id too).
    pub fn remove_call(&mut self, handle: u64) -> Option<CallEntry> {
        let call = self.calls.remove(&handle)?;
        self.handles.remove(&call.call_id);
        self.unindex_pending(&call, handle);
        Some(call)
    }

    /// The call no longer holds its pending slot.
    pub fn withdraw_pending(&mut self, handle: u64) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some(p) = call.pending.take() {
            if let Some(slots) = self.pending_slots.get_mut(&call.agent) {
                if slots.get(&p.slot) == Some(&handle) {
                    slots.remove(&p.slot);
                }
            }
        }
    }

    /// `(handle, slot)` of each call holding a pending slot of `agent`.
    pub fn pending_of(&self, agent: &str) -> Vec<(u64, u32)> {
        self.pending_slots
            .get(agent)
            .map(|slots| slots.iter().map(|(s, h)| (*h, *s)).collect())
            .unwrap_or_default()
    }

    fn unindex_pending(&mut self, call: &CallEntry, handle: u64) {
        let Some(p) = &call.pending else { return };
        if let Some(slots) = self.pending_slots.get_mut(&call.agent) {
            if slots.get(&p.slot) == Some(&handle) {
                slots.remove(&p.slot);
            }
            if slots.is_empty() {
                self.pending_slots.remove(&call.agent);
            }
        }
    }
}
