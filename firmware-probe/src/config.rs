//! What to probe and where to read it from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::IfAddress;
use crate::platform::CpuidSnapshot;

/// Options for [`crate::probe`].
///
/// Every filesystem access goes through one of the four roots: the probe reads
/// `<sys_root>/sys/…`, `<dev_root>/dev/…`, `<proc_root>/proc/…` and `<run_root>/run/…`. On a live
/// system all four are `/`; for a recorded tree they all point at the tree's top directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Directory that contains `sys/`.
    pub sys_root: PathBuf,
    /// Directory that contains `dev/`.
    pub dev_root: PathBuf,
    /// Directory that contains `proc/`.
    pub proc_root: PathBuf,
    /// Directory that contains `run/` (the udev database is `run/udev/data`).
    pub run_root: PathBuf,
    /// Probe only this whole device (kernel name, e.g. `sda`); `None` probes all.
    pub device: Option<String>,
    /// Read drive health (NVMe ioctl, smartctl).
    pub health: bool,
    /// Read the devices to look for partition tables and signatures. When off, no device can be
    /// `available` (its verdict becomes `unknown` with reason `not_checked`).
    pub signatures: bool,
    /// Use the udev database when it exists.
    pub udev: UdevMode,
    /// How to run smartctl.
    pub smartctl: SmartctlConfig,
    /// Where the SEV CPUID leaves come from.
    pub cpuid: CpuidSource,
    /// Where interface addresses come from.
    pub interface_addresses: AddressSource,
    /// Whether and how to talk to the TPM.
    pub tpm: TpmAccess,
    /// Issue NVMe admin commands (Identify, Get Log Page) on controller nodes.
    pub nvme_ioctl: bool,
}

/// Use of the udev database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdevMode {
    /// Use it when `<run_root>/run/udev/data` exists: through libudev on the live system (all
    /// roots `/`), by reading the database files for a recorded tree.
    Auto,
    /// sysfs only.
    Disabled,
}

/// How smartctl is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartctlConfig {
    /// Program to run (looked up in `PATH` when it has no `/`); `None` disables smartctl.
    pub program: Option<PathBuf>,
    /// Kill smartctl when it takes longer than this for one device.
    pub timeout: Duration,
}

/// Source of the CPUID data used for the SEV host capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuidSource {
    /// Execute CPUID on this processor.
    Native,
    /// Use recorded values (tests, recorded trees).
    Fixed(CpuidSnapshot),
    /// Do not use CPUID; the fields become unknown with this reason.
    Unavailable(String),
}

/// Source of interface addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// getifaddrs(3) on this machine.
    System,
    /// Recorded addresses: (interface name, address).
    Fixed(Vec<(String, IfAddress)>),
    /// Do not look up addresses; they become unknown with this reason.
    Unavailable(String),
}

/// Whether and how the TPM is queried (GetCapability) beyond sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmAccess {
    /// Query `<dev_root>/dev/tpmrm0` (or `tpm0`) when it is a character device.
    Auto,
    /// Query through this TCTI configuration string, e.g. `swtpm:host=127.0.0.1,port=2321`.
    Tcti(String),
    /// Do not query; the fields become unknown with this reason.
    Disabled(String),
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self::system()
    }
}

impl Default for SmartctlConfig {
    fn default() -> Self {
        Self {
            program: Some(PathBuf::from("smartctl")),
            timeout: Duration::from_secs(60),
        }
    }
}

impl ProbeConfig {
    /// Probe the machine this runs on.
    #[must_use]
    pub fn system() -> Self {
        let root = PathBuf::from("/");
        Self {
            sys_root: root.clone(),
            dev_root: root.clone(),
            proc_root: root.clone(),
            run_root: root,
            device: None,
            health: true,
            signatures: true,
            udev: UdevMode::Auto,
            smartctl: SmartctlConfig::default(),
            cpuid: CpuidSource::Native,
            interface_addresses: AddressSource::System,
            tpm: TpmAccess::Auto,
            nvme_ioctl: true,
        }
    }

    /// Probe a recorded tree at `root` (with `sys/`, `dev/`, `proc/`, `run/` below it).
    ///
    /// Sources that would otherwise ask the real machine (CPUID, getifaddrs, the TPM, smartctl)
    /// are switched off so the answer depends on the tree alone; set them explicitly to inject
    /// recorded values.
    #[must_use]
    pub fn recorded(root: &Path) -> Self {
        let why = "not recorded in the probed tree".to_owned();
        Self {
            sys_root: root.to_path_buf(),
            dev_root: root.to_path_buf(),
            proc_root: root.to_path_buf(),
            run_root: root.to_path_buf(),
            device: None,
            health: true,
            signatures: true,
            udev: UdevMode::Auto,
            smartctl: SmartctlConfig {
                program: None,
                timeout: Duration::from_secs(60),
            },
            cpuid: CpuidSource::Unavailable(why.clone()),
            interface_addresses: AddressSource::Unavailable(why.clone()),
            tpm: TpmAccess::Disabled(why),
            nvme_ioctl: true,
        }
    }

    /// Whether all roots are `/`, i.e. the live system is probed (libudev is only used then).
    #[must_use]
    pub fn is_live_system(&self) -> bool {
        let root = Path::new("/");
        self.sys_root == root
            && self.dev_root == root
            && self.proc_root == root
            && self.run_root == root
    }
}
