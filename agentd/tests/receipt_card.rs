//! The receipt card: readable text, and a watermark that survives rotation,
//! a corner crop, a mirror and a 64-px downscale (attacks made by the
//! `image` and `imageproc` crates), reporting the correction it applied.
use agentd::receipt::{self, pngio, Face, ReceiptClaims};
use image::{imageops, Rgb, RgbImage};
use imageproc::geometric_transformations::{rotate_about_center, Interpolation};

const KEY: &[u8] = b"frank-hmac-key-0123456789abcdef0";

fn claims() -> ReceiptClaims {
    ReceiptClaims {
        seq: 4242,
        row_hash: "9f3c".repeat(16),
        operator: "frank".into(),
        call_id: "call-card".into(),
        action: "file.write".into(),
        timestamp: "2026-11-22T09:30:00.000000Z".into(),
    }
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn sealed(face: &Face, size: usize) -> (Vec<u8>, RgbImage) {
    let bytes = receipt::seal_card(KEY, &claims(), face, size).unwrap();
    let d = pngio::decode(&bytes).unwrap();
    let img = RgbImage::from_raw(d.width, d.height, d.rgb).unwrap();
    if let Some(dir) = std::env::var_os("RECEIPT_CARD_DUMP") {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("card-{size}.png")),
            &bytes,
        )
        .unwrap();
    }
    (bytes, img)
}

#[test]
fn card_verifies_exactly_and_by_watermark() {
    let face = Face {
        target: "/srv/clinic/charts/patient-00017/notes.txt".into(),
        redacted: false,
    };
    let (bytes, _) = sealed(&face, 256);
    let r = receipt::verify(&bytes, KEY).unwrap();
    assert_eq!(r.exact, receipt::ExactCheck::Valid);
    assert!(r.watermark.verified, "{:?}", r.watermark);
    assert_eq!(r.watermark.bit_error_rate, Some(0.0));
    assert_eq!(r.watermark.correction.rotation, 0.0);
    assert!(!r.watermark.correction.mirrored);
    // Another key reads nothing.
    let other = receipt::verify(&bytes, b"someone-elses-key-0123456789abcd").unwrap();
    assert_eq!(
        other.exact,
        receipt::ExactCheck::Invalid {
            reason: "tag_mismatch"
        }
    );
    assert!(!other.watermark.verified, "{:?}", other.watermark);
}

#[test]
fn geometric_attacks_are_undone() {
    let (_, img) = sealed(&Face::default(), 256);
    let c = claims();
    let rotated = rotate_about_center(
        &img,
        3.5f32.to_radians(),
        Interpolation::Bilinear,
        Rgb([0; 3]),
    );
    let corner = imageops::crop_imm(&img, 75, 75, 181, 181).to_image();
    let mirrored = imageops::flip_horizontal(&img);
    let small = imageops::resize(
        &imageops::resize(&img, 64, 64, imageops::FilterType::Triangle),
        256,
        256,
        imageops::FilterType::Triangle,
    );
    for (name, copy, rot, mirror) in [
        ("rotate 3.5°", rotated, 3.5f32, false),
        ("bottom-right 50 % corner", corner, 0.0, false),
        ("mirror", mirrored, 0.0, true),
        ("downscale 64 px and back", small, 0.0, false),
    ] {
        let r = receipt::verify_with_claims(&png(&copy), KEY, Some(&c)).unwrap();
        let w = &r.watermark;
        assert_eq!(r.exact, receipt::ExactCheck::Missing, "{name}");
        assert!(w.verified, "{name}: {w:?}");
        assert_eq!(w.bit_error_rate, Some(0.0), "{name}: {w:?}");
        assert!(
            (w.correction.rotation.abs() - rot).abs() <= 0.3,
            "{name}: {w:?}"
        );
        assert_eq!(w.correction.mirrored, mirror, "{name}: {w:?}");
    }
}

#[test]
fn larger_cards_verify() {
    let (bytes, img) = sealed(&Face::default(), 512);
    assert_eq!(img.width(), 512);
    let r = receipt::verify(&bytes, KEY).unwrap();
    assert!(r.watermark.verified, "{:?}", r.watermark);
    assert!(
        (r.watermark.correction.scale - 2.0).abs() < 0.05,
        "{:?}",
        r.watermark
    );
    assert!(receipt::seal_card(KEY, &claims(), &Face::default(), 300).is_err());
}

/// A card whose top-left half-card corner (header and large action line,
/// most chips there with one copy) read 16 bits wrong while given-up chips
/// voted at full weight; the key and claims are the watermark bench's
/// card 2.
#[test]
fn top_left_half_card_corner_verifies() {
    let key: &[u8] = b"operator-key-for-the-benchmark-0001";
    let c = ReceiptClaims {
        seq: 1074,
        row_hash: format!("{:064x}", 3u128 * 0x9e37_79b9_7f4a_7c15),
        operator: "carol@example.org".into(),
        call_id: "call-0002".into(),
        action: "email.send".into(),
        timestamp: "2026-11-22T07:02:14.000000Z".into(),
    };
    let face = Face {
        target: "bob@example.org".into(),
        redacted: false,
    };
    let bytes = receipt::seal_card(key, &c, &face, 256).unwrap();
    let d = pngio::decode(&bytes).unwrap();
    let img = RgbImage::from_raw(d.width, d.height, d.rgb).unwrap();
    for (x, y) in [(0, 0), (75, 75)] {
        let corner = imageops::crop_imm(&img, x, y, 181, 181).to_image();
        let r = receipt::verify_with_claims(&png(&corner), key, Some(&c)).unwrap();
        assert_eq!(
            r.watermark.bit_error_rate,
            Some(0.0),
            "({x}, {y}): {:?}",
            r.watermark
        );
        assert_eq!(r.watermark.correction.rotation, 0.0, "({x}, {y})");
    }
}

/// Rotations of 1.5–2° left pilots above the early-accept threshold at the
/// identity, which read them with a quarter of the bits wrong: the template
/// peak is read first now.
#[test]
fn small_rotations_use_the_template() {
    let (_, img) = sealed(&Face::default(), 256);
    let c = claims();
    for deg in [-2.0f32, 1.5] {
        let rotated =
            rotate_about_center(&img, deg.to_radians(), Interpolation::Bilinear, Rgb([0; 3]));
        let r = receipt::verify_with_claims(&png(&rotated), KEY, Some(&c)).unwrap();
        let w = &r.watermark;
        assert_eq!(w.bit_error_rate, Some(0.0), "{deg}: {w:?}");
        // Read at the template's estimate (within a few tenths of a
        // degree), not at the identity.
        let rot = w.correction.rotation.abs();
        assert!(rot >= 1.0 && (rot - deg.abs()).abs() <= 0.5, "{deg}: {w:?}");
    }
}

/// A prepared copy checked against several keys gives what
/// `verify_with_claims` gives for each (the bench's wrong-key rate relies
/// on it).
#[test]
fn prepared_copy_matches_a_fresh_verification() {
    let (_, img) = sealed(&Face::default(), 256);
    let c = claims();
    let rotated = png(&rotate_about_center(
        &img,
        2.5f32.to_radians(),
        Interpolation::Bilinear,
        Rgb([0; 3]),
    ));
    let prepared = receipt::prepare(&rotated).unwrap();
    for key in [
        KEY,
        b"someone-elses-key-0123456789abcd".as_slice(),
        b"a-third-operator-key-0123456789ab".as_slice(),
    ] {
        let a = receipt::verify_prepared(&prepared, key, Some(&c))
            .unwrap()
            .watermark;
        let b = receipt::verify_with_claims(&rotated, key, Some(&c))
            .unwrap()
            .watermark;
        assert_eq!(a.verified, b.verified);
        assert_eq!(a.extracted_payload, b.extracted_payload);
        assert_eq!(a.bit_error_rate, b.bit_error_rate);
        assert_eq!(a.correction, b.correction);
        assert_eq!(a.verified, key == KEY, "{a:?}");
    }
}
