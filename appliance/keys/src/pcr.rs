//! PCR selections, values and the policy digests computed from them.
//!
//! Only the SHA-256 bank is used. Policy digests are computed in software from expected values,
//! so a slot can be sealed to values the machine does not have right now (see
//! [`crate::ops::reseal`]); a test checks the result against a TPM trial session.

use std::fmt;

use ring::digest::{SHA256, digest};

use crate::types::short_hex;

/// The number of PCRs in a bank this crate addresses (PCR 0 to 23).
pub const PCR_COUNT: u8 = 24;
/// The TPM algorithm id of SHA-256 (`TPM_ALG_SHA256`).
pub const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;

/// A set of PCR indices (0 to 23) of the SHA-256 bank.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PcrSelection(u32);

/// A PCR index outside 0..=23.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PCR {0} does not exist: PCR indices are 0 to 23")]
pub struct PcrIndexError(pub u32);

impl PcrSelection {
    /// The default policy: PCR 7 (the Secure Boot policy: state, PK/KEK/db/dbx and the
    /// certificate that verified the boot loader). See docs/KEYS.md for the reasoning.
    pub const DEFAULT: PcrSelection = PcrSelection(1 << 7);
    /// A stricter profile that also notices firmware changes: PCR 0 (firmware code), 2
    /// (option ROMs) and 7. Firmware updates then need `prepare_update` first.
    pub const FIRMWARE_STRICT: PcrSelection = PcrSelection((1 << 0) | (1 << 2) | (1 << 7));
    /// No PCRs at all (only for explicit temporary update slots).
    pub const NONE: PcrSelection = PcrSelection(0);

    /// A selection of the given indices.
    ///
    /// # Errors
    /// When an index is above 23.
    pub fn new(indices: &[u32]) -> Result<PcrSelection, PcrIndexError> {
        let mut mask = 0u32;
        for &i in indices {
            if i >= u32::from(PCR_COUNT) {
                return Err(PcrIndexError(i));
            }
            mask |= 1 << i;
        }
        Ok(PcrSelection(mask))
    }

    /// From the on-disk bit mask (bit i = PCR i).
    ///
    /// # Errors
    /// When bits above 23 are set.
    pub fn from_mask(mask: u32) -> Result<PcrSelection, PcrIndexError> {
        if mask >> PCR_COUNT != 0 {
            return Err(PcrIndexError(31 - (mask.leading_zeros())));
        }
        Ok(PcrSelection(mask))
    }

    /// The bit mask (bit i = PCR i).
    #[must_use]
    pub fn mask(self) -> u32 {
        self.0
    }

    /// Whether no PCR is selected.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of selected PCRs.
    #[must_use]
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether `index` is selected.
    #[must_use]
    pub fn contains(self, index: u8) -> bool {
        index < PCR_COUNT && self.0 & (1 << index) != 0
    }

    /// The selected indices in ascending order (the order the TPM digests them in).
    pub fn indices(self) -> impl Iterator<Item = u8> {
        (0..PCR_COUNT).filter(move |i| self.0 & (1 << i) != 0)
    }

    /// The three-byte `pcrSelect` bitmap of a `TPMS_PCR_SELECTION`.
    #[must_use]
    pub fn tpm_bitmap(self) -> [u8; 3] {
        let b = self.0.to_le_bytes();
        [b[0], b[1], b[2]]
    }

    /// The marshalled `TPML_PCR_SELECTION` with one SHA-256 entry (big-endian, TPM style).
    #[must_use]
    pub fn marshal_tpml(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        out.push(3);
        out.extend_from_slice(&self.tpm_bitmap());
        out
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let list: Vec<String> = self.indices().map(|i| i.to_string()).collect();
        f.write_str(&list.join(","))
    }
}

impl fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrSelection[{self}]")
    }
}

/// SHA-256 PCR values for a selection, in index order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PcrValues {
    selection: PcrSelection,
    values: Vec<[u8; 32]>,
}

/// The number of values does not match the selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given} PCR values given for a selection of {expected} PCRs ({selection})")]
pub struct PcrValuesError {
    /// Values given.
    pub given: usize,
    /// Values the selection needs.
    pub expected: usize,
    /// The selection.
    pub selection: PcrSelection,
}

impl PcrValues {
    /// Values for `selection`, one per selected PCR in ascending index order.
    ///
    /// # Errors
    /// When the count does not match the selection.
    pub fn new(
        selection: PcrSelection,
        values: Vec<[u8; 32]>,
    ) -> Result<PcrValues, PcrValuesError> {
        if values.len() != selection.len() {
            return Err(PcrValuesError {
                given: values.len(),
                expected: selection.len(),
                selection,
            });
        }
        Ok(PcrValues { selection, values })
    }

    /// The selection.
    #[must_use]
    pub fn selection(&self) -> PcrSelection {
        self.selection
    }

    /// The values in index order.
    #[must_use]
    pub fn values(&self) -> &[[u8; 32]] {
        &self.values
    }

    /// `(index, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8; 32])> {
        self.selection.indices().zip(self.values.iter())
    }

    /// The value of one PCR, if selected.
    #[must_use]
    pub fn get(&self, index: u8) -> Option<&[u8; 32]> {
        self.iter().find(|(i, _)| *i == index).map(|(_, v)| v)
    }

    /// SHA-256 over the concatenated values: the `pcrDigest` of PolicyPCR and of a quote.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        let mut cat = Vec::with_capacity(self.values.len() * 32);
        for v in &self.values {
            cat.extend_from_slice(v);
        }
        sha256(&cat)
    }

    /// The PCRs whose value differs between `self` (enrolled) and `current`, for error messages.
    /// A PCR missing from `current` is reported with an all-zero current value.
    #[must_use]
    pub fn changes(&self, current: &PcrValues) -> Vec<PcrChange> {
        self.iter()
            .filter_map(|(index, enrolled)| {
                let now = current.get(index).copied().unwrap_or([0; 32]);
                (now != *enrolled).then_some(PcrChange {
                    index,
                    enrolled: *enrolled,
                    current: now,
                })
            })
            .collect()
    }
}

/// One PCR whose value is not the enrolled one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PcrChange {
    /// PCR index.
    pub index: u8,
    /// The value recorded at enrollment (or the last trusted re-seal).
    pub enrolled: [u8; 32],
    /// The value now.
    pub current: [u8; 32],
}

impl fmt::Display for PcrChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCR {} changed (enrolled {}, now {})",
            self.index,
            short_hex(&self.enrolled),
            short_hex(&self.current)
        )
    }
}

/// Formats a list of changes as "PCR 7 changed (...); PCR 11 changed (...)".
#[must_use]
pub fn describe_changes(changes: &[PcrChange]) -> String {
    let parts: Vec<String> = changes.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The TPM policy digest of "PolicyPCR(selection, values) [then PolicyAuthValue]", as a TPM
/// computes it: `d' = SHA256(d || TPM_CC || parameters)`, starting from 32 zero bytes.
#[must_use]
pub fn policy_digest(values: &PcrValues, with_auth_value: bool) -> [u8; 32] {
    let mut d = [0u8; 32];
    if !values.selection().is_empty() {
        let mut buf = Vec::with_capacity(32 + 4 + 10 + 32);
        buf.extend_from_slice(&d);
        buf.extend_from_slice(&TPM_CC_POLICY_PCR.to_be_bytes());
        buf.extend_from_slice(&values.selection().marshal_tpml());
        buf.extend_from_slice(&values.digest());
        d = sha256(&buf);
    }
    if with_auth_value {
        let mut buf = Vec::with_capacity(36);
        buf.extend_from_slice(&d);
        buf.extend_from_slice(&TPM_CC_POLICY_AUTH_VALUE.to_be_bytes());
        d = sha256(&buf);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_basics() {
        let s = PcrSelection::new(&[7, 0, 2]).unwrap();
        assert_eq!(s.indices().collect::<Vec<_>>(), vec![0, 2, 7]);
        assert_eq!(s.to_string(), "0,2,7");
        assert_eq!(s, PcrSelection::FIRMWARE_STRICT);
        assert_eq!(s.tpm_bitmap(), [0b1000_0101, 0, 0]);
        assert!(PcrSelection::new(&[24]).is_err());
        assert!(PcrSelection::from_mask(1 << 24).is_err());
        assert_eq!(
            PcrSelection::from_mask(1 << 23).unwrap().indices().next(),
            Some(23)
        );
        assert_eq!(PcrSelection::NONE.to_string(), "none");
    }

    #[test]
    fn values_must_match_selection() {
        assert!(PcrValues::new(PcrSelection::DEFAULT, vec![]).is_err());
        assert!(PcrValues::new(PcrSelection::DEFAULT, vec![[0; 32]]).is_ok());
    }

    #[test]
    fn changes_name_the_pcr() {
        let sel = PcrSelection::new(&[7, 11]).unwrap();
        let enrolled = PcrValues::new(sel, vec![[0x3d; 32], [1; 32]]).unwrap();
        let now = PcrValues::new(sel, vec![[0x9a; 32], [1; 32]]).unwrap();
        let changes = enrolled.changes(&now);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].to_string(),
            "PCR 7 changed (enrolled 3d3d3d3d…, now 9a9a9a9a…)"
        );
        assert!(enrolled.changes(&enrolled).is_empty());
    }

    #[test]
    fn policy_digest_known_answer() {
        // PolicyPCR over PCR 0 with an all-zero value. Reference computed independently:
        // sha256(0^32 || 0000017f || 00000001 000b 03 010000 || sha256(0^32)).
        let v = PcrValues::new(PcrSelection::new(&[0]).unwrap(), vec![[0; 32]]).unwrap();
        let mut buf = vec![0u8; 32];
        buf.extend_from_slice(&[0, 0, 1, 0x7f, 0, 0, 0, 1, 0, 0x0b, 3, 1, 0, 0]);
        buf.extend_from_slice(&sha256(&[0u8; 32]));
        assert_eq!(policy_digest(&v, false), sha256(&buf));
        assert_ne!(policy_digest(&v, true), policy_digest(&v, false));
        let none = PcrValues::new(PcrSelection::NONE, vec![]).unwrap();
        assert_eq!(policy_digest(&none, false), [0; 32]);
    }
}
