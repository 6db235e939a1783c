//! Resolves the kernel struct field offsets our eBPF programs read, from the
//! running kernel's BTF. Rust eBPF has no CO-RE relocations yet; this gives
//! the same portability across kernels (6.1 in the VM, 6.18 here).
use std::path::Path;

use agentd_common::{lsm::LsmOffsets, KernelOffsets};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors resolving offsets.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot read kernel BTF at {path}: {message}")]
    Read { path: String, message: String },
    #[error("kernel BTF has no struct `{name}`")]
    NoStruct { name: String },
    #[error("kernel BTF has no function `{name}` (an LSM hook this kernel lacks)")]
    NoFunc { name: String },
    #[error("kernel BTF struct `{strukt}` has no field `{field}`")]
    NoField { strukt: String, field: String },
    #[error("field `{strukt}.{field}` is a bitfield or not byte-aligned")]
    Unaligned { strukt: String, field: String },
}

impl From<super::btf_scan::BtfScanError> for OffsetError {
    fn from(e: super::btf_scan::BtfScanError) -> Self {
        use super::btf_scan::BtfScanError as E;
        match e {
            E::NoStruct { name } => OffsetError::NoStruct { name },
            E::NoField { strukt, field } => OffsetError::NoField { strukt, field },
            E::Unaligned { strukt, field } => OffsetError::Unaligned { strukt, field },
            E::NoFunc { name } => OffsetError::NoFunc { name },
            other => OffsetError::Read {
                path: VMLINUX_BTF.into(),
                message: other.to_string(),
            },
        }
    }
}

/// Loads the running kernel's BTF and resolves every offset we need (once
/// per process: the kernel does not change under us).
pub fn resolve_running_kernel() -> Result<KernelOffsets, OffsetError> {
    static CACHE: std::sync::OnceLock<KernelOffsets> = std::sync::OnceLock::new();
    if let Some(o) = CACHE.get() {
        return Ok(*o);
    }
    let o = resolve_from_file(Path::new(VMLINUX_BTF))?;
    Ok(*CACHE.get_or_init(|| o))
}

/// Scans a raw BTF file (see [`super::btf_scan`]: one linear pass, no type graph).
pub fn scan_file(path: &Path) -> Result<super::btf_scan::BtfScan, OffsetError> {
    let raw = std::fs::read(path).map_err(|e| OffsetError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(super::btf_scan::BtfScan::parse(&raw)?)
}

/// Resolves offsets from a BTF file.
pub fn resolve_from_file(path: &Path) -> Result<KernelOffsets, OffsetError> {
    let btf = scan_file(path)?;
    let f = |s: &str, m: &str| btf.field_offset(s, m).map_err(OffsetError::from);
    Ok(KernelOffsets {
        bprm_file: f("linux_binprm", "file")?,
        bprm_filename: f("linux_binprm", "filename")?,
        file_inode: f("file", "f_inode")?,
        file_mode: f("file", "f_mode")?,
        file_path: f("file", "f_path")?,
        inode_ino: f("inode", "i_ino")?,
        inode_sb: f("inode", "i_sb")?,
        sb_dev: f("super_block", "s_dev")?,
        task_tgid: f("task_struct", "tgid")?,
        task_start_boottime: f("task_struct", "start_boottime")?,
        task_mm: f("task_struct", "mm")?,
        mm_arg_start: f("mm_struct", "arg_start")?,
        mm_arg_end: f("mm_struct", "arg_end")?,
    })
}

/// Resolves [`LsmOffsets`] from the running kernel's BTF (once per process:
/// the kernel does not change under us).
pub fn resolve_lsm_offsets() -> Result<LsmOffsets, OffsetError> {
    static CACHE: std::sync::OnceLock<LsmOffsets> = std::sync::OnceLock::new();
    if let Some(o) = CACHE.get() {
        return Ok(*o);
    }
    let o = resolve_lsm_uncached()?;
    Ok(*CACHE.get_or_init(|| o))
}

fn resolve_lsm_uncached() -> Result<LsmOffsets, OffsetError> {
    let btf = scan_file(Path::new(VMLINUX_BTF))?;
    let f = |s: &str, m: &str| btf.field_offset(s, m).map_err(OffsetError::from);
    Ok(LsmOffsets {
        path_mnt: f("path", "mnt")?,
        path_dentry: f("path", "dentry")?,
        dentry_parent: f("dentry", "d_parent")?,
        dentry_inode: f("dentry", "d_inode")?,
        dentry_name: f("dentry", "d_name")? + f("qstr", "name")?,
        vfsmount_root: f("vfsmount", "mnt_root")?,
        mount_mnt: f("mount", "mnt")?,
        mount_parent: f("mount", "mnt_parent")?,
        mount_mountpoint: f("mount", "mnt_mountpoint")?,
        task_cgroups: f("task_struct", "cgroups")?,
        css_set_dfl_cgrp: f("css_set", "dfl_cgrp")?,
        cgroup_kn: f("cgroup", "kn")?,
        kernfs_node_id: f("kernfs_node", "id")?,
        msghdr_name: f("msghdr", "msg_name")?,
        msghdr_namelen: f("msghdr", "msg_namelen")?,
        file_flags: f("file", "f_flags")?,
        qstr_name: f("qstr", "name")?,
        sb_magic: f("super_block", "s_magic")?,
        proc_inode_vfs_inode: f("proc_inode", "vfs_inode")?,
        proc_inode_pid: f("proc_inode", "pid")?,
        pid_numbers: f("pid", "numbers")? + f("upid", "nr")?,
        unix_sock_path: f("unix_sock", "path")?,
        socket_sk: f("socket", "sk")?,
        sock_family: f("sock", "__sk_common")? + f("sock_common", "skc_family")?,
        sock_peer_pid: f("sock", "sk_peer_pid")?,
        task_cred: f("task_struct", "cred")?,
        task_real_cred: f("task_struct", "real_cred")?,
        // 6.1: (dentry, attr); later kernels put a mnt_idmap first. A kernel
        // without BPF LSM has no such function (and never loads the hook).
        setattr_idmap: u32::from(btf.func_param_count("bpf_lsm_inode_setattr") == Ok(3)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_offsets_on_this_kernel_or_skips() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: {VMLINUX_BTF} missing (kernel built without BTF)");
            return;
        }
        let o = resolve_running_kernel().expect("offsets");
        // Pointers are 8-byte aligned; nothing we read sits at offset 0 except
        // possibly a struct's first field, and f_inode/i_sb never are.
        assert_ne!(o.file_inode, 0);
        assert_eq!(o.file_inode % 8, 0);
        assert_eq!(o.inode_sb % 8, 0);
        assert_ne!(o.task_tgid, 0);
        assert_eq!(o.task_start_boottime % 8, 0);
        assert_ne!(o.task_start_boottime, 0);
    }
}
