//! Drive health: NVMe through the admin ioctl, everything else through smartctl.

use std::fs::File;

use crate::config::ProbeConfig;
use crate::fsx::Roots;
use crate::model::{
    DeviceKind, Health, HealthReason, HealthReasonCode, HealthSource, HealthVerdict, NvmeHealth,
    Unknown, note,
};
use crate::nvme::{self, Finding, Severity};
use crate::smart;

fn unknown_health(code: HealthReasonCode, detail: impl Into<String>) -> Health {
    let detail = detail.into();
    let mut unknown = Unknown::new();
    for field in [
        "source",
        "temperature_celsius",
        "power_on_hours",
        "nvme",
        "smartctl",
    ] {
        note(&mut unknown, field, detail.clone());
    }
    Health {
        verdict: HealthVerdict::Unknown,
        reasons: vec![HealthReason { code, detail }],
        source: None,
        temperature_celsius: None,
        power_on_hours: None,
        nvme: None,
        smartctl: None,
        unknown,
    }
}

fn verdict_from(findings: Vec<Finding>, what: &str) -> (HealthVerdict, Vec<HealthReason>) {
    match findings.iter().map(|(s, _)| *s).max() {
        None => (
            HealthVerdict::Ok,
            vec![HealthReason {
                code: HealthReasonCode::Healthy,
                detail: format!("no problem found in the {what}"),
            }],
        ),
        Some(worst) => {
            let verdict = match worst {
                Severity::Failing => HealthVerdict::Failing,
                Severity::Warning => HealthVerdict::Warning,
            };
            (verdict, findings.into_iter().map(|(_, r)| r).collect())
        }
    }
}

/// Health of the whole device `name` of `kind`.
pub(crate) fn device_health(
    config: &ProbeConfig,
    roots: &Roots,
    name: &str,
    kind: DeviceKind,
    nvme_controller: Option<&str>,
) -> Health {
    if !config.health {
        return unknown_health(HealthReasonCode::NotProbed, "health probing switched off");
    }
    match kind {
        DeviceKind::Nvme => match nvme_controller {
            Some(ctrl) => nvme_health(config, roots, ctrl),
            None => unknown_health(
                HealthReasonCode::QueryFailed,
                "the NVMe controller of this namespace could not be determined",
            ),
        },
        DeviceKind::Virtio => {
            unknown_health(HealthReasonCode::NoSmart, "virtio devices expose no SMART")
        }
        DeviceKind::Loop => unknown_health(
            HealthReasonCode::NoSmart,
            "loop devices are backed by files: no SMART (check the disk holding the file)",
        ),
        DeviceKind::Md | DeviceKind::Dm => unknown_health(
            HealthReasonCode::NoSmart,
            "virtual device: no SMART of its own (see the health of its slaves)",
        ),
        DeviceKind::Zram | DeviceKind::Ram => {
            unknown_health(HealthReasonCode::NoSmart, "RAM-backed device: no SMART")
        }
        DeviceKind::Mmc => {
            unknown_health(HealthReasonCode::NoSmart, "SD/eMMC devices expose no SMART")
        }
        DeviceKind::Optical => unknown_health(
            HealthReasonCode::NoSmart,
            "optical drives: health not evaluated",
        ),
        DeviceKind::Ssd | DeviceKind::Hdd | DeviceKind::Usb | DeviceKind::Other => {
            smartctl_health(config, roots, name)
        }
    }
}

fn nvme_health(config: &ProbeConfig, roots: &Roots, controller: &str) -> Health {
    let node = roots.dev(controller);
    if !config.nvme_ioctl {
        return unknown_health(
            HealthReasonCode::NotProbed,
            "NVMe admin commands switched off",
        );
    }
    let file = match File::open(&node.real) {
        Ok(f) => f,
        Err(e) => {
            return unknown_health(
                HealthReasonCode::QueryFailed,
                format!("cannot open {}: {e}", node.shown),
            );
        }
    };
    let mut unknown = Unknown::new();
    let identify = match crate::sys::identify_controller(&file) {
        Ok(buf) => match nvme::decode_identify_controller(&buf) {
            Ok(id) => Some(id),
            Err(e) => {
                note(&mut unknown, "identify", e.to_string());
                None
            }
        },
        Err(e) => {
            note(&mut unknown, "identify", format!("{} on {}", e, node.shown));
            None
        }
    };
    let smart_log = match crate::sys::smart_log(&file) {
        Ok(buf) => match nvme::decode_smart_log(&buf) {
            Ok(log) => Some(log),
            Err(e) => {
                note(&mut unknown, "smart_log", e.to_string());
                None
            }
        },
        Err(e) => {
            note(
                &mut unknown,
                "smart_log",
                format!("{} on {}", e, node.shown),
            );
            None
        }
    };
    let nvme = NvmeHealth {
        controller: node.shown.clone(),
        identify,
        smart_log,
        unknown,
    };
    let Some(log) = nvme.smart_log.clone() else {
        let why = nvme.unknown.get("smart_log").cloned().unwrap_or_default();
        let mut h = unknown_health(
            HealthReasonCode::QueryFailed,
            format!("SMART log unavailable: {why}"),
        );
        h.unknown.remove("nvme");
        h.nvme = Some(nvme);
        return h;
    };
    let findings = nvme::evaluate(&log, nvme.identify.as_ref());
    let (verdict, reasons) = verdict_from(findings, "NVMe SMART / Health log");
    let mut unknown = Unknown::new();
    note(
        &mut unknown,
        "smartctl",
        "NVMe health comes from the admin ioctl",
    );
    let power_on_hours = u64::try_from(log.power_on_hours).ok();
    if power_on_hours.is_none() {
        note(
            &mut unknown,
            "power_on_hours",
            "value does not fit in 64 bits",
        );
    }
    Health {
        verdict,
        reasons,
        source: Some(HealthSource::NvmeAdminIoctl),
        temperature_celsius: Some(i64::from(log.temperature_celsius)),
        power_on_hours,
        nvme: Some(nvme),
        smartctl: None,
        unknown,
    }
}

fn smartctl_health(config: &ProbeConfig, roots: &Roots, name: &str) -> Health {
    let Some(program) = &config.smartctl.program else {
        return unknown_health(
            HealthReasonCode::ToolMissing,
            "smartctl disabled by configuration",
        );
    };
    let node = roots.dev(name);
    let output = match smart::run_smartctl(program, &node.real, config.smartctl.timeout) {
        Ok(o) => o,
        Err(e @ smart::SmartctlRunError::NotInstalled { .. }) => {
            return unknown_health(HealthReasonCode::ToolMissing, e.to_string());
        }
        Err(e) => return unknown_health(HealthReasonCode::QueryFailed, e.to_string()),
    };
    let report = match smart::parse_smartctl_json(&output.stdout, Some(output.exit_status)) {
        Ok(r) => r,
        Err(e) => {
            return unknown_health(
                HealthReasonCode::QueryFailed,
                format!("smartctl exited with {}: {e}", output.exit_status),
            );
        }
    };
    if !smart::has_health_data(&report) {
        let why = if report.messages.is_empty() {
            format!(
                "smartctl exited with {} and returned no SMART data",
                output.exit_status
            )
        } else {
            format!("smartctl: {}", report.messages.join("; "))
        };
        let mut h = unknown_health(HealthReasonCode::QueryFailed, why);
        h.unknown.remove("smartctl");
        h.smartctl = Some(report);
        return h;
    }
    let (verdict, reasons) = verdict_from(smart::evaluate(&report), "smartctl report");
    let mut unknown = Unknown::new();
    note(&mut unknown, "nvme", "health comes from smartctl");
    if report.temperature_celsius.is_none() {
        note(
            &mut unknown,
            "temperature_celsius",
            "smartctl reports no temperature",
        );
    }
    if report.power_on_hours.is_none() {
        note(
            &mut unknown,
            "power_on_hours",
            "smartctl reports no power-on time",
        );
    }
    Health {
        verdict,
        reasons,
        source: Some(HealthSource::Smartctl),
        temperature_celsius: report.temperature_celsius,
        power_on_hours: report.power_on_hours,
        nvme: None,
        smartctl: Some(report),
        unknown,
    }
}
