//! Usage thresholds: per (operator, role, action), the allowed calls within
//! a sliding window, beside the role's rate limit. The rate limit smooths
//! bursts; a threshold caps the total (`max_uses` per `window_secs`) and
//! hard-denies above it (`usage_threshold`). In memory, like the rate
//! buckets: a restart starts the count afresh.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::schema::UsageLimit;

/// Times of the recent uses, by (operator, role, action).
#[derive(Debug, Default)]
pub struct UsageCounter {
    uses: Mutex<HashMap<(String, String, String), VecDeque<Instant>>>,
}

impl UsageCounter {
    /// Records a use of `action` by `operator` under `role` at `now` if the
    /// threshold allows one more, and returns which use it is within the
    /// window (1-based); None (nothing recorded) if `max_uses` uses already
    /// fall within the last `window_secs`.
    pub fn take(
        &self,
        operator: &str,
        role: &str,
        action: &str,
        limit: UsageLimit,
        now: Instant,
    ) -> Option<usize> {
        let window = Duration::from_secs(limit.window_secs);
        let mut map = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let log = map
            .entry((operator.to_owned(), role.to_owned(), action.to_owned()))
            .or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            log.pop_front();
        }
        // A lowered threshold (policy reload) must not keep old uses past it.
        let max = limit.max_uses as usize;
        while log.len() > max {
            log.pop_front();
        }
        if log.len() >= max {
            return None;
        }
        log.push_back(now);
        Some(log.len())
    }

    /// Uses of (operator, role, action) within the window ending `now`.
    pub fn count(
        &self,
        operator: &str,
        role: &str,
        action: &str,
        limit: UsageLimit,
        now: Instant,
    ) -> usize {
        let window = Duration::from_secs(limit.window_secs);
        let map = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(operator.to_owned(), role.to_owned(), action.to_owned()))
            .map_or(0, |log| {
                log.iter()
                    .filter(|t| now.saturating_duration_since(**t) < window)
                    .count()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_uses: u32, window_secs: u64) -> UsageLimit {
        UsageLimit {
            max_uses,
            window_secs,
            escalate_after: None,
        }
    }

    #[test]
    fn max_uses_then_denied_until_the_window_slides() {
        let c = UsageCounter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let take = |ms: u64| c.take("olivia", "owner", "shell", limit(3, 10), at(ms));
        assert_eq!(
            (take(0), take(1000), take(2000)),
            (Some(1), Some(2), Some(3))
        );
        // The fourth within 10 s of the first is refused, and not counted.
        assert_eq!(take(5000), None);
        assert_eq!(
            c.count("olivia", "owner", "shell", limit(3, 10), at(5000)),
            3
        );
        assert_eq!(take(9_999), None);
        // 10 s after the first use, one slot frees (sliding, not fixed windows).
        assert_eq!(take(10_000), Some(3));
        assert_eq!(take(10_500), None);
        assert_eq!(take(11_000), Some(3));
    }

    #[test]
    fn counted_per_operator_role_and_action() {
        let c = UsageCounter::default();
        let t0 = Instant::now();
        let one = limit(1, 60);
        assert!(c.take("olivia", "owner", "shell", one, t0).is_some());
        assert!(c.take("olivia", "owner", "shell", one, t0).is_none());
        // Control: another operator, role or action has its own count.
        assert!(c.take("chen", "owner", "shell", one, t0).is_some());
        assert!(c.take("olivia", "member", "shell", one, t0).is_some());
        assert!(c.take("olivia", "owner", "send_email", one, t0).is_some());
    }

    #[test]
    fn a_lowered_threshold_applies_at_once() {
        let c = UsageCounter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(c.take("o", "r", "a", limit(5, 60), t0).is_some());
        }
        assert!(c.take("o", "r", "a", limit(2, 60), t0).is_none());
        assert_eq!(c.count("o", "r", "a", limit(2, 60), t0), 2);
    }
}
