//! Pending grants and their claims: an allowed call's grant waits for the
//! requester's own process tree to do what it grants.
//!
//! - At install, the grant records its *requester*: the process that asked
//!   (the gateway's SO_PEERCRED pid) and its ancestors inside the same
//!   agent, the requester's leaf cgroup, and the decision time.
//! - A process may claim it by the rule in [`agentd_common::may_claim`]
//!   (shared verbatim with the BPF programs): same cgroup, and either on the
//!   requester chain or created — itself and every creator up to the chain
//!   — at or after the decision, from the `LINEAGE` map the fork tracepoint
//!   fills.
//! - Of several matching pending grants, the oldest the process may claim
//!   is chosen. Each claim spends one use by taking a ticket in
//!   `USE_TICKETS` (atomic between the BPF programs and user space).
//!
//! This module holds the user-space half: requester discovery, the slot
//! table, and the claim the seccomp supervisor makes for exec and open.
use std::path::Path;

use agentd_common::{
    maps, may_claim, Binding, Lineage, PendingGrant, PendingKey, ProcessCall, UseTicket,
    PENDING_SLOTS, REQUESTER_CHAIN,
};
use aya::maps::{HashMap, MapData};

pub use super::pending::{spend_ticket, PendingInfo, Requester, Spend};
use super::{
    bpf_state::{open_pinned_hash, BindingsMap, BpfStateError},
    grant::{KernelGrant, Verdict},
    registry::{AgentEntry, Registry},
};

/// Reason codes of refused claims (stable; see also `protocol::reason`).
pub mod reason {
    /// A pending grant covered the operation, but the process is not of the requester's tree.
    pub const NOT_REQUESTER_TREE: &str = crate::protocol::reason::CLAIM_NOT_REQUESTER_TREE;
    /// A pending grant covered the exec, but its arguments differ from the granted ones.
    pub const EXEC_ARGS_MISMATCH: &str = crate::protocol::reason::EXEC_ARGS_MISMATCH;
    /// A pending grant covered the operation, but its uses are spent.
    pub const GRANT_USED_UP: &str = crate::protocol::reason::GRANT_USED_UP;
    /// A pending grant covered the operation, but the kernel's use-ticket
    /// map is full.
    pub const USE_TICKETS_FULL: &str = crate::protocol::reason::USE_TICKETS_FULL;
    /// A pending grant covered the operation, but it has expired.
    pub const GRANT_EXPIRED: &str = crate::protocol::reason::GRANT_EXPIRED;
    /// No pending grant covers the operation.
    pub const NO_GRANT: &str = crate::protocol::reason::NO_GRANT;
}

/// The parent tgid of a process, from `/proc/PID/stat` (field 4, after the
/// parenthesised command name, which may itself contain `)`).
pub fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The leaf cgroup id (the cgroup directory's inode) of a live process.
pub fn cgroup_id_of_pid(pid: u32) -> Option<u64> {
    cgroup_id_of_path(&super::agent_cgroup::cgroup_of_pid(pid)?)
}

/// The id (directory inode) of the cgroup at `rel`, a path as
/// `/proc/PID/cgroup` gives it.
fn cgroup_id_of_path(rel: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let root = super::cgroup_root::cgroup_root().ok()?;
    let dir = root.join(rel.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The requester of a call made by `pid`: `pid` and its ancestors for as
/// long as `in_agent` holds (at most [`REQUESTER_CHAIN`]). The asking
/// process's cgroup is the one the gateway read for its call (cached while
/// it lives, see [`super::pid_cgroups`]).
pub fn requester_of(pid: u32, in_agent: impl Fn(u32) -> bool) -> Option<Requester> {
    let cgroup = super::pid_cgroups::cgroup_of(pid)?;
    let cgroup_id = cgroup_id_of_path(&cgroup)?;
    let chain = chain_of(pid, in_agent, ppid_of);
    (!chain.is_empty()).then_some(Requester {
        chain,
        cgroup_id,
        cgroup: cgroup.to_string(),
    })
}

/// Whether `tgid` is in the requester's leaf cgroup, by path: `claimant`
/// is the claimant's cgroup path (readable from `/proc` by the deputy).
/// A requester persisted without a path falls back to the cgroup id.
fn in_requester_cgroup(requester: &Requester, tgid: u32, claimant: &str) -> bool {
    if requester.cgroup.is_empty() {
        return cgroup_id_of_pid(tgid) == Some(requester.cgroup_id);
    }
    requester.cgroup == claimant
}

fn chain_of(
    pid: u32,
    in_agent: impl Fn(u32) -> bool,
    ppid: impl Fn(u32) -> Option<u32>,
) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut cur = pid;
    while chain.len() < REQUESTER_CHAIN && cur > 1 && in_agent(cur) && !chain.contains(&cur) {
        chain.push(cur);
        match ppid(cur) {
            Some(p) => cur = p,
            None => break,
        }
    }
    chain
}

/// The lowest slot not in `used`.
pub fn free_slot(used: impl IntoIterator<Item = u32>) -> Option<u32> {
    let used: Vec<u32> = used.into_iter().collect();
    (0..PENDING_SLOTS).find(|s| !used.contains(s))
}

/// The pending grants of `agent` whose grant `check` covers, oldest first,
/// with expired ones reported apart (they only change the refusal reason).
pub fn candidates<'r>(
    reg: &'r Registry,
    agent: &str,
    check: impl Fn(&KernelGrant) -> Verdict,
) -> (Vec<(u64, &'r PendingInfo, &'r KernelGrant)>, bool) {
    let mut out = Vec::new();
    let mut expired = false;
    for (handle, _) in reg.pending_of(agent) {
        let Some((c, p)) = reg
            .calls
            .get(&handle)
            .and_then(|c| c.pending.as_ref().map(|p| (c, p)))
        else {
            continue;
        };
        match check(&c.grant) {
            Verdict::Covered => out.push((handle, p, &c.grant)),
            Verdict::Expired => expired = true,
            Verdict::NotCovered => {}
        }
    }
    out.sort_by_key(|(h, p, _)| (p.decided_at_ns, *h));
    (out, expired)
}

/// Handles to the pinned maps a claimant needs (one set per supervisor thread).
pub struct ClaimMaps {
    lineage: HashMap<MapData, u32, Lineage>,
    pending: HashMap<MapData, PendingKey, PendingGrant>,
    tickets: HashMap<MapData, UseTicket, u8>,
    bindings: BindingsMap,
    /// (grant handle, tgid) of file claims made: a process's further file
    /// operations under a grant it already claimed spend no further use.
    file_claims: std::collections::HashSet<(u64, u32)>,
    /// The same claims in the kernel's `FILE_CLAIMS` (with the claimant's
    /// start time), where the lsm hooks record theirs: what tells the
    /// enforcer a spent grant's claimant still lives.
    kernel_file_claims: HashMap<MapData, ProcessCall, u64>,
}

/// File claims remembered before the set is pruned of finished grants.
const FILE_CLAIMS_PRUNE_AT: usize = 1024;

impl ClaimMaps {
    /// Opens the maps from the instance's pin directory.
    pub fn open(pin_dir: &Path) -> Result<Self, BpfStateError> {
        Ok(Self {
            lineage: open_pinned_hash(pin_dir, maps::LINEAGE)?,
            pending: open_pinned_hash(pin_dir, maps::PENDING)?,
            tickets: open_pinned_hash(pin_dir, maps::USE_TICKETS)?,
            bindings: open_pinned_hash(pin_dir, maps::BINDINGS)?,
            file_claims: Default::default(),
            kernel_file_claims: open_pinned_hash(pin_dir, maps::FILE_CLAIMS)?,
        })
    }

    /// Remembers that `tgid` claimed grant `handle` for a file operation;
    /// prunes grants no longer in `reg` when the set grows.
    fn remember_file_claim(&mut self, reg: &Registry, handle: u64, tgid: u32) {
        if self.file_claims.len() >= FILE_CLAIMS_PRUNE_AT {
            self.file_claims.retain(|(h, _)| reg.calls.contains_key(h));
        }
        self.file_claims.insert((handle, tgid));
        let started = self.lineage(tgid).map_or(0, |l| l.start_ns);
        let key = ProcessCall {
            call_id: handle,
            tgid,
            _pad: 0,
        };
        if let Err(e) = self.kernel_file_claims.insert(key, started, 0) {
            // Unrecorded, the claim does not keep a spent grant: once
            // dropped, the process's further operations under it are
            // refused (fail closed), as after an evicted lsm claim.
            tracing::warn!(error = %e, tgid, handle, "file claim not recorded in FILE_CLAIMS");
        }
    }

    /// Who created `tgid`, and when (agent processes only).
    pub fn lineage(&self, tgid: u32) -> Option<Lineage> {
        self.lineage.get(&tgid, 0).ok()
    }

    /// Spends one use of the pending grant in (agent, slot).
    pub fn spend(&mut self, agent_id: u32, slot: u32) -> Spend {
        let key = PendingKey { agent_id, slot };
        let Ok(mut g) = self.pending.get(&key, 0) else {
            return Spend::UsedUp;
        };
        spend_ticket(&mut self.tickets, &mut g, |g| {
            let _ = self.pending.insert(key, g, 0);
        })
    }

    /// Binds `tgid` to a call (its children inherit in the kernel).
    pub fn bind(&mut self, tgid: u32, binding: Binding) -> Result<(), BpfStateError> {
        self.bindings
            .insert(tgid, binding, 0)
            .map_err(|e| BpfStateError::Map {
                map: maps::BINDINGS,
                message: e.to_string(),
            })
    }
}

/// What a claim needs to know about the operation besides coverage.
pub enum Kind<'a> {
    /// An exec: the claimant is bound to the call; `argv` reads the
    /// arguments (only asked for when a grant names them).
    Exec {
        /// Reads argv from the tracee.
        argv: &'a dyn Fn() -> Option<Vec<Vec<u8>>>,
    },
    /// An open (or create).
    Open,
}

/// The creator path of `tgid` as (tgid, start_ns, creator) steps, for logs.
fn lineage_walk(tgid: u32, lineage: impl Fn(u32) -> Option<Lineage>) -> Vec<(u32, u64, u32)> {
    let mut out = Vec::new();
    let mut cur = tgid;
    while out.len() < agentd_common::CLAIM_DEPTH as usize {
        let Some(l) = lineage(cur) else { break };
        out.push((cur, l.start_ns, l.creator));
        cur = l.creator;
    }
    out
}

/// Whether a grant's argument constraint (if any) admits `argv`.
pub fn args_match(grant: &KernelGrant, argv: Option<&[Vec<u8>]>) -> bool {
    let Some(want) = grant.spec.args.as_ref() else {
        return true;
    };
    let Some(argv) = argv else {
        return false;
    };
    argv.len() == want.len() + 1
        && argv[1..]
            .iter()
            .zip(want)
            .all(|(got, want)| got.as_slice() == want.as_bytes())
}

/// Tries to claim a pending grant of `agent` that `check` covers, for
/// process `tgid`: the oldest one it may claim wins and spends a use; an
/// exec claim binds `tgid` to it. `Err` carries the reason code of the
/// refusal ([`reason::NO_GRANT`] when nothing pending covers it).
pub fn claim(
    reg: &Registry,
    maps: &mut ClaimMaps,
    agent: &AgentEntry,
    tgid: u32,
    check: impl Fn(&KernelGrant) -> Verdict,
    kind: Kind<'_>,
) -> Result<u64, &'static str> {
    let (cands, expired) = candidates(reg, &agent.name, check);
    if cands.is_empty() {
        return Err(if expired {
            reason::GRANT_EXPIRED
        } else {
            reason::NO_GRANT
        });
    }
    let Some(cgroup) = super::agent_cgroup::cgroup_of_pid(tgid) else {
        tracing::debug!(agent = %agent.name, tgid, "claim refused: the claimant's cgroup is unreadable");
        return Err(reason::NOT_REQUESTER_TREE);
    };
    let who = Claimant {
        agent,
        tgid,
        cgroup,
    };
    // Read from the tracee at most once, and only if a grant names arguments.
    let mut argv: Option<Option<Vec<Vec<u8>>>> = None;
    let mut refused = reason::NOT_REQUESTER_TREE;
    let is_exec = matches!(kind, Kind::Exec { .. });
    for (handle, pending, grant) in cands {
        if !of_requester_tree(maps, &who, handle, pending, grant) {
            continue;
        }
        if let Kind::Exec { argv: read } = &kind {
            if grant.spec.args.is_some() {
                let got = argv.get_or_insert_with(read);
                if !args_match(grant, got.as_deref()) {
                    refused = reason::EXEC_ARGS_MISMATCH;
                    continue;
                }
            }
        }
        if take(reg, maps, &who, handle, pending, is_exec)? {
            return Ok(handle);
        }
        refused = reason::GRANT_USED_UP;
    }
    Err(refused)
}

/// The process claiming, as the refusal logs name it.
struct Claimant<'a> {
    agent: &'a AgentEntry,
    tgid: u32,
    /// Its leaf cgroup's path.
    cgroup: String,
}

/// Whether the claimant may claim this pending grant: same leaf cgroup
/// (checked by path), then the shared rule with the grant's own cgroup id
/// standing for the claimant's.
fn of_requester_tree(
    maps: &ClaimMaps,
    who: &Claimant<'_>,
    handle: u64,
    pending: &PendingInfo,
    grant: &KernelGrant,
) -> bool {
    let tgid = who.tgid;
    let kernel = pending.kernel(grant, None);
    let in_cgroup = in_requester_cgroup(&pending.requester, tgid, &who.cgroup);
    if in_cgroup && may_claim(tgid, kernel.cgroup_id, &kernel, |t| maps.lineage(t)) {
        return true;
    }
    // The walk, for whoever debugs a refused claim.
    tracing::debug!(
        agent = %who.agent.name,
        tgid,
        handle,
        in_cgroup,
        claimant_cgroup = %who.cgroup,
        decided_at_ns = kernel.decided_at_ns,
        requesters = ?&pending.requester.chain,
        lineage = ?lineage_walk(tgid, |t| maps.lineage(t)),
        "claim refused: not of the requester's tree"
    );
    false
}

/// Takes the grant for the claimant: spends a use (a file claim the
/// process already made spends none) and binds an exec to the call.
/// `Ok(false)` when its uses are spent; `Err` when an exec cannot be bound.
fn take(
    reg: &Registry,
    maps: &mut ClaimMaps,
    who: &Claimant<'_>,
    handle: u64,
    pending: &PendingInfo,
    is_exec: bool,
) -> Result<bool, &'static str> {
    let (agent, tgid) = (who.agent, who.tgid);
    if !is_exec && maps.file_claims.contains(&(handle, tgid)) {
        // This process already claimed the grant: one tool call's
        // in-process work (mkdir, temp file, rename) is one use.
        return Ok(true);
    }
    match maps.spend(agent.id, pending.slot) {
        Spend::Taken => {}
        Spend::UsedUp => return Ok(false),
        // Fail closed, under a reason of its own: the grant may have uses
        // left, the kernel map cannot count one more.
        Spend::TicketsFull => return Err(reason::USE_TICKETS_FULL),
    }
    if !is_exec {
        maps.remember_file_claim(reg, handle, tgid);
    }
    if is_exec {
        let binding = Binding {
            call_id: handle,
            agent_id: agent.id,
            _pad: 0,
        };
        if let Err(e) = maps.bind(tgid, binding) {
            // Fail closed: an exec claim that cannot bind does not run.
            tracing::error!(error = %e, tgid, handle, "binding a claimed exec failed");
            return Err(crate::protocol::reason::ENFORCER_ERROR);
        }
    }
    tracing::info!(agent = %agent.name, tgid, handle, "pending grant claimed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(chain: &[u32], cgroup: u64, decided: u64) -> PendingGrant {
        let mut requesters = [0; REQUESTER_CHAIN];
        requesters[..chain.len()].copy_from_slice(chain);
        PendingGrant {
            call_id: 1,
            cgroup_id: cgroup,
            decided_at_ns: decided,
            expires_at_ns: 0,
            uses_left: 1,
            n_requesters: chain.len() as u32,
            requesters,
            flags: 0,
            _pad: 0,
        }
    }

    /// A process table: tgid → (creator, start).
    fn table(rows: &[(u32, u32, u64)]) -> impl Fn(u32) -> Option<Lineage> + '_ {
        move |t| {
            rows.iter()
                .find(|r| r.0 == t)
                .map(|&(_, creator, start_ns)| Lineage {
                    start_ns,
                    creator,
                    _pad: 0,
                })
        }
    }

    // The tree of the examples: runtime 10 (started at 1) asked through
    // hook 12 (via shell 11); the decision is at time 100.
    const ROWS: &[(u32, u32, u64)] = &[
        (11, 10, 50),  // sh -c 'agentctl hook' (requester chain)
        (12, 11, 60),  // agentctl hook (requester chain)
        (20, 10, 5),   // a background sibling started before the decision
        (21, 20, 150), // a fresh child of that sibling
        (30, 10, 120), // the runtime's fresh tool process
        (31, 30, 130), // its child
        (40, 10, 99),  // started 1 ns before the decision
        (50, 51, 200), // created by a process agentd never saw created
        (60, 10, 100), // started exactly at the decision
        (70, 71, 140), // created by a pid reused later (71 started after 70)
        (71, 10, 145),
    ];

    #[test]
    fn requester_chain_members_claim() {
        let g = grant(&[12, 11, 10], 7, 100);
        for t in [10, 11, 12] {
            assert!(may_claim(t, 7, &g, table(ROWS)), "{t}");
        }
    }

    #[test]
    fn fresh_descendants_of_the_requester_claim() {
        let g = grant(&[12, 11, 10], 7, 100);
        assert!(may_claim(30, 7, &g, table(ROWS)));
        assert!(may_claim(31, 7, &g, table(ROWS)));
        assert!(may_claim(60, 7, &g, table(ROWS)), "at the decision counts");
    }

    #[test]
    fn siblings_and_their_children_do_not_claim() {
        let g = grant(&[12, 11, 10], 7, 100);
        assert!(!may_claim(20, 7, &g, table(ROWS)), "older sibling");
        assert!(!may_claim(21, 7, &g, table(ROWS)), "fresh child of it");
        assert!(!may_claim(40, 7, &g, table(ROWS)), "1 ns too early");
        assert!(!may_claim(50, 7, &g, table(ROWS)), "unknown creator");
        assert!(!may_claim(70, 7, &g, table(ROWS)), "reused creator pid");
        assert!(!may_claim(99, 7, &g, table(ROWS)), "no lineage at all");
    }

    #[test]
    fn other_cgroups_do_not_claim() {
        let g = grant(&[12, 11, 10], 7, 100);
        assert!(!may_claim(10, 8, &g, table(ROWS)));
        assert!(!may_claim(30, 8, &g, table(ROWS)));
    }

    #[test]
    fn the_walk_is_bounded() {
        // A chain of 20 fresh processes under the runtime: deeper than the
        // walk goes, so the deepest cannot claim while a shallow one can.
        let rows: Vec<(u32, u32, u64)> = (0..20u32)
            .map(|i| (100 + i, if i == 0 { 10 } else { 99 + i }, 200 + i as u64))
            .collect();
        let g = grant(&[10], 7, 100);
        assert!(may_claim(105, 7, &g, table(&rows)));
        assert!(!may_claim(119, 7, &g, table(&rows)));
    }

    #[test]
    fn requester_chain_stops_at_the_agent_boundary() {
        let ppid = |p: u32| Some(p - 1);
        assert_eq!(chain_of(12, |p| p >= 10, ppid), vec![12, 11, 10]);
        assert_eq!(chain_of(12, |_| false, ppid), Vec::<u32>::new());
        let long = chain_of(100, |_| true, ppid);
        assert_eq!(long.len(), REQUESTER_CHAIN);
    }

    #[test]
    fn ppid_parses_past_odd_command_names() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (sh) S 1 42"), Some(1));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn slots_fill_from_the_lowest() {
        assert_eq!(free_slot([]), Some(0));
        assert_eq!(free_slot([0, 1, 3]), Some(2));
        assert_eq!(free_slot(0..PENDING_SLOTS), None);
    }

    #[test]
    fn granted_arguments_must_match_exactly() {
        let mut g = KernelGrant::from_spec(&Default::default(), 1, 0).unwrap();
        let argv = |a: &[&str]| a.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert!(args_match(&g, None), "no constraint, no argv needed");
        g.spec.args = Some(vec!["reset".into(), "--user".into(), "bob".into()]);
        assert!(args_match(
            &g,
            Some(&argv(&["mailctl", "reset", "--user", "bob"]))
        ));
        assert!(!args_match(&g, Some(&argv(&["mailctl", "reset", "--all"]))));
        assert!(!args_match(
            &g,
            Some(&argv(&["mailctl", "reset", "--user", "bob", "--all"]))
        ));
        assert!(!args_match(&g, None), "unreadable argv is refused");
    }
}
