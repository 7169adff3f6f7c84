#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let Ok(s) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    for parsed in [
        dw_s3::parse::parse_range_header(s),
        dw_s3::parse::parse_copy_source_range(s),
    ] {
        if let Ok(r) = parsed
            && let Ok(rg) = dw_s3::parse::resolve_range(r, size)
        {
            assert!(rg.start < rg.end && rg.end <= size);
        }
    }
});
