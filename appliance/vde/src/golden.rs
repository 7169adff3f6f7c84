//! Golden encodings that need crate internals: extents (compression, AES-256-GCM with the
//! extent nonce and associated data, BLAKE3) and sealed policy records, with a fixed master
//! key. The files live with the others in `tests/golden` (see `tests/golden.rs`; bless with
//! `DW_VDE_BLESS=1`). Extents and policies encrypted by an earlier build must keep decoding;
//! encodings that are deterministic (no compression, a fixed nonce) must stay byte-identical.

use std::path::PathBuf;

use uuid::Uuid;

use crate::codec::{self, Sealing};
use crate::crypto::{KeySchedule, MasterKey, extent_aad, extent_nonce};
use crate::engine::{open_policy, policy_aad};
use crate::policy::{self, Compression, Policy, Setting};
use crate::records;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("DW_VDE_BLESS").is_some()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(path(name))
        .unwrap_or_else(|e| panic!("golden file {name}: {e} (DW_VDE_BLESS=1 creates it)"))
}

fn keys() -> KeySchedule {
    KeySchedule::new(&MasterKey::from_bytes([0x42; 32], 0), &[])
}

const VDE: Uuid = Uuid::from_bytes([0x5a; 16]);

fn plain() -> Vec<u8> {
    let mut v: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    v.extend_from_slice(b"the end of the golden extent");
    v
}

fn encode(level: Option<i32>) -> (Vec<u8>, codec::Encoded) {
    let ks = keys();
    let key = ks.data_key(0).expect("generation 0");
    let aad = extent_aad(&VDE, 3, 17, 131_072, 99);
    let s = Sealing {
        key,
        nonce: extent_nonce(99, 0),
        aad: &aad,
    };
    let p = plain();
    let mut buf = vec![0u8; codec::max_encoded_len(p.len(), level, true)];
    let e = codec::encode(&p, &mut buf, level, Some(s));
    buf.truncate(e.len);
    (buf, e)
}

fn decode(stored: &[u8], flags: u8) -> Vec<u8> {
    let ks = keys();
    let key = ks.data_key(0).expect("generation 0");
    let aad = extent_aad(&VDE, 3, 17, 131_072, 99);
    let s = Sealing {
        key,
        nonce: extent_nonce(99, 0),
        aad: &aad,
    };
    let mut out = Vec::new();
    let mut b = stored.to_vec();
    codec::decode(&mut b, flags, plain().len(), Some(s), &mut out).expect("decodes");
    out
}

/// An encrypted, uncompressed extent is deterministic: byte for byte.
#[test]
fn encrypted_extent_is_stable() {
    let (stored, e) = encode(None);
    assert_eq!(e.flags, records::EXT_ENCRYPTED);
    assert_eq!(e.checksum, *blake3::hash(&stored).as_bytes());
    if bless() {
        std::fs::write(path("extent-aes.bin"), &stored).expect("write");
    }
    assert!(
        read("extent-aes.bin") == stored,
        "the extent encryption changed (key derivation, nonce, associated data or cipher)"
    );
    assert_eq!(decode(&stored, e.flags), plain());
}

/// A compressed and encrypted extent written earlier still decodes (compressor output may
/// legitimately differ between zstd versions, so only decoding is pinned).
#[test]
fn compressed_encrypted_extent_still_decodes() {
    if bless() {
        let (stored, e) = encode(Some(3));
        assert_eq!(e.flags, records::EXT_COMPRESSED | records::EXT_ENCRYPTED);
        std::fs::write(path("extent-zstd-aes.bin"), &stored).expect("write");
    }
    let stored = read("extent-zstd-aes.bin");
    assert_eq!(
        decode(&stored, records::EXT_COMPRESSED | records::EXT_ENCRYPTED),
        plain()
    );
}

/// A policy sealed earlier (nonce, ciphertext, tag) still opens with the same key and scope.
#[test]
fn sealed_policy_still_opens() {
    let p = Policy {
        compression: Some(Setting {
            value: Compression::Zstd(3),
            enforce: false,
        }),
        ..Policy::default()
    };
    if bless() {
        let ks = keys();
        let mut buf = policy::encode(&p);
        let nonce = [7u8; 12];
        ks.policy().seal(nonce, &policy_aad(&VDE, 5), &mut buf);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        std::fs::write(path("policy-sealed.bin"), out).expect("write");
    }
    let sealed = read("policy-sealed.bin");
    assert_eq!(open_policy(&keys(), &VDE, 5, &sealed).expect("opens"), p);
    assert!(
        open_policy(&keys(), &VDE, 6, &sealed).is_err(),
        "bound to its scope"
    );
}
