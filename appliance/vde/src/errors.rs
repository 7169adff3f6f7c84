//! Errors of VDE operations.

use dw_blockdev::IoError;

use crate::format::FormatError;

/// Why a VDE could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The device holds no VDE (no header magic in either copy).
    #[error("no VDE on this device (no DWVD header)")]
    NotAVde,
    /// Both header copies (or directory copies) are unusable.
    #[error("the VDE header is unusable: copy A: {a}; copy B: {b}")]
    HeaderDamaged {
        /// Copy A's problem.
        a: String,
        /// Copy B's problem.
        b: String,
    },
    /// A format problem (version, features, layout).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The tamper seal does not verify and the header records no key check value, so it
    /// cannot tell why (VDEs whose header predates the key check value).
    #[error(
        "the key does not open this VDE (tamper seal does not verify with it): wrong key, or the header or region directory were altered"
    )]
    SealMismatch,
    /// The key is not this VDE's: the key check value does not verify with it either.
    #[error(
        "wrong key: this is not the master key of this VDE (its key check value does not match)"
    )]
    WrongKey,
    /// The key is right (its key check value verifies) but the tamper seal does not: the
    /// header or the region directory was changed without the key.
    #[error(
        "the VDE header or region directory was altered: the tamper seal does not verify although the key is right"
    )]
    Tampered,
    /// The emergency recovery block decodes but its MAC does not verify: it was edited without
    /// the key (for example the administrator contact replaced).
    #[error(
        "the emergency recovery block was altered without the key (its MAC in the sealed header does not verify); check it with `probe` before trusting its contact details"
    )]
    RecoveryBlockAltered,
    /// The metadata store could not be opened.
    #[error("the metadata store could not be opened: {0}")]
    Metadata(String),
    /// The device is too small or unsuitable.
    #[error("unsuitable device: {0}")]
    Unsuitable(String),
    /// Recovery after a crash failed.
    #[error("crash recovery failed: {0}")]
    Recovery(String),
    /// I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] IoError),
}

/// Why a VDE operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VdeError {
    /// No such container.
    #[error("no container named {0:?}")]
    NoSuchContainer(String),
    /// A container of that name exists.
    #[error("a container named {0:?} already exists")]
    ContainerExists(String),
    /// The container is not empty.
    #[error("container {0:?} is not empty")]
    ContainerNotEmpty(String),
    /// The operation needs the other kind of container.
    #[error("container {name:?} is a {kind}, not a {wanted}")]
    WrongKind {
        /// Container.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// No such object.
    #[error("no object {key:?} in {container:?}")]
    NoSuchObject {
        /// Container.
        container: String,
        /// Key.
        key: String,
    },
    /// No such snapshot.
    #[error("no snapshot {snapshot:?} of {container:?}")]
    NoSuchSnapshot {
        /// Container.
        container: String,
        /// Snapshot.
        snapshot: String,
    },
    /// No such multipart upload.
    #[error("no multipart upload {0}")]
    NoSuchUpload(String),
    /// Retention or legal hold forbids it.
    #[error("{0}")]
    Retained(String),
    /// A quota would be exceeded.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// No space left.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// A policy change conflicts with an enforced setting above it, or is invalid.
    #[error("policy refused: {0}")]
    Policy(String),
    /// Invalid argument.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A byte range outside the object or volume.
    #[error("range {off}+{len} is outside the {size}-byte {what}")]
    OutOfRange {
        /// What.
        what: &'static str,
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Its size.
        size: u64,
    },
    /// Data failed its checksum and no redundancy could heal it.
    #[error(
        "data at device offset {addr} ({len} bytes) failed its checksum and no reconstruction matched: {detail}"
    )]
    Unrecoverable {
        /// Device address.
        addr: u64,
        /// Length.
        len: u64,
        /// What was tried.
        detail: String,
    },
    /// The data is encrypted with a key generation this session does not hold.
    #[error("data is encrypted with key generation {0}, which was not supplied")]
    MissingKey(u32),
    /// Metadata is inconsistent.
    #[error("metadata inconsistency: {0}")]
    Corrupt(String),
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Metadata(String),
    /// The VDE is read-only (opened read-only or features).
    #[error("the VDE is read-only: {0}")]
    ReadOnly(String),
    /// I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] IoError),
}

impl VdeError {
    pub(crate) fn meta(e: impl std::fmt::Display) -> Self {
        let s = e.to_string();
        if s.contains("metadata region is full") {
            VdeError::NoSpace(s)
        } else {
            VdeError::Metadata(s)
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for VdeError {
            fn from(e: $t) -> Self {
                VdeError::meta(e)
            }
        })*
    };
}

from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
