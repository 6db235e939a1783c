//! Geometric synchronisation: finds the shift and scale that best realign an
//! attacked image with the receipt grid, scored by the keyed pilot pairs.
//!
//! A crop moves the block grid; without realignment every block is read at the
//! wrong place. The search maps output pixel (x, y) to source position
//! `(p − 128)·s + 128 + t` (in 256-pixel units; other image sizes are scaled
//! to 256 first), tries the identity, and unless the pilots are strong there,
//! scans scales 0.9375–1.0667 (crops up to 16 px, whether padded or rescaled
//! back) and shifts ±16 px on a 2-px grid, then refines the best four to
//! 1 px and 0.8 % of scale. The image is resampled once per scale (shifts are
//! index offsets) and only the 256 pilot blocks are evaluated per candidate,
//! so the ~2,600-candidate scan costs tens of milliseconds. Pilots and payload use disjoint pairs, so the search does not bias
//! the payload's bit error rate.
use super::carrier::SIZE;
use super::watermark::{self, Layout, Role};

const LL: usize = SIZE / 2;
/// Pilot correlation above which the identity alignment is accepted outright.
const ACCEPT_IDENTITY: f32 = 0.8;
const SCALES: [f32; 9] = [
    0.9375, 0.953, 0.969, 0.984, 1.0, 1.016, 1.032, 1.048, 1.0667,
];
const MAX_SHIFT: i32 = 16;
/// Scan results refined and handed on for full extraction.
const TOP_K: usize = 6;

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
        self.sample_at(a, x as f32, y as f32)
    }

    /// Bilinear sample at output position (x, y), which may lie outside the
    /// 256×256 frame (edges are clamped).
    fn sample_at(&self, a: &Alignment, x: f32, y: f32) -> f32 {
        let (fx, fy) = (
            self.width as f32 / SIZE as f32,
            self.height as f32 / SIZE as f32,
        );
        let sx = ((x + 0.5 - 128.0) * a.scale + 128.0 + a.dx) * fx - 0.5;
        let sy = ((y + 0.5 - 128.0) * a.scale + 128.0 + a.dy) * fy - 0.5;
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

    /// Per LL block (row-major, 32×32): whether all its pixels come from
    /// inside the source image under `a` (false = cropped away, clamped).
    pub fn blocks_inside(&self, a: &Alignment) -> Vec<bool> {
        let (fx, fy) = (
            self.width as f32 / SIZE as f32,
            self.height as f32 / SIZE as f32,
        );
        let src = |p: f32, t: f32, f: f32| ((p + 0.5 - 128.0) * a.scale + 128.0 + t) * f - 0.5;
        let (w, h) = (self.width as f32 - 1.0, self.height as f32 - 1.0);
        let grid = SIZE / 8;
        (0..grid * grid)
            .map(|b| {
                let (x0, y0) = ((b % grid * 8) as f32, (b / grid * 8) as f32);
                let (sx0, sx1) = (src(x0, a.dx, fx), src(x0 + 7.0, a.dx, fx));
                let (sy0, sy1) = (src(y0, a.dy, fy), src(y0 + 7.0, a.dy, fy));
                sx0 >= -0.5 && sy0 >= -0.5 && sx1 <= w + 0.5 && sy1 <= h + 0.5
            })
            .collect()
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

/// The plane pre-warped at one scale over the 256×256 frame plus a margin of
/// MAX_SHIFT on every side, so that every integer shift of the scan is an
/// index offset instead of a fresh bilinear resampling.
struct Prewarped {
    data: Vec<f32>,
}

const PAD: usize = MAX_SHIFT as usize;
const EXT: usize = SIZE + 2 * PAD;

impl Prewarped {
    fn new(plane: &Plane<'_>, scale: f32) -> Self {
        let a = Alignment {
            dx: 0.0,
            dy: 0.0,
            scale,
        };
        let mut data = Vec::with_capacity(EXT * EXT);
        for y in 0..EXT {
            for x in 0..EXT {
                data.push(plane.sample_at(&a, x as f32 - PAD as f32, y as f32 - PAD as f32));
            }
        }
        Self { data }
    }

    /// Pilot score at integer shift (dx, dy) of the pre-warped frame; `ll`
    /// is scratch space (only pilot blocks are written and read).
    fn score(
        &self,
        layout: &Layout,
        pilot_pairs: &[usize],
        pilot_blocks: &[u16],
        (dx, dy): (i32, i32),
        ll: &mut [f32],
    ) -> f32 {
        let grid = LL / 4;
        let (ox, oy) = ((PAD as i32 + dx) as usize, (PAD as i32 + dy) as usize);
        for &b in pilot_blocks {
            let (bi, bj) = (b as usize / grid, b as usize % grid);
            for i in bi * 4..bi * 4 + 4 {
                let r0 = &self.data[(oy + 2 * i) * EXT + ox..];
                let r1 = &self.data[(oy + 2 * i + 1) * EXT + ox..];
                for j in bj * 4..bj * 4 + 4 {
                    ll[i * LL + j] = 0.5 * (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]);
                }
            }
        }
        watermark::pilot_score_fast(ll, layout, pilot_pairs)
    }
}

/// Candidate alignments worth a full extraction, best pilot score first:
/// the identity alone when its pilots are strong, else the refined best few
/// of the scale × shift scan (which includes the identity). The caller picks
/// among them (see `watermark_check`).
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
    let pilot_pairs: Vec<usize> = (0..layout.roles.len())
        .filter(|k| layout.roles[*k] == Role::Pilot)
        .collect();
    let mut scan: Vec<(Alignment, f32)> = vec![(Alignment::IDENTITY, f32::INFINITY)];
    let mut ll = vec![0.0f32; LL * LL];
    for &scale in &SCALES {
        let pre = Prewarped::new(plane, scale);
        for dy in (-MAX_SHIFT..=MAX_SHIFT).step_by(2) {
            for dx in (-MAX_SHIFT..=MAX_SHIFT).step_by(2) {
                // A shift d in the pre-warped frame is a source shift s·d.
                let a = Alignment {
                    dx: scale * dx as f32,
                    dy: scale * dy as f32,
                    scale,
                };
                scan.push((
                    a,
                    pre.score(layout, &pilot_pairs, &pilot_blocks, (dx, dy), &mut ll),
                ));
            }
        }
    }
    scan.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out: Vec<(Alignment, f32)> = Vec::with_capacity(TOP_K);
    // The scan ranked by the cheap score (identity always kept); refine the
    // best with the exact one.
    for (centre, _) in scan.into_iter().take(TOP_K) {
        let mut best = (centre, f32::NEG_INFINITY);
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
