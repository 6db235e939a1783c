//! Enforcement control-plane requests on arbitrary bytes: the enforcement
//! socket's framing (`enforce::launch::read_request` over a real Unix socket
//! pair, the request written in fuzzer-chosen pieces) and its JSON
//! `Request`, and the `/v1` enforcement routes' bodies (`POST /v1/agents`,
//! `/v1/agents/{name}/mode`, `/v1/bind`) with the baseline's connect
//! destinations. Properties: never panics; the framing returns a prefix of
//! what was sent that is either all of it, ends at a newline, or reached the
//! size limit (bounded by one read beyond it); what parses survives a JSON
//! round trip; an accepted destination keeps its port and a prefix of at
//! most 128 bits.
#![no_main]
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;

use agentd::api::enforce_routes::{Bind, CreateAgent, SetMode};
use agentd::enforce::grant::parse_destination;
use agentd::enforce::launch::{read_request, Request, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let wire = serde_json::to_vec(v).unwrap();
    let back: T = serde_json::from_slice(&wire).unwrap();
    assert_eq!(
        serde_json::to_vec(&back).unwrap(),
        wire,
        "{v:?} changed over the wire"
    );
}

fuzz_target!(|data: &[u8]| {
    // Framing: the first byte chooses the piece size; the rest is sent.
    let Some((&piece, payload)) = data.split_first() else {
        return;
    };
    let piece = 1 + piece as usize * 37;
    let (mut tx, rx) = UnixStream::pair().unwrap();
    let sent = payload.to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in sent.chunks(piece) {
            if tx.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (got, fd) = read_request(&rx, deadline).expect("a socket pair reads");
    // Drain the rest, so the writer neither blocks nor meets a closed socket
    // (no SIGPIPE handler here: libFuzzer owns main).
    let mut rest = Vec::new();
    (&rx).read_to_end(&mut rest).expect("the rest reads");
    writer.join().unwrap();
    assert_eq!(
        [&got[..], &rest[..]].concat(),
        payload,
        "bytes lost in framing"
    );
    assert!(fd.is_none());
    assert!(
        payload.starts_with(&got),
        "framing returned bytes never sent"
    );
    assert!(
        got.len() == payload.len() || got.ends_with(b"\n") || got.len() >= MAX_REQUEST,
        "framing stopped early: {} of {} bytes",
        got.len(),
        payload.len()
    );
    assert!(got.len() < MAX_REQUEST + 4096);
    if let Ok(req) = serde_json::from_slice::<Request>(&got) {
        round_trip(&req);
    }
    // The HTTP routes' bodies.
    if let Ok(c) = serde_json::from_slice::<CreateAgent>(payload) {
        round_trip(&c);
        for d in c.baseline.iter().flat_map(|b| &b.connect) {
            if let Ok(Some(dest)) = parse_destination(d) {
                assert!(dest.prefix_bits <= 128, "{d}: {dest:?}");
                let port = d.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                assert_eq!(port, Some(dest.port), "{d}: {dest:?}");
            }
        }
    }
    if let Ok(m) = serde_json::from_slice::<SetMode>(payload) {
        round_trip(&m);
    }
    if let Ok(b) = serde_json::from_slice::<Bind>(payload) {
        round_trip(&b);
    }
});
