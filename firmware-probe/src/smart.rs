//! ATA/SCSI (and NVMe) SMART through `smartctl --json -a`: running it with a timeout, parsing its
//! JSON (pure, bounded, fuzzed) and the health rules.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

use crate::model::{AtaAttribute, HealthReasonCode, SmartctlNvmeLog, SmartctlReport, Unknown};
use crate::nvme::{ENDURANCE_WARNING_PERCENT, Finding, SPARE_MARGIN_PERCENT, Severity};

/// Largest smartctl output read.
pub const MAX_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;
/// ATA attributes the rules look at.
pub const WATCHED_ATA_ATTRIBUTES: [u8; 5] = [5, 187, 188, 197, 198];
/// Temperature (°C) at or above which a smartctl-reported drive is flagged.
pub const TEMPERATURE_WARNING_CELSIUS: i64 = 60;

/// smartctl exit status bits (smartctl(8), "RETURN VALUES").
pub mod exit_bits {
    /// Command line did not parse.
    pub const CMDLINE: i32 = 1 << 0;
    /// Device open failed, or the device did not return an IDENTIFY.
    pub const OPEN_FAILED: i32 = 1 << 1;
    /// A SMART or other command failed, or a checksum error in a SMART structure.
    pub const COMMAND_FAILED: i32 = 1 << 2;
    /// SMART status check returned "DISK FAILING".
    pub const DISK_FAILING: i32 = 1 << 3;
    /// Prefail attributes at or below threshold.
    pub const PREFAIL_NOW: i32 = 1 << 4;
    /// Attributes at or below threshold in the past.
    pub const THRESHOLD_PAST: i32 = 1 << 5;
    /// The device error log has errors.
    pub const ERROR_LOG: i32 = 1 << 6;
    /// The self-test log has errors.
    pub const SELF_TEST_LOG: i32 = 1 << 7;
}

/// Running smartctl failed.
#[derive(Debug, Error)]
pub enum SmartctlRunError {
    /// The program is not installed.
    #[error("smartmontools not installed ({program} not found)")]
    NotInstalled {
        /// Program name.
        program: String,
    },
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// It did not finish in time and was killed.
    #[error("{program} did not finish within {secs} s and was killed")]
    Timeout {
        /// Program name.
        program: String,
        /// Timeout in seconds.
        secs: u64,
    },
    /// It was killed by a signal.
    #[error("{program} was killed by a signal")]
    Signalled {
        /// Program name.
        program: String,
    },
}

/// What smartctl printed and how it exited.
#[derive(Debug, Clone)]
pub struct SmartctlOutput {
    /// Standard output (at most [`MAX_OUTPUT_BYTES`]).
    pub stdout: Vec<u8>,
    /// Exit status.
    pub exit_status: i32,
}

/// Runs `program --json -a device` with a timeout; never blocks longer than `timeout` (+50 ms).
pub fn run_smartctl(
    program: &Path,
    device: &Path,
    timeout: Duration,
) -> Result<SmartctlOutput, SmartctlRunError> {
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .arg("--json")
        .arg("-a")
        .arg(device)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Own process group, so a timeout kills smartctl and anything it started.
        .process_group(0)
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SmartctlRunError::NotInstalled {
                    program: name.clone(),
                }
            } else {
                SmartctlRunError::Spawn {
                    program: name.clone(),
                    source,
                }
            }
        })?;
    let stdout = child.stdout.take();
    // Drain stdout on a thread so a chatty child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = stdout {
            let mut limited = out.take(MAX_OUTPUT_BYTES);
            let _ = limited.read_to_end(&mut buf);
            // Discard anything beyond the limit so the child can exit.
            let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
        }
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) | Err(_) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                // The reader ends when the killed group closes the pipe; it is not waited for.
                drop(reader);
                return Err(SmartctlRunError::Timeout {
                    program: name,
                    secs: timeout.as_secs(),
                });
            }
        }
    };
    let stdout = reader.join().unwrap_or_default();
    let exit_status = status
        .code()
        .ok_or(SmartctlRunError::Signalled { program: name })?;
    Ok(SmartctlOutput {
        stdout,
        exit_status,
    })
}

/// smartctl's output could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SmartctlParseError {
    /// Larger than the parser accepts.
    #[error("smartctl output is larger than {MAX_OUTPUT_BYTES} bytes")]
    TooLarge,
    /// Not JSON.
    #[error("smartctl output is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("smartctl output is not a JSON object")]
    NotObject,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path)
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    get(v, path).and_then(Value::as_u64)
}

fn u8_at(v: &Value, path: &[&str]) -> Option<u8> {
    u64_at(v, path).and_then(|n| u8::try_from(n).ok())
}

/// Parses `smartctl --json -a` output. Missing fields become null with a reason; only output that
/// is not a JSON object at all is an error. serde_json limits nesting depth, so hostile input
/// cannot exhaust the stack.
pub fn parse_smartctl_json(
    bytes: &[u8],
    process_exit_status: Option<i32>,
) -> Result<SmartctlReport, SmartctlParseError> {
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_OUTPUT_BYTES {
        return Err(SmartctlParseError::TooLarge);
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| SmartctlParseError::NotJson(e.to_string()))?;
    if !v.is_object() {
        return Err(SmartctlParseError::NotObject);
    }
    let mut unknown = Unknown::new();
    let mut field = |name: &str, value: Option<String>, why: &str| {
        if value.is_none() {
            unknown.insert(name.into(), why.into());
        }
        value
    };
    let exit_status = process_exit_status.or_else(|| {
        get(&v, &["smartctl", "exit_status"])
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
    });
    let version = get(&v, &["smartctl", "version"])
        .and_then(Value::as_array)
        .and_then(|a| {
            let parts: Vec<String> = a
                .iter()
                .take(4)
                .filter_map(Value::as_u64)
                .map(|n| n.to_string())
                .collect();
            (!parts.is_empty()).then(|| parts.join("."))
        });
    let smartctl_version = field("smartctl_version", version, "not in smartctl output");
    let device_type = field(
        "device_type",
        str_at(&v, &["device", "type"]),
        "not in smartctl output",
    );
    let protocol = field(
        "protocol",
        str_at(&v, &["device", "protocol"]),
        "not in smartctl output",
    );
    let model = field(
        "model",
        str_at(&v, &["model_name"]),
        "not in smartctl output",
    );
    let serial = field(
        "serial",
        str_at(&v, &["serial_number"]),
        "not in smartctl output",
    );
    let firmware_version = field(
        "firmware_version",
        str_at(&v, &["firmware_version"]).or_else(|| str_at(&v, &["revision"])),
        "not in smartctl output",
    );
    let smart_passed = get(&v, &["smart_status", "passed"]).and_then(Value::as_bool);
    let temperature_celsius = get(&v, &["temperature", "current"]).and_then(Value::as_i64);
    let power_on_hours = u64_at(&v, &["power_on_time", "hours"]);
    let scsi_grown_defect_list = u64_at(&v, &["scsi_grown_defect_list"]);
    let nvme_log = get(&v, &["nvme_smart_health_information_log"])
        .filter(|l| l.is_object())
        .map(|l| SmartctlNvmeLog {
            critical_warning: u8_at(l, &["critical_warning"]),
            available_spare_percent: u8_at(l, &["available_spare"]),
            available_spare_threshold_percent: u8_at(l, &["available_spare_threshold"]),
            percentage_used: u8_at(l, &["percentage_used"]),
            media_errors: u64_at(l, &["media_errors"]),
            error_log_entries: u64_at(l, &["num_err_log_entries"]),
            unsafe_shutdowns: u64_at(l, &["unsafe_shutdowns"]),
        });
    let ata_attributes = get(&v, &["ata_smart_attributes", "table"])
        .and_then(Value::as_array)
        .map(|table| {
            table
                .iter()
                .take(256)
                .filter_map(|a| {
                    let id = u8_at(a, &["id"])?;
                    WATCHED_ATA_ATTRIBUTES.contains(&id).then(|| AtaAttribute {
                        id,
                        name: str_at(a, &["name"]).unwrap_or_default(),
                        value: u64_at(a, &["value"]),
                        worst: u64_at(a, &["worst"]),
                        thresh: u64_at(a, &["thresh"]),
                        raw: u64_at(a, &["raw", "value"]),
                        when_failed: str_at(a, &["when_failed"]).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let messages = get(&v, &["smartctl", "messages"])
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .take(32)
                .filter_map(|m| str_at(m, &["string"]))
                .collect()
        })
        .unwrap_or_default();
    let why = "not in smartctl output";
    for (name, missing) in [
        ("exit_status", exit_status.is_none()),
        ("smart_passed", smart_passed.is_none()),
        ("temperature_celsius", temperature_celsius.is_none()),
        ("power_on_hours", power_on_hours.is_none()),
        ("scsi_grown_defect_list", scsi_grown_defect_list.is_none()),
        ("nvme_log", nvme_log.is_none()),
    ] {
        if missing {
            unknown.insert(name.into(), why.into());
        }
    }
    Ok(SmartctlReport {
        exit_status,
        smartctl_version,
        device_type,
        protocol,
        model,
        serial,
        firmware_version,
        smart_passed,
        temperature_celsius,
        power_on_hours,
        ata_attributes,
        scsi_grown_defect_list,
        nvme_log,
        messages,
        unknown,
    })
}

/// Whether smartctl could talk to the device at all (exit bits 0 and 1 clear and some SMART data).
#[must_use]
pub fn has_health_data(r: &SmartctlReport) -> bool {
    let fatal = r
        .exit_status
        .is_some_and(|s| s & (exit_bits::CMDLINE | exit_bits::OPEN_FAILED) != 0);
    let data = r.smart_passed.is_some()
        || !r.ata_attributes.is_empty()
        || r.nvme_log.is_some()
        || r.scsi_grown_defect_list.is_some();
    !fatal && data
}

fn finding(severity: Severity, code: HealthReasonCode, detail: String) -> Finding {
    (severity, crate::model::HealthReason { code, detail })
}

/// Health rules for smartctl data (documented in docs/PROBE.md).
pub(crate) fn evaluate(r: &SmartctlReport) -> Vec<Finding> {
    use HealthReasonCode as C;
    use Severity::{Failing, Warning};
    let mut out = Vec::new();
    let status = r.exit_status.unwrap_or(0);
    if r.smart_passed == Some(false) || status & exit_bits::DISK_FAILING != 0 {
        out.push(finding(
            Failing,
            C::SmartFailed,
            "SMART overall-health self-assessment: FAILED".into(),
        ));
    }
    if status & exit_bits::PREFAIL_NOW != 0 {
        out.push(finding(
            Failing,
            C::AttributeFailingNow,
            "smartctl: pre-failure attributes at or below threshold".into(),
        ));
    }
    if status & exit_bits::THRESHOLD_PAST != 0 {
        out.push(finding(
            Warning,
            C::AttributeFailedPast,
            "smartctl: attributes were at or below threshold in the past".into(),
        ));
    }
    if status & exit_bits::ERROR_LOG != 0 {
        out.push(finding(
            Warning,
            C::ErrorLogEntries,
            "smartctl: the device error log has errors".into(),
        ));
    }
    if status & exit_bits::SELF_TEST_LOG != 0 {
        out.push(finding(
            Warning,
            C::SelfTestErrors,
            "smartctl: the self-test log has errors".into(),
        ));
    }
    for a in &r.ata_attributes {
        match a.when_failed.as_str() {
            "now" => out.push(finding(
                Failing,
                C::AttributeFailingNow,
                format!(
                    "attribute {} {} is at or below its threshold now",
                    a.id, a.name
                ),
            )),
            "past" => out.push(finding(
                Warning,
                C::AttributeFailedPast,
                format!(
                    "attribute {} {} was at or below its threshold in the past",
                    a.id, a.name
                ),
            )),
            _ => {}
        }
        let raw = a.raw.unwrap_or(0);
        if raw > 0 {
            let code = match a.id {
                5 => C::ReallocatedSectors,
                187 => C::ReportedUncorrectable,
                188 => C::CommandTimeouts,
                197 => C::PendingSectors,
                _ => C::OfflineUncorrectable,
            };
            out.push(finding(
                Warning,
                code,
                format!("attribute {} {} raw value {raw}", a.id, a.name),
            ));
        }
    }
    if let Some(defects) = r.scsi_grown_defect_list.filter(|d| *d > 0) {
        out.push(finding(
            Warning,
            C::GrownDefects,
            format!("SCSI grown defect list has {defects} entries"),
        ));
    }
    if let Some(log) = &r.nvme_log {
        out.extend(evaluate_nvme_log(log));
    }
    if let Some(t) = r
        .temperature_celsius
        .filter(|t| *t >= TEMPERATURE_WARNING_CELSIUS)
    {
        out.push(finding(
            Warning,
            C::Temperature,
            format!("temperature {t} °C at or above {TEMPERATURE_WARNING_CELSIUS} °C"),
        ));
    }
    out
}

fn evaluate_nvme_log(log: &SmartctlNvmeLog) -> Vec<Finding> {
    use HealthReasonCode as C;
    use Severity::{Failing, Warning};
    let mut out = Vec::new();
    if let Some(cw) = log.critical_warning.filter(|c| *c != 0) {
        let severe = cw & 0b1_1101 != 0;
        let severity = if severe { Failing } else { Warning };
        let code = if cw & 0x01 != 0 {
            C::SpareBelowThreshold
        } else if cw & 0x04 != 0 {
            C::ReliabilityDegraded
        } else if cw & 0x08 != 0 {
            C::MediaReadOnly
        } else if cw & 0x10 != 0 {
            C::VolatileBackupFailed
        } else if cw & 0x02 != 0 {
            C::TemperatureWarning
        } else if cw & 0x20 != 0 {
            C::PmrReadOnly
        } else {
            C::UnknownCriticalWarning
        };
        out.push(finding(
            severity,
            code,
            format!("NVMe critical warning 0x{cw:02x}"),
        ));
    }
    if let (Some(spare), Some(threshold)) = (
        log.available_spare_percent,
        log.available_spare_threshold_percent,
    ) {
        if spare < threshold {
            out.push(finding(
                Failing,
                C::SpareBelowThreshold,
                format!("available spare {spare}% below threshold {threshold}%"),
            ));
        } else if spare < threshold.saturating_add(SPARE_MARGIN_PERCENT) {
            out.push(finding(
                Warning,
                C::SpareLow,
                format!("available spare {spare}% within {SPARE_MARGIN_PERCENT} points of threshold {threshold}%"),
            ));
        }
    }
    if let Some(used) = log
        .percentage_used
        .filter(|u| *u >= ENDURANCE_WARNING_PERCENT)
    {
        out.push(finding(
            Warning,
            C::EnduranceUsed,
            format!("{used}% of rated endurance used"),
        ));
    }
    if let Some(errors) = log.media_errors.filter(|e| *e > 0) {
        out.push(finding(
            Warning,
            C::MediaErrors,
            format!("{errors} media and data integrity errors"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn codes(r: &SmartctlReport) -> Vec<HealthReasonCode> {
        evaluate(r).into_iter().map(|(_, f)| f.code).collect()
    }

    #[test]
    fn healthy_sata_ssd() {
        let r = parse_smartctl_json(&data("smartctl-sata-ssd.json"), Some(0)).unwrap();
        assert_eq!(r.smartctl_version.as_deref(), Some("7.3"));
        assert_eq!(r.device_type.as_deref(), Some("sat"));
        assert_eq!(r.protocol.as_deref(), Some("ATA"));
        assert_eq!(r.model.as_deref(), Some("Samsung SSD 870 EVO 1TB"));
        assert_eq!(r.serial.as_deref(), Some("S6PUNX0T402817K"));
        assert_eq!(r.firmware_version.as_deref(), Some("SVT02B6Q"));
        assert_eq!(r.smart_passed, Some(true));
        assert_eq!(r.temperature_celsius, Some(31));
        assert_eq!(r.power_on_hours, Some(12_842));
        let ids: Vec<u8> = r.ata_attributes.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![5, 187, 197, 198]);
        assert!(r.ata_attributes.iter().all(|a| a.raw == Some(0)));
        assert!(has_health_data(&r));
        assert!(codes(&r).is_empty());
    }

    #[test]
    fn worn_hdd_with_pending_sectors() {
        let r = parse_smartctl_json(&data("smartctl-hdd-pending.json"), Some(0xC0)).unwrap();
        assert_eq!(r.smart_passed, Some(true));
        assert_eq!(r.power_on_hours, Some(41_208));
        let raw: Vec<(u8, Option<u64>)> = r.ata_attributes.iter().map(|a| (a.id, a.raw)).collect();
        assert_eq!(
            raw,
            vec![
                (5, Some(8)),
                (187, Some(2)),
                (188, Some(0)),
                (197, Some(16)),
                (198, Some(16))
            ]
        );
        let c = codes(&r);
        assert_eq!(
            c,
            vec![
                HealthReasonCode::ErrorLogEntries,
                HealthReasonCode::SelfTestErrors,
                HealthReasonCode::ReallocatedSectors,
                HealthReasonCode::ReportedUncorrectable,
                HealthReasonCode::PendingSectors,
                HealthReasonCode::OfflineUncorrectable,
            ]
        );
        assert!(evaluate(&r).iter().all(|(s, _)| *s == Severity::Warning));
    }

    #[test]
    fn failing_hdd() {
        let r = parse_smartctl_json(&data("smartctl-hdd-failing.json"), Some(0x18)).unwrap();
        assert_eq!(r.smart_passed, Some(false));
        let f = evaluate(&r);
        assert!(
            f.iter()
                .any(|(s, r)| *s == Severity::Failing && r.code == HealthReasonCode::SmartFailed)
        );
        assert!(
            f.iter()
                .any(|(_, r)| r.code == HealthReasonCode::AttributeFailingNow)
        );
    }

    #[test]
    fn sas_with_grown_defects() {
        let r = parse_smartctl_json(&data("smartctl-sas.json"), Some(0)).unwrap();
        assert_eq!(r.protocol.as_deref(), Some("SCSI"));
        assert_eq!(r.scsi_grown_defect_list, Some(56));
        assert_eq!(r.firmware_version.as_deref(), Some("MS03"));
        assert_eq!(r.temperature_celsius, Some(34));
        assert_eq!(codes(&r), vec![HealthReasonCode::GrownDefects]);
    }

    #[test]
    fn nvme_via_smartctl() {
        let r = parse_smartctl_json(&data("smartctl-nvme.json"), Some(0)).unwrap();
        let log = r.nvme_log.clone().unwrap();
        assert_eq!(log.critical_warning, Some(0));
        assert_eq!(log.available_spare_percent, Some(100));
        assert_eq!(log.percentage_used, Some(92));
        assert_eq!(log.media_errors, Some(0));
        assert_eq!(codes(&r), vec![HealthReasonCode::EnduranceUsed]);
    }

    #[test]
    fn open_failure_has_no_health_data() {
        let r = parse_smartctl_json(&data("smartctl-open-failed.json"), Some(2)).unwrap();
        assert!(!has_health_data(&r));
        assert_eq!(
            r.messages,
            vec!["Smartctl open device: /dev/sdz failed: No such device".to_owned()]
        );
        assert!(r.unknown.contains_key("smart_passed"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse_smartctl_json(b"not json", None),
            Err(SmartctlParseError::NotJson(_))
        ));
        assert_eq!(
            parse_smartctl_json(b"[1,2]", None),
            Err(SmartctlParseError::NotObject)
        );
    }

    #[test]
    fn wrong_types_become_unknown() {
        let r = parse_smartctl_json(
            br#"{"smart_status":{"passed":"yes"},"temperature":{"current":"hot"},
                "ata_smart_attributes":{"table":[{"id":5000},{"id":5,"raw":{"value":-1}}]}}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.smart_passed, None);
        assert_eq!(r.temperature_celsius, None);
        assert_eq!(r.ata_attributes.len(), 1);
        assert_eq!(r.ata_attributes[0].raw, None);
    }

    #[cfg(unix)]
    #[test]
    fn runner_reports_missing_program_and_timeout() {
        let missing = run_smartctl(
            Path::new("/nonexistent/smartctl"),
            Path::new("/dev/null"),
            Duration::from_secs(1),
        );
        assert!(matches!(
            missing,
            Err(SmartctlRunError::NotInstalled { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow");
        // Sleeps far longer than the assertion allows: only a working timeout passes.
        std::fs::write(&script, "#!/bin/sh\nsleep 60\n").unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let started = Instant::now();
        let slow = run_smartctl(&script, Path::new("/dev/null"), Duration::from_millis(200));
        assert!(
            matches!(slow, Err(SmartctlRunError::Timeout { .. })),
            "{slow:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let echo = dir.path().join("echo");
        std::fs::write(
            &echo,
            "#!/bin/sh\necho '{\"smart_status\":{\"passed\":true}}'\nexit 4\n",
        )
        .unwrap();
        std::fs::set_permissions(&echo, std::fs::metadata(&script).unwrap().permissions()).unwrap();
        let out = run_smartctl(&echo, Path::new("/dev/null"), Duration::from_secs(5)).unwrap();
        assert_eq!(out.exit_status, 4);
        let r = parse_smartctl_json(&out.stdout, Some(out.exit_status)).unwrap();
        assert_eq!(r.smart_passed, Some(true));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(r) = parse_smartctl_json(&bytes, None) {
                let _ = evaluate(&r);
            }
        }

        #[test]
        fn random_attribute_tables_never_panic(ids in proptest::collection::vec(any::<i64>(), 0..40),
                                               raws in proptest::collection::vec(any::<i64>(), 0..40),
                                               status in any::<i32>()) {
            let table: Vec<String> = ids.iter().zip(raws.iter()).map(|(id, raw)| {
                format!(r#"{{"id":{id},"name":"x","raw":{{"value":{raw}}},"when_failed":"now"}}"#)
            }).collect();
            let json = format!(r#"{{"ata_smart_attributes":{{"table":[{}]}}}}"#, table.join(","));
            let r = parse_smartctl_json(json.as_bytes(), Some(status)).unwrap();
            let _ = evaluate(&r);
        }
    }
}
