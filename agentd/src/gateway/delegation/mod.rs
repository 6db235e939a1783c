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
pub mod scope;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use chain::{Refused, Token};
use store::SpentNonce;

use super::{Gateway, Operator};
use crate::protocol::delegation::{
    CheckedRevoke, IssueRequest, Principal, RevokeRequest, ScopeMap,
};
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

    /// Persists spent uses; an error means the call must not proceed.
    pub(super) fn persist_delegation_uses(&self, ids: &[String]) -> Result<(), super::StoreError> {
        self.store.spend_delegation_uses(ids)
    }

    /// Issues a sub-token on a signed request at Unix time `now`.
    pub fn issue_delegation(
        &self,
        req: &IssueRequest,
        now: i64,
    ) -> Result<Issued, DelegationError> {
        let signature = req.check().map_err(|e| DelegationError {
            reason_code: e.reason_code(),
            message: e.to_string(),
            class: ErrorClass::Malformed,
        })?;
        let auth = self
            .verify_signer(&req.issuer, &req.canonical(), &signature, now)
            .map_err(refused)?;
        self.signed_now(req.timestamp, now)?;
        let root = auth.op_root(&req.issuer);
        self.issuer_not_suspended(&root)?;
        chain::check_issue(&root, &auth.chain, req, now).map_err(refused)?;
        self.root_allows(&root, &auth.op, &req.scope)?;
        if self.delegations.lock().len() >= MAX_TOKENS {
            return Err(refused((
                reason::INVALID_DELEGATION,
                format!("{MAX_TOKENS} tokens exist already; revoke some or let them expire"),
            )));
        }
        let secret = super::new_key();
        let token = Token {
            id: crate::protocol::delegation::new_token_id(&root),
            root: root.clone(),
            parent: auth.chain.first().map(|t| t.id.clone()),
            to: req.to.clone(),
            secret: secret.clone(),
            scope: req.scope.clone(),
            created_at: now,
            expires_at: now + req.ttl_secs,
            uses: req.uses,
            uses_left: req.uses,
            depth: auth.chain.len() as u32 + 1,
            root_key_gen: auth.op.key_gen,
            revoked: false,
        };
        let nonce = SpentNonce {
            signer: &req.issuer,
            nonce: &req.nonce,
            expires_at: now + self.settings.nonce_ttl_secs,
            now,
        };
        if !self
            .store
            .insert_delegation(&token, nonce)
            .map_err(unavailable)?
        {
            return Err(refused((
                reason::REPLAYED_NONCE,
                "the nonce was already used by this issuer".into(),
            )));
        }
        let info = DelegationInfo::from(&token);
        self.delegations.lock().insert(token.id.clone(), token);
        tracing::info!(token = %info.id, issuer = %req.issuer, to = %info.to, depth = info.depth, uses = info.uses, expires_at = info.expires_at, "delegation issued");
        Ok(Issued {
            delegation: info,
            secret: hex::encode(secret),
        })
    }

    /// The request was signed within the timestamp window around `now`.
    fn signed_now(&self, timestamp: i64, now: i64) -> Result<(), DelegationError> {
        self.within_window(timestamp, now)
            .map_err(|r| DelegationError {
                reason_code: r.reason_code,
                message: r.message,
                class: ErrorClass::Refused,
            })
    }

    /// A suspended operator issues nothing (nor do its tokens).
    fn issuer_not_suspended(&self, root: &str) -> Result<(), DelegationError> {
        let subject = super::suspend::Subject {
            operator: Some(root),
            agents: [None, None],
        };
        match self.suspensions.refusal(&subject) {
            Some(r) => Err(refused(r)),
            None => Ok(()),
        }
    }

    /// Every action of the scope is one some current role of the root
    /// operator allows: a token never names what its issuer cannot do.
    fn root_allows(
        &self,
        root: &str,
        op: &Operator,
        scope: &ScopeMap,
    ) -> Result<(), DelegationError> {
        let policy = self
            .current_policy()
            .ok_or_else(|| refused((reason::NO_POLICY, "no policy is loaded".into())))?;
        for action in scope.keys() {
            let allowed = op.roles.iter().any(|r| {
                policy
                    .roles
                    .get(r)
                    .is_some_and(|role| role.allow.contains_key(action))
            });
            if !allowed {
                return Err(refused((
                    reason::DELEGATION_SCOPE_TOO_WIDE,
                    format!(
                        "no role of `{root}` ({}) allows `{action}`",
                        op.roles.join(", ")
                    ),
                )));
            }
        }
        Ok(())
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

    /// Revokes a token and every token below it, then ends the kernel
    /// grants of every call made under them. `admin`: the caller is an
    /// administrator (an unsigned request is refused otherwise).
    pub fn revoke_delegation(
        &self,
        req: &RevokeRequest,
        admin: bool,
        now: i64,
    ) -> Result<Revoked, DelegationError> {
        let checked = req.check().map_err(|e| DelegationError {
            reason_code: e.reason_code(),
            message: e.to_string(),
            class: ErrorClass::Malformed,
        })?;
        if self.delegations.chain(&req.id).is_none() {
            return Err(refused((
                reason::UNKNOWN_DELEGATION,
                format!("no token `{}`", req.id),
            )));
        }
        let nonce = match checked {
            CheckedRevoke::Unsigned if admin => None,
            CheckedRevoke::Unsigned => {
                return Err(refused((
                    reason::PERMISSION_DENIED,
                    "an unsigned revocation is an administrator's (root or the admin group)".into(),
                )))
            }
            CheckedRevoke::Signed {
                by,
                nonce,
                timestamp,
                signature,
            } => {
                self.may_revoke(req, by, &signature, now)?;
                self.signed_now(timestamp, now)?;
                Some(SpentNonce {
                    signer: by,
                    nonce,
                    expires_at: now + self.settings.nonce_ttl_secs,
                    now,
                })
            }
        };
        let tokens = self.delegations.subtree(&req.id);
        if !self
            .store
            .revoke_delegations(&tokens, nonce)
            .map_err(unavailable)?
        {
            return Err(refused((
                reason::REPLAYED_NONCE,
                "the nonce was already used by this signer".into(),
            )));
        }
        {
            let mut map = self.delegations.lock();
            for id in &tokens {
                if let Some(t) = map.get_mut(id) {
                    t.revoked = true;
                }
            }
        }
        let grants_revoked = self.end_grants_of_tokens(&tokens);
        tracing::warn!(token = %req.id, tokens = tokens.len(), grants_revoked, "delegation revoked");
        Ok(Revoked {
            id: req.id.clone(),
            tokens,
            grants_revoked,
        })
    }

    /// The signer of a revocation is the token or up its chain, and its
    /// signature holds. (A revoked or expired signer may still revoke what
    /// lies below it: ending authority is never a widening.)
    fn may_revoke(
        &self,
        req: &RevokeRequest,
        by: &str,
        signature: &[u8],
        now: i64,
    ) -> Result<(), DelegationError> {
        let canonical = req.canonical().expect("checked: all fields set");
        let target = self.delegations.chain(&req.id).unwrap_or_default();
        let above =
            target.iter().any(|t| t.id == by) || target.last().is_some_and(|top| top.root == by);
        match self.verify_signer(by, &canonical, signature, now) {
            Ok(_) => {}
            // A link's own state does not stop it ending what it issued.
            Err((code, _))
                if above
                    && matches!(
                        code,
                        reason::DELEGATION_REVOKED
                            | reason::DELEGATION_EXPIRED
                            | reason::DELEGATION_USED_UP
                    ) => {}
            Err(r) => return Err(refused(r)),
        }
        if !above {
            return Err(refused((
                reason::DELEGATION_NOT_ISSUER,
                format!("`{by}` is neither token {} nor up its chain", req.id),
            )));
        }
        Ok(())
    }

    /// Ends what the calls made on messages signed under `tokens` still
    /// hold in the kernel; returns calls ended.
    fn end_grants_of_tokens(&self, tokens: &[String]) -> usize {
        let ids = match self.store.active_ids_signed_by(tokens) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the tokens' messages; their grants live until their TTL");
                return 0;
            }
        };
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        hooks
            .iter()
            .map(|hook| {
                hook.revoke_messages(&ids).unwrap_or_else(|e| {
                    tracing::error!(hook = hook.name(), error = %e, "revoking the tokens' grants failed");
                    0
                })
            })
            .sum()
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

impl Authority {
    /// The root operator's id (the signer's, or its chain's).
    fn op_root(&self, signer: &str) -> String {
        self.chain
            .last()
            .map(|t| t.root.clone())
            .unwrap_or_else(|| signer.to_owned())
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
