//! One level of the orthonormal 2-D Haar wavelet transform, approximation band only.
//!
//! The watermark lives in the LL band. With the orthonormal Haar basis a change
//! `d` of one LL coefficient is the same change `d / 2` of each of its four
//! pixels, so the embedder never needs the detail bands: it adds `d / 2` to
//! the pixels directly and the detail bands stay untouched by construction.

/// LL band (size `n/2 × n/2`) of a row-major `n × n` plane; `n` must be even.
pub fn haar_ll(plane: &[f32], n: usize) -> Vec<f32> {
    debug_assert_eq!(plane.len(), n * n);
    let h = n / 2;
    let mut ll = vec![0.0f32; h * h];
    for i in 0..h {
        let r0 = &plane[(2 * i) * n..(2 * i + 1) * n];
        let r1 = &plane[(2 * i + 1) * n..(2 * i + 2) * n];
        for j in 0..h {
            ll[i * h + j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * 0.5;
        }
    }
    ll
}

/// Applies a change of the LL band (`delta`, `n/2 × n/2`) to the `n × n`
/// plane: the inverse transform restricted to LL (each pixel moves by `d/2`).
pub fn add_ll_delta(plane: &mut [f32], n: usize, delta: &[f32]) {
    let h = n / 2;
    debug_assert_eq!(delta.len(), h * h);
    for i in 0..h {
        for j in 0..h {
            let d = delta[i * h + j] * 0.5;
            if d == 0.0 {
                continue;
            }
            plane[(2 * i) * n + 2 * j] += d;
            plane[(2 * i) * n + 2 * j + 1] += d;
            plane[(2 * i + 1) * n + 2 * j] += d;
            plane[(2 * i + 1) * n + 2 * j + 1] += d;
        }
    }
}

/// Full single-level forward transform: (LL, LH, HL, HH), each `n/2 × n/2`.
/// Used by tests to check that [`haar_ll`] and [`add_ll_delta`] are the
/// restriction of a perfect-reconstruction transform.
pub fn haar_forward(plane: &[f32], n: usize) -> [Vec<f32>; 4] {
    let h = n / 2;
    let mut out = [
        vec![0.0; h * h],
        vec![0.0; h * h],
        vec![0.0; h * h],
        vec![0.0; h * h],
    ];
    for i in 0..h {
        for j in 0..h {
            let a = plane[(2 * i) * n + 2 * j];
            let b = plane[(2 * i) * n + 2 * j + 1];
            let c = plane[(2 * i + 1) * n + 2 * j];
            let d = plane[(2 * i + 1) * n + 2 * j + 1];
            out[0][i * h + j] = (a + b + c + d) * 0.5;
            out[1][i * h + j] = (a - b + c - d) * 0.5;
            out[2][i * h + j] = (a + b - c - d) * 0.5;
            out[3][i * h + j] = (a - b - c + d) * 0.5;
        }
    }
    out
}

/// Inverse of [`haar_forward`].
pub fn haar_inverse(bands: &[Vec<f32>; 4], n: usize) -> Vec<f32> {
    let h = n / 2;
    let mut plane = vec![0.0; n * n];
    for i in 0..h {
        for j in 0..h {
            let k = i * h + j;
            let (ll, lh, hl, hh) = (bands[0][k], bands[1][k], bands[2][k], bands[3][k]);
            plane[(2 * i) * n + 2 * j] = (ll + lh + hl + hh) * 0.5;
            plane[(2 * i) * n + 2 * j + 1] = (ll - lh + hl - hh) * 0.5;
            plane[(2 * i + 1) * n + 2 * j] = (ll + lh - hl - hh) * 0.5;
            plane[(2 * i + 1) * n + 2 * j + 1] = (ll - lh - hl + hh) * 0.5;
        }
    }
    plane
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reconstruction_and_ll_restriction_agree() {
        let n = 8;
        let plane: Vec<f32> = (0..n * n).map(|i| ((i * 37) % 101) as f32).collect();
        let bands = haar_forward(&plane, n);
        let back = haar_inverse(&bands, n);
        for (x, y) in plane.iter().zip(&back) {
            assert!((x - y).abs() < 1e-4);
        }
        assert_eq!(haar_ll(&plane, n), bands[0]);

        // Changing LL through add_ll_delta equals changing it in the full transform.
        let delta: Vec<f32> = (0..16).map(|i| i as f32 - 7.0).collect();
        let mut moved = plane.clone();
        add_ll_delta(&mut moved, n, &delta);
        let mut bands2 = bands.clone();
        for (c, d) in bands2[0].iter_mut().zip(&delta) {
            *c += d;
        }
        let expect = haar_inverse(&bands2, n);
        for (x, y) in moved.iter().zip(&expect) {
            assert!((x - y).abs() < 1e-4);
        }
        // Detail bands are untouched.
        let after = haar_forward(&moved, n);
        for b in 1..4 {
            for (x, y) in after[b].iter().zip(&bands[b]) {
                assert!((x - y).abs() < 1e-4);
            }
        }
    }
}
