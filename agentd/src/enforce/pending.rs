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

/// What spending a use came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// A ticket was taken: the use is the caller's.
    Taken,
    /// Every ticket is taken: the grant is spent (`grant_used_up`).
    UsedUp,
    /// `USE_TICKETS` is full: no ticket can be taken for any grant
    /// (`use_tickets_full`); refused, though the grant may have uses left.
    TicketsFull,
}

/// Whether a map update failed because the map is full (`E2BIG`), not
/// because the key was there (`EEXIST`).
fn map_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

/// Takes the highest free ticket at or below `g.uses_left` (the same walk
/// the BPF side makes) and stores the new hint through `store`.
pub fn spend_ticket(
    tickets: &mut HashMap<MapData, UseTicket, u8>,
    g: &mut PendingGrant,
    store: impl FnOnce(PendingGrant),
) -> Spend {
    if g.uses_left == UNLIMITED_USES {
        return Spend::Taken;
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
        match tickets.insert(ticket, 1, BPF_NOEXIST) {
            Ok(()) => {
                won = true;
                n -= 1;
                break;
            }
            Err(e) if map_full(&e) => {
                // Loud: every use-counted claim and bind fails until
                // tickets are freed, and the refusals must not read as
                // spent grants.
                tracing::error!(handle = g.call_id, ticket = n,
                    "USE_TICKETS is full: a use of this grant cannot be counted, so it is refused (use_tickets_full)");
                return Spend::TicketsFull;
            }
            Err(_) => {}
        }
        n -= 1;
        tries += 1;
    }
    if won || n == 0 {
        g.uses_left = n;
        store(*g);
    }
    if won {
        Spend::Taken
    } else {
        Spend::UsedUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(call_id: u64, n: u32) -> UseTicket {
        UseTicket {
            call_id,
            n,
            _pad: 0,
        }
    }

    fn grant(call_id: u64, uses_left: u32) -> PendingGrant {
        PendingGrant {
            call_id,
            uses_left,
            ..Default::default()
        }
    }

    /// A real two-entry ticket map (BPF_MAP_TYPE_HASH, as `USE_TICKETS`):
    /// when other grants' tickets fill it, a claim of a grant with its use
    /// left is refused as a full map, not as a spent grant, and its hint
    /// is untouched; with room again the same claim takes its ticket.
    #[test]
    fn a_full_ticket_map_is_told_apart_from_a_spent_grant() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: creating a BPF map needs root");
            return;
        }
        let mut tickets = HashMap::<MapData, UseTicket, u8>::create(2, 0).expect("BPF map");
        tickets.insert(ticket(9, 1), 1, 0).unwrap();
        tickets.insert(ticket(9, 2), 1, 0).unwrap();
        let mut g = grant(1, 1);
        let mut stored = 0;
        assert_eq!(
            spend_ticket(&mut tickets, &mut g, |_| stored += 1),
            Spend::TicketsFull
        );
        assert_eq!((g.uses_left, stored), (1, 0));
        // Control: room for one ticket.
        tickets.remove(&ticket(9, 2)).unwrap();
        assert_eq!(
            spend_ticket(&mut tickets, &mut g, |_| stored += 1),
            Spend::Taken
        );
        assert_eq!((g.uses_left, stored), (0, 1));
        assert!(tickets.get(&ticket(1, 1), 0).is_ok());
        // Spent now, and the map full again: said as spent, which it is.
        assert_eq!(spend_ticket(&mut tickets, &mut g, |_| ()), Spend::UsedUp);
        // A taken ticket (EEXIST) is a spent use, not a full map.
        tickets.remove(&ticket(9, 1)).unwrap();
        let mut again = grant(1, 1);
        assert_eq!(
            spend_ticket(&mut tickets, &mut again, |_| ()),
            Spend::UsedUp
        );
    }
}
