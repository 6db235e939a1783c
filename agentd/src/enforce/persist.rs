//! The enforcer's user-space state on disk (`state_dir/enforce-state.json`,
//! 0600), so a restarted agentd can re-adopt the pinned BPF maps with the
//! same agent ids and grant handles; and a heartbeat file that dates the
//! enforcement gap of a restart.
use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    grant::KernelGrant,
    registry::{Creds, Mode, Registry},
};
use crate::grant_spec::GrantSpec;

const STATE_FILE: &str = "enforce-state.json";
const HEARTBEAT_FILE: &str = "enforce.heartbeat";
const CLEAN_STOP_FILE: &str = "enforce.clean-stop";

/// Errors saving or loading the state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("enforcer state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("enforcer state {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// One agent as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    /// Name.
    pub name: String,
    /// BPF index.
    pub id: u32,
    /// Mode.
    pub mode: Mode,
    /// Baseline spec.
    pub baseline: GrantSpec,
}

/// One grant as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallState {
    /// Tool-call id.
    pub call_id: String,
    /// Active-message id.
    pub active_message_id: String,
    /// Agent.
    pub agent: String,
    /// BPF handle.
    pub handle: u64,
    /// Spec.
    pub spec: GrantSpec,
    /// Absolute expiry (CLOCK_BOOTTIME ns; 0 = none).
    pub expires_at_ns: u64,
    /// Remaining uses.
    pub uses_left: Option<u32>,
    /// Who may claim it, if pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<super::pending::PendingInfo>,
}

/// One supervised seccomp listener as persisted (its fd lives in the
/// service manager's fd store under `name`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerState {
    /// Its fd-store name.
    pub name: String,
    /// Agent.
    pub agent: String,
    /// Credentials its supervisor opens files under.
    pub creds: Creds,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Agents.
    pub agents: Vec<AgentState>,
    /// Grants.
    pub calls: Vec<CallState>,
    /// Supervised listeners (absent in files written before they were kept).
    #[serde(default)]
    pub listeners: Vec<ListenerState>,
    /// Next grant handle.
    pub next_handle: u64,
    /// Next agent id.
    pub next_agent_id: u32,
}

impl State {
    /// Snapshot of a registry, as an owned copy (the file is written from
    /// the registry itself: [`Snapshot`]).
    pub fn of(reg: &Registry) -> Self {
        State {
            agents: reg.agents.values().map(AgentState::of).collect(),
            calls: reg.calls.values().map(CallState::of).collect(),
            listeners: reg
                .listeners
                .iter()
                .map(|(name, l)| ListenerState::of(name, l))
                .collect(),
            next_handle: reg.next_handle,
            next_agent_id: reg.next_agent_id,
        }
    }
}

/// A registry serialised as [`State`], straight from the registry: one
/// entry is copied at a time, and the text goes to the file as it is made.
/// A copy of the whole (thousands of grants under load) and its text in
/// one buffer, made at each compaction, raised the daemon's heap to that
/// peak for good.
pub struct Snapshot<'a>(pub &'a Registry);

impl Serialize for Snapshot<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let reg = self.0;
        // The fields of `State`, in its order.
        let mut st = s.serialize_struct("State", 5)?;
        st.serialize_field("agents", &Each(|| reg.agents.values().map(AgentState::of)))?;
        st.serialize_field("calls", &Each(|| reg.calls.values().map(CallState::of)))?;
        st.serialize_field(
            "listeners",
            &Each(|| {
                reg.listeners
                    .iter()
                    .map(|(name, l)| ListenerState::of(name, l))
            }),
        )?;
        st.serialize_field("next_handle", &reg.next_handle)?;
        st.serialize_field("next_agent_id", &reg.next_agent_id)?;
        st.end()
    }
}

/// A sequence serialised from an iterator made when it is written.
struct Each<F>(F);

impl<F, I> Serialize for Each<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

impl AgentState {
    /// One agent as persisted.
    pub fn of(a: &super::registry::AgentEntry) -> Self {
        AgentState {
            name: a.name.clone(),
            id: a.id,
            mode: a.mode,
            baseline: spec_of(&a.baseline),
        }
    }
}

impl ListenerState {
    /// One listener as persisted.
    pub fn of(name: &str, l: &super::registry::ListenerEntry) -> Self {
        ListenerState {
            name: name.to_owned(),
            agent: l.agent.clone(),
            creds: l.creds.clone(),
        }
    }
}

impl CallState {
    /// One registry entry as persisted.
    pub fn of(c: &super::registry::CallEntry) -> Self {
        CallState {
            call_id: c.call_id.clone(),
            active_message_id: c.active_message_id.clone(),
            agent: c.agent.clone(),
            handle: c.grant.handle,
            spec: spec_of(&c.grant),
            expires_at_ns: c.grant.expires_at_ns,
            uses_left: c.uses_left,
            pending: c.pending.clone(),
        }
    }
}

/// The spec a grant was made from.
pub fn spec_of(g: &KernelGrant) -> GrantSpec {
    g.spec.clone()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the state atomically (temp file + rename), 0600.
///
/// Not synced to disk: the file names kernel objects pinned in bpffs, which
/// live in memory. What it must survive is agentd stopping or crashing
/// (the page cache keeps a written file for the next agentd); a power loss
/// takes the pinned maps with it, and a start without them re-adopts
/// nothing whatever the file says. Syncing cost a disk flush per grant.
pub fn save(state_dir: &Path, state: &impl Serialize) -> Result<(), PersistError> {
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let path = state_dir.join(STATE_FILE);
    let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, f);
    serde_json::to_writer(&mut out, state).map_err(|e| match e.io_error_kind() {
        Some(kind) => io(&tmp)(std::io::Error::new(kind, e)),
        None => PersistError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        },
    })?;
    out.flush().map_err(io(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Reads the state file alone (the snapshot); `Ok(None)` if there is
/// none. The enforcer's state is this with the grant journal applied:
/// [`super::journal::load`].
pub fn load_snapshot(state_dir: &Path) -> Result<Option<State>, PersistError> {
    let path = state_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PersistError::Corrupt {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Records that the enforcer is alive now.
pub fn touch_heartbeat(state_dir: &Path) {
    let _ = std::fs::write(state_dir.join(HEARTBEAT_FILE), unix_ms().to_string());
}

/// How long ago the last heartbeat was written (the enforcement gap when
/// called at start-up after a restart).
pub fn heartbeat_age(state_dir: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(state_dir.join(HEARTBEAT_FILE)).ok()?;
    let then: u128 = text.trim().parse().ok()?;
    Some(Duration::from_millis(unix_ms().saturating_sub(then) as u64))
}

/// Records that every supervisor answered what it had received before
/// agentd stopped (a graceful stop).
pub fn mark_clean_stop(state_dir: &Path) {
    let _ = std::fs::write(state_dir.join(CLEAN_STOP_FILE), unix_ms().to_string());
}

/// Whether the previous agentd stopped gracefully; forgets it (the next
/// stop must say so again).
pub fn take_clean_stop(state_dir: &Path) -> bool {
    std::fs::remove_file(state_dir.join(CLEAN_STOP_FILE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_snapshot(dir.path()).unwrap().is_none());
        let state = State {
            agents: vec![AgentState {
                name: "a".into(),
                id: 3,
                mode: Mode::AuditOnly,
                baseline: GrantSpec::default(),
            }],
            calls: vec![],
            listeners: vec![ListenerState {
                name: "agentd-listener.1.a".into(),
                agent: "a".into(),
                creds: Creds {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![27],
                },
            }],
            next_handle: 9,
            next_agent_id: 4,
        };
        save(dir.path(), &state).unwrap();
        let back = load_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(back.agents[0].id, 3);
        assert_eq!(back.agents[0].mode, Mode::AuditOnly);
        assert_eq!(back.next_handle, 9);
        assert_eq!(back.listeners[0].creds.groups, vec![27]);
        // A file from before listeners were kept still loads.
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"agents":[],"calls":[],"next_handle":1,"next_agent_id":1}"#,
        )
        .unwrap();
        assert!(load_snapshot(dir.path())
            .unwrap()
            .unwrap()
            .listeners
            .is_empty());
        std::fs::write(dir.path().join(STATE_FILE), "{nope").unwrap();
        assert!(matches!(
            load_snapshot(dir.path()),
            Err(PersistError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_snapshot_is_written_as_the_state_it_holds() {
        use super::super::{
            agent_cgroup::AgentCgroupDir,
            registry::{AgentEntry, CallEntry, ListenerEntry},
        };
        let spec = GrantSpec {
            read: vec!["/srv/charts".into()],
            ..GrantSpec::default()
        };
        let grant = |handle| KernelGrant::from_spec(&spec, handle, 0).unwrap();
        let mut reg = Registry::default();
        reg.agents.insert(
            "a".into(),
            AgentEntry {
                name: "a".into(),
                id: 1,
                cgroup: AgentCgroupDir {
                    path: "/nonexistent".into(),
                    id: 5,
                },
                mode: Mode::Enforce,
                baseline: grant(1),
            },
        );
        for handle in [7, 8] {
            reg.insert_call(
                handle,
                CallEntry {
                    call_id: format!("call-{handle}"),
                    active_message_id: "am-1".into(),
                    agent: "a".into(),
                    grant: grant(handle),
                    uses_left: Some(2),
                    pending: None,
                },
            );
        }
        reg.listeners.insert(
            "agentd-listener.1.a".into(),
            ListenerEntry {
                agent: "a".into(),
                creds: Creds {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![],
                },
            },
        );
        reg.next_handle = 9;
        reg.next_agent_id = 2;
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &Snapshot(&reg)).unwrap();
        let written = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
        // Byte for byte what the owned copy serialises to (the same map
        // order: both walk the registry once).
        assert_eq!(written, serde_json::to_vec(&State::of(&reg)).unwrap());
        let back = load_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(back.calls.len(), 2);
        assert_eq!(back.agents[0].name, "a");
        assert_eq!(back.listeners[0].agent, "a");
        assert_eq!((back.next_handle, back.next_agent_id), (9, 2));
    }

    #[test]
    fn heartbeat_ages() {
        let dir = tempfile::tempdir().unwrap();
        assert!(heartbeat_age(dir.path()).is_none());
        touch_heartbeat(dir.path());
        assert!(heartbeat_age(dir.path()).unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn a_clean_stop_is_remembered_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!take_clean_stop(dir.path()));
        mark_clean_stop(dir.path());
        assert!(take_clean_stop(dir.path()));
        assert!(!take_clean_stop(dir.path()));
    }
}
