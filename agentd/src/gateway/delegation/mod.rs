//! Delegation: an operator (or a token holder) issues a sub-token for part
//! of what it may do, for a while and a number of tool calls; the delegate
//! signs messages with the token's secret under the token's name. At each
//! call the token's scope, every ancestor's scope and the root operator's
//! current roles all apply. Revoking a link ends every token below it and
//! the kernel grants of their calls. See docs/delegation.md.
//!
//! `scope` and `chain` are pure; `store` is the SQLite side; this file
//! holds the tokens in memory (the decision path reads only memory) and
//! the gateway's operations.
pub mod chain;
mod issue;
mod revoke;
pub mod scope;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use chain::{Refused, Token};

use super::{Gateway, Operator};
use crate::protocol::delegation::{Principal, ScopeMap};
use crate::protocol::{reason, verify};

/// Expired tokens stay listed this long before they are pruned.
pub const KEEP_EXPIRED_SECS: i64 = 24 * 3600;
/// Most tokens kept at once (expired ones included until pruned).
pub const MAX_TOKENS: usize = 10_000;

/// The tokens, in memory; written through to gateway.db.
#[derive(Debug, Default)]
pub struct Delegations {
    tokens: Mutex<HashMap<String, Token>>,
}

impl Delegations {
    fn from_tokens(tokens: Vec<Token>) -> Self {
        Self {
            tokens: Mutex::new(tokens.into_iter().map(|t| (t.id.clone(), t)).collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain of `id`, leaf first; None if it or a link is unknown.
    pub fn chain(&self, id: &str) -> Option<Vec<Token>> {
        chain_in(&self.lock(), id)
    }

    /// Takes one use of every link of `chain` (leaf first), re-checking
    /// each is still in force now: two calls racing for the last use get
    /// one allow and one `delegation_used_up`.
    fn take_use(&self, chain: &[Token], now: i64) -> Result<(), Refused> {
        let mut map = self.lock();
        for t in chain {
            map.get(&t.id)
                .ok_or((
                    reason::UNKNOWN_DELEGATION,
                    format!("token {} is gone", t.id),
                ))?
                .in_force(now)?;
        }
        for t in chain {
            if let Some(live) = map.get_mut(&t.id) {
                live.uses_left -= 1;
            }
        }
        Ok(())
    }

    /// `id` and every token below it that is not revoked yet.
    fn subtree(&self, id: &str) -> Vec<String> {
        let map = self.lock();
        let mut out = vec![id.to_owned()];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i].clone();
            out.extend(
                map.values()
                    .filter(|t| t.parent.as_deref() == Some(parent.as_str()) && !t.revoked)
                    .map(|t| t.id.clone()),
            );
            i += 1;
        }
        out
    }
}

fn chain_in(map: &HashMap<String, Token>, id: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut next = Some(id.to_owned());
    while let Some(id) = next {
        let t = map.get(&id)?.clone();
        next = t.parent.clone();
        out.push(t);
        if out.len() > crate::protocol::delegation::MAX_DEPTH as usize {
            return None;
        }
    }
    Some(out)
}

/// Why a delegation request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason_code}: {message}")]
pub struct DelegationError {
    /// Stable reason code.
    pub reason_code: &'static str,
    /// Human explanation.
    pub message: String,
    /// What kind of refusal (for the HTTP status).
    pub class: ErrorClass,
}

/// What kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed (400).
    Malformed,
    /// Signature, authority or narrowing refused it (403).
    Refused,
    /// No such token (404).
    NotFound,
    /// The store failed (503).
    Unavailable,
}

fn refused((reason_code, message): Refused) -> DelegationError {
    let class = if reason_code == reason::UNKNOWN_DELEGATION {
        ErrorClass::NotFound
    } else {
        ErrorClass::Refused
    };
    DelegationError {
        reason_code,
        message,
        class,
    }
}

fn unavailable(e: impl std::fmt::Display) -> DelegationError {
    DelegationError {
        reason_code: reason::STORE_ERROR,
        message: e.to_string(),
        class: ErrorClass::Unavailable,
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationInfo {
    /// `ROOT/d-<hex>`: what the delegate puts in a message's `operator`.
    pub id: String,
    /// The root operator.
    pub root: String,
    /// The token it was issued under, if any.
    pub parent: Option<String>,
    /// Who holds it.
    pub to: String,
    /// What it may be used for.
    pub scope: ScopeMap,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Uses granted.
    pub uses: u32,
    /// Uses left.
    pub uses_left: u32,
    /// Position in its chain (1 = issued by the operator).
    pub depth: u32,
    /// Revoked (itself or with a link above).
    pub revoked: bool,
}

impl From<&Token> for DelegationInfo {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id.clone(),
            root: t.root.clone(),
            parent: t.parent.clone(),
            to: t.to.clone(),
            scope: t.scope.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            uses: t.uses,
            uses_left: t.uses_left,
            depth: t.depth,
            revoked: t.revoked,
        }
    }
}

/// A freshly issued token with its secret (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issued {
    /// The token.
    pub delegation: DelegationInfo,
    /// Its HMAC key, 64 hex digits. Not retrievable later.
    pub secret: String,
}

/// What a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// The token named.
    pub id: String,
    /// Every token revoked (it and those below it).
    pub tokens: Vec<String>,
    /// Calls whose kernel grants were ended.
    pub grants_revoked: usize,
}

/// Who a verified signer is.
pub(super) struct Authority {
    /// The root operator.
    pub op: Arc<Operator>,
    /// The signer's chain, leaf first (empty for the operator itself).
    pub chain: Vec<Token>,
}

impl Gateway {
    /// Loads the tokens at start.
    pub(super) fn load_delegations(store: &super::Store) -> Result<Delegations, super::StoreError> {
        Ok(Delegations::from_tokens(store.delegations()?))
    }

    /// Verifies `signature` over `canonical` by `signer` (an operator id or
    /// a token name) and returns its authority: the root operator enrolled,
    /// unrevoked and (for a token) unrotated since issue, every link in
    /// force, the HMAC made with the signer's key.
    pub(super) fn verify_signer(
        &self,
        signer: &str,
        canonical: &[u8],
        signature: &[u8],
        now: i64,
    ) -> Result<Authority, Refused> {
        let principal = Principal::parse(signer).map_err(|e| (e.reason_code(), e.to_string()))?;
        let root = principal.root();
        let op = self
            .operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(root)
            .cloned()
            .ok_or_else(|| {
                (
                    reason::UNKNOWN_OPERATOR,
                    format!("no operator `{root}` is enrolled"),
                )
            })?;
        if op.revoked {
            return Err((
                reason::OPERATOR_REVOKED,
                format!("operator `{root}` is revoked"),
            ));
        }
        let Principal::Token { id, .. } = principal else {
            // These requests are HMAC-signed; a public key is no HMAC key.
            if op.key_kind != crate::gateway::KeyKind::Hmac {
                return Err((
                    reason::SIGNATURE_MISMATCH,
                    format!("operator `{root}` signs with an Ed25519 key; this request is signed with an HMAC key only"),
                ));
            }
            if !verify(&op.key, canonical, signature) {
                return Err((
                    reason::SIGNATURE_MISMATCH,
                    format!("the signature does not match operator `{root}`'s key"),
                ));
            }
            return Ok(Authority {
                op,
                chain: Vec::new(),
            });
        };
        let chain = self
            .delegations
            .chain(id)
            .ok_or_else(|| (reason::UNKNOWN_DELEGATION, format!("no token `{id}`")))?;
        // The HMAC first: an unverified request learns nothing of the chain's state.
        if !verify(&chain[0].secret, canonical, signature) {
            return Err((
                reason::SIGNATURE_MISMATCH,
                format!("the signature does not match token `{id}`'s secret"),
            ));
        }
        self.root_unchanged(&op, &chain)?;
        chain::chain_in_force(&chain, now)?;
        Ok(Authority { op, chain })
    }

    /// The root operator's key is the one the chain was issued under.
    fn root_unchanged(&self, op: &Operator, chain: &[Token]) -> Result<(), Refused> {
        match chain.last() {
            Some(top) if top.root_key_gen != op.key_gen => Err((
                reason::DELEGATION_REVOKED,
                format!(
                    "operator `{}`'s key was rotated after token {} was issued",
                    top.root, top.id
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The decision's delegation check (3a) for a message signed under a
    /// token: the chain known and in force, the root unrotated, the call
    /// within every link's scope. None for an operator's own message.
    pub(super) fn delegation_for_call(
        &self,
        principal: &str,
        op: &Operator,
        action: &str,
        args: &serde_json::Map<String, serde_json::Value>,
        now: i64,
    ) -> Result<Option<Vec<Token>>, Refused> {
        let Ok(Principal::Token { id, .. }) = Principal::parse(principal) else {
            return Ok(None);
        };
        let chain = self
            .delegations
            .chain(id)
            .ok_or_else(|| (reason::UNKNOWN_DELEGATION, format!("no token `{id}`")))?;
        self.root_unchanged(op, &chain)?;
        chain::check_use(&chain, action, args, now)?;
        Ok(Some(chain))
    }

    /// After a wait for approval: the token a call was made under (if any)
    /// still vouches for it — known, its root unrotated, every link
    /// unrevoked and unexpired. Its use was spent when it was decided.
    pub(super) fn delegation_still_vouches(
        &self,
        principal: &str,
        op: &Operator,
        now: i64,
    ) -> Result<(), Refused> {
        let Ok(Principal::Token { id, .. }) = Principal::parse(principal) else {
            return Ok(());
        };
        let chain = self
            .delegations
            .chain(id)
            .ok_or_else(|| (reason::UNKNOWN_DELEGATION, format!("no token `{id}`")))?;
        self.root_unchanged(op, &chain)?;
        chain.iter().try_for_each(|t| t.live(now))
    }

    /// Takes the use of an otherwise allowed call (memory; the pipeline
    /// writes it through before the answer). Returns the tokens spent.
    pub(super) fn take_delegation_use(
        &self,
        chain: &[Token],
        now: i64,
    ) -> Result<Vec<String>, Refused> {
        self.delegations.take_use(chain, now)?;
        Ok(chain.iter().map(|t| t.id.clone()).collect())
    }

    /// Whether a message may use `action` as far as delegation goes: true
    /// for an operator's own message, else only if every link of its
    /// token's chain names the action (what MCP `tools/list` shows it).
    pub fn message_may_use(&self, active_message_id: &str, action: &str) -> bool {
        let Some(msg) = super::ingest::parse_active_id(active_message_id).and_then(|k| {
            self.active
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
                .cloned()
        }) else {
            return false;
        };
        let Ok(Principal::Token { id, .. }) = Principal::parse(&msg.operator) else {
            return true;
        };
        self.delegations
            .chain(id)
            .is_some_and(|chain| chain.iter().all(|t| t.scope.contains_key(action)))
    }

    /// Persists spent uses; an error means the call must not proceed.
    pub(super) fn persist_delegation_uses(&self, ids: &[String]) -> Result<(), super::StoreError> {
        self.store.spend_delegation_uses(ids)
    }

    /// Every token, without secrets, newest first.
    pub fn list_delegations(&self) -> Vec<DelegationInfo> {
        let mut v: Vec<DelegationInfo> = self
            .delegations
            .lock()
            .values()
            .map(DelegationInfo::from)
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Drops tokens expired for more than [`KEEP_EXPIRED_SECS`].
    pub(super) fn prune_delegations(&self, now: i64) -> Result<usize, super::StoreError> {
        let n = self.store.prune_delegations(now)?;
        self.delegations
            .lock()
            .retain(|_, t| t.expires_at > now - KEEP_EXPIRED_SECS);
        Ok(n)
    }
}

impl Gateway {
    /// Counts a refused delegation request against the flood limit of
    /// unverified input (per peer and per claimed signer, as messages):
    /// None while within it, else whether this is the first refusal of a
    /// run (only that one is audited).
    pub fn delegation_flood(&self, peer: &str, claimed: &str) -> Option<bool> {
        match self.flood.take(peer, claimed, std::time::Instant::now()) {
            super::flood::FloodVerdict::Pass => None,
            super::flood::FloodVerdict::Limited { first } => Some(first),
        }
    }
}

#[cfg(test)]
mod tests;
