//! Volumes: thin-provisioned block devices. Each record-sized block is an extent keyed by
//! (volume inode, block offset, birth txg); a write makes a new version (copy-on-write) and
//! retires the previous one — freeing it, or keeping it dead while a snapshot still sees it.
//! Unwritten and discarded blocks read as zeros. Writes are durable after `flush`.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use crate::engine::Inner;
use crate::errors::VdeError;
use crate::policy::Effective;
use crate::records::{EXTENTS, ExtentRecord, KIND_VOLUME, LIVE};

/// A volume opened for I/O.
#[derive(Debug, Clone)]
pub struct Volume {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: String,
    pub(crate) cid: u64,
    pub(crate) inode: u64,
    pub(crate) size: u64,
    pub(crate) rs: u64,
    pub(crate) eff: Effective,
}

fn corrupt(e: impl std::fmt::Display) -> VdeError {
    VdeError::Corrupt(e.to_string())
}

/// The live version of a block: (birth, extent).
fn live(
    t: &impl ReadableTable<(u64, u64, u64), &'static [u8]>,
    inode: u64,
    off: u64,
) -> Result<Option<(u64, ExtentRecord)>, VdeError> {
    let mut out = None;
    for r in t.range((inode, off, 0)..=(inode, off, u64::MAX))? {
        let (k, v) = r?;
        let e = ExtentRecord::decode(v.value()).map_err(corrupt)?;
        if e.death == LIVE {
            out = Some((k.value().2, e));
        }
    }
    Ok(out)
}

/// The version of a block visible at txg `at`.
fn visible_at(
    t: &impl ReadableTable<(u64, u64, u64), &'static [u8]>,
    inode: u64,
    off: u64,
    at: u64,
) -> Result<Option<ExtentRecord>, VdeError> {
    let mut out = None;
    for r in t.range((inode, off, 0)..=(inode, off, at))? {
        let (_, v) = r?;
        let e = ExtentRecord::decode(v.value()).map_err(corrupt)?;
        if e.death > at {
            out = Some(e);
        }
    }
    Ok(out)
}

impl Inner {
    pub(crate) fn open_volume(self: &Arc<Self>, name: &str) -> Result<Volume, VdeError> {
        let c = self.container_record(name)?;
        if c.kind != KIND_VOLUME {
            return Err(VdeError::WrongKind {
                name: name.to_owned(),
                kind: "bucket",
                wanted: "volume",
            });
        }
        let eff = self.effective(&c, None)?;
        Ok(Volume {
            inner: Arc::clone(self),
            name: name.to_owned(),
            cid: c.id,
            inode: c.volume_inode,
            size: c.volume_size,
            rs: u64::from(c.record_size),
            eff,
        })
    }
}

impl Volume {
    /// Size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Record (block) size in bytes.
    #[must_use]
    pub fn block_size(&self) -> u64 {
        self.rs
    }

    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, off: u64, len: u64) -> Result<(), VdeError> {
        match off.checked_add(len) {
            Some(e) if e <= self.size => Ok(()),
            _ => Err(VdeError::OutOfRange {
                what: "volume",
                off,
                len,
                size: self.size,
            }),
        }
    }

    /// Reads `buf.len()` bytes at `off` (any alignment), as of txg `at` when given.
    fn read_inner(&self, buf: &mut [u8], off: u64, at: Option<u64>) -> Result<(), VdeError> {
        self.check(off, buf.len() as u64)?;
        let rx = self.inner.db.begin_read()?;
        let t = rx.open_table(EXTENTS)?;
        let mut pos = 0usize;
        let mut plain = Vec::new();
        while pos < buf.len() {
            let abs = off + pos as u64;
            let blk = abs / self.rs * self.rs;
            let within = usize::try_from(abs - blk).unwrap_or(0);
            let n = (usize::try_from(self.rs).unwrap_or(4096) - within).min(buf.len() - pos);
            let ext = match at {
                None => live(&t, self.inode, blk)?.map(|x| x.1),
                Some(at) => visible_at(&t, self.inode, blk, at)?,
            };
            match ext {
                None => buf[pos..pos + n].fill(0),
                Some(e) => {
                    self.inner.read_record(
                        &e,
                        self.cid,
                        self.inode,
                        blk,
                        self.eff.verify_checksums.value,
                        &mut plain,
                    )?;
                    let have = plain.len().saturating_sub(within).min(n);
                    buf[pos..pos + have].copy_from_slice(&plain[within..within + have]);
                    buf[pos + have..pos + n].fill(0);
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off`.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), VdeError> {
        self.read_inner(buf, off, None)
    }

    /// Writes `data` at `off` (partial blocks are read-modify-written). Durable after
    /// [`Volume::flush`].
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<(), VdeError> {
        self.check(off, data.len() as u64)?;
        // Held until the transaction recording the new blocks is done (segments.rs).
        let _writer = self.inner.segs.writer();
        let rs = usize::try_from(self.rs).unwrap_or(4096);
        let mut blocks: Vec<(u64, ExtentRecord)> = Vec::new();
        let mut pos = 0usize;
        let mut scratch = vec![0u8; rs];
        while pos < data.len() {
            let abs = off + pos as u64;
            let blk = abs / self.rs * self.rs;
            let within = usize::try_from(abs - blk).unwrap_or(0);
            let n = (rs - within).min(data.len() - pos);
            let plain: &[u8] = if within == 0 && n == rs {
                &data[pos..pos + n]
            } else {
                self.read_inner(&mut scratch, blk, None)?;
                scratch[within..within + n].copy_from_slice(&data[pos..pos + n]);
                &scratch
            };
            let e = self.inner.write_record(
                plain,
                self.cid,
                self.inode,
                blk,
                self.eff.compression.value,
                self.eff.encryption.value,
            )?;
            blocks.push((blk, e));
            pos += n;
        }
        self.commit_blocks(&blocks, false)
    }

    /// Deallocates `[off, off + len)`: it reads back as zeros. Partial blocks are zeroed.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn discard(&self, off: u64, len: u64) -> Result<(), VdeError> {
        self.check(off, len)?;
        let end = off + len;
        let first_full = off.div_ceil(self.rs) * self.rs;
        let last_full = end / self.rs * self.rs;
        if first_full >= last_full {
            return self.write_at(&vec![0u8; usize::try_from(len).unwrap_or(0)], off);
        }
        if off < first_full {
            self.write_at(
                &vec![0u8; usize::try_from(first_full - off).unwrap_or(0)],
                off,
            )?;
        }
        if last_full < end {
            self.write_at(
                &vec![0u8; usize::try_from(end - last_full).unwrap_or(0)],
                last_full,
            )?;
        }
        // Whole blocks: retire their versions, in bounded transactions.
        let mut blk = first_full;
        while blk < last_full {
            let stop = (blk + 4096 * self.rs).min(last_full);
            let offs: Vec<(u64, ExtentRecord)> = {
                let rx = self.inner.db.begin_read()?;
                let t = rx.open_table(EXTENTS)?;
                let mut v = Vec::new();
                for r in t.range((self.inode, blk, 0)..(self.inode, stop, 0))? {
                    let (k, val) = r?;
                    let e = ExtentRecord::decode(val.value()).map_err(corrupt)?;
                    if e.death == LIVE {
                        v.push((k.value().1, e));
                    }
                }
                v
            };
            self.commit_blocks(&offs, true)?;
            blk = stop;
        }
        Ok(())
    }

    /// Installs new block versions (or, with `discard`, only retires the current ones).
    fn commit_blocks(&self, blocks: &[(u64, ExtentRecord)], discard: bool) -> Result<(), VdeError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let name = self.name.clone();
        let inode = self.inode;
        let rs = self.rs;
        self.inner.txn(|t| {
            let mut c = t.container(&name)?;
            let mut ino = t.inode(inode)?;
            // Space accounting after the extent table is done with: one table open for all
            // the blocks, and one segment record update per segment (engine.rs).
            let mut freed = Vec::new();
            {
                let mut ext = t.tx.open_table(EXTENTS)?;
                for (blk, e) in blocks {
                    if let Some((birth, mut old)) = live(&ext, inode, *blk)? {
                        let old_stored = u64::from(old.stored_len);
                        c.stored_bytes = c.stored_bytes.saturating_sub(old_stored);
                        ino.stored = ino.stored.saturating_sub(old_stored);
                        if birth <= c.last_snapshot {
                            old.death = t.txg;
                            c.retained_bytes += old_stored;
                            ext.insert((inode, *blk, birth), old.encode().as_slice())?;
                        } else {
                            freed.push(old);
                            ext.remove((inode, *blk, birth))?;
                        }
                        if discard {
                            c.logical_bytes = c.logical_bytes.saturating_sub(rs);
                        }
                    } else if !discard {
                        c.logical_bytes += rs;
                    }
                    if !discard {
                        ext.insert((inode, *blk, t.txg), e.encode().as_slice())?;
                        c.stored_bytes += u64::from(e.stored_len);
                        ino.stored += u64::from(e.stored_len);
                    }
                }
            }
            for old in &freed {
                t.free_extent_space(old)?;
            }
            if !discard {
                let added: Vec<ExtentRecord> = blocks.iter().map(|(_, e)| *e).collect();
                t.add_extents_space(&added)?;
            }
            t.put_inode(inode, &ino)?;
            t.put_container(&name, &c)
        })?;
        Ok(())
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn flush(&self) -> Result<(), VdeError> {
        let txg = self.inner.current_txg()?;
        self.inner.sync(txg)
    }

    /// Reads as of a snapshot (its txg from [`crate::Vde::snapshots`]).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn read_at_snapshot(
        &self,
        buf: &mut [u8],
        off: u64,
        snapshot_txg: u64,
    ) -> Result<(), VdeError> {
        self.read_inner(buf, off, Some(snapshot_txg))
    }
}
