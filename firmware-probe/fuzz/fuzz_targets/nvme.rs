//! NVMe Identify Controller and SMART / Health log decoders (and the VPD serial parser).
#![no_main]

use dw_probe::nvme::{decode_identify_controller, decode_smart_log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = decode_identify_controller(data) {
        assert!(id.serial.len() <= 20 && id.model.len() <= 40 && id.firmware_revision.len() <= 8);
    }
    if let Ok(log) = decode_smart_log(data) {
        assert_eq!(log.critical_warning, data[0]);
    }
    let _ = dw_probe::parse_vpd_serial(data);
});
