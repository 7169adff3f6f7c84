#![no_main]
//! The member superblock parser. Inputs are edits applied to a valid superblock (the golden
//! file), with the checksum fixed up afterwards, so that every field validation is reached;
//! the raw input is decoded too. Never panics; whatever decodes re-encodes identically.
use dw_raid::superblock::Superblock;
use libfuzzer_sys::fuzz_target;

const GOLDEN: &[u8] = include_bytes!("../../tests/golden/superblock-v1.bin");

fuzz_target!(|data: &[u8]| {
    let _ = Superblock::decode(data);
    let mut b = GOLDEN.to_vec();
    // Each 3-byte group: a 12-bit offset and a value to store there.
    for e in data.chunks_exact(3) {
        let at = (usize::from(e[0]) | (usize::from(e[1] & 0x0F) << 8)) % 4092;
        b[at] = e[2];
    }
    let crc = crc32c(&b[..4092]);
    b[4092..].copy_from_slice(&crc.to_le_bytes());
    if let Ok(sb) = Superblock::decode(&b) {
        let again = sb.encode();
        assert_eq!(Superblock::decode(&again).ok(), Some(sb));
    }
});

fn crc32c(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
