//! Background maintenance: segment cleaning and re-encryption after a key rotation.
//!
//! Segments are written once and reused only when every extent in them is dead, so scattered
//! overwrites (volumes) leave segments mostly dead. The cleaner picks the sealed segments with
//! the least live data, copies their live (and snapshot-retained) extents into the current
//! segments — the stored bytes move as they are: the AEAD binding covers what an extent is, not
//! where it lies — and releases them. Re-encryption after a rotation rewrites every extent whose
//! key generation is older than the current one; it is resumable because each extent records
//! its generation.
//!
//! Both update an extent's record only if it is still the same extent (same id) when the
//! transaction runs, so a concurrent overwrite always wins; the orphaned copy is just garbage in
//! its segment.

use std::collections::{BTreeMap, HashSet};

use redb::{ReadableDatabase, ReadableTable};

use crate::engine::Inner;
use crate::errors::VdeError;
use crate::records::{
    EXTENTS, ExtentRecord, INODES, InodeRecord, SEG_SEALED, SEGMENTS, SegmentRecord,
};

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments emptied.
    pub segments: u64,
    /// Extents moved.
    pub extents_moved: u64,
    /// Stored bytes moved.
    pub bytes_moved: u64,
}

/// What a re-encryption step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyProgress {
    /// Extents re-encrypted in this step.
    pub rewritten: u64,
    /// Extents still encrypted with older generations.
    pub remaining: u64,
}

fn corrupt(e: impl std::fmt::Display) -> VdeError {
    VdeError::Corrupt(e.to_string())
}

type ExtentKey = (u64, u64, u64);

impl Inner {
    /// Sealed segments whose live data is at most `max_live_ratio` of the segment, emptiest
    /// first, at most `max`.
    fn clean_candidates(&self, max: usize, max_live_ratio: f64) -> Result<Vec<u64>, VdeError> {
        let seg_bytes = self.segs.layout.seg_bytes;
        let rx = self.db.begin_read()?;
        let t = rx.open_table(SEGMENTS)?;
        let mut c: Vec<(u64, u64)> = Vec::new();
        for r in t.iter()? {
            let (k, v) = r?;
            let s = SegmentRecord::decode(v.value()).map_err(corrupt)?;
            #[allow(clippy::cast_precision_loss)]
            let ratio = s.live_bytes as f64 / seg_bytes as f64;
            // A segment a writer may still add extents to is not emptied under it.
            if s.state == SEG_SEALED && ratio <= max_live_ratio && self.segs.quiescent(k.value()) {
                c.push((s.live_bytes, k.value()));
            }
        }
        c.sort_unstable();
        Ok(c.into_iter().take(max).map(|x| x.1).collect())
    }

    /// Every extent record (live or retained) whose data lies in one of `segs`.
    fn extents_in(
        &self,
        segs: &HashSet<u64>,
    ) -> Result<Vec<(ExtentKey, ExtentRecord, u64)>, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(EXTENTS)?;
        let inodes = rx.open_table(INODES)?;
        let mut owners: BTreeMap<u64, u64> = BTreeMap::new();
        let mut out = Vec::new();
        for r in t.iter()? {
            let (k, v) = r?;
            let e = ExtentRecord::decode(v.value()).map_err(corrupt)?;
            if self
                .segs
                .layout
                .segment_of(e.addr)
                .is_some_and(|s| segs.contains(&s))
            {
                let inode = k.value().0;
                let container = match owners.get(&inode) {
                    Some(c) => *c,
                    None => {
                        let c = inodes
                            .get(inode)?
                            .map(|x| InodeRecord::decode(x.value()))
                            .transpose()
                            .map_err(corrupt)?
                            .map_or(0, |i| i.container);
                        owners.insert(inode, c);
                        c
                    }
                };
                out.push((k.value(), e, container));
            }
        }
        Ok(out)
    }

    /// Moves extents to new places, updating records that still hold the same extent.
    fn relocate(&self, moves: &[(ExtentKey, ExtentRecord, ExtentRecord)]) -> Result<u64, VdeError> {
        if moves.is_empty() {
            return Ok(0);
        }
        let (moved, _) = self.txn(|t| {
            let mut moved = 0;
            for (k, old, new) in moves {
                let current =
                    t.tx.open_table(EXTENTS)?
                        .get(*k)?
                        .map(|v| ExtentRecord::decode(v.value()))
                        .transpose()
                        .map_err(corrupt)?;
                let Some(cur) = current else { continue };
                if cur.extent_id != old.extent_id || cur.addr != old.addr {
                    continue;
                }
                let mut n = *new;
                n.death = cur.death;
                t.free_extent_space(&cur)?;
                t.add_extent_space(&n)?;
                t.tx.open_table(EXTENTS)?
                    .insert(*k, n.encode().as_slice())?;
                moved += 1;
            }
            Ok(moved)
        })?;
        Ok(moved)
    }

    /// Empties up to `max_segments` of the emptiest sealed segments (at most half live).
    pub(crate) fn clean(&self, max_segments: usize) -> Result<CleanReport, VdeError> {
        self.writable()?;
        let victims: HashSet<u64> = self
            .clean_candidates(max_segments, 0.5)?
            .into_iter()
            .collect();
        if victims.is_empty() {
            return Ok(CleanReport::default());
        }
        // Held until the moved extents are recorded (segments.rs).
        let writer = self.segs.writer();
        let found = self.extents_in(&victims)?;
        let mut report = CleanReport {
            segments: victims.len() as u64,
            ..CleanReport::default()
        };
        let mut moves = Vec::with_capacity(found.len());
        for (k, e, _) in found {
            let padded = u64::from(e.stored_len).div_ceil(4096) * 4096;
            let mut buf = dw_blockdev::AlignedBuf::zeroed(usize::try_from(padded).unwrap_or(0));
            if !self.segs.read_buffered(e.addr, &mut buf) {
                self.backing.dev().read_at(&mut buf, e.addr)?;
            }
            let stored = usize::try_from(e.stored_len).unwrap_or(0);
            let bytes = if *blake3::hash(&buf[..stored]).as_bytes() == e.checksum {
                buf[..stored].to_vec()
            } else {
                self.heal_extent(&e)?
            };
            let addr = self.segs.append_reserved(&bytes)?;
            report.extents_moved += 1;
            report.bytes_moved += u64::from(e.stored_len);
            moves.push((k, e, ExtentRecord { addr, ..e }));
            if moves.len() >= 1024 {
                self.relocate(&std::mem::take(&mut moves))?;
            }
        }
        self.relocate(&moves)?;
        drop(writer);
        let txg = self.current_txg()?;
        self.sync(txg)?;
        // The victims are released by the commit that freed their last extents; one more
        // commit makes that durable so they are reusable.
        self.durable_commit()?;
        tracing::info!(
            "VDE {}: cleaned {} segments, moved {} extents ({} bytes)",
            self.uuid,
            report.segments,
            report.extents_moved,
            report.bytes_moved
        );
        Ok(report)
    }

    /// Re-encrypts up to `batch` extents written under older key generations with the current
    /// one. Call until `remaining` is 0; then the older keys are no longer needed.
    pub(crate) fn reencrypt_step(&self, batch: usize) -> Result<RekeyProgress, VdeError> {
        self.writable()?;
        let current = self.keys.read().current;
        let mut todo: Vec<(ExtentKey, ExtentRecord, u64)> = Vec::new();
        let mut remaining = 0u64;
        {
            let rx = self.db.begin_read()?;
            let t = rx.open_table(EXTENTS)?;
            let inodes = rx.open_table(INODES)?;
            for r in t.iter()? {
                let (k, v) = r?;
                let e = ExtentRecord::decode(v.value()).map_err(corrupt)?;
                if e.flags & crate::records::EXT_ENCRYPTED != 0 && e.key_generation != current {
                    remaining += 1;
                    if todo.len() < batch {
                        let inode = k.value().0;
                        let c = inodes
                            .get(inode)?
                            .map(|x| InodeRecord::decode(x.value()))
                            .transpose()
                            .map_err(corrupt)?
                            .map_or(0, |i| i.container);
                        todo.push((k.value(), e, c));
                    }
                }
            }
        }
        let writer = self.segs.writer();
        let mut moves = Vec::new();
        for (k, e, container) in &todo {
            let (inode, offset, _) = *k;
            moves.push((*k, *e, self.reseal(e, *container, inode, offset)?));
        }
        let rewritten = self.relocate(&moves)?;
        drop(writer);
        let txg = self.current_txg()?;
        self.sync(txg)?;
        Ok(RekeyProgress {
            rewritten,
            remaining: remaining.saturating_sub(rewritten),
        })
    }

    /// Reads an extent's stored bytes through the heal path (for relocation).
    fn heal_extent(&self, e: &ExtentRecord) -> Result<Vec<u8>, VdeError> {
        let padded = u64::from(e.stored_len).div_ceil(4096) * 4096;
        let alts = self.backing.alternatives(e.addr, padded)?;
        let stored = usize::try_from(e.stored_len).unwrap_or(0);
        alts.into_iter()
            .find(|a| a.len() >= stored && *blake3::hash(&a[..stored]).as_bytes() == e.checksum)
            .map(|a| a[..stored].to_vec())
            .ok_or(VdeError::Unrecoverable {
                addr: e.addr,
                len: u64::from(e.stored_len),
                detail: "while moving it".into(),
            })
    }
}
