//! A sparse in-memory device: only written chunks take memory, so tests can simulate large
//! drives cheaply. Chunks are shared copy-on-write between a device and its
//! [`MemDev::deep_clone`]s, so cloning a device (crash tests start thousands of scenarios from
//! one on-disk state) costs a map copy, and a chunk is copied only when one side writes it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{BlockDev, DevInfo, IoError, IoOp};

const CHUNK: usize = 64 * 1024;
const SHARDS: usize = 64;

/// A memory-backed block device. Unwritten ranges read as zeros.
#[derive(Debug)]
pub struct MemDev {
    info: DevInfo,
    shards: Box<[Shard]>,
}

/// Chunk index -> chunk bytes (shared with clones until written).
type Shard = Mutex<HashMap<u64, Arc<[u8]>>>;

impl MemDev {
    /// A zeroed device of `size` bytes (rounded down to the sector size) with the given logical
    /// sector size (512 or 4096).
    #[must_use]
    pub fn new(id: &str, size: u64, logical_sector: u32) -> Self {
        assert!(logical_sector.is_power_of_two() && logical_sector >= 512);
        assert!(CHUNK.is_multiple_of(logical_sector as usize));
        Self {
            info: DevInfo {
                id: id.to_owned(),
                size: size - size % u64::from(logical_sector),
                logical_sector,
                physical_sector: logical_sector.max(4096),
            },
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// An independent copy of the device's current contents (tests use it to run many
    /// scenarios from one on-disk state). Writes to either device never show in the other.
    #[must_use]
    pub fn deep_clone(&self, id: &str) -> Self {
        Self {
            info: DevInfo {
                id: id.to_owned(),
                ..self.info.clone()
            },
            shards: self
                .shards
                .iter()
                .map(|s| Mutex::new(s.lock().clone()))
                .collect(),
        }
    }

    /// Bytes of memory in use (written chunks).
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().len() as u64)
            .sum::<u64>()
            * CHUNK as u64
    }

    fn shard(&self, chunk: u64) -> &Shard {
        // CHUNK-granular keys spread over the shards round-robin.
        &self.shards[usize::try_from(chunk % SHARDS as u64).unwrap_or(0)]
    }

    /// Splits `[offset, offset+len)` into (chunk index, offset in chunk, length, offset in request).
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let pos = offset + done as u64;
            let chunk = pos / CHUNK as u64;
            let within = usize::try_from(pos % CHUNK as u64).unwrap_or(0);
            let n = (CHUNK - within).min(len - done);
            let item = (chunk, within, n, done);
            done += n;
            Some(item)
        })
    }
}

impl BlockDev for MemDev {
    fn info(&self) -> &DevInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Read, offset, buf.len() as u64)?;
        for (chunk, within, n, at) in Self::pieces(offset, buf.len()) {
            let shard = self.shard(chunk).lock();
            match shard.get(&chunk) {
                Some(data) => buf[at..at + n].copy_from_slice(&data[within..within + n]),
                None => buf[at..at + n].fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Write, offset, buf.len() as u64)?;
        for (chunk, within, n, at) in Self::pieces(offset, buf.len()) {
            let mut shard = self.shard(chunk).lock();
            let data = shard
                .entry(chunk)
                .or_insert_with(|| Arc::from(vec![0u8; CHUNK]));
            // Copies the chunk first if a clone still shares it.
            Arc::make_mut(data)[within..within + n].copy_from_slice(&buf[at..at + n]);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Discard, offset, len)?;
        let len = usize::try_from(len).map_err(|_| IoError::OutOfRange {
            dev: self.info.id.clone(),
            op: IoOp::Discard,
            offset,
            len,
            size: self.info.size,
        })?;
        for (chunk, within, n, _) in Self::pieces(offset, len) {
            let mut shard = self.shard(chunk).lock();
            if n == CHUNK {
                shard.remove(&chunk);
            } else if let Some(data) = shard.get_mut(&chunk) {
                Arc::make_mut(data)[within..within + n].fill(0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_roundtrip_across_chunks() {
        let d = MemDev::new("m", 1 << 30, 512);
        assert_eq!(d.allocated_bytes(), 0);
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i * 7 % 256).to_le_bytes()[0])
            .collect();
        let data = &data[..199_680]; // sector multiple
        d.write_at(data, (CHUNK as u64) - 512).expect("write");
        let mut back = vec![0u8; data.len()];
        d.read_at(&mut back, (CHUNK as u64) - 512).expect("read");
        assert_eq!(&back[..], data);
        assert!(d.allocated_bytes() <= 5 * CHUNK as u64);
        d.discard(0, 4 * CHUNK as u64).expect("discard");
        let mut z = vec![1u8; 4 * CHUNK];
        d.read_at(&mut z, 0).expect("read");
        assert!(z.iter().all(|&b| b == 0));
    }

    #[test]
    fn clones_are_independent() {
        let a = MemDev::new("a", 1 << 20, 4096);
        a.write_at(&[1; 8192], 0).expect("write");
        let b = a.deep_clone("b");
        b.write_at(&[2; 4096], 4096).expect("write b");
        a.write_at(&[3; 4096], 0).expect("write a");
        b.discard(0, 4096).expect("discard b");
        let (mut ra, mut rb) = (vec![0u8; 8192], vec![0u8; 8192]);
        a.read_at(&mut ra, 0).expect("read a");
        b.read_at(&mut rb, 0).expect("read b");
        assert!(ra[..4096].iter().all(|&x| x == 3) && ra[4096..].iter().all(|&x| x == 1));
        assert!(rb[..4096].iter().all(|&x| x == 0) && rb[4096..].iter().all(|&x| x == 2));
    }
}
