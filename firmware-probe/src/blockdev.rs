//! Block devices: enumeration (sysfs, plus libudev when a udev database exists), identity, kind,
//! geometry, stacking, mounts, swap, partitions, contents and the verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use crate::config::{ProbeConfig, UdevMode};
use crate::fsx::{self, Loc, ReadAttrError, Roots};
use crate::health;
use crate::model::{
    BlockDevice, DeviceKind, DeviceSource, Partition, PartitionTable, PartitionTableKind,
    Transport, Unknown, Verdict, known, note,
};
use crate::mounts::{MountEntry, parse_mountinfo, parse_swaps};
use crate::signatures::{self, Detection, FileReader, SubReader};
use crate::udev::{DbFiles, Libudev, UdevRecord, UdevSource, decode_enc};
use crate::verdict::{Evidence, Scan, decide};

/// Partitions of one disk whose contents are read; the rest are reported but not read.
pub const MAX_PARTITIONS_READ: usize = 16;
/// Levels walked up the device tree looking for a USB serial number.
const MAX_PARENT_WALK: usize = 16;

/// Mount points by device number and by source device name.
#[derive(Debug, Default)]
struct MountIndex {
    by_devnum: BTreeMap<(u32, u32), BTreeSet<String>>,
    /// Keyed by the kernel name the mount source (`/dev/…`) resolves to.
    by_name: BTreeMap<String, BTreeSet<String>>,
}

/// State shared by all devices of one probe.
pub(crate) struct Ctx<'c> {
    pub(crate) config: &'c ProbeConfig,
    pub(crate) roots: Roots,
    mounts: Result<MountIndex, String>,
    /// Kernel names of active swap devices.
    swaps: Result<BTreeSet<String>, String>,
    by_id: BTreeMap<String, Vec<String>>,
    by_id_note: Option<String>,
    udev: Option<Box<dyn UdevSource>>,
    pub(crate) source: DeviceSource,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("roots", &self.roots)
            .field("source", &self.source)
            .finish()
    }
}

impl<'c> Ctx<'c> {
    pub(crate) fn new(config: &'c ProbeConfig) -> Self {
        let roots = Roots::new(config);
        let db = roots.run("udev/data");
        let (udev, source): (Option<Box<dyn UdevSource>>, DeviceSource) =
            if config.udev == UdevMode::Disabled || !db.real.is_dir() {
                (None, DeviceSource::Sysfs)
            } else if config.is_live_system() {
                (Some(Box::new(Libudev)), DeviceSource::Udev)
            } else {
                (
                    Some(Box::new(DbFiles::new(roots.clone()))),
                    DeviceSource::UdevDatabaseFiles,
                )
            };
        let mounts = read_mounts(&roots);
        let swaps = read_swaps(&roots);
        let (by_id, by_id_note) = read_by_id(&roots);
        Self {
            config,
            roots,
            mounts,
            swaps,
            by_id,
            by_id_note,
            udev,
            source,
        }
    }
}

/// Resolves a `/dev/...` path (possibly a symlink such as /dev/mapper/x) to a kernel name.
fn dev_name(roots: &Roots, path: &str) -> Option<String> {
    let rel = path.strip_prefix("/dev/")?;
    let loc = roots.dev(rel);
    let resolved = fs::canonicalize(&loc.real).ok();
    let name = resolved
        .as_deref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| rel.rsplit('/').next().map(str::to_owned))?;
    (!name.is_empty()).then_some(name)
}

fn read_mounts(roots: &Roots) -> Result<MountIndex, String> {
    let text = fsx::read_text(&roots.proc("self/mountinfo")).map_err(|e| e.to_string())?;
    let mut entries = parse_mountinfo(&text).map_err(|e| e.to_string())?;
    // A container or a private namespace can hide mounts of the host; init's table shows them
    // when we may read it. Its absence is not an error (not every tree records it).
    if let Ok(text) = fsx::read_text(&roots.proc("1/mountinfo")) {
        entries.extend(parse_mountinfo(&text).map_err(|e| format!("/proc/1/mountinfo: {e}"))?);
    }
    let mut index = MountIndex::default();
    for MountEntry {
        devnum,
        mount_point,
        source,
        ..
    } in entries
    {
        index
            .by_devnum
            .entry(devnum)
            .or_default()
            .insert(mount_point.clone());
        if let Some(name) = dev_name(roots, &source) {
            index.by_name.entry(name).or_default().insert(mount_point);
        }
    }
    Ok(index)
}

fn read_swaps(roots: &Roots) -> Result<BTreeSet<String>, String> {
    let text = fsx::read_text(&roots.proc("swaps")).map_err(|e| e.to_string())?;
    let swaps = parse_swaps(&text).map_err(|e| e.to_string())?;
    Ok(swaps
        .iter()
        .filter_map(|s| dev_name(roots, &s.filename))
        .collect())
}

fn read_by_id(roots: &Roots) -> (BTreeMap<String, Vec<String>>, Option<String>) {
    let dir = roots.dev("disk/by-id");
    let names = match fsx::list_dir(&dir) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => {
            return (
                BTreeMap::new(),
                Some("no /dev/disk/by-id (udev has not run)".to_owned()),
            );
        }
        Err(e) => return (BTreeMap::new(), Some(e.to_string())),
    };
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for link in names {
        if let Ok(target) = fsx::link_basename(&dir.join(&link)) {
            map.entry(target)
                .or_default()
                .push(format!("/dev/disk/by-id/{link}"));
        }
    }
    (map, None)
}

/// Lists whole block devices: `/sys/block`, united with libudev's list when it is used.
fn list_disks(ctx: &Ctx<'_>) -> Result<Vec<String>, ReadAttrError> {
    let mut names: BTreeSet<String> = fsx::list_dir(&ctx.roots.sys("block"))?
        .into_iter()
        .collect();
    if let Some(udev_names) = ctx.udev.as_ref().and_then(|u| u.enumerate_disks()) {
        names.extend(udev_names);
    }
    Ok(names.into_iter().filter(|n| valid_name(n)).collect())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && name.len() <= 255
}

/// Probes all block devices (or the configured one).
pub(crate) fn probe_devices(ctx: &Ctx<'_>, unknown: &mut Unknown) -> Vec<BlockDevice> {
    let names = match list_disks(ctx) {
        Ok(n) => n,
        Err(e) => {
            note(
                unknown,
                "devices",
                format!("cannot list block devices: {e}"),
            );
            return Vec::new();
        }
    };
    let names: Vec<String> = match &ctx.config.device {
        Some(want) => {
            if !valid_name(want) || !names.contains(want) {
                note(
                    unknown,
                    "devices",
                    format!(
                        "no whole block device named {want:?} in /sys/block (partitions are reported under their disk)"
                    ),
                );
                return Vec::new();
            }
            vec![want.clone()]
        }
        None => names,
    };
    names.iter().map(|n| probe_device(ctx, n)).collect()
}

fn parse_devnum(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_devnum(loc: &Loc) -> Result<(u32, u32), ReadAttrError> {
    let v = fsx::read_attr(loc)?;
    parse_devnum(&v).ok_or(ReadAttrError::Invalid {
        path: loc.shown.clone(),
        value: fsx::truncate(&v, 32),
        expected: "major:minor",
    })
}

/// sysfs `size` is always in 512-byte units.
fn read_size(loc: &Loc) -> Result<u64, ReadAttrError> {
    let sectors: u64 = fsx::read_num(loc)?;
    sectors.checked_mul(512).ok_or(ReadAttrError::Invalid {
        path: loc.shown.clone(),
        value: sectors.to_string(),
        expected: "a size below 2^64 bytes",
    })
}

/// Kind and transport from the name, the device path in sysfs and a few attributes.
pub(crate) fn classify(
    name: &str,
    devpath: Option<&str>,
    rotational: Option<bool>,
    scsi_vendor: Option<&str>,
    has_sas_address: bool,
) -> (DeviceKind, Transport) {
    let path = devpath.unwrap_or("");
    let digits_after = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    };
    if digits_after("loop") {
        return (DeviceKind::Loop, Transport::Virtual);
    }
    if name.starts_with("md") {
        return (DeviceKind::Md, Transport::Virtual);
    }
    if name.starts_with("dm-") {
        return (DeviceKind::Dm, Transport::Virtual);
    }
    if name.starts_with("zram") {
        return (DeviceKind::Zram, Transport::Virtual);
    }
    if digits_after("ram") {
        return (DeviceKind::Ram, Transport::Virtual);
    }
    if name.starts_with("nvme") {
        return (DeviceKind::Nvme, Transport::Nvme);
    }
    if name.starts_with("mmcblk") {
        return (DeviceKind::Mmc, Transport::Mmc);
    }
    if name.starts_with("vd") {
        return (DeviceKind::Virtio, Transport::Virtio);
    }
    let transport = if path.contains("/usb") {
        Transport::Usb
    } else if path.contains("/virtio") {
        Transport::Virtio
    } else if scsi_vendor == Some("ATA") || path.contains("/ata") {
        Transport::Sata
    } else if has_sas_address || path.contains("/end_device-") {
        Transport::Sas
    } else if name.starts_with("sd") || name.starts_with("sr") {
        Transport::Scsi
    } else if path.starts_with("/devices/virtual/") {
        Transport::Virtual
    } else {
        Transport::Unknown
    };
    let kind = if name.starts_with("sr") {
        DeviceKind::Optical
    } else {
        match transport {
            Transport::Usb => DeviceKind::Usb,
            Transport::Virtio => DeviceKind::Virtio,
            Transport::Sata | Transport::Sas | Transport::Scsi => match rotational {
                Some(true) => DeviceKind::Hdd,
                Some(false) => DeviceKind::Ssd,
                None => DeviceKind::Other,
            },
            _ => DeviceKind::Other,
        }
    };
    (kind, transport)
}

/// Serial number from a SCSI VPD page 0x80 (Unit Serial Number): 4-byte header, then ASCII.
#[must_use]
pub fn parse_vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let data = page.get(4..4 + len.min(page.len() - 4))?;
    let s: String = data
        .iter()
        .filter(|b| **b != 0)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// `naa.5002538e40a1b2c3` -> `0x5002538e40a1b2c3`; eui./nvme. designators stay as they are.
fn wwn_from_wwid(wwid: &str) -> Option<String> {
    if let Some(hex) = wwid.strip_prefix("naa.") {
        return Some(format!("0x{}", hex.to_ascii_lowercase()));
    }
    if wwid.starts_with("eui.") || wwid.starts_with("nvme.") {
        return Some(wwid.to_owned());
    }
    None
}

#[derive(Debug, Default)]
struct Identity {
    model: Option<String>,
    vendor: Option<String>,
    serial: Option<String>,
    wwn: Option<String>,
    wwid: Option<String>,
    firmware_revision: Option<String>,
}

const IDENTITY_FIELDS: [&str; 6] = [
    "model",
    "vendor",
    "serial",
    "wwn",
    "wwid",
    "firmware_revision",
];

fn identity(
    ctx: &Ctx<'_>,
    name: &str,
    base: &Loc,
    kind: DeviceKind,
    transport: Transport,
    devpath: Option<&str>,
    unknown: &mut Unknown,
) -> Identity {
    let mut id = Identity::default();
    let dev = base.join("device");
    match kind {
        DeviceKind::Nvme => {
            id.serial = known(unknown, "serial", fsx::read_nonempty(&dev.join("serial")));
            id.model = known(unknown, "model", fsx::read_nonempty(&dev.join("model")));
            id.firmware_revision = known(
                unknown,
                "firmware_revision",
                fsx::read_nonempty(&dev.join("firmware_rev")),
            );
            id.wwid = known(unknown, "wwid", fsx::read_nonempty(&base.join("wwid")));
            note(
                unknown,
                "vendor",
                "NVMe reports a PCI vendor id, not a name (see health.nvme.identify.vid)",
            );
        }
        DeviceKind::Virtio if name.starts_with("vd") => {
            id.serial = known(unknown, "serial", fsx::read_nonempty(&base.join("serial")));
            for f in ["model", "vendor", "firmware_revision", "wwid"] {
                note(unknown, f, "virtio-blk exposes no such attribute");
            }
        }
        DeviceKind::Mmc => {
            id.model = known(unknown, "model", fsx::read_nonempty(&dev.join("name")));
            id.serial = known(unknown, "serial", fsx::read_nonempty(&dev.join("serial")));
            id.vendor = known(unknown, "vendor", fsx::read_nonempty(&dev.join("manfid")));
            id.firmware_revision = known(
                unknown,
                "firmware_revision",
                fsx::read_nonempty(&dev.join("fwrev")),
            );
            note(unknown, "wwid", "SD/MMC devices have no WWID");
        }
        DeviceKind::Loop | DeviceKind::Md | DeviceKind::Dm | DeviceKind::Zram | DeviceKind::Ram => {
            for f in IDENTITY_FIELDS {
                note(
                    unknown,
                    f,
                    format!("{} devices have no hardware identity", kind.as_str()),
                );
            }
        }
        _ => {
            // SCSI disk model (sd, sr; SATA through libata, SAS, USB, virtio-scsi).
            id.model = known(unknown, "model", fsx::read_nonempty(&dev.join("model")));
            id.vendor = known(unknown, "vendor", fsx::read_nonempty(&dev.join("vendor")));
            id.firmware_revision = known(
                unknown,
                "firmware_revision",
                fsx::read_nonempty(&dev.join("rev")),
            );
            id.wwid = known(unknown, "wwid", fsx::read_nonempty(&dev.join("wwid")));
            id.serial = scsi_serial(ctx, &dev, transport, devpath)
                .map_err(|e| note(unknown, "serial", e))
                .ok();
        }
    }
    if id.wwn.is_none() {
        id.wwn = id.wwid.as_deref().and_then(wwn_from_wwid);
        if id.wwn.is_none() {
            note(unknown, "wwn", "no NAA/EUI designator in the wwid");
        }
    }
    id
}

fn scsi_serial(
    ctx: &Ctx<'_>,
    dev: &Loc,
    transport: Transport,
    devpath: Option<&str>,
) -> Result<String, String> {
    if let Ok(s) = fsx::read_nonempty(&dev.join("serial")) {
        return Ok(s);
    }
    let vpd = dev.join("vpd_pg80");
    match fsx::read_bytes(&vpd) {
        Ok(page) => {
            if let Some(s) = parse_vpd_serial(&page) {
                return Ok(s);
            }
        }
        Err(e) if !e.is_not_found() => return Err(e.to_string()),
        Err(_) => {}
    }
    if transport == Transport::Usb
        && let Some(s) = usb_serial(ctx, devpath)
    {
        return Ok(s);
    }
    Err("no serial in sysfs (device/serial, device/vpd_pg80); udev database absent".to_owned())
}

/// Walks up from the block device to the USB device (the directory with idVendor) and reads its
/// `serial`.
fn usb_serial(ctx: &Ctx<'_>, devpath: Option<&str>) -> Option<String> {
    let mut path = devpath?.trim_start_matches('/').to_owned();
    for _ in 0..MAX_PARENT_WALK {
        let (parent, _) = path.rsplit_once('/')?;
        path = parent.to_owned();
        let rel = path.strip_prefix("devices")?.trim_start_matches('/');
        let dir = ctx.roots.sys(&format!("devices/{rel}"));
        if fsx::exists(&dir.join("idVendor")) {
            return fsx::read_nonempty(&dir.join("serial")).ok();
        }
    }
    None
}

/// Merges udev properties on top of sysfs values: udev wins, it read the device itself.
fn merge_udev(
    rec: &UdevRecord,
    id: &mut Identity,
    kind: &mut DeviceKind,
    transport: &mut Transport,
    unknown: &mut Unknown,
) {
    let mut set = |field: &str, slot: &mut Option<String>, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            *slot = Some(v);
            unknown.remove(field);
        }
    };
    set(
        "serial",
        &mut id.serial,
        rec.get("ID_SERIAL_SHORT").map(str::to_owned),
    );
    set("wwn", &mut id.wwn, rec.get("ID_WWN").map(str::to_owned));
    set(
        "firmware_revision",
        &mut id.firmware_revision,
        rec.get("ID_REVISION").map(str::to_owned),
    );
    // ID_MODEL has blanks replaced by '_'; the _ENC form is exact. Prefer a sysfs value over the
    // mangled form.
    let model = rec.get("ID_MODEL_ENC").map(decode_enc).or_else(|| {
        if id.model.is_none() {
            rec.get("ID_MODEL").map(str::to_owned)
        } else {
            None
        }
    });
    set("model", &mut id.model, model);
    let vendor = rec.get("ID_VENDOR_ENC").map(decode_enc).or_else(|| {
        if id.vendor.is_none() {
            rec.get("ID_VENDOR").map(str::to_owned)
        } else {
            None
        }
    });
    set("vendor", &mut id.vendor, vendor);
    match rec.get("ID_BUS") {
        Some("usb") if *transport != Transport::Usb => {
            *transport = Transport::Usb;
            if matches!(*kind, DeviceKind::Ssd | DeviceKind::Hdd | DeviceKind::Other) {
                *kind = DeviceKind::Usb;
            }
        }
        Some("ata") if matches!(*transport, Transport::Scsi | Transport::Unknown) => {
            *transport = Transport::Sata;
        }
        _ => {}
    }
}

fn list_opt(loc: &Loc) -> Result<Vec<String>, String> {
    fsx::list_dir(loc).map_err(|e| e.to_string())
}

fn mount_points(
    ctx: &Ctx<'_>,
    name: &str,
    devnum: Option<(u32, u32)>,
) -> Result<Vec<String>, String> {
    let index = ctx.mounts.as_ref().map_err(Clone::clone)?;
    let devnum = devnum.ok_or_else(|| "device number unknown".to_owned())?;
    let mut out: BTreeSet<String> = index.by_devnum.get(&devnum).cloned().unwrap_or_default();
    out.extend(index.by_name.get(name).into_iter().flatten().cloned());
    Ok(out.into_iter().collect())
}

fn swap_active(ctx: &Ctx<'_>, name: &str) -> Result<bool, String> {
    let swaps = ctx.swaps.as_ref().map_err(Clone::clone)?;
    Ok(swaps.contains(name))
}

/// Opens the device node read-only (never for writing, never O_EXCL). O_NONBLOCK keeps a FIFO
/// planted in a recorded tree from hanging the probe; it has no effect on block devices.
fn open_node(ctx: &Ctx<'_>, name: &str) -> Result<File, String> {
    let node = ctx.roots.dev(name);
    let meta = fs::metadata(&node.real).map_err(|e| format!("cannot open {}: {e}", node.shown))?;
    let ft = meta.file_type();
    if ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
        return Err(format!("{} is not a block device", node.shown));
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&node.real)
        .map_err(|e| format!("cannot open {}: {e}", node.shown))
}

fn nvme_controller(name: &str, base: &Loc) -> Option<String> {
    let is_ctrl = |s: &str| {
        s.strip_prefix("nvme")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    };
    let dev = base.join("device");
    if let Ok(canon) = fs::canonicalize(&dev.real) {
        if let Some(n) = canon.file_name().map(|n| n.to_string_lossy().into_owned())
            && is_ctrl(&n)
        {
            return Some(n);
        }
        // Native multipath: `device` is the subsystem, which links its controllers.
        if let Ok(entries) = fsx::list_dir(&dev)
            && let Some(c) = entries.into_iter().find(|e| is_ctrl(e))
        {
            return Some(c);
        }
    }
    let rest = name.strip_prefix("nvme")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("nvme{digits}"))
}

fn probe_device(ctx: &Ctx<'_>, name: &str) -> BlockDevice {
    let mut unknown = Unknown::new();
    let base = ctx.roots.sys(&format!("block/{name}"));
    let devnum_res = read_devnum(&base.join("dev"));
    let devnum = devnum_res.as_ref().ok().copied();
    let size_res = read_size(&base.join("size")).map_err(|e| e.to_string());
    let size_bytes = known(&mut unknown, "size_bytes", size_res.clone());
    let logical_sector_size = known(
        &mut unknown,
        "logical_sector_size",
        fsx::read_num(&base.join("queue/logical_block_size")),
    );
    let physical_sector_size = known(
        &mut unknown,
        "physical_sector_size",
        fsx::read_num(&base.join("queue/physical_block_size")),
    );
    let rotational = known(
        &mut unknown,
        "rotational",
        fsx::read_bool01(&base.join("queue/rotational")),
    );
    let removable = known(
        &mut unknown,
        "removable",
        fsx::read_bool01(&base.join("removable")),
    );
    let ro_res = fsx::read_bool01(&base.join("ro")).map_err(|e| e.to_string());
    let read_only = known(&mut unknown, "read_only", ro_res.clone());
    let devpath = fsx::canonical_below(&base, ctx.roots.sys_dir()).ok();
    let dev = base.join("device");
    let scsi_vendor = fsx::read_attr(&dev.join("vendor")).ok();
    let has_sas = fsx::exists(&dev.join("sas_address"));
    let (mut kind, mut transport) = classify(
        name,
        devpath.as_deref(),
        rotational,
        scsi_vendor.as_deref(),
        has_sas,
    );
    let mut id = identity(
        ctx,
        name,
        &base,
        kind,
        transport,
        devpath.as_deref(),
        &mut unknown,
    );

    let mut by_id: BTreeSet<String> = ctx
        .by_id
        .get(name)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut udev_properties_merged = false;
    if let (Some(udev), Some(devnum)) = (&ctx.udev, devnum) {
        match udev.lookup(name, devnum) {
            Ok(Some(rec)) => {
                merge_udev(&rec, &mut id, &mut kind, &mut transport, &mut unknown);
                by_id.extend(rec.by_id());
                udev_properties_merged = true;
            }
            Ok(None) => {}
            Err(e) => note(&mut unknown, "udev_properties_merged", e.to_string()),
        }
    }
    if kind == DeviceKind::Other && rotational.is_none() {
        note(
            &mut unknown,
            "kind",
            "rotation unknown: cannot tell SSD from HDD",
        );
    }
    let devnum_str = match &devnum_res {
        Ok((a, b)) => Some(format!("{a}:{b}")),
        Err(e) => {
            note(&mut unknown, "devnum", e.to_string());
            None
        }
    };

    let loop_bound =
        (kind == DeviceKind::Loop).then(|| fsx::exists(&base.join("loop/backing_file")));
    let loop_backing_file = if kind == DeviceKind::Loop {
        match fsx::read_nonempty(&base.join("loop/backing_file")) {
            Ok(f) => Some(f),
            Err(_) => {
                note(
                    &mut unknown,
                    "loop_backing_file",
                    "loop device is not bound to a file",
                );
                None
            }
        }
    } else {
        note(&mut unknown, "loop_backing_file", "not a loop device");
        None
    };
    let dm_name = if kind == DeviceKind::Dm {
        known(
            &mut unknown,
            "dm_name",
            fsx::read_nonempty(&base.join("dm/name")),
        )
    } else {
        note(&mut unknown, "dm_name", "not a device-mapper device");
        None
    };
    let md_level = if kind == DeviceKind::Md {
        known(
            &mut unknown,
            "md_level",
            fsx::read_nonempty(&base.join("md/level")),
        )
    } else {
        note(&mut unknown, "md_level", "not an md array");
        None
    };
    let controller = if kind == DeviceKind::Nvme {
        nvme_controller(name, &base)
    } else {
        None
    };
    let nvme_controller_path = controller.as_ref().map(|c| format!("/dev/{c}"));
    if nvme_controller_path.is_none() {
        let why = if kind == DeviceKind::Nvme {
            "controller not found in sysfs"
        } else {
            "not an NVMe device"
        };
        note(&mut unknown, "nvme_controller", why);
    }

    let holders_res = list_opt(&base.join("holders"));
    let slaves_res = list_opt(&base.join("slaves"));
    let mounts_res = mount_points(ctx, name, devnum);
    let swap_res = swap_active(ctx, name);

    // Contents.
    let reader = match (&size_res, ctx.config.signatures) {
        (Ok(size), true) if *size > 0 => {
            Some(open_node(ctx, name).map(|f| FileReader::new(f, *size)))
        }
        _ => None,
    };
    let detection: Option<Detection> = match &reader {
        Some(Ok(r)) => Some(signatures::detect(r)),
        _ => None,
    };
    let size_err = size_res.as_ref().err().cloned();
    let open_err = match &reader {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    let scan = if !ctx.config.signatures {
        Scan::Disabled
    } else if let Some(e) = &open_err {
        Scan::NotRead(e)
    } else if let Some(d) = &detection {
        Scan::Done(d)
    } else if let Some(e) = &size_err {
        Scan::NotRead(e)
    } else {
        Scan::Empty
    };

    // Partitions.
    let part_reader = match &reader {
        Some(Ok(r)) => Some(r),
        _ => None,
    };
    let partitions_res = probe_partitions(ctx, &base, name, part_reader, scan);
    let part_verdicts: Result<Vec<(String, Verdict)>, String> = partitions_res
        .as_ref()
        .map(|ps| ps.iter().map(|p| (p.name.clone(), p.verdict)).collect())
        .map_err(Clone::clone);

    let evidence = Evidence {
        name,
        kind,
        size_bytes: size_res.as_ref().map(|s| *s).map_err(String::as_str),
        read_only: ro_res.as_ref().map(|r| *r).map_err(String::as_str),
        loop_bound,
        mounts: mounts_res.as_deref().map_err(String::as_str),
        holders: holders_res.as_deref().map_err(String::as_str),
        swap: swap_res.as_ref().map(|s| *s).map_err(String::as_str),
        partitions: part_verdicts.as_deref().map_err(String::as_str),
        scan,
    };
    let (verdict, reasons) = decide(&evidence);

    let signatures = match (&detection, scan) {
        (Some(d), _) => Some(d.signatures.clone()),
        (None, Scan::Empty) => Some(Vec::new()),
        (None, Scan::Disabled) => {
            note(&mut unknown, "signatures", "signature checks switched off");
            None
        }
        (None, Scan::NotRead(why)) => {
            note(&mut unknown, "signatures", why);
            None
        }
        (None, Scan::Done(_)) => None,
    };
    let kernel_parts: Vec<&str> = partitions_res
        .as_ref()
        .map(|ps| ps.iter().map(|p| p.name.as_str()).collect())
        .unwrap_or_default();
    let partition_table = match (&detection, scan) {
        (Some(d), _)
            if d.partition_table.kind == PartitionTableKind::None && !kernel_parts.is_empty() =>
        {
            Some(PartitionTable {
                kind: PartitionTableKind::KernelOnly,
                detail: format!(
                    "no MBR or GPT recognised, but the kernel lists partitions {}",
                    kernel_parts.join(", ")
                ),
            })
        }
        (Some(d), _) => Some(d.partition_table.clone()),
        (None, Scan::Empty) => Some(PartitionTable {
            kind: PartitionTableKind::None,
            detail: "empty device".to_owned(),
        }),
        _ => {
            note(&mut unknown, "partition_table", "device contents not read");
            None
        }
    };
    if let Some(d) = &detection
        && !d.complete()
    {
        let why = format!(
            "{} regions could not be read: list may be incomplete",
            d.failures.len()
        );
        note(&mut unknown, "signatures", why);
    }

    let health = health::device_health(ctx.config, &ctx.roots, name, kind, controller.as_deref());
    let by_id: Vec<String> = by_id.into_iter().collect();
    if by_id.is_empty()
        && let Some(why) = &ctx.by_id_note
    {
        note(&mut unknown, "by_id", why.clone());
    }
    BlockDevice {
        name: name.to_owned(),
        path: format!("/dev/{name}"),
        devnum: devnum_str,
        kind,
        transport,
        size_bytes,
        logical_sector_size,
        physical_sector_size,
        rotational,
        removable,
        read_only,
        model: id.model,
        vendor: id.vendor,
        serial: id.serial,
        wwn: id.wwn,
        wwid: id.wwid,
        firmware_revision: id.firmware_revision,
        by_id,
        udev_properties_merged,
        loop_backing_file,
        dm_name,
        md_level,
        nvme_controller: nvme_controller_path,
        partitions: known(&mut unknown, "partitions", partitions_res),
        holders: known(&mut unknown, "holders", holders_res),
        slaves: known(&mut unknown, "slaves", slaves_res),
        mount_points: known(&mut unknown, "mount_points", mounts_res),
        swap_active: known(&mut unknown, "swap_active", swap_res),
        partition_table,
        signatures,
        verdict,
        reasons,
        health,
        unknown,
    }
}

fn probe_partitions(
    ctx: &Ctx<'_>,
    base: &Loc,
    disk: &str,
    reader: Option<&FileReader>,
    disk_scan: Scan<'_>,
) -> Result<Vec<Partition>, String> {
    let entries = fsx::list_dir(base).map_err(|e| e.to_string())?;
    let mut names: Vec<(u32, String)> = entries
        .into_iter()
        .filter(|e| e.starts_with(disk) && fsx::exists(&base.join(&format!("{e}/partition"))))
        .map(|e| {
            let n = fsx::read_num::<u32>(&base.join(&format!("{e}/partition"))).unwrap_or(u32::MAX);
            (n, e)
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, (_, pname))| probe_partition(ctx, base, &pname, reader, disk_scan, i))
        .collect())
}

fn probe_partition(
    ctx: &Ctx<'_>,
    disk_base: &Loc,
    name: &str,
    reader: Option<&FileReader>,
    disk_scan: Scan<'_>,
    index: usize,
) -> Partition {
    let mut unknown = Unknown::new();
    let base = disk_base.join(name);
    let devnum_res = read_devnum(&base.join("dev"));
    let devnum = devnum_res.as_ref().ok().copied();
    let devnum_str = known(
        &mut unknown,
        "devnum",
        devnum_res.map(|(a, b)| format!("{a}:{b}")),
    );
    let number = known(
        &mut unknown,
        "number",
        fsx::read_num::<u32>(&base.join("partition")),
    );
    let start_res = read_size(&base.join("start")).map_err(|e| e.to_string());
    let size_res = read_size(&base.join("size")).map_err(|e| e.to_string());
    let start_bytes = known(&mut unknown, "start_bytes", start_res.clone());
    let size_bytes = known(&mut unknown, "size_bytes", size_res.clone());
    let ro_res = fsx::read_bool01(&base.join("ro")).map_err(|e| e.to_string());
    let holders_res = list_opt(&base.join("holders"));
    let mounts_res = mount_points(ctx, name, devnum);
    let swap_res = swap_active(ctx, name);

    let not_read;
    let detection = match (reader, &start_res, &size_res) {
        (Some(r), Ok(start), Ok(size)) if *size > 0 && index < MAX_PARTITIONS_READ => {
            Some(signatures::detect(&SubReader::new(r, *start, *size)))
        }
        _ => None,
    };
    let scan = match (&detection, disk_scan) {
        (Some(d), _) => Scan::Done(d),
        (None, Scan::Disabled) => Scan::Disabled,
        (None, Scan::NotRead(why)) => Scan::NotRead(why),
        (None, _) if size_res == Ok(0) => Scan::Empty,
        (None, _) => {
            not_read = if index >= MAX_PARTITIONS_READ {
                format!("only the first {MAX_PARTITIONS_READ} partitions of a disk are read")
            } else {
                "partition offset or size unknown".to_owned()
            };
            Scan::NotRead(&not_read)
        }
    };
    let evidence = Evidence {
        name,
        kind: DeviceKind::Other,
        size_bytes: size_res.as_ref().map(|s| *s).map_err(String::as_str),
        read_only: ro_res.as_ref().map(|r| *r).map_err(String::as_str),
        loop_bound: None,
        mounts: mounts_res.as_deref().map_err(String::as_str),
        holders: holders_res.as_deref().map_err(String::as_str),
        swap: swap_res.as_ref().map(|s| *s).map_err(String::as_str),
        partitions: Ok(&[]),
        scan,
    };
    let (verdict, reasons) = decide(&evidence);
    let signatures = match scan {
        Scan::Done(d) => Some(d.signatures.clone()),
        Scan::Empty => Some(Vec::new()),
        Scan::Disabled => {
            note(&mut unknown, "signatures", "signature checks switched off");
            None
        }
        Scan::NotRead(why) => {
            note(&mut unknown, "signatures", why);
            None
        }
    };
    let mut by_id: BTreeSet<String> = ctx
        .by_id
        .get(name)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if let (Some(udev), Some(devnum)) = (&ctx.udev, devnum) {
        match udev.lookup(name, devnum) {
            Ok(Some(rec)) => by_id.extend(rec.by_id()),
            Ok(None) => {}
            Err(e) => note(&mut unknown, "by_id", e.to_string()),
        }
    }
    let by_id: Vec<String> = by_id.into_iter().collect();
    Partition {
        name: name.to_owned(),
        path: format!("/dev/{name}"),
        devnum: devnum_str,
        number,
        start_bytes,
        size_bytes,
        by_id,
        holders: known(&mut unknown, "holders", holders_res),
        mount_points: known(&mut unknown, "mount_points", mounts_res),
        swap_active: known(&mut unknown, "swap_active", swap_res),
        signatures,
        verdict,
        reasons,
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classify_by_name_and_path() {
        let c = |n, p, r, v, sas| classify(n, p, r, v, sas);
        assert_eq!(
            c("loop3", None, None, None, false),
            (DeviceKind::Loop, Transport::Virtual)
        );
        assert_eq!(
            c("md127", None, None, None, false),
            (DeviceKind::Md, Transport::Virtual)
        );
        assert_eq!(
            c("dm-0", None, None, None, false),
            (DeviceKind::Dm, Transport::Virtual)
        );
        assert_eq!(
            c("zram0", None, None, None, false),
            (DeviceKind::Zram, Transport::Virtual)
        );
        assert_eq!(
            c("ram0", None, None, None, false),
            (DeviceKind::Ram, Transport::Virtual)
        );
        assert_eq!(
            c("nvme0n1", None, Some(false), None, false),
            (DeviceKind::Nvme, Transport::Nvme)
        );
        assert_eq!(
            c("vda", None, Some(true), None, false),
            (DeviceKind::Virtio, Transport::Virtio)
        );
        let ata = "/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda";
        assert_eq!(
            c("sda", Some(ata), Some(false), Some("ATA"), false),
            (DeviceKind::Ssd, Transport::Sata)
        );
        assert_eq!(
            c("sda", Some(ata), Some(true), Some("ATA"), false),
            (DeviceKind::Hdd, Transport::Sata)
        );
        let sas = "/devices/pci0000:00/0000:03:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sdb";
        assert_eq!(
            c("sdb", Some(sas), Some(true), Some("SEAGATE"), true),
            (DeviceKind::Hdd, Transport::Sas)
        );
        assert_eq!(
            c("sdb", Some(sas), Some(false), Some("HGST"), true),
            (DeviceKind::Ssd, Transport::Sas)
        );
        // A SATA drive behind a SAS HBA is SATA.
        assert_eq!(
            c("sdb", Some(sas), Some(true), Some("ATA"), true),
            (DeviceKind::Hdd, Transport::Sata)
        );
        let usb =
            "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc";
        assert_eq!(
            c("sdc", Some(usb), Some(true), Some("SanDisk"), false),
            (DeviceKind::Usb, Transport::Usb)
        );
        let vscsi = "/devices/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdd";
        assert_eq!(
            c("sdd", Some(vscsi), Some(true), Some("QEMU"), false),
            (DeviceKind::Virtio, Transport::Virtio)
        );
        assert_eq!(
            c("sr0", Some(ata), Some(true), Some("ATA"), false).0,
            DeviceKind::Optical
        );
        assert_eq!(
            c("sde", None, None, None, false),
            (DeviceKind::Other, Transport::Scsi)
        );
        assert_eq!(c("loopx", None, None, None, false).0, DeviceKind::Other);
    }

    #[test]
    fn vpd_serial() {
        let mut page = vec![0u8, 0x80, 0, 20];
        page.extend_from_slice(b"  WD-WCC7K4HJ2XYZ    ");
        assert_eq!(parse_vpd_serial(&page).as_deref(), Some("WD-WCC7K4HJ2XYZ"));
        assert_eq!(
            parse_vpd_serial(&[0, 0x83, 0, 4, b'a', b'b', b'c', b'd']),
            None
        );
        assert_eq!(
            parse_vpd_serial(&[0, 0x80, 0xff, 0xff, b'x']).as_deref(),
            Some("x")
        );
        assert_eq!(parse_vpd_serial(&[0, 0x80, 0, 0]), None);
    }

    #[test]
    fn wwn_from_designators() {
        assert_eq!(
            wwn_from_wwid("naa.5002538E40A1B2C3").as_deref(),
            Some("0x5002538e40a1b2c3")
        );
        assert_eq!(
            wwn_from_wwid("eui.0025388b91b2c3d4").as_deref(),
            Some("eui.0025388b91b2c3d4")
        );
        assert_eq!(wwn_from_wwid("t10.ATA     Samsung SSD"), None);
    }

    proptest! {
        #[test]
        fn vpd_parser_never_panics(page in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_vpd_serial(&page);
        }
    }
}
