//! Seccomp listeners and their supervisors: started for a launcher's
//! listener and kept in the service manager's fd store, re-adopted when a
//! restarted agentd gets them back, forgotten when their agent's processes
//! are gone or their supervision is cut.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, OwnedFd},
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    agent_cgroup::AgentCgroupDir,
    fdstore::{self, StoredFd},
    privileged::SupervisorSpec,
    registry::ListenerEntry,
    seccomp::supervisor::stop::Stop,
    Backend, Creds, EnforceError, Enforcer,
};
use crate::protocol::reason;

/// How long a stop waits for supervisors to answer what they hold.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// One running supervisor.
pub(super) struct SupervisorHandle {
    /// Asks it to stop.
    stop: Arc<Stop>,
    /// Its listener's fd-store name.
    name: String,
    /// Its thread.
    thread: JoinHandle<()>,
}

impl Enforcer {
    /// Takes over a seccomp listener of one of the agent's processes and
    /// starts answering its notifications under `creds`. A copy goes to
    /// the service manager's fd store (where there is one), so a restart
    /// of agentd does not end the agent's supervision.
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
        let name = fdstore::listener_name(agent, fdstore::next_serial());
        // Recorded (with the credentials) before it is stored: a stored
        // listener the state file does not name could not be supervised again.
        self.registry_w().listeners.insert(
            name.clone(),
            ListenerEntry {
                agent: agent.into(),
                creds: creds.clone(),
            },
        );
        if let Err(e) = self.save() {
            self.registry_w().listeners.remove(&name);
            return Err(e);
        }
        match self.ops().store_fd(&name, listener.as_fd()) {
            Ok(true) => tracing::debug!(agent, name = %name, "listener kept in the fd store"),
            Ok(false) => {}
            // Not fatal: the agent runs supervised; a restart of agentd
            // would stop it (its listener would not come back).
            Err(e) => {
                tracing::warn!(agent, error = %e, "listener not kept in the fd store: a restart of agentd will stop this agent")
            }
        }
        self.spawn_supervisor(agent, listener, creds, name)
    }

    fn spawn_supervisor(
        &self,
        agent: &str,
        listener: OwnedFd,
        creds: Creds,
        name: String,
    ) -> Result<(), EnforceError> {
        let stop = Arc::new(Stop::default());
        let spec = SupervisorSpec {
            agent: agent.to_string(),
            creds,
            registry: self.inner.registry.clone(),
            audit: self.inner.audit_tx.clone(),
            stop: stop.clone(),
            sync_wakeup: self.inner.sync_wakeup.load(Ordering::Relaxed),
            stats: self.inner.stats.clone(),
            pin_dir: self.inner.instance.pin_dir(),
        };
        let started = self
            .ops()
            .supervise(listener, spec)
            .map(|thread| SupervisorHandle {
                stop,
                name: name.clone(),
                thread,
            });
        match started {
            Ok(handle) => {
                let mut sups = self.supervisors();
                if self.inner.stop.load(Ordering::Relaxed) {
                    // agentd is stopping: the thread ends before it reads a
                    // notification, and the stored listener waits for the
                    // next agentd.
                    handle.stop.request(&handle.thread);
                    return Ok(());
                }
                sups.entry(agent.to_string()).or_default().push(handle);
                Ok(())
            }
            Err(e) => {
                // The listener is closed; its copy in the store must go too,
                // or the agent's syscalls would wait instead of failing.
                self.forget_listener(&name);
                Err(e)
            }
        }
    }

    fn supervisors(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<SupervisorHandle>>> {
        self.inner
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Removes a listener from the fd store and the state file.
    fn forget_listener(&self, name: &str) {
        if let Err(e) = self.ops().remove_stored_fd(name) {
            tracing::warn!(name, error = %e, "could not remove a listener from the fd store");
        }
        if self.registry_w().listeners.remove(name).is_some() {
            let _ = self.save();
        }
    }

    /// Forgets the listeners of supervisors that ended on their own (every
    /// task of the listener exited, or the supervisor failed: then the
    /// agent's notified syscalls fail from now on). Not while stopping:
    /// supervisors ended by a stop keep their listeners stored.
    pub(super) fn reap_supervisors(&self) {
        let mut ended = Vec::new();
        {
            let mut sups = self.supervisors();
            if self.inner.stop.load(Ordering::Relaxed) {
                return;
            }
            for list in sups.values_mut() {
                let (done, running): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|h| h.thread.is_finished());
                *list = running;
                ended.extend(done.into_iter().map(|h| h.name));
            }
            sups.retain(|_, list| !list.is_empty());
        }
        for name in ended {
            self.forget_listener(&name);
        }
    }

    /// Stops the supervisors of one agent: its notified syscalls fail from
    /// now on (ENOSYS), exactly as if agentd had died without an fd store —
    /// used to stop an agent's file and exec access at once, and by the
    /// fail-closed scenario. Its listeners leave the fd store too.
    pub fn stop_supervisors(&self, agent: &str) {
        let handles = self.supervisors().remove(agent).unwrap_or_default();
        for h in &handles {
            h.stop.request(&h.thread);
        }
        for h in handles {
            self.forget_listener(&h.name);
        }
    }

    /// Stops every supervisor and waits (bounded) until each has answered
    /// the notification it holds. Their listeners stay in the fd store for
    /// the next agentd. Returns whether all of them ended.
    pub(super) fn stop_all_supervisors(&self) -> bool {
        let threads: Vec<(Arc<Stop>, JoinHandle<()>)> = {
            let mut sups = self.supervisors();
            // Under the lock: the reaper sees `stop` before any thread ends.
            self.inner.stop.store(true, Ordering::Relaxed);
            sups.drain()
                .flat_map(|(_, list)| list)
                .map(|h| {
                    h.stop.request(&h.thread);
                    (h.stop, h.thread)
                })
                .collect()
        };
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut all = true;
        for (stop, t) in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                // Again: a signal that came just before the thread's wait is lost.
                stop.request(&t);
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        all
    }

    /// Removes every listener from the fd store (uninstall).
    pub(super) fn forget_all_listeners(&self) {
        let names: Vec<String> = self.registry_r().listeners.keys().cloned().collect();
        for name in names {
            self.forget_listener(&name);
        }
    }

    /// After a restart: supervises again every listener the service manager
    /// handed back for an agent the state file names, and stops each
    /// running agent that cannot be fully supervised (a listener did not
    /// come back, or one of its processes runs without a seccomp filter).
    /// A stored fd for an unknown agent, or that is no listener, is closed
    /// and removed from the store. `clean`: the previous agentd answered
    /// every notification it had received before it stopped; otherwise
    /// each re-adopted agent is frozen and thawed once, which restarts a
    /// syscall whose notification died unanswered with it (a fresh
    /// notification reaches the new supervisor).
    pub(super) fn readopt_listeners(&self, stored: Vec<StoredFd>, clean: bool) {
        let (known, agents) = {
            let reg = self.registry_r();
            let agents: Vec<(String, AgentCgroupDir)> = reg
                .agents
                .values()
                .map(|a| (a.name.clone(), a.cgroup.clone()))
                .collect();
            (reg.listeners.clone(), agents)
        };
        let mut back = self.sort_stored(stored, &known, &agents);
        for (agent, cg) in agents {
            let returned = back.remove(&agent).unwrap_or_default();
            self.resume_agent(&agent, &cg, returned, &known, clean);
        }
        // Listeners of agents the registry does not hold (their cgroup is gone).
        for (_, list) in back {
            for (name, fd) in list {
                drop(fd);
                self.forget_listener(&name);
                let _ = self.inner.sink.append_lifecycle(
                    "stored_fd_closed",
                    &format!("name={name}"),
                    reason::STORED_LISTENER_UNKNOWN_AGENT,
                );
            }
        }
    }

    /// The stored fds that are listeners the state file names for a known
    /// agent, by agent; every other one is closed, removed from the store
    /// and audited (`stored_fd_closed`).
    fn sort_stored(
        &self,
        stored: Vec<StoredFd>,
        known: &BTreeMap<String, ListenerEntry>,
        agents: &[(String, AgentCgroupDir)],
    ) -> BTreeMap<String, Vec<(String, OwnedFd)>> {
        let mut back: BTreeMap<String, Vec<(String, OwnedFd)>> = BTreeMap::new();
        for s in stored {
            let agent = fdstore::agent_of_name(&s.name).map(str::to_owned);
            let why = match &agent {
                None => Some(reason::STORED_FD_UNKNOWN),
                Some(_) if !self.ops().is_listener(s.fd.as_fd()) => Some(reason::STORED_FD_UNKNOWN),
                Some(a) if known.get(&s.name).is_none_or(|l| &l.agent != a) => {
                    Some(reason::STORED_LISTENER_UNKNOWN_AGENT)
                }
                Some(a) if !agents.iter().any(|(n, _)| n == a) => {
                    Some(reason::STORED_LISTENER_UNKNOWN_AGENT)
                }
                Some(_) => None,
            };
            match (why, agent) {
                (None, Some(a)) => back.entry(a).or_default().push((s.name, s.fd)),
                (why, _) => {
                    let why = why.unwrap_or(reason::STORED_FD_UNKNOWN);
                    drop(s.fd);
                    self.forget_listener(&s.name);
                    tracing::warn!(name = %s.name, reason = why, "closed an fd the service manager kept");
                    let _ = self.inner.sink.append_lifecycle(
                        "stored_fd_closed",
                        &format!("name={}", s.name),
                        why,
                    );
                }
            }
        }
        back
    }

    /// One known agent after a restart: supervised again when every
    /// listener it had came back and all its processes run filtered;
    /// stopped (seccomp) when not; left alone when nothing of it runs.
    fn resume_agent(
        &self,
        agent: &str,
        cg: &AgentCgroupDir,
        returned: Vec<(String, OwnedFd)>,
        known: &BTreeMap<String, ListenerEntry>,
        clean: bool,
    ) {
        let expected: Vec<&String> = known
            .iter()
            .filter(|(_, l)| l.agent == *agent)
            .map(|(n, _)| n)
            .collect();
        let came_back = |n: &String| returned.iter().any(|(r, _)| r == n);
        let complete = !expected.is_empty() && expected.iter().all(|n| came_back(n));
        // Forget what did not come back; its tasks, if any, are stopped below.
        for name in expected.iter().filter(|n| !came_back(n)) {
            self.forget_listener(name);
        }
        let pids = self.agent_pids(cg);
        if pids.is_empty() {
            // Nothing left to supervise: the listeners' tasks are gone.
            self.release_listeners(returned);
            return;
        }
        let unfiltered = pids
            .iter()
            .filter(|p| !self.ops().under_seccomp_filter(**p))
            .count();
        if self.inner.backend != Backend::Lsm && !(complete && unfiltered == 0) {
            // Seccomp agents whose supervision cannot be restored in
            // full are stopped, never left half-enforced.
            let _ = self.ops().cgroup_kill(cg);
            let back = returned.len();
            self.release_listeners(returned);
            tracing::warn!(agent = %agent, pids = pids.len(), listeners_expected = expected.len(), came_back = back, unfiltered, "stopped an agent whose supervision did not survive the restart");
            let _ = self.inner.sink.append_lifecycle(
                "agent_stopped",
                &format!(
                    "agent={agent} pids={} listeners_back={back}/{} unfiltered={unfiltered}",
                    pids.len(),
                    expected.len()
                ),
                reason::SUPERVISOR_LOST_ON_RESTART,
            );
            return;
        }
        if returned.is_empty() {
            // lsm agents: no listener, nothing to resume.
            return;
        }
        self.resupervise(agent, cg, returned, known, clean, pids.len());
    }

    /// Closes listeners that will not be supervised and forgets them.
    fn release_listeners(&self, returned: Vec<(String, OwnedFd)>) {
        for (name, fd) in returned {
            drop(fd);
            self.forget_listener(&name);
        }
    }

    /// Starts a supervisor on every returned listener of a re-adopted
    /// agent; if any cannot start, the agent is stopped.
    fn resupervise(
        &self,
        agent: &str,
        cg: &AgentCgroupDir,
        returned: Vec<(String, OwnedFd)>,
        known: &BTreeMap<String, ListenerEntry>,
        clean: bool,
        pids: usize,
    ) {
        let n = returned.len();
        let mut failed = 0;
        for (name, fd) in returned {
            let Some(creds) = known.get(&name).map(|l| l.creds.clone()) else {
                continue;
            };
            if let Err(e) = self.spawn_supervisor(agent, fd, creds, name) {
                tracing::error!(agent = %agent, error = %e, "could not supervise a re-adopted listener");
                failed += 1;
            }
        }
        if failed > 0 {
            let _ = self.ops().cgroup_kill(cg);
            self.stop_supervisors(agent);
            let _ = self.inner.sink.append_lifecycle(
                "agent_stopped",
                &format!("agent={agent} pids={pids} supervisors_failed={failed}"),
                reason::SUPERVISOR_LOST_ON_RESTART,
            );
            return;
        }
        let kicked = !clean && self.ops().cgroup_restart_waiting(cg).is_ok();
        tracing::info!(agent = %agent, listeners = n, pids, kicked, "agent re-adopted: supervision resumed");
        let _ = self.inner.sink.append_lifecycle(
            "agent_readopted",
            &format!("agent={agent} listeners={n} pids={pids} clean_stop={clean}"),
            reason::SUPERVISOR_READOPTED,
        );
    }
}
