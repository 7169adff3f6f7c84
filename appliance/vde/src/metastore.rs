//! redb on a byte range of the VDE's device.
//!
//! redb sees a growable "file": its length lives in two alternating slots at the start of the
//! metadata region (the newer valid one wins), and its bytes start 8 KiB in. Unaligned accesses
//! are turned into whole 4 KiB blocks (the device, and RAID-Z's small-write region, take only
//! 4 KiB-aligned I/O). `sync_data` persists the length and flushes the whole device, which also
//! makes every data segment and intent-log record written before it durable — the ordering the
//! VDE's commits rely on.

use std::sync::Arc;

use dw_blockdev::AlignedBuf;
use parking_lot::Mutex;

use crate::backing::Backing;
use crate::format::{BLOCK, MetaLen};

const SLOTS: u64 = 2 * BLOCK as u64;

/// The storage redb runs on.
#[derive(Debug)]
pub(crate) struct MetaBackend {
    backing: Arc<dyn Backing>,
    /// Region offset and length on the device.
    start: u64,
    capacity: u64,
    /// The length record, and whether it differs from the persisted one (written at the
    /// next sync). One lock for both: no ordering to get wrong.
    state: Mutex<(MetaLen, bool)>,
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
            state: Mutex::new((state, false)),
        })
    }

    fn base(&self) -> u64 {
        self.start + SLOTS
    }

    fn persist_len(&self) -> std::io::Result<()> {
        let mut st = self.state.lock();
        if !st.1 {
            return Ok(());
        }
        st.0.counter += 1;
        let slot = st.0.counter % 2;
        let b = AlignedBuf::from_slice(&st.0.encode());
        self.backing
            .dev()
            .write_at(&b, self.start + slot * BLOCK as u64)
            .map_err(io)?;
        st.1 = false;
        Ok(())
    }

    /// Writes `data` at `off` of the store, read-modify-writing partial blocks.
    fn write_rmw(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        let blk = BLOCK as u64;
        let first = off / blk * blk;
        let end = off + data.len() as u64;
        let last = end.div_ceil(blk) * blk;
        let dev = self.backing.dev();
        if first == off && last == end && data.as_ptr().align_offset(4096) == 0 {
            return dev.write_at(data, self.base() + off).map_err(io);
        }
        let mut b = AlignedBuf::zeroed(usize::try_from(last - first).map_err(io)?);
        let head_partial = first < off;
        let tail_partial = end < last;
        let single = last - first == blk;
        if head_partial {
            dev.read_at(&mut b[..BLOCK], self.base() + first)
                .map_err(io)?;
        }
        if tail_partial && !(single && head_partial) {
            let at = usize::try_from(last - blk - first).map_err(io)?;
            dev.read_at(&mut b[at..at + BLOCK], self.base() + last - blk)
                .map_err(io)?;
        }
        let at = usize::try_from(off - first).map_err(io)?;
        b[at..at + data.len()].copy_from_slice(data);
        dev.write_at(&b, self.base() + first).map_err(io)
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
        let last = (offset + out.len() as u64).div_ceil(blk) * blk;
        let dev = self.backing.dev();
        if first == offset
            && last == offset + out.len() as u64
            && out.as_ptr().align_offset(4096) == 0
        {
            return dev.read_at(out, self.base() + offset).map_err(io);
        }
        let mut b = AlignedBuf::zeroed(usize::try_from(last - first).map_err(io)?);
        dev.read_at(&mut b, self.base() + first).map_err(io)?;
        let at = usize::try_from(offset - first).map_err(io)?;
        out.copy_from_slice(&b[at..at + out.len()]);
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
        if len > old && hwm > old {
            // New positions must read as zeros: clear what an earlier, longer store left.
            let end = len.min(hwm);
            let mut at = old;
            let zeros = AlignedBuf::zeroed(1 << 20);
            while at < end {
                let n = (end - at).min(1 << 20);
                self.write_rmw(at, &zeros[..usize::try_from(n).map_err(io)?])?;
                at += n;
            }
        }
        let mut st = self.state.lock();
        st.0.len = len;
        st.1 = true;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.persist_len()?;
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
        self.write_rmw(offset, data)?;
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
