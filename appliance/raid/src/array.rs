//! A running array: member state, the read and write paths, and metadata commits.
//!
//! Concurrency: any number of threads may read and write. Operations on one stripe (or one
//! mirrored chunk) are serialised by a sharded lock table; reads of healthy stripes take no lock.
//! Member state is an immutable snapshot replaced on every change, so an operation works on one
//! consistent view and, when a member fails under it, retries with the next view. Lock order:
//! stripe lock, then bitmap, then journal, then control (superblock commits); never the reverse.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dw_blockdev::{
    AlignedBuf, BlockDev, DevInfo, IoBuf, IoError, IoOp, IoReq, run_batch, run_flush,
};
use parking_lot::{Mutex, MutexGuard, RwLock};
use uuid::Uuid;

use crate::Level;
use crate::bitmap::{self, Bitmap};
use crate::errors::{ArrayIoError, ManageError};
use crate::jobs::JobSlot;
use crate::journal::{self, RecordHeader, Ring};
use crate::layout::{Layout, Region};
use crate::parity;
use crate::superblock::{self, Entry, EntryState, FailReason, SB_PRIMARY, Superblock};

/// Array sector: every request is aligned to it.
pub const SECTOR: u64 = 4096;
const LOCK_SHARDS: usize = 512;
/// How often a member failure may be absorbed within one request before giving up.
const MAX_RETRIES: usize = 8;
/// Media read errors tolerated per member (each one is repaired) before it is failed, as md.
const MAX_READ_ERRORS: u32 = 20;

thread_local! {
    /// Chunk-sized buffers this thread's stripe operations reuse: allocating and zeroing a
    /// fresh buffer per shard per stripe is an extra pass over memory on every full-stripe
    /// write and degraded read.
    static POOL: std::cell::RefCell<Vec<AlignedBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread (a stripe's worth for the widest common arrays).
const POOL_MAX: usize = 24;

/// `n` buffers of `len` bytes with unspecified contents (reused from this thread's pool);
/// callers overwrite them completely or ignore what they do not overwrite.
pub(crate) fn take_bufs(n: usize, len: usize) -> Vec<AlignedBuf> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        (0..n)
            .map(|_| {
                let mut b = pool.pop().unwrap_or_else(|| AlignedBuf::zeroed(len));
                b.resize(len);
                b
            })
            .collect()
    })
}

/// Returns buffers to this thread's pool.
pub(crate) fn give_bufs(bufs: Vec<AlignedBuf>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        for b in bufs.into_iter().filter(|b| !b.is_empty()) {
            if pool.len() >= POOL_MAX {
                break;
            }
            pool.push(b);
        }
    });
}

/// Fixed geometry of an array.
#[derive(Debug, Clone)]
pub(crate) struct Geom {
    pub layout: Layout,
    pub uuid: Uuid,
    pub name: String,
    pub created: u64,
    pub data_offset: u64,
    pub bitmap_offset: u64,
    pub bitmap_len: u64,
    pub bitmap_gran: u64,
    pub journal_offset: u64,
    pub journal_len: u64,
}

/// A member device with its identity.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub dev: Arc<dyn BlockDev>,
    pub uuid: Uuid,
}

#[derive(Debug, Clone)]
pub(crate) enum RoleState {
    InSync,
    /// Rows below the counter hold current data.
    Rebuilding(Arc<AtomicU64>),
    Missing,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleView {
    pub member: Option<Member>,
    pub state: RoleState,
    /// A device being filled to take over the role (proactive replacement).
    pub replacement: Option<(Member, Arc<AtomicU64>)>,
}

/// One consistent view of the members.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub roles: Vec<RoleView>,
    pub spares: Vec<Member>,
    pub offline: Option<String>,
}

impl Snapshot {
    /// The member that can serve `row` of `role`.
    pub fn readable(&self, role: usize, row: u64) -> Option<&Member> {
        let r = &self.roles[role];
        match &r.state {
            RoleState::InSync => r.member.as_ref(),
            RoleState::Rebuilding(done) if row < done.load(Ordering::Acquire) => r.member.as_ref(),
            _ => None,
        }
    }

    /// Every device that must receive writes for `role`.
    pub fn writers(&self, role: usize) -> impl Iterator<Item = &Member> {
        let r = &self.roles[role];
        r.member.iter().chain(r.replacement.iter().map(|(m, _)| m))
    }

    /// Roles that cannot serve every row (missing or still rebuilding).
    pub fn degraded_roles(&self) -> Vec<usize> {
        (0..self.roles.len())
            .filter(|&i| {
                !matches!(self.roles[i].state, RoleState::InSync) || self.roles[i].member.is_none()
            })
            .collect()
    }
}

/// Persistent state, changed only under the control lock and written with [`Inner::commit`].
#[derive(Debug)]
pub(crate) struct Control {
    pub generation: u64,
    pub clean: bool,
    pub entries: Vec<Entry>,
    pub devices: HashMap<Uuid, Arc<dyn BlockDev>>,
    pub progress: HashMap<Uuid, Arc<AtomicU64>>,
    pub offline: Option<String>,
}

impl Control {
    /// Makes room in the member table for `extra` more entries. Failed entries are what gets
    /// dropped, oldest first: their devices are detached and their data is never used again;
    /// they are kept only so that assembly can say why such a device is refused, and without
    /// its entry it is refused anyway ("not in the member table"). Live members and spares are
    /// never dropped.
    ///
    /// # Errors
    /// [`ManageError::TableFull`] when every entry is live.
    pub(crate) fn make_room(&mut self, extra: usize) -> Result<(), ManageError> {
        let max = superblock::MAX_ENTRIES;
        // Bounded: every iteration removes an entry or returns.
        while self.entries.len() + extra > max {
            let Some(i) = self
                .entries
                .iter()
                .position(|e| e.state == EntryState::Failed && !self.devices.contains_key(&e.uuid))
            else {
                return Err(ManageError::TableFull {
                    entries: self.entries.len(),
                    max,
                });
            };
            let e = self.entries.remove(i);
            self.progress.remove(&e.uuid);
            tracing::info!(
                "member table: dropped the entry of failed member {} ({}) to make room",
                e.uuid,
                e.reason.describe()
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct JournalState {
    pub next_seq: u64,
    pub in_flight: BTreeSet<u64>,
    pub durable_ckpt: u64,
    pub written_ckpt: u64,
    pub ckpt_counter: u64,
    pub rings: HashMap<Uuid, Ring>,
    /// Stripe -> newest journaled seq; a full-stripe write to a stripe with a live record is
    /// journaled too.
    pub live: HashMap<u64, u64>,
}

impl JournalState {
    fn stable_seq(&self) -> u64 {
        match self.in_flight.first() {
            Some(&s) => s - 1,
            None => self.next_seq - 1,
        }
    }
}

/// Counters an administrator (and the metrics exporter) can read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub reconstructed_reads: AtomicU64,
    pub read_errors_repaired: AtomicU64,
    pub journal_records: AtomicU64,
    pub checkpoints: AtomicU64,
    pub bitmap_writes: AtomicU64,
}

/// Shared state of an array, owned by the [`crate::Array`] handle and its background jobs.
#[derive(Debug)]
pub(crate) struct Inner {
    pub geom: Geom,
    pub control: Mutex<Control>,
    pub snap: RwLock<Arc<Snapshot>>,
    locks: Box<[Mutex<()>]>,
    pub bitmap: Option<Mutex<Bitmap>>,
    pub journal: Option<Mutex<JournalState>>,
    /// Signalled whenever a journaled transaction completes (frees journal space).
    journal_cv: parking_lot::Condvar,
    /// Serialises checkpoint writes so the value on disk only ever grows.
    ckpt_lock: Mutex<()>,
    /// Bitmap regions still to resynchronise (reads of mirrors there use the first copy).
    pub resync_pending: Mutex<BTreeSet<u64>>,
    pub counters: Counters,
    pub jobs: JobSlot,
    pub auto_rebuild: AtomicBool,
    pub info: DevInfo,
    read_errors: Mutex<HashMap<Uuid, u32>>,
    /// Test switches (see [`crate::Array::testing_disable_protection`]): skip the journal,
    /// skip the write-intent bitmap.
    pub testing_no_journal: AtomicBool,
    pub testing_no_bitmap: AtomicBool,
    /// A handle on itself, for starting background jobs from within.
    pub me: std::sync::OnceLock<std::sync::Weak<Inner>>,
    opened: std::time::Instant,
}

/// Unix time in seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ulen(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Inner {
    pub(crate) fn new(geom: Geom, control: Control, auto_rebuild: bool) -> Self {
        let layout = &geom.layout;
        let bitmap = (geom.bitmap_len > 0).then(|| {
            let regions = (layout.rows * layout.chunk).div_ceil(geom.bitmap_gran);
            Mutex::new(Bitmap::new(geom.uuid, geom.bitmap_gran, regions))
        });
        let journal = (geom.journal_len > 0).then(|| {
            Mutex::new(JournalState {
                next_seq: 1,
                in_flight: BTreeSet::new(),
                durable_ckpt: 0,
                written_ckpt: 0,
                ckpt_counter: 0,
                rings: HashMap::new(),
                live: HashMap::new(),
            })
        });
        let info = DevInfo {
            id: format!("array {} ({})", geom.name, geom.uuid),
            size: layout.size(),
            logical_sector: u32::try_from(SECTOR).unwrap_or(4096),
            physical_sector: u32::try_from(layout.chunk).unwrap_or(4096),
        };
        let inner = Self {
            geom,
            control: Mutex::new(control),
            snap: RwLock::new(Arc::new(Snapshot {
                roles: Vec::new(),
                spares: Vec::new(),
                offline: None,
            })),
            locks: (0..LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            bitmap,
            journal,
            journal_cv: parking_lot::Condvar::new(),
            ckpt_lock: Mutex::new(()),
            resync_pending: Mutex::new(BTreeSet::new()),
            counters: Counters::default(),
            jobs: JobSlot::default(),
            auto_rebuild: AtomicBool::new(auto_rebuild),
            info,
            read_errors: Mutex::new(HashMap::new()),
            testing_no_journal: AtomicBool::new(false),
            testing_no_bitmap: AtomicBool::new(false),
            me: std::sync::OnceLock::new(),
            opened: std::time::Instant::now(),
        };
        {
            let c = inner.control.lock();
            inner.publish(&c);
        }
        inner
    }

    /// Bytes of the attached members' capacity the layout leaves unused (mixed sizes).
    pub(crate) fn wasted_bytes(&self, c: &Control) -> u64 {
        let chunk = self.geom.layout.chunk;
        c.entries
            .iter()
            .filter(|e| matches!(e.state, EntryState::InSync | EntryState::Rebuilding))
            .filter_map(|e| {
                let d = c.devices.get(&e.uuid)?;
                let rows = crate::assemble::rows_of(d.info().size, self.geom.data_offset, chunk);
                Some(rows.saturating_sub(e.data_rows) * chunk)
            })
            .sum()
    }

    /// Seconds since the array was opened (the bitmap's idle clock).
    fn clock_secs(&self) -> u32 {
        u32::try_from(self.opened.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.geom.layout
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snap.read())
    }

    /// Absolute offset on a member of `within` bytes into data-region row `row`.
    pub(crate) fn moff(&self, row: u64, within: u64) -> u64 {
        self.geom.data_offset + row * self.geom.layout.chunk + within
    }

    pub(crate) fn lock_key(&self, key: u64) -> MutexGuard<'_, ()> {
        self.locks[ulen(key % LOCK_SHARDS as u64)].lock()
    }

    fn offline_error(&self, reason: &str) -> ArrayIoError {
        ArrayIoError::Offline {
            name: self.geom.name.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Builds the snapshot from the control state and publishes it.
    pub(crate) fn publish(&self, c: &Control) {
        let n = self.geom.layout.n;
        let mut roles = vec![
            RoleView {
                member: None,
                state: RoleState::Missing,
                replacement: None,
            };
            n
        ];
        let mut spares = Vec::new();
        for e in &c.entries {
            let Some(dev) = c.devices.get(&e.uuid) else {
                continue;
            };
            let m = Member {
                dev: Arc::clone(dev),
                uuid: e.uuid,
            };
            let progress = || {
                c.progress
                    .get(&e.uuid)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(AtomicU64::new(e.recovery_rows)))
            };
            match (e.state, e.role.map(usize::from)) {
                (EntryState::InSync, Some(r)) if r < n => {
                    roles[r].member = Some(m);
                    roles[r].state = RoleState::InSync;
                }
                (EntryState::Rebuilding, Some(r)) if r < n => {
                    roles[r].member = Some(m);
                    roles[r].state = RoleState::Rebuilding(progress());
                }
                (EntryState::Replacement, Some(r)) if r < n => {
                    roles[r].replacement = Some((m, progress()));
                }
                (EntryState::Spare, _) => spares.push(m),
                _ => {}
            }
        }
        let mut snap = Snapshot {
            roles,
            spares,
            offline: c.offline.clone(),
        };
        if snap.offline.is_none() {
            snap.offline = self.offline_reason(&snap);
        }
        *self.snap.write() = Arc::new(snap);
    }

    /// Why the array cannot serve every byte with these members, if it cannot.
    pub(crate) fn offline_reason(&self, snap: &Snapshot) -> Option<String> {
        let l = &self.geom.layout;
        let down = snap.degraded_roles();
        let describe = |roles: &[usize]| {
            roles
                .iter()
                .map(|r| format!("role {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match l.level {
            Level::Jbod | Level::Raid0 if !down.is_empty() => Some(format!(
                "{} without redundancy lost {}",
                l.level,
                describe(&down)
            )),
            Level::Raid1 | Level::Raid10 => {
                // Some chunk has every copy on a down role.
                (0..l.n as u64).find_map(|c| {
                    let (copies, _) = l.mirror_copies(c * l.chunk);
                    let roles: Vec<usize> = copies.iter().map(|x| x.0).collect();
                    roles.iter().all(|r| down.contains(r)).then(|| {
                        format!(
                            "every copy of some data is on a failed member ({})",
                            describe(&roles)
                        )
                    })
                })
            }
            l2 if l2.parity() > 0 && down.len() > l2.parity() => Some(format!(
                "{} members are down ({}) but {} survives at most {}",
                down.len(),
                describe(&down),
                l2,
                l2.parity()
            )),
            _ => None,
        }
    }

    fn check_online(&self, snap: &Snapshot) -> Result<(), ArrayIoError> {
        match &snap.offline {
            Some(r) => Err(self.offline_error(r)),
            None => Ok(()),
        }
    }

    fn check_range(&self, off: u64, len: u64) -> Result<(), ArrayIoError> {
        if !off.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(ArrayIoError::Misaligned { off, len });
        }
        match off.checked_add(len) {
            Some(end) if end <= self.info.size => Ok(()),
            _ => Err(ArrayIoError::OutOfRange {
                off,
                len,
                size: self.info.size,
            }),
        }
    }

    // ---------------------------------------------------------------- metadata commits

    /// Writes the member table to every live member (primary copies, flush, backup copies,
    /// flush). A member that fails to take it is failed and the commit repeats without it.
    pub(crate) fn commit(&self, c: &mut Control) {
        for _ in 0..=c.entries.len() {
            c.generation += 1;
            let targets: Vec<(Uuid, Arc<dyn BlockDev>)> = c
                .entries
                .iter()
                .filter(|e| e.state != EntryState::Failed)
                .filter_map(|e| c.devices.get(&e.uuid).map(|d| (e.uuid, Arc::clone(d))))
                .collect();
            let blocks: Vec<Vec<u8>> = targets
                .iter()
                .map(|(u, d)| self.superblock_for(c, *u, d.info().size).encode())
                .collect();
            let mut failed = BTreeSet::new();
            for backup in [false, true] {
                let mut reqs: Vec<IoReq<'_>> = targets
                    .iter()
                    .zip(&blocks)
                    .map(|((_, d), b)| IoReq {
                        dev: d.as_ref(),
                        offset: if backup {
                            superblock::backup_offset(d.info().size)
                        } else {
                            SB_PRIMARY
                        },
                        buf: IoBuf::Write(b),
                    })
                    .collect();
                for (i, r) in run_batch(&mut reqs).into_iter().enumerate() {
                    if let Err(e) = r {
                        tracing::error!("array {}: superblock write failed: {e}", self.geom.name);
                        failed.insert(targets[i].0);
                    }
                }
                let devs: Vec<&dyn BlockDev> = targets.iter().map(|(_, d)| d.as_ref()).collect();
                for (i, r) in run_flush(&devs).into_iter().enumerate() {
                    if let Err(e) = r {
                        tracing::error!(
                            "array {}: flush after superblock write failed: {e}",
                            self.geom.name
                        );
                        failed.insert(targets[i].0);
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            for e in &mut c.entries {
                if failed.contains(&e.uuid) {
                    e.state = EntryState::Failed;
                    e.reason = FailReason::IoError;
                    c.devices.remove(&e.uuid);
                }
            }
        }
        self.publish(c);
        let snap = self.snapshot();
        if c.offline.is_none()
            && let Some(r) = &snap.offline
        {
            tracing::error!("array {} is offline: {r}", self.geom.name);
            c.offline = Some(r.clone());
        }
    }

    pub(crate) fn superblock_for(&self, c: &Control, member: Uuid, device_size: u64) -> Superblock {
        let g = &self.geom;
        let l = &g.layout;
        Superblock {
            array_uuid: g.uuid,
            member_uuid: member,
            generation: c.generation,
            created: g.created,
            updated: now(),
            level: l.level,
            copies: u8::try_from(l.copies).unwrap_or(0),
            clean: c.clean,
            roles: u16::try_from(l.n).unwrap_or(0),
            chunk: u32::try_from(l.chunk).unwrap_or(0),
            sector: u32::try_from(SECTOR).unwrap_or(4096),
            data_offset: g.data_offset,
            array_size: l.size(),
            mirror_rows: l.mirror_rows,
            bitmap_offset: g.bitmap_offset,
            bitmap_len: g.bitmap_len,
            bitmap_granularity: g.bitmap_gran,
            journal_offset: g.journal_offset,
            journal_len: g.journal_len,
            device_size,
            name: g.name.clone(),
            entries: c.entries.clone(),
        }
    }

    /// Fails a member device (an I/O error made it unusable, or an administrator said so).
    pub(crate) fn fail_device(&self, uuid: Uuid, reason: FailReason, detail: &str) {
        {
            let mut c = self.control.lock();
            let Some(e) = c.entries.iter_mut().find(|e| e.uuid == uuid) else {
                return;
            };
            if e.state == EntryState::Failed {
                return;
            }
            let was_replacement = e.state == EntryState::Replacement;
            tracing::error!(
                "array {}: member {uuid} ({:?} role {:?}) failed: {detail}",
                self.geom.name,
                e.state,
                e.role
            );
            e.state = EntryState::Failed;
            e.reason = reason;
            c.devices.remove(&uuid);
            c.progress.remove(&uuid);
            if was_replacement {
                tracing::warn!("array {}: replacement abandoned", self.geom.name);
            }
            self.commit(&mut c);
        }
        if self.auto_rebuild.load(Ordering::Relaxed) {
            crate::jobs::maybe_start_rebuild(self);
        }
    }

    /// Handles a failed member read: a device-level failure, or too many media errors, fails
    /// the member (returns true: retry with a new snapshot); a media error returns false (the
    /// caller reconstructs the sectors and rewrites them).
    fn absorb(&self, m: &Member, e: &IoError) -> bool {
        let too_many = {
            let mut errs = self.read_errors.lock();
            let n = errs.entry(m.uuid).or_insert(0);
            *n += 1;
            *n > MAX_READ_ERRORS
        };
        if e.is_device_failure() || too_many {
            let why = if too_many {
                format!("more than {MAX_READ_ERRORS} read errors, last: {e}")
            } else {
                e.to_string()
            };
            self.fail_device(m.uuid, FailReason::IoError, &why);
            true
        } else {
            tracing::warn!(
                "array {}: read error on member {} (will rewrite from redundancy): {e}",
                self.geom.name,
                m.uuid
            );
            false
        }
    }

    // ---------------------------------------------------------------- write-intent bitmap

    /// Makes sure the bitmap bits for member data range `[lo, hi)` are set on disk before a
    /// write there goes out.
    pub(crate) fn mark_dirty(&self, snap: &Snapshot, lo: u64, hi: u64) {
        let Some(bm) = &self.bitmap else { return };
        if self.testing_no_bitmap.load(Ordering::Relaxed) {
            return;
        }
        let mut b = bm.lock();
        let range = b.regions_of(lo, hi - lo);
        let pages = b.mark(range, self.clock_secs());
        if pages.is_empty() {
            return;
        }
        let blocks: Vec<(u64, Vec<u8>)> = pages.iter().map(|&p| (p, b.encode_page(p))).collect();
        self.write_bitmap_pages(snap, &blocks, true);
    }

    pub(crate) fn write_bitmap_pages(
        &self,
        snap: &Snapshot,
        pages: &[(u64, Vec<u8>)],
        flush: bool,
    ) {
        let members: Vec<&Member> = (0..snap.roles.len())
            .flat_map(|r| snap.writers(r))
            .collect();
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        for m in &members {
            for (p, b) in pages {
                reqs.push(IoReq {
                    dev: m.dev.as_ref(),
                    offset: self.geom.bitmap_offset + p * bitmap::PAGE as u64,
                    buf: IoBuf::Write(b),
                });
                owner.push(*m);
            }
        }
        self.counters
            .bitmap_writes
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        let mut bad: Vec<(&Member, IoError)> = Vec::new();
        for (i, r) in run_batch(&mut reqs).into_iter().enumerate() {
            if let Err(e) = r {
                bad.push((owner[i], e));
            }
        }
        if flush {
            let devs: Vec<&dyn BlockDev> = members.iter().map(|m| m.dev.as_ref()).collect();
            for (i, r) in run_flush(&devs).into_iter().enumerate() {
                if let Err(e) = r {
                    bad.push((members[i], e));
                }
            }
        }
        drop(reqs);
        for (m, e) in bad {
            self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
        }
    }

    /// The member data range touched by stripe `s` (its row).
    fn stripe_member_range(&self, s: u64) -> (u64, u64) {
        let row = self.layout().stripe_row(s);
        (row * self.layout().chunk, (row + 1) * self.layout().chunk)
    }

    // ---------------------------------------------------------------- reads

    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), ArrayIoError> {
        self.check_range(off, buf.len() as u64)?;
        let l = self.layout();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = off + pos as u64;
            let (n, res) = match l.region(at) {
                Region::Linear => {
                    let n = buf.len() - pos;
                    (n, self.read_linear(at, &mut buf[pos..]))
                }
                Region::Mirror => {
                    let end = if l.level.is_z() {
                        l.mirror_bytes()
                    } else {
                        l.size()
                    };
                    let n = ulen(end - at).min(buf.len() - pos);
                    (n, self.read_mirror(at, &mut buf[pos..pos + n]))
                }
                Region::Stripes => {
                    let n = buf.len() - pos;
                    (n, self.read_stripes(at, &mut buf[pos..]))
                }
            };
            res?;
            pos += n;
        }
        Ok(())
    }

    fn read_linear(&self, off: u64, buf: &mut [u8]) -> Result<(), ArrayIoError> {
        let snap = self.snapshot();
        self.check_online(&snap)?;
        let pieces = self.layout().linear_pieces(off, buf.len() as u64);
        let mut members = Vec::with_capacity(pieces.len());
        for p in &pieces {
            let m = snap.readable(p.role, 0).ok_or_else(|| {
                self.offline_error(snap.offline.as_deref().unwrap_or("member missing"))
            })?;
            members.push(m);
        }
        let mut reqs = Vec::with_capacity(pieces.len());
        let mut rest: &mut [u8] = buf;
        for (p, m) in pieces.iter().zip(&members) {
            let (head, tail) = rest.split_at_mut(ulen(p.len));
            rest = tail;
            reqs.push(IoReq {
                dev: m.dev.as_ref(),
                offset: self.geom.data_offset + p.member_off,
                buf: IoBuf::Read(head),
            });
        }
        let results = run_batch(&mut reqs);
        drop(reqs);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                self.absorb(members[i], &e);
                return Err(ArrayIoError::Io(e));
            }
        }
        Ok(())
    }

    /// Mirror region: chunk by chunk, from the preferred copy, falling back to the others.
    fn read_mirror(&self, off: u64, buf: &mut [u8]) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = off + pos as u64;
            let (copies, within) = l.mirror_copies(at);
            let n = ulen(l.chunk - within).min(buf.len() - pos);
            self.read_mirror_chunk(at, &copies, within, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn read_mirror_chunk(
        &self,
        at: u64,
        copies: &[(usize, u64)],
        within: u64,
        out: &mut [u8],
    ) -> Result<(), ArrayIoError> {
        let chunk_no = at / self.layout().chunk;
        for _ in 0..MAX_RETRIES {
            let snap = self.snapshot();
            self.check_online(&snap)?;
            // Spread reads over copies; but in a region still being resynchronised after a
            // crash, always read the first copy so that every read sees the same data.
            let region = self
                .bitmap
                .as_ref()
                .map(|b| copies[0].1 / b.lock().granularity());
            let pending = region.is_some_and(|r| self.resync_pending.lock().contains(&r));
            // A hash of the chunk number spreads reads over the copies evenly whatever the
            // layout's period (a plain modulus can keep missing one member).
            let start = if pending {
                0
            } else {
                ulen((chunk_no.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % copies.len() as u64)
            };
            let order: Vec<usize> = (0..copies.len())
                .map(|j| (start + j) % copies.len())
                .collect();
            let mut failed_reads: Vec<(&Member, u64)> = Vec::new();
            let mut ok = false;
            let mut retry = false;
            for j in order {
                let (role, base) = copies[j];
                let row = base / self.layout().chunk;
                let Some(m) = snap.readable(role, row) else {
                    continue;
                };
                match m.dev.read_at(out, self.geom.data_offset + base + within) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        if self.absorb(m, &e) {
                            retry = true;
                            break;
                        }
                        failed_reads.push((m, base));
                    }
                }
            }
            if ok {
                // Rewrite copies that returned read errors with the good data (md-style).
                for (m, base) in failed_reads {
                    match m.dev.write_at(out, self.geom.data_offset + base + within) {
                        Ok(()) => {
                            self.counters
                                .read_errors_repaired
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => self.fail_device(m.uuid, FailReason::IoError, &e.to_string()),
                    }
                }
                return Ok(());
            }
            if !retry {
                return Err(self.offline_error("no readable copy of the data"));
            }
        }
        Err(self.offline_error("members kept failing during the read"))
    }

    fn read_stripes(&self, off: u64, buf: &mut [u8]) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let sb = l.stripe_bytes();
        let mut pos = 0usize;
        while pos < buf.len() {
            let (s, within) = l.stripe_of(off + pos as u64);
            let n = ulen(sb - within).min(buf.len() - pos);
            self.read_stripe(s, within, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    /// Data pieces of `[within, within + len)` of stripe `s`: (shard, offset in chunk, len,
    /// offset in the request).
    fn stripe_pieces(&self, within: u64, len: u64) -> Vec<(usize, u64, u64, u64)> {
        let c = self.layout().chunk;
        let mut out = Vec::new();
        let mut pos = within;
        while pos < within + len {
            let d = ulen(pos / c);
            let a = pos % c;
            let n = (c - a).min(within + len - pos);
            out.push((d, a, n, pos - within));
            pos += n;
        }
        out
    }

    fn read_stripe(&self, s: u64, within: u64, out: &mut [u8]) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let row = l.stripe_row(s);
        let snap = self.snapshot();
        self.check_online(&snap)?;
        let pieces = self.stripe_pieces(within, out.len() as u64);
        let members: Vec<Option<&Member>> = pieces
            .iter()
            .map(|&(d, ..)| snap.readable(l.data_role(s, d), row))
            .collect();
        if members.iter().all(Option::is_some) {
            let mut reqs = Vec::with_capacity(pieces.len());
            let mut rest: &mut [u8] = out;
            for (&(_, a, n, _), m) in pieces.iter().zip(&members) {
                let (head, tail) = rest.split_at_mut(ulen(n));
                rest = tail;
                if let Some(m) = m {
                    reqs.push(IoReq {
                        dev: m.dev.as_ref(),
                        offset: self.moff(row, a),
                        buf: IoBuf::Read(head),
                    });
                }
            }
            let results = run_batch(&mut reqs);
            drop(reqs);
            let mut suspects = Vec::new();
            let mut errors = false;
            for (i, r) in results.into_iter().enumerate() {
                if let Err(e) = r {
                    errors = true;
                    if let Some(m) = members[i]
                        && !self.absorb(m, &e)
                    {
                        suspects.push(l.data_role(s, pieces[i].0));
                    }
                }
            }
            if !errors {
                return Ok(());
            }
            return self.read_stripe_slow(s, within, out, &suspects);
        }
        self.read_stripe_slow(s, within, out, &[])
    }

    /// Degraded or error path: reads every other shard of the row range and reconstructs.
    /// `suspects` are roles that returned read errors (their sectors get rewritten).
    fn read_stripe_slow(
        &self,
        s: u64,
        within: u64,
        out: &mut [u8],
        suspects: &[usize],
    ) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let c = l.chunk;
        let pieces = self.stripe_pieces(within, out.len() as u64);
        let a = pieces.iter().map(|p| p.1).min().unwrap_or(0);
        let b = pieces.iter().map(|p| p.1 + p.2).max().unwrap_or(c);
        let _g = self.lock_key(s);
        let mut suspects: Vec<usize> = suspects.to_vec();
        for _ in 0..MAX_RETRIES {
            let snap = self.snapshot();
            self.check_online(&snap)?;
            // Only data is returned, but a parity shard that returned a read error is rebuilt
            // too, so that its sectors can be rewritten below.
            let want = if suspects.iter().any(|&r| l.shard_of_role(s, r) >= l.k()) {
                Want::All
            } else {
                Want::Data
            };
            match self.load_row(&snap, s, a, b - a, &suspects, want) {
                Ok((shards, bad_reads)) => {
                    for &(d, pa, n, at) in &pieces {
                        out[ulen(at)..ulen(at + n)]
                            .copy_from_slice(&shards[d][ulen(pa - a)..ulen(pa - a + n)]);
                    }
                    self.counters
                        .reconstructed_reads
                        .fetch_add(1, Ordering::Relaxed);
                    // Rewrite sectors that returned read errors with the reconstruction.
                    for role in bad_reads.into_iter().chain(suspects.drain(..)) {
                        let shard = l.shard_of_role(s, role);
                        if let Some(m) = snap.readable(role, l.stripe_row(s)) {
                            match m
                                .dev
                                .write_at(&shards[shard], self.moff(l.stripe_row(s), a))
                            {
                                Ok(()) => {
                                    self.counters
                                        .read_errors_repaired
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    self.fail_device(m.uuid, FailReason::IoError, &e.to_string())
                                }
                            }
                        }
                    }
                    give_bufs(shards);
                    return Ok(());
                }
                Err(LoadError::Retry) => {}
                Err(LoadError::ReadErrors(roles)) => {
                    for r in roles {
                        if !suspects.contains(&r) {
                            suspects.push(r);
                        }
                    }
                }
                Err(LoadError::Fatal(e)) => return Err(e),
            }
        }
        Err(self.offline_error("members kept failing during reconstruction"))
    }

    /// Reads rows `[a, a + len)` of stripe `s` and reconstructs what could not be read. Roles in
    /// `exclude` (media errors seen earlier) are treated as missing.
    ///
    /// With [`Want::Data`] only the data shards are valid on return, and only as many members
    /// are read as needed: the readable data shards plus one surviving parity shard per lost
    /// data shard (a degraded read of one chunk reads k chunks, not n - 1). With [`Want::All`]
    /// every readable shard is read and every shard, parity included, is valid on return.
    /// Returns the shards (data then parity) and, always empty, the roles whose reads failed.
    pub(crate) fn load_row(
        &self,
        snap: &Snapshot,
        s: u64,
        a: u64,
        len: u64,
        exclude: &[usize],
        want: Want,
    ) -> Result<(Vec<AlignedBuf>, Vec<usize>), LoadError> {
        let l = self.layout();
        let (k, p, n) = (l.k(), l.p(), l.n);
        let row = l.stripe_row(s);
        let mut missing = 0usize;
        let mut usable: Vec<Option<&Member>> = Vec::with_capacity(n);
        for i in 0..n {
            let role = l.role_of_shard(s, i);
            let m = snap.readable(role, row);
            missing += usize::from(m.is_none());
            usable.push(m.filter(|_| !exclude.contains(&role)));
        }
        let lost_data = (0..k).filter(|&i| usable[i].is_none()).count();
        let unusable = usable.iter().filter(|m| m.is_none()).count();
        if missing > p {
            return Err(LoadError::Fatal(self.offline_error(&format!(
                "stripe {s} has {missing} shards on missing members, {} survives {p}",
                l.level
            ))));
        }
        if unusable > p {
            // Enough members, but media errors on too many of them in this range.
            return Err(LoadError::Fatal(ArrayIoError::Unrecoverable {
                off: l.stripe_start(s),
                reason: format!(
                    "stripe {s}: {unusable} of {n} shards unreadable at member rows {a}+{len} \
                     ({missing} on missing members, the rest read errors); parity covers {p}"
                ),
            }));
        }
        // The shards to read: every usable one, or (data only) the usable data shards plus the
        // lowest usable parity rows, one per lost data shard.
        let mut read: Vec<usize> = (0..k).filter(|&i| usable[i].is_some()).collect();
        let parity_usable = (k..n).filter(|&i| usable[i].is_some());
        match want {
            Want::All => read.extend(parity_usable),
            Want::Data => read.extend(parity_usable.take(lost_data)),
        }
        let mut shards = take_bufs(n, ulen(len));
        {
            let mut reqs = Vec::with_capacity(read.len());
            let mut bufs: Vec<Option<&mut AlignedBuf>> = shards.iter_mut().map(Some).collect();
            for &i in &read {
                if let (Some(b), Some(m)) = (bufs[i].take(), usable[i]) {
                    reqs.push(IoReq {
                        dev: m.dev.as_ref(),
                        offset: self.moff(row, a),
                        buf: IoBuf::Read(b),
                    });
                }
            }
            let results = run_batch(&mut reqs);
            drop(reqs);
            let mut media = Vec::new();
            let mut retry = false;
            for (j, r) in results.into_iter().enumerate() {
                if let Err(e) = r {
                    let i = read[j];
                    let Some(m) = usable[i] else { continue };
                    if self.absorb(m, &e) {
                        retry = true;
                    } else {
                        media.push(l.role_of_shard(s, i));
                    }
                }
            }
            if retry {
                return Err(LoadError::Retry);
            }
            if !media.is_empty() {
                return Err(LoadError::ReadErrors(media));
            }
        }
        let unavailable: Vec<usize> = (0..n).filter(|i| !read.contains(i)).collect();
        let wanted: Vec<usize> = match want {
            Want::All => unavailable.clone(),
            Want::Data => unavailable.iter().copied().filter(|&i| i < k).collect(),
        };
        if !wanted.is_empty() {
            let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|b| &mut b[..]).collect();
            parity::reconstruct_some(&mut refs, k, p, &unavailable, &wanted).map_err(|e| {
                LoadError::Fatal(ArrayIoError::Unrecoverable {
                    off: l.stripe_start(s),
                    reason: e.to_string(),
                })
            })?;
        }
        Ok((shards, Vec::new()))
    }

    // ---------------------------------------------------------------- writes

    pub(crate) fn write(&self, off: u64, data: &[u8]) -> Result<(), ArrayIoError> {
        self.check_range(off, data.len() as u64)?;
        let l = self.layout();
        if l.level.is_z() {
            let m = l.mirror_bytes();
            let end = off + data.len() as u64;
            if end > m {
                let start = off.max(m);
                let sb = l.stripe_bytes();
                if !(start - m).is_multiple_of(sb) || !(end - start).is_multiple_of(sb) {
                    return Err(ArrayIoError::NotFullStripe {
                        off,
                        len: data.len() as u64,
                        stripe: sb,
                        small_region: m,
                    });
                }
            }
        }
        let mut pos = 0usize;
        while pos < data.len() {
            let at = off + pos as u64;
            let n = match l.region(at) {
                Region::Linear => {
                    self.write_linear(at, &data[pos..])?;
                    data.len() - pos
                }
                Region::Mirror => {
                    let end = if l.level.is_z() {
                        l.mirror_bytes()
                    } else {
                        l.size()
                    };
                    let n = ulen(end - at).min(data.len() - pos);
                    self.write_mirror(at, &data[pos..pos + n])?;
                    n
                }
                Region::Stripes => {
                    let (s, within) = l.stripe_of(at);
                    let n = ulen(l.stripe_bytes() - within).min(data.len() - pos);
                    self.write_stripe(s, within, &data[pos..pos + n])?;
                    n
                }
            };
            pos += n;
        }
        Ok(())
    }

    fn write_linear(&self, off: u64, data: &[u8]) -> Result<(), ArrayIoError> {
        let snap = self.snapshot();
        self.check_online(&snap)?;
        let pieces = self.layout().linear_pieces(off, data.len() as u64);
        let mut members = Vec::with_capacity(pieces.len());
        for p in &pieces {
            members.push(
                snap.readable(p.role, 0)
                    .ok_or_else(|| self.offline_error("member missing"))?,
            );
        }
        let mut reqs: Vec<IoReq<'_>> = pieces
            .iter()
            .zip(&members)
            .map(|(p, m)| IoReq {
                dev: m.dev.as_ref(),
                offset: self.geom.data_offset + p.member_off,
                buf: IoBuf::Write(&data[ulen(p.buf_off)..ulen(p.buf_off + p.len)]),
            })
            .collect();
        let results = run_batch(&mut reqs);
        drop(reqs);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                self.fail_device(members[i].uuid, FailReason::IoError, &e.to_string());
                return Err(ArrayIoError::Io(e));
            }
        }
        Ok(())
    }

    fn write_mirror(&self, off: u64, data: &[u8]) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let mut pos = 0usize;
        while pos < data.len() {
            let at = off + pos as u64;
            let (copies, within) = l.mirror_copies(at);
            let n = ulen(l.chunk - within).min(data.len() - pos);
            let chunk_no = at / l.chunk;
            let _g = self.lock_key(chunk_no);
            self.write_mirror_chunk(&copies, within, &data[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn write_mirror_chunk(
        &self,
        copies: &[(usize, u64)],
        within: u64,
        data: &[u8],
    ) -> Result<(), ArrayIoError> {
        let snap = self.snapshot();
        self.check_online(&snap)?;
        for &(_, base) in copies {
            self.mark_dirty(&snap, base, base + self.layout().chunk);
        }
        let snap = self.snapshot();
        self.check_online(&snap)?;
        let targets: Vec<&Member> = copies
            .iter()
            .flat_map(|&(role, _)| snap.writers(role))
            .collect();
        let offsets: Vec<u64> = copies
            .iter()
            .flat_map(|&(role, base)| snap.writers(role).map(move |_| base))
            .collect();
        if targets.is_empty() {
            return Err(self.offline_error("no copy of this data is writable"));
        }
        let mut reqs: Vec<IoReq<'_>> = targets
            .iter()
            .zip(&offsets)
            .map(|(m, &base)| IoReq {
                dev: m.dev.as_ref(),
                offset: self.geom.data_offset + base + within,
                buf: IoBuf::Write(data),
            })
            .collect();
        let results = run_batch(&mut reqs);
        drop(reqs);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                self.fail_device(targets[i].uuid, FailReason::IoError, &e.to_string());
            }
        }
        let after = self.snapshot();
        if let Some(r) = &after.offline {
            return Err(self.offline_error(r));
        }
        Ok(())
    }

    fn write_stripe(&self, s: u64, within: u64, data: &[u8]) -> Result<(), ArrayIoError> {
        let _g = self.lock_key(s);
        // Roles that returned media read errors while this write read the stripe: treated as
        // missing for the rest of the write (as a degraded read would), and their sectors are
        // rewritten once the write is done.
        let mut exclude: Vec<usize> = Vec::new();
        for _ in 0..MAX_RETRIES {
            let snap = self.snapshot();
            self.check_online(&snap)?;
            let (lo, hi) = self.stripe_member_range(s);
            self.mark_dirty(&snap, lo, hi);
            let snap = self.snapshot();
            self.check_online(&snap)?;
            let full = within == 0 && data.len() as u64 == self.layout().stripe_bytes();
            let outcome = if full {
                self.write_full_stripe(&snap, s, data)
            } else {
                self.write_partial_stripe(&snap, s, within, data, &mut exclude)
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(WriteError::Retry) => {}
                Err(WriteError::Fatal(e)) => return Err(e),
            }
        }
        Err(self.offline_error("members kept failing during the write"))
    }

    /// Writes shards to their roles' devices (and replacements); fails members that error.
    /// Returns Retry when a member failed (the caller re-plans with a new snapshot only if the
    /// write cannot be considered complete).
    fn put_shards(
        &self,
        snap: &Snapshot,
        s: u64,
        a: u64,
        shards: &[(usize, &[u8])],
    ) -> Result<(), WriteError> {
        let l = self.layout();
        let row = l.stripe_row(s);
        let mut reqs = Vec::new();
        let mut who = Vec::new();
        for &(i, buf) in shards {
            for m in snap.writers(l.role_of_shard(s, i)) {
                reqs.push(IoReq {
                    dev: m.dev.as_ref(),
                    offset: self.moff(row, a),
                    buf: IoBuf::Write(buf),
                });
                who.push(m);
            }
        }
        let results = run_batch(&mut reqs);
        drop(reqs);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                self.fail_device(who[i].uuid, FailReason::IoError, &e.to_string());
            }
        }
        // A failed member's shard is implied by the parity written to the others, so the write
        // stands as long as the array is still online.
        match &self.snapshot().offline {
            Some(r) => Err(WriteError::Fatal(self.offline_error(r))),
            None => Ok(()),
        }
    }

    fn write_full_stripe(&self, snap: &Snapshot, s: u64, data: &[u8]) -> Result<(), WriteError> {
        let l = self.layout();
        let (k, p, c) = (l.k(), l.p(), ulen(l.chunk));
        let mut par = take_bufs(p, c);
        {
            let cols: Vec<&[u8]> = (0..k).map(|d| &data[d * c..(d + 1) * c]).collect();
            let mut outs: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
            parity::encode(&cols, &mut outs);
        }
        let mut shards: Vec<(usize, &[u8])> =
            (0..k).map(|d| (d, &data[d * c..(d + 1) * c])).collect();
        shards.extend(par.iter().enumerate().map(|(j, b)| (k + j, &b[..])));
        let tx = if self.journal_live(s) {
            Some(self.journal_tx(snap, s, 0, l.chunk, &shards)?)
        } else {
            None
        };
        let r = self.put_shards(snap, s, 0, &shards);
        if let Some(seq) = tx {
            self.journal_done(seq);
        }
        drop(shards);
        give_bufs(par);
        r
    }

    fn write_partial_stripe(
        &self,
        snap: &Snapshot,
        s: u64,
        within: u64,
        data: &[u8],
        exclude: &mut Vec<usize>,
    ) -> Result<(), WriteError> {
        let l = self.layout();
        let (k, p) = (l.k(), l.p());
        let pieces = self.stripe_pieces(within, data.len() as u64);
        let a = pieces.iter().map(|x| x.1).min().unwrap_or(0);
        let b = pieces.iter().map(|x| x.1 + x.2).max().unwrap_or(l.chunk);
        let len = b - a;
        let row = l.stripe_row(s);
        let modified: Vec<usize> = pieces.iter().map(|x| x.0).collect();
        let readable = |i: usize| {
            let role = l.role_of_shard(s, i);
            !exclude.contains(&role) && snap.readable(role, row).is_some()
        };
        // Read-modify-write needs the old modified shards and every parity shard; it is chosen
        // when it reads less than reconstruct-write (which reads every unmodified data shard).
        let rmw = modified.iter().all(|&d| readable(d))
            && (k..k + p).all(readable)
            && modified.len() + p < k;
        let mut shards: Vec<AlignedBuf>;
        if rmw {
            shards = (0..k + p).map(|_| AlignedBuf::zeroed(0)).collect();
            let wanted: Vec<usize> = modified.iter().copied().chain(k..k + p).collect();
            // Every loaded buffer is overwritten by its read.
            let mut loaded = take_bufs(wanted.len(), ulen(len));
            {
                let mut reqs = Vec::new();
                let mut who = Vec::new();
                for (j, b) in loaded.iter_mut().enumerate() {
                    let role = l.role_of_shard(s, wanted[j]);
                    let Some(m) = snap.readable(role, row) else {
                        return Err(WriteError::Retry);
                    };
                    reqs.push(IoReq {
                        dev: m.dev.as_ref(),
                        offset: self.moff(row, a),
                        buf: IoBuf::Read(&mut b[..]),
                    });
                    who.push((m, role));
                }
                let results = run_batch(&mut reqs);
                drop(reqs);
                let mut retry = false;
                for (j, r) in results.into_iter().enumerate() {
                    if let Err(e) = r {
                        // A failed device is gone from the next snapshot; a media error makes
                        // the role missing for this write, which then reconstructs around it
                        // (reconstruct-write) and rewrites the bad sectors.
                        let (m, role) = who[j];
                        if !self.absorb(m, &e) && !exclude.contains(&role) {
                            exclude.push(role);
                        }
                        retry = true;
                    }
                }
                if retry {
                    return Err(WriteError::Retry);
                }
            }
            for (j, buf) in loaded.into_iter().enumerate() {
                shards[wanted[j]] = buf;
            }
            let (data_sh, par_sh) = shards.split_at_mut(k);
            for &(d, pa, n, at) in &pieces {
                let old = &mut data_sh[d];
                let range = ulen(pa - a)..ulen(pa - a + n);
                let mut delta = old[range.clone()].to_vec();
                parity::xor_into(&mut delta, &data[ulen(at)..ulen(at + n)]);
                let mut ps: Vec<&mut [u8]> =
                    par_sh.iter_mut().map(|b| &mut b[range.clone()]).collect();
                parity::apply_delta(&delta, d, &mut ps);
                old[range].copy_from_slice(&data[ulen(at)..ulen(at + n)]);
            }
        } else {
            // Reconstruct-write: the row range of every data shard (reconstructing what is
            // missing or unreadable), then the new data over it and fresh parity.
            shards = match self.load_row(snap, s, a, len, exclude, Want::Data) {
                Ok((sh, _)) => sh,
                Err(LoadError::Retry) => return Err(WriteError::Retry),
                Err(LoadError::ReadErrors(roles)) => {
                    for r in roles {
                        if !exclude.contains(&r) {
                            exclude.push(r);
                        }
                    }
                    return Err(WriteError::Retry);
                }
                Err(LoadError::Fatal(e)) => return Err(WriteError::Fatal(e)),
            };
            for &(d, pa, n, at) in &pieces {
                shards[d][ulen(pa - a)..ulen(pa - a + n)]
                    .copy_from_slice(&data[ulen(at)..ulen(at + n)]);
            }
            let (data_sh, par_sh) = shards.split_at_mut(k);
            let cols: Vec<&[u8]> = data_sh.iter().map(|b| &b[..]).collect();
            let mut outs: Vec<&mut [u8]> = par_sh.iter_mut().map(|b| &mut b[..]).collect();
            parity::encode(&cols, &mut outs);
        }
        let changed: Vec<(usize, &[u8])> = modified
            .iter()
            .copied()
            .chain(k..k + p)
            .map(|i| (i, &shards[i][..]))
            .collect();
        let seq = self.journal_tx(snap, s, a, len, &changed)?;
        let r = self.put_shards(snap, s, a, &changed);
        self.journal_done(seq);
        r?;
        // Sectors that returned read errors and that this write did not overwrite get their
        // (reconstructed, unchanged) content back, which lets the drive remap them (as md does);
        // a member that cannot take the write is failed.
        for &role in exclude.iter() {
            let i = l.shard_of_role(s, role);
            if changed.iter().any(|&(c, _)| c == i) {
                self.counters
                    .read_errors_repaired
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            for m in snap.writers(role) {
                match m.dev.write_at(&shards[i], self.moff(row, a)) {
                    Ok(()) => {
                        self.counters
                            .read_errors_repaired
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.fail_device(m.uuid, FailReason::IoError, &e.to_string()),
                }
            }
        }
        drop(changed);
        give_bufs(shards);
        Ok(())
    }

    // ---------------------------------------------------------------- journal

    fn journal_live(&self, s: u64) -> bool {
        self.journal.as_ref().is_some_and(|j| {
            let j = j.lock();
            j.live.get(&s).is_some_and(|&seq| seq > j.durable_ckpt)
        })
    }

    /// Journals a transaction: a record with each changed shard's new bytes on every device
    /// that will be written, all flushed before this returns. Returns the sequence number.
    fn journal_tx(
        &self,
        snap: &Snapshot,
        s: u64,
        a: u64,
        len: u64,
        shards: &[(usize, &[u8])],
    ) -> Result<u64, WriteError> {
        let Some(jm) = &self.journal else {
            return Ok(0);
        };
        if self.testing_no_journal.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let l = self.layout();
        let mut targets: Vec<(Member, usize, usize)> = Vec::new(); // member, role, index in shards
        for (idx, &(i, _)) in shards.iter().enumerate() {
            let role = l.role_of_shard(s, i);
            for m in snap.writers(role) {
                targets.push((m.clone(), role, idx));
            }
        }
        let participants: Vec<Uuid> = targets.iter().map(|t| t.0.uuid).collect();
        let size = journal::BLOCK + len;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut checkpointed = false;
        let (seq, offsets) = loop {
            let mut j = jm.lock();
            let seq = j.next_seq;
            let mut offsets = Vec::with_capacity(targets.len());
            let mut full = false;
            // All or nothing: look first (a transaction has one record per device), then take.
            for (m, _, _) in &targets {
                let ring = j
                    .rings
                    .entry(m.uuid)
                    .or_insert_with(|| Ring::new(self.geom.journal_len));
                match ring.peek(size) {
                    Ok(at) => offsets.push(at),
                    Err(_) => {
                        full = true;
                        break;
                    }
                }
            }
            if !full {
                for ((m, _, _), &at) in targets.iter().zip(&offsets) {
                    if let Some(ring) = j.rings.get_mut(&m.uuid) {
                        ring.commit(at, size, seq);
                    }
                }
                j.next_seq += 1;
                j.in_flight.insert(seq);
                j.live.insert(s, seq);
                break (seq, offsets);
            }
            // Make room: a forced checkpoint frees the records of every completed transaction;
            // what it cannot free belongs to transactions still in flight, so wait for one.
            if std::time::Instant::now() > deadline {
                return Err(WriteError::Fatal(ArrayIoError::Io(IoError::Unsupported {
                    dev: self.info.id.clone(),
                    op: IoOp::Write,
                    reason: "no journal space became free within 60 s".into(),
                })));
            }
            if !checkpointed || j.in_flight.is_empty() {
                drop(j);
                self.checkpoint(true).map_err(WriteError::Fatal)?;
                checkpointed = true;
            } else {
                let _ = self
                    .journal_cv
                    .wait_for(&mut j, std::time::Duration::from_millis(50));
                checkpointed = false;
            }
        };
        let blocks: Vec<AlignedBuf> = targets
            .iter()
            .map(|(m, role, idx)| {
                let payload = shards[*idx].1;
                let h = RecordHeader {
                    array: self.geom.uuid,
                    member: m.uuid,
                    seq,
                    stripe: s,
                    row_off: a,
                    row_len: len,
                    role: u16::try_from(*role).unwrap_or(0),
                    payload_crc: crc32c::crc32c(payload),
                    participants: participants.clone(),
                };
                let mut b = AlignedBuf::zeroed(ulen(size));
                b[..ulen(journal::BLOCK)].copy_from_slice(&h.encode());
                b[ulen(journal::BLOCK)..].copy_from_slice(payload);
                b
            })
            .collect();
        let mut reqs: Vec<IoReq<'_>> = targets
            .iter()
            .zip(&blocks)
            .zip(&offsets)
            .map(|(((m, _, _), b), &at)| IoReq {
                dev: m.dev.as_ref(),
                offset: self.geom.journal_offset + at,
                buf: IoBuf::Write(b),
            })
            .collect();
        let mut bad = Vec::new();
        for (i, r) in run_batch(&mut reqs).into_iter().enumerate() {
            if let Err(e) = r {
                bad.push((i, e));
            }
        }
        drop(reqs);
        let devs: Vec<&dyn BlockDev> = targets.iter().map(|(m, _, _)| m.dev.as_ref()).collect();
        for (i, r) in run_flush(&devs).into_iter().enumerate() {
            if let Err(e) = r {
                bad.push((i, e));
            }
        }
        self.counters
            .journal_records
            .fetch_add(targets.len() as u64, Ordering::Relaxed);
        if !bad.is_empty() {
            for (i, e) in bad {
                self.fail_device(targets[i].0.uuid, FailReason::IoError, &e.to_string());
            }
            // The record may be incomplete: never start in-place writes for it.
            self.journal_done(seq);
            return Err(match &self.snapshot().offline {
                Some(r) => WriteError::Fatal(self.offline_error(r)),
                None => WriteError::Retry,
            });
        }
        Ok(seq)
    }

    fn journal_done(&self, seq: u64) {
        if let Some(j) = &self.journal {
            j.lock().in_flight.remove(&seq);
            self.journal_cv.notify_all();
        }
    }

    /// Records on every member that all transactions up to `value` are durable in place
    /// (the caller guarantees it: their in-place writes completed before a finished flush).
    /// Not durable itself until the next flush. Call with `ckpt_lock` held.
    fn write_checkpoint(&self, value: u64) {
        let Some(jm) = &self.journal else { return };
        let counter = {
            let mut j = jm.lock();
            if value <= j.written_ckpt && j.ckpt_counter > 0 {
                return;
            }
            j.ckpt_counter += 1;
            j.ckpt_counter
        };
        let snap = self.snapshot();
        let slot = (counter % 2) * journal::BLOCK;
        let members: Vec<&Member> = (0..snap.roles.len())
            .flat_map(|r| snap.writers(r))
            .collect();
        let blocks: Vec<Vec<u8>> = members
            .iter()
            .map(|m| journal::encode_checkpoint(&self.geom.uuid, &m.uuid, counter, value))
            .collect();
        let mut reqs: Vec<IoReq<'_>> = members
            .iter()
            .zip(&blocks)
            .map(|(m, b)| IoReq {
                dev: m.dev.as_ref(),
                offset: self.geom.journal_offset + slot,
                buf: IoBuf::Write(b),
            })
            .collect();
        let results = run_batch(&mut reqs);
        drop(reqs);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                self.fail_device(members[i].uuid, FailReason::IoError, &e.to_string());
            }
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        let mut j = jm.lock();
        j.written_ckpt = j.written_ckpt.max(value);
    }

    /// After a member flush: the checkpoint written before it is durable now.
    fn checkpoint_durable(&self) {
        let Some(jm) = &self.journal else { return };
        let mut j = jm.lock();
        j.durable_ckpt = j.written_ckpt;
        let d = j.durable_ckpt;
        for r in j.rings.values_mut() {
            r.reclaim(d);
        }
        j.live.retain(|_, seq| *seq > d);
    }

    /// Makes every completed transaction durable and checkpointed at once, freeing their
    /// journal space (flush, checkpoint, flush).
    pub(crate) fn checkpoint(&self, force: bool) -> Result<(), ArrayIoError> {
        let Some(jm) = &self.journal else {
            return Ok(());
        };
        let _serial = self.ckpt_lock.lock();
        let stable = jm.lock().stable_seq();
        self.flush_members(&self.snapshot())?;
        self.checkpoint_durable();
        self.write_checkpoint(stable);
        if force {
            self.flush_members(&self.snapshot())?;
            self.checkpoint_durable();
        }
        Ok(())
    }

    // ---------------------------------------------------------------- flush and discard

    fn flush_members(&self, snap: &Snapshot) -> Result<(), ArrayIoError> {
        let members: Vec<&Member> = (0..snap.roles.len())
            .flat_map(|r| snap.writers(r))
            .collect();
        let devs: Vec<&dyn BlockDev> = members.iter().map(|m| m.dev.as_ref()).collect();
        for (i, r) in run_flush(&devs).into_iter().enumerate() {
            if let Err(e) = r {
                self.fail_device(members[i].uuid, FailReason::IoError, &e.to_string());
            }
        }
        match &self.snapshot().offline {
            Some(r) => Err(self.offline_error(r)),
            None => Ok(()),
        }
    }

    pub(crate) fn flush(&self) -> Result<(), ArrayIoError> {
        let snap = self.snapshot();
        self.check_online(&snap)?;
        if self.journal.is_some() {
            // Captured before the member flush: exactly the transactions it makes durable.
            self.checkpoint(false)?;
        } else {
            self.flush_members(&snap)?;
        }
        if let Some(bm) = &self.bitmap {
            let pending: BTreeSet<u64> = self.resync_pending.lock().clone();
            let mut b = bm.lock();
            // Regions still waiting for resync must stay dirty.
            let now = self.clock_secs();
            for r in &pending {
                b.mark(*r..*r + 1, now);
            }
            let pages = b.clear_idle(now);
            if !pages.is_empty() {
                let blocks: Vec<(u64, Vec<u8>)> =
                    pages.iter().map(|&p| (p, b.encode_page(p))).collect();
                self.write_bitmap_pages(&self.snapshot(), &blocks, false);
            }
        }
        Ok(())
    }

    pub(crate) fn discard(&self, off: u64, len: u64) -> Result<(), ArrayIoError> {
        self.check_range(off, len)?;
        let l = self.layout();
        // Only whole stripes (or chunks) are discarded on the members: afterwards data and
        // parity read back as zeros together. Partial ranges are written as zeros instead, so
        // that the contract (reads back as zeros) holds on every level.
        let unit = match l.level {
            Level::Jbod | Level::Raid0 => SECTOR,
            Level::Raid1 | Level::Raid10 => l.chunk,
            _ if off + len <= l.mirror_bytes() => l.chunk,
            _ => l.stripe_bytes(),
        };
        let zeros = AlignedBuf::zeroed(ulen(unit.min(1 << 20)));
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let unit_start = if l.level.is_z() && pos >= l.mirror_bytes() {
                l.stripe_start(l.stripe_of(pos).0)
            } else {
                pos - pos % unit
            };
            let unit_end = (unit_start + unit).min(end);
            if unit_start == pos && unit_end - pos == unit && unit > SECTOR {
                self.discard_unit(pos, unit)?;
                pos += unit;
            } else {
                let n = (unit_end - pos).min(zeros.len() as u64);
                if l.level.is_z() && l.region(pos) == Region::Stripes {
                    // A partial stripe cannot be written on RAID-Z; leave it (the contract for
                    // RAID-Z discards is stripe granularity, documented).
                    pos = unit_end;
                    continue;
                }
                self.write(pos, &zeros[..ulen(n)])?;
                pos += n;
            }
        }
        Ok(())
    }

    fn discard_unit(&self, off: u64, unit: u64) -> Result<(), ArrayIoError> {
        let l = self.layout();
        let snap = self.snapshot();
        self.check_online(&snap)?;
        let places: Vec<(usize, u64)> = match l.region(off) {
            Region::Linear => l
                .linear_pieces(off, unit)
                .iter()
                .map(|p| (p.role, p.member_off))
                .collect(),
            Region::Mirror => l.mirror_copies(off).0,
            Region::Stripes => {
                let s = l.stripe_of(off).0;
                (0..l.n)
                    .map(|i| (l.role_of_shard(s, i), l.stripe_row(s) * l.chunk))
                    .collect()
            }
        };
        let key = match l.region(off) {
            Region::Stripes => l.stripe_of(off).0,
            _ => off / l.chunk,
        };
        let _g = self.lock_key(key);
        let piece = if l.region(off) == Region::Linear {
            unit
        } else {
            l.chunk
        };
        for (role, moff) in places {
            for m in snap.writers(role) {
                let at = self.geom.data_offset + moff;
                if let Err(e) = m.dev.discard(at, piece) {
                    if matches!(e, IoError::Unsupported { .. }) || !e.is_device_failure() {
                        // Fall back to zeros on devices that cannot deallocate.
                        let z = AlignedBuf::zeroed(ulen(piece));
                        if let Err(e2) = m.dev.write_at(&z, at) {
                            self.fail_device(m.uuid, FailReason::IoError, &e2.to_string());
                        }
                    } else {
                        self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                    }
                }
            }
        }
        match &self.snapshot().offline {
            Some(r) => Err(self.offline_error(r)),
            None => Ok(()),
        }
    }
}

/// What [`Inner::load_row`] must deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The data shards (reading as few members as possible).
    Data,
    /// Every shard, parity included.
    All,
}

/// Outcome of [`Inner::load_row`] failures.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// A member was failed; take a new snapshot and try again.
    Retry,
    /// These roles returned media errors: treat them as missing and try again.
    ReadErrors(Vec<usize>),
    /// Cannot be served.
    Fatal(ArrayIoError),
}

#[derive(Debug)]
enum WriteError {
    Retry,
    Fatal(ArrayIoError),
}
