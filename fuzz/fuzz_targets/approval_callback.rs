//! The approval callback a chat-ops bridge sends
//! (`POST /v1/approvals/{id}/callback`): the timestamp and signature
//! headers, the HMAC check, the body parser and the nonce memory, on
//! arbitrary headers, bodies and route ids. Properties: whatever passes
//! the signature check carries the HMAC of its own timestamp and body
//! under the secret (nothing else is accepted), and the genuine signature
//! of the same bytes passes while any changed byte fails; a parsed callback
//! names the route's approval, the signed timestamp, printable bounded
//! approver and nonce, and survives a JSON round trip; a nonce is accepted
//! once.
#![no_main]
use agentd::policy::approval::{self, CallbackError, NonceMemory};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-webhook-secret-0123456789abcdef";
const WINDOW: i64 = 300;

fn text(part: Option<&[u8]>) -> Option<String> {
    part.map(|p| String::from_utf8_lossy(p).into_owned())
}

fuzz_target!(|data: &[u8]| {
    // timestamp header, signature header, route id, body: separated by 0xff.
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let ts_header = text(parts.next());
    let sig_header = text(parts.next());
    let route = text(parts.next()).unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let now: i64 = 1_800_000_000;

    // Whatever the fuzzer sends: accepted only with the true HMAC.
    if let Ok(ts) = approval::verify_signed(
        SECRET,
        ts_header.as_deref(),
        sig_header.as_deref(),
        body,
        now,
        WINDOW,
    ) {
        let genuine = approval::sign(SECRET, ts, body);
        let given = sig_header.as_deref().unwrap_or("").trim();
        assert!(
            given.eq_ignore_ascii_case(&genuine),
            "accepted {given:?}, genuine {genuine:?}"
        );
        assert!((now - ts).abs() <= WINDOW);
    }

    // The genuine signature of these bytes passes; a changed byte fails.
    let ts = now - i64::from(body.first().copied().unwrap_or(0));
    let sig = approval::sign(SECRET, ts, body);
    let ts_s = ts.to_string();
    assert_eq!(
        approval::verify_signed(SECRET, Some(&ts_s), Some(&sig), body, now, WINDOW),
        Ok(ts)
    );
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let i = usize::from(body[body.len() / 2]) % changed.len();
        changed[i] ^= 0x01;
        assert_eq!(
            approval::verify_signed(SECRET, Some(&ts_s), Some(&sig), &changed, now, WINDOW),
            Err(CallbackError::BadSignature)
        );
    }
    // Signed by someone else: refused.
    let forged = approval::sign(b"another secret", ts, body);
    assert_eq!(
        approval::verify_signed(SECRET, Some(&ts_s), Some(&forged), body, now, WINDOW),
        Err(CallbackError::BadSignature)
    );

    // The body parser.
    if let Ok(cb) = approval::parse_callback(body, &route, ts) {
        assert_eq!(cb.approval_id, route);
        assert_eq!(cb.timestamp, ts);
        for s in [&cb.nonce, &cb.approver] {
            assert!(!s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control));
        }
        assert!(cb.reason.len() <= 512);
        let again = serde_json::to_vec(&cb).expect("serialise");
        assert_eq!(approval::parse_callback(&again, &route, ts), Ok(cb.clone()));

        let mut nonces = NonceMemory::default();
        assert_eq!(nonces.check(&cb.nonce, ts, now, WINDOW), Ok(()));
        assert_eq!(
            nonces.check(&cb.nonce, ts, now, WINDOW),
            Err(CallbackError::Replayed)
        );
    }
});
