//! Receipts: each permitted tool call gets a 256×256 PNG that proves, without
//! contacting the daemon, which audit row allowed it.
//!
//! Two independent proofs travel in one file:
//! - **exact**: the receipt JSON (claims, payload, HMAC tag) in an iTXt chunk;
//!   the tag is HMAC-SHA256 under a key derived (HKDF) from the operator's
//!   key. Any edit fails it; any re-encoding drops it.
//! - **watermark**: a keyed DWT-SVD watermark in the pixels carrying 64 bits
//!   of SHA-256 over the claims. It survives JPEG, resizing, noise,
//!   brightness changes and small crops (see `benches/watermark.rs`), so a
//!   screenshot or a recompressed copy can still be checked against the
//!   audit row.
//!
//! Rendering runs off the decision hot path through [`ReceiptQueue`].
pub mod card;
pub mod carrier;
pub mod claims;
pub mod dwt;
pub mod ecc;
pub mod gateway_hook;
pub mod issued;
pub mod keys;
pub mod locate;
pub mod mark;
pub mod pngio;
pub mod queue;
pub mod sync;
pub mod template;
pub mod watermark;

use std::path::PathBuf;

pub use card::Face;
pub use claims::{ReceiptClaims, ReceiptDocument, PAYLOAD_BITS};
pub use locate::Correction;
pub use queue::{QueueStats, ReceiptQueue};

use keys::ReceiptKeys;
use watermark::Layout;

/// Largest bit error rate at which the watermark still verifies (8 of 64
/// bits). A random or wrongly keyed image reaches it with probability ~3e-10.
pub const MAX_BER: f32 = 8.0 / 64.0;
/// Pilot correlation (128 pilots, σ ≈ 0.09 without a watermark) above which
/// a watermark is reported present when no claims are known to compare with.
pub const PILOT_PRESENT: f32 = 0.5;

/// Errors of the receipt module; each has a stable reason code.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The operator key cannot key receipts.
    #[error("{reason}: operator key has {len} bytes, need at least {min}", min = keys::MIN_KEY_LEN)]
    BadKey { reason: &'static str, len: usize },
    /// Claims that cannot be sealed.
    #[error("{reason}: {detail}")]
    InvalidClaims {
        reason: &'static str,
        detail: String,
    },
    /// PNG encoding failed.
    #[error("png_encode_failed: {detail}")]
    Encode { detail: String },
    /// The file is not a readable receipt image.
    #[error("{reason}: {detail}")]
    Decode {
        reason: &'static str,
        detail: String,
    },
    /// The receipt queue database failed.
    #[error("receipt_store_failed: {op}: {source}")]
    Store {
        op: &'static str,
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("receipt_io_failed: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReceiptError {
    /// Stable snake_case reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            ReceiptError::BadKey { reason, .. }
            | ReceiptError::InvalidClaims { reason, .. }
            | ReceiptError::Decode { reason, .. } => reason,
            ReceiptError::Encode { .. } => "png_encode_failed",
            ReceiptError::Store { .. } => "receipt_store_failed",
            ReceiptError::Io { .. } => "receipt_io_failed",
        }
    }
}

/// Outcome of the exact (HMAC) check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExactCheck {
    /// Text chunk present, tag and payload match the claims.
    Valid,
    /// Text chunk present but wrong; reason code says how.
    Invalid { reason: &'static str },
    /// No receipt text chunk (e.g. the image was re-encoded).
    Missing,
}

/// Outcome of the watermark check.
#[derive(Debug, Clone)]
pub struct WatermarkCheck {
    /// Payload the claims predict, if claims were available.
    pub expected_payload: Option<u64>,
    /// Payload read from the pixels.
    pub extracted_payload: u64,
    /// Bit error rate against the expected payload.
    pub bit_error_rate: Option<f32>,
    /// Normalized correlation of all chip (v2) or pair (v1) evidence with
    /// the expected signs (1 = clean, ~0 = no watermark under this key).
    pub similarity: Option<f32>,
    /// Normalized correlation of the pilots (needs no claims).
    pub pilot_correlation: f32,
    /// Geometric correction applied to read the copy.
    pub correction: Correction,
    /// Expected payload known and BER ≤ [`MAX_BER`].
    pub verified: bool,
}

/// Everything `verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The receipt document from the text chunk, if present and parseable.
    pub document: Option<ReceiptDocument>,
    /// Exact check.
    pub exact: ExactCheck,
    /// Watermark check.
    pub watermark: WatermarkCheck,
}

impl VerifyReport {
    /// True if at least one check proves the receipt.
    pub fn passed(&self) -> bool {
        self.exact == ExactCheck::Valid || self.watermark.verified
    }
}

/// Renders and seals the standard 256×256 receipt card for `claims`
/// (target unknown): returns PNG bytes.
pub fn seal(operator_key: &[u8], claims: &ReceiptClaims) -> Result<Vec<u8>, ReceiptError> {
    seal_card(operator_key, claims, &Face::default(), card::SIZE)
}

/// Renders and seals the receipt card for `claims` showing `face`, `size`
/// pixels square (a multiple of 256 up to 1024): returns PNG bytes.
pub fn seal_card(
    operator_key: &[u8],
    claims: &ReceiptClaims,
    face: &Face,
    size: usize,
) -> Result<Vec<u8>, ReceiptError> {
    let keys = ReceiptKeys::derive(operator_key)?;
    let rgb = seal_rgb(&keys, claims, face, size)?;
    let doc = ReceiptDocument::new(&keys, claims);
    let text = serde_json::to_string(&doc).expect("receipt document serializes");
    pngio::encode(&rgb, size as u32, size as u32, &text)
}

/// The sealed card pixels (packed RGB8, `size`×`size`) without the PNG
/// container.
pub fn seal_rgb(
    keys: &ReceiptKeys,
    claims: &ReceiptClaims,
    face: &Face,
    size: usize,
) -> Result<Vec<u8>, ReceiptError> {
    claims.validate()?;
    if !(card::SIZE..=card::MAX_SIZE).contains(&size) || !size.is_multiple_of(card::SIZE) {
        return Err(ReceiptError::InvalidClaims {
            reason: "bad_card_size",
            detail: format!(
                "card size {size} (accepted: multiples of {} up to {})",
                card::SIZE,
                card::MAX_SIZE
            ),
        });
    }
    let (mut rgb, luma) = card::render(claims, face, size);
    let delta = mark::mark(
        &luma,
        card::SIZE,
        &mark::Layout::new(&keys.watermark_key),
        claims.payload(),
    );
    let m = size / card::SIZE;
    for (i, p) in rgb.chunks_exact_mut(3).enumerate() {
        let d = if m == 1 {
            delta[i]
        } else {
            upsample(
                &delta,
                (i % size) as f32 / m as f32,
                (i / size) as f32 / m as f32,
            )
        };
        for c in p.iter_mut() {
            *c = (*c as f32 + d).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(rgb)
}

/// Bilinear read of a 256×256 plane at card position (x, y) (pixel
/// centres at +0.5).
fn upsample(plane: &[f32], x: f32, y: f32) -> f32 {
    let n = card::SIZE;
    let (px, py) = ((x - 0.5).max(0.0), (y - 0.5).max(0.0));
    let (x0, y0) = ((px as usize).min(n - 1), (py as usize).min(n - 1));
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    let (ax, ay) = (px - x0 as f32, py - y0 as f32);
    plane[y0 * n + x0] * (1.0 - ax) * (1.0 - ay)
        + plane[y0 * n + x1] * ax * (1.0 - ay)
        + plane[y1 * n + x0] * (1.0 - ax) * ay
        + plane[y1 * n + x1] * ax * ay
}

/// Verifies a receipt image (PNG, or a re-encoded copy such as JPEG).
/// The watermark is compared with the claims in the text chunk, if any.
pub fn verify(image: &[u8], operator_key: &[u8]) -> Result<VerifyReport, ReceiptError> {
    verify_with_claims(image, operator_key, None)
}

/// Like [`verify`], but the watermark is compared with `claims` when given
/// (e.g. taken from the audit log for a copy that lost its text chunk).
pub fn verify_with_claims(
    image: &[u8],
    operator_key: &[u8],
    claims: Option<&ReceiptClaims>,
) -> Result<VerifyReport, ReceiptError> {
    verify_prepared(&prepare(image)?, operator_key, claims)
}

/// A decoded copy and the key-independent part of its geometric search
/// (template reading, warps and folded chip statistics, done on first
/// use), so it can be checked against several keys.
pub struct PreparedCopy {
    decoded: pngio::Decoded,
    located: std::cell::OnceCell<locate::Prepared>,
}

/// Decodes a receipt image for [`verify_prepared`].
pub fn prepare(image: &[u8]) -> Result<PreparedCopy, ReceiptError> {
    Ok(PreparedCopy {
        decoded: pngio::decode(image)?,
        located: std::cell::OnceCell::new(),
    })
}

/// [`verify_with_claims`] on a prepared copy: everything that depends on
/// the key (key derivation, exact check, keyed pilot search over every
/// view, decoding, the decision) runs per call; the result is the same as
/// [`verify_with_claims`] on the image.
pub fn verify_prepared(
    copy: &PreparedCopy,
    operator_key: &[u8],
    claims: Option<&ReceiptClaims>,
) -> Result<VerifyReport, ReceiptError> {
    let keys = ReceiptKeys::derive(operator_key)?;
    let decoded = &copy.decoded;
    let (document, exact) = exact_check(&keys, decoded.text.as_deref());
    let expected = claims
        .or(document.as_ref().map(|d| &d.claims))
        .map(ReceiptClaims::payload);
    // A card sealed before the v2 mark carries the v1 DWT-SVD watermark.
    let v1 = document.as_ref().is_some_and(|d| d.v == 1);
    let watermark = if v1 {
        watermark_check_v1(&keys, decoded, expected)
    } else {
        let located = copy.located.get_or_init(|| {
            let y = watermark::luma(&decoded.rgb);
            locate::Prepared::new(&locate::Copy {
                luma: &y,
                width: decoded.width as usize,
                height: decoded.height as usize,
            })
        });
        watermark_check_located(&keys, located, expected)
    };
    Ok(VerifyReport {
        document,
        exact,
        watermark,
    })
}

fn exact_check(keys: &ReceiptKeys, text: Option<&str>) -> (Option<ReceiptDocument>, ExactCheck) {
    let Some(text) = text else {
        return (None, ExactCheck::Missing);
    };
    let doc: ReceiptDocument = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(_) => {
            return (
                None,
                ExactCheck::Invalid {
                    reason: "bad_receipt_json",
                },
            )
        }
    };
    let verdict = if doc.v != 1 && doc.v != 2 {
        ExactCheck::Invalid {
            reason: "unsupported_receipt_version",
        }
    } else if !claims::tag_matches(keys, &doc.claims, &doc.tag) {
        ExactCheck::Invalid {
            reason: "tag_mismatch",
        }
    } else if doc.payload != format!("{:016x}", doc.claims.payload()) {
        ExactCheck::Invalid {
            reason: "payload_mismatch",
        }
    } else {
        ExactCheck::Valid
    };
    (Some(doc), verdict)
}

/// Reads the card watermark (v2) of decoded pixels under `keys`, searching
/// rotation, scale, mirror and offset (`locate`).
pub fn watermark_check(
    keys: &ReceiptKeys,
    decoded: &pngio::Decoded,
    expected: Option<u64>,
) -> WatermarkCheck {
    let y = watermark::luma(&decoded.rgb);
    let located = locate::Prepared::new(&locate::Copy {
        luma: &y,
        width: decoded.width as usize,
        height: decoded.height as usize,
    });
    watermark_check_located(keys, &located, expected)
}

fn watermark_check_located(
    keys: &ReceiptKeys,
    located: &locate::Prepared,
    expected: Option<u64>,
) -> WatermarkCheck {
    let layout = mark::Layout::new(&keys.watermark_key);
    // Among the candidates (at most 54: three hypotheses, plain and
    // mirrored, nine offsets each), keep the one whose reading matches the
    // claims best (or, without claims, has the strongest pilots). Choosing
    // among 54 multiplies the false-accept odds (≈3e-10 for one reading) by
    // 54 at most.
    let best = located
        .candidates(&layout)
        .into_iter()
        .max_by(|x, y| {
            let key = |c: &locate::Candidate| match expected {
                Some(p) => c.reading.similarity(&layout, p),
                None => c.reading.pilot_nc,
            };
            key(x).total_cmp(&key(y))
        })
        .expect("at least one candidate");
    let r = &best.reading;
    let bit_error_rate = expected.map(|p| r.bit_error_rate(p));
    WatermarkCheck {
        expected_payload: expected,
        extracted_payload: r.payload,
        bit_error_rate,
        similarity: expected.map(|p| r.similarity(&layout, p)),
        pilot_correlation: r.pilot_nc,
        correction: best.correction,
        verified: bit_error_rate.is_some_and(|b| b <= MAX_BER),
    }
}

/// Reads the v1 DWT-SVD watermark (receipts sealed before the card).
pub fn watermark_check_v1(
    keys: &ReceiptKeys,
    decoded: &pngio::Decoded,
    expected: Option<u64>,
) -> WatermarkCheck {
    let layout = Layout::new(&keys.watermark_key);
    let y = watermark::luma(&decoded.rgb);
    let plane = sync::Plane {
        data: &y,
        width: decoded.width as usize,
        height: decoded.height as usize,
    };
    let (alignment, ex) = sync::candidates(&plane, &layout)
        .into_iter()
        .map(|(a, _)| {
            let inside = plane.blocks_inside(&a);
            (
                a,
                watermark::extract_masked(&plane.warp(&a), &layout, Some(&inside)),
            )
        })
        .max_by(|(_, x), (_, y)| {
            let key = |e: &watermark::Extraction| match expected {
                Some(p) => e.similarity(&layout, p),
                None => e.pilot_nc,
            };
            key(x).total_cmp(&key(y))
        })
        .expect("at least one candidate");
    let bit_error_rate = expected.map(|p| ex.bit_error_rate(p));
    WatermarkCheck {
        expected_payload: expected,
        extracted_payload: ex.payload,
        bit_error_rate,
        similarity: expected.map(|p| ex.similarity(&layout, p)),
        pilot_correlation: ex.pilot_nc,
        correction: Correction {
            rotation: 0.0,
            scale: 1.0 / alignment.scale,
            mirrored: false,
            offset: (-alignment.dx, -alignment.dy),
        },
        verified: bit_error_rate.is_some_and(|b| b <= MAX_BER),
    }
}
