//! Unlock at boot through the TPM, end to end with swtpm: the demo VDE gets a TPM2 slot; a
//! restart unlocks with it; after a "firmware update" (PCR 7 extended) the TPM refuses, the
//! daemon says which PCR changed and falls back to the recovery passphrase; once the new state
//! is confirmed (`reseal`) the TPM unlocks again at the next start. The master key is then
//! rotated (a resumable job) and everything still opens, by TPM and by passphrase.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, require, tempdir};
use serde_json::json;

struct Swtpm {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_swtpm() -> Swtpm {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port == u16::MAX || TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            continue;
        }
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear", "--tpmstate"])
            .arg(format!("dir={}", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            // Listening, and still alive a moment later: a port taken by someone else between
            // the probe and swtpm's bind answers the connect while swtpm exits.
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                return Swtpm {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("swtpm did not start");
}

/// A "firmware update": extends PCR 7 with `digest` (64 hex digits).
fn extend_pcr7(tcti: &str, digest: &str) {
    let ext = Command::new("tpm2_pcrextend")
        .arg(format!("7:sha256={digest}"))
        .env("TPM2TOOLS_TCTI", tcti)
        .output()
        .unwrap();
    assert!(
        ext.status.success(),
        "{}",
        String::from_utf8_lossy(&ext.stderr)
    );
}

/// The new state is trusted: reseal (the report must mention `resealed`), restart, and check
/// which kind of slot unlocked the VDE at start.
fn reseal_and_restart(d: &mut Daemon, resealed: &str, unlocked: &str) {
    let r = d.api_ok("POST", "/api/v1/vdes/demo/reseal", Some(&json!({})));
    assert!(
        r["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains(resealed)),
        "{r}"
    );
    assert!(d.stop());
    d.restart();
    assert!(unlocked_by(d).starts_with(unlocked), "{}", unlocked_by(d));
}

fn unlocked_by(d: &Daemon) -> String {
    let v = d.api_ok("GET", "/api/v1/vdes/demo", None);
    assert_eq!(v["state"], "unlocked", "{v}");
    v["unlocked_by"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn tpm_unlock_update_reseal_and_rotation() {
    let have =
        common::have_cmd("swtpm", "--version") && common::have_cmd("tpm2_pcrextend", "--version");
    if !require(have, "swtpm and tpm2-tools") {
        return;
    }
    let tpm = start_swtpm();
    let tcti = format!("swtpm:host=127.0.0.1,port={}", tpm.port);
    let state = tempdir();
    let dir = state.path().join("dw");
    let mut d = Daemon::start(
        &dir,
        &["--demo-drive-size", "256M", "--demo-volume-size", "32M"],
        &[("DW_TPM_TCTI", &tcti), ("TSS2_LOG", "all+none")],
    );
    assert_eq!(d.demo["tpm_slot"], true, "{}", d.demo);
    let slots = d.api_ok("GET", "/api/v1/vdes/demo/slots", None);
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "tpm2" && s["details"].as_str().unwrap().contains("PCRs 7")),
        "{slots}"
    );
    d.api_ok(
        "POST",
        "/api/v1/containers/demo-vol/snapshots",
        Some(&json!({"name": "before-update"})),
    );

    // Restart: the TPM unlocks (the passphrase file is only a fallback).
    assert!(d.stop());
    d.restart();
    assert!(unlocked_by(&d).starts_with("tpm2"), "{}", unlocked_by(&d));

    // A firmware update changes PCR 7: the TPM refuses, naming the PCR; the demo's passphrase
    // takes over and a reseal is recommended.
    assert!(d.stop());
    extend_pcr7(
        &tcti,
        "0000000000000000000000000000000000000000000000000000000000000001",
    );
    d.restart();
    assert!(
        unlocked_by(&d).starts_with("passphrase"),
        "{}",
        unlocked_by(&d)
    );
    let v = d.api_ok("GET", "/api/v1/vdes/demo", None);
    assert_eq!(v["reseal_recommended"], true, "{v}");
    let log = d.log_text();
    assert!(
        log.contains("PCR 7") || log.contains("PCR7") || log.contains("pcr 7"),
        "the failing PCR is not named:\n{log}"
    );
    let h = d.api_ok("GET", "/api/v1/health", None);
    assert_eq!(h["status"], "degraded", "{h}");

    // The new state is trusted: reseal; the next start unlocks by TPM again.
    reseal_and_restart(&mut d, "Resealed", "tpm2");

    // Rotate the master key; data written before stays readable, both slots still open it.
    let j = d.api_ok("POST", "/api/v1/vdes/demo/rotate-key", None);
    let id = j["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = d.api_ok("GET", &format!("/api/v1/jobs/{id}"), None);
        if job["state"] != "running" {
            assert_eq!(job["state"], "succeeded", "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "rotation did not finish: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let snaps = d.api_ok("GET", "/api/v1/containers/demo-vol/snapshots", None);
    assert_eq!(snaps[0]["name"], "before-update", "{snaps}");
    assert!(d.stop());
    d.restart();
    assert!(unlocked_by(&d).starts_with("tpm2"), "{}", unlocked_by(&d));
    // And the recovery passphrase alone still opens it.
    d.api_ok("POST", "/api/v1/vdes/demo/lock", None);
    let pass = d.demo["recovery_passphrase"].as_str().unwrap().to_owned();
    let u = d.api_ok(
        "POST",
        "/api/v1/vdes/demo/unlock",
        Some(&json!({"passphrase": pass})),
    );
    assert_eq!(u["vde"]["state"], "unlocked", "{u}");
    let audit = d.api_ok("GET", "/api/v1/vdes/demo/audit", None);
    let text = audit.to_string();
    assert!(text.contains("reseal") || text.contains("Reseal"), "{text}");
}

/// `dw-keyd` from the same build (`cargo build --bins` puts it beside the test binaries' parent).
fn dw_keyd() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("dw-keyd");
    p.exists().then_some(p)
}

struct KeyService {
    child: Child,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    endpoint: String,
    fingerprint: String,
    token: String,
}

impl KeyService {
    fn start(bin: &std::path::Path) -> KeyService {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("keyd");
        let out = Command::new(bin)
            .args(["init", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
                .trim()
                .to_owned()
        };
        let fingerprint = field("certificate sha256:");
        let token = field("enrollment token (shown once, give it to the appliance that enrolls):");
        // Port 0: dw-keyd's first stderr line names the address it bound.
        let mut child = Command::new(bin)
            .args(["serve", "--state-dir"])
            .arg(&state)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let endpoint = loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(
                n > 0 && said.len() < 64 * 1024,
                "dw-keyd did not say where it listens:\n{said}"
            );
            if let Some(addr) = line.trim().strip_prefix("dw-keyd: serving on ") {
                break addr.to_owned();
            }
            said.push_str(&line);
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        assert!(
            TcpStream::connect(&endpoint).is_ok(),
            "dw-keyd at {endpoint}"
        );
        KeyService {
            child,
            dir,
            bin: bin.to_owned(),
            endpoint,
            fingerprint,
            token,
        }
    }

    /// `dw-keyd list`: one line per enrolled machine.
    fn enrolled(&self) -> Vec<String> {
        let out = Command::new(&self.bin)
            .args(["list", "--state-dir"])
            .arg(self.dir.path().join("keyd"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slot_id(d: &Daemon, kind: &str) -> u64 {
    let slots = d.api_ok("GET", "/api/v1/vdes/demo/slots", None);
    slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .and_then(|s| s["id"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} slot: {slots}"))
}

/// Peer release through the daemon's API: enroll with a running `dw-keyd`, unlock at start
/// through it, refuse after a PCR change (the passphrase takes over), follow a trusted update
/// with `reseal`, and unenroll when the slot is removed. Bad options get specific errors; an
/// SEV-SNP slot says why it is not available here.
#[test]
fn peer_slot_through_the_api() {
    let have =
        common::have_cmd("swtpm", "--version") && common::have_cmd("tpm2_pcrextend", "--version");
    if !require(have, "swtpm and tpm2-tools") {
        return;
    }
    let Some(keyd) = dw_keyd() else {
        assert!(
            !std::env::var("DW_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1"),
            "dw-keyd is not built (cargo build --bins)"
        );
        eprintln!("SKIPPED: dw-keyd is not built (cargo build --bins)");
        return;
    };
    let svc = KeyService::start(&keyd);
    let tpm = start_swtpm();
    let tcti = format!("swtpm:host=127.0.0.1,port={}", tpm.port);
    let state = tempdir();
    let mut d = Daemon::start(
        &state.path().join("dw"),
        &["--demo-drive-size", "256M", "--demo-volume-size", "32M"],
        &[("DW_TPM_TCTI", &tcti), ("TSS2_LOG", "all+none")],
    );

    // Bad options: specific errors, nothing enrolled.
    let peer = |token: &str, cert: &str| {
        json!({"kind": "peer", "label": "rack-2 keyd", "peer": {
            "endpoint": svc.endpoint, "cert_sha256": cert, "token": token, "pcrs": [7]}})
    };
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&json!({"kind": "peer"})),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&peer("abc", &svc.fingerprint)),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("token"), "{v}");
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&peer(&"0".repeat(64), &svc.fingerprint)),
    );
    assert_eq!(st, 409, "a wrong token: {v}");
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&peer(&svc.token, &"ab".repeat(32))),
    );
    assert_eq!(st, 409, "a certificate that is not the pinned one: {v}");
    assert!(svc.enrolled().is_empty(), "{:?}", svc.enrolled());
    let (st, v) = d.api(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&json!({"kind": "sev_snp"})),
    );
    assert_eq!(st, 501, "{v}");
    assert!(v["message"].as_str().unwrap().contains("sev-guest"), "{v}");

    // Enroll; drop the TPM2 slot so that the peer is what unlocks at start.
    let added = d.api_ok(
        "POST",
        "/api/v1/vdes/demo/slots",
        Some(&peer(&svc.token, &svc.fingerprint)),
    );
    assert_eq!(added["slot"]["kind"], "peer", "{added}");
    assert_eq!(svc.enrolled().len(), 1);
    let tpm_slot = slot_id(&d, "tpm2");
    d.api_ok(
        "DELETE",
        &format!("/api/v1/vdes/demo/slots/{tpm_slot}"),
        None,
    );
    assert!(d.stop());
    d.restart();
    assert!(unlocked_by(&d).starts_with("peer"), "{}", unlocked_by(&d));

    // An update changes PCR 7: the peer refuses, the passphrase takes over.
    assert!(d.stop());
    extend_pcr7(
        &tcti,
        "0000000000000000000000000000000000000000000000000000000000000002",
    );
    d.restart();
    assert!(
        unlocked_by(&d).starts_with("passphrase"),
        "{}",
        unlocked_by(&d)
    );
    // Trusted: reseal moves the peer's policy; the next start unlocks through it again.
    reseal_and_restart(&mut d, "(peer): Resealed", "peer");

    // Removing the slot unenrolls the machine at the service.
    let peer_slot = slot_id(&d, "peer");
    d.api_ok(
        "DELETE",
        &format!("/api/v1/vdes/demo/slots/{peer_slot}"),
        None,
    );
    assert!(svc.enrolled().is_empty(), "{:?}", svc.enrolled());
}
