//! Message parsing and verification on arbitrary bytes, exactly as the API
//! receives them: UTF-8 + JSON + structural checks + canonical bytes + HMAC.
//! Must never panic; a message that verifies must re-verify after a JSON
//! round trip (the canonical encoding is a function of the fields alone).
#![no_main]
use agentd::api::json::parse;
use agentd::protocol::message::Checked;
use agentd::protocol::{canonical_bytes, sign, verify, SignedMessage};
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
    let c = canonical_bytes(operator, &msg.session, nonce, timestamp, &msg.body);
    assert_eq!(Some(&c), msg.canonical().as_ref());
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
