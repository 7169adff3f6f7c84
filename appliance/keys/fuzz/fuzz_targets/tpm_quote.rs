//! The service-side TPMS_ATTEST (quote) parser and signature check: never panics.
#![no_main]

use dw_keys::peer::attest::{parse_quote, verify_quote_signature};
use dw_keys::tpm::AkPublic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_quote(data);
    if data.len() >= 65 + 64 {
        let mut ak = [0u8; 65];
        ak.copy_from_slice(&data[..65]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&data[65..129]);
        let _ = verify_quote_signature(&AkPublic(ak), &data[129..], &sig);
    }
});
