//! The probes behind `agentd doctor`: each tries the real thing (reads the
//! LSM list, loads and attaches a program, installs a filter in a child) and
//! reports what it found, or a [`ProbeError`] saying why it did not work.
use std::{io, os::fd::AsFd as _, path::PathBuf};

use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError};

use super::Probe;
use crate::enforce::{
    btf_offsets::{self, OffsetError},
    cgroup_root::CgroupRootError,
    ebpf::{self, programs, LoadError},
    seccomp_probe::{self, SeccompProbeError},
};

/// Why a probe failed; its text is the probe's `detail` in the report.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel's BTF or the field offsets agentd needs are missing.
    #[error(transparent)]
    Btf(#[from] OffsetError),
    /// A kernel file could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: &'static str,
        /// The read error.
        source: io::Error,
    },
    /// BPF LSM is built in but not in the active list.
    #[error("`bpf` missing from active LSMs: {list}")]
    BpfNotActive {
        /// The active LSMs, as the kernel lists them.
        list: String,
    },
    /// The eBPF object did not open for this kernel.
    #[error("object did not open: {0}")]
    Object(String),
    /// The object has no program of that name (a build problem).
    #[error("program missing")]
    ProgramMissing,
    /// The program is not of the type the probe expects, or detach failed.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The kernel refused to load the program.
    #[error("load failed: {0}")]
    Load(String),
    /// The kernel refused to attach the program.
    #[error("attach failed: {0}")]
    Attach(String),
    /// No cgroup v2 hierarchy to attach the probe program under.
    #[error(transparent)]
    CgroupRoot(#[from] CgroupRootError),
    /// The probe's scratch cgroup could not be made or opened.
    #[error("{what} {}: {source}", path.display())]
    ScratchCgroup {
        /// "mkdir" or "open".
        what: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Seccomp user notification did not work in the probe child.
    #[error(transparent)]
    Seccomp(#[from] SeccompProbeError),
    /// A syscall the feature needs is not available.
    #[error("unavailable: {0}")]
    Unavailable(io::Error),
}

/// A probe's report line from its outcome.
fn probe(name: &'static str, result: Result<String, ProbeError>) -> Probe {
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(e) => (false, e.to_string()),
    };
    Probe { name, ok, detail }
}

/// The running kernel's BTF, and the field offsets resolved from it.
pub fn btf() -> Probe {
    let path = btf_offsets::VMLINUX_BTF;
    probe(
        "btf",
        btf_offsets::resolve_running_kernel()
            .map(|_| format!("{path} present; field offsets resolved"))
            .map_err(ProbeError::from),
    )
}

/// Reads the active LSM list, mounting securityfs first if needed.
fn read_active_lsms() -> Result<String, ProbeError> {
    const PATH: &str = "/sys/kernel/security/lsm";
    if std::fs::metadata(PATH).is_err() {
        // Best effort: if the mount fails, the read below says so.
        let _ = nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    std::fs::read_to_string(PATH)
        .map(|s| s.trim().to_string())
        .map_err(|source| ProbeError::Unreadable { path: PATH, source })
}

/// Whether `bpf` is among the active LSMs.
pub fn active_lsms() -> Probe {
    probe(
        "bpf_lsm_active",
        read_active_lsms().and_then(|list| {
            if list.split(',').any(|l| l == "bpf") {
                Ok(format!("active LSMs: {list}"))
            } else {
                Err(ProbeError::BpfNotActive { list })
            }
        }),
    )
}

/// The errno of a load or attach failure, with the error's own text.
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

fn load_failed(e: ProgramError) -> ProbeError {
    ProbeError::Load(errno_of(&e))
}

fn attach_failed(e: ProgramError) -> ProbeError {
    ProbeError::Attach(errno_of(&e))
}

/// Loads (and attaches, then detaches) the real programs one by one.
pub fn bpf_programs() -> Vec<Probe> {
    let mut obj = match ebpf::open_for_running_kernel() {
        Ok(o) => o,
        Err(e) => return unopened(&e),
    };
    let lsm = lsm_program(&mut obj);
    let tp = tp_btf_program(&mut obj);
    let sock = cgroup_sock_addr(&mut obj);
    vec![
        probe("lsm_program", lsm),
        probe("tp_btf_program", tp),
        probe("cgroup_sock_addr", sock),
    ]
}

/// Every program probe fails the same way when the object does not open.
fn unopened(e: &LoadError) -> Vec<Probe> {
    ["lsm_program", "tp_btf_program", "cgroup_sock_addr"]
        .into_iter()
        .map(|name| probe(name, Err(ProbeError::Object(e.to_string()))))
        .collect()
}

fn lsm_program(obj: &mut ebpf::LoadedObject) -> Result<String, ProbeError> {
    let prog: &mut Lsm = obj
        .ebpf
        .program_mut(programs::BPRM_CHECK_SECURITY)
        .ok_or(ProbeError::ProgramMissing)?
        .try_into()?;
    prog.load("bprm_check_security", &obj.btf)
        .map_err(load_failed)?;
    let link = prog.attach().map_err(attach_failed)?;
    prog.detach(link)?;
    Ok("bprm_check_security loads and attaches".into())
}

fn tp_btf_program(obj: &mut ebpf::LoadedObject) -> Result<String, ProbeError> {
    let prog: &mut BtfTracePoint = obj
        .ebpf
        .program_mut(programs::SCHED_PROCESS_EXEC)
        .ok_or(ProbeError::ProgramMissing)?
        .try_into()?;
    prog.load("sched_process_exec", &obj.btf)
        .map_err(load_failed)?;
    let link = prog.attach().map_err(attach_failed)?;
    prog.detach(link)?;
    Ok("tp_btf/sched_process_exec loads and attaches".into())
}

fn cgroup_sock_addr(obj: &mut ebpf::LoadedObject) -> Result<String, ProbeError> {
    let prog: &mut CgroupSockAddr = obj
        .ebpf
        .program_mut(programs::CONNECT4)
        .ok_or(ProbeError::ProgramMissing)?
        .try_into()?;
    prog.load().map_err(load_failed)?;
    // Attach to a fresh, empty cgroup so nothing real is affected.
    let root = crate::enforce::cgroup_root()?;
    // Unique per probe: concurrent probes in one process (tests, the
    // daemon's background start) must not share the cgroup.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("agentd-doctor-{}-{n}", std::process::id()));
    let scratch = |what, source| ProbeError::ScratchCgroup {
        what,
        path: dir.clone(),
        source,
    };
    std::fs::create_dir(&dir).map_err(|e| scratch("mkdir", e))?;
    let result = (|| {
        let fd = std::fs::File::open(&dir).map_err(|e| scratch("open", e))?;
        let link = prog
            .attach(fd.as_fd(), CgroupAttachMode::Single)
            .map_err(attach_failed)?;
        prog.detach(link).map_err(ProbeError::from)
    })();
    let _ = std::fs::remove_dir(&dir);
    result.map(|_| "cgroup/connect4 loads and attaches".to_string())
}

/// Installs a user-notification filter in a forked child (the filter would
/// otherwise stay on us) and reports what the child saw.
pub fn seccomp_user_notif() -> Probe {
    probe(
        "seccomp_user_notif",
        seccomp_probe::user_notif_in_child(false)
            .map(str::to_owned)
            .map_err(ProbeError::from),
    )
}

/// Whether a listener accepts SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
pub fn seccomp_sync_wakeup() -> Probe {
    probe(
        "seccomp_sync_wakeup",
        seccomp_probe::user_notif_in_child(true)
            .map(str::to_owned)
            .map_err(ProbeError::from),
    )
}

/// The Landlock ABI version, if any.
pub fn landlock() -> Probe {
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
            Err(ProbeError::Unavailable(io::Error::last_os_error()))
        },
    )
}

/// Whether io_uring can be set up (both backends refuse it to agents).
pub fn io_uring() -> Probe {
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
            Err(ProbeError::Unavailable(io::Error::last_os_error()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_reports_its_error_text() {
        let p = probe(
            "bpf_lsm_active",
            Err(ProbeError::BpfNotActive {
                list: "lockdown,capability".into(),
            }),
        );
        assert!(!p.ok);
        assert_eq!(
            p.detail,
            "`bpf` missing from active LSMs: lockdown,capability"
        );
        let ok = probe("landlock", Ok("ABI 4".into()));
        assert!(ok.ok);
        assert_eq!(ok.detail, "ABI 4");
    }

    #[test]
    fn load_and_attach_failures_name_the_errno() {
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        });
        let text = load_failed(e).to_string();
        assert!(text.starts_with("load failed: EPERM"), "{text}");
    }
}
