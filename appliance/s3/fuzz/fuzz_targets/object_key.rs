#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = dw_s3::parse::validate_key_bytes(data) {
        assert!(!k.is_empty() && k.len() <= dw_s3::parse::MAX_KEY_LEN);
        assert!(!k.contains('\0'));
        // Listing output encodes any valid key.
        let _ = dw_s3::parse::url_encode(k);
    }
});
