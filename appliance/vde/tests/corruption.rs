//! Corruption: damaged fixed structures are repaired or refused with a clear reason, and
//! flipped bits in data are healed from the array's redundancy — with the good bytes written
//! back to the member that held the bad ones.

// Tests index buffers with small u64 values that always fit.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{ArrayRig, MIB, PlainRig, data, key, read_all};
use dw_blockdev::BlockDev;
use dw_raid::Level;
use dw_vde::format::{REGDIR_A, REGDIR_B, RegionDirectory, RegionKind};
use dw_vde::{ContainerKind, ContainerSpec, FormatOptions, OpenError, PutOptions, Vde};

fn bucket() -> ContainerSpec {
    ContainerSpec {
        kind: ContainerKind::Bucket,
        policy: dw_vde::Policy::default(),
        record_size: None,
    }
}

/// Goal: a damaged region-directory copy is repaired from the other; both damaged refuses
/// with a message naming the region directory. Method: flip bits in copy A, open, check copy A
/// decodes again; then damage both.
#[test]
fn a_damaged_region_directory_copy_is_repaired() {
    let rig = PlainRig::new(128 * MIB);
    let v = rig.format(&FormatOptions::default());
    v.create_container("b", &bucket()).expect("bucket");
    v.put_object("b", "k", &PutOptions::default(), &mut &b"kept"[..])
        .expect("put");
    v.close().expect("close");
    let good = dw_blockdev::read_vec(rig.mem.as_ref(), REGDIR_B, 4096).expect("read");
    rig.fault.corrupt(REGDIR_A, 4096, 8).expect("corrupt");
    let v = rig.open();
    assert_eq!(
        read_all(v.get_object("b", "k", None).expect("get").1),
        b"kept"
    );
    v.close().expect("close");
    let a = dw_blockdev::read_vec(rig.mem.as_ref(), REGDIR_A, 4096).expect("read");
    assert_eq!(a, good, "copy A rewritten from copy B");
    assert!(RegionDirectory::decode(&a, 128 * MIB).is_ok());
    rig.fault.corrupt(REGDIR_A, 4096, 8).expect("corrupt");
    rig.fault.corrupt(REGDIR_B, 4096, 8).expect("corrupt");
    let e = Vde::open(rig.backing.clone(), &key(), &[]).expect_err("both damaged");
    assert!(matches!(e, OpenError::HeaderDamaged { .. }), "{e}");
    assert!(e.to_string().contains("region directory"), "{e}");
}

/// The member and member offset whose copy of `[off, off + 4096)` the array serves reads from,
/// found by damaging each candidate in turn and reading through the array; returns (member,
/// member offset, original bytes) with that copy left damaged.
fn damage_served_copy(rig: &ArrayRig, level: Level, off: u64) -> (usize, u64, Vec<u8>) {
    let sb = dw_raid::Array::read_superblock(rig.mems[0].as_ref()).expect("superblock");
    let chunk = u64::from(sb.chunk);
    let member_off = match level {
        // Mirrors keep chunk c in row c of every member.
        Level::Raid1 => sb.data_offset + off,
        // Parity levels keep stripe s in row s of every member; k data chunks per stripe.
        _ => {
            let k = u64::from(sb.roles) - 2;
            sb.data_offset + off / (k * chunk) * chunk + off % chunk
        }
    };
    let clean = dw_blockdev::read_vec(rig.array.as_ref(), off, 4096).expect("read");
    for (m, mem) in rig.mems.iter().enumerate() {
        let orig = dw_blockdev::read_vec(mem.as_ref(), member_off, 4096).expect("read");
        let mut bad = orig.clone();
        bad[100] ^= 0x5a;
        bad[3000] ^= 0x01;
        mem.write_at(&bad, member_off).expect("write");
        if dw_blockdev::read_vec(rig.array.as_ref(), off, 4096).expect("read") != clean {
            return (m, member_off, orig);
        }
        mem.write_at(&orig, member_off).expect("restore");
    }
    panic!("no member serves array offset {off}");
}

/// Goal: on RAID-1 and RAID-6 (as on RAID-Z2, functional.rs) a read that fails its checksum is
/// healed from redundancy, the event is counted, and the good bytes land on the member that
/// held the bad ones. Method: damage the copy (or data shard) the array serves for the first
/// block of an object, read the object through the VDE, re-read the member.
#[test]
fn heals_on_raid1_and_raid6_and_writes_back() {
    for (level, n, member) in [(Level::Raid1, 2, 96 * MIB), (Level::Raid6, 4, 64 * MIB)] {
        let rig = ArrayRig::new(level, n, member);
        let v =
            Vde::format(rig.backing.clone(), &key(), &FormatOptions::default()).expect("format");
        v.create_container("b", &bucket()).expect("bucket");
        let body = data(11, 256 * 1024);
        v.put_object("b", "k", &PutOptions::default(), &mut &body[..])
            .expect("put");
        v.close().expect("close");
        // The first object is the first extent of the first data segment.
        let rd = dw_blockdev::read_vec(rig.array.as_ref(), REGDIR_A, 4096).expect("read");
        let size = rig.array.info().size;
        let rd = RegionDirectory::decode(&rd, size).expect("regdir");
        let at = rd.get(RegionKind::Data).expect("data").offset;
        let (m, member_off, orig) = damage_served_copy(&rig, level, at);
        let v = Vde::open(rig.backing.clone(), &key(), &[]).expect("open");
        assert_eq!(
            read_all(v.get_object("b", "k", None).expect("get").1),
            body,
            "{level:?}: healed read"
        );
        assert!(
            v.capacity().expect("capacity").healed >= 1,
            "{level:?}: counted"
        );
        let now = dw_blockdev::read_vec(rig.mems[m].as_ref(), member_off, 4096).expect("read");
        assert!(
            now == orig,
            "{level:?}: the good bytes were written back to member {m}"
        );
    }
}
