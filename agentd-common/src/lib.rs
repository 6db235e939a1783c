//! Types shared by agentd (user space) and agentd-ebpf (kernel side).
//!
//! Everything here is `#[repr(C)]`, fixed-size and free of pointers so it can
//! live in BPF maps and ring buffers unchanged on both sides.
#![no_std]

pub mod access;
pub mod lsm;

/// Names of the BPF maps, shared so user space and kernel side never drift.
pub mod maps {
    /// cgroup id → [`crate::AgentCgroup`]: the cgroups whose processes are agents.
    pub const AGENT_CGROUPS: &str = "AGENT_CGROUPS";
    /// tgid → [`crate::ExecExpectation`]: exec decisions to confirm at `sched_process_exec`.
    pub const EXEC_EXPECT: &str = "EXEC_EXPECT";
    /// call id → [`crate::ExecArgs`]: the exact arguments a grant names.
    pub const EXEC_ARGS: &str = "EXEC_ARGS";
    /// tgid → [`crate::ExecExpectation`]: execs allowed (lsm) under a grant
    /// that names arguments, whose new argv `sched_process_exec` checks.
    pub const ARGS_TO_CHECK: &str = "ARGS_TO_CHECK";
    /// tgid → [`crate::Binding`]: which tool call a process is bound to.
    pub const BINDINGS: &str = "BINDINGS";
    /// LPM trie of [`crate::ConnectKey`] → [`crate::ConnectRule`]: connect destinations per call.
    pub const CONNECT_RULES: &str = "CONNECT_RULES";
    /// [`crate::ExecKey`] → call-scoped exec permission by device+inode.
    pub const EXEC_GRANTS: &str = "EXEC_GRANTS";
    /// Ring buffer of [`crate::KernelEvent`]s.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// agent id → [`crate::RateWindow`]: denial-event rate limit.
    pub const EVENT_RATE: &str = "EVENT_RATE";
    /// tgid → [`crate::Lineage`]: who created each agent process, and when.
    pub const LINEAGE: &str = "LINEAGE";
    /// [`crate::PendingKey`] → [`crate::PendingGrant`]: grants the agent's tree may claim.
    pub const PENDING: &str = "PENDING";
    /// [`crate::UseTicket`] → 1: the uses of grants already spent.
    pub const USE_TICKETS: &str = "USE_TICKETS";
    /// [`crate::ProcessCall`] → the claimant's start time: file claims made
    /// on the lsm backend (LRU; a process's further file operations under a
    /// grant it already claimed spend no further use).
    pub const FILE_CLAIMS: &str = "FILE_CLAIMS";
    /// [`crate::ProcessCall`] → the process's start time: the processes that
    /// may claim a pending grant (its requester chain, written by user space,
    /// and what they create after the decision, added at fork). LRU.
    pub const CLAIMANTS: &str = "CLAIMANTS";
    /// Per-CPU hash of [`crate::access::AccessKey`] →
    /// [`crate::access::AccessSummary`]: allowed accesses under grants,
    /// counted instead of sent one event each.
    pub const ACCESS_SUMMARIES: &str = "ACCESS_SUMMARIES";
}

/// Enforcement mode of one agent cgroup.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Deny what no grant covers.
    Enforce = 0,
    /// Record would-deny events, block nothing.
    AuditOnly = 1,
}

/// Value of [`maps::AGENT_CGROUPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    /// Agent index assigned by agentd (stable for the agent's lifetime).
    pub agent_id: u32,
    /// [`Mode`] as u8.
    pub mode: u8,
    pub _pad: [u8; 3],
}

/// Identifies a file independent of its path: symlinks and renames don't change it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Kernel-internal device number (`sb->s_dev`, the new_encode_dev form).
    pub dev: u64,
    pub ino: u64,
}

/// Value of [`maps::EXEC_EXPECT`]: what the supervisor approved for this tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecExpectation {
    pub file: FileId,
    /// Call id the exec was approved under (0 = baseline).
    pub call_id: u64,
}

/// Bytes of arguments an [`ExecArgs`] holds: a grant naming more is not
/// claimable where the kernel checks them (`exec_args_unverifiable`).
pub const EXEC_ARG_BYTES: usize = 256;

/// Value of [`maps::EXEC_ARGS`]: a grant's arguments after argv[0], each
/// followed by its NUL — byte for byte what the kernel lays out between the
/// end of argv[0] and `mm->arg_end` after an exec with exactly those args.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecArgs {
    /// Valid bytes of `bytes`.
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; EXEC_ARG_BYTES],
}

impl ExecArgs {
    /// Stands for arguments the kernel cannot hold: every exec under the
    /// grant is refused where the kernel checks them.
    pub const UNVERIFIABLE: ExecArgs = ExecArgs {
        len: u32::MAX,
        _pad: 0,
        bytes: [0; EXEC_ARG_BYTES],
    };

    /// Whether the kernel can compare an exec against these arguments.
    #[inline(always)]
    pub fn verifiable(&self) -> bool {
        self.len as usize <= EXEC_ARG_BYTES
    }

    /// The layout of `args`, or `None` if they do not fit (or hold a NUL,
    /// which no exec argument can).
    pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Option<Self> {
        let mut out = ExecArgs {
            len: 0,
            _pad: 0,
            bytes: [0; EXEC_ARG_BYTES],
        };
        let mut at = 0usize;
        for a in args {
            let a = a.as_ref();
            if a.contains(&0) || at + a.len() + 1 > EXEC_ARG_BYTES {
                return None;
            }
            out.bytes[at..at + a.len()].copy_from_slice(a);
            at += a.len() + 1;
        }
        out.len = at as u32;
        Some(out)
    }
}

/// Value of [`maps::BINDINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Numeric call id (agentd's internal handle for a grant).
    pub call_id: u64,
    pub agent_id: u32,
    pub _pad: u32,
}

/// Key of [`maps::EXEC_GRANTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecKey {
    pub call_id: u64,
    pub file: FileId,
}

/// Data part of the LPM-trie key of [`maps::CONNECT_RULES`]: one destination
/// prefix a call may connect to. Byte arrays only, so the struct has no padding
/// and the trie matches `call_id`, then `port`, then the address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectKey {
    /// Call id, big-endian (always matched in full).
    pub call_id: [u8; 8],
    /// Port, big-endian; 0 = any port (always matched in full).
    pub port: [u8; 2],
    /// IPv4-mapped for IPv4 (::ffff:a.b.c.d), network byte order.
    pub addr: [u8; 16],
}

/// Bits of a [`ConnectKey`] before the address: call id and port.
pub const CONNECT_FIXED_BITS: u32 = 80;

impl ConnectKey {
    /// Key data for (call, port, address).
    pub const fn new(call_id: u64, port: u16, addr: [u8; 16]) -> Self {
        Self {
            call_id: call_id.to_be_bytes(),
            port: port.to_be_bytes(),
            addr,
        }
    }
}

/// Value of [`maps::CONNECT_RULES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRule {
    /// Expiry in CLOCK_BOOTTIME ns (bpf_ktime_get_boot_ns); 0 = none.
    pub expires_at_ns: u64,
}

/// Which hook saw a kernel event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Exec = 1,
    FileOpen = 2,
    Connect = 3,
    SendMsg = 4,
    ExecVerify = 5,
    PathUnlink = 6,
    PathRename = 7,
    PathLink = 8,
    PathSymlink = 9,
    PathTruncate = 10,
    Ptrace = 11,
    Bpf = 12,
    Signal = 13,
    PathCreate = 14,
    IoUring = 15,
    /// `userns_create`: a new user namespace.
    Userns = 16,
    /// `sb_mount`, `move_mount`: a mount operation.
    Mount = 17,
    PathChmod = 18,
    PathChown = 19,
    /// `inode_setattr` for timestamp changes (utimes, touch).
    PathSetattr = 20,
    /// `inode_setxattr`, `inode_removexattr`.
    PathXattr = 21,
    /// `socket_create` of a family or type agents do not get (raw, packet, ICMP, vsock, …).
    SocketCreate = 22,
    /// `socket_bind` to a port or an abstract unix name.
    Bind = 23,
    /// `socket_listen` on an IP socket.
    Listen = 24,
}

impl Hook {
    /// Decodes a raw hook number from a kernel event.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Hook::Exec,
            2 => Hook::FileOpen,
            3 => Hook::Connect,
            4 => Hook::SendMsg,
            5 => Hook::ExecVerify,
            6 => Hook::PathUnlink,
            7 => Hook::PathRename,
            8 => Hook::PathLink,
            9 => Hook::PathSymlink,
            10 => Hook::PathTruncate,
            11 => Hook::Ptrace,
            12 => Hook::Bpf,
            13 => Hook::Signal,
            14 => Hook::PathCreate,
            15 => Hook::IoUring,
            16 => Hook::Userns,
            17 => Hook::Mount,
            18 => Hook::PathChmod,
            19 => Hook::PathChown,
            20 => Hook::PathSetattr,
            21 => Hook::PathXattr,
            22 => Hook::SocketCreate,
            23 => Hook::Bind,
            24 => Hook::Listen,
            _ => return None,
        })
    }

    /// Stable snake_case name used in audit rows.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Exec => "exec",
            Hook::FileOpen => "file_open",
            Hook::Connect => "connect",
            Hook::SendMsg => "sendmsg",
            Hook::ExecVerify => "exec_verify",
            Hook::PathUnlink => "path_unlink",
            Hook::PathRename => "path_rename",
            Hook::PathLink => "path_link",
            Hook::PathSymlink => "path_symlink",
            Hook::PathTruncate => "path_truncate",
            Hook::Ptrace => "ptrace",
            Hook::Bpf => "bpf",
            Hook::Signal => "signal",
            Hook::PathCreate => "path_create",
            Hook::IoUring => "io_uring",
            Hook::Userns => "userns_create",
            Hook::Mount => "mount",
            Hook::PathChmod => "path_chmod",
            Hook::PathChown => "path_chown",
            Hook::PathSetattr => "path_setattr",
            Hook::PathXattr => "path_xattr",
            Hook::SocketCreate => "socket_create",
            Hook::Bind => "bind",
            Hook::Listen => "listen",
        }
    }
}

/// Kernel-side reason codes; user space maps them to the stable strings.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelReason {
    Allowed = 0,
    NoGrant = 1,
    GrantExpired = 2,
    PathOutsideScope = 3,
    ExecMismatch = 4,
    TamperAttempt = 5,
    Baseline = 6,
    /// A pending grant covered the operation, but the process is not of the
    /// requester's own tree (see [`may_claim`]).
    NotRequesterTree = 7,
    /// A pending grant covered the operation, but its uses are spent.
    GrantUsedUp = 8,
    /// A pending grant named the exec, with arguments this hook cannot check.
    ExecArgsUnverifiable = 9,
    /// The exec's arguments are not the ones its grant names.
    ExecArgsMismatch = 10,
    /// A write to a protected file (or removing/moving a directory holding
    /// one) that no grant names as a protected write.
    ProtectedFile = 11,
    /// A pending grant covered the operation, but its use could not be
    /// counted: `USE_TICKETS` is full (not a spent grant).
    UseTicketsFull = 12,
}

impl KernelReason {
    /// Decodes a raw reason number from a kernel event.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => KernelReason::Allowed,
            1 => KernelReason::NoGrant,
            2 => KernelReason::GrantExpired,
            3 => KernelReason::PathOutsideScope,
            4 => KernelReason::ExecMismatch,
            5 => KernelReason::TamperAttempt,
            6 => KernelReason::Baseline,
            7 => KernelReason::NotRequesterTree,
            8 => KernelReason::GrantUsedUp,
            9 => KernelReason::ExecArgsUnverifiable,
            10 => KernelReason::ExecArgsMismatch,
            11 => KernelReason::ProtectedFile,
            12 => KernelReason::UseTicketsFull,
            _ => return None,
        })
    }

    /// Stable snake_case reason code, as in DESIGN.md.
    pub fn code(self) -> &'static str {
        match self {
            KernelReason::Allowed => "grant_matched",
            KernelReason::NoGrant => "no_grant",
            KernelReason::GrantExpired => "grant_expired",
            KernelReason::PathOutsideScope => "path_outside_scope",
            KernelReason::ExecMismatch => "exec_target_mismatch",
            KernelReason::TamperAttempt => "enforcer_tamper",
            KernelReason::Baseline => "baseline",
            KernelReason::NotRequesterTree => "claim_not_requester_tree",
            KernelReason::GrantUsedUp => "grant_used_up",
            KernelReason::ExecArgsUnverifiable => "exec_args_unverifiable",
            KernelReason::ExecArgsMismatch => "exec_args_mismatch",
            KernelReason::ProtectedFile => "protected_file",
            KernelReason::UseTicketsFull => "use_tickets_full",
        }
    }
}

/// Maximum bytes of a path or target carried in a [`KernelEvent`].
pub const EVENT_TARGET_LEN: usize = 128;

/// One kernel decision, sent to user space through [`maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KernelEvent {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub call_id: u64,
    pub tgid: u32,
    pub agent_id: u32,
    /// [`Hook`] as u8.
    pub hook: u8,
    /// 1 = allowed, 0 = denied (or would-deny in audit-only mode).
    pub allowed: u8,
    /// [`KernelReason`] as u8.
    pub reason: u8,
    /// [`Mode`] as u8.
    pub mode: u8,
    /// Number of valid bytes in `target`.
    pub target_len: u32,
    pub target: [u8; EVENT_TARGET_LEN],
}

/// Indices into [`maps::COUNTERS`]; counts are never rate-limited.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Decisions that allowed.
    Allowed = 0,
    /// Decisions that denied (or would have, in audit-only mode).
    Denied = 1,
    /// Events lost because the ring buffer was full.
    EventsDropped = 2,
    /// Denial events withheld by the per-agent rate limit (still counted in `Denied`).
    EventsSuppressed = 3,
    /// Tasks killed at `sched_process_exec` for an exec target mismatch.
    ExecKilled = 4,
    /// Repeated reads under a bound call allowed by the scope their
    /// access summary's hint names, without the scope walk (also counted
    /// in `Allowed`).
    ReadsByScopeHint = 5,
}

/// Number of [`Counter`] slots.
pub const COUNTER_SLOTS: u32 = 6;

/// Denial events per agent per second that reach the ring buffer; the rest
/// are only counted ([`Counter::EventsSuppressed`]).
pub const DENIAL_EVENTS_PER_SEC: u32 = 100;

/// Value of [`maps::EVENT_RATE`]: one agent's denial-event window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// Start of the current one-second window, CLOCK_BOOTTIME ns.
    pub window_start_ns: u64,
    /// Denial events emitted in this window.
    pub emitted: u32,
    pub _pad: u32,
}

/// Byte offsets of the kernel struct fields the programs read, resolved by
/// user space from the running kernel's BTF (Rust eBPF has no CO-RE yet), and
/// written into the object's `KERNEL_OFFSETS` global before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_mode`
    pub file_mode: u32,
    /// `file.f_path`
    pub file_path: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.start_boottime`
    pub task_start_boottime: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
}

/// Value of [`maps::EXEC_GRANTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantExpiry {
    /// Expiry in CLOCK_BOOTTIME ns (bpf_ktime_get_boot_ns); 0 = none.
    pub expires_at_ns: u64,
}

/// The call id under which an agent's baseline (unbound processes) is stored:
/// the top bit marks it so it can never collide with a real call's id.
pub const fn baseline_call_id(agent_id: u32) -> u64 {
    (1u64 << 63) | agent_id as u64
}

/// Value of [`maps::LINEAGE`]: recorded at `sched_process_fork` for every
/// new process of an agent (threads are not processes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// `task_struct.start_boottime` of the process (CLOCK_BOOTTIME ns).
    pub start_ns: u64,
    /// tgid of the process that called fork/clone — not `real_parent`,
    /// which `CLONE_PARENT` lets a process choose, and which changes when
    /// the parent dies.
    pub creator: u32,
    pub _pad: u32,
}

/// Pending grants per agent the kernel side can see (slots of [`maps::PENDING`]).
pub const PENDING_SLOTS: u32 = 8;
/// Requester-chain entries kept per pending grant.
pub const REQUESTER_CHAIN: usize = 8;
/// How many creators the claim rule walks up from a process before it gives up.
pub const CLAIM_DEPTH: u32 = 16;
/// `PendingGrant::uses_left` of a grant without a use count.
pub const UNLIMITED_USES: u32 = u32::MAX;

/// Key of [`maps::PENDING`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub agent_id: u32,
    /// 0..[`PENDING_SLOTS`].
    pub slot: u32,
}

/// Key of [`maps::USE_TICKETS`]. Spending a use of a grant means inserting
/// ticket `n` (1..=uses) with `BPF_NOEXIST`: the kernel makes that atomic
/// between BPF programs and user space alike, so no use is spent twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UseTicket {
    pub call_id: u64,
    pub n: u32,
    pub _pad: u32,
}

/// Key of [`maps::FILE_CLAIMS`] and [`maps::CLAIMANTS`]: process `tgid` and
/// grant `call_id`. The value is the process's start time (its `LINEAGE`
/// record, 0 without one), so a reused pid inherits nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessCall {
    pub call_id: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Entries of [`maps::FILE_CLAIMS`] (least recently used evicted first:
/// an evicted claim only makes the process's next file operation spend
/// another use).
pub const FILE_CLAIM_ENTRIES: u32 = 8192;

/// Entries of [`maps::CLAIMANTS`] (least recently used evicted first: an
/// evicted process can no longer claim — it fails closed).
pub const CLAIMANT_ENTRIES: u32 = 16384;

/// How many tickets one claim tries (from the `uses_left` hint downwards)
/// before it gives up as spent.
pub const TICKET_TRIES: u32 = 8;

/// Value of [`maps::PENDING`]: an allowed call waiting for the requester's
/// own process tree to claim it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingGrant {
    /// Grant handle (the call id in every other map).
    pub call_id: u64,
    /// Leaf cgroup of the process that asked; claimants must be in it.
    pub cgroup_id: u64,
    /// CLOCK_BOOTTIME ns of the decision.
    pub decided_at_ns: u64,
    /// CLOCK_BOOTTIME ns after which it is void; 0 = never.
    pub expires_at_ns: u64,
    /// Claims left (a hint kept by claimants; the truth is
    /// [`maps::USE_TICKETS`]); [`UNLIMITED_USES`] = no count; 0 = spent.
    pub uses_left: u32,
    /// Valid entries of `requesters`.
    pub n_requesters: u32,
    /// tgids of the process that asked and its ancestors in the agent.
    pub requesters: [u32; REQUESTER_CHAIN],
    /// [`PENDING_NAMES_ARGS`], …
    pub flags: u32,
    pub _pad: u32,
}

/// `PendingGrant::flags`: the grant names exec arguments (an exec claim
/// must check them; where a hook cannot read them, the claim is refused).
pub const PENDING_NAMES_ARGS: u32 = 1;

impl PendingGrant {
    /// Whether `tgid` is on the requester chain.
    #[inline(always)]
    pub fn is_requester(&self, tgid: u32) -> bool {
        let mut i = 0;
        while i < REQUESTER_CHAIN {
            if (i as u32) < self.n_requesters && self.requesters[i] == tgid {
                return true;
            }
            i += 1;
        }
        false
    }

    /// Whether the grant can still be claimed at `now_ns` (not spent, not expired).
    #[inline(always)]
    pub fn live(&self, now_ns: u64) -> bool {
        self.uses_left != 0 && (self.expires_at_ns == 0 || self.expires_at_ns > now_ns)
    }
}

/// The claim rule, as the seccomp supervisor applies it (the BPF programs
/// apply the same rule through `maps::CLAIMANTS`, kept at fork): the
/// process `tgid` in cgroup `cgroup_id` may claim `grant` iff it is in the
/// grant's cgroup and either is on the requester chain, or every process
/// on its creator path up to the first requester-chain member was created
/// at or after the decision (and no later than the process it created,
/// which rules out a reused pid). Processes without a lineage record (not
/// created inside an agent), and paths deeper than [`CLAIM_DEPTH`], do not
/// claim.
#[inline(always)]
pub fn may_claim(
    tgid: u32,
    cgroup_id: u64,
    grant: &PendingGrant,
    lineage: impl Fn(u32) -> Option<Lineage>,
) -> bool {
    if cgroup_id != grant.cgroup_id {
        return false;
    }
    let mut cur = tgid;
    let mut created_before = u64::MAX;
    let mut depth = 0;
    while depth < CLAIM_DEPTH {
        if grant.is_requester(cur) {
            return true;
        }
        let Some(l) = lineage(cur) else {
            return false;
        };
        if l.start_ns < grant.decided_at_ns || l.start_ns > created_before {
            return false;
        }
        created_before = l.start_ns;
        cur = l.creator;
        depth += 1;
    }
    false
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Lineage {}
    unsafe impl aya::Pod for super::UseTicket {}
    unsafe impl aya::Pod for super::ProcessCall {}
    unsafe impl aya::Pod for super::PendingKey {}
    unsafe impl aya::Pod for super::PendingGrant {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::GrantExpiry {}
    // SAFETY: all types are repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for super::AgentCgroup {}
    unsafe impl aya::Pod for super::FileId {}
    unsafe impl aya::Pod for super::ExecExpectation {}
    unsafe impl aya::Pod for super::ExecArgs {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::ExecKey {}
    unsafe impl aya::Pod for super::ConnectKey {}
    unsafe impl aya::Pod for super::ConnectRule {}
    unsafe impl aya::Pod for super::RateWindow {}
    unsafe impl aya::Pod for super::KernelEvent {}
    unsafe impl aya::Pod for super::access::AccessKey {}
    unsafe impl aya::Pod for super::access::AccessSummary {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_args_lay_out_as_the_kernel_does() {
        let a = ExecArgs::encode(&["reset", "--user", "bob"]).unwrap();
        assert_eq!(a.len, 17);
        assert_eq!(&a.bytes[..17], b"reset\0--user\0bob\0");
        assert_eq!(
            ExecArgs::encode::<&str>(&[]).unwrap().len,
            0,
            "no arguments"
        );
        assert_eq!(
            ExecArgs::encode(&[""]).unwrap().len,
            1,
            "one empty argument"
        );
        assert!(
            ExecArgs::encode(&["a\0b"]).is_none(),
            "no NUL inside an argument"
        );
        let long = "x".repeat(EXEC_ARG_BYTES - 1);
        assert!(ExecArgs::encode(&[long.as_str()]).is_some(), "exactly full");
        let longer = "x".repeat(EXEC_ARG_BYTES);
        assert!(
            ExecArgs::encode(&[longer.as_str()]).is_none(),
            "one byte over"
        );
    }
}
