//! NBD exports of VDE volumes: every volume of an unlocked VDE is an export of the same name.
//!
//! Requests go through the VDE's gate, so locking the VDE (or stopping the daemon) waits for
//! requests in flight and later requests fail with `ESHUTDOWN`. Clients are told the volume's
//! block size as the minimum (`NBD_INFO_BLOCK_SIZE`); a sub-block write is a read-modify-write
//! of that block, serialised per block so two clients writing different sectors of one block
//! cannot lose each other's data.

use std::sync::Arc;

use dw_nbd::{BlockExport, BlockSizes, ExportCatalog, ExportError, ExportInfo};
use dw_vde::{VdeError, Volume};
use parking_lot::Mutex;

use crate::appliance::{Appliance, OpenVde};
use crate::error::OpError;

/// Locks for sub-block writes, by block number modulo this.
const RMW_LOCKS: usize = 64;

fn export_err(e: VdeError) -> ExportError {
    match e {
        VdeError::OutOfRange { .. } | VdeError::Invalid(_) => {
            ExportError::InvalidArgument(e.to_string())
        }
        VdeError::NoSpace(_) | VdeError::QuotaExceeded(_) => ExportError::NoSpace(e.to_string()),
        VdeError::ReadOnly(_) | VdeError::Retained(_) | VdeError::Policy(_) => {
            ExportError::PermissionDenied(e.to_string())
        }
        e => ExportError::Io(std::io::Error::other(e.to_string())),
    }
}

fn gate_err(e: OpError) -> ExportError {
    match e {
        OpError::Locked(m) => ExportError::ShuttingDown(m),
        e => ExportError::Io(std::io::Error::other(e.to_string())),
    }
}

/// One volume as an export.
pub struct VolumeExport {
    vde: Arc<OpenVde>,
    /// Creation time of the container record: a volume deleted and created again is new.
    created: u64,
    vol: Volume,
    rmw: [Mutex<()>; RMW_LOCKS],
}

impl std::fmt::Debug for VolumeExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeExport")
            .field("volume", &self.vol.name())
            .finish_non_exhaustive()
    }
}

impl VolumeExport {
    fn run<T>(&self, f: impl FnOnce(&Volume) -> Result<T, VdeError>) -> Result<T, ExportError> {
        self.vde
            .with(|_| Ok(f(&self.vol)))
            .map_err(gate_err)?
            .map_err(export_err)
    }

    fn flush_volume(&self) -> Result<(), ExportError> {
        self.run(Volume::flush)
    }
}

impl BlockExport for VolumeExport {
    fn size(&self) -> u64 {
        self.vol.size()
    }

    fn block_sizes(&self) -> BlockSizes {
        let bs = u32::try_from(self.vol.block_size()).unwrap_or(4096);
        BlockSizes {
            // Smaller writes are read-modify-written by the export (below).
            minimum: bs.min(4096),
            preferred: bs.max(4096),
            maximum: 32 << 20,
        }
    }

    fn can_trim(&self) -> bool {
        true
    }

    fn can_write_zeroes(&self) -> bool {
        true
    }

    fn can_multi_conn(&self) -> bool {
        // Every connection shares this VDE's one volume handle: a flush on any covers all.
        true
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError> {
        self.run(|v| v.read_at(buf, offset))
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ExportError> {
        let bs = self.vol.block_size().max(1);
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        let aligned = offset.is_multiple_of(bs) && len % bs == 0;
        if aligned {
            self.run(|v| v.write_at(data, offset))?;
        } else {
            // Blocks touched partially: the first and the last. Lock them in order.
            let first = offset / bs;
            let last = (offset + len.max(1) - 1) / bs;
            let a = usize::try_from(first % RMW_LOCKS as u64).unwrap_or(0);
            let b = usize::try_from(last % RMW_LOCKS as u64).unwrap_or(0);
            let (lo, hi) = (a.min(b), a.max(b));
            let _g1 = self.rmw[lo].lock();
            let _g2 = (hi != lo).then(|| self.rmw[hi].lock());
            self.run(|v| v.write_at(data, offset))?;
        }
        if fua {
            self.flush_volume()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ExportError> {
        self.flush_volume()
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), ExportError> {
        self.run(|v| v.discard(offset, len))?;
        if fua {
            self.flush_volume()?;
        }
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _may_trim: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        // A discarded range reads as zeros and frees space: always the better choice here.
        self.trim(offset, len, fua)
    }
}

/// Every volume of every unlocked VDE.
pub struct VolumeCatalog {
    app: Arc<Appliance>,
    /// One export per volume, shared by its connections (multi-conn needs one cache).
    open: Mutex<std::collections::HashMap<String, Arc<VolumeExport>>>,
}

impl std::fmt::Debug for VolumeCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeCatalog").finish_non_exhaustive()
    }
}

impl VolumeCatalog {
    /// Over `app`.
    #[must_use]
    pub fn new(app: Arc<Appliance>) -> Self {
        Self {
            app,
            open: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl ExportCatalog for VolumeCatalog {
    fn list(&self) -> Vec<ExportInfo> {
        self.app
            .container_records()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.kind == "volume" && self.app.open_vde(&r.vde).is_ok())
            .map(|r| ExportInfo {
                description: format!("DataWarehouse volume {}", r.name),
                name: r.name,
            })
            .collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn BlockExport>> {
        let (rec, vde) = self.app.container_vde(name).ok()?;
        if rec.kind != "volume" {
            return None;
        }
        let mut open = self.open.lock();
        if let Some(e) = open.get(name) {
            // Reuse while it belongs to the VDE session now unlocked.
            if Arc::ptr_eq(&e.vde, &vde) && e.created == rec.created {
                return Some(Arc::clone(e) as Arc<dyn BlockExport>);
            }
        }
        let vol = vde.with(|v| Ok(v.volume(name)?)).ok()?;
        let e = Arc::new(VolumeExport {
            vde,
            created: rec.created,
            vol,
            rmw: std::array::from_fn(|_| Mutex::new(())),
        });
        open.insert(name.to_owned(), Arc::clone(&e));
        Some(e)
    }
}
