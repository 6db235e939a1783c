//! BPF LSM socket hooks beyond connect-by-address:
//! - `socket_create`: agents get unix, netlink and ordinary TCP/UDP
//!   sockets; raw, packet, ICMP ("ping"), vsock and every other family are
//!   refused.
//! - `socket_bind`/`socket_listen`: no inbound IP service (a bind to a
//!   fixed port, any listen); an abstract unix name needs the call's or
//!   baseline's `unix:@name` destination.
//! - `unix_stream_connect`/`unix_may_send`: the unix socket actually
//!   reached — after the kernel resolved the path, symlinks included — must
//!   be a granted socket file (its device+inode, `ACCESS_CONNECT`) or a
//!   socket agentd itself listens on. `socket_connect` already matched the
//!   address string; this closes a symlink planted on that path.
use agentd_common::{
    baseline_call_id,
    lsm::{fnv1a_step, ACCESS_CONNECT, UNIX_HASH_START, UNIX_PATH_MAX},
    Hook, KernelReason,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::lsm,
    programs::LsmContext,
};

use crate::{
    agent,
    lsm_file::decide,
    lsm_net::unix_permitted,
    lsm_scope::{
        dentry_inode, dentry_name, lookup, offsets, path_parts, pid_nr, read_ptr, PROTECTED_TGIDS,
    },
};

const EPERM: i32 = 1;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const AF_NETLINK: u16 = 16;
const SOCK_STREAM: i32 = 1;
const SOCK_DGRAM: i32 = 2;
/// Low bits of `type` (the rest are SOCK_NONBLOCK/SOCK_CLOEXEC).
const SOCK_TYPE_MASK: i32 = 0xf;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;

/// Writes `n` in decimal at `buf[at..]`; returns the next position.
#[inline(always)]
fn put_num(buf: &mut [u8; 32], mut at: usize, n: u32) -> usize {
    let mut digits = [0u8; 16];
    let mut len = 0;
    let mut v = n;
    while len < 10 {
        digits[len] = b'0' + (v % 10) as u8;
        v /= 10;
        len += 1;
        if v == 0 {
            break;
        }
    }
    while len > 0 && at < 31 {
        len -= 1;
        buf[at] = digits[len & 15];
        at += 1;
    }
    at
}

/// `socket_create(family, type, protocol, kern)`.
#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let family: i32 = ctx.arg(0);
    let ty: i32 = ctx.arg(1);
    let protocol: i32 = ctx.arg(2);
    let ty = ty & SOCK_TYPE_MASK;
    let ordinary = match family as u16 {
        AF_UNIX | AF_NETLINK => true,
        AF_INET | AF_INET6 => {
            ty == SOCK_STREAM
                || (ty == SOCK_DGRAM && protocol != IPPROTO_ICMP && protocol != IPPROTO_ICMPV6)
        }
        _ => false,
    };
    if ordinary {
        return 0;
    }
    // Target "family/type/protocol" in decimal, e.g. "2/2/1" for an ICMP socket.
    let mut buf = [0u8; 32];
    let mut at = put_num(&mut buf, 0, family as u32);
    buf[at & 31] = b'/';
    at = put_num(&mut buf, at + 1, ty as u32);
    buf[at & 31] = b'/';
    put_num(&mut buf, at + 1, protocol as u32);
    let call_id = agent::bound_call(agent::current_tgid(), &agent);
    decide(
        Hook::SocketCreate,
        cgroup_id,
        &agent,
        call_id,
        KernelReason::NoGrant,
        buf.as_ptr(),
    )
}

/// Reports an inbound IP decision with the local address and port as target.
#[inline(always)]
fn refuse_inbound(hook: Hook, addr: [u8; 16], port: u16) -> i32 {
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let call_id = agent::bound_call(agent::current_tgid(), &agent);
    let reason = KernelReason::NoGrant;
    agent::report_addr(hook, cgroup_id, &agent, call_id, reason, addr, port);
    if agent::blocks(&agent, reason) {
        -EPERM
    } else {
        0
    }
}

/// `socket_bind(sock, address, addrlen)`; `address` is the kernel's copy.
#[lsm(hook = "socket_bind")]
pub fn socket_bind(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let mut head = [0u8; 4];
    if unsafe { bpf_probe_read_kernel_buf(address, &mut head) }.is_err() {
        return -EPERM;
    }
    let family = u16::from_ne_bytes([head[0], head[1]]);
    match family {
        AF_INET | AF_INET6 => {
            // sin_port and sin6_port both sit right after the family.
            let port = u16::from_be_bytes([head[2], head[3]]);
            if port == 0 {
                // An ephemeral local port (a client choosing its source).
                return 0;
            }
            let mut addr = [0u8; 16];
            if family == AF_INET {
                let mut v4 = [0u8; 4];
                let _ = unsafe { bpf_probe_read_kernel_buf(address.add(4), &mut v4) };
                addr[10] = 0xff;
                addr[11] = 0xff;
                addr[12] = v4[0];
                addr[13] = v4[1];
                addr[14] = v4[2];
                addr[15] = v4[3];
            } else {
                let _ = unsafe { bpf_probe_read_kernel_buf(address.add(8), &mut addr) };
            }
            refuse_inbound(Hook::Bind, addr, port)
        }
        AF_UNIX => {
            // A filesystem name is a file creation (path_mknod decides it);
            // addrlen 2 is autobind (a random abstract name, client side).
            if addrlen <= 2 || head[2] != 0 {
                return 0;
            }
            let mut path = [0u8; UNIX_PATH_MAX];
            let reason = match unsafe { bpf_probe_read_kernel_buf(address.add(2), &mut path) } {
                Ok(()) => {
                    let call_id = agent::bound_call(agent::current_tgid(), &agent);
                    let name_len = (addrlen as usize).saturating_sub(3);
                    let mut h = fnv1a_step(UNIX_HASH_START, b'@');
                    for (i, &b) in path.iter().enumerate().skip(1) {
                        if i > name_len {
                            break;
                        }
                        h = fnv1a_step(h, b);
                    }
                    (call_id, unix_permitted(call_id, agent.agent_id, h))
                }
                Err(_) => (
                    agent::bound_call(agent::current_tgid(), &agent),
                    KernelReason::NoGrant,
                ),
            };
            // The abstract name (after its NUL) as the target.
            decide(Hook::Bind, cgroup_id, &agent, reason.0, reason.1, unsafe {
                address.add(3)
            })
        }
        _ => 0,
    }
}

/// `socket_listen(sock, backlog)`: an IP listener is an inbound service.
#[lsm(hook = "socket_listen")]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if agent::current_agent().is_none() {
        return 0;
    }
    let sock: *const u8 = ctx.arg(0);
    let o = offsets();
    let family = match unsafe { read_ptr(sock, o.socket_sk) } {
        Ok(sk) if !sk.is_null() => {
            unsafe { bpf_probe_read_kernel(sk.add(o.sock_family as usize) as *const u16) }
                .unwrap_or(0)
        }
        _ => 0,
    };
    match family {
        AF_UNIX => 0,
        AF_INET | AF_INET6 => refuse_inbound(Hook::Listen, [0; 16], 0),
        // Unreadable: fail closed.
        _ => refuse_inbound(Hook::Listen, [0; 16], 0),
    }
}

/// Whether the unix socket `sk` listens for agentd itself (its peer
/// credentials name a protected process).
#[inline(always)]
fn agentd_socket(sk: *const u8) -> bool {
    let o = offsets();
    match unsafe { read_ptr(sk, o.sock_peer_pid) } {
        Ok(pid) if !pid.is_null() => match unsafe { pid_nr(pid) } {
            Ok(tgid) => unsafe { PROTECTED_TGIDS.get(&tgid) }.is_some(),
            Err(_) => false,
        },
        _ => false,
    }
}

/// The decision for reaching the unix socket `other` (a `struct sock *`).
#[inline(always)]
fn unix_peer(hook: Hook, other: *const u8) -> i32 {
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let o = offsets();
    let dentry = match unsafe { path_parts(other.add(o.unix_sock_path as usize)) } {
        Ok((dentry, _)) => dentry,
        Err(_) => return -EPERM,
    };
    if dentry.is_null() {
        // Abstract or unnamed: socket_connect/socket_sendmsg matched the name.
        return 0;
    }
    let call_id = agent::bound_call(agent::current_tgid(), &agent);
    let reason = if agentd_socket(other) {
        KernelReason::Allowed
    } else {
        match unsafe { dentry_inode(dentry) } {
            Ok(Some(id)) => {
                let now = unsafe { bpf_ktime_get_boot_ns() };
                let mut reason = KernelReason::NoGrant;
                for call in [call_id, baseline_call_id(agent.agent_id)] {
                    match lookup(call, id.dev, id.ino, ACCESS_CONNECT, now) {
                        Some(KernelReason::Allowed) => {
                            reason = KernelReason::Allowed;
                            break;
                        }
                        Some(r) => reason = r,
                        None => {}
                    }
                }
                reason
            }
            _ => KernelReason::NoGrant,
        }
    };
    decide(hook, cgroup_id, &agent, call_id, reason, unsafe {
        dentry_name(dentry)
    })
}

/// `unix_stream_connect(sock, other, newsk)`: `other` is the listener the
/// path resolved to.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    unix_peer(Hook::Connect, ctx.arg(1))
}

/// `unix_may_send(sock, other)`: every datagram (connected or not) and
/// every datagram connect; `other` is a `struct socket *`.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if agent::current_agent().is_none() {
        return 0;
    }
    let other: *const u8 = ctx.arg(1);
    match unsafe { read_ptr(other, offsets().socket_sk) } {
        Ok(sk) if !sk.is_null() => unix_peer(Hook::SendMsg, sk),
        _ => -EPERM,
    }
}
