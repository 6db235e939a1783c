//! One tool call, one decision: decisions keyed by (agent, active message,
//! runtime tool-call id). The same call can reach agentd on two routes (the
//! runtime's hook, then forward mode or the MCP gateway); the second finds
//! the first decision — allow or deny — and runs no allow hooks, so no
//! second grant is left claimable. Concurrent requests for one key wait for
//! the first to finish (a per-key once-cell), so they cannot race past it.
//!
//! Bounded: an entry lives as long as its active message (pruned with it),
//! and the table holds at most [`MAX_ENTRIES`]; when it is full of live
//! entries a new id is refused (`too_many_tool_calls`) rather than decided
//! without memory.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::decide::Decision;

/// Most remembered tool-call ids, over all agents.
pub const MAX_ENTRIES: usize = 65_536;

/// Who asked, what for, under which runtime id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    /// Agent name, or `uid:N` for a caller outside every agent.
    pub agent: String,
    /// The active-message id the call echoed.
    pub active_message_id: String,
    /// The runtime's tool-call id.
    pub tool_use_id: String,
}

/// The first request's call and its decision.
#[derive(Debug)]
pub(crate) struct Decided {
    /// Action of the first request.
    pub action: String,
    /// Arguments of the first request.
    pub arguments: Map<String, Value>,
    /// Its decision.
    pub decision: Decision,
}

/// One key's slot: filled once by the first request.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub cell: OnceCell<Decided>,
    expires_at: i64,
}

/// The table.
#[derive(Debug, Default)]
pub(crate) struct CallIds {
    map: Mutex<HashMap<CallKey, Arc<Slot>>>,
}

/// The table is full of live entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl CallIds {
    /// The slot for `key` (created empty if new), kept until `expires_at`.
    pub fn slot(&self, key: CallKey, expires_at: i64, now: i64) -> Result<Arc<Slot>, Full> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, s| s.expires_at > now);
            if map.len() >= MAX_ENTRIES {
                return Err(Full);
            }
        }
        let slot = Arc::new(Slot {
            cell: OnceCell::new(),
            expires_at,
        });
        map.insert(key, slot.clone());
        Ok(slot)
    }

    /// Drops entries whose active message has expired.
    pub fn prune(&self, now: i64) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| s.expires_at > now);
    }

    /// Number of remembered ids.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> CallKey {
        CallKey {
            agent: "a".into(),
            active_message_id: "m".into(),
            tool_use_id: format!("toolu_{i}"),
        }
    }

    #[test]
    fn same_key_same_slot_and_bounded() {
        let t = CallIds::default();
        let a = t.slot(key(1), 100, 0).unwrap();
        let b = t.slot(key(1), 100, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        for i in 2..=MAX_ENTRIES {
            t.slot(key(i), 100, 0).unwrap();
        }
        assert_eq!(t.len(), MAX_ENTRIES);
        // Full of live entries: refused, not forgotten.
        assert_eq!(t.slot(key(0), 100, 0).unwrap_err(), Full);
        // Once they expire, room is made.
        assert!(t.slot(key(0), 300, 200).is_ok());
        assert_eq!(t.len(), 1);
        t.prune(400);
        assert_eq!(t.len(), 0);
    }
}
