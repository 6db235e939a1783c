//! The keyed card watermark (v2): a tile of 8×16 units, 16×8 card pixels
//! each, repeated over the card (2×2 tiles on a 256-pixel card), so any
//! region of 128×128 card pixels — a corner holding half the card, a crop at
//! any offset — still holds every unit at least once, and the full card
//! holds each four times.
//!
//! A unit carries two signs (two chips) in two orthogonal horizontal
//! patterns, both with one period across the unit: the odd doublet
//! `sin(2πx/16)·sin(πy/8)`, read as left half minus right half, and the even
//! one `cos(2πx/16)·sin(πy/8)`, read as outer quarters minus middle half.
//! By symmetry neither read sees the other pattern, and each unit reads only
//! its own 16×8 pixels, so neighbours do not interfere; the 16-px period
//! survives a downscale to a quarter. Horizontal only, because the card's
//! text runs in rows: a row of text darkens all boxes of a unit alike and
//! cancels out. The differences also cancel brightness offsets, and a
//! brightness gain changes no sign.
//!
//! Of the 256 chips of a tile, 116 are keyed pilots (known signs: they find
//! the translation and the mirror) and 140 carry the payload's rate-1/2
//! convolutional code (`ecc`), one coded bit each; every copy votes, softly
//! clipped so a glyph edge under a chip cannot outvote the other copies. The
//! key shuffles the roles and flips each chip's polarity.
//!
//! Embedding is informed: every chip instance on the card is pushed until
//! its own statistic shows the wanted sign with a margin, given the card
//! underneath (text, template), so each copy carries its bit by itself.
use super::ecc::{self, CODED_BITS};
use super::keys::KeyStream;

/// Unit height, card pixels.
pub const CHIP: usize = 8;
/// Unit width, card pixels.
pub const PAIR_W: usize = 2 * CHIP;
/// Tile side, card pixels.
pub const TILE: usize = 128;
/// Units per tile row.
pub const COLS: usize = TILE / PAIR_W;
/// Unit rows per tile.
pub const ROWS: usize = TILE / CHIP;
/// Chips per tile: two per unit.
pub const CHIPS: usize = 2 * COLS * ROWS;
/// Pilot chips per tile.
pub const PILOTS: usize = CHIPS - CODED_BITS;

/// Base bump amplitude (luma units).
const BASE: f32 = 3.0;
/// Largest bump amplitude. A chip the card opposes by more than this can
/// carry is given up: a few such chips on glyph edges would otherwise spend
/// the whole PSNR budget, and the mark then had to be scaled down on every
/// chip (that lost half-card crops, whose chips have one copy each).
const MAX_AMP: f32 = 7.0;
/// Wanted statistic margin (luma units).
const MARGIN: f32 = 3.5;
const PASSES: usize = 3;
/// Statistics are softly clipped (CLIP·tanh(s/CLIP)) before they are summed:
/// a pair on a glyph edge then weighs little more than a pair that carries
/// its sign with twice the margin, while a larger statistic still counts
/// for more (which keeps the best offset sharp).
const CLIP: f32 = 6.0;

/// What one chip carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A known sign (+1 after polarity).
    Pilot,
    /// Coded bit `i` of the convolutionally coded payload.
    Data(u8),
}

/// The keyed arrangement of the chips of a tile.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Role of chip `2 * (row * COLS + col) + channel`.
    pub roles: Vec<Role>,
    /// Polarity (+1/−1) of each chip.
    pub polarity: Vec<f32>,
    /// Indices of the pilot chips.
    pub pilots: Vec<usize>,
}

impl Layout {
    /// Layout for a watermark key.
    pub fn new(watermark_key: &[u8; 32]) -> Self {
        let mut ks = KeyStream::new(watermark_key, b"card layout v2");
        let mut roles: Vec<Role> = (0..CHIPS)
            .map(|k| {
                if k < PILOTS {
                    Role::Pilot
                } else {
                    Role::Data((k - PILOTS) as u8)
                }
            })
            .collect();
        ks.shuffle(&mut roles);
        let polarity = (0..CHIPS)
            .map(|_| if ks.next_u64() & 1 == 1 { 1.0 } else { -1.0 })
            .collect();
        let pilots = (0..CHIPS).filter(|k| roles[*k] == Role::Pilot).collect();
        Self {
            roles,
            polarity,
            pilots,
        }
    }

    /// Sign (+1/−1) chip `k`'s statistic must show for `coded`.
    pub fn wanted(&self, k: usize, coded: &[bool; CODED_BITS]) -> f32 {
        let bit = match self.roles[k] {
            Role::Pilot => true,
            Role::Data(i) => coded[i as usize],
        };
        if bit {
            self.polarity[k]
        } else {
            -self.polarity[k]
        }
    }
}

/// Summed-area table of a plane (one extra row and column of zeros).
pub struct Integral {
    sums: Vec<f64>,
    width: usize,
}

impl Integral {
    /// Builds the table of `plane` (`width`×`height`).
    pub fn new(plane: &[f32], width: usize, height: usize) -> Self {
        let w1 = width + 1;
        let mut sums = vec![0.0f64; w1 * (height + 1)];
        for y in 0..height {
            let mut row = 0.0f64;
            for x in 0..width {
                row += plane[y * width + x] as f64;
                sums[(y + 1) * w1 + x + 1] = sums[y * w1 + x + 1] + row;
            }
        }
        Self { sums, width }
    }

    /// Mean of the `w`×`CHIP` box with top-left corner (x, y); the box
    /// must lie inside the plane.
    fn box_mean(&self, x: usize, y: usize, w: usize) -> f32 {
        let w1 = self.width + 1;
        let (x1, y1) = (x + w, y + CHIP);
        let s = self.sums[y1 * w1 + x1] - self.sums[y * w1 + x1] - self.sums[y1 * w1 + x]
            + self.sums[y * w1 + x];
        (s / (w * CHIP) as f64) as f32
    }

    /// The two chip statistics of the unit with top-left corner (x, y):
    /// odd (left half − right half) and even (outer quarters − middle half).
    pub fn stats(&self, x: usize, y: usize) -> [f32; 2] {
        let q = CHIP / 2;
        [
            self.box_mean(x, y, CHIP) - self.box_mean(x + CHIP, y, CHIP),
            0.5 * (self.box_mean(x, y, q) + self.box_mean(x + 3 * q, y, q))
                - self.box_mean(x + q, y, CHIP),
        ]
    }
}

/// The two unit patterns (odd, even), unit amplitude.
fn bumps() -> [[f32; PAIR_W * CHIP]; 2] {
    let mut b = [[0.0; PAIR_W * CHIP]; 2];
    for y in 0..CHIP {
        for x in 0..PAIR_W {
            let (s, c) = (std::f32::consts::TAU * (x as f32 + 0.5) / PAIR_W as f32).sin_cos();
            let fy = (std::f32::consts::PI * (y as f32 + 0.5) / CHIP as f32).sin();
            b[0][y * PAIR_W + x] = s * fy;
            b[1][y * PAIR_W + x] = c * fy;
        }
    }
    b
}

/// Each statistic's response to its own pattern of unit amplitude.
fn gains() -> [f32; 2] {
    let b = bumps();
    let mut out = [0.0; 2];
    for (ch, g) in out.iter_mut().enumerate() {
        let integral = Integral::new(&b[ch], PAIR_W, CHIP);
        *g = integral.stats(0, 0)[ch];
    }
    out
}

/// Tile chip index of channel `ch` of the unit whose top-left corner is at
/// card (x, y).
fn chip_at(x: usize, y: usize, ch: usize) -> usize {
    2 * ((y / CHIP % ROWS) * COLS + x / PAIR_W % COLS) + ch
}

/// Lowest PSNR (dB) the mark may cost the card; the delta is scaled down
/// if the informed embedding spent more.
const MIN_PSNR: f64 = 38.3;

/// Computes the mark for a `size`×`size` card luma (`size` a multiple of
/// 16): the luma delta that makes every chip instance show its wanted sign
/// with margin.
pub fn mark(card: &[f32], size: usize, layout: &Layout, payload: u64) -> Vec<f32> {
    let coded = ecc::encode(payload);
    let (nx, ny) = (size / PAIR_W, size / CHIP);
    let b = bumps();
    let gain = gains();
    let origin = |i: usize| (i % nx * PAIR_W, i / nx * CHIP);
    let want: Vec<[f32; 2]> = (0..nx * ny)
        .map(|i| {
            let (x, y) = origin(i);
            [0, 1].map(|ch| layout.wanted(chip_at(x, y, ch), &coded))
        })
        .collect();
    let mut amp = vec![[BASE; 2]; nx * ny];
    let mut delta = vec![0.0f32; size * size];
    for pass in 0..=PASSES {
        delta.iter_mut().for_each(|d| *d = 0.0);
        for i in 0..nx * ny {
            let (ox, oy) = origin(i);
            let (a0, a1) = (amp[i][0] * want[i][0], amp[i][1] * want[i][1]);
            for y in 0..CHIP {
                for x in 0..PAIR_W {
                    let j = y * PAIR_W + x;
                    delta[(oy + y) * size + ox + x] += a0 * b[0][j] + a1 * b[1][j];
                }
            }
        }
        if pass == PASSES {
            break;
        }
        let marked: Vec<f32> = card
            .iter()
            .zip(&delta)
            .map(|(c, d)| (c + d).round().clamp(0.0, 255.0))
            .collect();
        let integral = Integral::new(&marked, size, size);
        for i in 0..nx * ny {
            let (ox, oy) = origin(i);
            let st = integral.stats(ox, oy);
            for ch in 0..2 {
                let s = st[ch] * want[i][ch];
                if s < MARGIN {
                    amp[i][ch] = (amp[i][ch] + (MARGIN - s) / gain[ch]).min(MAX_AMP);
                }
                // A chip the card overwhelms (a glyph edge) stays wrong even
                // at the largest amplitude: spend nothing on it, its clipped
                // vote is outweighed by the other copies.
                if pass == PASSES - 1 && s < -(MAX_AMP * gain[ch]) {
                    amp[i][ch] = 0.0;
                }
            }
        }
    }
    let mse = delta.iter().map(|d| (*d as f64).powi(2)).sum::<f64>() / delta.len() as f64;
    let limit = 255.0f64.powi(2) / 10f64.powf(MIN_PSNR / 10.0) - 1.0 / 12.0;
    if mse > limit {
        let k = (limit / mse).sqrt() as f32;
        delta.iter_mut().for_each(|d| *d *= k);
    }
    delta
}

/// Chip statistics folded onto one tile: `sum[p]` adds the statistic of
/// every position congruent to `p` (mod [`TILE`], both axes) whose boxes lie
/// in valid pixels.
pub struct Folded {
    /// Summed statistics, `TILE`×`TILE` per channel.
    pub sum: [Vec<f32>; 2],
    /// Number of positions summed into each entry.
    pub count: Vec<u32>,
}

/// Statistic beyond which a pair is taken to be card content (a glyph
/// edge), not mark: the mark moves a statistic by at most MAX_AMP × 0.81
/// ≈ 5.7, so beyond 10 the card outweighs it and the pair's sign says
/// nothing about the mark.
const ERASE: f32 = 10.0;

/// Statistic beyond which a pair's vote fades (linearly to nothing at
/// [`ERASE`]). The informed embedding leaves a pair it carried near
/// [`MARGIN`]; one well beyond is mostly card content, and a pair the card
/// opposes more than the mark can carry (given up) reads there with the
/// wrong sign. At full weight those outvoted the single copies of a
/// half-card crop on the header and the large action line.
const PEAK: f32 = 4.5;

/// How much one pair statistic counts: softly clipped, fading beyond
/// [`PEAK`], nothing at all beyond [`ERASE`].
fn influence(s: f32) -> f32 {
    let a = s.abs();
    if a > ERASE {
        0.0
    } else if a > PEAK {
        CLIP * (s / CLIP).tanh() * (ERASE - a) / (ERASE - PEAK)
    } else {
        CLIP * (s / CLIP).tanh()
    }
}

/// Folds the chip statistics of a plane; `valid` marks pixels that came
/// from the copy (not from outside it).
pub fn fold(plane: &[f32], valid: &[bool], width: usize, height: usize) -> Folded {
    let integral = Integral::new(plane, width, height);
    let bad: Vec<f32> = valid.iter().map(|v| if *v { 0.0 } else { 1.0 }).collect();
    let holes = Integral::new(&bad, width, height);
    let mut sum = [vec![0.0f32; TILE * TILE], vec![0.0f32; TILE * TILE]];
    let mut count = vec![0u32; TILE * TILE];
    if width < PAIR_W || height < CHIP {
        return Folded { sum, count };
    }
    for y in 0..=height - CHIP {
        for x in 0..=width - PAIR_W {
            // The whole unit must come from the copy.
            if holes.box_mean(x, y, PAIR_W) > 0.0 {
                continue;
            }
            let p = (y % TILE) * TILE + x % TILE;
            let st = integral.stats(x, y);
            sum[0][p] += influence(st[0]);
            sum[1][p] += influence(st[1]);
            count[p] += 1;
        }
    }
    Folded { sum, count }
}

/// What reading the folded tile at one translation found.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Tile offset (x, y) of chip (0, 0)'s corner.
    pub offset: (usize, usize),
    /// Normalized correlation of the pilot chips with their signs.
    pub pilot_nc: f32,
    /// Evidence per chip, after polarity (positive = "1"); 0 = not seen.
    pub evidence: Vec<f32>,
    /// Decoded payload.
    pub payload: u64,
}

impl Folded {
    /// Evidence of chip `k` when chip (0, 0) sits at tile offset `(ox, oy)`,
    /// from the per-position evidence (0 where nothing was seen).
    fn chip(mean: &[Vec<f32>; 2], k: usize, ox: usize, oy: usize) -> f32 {
        let (u, ch) = (k / 2, k % 2);
        let (cy, cx) = (u / COLS, u % COLS);
        mean[ch][((oy + cy * CHIP) % TILE) * TILE + (ox + cx * PAIR_W) % TILE]
    }

    /// Finds the translation at which the pilots correlate best, then reads
    /// every chip there and decodes the payload.
    pub fn read(&self, layout: &Layout) -> Reading {
        let mean = self.means();
        let mut best = (f32::NEG_INFINITY, 0, 0);
        for oy in 0..TILE {
            for ox in 0..TILE {
                let nc = pilot_nc(layout, |k| Self::chip(&mean, k, ox, oy));
                if nc > best.0 {
                    best = (nc, ox, oy);
                }
            }
        }
        let (_, ox, oy) = best;
        self.read_at_mean(layout, &mean, ox, oy)
    }

    /// Like [`Folded::read`], plus the readings one pixel off the best
    /// offset (a blurred or resampled copy often peaks a pixel beside the
    /// offset that decodes best): nine readings, the pilot peak first.
    pub fn read_around(&self, layout: &Layout) -> Vec<Reading> {
        let best = self.read(layout);
        let mean = self.means();
        let (bx, by) = best.offset;
        let mut out = vec![best];
        for dy in [TILE - 1, 0, 1] {
            for dx in [TILE - 1, 0, 1] {
                if (dx, dy) != (0, 0) {
                    out.push(self.read_at_mean(layout, &mean, (bx + dx) % TILE, (by + dy) % TILE));
                }
            }
        }
        out
    }

    /// Reads every chip with chip (0, 0) at tile offset `(ox, oy)`.
    pub fn read_at(&self, layout: &Layout, ox: usize, oy: usize) -> Reading {
        let mean = self.means();
        self.read_at_mean(layout, &mean, ox, oy)
    }

    /// Per-position evidence: the summed clipped statistics over √count.
    fn means(&self) -> [Vec<f32>; 2] {
        [0, 1].map(|ch| {
            self.sum[ch]
                .iter()
                .zip(&self.count)
                // Mean × √count: a chip seen four times weighs twice one
                // seen once (as independent evidence would), so a crop's
                // single copies do not count as much as the full card's
                // four.
                .map(|(s, c)| if *c == 0 { 0.0 } else { s / (*c as f32).sqrt() })
                .collect()
        })
    }

    fn read_at_mean(&self, layout: &Layout, mean: &[Vec<f32>; 2], ox: usize, oy: usize) -> Reading {
        let pilot = pilot_nc(layout, |k| Self::chip(mean, k, ox, oy));
        let evidence: Vec<f32> = (0..CHIPS)
            .map(|k| Self::chip(mean, k, ox, oy) * layout.polarity[k])
            .collect();
        let mut votes = [0.0f32; CODED_BITS];
        for (k, e) in evidence.iter().enumerate() {
            if let Role::Data(i) = layout.roles[k] {
                votes[i as usize] += e;
            }
        }
        Reading {
            offset: (ox, oy),
            pilot_nc: pilot,
            evidence,
            payload: ecc::decode(&votes),
        }
    }
}

fn pilot_nc(layout: &Layout, chip: impl Fn(usize) -> f32) -> f32 {
    let (mut s, mut q) = (0.0f32, 0.0f32);
    for &k in &layout.pilots {
        let e = chip(k);
        s += e * layout.polarity[k];
        q += e * e;
    }
    if q <= 0.0 {
        0.0
    } else {
        s / (q * PILOTS as f32).sqrt()
    }
}

impl Reading {
    /// Normalized correlation of all chip evidence with the signs `payload`
    /// would give: ≈1 for a clean card, ≈0 (σ = 1/16) for noise.
    pub fn similarity(&self, layout: &Layout, payload: u64) -> f32 {
        let coded = ecc::encode(payload);
        let (mut s, mut q) = (0.0f32, 0.0f32);
        for (k, e) in self.evidence.iter().enumerate() {
            // Evidence is after polarity; compare with the unpolarized sign.
            s += e * layout.wanted(k, &coded) * layout.polarity[k];
            q += e * e;
        }
        if q <= 0.0 {
            0.0
        } else {
            s / (q * CHIPS as f32).sqrt()
        }
    }

    /// Fraction of payload bits that differ from `payload`.
    pub fn bit_error_rate(&self, payload: u64) -> f32 {
        (self.payload ^ payload).count_ones() as f32 / super::claims::PAYLOAD_BITS as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_card_round_trip() {
        let card = vec![150.0; 256 * 256];
        let layout = Layout::new(&[7; 32]);
        let payload = 0xdead_beef_0123_4567;
        let delta = mark(&card, 256, &layout, payload);
        let marked: Vec<f32> = card
            .iter()
            .zip(&delta)
            .map(|(c, d)| (c + d).round())
            .collect();
        let r = fold(&marked, &vec![true; 256 * 256], 256, 256).read(&layout);
        assert_eq!(r.offset, (0, 0));
        assert_eq!(r.payload, payload);
        assert!(r.pilot_nc > 0.95, "{}", r.pilot_nc);
        assert!(r.similarity(&layout, payload) > 0.95);
        let other = Layout::new(&[8; 32]);
        let r = fold(&marked, &vec![true; 256 * 256], 256, 256).read(&other);
        assert!(r.pilot_nc < 0.8, "{}", r.pilot_nc);
    }
}
