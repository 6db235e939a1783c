//! A recording fake of [`Privileged`] for unit tests of the Enforcer: it
//! keeps the maps and cgroups in memory, records every call in order (as
//! `op arg…` lines the tests assert on), and fails the operations it is
//! told to fail, so each failure path is reachable without root.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    os::fd::{AsRawFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
};

use agentd_common::{
    access::{AccessKey, AccessSummary},
    AgentCgroup, Binding, PendingGrant, UNLIMITED_USES,
};

use super::{
    agent_cgroup::{AgentCgroupDir, CgroupError},
    bpf_state::BpfStateError,
    fdstore::FdStoreError,
    grant::KernelGrant,
    holders::Holders,
    lsm,
    pending::Spend,
    privileged::{Privileged, SupervisorSpec},
    EnforceError,
};

/// The in-memory kernel.
#[derive(Default)]
pub struct State {
    /// Every call, in order.
    pub calls: Vec<String>,
    /// Operations to fail (by name): (calls to let through first, failures).
    pub fail: HashMap<&'static str, (u32, u32)>,
    /// Installed grants by handle.
    pub grants: BTreeSet<u64>,
    /// Agent cgroups in the kernel: cgroup id → entry.
    pub agents: BTreeMap<u64, AgentCgroup>,
    /// Pending grants by (agent id, slot).
    pub pending: BTreeMap<(u32, u32), PendingGrant>,
    /// Bindings: tgid → binding.
    pub bindings: BTreeMap<u32, Binding>,
    /// Cgroups: path → (id, processes).
    pub cgroups: BTreeMap<PathBuf, (u64, Vec<u32>)>,
    /// Processes under a seccomp filter.
    pub filtered: BTreeSet<u32>,
    /// Raw fds the fake calls listeners.
    pub listeners: BTreeSet<i32>,
    /// Names in the fd store.
    pub stored: BTreeSet<String>,
    /// Supervisors started: (agent, thread).
    pub supervisors: Vec<String>,
    /// Allowed accesses counted under grants (`ACCESS_SUMMARIES`, merged).
    pub summaries: Vec<(AccessKey, AccessSummary)>,
    /// Use tickets taken, by grant handle.
    pub tickets: BTreeMap<u64, u32>,
    /// File claims: (grant handle, tgid) (`FILE_CLAIMS`).
    pub file_claims: BTreeSet<(u64, u32)>,
    /// Processes that have exited (a file claim of theirs no longer holds
    /// its grant; bindings are removed by the test, as the exit tracepoint
    /// does).
    pub exited: BTreeSet<u32>,
    next_cgroup_id: u64,
}

/// The fake (cheap to clone; clones share one state).
#[derive(Clone, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
    clock: Arc<AtomicU64>,
}

impl FakeKernel {
    /// A fake whose clock starts at 1 s after boot.
    pub fn new() -> Self {
        let k = FakeKernel::default();
        k.clock.store(1_000_000_000, Ordering::Relaxed);
        k
    }

    /// The state, for assertions and set-up.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock on.
    pub fn advance(&self, ns: u64) {
        self.clock.fetch_add(ns, Ordering::Relaxed);
    }

    /// Fails the next `times` calls of operation `op`.
    pub fn fail(&self, op: &'static str, times: u32) {
        self.fail_after(op, 0, times);
    }

    /// Lets `pass` calls of `op` through, then fails `times` of them.
    pub fn fail_after(&self, op: &'static str, pass: u32, times: u32) {
        self.state().fail.insert(op, (pass, times));
    }

    /// Every recorded call, and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state().calls)
    }

    /// The recorded calls starting with `op `.
    pub fn calls_of(&self, op: &str) -> Vec<String> {
        let prefix = format!("{op} ");
        self.state()
            .calls
            .iter()
            .filter(|c| c.starts_with(&prefix) || c.as_str() == op)
            .cloned()
            .collect()
    }

    /// Puts process `pid` in the cgroup at `path` (which must exist).
    pub fn put_process(&self, path: &Path, pid: u32) {
        let mut st = self.state();
        for (_, procs) in st.cgroups.values_mut() {
            procs.retain(|p| *p != pid);
        }
        st.cgroups
            .get_mut(path)
            .expect("the cgroup exists")
            .1
            .push(pid);
    }

    /// Makes a cgroup directory (as if left by an earlier agentd).
    pub fn make_cgroup(&self, path: &Path) -> u64 {
        let mut st = self.state();
        st.next_cgroup_id += 1;
        let id = 1000 + st.next_cgroup_id;
        st.cgroups.entry(path.to_owned()).or_insert((id, vec![])).0
    }

    fn record(&self, call: String) -> MutexGuard<'_, State> {
        let mut st = self.state();
        st.calls.push(call);
        st
    }

    /// Whether `op` is to fail now (spends one failure).
    fn failing(st: &mut State, op: &'static str) -> bool {
        match st.fail.get_mut(op) {
            None | Some((_, 0)) => false,
            Some((pass, _)) if *pass > 0 => {
                *pass -= 1;
                false
            }
            Some((_, times)) => {
                *times -= 1;
                true
            }
        }
    }

    fn map_fail(op: &'static str) -> EnforceError {
        EnforceError::Bpf(BpfStateError::Map {
            map: op,
            message: "injected failure".into(),
        })
    }

    fn cgroup_fail(path: &Path) -> CgroupError {
        CgroupError::Io {
            path: path.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        }
    }
}

impl Privileged for FakeKernel {
    fn now_ns(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn install_grant(&self, grant: &KernelGrant) -> Result<(), EnforceError> {
        let mut st = self.record(format!("install_grant {}", grant.handle));
        if Self::failing(&mut st, "install_grant") {
            return Err(Self::map_fail("install_grant"));
        }
        st.grants.insert(grant.handle);
        Ok(())
    }

    fn uninstall_grant(&self, grant: &KernelGrant) {
        self.record(format!("uninstall_grant {}", grant.handle))
            .grants
            .remove(&grant.handle);
    }

    fn refresh_protected(&self, baseline: &KernelGrant) {
        drop(self.record(format!("refresh_protected {}", baseline.handle)));
    }

    fn clear_protected(&self, agent_id: u32) {
        drop(self.record(format!("clear_protected agent={agent_id}")));
    }

    fn publish_pending(
        &self,
        agent_id: u32,
        slot: u32,
        grant: &KernelGrant,
        pending: PendingGrant,
    ) -> Result<(), EnforceError> {
        let mut st = self.record(format!(
            "publish_pending agent={agent_id} slot={slot} handle={}",
            grant.handle
        ));
        if Self::failing(&mut st, "publish_pending") {
            return Err(Self::map_fail("publish_pending"));
        }
        st.pending.insert((agent_id, slot), pending);
        Ok(())
    }

    fn pending(&self, agent_id: u32, slot: u32) -> Option<PendingGrant> {
        self.state().pending.get(&(agent_id, slot)).copied()
    }

    fn withdraw_pending(&self, agent_id: u32, slot: u32, handle: u64) {
        let mut st = self.record(format!(
            "withdraw_pending agent={agent_id} slot={slot} handle={handle}"
        ));
        if st
            .pending
            .get(&(agent_id, slot))
            .is_some_and(|g| g.call_id == handle)
        {
            st.pending.remove(&(agent_id, slot));
        }
    }

    fn spend_use(&self, handle: u64, hint: u32, pending: Option<(u32, u32)>) -> Result<u32, Spend> {
        let mut st = self.record(format!("spend_use {handle}"));
        // A failing spend is a full ticket map.
        if Self::failing(&mut st, "spend_use") {
            return Err(Spend::TicketsFull);
        }
        let held = pending
            .and_then(|k| st.pending.get_mut(&k))
            .filter(|g| g.call_id == handle);
        let left = held.as_ref().map_or(hint, |g| g.uses_left);
        if left == UNLIMITED_USES {
            return Ok(left);
        }
        let after = left.checked_sub(1).ok_or(Spend::UsedUp)?;
        if let Some(g) = held {
            g.uses_left = after;
        }
        *st.tickets.entry(handle).or_default() += 1;
        Ok(after)
    }

    fn clear_tickets(&self, handle: u64, uses: u32) {
        self.record(format!("clear_tickets {handle} {uses}"))
            .tickets
            .remove(&handle);
    }

    fn uses_spent(&self, handle: u64, uses: u32) -> bool {
        uses > 0 && self.state().tickets.get(&handle).copied().unwrap_or(0) >= uses
    }

    fn grants_held(&self, handles: &HashSet<u64>) -> Holders {
        let st = self.state();
        let bound = st.bindings.values().map(|b| b.call_id);
        let claimed = st
            .file_claims
            .iter()
            .filter(|(_, tgid)| !st.exited.contains(tgid))
            .map(|(h, _)| *h);
        let held: HashSet<u64> = bound
            .chain(claimed)
            .filter(|h| handles.contains(h))
            .collect();
        let file_claims = st
            .file_claims
            .iter()
            .filter(|(h, _)| handles.contains(h) && !held.contains(h))
            .copied()
            .collect();
        Holders { held, file_claims }
    }

    fn forget_file_claims(&self, claims: &[(u64, u32)]) {
        let mut st = self.record(format!("forget_file_claims {claims:?}"));
        for c in claims {
            st.file_claims.remove(c);
        }
    }

    fn bind(&self, tgid: u32, binding: Binding) -> Result<(), EnforceError> {
        let mut st = self.record(format!("bind {tgid} {}", binding.call_id));
        if Self::failing(&mut st, "bind") {
            return Err(Self::map_fail("bind"));
        }
        st.bindings.insert(tgid, binding);
        Ok(())
    }

    fn unbind_call(&self, handle: u64) {
        self.record(format!("unbind_call {handle}"))
            .bindings
            .retain(|_, b| b.call_id != handle);
    }

    fn set_agent(&self, cgroup_id: u64, agent: AgentCgroup) -> Result<(), EnforceError> {
        let mut st = self.record(format!(
            "set_agent cg={cgroup_id} agent={} mode={}",
            agent.agent_id, agent.mode
        ));
        if Self::failing(&mut st, "set_agent") {
            return Err(Self::map_fail("set_agent"));
        }
        st.agents.insert(cgroup_id, agent);
        Ok(())
    }

    fn remove_agent(&self, cgroup_id: u64) {
        self.record(format!("remove_agent cg={cgroup_id}"))
            .agents
            .remove(&cgroup_id);
    }

    fn counters(&self) -> Vec<u64> {
        vec![0; agentd_common::COUNTER_SLOTS as usize]
    }

    fn access_summaries(&self) -> Vec<(AccessKey, AccessSummary)> {
        self.state().summaries.clone()
    }

    fn forget_access_summaries(&self, handle: u64) {
        let mut st = self.record(format!("forget_access_summaries {handle}"));
        st.summaries.retain(|(k, _)| k.call_id != handle);
    }

    fn allow_baseline_socket(&self, path: &str) {
        drop(self.record(format!("allow_baseline_socket {path}")));
    }

    fn lsm_loads(&self) -> Vec<lsm::HookLoad> {
        vec![]
    }

    fn cgroup_create(&self, parent: &Path, name: &str) -> Result<AgentCgroupDir, CgroupError> {
        let path = parent.join(name);
        let mut st = self.record(format!("cgroup_create {}", path.display()));
        if !super::agent_cgroup::valid_name(name) {
            return Err(CgroupError::BadName { name: name.into() });
        }
        if Self::failing(&mut st, "cgroup_create") {
            return Err(Self::cgroup_fail(&path));
        }
        st.next_cgroup_id += 1;
        let fresh = 1000 + st.next_cgroup_id;
        let id = st.cgroups.entry(path.clone()).or_insert((fresh, vec![])).0;
        Ok(AgentCgroupDir { path, id })
    }

    fn cgroup_open(&self, path: &Path) -> Result<AgentCgroupDir, CgroupError> {
        let st = self.state();
        st.cgroups
            .get(path)
            .map(|(id, _)| AgentCgroupDir {
                path: path.to_owned(),
                id: *id,
            })
            .ok_or_else(|| CgroupError::Io {
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })
    }

    fn cgroup_join(&self, cg: &AgentCgroupDir, pid: u32) -> Result<(), CgroupError> {
        let mut st = self.record(format!("cgroup_join {} {pid}", cg.path.display()));
        if Self::failing(&mut st, "cgroup_join") {
            return Err(Self::cgroup_fail(&cg.path));
        }
        drop(st);
        self.put_process(&cg.path, pid);
        Ok(())
    }

    fn cgroup_procs(&self, cg: &AgentCgroupDir) -> Result<Vec<u32>, CgroupError> {
        Ok(self
            .state()
            .cgroups
            .get(&cg.path)
            .map(|(_, p)| p.clone())
            .unwrap_or_default())
    }

    fn cgroup_kill(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        let mut st = self.record(format!("cgroup_kill {}", cg.path.display()));
        if let Some((_, procs)) = st.cgroups.get_mut(&cg.path) {
            procs.clear();
        }
        Ok(())
    }

    fn cgroup_restart_waiting(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        drop(self.record(format!("cgroup_restart_waiting {}", cg.path.display())));
        Ok(())
    }

    fn cgroup_remove(&self, cg: &AgentCgroupDir) -> Result<(), CgroupError> {
        let mut st = self.record(format!("cgroup_remove {}", cg.path.display()));
        let busy = st.cgroups.get(&cg.path).is_some_and(|(_, p)| !p.is_empty())
            || st
                .cgroups
                .keys()
                .any(|k| k != &cg.path && k.starts_with(&cg.path));
        if busy {
            return Err(Self::cgroup_fail(&cg.path));
        }
        st.cgroups.remove(&cg.path);
        Ok(())
    }

    fn cgroup_children(&self, path: &Path) -> Vec<String> {
        self.cgroup_dirs(path)
            .into_iter()
            .filter(|n| super::agent_cgroup::valid_name(n))
            .collect()
    }

    fn cgroup_dirs(&self, path: &Path) -> Vec<String> {
        self.state()
            .cgroups
            .keys()
            .filter(|k| k.parent() == Some(path))
            .filter_map(|k| k.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    fn agent_of_pid(&self, slice_name: &str, pid: u32) -> Option<String> {
        let st = self.state();
        let (path, _) = st.cgroups.iter().find(|(_, (_, p))| p.contains(&pid))?;
        // The component right under the slice, as /proc/PID/cgroup would say.
        let mut parts = path.iter().map(|c| c.to_string_lossy());
        parts.find(|c| c == slice_name)?;
        parts.next().map(|c| c.into_owned())
    }

    fn under_seccomp_filter(&self, pid: u32) -> bool {
        self.state().filtered.contains(&pid)
    }

    fn supervise(
        &self,
        listener: OwnedFd,
        spec: SupervisorSpec,
    ) -> Result<JoinHandle<()>, EnforceError> {
        let mut st = self.record(format!("supervise {} uid={}", spec.agent, spec.creds.uid));
        if Self::failing(&mut st, "supervise") {
            return Err(EnforceError::Supervisor {
                agent: spec.agent,
                source: std::io::Error::from_raw_os_error(libc::EMFILE),
            });
        }
        st.supervisors.push(spec.agent.clone());
        let stop = spec.stop;
        Ok(std::thread::spawn(move || {
            // Holds the listener until stopped, like the real supervisor.
            let _listener = listener;
            while !stop.is_requested() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }))
    }

    fn is_listener(&self, fd: BorrowedFd<'_>) -> bool {
        self.state().listeners.contains(&fd.as_raw_fd())
    }

    fn store_fd(&self, name: &str, _fd: BorrowedFd<'_>) -> Result<bool, FdStoreError> {
        self.record(format!("store_fd {name}"))
            .stored
            .insert(name.into());
        Ok(true)
    }

    fn remove_stored_fd(&self, name: &str) -> Result<bool, FdStoreError> {
        self.record(format!("remove_stored_fd {name}"))
            .stored
            .remove(name);
        Ok(true)
    }
}
