//! Crash consistency under power cuts.
//!
//! Every member sits behind a fault injector with a volatile write cache; all of them share a
//! power domain. Random writes and flushes run until the power is cut at a random point (in the
//! middle of a member write, so stripes are torn, including mid read-modify-write), with each
//! unflushed block surviving at random (so writes are lost and reordered). Then the array is
//! reassembled (journal replay, resync) and checked block by block: a block acknowledged by a
//! flush and not written since must read back exactly; a block written since the last flush may
//! hold its old value or any value written to it since. Finally a member is failed and every
//! block must reconstruct to the same bytes — the write hole would show up exactly here.
//!
//! A second scenario runs degraded before the crash (one member already failed): acknowledged
//! data must survive the crash although its stripes' parity cannot be resynchronised.
//!
//! The checks are themselves checked: with the journal switched off (test-only switch) the
//! degraded scenario must find lost acknowledged data on RAID-5/6, and with the write-intent
//! bitmap switched off the healthy scenario must find stripes and mirrors left inconsistent.
//!
//! Iterations: `DW_CRASH_ITERS` per configuration and scenario. The default (150) gives 4,500
//! seeded power cuts per run (16 healthy + 14 degraded configurations), about 35 s of CPU in
//! the dev profile here (the two scenarios run in parallel: 20–75 s wall on the shared 2-CPU
//! machine, depending on its load), which is what CI runs. The
//! long-running mode is the same tests with more seeds, e.g.
//! `DW_CRASH_ITERS=20000 cargo test --release -p dw-raid --test crash` (600,000 power cuts).
//! A failure prints the level, member count, seed and scenario; `DW_CRASH_SEED=<seed>` reruns
//! exactly that case (in every configuration of the scenario).
// Test sizes are a few MiB on a 64-bit host: u64 -> usize casts cannot truncate here.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use common::{CONFIGS, MIB, Rig, random_data, random_write, read_all, rng, sizes, spec};
use dw_blockdev::{FaultConfig, MemDev, PowerDomain};
use dw_raid::{Array, AssembleOptions, Level};
use rand::Rng;

const MEMBER: u64 = 3 * MIB;
const CHUNK: u32 = 8192;
const BLOCK: usize = 4096;
/// Iterations per configuration and scenario in CI (see the header).
const DEFAULT_ITERS: u64 = 150;

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn iterations() -> u64 {
    std::env::var("DW_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

/// A populated, cleanly closed array to start every iteration from.
fn base(level: Level, n: usize) -> (Vec<Arc<MemDev>>, Vec<u8>) {
    let rig = Rig::new(&sizes(level, n, MEMBER));
    let a = Array::create(&rig.devs, &[], &spec(level, CHUNK)).expect("create");
    let g = a.geometry();
    let mut model = vec![0u8; a.size() as usize];
    let mut r = rng(99);
    for _ in 0..60 {
        let (off, len) = random_write(&mut r, &g);
        let d = random_data(&mut r, len);
        a.write(off, &d).expect("write");
        model[off as usize..(off + len) as usize].copy_from_slice(&d);
    }
    a.close().expect("close");
    (rig.mems, model)
}

/// What happened before the cut, relative to the base contents.
struct Outcome {
    /// Blocks changed and acknowledged by a flush (the rest must still be as in the base).
    durable: HashMap<usize, Box<[u8]>>,
    /// Block -> hashes of values written since the last acknowledged flush.
    pending: HashMap<usize, HashSet<u64>>,
}

impl Outcome {
    fn durable_block<'a>(&'a self, base: &'a [u8], blk: usize) -> &'a [u8] {
        self.durable
            .get(&blk)
            .map_or(&base[blk * BLOCK..(blk + 1) * BLOCK], |b| &b[..])
    }
}

/// Test switches for the scenario (the negative controls turn protection off).
#[derive(Debug, Clone, Copy, Default)]
struct Scenario {
    /// One member fails before the crash.
    degraded: bool,
    /// Journal off (test-only switch).
    no_journal: bool,
    /// Write-intent bitmap off (test-only switch).
    no_bitmap: bool,
}

fn run_until_cut(a: &Array, domain: &PowerDomain, base: &[u8], seed: u64) -> Outcome {
    let mut r = rng(seed);
    let g = a.geometry();
    let mut o = Outcome {
        durable: HashMap::new(),
        pending: HashMap::new(),
    };
    // Written since the last flush: the newest value of each block.
    let mut unflushed: HashMap<usize, Box<[u8]>> = HashMap::new();
    let persist = [0.0, 0.5, 1.0, r.random_range(0.0..1.0)][r.random_range(0..4)];
    domain.arm(r.random_range(0..400), persist);
    for _ in 0..80 {
        if domain.is_cut() {
            break;
        }
        match r.random_range(0..10) {
            0..=6 => {
                let (off, len) = random_write(&mut r, &g);
                let d = random_data(&mut r, len);
                let ok = a.write(off, &d).is_ok();
                // Acknowledged or not, these blocks may now hold the new data.
                for (i, chunk) in d.chunks(BLOCK).enumerate() {
                    let blk = off as usize / BLOCK + i;
                    o.pending.entry(blk).or_default().insert(hash(chunk));
                    if ok {
                        unflushed.insert(blk, chunk.into());
                    }
                }
                if !ok {
                    break;
                }
            }
            7 => {
                let (off, len) = random_write(&mut r, &g);
                let mut b = vec![0u8; len as usize];
                if a.read(off, &mut b).is_ok() {
                    for (i, got) in b.chunks(BLOCK).enumerate() {
                        let blk = off as usize / BLOCK + i;
                        let want = unflushed
                            .get(&blk)
                            .map_or_else(|| o.durable_block(base, blk), |b| &b[..]);
                        assert!(got == want, "seed {seed}: read before the crash differs");
                    }
                }
            }
            _ => {
                if a.flush().is_ok() {
                    o.durable.extend(unflushed.drain());
                    o.pending.clear();
                } else {
                    break;
                }
            }
        }
    }
    if !domain.is_cut() {
        domain.cut(persist);
    }
    o
}

fn check(
    what: &str,
    base: &[u8],
    got: &[u8],
    o: &Outcome,
    strict_pending: bool,
) -> Result<(), String> {
    for (blk, chunk) in got.chunks(BLOCK).enumerate() {
        if chunk == o.durable_block(base, blk) {
            continue;
        }
        match o.pending.get(&blk) {
            Some(set) if !strict_pending || set.contains(&hash(chunk)) => {}
            _ => {
                return Err(format!(
                    "{what}: block {blk} (offset {}) holds data that was neither acknowledged \
                     nor written (pending values: {})",
                    blk * BLOCK,
                    o.pending.get(&blk).map_or(0, HashSet::len)
                ));
            }
        }
    }
    Ok(())
}

/// One seeded power cut: run, cut, reassemble, check, fail a member, check again.
fn one_iteration(
    level: Level,
    n: usize,
    base_mems: &[Arc<MemDev>],
    model: &[u8],
    seed: u64,
    sc: Scenario,
) -> Result<(), String> {
    let what = format!("{level} n={n} seed={seed} {sc:?}");
    let mems: Vec<Arc<MemDev>> = base_mems
        .iter()
        .enumerate()
        .map(|(i, m)| Arc::new(m.deep_clone(&format!("s{seed}m{i}"))))
        .collect();
    let domain = PowerDomain::new();
    let cfg = FaultConfig {
        seed,
        volatile_cache: true,
        atomic_block: 4096,
    };
    let rig = Rig::over(&mems, cfg, Some(&domain));
    let asm =
        Array::assemble(rig.devs.clone(), &AssembleOptions::default()).expect("assemble base");
    let a = asm.array;
    a.testing_disable_protection(sc.no_journal, sc.no_bitmap);
    let victim = (seed as usize) % n;
    if sc.degraded {
        rig.handles[victim].fail_device("failed before the crash");
        let mut b = vec![0u8; 4096];
        // Let the array notice (a write touching every member would also do).
        for off in (0..a.size())
            .step_by(a.geometry().stripe_bytes as usize)
            .take(64)
        {
            let _ = a.read(off, &mut b);
        }
        a.flush().expect("flush after failure");
    }
    let outcome = run_until_cut(&a, &domain, model, seed);
    drop(a);
    drop(rig);
    // Restart.
    let rig = Rig::over(&mems, FaultConfig::default(), None);
    let asm = Array::assemble(rig.devs.clone(), &AssembleOptions::default())
        .map_err(|e| format!("{what}: reassembly failed: {e}"))?;
    let a = asm.array;
    let got = read_all(&a).map_err(|e| format!("{what}: read after restart: {e}"))?;
    // Degraded before the crash: unacknowledged full-stripe writes may read as anything
    // (documented); acknowledged data must be exact.
    check(&what, model, &got, &outcome, !sc.degraded)?;
    if !sc.degraded && level.tolerance(n, if level == Level::Raid1 { n } else { 2 }) > 0 {
        let fail = (seed as usize / 7) % n;
        rig.handles[fail].fail_device("failed after the restart");
        let again = read_all(&a).map_err(|e| format!("{what}: degraded read: {e}"))?;
        if again != got {
            let blk = again
                .chunks(BLOCK)
                .zip(got.chunks(BLOCK))
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Err(format!(
                "{what}: after failing member {fail}, block {blk} reconstructs differently \
                 (write hole)"
            ));
        }
    }
    Ok(())
}

fn configs(sc: Scenario) -> impl Iterator<Item = (Level, usize)> {
    CONFIGS
        .iter()
        .copied()
        .filter(move |&(level, n)| !sc.degraded || level.tolerance(n, 2) > 0)
}

fn seeds(n: usize, sc: Scenario, iters: u64) -> Vec<u64> {
    let only: Option<u64> = std::env::var("DW_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    match only {
        Some(s) => vec![s],
        None => (0..iters)
            .map(|i| i * 7919 + n as u64 + u64::from(sc.degraded) * 1_000_003)
            .collect(),
    }
}

fn run(sc: Scenario) {
    let iters = iterations();
    let mut total = 0u64;
    for (level, n) in configs(sc) {
        let (mems, model) = base(level, n);
        for seed in seeds(n, sc, iters) {
            if let Err(e) = one_iteration(level, n, &mems, &model, seed, sc) {
                panic!("{e}");
            }
            total += 1;
        }
    }
    eprintln!("{sc:?}: {total} seeded power cuts, all consistent");
}

/// Runs `sc` (with protection switched off) until the checks report a failure; returns it.
fn first_failure(sc: Scenario, levels: &[Level], max_seeds: u64) -> Option<String> {
    for (level, n) in configs(sc).filter(|(l, _)| levels.contains(l)) {
        let (mems, model) = base(level, n);
        for seed in seeds(n, sc, max_seeds) {
            if let Err(e) = one_iteration(level, n, &mems, &model, seed, sc) {
                return Some(e);
            }
        }
    }
    None
}

#[test]
fn power_cuts_never_lose_acknowledged_writes() {
    run(Scenario::default());
}

#[test]
fn power_cut_while_degraded_keeps_acknowledged_data() {
    run(Scenario {
        degraded: true,
        ..Scenario::default()
    });
}

#[test]
fn without_the_journal_the_checks_find_the_write_hole() {
    let sc = Scenario {
        degraded: true,
        no_journal: true,
        ..Scenario::default()
    };
    let found = first_failure(sc, &[Level::Raid5, Level::Raid6], 400);
    assert!(
        found.is_some(),
        "the crash checks did not notice a disabled journal"
    );
    eprintln!(
        "as expected without the journal: {}",
        found.unwrap_or_default()
    );
}

#[test]
fn without_the_bitmap_the_checks_find_stale_redundancy() {
    let sc = Scenario {
        no_bitmap: true,
        ..Scenario::default()
    };
    let found = first_failure(sc, &[Level::Raid1, Level::RaidZ1, Level::RaidZ2], 400);
    assert!(
        found.is_some(),
        "the crash checks did not notice a disabled bitmap"
    );
    eprintln!(
        "as expected without the bitmap: {}",
        found.unwrap_or_default()
    );
}
