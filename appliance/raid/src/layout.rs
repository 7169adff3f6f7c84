//! Where each logical byte of an array lives: pure address arithmetic, no I/O.
//!
//! Every member has a data region of `rows` chunk rows (`chunk` bytes each); a member offset
//! here is relative to the start of that region.
//!
//! - JBOD: members back to back.
//! - RAID-0: chunk `c` on role `c % n`, row `c / n`.
//! - Mirrors (RAID-1, RAID-10, and the small-write region of RAID-Z) use the "near" layout with
//!   `k` copies: chunk `c` occupies the slots `c*k .. c*k+k`, and slot `t` is role `t % n`,
//!   row `t / n`. RAID-1 is the case `k = n`. Any `k - 1` failures are survivable.
//! - Parity levels: stripe `s` is one row on every role; its parity shard `j` is on role
//!   `(b + j) % n` and its data shard `d` on role `(b + p + d) % n`, with `b = n - 1 - s % n`
//!   (the md "left-symmetric" rotation). RAID-Z reserves the first `mirror_rows` rows for the
//!   mirrored small-write region; its stripes follow.

use crate::Level;

/// One contiguous piece of a logical range on one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Layout position (role) of the member.
    pub role: usize,
    /// Offset inside the member's data region.
    pub member_off: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset of this piece inside the caller's buffer.
    pub buf_off: u64,
}

/// Which region of the logical address space an offset falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Linear (JBOD, RAID-0).
    Linear,
    /// Mirrored chunks (RAID-1, RAID-10, RAID-Z small-write region).
    Mirror,
    /// Parity stripes.
    Stripes,
}

/// The geometry of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Level.
    pub level: Level,
    /// Number of roles (members in the layout, spares excluded).
    pub n: usize,
    /// Chunk size in bytes.
    pub chunk: u64,
    /// Chunk rows in each member's data region (JBOD: the largest member's rows).
    pub rows: u64,
    /// Copies for mirrored data (RAID-1: n, RAID-10: configured, RAID-Z: p + 1).
    pub copies: usize,
    /// RAID-Z: rows at the start of every member used by the mirrored small-write region.
    pub mirror_rows: u64,
    /// JBOD: rows of each role, in order.
    pub jbod_rows: Vec<u64>,
}

impl Layout {
    /// Parity shards per stripe.
    #[must_use]
    pub fn p(&self) -> usize {
        self.level.parity()
    }

    /// Data shards per stripe (parity levels).
    #[must_use]
    pub fn k(&self) -> usize {
        self.n - self.p()
    }

    /// Bytes of data in one full stripe (parity levels).
    #[must_use]
    pub fn stripe_bytes(&self) -> u64 {
        self.k() as u64 * self.chunk
    }

    /// Logical bytes of the mirrored region.
    #[must_use]
    pub fn mirror_bytes(&self) -> u64 {
        match self.level {
            Level::Raid1 | Level::Raid10 => self.near_chunks(self.rows) * self.chunk,
            l if l.is_z() => self.near_chunks(self.mirror_rows) * self.chunk,
            _ => 0,
        }
    }

    /// Number of parity stripes.
    #[must_use]
    pub fn stripes(&self) -> u64 {
        if self.p() == 0 {
            0
        } else {
            self.rows - self.mirror_rows
        }
    }

    /// Logical size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self.level {
            Level::Jbod => self.jbod_rows.iter().sum::<u64>() * self.chunk,
            Level::Raid0 => self.n as u64 * self.rows * self.chunk,
            Level::Raid1 | Level::Raid10 => self.mirror_bytes(),
            _ => self.mirror_bytes() + self.stripes() * self.stripe_bytes(),
        }
    }

    /// Region of a logical offset.
    #[must_use]
    pub fn region(&self, off: u64) -> Region {
        match self.level {
            Level::Jbod | Level::Raid0 => Region::Linear,
            Level::Raid1 | Level::Raid10 => Region::Mirror,
            _ if off < self.mirror_bytes() => Region::Mirror,
            _ => Region::Stripes,
        }
    }

    fn near_chunks(&self, rows: u64) -> u64 {
        (self.n as u64 * rows) / self.copies as u64
    }

    /// Linear levels: the pieces of `[off, off + len)`.
    #[must_use]
    pub fn linear_pieces(&self, off: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let (role, member_off, room) = match self.level {
                Level::Jbod => {
                    let mut start = 0u64;
                    let mut found = (0, 0, 0);
                    for (role, rows) in self.jbod_rows.iter().enumerate() {
                        let bytes = rows * self.chunk;
                        if pos < start + bytes {
                            found = (role, pos - start, start + bytes - pos);
                            break;
                        }
                        start += bytes;
                    }
                    found
                }
                _ => {
                    let c = pos / self.chunk;
                    let within = pos % self.chunk;
                    let role = usize::try_from(c % self.n as u64).unwrap_or(0);
                    (
                        (role),
                        (c / self.n as u64) * self.chunk + within,
                        self.chunk - within,
                    )
                }
            };
            assert!(room > 0, "offset {pos} beyond the layout");
            let n = room.min(end - pos);
            out.push(Piece {
                role,
                member_off,
                len: n,
                buf_off: pos - off,
            });
            pos += n;
        }
        out
    }

    /// Mirrored region: the copies of the chunk containing `off`, as (role, member offset of
    /// the chunk start), plus the offset within the chunk.
    #[must_use]
    pub fn mirror_copies(&self, off: u64) -> (Vec<(usize, u64)>, u64) {
        let c = off / self.chunk;
        let within = off % self.chunk;
        let copies = (0..self.copies as u64)
            .map(|j| {
                let slot = c * self.copies as u64 + j;
                let role = usize::try_from(slot % self.n as u64).unwrap_or(0);
                (role, (slot / self.n as u64) * self.chunk)
            })
            .collect();
        (copies, within)
    }

    /// Mirrored region: the logical chunk stored at (`role`, `row`), if any (for rebuild).
    #[must_use]
    pub fn mirror_chunk_at(&self, role: usize, row: u64) -> Option<u64> {
        let slot = row * self.n as u64 + role as u64;
        let c = slot / self.copies as u64;
        let rows = if self.level.is_z() {
            self.mirror_rows
        } else {
            self.rows
        };
        (row < rows && c < self.near_chunks(rows)).then_some(c)
    }

    /// Parity levels: the stripe containing logical offset `off` (in the stripe region) and
    /// the offset within the stripe's data.
    #[must_use]
    pub fn stripe_of(&self, off: u64) -> (u64, u64) {
        let rel = off - self.mirror_bytes();
        (rel / self.stripe_bytes(), rel % self.stripe_bytes())
    }

    /// Logical offset of the first data byte of stripe `s`.
    #[must_use]
    pub fn stripe_start(&self, s: u64) -> u64 {
        self.mirror_bytes() + s * self.stripe_bytes()
    }

    /// Member row of stripe `s`.
    #[must_use]
    pub fn stripe_row(&self, s: u64) -> u64 {
        self.mirror_rows + s
    }

    /// The stripe stored in member row `row`, if the row is in the stripe region.
    #[must_use]
    pub fn stripe_at_row(&self, row: u64) -> Option<u64> {
        (self.p() > 0 && row >= self.mirror_rows && row < self.rows).then(|| row - self.mirror_rows)
    }

    fn base(&self, s: u64) -> usize {
        let n = self.n as u64;
        usize::try_from(n - 1 - s % n).unwrap_or(0)
    }

    /// Role holding data shard `d` of stripe `s`.
    #[must_use]
    pub fn data_role(&self, s: u64, d: usize) -> usize {
        (self.base(s) + self.p() + d) % self.n
    }

    /// Role holding parity shard `j` of stripe `s`.
    #[must_use]
    pub fn parity_role(&self, s: u64, j: usize) -> usize {
        (self.base(s) + j) % self.n
    }

    /// Shard index (data first, then parity) that `role` holds in stripe `s`.
    #[must_use]
    pub fn shard_of_role(&self, s: u64, role: usize) -> usize {
        let rel = (role + self.n - self.base(s)) % self.n;
        if rel < self.p() {
            self.k() + rel
        } else {
            rel - self.p()
        }
    }

    /// Role holding shard `i` (data first, then parity) of stripe `s`.
    #[must_use]
    pub fn role_of_shard(&self, s: u64, i: usize) -> usize {
        if i < self.k() {
            self.data_role(s, i)
        } else {
            self.parity_role(s, i - self.k())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn layout(level: Level, n: usize, rows: u64, copies: usize, mirror_rows: u64) -> Layout {
        Layout {
            level,
            n,
            chunk: 4096,
            rows,
            copies,
            mirror_rows,
            jbod_rows: vec![rows; n],
        }
    }

    #[test]
    fn every_member_slot_used_at_most_once() {
        // RAID-0 and near mirrors: no two logical bytes share a member byte.
        for (level, n, copies) in [
            (Level::Raid0, 3, 1),
            (Level::Raid1, 3, 3),
            (Level::Raid10, 4, 2),
            (Level::Raid10, 5, 2),
            (Level::Raid10, 6, 3),
        ] {
            let l = layout(level, n, 10, copies, 0);
            let mut used = HashSet::new();
            for c in 0..l.size() / l.chunk {
                let slots: Vec<(usize, u64)> = if level == Level::Raid0 {
                    l.linear_pieces(c * l.chunk, l.chunk)
                        .iter()
                        .map(|p| (p.role, p.member_off))
                        .collect()
                } else {
                    let (copies, within) = l.mirror_copies(c * l.chunk);
                    assert_eq!(within, 0);
                    let roles: HashSet<usize> = copies.iter().map(|c| c.0).collect();
                    assert_eq!(roles.len(), copies.len(), "copies on distinct roles");
                    for &(role, off) in &copies {
                        assert_eq!(l.mirror_chunk_at(role, off / l.chunk), Some(c));
                    }
                    copies
                };
                for s in slots {
                    assert!(s.1 < l.rows * l.chunk);
                    assert!(used.insert(s), "{level:?} slot reused");
                }
            }
        }
    }

    #[test]
    fn parity_rotation_is_a_permutation() {
        for (level, n) in [(Level::Raid5, 3), (Level::Raid6, 6), (Level::RaidZ3, 7)] {
            let l = layout(
                level,
                n,
                20,
                level.parity() + 1,
                if level.is_z() { 4 } else { 0 },
            );
            for s in 0..l.stripes() {
                let roles: HashSet<usize> = (0..n).map(|i| l.role_of_shard(s, i)).collect();
                assert_eq!(roles.len(), n);
                for i in 0..n {
                    assert_eq!(l.shard_of_role(s, l.role_of_shard(s, i)), i);
                }
            }
            // Parity moves every stripe.
            assert_ne!(l.parity_role(0, 0), l.parity_role(1, 0));
        }
    }

    #[test]
    fn sizes() {
        let l = layout(Level::RaidZ2, 6, 100, 3, 10);
        assert_eq!(l.mirror_bytes(), (6 * 10 / 3) * 4096);
        assert_eq!(l.size(), l.mirror_bytes() + 90 * 4 * 4096);
        assert_eq!(l.stripe_of(l.mirror_bytes() + 4 * 4096 + 5), (1, 5));
        assert_eq!(layout(Level::Raid6, 6, 100, 0, 0).size(), 100 * 4 * 4096);
        let mut j = layout(Level::Jbod, 3, 5, 1, 0);
        j.jbod_rows = vec![2, 3, 4];
        assert_eq!(j.size(), 9 * 4096);
        let p = j.linear_pieces(4096, 3 * 4096);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].role, p[0].member_off, p[0].len), (0, 4096, 4096));
        assert_eq!((p[1].role, p[1].member_off, p[1].len), (1, 0, 8192));
    }
}
