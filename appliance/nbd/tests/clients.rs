//! Real NBD clients against the server on 127.0.0.1: qemu-img (qemu-utils), nbdcopy and
//! nbdinfo (libnbd-bin). Missing tools skip with a reason unless DW_REQUIRE_ALL_TESTS=1.

mod common;

use std::process::Command;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use common::{PeakObserver, TcpServer, pseudo_random, require_tool, run, write_file};
use dw_nbd::{
    BlockExport, BlockSizes, FileExport, FileExportOptions, MemoryExport, MemoryExportOptions,
    ServerConfig, StaticCatalog,
};

const SIZE: usize = 64 << 20;

fn memory_server(read_only_too: bool) -> (TcpServer, Arc<MemoryExport>) {
    let disk = Arc::new(MemoryExport::new(SIZE as u64).unwrap());
    let mut cat = StaticCatalog::new().with_export("vol", "test volume", disk.clone());
    if read_only_too {
        let ro = Arc::new(
            MemoryExport::with_options(
                1 << 20,
                MemoryExportOptions {
                    read_only: true,
                    block_sizes: BlockSizes {
                        minimum: 512,
                        preferred: 65536,
                        maximum: 8 << 20,
                    },
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        cat = cat.with_export("ro", "read-only volume", ro);
    }
    (
        TcpServer::start(Arc::new(cat), ServerConfig::default()),
        disk,
    )
}

/// qemu-img writes a random 64 MiB image into a volume and reads it back identical.
#[test]
fn qemu_img_convert_roundtrip_memory_export() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let back = dir.path().join("back.raw");
    let data = pseudo_random(SIZE, 42);
    write_file(&src, &data);
    let (server, disk) = memory_server(false);
    let uri = server.uri("vol");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&uri));
    assert!(
        disk.to_vec() == data,
        "volume contents differ from the image"
    );
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(&uri)
        .arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "read-back image differs"
    );
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri));
    // A different image must not compare equal (the check can fail).
    let mut other = data.clone();
    other[SIZE / 2] ^= 1;
    write_file(&src, &other);
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "qemu-img compare missed a flipped bit"
    );
}

/// The same through a FileExport, with qemu-img info reporting the size.
#[test]
fn qemu_img_convert_roundtrip_file_export() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let backing = dir.path().join("volume.img");
    let back = dir.path().join("back.raw");
    let data = pseudo_random(SIZE, 7);
    write_file(&src, &data);
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(SIZE as u64)
        .unwrap();
    let export = Arc::new(FileExport::open(&backing, FileExportOptions::default()).unwrap());
    let cat = StaticCatalog::new().with_export("file", "", export);
    let server = TcpServer::start(Arc::new(cat), ServerConfig::default());
    let uri = server.uri("file");
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&uri));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], SIZE as u64);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&uri));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(&uri)
        .arg(&back));
    assert!(std::fs::read(&back).unwrap() == data);
    assert!(
        std::fs::read(&backing).unwrap() == data,
        "backing file differs"
    );
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri));
}

/// nbdcopy in both directions with four connections (multi-conn).
#[test]
fn nbdcopy_multi_conn_both_directions() {
    if !require_tool("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let back = dir.path().join("back.raw");
    // Mix random data with zero runs so nbdcopy's zero detection is exercised too.
    let mut data = pseudo_random(SIZE, 99);
    data[4 << 20..12 << 20].fill(0);
    write_file(&src, &data);
    let disk = Arc::new(MemoryExport::new(SIZE as u64).unwrap());
    let cat = StaticCatalog::new().with_export("vol", "", disk.clone());
    let peak = Arc::new(PeakObserver::default());
    let server = TcpServer::start_observed(Arc::new(cat), ServerConfig::default(), peak.clone());
    let uri = server.uri("vol");
    // Pre-fill with garbage so zero ranges must really be written.
    disk.write(0, &vec![0x5a; SIZE], false).unwrap();
    run(Command::new("nbdcopy")
        .args(["--connections", "4", "--threads", "4", "--requests", "16"])
        .arg(&src)
        .arg(&uri));
    assert!(disk.to_vec() == data, "volume differs after nbdcopy upload");
    assert!(
        peak.peak.load(Ordering::SeqCst) >= 4,
        "nbdcopy did not open 4 connections at once (peak {})",
        peak.peak.load(Ordering::SeqCst)
    );
    run(Command::new("nbdcopy")
        .args(["--connections", "4", "--threads", "4", "--requests", "16"])
        .arg(&uri)
        .arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "nbdcopy download differs"
    );
    // Dry-run of the verbose mode shows multi-conn was used.
    let out = Command::new("nbdcopy")
        .args(["--connections", "4", "--threads", "4", "--verbose"])
        .arg(&uri)
        .arg("null:")
        .output()
        .unwrap();
    assert!(out.status.success());
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("connections=4") || verbose.contains("connections: 4"),
        "nbdcopy did not use 4 connections:\n{verbose}"
    );
}

/// nbdinfo --list and --json report names, sizes, block sizes and flags truthfully.
#[test]
fn nbdinfo_list_and_json() {
    if !require_tool("nbdinfo") {
        return;
    }
    let (server, _) = memory_server(true);
    let list = run(Command::new("nbdinfo")
        .arg("--list")
        .arg(format!("nbd://{}", server.addr)));
    assert!(list.contains("export=\"vol\""), "{list}");
    assert!(list.contains("export=\"ro\""), "{list}");
    assert!(list.contains("description: test volume"), "{list}");
    assert!(list.contains("description: read-only volume"), "{list}");

    let json = run(Command::new("nbdinfo").arg("--json").arg(server.uri("vol")));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["protocol"], "newstyle-fixed");
    assert_eq!(v["structured"], false);
    let e = &v["exports"][0];
    assert_eq!(e["export-name"], "vol");
    assert_eq!(e["export-size"], SIZE as u64);
    assert_eq!(e["block_size_minimum"], 1);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    for (flag, want) in [
        ("is_read_only", false),
        ("can_flush", true),
        ("can_fua", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_multi_conn", true),
        ("can_cache", false),
        ("can_df", false),
        ("can_fast_zero", false),
        ("is_rotational", false),
    ] {
        assert_eq!(e[flag], want, "{flag} in {json}");
    }

    let json = run(Command::new("nbdinfo").arg("--json").arg(server.uri("ro")));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 1 << 20);
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["can_zero"], false);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 65536);
    assert_eq!(e["block_size_maximum"], 8 << 20);

    // An unknown export is a clean error naming the problem.
    let out = Command::new("nbdinfo")
        .arg(server.uri("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing"), "{err}");
}

/// qemu-img refuses to write to a read-only export, and the export is unchanged.
#[test]
fn qemu_img_write_to_read_only_fails() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("small.raw");
    write_file(&src, &pseudo_random(1 << 20, 3));
    let (server, _) = memory_server(true);
    let out = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(server.uri("ro"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "write to a read-only export succeeded"
    );
}
