//! cgroup `connect4/6` and `sendmsg4/6`: an agent process may reach a
//! destination only if its bound call (or the baseline) lists it, or a
//! pending grant of its agent does and the process may claim it.
use agentd_common::{Hook, KernelReason};
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::agent;

/// cgroup sock_addr verdicts.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_gate_v4(&ctx, Hook::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    try_gate_v4(&ctx, Hook::SendMsg)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_gate_v6(&ctx, Hook::Connect)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    try_gate_v6(&ctx, Hook::SendMsg)
}

fn try_gate_v4(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    // user_ip4 is network byte order as a u32 in memory order.
    let ip = sa.user_ip4.to_ne_bytes();
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12] = ip[0];
    addr[13] = ip[1];
    addr[14] = ip[2];
    addr[15] = ip[3];
    gate(addr, u16::from_be(sa.user_port as u16), hook)
}

fn try_gate_v6(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    for (i, word) in sa.user_ip6.iter().enumerate() {
        let b = word.to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
    }
    gate(addr, u16::from_be(sa.user_port as u16), hook)
}

#[inline(always)]
fn gate(addr: [u8; 16], port: u16, hook: Hook) -> i32 {
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return ALLOW;
    };
    let mut call_id = agent::bound_call(agent::current_tgid(), &agent);
    let mut reason = agent::connect_permitted(call_id, &agent, addr, port);
    // What the bound call and the baseline do not cover, a pending grant
    // of the agent may, if this process may claim it.
    if reason != KernelReason::Allowed {
        match agent::claim_connect(cgroup_id, &agent, addr, port) {
            Ok(claimed) => {
                call_id = claimed;
                reason = KernelReason::Allowed;
            }
            // A refused claim says why; otherwise the original reason stands.
            Err(KernelReason::NoGrant) => {}
            Err(why) => reason = why,
        }
    }
    // Repeated connects to one destination under a grant are counted.
    agent::report_access_addr(hook, cgroup_id, &agent, call_id, reason, addr, port);
    if agent::blocks(&agent, reason) {
        DENY
    } else {
        ALLOW
    }
}
