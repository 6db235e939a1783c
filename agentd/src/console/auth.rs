//! Who is signed in to the console: one-time login links, sessions (the
//! cookie) and confirmation tokens, all random 256-bit values of which only
//! the SHA-256 is kept. Pure: the caller passes the time, so expiry and
//! single use are tested without sleeping.
use std::collections::HashMap;

use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::protocol::reason;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Never issued (forged, mistyped, or from before a restart).
    #[error("unknown token")]
    Unknown,
    /// Issued, but its lifetime is over.
    #[error("the token has expired")]
    Expired,
    /// Issued and already used once (a replay).
    #[error("the token was already used")]
    Used,
}

impl AuthError {
    /// Stable reason code of a refused login link.
    pub fn login_reason(self) -> &'static str {
        match self {
            AuthError::Unknown => reason::CONSOLE_LOGIN_INVALID,
            AuthError::Expired => reason::CONSOLE_LOGIN_EXPIRED,
            AuthError::Used => reason::CONSOLE_LOGIN_USED,
        }
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who asked for the login link (`uid:0`).
    pub admin: String,
    /// The CSRF token every state-changing request must carry (hex).
    pub csrf: String,
    /// Unix time the session ends.
    pub expires: u64,
    /// Short id for the audit log (the first 12 hex digits of the cookie's hash).
    pub id: String,
}

#[derive(Debug, Clone)]
struct OneTime {
    admin: String,
    expires: u64,
    used: bool,
}

/// Hard caps so a looping script cannot grow the maps without bound.
const MAX_PENDING: usize = 1024;

/// The token store (behind a mutex in [`super::Console`]).
#[derive(Debug, Default)]
pub struct Tokens {
    links: HashMap<[u8; 32], OneTime>,
    confirms: HashMap<[u8; 32], OneTime>,
    sessions: HashMap<[u8; 32], Session>,
}

/// A fresh random token, 64 hex digits.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Issues a one-time login link token for `admin`, valid `ttl` seconds.
    pub fn issue_link(&mut self, admin: &str, now: u64, ttl: u64) -> String {
        self.purge(now);
        let t = random_token();
        insert_capped(
            &mut self.links,
            digest(&t),
            OneTime {
                admin: admin.into(),
                expires: now + ttl,
                used: false,
            },
        );
        t
    }

    /// Exchanges a login link token for a session: returns the cookie
    /// value and the session. The link works once.
    pub fn redeem_link(
        &mut self,
        token: &str,
        now: u64,
        session_ttl: u64,
    ) -> Result<(String, Session), AuthError> {
        let admin = take_once(&mut self.links, token, now)?;
        let cookie = random_token();
        let d = digest(&cookie);
        let session = Session {
            admin,
            csrf: random_token(),
            expires: now + session_ttl,
            id: hex::encode(&d[..6]),
        };
        if self.sessions.len() >= MAX_PENDING {
            // The oldest-ending session goes first.
            if let Some(k) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            {
                self.sessions.remove(&k);
            }
        }
        self.sessions.insert(d, session.clone());
        Ok((cookie, session))
    }

    /// The session of a cookie value, if it is live.
    pub fn session(&self, cookie: &str, now: u64) -> Option<Session> {
        self.sessions
            .get(&digest(cookie))
            .filter(|s| s.expires > now)
            .cloned()
    }

    /// Ends a session (logout).
    pub fn end_session(&mut self, cookie: &str) -> Option<Session> {
        self.sessions.remove(&digest(cookie))
    }

    /// Issues a confirmation token (re-authentication for a change).
    pub fn issue_confirm(&mut self, admin: &str, now: u64, ttl: u64) -> String {
        self.purge(now);
        let t = random_token();
        insert_capped(
            &mut self.confirms,
            digest(&t),
            OneTime {
                admin: admin.into(),
                expires: now + ttl,
                used: false,
            },
        );
        t
    }

    /// Spends a confirmation token; returns who asked for it.
    pub fn redeem_confirm(&mut self, token: &str, now: u64) -> Result<String, AuthError> {
        take_once(&mut self.confirms, token.trim(), now)
    }

    /// Drops what has expired (used links are kept until they expire, so a
    /// replay is told "used", not "unknown").
    fn purge(&mut self, now: u64) {
        self.links.retain(|_, l| l.expires > now);
        self.confirms.retain(|_, l| l.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }
}

fn insert_capped(map: &mut HashMap<[u8; 32], OneTime>, k: [u8; 32], v: OneTime) {
    if map.len() >= MAX_PENDING {
        if let Some(old) = map.iter().min_by_key(|(_, l)| l.expires).map(|(k, _)| *k) {
            map.remove(&old);
        }
    }
    map.insert(k, v);
}

fn take_once(
    map: &mut HashMap<[u8; 32], OneTime>,
    token: &str,
    now: u64,
) -> Result<String, AuthError> {
    let entry = map.get_mut(&digest(token)).ok_or(AuthError::Unknown)?;
    if entry.used {
        return Err(AuthError::Used);
    }
    if entry.expires <= now {
        return Err(AuthError::Expired);
    }
    entry.used = true;
    Ok(entry.admin.clone())
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_link_works_once_and_expires() {
        let mut t = Tokens::default();
        let link = t.issue_link("uid:0", 1000, 60);
        assert_eq!(link.len(), 64);
        let (cookie, s) = t.redeem_link(&link, 1010, 3600).unwrap();
        assert_eq!(s.admin, "uid:0");
        assert_eq!(t.session(&cookie, 1011), Some(s.clone()));
        // Replayed: refused as used, and no second session.
        assert_eq!(t.redeem_link(&link, 1012, 3600), Err(AuthError::Used));
        // Forged.
        assert_eq!(
            t.redeem_link(&random_token(), 1012, 3600),
            Err(AuthError::Unknown)
        );
        // Expired.
        let late = t.issue_link("uid:0", 2000, 60);
        assert_eq!(t.redeem_link(&late, 2060, 3600), Err(AuthError::Expired));
        // The session ends at its time, and at logout.
        assert_eq!(t.session(&cookie, 1010 + 3600), None);
        let l2 = t.issue_link("uid:0", 5000, 60);
        let (c2, _) = t.redeem_link(&l2, 5001, 3600).unwrap();
        assert!(t.session(&c2, 5002).is_some());
        t.end_session(&c2);
        assert!(t.session(&c2, 5003).is_none());
    }

    #[test]
    fn confirmation_tokens_are_single_use_and_separate_from_links() {
        let mut t = Tokens::default();
        let c = t.issue_confirm("uid:0", 100, 300);
        // A confirmation token is no login link, and the other way round.
        assert_eq!(t.redeem_link(&c, 101, 60), Err(AuthError::Unknown));
        let l = t.issue_link("uid:0", 100, 60);
        assert_eq!(t.redeem_confirm(&l, 101), Err(AuthError::Unknown));
        assert_eq!(t.redeem_confirm(&c, 101).unwrap(), "uid:0");
        assert_eq!(t.redeem_confirm(&c, 102), Err(AuthError::Used));
        let c2 = t.issue_confirm("uid:0", 100, 300);
        assert_eq!(t.redeem_confirm(&c2, 400), Err(AuthError::Expired));
    }

    #[test]
    fn sessions_have_distinct_csrf_tokens_and_the_cookie_is_not_stored() {
        let mut t = Tokens::default();
        let (l1, l2) = (t.issue_link("uid:0", 1, 60), t.issue_link("uid:0", 1, 60));
        let (c1, s1) = t.redeem_link(&l1, 2, 60).unwrap();
        let (c2, s2) = t.redeem_link(&l2, 2, 60).unwrap();
        assert_ne!(c1, c2);
        assert_ne!(s1.csrf, s2.csrf);
        assert!(!format!("{t:?}").contains(&c1));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
