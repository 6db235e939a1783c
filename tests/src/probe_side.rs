//! Probes for the side doors around path and address checks: namespaces
//! and mounts, attribute changes, socket families, inbound sockets, unix
//! peers, other processes' `/proc` entries, ptrace and bpf. Each returns the
//! same `ok`/`errno:N` results as [`crate::probe`]; `None` when the op is
//! not one of these. Two helpers run outside agents, as fixtures:
//! `unix-serve` (listening sockets owned by a process that is not agentd)
//! and `ptracee` (a process that lets any same-user tracer attach).
use std::{ffi::CString, io::Read as _};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in probe arguments")
}

fn rc(ret: i64) -> String {
    if ret < 0 {
        format!("errno:{}", errno())
    } else {
        "ok".into()
    }
}

fn unix_addr(name: &str) -> (libc::sockaddr_un, u32) {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    let (bytes, offset) = match name.strip_prefix('@') {
        Some(n) => (n.as_bytes(), 1),
        None => (name.as_bytes(), 0),
    };
    for (i, b) in bytes.iter().take(100).enumerate() {
        a.sun_path[offset + i] = *b as libc::c_char;
    }
    let len = 2 + offset + bytes.len().min(100) + (1 - offset);
    (a, len as u32)
}

/// unshare(CLONE_NEWUSER | CLONE_NEWNS), bind-mount `src` over `dst`, then
/// read `dst/file` through the bind: what a user namespace would give.
fn userns_bind(src: &str, dst: &str, file: &str) -> String {
    // SAFETY: plain syscalls on owned C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return format!("errno:{} unshare", errno());
        }
        let (s, d) = (cstr(src), cstr(dst));
        if libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return format!("errno:{} mount", errno());
        }
    }
    match std::fs::read_to_string(format!("{dst}/{file}")) {
        Ok(s) => format!("ok {}", s.lines().next().unwrap_or("")),
        Err(e) => format!("errno:{} read", e.raw_os_error().unwrap_or(0)),
    }
}

fn socket(family: i32, ty: i32, proto: i32) -> String {
    // SAFETY: socket(2) and close(2).
    unsafe {
        let fd = libc::socket(family, ty, proto);
        if fd < 0 {
            return format!("errno:{}", errno());
        }
        libc::close(fd);
    }
    "ok".into()
}

/// bind 127.0.0.1:`port` (0 = ephemeral) and listen.
fn tcp_listen(port: u16) -> String {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
    }
}

fn unix_op(name: &str, connect: bool) -> String {
    let (a, len) = unix_addr(name);
    // SAFETY: a fresh socket and an initialised address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return format!("errno:{}", errno());
        }
        let p = (&a as *const libc::sockaddr_un).cast();
        let r = if connect {
            libc::connect(fd, p, len)
        } else {
            libc::bind(fd, p, len)
        };
        let out = rc(r as i64);
        libc::close(fd);
        out
    }
}

/// Forks a sibling (same agent) and reads its `/proc/<pid>/environ`.
fn proc_other_environ() -> String {
    // SAFETY: the child only sleeps and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("errno:{}", errno());
    }
    if pid == 0 {
        unsafe {
            libc::sleep(5);
            libc::_exit(0)
        }
    }
    let out = match std::fs::File::open(format!("/proc/{pid}/environ")) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            match f.read_to_end(&mut buf) {
                Ok(n) => format!("ok {n} bytes"),
                Err(e) => format!("errno:{} read", e.raw_os_error().unwrap_or(0)),
            }
        }
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
    };
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    out
}

/// PTRACE_ATTACH to `pid`, then detach.
fn ptrace(pid: i32) -> String {
    // SAFETY: attach/detach a process we were allowed to attach to.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
            return format!("errno:{}", errno());
        }
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    "ok".into()
}

/// A valid BPF_MAP_CREATE (array, 1 × u32): succeeds for an unprivileged
/// user where `kernel.unprivileged_bpf_disabled` is 0.
fn bpf_map() -> String {
    #[repr(C)]
    struct MapAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        pad: [u8; 112],
    }
    let attr = MapAttr {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        pad: [0; 112],
    };
    // SAFETY: the kernel reads at most size_of::<MapAttr>() bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &attr as *const MapAttr,
            std::mem::size_of::<MapAttr>(),
        )
    };
    if fd < 0 {
        return format!("errno:{}", errno());
    }
    unsafe { libc::close(fd as i32) };
    "ok".into()
}

/// Fixture: listens on every path given (mode 0777) and accepts until killed.
fn unix_serve(paths: &[String]) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let mut listeners = Vec::new();
    for p in paths {
        let _ = std::fs::remove_file(p);
        match std::os::unix::net::UnixListener::bind(p) {
            Ok(l) => {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777));
                let _ = l.set_nonblocking(true);
                listeners.push(l);
            }
            Err(e) => return format!("errno:{} bind {p}", e.raw_os_error().unwrap_or(0)),
        }
    }
    println!("result=ready");
    loop {
        for l in &listeners {
            let _ = l.accept();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Fixture: allows any tracer (Yama), says ready, sleeps.
fn ptracee(secs: u64) -> String {
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
    println!("result=ready {}", std::process::id());
    std::thread::sleep(std::time::Duration::from_secs(secs));
    "ok".into()
}

/// Runs one side-door op; `None` when `op` is not one.
pub fn run_op(op: &[String]) -> Option<String> {
    let arg = |i: usize| op.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(0);
    Some(match op.first().map(String::as_str)? {
        "userns-bind" => userns_bind(&arg(1), &arg(2), &arg(3)),
        "chmod" => {
            let p = cstr(&arg(1));
            // SAFETY: valid C string.
            rc(unsafe { libc::chmod(p.as_ptr(), num(2) as libc::mode_t) } as i64)
        }
        "utimes" => {
            let p = cstr(&arg(1));
            // SAFETY: NULL times = now.
            rc(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) } as i64)
        }
        "setxattr" => {
            let (p, n) = (cstr(&arg(1)), cstr(&arg(2)));
            // SAFETY: valid C strings and a 1-byte value.
            rc(
                unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) }
                    as i64,
            )
        }
        "socket-num" => socket(num(1) as i32, num(2) as i32, num(3) as i32),
        "listen" => tcp_listen(num(1) as u16),
        "unix-bind" => unix_op(&arg(1), false),
        "unix-connect" => unix_op(&arg(1), true),
        "proc-other-environ" => proc_other_environ(),
        "ptrace-pid" => ptrace(num(1) as i32),
        "bpf-map" => bpf_map(),
        "unix-serve" => unix_serve(&op[1..]),
        "ptracee" => ptracee(num(1) as u64),
        _ => return None,
    })
}
