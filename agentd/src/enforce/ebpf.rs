//! The embedded eBPF object and how to load it for the running kernel.
use agentd_common::KernelOffsets;
use aya::{Btf, Ebpf, EbpfLoader};

use super::btf_offsets::{self, OffsetError};

/// The eBPF object built by `build.rs` (aya-build) from `agentd-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentd"));

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
}

/// The parsed object plus what loading its programs needs.
pub struct LoadedObject {
    /// The object; programs are loaded individually by the backends.
    pub ebpf: Ebpf,
    /// The running kernel's BTF.
    pub btf: Btf,
    /// Offsets patched into the object.
    pub offsets: KernelOffsets,
}

/// Parses the embedded object for the running kernel, with field offsets
/// resolved from its BTF. Creates the maps; loads no program yet.
pub fn open_for_running_kernel() -> Result<LoadedObject, LoadError> {
    let offsets = btf_offsets::resolve_running_kernel()?;
    let btf = Btf::from_sys_fs()?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("KERNEL_OFFSETS", &offsets, true)
        .load(EBPF_OBJECT)?;
    Ok(LoadedObject { ebpf, btf, offsets })
}
