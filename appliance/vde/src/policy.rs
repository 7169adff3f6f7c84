//! Policy: per-level settings and how they cascade VDE → container → object.
//!
//! Each level may name a profile (Speed, Balanced, Standard, Strict, Paranoid: several settings
//! at once) and set individual settings, which override its own profile. A setting may be
//! *enforced*: its value is then absolute below that level — a lower level may not set it to
//! anything else (refused when set, ignored if found).
//!
//! Without enforcement each setting resolves by its strategy:
//!
//! | setting | strategy | meaning |
//! |---|---|---|
//! | encryption | most restrictive | encrypted wins over plain, whoever asks |
//! | checksum verification | most restrictive | on wins |
//! | versioning | most restrictive | on wins |
//! | retention (WORM) | most restrictive | the longest retention wins; compliance beats governance |
//! | quota | most restrictive | the smallest quota wins |
//! | compression | override | the level closest to the data wins (hot data differs from cold) |
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
    /// Retention.
    pub retention: Resolved<Retention>,
    /// Quota (None = unlimited).
    pub quota_bytes: Resolved<Option<u64>>,
}

#[derive(Clone, Copy)]
enum Strategy {
    MostRestrictive,
    Override,
}

/// One level's value for one setting, with its provenance, after profile expansion.
fn at<T: Copy>(
    level: Level,
    p: &Policy,
    get: impl Fn(&Policy) -> Option<Setting<T>>,
) -> Option<(T, Source, bool)> {
    if let Some(s) = get(p) {
        return Some((
            s.value,
            Source::Level {
                level,
                profile: None,
                enforced: s.enforce,
            },
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
    ))
}

fn resolve<T: Copy>(
    levels: &[(Level, &Policy)],
    get: impl Fn(&Policy) -> Option<Setting<T>> + Copy,
    strategy: Strategy,
    stricter: impl Fn(&T, &T) -> bool,
    default: T,
) -> Resolved<T> {
    let vals: Vec<(T, Source, bool)> = levels.iter().filter_map(|(l, p)| at(*l, p, get)).collect();
    // The highest enforced value is absolute.
    if let Some(&(v, src, _)) = vals.iter().find(|x| x.2) {
        return Resolved {
            value: v,
            source: src,
        };
    }
    let mut out: Option<(T, Source)> = None;
    for (v, src, _) in vals {
        out = match (strategy, out) {
            (_, None) => Some((v, src)),
            (Strategy::Override, Some(_)) => Some((v, src)),
            (Strategy::MostRestrictive, Some((cur, cs))) => Some(if stricter(&v, &cur) {
                (v, src)
            } else {
                (cur, cs)
            }),
        };
    }
    out.map_or(
        Resolved {
            value: default,
            source: Source::Default,
        },
        |(value, source)| Resolved { value, source },
    )
}

/// Resolves the policy in force from the levels that apply (VDE, then container, then object).
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
        |p| p.quota_bytes,
        Strategy::MostRestrictive,
        |a: &u64, b: &u64| a < b,
        u64::MAX,
    );
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
            Strategy::MostRestrictive,
            |a, b| *a && !*b,
            false,
        ),
        retention: resolve(
            &levels,
            |p| p.retention,
            Strategy::MostRestrictive,
            |a: &Retention, b: &Retention| a.days > b.days || (a.days == b.days && a.mode > b.mode),
            Retention {
                days: 0,
                mode: RetentionMode::Governance,
            },
        ),
        quota_bytes: Resolved {
            value: (quota.value != u64::MAX).then_some(quota.value),
            source: quota.source,
        },
    }
}

/// Checks that `child` (to be set at `level`) does not explicitly contradict a setting enforced
/// by the levels above (`parents`, from the VDE down). Values a child's profile implies are not
/// refused: they yield to enforced settings when the policy is resolved.
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
    // Only explicit settings can contradict an enforced parent: a profile's values are defaults
    // and simply yield to enforced settings during resolution.
    macro_rules! check {
        ($field:ident, $name:expr) => {
            let want = child.$field.map(|s| (s.value, (), s.enforce));
            for (pl, pp) in parents {
                if let Some((v, _, true)) = at(*pl, pp, |p| p.$field)
                    && let Some((w, _, _)) = want
                    && w != v
                {
                    return Err(format!(
                        "{} is enforced at the {} level ({:?}); the {} cannot set it to {:?}",
                        $name, pl, v, level, w
                    ));
                }
            }
        };
    }
    check!(compression, "compression");
    check!(encryption, "encryption");
    check!(verify_checksums, "checksum verification");
    check!(versioning, "versioning");
    check!(retention, "retention");
    check!(quota_bytes, "the quota");
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
        let vq = Policy {
            quota_bytes: set(50),
            ..Policy::default()
        };
        assert_eq!(
            effective(&vq, Some(&c), None).quota_bytes.value,
            Some(50),
            "smallest quota wins"
        );
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
