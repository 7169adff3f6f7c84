//! Policy: per-level settings and how they cascade VDE → container → object.
//!
//! Each level may name a profile (Speed, Balanced, Standard, Strict, Paranoid: several settings
//! at once) and set individual settings, which override its own profile. A setting may be
//! *enforced*: its value is then absolute below that level — a lower level may not set it to
//! anything else (refused when set, ignored if found).
//!
//! Each setting resolves by its strategy ([`Strategy`], [`STRATEGIES`]): most restrictive for
//! security and retention, override for performance, inherit otherwise.
//!
//! | setting | strategy | meaning | enforced at a level |
//! |---|---|---|---|
//! | encryption | most restrictive | encrypted wins over plain, whoever asks | a floor: below may not turn it off |
//! | checksum verification | most restrictive | on wins | a floor |
//! | retention (WORM) | most restrictive | the longest period wins, and the strictest mode of any level that sets a period (compliance beats governance) | a floor: below may lengthen, or go from governance to compliance |
//! | compression | override | the level closest to the data wins, explicitly or by its profile (hot data differs from cold) | absolute below |
//! | versioning | inherit | the closest explicit setting wins; profiles only fill in when nobody sets it explicitly | absolute below |
//! | quota | inherit | the closest explicit quota wins (a container may have a larger quota than the VDE's default) | absolute below |
//!
//! `Effective` carries, for every value, where it came from (level, and whether through a
//! profile or explicitly, or the built-in default) so an administrator can ask why.

use std::fmt;
use std::str::FromStr;

/// Compression of stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd at a level 1..=19 (skipped per record when it does not pay).
    Zstd(u8),
}

/// Encryption of stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Encryption {
    /// Plain.
    None,
    /// AES-256-GCM per record.
    Aes256Gcm,
}

/// How strict a retention is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RetentionMode {
    /// An administrator with the bypass right may shorten it.
    Governance,
    /// Nobody may shorten it.
    Compliance,
}

/// WORM retention for new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days an object cannot be changed or deleted after it is written (0 = none).
    pub days: u32,
    /// Mode.
    pub mode: RetentionMode,
}

/// Named settings bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Fastest: no compression, encryption or read verification.
    Speed,
    /// zstd-1, checksums verified.
    Balanced,
    /// zstd-3, AES-256-GCM, checksums verified.
    Standard,
    /// Standard plus versioning.
    Strict,
    /// Strict plus one day of governance retention on every new object.
    Paranoid,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Speed,
        Profile::Balanced,
        Profile::Standard,
        Profile::Strict,
        Profile::Paranoid,
    ];

    fn code(self) -> u8 {
        match self {
            Profile::Speed => 1,
            Profile::Balanced => 2,
            Profile::Standard => 3,
            Profile::Strict => 4,
            Profile::Paranoid => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == c)
    }

    /// Name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Profile::Speed => "speed",
            Profile::Balanced => "balanced",
            Profile::Standard => "standard",
            Profile::Strict => "strict",
            Profile::Paranoid => "paranoid",
        }
    }

    /// The settings the profile stands for (none enforced).
    #[must_use]
    pub fn settings(self) -> Policy {
        fn s<T>(value: T) -> Option<Setting<T>> {
            Some(Setting {
                value,
                enforce: false,
            })
        }
        let (comp, enc, verify, versioning, retention) = match self {
            Profile::Speed => (Compression::None, Encryption::None, false, false, 0),
            Profile::Balanced => (Compression::Zstd(1), Encryption::None, true, false, 0),
            Profile::Standard => (Compression::Zstd(3), Encryption::Aes256Gcm, true, false, 0),
            Profile::Strict => (Compression::Zstd(3), Encryption::Aes256Gcm, true, true, 0),
            Profile::Paranoid => (Compression::Zstd(3), Encryption::Aes256Gcm, true, true, 1),
        };
        Policy {
            profile: None,
            compression: s(comp),
            encryption: s(enc),
            verify_checksums: s(verify),
            versioning: s(versioning),
            retention: s(Retention {
                days: retention,
                mode: RetentionMode::Governance,
            }),
            quota_bytes: None,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown profile {s:?} (speed, balanced, standard, strict, paranoid)")
            })
    }
}

/// A value set at a level, possibly enforced for every level below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Absolute below this level.
    pub enforce: bool,
}

/// The settings one level sets (each optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// A profile supplying every setting not set explicitly at this level.
    pub profile: Option<Profile>,
    /// Compression.
    pub compression: Option<Setting<Compression>>,
    /// Encryption.
    pub encryption: Option<Setting<Encryption>>,
    /// Verify checksums on every read.
    pub verify_checksums: Option<Setting<bool>>,
    /// Keep previous versions of overwritten or deleted objects.
    pub versioning: Option<Setting<bool>>,
    /// WORM retention for new objects.
    pub retention: Option<Setting<Retention>>,
    /// Quota in logical bytes (per container).
    pub quota_bytes: Option<Setting<u64>>,
}

/// The three levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The VDE.
    Vde,
    /// A container.
    Container,
    /// An object.
    Object,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Vde => "vde",
            Level::Container => "container",
            Level::Object => "object",
        })
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nobody set it.
    Default,
    /// Set at a level, explicitly or through that level's profile.
    Level {
        /// Level.
        level: Level,
        /// Through this profile (None = explicit).
        profile: Option<Profile>,
        /// Enforced from there.
        enforced: bool,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Level {
                level,
                profile,
                enforced,
            } => {
                write!(f, "{level}")?;
                if let Some(p) = profile {
                    write!(f, " (profile {p})")?;
                }
                if *enforced {
                    f.write_str(", enforced")?;
                }
                Ok(())
            }
        }
    }
}

/// A resolved value and its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<T> {
    /// The value in force.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// The policy in force for one object (or container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Compression.
    pub compression: Resolved<Compression>,
    /// Encryption.
    pub encryption: Resolved<Encryption>,
    /// Verify checksums on read.
    pub verify_checksums: Resolved<bool>,
    /// Versioning.
    pub versioning: Resolved<bool>,
    /// Retention (its source is the level that set the period).
    pub retention: Resolved<Retention>,
    /// Where the retention mode came from (the strictest mode of the levels that set a
    /// period, which may be another level than the longest period's).
    pub retention_mode_source: Source,
    /// Quota (None = unlimited).
    pub quota_bytes: Resolved<Option<u64>>,
}

/// How a setting resolves across the levels (VDE, container, object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The strictest value any level sets wins, whoever sets it and however (explicitly or
    /// through a profile): a lower level can tighten, never loosen. An enforced value is a
    /// floor: a lower level may still set something stricter, never something looser.
    MostRestrictive,
    /// The value set closest to the data wins, explicitly or through that level's profile
    /// (hot data differs from cold). An enforced value is absolute below its level.
    Override,
    /// The value set *explicitly* closest to the data wins; values that profiles imply count
    /// only when no level sets the value explicitly (then the closest profile's). So a
    /// container that picks a profile does not silently undo what an administrator set
    /// explicitly above it. An enforced value is absolute below its level.
    Inherit,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::MostRestrictive => "most restrictive",
            Strategy::Override => "override",
            Strategy::Inherit => "inherit",
        })
    }
}

/// The strategy of every setting (in [`Policy`] field order): most restrictive for security
/// and retention, override for performance, inherit otherwise.
pub const STRATEGIES: [(&str, Strategy); 6] = [
    ("compression", Strategy::Override),
    ("encryption", Strategy::MostRestrictive),
    ("verify_checksums", Strategy::MostRestrictive),
    ("versioning", Strategy::Inherit),
    ("retention", Strategy::MostRestrictive),
    ("quota_bytes", Strategy::Inherit),
];

/// One level's value for one setting: (value, source, set explicitly, enforced).
type LevelValue<T> = (T, Source, bool, bool);

/// One level's value for one setting, with its provenance, after profile expansion.
fn at<T: Copy>(
    level: Level,
    p: &Policy,
    get: impl Fn(&Policy) -> Option<Setting<T>>,
) -> Option<LevelValue<T>> {
    if let Some(s) = get(p) {
        return Some((
            s.value,
            Source::Level {
                level,
                profile: None,
                enforced: s.enforce,
            },
            true,
            s.enforce,
        ));
    }
    let prof = p.profile?;
    let s = get(&prof.settings())?;
    Some((
        s.value,
        Source::Level {
            level,
            profile: Some(prof),
            enforced: false,
        },
        false,
        false,
    ))
}

fn resolve<T: Copy>(
    levels: &[(Level, &Policy)],
    get: impl Fn(&Policy) -> Option<Setting<T>> + Copy,
    strategy: Strategy,
    stricter: impl Fn(&T, &T) -> bool,
    default: T,
) -> Resolved<T> {
    let vals: Vec<LevelValue<T>> = levels.iter().filter_map(|(l, p)| at(*l, p, get)).collect();
    let pick = match strategy {
        // Enforced values need no special case: they take part like any other, and a looser
        // value below them loses anyway.
        Strategy::MostRestrictive => {
            vals.iter()
                .fold(None::<&LevelValue<T>>, |best, v| match best {
                    Some(b) if !stricter(&v.0, &b.0) => Some(b),
                    _ => Some(v),
                })
        }
        // The highest enforced value is absolute.
        Strategy::Override => vals.iter().find(|v| v.3).or_else(|| vals.last()),
        Strategy::Inherit => vals
            .iter()
            .find(|v| v.3)
            .or_else(|| vals.iter().rev().find(|v| v.2))
            .or_else(|| vals.last()),
    };
    pick.map_or(
        Resolved {
            value: default,
            source: Source::Default,
        },
        |&(value, source, _, _)| Resolved { value, source },
    )
}

/// Retention resolves per component: the longest period and, among the levels that set a
/// period, the strictest mode (compliance beats governance) — a shorter compliance retention
/// somewhere must not turn a longer one into governance. Returns the value, the source of the
/// period and the source of the mode.
fn resolve_retention(levels: &[(Level, &Policy)]) -> (Resolved<Retention>, Source) {
    let vals: Vec<LevelValue<Retention>> = levels
        .iter()
        .filter_map(|(l, p)| at(*l, p, |p| p.retention))
        .collect();
    let days = vals
        .iter()
        .fold(None::<&LevelValue<Retention>>, |b, v| match b {
            Some(b) if v.0.days <= b.0.days => Some(b),
            _ => Some(v),
        });
    let mode = vals
        .iter()
        .filter(|v| v.0.days > 0)
        .fold(None::<&LevelValue<Retention>>, |b, v| match b {
            Some(b) if v.0.mode <= b.0.mode => Some(b),
            _ => Some(v),
        });
    match (days, mode) {
        (Some(d), Some(m)) if d.0.days > 0 => (
            Resolved {
                value: Retention {
                    days: d.0.days,
                    mode: m.0.mode,
                },
                source: d.1,
            },
            m.1,
        ),
        (Some(d), _) => (
            Resolved {
                value: d.0,
                source: d.1,
            },
            d.1,
        ),
        (None, _) => (
            Resolved {
                value: Retention {
                    days: 0,
                    mode: RetentionMode::Governance,
                },
                source: Source::Default,
            },
            Source::Default,
        ),
    }
}

/// Resolves the policy in force from the levels that apply (VDE, then container, then object),
/// each setting by its strategy ([`STRATEGIES`]).
#[must_use]
pub fn effective(vde: &Policy, container: Option<&Policy>, object: Option<&Policy>) -> Effective {
    let mut levels: Vec<(Level, &Policy)> = vec![(Level::Vde, vde)];
    if let Some(c) = container {
        levels.push((Level::Container, c));
    }
    if let Some(o) = object {
        levels.push((Level::Object, o));
    }
    let quota = resolve(
        &levels,
        |p| {
            p.quota_bytes.map(|s| Setting {
                value: Some(s.value),
                enforce: s.enforce,
            })
        },
        Strategy::Inherit,
        |_, _| false,
        None,
    );
    let (retention, retention_mode_source) = resolve_retention(&levels);
    Effective {
        compression: resolve(
            &levels,
            |p| p.compression,
            Strategy::Override,
            |_, _| false,
            Compression::None,
        ),
        encryption: resolve(
            &levels,
            |p| p.encryption,
            Strategy::MostRestrictive,
            |a, b| a > b,
            Encryption::None,
        ),
        verify_checksums: resolve(
            &levels,
            |p| p.verify_checksums,
            Strategy::MostRestrictive,
            |a, b| *a && !*b,
            true,
        ),
        versioning: resolve(
            &levels,
            |p| p.versioning,
            Strategy::Inherit,
            |_, _| false,
            false,
        ),
        retention,
        retention_mode_source,
        quota_bytes: quota,
    }
}

/// True when `child` is looser than `parent` for a most-restrictive setting.
fn looser_retention(child: &Retention, parent: &Retention) -> bool {
    child.days < parent.days || (parent.days > 0 && child.mode < parent.mode)
}

/// Checks that `child` (to be set at `level`) does not explicitly contradict a setting enforced
/// by the levels above (`parents`, from the VDE down): for most-restrictive settings it may
/// not be looser than the enforced value (stricter is fine), for the others it may not differ.
/// Values a child's profile implies are not refused: they yield to enforced settings when the
/// policy is resolved.
///
/// # Errors
/// A message naming the setting and who enforces it.
pub fn check_child(
    parents: &[(Level, &Policy)],
    level: Level,
    child: &Policy,
) -> Result<(), String> {
    if let Compression::Zstd(l) = child.compression.map_or(Compression::None, |s| s.value)
        && !(1..=19).contains(&l)
    {
        return Err(format!("zstd level {l} is out of range (1..=19)"));
    }
    // `$refused(child, enforced)` says whether the child's explicit value is not allowed.
    macro_rules! check {
        ($field:ident, $name:expr, $refused:expr) => {
            if let Some(w) = child.$field.map(|s| s.value) {
                for (pl, pp) in parents {
                    if let Some((v, _, _, true)) = at(*pl, pp, |p| p.$field)
                        && $refused(&w, &v)
                    {
                        return Err(format!(
                            "{} is enforced at the {} level ({:?}); the {} cannot set it to {:?}",
                            $name, pl, v, level, w
                        ));
                    }
                }
            }
        };
    }
    let differs = |a: &_, b: &_| a != b;
    check!(
        compression,
        "compression",
        |a: &Compression, b: &Compression| a != b
    );
    check!(
        encryption,
        "encryption",
        |w: &Encryption, v: &Encryption| w < v
    );
    check!(
        verify_checksums,
        "checksum verification",
        |w: &bool, v: &bool| !*w && *v
    );
    check!(versioning, "versioning", |a: &bool, b: &bool| differs(a, b));
    check!(retention, "retention", looser_retention);
    check!(quota_bytes, "the quota", |a: &u64, b: &u64| a != b);
    Ok(())
}

// ------------------------------------------------------------------------------ encoding

/// Encodes a policy (version 1): byte 0 = version, byte 1 = profile code (0 none), then for
/// each of the six settings in order a presence byte (0 absent, 1 set, 2 set and enforced) and,
/// when present, its value: compression (1 byte: 0 none, else zstd level), encryption (1 byte),
/// verification (1), versioning (1), retention (u32 days LE + 1 byte mode), quota (u64 LE).
#[must_use]
pub fn encode(p: &Policy) -> Vec<u8> {
    let mut b = vec![1u8, p.profile.map_or(0, Profile::code)];
    fn flag<T>(b: &mut Vec<u8>, s: &Option<Setting<T>>) -> bool {
        b.push(match s {
            None => 0,
            Some(s) if s.enforce => 2,
            Some(_) => 1,
        });
        s.is_some()
    }
    if flag(&mut b, &p.compression)
        && let Some(s) = p.compression
    {
        b.push(match s.value {
            Compression::None => 0,
            Compression::Zstd(l) => l,
        });
    }
    if flag(&mut b, &p.encryption)
        && let Some(s) = p.encryption
    {
        b.push(u8::from(s.value == Encryption::Aes256Gcm));
    }
    if flag(&mut b, &p.verify_checksums)
        && let Some(s) = p.verify_checksums
    {
        b.push(u8::from(s.value));
    }
    if flag(&mut b, &p.versioning)
        && let Some(s) = p.versioning
    {
        b.push(u8::from(s.value));
    }
    if flag(&mut b, &p.retention)
        && let Some(s) = p.retention
    {
        b.extend_from_slice(&s.value.days.to_le_bytes());
        b.push(u8::from(s.value.mode == RetentionMode::Compliance));
    }
    if flag(&mut b, &p.quota_bytes)
        && let Some(s) = p.quota_bytes
    {
        b.extend_from_slice(&s.value.to_le_bytes());
    }
    b
}

/// Decodes [`encode`]'s bytes.
///
/// # Errors
/// A message naming what is wrong.
pub fn decode(b: &[u8]) -> Result<Policy, String> {
    let mut it = b.iter().copied();
    let mut take = |n: usize| -> Result<Vec<u8>, String> {
        let v: Vec<u8> = it.by_ref().take(n).collect();
        if v.len() == n {
            Ok(v)
        } else {
            Err("policy record truncated".into())
        }
    };
    if take(1)? != [1] {
        return Err("unknown policy record version".into());
    }
    let prof = take(1)?[0];
    let profile = match prof {
        0 => None,
        c => Some(Profile::from_code(c).ok_or_else(|| format!("unknown profile code {c}"))?),
    };
    let flag =
        |take: &mut dyn FnMut(usize) -> Result<Vec<u8>, String>| -> Result<Option<bool>, String> {
            match take(1)?[0] {
                0 => Ok(None),
                1 => Ok(Some(false)),
                2 => Ok(Some(true)),
                f => Err(format!("bad setting flag {f}")),
            }
        };
    let mut p = Policy {
        profile,
        ..Policy::default()
    };
    if let Some(enforce) = flag(&mut take)? {
        let v = take(1)?[0];
        if v > 19 {
            return Err(format!("bad zstd level {v}"));
        }
        p.compression = Some(Setting {
            value: if v == 0 {
                Compression::None
            } else {
                Compression::Zstd(v)
            },
            enforce,
        });
    }
    if let Some(enforce) = flag(&mut take)? {
        let v = match take(1)?[0] {
            0 => Encryption::None,
            1 => Encryption::Aes256Gcm,
            x => return Err(format!("bad encryption code {x}")),
        };
        p.encryption = Some(Setting { value: v, enforce });
    }
    for field in 0..2 {
        if let Some(enforce) = flag(&mut take)? {
            let v = match take(1)?[0] {
                0 => false,
                1 => true,
                x => return Err(format!("bad boolean {x}")),
            };
            let s = Some(Setting { value: v, enforce });
            if field == 0 {
                p.verify_checksums = s;
            } else {
                p.versioning = s;
            }
        }
    }
    if let Some(enforce) = flag(&mut take)? {
        let d = take(4)?;
        let days = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let mode = match take(1)?[0] {
            0 => RetentionMode::Governance,
            1 => RetentionMode::Compliance,
            x => return Err(format!("bad retention mode {x}")),
        };
        p.retention = Some(Setting {
            value: Retention { days, mode },
            enforce,
        });
    }
    if let Some(enforce) = flag(&mut take)? {
        let q = take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(&q);
        p.quota_bytes = Some(Setting {
            value: u64::from_le_bytes(w),
            enforce,
        });
    }
    if take(1).is_ok() {
        return Err("trailing bytes after the policy record".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<T>(v: T) -> Option<Setting<T>> {
        Some(Setting {
            value: v,
            enforce: false,
        })
    }
    fn enforced<T>(v: T) -> Option<Setting<T>> {
        Some(Setting {
            value: v,
            enforce: true,
        })
    }

    #[test]
    fn defaults_with_nothing_set() {
        let e = effective(&Policy::default(), None, None);
        assert_eq!(e.compression.value, Compression::None);
        assert_eq!(e.encryption.value, Encryption::None);
        assert!(e.verify_checksums.value);
        assert!(!e.versioning.value);
        assert_eq!(e.retention.value.days, 0);
        assert_eq!(e.quota_bytes.value, None);
        assert_eq!(e.encryption.source, Source::Default);
    }

    #[test]
    fn most_restrictive_security_and_retention() {
        let vde = Policy {
            encryption: set(Encryption::Aes256Gcm),
            retention: set(Retention {
                days: 10,
                mode: RetentionMode::Governance,
            }),
            ..Policy::default()
        };
        let c = Policy {
            encryption: set(Encryption::None),
            retention: set(Retention {
                days: 30,
                mode: RetentionMode::Governance,
            }),
            quota_bytes: set(100),
            ..Policy::default()
        };
        let o = Policy {
            retention: set(Retention {
                days: 5,
                mode: RetentionMode::Compliance,
            }),
            ..Policy::default()
        };
        let e = effective(&vde, Some(&c), Some(&o));
        assert_eq!(
            e.encryption.value,
            Encryption::Aes256Gcm,
            "a container cannot loosen encryption"
        );
        assert_eq!(
            e.encryption.source,
            Source::Level {
                level: Level::Vde,
                profile: None,
                enforced: false
            }
        );
        assert_eq!(e.retention.value.days, 30, "longest retention wins");
        assert_eq!(
            e.retention.source,
            Source::Level {
                level: Level::Container,
                profile: None,
                enforced: false
            }
        );
        assert_eq!(e.quota_bytes.value, Some(100));
    }

    /// Every setting has the strategy the issue asks for, and the table is what resolution
    /// does (each setting is exercised below).
    #[test]
    fn strategy_table() {
        let want = [
            ("compression", Strategy::Override),
            ("encryption", Strategy::MostRestrictive),
            ("verify_checksums", Strategy::MostRestrictive),
            ("versioning", Strategy::Inherit),
            ("retention", Strategy::MostRestrictive),
            ("quota_bytes", Strategy::Inherit),
        ];
        assert_eq!(STRATEGIES, want);
    }

    fn ret(days: u32, mode: RetentionMode) -> Option<Setting<Retention>> {
        set(Retention { days, mode })
    }

    #[test]
    fn retention_keeps_the_longest_period_and_the_strictest_mode() {
        use RetentionMode::{Compliance, Governance};
        let vde = Policy {
            retention: ret(30, Governance),
            ..Policy::default()
        };
        let c = Policy {
            retention: ret(5, Compliance),
            ..Policy::default()
        };
        let e = effective(&vde, Some(&c), None);
        assert_eq!(
            e.retention.value,
            Retention {
                days: 30,
                mode: Compliance
            },
            "a shorter compliance retention keeps the longer one in compliance mode"
        );
        let lvl = |level, enforced| Source::Level {
            level,
            profile: None,
            enforced,
        };
        assert_eq!(e.retention.source, lvl(Level::Vde, false), "period");
        assert_eq!(
            e.retention_mode_source,
            lvl(Level::Container, false),
            "mode"
        );
        // A mode with no period does not count.
        let none = Policy {
            retention: ret(0, Compliance),
            ..Policy::default()
        };
        let e = effective(&vde, Some(&none), None);
        assert_eq!(e.retention.value.mode, Governance);
        // Nothing set: no retention, from the default.
        let e = effective(&Policy::default(), None, None);
        assert_eq!(e.retention.value.days, 0);
        assert_eq!(e.retention_mode_source, Source::Default);
    }

    #[test]
    fn most_restrictive_enforced_is_a_floor() {
        use RetentionMode::{Compliance, Governance};
        let vde = Policy {
            retention: Some(Setting {
                value: Retention {
                    days: 30,
                    mode: Governance,
                },
                enforce: true,
            }),
            encryption: enforced(Encryption::Aes256Gcm),
            verify_checksums: enforced(true),
            ..Policy::default()
        };
        let parents = [(Level::Vde, &vde)];
        let tighter = Policy {
            retention: ret(60, Compliance),
            ..Policy::default()
        };
        assert!(check_child(&parents, Level::Container, &tighter).is_ok());
        assert_eq!(
            effective(&vde, Some(&tighter), None).retention.value,
            Retention {
                days: 60,
                mode: Compliance
            }
        );
        for looser in [
            Policy {
                retention: ret(10, Compliance),
                ..Policy::default()
            },
            Policy {
                encryption: set(Encryption::None),
                ..Policy::default()
            },
            Policy {
                verify_checksums: set(false),
                ..Policy::default()
            },
        ] {
            let err = check_child(&parents, Level::Container, &looser).expect_err("looser");
            assert!(err.contains("enforced at the vde level"), "{err}");
        }
        // Equal to the enforced value is fine.
        let same = Policy {
            encryption: set(Encryption::Aes256Gcm),
            ..Policy::default()
        };
        assert!(check_child(&parents, Level::Container, &same).is_ok());
    }

    #[test]
    fn inherit_explicit_beats_profiles_and_closest_explicit_wins() {
        // Versioning set explicitly at the VDE; a container's profile implies off: the
        // explicit setting is inherited.
        let vde = Policy {
            versioning: set(true),
            ..Policy::default()
        };
        let speed = Policy {
            profile: Some(Profile::Speed),
            ..Policy::default()
        };
        let e = effective(&vde, Some(&speed), None);
        assert!(e.versioning.value);
        assert_eq!(
            e.versioning.source,
            Source::Level {
                level: Level::Vde,
                profile: None,
                enforced: false
            }
        );
        // An explicit setting below wins over the inherited one.
        let off = Policy {
            versioning: set(false),
            ..Policy::default()
        };
        assert!(!effective(&vde, Some(&off), None).versioning.value);
        // Only profiles: the closest profile's value.
        let strict = Policy {
            profile: Some(Profile::Strict),
            ..Policy::default()
        };
        assert!(!effective(&strict, Some(&speed), None).versioning.value);
        assert!(effective(&speed, Some(&strict), None).versioning.value);
        // Quota: a container may have a larger quota than the VDE default.
        let vq = Policy {
            quota_bytes: set(50),
            ..Policy::default()
        };
        let cq = Policy {
            quota_bytes: set(100),
            ..Policy::default()
        };
        let e = effective(&vq, Some(&cq), None);
        assert_eq!(e.quota_bytes.value, Some(100), "closest explicit quota");
        assert_eq!(
            effective(&vq, Some(&speed), None).quota_bytes.value,
            Some(50)
        );
        assert_eq!(effective(&speed, None, None).quota_bytes.value, None);
        // Enforced: absolute, and a different value below is refused.
        let ve = Policy {
            quota_bytes: enforced(50),
            versioning: enforced(true),
            ..Policy::default()
        };
        let e = effective(&ve, Some(&cq), Some(&off));
        assert_eq!(e.quota_bytes.value, Some(50));
        assert!(e.versioning.value);
        assert!(check_child(&[(Level::Vde, &ve)], Level::Container, &cq).is_err());
        assert!(check_child(&[(Level::Vde, &ve)], Level::Container, &off).is_err());
        assert!(
            check_child(&[(Level::Vde, &ve)], Level::Container, &speed).is_ok(),
            "a profile's implied values yield instead of being refused"
        );
    }

    #[test]
    fn override_profile_below_beats_explicit_above() {
        let vde = Policy {
            compression: set(Compression::Zstd(9)),
            ..Policy::default()
        };
        let speed = Policy {
            profile: Some(Profile::Speed),
            ..Policy::default()
        };
        let e = effective(&vde, Some(&speed), None);
        assert_eq!(e.compression.value, Compression::None);
        assert_eq!(
            e.compression.source,
            Source::Level {
                level: Level::Container,
                profile: Some(Profile::Speed),
                enforced: false
            }
        );
        // Enforced at the container, an object's explicit override is refused and ignored.
        let ce = Policy {
            compression: enforced(Compression::Zstd(1)),
            ..Policy::default()
        };
        let o = Policy {
            compression: set(Compression::None),
            ..Policy::default()
        };
        assert!(
            check_child(
                &[(Level::Vde, &vde), (Level::Container, &ce)],
                Level::Object,
                &o
            )
            .is_err()
        );
        assert_eq!(
            effective(&vde, Some(&ce), Some(&o)).compression.value,
            Compression::Zstd(1)
        );
    }

    /// Every profile, alone and below every other profile: what each setting resolves to.
    #[test]
    fn profiles_under_profiles() {
        for upper in Profile::ALL {
            for lower in Profile::ALL {
                let u = Policy {
                    profile: Some(upper),
                    ..Policy::default()
                };
                let l = Policy {
                    profile: Some(lower),
                    ..Policy::default()
                };
                let e = effective(&u, Some(&l), None);
                let (us, ls) = (upper.settings(), lower.settings());
                let v = |s: Option<Setting<bool>>| s.is_some_and(|x| x.value);
                // Override: the lower profile's compression.
                assert_eq!(
                    Some(e.compression.value),
                    ls.compression.map(|x| x.value),
                    "{upper}/{lower}"
                );
                // Most restrictive: the stricter of the two.
                let enc = us
                    .encryption
                    .map(|x| x.value)
                    .max(ls.encryption.map(|x| x.value));
                assert_eq!(Some(e.encryption.value), enc, "{upper}/{lower}");
                assert_eq!(
                    e.verify_checksums.value,
                    v(us.verify_checksums) || v(ls.verify_checksums),
                    "{upper}/{lower}"
                );
                let days = |s: &Policy| s.retention.map_or(0, |x| x.value.days);
                assert_eq!(e.retention.value.days, days(&us).max(days(&ls)));
                // Inherit with profiles only: the closest profile's.
                assert_eq!(e.versioning.value, v(ls.versioning), "{upper}/{lower}");
            }
        }
        // The profiles form a slider: each is at least as strict as the one before.
        for w in Profile::ALL.windows(2) {
            let (a, b) = (w[0].settings(), w[1].settings());
            assert!(a.encryption.map(|x| x.value) <= b.encryption.map(|x| x.value));
            assert!(
                a.retention.map(|x| x.value.days) <= b.retention.map(|x| x.value.days),
                "{} vs {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn override_for_performance_and_enforce_beats_override() {
        let vde = Policy {
            compression: set(Compression::Zstd(9)),
            ..Policy::default()
        };
        let c = Policy {
            compression: set(Compression::Zstd(1)),
            ..Policy::default()
        };
        let o = Policy {
            compression: set(Compression::None),
            ..Policy::default()
        };
        assert_eq!(
            effective(&vde, Some(&c), None).compression.value,
            Compression::Zstd(1)
        );
        assert_eq!(
            effective(&vde, Some(&c), Some(&o)).compression.value,
            Compression::None,
            "closest wins"
        );
        let vde_e = Policy {
            compression: enforced(Compression::Zstd(9)),
            ..Policy::default()
        };
        let e = effective(&vde_e, Some(&c), Some(&o));
        assert_eq!(
            e.compression.value,
            Compression::Zstd(9),
            "enforced parent wins over override"
        );
        assert_eq!(
            e.compression.source,
            Source::Level {
                level: Level::Vde,
                profile: None,
                enforced: true
            }
        );
        // And setting a contradicting child is refused.
        let err = check_child(&[(Level::Vde, &vde_e)], Level::Container, &c).expect_err("refused");
        assert!(
            err.contains("compression is enforced at the vde level"),
            "{err}"
        );
        assert!(check_child(&[(Level::Vde, &vde)], Level::Container, &c).is_ok());
        // Enforced most-restrictive settings are absolute too.
        let ve = Policy {
            encryption: enforced(Encryption::Aes256Gcm),
            ..Policy::default()
        };
        let cn = Policy {
            encryption: set(Encryption::None),
            ..Policy::default()
        };
        assert!(check_child(&[(Level::Vde, &ve)], Level::Container, &cn).is_err());
        assert_eq!(
            effective(&ve, Some(&cn), None).encryption.value,
            Encryption::Aes256Gcm
        );
    }

    #[test]
    fn enforce_at_container_binds_objects_not_the_vde() {
        let vde = Policy {
            versioning: set(false),
            ..Policy::default()
        };
        let c = Policy {
            versioning: enforced(true),
            ..Policy::default()
        };
        let o = Policy {
            versioning: set(false),
            ..Policy::default()
        };
        assert!(
            check_child(
                &[(Level::Vde, &vde), (Level::Container, &c)],
                Level::Object,
                &o
            )
            .is_err()
        );
        assert!(effective(&vde, Some(&c), Some(&o)).versioning.value);
    }

    #[test]
    fn profiles_expand_and_explicit_settings_override_them() {
        for p in Profile::ALL {
            let lvl = Policy {
                profile: Some(p),
                ..Policy::default()
            };
            let e = effective(&lvl, None, None);
            let s = p.settings();
            assert_eq!(
                Some(e.compression.value),
                s.compression.map(|x| x.value),
                "{p}"
            );
            assert_eq!(
                Some(e.encryption.value),
                s.encryption.map(|x| x.value),
                "{p}"
            );
            assert_eq!(
                e.compression.source,
                Source::Level {
                    level: Level::Vde,
                    profile: Some(p),
                    enforced: false
                }
            );
        }
        let vde = Policy {
            profile: Some(Profile::Standard),
            compression: set(Compression::Zstd(7)),
            ..Policy::default()
        };
        let e = effective(&vde, None, None);
        assert_eq!(
            e.compression.value,
            Compression::Zstd(7),
            "explicit beats the same level's profile"
        );
        assert_eq!(
            e.encryption.value,
            Encryption::Aes256Gcm,
            "profile supplies the rest"
        );
        // A Speed container under a Standard VDE: compression follows the container (override),
        // encryption stays on (most restrictive).
        let c = Policy {
            profile: Some(Profile::Speed),
            ..Policy::default()
        };
        let e = effective(
            &Policy {
                profile: Some(Profile::Standard),
                ..Policy::default()
            },
            Some(&c),
            None,
        );
        assert_eq!(e.compression.value, Compression::None);
        assert_eq!(e.encryption.value, Encryption::Aes256Gcm);
        assert!(
            e.verify_checksums.value,
            "speed cannot turn verification off under standard"
        );
        assert_eq!("Paranoid".parse::<Profile>(), Ok(Profile::Paranoid));
        assert!(
            effective(
                &Policy {
                    profile: Some(Profile::Paranoid),
                    ..Policy::default()
                },
                None,
                None
            )
            .retention
            .value
            .days
                > 0
        );
    }

    #[test]
    fn encoding_roundtrips_and_rejects_garbage() {
        let p = Policy {
            profile: Some(Profile::Strict),
            compression: enforced(Compression::Zstd(3)),
            encryption: set(Encryption::Aes256Gcm),
            verify_checksums: set(true),
            versioning: None,
            retention: set(Retention {
                days: 7,
                mode: RetentionMode::Compliance,
            }),
            quota_bytes: enforced(1 << 40),
        };
        assert_eq!(decode(&encode(&p)), Ok(p));
        assert_eq!(decode(&encode(&Policy::default())), Ok(Policy::default()));
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0]).is_err());
        let mut b = encode(&p);
        b.push(0);
        assert!(decode(&b).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(p) = decode(&b) {
                proptest::prop_assert_eq!(decode(&encode(&p)), Ok(p));
            }
        }
    }
}
