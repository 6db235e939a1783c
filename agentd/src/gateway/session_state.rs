//! Per-session state the session checks keep in memory: the elevations
//! approvers granted (action → until when) and the anomaly counts (calls,
//! denials, writes since the last reset, and whether the session tripped).
//! Time is passed in (Unix seconds), so the state machine is tested with a
//! fake clock. Nothing is stored: a restart ends every elevation and resets
//! every count (fail closed for elevations; counts start afresh).
use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::anomaly::{self, Counts};
use crate::policy::schema::AnomalyDef;

/// Sessions with state at once; beyond, a new session's calls are counted
/// only once sessions without an elevation or a trip have been forgotten.
pub const MAX_SESSIONS: usize = 65_536;

/// An elevation an approver granted: `action` proceeds in the session
/// without asking until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Elevation {
    /// The action elevated.
    pub action: String,
    /// Unix seconds; from then on the action asks again.
    pub until: i64,
    /// Who approved (`uid:0`, `console:uid:0`, `webhook:slack:U1`).
    pub approver: String,
    /// The session's operator when it was granted.
    pub operator: String,
    /// The agent whose call asked (empty outside every agent).
    pub agent: String,
}

#[derive(Debug, Default)]
struct State {
    elevations: Vec<Elevation>,
    counts: Counts,
    /// The figures that tripped the anomaly check, while tripped.
    tripped: Option<String>,
}

impl State {
    fn idle(&self) -> bool {
        self.elevations.is_empty() && self.tripped.is_none()
    }
}

/// A session's state as listed (`agentctl session list`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionView {
    /// Elevations in force.
    pub elevations: Vec<Elevation>,
    /// Calls, denials and writes counted since the last reset.
    pub calls: u32,
    /// Denied calls among them.
    pub denials: u32,
    /// Non-`read` calls among them.
    pub writes: u32,
    /// The figures that tripped the anomaly check, while tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<String>,
}

/// Every session's state. Share it inside the gateway.
#[derive(Debug, Default)]
pub struct SessionStates {
    map: Mutex<HashMap<String, State>>,
}

impl SessionStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when `action` is elevated in `session` for calls on
    /// `operator`'s messages at `now`, if it is (an elevation granted under
    /// one operator does not pass to another that rebinds the session).
    /// Expired elevations are dropped here.
    pub fn elevated_until(
        &self,
        session: &str,
        action: &str,
        operator: &str,
        now: i64,
    ) -> Option<i64> {
        let mut map = self.lock();
        let st = map.get_mut(session)?;
        st.elevations.retain(|e| e.until > now);
        st.elevations
            .iter()
            .find(|e| e.action == action && e.operator == operator)
            .map(|e| e.until)
    }

    /// Records an elevation (replacing one of the same action).
    pub fn elevate(&self, session: &str, e: Elevation) {
        let mut map = self.lock();
        let st = map.entry(session.to_owned()).or_default();
        st.elevations.retain(|x| x.action != e.action);
        st.elevations.push(e);
    }

    /// The figures that tripped `session`'s anomaly check, while tripped.
    pub fn tripped(&self, session: &str) -> Option<String> {
        self.lock().get(session).and_then(|s| s.tripped.clone())
    }

    /// Counts one call of `session`; returns the figures when this call
    /// trips the anomaly check (once: a tripped session stays tripped
    /// until [`Self::reset_anomaly`] or [`Self::end_session`]).
    pub fn count(
        &self,
        session: &str,
        denied: bool,
        write: bool,
        rules: &AnomalyDef,
    ) -> Option<String> {
        let mut map = self.lock();
        if !map.contains_key(session) && map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !s.idle());
            if map.len() >= MAX_SESSIONS {
                tracing::warn!(
                    sessions = map.len(),
                    "too many sessions with elevations or trips; a new session's calls are not counted"
                );
                return None;
            }
        }
        let st = map.entry(session.to_owned()).or_default();
        st.counts.add(denied, write);
        if st.tripped.is_some() {
            return None;
        }
        st.tripped = anomaly::judge(st.counts, rules);
        st.tripped.clone()
    }

    /// Clears `session`'s counts and trip (an approver approved one of its
    /// escalated calls); its elevations stay.
    pub fn reset_anomaly(&self, session: &str) {
        if let Some(st) = self.lock().get_mut(session) {
            st.counts = Counts::default();
            st.tripped = None;
        }
    }

    /// Forgets `session` (released): its elevations end, its counts reset.
    /// Returns how many elevations ended.
    pub fn end_session(&self, session: &str) -> usize {
        self.lock()
            .remove(session)
            .map_or(0, |s| s.elevations.len())
    }

    /// Ends every elevation `ends` selects (the kill switch); returns how
    /// many ended.
    pub fn end_elevations(&self, ends: impl Fn(&Elevation) -> bool) -> usize {
        let mut n = 0;
        for st in self.lock().values_mut() {
            let before = st.elevations.len();
            st.elevations.retain(|e| !ends(e));
            n += before - st.elevations.len();
        }
        n
    }

    /// The state of every session that has some, at `now` (expired
    /// elevations left out).
    pub fn views(&self, now: i64) -> HashMap<String, SessionView> {
        self.lock()
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    SessionView {
                        elevations: s
                            .elevations
                            .iter()
                            .filter(|e| e.until > now)
                            .cloned()
                            .collect(),
                        calls: s.counts.calls,
                        denials: s.counts.denials,
                        writes: s.counts.writes,
                        anomaly: s.tripped.clone(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::schema::AnomalyThen;

    fn elevation(action: &str, until: i64) -> Elevation {
        Elevation {
            action: action.into(),
            until,
            approver: "uid:0".into(),
            operator: "olivia".into(),
            agent: "claude".into(),
        }
    }

    fn rules() -> AnomalyDef {
        AnomalyDef {
            min_calls: 5,
            max_denial_rate: 0.30,
            max_write_ratio: 0.80,
            then: AnomalyThen::Approval,
        }
    }

    #[test]
    fn an_elevation_lasts_until_its_time_for_its_action_and_session_only() {
        let s = SessionStates::default();
        let t0 = 1_000;
        assert_eq!(s.elevated_until("s1", "deploy", "olivia", t0), None);
        s.elevate("s1", elevation("deploy", t0 + 300));
        assert_eq!(
            s.elevated_until("s1", "deploy", "olivia", t0),
            Some(t0 + 300)
        );
        assert_eq!(
            s.elevated_until("s1", "deploy", "olivia", t0 + 299),
            Some(t0 + 300)
        );
        // Another action, another session, another operator: not elevated.
        assert_eq!(s.elevated_until("s1", "deploy", "chen", t0), None);
        assert_eq!(s.elevated_until("s1", "send_email", "olivia", t0), None);
        assert_eq!(s.elevated_until("s2", "deploy", "olivia", t0), None);
        // At `until` it has ended, and is forgotten.
        assert_eq!(s.elevated_until("s1", "deploy", "olivia", t0 + 300), None);
        assert!(s.views(t0)["s1"].elevations.is_empty());
        // A new elevation of the same action replaces the old one.
        s.elevate("s1", elevation("deploy", t0 + 10));
        s.elevate("s1", elevation("deploy", t0 + 20));
        assert_eq!(s.views(t0)["s1"].elevations.len(), 1);
        assert_eq!(
            s.elevated_until("s1", "deploy", "olivia", t0 + 15),
            Some(t0 + 20)
        );
    }

    #[test]
    fn release_and_the_kill_switch_end_elevations() {
        let s = SessionStates::default();
        s.elevate("s1", elevation("deploy", 500));
        s.elevate("s1", elevation("send_email", 500));
        let mut other = elevation("deploy", 500);
        other.operator = "chen".into();
        other.agent = "codex".into();
        s.elevate("s2", other);
        // The kill switch on operator olivia: her elevations end, chen's stay.
        assert_eq!(s.end_elevations(|e| e.operator == "olivia"), 2);
        assert_eq!(s.elevated_until("s1", "deploy", "olivia", 0), None);
        assert_eq!(s.elevated_until("s2", "deploy", "chen", 0), Some(500));
        // Release: the session's elevations end and its counts reset.
        s.count("s2", true, true, &rules());
        assert_eq!(s.end_session("s2"), 1);
        assert_eq!(s.elevated_until("s2", "deploy", "olivia", 0), None);
        assert!(!s.views(0).contains_key("s2"));
        assert_eq!(s.end_session("s2"), 0);
    }

    #[test]
    fn anomaly_trips_once_and_resets_on_approval() {
        let s = SessionStates::default();
        let r = rules();
        // 5 reads, all allowed: no trip.
        for _ in 0..5 {
            assert_eq!(s.count("s1", false, false, &r), None);
        }
        // Denials: 3 of 8 is 38 % > 30 %: the 8th call trips, once.
        assert_eq!(s.count("s1", true, false, &r), None);
        assert_eq!(s.count("s1", true, false, &r), None);
        assert_eq!(
            s.count("s1", true, false, &r).as_deref(),
            Some("denials=3/8 (38%) threshold=30%")
        );
        assert_eq!(s.count("s1", true, false, &r), None);
        assert_eq!(
            s.tripped("s1").as_deref(),
            Some("denials=3/8 (38%) threshold=30%")
        );
        // Control: another session is not affected.
        assert_eq!(s.tripped("s2"), None);
        // An approval resets the counts and the trip.
        s.reset_anomaly("s1");
        assert_eq!(s.tripped("s1"), None);
        assert_eq!(s.views(0)["s1"].calls, 0);
    }

    #[test]
    fn the_table_is_bounded_by_forgetting_idle_sessions() {
        let s = SessionStates::default();
        let r = rules();
        for i in 0..MAX_SESSIONS {
            s.count(&format!("s{i}"), false, false, &r);
        }
        s.elevate("s0", elevation("deploy", i64::MAX));
        // Full: the next new session forgets the idle ones, keeps s0.
        s.count("new", false, false, &r);
        let v = s.views(0);
        assert_eq!(v.len(), 2);
        assert!(v.contains_key("s0") && v.contains_key("new"));
    }
}
