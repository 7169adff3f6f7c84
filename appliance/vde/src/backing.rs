//! What a VDE lives on: a RAID array (with redundancy to heal from) or a plain device or file.

use std::sync::Arc;

use dw_blockdev::{BlockDev, IoError};
use dw_raid::Array;

/// Layout facts the VDE needs from its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingGeometry {
    /// Usable bytes.
    pub size: u64,
    /// Data writes should come in whole multiples of this, aligned to `stripe_base`.
    pub stripe_bytes: u64,
    /// Where the first stripe starts (RAID-Z: the end of its small-write region).
    pub stripe_base: u64,
    /// `[0, small_write_end)` accepts any 4 KiB-aligned write; beyond it only whole stripes
    /// when `full_stripe_only`.
    pub small_write_end: u64,
    /// RAID-Z: only whole stripes beyond `small_write_end`.
    pub full_stripe_only: bool,
}

/// A device a VDE can live on.
pub trait Backing: Send + Sync + std::fmt::Debug {
    /// The device for reads and writes.
    fn dev(&self) -> &dyn BlockDev;

    /// Its geometry.
    fn geometry(&self) -> BackingGeometry;

    /// Other reconstructions of `[off, off + len)` (from redundancy), for self-heal. Empty when
    /// the device has no redundancy.
    ///
    /// # Errors
    /// I/O errors.
    fn alternatives(&self, off: u64, len: u64) -> Result<Vec<Vec<u8>>, IoError>;

    /// Rewrites `[off, off + good.len())` consistently with `good` (after self-heal found it).
    ///
    /// # Errors
    /// I/O errors.
    fn repair(&self, off: u64, good: &[u8]) -> Result<(), IoError>;
}

/// A plain device or file: no redundancy.
#[derive(Debug)]
pub struct PlainBacking {
    dev: Arc<dyn BlockDev>,
    stripe: u64,
}

impl PlainBacking {
    /// Wraps a device; data goes in `stripe`-byte units (64 KiB is a good default).
    #[must_use]
    pub fn new(dev: Arc<dyn BlockDev>, stripe: u64) -> Self {
        Self {
            dev,
            stripe: stripe.max(4096),
        }
    }
}

impl Backing for PlainBacking {
    fn dev(&self) -> &dyn BlockDev {
        self.dev.as_ref()
    }

    fn geometry(&self) -> BackingGeometry {
        let size = self.dev.info().size;
        BackingGeometry {
            size,
            stripe_bytes: self.stripe,
            stripe_base: 0,
            small_write_end: size,
            full_stripe_only: false,
        }
    }

    fn alternatives(&self, _off: u64, _len: u64) -> Result<Vec<Vec<u8>>, IoError> {
        Ok(Vec::new())
    }

    fn repair(&self, off: u64, good: &[u8]) -> Result<(), IoError> {
        self.dev.write_at(good, off)
    }
}

/// A RAID array.
#[derive(Debug)]
pub struct ArrayBacking {
    array: Arc<Array>,
}

impl ArrayBacking {
    /// Wraps an array.
    #[must_use]
    pub fn new(array: Arc<Array>) -> Self {
        Self { array }
    }

    /// The array.
    #[must_use]
    pub fn array(&self) -> &Arc<Array> {
        &self.array
    }
}

impl Backing for ArrayBacking {
    fn dev(&self) -> &dyn BlockDev {
        self.array.as_ref()
    }

    fn geometry(&self) -> BackingGeometry {
        let g = self.array.geometry();
        BackingGeometry {
            size: g.size,
            stripe_bytes: g.stripe_bytes,
            stripe_base: if g.full_stripe_only {
                g.small_write_end
            } else {
                0
            },
            small_write_end: g.small_write_end,
            full_stripe_only: g.full_stripe_only,
        }
    }

    fn alternatives(&self, off: u64, len: u64) -> Result<Vec<Vec<u8>>, IoError> {
        self.array
            .read_alternatives(off, len)
            .map(|v| v.into_iter().map(|a| a.data).collect())
            .map_err(|e| IoError::Unsupported {
                dev: self.array.name().to_owned(),
                op: dw_blockdev::IoOp::Read,
                reason: e.to_string(),
            })
    }

    fn repair(&self, off: u64, good: &[u8]) -> Result<(), IoError> {
        self.array
            .repair_range(off, good)
            .map_err(|e| IoError::Unsupported {
                dev: self.array.name().to_owned(),
                op: dw_blockdev::IoOp::Write,
                reason: e.to_string(),
            })
    }
}
