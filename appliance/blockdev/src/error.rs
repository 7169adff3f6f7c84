//! Block I/O errors.

use std::fmt;

/// Which operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A flush (cache write-back).
    Flush,
    /// A discard (deallocation).
    Discard,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Discard => "discard",
        })
    }
}

/// A failed block I/O. Every variant names the device and the request.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system reported an error.
    #[error("{dev}: {op} of {len} bytes at offset {offset} failed: {source}")]
    Io {
        /// Device identity.
        dev: String,
        /// Operation.
        op: IoOp,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request reaches past the end of the device.
    #[error("{dev}: {op} of {len} bytes at offset {offset} is outside the device ({size} bytes)")]
    OutOfRange {
        /// Device identity.
        dev: String,
        /// Operation.
        op: IoOp,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Device size.
        size: u64,
    },
    /// The request is not aligned to the device's sector size.
    #[error("{dev}: {op} of {len} bytes at offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        /// Device identity.
        dev: String,
        /// Operation.
        op: IoOp,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Required alignment.
        align: u64,
    },
    /// The whole device has failed or is gone; no further I/O to it will succeed.
    #[error("{dev}: device failed: {reason}")]
    DeviceFailed {
        /// Device identity.
        dev: String,
        /// Why.
        reason: String,
    },
    /// Simulated power loss: the device is off until it is reopened.
    #[error("{dev}: power lost")]
    PowerLost {
        /// Device identity.
        dev: String,
    },
    /// The backend cannot do this operation.
    #[error("{dev}: {op} is not supported: {reason}")]
    Unsupported {
        /// Device identity.
        dev: String,
        /// Operation.
        op: IoOp,
        /// Why.
        reason: String,
    },
}

impl IoError {
    /// True when the device as a whole should be considered failed (as opposed to one bad
    /// request or sector): the RAID layer then fails the member instead of repairing a sector.
    #[must_use]
    pub fn is_device_failure(&self) -> bool {
        match self {
            Self::DeviceFailed { .. } | Self::PowerLost { .. } => true,
            Self::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENODEV | libc::ENXIO | libc::ESHUTDOWN | libc::ENOMEDIUM)
            ),
            Self::OutOfRange { .. } | Self::Misaligned { .. } | Self::Unsupported { .. } => false,
        }
    }

    /// True for simulated power loss (tests stop the world at this point).
    #[must_use]
    pub fn is_power_loss(&self) -> bool {
        matches!(self, Self::PowerLost { .. })
    }

    pub(crate) fn os(dev: &str, op: IoOp, offset: u64, len: u64, source: std::io::Error) -> Self {
        Self::Io {
            dev: dev.to_owned(),
            op,
            offset,
            len,
            source,
        }
    }
}
