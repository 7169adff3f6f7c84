//! The crate's only `unsafe` code: block-device ioctls and io_uring submission.
//!
//! io_uring: each thread that does I/O owns one ring (created on first use). A batch of reads and
//! writes — possibly to different devices — is pushed to the ring, submitted, and the call waits
//! until every submitted entry has completed before returning, so the buffers the kernel writes
//! into or reads from are never released while in flight.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use io_uring::{IoUring, opcode, types};

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, 0x1268, libc::c_int);
nix::ioctl_read_bad!(blkpbszget, 0x127B, libc::c_uint);

/// Size in bytes of the block device open at `fd`.
pub(crate) fn block_device_size(fd: RawFd) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local.
    unsafe { blkgetsize64(fd, &raw mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Logical and physical sector sizes of the block device open at `fd`.
pub(crate) fn block_device_sectors(fd: RawFd) -> io::Result<(u32, u32)> {
    let mut logical: libc::c_int = 0;
    let mut physical: libc::c_uint = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points to a live local.
    unsafe { blksszget(fd, &raw mut logical) }.map_err(io::Error::from)?;
    // SAFETY: BLKPBSZGET writes one c_uint through the pointer, which points to a live local.
    unsafe { blkpbszget(fd, &raw mut physical) }.map_err(io::Error::from)?;
    let logical = u32::try_from(logical).map_err(|_| io::Error::other("negative sector size"))?;
    Ok((logical, physical))
}

/// One read or write for [`uring_rw`]. The memory must stay valid and unaliased until
/// `uring_rw` returns, which the borrow in [`crate::IoReq`] guarantees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawIo {
    pub fd: RawFd,
    pub offset: u64,
    pub ptr: *mut u8,
    pub len: usize,
    pub write: bool,
    /// A data sync of the whole file instead of a transfer (`ptr`/`len` unused).
    pub fsync: bool,
}

const RING_ENTRIES: u32 = 128;
/// Short transfers are resubmitted for the remainder; a device that keeps returning partial
/// transfers is reported as failing rather than looped on forever.
const MAX_RESUBMITS: u32 = 64;

enum Ring {
    Uninit,
    Ready(Box<IoUring>),
    Unavailable,
}

thread_local! {
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Uninit) };
}

/// Whether io_uring works in this process (probed once; the answer is logged once).
pub(crate) fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match IoUring::new(2) {
        Ok(_) => {
            tracing::debug!("io_uring available");
            true
        }
        Err(e) => {
            tracing::warn!(
                "io_uring is not available ({e}); block I/O falls back to positioned I/O"
            );
            false
        }
    })
}

/// Runs every I/O in `ios` through this thread's ring and stores each outcome in `results`.
///
/// Returns `Err` only when no ring could be set up (the caller then falls back to positioned
/// I/O); per-I/O failures go to `results`.
pub(crate) fn uring_rw(ios: &[RawIo], results: &mut [io::Result<()>]) -> io::Result<()> {
    assert_eq!(ios.len(), results.len(), "one result slot per I/O");
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if matches!(*slot, Ring::Uninit) {
            *slot = if uring_available() {
                match IoUring::new(RING_ENTRIES) {
                    Ok(r) => Ring::Ready(Box::new(r)),
                    Err(e) => {
                        tracing::warn!("cannot create an io_uring for this thread: {e}");
                        Ring::Unavailable
                    }
                }
            } else {
                Ring::Unavailable
            };
        }
        match &mut *slot {
            Ring::Ready(ring) => {
                let window = RING_ENTRIES as usize;
                for (ios, results) in ios.chunks(window).zip(results.chunks_mut(window)) {
                    run_window(ring, ios, results);
                }
                Ok(())
            }
            Ring::Unavailable | Ring::Uninit => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    })
}

/// Submits up to a ring's worth of I/O and waits for all of it.
fn run_window(ring: &mut IoUring, ios: &[RawIo], results: &mut [io::Result<()>]) {
    // Progress per I/O: bytes done, resubmissions so far.
    let mut done = vec![0usize; ios.len()];
    let mut resubmits = vec![0u32; ios.len()];
    let mut pending: Vec<usize> = (0..ios.len()).collect();
    for r in results.iter_mut() {
        *r = Ok(());
    }
    while !pending.is_empty() {
        let mut in_flight = 0usize;
        for &i in &pending {
            let io = ios[i];
            let remaining = io.len - done[i];
            // Transfers larger than u32::MAX are split by the resubmit loop.
            let len = u32::try_from(remaining).unwrap_or(!4095);
            // SAFETY: `done[i] <= io.len`, so the pointer stays inside the caller's buffer.
            let ptr = unsafe { io.ptr.add(done[i]) };
            let offset = io.offset + done[i] as u64;
            let user_data = i as u64;
            let entry = if io.fsync {
                opcode::Fsync::new(types::Fd(io.fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(user_data)
            } else if io.write {
                opcode::Write::new(types::Fd(io.fd), ptr.cast_const(), len)
                    .offset(offset)
                    .build()
                    .user_data(user_data)
            } else {
                opcode::Read::new(types::Fd(io.fd), ptr, len)
                    .offset(offset)
                    .build()
                    .user_data(user_data)
            };
            // SAFETY: the entry points at caller memory that stays valid until this function
            // returns, and this function does not return before every pushed entry completed.
            // The window is at most RING_ENTRIES long, so the queue cannot overflow.
            let pushed = unsafe { ring.submission().push(&entry) };
            assert!(pushed.is_ok(), "submission queue sized for the window");
            in_flight += 1;
        }
        let mut next = Vec::new();
        while in_flight > 0 {
            match ring.submit_and_wait(in_flight) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // Entries may still be in flight with pointers into caller memory; returning
                    // would let the caller free it under the kernel. This cannot be recovered.
                    eprintln!("fatal: io_uring submit failed with I/O in flight: {e}");
                    std::process::abort();
                }
            }
            let completions: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, res) in completions {
                in_flight -= 1;
                let Ok(i) = usize::try_from(user_data) else {
                    continue;
                };
                if res < 0 {
                    results[i] = Err(io::Error::from_raw_os_error(-res));
                    continue;
                }
                if ios[i].fsync {
                    continue;
                }
                let n = usize::try_from(res).unwrap_or(0);
                if n == 0 && !ios[i].write {
                    results[i] = Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    continue;
                }
                done[i] += n;
                if done[i] < ios[i].len {
                    resubmits[i] += 1;
                    if resubmits[i] > MAX_RESUBMITS {
                        results[i] =
                            Err(io::Error::other("device keeps returning short transfers"));
                    } else {
                        next.push(i);
                    }
                }
            }
        }
        pending = next;
    }
}
