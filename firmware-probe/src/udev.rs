//! udev properties, merged on top of sysfs when a udev database exists.
//!
//! Two sources behind one trait: libudev (the `udev` crate) on the live system, and the database
//! files (`/run/udev/data/b<major>:<minor>`) read directly for recorded trees. Without a database
//! (early boot, containers) neither is used and sysfs alone answers.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::fsx::{self, Roots};

/// Most lines taken from one database file.
const MAX_DB_LINES: usize = 10_000;

/// udev properties and device links of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevRecord {
    /// `E:` properties (ID_SERIAL_SHORT, ID_WWN, ID_MODEL …).
    pub properties: BTreeMap<String, String>,
    /// Device links relative to `/dev` (`disk/by-id/…`).
    pub devlinks: Vec<String>,
}

impl UdevRecord {
    /// A property value, if set and not empty.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `/dev/disk/by-id/…` links, sorted.
    #[must_use]
    pub fn by_id(&self) -> Vec<String> {
        let mut links: Vec<String> = self
            .devlinks
            .iter()
            .map(|l| l.trim_start_matches("/dev/"))
            .filter(|l| l.starts_with("disk/by-id/"))
            .map(|l| format!("/dev/{l}"))
            .collect();
        links.sort();
        links.dedup();
        links
    }
}

/// Looking up a device in the udev database failed.
#[derive(Debug, Error)]
pub enum UdevLookupError {
    /// libudev returned an error.
    #[error("libudev lookup of {name} failed: {source}")]
    Libudev {
        /// Kernel name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// The database file could not be read.
    #[error(transparent)]
    Read(#[from] fsx::ReadAttrError),
}

/// Where udev properties come from.
pub trait UdevSource {
    /// Properties of the block device `name` with device number `devnum`; `Ok(None)` when the
    /// database has no entry for it.
    fn lookup(&self, name: &str, devnum: (u32, u32))
    -> Result<Option<UdevRecord>, UdevLookupError>;
    /// Whole-disk names this source enumerates (libudev); `None` when it does not enumerate.
    fn enumerate_disks(&self) -> Option<Vec<String>>;
}

/// libudev on the live system.
#[derive(Debug, Default)]
pub struct Libudev;

impl UdevSource for Libudev {
    fn lookup(
        &self,
        name: &str,
        _devnum: (u32, u32),
    ) -> Result<Option<UdevRecord>, UdevLookupError> {
        let device = udev::Device::from_subsystem_sysname("block".to_owned(), name.to_owned())
            .map_err(|source| UdevLookupError::Libudev {
                name: name.to_owned(),
                source,
            })?;
        if !device.is_initialized() {
            return Ok(None);
        }
        let mut record = UdevRecord::default();
        for entry in device.properties().take(MAX_DB_LINES) {
            let key = entry.name().to_string_lossy().into_owned();
            let value = entry.value().to_string_lossy().into_owned();
            if key == "DEVLINKS" {
                record.devlinks = value.split_whitespace().map(str::to_owned).collect();
            }
            record.properties.insert(key, value);
        }
        Ok(Some(record))
    }

    fn enumerate_disks(&self) -> Option<Vec<String>> {
        let mut enumerator = udev::Enumerator::new().ok()?;
        enumerator.match_subsystem("block").ok()?;
        let devices = enumerator.scan_devices().ok()?;
        let mut names: Vec<String> = devices
            .filter(|d| d.devtype().is_some_and(|t| t == "disk"))
            .map(|d| d.sysname().to_string_lossy().into_owned())
            .take(fsx::MAX_DIR_ENTRIES)
            .collect();
        names.sort();
        Some(names)
    }
}

/// The database files under `<run_root>/run/udev/data`.
#[derive(Debug)]
pub struct DbFiles {
    roots: Roots,
}

impl DbFiles {
    pub(crate) fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

impl UdevSource for DbFiles {
    fn lookup(
        &self,
        _name: &str,
        devnum: (u32, u32),
    ) -> Result<Option<UdevRecord>, UdevLookupError> {
        let path = self
            .roots
            .run(&format!("udev/data/b{}:{}", devnum.0, devnum.1));
        match fsx::read_text(&path) {
            Ok(text) => Ok(Some(parse_udev_db(&text))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn enumerate_disks(&self) -> Option<Vec<String>> {
        None
    }
}

/// Parses a udev database file: `E:KEY=VALUE` properties and `S:link` device links; other record
/// types are ignored. Bounded to `MAX_DB_LINES` lines.
#[must_use]
pub fn parse_udev_db(text: &str) -> UdevRecord {
    let mut record = UdevRecord::default();
    for line in text.lines().take(MAX_DB_LINES) {
        if let Some(prop) = line.strip_prefix("E:") {
            if let Some((k, v)) = prop.split_once('=') {
                record.properties.insert(k.to_owned(), v.to_owned());
            }
        } else if let Some(link) = line.strip_prefix("S:")
            && !link.is_empty()
        {
            record.devlinks.push(link.to_owned());
        }
    }
    record
}

/// Decodes udev's `\xHH` escaping (ID_MODEL_ENC, ID_VENDOR_ENC) and trims padding.
#[must_use]
pub fn decode_enc(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_database_file() {
        let text = "S:disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456X\n\
                    S:disk/by-path/pci-0000:00:1f.2-ata-1\n\
                    S:disk/by-id/wwn-0x5002538e40a1b2c3\n\
                    I:1234567\n\
                    E:ID_BUS=ata\n\
                    E:ID_MODEL_ENC=Samsung\\x20SSD\\x20860\\x20EVO\\x20500GB\\x20\\x20\n\
                    E:ID_SERIAL_SHORT=S3Z1NB0K123456X\n\
                    E:ID_WWN=0x5002538e40a1b2c3\n\
                    G:systemd\n";
        let r = parse_udev_db(text);
        assert_eq!(r.get("ID_BUS"), Some("ata"));
        assert_eq!(r.get("ID_SERIAL_SHORT"), Some("S3Z1NB0K123456X"));
        assert_eq!(
            decode_enc(r.get("ID_MODEL_ENC").unwrap()),
            "Samsung SSD 860 EVO 500GB"
        );
        assert_eq!(
            r.by_id(),
            vec![
                "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456X".to_owned(),
                "/dev/disk/by-id/wwn-0x5002538e40a1b2c3".to_owned(),
            ]
        );
    }

    #[test]
    fn decode_enc_keeps_bad_escapes() {
        assert_eq!(decode_enc("a\\x2"), "a\\x2");
        assert_eq!(decode_enc("a\\xzz"), "a\\xzz");
        assert_eq!(decode_enc("a\\x+1"), "a\\x+1", "a sign is not a hex digit");
        assert_eq!(decode_enc("\\x41\\x42"), "AB");
    }

    // Goal: the libudev path enumerates what sysfs lists (runs on the live machine; without a udev
    // database libudev still enumerates sysfs, and lookups find no initialised device).
    #[test]
    fn libudev_enumerates_the_sysfs_disks() {
        let list = || -> Option<std::collections::BTreeSet<String>> {
            let entries = std::fs::read_dir("/sys/block").ok()?;
            Some(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
            )
        };
        let Some(before) = list() else {
            eprintln!("SKIPPED: no /sys/block");
            return;
        };
        let udev: std::collections::BTreeSet<String> = Libudev
            .enumerate_disks()
            .expect("libudev enumeration")
            .into_iter()
            .collect();
        let after = list().unwrap_or_default();
        // Other tests may attach loop devices meanwhile: compare what was stable.
        let stable: Vec<&String> = before.intersection(&after).collect();
        assert!(
            stable.iter().all(|d| udev.contains(*d)),
            "{udev:?} vs {stable:?}"
        );
        assert!(
            udev.iter().all(|d| before.contains(d) || after.contains(d)),
            "{udev:?}"
        );
        if let Some(first) = stable.first() {
            let record = Libudev.lookup(first, (0, 0)).expect("libudev lookup");
            if !std::path::Path::new("/run/udev/data").exists() {
                assert_eq!(record, None);
            }
        }
    }

    proptest! {
        #[test]
        fn random_db_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let text = String::from_utf8_lossy(&bytes);
            let r = parse_udev_db(&text);
            let _ = r.by_id();
            for v in r.properties.values() {
                let _ = decode_enc(v);
            }
        }
    }
}
