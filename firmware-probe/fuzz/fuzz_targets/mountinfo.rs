//! The mountinfo, /proc/swaps, cpuinfo and meminfo parsers.
#![no_main]

use dw_probe::mounts::{parse_mountinfo, parse_swaps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(mounts) = parse_mountinfo(&text) {
        assert!(mounts.len() <= text.lines().count());
    }
    let _ = parse_swaps(&text);
    let _ = dw_probe::parse_cpuinfo(&text);
    let _ = dw_probe::parse_meminfo(&text);
});
