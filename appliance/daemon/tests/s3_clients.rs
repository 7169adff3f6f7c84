//! Real S3 clients against a running `dwd --demo`: objects stored in a VDE on a RAID-Z2 array
//! of file-backed drives. boto3 runs the same suite as dw-s3's own tests (bucket lifecycle,
//! ranges, 200 MiB multipart, presigned URLs, permissions); the AWS CLI, rclone and s3cmd sync
//! directory trees and the checksums are compared. A missing client fails under CI
//! (DW_REQUIRE_ALL_TESTS=1) and skips otherwise.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, md5_file, ok, pattern, require, run, tempdir};
use serde_json::json;

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

/// ~200 files in nested directories, some empty, one above the multipart thresholds.
fn make_tree(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for i in 0..200u64 {
        let rel = format!("d{}/s{}/f{i:03}.dat", i % 5, i % 3);
        let size = if i % 25 == 0 {
            0
        } else {
            usize::try_from((i * 7919) % 30_000).unwrap()
        };
        let p = root.join(&rel);
        write(&p, &pattern(size, i));
        files.insert(rel, md5_file(&p));
    }
    let p = root.join("big/one.bin");
    write(&p, &pattern((12 << 20) + 4321, 999));
    files.insert("big/one.bin".into(), md5_file(&p));
    files
}

fn tree_md5s(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(rel.to_string_lossy().into_owned(), md5_file(&p));
            }
        }
    }
    out
}

fn new_key(d: &Daemon, name: &str) -> (String, String) {
    let k = d.api_ok(
        "POST",
        "/api/v1/s3/keys",
        Some(&json!({"name": name, "can_create_buckets": true})),
    );
    (
        k["info"]["access_key"].as_str().unwrap().to_owned(),
        k["secret_key"].as_str().unwrap().to_owned(),
    )
}

fn aws(d: &Daemon, key: &(String, String), cfg_dir: &Path) -> Command {
    let cfg = cfg_dir.join("aws-config");
    write(
        &cfg,
        b"[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n  addressing_style = path\n",
    );
    let mut c = Command::new("aws");
    c.env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_CONFIG_FILE", &cfg)
        .env("AWS_SHARED_CREDENTIALS_FILE", cfg_dir.join("none"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .args(["--endpoint-url", &d.s3()]);
    c
}

fn python_with_boto3() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        if Command::new(py)
            .args(["-c", "import boto3"])
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(py.to_owned());
        }
    }
    None
}

/// One daemon for every client (starting one costs seconds); each client has its own bucket.
#[test]
fn real_s3_clients_against_dwd() {
    let state = tempdir();
    let d = Daemon::start(&state.path().join("dw"), &[], &[]);
    let work = tempdir();

    // --- boto3: the full suite, with two keys of our own.
    if require(python_with_boto3().is_some(), "python3 with boto3") {
        let alice = new_key(&d, "alice");
        let bob = new_key(&d, "bob");
        let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/../s3/tests/py/boto3_suite.py");
        let bw = work.path().join("boto3");
        std::fs::create_dir_all(&bw).unwrap();
        let out = ok(
            "boto3 suite",
            Command::new(python_with_boto3().unwrap())
                .arg(suite)
                .args([&d.s3(), &alice.0, &alice.1, &bob.0, &bob.1])
                .arg(&bw),
        );
        assert!(out.contains("BOTO3 SUITE PASSED"), "{out}");
    }

    // --- AWS CLI: lifecycle, multipart, ranged get, presigned URL.
    if require(common::have_cmd("aws", "--version"), "aws CLI") {
        let key = d.s3_keys();
        let dir = work.path().join("aws");
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.bin");
        write(&big, &pattern(40 << 20, 7));
        ok(
            "aws mb",
            aws(&d, &key, &dir).args(["s3", "mb", "s3://awscli"]),
        );
        ok(
            "aws cp up",
            aws(&d, &key, &dir).args(["s3", "cp", big.to_str().unwrap(), "s3://awscli/big.bin"]),
        );
        let head = ok(
            "aws head-object",
            aws(&d, &key, &dir).args([
                "s3api",
                "head-object",
                "--bucket",
                "awscli",
                "--key",
                "big.bin",
            ]),
        );
        assert!(
            head.contains("-5\\\"") || head.contains("-5\""),
            "multipart ETag: {head}"
        );
        let back = dir.join("back.bin");
        ok(
            "aws cp down",
            aws(&d, &key, &dir).args(["s3", "cp", "s3://awscli/big.bin", back.to_str().unwrap()]),
        );
        assert_eq!(md5_file(&big), md5_file(&back));
        let part = dir.join("range.bin");
        ok(
            "aws ranged get",
            aws(&d, &key, &dir).args([
                "s3api",
                "get-object",
                "--bucket",
                "awscli",
                "--key",
                "big.bin",
                "--range",
                "bytes=1000000-1999999",
                part.to_str().unwrap(),
            ]),
        );
        assert_eq!(
            std::fs::read(&part).unwrap(),
            pattern(40 << 20, 7)[1_000_000..2_000_000]
        );
        let url = ok(
            "aws presign",
            aws(&d, &key, &dir).args([
                "s3",
                "presign",
                "s3://awscli/big.bin",
                "--expires-in",
                "300",
            ]),
        );
        let fetched = dir.join("presigned.bin");
        ok(
            "curl presigned",
            Command::new("curl").args(["-sSf", "-o", fetched.to_str().unwrap(), url.trim()]),
        );
        assert_eq!(md5_file(&big), md5_file(&fetched));
        let other = new_key(&d, "stranger");
        let (good, _, err) = run(aws(&d, &other, &dir).args(["s3", "ls", "s3://awscli"]));
        assert!(
            !good && err.contains("AccessDenied"),
            "another key listed the bucket: {err}"
        );
        ok(
            "aws rm",
            aws(&d, &key, &dir).args(["s3", "rm", "s3://awscli/big.bin"]),
        );
        ok(
            "aws rb",
            aws(&d, &key, &dir).args(["s3", "rb", "s3://awscli"]),
        );
    }

    // --- rclone: sync a tree up, check, copy back, compare checksums.
    if require(common::have_cmd("rclone", "version"), "rclone") {
        let key = d.s3_keys();
        let dir = work.path().join("rclone");
        let src = dir.join("src");
        let files = make_tree(&src);
        let rclone = |args: &[&str]| {
            let mut c = Command::new("rclone");
            c.env_remove("AWS_CA_BUNDLE")
                .env("RCLONE_CONFIG", dir.join("rclone.conf"))
                .env("RCLONE_CONFIG_DW_TYPE", "s3")
                .env("RCLONE_CONFIG_DW_PROVIDER", "Other")
                .env("RCLONE_CONFIG_DW_ENDPOINT", d.s3())
                .env("RCLONE_CONFIG_DW_ACCESS_KEY_ID", &key.0)
                .env("RCLONE_CONFIG_DW_SECRET_ACCESS_KEY", &key.1)
                .env("RCLONE_CONFIG_DW_REGION", "us-east-1")
                .env("RCLONE_CONFIG_DW_FORCE_PATH_STYLE", "true")
                .args([
                    "--s3-upload-cutoff",
                    "5Mi",
                    "--s3-chunk-size",
                    "5Mi",
                    "--retries",
                    "1",
                ])
                .args(args);
            run(&mut c)
        };
        let r = rclone(&["mkdir", "dw:rclone-tree"]);
        assert!(r.0, "rclone mkdir: {} {}", r.1, r.2);
        let r = rclone(&["sync", src.to_str().unwrap(), "dw:rclone-tree/t"]);
        assert!(r.0, "rclone sync: {} {}", r.1, r.2);
        let r = rclone(&["check", src.to_str().unwrap(), "dw:rclone-tree/t"]);
        assert!(r.0, "rclone check: {} {}", r.1, r.2);
        let dst = dir.join("dst");
        let r = rclone(&["copy", "dw:rclone-tree/t", dst.to_str().unwrap()]);
        assert!(r.0, "rclone copy: {} {}", r.1, r.2);
        assert_eq!(
            tree_md5s(&dst),
            files,
            "tree differs after the rclone round trip"
        );
        let r = rclone(&["purge", "dw:rclone-tree"]);
        assert!(r.0, "rclone purge: {} {}", r.1, r.2);
    }

    // --- s3cmd: sync up and down, compare checksums, resync is a no-op.
    if require(common::have_cmd("s3cmd", "--version"), "s3cmd") {
        let key = d.s3_keys();
        let dir = work.path().join("s3cmd");
        let src = dir.join("src");
        let files = make_tree(&src);
        let cfg = dir.join("s3cfg");
        let hostport = d.s3().trim_start_matches("http://").to_owned();
        write(
            &cfg,
            format!(
                "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {hostport}\nhost_bucket = {hostport}\n\
                 use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\nmultipart_chunk_size_mb = 5\n\
                 check_ssl_certificate = False\nprogress_meter = False\n",
                key.0, key.1
            )
            .as_bytes(),
        );
        let s3cmd = |args: &[&str]| {
            let mut c = Command::new("s3cmd");
            c.arg("-c").arg(&cfg).args(args);
            run(&mut c)
        };
        let up = format!("{}/", src.display());
        for (label, args) in [
            ("s3cmd mb", vec!["mb", "s3://s3cmd-tree"]),
            (
                "s3cmd sync up",
                vec!["sync", up.as_str(), "s3://s3cmd-tree/tree/"],
            ),
        ] {
            let r = s3cmd(&args);
            assert!(r.0, "{label}: {} {}", r.1, r.2);
        }
        let dst = dir.join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        let down = format!("{}/", dst.display());
        let r = s3cmd(&["sync", "s3://s3cmd-tree/tree/", &down]);
        assert!(r.0, "s3cmd sync down: {} {}", r.1, r.2);
        assert_eq!(
            tree_md5s(&dst),
            files,
            "tree differs after the s3cmd round trip"
        );
        let r = s3cmd(&["sync", &up, "s3://s3cmd-tree/tree/"]);
        assert!(r.0, "s3cmd resync: {} {}", r.1, r.2);
    }

    // Everything written is accounted for in the VDE, and the daemon stops cleanly.
    let vde = d.api_ok("GET", "/api/v1/vdes/demo", None);
    assert!(
        vde["capacity"]["logical_bytes"].as_u64().unwrap() > 0,
        "{vde}"
    );
    let mut d = d;
    assert!(d.stop(), "dwd did not stop cleanly:\n{}", d.log_text());
}
