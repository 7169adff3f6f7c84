//! The RAID-5/6 write journal, which closes the write hole.
//!
//! A partial-stripe write changes some data shards and every parity shard of one stripe row
//! range. Before any of those shards is written in place, each member whose shard changes gets
//! a journal record holding its new bytes, and every such member is flushed. Only then do the
//! in-place writes start. A crash therefore leaves either an incomplete transaction (some
//! record missing or damaged on a present member: the in-place writes never started, the stripe
//! is still the old consistent one, skip it) or a complete one (replay every record that is on
//! a present member; a member that is gone is covered by the replayed parity).
//!
//! Full-stripe writes are not journaled (they cannot endanger data outside themselves), except
//! when a journal record for the same stripe is still live: then replaying the older record
//! after a crash would overwrite the newer full-stripe write, so it is journaled too.
//!
//! Region layout on every member (little-endian): two checkpoint slots (0..4096, 4096..8192),
//! then a ring of 4 KiB-aligned records from 8192 to the end. A record is a 4096-byte header
//! followed by its payload. See docs/FORMAT.md for every field.

use std::collections::VecDeque;

use uuid::Uuid;

/// Bytes of one header or checkpoint slot.
pub const BLOCK: u64 = BLOCK_BYTES as u64;
const BLOCK_BYTES: usize = 4096;
/// Start of the record ring inside the region.
pub const RING_START: u64 = 2 * BLOCK;
const REC_MAGIC: [u8; 8] = *b"DWJRNREC";
const CKPT_MAGIC: [u8; 8] = *b"DWJCKPT\0";
const CRC_AT: usize = 4092;

/// One record's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Array identity.
    pub array: Uuid,
    /// Member identity (records of a device's earlier life never match).
    pub member: Uuid,
    /// Transaction sequence number (same on every member of the transaction).
    pub seq: u64,
    /// Stripe.
    pub stripe: u64,
    /// Offset of the changed row range inside the chunk.
    pub row_off: u64,
    /// Length of the changed row range (payload length).
    pub row_len: u64,
    /// This member's role.
    pub role: u16,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
    /// Every device that holds a record of this transaction. Replay requires a record on each
    /// of them that is present; judging by devices (not roles) keeps a spare that joined later
    /// from making an old transaction look incomplete.
    pub participants: Vec<Uuid>,
}

/// Most devices one transaction can involve (every role plus a replacement for each).
pub const MAX_PARTICIPANTS: usize = 128;
const PARTICIPANTS_AT: usize = 96;

/// Why a journal block is not a usable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a record (no magic) or another array's/member's.
    #[error("not a journal record of this member")]
    Foreign,
    /// Header checksum mismatch.
    #[error("journal record header damaged")]
    BadChecksum,
    /// Header fields out of range.
    #[error("journal record header invalid: {0}")]
    Invalid(&'static str),
}

impl RecordHeader {
    /// Encodes the 4096-byte header block.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.row_len > 0
                && self.row_len.is_multiple_of(BLOCK)
                && self.row_off.is_multiple_of(BLOCK)
        );
        assert!(
            self.participants.contains(&self.member),
            "own device in the transaction"
        );
        assert!(self.participants.len() <= MAX_PARTICIPANTS);
        let mut b = vec![0u8; BLOCK_BYTES];
        b[0..8].copy_from_slice(&REC_MAGIC);
        b[8..24].copy_from_slice(self.array.as_bytes());
        b[24..40].copy_from_slice(self.member.as_bytes());
        b[40..48].copy_from_slice(&self.seq.to_le_bytes());
        b[48..56].copy_from_slice(&self.stripe.to_le_bytes());
        b[56..64].copy_from_slice(&self.row_off.to_le_bytes());
        b[64..72].copy_from_slice(&self.row_len.to_le_bytes());
        b[80..82].copy_from_slice(&self.role.to_le_bytes());
        b[84..88].copy_from_slice(&self.payload_crc.to_le_bytes());
        let count = u16::try_from(self.participants.len()).unwrap_or(0);
        b[88..90].copy_from_slice(&count.to_le_bytes());
        for (i, u) in self.participants.iter().enumerate() {
            let at = PARTICIPANTS_AT + 16 * i;
            b[at..at + 16].copy_from_slice(u.as_bytes());
        }
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header block belonging to `array`/`member`.
    ///
    /// # Errors
    /// [`RecordError`] when the block is not a valid record of this member.
    pub fn decode(b: &[u8], array: &Uuid, member: &Uuid) -> Result<Self, RecordError> {
        if b.len() < BLOCK_BYTES || b[0..8] != REC_MAGIC {
            return Err(RecordError::Foreign);
        }
        if &b[8..24] != array.as_bytes() || &b[24..40] != member.as_bytes() {
            return Err(RecordError::Foreign);
        }
        if u32_at(b, CRC_AT) != crc32c::crc32c(&b[..CRC_AT]) {
            return Err(RecordError::BadChecksum);
        }
        let count = usize::from(u16::from_le_bytes([b[88], b[89]]));
        if count == 0 || count > MAX_PARTICIPANTS {
            return Err(RecordError::Invalid("participant count out of range"));
        }
        let participants: Vec<Uuid> = (0..count)
            .map(|i| {
                let at = PARTICIPANTS_AT + 16 * i;
                let mut u = [0u8; 16];
                u.copy_from_slice(&b[at..at + 16]);
                Uuid::from_bytes(u)
            })
            .collect();
        let h = Self {
            array: *array,
            member: *member,
            seq: u64_at(b, 40),
            stripe: u64_at(b, 48),
            row_off: u64_at(b, 56),
            row_len: u64_at(b, 64),
            role: u16::from_le_bytes([b[80], b[81]]),
            payload_crc: u32_at(b, 84),
            participants,
        };
        if h.row_len == 0 || !h.row_len.is_multiple_of(BLOCK) || !h.row_off.is_multiple_of(BLOCK) {
            return Err(RecordError::Invalid("row range not 4 KiB aligned"));
        }
        if !h.participants.contains(member) {
            return Err(RecordError::Invalid("own device not in the transaction"));
        }
        Ok(h)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Encodes a checkpoint slot: "every transaction up to `seq` is durable in place".
#[must_use]
pub fn encode_checkpoint(array: &Uuid, member: &Uuid, counter: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_BYTES];
    b[0..8].copy_from_slice(&CKPT_MAGIC);
    b[8..24].copy_from_slice(array.as_bytes());
    b[24..40].copy_from_slice(member.as_bytes());
    b[40..48].copy_from_slice(&counter.to_le_bytes());
    b[48..56].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a checkpoint slot as (counter, seq).
#[must_use]
pub fn decode_checkpoint(b: &[u8], array: &Uuid, member: &Uuid) -> Option<(u64, u64)> {
    if b.len() < BLOCK_BYTES
        || b[0..8] != CKPT_MAGIC
        || &b[8..24] != array.as_bytes()
        || &b[24..40] != member.as_bytes()
        || u32_at(b, CRC_AT) != crc32c::crc32c(&b[..CRC_AT])
    {
        return None;
    }
    Some((u64_at(b, 40), u64_at(b, 48)))
}

/// A record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Header.
    pub header: RecordHeader,
    /// Offset of the payload inside the region.
    pub payload_at: u64,
}

/// Scans a member's whole journal region (as read from disk) and returns its checkpoint and
/// every intact record newer than it. Damaged or foreign blocks are skipped.
#[must_use]
pub fn scan(region: &[u8], array: &Uuid, member: &Uuid) -> (u64, Vec<Found>) {
    let block = BLOCK_BYTES;
    let ckpt = [0usize, block]
        .iter()
        .filter_map(|&at| region.get(at..at + block))
        .filter_map(|b| decode_checkpoint(b, array, member))
        .max_by_key(|(counter, _)| *counter)
        .map_or(0, |(_, seq)| seq);
    let mut found = Vec::new();
    let mut at = 2 * BLOCK_BYTES;
    // Bounded: every iteration advances by at least one block.
    while at + block <= region.len() {
        let Ok(h) = RecordHeader::decode(&region[at..at + block], array, member) else {
            at += block;
            continue;
        };
        let Ok(len) = usize::try_from(h.row_len) else {
            at += block;
            continue;
        };
        let payload = at + block;
        let intact = region
            .get(payload..payload.saturating_add(len))
            .is_some_and(|p| crc32c::crc32c(p) == h.payload_crc);
        let step = if intact { block + len } else { block };
        if intact && h.seq > ckpt {
            found.push(Found {
                header: h,
                payload_at: payload as u64,
            });
        }
        at += step;
    }
    found.sort_by_key(|f| f.header.seq);
    (ckpt, found)
}

/// A member's record ring: where the next record goes and which records may still be needed.
#[derive(Debug, Clone)]
pub struct Ring {
    len: u64,
    head: u64,
    /// (offset, length, seq) of records not yet known to be checkpointed, oldest first.
    live: VecDeque<(u64, u64, u64)>,
}

/// The ring has no room without overwriting a record that may still be needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull;

impl Ring {
    /// An empty ring in a region of `len` bytes.
    #[must_use]
    pub fn new(len: u64) -> Self {
        Self {
            len,
            head: RING_START,
            live: VecDeque::new(),
        }
    }

    /// The largest record (header + payload) that fits.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.len.saturating_sub(RING_START)
    }

    /// Forgets records up to `checkpoint` (their space may be reused).
    pub fn reclaim(&mut self, checkpoint: u64) {
        while self
            .live
            .front()
            .is_some_and(|&(_, _, seq)| seq <= checkpoint)
        {
            self.live.pop_front();
        }
    }

    /// Where a record of `size` bytes would go, without reserving it.
    ///
    /// # Errors
    /// [`RingFull`] when that would overwrite a live record.
    pub fn peek(&self, size: u64) -> Result<u64, RingFull> {
        if size > self.capacity() {
            return Err(RingFull);
        }
        let mut at = self.head;
        if at + size > self.len {
            at = RING_START;
        }
        let end = at + size;
        let overlaps = self.live.iter().any(|&(o, l, _)| o < end && at < o + l);
        if overlaps {
            return Err(RingFull);
        }
        Ok(at)
    }

    /// Reserves `size` bytes for record `seq` at the offset [`Ring::peek`] returned.
    pub fn commit(&mut self, at: u64, size: u64, seq: u64) {
        self.live.push_back((at, size, seq));
        self.head = at + size;
    }

    /// Reserves `size` bytes for record `seq`; returns the offset in the region.
    ///
    /// # Errors
    /// [`RingFull`] when that would overwrite a live record.
    #[cfg(test)]
    pub fn reserve(&mut self, size: u64, seq: u64) -> Result<u64, RingFull> {
        let at = self.peek(size)?;
        self.commit(at, size, seq);
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uuid, Uuid) {
        (Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16]))
    }

    #[test]
    fn record_roundtrip_and_rejections() {
        let (a, m) = ids();
        let h = RecordHeader {
            array: a,
            member: m,
            seq: 9,
            stripe: 77,
            row_off: 8192,
            row_len: 4096,
            role: 3,
            payload_crc: 0xDEAD_BEEF,
            participants: vec![a, m, Uuid::from_bytes([3; 16])],
        };
        let b = h.encode();
        assert_eq!(RecordHeader::decode(&b, &a, &m), Ok(h.clone()));
        assert_eq!(RecordHeader::decode(&b, &a, &a), Err(RecordError::Foreign));
        let mut c = b.clone();
        c[50] ^= 1;
        assert_eq!(
            RecordHeader::decode(&c, &a, &m),
            Err(RecordError::BadChecksum)
        );
    }

    fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
        let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, bytes).expect("write golden");
        }
        let g = std::fs::read(&path).expect("golden file (UPDATE_GOLDEN=1 regenerates)");
        assert_eq!(
            bytes,
            &g[..],
            "{name}: encoding changed: that is an on-disk format change"
        );
        g
    }

    #[test]
    fn golden_record_and_checkpoint_v1() {
        let (a, m) = ids();
        let h = RecordHeader {
            array: a,
            member: m,
            seq: 0x0102_0304_0506_0708,
            stripe: 77,
            row_off: 8192,
            row_len: 12288,
            role: 5,
            payload_crc: 0xDEAD_BEEF,
            participants: vec![m, Uuid::from_bytes([3; 16]), Uuid::from_bytes([4; 16])],
        };
        let g = golden("journal-record-v1.bin", &h.encode());
        assert_eq!(RecordHeader::decode(&g, &a, &m), Ok(h));
        let g = golden(
            "journal-checkpoint-v1.bin",
            &encode_checkpoint(&a, &m, 9, 0x1122_3344),
        );
        assert_eq!(decode_checkpoint(&g, &a, &m), Some((9, 0x1122_3344)));
    }

    #[test]
    fn scan_finds_intact_records_after_checkpoint() {
        let (a, m) = ids();
        let mut region = vec![0u8; 64 * 1024];
        region[..4096].copy_from_slice(&encode_checkpoint(&a, &m, 1, 4));
        region[4096..8192].copy_from_slice(&encode_checkpoint(&a, &m, 2, 5));
        let mut put = |at: usize, seq: u64, payload_byte: u8, damage: bool| {
            let payload = vec![payload_byte; 4096];
            let h = RecordHeader {
                array: a,
                member: m,
                seq,
                stripe: seq,
                row_off: 0,
                row_len: 4096,
                role: 0,
                payload_crc: crc32c::crc32c(&payload),
                participants: vec![m],
            };
            region[at..at + 4096].copy_from_slice(&h.encode());
            region[at + 4096..at + 8192].copy_from_slice(&payload);
            if damage {
                region[at + 5000] ^= 1;
            }
        };
        put(8192, 5, 1, false); // checkpointed
        put(16384, 6, 2, false);
        put(24576, 8, 3, true); // torn payload
        put(32768, 7, 4, false);
        let (ckpt, found) = scan(&region, &a, &m);
        assert_eq!(ckpt, 5, "newest checkpoint slot wins");
        let seqs: Vec<u64> = found.iter().map(|f| f.header.seq).collect();
        assert_eq!(seqs, vec![6, 7]);
    }

    proptest::proptest! {
        #[test]
        fn parsers_are_total(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40_000)) {
            let (a, m) = ids();
            let _ = RecordHeader::decode(&noise, &a, &m);
            let _ = decode_checkpoint(&noise, &a, &m);
            let _ = scan(&noise, &a, &m);
        }
    }

    #[test]
    fn ring_never_overwrites_live_records() {
        let mut r = Ring::new(RING_START + 10 * BLOCK);
        assert_eq!(r.reserve(4 * BLOCK, 1), Ok(RING_START));
        assert_eq!(r.reserve(4 * BLOCK, 2), Ok(RING_START + 4 * BLOCK));
        assert_eq!(
            r.reserve(4 * BLOCK, 3),
            Err(RingFull),
            "would wrap onto seq 1"
        );
        r.reclaim(1);
        assert_eq!(r.reserve(4 * BLOCK, 3), Ok(RING_START));
        assert_eq!(
            r.reserve(11 * BLOCK, 4),
            Err(RingFull),
            "bigger than the ring"
        );
    }
}
