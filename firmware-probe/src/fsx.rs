//! Bounded reads of sysfs/procfs files below the configured roots.
//!
//! Every path has two forms: the real one below a root, and the logical one (`/sys/block/sda/size`)
//! used in messages so that reasons read the same on a live system and on a recorded tree.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

use crate::config::ProbeConfig;

/// Largest attribute or proc file read (mountinfo on a busy host is the big one).
pub(crate) const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest directory listing taken (sysfs directories are small; this bounds a hostile tree).
pub(crate) const MAX_DIR_ENTRIES: usize = 4096;

/// A path below one of the roots, with its logical form for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) real: PathBuf,
    pub(crate) shown: String,
}

impl Loc {
    pub(crate) fn join(&self, rel: &str) -> Loc {
        Loc {
            real: self.real.join(rel),
            shown: format!("{}/{rel}", self.shown),
        }
    }
}

/// The four roots of a probe.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    sys: PathBuf,
    dev: PathBuf,
    proc: PathBuf,
    run: PathBuf,
}

impl Roots {
    pub(crate) fn new(config: &ProbeConfig) -> Self {
        Self {
            sys: config.sys_root.join("sys"),
            dev: config.dev_root.join("dev"),
            proc: config.proc_root.join("proc"),
            run: config.run_root.join("run"),
        }
    }

    pub(crate) fn sys(&self, rel: &str) -> Loc {
        loc(&self.sys, "/sys", rel)
    }
    pub(crate) fn dev(&self, rel: &str) -> Loc {
        loc(&self.dev, "/dev", rel)
    }
    pub(crate) fn proc(&self, rel: &str) -> Loc {
        loc(&self.proc, "/proc", rel)
    }
    pub(crate) fn run(&self, rel: &str) -> Loc {
        loc(&self.run, "/run", rel)
    }
    /// The real `sys/` directory (to turn canonical paths back into logical ones).
    pub(crate) fn sys_dir(&self) -> &Path {
        &self.sys
    }
}

fn loc(base: &Path, shown: &str, rel: &str) -> Loc {
    if rel.is_empty() {
        Loc {
            real: base.to_path_buf(),
            shown: shown.to_owned(),
        }
    } else {
        Loc {
            real: base.join(rel),
            shown: format!("{shown}/{rel}"),
        }
    }
}

/// Reading a sysfs/procfs file or directory failed.
#[derive(Debug, Error)]
pub enum ReadAttrError {
    /// The file does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// Logical path.
        path: String,
    },
    /// No permission.
    #[error("permission denied reading {path} (run as root)")]
    PermissionDenied {
        /// Logical path.
        path: String,
    },
    /// Other I/O error.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Logical path.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The file is larger than the probe reads.
    #[error("{path} is larger than {max} bytes; not read")]
    TooLarge {
        /// Logical path.
        path: String,
        /// Limit in bytes.
        max: u64,
    },
    /// The content is not what the kernel documents.
    #[error("{path} holds {value:?}, expected {expected}")]
    Invalid {
        /// Logical path.
        path: String,
        /// What was read (truncated).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl ReadAttrError {
    pub(crate) fn from_io(path: &Loc, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::NotFound {
                path: path.shown.clone(),
            },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied {
                path: path.shown.clone(),
            },
            _ => Self::Io {
                path: path.shown.clone(),
                source: e,
            },
        }
    }

    /// Whether the error means the file is absent (as opposed to unreadable).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Reads a whole file, at most `MAX_FILE_BYTES`.
pub(crate) fn read_bytes(path: &Loc) -> Result<Vec<u8>, ReadAttrError> {
    let file = fs::File::open(&path.real).map_err(|e| ReadAttrError::from_io(path, e))?;
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ReadAttrError::from_io(path, e))?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(ReadAttrError::TooLarge {
            path: path.shown.clone(),
            max: MAX_FILE_BYTES,
        });
    }
    Ok(buf)
}

/// Reads a text file (lossy UTF-8).
pub(crate) fn read_text(path: &Loc) -> Result<String, ReadAttrError> {
    read_bytes(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads a one-value attribute, trimmed of surrounding whitespace and NULs.
pub(crate) fn read_attr(path: &Loc) -> Result<String, ReadAttrError> {
    let text = read_text(path)?;
    Ok(text
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned())
}

/// Reads a non-empty attribute; an empty one is reported as not set.
pub(crate) fn read_nonempty(path: &Loc) -> Result<String, ReadAttrError> {
    let value = read_attr(path)?;
    if value.is_empty() {
        return Err(ReadAttrError::Invalid {
            path: path.shown.clone(),
            value,
            expected: "a non-empty value",
        });
    }
    Ok(value)
}

/// Reads and parses a numeric attribute.
pub(crate) fn read_num<T: FromStr>(path: &Loc) -> Result<T, ReadAttrError> {
    let value = read_attr(path)?;
    value.parse::<T>().map_err(|_| ReadAttrError::Invalid {
        path: path.shown.clone(),
        value: truncate(&value, 64),
        expected: "a decimal number",
    })
}

/// Reads a 0/1 attribute.
pub(crate) fn read_bool01(path: &Loc) -> Result<bool, ReadAttrError> {
    let value = read_attr(path)?;
    match value.as_str() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(ReadAttrError::Invalid {
            path: path.shown.clone(),
            value: truncate(&value, 64),
            expected: "0 or 1",
        }),
    }
}

/// Reads a kernel module boolean parameter (`Y`/`N`/`1`/`0`).
pub(crate) fn read_param_bool(path: &Loc) -> Result<bool, ReadAttrError> {
    let value = read_attr(path)?;
    match value.as_str() {
        "Y" | "y" | "1" => Ok(true),
        "N" | "n" | "0" => Ok(false),
        _ => Err(ReadAttrError::Invalid {
            path: path.shown.clone(),
            value: truncate(&value, 64),
            expected: "Y, N, 1 or 0",
        }),
    }
}

/// Lists a directory: sorted names, at most `MAX_DIR_ENTRIES`.
pub(crate) fn list_dir(path: &Loc) -> Result<Vec<String>, ReadAttrError> {
    let entries = fs::read_dir(&path.real).map_err(|e| ReadAttrError::from_io(path, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReadAttrError::from_io(path, e))?;
        if names.len() >= MAX_DIR_ENTRIES {
            return Err(ReadAttrError::TooLarge {
                path: path.shown.clone(),
                max: u64::try_from(MAX_DIR_ENTRIES).unwrap_or(u64::MAX),
            });
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Whether the path exists (without following a final symlink's target being absent as error).
pub(crate) fn exists(path: &Loc) -> bool {
    fs::symlink_metadata(&path.real).is_ok()
}

/// The final component of a symlink's target (e.g. the driver name of `device/driver`).
pub(crate) fn link_basename(path: &Loc) -> Result<String, ReadAttrError> {
    let target = fs::read_link(&path.real).map_err(|e| ReadAttrError::from_io(path, e))?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ReadAttrError::Invalid {
            path: path.shown.clone(),
            value: target.display().to_string(),
            expected: "a link to a named entry",
        })
}

/// Canonical path of `path`, as a string relative to `base` when it lies below it.
pub(crate) fn canonical_below(path: &Loc, base: &Path) -> Result<String, ReadAttrError> {
    let canon = fs::canonicalize(&path.real).map_err(|e| ReadAttrError::from_io(path, e))?;
    let base = fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let rel = canon.strip_prefix(&base).unwrap_or(&canon);
    Ok(format!("/{}", rel.display()))
}

/// Cuts a string to at most `max` characters (for error messages).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
