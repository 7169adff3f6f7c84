//! I/O errors in the middle of array operations, injected with the fault devices at every
//! redundant level: media read errors while a partial-stripe write reads the stripe, write
//! errors and torn writes mid-stripe, and bits flipped on the way back from a member.
//!
//! The contract each test checks: a read error is handled like a degraded read (the member is
//! left out for that operation, the sectors are rewritten from redundancy, and only a member
//! that keeps failing is kicked out); a member that fails a write is failed and the write stands
//! on the others; the array never reports itself offline while redundancy suffices, and the
//! data reads back byte-exact, with redundancy kept for the members left (one more failure within
//! the tolerance still reads everything).
// Test sizes are a few MiB on a 64-bit host: u64 -> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{CONFIGS, MIB, Rig, random_data, random_write, read_all, rng, sizes, spec};
use dw_blockdev::Rule;
use dw_raid::{Array, ArrayState, Level, ScrubOptions};

const MEMBER: u64 = 3 * MIB;
const CHUNK: u32 = 8192;

/// An array with every byte written (small-write region in pieces, stripes whole), flushed.
fn filled(level: Level, n: usize, seed: u64) -> (Rig, Array, Vec<u8>) {
    let rig = Rig::new(&sizes(level, n, MEMBER));
    let a = Array::create(&rig.devs, &[], &spec(level, CHUNK)).expect("create");
    let g = a.geometry();
    let mut model = vec![0u8; a.size() as usize];
    let mut r = rng(seed);
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

fn data_offset(rig: &Rig) -> u64 {
    Array::read_superblock(rig.devs[0].as_ref())
        .expect("superblock")
        .data_offset
}

fn tolerance(level: Level, n: usize) -> usize {
    level.tolerance(n, if level == Level::Raid1 { n } else { 2 })
}

/// Fails `extra` more members (not `skip`) and checks that everything still reads back.
fn still_redundant(rig: &Rig, a: &Array, model: &[u8], skip: &[usize], extra: usize, what: &str) {
    let mut failed = 0;
    for i in 0..rig.devs.len() {
        if failed == extra {
            break;
        }
        if !skip.contains(&i) {
            rig.handles[i].fail_device("one more failure");
            failed += 1;
        }
    }
    assert!(
        read_all(a).unwrap_or_else(|e| panic!("{what}: {e}")) == model,
        "{what}: data after {extra} more failures"
    );
}

#[test]
fn read_errors_during_partial_stripe_writes_are_handled_like_degraded_reads() {
    // RAID-5 of 3 and RAID-6 of 4 update a 4 KiB piece by reconstruct-write (they read the
    // other data shards); RAID-5 of 5 and RAID-6 of 6 by read-modify-write (they read the old
    // data and the parity). A read error on any member must neither fail the write nor the
    // member nor, above all, be reported as the array going offline.
    for (level, n) in [
        (Level::Raid5, 3),
        (Level::Raid5, 5),
        (Level::Raid6, 4),
        (Level::Raid6, 6),
    ] {
        let (rig, a, mut model) = filled(level, n, 31 + n as u64);
        let d0 = data_offset(&rig);
        let l = a.layout().clone();
        let mut r = rng(n as u64);
        let before = a.status().counters.read_errors_repaired;
        for role in 0..n {
            // One stripe per role, so that each case starts from a clean stripe.
            let s = 3 + role as u64;
            let row = l.stripe_row(s);
            let at = d0 + row * l.chunk;
            rig.handles[role].fail_reads(
                Rule::Range {
                    start: at,
                    end: at + 4096,
                },
                Some(1),
            );
            let off = l.stripe_start(s);
            let d = random_data(&mut r, 4096);
            a.write(off, &d)
                .unwrap_or_else(|e| panic!("{level} n={n} role {role}: write failed: {e}"));
            model[off as usize..off as usize + 4096].copy_from_slice(&d);
        }
        let st = a.status();
        assert_eq!(
            st.state,
            ArrayState::Healthy,
            "{level} n={n}: one read error must not fail a member: {st:?}"
        );
        assert!(
            st.counters.read_errors_repaired > before,
            "{level} n={n}: no read error was met or repaired: {:?}",
            st.counters
        );
        assert!(read_all(&a).expect("read") == model, "{level} n={n}: data");
        let rep = a.scrub(&ScrubOptions::default()).expect("scrub");
        assert_eq!(rep.mismatches, 0, "{level} n={n}: parity after the writes");
        still_redundant(
            &rig,
            &a,
            &model,
            &[],
            tolerance(level, n),
            &format!("{level} n={n}"),
        );
    }
}

#[test]
fn a_member_that_keeps_failing_reads_is_kicked_out_and_writes_go_on() {
    for (level, n) in [(Level::Raid5, 3), (Level::Raid6, 6)] {
        let (rig, a, mut model) = filled(level, n, 41);
        let d0 = data_offset(&rig);
        // Every read of member 1's data region fails, forever (a dying drive).
        rig.handles[1].fail_reads(
            Rule::Range {
                start: d0,
                end: d0 + MEMBER,
            },
            None,
        );
        let g = a.geometry();
        let mut r = rng(5);
        for i in 0..100u64 {
            let s = i % (g.size / g.stripe_bytes);
            let off = s * g.stripe_bytes + 4096 * (i % 2);
            let d = random_data(&mut r, 4096);
            a.write(off, &d)
                .unwrap_or_else(|e| panic!("{level} n={n} write {i}: {e}"));
            model[off as usize..off as usize + 4096].copy_from_slice(&d);
        }
        assert!(read_all(&a).expect("read") == model, "{level} n={n}: data");
        let st = a.status();
        assert_eq!(st.state, ArrayState::Degraded, "{level} n={n}: {st:?}");
        assert!(
            matches!(st.members[1].state, dw_raid::MemberState::Failed { .. }),
            "{level} n={n}: the failing member is kicked out: {:?}",
            st.members[1]
        );
        still_redundant(
            &rig,
            &a,
            &model,
            &[1],
            tolerance(level, n) - 1,
            &format!("{level} n={n}"),
        );
    }
}

/// Random writes the level accepts, recorded in the model; every one must succeed.
fn churn(a: &Array, model: &mut [u8], seed: u64, count: usize, what: &str) {
    let g = a.geometry();
    let mut r = rng(seed);
    for i in 0..count {
        let (off, len) = random_write(&mut r, &g);
        let d = random_data(&mut r, len);
        a.write(off, &d)
            .unwrap_or_else(|e| panic!("{what}: write {i} ({off}+{len}) failed: {e}"));
        model[off as usize..(off + len) as usize].copy_from_slice(&d);
    }
    a.flush()
        .unwrap_or_else(|e| panic!("{what}: flush failed: {e}"));
}

#[test]
fn write_errors_mid_stripe_fail_the_member_and_keep_the_data() {
    for &(level, n) in CONFIGS {
        let tol = tolerance(level, n);
        if tol == 0 {
            continue;
        }
        let (rig, a, mut model) = filled(level, n, 51);
        let d0 = data_offset(&rig);
        let what = format!("{level} n={n}");
        // The next write to member 1's data region fails (after the stripe's other members
        // may already have taken theirs).
        rig.handles[1].fail_writes(
            Rule::Range {
                start: d0,
                end: d0 + MEMBER,
            },
            Some(1),
        );
        churn(&a, &mut model, 7, 40, &what);
        let st = a.status();
        assert_eq!(st.state, ArrayState::Degraded, "{what}: {st:?}");
        assert!(read_all(&a).expect("read") == model, "{what}: data");
        still_redundant(&rig, &a, &model, &[1], tol - 1, &what);
    }
}

#[test]
fn torn_writes_fail_the_member_and_keep_the_data() {
    for &(level, n) in CONFIGS {
        let tol = tolerance(level, n);
        if tol == 0 {
            continue;
        }
        let (rig, a, mut model) = filled(level, n, 61);
        let what = format!("{level} n={n}");
        // The member's next write (data, journal, bitmap or superblock) lands half and fails.
        rig.handles[0].tear_next_write(1);
        churn(&a, &mut model, 9, 40, &what);
        let st = a.status();
        assert_eq!(st.state, ArrayState::Degraded, "{what}: {st:?}");
        assert!(read_all(&a).expect("read") == model, "{what}: data");
        still_redundant(&rig, &a, &model, &[0], tol - 1, &what);
    }
}

#[test]
fn bits_flipped_on_read_are_found_by_scrub_and_healed_through_alternatives() {
    for &(level, n) in CONFIGS {
        if tolerance(level, n) == 0 {
            continue;
        }
        let (rig, a, model) = filled(level, n, 71);
        let d0 = data_offset(&rig);
        let l = a.layout().clone();
        let what = format!("{level} n={n}");
        // A logical chunk and the (role, row) holding it: a data shard of a stripe, or one
        // mirror copy.
        let (off, role, row) = if l.p() > 0 {
            let s = 2;
            (l.stripe_start(s), l.data_role(s, 0), l.stripe_row(s))
        } else {
            let c = 3;
            let (copies, _) = l.mirror_copies(c * l.chunk);
            let (role, base) = copies[copies.len() - 1];
            (c * l.chunk, role, base / l.chunk)
        };
        let at = d0 + row * l.chunk;
        // The medium is intact; every read of that chunk from this member comes back damaged.
        rig.handles[role].flip_bits_on_read(
            Rule::Range {
                start: at,
                end: at + l.chunk,
            },
            3,
            None,
        );
        let rep = a.scrub(&ScrubOptions::default()).expect("scrub");
        assert!(
            rep.mismatches >= 1,
            "{what}: flipped bits not detected: {rep:?}"
        );
        if level.parity() >= 2 || (level == Level::Raid1 && n >= 3) {
            assert!(
                rep.unrepaired.iter().any(|f| f.role == Some(role)),
                "{what}: the damaged member is named: {:?}",
                rep.unrepaired
            );
        }
        // The layer above (which has checksums) finds the right data among the alternatives.
        let range = off as usize..(off + l.chunk) as usize;
        let alts = a.read_alternatives(off, l.chunk).expect("alternatives");
        assert!(
            alts.iter().any(|x| x.data[..] == model[range.clone()]),
            "{what}: no alternative gives the right data ({} offered)",
            alts.len()
        );
        assert!(
            alts.iter()
                .filter(|x| x.data[..] == model[range.clone()])
                .all(|x| x.excluded.contains(&role)),
            "{what}: only reconstructions without the damaged member are right"
        );
        assert_eq!(a.status().state, ArrayState::Healthy, "{what}");
    }
}
