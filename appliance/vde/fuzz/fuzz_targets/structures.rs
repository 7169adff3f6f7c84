#![no_main]
//! Header, region directory, recovery block, key-slot framing, metadata length slots and
//! intent-log records. Inputs are applied as edits to valid blocks whose checksum is then fixed
//! up (so field validation is reached), and decoded raw too. Never panics; whatever decodes
//! re-encodes to something that decodes identically.
use dw_vde::format::{
    self, Header, LogRecord, MetaLen, RecoveryBlock, RegionDirectory, decode_keyslots_header, encode_keyslots,
};
use libfuzzer_sys::fuzz_target;

fn fix(b: &mut [u8]) {
    let h = *blake3::hash(&b[..4064]).as_bytes();
    b[4064..4096].copy_from_slice(&h);
}

fn edit(base: Vec<u8>, data: &[u8]) -> Vec<u8> {
    let mut b = base;
    for e in data.chunks_exact(3) {
        let at = (usize::from(e[0]) | (usize::from(e[1] & 0x0F) << 8)) % 4064;
        b[at] = e[2];
    }
    fix(&mut b);
    b
}

fuzz_target!(|data: &[u8]| {
    let u = uuid::Uuid::from_bytes([6; 16]);
    let _ = Header::decode(data);
    let _ = RegionDirectory::decode(data, u64::MAX);
    let _ = RecoveryBlock::decode(data);
    let _ = MetaLen::decode(data);
    let _ = LogRecord::decode(data, &u);
    let _ = decode_keyslots_header(data);
    let Some((&sel, rest)) = data.split_first() else { return };
    let base = match sel % 5 {
        0 => format::fuzzing::sample_header().encode(),
        1 => format::fuzzing::sample_regdir().encode(),
        2 => format::fuzzing::sample_recovery().encode(),
        3 => LogRecord { vde: u, seq: 1, segment: 2, seg_offset: 4096, length: 4096, payload_hash: [1; 32] }.encode(),
        _ => encode_keyslots(1, b"blob")[..4096].to_vec(),
    };
    let b = edit(base, rest);
    if let Ok(h) = Header::decode(&b) {
        assert_eq!(Header::decode(&h.encode()).ok(), Some(h));
    }
    if let Ok(r) = RegionDirectory::decode(&b, 1 << 30) {
        assert_eq!(RegionDirectory::decode(&r.encode(), 1 << 30).ok(), Some(r));
    }
    if let Ok(r) = RecoveryBlock::decode(&b) {
        assert_eq!(RecoveryBlock::decode(&r.encode()).ok(), Some(r));
    }
    let _ = LogRecord::decode(&b, &u);
    let _ = decode_keyslots_header(&b);
});
