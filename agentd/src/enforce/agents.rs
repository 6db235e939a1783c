//! Agents: creation with a baseline, membership, modes.
use std::path::PathBuf;

use agentd_common::{baseline_call_id, AgentCgroup};

use super::{
    agent_cgroup::{self, AgentCgroupDir},
    default_baseline,
    grant::KernelGrant,
    persist,
    registry::AgentEntry,
    AgentHandle, AgentInfo, EnforceError, Enforcer, Mode,
};
use crate::grant_spec::GrantSpec;

impl Enforcer {
    /// Creates agent `name`, or refreshes an existing one: what `opts`
    /// gives replaces the agent's (mode, baseline), what it leaves out is
    /// kept (a new agent enforces, with [`default_baseline`]). An existing
    /// agent keeps its id and cgroup. `create_agent(name, Mode::Enforce)`
    /// is the plain form.
    pub fn create_agent(
        &self,
        name: &str,
        opts: impl Into<AgentOptions>,
    ) -> Result<AgentHandle, EnforceError> {
        let opts = opts.into();
        let existing = self
            .registry_r()
            .agents
            .get(name)
            .map(|a| (a.id, a.cgroup.clone(), a.mode));
        let mode = opts
            .mode
            .or(existing.as_ref().map(|e| e.2))
            .unwrap_or_default();
        match (existing, opts.baseline) {
            (Some((id, cg, _)), None) => {
                // An existing agent keeps its baseline; only the mode changes.
                self.set_mode(name, mode)?;
                Ok(AgentHandle {
                    name: name.into(),
                    backend: self.inner.backend,
                    id,
                    cgroup: cg.path,
                    cgroup_id: cg.id,
                    mode,
                })
            }
            (_, baseline) => {
                self.install_agent(name, mode, &baseline.unwrap_or_else(default_baseline))
            }
        }
    }

    /// Creates agent `name` with `baseline` for unbound processes. An existing
    /// agent keeps its id and cgroup; its mode and baseline are replaced.
    fn install_agent(
        &self,
        name: &str,
        mode: Mode,
        baseline: &GrantSpec,
    ) -> Result<AgentHandle, EnforceError> {
        let cg = self.ops().cgroup_create(&self.inner.slice, name)?;
        let mut reg = self.registry_w();
        let id = match reg.agents.get(name) {
            Some(a) => a.id,
            None => {
                let id = reg.next_agent_id;
                reg.next_agent_id += 1;
                id
            }
        };
        let grant = KernelGrant::from_spec(baseline, baseline_call_id(id), self.ops().now_ns())
            .map_err(|source| EnforceError::Grant {
                call_id: format!("baseline:{name}"),
                source,
            })?;
        if let Some(old) = reg.agents.get(name) {
            self.ops().uninstall_grant(&old.baseline);
        }
        self.ops().install_grant(&grant)?;
        self.register_cgroups(&cg, id, mode)?;
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
            mode,
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
        self.install_agent(agent, spec.1, &spec.0).map(|_| ())
    }

    /// Whether `agent` is one of the enforcer's agents.
    pub fn has_agent(&self, agent: &str) -> bool {
        self.registry_r().agents.contains_key(agent)
    }

    /// The agent process `pid` belongs to, from its cgroup.
    pub fn agent_of_pid(&self, pid: u32) -> Option<String> {
        self.ops()
            .agent_of_pid(&self.inner.instance.slice(), pid)
            .filter(|n| self.registry_r().agents.contains_key(n))
    }

    /// The agent at the other end of an accepted loopback TCP connection,
    /// named by the cgroup the connecting socket was created in (see
    /// [`tcp_peer`](super::tcp_peer)); `Ok(None)` when that cgroup is no
    /// agent's. The pid is the process holding the socket, when still open.
    pub fn agent_of_tcp_peer(
        &self,
        local: std::net::SocketAddr,
        peer: std::net::SocketAddr,
    ) -> Result<Option<TcpCaller>, super::tcp_peer::TcpPeerError> {
        let found = super::tcp_peer::peer_of(local, peer)?;
        let reg = self.registry_r();
        // An agent's own cgroup or one of its run cgroups below it.
        let hit = reg.agents.iter().find_map(|(name, a)| {
            let dir = if a.cgroup.id == found.cgroup_id {
                Some(a.cgroup.path.clone())
            } else {
                super::tcp_peer::cgroup_dir_with_id(&a.cgroup.path, found.cgroup_id, 2)
            };
            dir.map(|d| (name.clone(), d))
        });
        drop(reg);
        Ok(hit.map(|(agent, dir)| {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids = procs.lines().filter_map(|l| l.trim().parse().ok());
            TcpCaller {
                agent,
                uid: found.uid,
                pid: super::tcp_peer::pid_holding_socket(pids, found.inode),
            }
        }))
    }

    /// Moves `pid` into the agent's cgroup (a process already in one of the
    /// agent's run cgroups stays there).
    pub fn join(&self, agent: &str, pid: u32) -> Result<(), EnforceError> {
        let cg = self.agent_cgroup(agent)?;
        if self.agent_of_pid(pid).as_deref() == Some(agent) {
            return Ok(());
        }
        self.ops().cgroup_join(&cg, pid)?;
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

    /// Switches an agent between enforce and audit-only, in the kernel and
    /// in the supervisors, at once. The kernel is written first: if that
    /// fails, the kernel entries go back to the old mode and the
    /// supervisors keep it too (they never relax while the kernel does not).
    pub fn set_mode(&self, agent: &str, mode: Mode) -> Result<(), EnforceError> {
        let mut reg = self.registry_w();
        let a = reg
            .agents
            .get_mut(agent)
            .ok_or_else(|| EnforceError::UnknownAgent {
                agent: agent.into(),
            })?;
        let (cg, id, old) = (a.cgroup.clone(), a.id, a.mode);
        if let Err(e) = self.register_cgroups(&cg, id, mode) {
            if let Err(again) = self.register_cgroups(&cg, id, old) {
                tracing::error!(agent, error = %again, "agent mode not restored in the kernel");
            }
            return Err(e);
        }
        a.mode = mode;
        drop(reg);
        self.save()
    }

    /// The agent's current baseline (what its unbound processes may do).
    pub fn baseline_of(&self, agent: &str) -> Option<GrantSpec> {
        self.registry_r()
            .agents
            .get(agent)
            .map(|a| persist::spec_of(&a.baseline))
    }

    /// Creates the run cgroup `leaf` under the agent's cgroup (one per driver
    /// run), registered in the kernel as the agent itself (same id, same
    /// mode), so everything that holds for the agent holds inside it.
    pub fn create_leaf(&self, agent: &str, leaf: &str) -> Result<AgentHandle, EnforceError> {
        let reg = self.registry_r();
        let a = reg
            .agents
            .get(agent)
            .ok_or_else(|| EnforceError::UnknownAgent {
                agent: agent.into(),
            })?;
        let dir = self.ops().cgroup_create(&a.cgroup.path, leaf)?;
        self.ops().set_agent(dir.id, kernel_entry(a.id, a.mode))?;
        tracing::info!(agent, leaf, cgroup = %dir.path.display(), "run cgroup created");
        Ok(AgentHandle {
            name: agent.into(),
            backend: self.inner.backend,
            id: a.id,
            cgroup: dir.path,
            cgroup_id: dir.id,
            mode: a.mode,
        })
    }

    /// Kills whatever still runs in a run cgroup, then removes it.
    pub fn remove_leaf(&self, agent: &str, leaf: &str) -> Result<(), EnforceError> {
        let cg = self.agent_cgroup(agent)?;
        if !agent_cgroup::valid_name(leaf) {
            return Err(agent_cgroup::CgroupError::BadName { name: leaf.into() }.into());
        }
        let dir = self.ops().cgroup_open(&cg.path.join(leaf))?;
        self.remove_cgroup(&dir)?;
        self.ops().remove_agent(dir.id);
        Ok(())
    }

    /// Removes an agent: its grants, supervisors, kernel entry, baseline and
    /// cgroup (with its run cgroups). Refused while a process of it runs.
    pub fn remove_agent(&self, agent: &str) -> Result<(), EnforceError> {
        let cg = self.agent_cgroup(agent)?;
        let pids = self.agent_pids(&cg);
        if !pids.is_empty() {
            return Err(EnforceError::AgentBusy {
                agent: agent.into(),
                pids,
            });
        }
        let calls: Vec<String> = self
            .registry_r()
            .calls
            .values()
            .filter(|c| c.agent == agent)
            .map(|c| c.call_id.clone())
            .collect();
        for c in calls {
            let _ = self.revoke(&c);
        }
        self.stop_supervisors(agent);
        let removed = self.registry_w().agents.remove(agent);
        if let Some(a) = removed {
            self.ops().uninstall_grant(&a.baseline);
            self.ops().clear_protected(a.id);
            for leaf in self.leaves(&a.cgroup) {
                self.ops().remove_agent(leaf.id);
                let _ = self.ops().cgroup_remove(&leaf);
            }
            self.ops().remove_agent(a.cgroup.id);
        }
        let _ = self.ops().cgroup_remove(&cg);
        self.save()?;
        tracing::info!(agent, "agent removed");
        Ok(())
    }

    /// Every agent with its processes and grants.
    pub fn list_agents(&self) -> Vec<AgentInfo> {
        let reg = self.registry_r();
        reg.agents
            .values()
            .map(|a| AgentInfo {
                name: a.name.clone(),
                mode: a.mode,
                pids: self.ops().cgroup_procs(&a.cgroup).unwrap_or_default(),
                calls: reg
                    .calls
                    .values()
                    .filter(|c| c.agent == a.name)
                    .map(|c| c.call_id.clone())
                    .collect(),
            })
            .collect()
    }
}

impl Enforcer {
    /// Registers an agent's cgroup and its run cgroups in the kernel with
    /// the agent's id and mode.
    fn register_cgroups(
        &self,
        cg: &AgentCgroupDir,
        id: u32,
        mode: super::Mode,
    ) -> Result<(), EnforceError> {
        let entry = kernel_entry(id, mode);
        self.ops().set_agent(cg.id, entry)?;
        for leaf in self.leaves(cg) {
            self.ops().set_agent(leaf.id, entry)?;
        }
        Ok(())
    }

    /// The run cgroups under an agent's cgroup (agentd creates them; the
    /// agent user cannot, the directory being root's).
    pub(super) fn leaves(&self, cg: &AgentCgroupDir) -> Vec<AgentCgroupDir> {
        self.ops()
            .cgroup_children(&cg.path)
            .into_iter()
            .filter_map(|n| self.ops().cgroup_open(&cg.path.join(n)).ok())
            .collect()
    }

    /// Every process of an agent: its cgroup and its run cgroups.
    pub(super) fn agent_pids(&self, cg: &AgentCgroupDir) -> Vec<u32> {
        let mut pids = self.ops().cgroup_procs(cg).unwrap_or_default();
        for leaf in self.leaves(cg) {
            pids.extend(self.ops().cgroup_procs(&leaf).unwrap_or_default());
        }
        pids
    }

    /// Kills a cgroup's processes, waits (bounded) for them to go, removes it.
    fn remove_cgroup(&self, dir: &AgentCgroupDir) -> Result<(), EnforceError> {
        let ops = self.ops();
        if !ops.cgroup_procs(dir).unwrap_or_default().is_empty() {
            ops.cgroup_kill(dir)?;
        }
        for _ in 0..200 {
            if ops.cgroup_procs(dir).unwrap_or_default().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // rmdir fails with EBUSY until the last zombie is reaped by its parent.
        let mut last = ops.cgroup_remove(dir);
        for _ in 0..100 {
            if last.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            last = ops.cgroup_remove(dir);
        }
        last.map_err(Into::into)
    }
}

/// The kernel's record of an agent cgroup.
fn kernel_entry(agent_id: u32, mode: super::Mode) -> AgentCgroup {
    AgentCgroup {
        agent_id,
        mode: mode.kernel() as u8,
        _pad: [0; 3],
    }
}

/// How [`Enforcer::create_agent`] sets an agent up; what is `None` is kept
/// from an existing agent (a new one enforces, with [`default_baseline`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentOptions {
    /// The mode.
    pub mode: Option<Mode>,
    /// The baseline for unbound processes.
    pub baseline: Option<GrantSpec>,
}

impl AgentOptions {
    /// Sets both the mode and the baseline.
    pub fn with_baseline(mode: Mode, baseline: GrantSpec) -> Self {
        AgentOptions {
            mode: Some(mode),
            baseline: Some(baseline),
        }
    }
}

impl From<Mode> for AgentOptions {
    fn from(mode: Mode) -> Self {
        AgentOptions {
            mode: Some(mode),
            baseline: None,
        }
    }
}

/// An agent process on the other end of a loopback TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCaller {
    /// The agent whose cgroup created the connecting socket.
    pub agent: String,
    /// The socket's owner.
    pub uid: u32,
    /// The process holding the socket, if it could be found.
    pub pid: Option<u32>,
}
