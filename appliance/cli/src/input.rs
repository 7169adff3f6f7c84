//! What the user gives: sizes, policy settings, and secrets read from stdin (never argv).

use std::io::{BufRead, IsTerminal, Write};

use dw_api::types::{PolicyDto, SettingDto};

use crate::Fail;

pub use dw_api::parse_size;

/// A rate like `100M` or `100M/s` in bytes per second (`0`: unlimited).
///
/// # Errors
/// A message for clap.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    parse_size(t.strip_suffix("/s").unwrap_or(t))
}

/// A size that must fit in 32 bits (chunk and record sizes).
///
/// # Errors
/// A message for clap.
pub fn parse_size32(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n).map_err(|_| format!("{s:?} is too large (at most 4G)"))
}

/// Policy setting names, as the API spells them.
pub const POLICY_KEYS: &[&str] = &[
    "profile",
    "compression",
    "encryption",
    "verify_checksums",
    "versioning",
    "retention",
    "quota_bytes",
];

fn policy_key(k: &str) -> Result<&'static str, String> {
    let norm = k.trim().to_ascii_lowercase().replace('-', "_");
    let norm = match norm.as_str() {
        "quota" => "quota_bytes",
        "verify" => "verify_checksums",
        other => other,
    };
    POLICY_KEYS
        .iter()
        .copied()
        .find(|p| *p == norm)
        .ok_or_else(|| {
            format!(
                "unknown policy setting {k:?} (one of {})",
                POLICY_KEYS.join(", ")
            )
        })
}

/// One `--set key=value[!]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySet {
    /// API setting name.
    pub key: &'static str,
    /// Value text.
    pub value: String,
    /// `!` suffix: enforce (levels below cannot loosen it).
    pub enforce: bool,
}

/// Parses `key=value` or `key=value!`.
///
/// # Errors
/// A message for clap.
pub fn parse_policy_set(s: &str) -> Result<PolicySet, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value (add ! to enforce: key=value!)"))?;
    let key = policy_key(k)?;
    let v = v.trim();
    let (value, enforce) = match v.strip_suffix('!') {
        Some(v) => (v.trim(), true),
        None => (v, false),
    };
    if value.is_empty() {
        return Err(format!("{s:?} has no value"));
    }
    if key == "profile" && enforce {
        return Err("a profile cannot be enforced (enforce its settings instead)".into());
    }
    Ok(PolicySet {
        key,
        value: value.to_owned(),
        enforce,
    })
}

/// Parses a setting name for `--unset`.
///
/// # Errors
/// A message for clap.
pub fn parse_policy_key(s: &str) -> Result<&'static str, String> {
    policy_key(s)
}

/// Applies `--unset` then `--set` to a policy.
#[must_use]
pub fn apply_policy(mut p: PolicyDto, sets: &[PolicySet], unsets: &[&'static str]) -> PolicyDto {
    for k in unsets {
        if *k == "profile" {
            p.profile = None;
        } else {
            *setting_slot(&mut p, k) = None;
        }
    }
    for s in sets {
        if s.key == "profile" {
            p.profile = Some(s.value.clone());
        } else {
            *setting_slot(&mut p, s.key) = Some(SettingDto {
                value: s.value.clone(),
                enforce: s.enforce,
            });
        }
    }
    p
}

fn setting_slot<'a>(p: &'a mut PolicyDto, key: &str) -> &'a mut Option<SettingDto> {
    match key {
        "compression" => &mut p.compression,
        "encryption" => &mut p.encryption,
        "verify_checksums" => &mut p.verify_checksums,
        "versioning" => &mut p.versioning,
        "retention" => &mut p.retention,
        _ => &mut p.quota_bytes,
    }
}

/// Reads secrets from stdin, in the order they are asked for: one line each. On a terminal
/// each is prompted for on stderr with echo off.
#[derive(Debug)]
pub struct Secrets {
    tty: bool,
}

impl Secrets {
    pub fn new() -> Self {
        Self {
            tty: std::io::stdin().is_terminal(),
        }
    }

    /// One secret. `confirm`: on a terminal, ask twice (new passwords).
    ///
    /// # Errors
    /// Stdin is closed or empty, or the two entries differ.
    pub fn read(&mut self, what: &str, confirm: bool) -> Result<String, Fail> {
        if !self.tty {
            let mut line = String::new();
            let n = std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Fail::other(format!("cannot read the {what} from stdin: {e}")))?;
            let s = line.trim_end_matches(['\n', '\r']).to_owned();
            if n == 0 || s.is_empty() {
                return Err(Fail::usage(format!(
                    "expected the {what} as a line on stdin, got nothing"
                )));
            }
            return Ok(s);
        }
        let first = prompt(&format!("{}: ", capitalize(what)))?;
        if first.is_empty() {
            return Err(Fail::usage(format!("no {what} given")));
        }
        if confirm {
            let again = prompt(&format!("{} (again): ", capitalize(what)))?;
            if again != first {
                return Err(Fail::usage(format!("the two {what} entries differ")));
            }
        }
        Ok(first)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Prompts on stderr and reads a line from the terminal with echo off (through `stty`, which
/// every system with a terminal has; if it is missing the input is echoed).
fn prompt(text: &str) -> Result<String, Fail> {
    let mut err = std::io::stderr();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let hidden = stty("-echo");
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
        let _ = err.write_all(b"\n");
    }
    r.map_err(|e| Fail::other(format!("cannot read from the terminal: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 1t "), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("1.2.3G").is_err());
        assert!(parse_size("99999999999P").is_err());
        assert_eq!(parse_rate("100M/s"), Ok(100 << 20));
        assert!(parse_size32("8G").is_err());
    }

    #[test]
    fn policy_sets_parse_and_apply() {
        let s = parse_policy_set("compression=zstd:3!").unwrap();
        assert_eq!(
            s,
            PolicySet {
                key: "compression",
                value: "zstd:3".into(),
                enforce: true
            }
        );
        assert_eq!(parse_policy_set("quota=10G").unwrap().key, "quota_bytes");
        assert!(parse_policy_set("colour=red").is_err());
        assert!(parse_policy_set("compression").is_err());
        assert!(parse_policy_set("profile=strict!").is_err());
        let base = PolicyDto {
            profile: Some("standard".into()),
            versioning: Some(SettingDto {
                value: "true".into(),
                enforce: false,
            }),
            ..PolicyDto::default()
        };
        let p = apply_policy(
            base,
            &[s, parse_policy_set("profile=strict").unwrap()],
            &["versioning"],
        );
        assert_eq!(p.profile.as_deref(), Some("strict"));
        assert_eq!(p.versioning, None);
        assert_eq!(p.compression.as_ref().map(|c| c.enforce), Some(true));
    }
}
