//! Issuing a sub-token: the signer verified, the request inside what the
//! signer holds (chain rules in `chain`, the root operator's current roles
//! here), the nonce spent with the token in one transaction.
use super::chain::{self, Token};
use super::store::SpentNonce;
use super::{
    refused, unavailable, Authority, DelegationError, DelegationInfo, ErrorClass, Issued,
    MAX_TOKENS,
};
use crate::gateway::{Gateway, Operator};
use crate::protocol::delegation::{IssueRequest, ScopeMap};
use crate::protocol::reason;

impl Gateway {
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
        let secret = crate::gateway::new_key();
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
    pub(super) fn signed_now(&self, timestamp: i64, now: i64) -> Result<(), DelegationError> {
        self.within_window(timestamp, now)
            .map_err(|r| DelegationError {
                reason_code: r.reason_code,
                message: r.message,
                class: ErrorClass::Refused,
            })
    }

    /// A suspended operator issues nothing (nor do its tokens).
    fn issuer_not_suspended(&self, root: &str) -> Result<(), DelegationError> {
        let subject = crate::gateway::suspend::Subject {
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
