//! The smartctl JSON parser (and the udev database parser, which reads similar untrusted text).
#![no_main]

use dw_probe::smart::{has_health_data, parse_smartctl_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let status = data.first().map(|b| i32::from(*b));
    if let Ok(report) = parse_smartctl_json(data, status) {
        let _ = has_health_data(&report);
    }
    let text = String::from_utf8_lossy(data);
    let _ = dw_probe::udev::parse_udev_db(&text).by_id();
});
