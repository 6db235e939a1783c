//! Geometric synchronisation: finds the shift and scale that best realign an
//! attacked image with the receipt grid, scored by the keyed pilot pairs.
//!
//! A crop moves the block grid; without realignment every block is read at the
//! wrong place. The search maps output pixel (x, y) to source position
//! `(p − 128)·s + 128 + t` (in 256-pixel units; other image sizes are scaled
//! to 256 first), tries the identity, and only if the pilots are weak there,
//! scans scales 0.9375–1.0667 (crops up to 16 px, whether padded or rescaled
//! back) and shifts ±16 px on a 2-px grid, then refines to 1 px. Only the 128
//! pilot blocks are evaluated per candidate, so the scan stays well under a
//! second. Pilots and payload use disjoint pairs, so the search does not bias
//! the payload's bit error rate.
use super::carrier::SIZE;
use super::watermark::{self, Layout, Role};

const LL: usize = SIZE / 2;
/// Pilot correlation above which the identity alignment is accepted outright.
const ACCEPT_IDENTITY: f32 = 0.45;
const SCALES: [f32; 9] = [
    0.9375, 0.953, 0.969, 0.984, 1.0, 1.016, 1.032, 1.048, 1.0667,
];
const MAX_SHIFT: i32 = 16;
/// Scan results refined and handed on for full extraction.
const TOP_K: usize = 4;

/// A luma plane of any size.
pub struct Plane<'a> {
    /// Row-major samples.
    pub data: &'a [f32],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// An alignment: output p ↦ source `(p − 128)·scale + 128 + shift`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// Horizontal shift, pixels.
    pub dx: f32,
    /// Vertical shift, pixels.
    pub dy: f32,
    /// Scale factor.
    pub scale: f32,
}

impl Alignment {
    /// No change.
    pub const IDENTITY: Alignment = Alignment {
        dx: 0.0,
        dy: 0.0,
        scale: 1.0,
    };
}

impl Plane<'_> {
    fn at(&self, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[y * self.width + x]
    }

    /// Bilinear sample at output pixel (x, y) under `a`.
    fn sample(&self, a: &Alignment, x: usize, y: usize) -> f32 {
        let (fx, fy) = (
            self.width as f32 / SIZE as f32,
            self.height as f32 / SIZE as f32,
        );
        let sx = ((x as f32 + 0.5 - 128.0) * a.scale + 128.0 + a.dx) * fx - 0.5;
        let sy = ((y as f32 + 0.5 - 128.0) * a.scale + 128.0 + a.dy) * fy - 0.5;
        if self.width == SIZE
            && self.height == SIZE
            && a.scale == 1.0
            && a.dx.fract() == 0.0
            && a.dy.fract() == 0.0
        {
            return self.at(sx.round() as isize, sy.round() as isize);
        }
        let (x0, y0) = (sx.floor(), sy.floor());
        let (wx, wy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let top = self.at(x0, y0) * (1.0 - wx) + self.at(x0 + 1, y0) * wx;
        let bot = self.at(x0, y0 + 1) * (1.0 - wx) + self.at(x0 + 1, y0 + 1) * wx;
        top * (1.0 - wy) + bot * wy
    }

    /// The whole 256×256 plane realigned by `a`.
    pub fn warp(&self, a: &Alignment) -> Vec<f32> {
        let mut out = Vec::with_capacity(SIZE * SIZE);
        for y in 0..SIZE {
            for x in 0..SIZE {
                out.push(self.sample(a, x, y));
            }
        }
        out
    }

    /// LL coefficients of the listed blocks only, realigned by `a`.
    fn ll_of_blocks(&self, a: &Alignment, blocks: &[u16]) -> Vec<f32> {
        let mut ll = vec![0.0f32; LL * LL];
        let grid = LL / 4;
        for &b in blocks {
            let (bi, bj) = (b as usize / grid, b as usize % grid);
            for i in bi * 4..bi * 4 + 4 {
                for j in bj * 4..bj * 4 + 4 {
                    ll[i * LL + j] = 0.5
                        * (self.sample(a, 2 * j, 2 * i)
                            + self.sample(a, 2 * j + 1, 2 * i)
                            + self.sample(a, 2 * j, 2 * i + 1)
                            + self.sample(a, 2 * j + 1, 2 * i + 1));
                }
            }
        }
        ll
    }
}

fn score(plane: &Plane<'_>, layout: &Layout, pilot_blocks: &[u16], a: &Alignment) -> f32 {
    watermark::pilot_score(&plane.ll_of_blocks(a, pilot_blocks), layout)
}

/// Candidate alignments worth a full extraction, best pilot score first:
/// the identity when its pilots are strong, else the refined best few of a
/// scale × shift scan. The caller picks among them (see `watermark_check`).
pub fn candidates(plane: &Plane<'_>, layout: &Layout) -> Vec<(Alignment, f32)> {
    let pilot_blocks: Vec<u16> = layout
        .pairs
        .iter()
        .zip(&layout.roles)
        .filter(|(_, r)| **r == Role::Pilot)
        .flat_map(|(p, _)| [p.0, p.1])
        .collect();
    let id = score(plane, layout, &pilot_blocks, &Alignment::IDENTITY);
    if id >= ACCEPT_IDENTITY {
        return vec![(Alignment::IDENTITY, id)];
    }
    let mut scan: Vec<(Alignment, f32)> = vec![(Alignment::IDENTITY, id)];
    for &scale in &SCALES {
        for dy in (-MAX_SHIFT..=MAX_SHIFT).step_by(2) {
            for dx in (-MAX_SHIFT..=MAX_SHIFT).step_by(2) {
                let a = Alignment {
                    dx: dx as f32,
                    dy: dy as f32,
                    scale,
                };
                scan.push((a, score(plane, layout, &pilot_blocks, &a)));
            }
        }
    }
    scan.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out = Vec::with_capacity(TOP_K);
    for (centre, s0) in scan.into_iter().take(TOP_K) {
        let mut best = (centre, s0);
        for ds in [-0.008f32, 0.0, 0.008] {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let a = Alignment {
                        dx: centre.dx + dx as f32,
                        dy: centre.dy + dy as f32,
                        scale: centre.scale + ds,
                    };
                    let s = score(plane, layout, &pilot_blocks, &a);
                    if s > best.1 {
                        best = (a, s);
                    }
                }
            }
        }
        out.push(best);
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}
