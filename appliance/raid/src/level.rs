//! RAID levels and what each one promises.

use std::fmt;
use std::str::FromStr;

/// How members are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Concatenation: members one after another; no redundancy; mixed sizes used in full.
    Jbod,
    /// Striping; no redundancy.
    Raid0,
    /// N-way mirror: every member holds everything.
    Raid1,
    /// Striped mirrors ("near" layout with `copies` copies of every chunk).
    Raid10,
    /// Striping with one rotating parity; any aligned write (read-modify-write, journaled).
    Raid5,
    /// Striping with two rotating parities (P+Q); any aligned write (journaled).
    Raid6,
    /// Distributed single parity, full-stripe writes only (plus a mirrored small-write region).
    RaidZ1,
    /// Distributed double parity, full-stripe writes only.
    RaidZ2,
    /// Distributed triple parity, full-stripe writes only.
    RaidZ3,
}

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 9] = [
        Level::Jbod,
        Level::Raid0,
        Level::Raid1,
        Level::Raid10,
        Level::Raid5,
        Level::Raid6,
        Level::RaidZ1,
        Level::RaidZ2,
        Level::RaidZ3,
    ];

    /// The on-disk code (superblock byte 72).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Level::Jbod => 0,
            Level::Raid0 => 1,
            Level::Raid1 => 2,
            Level::Raid10 => 3,
            Level::Raid5 => 4,
            Level::Raid6 => 5,
            Level::RaidZ1 => 6,
            Level::RaidZ2 => 7,
            Level::RaidZ3 => 8,
        }
    }

    /// The level for an on-disk code.
    #[must_use]
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.code() == c)
    }

    /// Parity shards per stripe (0 for non-parity levels).
    #[must_use]
    pub fn parity(self) -> usize {
        match self {
            Level::Raid5 | Level::RaidZ1 => 1,
            Level::Raid6 | Level::RaidZ2 => 2,
            Level::RaidZ3 => 3,
            Level::Jbod | Level::Raid0 | Level::Raid1 | Level::Raid10 => 0,
        }
    }

    /// True for the RAID-Z levels (full-stripe writes only in the stripe region).
    #[must_use]
    pub fn is_z(self) -> bool {
        matches!(self, Level::RaidZ1 | Level::RaidZ2 | Level::RaidZ3)
    }

    /// The fewest members the level accepts.
    #[must_use]
    pub fn min_members(self) -> usize {
        match self {
            Level::Jbod => 1,
            Level::Raid0 | Level::Raid1 => 2,
            Level::Raid10 => 4,
            Level::Raid5 | Level::RaidZ1 => 3,
            Level::Raid6 | Level::RaidZ2 => 4,
            Level::RaidZ3 => 5,
        }
    }

    /// How many members may fail with every byte still readable, for `n` members and (RAID-10)
    /// `copies` copies.
    #[must_use]
    pub fn tolerance(self, n: usize, copies: usize) -> usize {
        match self {
            Level::Jbod | Level::Raid0 => 0,
            Level::Raid1 => n.saturating_sub(1),
            Level::Raid10 => copies.saturating_sub(1),
            _ => self.parity(),
        }
    }

    /// Short lowercase name (as in the API and CLI).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Level::Jbod => "jbod",
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid10 => "raid10",
            Level::Raid5 => "raid5",
            Level::Raid6 => "raid6",
            Level::RaidZ1 => "raidz1",
            Level::RaidZ2 => "raidz2",
            Level::RaidZ3 => "raidz3",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown RAID level {0:?} (expected one of jbod, raid0, raid1, raid10, raid5, raid6, raidz1, raidz2, raidz3)"
)]
pub struct ParseLevelError(String);

impl FromStr for Level {
    type Err = ParseLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|l| l.name() == norm)
            .ok_or_else(|| ParseLevelError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_roundtrip() {
        for l in Level::ALL {
            assert_eq!(Level::from_code(l.code()), Some(l));
            assert_eq!(l.name().parse::<Level>(), Ok(l));
        }
        assert_eq!("RAID-Z2".parse::<Level>(), Ok(Level::RaidZ2));
        assert!("raid7".parse::<Level>().is_err());
        assert_eq!(Level::from_code(200), None);
    }
}
