//! Robustness benchmark of the receipt watermark (`harness = false`).
//!
//! Seals N receipts (distinct claims, one operator key), applies each attack,
//! re-verifies the watermark against the claims and prints the bit error rate
//! (mean / worst), the similarity and how many receipts still verify
//! (BER ≤ 8/64). Also prints PSNR of the sealed image against its carrier and
//! the time to seal (embed + PNG) and to verify.
//!
//! Attack definitions:
//! - jpeg Q: baseline JPEG at quality Q (image crate encoder, 4:2:0), decoded.
//! - resize 50%: 256→128→256, bilinear (Triangle) both ways.
//! - noise σ=5: i.i.d. Gaussian per channel, rounded and clipped.
//! - brightness ±10%: every channel multiplied by 1.1 / 0.9, clipped.
//! - offset ±25: every channel shifted by ±25 (10 % of full scale), clipped.
//! - crop 8 px + pad: top and left 8 px cut off, the 248×248 rest padded back
//!   to 256 at the bottom/right by edge replication (content shifted by 8 px).
//! - crop 8 px + rescale: 8 px cut from every side, 240×240 scaled back to
//!   256 (bilinear): content shifted and magnified by 6.7 %.
//! - crop 8 px (no restore): top/left 8 px cut, the 248×248 image verified as is.
//! - beyond the goals: JPEG quality 30, brightness +20 % (clips the
//!   brightest pixels), a 16-px top-left crop padded back.
//! - wrong key: the clean receipt verified under another operator key
//!   (must NOT verify).
use std::time::Instant;

use agentd::receipt::{self, carrier, keys::ReceiptKeys, ReceiptClaims};
use image::{imageops, ImageBuffer, RgbImage};
use rand::{rngs::StdRng, Rng, SeedableRng};

const N: usize = 50;
const KEY: &[u8] = b"operator-key-for-the-benchmark-0001";
const WRONG_KEY: &[u8] = b"operator-key-for-the-benchmark-0002";
const S: u32 = 256;

fn claims(i: usize) -> ReceiptClaims {
    ReceiptClaims {
        seq: 1000 + i as u64,
        row_hash: format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
        operator: "alice".into(),
        call_id: format!("call-{i:04}"),
        action: "shell.exec".into(),
        timestamp: format!("2026-11-22T07:{:02}:00.000000Z", i % 60),
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

fn crop_rescale(img: &RgbImage, c: u32) -> RgbImage {
    let inner = imageops::crop_imm(img, c, c, S - 2 * c, S - 2 * c).to_image();
    imageops::resize(&inner, S, S, imageops::FilterType::Triangle)
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

type Attack = (&'static str, Box<dyn Fn(&RgbImage, usize) -> Vec<u8>>);

fn main() {
    let keys = ReceiptKeys::derive(KEY).expect("key");
    let mut sealed = Vec::new();
    let mut psnrs = Vec::new();
    let (mut seal_us, mut carrier_us, mut embed_us) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N {
        let c = claims(i);
        let t = Instant::now();
        let png_bytes = receipt::seal(KEY, &c).expect("seal");
        seal_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let _ = carrier::render(&c);
        carrier_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let rgb = receipt::seal_rgb(&keys, &c).expect("seal rgb");
        embed_us.push(t.elapsed().as_secs_f64() * 1e6);
        psnrs.push(psnr(&carrier::render(&c), &rgb));
        let img = RgbImage::from_raw(S, S, rgb).expect("256x256");
        sealed.push((c, img, png_bytes));
    }
    for v in [&mut seal_us, &mut carrier_us, &mut embed_us] {
        v.sort_by(f64::total_cmp);
    }

    let attacks: Vec<Attack> = vec![
        ("none (PNG)", Box::new(|i, _| png(i))),
        ("jpeg q=90", Box::new(|i, _| jpeg(i, 90))),
        ("jpeg q=75", Box::new(|i, _| jpeg(i, 75))),
        ("jpeg q=50", Box::new(|i, _| jpeg(i, 50))),
        (
            "resize 50% and back",
            Box::new(|i, _| {
                let small = imageops::resize(i, S / 2, S / 2, imageops::FilterType::Triangle);
                png(&imageops::resize(
                    &small,
                    S,
                    S,
                    imageops::FilterType::Triangle,
                ))
            }),
        ),
        (
            "gaussian noise σ=5",
            Box::new(|i, k| png(&noise(i, 5.0, k as u64))),
        ),
        (
            "brightness +10%",
            Box::new(|i, _| png(&map(i, |v| v * 1.1))),
        ),
        (
            "brightness -10%",
            Box::new(|i, _| png(&map(i, |v| v * 0.9))),
        ),
        ("offset +25", Box::new(|i, _| png(&map(i, |v| v + 25.0)))),
        ("offset -25", Box::new(|i, _| png(&map(i, |v| v - 25.0)))),
        (
            "crop 8px top-left + pad",
            Box::new(|i, _| png(&crop_pad(i, 8))),
        ),
        (
            "crop 8px all sides + rescale",
            Box::new(|i, _| png(&crop_rescale(i, 8))),
        ),
        (
            "crop 8px top-left, 248x248",
            Box::new(|i, _| png(&imageops::crop_imm(i, 8, 8, S - 8, S - 8).to_image())),
        ),
        (
            "jpeg q=75 + brightness +10%",
            Box::new(|i, _| jpeg(&map(i, |v| v * 1.1), 75)),
        ),
        // Beyond the goals, to show where the margin ends.
        ("jpeg q=30", Box::new(|i, _| jpeg(i, 30))),
        (
            "brightness +20%",
            Box::new(|i, _| png(&map(i, |v| v * 1.2))),
        ),
        (
            "crop 16px top-left + pad",
            Box::new(|i, _| png(&crop_pad(i, 16))),
        ),
    ];

    println!("receipt watermark robustness: {N} receipts, 64-bit payload, verify = BER <= 8/64");
    println!(
        "PSNR sealed vs carrier: mean {:.2} dB, min {:.2} dB",
        mean(&psnrs),
        psnrs.iter().cloned().fold(f64::MAX, f64::min)
    );
    println!(
        "seal (keys + carrier + embed + PNG): min {:.2} ms, p50 {:.2} ms, max {:.2} ms",
        seal_us[0] / 1000.0,
        seal_us[N / 2] / 1000.0,
        seal_us[N - 1] / 1000.0
    );
    println!(
        "  carrier alone: min {:.2} ms, p50 {:.2} ms; carrier + embed: min {:.2} ms, p50 {:.2} ms",
        carrier_us[0] / 1000.0,
        carrier_us[N / 2] / 1000.0,
        embed_us[0] / 1000.0,
        embed_us[N / 2] / 1000.0
    );
    println!();
    println!(
        "{:<30} {:>9} {:>9} {:>10} {:>9} {:>10}",
        "attack", "BER mean", "BER max", "similarity", "verified", "verify ms"
    );
    // WATERMARK_BENCH_QUICK=1 skips the rows that need the alignment search.
    let quick = std::env::var_os("WATERMARK_BENCH_QUICK").is_some();
    for (name, attack) in &attacks {
        if quick && name.contains("crop") {
            continue;
        }
        row(name, &sealed, |img, c, k| {
            (attack(img, k), Some(c.clone()), KEY)
        });
    }
    if quick {
        return;
    }
    row("wrong key (must NOT verify)", &sealed, |_, _, _| {
        (Vec::new(), None, WRONG_KEY)
    });
    println!();
    enqueue_latency();
}

/// Cost the decision path pays per allowed call: one durable enqueue
/// (synchronous=NORMAL, WAL), no worker running.
fn enqueue_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = receipt::ReceiptQueue::open(dir.path()).expect("queue");
    let mut us = Vec::with_capacity(5000);
    for i in 0..5000 {
        let c = claims(i);
        let c = ReceiptClaims {
            call_id: format!("enq-{i}"),
            ..c
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
    v.iter().sum::<f64>() / v.len() as f64
}

#[allow(clippy::type_complexity)]
fn row(
    name: &str,
    sealed: &[(ReceiptClaims, RgbImage, Vec<u8>)],
    make: impl Fn(&RgbImage, &ReceiptClaims, usize) -> (Vec<u8>, Option<ReceiptClaims>, &'static [u8]),
) {
    let (mut bers, mut sims, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let mut ok = 0;
    for (k, (c, img, png_bytes)) in sealed.iter().enumerate() {
        let (bytes, claims, key) = make(img, c, k);
        let bytes = if bytes.is_empty() {
            png_bytes.clone()
        } else {
            bytes
        };
        let t = Instant::now();
        let r = receipt::verify_with_claims(&bytes, key, Some(claims.as_ref().unwrap_or(c)))
            .expect("verify");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let w = r.watermark;
        bers.push(w.bit_error_rate.unwrap_or(1.0) as f64);
        sims.push(w.similarity.unwrap_or(0.0) as f64);
        ok += usize::from(w.verified);
        if !w.verified && key == KEY {
            eprintln!(
                "  {name} #{k}: not verified, alignment {:?}, pilot {:.3}",
                w.alignment, w.pilot_correlation
            );
        }
    }
    println!(
        "{:<30} {:>8.2}% {:>8.2}% {:>10.3} {:>6}/{:<2} {:>10.1}",
        name,
        100.0 * mean(&bers),
        100.0 * bers.iter().cloned().fold(0.0, f64::max),
        mean(&sims),
        ok,
        sealed.len(),
        mean(&times)
    );
}
