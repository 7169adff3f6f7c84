//! Shared rig for the array integration tests: memory-backed members behind fault injectors,
//! a byte-exact model of what the array should hold, and random aligned I/O that respects each
//! level's rules.
#![allow(dead_code, clippy::cast_possible_truncation)]

use std::sync::Arc;

use dw_blockdev::{BlockDev, FaultConfig, FaultDev, FaultHandle, MemDev, PowerDomain};
use dw_raid::{Array, ArrayGeometry, CreateSpec, Level};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const MIB: u64 = 1 << 20;
pub const SECTOR: u64 = 4096;

pub struct Rig {
    pub mems: Vec<Arc<MemDev>>,
    pub handles: Vec<FaultHandle>,
    pub devs: Vec<Arc<dyn BlockDev>>,
}

impl Rig {
    /// Fresh zeroed members of the given sizes.
    pub fn new(sizes: &[u64]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mems = sizes
            .iter()
            .map(|&s| {
                let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Arc::new(MemDev::new(&format!("mem{id}"), s, 4096))
            })
            .collect::<Vec<_>>();
        Self::over(&mems, FaultConfig::default(), None)
    }

    /// Fault injectors over existing members.
    pub fn over(mems: &[Arc<MemDev>], cfg: FaultConfig, domain: Option<&Arc<PowerDomain>>) -> Self {
        let mut handles = Vec::new();
        let mut devs: Vec<Arc<dyn BlockDev>> = Vec::new();
        for (i, m) in mems.iter().enumerate() {
            let (d, h) = FaultDev::new(
                m.clone(),
                FaultConfig {
                    seed: cfg.seed.wrapping_add(i as u64),
                    ..cfg
                },
                domain.cloned(),
            );
            handles.push(h);
            devs.push(Arc::new(d));
        }
        Self {
            mems: mems.to_vec(),
            handles,
            devs,
        }
    }

    /// Independent copies of the members' current contents.
    pub fn clone_mems(&self) -> Vec<Arc<MemDev>> {
        self.mems
            .iter()
            .map(|m| Arc::new(m.deep_clone(&m.info().id)))
            .collect()
    }
}

pub fn spec(level: Level, chunk: u32) -> CreateSpec {
    let mut s = CreateSpec::new(level, "test");
    s.chunk = chunk;
    s
}

/// A random aligned write the level accepts: anywhere for most levels; in the small-write
/// region or as whole stripes for RAID-Z.
pub fn random_write(rng: &mut SmallRng, g: &ArrayGeometry) -> (u64, u64) {
    if g.full_stripe_only && (g.small_write_end == 0 || rng.random_bool(0.6)) {
        let stripes = (g.size - g.small_write_end) / g.stripe_bytes;
        let s = rng.random_range(0..stripes);
        let n = rng.random_range(1..=3.min(stripes - s));
        return (g.small_write_end + s * g.stripe_bytes, n * g.stripe_bytes);
    }
    let end = g.small_write_end;
    let sectors = end / SECTOR;
    let max_len = (3 * g.stripe_bytes / SECTOR).max(4);
    let start = rng.random_range(0..sectors);
    let len = rng.random_range(1..=max_len.min(sectors - start));
    (start * SECTOR, len * SECTOR)
}

pub fn random_data(rng: &mut SmallRng, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rng.fill(&mut v[..]);
    v
}

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Reads the whole array.
pub fn read_all(a: &Array) -> Result<Vec<u8>, dw_raid::ArrayIoError> {
    let mut v = vec![0u8; a.size() as usize];
    let step = 256 * 1024;
    let mut off = 0usize;
    while off < v.len() {
        let n = step.min(v.len() - off);
        a.read(off as u64, &mut v[off..off + n])?;
        off += n;
    }
    Ok(v)
}

/// Configurations exercised everywhere: every level, small and wider.
pub const CONFIGS: &[(Level, usize)] = &[
    (Level::Jbod, 3),
    (Level::Raid0, 3),
    (Level::Raid1, 2),
    (Level::Raid1, 3),
    (Level::Raid10, 4),
    (Level::Raid10, 5),
    (Level::Raid5, 3),
    (Level::Raid5, 5),
    (Level::Raid6, 4),
    (Level::Raid6, 6),
    (Level::RaidZ1, 3),
    (Level::RaidZ1, 5),
    (Level::RaidZ2, 4),
    (Level::RaidZ2, 6),
    (Level::RaidZ3, 5),
    (Level::RaidZ3, 7),
];

/// Member sizes for a configuration (JBOD gets mixed sizes).
pub fn sizes(level: Level, n: usize, base: u64) -> Vec<u64> {
    (0..n)
        .map(|i| {
            if level == Level::Jbod {
                base + i as u64 * MIB
            } else {
                base
            }
        })
        .collect()
}

/// All subsets of `0..n` with exactly `k` elements.
pub fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    go(0, n, k, &mut cur, &mut out);
    out
}
