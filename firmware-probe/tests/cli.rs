//! The `dw-probe` binary: output formats, options and exit codes on recorded trees.

mod common;

use std::process::Command;

use common::fake_machine;
use dw_probe::Inventory;

fn dw_probe(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dw-probe"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn json_and_table_on_a_recorded_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(dir.path());
    let root = tree.root().to_str().unwrap();
    let (code, stdout, _) = dw_probe(&["--root", root, "--json"]);
    assert_eq!(code, 0);
    let inv: Inventory = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inv.schema_version, 1);
    assert_eq!(inv.devices.len(), 11);
    // Recorded trees never ask the real machine.
    assert!(inv.platform.sev.host.cpu_sev.is_none());
    assert!(inv.platform.network.iter().all(|n| n.addresses.is_none()));

    let (code, stdout, _) = dw_probe(&["--root", root]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("DEVICES"));
    assert!(stdout.contains("sda        ssd      64.0 MiB"));
    assert!(stdout.contains("\nPLATFORM\n"));

    let (code, stdout, _) = dw_probe(&[
        "--root",
        root,
        "--json",
        "--device",
        "sda",
        "--no-signatures",
    ]);
    assert_eq!(code, 0);
    let inv: Inventory = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inv.devices.len(), 1);
    assert_eq!(inv.devices[0].verdict, dw_probe::Verdict::Unknown);

    let (code, _, stderr) = dw_probe(&["--root", root, "--device", "sdq"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("sdq"));

    // The separate root options work like --root.
    let (code, stdout, _) = dw_probe(&[
        "--sys-root",
        root,
        "--dev-root",
        root,
        "--proc-root",
        root,
        "--run-root",
        root,
        "--json",
        "--no-health",
        "--smartctl",
        "/nonexistent",
    ]);
    assert_eq!(code, 0);
    let inv: Inventory = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inv.devices.len(), 11);
    assert_eq!(
        inv.devices[0].health.reasons[0].code,
        dw_probe::HealthReasonCode::NotProbed
    );
}

#[test]
fn nothing_to_probe_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = dw_probe(&["--root", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("nothing could be probed"), "{stderr}");
    let inv: Inventory = serde_json::from_str(&stdout).unwrap();
    assert!(inv.nothing_probed());
}

#[test]
fn schema_option_prints_the_checked_in_schema() {
    let (code, stdout, _) = dw_probe(&["--schema"]);
    assert_eq!(code, 0);
    let docs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dw-probe.schema.json");
    assert_eq!(stdout, std::fs::read_to_string(docs).unwrap());
}
