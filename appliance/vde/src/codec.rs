//! The per-extent data path: compress (when it pays), encrypt, checksum — and back.
//!
//! Shared by the engine and the benchmark (`crate::bench`) so that what is measured is what
//! runs. Encoding writes straight into the caller's buffer (the open segment); decoding works
//! in place in the read buffer and writes the plaintext once into the caller's reusable
//! `Vec`. Compressor and decompressor contexts are per thread, so there is no allocation or
//! lock per extent once a thread is warm.

use std::cell::RefCell;

use crate::crypto::{AeadKey, TAG_LEN};
use crate::records;

/// What an extent is sealed with: key, nonce and associated data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sealing<'a> {
    pub key: &'a AeadKey,
    pub nonce: [u8; 12],
    pub aad: &'a [u8],
}

/// The result of encoding one extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// Stored bytes (ciphertext and tag, or plain).
    pub len: usize,
    /// `records::EXT_*` flags.
    pub flags: u8,
    /// BLAKE3 of the stored bytes.
    pub checksum: [u8; 32],
}

/// Why stored bytes do not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("fails authentication")]
    Authentication,
    #[error("does not decompress: {0}")]
    Decompress(std::io::Error),
    #[error("decodes to {got} bytes where {expected} were written")]
    WrongSize { expected: usize, got: usize },
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// The buffer `encode` needs for `plain_len` bytes.
#[must_use]
pub(crate) fn max_encoded_len(plain_len: usize, level: Option<i32>, encrypted: bool) -> usize {
    let room = match level {
        Some(_) => zstd::zstd_safe::compress_bound(plain_len).max(plain_len),
        None => plain_len,
    };
    room + if encrypted { TAG_LEN } else { 0 }
}

/// Encodes `plain` into `buf` (at least [`max_encoded_len`] long): compressed when that saves
/// at least 1/8, encrypted in place with the tag after the data, checksummed last.
pub(crate) fn encode(
    plain: &[u8],
    buf: &mut [u8],
    level: Option<i32>,
    sealing: Option<Sealing<'_>>,
) -> Encoded {
    let need = max_encoded_len(plain.len(), level, sealing.is_some());
    assert!(buf.len() >= need, "encode buffer {} < {need}", buf.len());
    let room = need - if sealing.is_some() { TAG_LEN } else { 0 };
    let mut flags = 0u8;
    let mut n = plain.len();
    let compressed = level
        .and_then(|l| compress_into(plain, &mut buf[..room], l))
        // Kept only when it saves at least 1/8: otherwise reading costs more than the space
        // is worth.
        .filter(|&c| c <= plain.len() - plain.len() / 8);
    match compressed {
        Some(c) => {
            n = c;
            flags |= records::EXT_COMPRESSED;
        }
        None => buf[..n].copy_from_slice(plain),
    }
    if let Some(s) = sealing {
        let tag = s.key.seal_detached(s.nonce, s.aad, &mut buf[..n]);
        buf[n..n + TAG_LEN].copy_from_slice(&tag);
        n += TAG_LEN;
        flags |= records::EXT_ENCRYPTED;
    }
    Encoded {
        len: n,
        flags,
        checksum: *blake3::hash(&buf[..n]).as_bytes(),
    }
}

/// Whether stored bytes match their checksum.
#[must_use]
pub(crate) fn verify(stored: &[u8], checksum: &[u8; 32]) -> bool {
    blake3::hash(stored) == blake3::Hash::from_bytes(*checksum)
}

/// Decodes stored bytes (decrypted in place) into `out` (cleared first, capacity reused).
///
/// # Errors
/// [`CodecError`] when the bytes fail authentication, do not decompress or have the wrong size.
pub(crate) fn decode(
    stored: &mut [u8],
    flags: u8,
    logical: usize,
    sealing: Option<Sealing<'_>>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.clear();
    let mut n = stored.len();
    if flags & records::EXT_ENCRYPTED != 0 {
        let s = sealing.ok_or(CodecError::Authentication)?;
        n = s
            .key
            .open(s.nonce, s.aad, stored)
            .map_err(|_| CodecError::Authentication)?;
    }
    let data = &stored[..n];
    if flags & records::EXT_COMPRESSED != 0 {
        out.reserve(logical);
        let got = DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(CodecError::Decompress)?);
            }
            let d = d.as_mut().ok_or(CodecError::WrongSize {
                expected: logical,
                got: 0,
            })?;
            // Writes into `out`'s spare capacity only, so a hostile frame cannot grow it
            // beyond `logical`.
            d.decompress_to_buffer(data, out)
                .map_err(CodecError::Decompress)
        })?;
        if got != logical {
            return Err(CodecError::WrongSize {
                expected: logical,
                got,
            });
        }
        return Ok(());
    }
    if n != logical {
        return Err(CodecError::WrongSize {
            expected: logical,
            got: n,
        });
    }
    out.extend_from_slice(data);
    Ok(())
}

fn compress_into(plain: &[u8], out: &mut [u8], level: i32) -> Option<usize> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut()
            .and_then(|(_, z)| z.compress_to_buffer(plain, out).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeySchedule, MasterKey};

    fn key() -> KeySchedule {
        KeySchedule::new(&MasterKey::from_bytes([7; 32], 1), &[])
    }

    #[test]
    fn roundtrips_every_combination_and_detects_damage() {
        let ks = key();
        let k = ks.data_key(1).expect("key");
        let aad = [1u8; 56];
        let compressible = vec![b'a'; 10_000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect();
        for plain in [&compressible, &random] {
            for level in [None, Some(1), Some(3)] {
                for enc in [false, true] {
                    let s = enc.then_some(Sealing {
                        key: k,
                        nonce: [3; 12],
                        aad: &aad,
                    });
                    let mut buf = vec![0u8; max_encoded_len(plain.len(), level, enc)];
                    let e = encode(plain, &mut buf, level, s);
                    assert!(verify(&buf[..e.len], &e.checksum));
                    let mut out = Vec::new();
                    let mut stored = buf[..e.len].to_vec();
                    decode(&mut stored, e.flags, plain.len(), s, &mut out).expect("decode");
                    assert_eq!(&out, plain);
                    if enc {
                        let mut bad = buf[..e.len].to_vec();
                        bad[0] ^= 1;
                        assert!(!verify(&bad, &e.checksum));
                        assert!(matches!(
                            decode(&mut bad, e.flags, plain.len(), s, &mut out),
                            Err(CodecError::Authentication)
                        ));
                        let wrong_place = Sealing {
                            aad: &[2u8; 56],
                            ..s.expect("sealing")
                        };
                        let mut moved = buf[..e.len].to_vec();
                        assert!(
                            decode(
                                &mut moved,
                                e.flags,
                                plain.len(),
                                Some(wrong_place),
                                &mut out
                            )
                            .is_err()
                        );
                    }
                }
            }
        }
        // Compression that does not pay is skipped.
        let mut buf = vec![0u8; max_encoded_len(random.len(), Some(3), false)];
        assert_eq!(encode(&random, &mut buf, Some(3), None).flags, 0);
    }

    #[test]
    fn a_frame_claiming_more_than_logical_is_refused() {
        let big = vec![0u8; 100_000];
        let mut buf = vec![0u8; max_encoded_len(big.len(), Some(1), false)];
        let e = encode(&big, &mut buf, Some(1), None);
        let mut out = Vec::new();
        let r = decode(&mut buf[..e.len], e.flags, 4096, None, &mut out);
        assert!(r.is_err(), "{r:?}");
        assert!(out.capacity() < 100_000);
    }
}
