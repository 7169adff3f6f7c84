#![no_main]
//! Random part lists against random uploaded parts: never panics, and an accepted list is
//! strictly ascending, fully uploaded, with matching ETags and big-enough parts.
use dw_s3::store::{CompletedPart, MIN_PART_SIZE, PartInfo};
use libfuzzer_sys::fuzz_target;
use std::time::SystemTime;

fuzz_target!(|data: &[u8]| {
    let (uploaded_raw, requested_raw) = data.split_at(data.len() / 2);
    let uploaded: Vec<PartInfo> = uploaded_raw
        .chunks(3)
        .map(|c| PartInfo {
            part_number: u32::from(c[0]) % 20,
            etag: format!("{:032x}", c.get(1).copied().unwrap_or(0) % 4),
            size: if c.get(2).copied().unwrap_or(0) % 2 == 0 {
                MIN_PART_SIZE
            } else {
                1
            },
            last_modified: SystemTime::UNIX_EPOCH,
        })
        .collect();
    let requested: Vec<CompletedPart> = requested_raw
        .chunks(2)
        .map(|c| CompletedPart {
            part_number: u32::from(c[0]) % 22,
            etag: format!("\"{:032x}\"", c.get(1).copied().unwrap_or(0) % 4),
        })
        .collect();
    let lookup = |n: u32| uploaded.iter().find(|p| p.part_number == n);
    if let Ok(chosen) = dw_s3::parse::check_completion(&requested, lookup) {
        assert_eq!(chosen.len(), requested.len());
        for w in requested.windows(2) {
            assert!(w[0].part_number < w[1].part_number);
        }
        for (i, p) in chosen.iter().enumerate() {
            if i + 1 < chosen.len() {
                assert!(p.size >= MIN_PART_SIZE);
            }
        }
        let etag = dw_s3::parse::multipart_etag(chosen.iter().map(|p| p.etag.as_str()));
        assert!(etag.is_ok_and(|e| e.ends_with(&format!("-{}", chosen.len()))));
    }
});
