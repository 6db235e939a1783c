//! The agent manager: settings → composed baselines → the enforcer, kept in
//! step on every change and every policy reload; inbox queueing for the
//! driver. The I/O edge of agent configuration (user database, resolver
//! configuration, file existence); composition itself is pure
//! ([`crate::profile::compose`]).
use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::def::ModelApi;
use super::inbox::{InboxEntry, Outcome, RunResult};
use super::store::AgentStore;
use super::{AgentDef, AgentsError};
use crate::audit::{AuditEvent, RecordKind};
use crate::enforce::{AgentInfo, EnforceError, EnforceSlot, Enforcer, Mode};
use crate::gateway::{Gateway, Refusal};
use crate::grant_spec::GrantSpec;
use crate::profile::{self, builtin, ProfileDef, Vars};
use crate::protocol::{reason, SignedMessage};

/// Prefix of run cgroup names (`run-<entry id>`).
pub const RUN_PREFIX: &str = "run-";

/// An agent as `agentctl agent show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    /// Its settings.
    pub def: AgentDef,
    /// The baseline composed from them (None if composition fails).
    pub baseline: Option<GrantSpec>,
    /// Why the baseline cannot be composed.
    #[serde(default)]
    pub baseline_error: Option<String>,
    /// Profile executables absent on this host (left out of the baseline).
    #[serde(default)]
    pub missing_exec: Vec<PathBuf>,
    /// Protected files inside a write scope (see `profile::compose`).
    #[serde(default)]
    pub write_exceptions: Vec<PathBuf>,
    /// How each profile points its runtime at the model API.
    #[serde(default)]
    pub model_api_env: BTreeMap<String, profile::ModelApiInfo>,
    /// Enforcement's view: mode, processes, grants (None until applied).
    #[serde(default)]
    pub running: Option<AgentInfoView>,
}

/// The enforcer's view of an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfoView {
    /// Mode in force.
    pub mode: Mode,
    /// Processes.
    pub pids: Vec<u32>,
    /// Installed grants.
    pub calls: Vec<String>,
}

impl From<AgentInfo> for AgentInfoView {
    fn from(a: AgentInfo) -> Self {
        AgentInfoView {
            mode: a.mode,
            pids: a.pids,
            calls: a.calls,
        }
    }
}

/// What the driver gets for the next message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextRun {
    /// The entry (now running), if any was queued.
    pub entry: Option<InboxEntry>,
    /// The run's cgroup directory (the driver's runtime goes there).
    pub cgroup: Option<PathBuf>,
    /// The agent user.
    pub user: String,
    /// Time limit, seconds.
    pub time_limit_secs: u64,
}

/// A profile as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    /// `builtin` or `policy`.
    pub source: String,
    /// Its definition.
    pub def: ProfileDef,
}

/// Keeps agents' settings and their enforcement in step.
pub struct AgentManager {
    store: AgentStore,
    gateway: Arc<Gateway>,
    slot: EnforceSlot,
    agentctl: Option<PathBuf>,
    /// agentd's model socket, when the forward proxy runs (`model_api = "proxy"`).
    forward_socket: std::sync::OnceLock<PathBuf>,
    /// The proxy's loopback TCP address, when it listens on one.
    forward_tcp: std::sync::OnceLock<std::net::SocketAddr>,
    /// One change at a time (a reload and an edit must not interleave).
    apply_lock: Mutex<()>,
}

impl std::fmt::Debug for AgentManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentManager")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The `agentctl` next to the running executable, if there is one.
pub fn sibling_agentctl() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("agentctl");
    p.is_file().then_some(p)
}

/// Port 53 of each nameserver in `/etc/resolv.conf`-formatted `text`.
pub fn dns_destinations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}/32:53"),
            IpAddr::V6(v6) => format!("[{v6}/128]:53"),
        })
        .collect()
}

fn render_dest(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32:{port}"),
        IpAddr::V6(v6) => format!("[{v6}/128]:{port}"),
    }
}

/// The enforcer's default baseline as a profile (the base of every agent).
fn default_profile() -> ProfileDef {
    let d = crate::enforce::default_baseline();
    let s = |v: Vec<PathBuf>| v.into_iter().map(|p| p.display().to_string()).collect();
    ProfileDef {
        description: "system code and libraries, common devices, the process's own /proc".into(),
        exec: s(d.exec),
        read: s(d.read),
        write: s(d.write),
        connect: d.connect,
        model_api: None,
    }
}

impl AgentManager {
    /// Opens the store in `state_dir`.
    pub fn open(
        state_dir: &Path,
        gateway: Arc<Gateway>,
        slot: EnforceSlot,
    ) -> Result<Arc<Self>, AgentsError> {
        Ok(Arc::new(AgentManager {
            store: AgentStore::open(state_dir)?,
            gateway,
            slot,
            agentctl: sibling_agentctl(),
            forward_socket: std::sync::OnceLock::new(),
            forward_tcp: std::sync::OnceLock::new(),
            apply_lock: Mutex::new(()),
        }))
    }

    /// Says the forward proxy runs on `socket`: agents may then name
    /// `model_api = "proxy"` (the socket is in every agent's baseline).
    pub fn set_forward_socket(&self, socket: PathBuf) {
        let _ = self.forward_socket.set(socket);
    }

    /// Says the forward proxy also listens on loopback TCP at `addr`: an
    /// agent with `model_api = "proxy"` may connect there.
    pub fn set_forward_tcp(&self, addr: std::net::SocketAddr) {
        let _ = self.forward_tcp.set(addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.apply_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Built-in profiles overlaid with the policy's `[profiles.*]`.
    pub fn profiles(&self) -> BTreeMap<String, ProfileView> {
        let mut out: BTreeMap<String, ProfileView> = builtin::all()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, def)| {
                (
                    n,
                    ProfileView {
                        source: "builtin".into(),
                        def,
                    },
                )
            })
            .collect();
        if let Some(p) = self.gateway.current_policy() {
            for (n, def) in &p.profiles {
                out.insert(
                    n.clone(),
                    ProfileView {
                        source: "policy".into(),
                        def: def.clone(),
                    },
                );
            }
        }
        out
    }

    fn vars(&self, def: &AgentDef) -> Result<Vars, AgentsError> {
        let user = nix::unistd::User::from_name(&def.user)
            .ok()
            .flatten()
            .ok_or_else(|| AgentsError::UnknownUser {
                agent: def.name.clone(),
                user: def.user.clone(),
            })?;
        let home = user.dir.to_string_lossy().into_owned();
        Ok(Vars {
            home: (!home.is_empty() && home != "/").then_some(home),
            install_dir: def
                .install_dir
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            tmp: def
                .tmp
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/tmp".into()),
            user: def.user.clone(),
            uid: user.uid.as_raw(),
            workspace: def
                .workspace
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            node: crate::enforce::launch::resolve_command(std::ffi::OsStr::new("node"))
                .unwrap_or_else(|| PathBuf::from("/usr/bin/node"))
                .to_string_lossy()
                .into_owned(),
            model_endpoint: vec![],
            agentctl: Some(
                self.agentctl
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/usr/bin/agentctl"))
                    .to_string_lossy()
                    .into_owned(),
            ),
            dns: std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| dns_destinations(&t))
                .unwrap_or_default(),
        })
    }

    /// Composes an agent's baseline (no enforcement change).
    pub fn compose(&self, def: &AgentDef) -> Result<AgentView, AgentsError> {
        def.validate()?;
        let all = self.profiles();
        let names = def.profile_names();
        let mut chosen = Vec::new();
        for n in &names {
            let p = all.get(n).ok_or_else(|| AgentsError::Profile {
                agent: def.name.clone(),
                source: profile::ProfileError::Unknown {
                    name: n.clone(),
                    known: all.keys().cloned().collect::<Vec<_>>().join(", "),
                },
            })?;
            chosen.push((n.as_str(), &p.def));
        }
        let mut extras = def.extras();
        // Hooks (`agentctl hook …`) and tool runners (`agentctl exec`) run it.
        extras.exec.push("{agentctl}".into());
        let model_endpoint = self.model_endpoint(def)?;
        let mut vars = self.vars(def)?;
        vars.model_endpoint = model_endpoint.clone();
        // The runtime reaches its model whether or not its profiles say {model_endpoint}.
        extras.connect.extend(model_endpoint);
        // Every agent starts from the default baseline: system code and
        // libraries, the devices every process touches, its own /proc entry.
        let base = default_profile();
        chosen.insert(0, ("default", &base));
        let protected = self.protected_of(&vars);
        let composed = profile::compose(&chosen, &extras, &vars, &protected).map_err(|source| {
            AgentsError::Profile {
                agent: def.name.clone(),
                source,
            }
        })?;
        let mut spec = composed.spec;
        let (exec, missing): (Vec<_>, Vec<_>) = spec.exec.drain(..).partition(|p| p.is_file());
        spec.exec = exec;
        Ok(AgentView {
            def: def.clone(),
            baseline: Some(spec),
            baseline_error: None,
            missing_exec: missing,
            write_exceptions: composed.write_exceptions,
            model_api_env: chosen
                .iter()
                .skip(1)
                .filter_map(|(n, p)| p.model_api.clone().map(|m| (n.to_string(), m)))
                .collect(),
            running: None,
        })
    }

    /// The policy's protected files for an agent with placeholder values `vars`.
    fn protected_of(&self, vars: &Vars) -> Vec<PathBuf> {
        self.gateway
            .current_policy()
            .map(|p| profile::expand_protected(&p.protected, vars))
            .unwrap_or_default()
    }

    /// Tells the gateway every configured agent's protected files (real
    /// paths), so it refuses a call naming one for writing before any
    /// grant exists.
    fn publish_protected(&self) {
        let mut all = Vec::new();
        for def in self.store.defs().unwrap_or_default() {
            let Ok(vars) = self.vars(&def) else { continue };
            for p in self.protected_of(&vars) {
                let real = crate::enforce::grant::canonical_prefix(&p);
                if !all.contains(&real) {
                    all.push(real);
                }
            }
        }
        self.gateway.set_agent_protected(all);
    }

    /// Where the agent's runtime reaches its model: the forward proxy's TCP
    /// listener, the direct API host's addresses, or nowhere.
    fn model_endpoint(&self, def: &AgentDef) -> Result<Vec<String>, AgentsError> {
        let mut model_endpoint = Vec::new();
        match def.model_api()? {
            None => {}
            // The model socket is in every baseline; its TCP listener, if
            // any, is the agent's model endpoint.
            Some(ModelApi::Proxy) if self.forward_socket.get().is_some() => {
                if let Some(a) = self.forward_tcp.get() {
                    model_endpoint.push(render_dest(a.ip(), a.port()));
                }
            }
            Some(ModelApi::Proxy) => {
                return Err(AgentsError::ProxyUnavailable {
                    agent: def.name.clone(),
                })
            }
            Some(ModelApi::Direct { host, port }) => {
                let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                    Ok(ip) => vec![ip],
                    Err(_) => (host.as_str(), port)
                        .to_socket_addrs()
                        .map_err(|e| AgentsError::Unresolved {
                            agent: def.name.clone(),
                            host: host.clone(),
                            message: e.to_string(),
                        })?
                        .map(|a| a.ip())
                        .collect(),
                };
                for ip in ips {
                    model_endpoint.push(render_dest(ip, port));
                }
            }
        }
        Ok(model_endpoint)
    }

    fn enforcer(&self) -> Option<Enforcer> {
        self.slot.get()
    }

    /// Applies a composed baseline and mode to the enforcer. Executables the
    /// launcher added since the last application (the command `agentctl
    /// run` started) are kept.
    fn apply(&self, e: &Enforcer, def: &AgentDef, spec: &GrantSpec) -> Result<(), AgentsError> {
        let prev = self.store.get(&def.name)?.and_then(|(_, a)| a);
        let mut full = spec.clone();
        if let Some(cur) = e.baseline_of(&def.name) {
            let launched: Vec<PathBuf> = cur
                .exec
                .iter()
                .filter(|p| !prev.as_ref().is_some_and(|a| a.exec.contains(p)))
                .cloned()
                .collect();
            for p in launched {
                if !full.exec.contains(&p) {
                    full.exec.push(p.clone());
                }
                if cur.read.contains(&p) && !full.read.contains(&p) {
                    full.read.push(p);
                }
            }
        }
        e.create_agent(
            &def.name,
            crate::enforce::AgentOptions::with_baseline(def.mode, full.clone()),
        )?;
        self.store.set_applied(&def.name, spec)?;
        Ok(())
    }

    /// Adds or replaces an agent. Nothing changes if its baseline cannot be
    /// composed or applied.
    pub fn put(&self, def: AgentDef) -> Result<AgentView, AgentsError> {
        let _g = self.lock();
        let view = self.compose(&def)?;
        self.check_user_not_shared(&def)?;
        let spec = view.baseline.clone().unwrap_or_default();
        let existed = self.store.get(&def.name)?.is_some();
        self.store.put(&def)?;
        if let Some(e) = self.enforcer() {
            if let Err(err) = self.apply(&e, &def, &spec) {
                if !existed {
                    let _ = self.store.delete(&def.name);
                }
                return Err(err);
            }
        }
        tracing::info!(agent = %def.name, profiles = ?def.profile_names(), mode = ?def.mode, "agent configured");
        self.publish_protected();
        drop(_g);
        self.show(&def.name)
    }

    /// Refuses a uid another configured agent runs as, unless one of the
    /// two was configured to share it (`share_user`). Compared by uid: two
    /// user names may name one uid.
    fn check_user_not_shared(&self, def: &AgentDef) -> Result<(), AgentsError> {
        if def.share_user {
            return Ok(());
        }
        let uid_of = |name: &str| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        };
        let Some(uid) = uid_of(&def.user) else {
            return Ok(()); // compose() already refused an unknown user
        };
        let others = self.store.defs()?;
        match others
            .iter()
            .find(|o| o.name != def.name && !o.share_user && uid_of(&o.user) == Some(uid))
        {
            Some(other) => Err(AgentsError::SharedUser {
                agent: def.name.clone(),
                user: def.user.clone(),
                uid,
                other: other.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Re-composes and re-applies every agent (after a policy reload, or at
    /// start once enforcement is up). Returns the agents that failed.
    pub fn reapply_all(&self) -> Vec<(String, String)> {
        let _g = self.lock();
        self.publish_protected();
        let Some(e) = self.enforcer() else {
            return vec![];
        };
        let mut failed = Vec::new();
        for def in self.store.defs().unwrap_or_default() {
            let r = self
                .compose(&def)
                .and_then(|v| self.apply(&e, &def, v.baseline.as_ref().expect("composed")));
            if let Err(err) = r {
                tracing::error!(agent = %def.name, error = %err, "agent baseline not re-applied; the previous one stays");
                failed.push((def.name.clone(), err.to_string()));
            }
        }
        failed
    }

    /// Whether an agent by that name is configured.
    pub fn is_configured(&self, name: &str) -> Result<bool, AgentsError> {
        Ok(self.store.get(name)?.is_some())
    }

    fn def(&self, name: &str) -> Result<AgentDef, AgentsError> {
        self.store
            .get(name)?
            .map(|(d, _)| d)
            .ok_or_else(|| AgentsError::Unknown { agent: name.into() })
    }

    /// Changes an agent's mode (stored, and at once in the kernel).
    pub fn set_mode(&self, name: &str, mode: Mode) -> Result<AgentView, AgentsError> {
        let _g = self.lock();
        let mut def = self.def(name)?;
        def.mode = mode;
        self.store.put(&def)?;
        if let Some(e) = self.enforcer() {
            match e.set_mode(name, mode) {
                Ok(()) => {}
                Err(EnforceError::UnknownAgent { .. }) => {
                    let v = self.compose(&def)?;
                    self.apply(&e, &def, v.baseline.as_ref().expect("composed"))?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        drop(_g);
        self.show(name)
    }

    /// Removes an agent (refused while it has processes).
    pub fn remove(&self, name: &str) -> Result<(), AgentsError> {
        let _g = self.lock();
        self.def(name)?;
        if let Some(e) = self.enforcer() {
            match e.remove_agent(name) {
                Ok(()) | Err(EnforceError::UnknownAgent { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.store.delete(name)?;
        self.publish_protected();
        Ok(())
    }

    /// One agent with its composed baseline and enforcement state.
    pub fn show(&self, name: &str) -> Result<AgentView, AgentsError> {
        let def = self.def(name)?;
        Ok(self.view(def))
    }

    fn view(&self, def: AgentDef) -> AgentView {
        let mut v = self.compose(&def).unwrap_or_else(|err| AgentView {
            def: def.clone(),
            baseline: None,
            baseline_error: Some(err.to_string()),
            missing_exec: vec![],
            write_exceptions: vec![],
            model_api_env: BTreeMap::new(),
            running: None,
        });
        if let Some(e) = self.enforcer() {
            v.running = e
                .list_agents()
                .into_iter()
                .find(|a| a.name == def.name)
                .map(Into::into);
        }
        v
    }

    /// Every configured agent.
    pub fn list(&self) -> Result<Vec<AgentView>, AgentsError> {
        Ok(self
            .store
            .defs()?
            .into_iter()
            .map(|d| self.view(d))
            .collect())
    }

    /// Ingests a message (signature, nonce, session — the gateway's rules)
    /// and queues it for `agent`. A refused message queues nothing.
    pub async fn submit(
        &self,
        agent: &str,
        msg: &SignedMessage,
    ) -> Result<Result<InboxEntry, Refusal>, AgentsError> {
        self.def(agent)?;
        let out = match self.gateway.submit_message_to_agent(msg, agent).await {
            Ok(o) => o,
            Err(r) => return Ok(Err(r)),
        };
        // Addressed to this agent: no other agent may use its id.
        if let Err(e) = self.gateway.address_to_agent(&out.active_message_id, agent) {
            self.gateway.forget_active(&out.active_message_id);
            return Err(AgentsError::Store {
                path: "gateway.db".into(),
                message: format!("addressing the message to `{agent}`: {e}"),
            });
        }
        let trust = serde_json::to_value(out.trust)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let entry = self.store.enqueue(
            agent,
            &out.session,
            &out.operator,
            &trust,
            &out.active_message_id,
            &msg.body,
        )?;
        tracing::info!(agent, entry = entry.id, trust = %trust, "message queued");
        Ok(Ok(entry))
    }

    /// An agent's inbox, oldest first.
    pub fn entries(&self, agent: &str) -> Result<Vec<InboxEntry>, AgentsError> {
        self.def(agent)?;
        self.store.entries(agent)
    }

    /// Hands the driver the oldest queued message, with a fresh run cgroup.
    pub fn take_next(&self, agent: &str) -> Result<NextRun, AgentsError> {
        let def = self.def(agent)?;
        let e = self
            .enforcer()
            .ok_or_else(|| AgentsError::EnforcementUnavailable {
                reason: self.slot.unavailable_reason(),
            })?;
        if e.baseline_of(agent).is_none() {
            let v = self.compose(&def)?;
            let _g = self.lock();
            self.apply(&e, &def, v.baseline.as_ref().expect("composed"))?;
        }
        let mut next = NextRun {
            entry: None,
            cgroup: None,
            user: def.user.clone(),
            time_limit_secs: def.time_limit(),
        };
        let Some(entry) = self.store.take_next(agent, RUN_PREFIX)? else {
            return Ok(next);
        };
        let run = entry.run.clone().unwrap_or_default();
        match e.create_leaf(agent, &run) {
            Ok(h) => next.cgroup = Some(h.cgroup),
            Err(err) => {
                let _ = self.store.finish(
                    agent,
                    entry.id,
                    &RunResult {
                        outcome: Outcome::LaunchFailed,
                        exit_code: None,
                        reply: format!("run cgroup: {err}"),
                        reply_truncated: false,
                    },
                );
                return Err(err.into());
            }
        }
        next.entry = Some(entry);
        Ok(next)
    }

    /// Audits an administrative change to an agent (best effort).
    pub async fn audit_admin(&self, uid: Option<u32>, action: &str, target: &str) {
        let Some(audit) = self.gateway.audit() else {
            return;
        };
        let mut ev = AuditEvent::new(RecordKind::Admin, action);
        ev.operator = uid
            .map(|u| format!("uid:{u}"))
            .unwrap_or_else(|| "tcp".into());
        ev.target = target.to_owned();
        ev.decision = "allow".into();
        ev.reason_code = reason::OK.into();
        if let Err(e) = audit.append(ev).await {
            tracing::error!(error = %e, action, target, "could not audit an agent change");
        }
    }

    /// Records a run's end, removes its cgroup (killing leftovers) and
    /// audits the outcome.
    pub async fn finish(
        &self,
        agent: &str,
        id: i64,
        res: RunResult,
    ) -> Result<InboxEntry, AgentsError> {
        let entry = self.store.finish(agent, id, &res)?;
        if let (Some(e), Some(run)) = (self.enforcer(), entry.run.clone()) {
            let agent = agent.to_string();
            let removed = tokio::task::spawn_blocking(move || e.remove_leaf(&agent, &run)).await;
            if let Ok(Err(err)) = removed {
                tracing::warn!(error = %err, "run cgroup not removed");
            }
        }
        if let Some(audit) = self.gateway.audit() {
            let mut ev = AuditEvent::new(RecordKind::Admin, "agent_run");
            ev.agent = agent.to_owned();
            ev.operator = entry.operator.clone();
            ev.session = entry.session.clone();
            ev.active_message_id = entry.active_message_id.clone();
            ev.target = format!(
                "agent={} entry={} run={} exit={}",
                agent,
                id,
                entry.run.as_deref().unwrap_or(""),
                res.exit_code.map(|c| c.to_string()).unwrap_or_default()
            );
            let (decision, code) = match res.outcome {
                Outcome::Ok => ("info", reason::OK),
                Outcome::Failed => ("info", "run_failed"),
                Outcome::TimedOut => ("deny", reason::TIME_LIMIT_EXCEEDED),
                Outcome::LaunchFailed => ("deny", "launch_failed"),
            };
            ev.decision = decision.into();
            ev.reason_code = code.into();
            if let Err(err) = audit.append(ev).await {
                tracing::error!(error = %err, "could not audit a driver run");
            }
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_api_proxy_needs_the_forward_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let gw = Arc::new(
            Gateway::open(
                dir.path(),
                crate::gateway::Settings {
                    timestamp_window_secs: 60,
                    nonce_ttl_secs: 600,
                    active_message_ttl_secs: 900,
                    session_ttl_secs: 0,
                    unverified_per_minute: 0,
                },
                None,
            )
            .unwrap(),
        );
        let m = AgentManager::open(dir.path(), gw, EnforceSlot::default()).unwrap();
        let mut d = AgentDef::new("a", "agentd-agent");
        d.model_api = Some("proxy".into());
        let e = m.compose(&d).unwrap_err();
        assert_eq!(e.reason_code(), "model_api_unavailable");
        m.set_forward_socket(PathBuf::from("/run/agentd/model.sock"));
        // No direct upstream to reach: the socket is every agent's.
        let v = m.compose(&d).unwrap();
        let tcp = "127.0.0.1/32:8719".to_string();
        assert!(!v.baseline.as_ref().unwrap().connect.contains(&tcp));
        // With the proxy's loopback listener, that is the model endpoint.
        m.set_forward_tcp("127.0.0.1:8719".parse().unwrap());
        let v = m.compose(&d).unwrap();
        assert!(v.baseline.as_ref().unwrap().connect.contains(&tcp));
    }

    #[test]
    fn resolv_conf_nameservers_become_port_53() {
        let t = "# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch lan\nnameserver bogus\n";
        assert_eq!(dns_destinations(t), ["10.0.0.2/32:53", "[fe80::1/128]:53"]);
        for d in dns_destinations(t) {
            crate::enforce::grant::parse_destination(&d).unwrap();
        }
    }
}
