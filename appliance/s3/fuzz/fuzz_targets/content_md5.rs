#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = dw_s3::parse::decode_content_md5(s)
    {
        assert_eq!(dw_s3::parse::base64(&d), s.trim());
    }
    if data.len() >= 16 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[..16]);
        assert_eq!(
            dw_s3::parse::decode_content_md5(&dw_s3::parse::base64(&a)),
            Ok(a)
        );
    }
});
