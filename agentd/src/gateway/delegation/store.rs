//! Tokens in gateway.db (the `delegations` table, 0600 like the rest of the
//! file). Secrets are stored for verification and never leave this module
//! except into memory; they are never logged.
use rusqlite::{params, Connection, Transaction};

use super::chain::Token;
use crate::gateway::store::{sql, Store, StoreError};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS delegations (
    id TEXT PRIMARY KEY, root TEXT NOT NULL, parent TEXT, delegate TEXT NOT NULL,
    secret BLOB NOT NULL, scope TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    uses INTEGER NOT NULL, uses_left INTEGER NOT NULL, depth INTEGER NOT NULL,
    root_key_gen INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)";

/// A signer's nonce to spend with a change (issuance, signed revocation).
#[derive(Debug, Clone, Copy)]
pub struct SpentNonce<'a> {
    /// The signer (operator id or token name): nonces are per signer.
    pub signer: &'a str,
    /// The nonce.
    pub nonce: &'a str,
    /// When it may be reused.
    pub expires_at: i64,
    /// Now.
    pub now: i64,
}

/// Spends a nonce inside `tx`; false if it was used within its TTL.
fn spend_nonce(tx: &Transaction<'_>, n: SpentNonce<'_>) -> rusqlite::Result<bool> {
    // The messages' nonce table: one namespace per signer, expired rows reused.
    let changed = tx.execute(
        "INSERT INTO nonces (operator, nonce, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (operator, nonce) DO UPDATE SET expires_at = excluded.expires_at
         WHERE nonces.expires_at <= ?4",
        params![n.signer, n.nonce, n.expires_at, n.now],
    )?;
    Ok(changed == 1)
}

fn read_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Token, String)> {
    Ok((
        Token {
            id: r.get(0)?,
            root: r.get(1)?,
            parent: r.get(2)?,
            to: r.get(3)?,
            secret: r.get(4)?,
            scope: Default::default(),
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            uses: r.get(8)?,
            uses_left: r.get(9)?,
            depth: r.get(10)?,
            root_key_gen: r.get(11)?,
            revoked: r.get(12)?,
        },
        r.get(5)?,
    ))
}

impl Store {
    /// Every stored token (creating the table on first use).
    pub(in crate::gateway) fn delegations(&self) -> Result<Vec<Token>, StoreError> {
        let path = self.path().to_owned();
        self.with(|c| {
            c.execute_batch(TABLE)
                .map_err(sql(&path, "create delegations"))?;
            let mut st = c
                .prepare(
                    "SELECT id, root, parent, delegate, secret, scope, created_at, expires_at,
                            uses, uses_left, depth, root_key_gen, revoked FROM delegations",
                )
                .map_err(sql(&path, "select delegations"))?;
            let rows = st
                .query_map([], read_token)
                .map_err(sql(&path, "select delegations"))?;
            let mut out = Vec::new();
            for row in rows {
                let (mut t, scope) = row.map_err(sql(&path, "read delegation"))?;
                // A scope that no longer parses must not widen a token: refuse to start.
                t.scope = serde_json::from_str(&scope).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    table: "delegations",
                    message: format!("scope of {}: {e}", t.id),
                })?;
                out.push(t);
            }
            Ok(out)
        })
    }

    /// Spends the issuer's nonce and stores the token, atomically; false
    /// (nothing stored) if the nonce was replayed.
    pub(in crate::gateway) fn insert_delegation(
        &self,
        t: &Token,
        nonce: SpentNonce<'_>,
    ) -> Result<bool, StoreError> {
        let scope = serde_json::to_string(&t.scope).expect("strings serialise");
        let path = self.path().to_owned();
        self.with(|c| {
            let tx = c.transaction().map_err(sql(&path, "begin"))?;
            if !spend_nonce(&tx, nonce).map_err(sql(&path, "spend nonce"))? {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO delegations (id, root, parent, delegate, secret, scope, created_at,
                     expires_at, uses, uses_left, depth, root_key_gen, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)",
                params![
                    t.id,
                    t.root,
                    t.parent,
                    t.to,
                    t.secret,
                    scope,
                    t.created_at,
                    t.expires_at,
                    t.uses,
                    t.uses_left,
                    t.depth,
                    t.root_key_gen
                ],
            )
            .map_err(sql(&path, "insert delegation"))?;
            tx.commit().map_err(sql(&path, "commit"))?;
            Ok(true)
        })
    }

    /// Spends one use of each token (a call under the first, counted on
    /// every link up its chain).
    pub(in crate::gateway) fn spend_delegation_uses(
        &self,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let path = self.path().to_owned();
        self.with(|c| {
            let tx = c.transaction().map_err(sql(&path, "begin"))?;
            for id in ids {
                tx.execute(
                    "UPDATE delegations SET uses_left = uses_left - 1 WHERE id = ?1 AND uses_left > 0",
                    [id],
                )
                .map_err(sql(&path, "spend delegation use"))?;
            }
            tx.commit().map_err(sql(&path, "commit"))
        })
    }

    /// Marks tokens revoked (spending the signer's nonce first, when signed);
    /// false (nothing changed) if the nonce was replayed.
    pub(in crate::gateway) fn revoke_delegations(
        &self,
        ids: &[String],
        nonce: Option<SpentNonce<'_>>,
    ) -> Result<bool, StoreError> {
        let path = self.path().to_owned();
        self.with(|c| {
            let tx = c.transaction().map_err(sql(&path, "begin"))?;
            if let Some(n) = nonce {
                if !spend_nonce(&tx, n).map_err(sql(&path, "spend nonce"))? {
                    return Ok(false);
                }
            }
            for id in ids {
                tx.execute("UPDATE delegations SET revoked = 1 WHERE id = ?1", [id])
                    .map_err(sql(&path, "revoke delegation"))?;
            }
            tx.commit().map_err(sql(&path, "commit"))?;
            Ok(true)
        })
    }

    /// Ids of the verified active messages signed by any of `principals`.
    pub(in crate::gateway) fn active_ids_signed_by(
        &self,
        principals: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let path = self.path().to_owned();
        self.with(|c: &mut Connection| {
            let mut st = c
                .prepare(
                    "SELECT id FROM active_messages WHERE operator = ?1 AND key_gen IS NOT NULL",
                )
                .map_err(sql(&path, "select active of token"))?;
            let mut out = Vec::new();
            for p in principals {
                let rows = st
                    .query_map([p], |r| r.get::<_, String>(0))
                    .map_err(sql(&path, "select active of token"))?;
                for id in rows {
                    out.push(id.map_err(sql(&path, "read active of token"))?);
                }
            }
            Ok(out)
        })
    }

    /// Deletes tokens expired for more than a day (their chains with them:
    /// no token outlives its parent). Returns rows removed.
    pub(in crate::gateway) fn prune_delegations(&self, now: i64) -> Result<usize, StoreError> {
        let path = self.path().to_owned();
        self.with(|c| {
            c.execute_batch(TABLE)
                .map_err(sql(&path, "create delegations"))?;
            c.execute(
                "DELETE FROM delegations WHERE expires_at <= ?1",
                [now - super::KEEP_EXPIRED_SECS],
            )
            .map_err(sql(&path, "prune delegations"))
        })
    }
}
