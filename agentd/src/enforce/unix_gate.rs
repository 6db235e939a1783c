//! The kernel's half of unix-socket enforcement under the seccomp backend:
//! cgroup `connect_unix` and `sendmsg_unix` programs (kernel ≥ 6.7) on the
//! agents' slice refuse (EPERM) every unix `connect` and every addressed
//! unix send an agent process makes *itself*. The supervisor (real uid 0)
//! performs the ones it allowed; so a socket or address a
//! sibling thread swaps in after a decision (the supervisor answered
//! CONTINUE for what was a TCP socket a moment before), and sends whose
//! address the filter cannot see (`sendmsg`, `sendmmsg`), still meet a
//! refusal. Each program is eight instructions (allow real uid 0, refuse
//! everyone else), loaded and linked with raw `bpf()` calls (aya
//! 0.14 knows no unix attach types) and pinned beside the other links, so
//! a restart replaces it without a gap.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_UNIX_CONNECT`.
pub const UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG`.
pub const UNIX_SENDMSG: u32 = 50;

/// Link pin names (bpffs refuses dots).
const PINS: [(u32, &str); 2] = [
    (UNIX_CONNECT, "unix_connect_refused"),
    (UNIX_SENDMSG, "unix_sendmsg_refused"),
];

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: the bpf syscall reads (and may write) `attr`, which we own.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

fn put32(attr: &mut [u8], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(attr: &mut [u8], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads the refusal for `attach_type`: allowed only when the task's real
/// uid is 0 — agentd's supervisor performing what it decided (it changes
/// only its effective ids) or a root launcher (`agentctl run` joins a run
/// cgroup before it forks) — refused otherwise: agents never run as root.
/// The hooks run for the *socket's* cgroup (where it was created), not the
/// caller's, hence the task check.
fn load_refusal(attach_type: u32) -> io::Result<OwnedFd> {
    let insn = |code: u8, off: i16, imm: i32| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[2..4].copy_from_slice(&off.to_ne_bytes());
        b[4..8].copy_from_slice(&imm.to_ne_bytes());
        b
    };
    let prog = [
        insn(0x85, 0, 15), // call bpf_get_current_uid_gid
        insn(0x67, 0, 32), // r0 <<= 32
        insn(0x77, 0, 32), // r0 >>= 32: the real uid
        insn(0x15, 2, 0),  // if r0 == 0 goto allow
        insn(0xb7, 0, 0),  // r0 = 0: refuse (EPERM)
        insn(0x95, 0, 0),  // exit
        insn(0xb7, 0, 1),  // allow: r0 = 1
        insn(0x95, 0, 0),  // exit
    ];
    let insns: Vec<u8> = prog.concat();
    let license = c"GPL";
    let mut attr = [0u8; 72];
    put32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    put32(&mut attr, 4, prog.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + 12].copy_from_slice(b"agentd_unix\0");
    put32(&mut attr, 68, attach_type);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link(prog: &OwnedFd, cgroup: &std::fs::File, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 64];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 4, cgroup.as_raw_fd() as u32);
    put32(&mut attr, 8, attach_type);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = [0u8; 24];
    put64(&mut attr, 0, c.as_ptr() as u64);
    put32(&mut attr, 8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Attaches both refusals to `slice` and pins their links under
/// `pin_dir/links`, replacing earlier pins atomically.
pub fn attach(slice: &Path, pin_dir: &Path) -> io::Result<()> {
    let cgroup = std::fs::File::open(slice)?;
    let dir = pin_dir.join("links");
    std::fs::create_dir_all(&dir)?;
    for (attach_type, name) in PINS {
        let prog = load_refusal(attach_type)?;
        let l = link(&prog, &cgroup, attach_type)?;
        let tmp = dir.join(format!("{name}_new"));
        let _ = std::fs::remove_file(&tmp);
        pin(&l, &tmp)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}
