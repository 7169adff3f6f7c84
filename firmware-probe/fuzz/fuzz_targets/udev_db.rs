//! The udev database parser (/run/udev/data/b*) and the `\xHH` decoder of its *_ENC values.
#![no_main]

use dw_probe::udev::{decode_enc, parse_udev_db};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let record = parse_udev_db(&text);
    // Every property and link comes from its own line.
    assert!(record.properties.len() + record.devlinks.len() <= text.lines().count());
    for link in record.by_id() {
        assert!(link.starts_with("/dev/disk/by-id/"));
    }
    for value in record.properties.values() {
        // At most one U+FFFD (3 bytes) per input byte: escapes only shrink.
        assert!(decode_enc(value).len() <= value.len() * 3);
    }
    let _ = decode_enc(&text);
});
