//! The human-readable report printed by `dw-probe` without `--json`.

use std::fmt::Write;

use crate::model::{BlockDevice, Inventory, SevLevel, Tpm};

/// Bytes in binary units with one decimal (`256.0 GiB`).
#[must_use]
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut whole = bytes;
    let mut rem = 0u64;
    while whole >= 1024 && unit < UNITS.len() - 1 {
        rem = whole % 1024;
        whole /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    // One decimal, rounded down: 1536 -> 1.5 KiB.
    format!("{whole}.{} {}", rem * 10 / 1024, UNITS[unit])
}

/// The JSON name of an enum value (`partition_in_use`), so tables and JSON use the same words.
fn code<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

fn cell(v: Option<&str>, width: usize) -> String {
    let s = v.unwrap_or("-");
    let s: String = if s.chars().count() > width {
        s.chars().take(width - 1).chain(['…']).collect()
    } else {
        s.to_owned()
    };
    format!("{s:<width$}")
}

/// Renders the whole inventory as text tables.
#[must_use]
pub fn render(inv: &Inventory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "DEVICES (source: {})",
        match inv.device_source {
            crate::model::DeviceSource::Udev => "udev",
            crate::model::DeviceSource::UdevDatabaseFiles => "udev database files",
            crate::model::DeviceSource::Sysfs => "sysfs, no udev database",
        }
    );
    let _ = writeln!(
        out,
        "{} {} {} {} {} {} HEALTH",
        cell(Some("NAME"), 10),
        cell(Some("KIND"), 8),
        cell(Some("SIZE"), 10),
        cell(Some("MODEL"), 26),
        cell(Some("SERIAL"), 20),
        cell(Some("VERDICT"), 9),
    );
    for d in &inv.devices {
        device(&mut out, d);
    }
    if inv.devices.is_empty() {
        let why = inv
            .unknown
            .get("devices")
            .map_or("none found", String::as_str);
        let _ = writeln!(out, "  (no devices: {why})");
    }
    let _ = writeln!(out);
    platform(&mut out, inv);
    out
}

fn device(out: &mut String, d: &BlockDevice) {
    let size = d.size_bytes.map(human_size);
    let _ = writeln!(
        out,
        "{} {} {} {} {} {} {}",
        cell(Some(&d.name), 10),
        cell(Some(d.kind.as_str()), 8),
        cell(size.as_deref(), 10),
        cell(d.model.as_deref(), 26),
        cell(d.serial.as_deref(), 20),
        cell(Some(d.verdict.as_str()), 9),
        d.health.verdict.as_str(),
    );
    for r in &d.reasons {
        let _ = writeln!(out, "           - {}: {}", code(&r.code), r.detail);
    }
    if let Some(parts) = &d.partitions {
        for p in parts {
            let size = p.size_bytes.map_or_else(|| "-".to_owned(), human_size);
            let mut what: Vec<String> = p
                .signatures
                .iter()
                .flatten()
                .map(|s| s.kind.as_str().to_owned())
                .collect();
            what.extend(
                p.mount_points
                    .iter()
                    .flatten()
                    .map(|m| format!("mounted at {m}")),
            );
            what.extend(p.holders.iter().flatten().map(|h| format!("held by {h}")));
            let sep = if what.is_empty() { "" } else { ": " };
            let _ = writeln!(
                out,
                "           partition {} {} {}{sep}{}",
                p.name,
                size,
                p.verdict.as_str(),
                what.join(", ")
            );
        }
    }
    let problems = d
        .health
        .reasons
        .iter()
        .filter(|r| r.code != crate::model::HealthReasonCode::Healthy);
    for r in problems {
        let _ = writeln!(out, "           health {}: {}", code(&r.code), r.detail);
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn level(l: SevLevel) -> &'static str {
    match l {
        SevLevel::None => "none",
        SevLevel::Sev => "SEV",
        SevLevel::SevEs => "SEV-ES",
        SevLevel::SevSnp => "SEV-SNP",
    }
}

fn tpm_line(t: &Tpm) -> String {
    if !t.present {
        return "not present".to_owned();
    }
    let version = t
        .version_major
        .map_or_else(|| "version unknown".to_owned(), |v| format!("TPM {v}.0"));
    let banks = match (&t.pcr_banks, &t.pcr_banks_sysfs) {
        (Some(b), _) => b
            .iter()
            .map(|b| b.algorithm.clone())
            .collect::<Vec<_>>()
            .join(","),
        (None, Some(b)) => b.join(","),
        (None, None) => "unknown".to_owned(),
    };
    let node = t
        .resource_manager_node
        .as_deref()
        .or(t.device_node.as_deref())
        .unwrap_or("no device node");
    let maker = t
        .manufacturer
        .as_deref()
        .map(|m| format!(", {m}"))
        .unwrap_or_default();
    format!("{version}{maker}, PCR banks {banks}, {node}")
}

fn platform(out: &mut String, inv: &Inventory) {
    let p = &inv.platform;
    let _ = writeln!(out, "PLATFORM");
    let c = &p.cpu;
    let features = c.features.as_ref().map_or_else(
        || "unknown".to_owned(),
        |f| {
            let list = [
                ("aes", f.aes),
                ("vaes", f.vaes),
                ("pclmulqdq", f.pclmulqdq),
                ("vpclmulqdq", f.vpclmulqdq),
                ("avx2", f.avx2),
                ("avx512f", f.avx512f),
                ("avx512bw", f.avx512bw),
                ("sha_ni", f.sha_ni),
            ];
            let have: Vec<&str> = list.iter().filter(|(_, v)| *v).map(|(n, _)| *n).collect();
            let miss: Vec<&str> = list.iter().filter(|(_, v)| !*v).map(|(n, _)| *n).collect();
            format!(
                "{} (missing: {})",
                have.join(" "),
                if miss.is_empty() {
                    "none".to_owned()
                } else {
                    miss.join(" ")
                }
            )
        },
    );
    let num = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    let _ = writeln!(
        out,
        "CPU:      {}, {} socket(s), {} core(s), {} thread(s); {}",
        c.model_name.as_deref().unwrap_or("unknown model"),
        num(c.sockets),
        num(c.cores),
        num(c.threads),
        features
    );
    let m = &p.memory;
    let size = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), human_size);
    let _ = writeln!(
        out,
        "Memory:   {} total, {} available, swap {}",
        size(m.total_bytes),
        size(m.available_bytes),
        size(m.swap_total_bytes)
    );
    let _ = writeln!(out, "TPM:      {}", tpm_line(&p.tpm));
    let h = &p.sev.host;
    let g = &p.sev.guest;
    let _ = writeln!(
        out,
        "SEV:      host usable {} (CPU SEV {} / ES {} / SNP {}; kvm_amd SEV {} / ES {} / SNP {}; /dev/sev {}); guest {} (hypervisor {})",
        level(h.usable_level),
        yes_no(h.cpu_sev),
        yes_no(h.cpu_sev_es),
        yes_no(h.cpu_sev_snp),
        yes_no(h.kvm_sev),
        yes_no(h.kvm_sev_es),
        yes_no(h.kvm_sev_snp),
        if h.dev_sev { "yes" } else { "no" },
        g.level.map_or("unknown", level),
        yes_no(g.hypervisor)
    );
    for n in &p.network {
        let addrs = n.addresses.as_ref().map_or_else(
            || "addresses unknown".to_owned(),
            |a| {
                a.iter()
                    .map(|a| {
                        format!(
                            "{}/{}",
                            a.address,
                            a.prefix_len
                                .map_or_else(|| "?".to_owned(), |p| p.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        let _ = writeln!(
            out,
            "Network:  {} {} mtu {} {} {} {} {}",
            n.name,
            n.mac.as_deref().unwrap_or("-"),
            n.mtu.map_or_else(|| "?".to_owned(), |m| m.to_string()),
            n.operstate.as_deref().unwrap_or("?"),
            n.speed_mbps
                .map_or_else(|| "-".to_owned(), |s| format!("{s} Mb/s")),
            n.driver
                .as_deref()
                .unwrap_or(if n.is_virtual { "virtual" } else { "-" }),
            addrs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 * 1024 * 1024 * 1024), "256.0 GiB");
        assert_eq!(human_size(u64::MAX), "15.9 EiB");
    }
}
