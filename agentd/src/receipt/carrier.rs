//! The carrier image: a 256×256 colour interference pattern generated
//! deterministically from the claims.
//!
//! The watermark hides in the local structure of the luma (the dominant
//! singular value of each 8×8-pixel block), so the pattern is built to have
//! texture everywhere: a sum of five plane waves (wavelengths 20–48 px) for
//! the look, plus a weave of two finer waves (14–18 px, still coarse enough to
//! survive halving the image) so that no block is flat, and slow colour
//! waves. Luma stays within [50, 194] and every channel within about
//! [30, 226], so a ±10 % brightness change never clips.
use super::claims::ReceiptClaims;
use super::keys::KeyStream;

/// Width and height of a receipt image, pixels.
pub const SIZE: usize = 256;

struct Wave {
    kx: f32,
    ky: f32,
    phase: f32,
    amp: f32,
}

fn waves(ks: &mut KeyStream, n: usize, min_len: f32, max_len: f32, amp: f32) -> Vec<Wave> {
    (0..n)
        .map(|_| {
            let theta = ks.unit() * std::f32::consts::TAU;
            let len = min_len + (max_len - min_len) * ks.unit();
            let k = std::f32::consts::TAU / len;
            Wave {
                kx: k * theta.cos(),
                ky: k * theta.sin(),
                phase: ks.unit() * std::f32::consts::TAU,
                amp,
            }
        })
        .collect()
}

/// Adds `Σ amp·sin(kx·x + ky·y + φ)` over the plane, separably:
/// sin(a + b) = sin a·cos b + cos a·sin b with per-column and per-row tables,
/// so rendering costs two multiply-adds per wave and pixel, not a `sin`.
fn add_field(ws: &[Wave], out: &mut [f32]) {
    for w in ws {
        let col: Vec<(f32, f32)> = (0..SIZE)
            .map(|x| (w.kx * x as f32 + w.phase).sin_cos())
            .collect();
        let row: Vec<(f32, f32)> = (0..SIZE).map(|y| (w.ky * y as f32).sin_cos()).collect();
        for (y, (sy, cy)) in row.iter().enumerate() {
            let line = &mut out[y * SIZE..(y + 1) * SIZE];
            for (v, (sx, cx)) in line.iter_mut().zip(&col) {
                *v += w.amp * (sx * cy + cx * sy);
            }
        }
    }
}

/// Renders the carrier for `claims` as packed RGB8 (`SIZE * SIZE * 3` bytes).
pub fn render(claims: &ReceiptClaims) -> Vec<u8> {
    let mut ks = KeyStream::new(&claims.canonical(), b"carrier");
    let luma = waves(&mut ks, 5, 20.0, 48.0, 12.0);
    let weave = waves(&mut ks, 2, 14.0, 18.0, 6.0);
    let cb = waves(&mut ks, 2, 70.0, 160.0, 9.0);
    let cr = waves(&mut ks, 2, 70.0, 160.0, 9.0);
    let mut l = vec![122.0f32; SIZE * SIZE];
    add_field(&luma, &mut l);
    add_field(&weave, &mut l);
    let mut b = vec![0.0f32; SIZE * SIZE];
    add_field(&cb, &mut b);
    let mut r = vec![0.0f32; SIZE * SIZE];
    add_field(&cr, &mut r);
    let mut out = Vec::with_capacity(SIZE * SIZE * 3);
    for i in 0..SIZE * SIZE {
        let rgb = [
            l[i] + 1.402 * r[i],
            l[i] - 0.344_136 * b[i] - 0.714_136 * r[i],
            l[i] + 1.772 * b[i],
        ];
        out.extend(rgb.iter().map(|c| c.round().clamp(0.0, 255.0) as u8));
    }
    out
}
