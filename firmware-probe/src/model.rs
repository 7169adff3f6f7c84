//! The inventory as it is serialised (`dw-probe --json`, the daemon's API): schema version 1.
//!
//! Rules every type here follows:
//! - A field that could not be determined is `null` and its name is a key of the `unknown` map of
//!   the object that holds it, with the reason as the value. Nothing is silently left out.
//! - Additive changes (new fields, new enum values) keep [`SCHEMA_VERSION`]; removing or renaming a
//!   field, or changing its meaning or type, bumps it. Consumers must ignore fields they do not know.
//! - Sizes are in bytes unless the name says otherwise; units go last in names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the JSON document produced by [`crate::probe`]; see the module docs for the rule.
pub const SCHEMA_VERSION: u32 = 1;

/// Field name -> why that field is `null` (or, for a list, why it may be incomplete).
pub type Unknown = BTreeMap<String, String>;

/// Everything the probe found out about the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Inventory {
    /// Version of this document's layout (currently 1).
    pub schema_version: u32,
    /// Program and version that produced the document, e.g. `dw-probe 0.1.0`.
    pub generator: String,
    /// Where the device list and identities came from.
    pub device_source: DeviceSource,
    /// Whole block devices (`/sys/block`), sorted by name. Partitions are nested in their disk.
    pub devices: Vec<BlockDevice>,
    /// The machine itself: CPU, memory, TPM, SEV, network.
    pub platform: Platform,
    /// Reasons for missing information at this level (e.g. `devices` when `/sys/block` could not be
    /// listed).
    pub unknown: Unknown,
}

/// Where the device list and identities came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSource {
    /// libudev enumeration plus the udev database, merged on top of sysfs.
    Udev,
    /// udev database files read directly (recorded trees), merged on top of sysfs.
    UdevDatabaseFiles,
    /// sysfs only: no udev database exists (early boot, containers, sandboxes).
    Sysfs,
}

/// One whole block device and what the appliance may do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockDevice {
    /// Kernel name, e.g. `sda`, `nvme0n1`, `vda`, `loop3`.
    pub name: String,
    /// Device node, e.g. `/dev/sda` (always the `/dev` path, also when a recorded tree was probed).
    pub path: String,
    /// Kernel device number `major:minor`.
    pub devnum: Option<String>,
    /// What sort of device this is.
    pub kind: DeviceKind,
    /// How it is attached.
    pub transport: Transport,
    /// Capacity in bytes (sysfs `size` is always in 512-byte units, whatever the sector size).
    pub size_bytes: Option<u64>,
    /// Smallest addressable unit in bytes (`queue/logical_block_size`).
    pub logical_sector_size: Option<u32>,
    /// Smallest unit the device writes without read-modify-write (`queue/physical_block_size`).
    pub physical_sector_size: Option<u32>,
    /// Spinning media (`queue/rotational`).
    pub rotational: Option<bool>,
    /// Removable media (`removable`).
    pub removable: Option<bool>,
    /// Read-only (`ro`).
    pub read_only: Option<bool>,
    /// Model string.
    pub model: Option<String>,
    /// Vendor string (SCSI/ATA vendor field; `ATA` for SATA disks behind libata).
    pub vendor: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// World Wide Name (`0x…` for NAA names, `eui.…`/`nvme.…` for NVMe namespaces).
    pub wwn: Option<String>,
    /// The kernel's `wwid` attribute verbatim (t10./naa./eui. designator).
    pub wwid: Option<String>,
    /// Firmware revision.
    pub firmware_revision: Option<String>,
    /// Stable `/dev/disk/by-id/…` links that point at this device, sorted.
    pub by_id: Vec<String>,
    /// Whether udev properties were merged on top of the sysfs values.
    pub udev_properties_merged: bool,
    /// For loop devices: the backing file.
    pub loop_backing_file: Option<String>,
    /// For device-mapper devices: the mapping name (`dm/name`).
    pub dm_name: Option<String>,
    /// For md arrays: the RAID level (`md/level`).
    pub md_level: Option<String>,
    /// For NVMe namespaces: the controller character device (`/dev/nvme0`).
    pub nvme_controller: Option<String>,
    /// Partitions the kernel knows about, sorted by number.
    pub partitions: Option<Vec<Partition>>,
    /// Devices stacked on top of this one (`holders/`: dm, md, bcache …).
    pub holders: Option<Vec<String>>,
    /// Devices this one is built from (`slaves/`: members of md/dm).
    pub slaves: Option<Vec<String>>,
    /// Where this device itself is mounted (partitions carry their own).
    pub mount_points: Option<Vec<String>>,
    /// Whether this device itself is an active swap area (`/proc/swaps`).
    pub swap_active: Option<bool>,
    /// Partition table found on the device (kind `none` when the checks found none).
    pub partition_table: Option<PartitionTable>,
    /// On-disk signatures found by reading the device.
    pub signatures: Option<Vec<Signature>>,
    /// What the appliance may do with the device.
    pub verdict: Verdict,
    /// Why: every piece of evidence behind the verdict.
    pub reasons: Vec<Reason>,
    /// Drive health.
    pub health: Health,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// One partition of a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Partition {
    /// Kernel name, e.g. `sda1`, `nvme0n1p2`.
    pub name: String,
    /// Device node, e.g. `/dev/sda1`.
    pub path: String,
    /// Kernel device number `major:minor`.
    pub devnum: Option<String>,
    /// Partition number.
    pub number: Option<u32>,
    /// Offset of the partition on its disk in bytes.
    pub start_bytes: Option<u64>,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// Stable `/dev/disk/by-id/…` links to this partition, sorted.
    pub by_id: Vec<String>,
    /// Devices stacked on this partition.
    pub holders: Option<Vec<String>>,
    /// Where the partition is mounted.
    pub mount_points: Option<Vec<String>>,
    /// Whether the partition is an active swap area.
    pub swap_active: Option<bool>,
    /// Signatures found inside the partition.
    pub signatures: Option<Vec<Signature>>,
    /// Whether the partition is in use (same rules as for a disk).
    pub verdict: Verdict,
    /// Evidence behind the verdict.
    pub reasons: Vec<Reason>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// What sort of device this is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// NVMe namespace.
    Nvme,
    /// Non-rotational SATA/SAS/SCSI disk.
    Ssd,
    /// Rotational SATA/SAS/SCSI disk.
    Hdd,
    /// Virtio disk (virtio-blk `vdX`, or a SCSI disk behind virtio-scsi).
    Virtio,
    /// Disk attached over USB.
    Usb,
    /// SD/eMMC.
    Mmc,
    /// Loop device (backed by a file).
    Loop,
    /// Linux software RAID array.
    Md,
    /// Device-mapper device (LVM, dm-crypt, multipath …).
    Dm,
    /// Compressed RAM disk.
    Zram,
    /// Plain RAM disk (`brd`).
    Ram,
    /// CD/DVD/BD drive.
    Optical,
    /// Anything else, or a disk whose rotation could not be read.
    Other,
}

/// How a device is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// PCIe NVMe (or NVMe over fabrics).
    Nvme,
    /// SATA (also SATA drives behind a SAS HBA).
    Sata,
    /// SAS.
    Sas,
    /// Other SCSI (FC, iSCSI, SCSI emulation).
    Scsi,
    /// USB mass storage / UAS.
    Usb,
    /// Virtio.
    Virtio,
    /// SD/MMC host.
    Mmc,
    /// A kernel-made device with no hardware below it (loop, md, dm, zram).
    Virtual,
    /// Could not be determined.
    Unknown,
}

/// What the appliance may do with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check ran and found nothing on it: it may be used.
    Available,
    /// Something is on it or using it: using it would destroy data.
    InUse,
    /// Carries nothing but cannot be used (zero size, unbound loop, read-only, RAM-backed).
    Unusable,
    /// At least one check could not run (permission, read error): treat as in use.
    Unknown,
}

/// One piece of evidence behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reason {
    /// Machine-readable code.
    pub code: ReasonCode,
    /// Human-readable detail (where it is mounted, which signature at which offset …).
    pub detail: String,
}

/// Machine-readable reason codes (see docs/PROBE.md for the rules).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Mounted (in this or init's mount namespace). `in_use`.
    Mounted,
    /// Other block devices are stacked on it. `in_use`.
    Holders,
    /// Active swap area. `in_use`.
    Swap,
    /// A partition table is present (or the kernel lists partitions). `in_use`.
    PartitionTable,
    /// One of its partitions is in use. `in_use`.
    PartitionInUse,
    /// A known on-disk signature was found (detail names it). `in_use`.
    Signature,
    /// Non-zero bytes that match no known signature. `in_use`.
    UnrecognizedData,
    /// Size is zero. `unusable`.
    ZeroSize,
    /// Loop device with no backing file. `unusable`.
    LoopUnbound,
    /// Read-only device. `unusable`.
    ReadOnly,
    /// Memory-backed device whose contents do not survive a reboot. `unusable`.
    RamBacked,
    /// The device node could not be opened. `unknown`.
    OpenFailed,
    /// A region could not be read (I/O error, permission). `unknown`.
    ReadFailed,
    /// A read returned fewer bytes than the device size promises. `unknown`.
    ShortRead,
    /// Another check (mount table, holders, swap list, size) could not be done. `unknown`.
    CheckFailed,
    /// Signature checks were switched off (`--no-signatures`). `unknown`.
    NotChecked,
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PartitionTable {
    /// Which table.
    pub kind: PartitionTableKind,
    /// Where it was found and what it holds.
    pub detail: String,
}

/// Which partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionTableKind {
    /// The checks ran and found none.
    None,
    /// MS-DOS/MBR table with valid signature and at least one entry.
    Mbr,
    /// GPT (header "EFI PART" at LBA 1, or a protective MBR).
    Gpt,
    /// No table on disk, but the kernel lists partitions (another table format).
    KernelOnly,
}

/// An on-disk signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Signature {
    /// What it is.
    pub kind: SignatureKind,
    /// Byte offset of the magic on the device (or partition).
    pub offset: u64,
    /// Human-readable detail.
    pub detail: String,
}

/// Known signatures.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKind {
    /// ext2 file system.
    Ext2,
    /// ext3 file system.
    Ext3,
    /// ext4 file system.
    Ext4,
    /// XFS file system.
    Xfs,
    /// Btrfs file system.
    Btrfs,
    /// Member of a ZFS pool.
    ZfsMember,
    /// LUKS1 encrypted volume.
    Luks1,
    /// LUKS2 encrypted volume.
    Luks2,
    /// Member of a Linux md RAID array.
    LinuxRaidMember,
    /// LVM2 physical volume.
    Lvm2Member,
    /// Swap area (or hibernation image).
    Swap,
    /// FAT file system.
    Vfat,
    /// exFAT file system.
    Exfat,
    /// NTFS file system.
    Ntfs,
    /// ISO 9660 image.
    Iso9660,
    /// F2FS file system.
    F2fs,
    /// bcache backing or cache device.
    Bcache,
    /// squashfs image.
    Squashfs,
    /// BitLocker volume.
    Bitlocker,
    /// DataWarehouse array member (superblock magic `DWARRAY\0`).
    DwArrayMember,
    /// DataWarehouse VDE container (magic `DWVD`).
    DwVde,
}

/// Drive health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Overall verdict.
    pub verdict: HealthVerdict,
    /// Evidence behind the verdict (also why it is unknown).
    pub reasons: Vec<HealthReason>,
    /// Where the health data came from.
    pub source: Option<HealthSource>,
    /// Current temperature in °C.
    pub temperature_celsius: Option<i64>,
    /// Power-on hours.
    pub power_on_hours: Option<u64>,
    /// NVMe Identify Controller and SMART/Health log, decoded.
    pub nvme: Option<NvmeHealth>,
    /// Parsed `smartctl --json -a` output.
    pub smartctl: Option<SmartctlReport>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// Health verdict.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthVerdict {
    /// Health data was read and nothing is wrong.
    Ok,
    /// Something deserves attention (wear, reallocated sectors, temperature).
    Warning,
    /// The drive predicts or shows failure: replace it.
    Failing,
    /// No health data could be read.
    Unknown,
}

/// Where health data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthSource {
    /// NVMe admin passthrough ioctl on the controller.
    NvmeAdminIoctl,
    /// smartmontools' `smartctl --json -a`.
    Smartctl,
}

/// One piece of evidence behind a health verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthReason {
    /// Machine-readable code.
    pub code: HealthReasonCode,
    /// Human-readable detail.
    pub detail: String,
}

/// Machine-readable health reason codes (see docs/PROBE.md for thresholds).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthReasonCode {
    /// Health probing switched off (`--no-health`).
    NotProbed,
    /// The device kind exposes no SMART data (virtio, loop, md, dm, zram …).
    NoSmart,
    /// smartmontools is not installed (or disabled).
    ToolMissing,
    /// The health query failed (open, ioctl, smartctl error, timeout, unparsable output).
    QueryFailed,
    /// NVMe critical warning: available spare below threshold.
    SpareBelowThreshold,
    /// NVMe critical warning: temperature outside the thresholds.
    TemperatureWarning,
    /// NVMe critical warning: NVM subsystem reliability degraded.
    ReliabilityDegraded,
    /// NVMe critical warning: media placed in read-only mode.
    MediaReadOnly,
    /// NVMe critical warning: volatile memory backup device failed.
    VolatileBackupFailed,
    /// NVMe critical warning: persistent memory region became read-only.
    PmrReadOnly,
    /// NVMe critical warning: reserved bits set.
    UnknownCriticalWarning,
    /// Available spare within 10 points of its threshold.
    SpareLow,
    /// Rated endurance (percentage used) nearly or fully consumed.
    EnduranceUsed,
    /// NVMe media and data integrity errors recorded.
    MediaErrors,
    /// Temperature at or above the warning threshold.
    Temperature,
    /// SMART overall self-assessment failed.
    SmartFailed,
    /// A SMART attribute is at or below its threshold now.
    AttributeFailingNow,
    /// A SMART attribute was at or below its threshold in the past.
    AttributeFailedPast,
    /// Reallocated sectors (ATA attribute 5).
    ReallocatedSectors,
    /// Reported uncorrectable errors (ATA attribute 187).
    ReportedUncorrectable,
    /// Command timeouts (ATA attribute 188).
    CommandTimeouts,
    /// Pending sectors (ATA attribute 197).
    PendingSectors,
    /// Offline uncorrectable sectors (ATA attribute 198).
    OfflineUncorrectable,
    /// SCSI grown defect list is not empty.
    GrownDefects,
    /// The device error log holds entries.
    ErrorLogEntries,
    /// The self-test log records failed tests.
    SelfTestErrors,
    /// No problem found in the data that was read.
    Healthy,
}

/// NVMe health data from the admin passthrough ioctl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NvmeHealth {
    /// Controller character device used, e.g. `/dev/nvme0`.
    pub controller: String,
    /// Decoded Identify Controller data.
    pub identify: Option<NvmeIdentify>,
    /// Decoded SMART / Health Information log page.
    pub smart_log: Option<NvmeSmartLog>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// Identify Controller data structure (CNS 01h), the fields the appliance uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NvmeIdentify {
    /// PCI vendor id (bytes 0..2).
    pub vid: u16,
    /// PCI subsystem vendor id (bytes 2..4).
    pub ssvid: u16,
    /// Serial number (bytes 4..24, ASCII, trailing spaces removed).
    pub serial: String,
    /// Model number (bytes 24..64).
    pub model: String,
    /// Firmware revision (bytes 64..72).
    pub firmware_revision: String,
    /// IEEE OUI identifier (bytes 73..76), as six hex digits.
    pub ieee_oui: String,
    /// Controller id (bytes 78..80).
    pub controller_id: u16,
    /// Version (bytes 80..84) as `major.minor.tertiary`; null for pre-1.2 controllers reporting 0.
    pub version: Option<String>,
    /// Warning composite temperature threshold in Kelvin (bytes 266..268); null when 0.
    pub warning_temperature_kelvin: Option<u16>,
    /// Critical composite temperature threshold in Kelvin (bytes 268..270); null when 0.
    pub critical_temperature_kelvin: Option<u16>,
    /// Total NVM capacity in bytes (bytes 280..296); null when 0 (not reported).
    pub total_capacity_bytes: Option<u128>,
    /// Number of namespaces (bytes 516..520).
    pub namespace_count: u32,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// SMART / Health Information log page (log id 02h, 512 bytes), decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NvmeSmartLog {
    /// Critical warning byte (byte 0) as read.
    pub critical_warning: u8,
    /// Names of the critical warning bits that are set.
    pub critical_warnings: Vec<NvmeCriticalWarning>,
    /// Composite temperature in Kelvin (bytes 1..3).
    pub temperature_kelvin: u16,
    /// Composite temperature in °C (Kelvin - 273).
    pub temperature_celsius: i32,
    /// Available spare in percent (byte 3).
    pub available_spare_percent: u8,
    /// Available spare threshold in percent (byte 4).
    pub available_spare_threshold_percent: u8,
    /// Percentage of rated endurance used (byte 5, may exceed 100).
    pub percentage_used: u8,
    /// Data units read (bytes 32..48), in units of 1000 × 512 bytes.
    pub data_units_read: u128,
    /// Data units written (bytes 48..64), in units of 1000 × 512 bytes.
    pub data_units_written: u128,
    /// Host read commands (bytes 64..80).
    pub host_read_commands: u128,
    /// Host write commands (bytes 80..96).
    pub host_write_commands: u128,
    /// Controller busy time in minutes (bytes 96..112).
    pub controller_busy_minutes: u128,
    /// Power cycles (bytes 112..128).
    pub power_cycles: u128,
    /// Power-on hours (bytes 128..144).
    pub power_on_hours: u128,
    /// Unsafe shutdowns (bytes 144..160).
    pub unsafe_shutdowns: u128,
    /// Media and data integrity errors (bytes 160..176).
    pub media_errors: u128,
    /// Number of error information log entries (bytes 176..192).
    pub error_log_entries: u128,
    /// Minutes above the warning composite temperature (bytes 192..196).
    pub warning_temperature_minutes: u32,
    /// Minutes above the critical composite temperature (bytes 196..200).
    pub critical_temperature_minutes: u32,
}

/// NVMe critical warning bits (SMART log byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NvmeCriticalWarning {
    /// Bit 0: available spare below threshold.
    SpareBelowThreshold,
    /// Bit 1: temperature above an over- or below an under-temperature threshold.
    Temperature,
    /// Bit 2: NVM subsystem reliability degraded.
    ReliabilityDegraded,
    /// Bit 3: media placed in read-only mode.
    ReadOnly,
    /// Bit 4: volatile memory backup device failed.
    VolatileBackupFailed,
    /// Bit 5: persistent memory region became read-only.
    PmrReadOnly,
    /// Bits 6-7: reserved bits set.
    Reserved,
}

/// The parts of `smartctl --json -a` the appliance uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmartctlReport {
    /// smartctl's exit status (a bit mask, see smartctl(8)).
    pub exit_status: Option<i32>,
    /// smartctl version, e.g. `7.3`.
    pub smartctl_version: Option<String>,
    /// Device type smartctl used (`sat`, `scsi`, `nvme` …).
    pub device_type: Option<String>,
    /// Protocol (`ATA`, `SCSI`, `NVMe`).
    pub protocol: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Firmware version.
    pub firmware_version: Option<String>,
    /// SMART overall-health self-assessment passed.
    pub smart_passed: Option<bool>,
    /// Current temperature in °C.
    pub temperature_celsius: Option<i64>,
    /// Power-on hours.
    pub power_on_hours: Option<u64>,
    /// The ATA attributes the appliance watches (ids 5, 187, 188, 197, 198) when present.
    pub ata_attributes: Vec<AtaAttribute>,
    /// SCSI grown defect list length.
    pub scsi_grown_defect_list: Option<u64>,
    /// NVMe SMART/Health values as smartctl reports them.
    pub nvme_log: Option<SmartctlNvmeLog>,
    /// smartctl's own messages (errors and warnings).
    pub messages: Vec<String>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// One ATA SMART attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AtaAttribute {
    /// Attribute id.
    pub id: u8,
    /// Attribute name as smartctl knows it.
    pub name: String,
    /// Normalised value.
    pub value: Option<u64>,
    /// Worst normalised value.
    pub worst: Option<u64>,
    /// Failure threshold.
    pub thresh: Option<u64>,
    /// Raw value.
    pub raw: Option<u64>,
    /// `now`, `past`, or empty.
    pub when_failed: String,
}

/// NVMe SMART/Health values from smartctl's `nvme_smart_health_information_log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmartctlNvmeLog {
    /// Critical warning byte.
    pub critical_warning: Option<u8>,
    /// Available spare in percent.
    pub available_spare_percent: Option<u8>,
    /// Available spare threshold in percent.
    pub available_spare_threshold_percent: Option<u8>,
    /// Percentage of rated endurance used.
    pub percentage_used: Option<u8>,
    /// Media and data integrity errors.
    pub media_errors: Option<u64>,
    /// Error information log entries.
    pub error_log_entries: Option<u64>,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: Option<u64>,
}

/// The machine itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Platform {
    /// Processor.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// Trusted Platform Module.
    pub tpm: Tpm,
    /// AMD Secure Encrypted Virtualization.
    pub sev: Sev,
    /// Network interfaces, sorted by name.
    pub network: Vec<NetInterface>,
    /// Field name -> why it is null or incomplete.
    pub unknown: Unknown,
}

/// Processor summary from `/proc/cpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cpu {
    /// Vendor id, e.g. `AuthenticAMD`.
    pub vendor: Option<String>,
    /// Model name of the first processor.
    pub model_name: Option<String>,
    /// Number of sockets (distinct `physical id`).
    pub sockets: Option<u32>,
    /// Number of physical cores (distinct `physical id`/`core id` pairs).
    pub cores: Option<u32>,
    /// Number of hardware threads (`processor` entries).
    pub threads: Option<u32>,
    /// Data-path features.
    pub features: Option<CpuFeatures>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// CPU features that matter to the data path (from the first processor's flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CpuFeatures {
    /// AES-NI.
    pub aes: bool,
    /// Vector AES.
    pub vaes: bool,
    /// Carry-less multiplication (GHASH).
    pub pclmulqdq: bool,
    /// Vector carry-less multiplication.
    pub vpclmulqdq: bool,
    /// AVX2.
    pub avx2: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 Byte and Word.
    pub avx512bw: bool,
    /// SHA extensions (`sha_ni`).
    pub sha_ni: bool,
}

/// Memory from `/proc/meminfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Memory {
    /// MemTotal in bytes.
    pub total_bytes: Option<u64>,
    /// MemAvailable in bytes.
    pub available_bytes: Option<u64>,
    /// SwapTotal in bytes.
    pub swap_total_bytes: Option<u64>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// Trusted Platform Module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tpm {
    /// A TPM is visible in sysfs or as a device node.
    pub present: bool,
    /// TPM devices in `/sys/class/tpm`, e.g. `tpm0`.
    pub sysfs_devices: Vec<String>,
    /// `tpm_version_major` of the first TPM (2 for TPM 2.0).
    pub version_major: Option<u8>,
    /// `/dev/tpm0` when it exists.
    pub device_node: Option<String>,
    /// `/dev/tpmrm0` (kernel resource manager) when it exists.
    pub resource_manager_node: Option<String>,
    /// PCR banks the kernel exposes (`pcr-<alg>` directories), e.g. `sha256`.
    pub pcr_banks_sysfs: Option<Vec<String>>,
    /// PCR banks the TPM reports (GetCapability TPM_CAP_PCRS).
    pub pcr_banks: Option<Vec<PcrBank>>,
    /// TPM manufacturer id (TPM_PT_MANUFACTURER), e.g. `IBM`.
    pub manufacturer: Option<String>,
    /// Firmware version (TPM_PT_FIRMWARE_VERSION_1) as `major.minor`.
    pub firmware_version: Option<String>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// One PCR bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PcrBank {
    /// Hash algorithm, e.g. `sha256`.
    pub algorithm: String,
    /// Allocated PCR indices.
    pub pcrs: Vec<u8>,
}

/// AMD Secure Encrypted Virtualization, as host capability and as guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sev {
    /// This machine as a host for SEV guests.
    pub host: SevHost,
    /// This machine as an SEV guest.
    pub guest: SevGuest,
}

/// SEV levels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SevLevel {
    /// No SEV.
    None,
    /// SEV (memory encryption).
    Sev,
    /// SEV-ES (plus encrypted register state).
    SevEs,
    /// SEV-SNP (plus integrity protection and attestation).
    SevSnp,
}

/// SEV host capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SevHost {
    /// CPUID 0x8000001F EAX bit 1.
    pub cpu_sev: Option<bool>,
    /// CPUID 0x8000001F EAX bit 3.
    pub cpu_sev_es: Option<bool>,
    /// CPUID 0x8000001F EAX bit 4.
    pub cpu_sev_snp: Option<bool>,
    /// C-bit position in page table entries (CPUID 0x8000001F EBX bits 5:0).
    pub c_bit_position: Option<u8>,
    /// Number of encrypted guests supported at once (CPUID 0x8000001F ECX).
    pub max_encrypted_guests: Option<u32>,
    /// `/sys/module/kvm_amd/parameters/sev`.
    pub kvm_sev: Option<bool>,
    /// `/sys/module/kvm_amd/parameters/sev_es`.
    pub kvm_sev_es: Option<bool>,
    /// `/sys/module/kvm_amd/parameters/sev_snp`.
    pub kvm_sev_snp: Option<bool>,
    /// `/dev/sev` (the PSP firmware interface) exists.
    pub dev_sev: bool,
    /// Highest level that CPU, kvm_amd and /dev/sev all allow.
    pub usable_level: SevLevel,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// SEV guest state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SevGuest {
    /// `/dev/sev-guest` (SNP guest request interface) exists.
    pub dev_sev_guest: bool,
    /// The `hypervisor` cpuinfo flag: running as a virtual machine.
    pub hypervisor: Option<bool>,
    /// `sev` cpuinfo flag.
    pub cpuinfo_sev: Option<bool>,
    /// `sev_es` cpuinfo flag.
    pub cpuinfo_sev_es: Option<bool>,
    /// `sev_snp` cpuinfo flag.
    pub cpuinfo_sev_snp: Option<bool>,
    /// Level this machine runs at as a guest (`none` on bare metal).
    pub level: Option<SevLevel>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetInterface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: Option<String>,
    /// MTU in bytes.
    pub mtu: Option<u32>,
    /// Operational state (`up`, `down`, `unknown` …).
    pub operstate: Option<String>,
    /// Link speed in Mb/s.
    pub speed_mbps: Option<u32>,
    /// Kernel driver.
    pub driver: Option<String>,
    /// No hardware device below it (loopback, bridge, veth …).
    pub is_virtual: bool,
    /// Configured addresses.
    pub addresses: Option<Vec<IfAddress>>,
    /// Field name -> why it is null.
    pub unknown: Unknown,
}

/// One interface address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct IfAddress {
    /// `ipv4` or `ipv6`.
    pub family: IpFamily,
    /// Address in text form.
    pub address: String,
    /// Prefix length from the netmask.
    pub prefix_len: Option<u8>,
}

/// Address family.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IpFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Verdict {
    /// The lower-case name used in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Available => "available",
            Verdict::InUse => "in_use",
            Verdict::Unusable => "unusable",
            Verdict::Unknown => "unknown",
        }
    }
}

impl HealthVerdict {
    /// The lower-case name used in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthVerdict::Ok => "ok",
            HealthVerdict::Warning => "warning",
            HealthVerdict::Failing => "failing",
            HealthVerdict::Unknown => "unknown",
        }
    }
}

impl DeviceKind {
    /// The lower-case name used in JSON and tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Nvme => "nvme",
            DeviceKind::Ssd => "ssd",
            DeviceKind::Hdd => "hdd",
            DeviceKind::Virtio => "virtio",
            DeviceKind::Usb => "usb",
            DeviceKind::Mmc => "mmc",
            DeviceKind::Loop => "loop",
            DeviceKind::Md => "md",
            DeviceKind::Dm => "dm",
            DeviceKind::Zram => "zram",
            DeviceKind::Ram => "ram",
            DeviceKind::Optical => "optical",
            DeviceKind::Other => "other",
        }
    }
}

impl SignatureKind {
    /// The name used in JSON, tables and reason details (blkid's names where one exists).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureKind::Ext2 => "ext2",
            SignatureKind::Ext3 => "ext3",
            SignatureKind::Ext4 => "ext4",
            SignatureKind::Xfs => "xfs",
            SignatureKind::Btrfs => "btrfs",
            SignatureKind::ZfsMember => "zfs_member",
            SignatureKind::Luks1 => "luks1",
            SignatureKind::Luks2 => "luks2",
            SignatureKind::LinuxRaidMember => "linux_raid_member",
            SignatureKind::Lvm2Member => "lvm2_member",
            SignatureKind::Swap => "swap",
            SignatureKind::Vfat => "vfat",
            SignatureKind::Exfat => "exfat",
            SignatureKind::Ntfs => "ntfs",
            SignatureKind::Iso9660 => "iso9660",
            SignatureKind::F2fs => "f2fs",
            SignatureKind::Bcache => "bcache",
            SignatureKind::Squashfs => "squashfs",
            SignatureKind::Bitlocker => "bitlocker",
            SignatureKind::DwArrayMember => "dw_array_member",
            SignatureKind::DwVde => "dw_vde",
        }
    }
}

/// Records why `field` is unknown; the first reason wins so the root cause is kept.
pub(crate) fn note(unknown: &mut Unknown, field: &str, reason: impl Into<String>) {
    unknown
        .entry(field.to_owned())
        .or_insert_with(|| reason.into());
}

/// Turns a result into an optional value, recording the error as the field's reason.
pub(crate) fn known<T, E: std::fmt::Display>(
    unknown: &mut Unknown,
    field: &str,
    value: Result<T, E>,
) -> Option<T> {
    match value {
        Ok(v) => Some(v),
        Err(e) => {
            note(unknown, field, e.to_string());
            None
        }
    }
}
