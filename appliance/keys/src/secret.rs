//! Secret values: the master key, wrapping keys, PINs, and where randomness comes from.
//!
//! Every secret type here zeroizes its bytes when dropped, prints no bytes in `Debug`, and has no
//! `Serialize`/`Display`: the only way to reach the bytes is an explicitly named method.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// BLAKE3 `derive_key` contexts. Each purpose has its own; they are part of the on-disk format.
pub(crate) mod contexts {
    /// The 16-byte identifier of a master key (stored in the clear; reveals nothing about it).
    pub const KEY_ID: &str = "DataWarehouse dw-keys v1 master key id";
    /// The key that escrows every slot's wrapping secret inside the store.
    pub const ESCROW: &str = "DataWarehouse dw-keys v1 slot escrow";
    /// The key that MACs the audit log.
    pub const AUDIT: &str = "DataWarehouse dw-keys v1 audit log mac";
    /// The key that wraps the previous master key while a rotation is pending.
    pub const PREVIOUS: &str = "DataWarehouse dw-keys v1 rotation previous master";
    /// Turns a TPM PIN into the sealed object's authValue.
    pub const TPM_PIN: &str = "DataWarehouse dw-keys v1 tpm pin";
    /// Turns the firmware-derived SEV-SNP key and the slot salt into the slot's wrapping key.
    pub const SNP_KEK: &str = "DataWarehouse dw-keys v1 sev-snp kek";
    /// Turns the peer's share and the local half into the peer slot's wrapping key.
    pub const PEER_KEK: &str = "DataWarehouse dw-keys v1 peer kek";
    /// The key that proves possession of a peer share when updating the enrolled policy.
    pub const PEER_PROOF: &str = "DataWarehouse dw-keys v1 peer policy-update proof";
}

/// The operating system's random number generator failed. Nothing sensible can continue.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(pub String);

/// Where random bytes come from. Production code uses [`OsEntropy`]; tests that need
/// reproducible output (golden files) use a seeded generator.
pub(crate) trait Entropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError>;
}

/// The OS random number generator (`getrandom`).
pub(crate) struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(out).map_err(|e| RandomError(e.to_string()))
    }
}

/// A deterministic generator (BLAKE3 in XOF mode over a seed and a counter). Only for golden
/// files and reproducible tests: never for real keys.
#[cfg(test)]
pub(crate) struct SeededEntropy {
    seed: [u8; 32],
    counter: u64,
}

#[cfg(test)]
impl SeededEntropy {
    pub(crate) fn new(seed: u8) -> Self {
        SeededEntropy {
            seed: [seed; 32],
            counter: 0,
        }
    }
}

#[cfg(test)]
impl Entropy for SeededEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        h.update(&self.counter.to_le_bytes());
        self.counter += 1;
        h.finalize_xof().fill(out);
        Ok(())
    }
}

pub(crate) fn random_array<const N: usize>(
    rng: &mut dyn Entropy,
) -> Result<Zeroizing<[u8; N]>, RandomError> {
    let mut out = Zeroizing::new([0u8; N]);
    rng.fill(out.as_mut())?;
    Ok(out)
}

/// A VDE's 256-bit master key.
///
/// It is never written anywhere in clear: key slots hold it wrapped. The VDE derives its data,
/// policy and tamper-seal keys from it with [`MasterKey::derive_key`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new random master key from the operating system's random number generator.
    ///
    /// # Errors
    /// When the OS random number generator fails.
    pub fn generate() -> Result<MasterKey, RandomError> {
        Self::generate_with(&mut OsEntropy)
    }

    pub(crate) fn generate_with(rng: &mut dyn Entropy) -> Result<MasterKey, RandomError> {
        let mut key = MasterKey([0u8; 32]);
        rng.fill(&mut key.0)?;
        Ok(key)
    }

    /// Wraps 32 bytes the caller already holds (for example bytes just unwrapped). The caller's
    /// copy should be zeroized by the caller.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The raw key bytes, for handing to the VDE engine. Do not log or store them.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key derived from this one with BLAKE3 `derive_key`. `context` must be a hard-coded,
    /// globally unique string naming the purpose (for example
    /// `"DataWarehouse vde v1 data key"`).
    #[must_use]
    pub fn derive_key(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(context, &self.0))
    }

    /// A 16-byte identifier of this key. It reveals nothing about the key and lets a store check
    /// that the key it is given is the one it protects.
    #[must_use]
    pub fn key_id(&self) -> [u8; 16] {
        let full = blake3::derive_key(contexts::KEY_ID, &self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        id
    }

    /// A copy of this key. Deliberately not `Clone`, so copies are visible in the code.
    #[must_use]
    pub fn duplicate(&self) -> MasterKey {
        MasterKey(self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MasterKey(id {}, secret redacted)",
            crate::types::short_hex(&self.key_id())
        )
    }
}

/// A slot's 256-bit wrapping key (key-encryption key).
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Kek(pub(crate) [u8; 32]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(redacted)")
    }
}

/// A PIN that guards a TPM2 slot in addition to the PCR policy. The TPM's dictionary-attack
/// lockout limits guessing.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Pin(String);

impl Pin {
    /// A PIN as typed.
    #[must_use]
    pub fn new(pin: impl Into<String>) -> Pin {
        Pin(pin.into())
    }

    /// The TPM authValue for this PIN: a 32-byte BLAKE3 derivation, so PINs of any length fit the
    /// TPM's limit and the PIN itself is never sent to the TPM.
    pub(crate) fn auth_value(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(contexts::TPM_PIN, self.0.as_bytes()))
    }

    /// The PIN as typed. Do not log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_debug_prints_no_bytes() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let dbg = format!("{key:?}");
        assert!(
            !dbg.contains("ab, ab") && !dbg.contains("abababab"),
            "{dbg}"
        );
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn derive_key_is_blake3_derive_key() {
        let key = MasterKey::from_bytes([7; 32]);
        let ctx = "DataWarehouse test context";
        assert_eq!(*key.derive_key(ctx), blake3::derive_key(ctx, &[7; 32]));
        assert_ne!(
            *key.derive_key(ctx),
            *key.derive_key("DataWarehouse other context")
        );
    }

    #[test]
    fn generated_keys_differ_and_ids_are_stable() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.key_id(), a.duplicate().key_id());
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(&a.key_id()[..], &a.expose_secret()[..16]);
    }

    #[test]
    fn zeroize_clears_the_bytes() {
        let mut key = MasterKey::from_bytes([9; 32]);
        key.zeroize();
        assert_eq!(key.expose_secret(), &[0; 32]);
    }

    #[test]
    fn pin_debug_is_redacted() {
        let pin = Pin::new("123456");
        assert_eq!(format!("{pin:?}"), "Pin(redacted)");
        assert_ne!(*pin.auth_value(), [0; 32]);
    }
}
