//! The loaded eBPF object and its maps, pinned under /sys/fs/bpf/agentd so
//! enforcement (tp_btf exec verification, cgroup connect gates, grants,
//! bindings) survives a daemon restart. The [`super::Enforcer`] owns one
//! `BpfState` behind a mutex; other threads (supervisors) open their own
//! handles to the pinned maps with [`open_pinned_hash`].
use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use agentd_common::{
    access::{merge, AccessKey, AccessSummary},
    maps, AgentCgroup, Binding, ConnectKey, ConnectRule, ExecArgs, ExecExpectation, ExecKey,
    GrantExpiry, Lineage, PendingGrant, PendingKey, ProcessCall, UseTicket, CONNECT_FIXED_BITS,
};
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{links::FdLink, BtfTracePoint, CgroupAttachMode, CgroupSockAddr},
    Pod,
};

use super::{
    ebpf::{self, programs, LoadError, LoadedObject},
    grant::KernelGrant,
};

/// Where the default agentd instance pins its maps and links.
pub const PIN_DIR: &str = "/sys/fs/bpf/agentd";

/// One agentd's names in the global kernel namespaces (bpffs, cgroupfs): the
/// default state directory is instance `agentd`; any other state directory
/// (tests, a second daemon) gets its own, so two instances never share maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Short name: `agentd` or `agentd-<8 hex>`.
    pub name: String,
}

impl Instance {
    /// The instance owning `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        if state_dir == Path::new("/var/lib/agentd") {
            return Instance {
                name: "agentd".into(),
            };
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        Instance {
            name: format!("agentd-{}", hex::encode(&digest[..4])),
        }
    }

    /// Pin directory on bpffs.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(ebpf::BPFFS).join(&self.name)
    }

    /// Name of the parent cgroup of this instance's agents.
    pub fn slice(&self) -> String {
        format!("{}.slice", self.name)
    }

    /// Kills this instance's agents, removes their cgroups and its slice,
    /// and unpins its maps and links (so its programs detach): what is left
    /// when nothing may be adopted. Returns the agents that were stopped.
    pub fn drop_kernel_state(&self, cgroup_root: &Path) -> Vec<String> {
        let slice = cgroup_root.join(self.slice());
        let agents = super::agent_cgroup::existing(&slice);
        for agent in &agents {
            if let Ok(cg) = super::agent_cgroup::open(&slice.join(agent)) {
                let _ = super::agent_cgroup::kill_all(&cg);
                for _ in 0..50 {
                    if super::agent_cgroup::remove(&cg).is_ok() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_dir(&slice);
        let _ = std::fs::remove_dir_all(self.pin_dir());
        agents
    }

    /// Records which state directory owns this instance, so instances of
    /// deleted state directories (tests) can be garbage-collected.
    pub fn register(&self, state_dir: &Path) {
        let dir = Path::new(INSTANCES_DIR);
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(
            dir.join(&self.name),
            state_dir.as_os_str().as_encoded_bytes(),
        );
    }
}

/// Where instance → state directory records live (tmpfs: gone at reboot,
/// like the pins themselves).
pub const INSTANCES_DIR: &str = "/run/agentd-instances";

/// The pid owning a probe's scratch pin directory (`agentd-probe-PID-N`).
/// Read as the whole rest of the name, `PID-N` named no process, so every
/// agentd starting up removed the scratch pins of probes running in other
/// live processes, whose pinning then failed with ENOENT.
fn probe_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("agentd-probe-")?;
    rest.split('-').next().filter(|p| !p.is_empty())
}

/// Removes instances whose state directory no longer exists: their agents
/// are killed, their slice removed and their pins (so programs) dropped.
/// Returns the names removed.
pub fn gc_orphans(cgroup_root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    // Scratch pins of `agentd doctor` probes whose process died mid-probe.
    if let Ok(pins) = std::fs::read_dir(ebpf::BPFFS) {
        for e in pins.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = probe_owner(&name) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
                removed.push(name);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(INSTANCES_DIR) else {
        return removed;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Ok(owner) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if name == "agentd" || Path::new(&owner).exists() || !name.starts_with("agentd-") {
            continue;
        }
        Instance { name: name.clone() }.drop_kernel_state(cgroup_root);
        let _ = std::fs::remove_file(e.path());
        removed.push(name);
    }
    removed
}

/// Errors loading, attaching or updating the BPF state.
#[derive(Debug, thiserror::Error)]
pub enum BpfStateError {
    /// The object could not be opened.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A program did not load or attach.
    #[error("program {program}: {message}")]
    Program {
        /// Program name.
        program: &'static str,
        /// What failed.
        message: String,
    },
    /// A map is missing or has the wrong type.
    #[error("map {map}: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What failed.
        message: String,
    },
    /// A pin could not be created or replaced.
    #[error("pin {path}: {message}")]
    Pin {
        /// Pin path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> BpfStateError {
    move |e| BpfStateError::Map {
        map,
        message: e.to_string(),
    }
}

/// The loaded programs and typed handles to every map but the ring buffer.
pub struct BpfState {
    _object: LoadedObject,
    agent_cgroups: HashMap<MapData, u64, AgentCgroup>,
    bindings: HashMap<MapData, u32, Binding>,
    exec_grants: HashMap<MapData, ExecKey, GrantExpiry>,
    connect_rules: LpmTrie<MapData, ConnectKey, ConnectRule>,
    counters: PerCpuArray<MapData, u64>,
    pending: HashMap<MapData, PendingKey, PendingGrant>,
    tickets: HashMap<MapData, UseTicket, u8>,
    lineage: HashMap<MapData, u32, Lineage>,
    claimants: HashMap<MapData, ProcessCall, u64>,
    exec_args: HashMap<MapData, u64, ExecArgs>,
    summaries: PerCpuHashMap<MapData, AccessKey, AccessSummary>,
    /// Whether the maps were already pinned (agentd restarted over live state).
    pub adopted: bool,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
}

/// Opens one pinned hash map by name with its own fd (for supervisor threads).
pub fn open_pinned_hash<K: Pod, V: Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, BpfStateError> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(map_err(name))?;
    HashMap::try_from(Map::HashMap(data)).map_err(map_err(name))
}

fn take<T>(
    obj: &mut LoadedObject,
    name: &'static str,
    conv: impl Fn(Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, BpfStateError> {
    let map = obj.ebpf.take_map(name).ok_or(BpfStateError::Map {
        map: name,
        message: "missing from the object".into(),
    })?;
    conv(map).map_err(map_err(name))
}

/// Pins `link` at `links/<name>`, atomically replacing a pin left by a
/// previous agentd (whose program then detaches): no moment without a gate.
fn pin_link(pin_dir: &Path, link: FdLink, name: &str) -> Result<(), BpfStateError> {
    let dir = pin_dir.join("links");
    let pin_err = |path: &Path, e: &dyn std::fmt::Display| BpfStateError::Pin {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, &e))?;
    // bpffs refuses names with dots.
    let tmp = dir.join(format!("{name}_new"));
    let _ = std::fs::remove_file(&tmp);
    let pinned = link.pin(&tmp).map_err(|e| pin_err(&tmp, &e))?;
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).map_err(|e| pin_err(&dest, &e))?;
    // The kernel object stays alive through the pin; our fd can go.
    drop(pinned);
    Ok(())
}

/// The error of one program's load or attach step.
fn program_error(program: &'static str) -> impl Fn(String) -> BpfStateError {
    move |message| BpfStateError::Program { program, message }
}

/// Loads and attaches the fork/exit/exec tracepoints that keep the
/// process-tree maps, and pins their links.
fn attach_process_tree(obj: &mut LoadedObject, pin_dir: &Path) -> Result<(), BpfStateError> {
    for name in [
        programs::SCHED_PROCESS_FORK,
        programs::SCHED_PROCESS_EXIT,
        programs::SCHED_PROCESS_EXEC,
    ] {
        let prog_err = program_error(name);
        let prog: &mut BtfTracePoint = obj
            .ebpf
            .program_mut(name)
            .ok_or_else(|| prog_err("missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| prog_err(e.to_string()))?;
        prog.load(name, &obj.btf)
            .map_err(|e| prog_err(format!("load: {e}")))?;
        let id = prog
            .attach()
            .map_err(|e| prog_err(format!("attach: {e}")))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| prog_err(e.to_string()))?
            .into();
        pin_link(pin_dir, link, name)?;
    }
    Ok(())
}

/// Loads the cgroup connect/sendmsg gates, attaches them to `slice` (the
/// parent of all agent cgroups) and pins their links.
fn attach_network_gates(
    obj: &mut LoadedObject,
    slice: &Path,
    pin_dir: &Path,
) -> Result<(), BpfStateError> {
    let cgroup = File::open(slice).map_err(|e| BpfStateError::Program {
        program: programs::CONNECT4,
        message: format!("open {}: {e}", slice.display()),
    })?;
    for name in [
        programs::CONNECT4,
        programs::CONNECT6,
        programs::SENDMSG4,
        programs::SENDMSG6,
    ] {
        let prog_err = program_error(name);
        let prog: &mut CgroupSockAddr = obj
            .ebpf
            .program_mut(name)
            .ok_or_else(|| prog_err("missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| prog_err(e.to_string()))?;
        prog.load().map_err(|e| prog_err(format!("load: {e}")))?;
        let id = prog
            // bpf_link attachments are always multi-attach; the flag must be 0.
            .attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|e| prog_err(format!("attach: {e}")))?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| prog_err(e.to_string()))?
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| prog_err(e.to_string()))?;
        pin_link(pin_dir, link, name)?;
    }
    Ok(())
}

impl BpfState {
    /// Loads the object with maps pinned in `pin_dir` (re-using live ones),
    /// attaches the process-tree programs and the cgroup network gates on
    /// `slice` (the parent of all agent cgroups), and pins every link.
    /// Returns the state and the event ring buffer.
    /// (The lsm backend attaches its hooks itself: `lsm::LsmState::start_in`.)
    pub fn start(slice: &Path, pin_dir: &Path) -> Result<(Self, RingBuf<MapData>), BpfStateError> {
        ebpf::ensure_bpffs()?;
        let adopted = pin_dir.join(maps::AGENT_CGROUPS).exists();
        std::fs::create_dir_all(pin_dir).map_err(|e| BpfStateError::Pin {
            path: pin_dir.into(),
            message: e.to_string(),
        })?;
        let mut obj = ebpf::open_pinned(pin_dir)?;
        attach_process_tree(&mut obj, pin_dir)?;
        attach_network_gates(&mut obj, slice, pin_dir)?;
        let agent_cgroups = take(&mut obj, maps::AGENT_CGROUPS, HashMap::try_from)?;
        let bindings = take(&mut obj, maps::BINDINGS, HashMap::try_from)?;
        let exec_grants = take(&mut obj, maps::EXEC_GRANTS, HashMap::try_from)?;
        let connect_rules = take(&mut obj, maps::CONNECT_RULES, LpmTrie::try_from)?;
        let counters = take(&mut obj, maps::COUNTERS, PerCpuArray::try_from)?;
        let events = take(&mut obj, maps::EVENTS, RingBuf::try_from)?;
        let pending = take(&mut obj, maps::PENDING, HashMap::try_from)?;
        let tickets = take(&mut obj, maps::USE_TICKETS, HashMap::try_from)?;
        let lineage = take(&mut obj, maps::LINEAGE, HashMap::try_from)?;
        let claimants = take(&mut obj, maps::CLAIMANTS, HashMap::try_from)?;
        let exec_args = take(&mut obj, maps::EXEC_ARGS, HashMap::try_from)?;
        let summaries = take(&mut obj, maps::ACCESS_SUMMARIES, PerCpuHashMap::try_from)?;
        Ok((
            Self {
                _object: obj,
                agent_cgroups,
                bindings,
                exec_grants,
                connect_rules,
                counters,
                pending,
                tickets,
                lineage,
                claimants,
                exec_args,
                summaries,
                adopted,
                pin_dir: pin_dir.to_owned(),
            },
            events,
        ))
    }

    /// Registers (or updates the mode of) an agent cgroup.
    pub fn set_agent(&mut self, cgroup_id: u64, agent: AgentCgroup) -> Result<(), BpfStateError> {
        self.agent_cgroups
            .insert(cgroup_id, agent, 0)
            .map_err(map_err(maps::AGENT_CGROUPS))
    }

    /// Unregisters an agent cgroup.
    pub fn remove_agent(&mut self, cgroup_id: u64) {
        let _ = self.agent_cgroups.remove(&cgroup_id);
    }

    /// Every registered agent cgroup (for re-adoption after a restart).
    pub fn agents(&self) -> Vec<(u64, AgentCgroup)> {
        self.agent_cgroups.iter().filter_map(Result::ok).collect()
    }

    /// Binds a process to a call (its children inherit in the kernel).
    pub fn bind(&mut self, tgid: u32, binding: Binding) -> Result<(), BpfStateError> {
        self.bindings
            .insert(tgid, binding, 0)
            .map_err(map_err(maps::BINDINGS))
    }

    /// Removes every binding to `call_id`.
    pub fn unbind_call(&mut self, call_id: u64) {
        let doomed: Vec<u32> = self
            .bindings
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, b)| b.call_id == call_id)
            .map(|(tgid, _)| tgid)
            .collect();
        for tgid in doomed {
            let _ = self.bindings.remove(&tgid);
        }
    }

    /// Writes a grant's exec files and connect destinations under `handle`.
    pub fn install(&mut self, grant: &KernelGrant) -> Result<(), BpfStateError> {
        let expiry = GrantExpiry {
            expires_at_ns: grant.expires_at_ns,
        };
        for file in &grant.exec {
            let key = ExecKey {
                call_id: grant.handle,
                file: *file,
            };
            self.exec_grants
                .insert(key, expiry, 0)
                .map_err(map_err(maps::EXEC_GRANTS))?;
        }
        // Arguments too long for the kernel's copy are published as
        // unverifiable: the lsm backend then refuses the exec (fails closed).
        if let Some(args) = grant.spec.args.as_deref() {
            let args = ExecArgs::encode(args).unwrap_or(ExecArgs::UNVERIFIABLE);
            self.exec_args
                .insert(grant.handle, args, 0)
                .map_err(map_err(maps::EXEC_ARGS))?;
        }
        let rule = ConnectRule {
            expires_at_ns: grant.expires_at_ns,
        };
        for d in &grant.connect {
            let key = Key::new(
                CONNECT_FIXED_BITS + d.prefix_bits,
                ConnectKey::new(grant.handle, d.port, d.addr),
            );
            self.connect_rules
                .insert(&key, rule, 0)
                .map_err(map_err(maps::CONNECT_RULES))?;
        }
        Ok(())
    }

    /// Removes what [`Self::install`] wrote.
    pub fn uninstall(&mut self, grant: &KernelGrant) {
        let _ = self.exec_args.remove(&grant.handle);
        for file in &grant.exec {
            let _ = self.exec_grants.remove(&ExecKey {
                call_id: grant.handle,
                file: *file,
            });
        }
        for d in &grant.connect {
            let key = Key::new(
                CONNECT_FIXED_BITS + d.prefix_bits,
                ConnectKey::new(grant.handle, d.port, d.addr),
            );
            let _ = self.connect_rules.remove(&key);
        }
    }

    /// Publishes a pending grant in (agent, slot) for claims. Its
    /// requester chain becomes its first claimants (`CLAIMANTS`, which the
    /// fork tracepoint extends to what they create from now on), each with
    /// its lineage start time so a reused pid inherits nothing.
    pub fn set_pending(
        &mut self,
        agent_id: u32,
        slot: u32,
        grant: PendingGrant,
    ) -> Result<(), BpfStateError> {
        let chain = grant.n_requesters.min(grant.requesters.len() as u32) as usize;
        for &tgid in &grant.requesters[..chain] {
            let started = self.lineage.get(&tgid, 0).map_or(0, |l| l.start_ns);
            let key = ProcessCall {
                call_id: grant.call_id,
                tgid,
                _pad: 0,
            };
            self.claimants
                .insert(key, started, 0)
                .map_err(map_err(maps::CLAIMANTS))?;
        }
        self.pending
            .insert(PendingKey { agent_id, slot }, grant, 0)
            .map_err(map_err(maps::PENDING))
    }

    /// The pending grant in (agent, slot), with its `uses_left` hint.
    pub fn pending(&self, agent_id: u32, slot: u32) -> Option<PendingGrant> {
        self.pending.get(&PendingKey { agent_id, slot }, 0).ok()
    }

    /// Withdraws a pending grant (if `call_id` still holds the slot).
    pub fn clear_pending(&mut self, agent_id: u32, slot: u32, call_id: u64) {
        let key = PendingKey { agent_id, slot };
        if self
            .pending
            .get(&key, 0)
            .is_ok_and(|g| g.call_id == call_id)
        {
            let _ = self.pending.remove(&key);
        }
    }

    /// Spends one use of grant `call_id` in the ticket map the claims use
    /// (so explicit binds and claims share one count). `hint` is the uses
    /// believed left; `pending` (agent, slot) names its pending entry, whose
    /// hint is preferred and kept current. Returns the uses left after a
    /// successful spend, else why none was spent.
    pub fn spend_use(
        &mut self,
        call_id: u64,
        hint: u32,
        pending: Option<(u32, u32)>,
    ) -> Result<u32, super::pending::Spend> {
        let key = pending.map(|(agent_id, slot)| PendingKey { agent_id, slot });
        let mut g = key
            .and_then(|k| self.pending.get(&k, 0).ok())
            .filter(|g| g.call_id == call_id)
            .unwrap_or(PendingGrant {
                call_id,
                uses_left: hint,
                ..Default::default()
            });
        let pending_map = &mut self.pending;
        match super::pending::spend_ticket(&mut self.tickets, &mut g, |g| {
            if let Some(k) = key {
                if pending_map.get(&k, 0).is_ok_and(|p| p.call_id == call_id) {
                    let _ = pending_map.insert(k, g, 0);
                }
            }
        }) {
            super::pending::Spend::Taken => Ok(g.uses_left),
            refused => Err(refused),
        }
    }

    /// Forgets the spent-use tickets of a removed grant.
    pub fn clear_tickets(&mut self, call_id: u64, uses: u32) {
        for n in 1..=uses {
            let _ = self.tickets.remove(&UseTicket {
                call_id,
                n,
                _pad: 0,
            });
        }
    }

    /// Whether tickets 1..=`uses` of grant `call_id` are all taken (ticket
    /// 1 first: claims take them from the top down, so it goes last).
    pub fn uses_spent(&self, call_id: u64, uses: u32) -> bool {
        uses > 0
            && (1..=uses).all(|n| {
                self.tickets
                    .get(
                        &UseTicket {
                            call_id,
                            n,
                            _pad: 0,
                        },
                        0,
                    )
                    .is_ok()
            })
    }

    /// Every allowed access counted under a grant (`ACCESS_SUMMARIES`),
    /// merged over CPUs.
    pub fn access_summaries(&self) -> Vec<(AccessKey, AccessSummary)> {
        self.summaries
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| merge(v.iter()).map(|m| (k, m)))
            .collect()
    }

    /// Deletes the counted accesses of `call_id` (its grant ended).
    pub fn forget_access_summaries(&mut self, call_id: u64) {
        let keys: Vec<AccessKey> = self
            .summaries
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == call_id)
            .collect();
        for k in keys {
            let _ = self.summaries.remove(&k);
        }
    }

    /// Sum over CPUs of each counter slot.
    pub fn counters(&self) -> Vec<u64> {
        (0..agentd_common::COUNTER_SLOTS)
            .map(|i| {
                self.counters
                    .get(&i, 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Handle to the pinned exec-expectation map, for a supervisor thread.
pub type ExecExpectMap = HashMap<MapData, u32, ExecExpectation>;
/// Handle to the pinned bindings map, for a supervisor thread.
pub type BindingsMap = HashMap<MapData, u32, Binding>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_named_by_their_state_directory() {
        let default = Instance::for_state_dir(Path::new("/var/lib/agentd"));
        assert_eq!(default.name, "agentd");
        assert_eq!(default.pin_dir(), Path::new("/sys/fs/bpf/agentd"));
        assert_eq!(probe_owner("agentd-probe-1363-0"), Some("1363"));
        assert_eq!(probe_owner("agentd-probe-77"), Some("77"));
        assert_eq!(probe_owner("agentd-x"), None);
        assert_eq!(default.slice(), "agentd.slice");
        let a = Instance::for_state_dir(Path::new("/tmp/a"));
        let b = Instance::for_state_dir(Path::new("/tmp/b"));
        assert_ne!(a, b, "two state directories never share maps");
        assert_eq!(a, Instance::for_state_dir(Path::new("/tmp/a")), "stable");
        assert!(a.name.starts_with("agentd-") && a.name.len() == "agentd-".len() + 8);
        // bpffs refuses dots in names; the pin directory has none.
        assert!(!a
            .pin_dir()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains('.'));
        assert_eq!(a.slice(), format!("{}.slice", a.name));
    }
}
