//! Silent corruption, media errors, rebuilds and replacements.
// Test sizes are a few MiB on a 64-bit host: u64 -> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CONFIGS, MIB, Rig, random_data, random_write, read_all, rng, sizes, spec};
use dw_blockdev::Rule;
use dw_raid::{Array, ArrayState, AssembleOptions, JobKind, Level, MemberState, ScrubOptions};
use rand::Rng;

const MEMBER: u64 = 3 * MIB;
const CHUNK: u32 = 8192;

fn filled(level: Level, n: usize, seed: u64) -> (Rig, Array, Vec<u8>) {
    let rig = Rig::new(&sizes(level, n, MEMBER));
    let a = Array::create(&rig.devs, &[], &spec(level, CHUNK)).expect("create");
    let g = a.geometry();
    let mut model = vec![0u8; a.size() as usize];
    let mut r = rng(seed);
    // Cover everything: the small-write region in 4 KiB pieces, stripes whole.
    let mut off = 0;
    while off < g.size {
        let len = if off < g.small_write_end {
            (64 * 1024).min(g.small_write_end - off)
        } else {
            g.stripe_bytes
        };
        let d = random_data(&mut r, len);
        a.write(off, &d).expect("write");
        model[off as usize..(off + len) as usize].copy_from_slice(&d);
        off += len;
    }
    a.flush().expect("flush");
    (rig, a, model)
}

/// Data-region offset on the members (the same for every member of an array).
fn data_offset(rig: &Rig) -> u64 {
    let sb = Array::read_superblock(rig.devs[0].as_ref()).expect("superblock");
    sb.data_offset
}

#[test]
fn scrub_repairs_or_reports_silent_corruption() {
    for &(level, n) in CONFIGS {
        if level.tolerance(n, 2) == 0 {
            continue;
        }
        let (rig, a, model) = filled(level, n, 5);
        let d0 = data_offset(&rig);
        let l = a.layout().clone();
        // Flip bits in exactly one place per logical unit: one copy of each of the first
        // mirrored chunks, one shard of each of the first stripes.
        let mut r = rng(n as u64);
        let mut targets = Vec::new();
        let mirror_chunks = a.geometry().small_write_end.min(if l.p() > 0 {
            l.mirror_bytes()
        } else {
            u64::MAX
        }) / l.chunk;
        for c in 0..mirror_chunks.min(16) {
            let (copies, _) = l.mirror_copies(c * l.chunk);
            let (role, base) = copies[c as usize % copies.len()];
            targets.push((role, base / l.chunk));
        }
        for s in 0..l.stripes().min(16) {
            targets.push(((s as usize * 3) % n, l.stripe_row(s)));
        }
        for (role, row) in targets {
            let within = r.random_range(0..l.chunk / 4096) * 4096;
            rig.handles[role]
                .corrupt(d0 + row * l.chunk + within, 4096, 3)
                .expect("corrupt");
        }
        let locates = level.parity() >= 2 || (matches!(level, Level::Raid1) && n >= 3);
        let rep = a
            .scrub(&ScrubOptions {
                repair: true,
                ..ScrubOptions::default()
            })
            .expect("scrub");
        assert!(
            rep.mismatches > 0,
            "{level} n={n}: corruption not detected: {rep:?}"
        );
        if locates {
            assert!(
                rep.unrepaired.is_empty(),
                "{level} n={n}: {:?}",
                rep.unrepaired
            );
            assert!(!rep.repaired.is_empty(), "{level} n={n}");
            assert!(
                read_all(&a).expect("read") == model,
                "{level} n={n}: data after repair"
            );
        } else {
            // Single redundancy cannot say which copy is right: reported, and the layer above
            // (which has checksums) heals through the alternatives.
            assert!(
                !rep.unrepaired.is_empty(),
                "{level} n={n}: ambiguity must be reported"
            );
            assert!(
                rep.unrepaired.iter().all(|f| f.detail.contains("cannot")),
                "{:?}",
                rep.unrepaired
            );
            let got = read_all(&a).expect("read");
            for blk in 0..got.len() / 4096 {
                let range = blk * 4096..(blk + 1) * 4096;
                if got[range.clone()] == model[range.clone()] {
                    continue;
                }
                let alts = a
                    .read_alternatives(range.start as u64, 4096)
                    .expect("alternatives");
                let good = alts
                    .iter()
                    .find(|x| x.data[..] == model[range.clone()])
                    .unwrap_or_else(|| panic!("{level} n={n}: no alternative matches block {blk}"));
                a.repair_range(range.start as u64, &good.data)
                    .expect("repair");
            }
            // Parity-only damage: rewrite each reported stripe from its verified data.
            for f in &rep.unrepaired {
                let len = if f.offset < a.geometry().small_write_end {
                    l.chunk
                } else {
                    a.geometry().stripe_bytes
                };
                let good = &model[f.offset as usize..(f.offset + len) as usize];
                a.repair_range(f.offset, good).expect("repair stripe");
            }
            assert!(
                read_all(&a).expect("read") == model,
                "{level} n={n}: data after heal"
            );
        }
        let again = a.scrub(&ScrubOptions::default()).expect("scrub");
        assert_eq!(
            again.mismatches, 0,
            "{level} n={n}: still inconsistent: {again:?}"
        );
    }
}

#[test]
fn media_read_errors_are_rewritten_from_redundancy() {
    for (level, n) in [(Level::Raid1, 2), (Level::Raid5, 4), (Level::RaidZ2, 5)] {
        let (rig, a, model) = filled(level, n, 9);
        let d0 = data_offset(&rig);
        // One unreadable sector per member, once.
        for (i, h) in rig.handles.iter().enumerate() {
            let at = d0 + (a.layout().mirror_rows + i as u64 + 2) * a.layout().chunk;
            h.fail_reads(
                Rule::Range {
                    start: at,
                    end: at + 4096,
                },
                Some(1),
            );
        }
        assert!(
            read_all(&a).expect("read") == model,
            "{level}: reads around media errors"
        );
        let st = a.status();
        assert_eq!(
            st.state,
            ArrayState::Healthy,
            "{level}: media errors must not fail members"
        );
        assert!(
            st.counters.read_errors_repaired >= 1,
            "{level}: {:?}",
            st.counters
        );
        assert!(read_all(&a).expect("read") == model);
    }
}

#[test]
fn rebuild_under_load_survives_a_restart_halfway() {
    for (level, n) in [
        (Level::Raid6, 5),
        (Level::RaidZ2, 5),
        (Level::Raid10, 4),
        (Level::Raid5, 3),
    ] {
        let (rig, a, model) = filled(level, n, 11);
        let spare = Rig::new(&[MEMBER]);
        a.set_auto_rebuild(true);
        a.add_spare(spare.devs[0].clone()).expect("spare");
        let model = Arc::new(Mutex::new(model));
        let a = Arc::new(a);
        let stop = Arc::new(AtomicBool::new(false));
        // Slow the rebuild so the test sees it half done; then nearly park it (one row per
        // half second) so the restart lands in the middle of it however slow this machine is.
        a.set_throttle(MIB);
        let writer = {
            let (a, model, stop) = (a.clone(), model.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = rng(3);
                let g = a.geometry();
                while !stop.load(Ordering::Relaxed) {
                    let (off, len) = random_write(&mut r, &g);
                    let d = random_data(&mut r, len);
                    let mut m = model.lock().expect("model");
                    a.write(off, &d).expect("write during rebuild");
                    m[off as usize..(off + len) as usize].copy_from_slice(&d);
                    drop(m);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let reader = {
            let (a, model, stop) = (a.clone(), model.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = rng(4);
                let g = a.geometry();
                while !stop.load(Ordering::Relaxed) {
                    let (off, len) = random_write(&mut r, &g);
                    let m = model.lock().expect("model");
                    let mut b = vec![0u8; len as usize];
                    a.read(off, &mut b).expect("read during rebuild");
                    assert!(
                        b == m[off as usize..(off + len) as usize],
                        "read during rebuild differs"
                    );
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        rig.handles[1].fail_device("dies under load");
        // Wait for the rebuild to be under way and past a checkpoint.
        let t0 = Instant::now();
        loop {
            let st = a.status();
            let rebuilt = st.members.iter().find_map(|m| match m.state {
                MemberState::Rebuilding {
                    done_bytes,
                    total_bytes,
                } => Some((done_bytes, total_bytes)),
                _ => None,
            });
            if let Some((d, t)) = rebuilt
                && d * 2 > t
            {
                a.set_throttle(1);
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{level}: rebuild did not progress: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        reader.join().expect("reader");
        a.flush().expect("flush");
        let model = model.lock().expect("model").clone();
        // "Restart": drop without a clean shutdown, reassemble every device.
        let a = Arc::try_unwrap(a).expect("sole owner");
        drop(a);
        let mut devs = rig.devs.clone();
        devs.push(spare.devs[0].clone());
        rig.handles[1].revive();
        let asm = Array::assemble(devs, &AssembleOptions::default()).expect("reassemble");
        assert!(
            asm.notes.iter().any(|n| n.contains("resuming the rebuild")),
            "{level}: {:?}",
            asm.notes
        );
        assert!(
            asm.rejected
                .iter()
                .any(|r| r.reason.contains("marked failed")),
            "{:?}",
            asm.rejected
        );
        let a = asm.array;
        match a.job() {
            Some(j) => {
                assert!(matches!(j.kind, JobKind::Rebuild { role: 1, .. }), "{j:?}");
                assert!(j.done_bytes > 0, "{level}: the rebuild restarted from zero");
            }
            None => panic!("{level}: no rebuild job after restart"),
        }
        a.set_throttle(0);
        a.wait_idle();
        assert_eq!(
            a.status().state,
            ArrayState::Healthy,
            "{level}: {:?}",
            a.status()
        );
        assert!(
            read_all(&a).expect("read") == model,
            "{level}: data after rebuild"
        );
        // The rebuilt member holds real data: lose another member and read everything.
        rig.handles[0].fail_device("second failure");
        assert!(
            read_all(&a).expect("read") == model,
            "{level}: data relies on the rebuilt member"
        );
    }
}

#[test]
fn proactive_replacement_swaps_members_without_degrading() {
    let (rig, a, model) = filled(Level::RaidZ2, 5, 13);
    let new = Rig::new(&[MEMBER]);
    a.replace_member(2, Some(new.devs[0].clone()))
        .expect("replace");
    assert_eq!(
        a.status().state,
        ArrayState::Healthy,
        "the old member keeps serving"
    );
    a.wait_idle();
    let st = a.status();
    assert_eq!(st.state, ArrayState::Healthy);
    assert!(
        st.members
            .iter()
            .any(|m| m.role == Some(2) && m.device.as_deref() == Some(new.devs[0].info_id()))
    );
    assert!(read_all(&a).expect("read") == model);
    a.close().expect("close");
    // The replaced device is refused at the next assembly; the new one serves.
    let asm = Array::assemble(
        rig.devs
            .iter()
            .cloned()
            .chain(new.devs.iter().cloned())
            .collect(),
        &AssembleOptions::default(),
    )
    .expect("assemble");
    assert!(
        asm.rejected.iter().any(|r| r.reason.contains("replaced")),
        "{:?}",
        asm.rejected
    );
    rig.handles[0].fail_device("and one more");
    rig.handles[1].fail_device("and one more");
    assert!(
        read_all(&asm.array).expect("read") == model,
        "two failures after the swap"
    );
}

#[test]
fn concurrent_writers_on_different_stripes() {
    let (_rig, a, model) = filled(Level::Raid6, 6, 21);
    let a = Arc::new(a);
    let g = a.geometry();
    let stripes = g.size / g.stripe_bytes;
    let model = Arc::new(Mutex::new(model));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (a, model) = (a.clone(), model.clone());
            std::thread::spawn(move || {
                let mut r = rng(100 + t);
                for _ in 0..150 {
                    // Each thread owns the stripes congruent to t mod 4.
                    let s = r.random_range(0..stripes / 4) * 4 + t;
                    let within = r.random_range(0..g.stripe_bytes / 4096) * 4096;
                    let len = r.random_range(1..=(g.stripe_bytes - within) / 4096) * 4096;
                    let off = s * g.stripe_bytes + within;
                    let d = random_data(&mut r, len);
                    a.write(off, &d).expect("write");
                    model.lock().expect("m")[off as usize..(off + len) as usize]
                        .copy_from_slice(&d);
                    if r.random_bool(0.1) {
                        a.flush().expect("flush");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let m = model.lock().expect("m").clone();
    assert!(read_all(&a).expect("read") == m);
    let rep = a.scrub(&ScrubOptions::default()).expect("scrub");
    assert_eq!(
        rep.mismatches, 0,
        "parity consistent after concurrent RMW: {rep:?}"
    );
}

trait InfoId {
    fn info_id(&self) -> &str;
}

impl InfoId for Arc<dyn dw_blockdev::BlockDev> {
    fn info_id(&self) -> &str {
        &self.info().id
    }
}

/// Waits until some member is being rebuilt and has made progress.
fn wait_for_rebuild_progress(a: &Array, what: &str) {
    let t0 = Instant::now();
    loop {
        let st = a.status();
        let progress = st.members.iter().any(
            |m| matches!(m.state, MemberState::Rebuilding { done_bytes, .. } if done_bytes > 0),
        );
        if progress {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what}: no rebuild under way: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_failure_during_a_rebuild_is_rebuilt_onto_the_next_spare() {
    // RAID-6: member 1 fails and rebuilds onto spare A; while that runs, member 3 fails. When
    // the first rebuild ends, the second must start onto spare B on its own.
    let (rig, a, model) = filled(Level::Raid6, 5, 17);
    let spares = Rig::new(&[MEMBER, MEMBER]);
    a.set_auto_rebuild(true);
    // Nearly parked (one row per half second) until the second failure is in.
    a.set_throttle(1);
    a.add_spare(spares.devs[0].clone()).expect("spare A");
    a.add_spare(spares.devs[1].clone()).expect("spare B");
    rig.handles[1].fail_device("first failure");
    let mut b = vec![0u8; 4096];
    for off in (0..a.size()).step_by(64 * 1024) {
        a.read(off, &mut b).expect("degraded read");
    }
    wait_for_rebuild_progress(&a, "first");
    rig.handles[3].fail_device("second failure, during the rebuild");
    for off in (0..a.size()).step_by(64 * 1024) {
        a.read(off, &mut b).expect("doubly degraded read");
    }
    a.set_throttle(0);
    a.wait_idle();
    let st = a.status();
    assert_eq!(st.state, ArrayState::Healthy, "{st:?}");
    for sp in &spares.devs {
        assert!(
            st.members
                .iter()
                .any(|m| m.role.is_some() && m.device.as_deref() == Some(sp.info_id())),
            "spare {} not in a role: {st:?}",
            sp.info_id()
        );
    }
    assert!(read_all(&a).expect("read") == model);
    // Both rebuilt members hold real data: lose two of the original ones.
    rig.handles[0].fail_device("third");
    rig.handles[2].fail_device("fourth");
    assert!(
        read_all(&a).expect("read") == model,
        "data relies on both spares"
    );
}

#[test]
fn a_spare_dying_mid_rebuild_is_replaced_by_the_next_spare() {
    let (rig, a, model) = filled(Level::Raid5, 4, 19);
    let spares = Rig::new(&[MEMBER, MEMBER]);
    a.set_auto_rebuild(true);
    // Nearly parked (one row per half second) until the second failure is in.
    a.set_throttle(1);
    a.add_spare(spares.devs[0].clone()).expect("spare A");
    a.add_spare(spares.devs[1].clone()).expect("spare B");
    rig.handles[0].fail_device("member fails");
    let mut b = vec![0u8; 4096];
    a.read(0, &mut b).expect("degraded read");
    wait_for_rebuild_progress(&a, "onto spare A");
    spares.handles[0].fail_device("the spare being rebuilt dies");
    a.set_throttle(0);
    a.wait_idle();
    let st = a.status();
    assert_eq!(st.state, ArrayState::Healthy, "{st:?}");
    assert!(
        st.members
            .iter()
            .any(|m| m.role == Some(0) && m.device.as_deref() == Some(spares.devs[1].info_id())),
        "spare B took role 0: {st:?}"
    );
    assert!(read_all(&a).expect("read") == model);
    rig.handles[2].fail_device("and another");
    assert!(
        read_all(&a).expect("read") == model,
        "data relies on spare B"
    );
}

#[test]
fn rebuild_rate_after_a_restart_counts_only_this_run() {
    // A rebuild resumed at assembly reports done bytes including the earlier run, but its
    // rate only from this run: with the throttle at 4 MiB/s it can never exceed about that.
    let (rig, a, _model) = filled(Level::RaidZ2, 5, 23);
    let spare = Rig::new(&[MEMBER]);
    a.set_auto_rebuild(true);
    a.set_throttle(4 * MIB);
    a.add_spare(spare.devs[0].clone()).expect("spare");
    rig.handles[2].fail_device("dies");
    read_all(&a).expect("read (notices the failure)");
    let t0 = Instant::now();
    loop {
        let j = a.job().expect("job");
        if j.done_bytes * 2 > j.total_bytes {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{j:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    a.flush().expect("flush");
    drop(a);
    rig.handles[2].revive();
    let mut devs = rig.devs.clone();
    devs.push(spare.devs[0].clone());
    // Slow enough that the bytes of the earlier run would dominate a whole-job average
    // (more than 1 MiB in 0.6 s), fast enough to show a rate. The throttle is given to
    // assembly: set afterwards, the resumed job would run unthrottled until then.
    let asm = Array::assemble(
        devs,
        &AssembleOptions {
            throttle_bytes_per_sec: MIB / 2,
            ..AssembleOptions::default()
        },
    )
    .expect("reassemble");
    let a = asm.array;
    std::thread::sleep(Duration::from_millis(600));
    let j = a.job().expect("resumed job");
    assert!(j.done_bytes * 2 > j.total_bytes, "{j:?}");
    assert!(
        j.rate_bytes_per_sec > 0.0 && j.rate_bytes_per_sec < f64::from(1u32 << 20),
        "rate {} B/s must be this run's (about 512 KiB/s): {j:?}",
        j.rate_bytes_per_sec
    );
    assert!(j.eta_secs.is_some(), "{j:?}");
    a.set_throttle(0);
    a.wait_idle();
    assert_eq!(a.status().state, ArrayState::Healthy);
}

#[test]
fn replacing_members_many_times_prunes_the_member_table() {
    // Every replacement adds an entry and fails the old one; the 64-entry table must drop
    // failed entries instead of overflowing (which used to panic inside the commit).
    let rig = Rig::new(&[MEMBER; 2]);
    let a = Array::create(&rig.devs, &[], &spec(Level::Raid1, CHUNK)).expect("create");
    let data = random_data(&mut rng(1), 64 * 1024);
    a.write(0, &data).expect("write");
    let mut news = Vec::new();
    for i in 0..70 {
        let new = Rig::new(&[MEMBER]);
        a.replace_member(i % 2, Some(new.devs[0].clone()))
            .unwrap_or_else(|e| panic!("replacement {i}: {e}"));
        a.wait_idle();
        news.push(new);
    }
    let st = a.status();
    assert_eq!(st.state, ArrayState::Healthy);
    assert!(st.members.len() <= 64, "{} entries", st.members.len());
    let mut b = vec![0u8; data.len()];
    a.read(0, &mut b).expect("read");
    assert_eq!(b, data);
    a.close().expect("close");
    // The last two replacements serve; a long-replaced device (its entry pruned) is refused as
    // removed earlier, a recently replaced one as marked failed.
    let mut devs: Vec<_> = news[68..].iter().map(|r| r.devs[0].clone()).collect();
    devs.push(news[0].devs[0].clone());
    devs.push(news[67].devs[0].clone());
    let asm = Array::assemble(devs, &AssembleOptions::default()).expect("assemble");
    let reasons: Vec<&str> = asm.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("removed earlier")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("marked failed")),
        "{reasons:?}"
    );
    asm.array.read(0, &mut b).expect("read");
    assert_eq!(b, data);
}

#[test]
fn a_full_member_table_is_an_error_not_a_panic() {
    let rig = Rig::new(&[MEMBER; 2]);
    let a = Array::create(&rig.devs, &[], &spec(Level::Raid1, CHUNK)).expect("create");
    a.set_auto_rebuild(false);
    let spares = Rig::new(&[MEMBER; 63]);
    for (i, d) in spares.devs.iter().enumerate().take(62) {
        a.add_spare(d.clone())
            .unwrap_or_else(|e| panic!("spare {i}: {e}"));
    }
    let e = a
        .add_spare(spares.devs[62].clone())
        .expect_err("65th entry");
    assert!(matches!(e, dw_raid::ManageError::TableFull { .. }), "{e}");
    let e = a
        .replace_member(0, Some(spares.devs[62].clone()))
        .expect_err("no room for a replacement either");
    assert!(matches!(e, dw_raid::ManageError::TableFull { .. }), "{e}");
    // Replacing from a spare needs no new entry and works.
    a.replace_member(0, None).expect("replace from a spare");
    a.wait_idle();
    assert_eq!(a.status().state, ArrayState::Healthy);
    a.close().expect("close");
}
