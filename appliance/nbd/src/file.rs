//! [`FileExport`]: positioned I/O on a regular file or block device.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use thiserror::Error;

use crate::export::{
    BlockExport, BlockSizes, BlockSizesError, ExportError, write_zeroes_by_writing,
};

/// Behaviour of a [`FileExport`].
#[derive(Debug, Clone)]
pub struct FileExportOptions {
    /// Open read-only and refuse writes.
    pub read_only: bool,
    /// Block size constraints to advertise (and that the server enforces).
    pub block_sizes: BlockSizes,
    /// See [`BlockExport::inline_io_limit`]. `None` picks automatically: 64 KiB when the
    /// file lives on tmpfs (every access is a memory copy), 0 otherwise. Larger requests
    /// still go to the I/O threads so several of them are copied in parallel.
    pub inline_io_limit: Option<u32>,
}

impl Default for FileExportOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            block_sizes: BlockSizes::DEFAULT,
            inline_io_limit: None,
        }
    }
}

/// Opening a [`FileExport`] failed.
#[derive(Debug, Error)]
pub enum FileExportError {
    /// The file could not be opened.
    #[error("cannot open {path} for export: {source}")]
    Open {
        /// Path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The size could not be determined.
    #[error("cannot determine the size of {path}: {source}")]
    Size {
        /// Path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The block sizes break the NBD rules.
    #[error("invalid block sizes for {path}: {source}")]
    BlockSizes {
        /// Path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: BlockSizesError,
    },
}

/// Exports a file (or block device) with `pread`/`pwrite`. All connections share one file
/// descriptor and the kernel's page cache, so multi-conn is safe: `fdatasync` on any
/// connection covers writes completed on all of them.
#[derive(Debug)]
pub struct FileExport {
    file: File,
    path: PathBuf,
    size: u64,
    options: FileExportOptions,
    inline_io_limit: u32,
}

impl FileExport {
    /// Opens `path`. Its current size is the export size.
    pub fn open(
        path: impl AsRef<Path>,
        options: FileExportOptions,
    ) -> Result<Self, FileExportError> {
        let path = path.as_ref().to_path_buf();
        options
            .block_sizes
            .validate()
            .map_err(|source| FileExportError::BlockSizes {
                path: path.clone(),
                source,
            })?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(&path)
            .map_err(|source| FileExportError::Open {
                path: path.clone(),
                source,
            })?;
        // Seeking to the end works for block devices too, where metadata().len() is 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| FileExportError::Size {
                path: path.clone(),
                source,
            })?;
        let inline_io_limit = options.inline_io_limit.unwrap_or_else(|| {
            let on_tmpfs = nix::sys::statfs::fstatfs(&file)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
            if on_tmpfs { 64 * 1024 } else { 0 }
        });
        Ok(Self {
            file,
            path,
            size,
            options,
            inline_io_limit,
        })
    }

    /// Path the export was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ExportError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(ExportError::InvalidArgument(format!(
                "range {offset}+{len} is outside {} ({} bytes)",
                self.path.display(),
                self.size
            ))),
        }
    }

    fn check_writable(&self) -> Result<(), ExportError> {
        if self.options.read_only {
            Err(ExportError::PermissionDenied(format!(
                "{} is exported read-only",
                self.path.display()
            )))
        } else {
            Ok(())
        }
    }

    /// `fallocate` on the range; `Ok(false)` if the file system cannot do it.
    fn try_fallocate(
        &self,
        flags: FallocateFlags,
        offset: u64,
        len: u64,
    ) -> Result<bool, ExportError> {
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(ExportError::Overflow(format!(
                "range {offset}+{len} does not fit in off_t"
            )));
        };
        match fallocate(&self.file, flags, off, l) {
            Ok(()) => Ok(true),
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL | Errno::ENODEV) => Ok(false),
            Err(e) => Err(ExportError::Io(std::io::Error::from(e))),
        }
    }
}

impl BlockExport for FileExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        self.options.block_sizes
    }

    fn read_only(&self) -> bool {
        self.options.read_only
    }

    fn can_trim(&self) -> bool {
        !self.options.read_only
    }

    fn can_write_zeroes(&self) -> bool {
        !self.options.read_only
    }

    fn can_multi_conn(&self) -> bool {
        true
    }

    fn inline_io_limit(&self) -> u32 {
        self.inline_io_limit
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError> {
        self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)?;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, data.len() as u64)?;
        self.file.write_all_at(data, offset)?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ExportError> {
        if !self.options.read_only {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, len)?;
        // Trim is a hint: a file system without hole punching simply keeps the data.
        let punched = self.try_fallocate(
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )?;
        if punched && fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        self.check_writable()?;
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let flags = if may_trim {
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        } else {
            FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        };
        if self.try_fallocate(flags, offset, len)? {
            if fua {
                self.file.sync_data()?;
            }
            return Ok(());
        }
        write_zeroes_by_writing(self, offset, len, fua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 253).unwrap()).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn read_write_flush() {
        let f = temp_file(1 << 20);
        let e = FileExport::open(f.path(), FileExportOptions::default()).unwrap();
        assert_eq!(e.size(), 1 << 20);
        let mut buf = vec![0u8; 300];
        e.read(1000, &mut buf).unwrap();
        assert_eq!(buf[0], u8::try_from(1000 % 253).unwrap());
        e.write(5, &[7u8; 10], true).unwrap();
        e.flush().unwrap();
        e.read(0, &mut buf[..20]).unwrap();
        assert_eq!(&buf[5..15], &[7u8; 10]);
        assert!(e.read((1 << 20) - 1, &mut buf[..2]).is_err());
        assert!(e.write(u64::MAX, &[1], false).is_err());
    }

    #[test]
    fn zeroes_and_trim_read_back_as_zero() {
        let f = temp_file(1 << 20);
        let e = FileExport::open(f.path(), FileExportOptions::default()).unwrap();
        for (may_trim, off) in [(true, 4096u64), (false, 65536)] {
            e.write_zeroes(off, 8192, may_trim, false).unwrap();
            let mut buf = vec![1u8; 8192];
            e.read(off, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0));
        }
        e.trim(200_000, 4096, true).unwrap();
        assert_eq!(e.size(), 1 << 20);
    }

    #[test]
    fn read_only_export() {
        let f = temp_file(4096);
        let e = FileExport::open(
            f.path(),
            FileExportOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(e.read_only());
        assert!(matches!(
            e.write(0, &[1], false),
            Err(ExportError::PermissionDenied(_))
        ));
        assert!(!e.can_trim());
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err =
            FileExport::open("/nonexistent/dw-nbd-test", FileExportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dw-nbd-test"));
    }
}
