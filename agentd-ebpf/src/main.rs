//! agentd's kernel side. One thin `#[program]` wrapper per hook calls a
//! `try_` function; the shared state lives in `maps` and `agent`.
// Built for the BPF target by agentd/build.rs; on the host it compiles to an
// empty program so `cargo clippy/test --workspace` cover it too.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// aya-ebpf map methods take `impl Borrow<K>`; passing `&key` keeps BPF stack
// use explicit and matches the C helpers, so this lint only adds noise here.
#![allow(clippy::needless_borrows_for_generic_args)]

mod agent;
mod cgroup_net;
mod kernel;
mod lsm_attr;
mod lsm_exec;
mod lsm_file;
mod lsm_guard;
mod lsm_net;
mod lsm_protect;
mod lsm_scope;
mod lsm_sock;
mod lsm_tamper;
mod maps;
mod process_tree;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
