//! Delegation requests on arbitrary bytes, exactly as the API receives
//! them (`POST /v1/delegations`, `POST /v1/delegations/revoke`): UTF-8 +
//! JSON + structural checks + canonical bytes + HMAC, and token names as a
//! message's `operator` carries them. Must never panic; an issuance that
//! checks re-verifies after a JSON round trip (the canonical bytes are a
//! function of the fields, whatever the order of the scope's keys); every
//! checked pattern lies within itself and matches what it names; a scope
//! lies within itself; a signed revocation has canonical bytes, an
//! unsigned one none.
#![no_main]
use agentd::api::json::parse;
use agentd::gateway::delegation::scope::{self, Pattern};
use agentd::protocol::delegation::{CheckedRevoke, IssueRequest, Principal, RevokeRequest};
use agentd::protocol::{sign, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = Principal::parse(text) {
            assert!(text.starts_with(p.root()));
        }
    }
    if let Ok(req) = parse::<IssueRequest>(data) {
        issue(req);
    }
    if let Ok(req) = parse::<RevokeRequest>(data) {
        revoke(req);
    }
});

fn issue(req: IssueRequest) {
    if req.check().is_err() {
        return;
    }
    for (action, args) in &req.scope {
        for p in args.values() {
            let pat = Pattern::parse(p);
            assert!(pat.within(&pat));
            assert!(pat.matches(p.strip_suffix('*').unwrap_or(p)));
        }
        let _ = scope::permits(&req.scope, action, &serde_json::Map::new());
    }
    assert!(scope::within(&req.scope, &req.scope).is_ok());
    let mut signed = req.clone();
    signed.signature = hex_lower(&sign(b"fuzz-key", &req.canonical()));
    let again: IssueRequest =
        serde_json::from_slice(&serde_json::to_vec(&signed).unwrap()).unwrap();
    let sig = again
        .check()
        .expect("a checked request checks after a round trip");
    assert!(verify(b"fuzz-key", &again.canonical(), &sig));
}

fn revoke(req: RevokeRequest) {
    match req.check() {
        Err(_) => {}
        Ok(CheckedRevoke::Unsigned) => assert!(req.canonical().is_none()),
        Ok(CheckedRevoke::Signed { signature, .. }) => {
            let c = req
                .canonical()
                .expect("a signed revocation has canonical bytes");
            let _ = verify(b"fuzz-key", &c, &signature);
        }
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
