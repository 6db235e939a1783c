//! Probes: the operations a scenario makes *inside* an agent (as the agent
//! user, under the backend's enforcement). Each prints one line
//! `result=<outcome>` on stdout: `ok`, `errno:N`, `exit:N`, `signal:N`,
//! optionally followed by ` detail`.
use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in probe arguments")
}

/// Runs `argv` in a forked child; reports the exec errno, exit code or signal.
/// The errno of a failed exec travels back over a close-on-exec pipe.
pub fn spawn_exec(argv: &[String], env: &[(String, String)]) -> String {
    exec_with(argv, env, |path, args, envp| {
        // SAFETY: execve with NULL-terminated arrays we own.
        unsafe { libc::execve(path.as_ptr(), args.as_ptr(), envp.as_ptr()) };
    })
}

fn exec_with(
    argv: &[String],
    env: &[(String, String)],
    exec: impl Fn(&CString, &[*const libc::c_char], &[*const libc::c_char]),
) -> String {
    let path = cstr(&argv[0]);
    let cargs: Vec<CString> = argv.iter().map(|a| cstr(a)).collect();
    let mut args: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    args.push(std::ptr::null());
    let mut cenv: Vec<CString> = std::env::vars()
        .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect();
    cenv.extend(env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))));
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut fds = [0; 2];
    // SAFETY: pipe2 into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return format!("errno:{}", errno());
    }
    // SAFETY: the child only execs or writes and _exits.
    match unsafe { libc::fork() } {
        -1 => format!("errno:{}", errno()),
        0 => {
            unsafe { libc::close(fds[0]) };
            exec(&path, &args, &envp);
            let e = errno().to_ne_bytes();
            unsafe {
                libc::write(fds[1], e.as_ptr().cast(), 4);
                libc::_exit(127)
            }
        }
        pid => {
            unsafe { libc::close(fds[1]) };
            // SAFETY: we own the read end now.
            let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let status = wait(pid);
            if buf.len() == 4 {
                return format!(
                    "errno:{}",
                    i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])
                );
            }
            status
        }
    }
}

fn wait(pid: i32) -> String {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        format!("exit:{}", libc::WEXITSTATUS(status))
    } else {
        format!("signal:{}", libc::WTERMSIG(status))
    }
}

/// open(2) with a mode letter: r (read), w (write), c (create+write).
pub fn open(path: &str, how: &str) -> String {
    let flags = match how {
        "w" => libc::O_WRONLY,
        "c" => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        _ => libc::O_RDONLY,
    };
    let p = cstr(path);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return format!("errno:{}", errno());
    }
    // SAFETY: fresh fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if how == "r" {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        format!("ok {}", s.lines().next().unwrap_or(""))
    } else {
        let _ = f.write_all(b"written by agent\n");
        "ok".into()
    }
}

fn connect(dest: &str) -> String {
    match std::net::TcpStream::connect(dest) {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Runs `op` in a descendant created by `how` and returns its result line,
/// passed back over a pipe (the descendant may outlive its parent).
fn in_descendant(how: &str, op: &[String]) -> String {
    let mut fds = [0; 2];
    // SAFETY: pipe into our array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return format!("errno:{}", errno());
    }
    let child_body = |wfd: i32| -> ! {
        let line = run_op(op);
        unsafe {
            libc::write(wfd, line.as_ptr().cast(), line.len());
            libc::_exit(0)
        }
    };
    let pid = match how {
        "fork" => unsafe { libc::fork() },
        "clone3" => {
            #[repr(C)]
            #[derive(Default)]
            struct CloneArgs {
                flags: u64,
                pidfd: u64,
                child_tid: u64,
                parent_tid: u64,
                exit_signal: u64,
                stack: u64,
                stack_size: u64,
                tls: u64,
            }
            let args = CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                ..Default::default()
            };
            // SAFETY: clone3 without CLONE_VM behaves like fork.
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                ) as i32
            }
        }
        "double-fork-setsid" => {
            // SAFETY: fork; the intermediate child only forks again and exits.
            match unsafe { libc::fork() } {
                0 => unsafe {
                    libc::setsid();
                    if libc::fork() == 0 {
                        child_body(fds[1]);
                    }
                    libc::_exit(0)
                },
                p => p,
            }
        }
        other => return format!("errno:0 unknown descendant kind {other}"),
    };
    if pid < 0 {
        return format!("errno:{}", errno());
    }
    if pid == 0 {
        unsafe { libc::close(fds[0]) };
        child_body(fds[1]);
    }
    unsafe { libc::close(fds[1]) };
    let _ = wait(pid);
    // SAFETY: we own the read end.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    if s.is_empty() {
        "errno:0 descendant reported nothing".into()
    } else {
        s
    }
}

/// glibc's posix_spawn is clone(CLONE_VM | CLONE_VFORK): the vfork path,
/// without Rust code running on a borrowed stack. Exec errors come back as
/// its return value.
fn vfork_exec(path: &str) -> String {
    let p = cstr(path);
    let argv = [p.as_ptr() as *mut libc::c_char, std::ptr::null_mut()];
    let envp = [std::ptr::null_mut::<libc::c_char>()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: valid path and NULL-terminated arrays; default attributes.
    let r = unsafe {
        libc::posix_spawn(
            &mut pid,
            p.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if r != 0 {
        return format!("errno:{r}");
    }
    wait(pid)
}

fn memfd_exec(src: &str) -> String {
    let bytes = match std::fs::read(src) {
        Ok(b) => b,
        Err(e) => return format!("errno:{} reading {src}", e.raw_os_error().unwrap_or(0)),
    };
    let name = cstr("agentd-scenario");
    // SAFETY: memfd_create with a valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return format!("errno:{}", errno());
    }
    // SAFETY: fresh fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if f.write_all(&bytes).is_err() {
        return format!("errno:{}", errno());
    }
    let fd = f.as_raw_fd();
    exec_with(&[src.to_string()], &[], move |_, args, envp| {
        let empty = cstr("");
        // SAFETY: execveat(AT_EMPTY_PATH) on our memfd.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                empty.as_ptr(),
                args.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
    })
}

fn proc_fd_reopen(path: &str) -> String {
    let p = cstr(path);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return format!("errno:{} (first open)", errno());
    }
    let _keep = unsafe { OwnedFd::from_raw_fd(fd) };
    open(&format!("/proc/self/fd/{fd}"), "w")
}

fn raw_syscall_errno(ret: libc::c_long) -> String {
    if ret < 0 {
        format!("errno:{}", errno())
    } else {
        "ok".into()
    }
}

/// A sibling forked now — before the scenario's decision — and this process
/// (the requester) both run `op` once the file `go` exists: the sibling
/// first, then this process. Result: `sib:<result> own:<result>`.
fn claim_race(go: &str, op: &[String]) -> String {
    let wait_for_go = || {
        for _ in 0..1500 {
            if Path::new(go).exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut fds = [0; 2];
    // SAFETY: pipe into our array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return format!("errno:{}", errno());
    }
    // SAFETY: the child runs the op, writes its line and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return format!("errno:{}", errno());
    }
    if pid == 0 {
        unsafe { libc::close(fds[0]) };
        wait_for_go();
        let line = run_op(op);
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0)
        }
    }
    unsafe { libc::close(fds[1]) };
    wait_for_go();
    let _ = wait(pid);
    // SAFETY: we own the read end.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut sib = String::new();
    let _ = r.read_to_string(&mut sib);
    let own = run_op(op);
    format!("sib:{sib} own:{own}")
}

/// Runs one operation and returns its result (without the `result=` prefix).
pub fn run_op(op: &[String]) -> String {
    let arg = |i: usize| op.get(i).cloned().unwrap_or_default();
    match op.first().map(String::as_str) {
        Some("exec") => spawn_exec(&op[1..], &[]),
        Some("claim-race") => claim_race(&arg(1), &op[2..]),
        Some("exec-preload") => spawn_exec(&op[2..], &[("LD_PRELOAD".into(), arg(1))]),
        Some("open") => open(&arg(1), op.get(2).map(String::as_str).unwrap_or("r")),
        Some("connect") => connect(&arg(1)),
        Some("descendant") => in_descendant(&arg(1), &op[2..]),
        Some("vfork-exec") => vfork_exec(&arg(1)),
        Some("memfd-exec") => memfd_exec(&arg(1)),
        Some("proc-fd-reopen") => proc_fd_reopen(&arg(1)),
        Some("io-uring") => {
            let mut params = [0u8; 120];
            // SAFETY: io_uring_setup with a zeroed params struct.
            let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
            raw_syscall_errno(r)
        }
        Some("sleep-then") => {
            let ms: u64 = arg(1).parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            run_op(&op[2..])
        }
        Some("repeat") => {
            // The op N times; reports the last result.
            let n: usize = arg(1).parse().unwrap_or(1);
            let mut last = String::new();
            for _ in 0..n {
                last = run_op(&op[2..]);
            }
            last
        }
        Some("seq") => {
            // Several ops in this process, results joined by " | ".
            op[1..]
                .split(|a| a == "--")
                .map(run_op)
                .collect::<Vec<_>>()
                .join(" | ")
        }
        other => crate::probe_hardening::run_op(op)
            .or_else(|| crate::probe_side::run_op(op))
            .unwrap_or_else(|| format!("errno:0 unknown probe {other:?}")),
    }
}

/// `agentd-scenarios probe [--socket S --bind CALL] OP ...`: prints `result=…`.
pub fn main(args: &[String]) -> i32 {
    let mut rest = args;
    let mut socket = None;
    let mut bind = None;
    loop {
        match rest.first().map(String::as_str) {
            Some("--socket") => {
                socket = rest.get(1).cloned();
                rest = &rest[2..];
            }
            Some("--bind") => {
                bind = rest.get(1).cloned();
                rest = &rest[2..];
            }
            _ => break,
        }
    }
    if let (Some(sock), Some(call)) = (&socket, &bind) {
        let req = agentd::enforce::launch::Request::Bind {
            call_id: call.clone(),
            pid: None,
        };
        if let Err(e) = agentd::enforce::launch::call(Path::new(sock), &req, None) {
            println!("result=bind_failed {e}");
            return 0;
        }
    }
    println!("result={}", run_op(rest));
    0
}
