//! NVMe Identify Controller and SMART / Health Information decoders (pure, bounded, fuzzed), and
//! the health rules applied to them. Byte offsets follow the NVMe Base Specification 2.0
//! (Identify Controller data structure, figure 275; SMART / Health Information log page,
//! figure 207). All multi-byte fields are little endian.

use thiserror::Error;

use crate::model::{
    HealthReason, HealthReasonCode, NvmeCriticalWarning, NvmeIdentify, NvmeSmartLog, Unknown,
};

/// Size of the Identify Controller data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Size of the SMART / Health Information log page.
pub const SMART_LOG_LEN: usize = 512;

/// A buffer could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NvmeDecodeError {
    /// The buffer is shorter than the structure.
    #[error("{what} needs {need} bytes, got {got}")]
    TooShort {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The controller returned all zeros (no data at all).
    #[error("{what} is all zeros: the controller returned no data")]
    AllZero {
        /// Which structure.
        what: &'static str,
    },
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u128_at(b: &[u8], off: usize) -> u128 {
    let mut v = [0u8; 16];
    v.copy_from_slice(&b[off..off + 16]);
    u128::from_le_bytes(v)
}

/// ASCII field with trailing spaces/NULs removed; non-printable bytes become `?`.
fn ascii(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect();
    s.trim_end_matches([' ', '?']).trim_start().to_owned()
}

fn check_len(buf: &[u8], need: usize, what: &'static str) -> Result<(), NvmeDecodeError> {
    if buf.len() < need {
        return Err(NvmeDecodeError::TooShort {
            what,
            need,
            got: buf.len(),
        });
    }
    if buf[..need].iter().all(|b| *b == 0) {
        return Err(NvmeDecodeError::AllZero { what });
    }
    Ok(())
}

/// Decodes the Identify Controller data structure (CNS 01h, 4096 bytes).
pub fn decode_identify_controller(buf: &[u8]) -> Result<NvmeIdentify, NvmeDecodeError> {
    check_len(buf, IDENTIFY_LEN, "Identify Controller data")?;
    let mut unknown = Unknown::new();
    let ver = u32_at(buf, 80);
    let version = if ver == 0 {
        unknown.insert(
            "version".into(),
            "controller reports version 0 (NVMe < 1.2)".into(),
        );
        None
    } else {
        Some(format!(
            "{}.{}.{}",
            ver >> 16,
            (ver >> 8) & 0xff,
            ver & 0xff
        ))
    };
    let kelvin = |off: usize, field: &str, unknown: &mut Unknown| {
        let v = u16_at(buf, off);
        if v == 0 {
            unknown.insert(
                field.into(),
                "controller reports 0 (not implemented)".into(),
            );
            None
        } else {
            Some(v)
        }
    };
    let warning_temperature_kelvin = kelvin(266, "warning_temperature_kelvin", &mut unknown);
    let critical_temperature_kelvin = kelvin(268, "critical_temperature_kelvin", &mut unknown);
    let tnvmcap = u128_at(buf, 280);
    let total_capacity_bytes = if tnvmcap == 0 {
        unknown.insert(
            "total_capacity_bytes".into(),
            "controller reports 0 (optional)".into(),
        );
        None
    } else {
        Some(tnvmcap)
    };
    Ok(NvmeIdentify {
        vid: u16_at(buf, 0),
        ssvid: u16_at(buf, 2),
        serial: ascii(&buf[4..24]),
        model: ascii(&buf[24..64]),
        firmware_revision: ascii(&buf[64..72]),
        ieee_oui: format!("{:02x}{:02x}{:02x}", buf[75], buf[74], buf[73]),
        controller_id: u16_at(buf, 78),
        version,
        warning_temperature_kelvin,
        critical_temperature_kelvin,
        total_capacity_bytes,
        namespace_count: u32_at(buf, 516),
        unknown,
    })
}

/// Decodes the SMART / Health Information log page (log id 02h, 512 bytes).
pub fn decode_smart_log(buf: &[u8]) -> Result<NvmeSmartLog, NvmeDecodeError> {
    // An all-zero page is legal in principle (a brand-new drive at 0 K?) but a composite
    // temperature of 0 Kelvin means the controller returned nothing; treat it as no data.
    check_len(buf, SMART_LOG_LEN, "SMART / Health Information log")?;
    let critical_warning = buf[0];
    let temperature_kelvin = u16_at(buf, 1);
    Ok(NvmeSmartLog {
        critical_warning,
        critical_warnings: critical_warning_bits(critical_warning),
        temperature_kelvin,
        temperature_celsius: i32::from(temperature_kelvin) - 273,
        available_spare_percent: buf[3],
        available_spare_threshold_percent: buf[4],
        percentage_used: buf[5],
        data_units_read: u128_at(buf, 32),
        data_units_written: u128_at(buf, 48),
        host_read_commands: u128_at(buf, 64),
        host_write_commands: u128_at(buf, 80),
        controller_busy_minutes: u128_at(buf, 96),
        power_cycles: u128_at(buf, 112),
        power_on_hours: u128_at(buf, 128),
        unsafe_shutdowns: u128_at(buf, 144),
        media_errors: u128_at(buf, 160),
        error_log_entries: u128_at(buf, 176),
        warning_temperature_minutes: u32_at(buf, 192),
        critical_temperature_minutes: u32_at(buf, 196),
    })
}

/// Names of the set critical warning bits.
#[must_use]
pub fn critical_warning_bits(byte: u8) -> Vec<NvmeCriticalWarning> {
    let names = [
        NvmeCriticalWarning::SpareBelowThreshold,
        NvmeCriticalWarning::Temperature,
        NvmeCriticalWarning::ReliabilityDegraded,
        NvmeCriticalWarning::ReadOnly,
        NvmeCriticalWarning::VolatileBackupFailed,
        NvmeCriticalWarning::PmrReadOnly,
    ];
    let mut out: Vec<NvmeCriticalWarning> = names
        .iter()
        .enumerate()
        .filter(|(bit, _)| byte & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    if byte & 0xC0 != 0 {
        out.push(NvmeCriticalWarning::Reserved);
    }
    out
}

/// Severity of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Warning,
    Failing,
}

/// One health finding with its severity.
pub(crate) type Finding = (Severity, HealthReason);

fn finding(severity: Severity, code: HealthReasonCode, detail: String) -> Finding {
    (severity, HealthReason { code, detail })
}

/// Percentage used at or above which the drive is flagged.
pub const ENDURANCE_WARNING_PERCENT: u8 = 90;
/// Points above the spare threshold at which a low spare is flagged.
pub const SPARE_MARGIN_PERCENT: u8 = 10;

/// Health rules for NVMe (documented in docs/PROBE.md): critical warning bits 0 (spare),
/// 2 (reliability), 3 (read-only) and 4 (volatile backup) -> failing; bits 1 (temperature),
/// 5 (PMR read-only) and reserved bits -> warning; spare below threshold -> failing, within 10
/// points of it -> warning; percentage used >= 90 -> warning (endurance is a rating, not a
/// failure, so even > 100 stays a warning); media errors > 0 -> warning; composite temperature
/// at or above WCTEMP (else CCTEMP) -> warning.
pub(crate) fn evaluate(log: &NvmeSmartLog, identify: Option<&NvmeIdentify>) -> Vec<Finding> {
    use HealthReasonCode as C;
    use Severity::{Failing, Warning};
    let mut out = Vec::new();
    for bit in &log.critical_warnings {
        out.push(match bit {
            NvmeCriticalWarning::SpareBelowThreshold => finding(
                Failing,
                C::SpareBelowThreshold,
                "critical warning bit 0: available spare below threshold".into(),
            ),
            NvmeCriticalWarning::Temperature => finding(
                Warning,
                C::TemperatureWarning,
                "critical warning bit 1: temperature outside the thresholds".into(),
            ),
            NvmeCriticalWarning::ReliabilityDegraded => finding(
                Failing,
                C::ReliabilityDegraded,
                "critical warning bit 2: NVM subsystem reliability degraded".into(),
            ),
            NvmeCriticalWarning::ReadOnly => finding(
                Failing,
                C::MediaReadOnly,
                "critical warning bit 3: media placed in read-only mode".into(),
            ),
            NvmeCriticalWarning::VolatileBackupFailed => finding(
                Failing,
                C::VolatileBackupFailed,
                "critical warning bit 4: volatile memory backup device failed".into(),
            ),
            NvmeCriticalWarning::PmrReadOnly => finding(
                Warning,
                C::PmrReadOnly,
                "critical warning bit 5: persistent memory region became read-only".into(),
            ),
            NvmeCriticalWarning::Reserved => finding(
                Warning,
                C::UnknownCriticalWarning,
                format!(
                    "reserved critical warning bits set (0x{:02x})",
                    log.critical_warning
                ),
            ),
        });
    }
    let spare = log.available_spare_percent;
    let threshold = log.available_spare_threshold_percent;
    if spare < threshold
        && !log
            .critical_warnings
            .contains(&NvmeCriticalWarning::SpareBelowThreshold)
    {
        out.push(finding(
            Failing,
            C::SpareBelowThreshold,
            format!("available spare {spare}% below threshold {threshold}%"),
        ));
    } else if threshold > 0
        && spare >= threshold
        && spare < threshold.saturating_add(SPARE_MARGIN_PERCENT)
    {
        // A threshold of 0 means the drive defines none (QEMU's emulated NVMe reports spare 0
        // and threshold 0): there is nothing to be near, so no early warning from the spare.
        out.push(finding(
            Warning,
            C::SpareLow,
            format!("available spare {spare}% within {SPARE_MARGIN_PERCENT} points of threshold {threshold}%"),
        ));
    }
    if log.percentage_used >= ENDURANCE_WARNING_PERCENT {
        out.push(finding(
            Warning,
            C::EnduranceUsed,
            format!("{}% of rated endurance used", log.percentage_used),
        ));
    }
    if log.media_errors > 0 {
        out.push(finding(
            Warning,
            C::MediaErrors,
            format!("{} media and data integrity errors", log.media_errors),
        ));
    }
    let limit = identify.and_then(|i| {
        i.warning_temperature_kelvin
            .or(i.critical_temperature_kelvin)
    });
    if let Some(limit) = limit
        && log.temperature_kelvin >= limit
    {
        out.push(finding(
            Warning,
            C::Temperature,
            format!(
                "composite temperature {} K at or above the controller's threshold {limit} K",
                log.temperature_kelvin
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn data(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Canned blobs written by tests/data/gen-nvme-blobs.py from the spec offsets.
    fn identify_blob() -> Vec<u8> {
        data("nvme-identify-980pro.bin")
    }

    fn smart_blob() -> Vec<u8> {
        data("nvme-smart-healthy.bin")
    }

    #[test]
    fn decodes_identify() {
        let id = decode_identify_controller(&identify_blob()).unwrap();
        assert_eq!(id.vid, 0x144d);
        assert_eq!(id.ssvid, 0x144d);
        assert_eq!(id.serial, "S5GXNX0R123456A");
        assert_eq!(id.model, "Samsung SSD 980 PRO 1TB");
        assert_eq!(id.firmware_revision, "5B2QGXA7");
        assert_eq!(id.ieee_oui, "002538");
        assert_eq!(id.controller_id, 6);
        assert_eq!(id.version.as_deref(), Some("1.4.0"));
        assert_eq!(id.warning_temperature_kelvin, Some(355));
        assert_eq!(id.critical_temperature_kelvin, Some(358));
        assert_eq!(id.total_capacity_bytes, Some(1_000_204_886_016));
        assert_eq!(id.namespace_count, 1);
        assert!(id.unknown.is_empty());
    }

    #[test]
    fn decodes_smart_log() {
        let log = decode_smart_log(&smart_blob()).unwrap();
        assert_eq!(log.critical_warning, 0);
        assert!(log.critical_warnings.is_empty());
        assert_eq!(log.temperature_kelvin, 310);
        assert_eq!(log.temperature_celsius, 37);
        assert_eq!(log.available_spare_percent, 100);
        assert_eq!(log.available_spare_threshold_percent, 10);
        assert_eq!(log.percentage_used, 3);
        assert_eq!(log.data_units_read, 43_120_559);
        assert_eq!(log.data_units_written, 61_347_897);
        assert_eq!(log.host_read_commands, 812_345_678);
        assert_eq!(log.host_write_commands, 1_234_567_890);
        assert_eq!(log.controller_busy_minutes, 1_572);
        assert_eq!(log.power_cycles, 1_130);
        assert_eq!(log.power_on_hours, 7_912);
        assert_eq!(log.unsafe_shutdowns, 61);
        assert_eq!(log.media_errors, 0);
        assert_eq!(log.error_log_entries, 2_145);
        assert_eq!(log.warning_temperature_minutes, 7);
        assert_eq!(log.critical_temperature_minutes, 1);
        assert!(evaluate(&log, None).is_empty());
    }

    #[test]
    fn decodes_worn_drive() {
        let log = decode_smart_log(&data("nvme-smart-worn.bin")).unwrap();
        assert_eq!(log.critical_warning, 0x05);
        assert_eq!(
            log.critical_warnings,
            vec![
                NvmeCriticalWarning::SpareBelowThreshold,
                NvmeCriticalWarning::ReliabilityDegraded
            ]
        );
        assert_eq!(log.temperature_celsius, 79);
        assert_eq!(log.available_spare_percent, 5);
        assert_eq!(log.percentage_used, 104);
        assert_eq!(log.data_units_read, 912_345_678);
        assert_eq!(log.data_units_written, 2_345_678_901);
        assert_eq!(log.host_read_commands, 9_876_543_210);
        assert_eq!(log.host_write_commands, 19_876_543_210);
        assert_eq!(log.controller_busy_minutes, 88_321);
        assert_eq!(log.power_cycles, 4_012);
        assert_eq!(log.power_on_hours, 39_120);
        assert_eq!(log.unsafe_shutdowns, 402);
        assert_eq!(log.media_errors, 12);
        assert_eq!(log.error_log_entries, 5_120);
        assert_eq!(log.warning_temperature_minutes, 1_440);
        assert_eq!(log.critical_temperature_minutes, 35);
        let id = decode_identify_controller(&identify_blob()).unwrap();
        let f = evaluate(&log, Some(&id));
        let codes: Vec<HealthReasonCode> = f.iter().map(|(_, r)| r.code).collect();
        assert_eq!(
            codes,
            vec![
                HealthReasonCode::SpareBelowThreshold,
                HealthReasonCode::ReliabilityDegraded,
                HealthReasonCode::EnduranceUsed,
                HealthReasonCode::MediaErrors,
            ]
        );
        assert_eq!(f.iter().map(|(s, _)| *s).max(), Some(Severity::Failing));
    }

    #[test]
    fn u128_counters_use_all_sixteen_bytes() {
        let mut b = smart_blob();
        put(&mut b, 48, &(u128::MAX - 5).to_le_bytes());
        let log = decode_smart_log(&b).unwrap();
        assert_eq!(log.data_units_written, u128::MAX - 5);
    }

    #[test]
    fn critical_warning_bits_map_to_verdicts() {
        for (bit, failing) in [
            (0, true),
            (1, false),
            (2, true),
            (3, true),
            (4, true),
            (5, false),
        ] {
            let mut b = smart_blob();
            b[0] = 1 << bit;
            let log = decode_smart_log(&b).unwrap();
            assert_eq!(log.critical_warnings.len(), 1);
            let f = evaluate(&log, None);
            let worst = f.iter().map(|(s, _)| *s).max().unwrap();
            assert_eq!(worst == Severity::Failing, failing, "bit {bit}: {f:?}");
        }
        assert_eq!(
            critical_warning_bits(0xC0),
            vec![NvmeCriticalWarning::Reserved]
        );
    }

    #[test]
    fn thresholds() {
        let mut b = smart_blob();
        b[3] = 5; // spare 5% < threshold 10%
        b[5] = 95;
        put(&mut b, 160, &3u128.to_le_bytes());
        put(&mut b, 1, &360u16.to_le_bytes());
        let log = decode_smart_log(&b).unwrap();
        let id = decode_identify_controller(&identify_blob()).unwrap();
        let codes: Vec<HealthReasonCode> = evaluate(&log, Some(&id))
            .into_iter()
            .map(|(_, r)| r.code)
            .collect();
        assert_eq!(
            codes,
            vec![
                HealthReasonCode::SpareBelowThreshold,
                HealthReasonCode::EnduranceUsed,
                HealthReasonCode::MediaErrors,
                HealthReasonCode::Temperature
            ]
        );
        let mut b = smart_blob();
        b[3] = 15; // within 10 points of 10%
        let log = decode_smart_log(&b).unwrap();
        let f = evaluate(&log, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, Severity::Warning);
        assert_eq!(f[0].1.code, HealthReasonCode::SpareLow);
        // QEMU's emulated NVMe: spare 0, threshold 0 (none defined) is not a warning.
        let mut b = smart_blob();
        b[3] = 0;
        b[4] = 0;
        let log = decode_smart_log(&b).unwrap();
        assert!(
            evaluate(&log, None).is_empty(),
            "{:?}",
            evaluate(&log, None)
        );
    }

    #[test]
    fn rejects_short_and_empty() {
        assert_eq!(
            decode_smart_log(&[1u8; 100]),
            Err(NvmeDecodeError::TooShort {
                what: "SMART / Health Information log",
                need: 512,
                got: 100
            })
        );
        assert!(matches!(
            decode_identify_controller(&[0u8; 4096]),
            Err(NvmeDecodeError::AllZero { .. })
        ));
    }

    #[test]
    fn ascii_fields_are_sanitised() {
        assert_eq!(ascii(b"AB\x01C  \0\0"), "AB?C");
        assert_eq!(ascii(b"        "), "");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            if let Ok(log) = decode_smart_log(&data) {
                let _ = evaluate(&log, None);
            }
            if let Ok(id) = decode_identify_controller(&data) {
                prop_assert!(id.serial.len() <= 20);
                prop_assert!(id.model.len() <= 40);
            }
        }
    }
}
