//! VDE policies to and from the API's text form (`zstd:3`, `aes-256-gcm`, `30d:compliance`).

use dw_api::types::{EffectivePolicy, EffectiveSetting, PolicyDto, SettingDto};
use dw_vde::Profile;
use dw_vde::policy::{Compression, Effective, Encryption, Retention, RetentionMode, Setting};

use crate::error::OpError;

fn bad(name: &str, v: &str, want: &str) -> OpError {
    OpError::Invalid(format!("policy {name}: {v:?} is not {want}"))
}

fn compression(v: &str) -> Result<Compression, OpError> {
    let v = v.trim().to_ascii_lowercase();
    if v == "none" || v == "off" {
        return Ok(Compression::None);
    }
    let level = match v.strip_prefix("zstd") {
        Some("") => 3,
        Some(rest) => rest
            .trim_start_matches([':', '-'])
            .parse::<u8>()
            .map_err(|_| bad("compression", &v, "none or zstd:<1-19>"))?,
        None => return Err(bad("compression", &v, "none or zstd:<1-19>")),
    };
    if !(1..=19).contains(&level) {
        return Err(bad("compression", &v, "none or zstd:<1-19>"));
    }
    Ok(Compression::Zstd(level))
}

fn encryption(v: &str) -> Result<Encryption, OpError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" | "off" => Ok(Encryption::None),
        "aes-256-gcm" | "aes256gcm" | "on" => Ok(Encryption::Aes256Gcm),
        _ => Err(bad("encryption", v, "none or aes-256-gcm")),
    }
}

fn boolean(name: &str, v: &str) -> Result<bool, OpError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err(bad(name, v, "true or false")),
    }
}

fn retention(v: &str) -> Result<Retention, OpError> {
    let v = v.trim().to_ascii_lowercase();
    let (days, mode) = v.split_once(':').unwrap_or((v.as_str(), "governance"));
    let days: u32 = days
        .trim_end_matches('d')
        .parse()
        .map_err(|_| bad("retention", &v, "<days>d:governance or <days>d:compliance"))?;
    let mode = match mode {
        "governance" => RetentionMode::Governance,
        "compliance" => RetentionMode::Compliance,
        _ => {
            return Err(bad(
                "retention",
                &v,
                "<days>d:governance or <days>d:compliance",
            ));
        }
    };
    if days > 365 * 100 {
        return Err(bad("retention", &v, "at most 36500 days"));
    }
    Ok(Retention { days, mode })
}

fn quota(v: &str) -> Result<u64, OpError> {
    crate::devices::parse_size(v).map_err(|_| bad("quota_bytes", v, "a size like 10G or 1048576"))
}

fn setting<T>(
    s: Option<&SettingDto>,
    parse: impl Fn(&str) -> Result<T, OpError>,
) -> Result<Option<Setting<T>>, OpError> {
    s.map(|s| {
        Ok(Setting {
            value: parse(&s.value)?,
            enforce: s.enforce,
        })
    })
    .transpose()
}

/// Parses a profile name.
///
/// # Errors
/// [`OpError::Invalid`].
pub fn profile(name: &str) -> Result<Profile, OpError> {
    name.parse::<Profile>().map_err(OpError::Invalid)
}

/// API form to VDE policy.
///
/// # Errors
/// [`OpError::Invalid`] naming the setting.
pub fn from_dto(d: &PolicyDto) -> Result<dw_vde::Policy, OpError> {
    Ok(dw_vde::Policy {
        profile: d.profile.as_deref().map(profile).transpose()?,
        compression: setting(d.compression.as_ref(), compression)?,
        encryption: setting(d.encryption.as_ref(), encryption)?,
        verify_checksums: setting(d.verify_checksums.as_ref(), |v| {
            boolean("verify_checksums", v)
        })?,
        versioning: setting(d.versioning.as_ref(), |v| boolean("versioning", v))?,
        retention: setting(d.retention.as_ref(), retention)?,
        quota_bytes: setting(d.quota_bytes.as_ref(), quota)?,
    })
}

fn show_compression(c: Compression) -> String {
    match c {
        Compression::None => "none".into(),
        Compression::Zstd(l) => format!("zstd:{l}"),
    }
}

fn show_encryption(e: Encryption) -> String {
    match e {
        Encryption::None => "none".into(),
        Encryption::Aes256Gcm => "aes-256-gcm".into(),
    }
}

fn show_retention(r: Retention) -> String {
    let mode = match r.mode {
        RetentionMode::Governance => "governance",
        RetentionMode::Compliance => "compliance",
    };
    format!("{}d:{mode}", r.days)
}

fn dto_setting<T: Copy>(s: Option<Setting<T>>, show: impl Fn(T) -> String) -> Option<SettingDto> {
    s.map(|s| SettingDto {
        value: show(s.value),
        enforce: s.enforce,
    })
}

/// VDE policy to API form.
#[must_use]
pub fn to_dto(p: &dw_vde::Policy) -> PolicyDto {
    PolicyDto {
        profile: p.profile.map(|p| p.name().to_owned()),
        compression: dto_setting(p.compression, show_compression),
        encryption: dto_setting(p.encryption, show_encryption),
        verify_checksums: dto_setting(p.verify_checksums, |b: bool| b.to_string()),
        versioning: dto_setting(p.versioning, |b: bool| b.to_string()),
        retention: dto_setting(p.retention, show_retention),
        quota_bytes: dto_setting(p.quota_bytes, |q: u64| q.to_string()),
    }
}

/// The effective policy with sources.
#[must_use]
pub fn effective_dto(e: &Effective) -> EffectivePolicy {
    let s = |name: &str, value: String, source: String| EffectiveSetting {
        name: name.to_owned(),
        value,
        source,
    };
    EffectivePolicy {
        settings: vec![
            s(
                "compression",
                show_compression(e.compression.value),
                e.compression.source.to_string(),
            ),
            s(
                "encryption",
                show_encryption(e.encryption.value),
                e.encryption.source.to_string(),
            ),
            s(
                "verify_checksums",
                e.verify_checksums.value.to_string(),
                e.verify_checksums.source.to_string(),
            ),
            s(
                "versioning",
                e.versioning.value.to_string(),
                e.versioning.source.to_string(),
            ),
            s(
                "retention",
                show_retention(e.retention.value),
                e.retention.source.to_string(),
            ),
            s(
                "quota_bytes",
                e.quota_bytes
                    .value
                    .map_or_else(|| "unlimited".to_owned(), |q| q.to_string()),
                e.quota_bytes.source.to_string(),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: &str, enforce: bool) -> Option<SettingDto> {
        Some(SettingDto {
            value: v.into(),
            enforce,
        })
    }

    #[test]
    fn round_trip() {
        let d = PolicyDto {
            profile: Some("strict".into()),
            compression: st("zstd:7", false),
            encryption: st("aes-256-gcm", true),
            verify_checksums: st("true", false),
            versioning: st("false", false),
            retention: st("30d:compliance", true),
            quota_bytes: st("1048576", false),
        };
        let p = from_dto(&d).unwrap();
        assert_eq!(p.compression.unwrap().value, Compression::Zstd(7));
        assert!(p.encryption.unwrap().enforce);
        assert_eq!(to_dto(&p), d);
        let q = from_dto(&PolicyDto {
            quota_bytes: st("10G", false),
            ..PolicyDto::default()
        })
        .unwrap();
        assert_eq!(q.quota_bytes.unwrap().value, 10 << 30);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (d, name) in [
            (
                PolicyDto {
                    compression: st("zstd:40", false),
                    ..PolicyDto::default()
                },
                "compression",
            ),
            (
                PolicyDto {
                    encryption: st("rot13", false),
                    ..PolicyDto::default()
                },
                "encryption",
            ),
            (
                PolicyDto {
                    retention: st("5d:forever", false),
                    ..PolicyDto::default()
                },
                "retention",
            ),
            (
                PolicyDto {
                    profile: Some("fastest".into()),
                    ..PolicyDto::default()
                },
                "profile",
            ),
        ] {
            let e = from_dto(&d).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
    }
}
