//! Operating the appliance: SMART-predictive replacement onto a hot spare (with the health
//! source replaced by the daemon's test hook, since file drives have no SMART), alerts on the
//! event stream, Prometheus metrics, jobs, snapshots and policies through the API, and the
//! single-instance lock.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, tempdir};
use serde_json::{Value, json};

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads server-sent events from the socket until `want` matches one (or the timeout).
/// Subscribes to the event stream: returns once dwd has answered the request, so every event
/// emitted after this returns reaches the reader (no sleep guessing when the subscription
/// starts).
fn subscribe_events(socket: &str, secs: u64) -> BufReader<std::os::unix::net::UnixStream> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "events: {line}");
    while line.trim_end() != "" {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "events: no header end");
    }
    r
}

/// Follows a subscribed event stream until an event matches `want`.
fn follow_events(
    mut r: BufReader<std::os::unix::net::UnixStream>,
    secs: u64,
    want: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(data) = line.trim_end().strip_prefix("data:")
            && let Ok(v) = serde_json::from_str::<Value>(data.trim())
            && want(&v)
        {
            return Some(v);
        }
    }
    None
}

#[test]
fn predictive_replacement_metrics_and_management() {
    let state = tempdir();
    let dir = state.path().join("dw");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("dwd.toml");
    std::fs::write(&cfg, "[schedule]\nhealth_poll_secs = 1\n").unwrap();
    let health = dir.join("health.json");
    std::fs::write(&health, "{}").unwrap();
    let d = Daemon::start(
        &dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--demo-drive-size",
            "128M",
            "--demo-volume-size",
            "32M",
        ],
        &[("DW_TEST_HEALTH_FILE", health.to_str().unwrap())],
    );

    // A second daemon on the same state is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_dwd"))
        .args(["--demo", "--state-dir"])
        .arg(&dir)
        .args([
            "--https-listen",
            "",
            "--s3-listen",
            "",
            "--nbd-listen",
            "",
            "--metrics-listen",
            "",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");

    // Some data, then a hot spare.
    let (ak, _) = d.s3_keys();
    d.api_ok(
        "POST",
        "/api/v1/containers",
        Some(&json!({"name": "docs", "kind": "bucket", "owner": ak,
                     "policy": {"profile": "strict", "retention": {"value": "0d:governance"}}})),
    );
    let spare = dir.join("drives/spare.img");
    std::fs::File::create(&spare)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    d.api_ok(
        "POST",
        "/api/v1/arrays/demo/spares",
        Some(&json!({"device": spare.to_str().unwrap()})),
    );

    // Drive 1 reports "failing": an alert, then its data is copied to the spare while it still
    // reads, and it leaves the array.
    let events = subscribe_events(&d.socket(), 60);
    let watcher = std::thread::spawn(move || {
        follow_events(events, 60, |e| {
            e["kind"] == "drive" && e["message"].as_str().unwrap_or("").contains("failing")
        })
    });
    let victim = dir.join("drives/drive1.img").display().to_string();
    std::fs::write(&health, json!({ victim.clone(): "failing" }).to_string()).unwrap();
    let alert = watcher
        .join()
        .unwrap()
        .expect("no drive alert on the event stream");
    assert_eq!(alert["level"], "error", "{alert}");
    wait_for("the spare to take over the failing drive", 120, || {
        let a = d.api_ok("GET", "/api/v1/arrays/demo", None);
        a["state"] == "healthy"
            && a["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["device"].as_str() == spare.to_str() && m["state"] == "in_sync")
            && !a["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["device"].as_str() == Some(victim.as_str()) && m["state"] == "in_sync")
    });

    // Metrics: drive health, array state, VDE capacity, request counters.
    let (st, _) = d.api("GET", "/api/v1/containers/docs", None);
    assert_eq!(st, 200);
    let metrics_url = d.demo["metrics_url"].as_str().unwrap().to_owned();
    let body = common::ok(
        "curl metrics",
        Command::new("curl").args(["-sSf", &metrics_url]),
    );
    for want in [
        format!("dw_drive_health{{device=\"{victim}\"}} 2"),
        "dw_array_state{array=\"demo\"} 0".to_owned(),
        "dw_vde_capacity_bytes{".to_owned(),
        "dw_vde_unlocked{vde=\"demo\"} 1".to_owned(),
        "dw_api_requests_total{".to_owned(),
        "dw_api_request_duration_seconds_bucket{".to_owned(),
    ] {
        assert!(body.contains(&want), "metrics lack {want}:\n{body}");
    }

    // Policies: effective values with their sources; an enforced VDE setting wins.
    let eff = d.api_ok("GET", "/api/v1/containers/docs/policy", None);
    let versioning = eff["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "versioning")
        .unwrap()
        .clone();
    assert_eq!(versioning["value"], "true", "{eff}");
    assert!(
        versioning["source"].as_str().unwrap().contains("strict"),
        "{eff}"
    );
    let (st, v) = d.api(
        "PUT",
        "/api/v1/containers/docs/policy",
        Some(&json!({"compression": {"value": "zstd:99"}})),
    );
    assert_eq!(st, 400, "{v}");

    // Snapshots of a volume: create, list, rollback, delete.
    d.api_ok(
        "POST",
        "/api/v1/containers/demo-vol/snapshots",
        Some(&json!({"name": "s1"})),
    );
    let snaps = d.api_ok("GET", "/api/v1/containers/demo-vol/snapshots", None);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    d.api_ok(
        "POST",
        "/api/v1/containers/demo-vol/snapshots/s1/rollback",
        None,
    );
    let (st, _) = d.api("DELETE", "/api/v1/containers/demo-vol/snapshots/s1", None);
    assert_eq!(st, 204);
    let (st, v) = d.api("DELETE", "/api/v1/containers/demo-vol/snapshots/s1", None);
    assert_eq!(st, 404, "{v}");

    // A scrub job with progress and a result.
    let j = d.api_ok("POST", "/api/v1/arrays/demo/scrub", Some(&json!({})));
    let id = j["job_id"].as_str().unwrap().to_owned();
    let (st, _) = d.api("POST", "/api/v1/arrays/demo/scrub", Some(&json!({})));
    assert!(st == 409 || st == 200, "second scrub: {st}");
    wait_for("the scrub", 120, || {
        d.api_ok("GET", &format!("/api/v1/jobs/{id}"), None)["state"] != "running"
    });
    let job = d.api_ok("GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["done"].as_u64().unwrap() > 0, "{job}");

    // Locking a VDE stops its service; unlocking with the recovery passphrase restores it.
    d.api_ok("POST", "/api/v1/vdes/demo/lock", None);
    let (st, v) = d.api("GET", "/api/v1/containers/docs", None);
    assert_eq!(st, 423, "{v}");
    let h = d.api_ok("GET", "/api/v1/health", None);
    assert_eq!(h["status"], "failed", "{h}");
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/unlock",
        Some(&json!({"passphrase": "WRONG-PASS"})),
    );
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("passphrase"), "{v}");
    let pass = d.demo["recovery_passphrase"].as_str().unwrap().to_owned();
    let u = d.api_ok(
        "POST",
        "/api/v1/vdes/demo/unlock",
        Some(&json!({"passphrase": pass})),
    );
    assert_eq!(u["vde"]["state"], "unlocked", "{u}");
    let (st, _) = d.api("GET", "/api/v1/containers/docs", None);
    assert_eq!(st, 200);

    // Key slots: add a passphrase slot, remove it; the last recovery passphrase stays.
    let s = d.api_ok(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&json!({"kind": "passphrase"})),
    );
    assert!(s["passphrase"].as_str().unwrap().len() > 20, "{s}");
    let sid = s["slot"]["id"].as_u64().unwrap();
    d.api_ok("DELETE", &format!("/api/v1/vdes/demo/slots/{sid}"), None);
    let slots = d.api_ok("GET", "/api/v1/vdes/demo/slots", None);
    let last = slots[0]["id"].as_u64().unwrap();
    let (st, v) = d.api("DELETE", &format!("/api/v1/vdes/demo/slots/{last}"), None);
    assert_eq!(st, 409, "removing the last slot: {v}");
    let audit = d.api_ok("GET", "/api/v1/vdes/demo/audit", None);
    assert!(audit.as_array().unwrap().len() >= 3, "{audit}");

    // Nothing secret in clear on the drives or in the state database: not the recovery
    // passphrase, not the admin password (the demo's own secrets files are the exception).
    let mut d = d;
    assert!(d.stop(), "dwd did not stop cleanly:\n{}", d.log_text());
    let admin_password = d.demo["api"]["admin_password"].as_str().unwrap().to_owned();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("drives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(dir.join("state.redb"));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for (what, secret) in [
            ("recovery passphrase", pass.as_str()),
            ("admin password", admin_password.as_str()),
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the {what} is in clear in {}",
                f.display()
            );
        }
    }
}
