//! The data region: log-structured segments, each a whole number of the backing device's
//! stripes, filled in memory and written in place exactly once, as full stripes.
//!
//! Small writes therefore never cost a stripe each, and a stripe that holds committed data is
//! never rewritten (no read-modify-write, no write hole, also on RAID-Z). What has been
//! committed in a segment that is not full yet is made durable in the intent log (in the
//! small-write region, so mirrored with the array's full redundancy), like ZFS's ZIL: at each
//! commit the segment's new tail goes to the log; when the segment fills it is written in place
//! and its log records become garbage once the metadata commit that records it as sealed is
//! durable. After a crash, open segments are rebuilt from the log and written in place.
//!
//! Segments freed by a metadata transaction are reused only after that transaction is durable,
//! so a crash never finds a live reference to data that was overwritten.
//!
//! An extent is appended before the transaction that records it commits, so a segment's
//! `live_bytes` in the metadata can lag behind what writers have put in it. A segment is only
//! released (or picked by the cleaner) when it is *quiescent*: no writer that may still hold
//! unrecorded extents in it is active. Writers register with [`Segments::writer`] before their
//! first append and drop the guard after the transaction that records their extents has
//! committed (or failed); every append stamps its segment with a sequence number, and a segment
//! is quiescent when every active writer registered after its last append.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dw_blockdev::AlignedBuf;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::backing::Backing;
use crate::errors::VdeError;
use crate::format::{BLOCK, LogRecord};

/// Free segments kept for the cleaner.
pub(crate) const RESERVE: u64 = 2;

/// Geometry of the data region and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentLayout {
    pub data_start: u64,
    pub seg_bytes: u64,
    pub count: u64,
    pub log_start: u64,
    pub log_len: u64,
}

impl SegmentLayout {
    pub(crate) fn addr(&self, seg: u64) -> u64 {
        self.data_start + seg * self.seg_bytes
    }

    pub(crate) fn segment_of(&self, addr: u64) -> Option<u64> {
        if addr < self.data_start {
            return None;
        }
        let s = (addr - self.data_start) / self.seg_bytes;
        (s < self.count).then_some(s)
    }
}

/// A segment being filled.
#[derive(Debug)]
struct Open {
    seg: u64,
    buf: AlignedBuf,
    /// Bytes appended (4 KiB multiple).
    fill: u64,
    /// Bytes durable in the log.
    logged: u64,
    /// Append sequence of the last append (see [`Segments::quiescent`]).
    last_append: u64,
    /// The buffer was used before: bytes beyond `fill` are stale and zeroed when sealing.
    reused: bool,
}

/// What a commit must record about segments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SegmentChanges {
    /// Segments now open, with the bytes durable in the log.
    pub open: Vec<(u64, u64)>,
    /// Segments written in place since the last commit.
    pub sealed: Vec<u64>,
    /// Oldest log sequence still needed after this commit.
    pub log_checkpoint: u64,
    /// Sequence the next record will get.
    pub next_seq: u64,
}

#[derive(Debug)]
struct State {
    /// Free segment ranges (sorted, disjoint).
    free: Vec<Range<u64>>,
    /// Freed by transactions not yet durable.
    pending_free: Vec<u64>,
    /// Freed by the transaction being committed now (moves to `free` when it is durable).
    committing_free: Vec<u64>,
    /// Written in place, waiting for the metadata to say so.
    sealed_unrecorded: Vec<u64>,
    /// Being written in place right now (readers fall back to these buffers).
    sealing: Vec<(u64, Arc<AlignedBuf>)>,
    /// Append sequence of the last append to segments sealed in this session (entries whose
    /// segment is quiescent are pruned).
    sealed_last: HashMap<u64, u64>,
    /// Sealed segments whose metadata says they are empty but which were not quiescent when
    /// that was seen: released by a later commit once they are.
    deferred: Vec<u64>,
    /// Segment buffers of sealed segments, for reuse: a fresh 2 MiB buffer costs a page fault
    /// per 4 KiB and a zeroing pass, about as much as hashing the data it will hold.
    spare: Vec<AlignedBuf>,
    log: LogRing,
}

#[derive(Debug)]
struct LogRing {
    head: u64,
    /// Sequence of the next record.
    seq: u64,
    /// Records may only use sequences below this: the limit the last durable commit recorded
    /// (a new session starts at it, so a number is never reused).
    limit: u64,
    /// (offset, length, seq, segment) of records that may still be needed.
    live: VecDeque<(u64, u64, u64, u64)>,
}

/// Open-segment slots: writers on different threads fill different segments, so encoding
/// (compression, encryption, hashing) runs in parallel straight into segment buffers.
const SLOTS: usize = 4;

thread_local! {
    static SLOT: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS
    };
}

/// The segment store.
#[derive(Debug)]
pub(crate) struct Segments {
    backing: Arc<dyn Backing>,
    pub layout: SegmentLayout,
    vde: Uuid,
    /// Lock order: a slot, then `st`; never the reverse. `writers` is taken alone.
    slots: Vec<Mutex<Option<Open>>>,
    st: Mutex<State>,
    /// Incremented by every append.
    append_seq: AtomicU64,
    /// Active writers: registration sequence → count.
    writers: Mutex<BTreeMap<u64, u32>>,
}

/// A registered writer (see the module documentation); deregisters when dropped.
#[derive(Debug)]
pub(crate) struct WriterGuard<'a> {
    segs: &'a Segments,
    start: u64,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let mut w = self.segs.writers.lock();
        if let Some(n) = w.get_mut(&self.start) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.start);
            }
        }
    }
}

fn merge_free(free: &mut Vec<Range<u64>>, seg: u64) {
    free.push(seg..seg + 1);
    free.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(free.len());
    for r in free.drain(..) {
        match out.last_mut() {
            Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    *free = out;
}

fn round4k(v: u64) -> u64 {
    v.div_ceil(BLOCK as u64) * BLOCK as u64
}

impl Segments {
    /// A store whose `used` segments (sorted) are taken; everything else is free. `log_seq`
    /// is the durable sequence limit: numbering continues there, and no record is written
    /// until a durable commit has raised the limit ([`Segments::committed`]).
    pub(crate) fn new(
        backing: Arc<dyn Backing>,
        layout: SegmentLayout,
        vde: Uuid,
        used: &[u64],
        log_seq: u64,
    ) -> Self {
        let mut free = Vec::new();
        let mut next = 0u64;
        for &u in used {
            if u > next {
                free.push(next..u);
            }
            next = next.max(u + 1);
        }
        if next < layout.count {
            free.push(next..layout.count);
        }
        Self {
            backing,
            layout,
            vde,
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            st: Mutex::new(State {
                free,
                pending_free: Vec::new(),
                committing_free: Vec::new(),
                sealed_unrecorded: Vec::new(),
                sealing: Vec::new(),
                sealed_last: HashMap::new(),
                deferred: Vec::new(),
                spare: Vec::new(),
                log: LogRing {
                    head: BLOCK as u64,
                    seq: log_seq,
                    limit: log_seq,
                    live: VecDeque::new(),
                },
            }),
            append_seq: AtomicU64::new(1),
            writers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers a writer: hold the guard from before the first append until the transaction
    /// that records the appended extents has committed or failed.
    pub(crate) fn writer(&self) -> WriterGuard<'_> {
        let mut w = self.writers.lock();
        let start = self.append_seq.load(Ordering::SeqCst);
        *w.entry(start).or_insert(0) += 1;
        WriterGuard { segs: self, start }
    }

    /// Registration sequence of the oldest active writer (`u64::MAX` when none is active).
    fn oldest_writer(&self) -> u64 {
        self.writers
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// True when no active writer can hold unrecorded extents in sealed segment `seg`: its
    /// metadata record is then the whole truth about it.
    pub(crate) fn quiescent(&self, seg: u64) -> bool {
        let oldest = self.oldest_writer();
        let st = self.st.lock();
        st.sealed_last.get(&seg).is_none_or(|&last| last <= oldest)
    }

    /// Remembers a sealed segment found empty while not quiescent.
    pub(crate) fn defer_release(&self, seg: u64) {
        let mut st = self.st.lock();
        if !st.deferred.contains(&seg) {
            st.deferred.push(seg);
        }
    }

    /// The deferred segments that are quiescent now (removed from the list; the caller
    /// releases those whose record still says empty).
    pub(crate) fn take_quiescent_deferred(&self) -> Vec<u64> {
        let oldest = self.oldest_writer();
        let mut st = self.st.lock();
        let State {
            deferred,
            sealed_last,
            ..
        } = &mut *st;
        let mut out = Vec::new();
        deferred.retain(|seg| {
            let q = sealed_last.get(seg).is_none_or(|&last| last <= oldest);
            if q {
                out.push(*seg);
            }
            !q
        });
        // Entries of quiescent segments carry no information any more.
        if sealed_last.len() > 1024 {
            sealed_last.retain(|_, last| *last > oldest);
        }
        out
    }

    /// Free bytes in the data region (free segments plus room in open ones).
    pub(crate) fn free_bytes(&self) -> u64 {
        let room: u64 = self
            .slots
            .iter()
            .filter_map(|s| s.lock().as_ref().map(|o| self.layout.seg_bytes - o.fill))
            .sum();
        let st = self.st.lock();
        let segs: u64 = st.free.iter().map(|r| r.end - r.start).sum();
        segs * self.layout.seg_bytes + room
    }

    /// Appends stored extent bytes; returns the device address. The bytes are readable at once
    /// and durable after the next commit.
    pub(crate) fn append(&self, data: &[u8]) -> Result<u64, VdeError> {
        self.append_with(data.len(), false, |b| {
            b[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .map(|x| x.0)
    }

    /// [`Segments::append`] that may use the reserve (the cleaner).
    pub(crate) fn append_reserved(&self, data: &[u8]) -> Result<u64, VdeError> {
        self.append_with(data.len(), true, |b| {
            b[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .map(|x| x.0)
    }

    /// Reserves up to `max_len` bytes in an open segment and lets `fill` write the extent
    /// there directly (no intermediate buffer); `fill` returns the bytes it used. Returns the
    /// device address and that length. On error nothing is consumed. The last [`RESERVE`] free
    /// segments are only handed out with `reserve` (the cleaner), so it can always make room.
    pub(crate) fn append_with(
        &self,
        max_len: usize,
        reserve: bool,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, VdeError>,
    ) -> Result<(u64, usize), VdeError> {
        let padded = round4k(max_len as u64);
        if padded > self.layout.seg_bytes {
            return Err(VdeError::Invalid(format!(
                "an extent of up to {max_len} bytes does not fit a {}-byte segment",
                self.layout.seg_bytes
            )));
        }
        let idx = SLOT.with(|s| *s);
        let mut slot = self.slots[idx].lock();
        if slot
            .as_ref()
            .is_some_and(|o| o.fill + padded > self.layout.seg_bytes)
        {
            self.seal_slot(&mut slot, false)?;
        }
        if slot.is_none() {
            *slot = Some(self.open_new(reserve)?);
        }
        let o = slot
            .as_mut()
            .ok_or_else(|| VdeError::Corrupt("no open segment".into()))?;
        let at = usize::try_from(o.fill).unwrap_or(0);
        let n = fill(&mut o.buf[at..at + max_len])?;
        assert!(n <= max_len, "filled more than reserved");
        let addr = self.layout.addr(o.seg) + o.fill;
        o.fill += round4k(n as u64);
        o.last_append = self.append_seq.fetch_add(1, Ordering::SeqCst) + 1;
        if o.fill + BLOCK as u64 > self.layout.seg_bytes {
            self.seal_slot(&mut slot, false)?;
        }
        Ok((addr, n))
    }

    fn open_new(&self, reserve: bool) -> Result<Open, VdeError> {
        let mut st = self.st.lock();
        let free_segs: u64 = st.free.iter().map(|r| r.end - r.start).sum();
        if !reserve && free_segs <= RESERVE {
            return Err(VdeError::NoSpace(
                "the data region is full (the last free segments are reserved for cleaning)".into(),
            ));
        }
        let Some(r) = st.free.first_mut() else {
            return Err(VdeError::NoSpace(
                "the data region has no free segment (delete data or snapshots; freed space becomes reusable after the next commit)".into(),
            ));
        };
        let seg = r.start;
        r.start += 1;
        if r.start == r.end {
            st.free.remove(0);
        }
        let spare = st.spare.pop();
        drop(st);
        let reused = spare.is_some();
        Ok(Open {
            seg,
            buf: spare.unwrap_or_else(|| {
                AlignedBuf::zeroed(usize::try_from(self.layout.seg_bytes).unwrap_or(0))
            }),
            fill: 0,
            logged: 0,
            last_append: 0,
            reused,
        })
    }

    /// Writes the slot's segment in place (whole stripes; `pad` marks it full first). On
    /// failure the segment stays in the slot (its committed bytes are still in the log).
    fn seal_slot(&self, slot: &mut Option<Open>, pad: bool) -> Result<(), VdeError> {
        let Some(Open {
            seg,
            mut buf,
            fill,
            logged,
            last_append,
            reused,
        }) = slot.take()
        else {
            return Ok(());
        };
        if reused {
            // Stale bytes of the buffer's previous segment must not be written again here.
            buf[usize::try_from(fill).unwrap_or(0)..].fill(0);
        }
        let fill = if pad { self.layout.seg_bytes } else { fill };
        let buf = Arc::new(buf);
        self.st.lock().sealing.push((seg, Arc::clone(&buf)));
        let r = self.backing.dev().write_at(&buf, self.layout.addr(seg));
        let mut st = self.st.lock();
        st.sealing.retain(|(s, _)| *s != seg);
        match r {
            Ok(()) => {
                st.sealed_unrecorded.push(seg);
                if last_append > 0 {
                    st.sealed_last.insert(seg, last_append);
                }
                // Readers copy out of `sealing` under this lock, so no one else holds it now.
                if st.spare.len() < SLOTS
                    && let Ok(b) = Arc::try_unwrap(buf)
                {
                    st.spare.push(b);
                }
                Ok(())
            }
            Err(e) => {
                drop(st);
                let buf = Arc::try_unwrap(buf).unwrap_or_else(|b| (*b).clone());
                *slot = Some(Open {
                    seg,
                    buf,
                    fill,
                    logged,
                    last_append,
                    reused: false,
                });
                Err(VdeError::Io(e))
            }
        }
    }

    /// Reads `out.len()` bytes at device address `addr` from a segment buffer still in memory;
    /// `false` when the address is not in one (read it from the device).
    pub(crate) fn read_buffered(&self, addr: u64, out: &mut [u8]) -> bool {
        let Some(seg) = self.layout.segment_of(addr) else {
            return false;
        };
        let off = usize::try_from(addr - self.layout.addr(seg)).unwrap_or(usize::MAX);
        for slot in &self.slots {
            let g = slot.lock();
            if let Some(o) = g.as_ref().filter(|o| o.seg == seg) {
                out.copy_from_slice(&o.buf[off..off + out.len()]);
                return true;
            }
        }
        let st = self.st.lock();
        if let Some((_, b)) = st.sealing.iter().find(|(s, _)| *s == seg) {
            out.copy_from_slice(&b[off..off + out.len()]);
            return true;
        }
        false
    }

    /// A segment whose every extent was freed by the transaction being built: reusable once
    /// that transaction is durable.
    pub(crate) fn release(&self, seg: u64) {
        let mut st = self.st.lock();
        st.sealed_last.remove(&seg);
        st.deferred.retain(|&d| d != seg);
        if !st.pending_free.contains(&seg) {
            st.pending_free.push(seg);
        }
    }

    /// Before a metadata commit: logs every open segment's unlogged tail and reports what the
    /// commit must record. Call with the metadata write lock held, so that nothing commits
    /// between this and the commit.
    pub(crate) fn prepare_commit(
        &self,
        _durable_log_ckpt: u64,
    ) -> Result<SegmentChanges, VdeError> {
        let layout = self.layout;
        let mut records: Vec<(u64, LogRecord, AlignedBuf)> = Vec::new();
        let mut open = Vec::new();
        // (slot, segment, logged before): restored if writing the records fails, so that no
        // later commit records bytes as logged that never reached the log.
        let mut advanced: Vec<(usize, u64, u64)> = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let mut g = slot.lock();
            let Some(o) = g.as_mut() else { continue };
            let (seg, from, to) = (o.seg, o.logged, o.fill);
            if to > from {
                let size = BLOCK as u64 + (to - from);
                let reserved = {
                    let mut st = self.st.lock();
                    let seq = st.log.seq;
                    let at = Self::reserve(&mut st.log, layout.log_len, size, seg);
                    if at.is_some() {
                        st.log.seq += 1;
                    }
                    at.map(|a| (a, seq))
                };
                match reserved {
                    Some((at, seq)) => {
                        let payload = AlignedBuf::from_slice(
                            &o.buf[usize::try_from(from).unwrap_or(0)
                                ..usize::try_from(to).unwrap_or(0)],
                        );
                        let rec = LogRecord {
                            vde: self.vde,
                            seq,
                            segment: seg,
                            seg_offset: from,
                            length: to - from,
                            payload_hash: *blake3::hash(&payload).as_bytes(),
                        };
                        records.push((at, rec, payload));
                        advanced.push((idx, seg, from));
                        o.logged = to;
                    }
                    None => {
                        // Log full: write this segment in place instead (padded) — it then
                        // no longer needs the log.
                        if let Err(e) = self.seal_slot(&mut g, true) {
                            drop(g);
                            for &(i, seg, from) in &advanced {
                                if let Some(o) =
                                    self.slots[i].lock().as_mut().filter(|o| o.seg == seg)
                                {
                                    o.logged = o.logged.min(from);
                                }
                            }
                            return Err(e);
                        }
                        continue;
                    }
                }
            }
            if let Some(o) = g.as_ref() {
                open.push((o.seg, o.logged));
            }
        }
        let (sealed, log_checkpoint, next_seq) = {
            let mut st = self.st.lock();
            let sealed = std::mem::take(&mut st.sealed_unrecorded);
            st.committing_free = std::mem::take(&mut st.pending_free);
            let open_segs: Vec<u64> = open.iter().map(|x| x.0).collect();
            let ckpt = st
                .log
                .live
                .iter()
                .filter(|r| open_segs.contains(&r.3))
                .map(|r| r.2)
                .min()
                .unwrap_or(st.log.seq);
            (sealed, ckpt, st.log.seq)
        };
        let changes = SegmentChanges {
            open,
            sealed,
            log_checkpoint,
            next_seq,
        };
        for (at, rec, payload) in &records {
            let mut b = AlignedBuf::zeroed(BLOCK + payload.len());
            b[..BLOCK].copy_from_slice(&rec.encode());
            b[BLOCK..].copy_from_slice(payload);
            if let Err(e) = self.backing.dev().write_at(&b, layout.log_start + at) {
                for &(idx, seg, from) in &advanced {
                    if let Some(o) = self.slots[idx].lock().as_mut().filter(|o| o.seg == seg) {
                        o.logged = o.logged.min(from);
                    }
                }
                self.commit_failed(&changes);
                return Err(e.into());
            }
        }
        Ok(changes)
    }

    /// Finds room for a record of `size` bytes: right after the previous record when that is
    /// free (sequential writes), else the first gap between live records. Records of a
    /// long-lived open segment must not block the whole ring: when they did, every commit had
    /// to write some other segment in place padded, wasting most of it.
    fn reserve(log: &mut LogRing, log_len: u64, size: u64, seg: u64) -> Option<u64> {
        if size > log_len.saturating_sub(BLOCK as u64) || log.seq >= log.limit {
            return None;
        }
        let overlaps = |at: u64| -> bool {
            log.live
                .iter()
                .any(|&(o, l, _, _)| o < at + size && at < o + l)
        };
        let at = if log.head + size <= log_len && !overlaps(log.head) {
            log.head
        } else {
            let mut spans: Vec<(u64, u64)> = log.live.iter().map(|r| (r.0, r.0 + r.1)).collect();
            spans.sort_unstable();
            let mut cand = BLOCK as u64;
            for (start, end) in spans {
                if cand + size <= start {
                    break;
                }
                cand = cand.max(end);
            }
            if cand + size > log_len {
                return None;
            }
            cand
        };
        log.live.push_back((at, size, log.seq, seg));
        log.head = at + size;
        Some(at)
    }

    /// After the commit of `changes` is durable: freed segments become reusable, log records
    /// of segments no longer open become garbage, and log sequences below `seq_limit` (which
    /// that commit recorded) may be used.
    pub(crate) fn committed(&self, changes: &SegmentChanges, seq_limit: u64) {
        let open: Vec<u64> = self
            .slots
            .iter()
            .filter_map(|s| s.lock().as_ref().map(|o| o.seg))
            .collect();
        let mut st = self.st.lock();
        st.log.limit = st.log.limit.max(seq_limit);
        for seg in std::mem::take(&mut st.committing_free) {
            merge_free(&mut st.free, seg);
        }
        let sealed = &changes.sealed;
        st.log
            .live
            .retain(|r| open.contains(&r.3) && !sealed.contains(&r.3));
    }

    /// The commit failed: what it would have recorded is still pending.
    pub(crate) fn commit_failed(&self, changes: &SegmentChanges) {
        let mut st = self.st.lock();
        let mut again = std::mem::take(&mut st.committing_free);
        st.pending_free.append(&mut again);
        let mut sealed = changes.sealed.clone();
        st.sealed_unrecorded.append(&mut sealed);
    }

    /// Writes every open segment in place (padded), for a clean shutdown.
    pub(crate) fn seal_all(&self) -> Result<(), VdeError> {
        for slot in &self.slots {
            self.seal_slot(&mut slot.lock(), true)?;
        }
        Ok(())
    }

    /// Crash recovery: rebuilds the open segments recorded in the metadata (segment, bytes
    /// logged) from the log records at or after `log_checkpoint` and writes them in place
    /// (padded); the next commit records them as sealed. Returns the next log sequence.
    ///
    /// # Errors
    /// When the log does not hold what the metadata says it does.
    pub(crate) fn recover(
        &self,
        open: &[(u64, u64)],
        log_checkpoint: u64,
    ) -> Result<u64, VdeError> {
        if open.is_empty() {
            return Ok(log_checkpoint);
        }
        let dev = self.backing.dev();
        let mut log = AlignedBuf::zeroed(usize::try_from(self.layout.log_len).unwrap_or(0));
        dev.read_at(&mut log, self.layout.log_start)?;
        let mut per_seg: BTreeMap<u64, Vec<(LogRecord, usize)>> = BTreeMap::new();
        let mut max_seq = log_checkpoint;
        let mut at = BLOCK;
        // Bounded: every step advances by at least one block.
        while at + BLOCK <= log.len() {
            match LogRecord::decode(&log[at..at + BLOCK], &self.vde) {
                Ok(r) if r.seq >= log_checkpoint => {
                    let len = usize::try_from(r.length).unwrap_or(usize::MAX);
                    let ok = log
                        .get(at + BLOCK..at.saturating_add(BLOCK).saturating_add(len))
                        .is_some_and(|p| *blake3::hash(p).as_bytes() == r.payload_hash);
                    if ok {
                        max_seq = max_seq.max(r.seq + 1);
                        per_seg.entry(r.segment).or_default().push((r, at + BLOCK));
                        at += BLOCK + len;
                        continue;
                    }
                    at += BLOCK;
                }
                _ => at += BLOCK,
            }
        }
        {
            // Every record was numbered below the durable limit this session started at, so
            // this never moves the numbering back.
            let mut st = self.st.lock();
            st.log.seq = st.log.seq.max(max_seq);
        }
        for &(seg, logged) in open {
            let mut buf = AlignedBuf::zeroed(usize::try_from(self.layout.seg_bytes).unwrap_or(0));
            let mut covered = vec![false; usize::try_from(logged / BLOCK as u64).unwrap_or(0)];
            let mut recs = per_seg.remove(&seg).unwrap_or_default();
            recs.sort_by_key(|(r, _)| r.seq);
            for (r, payload_at) in recs {
                let from = usize::try_from(r.seg_offset).unwrap_or(usize::MAX);
                let len = usize::try_from(r.length).unwrap_or(0);
                if from.saturating_add(len) > buf.len() {
                    continue;
                }
                buf[from..from + len].copy_from_slice(&log[payload_at..payload_at + len]);
                for b in (from / BLOCK)..((from + len) / BLOCK) {
                    if let Some(c) = covered.get_mut(b) {
                        *c = true;
                    }
                }
            }
            if let Some(gap) = covered.iter().position(|c| !c) {
                return Err(VdeError::Corrupt(format!(
                    "intent log does not cover committed data of segment {seg} (first gap at {}): the log is damaged",
                    gap * BLOCK
                )));
            }
            self.seal_slot(
                &mut Some(Open {
                    seg,
                    buf,
                    fill: self.layout.seg_bytes,
                    logged,
                    last_append: 0,
                    reused: false,
                }),
                true,
            )?;
        }
        Ok(max_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::PlainBacking;
    use dw_blockdev::{BlockDev, MemDev};

    fn store() -> (Arc<MemDev>, Segments) {
        let dev = Arc::new(MemDev::new("m", 64 << 20, 4096));
        let b: Arc<dyn Backing> = Arc::new(PlainBacking::new(dev.clone(), 65536));
        let layout = SegmentLayout {
            data_start: 16 << 20,
            seg_bytes: 1 << 20,
            count: 40,
            log_start: 8 << 20,
            log_len: 4 << 20,
        };
        let s = Segments::new(b, layout, Uuid::from_bytes([1; 16]), &[0, 3], 0);
        // As after the first durable commit of a session: sequences below 2^20 are reserved.
        s.committed(&SegmentChanges::default(), 1 << 20);
        (dev, s)
    }

    #[test]
    fn appends_fill_segments_and_seal_them() {
        let (dev, s) = store();
        let a = s.append(&[1u8; 5000]).expect("append");
        assert_eq!(a, s.layout.addr(1), "first free segment");
        let b = s.append(&[2u8; 4096]).expect("append");
        assert_eq!(b, a + 8192, "padded to 4 KiB");
        let mut out = vec![0u8; 4096];
        assert!(s.read_buffered(b, &mut out));
        assert_eq!(out, vec![2u8; 4096]);
        // Fill the rest of the segment: it is written in place.
        for _ in 0..254 {
            s.append(&[3u8; 4096]).expect("append");
        }
        assert!(
            !s.read_buffered(a, &mut out),
            "sealed segments are read from the device"
        );
        let mut first = vec![0u8; 5000];
        dev.read_at(&mut first[..4096], a).expect("read");
        assert_eq!(&first[..4096], &[1u8; 4096][..]);
        let ch = s.prepare_commit(0).expect("prepare");
        assert_eq!(ch.sealed, vec![1]);
    }

    #[test]
    fn committed_tails_recover_from_the_log() {
        let (dev, s) = store();
        let a = s.append(&[7u8; 12288]).expect("append");
        let ch = s.prepare_commit(0).expect("prepare");
        assert_eq!(ch.open, vec![(1, 12288)]);
        s.committed(&ch, 1 << 20);
        // Uncommitted tail (lost in the crash).
        s.append(&[8u8; 4096]).expect("append");
        drop(s);
        let b: Arc<dyn Backing> = Arc::new(PlainBacking::new(dev.clone(), 65536));
        let layout = SegmentLayout {
            data_start: 16 << 20,
            seg_bytes: 1 << 20,
            count: 40,
            log_start: 8 << 20,
            log_len: 4 << 20,
        };
        let s2 = Segments::new(b, layout, Uuid::from_bytes([1; 16]), &[0, 1, 3], 0);
        s2.recover(&ch.open, ch.log_checkpoint).expect("recover");
        let mut out = vec![0u8; 12288];
        assert!(
            !s2.read_buffered(a, &mut out),
            "recovered segments are written in place"
        );
        dev.read_at(&mut out, a).expect("read");
        assert_eq!(out, vec![7u8; 12288]);
        // Metadata claiming more than the log holds is corruption, reported.
        let s3 = Segments::new(
            Arc::new(PlainBacking::new(dev, 65536)),
            layout,
            Uuid::from_bytes([1; 16]),
            &[0, 1, 3],
            0,
        );
        assert!(matches!(
            s3.recover(&[(1, 16384)], 0),
            Err(VdeError::Corrupt(_))
        ));
    }

    /// Goal: records a crashed session wrote after its last durable commit never pass for a
    /// later session's records. Method: session 1 leaves a record of segment 1 beyond what
    /// session 2 overwrites; session 2 reuses segment 1, commits a shorter tail and crashes;
    /// recovery must rebuild session 2's bytes, not session 1's.
    #[test]
    fn a_crashed_sessions_records_are_never_replayed_later() {
        let (dev, s) = store();
        let layout = s.layout;
        // Session 1: a committed tail in segment 1, then the segment fills and is written in
        // place; the commit recording that leaves no open segment.
        s.append(&[1u8; 4096]).expect("append");
        let ch = s.prepare_commit(0).expect("prepare");
        s.committed(&ch, 1 << 20);
        for _ in 0..255 {
            s.append(&[1u8; 4096]).expect("append");
        }
        let ch = s.prepare_commit(0).expect("prepare");
        assert_eq!(ch.sealed, vec![1]);
        assert!(ch.open.is_empty());
        s.committed(&ch, 1 << 20);
        let durable_ckpt = ch.log_checkpoint;
        // ... then 64 KiB in segment 2, logged, and the crash comes before that commit.
        s.append(&vec![0xAA; 65536]).expect("append");
        let lost = s.prepare_commit(0).expect("prepare");
        assert_eq!(lost.open, vec![(2, 65536)]);
        drop(s);
        // Session 2 starts from the durable state (segment 1 sealed, segment 2 free) and the
        // sequence limit that state recorded.
        let b = || -> Arc<dyn Backing> { Arc::new(PlainBacking::new(dev.clone(), 65536)) };
        let s2 = Segments::new(b(), layout, Uuid::from_bytes([1; 16]), &[0, 1, 3], 1 << 20);
        s2.committed(&SegmentChanges::default(), 2 << 20);
        let addr = s2.append(&[0xBB; 4096]).expect("append");
        assert_eq!(addr, layout.addr(2), "segment 2 is reused");
        let ch2 = s2.prepare_commit(durable_ckpt).expect("prepare");
        assert_eq!(ch2.open, vec![(2, 4096)]);
        s2.committed(&ch2, 2 << 20);
        drop(s2);
        // Second crash; recovery from session 2's durable state.
        let s3 = Segments::new(
            b(),
            layout,
            Uuid::from_bytes([1; 16]),
            &[0, 1, 2, 3],
            2 << 20,
        );
        s3.recover(&ch2.open, ch2.log_checkpoint).expect("recover");
        let mut out = vec![0u8; 4096];
        dev.read_at(&mut out, addr).expect("read");
        assert!(
            out.iter().all(|&b| b == 0xBB),
            "segment 2 holds session 1's lost record, not session 2's committed bytes"
        );
    }

    #[test]
    fn freed_segments_wait_for_the_commit() {
        let (_d, s) = store();
        let before = s.free_bytes();
        s.release(0);
        assert_eq!(s.free_bytes(), before, "not reusable yet");
        let ch = s.prepare_commit(0).expect("prepare");
        assert_eq!(s.free_bytes(), before);
        s.committed(&ch, 1 << 20);
        assert_eq!(s.free_bytes(), before + (1 << 20));
    }
}
