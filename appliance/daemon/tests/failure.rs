//! A drive dies while clients read and write: the array keeps serving degraded, a hot spare is
//! rebuilt automatically, `dwd` is restarted halfway through the rebuild and resumes it, and at
//! the end every acknowledged object and the volume read back with matching checksums.
//!
//! The drive "dies" through the daemon's test hook (DW_TEST_FAULT_MARKERS=1): while
//! `<drive>.fail` exists every I/O to it fails as with a pulled disk. The rebuild is throttled
//! so the restart lands in the middle of it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, ok, pattern, require, tempdir};
use serde_json::{Value, json};

fn python_with_boto3() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import boto3"])
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn start_load(py: &str, d: &Daemon, prefix: &str, work: &Path) -> Child {
    let (k, s) = d.s3_keys();
    Command::new(py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_load.py"))
        .args([&d.s3(), &k, &s, "demo", prefix])
        .arg(work.join(format!("{prefix}.json")))
        .arg(work.join(format!("{prefix}.stop")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load")
}

fn stop_load(mut child: Child, prefix: &str, work: &Path) {
    // The load must have put something before it is stopped, however slowly python started.
    let manifest = work.join(format!("{prefix}.json"));
    let t0 = Instant::now();
    loop {
        let puts = std::fs::read(&manifest)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.as_object().map(serde_json::Map::len))
            .unwrap_or(0);
        if puts >= 3 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            std::fs::write(work.join(format!("{prefix}.stop")), b"").unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "S3 load {prefix} acknowledged {puts} puts:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(work.join(format!("{prefix}.stop")), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("LOAD OK"),
        "S3 load {prefix} failed:\n{text}"
    );
}

fn array(d: &Daemon) -> Value {
    d.api_ok("GET", "/api/v1/arrays/demo", None)
}

/// Bytes the member being rebuilt has so far (None when nothing is rebuilding).
fn rebuilding(a: &Value) -> Option<(u64, u64)> {
    a["members"].as_array()?.iter().find_map(|m| {
        (m["state"] == "rebuilding").then(|| {
            (
                m["done_bytes"].as_u64().unwrap_or(0),
                m["total_bytes"].as_u64().unwrap_or(0),
            )
        })
    })
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn drive_failure_under_load_rebuild_and_restart() {
    let Some(py) = python_with_boto3() else {
        require(false, "python3 with boto3");
        return;
    };
    if !require(common::have_cmd("nbdcopy", "--version"), "nbdcopy") {
        return;
    }
    let state = tempdir();
    let dir = state.path().join("dw");
    std::fs::create_dir_all(&dir).unwrap();
    // Rebuild at 1 MiB/s (the 256 MiB members would take minutes) so the restart surely lands in
    // the middle, whatever else the machine is doing; the throttle is lifted after the restart.
    let cfg = dir.join("dwd.toml");
    std::fs::write(&cfg, "[arrays]\nrebuild_bytes_per_sec = 1048576\n").unwrap();
    let mut d = Daemon::start(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--demo-drive-size",
            "256M",
            "--demo-volume-size",
            "64M",
        ],
        &[("DW_TEST_FAULT_MARKERS", "1")],
    );
    let work = tempdir();

    // A hot spare.
    let spare = dir.join("drives/spare.img");
    std::fs::File::create(&spare)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let a = d.api_ok(
        "POST",
        "/api/v1/arrays/demo/spares",
        Some(&json!({"device": spare.to_str().unwrap()})),
    );
    assert_eq!(a["state"], "healthy", "{a}");
    assert!(
        a["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "spare"),
        "{a}"
    );

    // Data before the failure: objects and a volume image.
    let before = start_load(py, &d, "before", work.path());
    let img = work.path().join("img.raw");
    std::fs::write(&img, pattern(16 << 20, 5)).unwrap();
    ok(
        "nbdcopy before",
        Command::new("nbdcopy")
            .args(["--flush"])
            .arg(&img)
            .arg(d.nbd()),
    );
    std::thread::sleep(Duration::from_secs(3));
    stop_load(before, "before", work.path());

    // Kill drive 0 while clients keep writing.
    let during = start_load(py, &d, "during", work.path());
    let victim = dir.join("drives/drive0.img");
    std::fs::write(format!("{}.fail", victim.display()), b"").unwrap();
    // The failure is noticed on the next I/O to the drive: writes from the load reach it.
    wait_for(
        "the array to notice the dead drive and start rebuilding",
        60,
        || rebuilding(&array(&d)).is_some(),
    );
    let a = array(&d);
    assert_eq!(a["state"], "degraded", "{a}");
    assert!(
        a["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "failed"),
        "{a}"
    );
    let img2 = work.path().join("img2.raw");
    std::fs::write(&img2, pattern(16 << 20, 6)).unwrap();
    // The volume is written again while degraded (it replaces the first image).
    ok(
        "nbdcopy degraded",
        Command::new("nbdcopy")
            .arg("--flush")
            .arg(&img2)
            .arg(d.nbd()),
    );
    // Halfway through the rebuild: stop the load and restart the daemon.
    wait_for("rebuild progress", 60, || {
        rebuilding(&array(&d)).is_some_and(|(done, _)| done >= 2 << 20)
    });
    stop_load(during, "during", work.path());
    let a = array(&d);
    let (done_before, total) = rebuilding(&a).unwrap_or_else(|| {
        panic!(
            "the rebuild finished before the restart: {a}\n{}",
            d.log_text()
        )
    });
    assert!(
        done_before < total,
        "the rebuild finished before the restart"
    );
    assert!(d.stop(), "dwd did not stop cleanly:\n{}", d.log_text());
    d.restart();

    // The rebuild resumes where it was, not from zero, while the array serves.
    let a = array(&d);
    assert_eq!(a["state"], "degraded", "{a}");
    let (resumed_at, _) = rebuilding(&a).unwrap_or_else(|| panic!("rebuild did not resume: {a}"));
    assert!(
        resumed_at >= done_before / 2 && resumed_at > 0,
        "rebuild restarted from {resumed_at}, was at {done_before} of {total}"
    );
    let after = start_load(py, &d, "after", work.path());
    std::thread::sleep(Duration::from_secs(2));
    // Let it finish quickly now.
    d.api_ok(
        "PUT",
        "/api/v1/arrays/demo/throttle",
        Some(&json!({"bytes_per_sec": 0})),
    );
    wait_for("the rebuild to finish", 180, || {
        array(&d)["state"] == "healthy"
    });
    stop_load(after, "after", work.path());

    // Every acknowledged object and both images are intact.
    let (k, s) = d.s3_keys();
    let out = ok(
        "verify objects",
        Command::new(py)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/py/s3_verify.py"
            ))
            .args([&d.s3(), &k, &s, "demo"])
            .args(["before", "during", "after"].map(|p| work.path().join(format!("{p}.json")))),
    );
    assert!(out.contains("VERIFIED"), "{out}");
    let back = work.path().join("back.raw");
    ok(
        "nbdcopy back",
        Command::new("nbdcopy").arg(d.nbd()).arg(&back),
    );
    let got = std::fs::read(&back).unwrap();
    assert!(
        got[..16 << 20] == std::fs::read(&img2).unwrap()[..],
        "volume image differs"
    );
    assert!(
        got[16 << 20..].iter().all(|&b| b == 0),
        "the rest of the volume is not zero"
    );

    // A scrub of the rebuilt array finds nothing wrong.
    let j = d.api_ok(
        "POST",
        "/api/v1/arrays/demo/scrub",
        Some(&json!({"repair": true})),
    );
    let id = j["job_id"].as_str().unwrap().to_owned();
    wait_for("the scrub", 120, || {
        d.api_ok("GET", &format!("/api/v1/jobs/{id}"), None)["state"] != "running"
    });
    let job = d.api_ok("GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["mismatches"], 0, "{job}");
    assert!(d.stop(), "dwd did not stop cleanly:\n{}", d.log_text());
}
