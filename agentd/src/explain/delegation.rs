//! Delegation's reason codes in words: on tool-call rows (check 3a), on
//! message rows (a token's messages at ingest) and on the `delegation_issue`
//! and `delegation_revoke` rows. No policy line decides them, so the fix is
//! always the issuer's (a new or narrower token) or an administrator's.
use super::Fix;
use crate::protocol::reason as rc;

/// Whether the code is one of delegation's.
pub fn is_delegation_code(code: &str) -> bool {
    matches!(
        code,
        rc::INVALID_DELEGATION
            | rc::UNKNOWN_DELEGATION
            | rc::DELEGATION_REVOKED
            | rc::DELEGATION_EXPIRED
            | rc::DELEGATION_USED_UP
            | rc::OUTSIDE_DELEGATION
            | rc::DELEGATION_SCOPE_TOO_WIDE
            | rc::DELEGATION_TTL_TOO_LONG
            | rc::DELEGATION_USES_TOO_MANY
            | rc::DELEGATION_CHAIN_TOO_DEEP
            | rc::DELEGATION_LOOP
            | rc::DELEGATION_NOT_ISSUER
    )
}

/// The code in words, for a call, message or request by `who`.
pub fn why(code: &str, who: &str) -> Option<String> {
    Some(match code {
        rc::INVALID_DELEGATION => "the delegation request was malformed (scope, ttl_secs 1 s to 7 days, uses 1 to 1,000,000, names or patterns)".into(),
        rc::UNKNOWN_DELEGATION => format!("{who} names a delegation token agentd does not know (never issued, or pruned a day after it expired)"),
        rc::DELEGATION_REVOKED => format!("{who} signs under a delegation token that was revoked (itself or a link up its chain), or whose root operator's key was rotated since it was issued"),
        rc::DELEGATION_EXPIRED => format!("{who} signs under a delegation token whose lifetime (or an ancestor's) has ended"),
        rc::DELEGATION_USED_UP => format!("{who} signs under a delegation token that (or whose ancestor) has used all of its tool calls; uses survive restarts"),
        rc::OUTSIDE_DELEGATION => format!("the call lies outside the scope of the delegation token {who} signs under (its actions and argument patterns, or an ancestor's): the issuer's own permissions are not the token's"),
        rc::DELEGATION_SCOPE_TOO_WIDE => "the requested token would allow more than its issuer holds: an action outside the parent token's scope or the root operator's current roles, or an argument the parent limits left open or widened".into(),
        rc::DELEGATION_TTL_TOO_LONG => "the requested token would outlive the token it is issued under".into(),
        rc::DELEGATION_USES_TOO_MANY => "the requested token would allow more tool calls than the issuing chain has left".into(),
        rc::DELEGATION_CHAIN_TOO_DEEP => "a chain of delegation tokens holds at most 5 links; the request would have made a sixth".into(),
        rc::DELEGATION_LOOP => "the requested token would go back to its own issuer or to someone up its chain".into(),
        rc::DELEGATION_NOT_ISSUER => "the revocation was signed by someone who is neither the token nor up its chain".into(),
        _ => return None,
    })
}

/// What would let it through, where one step does.
pub fn fix(code: &str, operator: &str) -> Option<Fix> {
    let root = crate::protocol::delegation::token_root(operator).unwrap_or("ISSUER");
    let (summary, command) = match code {
        rc::OUTSIDE_DELEGATION => (
            "no policy line can: the issuer issues a token whose scope covers the call (within its own permissions)".to_owned(),
            format!("agentctl delegate issue --operator {root} --key-file KEY --to DELEGATE --actions ACTION [--arg ACTION:NAME=VALUE] --ttl 1h --uses N"),
        ),
        rc::DELEGATION_REVOKED | rc::DELEGATION_EXPIRED | rc::DELEGATION_USED_UP | rc::UNKNOWN_DELEGATION => (
            "no policy line can: the issuer issues a fresh token (see `agentctl delegate list`)".to_owned(),
            format!("agentctl delegate issue --operator {root} --key-file KEY --to DELEGATE --actions ACTION --ttl 1h --uses N"),
        ),
        rc::DELEGATION_SCOPE_TOO_WIDE | rc::DELEGATION_TTL_TOO_LONG | rc::DELEGATION_USES_TOO_MANY | rc::DELEGATION_CHAIN_TOO_DEEP => (
            "ask for less than the issuer holds (or have an operator higher up the chain issue it)".to_owned(),
            "agentctl delegate list".to_owned(),
        ),
        _ => return None,
    };
    Some(Fix {
        summary,
        toml: None,
        command: Some(command),
        verified: false,
    })
}
