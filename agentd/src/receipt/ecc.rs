//! Error correction for the watermark payload: the standard rate-1/2,
//! constraint-length-7 convolutional code (generators 171, 133 octal) with a
//! zero tail, decoded by soft-decision Viterbi.
//!
//! Compared with plain repetition of each payload bit over the same pairs,
//! the code turns scattered wrong pairs (blurred, JPEG-damaged or cropped
//! blocks) into corrected errors instead of flipped payload bits.
use super::claims::PAYLOAD_BITS;

const K: usize = 7;
const STATES: usize = 1 << (K - 1);
const G0: u32 = 0o171;
const G1: u32 = 0o133;
/// Input bits including the zero tail that returns the encoder to state 0.
const STEPS: usize = PAYLOAD_BITS + K - 1;
/// Coded bits per payload.
pub const CODED_BITS: usize = 2 * STEPS;

fn outputs(reg: u32) -> (bool, bool) {
    (
        (reg & G0).count_ones() & 1 == 1,
        (reg & G1).count_ones() & 1 == 1,
    )
}

/// Encodes a 64-bit payload (most significant bit first).
pub fn encode(payload: u64) -> [bool; CODED_BITS] {
    let mut out = [false; CODED_BITS];
    let mut state = 0u32;
    for t in 0..STEPS {
        let u = if t < PAYLOAD_BITS {
            ((payload >> (PAYLOAD_BITS - 1 - t)) & 1) as u32
        } else {
            0
        };
        let reg = (u << (K - 1)) | state;
        let (a, b) = outputs(reg);
        out[2 * t] = a;
        out[2 * t + 1] = b;
        state = reg >> 1;
    }
    out
}

/// Soft-decision Viterbi: `soft[i] > 0` means coded bit i is likely 1, with
/// confidence |soft[i]|. Returns the most likely payload.
pub fn decode(soft: &[f32; CODED_BITS]) -> u64 {
    let mut metric = [f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    // choice[t][ns]: the dropped low bit of the predecessor state.
    let mut choice = vec![[0u8; STATES]; STEPS];
    for t in 0..STEPS {
        let mut next = [f32::NEG_INFINITY; STATES];
        for (ns, slot) in next.iter_mut().enumerate() {
            let u = (ns >> (K - 2)) as u32;
            if t >= PAYLOAD_BITS && u == 1 {
                continue; // the tail is all zeros
            }
            for low in 0..2u32 {
                let s = (((ns as u32) & ((1 << (K - 2)) - 1)) << 1) | low;
                let m = metric[s as usize];
                if m == f32::NEG_INFINITY {
                    continue;
                }
                let (a, b) = outputs((u << (K - 1)) | s);
                let bm = if a { soft[2 * t] } else { -soft[2 * t] }
                    + if b { soft[2 * t + 1] } else { -soft[2 * t + 1] };
                if m + bm > *slot {
                    *slot = m + bm;
                    choice[t][ns] = low as u8;
                }
            }
        }
        metric = next;
    }
    let mut ns = 0usize;
    let mut bits = [0u32; STEPS];
    for t in (0..STEPS).rev() {
        bits[t] = (ns >> (K - 2)) as u32;
        ns = ((ns & ((1 << (K - 2)) - 1)) << 1) | choice[t][ns] as usize;
    }
    bits[..PAYLOAD_BITS]
        .iter()
        .fold(0u64, |acc, b| (acc << 1) | *b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::keys::KeyStream;

    fn soft_of(coded: &[bool; CODED_BITS]) -> [f32; CODED_BITS] {
        let mut s = [0.0; CODED_BITS];
        for (x, c) in s.iter_mut().zip(coded) {
            *x = if *c { 1.0 } else { -1.0 };
        }
        s
    }

    #[test]
    fn clean_round_trip() {
        for p in [0u64, u64::MAX, 0xdead_beef_cafe_f00d, 1] {
            assert_eq!(decode(&soft_of(&encode(p))), p);
        }
    }

    #[test]
    fn corrects_scattered_errors_and_erasures() {
        let mut ks = KeyStream::new(b"ecc", b"test");
        for _ in 0..50 {
            let p = ks.next_u64();
            let mut s = soft_of(&encode(p));
            // 5 flipped coded bits (one per 28-bit stretch, the code's free
            // distance is 10) and 20 erased ones anywhere.
            for k in 0..5 {
                let i = 28 * k + ks.below(28) as usize;
                s[i] = -s[i];
            }
            for _ in 0..20 {
                s[ks.below(CODED_BITS as u64) as usize] = 0.0;
            }
            assert_eq!(decode(&s), p);
        }
    }
}
