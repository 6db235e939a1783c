//! The BPF LSM backend's loader: opens the embedded object for the running
//! kernel, loads every LSM hook and the process-tree tracepoints, and
//! attaches them. Processes outside agent cgroups return at the first map
//! lookup, so attaching is safe on a live system.
use agentd_common::{lsm::LsmOffsets, FileId};
use aya::{
    programs::{BtfTracePoint, Lsm, ProgramError},
    Ebpf,
};

use super::{
    btf_offsets::{field_offset, OffsetError, VMLINUX_BTF},
    ebpf::{self, programs, LoadError, LoadedObject},
};

/// Resolves [`LsmOffsets`] from the running kernel's BTF.
pub fn resolve_offsets() -> Result<LsmOffsets, OffsetError> {
    let btf = btf_rs::Btf::from_file(VMLINUX_BTF).map_err(|e| OffsetError::Read {
        path: VMLINUX_BTF.into(),
        message: e.to_string(),
    })?;
    let f = |s: &str, m: &str| field_offset(&btf, s, m);
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
    })
}

/// One BPF LSM program in the object, and the kernel hook it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct LsmHook {
    /// Program (function) name in the object.
    pub program: &'static str,
    /// `security_*` hook name, without the `bpf_lsm_` prefix.
    pub hook: &'static str,
}

const fn hook(name: &'static str) -> LsmHook {
    LsmHook {
        program: name,
        hook: name,
    }
}

/// Every LSM hook the lsm backend attaches, in attach order (the program
/// is named after its hook).
pub const LSM_HOOKS: &[LsmHook] = &[
    hook(programs::BPRM_CHECK_SECURITY),
    hook("file_open"),
    hook("path_unlink"),
    hook("path_rmdir"),
    hook("path_mkdir"),
    hook("path_mknod"),
    hook("path_truncate"),
    hook("path_symlink"),
    hook("path_link"),
    hook("path_rename"),
    hook("ptrace_access_check"),
    hook("bpf"),
    hook("task_kill"),
];

/// Tracepoints the lsm backend needs besides the LSM hooks.
pub const TRACEPOINTS: &[(&str, &str)] = &[
    (programs::SCHED_PROCESS_FORK, "sched_process_fork"),
    (programs::SCHED_PROCESS_EXIT, "sched_process_exit"),
];

/// Errors loading or attaching the lsm backend.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The object did not open (BTF, offsets, maps).
    #[error(transparent)]
    Open(#[from] LoadError),
    /// A program is missing from the embedded object.
    #[error("program `{program}` is not in the eBPF object")]
    MissingProgram {
        /// Program name.
        program: &'static str,
    },
    /// The kernel refused to load or attach a program.
    #[error("program `{program}`: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error (carries the verifier log or errno).
        #[source]
        source: ProgramError,
    },
}

/// The attached lsm backend. Dropping it detaches every program.
pub struct LsmBackend {
    obj: LoadedObject,
}

impl LsmBackend {
    /// Loads and attaches every LSM hook and tracepoint.
    pub fn attach() -> Result<Self, LsmError> {
        let mut obj = ebpf::open_for_running_kernel()?;
        for h in LSM_HOOKS {
            let prog: &mut Lsm = obj
                .ebpf
                .program_mut(h.program)
                .ok_or(LsmError::MissingProgram { program: h.program })?
                .try_into()
                .map_err(|source| LsmError::Program {
                    program: h.program,
                    source,
                })?;
            prog.load(h.hook, &obj.btf)
                .map_err(|source| LsmError::Program {
                    program: h.program,
                    source,
                })?;
            prog.attach().map_err(|source| LsmError::Program {
                program: h.program,
                source,
            })?;
        }
        for &(program, tracepoint) in TRACEPOINTS {
            let prog: &mut BtfTracePoint = obj
                .ebpf
                .program_mut(program)
                .ok_or(LsmError::MissingProgram { program })?
                .try_into()
                .map_err(|source| LsmError::Program { program, source })?;
            prog.load(tracepoint, &obj.btf)
                .map_err(|source| LsmError::Program { program, source })?;
            prog.attach()
                .map_err(|source| LsmError::Program { program, source })?;
        }
        tracing::info!(hooks = LSM_HOOKS.len(), "lsm backend attached");
        Ok(Self { obj })
    }

    /// The object, for map access.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.obj.ebpf
    }
}

/// The kernel's `dev_t` (`MAJOR << 20 | MINOR`, as in `sb->s_dev`) for a
/// user-space `st_dev` (glibc's encoding).
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = libc::major(st_dev) as u64;
    let minor = libc::minor(st_dev) as u64;
    (major << 20) | minor
}

/// Device+inode of `path` (following symlinks) as the hooks see it.
pub fn file_id_of(path: &std::path::Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: kernel_dev(m.dev()),
        ino: m.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_offsets_resolve_on_this_kernel_or_skip() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: {VMLINUX_BTF} missing (kernel built without BTF)");
            return;
        }
        let o = resolve_offsets().expect("offsets");
        // struct path is { mnt, dentry }; the others are pointers deep inside.
        assert_eq!((o.path_mnt, o.path_dentry), (0, 8));
        assert_ne!(o.dentry_parent, 0);
        assert_eq!(o.mount_parent % 8, 0);
        assert_ne!(o.kernfs_node_id, 0);
    }

    #[test]
    fn kernel_dev_matches_kernel_encoding() {
        // 259:3 (nvme0n1p3) → st_dev 0x10303, kernel 259 << 20 | 3.
        assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
        // Minors above 255 use the split encoding in st_dev.
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
    }
}
