//! Files and raw block devices.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::aligned::{AlignedBuf, is_aligned};
use crate::sys::{self, RawIo, uring_available, uring_rw};
use crate::{BlockDev, DevInfo, IoError, IoOp, UringTarget};

/// How a [`DiskDev`] submits its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Positioned `pread`/`pwrite` on the calling thread.
    Sync,
    /// io_uring, one ring per calling thread; batches across devices go in flight together.
    Uring,
}

/// How to open a [`DiskDev`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// Bypass the page cache (`O_DIRECT`). `None` chooses: yes for block devices, no for files.
    pub direct: Option<bool>,
    /// Open read-only; writes then fail.
    pub read_only: bool,
    /// Submit through io_uring when the kernel allows it (falls back to positioned I/O, logged).
    pub use_uring: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            direct: None,
            read_only: false,
            use_uring: true,
        }
    }
}

/// Why a [`DiskDev`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenDiskError {
    /// open(2) or stat(2) failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Querying the block device's geometry failed.
    #[error("cannot read the geometry of {path}: {source}")]
    Geometry {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file or a block device.
    #[error("{path} is neither a regular file nor a block device")]
    NotADisk {
        /// The path.
        path: PathBuf,
    },
    /// The device is smaller than one sector.
    #[error("{path} is empty ({size} bytes)")]
    Empty {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// A regular file or a raw block device.
#[derive(Debug)]
pub struct DiskDev {
    file: File,
    info: DevInfo,
    direct: bool,
    engine: Engine,
    read_only: bool,
}

impl DiskDev {
    /// Opens `path`. The size is fixed at open: a file is never extended by writes.
    ///
    /// # Errors
    /// [`OpenDiskError`] saying what failed.
    pub fn open(path: &Path, opts: DiskOptions) -> Result<Self, OpenDiskError> {
        let open_err = |source| OpenDiskError::Open {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(OpenDiskError::NotADisk {
                path: path.to_owned(),
            });
        }
        let want_direct = opts.direct.unwrap_or(is_block);
        let mut file = open_file(path, opts.read_only, want_direct);
        let mut direct = want_direct;
        if want_direct && matches!(&file, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
            // tmpfs and some filesystems refuse O_DIRECT: use the page cache and say so.
            tracing::warn!(
                "{}: O_DIRECT not supported here, using buffered I/O",
                path.display()
            );
            file = open_file(path, opts.read_only, false);
            direct = false;
        }
        let file = file.map_err(open_err)?;
        let (size, logical, physical) = if is_block {
            let geo = |source| OpenDiskError::Geometry {
                path: path.to_owned(),
                source,
            };
            let size = sys::block_device_size(file.as_raw_fd()).map_err(geo)?;
            let (l, p) = sys::block_device_sectors(file.as_raw_fd()).map_err(geo)?;
            (size, l.max(512), p.max(l).max(512))
        } else {
            (meta.len(), 512, 4096)
        };
        let size = size - size % u64::from(logical);
        if size == 0 {
            return Err(OpenDiskError::Empty {
                path: path.to_owned(),
                size,
            });
        }
        let engine = if opts.use_uring && uring_available() {
            Engine::Uring
        } else {
            Engine::Sync
        };
        Ok(Self {
            file,
            info: DevInfo {
                id: path.display().to_string(),
                size,
                logical_sector: logical,
                physical_sector: physical,
            },
            direct,
            engine,
            read_only: opts.read_only,
        })
    }

    /// Whether the page cache is bypassed.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The engine in use.
    #[must_use]
    pub fn engine(&self) -> Engine {
        self.engine
    }

    fn err(&self, op: IoOp, offset: u64, len: usize, e: std::io::Error) -> IoError {
        IoError::os(&self.info.id, op, offset, len as u64, e)
    }

    fn needs_bounce(&self, buf: &[u8]) -> bool {
        self.direct && !is_aligned(buf, self.info.logical_sector as usize)
    }

    fn raw_read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if self.engine == Engine::Uring {
            let io = [RawIo {
                fd: self.file.as_raw_fd(),
                offset,
                ptr: buf.as_mut_ptr(),
                len: buf.len(),
                write: false,
                fsync: false,
            }];
            let mut res = [Ok(())];
            if uring_rw(&io, &mut res).is_ok() {
                let [r] = res;
                return r;
            }
        }
        self.file.read_exact_at(buf, offset)
    }

    fn raw_write(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.engine == Engine::Uring {
            let io = [RawIo {
                fd: self.file.as_raw_fd(),
                offset,
                ptr: buf.as_ptr().cast_mut(),
                len: buf.len(),
                write: true,
                fsync: false,
            }];
            let mut res = [Ok(())];
            if uring_rw(&io, &mut res).is_ok() {
                let [r] = res;
                return r;
            }
        }
        self.file.write_all_at(buf, offset)
    }
}

fn open_file(path: &Path, read_only: bool, direct: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(!read_only);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

impl BlockDev for DiskDev {
    fn info(&self) -> &DevInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Read, offset, buf.len() as u64)?;
        if self.needs_bounce(buf) {
            let mut b = AlignedBuf::zeroed(buf.len());
            self.raw_read(&mut b, offset)
                .map_err(|e| self.err(IoOp::Read, offset, buf.len(), e))?;
            buf.copy_from_slice(&b);
            return Ok(());
        }
        self.raw_read(buf, offset)
            .map_err(|e| self.err(IoOp::Read, offset, buf.len(), e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Write, offset, buf.len() as u64)?;
        if self.read_only {
            return Err(self.err(
                IoOp::Write,
                offset,
                buf.len(),
                std::io::Error::from_raw_os_error(libc::EROFS),
            ));
        }
        if self.needs_bounce(buf) {
            let b = AlignedBuf::from_slice(buf);
            return self
                .raw_write(&b, offset)
                .map_err(|e| self.err(IoOp::Write, offset, buf.len(), e));
        }
        self.raw_write(buf, offset)
            .map_err(|e| self.err(IoOp::Write, offset, buf.len(), e))
    }

    fn flush(&self) -> Result<(), IoError> {
        self.file
            .sync_data()
            .map_err(|e| self.err(IoOp::Flush, 0, 0, e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.info.check(IoOp::Discard, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let to_off =
            |v: u64| i64::try_from(v).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
        let io_err = |e: std::io::Error| IoError::os(&self.info.id, IoOp::Discard, offset, len, e);
        let (o, l) = (
            to_off(offset).map_err(io_err)?,
            to_off(len).map_err(io_err)?,
        );
        // PUNCH_HOLE works on files and (since Linux 4.9) on block devices, where it is a
        // zeroing discard: the range is guaranteed to read back as zeros.
        nix::fcntl::fallocate(
            &self.file,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
        .map_err(|e| io_err(std::io::Error::from(e)))
    }

    fn uring_target(&self) -> Option<UringTarget> {
        (self.engine == Engine::Uring && !self.read_only).then(|| UringTarget {
            fd: self.file.as_raw_fd(),
            needs_aligned_buffers: self.direct,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoBuf, IoReq, run_batch};

    fn temp_disk(size: u64, opts: DiskOptions) -> (tempfile::TempDir, DiskDev) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.img");
        File::create(&path)
            .and_then(|f| f.set_len(size))
            .expect("create image");
        let dev = DiskDev::open(&path, opts).expect("open");
        (dir, dev)
    }

    #[test]
    fn file_roundtrip_all_engines() {
        for use_uring in [false, true] {
            for direct in [Some(false), Some(true)] {
                let (_d, dev) = temp_disk(
                    1 << 20,
                    DiskOptions {
                        direct,
                        read_only: false,
                        use_uring,
                    },
                );
                let data: Vec<u8> = (0..8192u32).map(|i| (i % 251).to_le_bytes()[0]).collect();
                dev.write_at(&data, 4096).expect("write");
                dev.flush().expect("flush");
                let mut back = vec![0u8; 8192];
                dev.read_at(&mut back, 4096).expect("read");
                assert_eq!(back, data, "engine uring={use_uring} direct={direct:?}");
            }
        }
    }

    #[test]
    fn bounds_and_alignment_are_errors() {
        let (_d, dev) = temp_disk(1 << 16, DiskOptions::default());
        let mut b = vec![0u8; 4096];
        assert!(matches!(
            dev.read_at(&mut b, 1 << 16),
            Err(IoError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.read_at(&mut b[..100], 0),
            Err(IoError::Misaligned { .. })
        ));
        assert!(matches!(
            dev.write_at(&b, u64::MAX - 100),
            Err(IoError::Misaligned { .. } | IoError::OutOfRange { .. })
        ));
    }

    #[test]
    fn discard_reads_back_zero() {
        let (_d, dev) = temp_disk(1 << 20, DiskOptions::default());
        dev.write_at(&vec![0xAB; 65536], 0).expect("write");
        dev.discard(4096, 8192).expect("discard");
        let mut b = vec![0u8; 65536];
        dev.read_at(&mut b, 0).expect("read");
        assert!(b[..4096].iter().all(|&x| x == 0xAB));
        assert!(b[4096..12288].iter().all(|&x| x == 0));
        assert!(b[12288..].iter().all(|&x| x == 0xAB));
    }

    #[test]
    fn batch_across_devices() {
        let opts = DiskOptions {
            direct: Some(true),
            read_only: false,
            use_uring: true,
        };
        let (_d1, a) = temp_disk(1 << 20, opts);
        let (_d2, b) = temp_disk(1 << 20, opts);
        let wa = AlignedBuf::from_slice(&[1u8; 8192]);
        let wb = AlignedBuf::from_slice(&[2u8; 4096]);
        let unaligned = vec![3u8; 4096];
        let mut reqs = vec![
            IoReq {
                dev: &a,
                offset: 0,
                buf: IoBuf::Write(&wa),
            },
            IoReq {
                dev: &b,
                offset: 8192,
                buf: IoBuf::Write(&wb),
            },
            IoReq {
                dev: &b,
                offset: 0,
                buf: IoBuf::Write(&unaligned),
            },
            IoReq {
                dev: &a,
                offset: 1 << 20,
                buf: IoBuf::Write(&wb),
            },
        ];
        let res = run_batch(&mut reqs);
        assert!(res[0].is_ok() && res[1].is_ok() && res[2].is_ok());
        assert!(matches!(res[3], Err(IoError::OutOfRange { .. })));
        let mut ra = AlignedBuf::zeroed(8192);
        let mut rb = AlignedBuf::zeroed(12288);
        let mut reqs = vec![
            IoReq {
                dev: &a,
                offset: 0,
                buf: IoBuf::Read(&mut ra),
            },
            IoReq {
                dev: &b,
                offset: 0,
                buf: IoBuf::Read(&mut rb),
            },
        ];
        assert!(run_batch(&mut reqs).iter().all(Result::is_ok));
        assert!(ra.iter().all(|&x| x == 1));
        assert!(rb[..4096].iter().all(|&x| x == 3));
        assert!(rb[4096..8192].iter().all(|&x| x == 0));
        assert!(rb[8192..].iter().all(|&x| x == 2));
    }
}
