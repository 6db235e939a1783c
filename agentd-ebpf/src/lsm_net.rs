//! BPF LSM `socket_connect` and `socket_sendmsg` for unix sockets: an agent
//! may connect (or send a datagram) only to socket addresses its call (or
//! baseline) lists, matched by a hash of the
//! address exactly as given (a relative or symlinked path does not match,
//! which fails closed). IP destinations are gated by the cgroup
//! `connect4/6` and `sendmsg4/6` programs, which every backend attaches.
use agentd_common::{
    baseline_call_id,
    lsm::{fnv1a_step, UnixKey, UNIX_HASH_START, UNIX_PATH_MAX},
    Hook, KernelReason,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::lsm,
    programs::LsmContext,
};

use crate::{
    agent,
    lsm_scope::{self, UNIX_RULES},
};

const EPERM: i32 = 1;
const AF_UNIX: u16 = 1;

/// Hash of `sun_path` as `agentd_common::lsm::unix_path_hash` computes it
/// for `unix:/path` (up to the first NUL) and `unix:@name` (abstract).
#[inline(always)]
fn hash_sun_path(path: &[u8; UNIX_PATH_MAX], addrlen: u32) -> u64 {
    let mut h = UNIX_HASH_START;
    // Bytes past addrlen are stale stack in the kernel's copy: never read them.
    let len = addrlen.saturating_sub(2) as usize;
    if path[0] != 0 {
        for (i, &b) in path.iter().enumerate() {
            if b == 0 || i >= len {
                break;
            }
            h = fnv1a_step(h, b);
        }
    } else {
        // Abstract: the name is the len - 1 bytes after the leading NUL.
        let name_len = len.saturating_sub(1);
        h = fnv1a_step(h, b'@');
        for (i, &b) in path.iter().enumerate().skip(1) {
            if i > name_len {
                break;
            }
            h = fnv1a_step(h, b);
        }
    }
    h
}

#[inline(always)]
pub(crate) fn unix_permitted(call_id: u64, agent_id: u32, path_hash: u64) -> KernelReason {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::NoGrant;
    for id in [call_id, baseline_call_id(agent_id)] {
        if let Some(rule) = unsafe {
            UNIX_RULES.get(&UnixKey {
                call_id: id,
                path_hash,
            })
        } {
            if rule.expires_at_ns == 0 || rule.expires_at_ns > now {
                return KernelReason::Allowed;
            }
            reason = KernelReason::GrantExpired;
        }
    }
    reason
}

/// The unix-socket decision for the address at `address` (a kernel copy of
/// `addrlen` bytes); `None` when it is not AF_UNIX.
#[inline(always)]
fn gate_unix(hook: Hook, address: *const u8, addrlen: u32) -> Option<i32> {
    let (cgroup_id, agent) = agent::current_agent()?;
    let mut family = [0u8; 2];
    if unsafe { bpf_probe_read_kernel_buf(address, &mut family) }.is_err() {
        return Some(-EPERM);
    }
    if u16::from_ne_bytes(family) != AF_UNIX {
        return None;
    }
    let call_id = agent::bound_call(agent::current_tgid(), &agent);
    let mut path = [0u8; UNIX_PATH_MAX];
    // The kernel copied the address into a sockaddr_storage (128 bytes).
    let mut hash = 0;
    let reason = match unsafe { bpf_probe_read_kernel_buf(address.add(2), &mut path) } {
        Ok(()) => {
            hash = hash_sun_path(&path, addrlen);
            unix_permitted(call_id, agent.agent_id, hash)
        }
        Err(_) => KernelReason::NoGrant,
    };
    let target = if path[0] != 0 {
        unsafe { address.add(2) }
    } else {
        core::ptr::null()
    };
    // Repeats to one address under a grant are counted, not sent.
    let object = agent::Object {
        a: hash,
        b: 0,
        port: 0,
        scope_hint: 0,
    };
    agent::report_access(hook, cgroup_id, &agent, call_id, reason, object, target);
    Some(if agent::blocks(&agent, reason) {
        -EPERM
    } else {
        0
    })
}

/// `socket_connect(sock, address, addrlen)`; `address` is the kernel's copy.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    gate_unix(Hook::Connect, address, addrlen as u32).unwrap_or(0)
}

/// `socket_sendmsg(sock, msg, size)`: a datagram sent to an explicit unix
/// address (sendto/sendmsg with a name) needs the same rule as a connect.
/// Connected sockets (no name) were checked at connect.
#[lsm(hook = "socket_sendmsg")]
pub fn socket_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if agent::current_agent().is_none() {
        return 0;
    }
    let msg: *const u8 = ctx.arg(1);
    let o = lsm_scope::offsets();
    let Ok(name) = (unsafe { lsm_scope::read_ptr(msg, o.msghdr_name) }) else {
        return -EPERM;
    };
    if name.is_null() {
        return 0;
    }
    let Ok(namelen) =
        (unsafe { bpf_probe_read_kernel(msg.add(o.msghdr_namelen as usize) as *const i32) })
    else {
        return -EPERM;
    };
    gate_unix(Hook::SendMsg, name, namelen as u32).unwrap_or(0)
}
