//! Agents: creation with a baseline, membership, modes.
use std::path::PathBuf;

use agentd_common::{baseline_call_id, AgentCgroup};

use super::{
    agent_cgroup::{self, AgentCgroupDir},
    binding, default_baseline,
    grant::KernelGrant,
    persist,
    registry::AgentEntry,
    seccomp::supervisor,
    AgentHandle, AgentInfo, EnforceError, Enforcer, Mode,
};
use crate::grant_spec::GrantSpec;

impl Enforcer {
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
                mode,
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
            let entry = AgentCgroup {
                agent_id: id,
                mode: mode.kernel() as u8,
                _pad: [0; 3],
            };
            bpf.set_agent(cg.id, entry)?;
            for leaf in leaves(&cg) {
                bpf.set_agent(leaf.id, entry)?;
            }
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
        self.create_agent_with(agent, spec.1, &spec.0).map(|_| ())
    }

    /// The agent process `pid` belongs to, from its cgroup.
    pub fn agent_of_pid(&self, pid: u32) -> Option<String> {
        binding::agent_of_pid(&self.inner.instance.slice(), pid)
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
        let (cg, id) = (a.cgroup.clone(), a.id);
        let entry = AgentCgroup {
            agent_id: id,
            mode: mode.kernel() as u8,
            _pad: [0; 3],
        };
        {
            let mut bpf = self.bpf();
            bpf.set_agent(cg.id, entry)?;
            for leaf in leaves(&cg) {
                bpf.set_agent(leaf.id, entry)?;
            }
        }
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
        let dir = agent_cgroup::create(&a.cgroup.path, leaf)?;
        self.bpf().set_agent(
            dir.id,
            AgentCgroup {
                agent_id: a.id,
                mode: a.mode.kernel() as u8,
                _pad: [0; 3],
            },
        )?;
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
        let dir = agent_cgroup::open(&cg.path.join(leaf))?;
        remove_cgroup(&dir)?;
        self.bpf().remove_agent(dir.id);
        Ok(())
    }

    /// Removes an agent: its grants, supervisors, kernel entry, baseline and
    /// cgroup (with its run cgroups). Refused while a process of it runs.
    pub fn remove_agent(&self, agent: &str) -> Result<(), EnforceError> {
        let cg = self.agent_cgroup(agent)?;
        let mut pids = agent_cgroup::procs(&cg).unwrap_or_default();
        for leaf in leaves(&cg) {
            pids.extend(agent_cgroup::procs(&leaf).unwrap_or_default());
        }
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
            let mut bpf = self.bpf();
            bpf.uninstall(&a.baseline);
            self.lsm_uninstall(a.baseline.handle);
            for leaf in leaves(&a.cgroup) {
                bpf.remove_agent(leaf.id);
                let _ = agent_cgroup::remove(&leaf);
            }
            bpf.remove_agent(a.cgroup.id);
        }
        let _ = agent_cgroup::remove(&cg);
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
}

/// The run cgroups under an agent's cgroup (agentd creates them; the agent
/// user cannot, the directory being root's).
fn leaves(cg: &AgentCgroupDir) -> Vec<AgentCgroupDir> {
    agent_cgroup::existing(&cg.path)
        .into_iter()
        .filter_map(|n| agent_cgroup::open(&cg.path.join(n)).ok())
        .collect()
}

/// Kills a cgroup's processes, waits (bounded) for them to go, removes it.
fn remove_cgroup(dir: &AgentCgroupDir) -> Result<(), EnforceError> {
    if !agent_cgroup::procs(dir).unwrap_or_default().is_empty() {
        agent_cgroup::kill_all(dir)?;
    }
    for _ in 0..200 {
        if agent_cgroup::procs(dir).unwrap_or_default().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // rmdir fails with EBUSY until the last zombie is reaped by its parent.
    let mut last = agent_cgroup::remove(dir);
    for _ in 0..100 {
        if last.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        last = agent_cgroup::remove(dir);
    }
    last.map_err(Into::into)
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
