//! Fixed on-disk structures of a VDE: header (two copies), region directory (two copies),
//! emergency recovery block, key-slot area framing, metadata-length slots and intent-log record
//! headers. All little-endian at fixed offsets, each 4096 bytes with a BLAKE3 checksum in its
//! last 32 bytes; documented in docs/FORMAT.md. Every decoder is bounded and returns an error
//! naming the failed check; none panics on any input.

use uuid::Uuid;

/// Every structure here is one 4 KiB block.
pub const BLOCK: usize = 4096;
const SUM_AT: usize = BLOCK - 32;

/// Header copy A.
pub const HEADER_A: u64 = 0;
/// Header copy B.
pub const HEADER_B: u64 = 4096;
/// Region directory copy A.
pub const REGDIR_A: u64 = 8192;
/// Region directory copy B.
pub const REGDIR_B: u64 = 12288;
/// Emergency recovery block: block 9, always here, readable without keys.
pub const RECOVERY: u64 = 9 * 4096;
/// Key-slot area copy A.
pub const KEYSLOTS_A: u64 = 64 * 1024;
/// Key-slot area copy B.
pub const KEYSLOTS_B: u64 = KEYSLOTS_A + KEYSLOTS_LEN;
/// Bytes of one key-slot area copy (framing block + blob).
pub const KEYSLOTS_LEN: u64 = 256 * 1024;
/// Largest key-slot blob.
pub const KEYSLOTS_MAX_BLOB: usize = 256 * 1024 - BLOCK;
const _: () = assert!(KEYSLOTS_MAX_BLOB as u64 + BLOCK as u64 == KEYSLOTS_LEN);
/// Start of the metadata region.
pub const META_START: u64 = 1 << 20;

/// Magic of the header.
pub const MAGIC: [u8; 4] = *b"DWVD";
/// Format major version written; readers refuse other majors.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version written.
pub const VERSION_MINOR: u16 = 0;
/// Incompatible feature: segmented data region with an intent log (always set in v1).
pub const INCOMPAT_SEGMENTS: u64 = 1;
/// Incompatible features this software understands.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_SEGMENTS;
/// Read-only-compatible features this software understands.
pub const RO_COMPAT_KNOWN: u64 = 0;
/// The software revision of this reader: a VDE whose `min_reader` is above it is refused.
pub const READER_VERSION: u16 = 1;
/// The software revision of this writer: a VDE whose `min_writer` is above it opens
/// read-only.
pub const WRITER_VERSION: u16 = 1;

/// Why a structure was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not the expected structure (magic absent).
    #[error("{0}: magic not found")]
    NoMagic(&'static str),
    /// Checksum mismatch: damaged.
    #[error("{0}: checksum mismatch (damaged)")]
    Damaged(&'static str),
    /// Written by an incompatible version.
    #[error(
        "{what}: format {major}.{minor} is not supported (this software reads {VERSION_MAJOR}.x)"
    )]
    Version {
        /// Structure.
        what: &'static str,
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// Uses features this software does not know.
    #[error("VDE uses incompatible features {0:#x} that this software does not support")]
    Features(u64),
    /// A field is out of range.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
}

fn sum(b: &[u8]) -> [u8; 32] {
    *blake3::hash(&b[..SUM_AT]).as_bytes()
}

fn seal_block(b: &mut [u8]) {
    let s = sum(b);
    b[SUM_AT..BLOCK].copy_from_slice(&s);
}

fn check_block(b: &[u8], magic: &[u8], what: &'static str) -> Result<(), FormatError> {
    if b.len() < BLOCK || &b[..magic.len()] != magic {
        return Err(FormatError::NoMagic(what));
    }
    if b[SUM_AT..BLOCK] != sum(b) {
        return Err(FormatError::Damaged(what));
    }
    Ok(())
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
pub(crate) fn uuid_at(b: &[u8], at: usize) -> Uuid {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes(w)
}
pub(crate) fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut w = [0u8; 32];
    w.copy_from_slice(&b[at..at + 32]);
    w
}

// ------------------------------------------------------------------------------ header

/// The VDE header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Incompatible features (a reader must know all of them).
    pub incompat: u64,
    /// Read-only-compatible features (a writer must know all of them).
    pub ro_compat: u64,
    /// Compatible features.
    pub compat: u64,
    /// Oldest reader version that can read this VDE.
    pub min_reader: u16,
    /// Oldest writer version that can write it.
    pub min_writer: u16,
    /// VDE identity.
    pub uuid: Uuid,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Bumped on every header write.
    pub generation: u64,
    /// Bytes of the device the VDE occupies.
    pub device_bytes: u64,
    /// Current master key generation (the seal proves it).
    pub key_generation: u32,
    /// BLAKE3 of the region directory block.
    pub regdir_hash: [u8; 32],
    /// Keyed BLAKE3 (seal key) of the recovery block: it can be edited by nobody without the key.
    pub recovery_mac: [u8; 32],
    /// Keyed BLAKE3 (seal key) over header bytes 0..176 and the region directory block.
    pub seal: [u8; 32],
    /// Key check value: keyed BLAKE3 (seal key) of `"DWVD key check"` and the identity. Not
    /// covered by the seal, so that a seal that does not verify can be told apart: wrong key
    /// (this does not verify either) or altered header (this verifies). All zero: not recorded.
    pub key_check: [u8; 32],
}

/// Header bytes covered by the tamper seal.
pub const SEALED_HEADER_BYTES: usize = 176;

impl Header {
    /// Encodes the 4096-byte block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.major.to_le_bytes());
        b[6..8].copy_from_slice(&self.minor.to_le_bytes());
        b[8..12].copy_from_slice(&u32::try_from(BLOCK).unwrap_or(4096).to_le_bytes());
        b[16..24].copy_from_slice(&self.incompat.to_le_bytes());
        b[24..32].copy_from_slice(&self.ro_compat.to_le_bytes());
        b[32..40].copy_from_slice(&self.compat.to_le_bytes());
        b[40..42].copy_from_slice(&self.min_reader.to_le_bytes());
        b[42..44].copy_from_slice(&self.min_writer.to_le_bytes());
        b[48..64].copy_from_slice(self.uuid.as_bytes());
        b[64..72].copy_from_slice(&self.created.to_le_bytes());
        b[72..80].copy_from_slice(&self.generation.to_le_bytes());
        b[80..88].copy_from_slice(&self.device_bytes.to_le_bytes());
        b[88..92].copy_from_slice(&u32::try_from(BLOCK).unwrap_or(4096).to_le_bytes());
        b[92..96].copy_from_slice(&self.key_generation.to_le_bytes());
        b[96..104].copy_from_slice(&REGDIR_A.to_le_bytes());
        b[104..112].copy_from_slice(&REGDIR_B.to_le_bytes());
        b[112..144].copy_from_slice(&self.regdir_hash);
        b[144..176].copy_from_slice(&self.recovery_mac);
        b[176..208].copy_from_slice(&self.seal);
        b[208..240].copy_from_slice(&self.key_check);
        seal_block(&mut b);
        b
    }

    /// Decodes and validates a header block (the seal is checked separately, with the key).
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        check_block(b, &MAGIC, "VDE header")?;
        let (major, minor) = (u16_at(b, 4), u16_at(b, 6));
        if major != VERSION_MAJOR {
            return Err(FormatError::Version {
                what: "VDE header",
                major,
                minor,
            });
        }
        if u32_at(b, 8) as usize != BLOCK || u32_at(b, 88) as usize != BLOCK {
            return Err(FormatError::Invalid(
                "VDE header",
                "block size is not 4096".into(),
            ));
        }
        if u64_at(b, 96) != REGDIR_A || u64_at(b, 104) != REGDIR_B {
            return Err(FormatError::Invalid(
                "VDE header",
                "region directory not at its fixed offsets".into(),
            ));
        }
        let h = Self {
            major,
            minor,
            incompat: u64_at(b, 16),
            ro_compat: u64_at(b, 24),
            compat: u64_at(b, 32),
            min_reader: u16_at(b, 40),
            min_writer: u16_at(b, 42),
            uuid: uuid_at(b, 48),
            created: u64_at(b, 64),
            generation: u64_at(b, 72),
            device_bytes: u64_at(b, 80),
            key_generation: u32_at(b, 92),
            regdir_hash: arr32(b, 112),
            recovery_mac: arr32(b, 144),
            seal: arr32(b, 176),
            key_check: arr32(b, 208),
        };
        if h.incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FormatError::Features(h.incompat & !INCOMPAT_KNOWN));
        }
        if h.min_reader > READER_VERSION {
            return Err(FormatError::Version {
                what: "VDE (minimum reader)",
                major: h.min_reader,
                minor: 0,
            });
        }
        if h.device_bytes < 2 * META_START {
            return Err(FormatError::Invalid(
                "VDE header",
                format!("device size {} too small", h.device_bytes),
            ));
        }
        Ok(h)
    }

    /// Why this software must not write this VDE (it may still read it), if it must not:
    /// read-only-compatible features it does not know, or a minimum writer revision above its
    /// own. The one place that decides; `Vde::open` then opens read-only.
    #[must_use]
    pub fn write_blocker(&self) -> Option<String> {
        let unknown = self.ro_compat & !RO_COMPAT_KNOWN;
        if unknown != 0 {
            return Some(format!(
                "it uses read-only-compatible features {unknown:#x} this software cannot write"
            ));
        }
        if self.min_writer > WRITER_VERSION {
            return Some(format!(
                "its minimum writer revision is {} and this software is revision {WRITER_VERSION}",
                self.min_writer
            ));
        }
        None
    }
}

// ------------------------------------------------------------------------------ region directory

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Header copy A.
    HeaderA,
    /// Header copy B.
    HeaderB,
    /// Region directory copy A.
    RegdirA,
    /// Region directory copy B.
    RegdirB,
    /// Emergency recovery block.
    Recovery,
    /// Key-slot area copy A.
    KeyslotsA,
    /// Key-slot area copy B.
    KeyslotsB,
    /// Metadata store.
    Metadata,
    /// Intent log.
    Log,
    /// Data segments.
    Data,
}

impl RegionKind {
    const ALL: [RegionKind; 10] = [
        RegionKind::HeaderA,
        RegionKind::HeaderB,
        RegionKind::RegdirA,
        RegionKind::RegdirB,
        RegionKind::Recovery,
        RegionKind::KeyslotsA,
        RegionKind::KeyslotsB,
        RegionKind::Metadata,
        RegionKind::Log,
        RegionKind::Data,
    ];

    fn code(self) -> u32 {
        match self {
            RegionKind::HeaderA => 1,
            RegionKind::HeaderB => 2,
            RegionKind::RegdirA => 3,
            RegionKind::RegdirB => 4,
            RegionKind::Recovery => 5,
            RegionKind::KeyslotsA => 6,
            RegionKind::KeyslotsB => 7,
            RegionKind::Metadata => 8,
            RegionKind::Log => 9,
            RegionKind::Data => 10,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == c)
    }
}

/// One region: `[offset, offset + length)` of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Kind.
    pub kind: RegionKind,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// Where everything is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionDirectory {
    /// Regions, in offset order, non-overlapping.
    pub regions: Vec<Region>,
    /// Data segment size (bytes; whole stripes of the backing device).
    pub segment_bytes: u64,
}

const RD_MAGIC: [u8; 4] = *b"DWRD";
const RD_ENTRY: usize = 32;
const RD_FIRST: usize = 32;
const RD_MAX: usize = (SUM_AT - RD_FIRST) / RD_ENTRY;

impl RegionDirectory {
    /// The region of a kind.
    #[must_use]
    pub fn get(&self, kind: RegionKind) -> Option<Region> {
        self.regions.iter().copied().find(|r| r.kind == kind)
    }

    /// Encodes the 4096-byte block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.regions.len() <= RD_MAX);
        let mut b = vec![0u8; BLOCK];
        b[0..4].copy_from_slice(&RD_MAGIC);
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[6..8].copy_from_slice(&u16::try_from(self.regions.len()).unwrap_or(0).to_le_bytes());
        b[8..16].copy_from_slice(&self.segment_bytes.to_le_bytes());
        for (i, r) in self.regions.iter().enumerate() {
            let at = RD_FIRST + i * RD_ENTRY;
            b[at..at + 4].copy_from_slice(&r.kind.code().to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&r.offset.to_le_bytes());
            b[at + 16..at + 24].copy_from_slice(&r.length.to_le_bytes());
        }
        seal_block(&mut b);
        b
    }

    /// Decodes and validates (every kind once, aligned, in order, no overlap, inside
    /// `device_bytes`).
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8], device_bytes: u64) -> Result<Self, FormatError> {
        check_block(b, &RD_MAGIC, "region directory")?;
        if u16_at(b, 4) != 1 {
            return Err(FormatError::Version {
                what: "region directory",
                major: u16_at(b, 4),
                minor: 0,
            });
        }
        let count = usize::from(u16_at(b, 6));
        if count > RD_MAX {
            return Err(FormatError::Invalid(
                "region directory",
                format!("{count} entries"),
            ));
        }
        let segment_bytes = u64_at(b, 8);
        let mut regions = Vec::with_capacity(count);
        for i in 0..count {
            let at = RD_FIRST + i * RD_ENTRY;
            let code = u32_at(b, at);
            let kind = RegionKind::from_code(code).ok_or_else(|| {
                FormatError::Invalid("region directory", format!("unknown region kind {code}"))
            })?;
            regions.push(Region {
                kind,
                offset: u64_at(b, at + 8),
                length: u64_at(b, at + 16),
            });
        }
        let rd = Self {
            regions,
            segment_bytes,
        };
        rd.validate(device_bytes)?;
        Ok(rd)
    }

    /// Checks the layout.
    ///
    /// # Errors
    /// [`FormatError::Invalid`].
    pub fn validate(&self, device_bytes: u64) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::Invalid("region directory", m));
        for k in RegionKind::ALL {
            if self.regions.iter().filter(|r| r.kind == k).count() != 1 {
                return bad(format!("region {k:?} missing or repeated"));
            }
        }
        let mut end = 0u64;
        for r in &self.regions {
            if r.offset % BLOCK as u64 != 0 || r.length == 0 || r.length % BLOCK as u64 != 0 {
                return bad(format!("region {:?} not 4 KiB aligned or empty", r.kind));
            }
            if r.offset < end {
                return bad(format!(
                    "region {:?} overlaps the previous one or is out of order",
                    r.kind
                ));
            }
            end = match r.offset.checked_add(r.length) {
                Some(e) if e <= device_bytes => e,
                _ => return bad(format!("region {:?} beyond the device", r.kind)),
            };
        }
        let fixed = [
            (RegionKind::HeaderA, HEADER_A),
            (RegionKind::HeaderB, HEADER_B),
            (RegionKind::RegdirA, REGDIR_A),
            (RegionKind::RegdirB, REGDIR_B),
            (RegionKind::Recovery, RECOVERY),
            (RegionKind::KeyslotsA, KEYSLOTS_A),
            (RegionKind::KeyslotsB, KEYSLOTS_B),
            (RegionKind::Metadata, META_START),
        ];
        for (k, off) in fixed {
            if self.get(k).map(|r| r.offset) != Some(off) {
                return bad(format!("region {k:?} not at its fixed offset {off}"));
            }
        }
        let data = self.get(RegionKind::Data).map_or(0, |r| r.length);
        if self.segment_bytes == 0
            || !self.segment_bytes.is_multiple_of(BLOCK as u64)
            || !data.is_multiple_of(self.segment_bytes)
        {
            return bad(format!(
                "segment size {} does not divide the data region",
                self.segment_bytes
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ recovery block

/// The emergency recovery block: who owns this disk and what it is, readable without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryBlock {
    /// VDE identity.
    pub uuid: Uuid,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Format version.
    pub major: u16,
    /// Format minor.
    pub minor: u16,
    /// Device bytes.
    pub device_bytes: u64,
    /// Label (at most 128 bytes).
    pub label: String,
    /// Administrator contact (at most 1024 bytes).
    pub contact: String,
    /// A note for whoever finds the disk (at most 1024 bytes).
    pub note: String,
}

const RC_MAGIC: [u8; 8] = *b"DWVDRCVR";
const RC_LABEL: usize = 64;
const RC_LABEL_MAX: usize = 128;
const RC_CONTACT: usize = RC_LABEL + 2 + RC_LABEL_MAX;
const RC_CONTACT_MAX: usize = 1024;
const RC_NOTE: usize = RC_CONTACT + 2 + RC_CONTACT_MAX;
const RC_NOTE_MAX: usize = 1024;

fn put_str(b: &mut [u8], at: usize, max: usize, s: &str) {
    let n = s.len().min(max);
    b[at..at + 2].copy_from_slice(&u16::try_from(n).unwrap_or(0).to_le_bytes());
    b[at + 2..at + 2 + n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(b: &[u8], at: usize, max: usize, what: &'static str) -> Result<String, FormatError> {
    let n = usize::from(u16_at(b, at));
    if n > max {
        return Err(FormatError::Invalid(
            what,
            format!("text length {n} over {max}"),
        ));
    }
    std::str::from_utf8(&b[at + 2..at + 2 + n])
        .map(str::to_owned)
        .map_err(|_| FormatError::Invalid(what, "text is not UTF-8".into()))
}

impl RecoveryBlock {
    /// Checks the text limits (the encoder truncates nothing silently: callers validate first).
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), FormatError> {
        for (what, s, max) in [
            ("label", &self.label, RC_LABEL_MAX),
            ("admin contact", &self.contact, RC_CONTACT_MAX),
            ("note", &self.note, RC_NOTE_MAX),
        ] {
            if s.len() > max {
                return Err(FormatError::Invalid(
                    "recovery block",
                    format!("{what} longer than {max} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// Encodes the block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[0..8].copy_from_slice(&RC_MAGIC);
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[16..32].copy_from_slice(self.uuid.as_bytes());
        b[32..40].copy_from_slice(&self.created.to_le_bytes());
        b[40..42].copy_from_slice(&self.major.to_le_bytes());
        b[42..44].copy_from_slice(&self.minor.to_le_bytes());
        b[48..56].copy_from_slice(&self.device_bytes.to_le_bytes());
        put_str(&mut b, RC_LABEL, RC_LABEL_MAX, &self.label);
        put_str(&mut b, RC_CONTACT, RC_CONTACT_MAX, &self.contact);
        put_str(&mut b, RC_NOTE, RC_NOTE_MAX, &self.note);
        seal_block(&mut b);
        b
    }

    /// Decodes the block.
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        check_block(b, &RC_MAGIC, "recovery block")?;
        if u16_at(b, 8) != 1 {
            return Err(FormatError::Version {
                what: "recovery block",
                major: u16_at(b, 8),
                minor: 0,
            });
        }
        Ok(Self {
            uuid: uuid_at(b, 16),
            created: u64_at(b, 32),
            major: u16_at(b, 40),
            minor: u16_at(b, 42),
            device_bytes: u64_at(b, 48),
            label: get_str(b, RC_LABEL, RC_LABEL_MAX, "recovery block")?,
            contact: get_str(b, RC_CONTACT, RC_CONTACT_MAX, "recovery block")?,
            note: get_str(b, RC_NOTE, RC_NOTE_MAX, "recovery block")?,
        })
    }
}

// ------------------------------------------------------------------------------ key slots

const KS_MAGIC: [u8; 8] = *b"DWKSLOTS";

/// Frames a key-slot blob for one copy: a 4096-byte header (generation, length, BLAKE3 of the
/// blob) followed by the blob.
///
/// # Panics
/// If the blob exceeds [`KEYSLOTS_MAX_BLOB`] (callers check first).
#[must_use]
pub fn encode_keyslots(generation: u64, blob: &[u8]) -> Vec<u8> {
    assert!(blob.len() <= KEYSLOTS_MAX_BLOB);
    let mut b = vec![0u8; BLOCK + blob.len().div_ceil(BLOCK) * BLOCK];
    b[0..8].copy_from_slice(&KS_MAGIC);
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    b[24..28].copy_from_slice(&u32::try_from(blob.len()).unwrap_or(0).to_le_bytes());
    b[32..64].copy_from_slice(blake3::hash(blob).as_bytes());
    seal_block(&mut b[..BLOCK]);
    b[BLOCK..BLOCK + blob.len()].copy_from_slice(blob);
    b
}

/// Decodes one copy's framing header; returns (generation, blob length, blob hash).
///
/// # Errors
/// [`FormatError`].
pub fn decode_keyslots_header(b: &[u8]) -> Result<(u64, usize, [u8; 32]), FormatError> {
    check_block(b, &KS_MAGIC, "key-slot area")?;
    let len = u32_at(b, 24) as usize;
    if len > KEYSLOTS_MAX_BLOB {
        return Err(FormatError::Invalid(
            "key-slot area",
            format!("blob of {len} bytes"),
        ));
    }
    Ok((u64_at(b, 16), len, arr32(b, 32)))
}

// ------------------------------------------------------------------------------ metadata length

const ML_MAGIC: [u8; 8] = *b"DWVDMETA";

/// The metadata store's length record (two alternating slots at the start of the region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLen {
    /// Slot write counter (the higher valid one wins).
    pub counter: u64,
    /// Current length of the store.
    pub len: u64,
    /// Highest byte ever written (space beyond it is known to be zero).
    pub high_water: u64,
}

impl MetaLen {
    /// Encodes a slot.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[0..8].copy_from_slice(&ML_MAGIC);
        b[8..16].copy_from_slice(&self.counter.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&self.high_water.to_le_bytes());
        seal_block(&mut b);
        b
    }

    /// Decodes a slot.
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        check_block(b, &ML_MAGIC, "metadata length slot")?;
        Ok(Self {
            counter: u64_at(b, 8),
            len: u64_at(b, 16),
            high_water: u64_at(b, 24),
        })
    }
}

// ------------------------------------------------------------------------------ intent log

const LOG_MAGIC: [u8; 8] = *b"DWVDLOG\0";

/// Header of an intent-log record: `length` bytes of segment `segment` starting at
/// `seg_offset`, logged at sequence `seq`, followed by the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    /// VDE identity (records of another VDE never match).
    pub vde: Uuid,
    /// Log sequence (records older than the durable checkpoint are ignored).
    pub seq: u64,
    /// Segment index.
    pub segment: u64,
    /// Offset inside the segment.
    pub seg_offset: u64,
    /// Payload length (4 KiB multiple).
    pub length: u64,
    /// BLAKE3 of the payload.
    pub payload_hash: [u8; 32],
}

impl LogRecord {
    /// Encodes the header block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[0..8].copy_from_slice(&LOG_MAGIC);
        b[8..24].copy_from_slice(self.vde.as_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment.to_le_bytes());
        b[40..48].copy_from_slice(&self.seg_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.length.to_le_bytes());
        b[56..88].copy_from_slice(&self.payload_hash);
        seal_block(&mut b);
        b
    }

    /// Decodes a header block of VDE `vde`.
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8], vde: &Uuid) -> Result<Self, FormatError> {
        check_block(b, &LOG_MAGIC, "intent log record")?;
        if uuid_at(b, 8) != *vde {
            return Err(FormatError::NoMagic("intent log record (another VDE)"));
        }
        let r = Self {
            vde: *vde,
            seq: u64_at(b, 24),
            segment: u64_at(b, 32),
            seg_offset: u64_at(b, 40),
            length: u64_at(b, 48),
            payload_hash: arr32(b, 56),
        };
        if r.length == 0
            || !r.length.is_multiple_of(BLOCK as u64)
            || !r.seg_offset.is_multiple_of(BLOCK as u64)
        {
            return Err(FormatError::Invalid(
                "intent log record",
                "unaligned range".into(),
            ));
        }
        Ok(r)
    }
}

/// Valid sample structures for fuzz targets and tests (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use super::{Header, RecoveryBlock, RegionDirectory};

    use super::{
        HEADER_A, HEADER_B, INCOMPAT_SEGMENTS, KEYSLOTS_A, KEYSLOTS_B, KEYSLOTS_LEN, META_START,
        RECOVERY, REGDIR_A, REGDIR_B, Region, RegionKind,
    };
    use uuid::Uuid;

    /// A valid header.
    #[must_use]
    pub fn sample_header() -> Header {
        Header {
            major: 1,
            minor: 0,
            incompat: INCOMPAT_SEGMENTS,
            ro_compat: 0,
            compat: 0,
            min_reader: 1,
            min_writer: 1,
            uuid: Uuid::from_bytes([0x11; 16]),
            created: 1_790_000_000,
            generation: 3,
            device_bytes: 1 << 30,
            key_generation: 0,
            regdir_hash: [2; 32],
            recovery_mac: [4; 32],
            seal: [3; 32],
            key_check: [6; 32],
        }
    }

    /// A valid region directory for a 1 GiB device.
    #[must_use]
    pub fn sample_regdir() -> RegionDirectory {
        let mk = |kind, offset, length| Region {
            kind,
            offset,
            length,
        };
        RegionDirectory {
            regions: vec![
                mk(RegionKind::HeaderA, HEADER_A, 4096),
                mk(RegionKind::HeaderB, HEADER_B, 4096),
                mk(RegionKind::RegdirA, REGDIR_A, 4096),
                mk(RegionKind::RegdirB, REGDIR_B, 4096),
                mk(RegionKind::Recovery, RECOVERY, 4096),
                mk(RegionKind::KeyslotsA, KEYSLOTS_A, KEYSLOTS_LEN),
                mk(RegionKind::KeyslotsB, KEYSLOTS_B, KEYSLOTS_LEN),
                mk(RegionKind::Metadata, META_START, 64 << 20),
                mk(RegionKind::Log, META_START + (64 << 20), 16 << 20),
                mk(RegionKind::Data, 96 << 20, (1 << 30) - (96 << 20)),
            ],
            segment_bytes: 1 << 20,
        }
    }

    /// A valid recovery block.
    #[must_use]
    pub fn sample_recovery() -> RecoveryBlock {
        RecoveryBlock {
            uuid: Uuid::from_bytes([5; 16]),
            created: 9,
            major: 1,
            minor: 0,
            device_bytes: 1 << 30,
            label: "tank".into(),
            contact: "ops@example.org".into(),
            note: "note".into(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One block of a device.
    pub(crate) fn read(dev: &dyn dw_blockdev::BlockDev, at: u64) -> Vec<u8> {
        dw_blockdev::read_vec(dev, at, BLOCK).expect("read")
    }

    pub(crate) fn sample_header() -> Header {
        fuzzing::sample_header()
    }

    pub(crate) fn sample_regdir() -> RegionDirectory {
        fuzzing::sample_regdir()
    }

    #[test]
    fn roundtrips() {
        let h = sample_header();
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let r = sample_regdir();
        assert_eq!(RegionDirectory::decode(&r.encode(), 1 << 30), Ok(r));
        let rc = RecoveryBlock {
            uuid: Uuid::from_bytes([5; 16]),
            created: 9,
            major: 1,
            minor: 0,
            device_bytes: 1 << 30,
            label: "tank".into(),
            contact: "ops@example.org, +1 555 0100".into(),
            note: "DataWarehouse VDE".into(),
        };
        assert_eq!(RecoveryBlock::decode(&rc.encode()), Ok(rc));
        let ml = MetaLen {
            counter: 4,
            len: 8192,
            high_water: 12288,
        };
        assert_eq!(MetaLen::decode(&ml.encode()), Ok(ml));
        let lr = LogRecord {
            vde: Uuid::from_bytes([6; 16]),
            seq: 5,
            segment: 7,
            seg_offset: 8192,
            length: 4096,
            payload_hash: [9; 32],
        };
        assert_eq!(LogRecord::decode(&lr.encode(), &lr.vde), Ok(lr));
        let ks = encode_keyslots(3, b"opaque key slots");
        assert_eq!(
            decode_keyslots_header(&ks),
            Ok((3, 16, *blake3::hash(b"opaque key slots").as_bytes()))
        );
    }

    #[test]
    fn damage_and_versions_are_named() {
        let mut b = sample_header().encode();
        b[70] ^= 1;
        assert_eq!(Header::decode(&b), Err(FormatError::Damaged("VDE header")));
        let mut h = sample_header();
        h.incompat |= 1 << 40;
        assert!(matches!(
            Header::decode(&h.encode()),
            Err(FormatError::Features(_))
        ));
        let mut b = sample_header().encode();
        b[4] = 2;
        seal_block(&mut b);
        assert!(matches!(
            Header::decode(&b),
            Err(FormatError::Version { major: 2, .. })
        ));
        assert!(matches!(
            Header::decode(&[0u8; 10]),
            Err(FormatError::NoMagic(_))
        ));
        let mut r = sample_regdir();
        r.regions[8].length += 4096 * 100_000;
        assert!(
            RegionDirectory::decode(&r.encode(), 1 << 30).is_err(),
            "overlap"
        );
    }

    proptest::proptest! {
        #[test]
        fn decoders_are_total(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000),
                              edits in proptest::collection::vec((0usize..4064, proptest::prelude::any::<u8>()), 0..6)) {
            let u = Uuid::from_bytes([6; 16]);
            let _ = Header::decode(&noise);
            let _ = RegionDirectory::decode(&noise, u64::MAX);
            let _ = RecoveryBlock::decode(&noise);
            let _ = MetaLen::decode(&noise);
            let _ = LogRecord::decode(&noise, &u);
            let _ = decode_keyslots_header(&noise);
            // Valid blocks with edits and a fixed-up checksum reach every field check.
            for mut b in [sample_header().encode(), sample_regdir().encode()] {
                for &(at, v) in &edits {
                    b[at] = v;
                }
                seal_block(&mut b);
                let _ = Header::decode(&b);
                let _ = RegionDirectory::decode(&b, 1 << 30);
            }
        }
    }
}
