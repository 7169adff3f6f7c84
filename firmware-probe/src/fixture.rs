//! Recorded (fake) machine trees for tests: `sys/`, `dev/`, `proc/`, `run/` below one directory,
//! laid out like the kernel lays them out, so [`crate::probe`] runs on them unchanged.
//!
//! Public so that crates above (the daemon, the RAID planner) can test against the same trees.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A fake tree under a directory the caller owns (usually a tempdir).
#[derive(Debug, Clone)]
pub struct FakeTree {
    root: PathBuf,
}

/// What the device node `dev/<name>` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeImage {
    /// No device node at all (open fails).
    Missing,
    /// A sparse file of the disk's full size with these bytes written at these offsets.
    Sparse(Vec<(u64, Vec<u8>)>),
    /// A file shorter than the disk claims: reads past `len` come back short.
    Truncated {
        /// Real length of the file.
        len: u64,
        /// Bytes written at offsets.
        patches: Vec<(u64, Vec<u8>)>,
    },
    /// A directory: opening works, every read fails (EISDIR).
    Unreadable,
}

/// One partition of a fake disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePartition {
    /// Kernel name (`sda1`).
    pub name: String,
    /// Partition number.
    pub number: u32,
    /// Device number.
    pub devnum: (u32, u32),
    /// Offset in bytes (multiple of 512).
    pub start_bytes: u64,
    /// Size in bytes (multiple of 512).
    pub size_bytes: u64,
    /// Names in `holders/`.
    pub holders: Vec<String>,
}

/// Where a fake disk sits in the device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeBus {
    /// `/sys/devices/virtual/block/<name>` (loop, md, dm, zram), no `device` link.
    Virtual,
    /// Below a parent device path, with a `block/` directory in between (SCSI, virtio-blk).
    Parent(String),
    /// Directly below a parent device (NVMe namespaces below their controller).
    ParentNoBlockDir(String),
}

/// A fake whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDisk {
    /// Kernel name.
    pub name: String,
    /// Device number.
    pub devnum: (u32, u32),
    /// Size in bytes (multiple of 512).
    pub size_bytes: u64,
    /// `queue/logical_block_size`.
    pub logical_sector_size: u32,
    /// `queue/physical_block_size`.
    pub physical_sector_size: u32,
    /// `queue/rotational`.
    pub rotational: bool,
    /// `removable`.
    pub removable: bool,
    /// `ro`.
    pub read_only: bool,
    /// Where it sits.
    pub bus: FakeBus,
    /// Files in the parent device directory (`device/model`, `device/serial` …).
    pub device_attrs: Vec<(String, Vec<u8>)>,
    /// Files in the block directory (`wwid`, `serial`, `loop/backing_file`, `dm/name` …).
    pub block_attrs: Vec<(String, Vec<u8>)>,
    /// Names in `holders/`.
    pub holders: Vec<String>,
    /// Names in `slaves/`.
    pub slaves: Vec<String>,
    /// Partitions.
    pub partitions: Vec<FakePartition>,
    /// Contents of `dev/<name>`.
    pub image: FakeImage,
}

impl FakeDisk {
    /// A virtual disk with a blank sparse image; refine it with the builder methods.
    #[must_use]
    pub fn new(name: &str, devnum: (u32, u32), size_bytes: u64) -> Self {
        Self {
            name: name.to_owned(),
            devnum,
            size_bytes,
            logical_sector_size: 512,
            physical_sector_size: 512,
            rotational: false,
            removable: false,
            read_only: false,
            bus: FakeBus::Virtual,
            device_attrs: Vec::new(),
            block_attrs: Vec::new(),
            holders: Vec::new(),
            slaves: Vec::new(),
            partitions: Vec::new(),
            image: FakeImage::Sparse(Vec::new()),
        }
    }

    /// Places the disk below `parent` (a path below `sys/devices`) with a `block/` directory.
    #[must_use]
    pub fn on(mut self, parent: &str) -> Self {
        self.bus = FakeBus::Parent(parent.to_owned());
        self
    }

    /// Places the disk directly below `parent` (NVMe layout).
    #[must_use]
    pub fn directly_on(mut self, parent: &str) -> Self {
        self.bus = FakeBus::ParentNoBlockDir(parent.to_owned());
        self
    }

    /// Adds a file to the parent device directory.
    #[must_use]
    pub fn device_attr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.device_attrs
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Adds a file to the block directory.
    #[must_use]
    pub fn attr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.block_attrs
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the sector sizes.
    #[must_use]
    pub fn sectors(mut self, logical: u32, physical: u32) -> Self {
        self.logical_sector_size = logical;
        self.physical_sector_size = physical;
        self
    }

    /// Sets `queue/rotational`.
    #[must_use]
    pub fn rotational(mut self, yes: bool) -> Self {
        self.rotational = yes;
        self
    }

    /// Sets `removable`.
    #[must_use]
    pub fn removable(mut self, yes: bool) -> Self {
        self.removable = yes;
        self
    }

    /// Sets `ro`.
    #[must_use]
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Adds a holder.
    #[must_use]
    pub fn holder(mut self, name: &str) -> Self {
        self.holders.push(name.to_owned());
        self
    }

    /// Adds a slave.
    #[must_use]
    pub fn slave(mut self, name: &str) -> Self {
        self.slaves.push(name.to_owned());
        self
    }

    /// Adds a partition.
    #[must_use]
    pub fn partition(mut self, p: FakePartition) -> Self {
        self.partitions.push(p);
        self
    }

    /// Writes `bytes` at `offset` of the image.
    #[must_use]
    pub fn patch(mut self, offset: u64, bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref().to_vec();
        match &mut self.image {
            FakeImage::Sparse(p) | FakeImage::Truncated { patches: p, .. } => {
                p.push((offset, bytes))
            }
            FakeImage::Missing | FakeImage::Unreadable => {
                self.image = FakeImage::Sparse(vec![(offset, bytes)]);
            }
        }
        self
    }

    /// Sets the image.
    #[must_use]
    pub fn image(mut self, image: FakeImage) -> Self {
        self.image = image;
        self
    }
}

impl FakeTree {
    /// Creates the skeleton under `root`: `sys/block`, `sys/devices`, `sys/class/net`, `dev`,
    /// `proc/self/mountinfo` (empty), `proc/swaps` (header only).
    pub fn create(root: &Path) -> io::Result<Self> {
        let t = Self {
            root: root.to_path_buf(),
        };
        for dir in [
            "sys/block",
            "sys/devices/virtual/block",
            "sys/class/net",
            "dev",
            "proc/self",
            "run",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        t.write("proc/self/mountinfo", "")?;
        t.write(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        )?;
        Ok(t)
    }

    /// The tree's top directory (pass it to [`crate::ProbeConfig::recorded`]).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file at `rel` (creating directories).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, contents)
    }

    /// Creates a directory at `rel`.
    pub fn mkdir(&self, rel: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(rel))
    }

    /// Creates a symlink at `rel` pointing to `target` (relative targets stay inside the tree).
    pub fn symlink(&self, rel: &str, target: &str) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink(target, path)
    }

    /// Adds a `/dev/disk/by-id/<link>` pointing to `/dev/<target>`.
    pub fn by_id(&self, link: &str, target: &str) -> io::Result<()> {
        self.symlink(
            &format!("dev/disk/by-id/{link}"),
            &format!("../../{target}"),
        )
    }

    /// Writes the udev database entry of a device (`run/udev/data/b<major>:<minor>`).
    pub fn udev_db(&self, devnum: (u32, u32), contents: &str) -> io::Result<()> {
        self.write(
            &format!("run/udev/data/b{}:{}", devnum.0, devnum.1),
            contents,
        )
    }

    /// Adds a disk: its sysfs directories and attributes, the `sys/block` link and `dev/<name>`.
    pub fn add_disk(&self, d: &FakeDisk) -> io::Result<()> {
        let (block_rel, device_rel) = match &d.bus {
            FakeBus::Virtual => (format!("devices/virtual/block/{}", d.name), None),
            FakeBus::Parent(p) => (
                format!("devices/{p}/block/{}", d.name),
                Some(format!("devices/{p}")),
            ),
            FakeBus::ParentNoBlockDir(p) => (
                format!("devices/{p}/{}", d.name),
                Some(format!("devices/{p}")),
            ),
        };
        let block = format!("sys/{block_rel}");
        self.mkdir(&block)?;
        let sectors = d.size_bytes / 512;
        self.write(
            &format!("{block}/dev"),
            format!("{}:{}\n", d.devnum.0, d.devnum.1),
        )?;
        self.write(&format!("{block}/size"), format!("{sectors}\n"))?;
        self.write(
            &format!("{block}/ro"),
            if d.read_only { "1\n" } else { "0\n" },
        )?;
        self.write(
            &format!("{block}/removable"),
            if d.removable { "1\n" } else { "0\n" },
        )?;
        self.write(
            &format!("{block}/queue/logical_block_size"),
            format!("{}\n", d.logical_sector_size),
        )?;
        self.write(
            &format!("{block}/queue/physical_block_size"),
            format!("{}\n", d.physical_sector_size),
        )?;
        self.write(
            &format!("{block}/queue/rotational"),
            if d.rotational { "1\n" } else { "0\n" },
        )?;
        self.mkdir(&format!("{block}/holders"))?;
        self.mkdir(&format!("{block}/slaves"))?;
        for h in &d.holders {
            self.mkdir(&format!("{block}/holders/{h}"))?;
        }
        for s in &d.slaves {
            self.mkdir(&format!("{block}/slaves/{s}"))?;
        }
        for (name, value) in &d.block_attrs {
            self.write(&format!("{block}/{name}"), value)?;
        }
        if let Some(dev_rel) = &device_rel {
            self.mkdir(&format!("sys/{dev_rel}"))?;
            for (name, value) in &d.device_attrs {
                self.write(&format!("sys/{dev_rel}/{name}"), value)?;
            }
            let up = match d.bus {
                FakeBus::ParentNoBlockDir(_) => "..",
                _ => "../..",
            };
            self.symlink(&format!("{block}/device"), up)?;
        }
        for p in &d.partitions {
            let pdir = format!("{block}/{}", p.name);
            self.write(&format!("{pdir}/partition"), format!("{}\n", p.number))?;
            self.write(
                &format!("{pdir}/start"),
                format!("{}\n", p.start_bytes / 512),
            )?;
            self.write(&format!("{pdir}/size"), format!("{}\n", p.size_bytes / 512))?;
            self.write(
                &format!("{pdir}/dev"),
                format!("{}:{}\n", p.devnum.0, p.devnum.1),
            )?;
            self.write(&format!("{pdir}/ro"), "0\n")?;
            self.mkdir(&format!("{pdir}/holders"))?;
            for h in &p.holders {
                self.mkdir(&format!("{pdir}/holders/{h}"))?;
            }
        }
        self.symlink(&format!("sys/block/{}", d.name), &format!("../{block_rel}"))?;
        self.write_image(d)
    }

    fn write_image(&self, d: &FakeDisk) -> io::Result<()> {
        let node = self.root.join("dev").join(&d.name);
        let (len, patches) = match &d.image {
            FakeImage::Missing => return Ok(()),
            FakeImage::Unreadable => return fs::create_dir_all(node),
            FakeImage::Sparse(p) => (d.size_bytes, p),
            FakeImage::Truncated { len, patches } => (*len, patches),
        };
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(node)?;
        f.set_len(len)?;
        for (off, bytes) in patches {
            f.seek(SeekFrom::Start(*off))?;
            f.write_all(bytes)?;
        }
        Ok(())
    }
}
