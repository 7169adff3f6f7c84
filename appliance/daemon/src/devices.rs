//! Opening drives, and refusing drives that hold data.
//!
//! A block device may be used only when discovery (`dw-probe`) says `available`: not mounted,
//! no holders, no partition table, no known signature, readable. A regular file (the demo's
//! file-backed drives, VDE image files) must hold no known signature either, unless it is new.
//! `force` overrides the signature check, never the mounted/holders checks.

use std::path::Path;
use std::sync::Arc;

use dw_blockdev::{BlockDev, DiskDev, DiskOptions};
use dw_probe::signatures::{FileReader, detect};

use crate::error::{OpError, OpResult};

/// Sizes as people write them (`512M`, `1.5G`); the same parser as the CLI's.
pub use dw_api::parse_size;

/// Opens a drive (block device with O_DIRECT and io_uring, or a file).
///
/// With `DW_TEST_FAULT_MARKERS=1` in the environment (tests only, see docs/DAEMON.md) the
/// drive fails like a pulled disk while a file `<path>.fail` exists.
///
/// # Errors
/// [`OpError::Invalid`] naming the device.
pub fn open(path: &str) -> OpResult<Arc<dyn BlockDev>> {
    let d = DiskDev::open(Path::new(path), DiskOptions::default())
        .map_err(|e| OpError::Invalid(e.to_string()))?;
    if std::env::var("DW_TEST_FAULT_MARKERS").is_ok_and(|v| v == "1") {
        return Ok(Arc::new(markers::MarkerFaultDev::new(Arc::new(d), path)));
    }
    Ok(Arc::new(d))
}

/// The test hook behind `DW_TEST_FAULT_MARKERS`: a drive that fails while a marker file exists.
mod markers {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Once};
    use std::time::Duration;

    use dw_blockdev::{BlockDev, DevInfo, IoError};
    use parking_lot::Mutex;

    static WATCHED: Mutex<Vec<(PathBuf, Arc<AtomicBool>)>> = Mutex::new(Vec::new());
    static POLLER: Once = Once::new();

    /// A drive failing while `<path>.fail` exists (polled every 100 ms).
    #[derive(Debug)]
    pub struct MarkerFaultDev {
        inner: Arc<dyn BlockDev>,
        failed: Arc<AtomicBool>,
    }

    impl MarkerFaultDev {
        pub fn new(inner: Arc<dyn BlockDev>, path: &str) -> Self {
            let failed = Arc::new(AtomicBool::new(false));
            WATCHED
                .lock()
                .push((PathBuf::from(format!("{path}.fail")), Arc::clone(&failed)));
            POLLER.call_once(|| {
                let _ = std::thread::Builder::new()
                    .name("fault-markers".into())
                    .spawn(|| {
                        loop {
                            for (p, f) in WATCHED.lock().iter() {
                                f.store(p.exists(), Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
            });
            Self { inner, failed }
        }

        fn check(&self) -> Result<(), IoError> {
            if self.failed.load(Ordering::Relaxed) {
                return Err(IoError::DeviceFailed {
                    dev: self.inner.info().id.clone(),
                    reason: "test fault marker present".into(),
                });
            }
            Ok(())
        }
    }

    impl BlockDev for MarkerFaultDev {
        fn info(&self) -> &DevInfo {
            self.inner.info()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
            self.check()?;
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
            self.check()?;
            self.inner.write_at(buf, offset)
        }
        fn flush(&self) -> Result<(), IoError> {
            self.check()?;
            self.inner.flush()
        }
        fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
            self.check()?;
            self.inner.discard(offset, len)
        }
    }
}

/// Refuses a device that holds data (see the module doc). `ours_ok` accepts our own array
/// signature (adding a former member back as a spare is an explicit administrator act).
///
/// # Errors
/// [`OpError::Conflict`] with every reason.
pub fn check_unused(path: &str, force: bool) -> OpResult<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| OpError::Invalid(format!("cannot use {path}: {e}")))?;
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_block_device() {
        let canon = std::fs::canonicalize(path)
            .map_err(|e| OpError::Invalid(format!("cannot resolve {path}: {e}")))?;
        let inv = dw_probe::probe(&dw_probe::ProbeConfig::system());
        let dev = inv
            .devices
            .iter()
            .find(|d| Path::new(&d.path) == canon || d.by_id.iter().any(|l| Path::new(l) == Path::new(path)))
            .ok_or_else(|| {
                OpError::Invalid(format!(
                    "{path} is not a whole disk discovery knows (partitions and unknown devices cannot be used)"
                ))
            })?;
        if dev.verdict == dw_probe::Verdict::Available {
            return Ok(());
        }
        let hard = dev.reasons.iter().any(|r| {
            matches!(
                r.code,
                dw_probe::ReasonCode::Mounted
                    | dw_probe::ReasonCode::Holders
                    | dw_probe::ReasonCode::Swap
                    | dw_probe::ReasonCode::PartitionInUse
            )
        });
        let why = dev
            .reasons
            .iter()
            .map(|r| format!("{:?}: {}", r.code, r.detail))
            .collect::<Vec<_>>()
            .join("; ");
        if force && !hard {
            tracing::warn!("{path}: using it despite discovery's verdict (force): {why}");
            return Ok(());
        }
        return Err(OpError::Conflict(format!(
            "{path} is not available: {why}{}",
            if hard {
                ""
            } else {
                " (pass force to overwrite it)"
            }
        )));
    }
    if !meta.is_file() {
        return Err(OpError::Invalid(format!(
            "{path} is neither a block device nor a regular file"
        )));
    }
    let f = std::fs::File::open(path)
        .map_err(|e| OpError::Invalid(format!("cannot open {path}: {e}")))?;
    let found = detect(&FileReader::new(f, meta.len()));
    // Any data counts, recognised or not: a file that is not blank could be anything (a
    // database, someone's document), and overwriting it must be an explicit decision.
    if found.signatures.is_empty() && found.failures.is_empty() && found.nonzero_bytes == 0 {
        return Ok(());
    }
    let mut why: Vec<String> = found
        .signatures
        .iter()
        .map(|s| format!("{:?} signature", s.kind))
        .collect();
    if why.is_empty() && found.nonzero_bytes > 0 {
        why.push(format!(
            "unrecognised data ({} non-zero bytes in the regions checked)",
            found.nonzero_bytes
        ));
    }
    why.extend(found.failures.iter().map(|f| format!("unreadable: {f:?}")));
    if force {
        tracing::warn!("{path}: overwriting ({})", why.join("; "));
        return Ok(());
    }
    Err(OpError::Conflict(format!(
        "{path} holds data ({}): pass force to overwrite it",
        why.join("; ")
    )))
}

/// Creates (or extends) a sparse file of `size` bytes, for file-backed drives and VDE images.
///
/// # Errors
/// [`OpError::Invalid`].
pub fn create_file(path: &Path, size: u64) -> OpResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OpError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| OpError::Invalid(format!("cannot create {}: {e}", path.display())))?;
    let len = f
        .metadata()
        .map_err(|e| OpError::Invalid(e.to_string()))?
        .len();
    if len < size {
        f.set_len(size)
            .map_err(|e| OpError::Invalid(format!("cannot size {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The size of a device or file.
///
/// # Errors
/// [`OpError::Invalid`].
pub fn size_of(path: &str) -> OpResult<u64> {
    Ok(open(path)?.info().size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_with_data_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        create_file(&blank, 64 << 20).unwrap();
        check_unused(blank.to_str().unwrap(), false).unwrap();
        // An ext4 superblock magic at 1080.
        let ext4 = dir.path().join("ext4");
        create_file(&ext4, 64 << 20).unwrap();
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&ext4).unwrap();
            f.write_all_at(&[0x53, 0xEF], 1080).unwrap();
        }
        let e = check_unused(ext4.to_str().unwrap(), false).unwrap_err();
        assert!(matches!(e, OpError::Conflict(_)), "{e}");
        check_unused(ext4.to_str().unwrap(), true).unwrap();
        // Data nobody recognises is data too.
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"my thesis, chapter one").unwrap();
        let e = check_unused(text.to_str().unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("unrecognised"), "{e}");
        assert!(check_unused("/nonexistent/x", false).is_err());
    }
}
