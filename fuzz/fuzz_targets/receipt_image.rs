//! Receipt images as `agentctl receipt verify` reads them. Two kinds of
//! input: a file starting like a PNG (0x89) or a JPEG (0xFF) is decoded as
//! it is (the fuzz stage runs this target under `-rss_limit_mb`, so a
//! decompression bomb that is not refused before decoding fails it); any
//! other input edits the receipt document of a genuine receipt sealed here
//! and re-wraps it around the genuine pixels. Properties: never panics,
//! memory stays bounded; the genuine receipt verifies exactly; an image
//! whose text chunk verifies exactly carries the genuine claims (the
//! document cannot be altered without the operator's key).
#![no_main]
use std::sync::OnceLock;

use agentd::receipt::{self, pngio, ExactCheck, ReceiptClaims};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-operator-key-0123456789abcdef";

struct Genuine {
    claims: ReceiptClaims,
    rgb: Vec<u8>,
    size: u32,
    text: String,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let claims = ReceiptClaims {
            seq: 7,
            row_hash: "ab".repeat(32),
            operator: "alice".into(),
            call_id: "call-1".into(),
            action: "read_chart".into(),
            timestamp: "2026-12-01T07:00:00.000001Z".into(),
        };
        let png = receipt::seal(KEY, &claims).unwrap();
        let d = pngio::decode(&png).unwrap();
        let report = receipt::verify(&png, KEY).unwrap();
        assert_eq!(
            report.exact,
            ExactCheck::Valid,
            "the genuine receipt verifies"
        );
        Genuine {
            claims,
            rgb: d.rgb,
            size: d.width,
            text: d.text.unwrap(),
        }
    })
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Replace(u16, u8),
    Insert(u16, Vec<u8>),
    Delete(u16, u8),
}

fn edited_text(data: &[u8]) -> String {
    let mut b = genuine().text.clone().into_bytes();
    let mut u = Unstructured::new(data);
    let edits: Vec<Edit> = Vec::arbitrary(&mut u).unwrap_or_default();
    for e in edits.iter().take(8) {
        let len = b.len();
        match e {
            Edit::Replace(i, v) if len > 0 => b[*i as usize % len] = *v,
            Edit::Replace(..) => {}
            Edit::Insert(i, bytes) => {
                let i = *i as usize % (len + 1);
                drop(b.splice(i..i, bytes.iter().copied().take(64)));
            }
            Edit::Delete(i, n) => {
                let i = *i as usize % (len + 1);
                drop(b.drain(i..(i + *n as usize).min(len)));
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let g = genuine();
    let image = match data.first() {
        Some(0x89 | 0xff) => data.to_vec(),
        _ => match pngio::encode(&g.rgb, g.size, g.size, &edited_text(data)) {
            Ok(png) => png,
            Err(_) => return,
        },
    };
    let Ok(report) = receipt::verify(&image, KEY) else {
        return;
    };
    if report.exact == ExactCheck::Valid {
        let doc = report.document.expect("an exact match has its document");
        assert_eq!(doc.claims, g.claims, "altered claims verified exactly");
    }
});
