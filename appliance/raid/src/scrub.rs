//! Scrub (verify every stripe and mirror, repair what redundancy can prove wrong), and the
//! self-heal interface the VDE uses when a checksum fails: the other reconstructions of a range,
//! and a repair that rewrites a range consistently once the right data is known.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dw_blockdev::{AlignedBuf, IoBuf, IoReq, run_batch};

use crate::array::{Inner, LoadError, SECTOR, Want};
use crate::errors::ArrayIoError;
use crate::layout::Region;
use crate::parity::{self, Verdict};
use crate::superblock::FailReason;

/// Scrub settings.
#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// Repair what can be proven wrong (otherwise only report).
    pub repair: bool,
    /// Set to stop early.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Member bytes processed so far (for progress displays).
    pub progress: Option<Arc<AtomicU64>>,
}

/// One thing a scrub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Logical offset of the stripe or chunk.
    pub offset: u64,
    /// The role found wrong, when known.
    pub role: Option<usize>,
    /// What was found (and done).
    pub detail: String,
}

/// What a scrub did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Stripes or mirrored chunks checked.
    pub units_checked: u64,
    /// Member bytes read.
    pub bytes_read: u64,
    /// Units whose redundancy did not match.
    pub mismatches: u64,
    /// Repairs made (at most [`MAX_FINDINGS`] listed).
    pub repaired: Vec<Finding>,
    /// Mismatches that could not be attributed to one member and were left alone.
    pub unrepaired: Vec<Finding>,
    /// Media read errors found (and rewritten from redundancy).
    pub read_errors: u64,
    /// Units not verifiable because the array is degraded there.
    pub skipped_degraded: u64,
    /// Stopped before the end.
    pub cancelled: bool,
}

/// Findings kept per list (counts keep going).
pub const MAX_FINDINGS: usize = 1000;

fn push(list: &mut Vec<Finding>, f: Finding) {
    if list.len() < MAX_FINDINGS {
        list.push(f);
    }
}

/// Another way to read a range, for self-heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The data this reconstruction gives.
    pub data: Vec<u8>,
    /// Roles not used (presumed wrong) to produce it.
    pub excluded: Vec<usize>,
}

/// At most this many alternatives are offered for one range.
pub const MAX_ALTERNATIVES: usize = 64;

fn ulen(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Inner {
    pub(crate) fn scrub(&self, opts: &ScrubOptions) -> ScrubReport {
        let mut rep = ScrubReport::default();
        let l = self.layout();
        let cancelled = || {
            opts.cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
        };
        let step = |bytes: u64| {
            if let Some(p) = &opts.progress {
                p.fetch_add(bytes, Ordering::Relaxed);
            }
        };
        if l.p() == 0 && !matches!(l.region(0), Region::Mirror) {
            // No redundancy: read everything, report what does not read.
            let chunk = l.chunk;
            let mut buf = AlignedBuf::zeroed(ulen(chunk));
            let mut off = 0;
            while off < l.size() {
                if cancelled() {
                    rep.cancelled = true;
                    return rep;
                }
                let n = chunk.min(l.size() - off);
                if let Err(e) = self.read(off, &mut buf[..ulen(n)]) {
                    rep.read_errors += 1;
                    push(
                        &mut rep.unrepaired,
                        Finding {
                            offset: off,
                            role: None,
                            detail: format!("unreadable and no redundancy to repair it: {e}"),
                        },
                    );
                }
                rep.units_checked += 1;
                rep.bytes_read += n;
                step(n);
                off += n;
            }
            return rep;
        }
        // Mirrored chunks (RAID-1/10, or the RAID-Z small-write region).
        let mirror_chunks = l.mirror_bytes() / l.chunk;
        for c in 0..mirror_chunks {
            if cancelled() {
                rep.cancelled = true;
                return rep;
            }
            let _g = self.lock_key(c);
            self.scrub_mirror_chunk(c, opts.repair, &mut rep);
            step(l.chunk * l.copies as u64);
        }
        for s in 0..l.stripes() {
            if cancelled() {
                rep.cancelled = true;
                return rep;
            }
            let _g = self.lock_key(s);
            self.scrub_stripe(s, opts.repair, &mut rep);
            step(l.chunk * l.n as u64);
        }
        rep
    }

    fn scrub_mirror_chunk(&self, c: u64, repair: bool, rep: &mut ScrubReport) {
        let l = self.layout();
        let snap = self.snapshot();
        let (copies, _) = l.mirror_copies(c * l.chunk);
        let len = ulen(l.chunk);
        let mut contents: Vec<(usize, u64, Option<AlignedBuf>)> = Vec::new();
        let mut missing = 0;
        for &(role, base) in &copies {
            let Some(m) = snap.readable(role, base / l.chunk) else {
                missing += 1;
                continue;
            };
            let mut b = AlignedBuf::zeroed(len);
            match m.dev.read_at(&mut b, self.moff(base / l.chunk, 0)) {
                Ok(()) => contents.push((role, base, Some(b))),
                Err(e) if e.is_device_failure() => {
                    self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                    missing += 1;
                }
                Err(_) => {
                    rep.read_errors += 1;
                    contents.push((role, base, None));
                }
            }
            rep.bytes_read += l.chunk;
        }
        rep.units_checked += 1;
        // Group identical copies.
        let mut groups: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for (i, (_, _, b)) in contents.iter().enumerate() {
            if let Some(b) = b {
                groups.entry(&b[..]).or_default().push(i);
            }
        }
        let readable = contents.iter().filter(|c| c.2.is_some()).count();
        if groups.len() <= 1 && readable == contents.len() {
            if missing > 0 && contents.len() < 2 {
                rep.skipped_degraded += 1;
            }
            return;
        }
        let best = groups
            .iter()
            .max_by_key(|(_, v)| v.len())
            .map(|(k, v)| (k.to_vec(), v.clone()));
        let Some((good, holders)) = best else { return };
        let unreadable_only = groups.len() == 1;
        if !unreadable_only {
            rep.mismatches += 1;
        }
        let total = copies.len() - missing;
        // With differing copies, the largest group of identical copies decides when it has at
        // least two members and no other group is as large: independent corruptions do not
        // produce identical bytes. Two copies that disagree cannot be decided.
        let largest_unique = groups.values().filter(|v| v.len() == holders.len()).count() == 1;
        let decided = unreadable_only || (holders.len() >= 2 && largest_unique);
        let _ = total;
        if !decided {
            push(
                &mut rep.unrepaired,
                Finding {
                    offset: c * l.chunk,
                    role: None,
                    detail: format!(
                        "mirror copies differ ({} versions among {total} copies); cannot tell which is right",
                        groups.len()
                    ),
                },
            );
            return;
        }
        for (i, (role, base, b)) in contents.iter().enumerate() {
            if holders.contains(&i) {
                continue;
            }
            let what = if b.is_none() {
                "unreadable"
            } else {
                "differs from the majority"
            };
            if repair {
                for m in snap.writers(*role) {
                    if let Err(e) = m.dev.write_at(&good, self.moff(base / l.chunk, 0)) {
                        self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                    }
                }
                push(
                    &mut rep.repaired,
                    Finding {
                        offset: c * l.chunk,
                        role: Some(*role),
                        detail: format!("copy on role {role} {what}; rewritten"),
                    },
                );
            } else {
                push(
                    &mut rep.unrepaired,
                    Finding {
                        offset: c * l.chunk,
                        role: Some(*role),
                        detail: format!("copy on role {role} {what} (report only)"),
                    },
                );
            }
        }
    }

    fn scrub_stripe(&self, s: u64, repair: bool, rep: &mut ScrubReport) {
        let l = self.layout();
        let (k, p, n) = (l.k(), l.p(), l.n);
        let row = l.stripe_row(s);
        let off = l.stripe_start(s);
        let snap = self.snapshot();
        rep.units_checked += 1;
        if (0..n).any(|r| snap.readable(r, row).is_none()) {
            rep.skipped_degraded += 1;
            return;
        }
        let mut shards: Vec<AlignedBuf> =
            (0..n).map(|_| AlignedBuf::zeroed(ulen(l.chunk))).collect();
        let mut unreadable = Vec::new();
        {
            let mut reqs = Vec::new();
            let mut who = Vec::new();
            for (i, b) in shards.iter_mut().enumerate() {
                let role = l.role_of_shard(s, i);
                if let Some(m) = snap.readable(role, row) {
                    reqs.push(IoReq {
                        dev: m.dev.as_ref(),
                        offset: self.moff(row, 0),
                        buf: IoBuf::Read(&mut b[..]),
                    });
                    who.push((i, m));
                }
            }
            let results = run_batch(&mut reqs);
            drop(reqs);
            for (j, r) in results.into_iter().enumerate() {
                if let Err(e) = r {
                    let (i, m) = who[j];
                    if e.is_device_failure() {
                        self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                    }
                    unreadable.push(i);
                }
            }
        }
        rep.bytes_read += l.chunk * n as u64;
        if !unreadable.is_empty() {
            rep.read_errors += unreadable.len() as u64;
            if unreadable.len() > p {
                push(
                    &mut rep.unrepaired,
                    Finding {
                        offset: off,
                        role: None,
                        detail: format!(
                            "{} shards unreadable; more than the {p} parity can cover",
                            unreadable.len()
                        ),
                    },
                );
                return;
            }
            let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|b| &mut b[..]).collect();
            if parity::reconstruct(&mut refs, k, p, &unreadable).is_err() {
                return;
            }
            for &i in &unreadable {
                let role = l.role_of_shard(s, i);
                for m in snap.writers(role) {
                    if let Err(e) = m.dev.write_at(&shards[i], self.moff(row, 0)) {
                        self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                    }
                }
                push(
                    &mut rep.repaired,
                    Finding {
                        offset: off,
                        role: Some(role),
                        detail: format!("read error on role {role}; rewritten from redundancy"),
                    },
                );
            }
            // Reconstructed shards are consistent by construction; nothing more to verify
            // with the redundancy spent.
            return;
        }
        let refs: Vec<&[u8]> = shards.iter().map(|b| &b[..]).collect();
        match parity::verify(&refs, k, p) {
            Verdict::Consistent => {}
            Verdict::Located(i) => {
                rep.mismatches += 1;
                let role = l.role_of_shard(s, i);
                let kind = if i < k { "data" } else { "parity" };
                if repair {
                    let mut fixed: Vec<AlignedBuf> = shards.clone();
                    let mut refs: Vec<&mut [u8]> = fixed.iter_mut().map(|b| &mut b[..]).collect();
                    if parity::reconstruct(&mut refs, k, p, &[i]).is_ok() {
                        for m in snap.writers(role) {
                            if let Err(e) = m.dev.write_at(&fixed[i], self.moff(row, 0)) {
                                self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                            }
                        }
                        push(
                            &mut rep.repaired,
                            Finding {
                                offset: off,
                                role: Some(role),
                                detail: format!(
                                    "silent corruption in the {kind} shard on role {role}, located by the syndromes; rewritten"
                                ),
                            },
                        );
                    }
                } else {
                    push(
                        &mut rep.unrepaired,
                        Finding {
                            offset: off,
                            role: Some(role),
                            detail: format!(
                                "silent corruption in the {kind} shard on role {role} (report only)"
                            ),
                        },
                    );
                }
            }
            Verdict::Ambiguous => {
                rep.mismatches += 1;
                let why = if p == 1 {
                    "single parity detects but cannot locate the wrong shard; the VDE's checksums decide"
                } else {
                    "more than one shard is wrong; cannot tell which"
                };
                push(
                    &mut rep.unrepaired,
                    Finding {
                        offset: off,
                        role: None,
                        detail: format!("parity mismatch: {why}"),
                    },
                );
            }
        }
    }

    /// Other ways to read `[off, off + len)`: one per mirror copy, or one per set of roles
    /// presumed wrong (each touched data role alone, and pairs with double parity).
    pub(crate) fn read_alternatives(
        &self,
        off: u64,
        len: u64,
    ) -> Result<Vec<Alternative>, ArrayIoError> {
        let l = self.layout();
        if !off.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(ArrayIoError::Misaligned { off, len });
        }
        if off.checked_add(len).is_none_or(|e| e > l.size()) {
            return Err(ArrayIoError::OutOfRange {
                off,
                len,
                size: l.size(),
            });
        }
        match l.region(off) {
            Region::Linear => Ok(Vec::new()),
            Region::Mirror => {
                let snap = self.snapshot();
                let mut out = Vec::new();
                for j in 0..l.copies {
                    let mut data = vec![0u8; ulen(len)];
                    let mut ok = true;
                    let mut excluded = Vec::new();
                    let mut pos = 0;
                    while pos < len && ok {
                        let (copies, within) = l.mirror_copies(off + pos);
                        let n = (l.chunk - within).min(len - pos);
                        let (role, base) = copies[j];
                        excluded.extend(copies.iter().filter(|c| c.0 != role).map(|c| c.0));
                        ok = snap.readable(role, base / l.chunk).is_some_and(|m| {
                            m.dev
                                .read_at(
                                    &mut data[ulen(pos)..ulen(pos + n)],
                                    self.moff(base / l.chunk, within),
                                )
                                .is_ok()
                        });
                        pos += n;
                    }
                    if ok {
                        excluded.sort_unstable();
                        excluded.dedup();
                        out.push(Alternative { data, excluded });
                    }
                }
                Ok(out)
            }
            Region::Stripes => {
                let (s0, _) = l.stripe_of(off);
                let (s1, _) = l.stripe_of(off + len - 1);
                let mut roles: Vec<usize> = Vec::new();
                for s in s0..=s1 {
                    for d in 0..l.k() {
                        let r = l.data_role(s, d);
                        if !roles.contains(&r) {
                            roles.push(r);
                        }
                    }
                }
                roles.sort_unstable();
                let mut sets: Vec<Vec<usize>> = roles.iter().map(|&r| vec![r]).collect();
                if l.p() >= 2 {
                    for (i, &a) in roles.iter().enumerate() {
                        for &b in &roles[i + 1..] {
                            sets.push(vec![a, b]);
                        }
                    }
                }
                sets.truncate(MAX_ALTERNATIVES);
                let mut out = Vec::new();
                for set in sets {
                    if let Some(data) = self.read_excluding(off, len, &set)? {
                        out.push(Alternative {
                            data,
                            excluded: set,
                        });
                    }
                }
                Ok(out)
            }
        }
    }

    /// Reads a stripe-region range reconstructing the shards of `exclude` from the others;
    /// `None` when that leaves too little redundancy.
    fn read_excluding(
        &self,
        off: u64,
        len: u64,
        exclude: &[usize],
    ) -> Result<Option<Vec<u8>>, ArrayIoError> {
        let l = self.layout();
        let mut out = vec![0u8; ulen(len)];
        let mut pos = 0;
        while pos < len {
            let (s, within) = l.stripe_of(off + pos);
            let n = (l.stripe_bytes() - within).min(len - pos);
            let a = within % l.chunk;
            let (first, last) = (within / l.chunk, (within + n - 1) / l.chunk);
            let (ra, rb) = if first == last {
                (a, a + n)
            } else {
                (0, l.chunk)
            };
            let _g = self.lock_key(s);
            let snap = self.snapshot();
            let shards = match self.load_row(&snap, s, ra, rb - ra, exclude, Want::Data) {
                Ok((sh, _)) => sh,
                Err(LoadError::Fatal(_) | LoadError::ReadErrors(_)) => return Ok(None),
                Err(LoadError::Retry) => return Ok(None),
            };
            let mut p = within;
            while p < within + n {
                let d = ulen(p / l.chunk);
                let ca = p % l.chunk;
                let m = (l.chunk - ca).min(within + n - p);
                let dst = ulen(pos + (p - within));
                out[dst..dst + ulen(m)]
                    .copy_from_slice(&shards[d][ulen(ca - ra)..ulen(ca - ra + m)]);
                p += m;
            }
            pos += n;
        }
        Ok(Some(out))
    }

    /// Rewrites `[off, off + good.len())` so that every copy and parity agrees with `good`,
    /// writing only what differs.
    pub(crate) fn repair_range(&self, off: u64, good: &[u8]) -> Result<(), ArrayIoError> {
        let l = self.layout();
        if l.region(off) != Region::Stripes {
            return self.write(off, good);
        }
        let (k, p) = (l.k(), l.p());
        let len = good.len() as u64;
        let mut pos = 0;
        while pos < len {
            let (s, within) = l.stripe_of(off + pos);
            let n = (l.stripe_bytes() - within).min(len - pos);
            let (first, last) = (within / l.chunk, (within + n - 1) / l.chunk);
            let a = within % l.chunk;
            let (ra, rb) = if first == last {
                (a, a + n)
            } else {
                (0, l.chunk)
            };
            let row = l.stripe_row(s);
            let _g = self.lock_key(s);
            let mut exclude: Vec<usize> = Vec::new();
            let mut loaded = None;
            // Bounded: each retry follows a member failure or excludes another role.
            for _ in 0..l.n + 4 {
                let snap = self.snapshot();
                match self.load_row(&snap, s, ra, rb - ra, &exclude, Want::All) {
                    Ok((x, _)) => {
                        loaded = Some((x, snap));
                        break;
                    }
                    Err(LoadError::Fatal(e)) => return Err(e),
                    Err(LoadError::Retry) => {}
                    Err(LoadError::ReadErrors(roles)) => {
                        for r in roles {
                            if !exclude.contains(&r) {
                                exclude.push(r);
                            }
                        }
                    }
                }
            }
            let Some((old, snap)) = loaded else {
                return Err(ArrayIoError::Offline {
                    name: self.geom.name.clone(),
                    reason: "members kept failing during repair".into(),
                });
            };
            let mut new = old.clone();
            let mut q = within;
            while q < within + n {
                let d = ulen(q / l.chunk);
                let ca = q % l.chunk;
                let m = (l.chunk - ca).min(within + n - q);
                let src = ulen(pos + (q - within));
                new[d][ulen(ca - ra)..ulen(ca - ra + m)].copy_from_slice(&good[src..src + ulen(m)]);
                q += m;
            }
            {
                let (data, par) = new.split_at_mut(k);
                let cols: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
                let mut outs: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
                parity::encode(&cols, &mut outs);
            }
            for i in 0..k + p {
                // Rewrite what differs, and sectors that returned read errors.
                if new[i][..] != old[i][..] || exclude.contains(&l.role_of_shard(s, i)) {
                    for m in snap.writers(l.role_of_shard(s, i)) {
                        if let Err(e) = m.dev.write_at(&new[i], self.moff(row, ra)) {
                            self.fail_device(m.uuid, FailReason::IoError, &e.to_string());
                        }
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }
}
