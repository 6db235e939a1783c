//! Message parsing and verification on arbitrary bytes, exactly as the API
//! receives them: UTF-8 + JSON + structural checks + canonical bytes + HMAC.
//! Must never panic; a message that verifies must re-verify after a JSON
//! round trip (the canonical encoding is a function of the fields alone),
//! for v1 and v2 (audience and scope) alike; a v2 message's bytes never
//! equal a v1 message's, and every scope pattern matches what it names.
#![no_main]
use agentd::api::json::parse;
use agentd::protocol::message::Checked;
use agentd::protocol::scope::{pattern_matches, ArgValue};
use agentd::protocol::{
    canonical_bytes, canonical_bytes_v2, sign, verify, SignedMessage, V2Fields,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse::<SignedMessage>(data) else {
        return;
    };
    let Ok(Checked::Signed {
        operator,
        nonce,
        timestamp,
        signature,
    }) = msg.check()
    else {
        return;
    };
    let v1 = canonical_bytes(operator, &msg.session, nonce, timestamp, &msg.body);
    let c = if msg.v == 2 {
        let v2 = canonical_bytes_v2(
            operator,
            &msg.session,
            nonce,
            timestamp,
            &msg.body,
            V2Fields {
                for_agent: msg.for_agent.as_deref(),
                for_host: msg.for_host.as_deref(),
                scope: msg.scope.as_ref(),
            },
        );
        assert_ne!(v1, v2, "a v2 signature must never verify a v1 message");
        v2
    } else {
        v1
    };
    assert_eq!(Some(&c), msg.canonical().as_ref());
    if let Some(scope) = &msg.scope {
        // A checked scope's patterns: a prefix pattern matches its prefix,
        // an exact one itself; the matcher never panics on any value.
        for e in &scope.entries {
            for p in e.args.values() {
                let named = p.strip_suffix('*').unwrap_or(p);
                assert!(pattern_matches(p, named));
            }
            let _ = scope.allows(&e.action, |n| e.args.get(n).map(|p| ArgValue::Text(p.as_str())));
        }
    }
    let _ = verify(b"fuzz-key", &c, &signature);
    // Sign it properly, round-trip through JSON, and it must verify.
    let good = sign(b"fuzz-key", &c);
    let mut signed = msg.clone();
    signed.signature = Some(hex_lower(&good));
    let again: SignedMessage =
        serde_json::from_slice(&serde_json::to_vec(&signed).unwrap()).unwrap();
    let Ok(Checked::Signed { signature, .. }) = again.check() else {
        panic!("round trip lost the signature")
    };
    assert!(verify(b"fuzz-key", &again.canonical().unwrap(), &signature));
});

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
