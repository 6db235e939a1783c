//! Who still holds a grant, from the kernel's maps: a process bound to it
//! (`BINDINGS`: children inherit at fork, the exit tracepoint removes a
//! process's entry) or a process that claimed it for its file operations
//! (`FILE_CLAIMS`, written by the lsm hooks and the seccomp supervisors
//! with the claimant's start time; the claimant lives while its `LINEAGE`
//! record, removed at exit, has that start time). The spent-grant sweep
//! walks these maps through handles of its own, so the walk never holds
//! the lock the installs and binds take.
use std::{collections::HashSet, path::Path};

use agentd_common::{maps, Binding, Lineage, ProcessCall};
use aya::maps::{HashMap, MapData};

use super::bpf_state::{open_pinned_hash, BpfStateError};

/// What a walk found about the grants asked after.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holders {
    /// The grants a live process holds.
    pub held: HashSet<u64>,
    /// The recorded file claims (grant handle, tgid) of the others: what
    /// to forget once they are dropped.
    pub file_claims: Vec<(u64, u32)>,
}

/// Handles to the maps that say who holds a grant.
pub struct HolderMaps {
    bindings: HashMap<MapData, u32, Binding>,
    file_claims: HashMap<MapData, ProcessCall, u64>,
    lineage: HashMap<MapData, u32, Lineage>,
}

impl HolderMaps {
    /// Opens the instance's pinned maps.
    pub fn open(pin_dir: &Path) -> Result<Self, BpfStateError> {
        Ok(Self {
            bindings: open_pinned_hash(pin_dir, maps::BINDINGS)?,
            file_claims: open_pinned_hash(pin_dir, maps::FILE_CLAIMS)?,
            lineage: open_pinned_hash(pin_dir, maps::LINEAGE)?,
        })
    }

    /// Which of `handles` a live process holds. A file claim recorded
    /// without a start time (a claimant with no lineage record) counts
    /// while a process of that pid exists.
    pub fn walk(&self, handles: &HashSet<u64>) -> Holders {
        let mut held: HashSet<u64> = self
            .bindings
            .iter()
            .filter_map(Result::ok)
            .map(|(_, b)| b.call_id)
            .filter(|h| handles.contains(h))
            .collect();
        let mut claims = Vec::new();
        for (claim, started) in self.file_claims.iter().filter_map(Result::ok) {
            if !handles.contains(&claim.call_id) {
                continue;
            }
            let alive = if started == 0 {
                Path::new(&format!("/proc/{}", claim.tgid)).exists()
            } else {
                self.lineage
                    .get(&claim.tgid, 0)
                    .is_ok_and(|l| l.start_ns == started)
            };
            if alive {
                held.insert(claim.call_id);
            }
            claims.push((claim.call_id, claim.tgid));
        }
        claims.retain(|(h, _)| !held.contains(h));
        Holders {
            held,
            file_claims: claims,
        }
    }

    /// Deletes these file claims (their grants were dropped).
    pub fn forget(&mut self, claims: &[(u64, u32)]) {
        for &(call_id, tgid) in claims {
            let _ = self.file_claims.remove(&ProcessCall {
                call_id,
                tgid,
                _pad: 0,
            });
        }
    }
}
