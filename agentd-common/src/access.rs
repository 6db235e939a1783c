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
    /// Where the scope walk last found the scope that allowed this object
    /// on this CPU ([`scope_hint()`]; 0 = nowhere known). Set for a bound
    /// call's reads (`file_open`) only.
    pub scope_hint: u8,
    pub _pad: [u8; 2],
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
        scope_hint: 0,
        _pad: [0; 2],
        target_len: 0,
        target: [0; EVENT_TARGET_LEN],
    };

    /// The valid bytes of `target`.
    pub fn target(&self) -> &[u8] {
        &self.target[..(self.target_len as usize).min(EVENT_TARGET_LEN)]
    }
}

/// How many directory levels above a file a [`scope_hint`] can name: the
/// kernel re-checks a hint by stepping up that many levels (a bounded loop
/// the verifier walks once per level), so scopes further up are found by
/// the full walk every time.
pub const SCOPE_HINT_LEVELS: u32 = 8;

const HINT_KNOWN: u8 = 0x80;
const HINT_BASELINE: u8 = 0x40;
const HINT_LEVEL: u8 = 0x1f;

/// A hint of where an allowed read's scope is: `level` directories above
/// the file (0 = the file itself), held by the agent's baseline or by the
/// bound call. 0 (no hint) when the level is beyond [`SCOPE_HINT_LEVELS`].
/// A hint is never trusted: the kernel asks `PATH_SCOPES` again at that
/// level of the file's current path before it skips the walk.
pub const fn scope_hint(level: u32, baseline: bool) -> u8 {
    if level >= SCOPE_HINT_LEVELS {
        return 0;
    }
    HINT_KNOWN | if baseline { HINT_BASELINE } else { 0 } | level as u8
}

/// The (level, baseline) a [`scope_hint`] names; `None` for no hint or one
/// whose level is out of range (a value no kernel of this build wrote).
pub const fn hint_level(hint: u8) -> Option<(u32, bool)> {
    if hint & HINT_KNOWN == 0 {
        return None;
    }
    let level = (hint & HINT_LEVEL) as u32;
    if level >= SCOPE_HINT_LEVELS {
        return None;
    }
    Some((level, hint & HINT_BASELINE != 0))
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
    fn scope_hints_round_trip_and_far_levels_give_none() {
        for level in 0..SCOPE_HINT_LEVELS {
            for baseline in [false, true] {
                let h = scope_hint(level, baseline);
                assert_ne!(h, 0);
                assert_eq!(hint_level(h), Some((level, baseline)));
            }
        }
        assert_eq!(scope_hint(SCOPE_HINT_LEVELS, false), 0);
        assert_eq!(scope_hint(u32::MAX, true), 0);
        assert_eq!(
            hint_level(0),
            None,
            "a zeroed value (another CPU's) has no hint"
        );
        assert_eq!(hint_level(HINT_BASELINE | 3), None, "not marked known");
        assert_eq!(hint_level(HINT_KNOWN | 0x1f), None, "level out of range");
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
