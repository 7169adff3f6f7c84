//! Real NBD clients against a running `dwd --demo`: qemu-img writes an image into the demo
//! volume and reads it back identical; nbdcopy copies with several connections; nbdinfo lists
//! the exports; data written survives a restart of the daemon. Missing tools fail under CI
//! (DW_REQUIRE_ALL_TESTS=1) and skip otherwise.

mod common;

use std::process::Command;

use common::{Daemon, md5_file, ok, pattern, require, tempdir};
use serde_json::json;

/// nbdsh through Debian's Python (a python3 earlier on PATH may lack the nbd module).
fn nbdsh() -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-m", "nbd"]);
    c
}

#[test]
fn qemu_img_and_nbdcopy_against_dwd() {
    let have_qemu = common::have_cmd("qemu-img", "--version");
    let have_nbdcopy = common::have_cmd("nbdcopy", "--version");
    let have_nbdsh = nbdsh()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(have_qemu, "qemu-img")
        || !require(have_nbdcopy, "nbdcopy (libnbd-bin)")
        || !require(have_nbdsh, "nbdsh (python3-libnbd)")
    {
        return;
    }
    let state = tempdir();
    let mut d = Daemon::start(
        &state.path().join("dw"),
        &["--demo-volume-size", "256M"],
        &[],
    );
    let work = tempdir();

    // nbdinfo sees the demo volume with our block sizes.
    let list = ok(
        "nbdinfo --list",
        Command::new("nbdinfo").args(["--list", "--json", &d.nbd()]),
    );
    assert!(list.contains("\"demo-vol\""), "{list}");
    assert!(list.contains("\"block_size_minimum\": 4096"), "{list}");

    // qemu-img writes a 64 MiB image (random data with holes) into the volume ...
    let img = work.path().join("image.raw");
    let mut data = pattern(64 << 20, 42);
    data[8 << 20..12 << 20].fill(0);
    std::fs::write(&img, &data).unwrap();
    ok(
        "qemu-img convert to NBD",
        Command::new("qemu-img")
            .args(["convert", "-n", "-f", "raw", "-O", "raw"])
            .arg(&img)
            .arg(d.nbd()),
    );
    // ... and reads the volume back: the first 64 MiB are the image, the rest zeros.
    let back = work.path().join("back.raw");
    ok(
        "qemu-img convert from NBD",
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(d.nbd())
            .arg(&back),
    );
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), 256 << 20);
    assert!(
        got[..64 << 20] == data[..],
        "image differs after the NBD round trip"
    );
    assert!(
        got[64 << 20..].iter().all(|&b| b == 0),
        "unwritten blocks are not zero"
    );

    // qemu-img compare agrees.
    ok(
        "qemu-img compare",
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&back)
            .arg(d.nbd()),
    );

    // nbdcopy with four connections (multi-conn) in both directions, on a second volume.
    d.api_ok(
        "POST",
        "/api/v1/containers",
        Some(&json!({"name": "vol2", "kind": "volume", "size_bytes": 64u64 << 20})),
    );
    let uri2 = d.nbd().replace("demo-vol", "vol2");
    ok(
        "nbdcopy up",
        Command::new("nbdcopy")
            .args(["--connections=4", "--threads=4", "--flush"])
            .arg(&img)
            .arg(&uri2),
    );
    let back2 = work.path().join("back2.raw");
    ok(
        "nbdcopy down",
        Command::new("nbdcopy")
            .args(["--connections=4", "--threads=4"])
            .arg(&uri2)
            .arg(&back2),
    );
    assert_eq!(
        md5_file(&img),
        md5_file(&back2),
        "nbdcopy round trip differs"
    );

    // Trim makes a range read as zeros (fstrim-like use from a client).
    ok(
        "nbdsh trim",
        nbdsh().args(["-u", &uri2, "-c", "h.trim(1048576, 0); h.flush()"]),
    );
    let head = ok(
        "nbdsh read",
        nbdsh().args([
            "-u",
            &uri2,
            "-c",
            "import sys; sys.stdout.write(str(sum(h.pread(1048576, 0))))",
        ]),
    );
    assert_eq!(head.trim(), "0", "trimmed range is not zero");

    // Reads beyond the end are refused, not garbage.
    let (good, _, _) =
        common::run(nbdsh().args(["-u", &uri2, "-c", "h.pread(4096, 64*1024*1024)"]));
    assert!(!good, "a read past the end succeeded");

    // The data survives a restart.
    assert!(d.stop(), "dwd did not stop cleanly:\n{}", d.log_text());
    d.restart();
    let back3 = work.path().join("back3.raw");
    ok(
        "qemu-img after restart",
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(d.nbd())
            .arg(&back3),
    );
    assert!(
        std::fs::read(&back3).unwrap()[..64 << 20] == data[..],
        "image differs after restart"
    );
}
