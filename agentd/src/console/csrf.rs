//! Cross-site defences, pure: the Host header must name the console's own
//! loopback address (a DNS-rebound name is refused), a request's Origin
//! (and Fetch metadata) must be the console's own, and every
//! state-changing request must carry the session's CSRF token.
use std::net::SocketAddr;

use super::auth::same_secret;

/// Header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The hosts (`Host` header values) the console answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    hosts: Vec<String>,
}

impl Origins {
    /// The console bound at `addr`: its literal address and `localhost`,
    /// with the port.
    pub fn of(addr: SocketAddr) -> Self {
        let port = addr.port();
        let literal = match addr {
            SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
        };
        Self {
            hosts: vec![literal, format!("localhost:{port}")],
        }
    }

    /// The URL a browser opens (the literal address).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.hosts[0])
    }

    /// Whether a `Host` header names this console.
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// Whether an `Origin` header is this console's own (`http://HOST`).
    pub fn origin_ok(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|h| self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSite<'a> {
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Sec-Fetch-Site` (`same-origin`, `same-site`, `cross-site`, `none`).
    pub fetch_site: Option<&'a str>,
}

/// Why a request was refused before any handler ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    /// The Host header is not this console's address.
    #[error("the Host header `{0}` is not this console's address")]
    Host(String),
    /// The request comes from another origin.
    #[error("cross-origin request refused (origin `{0}`)")]
    Origin(String),
    /// A state-changing request without a (matching) CSRF token.
    #[error("the CSRF token is missing or wrong")]
    Csrf,
}

/// Checks a request's Host, Origin and Fetch metadata. `changes`: the
/// request changes state (POST), so it must carry an Origin of ours.
pub fn check_site(o: &Origins, r: &RequestSite<'_>, changes: bool) -> Result<(), SiteError> {
    if !o.host_ok(r.host) {
        return Err(SiteError::Host(
            r.host.unwrap_or("").chars().take(100).collect(),
        ));
    }
    match r.origin {
        Some(origin) if !o.origin_ok(origin) => {
            return Err(SiteError::Origin(origin.chars().take(100).collect()))
        }
        None if changes => return Err(SiteError::Origin("(none)".into())),
        _ => {}
    }
    if matches!(r.fetch_site, Some("cross-site" | "same-site")) {
        return Err(SiteError::Origin(format!(
            "Sec-Fetch-Site: {}",
            r.fetch_site.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Checks the CSRF token a state-changing request carries.
pub fn check_csrf(expected: &str, given: Option<&str>) -> Result<(), SiteError> {
    match given {
        Some(g) if same_secret(expected, g) => Ok(()),
        _ => Err(SiteError::Csrf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site<'a>(host: &'a str, origin: Option<&'a str>, fetch: Option<&'a str>) -> RequestSite<'a> {
        RequestSite {
            host: Some(host),
            origin,
            fetch_site: fetch,
        }
    }

    #[test]
    fn only_our_own_host_and_origin_pass() {
        let o = Origins::of("127.0.0.1:7780".parse().unwrap());
        assert_eq!(o.base_url(), "http://127.0.0.1:7780");
        assert!(check_site(&o, &site("127.0.0.1:7780", None, None), false).is_ok());
        assert!(check_site(&o, &site("localhost:7780", None, Some("none")), false).is_ok());
        // DNS rebinding: the browser sends the attacker's name.
        assert!(matches!(
            check_site(&o, &site("evil.example:7780", None, None), false),
            Err(SiteError::Host(_))
        ));
        assert!(check_site(&o, &RequestSite::default(), false).is_err());
        // Another port is another origin.
        assert!(check_site(&o, &site("127.0.0.1:7781", None, None), false).is_err());
        // A POST needs our Origin.
        assert!(check_site(
            &o,
            &site(
                "127.0.0.1:7780",
                Some("http://127.0.0.1:7780"),
                Some("same-origin")
            ),
            true
        )
        .is_ok());
        assert!(matches!(
            check_site(&o, &site("127.0.0.1:7780", None, None), true),
            Err(SiteError::Origin(_))
        ));
        assert!(check_site(
            &o,
            &site("127.0.0.1:7780", Some("http://evil.example"), None),
            true
        )
        .is_err());
        assert!(check_site(
            &o,
            &site("127.0.0.1:7780", Some("https://127.0.0.1:7780"), None),
            false
        )
        .is_err());
        assert!(check_site(&o, &site("127.0.0.1:7780", None, Some("cross-site")), false).is_err());
    }

    #[test]
    fn ipv6_consoles_name_their_bracketed_address() {
        let o = Origins::of("[::1]:9000".parse().unwrap());
        assert!(o.host_ok(Some("[::1]:9000")));
        assert!(o.origin_ok("http://[::1]:9000"));
        assert!(!o.host_ok(Some("::1:9000")));
    }

    #[test]
    fn csrf_token_must_match() {
        assert!(check_csrf("ab12", Some("ab12")).is_ok());
        assert_eq!(check_csrf("ab12", Some("ab13")), Err(SiteError::Csrf));
        assert_eq!(check_csrf("ab12", None), Err(SiteError::Csrf));
        assert_eq!(check_csrf("ab12", Some("")), Err(SiteError::Csrf));
    }
}
