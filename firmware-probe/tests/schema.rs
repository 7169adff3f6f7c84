//! The JSON Schema checked in as docs/dw-probe.schema.json must match the Rust types, and
//! docs/PROBE.md must describe every field. Regenerate the schema with UPDATE_GOLDEN=1.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

#[test]
fn schema_matches_types() {
    let path = docs().join("dw-probe.schema.json");
    let actual = serde_json::to_string_pretty(&dw_probe::json_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} has drifted from the Rust types: run `UPDATE_GOLDEN=1 cargo test -p dw-probe --test schema`, \
         review the diff, and bump SCHEMA_VERSION if a field was removed, renamed or changed meaning",
        path.display()
    );
}

fn collect(v: &Value, props: &mut BTreeSet<String>, enums: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(p)) = map.get("properties") {
                props.extend(p.keys().cloned());
            }
            for key in ["enum", "const"] {
                match map.get(key) {
                    Some(Value::Array(values)) => {
                        enums.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                    Some(Value::String(s)) => {
                        enums.insert(s.clone());
                    }
                    _ => {}
                }
            }
            for child in map.values() {
                collect(child, props, enums);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, props, enums)),
        _ => {}
    }
}

#[test]
fn probe_md_documents_every_field_and_value() {
    let doc = std::fs::read_to_string(docs().join("PROBE.md")).unwrap();
    let mut props = BTreeSet::new();
    let mut enums = BTreeSet::new();
    collect(&dw_probe::json_schema(), &mut props, &mut enums);
    assert!(
        props.len() > 50,
        "schema walk found too few fields: {props:?}"
    );
    let missing: Vec<&String> = props
        .iter()
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/PROBE.md does not describe fields {missing:?}"
    );
    let missing: Vec<&String> = enums
        .iter()
        .filter(|e| !doc.contains(&format!("`{e}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/PROBE.md does not describe values {missing:?}"
    );
}
