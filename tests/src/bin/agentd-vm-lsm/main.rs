//! VM test: the BPF LSM backend really denies. Runs as root inside the test
//! VM (see xtask/src/vm.rs); prints `PASS|FAIL|SKIP name: detail` lines and
//! exits non-zero when anything failed.
//!
//! With the real loader it attaches every LSM hook, makes a cgroup,
//! registers it in AGENT_CGROUPS, and checks each hook from processes inside
//! and outside it: exec by device+inode, file opens and path operations by
//! scope, and tamper protection — plus grants (baseline, bound call,
//! expired) and audit-only mode.
mod exec;
mod file;
mod guard;
mod harness;
mod net;
mod tamper;

use std::path::PathBuf;

use agentd::{
    doctor::{self, Backend},
    enforce::lsm::LsmBackend,
};
use agentd_common::{
    lsm::{maps as lsm_maps, ScopeKey, ScopeRule, UnixKey},
    maps, AgentCgroup, Binding, ExecKey, GrantExpiry, Mode,
};
use aya::maps::{HashMap, MapData, RingBuf};
use harness::Report;

/// Agent id used for the test cgroup.
pub const AGENT_ID: u32 = 7;

/// The agent cgroup and typed handles to the maps the tests drive.
pub struct Fixture {
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub events: RingBuf<MapData>,
    pub agents: HashMap<MapData, u64, AgentCgroup>,
    pub grants: HashMap<MapData, ExecKey, GrantExpiry>,
    pub bindings: HashMap<MapData, u32, Binding>,
    pub scopes: HashMap<MapData, ScopeKey, ScopeRule>,
    pub protected: HashMap<MapData, u32, u8>,
    pub unix: HashMap<MapData, UnixKey, GrantExpiry>,
}

impl Fixture {
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), String> {
        self.agents
            .insert(
                self.cgroup_id,
                AgentCgroup {
                    agent_id: AGENT_ID,
                    mode: mode as u8,
                    _pad: [0; 3],
                },
                0,
            )
            .map_err(|e| e.to_string())
    }

    pub fn unregister(&mut self) -> Result<(), String> {
        self.agents
            .remove(&self.cgroup_id)
            .map_err(|e| e.to_string())
    }

    pub fn bind(&mut self, pid: u32, call_id: u64) {
        // Failure shows up as the test's own failure (the exec is refused).
        let _ = self.bindings.insert(
            pid,
            Binding {
                call_id,
                agent_id: AGENT_ID,
                _pad: 0,
            },
            0,
        );
    }
}

fn main() {
    let mut r = Report { failed: 0 };
    let doctor = doctor::run();
    if doctor.backend != Backend::Lsm {
        r.check(
            "doctor_backend_lsm",
            Err(format!(
                "doctor chose {:?}: {}",
                doctor.backend, doctor.reason
            )),
        );
        println!(
            "SKIP lsm_suite: BPF LSM unavailable on this kernel ({})",
            doctor.reason
        );
        std::process::exit(1);
    }
    r.check("doctor_backend_lsm", Ok(doctor.reason.clone()));
    if let Err(e) = run(&mut r) {
        r.check("lsm_setup", Err(e));
    }
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}

fn take<T>(
    backend: &mut LsmBackend,
    name: &str,
    conv: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, String> {
    let map = backend
        .ebpf_mut()
        .take_map(name)
        .ok_or(format!("map {name} missing"))?;
    conv(map).map_err(|e| format!("map {name}: {e}"))
}

fn run(r: &mut Report) -> Result<(), String> {
    let mut backend = LsmBackend::attach().map_err(|e| format!("attach: {e}"))?;
    r.check(
        "lsm_attach",
        Ok(format!(
            "{} LSM hooks + fork/exit tracepoints attached",
            agentd::enforce::lsm::LSM_HOOKS.len()
        )),
    );

    let root = agentd::enforce::cgroup_root().map_err(|e| e.to_string())?;
    let cgroup = root.join("agentd-vm-lsm");
    let _ = std::fs::create_dir(&cgroup);
    use std::os::unix::fs::MetadataExt as _;
    let cgroup_id = std::fs::metadata(&cgroup).map_err(|e| e.to_string())?.ino();
    let mut fx = Fixture {
        cgroup,
        cgroup_id,
        events: take(&mut backend, maps::EVENTS, RingBuf::try_from)?,
        agents: take(&mut backend, maps::AGENT_CGROUPS, HashMap::try_from)?,
        grants: take(&mut backend, maps::EXEC_GRANTS, HashMap::try_from)?,
        bindings: take(&mut backend, maps::BINDINGS, HashMap::try_from)?,
        scopes: take(&mut backend, lsm_maps::PATH_SCOPES, HashMap::try_from)?,
        protected: take(&mut backend, lsm_maps::PROTECTED_TGIDS, HashMap::try_from)?,
        unix: take(&mut backend, lsm_maps::UNIX_RULES, HashMap::try_from)?,
    };
    exec::run(r, &mut fx)?;
    file::run(r, &mut fx)?;
    tamper::run(r, &mut fx)?;
    net::run(r, &mut fx)?;
    guard::run(r, &mut fx)?;
    fx.unregister()?;
    let _ = std::fs::remove_dir(&fx.cgroup);
    Ok(())
}
