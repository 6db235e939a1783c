//! `agentd doctor`: what this kernel really supports for enforcement, found
//! by probing (loading programs, installing filters), never from config alone.
use std::{io, os::fd::AsFd as _};

use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError};
use serde::Serialize;

use crate::enforce::ebpf::{self, programs};

pub mod exposure;

/// Outcome of one probe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    /// Stable probe name.
    pub name: &'static str,
    /// Whether the feature works.
    pub ok: bool,
    /// What was found: a version, an errno, a reason.
    pub detail: String,
}

pub use crate::enforce::Backend;

/// The full report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Running kernel release.
    pub kernel: String,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// The backend agentd would choose.
    pub backend: Backend,
    /// Why that backend was chosen.
    pub reason: String,
    /// What the chosen backend cannot cover.
    pub limitations: Vec<String>,
    /// What the host exposes to agents beyond any grant: root-equivalent
    /// sockets the agent user can reach, DNS in the agents' baseline.
    pub exposure: Vec<String>,
}

impl Report {
    /// The probe with this name.
    pub fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.name == name)
    }

    /// Human-readable rendering.
    pub fn render(&self) -> String {
        let mut out = format!("agentd doctor — kernel {}\n\n", self.kernel);
        for p in &self.probes {
            let mark = if p.ok { "ok  " } else { "FAIL" };
            out += &format!("  [{mark}] {:<22} {}\n", p.name, p.detail);
        }
        out += &format!("\nbackend: {:?} — {}\n", self.backend, self.reason);
        if !self.limitations.is_empty() {
            out += "this backend cannot cover:\n";
            for l in &self.limitations {
                out += &format!("  - {l}\n");
            }
        }
        if !self.exposure.is_empty() {
            out += "host exposure (WARNING):\n";
            for e in &self.exposure {
                out += &format!("  - {e}\n");
            }
        }
        out
    }
}

/// Runs every probe and picks a backend.
pub fn run() -> Report {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut probes = Vec::new();
    probes.push(probe_btf());
    probes.push(probe_active_lsms());
    probes.extend(probe_bpf_programs());
    probes.push(probe_seccomp_user_notif());
    probes.push(probe_seccomp_sync_wakeup());
    probes.push(probe_landlock());
    probes.push(probe_io_uring());
    let Choice {
        backend,
        reason,
        limitations,
    } = choose(&probes);
    Report {
        kernel,
        probes,
        backend,
        reason,
        limitations,
        exposure: exposure::findings(&agent_user(), &crate::enforce::default_baseline()),
    }
}

/// The configured agent user (the system config if present, else the default).
fn agent_user() -> String {
    let path = std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH);
    path.exists()
        .then(|| crate::config::Config::load(path).ok())
        .flatten()
        .unwrap_or_default()
        .agent_user
}

/// The backend the probes allow, why, and what it cannot cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend agentd would run.
    pub backend: Backend,
    /// Why that one.
    pub reason: String,
    /// What it cannot cover on this kernel.
    pub limitations: Vec<String>,
}

/// Picks the backend from probe results (pure, so it is unit-tested).
pub fn choose(probes: &[Probe]) -> Choice {
    let ok = |name: &str| probes.iter().any(|p| p.name == name && p.ok);
    if ok("bpf_lsm_active") && ok("lsm_program") && ok("tp_btf_program") {
        let mut limits = vec![];
        if !ok("cgroup_sock_addr") {
            limits.push("connect destinations are checked by socket_connect only".into());
        }
        return Choice {
            backend: Backend::Lsm,
            reason: "BPF LSM programs load and attach on this kernel".into(),
            limitations: limits,
        };
    }
    if ok("seccomp_user_notif") && ok("tp_btf_program") && ok("cgroup_sock_addr") {
        let why = if !ok("bpf_lsm_active") {
            "`bpf` is not an active LSM".to_string()
        } else {
            let errno = probes
                .iter()
                .find(|p| p.name == "lsm_program")
                .map(|p| p.detail.clone())
                .unwrap_or_default();
            format!("BPF LSM programs do not load ({errno})")
        };
        return Choice {
            backend: Backend::Seccomp,
            reason: format!("{why}; seccomp user notification, tp_btf and cgroup sock_addr work"),
            limitations: vec![
                "file access through fds the agent already holds before a call (read/write on an open fd is not re-checked)".into(),
                "destructive path operations (unlink, rename, link, symlink, truncate) are not notified; write scopes gate the opens that precede them".into(),
                "signals to agentd are prevented by running agents as another user, not by a hook".into(),
                "io_uring is refused outright rather than checked per operation".into(),
            ],
        };
    }
    Choice {
        backend: Backend::None,
        reason: "neither BPF LSM nor seccomp user notification with tp_btf and cgroup sock_addr is usable"
            .into(),
        limitations: vec!["agentd cannot enforce on this kernel".into()],
    }
}

fn probe(name: &'static str, result: Result<String, String>) -> Probe {
    match result {
        Ok(detail) => Probe {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Probe {
            name,
            ok: false,
            detail,
        },
    }
}

fn probe_btf() -> Probe {
    let path = crate::enforce::btf_offsets::VMLINUX_BTF;
    probe(
        "btf",
        match crate::enforce::btf_offsets::resolve_running_kernel() {
            Ok(_) => Ok(format!("{path} present; field offsets resolved")),
            Err(e) => Err(e.to_string()),
        },
    )
}

/// Reads the active LSM list, mounting securityfs first if needed.
fn active_lsms() -> Result<String, String> {
    let path = "/sys/kernel/security/lsm";
    if std::fs::metadata(path).is_err() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {path}: {e}"))
}

fn probe_active_lsms() -> Probe {
    probe(
        "bpf_lsm_active",
        active_lsms().and_then(|list| {
            if list.split(',').any(|l| l == "bpf") {
                Ok(format!("active LSMs: {list}"))
            } else {
                Err(format!("`bpf` missing from active LSMs: {list}"))
            }
        }),
    )
}

fn errno_of(e: &ProgramError) -> String {
    let io = match e {
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        ProgramError::SyscallError(s) => Some(&s.io_error),
        _ => None,
    };
    match io.and_then(io::Error::raw_os_error) {
        Some(n) => format!("{} ({})", nix::errno::Errno::from_raw(n), e),
        None => e.to_string(),
    }
}

/// Loads (and attaches, then detaches) the real programs one by one.
fn probe_bpf_programs() -> Vec<Probe> {
    let mut obj = match ebpf::open_for_running_kernel() {
        Ok(o) => o,
        Err(e) => {
            let msg = e.to_string();
            return ["lsm_program", "tp_btf_program", "cgroup_sock_addr"]
                .into_iter()
                .map(|name| probe(name, Err(format!("object did not open: {msg}"))))
                .collect();
        }
    };
    let lsm = (|| -> Result<String, String> {
        let prog: &mut Lsm = obj
            .ebpf
            .program_mut(programs::BPRM_CHECK_SECURITY)
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load("bprm_check_security", &obj.btf)
            .map_err(|e| format!("load failed: {}", errno_of(&e)))?;
        let link = prog
            .attach()
            .map_err(|e| format!("attach failed: {}", errno_of(&e)))?;
        prog.detach(link).map_err(|e| e.to_string())?;
        Ok("bprm_check_security loads and attaches".into())
    })();
    let tp = (|| -> Result<String, String> {
        let prog: &mut BtfTracePoint = obj
            .ebpf
            .program_mut(programs::SCHED_PROCESS_EXEC)
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load("sched_process_exec", &obj.btf)
            .map_err(|e| format!("load failed: {}", errno_of(&e)))?;
        let link = prog
            .attach()
            .map_err(|e| format!("attach failed: {}", errno_of(&e)))?;
        prog.detach(link).map_err(|e| e.to_string())?;
        Ok("tp_btf/sched_process_exec loads and attaches".into())
    })();
    let sock = (|| -> Result<String, String> {
        let prog: &mut CgroupSockAddr = obj
            .ebpf
            .program_mut(programs::CONNECT4)
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load()
            .map_err(|e| format!("load failed: {}", errno_of(&e)))?;
        // Attach to a fresh, empty cgroup so nothing real is affected.
        let root = crate::enforce::cgroup_root().map_err(|e| e.to_string())?;
        // Unique per probe: concurrent probes in one process (tests, the
        // daemon's background start) must not share the cgroup.
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("agentd-doctor-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let result = (|| {
            let fd = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
            let link = prog
                .attach(fd.as_fd(), CgroupAttachMode::Single)
                .map_err(|e| format!("attach failed: {}", errno_of(&e)))?;
            prog.detach(link).map_err(|e| e.to_string())
        })();
        let _ = std::fs::remove_dir(&dir);
        result.map(|_| "cgroup/connect4 loads and attaches".to_string())
    })();
    vec![
        probe("lsm_program", lsm),
        probe("tp_btf_program", tp),
        probe("cgroup_sock_addr", sock),
    ]
}

/// Installs a user-notification filter in a forked child (the filter would
/// otherwise stay on us) and reports what the child saw.
fn probe_seccomp_user_notif() -> Probe {
    probe(
        "seccomp_user_notif",
        crate::enforce::seccomp_probe::user_notif_in_child(false),
    )
}

fn probe_seccomp_sync_wakeup() -> Probe {
    probe(
        "seccomp_sync_wakeup",
        crate::enforce::seccomp_probe::user_notif_in_child(true),
    )
}

fn probe_landlock() -> Probe {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a NULL attr with size 0 and the VERSION flag only queries the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    probe(
        "landlock",
        if abi > 0 {
            Ok(format!("ABI {abi}"))
        } else {
            Err(format!("unavailable: {}", io::Error::last_os_error()))
        },
    )
}

fn probe_io_uring() -> Probe {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) = 120.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    probe(
        "io_uring",
        if fd >= 0 {
            // SAFETY: fd was just returned to us.
            unsafe { libc::close(fd as i32) };
            Ok("available (refused for agent processes by both backends)".into())
        } else {
            Err(format!("unavailable: {}", io::Error::last_os_error()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &'static str, ok: bool) -> Probe {
        Probe {
            name,
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn lsm_chosen_only_when_programs_really_load() {
        let mut probes = vec![
            p("bpf_lsm_active", true),
            p("lsm_program", false),
            p("tp_btf_program", true),
            p("cgroup_sock_addr", true),
            p("seccomp_user_notif", true),
        ];
        assert_eq!(choose(&probes).backend, Backend::Seccomp);
        probes[1].ok = true;
        assert_eq!(choose(&probes).backend, Backend::Lsm);
    }

    #[test]
    fn nothing_usable_means_none() {
        assert_eq!(
            choose(&[p("seccomp_user_notif", false)]).backend,
            Backend::None
        );
    }
}
