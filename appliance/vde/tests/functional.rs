//! What a user of the VDE can do, end to end on memory devices.

// Tests index buffers with small u64 values that always fit.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{ArrayRig, MIB, PlainRig, data, key, mixed, read_all, rng};
use dw_blockdev::BlockDev;
use dw_raid::Level;
use dw_vde::policy::{
    Compression, Encryption, Level as PLevel, Policy, Profile, Retention, RetentionMode, Setting,
    Source,
};
use dw_vde::{
    ContainerKind, ContainerSpec, FormatOptions, ListOptions, MasterKey, OpenError, PutOptions,
    Vde, VdeError,
};

fn bucket(profile: Option<Profile>) -> ContainerSpec {
    ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            profile,
            ..Policy::default()
        },
        record_size: None,
    }
}

fn put(v: &Vde, c: &str, k: &str, body: &[u8]) -> dw_vde::ObjectInfo {
    v.put_object(c, k, &PutOptions::default(), &mut &body[..])
        .expect("put")
}

fn get(v: &Vde, c: &str, k: &str) -> Vec<u8> {
    read_all(v.get_object(c, k, None).expect("get").1)
}

#[test]
fn objects_roundtrip_every_profile_and_survive_reopen() {
    let rig = PlainRig::new(256 * MIB);
    let v = rig.format(&FormatOptions {
        label: "t".into(),
        admin_contact: "ops@example.org".into(),
        ..FormatOptions::default()
    });
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        131_072,
        131_073,
        1_000_000,
        3 * 131_072 + 17,
    ];
    let mut expect = Vec::new();
    for p in Profile::ALL {
        let name = format!("b-{p}");
        v.create_container(&name, &bucket(Some(p))).expect("bucket");
        for (i, &n) in sizes.iter().enumerate() {
            let body = if i % 2 == 0 {
                mixed(i as u64, n)
            } else {
                data(i as u64, n)
            };
            let info = put(&v, &name, &format!("obj{i}"), &body);
            assert_eq!(info.size, n as u64);
            assert_eq!(info.etag, format!("\"{:x}\"", md5_of(&body)));
            assert_eq!(get(&v, &name, &format!("obj{i}")), body, "{p} size {n}");
            expect.push((name.clone(), format!("obj{i}"), body));
        }
        // Ranged reads across record boundaries.
        let body = &expect
            .iter()
            .find(|e| e.0 == name && e.1 == "obj6")
            .expect("obj6")
            .2;
        for (s, l) in [
            (0u64, 1u64),
            (131_000, 200),
            (500_000, 400_000),
            (999_999, 1),
        ] {
            let (_, r) = v.get_object(&name, "obj6", Some((s, l))).expect("range");
            assert_eq!(read_all(r), body[s as usize..(s + l) as usize]);
        }
        assert!(matches!(
            v.get_object(&name, "obj6", Some((999_999, 2))),
            Err(VdeError::OutOfRange { .. })
        ));
    }
    // Compression saved space where the profile compresses.
    let speed = v.container("b-speed").expect("c");
    let balanced = v.container("b-balanced").expect("c");
    assert!(
        balanced.stored_bytes < speed.stored_bytes,
        "{} vs {}",
        balanced.stored_bytes,
        speed.stored_bytes
    );
    v.close().expect("close");
    let v = rig.open();
    for (c, k, body) in &expect {
        assert_eq!(&get(&v, c, k), body, "after reopen {c}/{k}");
    }
    assert_eq!(v.recovery().contact, "ops@example.org");
}

fn md5_of(b: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(b).into())
}

#[test]
fn keys_seal_and_damaged_headers() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket(Some(Profile::Standard)))
        .expect("b");
    put(&v, "b", "k", b"secret content");
    v.close().expect("close");
    // Wrong key: refused, with the reason.
    let wrong = MasterKey::from_bytes([1; 32], 0);
    assert!(matches!(
        Vde::open(rig.backing.clone(), &wrong, &[]),
        Err(OpenError::WrongKey)
    ));
    // A damaged header copy is detected and repaired from the other.
    rig.fault.corrupt(0, 4096, 8).expect("corrupt header A");
    let v = rig.open();
    assert_eq!(get(&v, "b", "k"), b"secret content");
    drop(v);
    let a = dw_blockdev::read_vec(rig.mem.as_ref(), 0, 4096).expect("read");
    assert!(
        dw_vde::format::Header::decode(&a).is_ok(),
        "header A repaired"
    );
    // Both copies damaged: a clear error.
    rig.fault.corrupt(0, 4096, 8).expect("corrupt");
    rig.fault.corrupt(4096, 4096, 8).expect("corrupt");
    let e = Vde::open(rig.backing.clone(), &key(), &[]).expect_err("both bad");
    assert!(matches!(e, OpenError::HeaderDamaged { .. }), "{e}");
    // Nothing on a blank device.
    let blank = PlainRig::new(128 * MIB);
    assert!(matches!(
        Vde::open(blank.backing.clone(), &key(), &[]),
        Err(OpenError::NotAVde)
    ));
}

#[test]
fn tampering_with_the_seal_or_recovery_block_refuses_to_open() {
    let rig = PlainRig::new(128 * MIB);
    rig.format(&FormatOptions {
        admin_contact: "alice".into(),
        ..FormatOptions::default()
    })
    .close()
    .expect("close");
    // Rewrite the recovery block with a valid checksum but other content: refused.
    let mut rb = Vde::probe(rig.backing.as_ref())
        .expect("probe")
        .recovery
        .expect("rb");
    rb.contact = "mallory".into();
    rig.mem
        .write_at(&rb.encode(), dw_vde::format::RECOVERY)
        .expect("write");
    let e = Vde::open(rig.backing.clone(), &key(), &[]).expect_err("tampered");
    assert!(matches!(e, OpenError::RecoveryBlockAltered), "{e}");
    assert!(e.to_string().contains("recovery block was altered"), "{e}");
    // Readable without keys all the same.
    assert_eq!(
        Vde::probe(rig.backing.as_ref())
            .expect("probe")
            .recovery
            .expect("rb")
            .contact,
        "mallory"
    );
    // Change a header field and recompute its plain checksum: the seal catches it.
    let rig = PlainRig::new(128 * MIB);
    rig.format(&FormatOptions::default())
        .close()
        .expect("close");
    for at in [0u64, 4096] {
        let b = dw_blockdev::read_vec(rig.mem.as_ref(), at, 4096).expect("read");
        let mut h = dw_vde::format::Header::decode(&b).expect("decode");
        h.created += 1;
        rig.mem.write_at(&h.encode(), at).expect("write");
    }
    let e = Vde::open(rig.backing.clone(), &key(), &[]).expect_err("tampered");
    assert!(matches!(e, OpenError::Tampered), "{e}");
    assert!(e.to_string().contains("altered"), "{e}");
    // With the wrong key the same header says so instead.
    assert!(matches!(
        Vde::open(rig.backing.clone(), &MasterKey::from_bytes([9; 32], 0), &[]),
        Err(OpenError::WrongKey)
    ));
}

/// Goal: the recovery block is informational — a damaged one never keeps the owner out; it is
/// rebuilt with its original content. Method: flip bits in it, open read-only (works, nothing
/// written), open read-write (works, block rewritten), check it without keys.
#[test]
fn a_damaged_recovery_block_is_rebuilt() {
    let rig = PlainRig::new(128 * MIB);
    rig.format(&FormatOptions {
        label: "tank".into(),
        admin_contact: "alice@example.org".into(),
        ..FormatOptions::default()
    })
    .close()
    .expect("close");
    rig.fault
        .corrupt(dw_vde::format::RECOVERY, 4096, 16)
        .expect("corrupt");
    assert!(
        Vde::probe(rig.backing.as_ref())
            .expect("probe")
            .recovery
            .is_none(),
        "damaged"
    );
    let v = Vde::open_read_only(rig.backing.clone(), &key(), &[]).expect("read-only open");
    assert_eq!(
        v.recovery().contact,
        "alice@example.org",
        "from the metadata copy"
    );
    drop(v);
    assert!(
        Vde::probe(rig.backing.as_ref())
            .expect("probe")
            .recovery
            .is_none(),
        "read-only writes nothing"
    );
    rig.open().close().expect("close");
    let rb = Vde::probe(rig.backing.as_ref())
        .expect("probe")
        .recovery
        .expect("rebuilt");
    assert_eq!(
        (rb.label.as_str(), rb.contact.as_str()),
        ("tank", "alice@example.org")
    );
    rig.open().close().expect("opens cleanly after the repair");
}

#[test]
fn volumes_thin_discard_and_reopen() {
    let rig = PlainRig::new(256 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container(
        "vol",
        &ContainerSpec {
            kind: ContainerKind::Volume { size: 64 * MIB },
            policy: Policy {
                profile: Some(Profile::Standard),
                ..Policy::default()
            },
            // 4 KiB records, so the discard below retires whole records of it.
            record_size: Some(4096),
        },
    )
    .expect("volume");
    let vol = v.volume("vol").expect("open");
    assert_eq!(vol.size(), 64 * MIB);
    let mut zero = vec![1u8; 8192];
    vol.read_at(&mut zero, 10 * MIB).expect("read");
    assert!(zero.iter().all(|&b| b == 0), "unwritten reads as zeros");
    let a = data(1, 1 << 20);
    vol.write_at(&a, 0).expect("write");
    let b = data(2, 6000);
    vol.write_at(&b, 1000).expect("unaligned write");
    let mut expect = a.clone();
    expect[1000..7000].copy_from_slice(&b);
    let mut got = vec![0u8; 1 << 20];
    vol.read_at(&mut got, 0).expect("read");
    assert_eq!(got, expect);
    vol.discard(4096, 65536).expect("discard");
    expect[4096..4096 + 65536].fill(0);
    vol.read_at(&mut got, 0).expect("read");
    assert_eq!(got, expect);
    let info = v.container("vol").expect("info");
    assert_eq!(
        info.logical_bytes,
        (1 << 20) - 65536,
        "thin: only written blocks count"
    );
    assert!(matches!(
        vol.write_at(&[0; 4096], 64 * MIB),
        Err(VdeError::OutOfRange { .. })
    ));
    vol.flush().expect("flush");
    drop(vol);
    v.close().expect("close");
    let v = rig.open();
    let vol = v.volume("vol").expect("open");
    vol.read_at(&mut got, 0).expect("read");
    assert_eq!(got, expect, "after reopen");
}

#[test]
fn snapshots_copy_on_write_rollback_and_space() {
    let rig = PlainRig::new(256 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container(
        "vol",
        &ContainerSpec {
            kind: ContainerKind::Volume { size: 32 * MIB },
            policy: Policy::default(),
            record_size: None,
        },
    )
    .expect("vol");
    let vol = v.volume("vol").expect("vol");
    let a = data(1, 4 * MIB as usize);
    vol.write_at(&a, 0).expect("write");
    let s1 = v.create_snapshot("vol", "s1").expect("snap");
    let before = v.container("vol").expect("c");
    let b = data(2, MIB as usize);
    vol.write_at(&b, 0).expect("overwrite");
    let after = v.container("vol").expect("c");
    assert_eq!(
        after.retained_bytes, MIB,
        "the snapshot keeps the overwritten MiB"
    );
    assert_eq!(
        after.stored_bytes, before.stored_bytes,
        "live data size unchanged"
    );
    let snaps = v.snapshots("vol").expect("list");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].unique_bytes, MIB);
    let mut got = vec![0u8; 4 * MIB as usize];
    vol.read_at_snapshot(&mut got, 0, s1.txg)
        .expect("snapshot read");
    assert_eq!(got, a, "snapshot unchanged by later writes");
    vol.read_at(&mut got, 0).expect("live read");
    assert_eq!(&got[..MIB as usize], &b[..]);
    let free_before = v.capacity().expect("cap").free_bytes;
    v.rollback("vol", "s1").expect("rollback");
    vol.read_at(&mut got, 0).expect("read");
    assert_eq!(got, a, "rolled back");
    let c = v.container("vol").expect("c");
    assert_eq!(c.retained_bytes, 0);
    v.delete_snapshot("vol", "s1").expect("delete");
    assert!(v.snapshots("vol").expect("list").is_empty());
    v.commit().expect("commit");
    assert!(
        v.capacity().expect("cap").free_bytes >= free_before,
        "rolled-back data freed"
    );
    // Buckets: a snapshot keeps deleted and overwritten objects readable.
    v.create_container("b", &bucket(None)).expect("b");
    put(&v, "b", "x", b"one");
    put(&v, "b", "y", b"why");
    v.create_snapshot("b", "s").expect("snap");
    put(&v, "b", "x", b"two");
    v.delete_object("b", "y", false).expect("delete");
    assert_eq!(get(&v, "b", "x"), b"two");
    assert!(v.get_object("b", "y", None).is_err());
    assert_eq!(
        read_all(
            v.get_object_at_snapshot("b", "s", "x", None)
                .expect("snap get")
                .1
        ),
        b"one"
    );
    assert_eq!(
        read_all(
            v.get_object_at_snapshot("b", "s", "y", None)
                .expect("snap get")
                .1
        ),
        b"why"
    );
    let listed = v
        .list_objects_at_snapshot("b", "s", &ListOptions::default())
        .expect("list");
    assert_eq!(
        listed
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert!(
        v.delete_container("b").is_err(),
        "snapshots keep it from being deleted"
    );
    v.delete_snapshot("b", "s").expect("delete snapshot");
    assert_eq!(v.container("b").expect("c").retained_bytes, 0);
}

#[test]
fn policy_cascade_sources_and_enforcement() {
    let rig = PlainRig::new(128 * MIB);
    let vde_policy = Policy {
        profile: Some(Profile::Balanced),
        encryption: Some(Setting {
            value: Encryption::Aes256Gcm,
            enforce: true,
        }),
        ..Policy::default()
    };
    let v = rig.format(&FormatOptions {
        policy: vde_policy,
        ..FormatOptions::default()
    });
    let speed = ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            profile: Some(Profile::Speed),
            ..Policy::default()
        },
        record_size: None,
    };
    v.create_container("fast", &speed).expect("create");
    let e = v.effective_policy("fast", None).expect("effective");
    assert_eq!(
        e.compression.value,
        Compression::None,
        "performance: the container overrides"
    );
    assert_eq!(
        e.compression.source,
        Source::Level {
            level: PLevel::Container,
            profile: Some(Profile::Speed),
            enforced: false
        }
    );
    assert_eq!(
        e.encryption.value,
        Encryption::Aes256Gcm,
        "security: enforced at the VDE"
    );
    assert!(
        e.verify_checksums.value,
        "most restrictive: the VDE's profile keeps verification on"
    );
    let bad = ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            encryption: Some(Setting {
                value: Encryption::None,
                enforce: false,
            }),
            ..Policy::default()
        },
        record_size: None,
    };
    let err = v.create_container("plain", &bad).expect_err("refused");
    assert!(matches!(err, VdeError::Policy(_)), "{err}");
    // Object-level retention: the longest wins; its source is reported.
    let opts = PutOptions {
        policy: Some(Policy {
            retention: Some(Setting {
                value: Retention {
                    days: 2,
                    mode: RetentionMode::Governance,
                },
                enforce: false,
            }),
            ..Policy::default()
        }),
        ..PutOptions::default()
    };
    v.put_object("fast", "k", &opts, &mut &b"x"[..])
        .expect("put");
    let e = v.effective_policy("fast", Some("k")).expect("effective");
    assert_eq!(e.retention.value.days, 2);
    assert_eq!(
        e.retention.source,
        Source::Level {
            level: PLevel::Object,
            profile: None,
            enforced: false
        }
    );
}

#[test]
fn worm_retention_legal_hold_and_versioning() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket(None)).expect("b");
    let future = 4_000_000_000;
    let opts = PutOptions {
        retain_until: Some((future, RetentionMode::Governance)),
        ..PutOptions::default()
    };
    v.put_object("b", "locked", &opts, &mut &b"v1"[..])
        .expect("put");
    assert!(matches!(
        v.delete_object("b", "locked", false),
        Err(VdeError::Retained(_))
    ));
    assert!(matches!(
        v.put_object("b", "locked", &PutOptions::default(), &mut &b"v2"[..]),
        Err(VdeError::Retained(_))
    ));
    assert!(matches!(
        v.set_retention("b", "locked", 1, RetentionMode::Governance, false),
        Err(VdeError::Retained(_))
    ));
    v.delete_object("b", "locked", true)
        .expect("governance bypass");
    let comp = PutOptions {
        retain_until: Some((future, RetentionMode::Compliance)),
        ..PutOptions::default()
    };
    v.put_object("b", "c", &comp, &mut &b"v1"[..]).expect("put");
    assert!(
        matches!(v.delete_object("b", "c", true), Err(VdeError::Retained(_))),
        "compliance: no bypass"
    );
    put(&v, "b", "held", b"h");
    v.set_legal_hold("b", "held", true).expect("hold");
    assert!(matches!(
        v.delete_object("b", "held", true),
        Err(VdeError::Retained(_))
    ));
    v.set_legal_hold("b", "held", false).expect("release");
    v.delete_object("b", "held", false).expect("delete");
    // Versioning: overwrites and deletes keep old versions.
    let vers = ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            versioning: Some(Setting {
                value: true,
                enforce: false,
            }),
            ..Policy::default()
        },
        record_size: None,
    };
    v.create_container("v", &vers).expect("v");
    let i1 = put(&v, "v", "k", b"first");
    put(&v, "v", "k", b"second");
    v.delete_object("v", "k", false).expect("delete");
    assert!(v.get_object("v", "k", None).is_err());
    assert_eq!(
        read_all(
            v.get_object_version("v", "k", i1.version, None)
                .expect("old version")
                .1
        ),
        b"first"
    );
}

#[test]
fn multipart_copy_and_listing() {
    let rig = PlainRig::new(512 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket(Some(Profile::Standard)))
        .expect("b");
    let up = v
        .create_upload(
            "b",
            "big",
            Some("video/mp4".into()),
            vec![("a".into(), "b".into())],
        )
        .expect("upload");
    let p1 = data(1, 5 * MIB as usize);
    let p2 = data(2, 5 * MIB as usize + 3);
    let p3 = data(3, 1000);
    let e2 = v
        .put_part("b", &up.upload_id, 2, &mut &p2[..], None)
        .expect("part 2");
    let e1 = v
        .put_part("b", &up.upload_id, 1, &mut &p1[..], None)
        .expect("part 1");
    let e3 = v
        .put_part("b", &up.upload_id, 3, &mut &p3[..], None)
        .expect("part 3");
    assert_eq!(v.list_parts("b", &up.upload_id).expect("parts").len(), 3);
    let bad = v.complete_upload(
        "b",
        &up.upload_id,
        &[
            (1, e1.etag.clone()),
            (3, e3.etag.clone()),
            (2, e2.etag.clone()),
        ],
    );
    assert!(bad.is_err(), "out of order");
    let info = v
        .complete_upload(
            "b",
            &up.upload_id,
            &[(1, e1.etag), (2, e2.etag), (3, e3.etag)],
        )
        .expect("complete");
    assert!(info.etag.ends_with("-3\""), "{}", info.etag);
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    whole.extend_from_slice(&p3);
    assert_eq!(get(&v, "b", "big"), whole);
    let (_, r) = v
        .get_object("b", "big", Some((5 * MIB - 10, 20)))
        .expect("range across parts");
    assert_eq!(
        read_all(r),
        whole[(5 * MIB - 10) as usize..(5 * MIB + 10) as usize]
    );
    assert!(v.list_uploads("b").expect("uploads").is_empty());
    // Copies share data.
    let before = v.capacity().expect("cap").free_bytes;
    v.copy_object("b", "big", "b", "copy", None).expect("copy");
    assert_eq!(get(&v, "b", "copy"), whole);
    assert!(
        v.capacity().expect("cap").free_bytes + MIB > before,
        "no data copied"
    );
    v.delete_object("b", "big", false).expect("delete");
    assert_eq!(get(&v, "b", "copy"), whole, "copy survives the source");
    // Listing.
    for k in ["a/1", "a/2", "a/b/3", "b/1", "c"] {
        put(&v, "b", k, k.as_bytes());
    }
    let page = v
        .list_objects(
            "b",
            &ListOptions {
                prefix: "a/".into(),
                delimiter: Some("/".into()),
                ..ListOptions::default()
            },
        )
        .expect("list");
    assert_eq!(
        page.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["a/1", "a/2"]
    );
    assert_eq!(page.common_prefixes, ["a/b/"]);
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let p = v
            .list_objects(
                "b",
                &ListOptions {
                    start_after: after.clone(),
                    max_keys: 2,
                    ..ListOptions::default()
                },
            )
            .expect("page");
        keys.extend(p.objects.iter().map(|o| o.key.clone()));
        if !p.truncated {
            break;
        }
        after = p.next_start_after;
    }
    assert_eq!(keys, ["a/1", "a/2", "a/b/3", "b/1", "c", "copy"]);
}

#[test]
fn quota_and_bad_input() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    let q = ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            quota_bytes: Some(Setting {
                value: 100_000,
                enforce: false,
            }),
            ..Policy::default()
        },
        record_size: None,
    };
    v.create_container("q", &q).expect("q");
    put(&v, "q", "a", &data(1, 60_000));
    let e = v
        .put_object("q", "b", &PutOptions::default(), &mut &data(2, 60_000)[..])
        .expect_err("over quota");
    assert!(matches!(e, VdeError::QuotaExceeded(_)), "{e}");
    assert!(v.get_object("q", "b", None).is_err(), "nothing half-stored");
    assert!(matches!(
        v.create_container("q", &q),
        Err(VdeError::ContainerExists(_))
    ));
    assert!(v.create_container("a/b", &q).is_err());
    assert!(
        v.put_object("q", "", &PutOptions::default(), &mut &b""[..])
            .is_err()
    );
    assert!(
        v.put_object(
            "q",
            &"k".repeat(2000),
            &PutOptions::default(),
            &mut &b""[..]
        )
        .is_err()
    );
    let md5 = PutOptions {
        content_md5: Some([0; 16]),
        ..PutOptions::default()
    };
    assert!(
        v.put_object("q", "d", &md5, &mut &b"abc"[..]).is_err(),
        "BadDigest"
    );
    assert!(v.get_object("q", "d", None).is_err());
    assert!(matches!(
        v.get_object("nope", "x", None),
        Err(VdeError::NoSuchContainer(_))
    ));
}

#[test]
fn corrupted_extents_heal_from_raid_or_fail_clearly() {
    // On RAID-Z2: flip bits in every member's copy region one at a time; reads heal.
    let rig = ArrayRig::new(Level::RaidZ2, 5, 96 * MIB);
    let v = Vde::format(rig.backing.clone(), &key(), &FormatOptions::default()).expect("format");
    v.create_container("b", &bucket(Some(Profile::Standard)))
        .expect("b");
    let body = data(7, 4 * MIB as usize);
    put(&v, "b", "k", &body);
    v.close().expect("close");
    // Corrupt the data region of one member, then read everything back through the VDE.
    let sb = dw_raid::Array::read_superblock(rig.mems[1].as_ref()).expect("sb");
    let start = sb.data_offset + (sb.mirror_rows + 2) * u64::from(sb.chunk);
    rig.handles[1]
        .corrupt(start, 64 * 1024, 64)
        .expect("corrupt");
    let v = Vde::open(rig.backing.clone(), &key(), &[]).expect("open");
    assert_eq!(get(&v, "b", "k"), body, "healed read");
    assert!(v.capacity().expect("cap").healed >= 1, "heal counted");
    // Plain device: no redundancy, a clear error, never wrong data.
    let prig = PlainRig::new(128 * MIB);
    let v = prig.format(&FormatOptions::default());
    v.create_container("b", &bucket(Some(Profile::Balanced)))
        .expect("b");
    let body = data(8, 512 * 1024);
    put(&v, "b", "k", &body);
    v.close().expect("close");
    let v = prig.open();
    // Damage the first data segment (where the object went).
    let rd_block =
        dw_blockdev::read_vec(prig.mem.as_ref(), dw_vde::format::REGDIR_A, 4096).expect("read");
    let rd = dw_vde::format::RegionDirectory::decode(&rd_block, 128 * MIB).expect("regdir");
    let data_start = rd
        .get(dw_vde::format::RegionKind::Data)
        .expect("data")
        .offset;
    prig.fault
        .corrupt(data_start, 512 * 1024, 32)
        .expect("corrupt");
    let mut buf = Vec::new();
    let r =
        std::io::Read::read_to_end(&mut v.get_object("b", "k", None).expect("open").1, &mut buf);
    assert!(r.is_err(), "corrupt data must not be returned");
    assert!(
        r.expect_err("err").to_string().contains("checksum"),
        "names the checksum failure"
    );
}

#[test]
fn cleaner_reclaims_scattered_overwrites() {
    // A 16 MiB volume on a VDE with ~100 MiB of data segments: 6x its size in random 4 KiB
    // overwrites only fits if dead space is reclaimed.
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    let size = 16 * MIB;
    v.create_container(
        "vol",
        &ContainerSpec {
            kind: ContainerKind::Volume { size },
            policy: Policy::default(),
            record_size: None,
        },
    )
    .expect("vol");
    let vol = v.volume("vol").expect("open");
    let mut model = data(1, size as usize);
    vol.write_at(&model, 0).expect("fill");
    vol.flush().expect("flush");
    let mut r = rng(5);
    for i in 0..(6 * size / 4096) {
        let blk = rand::Rng::random_range(&mut r, 0..size / 4096);
        let d = data(100 + i, 4096);
        vol.write_at(&d, blk * 4096)
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        model[(blk * 4096) as usize..((blk + 1) * 4096) as usize].copy_from_slice(&d);
        if i % 256 == 0 {
            vol.flush().expect("flush");
        }
    }
    vol.flush().expect("flush");
    let mut got = vec![0u8; size as usize];
    vol.read_at(&mut got, 0).expect("read");
    assert_eq!(got, model, "data intact after cleaning moved it");
    let rep = v.clean(64).expect("clean");
    let _ = rep;
    v.close().expect("close");
    let v = rig.open();
    v.volume("vol")
        .expect("open")
        .read_at(&mut got, 0)
        .expect("read");
    assert_eq!(got, model, "after reopen");
}

#[test]
fn key_rotation_reencrypts_resumably() {
    let rig = PlainRig::new(128 * MIB);
    let k0 = key();
    let v = Vde::format(rig.backing.clone(), &k0, &FormatOptions::default()).expect("format");
    v.create_container("b", &bucket(Some(Profile::Standard)))
        .expect("b");
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| mixed(i, 50_000)).collect();
    for (i, b) in bodies.iter().enumerate() {
        put(&v, "b", &format!("k{i}"), b);
    }
    let k1 = MasterKey::from_bytes([0x77; 32], 1);
    v.rotate_key(&k1).expect("rotate");
    assert_eq!(
        get(&v, "b", "k3"),
        bodies[3],
        "old data readable right after rotation"
    );
    put(&v, "b", "new", b"written under generation 1");
    let p = v.reencrypt_step(5).expect("step");
    assert!(p.rewritten > 0 && p.remaining > 0, "{p:?}");
    v.close().expect("close");
    // Mid-way: both generations needed.
    assert!(
        matches!(
            Vde::open(rig.backing.clone(), &k0, &[]),
            Err(OpenError::Unsuitable(_))
        ),
        "the old key alone is behind"
    );
    let v = Vde::open(rig.backing.clone(), &k1, std::slice::from_ref(&k0)).expect("open with both");
    loop {
        if v.reencrypt_step(5).expect("step").remaining == 0 {
            break;
        }
    }
    v.close().expect("close");
    // Finished: the new key alone opens everything.
    let v = Vde::open(rig.backing.clone(), &k1, &[]).expect("open with the new key only");
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(&get(&v, "b", &format!("k{i}")), b);
    }
    assert_eq!(get(&v, "b", "new"), b"written under generation 1");
    assert_eq!(
        v.effective_policy("b", None)
            .expect("policy")
            .encryption
            .value,
        Encryption::Aes256Gcm,
        "policies re-sealed"
    );
}

/// Goal: rolling a bucket back never deletes an object version that retention or a legal hold
/// protects (WORM). Method: objects born after the snapshot under governance retention, under
/// legal hold, and (with versioning) a retained version that was overwritten; each makes the
/// rollback fail with `Retained` and changes nothing; once released, the rollback works.
#[test]
fn rollback_refuses_to_delete_protected_objects() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket(None)).expect("b");
    put(&v, "b", "old", b"before");
    v.create_snapshot("b", "s").expect("snap");
    let retained = PutOptions {
        retain_until: Some((4_000_000_000, RetentionMode::Governance)),
        ..PutOptions::default()
    };
    v.put_object("b", "kept", &retained, &mut &b"worm"[..])
        .expect("put");
    let e = v.rollback("b", "s").expect_err("retention protects it");
    assert!(matches!(e, VdeError::Retained(_)), "{e}");
    assert!(e.to_string().contains("kept"), "{e}");
    assert_eq!(get(&v, "b", "kept"), b"worm", "nothing changed");
    v.delete_object("b", "kept", true)
        .expect("governance bypass");
    let held = PutOptions {
        legal_hold: true,
        ..PutOptions::default()
    };
    v.put_object("b", "held", &held, &mut &b"evidence"[..])
        .expect("put");
    let e = v.rollback("b", "s").expect_err("legal hold protects it");
    assert!(e.to_string().contains("legal hold"), "{e}");
    v.set_legal_hold("b", "held", false).expect("release");
    v.rollback("b", "s").expect("nothing protected any more");
    assert!(v.get_object("b", "held", None).is_err());
    assert_eq!(get(&v, "b", "old"), b"before");
    // Versioning: a protected version overwritten after the snapshot is dead but protected.
    let vers = ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy {
            versioning: Some(Setting {
                value: true,
                enforce: false,
            }),
            ..Policy::default()
        },
        record_size: None,
    };
    v.create_container("v", &vers).expect("v");
    v.create_snapshot("v", "empty").expect("snap");
    v.put_object("v", "k", &retained, &mut &b"v1"[..])
        .expect("put");
    put(&v, "v", "k", b"v2");
    let e = v.rollback("v", "empty").expect_err("the retained v1");
    assert!(matches!(e, VdeError::Retained(_)), "{e}");
    assert_eq!(get(&v, "v", "k"), b"v2");
}

/// A VDE whose 4 MiB metadata region cannot map its 512 MiB volume "vol" of 4 KiB records.
const SMALL_META_VOLUME: u64 = 512 * MIB;

fn small_metadata_vde() -> (PlainRig, Vde) {
    let rig = PlainRig::new(768 * MIB);
    let v = rig.format(&FormatOptions {
        metadata_bytes: Some(4 * MIB),
        ..FormatOptions::default()
    });
    v.create_container(
        "vol",
        &ContainerSpec {
            kind: ContainerKind::Volume {
                size: SMALL_META_VOLUME,
            },
            policy: Policy::default(),
            record_size: Some(4096),
        },
    )
    .expect("volume");
    (rig, v)
}

/// Filling the metadata region (4 KiB volume records cost ~110 bytes of metadata each) is a
/// clear "no space" refusal, never a wedged store: discards, deletes and commits still work,
/// writes resume once space is freed, and the VDE reopens.
#[test]
fn metadata_full_refuses_new_data_and_stays_usable() {
    let (rig, v) = small_metadata_vde();
    let vol_size = SMALL_META_VOLUME;
    v.create_container("b", &bucket(None)).expect("bucket");
    put(&v, "b", "keep", b"kept through it all");
    let vol = v.volume("vol").expect("open volume");
    let chunk = data(7, 256 * 1024);
    let mut written = 0u64;
    let err = loop {
        assert!(
            written < vol_size,
            "4 MiB of metadata cannot map 512 MiB of 4 KiB records"
        );
        match vol.write_at(&chunk, written) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        if (written / chunk.len() as u64).is_multiple_of(16) {
            vol.flush().expect("flush while filling");
        }
    };
    assert!(
        matches!(&err, VdeError::NoSpace(why) if why.contains("metadata")),
        "{err:?}"
    );
    assert!(
        written > 16 * MIB,
        "refused too early: {written} bytes: {err}"
    );
    // Other metadata-adding operations are refused the same way.
    let e = v
        .put_object("b", "new", &PutOptions::default(), &mut &b"x"[..])
        .expect_err("put while full");
    assert!(matches!(e, VdeError::NoSpace(_)), "{e:?}");
    // The store still commits: flush, read back, delete, discard.
    vol.flush().expect("flush when full");
    let mut back = vec![0u8; chunk.len()];
    vol.read_at(&mut back, 0).expect("read when full");
    assert_eq!(back, chunk);
    assert_eq!(get(&v, "b", "keep"), b"kept through it all");
    vol.discard(0, written / 2).expect("discard when full");
    vol.flush().expect("flush after discard");
    // Freed metadata is reused.
    vol.write_at(&chunk, 0).expect("write after discard");
    vol.flush().expect("flush");
    drop(vol);
    v.close().expect("close");
    let v = rig.open();
    let vol = v.volume("vol").expect("reopen volume");
    vol.read_at(&mut back, 0).expect("read after reopen");
    assert_eq!(back, chunk);
    let last = written - chunk.len() as u64;
    vol.read_at(&mut back, last)
        .expect("read the last acknowledged chunk");
    assert_eq!(back, chunk);
    assert_eq!(get(&v, "b", "keep"), b"kept through it all");
    drop(vol);
    v.close().expect("close again");
}

/// The same with single random 4 KiB writes, each its own transaction (the most metadata
/// copied per byte).
#[test]
fn metadata_full_under_random_small_writes() {
    use rand::Rng;
    let (rig, v) = small_metadata_vde();
    let vol_size = SMALL_META_VOLUME;
    let vol = v.volume("vol").expect("open volume");
    let block = data(9, 4096);
    let mut r = rng(11);
    let mut n = 0u64;
    let err = loop {
        assert!(n < vol_size / 4096, "never refused");
        let off = r.random_range(0..vol_size / 4096) * 4096;
        match vol.write_at(&block, off) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        if n.is_multiple_of(64) {
            vol.flush().expect("flush while filling");
        }
    };
    assert!(matches!(&err, VdeError::NoSpace(_)), "{err:?}");
    assert!(n > 4096, "refused too early: {n} writes");
    vol.flush().expect("flush when full");
    vol.discard(0, vol_size).expect("discard everything");
    vol.flush().expect("flush after discard");
    vol.write_at(&block, 0).expect("write after discard");
    drop(vol);
    v.close().expect("close");
    let v = rig.open();
    drop(v);
}
