//! Real S3 clients (AWS CLI, boto3, s3cmd, rclone, curl) against dw-s3 with MemStore on
//! 127.0.0.1. A missing client skips its test with a printed reason, or fails the test when
//! DW_REQUIRE_ALL_TESTS=1.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ALICE, BOB, CAROL, md5_file, pattern, require, run, start};
use dw_s3::S3Config;

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Err(e) = std::fs::write(p, data) {
        panic!("write {}: {e}", p.display());
    }
}

/// AWS CLI command with credentials of `key`, our endpoint and a config with an 8 MiB
/// multipart threshold.
fn aws(s: &common::Server, key: (&str, &str), cfg_dir: &Path) -> Command {
    let cfg = cfg_dir.join("aws-config");
    write(
        &cfg,
        b"[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n  addressing_style = path\n",
    );
    let mut c = Command::new("aws");
    c.env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_CONFIG_FILE", &cfg)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            cfg_dir.join("no-credentials"),
        )
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .args(["--endpoint-url", &s.endpoint()]);
    c
}

fn ok(label: &str, r: (bool, String, String)) -> String {
    assert!(r.0, "{label} failed:\nstdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

fn fails_with(label: &str, r: &(bool, String, String), code: &str) {
    assert!(!r.0, "{label} should have failed: {}", r.1);
    assert!(r.2.contains(code), "{label}: expected {code}, got: {}", r.2);
}

#[test]
fn aws_cli_lifecycle_multipart_and_object_lock() {
    if !require(common::have_cmd("aws", "--version"), "the AWS CLI (`aws`)") {
        return;
    }
    let s = start(S3Config::default());
    let dir = tempdir();
    let d = dir.path();
    ok("mb", run(aws(&s, ALICE, d).args(["s3", "mb", "s3://cli"])));
    let ls = ok("ls", run(aws(&s, ALICE, d).args(["s3", "ls"])));
    assert!(ls.contains("cli"), "{ls}");

    // Small object round trip with metadata.
    let small = d.join("small.txt");
    write(&small, b"hello from the aws cli\n");
    ok(
        "cp small",
        run(aws(&s, ALICE, d).args(["s3", "cp"]).arg(&small).args([
            "s3://cli/dir/small.txt",
            "--metadata",
            "k1=v1",
        ])),
    );
    let head = ok(
        "head",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "dir/small.txt",
        ])),
    );
    assert!(head.contains("\"k1\": \"v1\""), "{head}");

    // 200 MiB multipart upload, then download and compare hashes.
    let big = d.join("big.bin");
    {
        let mut data = Vec::with_capacity(200 << 20);
        for i in 0..200u64 {
            data.extend_from_slice(&pattern(1 << 20, i));
        }
        write(&big, &data);
    }
    ok(
        "cp big",
        run(aws(&s, ALICE, d)
            .args(["s3", "cp"])
            .arg(&big)
            .arg("s3://cli/big.bin")),
    );
    let head = ok(
        "head big",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "big.bin",
        ])),
    );
    assert!(
        head.contains("-25\\\""),
        "expected a 25-part multipart ETag: {head}"
    );
    let back = d.join("big.back");
    ok(
        "cp back",
        run(aws(&s, ALICE, d)
            .args(["s3", "cp", "s3://cli/big.bin"])
            .arg(&back)),
    );
    assert_eq!(
        md5_file(&big),
        md5_file(&back),
        "200 MiB object differs after the round trip"
    );

    // Ranged get.
    let part = d.join("range.bin");
    ok(
        "ranged get",
        run(aws(&s, ALICE, d)
            .args([
                "s3api",
                "get-object",
                "--bucket",
                "cli",
                "--key",
                "big.bin",
                "--range",
                "bytes=1048570-1048589",
            ])
            .arg(&part)),
    );
    let got = std::fs::read(&part).unwrap_or_default();
    let want = std::fs::read(&big)
        .map(|b| b[1_048_570..1_048_590].to_vec())
        .unwrap_or_default();
    assert_eq!(got, want);

    // Server-side copy (aws s3 cp between keys), list, delete.
    ok(
        "copy",
        run(aws(&s, ALICE, d).args(["s3", "cp", "s3://cli/dir/small.txt", "s3://cli/copy.txt"])),
    );
    let ls = ok(
        "ls bucket",
        run(aws(&s, ALICE, d).args(["s3", "ls", "--recursive", "s3://cli"])),
    );
    for k in ["big.bin", "copy.txt", "dir/small.txt"] {
        assert!(ls.contains(k), "{k} missing: {ls}");
    }
    ok(
        "rm",
        run(aws(&s, ALICE, d).args(["s3", "rm", "s3://cli/copy.txt"])),
    );
    fails_with(
        "rb non-empty",
        &run(aws(&s, ALICE, d).args(["s3api", "delete-bucket", "--bucket", "cli"])),
        "BucketNotEmpty",
    );

    // Object lock: bucket with lock enabled, retention and legal hold block delete/overwrite.
    ok(
        "create lock bucket",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "create-bucket",
            "--bucket",
            "worm",
            "--object-lock-enabled-for-bucket",
        ])),
    );
    ok(
        "put",
        run(aws(&s, ALICE, d)
            .args([
                "s3api",
                "put-object",
                "--bucket",
                "worm",
                "--key",
                "doc",
                "--body",
            ])
            .arg(&small)),
    );
    let until = time_plus_hours(1);
    ok(
        "put retention",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-retention",
            "--bucket",
            "worm",
            "--key",
            "doc",
            "--retention",
            &format!("Mode=COMPLIANCE,RetainUntilDate={until}"),
        ])),
    );
    let r = ok(
        "get retention",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "get-object-retention",
            "--bucket",
            "worm",
            "--key",
            "doc",
        ])),
    );
    assert!(r.contains("COMPLIANCE"), "{r}");
    fails_with(
        "delete under retention",
        &run(aws(&s, ALICE, d).args([
            "s3api",
            "delete-object",
            "--bucket",
            "worm",
            "--key",
            "doc",
        ])),
        "AccessDenied",
    );
    fails_with(
        "overwrite under retention",
        &run(aws(&s, ALICE, d)
            .args([
                "s3api",
                "put-object",
                "--bucket",
                "worm",
                "--key",
                "doc",
                "--body",
            ])
            .arg(&small)),
        "AccessDenied",
    );
    fails_with(
        "shorten compliance",
        &run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-retention",
            "--bucket",
            "worm",
            "--key",
            "doc",
            "--bypass-governance-retention",
            "--retention",
            &format!("Mode=GOVERNANCE,RetainUntilDate={}", time_plus_hours(0)),
        ])),
        "AccessDenied",
    );
    ok(
        "put held",
        run(aws(&s, ALICE, d)
            .args([
                "s3api",
                "put-object",
                "--bucket",
                "worm",
                "--key",
                "held",
                "--body",
            ])
            .arg(&small)),
    );
    ok(
        "legal hold on",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-legal-hold",
            "--bucket",
            "worm",
            "--key",
            "held",
            "--legal-hold",
            "Status=ON",
        ])),
    );
    let r = ok(
        "get hold",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "get-object-legal-hold",
            "--bucket",
            "worm",
            "--key",
            "held",
        ])),
    );
    assert!(r.contains("ON"), "{r}");
    fails_with(
        "delete held",
        &run(aws(&s, ALICE, d).args([
            "s3api",
            "delete-object",
            "--bucket",
            "worm",
            "--key",
            "held",
        ])),
        "AccessDenied",
    );
    ok(
        "legal hold off",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-legal-hold",
            "--bucket",
            "worm",
            "--key",
            "held",
            "--legal-hold",
            "Status=OFF",
        ])),
    );
    ok(
        "delete released",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "delete-object",
            "--bucket",
            "worm",
            "--key",
            "held",
        ])),
    );
    ok(
        "lock config",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-lock-configuration",
            "--bucket",
            "worm",
            "--object-lock-configuration",
            "ObjectLockEnabled=Enabled,Rule={DefaultRetention={Mode=GOVERNANCE,Days=1}}",
        ])),
    );
    let r = ok(
        "get lock config",
        run(aws(&s, ALICE, d).args(["s3api", "get-object-lock-configuration", "--bucket", "worm"])),
    );
    assert!(r.contains("GOVERNANCE"), "{r}");
    ok(
        "put defaulted",
        run(aws(&s, ALICE, d)
            .args([
                "s3api",
                "put-object",
                "--bucket",
                "worm",
                "--key",
                "d2",
                "--body",
            ])
            .arg(&small)),
    );
    fails_with(
        "delete under default governance",
        &run(aws(&s, ALICE, d).args(["s3api", "delete-object", "--bucket", "worm", "--key", "d2"])),
        "AccessDenied",
    );
    ok(
        "bypass governance as owner",
        run(aws(&s, ALICE, d).args([
            "s3api",
            "delete-object",
            "--bucket",
            "worm",
            "--key",
            "d2",
            "--bypass-governance-retention",
        ])),
    );
    fails_with(
        "retention on unlocked bucket",
        &run(aws(&s, ALICE, d).args([
            "s3api",
            "put-object-legal-hold",
            "--bucket",
            "cli",
            "--key",
            "big.bin",
            "--legal-hold",
            "Status=ON",
        ])),
        "InvalidRequest",
    );

    // Authentication and permissions through the CLI.
    fails_with(
        "wrong secret",
        &run(aws(&s, (ALICE.0, "wrong"), d).args(["s3", "ls"])),
        "SignatureDoesNotMatch",
    );
    fails_with(
        "other key",
        &run(aws(&s, BOB, d)
            .args([
                "s3api",
                "get-object",
                "--bucket",
                "cli",
                "--key",
                "dir/small.txt",
            ])
            .arg(d.join("x"))),
        "AccessDenied",
    );
    let mut anon = aws(&s, ALICE, d);
    anon.args(["--no-sign-request", "s3", "ls", "s3://cli"]);
    fails_with("unsigned", &run(&mut anon), "AccessDenied");
    fails_with(
        "bucket policy",
        &run(aws(&s, ALICE, d).args([
            "s3api",
            "put-bucket-policy",
            "--bucket",
            "cli",
            "--policy",
            "{}",
        ])),
        "NotImplemented",
    );
}

/// Hours from now as an ISO 8601 timestamp, without pulling a date crate into the test.
fn time_plus_hours(h: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + h * 3600
        + 60;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn boto3_suite() {
    let Some(py) = common::python_with_boto3() else {
        require(false, "python3 with boto3");
        return;
    };
    let s = start(S3Config::default());
    let dir = tempdir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/boto3_suite.py");
    let r = run(Command::new(py)
        .arg(script)
        .args([&s.endpoint(), ALICE.0, ALICE.1, BOB.0, BOB.1])
        .arg(dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none")));
    println!("{}", r.1);
    assert!(
        r.0 && r.1.contains("BOTO3 SUITE PASSED"),
        "boto3 suite failed:\n{}\n{}",
        r.1,
        r.2
    );
}

#[test]
fn curl_presigned_and_permissions_via_grant() {
    let Some(py) = common::python_with_boto3() else {
        require(false, "python3 with boto3 (to presign)");
        return;
    };
    if !require(common::have_cmd("curl", "--version"), "curl") {
        return;
    }
    let s = start(S3Config::default());
    let dir = tempdir();
    // BOB creates bob-shared with one object; CAROL has a Read grant on it.
    let presign = |key: (&str, &str),
                   method: &str,
                   bucket: &str,
                   obj: &str,
                   expires: u32|
     -> String {
        let code = format!(
            "import boto3,sys\nfrom botocore.config import Config\n\
             c=boto3.client('s3',endpoint_url='{}',aws_access_key_id='{}',aws_secret_access_key='{}',region_name='us-east-1',config=Config(s3={{'addressing_style':'path'}},signature_version='s3v4'))\n\
             p={{'Bucket':'{}'}}\nif '{}': p['Key']='{}'\n\
             print(c.generate_presigned_url('{}',Params=p,ExpiresIn={}))",
            s.endpoint(),
            key.0,
            key.1,
            bucket,
            obj,
            obj,
            method,
            expires
        );
        ok("presign", run(Command::new(&py).args(["-c", &code])))
            .trim()
            .to_owned()
    };
    let curl = |args: &[&str]| -> String {
        ok(
            "curl",
            run(Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(args)),
        )
    };
    let body = dir.path().join("body");
    write(&body, b"shared data");
    // Bucket creation through a presigned PUT on the bucket.
    let mk = presign(BOB, "create_bucket", "bob-shared", "", 60);
    assert_eq!(curl(&["-X", "PUT", &mk]), "200");
    let put = presign(BOB, "put_object", "bob-shared", "file.txt", 60);
    assert_eq!(
        curl(&["-X", "PUT", "-T", &body.to_string_lossy(), &put]),
        "200"
    );
    let get = presign(CAROL, "get_object", "bob-shared", "file.txt", 60);
    let out = dir.path().join("out");
    assert_eq!(
        ok(
            "curl get",
            run(Command::new("curl").args(["-s", "-o"]).arg(&out).args([
                "-w",
                "%{http_code}",
                &get
            ]))
        ),
        "200"
    );
    assert_eq!(std::fs::read(&out).unwrap_or_default(), b"shared data");
    // CAROL's grant is read-only; ALICE has none.
    let carol_put = presign(CAROL, "put_object", "bob-shared", "evil.txt", 60);
    assert_eq!(
        curl(&["-X", "PUT", "-T", &body.to_string_lossy(), &carol_put]),
        "403"
    );
    let alice_get = presign(ALICE, "get_object", "bob-shared", "file.txt", 60);
    assert_eq!(curl(&[&alice_get]), "403");
    // Expired and unsigned.
    let exp = presign(BOB, "get_object", "bob-shared", "file.txt", 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(curl(&[&exp]), "403");
    assert_eq!(
        curl(&[&format!("{}/bob-shared/file.txt", s.endpoint())]),
        "403"
    );
}

/// A directory tree: nested dirs, ~300 files, some empty, two above multipart thresholds.
fn make_tree(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for i in 0..300u64 {
        let rel = format!("d{}/s{}/f{i:03}.dat", i % 7, i % 3);
        let size = match i {
            _ if i % 25 == 0 => 0,
            _ => usize::try_from((i * 7919) % 40_000).unwrap_or(0),
        };
        let p = root.join(&rel);
        write(&p, &pattern(size, i));
        files.insert(rel, md5_file(&p));
    }
    for (i, rel) in ["big/one.bin", "big/nested/two.bin"].iter().enumerate() {
        let p = root.join(rel);
        write(
            &p,
            &pattern(
                (20 << 20) + 12_345 * i,
                1000 + u64::try_from(i).unwrap_or(0),
            ),
        );
        files.insert((*rel).to_owned(), md5_file(&p));
    }
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

#[test]
fn s3cmd_sync_tree() {
    if !require(common::have_cmd("s3cmd", "--version"), "s3cmd") {
        return;
    }
    let s = start(S3Config::default());
    let dir = tempdir();
    let src = dir.path().join("src");
    let files = make_tree(&src);
    let cfg = dir.path().join("s3cfg");
    let hostport = s.addr.to_string();
    write(
        &cfg,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {hostport}\nhost_bucket = {hostport}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\nmultipart_chunk_size_mb = 5\n\
             check_ssl_certificate = False\nprogress_meter = False\n",
            ALICE.0, ALICE.1
        )
        .as_bytes(),
    );
    let s3cmd = |args: &[&str]| {
        let mut c = Command::new("s3cmd");
        c.arg("-c").arg(&cfg).args(args);
        run(&mut c)
    };
    ok("s3cmd mb", s3cmd(&["mb", "s3://s3cmd-tree"]));
    ok(
        "s3cmd sync up",
        s3cmd(&[
            "sync",
            &format!("{}/", src.display()),
            "s3://s3cmd-tree/tree/",
        ]),
    );
    let ls = ok("s3cmd ls", s3cmd(&["ls", "-r", "s3://s3cmd-tree/tree/"]));
    assert_eq!(ls.lines().count(), files.len(), "{ls}");
    let dst = dir.path().join("dst");
    let _ = std::fs::create_dir_all(&dst);
    ok(
        "s3cmd sync down",
        s3cmd(&[
            "sync",
            "s3://s3cmd-tree/tree/",
            &format!("{}/", dst.display()),
        ]),
    );
    assert_eq!(
        tree_md5s(&dst),
        files,
        "tree differs after s3cmd round trip"
    );
    // A second sync uploads nothing and still succeeds.
    ok(
        "s3cmd resync",
        s3cmd(&[
            "sync",
            &format!("{}/", src.display()),
            "s3://s3cmd-tree/tree/",
        ]),
    );
    ok(
        "s3cmd del",
        s3cmd(&["del", "--recursive", "--force", "s3://s3cmd-tree/tree/"]),
    );
    ok("s3cmd rb", s3cmd(&["rb", "s3://s3cmd-tree"]));
}

#[test]
fn rclone_sync_tree() {
    if !require(common::have_cmd("rclone", "version"), "rclone") {
        return;
    }
    let s = start(S3Config::default());
    let dir = tempdir();
    let src = dir.path().join("src");
    let files = make_tree(&src);
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        // rclone 1.60 cannot combine AWS_CA_BUNDLE (set on some machines) with its transport;
        // the endpoint is plain HTTP anyway.
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", dir.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_DW_TYPE", "s3")
            .env("RCLONE_CONFIG_DW_PROVIDER", "Other")
            .env("RCLONE_CONFIG_DW_ENDPOINT", s.endpoint())
            .env("RCLONE_CONFIG_DW_ACCESS_KEY_ID", ALICE.0)
            .env("RCLONE_CONFIG_DW_SECRET_ACCESS_KEY", ALICE.1)
            .env("RCLONE_CONFIG_DW_REGION", "us-east-1")
            .env("RCLONE_CONFIG_DW_FORCE_PATH_STYLE", "true")
            .args([
                "--s3-upload-cutoff",
                "5Mi",
                "--s3-chunk-size",
                "5Mi",
                "--low-level-retries",
                "1",
                "--retries",
                "1",
            ])
            .args(args);
        run(&mut c)
    };
    ok("rclone mkdir", rclone(&["mkdir", "dw:rclone-tree"]));
    ok(
        "rclone sync",
        rclone(&["sync", &src.to_string_lossy(), "dw:rclone-tree/t"]),
    );
    ok(
        "rclone check",
        rclone(&["check", &src.to_string_lossy(), "dw:rclone-tree/t"]),
    );
    let dst = dir.path().join("dst");
    ok(
        "rclone copy back",
        rclone(&["copy", "dw:rclone-tree/t", &dst.to_string_lossy()]),
    );
    assert_eq!(
        tree_md5s(&dst),
        files,
        "tree differs after rclone round trip"
    );
    let md5 = ok("rclone md5sum", rclone(&["md5sum", "dw:rclone-tree/t"]));
    assert!(md5.lines().count() >= files.len() - 2, "{md5}");
    ok("rclone purge", rclone(&["purge", "dw:rclone-tree"]));
}
