//! Creating an array on new members, and assembling one from whatever members are present:
//! picking the newest metadata, rejecting stale and foreign devices with a reason, starting
//! degraded when the level allows, replaying the journal and resynchronising after a crash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dw_blockdev::{AlignedBuf, BlockDev, IoBuf, IoReq, run_batch, run_flush};
use uuid::Uuid;

use crate::array::{Control, Geom, Inner, SECTOR, now};
use crate::bitmap::{self, Bitmap};
use crate::errors::{AssembleError, CreateError, Rejected};
use crate::journal;
use crate::layout::Layout;
use crate::superblock::{
    self, Entry, EntryState, FailReason, SB_PRIMARY, SB_SIZE, Superblock, SuperblockError,
};
use crate::{Array, Level};

/// Default chunk size.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
const META_START: u64 = SB_PRIMARY + SB_SIZE as u64;
const MIB: u64 = 1 << 20;
/// Fewest data rows a member must offer.
pub const MIN_ROWS: u64 = 8;

/// How to create an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// Level.
    pub level: Level,
    /// Name (at most 64 bytes).
    pub name: String,
    /// Chunk size in bytes (power of two, 4 KiB..16 MiB); 0 = 64 KiB.
    pub chunk: u32,
    /// RAID-10 copies; 0 = 2.
    pub copies: usize,
    /// RAID-Z: percent of the capacity for the mirrored small-write region; 0 = 3 %.
    pub small_write_percent: u32,
}

impl CreateSpec {
    /// Defaults for a level.
    #[must_use]
    pub fn new(level: Level, name: &str) -> Self {
        Self {
            level,
            name: name.to_owned(),
            chunk: 0,
            copies: 0,
            small_write_percent: 0,
        }
    }
}

/// How to assemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOptions {
    /// Which array, when the devices hold several.
    pub array: Option<Uuid>,
    /// Start with members missing when the level tolerates it.
    pub allow_degraded: bool,
    /// Rebuild onto a spare automatically when a role is missing.
    pub auto_rebuild: bool,
    /// Resynchronise dirty regions in the background instead of before returning.
    pub background_resync: bool,
    /// Background job throttle in bytes per second (0 = unlimited), in force before any job
    /// that assembly starts (a resumed rebuild, a resync) moves its first byte; setting it
    /// afterwards with [`crate::Array::set_throttle`] would let that job run unthrottled
    /// for a moment.
    pub throttle_bytes_per_sec: u64,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        Self {
            array: None,
            allow_degraded: true,
            auto_rebuild: true,
            background_resync: false,
            throttle_bytes_per_sec: 0,
        }
    }
}

/// The result of an assembly.
#[derive(Debug)]
pub struct Assembled {
    /// The running array.
    pub array: Array,
    /// Devices not taken, with reasons.
    pub rejected: Vec<Rejected>,
    /// Journal transactions replayed after an unclean shutdown.
    pub replayed: u64,
    /// Incomplete journal transactions skipped (their writes never started).
    pub skipped_incomplete: u64,
    /// Bitmap regions resynchronised (or scheduled).
    pub resync_regions: u64,
    /// Other things worth telling an administrator.
    pub notes: Vec<String>,
}

fn ulen(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Metadata sizes for a member data region of `member_bytes`.
pub(crate) fn meta_layout(
    level: Level,
    chunk: u64,
    member_bytes: u64,
) -> (u64, u64, u64, u64, u64, u64) {
    let redundant = !matches!(level, Level::Jbod | Level::Raid0);
    let (bitmap_len, gran) = if redundant {
        let gran = (member_bytes / 65_536)
            .next_power_of_two()
            .max(4 * MIB)
            .max(chunk);
        let regions = member_bytes.div_ceil(gran).max(1);
        (Bitmap::pages_for(regions) * bitmap::PAGE as u64, gran)
    } else {
        (0, 0)
    };
    let journal_len = if matches!(level, Level::Raid5 | Level::Raid6) {
        let want = (member_bytes / 128).clamp(MIB, 64 * MIB);
        let floor = journal::RING_START + 8 * (journal::BLOCK + chunk);
        round_up(want.max(floor), journal::BLOCK)
    } else {
        0
    };
    let bitmap_offset = META_START;
    let journal_offset = bitmap_offset + bitmap_len;
    let data_offset = round_up(journal_offset + journal_len, MIB);
    (
        bitmap_offset,
        bitmap_len,
        gran,
        journal_offset,
        journal_len,
        data_offset,
    )
}

/// Data rows a device of `size` bytes offers after `data_offset` (the backup superblock and a
/// little slack stay free at the end).
pub(crate) fn rows_of(size: u64, data_offset: u64, chunk: u64) -> u64 {
    size.saturating_sub(data_offset + 2 * SB_SIZE as u64) / chunk
}

impl Array {
    /// Creates a new array on `members` (in role order) with hot `spares`. Everything on the
    /// devices is lost.
    ///
    /// # Errors
    /// [`CreateError`] saying why the devices or options do not fit.
    pub fn create(
        members: &[Arc<dyn BlockDev>],
        spares: &[Arc<dyn BlockDev>],
        spec: &CreateSpec,
    ) -> Result<Array, CreateError> {
        let level = spec.level;
        let n = members.len();
        if n < level.min_members() {
            return Err(CreateError::TooFewMembers {
                level,
                have: n,
                need: level.min_members(),
            });
        }
        if n + spares.len() > superblock::MAX_ENTRIES {
            return Err(CreateError::TooManyMembers {
                have: n + spares.len(),
                max: superblock::MAX_ENTRIES,
            });
        }
        if spec.name.len() > 64 || spec.name.contains('\0') {
            return Err(CreateError::InvalidSpec(
                "the name must be at most 64 bytes".into(),
            ));
        }
        let chunk32 = if spec.chunk == 0 {
            DEFAULT_CHUNK
        } else {
            spec.chunk
        };
        if !chunk32.is_power_of_two() || !(4096..=superblock::MAX_CHUNK).contains(&chunk32) {
            return Err(CreateError::InvalidSpec(format!(
                "chunk size {chunk32} must be a power of two from 4 KiB to 16 MiB"
            )));
        }
        let chunk = u64::from(chunk32);
        let copies = match level {
            Level::Raid1 => n,
            Level::Raid10 => {
                let c = if spec.copies == 0 { 2 } else { spec.copies };
                if c < 2 || c > n {
                    return Err(CreateError::InvalidSpec(format!(
                        "RAID-10 with {c} copies needs 2..={n}"
                    )));
                }
                c
            }
            l if l.is_z() => l.parity() + 1,
            _ => 1,
        };
        if level.parity() > 0 && n - level.parity() > crate::gf::MAX_DATA_COLUMNS {
            return Err(CreateError::InvalidSpec("too many data columns".into()));
        }
        let all: Vec<&Arc<dyn BlockDev>> = members.iter().chain(spares.iter()).collect();
        let mut ids = std::collections::HashSet::new();
        for d in &all {
            if !ids.insert(d.info().id.clone()) {
                return Err(CreateError::DuplicateDevice(d.info().id.clone()));
            }
            if u64::from(d.info().logical_sector) > SECTOR {
                return Err(CreateError::SectorTooLarge {
                    dev: d.info().id.clone(),
                    sector: d.info().logical_sector,
                });
            }
        }
        let smallest = members.iter().map(|d| d.info().size).min().unwrap_or(0);
        let (bitmap_offset, bitmap_len, gran, journal_offset, journal_len, data_offset) =
            meta_layout(level, chunk, smallest);
        let need = data_offset + 2 * SB_SIZE as u64 + MIN_ROWS * chunk;
        for d in members {
            if d.info().size < need {
                return Err(CreateError::MemberTooSmall {
                    dev: d.info().id.clone(),
                    size: d.info().size,
                    need,
                });
            }
        }
        let member_rows: Vec<u64> = members
            .iter()
            .map(|d| rows_of(d.info().size, data_offset, chunk))
            .collect();
        let rows = member_rows.iter().copied().min().unwrap_or(0);
        for d in spares {
            let want = if level == Level::Jbod {
                member_rows.iter().copied().max().unwrap_or(0)
            } else {
                rows
            };
            if rows_of(d.info().size, data_offset, chunk) < want {
                return Err(CreateError::MemberTooSmall {
                    dev: d.info().id.clone(),
                    size: d.info().size,
                    need: data_offset + 2 * SB_SIZE as u64 + want * chunk,
                });
            }
        }
        let mirror_rows = if level.is_z() {
            let pct = u64::from(if spec.small_write_percent == 0 {
                3
            } else {
                spec.small_write_percent.min(50)
            });
            let want = (rows * pct / 100).max(copies.div_ceil(n) as u64).max(1);
            want.min(rows - 2)
        } else {
            0
        };
        let layout = Layout {
            level,
            n,
            chunk,
            rows,
            copies,
            mirror_rows,
            jbod_rows: if level == Level::Jbod {
                member_rows.clone()
            } else {
                Vec::new()
            },
        };
        let geom = Geom {
            layout,
            uuid: Uuid::new_v4(),
            name: spec.name.clone(),
            created: now(),
            data_offset,
            bitmap_offset,
            bitmap_len,
            bitmap_gran: gran,
            journal_offset,
            journal_len,
        };
        let mut entries = Vec::new();
        let mut devices = HashMap::new();
        for (i, d) in members.iter().enumerate() {
            let u = Uuid::new_v4();
            entries.push(Entry {
                uuid: u,
                state: EntryState::InSync,
                reason: FailReason::None,
                role: u16::try_from(i).ok(),
                recovery_rows: 0,
                data_rows: if level == Level::Jbod {
                    member_rows[i]
                } else {
                    rows
                },
            });
            devices.insert(u, Arc::clone(d));
        }
        for d in spares {
            let u = Uuid::new_v4();
            entries.push(Entry {
                uuid: u,
                state: EntryState::Spare,
                reason: FailReason::None,
                role: None,
                recovery_rows: 0,
                data_rows: rows,
            });
            devices.insert(u, Arc::clone(d));
        }
        // Clear the metadata area (old signatures, journals, bitmaps) on every device.
        let zeros = AlignedBuf::zeroed(ulen(data_offset));
        for d in &all {
            d.write_at(&zeros, 0)?;
            let tail = superblock::backup_offset(d.info().size);
            d.write_at(&zeros[..SB_SIZE], tail)?;
        }
        // Make parity and mirrors consistent from the start: deallocated ranges read as zeros
        // everywhere, and zeros are consistent under every level. Where a device cannot
        // deallocate, the whole array is resynchronised in the background instead.
        let mut initial_resync = false;
        for (i, d) in members.iter().enumerate() {
            let rows_here = if level == Level::Jbod {
                member_rows[i]
            } else {
                rows
            };
            if d.discard(data_offset, rows_here * chunk).is_err() {
                initial_resync = true;
            }
        }
        let control = Control {
            generation: 0,
            clean: false,
            entries,
            devices,
            progress: HashMap::new(),
            offline: None,
        };
        let inner = Arc::new(Inner::new(geom, control, true));
        let _ = inner.me.set(Arc::downgrade(&inner));
        // Journal checkpoint slots and bitmap pages start valid and empty.
        if journal_len > 0 {
            let snap = inner.snapshot();
            for m in (0..n).flat_map(|r| snap.writers(r)) {
                let b = journal::encode_checkpoint(&inner.geom.uuid, &m.uuid, 0, 0);
                m.dev.write_at(&b, journal_offset)?;
                m.dev.write_at(&b, journal_offset + journal::BLOCK)?;
            }
        }
        if let Some(bm) = &inner.bitmap {
            let mut b = bm.lock();
            if initial_resync {
                for r in 0..b.regions() {
                    b.set_dirty(r);
                    inner.resync_pending.lock().insert(r);
                }
            }
            let pages: Vec<(u64, Vec<u8>)> = (0..Bitmap::pages_for(b.regions()))
                .map(|p| (p, b.encode_page(p)))
                .collect();
            drop(b);
            inner.write_bitmap_pages(&inner.snapshot(), &pages, false);
        }
        {
            let mut c = inner.control.lock();
            inner.commit(&mut c);
        }
        let wasted = inner.wasted_bytes(&inner.control.lock());
        tracing::info!(
            "created {} array {} ({}) with {n} members, {} bytes{}",
            level,
            inner.geom.name,
            inner.geom.uuid,
            inner.layout().size(),
            if wasted > 0 {
                format!("; {wasted} bytes of the larger members stay unused (mixed sizes)")
            } else {
                String::new()
            }
        );
        if initial_resync {
            tracing::warn!(
                "array {}: members cannot discard; initial resync started",
                inner.geom.name
            );
            crate::jobs::start_resync(&inner);
        }
        Ok(Array::from_inner(inner))
    }

    /// Reads a device's array superblock (the newer valid copy).
    ///
    /// # Errors
    /// Why neither copy is usable: no magic, damage, or an unsupported version.
    pub fn read_superblock(dev: &dyn BlockDev) -> Result<Superblock, SuperblockError> {
        let read = |off: u64| -> Result<Superblock, SuperblockError> {
            let mut b = AlignedBuf::zeroed(SB_SIZE);
            dev.read_at(&mut b, off)
                .map_err(|e| SuperblockError::Invalid(format!("cannot read: {e}")))?;
            Superblock::decode(&b)
        };
        let size = dev.info().size;
        if size < SB_PRIMARY + 2 * SB_SIZE as u64 {
            return Err(SuperblockError::NoMagic);
        }
        let a = read(SB_PRIMARY);
        let b = read(superblock::backup_offset(size));
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(SuperblockError::NoMagic), Err(e)) | (Err(e), Err(_)) => Err(e),
        }
    }

    /// Assembles an array from `devices` (any order; missing members allowed when the level
    /// tolerates it).
    ///
    /// # Errors
    /// [`AssembleError`] with the reason and every rejected device.
    pub fn assemble(
        devices: Vec<Arc<dyn BlockDev>>,
        opts: &AssembleOptions,
    ) -> Result<Assembled, AssembleError> {
        let count = devices.len();
        let mut rejected = Vec::new();
        let mut found: Vec<(Arc<dyn BlockDev>, Superblock)> = Vec::new();
        for d in devices {
            match Self::read_superblock(d.as_ref()) {
                Ok(sb) => found.push((d, sb)),
                Err(e) => rejected.push(Rejected {
                    device: d.info().id.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        let mut arrays: Vec<Uuid> = found.iter().map(|(_, sb)| sb.array_uuid).collect();
        arrays.sort_unstable();
        arrays.dedup();
        let chosen = match (opts.array, arrays.len()) {
            (Some(u), _) => u,
            (None, 0) => return Err(AssembleError::NoMembers { count, rejected }),
            (None, 1) => arrays[0],
            (None, _) => return Err(AssembleError::SeveralArrays { arrays }),
        };
        let mut mine = Vec::new();
        for (d, sb) in found {
            if sb.array_uuid == chosen {
                mine.push((d, sb));
            } else {
                rejected.push(Rejected {
                    device: d.info().id.clone(),
                    reason: format!(
                        "belongs to another array ({} \"{}\")",
                        sb.array_uuid, sb.name
                    ),
                });
            }
        }
        let Some(auth) = mine
            .iter()
            .map(|(_, sb)| sb)
            .max_by_key(|sb| sb.generation)
            .cloned()
        else {
            return Err(AssembleError::NoMembers { count, rejected });
        };
        let mut accepted: HashMap<Uuid, Arc<dyn BlockDev>> = HashMap::new();
        let mut notes = Vec::new();
        for (d, sb) in mine {
            let id = d.info().id.clone();
            let same_geometry = sb.level == auth.level
                && sb.roles == auth.roles
                && sb.chunk == auth.chunk
                && sb.data_offset == auth.data_offset
                && sb.array_size == auth.array_size
                && sb.mirror_rows == auth.mirror_rows
                && sb.bitmap_offset == auth.bitmap_offset
                && sb.journal_offset == auth.journal_offset
                && sb.journal_len == auth.journal_len;
            if !same_geometry {
                rejected.push(Rejected {
                    device: id,
                    reason: format!(
                        "its superblock (generation {}) describes a different geometry than the newest one (generation {}): stale or tampered",
                        sb.generation, auth.generation
                    ),
                });
                continue;
            }
            let Some(entry) = auth.entries.iter().find(|e| e.uuid == sb.member_uuid) else {
                rejected.push(Rejected {
                    device: id,
                    reason: format!(
                        "member {} is not in the array's member table (generation {}); it was removed earlier",
                        sb.member_uuid, auth.generation
                    ),
                });
                continue;
            };
            if entry.state == EntryState::Failed {
                rejected.push(Rejected {
                    device: id,
                    reason: format!(
                        "member {} is marked failed in the newest superblock (generation {}): {}; its data is stale. Add it back as a spare to reuse it",
                        sb.member_uuid,
                        auth.generation,
                        entry.reason.describe()
                    ),
                });
                continue;
            }
            if accepted.contains_key(&sb.member_uuid) {
                rejected.push(Rejected {
                    device: id,
                    reason: format!("duplicate of member {} (a cloned disk?)", sb.member_uuid),
                });
                continue;
            }
            if sb.generation < auth.generation {
                notes.push(format!(
                    "{id}: superblock generation {} behind {} (interrupted update); accepted and refreshed",
                    sb.generation, auth.generation
                ));
            }
            accepted.insert(sb.member_uuid, d);
        }
        let mut entries = auth.entries.clone();
        let mut missing = Vec::new();
        for e in &mut entries {
            let present = accepted.contains_key(&e.uuid);
            match e.state {
                EntryState::InSync | EntryState::Rebuilding if !present => {
                    missing.push(format!(
                        "role {} (member {})",
                        e.role.map_or("-".into(), |r| r.to_string()),
                        e.uuid
                    ));
                }
                EntryState::Replacement if !present => {
                    e.state = EntryState::Failed;
                    e.reason = FailReason::MissingAtAssembly;
                    notes.push(format!(
                        "replacement {} is missing; the replacement is abandoned",
                        e.uuid
                    ));
                }
                _ => {}
            }
        }
        let l = &auth;
        let layout = layout_from(l);
        if layout.size() != l.array_size {
            return Err(AssembleError::Io(dw_blockdev::IoError::Unsupported {
                dev: format!("array {}", l.name),
                op: dw_blockdev::IoOp::Read,
                reason: format!(
                    "the superblock's geometry gives {} bytes but records {}: metadata inconsistent",
                    layout.size(),
                    l.array_size
                ),
            }));
        }
        let tolerance = l
            .level
            .tolerance(usize::from(l.roles), usize::from(l.copies));
        let present_roles = entries
            .iter()
            .filter(|e| {
                matches!(e.state, EntryState::InSync | EntryState::Rebuilding)
                    && accepted.contains_key(&e.uuid)
            })
            .count();
        let geom = Geom {
            layout,
            uuid: l.array_uuid,
            name: l.name.clone(),
            created: l.created,
            data_offset: l.data_offset,
            bitmap_offset: l.bitmap_offset,
            bitmap_len: l.bitmap_len,
            bitmap_gran: l.bitmap_granularity,
            journal_offset: l.journal_offset,
            journal_len: l.journal_len,
        };
        // Would the array be readable with these members?
        let probe = Inner::new(
            geom.clone(),
            Control {
                generation: l.generation,
                clean: l.clean,
                entries: entries.clone(),
                devices: accepted.clone(),
                progress: HashMap::new(),
                offline: None,
            },
            false,
        );
        if let Some(reason) = probe.snapshot().offline.clone() {
            let _ = reason;
            return Err(AssembleError::NotEnoughMembers {
                name: l.name.clone(),
                level: l.level,
                present: present_roles,
                roles: usize::from(l.roles),
                tolerance,
                missing,
                rejected,
            });
        }
        drop(probe);
        if !missing.is_empty() && !opts.allow_degraded {
            return Err(AssembleError::DegradedNotAllowed {
                name: l.name.clone(),
                missing,
            });
        }
        // Missing members are failed now, before anything is written: if one comes back later
        // its stale data must not be trusted.
        for e in &mut entries {
            if matches!(e.state, EntryState::InSync | EntryState::Rebuilding)
                && !accepted.contains_key(&e.uuid)
            {
                e.state = EntryState::Failed;
                e.reason = FailReason::MissingAtAssembly;
            }
        }
        let was_clean = l.clean;
        let control = Control {
            generation: l.generation,
            clean: false,
            entries,
            devices: accepted,
            progress: HashMap::new(),
            offline: None,
        };
        let inner = Arc::new(Inner::new(geom, control, opts.auto_rebuild));
        inner.jobs.throttle.store(
            opts.throttle_bytes_per_sec,
            std::sync::atomic::Ordering::Relaxed,
        );
        let _ = inner.me.set(Arc::downgrade(&inner));
        let (replayed, skipped) = if inner.journal.is_some() {
            replay_journal(&inner)?
        } else {
            (0, 0)
        };
        let mut resync_regions = 0;
        if let Some(bm) = &inner.bitmap {
            let dirty = load_bitmap(&inner, bm)?;
            if !was_clean || !dirty.is_empty() {
                resync_regions = dirty.len() as u64;
                inner.resync_pending.lock().extend(dirty.iter().copied());
            }
        }
        {
            let mut c = inner.control.lock();
            inner.commit(&mut c);
        }
        if !missing.is_empty() {
            notes.push(format!("started degraded; missing: {}", missing.join(", ")));
        }
        if replayed > 0 || skipped > 0 {
            notes.push(format!(
                "unclean shutdown: replayed {replayed} journal transactions, skipped {skipped} incomplete ones"
            ));
        }
        let array = Array::from_inner(Arc::clone(&inner));
        if resync_regions > 0 {
            notes.push(format!(
                "resynchronising {resync_regions} regions written before the crash"
            ));
            crate::jobs::start_resync(&inner);
            if !opts.background_resync {
                inner.jobs.wait();
            }
        }
        // Resume an interrupted rebuild, or start one onto a spare.
        let rebuilding: Vec<(usize, Uuid)> = inner
            .control
            .lock()
            .entries
            .iter()
            .filter(|e| matches!(e.state, EntryState::Rebuilding | EntryState::Replacement))
            .filter_map(|e| e.role.map(|r| (usize::from(r), e.uuid)))
            .collect();
        if let Some(&(role, member)) = rebuilding.first() {
            if inner.jobs.busy().is_some() {
                inner.jobs.wait();
            }
            notes.push(format!("resuming the rebuild of role {role}"));
            crate::jobs::start_rebuild(&inner, role, member);
        } else if opts.auto_rebuild {
            if inner.jobs.busy().is_some() {
                inner.jobs.wait();
            }
            crate::jobs::maybe_start_rebuild(&inner);
        }
        Ok(Assembled {
            array,
            rejected,
            replayed,
            skipped_incomplete: skipped,
            resync_regions,
            notes,
        })
    }
}

/// Rebuilds the layout recorded in a superblock.
pub(crate) fn layout_from(sb: &Superblock) -> Layout {
    let n = usize::from(sb.roles);
    let mut jbod_rows = vec![0u64; n];
    let mut rows = 0u64;
    for e in &sb.entries {
        if let Some(r) = e.role.map(usize::from).filter(|&r| r < n) {
            jbod_rows[r] = jbod_rows[r].max(e.data_rows);
            rows = rows.max(e.data_rows);
        }
    }
    Layout {
        level: sb.level,
        n,
        chunk: u64::from(sb.chunk),
        rows,
        copies: usize::from(sb.copies).max(1),
        mirror_rows: sb.mirror_rows,
        jbod_rows: if sb.level == Level::Jbod {
            jbod_rows
        } else {
            Vec::new()
        },
    }
}

/// Reads every present member's journal, replays complete transactions newer than the
/// checkpoint, and sets the journal state. Returns (replayed, skipped).
fn replay_journal(inner: &Inner) -> Result<(u64, u64), AssembleError> {
    let g = &inner.geom;
    let l = inner.layout();
    let snap = inner.snapshot();
    let devs: Vec<(Uuid, Arc<dyn BlockDev>)> = (0..snap.roles.len())
        .flat_map(|r| snap.writers(r).map(|m| (m.uuid, Arc::clone(&m.dev))))
        .collect();
    let mut regions: HashMap<Uuid, Vec<u8>> = HashMap::new();
    let mut ckpt = 0u64;
    let mut by_seq: BTreeMap<u64, Vec<(Uuid, journal::Found)>> = BTreeMap::new();
    for (u, d) in &devs {
        let mut region = AlignedBuf::zeroed(ulen(g.journal_len));
        d.read_at(&mut region, g.journal_offset)?;
        let (c, found) = journal::scan(&region, &g.uuid, u);
        ckpt = ckpt.max(c);
        for f in found {
            by_seq.entry(f.header.seq).or_default().push((*u, f));
        }
        regions.insert(*u, region.to_vec());
    }
    let present: std::collections::HashSet<Uuid> = devs.iter().map(|(u, _)| *u).collect();
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let mut max_seq = ckpt;
    for (&seq, recs) in by_seq.range(ckpt + 1..) {
        max_seq = max_seq.max(seq);
        let participants = &recs[0].1.header.participants;
        let complete = participants
            .iter()
            .filter(|p| present.contains(p))
            .all(|p| recs.iter().any(|(u, _)| u == p));
        let h0 = &recs[0].1.header;
        let sane = h0.stripe < l.stripes() && h0.row_off + h0.row_len <= l.chunk;
        if !complete || !sane {
            skipped += 1;
            continue;
        }
        let mut bufs = Vec::new();
        for (u, f) in recs {
            let Some(region) = regions.get(u) else {
                continue;
            };
            let from = ulen(f.payload_at);
            bufs.push((
                *u,
                AlignedBuf::from_slice(&region[from..from + ulen(f.header.row_len)]),
            ));
        }
        let row = l.stripe_row(h0.stripe);
        let mut reqs: Vec<IoReq<'_>> = Vec::new();
        for (u, b) in &bufs {
            if let Some((_, d)) = devs.iter().find(|(x, _)| x == u) {
                reqs.push(IoReq {
                    dev: d.as_ref(),
                    offset: inner.moff(row, h0.row_off),
                    buf: IoBuf::Write(b),
                });
            }
        }
        for r in run_batch(&mut reqs) {
            r?;
        }
        replayed += 1;
    }
    let refs: Vec<&dyn BlockDev> = devs.iter().map(|(_, d)| d.as_ref()).collect();
    for r in run_flush(&refs) {
        r?;
    }
    // Everything up to max_seq is now in place: record it, so the records never replay again.
    let counter = 3;
    for (u, d) in &devs {
        let b = journal::encode_checkpoint(&g.uuid, u, counter, max_seq);
        d.write_at(&b, g.journal_offset)?;
        let b = journal::encode_checkpoint(&g.uuid, u, counter - 1, max_seq);
        d.write_at(&b, g.journal_offset + journal::BLOCK)?;
    }
    for r in run_flush(&refs) {
        r?;
    }
    if let Some(jm) = &inner.journal {
        let mut j = jm.lock();
        j.next_seq = max_seq + 1;
        j.written_ckpt = max_seq;
        j.durable_ckpt = max_seq;
        j.ckpt_counter = counter;
    }
    Ok((replayed, skipped))
}

/// Reads the bitmap from every present member (OR of all copies; a damaged page counts as
/// dirty) and returns the dirty regions.
fn load_bitmap(inner: &Inner, bm: &parking_lot::Mutex<Bitmap>) -> Result<Vec<u64>, AssembleError> {
    let g = &inner.geom;
    let snap = inner.snapshot();
    let mut b = bm.lock();
    let pages = Bitmap::pages_for(b.regions());
    for m in (0..snap.roles.len()).flat_map(|r| snap.writers(r)) {
        for p in 0..pages {
            let mut page = AlignedBuf::zeroed(bitmap::PAGE);
            m.dev
                .read_at(&mut page, g.bitmap_offset + p * bitmap::PAGE as u64)?;
            if let Err(e) = b.merge_page(p, &page) {
                tracing::warn!(
                    "array {}: bitmap page {p} on {}: {e}; treating its regions as dirty",
                    g.name,
                    m.uuid
                );
            }
        }
    }
    let dirty = b.dirty();
    drop(b);
    Ok(dirty)
}
