//! redb on a byte range of the VDE's device.
//!
//! redb sees a growable "file": its length lives in two alternating slots at the start of the
//! metadata region (the newer valid one wins), and its bytes start 8 KiB in. Unaligned accesses
//! are turned into whole 4 KiB blocks (the device, and RAID-Z's small-write region, take only
//! 4 KiB-aligned I/O). `sync_data` persists the length and flushes the whole device, which also
//! makes every data segment and intent-log record written before it durable — the ordering the
//! VDE's commits rely on.
//!
//! Writes are held in memory (whole blocks) until the next `sync_data` and then go out as one
//! batch: redb writes a commit's pages one at a time, and a device round trip per page cost
//! more than the rest of a small commit. Reads see held blocks. Nothing is lost by holding
//! them: until a sync, redb promises nothing about them either.

use std::collections::BTreeMap;
use std::sync::Arc;

use dw_blockdev::{AlignedBuf, IoBuf, IoReq, run_batch};
use parking_lot::{Mutex, RwLock};

use crate::backing::Backing;
use crate::format::{BLOCK, MetaLen};

const SLOTS: u64 = 2 * BLOCK as u64;

/// Held blocks beyond which they are written out without waiting for a sync (bounds memory).
const MAX_HELD_BLOCKS: usize = 8192;

/// Largest single write when held blocks go out.
const MAX_RUN_BLOCKS: usize = 256;

/// The storage redb runs on.
#[derive(Debug)]
pub(crate) struct MetaBackend {
    backing: Arc<dyn Backing>,
    /// Region offset and length on the device.
    start: u64,
    capacity: u64,
    /// The length record, and whether it differs from the persisted one (written at the
    /// next sync). One lock for both: no ordering to get wrong. Shared with [`MetaGauge`].
    state: Arc<Mutex<(MetaLen, bool)>>,
    /// Blocks written since the last sync, by block index within the store.
    held: RwLock<BTreeMap<u64, AlignedBuf>>,
}

/// How full the store is, for the engine's metadata-space guard (engine.rs, `meta_guard`):
/// the length redb has sized its "file" to and the region's capacity. A handle that stays
/// valid while redb owns the backend.
#[derive(Debug, Clone)]
pub(crate) struct MetaGauge {
    state: Arc<Mutex<(MetaLen, bool)>>,
    capacity: u64,
}

impl MetaGauge {
    /// The store's current length (what redb sized its file to).
    pub(crate) fn len(&self) -> u64 {
        self.state.lock().0.len
    }

    /// The largest length the store can still reach (see [`reachable`]).
    pub(crate) fn reachable(&self) -> u64 {
        reachable(self.len(), self.capacity)
    }
}

/// redb's region size (its default; the store does not change it).
const REDB_REGION: u64 = 4 << 30;

/// A length the store can surely still grow to from `len` within `capacity`: a request beyond
/// the region fails and poisons redb, which the engine's guard exists to prevent. redb doubles
/// its file while it is smaller than one region (4 GiB); from there it grows by one or two
/// regions at a time, so it surely reaches within two regions of the capacity. The margin
/// covers redb's rounding of a layout to whole pages.
fn reachable(len: u64, capacity: u64) -> u64 {
    const MARGIN: u64 = 64 << 10;
    let mut reach = len.max(1);
    while reach < REDB_REGION && reach.saturating_mul(2).saturating_add(MARGIN) <= capacity {
        reach *= 2;
    }
    if reach >= REDB_REGION {
        reach = reach.max(capacity.saturating_sub(2 * REDB_REGION + MARGIN));
    }
    reach.min(capacity)
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl MetaBackend {
    /// Opens the store in `[start, start + len)`; a region with no valid length slot is an empty
    /// store.
    pub(crate) fn open(backing: Arc<dyn Backing>, start: u64, len: u64) -> std::io::Result<Self> {
        let mut best: Option<MetaLen> = None;
        for slot in 0..2u64 {
            let mut b = AlignedBuf::zeroed(BLOCK);
            backing
                .dev()
                .read_at(&mut b, start + slot * BLOCK as u64)
                .map_err(io)?;
            if let Ok(m) = MetaLen::decode(&b)
                && best.is_none_or(|x| m.counter > x.counter)
            {
                best = Some(m);
            }
        }
        let state = best.unwrap_or(MetaLen {
            counter: 0,
            len: 0,
            high_water: 0,
        });
        if state.len > len - SLOTS || state.high_water > len - SLOTS {
            return Err(io(format!(
                "metadata length {} beyond its region ({} bytes): damaged",
                state.len, len
            )));
        }
        Ok(Self {
            backing,
            start,
            capacity: len - SLOTS,
            state: Arc::new(Mutex::new((state, false))),
            held: RwLock::new(BTreeMap::new()),
        })
    }

    /// A gauge of this store's size.
    pub(crate) fn gauge(&self) -> MetaGauge {
        MetaGauge {
            state: Arc::clone(&self.state),
            capacity: self.capacity,
        }
    }

    fn base(&self) -> u64 {
        self.start + SLOTS
    }

    /// Writes every held block (contiguous ones together) and, at a sync (`with_len`), the
    /// length slot if it changed (only then: a new length must not be durable before the
    /// commit that needs it). Called with the held map locked for writing.
    fn write_out(
        &self,
        held: &mut BTreeMap<u64, AlignedBuf>,
        with_len: bool,
    ) -> std::io::Result<()> {
        let dev = self.backing.dev();
        let blk = BLOCK as u64;
        let mut runs: Vec<(u64, AlignedBuf)> = Vec::new();
        let mut iter = held.iter().peekable();
        while let Some((&first, b)) = iter.next() {
            let mut n = 1usize;
            while n < MAX_RUN_BLOCKS && iter.peek().is_some_and(|(i, _)| **i == first + n as u64) {
                iter.next();
                n += 1;
            }
            let mut run = AlignedBuf::zeroed(n * BLOCK);
            run[..BLOCK].copy_from_slice(b);
            for k in 1..n {
                let blk_buf = held
                    .get(&(first + k as u64))
                    .ok_or_else(|| io("held metadata block vanished"))?;
                run[k * BLOCK..(k + 1) * BLOCK].copy_from_slice(blk_buf);
            }
            runs.push((self.base() + first * blk, run));
        }
        let mut st = self.state.lock();
        let len_slot = (with_len && st.1).then(|| {
            let mut m = st.0;
            m.counter += 1;
            (m, AlignedBuf::from_slice(&m.encode()))
        });
        let mut reqs: Vec<IoReq<'_>> = runs
            .iter()
            .map(|(off, b)| IoReq {
                dev,
                offset: *off,
                buf: IoBuf::Write(b),
            })
            .collect();
        if let Some((m, b)) = &len_slot {
            reqs.push(IoReq {
                dev,
                offset: self.start + (m.counter % 2) * blk,
                buf: IoBuf::Write(b),
            });
        }
        for r in run_batch(&mut reqs) {
            r.map_err(io)?;
        }
        if let Some((m, _)) = len_slot {
            st.0.counter = m.counter;
            st.1 = false;
        }
        held.clear();
        Ok(())
    }

    /// The block `idx` as it is now: held, or read from the device.
    fn current_block(
        &self,
        held: &BTreeMap<u64, AlignedBuf>,
        idx: u64,
    ) -> std::io::Result<AlignedBuf> {
        if let Some(b) = held.get(&idx) {
            return Ok(b.clone());
        }
        let mut b = AlignedBuf::zeroed(BLOCK);
        self.backing
            .dev()
            .read_at(&mut b, self.base() + idx * BLOCK as u64)
            .map_err(io)?;
        Ok(b)
    }

    /// Holds `data` at `off` of the store (partial blocks merged with their current contents).
    fn hold(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        let blk = BLOCK as u64;
        let end = off + data.len() as u64;
        let mut held = self.held.write();
        let mut idx = off / blk;
        while idx * blk < end {
            let b0 = idx * blk;
            let from = off.max(b0);
            let to = end.min(b0 + blk);
            let mut b = if from == b0 && to == b0 + blk {
                AlignedBuf::zeroed(BLOCK)
            } else {
                self.current_block(&held, idx)?
            };
            let src = usize::try_from(from - off).map_err(io)?;
            let dst = usize::try_from(from - b0).map_err(io)?;
            let n = usize::try_from(to - from).map_err(io)?;
            b[dst..dst + n].copy_from_slice(&data[src..src + n]);
            held.insert(idx, b);
            idx += 1;
        }
        if held.len() > MAX_HELD_BLOCKS {
            self.write_out(&mut held, false)?;
        }
        Ok(())
    }
}

impl redb::StorageBackend for MetaBackend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().0.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let len = self.state.lock().0.len;
        if offset.checked_add(out.len() as u64).is_none_or(|e| e > len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("metadata read {offset}+{} beyond {len}", out.len()),
            ));
        }
        let blk = BLOCK as u64;
        let first = offset / blk * blk;
        let end = offset + out.len() as u64;
        let last = end.div_ceil(blk) * blk;
        let dev = self.backing.dev();
        // Held for the whole read so a write-out cannot slip between device and overlay.
        let held = self.held.read();
        if first == offset && last == end && out.as_ptr().align_offset(4096) == 0 {
            dev.read_at(out, self.base() + offset).map_err(io)?;
        } else {
            let mut b = AlignedBuf::zeroed(usize::try_from(last - first).map_err(io)?);
            dev.read_at(&mut b, self.base() + first).map_err(io)?;
            let at = usize::try_from(offset - first).map_err(io)?;
            out.copy_from_slice(&b[at..at + out.len()]);
        }
        for (&idx, b) in held.range(first / blk..last / blk) {
            let b0 = idx * blk;
            let from = offset.max(b0);
            let to = end.min(b0 + blk);
            let dst = usize::try_from(from - offset).map_err(io)?;
            let src = usize::try_from(from - b0).map_err(io)?;
            let n = usize::try_from(to - from).map_err(io)?;
            out[dst..dst + n].copy_from_slice(&b[src..src + n]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.capacity {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the VDE's metadata region is full ({} bytes); the store needs {len}",
                    self.capacity
                ),
            ));
        }
        let (old, hwm) = {
            let st = self.state.lock();
            (st.0.len, st.0.high_water)
        };
        tracing::debug!("metadata store resized from {old} to {len} bytes");
        if std::env::var_os("DW_META_TRACE").is_some() {
            eprintln!("SETLEN {old} -> {len} (cap {})", self.capacity);
        }
        if len > old && hwm > old {
            // New positions must read as zeros: clear what an earlier, longer store left.
            let end = len.min(hwm);
            let blk = BLOCK as u64;
            let mut at = old;
            // Partial first block through the held blocks, whole ones straight to the device
            // (dropping held copies so they cannot resurrect old bytes).
            if at % blk != 0 {
                let n = (blk - at % blk).min(end - at);
                self.hold(at, &vec![0u8; usize::try_from(n).map_err(io)?])?;
                at += n;
            }
            let mut held = self.held.write();
            let zeros = AlignedBuf::zeroed(1 << 20);
            while at < end {
                let n = (end - at).min(1 << 20);
                let whole = n / blk * blk;
                if whole == 0 {
                    drop(held);
                    self.hold(at, &vec![0u8; usize::try_from(n).map_err(io)?])?;
                    break;
                }
                let ks: Vec<u64> = held
                    .range(at / blk..(at + whole) / blk)
                    .map(|(k, _)| *k)
                    .collect();
                for k in ks {
                    held.remove(&k);
                }
                self.backing
                    .dev()
                    .write_at(
                        &zeros[..usize::try_from(whole).map_err(io)?],
                        self.base() + at,
                    )
                    .map_err(io)?;
                at += whole;
            }
        }
        let mut st = self.state.lock();
        st.0.len = len;
        st.1 = true;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.write_out(&mut self.held.write(), true)?;
        self.backing.dev().flush().map_err(io)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io("metadata write offset overflows"))?;
        if end > self.capacity {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the VDE's metadata region is full",
            ));
        }
        self.hold(offset, data)?;
        let mut st = self.state.lock();
        if end > st.0.high_water {
            st.0.high_water = end;
            st.1 = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reachable_follows_redbs_growth() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        // Doubling below a region: 1 MiB reaches 2 and 4 MiB, not 8, of a 7 MiB region.
        assert_eq!(reachable(MIB, 7 * MIB), 4 * MIB);
        assert_eq!(reachable(4 * MIB, 7 * MIB), 4 * MIB);
        // Past a region, growth is by at most two regions: 6 GiB steps of 4 or 8 GiB surely
        // end within 8 GiB of a 24.5 GiB region (doubling would wrongly claim 24 GiB).
        let cap = 24 * GIB + 512 * MIB;
        let r = reachable(6 * GIB, cap);
        assert!(r <= cap - 8 * GIB && r >= cap - 8 * GIB - MIB, "{r}");
        // A store already past that point reaches at least where it is.
        assert_eq!(reachable(20 * GIB, cap), 20 * GIB);
        // Crossing into regions by doubling: 3 GiB doubles to 6 GiB, then region steps.
        assert!(reachable(3 * GIB, 64 * GIB) >= 55 * GIB);
    }

    use super::*;
    use crate::backing::PlainBacking;
    use dw_blockdev::MemDev;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("t");

    #[test]
    fn redb_on_a_device_range_survives_reopen() {
        let dev = Arc::new(MemDev::new("m", 64 << 20, 4096));
        let backing: Arc<dyn Backing> = Arc::new(PlainBacking::new(dev.clone(), 65536));
        {
            let be = MetaBackend::open(backing.clone(), 1 << 20, 32 << 20).expect("open");
            let db = redb::Database::builder()
                .create_with_backend(be)
                .expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let mut t = tx.open_table(T).expect("table");
                for i in 0..1000u64 {
                    t.insert(i, vec![i.to_le_bytes()[0]; 100].as_slice())
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        let be = MetaBackend::open(backing, 1 << 20, 32 << 20).expect("reopen");
        let db = redb::Database::builder()
            .create_with_backend(be)
            .expect("open");
        let rx = db.begin_read().expect("read");
        let t = rx.open_table(T).expect("table");
        assert_eq!(
            t.get(999).expect("get").expect("present").value(),
            &[231u8; 100][..]
        );
    }

    #[test]
    fn full_region_is_a_clear_error() {
        let dev = Arc::new(MemDev::new("m", 8 << 20, 4096));
        let backing: Arc<dyn Backing> = Arc::new(PlainBacking::new(dev, 65536));
        let be = MetaBackend::open(backing, 1 << 20, 2 << 20).expect("open");
        let e = redb::StorageBackend::set_len(&be, 3 << 20).expect_err("too big");
        assert!(e.to_string().contains("metadata region is full"), "{e}");
    }
}
