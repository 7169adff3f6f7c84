//! Signature detection over arbitrary images: the first 8 bytes choose how large the device
//! claims to be (so reads past the data exercise the short-read paths), the rest is the image.
#![no_main]

use dw_probe::signatures::{MAX_READ_BYTES, SliceReader, SubReader, detect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (claim, image) = if data.len() >= 8 {
        let mut c = [0u8; 8];
        c.copy_from_slice(&data[..8]);
        (u64::from_le_bytes(c), &data[8..])
    } else {
        (0, data)
    };
    let len = image.len() as u64;
    // Half the inputs claim exactly their length (every read must succeed), half anything.
    let size = if claim & 1 == 0 { len } else { claim >> 1 };
    let reader = SliceReader::with_size(image, size);
    let d = detect(&reader);
    assert!(d.bytes_read <= MAX_READ_BYTES);
    if size == len {
        assert!(
            d.complete(),
            "failures on a fully readable image: {:?}",
            d.failures
        );
    }
    // Partition windows at arbitrary offsets never read outside their parent.
    let part = SubReader::new(&reader, claim % (len + 1), size / 2);
    let p = detect(&part);
    assert!(p.bytes_read <= MAX_READ_BYTES);
});
