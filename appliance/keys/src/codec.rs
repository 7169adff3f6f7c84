//! Bounded byte readers and writers shared by every binary format in this crate.
//!
//! The reader never trusts a length field: every read checks the remaining input first and
//! returns [`Truncated`] instead of panicking or allocating.

/// The input ended before a field could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input ends inside field `{field}`: {needed} bytes needed, {available} left")]
pub struct Truncated {
    /// The field being read.
    pub field: &'static str,
    /// Bytes the field needs.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

/// A cursor over untrusted input.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        if n > self.remaining() {
            return Err(Truncated {
                field,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16_le(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32_le(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64_le(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u16_be(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32_be(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64_be(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}

/// An append-only little-endian writer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
    /// Overwrites 4 bytes at `at` with `v` (used to patch a length field written earlier).
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Converts a length that the encoder itself bounded to the field width. A failure is a bug in
/// this crate (a validation step let an oversized value through), not bad input.
pub(crate) fn len_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or_else(|_| panic!("bounded length {n} does not fit in u8"))
}

/// See [`len_u8`].
pub(crate) fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or_else(|_| panic!("bounded length {n} does not fit in u16"))
}

/// See [`len_u8`].
pub(crate) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("bounded length {n} does not fit in u32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_read_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_le("a"), Ok(0x0201));
        assert_eq!(
            r.u16_le("b"),
            Err(Truncated {
                field: "b",
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.u8("c"), Ok(3));
        assert_eq!(r.remaining(), 0);
        assert!(r.bytes(usize::MAX, "huge").is_err());
    }

    #[test]
    fn big_endian_reads() {
        let mut r = Reader::new(&[0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(r.u16_be("a"), Ok(1));
        assert_eq!(r.u32_be("b"), Ok(2));
        assert_eq!(r.u64_be("c"), Ok(3));
    }
}
