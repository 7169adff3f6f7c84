//! The crate's only `unsafe` code: AVX2 kernels for parity generation and GF(2^8)
//! multiply-accumulate. Each has a portable twin in `parity.rs`; tests check they agree.
//!
//! Generation uses Horner's rule per 32-byte lane (multiply the accumulator by g, add the next
//! column), the technique of Linux's raid6 avx2 code; multiplication by an arbitrary constant
//! uses the split-nibble table lookup (`vpshufb`) of ISA-L.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256i, _mm_loadu_si128, _mm256_add_epi8, _mm256_and_si256, _mm256_broadcastsi128_si256,
    _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_set1_epi8, _mm256_setzero_si256,
    _mm256_shuffle_epi8, _mm256_srli_epi64, _mm256_storeu_si256, _mm256_xor_si256,
};

/// Whether the AVX2 kernels may be used on this CPU.
#[must_use]
pub(crate) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Bytes per kernel step: 4 lanes of 32 bytes.
pub(crate) const STEP: usize = 128;

/// Computes parity rows `0..out.len()` (1 to 3) over `cols` for the first
/// `len - len % STEP` bytes and returns how many bytes it did. `None` columns are zero.
///
/// Panics (assertion) if lengths disagree; returns 0 without AVX2.
pub(crate) fn gen_rows(cols: &[Option<&[u8]>], out: &mut [&mut [u8]], len: usize) -> usize {
    let done = len - len % STEP;
    assert!(cols.iter().flatten().all(|c| c.len() >= len));
    assert!(out.iter().all(|o| o.len() >= len));
    if !avx2() || done == 0 {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let ptrs: Vec<Option<*const u8>> = cols.iter().map(|c| c.map(<[u8]>::as_ptr)).collect();
        let mut outs: Vec<*mut u8> = out.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: AVX2 is present (checked above); every column and output holds at least
        // `len >= done` bytes (asserted above); outputs are distinct `&mut` slices, so the
        // stores cannot overlap the loads of another output.
        unsafe {
            match outs.len() {
                1 => gen_avx2::<1>(&ptrs, &mut outs, done),
                2 => gen_avx2::<2>(&ptrs, &mut outs, done),
                3 => gen_avx2::<3>(&ptrs, &mut outs, done),
                n => unreachable!("{n} parity rows"),
            }
        }
        done
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn mul2(v: __m256i, poly: __m256i, zero: __m256i) -> __m256i {
    // Bytes with the top bit set are negative as i8: they overflow and need the reduction.
    let over = _mm256_cmpgt_epi8(zero, v);
    _mm256_xor_si256(_mm256_add_epi8(v, v), _mm256_and_si256(over, poly))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gen_avx2<const ROWS: usize>(cols: &[Option<*const u8>], out: &mut [*mut u8], len: usize) {
    let poly = _mm256_set1_epi8(0x1D);
    let zero = _mm256_setzero_si256();
    let mut off = 0usize;
    while off < len {
        let mut acc = [[zero; 4]; ROWS];
        for col in cols.iter().rev() {
            for row in acc.iter_mut().skip(1).take(1) {
                for v in row.iter_mut() {
                    *v = mul2(*v, poly, zero);
                }
            }
            if ROWS == 3 {
                for v in &mut acc[ROWS - 1] {
                    *v = mul2(mul2(*v, poly, zero), poly, zero);
                }
            }
            if let Some(p) = *col {
                for lane in 0..4 {
                    // SAFETY: `off + 32 * lane + 32 <= len`, inside the column (caller contract).
                    let d = unsafe { _mm256_loadu_si256(p.add(off + 32 * lane).cast()) };
                    for row in &mut acc {
                        row[lane] = _mm256_xor_si256(row[lane], d);
                    }
                }
            }
        }
        for (row, o) in acc.iter().zip(out.iter()) {
            for (lane, v) in row.iter().enumerate() {
                // SAFETY: `off + 32 * lane + 32 <= len`, inside the output (caller contract).
                unsafe { _mm256_storeu_si256(o.add(off + 32 * lane).cast(), *v) };
            }
        }
        off += STEP;
    }
}

/// `dst ^= c * src` for the first `len - len % 32` bytes; returns how many it did (0 without
/// AVX2).
pub(crate) fn mul_acc(dst: &mut [u8], src: &[u8], lo: &[u8; 16], hi: &[u8; 16]) -> usize {
    let len = dst.len().min(src.len());
    let done = len - len % 32;
    if !avx2() || done == 0 {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX2 is present; both slices hold at least `done` bytes and cannot overlap
        // (one is `&mut`).
        unsafe { mul_acc_avx2(dst.as_mut_ptr(), src.as_ptr(), lo, hi, done) };
        done
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mul_acc_avx2(dst: *mut u8, src: *const u8, lo: &[u8; 16], hi: &[u8; 16], len: usize) {
    // SAFETY: the tables are 16 bytes each.
    let (lo_t, hi_t) = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr().cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr().cast())),
        )
    };
    let mask = _mm256_set1_epi8(0x0F);
    let mut off = 0usize;
    while off < len {
        // SAFETY: `off + 32 <= len`, inside both buffers (caller contract).
        let (s, d) = unsafe {
            (
                _mm256_loadu_si256(src.add(off).cast()),
                _mm256_loadu_si256(dst.add(off).cast::<__m256i>()),
            )
        };
        let l = _mm256_and_si256(s, mask);
        let h = _mm256_and_si256(_mm256_srli_epi64(s, 4), mask);
        let p = _mm256_xor_si256(_mm256_shuffle_epi8(lo_t, l), _mm256_shuffle_epi8(hi_t, h));
        // SAFETY: as above.
        unsafe { _mm256_storeu_si256(dst.add(off).cast(), _mm256_xor_si256(d, p)) };
        off += 32;
    }
}
