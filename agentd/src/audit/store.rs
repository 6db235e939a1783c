//! The SQLite file: schema, append-only triggers, row (de)serialisation.
use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::checkpoint::Checkpoint;
use super::record::{AuditEvent, Record, RecordKind};
use crate::config::Durability;

/// File name of the audit database under the state directory.
pub const DB_FILE: &str = "audit.db";

/// Errors of the audit store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or its mode set.
    #[error("cannot prepare audit database file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("audit database {path}: {op}: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        source: rusqlite::Error,
    },
    /// A helper thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    /// A stored row cannot be decoded.
    #[error("audit database {path}: malformed row seq {seq}: {message}")]
    Malformed {
        path: PathBuf,
        seq: u64,
        message: String,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_records (
    seq               INTEGER PRIMARY KEY,
    timestamp         TEXT NOT NULL,
    kind              TEXT NOT NULL,
    operator          TEXT NOT NULL,
    session           TEXT NOT NULL,
    active_message_id TEXT NOT NULL,
    call_id           TEXT NOT NULL,
    action            TEXT NOT NULL,
    target            TEXT NOT NULL,
    decision          TEXT NOT NULL,
    reason_code       TEXT NOT NULL,
    policy_id         TEXT NOT NULL,
    latency_us        INTEGER NOT NULL,
    prev_hash         TEXT NOT NULL,
    hash              TEXT NOT NULL,
    agent             TEXT NOT NULL DEFAULT '',
    pid               INTEGER NOT NULL DEFAULT 0,
    access            TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    count     INTEGER PRIMARY KEY,
    head_hash TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_prunes (
    id            INTEGER PRIMARY KEY,
    pruned_through INTEGER NOT NULL,
    timestamp     TEXT NOT NULL
);
INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('schema_version', '2');
";

/// Schema version 2 (record format v2): the subject columns, added in place
/// to a version-1 table. Rows already stored read them as empty, which is
/// what their (v1) hashes were computed over.
const SUBJECT_COLUMNS: [&str; 3] = [
    "agent TEXT NOT NULL DEFAULT ''",
    "pid INTEGER NOT NULL DEFAULT 0",
    "access TEXT NOT NULL DEFAULT ''",
];

/// Tables whose rows may never change; the prefix pruning of
/// `audit_records` lifts its delete guard inside one transaction.
const GUARDED: [&str; 3] = ["audit_records", "audit_checkpoints", "audit_prunes"];

/// SQL creating the UPDATE/DELETE-aborting triggers of one table.
pub fn guard_sql(table: &str) -> String {
    format!(
        "CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;
         CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
    )
}

/// Column list in the order [`record_from_row`] reads it.
pub const RECORD_COLUMNS: &str = "seq, timestamp, kind, operator, session, active_message_id, \
     call_id, action, target, decision, reason_code, policy_id, latency_us, prev_hash, hash, \
     agent, pid, access";

/// Path of the audit database under a state directory.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

/// Creates `path` if missing, mode 0600 (and sets 0600 if it existed): a
/// database file made this way is never world-readable, not even briefly,
/// and SQLite gives its -wal and -shm files the same mode.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|_| std::fs::set_permissions(path, Permissions::from_mode(0o600)))
}

/// Opens (creating if needed) the database read-write with the schema,
/// triggers and pragmas for `durability`. The file is created 0600.
pub fn open_rw(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    create_private(path).map_err(|source| StoreError::File {
        path: path.to_owned(),
        source,
    })?;
    let conn = Connection::open(path).map_err(sql(path, "open"))?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql(path, "busy_timeout"))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = {};",
        WRITER_AUTOCHECKPOINT_PAGES
    ))
    .map_err(sql(path, "pragmas"))?;
    let mut ddl = String::from(SCHEMA);
    for t in GUARDED {
        ddl.push_str(&guard_sql(t));
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {ddl}"))
        .map_err(sql(path, "schema"))?;
    // Migrating in the schema's transaction: a reader never sees half of it.
    let migrated = migrate(&conn).and_then(|m| conn.execute_batch("COMMIT").map(|()| m));
    match migrated {
        Ok(true) => {
            tracing::info!(path = %path.display(), "audit database migrated to schema 2 (records name their subject)")
        }
        Ok(false) => {}
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql(path, "migrate schema")(e));
        }
    }
    Ok(conn)
}

/// Whether `table` has a column named `column` (false when there is no
/// such table): how a schema written by an older agentd is recognised.
pub fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        rusqlite::params![table, column],
        |r| r.get(0),
    )
}

/// Whether `audit_records` has the subject columns (schema 2).
fn has_subject_columns(conn: &Connection) -> rusqlite::Result<bool> {
    has_column(conn, "audit_records", "agent")
}

/// Adds the subject columns to a schema-1 table (ALTER TABLE … ADD COLUMN
/// leaves the stored rows untouched, so the append-only triggers do not
/// fire and every stored hash stays what it was). Returns whether it did.
fn migrate(conn: &Connection) -> rusqlite::Result<bool> {
    if has_subject_columns(conn)? {
        return Ok(false);
    }
    for col in SUBJECT_COLUMNS {
        conn.execute_batch(&format!("ALTER TABLE audit_records ADD COLUMN {col}"))?;
    }
    conn.execute(
        "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('schema_version', '2')",
        [],
    )?;
    Ok(true)
}

/// Opens an existing database without creating or changing anything.
pub fn open_ro(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::File {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(path, "open read-only"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql(path, "busy_timeout"))?;
    legacy_view(&conn).map_err(sql(path, "read schema"))?;
    Ok(conn)
}

/// A schema-1 file opened read-only (an old log kept as evidence, not
/// migrated because nothing may write it): a temporary view of the same
/// name, which SQLite resolves before the stored table, shows its rows with
/// empty subject columns, so every reader's [`RECORD_COLUMNS`] query works.
fn legacy_view(conn: &Connection) -> rusqlite::Result<()> {
    let has_table: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('audit_records')",
        [],
        |r| r.get(0),
    )?;
    if has_table == 0 || has_subject_columns(conn)? {
        return Ok(());
    }
    conn.execute_batch(
        "CREATE TEMP VIEW audit_records AS SELECT seq, timestamp, kind, operator, session,
           active_message_id, call_id, action, target, decision, reason_code, policy_id,
           latency_us, prev_hash, hash, '' AS agent, 0 AS pid, '' AS access
         FROM main.audit_records",
    )
}

/// Maps a rusqlite error to [`StoreError::Sqlite`].
pub fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Pages the writer's own auto-checkpoint waits for: only a backstop, in
/// case the background thread cannot keep up (64 MiB of WAL at 4 KiB pages).
pub const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Insert statement for one record (parameters in [`RECORD_COLUMNS`] order).
pub const INSERT_RECORD_SQL: &str =
    "INSERT INTO audit_records (seq, timestamp, kind, operator, session, active_message_id,
        call_id, action, target, decision, reason_code, policy_id, latency_us, prev_hash, hash,
        agent, pid, access)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// Inserts one sealed record (inside the caller's transaction).
pub fn insert_record(conn: &Connection, r: &Record) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(INSERT_RECORD_SQL)?;
    insert_record_with(&mut stmt, r)
}

/// Inserts one sealed record with an already prepared [`INSERT_RECORD_SQL`].
pub fn insert_record_with(stmt: &mut rusqlite::Statement<'_>, r: &Record) -> rusqlite::Result<()> {
    let e = &r.event;
    stmt.execute(params![
        r.seq as i64,
        r.timestamp,
        e.kind.as_str(),
        e.operator,
        e.session,
        e.active_message_id,
        e.call_id,
        e.action,
        e.target,
        e.decision,
        e.reason_code,
        e.policy_id,
        e.latency_us as i64,
        r.prev_hash,
        r.hash,
        e.agent,
        e.pid,
        e.access,
    ])?;
    Ok(())
}

/// Inserts a signed checkpoint.
pub fn insert_checkpoint(conn: &Connection, c: &Checkpoint) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO audit_checkpoints (count, head_hash, timestamp, signature)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        c.count as i64,
        c.head_hash,
        c.timestamp,
        c.signature
    ])?;
    Ok(())
}

/// Decodes a row selected with [`RECORD_COLUMNS`]. A malformed row becomes
/// a `String` error naming the problem, for the verifier to report.
pub fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Record, (u64, String)>> {
    let seq: i64 = row.get(0)?;
    let seq = seq as u64;
    let kind_s: String = row.get(2)?;
    let latency: i64 = row.get(12)?;
    let pid: i64 = row.get(16)?;
    let kind = match RecordKind::parse(&kind_s) {
        Ok(k) => k,
        Err(e) => return Ok(Err((seq, e.to_string()))),
    };
    if latency < 0 {
        return Ok(Err((seq, format!("negative latency_us {latency}"))));
    }
    let Ok(pid) = u32::try_from(pid) else {
        return Ok(Err((seq, format!("pid {pid} is not a process id"))));
    };
    Ok(Ok(Record {
        seq,
        timestamp: row.get(1)?,
        event: AuditEvent {
            kind,
            operator: row.get(3)?,
            session: row.get(4)?,
            active_message_id: row.get(5)?,
            call_id: row.get(6)?,
            action: row.get(7)?,
            target: row.get(8)?,
            decision: row.get(9)?,
            reason_code: row.get(10)?,
            policy_id: row.get(11)?,
            latency_us: latency as u64,
            agent: row.get(15)?,
            pid,
            access: row.get(17)?,
        },
        prev_hash: row.get(13)?,
        hash: row.get(14)?,
    }))
}

/// The last record, if any.
pub fn last_record(conn: &Connection, path: &Path) -> Result<Option<Record>, StoreError> {
    let q = format!("SELECT {RECORD_COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT 1");
    let row = conn
        .query_row(&q, [], record_from_row)
        .optional()
        .map_err(sql(path, "read last record"))?;
    match row {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err((seq, message))) => Err(StoreError::Malformed {
            path: path.to_owned(),
            seq,
            message,
        }),
    }
}

/// One record by sequence number.
pub fn record_at(conn: &Connection, path: &Path, seq: u64) -> Result<Option<Record>, StoreError> {
    let q = format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq = ?1");
    let row = conn
        .query_row(&q, [seq as i64], record_from_row)
        .optional()
        .map_err(sql(path, "read record"))?;
    match row {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err((seq, message))) => Err(StoreError::Malformed {
            path: path.to_owned(),
            seq,
            message,
        }),
    }
}

/// The newest tool-call (gateway) row of `call_id` before `before_seq`:
/// the decision a kernel row bound to that call acted under.
pub fn tool_call_row(
    conn: &Connection,
    path: &Path,
    call_id: &str,
    before_seq: u64,
) -> Result<Option<Record>, StoreError> {
    let q = format!(
        "SELECT {RECORD_COLUMNS} FROM audit_records WHERE call_id = ?1 AND kind = 'tool_call' AND seq < ?2 ORDER BY seq DESC LIMIT 1"
    );
    let row = conn
        .query_row(&q, params![call_id, before_seq as i64], record_from_row)
        .optional()
        .map_err(sql(path, "read record"))?;
    match row {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err((seq, message))) => Err(StoreError::Malformed {
            path: path.to_owned(),
            seq,
            message,
        }),
    }
}

/// Records with `seq > after`, ascending, at most `limit`.
pub fn records_after(
    conn: &Connection,
    path: &Path,
    after: u64,
    limit: u64,
) -> Result<Vec<Record>, StoreError> {
    let q =
        format!("SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    let mut stmt = conn.prepare(&q).map_err(sql(path, "prepare read"))?;
    let rows = stmt
        .query_map(
            params![after as i64, limit.min(i64::MAX as u64) as i64],
            record_from_row,
        )
        .map_err(sql(path, "read records"))?;
    let mut out = Vec::new();
    for row in rows {
        match row.map_err(sql(path, "read records"))? {
            Ok(r) => out.push(r),
            Err((seq, message)) => {
                return Err(StoreError::Malformed {
                    path: path.to_owned(),
                    seq,
                    message,
                })
            }
        }
    }
    Ok(out)
}

/// All checkpoints, ascending by count.
pub fn checkpoints(conn: &Connection, path: &Path) -> Result<Vec<Checkpoint>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT count, head_hash, timestamp, signature FROM audit_checkpoints ORDER BY count",
        )
        .map_err(sql(path, "prepare checkpoints"))?;
    let rows = stmt
        .query_map([], |row| {
            let count: i64 = row.get(0)?;
            Ok(Checkpoint {
                count: count as u64,
                head_hash: row.get(1)?,
                timestamp: row.get(2)?,
                signature: row.get(3)?,
            })
        })
        .map_err(sql(path, "read checkpoints"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sql(path, "read checkpoints"))
}

/// Highest and lowest stored seq, if any rows exist.
pub fn seq_range(conn: &Connection, path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT MIN(seq), MAX(seq) FROM audit_records", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sql(path, "seq range"))?;
    Ok(lo.zip(hi).map(|(a, b)| (a as u64, b as u64)))
}
