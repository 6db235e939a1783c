//! Geometric synchronisation of a copy with the card grid: which rotation,
//! scale, mirror and offset turn the copy back into card coordinates.
//!
//! Rotation and scale come from the template peaks (`template`), with the
//! identity always tried too (a copy downscaled so far that the template is
//! gone, e.g. to 64 px and back, is usually not rotated). For each
//! hypothesis, plain and mirrored, the copy is resampled onto a canvas in
//! card pixels, its chip statistics are folded onto one tile (`mark`) and
//! the keyed pilots pick the translation (all 128×128 tile offsets). Canvas
//! pixels that come from outside the copy (cropped away, rotated-in
//! corners) are left out, so a crop costs copies, not errors.
use super::mark::{self, Layout, Reading, TILE};
use super::template;

/// Pilot correlation at which a candidate is accepted without trying the
/// rest. Noise reaches ~0.45 at the best of the 16,384 offsets.
const ACCEPT: f32 = 0.6;
/// Template hypotheses tried besides the identity.
const HYPOTHESES: usize = 2;
/// Longest side analysed; larger copies are box-downscaled first.
const MAX_SIDE: usize = 400;

/// The geometric correction applied to read a copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction {
    /// Rotation of the copy against the card, degrees.
    pub rotation: f32,
    /// Magnification of the copy (copy pixels per card pixel).
    pub scale: f32,
    /// The copy is mirrored left-right.
    pub mirrored: bool,
    /// Where the card's top-left corner lies in the copy, copy pixels
    /// (modulo one tile of the card).
    pub offset: (f32, f32),
}

impl Correction {
    /// No change.
    pub const IDENTITY: Correction = Correction {
        rotation: 0.0,
        scale: 1.0,
        mirrored: false,
        offset: (0.0, 0.0),
    };
}

/// A candidate reading with its correction. Each hypothesis gives nine (the
/// pilot peak and its eight neighbours one pixel off).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// How the copy was mapped back.
    pub correction: Correction,
    /// What the chips said there.
    pub reading: Reading,
}

/// A copy's luma plane.
pub struct Copy<'a> {
    /// Row-major samples.
    pub luma: &'a [f32],
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
}

/// Integer box downscale so that the longer side is at most [`MAX_SIDE`].
fn shrink(c: &Copy<'_>) -> (Vec<f32>, usize, usize, usize) {
    let f = c.width.max(c.height).div_ceil(MAX_SIDE).max(1);
    if f == 1 {
        return (c.luma.to_vec(), c.width, c.height, 1);
    }
    let (w, h) = (c.width / f, c.height / f);
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for dy in 0..f {
                let row = (y * f + dy) * c.width + x * f;
                s += c.luma[row..row + f].iter().sum::<f32>();
            }
            out[y * w + x] = s / (f * f) as f32;
        }
    }
    (out, w, h, f)
}

/// Resamples the copy onto a canvas in card pixels under (rotation, scale,
/// mirror); returns the canvas, its validity mask and size, and the map
/// from canvas to copy coordinates.
struct Canvas {
    data: Vec<f32>,
    valid: Vec<bool>,
    width: usize,
    height: usize,
    // p = scale·R·M·(q − cc) + ci
    cc: (f32, f32),
    ci: (f32, f32),
}

fn warp(
    luma: &[f32],
    width: usize,
    height: usize,
    rotation: f32,
    scale: f32,
    mirrored: bool,
) -> Canvas {
    let (sn, cs) = rotation.to_radians().sin_cos();
    let wc = ((width as f32 * cs.abs() + height as f32 * sn.abs()) / scale).ceil() as usize;
    let hc = ((width as f32 * sn.abs() + height as f32 * cs.abs()) / scale).ceil() as usize;
    let cc = (wc as f32 / 2.0, hc as f32 / 2.0);
    let ci = (width as f32 / 2.0, height as f32 / 2.0);
    let mut data = vec![0.0f32; wc * hc];
    let mut valid = vec![false; wc * hc];
    let m = if mirrored { -1.0 } else { 1.0 };
    for y in 0..hc {
        let dy = y as f32 + 0.5 - cc.1;
        for x in 0..wc {
            let dx = m * (x as f32 + 0.5 - cc.0);
            let px = scale * (cs * dx - sn * dy) + ci.0 - 0.5;
            let py = scale * (sn * dx + cs * dy) + ci.1 - 0.5;
            if px < 0.0 || py < 0.0 || px > (width - 1) as f32 || py > (height - 1) as f32 {
                continue;
            }
            let (x0, y0) = (px as usize, py as usize);
            let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
            let (ax, ay) = (px - x0 as f32, py - y0 as f32);
            let v = luma[y0 * width + x0] * (1.0 - ax) * (1.0 - ay)
                + luma[y0 * width + x1] * ax * (1.0 - ay)
                + luma[y1 * width + x0] * (1.0 - ax) * ay
                + luma[y1 * width + x1] * ax * ay;
            data[y * wc + x] = v;
            valid[y * wc + x] = true;
        }
    }
    Canvas {
        data,
        valid,
        width: wc,
        height: hc,
        cc,
        ci,
    }
}

/// One (rotation, scale, mirror) view of a copy: its chip statistics
/// folded onto one tile and the canvas geometry to map a reading back.
struct View {
    rotation: f32,
    scale: f32,
    mirrored: bool,
    folded: mark::Folded,
    cc: (f32, f32),
    ci: (f32, f32),
}

/// The key-independent part of reading a copy: its (shrunk) luma, the
/// template's rotation/scale hypotheses and, per hypothesis and mirror, the
/// folded chip statistics. Only the keyed pilot search and decoding remain
/// per key ([`Prepared::candidates`]), so one copy can be checked against
/// many keys at the cost of one geometric search.
pub struct Prepared {
    luma: Vec<f32>,
    width: usize,
    height: usize,
    f: usize,
    /// Hypotheses in the order they are tried: a clear template peak away
    /// from the identity first, then the identity, then the rest.
    hyps: Vec<(f32, f32)>,
    /// Index of the identity in `hyps`.
    identity: usize,
    views: Vec<std::cell::OnceCell<View>>,
}

/// Template peak strength (relative to the searched annulus' mean) above
/// which its rotation/scale is tried before the identity. A card copy shows
/// 3 and more; a copy whose template is gone (64-px downscale) about 1.
const CLEAR_TEMPLATE: f32 = 2.0;

impl Prepared {
    /// Shrinks the copy if needed and reads the template.
    pub fn new(copy: &Copy<'_>) -> Self {
        let (luma, width, height, f) = shrink(copy);
        let mut hyps = vec![(0.0, 1.0)];
        for (i, e) in template::estimate(&luma, width, height, HYPOTHESES)
            .into_iter()
            .enumerate()
        {
            if e.rotation.abs() < 0.15 && (e.scale - 1.0).abs() < 0.004 {
                continue;
            }
            // A copy rotated by 1.5° still shows pilots well above ACCEPT at
            // the identity, but reads badly there: a clear template peak
            // goes first.
            if i == 0 && e.strength >= CLEAR_TEMPLATE {
                hyps.insert(0, (e.rotation, e.scale));
            } else {
                hyps.push((e.rotation, e.scale));
            }
        }
        let identity = hyps.iter().position(|h| *h == (0.0, 1.0)).unwrap_or(0);
        let views = (0..2 * hyps.len())
            .map(|_| std::cell::OnceCell::new())
            .collect();
        Self {
            luma,
            width,
            height,
            f,
            hyps,
            identity,
            views,
        }
    }

    /// View `i`: hypothesis `i / 2`, mirrored if `i` is odd; warped and
    /// folded on first use.
    fn view(&self, i: usize) -> &View {
        self.views[i].get_or_init(|| {
            let (rotation, scale) = self.hyps[i / 2];
            let mirrored = i % 2 == 1;
            let canvas = warp(
                &self.luma,
                self.width,
                self.height,
                rotation,
                scale,
                mirrored,
            );
            View {
                rotation,
                scale,
                mirrored,
                folded: mark::fold(&canvas.data, &canvas.valid, canvas.width, canvas.height),
                cc: canvas.cc,
                ci: canvas.ci,
            }
        })
    }

    /// Reads the copy under `layout` (a key) for every view worth trying,
    /// stopping at the first whose pilots are strong; returns the
    /// candidates (at least one), the one with the strongest pilots first.
    pub fn candidates(&self, layout: &Layout) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        // The template's estimate of a copy that is not rotated can be a few
        // tenths of a degree off and still show strong pilots: when it goes
        // first, the identity is read too before stopping, and the claims
        // (or the pilots) choose.
        let identity = 2 * self.identity;
        let mut order: Vec<usize> = (0..self.views.len()).collect();
        if identity != 0 {
            order.retain(|i| *i != identity);
            order.insert(1, identity);
        }
        let mut identity_read = false;
        for i in order {
            let view = self.view(i);
            let readings = view.folded.read_around(layout);
            let strong = readings[0].pilot_nc >= ACCEPT;
            identity_read |= i == identity;
            for reading in readings {
                let correction = correction_of(view, &reading, self.f);
                out.push(Candidate {
                    correction,
                    reading,
                });
            }
            if strong && identity_read {
                break;
            }
        }
        out.sort_by(|a, b| b.reading.pilot_nc.total_cmp(&a.reading.pilot_nc));
        out
    }
}

/// Reads the copy under every hypothesis worth trying; returns the
/// candidates (at least one), the one with the strongest pilots first.
pub fn candidates(copy: &Copy<'_>, layout: &Layout) -> Vec<Candidate> {
    Prepared::new(copy).candidates(layout)
}

fn correction_of(view: &View, reading: &Reading, f: usize) -> Correction {
    // Card origin on the canvas: the tile offset's representative within
    // (−TILE/2, TILE/2] of the canvas origin.
    let rep = |o: usize| {
        let o = o as f32;
        if o > TILE as f32 / 2.0 {
            o - TILE as f32
        } else {
            o
        }
    };
    let (qx, qy) = (rep(reading.offset.0), rep(reading.offset.1));
    let (sn, cs) = view.rotation.to_radians().sin_cos();
    let m = if view.mirrored { -1.0 } else { 1.0 };
    let dx = m * (qx - view.cc.0);
    let dy = qy - view.cc.1;
    let px = view.scale * (cs * dx - sn * dy) + view.ci.0;
    let py = view.scale * (sn * dx + cs * dy) + view.ci.1;
    Correction {
        rotation: view.rotation,
        scale: view.scale * f as f32,
        mirrored: view.mirrored,
        offset: (px * f as f32, py * f as f32),
    }
}
