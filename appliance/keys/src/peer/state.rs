//! The key-release service's state file: the enrolled machines.
//!
//! ```text
//! "DWKD" | u16 version = 1 | u16 reserved | u32 total length | u32 machine count
//! machines: [16] machine id | [65] AK public | [32] share | u8 has SNP | [48] SNP measurement
//!           | u64 enrolled at | u64 updated at | u8 label length | label
//!           | u32 PCR mask | 32 bytes per selected PCR
//! [32] BLAKE3 (derive-key mode) checksum of everything before it
//! ```
//!
//! The shares are stored in clear (the file is mode 0600 in a 0700 directory). A share alone
//! opens nothing: the slot's wrapping key is derived from the share *and* a half kept in the
//! VDE's key-slot area, so a stolen state file without the disks is useless, and so are the
//! disks without the service. Writes are atomic: temporary file, fsync, rename, fsync of the
//! directory.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::codec::{Reader, Truncated, Writer, len_u8, len_u32};
use crate::pcr::{PcrSelection, PcrValues};
use crate::tpm::AkPublic;
use crate::types::{UnixTime, hex};

/// Most machines one service holds.
pub const MAX_ENROLLMENTS: usize = 4096;
/// Largest state file.
pub const MAX_STATE_LEN: usize = 8 * 1024 * 1024;
const MAGIC: &[u8; 4] = b"DWKD";
const VERSION: u16 = 1;
const CHECKSUM_CONTEXT: &str = "DataWarehouse dw-keyd v1 state checksum";

/// One enrolled machine.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrolledMachine {
    /// Its id.
    pub machine_id: [u8; 16],
    /// Its attestation key.
    pub ak_public: AkPublic,
    /// The PCR values it must quote.
    pub pcrs: PcrValues,
    /// The SEV-SNP launch measurement it must report, if any.
    pub snp_measurement: Option<[u8; 48]>,
    pub(crate) share: Zeroizing<[u8; 32]>,
    /// Label.
    pub label: String,
    /// When enrolled.
    pub enrolled_at: UnixTime,
    /// When the policy last changed.
    pub updated_at: UnixTime,
}

impl fmt::Debug for EnrolledMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolledMachine")
            .field("machine_id", &hex(&self.machine_id))
            .field("label", &self.label)
            .field("pcrs", &self.pcrs.selection())
            .field("snp", &self.snp_measurement.is_some())
            .finish_non_exhaustive()
    }
}

/// The enrolled machines.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ServiceState {
    pub(crate) machines: Vec<EnrolledMachine>,
}

/// A state file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeStateError {
    /// Not a state file.
    #[error("not a dw-keyd state file (bad magic)")]
    BadMagic,
    /// Newer format.
    #[error("dw-keyd state format version {0} is not supported")]
    Version(u16),
    /// Size problems.
    #[error("the dw-keyd state file has an invalid size: {0}")]
    Size(String),
    /// Checksum.
    #[error("the dw-keyd state file checksum does not match (damaged file)")]
    Checksum,
    /// Truncated.
    #[error("the dw-keyd state file is truncated: {0}")]
    Truncated(#[from] Truncated),
    /// Invalid field.
    #[error("the dw-keyd state field `{field}` is invalid: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Loading or saving the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateIoError {
    /// I/O.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad contents.
    #[error("{path}: {source}")]
    Decode {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: DecodeStateError,
    },
}

fn checksum(b: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(b);
    *h.finalize().as_bytes()
}

/// Rewrites the length field and checksum of a would-be state file so that fuzzers reach the
/// parser behind the checksum. Not for production use.
#[doc(hidden)]
pub fn repair_checksum_for_fuzzing(b: &mut [u8]) {
    if b.len() >= 48 {
        let n = u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
        b[8..12].copy_from_slice(&n);
        let end = b.len() - 32;
        let sum = checksum(&b[..end]);
        b[end..].copy_from_slice(&sum);
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeStateError {
    DecodeStateError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl ServiceState {
    /// The enrolled machines.
    #[must_use]
    pub fn machines(&self) -> &[EnrolledMachine] {
        &self.machines
    }

    pub(crate) fn find(&self, id: &[u8; 16]) -> Option<usize> {
        self.machines.iter().position(|m| &m.machine_id == id)
    }

    /// Serializes the state.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.machines.len() <= MAX_ENROLLMENTS,
            "too many enrollments to encode"
        );
        let mut w = Writer::with_capacity(64 + self.machines.len() * 300);
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.u16(0);
        w.u32(0);
        w.u32(len_u32(self.machines.len()));
        for m in &self.machines {
            w.bytes(&m.machine_id);
            w.bytes(&m.ak_public.0);
            w.bytes(m.share.as_ref());
            w.u8(u8::from(m.snp_measurement.is_some()));
            w.bytes(&m.snp_measurement.unwrap_or([0; 48]));
            w.u64(m.enrolled_at.0);
            w.u64(m.updated_at.0);
            w.u8(len_u8(m.label.len()));
            w.bytes(m.label.as_bytes());
            w.u32(m.pcrs.selection().mask());
            for v in m.pcrs.values() {
                w.bytes(v);
            }
        }
        let total = w.len() + 32;
        w.patch_u32(8, len_u32(total));
        let sum = checksum(&w.buf);
        w.bytes(&sum);
        w.buf
    }

    /// Parses a state file. Bounded; never panics.
    ///
    /// # Errors
    /// [`DecodeStateError`].
    pub fn decode(bytes: &[u8]) -> Result<ServiceState, DecodeStateError> {
        if bytes.len() < 16 + 32 {
            return Err(DecodeStateError::Size(format!(
                "{} bytes is too short",
                bytes.len()
            )));
        }
        if &bytes[..4] != MAGIC {
            return Err(DecodeStateError::BadMagic);
        }
        if bytes.len() > MAX_STATE_LEN {
            return Err(DecodeStateError::Size(format!(
                "{} bytes exceeds {MAX_STATE_LEN}",
                bytes.len()
            )));
        }
        let mut r = Reader::new(&bytes[4..bytes.len() - 32]);
        let version = r.u16_le("version")?;
        if version != VERSION {
            return Err(DecodeStateError::Version(version));
        }
        if r.u16_le("reserved")? != 0 {
            return Err(invalid("reserved", "not zero"));
        }
        let total = usize::try_from(r.u32_le("total_len")?).unwrap_or(usize::MAX);
        if total != bytes.len() {
            return Err(DecodeStateError::Size(format!(
                "header says {total} bytes, file has {}",
                bytes.len()
            )));
        }
        let end = bytes.len() - 32;
        if !crate::audit::constant_time_eq(&checksum(&bytes[..end]), &bytes[end..]) {
            return Err(DecodeStateError::Checksum);
        }
        let count = usize::try_from(r.u32_le("count")?).unwrap_or(usize::MAX);
        if count > MAX_ENROLLMENTS {
            return Err(invalid(
                "count",
                format!("{count}, at most {MAX_ENROLLMENTS}"),
            ));
        }
        let mut machines: Vec<EnrolledMachine> = Vec::with_capacity(count);
        for _ in 0..count {
            let machine_id = r.array::<16>("machine_id")?;
            let ak: [u8; 65] = r.array("ak_public")?;
            if ak[0] != 4 {
                return Err(invalid("ak_public", "not an uncompressed point"));
            }
            let share = Zeroizing::new(r.array::<32>("share")?);
            let has_snp = match r.u8("has_snp")? {
                0 => false,
                1 => true,
                v => return Err(invalid("has_snp", format!("{v}"))),
            };
            let m = r.array::<48>("snp_measurement")?;
            // Without the flag the field is zero: one encoding per state (found by fuzzing).
            if !has_snp && m != [0; 48] {
                return Err(invalid(
                    "snp_measurement",
                    "set although the machine has no SEV-SNP measurement",
                ));
            }
            let enrolled_at = UnixTime(r.u64_le("enrolled_at")?);
            let updated_at = UnixTime(r.u64_le("updated_at")?);
            let label_len = usize::from(r.u8("label_len")?);
            let label = std::str::from_utf8(r.bytes(label_len, "label")?)
                .map_err(|_| invalid("label", "not UTF-8"))?
                .to_string();
            let sel = PcrSelection::from_mask(r.u32_le("pcr_mask")?)
                .map_err(|e| invalid("pcr_mask", e.to_string()))?;
            let mut values = Vec::with_capacity(sel.len());
            for _ in 0..sel.len() {
                values.push(r.array::<32>("pcr_value")?);
            }
            let pcrs = PcrValues::new(sel, values).map_err(|e| invalid("pcrs", e.to_string()))?;
            if machines.iter().any(|x| x.machine_id == machine_id) {
                return Err(invalid(
                    "machine_id",
                    format!("{} appears twice", hex(&machine_id)),
                ));
            }
            machines.push(EnrolledMachine {
                machine_id,
                ak_public: AkPublic(ak),
                pcrs,
                snp_measurement: has_snp.then_some(m),
                share,
                label,
                enrolled_at,
                updated_at,
            });
        }
        if r.remaining() != 0 {
            return Err(invalid(
                "state",
                format!("{} bytes after the last machine", r.remaining()),
            ));
        }
        Ok(ServiceState { machines })
    }

    /// Loads the state; a missing file is an empty state.
    ///
    /// # Errors
    /// On I/O failure or a damaged file.
    pub fn load(path: &Path) -> Result<ServiceState, StateIoError> {
        let bytes = match fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ServiceState::default());
            }
            Err(source) => {
                return Err(StateIoError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        ServiceState::decode(&bytes).map_err(|source| StateIoError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the state atomically (temporary file, fsync, rename, fsync of the directory).
    ///
    /// # Errors
    /// On I/O failure; the previous file is then unchanged.
    pub fn save(&self, path: &Path) -> Result<(), StateIoError> {
        write_atomically(path, &Zeroizing::new(self.encode()))
    }
}

/// Writes `bytes` to `path` atomically with mode 0600.
///
/// # Errors
/// On I/O failure; `path` is then unchanged.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateIoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateIoError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod fuzz_regressions {
    use super::{DecodeStateError, ServiceState, repair_checksum_for_fuzzing};

    /// A fuzzer-found file: a machine without the SEV-SNP flag but with measurement bytes. It
    /// decoded, and re-encoded differently (the bytes were dropped); now it is refused.
    #[test]
    fn snp_measurement_without_the_flag_is_refused() {
        let mut b = include_bytes!("../../tests/data/state-snp-field-without-flag.bin").to_vec();
        repair_checksum_for_fuzzing(&mut b);
        match ServiceState::decode(&b) {
            Err(DecodeStateError::Invalid { field, .. }) => assert_eq!(field, "snp_measurement"),
            other => panic!("{other:?}"),
        }
    }
}
