//! Every level against a byte-exact model: random aligned reads and writes, then every
//! combination of up to the level's tolerance of failed members (at run time and missing at
//! assembly) must read back byte-exact; one more failure must give the clear offline error —
//! never garbage — and must write nothing.
// Test sizes are a few MiB on a 64-bit host: u64 -> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{
    CONFIGS, MIB, Rig, combinations, random_data, random_write, read_all, rng, sizes, spec,
};
use dw_blockdev::{BlockDev, FaultConfig};
use dw_raid::{Array, ArrayIoError, ArrayState, AssembleOptions, Level};
use rand::Rng;

const MEMBER: u64 = 3 * MIB;
const CHUNK: u32 = 8192;

/// Builds an array, drives random I/O against the model, closes it cleanly; returns the rig
/// and the model.
fn populate(level: Level, n: usize, seed: u64) -> (Rig, Vec<u8>) {
    let rig = Rig::new(&sizes(level, n, MEMBER));
    let a = Array::create(&rig.devs, &[], &spec(level, CHUNK)).expect("create");
    let g = a.geometry();
    let mut model = vec![0u8; a.size() as usize];
    let mut r = rng(seed);
    for op in 0..160 {
        match r.random_range(0..10) {
            0..=5 => {
                let (off, len) = random_write(&mut r, &g);
                let data = random_data(&mut r, len);
                a.write(off, &data).expect("write");
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            6..=8 => {
                let (off, len) = random_write(&mut r, &g);
                let mut buf = vec![0u8; len as usize];
                a.read(off, &mut buf).expect("read");
                assert!(
                    buf == model[off as usize..(off + len) as usize],
                    "{level} n={n} seed={seed} op={op}: read {off}+{len} differs from the model"
                );
            }
            _ => a.flush().expect("flush"),
        }
    }
    assert!(
        read_all(&a).expect("read all") == model,
        "{level} n={n}: full read differs"
    );
    a.close().expect("close");
    (rig, model)
}

fn tolerance(level: Level, n: usize) -> usize {
    level.tolerance(n, if level == Level::Raid1 { n } else { 2 })
}

#[test]
fn every_level_survives_every_tolerated_failure_combination() {
    for &(level, n) in CONFIGS {
        let (rig, model) = populate(level, n, 1000 + n as u64);
        let tol = tolerance(level, n);
        for k in 1..=tol {
            for failed in combinations(n, k) {
                // Failure at run time.
                let clones = rig.clone_mems();
                let r = Rig::over(&clones, FaultConfig::default(), None);
                let asm =
                    Array::assemble(r.devs.clone(), &AssembleOptions::default()).expect("assemble");
                let a = asm.array;
                for &f in &failed {
                    r.handles[f].fail_device("pulled by the test");
                }
                let got =
                    read_all(&a).unwrap_or_else(|e| panic!("{level} n={n} failed={failed:?}: {e}"));
                assert!(
                    got == model,
                    "{level} n={n} failed={failed:?}: degraded read differs"
                );
                // Degraded writes keep working and read back.
                let g = a.geometry();
                let mut m2 = model.clone();
                let mut rr = rng(7);
                for _ in 0..10 {
                    let (off, len) = random_write(&mut rr, &g);
                    let d = random_data(&mut rr, len);
                    a.write(off, &d).expect("degraded write");
                    m2[off as usize..(off + len) as usize].copy_from_slice(&d);
                }
                assert!(
                    read_all(&a).expect("read") == m2,
                    "{level} n={n} {failed:?}: degraded writes"
                );
                a.flush().expect("flush");
                assert_eq!(
                    a.status().state,
                    ArrayState::Degraded,
                    "{level} n={n} {failed:?}"
                );
                drop(a);

                // Missing at assembly.
                let clones = rig.clone_mems();
                let r = Rig::over(&clones, FaultConfig::default(), None);
                let present: Vec<_> = (0..n)
                    .filter(|i| !failed.contains(i))
                    .map(|i| r.devs[i].clone())
                    .collect();
                let asm = Array::assemble(present, &AssembleOptions::default())
                    .expect("degraded assembly");
                assert!(
                    read_all(&asm.array).expect("read") == model,
                    "{level} n={n} missing={failed:?}"
                );
            }
        }
        // One failure beyond the tolerance: the offline error, never data, and no writes.
        if tol < n {
            let clones = rig.clone_mems();
            let r = Rig::over(&clones, FaultConfig::default(), None);
            let a = Array::assemble(r.devs.clone(), &AssembleOptions::default())
                .expect("assemble")
                .array;
            let fail: Vec<usize> = if matches!(level, Level::Raid10) {
                // Both copies of chunk 0.
                let (copies, _) = a.layout().mirror_copies(0);
                copies.iter().map(|c| c.0).collect()
            } else {
                (0..=tol).collect()
            };
            for &f in &fail {
                r.handles[f].fail_device("pulled by the test");
            }
            let before: Vec<Vec<u8>> = clones
                .iter()
                .map(|m| {
                    dw_blockdev::read_vec(m.as_ref(), 0, m.info().size as usize).expect("read")
                })
                .collect();
            let mut buf = vec![0u8; 4096 * 4];
            // The first read may be what discovers the failures.
            let _ = a.read(0, &mut buf);
            let _ = a.read(a.size() - 16384, &mut buf);
            assert!(
                matches!(a.read(0, &mut buf), Err(ArrayIoError::Offline { .. })),
                "{level} n={n}: read past tolerance must be refused"
            );
            let g = a.geometry();
            let w = if g.full_stripe_only {
                g.stripe_bytes
            } else {
                4096
            };
            let off = if g.full_stripe_only {
                g.small_write_end
            } else {
                0
            };
            assert!(
                matches!(
                    a.write(off, &vec![0xEE; w as usize]),
                    Err(ArrayIoError::Offline { .. })
                ),
                "{level} n={n}: write past tolerance must be refused"
            );
            assert_eq!(a.status().state, ArrayState::Offline);
            // Nothing reached the surviving members' data regions after going offline (the
            // superblocks may record the failures).
            let data_offset = 2 * MIB; // data starts at 1 or 2 MiB on these members
            for (i, m) in clones.iter().enumerate() {
                if fail.contains(&i) {
                    continue;
                }
                let after =
                    dw_blockdev::read_vec(m.as_ref(), 0, m.info().size as usize).expect("read");
                let end = m.info().size as usize - 64 * 1024;
                assert!(
                    after[data_offset as usize..end] == before[i][data_offset as usize..end],
                    "{level} n={n}: member {i} data changed while offline"
                );
            }
        }
    }
}

#[test]
fn assembly_rejects_stale_foreign_and_insufficient_members() {
    // A RAID-5 of 4; member 3 fails and is replaced; the old member 3 comes back.
    let rig = Rig::new(&[MEMBER; 4]);
    let spare = Rig::new(&[MEMBER]);
    let a = Array::create(&rig.devs[..3], &[], &spec(Level::Raid5, CHUNK)).expect("create");
    a.add_spare(spare.devs[0].clone()).expect("spare");
    a.set_auto_rebuild(false);
    let data = vec![0x5A; 64 * 1024];
    a.write(0, &data).expect("write");
    a.flush().expect("flush");
    rig.handles[2].fail_device("dies");
    let mut buf = vec![0u8; 64 * 1024];
    a.read(0, &mut buf).expect("degraded read");
    assert_eq!(buf, data);
    rig.handles[2].revive();
    let a_uuid = a.uuid();
    a.close().expect("close");
    // Everything, including the stale member and a device of another array.
    let other = Rig::new(&[MEMBER; 3]);
    Array::create(&other.devs, &[], &spec(Level::Raid5, CHUNK))
        .expect("other array")
        .close()
        .expect("close");
    let blank = Rig::new(&[MEMBER]);
    let mut devs = rig.devs[..3].to_vec();
    devs.push(spare.devs[0].clone());
    devs.push(other.devs[0].clone());
    devs.push(blank.devs[0].clone());
    let opts = AssembleOptions {
        array: Some(a_uuid),
        ..AssembleOptions::default()
    };
    let asm = Array::assemble(devs, &opts).expect("assemble");
    let reasons: Vec<String> = asm
        .rejected
        .iter()
        .map(|r| format!("{}: {}", r.device, r.reason))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("marked failed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("another array")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no array superblock")),
        "{reasons:?}"
    );
    asm.array.read(0, &mut buf).expect("read");
    assert_eq!(buf, data);
    drop(asm);
    // Too few members: a clear error naming what is missing.
    let err = Array::assemble(vec![rig.devs[0].clone()], &AssembleOptions::default())
        .expect_err("must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot start") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn mixed_sizes_use_the_smallest_and_limits_are_errors() {
    let rig = Rig::new(&[3 * MIB, 4 * MIB, 5 * MIB]);
    let a = Array::create(&rig.devs, &[], &spec(Level::Raid5, CHUNK)).expect("create");
    let small = Rig::new(&[3 * MIB; 3]);
    let b = Array::create(&small.devs, &[], &spec(Level::Raid5, CHUNK)).expect("create");
    assert_eq!(a.size(), b.size(), "the smallest member decides");
    let plan = dw_raid::plan::capacity(Level::Raid5, &[3 * MIB, 4 * MIB, 5 * MIB], 0, 0);
    assert!(
        plan.is_some_and(|(_, waste)| waste >= 3 * MIB - 64 * 1024),
        "waste reported"
    );
    // The running array reports the same waste as the planner; equal members waste nothing.
    assert_eq!(Some(a.status().wasted_bytes), plan.map(|p| p.1));
    assert_eq!(b.status().wasted_bytes, 0);
    let two = Rig::new(&[MEMBER; 2]);
    let e = Array::create(&two.devs, &[], &spec(Level::Raid6, CHUNK)).expect_err("too few");
    assert!(e.to_string().contains("at least 4"), "{e}");
    let tiny = Rig::new(&[MIB, MEMBER, MEMBER]);
    let e = Array::create(&tiny.devs, &[], &spec(Level::Raid5, CHUNK)).expect_err("too small");
    assert!(e.to_string().contains("too small"), "{e}");
    let z = Rig::new(&[MEMBER; 4]);
    let z = Array::create(&z.devs, &[], &spec(Level::RaidZ2, CHUNK)).expect("create");
    let g = z.geometry();
    let e = z
        .write(g.small_write_end, &vec![0; 4096])
        .expect_err("partial stripe on Z");
    assert!(matches!(e, ArrayIoError::NotFullStripe { .. }), "{e}");
    z.write(0, &vec![1; 4096])
        .expect("small-write region takes 4 KiB");
    let mut b = vec![0u8; 100];
    assert!(matches!(
        z.read(1, &mut b),
        Err(ArrayIoError::Misaligned { .. })
    ));
    assert!(matches!(
        z.read(g.size, &mut vec![0; 4096]),
        Err(ArrayIoError::OutOfRange { .. })
    ));
}

/// Rewrites both superblock copies of `dev` with `edit` applied (checksums recomputed).
fn rewrite_superblock(dev: &dyn BlockDev, edit: impl Fn(&mut dw_raid::superblock::Superblock)) {
    let mut sb = Array::read_superblock(dev).expect("superblock");
    edit(&mut sb);
    let b = sb.encode();
    dev.write_at(&b, dw_raid::superblock::SB_PRIMARY)
        .expect("primary");
    dev.write_at(&b, dw_raid::superblock::backup_offset(dev.info().size))
        .expect("backup");
}

#[test]
fn assembly_rejection_cases_each_name_their_reason() {
    let rig = Rig::new(&[MEMBER; 3]);
    let a = Array::create(&rig.devs, &[], &spec(Level::Raid5, CHUNK)).expect("create");
    let data = vec![0x77; 32 * 1024];
    a.write(0, &data).expect("write");
    a.close().expect("close");
    let generation = Array::read_superblock(rig.devs[0].as_ref())
        .expect("sb")
        .generation;
    let clone = |i: usize, id: &str| -> std::sync::Arc<dyn BlockDev> {
        std::sync::Arc::new(rig.mems[i].deep_clone(id))
    };
    // A member removed earlier: this array's superblock, but a member the table does not know.
    let removed = clone(0, "removed");
    rewrite_superblock(removed.as_ref(), |sb| {
        sb.member_uuid = uuid::Uuid::new_v4();
        sb.generation = sb.generation.saturating_sub(1);
    });
    // A cloned disk: the same member UUID twice.
    let cloned = clone(1, "cloned");
    // A geometry that disagrees with the newest superblock.
    let other_geometry = clone(2, "other-geometry");
    rewrite_superblock(other_geometry.as_ref(), |sb| {
        sb.chunk *= 2;
        sb.generation -= 1;
    });
    // Member 2 itself one commit behind (an interrupted update): accepted and refreshed.
    rewrite_superblock(rig.devs[2].as_ref(), |sb| sb.generation -= 1);
    let mut devs = rig.devs.clone();
    devs.extend([removed, cloned, other_geometry]);
    let asm = Array::assemble(devs, &AssembleOptions::default()).expect("assemble");
    let reason = |id: &str| {
        asm.rejected
            .iter()
            .find(|r| r.device == id)
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{id} not rejected: {:?}", asm.rejected))
    };
    assert!(
        reason("removed").contains("removed earlier"),
        "{}",
        reason("removed")
    );
    assert!(
        reason("cloned").contains("duplicate"),
        "{}",
        reason("cloned")
    );
    assert!(
        reason("other-geometry").contains("different geometry"),
        "{}",
        reason("other-geometry")
    );
    assert_eq!(asm.rejected.len(), 3, "{:?}", asm.rejected);
    assert!(
        asm.notes.iter().any(|n| n.contains("behind")),
        "{:?}",
        asm.notes
    );
    assert_eq!(asm.array.status().state, ArrayState::Healthy);
    let mut b = vec![0u8; data.len()];
    asm.array.read(0, &mut b).expect("read");
    assert_eq!(b, data);
    // Refreshed: every member now carries the same, newer generation.
    let gens: Vec<u64> = rig
        .devs
        .iter()
        .map(|d| Array::read_superblock(d.as_ref()).expect("sb").generation)
        .collect();
    assert!(
        gens.iter().all(|&g| g == gens[0] && g > generation),
        "{gens:?}"
    );
}

#[test]
fn a_damaged_primary_superblock_is_read_from_the_backup_and_rewritten() {
    let rig = Rig::new(&[MEMBER; 4]);
    let a = Array::create(&rig.devs, &[], &spec(Level::Raid6, CHUNK)).expect("create");
    let data = vec![0x42; 64 * 1024];
    a.write(0, &data).expect("write");
    a.close().expect("close");
    let sb_at = dw_raid::superblock::SB_PRIMARY;
    rig.handles[1].corrupt(sb_at, 4096, 7).expect("corrupt");
    let raw = |i: usize| dw_blockdev::read_vec(rig.mems[i].as_ref(), sb_at, 4096).expect("read");
    assert!(
        dw_raid::superblock::Superblock::decode(&raw(1)).is_err(),
        "the primary copy is damaged"
    );
    let asm = Array::assemble(rig.devs.clone(), &AssembleOptions::default()).expect("assemble");
    assert!(asm.rejected.is_empty(), "{:?}", asm.rejected);
    assert_eq!(asm.array.status().state, ArrayState::Healthy);
    let fixed = dw_raid::superblock::Superblock::decode(&raw(1)).expect("primary rewritten");
    let other = dw_raid::superblock::Superblock::decode(&raw(0)).expect("member 0");
    assert_eq!(fixed.generation, other.generation);
    let mut b = vec![0u8; data.len()];
    asm.array.read(0, &mut b).expect("read");
    assert_eq!(b, data);
}
