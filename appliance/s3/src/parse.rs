//! Everything the S3 layer parses or validates itself (s3s parses the HTTP, XML and SigV4).
//!
//! Every function here is total: bounded work, no panics, an error for bad input. Each has a
//! cargo-fuzz target in `appliance/s3/fuzz` and a proptest below.

use std::ops::Range;

use crate::store::{
    CompletedPart, MAX_PART_NUMBER, MIN_PART_SIZE, ObjectStoreError, PartInfo, RangeRequest,
    UserMeta,
};

/// Longest key S3 allows, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest total of user metadata names and values, in bytes (S3: 2 KB).
pub const MAX_USER_META: usize = 2048;

/// Why a bucket name is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BucketNameError {
    /// Not 3..=63 bytes.
    #[error("bucket names must be 3 to 63 characters long")]
    Length,
    /// A character other than a-z, 0-9, '.', '-'.
    #[error("bucket names may contain only lower-case letters, digits, '.' and '-'")]
    Charset,
    /// Starts or ends with something other than a letter or digit.
    #[error("bucket names must begin and end with a letter or digit")]
    Edge,
    /// "..", ".-" or "-.".
    #[error("bucket names must not contain two adjacent periods or a period next to a hyphen")]
    Adjacent,
    /// Looks like an IPv4 address.
    #[error("bucket names must not be formatted as an IP address")]
    IpAddress,
    /// Reserved prefix or suffix.
    #[error(
        "bucket names must not start with 'xn--' or 'sthree-' nor end with '-s3alias' or '--ol-s3'"
    )]
    Reserved,
}

/// Validates a bucket name against the S3 general-purpose bucket rules.
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_bucket_name(name: &str) -> Result<(), BucketNameError> {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return Err(BucketNameError::Length);
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return Err(BucketNameError::Charset);
    }
    let alnum = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(b.first()) || !alnum(b.last()) {
        return Err(BucketNameError::Edge);
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(BucketNameError::Adjacent);
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(BucketNameError::IpAddress);
    }
    if name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
    {
        return Err(BucketNameError::Reserved);
    }
    Ok(())
}

/// Why an object key is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty key.
    #[error("object keys must not be empty")]
    Empty,
    /// More than 1024 bytes.
    #[error("object keys must be at most 1024 bytes of UTF-8")]
    TooLong,
    /// Not UTF-8.
    #[error("object keys must be valid UTF-8")]
    NotUtf8,
    /// A character XML 1.0 cannot carry (NUL, most C0 controls, U+FFFE, U+FFFF): such a key could
    /// never appear in a listing.
    #[error("object keys must not contain NUL or other characters XML cannot represent")]
    ForbiddenChar,
}

/// Validates an object key: 1..=1024 bytes of UTF-8 without characters XML 1.0 forbids.
/// Everything else is opaque: `../`, `//`, leading `/` are ordinary key bytes.
///
/// # Errors
/// The rule the key breaks.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if key.chars().any(|c| {
        (c < '\u{20}' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        return Err(KeyError::ForbiddenChar);
    }
    Ok(())
}

/// [`validate_key`] for raw bytes (keys as they come off the wire after percent-decoding).
///
/// # Errors
/// `NotUtf8` or the rule the key breaks.
pub fn validate_key_bytes(key: &[u8]) -> Result<&str, KeyError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    let s = std::str::from_utf8(key).map_err(|_| KeyError::NotUtf8)?;
    validate_key(s)?;
    Ok(s)
}

/// Resolves a client range against the object size: the half-open byte range to send.
///
/// # Errors
/// `InvalidRange` when the range does not overlap the object (S3 answers 416).
pub fn resolve_range(range: RangeRequest, size: u64) -> Result<Range<u64>, ObjectStoreError> {
    let err = || ObjectStoreError::InvalidRange { size };
    match range {
        RangeRequest::FromTo { first, last } => {
            if first >= size {
                return Err(err());
            }
            let end = match last {
                Some(last) if last < first => return Err(err()),
                Some(last) => last.min(size - 1) + 1,
                None => size,
            };
            Ok(first..end)
        }
        RangeRequest::Suffix(n) => {
            if n == 0 || size == 0 {
                return Err(err());
            }
            Ok(size - n.min(size)..size)
        }
    }
}

/// Why a range header is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte range: expected 'bytes=first-last'")]
pub struct RangeSyntaxError;

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`; one range only).
///
/// # Errors
/// Anything else, including multiple ranges.
pub fn parse_range_header(s: &str) -> Result<RangeRequest, RangeSyntaxError> {
    let spec = s.trim().strip_prefix("bytes=").ok_or(RangeSyntaxError)?;
    let (a, b) = spec.split_once('-').ok_or(RangeSyntaxError)?;
    let num = |t: &str| -> Result<u64, RangeSyntaxError> {
        if t.is_empty() || t.len() > 20 || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(RangeSyntaxError);
        }
        t.parse().map_err(|_| RangeSyntaxError)
    };
    if a.is_empty() {
        return Ok(RangeRequest::Suffix(num(b)?));
    }
    let first = num(a)?;
    if b.is_empty() {
        return Ok(RangeRequest::FromTo { first, last: None });
    }
    let last = num(b)?;
    if last < first {
        return Err(RangeSyntaxError);
    }
    Ok(RangeRequest::FromTo {
        first,
        last: Some(last),
    })
}

/// Parses `x-amz-copy-source-range` (`bytes=first-last`, both required, as S3 demands).
///
/// # Errors
/// Any other form.
pub fn parse_copy_source_range(s: &str) -> Result<RangeRequest, RangeSyntaxError> {
    match parse_range_header(s)? {
        r @ RangeRequest::FromTo { last: Some(_), .. } => Ok(r),
        _ => Err(RangeSyntaxError),
    }
}

/// Prefix of continuation tokens, versioned so the format can change.
const TOKEN_PREFIX: &str = "dw1-";
/// Longest token we accept: prefix + hex of a 1024-byte marker.
pub const MAX_TOKEN_LEN: usize = TOKEN_PREFIX.len() + 2 * MAX_KEY_LEN;

/// Why a continuation token is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the continuation token provided is incorrect")]
pub struct TokenError;

/// Encodes a list marker (a key or common prefix) as an opaque ListObjectsV2 continuation token.
#[must_use]
pub fn encode_continuation_token(marker: &str) -> String {
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + marker.len() * 2);
    s.push_str(TOKEN_PREFIX);
    s.push_str(&hex(marker.as_bytes()));
    s
}

/// Decodes a continuation token made by [`encode_continuation_token`].
///
/// # Errors
/// Wrong prefix, length, hex or UTF-8.
pub fn decode_continuation_token(token: &str) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError);
    }
    let body = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError)?;
    let bytes = unhex(body).ok_or(TokenError)?;
    String::from_utf8(bytes).map_err(|_| TokenError)
}

/// Lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(D[usize::from(b >> 4)]));
        s.push(char::from(D[usize::from(b & 15)]));
    }
    s
}

/// Decodes hex (either case); `None` for odd length or non-hex characters.
#[must_use]
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    b.chunks_exact(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// Why a Content-MD5 header is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Content-MD5 must be the base64 encoding of 16 bytes")]
pub struct DigestSyntaxError;

/// Decodes a `Content-MD5` header: standard base64 of exactly 16 bytes (24 characters, `==`).
///
/// # Errors
/// Anything else (S3 answers `InvalidDigest`).
pub fn decode_content_md5(s: &str) -> Result<[u8; 16], DigestSyntaxError> {
    let b = s.trim().as_bytes();
    if b.len() != 24 || &b[22..] != b"==" {
        return Err(DigestSyntaxError);
    }
    let val = |c: u8| -> Result<u32, DigestSyntaxError> {
        match c {
            b'A'..=b'Z' => Ok(u32::from(c - b'A')),
            b'a'..=b'z' => Ok(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Ok(u32::from(c - b'0') + 52),
            b'+' => Ok(62),
            b'/' => Ok(63),
            _ => Err(DigestSyntaxError),
        }
    };
    let mut out = [0u8; 16];
    // 5 full groups of 4 chars -> 15 bytes, then 2 chars -> 1 byte.
    for g in 0..5 {
        let mut n = 0u32;
        for i in 0..4 {
            n = n << 6 | val(b[g * 4 + i])?;
        }
        out[g * 3..g * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let hi = val(b[20])?;
    let lo = val(b[21])?;
    if lo & 0x0f != 0 {
        // Non-canonical encoding: the unused bits must be zero.
        return Err(DigestSyntaxError);
    }
    let last = (hi << 2) | (lo >> 4);
    out[15] = u8::try_from(last & 0xff).map_err(|_| DigestSyntaxError)?;
    Ok(out)
}

/// Standard base64 (with padding) of bytes; used for Content-MD5 in clients and tests.
#[must_use]
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let digits = chunk.len() + 1;
        for i in 0..4 {
            if i < digits {
                let idx = (n >> (18 - 6 * i)) & 63;
                s.push(char::from(A[usize::try_from(idx).unwrap_or(0)]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Removes the quotes clients put around ETags.
#[must_use]
pub fn unquote_etag(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s)
}

/// Checks a CompleteMultipartUpload part list against the uploaded parts and returns the parts
/// to join, in order. `lookup` gives the uploaded part with that number.
///
/// # Errors
/// `InvalidPart` (missing part, unknown number, ETag mismatch), `InvalidPartOrder`,
/// `EntityTooSmall` (a part but the last under 5 MiB).
pub fn check_completion<'a>(
    requested: &[CompletedPart],
    lookup: impl Fn(u32) -> Option<&'a PartInfo>,
) -> Result<Vec<&'a PartInfo>, ObjectStoreError> {
    let max = usize::try_from(MAX_PART_NUMBER).unwrap_or(usize::MAX);
    if requested.is_empty() {
        return Err(ObjectStoreError::InvalidPart {
            part_number: 0,
            reason: "the part list is empty".into(),
        });
    }
    if requested.len() > max {
        return Err(ObjectStoreError::InvalidPart {
            part_number: 0,
            reason: format!("at most {MAX_PART_NUMBER} parts"),
        });
    }
    let mut prev = 0u32;
    for p in requested {
        if p.part_number == 0 || p.part_number > MAX_PART_NUMBER {
            return Err(ObjectStoreError::InvalidPart {
                part_number: p.part_number,
                reason: format!("part numbers are 1 to {MAX_PART_NUMBER}"),
            });
        }
        if p.part_number <= prev {
            return Err(ObjectStoreError::InvalidPartOrder);
        }
        prev = p.part_number;
    }
    let mut out = Vec::with_capacity(requested.len());
    for (i, p) in requested.iter().enumerate() {
        let Some(info) = lookup(p.part_number) else {
            return Err(ObjectStoreError::InvalidPart {
                part_number: p.part_number,
                reason: "it was not uploaded".into(),
            });
        };
        if !unquote_etag(&p.etag).eq_ignore_ascii_case(&info.etag) {
            return Err(ObjectStoreError::InvalidPart {
                part_number: p.part_number,
                reason: "its ETag does not match the uploaded part".into(),
            });
        }
        if i + 1 < requested.len() && info.size < MIN_PART_SIZE {
            return Err(ObjectStoreError::EntityTooSmall {
                part_number: p.part_number,
                size: info.size,
                min: MIN_PART_SIZE,
            });
        }
        out.push(info);
    }
    Ok(out)
}

/// The S3 multipart ETag: hex MD5 of the concatenated binary part MD5s, `-`, part count.
///
/// # Errors
/// `Internal` if a part ETag is not 32 hex digits (the store made it, so that is a store bug).
pub fn multipart_etag<'a>(
    part_etags: impl IntoIterator<Item = &'a str>,
) -> Result<String, ObjectStoreError> {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    let mut n = 0usize;
    for e in part_etags {
        let bytes =
            unhex(e)
                .filter(|b| b.len() == 16)
                .ok_or_else(|| ObjectStoreError::Internal {
                    detail: format!("part ETag {e:?} is not an MD5"),
                })?;
        h.update(&bytes);
        n += 1;
    }
    Ok(format!("{}-{n}", hex(&h.finalize())))
}

/// Why user metadata is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Over [`MAX_USER_META`] bytes in total.
    #[error("user metadata is larger than {MAX_USER_META} bytes")]
    TooLarge,
    /// A name that is not a valid HTTP header token.
    #[error("user metadata names must be HTTP header tokens")]
    BadName,
}

/// Checks user metadata: total size of names and values at most 2 KiB, names are tokens.
///
/// # Errors
/// The rule it breaks.
pub fn check_user_meta(meta: &UserMeta) -> Result<(), MetaError> {
    let mut total = 0usize;
    for (k, v) in meta {
        if k.is_empty()
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        {
            return Err(MetaError::BadName);
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_USER_META {
        return Err(MetaError::TooLarge);
    }
    Ok(())
}

/// Percent-encodes for `encoding-type=url` listings: everything but unreserved characters and `/`.
#[must_use]
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&hex(&[b]).to_ascii_uppercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::SystemTime;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.data", "a1b", &"a".repeat(63)] {
            assert_eq!(validate_bucket_name(ok), Ok(()), "{ok}");
        }
        let bad: [(&str, BucketNameError); 10] = [
            ("ab", BucketNameError::Length),
            (&"a".repeat(64), BucketNameError::Length),
            ("Abc", BucketNameError::Charset),
            ("a_b", BucketNameError::Charset),
            ("-ab", BucketNameError::Edge),
            ("ab.", BucketNameError::Edge),
            ("a..b", BucketNameError::Adjacent),
            ("a.-b", BucketNameError::Adjacent),
            ("192.168.1.1", BucketNameError::IpAddress),
            ("xn--abc", BucketNameError::Reserved),
        ];
        for (name, e) in bad {
            assert_eq!(validate_bucket_name(name), Err(e), "{name}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(validate_key("../../etc/passwd"), Ok(()));
        assert_eq!(validate_key("/a//b/"), Ok(()));
        assert_eq!(validate_key("ünïcødé ✓"), Ok(()));
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key("a\0b"), Err(KeyError::ForbiddenChar));
        assert_eq!(validate_key(&"k".repeat(1024)), Ok(()));
        assert_eq!(validate_key(&"k".repeat(1025)), Err(KeyError::TooLong));
        assert_eq!(validate_key_bytes(b"\xff\xfe"), Err(KeyError::NotUtf8));
    }

    #[test]
    fn ranges() {
        let r = |s: &str, size| {
            parse_range_header(s)
                .ok()
                .and_then(|r| resolve_range(r, size).ok())
        };
        assert_eq!(r("bytes=0-9", 100), Some(0..10));
        assert_eq!(r("bytes=90-200", 100), Some(90..100));
        assert_eq!(r("bytes=10-", 100), Some(10..100));
        assert_eq!(r("bytes=-10", 100), Some(90..100));
        assert_eq!(r("bytes=-1000", 100), Some(0..100));
        assert_eq!(r("bytes=100-", 100), None);
        assert_eq!(r("bytes=-0", 100), None);
        assert_eq!(r("bytes=0-0", 0), None);
        assert!(parse_range_header("bytes=5-1").is_err());
        assert!(parse_range_header("bytes=0-1,5-6").is_err());
        assert!(parse_range_header("items=0-1").is_err());
        assert!(parse_range_header("bytes=99999999999999999999999-").is_err());
        assert!(parse_copy_source_range("bytes=0-").is_err());
        assert_eq!(
            parse_copy_source_range("bytes=0-4"),
            Ok(RangeRequest::FromTo {
                first: 0,
                last: Some(4)
            })
        );
    }

    #[test]
    fn tokens_round_trip() {
        for m in ["", "a", "dir/sub/", "ü/../x"] {
            assert_eq!(
                decode_continuation_token(&encode_continuation_token(m)).as_deref(),
                Ok(m)
            );
        }
        assert!(decode_continuation_token("garbage").is_err());
        assert!(decode_continuation_token("dw1-zz").is_err());
        assert!(decode_continuation_token("dw1-ff").is_err()); // not UTF-8
    }

    #[test]
    fn content_md5() {
        // md5("hello world")
        let md5 = unhex("5eb63bbbe01eeed093cb22bb8f5acdc3").unwrap_or_default();
        assert_eq!(base64(&md5), "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(
            decode_content_md5("XrY7u+Ae7tCTyyK7j1rNww==").map(|a| a.to_vec()),
            Ok(md5)
        );
        assert!(decode_content_md5("XrY7u+Ae7tCTyyK7j1rNwx==").is_err()); // non-canonical
        assert!(decode_content_md5("not base64").is_err());
        assert!(decode_content_md5("XrY7u+Ae7tCTyyK7j1rN!w==").is_err());
    }

    #[test]
    fn completion_rules() {
        let mk = |n: u32, size: u64| PartInfo {
            part_number: n,
            etag: format!("{n:032x}"),
            size,
            last_modified: SystemTime::UNIX_EPOCH,
        };
        let parts = [mk(1, MIN_PART_SIZE), mk(2, 10), mk(3, 1)];
        let lookup = |n: u32| parts.iter().find(|p| p.part_number == n);
        let req = |ns: &[u32]| -> Vec<CompletedPart> {
            ns.iter()
                .map(|&n| CompletedPart {
                    part_number: n,
                    etag: format!("\"{n:032x}\""),
                })
                .collect()
        };
        assert_eq!(
            check_completion(&req(&[1, 2]), lookup).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(
            check_completion(&req(&[2, 1]), lookup).err(),
            Some(ObjectStoreError::InvalidPartOrder)
        );
        assert_eq!(
            check_completion(&req(&[1, 1]), lookup).err(),
            Some(ObjectStoreError::InvalidPartOrder)
        );
        assert!(matches!(
            check_completion(&req(&[2, 3]), lookup),
            Err(ObjectStoreError::EntityTooSmall { part_number: 2, .. })
        ));
        assert!(matches!(
            check_completion(&req(&[1, 4]), lookup),
            Err(ObjectStoreError::InvalidPart { part_number: 4, .. })
        ));
        let mut bad = req(&[1]);
        bad[0].etag = "\"00\"".into();
        assert!(matches!(
            check_completion(&bad, lookup),
            Err(ObjectStoreError::InvalidPart { .. })
        ));
        assert!(check_completion(&[], lookup).is_err());
    }

    #[test]
    fn multipart_etag_known_value() {
        // Two parts whose MD5s are md5("a") and md5("b"): verified with Python hashlib.
        let e = multipart_etag([
            "0cc175b9c0f1b6a831c399e269772661",
            "92eb5ffee6ae2fec3ad71c777531578f",
        ]);
        assert_eq!(e.as_deref(), Ok("96e024ba2074fe77e8e965ba43a704be-2"));
        assert!(multipart_etag(["xyz"]).is_err());
    }

    #[test]
    fn user_meta_limits() {
        let mut m = UserMeta::new();
        m.insert("color".into(), "blue".into());
        assert_eq!(check_user_meta(&m), Ok(()));
        m.insert("big".into(), "x".repeat(MAX_USER_META));
        assert_eq!(check_user_meta(&m), Err(MetaError::TooLarge));
        let mut m = UserMeta::new();
        m.insert("bad name".into(), String::new());
        assert_eq!(check_user_meta(&m), Err(MetaError::BadName));
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b+c/ü"), "a%20b%2Bc/%C3%BC");
    }

    proptest! {
        #[test]
        fn bucket_validation_never_panics(s in ".{0,80}") {
            let _ = validate_bucket_name(&s);
        }

        #[test]
        fn key_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(s) = validate_key_bytes(&b) {
                prop_assert!(!s.is_empty() && s.len() <= MAX_KEY_LEN);
            }
        }

        #[test]
        fn range_parse_and_resolve(s in "(bytes=)?[0-9]{0,21}-?[0-9]{0,21}", size in any::<u64>()) {
            if let Ok(r) = parse_range_header(&s)
                && let Ok(rg) = resolve_range(r, size) {
                prop_assert!(rg.start < rg.end && rg.end <= size);
            }
        }

        #[test]
        fn range_resolve_any(first in any::<u64>(), last in any::<Option<u64>>(), n in any::<u64>(), size in any::<u64>()) {
            for r in [RangeRequest::FromTo { first, last }, RangeRequest::Suffix(n)] {
                if let Ok(rg) = resolve_range(r, size) {
                    prop_assert!(rg.start < rg.end && rg.end <= size);
                }
            }
        }

        #[test]
        fn token_round_trip(m in ".{0,200}") {
            prop_assert_eq!(decode_continuation_token(&encode_continuation_token(&m)), Ok(m));
        }

        #[test]
        fn token_garbage(s in ".{0,300}") {
            let _ = decode_continuation_token(&s);
        }

        #[test]
        fn md5_round_trip(b in proptest::array::uniform16(any::<u8>())) {
            prop_assert_eq!(decode_content_md5(&base64(&b)), Ok(b));
        }

        #[test]
        fn md5_garbage(s in ".{0,40}") {
            let _ = decode_content_md5(&s);
        }
    }
}
