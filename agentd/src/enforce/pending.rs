//! The data of a pending grant, below the claim logic that uses it: who
//! asked (the requester), the pending part persisted with an installed
//! grant, and the use-ticket walk both the claims and explicit binds spend
//! uses with. Kept apart so the registry and the BPF state can hold and
//! spend pending grants without importing the claim rule above them.
use agentd_common::{
    PendingGrant, UseTicket, PENDING_NAMES_ARGS, REQUESTER_CHAIN, TICKET_TRIES, UNLIMITED_USES,
};
use aya::maps::{HashMap, MapData};
use serde::{Deserialize, Serialize};

use super::grant::KernelGrant;

/// `BPF_NOEXIST`: a ticket is taken only if nobody holds it yet.
const BPF_NOEXIST: u64 = 1;

/// Who asked for a call: the requester chain and its leaf cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// tgids: the asking process first, then its ancestors in the agent.
    pub chain: Vec<u32>,
    /// Leaf cgroup id of the asking process.
    pub cgroup_id: u64,
    /// Its path under the cgroup root (as `/proc/PID/cgroup` says): the
    /// supervisor, an unprivileged deputy, can read that for a claimant
    /// but cannot stat cgroup directories under agentd's 0700 slice.
    #[serde(default)]
    pub cgroup: String,
}

/// The pending part of an installed grant (persisted with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInfo {
    /// Slot in the agent's `PENDING` entries.
    pub slot: u32,
    /// Who asked.
    pub requester: Requester,
    /// CLOCK_BOOTTIME ns of the decision.
    pub decided_at_ns: u64,
}

impl PendingInfo {
    /// The kernel-side record of this pending grant.
    pub fn kernel(&self, grant: &KernelGrant, uses: Option<u32>) -> PendingGrant {
        let mut requesters = [0u32; REQUESTER_CHAIN];
        let n = self.requester.chain.len().min(REQUESTER_CHAIN);
        requesters[..n].copy_from_slice(&self.requester.chain[..n]);
        PendingGrant {
            call_id: grant.handle,
            cgroup_id: self.requester.cgroup_id,
            decided_at_ns: self.decided_at_ns,
            expires_at_ns: grant.expires_at_ns,
            uses_left: uses.unwrap_or(UNLIMITED_USES),
            n_requesters: n as u32,
            requesters,
            flags: if grant.spec.args.is_some() {
                PENDING_NAMES_ARGS
            } else {
                0
            },
            _pad: 0,
        }
    }
}

/// Takes the highest free ticket at or below `g.uses_left` (the same walk
/// the BPF side makes) and stores the new hint through `store`.
pub fn spend_ticket(
    tickets: &mut HashMap<MapData, UseTicket, u8>,
    g: &mut PendingGrant,
    store: impl FnOnce(PendingGrant),
) -> bool {
    if g.uses_left == UNLIMITED_USES {
        return true;
    }
    let mut n = g.uses_left;
    let mut tries = 0;
    let mut won = false;
    while tries < TICKET_TRIES && n > 0 {
        let ticket = UseTicket {
            call_id: g.call_id,
            n,
            _pad: 0,
        };
        if tickets.insert(ticket, 1, BPF_NOEXIST).is_ok() {
            won = true;
            n -= 1;
            break;
        }
        n -= 1;
        tries += 1;
    }
    if won || n == 0 {
        g.uses_left = n;
        store(*g);
    }
    won
}
