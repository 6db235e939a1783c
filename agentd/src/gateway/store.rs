//! `state_dir/gateway.db`: operators and their keys, session bindings, used
//! nonces, active messages and loaded policies. The decision path never reads
//! it: `state` keeps an in-memory copy, loaded at start and written through.
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Errors of the gateway store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("gateway store {path}: {context}: {source}")]
    Sql {
        path: PathBuf,
        context: &'static str,
        source: rusqlite::Error,
    },
    /// Creating the file or setting its mode failed.
    #[error("gateway store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stored row could not be decoded.
    #[error("gateway store {path}: corrupt row in {table}: {message}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        message: String,
    },
}

/// One stored operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRow {
    /// Operator id.
    pub id: String,
    /// HMAC key, or an Ed25519 public key (`key_kind`).
    pub key: Vec<u8>,
    /// How the operator signs.
    pub key_kind: super::KeyKind,
    /// The key its receipts are sealed with when `key` is a public key
    /// (a host-held secret); None: `key` itself.
    pub receipt_key: Option<Vec<u8>>,
    /// Increments on every rotation.
    pub key_gen: u32,
    /// Role names.
    pub roles: Vec<String>,
    /// Revoked operators can neither sign nor act.
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// One stored active message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRow {
    /// 32 hex digits.
    pub id: String,
    /// Operator id (claimed one for untrusted messages; may be empty).
    pub operator: String,
    /// Session id.
    pub session: String,
    /// Key generation that verified it; None if untrusted.
    pub key_gen: Option<u32>,
    /// Ingest reason code (`ok` if verified).
    pub reason: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// The agent that holds it (the first to use it), if any yet.
    pub holder: Option<String>,
    /// v2: the agent it is addressed to (`for_agent`), if any.
    pub audience: Option<String>,
    /// v2: its signed scope as JSON, if it has one.
    pub scope: Option<String>,
}

/// One session binding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRow {
    /// Session id.
    pub session: String,
    /// The operator it is bound to.
    pub operator: String,
    /// Unix seconds of the binding.
    pub bound_at: i64,
    /// Unix seconds of the operator's latest verified message in it.
    pub last_seen: i64,
    /// `full` or `read_only` (the policy's `[sessions] start`; filled in
    /// by the gateway, empty as stored).
    #[serde(default)]
    pub mode: String,
    /// Its elevations and anomaly counts (memory; filled in by the gateway).
    #[serde(default)]
    pub state: super::session_state::SessionView,
}

/// One stored policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// Load sequence number.
    pub seq: i64,
    /// Compiled policy id.
    pub policy_id: String,
    /// Source text.
    pub source: String,
    /// Where it came from (file name or "api").
    pub origin: String,
    /// Unix seconds.
    pub loaded_at: i64,
}

/// Outcome of recording a verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Stored; the session is (now) bound to this operator.
    Accepted {
        /// The session was bound by this message.
        newly_bound: bool,
        /// The binding it replaced, expired (operator), if any.
        rebound_from: Option<String>,
    },
    /// The nonce was used within its TTL; nothing stored.
    Replayed,
    /// The session belongs to another operator; nothing stored.
    SessionMismatch,
}

/// Handle to gateway.db (one connection; writes are short).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operators (
    id TEXT PRIMARY KEY, key BLOB NOT NULL, key_gen INTEGER NOT NULL,
    roles TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY, operator TEXT NOT NULL, bound_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (
    operator TEXT NOT NULL, nonce TEXT NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (operator, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS active_messages (
    id TEXT PRIMARY KEY, operator TEXT NOT NULL, session TEXT NOT NULL,
    key_gen INTEGER, reason TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS active_expiry ON active_messages (expires_at);
CREATE INDEX IF NOT EXISTS active_operator ON active_messages (operator);
CREATE TABLE IF NOT EXISTS policies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, policy_id TEXT NOT NULL,
    source TEXT NOT NULL, origin TEXT NOT NULL, loaded_at INTEGER NOT NULL);
";

impl Store {
    /// Opens (creating, mode 0600) `state_dir/gateway.db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("gateway.db");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        crate::audit::store::create_private(&path).map_err(io)?;
        let conn = Connection::open(&path).map_err(sql(&path, "open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(sql(&path, "pragmas"))?;
        conn.execute_batch(SCHEMA).map_err(sql(&path, "schema"))?;
        migrate(&conn).map_err(sql(&path, "migrate"))?;
        for side in ["gateway.db-wal", "gateway.db-shm"] {
            let p = state_dir.join(side);
            if p.exists() {
                std::fs::set_permissions(&p, Permissions::from_mode(0o600)).map_err(io)?;
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A poisoned lock means a panic mid-write; SQLite rolled the transaction back.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// All operators.
    pub fn operators(&self) -> Result<Vec<OperatorRow>, StoreError> {
        let path = self.path.clone();
        self.with(|c| {
            let mut st = c
                .prepare("SELECT id, key, key_gen, roles, revoked, created_at, key_kind, receipt_key FROM operators ORDER BY id")
                .map_err(sql(&path, "select operators"))?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?, r.get::<_, String>(3)?, r.get::<_, bool>(4)?, r.get::<_, i64>(5)?, r.get::<_, String>(6)?, r.get::<_, Option<Vec<u8>>>(7)?))
                })
                .map_err(sql(&path, "select operators"))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, key, key_gen, roles, revoked, created_at, kind, receipt_key) = row.map_err(sql(&path, "read operator"))?;
                let key_kind = super::KeyKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                    path: path.clone(),
                    table: "operators",
                    message: format!("key kind of {id}: `{kind}`"),
                })?;
                let roles: Vec<String> = serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    table: "operators",
                    message: format!("roles of {id}: {e}"),
                })?;
                out.push(OperatorRow { id, key, key_kind, receipt_key, key_gen, roles, revoked, created_at });
            }
            Ok(out)
        })
    }

    /// Inserts a new operator; false if the id exists.
    pub fn insert_operator(&self, op: &OperatorRow) -> Result<bool, StoreError> {
        let roles = serde_json::to_string(&op.roles).expect("strings serialise");
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT OR IGNORE INTO operators (id, key, key_gen, roles, revoked, created_at, updated_at, key_kind, receipt_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                    params![op.id, op.key, op.key_gen, roles, op.revoked, op.created_at, op.key_kind.as_str(), op.receipt_key],
                )
                .map_err(sql(&self.path, "insert operator"))?;
            Ok(n == 1)
        })
    }

    /// Replaces key (and bumps key_gen) of an operator; false if unknown.
    pub fn rotate_key(
        &self,
        id: &str,
        key: &[u8],
        key_gen: u32,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE operators SET key = ?2, key_gen = ?3, updated_at = ?4 WHERE id = ?1",
                    params![id, key, key_gen, now],
                )
                .map_err(sql(&self.path, "rotate key"))?;
            Ok(n == 1)
        })
    }

    /// Replaces an operator's roles; false if unknown.
    pub fn set_roles(&self, id: &str, roles: &[String], now: i64) -> Result<bool, StoreError> {
        let roles = serde_json::to_string(roles).expect("strings serialise");
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE operators SET roles = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, roles, now],
                )
                .map_err(sql(&self.path, "set roles"))?;
            Ok(n == 1)
        })
    }

    /// Marks an operator revoked; false if unknown.
    pub fn revoke(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE operators SET revoked = 1, updated_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(sql(&self.path, "revoke operator"))?;
            Ok(n == 1)
        })
    }

    /// All session bindings.
    pub fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare(
                    "SELECT session, operator, bound_at, last_seen FROM sessions ORDER BY session",
                )
                .map_err(sql(&self.path, "select sessions"))?;
            let rows = st
                .query_map([], |r| {
                    Ok(SessionRow {
                        session: r.get(0)?,
                        operator: r.get(1)?,
                        bound_at: r.get(2)?,
                        last_seen: r.get(3)?,
                        mode: String::new(),
                        state: Default::default(),
                    })
                })
                .map_err(sql(&self.path, "select sessions"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql(&self.path, "read session"))
        })
    }

    /// Removes a session binding; false if the session was not bound.
    pub fn release_session(&self, session: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute("DELETE FROM sessions WHERE session = ?1", [session])
                .map_err(sql(&self.path, "release session"))?;
            Ok(n == 1)
        })
    }

    /// Ids of every stored active message of `operator` and of the tokens
    /// it delegated (`operator/d-…`; expired ones too, until pruned).
    pub fn active_ids_of(&self, operator: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare(
                    // substr, not LIKE: `_` in an operator id is no wildcard.
                    "SELECT id FROM active_messages WHERE key_gen IS NOT NULL
                     AND (operator = ?1 OR substr(operator, 1, length(?1) + 1) = ?1 || '/')",
                )
                .map_err(sql(&self.path, "select active of operator"))?;
            let rows = st
                .query_map([operator], |r| r.get(0))
                .map_err(sql(&self.path, "select active of operator"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql(&self.path, "read active of operator"))
        })
    }

    /// Records the agent holding an active message (first use wins).
    pub fn set_holder(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE active_messages SET holder = ?2 WHERE id = ?1 AND holder IS NULL",
                params![id, holder],
            )
            .map(drop)
            .map_err(sql(&self.path, "set holder"))
        })
    }

    /// Unexpired active messages.
    pub fn active_messages(&self, now: i64) -> Result<Vec<ActiveRow>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT id, operator, session, key_gen, reason, created_at, expires_at, holder, audience, scope FROM active_messages WHERE expires_at > ?1")
                .map_err(sql(&self.path, "select active"))?;
            let rows = st
                .query_map([now], |r| {
                    Ok(ActiveRow {
                        id: r.get(0)?,
                        operator: r.get(1)?,
                        session: r.get(2)?,
                        key_gen: r.get(3)?,
                        reason: r.get(4)?,
                        created_at: r.get(5)?,
                        expires_at: r.get(6)?,
                        holder: r.get(7)?,
                        audience: r.get(8)?,
                        scope: r.get(9)?,
                    })
                })
                .map_err(sql(&self.path, "select active"))?;
            rows.collect::<Result<_, _>>().map_err(sql(&self.path, "read active"))
        })
    }

    /// Spends `nonce` of `namespace` (an operator id, or a prefixed one for
    /// signatures other than messages'): false if it is live already.
    pub fn spend_nonce(
        &self,
        namespace: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let path = self.path.clone();
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO nonces (operator, nonce, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (operator, nonce) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE nonces.expires_at <= ?4",
                    params![namespace, nonce, expires_at, now],
                )
                .map_err(sql(&path, "insert nonce"))?;
            Ok(n == 1)
        })
    }

    /// Atomically: consume the nonce, bind or check the session, store the
    /// active message. Nothing is stored unless all three succeed. A binding
    /// whose operator has sent nothing in it for `session_ttl_secs` (0 =
    /// never expires) has lapsed: the session binds to this operator.
    pub fn accept_verified(
        &self,
        nonce: &str,
        nonce_expires_at: i64,
        msg: &ActiveRow,
        session_ttl_secs: i64,
    ) -> Result<AcceptOutcome, StoreError> {
        let path = self.path.clone();
        self.with(|c| {
            let tx = c.transaction().map_err(sql(&path, "begin"))?;
            // An expired row may be reused; a live one means replay.
            let n = tx
                .execute(
                    "INSERT INTO nonces (operator, nonce, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (operator, nonce) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE nonces.expires_at <= ?4",
                    params![msg.operator, nonce, nonce_expires_at, msg.created_at],
                )
                .map_err(sql(&path, "insert nonce"))?;
            if n == 0 {
                return Ok(AcceptOutcome::Replayed);
            }
            let bound: Option<(String, i64)> = tx
                .query_row(
                    "SELECT operator, last_seen FROM sessions WHERE session = ?1",
                    [&msg.session],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql(&path, "select session"))?;
            let now = msg.created_at;
            let lapsed = |last_seen: i64| session_ttl_secs > 0 && last_seen + session_ttl_secs <= now;
            let (newly_bound, rebound_from) = match bound {
                Some((op, _)) if op == msg.operator => {
                    tx.execute(
                        "UPDATE sessions SET last_seen = ?2 WHERE session = ?1",
                        params![msg.session, now],
                    )
                    .map_err(sql(&path, "touch session"))?;
                    (false, None)
                }
                Some((op, last_seen)) if lapsed(last_seen) => {
                    tx.execute(
                        "UPDATE sessions SET operator = ?2, bound_at = ?3, last_seen = ?3 WHERE session = ?1",
                        params![msg.session, msg.operator, now],
                    )
                    .map_err(sql(&path, "rebind session"))?;
                    (true, Some(op))
                }
                Some(_) => return Ok(AcceptOutcome::SessionMismatch),
                None => {
                    tx.execute(
                        "INSERT INTO sessions (session, operator, bound_at, last_seen) VALUES (?1, ?2, ?3, ?3)",
                        params![msg.session, msg.operator, now],
                    )
                    .map_err(sql(&path, "bind session"))?;
                    (true, None)
                }
            };
            insert_active(&tx, msg).map_err(sql(&path, "insert active message"))?;
            tx.commit().map_err(sql(&path, "commit"))?;
            Ok(AcceptOutcome::Accepted {
                newly_bound,
                rebound_from,
            })
        })
    }

    /// Stores an untrusted active message.
    pub fn insert_untrusted(&self, msg: &ActiveRow) -> Result<(), StoreError> {
        self.with(|c| {
            insert_active(c, msg)
                .map(drop)
                .map_err(sql(&self.path, "insert active message"))
        })
    }

    /// Deletes an active message (its audit record could not be written).
    pub fn delete_active(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM active_messages WHERE id = ?1", [id])
                .map(drop)
                .map_err(sql(&self.path, "delete active message"))
        })
    }

    /// Deletes expired nonces and active messages; returns rows removed.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        self.with(|c| {
            let a = c
                .execute("DELETE FROM nonces WHERE expires_at <= ?1", [now])
                .map_err(sql(&self.path, "prune nonces"))?;
            let b = c
                .execute("DELETE FROM active_messages WHERE expires_at <= ?1", [now])
                .map_err(sql(&self.path, "prune active"))?;
            Ok(a + b)
        })
    }

    /// Records a newly loaded policy version.
    pub fn insert_policy(
        &self,
        policy_id: &str,
        source: &str,
        origin: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute("INSERT INTO policies (policy_id, source, origin, loaded_at) VALUES (?1, ?2, ?3, ?4)", params![policy_id, source, origin, now])
                .map_err(sql(&self.path, "insert policy"))?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The most recently loaded policy.
    pub fn current_policy(&self) -> Result<Option<PolicyRow>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT seq, policy_id, source, origin, loaded_at FROM policies ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok(PolicyRow { seq: r.get(0)?, policy_id: r.get(1)?, source: r.get(2)?, origin: r.get(3)?, loaded_at: r.get(4)? })
            })
            .optional()
            .map_err(sql(&self.path, "select policy"))
        })
    }
}

fn insert_active(c: &Connection, m: &ActiveRow) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO active_messages (id, operator, session, key_gen, reason, created_at, expires_at, holder, audience, scope) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![m.id, m.operator, m.session, m.key_gen, m.reason, m.created_at, m.expires_at, m.holder, m.audience, m.scope],
    )
}

/// Adds the columns later versions need to a store an older version made.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        let mut st = c.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = st.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            if n? == column {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if !has("active_messages", "holder")? {
        c.execute_batch("ALTER TABLE active_messages ADD COLUMN holder TEXT")?;
    }
    // v2 messages: the addressed agent and the signed scope.
    for column in ["audience", "scope"] {
        if !has("active_messages", column)? {
            c.execute_batch(&format!(
                "ALTER TABLE active_messages ADD COLUMN {column} TEXT"
            ))?;
        }
    }
    // Operators enrolled with an Ed25519 public key (fleet mode).
    if !has("operators", "key_kind")? {
        c.execute_batch(
            "ALTER TABLE operators ADD COLUMN key_kind TEXT NOT NULL DEFAULT 'hmac';
             ALTER TABLE operators ADD COLUMN receipt_key BLOB;",
        )?;
    }
    if !has("sessions", "last_seen")? {
        c.execute_batch(
            "ALTER TABLE sessions ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
             UPDATE sessions SET last_seen = bound_at;",
        )?;
    }
    Ok(())
}

pub(super) fn sql<'a>(
    path: &'a Path,
    context: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        context,
        source,
    }
}
