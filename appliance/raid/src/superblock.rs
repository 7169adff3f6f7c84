//! The member superblock: what every member of an array says about the array and itself.
//!
//! 4096 bytes, all integers little-endian, at byte 4096 of the member (primary) and in the last
//! 4096-byte-aligned block of the member (backup). The layout is in docs/FORMAT.md; the
//! offsets below are that table. A superblock is accepted only with the right magic, a matching
//! CRC-32C, a supported major version and internally consistent geometry; anything else is an
//! error that says which check failed.

use uuid::Uuid;

use crate::Level;

/// Size of a superblock.
pub const SB_SIZE: usize = 4096;
/// Byte offset of the primary copy on a member.
pub const SB_PRIMARY: u64 = 4096;
/// Magic at byte 0 of a superblock.
pub const MAGIC: [u8; 8] = *b"DWARRAY\0";
/// Format major version written; readers refuse other majors.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version written; newer minors only add fields in reserved space.
pub const VERSION_MINOR: u16 = 0;
/// Largest number of member table entries (roles plus spares).
pub const MAX_ENTRIES: usize = 64;
/// Bytes per member table entry.
pub const ENTRY_SIZE: usize = 40;
const ENTRIES_AT: usize = 256;
const NAME_AT: usize = 176;
const NAME_LEN: usize = 64;
const CRC_AT: usize = SB_SIZE - 4;
/// Largest chunk size accepted.
pub const MAX_CHUNK: u32 = 16 << 20;

/// Byte offset of the backup copy on a member of `device_size` bytes.
#[must_use]
pub fn backup_offset(device_size: u64) -> u64 {
    (device_size / SB_SIZE as u64) * SB_SIZE as u64 - SB_SIZE as u64
}

/// The state of one member table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Holds current data for its role.
    InSync,
    /// Being rebuilt for its role; rows below `recovery_rows` are current.
    Rebuilding,
    /// Failed or removed: its data must never be used again.
    Failed,
    /// A hot spare.
    Spare,
    /// Being filled as the replacement of a role whose current member is still in sync.
    Replacement,
}

impl EntryState {
    fn code(self) -> u8 {
        match self {
            EntryState::InSync => 1,
            EntryState::Rebuilding => 2,
            EntryState::Failed => 3,
            EntryState::Spare => 4,
            EntryState::Replacement => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => EntryState::InSync,
            2 => EntryState::Rebuilding,
            3 => EntryState::Failed,
            4 => EntryState::Spare,
            5 => EntryState::Replacement,
            _ => return None,
        })
    }
}

/// Why an entry was failed (kept in the superblock so assembly can say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Not failed.
    None,
    /// An I/O error made the device unusable.
    IoError,
    /// The device was absent when the array was started degraded.
    MissingAtAssembly,
    /// An administrator removed it.
    Removed,
    /// It was replaced by another device.
    Replaced,
}

impl FailReason {
    fn code(self) -> u8 {
        match self {
            FailReason::None => 0,
            FailReason::IoError => 1,
            FailReason::MissingAtAssembly => 2,
            FailReason::Removed => 3,
            FailReason::Replaced => 4,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => FailReason::IoError,
            2 => FailReason::MissingAtAssembly,
            3 => FailReason::Removed,
            4 => FailReason::Replaced,
            _ => FailReason::None,
        }
    }

    /// Words for an administrator.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            FailReason::None => "no reason recorded",
            FailReason::IoError => "it failed with I/O errors",
            FailReason::MissingAtAssembly => "it was missing when the array was started degraded",
            FailReason::Removed => "an administrator removed it",
            FailReason::Replaced => "it was replaced by another device",
        }
    }
}

/// One member table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Member identity.
    pub uuid: Uuid,
    /// State.
    pub state: EntryState,
    /// Failure reason (for `Failed`).
    pub reason: FailReason,
    /// Layout role, `None` for spares.
    pub role: Option<u16>,
    /// Rows already rebuilt (for `Rebuilding` and `Replacement`).
    pub recovery_rows: u64,
    /// Rows of this member's data region (JBOD members differ; otherwise all equal).
    pub data_rows: u64,
}

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Array identity.
    pub array_uuid: Uuid,
    /// Identity of the member this copy was written to.
    pub member_uuid: Uuid,
    /// Event counter: bumped on every change of the member table or array state.
    pub generation: u64,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Time of this write (Unix seconds).
    pub updated: u64,
    /// Level.
    pub level: Level,
    /// Copies of mirrored data.
    pub copies: u8,
    /// True when the array was closed cleanly (no journal replay or resync needed).
    pub clean: bool,
    /// Number of layout roles.
    pub roles: u16,
    /// Chunk size in bytes.
    pub chunk: u32,
    /// Logical sector of the array in bytes.
    pub sector: u32,
    /// Start of the data region on every member.
    pub data_offset: u64,
    /// Logical size of the array in bytes.
    pub array_size: u64,
    /// RAID-Z rows reserved for the mirrored small-write region.
    pub mirror_rows: u64,
    /// Write-intent bitmap location on every member.
    pub bitmap_offset: u64,
    /// Write-intent bitmap length.
    pub bitmap_len: u64,
    /// Member data bytes covered by one bitmap bit.
    pub bitmap_granularity: u64,
    /// Journal location on every member (0 length when the level has none).
    pub journal_offset: u64,
    /// Journal length.
    pub journal_len: u64,
    /// Size of this member device when it joined.
    pub device_size: u64,
    /// Human-readable array name.
    pub name: String,
    /// Member table.
    pub entries: Vec<Entry>,
}

/// Why a superblock could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// No array magic: the block is not one of ours (or was wiped).
    #[error("no array superblock (magic not found)")]
    NoMagic,
    /// Magic present but the checksum does not match: damaged.
    #[error("array superblock damaged (checksum {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// Written by an incompatible format version.
    #[error(
        "array superblock format {major}.{minor} is not supported (this software reads {VERSION_MAJOR}.x)"
    )]
    UnsupportedVersion {
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// A field is out of range or inconsistent.
    #[error("array superblock invalid: {0}")]
    Invalid(String),
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
fn get_uuid(b: &[u8], at: usize) -> Uuid {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes(w)
}

fn invalid(msg: impl Into<String>) -> SuperblockError {
    SuperblockError::Invalid(msg.into())
}

impl Superblock {
    /// Serialises to the 4096-byte on-disk form. Panics (assertion) if the superblock is not
    /// valid: an invalid superblock is a programming error and must never reach a disk.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        if let Err(e) = self.validate() {
            panic!("refusing to write an invalid superblock: {e}");
        }
        let mut b = vec![0u8; SB_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        put_u16(&mut b, 8, VERSION_MAJOR);
        put_u16(&mut b, 10, VERSION_MINOR);
        put_u32(&mut b, 12, u32::try_from(SB_SIZE).unwrap_or(4096));
        b[16..32].copy_from_slice(self.array_uuid.as_bytes());
        b[32..48].copy_from_slice(self.member_uuid.as_bytes());
        put_u64(&mut b, 48, self.generation);
        put_u64(&mut b, 56, self.created);
        put_u64(&mut b, 64, self.updated);
        b[72] = self.level.code();
        b[73] = u8::try_from(self.level.parity()).unwrap_or(0);
        b[74] = self.copies;
        b[75] = u8::from(self.clean);
        put_u16(&mut b, 76, self.roles);
        put_u16(&mut b, 78, u16::try_from(self.entries.len()).unwrap_or(0));
        put_u32(&mut b, 80, self.chunk);
        put_u32(&mut b, 84, self.sector);
        put_u64(&mut b, 88, self.data_offset);
        put_u64(&mut b, 96, 0); // reserved (per-member data size lives in the table)
        put_u64(&mut b, 104, self.array_size);
        put_u64(&mut b, 112, self.mirror_rows);
        put_u64(&mut b, 120, self.bitmap_offset);
        put_u64(&mut b, 128, self.bitmap_len);
        put_u64(&mut b, 136, self.bitmap_granularity);
        put_u64(&mut b, 144, self.journal_offset);
        put_u64(&mut b, 152, self.journal_len);
        put_u64(&mut b, 168, self.device_size);
        b[NAME_AT..NAME_AT + self.name.len()].copy_from_slice(self.name.as_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let at = ENTRIES_AT + i * ENTRY_SIZE;
            b[at..at + 16].copy_from_slice(e.uuid.as_bytes());
            b[at + 16] = e.state.code();
            b[at + 17] = e.reason.code();
            put_u16(&mut b, at + 18, e.role.unwrap_or(u16::MAX));
            put_u64(&mut b, at + 24, e.recovery_rows);
            put_u64(&mut b, at + 32, e.data_rows);
        }
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        put_u32(&mut b, CRC_AT, crc);
        // Pair assertion: what we write must read back as what we meant.
        debug_assert_eq!(Self::decode(&b).as_ref(), Ok(self));
        b
    }

    /// Parses and validates the on-disk form. Never panics on any input.
    ///
    /// # Errors
    /// [`SuperblockError`] naming the failed check.
    pub fn decode(b: &[u8]) -> Result<Self, SuperblockError> {
        if b.len() < SB_SIZE {
            return Err(invalid(format!("{} bytes, expected {SB_SIZE}", b.len())));
        }
        if b[0..8] != MAGIC {
            return Err(SuperblockError::NoMagic);
        }
        let stored = get_u32(b, CRC_AT);
        let computed = crc32c::crc32c(&b[..CRC_AT]);
        if stored != computed {
            return Err(SuperblockError::BadChecksum { stored, computed });
        }
        let (major, minor) = (get_u16(b, 8), get_u16(b, 10));
        if major != VERSION_MAJOR {
            return Err(SuperblockError::UnsupportedVersion { major, minor });
        }
        if get_u32(b, 12) as usize != SB_SIZE {
            return Err(invalid("header size is not 4096"));
        }
        let level = Level::from_code(b[72])
            .ok_or_else(|| invalid(format!("unknown level code {}", b[72])))?;
        if usize::from(b[73]) != level.parity() {
            return Err(invalid(format!(
                "parity count {} does not match {level}",
                b[73]
            )));
        }
        let count = usize::from(get_u16(b, 78));
        if count > MAX_ENTRIES {
            return Err(invalid(format!(
                "{count} member entries (at most {MAX_ENTRIES})"
            )));
        }
        let name_raw = &b[NAME_AT..NAME_AT + NAME_LEN];
        let name_end = name_raw.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name = std::str::from_utf8(&name_raw[..name_end])
            .map_err(|_| invalid("array name is not UTF-8"))?
            .to_owned();
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = ENTRIES_AT + i * ENTRY_SIZE;
            let state = EntryState::from_code(b[at + 16])
                .ok_or_else(|| invalid(format!("entry {i}: unknown state {}", b[at + 16])))?;
            let role = get_u16(b, at + 18);
            entries.push(Entry {
                uuid: get_uuid(b, at),
                state,
                reason: FailReason::from_code(b[at + 17]),
                role: (role != u16::MAX).then_some(role),
                recovery_rows: get_u64(b, at + 24),
                data_rows: get_u64(b, at + 32),
            });
        }
        let sb = Superblock {
            array_uuid: get_uuid(b, 16),
            member_uuid: get_uuid(b, 32),
            generation: get_u64(b, 48),
            created: get_u64(b, 56),
            updated: get_u64(b, 64),
            level,
            copies: b[74],
            clean: b[75] & 1 != 0,
            roles: get_u16(b, 76),
            chunk: get_u32(b, 80),
            sector: get_u32(b, 84),
            data_offset: get_u64(b, 88),
            array_size: get_u64(b, 104),
            mirror_rows: get_u64(b, 112),
            bitmap_offset: get_u64(b, 120),
            bitmap_len: get_u64(b, 128),
            bitmap_granularity: get_u64(b, 136),
            journal_offset: get_u64(b, 144),
            journal_len: get_u64(b, 152),
            device_size: get_u64(b, 168),
            name,
            entries,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Checks every field for range and consistency.
    ///
    /// # Errors
    /// [`SuperblockError::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<(), SuperblockError> {
        let roles = usize::from(self.roles);
        if roles < self.level.min_members() {
            return Err(invalid(format!(
                "{roles} roles; {} needs at least {}",
                self.level,
                self.level.min_members()
            )));
        }
        if roles > MAX_ENTRIES || self.entries.len() > MAX_ENTRIES {
            return Err(invalid("too many members"));
        }
        if !self.chunk.is_power_of_two() || self.chunk < 4096 || self.chunk > MAX_CHUNK {
            return Err(invalid(format!(
                "chunk size {} (must be a power of two, 4 KiB to 16 MiB)",
                self.chunk
            )));
        }
        if self.sector != 4096 {
            return Err(invalid(format!(
                "array sector {} (must be 4096)",
                self.sector
            )));
        }
        if self.name.len() > NAME_LEN || self.name.contains('\0') {
            return Err(invalid("array name longer than 64 bytes or containing NUL"));
        }
        let copies = usize::from(self.copies);
        let copies_ok = match self.level {
            Level::Raid1 => copies == roles,
            Level::Raid10 => copies >= 2 && copies <= roles,
            l if l.is_z() => copies == l.parity() + 1,
            _ => copies <= 1,
        };
        if !copies_ok {
            return Err(invalid(format!(
                "{copies} copies is not valid for {} with {roles} members",
                self.level
            )));
        }
        let align = 4096u64;
        for (what, v) in [
            ("data offset", self.data_offset),
            ("bitmap offset", self.bitmap_offset),
            ("bitmap length", self.bitmap_len),
            ("journal offset", self.journal_offset),
            ("journal length", self.journal_len),
        ] {
            if v % align != 0 {
                return Err(invalid(format!("{what} {v} is not 4 KiB aligned")));
            }
        }
        let meta_start = SB_PRIMARY + SB_SIZE as u64;
        let bitmap_end = self.bitmap_offset.checked_add(self.bitmap_len);
        let journal_end = self.journal_offset.checked_add(self.journal_len);
        match (bitmap_end, journal_end) {
            (Some(be), Some(je))
                if self.bitmap_offset >= meta_start
                    && (self.journal_len == 0 || self.journal_offset >= be)
                    && be <= self.data_offset
                    && je <= self.data_offset => {}
            _ => {
                return Err(invalid(
                    "bitmap or journal region overlaps the superblock or the data region",
                ));
            }
        }
        if self.bitmap_len > 0 && self.bitmap_granularity == 0 {
            return Err(invalid("bitmap granularity is zero"));
        }
        let chunk = u64::from(self.chunk);
        let mut seen_roles = vec![0u8; roles];
        let mut uuids = std::collections::HashSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !uuids.insert(e.uuid) {
                return Err(invalid(format!(
                    "entry {i}: duplicate member uuid {}",
                    e.uuid
                )));
            }
            let end = e
                .data_rows
                .checked_mul(chunk)
                .and_then(|d| d.checked_add(self.data_offset));
            if end.is_none() {
                return Err(invalid(format!("entry {i}: data size overflows")));
            }
            match (e.state, e.role) {
                (EntryState::Spare, None) => {}
                (EntryState::Spare, Some(_)) => {
                    return Err(invalid(format!("entry {i}: spare with a role")));
                }
                (EntryState::Failed, _) => {}
                (_, None) => {
                    return Err(invalid(format!("entry {i}: active member without a role")));
                }
                (s, Some(r)) => {
                    let r = usize::from(r);
                    if r >= roles {
                        return Err(invalid(format!("entry {i}: role {r} beyond {roles} roles")));
                    }
                    let slot = &mut seen_roles[r];
                    match s {
                        EntryState::InSync | EntryState::Rebuilding => {
                            if *slot & 1 != 0 {
                                return Err(invalid(format!("role {r} has two members")));
                            }
                            *slot |= 1;
                        }
                        _ => {
                            if *slot & 2 != 0 {
                                return Err(invalid(format!("role {r} has two replacements")));
                            }
                            *slot |= 2;
                        }
                    }
                    if matches!(s, EntryState::Rebuilding | EntryState::Replacement)
                        && e.recovery_rows > e.data_rows
                    {
                        return Err(invalid(format!("entry {i}: recovery beyond its data")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The entry describing this superblock's own member.
    #[must_use]
    pub fn own_entry(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.uuid == self.member_uuid)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        let u = |b: u8| Uuid::from_bytes([b; 16]);
        Superblock {
            array_uuid: u(0xA1),
            member_uuid: u(0x02),
            generation: 42,
            created: 1_790_000_000,
            updated: 1_790_000_100,
            level: Level::Raid6,
            copies: 0,
            clean: true,
            roles: 4,
            chunk: 65536,
            sector: 4096,
            data_offset: 1 << 20,
            array_size: 2 * 100 * 65536,
            mirror_rows: 0,
            bitmap_offset: 8192,
            bitmap_len: 131_072,
            bitmap_granularity: 64 << 20,
            journal_offset: 139_264,
            journal_len: 524_288,
            device_size: (1 << 20) + 100 * 65536 + 4096,
            name: "tank".into(),
            entries: (0..4u8)
                .map(|i| Entry {
                    uuid: u(i + 1),
                    state: if i == 3 {
                        EntryState::Rebuilding
                    } else {
                        EntryState::InSync
                    },
                    reason: FailReason::None,
                    role: Some(u16::from(i)),
                    recovery_rows: if i == 3 { 17 } else { 0 },
                    data_rows: 100,
                })
                .chain(std::iter::once(Entry {
                    uuid: u(9),
                    state: EntryState::Spare,
                    reason: FailReason::None,
                    role: None,
                    recovery_rows: 0,
                    data_rows: 100,
                }))
                .collect(),
        }
    }

    #[test]
    fn roundtrip() {
        let sb = sample();
        let b = sb.encode();
        assert_eq!(b.len(), SB_SIZE);
        assert_eq!(Superblock::decode(&b), Ok(sb));
    }

    #[test]
    fn golden_v1() {
        let b = sample().encode();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/superblock-v1.bin"
        );
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &b).expect("write golden");
        }
        let golden = std::fs::read(path).expect("golden file (UPDATE_GOLDEN=1 regenerates)");
        assert_eq!(
            b, golden,
            "superblock v1 encoding changed: that is an on-disk format change"
        );
        assert_eq!(Superblock::decode(&golden), Ok(sample()));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let b = sample().encode();
        for byte in 0..SB_SIZE {
            for bit in 0..8 {
                let mut c = b.clone();
                c[byte] ^= 1 << bit;
                assert!(
                    Superblock::decode(&c).is_err(),
                    "flip at {byte}.{bit} accepted"
                );
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes, and valid encodings with random damage and a recomputed checksum
        /// (to get past the CRC into field validation), never panic; whatever decodes re-encodes
        /// to the same bytes.
        #[test]
        fn decode_is_total(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4200),
                           edits in proptest::collection::vec((0usize..SB_SIZE, proptest::prelude::any::<u8>()), 0..8)) {
            let _ = Superblock::decode(&noise);
            let mut b = sample().encode();
            for (at, v) in edits {
                b[at] = v;
            }
            let crc = crc32c::crc32c(&b[..CRC_AT]);
            put_u32(&mut b, CRC_AT, crc);
            if let Ok(sb) = Superblock::decode(&b) {
                let again = sb.encode();
                proptest::prop_assert_eq!(Superblock::decode(&again), Ok(sb));
            }
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(
            Superblock::decode(&[0u8; SB_SIZE]),
            Err(SuperblockError::NoMagic)
        );
        assert!(Superblock::decode(&[0u8; 10]).is_err());
        let mut b = sample().encode();
        put_u16(&mut b, 8, 2);
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        put_u32(&mut b, CRC_AT, crc);
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion { major: 2, minor: 0 })
        );
        let mut bad = sample();
        bad.entries[1].role = Some(0);
        assert!(bad.validate().is_err(), "two members for one role");
        let mut bad = sample();
        bad.chunk = 3000;
        assert!(bad.validate().is_err());
    }
}
