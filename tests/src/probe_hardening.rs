//! Probes for the kernel-boundary hardening scenarios (see
//! `hardening.rs`): listener takeover, terminal injection, process memory,
//! socket families, O_PATH opens, directory listings, session and fds.
//! Same contract as [`crate::probe`]: each returns `ok …` or `errno:N`.
use std::ffi::CString;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ret(r: libc::c_long) -> String {
    if r < 0 {
        format!("errno:{}", errno())
    } else {
        "ok".into()
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in probe arguments")
}

/// Installs a seccomp filter with its own listener (what an agent would do
/// to answer its own syscalls once agentd's listener is gone).
fn seccomp_listener() -> String {
    match agentd::enforce::seccomp::filter::install_notify_only(libc::SYS_getppid) {
        Ok(_fd) => "ok".into(),
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Opens a pseudo-terminal, makes it the controlling terminal of this
/// session and pushes one byte into its input with TIOCSTI.
fn tiocsti() -> String {
    // SAFETY: plain libc pty calls on fds we own.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return format!("errno:{} (posix_openpt)", errno());
        }
        if libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return format!("errno:{} (unlockpt)", errno());
        }
        let mut name = [0 as libc::c_char; 64];
        if libc::ptsname_r(master, name.as_mut_ptr(), name.len()) != 0 {
            return format!("errno:{} (ptsname)", errno());
        }
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if slave < 0 {
            return format!("errno:{} (open slave)", errno());
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return format!("errno:{} (TIOCSCTTY)", errno());
        }
        let c = b'x';
        ret(libc::ioctl(slave, libc::TIOCSTI, &c as *const u8) as libc::c_long)
    }
}

/// Reads this process's own memory through process_vm_readv.
fn vm_read_self() -> String {
    static SOURCE: [u8; 8] = *b"agentd!!";
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: SOURCE.as_ptr() as *mut _,
        iov_len: SOURCE.len(),
    };
    // SAFETY: both iovecs point at memory of this process.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    ret(n as libc::c_long)
}

fn socket(family: &str, ty: &str, proto: &str) -> String {
    let n = |s: &str| s.parse::<i32>().unwrap_or(-1);
    // SAFETY: socket with integer arguments.
    let fd = unsafe { libc::socket(n(family), n(ty), n(proto)) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    ret(fd as libc::c_long)
}

/// openat(O_PATH) then fstat on the handle.
fn open_o_path(path: &str) -> String {
    let p = cstr(path);
    // SAFETY: valid C string.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return format!("errno:{}", errno());
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into our buffer; O_PATH handles support fstat.
    let r = unsafe { libc::fstat(fd, &mut st) };
    unsafe { libc::close(fd) };
    ret(r as libc::c_long)
}

/// openat2(O_PATH).
fn openat2_o_path(path: &str) -> String {
    let p = cstr(path);
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    // SAFETY: valid C string and open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
    }
    ret(fd)
}

fn list_dir(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => format!("ok {}", entries.count()),
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Whether this process leads its own session, and which fds above 2 it holds.
fn session() -> String {
    // SAFETY: getters.
    let (sid, pid) = unsafe { (libc::getsid(0), libc::getpid()) };
    let fds: Vec<String> = (3..1024)
        // SAFETY: F_GETFD only reads the fd's flags.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } != -1)
        .map(|fd| fd.to_string())
        .collect();
    format!("ok leader={} fds=[{}]", sid == pid, fds.join(","))
}

/// One path-mutating syscall through libc: `meta OP ARGS…`.
fn meta(op: &[String]) -> String {
    let arg = |i: usize| op.get(i).cloned().unwrap_or_default();
    let p = |i: usize| cstr(&arg(i));
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(-1);
    // SAFETY: libc calls with C strings we own.
    let r: libc::c_int = unsafe {
        match op.first().map(String::as_str).unwrap_or("") {
            "truncate" => libc::truncate(p(1).as_ptr(), num(2)),
            "unlink" => libc::unlink(p(1).as_ptr()),
            "rmdir" => libc::rmdir(p(1).as_ptr()),
            "mkdir" => libc::mkdir(p(1).as_ptr(), 0o755),
            "mkfifo" => libc::mknod(p(1).as_ptr(), libc::S_IFIFO | 0o644, 0),
            "symlink" => libc::symlink(p(1).as_ptr(), p(2).as_ptr()),
            "link" => libc::link(p(1).as_ptr(), p(2).as_ptr()),
            "rename" => libc::rename(p(1).as_ptr(), p(2).as_ptr()),
            "chmod" => libc::chmod(p(1).as_ptr(), num(2) as libc::mode_t),
            "chown" => libc::chown(p(1).as_ptr(), num(2) as u32, num(3) as u32),
            "utimes" => libc::utimes(p(1).as_ptr(), std::ptr::null()),
            "setxattr" => {
                let v = arg(3);
                libc::setxattr(p(1).as_ptr(), p(2).as_ptr(), v.as_ptr().cast(), v.len(), 0)
            }
            "removexattr" => libc::removexattr(p(1).as_ptr(), p(2).as_ptr()),
            "fchmod" => {
                // chmod through a read-only fd.
                let fd = libc::open(p(1).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return format!("errno:{} (open)", errno());
                }
                let r = libc::fchmod(fd, num(2) as libc::mode_t);
                let e = errno();
                libc::close(fd);
                if r < 0 {
                    return format!("errno:{e}");
                }
                0
            }
            other => return format!("errno:0 unknown meta op {other}"),
        }
    };
    ret(r as libc::c_long)
}

/// kill(PID, SIG).
fn kill(pid: &str, sig: &str) -> String {
    let n = |s: &str| s.parse::<i32>().unwrap_or(0);
    // SAFETY: kill with integer arguments.
    ret(unsafe { libc::kill(n(pid), n(sig)) } as libc::c_long)
}

/// pidfd_open(PID) then pidfd_send_signal(0).
fn pidfd_signal(pid: &str) -> String {
    let pid = pid.parse::<i32>().unwrap_or(0);
    // SAFETY: pidfd syscalls with integer arguments.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if fd < 0 {
            return format!("errno:{}", errno());
        }
        let r = libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            0,
            std::ptr::null::<u8>(),
            0,
        );
        libc::close(fd as i32);
        ret(r)
    }
}

/// Forks a child that sleeps, kills it with SIGTERM: signals inside the agent.
fn kill_own_child() -> String {
    // SAFETY: the child only sleeps; the parent signals and reaps it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::sleep(30);
            libc::_exit(0);
        }
        if pid < 0 {
            return format!("errno:{}", errno());
        }
        let r = libc::kill(pid, libc::SIGTERM);
        let e = errno();
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if r < 0 {
            return format!("errno:{e}");
        }
        "ok".into()
    }
}

/// A `sockaddr_un` for `addr`: `@name` is abstract, anything else a path.
fn sockaddr_un(addr: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, skip) = match addr.strip_prefix('@') {
        Some(name) => (name.as_bytes(), 1),
        None => (addr.as_bytes(), 0),
    };
    for (d, s) in sa.sun_path[skip..].iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = 2 + skip + bytes.len() + usize::from(skip == 0);
    (sa, len as libc::socklen_t)
}

/// A unix socket operation: `unix OP ADDR` with OP connect (stream),
/// sendto or sendmsg (datagram, addressed) or bind (stream).
fn unix(op: &str, addr: &str) -> String {
    let ty = if op == "sendto" || op == "sendmsg" {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let (sa, len) = sockaddr_un(addr);
    let p = &sa as *const libc::sockaddr_un as *const libc::sockaddr;
    // SAFETY: socket calls on an fd this probe owns and a sockaddr it built.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return format!("errno:{} (socket)", errno());
        }
        let r = match op {
            "connect" => libc::connect(fd, p, len) as libc::c_long,
            "bind" => libc::bind(fd, p, len) as libc::c_long,
            "sendto" => libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, p, len) as libc::c_long,
            "sendmsg" => {
                let mut iov = libc::iovec {
                    iov_base: b"x".as_ptr() as *mut libc::c_void,
                    iov_len: 1,
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = p as *mut libc::c_void;
                msg.msg_namelen = len;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                libc::sendmsg(fd, &msg, 0) as libc::c_long
            }
            other => return format!("errno:0 unknown unix op {other}"),
        };
        let e = errno();
        libc::close(fd);
        if r < 0 {
            format!("errno:{e}")
        } else {
            "ok".into()
        }
    }
}

/// Inbound IP: `inbound tcp-bind|tcp-listen|udp-bind PORT` on 127.0.0.1
/// (tcp-listen binds PORT first unless it is 0: listen then picks a port).
fn inbound(op: &str, port: &str) -> String {
    let port: u16 = port.parse().unwrap_or(0);
    let ty = if op == "udp-bind" {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: a zeroed sockaddr_in is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    let p = &sa as *const libc::sockaddr_in as *const libc::sockaddr;
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket calls on an fd this probe owns and a sockaddr it built.
    unsafe {
        let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return format!("errno:{} (socket)", errno());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut r = 0;
        if op != "tcp-listen" || port != 0 {
            r = libc::bind(fd, p, len);
        }
        if r == 0 && op == "tcp-listen" {
            r = libc::listen(fd, 4);
        }
        let e = errno();
        libc::close(fd);
        if r < 0 {
            format!("errno:{e}")
        } else {
            "ok".into()
        }
    }
}

/// Runs a hardening probe; `None` when `op` is not one.
pub fn run_op(op: &[String]) -> Option<String> {
    let arg = |i: usize| op.get(i).cloned().unwrap_or_default();
    Some(match op.first().map(String::as_str)? {
        "seccomp-listener" => seccomp_listener(),
        "tiocsti" => tiocsti(),
        "vm-read-self" => vm_read_self(),
        "socket" => socket(&arg(1), &arg(2), &arg(3)),
        "open-o-path" => open_o_path(&arg(1)),
        "openat2-o-path" => openat2_o_path(&arg(1)),
        "list-dir" => list_dir(&arg(1)),
        "session" => session(),
        "meta" => meta(&op[1..]),
        "kill" => kill(&arg(1), &arg(2)),
        "pidfd-signal" => pidfd_signal(&arg(1)),
        "kill-own-child" => kill_own_child(),
        "unix" => unix(&arg(1), &arg(2)),
        "inbound" => inbound(&arg(1), &arg(2)),
        _ => return None,
    })
}
