//! ISA-L (Intel's storage acceleration library) loaded at run time as the parity baseline.
//! Only the benchmark uses it; nothing in the appliance links it. The crate's only `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uchar, c_void};

use anyhow::{Context, Result, bail};
use libloading::{Library, Symbol};

type PqGen = unsafe extern "C" fn(c_int, c_int, *mut *mut c_void) -> c_int;
type GenMatrix = unsafe extern "C" fn(*mut c_uchar, c_int, c_int);
type InitTables = unsafe extern "C" fn(c_int, c_int, *mut c_uchar, *mut c_uchar);
type Encode =
    unsafe extern "C" fn(c_int, c_int, c_int, *mut c_uchar, *mut *mut c_uchar, *mut *mut c_uchar);
type Invert = unsafe extern "C" fn(*mut c_uchar, *mut c_uchar, c_int) -> c_int;

/// The loaded library.
#[derive(Debug)]
pub struct Isal {
    lib: Library,
}

fn int(v: usize) -> c_int {
    c_int::try_from(v).unwrap_or(c_int::MAX)
}

impl Isal {
    /// Loads `libisal.so.2` (Debian package libisal2).
    ///
    /// # Errors
    /// When the library is not installed.
    pub fn load() -> Result<Self> {
        // SAFETY: loading a well-known shared library; its initialisers are ISA-L's own
        // (CPU feature dispatch) and have no preconditions.
        let lib = unsafe { Library::new("libisal.so.2") }
            .context("ISA-L is not installed (apt-get install libisal2)")?;
        Ok(Self { lib })
    }

    fn sym<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>> {
        // SAFETY: each symbol is used with the C signature from isa-l's public headers
        // (include/raid.h, include/erasure_code.h).
        unsafe { self.lib.get(name) }
            .with_context(|| format!("ISA-L lacks {}", String::from_utf8_lossy(name)))
    }

    /// XOR (`p = 1`) or P+Q (`p = 2`) parity of `data` into `parity` with `xor_gen`/`pq_gen`.
    ///
    /// # Errors
    /// Bad lengths (multiples of 32, at least 2 sources).
    pub fn raid_gen(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<()> {
        let len = parity[0].len();
        let mut ptrs: Vec<*mut c_void> =
            data.iter().map(|d| d.as_ptr().cast_mut().cast()).collect();
        ptrs.extend(parity.iter_mut().map(|p| p.as_mut_ptr().cast::<c_void>()));
        let name: &[u8] = if parity.len() == 1 {
            b"xor_gen"
        } else {
            b"pq_gen"
        };
        let f: Symbol<'_, PqGen> = self.sym(name)?;
        // SAFETY: `ptrs` holds data.len() sources and then the parity buffers, each `len`
        // bytes long, as the function expects; ISA-L only reads sources and writes parity.
        let rc = unsafe { f(int(ptrs.len()), int(len), ptrs.as_mut_ptr()) };
        if rc != 0 {
            bail!("ISA-L {} returned {rc}", String::from_utf8_lossy(name));
        }
        Ok(())
    }

    /// Prepared Reed-Solomon tables for `k` data and `rows` outputs from `matrix` (rows x k).
    ///
    /// # Errors
    /// Missing symbols.
    pub fn tables(&self, k: usize, rows: usize, matrix: &mut [u8]) -> Result<Vec<u8>> {
        let init: Symbol<'_, InitTables> = self.sym(b"ec_init_tables")?;
        let mut t = vec![0u8; k * rows * 32];
        assert!(matrix.len() >= k * rows);
        // SAFETY: matrix has rows*k bytes and the tables 32*k*rows, as ec_init_tables requires.
        unsafe { init(int(k), int(rows), matrix.as_mut_ptr(), t.as_mut_ptr()) };
        Ok(t)
    }

    /// The Cauchy encode matrix ((k+p) x k, identity on top) of ISA-L's examples.
    ///
    /// # Errors
    /// Missing symbols.
    pub fn cauchy(&self, k: usize, p: usize) -> Result<Vec<u8>> {
        let g: Symbol<'_, GenMatrix> = self.sym(b"gf_gen_cauchy1_matrix")?;
        let mut m = vec![0u8; (k + p) * k];
        // SAFETY: the buffer holds (k+p)*k bytes.
        unsafe { g(m.as_mut_ptr(), int(k + p), int(k)) };
        Ok(m)
    }

    /// Inverts an n x n matrix.
    ///
    /// # Errors
    /// Singular matrix or missing symbol.
    pub fn invert(&self, m: &[u8], n: usize) -> Result<Vec<u8>> {
        let f: Symbol<'_, Invert> = self.sym(b"gf_invert_matrix")?;
        let mut a = m.to_vec();
        let mut out = vec![0u8; n * n];
        // SAFETY: both buffers hold n*n bytes.
        let rc = unsafe { f(a.as_mut_ptr(), out.as_mut_ptr(), int(n)) };
        if rc != 0 {
            bail!("singular matrix");
        }
        Ok(out)
    }

    /// `ec_encode_data`: `outs[r] = sum tables(r, i) * ins[i]`.
    ///
    /// # Errors
    /// Missing symbol.
    pub fn encode(
        &self,
        k: usize,
        tables: &mut [u8],
        ins: &[&[u8]],
        outs: &mut [&mut [u8]],
    ) -> Result<()> {
        let f: Symbol<'_, Encode> = self.sym(b"ec_encode_data")?;
        let len = outs[0].len();
        let mut ip: Vec<*mut c_uchar> = ins.iter().map(|d| d.as_ptr().cast_mut()).collect();
        let mut op: Vec<*mut c_uchar> = outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        assert_eq!(ip.len(), k);
        assert!(tables.len() >= 32 * k * op.len());
        // SAFETY: k input and outs.len() output buffers of `len` bytes; tables prepared for
        // k x outs.len(); ISA-L reads inputs and writes outputs only.
        unsafe {
            f(
                int(len),
                int(k),
                int(op.len()),
                tables.as_mut_ptr(),
                ip.as_mut_ptr(),
                op.as_mut_ptr(),
            )
        };
        Ok(())
    }
}
