//! Enforcer lifecycle: start (and re-adoption of pinned state after a
//! restart), housekeeping, counters, shutdown and uninstall.
use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock, Weak,
    },
    time::Duration,
};

use agentd_common::baseline_call_id;

use super::{
    access_summary,
    agent_cgroup::{self, AgentCgroupDir},
    bpf_state::{self, BpfState},
    cgroup_root, events, fdstore,
    grant::KernelGrant,
    journal, lsm, persist,
    privileged::{KernelOps, Privileged},
    registry::{AgentEntry, CallEntry, ListenerEntry, Registry},
    AuditSink, Backend, Counters, EnforceError, Enforcer, Inner, GRANT_GRACE_NS, TICKET_MARGIN_NS,
};
use crate::protocol::reason;

/// What an Enforcer is made of before it knows any agent.
pub(super) struct Assembly {
    /// The backend in use.
    pub backend: Backend,
    /// Its names in bpffs and cgroupfs.
    pub instance: bpf_state::Instance,
    /// The instance's cgroup slice directory.
    pub slice: std::path::PathBuf,
    /// Where the state file lives.
    pub state_dir: std::path::PathBuf,
    /// The privileged operations.
    pub ops: Arc<dyn Privileged>,
    /// Where kernel and lifecycle records go.
    pub sink: Arc<dyn AuditSink>,
    /// How many kernel records may wait for the writer.
    pub queue: usize,
}

impl Enforcer {
    /// Loads the BPF side (re-adopting pinned state after a restart), starts
    /// the event and audit threads. Running seccomp agents whose
    /// supervisors died with the previous agentd are stopped and the gap is
    /// audited (see [`Self::start_with_stored`] for keeping them).
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
        Self::start_with_queue(backend, state_dir, sink, events::AUDIT_QUEUE)
    }

    /// [`Self::start_with_sink`] with an audit queue `queue` records deep
    /// (tests use a small one to show a full queue slows agents down
    /// rather than dropping rows).
    pub fn start_with_queue(
        backend: Backend,
        state_dir: &Path,
        sink: Arc<dyn AuditSink>,
        queue: usize,
    ) -> Result<Self, EnforceError> {
        Self::start_with_stored(backend, state_dir, sink, queue, Vec::new())
    }

    /// [`Self::start_with_queue`] with the fds the service manager kept for
    /// the previous agentd ([`fdstore::take_inherited`]): each running
    /// agent whose listeners all came back keeps running, supervised again
    /// (`agent_readopted`); the others are stopped as without a store.
    pub fn start_with_stored(
        backend: Backend,
        state_dir: &Path,
        sink: Arc<dyn AuditSink>,
        queue: usize,
        stored: Vec<fdstore::StoredFd>,
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
        drop_unadoptable_state(&instance, &root, state_dir, sink.as_ref());
        let slice = agent_cgroup::ensure_slice(&root, &instance.slice())?;
        let (bpf, ring) = BpfState::start(&slice, &instance.pin_dir())?;
        let adopted = bpf.adopted;
        if backend == Backend::Seccomp {
            // Without it the supervisor's decisions still hold, but a socket
            // swapped behind a CONTINUE (TCP then unix) and unix sendmsg
            // would go unchecked: said loudly, not fatal (kernels < 6.7).
            if let Err(e) = super::unix_gate::attach(&slice, &instance.pin_dir()) {
                tracing::warn!(error = %e, "cgroup connect_unix/sendmsg_unix refusal not attached: unix sockets rely on the supervisor alone");
                let _ = sink.append_lifecycle(
                    "unix_gate_unavailable",
                    &e.to_string(),
                    reason::KERNEL_FEATURE_MISSING,
                );
            }
        }
        let lsm = match backend {
            Backend::Lsm => Some(lsm::LsmState::start_in(&instance.pin_dir())?),
            _ => None,
        };
        let me = Self::assemble(Assembly {
            backend,
            instance,
            slice,
            state_dir: state_dir.to_owned(),
            ops: Arc::new(KernelOps::new(bpf, lsm)),
            sink,
            queue,
        });
        let _ring = events::spawn_ring_reader(
            ring,
            me.inner.registry.clone(),
            me.inner.audit_tx.clone(),
            me.inner.stop.clone(),
        );
        me.resume(adopted, stored)?;
        me.spawn_housekeeping();
        Ok(me)
    }

    /// The Enforcer over `parts`, knowing nothing yet (see [`Self::resume`]).
    pub(super) fn assemble(parts: Assembly) -> Self {
        let (audit_tx, _writer) = events::spawn_writer_with_queue(parts.sink.clone(), parts.queue);
        let registry = Arc::new(RwLock::new(Registry {
            next_handle: 1,
            next_agent_id: 1,
            ..Registry::default()
        }));
        let inner = Arc::new(Inner {
            backend: parts.backend,
            instance: parts.instance,
            ops: parts.ops,
            registry,
            slice: parts.slice,
            state_dir: parts.state_dir,
            audit_tx,
            sink: parts.sink,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
            sync_wakeup: AtomicBool::new(true),
            supervisors: Mutex::default(),
            save_lock: Mutex::default(),
            launch_gate: RwLock::default(),
            summaries: Mutex::default(),
            journal: Mutex::default(),
            tickets_cleared_through: Default::default(),
            spent_since: Mutex::default(),
        });
        Enforcer { inner }
    }

    /// Takes up where the previous agentd left off: with `adopted` (the
    /// maps were still pinned) the agents and grants of the state file come
    /// back and the gap is audited; the listeners in `stored` are
    /// supervised again where their agent can be, and agents nobody knows
    /// are stopped.
    pub(super) fn resume(
        &self,
        adopted: bool,
        stored: Vec<fdstore::StoredFd>,
    ) -> Result<(), EnforceError> {
        let state_dir = self.inner.state_dir.clone();
        let previous = journal::load(&state_dir).ok().flatten();
        let gap = persist::heartbeat_age(&state_dir);
        let clean = persist::take_clean_stop(&state_dir);
        if adopted {
            if let Some(prev) = previous {
                self.readopt(prev)?;
            }
            let gap_ms = gap
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "unknown".into());
            let _ = self.inner.sink.append_lifecycle(
                "enforcer_restart",
                &format!("gap_ms={gap_ms}"),
                reason::DAEMON_RESTART,
            );
        } else {
            let _ = self.inner.sink.append_lifecycle(
                "enforcer_start",
                &format!("backend={:?}", self.inner.backend),
                reason::STARTED,
            );
        }
        // Without re-adopted maps no agent is known: every stored fd is closed.
        self.readopt_listeners(stored, clean);
        if let Err(e) = self.save() {
            // The listeners already run supervised; the file is rewritten at
            // the next change.
            tracing::error!(error = %e, "enforcer state not saved after start");
        }
        self.stop_unknown_agents();
        persist::touch_heartbeat(&state_dir);
        Ok(())
    }

    /// Restores agents, grants and listener records from the state file
    /// over the pinned maps. Which running agents keep running is decided
    /// next, by [`Self::readopt_listeners`].
    pub(super) fn readopt(&self, prev: persist::State) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        reg.next_handle = prev.next_handle.max(1);
        reg.next_agent_id = prev.next_agent_id.max(1);
        let now = self.ops().now_ns();
        for a in prev.agents {
            let Ok(cg) = self.ops().cgroup_open(&self.inner.slice.join(&a.name)) else {
                continue;
            };
            let baseline = KernelGrant::from_spec(&a.baseline, baseline_call_id(a.id), now)
                .map_err(|source| EnforceError::Grant {
                    call_id: format!("baseline:{}", a.name),
                    source,
                })?;
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
                reg.insert_call(
                    c.handle,
                    CallEntry {
                        call_id: c.call_id,
                        active_message_id: c.active_message_id,
                        agent: c.agent,
                        grant,
                        uses_left: c.uses_left,
                        pending: c.pending,
                    },
                );
            }
        }
        for l in prev.listeners {
            if reg.agents.contains_key(&l.agent) {
                reg.listeners.insert(
                    l.name,
                    ListenerEntry {
                        agent: l.agent,
                        creds: l.creds,
                    },
                );
            }
        }
        Ok(())
    }

    /// Agent cgroups under the slice that the state file does not name (a
    /// state file lost or older than the cgroup, a crash between creating an
    /// agent and saving): nothing here knows their grants or baseline, and
    /// under seccomp their listener is gone, so they are stopped, removed
    /// and audited (`agent_stopped`, `agent_unknown_on_restart`) — never
    /// left running unaccounted for.
    fn stop_unknown_agents(&self) {
        let ops = self.ops();
        let known: Vec<String> = self.registry_r().agents.keys().cloned().collect();
        for name in ops.cgroup_dirs(&self.inner.slice) {
            // systemd's own units share the slice (agent@NAME.service runs
            // the launcher there): only agent cgroups are agentd's to judge.
            let systemd_unit = [".service", ".scope", ".slice"]
                .iter()
                .any(|s| name.ends_with(s));
            if systemd_unit || known.contains(&name) {
                continue;
            }
            let Ok(cg) = ops.cgroup_open(&self.inner.slice.join(&name)) else {
                continue;
            };
            let pids = ops.cgroup_procs(&cg).unwrap_or_default();
            let _ = ops.cgroup_kill(&cg);
            for _ in 0..50 {
                if ops.cgroup_remove(&cg).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::warn!(agent = %name, pids = pids.len(), "stopped an agent the state file does not know");
            let _ = self.inner.sink.append_lifecycle(
                "agent_stopped",
                &format!("agent={name} pids={}", pids.len()),
                reason::AGENT_UNKNOWN_ON_RESTART,
            );
        }
    }

    fn spawn_housekeeping(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        std::thread::Builder::new()
            .name("agentd-enforce-hk".into())
            .spawn(move || {
                // Counted accesses are written every FLUSH_EVERY.
                const TICK: Duration = Duration::from_millis(500);
                const FLUSH_TICKS: u32 =
                    (access_summary::FLUSH_EVERY.as_millis() / TICK.as_millis()) as u32;
                let mut ticks = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let Some(inner) = weak.upgrade() else { return };
                    let me = Enforcer { inner };
                    persist::touch_heartbeat(&me.inner.state_dir);
                    me.reap_supervisors();
                    me.expire_grants();
                    me.drop_spent_grants();
                    ticks += 1;
                    if ticks.is_multiple_of(FLUSH_TICKS) {
                        me.flush_access_summaries(false);
                    }
                }
            })
            .expect("spawn housekeeping thread");
    }

    /// Removes grants whose expiry passed (the kernel already ignores them).
    pub(super) fn expire_grants(&self) {
        let now = self.ops().now_ns();
        self.clear_expired_tickets(now);
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

    /// Frees the use tickets of grants that expired more than
    /// [`TICKET_MARGIN_NS`] ago, without waiting for their grace minute:
    /// nothing spends a use of an expired grant (the kernel and the
    /// supervisors check the expiry first), and a ticket held until the
    /// revocation would keep a slot of the kernel's `USE_TICKETS` map for a
    /// grant that can never be used again. The margin, and the registry's
    /// write lock, leave no claim that checked the expiry in time still to
    /// take its ticket. Each grant's tickets go once: the pass covers the
    /// expiries since the last one.
    fn clear_expired_tickets(&self, now: u64) {
        let upto = now.saturating_sub(TICKET_MARGIN_NS);
        let from = self
            .inner
            .tickets_cleared_through
            .swap(upto, Ordering::Relaxed);
        if upto <= from {
            return;
        }
        let due: Vec<(u64, u32)> = self
            .registry_r()
            .calls
            .values()
            .filter(|c| c.grant.spec.uses > 0)
            .filter(|c| c.grant.expires_at_ns > from && c.grant.expires_at_ns <= upto)
            .map(|c| (c.grant.handle, c.grant.spec.uses))
            .collect();
        if due.is_empty() {
            return;
        }
        // Cleared under the write lock: no claim is between its expiry
        // check and its ticket while this runs.
        let _reg = self.registry_w();
        for (handle, uses) in due {
            self.ops().clear_tickets(handle, uses);
        }
    }

    /// Kernel and supervisor counters.
    pub fn counters(&self) -> Counters {
        let k = self.ops().counters();
        let s = &self.inner.stats;
        let at = |i: usize| k.get(i).copied().unwrap_or(0);
        Counters {
            kernel_allowed: at(0),
            kernel_denied: at(1),
            events_dropped: at(2),
            events_suppressed: at(3),
            exec_killed: at(4),
            reads_by_scope_hint: at(5),
            notifications: s.notifications.load(Ordering::Relaxed),
            supervisor_allowed: s.allowed.load(Ordering::Relaxed),
            supervisor_denied: s.denied.load(Ordering::Relaxed),
        }
    }

    /// Stops the supervisors (each answers the notification it holds
    /// first) and the threads. Pinned programs keep enforcing. Listeners
    /// kept in the fd store stay there: the running agents' notified
    /// syscalls wait for the next agentd. Without a store they fail from
    /// now on.
    pub fn shutdown(&self) {
        // Counted accesses get their rows before agentd goes (the counts
        // stay pinned: the next agentd's rows restate the totals).
        self.flush_access_summaries(true);
        if self.stop_all_supervisors() {
            persist::mark_clean_stop(&self.inner.state_dir);
        }
    }

    /// Clean uninstall: stops every agent, removes their cgroups and the
    /// slice, and unpins every map and link (the programs detach).
    pub fn uninstall(&self) {
        self.shutdown();
        self.forget_all_listeners();
        let _ = persist::take_clean_stop(&self.inner.state_dir);
        let agents: Vec<AgentCgroupDir> = self
            .registry_r()
            .agents
            .values()
            .map(|a| a.cgroup.clone())
            .collect();
        for cg in &agents {
            let _ = self.ops().cgroup_kill(cg);
        }
        for cg in &agents {
            for _ in 0..50 {
                if self.ops().cgroup_remove(cg).is_ok() {
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

/// Pinned maps are only adopted with the state file that names their
/// entries: without it (a wiped or unreadable state directory) a new
/// agentd would number grants and agents from 1 again over entries it
/// cannot see — spent use tickets refusing new grants, another agent's
/// unexpired grants claimable by an agent that gets its old id. So the
/// instance's agents are stopped and its kernel state dropped, audited.
fn drop_unadoptable_state(
    instance: &bpf_state::Instance,
    cgroup_root: &Path,
    state_dir: &Path,
    sink: &dyn AuditSink,
) {
    if !instance.pin_dir().exists() {
        return;
    }
    let why = match journal::load(state_dir) {
        Ok(Some(_)) => return,
        Ok(None) => "no state file".to_string(),
        Err(e) => e.to_string(),
    };
    let stopped = instance.drop_kernel_state(cgroup_root);
    tracing::warn!(instance = %instance.name, why = %why, stopped = ?stopped, "pinned enforcement state without its state file: agents stopped, kernel state dropped");
    let _ = sink.append_lifecycle(
        "enforcer_state_dropped",
        &format!("{why}; agents stopped: [{}]", stopped.join(",")),
        reason::ENFORCER_STATE_UNKNOWN,
    );
}
