//! The supervisor thread's capabilities. It acts for the agent (a confused
//! deputy if it acted with root's powers): after taking the agent's fsuid,
//! fsgid and groups it keeps only CAP_BPF (EXEC_EXPECT updates on kernels
//! that still check it) effective, and CAP_SYS_PTRACE permitted, raised
//! only around reading the agent's memory and opening its `/proc/TID`
//! handles (cwd, fds, root) — never while resolving or opening a path the
//! agent named. CAP_SETUID and CAP_SETGID are permitted too, raised only to
//! take the agent's effective uid and gid around a socket operation the
//! supervisor performs for it ([`with_agent_ids`]: the peer then sees the
//! agent's credentials, not root's), which itself runs with no capability.
//! Capabilities are per thread: the rest of agentd keeps its own.
use std::{cell::Cell, io};

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
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
    capset(&[CAP_BPF], PERMITTED)?;
    DROPPED.with(|d| d.set(true));
    Ok(())
}

/// Runs `f` with CAP_SYS_PTRACE effective (on a thread that dropped to the
/// deputy set; elsewhere `f` runs with the thread's capabilities as they are).
pub fn with_ptrace<T>(f: impl FnOnce() -> T) -> T {
    if !DROPPED.with(Cell::get) {
        return f();
    }
    let raised = capset(&[CAP_BPF, CAP_SYS_PTRACE], PERMITTED).is_ok();
    let out = f();
    if raised {
        // Lowering what was just raised cannot fail (a subset of permitted).
        let _ = capset(&[CAP_BPF], PERMITTED);
    }
    out
}

/// What a deputy thread keeps permitted.
const PERMITTED: &[u32] = &[CAP_BPF, CAP_SYS_PTRACE, CAP_SETUID, CAP_SETGID];

/// Runs `f` with the effective uid and gid `uid`/`gid` and no capability
/// (on a deputy thread whose real and saved uid stay root), then restores
/// root's effective ids, the fs ids `uid`/`gid` and the deputy's
/// capabilities. A socket connected, bound or put to listen inside `f`
/// carries the agent's credentials (SO_PEERCRED, SCM_CREDENTIALS), never
/// root's. Fails closed: if the ids cannot be taken, `f` does not run.
pub fn with_agent_ids<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: raw per-thread credential syscalls with integer arguments.
    let sys = |nr: libc::c_long, a: u32, b: u32, c: u32| unsafe { libc::syscall(nr, a, b, c) };
    const KEEP: u32 = u32::MAX;
    if DROPPED.with(Cell::get) {
        capset(&[CAP_BPF, CAP_SETUID, CAP_SETGID], PERMITTED)?;
    }
    if sys(libc::SYS_setresgid, KEEP, gid, KEEP) != 0 {
        let e = io::Error::last_os_error();
        restore_root(uid, gid);
        return Err(e);
    }
    // Leaving euid 0 clears the effective set: `f` runs with none.
    if sys(libc::SYS_setresuid, KEEP, uid, KEEP) != 0 {
        let e = io::Error::last_os_error();
        restore_root(uid, gid);
        return Err(e);
    }
    let out = f();
    restore_root(uid, gid);
    Ok(out)
}

/// Back to euid/egid 0 (the saved ids), fs ids `uid`/`gid`, and the
/// deputy's effective set. Returning to euid 0 cannot fail: the saved uid is 0.
fn restore_root(uid: u32, gid: u32) {
    // SAFETY: raw per-thread credential syscalls with integer arguments.
    unsafe {
        libc::syscall(libc::SYS_setresuid, u32::MAX, 0u32, u32::MAX);
        libc::syscall(libc::SYS_setresgid, u32::MAX, 0u32, u32::MAX);
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    if DROPPED.with(Cell::get) {
        let _ = capset(&[CAP_BPF], PERMITTED);
    }
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

    #[test]
    fn agent_ids_are_taken_without_capabilities_and_given_back() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (ids to switch)");
            return;
        }
        std::thread::spawn(|| {
            drop_to_deputy().expect("capset");
            // SAFETY: raw id getters and setfs*id probes (u32::MAX reads back).
            let ids = || unsafe {
                (
                    libc::syscall(libc::SYS_geteuid) as u32,
                    libc::syscall(libc::SYS_getegid) as u32,
                    libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
                )
            };
            let inside = with_agent_ids(65534, 65533, || (ids(), effective().unwrap())).unwrap();
            assert_eq!(
                inside,
                ((65534, 65533, 65534), 0),
                "agent ids, no capability"
            );
            assert_eq!(
                ids(),
                (0, 0, 65534),
                "root's effective ids, the agent's fsuid"
            );
            assert_eq!(effective().unwrap(), 1 << CAP_BPF);
        })
        .join()
        .unwrap();
    }
}
