//! Asking a supervisor thread to stop.
//!
//! The thread waits for its next notification in SECCOMP_IOCTL_NOTIF_RECV
//! itself, not in a `poll` before it: on the agent's path that is one
//! system call and one trip through the poll machinery less per notified
//! syscall. A stop request therefore interrupts that wait with a signal
//! (a real-time one, whose handler does nothing and is installed without
//! SA_RESTART, so the ioctl returns EINTR). The signal is sent only while
//! the thread is waiting there, so an ADDFD it is waiting on for an agent
//! is never interrupted. A signal that lands between the thread's last
//! look at the flag and its entry into the wait is lost; the thread then
//! stops at its next notification (which it answers: an unanswered one
//! would hang the agent's task), and whoever waits for it asks again.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    thread::JoinHandle,
};

/// A stop request, shared by a supervisor thread and whoever stops it.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    /// The thread is in (or about to enter) its wait for a notification.
    waiting: AtomicBool,
}

impl Stop {
    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Asks `thread` (the one that uses this flag) to stop, interrupting
    /// its wait for a notification. Idempotent: call it again while waiting
    /// for the thread to end.
    pub fn request(&self, thread: &JoinHandle<()>) {
        self.requested.store(true, Ordering::SeqCst);
        // Both sides store then load (SeqCst): either the thread sees the
        // request before it waits, or this sees it waiting.
        if self.waiting.load(Ordering::SeqCst) && !thread.is_finished() {
            interrupt(thread);
        }
    }

    /// Marks the calling thread as waiting until the guard drops. Check
    /// [`Stop::is_requested`] after taking it, then wait.
    pub fn waiting(&self) -> Waiting<'_> {
        install_handler();
        self.waiting.store(true, Ordering::SeqCst);
        Waiting(self)
    }
}

/// The thread is waiting for a notification while this lives.
pub struct Waiting<'a>(&'a Stop);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::SeqCst);
    }
}

/// The signal that interrupts the wait.
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn interrupted(_: libc::c_int) {}

/// Installs the do-nothing handler once per process, before any thread
/// can be sent the signal (its default action would end the process).
fn install_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing;
        // no SA_RESTART, so a blocking ioctl returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = interrupted as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(signal(), &sa, std::ptr::null_mut()) != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(),
                    "no handler for the supervisor's stop signal; a stop waits for the next notification");
            }
        }
    });
}

fn interrupt(thread: &JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt as _;
    // SAFETY: the handle is not joined, so its pthread_t is valid; the
    // handler was installed before `waiting` could be set.
    unsafe { libc::pthread_kill(thread.as_pthread_t(), signal()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};

    /// A thread blocked in a read of an empty pipe stands for one blocked
    /// in SECCOMP_IOCTL_NOTIF_RECV: both are interruptible waits.
    #[test]
    fn a_request_interrupts_a_waiting_thread() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let t = std::thread::spawn(move || loop {
            let _w = s.waiting();
            if s.is_requested() {
                return;
            }
            let mut b = [0u8; 1];
            let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
            assert_eq!(
                n,
                Err(nix::errno::Errno::EINTR),
                "the read ends only by the signal"
            );
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "control: the thread waits until asked");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the stop did not interrupt the wait"
            );
            stop.request(&t);
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap();
    }
}
