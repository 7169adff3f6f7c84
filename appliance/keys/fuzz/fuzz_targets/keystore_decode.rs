//! The key store decoder: never panics; whatever it accepts re-encodes to the same bytes.
//! Each input is tried as is and with its length field and checksum repaired, so that the
//! fuzzer reaches the record parser behind the checksum.
#![no_main]

use dw_keys::{KeyStore, repair_checksum_for_fuzzing};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(store) = KeyStore::decode(data) {
        let again = store.encode();
        assert_eq!(again, data, "decode/encode is not canonical");
        let _ = store.slots();
        let _ = store.verify_audit(None);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut repaired = data.to_vec();
    repair_checksum_for_fuzzing(&mut repaired);
    check(&repaired);
});
