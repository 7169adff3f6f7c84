//! The write-intent bitmap: which regions of the members may have writes in flight.
//!
//! Before the first write to a region whose bit is clear, the bit is set on every member and
//! flushed; bits are cleared lazily, once a region has seen no write during a whole flush
//! interval. After an unclean shutdown only the regions whose bit is set need resynchronising
//! (mirrors copied, parity recomputed). Each 4 KiB page carries its own checksum; a damaged page
//! reads as "every region dirty", which is always safe.
//!
//! Page layout (little-endian): magic `DWBITMAP` (0..8), array uuid (8..24), sequence (24..32),
//! page index (32..36), reserved (36..40), bits (40..4092, bit i of byte j = region
//! `page * BITS_PER_PAGE + 8j + i`), CRC-32C of bytes 0..4092 (4092..4096).

use uuid::Uuid;

/// Page size.
pub const PAGE: usize = 4096;
const MAGIC: [u8; 8] = *b"DWBITMAP";
const BITS_AT: usize = 40;
const CRC_AT: usize = PAGE - 4;
/// Bytes of bits per page.
const BYTES_PER_PAGE: usize = CRC_AT - BITS_AT;
/// Regions tracked per page.
pub const BITS_PER_PAGE: u64 = (BYTES_PER_PAGE * 8) as u64;

/// Why a bitmap page was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapPageError {
    /// Not a bitmap page, or a page of another array.
    #[error("not a bitmap page of this array")]
    Foreign,
    /// Checksum mismatch.
    #[error("bitmap page checksum mismatch")]
    BadChecksum,
    /// Wrong page index.
    #[error("bitmap page index {found}, expected {expected}")]
    WrongIndex {
        /// Found.
        found: u32,
        /// Expected.
        expected: u32,
    },
}

/// A set bit is cleared only after its region saw no write for this many flushes and ...
pub const IDLE_FLUSHES: u32 = 2;
/// ... this many seconds (as md's bitmap daemon): clearing and re-setting bits for regions
/// that are written every few flushes would cost two extra page writes per write.
pub const IDLE_SECS: u32 = 5;

/// In-memory write-intent state.
#[derive(Debug, Clone)]
pub struct Bitmap {
    array: Uuid,
    granularity: u64,
    regions: u64,
    /// Bits as they are (or are being made) on disk.
    on_disk: Vec<u8>,
    /// Flush epoch of each region's last write.
    last_epoch: Vec<u32>,
    /// Time (seconds, caller's clock) of each region's last write.
    last_secs: Vec<u32>,
    epoch: u32,
    seq: u64,
}

fn bit(v: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|j| v.get(j))
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn set(v: &mut [u8], i: u64, on: bool) {
    if let Some(b) = usize::try_from(i / 8).ok().and_then(|j| v.get_mut(j)) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

impl Bitmap {
    /// An all-clear bitmap of `regions` regions of `granularity` member bytes.
    #[must_use]
    pub fn new(array: Uuid, granularity: u64, regions: u64) -> Self {
        let bytes = usize::try_from(regions.div_ceil(8)).unwrap_or(0);
        let n = usize::try_from(regions).unwrap_or(0);
        Self {
            array,
            granularity,
            regions,
            on_disk: vec![0; bytes],
            last_epoch: vec![0; n],
            last_secs: vec![0; n],
            epoch: 0,
            seq: 0,
        }
    }

    /// Number of pages needed for `regions` regions.
    #[must_use]
    pub fn pages_for(regions: u64) -> u64 {
        regions.div_ceil(BITS_PER_PAGE).max(1)
    }

    /// Regions tracked.
    #[must_use]
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Member bytes per region.
    #[must_use]
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// The regions covering member offsets `[off, off + len)`.
    #[must_use]
    pub fn regions_of(&self, off: u64, len: u64) -> std::ops::Range<u64> {
        let first = off / self.granularity;
        let last = (off + len.max(1))
            .div_ceil(self.granularity)
            .min(self.regions);
        first.min(last)..last
    }

    /// Marks the regions as written now (`now_secs` on the caller's clock); returns the pages
    /// whose on-disk bits must be set (and flushed) before the write may go out.
    pub fn mark(&mut self, regions: std::ops::Range<u64>, now_secs: u32) -> Vec<u64> {
        let mut pages = Vec::new();
        // BITS_PER_PAGE is a multiple of 8, so a byte never straddles two pages.
        const _: () = assert!(BITS_PER_PAGE.is_multiple_of(8));
        for r in regions {
            if let Ok(i) = usize::try_from(r)
                && i < self.last_epoch.len()
            {
                self.last_epoch[i] = self.epoch;
                self.last_secs[i] = now_secs;
            }
            if !bit(&self.on_disk, r) {
                set(&mut self.on_disk, r, true);
                let p = r / BITS_PER_PAGE;
                if pages.last() != Some(&p) {
                    pages.push(p);
                }
            }
        }
        pages
    }

    /// At a flush (after the members were flushed): regions set on disk that saw no write for
    /// [`IDLE_FLUSHES`] flushes and [`IDLE_SECS`] seconds are cleared; returns the pages to
    /// rewrite. Every write to a cleared region happened before a completed flush, so it is
    /// durable.
    pub fn clear_idle(&mut self, now_secs: u32) -> Vec<u64> {
        self.epoch = self.epoch.wrapping_add(1);
        let mut pages = Vec::new();
        for (j, d) in self.on_disk.iter_mut().enumerate() {
            if *d == 0 {
                continue;
            }
            for bit in 0..8 {
                let i = j * 8 + bit;
                if *d & (1 << bit) == 0 || i >= self.last_epoch.len() {
                    continue;
                }
                let idle_flushes = self.epoch.wrapping_sub(self.last_epoch[i]);
                let idle_secs = now_secs.saturating_sub(self.last_secs[i]);
                if idle_flushes >= IDLE_FLUSHES && idle_secs >= IDLE_SECS {
                    *d &= !(1 << bit);
                    let p = (i as u64) / BITS_PER_PAGE;
                    if pages.last() != Some(&p) {
                        pages.push(p);
                    }
                }
            }
        }
        pages
    }

    /// Clears everything (clean shutdown); returns every page.
    pub fn clear_all(&mut self) -> Vec<u64> {
        self.on_disk.fill(0);
        (0..Self::pages_for(self.regions)).collect()
    }

    /// The dirty regions (bits set).
    #[must_use]
    pub fn dirty(&self) -> Vec<u64> {
        (0..self.regions)
            .filter(|&r| bit(&self.on_disk, r))
            .collect()
    }

    /// Sets a region dirty without scheduling a write (used while loading).
    pub fn set_dirty(&mut self, r: u64) {
        set(&mut self.on_disk, r, true);
    }

    /// The bytes of `on_disk` that page `p` holds (empty past the end). Pages hold whole
    /// bytes (`BITS_PER_PAGE` is a multiple of 8), in the same bit order as `on_disk`.
    fn page_range(&self, p: u64) -> std::ops::Range<usize> {
        let len = self.on_disk.len();
        let start = usize::try_from(p)
            .ok()
            .and_then(|p| p.checked_mul(BYTES_PER_PAGE))
            .map_or(len, |s| s.min(len));
        start..(start + BYTES_PER_PAGE).min(len)
    }

    /// Clears the bits of the last byte beyond `regions` (so they never read as dirty).
    fn clear_tail(&mut self) {
        let extra = self.regions % 8;
        if extra != 0
            && let Some(last) = self.on_disk.last_mut()
        {
            *last &= (1u8 << extra) - 1;
        }
    }

    /// Encodes page `p`.
    #[must_use]
    pub fn encode_page(&mut self, p: u64) -> Vec<u8> {
        self.seq += 1;
        let mut b = vec![0u8; PAGE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..24].copy_from_slice(self.array.as_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..36].copy_from_slice(&u32::try_from(p).unwrap_or(u32::MAX).to_le_bytes());
        let r = self.page_range(p);
        b[BITS_AT..BITS_AT + r.len()].copy_from_slice(&self.on_disk[r]);
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Merges page `p` read from a member into the dirty set (OR across members). A page
    /// that does not decode marks all of its regions dirty, which is always safe.
    ///
    /// # Errors
    /// Why the page was rejected (its regions are marked dirty anyway).
    pub fn merge_page(&mut self, p: u64, b: &[u8]) -> Result<(), BitmapPageError> {
        let checked = Self::check_page(&self.array, p, b);
        let range = self.page_range(p);
        match &checked {
            // A valid page is PAGE bytes long, so its bit bytes cover any page range.
            Ok(()) => {
                for (d, s) in self.on_disk[range].iter_mut().zip(&b[BITS_AT..CRC_AT]) {
                    *d |= s;
                }
            }
            Err(_) => self.on_disk[range].fill(0xFF),
        }
        self.clear_tail();
        checked
    }

    fn check_page(array: &Uuid, p: u64, b: &[u8]) -> Result<(), BitmapPageError> {
        if b.len() < PAGE || b[0..8] != MAGIC || &b[8..24] != array.as_bytes() {
            return Err(BitmapPageError::Foreign);
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[CRC_AT..PAGE]);
        if u32::from_le_bytes(crc) != crc32c::crc32c(&b[..CRC_AT]) {
            return Err(BitmapPageError::BadChecksum);
        }
        let mut idx = [0u8; 4];
        idx.copy_from_slice(&b[32..36]);
        let found = u32::from_le_bytes(idx);
        let expected = u32::try_from(p).unwrap_or(u32::MAX);
        if found != expected {
            return Err(BitmapPageError::WrongIndex { found, expected });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_flush_clear_cycle() {
        let u = Uuid::from_bytes([7; 16]);
        let mut b = Bitmap::new(u, 1 << 20, 100_000);
        assert_eq!(b.mark(b.regions_of(0, 3 << 20), 100), vec![0]);
        assert!(
            b.mark(b.regions_of(0, 1 << 20), 100).is_empty(),
            "already set on disk"
        );
        assert_eq!(b.dirty(), vec![0, 1, 2]);
        assert!(b.clear_idle(100).is_empty(), "touched this interval");
        assert!(
            b.clear_idle(101).is_empty(),
            "idle two flushes but not long enough"
        );
        assert!(b.clear_idle(104).is_empty(), "still under 5 s");
        b.mark(2..3, 104);
        assert_eq!(
            b.clear_idle(106),
            vec![0],
            "regions 0 and 1 idle long enough"
        );
        assert_eq!(b.dirty(), vec![2], "region 2 was written recently");
        assert_eq!(b.clear_idle(120), vec![0]);
        assert!(b.dirty().is_empty());
        let far = 50_000u64 << 20;
        assert_eq!(
            b.mark(b.regions_of(far, 4096), 120),
            vec![50_000 / BITS_PER_PAGE]
        );
    }

    proptest::proptest! {
        #[test]
        fn merge_is_total(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000), p in 0u64..4) {
            let mut b = Bitmap::new(Uuid::from_bytes([7; 16]), 4096, 100_000);
            let _ = b.merge_page(p, &noise);
        }
    }

    #[test]
    fn golden_page_v1() {
        let u = Uuid::from_bytes([0xA1; 16]);
        let mut b = Bitmap::new(u, 4 << 20, 70_000);
        b.mark(0..3, 0);
        b.mark(1000..1001, 0);
        b.mark(BITS_PER_PAGE - 1..BITS_PER_PAGE + 1, 0);
        let page = b.encode_page(0);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/bitmap-page-v1.bin"
        );
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &page).expect("write golden");
        }
        let golden = std::fs::read(path).expect("golden file (UPDATE_GOLDEN=1 regenerates)");
        assert_eq!(
            page, golden,
            "bitmap page encoding changed: that is an on-disk format change"
        );
        let mut fresh = Bitmap::new(u, 4 << 20, 70_000);
        fresh.merge_page(0, &golden).expect("golden decodes");
        assert_eq!(fresh.dirty(), vec![0, 1, 2, 1000, BITS_PER_PAGE - 1]);
    }

    #[test]
    fn pages_roundtrip_and_damage_means_dirty() {
        let u = Uuid::from_bytes([7; 16]);
        let mut b = Bitmap::new(u, 4096, 70_000);
        b.mark(5..6, 0);
        b.mark(40_000..40_002, 0);
        let p0 = b.encode_page(0);
        let p1 = b.encode_page(1);
        let mut fresh = Bitmap::new(u, 4096, 70_000);
        fresh.merge_page(0, &p0).expect("page 0");
        fresh.merge_page(1, &p1).expect("page 1");
        assert_eq!(fresh.dirty(), vec![5, 40_000, 40_001]);
        let mut bad = p0.clone();
        bad[100] ^= 1;
        let mut fresh = Bitmap::new(u, 4096, 70_000);
        assert_eq!(fresh.merge_page(0, &bad), Err(BitmapPageError::BadChecksum));
        assert_eq!(fresh.dirty().len() as u64, BITS_PER_PAGE);
        let mut other = Bitmap::new(Uuid::from_bytes([8; 16]), 4096, 70_000);
        assert_eq!(other.merge_page(0, &p0), Err(BitmapPageError::Foreign));
        assert_eq!(
            fresh.merge_page(1, &p0),
            Err(BitmapPageError::WrongIndex {
                found: 0,
                expected: 1
            })
        );
    }
}
