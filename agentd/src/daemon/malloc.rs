//! How glibc's allocator keeps the daemon's memory: how many heaps, and
//! where large blocks come from.
//!
//! glibc gives a thread that finds the heaps busy a heap of its own, up to
//! eight per CPU, and memory freed in one heap is reused only by the threads
//! on it. agentd's threads (the API's workers, the audit writer, the
//! supervisors, the sweeps) each came to touch their own: under a steady
//! load its resident memory rose by tens of MB in steps, then stayed (the
//! soak benchmark: 56 → 92 MB in 40 s with the default; 54 → 65 MB, flat
//! after 20 s, with two heaps). Few heaps keep freed memory in use.
//!
//! glibc also moves its mmap threshold up to the largest block freed so
//! far: after agentd parsed the kernel's BTF at start (blocks of MBs),
//! every later block below that size came from a heap, and a burst of them
//! (receipt renders, a sweep of spent grants) left the heap at its peak for
//! good. A fixed threshold gives blocks of 128 KiB and more their own
//! mapping, returned when freed (the soak benchmark: 62-73 MB at the end of
//! a minute, in steps of 8-10 MB at random times, became 49-55 MB).

/// Heaps per CPU (and the least), unless `MALLOC_ARENA_MAX` says otherwise.
const ARENAS_PER_CPU: usize = 1;
const MIN_ARENAS: usize = 2;

/// Blocks at least this large get a mapping of their own.
const MMAP_THRESHOLD: usize = 128 * 1024;

/// Limits the allocator's heaps and fixes its mmap threshold; call before
/// the daemon starts its threads. An operator's `MALLOC_ARENA_MAX` or
/// `MALLOC_MMAP_THRESHOLD_` wins (glibc has already applied it).
pub fn configure() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let arenas = (cpus * ARENAS_PER_CPU).max(MIN_ARENAS);
        set(
            Param::ArenaMax,
            arenas,
            "heap limit; memory may grow in steps",
        );
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // A set threshold also stops glibc from moving it.
        set(
            Param::MmapThreshold,
            MMAP_THRESHOLD,
            "mmap threshold; memory may stay at its peak",
        );
    }
}

/// The allocator parameters agentd sets.
#[derive(Debug, Clone, Copy)]
enum Param {
    ArenaMax,
    MmapThreshold,
}

/// Sets `param` to `value`; warns with `what` if the allocator refuses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(param: Param, value: usize, what: &str) {
    let p = match param {
        Param::ArenaMax => libc::M_ARENA_MAX,
        Param::MmapThreshold => libc::M_MMAP_THRESHOLD,
    };
    let n = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; both take any
    // positive value.
    if unsafe { libc::mallopt(p, n) } == 0 {
        tracing::warn!(?param, value, "the allocator refused a {what}");
    } else {
        tracing::debug!(?param, value, "allocator parameter set");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_param: Param, _value: usize, _what: &str) {}
