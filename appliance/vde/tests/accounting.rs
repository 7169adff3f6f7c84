//! Space accounting: segments never leak, capacity counts shared data once, quotas use the
//! net change of an overwrite.

// Tests index buffers with small u64 values that always fit.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{MIB, PlainRig, data, read_all};
use dw_vde::policy::{Policy, Setting};
use dw_vde::{ContainerKind, ContainerSpec, FormatOptions, PutOptions, Vde, VdeError};

fn bucket() -> ContainerSpec {
    ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: Policy::default(),
        record_size: None,
    }
}

/// Goal: a segment that fills (and is written in place) between two group commits, before the
/// transaction that references its extents commits, is neither lost nor kept forever.
/// Method: one thread streams multi-segment objects while another does small puts, each of
/// which forces a group commit; then everything is deleted, the VDE closed and reopened, and
/// the free space must be what it was before.
#[test]
fn concurrent_puts_leak_no_segments() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket()).expect("bucket");
    v.close().expect("close");
    let v = rig.open();
    let free0 = v.capacity().expect("capacity").free_bytes;
    let big = data(1, 7 * MIB as usize);
    let small = data(2, 16 * 1024);
    for round in 0..4 {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..5 {
                    v.put_object(
                        "b",
                        &format!("big{i}"),
                        &PutOptions::default(),
                        &mut &big[..],
                    )
                    .expect("big put");
                }
            });
            s.spawn(|| {
                for i in 0..150 {
                    v.put_object(
                        "b",
                        &format!("small{i}"),
                        &PutOptions::default(),
                        &mut &small[..],
                    )
                    .expect("small put");
                }
            });
        });
        for i in 0..5 {
            v.delete_object("b", &format!("big{i}"), false)
                .expect("delete");
        }
        for i in 0..150 {
            v.delete_object("b", &format!("small{i}"), false)
                .expect("delete");
        }
        // Freed segments are reusable after the commit that frees them is durable; the open
        // segments (at most one per writer slot, 4) still hold the deleted bytes.
        v.commit().expect("commit");
        v.commit().expect("commit");
        let free = v.capacity().expect("capacity").free_bytes;
        assert!(
            free + 8 * MIB >= free0,
            "round {round}: {} MiB of free space did not come back",
            (free0 - free) / MIB
        );
    }
    v.close().expect("close");
    let v = rig.open();
    let cap = v.capacity().expect("capacity");
    assert_eq!(
        cap.free_bytes,
        free0,
        "every segment is free again after deleting everything ({} MiB missing)",
        (free0 - cap.free_bytes) / MIB
    );
    assert_eq!(cap.stored_bytes, 0);
    assert_eq!(cap.logical_bytes, 0);
}

fn put(v: &Vde, c: &str, k: &str, body: &[u8]) {
    v.put_object(c, k, &PutOptions::default(), &mut &body[..])
        .expect("put");
}

/// Goal: data shared by copies and snapshots is counted once, as live while any live object
/// uses it and as retained while only snapshots do; logical bytes count every object.
/// Method: copies within and across buckets, deletes and a snapshot, checking container and
/// VDE counters and the snapshot's unique bytes after each step.
#[test]
fn shared_data_is_counted_once() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("a", &bucket()).expect("a");
    v.create_container("b", &bucket()).expect("b");
    let body = data(1, 300_000);
    put(&v, "a", "x", &body);
    let one = v.container("a").expect("a").stored_bytes;
    assert!(one >= 300_000, "{one}");
    v.copy_object("a", "x", "a", "x2", None).expect("copy");
    v.copy_object("a", "x", "b", "y", None).expect("copy");
    let (a, b) = (v.container("a").expect("a"), v.container("b").expect("b"));
    assert_eq!(a.stored_bytes, one, "a copy adds no stored bytes");
    assert_eq!(b.stored_bytes, 0, "charged to the bucket that wrote it");
    assert_eq!(a.logical_bytes, 600_000, "every object counts logically");
    assert_eq!(b.logical_bytes, 300_000);
    let cap = v.capacity().expect("capacity");
    assert_eq!(cap.stored_bytes, one);
    assert_eq!(cap.logical_bytes, 900_000);

    // A snapshot, then the originals go: the copy in b keeps the data live.
    v.create_snapshot("a", "s").expect("snapshot");
    v.delete_object("a", "x", false).expect("delete");
    v.delete_object("a", "x2", false).expect("delete");
    let a = v.container("a").expect("a");
    assert_eq!(
        (a.stored_bytes, a.retained_bytes),
        (one, 0),
        "still live in b"
    );
    assert_eq!(v.snapshots("a").expect("snaps")[0].unique_bytes, 0);
    // The last live reference goes: only the snapshot keeps it.
    v.delete_object("b", "y", false).expect("delete");
    let a = v.container("a").expect("a");
    assert_eq!((a.stored_bytes, a.retained_bytes), (0, one));
    assert_eq!(v.snapshots("a").expect("snaps")[0].unique_bytes, one);
    let cap = v.capacity().expect("capacity");
    assert_eq!((cap.stored_bytes, cap.retained_bytes), (0, one));
    v.delete_snapshot("a", "s").expect("delete snapshot");
    let cap = v.capacity().expect("capacity");
    assert_eq!(
        (cap.stored_bytes, cap.retained_bytes, cap.logical_bytes),
        (0, 0, 0)
    );

    // A bucket deleted while a copy elsewhere uses its data: the VDE keeps counting it.
    v.create_container("c", &bucket()).expect("c");
    put(&v, "c", "z", &body);
    v.copy_object("c", "z", "b", "z", None).expect("copy");
    v.delete_object("c", "z", false).expect("delete");
    v.delete_container("c").expect("delete bucket");
    let cap = v.capacity().expect("capacity");
    assert_eq!(cap.stored_bytes, one, "orphaned but used");
    assert_eq!(read_all(v.get_object("b", "z", None).expect("get").1), body);
    v.delete_object("b", "z", false).expect("delete");
    let cap = v.capacity().expect("capacity");
    assert_eq!((cap.stored_bytes, cap.retained_bytes), (0, 0));
    v.close().expect("close");
    let cap = rig.open().capacity().expect("capacity");
    assert_eq!(
        (cap.stored_bytes, cap.retained_bytes),
        (0, 0),
        "after reopen"
    );
}

/// Goal: an overwrite in a bucket at its quota is charged only its net change. Method: fill a
/// bucket close to its quota, overwrite an object with a slightly larger one (accepted), then
/// exceed the quota with a new object (refused, nothing stored).
#[test]
fn quota_counts_the_net_change_of_an_overwrite() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    let q = ContainerSpec {
        policy: Policy {
            quota_bytes: Some(Setting {
                value: 100_000,
                enforce: false,
            }),
            ..Policy::default()
        },
        ..bucket()
    };
    v.create_container("q", &q).expect("q");
    put(&v, "q", "a", &data(1, 60_000));
    put(&v, "q", "b", &data(2, 30_000));
    // 90 000 used; replacing a (60 000) by 70 000 bytes makes 100 000: within the quota.
    put(&v, "q", "a", &data(3, 70_000));
    assert_eq!(v.container("q").expect("q").logical_bytes, 100_000);
    let e = v
        .put_object("q", "c", &PutOptions::default(), &mut &data(4, 1)[..])
        .expect_err("full");
    assert!(matches!(e, VdeError::QuotaExceeded(_)), "{e}");
    let e = v
        .put_object("q", "a", &PutOptions::default(), &mut &data(5, 70_001)[..])
        .expect_err("one byte over");
    assert!(matches!(e, VdeError::QuotaExceeded(_)), "{e}");
    assert_eq!(
        read_all(v.get_object("q", "a", None).expect("a").1),
        data(3, 70_000)
    );
}

/// Goal: a copy never leaves plaintext data in a container whose policy requires encryption.
/// Method: copy from a Speed bucket (plain) into a Standard bucket (encrypted): the copy is
/// written anew (the destination is charged its own stored bytes); a copy into another plain
/// bucket shares the data.
#[test]
fn copies_into_encrypted_buckets_are_encrypted() {
    use dw_vde::Profile;
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    let with = |p| ContainerSpec {
        policy: Policy {
            profile: Some(p),
            ..Policy::default()
        },
        ..bucket()
    };
    v.create_container("plain", &with(Profile::Speed))
        .expect("plain");
    v.create_container("plain2", &with(Profile::Speed))
        .expect("plain2");
    v.create_container("secure", &with(Profile::Standard))
        .expect("secure");
    let body = data(9, 200_000);
    put(&v, "plain", "x", &body);
    v.copy_object("plain", "x", "plain2", "x", None)
        .expect("copy");
    assert_eq!(v.container("plain2").expect("c").stored_bytes, 0, "shared");
    v.copy_object("plain", "x", "secure", "x", None)
        .expect("copy");
    assert!(
        v.container("secure").expect("c").stored_bytes >= 200_000,
        "written anew, encrypted"
    );
    assert_eq!(
        read_all(v.get_object("secure", "x", None).expect("get").1),
        body
    );
}
