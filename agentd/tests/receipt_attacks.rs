//! The watermark survives the edits dwtDctSvd-style schemes fail: brightness
//! gain and small crops (padded back, rescaled back, or left smaller).
use agentd::receipt::{self, pngio, ReceiptClaims};
use image::{imageops, ImageBuffer, RgbImage};

const KEY: &[u8] = b"erin-hmac-key-0123456789abcdef01";

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn brightness_and_crops_keep_the_payload() {
    let c = ReceiptClaims {
        seq: 77,
        row_hash: "e1".repeat(32),
        operator: "erin".into(),
        call_id: "call-attacks".into(),
        action: "shell.exec".into(),
        timestamp: "2026-11-22T09:00:00.000000Z".into(),
    };
    let sealed = pngio::decode(&receipt::seal(KEY, &c).unwrap()).unwrap();
    let img = RgbImage::from_raw(256, 256, sealed.rgb).unwrap();
    let scaled = |f: f32| {
        let mut o = img.clone();
        for p in o.pixels_mut() {
            for v in p.0.iter_mut() {
                *v = (*v as f32 * f).round().clamp(0.0, 255.0) as u8;
            }
        }
        o
    };
    let crop_pad = ImageBuffer::from_fn(256, 256, |x, y| {
        *img.get_pixel((x + 8).min(255), (y + 8).min(255))
    });
    let crop_rescale = imageops::resize(
        &imageops::crop_imm(&img, 8, 8, 240, 240).to_image(),
        256,
        256,
        imageops::FilterType::Triangle,
    );
    let cropped = imageops::crop_imm(&img, 8, 8, 248, 248).to_image();
    for (name, attacked) in [
        ("brightness +10%", scaled(1.1)),
        ("brightness -10%", scaled(0.9)),
        ("crop 8 px top-left, padded", crop_pad),
        ("crop 8 px each side, rescaled", crop_rescale),
        ("crop 8 px top-left, 248x248", cropped),
    ] {
        let r = receipt::verify_with_claims(&png(&attacked), KEY, Some(&c)).unwrap();
        let w = &r.watermark;
        assert!(w.verified, "{name}: {w:?}");
        assert_eq!(w.bit_error_rate, Some(0.0), "{name}: {w:?}");
        assert_eq!(w.extracted_payload, c.payload(), "{name}");
    }
}
