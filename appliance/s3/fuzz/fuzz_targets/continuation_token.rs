#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = dw_s3::parse::decode_continuation_token(s) {
        // Decoding is the inverse of encoding (modulo hex case).
        assert!(dw_s3::parse::encode_continuation_token(&m).eq_ignore_ascii_case(s));
    }
    let t = dw_s3::parse::encode_continuation_token(s);
    assert_eq!(
        dw_s3::parse::decode_continuation_token(&t).ok().as_deref(),
        (t.len() <= dw_s3::parse::MAX_TOKEN_LEN).then_some(s)
    );
});
