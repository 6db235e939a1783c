//! The enforcement side of the kill switch: a suspension ends the installed
//! grants in its scope (map entries and bindings, so a process already bound
//! to an approved call can no longer exec, open or connect under it) and,
//! when asked, kills the agents' processes (`cgroup.kill`).
use std::{collections::HashSet, sync::Arc};

use crate::gateway::{Gateway, GrantTarget, KillSwitch};

use super::{EnforceError, EnforceSlot, Enforcer};

/// [`KillSwitch`] over the enforcer, whether or not it has started: before
/// it has, no grant of this run is installed (re-adopted ones are ended by
/// `Gateway::reapply_suspensions` once it is up).
pub struct EnforceKillSwitch {
    /// The enforcer, once (and if) it has started.
    pub slot: EnforceSlot,
}

impl KillSwitch for EnforceKillSwitch {
    fn end_grants(&self, target: GrantTarget<'_>) -> Result<usize, String> {
        let Some(e) = self.slot.get() else {
            return Ok(0);
        };
        let ended = match target {
            GrantTarget::Messages(ids) => {
                let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
                e.revoke_calls_of_messages(&ids).map(|c| c.len())
            }
            GrantTarget::Agent(agent) => e.revoke_calls_of_agents(Some(&[agent.to_owned()])),
            GrantTarget::All => e.revoke_calls_of_agents(None),
        };
        ended.map_err(|err| err.to_string())
    }

    fn stop_agents(&self, agents: Option<&[String]>) -> Result<usize, String> {
        let Some(e) = self.slot.get() else {
            return Err(self.slot.unavailable_reason());
        };
        e.kill_agents(agents).map_err(|err| err.to_string())
    }
}

/// Whether a process may be started in an agent now: the launch side of
/// the kill switch. A suspended agent (or everything suspended) starts
/// nothing new, whoever asks.
pub trait LaunchGate: Send + Sync {
    /// The reason code and message refusing a launch of `agent`, if any.
    fn launch_refusal(&self, agent: &str) -> Option<(&'static str, String)>;
}

impl LaunchGate for Gateway {
    fn launch_refusal(&self, agent: &str) -> Option<(&'static str, String)> {
        self.agent_suspension(agent)
    }
}

impl Enforcer {
    /// Sets what decides whether an agent may be launched (the daemon's
    /// gateway); before it is set every launch goes ahead.
    pub fn set_launch_gate(&self, gate: Arc<dyn LaunchGate>) {
        *self
            .inner
            .launch_gate
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(gate);
    }

    /// Refuses starting a process in `agent` while a suspension covers it.
    pub fn check_launch(&self, agent: &str) -> Result<(), EnforceError> {
        let gate = self
            .inner
            .launch_gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match gate.and_then(|g| g.launch_refusal(agent)) {
            Some((reason_code, message)) => Err(EnforceError::Suspended {
                reason_code,
                message,
            }),
            None => Ok(()),
        }
    }

    /// Revokes every grant of the named agents (None: of every agent);
    /// returns how many calls' grants were ended.
    pub fn revoke_calls_of_agents(&self, agents: Option<&[String]>) -> Result<usize, EnforceError> {
        let calls: Vec<String> = self
            .registry_r()
            .calls
            .values()
            .filter(|c| agents.is_none_or(|a| a.contains(&c.agent)))
            .map(|c| c.call_id.clone())
            .collect();
        for call_id in &calls {
            self.revoke(call_id)?;
            tracing::info!(call_id, "grant revoked by a suspension");
        }
        Ok(calls.len())
    }

    /// Kills every process of the named agents (None: of every agent) and
    /// their run cgroups; returns how many processes there were. Unknown
    /// names are skipped (the caller checked them).
    pub fn kill_agents(&self, agents: Option<&[String]>) -> Result<usize, EnforceError> {
        let cgroups: Vec<(String, super::agent_cgroup::AgentCgroupDir)> = self
            .registry_r()
            .agents
            .iter()
            .filter(|(name, _)| agents.is_none_or(|a| a.contains(name)))
            .map(|(name, a)| (name.clone(), a.cgroup.clone()))
            .collect();
        let mut killed = 0;
        for (agent, cg) in cgroups {
            let pids = self.agent_pids(&cg);
            if pids.is_empty() {
                continue;
            }
            // cgroup.kill reaches the run cgroups below too.
            self.ops().cgroup_kill(&cg)?;
            tracing::warn!(
                agent,
                processes = pids.len(),
                "agent stopped by a suspension"
            );
            killed += pids.len();
        }
        Ok(killed)
    }
}
