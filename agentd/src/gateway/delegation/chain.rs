//! Tokens and their chains, pure (the clock is a parameter): whether a
//! link is in force, whether a call lies within every link, and whether a
//! new link only narrows its parent.
use serde_json::{Map, Value};

use super::scope;
use crate::protocol::delegation::{IssueRequest, ScopeMap, MAX_DEPTH};
use crate::protocol::reason;

/// A refusal: reason code and detail.
pub type Refused = (&'static str, String);

/// One token, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `ROOT/d-<hex>`.
    pub id: String,
    /// The root operator of the chain.
    pub root: String,
    /// The token it was issued under (None: issued by the root operator).
    pub parent: Option<String>,
    /// Who holds it (never the issuer nor anyone up its chain).
    pub to: String,
    /// HMAC key its holder signs with.
    pub secret: Vec<u8>,
    /// What it may be used for.
    pub scope: ScopeMap,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; in force while `now < expires_at`.
    pub expires_at: i64,
    /// Uses granted at issue.
    pub uses: u32,
    /// Uses left (persisted: a restart does not refill them).
    pub uses_left: u32,
    /// 1 for a token the root operator issued, parent's + 1 below.
    pub depth: u32,
    /// The root operator's key generation at issue: a rotation ends the chain.
    pub root_key_gen: u32,
    /// Revoked (itself, or with a link above it).
    pub revoked: bool,
}

impl Token {
    /// Whether the link still vouches for what it already allowed at
    /// `now`: not revoked, unexpired (its uses may all be spent).
    pub fn live(&self, now: i64) -> Result<(), Refused> {
        if self.revoked {
            return Err((
                reason::DELEGATION_REVOKED,
                format!("token {} is revoked", self.id),
            ));
        }
        if now >= self.expires_at {
            return Err((
                reason::DELEGATION_EXPIRED,
                format!("token {} expired at {}", self.id, self.expires_at),
            ));
        }
        Ok(())
    }

    /// Whether the link is in force at `now`: not revoked, unexpired, uses left.
    pub fn in_force(&self, now: i64) -> Result<(), Refused> {
        self.live(now)?;
        if self.uses_left == 0 {
            return Err((
                reason::DELEGATION_USED_UP,
                format!("token {} has used all of its {} uses", self.id, self.uses),
            ));
        }
        Ok(())
    }
}

/// Every link of a chain (leaf first) is in force at `now`.
pub fn chain_in_force(chain: &[Token], now: i64) -> Result<(), Refused> {
    chain.iter().try_for_each(|t| t.in_force(now))
}

/// A call under the chain's leaf: every link in force, and the action and
/// arguments within every link's scope.
pub fn check_use(
    chain: &[Token],
    action: &str,
    args: &Map<String, Value>,
    now: i64,
) -> Result<(), Refused> {
    chain_in_force(chain, now)?;
    within_every_link(chain, action, args)
}

/// The action and arguments lie within every link's scope.
pub fn within_every_link(
    chain: &[Token],
    action: &str,
    args: &Map<String, Value>,
) -> Result<(), Refused> {
    for t in chain {
        scope::permits(&t.scope, action, args)
            .map_err(|why| (reason::OUTSIDE_DELEGATION, format!("{why} ({})", t.id)))?;
    }
    Ok(())
}

/// An issuance under `parent_chain` (leaf first; empty when the root
/// operator `root` issues): the chain stays at most 5 deep, never loops
/// back to anyone up it, and the new link narrows its parent in scope,
/// lifetime and uses.
pub fn check_issue(
    root: &str,
    parent_chain: &[Token],
    req: &IssueRequest,
    now: i64,
) -> Result<(), Refused> {
    let depth = parent_chain.len() as u32 + 1;
    if depth > MAX_DEPTH {
        return Err((
            reason::DELEGATION_CHAIN_TOO_DEEP,
            format!("a chain holds at most {MAX_DEPTH} tokens; this would be link {depth}"),
        ));
    }
    if req.to == root || parent_chain.iter().any(|t| t.to == req.to) {
        return Err((
            reason::DELEGATION_LOOP,
            format!(
                "`{}` is the issuer or up its chain; a token cannot be issued back to it",
                req.to
            ),
        ));
    }
    let Some(parent) = parent_chain.first() else {
        return Ok(());
    };
    chain_in_force(parent_chain, now)?;
    scope::within(&req.scope, &parent.scope)
        .map_err(|why| (reason::DELEGATION_SCOPE_TOO_WIDE, why))?;
    let remaining = parent.expires_at - now;
    if req.ttl_secs > remaining {
        return Err((
            reason::DELEGATION_TTL_TOO_LONG,
            format!(
                "ttl_secs {} exceeds the {remaining} s the issuing token has left",
                req.ttl_secs
            ),
        ));
    }
    let uses_left = parent_chain.iter().map(|t| t.uses_left).min().unwrap_or(0);
    if req.uses > uses_left {
        return Err((
            reason::DELEGATION_USES_TOO_MANY,
            format!(
                "uses {} exceeds the {uses_left} uses the issuing chain has left",
                req.uses
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const NOW: i64 = 1_000_000;

    fn scope(action: &str, pattern: Option<&str>) -> ScopeMap {
        let args: BTreeMap<String, String> = pattern
            .map(|p| [("path".to_owned(), p.to_owned())].into())
            .unwrap_or_default();
        [(action.to_owned(), args)].into()
    }

    fn token(n: u32, to: &str, ttl: i64, uses: u32) -> Token {
        Token {
            id: format!("alice/d-{n:032x}"),
            root: "alice".into(),
            parent: None,
            to: to.into(),
            secret: vec![n as u8],
            scope: scope("read_chart", Some("/srv/charts/*")),
            created_at: NOW,
            expires_at: NOW + ttl,
            uses,
            uses_left: uses,
            depth: 1,
            root_key_gen: 1,
            revoked: false,
        }
    }

    fn req(to: &str, s: ScopeMap, ttl: i64, uses: u32) -> IssueRequest {
        IssueRequest::new_signed(b"k", "x", to, s, ttl, uses, "0123456789abcdef", NOW)
    }

    fn args(path: &str) -> Map<String, Value> {
        serde_json::from_value(serde_json::json!({ "path": path })).unwrap()
    }

    #[test]
    fn link_state_with_a_fake_clock() {
        let mut t = token(1, "bob", 10, 2);
        assert!(t.in_force(NOW + 9).is_ok());
        assert_eq!(t.in_force(NOW + 10).unwrap_err().0, "delegation_expired");
        t.uses_left = 0;
        assert_eq!(t.in_force(NOW).unwrap_err().0, "delegation_used_up");
        t.revoked = true;
        assert_eq!(t.in_force(NOW).unwrap_err().0, "delegation_revoked");
    }

    #[test]
    fn use_needs_every_link() {
        let leaf = Token {
            scope: scope("read_chart", Some("/srv/charts/p-1*")),
            ..token(2, "carol", 10, 1)
        };
        let chain = [leaf, token(1, "bob", 100, 5)];
        assert!(check_use(&chain, "read_chart", &args("/srv/charts/p-10"), NOW).is_ok());
        let e = check_use(&chain, "read_chart", &args("/srv/charts/p-2"), NOW).unwrap_err();
        assert_eq!(e.0, "outside_delegation");
        assert_eq!(
            check_use(&chain, "send_email", &Map::new(), NOW)
                .unwrap_err()
                .0,
            "outside_delegation"
        );
        // The leaf outlives nothing: past the leaf's expiry the use fails.
        assert_eq!(
            check_use(&chain, "read_chart", &args("/srv/charts/p-1"), NOW + 10)
                .unwrap_err()
                .0,
            "delegation_expired"
        );
        let mut revoked_parent = chain.clone();
        revoked_parent[1].revoked = true;
        assert_eq!(
            check_use(&revoked_parent, "read_chart", &args("/srv/charts/p-1"), NOW)
                .unwrap_err()
                .0,
            "delegation_revoked"
        );
    }

    #[test]
    fn issue_only_narrows() {
        let parent = [token(1, "bob", 100, 5)];
        let ok = req("carol", scope("read_chart", Some("/srv/charts/p-*")), 50, 5);
        assert!(check_issue("alice", &parent, &ok, NOW).is_ok());
        // A root operator's own token: only depth and loops are the chain's to check.
        assert!(check_issue("alice", &[], &ok, NOW).is_ok());
        let wide = req("carol", scope("read_chart", Some("/srv/*")), 50, 5);
        assert_eq!(
            check_issue("alice", &parent, &wide, NOW).unwrap_err().0,
            "delegation_scope_too_wide"
        );
        let open = req("carol", scope("read_chart", None), 50, 5);
        assert_eq!(
            check_issue("alice", &parent, &open, NOW).unwrap_err().0,
            "delegation_scope_too_wide"
        );
        let long = req("carol", scope("read_chart", Some("/srv/charts/a")), 101, 1);
        assert_eq!(
            check_issue("alice", &parent, &long, NOW).unwrap_err().0,
            "delegation_ttl_too_long"
        );
        // The parent's remaining lifetime, not its original one.
        let later = req("carol", scope("read_chart", Some("/srv/charts/a")), 60, 1);
        assert_eq!(
            check_issue("alice", &parent, &later, NOW + 50)
                .unwrap_err()
                .0,
            "delegation_ttl_too_long"
        );
        let many = req("carol", scope("read_chart", Some("/srv/charts/a")), 10, 6);
        assert_eq!(
            check_issue("alice", &parent, &many, NOW).unwrap_err().0,
            "delegation_uses_too_many"
        );
        let mut spent = parent.clone();
        spent[0].uses_left = 2;
        let three = req("carol", scope("read_chart", Some("/srv/charts/a")), 10, 3);
        assert_eq!(
            check_issue("alice", &spent, &three, NOW).unwrap_err().0,
            "delegation_uses_too_many"
        );
    }

    #[test]
    fn self_loops_and_depth_are_refused() {
        let parent = [token(1, "bob", 100, 5)];
        for to in ["alice", "bob"] {
            let r = req(to, scope("read_chart", Some("/srv/charts/a")), 10, 1);
            assert_eq!(
                check_issue("alice", &parent, &r, NOW).unwrap_err().0,
                "delegation_loop",
                "{to}"
            );
        }
        let r = req("alice", scope("read_chart", None), 10, 1);
        assert_eq!(
            check_issue("alice", &[], &r, NOW).unwrap_err().0,
            "delegation_loop"
        );
        let chain: Vec<Token> = (1..=5)
            .map(|n| token(n, &format!("p{n}"), 100, 5))
            .collect();
        let r = req("p6", scope("read_chart", Some("/srv/charts/a")), 10, 1);
        assert_eq!(
            check_issue("alice", &chain, &r, NOW).unwrap_err().0,
            "delegation_chain_too_deep"
        );
        assert!(check_issue("alice", &chain[..4], &r, NOW).is_ok());
    }
}
