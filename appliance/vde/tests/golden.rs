//! Golden files: the on-disk encodings of docs/FORMAT.md §2, pinned.
//!
//! Goal: any change of an encoding fails a test. Method: every fixed structure (header,
//! region directory, recovery block, key-slot framing, metadata length slot, intent-log record
//! header) and every metadata record kind is encoded from fixed values — the fixed structures
//! by formatting a VDE with a fixed identity, time and key — and compared byte for byte with
//! `tests/golden/*.bin`. A small VDE image (`tests/golden/vde-image.zst`) made by an earlier
//! build must also keep opening with the golden key and show its contents; it is stored sparse:
//! zstd of repeated `offset u64 LE, length u32 LE, bytes` for every non-zero 4 KiB run of the
//! 128 MiB device. The extent and sealed-policy encodings are pinned by unit tests in
//! `src/golden.rs` (they need crate internals).
//!
//! After an intended format change (which needs a format version decision, docs/FORMAT.md):
//! `DW_VDE_BLESS=1 cargo test -p dw-vde --test golden` rewrites the files.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{MIB, read_all};
use dw_blockdev::{BlockDev, MemDev};
use dw_vde::format::{self, HEADER_A, LogRecord, MetaLen, RECOVERY, REGDIR_A, encode_keyslots};
use dw_vde::policy::{Compression, Encryption, Policy, Profile, Retention, RetentionMode, Setting};
use dw_vde::records::{
    self, ContainerRecord, ExtentRecord, InodeRecord, ObjectRecord, PartRecord, SegmentRecord,
    SnapshotRecord, StateRecord, UploadRecord,
};
use dw_vde::{
    ContainerKind, ContainerSpec, FormatOptions, MasterKey, PlainBacking, PutOptions, Vde,
};

const DEVICE: u64 = 128 * MIB;

fn golden_key() -> MasterKey {
    MasterKey::from_bytes([0x42; 32], 0)
}

fn golden_options() -> FormatOptions {
    FormatOptions {
        label: "golden".into(),
        admin_contact: "ops@example.org".into(),
        identity: Some((uuid::Uuid::from_bytes([0x5a; 16]), 1_790_000_000)),
        ..FormatOptions::default()
    }
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("DW_VDE_BLESS").is_some()
}

/// Compares `bytes` with the golden file `name` (or writes it when blessing).
fn golden(name: &str, bytes: &[u8]) {
    let p = path(name);
    if bless() {
        std::fs::write(&p, bytes).expect("write golden file");
        return;
    }
    let want = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (DW_VDE_BLESS=1 creates it)", p.display()));
    assert!(
        want == bytes,
        "{name}: the encoding changed (first difference at byte {:?}); a format change needs a version decision (docs/FORMAT.md), then DW_VDE_BLESS=1",
        want.iter().zip(bytes).position(|(a, b)| a != b)
    );
}

fn plain(dev: &Arc<MemDev>) -> Arc<dyn dw_vde::Backing> {
    Arc::new(PlainBacking::new(dev.clone(), 64 * 1024))
}

#[test]
fn fixed_structures_of_a_formatted_vde() {
    let dev = Arc::new(MemDev::new("golden", DEVICE, 4096));
    Vde::format(plain(&dev), &golden_key(), &golden_options())
        .expect("format")
        .close()
        .expect("close");
    let block = |at| dw_blockdev::read_vec(dev.as_ref(), at, 4096).expect("read");
    golden("header.bin", &block(HEADER_A));
    assert_eq!(block(HEADER_A), block(format::HEADER_B), "both copies");
    golden("regdir.bin", &block(REGDIR_A));
    assert_eq!(block(REGDIR_A), block(format::REGDIR_B), "both copies");
    golden("recovery.bin", &block(RECOVERY));
}

#[test]
fn framing_and_log_records() {
    golden("keyslots.bin", &encode_keyslots(7, b"golden key-slot blob"));
    golden(
        "metalen.bin",
        &MetaLen {
            counter: 3,
            len: 1 << 20,
            high_water: 3 << 20,
        }
        .encode(),
    );
    golden(
        "logrecord.bin",
        &LogRecord {
            vde: uuid::Uuid::from_bytes([0x5a; 16]),
            seq: 1 << 20,
            segment: 9,
            seg_offset: 8192,
            length: 16384,
            payload_hash: *blake3::hash(b"payload").as_bytes(),
        }
        .encode(),
    );
}

#[test]
fn metadata_records() {
    golden(
        "extent.bin",
        &ExtentRecord {
            flags: records::EXT_COMPRESSED | records::EXT_ENCRYPTED,
            key_generation: 2,
            addr: 36 << 20,
            stored_len: 61_234,
            logical_len: 131_072,
            extent_id: 0x0102_0304_0506,
            checksum: *blake3::hash(b"stored").as_bytes(),
            death: records::LIVE,
        }
        .encode(),
    );
    golden(
        "inode.bin",
        &InodeRecord {
            kind: records::INODE_OBJECT,
            refs: 3,
            live_refs: 2,
            dead_refs: 1,
            container: 4,
            size: 1_000_000,
            stored: 600_000,
            record_size: 131_072,
        }
        .encode(),
    );
    golden(
        "object.bin",
        &ObjectRecord {
            flags: records::OBJ_LEGAL_HOLD | records::OBJ_COMPLIANCE,
            death: 77,
            size: 300,
            created_ms: 1_790_000_000_123,
            retain_until: 1_800_000_000,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            content_type: "text/plain".into(),
            user_meta: vec![("owner".into(), "ops".into())],
            policy: dw_vde::policy::encode(&Policy {
                versioning: Some(Setting {
                    value: true,
                    enforce: false,
                }),
                ..Policy::default()
            }),
            parts: vec![(7, 100), (9, 200)],
        }
        .encode(),
    );
    golden(
        "container.bin",
        &ContainerRecord {
            kind: records::KIND_VOLUME,
            record_size: 4096,
            id: 3,
            created: 1_790_000_000,
            volume_size: 1 << 30,
            volume_inode: 8,
            logical_bytes: 1 << 20,
            stored_bytes: 900_000,
            retained_bytes: 4096,
            objects: 0,
            last_snapshot: 12,
            policy: vec![0xAB; 40],
        }
        .encode(),
    );
    golden(
        "segment.bin",
        &SegmentRecord {
            state: records::SEG_OPEN,
            live_bytes: 65_536,
            logged: 81_920,
        }
        .encode(),
    );
    golden(
        "snapshot.bin",
        &SnapshotRecord {
            name: "daily-2026-11-22".into(),
            created: 1_790_000_000,
            logical_bytes: 1 << 30,
        }
        .encode(),
    );
    golden(
        "upload.bin",
        &UploadRecord {
            key: "videos/big.mp4".into(),
            created_ms: 1_790_000_000_456,
            content_type: "video/mp4".into(),
            user_meta: vec![("a".into(), "b".into())],
        }
        .encode(),
    );
    golden(
        "part.bin",
        &PartRecord {
            inode: 12,
            size: 5 << 20,
            etag: "\"00112233445566778899aabbccddeeff\"".into(),
        }
        .encode(),
    );
    golden(
        "state.bin",
        &StateRecord {
            next_container: 4,
            next_inode: 1 << 20,
            extent_id_limit: 2 << 20,
            txg: 99,
            log_checkpoint: 1 << 20,
            healed: 1,
            log_seq_limit: 2 << 20,
            orphan_stored: 0,
            orphan_retained: 4096,
        }
        .encode(),
    );
    golden(
        "policy.bin",
        &dw_vde::policy::encode(&Policy {
            profile: Some(Profile::Strict),
            compression: Some(Setting {
                value: Compression::Zstd(3),
                enforce: true,
            }),
            encryption: Some(Setting {
                value: Encryption::Aes256Gcm,
                enforce: false,
            }),
            verify_checksums: Some(Setting {
                value: true,
                enforce: false,
            }),
            versioning: None,
            retention: Some(Setting {
                value: Retention {
                    days: 7,
                    mode: RetentionMode::Compliance,
                },
                enforce: false,
            }),
            quota_bytes: Some(Setting {
                value: 1 << 40,
                enforce: true,
            }),
        }),
    );
}

const IMAGE: &str = "vde-image.zst";

/// What the golden image holds (written at bless time, checked always).
fn image_contents() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("small", b"a small object".to_vec()),
        ("big", common::mixed(5, 40_000)),
        ("empty", Vec::new()),
    ]
}

fn make_image() -> Vec<u8> {
    let dev = Arc::new(MemDev::new("golden", DEVICE, 4096));
    let v = Vde::format(plain(&dev), &golden_key(), &golden_options()).expect("format");
    let spec = |p| ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            profile: Some(p),
            ..Policy::default()
        },
        record_size: Some(16 * 1024),
    };
    v.create_container("std", &spec(Profile::Standard))
        .expect("bucket");
    v.create_container("fast", &spec(Profile::Speed))
        .expect("bucket");
    for (k, body) in image_contents() {
        for c in ["std", "fast"] {
            v.put_object(c, k, &PutOptions::default(), &mut &body[..])
                .expect("put");
        }
    }
    v.create_snapshot("std", "snap").expect("snapshot");
    v.delete_object("std", "small", false).expect("delete");
    v.create_container(
        "vol",
        &ContainerSpec {
            kind: ContainerKind::Volume { size: 4 * MIB },
            policy: Policy::default(),
            record_size: None,
        },
    )
    .expect("volume");
    let vol = v.volume("vol").expect("volume");
    vol.write_at(&common::data(6, 8192), 4096).expect("write");
    vol.flush().expect("flush");
    v.close().expect("close");
    let mut sparse = Vec::new();
    let mut b = vec![0u8; 4096];
    let mut at = 0;
    while at < DEVICE {
        dev.read_at(&mut b, at).expect("read");
        if b.iter().any(|&x| x != 0) {
            sparse.extend_from_slice(&at.to_le_bytes());
            sparse.extend_from_slice(&4096u32.to_le_bytes());
            sparse.extend_from_slice(&b);
        }
        at += 4096;
    }
    zstd::encode_all(&sparse[..], 19).expect("compress")
}

#[test]
fn an_image_written_earlier_still_opens() {
    if bless() {
        std::fs::write(path(IMAGE), make_image()).expect("write image");
    }
    let packed = std::fs::read(path(IMAGE)).expect("golden image (DW_VDE_BLESS=1 creates it)");
    let sparse = zstd::decode_all(&packed[..]).expect("decompress");
    let dev = Arc::new(MemDev::new("golden", DEVICE, 4096));
    let mut pos = 0;
    while pos < sparse.len() {
        let at = u64::from_le_bytes(sparse[pos..pos + 8].try_into().expect("offset"));
        let n = u32::from_le_bytes(sparse[pos + 8..pos + 12].try_into().expect("len")) as usize;
        dev.write_at(&sparse[pos + 12..pos + 12 + n], at)
            .expect("write");
        pos += 12 + n;
    }
    let v = Vde::open_read_only(plain(&dev), &golden_key(), &[]).expect("open the golden image");
    assert_eq!(v.recovery().label, "golden");
    for (k, body) in image_contents() {
        assert_eq!(
            read_all(v.get_object("fast", k, None).expect("get").1),
            body,
            "fast/{k}"
        );
        assert_eq!(
            read_all(
                v.get_object_at_snapshot("std", "snap", k, None)
                    .expect("get")
                    .1
            ),
            body,
            "std@snap/{k}"
        );
    }
    assert!(
        v.get_object("std", "small", None).is_err(),
        "deleted after the snapshot"
    );
    let mut got = vec![0u8; 8192];
    v.volume("vol")
        .expect("volume")
        .read_at(&mut got, 4096)
        .expect("read");
    assert_eq!(got, common::data(6, 8192));
}
