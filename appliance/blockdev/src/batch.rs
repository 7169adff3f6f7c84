//! Issuing many I/Os — across devices — at once.

use crate::aligned::is_aligned;
use crate::sys::{RawIo, uring_rw};
use crate::{BlockDev, IoError, IoOp};

/// The buffer of one batched request.
#[derive(Debug)]
pub enum IoBuf<'a> {
    /// Read into this buffer.
    Read(&'a mut [u8]),
    /// Write this buffer.
    Write(&'a [u8]),
}

/// One request of a batch.
#[derive(Debug)]
pub struct IoReq<'a> {
    /// Target device.
    pub dev: &'a dyn BlockDev,
    /// Byte offset on the device.
    pub offset: u64,
    /// What to transfer.
    pub buf: IoBuf<'a>,
}

impl IoReq<'_> {
    fn op(&self) -> IoOp {
        match self.buf {
            IoBuf::Read(_) => IoOp::Read,
            IoBuf::Write(_) => IoOp::Write,
        }
    }

    fn len(&self) -> usize {
        match &self.buf {
            IoBuf::Read(b) => b.len(),
            IoBuf::Write(b) => b.len(),
        }
    }

    fn run_sync(&mut self) -> Result<(), IoError> {
        match &mut self.buf {
            IoBuf::Read(b) => self.dev.read_at(b, self.offset),
            IoBuf::Write(b) => self.dev.write_at(b, self.offset),
        }
    }
}

/// Runs every request and returns one result per request, in order.
///
/// Requests to devices that expose an io_uring target (raw devices and direct-I/O files) are
/// all put in flight together; the others run one after another on the calling thread. The
/// caller must not put overlapping writes in one batch: their order is undefined, as on a disk.
pub fn run_batch(reqs: &mut [IoReq<'_>]) -> Vec<Result<(), IoError>> {
    let mut results: Vec<Option<Result<(), IoError>>> = (0..reqs.len()).map(|_| None).collect();
    let mut raw = Vec::new();
    let mut raw_idx = Vec::new();
    for (i, req) in reqs.iter_mut().enumerate() {
        let Some(target) = req.dev.uring_target() else {
            continue;
        };
        let sector = req.dev.info().logical_sector as usize;
        if let Err(e) = req.dev.info().check(req.op(), req.offset, req.len() as u64) {
            results[i] = Some(Err(e));
            continue;
        }
        let (ptr, len, write) = match &mut req.buf {
            IoBuf::Read(b) => {
                if target.needs_aligned_buffers && !is_aligned(b, sector) {
                    continue;
                }
                (b.as_mut_ptr(), b.len(), false)
            }
            IoBuf::Write(b) => {
                if target.needs_aligned_buffers && !is_aligned(b, sector) {
                    continue;
                }
                (b.as_ptr().cast_mut(), b.len(), true)
            }
        };
        raw.push(RawIo {
            fd: target.fd,
            offset: req.offset,
            ptr,
            len,
            write,
            fsync: false,
        });
        raw_idx.push(i);
    }
    if raw.len() > 1 {
        let mut raw_results: Vec<std::io::Result<()>> = (0..raw.len()).map(|_| Ok(())).collect();
        if uring_rw(&raw, &mut raw_results).is_ok() {
            for (k, r) in raw_results.into_iter().enumerate() {
                let i = raw_idx[k];
                let req = &reqs[i];
                results[i] = Some(r.map_err(|e| {
                    IoError::os(
                        &req.dev.info().id,
                        req.op(),
                        req.offset,
                        req.len() as u64,
                        e,
                    )
                }));
            }
        }
    }
    reqs.iter_mut()
        .zip(results)
        .map(|(req, r)| r.unwrap_or_else(|| req.run_sync()))
        .collect()
}

/// Flushes every device and returns one result per device, in order. Devices with an io_uring
/// target are synced together (one device-flush latency instead of one per device).
pub fn run_flush(devs: &[&dyn BlockDev]) -> Vec<Result<(), IoError>> {
    let mut results: Vec<Option<Result<(), IoError>>> = (0..devs.len()).map(|_| None).collect();
    let mut raw = Vec::new();
    let mut raw_idx = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        if let Some(t) = d.uring_target() {
            raw.push(RawIo {
                fd: t.fd,
                offset: 0,
                ptr: std::ptr::null_mut(),
                len: 0,
                write: false,
                fsync: true,
            });
            raw_idx.push(i);
        }
    }
    if raw.len() > 1 {
        let mut raw_results: Vec<std::io::Result<()>> = (0..raw.len()).map(|_| Ok(())).collect();
        if uring_rw(&raw, &mut raw_results).is_ok() {
            for (k, r) in raw_results.into_iter().enumerate() {
                let i = raw_idx[k];
                results[i] =
                    Some(r.map_err(|e| IoError::os(&devs[i].info().id, IoOp::Flush, 0, 0, e)));
            }
        }
    }
    devs.iter()
        .zip(results)
        .map(|(d, r)| r.unwrap_or_else(|| d.flush()))
        .collect()
}
