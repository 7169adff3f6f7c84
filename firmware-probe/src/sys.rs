//! The crate's only `unsafe`: the NVMe admin passthrough ioctl.
//!
//! The command structure mirrors the kernel's `struct nvme_passthru_cmd` (a.k.a.
//! `nvme_admin_cmd`, include/uapi/linux/nvme_ioctl.h): 72 bytes, request code
//! `_IOWR('N', 0x41, struct nvme_admin_cmd)` = 0xC0484E41. Only read-direction admin commands
//! (Identify, Get Log Page) are issued; the device is opened read-only.

use std::fs::File;
use std::os::fd::AsRawFd;

use thiserror::Error;

/// `struct nvme_passthru_cmd` from the kernel UAPI.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NvmePassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(size_of::<NvmePassthruCmd>() == 72);

nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, NvmePassthruCmd);

/// The request code the kernel expects.
pub(crate) const NVME_IOCTL_ADMIN_CMD: u64 = 0xC048_4E41;
const _: () = assert!(
    nix::request_code_readwrite!(b'N', 0x41, size_of::<NvmePassthruCmd>()) == NVME_IOCTL_ADMIN_CMD
);

const OPC_GET_LOG_PAGE: u8 = 0x02;
const OPC_IDENTIFY: u8 = 0x06;
const CNS_IDENTIFY_CONTROLLER: u32 = 0x01;
const LOG_SMART_HEALTH: u32 = 0x02;
const NSID_ALL: u32 = 0xFFFF_FFFF;
const ADMIN_TIMEOUT_MS: u32 = 10_000;

/// An NVMe admin command failed.
#[derive(Debug, Error)]
pub enum NvmeAdminError {
    /// The ioctl itself failed (ENOTTY: not an NVMe controller; EACCES/EPERM: needs root).
    #[error("NVMe admin ioctl (opcode {opcode:#04x}) failed: {errno}")]
    Ioctl {
        /// Admin opcode.
        opcode: u8,
        /// errno.
        errno: nix::errno::Errno,
    },
    /// The controller completed the command with an error status.
    #[error("NVMe admin command (opcode {opcode:#04x}) completed with status {status:#06x}")]
    Status {
        /// Admin opcode.
        opcode: u8,
        /// Status field returned by the ioctl.
        status: i32,
    },
}

fn admin(
    file: &File,
    opcode: u8,
    nsid: u32,
    cdw10: u32,
    buf: &mut [u8],
) -> Result<(), NvmeAdminError> {
    let data_len = u32::try_from(buf.len()).map_err(|_| NvmeAdminError::Ioctl {
        opcode,
        errno: nix::errno::Errno::EINVAL,
    })?;
    let addr = u64::try_from(buf.as_mut_ptr().addr()).map_err(|_| NvmeAdminError::Ioctl {
        opcode,
        errno: nix::errno::Errno::EINVAL,
    })?;
    let mut cmd = NvmePassthruCmd {
        opcode,
        nsid,
        addr,
        data_len,
        cdw10,
        timeout_ms: ADMIN_TIMEOUT_MS,
        ..NvmePassthruCmd::default()
    };
    // SAFETY: `cmd` is a properly initialised `#[repr(C)]` struct with the kernel's layout (size
    // asserted at compile time); `addr`/`data_len` describe `buf`, which is exclusively borrowed
    // for the whole call, so the kernel writes at most `data_len` bytes into memory we own. The fd
    // stays open for the duration because `file` is borrowed.
    let rc = unsafe { nvme_admin_cmd(file.as_raw_fd(), &raw mut cmd) }
        .map_err(|errno| NvmeAdminError::Ioctl { opcode, errno })?;
    if rc != 0 {
        return Err(NvmeAdminError::Status { opcode, status: rc });
    }
    Ok(())
}

/// Identify Controller (opcode 06h, CNS 01h): 4096 bytes.
pub(crate) fn identify_controller(file: &File) -> Result<Vec<u8>, NvmeAdminError> {
    let mut buf = vec![0u8; crate::nvme::IDENTIFY_LEN];
    admin(file, OPC_IDENTIFY, 0, CNS_IDENTIFY_CONTROLLER, &mut buf)?;
    Ok(buf)
}

/// Get Log Page (opcode 02h) SMART / Health Information for all namespaces: 512 bytes.
pub(crate) fn smart_log(file: &File) -> Result<Vec<u8>, NvmeAdminError> {
    let mut buf = vec![0u8; crate::nvme::SMART_LOG_LEN];
    let dwords = u32::try_from(crate::nvme::SMART_LOG_LEN / 4).unwrap_or(128);
    let cdw10 = LOG_SMART_HEALTH | ((dwords - 1) << 16);
    admin(file, OPC_GET_LOG_PAGE, NSID_ALL, cdw10, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<NvmePassthruCmd>(), 72);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, nsid), 4);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, metadata), 16);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, addr), 24);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, data_len), 36);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, cdw10), 40);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, timeout_ms), 64);
        assert_eq!(std::mem::offset_of!(NvmePassthruCmd, result), 68);
        let code = nix::request_code_readwrite!(b'N', 0x41, size_of::<NvmePassthruCmd>());
        assert_eq!(code, NVME_IOCTL_ADMIN_CMD);
        assert_eq!(LOG_SMART_HEALTH | ((128 - 1) << 16), 0x007F_0002);
    }

    // Goal: the ioctl on something that is not an NVMe controller is an error, not a crash.
    #[test]
    fn regular_file_is_not_a_controller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nvme0");
        std::fs::write(&path, [0u8; 16]).unwrap();
        let file = File::open(&path).unwrap();
        let err = identify_controller(&file).unwrap_err();
        assert!(
            matches!(
                err,
                NvmeAdminError::Ioctl {
                    errno: nix::errno::Errno::ENOTTY,
                    ..
                }
            ),
            "{err}"
        );
    }
}
