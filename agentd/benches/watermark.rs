//! Robustness benchmark of the receipt card watermark (`harness = false`).
//!
//! Seals N cards (distinct claims and targets, one operator key), attacks
//! each copy with an independent imaging library (the `image` crate for
//! JPEG, resizing, crops, flips and blur; `imageproc` for rotation), verifies
//! the watermark against the claims and prints per attack: trials, bit error
//! rate (mean / worst), pass rate (BER ≤ 8/64) and verification time. The
//! first row (no attack) is the floor the others are compared with. Then the
//! false-positive rate under 10,000 random wrong keys (geometric search on),
//! PSNR of the mark on the card, and the cost of sealing and enqueueing.
//!
//! Attack definitions (S = 256):
//! - jpeg Q: baseline JPEG at quality Q (4:2:0), decoded.
//! - resize 50%: 256→128→256, bilinear both ways; downscale 64: 256→64→256.
//! - noise σ=5: i.i.d. Gaussian per channel, rounded and clipped.
//! - brightness ±10 %, offset ±25: every channel scaled / shifted, clipped.
//! - crop 8 px + pad: top/left 8 px cut, padded back by edge replication;
//!   crop 8 px + rescale: 8 px cut on every side, 240² scaled back to 256;
//!   crop 8 px (no restore): the 248×248 rest verified as is.
//! - rotate θ: bilinear rotation about the centre (imageproc), same canvas,
//!   corners filled black; θ from −5° to +5° every 0.5°.
//! - crop 75 %: a 222×222 window (75 % of the area) at 16 offsets (4×4 grid
//!   from 0 to 34 px), verified at that size.
//! - crop 50 % corner: a 181×181 window (50 % of the area) at each corner.
//! - mirror: left-right flip.
//! - print-scan: rotate 1° (white paper corners), scale to 0.9 (230 px,
//!   bilinear), Gaussian blur σ 0.6, JPEG 60.
use std::time::Instant;

use agentd::receipt::{self, card, keys::ReceiptKeys, Face, ReceiptClaims};
use image::{imageops, ImageBuffer, Rgb, RgbImage};
use imageproc::geometric_transformations::{rotate_about_center, Interpolation};
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEY: &[u8] = b"operator-key-for-the-benchmark-0001";
const S: u32 = 256;
const WRONG_KEYS: usize = 10_000;

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

fn map(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let mut o = img.clone();
    for p in o.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = f(*c as f32).round().clamp(0.0, 255.0) as u8;
        }
    }
    o
}

fn noise(img: &RgbImage, sigma: f32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = img.clone();
    for p in o.pixels_mut() {
        for c in p.0.iter_mut() {
            // Box–Muller.
            let (u1, u2): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
            let g = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            *c = (*c as f32 + sigma * g).round().clamp(0.0, 255.0) as u8;
        }
    }
    o
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

/// One attack: name and the copies it makes of one card (several for the
/// sampled families: angles, offsets, corners).
type Copies = Box<dyn Fn(&RgbImage, usize) -> Vec<Vec<u8>>>;
type Attack = (&'static str, Copies);

fn one(f: impl Fn(&RgbImage, usize) -> Vec<u8> + 'static) -> Copies {
    Box::new(move |i, k| vec![f(i, k)])
}

fn main() {
    let n: usize = std::env::var("WATERMARK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // WATERMARK_BENCH_ONLY=word runs only the attacks whose name contains it.
    let only = std::env::var("WATERMARK_BENCH_ONLY").ok();
    let keys = ReceiptKeys::derive(KEY).expect("key");
    let mut sealed = Vec::new();
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

    let attacks: Vec<Attack> = vec![
        ("none (PNG) [floor]", Box::new(|_, _| vec![Vec::new()])),
        ("jpeg q=90", one(|i, _| jpeg(i, 90))),
        ("jpeg q=75", one(|i, _| jpeg(i, 75))),
        ("jpeg q=50", one(|i, _| jpeg(i, 50))),
        ("jpeg q=30", one(|i, _| jpeg(i, 30))),
        (
            "resize 50% and back",
            one(|i, _| png(&resize(&resize(i, S / 2, S / 2), S, S))),
        ),
        (
            "gaussian noise σ=5",
            one(|i, k| png(&noise(i, 5.0, k as u64))),
        ),
        ("brightness +10%", one(|i, _| png(&map(i, |v| v * 1.1)))),
        ("brightness -10%", one(|i, _| png(&map(i, |v| v * 0.9)))),
        ("brightness +20%", one(|i, _| png(&map(i, |v| v * 1.2)))),
        ("offset +25", one(|i, _| png(&map(i, |v| v + 25.0)))),
        ("offset -25", one(|i, _| png(&map(i, |v| v - 25.0)))),
        (
            "jpeg q=75 + brightness +10%",
            one(|i, _| jpeg(&map(i, |v| v * 1.1), 75)),
        ),
        ("crop 8px top-left + pad", one(|i, _| png(&crop_pad(i, 8)))),
        (
            "crop 16px top-left + pad",
            one(|i, _| png(&crop_pad(i, 16))),
        ),
        (
            "crop 8px all sides + rescale",
            one(|i, _| png(&resize(&crop(i, 8, 8, S - 16, S - 16), S, S))),
        ),
        (
            "crop 8px top-left, 248x248",
            one(|i, _| png(&crop(i, 8, 8, S - 8, S - 8))),
        ),
        (
            "rotate -5..5° every 0.5° (21)",
            Box::new(|i, _| {
                (-10..=10)
                    .map(|k| png(&rotate(i, k as f32 * 0.5, 0)))
                    .collect()
            }),
        ),
        (
            "crop 75% area, 16 offsets",
            Box::new(|i, _| {
                let offs = [0, 11, 22, 34];
                offs.iter()
                    .flat_map(|y| offs.iter().map(move |x| (*x, *y)))
                    .map(|(x, y)| png(&crop(i, x, y, 222, 222)))
                    .collect()
            }),
        ),
        (
            "crop 50% area corner (4)",
            Box::new(|i, _| {
                [(0, 0), (75, 0), (0, 75), (75, 75)]
                    .iter()
                    .map(|(x, y)| png(&crop(i, *x, *y, 181, 181)))
                    .collect()
            }),
        ),
        (
            "downscale 64px and back",
            one(|i, _| png(&resize(&resize(i, 64, 64), S, S))),
        ),
        (
            "mirror (left-right)",
            one(|i, _| png(&imageops::flip_horizontal(i))),
        ),
        ("print-scan (1°,0.9,σ0.6,jpeg60)", one(|i, _| print_scan(i))),
    ];

    println!("receipt card watermark robustness: {n} cards, 64-bit payload, verify = BER <= 8/64");
    println!(
        "PSNR marked card vs card: mean {:.2} dB, min {:.2} dB",
        mean(&psnrs),
        psnrs.iter().cloned().fold(f64::MAX, f64::min)
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
        "{:<34} {:>6} {:>9} {:>9} {:>10} {:>10}",
        "attack", "trials", "BER mean", "BER max", "pass", "verify ms"
    );
    for (name, attack) in &attacks {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        row(name, &sealed, attack);
    }
    if only.as_deref().is_none_or(|o| "wrong key".contains(o)) {
        wrong_keys(&sealed);
        println!();
        enqueue_latency();
    }
}

#[allow(clippy::type_complexity)]
fn row(
    name: &str,
    sealed: &[(ReceiptClaims, RgbImage, Vec<u8>)],
    attack: &dyn Fn(&RgbImage, usize) -> Vec<Vec<u8>>,
) {
    let (mut bers, mut times) = (Vec::new(), Vec::new());
    let mut ok = 0;
    for (k, (c, img, png_bytes)) in sealed.iter().enumerate() {
        for (j, bytes) in attack(img, k).into_iter().enumerate() {
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
            ok += usize::from(w.verified);
            if w.bit_error_rate != Some(0.0) {
                eprintln!(
                    "  {name} card {k} copy {j}: BER {:?}, pilot {:.3}, {:?}",
                    w.bit_error_rate, w.pilot_correlation, w.correction
                );
            }
        }
    }
    println!(
        "{:<34} {:>6} {:>8.2}% {:>8.2}% {:>9.1}% {:>10.1}",
        name,
        bers.len(),
        100.0 * mean(&bers),
        100.0 * bers.iter().cloned().fold(0.0, f64::max),
        100.0 * ok as f64 / bers.len() as f64,
        mean(&times)
    );
}

/// Every clean card verified under random operator keys: none may verify.
fn wrong_keys(sealed: &[(ReceiptClaims, RgbImage, Vec<u8>)]) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut accepted, mut min_ber, mut max_sim, mut ms) = (0usize, 1.0f32, -1.0f32, 0.0f64);
    let t0 = Instant::now();
    for k in 0..WRONG_KEYS {
        let key: [u8; 32] = rng.gen();
        let (c, _, png_bytes) = &sealed[k % sealed.len()];
        let t = Instant::now();
        let r = receipt::verify_with_claims(png_bytes, &key, Some(c)).expect("verify");
        ms += t.elapsed().as_secs_f64() * 1e3;
        let w = r.watermark;
        accepted += usize::from(w.verified);
        min_ber = min_ber.min(w.bit_error_rate.unwrap_or(1.0));
        max_sim = max_sim.max(w.similarity.unwrap_or(0.0));
    }
    println!(
        "{:<34} {:>6} {:>19} {:>9.3}% {:>10.1}",
        "wrong key (must NOT verify)",
        WRONG_KEYS,
        format!("min BER {:.2}%", 100.0 * min_ber),
        100.0 * accepted as f64 / WRONG_KEYS as f64,
        ms / WRONG_KEYS as f64
    );
    println!(
        "  false accepts {accepted}/{WRONG_KEYS}, best wrong-key similarity {max_sim:.3}, {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Cost the decision path pays per allowed call: one durable enqueue
/// (synchronous=NORMAL, WAL), no worker running.
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
        "queue enqueue (hot path, 5000 calls): p50 {:.1} µs, p99 {:.1} µs",
        us[us.len() / 2],
        us[us.len() * 99 / 100]
    );
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
