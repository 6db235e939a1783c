//! Overhead of the seccomp backend, measured in one run on this machine
//! (root needed; prints SKIPPED otherwise):
//!
//! - a bare user-notification CONTINUE round trip (a responder thread answering
//!   a notified getppid), with and without SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
//! - open()+close() and fork+exec+wait of /usr/bin/true, outside any agent and
//!   inside an agent run by the real launcher under agentd's supervisor
//!   (read path, decide, openat2, ADDFD; exec: EXEC_EXPECT + tp_btf check),
//!   with and without SYNC_WAKE_UP;
//! - loopback connect (cgroup connect4 program) and an un-notified syscall
//!   (getpid: the filter alone), outside vs inside;
//! - the supervisor's decision work alone (path read from a process, policy
//!   check, audit enqueue).
//!
//! Run: `cargo bench -p agentd --bench seccomp_overhead` (ITER=N to change the count).
use std::{
    ffi::OsString,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::Instant,
};

use agentd::{
    doctor::Backend,
    enforce::{default_baseline, events::KernelRecord, grant, launch, Enforcer, MemorySink, Mode},
};

const AGENT_USER: &str = "agentd-agent";
/// Design target: a supervised open adds at most this many bare round trips.
const OPEN_TARGET: f64 = 3.0;
/// Design target: fork+exec inside an agent at most this many times outside.
const EXEC_TARGET: f64 = 1.2;
const TRUE: &str = "/usr/bin/true";

fn iterations() -> usize {
    std::env::var("ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

/// (p50, p99) in nanoseconds.
fn percentiles(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

fn time_each(n: usize, mut f: impl FnMut()) -> Vec<u64> {
    for _ in 0..n / 10 {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

// ---------- measurements that run inside the measured process ----------

fn op_open() {
    let p = c"/usr/bin/true";
    // SAFETY: plain syscalls.
    unsafe {
        let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "open failed: {}", std::io::Error::last_os_error());
        libc::close(fd);
    }
}

fn op_exec() {
    let p = c"/usr/bin/true";
    let argv = [p.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: the child only execs or _exits.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "exec of true failed: {st:#x}"
        );
    }
}

fn op_connect(port: u16) -> impl FnMut() {
    move || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("loopback connect");
        drop(s);
    }
}

fn op_getpid() {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_getpid) };
}

/// `__measure KIND N [PORT]`: prints `KIND p50 p99` (ns).
fn measure(args: &[String]) {
    let kind = args[0].as_str();
    let n: usize = args[1].parse().expect("count");
    let samples = match kind {
        "open" => time_each(n, op_open),
        "exec" => time_each(n / 10, op_exec),
        "connect" => time_each(n / 4, op_connect(args[2].parse().expect("port"))),
        "getpid" => time_each(n * 10, op_getpid),
        other => panic!("unknown measurement {other}"),
    };
    let (p50, p99) = percentiles(samples);
    println!("{kind} {p50} {p99}");
}

/// A notified getppid in a child process, answered CONTINUE by a thread of
/// this (another) process — the same shape as agent and agentd.
fn bare_continue(n: usize, sync: bool) -> Option<(u64, u64)> {
    use std::io::Read as _;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
    let mut fds = [0; 2];
    // SAFETY: pipe into our array.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: called while this process is single-threaded; the child only
    // installs a filter, sends the listener, measures and _exits.
    match unsafe { libc::fork() } {
        0 => {
            drop(ours);
            let Ok(listener) =
                agentd::enforce::seccomp::filter::install_notify_only(libc::SYS_getppid)
            else {
                unsafe { libc::_exit(2) }
            };
            let raw = [listener.as_raw_fd()];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
            let iov = [std::io::IoSlice::new(b"l")];
            if nix::sys::socket::sendmsg::<()>(
                theirs.as_raw_fd(),
                &iov,
                &cmsg,
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .is_err()
            {
                unsafe { libc::_exit(3) }
            }
            drop(listener);
            // Wait until the responder is ready.
            let mut b = [0u8; 1];
            let _ = (&theirs).read(&mut b);
            let v = time_each(n, || unsafe {
                libc::syscall(libc::SYS_getppid);
            });
            let (p50, p99) = percentiles(v);
            let out = format!("{p50} {p99}");
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(0)
            }
        }
        pid => {
            drop(theirs);
            unsafe { libc::close(fds[1]) };
            let mut buf = [0u8; 1];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = nix::sys::socket::recvmsg::<()>(
                ours.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                nix::sys::socket::MsgFlags::empty(),
            )
            .ok()?;
            let mut listener = None;
            for c in msg.cmsgs().ok()? {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(f) = c {
                    // SAFETY: received from the kernel for us.
                    listener = f.first().map(|&fd| unsafe {
                        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                    });
                }
            }
            let listener = listener?;
            if sync {
                agentd::enforce::seccomp::notif::set_sync_wakeup(listener.as_fd());
            }
            let responder = std::thread::spawn(move || loop {
                match agentd::enforce::seccomp::notif::recv(listener.as_fd()) {
                    Ok(n) => {
                        let _ = agentd::enforce::seccomp::notif::respond_continue(
                            listener.as_fd(),
                            n.id,
                        );
                    }
                    Err(_) => return,
                }
            });
            use std::io::Write as _;
            let _ = (&ours).write_all(b"g");
            let mut s = String::new();
            // SAFETY: we own the read end.
            let _ = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) }
                .read_to_string(&mut s);
            let mut st = 0;
            unsafe { libc::waitpid(pid, &mut st, 0) };
            // The listener reports an error once the child is gone.
            drop(responder);
            let mut it = s.split_whitespace().filter_map(|x| x.parse().ok());
            Some((it.next()?, it.next()?))
        }
    }
}

// ---------- interleaved rounds ----------

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The two targets again, as the median over `ROUNDS` (default 5) rounds
/// that each measure the bare round trip and the supervised open of one
/// mode back to back, and fork+exec outside then inside: on a shared
/// machine the load moves between the stages of one long pass, which
/// moves each ratio by more than the effect measured.
fn interleaved(d: &Driver, n: usize, sync_ok: bool, label: &str) {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let per = (n / rounds.max(1)).max(100).to_string();
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let (mut plain, mut sync, mut exec) = (Vec::new(), Vec::new(), Vec::new());
    let open_out = d.outside(&["open", &per]).0;
    for _ in 0..rounds {
        let modes: &[bool] = if sync_ok { &[false, true] } else { &[false] };
        for &mode in modes {
            let bare = d.bare(&per, mode).0;
            d.enforcer.set_sync_wakeup(mode);
            let open = d.inside("bench", &["open", &per]).0;
            let r = ratio(open.saturating_sub(open_out), bare);
            if mode { &mut sync } else { &mut plain }.push(r);
        }
        let out = d.outside(&["exec", &per]).0;
        let inside = d.inside("bench", &["exec", &per]).0;
        exec.push(ratio(inside, out));
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "interleaved{label}, {rounds} rounds: open added / bare plain {:.2}x [{}], SYNC_WAKE_UP {:.2}x [{}]; fork+exec inside / outside {:.2}x [{}] (targets <= {OPEN_TARGET:.1}x, <= {EXEC_TARGET:.2}x)",
        median(plain.clone()),
        list(&plain),
        median(sync.clone()),
        list(&sync),
        median(exec.clone()),
        list(&exec)
    );
}

// ---------- the driver ----------

fn launcher(args: &[String]) -> i32 {
    let socket = PathBuf::from(&args[0]);
    let agent = args[1].clone();
    let argv: Vec<OsString> = args[2..].iter().map(OsString::from).collect();
    let creds = launch::creds_of_user(AGENT_USER).expect("agent user");
    let spec = launch::LaunchSpec {
        socket,
        agent,
        mode: None,
        creds,
        argv,
    };
    launch::run_agent(&spec).expect("launch")
}

struct Driver {
    exe: PathBuf,
    socket: PathBuf,
    enforcer: Enforcer,
}

impl Driver {
    fn inside(&self, agent: &str, args: &[&str]) -> (u64, u64) {
        let out = Command::new(&self.exe)
            .arg("__launch")
            .arg(&self.socket)
            .arg(agent)
            .arg(&self.exe)
            .arg("__measure")
            .args(args)
            .output()
            .expect("launch measurement");
        parse(&out.stdout, &out.stderr)
    }

    /// A bare CONTINUE round trip measured in a fresh process.
    fn bare(&self, n: &str, sync: bool) -> (u64, u64) {
        let out = Command::new(&self.exe)
            .args(["__bare", n, if sync { "sync" } else { "plain" }])
            .output()
            .expect("bare measurement");
        parse(&out.stdout, &out.stderr)
    }

    fn outside(&self, args: &[&str]) -> (u64, u64) {
        let out = Command::new(&self.exe)
            .arg("__measure")
            .args(args)
            .output()
            .expect("measurement");
        parse(&out.stdout, &out.stderr)
    }
}

fn parse(stdout: &[u8], stderr: &[u8]) -> (u64, u64) {
    let s = String::from_utf8_lossy(stdout);
    let mut it = s.split_whitespace().skip(1).filter_map(|x| x.parse().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!(
            "measurement failed: {s}\n{}",
            String::from_utf8_lossy(stderr)
        ),
    }
}

/// The 1, 5 and 15 minute load averages (the machine's other work).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn us(ns: u64) -> String {
    format!("{:.1}µs", ns as f64 / 1000.0)
}

fn row(name: &str, bare: (u64, u64), inside: (u64, u64)) -> (u64, u64) {
    let added = (
        inside.0.saturating_sub(bare.0),
        inside.1.saturating_sub(bare.1),
    );
    println!(
        "{name:<34} outside p50 {:>9} p99 {:>9} | inside p50 {:>9} p99 {:>9} | added p50 {:>9} p99 {:>9} | ratio {:.2}",
        us(bare.0),
        us(bare.1),
        us(inside.0),
        us(inside.1),
        us(added.0),
        us(added.1),
        inside.0 as f64 / bare.0.max(1) as f64
    );
    added
}

/// The supervisor's decision work alone: read a path from a process, check
/// it against a baseline-sized grant, enqueue an audit record.
fn decision_work(n: usize) -> (u64, u64) {
    let spec = default_baseline();
    let g = grant::KernelGrant::from_spec(&spec, 1, 0).expect("baseline");
    let (tx, rx) = mpsc::channel::<KernelRecord>();
    let drain = std::thread::spawn(move || rx.into_iter().count());
    let path = c"/usr/lib/x86_64-linux-gnu/libc.so.6";
    let pid = std::process::id();
    let v = time_each(n, || {
        let bytes = agentd::enforce::seccomp::notif::read_cstring(pid, path.as_ptr() as u64, 4096)
            .expect("read");
        let p = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes));
        let verdict = g.check_path(p, grant::Access::Read, pid, 1);
        let (allowed, reason) = grant::decide(None, verdict);
        let _ = tx.send(KernelRecord {
            agent: "bench".into(),
            call_id: String::new(),
            active_message_id: String::new(),
            action: "file_open".into(),
            target: p.display().to_string(),
            decision: if allowed { "allow" } else { "deny" },
            reason_code: reason.into(),
            pid,
            latency_us: 0,
            access: Some("read"),
        });
    });
    drop(tx);
    let _ = drain.join();
    percentiles(v)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__measure") => return measure(&args[1..]),
        Some("__launch") => std::process::exit(launcher(&args[1..])),
        Some("__bare") => {
            // A fresh, single-threaded process: bare_continue forks.
            let n: usize = args[1].parse().expect("count");
            let (p50, p99) = bare_continue(n, args[2] == "sync").expect("bare round trip");
            println!("bare {p50} {p99}");
            return;
        }
        _ => {}
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the seccomp overhead benchmark needs root");
        return;
    }
    let report = agentd::doctor::run();
    if report.backend == Backend::None {
        println!("SKIPPED: no enforcement backend: {}", report.reason);
        return;
    }
    if Command::new("id")
        .arg(AGENT_USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                AGENT_USER,
            ])
            .status();
    }
    let n = iterations();
    let load_before = load();
    // Bare round trips first, while this process is still single-threaded.
    let sync_ok = report.probe("seccomp_sync_wakeup").is_some_and(|p| p.ok);
    let bare_plain = bare_continue(n, false).expect("bare round trip");
    let bare_sync = if sync_ok {
        bare_continue(n, true)
    } else {
        None
    };
    let base = std::env::temp_dir().join(format!("agentd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");
    let enforcer =
        Enforcer::start(Backend::Seccomp, &base, MemorySink::default()).expect("enforcer");
    let socket = base.join("enforce.sock");
    launch::serve(enforcer.clone(), &socket).expect("socket");
    let exe = std::fs::canonicalize(std::env::current_exe().expect("exe")).expect("exe path");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c)
        }
    });
    let mut baseline = default_baseline();
    baseline.exec.extend([exe.clone(), PathBuf::from(TRUE)]);
    baseline.read.push(exe.clone());
    baseline.connect.push(format!("127.0.0.1:{port}"));
    enforcer
        .create_agent(
            "bench",
            agentd::enforce::AgentOptions::with_baseline(Mode::Enforce, baseline.clone()),
        )
        .expect("agent");
    let d = Driver {
        exe,
        socket,
        enforcer,
    };

    if std::env::var_os(ONE_CPU_ENV).is_some() {
        interleaved(&d, n, sync_ok, " on one CPU");
        d.enforcer.uninstall();
        let _ = std::fs::remove_dir_all(&base);
        return;
    }
    println!(
        "seccomp backend overhead — {n} iterations (exec: {}, connect: {}), kernel {}",
        n / 10,
        n / 4,
        report.kernel
    );
    let getppid = time_each(n, || unsafe {
        libc::syscall(libc::SYS_getppid);
    });
    let getppid = percentiles(getppid);
    let cont_plain = row("bare CONTINUE round trip (getppid)", getppid, bare_plain);
    let cont_sync = bare_sync.map(|b| row("bare CONTINUE, SYNC_WAKE_UP", getppid, b));

    let open_out = d.outside(&["open", &n.to_string()]);
    d.enforcer.set_sync_wakeup(false);
    let open_in_plain = d.inside("bench", &["open", &n.to_string()]);
    let open_plain = row("open+close, supervised", open_out, open_in_plain);
    let mut open_sync = None;
    if sync_ok {
        d.enforcer.set_sync_wakeup(true);
        let open_in_sync = d.inside("bench", &["open", &n.to_string()]);
        open_sync = Some(row(
            "open+close, supervised, SYNC_WAKE_UP",
            open_out,
            open_in_sync,
        ));
    }
    let exec_out = d.outside(&["exec", &n.to_string()]);
    let exec_in = d.inside("bench", &["exec", &n.to_string()]);
    row("fork+exec+wait /usr/bin/true", exec_out, exec_in);
    let exec_ratio = exec_in.0 as f64 / exec_out.0.max(1) as f64;
    let conn_out = d.outside(&["connect", &n.to_string(), &port.to_string()]);
    let conn_in = d.inside("bench", &["connect", &n.to_string(), &port.to_string()]);
    row("loopback connect (cgroup connect4)", conn_out, conn_in);
    let gp_out = d.outside(&["getpid", &n.to_string()]);
    let gp_in = d.inside("bench", &["getpid", &n.to_string()]);
    row("getpid (un-notified: filter only)", gp_out, gp_in);
    let work = decision_work(n);
    println!(
        "supervisor decision work (path read + policy + audit enqueue): p50 {} p99 {}",
        us(work.0),
        us(work.1)
    );
    let within = |r: f64, target: f64| if r <= target { "met" } else { "NOT met" };
    let open_ratio = open_plain.0 as f64 / cont_plain.0.max(1) as f64;
    println!(
        "target: supervised open <= {OPEN_TARGET:.1}x the bare CONTINUE round trip of the same mode: plain {:.2}x ({} added / {} bare, {}){}",
        open_ratio,
        us(open_plain.0),
        us(cont_plain.0),
        within(open_ratio, OPEN_TARGET),
        match (open_sync, cont_sync) {
            (Some(o), Some(c)) => {
                let r = o.0 as f64 / c.0.max(1) as f64;
                format!(
                    ", SYNC_WAKE_UP {r:.2}x ({} added / {} bare, {})",
                    us(o.0),
                    us(c.0),
                    within(r, OPEN_TARGET)
                )
            }
            _ => String::new(),
        }
    );
    println!(
        "target: fork+exec inside an agent <= {EXEC_TARGET:.2}x outside: {exec_ratio:.2}x ({})",
        within(exec_ratio, EXEC_TARGET)
    );
    interleaved(&d, n, sync_ok, "");
    let c = d.enforcer.counters();
    println!(
        "supervisor: {} notifications, {} allowed, {} denied",
        c.notifications, c.supervisor_allowed, c.supervisor_denied
    );
    d.enforcer.uninstall();
    let _ = std::fs::remove_dir_all(&base);
    one_cpu_pass(&d.exe);
    println!("load average: before {load_before}, after {}", load());
}

/// Set in the pass [`one_cpu_pass`] runs.
const ONE_CPU_ENV: &str = "AGENTD_BENCH_ONE_CPU";

/// The interleaved rounds again in a copy of this benchmark confined to
/// one CPU, with everything it starts (agentd's supervisor threads, the
/// agent's processes, the bare round trips): no wake-up crosses CPUs and
/// no exec is moved to an idle one (the kernel balances a task at exec
/// while its supervisor, which has just answered, is still runnable on
/// its CPU). What is left is agentd's own work per notification; on a
/// host whose idle vCPUs halt, the pass above adds the wake-ups.
fn one_cpu_pass(exe: &std::path::Path) {
    // The CPUs this process may use (a cpuset may exclude CPU 0): the
    // pass runs on the first of them, and only if there is a second.
    // SAFETY: sched_getaffinity fills a set we own.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&allowed), &mut allowed) } != 0
        || unsafe { libc::CPU_COUNT(&allowed) } < 2
    {
        return;
    }
    let Some(cpu) =
        (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
    else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--bench").env(ONE_CPU_ENV, "1");
    // SAFETY: sched_setaffinity on the child itself, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(st) if st.success() => {}
        other => println!("one-CPU pass failed: {other:?}"),
    }
}
