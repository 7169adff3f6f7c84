//! Shared helpers for the integration tests: a recorded machine with one device of every kind,
//! and the JSON invariant checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dw_probe::fixture::{FakeDisk, FakePartition, FakeTree};
use dw_probe::model::{IfAddress, IpFamily};
use dw_probe::{AddressSource, CpuidSnapshot, CpuidSource, ProbeConfig};
use serde_json::Value;

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

pub const ATA_PATH: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
pub const ATA2_PATH: &str = "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0";
pub const SAS_PATH: &str =
    "pci0000:00/0000:00:01.0/0000:02:00.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0";
pub const USB_DEV: &str = "pci0000:00/0000:00:14.0/usb2/2-1";
pub const USB_PATH: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
pub const NVME_CTRL: &str = "pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0";
pub const VIRTIO_PATH: &str = "pci0000:00/0000:00:04.0/virtio1";

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// VPD page 0x80 holding `serial`.
pub fn vpd80(serial: &str) -> Vec<u8> {
    let mut page = vec![0u8, 0x80, 0, u8::try_from(serial.len()).unwrap()];
    page.extend_from_slice(serial.as_bytes());
    page
}

pub fn ext4_superblock() -> Vec<(u64, Vec<u8>)> {
    vec![
        (1024 + 56, vec![0x53, 0xEF]),
        (1024 + 0x5C, vec![0x3C, 0, 0, 0]),
        (1024 + 0x60, vec![0xC2, 0x02, 0, 0]),
        (1024 + 0x64, vec![0x6B, 0x04, 0, 0]),
    ]
}

pub fn gpt_with_pmbr() -> Vec<(u64, Vec<u8>)> {
    let mut pmbr = vec![0u8; 16];
    pmbr[4] = 0xEE;
    vec![
        (446, pmbr),
        (510, vec![0x55, 0xAA]),
        (512, b"EFI PART".to_vec()),
    ]
}

pub fn sata_ssd() -> FakeDisk {
    FakeDisk::new("sda", (8, 0), 64 * MIB)
        .on(ATA_PATH)
        .device_attr("vendor", "ATA     \n")
        .device_attr("model", "Samsung SSD 870 EVO 1TB \n")
        .device_attr("rev", "2B6Q\n")
        .device_attr("wwid", "naa.5002538f4213a1b2\n")
        .device_attr("vpd_pg80", vpd80("S6PUNX0T402817K"))
}

/// A fake smartctl that prints the canned report of the device it is asked about.
pub fn fake_smartctl() -> PathBuf {
    data_dir().join("fake-smartctl")
}

/// Fixed CPUID values of an SEV-SNP capable EPYC host.
pub fn epyc_cpuid() -> CpuidSnapshot {
    CpuidSnapshot {
        vendor: "AuthenticAMD".to_owned(),
        max_extended_leaf: 0x8000_0028,
        leaf_8000_001f: Some([0x0101_fd3f, 0x0000_4173, 0x0000_01fd, 0x0000_0001]),
    }
}

/// A recorded machine with one device of every kind and every kind of platform data.
pub fn fake_machine(root: &Path) -> FakeTree {
    let t = FakeTree::create(root).unwrap();
    // NVMe namespace, GPT with an ext4 root partition mounted at /.
    let mut nvme = FakeDisk::new("nvme0n1", (259, 0), 128 * MIB)
        .directly_on(NVME_CTRL)
        .device_attr("serial", "S5GXNX0R123456A     \n")
        .device_attr("model", "Samsung SSD 980 PRO 1TB                 \n")
        .device_attr("firmware_rev", "5B2QGXA7\n")
        .attr("wwid", "eui.002538b911b2c3d4\n")
        .partition(FakePartition {
            name: "nvme0n1p1".into(),
            number: 1,
            devnum: (259, 1),
            start_bytes: MIB,
            size_bytes: 64 * MIB,
            holders: vec![],
        })
        .partition(FakePartition {
            name: "nvme0n1p2".into(),
            number: 2,
            devnum: (259, 2),
            start_bytes: 65 * MIB,
            size_bytes: 32 * MIB,
            holders: vec![],
        })
        .sectors(512, 512);
    for (off, bytes) in gpt_with_pmbr() {
        nvme = nvme.patch(off, bytes);
    }
    for (off, bytes) in ext4_superblock() {
        nvme = nvme.patch(MIB + off, bytes);
    }
    t.add_disk(&nvme).unwrap();
    t.write("dev/nvme0", "").unwrap();
    t.write(
        "sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0/nvme/nvme0/dev",
        "242:0\n",
    )
    .unwrap();
    t.by_id("nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0R123456A", "nvme0n1")
        .unwrap();
    t.by_id("nvme-eui.002538b911b2c3d4", "nvme0n1").unwrap();
    t.by_id(
        "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0R123456A-part1",
        "nvme0n1p1",
    )
    .unwrap();
    // Blank SATA SSD: available.
    t.add_disk(&sata_ssd()).unwrap();
    t.by_id("ata-Samsung_SSD_870_EVO_1TB_S6PUNX0T402817K", "sda")
        .unwrap();
    t.by_id("wwn-0x5002538f4213a1b2", "sda").unwrap();
    // SATA HDD that is an md member (superblock 1.2 at 4096) and held by md0.
    let hdd = FakeDisk::new("sdb", (8, 16), 64 * MIB)
        .on(ATA2_PATH)
        .rotational(true)
        .sectors(512, 4096)
        .device_attr("vendor", "ATA     \n")
        .device_attr("model", "WDC WD40EFRX-68N32N0\n")
        .device_attr("rev", "0A82\n")
        .device_attr("wwid", "naa.50014ee20c3b4f21\n")
        .holder("md0")
        .patch(4096, 0xa92b_4efcu32.to_le_bytes());
    t.add_disk(&hdd).unwrap();
    // SAS HDD carrying our own array superblock (backup copy only).
    let sas = FakeDisk::new("sdc", (8, 32), 64 * MIB)
        .on(SAS_PATH)
        .rotational(true)
        .device_attr("vendor", "SEAGATE \n")
        .device_attr("model", "ST4000NM0043    \n")
        .device_attr("rev", "MS03\n")
        .device_attr("sas_address", "0x5000c500a1b2c3d5\n")
        .device_attr("wwid", "naa.5000c500a1b2c3d4\n")
        .device_attr("vpd_pg80", vpd80("Z1Z5DWJK0000R5121ABC"))
        .patch(64 * MIB - 4096, b"DWARRAY\0");
    t.add_disk(&sas).unwrap();
    // USB stick with a FAT file system, serial from the USB device.
    let mut fat = vec![0xEB, 0x3C, 0x90];
    fat.extend_from_slice(b"mkfs.fat");
    fat.extend_from_slice(&[0x00, 0x02]);
    let usb = FakeDisk::new("sdd", (8, 48), 32 * MIB)
        .on(USB_PATH)
        .removable(true)
        .rotational(true)
        .device_attr("vendor", "SanDisk \n")
        .device_attr("model", "Cruzer Blade    \n")
        .device_attr("rev", "1.00\n")
        .patch(0, fat)
        .patch(54, b"FAT16   ")
        .patch(510, [0x55, 0xAA]);
    t.add_disk(&usb).unwrap();
    t.write(&format!("sys/devices/{USB_DEV}/idVendor"), "0781\n")
        .unwrap();
    t.write(
        &format!("sys/devices/{USB_DEV}/serial"),
        "4C530001230415117352\n",
    )
    .unwrap();
    // virtio-blk root disk, mounted at /boot (by device number).
    let vda = FakeDisk::new("vda", (254, 0), 64 * MIB)
        .on(VIRTIO_PATH)
        .rotational(true)
        .attr("serial", "dw-root-disk\n");
    t.add_disk(&vda.clone().patch(0, b"XFSB")).unwrap();
    // Loop devices: one bound with a DataWarehouse VDE, one unbound.
    t.add_disk(
        &FakeDisk::new("loop0", (7, 0), 16 * MIB)
            .attr("loop/backing_file", "/var/lib/dw/test.dwvd\n")
            .patch(0, b"DWVD"),
    )
    .unwrap();
    t.add_disk(&FakeDisk::new("loop1", (7, 1), 0)).unwrap();
    // md array (blank), dm device (mounted), zram swap.
    t.add_disk(
        &FakeDisk::new("md0", (9, 0), 32 * MIB)
            .attr("md/level", "raid1\n")
            .slave("sdb"),
    )
    .unwrap();
    t.add_disk(
        &FakeDisk::new("dm-0", (253, 0), 32 * MIB)
            .attr("dm/name", "vg0-data\n")
            .attr("dm/uuid", "LVM-abc\n")
            .slave("sdx"),
    )
    .unwrap();
    t.symlink("dev/mapper/vg0-data", "../dm-0").unwrap();
    t.add_disk(&FakeDisk::new("zram0", (252, 0), 8 * MIB).patch(4086, b"SWAPSPACE2"))
        .unwrap();
    t.write(
        "proc/self/mountinfo",
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
         23 22 0:21 / /proc rw - proc proc rw\n\
         24 22 254:0 / /boot rw - xfs /dev/vda rw\n\
         25 22 253:0 / /srv/data rw - ext4 /dev/mapper/vg0-data rw\n",
    )
    .unwrap();
    t.write(
        "proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0                              partition\t8188\t\t0\t\t100\n",
    )
    .unwrap();
    t.write(
        "proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\nphysical id\t: 0\ncore id\t\t: 0\n\
         flags\t\t: fpu sse2 aes pclmulqdq avx2 sha_ni vaes vpclmulqdq avx512f avx512bw sme sev sev_es sev_snp\n\n\
         processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\nphysical id\t: 0\ncore id\t\t: 0\n\
         flags\t\t: fpu sse2 aes pclmulqdq avx2 sha_ni vaes vpclmulqdq avx512f avx512bw sme sev sev_es sev_snp\n\n\
         processor\t: 2\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\nphysical id\t: 0\ncore id\t\t: 1\n\
         flags\t\t: fpu sse2 aes pclmulqdq avx2 sha_ni vaes vpclmulqdq avx512f avx512bw sme sev sev_es sev_snp\n",
    )
    .unwrap();
    t.write(
        "proc/meminfo",
        "MemTotal:       263842148 kB\nMemFree:        250000000 kB\nMemAvailable:   255000000 kB\nSwapTotal:          8188 kB\n",
    )
    .unwrap();
    // TPM 2.0 with two PCR banks in sysfs.
    t.write("sys/class/tpm/tpm0/tpm_version_major", "2\n")
        .unwrap();
    t.mkdir("sys/class/tpm/tpm0/pcr-sha1").unwrap();
    t.mkdir("sys/class/tpm/tpm0/pcr-sha256").unwrap();
    t.write("dev/tpm0", "").unwrap();
    t.write("dev/tpmrm0", "").unwrap();
    // SEV host: kvm_amd parameters and /dev/sev.
    t.write("sys/module/kvm_amd/parameters/sev", "Y\n").unwrap();
    t.write("sys/module/kvm_amd/parameters/sev_es", "Y\n")
        .unwrap();
    t.write("sys/module/kvm_amd/parameters/sev_snp", "N\n")
        .unwrap();
    t.write("dev/sev", "").unwrap();
    // Network: one physical NIC with link, one down, loopback.
    let nic = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/enp3s0";
    t.write(&format!("{nic}/address"), "3c:ec:ef:12:34:56\n")
        .unwrap();
    t.write(&format!("{nic}/mtu"), "9000\n").unwrap();
    t.write(&format!("{nic}/operstate"), "up\n").unwrap();
    t.write(&format!("{nic}/speed"), "25000\n").unwrap();
    t.symlink(&format!("{nic}/device"), "../../../0000:03:00.0")
        .unwrap();
    t.mkdir("sys/bus/pci/drivers/ice").unwrap();
    t.symlink(
        "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/driver",
        "../../../../bus/pci/drivers/ice",
    )
    .unwrap();
    t.symlink(
        "sys/class/net/enp3s0",
        "../../devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/enp3s0",
    )
    .unwrap();
    t.write("sys/class/net/lo/address", "00:00:00:00:00:00\n")
        .unwrap();
    t.write("sys/class/net/lo/mtu", "65536\n").unwrap();
    t.write("sys/class/net/lo/operstate", "unknown\n").unwrap();
    t
}

/// Probe configuration for the fake machine: injected CPUID and addresses, fake smartctl.
pub fn fake_machine_config(tree: &FakeTree, smartctl: Option<PathBuf>) -> ProbeConfig {
    let mut c = ProbeConfig::recorded(tree.root());
    c.cpuid = CpuidSource::Fixed(epyc_cpuid());
    c.interface_addresses = AddressSource::Fixed(vec![
        (
            "enp3s0".to_owned(),
            IfAddress {
                family: IpFamily::Ipv4,
                address: "192.0.2.10".to_owned(),
                prefix_len: Some(24),
            },
        ),
        (
            "lo".to_owned(),
            IfAddress {
                family: IpFamily::Ipv4,
                address: "127.0.0.1".to_owned(),
                prefix_len: Some(8),
            },
        ),
    ]);
    c.smartctl.program = smartctl;
    c
}

/// Every object that has an `unknown` map: each null field is explained there, and every key
/// there names a field of the object.
pub fn assert_unknown_invariant(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(unknown)) = map.get("unknown") {
                for (k, field) in map {
                    if field.is_null() {
                        assert!(
                            unknown.contains_key(k),
                            "{path}.{k} is null without a reason"
                        );
                    }
                }
                for k in unknown.keys() {
                    assert!(
                        map.contains_key(k),
                        "{path}.unknown names {k}, which is not a field"
                    );
                }
            }
            for (k, field) in map {
                assert_unknown_invariant(field, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_unknown_invariant(item, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}
