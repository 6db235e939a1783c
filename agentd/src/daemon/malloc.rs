//! How many heaps glibc's allocator keeps for the daemon's threads.
//!
//! glibc gives a thread that finds the heaps busy a heap of its own, up to
//! eight per CPU, and memory freed in one heap is reused only by the threads
//! on it. agentd's threads (the API's workers, the audit writer, the
//! supervisors, the sweeps) each came to touch their own: under a steady
//! load its resident memory rose by tens of MB in steps, then stayed (the
//! soak benchmark: 56 → 92 MB in 40 s with the default; 54 → 65 MB, flat
//! after 20 s, with two heaps). Few heaps keep freed memory in use.

/// Heaps per CPU (and the least), unless `MALLOC_ARENA_MAX` says otherwise.
const ARENAS_PER_CPU: usize = 1;
const MIN_ARENAS: usize = 2;

/// Limits the allocator's heaps; call before the daemon starts its threads.
/// An operator's `MALLOC_ARENA_MAX` wins (glibc has already applied it).
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = (cpus * ARENAS_PER_CPU).max(MIN_ARENAS);
    set_arena_max(arenas);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: usize) {
    let n = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes
    // any positive count.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, n) } == 0 {
        tracing::warn!(
            arenas,
            "the allocator refused a heap limit; memory may grow in steps"
        );
    } else {
        tracing::debug!(arenas, "allocator heaps limited");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) {}
