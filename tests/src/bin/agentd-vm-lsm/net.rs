//! `socket_connect` / `socket_sendmsg` for unix sockets: filesystem and
//! abstract addresses need a rule of the call or baseline; datagrams sent
//! to an explicit address need one too.
use std::os::unix::net::{UnixDatagram, UnixListener};

use agentd_common::{
    baseline_call_id,
    lsm::{unix_path_hash, ScopeKey, ScopeRule, UnixKey, ACCESS_CONNECT},
    GrantExpiry, Hook, KernelReason,
};

use crate::{
    harness::{drain, errno, expect_code, expect_event, run_in, Report},
    Fixture, AGENT_ID,
};

const STREAM: &str = "/tmp/net-stream.sock";
const DGRAM: &str = "/tmp/net-dgram.sock";
const ABSTRACT: &str = "agentd-vm-abstract";

/// connect(2) to a unix address in the child: 0 or errno.
fn connect_op(addr: libc::sockaddr_un, len: u32) -> impl FnOnce() -> i32 {
    move || {
        // SAFETY: a fresh socket and a fully initialised sockaddr_un.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return errno();
            }
            let r = libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len);
            if r < 0 {
                errno()
            } else {
                0
            }
        }
    }
}

/// sendto(2) of one datagram to a unix address in the child: 0 or errno.
fn sendto_op(addr: libc::sockaddr_un, len: u32) -> impl FnOnce() -> i32 {
    move || {
        // SAFETY: as above.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return errno();
            }
            let r = libc::sendto(
                fd,
                b"x".as_ptr().cast(),
                1,
                0,
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            );
            if r < 0 {
                errno()
            } else {
                0
            }
        }
    }
}

/// A sockaddr_un for a path (or, with a leading '@', an abstract name).
fn addr(name: &str) -> (libc::sockaddr_un, u32) {
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let (bytes, offset) = match name.strip_prefix('@') {
        Some(n) => (n.as_bytes(), 1),
        None => (name.as_bytes(), 0),
    };
    for (i, b) in bytes.iter().enumerate() {
        a.sun_path[offset + i] = *b as libc::c_char;
    }
    // Filesystem: include the NUL; abstract: exactly the name after the NUL.
    let len = 2 + offset + bytes.len() + (1 - offset);
    (a, len as u32)
}

/// Allows `name` as a grant does: its address hash and, for a socket file,
/// the socket's own device+inode (what the peer check compares).
fn allow(fx: &mut Fixture, name: &str) -> Result<(), String> {
    let key = UnixKey {
        call_id: baseline_call_id(AGENT_ID),
        path_hash: unix_path_hash(name.as_bytes()),
    };
    fx.unix
        .insert(key, GrantExpiry { expires_at_ns: 0 }, 0)
        .map_err(|e| e.to_string())?;
    if name.starts_with('/') {
        let id = agentd::enforce::lsm::file_id_of(std::path::Path::new(name))
            .map_err(|e| format!("stat {name}: {e}"))?;
        fx.scopes
            .insert(
                ScopeKey {
                    call_id: baseline_call_id(AGENT_ID),
                    dev: id.dev,
                    ino: id.ino,
                },
                ScopeRule {
                    expires_at_ns: 0,
                    access: ACCESS_CONNECT,
                    _pad: [0; 7],
                },
                0,
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn run(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    let _ = std::fs::remove_file(STREAM);
    let _ = std::fs::remove_file(DGRAM);
    let _stream = UnixListener::bind(STREAM).map_err(|e| e.to_string())?;
    let _dgram = UnixDatagram::bind(DGRAM).map_err(|e| e.to_string())?;
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt as _;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(ABSTRACT)
            .map_err(|e| e.to_string())?;
        UnixListener::bind_addr(&a).map_err(|e| e.to_string())?
    };
    let cgroup = fx.cgroup.clone();
    let cg = Some(cgroup.as_path());
    let (stream, stream_len) = addr(STREAM);
    let (dgram, dgram_len) = addr(DGRAM);
    let abs_name = format!("@{ABSTRACT}");
    let (abs, abs_len) = addr(&abs_name);

    r.check(
        "unix_connect_outside_agent_ok",
        expect_code(run_in(None, |_| {}, connect_op(stream, stream_len)), 0),
    );
    drain(&mut fx.events);
    r.check(
        "unix_connect_without_rule_denied",
        expect_code(
            run_in(cg, |_| {}, connect_op(stream, stream_len)),
            libc::EPERM,
        )
        .and_then(|_| expect_event(&mut fx.events, Hook::Connect, KernelReason::NoGrant, None)),
    );
    allow(fx, STREAM)?;
    r.check(
        "unix_connect_with_baseline_rule_ok",
        expect_code(run_in(cg, |_| {}, connect_op(stream, stream_len)), 0),
    );
    r.check(
        "unix_connect_abstract_without_rule_denied",
        expect_code(run_in(cg, |_| {}, connect_op(abs, abs_len)), libc::EPERM),
    );
    allow(fx, &abs_name)?;
    r.check(
        "unix_connect_abstract_with_rule_ok",
        expect_code(run_in(cg, |_| {}, connect_op(abs, abs_len)), 0),
    );
    drain(&mut fx.events);
    r.check(
        "unix_sendto_without_rule_denied",
        expect_code(run_in(cg, |_| {}, sendto_op(dgram, dgram_len)), libc::EPERM)
            .and_then(|_| expect_event(&mut fx.events, Hook::SendMsg, KernelReason::NoGrant, None)),
    );
    allow(fx, DGRAM)?;
    r.check(
        "unix_sendto_with_rule_ok",
        expect_code(run_in(cg, |_| {}, sendto_op(dgram, dgram_len)), 0),
    );
    drop(abstract_listener);
    Ok(())
}
