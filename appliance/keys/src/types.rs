//! Small value types shared by every module: identities, slot kinds, time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The identity of a VDE (its 16-byte UUID). Every wrap binds it, so a slot copied from one VDE's
/// key-slot area into another's does not open anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VdeId(pub [u8; 16]);

impl fmt::Display for VdeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VdeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VdeId({self})")
    }
}

/// A key slot's number inside one [`crate::KeyStore`]. Numbers are never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What protects a slot's wrapping key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum SlotKind {
    /// A key sealed to this machine's TPM 2.0 under a PCR policy (and optionally a PIN).
    Tpm2,
    /// A key derived from a recovery passphrase with Argon2id.
    Passphrase,
    /// A key the AMD SEV-SNP firmware derives from the guest's launch measurement.
    SevSnp,
    /// A key that a peer appliance releases after verifying a fresh TPM quote.
    Peer,
}

impl SlotKind {
    /// Every kind, in the default unlock order (automatic kinds first, the passphrase last).
    pub const ALL: [SlotKind; 4] = [
        SlotKind::Tpm2,
        SlotKind::SevSnp,
        SlotKind::Peer,
        SlotKind::Passphrase,
    ];

    /// The on-disk code of this kind.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            SlotKind::Tpm2 => 1,
            SlotKind::Passphrase => 2,
            SlotKind::SevSnp => 3,
            SlotKind::Peer => 4,
        }
    }

    /// The kind for an on-disk code.
    #[must_use]
    pub const fn from_code(code: u8) -> Option<SlotKind> {
        match code {
            1 => Some(SlotKind::Tpm2),
            2 => Some(SlotKind::Passphrase),
            3 => Some(SlotKind::SevSnp),
            4 => Some(SlotKind::Peer),
            _ => None,
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotKind::Tpm2 => "TPM2",
            SlotKind::Passphrase => "recovery passphrase",
            SlotKind::SevSnp => "SEV-SNP",
            SlotKind::Peer => "peer release",
        })
    }
}

/// Seconds since the Unix epoch. Pure functions take it as a parameter and never read a clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct UnixTime(pub u64);

/// A source of wall-clock time, injected into the code that needs "now".
pub trait Clock {
    /// The current time.
    fn now(&self) -> UnixTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        // A clock before 1970 is a broken clock; 0 ("unknown") is the honest answer.
        UnixTime(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

/// A clock that always says the same time (tests, replay of recorded events).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub UnixTime);

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// The first 4 bytes in hex followed by an ellipsis: enough for a person to compare two values.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    let n = bytes.len().min(4);
    let mut s = hex(&bytes[..n]);
    if bytes.len() > n {
        s.push('…');
    }
    s
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks_exact(2).enumerate() {
        let hi = hex_val(chunk[0])?;
        let lo = hex_val(chunk[1])?;
        out[i] = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vde_id_displays_as_uuid() {
        let id = VdeId([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(id.to_string(), "12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn hex_roundtrip_and_short() {
        let b = [0xde, 0xad, 0xbe, 0xef, 0x01];
        assert_eq!(hex(&b), "deadbeef01");
        assert_eq!(short_hex(&b), "deadbeef…");
        assert_eq!(short_hex(&b[..2]), "dead");
        assert_eq!(parse_hex::<5>("DEADbeef01"), Some(b));
        assert_eq!(parse_hex::<5>("deadbeef0"), None);
        assert_eq!(parse_hex::<2>("zz00"), None);
    }

    #[test]
    fn slot_kind_codes_roundtrip() {
        for k in SlotKind::ALL {
            assert_eq!(SlotKind::from_code(k.code()), Some(k));
        }
        assert_eq!(SlotKind::from_code(0), None);
        assert_eq!(SlotKind::from_code(5), None);
    }
}
