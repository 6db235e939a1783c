//! Robustness benchmark of the receipt card watermark (`harness = false`).
//!
//! Seals N cards (distinct claims and targets, one operator key), attacks
//! each copy with independent imaging code — the `image` crate (JPEG,
//! resizing, crops, flips, blur), `imageproc` (rotation, noise, median,
//! Gaussian blur, per-pixel maps) and libwebp through the `webp` crate
//! (lossy WebP; `image` encodes lossless WebP only) — verifies the
//! watermark against the claims and prints per attack: trials, bit error
//! rate (mean / worst), how many verified (BER ≤ 8/64), verification time
//! (mean / worst) and whether the target is met: BER 0 on every trial (for
//! the mirror also: the mirror detected). The first row (no attack) is the
//! floor. Then the false-positive rate under random wrong keys with the
//! geometric search on (target: no accept), PSNR of the mark on the card
//! (target ≥ 38 dB) and the sealing cost.
//!
//! Counts: `WATERMARK_BENCH_N` cards (default 50), `WATERMARK_BENCH_KEYS`
//! wrong keys (default 10,000); smaller counts give a quick, reduced run
//! (the header says so). `WATERMARK_BENCH_ONLY=word` runs only the attack
//! rows whose name contains the word (and skips the wrong keys unless the
//! word is in "wrong key").
//!
//! Attack definitions (S = 256):
//! - jpeg Q: baseline JPEG at quality Q (4:2:0), decoded.
//! - webp Q: lossy WebP at quality Q (libwebp), decoded by libwebp.
//! - resize 50%: 256→128→256, bilinear both ways; downscale 64: 256→64→256.
//! - noise σ: i.i.d. Gaussian per channel (imageproc), clipped.
//! - blur σ 1.0: Gaussian (imageproc); median 3×3 (imageproc).
//! - gamma γ: 255·(v/255)^γ per channel; brightness ±10 %, +20 %: every
//!   channel scaled (imageproc map); offset ±25: `imageops::brighten`.
//! - crop 8 px + pad: top/left 8 px cut, padded back by edge replication;
//!   crop 8 px + rescale: 8 px cut on every side, 240² scaled back to 256;
//!   crop 8 px (no restore): the 248×248 rest verified as is.
//! - rotate θ: bilinear rotation about the centre (imageproc), same canvas,
//!   corners filled black; θ from −5° to +5° every 0.5° (21 angles).
//! - crop 75 %: a 222×222 window (75 % of the area) at 16 offsets (4×4 grid
//!   from 0 to 34 px), verified at that size.
//! - crop 50 % corner: a 181×181 window (50 % of the area) at each corner.
//! - mirror: left-right flip; the correction must report the mirror.
//! - print-scan: rotate 1° (white paper corners), scale to 0.9 (230 px,
//!   bilinear), Gaussian blur σ 0.6, JPEG 60.
//!
//! The wrong-key rows check each clean card (a key per trial, cards in
//! turn) with the full geometric search. The search's key-independent part
//! (decoding, template reading, warps, folded statistics) is done once per
//! card (`receipt::prepare`); everything keyed (key derivation, pilot
//! search over every view, decoding, decision) runs per key, with the same
//! result as `verify_with_claims` (tested in `tests/receipt_card.rs`).
use std::time::Instant;

use agentd::receipt::{self, card, keys::ReceiptKeys, Face, ReceiptClaims};
use image::{imageops, ImageBuffer, Rgb, RgbImage};
use imageproc::geometric_transformations::{rotate_about_center, Interpolation};
use imageproc::{filter, map, noise};
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEY: &[u8] = b"operator-key-for-the-benchmark-0001";
const S: u32 = 256;
const CARDS: usize = 50;
const WRONG_KEYS: usize = 10_000;
const MIN_PSNR: f64 = 38.0;

fn claims(i: usize) -> ReceiptClaims {
    ReceiptClaims {
        seq: 1000 + 37 * i as u64,
        row_hash: format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
        operator: ["alice", "bob.ops", "carol@example.org", "dmitri"][i % 4].into(),
        call_id: format!("call-{i:04}"),
        action: [
            "shell.exec",
            "file.write",
            "email.send",
            "http.get",
            "payments.refund",
        ][i % 5]
            .into(),
        timestamp: format!("2026-11-22T07:{:02}:{:02}.000000Z", i % 60, (i * 7) % 60),
    }
}

fn face(i: usize) -> Face {
    let targets = [
        "mailctl reset --user bob",
        "/srv/clinic/charts/patient-00017/notes.txt",
        "bob@example.org",
        "https://api.example.com/v1/orders?id=42",
        "",
        "/home/agent/work/report-final.md",
    ];
    Face {
        target: targets[i % targets.len()].into(),
        redacted: i % 7 == 3,
    }
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

fn jpeg(img: &RgbImage, q: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
        .encode_image(img)
        .expect("jpeg");
    out
}

fn webp(img: &RgbImage, q: f32) -> Vec<u8> {
    let encoded = webp::Encoder::from_rgb(img, img.width(), img.height()).encode(q);
    let decoded = webp::Decoder::new(&encoded).decode().expect("webp decode");
    let (w, h) = (decoded.width(), decoded.height());
    let rgb: Vec<u8> = if decoded.is_alpha() {
        decoded
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()
    } else {
        decoded.to_vec()
    };
    png(&RgbImage::from_raw(w, h, rgb).expect("webp pixels"))
}

fn map(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    map::map_subpixels(img, |v: u8| f(v as f32).round().clamp(0.0, 255.0) as u8)
}

fn gamma(img: &RgbImage, g: f32) -> RgbImage {
    map(img, |v| 255.0 * (v / 255.0).powf(g))
}

fn noise(img: &RgbImage, sigma: f64, seed: u64) -> RgbImage {
    noise::gaussian_noise(img, 0.0, sigma, seed)
}

fn crop_pad(img: &RgbImage, c: u32) -> RgbImage {
    ImageBuffer::from_fn(S, S, |x, y| {
        *img.get_pixel((x + c).min(S - 1), (y + c).min(S - 1))
    })
}

fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    imageops::resize(img, w, h, imageops::FilterType::Triangle)
}

fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    imageops::crop_imm(img, x, y, w, h).to_image()
}

fn rotate(img: &RgbImage, degrees: f32, fill: u8) -> RgbImage {
    rotate_about_center(
        img,
        degrees.to_radians(),
        Interpolation::Bilinear,
        Rgb([fill; 3]),
    )
}

fn print_scan(img: &RgbImage) -> Vec<u8> {
    let r = rotate(img, 1.0, 250);
    let s = resize(&r, 230, 230);
    let b = imageops::blur(&s, 0.6);
    jpeg(&b, 60)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// One attack: name, whether it is a row of the target table (the others
/// are earlier goals kept as regression rows), whether the copy is
/// mirrored (the correction must say so), and the copies it makes of one
/// card (several for the sampled families: angles, offsets, corners).
type Copies = Box<dyn Fn(&RgbImage, usize) -> Vec<Vec<u8>>>;
struct Attack {
    name: &'static str,
    table: bool,
    mirrored: bool,
    copies: Copies,
}

fn one(f: impl Fn(&RgbImage, usize) -> Vec<u8> + 'static) -> Copies {
    Box::new(move |i, k| vec![f(i, k)])
}

fn attack(name: &'static str, table: bool, copies: Copies) -> Attack {
    Attack {
        name,
        table,
        mirrored: false,
        copies,
    }
}

fn attacks() -> Vec<Attack> {
    vec![
        attack(
            "none (PNG) [floor]",
            true,
            Box::new(|_, _| vec![Vec::new()]),
        ),
        attack("jpeg q=20", true, one(|i, _| jpeg(i, 20))),
        attack("webp q=50 (libwebp)", true, one(|i, _| webp(i, 50.0))),
        attack(
            "gaussian noise σ=15",
            true,
            one(|i, k| png(&noise(i, 15.0, k as u64))),
        ),
        attack(
            "gaussian blur σ=1.0",
            true,
            one(|i, _| png(&filter::gaussian_blur_f32(i, 1.0))),
        ),
        attack(
            "median filter 3x3",
            true,
            one(|i, _| png(&filter::median_filter(i, 1, 1))),
        ),
        attack("gamma 0.8", true, one(|i, _| png(&gamma(i, 0.8)))),
        attack("gamma 1.25", true, one(|i, _| png(&gamma(i, 1.25)))),
        attack(
            "brightness +10%",
            true,
            one(|i, _| png(&map(i, |v| v * 1.1))),
        ),
        attack(
            "brightness -10%",
            true,
            one(|i, _| png(&map(i, |v| v * 0.9))),
        ),
        attack(
            "offset +25",
            true,
            one(|i, _| png(&imageops::brighten(i, 25))),
        ),
        attack(
            "offset -25",
            true,
            one(|i, _| png(&imageops::brighten(i, -25))),
        ),
        attack(
            "rotate -5..5° every 0.5° (21)",
            true,
            Box::new(|i, _| {
                (-10..=10)
                    .map(|k| png(&rotate(i, k as f32 * 0.5, 0)))
                    .collect()
            }),
        ),
        attack(
            "crop 75% area, 16 offsets",
            true,
            Box::new(|i, _| {
                let offs = [0, 11, 22, 34];
                offs.iter()
                    .flat_map(|y| offs.iter().map(move |x| (*x, *y)))
                    .map(|(x, y)| png(&crop(i, x, y, 222, 222)))
                    .collect()
            }),
        ),
        attack(
            "crop 50% area corner (4)",
            true,
            Box::new(|i, _| {
                [(0, 0), (75, 0), (0, 75), (75, 75)]
                    .iter()
                    .map(|(x, y)| png(&crop(i, *x, *y, 181, 181)))
                    .collect()
            }),
        ),
        attack(
            "downscale 64px and back",
            true,
            one(|i, _| png(&resize(&resize(i, 64, 64), S, S))),
        ),
        Attack {
            mirrored: true,
            ..attack(
                "mirror (left-right)",
                true,
                one(|i, _| png(&imageops::flip_horizontal(i))),
            )
        },
        attack(
            "print-scan (1°,0.9,σ0.6,jpeg60)",
            true,
            one(|i, _| print_scan(i)),
        ),
        attack("jpeg q=90", false, one(|i, _| jpeg(i, 90))),
        attack("jpeg q=75", false, one(|i, _| jpeg(i, 75))),
        attack("jpeg q=50", false, one(|i, _| jpeg(i, 50))),
        attack("jpeg q=30", false, one(|i, _| jpeg(i, 30))),
        attack(
            "resize 50% and back",
            false,
            one(|i, _| png(&resize(&resize(i, S / 2, S / 2), S, S))),
        ),
        attack(
            "gaussian noise σ=5",
            false,
            one(|i, k| png(&noise(i, 5.0, k as u64))),
        ),
        attack(
            "brightness +20%",
            false,
            one(|i, _| png(&map(i, |v| v * 1.2))),
        ),
        attack(
            "jpeg q=75 + brightness +10%",
            false,
            one(|i, _| jpeg(&map(i, |v| v * 1.1), 75)),
        ),
        attack(
            "crop 8px top-left + pad",
            false,
            one(|i, _| png(&crop_pad(i, 8))),
        ),
        attack(
            "crop 16px top-left + pad",
            false,
            one(|i, _| png(&crop_pad(i, 16))),
        ),
        attack(
            "crop 8px all sides + rescale",
            false,
            one(|i, _| png(&resize(&crop(i, 8, 8, S - 16, S - 16), S, S))),
        ),
        attack(
            "crop 8px top-left, 248x248",
            false,
            one(|i, _| png(&crop(i, 8, 8, S - 8, S - 8))),
        ),
    ]
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Sealed = (ReceiptClaims, RgbImage, Vec<u8>);

fn main() {
    let n = env_count("WATERMARK_BENCH_N", CARDS).max(1);
    let n_keys = env_count("WATERMARK_BENCH_KEYS", WRONG_KEYS);
    let only = std::env::var("WATERMARK_BENCH_ONLY").ok();
    let keys = ReceiptKeys::derive(KEY).expect("key");
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut psnrs = Vec::new();
    let (mut seal_us, mut card_us) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (c, f) = (claims(i), face(i));
        let t = Instant::now();
        let png_bytes = receipt::seal_card(KEY, &c, &f, card::SIZE).expect("seal");
        seal_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let (plain, _) = card::render(&c, &f, card::SIZE);
        card_us.push(t.elapsed().as_secs_f64() * 1e6);
        let rgb = receipt::seal_rgb(&keys, &c, &f, card::SIZE).expect("seal rgb");
        psnrs.push(psnr(&plain, &rgb));
        let img = RgbImage::from_raw(S, S, rgb).expect("256x256");
        sealed.push((c, img, png_bytes));
    }
    for v in [&mut seal_us, &mut card_us] {
        v.sort_by(f64::total_cmp);
    }

    let reduced = n != CARDS || n_keys != WRONG_KEYS || only.is_some();
    println!(
        "receipt card watermark robustness: {n} cards, {n_keys} wrong keys, 64-bit payload, verified = BER <= 8/64; target per row: BER 0 on every trial{}",
        if reduced { " [REDUCED RUN: not the full counts]" } else { "" }
    );
    let min_psnr = psnrs.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "PSNR marked card vs card: mean {:.2} dB, min {:.2} dB (target >= {MIN_PSNR} dB: {})",
        mean(&psnrs),
        min_psnr,
        met(min_psnr >= MIN_PSNR)
    );
    println!(
        "seal (keys + card + mark + PNG): min {:.2} ms, p50 {:.2} ms, max {:.2} ms; card alone p50 {:.2} ms",
        seal_us[0] / 1000.0,
        seal_us[n / 2] / 1000.0,
        seal_us[n - 1] / 1000.0,
        card_us[n / 2] / 1000.0,
    );
    println!();
    println!(
        "{:<34} {:>6} {:>9} {:>9} {:>9} {:>17}  target",
        "attack", "trials", "BER mean", "BER max", "verified", "verify ms mean/max"
    );
    let mut failed: Vec<&str> = Vec::new();
    let mut rows = 0;
    let mut printed_earlier = false;
    for a in &attacks() {
        if only.as_deref().is_some_and(|o| !a.name.contains(o)) {
            continue;
        }
        if !a.table && !printed_earlier {
            println!("-- earlier goals (regression rows) --");
            printed_earlier = true;
        }
        rows += 1;
        if !row(a, &sealed) {
            failed.push(a.name);
        }
    }
    if only.as_deref().is_none_or(|o| "wrong key".contains(o)) {
        rows += 1;
        if !wrong_keys(&sealed, n_keys) {
            failed.push("wrong key");
        }
    }
    rows += 1;
    if min_psnr < MIN_PSNR {
        failed.push("PSNR");
    }
    println!();
    println!(
        "rows met: {} of {rows}{}",
        rows - failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; NOT MET: {}", failed.join(", "))
        }
    );
    if only.is_none() {
        enqueue_latency();
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// Runs one attack over every card; prints its row and says whether its
/// target (BER 0 on every trial, the mirror reported for a mirror) is met.
fn row(a: &Attack, sealed: &[Sealed]) -> bool {
    let (mut bers, mut times) = (Vec::new(), Vec::new());
    let (mut verified, mut wrong_geometry) = (0, 0);
    for (k, (c, img, png_bytes)) in sealed.iter().enumerate() {
        for (j, bytes) in (a.copies)(img, k).into_iter().enumerate() {
            let bytes = if bytes.is_empty() {
                png_bytes.clone()
            } else {
                bytes
            };
            let t = Instant::now();
            let r = receipt::verify_with_claims(&bytes, KEY, Some(c)).expect("verify");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let w = r.watermark;
            bers.push(w.bit_error_rate.unwrap_or(1.0) as f64);
            verified += usize::from(w.verified);
            wrong_geometry += usize::from(w.correction.mirrored != a.mirrored);
            if w.bit_error_rate != Some(0.0) || w.correction.mirrored != a.mirrored {
                eprintln!(
                    "  {} card {k} copy {j}: BER {:?}, pilot {:.3}, {:?}",
                    a.name, w.bit_error_rate, w.pilot_correlation, w.correction
                );
            }
        }
    }
    let max_ber = bers.iter().cloned().fold(0.0, f64::max);
    let ok = max_ber == 0.0 && wrong_geometry == 0;
    println!(
        "{:<34} {:>6} {:>8.2}% {:>8.2}% {:>8.1}% {:>8.1} /{:>7.1}  BER 0{}: {}",
        a.name,
        bers.len(),
        100.0 * mean(&bers),
        100.0 * max_ber,
        100.0 * verified as f64 / bers.len() as f64,
        mean(&times),
        times.iter().cloned().fold(0.0, f64::max),
        if a.mirrored { ", mirror found" } else { "" },
        met(ok)
    );
    ok
}

/// Every clean card verified under random operator keys with the full
/// geometric search: none may verify. The key-independent part of the
/// search is prepared once per card.
fn wrong_keys(sealed: &[Sealed], n_keys: usize) -> bool {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let t0 = Instant::now();
    let prepared: Vec<_> = sealed
        .iter()
        .map(|(_, _, png_bytes)| receipt::prepare(png_bytes).expect("prepare"))
        .collect();
    let (mut accepted, mut min_ber, mut max_sim) = (0usize, 1.0f32, -1.0f32);
    let mut times = Vec::with_capacity(n_keys);
    for k in 0..n_keys {
        let key: [u8; 32] = rng.gen();
        let i = k % sealed.len();
        let t = Instant::now();
        let r = receipt::verify_prepared(&prepared[i], &key, Some(&sealed[i].0)).expect("verify");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let w = r.watermark;
        accepted += usize::from(w.verified);
        min_ber = min_ber.min(w.bit_error_rate.unwrap_or(1.0));
        max_sim = max_sim.max(w.similarity.unwrap_or(0.0));
    }
    let ok = accepted == 0;
    println!(
        "{:<34} {:>6} {:>19} {:>8.3}% {:>8.1} /{:>7.1}  0 accepted: {}",
        "wrong key (must NOT verify)",
        n_keys,
        format!("min BER {:.2}%", 100.0 * min_ber),
        100.0 * accepted as f64 / n_keys.max(1) as f64,
        mean(&times),
        times.iter().cloned().fold(0.0, f64::max),
        met(ok)
    );
    println!(
        "  false accepts {accepted}/{n_keys}, best wrong-key similarity {max_sim:.3}, {:.0} s (search prepared once per card, keyed part per key)",
        t0.elapsed().as_secs_f64()
    );
    ok
}

/// Cost of one durable enqueue outside the audit batch (tools, re-issuing
/// a receipt; synchronous=NORMAL, WAL), no worker running. The daemon's
/// allowed calls are sealed in their audit row's transaction instead.
fn enqueue_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = receipt::ReceiptQueue::open(dir.path()).expect("queue");
    let mut us = Vec::with_capacity(5000);
    for i in 0..5000 {
        let c = ReceiptClaims {
            call_id: format!("enq-{i}"),
            ..claims(i)
        };
        let t = Instant::now();
        q.enqueue(&c).expect("enqueue");
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    println!(
        "queue enqueue outside the audit batch (5000 calls): p50 {:.1} µs, p99 {:.1} µs",
        us[us.len() / 2],
        us[us.len() * 99 / 100]
    );
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
