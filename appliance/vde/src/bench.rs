//! The extent data path exposed for `dw-bench-vde`, which measures it against the raw
//! primitives. Not a stable API: it calls exactly what the engine calls per extent.

use crate::codec::{self, Sealing};
use crate::crypto::{KeySchedule, MasterKey, extent_aad, extent_nonce};
use crate::policy::{Compression, Encryption, Profile};

/// The per-extent codec of one profile.
#[derive(Debug)]
pub struct Codec {
    keys: KeySchedule,
    level: Option<i32>,
    encrypt: bool,
    verify: bool,
    vde: uuid::Uuid,
}

/// One encoded extent's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    /// Stored length.
    pub len: usize,
    /// Record flags.
    pub flags: u8,
    /// BLAKE3 of the stored bytes.
    pub checksum: [u8; 32],
}

impl Codec {
    /// The codec the profile's settings select.
    #[must_use]
    pub fn for_profile(p: Profile) -> Self {
        let s = p.settings();
        let level = match s.compression.map(|c| c.value) {
            Some(Compression::Zstd(l)) => Some(i32::from(l)),
            _ => None,
        };
        Self {
            keys: KeySchedule::new(&MasterKey::from_bytes([0x5a; 32], 1), &[]),
            level,
            encrypt: s.encryption.map(|e| e.value) == Some(Encryption::Aes256Gcm),
            verify: s.verify_checksums.is_some_and(|v| v.value),
            vde: uuid::Uuid::from_bytes([1; 16]),
        }
    }

    /// zstd level, if compressing.
    #[must_use]
    pub fn level(&self) -> Option<i32> {
        self.level
    }

    /// Whether extents are encrypted.
    #[must_use]
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// Whether reads verify the checksum (encrypted reads always authenticate).
    #[must_use]
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The buffer `encode` needs.
    #[must_use]
    pub fn max_len(&self, plain: usize) -> usize {
        codec::max_encoded_len(plain, self.level, self.encrypt)
    }

    /// Encodes one extent into `buf` as the engine does.
    pub fn encode(&self, extent_id: u64, plain: &[u8], buf: &mut [u8]) -> Encoded {
        let aad = extent_aad(&self.vde, 1, 1, 0, extent_id);
        let e = codec::encode(plain, buf, self.level, self.sealing(extent_id, &aad));
        Encoded {
            len: e.len,
            flags: e.flags,
            checksum: e.checksum,
        }
    }

    /// Verifies (when the profile does) and decodes one extent as the engine does.
    ///
    /// # Errors
    /// A description of the failure.
    pub fn decode(
        &self,
        extent_id: u64,
        e: &Encoded,
        stored: &mut [u8],
        logical: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if self.verify && !codec::verify(&stored[..e.len], &e.checksum) {
            return Err("checksum mismatch".into());
        }
        let aad = extent_aad(&self.vde, 1, 1, 0, extent_id);
        codec::decode(
            &mut stored[..e.len],
            e.flags,
            logical,
            self.sealing(extent_id, &aad),
            out,
        )
        .map_err(|err| err.to_string())
    }

    fn sealing<'a>(&'a self, extent_id: u64, aad: &'a [u8]) -> Option<Sealing<'a>> {
        let key = self.keys.data_key(1)?;
        self.encrypt.then_some(Sealing {
            key,
            nonce: extent_nonce(extent_id, 1),
            aad,
        })
    }
}
