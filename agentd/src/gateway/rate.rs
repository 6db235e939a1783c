//! Per-(operator, role) token buckets for the policy's rate limits.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by operator and role.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, HashMap<String, Bucket>>>,
}

impl RateLimiter {
    /// Takes one token for (operator, role) at `per_minute` with `burst` capacity; false if empty.
    pub fn take(
        &self,
        operator: &str,
        role: &str,
        per_minute: u32,
        burst: u32,
        now: Instant,
    ) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let cap = f64::from(burst.max(1));
        // Nested maps allow lookups by &str: keys are allocated only for a new bucket.
        if !map.contains_key(operator) {
            map.insert(operator.to_owned(), HashMap::new());
        }
        let roles = map.get_mut(operator).expect("inserted above");
        if !roles.contains_key(role) {
            roles.insert(
                role.to_owned(),
                Bucket {
                    tokens: cap,
                    last: now,
                },
            );
        }
        let b = roles.get_mut(role).expect("inserted above");
        let refill =
            now.saturating_duration_since(b.last).as_secs_f64() * f64::from(per_minute) / 60.0;
        b.tokens = (b.tokens + refill).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets all buckets (after a policy reload changes the rates).
    pub fn clear(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.take("a", "x", 60, 2, t0));
        assert!(r.take("a", "x", 60, 2, t0));
        assert!(!r.take("a", "x", 60, 2, t0));
        // Another operator has its own bucket.
        assert!(r.take("b", "x", 60, 2, t0));
        // One token per second at 60/min.
        assert!(r.take("a", "x", 60, 2, t0 + Duration::from_millis(1001)));
        assert!(!r.take("a", "x", 60, 2, t0 + Duration::from_millis(1002)));
    }
}
