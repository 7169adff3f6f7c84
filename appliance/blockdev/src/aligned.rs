//! Page-aligned buffers for `O_DIRECT` I/O, without `unsafe`: an over-allocated `Vec` sliced at
//! its first aligned address.

use crate::IO_ALIGN;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// A zero-initialised byte buffer whose start is aligned to [`IO_ALIGN`].
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    #[must_use]
    pub fn zeroed(len: usize) -> Self {
        let storage = vec![0u8; len + IO_ALIGN];
        let start = storage.as_ptr().align_offset(IO_ALIGN);
        // `align_offset` on a u8 pointer always succeeds and is < IO_ALIGN.
        assert!(start < IO_ALIGN, "align_offset out of range");
        Self {
            storage,
            start,
            len,
        }
    }

    /// An aligned copy of `data`.
    #[must_use]
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::zeroed(data.len());
        b.copy_from_slice(data);
        b
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes the length, keeping the alignment; new bytes are zero. Reallocates only when
    /// growing past the capacity.
    pub fn resize(&mut self, len: usize) {
        if self.start + len <= self.storage.len() {
            if len > self.len {
                self.storage[self.start + self.len..self.start + len].fill(0);
            }
            self.len = len;
        } else {
            let mut n = Self::zeroed(len);
            n[..self.len].copy_from_slice(self);
            *self = n;
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// True when `buf` starts at an [`IO_ALIGN`]-aligned address and its length is a multiple of
/// `sector`.
#[must_use]
pub(crate) fn is_aligned(buf: &[u8], sector: usize) -> bool {
    buf.as_ptr().align_offset(IO_ALIGN) == 0 && buf.len().is_multiple_of(sector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 4095, 4096, 65536 + 7] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr().align_offset(IO_ALIGN), 0);
            assert!(b.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn resize_keeps_data_and_alignment() {
        let mut b = AlignedBuf::from_slice(&[7u8; 100]);
        b.resize(50);
        b.resize(200);
        assert_eq!(&b[..50], &[7u8; 50][..]);
        assert!(b[50..].iter().all(|&x| x == 0));
        b.resize(100_000);
        assert_eq!(b.as_ptr().align_offset(IO_ALIGN), 0);
        assert_eq!(&b[..50], &[7u8; 50][..]);
    }
}
