//! What the web console reads from a request before any handler runs: the
//! query string (login token, stream filters), the Host / Origin /
//! Sec-Fetch-Site checks, the CSRF token, and a login token against the
//! issued ones. Properties: the query decoder agrees with a reference
//! decoder written here (`+` is a space, `%` and two hex digits a byte,
//! anything else literal); the filters a query sets are its last values;
//! the site check agrees with its rule restated here; a CSRF token passes
//! only when equal to the session's; and no token but the issued one
//! signs in.
#![no_main]
use std::net::SocketAddr;

use agentd::console::{
    auth::{AuthError, Tokens},
    csrf::{self, Origins, RequestSite},
    filter::RowFilter,
    routes::{parse_query, query_value},
};
use libfuzzer_sys::fuzz_target;

/// The reference decoder of one `application/x-www-form-urlencoded` part.
fn reference_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| Some((hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?)))
            .flatten();
        match (b[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(part: Option<&[u8]>) -> Option<String> {
    part.filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

fuzz_target!(|data: &[u8]| {
    // query, Host, Origin, Sec-Fetch-Site, CSRF token, login token:
    // separated by 0xff (never in UTF-8).
    let mut parts = data.splitn(6, |b| *b == 0xff);
    let query = text(parts.next()).unwrap_or_default();
    let host = text(parts.next());
    let origin = text(parts.next());
    let fetch_site = text(parts.next());
    let csrf_given = text(parts.next());
    let token = text(parts.next()).unwrap_or_default();

    // The query decoder.
    let pairs = parse_query(&query);
    let reference: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (reference_decode(k), reference_decode(v))
        })
        .collect();
    assert_eq!(pairs, reference, "query {query:?}");
    let filter = RowFilter::from_query(&pairs);
    assert_eq!(filter.decision, query_value(&pairs, "decision"));
    assert_eq!(filter.agent, query_value(&pairs, "agent"));
    assert_eq!(filter.since, query_value(&pairs, "since"));

    // The site check, for a read and for a change.
    let addr: SocketAddr = "127.0.0.1:7780".parse().expect("address");
    let origins = Origins::of(addr);
    let ours = |h: &str| {
        h.eq_ignore_ascii_case("127.0.0.1:7780") || h.eq_ignore_ascii_case("localhost:7780")
    };
    let site = RequestSite {
        host: host.as_deref(),
        origin: origin.as_deref(),
        fetch_site: fetch_site.as_deref(),
    };
    for changes in [false, true] {
        let passed = csrf::check_site(&origins, &site, changes).is_ok();
        let host_ok = host.as_deref().is_some_and(ours);
        let origin_ok = match origin.as_deref() {
            Some(o) => o.strip_prefix("http://").is_some_and(ours),
            None => !changes,
        };
        let fetch_ok = !matches!(fetch_site.as_deref(), Some("cross-site" | "same-site"));
        assert_eq!(
            passed,
            host_ok && origin_ok && fetch_ok,
            "{site:?} changes {changes}"
        );
    }

    // The CSRF token.
    let expected = "5f".repeat(32);
    assert_eq!(
        csrf::check_csrf(&expected, csrf_given.as_deref()).is_ok(),
        csrf_given.as_deref() == Some(expected.as_str())
    );

    // A login token: only the issued one signs in, once.
    let mut tokens = Tokens::default();
    let issued = tokens.issue_link("uid:0", 1_000, 60);
    let redeemed = tokens.redeem_link(&token, 1_001, 3_600);
    if token == issued {
        assert!(redeemed.is_ok());
        assert_eq!(
            tokens.redeem_link(&token, 1_002, 3_600).err(),
            Some(AuthError::Used)
        );
    } else {
        assert_eq!(redeemed.err(), Some(AuthError::Unknown), "token {token:?}");
        // The issued link still works after a wrong guess.
        assert!(tokens.redeem_link(&issued, 1_002, 3_600).is_ok());
    }
});
