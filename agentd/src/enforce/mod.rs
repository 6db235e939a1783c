//! Kernel enforcement: the embedded eBPF object, its loader, and the
//! backends that turn grants into kernel decisions.
//!
//! [`Enforcer`] is the one entry point: it owns the BPF state (behind a
//! mutex: one owner, others call it), the user-space registry of agents
//! and grants, the seccomp supervisors and the kernel-event audit path.

pub mod agent_cgroup;
pub mod binding;
pub mod bpf_state;
pub mod btf_offsets;
pub mod btf_scan;
pub mod cgroup_root;
pub mod daemon_glue;
pub mod ebpf;
pub mod events;
pub mod gateway_hook;
pub mod grant;
pub mod launch;
pub mod lsm;
pub mod persist;
pub mod registry;
pub mod seccomp;
pub mod seccomp_probe;

pub use cgroup_root::cgroup_root;
pub use events::{AuditSink, KernelRecord, MemorySink};
pub use registry::{Creds, Mode};

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock, Weak,
    },
    time::Duration,
};

use agentd_common::{baseline_call_id, AgentCgroup, Binding};
use serde::Serialize;

use crate::{doctor::Backend, grant_spec::GrantSpec};
use agent_cgroup::AgentCgroupDir;
use bpf_state::{BpfState, BpfStateError};
use grant::{GrantError, KernelGrant};
use registry::{AgentEntry, CallEntry, Registry};
use seccomp::supervisor::{self, Supervisor, SupervisorStats};

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
}

impl EnforceError {
    /// Stable snake_case reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EnforceError::Backend { .. } => "backend_unavailable",
            EnforceError::Bpf(_) => "enforcer_error",
            EnforceError::Cgroup(agent_cgroup::CgroupError::BadName { .. }) => "agent_name_invalid",
            EnforceError::Cgroup(_) | EnforceError::CgroupRoot(_) => "cgroup_error",
            EnforceError::Grant { source, .. } => source.reason_code(),
            EnforceError::UnknownAgent { .. } => "unknown_agent",
            EnforceError::DuplicateCall { .. } => "duplicate_call",
            EnforceError::Bind(b) => b.reason_code(),
            EnforceError::Supervisor { .. } => "enforcer_error",
            EnforceError::Persist(_) => "enforcer_error",
            EnforceError::Lsm(_) => "enforcer_error",
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
    }
}

/// How long an expired grant is kept (inert) before it is removed.
const GRANT_GRACE_NS: u64 = 60_000_000_000;

struct Inner {
    backend: Backend,
    instance: bpf_state::Instance,
    bpf: Mutex<BpfState>,
    lsm: Option<Mutex<lsm::LsmState>>,
    registry: Arc<RwLock<Registry>>,
    slice: PathBuf,
    state_dir: PathBuf,
    audit_tx: events::AuditTx,
    sink: Arc<dyn AuditSink>,
    stop: Arc<AtomicBool>,
    stats: Arc<SupervisorStats>,
    sync_wakeup: AtomicBool,
    /// Stop flag of each supervisor, by agent.
    supervisors: Mutex<std::collections::HashMap<String, Vec<Arc<AtomicBool>>>>,
}

/// The enforcement core. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Enforcer {
    inner: Arc<Inner>,
}

impl Enforcer {
    /// Loads the BPF side (re-adopting pinned state after a restart), starts
    /// the event and audit threads. Running agents whose supervisors died
    /// with the previous agentd are stopped and the gap is audited.
    pub fn start(
        backend: Backend,
        state_dir: &Path,
        audit: impl AuditSink,
    ) -> Result<Self, EnforceError> {
        Self::start_with_sink(backend, state_dir, Arc::new(audit))
    }

    /// [`Self::start`] with a shared sink.
    pub fn start_with_sink(
        backend: Backend,
        state_dir: &Path,
        sink: Arc<dyn AuditSink>,
    ) -> Result<Self, EnforceError> {
        if backend == Backend::None {
            return Err(EnforceError::Backend {
                backend,
                message: "agentd doctor found no usable backend".into(),
            });
        }
        let instance = bpf_state::Instance::for_state_dir(state_dir);
        let root = cgroup_root()?;
        for gone in bpf_state::gc_orphans(&root) {
            tracing::info!(instance = %gone, "removed the enforcement state of a deleted state directory");
        }
        instance.register(state_dir);
        let slice = agent_cgroup::ensure_slice(&root, &instance.slice())?;
        let (bpf, ring) = BpfState::start(&slice, &instance.pin_dir())?;
        let adopted = bpf.adopted;
        let lsm = match backend {
            Backend::Lsm => Some(Mutex::new(lsm::LsmState::start_in(&instance.pin_dir())?)),
            _ => None,
        };
        let (audit_tx, _writer) = events::spawn_writer(sink.clone());
        let previous = persist::load(state_dir).ok().flatten();
        let registry = Arc::new(RwLock::new(Registry {
            next_handle: 1,
            next_agent_id: 1,
            ..Registry::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let _ring =
            events::spawn_ring_reader(ring, registry.clone(), audit_tx.clone(), stop.clone());
        let inner = Arc::new(Inner {
            backend,
            instance,
            bpf: Mutex::new(bpf),
            lsm,
            registry,
            slice,
            state_dir: state_dir.to_owned(),
            audit_tx,
            sink,
            stop,
            stats: Arc::default(),
            sync_wakeup: AtomicBool::new(true),
            supervisors: Mutex::default(),
        });
        let me = Enforcer { inner };
        let gap = persist::heartbeat_age(state_dir);
        if adopted {
            if let Some(prev) = previous {
                me.readopt(prev)?;
            }
            let gap_ms = gap
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "unknown".into());
            let _ = me.inner.sink.append_lifecycle(
                "enforcer_restart",
                &format!("gap_ms={gap_ms}"),
                "daemon_restart",
            );
        } else {
            let _ = me.inner.sink.append_lifecycle(
                "enforcer_start",
                &format!("backend={backend:?}"),
                "started",
            );
        }
        persist::touch_heartbeat(state_dir);
        me.spawn_housekeeping();
        Ok(me)
    }

    /// Restores agents and grants from the state file over the pinned maps.
    /// Supervisors cannot be recovered (their listener fds died with the
    /// old process, so the agents' notified syscalls have been failing):
    /// running agents are stopped, never left half-enforced.
    fn readopt(&self, prev: persist::State) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        reg.next_handle = prev.next_handle.max(1);
        reg.next_agent_id = prev.next_agent_id.max(1);
        let now = supervisor::boot_ns();
        for a in prev.agents {
            let Ok(cg) = agent_cgroup::open(&self.inner.slice.join(&a.name)) else {
                continue;
            };
            let baseline = KernelGrant::from_spec(&a.baseline, baseline_call_id(a.id), now)
                .map_err(|source| EnforceError::Grant {
                    call_id: format!("baseline:{}", a.name),
                    source,
                })?;
            let pids = agent_cgroup::procs(&cg).unwrap_or_default();
            // Under BPF LSM the pinned hooks never stopped enforcing: agents
            // keep running. Seccomp agents lost their supervisor.
            if !pids.is_empty() && self.inner.backend != Backend::Lsm {
                let _ = agent_cgroup::kill_all(&cg);
                let _ = self.inner.sink.append_lifecycle(
                    "agent_stopped",
                    &format!("agent={} pids={}", a.name, pids.len()),
                    "supervisor_lost_on_restart",
                );
            }
            reg.agents.insert(
                a.name.clone(),
                AgentEntry {
                    name: a.name,
                    id: a.id,
                    cgroup: cg,
                    mode: a.mode,
                    baseline,
                },
            );
        }
        for c in prev.calls {
            if !reg.agents.contains_key(&c.agent) {
                continue;
            }
            if let Ok(mut grant) = KernelGrant::from_spec(&c.spec, c.handle, now) {
                grant.expires_at_ns = c.expires_at_ns;
                reg.handles.insert(c.call_id.clone(), c.handle);
                reg.calls.insert(
                    c.handle,
                    CallEntry {
                        call_id: c.call_id,
                        active_message_id: c.active_message_id,
                        agent: c.agent,
                        grant,
                        uses_left: c.uses_left,
                    },
                );
            }
        }
        drop(reg);
        self.save()
    }

    fn spawn_housekeeping(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        std::thread::Builder::new()
            .name("agentd-enforce-hk".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let Some(inner) = weak.upgrade() else { return };
                    let me = Enforcer { inner };
                    persist::touch_heartbeat(&me.inner.state_dir);
                    me.expire_grants();
                }
            })
            .expect("spawn housekeeping thread");
    }

    /// Removes grants whose expiry passed (the kernel already ignores them).
    fn expire_grants(&self) {
        let now = supervisor::boot_ns();
        let expired: Vec<String> = self
            .registry_r()
            .calls
            .values()
            // The kernel and the supervisors ignore an expired grant at once;
            // the entry stays a minute so denials still say `grant_expired`.
            .filter(|c| c.grant.expired(now.saturating_sub(GRANT_GRACE_NS)))
            .map(|c| c.call_id.clone())
            .collect();
        for call_id in expired {
            let _ = self.revoke(&call_id);
        }
    }

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

    fn bpf(&self) -> std::sync::MutexGuard<'_, BpfState> {
        self.inner.bpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a grant's scopes and unix destinations (lsm backend only).
    fn lsm_install(&self, grant: &KernelGrant) -> Result<(), EnforceError> {
        if let Some(lsm) = &self.inner.lsm {
            lsm.lock()
                .unwrap_or_else(|p| p.into_inner())
                .install(grant)?;
        }
        Ok(())
    }

    /// Removes what [`Self::lsm_install`] wrote for `handle`.
    fn lsm_uninstall(&self, handle: u64) {
        if let Some(lsm) = &self.inner.lsm {
            lsm.lock()
                .unwrap_or_else(|p| p.into_inner())
                .uninstall(handle);
        }
    }

    /// Adds a unix socket every agent baseline may connect to from now on
    /// (lsm backend; e.g. a non-default API socket path).
    pub fn allow_baseline_socket(&self, path: &str) {
        if let Some(lsm) = &self.inner.lsm {
            lsm.lock()
                .unwrap_or_else(|p| p.into_inner())
                .allow_baseline_socket(path);
        }
    }

    fn save(&self) -> Result<(), EnforceError> {
        let state = persist::State::of(&self.registry_r());
        persist::save(&self.inner.state_dir, &state)?;
        Ok(())
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Whether supervisors ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (default on).
    pub fn set_sync_wakeup(&self, on: bool) {
        self.inner.sync_wakeup.store(on, Ordering::Relaxed);
    }

    /// Creates (or returns) agent `name` with the default baseline.
    pub fn create_agent(&self, name: &str, mode: Mode) -> Result<AgentHandle, EnforceError> {
        let existing = self
            .registry_r()
            .agents
            .get(name)
            .map(|a| (a.id, a.cgroup.clone()));
        if let Some((id, cg)) = existing {
            // An existing agent keeps its baseline; only the mode changes.
            self.set_mode(name, mode)?;
            return Ok(AgentHandle {
                name: name.into(),
                backend: self.inner.backend,
                id,
                cgroup: cg.path,
                cgroup_id: cg.id,
            });
        }
        self.create_agent_with(name, mode, &default_baseline())
    }

    /// Like [`Self::create_agent`]; `None` keeps an existing agent's mode
    /// (a new agent enforces).
    pub fn create_agent_keeping_mode(
        &self,
        name: &str,
        mode: Option<Mode>,
    ) -> Result<AgentHandle, EnforceError> {
        let current = self.registry_r().agents.get(name).map(|a| a.mode);
        self.create_agent(name, mode.or(current).unwrap_or_default())
    }

    /// Creates agent `name` with `baseline` for unbound processes. An existing
    /// agent keeps its id and cgroup; its mode and baseline are replaced.
    pub fn create_agent_with(
        &self,
        name: &str,
        mode: Mode,
        baseline: &GrantSpec,
    ) -> Result<AgentHandle, EnforceError> {
        let cg = agent_cgroup::create(&self.inner.slice, name)?;
        let mut reg = self.registry_w();
        let id = match reg.agents.get(name) {
            Some(a) => a.id,
            None => {
                let id = reg.next_agent_id;
                reg.next_agent_id += 1;
                id
            }
        };
        let grant = KernelGrant::from_spec(baseline, baseline_call_id(id), supervisor::boot_ns())
            .map_err(|source| EnforceError::Grant {
            call_id: format!("baseline:{name}"),
            source,
        })?;
        {
            let mut bpf = self.bpf();
            if let Some(old) = reg.agents.get(name) {
                bpf.uninstall(&old.baseline);
                self.lsm_uninstall(old.baseline.handle);
            }
            bpf.install(&grant)?;
            self.lsm_install(&grant)?;
            bpf.set_agent(
                cg.id,
                AgentCgroup {
                    agent_id: id,
                    mode: mode.kernel() as u8,
                    _pad: [0; 3],
                },
            )?;
        }
        reg.agents.insert(
            name.to_string(),
            AgentEntry {
                name: name.to_string(),
                id,
                cgroup: cg.clone(),
                mode,
                baseline: grant,
            },
        );
        drop(reg);
        self.save()?;
        tracing::info!(agent = name, id, cgroup = %cg.path.display(), ?mode, "agent created");
        Ok(AgentHandle {
            name: name.into(),
            backend: self.inner.backend,
            id,
            cgroup: cg.path,
            cgroup_id: cg.id,
        })
    }

    /// Adds files to an agent's baseline exec list (the launched command).
    pub fn allow_baseline_exec(&self, agent: &str, paths: &[PathBuf]) -> Result<(), EnforceError> {
        let spec = {
            let reg = self.registry_r();
            let a = reg
                .agents
                .get(agent)
                .ok_or_else(|| EnforceError::UnknownAgent {
                    agent: agent.into(),
                })?;
            let mut spec = persist::spec_of(&a.baseline);
            for p in paths {
                if !spec.exec.contains(p) {
                    spec.exec.push(p.clone());
                }
                if !spec.read.contains(p) {
                    spec.read.push(p.clone());
                }
            }
            (spec, a.mode)
        };
        self.create_agent_with(agent, spec.1, &spec.0).map(|_| ())
    }

    /// The agent process `pid` belongs to, from its cgroup.
    pub fn agent_of_pid(&self, pid: u32) -> Option<String> {
        binding::agent_of_pid(&self.inner.instance.slice(), pid)
            .filter(|n| self.registry_r().agents.contains_key(n))
    }

    /// Moves `pid` into the agent's cgroup.
    pub fn join(&self, agent: &str, pid: u32) -> Result<(), EnforceError> {
        let cg = self.agent_cgroup(agent)?;
        agent_cgroup::join(&cg, pid)?;
        Ok(())
    }

    fn agent_cgroup(&self, agent: &str) -> Result<AgentCgroupDir, EnforceError> {
        self.registry_r()
            .agents
            .get(agent)
            .map(|a| a.cgroup.clone())
            .ok_or_else(|| EnforceError::UnknownAgent {
                agent: agent.into(),
            })
    }

    /// Takes over a seccomp listener of one of the agent's processes and
    /// starts answering its notifications under `creds`.
    pub fn adopt_listener(
        &self,
        agent: &str,
        listener: OwnedFd,
        creds: Creds,
    ) -> Result<(), EnforceError> {
        if !self.registry_r().agents.contains_key(agent) {
            return Err(EnforceError::UnknownAgent {
                agent: agent.into(),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        self.inner
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent.to_string())
            .or_default()
            .push(stop.clone());
        let sup = Supervisor {
            agent: agent.to_string(),
            creds,
            registry: self.inner.registry.clone(),
            audit: self.inner.audit_tx.clone(),
            stop: stop.clone(),
            sync_wakeup: self.inner.sync_wakeup.load(Ordering::Relaxed),
            stats: self.inner.stats.clone(),
            pin_dir: self.inner.instance.pin_dir(),
        };
        supervisor::spawn(listener, sup).map_err(|source| EnforceError::Supervisor {
            agent: agent.into(),
            source,
        })?;
        Ok(())
    }

    /// Installs the grant of an allowed tool call.
    pub fn install_grant(
        &self,
        agent: &str,
        call_id: &str,
        active_message_id: &str,
        spec: &GrantSpec,
    ) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        if !reg.agents.contains_key(agent) {
            return Err(EnforceError::UnknownAgent {
                agent: agent.into(),
            });
        }
        if reg.handles.contains_key(call_id) {
            return Err(EnforceError::DuplicateCall {
                call_id: call_id.into(),
            });
        }
        let handle = reg.next_handle;
        let grant =
            KernelGrant::from_spec(spec, handle, supervisor::boot_ns()).map_err(|source| {
                EnforceError::Grant {
                    call_id: call_id.into(),
                    source,
                }
            })?;
        self.bpf().install(&grant)?;
        self.lsm_install(&grant)?;
        reg.next_handle += 1;
        reg.handles.insert(call_id.to_string(), handle);
        reg.calls.insert(
            handle,
            CallEntry {
                call_id: call_id.into(),
                active_message_id: active_message_id.into(),
                agent: agent.into(),
                grant,
                uses_left: (spec.uses != 0).then_some(spec.uses),
            },
        );
        drop(reg);
        self.save()?;
        tracing::info!(agent, call_id, handle, "grant installed");
        Ok(())
    }

    /// Binds `pid` to `call_id`; the caller vouches that `pid` asked itself.
    pub fn bind(&self, pid: u32, call_id: &str) -> Result<(), EnforceError> {
        self.bind_verified(pid, pid, call_id)
    }

    /// Binds `pid` to `call_id` on behalf of `peer_pid` (from SO_PEERCRED):
    /// both must be in the call's agent; spends one use of the grant.
    pub fn bind_verified(
        &self,
        peer_pid: u32,
        pid: u32,
        call_id: &str,
    ) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let handle = *reg
            .handles
            .get(call_id)
            .ok_or_else(|| binding::BindError::NoGrant {
                call_id: call_id.into(),
            })?;
        let agent_id = {
            let call = reg
                .calls
                .get(&handle)
                .ok_or_else(|| binding::BindError::NoGrant {
                    call_id: call_id.into(),
                })?;
            reg.agents.get(&call.agent).map(|a| a.id).unwrap_or(0)
        };
        let call = reg
            .calls
            .get_mut(&handle)
            .ok_or_else(|| binding::BindError::NoGrant {
                call_id: call_id.into(),
            })?;
        let slice = self.inner.instance.slice();
        binding::authorize(call, peer_pid, pid, supervisor::boot_ns(), |p| {
            binding::agent_of_pid(&slice, p)
        })?;
        self.bpf().bind(
            pid,
            Binding {
                call_id: handle,
                agent_id,
                _pad: 0,
            },
        )?;
        drop(reg);
        self.save()?;
        tracing::info!(pid, call_id, "process bound");
        Ok(())
    }

    /// Ends a grant: its map entries and every binding to it go.
    pub fn revoke(&self, call_id: &str) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let Some(handle) = reg.handles.remove(call_id) else {
            return Ok(());
        };
        if let Some(call) = reg.calls.remove(&handle) {
            let mut bpf = self.bpf();
            bpf.uninstall(&call.grant);
            bpf.unbind_call(handle);
            self.lsm_uninstall(handle);
        }
        drop(reg);
        self.save()
    }

    /// Switches an agent between enforce and audit-only, in the kernel and
    /// in the supervisors, at once.
    pub fn set_mode(&self, agent: &str, mode: Mode) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let a = reg
            .agents
            .get_mut(agent)
            .ok_or_else(|| EnforceError::UnknownAgent {
                agent: agent.into(),
            })?;
        a.mode = mode;
        let (cg, id) = (a.cgroup.id, a.id);
        self.bpf().set_agent(
            cg,
            AgentCgroup {
                agent_id: id,
                mode: mode.kernel() as u8,
                _pad: [0; 3],
            },
        )?;
        drop(reg);
        self.save()
    }

    /// Every agent with its processes and grants.
    pub fn list_agents(&self) -> Vec<AgentInfo> {
        let reg = self.registry_r();
        reg.agents
            .values()
            .map(|a| AgentInfo {
                name: a.name.clone(),
                mode: a.mode,
                pids: agent_cgroup::procs(&a.cgroup).unwrap_or_default(),
                calls: reg
                    .calls
                    .values()
                    .filter(|c| c.agent == a.name)
                    .map(|c| c.call_id.clone())
                    .collect(),
            })
            .collect()
    }

    /// Kernel and supervisor counters.
    pub fn counters(&self) -> Counters {
        let k = self.bpf().counters();
        let s = &self.inner.stats;
        let at = |i: usize| k.get(i).copied().unwrap_or(0);
        Counters {
            kernel_allowed: at(0),
            kernel_denied: at(1),
            events_dropped: at(2),
            events_suppressed: at(3),
            exec_killed: at(4),
            notifications: s.notifications.load(Ordering::Relaxed),
            supervisor_allowed: s.allowed.load(Ordering::Relaxed),
            supervisor_denied: s.denied.load(Ordering::Relaxed),
        }
    }

    /// Stops the supervisors and threads. Pinned programs keep enforcing;
    /// notified syscalls of running agents fail from now on.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let sups = self
            .inner
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for flag in sups.values().flatten() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Stops the supervisors of one agent: its notified syscalls fail from
    /// now on (ENOSYS), exactly as if agentd had died — used to stop an
    /// agent's file and exec access at once, and by the fail-closed scenario.
    pub fn stop_supervisors(&self, agent: &str) {
        let mut sups = self
            .inner
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for flag in sups.remove(agent).unwrap_or_default() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// The instance name (pin directory and slice derive from it).
    pub fn instance(&self) -> &str {
        &self.inner.instance.name
    }

    /// Clean uninstall: stops every agent, removes their cgroups and the
    /// slice, and unpins every map and link (the programs detach).
    pub fn uninstall(&self) {
        self.shutdown();
        let agents: Vec<AgentCgroupDir> = self
            .registry_r()
            .agents
            .values()
            .map(|a| a.cgroup.clone())
            .collect();
        for cg in &agents {
            let _ = agent_cgroup::kill_all(cg);
        }
        for cg in &agents {
            for _ in 0..50 {
                if agent_cgroup::remove(cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir(&self.inner.slice);
        let _ = std::fs::remove_dir_all(self.inner.instance.pin_dir());
        let _ = std::fs::remove_file(
            Path::new(bpf_state::INSTANCES_DIR).join(&self.inner.instance.name),
        );
        let _ = std::fs::remove_file(self.inner.state_dir.join("enforce-state.json"));
    }
}
