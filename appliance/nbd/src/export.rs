//! What the server serves: the blocking [`BlockExport`] trait, its errors, and the
//! [`ExportCatalog`] that maps export names to exports.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use crate::proto::errno;

/// Block size constraints of an export, advertised with `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Smallest addressable unit: every request offset and length must be a multiple.
    /// A power of two between 1 and 64 KiB. With a minimum above 1, clients that do not
    /// ask for block sizes are refused (the protocol's `NBD_REP_ERR_BLOCK_SIZE_REQD`).
    pub minimum: u32,
    /// Size the export handles most efficiently (power of two, at least
    /// `max(minimum, 512)`).
    pub preferred: u32,
    /// Largest read or write payload the export accepts in one request. The server
    /// advertises the smaller of this and `ServerConfig::max_request_bytes`.
    pub maximum: u32,
}

impl BlockSizes {
    /// Byte-granular export with 4 KiB preferred I/O and 32 MiB maximum payload.
    pub const DEFAULT: Self = Self {
        minimum: 1,
        preferred: 4096,
        maximum: 32 << 20,
    };

    /// Checks the rules of the NBD specification for block size constraints.
    pub fn validate(&self) -> Result<(), BlockSizesError> {
        let Self {
            minimum,
            preferred,
            maximum,
        } = *self;
        if !minimum.is_power_of_two() || minimum > 64 * 1024 {
            return Err(BlockSizesError::Minimum(minimum));
        }
        if !preferred.is_power_of_two() || preferred < minimum.max(512) {
            return Err(BlockSizesError::Preferred { preferred, minimum });
        }
        if maximum < preferred || maximum % minimum != 0 {
            return Err(BlockSizesError::Maximum {
                maximum,
                minimum,
                preferred,
            });
        }
        Ok(())
    }
}

impl Default for BlockSizes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A [`BlockSizes`] value breaks the NBD rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockSizesError {
    /// The minimum block size is not a power of two in 1..=65536.
    #[error("minimum block size {0} must be a power of two between 1 and 65536")]
    Minimum(u32),
    /// The preferred block size is not a power of two at least `max(minimum, 512)`.
    #[error(
        "preferred block size {preferred} must be a power of two of at least max({minimum}, 512)"
    )]
    Preferred {
        /// Preferred size given.
        preferred: u32,
        /// Minimum size given.
        minimum: u32,
    },
    /// The maximum is smaller than the preferred size or not a multiple of the minimum.
    #[error(
        "maximum block size {maximum} must be at least the preferred size {preferred} and a multiple of the minimum {minimum}"
    )]
    Maximum {
        /// Maximum size given.
        maximum: u32,
        /// Minimum size given.
        minimum: u32,
        /// Preferred size given.
        preferred: u32,
    },
}

/// Why an export operation failed. Each variant maps to one NBD error value
/// ([`ExportError::nbd_errno`]); the text is for the server's log.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The backing store failed (`EIO`).
    #[error("I/O error in the backing store: {0}")]
    Io(#[source] std::io::Error),
    /// The request is not valid for this export (`EINVAL`).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The volume has no space left, or a quota is exhausted (`ENOSPC`).
    #[error("no space left for the volume: {0}")]
    NoSpace(String),
    /// The export refuses the operation, for example a write to a read-only
    /// or WORM-protected volume (`EPERM`).
    #[error("operation not permitted: {0}")]
    PermissionDenied(String),
    /// The server could not allocate memory for the request (`ENOMEM`).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A value is too large to represent (`EOVERFLOW`).
    #[error("value too large: {0}")]
    Overflow(String),
    /// The export does not implement the operation (`ENOTSUP`).
    #[error("operation not supported by this export: {0}")]
    NotSupported(String),
    /// The export is going away (`ESHUTDOWN`).
    #[error("export is shutting down: {0}")]
    ShuttingDown(String),
}

impl ExportError {
    /// The NBD error value sent to the client.
    pub fn nbd_errno(&self) -> u32 {
        match self {
            Self::Io(e) => errno_of_io(e),
            Self::InvalidArgument(_) => errno::EINVAL,
            Self::NoSpace(_) => errno::ENOSPC,
            Self::PermissionDenied(_) => errno::EPERM,
            Self::OutOfMemory(_) => errno::ENOMEM,
            Self::Overflow(_) => errno::EOVERFLOW,
            Self::NotSupported(_) => errno::ENOTSUP,
            Self::ShuttingDown(_) => errno::ESHUTDOWN,
        }
    }
}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Maps an operating-system error to the NBD error set, as the specification recommends
/// (`EDQUOT` and `EFBIG` become `ENOSPC`, `EROFS` becomes `EPERM`, everything unknown `EIO`).
fn errno_of_io(e: &std::io::Error) -> u32 {
    use nix::errno::Errno;
    let Some(code) = e.raw_os_error() else {
        return errno::EIO;
    };
    match Errno::from_raw(code) {
        Errno::EPERM | Errno::EACCES | Errno::EROFS => errno::EPERM,
        Errno::ENOMEM => errno::ENOMEM,
        Errno::EINVAL => errno::EINVAL,
        Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => errno::ENOSPC,
        Errno::EOVERFLOW => errno::EOVERFLOW,
        Errno::EOPNOTSUPP => errno::ENOTSUP,
        Errno::ESHUTDOWN => errno::ESHUTDOWN,
        _ => errno::EIO,
    }
}

/// A block device the server can export: a fixed-size range of bytes with blocking,
/// thread-safe positioned I/O. The server calls these methods from several threads at once
/// (tokio's blocking pool, or directly from a connection task when
/// [`BlockExport::inline_io_limit`] allows it).
///
/// The server has already checked every request against [`BlockExport::size`],
/// [`BlockExport::block_sizes`] and the capability methods before calling an operation, so
/// implementations see only in-range, aligned requests of at most the advertised maximum
/// payload; they still must not panic on anything else.
pub trait BlockExport: Send + Sync + 'static {
    /// Size in bytes. Must not change while connections are open.
    fn size(&self) -> u64;

    /// Block size constraints (see [`BlockSizes`]).
    fn block_sizes(&self) -> BlockSizes {
        BlockSizes::DEFAULT
    }

    /// Whether the export refuses writes (`NBD_FLAG_READ_ONLY`).
    fn read_only(&self) -> bool {
        false
    }

    /// Whether [`BlockExport::flush`] makes completed writes durable (`NBD_FLAG_SEND_FLUSH`).
    fn can_flush(&self) -> bool {
        true
    }

    /// Whether `fua = true` makes a single write durable before it returns (`NBD_FLAG_SEND_FUA`).
    fn can_fua(&self) -> bool {
        self.can_flush()
    }

    /// Whether [`BlockExport::trim`] is implemented (`NBD_FLAG_SEND_TRIM`).
    fn can_trim(&self) -> bool {
        false
    }

    /// Whether [`BlockExport::write_zeroes`] should be advertised (`NBD_FLAG_SEND_WRITE_ZEROES`).
    fn can_write_zeroes(&self) -> bool {
        false
    }

    /// Whether all connections share one cache, so a flush on one connection covers writes
    /// completed on every other (`NBD_FLAG_CAN_MULTI_CONN`).
    fn can_multi_conn(&self) -> bool {
        false
    }

    /// Whether the medium is rotational (`NBD_FLAG_ROTATIONAL`, a scheduling hint).
    fn is_rotational(&self) -> bool {
        false
    }

    /// Requests of at most this many bytes run directly on the connection's task instead of
    /// the blocking pool. Only return non-zero when reads and writes of that size finish in
    /// microseconds without sleeping (memory, a page-cache-resident file); a slow call here
    /// stalls every request of the connection. Flushes always go to the blocking pool.
    fn inline_io_limit(&self) -> u32 {
        0
    }

    /// Fills all of `buf` with the bytes at `offset`. On `Ok`, every byte of `buf` must have
    /// been written: the buffer is recycled between requests.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError>;

    /// Writes `data` at `offset`; with `fua`, the data is durable when this returns.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ExportError>;

    /// Makes every write that has completed so far durable.
    fn flush(&self) -> Result<(), ExportError>;

    /// Discards `len` bytes at `offset` (a hint; contents afterwards are unspecified).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), ExportError> {
        let _ = (offset, len, fua);
        Err(ExportError::NotSupported("trim".into()))
    }

    /// Makes `len` bytes at `offset` read as zeroes. With `may_trim` the export may
    /// deallocate the range; without it (the client set `NBD_CMD_FLAG_NO_HOLE`) the range
    /// must stay allocated. The default writes zero buffers.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        let _ = may_trim;
        write_zeroes_by_writing(self, offset, len, fua)
    }
}

/// Writes zeroes through [`BlockExport::write`] in 64 KiB pieces: the fallback for exports
/// without a cheaper way to zero a range.
pub fn write_zeroes_by_writing<E: BlockExport + ?Sized>(
    export: &E,
    offset: u64,
    len: u64,
    fua: bool,
) -> Result<(), ExportError> {
    static ZEROES: [u8; 64 * 1024] = [0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let step = (len - done).min(ZEROES.len() as u64);
        let step_usize = usize::try_from(step).unwrap_or(ZEROES.len());
        let last = done + step >= len;
        export.write(offset + done, &ZEROES[..step_usize], fua && last)?;
        done += step;
    }
    Ok(())
}

/// One entry of an export listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Name clients pass to select the export.
    pub name: String,
    /// Human-readable description (may be empty).
    pub description: String,
}

/// Maps export names to exports. The daemon implements this over its volumes.
pub trait ExportCatalog: Send + Sync + 'static {
    /// Exports to show for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<ExportInfo>;

    /// Opens the export called `name`; `None` if there is none. The empty name asks for the
    /// default export, which is the catalog's choice (or `None`). For `NBD_FLAG_CAN_MULTI_CONN`
    /// to be truthful, every connection to one name must get the same underlying export.
    fn open(&self, name: &str) -> Option<Arc<dyn BlockExport>>;

    /// Description of `name` for `NBD_INFO_DESCRIPTION`. The default searches [`Self::list`].
    fn describe(&self, name: &str) -> Option<String> {
        self.list()
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.description)
    }
}

/// A fixed set of named exports, for tests, benchmarks and simple deployments.
#[derive(Default)]
pub struct StaticCatalog {
    exports: BTreeMap<String, (String, Arc<dyn BlockExport>)>,
    default_export: Option<String>,
}

impl std::fmt::Debug for StaticCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCatalog")
            .field("exports", &self.exports.keys().collect::<Vec<_>>())
            .field("default_export", &self.default_export)
            .finish()
    }
}

impl StaticCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an export.
    #[must_use]
    pub fn with_export(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        export: Arc<dyn BlockExport>,
    ) -> Self {
        self.exports
            .insert(name.into(), (description.into(), export));
        self
    }

    /// Makes the empty export name select `name`.
    #[must_use]
    pub fn with_default(mut self, name: impl Into<String>) -> Self {
        self.default_export = Some(name.into());
        self
    }

    fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        match (&self.default_export, name.is_empty()) {
            (Some(d), true) => d.as_str(),
            _ => name,
        }
    }
}

impl ExportCatalog for StaticCatalog {
    fn list(&self) -> Vec<ExportInfo> {
        self.exports
            .iter()
            .map(|(name, (description, _))| ExportInfo {
                name: name.clone(),
                description: description.clone(),
            })
            .collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn BlockExport>> {
        self.exports
            .get(self.resolve(name))
            .map(|(_, e)| Arc::clone(e))
    }

    fn describe(&self, name: &str) -> Option<String> {
        self.exports.get(self.resolve(name)).map(|(d, _)| d.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_rules() {
        assert!(BlockSizes::DEFAULT.validate().is_ok());
        let ok = BlockSizes {
            minimum: 4096,
            preferred: 4096,
            maximum: 1 << 20,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            BlockSizes { minimum: 3, ..ok },
            BlockSizes {
                minimum: 128 * 1024,
                preferred: 128 * 1024,
                maximum: 1 << 20,
            },
            BlockSizes {
                minimum: 1,
                preferred: 256,
                maximum: 1 << 20,
            },
            BlockSizes {
                minimum: 4096,
                preferred: 2048,
                maximum: 1 << 20,
            },
            BlockSizes {
                minimum: 4096,
                preferred: 4096,
                maximum: 4096 * 3 + 1,
            },
            BlockSizes {
                minimum: 512,
                preferred: 8192,
                maximum: 4096,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn io_errors_map_to_nbd_errnos() {
        let e = |code| ExportError::Io(std::io::Error::from_raw_os_error(code)).nbd_errno();
        assert_eq!(e(nix::libc::ENOSPC), errno::ENOSPC);
        assert_eq!(e(nix::libc::EDQUOT), errno::ENOSPC);
        assert_eq!(e(nix::libc::EFBIG), errno::ENOSPC);
        assert_eq!(e(nix::libc::EROFS), errno::EPERM);
        assert_eq!(e(nix::libc::EOPNOTSUPP), errno::ENOTSUP);
        assert_eq!(e(nix::libc::EBADF), errno::EIO);
        assert_eq!(
            ExportError::Io(std::io::Error::other("x")).nbd_errno(),
            errno::EIO
        );
        assert_eq!(
            ExportError::NoSpace(String::new()).nbd_errno(),
            errno::ENOSPC
        );
        assert_eq!(
            ExportError::ShuttingDown(String::new()).nbd_errno(),
            errno::ESHUTDOWN
        );
    }
}
