//! Protected files at the gateway. A call whose grant would write a
//! protected file (a write scope that is one, or lies inside a protected
//! directory — a path argument naming it) needs its owner's word: either
//! (a) the message's operator holds an owner role and the message's signed
//! scope names the file, or (b) the call is approved with an approval
//! signed with an owner's key. Then, and only then, the grant carries the
//! file in `protected_write` and the kernel lets the call write it.
//! Otherwise the call is refused here (`protected_file`) — or, when the
//! action needs approval anyway, escalated, and refused after an approval
//! nobody signed as an owner (`protected_file_needs_owner`).
use std::path::{Path, PathBuf};

use super::decide::Refused;
use super::ingest::ActiveMessage;
use super::{Gateway, Operator};
use crate::grant_spec::GrantSpec;
use crate::policy::approval::Answer;
use crate::policy::owner_approval::{self, OwnerSignature};
use crate::policy::{Allowed, CompiledPolicy};
use crate::protocol::{reason, scope_names_path};

/// The protected files among `grant`'s write scopes: a scope that is a
/// protected path or lies inside one. A scope that merely *contains* a
/// protected file is left to the kernel, which carves the file out of it.
pub fn named_writes(grant: &GrantSpec, protected: &[PathBuf]) -> Vec<PathBuf> {
    grant
        .write
        .iter()
        .filter(|w| protected.iter().any(|p| w.starts_with(p)))
        .cloned()
        .collect()
}

/// Whether the message's signed scope names `file` for `action`: an entry
/// for the action has an argument pattern that is exactly the file's path
/// (as the policy resolved it). A prefix pattern (`/w/*`) matches the file
/// but does not name it: the owner must have signed this very file.
/// Messages without a signed scope (v1, or v2 unscoped) name nothing.
fn scope_names(msg: &ActiveMessage, action: &str, file: &Path) -> bool {
    let Some(scope) = msg.scope.as_ref() else {
        return false;
    };
    let Some(path) = file.to_str() else {
        return false;
    };
    scope.entries.iter().any(|e| {
        e.action == action
            && e.args.iter().any(|(arg, pattern)| {
                pattern == path && scope_names_path(Some(scope), action, arg, path)
            })
    })
}

impl Gateway {
    /// Every configured agent's protected files, as real paths (the agents
    /// manager publishes them on every agent change and policy load).
    pub fn set_agent_protected(&self, paths: Vec<PathBuf>) {
        *self
            .agent_protected
            .write()
            .unwrap_or_else(|p| p.into_inner()) = paths;
    }

    /// The protected files the decision compares against: the agents'
    /// (expanded per agent) and the policy's entries without placeholders.
    fn protected_paths(&self, policy: &CompiledPolicy) -> Vec<PathBuf> {
        let mut out = self
            .agent_protected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for e in policy.protected.iter().filter(|e| !e.contains('{')) {
            if let Ok(p) = crate::policy::path::normalize(e) {
                out.push(PathBuf::from(p));
            }
        }
        out
    }

    /// Check 7e: protected files the call's grant would write. Ok(files)
    /// that only an owner-signed approval may still give (the action needs
    /// approval); an owner's signed scope puts them in the grant at once.
    pub(super) fn protected_writes(
        &self,
        policy: &CompiledPolicy,
        msg: &ActiveMessage,
        op: &Operator,
        action: &str,
        allowed: &mut Allowed,
    ) -> Result<Vec<PathBuf>, Refused> {
        let Some(grant) = allowed.grant.as_mut() else {
            return Ok(vec![]);
        };
        let hits = named_writes(grant, &self.protected_paths(policy));
        if hits.is_empty() {
            return Ok(vec![]);
        }
        // A message signed under a delegation token carries its root
        // operator's authority, narrowed; it never speaks as the owner
        // for a protected file: the owner signs that themselves.
        let delegated = crate::protocol::delegation::token_root(&msg.operator).is_some();
        let owner = !delegated && policy.is_owner(&op.roles);
        if owner && hits.iter().all(|h| scope_names(msg, action, h)) {
            tracing::info!(files = ?hits, operator = %msg.operator, "owner's signed scope names the protected files");
            grant.protected_write = hits;
            return Ok(vec![]);
        }
        if allowed.approval_required {
            return Ok(hits);
        }
        let list = hits
            .iter()
            .map(|h| h.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err((
            reason::PROTECTED_FILE,
            format!(
                "{list} is protected: writing it needs an owner's signed scope naming it, or an approval signed with an owner's key{}",
                if owner {
                    ""
                } else if delegated {
                    " (a message signed under a delegation token never counts as the owner's)"
                } else {
                    " (the operator holds no owner role)"
                }
            ),
        ))
    }

    /// Verifies an owner's signature over an answer to approval `id`:
    /// the operator is enrolled, unrevoked and holds an owner role; the
    /// HMAC matches its key; the timestamp is within the window; the nonce
    /// is fresh (then spent). Returns the operator.
    pub fn verify_owner_answer(
        &self,
        sig: &OwnerSignature,
        id: &str,
        answer: Answer,
        now: i64,
    ) -> Result<String, Refused> {
        let bad = |why: String| (reason::APPROVAL_SIGNATURE_INVALID, why);
        if !owner_approval::nonce_ok(&sig.nonce) {
            return Err(bad(
                "the nonce must be 16-128 characters of [A-Za-z0-9_-]".into()
            ));
        }
        let op = self
            .operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sig.operator)
            .cloned()
            .filter(|o| !o.revoked)
            .ok_or_else(|| {
                bad(format!(
                    "no enrolled, unrevoked operator `{}`",
                    sig.operator
                ))
            })?;
        // Owner approvals are HMAC-signed; a public key is no HMAC key.
        if op.key_kind != super::KeyKind::Hmac || !owner_approval::verify(&op.key, sig, id, answer)
        {
            return Err(bad(format!(
                "the signature does not match operator `{}`'s key for this approval and answer",
                sig.operator
            )));
        }
        let window = self.settings.timestamp_window_secs;
        if (now - sig.timestamp).abs() > window {
            return Err(bad(format!(
                "signed {} s from now; the window is {window} s",
                now - sig.timestamp
            )));
        }
        let policy = self
            .current_policy()
            .ok_or((reason::NO_POLICY, "no policy is loaded".to_owned()))?;
        if !policy.is_owner(&op.roles) {
            return Err((
                reason::APPROVAL_SIGNER_NOT_OWNER,
                format!("operator `{}` holds no owner role", sig.operator),
            ));
        }
        let fresh = self
            .store
            .spend_nonce(
                &format!("approval:{}", sig.operator),
                &sig.nonce,
                now + self.settings.nonce_ttl_secs,
                now,
            )
            .map_err(|e| (reason::STORE_ERROR, e.to_string()))?;
        if !fresh {
            return Err(bad("the nonce was already used".into()));
        }
        Ok(sig.operator.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scopes_naming_a_protected_file_are_named_writes() {
        let protected = [PathBuf::from("/w/SOUL.md"), PathBuf::from("/w/.agent")];
        let g = |w: &[&str]| GrantSpec {
            write: w.iter().map(PathBuf::from).collect(),
            ..GrantSpec::default()
        };
        assert_eq!(
            named_writes(&g(&["/w/SOUL.md", "/w/notes.txt"]), &protected),
            [PathBuf::from("/w/SOUL.md")]
        );
        assert_eq!(
            named_writes(&g(&["/w/.agent/hooks.sh"]), &protected),
            [PathBuf::from("/w/.agent/hooks.sh")]
        );
        // A scope holding a protected file is the kernel's to carve.
        assert!(named_writes(&g(&["/w"]), &protected).is_empty());
        assert!(named_writes(&g(&["/w/SOUL.md.bak"]), &protected).is_empty());
    }
}
