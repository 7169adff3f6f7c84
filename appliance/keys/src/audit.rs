//! The append-only, hash-chained audit log kept inside the key store.
//!
//! Every entry's hash covers the VDE id, its fields and the previous entry's hash; every hash is
//! MAC'd with a key derived from the master key. Someone without the master key can therefore
//! neither edit nor insert entries without [`crate::KeyStore::verify_audit`] noticing. The log keeps
//! the newest [`MAX_AUDIT_ENTRIES`]; the hash of the last dropped entry (the anchor) and the
//! number dropped stay, so the chain still verifies from the anchor.
//!
//! What it cannot detect on its own: a whole older key-slot area put back (rollback), or the
//! newest entries cut off together with the rest of the store. The daemon should also log each
//! new entry's hash to the journal (see docs/KEYS.md).

use std::fmt;

use crate::types::{SlotId, SlotKind, UnixTime, VdeId, short_hex};

/// Entries kept; older ones are folded into the anchor.
pub const MAX_AUDIT_ENTRIES: usize = 128;
/// Longest detail text in bytes.
pub const MAX_AUDIT_DETAIL: usize = 160;

const HASH_CONTEXT: &str = "DataWarehouse dw-keys v1 audit entry hash";

/// What happened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditAction {
    /// The store was created.
    Created,
    /// A slot was added.
    SlotAdded,
    /// A slot was removed.
    SlotRemoved,
    /// Master-key rotation began.
    RotationStarted,
    /// Master-key rotation finished (the previous key is gone).
    RotationFinished,
    /// A slot was re-sealed or re-wrapped to the machine's current state.
    Resealed,
    /// A temporary update slot was added before a planned update.
    UpdatePrepared,
    /// A temporary update slot opened the VDE (one boot of its allowance used).
    TemporarySlotUsed,
    /// A temporary update slot was removed after a successful re-seal.
    TemporarySlotRemoved,
}

impl AuditAction {
    pub(crate) fn code(self) -> u8 {
        match self {
            AuditAction::Created => 1,
            AuditAction::SlotAdded => 2,
            AuditAction::SlotRemoved => 3,
            AuditAction::RotationStarted => 4,
            AuditAction::RotationFinished => 5,
            AuditAction::Resealed => 6,
            AuditAction::UpdatePrepared => 7,
            AuditAction::TemporarySlotUsed => 8,
            AuditAction::TemporarySlotRemoved => 9,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<AuditAction> {
        Some(match c {
            1 => AuditAction::Created,
            2 => AuditAction::SlotAdded,
            3 => AuditAction::SlotRemoved,
            4 => AuditAction::RotationStarted,
            5 => AuditAction::RotationFinished,
            6 => AuditAction::Resealed,
            7 => AuditAction::UpdatePrepared,
            8 => AuditAction::TemporarySlotUsed,
            9 => AuditAction::TemporarySlotRemoved,
            _ => return None,
        })
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditAction::Created => "created",
            AuditAction::SlotAdded => "slot added",
            AuditAction::SlotRemoved => "slot removed",
            AuditAction::RotationStarted => "rotation started",
            AuditAction::RotationFinished => "rotation finished",
            AuditAction::Resealed => "resealed",
            AuditAction::UpdatePrepared => "update prepared",
            AuditAction::TemporarySlotUsed => "temporary slot used",
            AuditAction::TemporarySlotRemoved => "temporary slot removed",
        })
    }
}

/// One audit entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuditEntry {
    /// Sequence number (0 for the first entry ever written).
    pub seq: u64,
    /// When.
    pub time: UnixTime,
    /// What.
    pub action: AuditAction,
    /// Which slot, if any.
    pub slot: Option<SlotId>,
    /// That slot's kind, if any.
    pub kind: Option<SlotKind>,
    /// Free text without secrets, at most [`MAX_AUDIT_DETAIL`] bytes.
    pub detail: String,
    /// The previous entry's hash (the anchor for the first kept entry).
    pub prev_hash: [u8; 32],
    /// This entry's hash.
    pub hash: [u8; 32],
    /// Keyed BLAKE3 of `hash` under the audit key derived from the master key.
    pub mac: [u8; 32],
}

impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} t={} {}", self.seq, self.time.0, self.action)?;
        if let Some(s) = self.slot {
            write!(f, " slot {s}")?;
        }
        if let Some(k) = self.kind {
            write!(f, " ({k})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        write!(f, " [{}]", short_hex(&self.hash))
    }
}

/// The audit log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditVerifyError {
    /// Sequence numbers are not consecutive.
    #[error("audit entry #{found} follows #{expected_prev}: entries were removed or reordered")]
    Sequence {
        /// The sequence number found.
        found: u64,
        /// The previous one.
        expected_prev: u64,
    },
    /// An entry's prev_hash is not the previous entry's hash.
    #[error("audit entry #{seq} does not chain to the entry before it: history was rewritten")]
    Chain {
        /// The entry.
        seq: u64,
    },
    /// An entry's hash does not match its contents.
    #[error("audit entry #{seq} was modified after it was written (hash mismatch)")]
    Hash {
        /// The entry.
        seq: u64,
    },
    /// An entry's MAC does not verify under the master key.
    #[error("audit entry #{seq} was not written by someone holding the master key (MAC mismatch)")]
    Mac {
        /// The entry.
        seq: u64,
    },
}

/// The result of a successful verification.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AuditSummary {
    /// Entries kept.
    pub entries: usize,
    /// Entries folded into the anchor.
    pub dropped: u64,
    /// Whether MACs were checked (a master key was given).
    pub macs_checked: bool,
    /// Hash of the newest entry (log it elsewhere to detect truncation).
    pub head: [u8; 32],
}

/// The log itself.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct AuditLog {
    pub(crate) dropped: u64,
    pub(crate) anchor: [u8; 32],
    pub(crate) entries: Vec<AuditEntry>,
}

pub(crate) fn entry_hash(vde: VdeId, e: &AuditEntry) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    h.update(&vde.0);
    h.update(&e.seq.to_le_bytes());
    h.update(&e.time.0.to_le_bytes());
    h.update(&[e.action.code()]);
    h.update(&e.slot.map_or(u32::MAX, |s| s.0).to_le_bytes());
    h.update(&[e.kind.map_or(0, SlotKind::code)]);
    let detail_len = u16::try_from(e.detail.len()).unwrap_or(u16::MAX);
    h.update(&detail_len.to_le_bytes());
    h.update(e.detail.as_bytes());
    h.update(&e.prev_hash);
    *h.finalize().as_bytes()
}

fn mac(key: &[u8; 32], hash: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, hash).as_bytes()
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl AuditLog {
    pub(crate) fn head(&self) -> [u8; 32] {
        self.entries.last().map_or(self.anchor, |e| e.hash)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.dropped + self.entries.len() as u64
    }

    pub(crate) fn append(
        &mut self,
        vde: VdeId,
        key: &[u8; 32],
        time: UnixTime,
        action: AuditAction,
        slot: Option<(SlotId, SlotKind)>,
        detail: &str,
    ) {
        let mut e = AuditEntry {
            seq: self.next_seq(),
            time,
            action,
            slot: slot.map(|s| s.0),
            kind: slot.map(|s| s.1),
            detail: truncate_utf8(detail, MAX_AUDIT_DETAIL),
            prev_hash: self.head(),
            hash: [0; 32],
            mac: [0; 32],
        };
        e.hash = entry_hash(vde, &e);
        e.mac = mac(key, &e.hash);
        self.entries.push(e);
        // Bounded: fold the oldest entries into the anchor.
        while self.entries.len() > MAX_AUDIT_ENTRIES {
            let old = self.entries.remove(0);
            self.anchor = old.hash;
            self.dropped += 1;
        }
        debug_assert!(self.entries.len() <= MAX_AUDIT_ENTRIES);
    }

    pub(crate) fn verify(
        &self,
        vde: VdeId,
        key: Option<&[u8; 32]>,
    ) -> Result<AuditSummary, AuditVerifyError> {
        let mut prev = self.anchor;
        for (expected_seq, e) in (self.dropped..).zip(self.entries.iter()) {
            if e.seq != expected_seq {
                return Err(AuditVerifyError::Sequence {
                    found: e.seq,
                    expected_prev: expected_seq.wrapping_sub(1),
                });
            }
            if e.prev_hash != prev {
                return Err(AuditVerifyError::Chain { seq: e.seq });
            }
            if entry_hash(vde, e) != e.hash {
                return Err(AuditVerifyError::Hash { seq: e.seq });
            }
            if let Some(k) = key
                && !constant_time_eq(&mac(k, &e.hash), &e.mac)
            {
                return Err(AuditVerifyError::Mac { seq: e.seq });
            }
            prev = e.hash;
        }
        Ok(AuditSummary {
            entries: self.entries.len(),
            dropped: self.dropped,
            macs_checked: key.is_some(),
            head: self.head(),
        })
    }

    /// Re-MACs every entry under `new_key` after checking it under `old_key` (master-key
    /// rotation), so entries forged without the old key are not laundered.
    pub(crate) fn remac(
        &mut self,
        vde: VdeId,
        old_key: &[u8; 32],
        new_key: &[u8; 32],
    ) -> Result<(), AuditVerifyError> {
        self.verify(vde, Some(old_key))?;
        for e in &mut self.entries {
            e.mac = mac(new_key, &e.hash);
        }
        Ok(())
    }
}

/// Compares two byte strings in time that depends only on their length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VDE: VdeId = VdeId([1; 16]);

    fn log_with(n: usize, key: &[u8; 32]) -> AuditLog {
        let mut log = AuditLog::default();
        for i in 0..n {
            log.append(
                VDE,
                key,
                UnixTime(i as u64),
                AuditAction::SlotAdded,
                Some((SlotId(u32::try_from(i).unwrap()), SlotKind::Tpm2)),
                "x",
            );
        }
        log
    }

    #[test]
    fn chain_verifies_and_detects_edits() {
        let key = [3u8; 32];
        let log = log_with(5, &key);
        let s = log.verify(VDE, Some(&key)).unwrap();
        assert_eq!(s.entries, 5);
        assert_eq!(s.head, log.entries[4].hash);
        // Wrong VDE: hashes differ.
        assert!(matches!(
            log.verify(VdeId([2; 16]), None),
            Err(AuditVerifyError::Hash { seq: 0 })
        ));
        // Edit a detail without fixing the hash.
        let mut bad = log.clone();
        bad.entries[2].detail = "y".into();
        assert_eq!(
            bad.verify(VDE, None),
            Err(AuditVerifyError::Hash { seq: 2 })
        );
        // Edit a detail and recompute the hash (and the chain after it) without the key.
        let mut forged = log.clone();
        forged.entries[2].detail = "y".into();
        for i in 2..5 {
            if i > 2 {
                forged.entries[i].prev_hash = forged.entries[i - 1].hash;
            }
            forged.entries[i].hash = entry_hash(VDE, &forged.entries[i]);
        }
        assert!(
            forged.verify(VDE, None).is_ok(),
            "without the key only the chain is checked"
        );
        assert_eq!(
            forged.verify(VDE, Some(&key)),
            Err(AuditVerifyError::Mac { seq: 2 })
        );
        // Remove an entry.
        let mut cut = log.clone();
        cut.entries.remove(1);
        assert!(matches!(
            cut.verify(VDE, None),
            Err(AuditVerifyError::Sequence { .. })
        ));
    }

    #[test]
    fn log_is_bounded_and_still_verifies() {
        let key = [4u8; 32];
        let log = log_with(MAX_AUDIT_ENTRIES + 10, &key);
        assert_eq!(log.entries.len(), MAX_AUDIT_ENTRIES);
        assert_eq!(log.dropped, 10);
        assert_eq!(log.entries[0].seq, 10);
        assert!(log.verify(VDE, Some(&key)).is_ok());
        let mut bad_anchor = log.clone();
        bad_anchor.anchor[0] ^= 1;
        assert_eq!(
            bad_anchor.verify(VDE, None),
            Err(AuditVerifyError::Chain { seq: 10 })
        );
    }

    #[test]
    fn remac_refuses_forged_history() {
        let (old, new) = ([5u8; 32], [6u8; 32]);
        let mut log = log_with(3, &old);
        log.remac(VDE, &old, &new).unwrap();
        assert!(log.verify(VDE, Some(&new)).is_ok());
        assert!(log.verify(VDE, Some(&old)).is_err());
        let mut other = log_with(3, &[9u8; 32]);
        assert!(other.remac(VDE, &old, &new).is_err());
    }

    #[test]
    fn details_are_truncated_on_char_boundaries() {
        let s = "é".repeat(100);
        let t = truncate_utf8(&s, MAX_AUDIT_DETAIL);
        assert!(t.len() <= MAX_AUDIT_DETAIL);
        assert!(s.starts_with(&t));
    }
}
