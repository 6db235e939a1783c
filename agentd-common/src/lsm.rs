//! Types of the BPF LSM backend's own maps: path scopes by directory
//! device+inode, unix-socket destinations by path hash, the processes agents
//! may not signal, and the extra kernel struct offsets those hooks read.

/// Map names (pinned under agentd's pin directory like the shared maps).
pub mod maps {
    /// [`super::ScopeKey`] → [`super::ScopeRule`]: read/write scopes per call.
    pub const PATH_SCOPES: &str = "PATH_SCOPES";
    /// [`super::UnixKey`] → [`crate::GrantExpiry`]: unix socket destinations per call.
    pub const UNIX_RULES: &str = "UNIX_RULES";
    /// tgid → u8: processes agents may not signal, ptrace or otherwise touch (agentd).
    pub const PROTECTED_TGIDS: &str = "PROTECTED_TGIDS";
    /// [`super::ScopeKey`] (call id = [`super::pending_scope_id`]) →
    /// [`super::PendingScope`]: which of an agent's pending grants hold a
    /// scope on each directory or file, so a hook finds every pending grant
    /// covering a path in one walk (one lookup per level, not one per grant).
    pub const PENDING_SCOPES: &str = "PENDING_SCOPES";
    /// [`super::ScopeKey`] (call id = [`super::protected_scope_id`]) → u8
    /// ([`super::PROTECTED_SELF`] | [`super::PROTECTED_HOLDER`]): an
    /// agent's protected files and directories, and the directories above
    /// them, by device+inode (a hard link shares the inode).
    pub const PROTECTED_INODES: &str = "PROTECTED_INODES";
    /// [`super::ScopeKey`] (the protected inode) → [`super::ProtectedWrite`]:
    /// the protected files a call may write (call id = its handle), or that
    /// an agent's pending grants may (call id = [`super::pending_scope_id`]).
    pub const PROTECTED_WRITES: &str = "PROTECTED_WRITES";
}

/// The [`ScopeKey::call_id`] of an agent's entries in
/// [`maps::PROTECTED_INODES`] (bit 61: bit 62 is the pending scopes', bit
/// 63 the baseline's, call handles are small counters).
pub const fn protected_scope_id(agent_id: u32) -> u64 {
    (1u64 << 61) | agent_id as u64
}

/// [`maps::PROTECTED_INODES`]: this file or directory is protected (a
/// directory with its whole subtree): no write reaches it unless the
/// call's grant names it as a protected write.
pub const PROTECTED_SELF: u8 = 1;
/// [`maps::PROTECTED_INODES`]: a directory holding a protected path: its
/// own name may not be removed, renamed away or replaced (or the agent
/// could move the protected file aside and put its own in its place).
pub const PROTECTED_HOLDER: u8 = 2;
/// [`maps::PROTECTED_INODES`] at (dev 0, ino 0): the agent has protected
/// paths at all (the hooks walk for them only then).
pub const PROTECTED_ANY: u8 = 4;

/// Bytes of a file name the protected-name hash covers (the hooks read a
/// name into a 64-byte buffer with its NUL): a longer name hashes its
/// first bytes, so at worst another long name is protected too.
pub const PROTECTED_NAME_BYTES: usize = 63;

/// Top bit of a protected name's stand-in inode number (see
/// [`protected_name_ino`]).
pub const PROTECTED_NAME_INO: u64 = 1 << 63;

/// FNV-1a of a file name's first [`PROTECTED_NAME_BYTES`] bytes, as the
/// hooks hash a dentry's name.
pub const fn protected_name_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() && i < PROTECTED_NAME_BYTES {
        h = fnv1a_step(h, name[i]);
        i += 1;
    }
    h
}

/// The stand-in inode number of the name `name_hash` in the directory
/// `dir_ino` (on that directory's device): a protected path is protected
/// by name as well as by inode, so a protected file that does not exist
/// yet cannot be created, and one replaced under a new inode stays
/// protected. Keyed in [`maps::PROTECTED_INODES`] and
/// [`maps::PROTECTED_WRITES`] like an inode.
pub const fn protected_name_ino(dir_ino: u64, name_hash: u64) -> u64 {
    PROTECTED_NAME_INO | ((name_hash ^ dir_ino.wrapping_mul(FNV_PRIME)) >> 1)
}

/// Value of [`maps::PROTECTED_WRITES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtectedWrite {
    /// A call's entry: expiry in CLOCK_BOOTTIME ns; 0 = none.
    pub expires_at_ns: u64,
    /// An agent's pending entry: the pending slots (a bit each) whose
    /// grants name this file as a protected write.
    pub slots: u32,
    pub _pad: u32,
}

/// The [`ScopeKey::call_id`] of an agent's pending scopes (bit 62; bit 63
/// is the baseline's, call handles are small counters).
pub const fn pending_scope_id(agent_id: u32) -> u64 {
    (1u64 << 62) | agent_id as u64
}

/// Value of [`maps::PENDING_SCOPES`]: the pending slots (a bit each) whose
/// grants read, or write, this directory or file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingScope {
    pub read_slots: u32,
    pub write_slots: u32,
}

impl PendingScope {
    /// The slots holding `access`, as [`ScopeRule::access`] is matched
    /// (a scope's bits are the rule's: user space sets read with write).
    #[inline(always)]
    pub fn slots(&self, access: u8) -> u32 {
        if access & ACCESS_WRITE != 0 {
            self.write_slots
        } else if access & ACCESS_READ != 0 {
            self.read_slots
        } else {
            0
        }
    }

    /// Adds `slot` for a scope rule's `access` bits.
    pub fn add(&mut self, slot: u32, access: u8) {
        if access & ACCESS_READ != 0 {
            self.read_slots |= 1 << slot;
        }
        if access & ACCESS_WRITE != 0 {
            self.write_slots |= 1 << slot;
        }
    }
}

/// A scope grants reading.
pub const ACCESS_READ: u8 = 1;
/// A scope grants writing (and destructive path operations); implies read.
pub const ACCESS_WRITE: u8 = 2;
/// The entry is a unix socket file the call may connect (or send) to,
/// matched on the socket's own device+inode (never inherited by a walk).
pub const ACCESS_CONNECT: u8 = 4;

/// Inode number of the [`ScopeKey`] that stands for `/proc/self`: the asking
/// process's own `/proc/<pid>` directory, checked against the procfs inode's
/// pid (no real inode is 0).
pub const PROC_SELF_INO: u64 = 0;

/// `PROC_SUPER_MAGIC`.
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// How many path components (dentries, mount crossings included) a hook
/// walks up from a file looking for a granted scope directory.
pub const MAX_SCOPE_DEPTH: u32 = 32;

/// Key of [`maps::PATH_SCOPES`]: a scope is a directory (or file) identified
/// by device+inode, so renaming or symlinking a path does not move it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    /// Call id (or the agent's baseline id).
    pub call_id: u64,
    /// Kernel `dev_t` (`sb->s_dev`).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// Value of [`maps::PATH_SCOPES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeRule {
    /// Expiry in CLOCK_BOOTTIME ns; 0 = none.
    pub expires_at_ns: u64,
    /// [`ACCESS_READ`] | [`ACCESS_WRITE`].
    pub access: u8,
    pub _pad: [u8; 7],
}

/// Key of [`maps::UNIX_RULES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixKey {
    /// Call id (or the agent's baseline id).
    pub call_id: u64,
    /// [`unix_path_hash`] of the socket address.
    pub path_hash: u64,
}

/// Longest `sun_path`.
pub const UNIX_PATH_MAX: usize = 108;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a step, shared by user space and the kernel side.
#[inline(always)]
pub const fn fnv1a_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Hash of a unix socket destination as the `socket_connect` hook computes
/// it: a filesystem socket hashes its path bytes (up to the first NUL); an
/// abstract socket (`sun_path[0] == 0`) hashes `@` followed by its name.
pub const fn unix_path_hash(name: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() && i < UNIX_PATH_MAX {
        h = fnv1a_step(h, name[i]);
        i += 1;
    }
    h
}

/// The FNV-1a start value.
pub const UNIX_HASH_START: u64 = FNV_OFFSET;

/// Extra kernel struct offsets the LSM hooks read (resolved from BTF by user
/// space like [`crate::KernelOffsets`], written into `LSM_OFFSETS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmOffsets {
    /// `path.mnt`
    pub path_mnt: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `dentry.d_name` + `qstr.name`: the component's name pointer.
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mount.mnt` (the embedded vfsmount)
    pub mount_mnt: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id`
    pub kernfs_node_id: u32,
    /// `msghdr.msg_name`
    pub msghdr_name: u32,
    /// `msghdr.msg_namelen`
    pub msghdr_namelen: u32,
    /// `file.f_flags` (where `__FMODE_EXEC` marks the kernel's exec opens)
    pub file_flags: u32,
    /// `qstr.name`
    pub qstr_name: u32,
    /// `super_block.s_magic`
    pub sb_magic: u32,
    /// `proc_inode.vfs_inode` (the embedded inode)
    pub proc_inode_vfs_inode: u32,
    /// `proc_inode.pid`
    pub proc_inode_pid: u32,
    /// `pid.numbers` (`numbers[0].nr` is the pid in the initial namespace)
    pub pid_numbers: u32,
    /// `unix_sock.path` (a `struct path`; null dentry for abstract sockets)
    pub unix_sock_path: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`
    pub sock_family: u32,
    /// `sock.sk_peer_pid` (the listener's pid on a listening unix socket)
    pub sock_peer_pid: u32,
    /// `task_struct.cred`
    pub task_cred: u32,
    /// `task_struct.real_cred`
    pub task_real_cred: u32,
    /// 1 when `inode_setattr` takes a `mnt_idmap` first (kernels after 6.2).
    pub setattr_idmap: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, valid for any bit pattern.
    unsafe impl aya::Pod for super::ScopeKey {}
    unsafe impl aya::Pod for super::ScopeRule {}
    unsafe impl aya::Pod for super::PendingScope {}
    unsafe impl aya::Pod for super::UnixKey {}
    unsafe impl aya::Pod for super::ProtectedWrite {}
    unsafe impl aya::Pod for super::LsmOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a() {
        // FNV-1a 64 of "a" is a well-known vector.
        assert_eq!(unix_path_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(unix_path_hash(b""), FNV_OFFSET);
    }

    #[test]
    fn protected_names_hash_their_first_bytes_and_stand_apart_from_inodes() {
        assert_eq!(protected_name_hash(b"SOUL.md"), unix_path_hash(b"SOUL.md"));
        let long = [b'x'; 80];
        assert_eq!(
            protected_name_hash(&long),
            protected_name_hash(&long[..PROTECTED_NAME_BYTES])
        );
        let a = protected_name_ino(12, protected_name_hash(b"SOUL.md"));
        assert_ne!(a & PROTECTED_NAME_INO, 0);
        assert_ne!(a, protected_name_ino(13, protected_name_hash(b"SOUL.md")));
        assert_ne!(a, protected_name_ino(12, protected_name_hash(b"RULES.md")));
    }

    #[test]
    fn pending_scope_slots_follow_the_rule_access() {
        let mut scope = PendingScope::default();
        scope.add(1, ACCESS_READ);
        scope.add(3, ACCESS_READ | ACCESS_WRITE);
        scope.add(5, ACCESS_CONNECT);
        assert_eq!(scope.slots(ACCESS_READ), 0b1010, "both read scopes");
        assert_eq!(scope.slots(ACCESS_WRITE), 0b1000, "only the write scope");
        assert_eq!(scope.slots(ACCESS_CONNECT), 0, "connect is never walked");
    }

    #[test]
    fn pending_scope_ids_never_meet_baselines_or_handles() {
        let id = pending_scope_id(7);
        assert_ne!(id, crate::baseline_call_id(7));
        assert_ne!(protected_scope_id(7), id);
        assert_ne!(protected_scope_id(7), crate::baseline_call_id(7));
        assert_ne!(id & (1 << 62), 0);
        assert_eq!(id & (1 << 63), 0);
    }
}
