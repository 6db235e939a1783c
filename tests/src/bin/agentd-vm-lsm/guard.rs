//! The hooks that keep the scope walk honest and close the side doors:
//! user namespaces and mounts, attribute changes (chmod, chown, utimes,
//! xattrs), socket families, inbound bind/listen, the unix socket actually
//! reached, and `/proc/self` meaning only the caller's own pid directory.
//! Every denial has a control: the same step outside the agent cgroup (or
//! with the scope granted) succeeds.
use std::{ffi::CString, fs, path::Path, process::Command};

use agentd::enforce::lsm::file_id_of;
use agentd_common::{
    baseline_call_id,
    lsm::{
        unix_path_hash, ScopeKey, ScopeRule, UnixKey, ACCESS_CONNECT, ACCESS_READ, ACCESS_WRITE,
    },
    GrantExpiry, Hook, KernelReason,
};

use crate::{
    harness::{drain, errno, expect_code, expect_event, run_in, Report},
    Fixture, AGENT_ID,
};

const BASE: &str = "/tmp/lsm-guard";

fn c(path: &str) -> CString {
    CString::new(path).unwrap()
}

fn rc(ret: i64) -> i32 {
    if ret < 0 {
        errno()
    } else {
        0
    }
}

fn scope(fx: &mut Fixture, path: &str, access: u8) -> Result<(), String> {
    let id = file_id_of(Path::new(path)).map_err(|e| format!("stat {path}: {e}"))?;
    scope_id(fx, id.dev, id.ino, access)
}

fn scope_id(fx: &mut Fixture, dev: u64, ino: u64, access: u8) -> Result<(), String> {
    fx.scopes
        .insert(
            ScopeKey {
                call_id: baseline_call_id(AGENT_ID),
                dev,
                ino,
            },
            ScopeRule {
                expires_at_ns: 0,
                access,
                _pad: [0; 7],
            },
            0,
        )
        .map_err(|e| e.to_string())
}

fn unscope(fx: &mut Fixture, path: &str) -> Result<(), String> {
    let id = file_id_of(Path::new(path)).map_err(|e| format!("stat {path}: {e}"))?;
    fx.scopes
        .remove(&ScopeKey {
            call_id: baseline_call_id(AGENT_ID),
            dev: id.dev,
            ino: id.ino,
        })
        .map_err(|e| e.to_string())
}

/// Runs `op` outside the agent cgroup (must succeed), then inside (must fail
/// with EPERM and leave a `hook` event with `reason`).
fn denied_with_control(
    r: &mut Report,
    fx: &mut Fixture,
    name: &str,
    op: impl Fn() -> i32,
    hook: Hook,
    reason: KernelReason,
) {
    let cgroup = fx.cgroup.clone();
    r.check(
        &format!("{name}_outside_agent_ok"),
        expect_code(run_in(None, |_| {}, &op), 0),
    );
    drain(&mut fx.events);
    r.check(
        &format!("{name}_denied"),
        expect_code(run_in(Some(&cgroup), |_| {}, &op), libc::EPERM)
            .and_then(|_| expect_event(&mut fx.events, hook, reason, None)),
    );
}

pub fn run(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    let _ = Command::new("umount").arg(format!("{BASE}/mnt")).status();
    let _ = fs::remove_dir_all(BASE);
    for d in ["mnt", "ro", "evil", "attr", "sock"] {
        fs::create_dir_all(format!("{BASE}/{d}")).map_err(|e| e.to_string())?;
    }
    fs::write(format!("{BASE}/ro/f.txt"), b"scoped\n").map_err(|e| e.to_string())?;
    fs::write(format!("{BASE}/evil/f.txt"), b"planted\n").map_err(|e| e.to_string())?;
    fs::write(format!("{BASE}/attr/f.txt"), b"attr\n").map_err(|e| e.to_string())?;
    scope(fx, &format!("{BASE}/ro"), ACCESS_READ)?;
    namespaces(r, fx);
    attributes(r, fx)?;
    sockets(r, fx)?;
    unix_peer(r, fx)?;
    proc_self(r, fx)?;
    unscope(fx, &format!("{BASE}/ro"))?;
    Ok(())
}

fn namespaces(r: &mut Report, fx: &mut Fixture) {
    let unshare_user =
        || rc(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } as i64);
    denied_with_control(
        r,
        fx,
        "guard_userns_create",
        unshare_user,
        Hook::Userns,
        KernelReason::TamperAttempt,
    );
    // Root in the agent cgroup (no user namespace needed): a private mount
    // namespace is harmless, a bind mount over a scope is not.
    let mnt = c(&format!("{BASE}/mnt"));
    let evil = c(&format!("{BASE}/evil"));
    let ro = c(&format!("{BASE}/ro"));
    let bind_over_scope = || unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return errno();
        }
        // Keep the bind inside this namespace.
        let none = c("none");
        let root = c("/");
        if libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return errno();
        }
        rc(libc::mount(
            evil.as_ptr(),
            ro.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) as i64)
    };
    denied_with_control(
        r,
        fx,
        "guard_bind_mount_over_scope",
        bind_over_scope,
        Hook::Mount,
        KernelReason::TamperAttempt,
    );
    let tmpfs = || unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return errno();
        }
        let t = c("tmpfs");
        rc(libc::mount(t.as_ptr(), mnt.as_ptr(), t.as_ptr(), 0, std::ptr::null()) as i64)
    };
    denied_with_control(
        r,
        fx,
        "guard_mount_tmpfs",
        tmpfs,
        Hook::Mount,
        KernelReason::TamperAttempt,
    );
}

fn attributes(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    let f = c(&format!("{BASE}/attr/f.txt"));
    let dir = format!("{BASE}/attr");
    let chmod = || rc(unsafe { libc::chmod(f.as_ptr(), 0o600) } as i64);
    let chown = || rc(unsafe { libc::chown(f.as_ptr(), 1, 1) } as i64);
    let utimes =
        || rc(unsafe { libc::utimensat(libc::AT_FDCWD, f.as_ptr(), std::ptr::null(), 0) } as i64);
    let xname = c("trusted.agentd");
    let setxattr = || {
        rc(
            unsafe { libc::setxattr(f.as_ptr(), xname.as_ptr(), b"1".as_ptr().cast(), 1, 0) }
                as i64,
        )
    };
    let removexattr = || rc(unsafe { libc::removexattr(f.as_ptr(), xname.as_ptr()) } as i64);
    // Readable, not writable: attribute changes need the write scope.
    scope(fx, &dir, ACCESS_READ)?;
    denied_with_control(
        r,
        fx,
        "attr_chmod",
        chmod,
        Hook::PathChmod,
        KernelReason::NoGrant,
    );
    denied_with_control(
        r,
        fx,
        "attr_chown",
        chown,
        Hook::PathChown,
        KernelReason::NoGrant,
    );
    denied_with_control(
        r,
        fx,
        "attr_utimes",
        utimes,
        Hook::PathSetattr,
        KernelReason::NoGrant,
    );
    denied_with_control(
        r,
        fx,
        "attr_setxattr",
        setxattr,
        Hook::PathXattr,
        KernelReason::NoGrant,
    );
    denied_with_control(
        r,
        fx,
        "attr_removexattr",
        removexattr,
        Hook::PathXattr,
        KernelReason::NoGrant,
    );
    // With the write scope every one of them is allowed again.
    scope(fx, &dir, ACCESS_READ | ACCESS_WRITE)?;
    let cgroup = fx.cgroup.clone();
    let all = || {
        let steps = [chmod(), chown(), utimes(), setxattr(), removexattr()];
        steps.into_iter().find(|&e| e != 0).unwrap_or(0)
    };
    r.check(
        "attr_changes_in_write_scope_ok",
        expect_code(run_in(Some(&cgroup), |_| {}, all), 0),
    );
    unscope(fx, &dir)
}

fn socket_op(family: i32, ty: i32, protocol: i32) -> impl Fn() -> i32 {
    move || unsafe {
        let fd = libc::socket(family, ty, protocol);
        if fd < 0 {
            errno()
        } else {
            libc::close(fd);
            0
        }
    }
}

fn tcp_bind(port: u16, then_listen: bool) -> impl Fn() -> i32 {
    move || unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno();
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return errno();
        }
        if then_listen && libc::listen(fd, 1) != 0 {
            return errno();
        }
        libc::close(fd);
        0
    }
}

fn unix_addr(name: &str) -> (libc::sockaddr_un, u32) {
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let (bytes, offset) = match name.strip_prefix('@') {
        Some(n) => (n.as_bytes(), 1),
        None => (name.as_bytes(), 0),
    };
    for (i, b) in bytes.iter().enumerate() {
        a.sun_path[offset + i] = *b as libc::c_char;
    }
    let len = 2 + offset + bytes.len() + (1 - offset);
    (a, len as u32)
}

fn unix_bind(name: &str) -> impl Fn() -> i32 {
    let (a, len) = unix_addr(name);
    move || unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno();
        }
        let r = libc::bind(fd, (&a as *const libc::sockaddr_un).cast(), len);
        let e = if r != 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

fn unix_connect(name: &str) -> impl Fn() -> i32 {
    let (a, len) = unix_addr(name);
    move || unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno();
        }
        let r = libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len);
        let e = if r != 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

fn sockets(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    // ICMP "ping" sockets need the VM's group range opened for the control
    // (this is the VM's own sysctl, not the host's).
    let _ = fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    for (name, family, ty, proto) in [
        ("sock_packet", libc::AF_PACKET, libc::SOCK_RAW, 0),
        (
            "sock_raw_inet",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        (
            "sock_icmp_ping",
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_ICMP,
        ),
    ] {
        denied_with_control(
            r,
            fx,
            name,
            socket_op(family, ty, proto),
            Hook::SocketCreate,
            KernelReason::NoGrant,
        );
    }
    let cgroup = fx.cgroup.clone();
    let cg = Some(cgroup.as_path());
    // vsock may not be built into the VM kernel: only the agent side is checked.
    drain(&mut fx.events);
    r.check(
        "sock_vsock_denied",
        expect_code(
            run_in(cg, |_| {}, socket_op(libc::AF_VSOCK, libc::SOCK_STREAM, 0)),
            libc::EPERM,
        )
        .and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::SocketCreate,
                KernelReason::NoGrant,
                None,
            )
        }),
    );
    r.check(
        "sock_tcp_udp_unix_netlink_ok",
        expect_code(
            run_in(
                cg,
                |_| {},
                || {
                    [
                        socket_op(libc::AF_INET, libc::SOCK_STREAM, 0)(),
                        socket_op(libc::AF_INET6, libc::SOCK_DGRAM, 0)(),
                        socket_op(libc::AF_UNIX, libc::SOCK_DGRAM, 0)(),
                        socket_op(libc::AF_NETLINK, libc::SOCK_RAW, 0)(),
                    ]
                    .into_iter()
                    .find(|&e| e != 0)
                    .unwrap_or(0)
                },
            ),
            0,
        ),
    );
    denied_with_control(
        r,
        fx,
        "inbound_bind_fixed_port",
        tcp_bind(47001, false),
        Hook::Bind,
        KernelReason::NoGrant,
    );
    r.check(
        "inbound_bind_ephemeral_port_ok",
        expect_code(run_in(cg, |_| {}, tcp_bind(0, false)), 0),
    );
    denied_with_control(
        r,
        fx,
        "inbound_listen",
        tcp_bind(0, true),
        Hook::Listen,
        KernelReason::NoGrant,
    );
    denied_with_control(
        r,
        fx,
        "inbound_abstract_unix_bind",
        unix_bind("@agentd-vm-bind"),
        Hook::Bind,
        KernelReason::NoGrant,
    );
    fx.unix
        .insert(
            UnixKey {
                call_id: baseline_call_id(AGENT_ID),
                path_hash: unix_path_hash(b"@agentd-vm-bind"),
            },
            GrantExpiry { expires_at_ns: 0 },
            0,
        )
        .map_err(|e| e.to_string())?;
    r.check(
        "inbound_abstract_unix_bind_granted_ok",
        expect_code(run_in(cg, |_| {}, unix_bind("@agentd-vm-bind")), 0),
    );
    Ok(())
}

/// A granted socket path swapped for a symlink to another socket: the
/// address string still matches, the socket reached does not.
fn unix_peer(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    // This process plays neither agentd nor a granted peer here.
    let me = std::process::id();
    let _ = fx.protected.remove(&me);
    let granted = format!("{BASE}/sock/granted.sock");
    let other = format!("{BASE}/sock/other.sock");
    let moved = format!("{BASE}/sock/granted-real.sock");
    let _granted_l = std::os::unix::net::UnixListener::bind(&granted).map_err(|e| e.to_string())?;
    let _other_l = std::os::unix::net::UnixListener::bind(&other).map_err(|e| e.to_string())?;
    fx.unix
        .insert(
            UnixKey {
                call_id: baseline_call_id(AGENT_ID),
                path_hash: unix_path_hash(granted.as_bytes()),
            },
            GrantExpiry { expires_at_ns: 0 },
            0,
        )
        .map_err(|e| e.to_string())?;
    scope(fx, &granted, ACCESS_CONNECT)?;
    let cgroup = fx.cgroup.clone();
    let cg = Some(cgroup.as_path());
    r.check(
        "unix_granted_socket_ok",
        expect_code(run_in(cg, |_| {}, unix_connect(&granted)), 0),
    );
    // The planted symlink: same path string, another socket behind it.
    fs::rename(&granted, &moved).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&other, &granted).map_err(|e| e.to_string())?;
    r.check(
        "unix_symlinked_socket_outside_agent_ok",
        expect_code(run_in(None, |_| {}, unix_connect(&granted)), 0),
    );
    drain(&mut fx.events);
    r.check(
        "unix_symlinked_socket_denied",
        expect_code(run_in(cg, |_| {}, unix_connect(&granted)), libc::EPERM)
            .and_then(|_| expect_event(&mut fx.events, Hook::Connect, KernelReason::NoGrant, None)),
    );
    fx.protected.insert(me, 1, 0).map_err(|e| e.to_string())?;
    Ok(())
}

/// `/proc/self` (the marker inode) covers the caller's own pid directory
/// only: another process of the same agent is outside it.
fn proc_self(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let proc_dev =
        agentd::enforce::grant::file_id(&fs::metadata("/proc").map_err(|e| e.to_string())?).dev;
    scope_id(fx, proc_dev, agentd_common::lsm::PROC_SELF_INO, ACCESS_READ)?;
    let mut sibling = Command::new("sleep")
        .arg("30")
        .spawn()
        .map_err(|e| format!("spawn sleep: {e}"))?;
    let pid = sibling.id();
    fs::write(fx.cgroup.join("cgroup.procs"), pid.to_string()).map_err(|e| e.to_string())?;
    let _ = fs::metadata(format!("/proc/{pid}")).map(|m| m.ino());
    let own = c("/proc/self/status");
    let other = c(&format!("/proc/{pid}/environ"));
    let read = |p: &CString| {
        let p = p.clone();
        move || unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return errno();
            }
            let mut b = [0u8; 64];
            let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
            libc::close(fd);
            if n < 0 {
                errno()
            } else {
                0
            }
        }
    };
    let cgroup = fx.cgroup.clone();
    r.check(
        "proc_self_own_entry_ok",
        expect_code(run_in(Some(&cgroup), |_| {}, read(&own)), 0),
    );
    denied_with_control(
        r,
        fx,
        "proc_other_process_environ",
        read(&other),
        Hook::FileOpen,
        KernelReason::NoGrant,
    );
    let _ = sibling.kill();
    let _ = sibling.wait();
    Ok(())
}
