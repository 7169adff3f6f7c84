//! Arithmetic in GF(2^8), the field the parity is computed in.
//!
//! On-disk format decision (documented in docs/FORMAT.md): the field is GF(2)[x] modulo
//! x^8 + x^4 + x^3 + x^2 + 1 (0x11D), the generator is g = 2 (primitive for 0x11D). With data
//! columns D_0..D_{k-1}, parity row j (0 = P, 1 = Q, 2 = R) is
//!
//! ```text
//!   P = sum D_i          Q = sum g^i D_i          R = sum g^(2i) D_i
//! ```
//!
//! — the Linux md RAID-6 Q and the ZFS RAID-Z3 R. Any `e <= p` erased columns can be solved for
//! because every square submatrix of the rows (1, x_i, x_i^2) with distinct nonzero
//! x_i = g^i is a (generalised) Vandermonde matrix and therefore invertible; this bounds the
//! data columns to 255.

/// The reduction polynomial without the x^8 term.
pub const POLY: u8 = 0x1D;

/// The largest number of data columns the code supports.
pub const MAX_DATA_COLUMNS: usize = 255;

// Values are reduced below 256 before every narrowing cast.
#[allow(clippy::cast_possible_truncation)]
const fn build_tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x100 | POLY as u16;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = build_tables();
/// exp[i] = g^i (doubled so sums of two logs index directly).
pub const EXP: [u8; 512] = TABLES.0;
/// log[x] for x != 0.
pub const LOG: [u8; 256] = TABLES.1;

/// a * b by shift-and-add, usable in constant expressions (the tables below are built with
/// it; [`mul`] is the fast version).
#[must_use]
pub const fn mul_slow(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut r) = (a, b, 0u8);
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= POLY;
        }
        b >>= 1;
    }
    r
}

/// The GF(2)-linear map "multiply by `c`" as the 8x8 bit matrix of the x86 GFNI instruction
/// `gf2p8affineqb`: byte `7 - i` of the result holds the row for output bit `i`, whose bit `j`
/// is bit `i` of `c * 2^j`. (The instruction's own `gf2p8mulb` uses the AES polynomial 0x11B,
/// not ours; the affine form works for any polynomial.)
const fn affine_matrix(c: u8) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < 8 {
        let mut row = 0u8;
        let mut j = 0;
        while j < 8 {
            if (mul_slow(c, 1 << j) >> i) & 1 != 0 {
                row |= 1 << j;
            }
            j += 1;
        }
        m |= (row as u64) << (8 * (7 - i));
        i += 1;
    }
    m
}

const fn build_affine() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        // c < 256: the narrowing is exact.
        #[allow(clippy::cast_possible_truncation)]
        let b = c as u8;
        t[c] = affine_matrix(b);
        c += 1;
    }
    t
}

/// `AFFINE[c]`: the GFNI matrix multiplying by `c` (see [`affine_matrix`]).
pub(crate) static AFFINE: [u64; 256] = build_affine();

const fn build_nibbles() -> [[u8; 32]; 256] {
    let mut t = [[0u8; 32]; 256];
    let mut c = 0;
    while c < 256 {
        let mut x = 0;
        while x < 16 {
            // c, x < 256: the narrowings are exact.
            #[allow(clippy::cast_possible_truncation)]
            let (cb, xb) = (c as u8, x as u8);
            t[c][x] = mul_slow(cb, xb);
            t[c][16 + x] = mul_slow(cb, xb << 4);
            x += 1;
        }
        c += 1;
    }
    t
}

/// `NIBBLES[c]`: `c * x` for the low nibbles `x` (bytes 0..16) and `c * (x << 4)` for the high
/// nibbles (bytes 16..32), the split-table multiply of `vpshufb` kernels.
pub(crate) static NIBBLES: [[u8; 32]; 256] = build_nibbles();

/// a * b.
#[must_use]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[usize::from(LOG[usize::from(a)]) + usize::from(LOG[usize::from(b)])]
    }
}

/// 1 / a for a != 0.
#[must_use]
pub fn inv(a: u8) -> u8 {
    assert_ne!(a, 0, "zero has no inverse");
    EXP[255 - usize::from(LOG[usize::from(a)])]
}

/// g^e.
#[must_use]
pub fn pow_g(e: usize) -> u8 {
    EXP[e % 255]
}

/// The coefficient of data column `col` in parity row `row`: g^(row * col).
#[must_use]
pub fn coef(row: usize, col: usize) -> u8 {
    pow_g(row * col)
}

/// Inverts a small square matrix (at most 3x3 here) by Gauss-Jordan elimination.
/// Returns `None` when it is singular (which the code's construction rules out for valid input).
#[must_use]
pub fn invert(m: &[[u8; 3]; 3], n: usize) -> Option<[[u8; 3]; 3]> {
    assert!(n <= 3);
    let mut a = *m;
    let mut r = [[0u8; 3]; 3];
    for (i, row) in r.iter_mut().enumerate().take(n) {
        row[i] = 1;
    }
    for col in 0..n {
        let pivot = (col..n).find(|&i| a[i][col] != 0)?;
        a.swap(col, pivot);
        r.swap(col, pivot);
        let f = inv(a[col][col]);
        for j in 0..n {
            a[col][j] = mul(a[col][j], f);
            r[col][j] = mul(r[col][j], f);
        }
        for i in 0..n {
            if i != col && a[i][col] != 0 {
                let f = a[i][col];
                for j in 0..n {
                    a[i][j] ^= mul(f, a[col][j]);
                    r[i][j] ^= mul(f, r[col][j]);
                }
            }
        }
    }
    Some(r)
}

/// The 16-entry nibble tables for multiplying by `c`: `lo[x] = c*x`, `hi[x] = c*(x<<4)`.
#[must_use]
pub fn nibble_tables(c: u8) -> ([u8; 16], [u8; 16]) {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    for x in 0..16u8 {
        lo[usize::from(x)] = mul(c, x);
        hi[usize::from(x)] = mul(c, x << 4);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_axioms() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "a * 1/a = 1 for {a}");
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
        // g = 2 generates the multiplicative group: 255 distinct powers.
        let mut seen = [false; 256];
        for e in 0..255 {
            let v = pow_g(e);
            assert!(!seen[usize::from(v)], "g^{e} repeats");
            seen[usize::from(v)] = true;
        }
        // Distributivity spot check over all pairs with a fixed third element.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a ^ b, 0x53), mul(a, 0x53) ^ mul(b, 0x53));
            }
        }
    }

    #[test]
    fn tables_agree_with_mul() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul_slow(a, b), mul(a, b));
                let t = &NIBBLES[usize::from(a)];
                assert_eq!(
                    t[usize::from(b & 15)] ^ t[16 + usize::from(b >> 4)],
                    mul(a, b)
                );
                // The affine form, evaluated bit by bit as the instruction does.
                let m = AFFINE[usize::from(a)].to_le_bytes();
                let y = (0..8).fold(0u8, |y, i| {
                    y | (u8::from((m[7 - i] & b).count_ones() % 2 == 1) << i)
                });
                assert_eq!(y, mul(a, b), "affine {a} * {b}");
            }
        }
    }

    #[test]
    fn known_values() {
        // 0x11D field: 2^8 = 0x1D, 0x80 * 2 = 0x1D.
        assert_eq!(pow_g(8), 0x1D);
        assert_eq!(mul(0x80, 2), 0x1D);
        assert_eq!(mul(0x57, 0x13), mul(0x13, 0x57));
    }

    #[test]
    fn vandermonde_submatrices_invertible() {
        // Any 3 distinct data columns under rows P,Q,R are solvable.
        for i in 0..40 {
            for j in i + 1..40 {
                for k in j + 1..40 {
                    let m = [
                        [coef(0, i), coef(0, j), coef(0, k)],
                        [coef(1, i), coef(1, j), coef(1, k)],
                        [coef(2, i), coef(2, j), coef(2, k)],
                    ];
                    let inv = invert(&m, 3).expect("invertible");
                    // m * inv = I
                    for (r, mrow) in m.iter().enumerate() {
                        #[allow(clippy::needless_range_loop)]
                        for c in 0..3 {
                            let s = (0..3).fold(0u8, |s, t| s ^ mul(mrow[t], inv[t][c]));
                            assert_eq!(s, u8::from(r == c));
                        }
                    }
                }
            }
        }
    }
}
