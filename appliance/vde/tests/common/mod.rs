//! Rigs for VDE tests: a VDE on a plain memory device, or on a RAID array of memory devices.
#![allow(dead_code, clippy::cast_possible_truncation)]

use std::sync::Arc;

use dw_blockdev::{BlockDev, FaultConfig, FaultDev, FaultHandle, MemDev};
use dw_raid::{Array, CreateSpec, Level};
use dw_vde::{ArrayBacking, Backing, FormatOptions, MasterKey, PlainBacking, Vde};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const MIB: u64 = 1 << 20;

pub fn key() -> MasterKey {
    MasterKey::from_bytes([0x42; 32], 0)
}

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed).fill(&mut v[..]);
    v
}

/// Half compressible, half random.
pub fn mixed(seed: u64, len: usize) -> Vec<u8> {
    let mut v = data(seed, len);
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 512) % 2 == 0 {
            *b = (i % 7) as u8;
        }
    }
    v
}

pub struct PlainRig {
    pub mem: Arc<MemDev>,
    pub fault: FaultHandle,
    pub backing: Arc<dyn Backing>,
}

impl PlainRig {
    pub fn new(size: u64) -> Self {
        let mem = Arc::new(MemDev::new("vde", size, 4096));
        Self::over(mem)
    }

    pub fn over(mem: Arc<MemDev>) -> Self {
        let (f, h) = FaultDev::new(mem.clone(), FaultConfig::default(), None);
        let dev: Arc<dyn BlockDev> = Arc::new(f);
        Self {
            mem,
            fault: h,
            backing: Arc::new(PlainBacking::new(dev, 64 * 1024)),
        }
    }

    pub fn format(&self, opts: &FormatOptions) -> Vde {
        Vde::format(self.backing.clone(), &key(), opts).expect("format")
    }

    pub fn open(&self) -> Vde {
        Vde::open(self.backing.clone(), &key(), &[]).expect("open")
    }
}

pub struct ArrayRig {
    pub mems: Vec<Arc<MemDev>>,
    pub handles: Vec<FaultHandle>,
    pub array: Arc<Array>,
    pub backing: Arc<dyn Backing>,
}

impl ArrayRig {
    pub fn new(level: Level, n: usize, member: u64) -> Self {
        let mems: Vec<Arc<MemDev>> = (0..n)
            .map(|i| Arc::new(MemDev::new(&format!("m{i}"), member, 4096)))
            .collect();
        let mut handles = Vec::new();
        let devs: Vec<Arc<dyn BlockDev>> = mems
            .iter()
            .map(|m| {
                let (f, h) = FaultDev::new(m.clone(), FaultConfig::default(), None);
                handles.push(h);
                Arc::new(f) as Arc<dyn BlockDev>
            })
            .collect();
        let mut spec = CreateSpec::new(level, "vde-test");
        spec.chunk = 16 * 1024;
        spec.small_write_percent = 30;
        let array = Arc::new(Array::create(&devs, &[], &spec).expect("array"));
        let backing: Arc<dyn Backing> = Arc::new(ArrayBacking::new(array.clone()));
        Self {
            mems,
            handles,
            array,
            backing,
        }
    }
}

pub fn read_all(mut r: impl std::io::Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read object");
    v
}
