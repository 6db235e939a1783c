//! BPF maps shared by every program. Names match `agentd_common::maps`.
//!
//! Every map is pinned by name (agentd loads with a pin directory of
//! /sys/fs/bpf/agentd), so grants, bindings and agent registrations outlive a
//! daemon restart and the programs keep enforcing while agentd is down.
use agentd_common::{
    access::{AccessKey, AccessSummary, ACCESS_SUMMARY_ENTRIES},
    AgentCgroup, Binding, ConnectKey, ConnectRule, ExecArgs, ExecExpectation, ExecKey, GrantExpiry,
    Lineage, PendingGrant, PendingKey, ProcessCall, RateWindow, UseTicket, CLAIMANT_ENTRIES,
    COUNTER_SLOTS, FILE_CLAIM_ENTRIES,
};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

/// cgroup id → agent. Processes in other cgroups are never touched.
#[map]
pub static AGENT_CGROUPS: HashMap<u64, AgentCgroup> = HashMap::pinned(1024, 0);

/// tgid → the tool call the process is bound to (inherited across fork).
#[map]
pub static BINDINGS: HashMap<u32, Binding> = HashMap::pinned(65536, 0);

/// (call, device+inode) → exec permission.
#[map]
pub static EXEC_GRANTS: HashMap<ExecKey, GrantExpiry> = HashMap::pinned(16384, 0);

/// tgid → the file the supervisor approved for the exec in flight (seccomp backend).
#[map]
pub static EXEC_EXPECT: HashMap<u32, ExecExpectation> = HashMap::pinned(65536, 0);

/// (call, port, address prefix) → connect permission (longest-prefix match).
#[map]
pub static CONNECT_RULES: LpmTrie<ConnectKey, ConnectRule> = LpmTrie::pinned(16384, 0);

/// Kernel decisions for user space (denials rate-limited; counters are not).
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(1 << 20, 0);

/// Decision counters, never rate-limited.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// agent id → denial-event window (see `agentd_common::DENIAL_EVENTS_PER_SEC`).
#[map]
pub static EVENT_RATE: HashMap<u32, RateWindow> = HashMap::pinned(1024, 0);

/// tgid → who created the process and when (agent processes only).
#[map]
pub static LINEAGE: HashMap<u32, Lineage> = HashMap::pinned(65536, 0);

/// (agent, slot) → a pending grant the requester's tree may claim.
#[map]
pub static PENDING: HashMap<PendingKey, PendingGrant> = HashMap::pinned(8192, 0);

/// Spent uses of grants (see `agentd_common::UseTicket`).
#[map]
pub static USE_TICKETS: HashMap<UseTicket, u8> = HashMap::pinned(65536, 0);

/// (call, tgid) → start time: file claims of pending grants made by the lsm
/// hooks and by the seccomp supervisors (which keep the set in user space
/// too); agentd reads it to keep a spent grant while its claimant lives.
#[map]
pub static FILE_CLAIMS: LruHashMap<ProcessCall, u64> = LruHashMap::pinned(FILE_CLAIM_ENTRIES, 0);

/// (call, tgid) → start time: the processes that may claim a pending grant
/// (requester chain from user space; descendants created after the
/// decision added by `sched_process_fork`).
#[map]
pub static CLAIMANTS: LruHashMap<ProcessCall, u64> = LruHashMap::pinned(CLAIMANT_ENTRIES, 0);

/// call id → the exact arguments its grant names (written by user space).
#[map]
pub static EXEC_ARGS: HashMap<u64, ExecArgs> = HashMap::pinned(4096, 0);

/// tgid → exec allowed (lsm) under a grant naming arguments: the file and
/// call, for `sched_process_exec` to check the new argv against.
#[map]
pub static ARGS_TO_CHECK: HashMap<u32, ExecExpectation> = HashMap::pinned(16384, 0);

/// (call, hook, object) → allowed accesses counted per CPU instead of sent
/// one event each (see `agentd_common::access`); user space flushes them
/// into `access_summary` audit rows.
#[map]
pub static ACCESS_SUMMARIES: PerCpuHashMap<AccessKey, AccessSummary> =
    PerCpuHashMap::pinned(ACCESS_SUMMARY_ENTRIES, 0);
