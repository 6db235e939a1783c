//! Allowed accesses under a tool call's grant, counted in the kernel
//! instead of sent one event each.
//!
//! The first access of each object (file, program, destination) under a
//! grant is still sent as its own event (one audit row, `grant_matched`);
//! every access of it, that first one included, is counted in
//! [`maps::ACCESS_SUMMARIES`](crate::maps::ACCESS_SUMMARIES), a per-CPU hash
//! keyed by [`AccessKey`]. User space merges the CPUs' values
//! ([`merge`]) and writes one `access_summary` row per key when the count
//! changed: periodically, when the grant ends, and at shutdown. Denials
//! are never counted here: each stays its own event.

use crate::EVENT_TARGET_LEN;

/// Entries of [`crate::maps::ACCESS_SUMMARIES`]. When it is full, an access
/// of a new object is sent as its own event (nothing is lost, only not
/// aggregated).
pub const ACCESS_SUMMARY_ENTRIES: u32 = 8192;

/// Key of [`crate::maps::ACCESS_SUMMARIES`]: one object under one grant,
/// seen by one hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKey {
    /// The call (grant handle) that allowed the access; never a baseline.
    pub call_id: u64,
    /// The object: device and inode of a file or program; the address
    /// (16 bytes, IPv4-mapped, in memory order) of an IP destination; the
    /// FNV-1a hash of a unix socket address (and 0).
    pub a: u64,
    pub b: u64,
    /// [`crate::Hook`] as u8.
    pub hook: u8,
    pub _pad: u8,
    /// An IP destination's port (0 otherwise).
    pub port: u16,
    pub _pad2: u32,
}

/// Value of [`crate::maps::ACCESS_SUMMARIES`], one per CPU. A CPU that never
/// saw the key has `count == 0`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AccessSummary {
    /// Accesses counted on this CPU.
    pub count: u64,
    /// CLOCK_BOOTTIME ns of this CPU's first and last access.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The process of this CPU's first access.
    pub tgid: u32,
    pub agent_id: u32,
    /// [`crate::Mode`] as u8 at the first access.
    pub mode: u8,
    pub _pad: [u8; 3],
    /// Number of valid bytes in `target`.
    pub target_len: u32,
    /// The object as its event renders it (a path component, a program's
    /// path, 16 address bytes and the port big-endian).
    pub target: [u8; EVENT_TARGET_LEN],
}

impl AccessSummary {
    /// A value that counted nothing.
    pub const EMPTY: AccessSummary = AccessSummary {
        count: 0,
        first_ns: 0,
        last_ns: 0,
        tgid: 0,
        agent_id: 0,
        mode: 0,
        _pad: [0; 3],
        target_len: 0,
        target: [0; EVENT_TARGET_LEN],
    };

    /// The valid bytes of `target`.
    pub fn target(&self) -> &[u8] {
        &self.target[..(self.target_len as usize).min(EVENT_TARGET_LEN)]
    }
}

/// The CPUs' values of one key as one: counts add up, the first access is
/// the earliest CPU's (with its process and object), the last the latest.
/// `None` when no CPU counted anything.
pub fn merge<'a>(per_cpu: impl IntoIterator<Item = &'a AccessSummary>) -> Option<AccessSummary> {
    let mut out: Option<AccessSummary> = None;
    for v in per_cpu.into_iter().filter(|v| v.count > 0) {
        match &mut out {
            None => out = Some(*v),
            Some(m) => {
                m.count = m.count.saturating_add(v.count);
                if v.first_ns < m.first_ns {
                    m.first_ns = v.first_ns;
                    m.tgid = v.tgid;
                    m.mode = v.mode;
                    m.target_len = v.target_len;
                    m.target = v.target;
                }
                m.last_ns = m.last_ns.max(v.last_ns);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(count: u64, first: u64, last: u64, tgid: u32, target: &[u8]) -> AccessSummary {
        let mut v = AccessSummary::EMPTY;
        v.count = count;
        v.first_ns = first;
        v.last_ns = last;
        v.tgid = tgid;
        v.target[..target.len()].copy_from_slice(target);
        v.target_len = target.len() as u32;
        v
    }

    #[test]
    fn cpus_merge_into_one_count_with_the_earliest_first_access() {
        let cpus = [
            at(3, 200, 900, 11, b"b.txt"),
            AccessSummary::EMPTY,
            at(5, 100, 700, 22, b"a.txt"),
        ];
        let m = merge(&cpus).unwrap();
        assert_eq!(m.count, 8);
        assert_eq!((m.first_ns, m.last_ns), (100, 900));
        assert_eq!(m.tgid, 22, "the process of the earliest access");
        assert_eq!(m.target(), b"a.txt");
    }

    #[test]
    fn nothing_counted_is_none() {
        assert!(merge(&[AccessSummary::EMPTY, AccessSummary::EMPTY]).is_none());
        assert!(merge(&[]).is_none());
    }

    #[test]
    fn an_oversized_length_is_clamped() {
        let mut v = at(1, 1, 1, 1, b"x");
        v.target_len = u32::MAX;
        assert_eq!(v.target().len(), EVENT_TARGET_LEN);
    }
}
