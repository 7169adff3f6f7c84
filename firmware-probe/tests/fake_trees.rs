//! Probes recorded sysfs/dev/proc trees built in tempdirs: every device kind, every in-use reason,
//! the unusable and unknown cases, udev merging and the JSON invariants.

mod common;

use common::{GIB, MIB, assert_unknown_invariant, fake_machine, fake_machine_config};
use dw_probe::fixture::{FakeDisk, FakeImage, FakePartition, FakeTree};
use dw_probe::model::{HealthReasonCode, HealthSource, HealthVerdict};
use dw_probe::{
    BlockDevice, DeviceKind, DeviceSource, Inventory, PartitionTableKind, ProbeConfig, ReasonCode,
    SignatureKind, Transport, Verdict, probe,
};

fn run(tree: &FakeTree) -> Inventory {
    let inv = probe(&ProbeConfig::recorded(tree.root()));
    assert_unknown_invariant(&serde_json::to_value(&inv).unwrap(), "inventory");
    inv
}

fn dev<'a>(inv: &'a Inventory, name: &str) -> &'a BlockDevice {
    inv.devices
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no device {name}"))
}

fn codes(d: &BlockDevice) -> Vec<ReasonCode> {
    d.reasons.iter().map(|r| r.code).collect()
}

/// One blank virtio disk `vdb` with `patches`; returns its probe result.
fn single(size: u64, patches: &[(u64, &[u8])]) -> BlockDevice {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    let mut d = FakeDisk::new("vdb", (254, 16), size).on(common::VIRTIO_PATH);
    for (off, bytes) in patches {
        d = d.patch(*off, bytes);
    }
    t.add_disk(&d).unwrap();
    run(&t).devices.into_iter().next().unwrap()
}

// Goal: each device kind is recognised with the right kind, transport and identity.
#[test]
fn every_device_kind() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(dir.path());
    let inv = run(&tree);
    assert_eq!(inv.device_source, DeviceSource::Sysfs);
    let names: Vec<&str> = inv.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "dm-0", "loop0", "loop1", "md0", "nvme0n1", "sda", "sdb", "sdc", "sdd", "vda", "zram0"
        ]
    );
    let expect = [
        ("nvme0n1", DeviceKind::Nvme, Transport::Nvme),
        ("sda", DeviceKind::Ssd, Transport::Sata),
        ("sdb", DeviceKind::Hdd, Transport::Sata),
        ("sdc", DeviceKind::Hdd, Transport::Sas),
        ("sdd", DeviceKind::Usb, Transport::Usb),
        ("vda", DeviceKind::Virtio, Transport::Virtio),
        ("loop0", DeviceKind::Loop, Transport::Virtual),
        ("loop1", DeviceKind::Loop, Transport::Virtual),
        ("md0", DeviceKind::Md, Transport::Virtual),
        ("dm-0", DeviceKind::Dm, Transport::Virtual),
        ("zram0", DeviceKind::Zram, Transport::Virtual),
    ];
    for (name, kind, transport) in expect {
        let d = dev(&inv, name);
        assert_eq!((d.kind, d.transport), (kind, transport), "{name}");
    }
    let nvme = dev(&inv, "nvme0n1");
    assert_eq!(nvme.serial.as_deref(), Some("S5GXNX0R123456A"));
    assert_eq!(nvme.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
    assert_eq!(nvme.firmware_revision.as_deref(), Some("5B2QGXA7"));
    assert_eq!(nvme.wwn.as_deref(), Some("eui.002538b911b2c3d4"));
    assert_eq!(nvme.nvme_controller.as_deref(), Some("/dev/nvme0"));
    assert_eq!(nvme.size_bytes, Some(128 * MIB));
    assert_eq!(nvme.by_id.len(), 2);
    let sda = dev(&inv, "sda");
    assert_eq!(
        sda.serial.as_deref(),
        Some("S6PUNX0T402817K"),
        "serial from VPD page 0x80"
    );
    assert_eq!(sda.wwn.as_deref(), Some("0x5002538f4213a1b2"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(sda.model.as_deref(), Some("Samsung SSD 870 EVO 1TB"));
    assert_eq!(sda.firmware_revision.as_deref(), Some("2B6Q"));
    assert_eq!(sda.rotational, Some(false));
    let sdb = dev(&inv, "sdb");
    assert_eq!(
        (sdb.logical_sector_size, sdb.physical_sector_size),
        (Some(512), Some(4096))
    );
    assert_eq!(
        dev(&inv, "sdc").serial.as_deref(),
        Some("Z1Z5DWJK0000R5121ABC")
    );
    let usb = dev(&inv, "sdd");
    assert_eq!(
        usb.serial.as_deref(),
        Some("4C530001230415117352"),
        "serial from the USB device"
    );
    assert_eq!(usb.removable, Some(true));
    let vda = dev(&inv, "vda");
    assert_eq!(vda.serial.as_deref(), Some("dw-root-disk"));
    assert!(vda.model.is_none() && vda.unknown.contains_key("model"));
    assert_eq!(
        dev(&inv, "loop0").loop_backing_file.as_deref(),
        Some("/var/lib/dw/test.dwvd")
    );
    assert_eq!(dev(&inv, "md0").md_level.as_deref(), Some("raid1"));
    assert_eq!(
        dev(&inv, "md0").slaves.as_deref(),
        Some(&["sdb".to_owned()][..])
    );
    assert_eq!(dev(&inv, "dm-0").dm_name.as_deref(), Some("vg0-data"));
}

// Goal: the verdicts of the fake machine, each with the expected evidence.
#[test]
fn verdicts_of_the_fake_machine() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(dir.path());
    let inv = run(&tree);
    let v = |n: &str| dev(&inv, n).verdict;
    assert_eq!(v("sda"), Verdict::Available);
    assert_eq!(v("md0"), Verdict::Available);
    assert_eq!(v("loop1"), Verdict::Unusable);
    assert_eq!(codes(dev(&inv, "loop1")), vec![ReasonCode::LoopUnbound]);
    for n in [
        "nvme0n1", "sdb", "sdc", "sdd", "vda", "loop0", "dm-0", "zram0",
    ] {
        assert_eq!(v(n), Verdict::InUse, "{n}");
    }
    let nvme = dev(&inv, "nvme0n1");
    assert_eq!(
        codes(nvme),
        vec![
            ReasonCode::PartitionTable,
            ReasonCode::PartitionInUse,
            ReasonCode::PartitionInUse
        ]
    );
    let parts = nvme.partitions.as_ref().unwrap();
    assert_eq!(
        parts[0].signatures.as_ref().unwrap()[0].kind,
        SignatureKind::Ext4
    );
    assert_eq!(parts[0].verdict, Verdict::InUse);
    assert_eq!(
        parts[1].mount_points.as_deref(),
        Some(&["/".to_owned()][..])
    );
    assert_eq!(parts[0].by_id.len(), 1);
    assert_eq!(
        codes(dev(&inv, "sdb")),
        vec![ReasonCode::Holders, ReasonCode::Signature]
    );
    let sdc = dev(&inv, "sdc");
    assert_eq!(
        sdc.signatures.as_ref().unwrap()[0].kind,
        SignatureKind::DwArrayMember
    );
    assert_eq!(sdc.signatures.as_ref().unwrap()[0].offset, 64 * MIB - 4096);
    assert_eq!(
        dev(&inv, "sdd").signatures.as_ref().unwrap()[0].kind,
        SignatureKind::Vfat
    );
    assert_eq!(
        codes(dev(&inv, "vda")),
        vec![ReasonCode::Mounted, ReasonCode::Signature]
    );
    assert_eq!(
        dev(&inv, "loop0").signatures.as_ref().unwrap()[0].kind,
        SignatureKind::DwVde
    );
    assert_eq!(codes(dev(&inv, "dm-0")), vec![ReasonCode::Mounted]);
    assert_eq!(
        dev(&inv, "dm-0").mount_points.as_deref(),
        Some(&["/srv/data".to_owned()][..])
    );
    assert_eq!(
        codes(dev(&inv, "zram0")),
        vec![ReasonCode::Swap, ReasonCode::Signature]
    );
}

// Goal: every known signature alone makes a blank disk `in_use` with a signature reason naming it.
#[test]
fn every_signature_is_in_use() {
    let md = 0xa92b_4efcu32.to_le_bytes();
    let md_be = 0xa92b_4efcu32.to_be_bytes();
    let size = 64 * MIB;
    let zfs = 0x00ba_b10cu64.to_le_bytes();
    type Patches<'a> = Vec<(u64, &'a [u8])>;
    let cases: Vec<(SignatureKind, Patches<'_>)> = vec![
        (SignatureKind::Ext2, vec![(1080, &[0x53, 0xEF])]),
        (
            SignatureKind::Ext3,
            vec![(1080, &[0x53, 0xEF]), (1116, &[4, 0, 0, 0])],
        ),
        (SignatureKind::Xfs, vec![(0, b"XFSB")]),
        (SignatureKind::Btrfs, vec![(65600, b"_BHRfS_M")]),
        (SignatureKind::ZfsMember, vec![(128 * 1024, &zfs)]),
        (
            SignatureKind::ZfsMember,
            vec![(size - 256 * 1024 + 128 * 1024 + 4096, &zfs)],
        ),
        (SignatureKind::Luks1, vec![(0, b"LUKS\xba\xbe\x00\x01")]),
        (SignatureKind::Luks2, vec![(0, b"LUKS\xba\xbe\x00\x02")]),
        (SignatureKind::Luks2, vec![(16384, b"SKUL\xba\xbe")]),
        (SignatureKind::LinuxRaidMember, vec![(4096, &md)]),
        (SignatureKind::LinuxRaidMember, vec![(0, &md)]),
        (SignatureKind::LinuxRaidMember, vec![(size - 8192, &md)]),
        (SignatureKind::LinuxRaidMember, vec![(size - 65536, &md_be)]),
        (
            SignatureKind::Lvm2Member,
            vec![(512, b"LABELONE"), (536, b"LVM2 001")],
        ),
        (SignatureKind::Swap, vec![(4086, b"SWAPSPACE2")]),
        (SignatureKind::Swap, vec![(65526, b"SWAP-SPACE")]),
        (
            SignatureKind::Vfat,
            vec![
                (0, &[0xEB, 0x58, 0x90]),
                (11, &[0, 2]),
                (82, b"FAT32   "),
                (510, &[0x55, 0xAA]),
            ],
        ),
        (SignatureKind::Ntfs, vec![(3, b"NTFS    ")]),
        (SignatureKind::Iso9660, vec![(32769, b"CD001")]),
        (SignatureKind::DwArrayMember, vec![(4096, b"DWARRAY\0")]),
        (
            SignatureKind::DwArrayMember,
            vec![(size - 4096, b"DWARRAY\0")],
        ),
        (SignatureKind::DwVde, vec![(0, b"DWVD")]),
    ];
    for (kind, patches) in cases {
        let d = single(size, &patches);
        assert_eq!(d.verdict, Verdict::InUse, "{kind:?}");
        let sig = d
            .reasons
            .iter()
            .find(|r| r.code == ReasonCode::Signature)
            .unwrap_or_else(|| panic!("{kind:?}: {:?}", d.reasons));
        assert!(
            sig.detail.starts_with(kind.as_str()),
            "{kind:?}: {}",
            sig.detail
        );
        assert_eq!(d.signatures.as_ref().unwrap()[0].kind, kind);
    }
}

#[test]
fn partition_tables_are_in_use() {
    let boot = [0x55u8, 0xAA];
    let mut linux = [0u8; 16];
    linux[4] = 0x83;
    let mut pmbr = [0u8; 16];
    pmbr[4] = 0xEE;
    let mbr = single(8 * MIB, &[(446, &linux), (510, &boot)]);
    assert_eq!(
        mbr.partition_table.as_ref().unwrap().kind,
        PartitionTableKind::Mbr
    );
    assert_eq!(codes(&mbr), vec![ReasonCode::PartitionTable]);
    for lba1 in [512u64, 4096] {
        let gpt = single(8 * MIB, &[(446, &pmbr), (510, &boot), (lba1, b"EFI PART")]);
        assert_eq!(
            gpt.partition_table.as_ref().unwrap().kind,
            PartitionTableKind::Gpt
        );
        assert_eq!(gpt.verdict, Verdict::InUse);
    }
    let protective_only = single(8 * MIB, &[(446, &pmbr), (510, &boot)]);
    assert_eq!(protective_only.verdict, Verdict::InUse);
    let unrecognised = single(8 * MIB, &[(20_000, b"some old data")]);
    // Data outside the regions read is not seen (documented limitation).
    assert_eq!(
        single(8 * MIB, &[(100_000, b"old data")]).verdict,
        Verdict::Available
    );
    assert_eq!(codes(&unrecognised), vec![ReasonCode::UnrecognizedData]);
    let blank = single(8 * MIB, &[]);
    assert_eq!(blank.verdict, Verdict::Available);
    assert!(blank.reasons.is_empty());
    assert_eq!(
        blank.partition_table.as_ref().unwrap().kind,
        PartitionTableKind::None
    );
}

// Goal: stacking and mount evidence without any signature.
#[test]
fn mounted_holders_swap_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(
        &FakeDisk::new("sda", (8, 0), 8 * MIB)
            .on(common::ATA_PATH)
            .holder("dm-3"),
    )
    .unwrap();
    t.add_disk(&FakeDisk::new("sdb", (8, 16), 8 * MIB).on(common::ATA2_PATH))
        .unwrap();
    t.add_disk(
        &FakeDisk::new("sdc", (8, 32), 8 * MIB)
            .on(common::SAS_PATH)
            .partition(FakePartition {
                name: "sdc1".into(),
                number: 1,
                devnum: (8, 33),
                start_bytes: MIB,
                size_bytes: 4 * MIB,
                holders: vec!["md5".into()],
            }),
    )
    .unwrap();
    t.add_disk(&FakeDisk::new("vdb", (254, 16), 8 * MIB).on(common::VIRTIO_PATH))
        .unwrap();
    // btrfs-style anonymous device number: matched by the source device name.
    t.write(
        "proc/self/mountinfo",
        "30 1 0:45 /@home /home rw - btrfs /dev/sdb rw\n",
    )
    .unwrap();
    t.write(
        "proc/swaps",
        "Filename Type Size Used Priority\n/dev/vdb partition 8188 0 -2\n",
    )
    .unwrap();
    let inv = run(&t);
    assert_eq!(codes(dev(&inv, "sda")), vec![ReasonCode::Holders]);
    assert_eq!(
        dev(&inv, "sda").holders.as_deref(),
        Some(&["dm-3".to_owned()][..])
    );
    assert_eq!(codes(dev(&inv, "sdb")), vec![ReasonCode::Mounted]);
    assert_eq!(codes(dev(&inv, "vdb")), vec![ReasonCode::Swap]);
    assert_eq!(dev(&inv, "vdb").swap_active, Some(true));
    let sdc = dev(&inv, "sdc");
    assert_eq!(
        codes(sdc),
        vec![ReasonCode::PartitionTable, ReasonCode::PartitionInUse]
    );
    assert_eq!(
        sdc.partition_table.as_ref().unwrap().kind,
        PartitionTableKind::KernelOnly
    );
    let p = &sdc.partitions.as_ref().unwrap()[0];
    assert_eq!(
        (p.number, p.start_bytes, p.size_bytes),
        (Some(1), Some(MIB), Some(4 * MIB))
    );
    assert_eq!(p.reasons[0].code, ReasonCode::Holders);
}

// Goal: when a device cannot be read completely it is `unknown`, never `available`.
#[test]
fn unreadable_devices_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(
        &FakeDisk::new("sda", (8, 0), 8 * MIB)
            .on(common::ATA_PATH)
            .image(FakeImage::Missing),
    )
    .unwrap();
    t.add_disk(
        &FakeDisk::new("sdb", (8, 16), 8 * MIB)
            .on(common::ATA2_PATH)
            .image(FakeImage::Unreadable),
    )
    .unwrap();
    t.add_disk(
        &FakeDisk::new("vdb", (254, 16), 8 * MIB)
            .on(common::VIRTIO_PATH)
            .image(FakeImage::Truncated {
                len: MIB,
                patches: vec![],
            }),
    )
    .unwrap();
    // A truncated image that still shows a signature is in use: data wins over doubt.
    t.add_disk(
        &FakeDisk::new("vdc", (254, 32), 8 * MIB).image(FakeImage::Truncated {
            len: MIB,
            patches: vec![(0, b"XFSB".to_vec())],
        }),
    )
    .unwrap();
    let inv = run(&t);
    let sda = dev(&inv, "sda");
    assert_eq!(sda.verdict, Verdict::Unknown);
    assert_eq!(codes(sda), vec![ReasonCode::OpenFailed]);
    assert!(
        sda.reasons[0].detail.contains("/dev/sda"),
        "{}",
        sda.reasons[0].detail
    );
    let sdb = dev(&inv, "sdb");
    assert_eq!(sdb.verdict, Verdict::Unknown);
    assert!(
        codes(sdb).iter().all(|c| *c == ReasonCode::ReadFailed),
        "{:?}",
        sdb.reasons
    );
    let vdb = dev(&inv, "vdb");
    assert_eq!(vdb.verdict, Verdict::Unknown);
    assert!(codes(vdb).contains(&ReasonCode::ShortRead));
    assert!(vdb.unknown.contains_key("signatures"));
    assert_eq!(dev(&inv, "vdc").verdict, Verdict::InUse);
}

#[test]
fn failed_checks_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(&FakeDisk::new("sda", (8, 0), 8 * MIB).on(common::ATA_PATH))
        .unwrap();
    std::fs::remove_file(dir.path().join("proc/self/mountinfo")).unwrap();
    let inv = run(&t);
    let sda = dev(&inv, "sda");
    assert_eq!(sda.verdict, Verdict::Unknown);
    assert_eq!(codes(sda), vec![ReasonCode::CheckFailed]);
    assert!(sda.reasons[0].detail.contains("/proc/self/mountinfo"));
    assert!(sda.mount_points.is_none());

    // Signature checks switched off: never available.
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(&FakeDisk::new("sda", (8, 0), 8 * MIB).on(common::ATA_PATH))
        .unwrap();
    let mut c = ProbeConfig::recorded(t.root());
    c.signatures = false;
    let inv = probe(&c);
    assert_eq!(inv.devices[0].verdict, Verdict::Unknown);
    assert_eq!(codes(&inv.devices[0]), vec![ReasonCode::NotChecked]);
}

#[test]
fn unusable_devices() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(
        &FakeDisk::new("sda", (8, 0), 8 * MIB)
            .on(common::ATA_PATH)
            .read_only(true),
    )
    .unwrap();
    t.add_disk(&FakeDisk::new("zram1", (252, 1), 8 * MIB))
        .unwrap();
    t.add_disk(&FakeDisk::new("zram2", (252, 2), 0)).unwrap();
    t.add_disk(&FakeDisk::new("loop4", (7, 4), 0)).unwrap();
    let inv = run(&t);
    assert_eq!(codes(dev(&inv, "sda")), vec![ReasonCode::ReadOnly]);
    assert_eq!(codes(dev(&inv, "zram1")), vec![ReasonCode::RamBacked]);
    assert_eq!(codes(dev(&inv, "zram2")), vec![ReasonCode::ZeroSize]);
    assert_eq!(codes(dev(&inv, "loop4")), vec![ReasonCode::LoopUnbound]);
    for d in &inv.devices {
        assert_eq!(d.verdict, Verdict::Unusable, "{}", d.name);
    }
}

// Goal: udev database properties are merged on top of sysfs.
#[test]
fn udev_database_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(
        &FakeDisk::new("sda", (8, 0), 8 * MIB)
            .on(common::ATA_PATH)
            .rotational(true)
            .partition(FakePartition {
                name: "sda1".into(),
                number: 1,
                devnum: (8, 1),
                start_bytes: MIB,
                size_bytes: 4 * MIB,
                holders: vec![],
            }),
    )
    .unwrap();
    t.udev_db(
        (8, 0),
        "S:disk/by-id/ata-ST8000VN004-2M2101_WSD1ABCD\nS:disk/by-id/wwn-0x5000c500c1d2e3f4\n\
         S:disk/by-path/pci-0000:00:17.0-ata-1\nE:ID_BUS=ata\nE:ID_MODEL=ST8000VN004-2M2101\n\
         E:ID_MODEL_ENC=ST8000VN004-2M2101\\x20\\x20\nE:ID_SERIAL_SHORT=WSD1ABCD\nE:ID_WWN=0x5000c500c1d2e3f4\n\
         E:ID_REVISION=SC60\nE:ID_VENDOR=ATA\n",
    )
    .unwrap();
    t.udev_db(
        (8, 1),
        "S:disk/by-id/ata-ST8000VN004-2M2101_WSD1ABCD-part1\nE:ID_PART_ENTRY_NUMBER=1\n",
    )
    .unwrap();
    let inv = run(&t);
    assert_eq!(inv.device_source, DeviceSource::UdevDatabaseFiles);
    let part = &inv.devices[0].partitions.as_ref().unwrap()[0];
    assert_eq!(
        part.by_id,
        vec!["/dev/disk/by-id/ata-ST8000VN004-2M2101_WSD1ABCD-part1"]
    );
    let sda = &inv.devices[0];
    assert!(sda.udev_properties_merged);
    assert_eq!(sda.serial.as_deref(), Some("WSD1ABCD"));
    assert_eq!(sda.wwn.as_deref(), Some("0x5000c500c1d2e3f4"));
    assert_eq!(sda.model.as_deref(), Some("ST8000VN004-2M2101"));
    assert_eq!(sda.firmware_revision.as_deref(), Some("SC60"));
    assert_eq!(sda.transport, Transport::Sata);
    assert_eq!(sda.kind, DeviceKind::Hdd);
    assert_eq!(
        sda.by_id,
        vec![
            "/dev/disk/by-id/ata-ST8000VN004-2M2101_WSD1ABCD",
            "/dev/disk/by-id/wwn-0x5000c500c1d2e3f4"
        ]
    );
    assert!(!sda.unknown.contains_key("serial"));
}

#[test]
fn device_filter() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(dir.path());
    let mut c = ProbeConfig::recorded(tree.root());
    c.device = Some("sdc".to_owned());
    let inv = probe(&c);
    assert_eq!(inv.devices.len(), 1);
    assert_eq!(inv.devices[0].name, "sdc");
    for bad in ["sdz", "nvme0n1p1", "../block", ""] {
        c.device = Some(bad.to_owned());
        let inv = probe(&c);
        assert!(inv.devices.is_empty(), "{bad}");
        assert!(inv.unknown.contains_key("devices"));
        assert!(!inv.nothing_probed(), "the platform was still probed");
    }
}

#[test]
fn nothing_probed_on_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inv = probe(&ProbeConfig::recorded(dir.path()));
    assert!(inv.nothing_probed());
    assert!(inv.unknown["devices"].contains("/sys/block"));
    assert_unknown_invariant(&serde_json::to_value(&inv).unwrap(), "inventory");
}

// Goal: health through the fake smartctl and the NVMe ioctl path on a non-NVMe node.
#[test]
fn health_paths() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(&dir.path().join("tree"));
    let smartctl = common::fake_smartctl();
    let inv = probe(&fake_machine_config(&tree, Some(smartctl)));
    assert_unknown_invariant(&serde_json::to_value(&inv).unwrap(), "inventory");
    let h = |n: &str| &dev(&inv, n).health;
    assert_eq!(h("sda").verdict, HealthVerdict::Ok);
    assert_eq!(h("sda").source, Some(HealthSource::Smartctl));
    assert_eq!(h("sda").power_on_hours, Some(12_842));
    assert_eq!(h("sdb").verdict, HealthVerdict::Warning);
    assert!(
        h("sdb")
            .reasons
            .iter()
            .any(|r| r.code == HealthReasonCode::PendingSectors)
    );
    assert_eq!(h("sdc").verdict, HealthVerdict::Warning);
    assert_eq!(h("sdc").reasons[0].code, HealthReasonCode::GrownDefects);
    assert_eq!(h("sdd").verdict, HealthVerdict::Unknown);
    assert_eq!(h("sdd").reasons[0].code, HealthReasonCode::QueryFailed);
    assert_eq!(h("vda").reasons[0].code, HealthReasonCode::NoSmart);
    let nvme = h("nvme0n1");
    assert_eq!(nvme.verdict, HealthVerdict::Unknown);
    assert!(
        nvme.reasons[0].detail.contains("ENOTTY"),
        "{}",
        nvme.reasons[0].detail
    );
    assert_eq!(nvme.nvme.as_ref().unwrap().controller, "/dev/nvme0");

    // Without smartctl.
    let mut c = fake_machine_config(&tree, None);
    c.device = Some("sda".to_owned());
    let inv = probe(&c);
    assert_eq!(
        inv.devices[0].health.reasons[0].code,
        HealthReasonCode::ToolMissing
    );
    c.smartctl.program = Some("/nonexistent/smartctl".into());
    let inv = probe(&c);
    assert!(
        inv.devices[0].health.reasons[0]
            .detail
            .contains("smartmontools not installed")
    );
    c.health = false;
    let inv = probe(&c);
    assert_eq!(
        inv.devices[0].health.reasons[0].code,
        HealthReasonCode::NotProbed
    );
}

#[test]
fn platform_from_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(dir.path());
    let inv = probe(&fake_machine_config(&tree, None));
    let p = &inv.platform;
    assert_eq!(p.cpu.threads, Some(3));
    assert_eq!(p.cpu.cores, Some(2));
    assert_eq!(p.cpu.sockets, Some(1));
    assert!(p.cpu.features.as_ref().unwrap().avx512bw);
    assert_eq!(p.memory.total_bytes, Some(263_842_148 * 1024));
    assert_eq!(p.tpm.version_major, Some(2));
    assert!(p.tpm.present);
    assert_eq!(
        p.tpm.pcr_banks_sysfs.as_deref(),
        Some(&["sha1".to_owned(), "sha256".to_owned()][..])
    );
    assert_eq!(p.tpm.resource_manager_node.as_deref(), Some("/dev/tpmrm0"));
    assert!(p.tpm.pcr_banks.is_none() && p.tpm.unknown.contains_key("pcr_banks"));
    let host = &p.sev.host;
    assert_eq!(
        (host.cpu_sev, host.cpu_sev_es, host.cpu_sev_snp),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(host.c_bit_position, Some(51));
    assert_eq!(host.max_encrypted_guests, Some(509));
    assert_eq!(host.kvm_sev_snp, Some(false));
    assert_eq!(host.usable_level, dw_probe::model::SevLevel::SevEs);
    assert_eq!(p.sev.guest.hypervisor, Some(false));
    assert_eq!(p.sev.guest.level, Some(dw_probe::model::SevLevel::None));
    let nic = p.network.iter().find(|n| n.name == "enp3s0").unwrap();
    assert_eq!(nic.driver.as_deref(), Some("ice"));
    assert_eq!(nic.speed_mbps, Some(25_000));
    assert_eq!(nic.mtu, Some(9000));
    assert!(!nic.is_virtual);
    assert_eq!(nic.addresses.as_ref().unwrap()[0].address, "192.0.2.10");
    let lo = p.network.iter().find(|n| n.name == "lo").unwrap();
    assert!(lo.is_virtual && lo.speed_mbps.is_none() && lo.unknown.contains_key("speed_mbps"));
    let _ = GIB;
}

#[test]
fn sev_guest_detection() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.write(
        "proc/cpuinfo",
        "processor\t: 0\nflags\t\t: fpu hypervisor sev sev_es sev_snp\n",
    )
    .unwrap();
    t.write("dev/sev-guest", "").unwrap();
    let inv = probe(&ProbeConfig::recorded(t.root()));
    let g = &inv.platform.sev.guest;
    assert_eq!(g.level, Some(dw_probe::model::SevLevel::SevSnp));
    assert!(g.dev_sev_guest);
    assert_eq!(
        inv.platform.sev.host.usable_level,
        dw_probe::model::SevLevel::None
    );
    assert!(inv.platform.sev.host.cpu_sev.is_none());
}

// Goal: a truncated or absent attribute becomes null with a reason, never a panic.
#[test]
fn odd_sysfs_values() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    t.add_disk(&FakeDisk::new("sda", (8, 0), 8 * MIB).on(common::ATA_PATH))
        .unwrap();
    let base = dir
        .path()
        .join("sys")
        .join("devices")
        .join(common::ATA_PATH)
        .join("block/sda");
    std::fs::write(base.join("size"), "not a number\n").unwrap();
    std::fs::remove_file(base.join("queue/rotational")).unwrap();
    std::fs::write(base.join("ro"), "2\n").unwrap();
    let inv = run(&t);
    let sda = &inv.devices[0];
    assert!(sda.size_bytes.is_none());
    assert!(sda.unknown["size_bytes"].contains("expected a decimal number"));
    assert_eq!(sda.kind, DeviceKind::Other);
    assert!(sda.unknown.contains_key("kind"));
    assert_eq!(sda.verdict, Verdict::Unknown);
}

// Goal: SD/eMMC cards: kind, transport and identity from the card's attributes (`name`,
// `serial`, `manfid`, `fwrev`); an eMMC boot partition (read-only by default) is never offered.
#[test]
fn mmc_devices() {
    let dir = tempfile::tempdir().unwrap();
    let t = FakeTree::create(dir.path()).unwrap();
    let card = "platform/fe320000.mmc/mmc_host/mmc1/mmc1:0001";
    t.add_disk(
        &FakeDisk::new("mmcblk1", (179, 0), 32 * GIB)
            .on(card)
            .device_attr("name", "SE32G\n")
            .device_attr("serial", "0x2e3f5a71\n")
            .device_attr("manfid", "0x000003\n")
            .device_attr("fwrev", "0x8\n")
            .device_attr("type", "SD\n"),
    )
    .unwrap();
    t.add_disk(
        &FakeDisk::new("mmcblk1boot0", (179, 8), 4 * MIB)
            .on(card)
            .read_only(true),
    )
    .unwrap();
    let inv = run(&t);
    let d = dev(&inv, "mmcblk1");
    assert_eq!((d.kind, d.transport), (DeviceKind::Mmc, Transport::Mmc));
    assert_eq!(d.model.as_deref(), Some("SE32G"));
    assert_eq!(d.serial.as_deref(), Some("0x2e3f5a71"));
    assert_eq!(d.vendor.as_deref(), Some("0x000003"));
    assert_eq!(d.firmware_revision.as_deref(), Some("0x8"));
    assert!(d.wwid.is_none() && d.unknown.contains_key("wwid"), "{d:?}");
    assert_eq!(d.size_bytes, Some(32 * GIB));
    assert_eq!(d.verdict, Verdict::Available, "{:?}", d.reasons);
    let boot = dev(&inv, "mmcblk1boot0");
    assert_eq!(boot.kind, DeviceKind::Mmc);
    assert_ne!(boot.verdict, Verdict::Available, "{:?}", boot.reasons);
    assert!(
        codes(boot).contains(&ReasonCode::ReadOnly),
        "{:?}",
        boot.reasons
    );
}
