//! Golden files: the JSON and the table for the fixed fake machine (tests/common). Platform parts
//! that depend on the real machine (CPUID, addresses, smartctl, TPM) are injected, so the output
//! depends on the tree alone. Regenerate with UPDATE_GOLDEN=1.

mod common;

use std::path::Path;

use common::{assert_unknown_invariant, fake_machine, fake_machine_config, fake_smartctl};
use dw_probe::{Inventory, probe};

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        eprintln!("updated {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{} differs from the probe output (first differing line {:?}); run with UPDATE_GOLDEN=1 \
             if the change is intended.\n--- actual ---\n{actual}",
            path.display(),
            first.map(|l| l + 1)
        );
    }
}

fn fake_inventory() -> Inventory {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_machine(&dir.path().join("tree"));
    let smartctl = fake_smartctl();
    probe(&fake_machine_config(&tree, Some(smartctl)))
}

#[test]
fn golden_json() {
    let inv = fake_inventory();
    let json = serde_json::to_string_pretty(&inv).unwrap() + "\n";
    assert!(
        !json.contains("/tmp/"),
        "the output must not leak the tree's location"
    );
    assert_unknown_invariant(&serde_json::to_value(&inv).unwrap(), "inventory");
    check("fake-machine.json", &json);
    // The document reads back into the same types (the daemon forwards it).
    let back: Inventory = serde_json::from_str(&json).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn golden_table() {
    let inv = fake_inventory();
    check("fake-machine.txt", &dw_probe::table::render(&inv));
}

#[test]
fn probing_twice_gives_the_same_answer() {
    assert_eq!(fake_inventory(), fake_inventory());
}
