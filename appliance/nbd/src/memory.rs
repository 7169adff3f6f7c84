//! [`MemoryExport`]: a thin-provisioned export held in memory, for tests and benchmarks.

use parking_lot::RwLock;
use thiserror::Error;

use crate::export::{BlockExport, BlockSizes, BlockSizesError, ExportError};

/// Allocation unit: a chunk is allocated on first write and freed by a trim that covers it.
const CHUNK: u64 = 64 * 1024;
/// Largest memory export (bounds the chunk table; the data itself is allocated lazily).
pub const MAX_MEMORY_EXPORT_SIZE: u64 = 1 << 40;

/// One allocation unit; `None` reads as zeroes.
type Chunk = RwLock<Option<Box<[u8]>>>;

/// Behaviour of a [`MemoryExport`].
#[derive(Debug, Clone)]
pub struct MemoryExportOptions {
    /// Refuse writes.
    pub read_only: bool,
    /// Block size constraints to advertise (and that the server enforces).
    pub block_sizes: BlockSizes,
    /// Advertise trim.
    pub can_trim: bool,
    /// Advertise write-zeroes.
    pub can_write_zeroes: bool,
    /// Advertise flush/FUA (a no-op in memory).
    pub can_flush: bool,
    /// Advertise multi-conn (true: all connections share this memory).
    pub can_multi_conn: bool,
    /// See [`BlockExport::inline_io_limit`]; memory copies are cheap, so the default runs
    /// requests up to 64 KiB inline (larger ones are copied in parallel on the I/O threads).
    pub inline_io_limit: u32,
}

impl Default for MemoryExportOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            block_sizes: BlockSizes::DEFAULT,
            can_trim: true,
            can_write_zeroes: true,
            can_flush: true,
            can_multi_conn: true,
            inline_io_limit: 64 * 1024,
        }
    }
}

/// Creating a [`MemoryExport`] failed.
#[derive(Debug, Error)]
pub enum MemoryExportError {
    /// The requested size is above [`MAX_MEMORY_EXPORT_SIZE`].
    #[error("memory export of {0} bytes is larger than the {MAX_MEMORY_EXPORT_SIZE}-byte limit")]
    TooLarge(u64),
    /// The block sizes break the NBD rules.
    #[error("invalid block sizes for memory export: {0}")]
    BlockSizes(#[from] BlockSizesError),
    /// Initial contents longer than the export.
    #[error("initial contents of {contents} bytes do not fit in an export of {size} bytes")]
    ContentsTooLarge {
        /// Bytes given.
        contents: u64,
        /// Export size.
        size: u64,
    },
}

/// An export held in memory in 64 KiB chunks, allocated on first write (unwritten and
/// trimmed ranges read as zeroes). Each chunk has its own lock, so concurrent requests on
/// different chunks do not contend.
pub struct MemoryExport {
    size: u64,
    chunks: Box<[Chunk]>,
    options: MemoryExportOptions,
}

impl std::fmt::Debug for MemoryExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryExport")
            .field("size", &self.size)
            .field("allocated_bytes", &self.allocated_bytes())
            .field("options", &self.options)
            .finish()
    }
}

impl MemoryExport {
    /// A zero-filled writable export of `size` bytes with default options.
    pub fn new(size: u64) -> Result<Self, MemoryExportError> {
        Self::with_options(size, MemoryExportOptions::default())
    }

    /// A zero-filled export of `size` bytes.
    pub fn with_options(
        size: u64,
        options: MemoryExportOptions,
    ) -> Result<Self, MemoryExportError> {
        if size > MAX_MEMORY_EXPORT_SIZE {
            return Err(MemoryExportError::TooLarge(size));
        }
        options.block_sizes.validate()?;
        let count =
            usize::try_from(size.div_ceil(CHUNK)).map_err(|_| MemoryExportError::TooLarge(size))?;
        let chunks = (0..count).map(|_| RwLock::new(None)).collect();
        Ok(Self {
            size,
            chunks,
            options,
        })
    }

    /// An export of `size` bytes whose first bytes are `contents`.
    pub fn from_contents(
        size: u64,
        contents: &[u8],
        options: MemoryExportOptions,
    ) -> Result<Self, MemoryExportError> {
        let export = Self::with_options(size, options)?;
        let len = contents.len() as u64;
        if len > size {
            return Err(MemoryExportError::ContentsTooLarge {
                contents: len,
                size,
            });
        }
        export.copy_in(0, contents);
        Ok(export)
    }

    /// Bytes of memory currently allocated for data.
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.iter().filter(|c| c.read().is_some()).count() as u64 * CHUNK
    }

    /// Copy of the whole export (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(self.size).unwrap_or(0)];
        self.copy_out(0, &mut v);
        v
    }

    /// Calls `f(chunk_index, offset_in_chunk, range_in_request)` for each chunk that
    /// `[offset, offset + len)` touches. The caller has checked the range against the size.
    fn for_each_chunk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(usize, usize, std::ops::Range<usize>),
    ) {
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let index = pos / CHUNK;
            let within = pos % CHUNK;
            let step = (CHUNK - within).min(len - done);
            // Every value here is bounded by CHUNK or by an in-memory buffer length.
            let (Ok(index), Ok(within), Ok(start), Ok(end)) = (
                usize::try_from(index),
                usize::try_from(within),
                usize::try_from(done),
                usize::try_from(done + step),
            ) else {
                return;
            };
            f(index, within, start..end);
            done += step;
        }
    }

    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * CHUNK;
        usize::try_from((self.size - start).min(CHUNK)).unwrap_or(0)
    }

    fn copy_out(&self, offset: u64, buf: &mut [u8]) {
        self.for_each_chunk(offset, buf.len() as u64, |index, within, range| {
            let dst = &mut buf[range];
            match &*self.chunks[index].read() {
                Some(data) => dst.copy_from_slice(&data[within..within + dst.len()]),
                None => dst.fill(0),
            }
        });
    }

    fn copy_in(&self, offset: u64, data: &[u8]) {
        self.for_each_chunk(offset, data.len() as u64, |index, within, range| {
            let src = &data[range];
            let mut slot = self.chunks[index].write();
            let chunk =
                slot.get_or_insert_with(|| vec![0u8; self.chunk_len(index)].into_boxed_slice());
            chunk[within..within + src.len()].copy_from_slice(src);
        });
    }

    fn zero(&self, offset: u64, len: u64, deallocate: bool) {
        self.for_each_chunk(offset, len, |index, within, range| {
            let n = range.len();
            let mut slot = self.chunks[index].write();
            if deallocate && within == 0 && n == self.chunk_len(index) {
                *slot = None;
            } else if let Some(chunk) = slot.as_mut() {
                chunk[within..within + n].fill(0);
            } else if !deallocate {
                // NO_HOLE: the range must end up allocated.
                let mut chunk = vec![0u8; self.chunk_len(index)].into_boxed_slice();
                chunk[within..within + n].fill(0);
                *slot = Some(chunk);
            }
        });
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ExportError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(ExportError::InvalidArgument(format!(
                "range {offset}+{len} is outside the {}-byte memory export",
                self.size
            ))),
        }
    }

    fn check_writable(&self) -> Result<(), ExportError> {
        if self.options.read_only {
            Err(ExportError::PermissionDenied(
                "the memory export is read-only".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl BlockExport for MemoryExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        self.options.block_sizes
    }

    fn read_only(&self) -> bool {
        self.options.read_only
    }

    fn can_flush(&self) -> bool {
        self.options.can_flush
    }

    fn can_trim(&self) -> bool {
        self.options.can_trim
    }

    fn can_write_zeroes(&self) -> bool {
        self.options.can_write_zeroes
    }

    fn can_multi_conn(&self) -> bool {
        self.options.can_multi_conn
    }

    fn inline_io_limit(&self) -> u32 {
        self.options.inline_io_limit
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError> {
        self.check(offset, buf.len() as u64)?;
        self.copy_out(offset, buf);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, data.len() as u64)?;
        self.copy_in(offset, data);
        Ok(())
    }

    fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, len)?;
        self.zero(offset, len, true);
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        _fua: bool,
    ) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, len)?;
        self.zero(offset, len, may_trim);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_write_across_chunks() {
        let e = MemoryExport::new(3 * CHUNK + 100).unwrap();
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        e.write(CHUNK - 7, &data, false).unwrap();
        let mut back = vec![0u8; data.len()];
        e.read(CHUNK - 7, &mut back).unwrap();
        assert_eq!(back, data);
        let mut head = vec![1u8; 10];
        e.read(0, &mut head).unwrap();
        assert_eq!(head, vec![0u8; 10]);
        // Partial last chunk.
        e.write(3 * CHUNK + 90, &[9u8; 10], false).unwrap();
        assert!(e.write(3 * CHUNK + 91, &[9u8; 10], false).is_err());
    }

    #[test]
    fn trim_frees_whole_chunks_and_zeroes_partial_ones() {
        let e = MemoryExport::new(4 * CHUNK).unwrap();
        e.write(0, &vec![0xaa; usize::try_from(4 * CHUNK).unwrap()], false)
            .unwrap();
        assert_eq!(e.allocated_bytes(), 4 * CHUNK);
        e.trim(CHUNK / 2, 2 * CHUNK, false).unwrap();
        assert_eq!(e.allocated_bytes(), 3 * CHUNK);
        let v = e.to_vec();
        let half = usize::try_from(CHUNK / 2).unwrap();
        assert!(v[..half].iter().all(|&b| b == 0xaa));
        assert!(v[half..5 * half].iter().all(|&b| b == 0));
        assert!(v[5 * half..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn write_zeroes_no_hole_allocates() {
        let e = MemoryExport::new(2 * CHUNK).unwrap();
        e.write_zeroes(0, 2 * CHUNK, false, false).unwrap();
        assert_eq!(e.allocated_bytes(), 2 * CHUNK);
        e.write_zeroes(0, 2 * CHUNK, true, false).unwrap();
        assert_eq!(e.allocated_bytes(), 0);
    }

    #[test]
    fn read_only_refuses_changes() {
        let e = MemoryExport::with_options(
            CHUNK,
            MemoryExportOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(
            e.write(0, &[1], false),
            Err(ExportError::PermissionDenied(_))
        ));
        assert!(e.trim(0, 1, false).is_err());
        assert!(e.write_zeroes(0, 1, true, false).is_err());
    }

    #[test]
    fn size_limits() {
        assert!(matches!(
            MemoryExport::new(MAX_MEMORY_EXPORT_SIZE + 1),
            Err(MemoryExportError::TooLarge(_))
        ));
        assert!(MemoryExport::from_contents(4, &[1, 2, 3, 4, 5], Default::default()).is_err());
        let e = MemoryExport::new(0).unwrap();
        assert!(e.read(0, &mut []).is_ok());
        assert!(e.read(0, &mut [0]).is_err());
        assert!(e.read(u64::MAX, &mut [0]).is_err());
    }

    proptest! {
        #[test]
        fn matches_a_flat_model(ops in proptest::collection::vec((0u8..4, 0u64..300_000, 0u64..150_000, any::<u8>()), 1..40)) {
            let size = 262_144 + 17;
            let e = MemoryExport::new(size).unwrap();
            let mut model = vec![0u8; usize::try_from(size).unwrap()];
            for (op, off, len, byte) in ops {
                let ok_range = off.checked_add(len).is_some_and(|end| end <= size);
                let (o, l) = (usize::try_from(off).unwrap(), usize::try_from(len).unwrap());
                match op {
                    0 => {
                        let r = e.write(off, &vec![byte; l], false);
                        prop_assert_eq!(r.is_ok(), ok_range);
                        if ok_range { model[o..o + l].fill(byte); }
                    }
                    1 | 2 => {
                        let r = if op == 1 { e.trim(off, len, false) } else { e.write_zeroes(off, len, byte % 2 == 0, false) };
                        prop_assert_eq!(r.is_ok(), ok_range);
                        if ok_range { model[o..o + l].fill(0); }
                    }
                    _ => {
                        let mut buf = vec![0x55u8; l];
                        let r = e.read(off, &mut buf);
                        prop_assert_eq!(r.is_ok(), ok_range);
                        if ok_range { prop_assert_eq!(&buf[..], &model[o..o + l]); }
                    }
                }
            }
            prop_assert_eq!(e.to_vec(), model);
        }
    }
}
