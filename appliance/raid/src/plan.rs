//! Auto-configuration: which level to propose for a set of drives, and what each option gives
//! (usable capacity, fault tolerance, waste), computed with the same arithmetic as
//! [`crate::Array::create`] so the wizard shows exactly what creation will produce.
//!
//! Recommendation by drive count: 1 drive JBOD; 2 a mirror; 3 RAID-Z1; 4 to 8 RAID-Z2; more than
//! 8 RAID-Z2 with one hot spare. RAID-5/6/10 are offered as alternatives where they fit.

use crate::Level;
use crate::assemble::{DEFAULT_CHUNK, MIN_ROWS, meta_layout, rows_of};
use crate::layout::Layout;

/// A drive the planner may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Identity (by-id path or name).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
}

/// One way to combine the drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Level.
    pub level: Level,
    /// Drives in the layout, in role order.
    pub members: Vec<String>,
    /// Hot spares.
    pub spares: Vec<String>,
    /// Copies (RAID-1/10).
    pub copies: usize,
    /// Bytes the array will offer.
    pub usable_bytes: u64,
    /// Sum of the drives' sizes.
    pub raw_bytes: u64,
    /// Bytes left unused because members differ in size.
    pub wasted_bytes: u64,
    /// Drives that may fail without data loss (spares not counted).
    pub fault_tolerance: usize,
    /// The recommended option.
    pub recommended: bool,
    /// One line for a person.
    pub summary: String,
}

/// What creating `level` over `sizes` gives: (usable, wasted) bytes, or `None` if it does not fit.
#[must_use]
pub fn capacity(
    level: Level,
    sizes: &[u64],
    copies: usize,
    small_write_percent: u32,
) -> Option<(u64, u64)> {
    let n = sizes.len();
    if n < level.min_members() || n == 0 {
        return None;
    }
    let chunk = u64::from(DEFAULT_CHUNK);
    let smallest = *sizes.iter().min()?;
    let (.., data_offset) = meta_layout(level, chunk, smallest);
    let member_rows: Vec<u64> = sizes
        .iter()
        .map(|&s| rows_of(s, data_offset, chunk))
        .collect();
    let rows = *member_rows.iter().min()?;
    if rows < MIN_ROWS {
        return None;
    }
    let copies = match level {
        Level::Raid1 => n,
        Level::Raid10 => copies.max(2),
        l if l.is_z() => l.parity() + 1,
        _ => 1,
    };
    if copies > n {
        return None;
    }
    let mirror_rows = if level.is_z() {
        let pct = u64::from(if small_write_percent == 0 {
            3
        } else {
            small_write_percent.min(50)
        });
        (rows * pct / 100)
            .max(copies.div_ceil(n) as u64)
            .max(1)
            .min(rows - 2)
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
        jbod_rows: member_rows.clone(),
    };
    let used_per_member = |i: usize| {
        if level == Level::Jbod {
            member_rows[i]
        } else {
            rows
        }
    };
    let wasted = (0..n)
        .map(|i| (member_rows[i] - used_per_member(i)) * chunk)
        .sum();
    Some((layout.size(), wasted))
}

fn proposal(
    level: Level,
    drives: &[Drive],
    spares: &[Drive],
    copies: usize,
    recommended: bool,
) -> Option<Proposal> {
    let sizes: Vec<u64> = drives.iter().map(|d| d.size).collect();
    let (usable, wasted) = capacity(level, &sizes, copies, 0)?;
    let n = drives.len();
    let copies = match level {
        Level::Raid1 => n,
        Level::Raid10 => copies.max(2),
        _ => 0,
    };
    let tolerance = level.tolerance(n, copies);
    let raw: u64 = drives.iter().chain(spares).map(|d| d.size).sum();
    let spare_note = if spares.is_empty() {
        String::new()
    } else {
        format!(" plus {} hot spare", spares.len())
    };
    let tol = match tolerance {
        0 => "no drive may fail".to_owned(),
        1 => "survives 1 drive failure".to_owned(),
        t => format!("survives {t} drive failures"),
    };
    Some(Proposal {
        level,
        members: drives.iter().map(|d| d.id.clone()).collect(),
        spares: spares.iter().map(|d| d.id.clone()).collect(),
        copies,
        usable_bytes: usable,
        raw_bytes: raw,
        wasted_bytes: wasted,
        fault_tolerance: tolerance,
        recommended,
        summary: format!(
            "{level} over {n} drives{spare_note}: {} usable, {tol}",
            human(usable)
        ),
    })
}

/// Human-readable bytes (binary units).
#[must_use]
pub fn human(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024 * 10 && u < UNITS.len() - 1 {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

/// Proposes ways to combine `drives`, the recommended one first (empty for no drives). When a
/// hot spare is kept it is the largest drive, so that it can replace any member.
#[must_use]
pub fn plan(drives: &[Drive]) -> Vec<Proposal> {
    let mut d: Vec<Drive> = drives.to_vec();
    // Largest first: a hot spare must be able to replace any member, so it is the largest drive.
    d.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
    let n = d.len();
    let mut out: Vec<Proposal> = Vec::new();
    let mut add = |p: Option<Proposal>| {
        if let Some(p) = p {
            out.push(p);
        }
    };
    match n {
        0 => {}
        1 => add(proposal(Level::Jbod, &d, &[], 0, true)),
        2 => {
            add(proposal(Level::Raid1, &d, &[], 0, true));
            add(proposal(Level::Raid0, &d, &[], 0, false));
            add(proposal(Level::Jbod, &d, &[], 0, false));
        }
        3 => {
            add(proposal(Level::RaidZ1, &d, &[], 0, true));
            add(proposal(Level::Raid5, &d, &[], 0, false));
            add(proposal(Level::Raid1, &d, &[], 0, false));
        }
        4..=8 => {
            add(proposal(Level::RaidZ2, &d, &[], 0, true));
            add(proposal(Level::Raid6, &d, &[], 0, false));
            if n.is_multiple_of(2) {
                add(proposal(Level::Raid10, &d, &[], 2, false));
            }
            add(proposal(Level::RaidZ1, &d, &[], 0, false));
            if n >= 5 {
                add(proposal(Level::RaidZ3, &d, &[], 0, false));
            }
        }
        _ => {
            let (spare, members) = d.split_at(1);
            add(proposal(Level::RaidZ2, members, spare, 0, true));
            add(proposal(Level::RaidZ3, members, spare, 0, false));
            add(proposal(Level::RaidZ2, &d, &[], 0, false));
            add(proposal(Level::Raid6, members, spare, 0, false));
            if members.len() % 2 == 0 {
                add(proposal(Level::Raid10, members, spare, 2, false));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drives(sizes: &[u64]) -> Vec<Drive> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| Drive {
                id: format!("d{i}"),
                size: s,
            })
            .collect()
    }

    const G: u64 = 1 << 30;

    #[test]
    fn recommendations_by_count() {
        let rec = |n: usize| {
            let p = plan(&drives(&vec![100 * G; n]));
            let r = p
                .iter()
                .find(|p| p.recommended)
                .cloned()
                .expect("a recommendation");
            assert!(p[0].recommended, "recommended first");
            (r.level, r.spares.len(), r.fault_tolerance)
        };
        assert_eq!(rec(1), (Level::Jbod, 0, 0));
        assert_eq!(rec(2), (Level::Raid1, 0, 1));
        assert_eq!(rec(3), (Level::RaidZ1, 0, 1));
        assert_eq!(rec(4), (Level::RaidZ2, 0, 2));
        assert_eq!(rec(8), (Level::RaidZ2, 0, 2));
        assert_eq!(rec(9), (Level::RaidZ2, 1, 2));
        assert_eq!(rec(12), (Level::RaidZ2, 1, 2));
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn capacity_is_sane_and_reports_waste() {
        let p = plan(&drives(&[100 * G, 100 * G, 120 * G, 100 * G]));
        let z2 = &p[0];
        assert_eq!(z2.level, Level::RaidZ2);
        // Two of four drives' worth of data, minus metadata and the small-write region.
        assert!(
            z2.usable_bytes > 190 * G && z2.usable_bytes < 200 * G,
            "{}",
            z2.usable_bytes
        );
        assert!(z2.wasted_bytes >= 20 * G - G && z2.wasted_bytes <= 20 * G + G);
        let jbod = capacity(Level::Jbod, &[10 * G, 20 * G], 0, 0)
            .expect("fits")
            .0;
        assert!(jbod > 29 * G, "JBOD uses mixed sizes in full");
        assert_eq!(
            capacity(Level::Raid6, &[G; 3], 0, 0),
            None,
            "too few members"
        );
        assert_eq!(
            capacity(Level::Raid1, &[1 << 20, 1 << 20], 0, 0),
            None,
            "too small"
        );
    }
}
