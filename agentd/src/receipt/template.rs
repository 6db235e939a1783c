//! The synchronisation template: four plane waves in the card background
//! whose peaks in the DFT magnitude reveal how a copy was rotated and scaled.
//!
//! The waves have one period ([`PERIOD`] card pixels) at 22.5°, 67.5°,
//! 112.5° and 157.5°. A rotation by θ turns the four peaks by θ, a scale s
//! moves them to radius 1/(s·PERIOD), and a crop or a shift leaves the
//! magnitude where it was (it only widens the peaks). The set is symmetric
//! under a mirror and under 45° turns, so the estimate is θ within ±22.5°
//! and says nothing about a mirror: the keyed search in `locate` decides
//! that. The template is part of the card's look, not of the keyed mark,
//! so it costs no PSNR and carries no secret.
use rustfft::{num_complex::Complex, FftPlanner};

/// Template period in card pixels (1/256 of the card side).
pub const PERIOD: f32 = 6.4;
/// Wave directions, degrees.
pub const ANGLES: [f32; 4] = [22.5, 67.5, 112.5, 157.5];

/// Rotation searched, ± degrees.
const MAX_ROTATION: f32 = 8.0;
const ROTATION_STEP: f32 = 0.1;
/// Scales searched (magnification of the copy against the card).
const MIN_SCALE: f32 = 0.75;
const MAX_SCALE: f32 = 1.35;
const SCALE_STEP: f32 = 0.003;

/// Template value at card position (x, y) in card pixels: a sum of the four
/// unit-amplitude waves (range about ±4).
pub fn value(x: f32, y: f32) -> f32 {
    let k = std::f32::consts::TAU / PERIOD;
    ANGLES
        .iter()
        .map(|a| {
            let (s, c) = a.to_radians().sin_cos();
            (k * (c * x + s * y)).sin()
        })
        .sum()
}

/// One rotation/scale hypothesis read from the spectrum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Rotation of the copy against the card, degrees (counter-clockwise in
    /// image coordinates, y down).
    pub rotation: f32,
    /// Magnification of the copy (pixels of the copy per card pixel).
    pub scale: f32,
    /// Summed peak magnitude relative to the spectrum's mean magnitude in
    /// the searched annulus (≈1 when there is no template).
    pub strength: f32,
}

/// Estimates rotation and scale of a luma plane (`width`×`height`, any size
/// up to 512 per side) from the template peaks. Returns up to `n` distinct
/// hypotheses, strongest first.
pub fn estimate(luma: &[f32], width: usize, height: usize, n: usize) -> Vec<Estimate> {
    // Zero-padding to twice the size samples the (Hann-widened) peaks finely
    // enough for bilinear reads to follow them smoothly.
    let size = 2 * width.max(height).next_power_of_two().max(64);
    let mag = magnitude(luma, width, height, size);
    let at = |fx: f32, fy: f32| -> f32 {
        // Bilinear read of the magnitude at frequency (fx, fy) in bins; the
        // spectrum of a real image is symmetric, negative bins wrap.
        let (x0, y0) = (fx.floor(), fy.floor());
        let (ax, ay) = (fx - x0, fy - y0);
        let idx = |x: f32, y: f32| {
            let xi = (x as isize).rem_euclid(size as isize) as usize;
            let yi = (y as isize).rem_euclid(size as isize) as usize;
            mag[yi * size + xi]
        };
        idx(x0, y0) * (1.0 - ax) * (1.0 - ay)
            + idx(x0 + 1.0, y0) * ax * (1.0 - ay)
            + idx(x0, y0 + 1.0) * (1.0 - ax) * ay
            + idx(x0 + 1.0, y0 + 1.0) * ax * ay
    };
    let f0 = size as f32 / PERIOD;
    let n_rot = (2.0 * MAX_ROTATION / ROTATION_STEP).round() as usize + 1;
    let n_scale = ((MAX_SCALE - MIN_SCALE) / SCALE_STEP).round() as usize + 1;
    let mut grid = vec![0.0f32; n_rot * n_scale];
    for si in 0..n_scale {
        let s = MIN_SCALE + si as f32 * SCALE_STEP;
        let r = f0 / s;
        for ri in 0..n_rot {
            let th = -MAX_ROTATION + ri as f32 * ROTATION_STEP;
            grid[si * n_rot + ri] = ANGLES
                .iter()
                .map(|a| {
                    let (sn, cs) = (a + th).to_radians().sin_cos();
                    at(r * cs, r * sn)
                })
                .sum();
        }
    }
    let mean = grid.iter().sum::<f32>() / grid.len() as f32;
    // Local maxima, strongest first, at least 0.6° or 3 % of scale apart.
    let mut order: Vec<usize> = (0..grid.len()).collect();
    order.sort_by(|a, b| grid[*b].total_cmp(&grid[*a]));
    let mut out: Vec<Estimate> = Vec::new();
    for i in order {
        if out.len() == n {
            break;
        }
        let e = Estimate {
            rotation: -MAX_ROTATION + (i % n_rot) as f32 * ROTATION_STEP,
            scale: MIN_SCALE + (i / n_rot) as f32 * SCALE_STEP,
            strength: grid[i] / mean.max(f32::MIN_POSITIVE),
        };
        let distinct = out.iter().all(|o| {
            (o.rotation - e.rotation).abs() > 0.6 || (o.scale / e.scale - 1.0).abs() > 0.03
        });
        if distinct {
            out.push(e);
        }
    }
    out
}

/// DFT magnitude of the windowed, mean-free plane zero-padded to
/// `size`×`size`.
fn magnitude(luma: &[f32], width: usize, height: usize, size: usize) -> Vec<f32> {
    let mean = luma.iter().sum::<f32>() / luma.len() as f32;
    let hann = |i: usize, n: usize| {
        let t = (i as f32 + 0.5) / n as f32;
        0.5 - 0.5 * (std::f32::consts::TAU * t).cos()
    };
    let wx: Vec<f32> = (0..width).map(|i| hann(i, width)).collect();
    let wy: Vec<f32> = (0..height).map(|i| hann(i, height)).collect();
    let mut buf = vec![Complex::new(0.0f32, 0.0); size * size];
    for y in 0..height {
        for x in 0..width {
            buf[y * size + x].re = (luma[y * width + x] - mean) * wx[x] * wy[y];
        }
    }
    let fft = FftPlanner::new().plan_fft_forward(size);
    // Rows, then columns (through a transpose).
    fft.process(&mut buf);
    let mut t = vec![Complex::new(0.0f32, 0.0); size * size];
    for y in 0..size {
        for x in 0..size {
            t[x * size + y] = buf[y * size + x];
        }
    }
    fft.process(&mut t);
    // t is transposed: t[fx * size + fy].
    (0..size * size)
        .map(|i| {
            let (fy, fx) = (i / size, i % size);
            t[fx * size + fy].norm()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card-like plane: template plus a bright rectangle, rotated and
    /// scaled by bilinear resampling.
    fn plane(rot: f32, scale: f32, n: usize) -> Vec<f32> {
        let (s, c) = rot.to_radians().sin_cos();
        let mut out = vec![0.0; n * n];
        for y in 0..n {
            for x in 0..n {
                let (px, py) = (x as f32 - n as f32 / 2.0, y as f32 - n as f32 / 2.0);
                // Inverse map: copy pixel → card pixel.
                let qx = (c * px + s * py) / scale + 128.0;
                let qy = (-s * px + c * py) / scale + 128.0;
                let rect = if (60.0..190.0).contains(&qx) && (90.0..150.0).contains(&qy) {
                    60.0
                } else {
                    0.0
                };
                out[y * n + x] = 120.0 + 6.0 * value(qx, qy) + rect;
            }
        }
        out
    }

    #[test]
    fn finds_rotation_and_scale() {
        for (rot, scale) in [(0.0, 1.0), (3.3, 1.0), (-4.5, 0.9), (1.0, 1.12)] {
            let p = plane(rot, scale, 256);
            let e = estimate(&p, 256, 256, 3)[0];
            assert!((e.rotation - rot).abs() <= 0.15, "{rot} {scale}: {e:?}");
            assert!(
                (e.scale / scale - 1.0).abs() <= 0.01,
                "{rot} {scale}: {e:?}"
            );
            assert!(e.strength > 3.0, "{e:?}");
        }
    }
}
