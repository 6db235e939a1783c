//! Kernel enforcement: the embedded eBPF object, its loader, and the
//! backends that turn grants into kernel decisions.
//!
//! [`Enforcer`] is the one entry point: it owns the BPF state (behind a
//! mutex: one owner, others call it), the user-space registry of agents
//! and grants, the seccomp supervisors and the kernel-event audit path.

pub mod access_summary;
pub mod agent_cgroup;
mod agents;
pub mod backend;
pub mod binding;
pub mod bpf_state;
pub mod btf_offsets;
pub mod btf_scan;
pub mod cgroup_root;
pub mod claim;
pub mod conn_limit;
pub mod control;
pub mod deputy;
pub mod ebpf;
pub mod events;
#[cfg(test)]
mod fake_kernel;
pub mod fdstore;
pub mod gateway_hook;
pub mod grant;
mod grants;
pub mod holders;
mod journal;
mod kill_switch;
pub mod launch;
mod lifecycle;
mod listeners;
pub mod lsm;
pub mod pending;
pub mod persist;
pub mod pid_cgroups;
pub mod pidfd;
pub mod privileged;
pub mod registry;
pub mod seccomp;
pub mod seccomp_probe;
pub mod slot;
pub mod spent;
pub mod tcp_peer;
#[cfg(test)]
mod tests;
pub mod unix_gate;

pub use agents::{AgentOptions, TcpCaller};
pub use backend::Backend;
pub use cgroup_root::cgroup_root;
pub use events::{AuditSink, KernelRecord, MemorySink, SinkError};
pub use kill_switch::{EnforceKillSwitch, LaunchGate};
pub use registry::{Creds, Mode};
pub use slot::EnforceSlot;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
};

use serde::Serialize;

use crate::{grant_spec::GrantSpec, protocol::reason};
use bpf_state::BpfStateError;
use grant::GrantError;
use privileged::Privileged;
use registry::Registry;
use seccomp::supervisor::SupervisorStats;

/// Errors of the enforcer (each has a stable reason code).
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The chosen backend cannot run here.
    #[error("enforcement backend {backend:?} is unavailable: {message}")]
    Backend {
        /// The backend asked for.
        backend: Backend,
        /// Why not.
        message: String,
    },
    /// Loading, attaching or updating BPF failed.
    #[error(transparent)]
    Bpf(#[from] BpfStateError),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] agent_cgroup::CgroupError),
    /// No cgroup v2 hierarchy.
    #[error(transparent)]
    CgroupRoot(#[from] cgroup_root::CgroupRootError),
    /// The grant spec is unusable.
    #[error("grant for call {call_id}: {source}")]
    Grant {
        /// The call.
        call_id: String,
        /// What is wrong.
        source: GrantError,
    },
    /// No agent by that name.
    #[error("unknown agent `{agent}`")]
    UnknownAgent {
        /// The name asked for.
        agent: String,
    },
    /// A grant for this call id is already installed.
    #[error("a grant for call {call_id} is already installed")]
    DuplicateCall {
        /// The call id.
        call_id: String,
    },
    /// Every pending slot of the agent holds a live grant.
    #[error("agent {agent} already has the maximum of pending calls; call {call_id} refused")]
    TooManyPending {
        /// The agent.
        agent: String,
        /// The call refused.
        call_id: String,
    },
    /// A bind was refused.
    #[error(transparent)]
    Bind(#[from] binding::BindError),
    /// Starting a supervisor failed.
    #[error("supervisor for agent {agent}: {source}")]
    Supervisor {
        /// The agent.
        agent: String,
        /// The error.
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    /// The lsm backend failed to attach or update its maps.
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
    /// The agent still has processes.
    #[error("agent `{agent}` still has processes {pids:?}; stop them first")]
    AgentBusy {
        /// The agent.
        agent: String,
        /// Its processes.
        pids: Vec<u32>,
    },
    /// A suspension covers the agent: nothing new starts in it.
    #[error("{message}; nothing starts in it until `agentctl resume`")]
    Suspended {
        /// `agent_suspended` or `all_suspended`.
        reason_code: &'static str,
        /// The suspension: scope, who, since when, why.
        message: String,
    },
}

impl EnforceError {
    /// Stable snake_case reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EnforceError::Backend { .. } => reason::BACKEND_UNAVAILABLE,
            EnforceError::Bpf(_) => reason::ENFORCER_ERROR,
            EnforceError::Cgroup(agent_cgroup::CgroupError::BadName { .. }) => {
                reason::AGENT_NAME_INVALID
            }
            EnforceError::Cgroup(_) | EnforceError::CgroupRoot(_) => reason::CGROUP_ERROR,
            EnforceError::Grant { source, .. } => source.reason_code(),
            EnforceError::UnknownAgent { .. } => reason::UNKNOWN_AGENT,
            EnforceError::DuplicateCall { .. } => reason::DUPLICATE_CALL,
            EnforceError::TooManyPending { .. } => reason::TOO_MANY_PENDING_CALLS,
            EnforceError::Bind(b) => b.reason_code(),
            EnforceError::Supervisor { .. } => reason::ENFORCER_ERROR,
            EnforceError::Persist(_) => reason::ENFORCER_ERROR,
            EnforceError::Lsm(_) => reason::ENFORCER_ERROR,
            EnforceError::AgentBusy { .. } => reason::AGENT_RUNNING,
            EnforceError::Suspended { reason_code, .. } => reason_code,
        }
    }
}

/// What `create_agent` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentHandle {
    /// Agent name.
    pub name: String,
    /// Backend enforcing it (the launcher installs the seccomp filter only for `seccomp`).
    pub backend: Backend,
    /// BPF index.
    pub id: u32,
    /// cgroup directory.
    pub cgroup: PathBuf,
    /// Kernel cgroup id.
    pub cgroup_id: u64,
    /// Mode at creation (the launcher adds Landlock scopes only when enforcing).
    pub mode: Mode,
}

/// One agent in `list_agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// Agent name.
    pub name: String,
    /// Mode.
    pub mode: Mode,
    /// Processes in its cgroup.
    pub pids: Vec<u32>,
    /// Installed grants (call ids).
    pub calls: Vec<String>,
}

/// Decision counters (kernel side, summed over CPUs, plus the supervisors').
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Kernel decisions that allowed.
    pub kernel_allowed: u64,
    /// Kernel decisions that denied (or would have).
    pub kernel_denied: u64,
    /// Events lost to a full ring buffer.
    pub events_dropped: u64,
    /// Denial events withheld by the rate limit.
    pub events_suppressed: u64,
    /// Tasks killed at exec verification.
    pub exec_killed: u64,
    /// Repeated reads under a bound call allowed by their scope hint,
    /// without the scope walk (lsm backend; also in `kernel_allowed`).
    pub reads_by_scope_hint: u64,
    /// Notifications the supervisors received.
    pub notifications: u64,
    /// Supervisor allows.
    pub supervisor_allowed: u64,
    /// Supervisor denials.
    pub supervisor_denied: u64,
}

/// The default baseline: system code and libraries, devices every process
/// touches, its own /proc entry; no exec (the launched command is added).
pub fn default_baseline() -> GrantSpec {
    GrantSpec {
        exec: vec![],
        read: [
            "/usr",
            "/lib",
            "/lib64",
            "/bin",
            "/sbin",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/etc/nsswitch.conf",
            "/etc/passwd",
            "/etc/group",
            "/proc/self",
            "/sys/devices/system/cpu",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect(),
        write: [
            "/dev/null",
            "/dev/zero",
            "/dev/urandom",
            "/dev/random",
            "/dev/tty",
            "/dev/pts",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect(),
        connect: vec![],
        ttl_secs: 0,
        uses: 0,
        args: None,
        ..GrantSpec::default()
    }
}

/// How long an expired grant is kept (inert) before it is removed.
const GRANT_GRACE_NS: u64 = 60_000_000_000;

/// How long after its expiry a grant's use tickets are freed (far longer
/// than any claim takes between checking the expiry and taking a ticket).
const TICKET_MARGIN_NS: u64 = 5_000_000_000;

struct Inner {
    backend: Backend,
    instance: bpf_state::Instance,
    /// Every privileged operation goes through here (the BPF maps, cgroups,
    /// supervisors): the kernel in production, a recording fake in tests.
    ops: Arc<dyn Privileged>,
    registry: Arc<RwLock<Registry>>,
    slice: PathBuf,
    state_dir: PathBuf,
    audit_tx: events::AuditTx,
    sink: Arc<dyn AuditSink>,
    stop: Arc<AtomicBool>,
    stats: Arc<SupervisorStats>,
    sync_wakeup: AtomicBool,
    /// The running supervisors, by agent.
    supervisors: Mutex<std::collections::HashMap<String, Vec<listeners::SupervisorHandle>>>,
    /// Serialises writes of the state file: launches, supervisors ending and
    /// grant changes save from different threads, through one temp file.
    save_lock: Mutex<()>,
    /// Who may start processes in an agent now (the kill switch's
    /// suspensions); none set: every launch goes ahead.
    launch_gate: RwLock<Option<Arc<dyn LaunchGate>>>,
    /// Which counted accesses already have their `access_summary` row.
    summaries: Mutex<access_summary::Ledger>,
    /// The grant journal, opened at the first grant change (appended to
    /// under the registry's write lock; emptied by each snapshot).
    journal: Mutex<Option<journal::Journal>>,
    /// Grants expired up to this time (CLOCK_BOOTTIME ns) have had their
    /// use tickets freed (see `Enforcer::clear_expired_tickets`).
    tickets_cleared_through: std::sync::atomic::AtomicU64,
    /// Use-counted grants seen spent, with when they were first seen so
    /// (CLOCK_BOOTTIME ns): dropped once settled and unheld (`spent`).
    spent_since: Mutex<std::collections::HashMap<u64, u64>>,
}

/// The enforcement core. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Enforcer {
    inner: Arc<Inner>,
}

impl Enforcer {
    fn registry_r(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn registry_w(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The privileged operations.
    fn ops(&self) -> &dyn Privileged {
        &*self.inner.ops
    }

    /// What loading each lsm hook cost (empty on the seccomp backend).
    pub fn lsm_loads(&self) -> Vec<lsm::HookLoad> {
        self.ops().lsm_loads()
    }

    /// Adds a unix socket every agent baseline may connect to from now on
    /// (agentd's own: the API and enforcement sockets; lsm and seccomp).
    pub fn allow_baseline_socket(&self, path: &str) {
        deputy::add_own_socket(PathBuf::from(path));
        self.ops().allow_baseline_socket(path);
    }

    /// Saves the whole registry (a snapshot) after a change the caller made
    /// to it, before the caller goes on (a restart right after finds the
    /// change), and empties the grant journal, which the snapshot now holds.
    /// The registry stays read-locked until then: no grant change can be
    /// journaled between the snapshot and the truncation.
    fn save(&self) -> Result<(), EnforceError> {
        let _saving = self
            .inner
            .save_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let reg = self.registry_r();
        persist::save(&self.inner.state_dir, &persist::Snapshot(&reg))?;
        // Opened here if need be: a journal left by the previous agentd,
        // replayed into this snapshot, must not be replayed over it again.
        let mut slot = self.inner.journal.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(journal::Journal::open(&self.inner.state_dir)?);
        }
        slot.as_mut().expect("opened above").reset()?;
        Ok(())
    }

    /// Records grant changes the caller just made to `reg` (whose write
    /// lock it holds, so the journal's order is the registry's); true when
    /// the journal has grown enough that the caller should [`Self::save`]
    /// a snapshot once it has let go of the lock.
    fn journal(&self, reg: &Registry, entries: &[journal::Entry]) -> Result<bool, EnforceError> {
        let mut slot = self.inner.journal.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(journal::Journal::open(&self.inner.state_dir)?);
        }
        let j = slot.as_mut().expect("opened above");
        j.append(entries)?;
        Ok(j.wants_compaction(reg.calls.len()))
    }

    /// [`Self::save`] when [`Self::journal`] asked for it; a failure is
    /// logged, not returned: the journal still holds every change.
    fn compact(&self, wanted: bool) {
        if !wanted {
            return;
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "enforcer state snapshot failed; the grant journal keeps growing");
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Whether supervisors ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (default on).
    pub fn set_sync_wakeup(&self, on: bool) {
        self.inner.sync_wakeup.store(on, Ordering::Relaxed);
    }

    /// The instance name (pin directory and slice derive from it).
    pub fn instance(&self) -> &str {
        &self.inner.instance.name
    }
}
