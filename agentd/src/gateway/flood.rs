//! The limit on messages that are not verified (unsigned, bad signature,
//! unknown or revoked operator): anyone local may submit one, and each is
//! stored and audited, so without a limit a flood would grow the stores
//! without bound. Two token buckets must both have a token: one per peer
//! (Unix uid, or all of TCP) and one per claimed operator. The table of
//! buckets is bounded too: claimed names are the sender's choice.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most buckets kept; beyond, idle (full) buckets are dropped, and if none
/// is idle every new key is refused until some refill.
const MAX_BUCKETS: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Refusals since the bucket last had a token (only the first is audited).
    refused: u64,
}

/// Outcome of asking for one unverified message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodVerdict {
    /// Within the limits.
    Pass,
    /// Over a limit. `first` is true for the first refusal of a run (that
    /// one is audited; the rest are counted and logged, not stored).
    Limited {
        /// First refusal since the bucket last had a token.
        first: bool,
    },
}

/// Token buckets for unverified messages.
#[derive(Debug)]
pub struct FloodLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl FloodLimiter {
    /// `per_minute` messages per key, bursts of `burst`; 0 disables the limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from the peer's and the claimed operator's buckets.
    pub fn take(&self, peer: &str, claimed: &str, now: Instant) -> FloodVerdict {
        if self.per_minute == 0 {
            return FloodVerdict::Pass;
        }
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let keys = [format!("peer:{peer}"), format!("claimed:{claimed}")];
        // Refill both first; a token is spent only if both have one.
        let cap = f64::from(self.burst);
        let mut ok = true;
        for k in &keys {
            if !map.contains_key(k) && !self.make_room(&mut map, now) {
                return FloodVerdict::Limited { first: false };
            }
            let b = map.entry(k.clone()).or_insert(Bucket {
                tokens: cap,
                last: now,
                refused: 0,
            });
            let refill = now.saturating_duration_since(b.last).as_secs_f64()
                * f64::from(self.per_minute)
                / 60.0;
            b.tokens = (b.tokens + refill).min(cap);
            b.last = now;
            ok &= b.tokens >= 1.0;
        }
        let mut first = false;
        for k in &keys {
            let b = map.get_mut(k).expect("inserted above");
            if ok {
                b.tokens -= 1.0;
                b.refused = 0;
            } else if b.tokens < 1.0 {
                b.refused += 1;
                first |= b.refused == 1;
            }
        }
        if ok {
            FloodVerdict::Pass
        } else {
            FloodVerdict::Limited { first }
        }
    }

    /// Keeps the table bounded: drops full (idle) buckets when at the cap.
    fn make_room(&self, map: &mut HashMap<String, Bucket>, now: Instant) -> bool {
        if map.len() < MAX_BUCKETS {
            return true;
        }
        let cap = f64::from(self.burst);
        let rate = f64::from(self.per_minute) / 60.0;
        map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < cap
        });
        map.len() < MAX_BUCKETS
    }

    /// Number of buckets held (for tests).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn per_peer_and_per_claim_and_bounded() {
        let f = FloodLimiter::new(60, 2);
        let t = Instant::now();
        assert_eq!(f.take("uid:1", "olivia", t), FloodVerdict::Pass);
        assert_eq!(f.take("uid:1", "bob", t), FloodVerdict::Pass);
        // The peer's bucket is empty: refused, the first refusal is flagged.
        assert_eq!(
            f.take("uid:1", "carol", t),
            FloodVerdict::Limited { first: true }
        );
        assert_eq!(
            f.take("uid:1", "dave", t),
            FloodVerdict::Limited { first: false }
        );
        // Another peer claiming olivia still has room, once; then olivia's bucket is empty.
        assert_eq!(f.take("uid:2", "olivia", t), FloodVerdict::Pass);
        assert!(matches!(
            f.take("uid:3", "olivia", t),
            FloodVerdict::Limited { .. }
        ));
        // Refill: one per second.
        assert_eq!(
            f.take("uid:1", "erin", t + Duration::from_millis(1100)),
            FloodVerdict::Pass
        );
        // Thousands of invented names do not grow the table past the cap.
        for i in 0..(MAX_BUCKETS * 2) {
            let _ = f.take(&format!("uid:{}", i % 7), &format!("n{i}"), t);
        }
        assert!(f.len() <= MAX_BUCKETS);
    }
}
