//! `agents.db` in the state directory: agent settings (with the baseline
//! last composed from them) and inbox entries. One connection behind a
//! mutex: these are administrative writes, far off the decision path.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::inbox::{EntryState, InboxEntry, Outcome, RunResult};
use super::{AgentDef, AgentsError};
use crate::grant_spec::GrantSpec;

/// The store.
pub struct AgentStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for AgentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStore")
            .field("path", &self.path)
            .finish()
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    def TEXT NOT NULL,
    applied TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    session TEXT NOT NULL,
    operator TEXT NOT NULL,
    trust TEXT NOT NULL,
    active_message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    reply TEXT,
    reply_truncated INTEGER NOT NULL DEFAULT 0,
    run TEXT
);
CREATE INDEX IF NOT EXISTS inbox_agent_state ON inbox(agent, state, id);
";

fn now() -> i64 {
    crate::gateway::unix_now()
}

impl AgentStore {
    /// Opens (creating) `state_dir/agents.db`.
    pub fn open(state_dir: &Path) -> Result<Self, AgentsError> {
        let path = state_dir.join("agents.db");
        let err = |e: rusqlite::Error| AgentsError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(AgentStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> AgentsError + '_ {
        move |e| AgentsError::Store {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every agent's settings, by name.
    pub fn defs(&self) -> Result<Vec<AgentDef>, AgentsError> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT name, def FROM agents ORDER BY name")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row.map_err(self.err())?;
            match serde_json::from_str(&json) {
                Ok(d) => out.push(d),
                Err(e) => {
                    tracing::error!(agent = %name, error = %e, "stored agent settings unreadable; skipped")
                }
            }
        }
        Ok(out)
    }

    /// One agent's settings and the baseline last applied from them.
    pub fn get(&self, name: &str) -> Result<Option<(AgentDef, Option<GrantSpec>)>, AgentsError> {
        let row: Option<(String, Option<String>)> = self
            .conn()
            .query_row(
                "SELECT def, applied FROM agents WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((def, applied)) = row else {
            return Ok(None);
        };
        let def = serde_json::from_str(&def).map_err(|e| AgentsError::Store {
            path: self.path.display().to_string(),
            message: format!("agent {name}: {e}"),
        })?;
        let applied = applied.and_then(|a| serde_json::from_str(&a).ok());
        Ok(Some((def, applied)))
    }

    /// Inserts or replaces an agent's settings (keeping its applied baseline).
    pub fn put(&self, def: &AgentDef) -> Result<(), AgentsError> {
        let json = serde_json::to_string(def).expect("settings serialise");
        self.conn()
            .execute(
                "INSERT INTO agents(name, def, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET def = excluded.def, updated_at = excluded.updated_at",
                params![def.name, json, now()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the baseline composed from the settings and applied.
    pub fn set_applied(&self, name: &str, spec: &GrantSpec) -> Result<(), AgentsError> {
        let json = serde_json::to_string(spec).expect("spec serialises");
        self.conn()
            .execute(
                "UPDATE agents SET applied = ?2 WHERE name = ?1",
                params![name, json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Deletes an agent's settings and its queued entries; true if it existed.
    pub fn delete(&self, name: &str) -> Result<bool, AgentsError> {
        let c = self.conn();
        let n = c
            .execute("DELETE FROM agents WHERE name = ?1", [name])
            .map_err(self.err())?;
        c.execute(
            "DELETE FROM inbox WHERE agent = ?1 AND state = 'queued'",
            [name],
        )
        .map_err(self.err())?;
        Ok(n > 0)
    }

    /// Queues a message; returns the entry.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &self,
        agent: &str,
        session: &str,
        operator: &str,
        trust: &str,
        active_message_id: &str,
        text: &str,
    ) -> Result<InboxEntry, AgentsError> {
        let c = self.conn();
        let at = now();
        c.execute(
            "INSERT INTO inbox(agent, session, operator, trust, active_message_id, body, state, submitted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
            params![agent, session, operator, trust, active_message_id, text, at],
        )
        .map_err(self.err())?;
        let id = c.last_insert_rowid();
        drop(c);
        self.entry(agent, id)
    }

    /// Takes the oldest queued entry of `agent` (it becomes running).
    pub fn take_next(&self, agent: &str, run: &str) -> Result<Option<InboxEntry>, AgentsError> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(self.err())?;
        let id: Option<i64> = tx
            .query_row(
                "SELECT id FROM inbox WHERE agent = ?1 AND state = 'queued' ORDER BY id LIMIT 1",
                [agent],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let Some(id) = id else {
            return Ok(None);
        };
        let run = format!("{run}{id}");
        tx.execute(
            "UPDATE inbox SET state = 'running', started_at = ?2, run = ?3 WHERE id = ?1",
            params![id, now(), run],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        drop(c);
        self.entry(agent, id).map(Some)
    }

    /// Records a run's end.
    pub fn finish(&self, agent: &str, id: i64, res: &RunResult) -> Result<InboxEntry, AgentsError> {
        let e = self.entry(agent, id)?;
        if e.state != EntryState::Running {
            return Err(AgentsError::EntryState {
                id,
                state: e.state.as_str().into(),
            });
        }
        let outcome = serde_json::to_value(res.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.conn()
            .execute(
                "UPDATE inbox SET state = 'done', finished_at = ?2, outcome = ?3, exit_code = ?4,
                 reply = ?5, reply_truncated = ?6 WHERE id = ?1",
                params![
                    id,
                    now(),
                    outcome,
                    res.exit_code,
                    res.reply,
                    res.reply_truncated
                ],
            )
            .map_err(self.err())?;
        self.entry(agent, id)
    }

    /// One entry of `agent`.
    pub fn entry(&self, agent: &str, id: i64) -> Result<InboxEntry, AgentsError> {
        self.query("WHERE id = ?1 AND agent = ?2", params![id, agent])?
            .pop()
            .ok_or_else(|| AgentsError::UnknownEntry {
                agent: agent.into(),
                id,
            })
    }

    /// Entries of `agent`, oldest first.
    pub fn entries(&self, agent: &str) -> Result<Vec<InboxEntry>, AgentsError> {
        self.query("WHERE agent = ?1 ORDER BY id", params![agent])
    }

    fn query(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<InboxEntry>, AgentsError> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT id, agent, session, operator, trust, active_message_id, body, state,
                 submitted_at, started_at, finished_at, outcome, exit_code, reply, reply_truncated, run
                 FROM inbox {tail}"
            ))
            .map_err(self.err())?;
        let rows = st
            .query_map(p, |r| {
                let state: String = r.get(7)?;
                let outcome: Option<String> = r.get(11)?;
                Ok(InboxEntry {
                    id: r.get(0)?,
                    agent: r.get(1)?,
                    session: r.get(2)?,
                    operator: r.get(3)?,
                    trust: r.get(4)?,
                    active_message_id: r.get(5)?,
                    text: r.get(6)?,
                    state: EntryState::parse(&state).unwrap_or(EntryState::Done),
                    submitted_at: r.get(8)?,
                    started_at: r.get(9)?,
                    finished_at: r.get(10)?,
                    outcome: outcome.and_then(|o| {
                        serde_json::from_value::<Outcome>(serde_json::Value::String(o)).ok()
                    }),
                    exit_code: r.get(12)?,
                    reply: r.get(13)?,
                    reply_truncated: r.get::<_, i64>(14)? != 0,
                    run: r.get(15)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}
