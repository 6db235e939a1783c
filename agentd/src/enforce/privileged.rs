//! The privileged operations the [`super::Enforcer`] performs, behind one
//! trait (in the manner of youki's `Syscall`): BPF map writes and reads,
//! cgroup create/join/kill/remove, the seccomp listener hand-off to a
//! supervisor thread, the service manager's fd store, and the clock grants
//! expire by. [`KernelOps`] is the real implementation (it delegates to
//! `bpf_state`, `lsm`, `agent_cgroup`, `fdstore` and the supervisor); the
//! unit tests substitute a recording fake that can be told to fail, so the
//! Enforcer's own logic (grant lifecycle, binding rules, re-adoption after
//! a restart, mode switches, failing closed) is tested without root.
use std::{
    collections::HashSet,
    os::fd::{BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    thread::JoinHandle,
};

use agentd_common::{
    access::{AccessKey, AccessSummary},
    AgentCgroup, Binding, PendingGrant,
};

use super::{
    agent_cgroup::{self, AgentCgroupDir, CgroupError},
    bpf_state::BpfState,
    claim::ClaimMaps,
    events::AuditTx,
    fdstore::{self, FdStoreError},
    grant::KernelGrant,
    holders::{HolderMaps, Holders},
    lsm,
    pending::Spend,
    registry::{Creds, Registry},
    seccomp::supervisor::{self, Supervisor, SupervisorStats},
    EnforceError,
};

/// What a supervisor thread needs besides its listener (the real
/// implementation adds its own handles to the pinned claim maps).
pub struct SupervisorSpec {
    /// The agent the listener belongs to.
    pub agent: String,
    /// Credentials files are opened under.
    pub creds: Creds,
    /// The shared agent/grant registry.
    pub registry: Arc<RwLock<Registry>>,
    /// The kernel audit writer.
    pub audit: AuditTx,
    /// Asks the thread to stop.
    pub stop: Arc<crate::enforce::seccomp::supervisor::stop::Stop>,
    /// Ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
    pub sync_wakeup: bool,
    /// Shared counters.
    pub stats: Arc<SupervisorStats>,
    /// The instance's bpffs pin directory.
    pub pin_dir: PathBuf,
}

/// Every privileged operation of the Enforcer. Implementations serialise
/// their own state (the Enforcer calls them from several threads).
pub trait Privileged: Send + Sync + 'static {
    /// CLOCK_BOOTTIME in ns: the clock grant expiry is measured on.
    fn now_ns(&self) -> u64;

    /// Writes a grant's exec files, arguments, connect destinations (and,
    /// on lsm, its path scopes) under its handle.
    fn install_grant(&self, grant: &KernelGrant) -> Result<(), EnforceError>;
    /// Removes what [`Self::install_grant`] wrote.
    fn uninstall_grant(&self, grant: &KernelGrant);
    /// Writes the protected files of `baseline`'s agent again, as they are
    /// now (lsm; after a call that may have replaced one ends).
    fn refresh_protected(&self, _baseline: &KernelGrant) {}
    /// Forgets agent `agent_id`'s protected files (lsm; the agent is gone).
    fn clear_protected(&self, _agent_id: u32) {}
    /// Publishes `grant` as pending in (agent, slot) for claims, replacing
    /// whatever the slot held (its path scopes too, on lsm).
    fn publish_pending(
        &self,
        agent_id: u32,
        slot: u32,
        grant: &KernelGrant,
        pending: PendingGrant,
    ) -> Result<(), EnforceError>;
    /// The pending grant in (agent, slot), with its `uses_left` hint.
    fn pending(&self, agent_id: u32, slot: u32) -> Option<PendingGrant>;
    /// Withdraws the pending grant of (agent, slot) if `handle` still holds it.
    fn withdraw_pending(&self, agent_id: u32, slot: u32, handle: u64);
    /// Spends one use of grant `handle` (see `BpfState::spend_use`);
    /// the uses left, or why none was spent.
    fn spend_use(&self, handle: u64, hint: u32, pending: Option<(u32, u32)>) -> Result<u32, Spend>;
    /// Forgets the spent-use tickets of a removed grant.
    fn clear_tickets(&self, handle: u64, uses: u32);
    /// Whether every use of grant `handle` is spent: its tickets 1..=`uses`
    /// are all taken.
    fn uses_spent(&self, handle: u64, uses: u32) -> bool;
    /// Of `handles`, the grants a live process still holds: one bound to
    /// it (children inherit, exit unbinds) or one that claimed it for its
    /// file operations (while that process lives); and the file claims
    /// recorded under the others (see [`holders`]).
    fn grants_held(&self, handles: &HashSet<u64>) -> Holders;
    /// Forgets these file claims (grant handle, tgid): their grants ended.
    fn forget_file_claims(&self, claims: &[(u64, u32)]);
    /// Binds process `tgid` to a call (its children inherit in the kernel).
    fn bind(&self, tgid: u32, binding: Binding) -> Result<(), EnforceError>;
    /// Removes every binding to `handle`.
    fn unbind_call(&self, handle: u64);
    /// Registers (or updates the mode of) an agent cgroup.
    fn set_agent(&self, cgroup_id: u64, agent: AgentCgroup) -> Result<(), EnforceError>;
    /// Unregisters an agent cgroup.
    fn remove_agent(&self, cgroup_id: u64);
    /// Kernel decision counters, summed over CPUs.
    fn counters(&self) -> Vec<u64>;
    /// Allowed accesses the kernel counted under grants, merged over CPUs
    /// (none where nothing counts them).
    fn access_summaries(&self) -> Vec<(AccessKey, AccessSummary)> {
        Vec::new()
    }
    /// Deletes the counted accesses of a call whose grant ended.
    fn forget_access_summaries(&self, _handle: u64) {}
    /// Lets every agent baseline connect to one of agentd's own sockets (lsm).
    fn allow_baseline_socket(&self, path: &str);
    /// What loading each lsm hook cost (empty on seccomp).
    fn lsm_loads(&self) -> Vec<lsm::HookLoad>;

    /// Creates (or re-opens) cgroup `name` under `parent`.
    fn cgroup_create(&self, parent: &Path, name: &str) -> Result<AgentCgroupDir, CgroupError>;
    /// Opens an existing cgroup.
    fn cgroup_open(&self, path: &Path) -> Result<AgentCgroupDir, CgroupError>;
    /// Moves `pid` into the cgroup.
    fn cgroup_join(&self, cg: &AgentCgroupDir, pid: u32) -> Result<(), CgroupError>;
    /// The processes in the cgroup.
    fn cgroup_procs(&self, cg: &AgentCgroupDir) -> Result<Vec<u32>, CgroupError>;
    /// Kills every process in the cgroup.
    fn cgroup_kill(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError>;
    /// Freezes and thaws the cgroup (restarts syscalls waiting for a dead supervisor).
    fn cgroup_restart_waiting(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError>;
    /// Removes an empty cgroup.
    fn cgroup_remove(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError>;
    /// Names of the cgroups directly under `path` (valid agent names only).
    fn cgroup_children(&self, path: &Path) -> Vec<String>;
    /// Every directory directly under `path`, whatever its name (systemd
    /// units included), for finding agents nobody recorded.
    fn cgroup_dirs(&self, path: &Path) -> Vec<String>;
    /// The agent a live process belongs to: its cgroup directly under the
    /// slice named `slice_name`.
    fn agent_of_pid(&self, slice_name: &str, pid: u32) -> Option<String>;
    /// Whether a process runs under a seccomp filter (an exited one needs none).
    fn under_seccomp_filter(&self, pid: u32) -> bool;

    /// Starts answering a seccomp listener's notifications in a thread.
    fn supervise(
        &self,
        listener: OwnedFd,
        spec: SupervisorSpec,
    ) -> Result<JoinHandle<()>, EnforceError>;
    /// Whether `fd` is a seccomp user-notification listener.
    fn is_listener(&self, fd: BorrowedFd<'_>) -> bool;
    /// Hands a copy of a listener to the service manager's fd store;
    /// `Ok(false)` when there is none.
    fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<bool, FdStoreError>;
    /// Removes a listener from the fd store.
    fn remove_stored_fd(&self, name: &str) -> Result<bool, FdStoreError>;
}

/// The real privileged operations: the loaded BPF object (and the lsm
/// hooks' maps), cgroupfs, /proc, the supervisor threads, the fd store.
pub struct KernelOps {
    bpf: Mutex<BpfState>,
    lsm: Option<Mutex<lsm::LsmState>>,
    /// The spent-grant sweep's own handles (`None`: they did not open).
    holders: Mutex<Option<HolderMaps>>,
}

impl KernelOps {
    /// Wraps the started BPF state (and the lsm state on that backend).
    pub fn new(bpf: BpfState, lsm: Option<lsm::LsmState>) -> Self {
        let holders = HolderMaps::open(&bpf.pin_dir)
            .inspect_err(|e| tracing::error!(error = %e, "holder maps not opened: spent grants are kept until they expire"))
            .ok();
        KernelOps {
            bpf: Mutex::new(bpf),
            lsm: lsm.map(Mutex::new),
            holders: Mutex::new(holders),
        }
    }

    fn holders(&self) -> MutexGuard<'_, Option<HolderMaps>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bpf(&self) -> MutexGuard<'_, BpfState> {
        self.bpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lsm(&self) -> Option<MutexGuard<'_, lsm::LsmState>> {
        self.lsm
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Privileged for KernelOps {
    fn now_ns(&self) -> u64 {
        supervisor::boot_ns()
    }

    fn install_grant(&self, grant: &KernelGrant) -> Result<(), EnforceError> {
        self.bpf().install(grant)?;
        if let Some(mut lsm) = self.lsm() {
            lsm.install(grant)?;
        }
        Ok(())
    }

    fn uninstall_grant(&self, grant: &KernelGrant) {
        self.bpf().uninstall(grant);
        if let Some(mut lsm) = self.lsm() {
            lsm.uninstall(grant.handle);
        }
    }

    fn refresh_protected(&self, baseline: &KernelGrant) {
        if let Some(mut lsm) = self.lsm() {
            if let Err(e) = lsm.install_protected(baseline) {
                tracing::error!(handle = baseline.handle, error = %e, "protected files not refreshed");
            }
        }
    }

    fn clear_protected(&self, agent_id: u32) {
        if let Some(mut lsm) = self.lsm() {
            lsm.clear_protected(agent_id);
        }
    }

    fn publish_pending(
        &self,
        agent_id: u32,
        slot: u32,
        grant: &KernelGrant,
        pending: PendingGrant,
    ) -> Result<(), EnforceError> {
        // The slot's previous grant's path scopes go before the slot
        // changes hands, the new grant's come once it has.
        if let Some(mut lsm) = self.lsm() {
            lsm.clear_pending_scopes(agent_id, slot);
        }
        self.bpf().set_pending(agent_id, slot, pending)?;
        if let Some(mut lsm) = self.lsm() {
            lsm.add_pending_scopes(agent_id, slot, grant)?;
        }
        Ok(())
    }

    fn pending(&self, agent_id: u32, slot: u32) -> Option<PendingGrant> {
        self.bpf().pending(agent_id, slot)
    }

    fn withdraw_pending(&self, agent_id: u32, slot: u32, handle: u64) {
        self.bpf().clear_pending(agent_id, slot, handle);
        if let Some(mut lsm) = self.lsm() {
            lsm.clear_pending_scopes(agent_id, slot);
        }
    }

    fn spend_use(&self, handle: u64, hint: u32, pending: Option<(u32, u32)>) -> Result<u32, Spend> {
        self.bpf().spend_use(handle, hint, pending)
    }

    fn clear_tickets(&self, handle: u64, uses: u32) {
        self.bpf().clear_tickets(handle, uses)
    }

    fn uses_spent(&self, handle: u64, uses: u32) -> bool {
        self.bpf().uses_spent(handle, uses)
    }

    fn grants_held(&self, handles: &HashSet<u64>) -> Holders {
        match self.holders().as_ref() {
            Some(h) => h.walk(handles),
            // Fail towards keeping: a grant nobody can show unheld stays
            // until it expires.
            None => Holders {
                held: handles.clone(),
                file_claims: Vec::new(),
            },
        }
    }

    fn forget_file_claims(&self, claims: &[(u64, u32)]) {
        if let Some(h) = self.holders().as_mut() {
            h.forget(claims);
        }
    }

    fn bind(&self, tgid: u32, binding: Binding) -> Result<(), EnforceError> {
        Ok(self.bpf().bind(tgid, binding)?)
    }

    fn unbind_call(&self, handle: u64) {
        self.bpf().unbind_call(handle)
    }

    fn set_agent(&self, cgroup_id: u64, agent: AgentCgroup) -> Result<(), EnforceError> {
        Ok(self.bpf().set_agent(cgroup_id, agent)?)
    }

    fn remove_agent(&self, cgroup_id: u64) {
        self.bpf().remove_agent(cgroup_id)
    }

    fn counters(&self) -> Vec<u64> {
        self.bpf().counters()
    }

    fn access_summaries(&self) -> Vec<(AccessKey, AccessSummary)> {
        self.bpf().access_summaries()
    }

    fn forget_access_summaries(&self, handle: u64) {
        self.bpf().forget_access_summaries(handle)
    }

    fn allow_baseline_socket(&self, path: &str) {
        if let Some(mut lsm) = self.lsm() {
            lsm.allow_baseline_socket(path);
        }
    }

    fn lsm_loads(&self) -> Vec<lsm::HookLoad> {
        self.lsm().map(|l| l.loads.clone()).unwrap_or_default()
    }

    fn cgroup_create(&self, parent: &Path, name: &str) -> Result<AgentCgroupDir, CgroupError> {
        agent_cgroup::create(parent, name)
    }

    fn cgroup_open(&self, path: &Path) -> Result<AgentCgroupDir, CgroupError> {
        agent_cgroup::open(path)
    }

    fn cgroup_join(&self, cg: &AgentCgroupDir, pid: u32) -> Result<(), CgroupError> {
        agent_cgroup::join(cg, pid)
    }

    fn cgroup_procs(&self, cg: &AgentCgroupDir) -> Result<Vec<u32>, CgroupError> {
        agent_cgroup::procs(cg)
    }

    fn cgroup_kill(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        agent_cgroup::kill_all(cg)
    }

    fn cgroup_restart_waiting(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        agent_cgroup::restart_waiting_syscalls(cg)
    }

    fn cgroup_remove(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        agent_cgroup::remove(cg)
    }

    fn cgroup_children(&self, path: &Path) -> Vec<String> {
        agent_cgroup::existing(path)
    }

    fn cgroup_dirs(&self, path: &Path) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(path) else {
            return vec![];
        };
        dir.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn agent_of_pid(&self, slice_name: &str, pid: u32) -> Option<String> {
        agent_cgroup::agent_name_of_pid(slice_name, pid)
    }

    fn under_seccomp_filter(&self, pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Ok(s) => s
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .is_some_and(|v| v.trim() == "2"),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    fn supervise(
        &self,
        listener: OwnedFd,
        spec: SupervisorSpec,
    ) -> Result<JoinHandle<()>, EnforceError> {
        let claims = ClaimMaps::open(&spec.pin_dir)?;
        let agent = spec.agent.clone();
        let sup = Supervisor {
            agent: spec.agent,
            creds: spec.creds,
            registry: spec.registry,
            audit: spec.audit,
            stop: spec.stop,
            sync_wakeup: spec.sync_wakeup,
            stats: spec.stats,
            pin_dir: spec.pin_dir,
            claims: Mutex::new(Some(claims)),
        };
        supervisor::spawn(listener, sup)
            .map_err(|source| EnforceError::Supervisor { agent, source })
    }

    fn is_listener(&self, fd: BorrowedFd<'_>) -> bool {
        fdstore::is_seccomp_listener(fd)
    }

    fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<bool, FdStoreError> {
        fdstore::store(name, fd)
    }

    fn remove_stored_fd(&self, name: &str) -> Result<bool, FdStoreError> {
        fdstore::remove(name)
    }
}
