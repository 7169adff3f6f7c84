//! The appliance's block-device layer.
//!
//! Everything that stores bytes — a drive, a file standing in for one, a RAID array built on
//! them — is a [`BlockDev`]: positioned, sector-aligned reads and writes, a flush that makes every
//! completed write durable, and a discard that deallocates a range so that it reads back as zeros.
//!
//! Backends:
//! - [`DiskDev`]: a regular file or a raw block device. Raw devices use `O_DIRECT` and submit
//!   through io_uring (one ring per calling thread); where io_uring is not available the backend
//!   falls back to positioned I/O and says so once in the log.
//! - [`MemDev`]: sparse memory, for tests and simulations.
//! - [`FaultDev`]: wraps another device and injects faults — failed devices, failed reads or
//!   writes, flipped bits, torn writes, and power cuts that lose whatever was written since the
//!   last flush — all driven by a seed so a failing case reproduces exactly.
//!
//! Several devices' I/O can be issued together with [`run_batch`]; on io_uring-capable devices
//! the whole batch is in flight at once, which is how the RAID layer writes a stripe to all its
//! members in parallel without a thread per member.

mod aligned;
mod batch;
mod disk;
mod error;
mod fault;
mod mem;
mod sys;

pub use aligned::AlignedBuf;
pub use batch::{IoBuf, IoReq, run_batch, run_flush};
pub use disk::{DiskDev, DiskOptions, Engine, OpenDiskError};
pub use error::{IoError, IoOp};
pub use fault::{FaultConfig, FaultDev, FaultHandle, FaultStats, PowerDomain, Rule};
pub use mem::MemDev;

use std::fmt;

/// The alignment every buffer handed to an `O_DIRECT` device must have, and the unit the RAID
/// layer and everything above it do I/O in.
pub const IO_ALIGN: usize = 4096;

/// What a block device is: its identity and geometry. Fixed for the lifetime of the handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    /// A stable, human-readable identity: a path, a by-id link, or a test name.
    pub id: String,
    /// Usable size in bytes (a multiple of `logical_sector`).
    pub size: u64,
    /// The smallest unit the device can address; offsets and lengths must be multiples of it.
    pub logical_sector: u32,
    /// The unit the device writes atomically; smaller writes cost a read-modify-write inside it.
    pub physical_sector: u32,
}

impl DevInfo {
    /// Checks that `[offset, offset + len)` is inside the device and sector-aligned.
    ///
    /// # Errors
    /// [`IoError::OutOfRange`] or [`IoError::Misaligned`] describing the request.
    pub fn check(&self, op: IoOp, offset: u64, len: u64) -> Result<(), IoError> {
        let sector = u64::from(self.logical_sector);
        if !offset.is_multiple_of(sector) || !len.is_multiple_of(sector) {
            return Err(IoError::Misaligned {
                dev: self.id.clone(),
                op,
                offset,
                len,
                align: sector,
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(IoError::OutOfRange {
                dev: self.id.clone(),
                op,
                offset,
                len,
                size: self.size,
            }),
        }
    }
}

/// One block device. Implementations are thread-safe: any number of threads may issue I/O at
/// once; ordering between overlapping concurrent requests is the caller's business (as with a
/// real disk).
///
/// Contract:
/// - `read_at`/`write_at` transfer exactly `buf.len()` bytes or fail; offsets and lengths are
///   multiples of [`DevInfo::logical_sector`].
/// - A write that returned `Ok` may still be in a volatile cache; it is durable once a later
///   `flush` returns `Ok`.
/// - `discard` deallocates the range; afterwards it reads back as zeros.
pub trait BlockDev: Send + Sync + fmt::Debug {
    /// Identity and geometry.
    fn info(&self) -> &DevInfo;

    /// Reads `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// An [`IoError`] describing what failed.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError>;

    /// Writes `buf` at `offset`.
    ///
    /// # Errors
    /// An [`IoError`] describing what failed.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError>;

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// An [`IoError`]; after a failed flush the durability of earlier writes is unknown.
    fn flush(&self) -> Result<(), IoError>;

    /// Deallocates `[offset, offset + len)`; it reads back as zeros afterwards.
    ///
    /// # Errors
    /// An [`IoError`], including when the backend cannot deallocate.
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError>;

    /// The file descriptor behind this device when its reads and writes may be submitted
    /// directly through io_uring by [`run_batch`]; `None` for devices that must be called.
    fn uring_target(&self) -> Option<UringTarget> {
        None
    }
}

/// How [`run_batch`] may submit I/O for a device straight to io_uring.
#[derive(Debug, Clone, Copy)]
pub struct UringTarget {
    /// The open file descriptor; valid while the device lives.
    pub fd: std::os::fd::RawFd,
    /// Buffers must be aligned to [`IO_ALIGN`] in memory (the device was opened `O_DIRECT`).
    pub needs_aligned_buffers: bool,
}

/// Reads and returns a whole range (convenience for tests and tools).
///
/// # Errors
/// The device's read error.
pub fn read_vec(dev: &dyn BlockDev, offset: u64, len: usize) -> Result<Vec<u8>, IoError> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset)?;
    Ok(buf)
}
