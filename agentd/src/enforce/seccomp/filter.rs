//! The seccomp filter `agentctl run` installs (with no_new_privs) before it
//! execs the agent: exec and open syscalls go to agentd by user
//! notification; syscalls that would sidestep or attack the supervisor are
//! refused; everything else runs untouched (no notification, no cost beyond
//! the filter itself).
use std::os::fd::{FromRawFd as _, OwnedFd};

/// Syscalls decided by agentd (user notification).
pub const NOTIFIED: &[(i64, &str)] = &[
    (libc::SYS_execve, "execve"),
    (libc::SYS_execveat, "execveat"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, "open"),
    (libc::SYS_openat, "openat"),
    (libc::SYS_openat2, "openat2"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_creat, "creat"),
];

/// Path-mutating syscalls: decided against write scopes and performed by
/// the supervisor (`supervisor/metadata.rs`).
pub const METADATA: &[(i64, &str)] = super::supervisor::metadata::SYSCALLS;

/// Syscalls always refused with EPERM: io_uring (its opens and connects
/// would not pass through the notified syscalls), tracing and writing other
/// processes, loading BPF, loading libraries behind the exec check, opening
/// by handle, stealing fds, userfaultfd. They are rare, so they go to the
/// supervisor, which refuses them with an audit row (with no supervisor
/// they fail with ENOSYS: still refused).
pub const REFUSED: &[(i64, &str)] = &[
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_bpf, "bpf"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_uselib, "uselib"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    // Taking an fd out of a sibling process would carry one call's file
    // access over to a process bound to another call (or to none).
    (libc::SYS_pidfd_getfd, "pidfd_getfd"),
    // Stalling the supervisor's reads of the agent's memory (as in the lsm backend).
    (libc::SYS_userfaultfd, "userfaultfd"),
];

/// Syscalls the supervisor refuses *and audits* (notified, so that the
/// refusal leaves a row and audit-only mode can let them through; with no
/// supervisor they fail with ENOSYS, so the refusal holds while agentd is
/// down): reading another process's memory.
pub const GUARDED: &[(i64, &str)] = &[(libc::SYS_process_vm_readv, "process_vm_readv")];

/// Socket syscalls decided (and performed) by the supervisor: unix
/// destinations and names, inbound TCP/UDP (`supervisor/net/`). `sendto`
/// is notified only with an address.
pub const NET: &[(i64, &str)] = &[
    (libc::SYS_connect, "connect"),
    (libc::SYS_bind, "bind"),
    (libc::SYS_listen, "listen"),
];

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: an agent installing its own listener
/// could answer CONTINUE to its own opens once agentd's listener is gone.
pub const SECCOMP_FLAG_NEW_LISTENER: u32 = 1 << 3;
/// `TIOCSTI`: pushes bytes into a terminal's input queue.
pub const TIOCSTI: u32 = 0x5412;
/// `TIOCLINUX`: its selection subcommands paste into a virtual console.
pub const TIOCLINUX: u32 = 0x541C;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 syscalls carry this bit on x86_64; they are refused outright.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// A new user namespace would let the agent remount what the supervisor resolves.
pub(crate) const CLONE_NEWUSER: u32 = 0x1000_0000;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// Where a jump goes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Target {
    Next,
    Notify,
    Eperm,
    Enosys,
    Allow,
    Kill,
    CheckFlags,
    /// open(2): flags in args[1].
    OpenFlags,
    /// openat(2): flags in args[2].
    OpenatFlags,
    /// The O_PATH test on the loaded flags.
    OPathTest,
    SeccompFlags,
    IoctlCmd,
    Socket,
    SocketInet,
    SocketProto,
    /// sendto(2): notified when args[4] (the address) is not NULL.
    SendtoAddr,
}

enum Insn {
    Load(u32),
    /// Accumulator &= k.
    And(u32),
    /// (jmp op, k, true target, false target)
    Jump(u16, u32, Target, Target),
    Ret(u32),
    Label(Target),
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Offset of the low 32 bits of syscall argument `i` in seccomp_data
/// (little-endian).
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// Offset of the high 32 bits of syscall argument `i` (little-endian).
const fn arg_high(i: u32) -> u32 {
    20 + 8 * i
}

const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;

/// Assembles the filter program.
pub fn program() -> Vec<libc::sock_filter> {
    use Target::*;
    let mut p = vec![
        Insn::Load(4),
        Insn::Jump(JEQ, AUDIT_ARCH, Next, Kill),
        Insn::Load(0),
        Insn::Jump(JGE, X32_SYSCALL_BIT, Enosys, Next),
    ];
    dispatch_by_syscall(&mut p);
    check_arguments(&mut p);
    verdicts(&mut p);
    assemble(&p)
}

/// One jump per syscall of interest, to a verdict or to the check of its
/// arguments; everything else is allowed.
fn dispatch_by_syscall(p: &mut Vec<Insn>) {
    use Target::*;
    // O_PATH opens read and write nothing (the lsm backend's file_open hook
    // does not see them either), and a handle they return cannot be passed
    // with ADDFD: they run untouched. openat2 keeps its flags in memory, so
    // it is always notified.
    #[cfg(target_arch = "x86_64")]
    p.push(Insn::Jump(JEQ, libc::SYS_open as u32, OpenFlags, Next));
    p.push(Insn::Jump(JEQ, libc::SYS_openat as u32, OpenatFlags, Next));
    for (nr, _) in NOTIFIED {
        p.push(Insn::Jump(JEQ, *nr as u32, Notify, Next));
    }
    // An addressed sendto names its destination in memory: notified; the
    // connected form (no address) runs.
    p.push(Insn::Jump(JEQ, libc::SYS_sendto as u32, SendtoAddr, Next));
    for (nr, _) in GUARDED
        .iter()
        .chain(METADATA)
        .chain(super::supervisor::signal::SYSCALLS)
        .chain(NET)
    {
        p.push(Insn::Jump(JEQ, *nr as u32, Notify, Next));
    }
    for (nr, _) in super::supervisor::metadata::UNSUPPORTED {
        p.push(Insn::Jump(JEQ, *nr as u32, Enosys, Next));
    }
    for (nr, _) in REFUSED {
        p.push(Insn::Jump(JEQ, *nr as u32, Notify, Next));
    }
    p.push(Insn::Jump(
        JEQ,
        libc::SYS_seccomp as u32,
        SeccompFlags,
        Next,
    ));
    p.push(Insn::Jump(JEQ, libc::SYS_ioctl as u32, IoctlCmd, Next));
    p.push(Insn::Jump(JEQ, libc::SYS_socket as u32, Socket, Next));
    // clone3 passes its flags in memory the filter cannot read: ENOSYS makes
    // glibc fall back to clone, whose flags it can.
    p.push(Insn::Jump(JEQ, libc::SYS_clone3 as u32, Enosys, Next));
    p.push(Insn::Jump(JEQ, libc::SYS_clone as u32, CheckFlags, Next));
    p.push(Insn::Jump(JEQ, libc::SYS_unshare as u32, CheckFlags, Next));
    p.push(Insn::Ret(SECCOMP_RET_ALLOW));
}

/// The argument checks the dispatch jumps to: flags, destinations, ioctl
/// commands and socket families the filter can read from registers.
fn check_arguments(p: &mut Vec<Insn>) {
    use Target::*;
    p.push(Insn::Label(CheckFlags));
    p.push(Insn::Load(arg(0)));
    // A new user namespace: refused by the supervisor, with a row.
    p.push(Insn::Jump(JSET, CLONE_NEWUSER, Notify, Allow));
    #[cfg(target_arch = "x86_64")]
    {
        p.push(Insn::Label(OpenFlags));
        p.push(Insn::Load(arg(1)));
        p.push(Insn::Jump(JEQ, 0, OPathTest, OPathTest));
    }
    p.push(Insn::Label(OpenatFlags));
    p.push(Insn::Load(arg(2)));
    p.push(Insn::Label(OPathTest));
    p.push(Insn::Jump(JSET, libc::O_PATH as u32, Allow, Notify));
    p.push(Insn::Label(SendtoAddr));
    p.push(Insn::Load(arg(4)));
    p.push(Insn::Jump(JEQ, 0, Next, Notify));
    p.push(Insn::Load(arg_high(4)));
    p.push(Insn::Jump(JEQ, 0, Allow, Notify));
    // Another filter with a listener: refused (the supervisor audits it).
    p.push(Insn::Label(SeccompFlags));
    p.push(Insn::Load(arg(1)));
    p.push(Insn::Jump(JSET, SECCOMP_FLAG_NEW_LISTENER, Notify, Allow));
    // Terminal input injection: refused (audited); every other ioctl runs.
    p.push(Insn::Label(IoctlCmd));
    p.push(Insn::Load(arg(1)));
    p.push(Insn::Jump(JEQ, TIOCSTI, Notify, Next));
    p.push(Insn::Jump(JEQ, TIOCLINUX, Notify, Allow));
    // Socket families: unix (its destinations are decided at connect),
    // netlink route (read-only for the unprivileged; glibc's getaddrinfo
    // uses it), TCP and UDP (decided by the cgroup connect/sendmsg
    // programs). Everything else — ICMP, raw, packet, vsock, other netlink
    // protocols, other families — goes to the supervisor, which refuses it.
    p.push(Insn::Label(Socket));
    p.push(Insn::Load(arg(0)));
    p.push(Insn::Jump(JEQ, libc::AF_UNIX as u32, Allow, Next));
    p.push(Insn::Jump(JEQ, libc::AF_INET as u32, SocketInet, Next));
    p.push(Insn::Jump(JEQ, libc::AF_INET6 as u32, SocketInet, Next));
    p.push(Insn::Jump(JEQ, libc::AF_NETLINK as u32, Next, Notify));
    p.push(Insn::Load(arg(2)));
    p.push(Insn::Jump(JEQ, libc::NETLINK_ROUTE as u32, Allow, Notify));
    p.push(Insn::Label(SocketInet));
    p.push(Insn::Load(arg(1)));
    p.push(Insn::And(0xf)); // SOCK_TYPE_MASK: without SOCK_NONBLOCK/SOCK_CLOEXEC
    p.push(Insn::Jump(JEQ, libc::SOCK_STREAM as u32, SocketProto, Next));
    p.push(Insn::Jump(
        JEQ,
        libc::SOCK_DGRAM as u32,
        SocketProto,
        Notify,
    ));
    p.push(Insn::Label(SocketProto));
    p.push(Insn::Load(arg(2)));
    p.push(Insn::Jump(JEQ, 0, Allow, Next));
    p.push(Insn::Jump(JEQ, libc::IPPROTO_TCP as u32, Allow, Next));
    p.push(Insn::Jump(JEQ, libc::IPPROTO_UDP as u32, Allow, Notify));
}

/// The verdicts every check ends in.
fn verdicts(p: &mut Vec<Insn>) {
    use Target::*;
    p.push(Insn::Label(Allow));
    p.push(Insn::Ret(SECCOMP_RET_ALLOW));
    p.push(Insn::Label(Notify));
    p.push(Insn::Ret(SECCOMP_RET_USER_NOTIF));
    p.push(Insn::Label(Eperm));
    p.push(Insn::Ret(SECCOMP_RET_ERRNO | libc::EPERM as u32));
    p.push(Insn::Label(Enosys));
    p.push(Insn::Ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    p.push(Insn::Label(Kill));
    p.push(Insn::Ret(SECCOMP_RET_KILL_PROCESS));
}

fn assemble(p: &[Insn]) -> Vec<libc::sock_filter> {
    // Index of each emitted instruction and of each label.
    let mut labels = std::collections::HashMap::new();
    let mut n = 0usize;
    for insn in p {
        match insn {
            Insn::Label(t) => {
                labels.insert(*t, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for insn in p {
        let here = out.len();
        let off = |t: &Target| -> u8 {
            match t {
                Target::Next => 0,
                t => {
                    let dest = labels[t];
                    u8::try_from(dest - here - 1).expect("filter jump out of range")
                }
            }
        };
        match insn {
            Insn::Label(_) => {}
            Insn::Load(off) => out.push(stmt(
                (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                *off,
            )),
            Insn::And(k) => out.push(stmt(
                (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
                *k,
            )),
            Insn::Ret(k) => out.push(stmt((libc::BPF_RET | libc::BPF_K) as u16, *k)),
            Insn::Jump(code, k, t, f) => out.push(libc::sock_filter {
                code: *code,
                jt: off(t),
                jf: off(f),
                k: *k,
            }),
        }
    }
    out
}

/// Sets no_new_privs and installs the filter on the calling thread, returning
/// the notification listener. Call in the (single-threaded) launcher child.
pub fn install() -> std::io::Result<OwnedFd> {
    install_program(&program())
}

/// A filter that notifies syscall `nr` only (benchmarks: a bare round trip).
pub fn install_notify_only(nr: i64) -> std::io::Result<OwnedFd> {
    let p = [
        Insn::Load(4),
        Insn::Jump(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            AUDIT_ARCH,
            Target::Next,
            Target::Allow,
        ),
        Insn::Load(0),
        Insn::Jump(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            nr as u32,
            Target::Notify,
            Target::Allow,
        ),
        Insn::Label(Target::Allow),
        Insn::Ret(SECCOMP_RET_ALLOW),
        Insn::Label(Target::Notify),
        Insn::Ret(SECCOMP_RET_USER_NOTIF),
    ];
    install_program(&assemble(&p))
}

/// Sets no_new_privs and installs `filter` with a user-notification listener.
pub(crate) fn install_program(filter: &[libc::sock_filter]) -> std::io::Result<OwnedFd> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain syscalls on memory that outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the cBPF program over a seccomp_data (nr, arch, args[0]) — a tiny
    /// interpreter for exactly the instructions `program()` emits.
    fn run(nr: u32, arch: u32, arg0: u32) -> u32 {
        run_args(nr, arch, &[arg0])
    }

    /// Same, with the low 32 bits of the first arguments.
    fn run_args(nr: u32, arch: u32, args: &[u32]) -> u32 {
        let prog = program();
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let class = i.code as u32 & 0x07;
            match class {
                c if c == libc::BPF_LD => {
                    acc = match i.k {
                        0 => nr,
                        4 => arch,
                        k if k >= 16 && (k - 16) % 8 == 0 => {
                            args.get(((k - 16) / 8) as usize).copied().unwrap_or(0)
                        }
                        // High words: zero (the tests pass 32-bit values).
                        k if k >= 16 && (k - 16) % 8 == 4 => 0,
                        k => panic!("unexpected load {k}"),
                    };
                    pc += 1;
                }
                c if c == libc::BPF_ALU => {
                    assert_eq!(i.code as u32 & 0xf0, libc::BPF_AND);
                    acc &= i.k;
                    pc += 1;
                }
                c if c == libc::BPF_JMP => {
                    let op = i.code as u32 & 0xf0;
                    let taken = match op {
                        o if o == libc::BPF_JEQ => acc == i.k,
                        o if o == libc::BPF_JGE => acc >= i.k,
                        o if o == libc::BPF_JSET => acc & i.k != 0,
                        o => panic!("unexpected jump op {o}"),
                    };
                    pc += 1 + if taken { i.jt } else { i.jf } as usize;
                }
                c if c == libc::BPF_RET => return i.k,
                c => panic!("unexpected class {c}"),
            }
        }
    }

    #[test]
    fn exec_and_open_are_notified() {
        for (nr, name) in NOTIFIED.iter().chain(GUARDED).chain(METADATA) {
            assert_eq!(
                run(*nr as u32, AUDIT_ARCH, 0),
                SECCOMP_RET_USER_NOTIF,
                "{name}"
            );
        }
    }

    #[test]
    fn refused_syscalls_go_to_the_supervisor() {
        for (nr, name) in REFUSED {
            assert_eq!(
                run(*nr as u32, AUDIT_ARCH, 0),
                SECCOMP_RET_USER_NOTIF,
                "{name}"
            );
        }
    }

    #[test]
    fn everything_else_passes() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_recvfrom,
            libc::SYS_accept4,
            libc::SYS_getpid,
        ] {
            assert_eq!(run(nr as u32, AUDIT_ARCH, 0), SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn foreign_arch_is_killed_and_x32_refused() {
        assert_eq!(
            run(libc::SYS_read as u32, 0x4000_0003, 0),
            SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            run(X32_SYSCALL_BIT | 59, AUDIT_ARCH, 0),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn user_namespaces_are_refused_but_plain_clone_passes() {
        let clone = libc::SYS_clone as u32;
        assert_eq!(
            run(clone, AUDIT_ARCH, libc::SIGCHLD as u32),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(clone, AUDIT_ARCH, CLONE_NEWUSER),
            SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run(libc::SYS_unshare as u32, AUDIT_ARCH, CLONE_NEWUSER),
            SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run(libc::SYS_clone3 as u32, AUDIT_ARCH, 0),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn o_path_opens_run_untouched() {
        let o_path = libc::O_PATH as u32;
        let openat = libc::SYS_openat as u32;
        let at = resolve_at();
        assert_eq!(
            run_args(openat, AUDIT_ARCH, &[at, 0, o_path]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run_args(openat, AUDIT_ARCH, &[at, 0, libc::O_RDONLY as u32]),
            SECCOMP_RET_USER_NOTIF
        );
        #[cfg(target_arch = "x86_64")]
        {
            let open = libc::SYS_open as u32;
            assert_eq!(run_args(open, AUDIT_ARCH, &[0, o_path]), SECCOMP_RET_ALLOW);
            assert_eq!(
                run_args(open, AUDIT_ARCH, &[0, libc::O_RDWR as u32]),
                SECCOMP_RET_USER_NOTIF
            );
        }
        // openat2 keeps its flags in memory: always notified.
        assert_eq!(
            run_args(libc::SYS_openat2 as u32, AUDIT_ARCH, &[at, 0, o_path]),
            SECCOMP_RET_USER_NOTIF
        );
    }

    fn resolve_at() -> u32 {
        super::super::resolve::AT_FDCWD as u32
    }

    #[test]
    fn listeners_and_terminal_injection_go_to_the_supervisor() {
        let seccomp = libc::SYS_seccomp as u32;
        let filter = libc::SECCOMP_SET_MODE_FILTER;
        assert_eq!(
            run_args(seccomp, AUDIT_ARCH, &[filter, SECCOMP_FLAG_NEW_LISTENER]),
            SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run_args(seccomp, AUDIT_ARCH, &[filter, 0]),
            SECCOMP_RET_ALLOW,
            "a runtime's own sandbox filter (no listener) still installs"
        );
        let ioctl = libc::SYS_ioctl as u32;
        assert_eq!(
            run_args(ioctl, AUDIT_ARCH, &[0, TIOCSTI]),
            SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run_args(ioctl, AUDIT_ARCH, &[0, TIOCLINUX]),
            SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run_args(ioctl, AUDIT_ARCH, &[0, libc::TCGETS as u32]),
            SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn socket_destinations_and_inbound_go_to_the_supervisor() {
        for (nr, name) in NET {
            assert_eq!(
                run(*nr as u32, AUDIT_ARCH, 3),
                SECCOMP_RET_USER_NOTIF,
                "{name}"
            );
        }
        let sendto = libc::SYS_sendto as u32;
        assert_eq!(
            run_args(sendto, AUDIT_ARCH, &[3, 0x1000, 10, 0, 0x2000, 16]),
            SECCOMP_RET_USER_NOTIF,
            "sendto with an address"
        );
        assert_eq!(
            run_args(sendto, AUDIT_ARCH, &[3, 0x1000, 10, 0, 0, 0]),
            SECCOMP_RET_ALLOW,
            "send on a connected socket"
        );
    }

    #[test]
    fn socket_families() {
        let socket = libc::SYS_socket as u32;
        let s =
            |f: i32, t: i32, p: i32| run_args(socket, AUDIT_ARCH, &[f as u32, t as u32, p as u32]);
        let allow = SECCOMP_RET_ALLOW;
        let notify = SECCOMP_RET_USER_NOTIF;
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, 0), allow);
        assert_eq!(
            s(
                libc::AF_INET6,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP
            ),
            allow
        );
        assert_eq!(
            s(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
                libc::IPPROTO_UDP
            ),
            allow
        );
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_STREAM, 0), allow);
        assert_eq!(
            s(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            allow
        );
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            notify
        );
        assert_eq!(
            s(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
            notify
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP), notify);
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW, 0), notify);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_STREAM, 0), notify);
        assert_eq!(
            s(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            notify
        );
    }
}
