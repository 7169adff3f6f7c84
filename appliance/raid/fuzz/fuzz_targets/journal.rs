#![no_main]
//! The journal scanner. The input describes records (valid headers with fuzzer-chosen
//! fields and payloads) written into a region, which is then damaged by the rest of the input;
//! the raw input is scanned too. Never panics, never reads out of bounds.
use dw_raid::fuzzing::{build_journal_region, scan_journal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scan_journal(data);
    let region = build_journal_region(data);
    scan_journal(&region);
});
