//! The key-release service's state-file decoder: never panics; accepted files re-encode to
//! the same bytes. Inputs are also tried with a repaired length field and checksum.
#![no_main]

use dw_keys::peer::state::{ServiceState, repair_checksum_for_fuzzing};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(state) = ServiceState::decode(data) {
        assert_eq!(state.encode(), data, "decode/encode is not canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut repaired = data.to_vec();
    repair_checksum_for_fuzzing(&mut repaired);
    check(&repaired);
});
