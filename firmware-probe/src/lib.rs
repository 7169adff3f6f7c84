//! Hardware discovery for the DataWarehouse appliance: what the machine it runs on has, and what
//! the appliance may do with it.
//!
//! [`probe`] answers, for every block device: stable identity (by-id links, serial, WWN, model,
//! firmware), kind and transport, size and sector sizes, stacking (partitions, holders, slaves),
//! mounts and swap, partition tables and on-disk signatures, a [`Verdict`] with reasons, and drive
//! [`Health`]; and for the platform: CPU, memory, TPM, AMD SEV, network interfaces.
//!
//! It never writes to a device and never opens one exclusively. A device is only `available`
//! when every check ran and found nothing; anything that could not be checked makes it
//! `unknown`. Missing information is `null` with a reason in the object's `unknown` map, never a
//! panic. All filesystem access goes through the roots in [`ProbeConfig`], so recorded trees (see
//! [`fixture`]) are probed exactly like the live system. See docs/PROBE.md.

mod blockdev;
mod config;
pub mod fixture;
mod fsx;
mod health;
pub mod model;
pub mod mounts;
pub mod nvme;
mod platform;
pub mod signatures;
pub mod smart;
#[allow(unsafe_code)]
mod sys;
pub mod table;
#[cfg(feature = "tpm")]
mod tpm;
pub mod udev;
mod verdict;

pub use blockdev::{MAX_PARTITIONS_READ, parse_vpd_serial};
pub use config::{AddressSource, CpuidSource, ProbeConfig, SmartctlConfig, TpmAccess, UdevMode};
pub use fsx::ReadAttrError;
pub use model::{
    BlockDevice, DeviceKind, DeviceSource, Health, HealthReason, HealthReasonCode, HealthSource,
    HealthVerdict, Inventory, Partition, PartitionTable, PartitionTableKind, Platform, Reason,
    ReasonCode, SCHEMA_VERSION, Signature, SignatureKind, Transport, Unknown, Verdict,
};
pub use platform::{CpuidError, CpuidSnapshot, CpuinfoSummary, parse_cpuinfo, parse_meminfo};
pub use sys::NvmeAdminError;
#[cfg(feature = "tpm")]
pub use tpm::TpmQueryError;

/// Probes the machine (or recorded tree) described by `config`. Never fails: whatever could not
/// be determined is reported as unknown with a reason.
#[must_use]
pub fn probe(config: &ProbeConfig) -> Inventory {
    let ctx = blockdev::Ctx::new(config);
    let mut unknown = Unknown::new();
    let devices = blockdev::probe_devices(&ctx, &mut unknown);
    let platform = platform::probe_platform(config, &ctx.roots);
    Inventory {
        schema_version: SCHEMA_VERSION,
        generator: format!("dw-probe {}", env!("CARGO_PKG_VERSION")),
        device_source: ctx.source,
        devices,
        platform,
        unknown,
    }
}

/// The JSON Schema of [`Inventory`] (checked in as docs/dw-probe.schema.json).
#[must_use]
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Inventory)).unwrap_or(serde_json::Value::Null)
}

impl Inventory {
    /// Whether nothing at all could be probed: no block device list and no CPU or memory data.
    #[must_use]
    pub fn nothing_probed(&self) -> bool {
        self.devices.is_empty()
            && self.unknown.contains_key("devices")
            && self.platform.cpu.threads.is_none()
            && self.platform.memory.total_bytes.is_none()
    }
}
