//! Syscalls the filter sends to the supervisor only to refuse them with an
//! audit row: another seccomp listener, terminal input injection, reading
//! another process's memory, socket families agents may not open. Their
//! decisions read only register values (no pointer), so audit-only mode may
//! answer CONTINUE without a race. The filter's always-refused syscalls
//! (`filter::REFUSED`: io_uring, ptrace, bpf, …) and user-namespace
//! creation come here too, for their row; they are refused in audit-only
//! mode as well (letting them run would blind the supervisor).
use std::os::fd::OwnedFd;

use super::{Answer, Decided, Supervisor};
use crate::{
    enforce::{registry::Mode, seccomp::filter},
    protocol::reason,
};

/// Decides `n` if it is a guarded syscall; `None` for every other syscall.
pub(super) fn decide(
    sup: &Supervisor,
    _listener: &OwnedFd,
    n: &libc::seccomp_notif,
) -> Option<(Answer, Option<Decided>)> {
    let (action, target, reason) = classify(&n.data)?;
    let always = always_refused(&n.data);
    let audit_only = sup
        .registry
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .agents
        .get(&sup.agent)
        .is_some_and(|a| a.mode == Mode::AuditOnly);
    let answer = if audit_only && !always {
        Answer::Continue
    } else {
        Answer::Errno(libc::EPERM)
    };
    Some((
        answer,
        Some(Decided {
            action,
            target,
            allowed: false,
            reason,
            call: None,
            access: None,
        }),
    ))
}

/// Refused whatever the mode: the filter's REFUSED list and new user namespaces.
fn always_refused(data: &libc::seccomp_data) -> bool {
    let nr = data.nr as i64;
    filter::REFUSED.iter().any(|(n, _)| *n == nr)
        || matches!(nr, libc::SYS_clone | libc::SYS_unshare)
}

/// (action, target, reason) of a guarded syscall.
fn classify(data: &libc::seccomp_data) -> Option<(&'static str, String, &'static str)> {
    let nr = data.nr as i64;
    let a = data.args;
    let low = |i: usize| a[i] as u32;
    if matches!(nr, libc::SYS_clone | libc::SYS_unshare) && low(0) & filter::CLONE_NEWUSER != 0 {
        let call = if nr == libc::SYS_clone {
            "clone"
        } else {
            "unshare"
        };
        return Some((
            "userns_create",
            format!("{call} CLONE_NEWUSER"),
            reason::USER_NAMESPACE_REFUSED,
        ));
    }
    if let Some((_, name)) = filter::REFUSED.iter().find(|(n, _)| *n == nr) {
        let action = match *name {
            n if n.starts_with("io_uring") => "io_uring",
            n => n,
        };
        let target = match nr {
            libc::SYS_ptrace => format!("pid {}", a[1] as i32),
            _ => (*name).to_string(),
        };
        return Some((action, target, reason::SYSCALL_REFUSED));
    }
    if nr == libc::SYS_seccomp && low(1) & filter::SECCOMP_FLAG_NEW_LISTENER != 0 {
        return Some((
            "seccomp",
            "SECCOMP_FILTER_FLAG_NEW_LISTENER".into(),
            reason::SECCOMP_LISTENER_REFUSED,
        ));
    }
    if nr == libc::SYS_ioctl && matches!(low(1), filter::TIOCSTI | filter::TIOCLINUX) {
        let cmd = if low(1) == filter::TIOCSTI {
            "TIOCSTI"
        } else {
            "TIOCLINUX"
        };
        return Some((
            "ioctl",
            format!("{cmd} fd {}", a[0] as i32),
            reason::TTY_INJECTION_REFUSED,
        ));
    }
    if nr == libc::SYS_process_vm_readv {
        return Some((
            "process_vm_readv",
            format!("pid {}", a[0] as i32),
            reason::PROCESS_ACCESS_REFUSED,
        ));
    }
    if nr == libc::SYS_socket {
        return Some((
            "socket",
            socket_name(low(0) as i32, low(1) as i32, low(2) as i32),
            reason::SOCKET_FAMILY_REFUSED,
        ));
    }
    None
}

/// `family/type/protocol` for an audit row, e.g. `inet/dgram/icmp`.
pub(crate) fn socket_name(family: i32, ty: i32, proto: i32) -> String {
    let family = match family {
        libc::AF_INET => "inet".to_string(),
        libc::AF_INET6 => "inet6".into(),
        libc::AF_UNIX => "unix".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        libc::AF_VSOCK => "vsock".into(),
        f => format!("family{f}"),
    };
    let ty = match ty & 0xf {
        libc::SOCK_STREAM => "stream".to_string(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_RAW => "raw".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        t => format!("type{t}"),
    };
    let proto = match proto {
        libc::IPPROTO_ICMP => "icmp".to_string(),
        libc::IPPROTO_ICMPV6 => "icmpv6".into(),
        p => p.to_string(),
    };
    format!("{family}/{ty}/{proto}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(nr: i64, args: [u64; 6]) -> libc::seccomp_data {
        libc::seccomp_data {
            nr: nr as i32,
            arch: 0,
            instruction_pointer: 0,
            args,
        }
    }

    #[test]
    fn guarded_syscalls_are_classified_and_others_are_not() {
        let listener = data(
            libc::SYS_seccomp,
            [1, filter::SECCOMP_FLAG_NEW_LISTENER as u64, 0, 0, 0, 0],
        );
        assert_eq!(
            classify(&listener).map(|c| c.2),
            Some(reason::SECCOMP_LISTENER_REFUSED)
        );
        let sti = data(libc::SYS_ioctl, [0, filter::TIOCSTI as u64, 0, 0, 0, 0]);
        assert_eq!(classify(&sti).map(|c| c.1), Some("TIOCSTI fd 0".into()));
        let ping = data(libc::SYS_socket, [2, 2, 1, 0, 0, 0]);
        assert_eq!(classify(&ping).map(|c| c.1), Some("inet/dgram/icmp".into()));
        assert!(classify(&data(libc::SYS_seccomp, [1, 0, 0, 0, 0, 0])).is_none());
        assert!(classify(&data(libc::SYS_openat, [0; 6])).is_none());
    }
}
