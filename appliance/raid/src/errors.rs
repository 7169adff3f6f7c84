//! Error types, one per kind of operation.

use dw_blockdev::IoError;
use uuid::Uuid;

use crate::Level;

/// Why an array could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Fewer members than the level needs.
    #[error("{level} needs at least {need} members, got {have}")]
    TooFewMembers {
        /// Level.
        level: Level,
        /// Members given.
        have: usize,
        /// Members needed.
        need: usize,
    },
    /// More members than the format records.
    #[error("at most {max} members and spares in one array, got {have}")]
    TooManyMembers {
        /// Members given.
        have: usize,
        /// Limit.
        max: usize,
    },
    /// The same device was given twice.
    #[error("device {0} is listed twice")]
    DuplicateDevice(String),
    /// A member cannot hold the metadata plus at least a few chunks.
    #[error("{dev} is too small: {size} bytes, an array member needs at least {need}")]
    MemberTooSmall {
        /// Device.
        dev: String,
        /// Its size.
        size: u64,
        /// Minimum.
        need: u64,
    },
    /// The device's logical sector is larger than the array's 4 KiB sector.
    #[error(
        "{dev} has {sector}-byte sectors; arrays use 4096-byte sectors and cannot use larger ones"
    )]
    SectorTooLarge {
        /// Device.
        dev: String,
        /// Its sector.
        sector: u32,
    },
    /// Invalid options.
    #[error("invalid array options: {0}")]
    InvalidSpec(String),
    /// Writing the new metadata failed.
    #[error("writing array metadata failed: {0}")]
    Io(#[from] IoError),
}

/// Why a device was not taken into an array at assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Device identity.
    pub device: String,
    /// Why, in words an administrator can act on.
    pub reason: String,
}

/// Why an array could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// None of the devices carries an array superblock.
    #[error("none of the {count} devices is an array member{}", summarize(.rejected))]
    NoMembers {
        /// Devices looked at.
        count: usize,
        /// Why each was rejected.
        rejected: Vec<Rejected>,
    },
    /// The devices belong to several arrays and none was chosen.
    #[error("the devices belong to {} different arrays ({}); choose one", .arrays.len(), list_uuids(.arrays))]
    SeveralArrays {
        /// The arrays found.
        arrays: Vec<Uuid>,
    },
    /// Too few members to read every byte.
    #[error("array {name} ({level}) cannot start: {present} of {roles} members present, at most {tolerance} may be missing; missing: {}{}", .missing.join(", "), summarize(.rejected))]
    NotEnoughMembers {
        /// Array name.
        name: String,
        /// Level.
        level: Level,
        /// Roles with a usable member.
        present: usize,
        /// Roles in the layout.
        roles: usize,
        /// Failures the level tolerates.
        tolerance: usize,
        /// Which members are missing (uuid and what is known of them).
        missing: Vec<String>,
        /// Devices rejected.
        rejected: Vec<Rejected>,
    },
    /// Missing members and degraded start was not allowed.
    #[error("array {name} is missing {} members and degraded start was not allowed: {}", .missing.len(), .missing.join(", "))]
    DegradedNotAllowed {
        /// Array name.
        name: String,
        /// Missing members.
        missing: Vec<String>,
    },
    /// Reading or writing metadata failed.
    #[error("assembly I/O failed: {0}")]
    Io(#[from] IoError),
}

fn summarize(r: &[Rejected]) -> String {
    if r.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = r
            .iter()
            .map(|x| format!("{}: {}", x.device, x.reason))
            .collect();
        format!(" (rejected: {})", parts.join("; "))
    }
}

fn list_uuids(u: &[Uuid]) -> String {
    u.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
}

/// Why an array read, write, flush or discard failed.
#[derive(Debug, thiserror::Error)]
pub enum ArrayIoError {
    /// More members have failed than the level tolerates; nothing is written any more.
    #[error("array {name} is offline: {reason}")]
    Offline {
        /// Array name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The request reaches past the end of the array.
    #[error("request {off}+{len} is outside the array ({size} bytes)")]
    OutOfRange {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Array size.
        size: u64,
    },
    /// The request is not aligned to the array's 4 KiB sector.
    #[error("request {off}+{len} is not aligned to 4096 bytes")]
    Misaligned {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
    },
    /// RAID-Z accepts only whole stripes in its stripe region.
    #[error(
        "RAID-Z writes must cover whole stripes of {stripe} bytes starting at stripe boundaries (request {off}+{len}); use the small-write region below {small_region} for smaller writes"
    )]
    NotFullStripe {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Stripe size.
        stripe: u64,
        /// End of the small-write region.
        small_region: u64,
    },
    /// Read errors on more members of one stripe than its parity covers: this range cannot be
    /// read (the array stays online; other data is unaffected).
    #[error("unrecoverable read error at array offset {off}: {reason}")]
    Unrecoverable {
        /// Logical offset of the stripe.
        off: u64,
        /// What was unreadable.
        reason: String,
    },
    /// An I/O error that redundancy could not cover (levels without redundancy).
    #[error("{0}")]
    Io(#[from] IoError),
}

/// Why an administrative action (spare, replace, rebuild, scrub) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The array is offline.
    #[error("array is offline: {0}")]
    Offline(String),
    /// No such role.
    #[error("role {role} does not exist (the array has {roles})")]
    NoSuchRole {
        /// Role asked for.
        role: usize,
        /// Roles in the layout.
        roles: usize,
    },
    /// The device cannot join.
    #[error("{dev} cannot join: {reason}")]
    Unsuitable {
        /// Device.
        dev: String,
        /// Why.
        reason: String,
    },
    /// Another background job runs.
    #[error("another job is running: {0}")]
    Busy(String),
    /// The member table has no room: every entry is a live member or spare.
    #[error(
        "the member table is full: {entries} live members and spares (at most {max}); remove a spare or a failed member first"
    )]
    TableFull {
        /// Live entries.
        entries: usize,
        /// Limit.
        max: usize,
    },
    /// The request does not apply in the current state.
    #[error("{0}")]
    InvalidState(String),
    /// I/O failed.
    #[error("I/O failed: {0}")]
    Io(#[from] IoError),
}
