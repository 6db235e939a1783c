//! Anomaly escalation's pure rule: a session's call counts against the
//! policy's `[anomaly]` thresholds. The counts themselves live in the
//! gateway (memory only, per session).
use super::schema::AnomalyDef;

/// A session's calls since its counts last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls decided (past the session check).
    pub calls: u32,
    /// Of which denied.
    pub denials: u32,
    /// Of which not of class `read`.
    pub writes: u32,
}

impl Counts {
    /// Adds one call.
    pub fn add(&mut self, denied: bool, write: bool) {
        self.calls = self.calls.saturating_add(1);
        self.denials = self.denials.saturating_add(u32::from(denied));
        self.writes = self.writes.saturating_add(u32::from(write));
    }
}

/// Whether `counts` trip `rules`: Some(the figures that did, for the audit
/// row and the answer's detail, e.g. `denials=3/7 (43%) threshold=30%`).
/// Nothing is judged before `min_calls` calls; a share must be strictly
/// above its threshold. Denials are judged first.
pub fn judge(counts: Counts, rules: &AnomalyDef) -> Option<String> {
    if counts.calls < rules.min_calls || counts.calls == 0 {
        return None;
    }
    let share = |n: u32| f64::from(n) / f64::from(counts.calls);
    for (what, n, max) in [
        ("denials", counts.denials, rules.max_denial_rate),
        ("writes", counts.writes, rules.max_write_ratio),
    ] {
        if share(n) > max {
            return Some(format!(
                "{what}={n}/{} ({}%) threshold={}%",
                counts.calls,
                (share(n) * 100.0).round(),
                (max * 100.0).round()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::schema::AnomalyThen;

    fn rules() -> AnomalyDef {
        AnomalyDef {
            min_calls: 5,
            max_denial_rate: 0.30,
            max_write_ratio: 0.80,
            then: AnomalyThen::Approval,
        }
    }

    fn counts(calls: u32, denials: u32, writes: u32) -> Counts {
        Counts {
            calls,
            denials,
            writes,
        }
    }

    #[test]
    fn nothing_is_judged_before_min_calls() {
        // 4 denials of 4 calls: every call denied, but below min_calls.
        assert_eq!(judge(counts(4, 4, 4), &rules()), None);
        assert_eq!(
            judge(counts(5, 4, 0), &rules()).as_deref(),
            Some("denials=4/5 (80%) threshold=30%")
        );
    }

    #[test]
    fn denial_rate_trips_strictly_above_its_threshold() {
        // 3 of 10 is exactly 30 %: not above.
        assert_eq!(judge(counts(10, 3, 0), &rules()), None);
        assert_eq!(
            judge(counts(7, 3, 0), &rules()).as_deref(),
            Some("denials=3/7 (43%) threshold=30%")
        );
    }

    #[test]
    fn write_ratio_trips_and_denials_are_named_first() {
        assert_eq!(judge(counts(10, 0, 8), &rules()), None);
        assert_eq!(
            judge(counts(6, 0, 5), &rules()).as_deref(),
            Some("writes=5/6 (83%) threshold=80%")
        );
        assert!(judge(counts(6, 6, 6), &rules())
            .unwrap()
            .starts_with("denials="));
        // A ratio of 1 never trips: every call a write is not above it.
        let mut r = rules();
        r.max_write_ratio = 1.0;
        assert_eq!(judge(counts(100, 0, 100), &r), None);
    }

    #[test]
    fn counts_saturate() {
        let mut c = counts(u32::MAX, 0, 0);
        c.add(true, true);
        assert_eq!(c, counts(u32::MAX, 1, 1));
    }
}
