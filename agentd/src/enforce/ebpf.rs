//! The embedded eBPF object and how to load it for the running kernel.
use std::path::{Path, PathBuf};

use agentd_common::KernelOffsets;
use aya::{Btf, Ebpf, EbpfLoader};

use super::btf_offsets::{self, OffsetError};

/// The eBPF object built by `build.rs` (aya-build) from `agentd-ebpf`
/// (empty in fuzz builds, which never load it).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentd-ebpf"));

/// Program names inside [`EBPF_OBJECT`] (the Rust function names).
pub mod programs {
    /// BPF LSM exec gate.
    pub const BPRM_CHECK_SECURITY: &str = "bprm_check_security";
    /// Binding inheritance at fork.
    pub const SCHED_PROCESS_FORK: &str = "sched_process_fork";
    /// Binding cleanup at exit.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// Kernel-side exec verification (seccomp backend).
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// cgroup network gates.
    pub const CONNECT4: &str = "connect4";
    /// cgroup network gates.
    pub const CONNECT6: &str = "connect6";
    /// cgroup network gates.
    pub const SENDMSG4: &str = "sendmsg4";
    /// cgroup network gates.
    pub const SENDMSG6: &str = "sendmsg6";
}

/// Errors opening the eBPF object.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error("kernel BTF unavailable: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("cannot load the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("bpffs at {path}: {message}")]
    Bpffs { path: String, message: String },
    /// A map could not be pinned (or its pin re-used): which pin, and the
    /// kernel's answer (aya's own message names neither).
    #[error("cannot load the eBPF object: pinning map {map} at {path}: {cause}")]
    MapPin {
        map: String,
        path: String,
        cause: String,
    },
}

/// `e` and every error under it, `: `-separated.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// A map-pinning failure of [`open_pinned`] as [`LoadError::MapPin`].
fn pin_failure(e: aya::EbpfError, pin_dir: &Path) -> LoadError {
    match e {
        aya::EbpfError::MapError(aya::maps::MapError::PinError { name, error }) => {
            let map = name.unwrap_or_else(|| "?".into());
            LoadError::MapPin {
                path: pin_dir.join(&map).display().to_string(),
                map,
                cause: with_causes(&error),
            }
        }
        other => LoadError::Object(other),
    }
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from statfs(2).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at [`BPFFS`] unless it is already there.
pub fn ensure_bpffs() -> Result<(), LoadError> {
    let is_bpffs =
        |p: &str| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if is_bpffs(BPFFS) {
        return Ok(());
    }
    let err = |message: String| LoadError::Bpffs {
        path: BPFFS.into(),
        message,
    };
    std::fs::create_dir_all(BPFFS).map_err(|e| err(e.to_string()))?;
    nix::mount::mount(
        Some("bpffs"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| err(format!("mount failed: {e}")))?;
    Ok(())
}

/// Removes a scratch pin directory (and the pins in it) when dropped.
pub struct ScratchPins(PathBuf);

impl Drop for ScratchPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The parsed object plus what loading its programs needs.
pub struct LoadedObject {
    /// The object; programs are loaded individually by the backends.
    pub ebpf: Ebpf,
    /// The running kernel's BTF.
    pub btf: Btf,
    /// Offsets patched into the object.
    pub offsets: KernelOffsets,
    /// Set when the maps were pinned in a throw-away directory.
    pub scratch: Option<ScratchPins>,
}

/// Parses the embedded object for the running kernel, with field offsets
/// resolved from its BTF. Creates the maps; loads no program yet. The maps are
/// pinned by name, so this (probe) use pins them in a scratch directory that
/// is removed with the returned object and never touches a live daemon's maps.
pub fn open_for_running_kernel() -> Result<LoadedObject, LoadError> {
    ensure_bpffs()?;
    // Unique per call: concurrent probes in one process (tests, the daemon's
    // background start) would otherwise race to pin into the same directory.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(BPFFS).join(format!("agentd-probe-{}-{n}", std::process::id()));
    // A directory of this name can only be left by a dead process that had
    // our pid (pids wrap): its pins may be of another object version, which
    // would make pinning fail. Nothing live owns it.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| LoadError::Bpffs {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let scratch = ScratchPins(dir.clone());
    let mut obj = open_pinned(&dir)?;
    obj.scratch = Some(scratch);
    Ok(obj)
}

/// Like [`open_for_running_kernel`], but the maps are pinned in (and, when
/// already pinned there, re-used from) `pin_dir` — how agentd keeps its
/// grants and bindings across a restart.
pub fn open_pinned(pin_dir: &Path) -> Result<LoadedObject, LoadError> {
    let offsets = btf_offsets::resolve_running_kernel()?;
    let btf = Btf::from_sys_fs()?;
    let lsm_offsets = btf_offsets::resolve_lsm_offsets()?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .default_map_pin_directory(pin_dir)
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .override_global("LSM_OFFSETS", &lsm_offsets, true)
        .load(EBPF_OBJECT)
        .map_err(|e| pin_failure(e, pin_dir))?;
    Ok(LoadedObject {
        ebpf,
        btf,
        offsets,
        scratch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_failure_names_the_pin_and_the_kernel_answer() {
        let e = aya::EbpfError::MapError(aya::maps::MapError::PinError {
            name: Some("CLAIMANTS".into()),
            error: aya::pin::PinError::SyscallError(aya::sys::SyscallError {
                call: "BPF_OBJ_PIN",
                io_error: std::io::Error::from_raw_os_error(libc::EEXIST),
            }),
        });
        let text = pin_failure(e, Path::new("/sys/fs/bpf/agentd-x")).to_string();
        assert!(
            text.contains("pinning map CLAIMANTS at /sys/fs/bpf/agentd-x/CLAIMANTS"),
            "{text}"
        );
        assert!(text.contains("BPF_OBJ_PIN"), "{text}");
        assert!(text.contains("File exists"), "{text}");
    }
}
