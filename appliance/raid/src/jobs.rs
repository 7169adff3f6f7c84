//! Background jobs: rebuilding a role onto a spare, replacing a member while it still works,
//! and resynchronising regions after an unclean shutdown. One job runs at a time; each reports
//! progress (bytes done, rate, ETA), honours a throttle, and can be cancelled. Rebuild progress is
//! checkpointed in the superblock, so a restart resumes where it left off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dw_blockdev::{AlignedBuf, BlockDev, run_flush};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::Level;
use crate::array::{Inner, LoadError, Member, Want};
use crate::parity;
use crate::superblock::{EntryState, FailReason};

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Rebuilding `role` onto `member` from the other members' redundancy.
    Rebuild {
        /// Role being rebuilt.
        role: usize,
        /// The device receiving it.
        member: Uuid,
    },
    /// Copying `role` from its current member `old` to `new`, which then takes over.
    Replace {
        /// Role being replaced.
        role: usize,
        /// Current member.
        old: Uuid,
        /// New member.
        new: Uuid,
    },
    /// Recomputing parity / copying mirrors in regions that were dirty at a crash.
    Resync {
        /// Regions to process.
        regions: u64,
    },
}

/// A job's progress, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// What the job does.
    pub kind: JobKind,
    /// Member bytes processed.
    pub done_bytes: u64,
    /// Member bytes to process in total.
    pub total_bytes: u64,
    /// Recent rate, bytes per second.
    pub rate_bytes_per_sec: f64,
    /// Estimated seconds left (None until a rate is known).
    pub eta_secs: Option<u64>,
    /// Finished (successfully or not).
    pub finished: bool,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// Progress samples are taken at most this often ...
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// ... and the rate is computed over the samples of this window: recent enough to follow a
/// throttle change or competing I/O, long enough not to jitter.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Below this span the rate is not shown (too few bytes to mean anything).
const RATE_MIN_SPAN: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    finished: AtomicBool,
    error: Mutex<Option<String>>,
    /// (time, bytes done) samples of this run, oldest first, bounded by the window. The first
    /// is the start of the run with the bytes done before it (a resumed rebuild), so those
    /// never count towards the rate.
    samples: Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

impl Progress {
    fn new(total: u64, done: u64, started: Instant) -> Self {
        Self {
            done: AtomicU64::new(done),
            total: AtomicU64::new(total),
            finished: AtomicBool::new(false),
            error: Mutex::new(None),
            samples: Mutex::new(std::iter::once((started, done)).collect()),
        }
    }

    /// Restarts the accounting at `done` bytes (where the work actually resumes).
    fn rebase(&self, done: u64, now: Instant) {
        self.done.store(done, Ordering::Relaxed);
        let mut s = self.samples.lock();
        s.clear();
        s.push_back((now, done));
    }

    /// Records `bytes` more done at `now`.
    fn advance(&self, bytes: u64, now: Instant) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut s = self.samples.lock();
        if s.back()
            .is_none_or(|&(t, _)| now.saturating_duration_since(t) >= SAMPLE_EVERY)
        {
            s.push_back((now, done));
            // Keep one sample older than the window, so the window is always covered.
            while s.len() > 2 && s.get(1).is_some_and(|&(t, _)| now - t > RATE_WINDOW) {
                s.pop_front();
            }
        }
    }

    /// Bytes per second over the recent window (this run only), and the ETA at that rate.
    fn rate_at(&self, now: Instant) -> (f64, Option<u64>) {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let s = self.samples.lock();
        // The oldest sample inside the window, or the last one before it.
        let from = s
            .iter()
            .position(|&(t, _)| now.saturating_duration_since(t) <= RATE_WINDOW)
            .map_or(s.len().saturating_sub(1), |i| i.saturating_sub(1));
        let Some(&(t0, d0)) = s.get(from) else {
            return (0.0, None);
        };
        let span = now.saturating_duration_since(t0);
        if span < RATE_MIN_SPAN {
            return (0.0, None);
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = done.saturating_sub(d0) as f64 / span.as_secs_f64();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let eta = (rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate) as u64);
        (rate, eta)
    }
}

#[derive(Debug)]
struct Running {
    kind: JobKind,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The array's job slot.
#[derive(Debug, Default)]
pub(crate) struct JobSlot {
    running: Mutex<Option<Running>>,
    /// Bytes per second; 0 = unlimited.
    pub throttle: AtomicU64,
    /// Set when the array shuts down: no job starts any more.
    shutdown: AtomicBool,
}

/// Upper bound on jobs [`JobSlot::wait`] follows: each chained job consumes a spare or ends a
/// pending state, so a chain is never longer than the member table.
const MAX_CHAIN: usize = 2 * crate::superblock::MAX_ENTRIES + 2;

impl JobSlot {
    pub(crate) fn status(&self) -> Option<JobStatus> {
        let r = self.running.lock();
        let r = r.as_ref()?;
        let (rate, eta) = r.progress.rate_at(Instant::now());
        Some(JobStatus {
            kind: r.kind.clone(),
            done_bytes: r.progress.done.load(Ordering::Relaxed),
            total_bytes: r.progress.total.load(Ordering::Relaxed),
            rate_bytes_per_sec: rate,
            eta_secs: eta,
            finished: r.progress.finished.load(Ordering::Acquire),
            error: r.progress.error.lock().clone(),
        })
    }

    /// True while a job is running (not finished).
    pub(crate) fn busy(&self) -> Option<JobKind> {
        let r = self.running.lock();
        r.as_ref()
            .filter(|r| !r.progress.finished.load(Ordering::Acquire))
            .map(|r| r.kind.clone())
    }

    /// Waits until no job runs, following the jobs a finishing job chains (a rebuild that
    /// ends may start the next one onto another spare).
    pub(crate) fn wait(&self) {
        for _ in 0..MAX_CHAIN {
            let handle = self.running.lock().as_mut().and_then(|r| r.handle.take());
            match handle {
                // A job's thread never waits for itself.
                Some(h) if h.thread().id() == std::thread::current().id() => return,
                Some(h) => {
                    let _ = h.join();
                }
                None => return,
            }
        }
    }

    /// Cancels the running job, waits for it, and lets no job start again.
    pub(crate) fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(r) = self.running.lock().as_ref() {
            r.cancel.store(true, Ordering::SeqCst);
        }
        self.wait();
    }

    fn start(
        &self,
        inner: Arc<Inner>,
        kind: JobKind,
        total: u64,
        done: u64,
        work: impl FnOnce(&Inner, &Progress, &AtomicBool) -> Result<(), String> + Send + 'static,
    ) -> bool {
        let mut slot = self.running.lock();
        if self.shutdown.load(Ordering::SeqCst)
            || slot
                .as_ref()
                .is_some_and(|r| !r.progress.finished.load(Ordering::Acquire))
        {
            return false;
        }
        // Reap the previous (finished) job's thread, unless this is that thread chaining the
        // next job (it is about to exit; joining itself would deadlock).
        if let Some(mut old) = slot.take()
            && let Some(h) = old.handle.take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
        let progress = Arc::new(Progress::new(total, done, Instant::now()));
        let cancel = Arc::new(AtomicBool::new(false));
        let (p2, c2) = (Arc::clone(&progress), Arc::clone(&cancel));
        let name = format!(
            "dw-raid-{}",
            match &kind {
                JobKind::Rebuild { .. } => "rebuild",
                JobKind::Replace { .. } => "replace",
                JobKind::Resync { .. } => "resync",
            }
        );
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let r = work(&inner, &p2, &c2);
            if let Err(e) = &r {
                tracing::error!("array {}: background job stopped: {e}", inner.geom.name);
                *p2.error.lock() = Some(e.clone());
            }
            p2.finished.store(true, Ordering::Release);
            // Whatever this job was, the members may have changed under it (a second failure
            // during a rebuild, the spare being rebuilt dying, a spare added): a role may be
            // missing while a spare sits idle. Failures during a job could not start a rebuild
            // (one job at a time), so look again now.
            if !c2.load(Ordering::SeqCst) && inner.auto_rebuild.load(Ordering::Relaxed) {
                maybe_start_rebuild(&inner);
            }
        });
        match handle {
            Ok(h) => {
                *slot = Some(Running {
                    kind,
                    progress,
                    cancel,
                    handle: Some(h),
                });
                true
            }
            Err(e) => {
                tracing::error!("cannot start a background job thread: {e}");
                false
            }
        }
    }
}

/// Sleeps as needed so that `done` bytes since `start` stay under the throttle.
fn throttle(inner: &Inner, start: Instant, done: u64) {
    let limit = inner.jobs.throttle.load(Ordering::Relaxed);
    if limit == 0 {
        return;
    }
    #[allow(clippy::cast_precision_loss)]
    let due = Duration::from_secs_f64(done as f64 / limit as f64);
    let elapsed = start.elapsed();
    if due > elapsed {
        std::thread::sleep((due - elapsed).min(Duration::from_millis(500)));
    }
}

fn arc_of(inner: &Inner) -> Option<Arc<Inner>> {
    inner.me.get().and_then(std::sync::Weak::upgrade)
}

/// After a failure: if a role is missing and a spare is attached, starts rebuilding onto it.
pub(crate) fn maybe_start_rebuild(inner: &Inner) {
    if inner.jobs.busy().is_some()
        || inner
            .layout()
            .level
            .tolerance(inner.layout().n, inner.layout().copies)
            == 0
    {
        return;
    }
    let chosen = {
        let mut c = inner.control.lock();
        if c.offline.is_some() {
            return;
        }
        let snap = inner.snapshot();
        let Some(role) = (0..snap.roles.len()).find(|&r| snap.roles[r].member.is_none()) else {
            return;
        };
        let Some(spare) = snap.spares.first().cloned() else {
            return;
        };
        let rows = inner.layout().rows;
        let Some(e) = c.entries.iter_mut().find(|e| e.uuid == spare.uuid) else {
            return;
        };
        e.state = EntryState::Rebuilding;
        e.role = u16::try_from(role).ok();
        e.recovery_rows = 0;
        e.data_rows = rows;
        c.progress.insert(spare.uuid, Arc::new(AtomicU64::new(0)));
        tracing::warn!(
            "array {}: rebuilding role {role} onto spare {}",
            inner.geom.name,
            spare.uuid
        );
        inner.commit(&mut c);
        Some((role, spare.uuid))
    };
    if let Some((role, member)) = chosen {
        start_rebuild(inner, role, member);
    }
}

/// Starts (or resumes) the rebuild of `role` onto `member`, which is already in the table as
/// `Rebuilding` (or `Replacement`).
pub(crate) fn start_rebuild(inner: &Inner, role: usize, member: Uuid) -> bool {
    let Some(arc) = arc_of(inner) else {
        return false;
    };
    let replace_old = {
        let c = inner.control.lock();
        let is_replacement = c
            .entries
            .iter()
            .any(|e| e.uuid == member && e.state == EntryState::Replacement);
        if is_replacement {
            c.entries
                .iter()
                .find(|e| {
                    e.role == u16::try_from(role).ok() && matches!(e.state, EntryState::InSync)
                })
                .map(|e| e.uuid)
        } else {
            None
        }
    };
    let kind = match replace_old {
        Some(old) => JobKind::Replace {
            role,
            old,
            new: member,
        },
        None => JobKind::Rebuild { role, member },
    };
    let total = inner.layout().rows * inner.layout().chunk;
    let resume_rows = inner
        .control
        .lock()
        .entries
        .iter()
        .find(|e| e.uuid == member)
        .map_or(0, |e| e.recovery_rows);
    inner.jobs.start(
        arc,
        kind,
        total,
        resume_rows * inner.layout().chunk,
        move |inner, progress, cancel| rebuild_role(inner, role, member, progress, cancel),
    )
}

fn member_progress(inner: &Inner, member: Uuid) -> Option<Arc<AtomicU64>> {
    let mut c = inner.control.lock();
    let start = c.entries.iter().find(|e| e.uuid == member)?.recovery_rows;
    Some(Arc::clone(
        c.progress
            .entry(member)
            .or_insert_with(|| Arc::new(AtomicU64::new(start))),
    ))
}

/// Computes the content of (`role`, `row`) from redundancy (or, for a replacement, from the
/// old member, falling back to redundancy).
fn chunk_content(
    inner: &Inner,
    role: usize,
    row: u64,
    from_old: bool,
) -> Result<Option<AlignedBuf>, String> {
    let l = inner.layout();
    let c = l.chunk;
    let snap = inner.snapshot();
    if from_old && let Some(m) = snap.readable(role, row) {
        let mut b = AlignedBuf::zeroed(usize::try_from(c).unwrap_or(0));
        if m.dev.read_at(&mut b, inner.moff(row, 0)).is_ok() {
            return Ok(Some(b));
        }
    }
    if let Some(s) = l.stripe_at_row(row) {
        // The role's own shard is never read; members that return media errors are left out
        // like missing ones (bounded: each retry excludes another role or follows a failure).
        let idx = l.shard_of_role(s, role);
        let want = if idx < l.k() { Want::Data } else { Want::All };
        let mut exclude = vec![role];
        for _ in 0..l.n + 4 {
            let snap = inner.snapshot();
            match inner.load_row(&snap, s, 0, c, &exclude, want) {
                Ok((mut shards, _)) => return Ok(Some(shards.swap_remove(idx))),
                Err(LoadError::Retry) => {}
                Err(LoadError::ReadErrors(roles)) => {
                    for r in roles {
                        if !exclude.contains(&r) {
                            exclude.push(r);
                        }
                    }
                }
                Err(LoadError::Fatal(e)) => return Err(e.to_string()),
            }
        }
        return Err(format!("stripe {s}: members kept failing"));
    }
    // Mirrored chunk (RAID-1/10 or the RAID-Z small-write region).
    let Some(chunk) = l.mirror_chunk_at(role, row) else {
        return Ok(None);
    };
    let (copies, _) = l.mirror_copies(chunk * c);
    for (r, base) in copies {
        if r == role {
            continue;
        }
        let snap = inner.snapshot();
        if let Some(m) = snap.readable(r, base / c) {
            let mut b = AlignedBuf::zeroed(usize::try_from(c).unwrap_or(0));
            if m.dev.read_at(&mut b, inner.moff(base / c, 0)).is_ok() {
                return Ok(Some(b));
            }
        }
    }
    Err(format!("no readable copy of chunk {chunk}"))
}

fn lock_key_for_row(inner: &Inner, role: usize, row: u64) -> u64 {
    let l = inner.layout();
    match l.stripe_at_row(row) {
        Some(s) => s,
        None => l.mirror_chunk_at(role, row).unwrap_or(row),
    }
}

const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

fn rebuild_role(
    inner: &Inner,
    role: usize,
    member: Uuid,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<(), String> {
    let l = inner.layout();
    let rows = l.rows;
    let done = member_progress(inner, member).ok_or("member vanished from the table")?;
    let replacing = inner
        .control
        .lock()
        .entries
        .iter()
        .any(|e| e.uuid == member && e.state == EntryState::Replacement);
    let dev = inner
        .control
        .lock()
        .devices
        .get(&member)
        .cloned()
        .ok_or("rebuild target device is gone")?;
    let start_row = done.load(Ordering::Acquire);
    let started = Instant::now();
    progress.rebase(start_row * l.chunk, started);
    let mut last_ckpt = Instant::now();
    let mut rows_since = 0u64;
    for row in start_row..rows {
        if cancel.load(Ordering::SeqCst) {
            checkpoint_progress(inner, member, &dev, row)?;
            return Err("cancelled".into());
        }
        throttle(inner, started, (row - start_row) * l.chunk);
        {
            let key = lock_key_for_row(inner, role, row);
            let _g = inner.lock_key(key);
            if let Some(content) = chunk_content(inner, role, row, replacing)?
                && let Err(e) = dev.write_at(&content, inner.moff(row, 0))
            {
                inner.fail_device(member, FailReason::IoError, &e.to_string());
                return Err(format!("writing the new member failed: {e}"));
            }
            done.store(row + 1, Ordering::Release);
        }
        progress.advance(l.chunk, Instant::now());
        rows_since += 1;
        if last_ckpt.elapsed() >= CHECKPOINT_EVERY || rows_since >= (rows / 64).max(16) {
            checkpoint_progress(inner, member, &dev, row + 1)?;
            last_ckpt = Instant::now();
            rows_since = 0;
        }
    }
    finish_rebuild(inner, role, member, &dev)
}

/// Makes the rebuilt rows durable, then records how far the rebuild got.
fn checkpoint_progress(
    inner: &Inner,
    member: Uuid,
    dev: &Arc<dyn BlockDev>,
    rows: u64,
) -> Result<(), String> {
    if let Err(e) = dev.flush() {
        inner.fail_device(member, FailReason::IoError, &e.to_string());
        return Err(format!("flushing the new member failed: {e}"));
    }
    let mut c = inner.control.lock();
    if let Some(e) = c.entries.iter_mut().find(|e| e.uuid == member) {
        e.recovery_rows = rows.min(e.data_rows);
    }
    inner.commit(&mut c);
    Ok(())
}

fn finish_rebuild(
    inner: &Inner,
    role: usize,
    member: Uuid,
    dev: &Arc<dyn BlockDev>,
) -> Result<(), String> {
    if let Err(e) = dev.flush() {
        inner.fail_device(member, FailReason::IoError, &e.to_string());
        return Err(format!("flushing the new member failed: {e}"));
    }
    // Journal records written before the swap must not be needed by replay afterwards.
    inner.checkpoint(true).map_err(|e| e.to_string())?;
    let mut c = inner.control.lock();
    let role16 = u16::try_from(role).ok();
    let was_replacement = c
        .entries
        .iter()
        .any(|e| e.uuid == member && e.state == EntryState::Replacement);
    if was_replacement {
        let old: Vec<Uuid> = c
            .entries
            .iter()
            .filter(|e| e.role == role16 && e.state == EntryState::InSync)
            .map(|e| e.uuid)
            .collect();
        for e in &mut c.entries {
            if old.contains(&e.uuid) {
                e.state = EntryState::Failed;
                e.reason = FailReason::Replaced;
            }
        }
        for u in &old {
            c.devices.remove(u);
        }
    }
    if let Some(e) = c.entries.iter_mut().find(|e| e.uuid == member) {
        e.state = EntryState::InSync;
        e.recovery_rows = 0;
    }
    c.progress.remove(&member);
    tracing::info!(
        "array {}: role {role} is in sync on {member}",
        inner.geom.name
    );
    inner.commit(&mut c);
    Ok(())
}

/// Starts resynchronising the regions marked pending.
pub(crate) fn start_resync(inner: &Inner) -> bool {
    let Some(arc) = arc_of(inner) else {
        return false;
    };
    let regions: Vec<u64> = inner.resync_pending.lock().iter().copied().collect();
    if regions.is_empty() {
        return true;
    }
    let gran = inner.geom.bitmap_gran;
    let kind = JobKind::Resync {
        regions: regions.len() as u64,
    };
    inner.jobs.start(
        arc,
        kind,
        regions.len() as u64 * gran,
        0,
        move |inner, progress, cancel| resync(inner, &regions, progress, cancel),
    )
}

fn resync(
    inner: &Inner,
    regions: &[u64],
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<(), String> {
    let l = inner.layout();
    let gran = inner.geom.bitmap_gran;
    let started = Instant::now();
    for (i, &r) in regions.iter().enumerate() {
        if cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        throttle(inner, started, i as u64 * gran);
        let row_lo = r * gran / l.chunk;
        let row_hi = ((r + 1) * gran).div_ceil(l.chunk).min(l.rows);
        for row in row_lo..row_hi {
            if let Some(s) = l.stripe_at_row(row) {
                let _g = inner.lock_key(s);
                resync_stripe(inner, s)?;
            } else if matches!(l.level, Level::Raid1 | Level::Raid10) || l.level.is_z() {
                for role in 0..l.n {
                    if let Some(chunk) = l.mirror_chunk_at(role, row) {
                        let (copies, _) = l.mirror_copies(chunk * l.chunk);
                        // Each chunk once: from the row of its first copy.
                        if copies[0].0 == role && copies[0].1 / l.chunk == row {
                            let _g = inner.lock_key(chunk);
                            resync_mirror_chunk(inner, &copies)?;
                        }
                    }
                }
            }
        }
        inner.resync_pending.lock().remove(&r);
        progress.advance(gran, Instant::now());
    }
    // Make the repairs durable; the next flush clears the bits.
    let snap = inner.snapshot();
    let devs: Vec<Arc<dyn BlockDev>> = (0..snap.roles.len())
        .flat_map(|r| snap.writers(r).map(|m| Arc::clone(&m.dev)))
        .collect();
    let refs: Vec<&dyn BlockDev> = devs.iter().map(AsRef::as_ref).collect();
    for r in run_flush(&refs) {
        r.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Recomputes a stripe's parity from its data (only when every data shard is readable).
fn resync_stripe(inner: &Inner, s: u64) -> Result<(), String> {
    let l = inner.layout();
    let (k, p) = (l.k(), l.p());
    let snap = inner.snapshot();
    let row = l.stripe_row(s);
    if (0..k).any(|d| snap.readable(l.data_role(s, d), row).is_none()) {
        // Degraded: the data cannot be re-read in full; parity stays as the crash left it.
        return Ok(());
    }
    let (shards, _) = match inner.load_row(&snap, s, 0, l.chunk, &[], Want::All) {
        Ok(x) => x,
        Err(LoadError::Fatal(e)) => return Err(e.to_string()),
        Err(_) => return Ok(()),
    };
    let mut fresh: Vec<AlignedBuf> = (0..p)
        .map(|_| AlignedBuf::zeroed(shards[0].len()))
        .collect();
    {
        let cols: Vec<&[u8]> = shards[..k].iter().map(|b| &b[..]).collect();
        let mut outs: Vec<&mut [u8]> = fresh.iter_mut().map(|b| &mut b[..]).collect();
        parity::encode(&cols, &mut outs);
    }
    for j in 0..p {
        if fresh[j][..] != shards[k + j][..] {
            for m in snap.writers(l.parity_role(s, j)) {
                if let Err(e) = m.dev.write_at(&fresh[j], inner.moff(row, 0)) {
                    inner.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Copies the first readable copy of a mirrored chunk over the others where they differ.
fn resync_mirror_chunk(inner: &Inner, copies: &[(usize, u64)]) -> Result<(), String> {
    let l = inner.layout();
    let snap = inner.snapshot();
    let len = usize::try_from(l.chunk).unwrap_or(0);
    let mut canonical: Option<AlignedBuf> = None;
    for &(role, base) in copies {
        if let Some(m) = snap.readable(role, base / l.chunk) {
            let mut b = AlignedBuf::zeroed(len);
            if m.dev.read_at(&mut b, inner.moff(base / l.chunk, 0)).is_ok() {
                canonical = Some(b);
                break;
            }
        }
    }
    let Some(good) = canonical else { return Ok(()) };
    for &(role, base) in copies {
        for m in snap.writers(role).collect::<Vec<&Member>>() {
            let mut b = AlignedBuf::zeroed(len);
            let at = inner.moff(base / l.chunk, 0);
            let same = m.dev.read_at(&mut b, at).is_ok() && b[..] == good[..];
            if !same && let Err(e) = m.dev.write_at(&good, at) {
                inner.fail_device(m.uuid, FailReason::IoError, &e.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn rate_counts_only_this_run_and_follows_the_recent_window() {
        let t0 = Instant::now();
        let mib = 1u64 << 20;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A rebuild resumed after a restart at 900 of 1000 MiB: 40 MiB in its first 2 s.
        let p = Progress::new(1000 * mib, 900 * mib, t0);
        assert_eq!(p.rate_at(t0).0, 0.0, "no rate before anything happened");
        for i in 1..=8 {
            p.advance(5 * mib, at(250 * i));
        }
        let (rate, eta) = p.rate_at(at(2000));
        assert!(
            (rate - 20.0 * mib as f64).abs() < mib as f64,
            "rate {rate}: the 900 MiB done before the restart must not count"
        );
        assert_eq!(eta, Some(3), "60 MiB left at 20 MiB/s");
        // Then 30 s at 1 MiB/s: the rate follows within the window.
        for i in 1..=120 {
            p.advance(mib / 4, at(2000 + 250 * i));
        }
        let (rate, _) = p.rate_at(at(32_000));
        assert!(
            (rate - mib as f64).abs() < 0.1 * mib as f64,
            "rate {rate} after slowing down"
        );
        assert!(p.samples.lock().len() < 50, "samples stay bounded");
    }
}
