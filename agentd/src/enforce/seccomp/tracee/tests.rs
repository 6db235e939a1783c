//! The cache never lets a new task inherit what an older one left: pids
//! are reused on purpose here (clone3 with `set_tid`, root only).
use super::*;

/// A value a forked child reads back from its copy of our memory.
static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The same for the exec test (tests run in parallel).
static EXEC_MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Forks a child that only waits to be killed, with pid `pid` if given
/// (clone3 `set_tid`: root); its pid, or None. A joined thread's pid is
/// released a moment after the join returns: EEXIST is tried again.
fn fork_child(pid: Option<u32>) -> Option<u32> {
    for _ in 0..1000 {
        match fork_once(pid) {
            None if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
    None
}

fn fork_once(pid: Option<u32>) -> Option<u32> {
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
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let want = pid.map(|p| p as libc::pid_t);
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: want.as_ref().map_or(0, |p| p as *const libc::pid_t as u64),
        set_tid_size: u64::from(want.is_some()),
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no shared memory); the child only calls
    // pause and _exit, which are async-signal-safe.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => loop {
            // SAFETY: waits for the signal that kills this child.
            unsafe { libc::pause() };
        },
        r if r > 0 => Some(r as u32),
        _ => None,
    }
}

/// A forked child, killed and reaped when dropped (also when an assertion
/// fails: a child left pausing would keep the test's output open).
struct Child(u32);

impl Drop for Child {
    fn drop(&mut self) {
        kill_and_reap(self.0);
    }
}

fn kill_and_reap(pid: u32) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}

fn open_plain(p: &str) -> io::Result<OwnedFd> {
    super::super::resolve::openat2(
        libc::AT_FDCWD,
        p.as_bytes(),
        (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
}

fn open_root(p: &str) -> io::Result<OwnedFd> {
    super::super::resolve::openat2(
        libc::AT_FDCWD,
        p.as_bytes(),
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        0,
        0,
    )
}

fn read_mark(pid: u32) -> Option<u64> {
    read_at(pid, &MARK)
}

fn read_at(pid: u32, mark: &std::sync::atomic::AtomicU64) -> Option<u64> {
    let mut b = [0u8; 8];
    let addr = mark as *const _ as u64;
    match read_mem(pid, addr, &mut b, open_plain)? {
        Ok(8) => Some(u64::from_ne_bytes(b)),
        _ => None,
    }
}

#[test]
fn a_thread_is_remembered_while_it_lives_and_forgotten_once_it_exits() {
    clear();
    let me = std::process::id();
    assert_eq!(tgid_of(me).unwrap(), me, "a leader is its own process");
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    next_notification();
    assert_eq!(
        tgid_of(tid).unwrap(),
        me,
        "a thread belongs to this process"
    );
    let cached = CACHE.with(|c| c.borrow().threads.contains_key(&tid));
    // Without thread pidfds (Linux < 6.9) only leaders are kept.
    let thread_pidfds = crate::enforce::pidfd::open(tid, PIDFD_THREAD).is_some();
    assert_eq!(cached, thread_pidfds);
    done_tx.send(()).unwrap();
    t.join().unwrap();
    next_notification();
    // The exited thread's entry is not served: its pid names no task now.
    assert!(tgid_of(tid).is_err(), "an exited thread has no process");
    assert!(CACHE.with(|c| !c.borrow().threads.contains_key(&tid)));
}

#[test]
fn a_reused_pid_gets_fresh_entries_not_the_old_tasks() {
    if !is_root() {
        eprintln!("SKIPPED: reusing a pid on purpose needs root (clone3 set_tid)");
        return;
    }
    clear();
    MARK.store(1, std::sync::atomic::Ordering::SeqCst);
    let Some(child_a) = fork_child(None).map(Child) else {
        panic!("clone3: {}", io::Error::last_os_error());
    };
    let a = child_a.0;
    next_notification();
    assert_eq!(tgid_of(a).unwrap(), a);
    let root = root_of(a, open_root).unwrap();
    assert_eq!(read_mark(a), Some(1), "child A's copy of MARK");
    // Control: while A lives, the same entries are served.
    next_notification();
    assert!(Rc::ptr_eq(&root, &root_of(a, open_root).unwrap()));
    let mem_a = CACHE.with(|c| c.borrow().processes[&a].mem.clone().unwrap());
    drop(child_a);
    // Another process with A's pid, whose memory says 2.
    MARK.store(2, std::sync::atomic::Ordering::SeqCst);
    let Some(child_b) = fork_child(Some(a)).map(Child) else {
        panic!("clone3 set_tid: {}", io::Error::last_os_error());
    };
    let b = child_b.0;
    assert_eq!(b, a, "the pid was reused");
    next_notification();
    assert_eq!(tgid_of(b).unwrap(), b);
    let root_b = root_of(b, open_root).unwrap();
    assert!(
        !Rc::ptr_eq(&root, &root_b),
        "B does not inherit A's root handle"
    );
    assert_eq!(read_mark(b), Some(2), "B's memory is read, not A's");
    let mem_b = CACHE.with(|c| c.borrow().processes[&b].mem.clone().unwrap());
    assert!(!Rc::ptr_eq(&mem_a, &mem_b), "nor A's memory handle");
}

#[test]
fn an_exited_threads_pid_reused_by_a_process_is_that_process() {
    if !is_root() {
        eprintln!("SKIPPED: reusing a pid on purpose needs root (clone3 set_tid)");
        return;
    }
    clear();
    let me = std::process::id();
    let tid = std::thread::spawn(gettid).join().unwrap();
    // Learned while the thread lived? Then forgotten; either way the pid
    // now names a new process, its own leader.
    let _ = tgid_of(tid);
    let Some(child) = fork_child(Some(tid)).map(Child) else {
        panic!("clone3 set_tid: {}", io::Error::last_os_error());
    };
    next_notification();
    let tgid = tgid_of(child.0).unwrap();
    assert_eq!(
        tgid, child.0,
        "not {me}, the process of the thread that had the pid"
    );
}

#[test]
fn a_thread_learned_live_then_reused_is_not_served_its_old_process() {
    if !is_root() {
        eprintln!("SKIPPED: reusing a pid on purpose needs root (clone3 set_tid)");
        return;
    }
    clear();
    let me = std::process::id();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    next_notification();
    assert_eq!(tgid_of(tid).unwrap(), me);
    done_tx.send(()).unwrap();
    t.join().unwrap();
    let Some(child) = fork_child(Some(tid)).map(Child) else {
        panic!("clone3 set_tid: {}", io::Error::last_os_error());
    };
    next_notification();
    let tgid = tgid_of(child.0);
    assert_eq!(
        tgid.unwrap(),
        child.0,
        "the cached tgid {me} is not inherited"
    );
}

#[test]
fn an_exec_drops_the_memory_handle() {
    clear();
    let me = std::process::id();
    EXEC_MARK.store(7, std::sync::atomic::Ordering::SeqCst);
    next_notification();
    assert_eq!(read_at(me, &EXEC_MARK), Some(7));
    let held = |tgid| {
        CACHE.with(|c| {
            c.borrow()
                .processes
                .get(&tgid)
                .is_some_and(|p| p.mem.is_some())
        })
    };
    assert!(held(me));
    exec_continued(me);
    assert!(!held(me), "dropped when the process is let through an exec");
    assert_eq!(read_at(me, &EXEC_MARK), Some(7), "and opened again");
}
