//! Bounds of the enforcement socket: how many connections (and so
//! handler threads) may be open at once, how many of them callers other
//! than root may hold, and how long one may take. `agentctl run` (root)
//! keeps slots of its own, so agents flooding the socket with
//! `agentctl exec` cannot stop agents from being launched.
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// Limits of the enforcement socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (one handler thread each).
    pub max_conns: usize,
    /// Of those, how many callers other than root may hold.
    pub max_unprivileged: usize,
    /// Deadline of each read or write on a connection (SO_RCVTIMEO/SNDTIMEO).
    pub io_timeout: Duration,
    /// Deadline for a whole request to arrive.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 64,
            max_unprivileged: 48,
            io_timeout: Duration::from_secs(5),
            request_deadline: Duration::from_secs(10),
        }
    }
}

/// Open-connection counters shared by the accept loop and its handlers.
#[derive(Debug, Default)]
pub struct Counter {
    all: AtomicUsize,
    unprivileged: AtomicUsize,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Slot {
    counter: Arc<Counter>,
    unprivileged: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counter.all.fetch_sub(1, Ordering::AcqRel);
        if self.unprivileged {
            self.counter.unprivileged.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Takes a slot for a caller of `uid` if the limits leave one.
pub fn admit(counter: &Arc<Counter>, limits: &Limits, uid: u32) -> Option<Slot> {
    let unprivileged = uid != 0;
    if unprivileged && !take(&counter.unprivileged, limits.max_unprivileged) {
        return None;
    }
    if !take(&counter.all, limits.max_conns) {
        if unprivileged {
            counter.unprivileged.fetch_sub(1, Ordering::AcqRel);
        }
        return None;
    }
    Some(Slot {
        counter: counter.clone(),
        unprivileged,
    })
}

/// Open connections now (all callers).
pub fn open(counter: &Counter) -> usize {
    counter.all.load(Ordering::Acquire)
}

/// Increments `n` unless it has reached `max`.
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_callers_leave_root_its_slots() {
        let c = Arc::new(Counter::default());
        let l = Limits {
            max_conns: 3,
            max_unprivileged: 2,
            ..Limits::default()
        };
        let a = admit(&c, &l, 1000).expect("first agent slot");
        let _b = admit(&c, &l, 1000).expect("second agent slot");
        assert!(admit(&c, &l, 1000).is_none(), "agents hold their share");
        let r = admit(&c, &l, 0).expect("root still gets in");
        assert!(admit(&c, &l, 0).is_none(), "the total cap holds");
        assert_eq!(open(&c), 3);
        drop(a);
        drop(r);
        assert!(admit(&c, &l, 1000).is_some(), "freed slots are reused");
        assert_eq!(c.unprivileged.load(Ordering::Acquire), 1);
    }
}
