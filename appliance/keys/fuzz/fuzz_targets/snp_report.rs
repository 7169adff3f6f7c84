//! The SEV-SNP attestation-report parser (part of peer-protocol evidence): never panics.
#![no_main]

use dw_keys::snp::{REPORT_LEN, parse_report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_report(data);
    // Most random inputs fail the length check; also try the input padded to a report.
    let mut padded = data.to_vec();
    padded.resize(REPORT_LEN, 0);
    let _ = parse_report(&padded);
});
