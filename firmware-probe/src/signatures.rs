//! Partition table and on-disk signature detection: a pure function over [`ReadAt`].
//!
//! What is read (all offsets in bytes, relative to the start of the device or partition):
//!
//! | region | size | checks |
//! |---|---|---|
//! | head: 0 .. 68 KiB | ≤ 69 632 | MBR, GPT (LBA 1 at 512 and 4096), ext2/3/4, xfs, btrfs, LUKS1/2, md v1.1/v1.2, LVM2, swap (4/8/16/64 KiB pages), vfat, exfat, ntfs, bitlocker, iso9660, f2fs, bcache, squashfs, `DWARRAY`, `DWVD`, LUKS2 secondary header at 16/32/64 KiB |
//! | 128 KiB .. 256 KiB | 131 072 | ZFS label 0 uberblock array |
//! | ZFS labels 2 and 3 | 2 × 131 072 | uberblock arrays of the two labels at the end |
//! | LUKS2 secondary headers at 128 KiB … 4 MiB | 6 × 6 | `SKUL\xba\xbe` |
//! | end of device | 4 + 4 + 8 | md v1.0, md v0.90, `DWARRAY` backup |
//!
//! In total at most [`MAX_READ_BYTES`]. Any read that fails or comes back short is recorded in
//! [`Detection::failures`]; the caller must then not call the device `available`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use thiserror::Error;

use crate::model::{PartitionTable, PartitionTableKind, Signature, SignatureKind};

/// Upper bound of bytes [`detect`] reads from one device (or partition).
pub const MAX_READ_BYTES: u64 = 512 * 1024;
/// The head region read in one piece.
pub const HEAD_LEN: u64 = 68 * 1024;

const KIB: u64 = 1024;
/// ZFS: each of the four labels is 256 KiB; the uberblock array is the second half of a label.
const ZFS_LABEL_SIZE: u64 = 256 * KIB;
const ZFS_UBERBLOCK_ARRAY_OFFSET: u64 = 128 * KIB;
const ZFS_UBERBLOCK_ARRAY_LEN: usize = 128 * 1024;
/// Uberblock slots are 1 KiB or larger powers of two, so every slot starts at a 1 KiB multiple.
const ZFS_UBERBLOCK_MIN_SLOT: usize = 1024;
const ZFS_UBERBLOCK_MAGIC: u64 = 0x00ba_b10c;
const MD_MAGIC: u32 = 0xa92b_4efc;
/// Magic of our own array member superblock (8 bytes) at 4096 and at the last 4 KiB block.
pub const DW_ARRAY_MAGIC: &[u8; 8] = b"DWARRAY\0";
/// Primary offset of the array member superblock.
pub const DW_ARRAY_PRIMARY_OFFSET: u64 = 4096;
/// Magic of a DataWarehouse VDE at offset 0.
pub const DW_VDE_MAGIC: &[u8; 4] = b"DWVD";
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const LUKS2_SECONDARY_MAGIC: &[u8; 6] = b"SKUL\xba\xbe";
/// Possible LUKS2 secondary header offsets (the LUKS2 header sizes).
const LUKS2_SECONDARY_OFFSETS: [u64; 9] = [
    16 * KIB,
    32 * KIB,
    64 * KIB,
    128 * KIB,
    256 * KIB,
    512 * KIB,
    1024 * KIB,
    2048 * KIB,
    4096 * KIB,
];
const SWAP_PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// Reading from a device (or an image) at an offset failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReadAtError {
    /// Fewer bytes came back than asked for, although the device claims to be large enough.
    #[error("short read at offset {offset}: {got} of {wanted} bytes")]
    Short {
        /// Offset of the read.
        offset: u64,
        /// Bytes asked for.
        wanted: u64,
        /// Bytes returned.
        got: u64,
    },
    /// No permission to read.
    #[error("permission denied reading at offset {offset}")]
    PermissionDenied {
        /// Offset of the read.
        offset: u64,
    },
    /// Any other error (EIO …).
    #[error("read error at offset {offset}: {message}")]
    Io {
        /// Offset of the read.
        offset: u64,
        /// The error text.
        message: String,
    },
}

/// Random access to a device: the only thing [`detect`] needs.
pub trait ReadAt {
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; anything less than all of it is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadAtError>;
}

/// A byte slice that claims to be `size` bytes long: reads past the slice come back short, which
/// models truncated images and lets tests and fuzzers exercise every failure path.
#[derive(Debug, Clone, Copy)]
pub struct SliceReader<'a> {
    data: &'a [u8],
    size: u64,
}

impl<'a> SliceReader<'a> {
    /// A reader whose size is the slice length.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            size: u64::try_from(data.len()).unwrap_or(u64::MAX),
        }
    }
    /// A reader that claims `size` bytes; bytes past the slice are unreadable.
    #[must_use]
    pub fn with_size(data: &'a [u8], size: u64) -> Self {
        Self { data, size }
    }
}

impl ReadAt for SliceReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadAtError> {
        let wanted = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let available = &self.data[start..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        if n < buf.len() {
            return Err(ReadAtError::Short {
                offset,
                wanted,
                got: u64::try_from(n).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }
}

/// A device node or image file opened read-only.
#[derive(Debug)]
pub struct FileReader {
    file: File,
    size: u64,
}

impl FileReader {
    /// Wraps an open file that is expected to be `size` bytes long.
    #[must_use]
    pub fn new(file: File, size: u64) -> Self {
        Self { file, size }
    }
}

impl ReadAt for FileReader {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadAtError> {
        let wanted = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let mut done = 0usize;
        // Each iteration either makes progress, returns, or retries an EINTR; EINTR retries are
        // bounded so a signal storm cannot spin forever.
        let mut interrupts = 0u32;
        while done < buf.len() {
            let at = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) => {
                    return Err(ReadAtError::Short {
                        offset,
                        wanted,
                        got: u64::try_from(done).unwrap_or(u64::MAX),
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < 100 => {
                    interrupts += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(ReadAtError::PermissionDenied { offset: at });
                }
                Err(e) => {
                    return Err(ReadAtError::Io {
                        offset: at,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A window `[start, start + size)` of another reader (a partition of a disk).
#[derive(Debug)]
pub struct SubReader<'a, R: ?Sized> {
    inner: &'a R,
    start: u64,
    size: u64,
}

impl<'a, R: ReadAt + ?Sized> SubReader<'a, R> {
    /// The window of `inner` starting at `start`, `size` bytes long.
    pub fn new(inner: &'a R, start: u64, size: u64) -> Self {
        Self { inner, start, size }
    }
}

impl<R: ReadAt + ?Sized> ReadAt for SubReader<'_, R> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadAtError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let Some(at) = self.start.checked_add(offset) else {
            return Err(ReadAtError::Io {
                offset,
                message: "offset overflows".to_owned(),
            });
        };
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(ReadAtError::Short {
                offset,
                wanted: len,
                got: 0,
            });
        }
        self.inner.read_exact_at(at, buf)
    }
}

/// A region that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    /// Offset of the region.
    pub offset: u64,
    /// Length of the region.
    pub len: u64,
    /// What went wrong.
    pub error: ReadAtError,
}

/// Result of [`detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Signatures found, in check order.
    pub signatures: Vec<Signature>,
    /// The partition table found (kind `none` when there is none).
    pub partition_table: PartitionTable,
    /// Regions that could not be read; non-empty means the checks are incomplete.
    pub failures: Vec<ReadFailure>,
    /// Non-zero bytes seen in everything that was read.
    pub nonzero_bytes: u64,
    /// Total bytes read.
    pub bytes_read: u64,
}

impl Detection {
    /// Whether every region was read.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.failures.is_empty()
    }
    /// Whether anything (signature or partition table) was found.
    #[must_use]
    pub fn found_anything(&self) -> bool {
        !self.signatures.is_empty() || self.partition_table.kind != PartitionTableKind::None
    }
}

struct Session<'r, R: ?Sized> {
    dev: &'r R,
    size: u64,
    failures: Vec<ReadFailure>,
    nonzero: u64,
    bytes_read: u64,
    found: Vec<Signature>,
}

impl<R: ReadAt + ?Sized> Session<'_, R> {
    fn fits(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// Reads `len` bytes at `offset` when the device is large enough; `None` when it is not or
    /// when the read failed (then the failure is recorded).
    fn read(&mut self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let len64 = u64::try_from(len).ok()?;
        if !self.fits(offset, len64) {
            return None;
        }
        assert!(
            self.bytes_read + len64 <= MAX_READ_BYTES,
            "signature read budget exceeded"
        );
        let mut buf = vec![0u8; len];
        match self.dev.read_exact_at(offset, &mut buf) {
            Ok(()) => {
                self.bytes_read += len64;
                self.nonzero += u64::try_from(buf.iter().filter(|b| **b != 0).count()).ok()?;
                Some(buf)
            }
            Err(error) => {
                self.failures.push(ReadFailure {
                    offset,
                    len: len64,
                    error,
                });
                None
            }
        }
    }

    fn hit(&mut self, kind: SignatureKind, offset: u64, detail: String) {
        self.found.push(Signature {
            kind,
            offset,
            detail,
        });
    }

    fn has(&self, kind: SignatureKind) -> bool {
        self.found.iter().any(|s| s.kind == kind)
    }
}

/// Bytes `[off, off + len)` of `buf`, if they are inside it.
fn slice(buf: &[u8], off: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    buf.get(start..start.checked_add(len)?)
}

fn le_u16(buf: &[u8], off: u64) -> Option<u16> {
    slice(buf, off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(buf: &[u8], off: u64) -> Option<u32> {
    slice(buf, off, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u16(buf: &[u8], off: u64) -> Option<u16> {
    slice(buf, off, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn eq_at(buf: &[u8], off: u64, magic: &[u8]) -> bool {
    slice(buf, off, magic.len()) == Some(magic)
}

/// Looks for partition tables and signatures on `dev`. Never reads more than
/// [`MAX_READ_BYTES`]; never fails: unreadable regions are listed in the result.
pub fn detect<R: ReadAt + ?Sized>(dev: &R) -> Detection {
    let size = dev.size();
    let mut s = Session {
        dev,
        size,
        failures: Vec::new(),
        nonzero: 0,
        bytes_read: 0,
        found: Vec::new(),
    };
    let head_len = usize::try_from(size.min(HEAD_LEN)).unwrap_or(0);
    let head = if head_len > 0 {
        s.read(0, head_len)
    } else {
        None
    };
    let mut table = PartitionTable {
        kind: PartitionTableKind::None,
        detail: String::new(),
    };
    if let Some(head) = head.as_deref() {
        check_head(&mut s, head);
        table = partition_table(head, &s.found);
    }
    check_luks2_secondary(&mut s, head.as_deref());
    check_zfs(&mut s);
    check_tail(&mut s);
    if table.kind == PartitionTableKind::None {
        table.detail = "no MBR or GPT found".to_owned();
    }
    assert!(s.bytes_read <= MAX_READ_BYTES, "read budget exceeded");
    Detection {
        signatures: s.found,
        partition_table: table,
        failures: s.failures,
        nonzero_bytes: s.nonzero,
        bytes_read: s.bytes_read,
    }
}

fn check_head<R: ReadAt + ?Sized>(s: &mut Session<'_, R>, head: &[u8]) {
    if eq_at(head, 0, DW_VDE_MAGIC) {
        s.hit(
            SignatureKind::DwVde,
            0,
            "DataWarehouse VDE (magic \"DWVD\" at 0)".to_owned(),
        );
    }
    if eq_at(head, DW_ARRAY_PRIMARY_OFFSET, DW_ARRAY_MAGIC) {
        s.hit(
            SignatureKind::DwArrayMember,
            DW_ARRAY_PRIMARY_OFFSET,
            "DataWarehouse array member superblock (primary copy at 4096)".to_owned(),
        );
    }
    check_ext(s, head);
    if eq_at(head, 0, b"XFSB") {
        s.hit(
            SignatureKind::Xfs,
            0,
            "xfs superblock (\"XFSB\" at 0)".to_owned(),
        );
    }
    if eq_at(head, 65536 + 64, b"_BHRfS_M") {
        s.hit(
            SignatureKind::Btrfs,
            65600,
            "btrfs superblock (\"_BHRfS_M\" at 65600)".to_owned(),
        );
    }
    if eq_at(head, 0, LUKS_MAGIC) {
        match be_u16(head, 6) {
            Some(2) => s.hit(SignatureKind::Luks2, 0, "LUKS2 header at 0".to_owned()),
            Some(1) => s.hit(SignatureKind::Luks1, 0, "LUKS1 header at 0".to_owned()),
            v => s.hit(
                SignatureKind::Luks1,
                0,
                format!("LUKS header at 0, version {v:?}"),
            ),
        }
    }
    for (offset, version) in [(4096u64, "1.2"), (0, "1.1")] {
        if le_u32(head, offset) == Some(MD_MAGIC) {
            s.hit(
                SignatureKind::LinuxRaidMember,
                offset,
                format!("md superblock v{version} (magic 0xa92b4efc at {offset})"),
            );
        }
    }
    for sector in 0..4u64 {
        let off = sector * 512;
        if eq_at(head, off, b"LABELONE") && eq_at(head, off + 24, b"LVM2 001") {
            s.hit(
                SignatureKind::Lvm2Member,
                off,
                format!("LVM2 label in sector {sector}"),
            );
            break;
        }
    }
    check_swap(s, head);
    check_boot_sector_filesystems(s, head);
    if eq_at(head, 32769, b"CD001") {
        s.hit(
            SignatureKind::Iso9660,
            32769,
            "ISO 9660 volume descriptor (\"CD001\")".to_owned(),
        );
    }
    if le_u32(head, 1024) == Some(0xF2F5_2010) {
        s.hit(
            SignatureKind::F2fs,
            1024,
            "f2fs superblock (magic 0xF2F52010 at 1024)".to_owned(),
        );
    }
    if eq_at(head, 4096 + 24, &BCACHE_MAGIC) {
        s.hit(
            SignatureKind::Bcache,
            4120,
            "bcache superblock at 4096".to_owned(),
        );
    }
    if eq_at(head, 0, b"hsqs") {
        s.hit(
            SignatureKind::Squashfs,
            0,
            "squashfs superblock (\"hsqs\" at 0)".to_owned(),
        );
    }
}

fn check_ext<R: ReadAt + ?Sized>(s: &mut Session<'_, R>, head: &[u8]) {
    const SB: u64 = 1024;
    if le_u16(head, SB + 56) != Some(0xEF53) {
        return;
    }
    let compat = le_u32(head, SB + 0x5C).unwrap_or(0);
    let incompat = le_u32(head, SB + 0x60).unwrap_or(0);
    let ro_compat = le_u32(head, SB + 0x64).unwrap_or(0);
    // Incompat flags ext2/ext3 also use: filetype, recover, journal_dev, meta_bg.
    let ext3_incompat = 0x2 | 0x4 | 0x8 | 0x10;
    // Ro-compat flags ext2/ext3 also use: sparse_super, large_file, btree_dir.
    let ext3_ro_compat = 0x1 | 0x2 | 0x4;
    let (kind, what) = if incompat & 0x8 != 0 {
        (SignatureKind::Ext4, "ext3/ext4 external journal device")
    } else if incompat & !ext3_incompat != 0 || ro_compat & !ext3_ro_compat != 0 {
        (SignatureKind::Ext4, "ext4 file system")
    } else if compat & 0x4 != 0 {
        (SignatureKind::Ext3, "ext3 file system")
    } else {
        (SignatureKind::Ext2, "ext2 file system")
    };
    s.hit(
        kind,
        SB + 56,
        format!("{what} (superblock magic 0xEF53 at 1080)"),
    );
}

fn check_swap<R: ReadAt + ?Sized>(s: &mut Session<'_, R>, head: &[u8]) {
    for page in SWAP_PAGE_SIZES {
        let off = page - 10;
        let Some(sig) = slice(head, off, 10) else {
            continue;
        };
        let what = if sig == b"SWAPSPACE2" || sig == b"SWAP-SPACE" {
            "swap area"
        } else if sig.starts_with(b"S1SUSPEND")
            || sig.starts_with(b"S2SUSPEND")
            || sig.starts_with(b"ULSUSPEND")
            || sig == b"LINHIB0001"
        {
            "swap area holding a hibernation image"
        } else {
            continue;
        };
        s.hit(
            SignatureKind::Swap,
            off,
            format!("{what} ({page}-byte pages, magic at {off})"),
        );
        return;
    }
}

fn check_boot_sector_filesystems<R: ReadAt + ?Sized>(s: &mut Session<'_, R>, head: &[u8]) {
    if eq_at(head, 3, b"NTFS    ") {
        s.hit(
            SignatureKind::Ntfs,
            3,
            "NTFS boot sector (\"NTFS\" at 3)".to_owned(),
        );
    } else if eq_at(head, 3, b"EXFAT   ") {
        s.hit(
            SignatureKind::Exfat,
            3,
            "exFAT boot sector (\"EXFAT\" at 3)".to_owned(),
        );
    } else if eq_at(head, 3, b"-FVE-FS-") {
        s.hit(
            SignatureKind::Bitlocker,
            3,
            "BitLocker volume (\"-FVE-FS-\" at 3)".to_owned(),
        );
    } else if is_fat_boot_sector(head) {
        s.hit(SignatureKind::Vfat, 0, "FAT boot sector".to_owned());
    }
}

fn is_fat_boot_sector(head: &[u8]) -> bool {
    let jump = head.first().is_some_and(|b| *b == 0xEB || *b == 0xE9);
    let bytes_per_sector = le_u16(head, 11).is_some_and(|b| matches!(b, 512 | 1024 | 2048 | 4096));
    let boot_signature = eq_at(head, 510, &[0x55, 0xAA]);
    let fat_name = eq_at(head, 54, b"FAT12   ")
        || eq_at(head, 54, b"FAT16   ")
        || eq_at(head, 54, b"FAT     ")
        || eq_at(head, 82, b"FAT32   ");
    jump && bytes_per_sector && boot_signature && fat_name
}

fn check_luks2_secondary<R: ReadAt + ?Sized>(s: &mut Session<'_, R>, head: Option<&[u8]>) {
    if s.has(SignatureKind::Luks1) || s.has(SignatureKind::Luks2) {
        return;
    }
    for off in LUKS2_SECONDARY_OFFSETS {
        let found = if off + 6 <= HEAD_LEN {
            head.is_some_and(|h| eq_at(h, off, LUKS2_SECONDARY_MAGIC))
        } else {
            s.read(off, 6).is_some_and(|b| b == LUKS2_SECONDARY_MAGIC)
        };
        if found {
            s.hit(
                SignatureKind::Luks2,
                off,
                format!("LUKS2 secondary header at {off} (primary header missing or damaged)"),
            );
            return;
        }
    }
}

fn check_zfs<R: ReadAt + ?Sized>(s: &mut Session<'_, R>) {
    // Label 0 at the start; labels 2 and 3 at the end of the device rounded down to 256 KiB.
    let mut labels = vec![(0u32, 0u64)];
    let aligned = s.size & !(ZFS_LABEL_SIZE - 1);
    if aligned >= 4 * ZFS_LABEL_SIZE {
        labels.push((2, aligned - 2 * ZFS_LABEL_SIZE));
        labels.push((3, aligned - ZFS_LABEL_SIZE));
    }
    for (label, start) in labels {
        let array = start + ZFS_UBERBLOCK_ARRAY_OFFSET;
        let Some(buf) = s.read(array, ZFS_UBERBLOCK_ARRAY_LEN) else {
            continue;
        };
        let hit = buf.chunks_exact(ZFS_UBERBLOCK_MIN_SLOT).position(|slot| {
            let mut magic = [0u8; 8];
            magic.copy_from_slice(&slot[..8]);
            u64::from_le_bytes(magic) == ZFS_UBERBLOCK_MAGIC
                || u64::from_be_bytes(magic) == ZFS_UBERBLOCK_MAGIC
        });
        if let Some(slot) = hit {
            let offset = array + u64::try_from(slot * ZFS_UBERBLOCK_MIN_SLOT).unwrap_or(0);
            s.hit(
                SignatureKind::ZfsMember,
                offset,
                format!("ZFS uberblock (magic 0x00bab10c) in label {label} at {offset}"),
            );
            return;
        }
    }
}

fn check_tail<R: ReadAt + ?Sized>(s: &mut Session<'_, R>) {
    let size = s.size;
    // md v1.0: superblock 8-12 KiB from the end, 4 KiB aligned.
    if size >= 12 * KIB && !s.has(SignatureKind::LinuxRaidMember) {
        let off = (size - 8 * KIB) & !(4 * KIB - 1);
        if s.read(off, 4).is_some_and(|b| b == MD_MAGIC.to_le_bytes()) {
            let detail = format!("md superblock v1.0 (magic 0xa92b4efc at {off})");
            s.hit(SignatureKind::LinuxRaidMember, off, detail);
        }
    }
    // md v0.90: 64 KiB block at the end of the device rounded down to 64 KiB; native endian.
    if size >= 128 * KIB && !s.has(SignatureKind::LinuxRaidMember) {
        let off = (size & !(64 * KIB - 1)) - 64 * KIB;
        if let Some(b) = s.read(off, 4)
            && (b == MD_MAGIC.to_le_bytes() || b == MD_MAGIC.to_be_bytes())
        {
            let detail = format!("md superblock v0.90 (magic 0xa92b4efc at {off})");
            s.hit(SignatureKind::LinuxRaidMember, off, detail);
        }
    }
    // Our backup array superblock: the last 4 KiB-aligned 4 KiB block.
    if size >= 8 * KIB && !s.has(SignatureKind::DwArrayMember) {
        let off = (size & !(4 * KIB - 1)) - 4 * KIB;
        if s.read(off, DW_ARRAY_MAGIC.len())
            .is_some_and(|b| b == DW_ARRAY_MAGIC)
        {
            let detail = format!("DataWarehouse array member superblock (backup copy at {off})");
            s.hit(SignatureKind::DwArrayMember, off, detail);
        }
    }
}

/// MBR/GPT from the head. File systems that put a boot sector at 0 (FAT, NTFS …) also end in
/// 0x55AA; when one was found the MBR check is skipped.
fn partition_table(head: &[u8], found: &[Signature]) -> PartitionTable {
    let gpt_sector = [512u64, 4096]
        .into_iter()
        .find(|lba1| eq_at(head, *lba1, b"EFI PART"));
    let boot_sector_fs = found.iter().any(|f| {
        f.offset <= 3
            && matches!(
                f.kind,
                SignatureKind::Vfat
                    | SignatureKind::Ntfs
                    | SignatureKind::Exfat
                    | SignatureKind::Bitlocker
            )
    });
    let mbr = if boot_sector_fs {
        None
    } else {
        parse_mbr(head)
    };
    match (gpt_sector, mbr) {
        (Some(sector), Some(m)) if m.protective => table(
            PartitionTableKind::Gpt,
            format!("GPT header at LBA 1 ({sector}-byte sectors) with protective MBR"),
        ),
        (Some(sector), Some(m)) => table(
            PartitionTableKind::Gpt,
            format!(
                "GPT header at LBA 1 ({sector}-byte sectors) with a hybrid MBR ({} entries)",
                m.entries
            ),
        ),
        (Some(sector), None) => table(
            PartitionTableKind::Gpt,
            format!("GPT header at LBA 1 ({sector}-byte sectors), no protective MBR"),
        ),
        (None, Some(m)) if m.protective => table(
            PartitionTableKind::Gpt,
            "protective MBR (type 0xEE) without a GPT header at LBA 1 for 512 or 4096-byte sectors"
                .to_owned(),
        ),
        (None, Some(m)) => table(
            PartitionTableKind::Mbr,
            format!("MBR with {} non-empty entries", m.entries),
        ),
        (None, None) => table(PartitionTableKind::None, String::new()),
    }
}

fn table(kind: PartitionTableKind, detail: String) -> PartitionTable {
    PartitionTable { kind, detail }
}

struct Mbr {
    entries: usize,
    protective: bool,
}

/// A valid MBR: 0x55AA at 510, every entry's status byte 0x00 or 0x80, and at least one entry
/// with a non-zero type.
fn parse_mbr(head: &[u8]) -> Option<Mbr> {
    if !eq_at(head, 510, &[0x55, 0xAA]) {
        return None;
    }
    let table = slice(head, 446, 64)?;
    let mut entries = 0;
    let mut protective = false;
    for entry in table.chunks_exact(16) {
        if entry[0] != 0x00 && entry[0] != 0x80 {
            return None;
        }
        if entry[4] != 0 {
            entries += 1;
            protective |= entry[4] == 0xEE;
        }
    }
    (entries > 0).then_some(Mbr {
        entries,
        protective,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: usize = 1024 * 1024;

    fn image(size: usize, patches: &[(usize, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; size];
        for (off, bytes) in patches {
            v[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        v
    }

    fn kinds(d: &Detection) -> Vec<SignatureKind> {
        d.signatures.iter().map(|s| s.kind).collect()
    }

    fn detect_one(size: usize, patches: &[(usize, &[u8])]) -> Detection {
        let img = image(size, patches);
        let d = detect(&SliceReader::new(&img));
        assert!(d.complete(), "unexpected failures {:?}", d.failures);
        d
    }

    // Goal: a blank device is complete, finds nothing and reads within budget.
    #[test]
    fn blank_device_finds_nothing() {
        let d = detect_one(64 * MIB, &[]);
        assert!(d.signatures.is_empty());
        assert_eq!(d.partition_table.kind, PartitionTableKind::None);
        assert_eq!(d.nonzero_bytes, 0);
        assert!(d.bytes_read <= MAX_READ_BYTES);
        assert!(d.bytes_read >= HEAD_LEN + 3 * 128 * 1024);
    }

    #[test]
    fn ext_variants() {
        let sb = 1024;
        let magic: &[u8] = &[0x53, 0xEF];
        let d = detect_one(MIB, &[(sb + 56, magic)]);
        assert_eq!(kinds(&d), vec![SignatureKind::Ext2]);
        let d = detect_one(MIB, &[(sb + 56, magic), (sb + 0x5C, &[4, 0, 0, 0])]);
        assert_eq!(kinds(&d), vec![SignatureKind::Ext3]);
        let d = detect_one(
            MIB,
            &[
                (sb + 56, magic),
                (sb + 0x5C, &[4, 0, 0, 0]),
                (sb + 0x60, &[0x42, 0x02, 0, 0]),
            ],
        );
        assert_eq!(kinds(&d), vec![SignatureKind::Ext4]);
        assert_eq!(d.signatures[0].offset, 1080);
        // A different magic value is not ext.
        let d = detect_one(MIB, &[(sb + 56, &[0x54, 0xEF])]);
        assert!(d.signatures.is_empty());
    }

    #[test]
    fn simple_magics() {
        let md = MD_MAGIC.to_le_bytes();
        let f2fs = 0xF2F5_2010u32.to_le_bytes();
        let cases: Vec<(usize, &[u8], SignatureKind, u64)> = vec![
            (0, b"XFSB", SignatureKind::Xfs, 0),
            (65600, b"_BHRfS_M", SignatureKind::Btrfs, 65600),
            (0, b"LUKS\xba\xbe\x00\x01", SignatureKind::Luks1, 0),
            (0, b"LUKS\xba\xbe\x00\x02", SignatureKind::Luks2, 0),
            (16384, b"SKUL\xba\xbe", SignatureKind::Luks2, 16384),
            (262_144, b"SKUL\xba\xbe", SignatureKind::Luks2, 262_144),
            (4096, &md, SignatureKind::LinuxRaidMember, 4096),
            (0, &md, SignatureKind::LinuxRaidMember, 0),
            (32769, b"CD001", SignatureKind::Iso9660, 32769),
            (0, b"DWVD", SignatureKind::DwVde, 0),
            (4096, DW_ARRAY_MAGIC, SignatureKind::DwArrayMember, 4096),
            (1024, &f2fs, SignatureKind::F2fs, 1024),
            (4120, &BCACHE_MAGIC, SignatureKind::Bcache, 4120),
            (0, b"hsqs", SignatureKind::Squashfs, 0),
            (3, b"NTFS    ", SignatureKind::Ntfs, 3),
            (3, b"EXFAT   ", SignatureKind::Exfat, 3),
            (3, b"-FVE-FS-", SignatureKind::Bitlocker, 3),
        ];
        for (off, magic, kind, at) in cases {
            let d = detect_one(8 * MIB, &[(off, magic)]);
            assert_eq!(kinds(&d), vec![kind], "magic {magic:?} at {off}");
            assert_eq!(d.signatures[0].offset, at, "{kind:?}");
        }
    }

    #[test]
    fn lvm_label_in_any_of_first_four_sectors() {
        for sector in 0..4usize {
            let off = sector * 512;
            let d = detect_one(MIB, &[(off, b"LABELONE"), (off + 24, b"LVM2 001")]);
            assert_eq!(kinds(&d), vec![SignatureKind::Lvm2Member]);
        }
        // LABELONE without the LVM2 type is not LVM.
        let d = detect_one(MIB, &[(0, b"LABELONE")]);
        assert!(d.signatures.is_empty());
        // Sector 4 is not checked.
        let d = detect_one(MIB, &[(2048, b"LABELONE"), (2048 + 24, b"LVM2 001")]);
        assert!(d.signatures.is_empty());
    }

    #[test]
    fn swap_for_each_page_size() {
        for page in [4096usize, 8192, 16384, 65536] {
            for magic in [&b"SWAPSPACE2"[..], b"SWAP-SPACE", b"S1SUSPEND\0"] {
                let d = detect_one(MIB, &[(page - 10, magic)]);
                assert_eq!(kinds(&d), vec![SignatureKind::Swap], "page {page}");
                assert_eq!(d.signatures[0].offset, u64::try_from(page - 10).unwrap());
            }
        }
    }

    #[test]
    fn md_superblocks_at_the_end() {
        let size = 10 * MIB + 5 * 512;
        let v10 = ((size - 8192) & !4095, MD_MAGIC.to_le_bytes());
        let d = detect_one(size, &[(v10.0, &v10.1)]);
        assert_eq!(kinds(&d), vec![SignatureKind::LinuxRaidMember]);
        assert!(d.signatures[0].detail.contains("v1.0"));
        let v090 = (size & !65535) - 65536;
        for magic in [MD_MAGIC.to_le_bytes(), MD_MAGIC.to_be_bytes()] {
            let d = detect_one(size, &[(v090, &magic)]);
            assert_eq!(kinds(&d), vec![SignatureKind::LinuxRaidMember]);
            assert!(d.signatures[0].detail.contains("v0.90"));
        }
    }

    #[test]
    fn dw_array_backup_copy() {
        let size = 3 * MIB + 1536; // not 4 KiB aligned
        let backup = (size & !4095) - 4096;
        let d = detect_one(size, &[(backup, DW_ARRAY_MAGIC)]);
        assert_eq!(kinds(&d), vec![SignatureKind::DwArrayMember]);
        assert_eq!(d.signatures[0].offset, u64::try_from(backup).unwrap());
        // A different eighth byte is not our magic.
        let d = detect_one(size, &[(backup, b"DWARRAYX")]);
        assert!(d.signatures.is_empty());
        assert!(d.nonzero_bytes > 0);
    }

    #[test]
    fn zfs_uberblocks_in_front_and_end_labels() {
        let size = 64 * MIB + 100 * 1024;
        let le = ZFS_UBERBLOCK_MAGIC.to_le_bytes();
        let be = ZFS_UBERBLOCK_MAGIC.to_be_bytes();
        let d = detect_one(size, &[(128 * 1024 + 5 * 1024, &le)]);
        assert_eq!(kinds(&d), vec![SignatureKind::ZfsMember]);
        let aligned = size & !(256 * 1024 - 1);
        for (label_start, magic) in [(aligned - 512 * 1024, le), (aligned - 256 * 1024, be)] {
            let d = detect_one(size, &[(label_start + 128 * 1024 + 127 * 1024, &magic)]);
            assert_eq!(kinds(&d), vec![SignatureKind::ZfsMember]);
        }
        // Not at a 1 KiB slot boundary: not an uberblock.
        let d = detect_one(size, &[(128 * 1024 + 8, &le)]);
        assert!(d.signatures.is_empty());
    }

    fn mbr_entry(status: u8, kind: u8) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[0] = status;
        e[4] = kind;
        e[8] = 0x00;
        e[9] = 0x08; // start LBA 2048
        e
    }

    #[test]
    fn partition_tables() {
        let boot = [0x55u8, 0xAA];
        let linux = mbr_entry(0x80, 0x83);
        let d = detect_one(MIB, &[(446, &linux), (510, &boot)]);
        assert_eq!(d.partition_table.kind, PartitionTableKind::Mbr);
        // 0x55AA with empty entries: no table.
        let d = detect_one(MIB, &[(510, &boot)]);
        assert_eq!(d.partition_table.kind, PartitionTableKind::None);
        // Invalid status byte: no table.
        let bad = mbr_entry(0x12, 0x83);
        let d = detect_one(MIB, &[(446, &bad), (510, &boot)]);
        assert_eq!(d.partition_table.kind, PartitionTableKind::None);
        // GPT at LBA 1 for both sector sizes, with and without protective MBR.
        let pmbr = mbr_entry(0, 0xEE);
        for lba1 in [512usize, 4096] {
            let d = detect_one(MIB, &[(446, &pmbr), (510, &boot), (lba1, b"EFI PART")]);
            assert_eq!(d.partition_table.kind, PartitionTableKind::Gpt);
            assert!(
                d.partition_table.detail.contains("protective"),
                "{:?}",
                d.partition_table
            );
            let d = detect_one(MIB, &[(lba1, b"EFI PART")]);
            assert_eq!(d.partition_table.kind, PartitionTableKind::Gpt);
        }
        let d = detect_one(MIB, &[(446, &pmbr), (510, &boot)]);
        assert_eq!(d.partition_table.kind, PartitionTableKind::Gpt);
    }

    #[test]
    fn fat_boot_sector_is_not_an_mbr() {
        let mut patches: Vec<(usize, &[u8])> = vec![(0, &[0xEB, 0x58, 0x90]), (11, &[0, 2])];
        patches.push((82, b"FAT32   "));
        patches.push((510, &[0x55, 0xAA]));
        patches.push((446, &[0x80, 1, 2, 3, 0x0C]));
        let d = detect_one(MIB, &patches);
        assert_eq!(kinds(&d), vec![SignatureKind::Vfat]);
        assert_eq!(d.partition_table.kind, PartitionTableKind::None);
    }

    // Goal: a read error or a short read anywhere is reported, never silently skipped.
    #[test]
    fn truncated_image_reports_failures() {
        let img = vec![0u8; MIB];
        let d = detect(&SliceReader::with_size(&img, 64 * 1024 * 1024));
        assert!(!d.complete());
        assert!(
            d.failures
                .iter()
                .all(|f| matches!(f.error, ReadAtError::Short { .. }))
        );
        // Head read fine, end-of-device reads failed.
        assert!(d.failures.iter().all(|f| f.offset >= 1024 * 1024));
    }

    struct Failing(u64, ReadAtError);
    impl ReadAt for Failing {
        fn size(&self) -> u64 {
            self.0
        }
        fn read_exact_at(&self, _offset: u64, _buf: &mut [u8]) -> Result<(), ReadAtError> {
            Err(self.1.clone())
        }
    }

    #[test]
    fn permission_denied_everywhere() {
        let d = detect(&Failing(
            1 << 30,
            ReadAtError::PermissionDenied { offset: 0 },
        ));
        assert!(!d.complete());
        assert!(d.signatures.is_empty());
        assert_eq!(d.bytes_read, 0);
    }

    #[test]
    fn sub_reader_is_a_window() {
        let mut img = vec![0u8; 4 * MIB];
        img[MIB + 1080..MIB + 1082].copy_from_slice(&[0x53, 0xEF]);
        let r = SliceReader::new(&img);
        let part = SubReader::new(&r, u64::try_from(MIB).unwrap(), 2 * 1024 * 1024);
        let d = detect(&part);
        assert!(d.complete());
        assert_eq!(kinds(&d), vec![SignatureKind::Ext2]);
        // A window beyond its parent fails instead of reading outside it.
        let beyond = SubReader::new(&r, 3 * 1024 * 1024, 2 * 1024 * 1024);
        assert!(!detect(&beyond).complete());
    }

    #[test]
    fn tiny_devices() {
        for size in [0usize, 1, 511, 512, 4095, 4096, 8191, 8192, 70_000] {
            let d = detect_one(size, &[]);
            assert!(d.signatures.is_empty(), "size {size}");
        }
    }

    proptest! {
        // Arbitrary bytes and claimed sizes never panic and stay within the read budget.
        #[test]
        fn random_images_are_bounded(data in proptest::collection::vec(any::<u8>(), 0..80_000),
                                     extra in 0u64..(1u64 << 40)) {
            let len = u64::try_from(data.len()).unwrap();
            let claimed = if extra % 3 == 0 { len } else { len + extra };
            let d = detect(&SliceReader::with_size(&data, claimed));
            prop_assert!(d.bytes_read <= MAX_READ_BYTES);
            if claimed == len {
                prop_assert!(d.complete());
            }
        }

        // A magic planted anywhere in the head is found at its offset whatever surrounds it.
        #[test]
        fn planted_xfs_is_found(noise in proptest::collection::vec(any::<u8>(), 4096)) {
            let mut img = vec![0u8; 1024 * 1024];
            img[8192..8192 + 4096].copy_from_slice(&noise);
            img[..4].copy_from_slice(b"XFSB");
            let d = detect(&SliceReader::new(&img));
            prop_assert!(d.signatures.iter().any(|s| s.kind == SignatureKind::Xfs && s.offset == 0));
        }
    }
}
