//! Parity generation, reconstruction and error location over GF(2^8) (see [`crate::gf`] for
//! the code's definition). Up to three parity rows: P (XOR), Q and R.

use std::cell::RefCell;

use crate::gf;
use crate::simd;

/// Why a reconstruction could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconstructError {
    /// More shards are missing than there are parity rows.
    #[error("{erased} shards are missing but only {parity} parity shards exist")]
    TooManyErasures {
        /// Missing shards.
        erased: usize,
        /// Parity rows.
        parity: usize,
    },
    /// Invalid arguments (shard counts or lengths).
    #[error("invalid reconstruction request: {0}")]
    Invalid(&'static str),
}

/// Outcome of checking one stripe's redundancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Parity matches the data.
    Consistent,
    /// Exactly one shard (index in `0..k+p`, data first) is wrong; the others agree.
    Located(usize),
    /// Parity does not match and the code cannot tell which shard is wrong.
    Ambiguous,
}

const SWAR_HI: u64 = 0x8080_8080_8080_8080;

#[inline]
fn mul2_u64(x: u64) -> u64 {
    let hi = x & SWAR_HI;
    ((x ^ hi) << 1) ^ ((hi >> 7) * u64::from(gf::POLY))
}

#[inline]
fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

/// Portable parity generation (SWAR, 8 bytes at a time) over `[from, len)`.
fn gen_rows_portable(cols: &[Option<&[u8]>], out: &mut [&mut [u8]], from: usize, len: usize) {
    let rows = out.len();
    let mut i = from;
    while i + 8 <= len {
        let mut acc = [0u64; 3];
        for col in cols.iter().rev() {
            acc[1] = mul2_u64(acc[1]);
            acc[2] = mul2_u64(mul2_u64(acc[2]));
            if let Some(c) = col {
                let d = word(c, i);
                acc[0] ^= d;
                acc[1] ^= d;
                acc[2] ^= d;
            }
        }
        for (r, o) in out.iter_mut().enumerate().take(rows) {
            o[i..i + 8].copy_from_slice(&acc[r].to_le_bytes());
        }
        i += 8;
    }
    // Byte tail (lengths here are sector multiples, so this is only for odd test sizes).
    while i < len {
        let mut acc = [0u8; 3];
        for col in cols.iter().rev() {
            acc[1] = gf::mul(acc[1], 2);
            acc[2] = gf::mul(acc[2], 4);
            if let Some(c) = col {
                acc[0] ^= c[i];
                acc[1] ^= c[i];
                acc[2] ^= c[i];
            }
        }
        for (r, o) in out.iter_mut().enumerate() {
            o[i] = acc[r];
        }
        i += 1;
    }
}

/// Computes parity rows `0..out.len()` of the data columns `cols` (`None` = a zero column).
/// Every column and output must be at least `len` bytes; `out.len()` is 1 to 3.
pub fn gen_rows(cols: &[Option<&[u8]>], out: &mut [&mut [u8]], len: usize) {
    assert!((1..=3).contains(&out.len()), "1 to 3 parity rows");
    assert!(cols.len() <= gf::MAX_DATA_COLUMNS);
    let done = simd::gen_rows(cols, out, len);
    gen_rows_portable(cols, out, done, len);
}

/// Computes all parity shards of `data`. All slices have the same length.
pub fn encode(data: &[&[u8]], parity: &mut [&mut [u8]]) {
    let len = parity.first().map_or(0, |p| p.len());
    assert!(data.iter().all(|d| d.len() == len) && parity.iter().all(|p| p.len() == len));
    let cols: Vec<Option<&[u8]>> = data.iter().map(|d| Some(*d)).collect();
    gen_rows(&cols, parity, len);
}

/// `dst ^= src`.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        let v = word(a, 0) ^ word(b, 0);
        a.copy_from_slice(&v.to_le_bytes());
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a ^= b;
    }
}

/// `dst ^= c * src` in GF(2^8).
pub fn mul_acc(dst: &mut [u8], src: &[u8], c: u8) {
    assert_eq!(dst.len(), src.len());
    match c {
        0 => {}
        1 => xor_into(dst, src),
        _ => {
            let (lo, hi) = gf::nibble_tables(c);
            let done = simd::mul_acc(dst, src, &lo, &hi);
            for (a, b) in dst[done..].iter_mut().zip(&src[done..]) {
                *a ^= lo[usize::from(b & 0x0F)] ^ hi[usize::from(b >> 4)];
            }
        }
    }
}

/// Read-modify-write update: the data column `col` changed by `delta` (old XOR new); adjusts
/// every parity row accordingly.
pub fn apply_delta(delta: &[u8], col: usize, parity: &mut [&mut [u8]]) {
    for (row, p) in parity.iter_mut().enumerate() {
        mul_acc(p, delta, gf::coef(row, col));
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `n` zeroed scratch buffers of `len` bytes, reused per thread so the hot
/// degraded-read path does not allocate.
fn with_scratch<R>(n: usize, len: usize, f: impl FnOnce(&mut [Vec<u8>]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    bufs.resize_with(n.max(bufs.len()), Vec::new);
    for b in bufs.iter_mut().take(n) {
        b.clear();
        b.resize(len, 0);
    }
    let r = f(&mut bufs[..n]);
    SCRATCH.with(|s| *s.borrow_mut() = bufs);
    r
}

/// Rebuilds the shards listed in `erased` in place. `shards` holds `k` data shards followed
/// by `p` parity shards, all the same length; the content of erased shards on entry is ignored.
///
/// # Errors
/// More erasures than parity rows, or malformed arguments.
pub fn reconstruct(
    shards: &mut [&mut [u8]],
    k: usize,
    p: usize,
    erased: &[usize],
) -> Result<(), ReconstructError> {
    if shards.len() != k + p || !(1..=3).contains(&p) || k == 0 || k > gf::MAX_DATA_COLUMNS {
        return Err(ReconstructError::Invalid("shard counts"));
    }
    let len = shards[0].len();
    if shards.iter().any(|s| s.len() != len) {
        return Err(ReconstructError::Invalid("shard lengths differ"));
    }
    if erased.iter().any(|&e| e >= k + p) {
        return Err(ReconstructError::Invalid("erased index out of range"));
    }
    let mut er: Vec<usize> = erased.to_vec();
    er.sort_unstable();
    er.dedup();
    if er.len() > p {
        return Err(ReconstructError::TooManyErasures {
            erased: er.len(),
            parity: p,
        });
    }
    let lost_data: Vec<usize> = er.iter().copied().filter(|&e| e < k).collect();
    let lost_parity: Vec<usize> = er
        .iter()
        .copied()
        .filter(|&e| e >= k)
        .map(|e| e - k)
        .collect();
    if !lost_data.is_empty() {
        // Use the lowest surviving parity rows, as many as there are lost data columns.
        let rows: Vec<usize> = (0..p)
            .filter(|r| !lost_parity.contains(r))
            .take(lost_data.len())
            .collect();
        let a = lost_data.len();
        if rows.len() < a {
            return Err(ReconstructError::TooManyErasures {
                erased: er.len(),
                parity: p,
            });
        }
        let max_row = rows[a - 1];
        with_scratch(max_row + 1, len, |scratch| {
            // Syndromes: parity of the surviving data, XORed with the stored parity, leaves
            // exactly the contribution of the lost columns.
            {
                let (data, _) = shards.split_at(k);
                let cols: Vec<Option<&[u8]>> = (0..k)
                    .map(|c| (!lost_data.contains(&c)).then(|| &*data[c]))
                    .collect();
                let mut outs: Vec<&mut [u8]> = scratch.iter_mut().map(Vec::as_mut_slice).collect();
                gen_rows(&cols, &mut outs, len);
            }
            for &r in &rows {
                xor_into(&mut scratch[r], shards[k + r]);
            }
            let mut m = [[0u8; 3]; 3];
            for (i, &r) in rows.iter().enumerate() {
                for (j, &c) in lost_data.iter().enumerate() {
                    m[i][j] = gf::coef(r, c);
                }
            }
            let minv = gf::invert(&m, a).ok_or(ReconstructError::Invalid("singular system"))?;
            for (j, &c) in lost_data.iter().enumerate() {
                let dst = &mut *shards[c];
                dst.fill(0);
                for (i, &r) in rows.iter().enumerate() {
                    mul_acc(dst, &scratch[r], minv[j][i]);
                }
            }
            Ok(())
        })?;
    }
    if !lost_parity.is_empty() {
        let max_row = *lost_parity.iter().max().unwrap_or(&0);
        with_scratch(max_row + 1, len, |scratch| {
            let (data, par) = shards.split_at_mut(k);
            let cols: Vec<Option<&[u8]>> = data.iter().map(|d| Some(&**d)).collect();
            let mut outs: Vec<&mut [u8]> = scratch.iter_mut().map(Vec::as_mut_slice).collect();
            gen_rows(&cols, &mut outs, len);
            for &r in &lost_parity {
                par[r].copy_from_slice(&scratch[r]);
            }
        });
    }
    Ok(())
}

/// Checks a stripe (`k` data shards then `p` parity shards) and, when it is inconsistent, tries
/// to locate a single wrong shard from the syndromes (needs `p >= 2`).
#[must_use]
pub fn verify(shards: &[&[u8]], k: usize, p: usize) -> Verdict {
    assert_eq!(shards.len(), k + p);
    let len = shards.first().map_or(0, |s| s.len());
    with_scratch(p, len, |syn| {
        {
            let cols: Vec<Option<&[u8]>> = shards[..k].iter().map(|d| Some(*d)).collect();
            let mut outs: Vec<&mut [u8]> = syn.iter_mut().map(Vec::as_mut_slice).collect();
            gen_rows(&cols, &mut outs, len);
        }
        for r in 0..p {
            xor_into(&mut syn[r], shards[k + r]);
        }
        if syn.iter().all(|s| s.iter().all(|&b| b == 0)) {
            return Verdict::Consistent;
        }
        if p < 2 {
            return Verdict::Ambiguous;
        }
        locate(syn, k, p, len)
    })
}

/// Finds the one shard that explains every nonzero syndrome byte, if there is one.
fn locate(syn: &[Vec<u8>], k: usize, p: usize, len: usize) -> Verdict {
    let mut culprit: Option<usize> = None;
    #[allow(clippy::needless_range_loop)] // column-wise walk over p rows
    for b in 0..len {
        let s: Vec<u8> = (0..p).map(|r| syn[r][b]).collect();
        if s.iter().all(|&x| x == 0) {
            continue;
        }
        let nonzero: Vec<usize> = (0..p).filter(|&r| s[r] != 0).collect();
        let here = if nonzero.len() == 1 {
            // Only one parity row disagrees: that parity shard is wrong.
            Some(k + nonzero[0])
        } else if s[0] != 0 && nonzero.len() == p {
            // A data byte e at column z gives syndromes (e, g^z e, g^2z e).
            let z = (usize::from(gf::LOG[usize::from(s[1])]) + 255
                - usize::from(gf::LOG[usize::from(s[0])]))
                % 255;
            let ok = z < k && (2..p).all(|r| s[r] == gf::mul(gf::coef(r, z), s[0]));
            ok.then_some(z)
        } else {
            None
        };
        match (here, culprit) {
            (None, _) => return Verdict::Ambiguous,
            (Some(h), None) => culprit = Some(h),
            (Some(h), Some(c)) if h == c => {}
            (Some(_), Some(_)) => return Verdict::Ambiguous,
        }
    }
    culprit.map_or(Verdict::Consistent, Verdict::Located)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight from the definition: parity row r = sum coef(r, i) * D_i, byte by byte.
    pub(crate) fn reference_parity(data: &[Vec<u8>], p: usize) -> Vec<Vec<u8>> {
        let len = data.first().map_or(0, Vec::len);
        (0..p)
            .map(|r| {
                (0..len)
                    .map(|b| {
                        data.iter()
                            .enumerate()
                            .fold(0u8, |acc, (i, d)| acc ^ gf::mul(gf::coef(r, i), d[b]))
                    })
                    .collect()
            })
            .collect()
    }

    fn random_data(k: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..k)
            .map(|_| (0..len).map(|_| rng.random()).collect())
            .collect()
    }

    fn encoded(data: &[Vec<u8>], p: usize) -> Vec<Vec<u8>> {
        let len = data[0].len();
        let mut par = vec![vec![0u8; len]; p];
        {
            let d: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut o: Vec<&mut [u8]> = par.iter_mut().map(Vec::as_mut_slice).collect();
            encode(&d, &mut o);
        }
        par
    }

    #[test]
    fn portable_and_simd_match_the_definition() {
        for &(k, len) in &[
            (1usize, 8usize),
            (2, 4096),
            (3, 136),
            (8, 65536),
            (13, 4104),
            (30, 256),
        ] {
            let data = random_data(k, len, (k * 1000 + len) as u64);
            for p in 1..=3 {
                let want = reference_parity(&data, p);
                assert_eq!(encoded(&data, p), want, "dispatch k={k} len={len} p={p}");
                let mut port = vec![vec![0u8; len]; p];
                {
                    let cols: Vec<Option<&[u8]>> =
                        data.iter().map(|d| Some(d.as_slice())).collect();
                    let mut o: Vec<&mut [u8]> = port.iter_mut().map(Vec::as_mut_slice).collect();
                    gen_rows_portable(&cols, &mut o, 0, len);
                }
                assert_eq!(port, want, "portable k={k} len={len} p={p}");
            }
        }
    }

    #[test]
    fn mul_acc_matches_scalar() {
        let src = random_data(1, 4096 + 17, 5).pop().unwrap_or_default();
        for c in [0u8, 1, 2, 3, 0x1D, 0x80, 0xFF] {
            let mut dst = vec![0x5Au8; src.len()];
            mul_acc(&mut dst, &src, c);
            for (i, &d) in dst.iter().enumerate() {
                assert_eq!(d, 0x5A ^ gf::mul(c, src[i]));
            }
        }
    }

    fn check_reconstruct(k: usize, p: usize, len: usize, erased: &[usize], seed: u64) {
        let data = random_data(k, len, seed);
        let par = encoded(&data, p);
        let mut all: Vec<Vec<u8>> = data.iter().chain(par.iter()).cloned().collect();
        let want = all.clone();
        for &e in erased {
            all[e].fill(0xEE);
        }
        let mut refs: Vec<&mut [u8]> = all.iter_mut().map(Vec::as_mut_slice).collect();
        reconstruct(&mut refs, k, p, erased).expect("reconstruct");
        assert_eq!(all, want, "k={k} p={p} erased={erased:?}");
    }

    #[test]
    fn every_erasure_pattern_small() {
        for k in 1..=6 {
            for p in 1..=3 {
                let n = k + p;
                for mask in 1u32..(1 << n) {
                    if mask.count_ones() as usize > p {
                        continue;
                    }
                    let erased: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                    check_reconstruct(k, p, 256, &erased, u64::from(mask));
                }
            }
        }
    }

    #[test]
    fn too_many_erasures_is_an_error() {
        let mut bufs = vec![vec![0u8; 64]; 5];
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        assert_eq!(
            reconstruct(&mut refs, 3, 2, &[0, 1, 2]),
            Err(ReconstructError::TooManyErasures {
                erased: 3,
                parity: 2
            })
        );
    }

    #[test]
    fn locates_single_corruption_with_two_or_three_parity() {
        for p in 2..=3 {
            let k = 6;
            for bad in 0..k + p {
                let data = random_data(k, 512, bad as u64);
                let par = encoded(&data, p);
                let mut all: Vec<Vec<u8>> = data.iter().chain(par.iter()).cloned().collect();
                all[bad][3] ^= 0x41;
                all[bad][300] ^= 0x02;
                let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
                assert_eq!(
                    verify(&refs, k, p),
                    Verdict::Located(bad),
                    "p={p} bad={bad}"
                );
            }
            // Two shards corrupted at different places cannot be pinned on one. (Two errors in the
            // same byte column can alias a single error: beyond what any decoder can tell.)
            let data = random_data(k, 512, 99);
            let par = encoded(&data, p);
            let mut all: Vec<Vec<u8>> = data.iter().chain(par.iter()).cloned().collect();
            all[0][10] ^= 1;
            all[1][20] ^= 1;
            let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
            assert_eq!(verify(&refs, k, p), Verdict::Ambiguous);
        }
        // Single parity can detect but never locate.
        let data = random_data(4, 64, 1);
        let par = encoded(&data, 1);
        let mut all: Vec<Vec<u8>> = data.iter().chain(par.iter()).cloned().collect();
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        assert_eq!(verify(&refs, 4, 1), Verdict::Consistent);
        all[2][0] ^= 1;
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        assert_eq!(verify(&refs, 4, 1), Verdict::Ambiguous);
    }

    proptest! {
        #[test]
        fn delta_update_equals_reencode(k in 1usize..10, p in 1usize..=3, col_seed in any::<usize>(), seed in any::<u64>()) {
            let col = col_seed % k;
            let mut data = random_data(k, 192, seed);
            let mut par = encoded(&data, p);
            let new = random_data(1, 192, seed ^ 0xABCD).pop().unwrap_or_default();
            let mut delta = data[col].clone();
            xor_into(&mut delta, &new);
            {
                let mut o: Vec<&mut [u8]> = par.iter_mut().map(Vec::as_mut_slice).collect();
                apply_delta(&delta, col, &mut o);
            }
            data[col] = new;
            prop_assert_eq!(par, encoded(&data, p));
        }

        #[test]
        fn random_erasures_roundtrip(k in 1usize..20, p in 1usize..=3, seed in any::<u64>(), picks in proptest::collection::vec(any::<usize>(), 0..3)) {
            let n = k + p;
            let mut erased: Vec<usize> = picks.iter().map(|x| x % n).collect();
            erased.truncate(p);
            check_reconstruct(k, p, 320, &erased, seed);
        }
    }
}
