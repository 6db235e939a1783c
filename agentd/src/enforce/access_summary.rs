//! Allowed accesses the kernel counted instead of sending one event each
//! (`agentd_common::access`) → `access_summary` audit rows.
//!
//! The kernel sends the first access of each object (file, program,
//! destination) under a grant as its own event and counts every access of
//! it in `ACCESS_SUMMARIES`. Here the counts become rows: one per (grant,
//! hook, object) whose count grew since its last row, written every
//! [`FLUSH_EVERY`], when the grant ends (revoked, expired; the row is
//! committed before the revocation returns) and at shutdown. A row's count
//! is the total so far, its first access included, so the last row of a
//! grant is its complete account.
use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use agentd_common::{
    access::{AccessKey, AccessSummary},
    Hook,
};

use super::{
    events::{render_destination, KernelRecord},
    registry::Registry,
    Enforcer,
};
use crate::protocol::reason;

/// How often counts that grew are written while grants live.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One kernel entry, merged over CPUs.
#[derive(Clone, Copy)]
pub struct Counted {
    /// Grant, hook, object.
    pub key: AccessKey,
    /// Counts and the first access.
    pub summary: AccessSummary,
}

/// What rows were written: per key, the count its last row gave.
#[derive(Debug, Default)]
pub struct Ledger {
    written: HashMap<AccessKey, u64>,
    /// Calls whose grant is ending: gone from the registry, their last
    /// rows not written yet (their names, for any row written meanwhile).
    ending: HashMap<u64, Names>,
}

impl Ledger {
    /// The entries whose count grew since their last row, now marked
    /// written. An entry that counted only its first access is not due:
    /// that access has its own row.
    pub fn due(&mut self, entries: &[Counted]) -> Vec<Counted> {
        let mut out = Vec::new();
        for c in entries {
            let last = self.written.get(&c.key).copied().unwrap_or(1);
            if c.summary.count > last {
                self.written.insert(c.key, c.summary.count);
                out.push(*c);
            }
        }
        out
    }

    /// Forgets the keys of `call_id` (its grant ended, its entries go).
    pub fn forget_call(&mut self, call_id: u64) {
        self.written.retain(|k, _| k.call_id != call_id);
        self.ending.remove(&call_id);
    }

    /// [`Self::forget_call`] for several calls, in one pass.
    pub fn forget_calls(&mut self, call_ids: &BTreeSet<u64>) {
        self.written.retain(|k, _| !call_ids.contains(&k.call_id));
        self.ending.retain(|h, _| !call_ids.contains(h));
    }

    /// Marks `call_id` as ending, named `names` until it is forgotten.
    pub fn ending(&mut self, call_id: u64, names: Names) {
        self.ending.insert(call_id, names);
    }

    /// How many keys have had a row.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    /// Whether no key has had a row.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// Who a summary is about, as its row names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Agent name.
    pub agent: String,
    /// Tool-call id.
    pub call_id: String,
    /// Its active-message id.
    pub active_message_id: String,
}

/// The object a summary counted, as the first access's event named it:
/// its target text, or the destination the key holds for an IP connect.
pub fn object(c: &Counted) -> String {
    let text = c.summary.target();
    if !text.is_empty() {
        return String::from_utf8_lossy(text).into_owned();
    }
    match Hook::from_u8(c.key.hook) {
        Some(Hook::Connect | Hook::SendMsg) if c.key.port != 0 => {
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&c.key.a.to_ne_bytes());
            addr[8..].copy_from_slice(&c.key.b.to_ne_bytes());
            render_destination(addr, c.key.port)
        }
        _ => String::new(),
    }
}

/// The audit record of one summary. `boot_to_unix_ns` turns the kernel's
/// CLOCK_BOOTTIME stamps into Unix-epoch nanoseconds.
///
/// Target: `OBJECT [count=N first_ns=F last_ns=L]`, F and L in Unix-epoch
/// nanoseconds; pid: the process of the first access.
pub fn record(c: &Counted, names: &Names, boot_to_unix_ns: i128) -> KernelRecord {
    let unix = |boot: u64| (i128::from(boot) + boot_to_unix_ns).max(0);
    KernelRecord {
        agent: names.agent.clone(),
        call_id: names.call_id.clone(),
        active_message_id: names.active_message_id.clone(),
        action: Hook::from_u8(c.key.hook)
            .map(Hook::name)
            .unwrap_or("unknown")
            .to_string(),
        target: format!(
            "{} [count={} first_ns={} last_ns={}]",
            object(c),
            c.summary.count,
            unix(c.summary.first_ns),
            unix(c.summary.last_ns)
        ),
        decision: "allow",
        reason_code: reason::ACCESS_SUMMARY.into(),
        pid: c.summary.tgid,
        latency_us: 0,
        access: None,
    }
}

/// Nanoseconds to add to a CLOCK_BOOTTIME stamp for Unix-epoch time, with
/// `boot_now` the boot clock read now.
fn boot_to_unix_ns(boot_now: u64) -> i128 {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    unix_now - i128::from(boot_now)
}

/// The names of the call a key counts under, from the registry or, for a
/// call whose grant is ending, the ledger (a call known to neither is
/// named by its handle, its agent by the summary's id).
fn names_of(reg: &Registry, ledger: &Ledger, c: &Counted) -> Names {
    if let Some(names) = ledger.ending.get(&c.key.call_id) {
        return names.clone();
    }
    match reg.call(c.key.call_id) {
        Some(call) => Names {
            agent: call.agent.clone(),
            call_id: call.call_id.clone(),
            active_message_id: call.active_message_id.clone(),
        },
        None => Names {
            agent: reg
                .agent_by_id(c.summary.agent_id)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| format!("agent#{}", c.summary.agent_id)),
            call_id: format!("#{}", c.key.call_id),
            active_message_id: String::new(),
        },
    }
}

impl Enforcer {
    /// The kernel's counted accesses (of `only` that call, if given).
    fn counted(&self, only: Option<u64>) -> Vec<Counted> {
        self.ops()
            .access_summaries()
            .into_iter()
            .filter(|(k, _)| only.is_none_or(|h| k.call_id == h))
            .map(|(key, summary)| Counted { key, summary })
            .collect()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner
            .summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Queues (`wait`: and commits, one by one) the rows of `due`, each named by `names`.
    fn write_summaries(&self, due: &[Counted], names: impl Fn(&Counted) -> Names, wait: bool) {
        let offset = boot_to_unix_ns(self.ops().now_ns());
        for c in due {
            let rec = record(c, &names(c), offset);
            let sent = if wait {
                self.inner.audit_tx.commit(rec).map_err(|e| e.to_string())
            } else {
                self.inner.audit_tx.send(rec).map_err(|e| e.to_string())
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, call = c.key.call_id, "access summary row not written");
            }
        }
    }

    /// Writes a row for every counted access whose count grew since its
    /// last row (every [`FLUSH_EVERY`]; at shutdown with `wait`, so the
    /// rows are committed before it returns).
    pub(super) fn flush_access_summaries(&self, wait: bool) {
        let counted = self.counted(None);
        if counted.is_empty() {
            return;
        }
        let (due, names, gone): (Vec<Counted>, Vec<Names>, BTreeSet<u64>) = {
            // Registry before ledger, as `revoke` takes them.
            let reg = self.registry_r();
            let mut ledger = self.ledger();
            let due = ledger.due(&counted);
            let gone = counted
                .iter()
                .map(|c| c.key.call_id)
                .filter(|h| reg.call(*h).is_none() && !ledger.ending.contains_key(h))
                .collect();
            let names = due.iter().map(|c| names_of(&reg, &ledger, c)).collect();
            (due, names, gone)
        };
        let named: HashMap<AccessKey, Names> = due.iter().map(|c| c.key).zip(names).collect();
        self.write_summaries(
            &due,
            |c| named.get(&c.key).cloned().unwrap_or_default(),
            wait,
        );
        // Counts under calls agentd no longer knows (an access decided
        // while its grant was being revoked, a call lost with a state file)
        // have just had their rows: they leave the map, or it would fill.
        for handle in gone {
            self.ops().forget_access_summaries(handle);
            self.ledger().forget_call(handle);
        }
    }

    /// Marks call `handle` as ending (called while its registry entry is
    /// removed, under the registry's lock): rows written before its last
    /// ones still name it.
    pub(super) fn call_ending(&self, handle: u64, names: Names) {
        self.ledger().ending(handle, names);
    }

    /// The last rows of call `handle`, whose grant just ended (its kernel
    /// entries are gone from the maps): committed before this returns,
    /// then its counts are deleted.
    pub(super) fn flush_ended_call(&self, handle: u64, names: Names) {
        let counted = self.counted(Some(handle));
        let due = {
            let mut ledger = self.ledger();
            let due = ledger.due(&counted);
            ledger.forget_call(handle);
            due
        };
        self.write_summaries(&due, |_| names.clone(), true);
        self.ops().forget_access_summaries(handle);
    }

    /// [`Self::flush_ended_call`] for several calls at once, reading the
    /// kernel's counts once (grants dropped together when spent).
    pub(super) fn flush_ended_calls(&self, ended: &[(u64, Names)]) {
        if ended.is_empty() {
            return;
        }
        let names: HashMap<u64, &Names> = ended.iter().map(|(h, n)| (*h, n)).collect();
        let counted: Vec<Counted> = self
            .counted(None)
            .into_iter()
            .filter(|c| names.contains_key(&c.key.call_id))
            .collect();
        let due = {
            let mut ledger = self.ledger();
            let due = ledger.due(&counted);
            ledger.forget_calls(&names.keys().copied().collect());
            due
        };
        self.write_summaries(
            &due,
            |c| {
                names
                    .get(&c.key.call_id)
                    .map(|n| (*n).clone())
                    .unwrap_or_default()
            },
            true,
        );
        let with_counts: BTreeSet<u64> = counted.iter().map(|c| c.key.call_id).collect();
        for handle in with_counts {
            self.ops().forget_access_summaries(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentd_common::access::merge;

    fn key(call_id: u64, hook: Hook, a: u64) -> AccessKey {
        AccessKey {
            call_id,
            a,
            b: 0,
            hook: hook as u8,
            _pad: 0,
            port: 0,
            _pad2: 0,
        }
    }

    fn counted(call_id: u64, a: u64, count: u64, target: &[u8]) -> Counted {
        let mut s = AccessSummary::EMPTY;
        s.count = count;
        s.first_ns = 1_000;
        s.last_ns = 5_000;
        s.tgid = 42;
        s.target[..target.len()].copy_from_slice(target);
        s.target_len = target.len() as u32;
        Counted {
            key: key(call_id, Hook::FileOpen, a),
            summary: s,
        }
    }

    #[test]
    fn only_counts_that_grew_past_the_first_access_are_due() {
        let mut l = Ledger::default();
        let once = counted(1, 10, 1, b"once.txt");
        let many = counted(1, 11, 500, b"f.txt");
        let due = l.due(&[once, many]);
        assert_eq!(due.len(), 1, "the single access has its own row");
        assert_eq!(due[0].summary.count, 500);
        assert!(l.due(&[once, many]).is_empty(), "nothing grew");
        let grown = counted(1, 11, 501, b"f.txt");
        assert_eq!(l.due(&[grown]).len(), 1);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_call_that_ended_is_forgotten_and_others_kept() {
        let mut l = Ledger::default();
        l.due(&[counted(1, 10, 3, b"a"), counted(2, 10, 3, b"a")]);
        l.forget_call(1);
        assert_eq!(l.len(), 1);
        // A key of call 1 seen again is due again (new entries start over).
        assert_eq!(l.due(&[counted(1, 10, 2, b"a")]).len(), 1);
    }

    #[test]
    fn an_ending_call_keeps_its_names_until_forgotten() {
        let mut l = Ledger::default();
        let names = Names {
            agent: "mail".into(),
            call_id: "call-1".into(),
            active_message_id: "m-1".into(),
        };
        l.ending(5, names.clone());
        let reg = Registry::default();
        let c = counted(5, 10, 3, b"f.txt");
        assert_eq!(names_of(&reg, &l, &c), names, "gone from the registry");
        l.forget_call(5);
        assert_eq!(names_of(&reg, &l, &c).call_id, "#5");
    }

    #[test]
    fn per_cpu_values_merge_then_render_one_row() {
        let mut a = AccessSummary::EMPTY;
        a.count = 300;
        a.first_ns = 2_000;
        a.last_ns = 9_000;
        a.tgid = 7;
        let mut b = counted(3, 10, 200, b"f.txt").summary;
        b.first_ns = 1_000;
        b.last_ns = 8_000;
        let summary = merge(&[a, b]).unwrap();
        let c = Counted {
            key: key(3, Hook::FileOpen, 10),
            summary,
        };
        let names = Names {
            agent: "bench".into(),
            call_id: "call-1".into(),
            active_message_id: "m-1".into(),
        };
        let r = record(&c, &names, 1_000_000);
        assert_eq!(r.action, "file_open");
        assert_eq!(r.decision, "allow");
        assert_eq!(r.reason_code, "access_summary");
        assert_eq!(r.pid, 42, "the first access's process");
        assert_eq!(
            r.target,
            "f.txt [count=500 first_ns=1001000 last_ns=1009000]"
        );
        assert_eq!(
            crate::audit::kernel_row::access_summary(&r.target),
            Some(("f.txt", 500, 1_001_000, 1_009_000))
        );
        assert_eq!(crate::audit::kernel_row::access_summary("f.txt"), None);
    }

    #[test]
    fn ip_destinations_render_from_the_key() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[127, 0, 0, 1]);
        let mut c = counted(1, 0, 2, b"");
        c.key.hook = Hook::Connect as u8;
        c.key.a = u64::from_ne_bytes(addr[..8].try_into().unwrap());
        c.key.b = u64::from_ne_bytes(addr[8..].try_into().unwrap());
        c.key.port = 8080;
        assert_eq!(object(&c), "127.0.0.1:8080");
    }
}
