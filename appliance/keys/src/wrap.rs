//! AES-256-GCM wrapping of 32-byte secrets, bound to where they belong.
//!
//! Every wrap carries associated data naming its purpose, the VDE, the slot id and kind and a
//! digest of the slot's immutable parameters. A wrapped value copied into another VDE's store,
//! another slot, or the same slot with edited parameters fails authentication.
//!
//! Nonces are random 96-bit values: each key wraps only a handful of values in its lifetime,
//! far below the 2^32 messages a random-nonce GCM key allows.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use crate::secret::{Entropy, RandomError};
use crate::types::{SlotId, SlotKind, VdeId};

/// Bytes of a wrapped 32-byte secret: nonce (12) + ciphertext (32) + tag (16).
pub(crate) const WRAPPED_LEN: usize = 12 + 32 + 16;

/// A wrapped 32-byte secret: `nonce || ciphertext || tag`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Wrapped(pub(crate) [u8; WRAPPED_LEN]);

impl std::fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wrapped(..)")
    }
}

/// What a wrapped value is for. Part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The master key wrapped under a slot's KEK.
    MasterUnderKek = 1,
    /// A slot's secret (KEK or peer share) wrapped under the escrow key of the master key.
    SlotSecretEscrow = 2,
    /// The previous master key wrapped under a key derived from the new one (pending rotation).
    PreviousMaster = 3,
}

/// The associated data of one wrap.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub purpose: Purpose,
    pub vde: VdeId,
    pub slot: SlotId,
    /// `None` for values that belong to the store rather than a slot.
    pub kind: Option<SlotKind>,
    /// BLAKE3 of the slot's immutable parameters (all zero for store-level values).
    pub params_digest: [u8; 32],
}

const AAD_LEN: usize = 8 + 1 + 1 + 16 + 4 + 1 + 32;

impl Binding {
    fn aad(&self) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        a[..8].copy_from_slice(b"DWKS-AAD");
        a[8] = 1; // version of this layout
        a[9] = self.purpose as u8;
        a[10..26].copy_from_slice(&self.vde.0);
        a[26..30].copy_from_slice(&self.slot.0.to_le_bytes());
        a[30] = self.kind.map_or(0, SlotKind::code);
        a[31..63].copy_from_slice(&self.params_digest);
        a
    }
}

/// Authentication failed: wrong key, or the wrapped value or its binding was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnwrapFailed;

pub(crate) fn wrap(
    key: &[u8; 32],
    secret: &[u8; 32],
    binding: &Binding,
    rng: &mut dyn Entropy,
) -> Result<Wrapped, RandomError> {
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce)?;
    let cipher = Aes256Gcm::new(key.into());
    let mut buf = Zeroizing::new(*secret);
    let aad = binding.aad();
    // A 32-byte message with 63 bytes of AAD is far inside GCM's limits: encryption cannot fail.
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into())
        .unwrap_or_else(|_| unreachable!("AES-GCM refused a 32-byte message"));
    let mut out = [0u8; WRAPPED_LEN];
    out[..12].copy_from_slice(&nonce);
    out[12..44].copy_from_slice(buf.as_slice());
    out[44..].copy_from_slice(tag.as_slice());
    Ok(Wrapped(out))
}

pub(crate) fn unwrap(
    key: &[u8; 32],
    wrapped: &Wrapped,
    binding: &Binding,
) -> Result<Zeroizing<[u8; 32]>, UnwrapFailed> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&wrapped.0[..12]);
    let mut buf = Zeroizing::new([0u8; 32]);
    buf.copy_from_slice(&wrapped.0[12..44]);
    let mut tag_bytes = [0u8; 16];
    tag_bytes.copy_from_slice(&wrapped.0[44..]);
    let tag = Tag::from(tag_bytes);
    let aad = binding.aad();
    cipher
        .decrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| UnwrapFailed)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::OsEntropy;

    fn binding() -> Binding {
        Binding {
            purpose: Purpose::MasterUnderKek,
            vde: VdeId([1; 16]),
            slot: SlotId(3),
            kind: Some(SlotKind::Tpm2),
            params_digest: [5; 32],
        }
    }

    #[test]
    fn roundtrip() {
        let key = [7u8; 32];
        let secret = [42u8; 32];
        let w = wrap(&key, &secret, &binding(), &mut OsEntropy).unwrap();
        assert_ne!(&w.0[12..44], &secret[..]);
        assert_eq!(*unwrap(&key, &w, &binding()).unwrap(), secret);
    }

    #[test]
    fn every_binding_field_matters() {
        let key = [7u8; 32];
        let w = wrap(&key, &[42u8; 32], &binding(), &mut OsEntropy).unwrap();
        let mut b = binding();
        b.vde = VdeId([2; 16]);
        assert_eq!(unwrap(&key, &w, &b), Err(UnwrapFailed));
        let mut b = binding();
        b.slot = SlotId(4);
        assert_eq!(unwrap(&key, &w, &b), Err(UnwrapFailed));
        let mut b = binding();
        b.kind = Some(SlotKind::Passphrase);
        assert_eq!(unwrap(&key, &w, &b), Err(UnwrapFailed));
        let mut b = binding();
        b.purpose = Purpose::SlotSecretEscrow;
        assert_eq!(unwrap(&key, &w, &b), Err(UnwrapFailed));
        let mut b = binding();
        b.params_digest[0] ^= 1;
        assert_eq!(unwrap(&key, &w, &b), Err(UnwrapFailed));
        assert_eq!(unwrap(&[8u8; 32], &w, &binding()), Err(UnwrapFailed));
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let key = [7u8; 32];
        let mut w = wrap(&key, &[42u8; 32], &binding(), &mut OsEntropy).unwrap();
        w.0[20] ^= 0x80;
        assert_eq!(unwrap(&key, &w, &binding()), Err(UnwrapFailed));
    }
}
