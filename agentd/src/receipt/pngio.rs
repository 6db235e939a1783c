//! PNG encoding with the receipt document in an iTXt chunk, and decoding of
//! any supported image (PNG or JPEG) to RGB8 plus that chunk if present.
use std::io::Cursor;

use super::ReceiptError;

/// iTXt keyword holding the receipt JSON.
pub const TEXT_KEYWORD: &str = "agentd-receipt";

/// Encodes packed RGB8 as PNG with `text` in an iTXt chunk.
pub fn encode(rgb: &[u8], width: u32, height: u32, text: &str) -> Result<Vec<u8>, ReceiptError> {
    let mut out = Vec::with_capacity(rgb.len() + 1024);
    let enc_err = |e: png::EncodingError| ReceiptError::Encode {
        detail: e.to_string(),
    };
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        // The texture barely compresses; the fast setting saves milliseconds.
        enc.set_compression(png::Compression::Fast);
        enc.add_itxt_chunk(TEXT_KEYWORD.to_string(), text.to_string())
            .map_err(enc_err)?;
        let mut w = enc.write_header().map_err(enc_err)?;
        w.write_image_data(rgb).map_err(enc_err)?;
        w.finish().map_err(enc_err)?;
    }
    Ok(out)
}

/// A decoded image.
pub struct Decoded {
    /// Packed RGB8.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Text of the receipt chunk, if the file is a PNG that has one.
    pub text: Option<String>,
}

/// Largest accepted image side (a receipt is 256; attacked copies may be resized).
const MAX_SIDE: u32 = 4096;

/// Most the decoder may allocate: the largest accepted image in the widest
/// pixel format (16-bit RGBA).
const MAX_DECODE_BYTES: u64 = MAX_SIDE as u64 * MAX_SIDE as u64 * 8;

/// Decodes PNG or JPEG bytes.
pub fn decode(bytes: &[u8]) -> Result<Decoded, ReceiptError> {
    let text = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_text(bytes)?
    } else {
        None
    };
    // The side limits are checked against the header, before any pixel
    // buffer exists: a small file declaring a huge image (a decompression
    // bomb) is refused without allocating for it.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ReceiptError::Decode {
            reason: "undecodable_image",
            detail: e.to_string(),
        })?;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ReceiptError::Decode {
            reason: "bad_image_size",
            detail: format!("{e} (accepted: 64..={MAX_SIDE} per side)"),
        },
        _ => ReceiptError::Decode {
            reason: "undecodable_image",
            detail: e.to_string(),
        },
    })?;
    if img.width() > MAX_SIDE || img.height() > MAX_SIDE || img.width() < 64 || img.height() < 64 {
        return Err(ReceiptError::Decode {
            reason: "bad_image_size",
            detail: format!(
                "{}x{} (accepted: 64..={MAX_SIDE} per side)",
                img.width(),
                img.height()
            ),
        });
    }
    let rgb = img.to_rgb8();
    Ok(Decoded {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
        text,
    })
}

fn png_text(bytes: &[u8]) -> Result<Option<String>, ReceiptError> {
    let dec = png::Decoder::new(Cursor::new(bytes));
    let reader = dec.read_info().map_err(|e| ReceiptError::Decode {
        reason: "undecodable_image",
        detail: e.to_string(),
    })?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == TEXT_KEYWORD {
            let text = chunk.get_text().map_err(|e| ReceiptError::Decode {
                reason: "bad_text_chunk",
                detail: e.to_string(),
            })?;
            return Ok(Some(text));
        }
    }
    for chunk in &info.uncompressed_latin1_text {
        if chunk.keyword == TEXT_KEYWORD {
            return Ok(Some(chunk.text.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-bit grayscale PNG `side`×`side` whose pixel data stops after a
    /// few rows: tiny, yet it declares a huge image.
    fn truncated_png(side: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut w = enc.write_header().unwrap();
        let row = (side as usize).div_ceil(8);
        let mut stream = w.stream_writer().unwrap();
        std::io::Write::write_all(&mut stream, &vec![0u8; (row + 1) * 4]).unwrap();
        drop(stream);
        drop(w);
        out
    }

    /// A bomb is refused from its header, before the decoder allocates the
    /// image (found by the receipt_image fuzz target: 20000×20000 1-bit
    /// grayscale decoded into 400 MB before the size check refused it).
    #[test]
    fn a_huge_declared_image_is_refused_before_decoding() {
        let bomb = truncated_png(20_000);
        assert!(bomb.len() < 1024, "{} bytes", bomb.len());
        match decode(&bomb) {
            Err(ReceiptError::Decode { reason, detail }) => {
                // Decoding first would fail on the missing rows instead.
                assert_eq!(reason, "bad_image_size", "{detail}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a 20000x20000 image was accepted"),
        }
        // The same file at an accepted size fails on its missing rows.
        let small = truncated_png(256);
        match decode(&small) {
            Err(ReceiptError::Decode { reason, .. }) => assert_eq!(reason, "undecodable_image"),
            other => panic!("{:?}", other.map(|d| d.width)),
        }
    }
}
