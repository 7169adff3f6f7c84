//! The crate's only `unsafe` code: SIMD kernels for the parity math, chosen at run time.
//!
//! There is one operation, a GF(2^8) dot product over whole buffers:
//!
//! ```text
//!   out[o] (^)= sum over inputs i of  coef[i][o] * in[i]        (o < 3)
//! ```
//!
//! Encoding (inputs = data, outputs = parity rows), reconstruction (inputs = any k surviving
//! shards, outputs = the lost ones, with decode coefficients), syndromes for scrub and
//! read-modify-write parity updates (accumulate) are all this one pass over the data, so each
//! reads every input byte exactly once — the memory traffic, not the arithmetic, is what costs
//! (docs/PERFORMANCE.md, "RAID engine").
//!
//! Kernels, best first:
//! - AVX-512 + GFNI: 64-byte vectors; multiplying by a constant is one `vgf2p8affineqb` with the
//!   constant's 8x8 bit matrix ([`crate::gf::AFFINE`]); a coefficient of 1 is a plain XOR.
//! - AVX2: 32-byte vectors; multiplying is the split-nibble table lookup (`vpshufb`) of ISA-L.
//! - Portable: 8 bytes at a time, used without AVX2 and for tails shorter than a kernel step.
//!
//! `DW_RAID_SIMD=avx2` or `DW_RAID_SIMD=portable` caps the choice (for benchmarks and for
//! testing the fallbacks); it can never select a kernel the CPU lacks.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256i, _mm_loadu_si128, _mm_sfence, _mm256_add_epi8, _mm256_and_si256,
    _mm256_broadcastsi128_si256, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_set1_epi8,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi64, _mm256_storeu_si256,
    _mm256_stream_si256, _mm256_xor_si256, _mm512_gf2p8affine_epi64_epi8, _mm512_loadu_si512,
    _mm512_set1_epi64, _mm512_setzero_si512, _mm512_storeu_si512, _mm512_stream_si512,
    _mm512_xor_si512,
};

#[cfg(target_arch = "x86_64")]
use crate::gf::AFFINE;
use crate::gf::NIBBLES;

/// Most outputs of one pass (three parity rows, or three lost shards).
pub(crate) const MAX_OUT: usize = 3;

/// A kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Plain Rust, 8 bytes at a time.
    Portable,
    /// AVX2 with `vpshufb` table multiplies.
    Avx2,
    /// AVX-512BW with GFNI affine multiplies.
    Avx512Gfni,
}

impl Kernel {
    /// Short name for logs and benchmark output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Gfni => "avx512+gfni",
        }
    }

    /// Bytes one kernel step processes for `outs` outputs; [`dot`] does the largest multiple
    /// of it.
    fn step(self, outs: usize) -> usize {
        match self {
            Kernel::Portable => 8,
            Kernel::Avx2 => 32 * LANES,
            Kernel::Avx512Gfni if outs <= 2 => 64 * WIDE,
            Kernel::Avx512Gfni => 64 * LANES,
        }
    }
}

/// Every kernel this CPU can run, best last.
#[must_use]
pub(crate) fn available() -> Vec<Kernel> {
    let mut v = vec![Kernel::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push(Kernel::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni")
        {
            v.push(Kernel::Avx512Gfni);
        }
    }
    v
}

/// The kernel used: the best available, capped by `DW_RAID_SIMD`.
#[must_use]
pub(crate) fn detected() -> Kernel {
    static K: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        let best = available().pop().unwrap_or(Kernel::Portable);
        let cap = match std::env::var("DW_RAID_SIMD").as_deref() {
            Ok("portable") => Kernel::Portable,
            Ok("avx2") => Kernel::Avx2,
            _ => Kernel::Avx512Gfni,
        };
        best.min(cap)
    })
}

/// `outs[o][..len] (^)= sum_i coefs[i][o] * ins[i][..len]` (XOR into the outputs when
/// `accumulate`, else overwrite them), for the largest multiple of the kernel's step; returns
/// how many bytes that was. The caller finishes the rest with [`dot_portable`].
///
/// Panics (assertion) when a buffer is shorter than `len`, `coefs` and `ins` differ in length,
/// or there are not 1 to 3 outputs: all are programming errors.
pub(crate) fn dot(
    kernel: Kernel,
    ins: &[&[u8]],
    coefs: &[[u8; MAX_OUT]],
    outs: &mut [&mut [u8]],
    len: usize,
    accumulate: bool,
) -> usize {
    assert_eq!(ins.len(), coefs.len());
    assert!((1..=MAX_OUT).contains(&outs.len()));
    assert!(ins.iter().all(|b| b.len() >= len));
    assert!(outs.iter().all(|b| b.len() >= len));
    let done = len - len % kernel.step(outs.len());
    if done == 0 || kernel == Kernel::Portable {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let ip: Vec<*const u8> = ins.iter().map(|b| b.as_ptr()).collect();
        let op: Vec<*mut u8> = outs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        // Outputs much larger than the caches are written with non-temporal stores: they are
        // not read again soon, and bypassing the cache saves reading every output line before
        // writing it (a tenth of the traffic of an 8+1 encode). Chunk-sized outputs (the array's
        // case) stay cached for the device write that follows.
        let stream =
            !accumulate && done >= STREAM_MIN && op.iter().all(|p| p.align_offset(64) == 0);
        // SAFETY: `kernel` comes from `available()`/`detected()`, so the CPU has its features
        // (the `Kernel` values other than Portable are only ever produced by feature detection);
        // every input and output holds at least `len >= done` bytes (asserted above), `done` is a
        // multiple of the kernel's step, and the outputs are distinct `&mut` slices that cannot
        // overlap each other or any input.
        unsafe {
            match (kernel, op.len()) {
                (Kernel::Avx512Gfni, 1) => {
                    dot_gfni::<1, WIDE>(&ip, coefs, &op, done, accumulate, stream);
                }
                (Kernel::Avx512Gfni, 2) => {
                    dot_gfni::<2, WIDE>(&ip, coefs, &op, done, accumulate, stream);
                }
                (Kernel::Avx512Gfni, _) => {
                    dot_gfni::<3, LANES>(&ip, coefs, &op, done, accumulate, stream);
                }
                (_, 1) => dot_avx2::<1>(&ip, coefs, &op, done, accumulate, stream),
                (_, 2) => dot_avx2::<2>(&ip, coefs, &op, done, accumulate, stream),
                (_, _) => dot_avx2::<3>(&ip, coefs, &op, done, accumulate, stream),
            }
        }
        done
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Parity rows `0..outs.len()` of the data columns (`None` = a zero column; row r has the
/// coefficients g^(r*i)) over the largest multiple of the AVX2 step, by Horner's rule:
/// multiplying the accumulator by g (or g^2) per column costs a few shifts and masks, where the
/// general AVX2 multiply is a table lookup per coefficient (the technique of Linux's raid6
/// avx2 code). Returns the bytes done; 0 for other kernels (they use [`dot`]).
pub(crate) fn encode(
    kernel: Kernel,
    cols: &[Option<&[u8]>],
    outs: &mut [&mut [u8]],
    len: usize,
) -> usize {
    assert!((1..=MAX_OUT).contains(&outs.len()));
    assert!(cols.iter().flatten().all(|c| c.len() >= len));
    assert!(outs.iter().all(|o| o.len() >= len));
    let done = len - len % (32 * LANES);
    if kernel != Kernel::Avx2 || done == 0 {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let cp: Vec<Option<*const u8>> = cols.iter().map(|c| c.map(<[u8]>::as_ptr)).collect();
        let op: Vec<*mut u8> = outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: `Kernel::Avx2` only comes from feature detection, so the CPU has AVX2; every
        // column and output holds at least `len >= done` bytes (asserted above); `done` is a
        // multiple of the step; outputs are distinct `&mut` slices that overlap no column.
        unsafe {
            match op.len() {
                1 => horner_avx2::<1>(&cp, &op, done),
                2 => horner_avx2::<2>(&cp, &op, done),
                _ => horner_avx2::<3>(&cp, &op, done),
            }
        }
        done
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The portable kernel over `[from, len)`: 8 bytes at a time, then single bytes.
pub(crate) fn dot_portable(
    ins: &[&[u8]],
    coefs: &[[u8; MAX_OUT]],
    outs: &mut [&mut [u8]],
    from: usize,
    len: usize,
    accumulate: bool,
) {
    let n = outs.len();
    let table = |c: u8| &NIBBLES[usize::from(c)];
    let mul_byte = |c: u8, x: u8| {
        let t = table(c);
        t[usize::from(x & 15)] ^ t[16 + usize::from(x >> 4)]
    };
    let mut i = from;
    while i + 8 <= len {
        let mut acc = [0u64; MAX_OUT];
        if accumulate {
            for (a, o) in acc.iter_mut().zip(outs.iter()) {
                *a = word(o, i);
            }
        }
        for (b, c) in ins.iter().zip(coefs) {
            let w = word(b, i);
            for (a, &c) in acc.iter_mut().zip(c.iter()).take(n) {
                *a ^= match c {
                    0 => 0,
                    1 => w,
                    _ => {
                        let mut x = w.to_le_bytes();
                        for v in &mut x {
                            *v = mul_byte(c, *v);
                        }
                        u64::from_le_bytes(x)
                    }
                };
            }
        }
        for (a, o) in acc.iter().zip(outs.iter_mut()) {
            o[i..i + 8].copy_from_slice(&a.to_le_bytes());
        }
        i += 8;
    }
    while i < len {
        let mut acc = [0u8; MAX_OUT];
        if accumulate {
            for (a, o) in acc.iter_mut().zip(outs.iter()) {
                *a = o[i];
            }
        }
        for (b, c) in ins.iter().zip(coefs) {
            for (a, &c) in acc.iter_mut().zip(c.iter()).take(n) {
                *a ^= mul_byte(c, b[i]);
            }
        }
        for (a, o) in acc.iter().zip(outs.iter_mut()) {
            o[i] = *a;
        }
        i += 1;
    }
}

fn word(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

/// Vectors in flight per output: enough independent work to hide the multiply latency.
const LANES: usize = 4;
/// With one or two outputs the AVX-512 kernel keeps twice as many in flight (16 + 8 of the 32
/// vector registers), halving the per-step overhead.
const WIDE: usize = 8;

/// Outputs at least this long are written with non-temporal stores (see [`dot`]).
const STREAM_MIN: usize = 1 << 20;

/// # Safety
/// The CPU has AVX-512F, AVX-512BW and GFNI; every pointer in `ins` and `outs` is valid for
/// `len` bytes (reads, resp. reads and writes); outputs overlap neither each other nor an input;
/// `len` is a multiple of `64 * L`; `coefs.len() == ins.len()`; `outs.len() == O`; with
/// `stream`, every output is 64-byte aligned.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn dot_gfni<const O: usize, const L: usize>(
    ins: &[*const u8],
    coefs: &[[u8; MAX_OUT]],
    outs: &[*mut u8],
    len: usize,
    accumulate: bool,
    stream: bool,
) {
    const V: usize = 64;
    let mut off = 0usize;
    while off < len {
        let mut acc = [[_mm512_setzero_si512(); L]; O];
        if accumulate {
            for (row, o) in acc.iter_mut().zip(outs) {
                for (l, v) in row.iter_mut().enumerate() {
                    // SAFETY: `off + V * L <= len` because `len` is a multiple of
                    // `V * L` and `off < len` steps by it; each pointer is valid for `len`
                    // bytes (the function's contract); the loads and stores are unaligned.
                    *v = unsafe { _mm512_loadu_si512(o.add(off + V * l).cast()) };
                }
            }
        }
        for (p, c) in ins.iter().zip(coefs) {
            let mut d = [_mm512_setzero_si512(); L];
            for (l, v) in d.iter_mut().enumerate() {
                // SAFETY: as above.
                *v = unsafe { _mm512_loadu_si512(p.add(off + V * l).cast()) };
            }
            for (row, &c) in acc.iter_mut().zip(c.iter()) {
                match c {
                    0 => {}
                    1 => {
                        for (a, v) in row.iter_mut().zip(&d) {
                            *a = _mm512_xor_si512(*a, *v);
                        }
                    }
                    _ => {
                        let m = _mm512_set1_epi64(AFFINE[usize::from(c)].cast_signed());
                        for (a, v) in row.iter_mut().zip(&d) {
                            *a = _mm512_xor_si512(*a, _mm512_gf2p8affine_epi64_epi8::<0>(*v, m));
                        }
                    }
                }
            }
        }
        for (row, o) in acc.iter().zip(outs) {
            for (l, v) in row.iter().enumerate() {
                if stream {
                    // SAFETY: as above, and the output is 64-byte aligned (contract), so
                    // `off + V * l` keeps the store aligned.
                    unsafe { _mm512_stream_si512(o.add(off + V * l).cast(), *v) };
                } else {
                    // SAFETY: as above.
                    unsafe { _mm512_storeu_si512(o.add(off + V * l).cast(), *v) };
                }
            }
        }
        off += V * L;
    }
    if stream {
        // Non-temporal stores are weakly ordered: fence them before the caller uses the data.
        _mm_sfence();
    }
}

/// # Safety
/// The CPU has AVX2; every pointer in `ins` and `outs` is valid for `len` bytes (reads, resp.
/// reads and writes); outputs overlap neither each other nor an input; `len` is a multiple of
/// 128; `coefs.len() == ins.len()`; `outs.len() == O`; with `stream`, every output is 64-byte
/// aligned.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2<const O: usize>(
    ins: &[*const u8],
    coefs: &[[u8; MAX_OUT]],
    outs: &[*mut u8],
    len: usize,
    accumulate: bool,
    stream: bool,
) {
    const V: usize = 32;
    let mask = _mm256_set1_epi8(0x0F);
    let mut off = 0usize;
    while off < len {
        let mut acc = [[_mm256_setzero_si256(); LANES]; O];
        if accumulate {
            for (row, o) in acc.iter_mut().zip(outs) {
                for (l, v) in row.iter_mut().enumerate() {
                    // SAFETY: `off + V * LANES <= len` (`len` is a multiple of `V * LANES`,
                    // `off < len` steps by it); each pointer is valid for `len` bytes.
                    *v = unsafe { _mm256_loadu_si256(o.add(off + V * l).cast()) };
                }
            }
        }
        for (p, c) in ins.iter().zip(coefs) {
            let mut d = [_mm256_setzero_si256(); LANES];
            for (l, v) in d.iter_mut().enumerate() {
                // SAFETY: as above.
                *v = unsafe { _mm256_loadu_si256(p.add(off + V * l).cast()) };
            }
            let multiplies = c.iter().take(O).any(|&x| x > 1);
            let mut lo = [_mm256_setzero_si256(); LANES];
            let mut hi = [_mm256_setzero_si256(); LANES];
            if multiplies {
                for l in 0..LANES {
                    lo[l] = _mm256_and_si256(d[l], mask);
                    hi[l] = _mm256_and_si256(_mm256_srli_epi64::<4>(d[l]), mask);
                }
            }
            for (row, &c) in acc.iter_mut().zip(c.iter()) {
                match c {
                    0 => {}
                    1 => {
                        for (a, v) in row.iter_mut().zip(&d) {
                            *a = _mm256_xor_si256(*a, *v);
                        }
                    }
                    _ => {
                        let t = &NIBBLES[usize::from(c)];
                        // SAFETY: the table row is 32 bytes: two 16-byte loads inside it.
                        let (tl, th) = unsafe {
                            (
                                _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast())),
                                _mm256_broadcastsi128_si256(_mm_loadu_si128(
                                    t.as_ptr().add(16).cast(),
                                )),
                            )
                        };
                        for l in 0..LANES {
                            let prod = _mm256_xor_si256(
                                _mm256_shuffle_epi8(tl, lo[l]),
                                _mm256_shuffle_epi8(th, hi[l]),
                            );
                            row[l] = _mm256_xor_si256(row[l], prod);
                        }
                    }
                }
            }
        }
        for (row, o) in acc.iter().zip(outs) {
            for (l, v) in row.iter().enumerate() {
                if stream {
                    // SAFETY: as above, and the output is 64-byte aligned (contract), so
                    // `off + V * l` keeps the store 32-byte aligned.
                    unsafe { _mm256_stream_si256(o.add(off + V * l).cast::<__m256i>(), *v) };
                } else {
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_si256(o.add(off + V * l).cast::<__m256i>(), *v) };
                }
            }
        }
        off += V * LANES;
    }
    if stream {
        // Non-temporal stores are weakly ordered: fence them before the caller uses the data.
        _mm_sfence();
    }
}

/// Multiplies every byte by g = 2 in GF(2^8) (0x11D).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn mul2(v: __m256i, poly: __m256i, zero: __m256i) -> __m256i {
    // Bytes with the top bit set are negative as i8: they overflow and need the reduction.
    let over = _mm256_cmpgt_epi8(zero, v);
    _mm256_xor_si256(_mm256_add_epi8(v, v), _mm256_and_si256(over, poly))
}

/// # Safety
/// The CPU has AVX2; every `Some` column and every output is valid for `len` bytes (reads,
/// resp. writes); outputs overlap neither each other nor a column; `len` is a multiple of 128;
/// `outs.len() == ROWS`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horner_avx2<const ROWS: usize>(cols: &[Option<*const u8>], outs: &[*mut u8], len: usize) {
    const V: usize = 32;
    let poly = _mm256_set1_epi8(0x1D);
    let zero = _mm256_setzero_si256();
    let mut off = 0usize;
    while off < len {
        let mut acc = [[zero; LANES]; ROWS];
        // Highest column first: acc = acc * g^r + D_i, so column i ends up times g^(r*i).
        for col in cols.iter().rev() {
            if ROWS >= 2 {
                for v in &mut acc[1] {
                    *v = mul2(*v, poly, zero);
                }
            }
            if ROWS == 3 {
                for v in &mut acc[2] {
                    *v = mul2(mul2(*v, poly, zero), poly, zero);
                }
            }
            if let Some(p) = *col {
                for l in 0..LANES {
                    // SAFETY: `off + V * LANES <= len` (`len` is a multiple of `V * LANES`,
                    // `off < len` steps by it); the column is valid for `len` bytes.
                    let d = unsafe { _mm256_loadu_si256(p.add(off + V * l).cast()) };
                    for row in &mut acc {
                        row[l] = _mm256_xor_si256(row[l], d);
                    }
                }
            }
        }
        for (row, o) in acc.iter().zip(outs) {
            for (l, v) in row.iter().enumerate() {
                // SAFETY: as above, for the output.
                unsafe { _mm256_storeu_si256(o.add(off + V * l).cast::<__m256i>(), *v) };
            }
        }
        off += V * LANES;
    }
}
