//! Keys of a receipt, derived from the operator's HMAC key with HKDF-SHA256,
//! and the keyed deterministic stream that lays out the watermark.
//!
//! Separate derived keys keep receipt tags from ever being confused with
//! message signatures made with the same operator key.
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::ReceiptError;

const SALT: &[u8] = b"agentd-receipt-v1";
/// Shortest operator key accepted (bytes).
pub const MIN_KEY_LEN: usize = 16;

/// Keys derived from one operator key.
#[derive(Clone)]
pub struct ReceiptKeys {
    /// HMAC key for the exact receipt tag.
    pub tag_key: [u8; 32],
    /// Seed of the watermark layout (pairing, pilots, bit order).
    pub watermark_key: [u8; 32],
}

impl std::fmt::Debug for ReceiptKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKeys(..)")
    }
}

impl ReceiptKeys {
    /// Derives the receipt keys from an operator's HMAC key.
    pub fn derive(operator_key: &[u8]) -> Result<Self, ReceiptError> {
        if operator_key.len() < MIN_KEY_LEN {
            return Err(ReceiptError::BadKey {
                reason: "key_too_short",
                len: operator_key.len(),
            });
        }
        let hk = Hkdf::<Sha256>::new(Some(SALT), operator_key);
        let mut tag_key = [0u8; 32];
        let mut watermark_key = [0u8; 32];
        hk.expand(b"receipt tag", &mut tag_key)
            .expect("32 bytes is a valid length");
        hk.expand(b"receipt watermark", &mut watermark_key)
            .expect("32 bytes is a valid length");
        Ok(Self {
            tag_key,
            watermark_key,
        })
    }
}

/// A deterministic stream of 64-bit words: SHA-256 in counter mode over a
/// seed. Chosen over a library RNG so the layout never changes with a
/// dependency upgrade (old receipts must keep verifying).
pub struct KeyStream {
    seed: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    pos: usize,
}

impl KeyStream {
    /// A stream for `seed` under a purpose label.
    pub fn new(seed: &[u8], label: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(label);
        h.update([0]);
        h.update(seed);
        Self {
            seed: h.finalize().into(),
            counter: 0,
            buf: [0; 32],
            pos: 32,
        }
    }

    /// Next 64-bit word.
    pub fn next_u64(&mut self) -> u64 {
        if self.pos + 8 > 32 {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            self.buf = h.finalize().into();
            self.counter += 1;
            self.pos = 0;
        }
        let w = u64::from_le_bytes(
            self.buf[self.pos..self.pos + 8]
                .try_into()
                .expect("8 bytes"),
        );
        self.pos += 8;
        w
    }

    /// Uniform value in `[0, n)` (n > 0); rejection keeps it unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let w = self.next_u64();
            if w < zone {
                return w % n;
            }
        }
    }

    /// Uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let a = ReceiptKeys::derive(b"0123456789abcdef").unwrap();
        let b = ReceiptKeys::derive(b"0123456789abcdef").unwrap();
        let c = ReceiptKeys::derive(b"0123456789abcdeg").unwrap();
        assert_eq!(a.tag_key, b.tag_key);
        assert_ne!(a.tag_key, a.watermark_key);
        assert_ne!(a.tag_key, c.tag_key);
        assert!(ReceiptKeys::derive(b"short").is_err());
    }

    #[test]
    fn stream_is_stable_and_shuffle_is_a_permutation() {
        let mut s = KeyStream::new(b"seed", b"test");
        let mut t = KeyStream::new(b"seed", b"test");
        assert_eq!(s.next_u64(), t.next_u64());
        let mut v: Vec<usize> = (0..100).collect();
        s.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
