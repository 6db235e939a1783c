//! BPF maps shared by every program. Names match `agentd_common::maps`.
use agentd_common::{
    AgentCgroup, Binding, ConnectKey, ConnectRule, ExecExpectation, ExecKey, GrantExpiry,
    COUNTER_SLOTS,
};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};

/// cgroup id → agent. Processes in other cgroups are never touched.
#[map]
pub static AGENT_CGROUPS: HashMap<u64, AgentCgroup> = HashMap::with_max_entries(1024, 0);

/// tgid → the tool call the process is bound to (inherited across fork).
#[map]
pub static BINDINGS: HashMap<u32, Binding> = HashMap::with_max_entries(65536, 0);

/// (call, device+inode) → exec permission.
#[map]
pub static EXEC_GRANTS: HashMap<ExecKey, GrantExpiry> = HashMap::with_max_entries(16384, 0);

/// tgid → the file the supervisor approved for the exec in flight (seccomp backend).
#[map]
pub static EXEC_EXPECT: HashMap<u32, ExecExpectation> = HashMap::with_max_entries(65536, 0);

/// (call, address, port) → connect permission.
#[map]
pub static CONNECT_RULES: HashMap<ConnectKey, ConnectRule> = HashMap::with_max_entries(16384, 0);

/// Kernel decisions for user space (denials rate-limited; counters are not).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Decision counters, never rate-limited.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
