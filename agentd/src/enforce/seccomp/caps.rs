//! The supervisor thread's capabilities. It acts for the agent (a confused
//! deputy if it acted with root's powers): after taking the agent's fsuid,
//! fsgid and groups it keeps only CAP_BPF (EXEC_EXPECT updates on kernels
//! that still check it) effective, and CAP_SYS_PTRACE permitted, raised
//! only around reading the agent's memory and opening its `/proc/TID`
//! handles (cwd, fds, root) — never while resolving or opening a path the
//! agent named. Capabilities are per thread: the rest of agentd keeps its own.
use std::{cell::Cell, io};

const CAP_SYS_PTRACE: u32 = 19;
const CAP_BPF: u32 = 39;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

thread_local! {
    static DROPPED: Cell<bool> = const { Cell::new(false) };
}

/// Bit of capability `cap` in the two 32-bit words of a v3 set.
fn set_of(caps: &[u32]) -> [u32; 2] {
    let mut s = [0u32; 2];
    for c in caps {
        s[(*c / 32) as usize] |= 1 << (c % 32);
    }
    s
}

fn capset(effective: &[u32], permitted: &[u32]) -> io::Result<()> {
    let e = set_of(effective);
    let p = set_of(permitted);
    let mut hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: e[0],
            permitted: p[0],
            inheritable: 0,
        },
        Data {
            effective: e[1],
            permitted: p[1],
            inheritable: 0,
        },
    ];
    // SAFETY: capset on the calling thread with structs we own.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability of the calling thread but the deputy's two
/// (irreversibly for this thread).
pub fn drop_to_deputy() -> io::Result<()> {
    capset(&[CAP_BPF], &[CAP_BPF, CAP_SYS_PTRACE])?;
    DROPPED.with(|d| d.set(true));
    Ok(())
}

/// Runs `f` with CAP_SYS_PTRACE effective (on a thread that dropped to the
/// deputy set; elsewhere `f` runs with the thread's capabilities as they are).
pub fn with_ptrace<T>(f: impl FnOnce() -> T) -> T {
    if !DROPPED.with(Cell::get) {
        return f();
    }
    let raised = capset(&[CAP_BPF, CAP_SYS_PTRACE], &[CAP_BPF, CAP_SYS_PTRACE]).is_ok();
    let out = f();
    if raised {
        // Lowering what was just raised cannot fail (a subset of permitted).
        let _ = capset(&[CAP_BPF], &[CAP_BPF, CAP_SYS_PTRACE]);
    }
    out
}

/// The calling thread's effective capability words (tests, diagnostics).
pub fn effective() -> io::Result<u64> {
    let mut hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget into structs we own.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_thread_keeps_only_the_deputy_set_and_raises_ptrace_briefly() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (capabilities to drop)");
            return;
        }
        std::thread::spawn(|| {
            drop_to_deputy().expect("capset");
            assert_eq!(effective().unwrap(), 1 << CAP_BPF);
            let inside = with_ptrace(|| effective().unwrap());
            assert_eq!(inside, (1 << CAP_BPF) | (1 << CAP_SYS_PTRACE));
            assert_eq!(effective().unwrap(), 1 << CAP_BPF);
            // CAP_SYS_ADMIN (21) is gone for good on this thread.
            assert!(capset(&[21], &[21]).is_err());
        })
        .join()
        .unwrap();
        // Other threads keep theirs.
        assert_ne!(effective().unwrap() & (1 << 21), 0);
    }
}
