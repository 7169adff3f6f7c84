//! Crash consistency of the VDE under power cuts.
//!
//! The VDE runs on a RAID array (RAID-Z2, so data segments take the full-stripe path and
//! metadata the mirrored small-write region) or on a plain device, all behind fault injectors
//! with volatile write caches in one power domain. A seeded random mix of object puts,
//! overwrites, deletes, snapshot creation, and volume writes with flushes runs until the power
//! is cut at a random member write; each unflushed block survives at random. After restart the
//! VDE must open, and:
//! - every acknowledged put/overwrite is readable with exactly its bytes, every acknowledged
//!   delete is gone, every acknowledged snapshot exists;
//! - an operation in flight at the cut is either fully there or fully absent (no partial
//!   object: its bytes equal one of the acknowledged or in-flight versions);
//! - volume blocks hold their last flushed value or a value written after that flush.
//!
//! `DW_VDE_CRASH_ITERS` sets the iterations (default 40 per backing; long mode e.g. 2000),
//! `DW_VDE_CRASH_SEED` reruns one seed.

// Tests index buffers with small u64 values that always fit.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use common::{MIB, data, key, read_all};
use dw_blockdev::{BlockDev, FaultConfig, FaultDev, MemDev, PowerDomain};
use dw_raid::{Array, AssembleOptions, CreateSpec, Level};
use dw_vde::policy::{Policy, Profile};
use dw_vde::{
    ArrayBacking, Backing, ContainerKind, ContainerSpec, FormatOptions, PlainBacking, PutOptions,
    Vde,
};
use rand::Rng;

const VOL_SIZE: u64 = 8 * MIB;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    RaidZ2,
}

fn iterations() -> u64 {
    std::env::var("DW_VDE_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Memory members (for a RAID) or one device, formatted with a bucket and a volume.
fn base(kind: Kind) -> Vec<Arc<MemDev>> {
    let mems: Vec<Arc<MemDev>> = match kind {
        Kind::Plain => vec![Arc::new(MemDev::new("d", 160 * MIB, 4096))],
        Kind::RaidZ2 => (0..4)
            .map(|i| Arc::new(MemDev::new(&format!("m{i}"), 96 * MIB, 4096)))
            .collect(),
    };
    let backing = open_backing(kind, &mems, None, 0, true);
    let v = Vde::format(backing, &key(), &FormatOptions::default()).expect("format");
    let std = Policy {
        profile: Some(Profile::Standard),
        ..Policy::default()
    };
    v.create_container(
        "b",
        &ContainerSpec {
            kind: ContainerKind::Bucket,
            policy: std,
            record_size: Some(16 * 1024),
        },
    )
    .expect("b");
    v.create_container(
        "v",
        &ContainerSpec {
            kind: ContainerKind::Volume { size: VOL_SIZE },
            policy: std,
            record_size: None,
        },
    )
    .expect("v");
    v.close().expect("close");
    mems
}

fn open_backing(
    kind: Kind,
    mems: &[Arc<MemDev>],
    domain: Option<&Arc<PowerDomain>>,
    seed: u64,
    create: bool,
) -> Arc<dyn Backing> {
    let cfg = FaultConfig {
        seed,
        volatile_cache: domain.is_some(),
        atomic_block: 4096,
    };
    let devs: Vec<Arc<dyn BlockDev>> = mems
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (d, _) = FaultDev::new(
                m.clone(),
                FaultConfig {
                    seed: seed + i as u64,
                    ..cfg
                },
                domain.cloned(),
            );
            Arc::new(d) as Arc<dyn BlockDev>
        })
        .collect();
    match kind {
        Kind::Plain => Arc::new(PlainBacking::new(devs[0].clone(), 64 * 1024)),
        Kind::RaidZ2 => {
            let array = if create {
                let mut spec = CreateSpec::new(Level::RaidZ2, "crash");
                spec.chunk = 16 * 1024;
                spec.small_write_percent = 40;
                Array::create(&devs, &[], &spec).expect("array")
            } else {
                Array::assemble(devs, &AssembleOptions::default())
                    .expect("assemble")
                    .array
            };
            Arc::new(ArrayBacking::new(Arc::new(array)))
        }
    }
}

/// The model: acknowledged state, and what was in flight.
#[derive(Default)]
struct Model {
    /// key -> acknowledged content (None = acknowledged delete).
    objects: BTreeMap<String, Option<Vec<u8>>>,
    /// key -> contents an unacknowledged operation may have left (None = deleted).
    maybe: HashMap<String, Vec<Option<Vec<u8>>>>,
    snapshots: HashSet<String>,
    maybe_snapshots: HashSet<String>,
    /// Volume: durable image and, per 4 KiB block, values written since the last flush.
    vol: Vec<u8>,
    vol_pending: HashMap<u64, Vec<Vec<u8>>>,
}

fn run(v: &Vde, model: &mut Model, seed: u64, domain: &PowerDomain) {
    let mut r = common::rng(seed);
    domain.arm(
        r.random_range(0..600),
        [0.0, 0.5, 1.0][r.random_range(0..3)],
    );
    let vol = v.volume("v").expect("volume");
    let mut vol_now = model.vol.clone();
    for i in 0..60u64 {
        if domain.is_cut() {
            return;
        }
        let key = format!("k{}", r.random_range(0..8));
        match r.random_range(0..10) {
            0..=3 => {
                let len = [0usize, 100, 5000, 16 * 1024, 70_000][r.random_range(0..5)];
                let body = data(seed * 1000 + i, len);
                model
                    .maybe
                    .entry(key.clone())
                    .or_default()
                    .push(Some(body.clone()));
                match v.put_object("b", &key, &PutOptions::default(), &mut &body[..]) {
                    Ok(_) => {
                        model.objects.insert(key.clone(), Some(body));
                        model.maybe.remove(&key);
                    }
                    Err(_) => return,
                }
            }
            4 => {
                model.maybe.entry(key.clone()).or_default().push(None);
                match v.delete_object("b", &key, false) {
                    Ok(()) => {
                        model.objects.insert(key.clone(), None);
                        model.maybe.remove(&key);
                    }
                    Err(dw_vde::VdeError::NoSuchObject { .. }) => {
                        model.maybe.remove(&key);
                    }
                    Err(_) => return,
                }
            }
            5 => {
                let name = format!("s{i}");
                model.maybe_snapshots.insert(name.clone());
                match v.create_snapshot("b", &name) {
                    Ok(_) => {
                        model.snapshots.insert(name.clone());
                        model.maybe_snapshots.remove(&name);
                    }
                    Err(_) => return,
                }
            }
            6..=8 => {
                let blocks = r.random_range(1..16u64);
                let first = r.random_range(0..VOL_SIZE / 4096 - blocks);
                let d = data(seed * 7777 + i, (blocks * 4096) as usize);
                for b in 0..blocks {
                    let chunk = d[(b * 4096) as usize..((b + 1) * 4096) as usize].to_vec();
                    model.vol_pending.entry(first + b).or_default().push(chunk);
                }
                if vol.write_at(&d, first * 4096).is_err() {
                    return;
                }
                vol_now[(first * 4096) as usize..((first + blocks) * 4096) as usize]
                    .copy_from_slice(&d);
            }
            _ => {
                if vol.flush().is_err() {
                    return;
                }
                model.vol.clone_from(&vol_now);
                model.vol_pending.clear();
            }
        }
    }
    domain.cut(0.5);
}

fn check(v: &Vde, model: &Model, seed: u64, kind: Kind) {
    let ctx = format!("{kind:?} seed {seed}");
    for (k, want) in &model.objects {
        let got = v.get_object("b", k, None).ok().map(|(_, r)| read_all(r));
        let maybe = model.maybe.get(k);
        let ok = got == *want || maybe.is_some_and(|m| m.contains(&got));
        assert!(
            ok,
            "{ctx}: object {k} is {:?} bytes, acknowledged {:?}",
            got.as_ref().map(Vec::len),
            want.as_ref().map(Vec::len)
        );
    }
    for (k, m) in &model.maybe {
        if model.objects.contains_key(k) {
            continue;
        }
        let got = v.get_object("b", k, None).ok().map(|(_, r)| read_all(r));
        assert!(
            got.is_none() || m.contains(&got),
            "{ctx}: in-flight object {k} is half-visible ({:?} bytes)",
            got.map(|g| g.len())
        );
    }
    let snaps: HashSet<String> = v
        .snapshots("b")
        .expect("snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect();
    for s in &model.snapshots {
        assert!(
            snaps.contains(s),
            "{ctx}: acknowledged snapshot {s} missing"
        );
    }
    for s in &snaps {
        assert!(
            model.snapshots.contains(s) || model.maybe_snapshots.contains(s),
            "{ctx}: unknown snapshot {s}"
        );
    }
    let vol = v.volume("v").expect("volume");
    let mut img = vec![0u8; VOL_SIZE as usize];
    vol.read_at(&mut img, 0).expect("volume read");
    for (b, got) in img.chunks(4096).enumerate() {
        let want = &model.vol[b * 4096..(b + 1) * 4096];
        if got == want {
            continue;
        }
        let ok = model
            .vol_pending
            .get(&(b as u64))
            .is_some_and(|p| p.iter().any(|x| x == got));
        assert!(ok, "{ctx}: volume block {b} holds data never written there");
    }
}

fn scenario(kind: Kind) {
    let only: Option<u64> = std::env::var("DW_VDE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let base_mems = base(kind);
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (1..=iterations()).map(|i| i * 104_729).collect(),
    };
    for seed in seeds {
        let mems: Vec<Arc<MemDev>> = base_mems
            .iter()
            .enumerate()
            .map(|(i, m)| Arc::new(m.deep_clone(&format!("s{seed}m{i}"))))
            .collect();
        let mut model = Model {
            vol: vec![0u8; VOL_SIZE as usize],
            ..Model::default()
        };
        {
            let domain = PowerDomain::new();
            let backing = open_backing(kind, &mems, Some(&domain), seed, false);
            let v = Vde::open(backing, &key(), &[])
                .unwrap_or_else(|e| panic!("{kind:?} seed {seed}: open before: {e}"));
            run(&v, &mut model, seed, &domain);
        }
        let backing = open_backing(kind, &mems, None, seed, false);
        let v = Vde::open(backing, &key(), &[])
            .unwrap_or_else(|e| panic!("{kind:?} seed {seed}: reopen after the crash: {e}"));
        check(&v, &model, seed, kind);
        // A second crash-free round trip: recovery left a consistent VDE.
        v.put_object("b", "after", &PutOptions::default(), &mut &b"ok"[..])
            .expect("write after recovery");
        v.close().expect("close");
    }
}

#[test]
fn power_cuts_on_a_plain_device() {
    scenario(Kind::Plain);
}

#[test]
fn power_cuts_on_raidz2() {
    scenario(Kind::RaidZ2);
}
