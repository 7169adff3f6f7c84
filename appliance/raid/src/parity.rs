//! Parity generation, reconstruction and error location over GF(2^8) (see [`crate::gf`] for
//! the code's definition). Up to three parity rows: P (XOR), Q and R.

use std::cell::RefCell;

use crate::gf;
use crate::simd::{self, Kernel, MAX_OUT};

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

/// The kernel family the parity math runs on here ("avx512+gfni", "avx2" or "portable"), for
/// logs and benchmark reports. `DW_RAID_SIMD=avx2|portable` caps it.
#[must_use]
pub fn kernel_name() -> &'static str {
    simd::detected().name()
}

/// The coefficients of data column `col` in the parity rows P, Q, R.
fn column_coefs(col: usize) -> [u8; MAX_OUT] {
    [gf::coef(0, col), gf::coef(1, col), gf::coef(2, col)]
}

/// `outs (^)= coefs * ins` over the outputs' whole length with `kernel`, the tail portably.
fn dot_with(
    kernel: Kernel,
    ins: &[&[u8]],
    coefs: &[[u8; MAX_OUT]],
    outs: &mut [&mut [u8]],
    accumulate: bool,
) {
    let len = outs.first().map_or(0, |o| o.len());
    assert!(outs.iter().all(|o| o.len() == len), "output lengths differ");
    let done = simd::dot(kernel, ins, coefs, outs, len, accumulate);
    simd::dot_portable(ins, coefs, outs, done, len, accumulate);
}

fn dot(ins: &[&[u8]], coefs: &[[u8; MAX_OUT]], outs: &mut [&mut [u8]], accumulate: bool) {
    dot_with(simd::detected(), ins, coefs, outs, accumulate);
}

/// Computes parity rows `0..out.len()` of the data columns `cols` (`None` = a zero column)
/// over their first `len` bytes. Every column and output must be at least `len` bytes;
/// `out.len()` is 1 to 3.
pub fn gen_rows(cols: &[Option<&[u8]>], out: &mut [&mut [u8]], len: usize) {
    assert!((1..=MAX_OUT).contains(&out.len()), "1 to 3 parity rows");
    assert!(cols.len() <= gf::MAX_DATA_COLUMNS);
    let mut ins = Vec::with_capacity(cols.len());
    let mut coefs = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        if let Some(c) = c {
            ins.push(&c[..len]);
            coefs.push(column_coefs(i));
        }
    }
    let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|o| &mut o[..len]).collect();
    let kernel = simd::detected();
    // AVX2 encodes faster by Horner's rule than by general multiplies; the rest (and any
    // tail) is the dot product.
    let done = simd::encode(kernel, cols, &mut outs, len);
    if done == 0 {
        dot_with(kernel, &ins, &coefs, &mut outs, false);
    } else {
        simd::dot_portable(&ins, &coefs, &mut outs, done, len, false);
    }
}

/// Computes all parity shards of `data` in one pass. All slices have the same length.
pub fn encode(data: &[&[u8]], parity: &mut [&mut [u8]]) {
    let len = parity.first().map_or(0, |p| p.len());
    assert!(data.iter().all(|d| d.len() == len) && parity.iter().all(|p| p.len() == len));
    let cols: Vec<Option<&[u8]>> = data.iter().map(|d| Some(*d)).collect();
    gen_rows(&cols, parity, len);
}

/// `dst ^= src`.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    dot(&[src], &[[1, 0, 0]], &mut [dst], true);
}

/// `dst ^= c * src` in GF(2^8).
pub fn mul_acc(dst: &mut [u8], src: &[u8], c: u8) {
    assert_eq!(dst.len(), src.len());
    if c != 0 {
        dot(&[src], &[[c, 0, 0]], &mut [dst], true);
    }
}

/// Read-modify-write update: the data column `col` changed by `delta` (old XOR new); adjusts
/// every parity row accordingly, in one pass over `delta`.
pub fn apply_delta(delta: &[u8], col: usize, parity: &mut [&mut [u8]]) {
    assert!((1..=MAX_OUT).contains(&parity.len()), "1 to 3 parity rows");
    dot(&[delta], &[column_coefs(col)], parity, true);
}

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `n` scratch buffers of `len` bytes (contents unspecified), reused per thread
/// so that scrubbing does not allocate per stripe.
fn with_scratch<R>(n: usize, len: usize, f: impl FnOnce(&mut [Vec<u8>]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    bufs.resize_with(n.max(bufs.len()), Vec::new);
    for b in bufs.iter_mut().take(n) {
        b.resize(len, 0);
    }
    let r = f(&mut bufs[..n]);
    SCRATCH.with(|s| *s.borrow_mut() = bufs);
    r
}

/// How to rebuild a set of erased shards: which surviving shards to read and, for each, its
/// coefficient in each lost shard (a row of the inverted code matrix).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodePlan {
    /// Surviving shard indices to read (exactly `k`), ascending.
    inputs: Vec<usize>,
    /// Per input, its coefficient in each output.
    coefs: Vec<[u8; MAX_OUT]>,
    /// The erased shard indices, ascending (the outputs, in order).
    outputs: Vec<usize>,
}

/// Solves for the erased shards as linear combinations of `k` survivors.
///
/// Lost data columns `c_j` come from the syndromes of the lowest surviving parity rows `R`:
/// `D_cj = sum_i minv[j][i] * (P_Ri + sum_{d surviving} coef(R_i, d) * D_d)`. A lost parity row
/// `r` is `sum_{d surviving} coef(r, d) * D_d + sum_j coef(r, c_j) * D_cj`; substituting the
/// first expression makes every output a combination of the survivors alone, so one pass over
/// the survivors produces all of them (ISA-L's decode structure).
fn decode_plan(k: usize, p: usize, erased: &[usize]) -> Result<DecodePlan, ReconstructError> {
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
    let lost_rows: Vec<usize> = er.iter().filter(|&&e| e >= k).map(|&e| e - k).collect();
    let a = lost_data.len();
    let rows: Vec<usize> = (0..p).filter(|r| !lost_rows.contains(r)).take(a).collect();
    if rows.len() < a {
        return Err(ReconstructError::TooManyErasures {
            erased: er.len(),
            parity: p,
        });
    }
    let mut minv = [[0u8; 3]; 3];
    if a > 0 {
        let mut m = [[0u8; 3]; 3];
        for (i, &r) in rows.iter().enumerate() {
            for (j, &c) in lost_data.iter().enumerate() {
                m[i][j] = gf::coef(r, c);
            }
        }
        minv = gf::invert(&m, a).ok_or(ReconstructError::Invalid("singular system"))?;
    }
    let surviving: Vec<usize> = (0..k).filter(|d| !lost_data.contains(d)).collect();
    let mut inputs = surviving.clone();
    inputs.extend(rows.iter().map(|&r| k + r));
    // lost_coef[j][x]: coefficient of input x in lost data column c_j.
    let lost_coef: Vec<Vec<u8>> = (0..a)
        .map(|j| {
            let mut v: Vec<u8> = surviving
                .iter()
                .map(|&d| (0..a).fold(0u8, |s, i| s ^ gf::mul(minv[j][i], gf::coef(rows[i], d))))
                .collect();
            v.extend((0..a).map(|i| minv[j][i]));
            v
        })
        .collect();
    let mut coefs = vec![[0u8; MAX_OUT]; inputs.len()];
    for (o, &e) in er.iter().enumerate() {
        for (x, c) in coefs.iter_mut().enumerate() {
            c[o] = if e < k {
                let j = lost_data.iter().position(|&d| d == e).unwrap_or(0);
                lost_coef[j][x]
            } else {
                let r = e - k;
                let direct = surviving.get(x).map_or(0, |&d| gf::coef(r, d));
                lost_data.iter().enumerate().fold(direct, |s, (j, &cj)| {
                    s ^ gf::mul(gf::coef(r, cj), lost_coef[j][x])
                })
            };
        }
    }
    Ok(DecodePlan {
        inputs,
        coefs,
        outputs: er,
    })
}

/// Rebuilds the shards listed in `erased` in place, in one pass over `k` of the survivors.
/// `shards` holds `k` data shards followed by `p` parity shards, all the same length; the
/// content of erased shards on entry is ignored, and surviving parity rows beyond the ones
/// needed are not read.
///
/// # Errors
/// More erasures than parity rows, or malformed arguments.
pub fn reconstruct(
    shards: &mut [&mut [u8]],
    k: usize,
    p: usize,
    erased: &[usize],
) -> Result<(), ReconstructError> {
    reconstruct_with(simd::detected(), shards, k, p, erased, None)
}

/// Like [`reconstruct`], but computes only the `wanted` shards, from survivors outside
/// `unavailable` (which must include `wanted`): a degraded read needs the lost data, not the
/// lost parity.
///
/// # Errors
/// As [`reconstruct`], and when `wanted` is not a subset of `unavailable`.
pub(crate) fn reconstruct_some(
    shards: &mut [&mut [u8]],
    k: usize,
    p: usize,
    unavailable: &[usize],
    wanted: &[usize],
) -> Result<(), ReconstructError> {
    if wanted.iter().any(|w| !unavailable.contains(w)) {
        return Err(ReconstructError::Invalid("wanted shard is available"));
    }
    reconstruct_with(simd::detected(), shards, k, p, unavailable, Some(wanted))
}

fn reconstruct_with(
    kernel: Kernel,
    shards: &mut [&mut [u8]],
    k: usize,
    p: usize,
    erased: &[usize],
    wanted: Option<&[usize]>,
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
    let mut plan = decode_plan(k, p, erased)?;
    if let Some(w) = wanted {
        let keep: Vec<usize> = (0..plan.outputs.len())
            .filter(|&o| w.contains(&plan.outputs[o]))
            .collect();
        plan.outputs = keep.iter().map(|&o| plan.outputs[o]).collect();
        for c in &mut plan.coefs {
            let mut kept = [0u8; MAX_OUT];
            for (dst, &o) in kept.iter_mut().zip(&keep) {
                *dst = c[o];
            }
            *c = kept;
        }
    }
    if plan.outputs.is_empty() {
        return Ok(());
    }
    let mut ins: Vec<&[u8]> = Vec::with_capacity(plan.inputs.len());
    let mut outs: Vec<&mut [u8]> = Vec::with_capacity(plan.outputs.len());
    // Both index lists are ascending, so walking the shards in order fills them in plan order.
    for (i, s) in shards.iter_mut().enumerate() {
        if plan.outputs.contains(&i) {
            outs.push(&mut **s);
        } else if plan.inputs.contains(&i) {
            ins.push(&**s);
        }
    }
    dot_with(kernel, &ins, &plan.coefs, &mut outs, false);
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
            // Syndromes in one pass: every data column times its coefficients, plus the
            // stored parity row itself.
            let coefs: Vec<[u8; MAX_OUT]> = (0..k)
                .map(column_coefs)
                .chain((0..p).map(|r| {
                    let mut c = [0u8; MAX_OUT];
                    c[r] = 1;
                    c
                }))
                .collect();
            let mut outs: Vec<&mut [u8]> = syn.iter_mut().map(Vec::as_mut_slice).collect();
            dot(shards, &coefs, &mut outs, false);
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
    fn every_kernel_matches_the_definition() {
        for kernel in simd::available() {
            for &(k, len) in &[
                (1usize, 8usize),
                (2, 4096),
                (3, 136),
                (8, 65536),
                (13, 4104),
                (30, 256),
                (4, 300),
            ] {
                let data = random_data(k, len, (k * 1000 + len) as u64);
                for p in 1..=3 {
                    let want = reference_parity(&data, p);
                    assert_eq!(encoded(&data, p), want, "dispatch k={k} len={len} p={p}");
                    let mut got = vec![vec![0xA5u8; len]; p];
                    {
                        let ins: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                        let coefs: Vec<[u8; MAX_OUT]> = (0..k).map(column_coefs).collect();
                        let mut o: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
                        dot_with(kernel, &ins, &coefs, &mut o, false);
                    }
                    assert_eq!(got, want, "{kernel:?} k={k} len={len} p={p}");
                    // Accumulating onto the parity cancels it.
                    {
                        let ins: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                        let coefs: Vec<[u8; MAX_OUT]> = (0..k).map(column_coefs).collect();
                        let mut o: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
                        dot_with(kernel, &ins, &coefs, &mut o, true);
                    }
                    assert!(
                        got.iter().flatten().all(|&b| b == 0),
                        "{kernel:?} accumulate"
                    );
                }
            }
        }
    }

    #[test]
    fn horner_encode_matches_the_definition() {
        if !simd::available().contains(&Kernel::Avx2) {
            return;
        }
        for &(k, len) in &[(1usize, 128usize), (5, 4096), (9, 640), (30, 256)] {
            let data = random_data(k, len, k as u64 + 7);
            for p in 1..=3 {
                let mut cols: Vec<Option<&[u8]>> =
                    data.iter().map(|d| Some(d.as_slice())).collect();
                // A zero column in the middle (reconstruction passes those).
                let mut zdata = data.clone();
                if k > 2 {
                    cols[1] = None;
                    zdata[1].fill(0);
                }
                let want = reference_parity(&zdata, p);
                let mut got = vec![vec![0u8; len]; p];
                let mut o: Vec<&mut [u8]> = got.iter_mut().map(Vec::as_mut_slice).collect();
                assert_eq!(simd::encode(Kernel::Avx2, &cols, &mut o, len), len);
                assert_eq!(got, want, "k={k} len={len} p={p}");
            }
        }
    }

    #[test]
    fn every_kernel_multiplies_by_every_constant() {
        let src = random_data(1, 1024 + 40, 77).pop().unwrap_or_default();
        for kernel in simd::available() {
            for c in 0..=255u8 {
                let mut dst = vec![0x3Cu8; src.len()];
                dot_with(kernel, &[&src], &[[c, 0, 0]], &mut [&mut dst], true);
                for (i, &d) in dst.iter().enumerate() {
                    assert_eq!(d, 0x3C ^ gf::mul(c, src[i]), "{kernel:?} c={c} i={i}");
                }
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
        for kernel in simd::available() {
            for &e in erased {
                all[e].fill(0xEE);
            }
            let mut refs: Vec<&mut [u8]> = all.iter_mut().map(Vec::as_mut_slice).collect();
            reconstruct_with(kernel, &mut refs, k, p, erased, None).expect("reconstruct");
            assert_eq!(all, want, "{kernel:?} k={k} p={p} erased={erased:?}");
        }
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
    fn reconstruct_some_computes_only_what_is_wanted() {
        let (k, p) = (4, 3);
        let data = random_data(k, 4096, 8);
        let par = encoded(&data, p);
        let mut all: Vec<Vec<u8>> = data.iter().chain(par.iter()).cloned().collect();
        let want = all.clone();
        // Data shard 1 is lost; Q and R were not read (a degraded read reads k shards).
        for i in [1, k + 1, k + 2] {
            all[i].fill(0xEE);
        }
        let mut refs: Vec<&mut [u8]> = all.iter_mut().map(Vec::as_mut_slice).collect();
        reconstruct_some(&mut refs, k, p, &[1, k + 1, k + 2], &[1]).expect("reconstruct");
        assert_eq!(all[1], want[1]);
        assert!(
            all[k + 1].iter().chain(&all[k + 2]).all(|&b| b == 0xEE),
            "not computed"
        );
        let mut refs: Vec<&mut [u8]> = all.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(
            reconstruct_some(&mut refs, k, p, &[1], &[2]).is_err(),
            "2 is available"
        );
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
