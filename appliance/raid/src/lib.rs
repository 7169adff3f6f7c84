//! Compound block devices: drives combined into one device that survives drive failures,
//! heals itself, and never returns wrong data.
//!
//! Levels: JBOD, RAID-0, RAID-1 (n-way), RAID-10 (near layout), RAID-5 and RAID-6 (any aligned
//! write; read-modify-write protected by a journal that closes the write hole), and RAID-Z1/Z2/Z3
//! (parity 1/2/3; full-stripe writes only in the stripe region, plus a mirrored small-write
//! region with the same fault tolerance, so there is never a read-modify-write). Parity is
//! Reed-Solomon over GF(2^8) (see [`gf`]).
//!
//! Every member carries the array's superblock (twice), a write-intent bitmap, and for RAID-5/6
//! the journal. [`Array::assemble`] takes whatever members are present, rejects stale and
//! foreign ones with a reason, and starts degraded when the level allows. Failed members are
//! replaced from hot spares in the background ([`jobs`]); [`Array::scrub`] verifies and
//! repairs; [`Array::read_alternatives`] and [`Array::repair_range`] let the layer above heal a
//! range whose checksum failed.

#![deny(missing_docs)]

mod array;
mod assemble;
mod bitmap;
mod errors;
pub mod gf;
pub mod jobs;
mod journal;
pub mod layout;
mod level;
pub mod parity;
pub mod plan;
mod scrub;
mod simd;
pub mod superblock;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dw_blockdev::{BlockDev, DevInfo, IoError, IoOp};
use uuid::Uuid;

pub use assemble::{AssembleOptions, Assembled, CreateSpec, DEFAULT_CHUNK};
pub use errors::{ArrayIoError, AssembleError, CreateError, ManageError, Rejected};
pub use jobs::{JobKind, JobStatus};
pub use level::{Level, ParseLevelError};
pub use scrub::{Alternative, Finding, ScrubOptions, ScrubReport};

use array::{Inner, RoleState};

/// Entry points for the fuzz targets (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the journal scanner and record parsers over `region`.
    pub fn scan_journal(region: &[u8]) -> usize {
        let a = uuid::Uuid::from_bytes([1; 16]);
        let m = uuid::Uuid::from_bytes([2; 16]);
        let _ = crate::journal::RecordHeader::decode(region, &a, &m);
        let _ = crate::journal::decode_checkpoint(region, &a, &m);
        let mut b = crate::bitmap::Bitmap::new(a, 4096, 70_000);
        let _ = b.merge_page(0, region);
        crate::journal::scan(region, &a, &m).1.len()
    }

    /// Builds a journal region from fuzzer bytes: a checkpoint, records with fuzzer-chosen
    /// fields (valid checksums), then byte damage from the remaining input.
    #[must_use]
    pub fn build_journal_region(data: &[u8]) -> Vec<u8> {
        let a = uuid::Uuid::from_bytes([1; 16]);
        let m = uuid::Uuid::from_bytes([2; 16]);
        let mut region = vec![0u8; 128 * 1024];
        let mut it = data.iter().copied();
        let mut next = || it.next().unwrap_or(0);
        let ckpt = u64::from(next());
        region[..4096].copy_from_slice(&crate::journal::encode_checkpoint(&a, &m, 1, ckpt));
        let mut at = 8192usize;
        for _ in 0..(next() % 12) {
            let blocks = u64::from(next() % 4) + 1;
            let len = blocks * 4096;
            if at + 4096 + usize::try_from(len).unwrap_or(0) > region.len() {
                break;
            }
            let fill = next();
            let payload = vec![fill; usize::try_from(len).unwrap_or(0)];
            let extra = next() % 4;
            let mut participants = vec![m];
            for i in 0..extra {
                participants.push(uuid::Uuid::from_bytes([i + 3; 16]));
            }
            let h = crate::journal::RecordHeader {
                array: a,
                member: m,
                seq: u64::from(next()),
                stripe: u64::from(next()),
                row_off: u64::from(next() % 16) * 4096,
                row_len: len,
                role: u16::from(next() % 8),
                payload_crc: crc32c::crc32c(&payload),
                participants,
            };
            region[at..at + 4096].copy_from_slice(&h.encode());
            region[at + 4096..at + 4096 + payload.len()].copy_from_slice(&payload);
            at += 4096 + payload.len() + 4096 * usize::from(next() % 3);
        }
        // Damage: (offset, value) pairs.
        loop {
            let (x, y, v) = (next(), next(), next());
            if x == 0 && y == 0 && v == 0 {
                break;
            }
            let off = (usize::from(x) << 9 | usize::from(y) << 1) % region.len();
            region[off] = v;
        }
        region
    }
}
use superblock::{Entry, EntryState, FailReason};

/// A running array. Dropping it stops background jobs without marking the array clean (as a
/// crash would); [`Array::close`] shuts it down cleanly.
#[derive(Debug)]
pub struct Array {
    inner: Arc<Inner>,
}

/// Overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayState {
    /// Every member in sync.
    Healthy,
    /// Serving, with less redundancy than designed.
    Degraded,
    /// Too many members lost: no I/O is served.
    Offline,
}

/// One member as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Member identity.
    pub uuid: Uuid,
    /// Device identity, when present.
    pub device: Option<String>,
    /// Layout role (None for spares).
    pub role: Option<usize>,
    /// State.
    pub state: MemberState,
}

/// A member's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    /// Current.
    InSync,
    /// Being rebuilt; bytes done of total.
    Rebuilding {
        /// Bytes rebuilt.
        done_bytes: u64,
        /// Bytes to rebuild.
        total_bytes: u64,
    },
    /// Being filled to replace the role's current member.
    Replacing {
        /// Bytes copied.
        done_bytes: u64,
        /// Bytes to copy.
        total_bytes: u64,
    },
    /// Hot spare.
    Spare,
    /// Failed or removed.
    Failed {
        /// Why.
        reason: String,
    },
    /// In the table but its device is not attached.
    Absent,
}

/// Counters since assembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArrayCounters {
    /// Reads served by reconstruction.
    pub reconstructed_reads: u64,
    /// Media read errors rewritten from redundancy.
    pub read_errors_repaired: u64,
    /// Journal records written.
    pub journal_records: u64,
    /// Journal checkpoints written.
    pub checkpoints: u64,
    /// Bitmap page writes.
    pub bitmap_writes: u64,
}

/// A snapshot of an array for people and programs.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayStatus {
    /// Identity.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// Level.
    pub level: Level,
    /// Logical size in bytes.
    pub size: u64,
    /// Chunk size in bytes.
    pub chunk: u64,
    /// State.
    pub state: ArrayState,
    /// Why it is offline.
    pub offline_reason: Option<String>,
    /// Members and spares.
    pub members: Vec<MemberStatus>,
    /// Background job, if any ran since assembly.
    pub job: Option<JobStatus>,
    /// Metadata generation.
    pub generation: u64,
    /// Member capacity left unused because the members differ in size: every member of a
    /// striped or mirrored level uses as many rows as the smallest one (JBOD uses each in full).
    /// Replacing the smallest members by larger ones does not grow the array.
    pub wasted_bytes: u64,
    /// Counters.
    pub counters: ArrayCounters,
}

/// What the layer above needs to know to write efficiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayGeometry {
    /// Logical size.
    pub size: u64,
    /// Chunk size.
    pub chunk: u64,
    /// Bytes of one full stripe (the unit writes should come in; chunk for non-parity levels).
    pub stripe_bytes: u64,
    /// `[0, small_write_end)` accepts any 4 KiB-aligned write; beyond it (RAID-Z) only whole
    /// stripes. Equals `size` for every other level.
    pub small_write_end: u64,
    /// Whether beyond `small_write_end` only full stripes are accepted.
    pub full_stripe_only: bool,
    /// Members that may fail without data loss.
    pub fault_tolerance: usize,
}

impl Array {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Array identity.
    #[must_use]
    pub fn uuid(&self) -> Uuid {
        self.inner.geom.uuid
    }

    /// Array name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.geom.name
    }

    /// Level.
    #[must_use]
    pub fn level(&self) -> Level {
        self.inner.layout().level
    }

    /// Logical size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.layout().size()
    }

    /// Layout details.
    #[must_use]
    pub fn layout(&self) -> &layout::Layout {
        self.inner.layout()
    }

    /// Geometry for the layer above.
    #[must_use]
    pub fn geometry(&self) -> ArrayGeometry {
        let l = self.inner.layout();
        let z = l.level.is_z();
        ArrayGeometry {
            size: l.size(),
            chunk: l.chunk,
            stripe_bytes: if l.p() > 0 { l.stripe_bytes() } else { l.chunk },
            small_write_end: if z { l.mirror_bytes() } else { l.size() },
            full_stripe_only: z,
            fault_tolerance: l.level.tolerance(l.n, l.copies),
        }
    }

    /// Reads `buf.len()` bytes at `off` (4 KiB aligned), reconstructing from redundancy as
    /// needed.
    ///
    /// # Errors
    /// [`ArrayIoError`].
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), ArrayIoError> {
        self.inner.read(off, buf)
    }

    /// Writes `data` at `off` (4 KiB aligned; RAID-Z: whole stripes beyond the small-write
    /// region). Durable after the next [`Array::flush`].
    ///
    /// # Errors
    /// [`ArrayIoError`]; nothing is written when the array is offline.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), ArrayIoError> {
        self.inner.write(off, data)
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// [`ArrayIoError`].
    pub fn flush(&self) -> Result<(), ArrayIoError> {
        self.inner.flush()
    }

    /// Deallocates a range; it reads back as zeros (RAID-Z stripe region: whole stripes only,
    /// partial stripes are left as they are).
    ///
    /// # Errors
    /// [`ArrayIoError`].
    pub fn discard(&self, off: u64, len: u64) -> Result<(), ArrayIoError> {
        self.inner.discard(off, len)
    }

    /// The current state of the array, its members and its job.
    #[must_use]
    pub fn status(&self) -> ArrayStatus {
        let inner = &self.inner;
        let l = inner.layout();
        let snap = inner.snapshot();
        let c = inner.control.lock();
        let total = l.rows * l.chunk;
        let members = c
            .entries
            .iter()
            .map(|e| {
                let device = c.devices.get(&e.uuid).map(|d| d.info().id.clone());
                let done = c
                    .progress
                    .get(&e.uuid)
                    .map_or(e.recovery_rows, |p| p.load(Ordering::Relaxed))
                    * l.chunk;
                let state = match (e.state, device.is_some()) {
                    (EntryState::Failed, _) => MemberState::Failed {
                        reason: e.reason.describe().to_owned(),
                    },
                    (_, false) => MemberState::Absent,
                    (EntryState::InSync, true) => MemberState::InSync,
                    (EntryState::Rebuilding, true) => MemberState::Rebuilding {
                        done_bytes: done,
                        total_bytes: total,
                    },
                    (EntryState::Replacement, true) => MemberState::Replacing {
                        done_bytes: done,
                        total_bytes: total,
                    },
                    (EntryState::Spare, true) => MemberState::Spare,
                };
                MemberStatus {
                    uuid: e.uuid,
                    device,
                    role: e.role.map(usize::from),
                    state,
                }
            })
            .collect();
        let state = if snap.offline.is_some() {
            ArrayState::Offline
        } else if snap.degraded_roles().is_empty() {
            ArrayState::Healthy
        } else {
            ArrayState::Degraded
        };
        let k = &inner.counters;
        ArrayStatus {
            uuid: inner.geom.uuid,
            name: inner.geom.name.clone(),
            level: l.level,
            size: l.size(),
            chunk: l.chunk,
            state,
            offline_reason: snap.offline.clone(),
            members,
            job: inner.jobs.status(),
            generation: c.generation,
            wasted_bytes: inner.wasted_bytes(&c),
            counters: ArrayCounters {
                reconstructed_reads: k.reconstructed_reads.load(Ordering::Relaxed),
                read_errors_repaired: k.read_errors_repaired.load(Ordering::Relaxed),
                journal_records: k.journal_records.load(Ordering::Relaxed),
                checkpoints: k.checkpoints.load(Ordering::Relaxed),
                bitmap_writes: k.bitmap_writes.load(Ordering::Relaxed),
            },
        }
    }

    /// The running or last background job.
    #[must_use]
    pub fn job(&self) -> Option<JobStatus> {
        self.inner.jobs.status()
    }

    /// Waits until the running background job (rebuild, replace, resync) ends.
    pub fn wait_idle(&self) {
        self.inner.jobs.wait();
    }

    /// Limits background jobs to `bytes_per_sec` (0 = unlimited).
    pub fn set_throttle(&self, bytes_per_sec: u64) {
        self.inner
            .jobs
            .throttle
            .store(bytes_per_sec, Ordering::Relaxed);
    }

    /// For the crash tests only: turns off the RAID-5/6 journal and/or the write-intent bitmap
    /// of this running array, so that a test can show the crash checks catch exactly what they
    /// prevent (the write hole; stale parity after a crash). Never use it on data you keep.
    #[doc(hidden)]
    pub fn testing_disable_protection(&self, journal: bool, bitmap: bool) {
        if journal || bitmap {
            tracing::warn!(
                "array {}: TEST SWITCH: journal {}, bitmap {}",
                self.inner.geom.name,
                if journal { "off" } else { "on" },
                if bitmap { "off" } else { "on" }
            );
        }
        self.inner
            .testing_no_journal
            .store(journal, Ordering::Relaxed);
        self.inner
            .testing_no_bitmap
            .store(bitmap, Ordering::Relaxed);
    }

    /// Whether a failed role is rebuilt onto a spare automatically.
    pub fn set_auto_rebuild(&self, on: bool) {
        self.inner.auto_rebuild.store(on, Ordering::Relaxed);
    }

    fn check_joinable(&self, dev: &dyn BlockDev) -> Result<(), ManageError> {
        let l = self.inner.layout();
        let need = self.inner.geom.data_offset
            + l.rows.max(l.jbod_rows.iter().copied().max().unwrap_or(0)) * l.chunk
            + 2 * superblock::SB_SIZE as u64;
        if dev.info().size < need {
            return Err(ManageError::Unsuitable {
                dev: dev.info().id.clone(),
                reason: format!(
                    "{} bytes, members of this array need {need}",
                    dev.info().size
                ),
            });
        }
        if dev.info().logical_sector > 4096 {
            return Err(ManageError::Unsuitable {
                dev: dev.info().id.clone(),
                reason: "sectors larger than 4096 bytes".into(),
            });
        }
        let c = self.inner.control.lock();
        if c.devices.values().any(|d| d.info().id == dev.info().id) {
            return Err(ManageError::Unsuitable {
                dev: dev.info().id.clone(),
                reason: "it is already part of this array".into(),
            });
        }
        Ok(())
    }

    /// Adds a hot spare. If a role is missing and auto-rebuild is on, its rebuild starts.
    ///
    /// # Errors
    /// [`ManageError`] when the device is unsuitable or the array is offline.
    pub fn add_spare(&self, dev: Arc<dyn BlockDev>) -> Result<Uuid, ManageError> {
        if let Some(r) = &self.inner.snapshot().offline {
            return Err(ManageError::Offline(r.clone()));
        }
        self.check_joinable(dev.as_ref())?;
        let l = self.inner.layout();
        let u = Uuid::new_v4();
        // Old metadata on the device must not be mistaken for ours later.
        let zeros = dw_blockdev::AlignedBuf::zeroed(
            usize::try_from(self.inner.geom.data_offset).unwrap_or(0),
        );
        dev.write_at(&zeros, 0)?;
        {
            let mut c = self.inner.control.lock();
            c.make_room(1)?;
            c.entries.push(Entry {
                uuid: u,
                state: EntryState::Spare,
                reason: FailReason::None,
                role: None,
                recovery_rows: 0,
                data_rows: l.rows.max(l.jbod_rows.iter().copied().max().unwrap_or(0)),
            });
            c.devices.insert(u, dev);
            self.inner.commit(&mut c);
        }
        if self.inner.auto_rebuild.load(Ordering::Relaxed) {
            jobs::maybe_start_rebuild(&self.inner);
        }
        Ok(u)
    }

    /// Marks the member of `role` failed (an administrator pulling it). Its data is not used
    /// again; a spare takes over if auto-rebuild is on.
    ///
    /// # Errors
    /// [`ManageError`] for an unknown role, or when that would take the array offline.
    pub fn remove_member(&self, role: usize) -> Result<(), ManageError> {
        let l = self.inner.layout();
        if role >= l.n {
            return Err(ManageError::NoSuchRole { role, roles: l.n });
        }
        let snap = self.inner.snapshot();
        let Some(m) = snap.roles[role].member.clone() else {
            return Err(ManageError::InvalidState(format!(
                "role {role} has no member"
            )));
        };
        // Refuse if it would make data unreadable.
        let mut probe = (*snap).clone();
        probe.roles[role].member = None;
        probe.roles[role].state = RoleState::Missing;
        if let Some(r) = self.inner.offline_reason(&probe) {
            return Err(ManageError::InvalidState(format!(
                "removing role {role} would take the array offline: {r}"
            )));
        }
        self.inner
            .fail_device(m.uuid, FailReason::Removed, "removed by an administrator");
        Ok(())
    }

    /// Replaces the member of `role` with `new` (or the first spare) while it keeps serving:
    /// the new device is filled from the old one (from redundancy where the old one cannot be
    /// read) and then takes over. Use it before a drive that warns of failure dies.
    ///
    /// # Errors
    /// [`ManageError`].
    pub fn replace_member(
        &self,
        role: usize,
        new: Option<Arc<dyn BlockDev>>,
    ) -> Result<Uuid, ManageError> {
        let l = self.inner.layout();
        if role >= l.n {
            return Err(ManageError::NoSuchRole { role, roles: l.n });
        }
        if let Some(k) = self.inner.jobs.busy() {
            return Err(ManageError::Busy(format!("{k:?}")));
        }
        let snap = self.inner.snapshot();
        if let Some(r) = &snap.offline {
            return Err(ManageError::Offline(r.clone()));
        }
        if l.level.tolerance(l.n, l.copies) == 0
            && l.level != Level::Raid0
            && l.level != Level::Jbod
        {
            return Err(ManageError::InvalidState("no redundancy".into()));
        }
        let role_missing = snap.roles[role].member.is_none();
        if let Some(d) = &new {
            self.check_joinable(d.as_ref())?;
            let zeros = dw_blockdev::AlignedBuf::zeroed(
                usize::try_from(self.inner.geom.data_offset).unwrap_or(0),
            );
            d.write_at(&zeros, 0)?;
        }
        // A journal record must never be judged by a participant list the new device was not
        // in; start from a clean journal.
        self.inner
            .checkpoint(true)
            .map_err(|e| ManageError::InvalidState(e.to_string()))?;
        let uuid = {
            let mut c = self.inner.control.lock();
            let rows = l.rows.max(l.jbod_rows.get(role).copied().unwrap_or(0));
            let uuid =
                match new {
                    Some(d) => {
                        c.make_room(1)?;
                        let u = Uuid::new_v4();
                        c.entries.push(Entry {
                            uuid: u,
                            state: EntryState::Spare,
                            reason: FailReason::None,
                            role: None,
                            recovery_rows: 0,
                            data_rows: rows,
                        });
                        c.devices.insert(u, d);
                        u
                    }
                    None => snap.spares.first().map(|m| m.uuid).ok_or_else(|| {
                        ManageError::InvalidState("no spare to replace with".into())
                    })?,
                };
            if let Some(e) = c.entries.iter_mut().find(|e| e.uuid == uuid) {
                e.state = if role_missing {
                    EntryState::Rebuilding
                } else {
                    EntryState::Replacement
                };
                e.role = u16::try_from(role).ok();
                e.recovery_rows = 0;
                e.data_rows = rows;
            }
            c.progress
                .insert(uuid, Arc::new(std::sync::atomic::AtomicU64::new(0)));
            self.inner.commit(&mut c);
            uuid
        };
        if !jobs::start_rebuild(&self.inner, role, uuid) {
            return Err(ManageError::Busy("could not start the job".into()));
        }
        Ok(uuid)
    }

    /// Verifies every stripe and mirror and (with `repair`) fixes what redundancy proves wrong.
    /// Runs in the calling thread.
    ///
    /// # Errors
    /// [`ManageError::Offline`].
    pub fn scrub(&self, opts: &ScrubOptions) -> Result<ScrubReport, ManageError> {
        if let Some(r) = &self.inner.snapshot().offline {
            return Err(ManageError::Offline(r.clone()));
        }
        Ok(self.inner.scrub(opts))
    }

    /// The other reconstructions of `[off, off + len)` (for a range whose checksum failed):
    /// one per mirror copy, or one per set of members presumed wrong.
    ///
    /// # Errors
    /// [`ArrayIoError`] for bad ranges.
    pub fn read_alternatives(&self, off: u64, len: u64) -> Result<Vec<Alternative>, ArrayIoError> {
        self.inner.read_alternatives(off, len)
    }

    /// Rewrites `[off, off + good.len())` so that every copy and parity agrees with `good` (the
    /// data the layer above verified), writing only what differs.
    ///
    /// # Errors
    /// [`ArrayIoError`].
    pub fn repair_range(&self, off: u64, good: &[u8]) -> Result<(), ArrayIoError> {
        self.inner.repair_range(off, good)
    }

    /// Shuts down cleanly: stops jobs (a rebuild resumes at next assembly), flushes, empties
    /// the journal and bitmap, and marks the array clean.
    ///
    /// # Errors
    /// [`ArrayIoError`] when the final flush fails.
    pub fn close(self) -> Result<(), ArrayIoError> {
        self.inner.jobs.stop();
        if self.inner.snapshot().offline.is_some() {
            return Ok(());
        }
        self.inner.flush()?;
        self.inner.checkpoint(true)?;
        if self.inner.resync_pending.lock().is_empty()
            && let Some(bm) = &self.inner.bitmap
        {
            let mut b = bm.lock();
            let pages = b.clear_all();
            let blocks: Vec<(u64, Vec<u8>)> =
                pages.iter().map(|&p| (p, b.encode_page(p))).collect();
            drop(b);
            self.inner
                .write_bitmap_pages(&self.inner.snapshot(), &blocks, true);
        }
        let mut c = self.inner.control.lock();
        c.clean = self.inner.resync_pending.lock().is_empty();
        self.inner.commit(&mut c);
        Ok(())
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        self.inner.jobs.stop();
    }
}

fn to_io_error(id: &str, op: IoOp, e: ArrayIoError) -> IoError {
    match e {
        ArrayIoError::Offline { reason, .. } => IoError::DeviceFailed {
            dev: id.to_owned(),
            reason,
        },
        ArrayIoError::OutOfRange { off, len, size } => IoError::OutOfRange {
            dev: id.to_owned(),
            op,
            offset: off,
            len,
            size,
        },
        ArrayIoError::Misaligned { off, len } => IoError::Misaligned {
            dev: id.to_owned(),
            op,
            offset: off,
            len,
            align: 4096,
        },
        ArrayIoError::Unrecoverable { off, reason } => IoError::Io {
            dev: id.to_owned(),
            op,
            offset: off,
            len: 0,
            source: std::io::Error::other(reason),
        },
        e @ ArrayIoError::NotFullStripe { .. } => IoError::Unsupported {
            dev: id.to_owned(),
            op,
            reason: e.to_string(),
        },
        ArrayIoError::Io(e) => e,
    }
}

impl BlockDev for Array {
    fn info(&self) -> &DevInfo {
        &self.inner.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        self.read(offset, buf)
            .map_err(|e| to_io_error(&self.inner.info.id, IoOp::Read, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        self.write(offset, buf)
            .map_err(|e| to_io_error(&self.inner.info.id, IoOp::Write, e))
    }

    fn flush(&self) -> Result<(), IoError> {
        Array::flush(self).map_err(|e| to_io_error(&self.inner.info.id, IoOp::Flush, e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        Array::discard(self, offset, len)
            .map_err(|e| to_io_error(&self.inner.info.id, IoOp::Discard, e))
    }
}
