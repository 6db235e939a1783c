//! Revoking a token: by an administrator, or signed by the token or a link
//! up its chain; its whole subtree is marked revoked and the kernel grants
//! of their calls end at once.
use super::store::SpentNonce;
use super::{refused, unavailable, DelegationError, ErrorClass, Revoked};
use crate::gateway::Gateway;
use crate::protocol::delegation::{CheckedRevoke, RevokeRequest};
use crate::protocol::reason;

impl Gateway {
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
}
