//! Kernel enforcement: the embedded eBPF object, its loader, and the
//! backends that turn grants into kernel decisions.

pub mod btf_offsets;
pub mod cgroup_root;
pub mod ebpf;
pub mod seccomp_probe;

pub use cgroup_root::cgroup_root;
pub mod lsm;
