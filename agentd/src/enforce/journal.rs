//! The grant journal (`state_dir/enforce-journal.jsonl`, 0600): one line
//! per grant change since the last state-file snapshot, appended while the
//! registry's write lock is held, so its order is the registry's. A grant
//! costs one short append however many grants are live; the snapshot
//! (`persist::save`) is rewritten only when agents change or the journal
//! has grown past the live state (compaction), and then the journal
//! starts empty again.
//!
//! Every entry sets a call to a whole value or deletes it, so replaying
//! the journal over a snapshot that already holds some of its changes (a
//! crash between the snapshot's rename and the journal's truncation) ends
//! in the same state.
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::persist::{CallState, PersistError, State};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "enforce-journal.jsonl";

/// Lines the journal may hold beyond twice the live grants before a
/// snapshot replaces it (compaction stays amortised O(1) per change).
pub const COMPACT_SLACK: u64 = 4096;

/// One change to the grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// The call is now exactly this (installed, bound, its pending slot
    /// withdrawn); `next_handle` as it stood after the change.
    Put {
        /// The call.
        call: Box<CallState>,
        /// The registry's next grant handle.
        next_handle: u64,
    },
    /// The call is gone (revoked, expired).
    Del {
        /// Its tool-call id.
        call_id: String,
    },
}

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    lines: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Opens (creating, 0600) the journal of `state_dir` for appending.
    pub fn open(state_dir: &Path) -> Result<Self, PersistError> {
        let path = state_dir.join(JOURNAL_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let lines = std::fs::read(&path)
            .map_err(io(&path))?
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        Ok(Self { path, file, lines })
    }

    /// Appends `entries` in one write (not synced, like the snapshot: the
    /// grants it names live in pinned maps, which a power loss clears).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), PersistError> {
        let mut buf = Vec::with_capacity(512 * entries.len());
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(|e| PersistError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(io(&self.path))?;
        self.lines += entries.len() as u64;
        Ok(())
    }

    /// Whether a snapshot should replace the journal, with `live` grants.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.lines > 2 * live as u64 + COMPACT_SLACK
    }

    /// Empties the journal (a snapshot now holds everything it said).
    pub fn reset(&mut self) -> Result<(), PersistError> {
        self.file.set_len(0).map_err(io(&self.path))?;
        self.lines = 0;
        Ok(())
    }
}

/// The enforcer's state as last recorded: the state file with the grant
/// journal's changes applied; `Ok(None)` if there is no state file (a
/// journal alone names grants of agents nobody recorded: nothing to adopt).
pub fn load(state_dir: &Path) -> Result<Option<State>, PersistError> {
    let Some(mut state) = super::persist::load_snapshot(state_dir)? else {
        return Ok(None);
    };
    replay(state_dir, &mut state)?;
    Ok(Some(state))
}

/// Applies the journal of `state_dir` to `state` (the snapshot). A last
/// line without its newline is a write that never completed (its caller
/// was not answered): ignored. Any other line that does not parse makes
/// the state corrupt, as a corrupt snapshot does.
pub fn replay(state_dir: &Path, state: &mut State) -> Result<(), PersistError> {
    let path = state_dir.join(JOURNAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
    };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        tracing::warn!(path = %path.display(), bytes = bytes.len() - complete,
            "ignoring the grant journal's incomplete last line");
    }
    for line in bytes[..complete].split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_slice(line).map_err(|e| PersistError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        apply(state, entry);
    }
    Ok(())
}

fn apply(state: &mut State, entry: Entry) {
    match entry {
        Entry::Put { call, next_handle } => {
            state.next_handle = state.next_handle.max(next_handle);
            match state.calls.iter_mut().find(|c| c.call_id == call.call_id) {
                Some(c) => *c = *call,
                None => state.calls.push(*call),
            }
        }
        Entry::Del { call_id } => state.calls.retain(|c| c.call_id != call_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant_spec::GrantSpec;

    fn call(id: &str, handle: u64, uses: Option<u32>) -> Entry {
        Entry::Put {
            call: Box::new(CallState {
                call_id: id.into(),
                active_message_id: "m".into(),
                agent: "a".into(),
                handle,
                spec: GrantSpec::default(),
                expires_at_ns: 0,
                uses_left: uses,
                pending: None,
            }),
            next_handle: handle + 1,
        }
    }

    fn ids(s: &State) -> Vec<(String, Option<u32>)> {
        s.calls
            .iter()
            .map(|c| (c.call_id.clone(), c.uses_left))
            .collect()
    }

    #[test]
    fn replay_applies_puts_and_deletes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[call("x", 1, Some(2)), call("y", 2, None)])
            .unwrap();
        j.append(&[
            call("x", 1, Some(1)),
            Entry::Del {
                call_id: "y".into(),
            },
        ])
        .unwrap();
        let mut s = State::default();
        replay(dir.path(), &mut s).unwrap();
        assert_eq!(ids(&s), vec![("x".into(), Some(1))]);
        assert_eq!(s.next_handle, 3);
        // Replayed again over its own result (a crash before the
        // truncation): the same state.
        replay(dir.path(), &mut s).unwrap();
        assert_eq!(ids(&s), vec![("x".into(), Some(1))]);
        // A reopened journal counts what it holds; reset empties it.
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.lines, 4);
        assert!(!j.wants_compaction(0));
        j.reset().unwrap();
        let mut s = State::default();
        replay(dir.path(), &mut s).unwrap();
        assert!(s.calls.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[call("x", 1, None)]).unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"del":{"call_id":"x""#).unwrap();
        let mut s = State::default();
        replay(dir.path(), &mut s).unwrap();
        assert_eq!(ids(&s), vec![("x".into(), None)]);
        f.write_all(b"\n").unwrap();
        assert!(matches!(
            replay(dir.path(), &mut State::default()),
            Err(PersistError::Corrupt { .. })
        ));
    }
}
