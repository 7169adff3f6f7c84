//! Keys and authenticated encryption.
//!
//! The VDE never stores a key. It is opened with master keys handed over by the keys layer (one
//! per key generation: after a rotation the previous generation stays available until every
//! extent has been re-encrypted) and derives from the current one, with BLAKE3 `derive_key`
//! and fixed contexts, a policy key (encrypts and authenticates policy records) and a seal key
//! (keyed BLAKE3 over the header, region directory and recovery block). Each generation's
//! master key yields that generation's data key.
//!
//! Data is sealed with AES-256-GCM. The 96-bit nonce is the extent id (unique for the life of
//! the VDE, never reused even across crashes: ids are reserved ahead in committed metadata)
//! followed by the key generation, so a (key, nonce) pair never repeats. The associated data
//! binds the VDE identity, container, inode, logical offset and extent id: an extent copied to
//! another place, object or VDE fails authentication. The bulk cipher is `ring`'s (measured
//! 4-5x faster than the `aes-gcm` crate here, docs/PERFORMANCE.md); key wrapping elsewhere uses
//! `aes-gcm`.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

/// BLAKE3 contexts: changing one is a format change.
pub const CTX_DATA: &str = "DataWarehouse VDE v1 2026-11-22 data encryption key";
/// Policy records.
pub const CTX_POLICY: &str = "DataWarehouse VDE v1 2026-11-22 policy encryption key";
/// Tamper seal.
pub const CTX_SEAL: &str = "DataWarehouse VDE v1 2026-11-22 tamper seal key";
/// AEAD tag length.
pub const TAG_LEN: usize = 16;

/// A VDE master key (32 bytes), zeroised on drop, never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    generation: u32,
}

impl MasterKey {
    /// Wraps key material of `generation` (0 for a new VDE; +1 per rotation).
    #[must_use]
    pub fn from_bytes(mut bytes: [u8; 32], generation: u32) -> Self {
        let k = Self {
            bytes: Zeroizing::new(bytes),
            generation,
        };
        bytes.zeroize();
        k
    }

    /// The key generation.
    #[must_use]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn derive(&self, ctx: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(ctx, &self.bytes[..]))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(generation {}, <redacted>)", self.generation)
    }
}

/// An AES-256-GCM key (the raw bytes are kept, zeroised on drop, so the schedule can be
/// rebuilt at a key rotation).
pub(crate) struct AeadKey {
    key: LessSafeKey,
    raw: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// Authentication failed: wrong key, or the ciphertext or its context was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key, or the data or its location was altered)")]
pub struct AuthError;

impl AeadKey {
    fn new(bytes: &[u8; 32]) -> Self {
        // A 32-byte key is always valid for AES-256-GCM.
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!("32-byte key"));
        Self {
            key: LessSafeKey::new(unbound),
            raw: Zeroizing::new(*bytes),
        }
    }

    /// Encrypts `buf` in place and appends the tag.
    pub(crate) fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
        let r = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buf,
        );
        // Sealing fails only for inputs longer than GCM's 64 GiB limit; records are small.
        assert!(r.is_ok(), "AES-GCM seal of {} bytes", buf.len());
    }

    /// Encrypts `buf` in place and returns the tag (the caller stores it after the data).
    pub(crate) fn seal_detached(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buf,
        );
        // Fails only beyond GCM's 64 GiB limit; records are at most 1 MiB.
        let tag = tag.unwrap_or_else(|_| unreachable!("AES-GCM seal of {} bytes", buf.len()));
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        t
    }

    /// Decrypts `buf` (ciphertext + tag) in place; returns the plaintext length.
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AuthError> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map(|p| p.len())
            .map_err(|_| AuthError)
    }
}

/// The keys of one generation.
#[derive(Debug)]
struct GenKeys {
    generation: u32,
    data: AeadKey,
    policy: AeadKey,
    seal: Zeroizing<[u8; 32]>,
}

impl GenKeys {
    fn new(k: &MasterKey) -> Self {
        Self {
            generation: k.generation,
            data: AeadKey::new(&k.derive(CTX_DATA)),
            policy: AeadKey::new(&k.derive(CTX_POLICY)),
            seal: k.derive(CTX_SEAL),
        }
    }
}

/// Every key the open VDE uses: the current generation's and those of older generations whose
/// data may still be on disk (during a key rotation).
#[derive(Debug)]
pub(crate) struct KeySchedule {
    gens: Vec<GenKeys>,
    pub current: u32,
}

impl KeySchedule {
    /// From the current master key and any older generations still needed.
    pub(crate) fn new(current: &MasterKey, older: &[MasterKey]) -> Self {
        let mut gens: Vec<GenKeys> = older
            .iter()
            .filter(|k| k.generation != current.generation)
            .map(GenKeys::new)
            .collect();
        gens.push(GenKeys::new(current));
        gens.sort_by_key(|g| g.generation);
        gens.dedup_by_key(|g| g.generation);
        Self {
            gens,
            current: current.generation,
        }
    }

    fn cur(&self) -> &GenKeys {
        // `new` always inserts the current generation.
        self.gens
            .iter()
            .find(|g| g.generation == self.current)
            .unwrap_or_else(|| unreachable!("current generation present"))
    }

    /// This schedule with `new` as the current generation, keeping the older ones.
    pub(crate) fn rotated(&self, new: &MasterKey) -> Self {
        let mut gens: Vec<GenKeys> = self
            .gens
            .iter()
            .filter(|g| g.generation != new.generation)
            .map(|g| GenKeys {
                generation: g.generation,
                data: AeadKey {
                    key: clone_key(&g.data),
                    raw: g.data.raw.clone(),
                },
                policy: AeadKey {
                    key: clone_key(&g.policy),
                    raw: g.policy.raw.clone(),
                },
                seal: g.seal.clone(),
            })
            .collect();
        gens.push(GenKeys::new(new));
        gens.sort_by_key(|g| g.generation);
        Self {
            gens,
            current: new.generation,
        }
    }

    pub(crate) fn data_key(&self, generation: u32) -> Option<&AeadKey> {
        self.gens
            .iter()
            .find(|g| g.generation == generation)
            .map(|g| &g.data)
    }

    /// The current policy key.
    pub(crate) fn policy(&self) -> &AeadKey {
        &self.cur().policy
    }

    /// Every policy key, current first (policies sealed before a rotation still open).
    pub(crate) fn policy_keys(&self) -> impl Iterator<Item = &AeadKey> {
        std::iter::once(&self.cur().policy).chain(
            self.gens
                .iter()
                .filter(|g| g.generation != self.current)
                .map(|g| &g.policy),
        )
    }

    /// Generations this schedule can read.
    pub(crate) fn generations(&self) -> Vec<u32> {
        self.gens.iter().map(|g| g.generation).collect()
    }

    /// Keyed BLAKE3 over `parts` with the current seal key.
    pub(crate) fn seal_mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.seal_mac_with(self.current, parts).unwrap_or([0; 32])
    }

    /// Keyed BLAKE3 over `parts` with generation `g`'s seal key.
    pub(crate) fn seal_mac_with(&self, g: u32, parts: &[&[u8]]) -> Option<[u8; 32]> {
        let k = self.gens.iter().find(|x| x.generation == g)?;
        let mut h = blake3::Hasher::new_keyed(&k.seal);
        for p in parts {
            h.update(p);
        }
        Some(*h.finalize().as_bytes())
    }
}

/// ring keys cannot be cloned, so a key is rebuilt from its kept raw bytes.
fn clone_key(k: &AeadKey) -> LessSafeKey {
    let unbound =
        UnboundKey::new(&AES_256_GCM, &k.raw[..]).unwrap_or_else(|_| unreachable!("32-byte key"));
    LessSafeKey::new(unbound)
}

/// The nonce of an extent: its id then the key generation.
#[must_use]
pub(crate) fn extent_nonce(extent_id: u64, generation: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&extent_id.to_le_bytes());
    n[8..].copy_from_slice(&generation.to_le_bytes());
    n
}

/// Associated data of an extent (56 bytes): what it belongs to and where.
#[must_use]
pub(crate) fn extent_aad(
    vde: &uuid::Uuid,
    container: u64,
    inode: u64,
    offset: u64,
    extent_id: u64,
) -> [u8; 56] {
    let mut a = [0u8; 56];
    a[..8].copy_from_slice(b"DWVD-EXT");
    a[8..24].copy_from_slice(vde.as_bytes());
    a[24..32].copy_from_slice(&container.to_le_bytes());
    a[32..40].copy_from_slice(&inode.to_le_bytes());
    a[40..48].copy_from_slice(&offset.to_le_bytes());
    a[48..56].copy_from_slice(&extent_id.to_le_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_binding() {
        let mk = MasterKey::from_bytes([7; 32], 0);
        let ks = KeySchedule::new(&mk, &[]);
        let k = ks.data_key(0).expect("gen 0");
        let vde = uuid::Uuid::from_bytes([1; 16]);
        let aad = extent_aad(&vde, 1, 2, 3, 4);
        let mut buf = b"hello world".to_vec();
        k.seal(extent_nonce(4, 0), &aad, &mut buf);
        assert_eq!(buf.len(), 11 + TAG_LEN);
        let mut c = buf.clone();
        assert_eq!(k.open(extent_nonce(4, 0), &aad, &mut c), Ok(11));
        assert_eq!(&c[..11], b"hello world");
        // Moved to another offset: refused.
        let mut c = buf.clone();
        assert!(
            k.open(extent_nonce(4, 0), &extent_aad(&vde, 1, 2, 4096, 4), &mut c)
                .is_err()
        );
        // Wrong key: refused.
        let other = KeySchedule::new(&MasterKey::from_bytes([8; 32], 0), &[]);
        let mut c = buf.clone();
        assert!(
            other
                .data_key(0)
                .expect("k")
                .open(extent_nonce(4, 0), &aad, &mut c)
                .is_err()
        );
        assert!(!format!("{mk:?}").contains('7'));
    }

    #[test]
    fn generations_and_contexts_differ() {
        let a = MasterKey::from_bytes([1; 32], 0);
        let b = MasterKey::from_bytes([2; 32], 1);
        let ks = KeySchedule::new(&b, std::slice::from_ref(&a));
        assert_eq!(ks.generations(), vec![0, 1]);
        assert_eq!(ks.current, 1);
        assert_ne!(*a.derive(CTX_DATA), *a.derive(CTX_SEAL));
        let c = MasterKey::from_bytes([3; 32], 2);
        let r = ks.rotated(&c);
        assert_eq!(r.generations(), vec![0, 1, 2]);
        assert_eq!(r.current, 2);
        assert!(
            r.seal_mac_with(1, &[b"x"]) == ks.seal_mac_with(1, &[b"x"]),
            "old seal keys kept"
        );
        assert_ne!(*a.derive(CTX_POLICY), *a.derive(CTX_SEAL));
    }
}
