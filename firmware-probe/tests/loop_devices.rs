//! Real loop devices (needs root, loop support, losetup, mkfs.ext4, mount): a blank one must be
//! `available`, an ext4 one `in_use` with the ext4 signature, a mounted one `in_use` with the
//! mount point, one carrying our array superblock backup copy `in_use`. Loop devices and mounts
//! are always released by drop guards. Without the prerequisites the test is skipped with a
//! printed reason, unless DW_REQUIRE_ALL_TESTS=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use dw_probe::{BlockDevice, ProbeConfig, ReasonCode, SignatureKind, Verdict, probe};

const SIZE: u64 = 64 * 1024 * 1024;

fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".to_owned());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control (kernel without loop support?)".to_owned());
    }
    for tool in ["losetup", "mkfs.ext4", "mount", "umount"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "{tool} not installed (packages util-linux, e2fsprogs, mount)"
            ));
        }
    }
    Ok(())
}

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("DW_REQUIRE_ALL_TESTS").as_deref() != Ok("1"),
        "loop device test cannot run: {why} (DW_REQUIRE_ALL_TESTS=1)"
    );
    eprintln!("SKIPPED loop device test: {why}");
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Detaches the loop device when dropped, whatever happened in between.
struct LoopGuard {
    dev: String,
}

impl LoopGuard {
    fn attach(file: &Path) -> Result<Self, String> {
        let dev = sh(
            "losetup",
            &["--find", "--show", &file.display().to_string()],
        )?;
        Ok(Self { dev })
    }
    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Err(e) = sh("losetup", &["-d", &self.dev]) {
            eprintln!("warning: could not detach {}: {e}", self.dev);
        }
    }
}

/// Unmounts when dropped.
struct MountGuard {
    target: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = sh("umount", &[&self.target.display().to_string()]) {
            eprintln!("warning: could not unmount {}: {e}", self.target.display());
        }
    }
}

fn sparse_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    path
}

fn probe_one(name: &str) -> BlockDevice {
    let mut c = ProbeConfig::system();
    c.device = Some(name.to_owned());
    let inv = probe(&c);
    assert_eq!(inv.devices.len(), 1, "{name}: {:?}", inv.unknown);
    inv.devices.into_iter().next().unwrap()
}

#[test]
fn real_loop_devices() {
    if let Err(why) = prerequisites() {
        skip_or_fail(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blank_file = sparse_file(dir.path(), "blank.img");
    let ext4_file = sparse_file(dir.path(), "ext4.img");
    let dw_file = sparse_file(dir.path(), "dw.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dw_file)
            .unwrap();
        f.write_all_at(b"DWARRAY\0", SIZE - 4096).unwrap();
    }
    let attach = |f: &Path| LoopGuard::attach(f).unwrap_or_else(|e| panic!("losetup failed: {e}"));
    let blank = attach(&blank_file);
    let ext4 = attach(&ext4_file);
    let dw = attach(&dw_file);
    sh("mkfs.ext4", &["-q", "-F", &ext4.dev]).unwrap();

    let d = probe_one(blank.name());
    assert_eq!(d.verdict, Verdict::Available, "blank loop: {:?}", d.reasons);
    assert_eq!(d.size_bytes, Some(SIZE));
    assert_eq!(
        d.loop_backing_file.as_deref(),
        Some(blank_file.to_str().unwrap())
    );
    assert!(d.reasons.is_empty());

    let d = probe_one(ext4.name());
    assert_eq!(d.verdict, Verdict::InUse);
    let sig = d
        .reasons
        .iter()
        .find(|r| r.code == ReasonCode::Signature)
        .expect("signature reason");
    assert!(sig.detail.starts_with("ext4"), "{}", sig.detail);
    assert_eq!(d.signatures.as_ref().unwrap()[0].kind, SignatureKind::Ext4);

    let d = probe_one(dw.name());
    assert_eq!(d.verdict, Verdict::InUse);
    assert_eq!(
        d.signatures.as_ref().unwrap()[0].kind,
        SignatureKind::DwArrayMember
    );

    // Mounted: the mount point is reported too.
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    sh("mount", &[&ext4.dev, &target.display().to_string()]).unwrap();
    let mounted = MountGuard {
        target: target.clone(),
    };
    let d = probe_one(ext4.name());
    assert_eq!(d.reasons[0].code, ReasonCode::Mounted, "{:?}", d.reasons);
    assert_eq!(
        d.mount_points.as_deref(),
        Some(&[target.display().to_string()][..])
    );
    drop(mounted);

    // The whole-system probe sees them as well and keeps the blank one available.
    let inv = probe(&ProbeConfig::system());
    let v = |n: &str| inv.devices.iter().find(|d| d.name == n).map(|d| d.verdict);
    assert_eq!(v(blank.name()), Some(Verdict::Available));
    assert_eq!(v(ext4.name()), Some(Verdict::InUse));
}
