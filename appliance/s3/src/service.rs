//! The s3s [`S3`] implementation over an [`ObjectStore`] and an [`Authorizer`].
//!
//! Every handler: check the caller's access to each bucket it touches, validate names and
//! headers, call the store on tokio's blocking pool, map the result. Object data never sits
//! whole in memory: PUT bodies go through a bounded channel into an [`ObjectBody`], GET bodies
//! come out of the store's reader in bounded chunks.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use s3s::dto::{self, CommonPrefix, CopySource, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tracing::{error, warn};

use crate::auth::{Access, Authorizer};
use crate::body::{BodyChunk, BodyError, BodyLimits, ObjectBody};
use crate::parse::{self, KeyError};
use crate::server::S3Config;
use crate::store::{
    BucketInfo, BucketLockConfig, CompletedPart, CreateBucketOptions, DefaultRetention, ListQuery,
    MAX_LIST_KEYS, MAX_PART_NUMBER, MAX_PART_SIZE, MetadataDirective, ObjectInfo, ObjectReader,
    ObjectStore, ObjectStoreError, PutOptions, RangeRequest, Retention, RetentionMode, UploadQuery,
    UserMeta,
};

/// Depth of the PUT body channel (chunks as hyper delivers them, typically <= 64 KiB... 1 MiB).
const BODY_CHANNEL_DEPTH: usize = 8;
/// Depth of the GET body channel, in [`S3Config::get_chunk_size`] chunks.
const GET_CHANNEL_DEPTH: usize = 4;
/// Bodies up to this size are collected before the store call and ranges up to it are read in
/// the same blocking call that opens the object: one thread hop instead of two for small objects.
const INLINE_MAX: u64 = 64 * 1024;
/// Most keys in one DeleteObjects request (S3 limit).
const MAX_DELETE_KEYS: usize = 1000;

/// The S3 API: implements [`s3s::S3`] over an [`ObjectStore`].
pub struct S3Api {
    store: Arc<dyn ObjectStore>,
    auth: Arc<dyn Authorizer>,
    cfg: Arc<S3Config>,
}

impl std::fmt::Debug for S3Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Api")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Per-request slot the access check fills with the S3 operation name, for metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpSlot(pub(crate) Arc<Mutex<Option<String>>>);

impl OpSlot {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// Maps a store error to the S3 error the client sees.
#[must_use]
pub fn map_store_error(e: ObjectStoreError) -> S3Error {
    use ObjectStoreError as E;
    use S3ErrorCode as C;
    let msg = e.to_string();
    let with = |code: C| S3Error::with_message(code, msg.clone());
    match e {
        E::NoSuchBucket { .. } => with(C::NoSuchBucket),
        E::NoSuchKey { .. } => with(C::NoSuchKey),
        E::BucketAlreadyOwnedByYou { .. } => with(C::BucketAlreadyOwnedByYou),
        E::BucketAlreadyExists { .. } => with(C::BucketAlreadyExists),
        E::BucketNotEmpty { .. } => with(C::BucketNotEmpty),
        E::InvalidBucketName { .. } => with(C::InvalidBucketName),
        E::InvalidKey { .. } | E::InvalidArgument { .. } => with(C::InvalidArgument),
        E::InvalidRange { .. } => with(C::InvalidRange),
        E::EntityTooLarge { .. } => with(C::EntityTooLarge),
        E::EntityTooSmall { .. } => with(C::EntityTooSmall),
        E::InvalidPart { .. } => with(C::InvalidPart),
        E::InvalidPartOrder => with(C::InvalidPartOrder),
        E::NoSuchUpload { .. } => with(C::NoSuchUpload),
        E::WormProtected { .. } => with(C::AccessDenied),
        E::QuotaExceeded { .. } => {
            // S3 has no quota error; MinIO-style custom code with 403 so clients do not retry.
            let mut err = S3Error::with_message(C::Custom("QuotaExceeded".into()), msg);
            err.set_status_code(http::StatusCode::FORBIDDEN);
            err
        }
        E::InvalidObjectState { .. } => with(C::InvalidObjectState),
        E::ObjectLockNotEnabled { .. } => with(C::InvalidRequest),
        E::BadDigest => with(C::BadDigest),
        E::IncompleteBody { .. } => with(C::IncompleteBody),
        E::NotSupported { .. } => with(C::NotImplemented),
        E::Internal { detail } => {
            error!(%detail, "object store internal error");
            S3Error::with_message(
                C::InternalError,
                "internal error; the details are in the server log",
            )
        }
    }
}

fn body_error(e: BodyError) -> S3Error {
    match e {
        BodyError::Timeout { secs } => S3Error::with_message(
            S3ErrorCode::RequestTimeout,
            format!("no request body data arrived for {secs} s"),
        ),
        other => map_store_error(other.into()),
    }
}

fn key_error(e: KeyError) -> S3Error {
    match e {
        KeyError::TooLong => S3Error::with_message(S3ErrorCode::KeyTooLongError, e.to_string()),
        _ => S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()),
    }
}

fn check_key(key: &str) -> S3Result<()> {
    parse::validate_key(key).map_err(key_error)
}

fn check_bucket(bucket: &str) -> S3Result<()> {
    parse::validate_bucket_name(bucket)
        .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidBucketName, e.to_string()))
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> S3Error {
    error!(%e, "{what}");
    S3Error::with_message(
        S3ErrorCode::InternalError,
        "internal error; the details are in the server log",
    )
}

fn ts(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

fn systime(t: &Timestamp) -> SystemTime {
    let odt: time::OffsetDateTime = t.clone().into();
    let secs = odt.unix_timestamp();
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Whole seconds since the epoch (HTTP dates have second precision).
fn secs(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => -i128::from(e.duration().as_secs()),
    }
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => parse::unquote_etag(e.value()) == etag,
    }
}

/// HTTP conditional request rules (RFC 9110 order), for GET/HEAD and copy sources.
fn check_conditions(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
    not_modified_is_412: bool,
) -> S3Result<()> {
    let lm = secs(info.last_modified);
    if let Some(c) = if_match {
        if !etag_matches(c, &info.etag) {
            return Err(s3_error!(
                PreconditionFailed,
                "If-Match does not match the object's ETag"
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && lm > secs(systime(t))
    {
        return Err(s3_error!(
            PreconditionFailed,
            "the object was modified after If-Unmodified-Since"
        ));
    }
    let not_modified = if let Some(c) = if_none_match {
        etag_matches(c, &info.etag)
    } else if let Some(t) = if_modified_since {
        lm <= secs(systime(t))
    } else {
        false
    };
    if not_modified {
        return Err(if not_modified_is_412 {
            s3_error!(
                PreconditionFailed,
                "the copy source matches the none-match condition"
            )
        } else {
            S3Error::new(S3ErrorCode::NotModified)
        });
    }
    Ok(())
}

fn parse_retention(mode: Option<&str>, until: Option<&Timestamp>) -> S3Result<Option<Retention>> {
    match (mode, until) {
        (None, None) => Ok(None),
        (Some(m), Some(u)) => Ok(Some(Retention {
            mode: parse_mode(m)?,
            retain_until: systime(u),
        })),
        _ => Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date must be given together"
        )),
    }
}

fn parse_mode(m: &str) -> S3Result<RetentionMode> {
    match m {
        "GOVERNANCE" => Ok(RetentionMode::Governance),
        "COMPLIANCE" => Ok(RetentionMode::Compliance),
        _ => Err(s3_error!(
            InvalidArgument,
            "object lock mode must be GOVERNANCE or COMPLIANCE"
        )),
    }
}

fn parse_legal_hold(s: Option<&str>) -> S3Result<bool> {
    match s {
        None | Some("OFF") => Ok(false),
        Some("ON") => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "legal hold status must be ON or OFF"
        )),
    }
}

fn user_meta(m: Option<dto::Metadata>) -> S3Result<UserMeta> {
    let meta: UserMeta = m
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    parse::check_user_meta(&meta).map_err(|e| match e {
        parse::MetaError::TooLarge => {
            S3Error::with_message(S3ErrorCode::MetadataTooLarge, e.to_string())
        }
        parse::MetaError::BadName => {
            S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string())
        }
    })?;
    Ok(meta)
}

fn meta_out(m: &UserMeta) -> Option<dto::Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn content_md5(s: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    s.map(|s| {
        parse::decode_content_md5(s)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidDigest, e.to_string()))
    })
    .transpose()
}

/// Refuses request features the store cannot honour instead of silently dropping them.
fn refuse_unsupported(
    sse_c: bool,
    sse: Option<&dto::ServerSideEncryption>,
    tagging: bool,
) -> S3Result<()> {
    if sse_c {
        return Err(s3_error!(
            NotImplemented,
            "SSE-C is not supported; data is encrypted at rest by the VDE policy"
        ));
    }
    if let Some(s) = sse
        && s.as_str() != "AES256"
    {
        return Err(s3_error!(
            NotImplemented,
            "only SSE-S3 (AES256) is accepted; KMS is not supported"
        ));
    }
    if tagging {
        return Err(s3_error!(NotImplemented, "object tagging is not supported"));
    }
    Ok(())
}

fn refuse_version(v: Option<&String>) -> S3Result<()> {
    match v.map(String::as_str) {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(
            NotImplemented,
            "S3 versioning is not supported: objects have one version"
        )),
    }
}

fn range_from(r: dto::Range) -> RangeRequest {
    match r {
        dto::Range::Int { first, last } => RangeRequest::FromTo { first, last },
        dto::Range::Suffix { length } => RangeRequest::Suffix(length),
    }
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(MAX_LIST_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n)
            .unwrap_or(MAX_LIST_KEYS)
            .min(MAX_LIST_KEYS)),
    }
}

fn want_url_encoding(e: Option<&dto::EncodingType>) -> S3Result<bool> {
    match e.map(dto::EncodingType::as_str) {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "encoding-type must be 'url'")),
    }
}

fn enc(url: bool, s: String) -> String {
    if url { parse::url_encode(&s) } else { s }
}

/// Expected checksums of a body (`x-amz-checksum-*` headers or trailers), verified by the pump
/// before it reports end-of-body, so a mismatch aborts the store write.
struct ChecksumCheck {
    hasher: s3s::checksum::ChecksumHasher,
    expected: dto::Checksum,
    trailers: Option<s3s::TrailingHeaders>,
}

impl ChecksumCheck {
    fn new(
        expected: dto::Checksum,
        algorithm: Option<&dto::ChecksumAlgorithm>,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<Option<Self>> {
        use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
        let mut h = s3s::checksum::ChecksumHasher::default();
        let alg = algorithm.map(dto::ChecksumAlgorithm::as_str);
        if expected.checksum_crc32.is_some() || alg == Some("CRC32") {
            h.crc32 = Some(Crc32::new());
        }
        if expected.checksum_crc32c.is_some() || alg == Some("CRC32C") {
            h.crc32c = Some(Crc32c::new());
        }
        if expected.checksum_sha1.is_some() || alg == Some("SHA1") {
            h.sha1 = Some(Sha1::new());
        }
        if expected.checksum_sha256.is_some() || alg == Some("SHA256") {
            h.sha256 = Some(Sha256::new());
        }
        if expected.checksum_crc64nvme.is_some() || alg == Some("CRC64NVME") {
            h.crc64nvme = Some(Crc64Nvme::new());
        }
        if let Some(a) = alg
            && !matches!(a, "CRC32" | "CRC32C" | "SHA1" | "SHA256" | "CRC64NVME")
        {
            return Err(s3_error!(InvalidArgument, "unsupported checksum algorithm"));
        }
        let any = h.crc32.is_some()
            || h.crc32c.is_some()
            || h.sha1.is_some()
            || h.sha256.is_some()
            || h.crc64nvme.is_some();
        Ok(any.then_some(Self {
            hasher: h,
            expected,
            trailers,
        }))
    }

    fn verify(self) -> Result<(), BodyError> {
        let mut expected = self.expected;
        if let Some(t) = self.trailers.and_then(|t| t.take()) {
            let get = |name: &str| t.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            expected.checksum_crc32 = expected
                .checksum_crc32
                .or_else(|| get("x-amz-checksum-crc32"));
            expected.checksum_crc32c = expected
                .checksum_crc32c
                .or_else(|| get("x-amz-checksum-crc32c"));
            expected.checksum_sha1 = expected
                .checksum_sha1
                .or_else(|| get("x-amz-checksum-sha1"));
            expected.checksum_sha256 = expected
                .checksum_sha256
                .or_else(|| get("x-amz-checksum-sha256"));
            expected.checksum_crc64nvme = expected
                .checksum_crc64nvme
                .or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        let got = self.hasher.finalize();
        let pairs = [
            (&expected.checksum_crc32, &got.checksum_crc32),
            (&expected.checksum_crc32c, &got.checksum_crc32c),
            (&expected.checksum_sha1, &got.checksum_sha1),
            (&expected.checksum_sha256, &got.checksum_sha256),
            (&expected.checksum_crc64nvme, &got.checksum_crc64nvme),
        ];
        for (want, have) in pairs {
            if let (Some(w), Some(h)) = (want, have)
                && w != h
            {
                return Err(BodyError::BadDigest);
            }
        }
        Ok(())
    }
}

struct PutBody {
    body: StreamingBlob,
    limits: BodyLimits,
    check: Option<ChecksumCheck>,
}

impl S3Api {
    /// The API over a store and an authorizer.
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, auth: Arc<dyn Authorizer>, cfg: Arc<S3Config>) -> Self {
        Self { store, auth, cfg }
    }

    /// Runs a store call on the blocking pool; a panicking store becomes `InternalError`.
    async fn run<T, F>(&self, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ObjectStore) -> Result<T, ObjectStoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(map_store_error),
            Err(e) => Err(internal("object store call failed", &e)),
        }
    }

    fn caller<T>(req: &S3Request<T>) -> S3Result<String> {
        req.credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .ok_or_else(|| s3_error!(AccessDenied, "this endpoint needs a signed request"))
    }

    /// Checks that the caller has `access` to `bucket`; returns the bucket.
    async fn authorize<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        access: Access,
    ) -> S3Result<BucketInfo> {
        let key = Self::caller(req)?;
        check_bucket(bucket)?;
        let b = bucket.to_owned();
        let info = self.run(move |s| s.head_bucket(&b)).await?;
        if self.auth.allowed(&key, &info, access) {
            Ok(info)
        } else {
            Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!("access key {key:?} has no {access:?} permission on bucket {bucket:?}"),
            ))
        }
    }

    fn limits(
        &self,
        content_length: Option<i64>,
        max: u64,
        md5: Option<[u8; 16]>,
    ) -> S3Result<BodyLimits> {
        let max = max.min(self.cfg.max_object_size);
        let expected_len = match content_length {
            None => {
                return Err(s3_error!(
                    MissingContentLength,
                    "Content-Length is required"
                ));
            }
            Some(n) => u64::try_from(n)
                .map_err(|_| s3_error!(InvalidArgument, "negative Content-Length"))?,
        };
        if expected_len > max {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("{expected_len} bytes exceed the limit of {max} bytes"),
            ));
        }
        Ok(BodyLimits {
            expected_len: Some(expected_len),
            max_len: max,
            content_md5: md5,
        })
    }

    /// Streams a request body into a store call. Small bodies are collected first (one thread
    /// hop); large ones go through a bounded channel while the store reads on the blocking pool.
    async fn with_body<T, F>(&self, pb: PutBody, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ObjectStore, &mut ObjectBody) -> Result<T, ObjectStoreError>
            + Send
            + 'static,
    {
        let PutBody {
            mut body,
            limits,
            mut check,
        } = pb;
        let idle = self.cfg.request_timeout;
        let idle_secs = idle.as_secs();
        if limits.expected_len.is_some_and(|n| n <= INLINE_MAX) {
            let cap = usize::try_from(INLINE_MAX).unwrap_or(usize::MAX);
            let mut buf = BytesMut::new();
            let mut failure = None;
            loop {
                match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(b))) => {
                        if let Some(c) = &mut check {
                            c.hasher.update(&b);
                        }
                        if buf.len() + b.len() > cap {
                            // Longer than announced: ObjectBody reports it precisely.
                            buf.extend_from_slice(&b[..cap.saturating_sub(buf.len()).min(b.len())]);
                            failure = Some(BodyError::Truncated {
                                expected: limits.expected_len.unwrap_or(0),
                                received: u64::try_from(buf.len() + b.len()).unwrap_or(u64::MAX),
                            });
                            break;
                        }
                        buf.extend_from_slice(&b);
                    }
                    Ok(Some(Err(e))) => {
                        failure = Some(BodyError::Client {
                            detail: e.to_string(),
                        });
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        failure = Some(BodyError::Timeout { secs: idle_secs });
                        break;
                    }
                }
            }
            if failure.is_none()
                && let Some(c) = check
            {
                failure = c.verify().err();
            }
            if let Some(f) = failure {
                return Err(body_error(f));
            }
            let data = buf.freeze();
            let store = Arc::clone(&self.store);
            let res = tokio::task::spawn_blocking(move || {
                let mut ob = ObjectBody::from_bytes(data, limits);
                let verdict = ob.verdict();
                f(store.as_ref(), &mut ob).map_err(|e| (e, verdict.failure()))
            })
            .await;
            return match res {
                Ok(Ok(v)) => Ok(v),
                Ok(Err((_, Some(b)))) => Err(body_error(b)),
                Ok(Err((e, None))) => Err(map_store_error(e)),
                Err(e) => Err(internal("object store call failed", &e)),
            };
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<BodyChunk>(BODY_CHANNEL_DEPTH);
        let mut ob = ObjectBody::from_channel(rx, limits);
        let verdict = ob.verdict();
        let store = Arc::clone(&self.store);
        let task = tokio::task::spawn_blocking(move || f(store.as_ref(), &mut ob));
        let pump = async move {
            loop {
                match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(b))) => {
                        if let Some(c) = &mut check {
                            c.hasher.update(&b);
                        }
                        if tx.send(Ok(b)).await.is_err() {
                            return; // the store stopped reading (error or limit)
                        }
                    }
                    Ok(Some(Err(e))) => {
                        let _ = tx
                            .send(Err(BodyError::Client {
                                detail: e.to_string(),
                            }))
                            .await;
                        return;
                    }
                    Ok(None) => {
                        if let Some(c) = check
                            && let Err(e) = c.verify()
                        {
                            let _ = tx.send(Err(e)).await;
                        }
                        return; // dropping tx is end-of-body
                    }
                    Err(_) => {
                        let _ = tx.send(Err(BodyError::Timeout { secs: idle_secs })).await;
                        return;
                    }
                }
            }
        };
        let ((), res) = tokio::join!(pump, task);
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(verdict
                .failure()
                .map_or_else(|| map_store_error(e), body_error)),
            Err(e) => Err(internal("object store call failed", &e)),
        }
    }

    /// Turns a store reader into a response body: inline for small ranges, otherwise a blocking
    /// task that reads bounded chunks into a bounded channel.
    fn stream_out(&self, mut reader: ObjectReader, len: u64) -> StreamingBlob {
        let chunk = u64::try_from(self.cfg.get_chunk_size.max(4096)).unwrap_or(1 << 20);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(GET_CHANNEL_DEPTH);
        tokio::task::spawn_blocking(move || {
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left.min(chunk)).unwrap_or(1 << 20);
                match read_exact_or_eof(&mut reader, n) {
                    Ok(b) if b.is_empty() => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "object data ended early",
                        );
                        error!(%e, "store reader returned less than the object size");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    Ok(b) => {
                        left -= u64::try_from(b.len()).unwrap_or(left);
                        if tx.blocking_send(Ok(b)).is_err() {
                            return; // client went away
                        }
                    }
                    Err(e) => {
                        error!(%e, "reading object data failed");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        StreamingBlob::wrap(ChannelStream(rx))
    }
}

/// Reads up to `n` bytes, fewer only at end of data.
fn read_exact_or_eof(r: &mut dyn Read, n: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(n);
    let mut filled = 0;
    while filled < n {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(m) => filled += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

/// A `Stream` over a tokio channel receiver (Sync, as `StreamingBlob` requires).
struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures::Stream for ChannelStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Body of a GET: small ranges are read in the same blocking call that opens the object.
enum GetBody {
    Inline(Bytes),
    Stream(ObjectReader),
}

fn lock_out(
    info: &ObjectInfo,
) -> (
    Option<dto::ObjectLockMode>,
    Option<Timestamp>,
    Option<dto::ObjectLockLegalHoldStatus>,
) {
    let mode = info
        .retention
        .map(|r| dto::ObjectLockMode::from(r.mode.as_s3().to_owned()));
    let until = info.retention.map(|r| ts(r.retain_until));
    let hold = info
        .legal_hold
        .then(|| dto::ObjectLockLegalHoldStatus::from("ON".to_owned()));
    (mode, until, hold)
}

fn copy_source(cs: &CopySource) -> S3Result<(String, String)> {
    match cs {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            refuse_version(version_id.as_deref().map(str::to_owned).as_ref())?;
            check_bucket(bucket)?;
            check_key(key)?;
            Ok((bucket.to_string(), key.to_string()))
        }
        CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => Err(s3_error!(
            NotImplemented,
            "access point and outpost copy sources are not supported"
        )),
    }
}

fn bypass<T>(req: &S3Request<T>) -> bool {
    req.headers
        .get("x-amz-bypass-governance-retention")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[async_trait::async_trait]
impl S3 for S3Api {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let key = Self::caller(&req)?;
        let all = self.run(|s| s.list_buckets()).await?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = all
            .into_iter()
            .filter(|b| {
                b.name.starts_with(prefix.as_str()) && self.auth.allowed(&key, b, Access::Read)
            })
            .map(|b| dto::Bucket {
                name: Some(b.name),
                creation_date: Some(ts(b.created)),
                bucket_region: Some(self.cfg.region.clone()),
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner {
                display_name: Some(key.clone()),
                id: Some(key),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let key = Self::caller(&req)?;
        let input = req.input;
        check_bucket(&input.bucket)?;
        if !self.auth.can_create_buckets(&key) {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!("access key {key:?} may not create buckets"),
            ));
        }
        if let Some(lc) = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            && !lc.as_str().is_empty()
            && lc.as_str() != self.cfg.region
        {
            return Err(S3Error::with_message(
                S3ErrorCode::IllegalLocationConstraintException,
                format!(
                    "this endpoint serves region {:?}, not {:?}",
                    self.cfg.region,
                    lc.as_str()
                ),
            ));
        }
        let opts = CreateBucketOptions {
            owner: key,
            object_lock: input.object_lock_enabled_for_bucket.unwrap_or(false),
        };
        let bucket = input.bucket.clone();
        self.run(move |s| s.create_bucket(&bucket, &opts)).await?;
        Ok(S3Response::new(dto::CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Manage)
            .await?;
        let bucket = req.input.bucket;
        self.run(move |s| s.delete_bucket(&bucket)).await?;
        Ok(S3Response::new(dto::DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        Ok(S3Response::new(dto::HeadBucketOutput {
            bucket_region: Some(self.cfg.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        // S3 reports us-east-1 as an empty constraint.
        let lc = (self.cfg.region != "us-east-1")
            .then(|| dto::BucketLocationConstraint::from(self.cfg.region.clone()));
        Ok(S3Response::new(dto::GetBucketLocationOutput {
            location_constraint: lc,
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<dto::GetBucketAclInput>,
    ) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
        let b = self
            .authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        Ok(S3Response::new(dto::GetBucketAclOutput {
            grants: Some(vec![owner_grant(&b.owner)]),
            owner: Some(dto::Owner {
                display_name: Some(b.owner.clone()),
                id: Some(b.owner),
            }),
        }))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<dto::GetObjectAclInput>,
    ) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
        let b = self
            .authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        check_key(&req.input.key)?;
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.run(move |s| s.head_object(&bucket, &key)).await?;
        Ok(S3Response::new(dto::GetObjectAclOutput {
            grants: Some(vec![owner_grant(&b.owner)]),
            owner: Some(dto::Owner {
                display_name: Some(b.owner.clone()),
                id: Some(b.owner),
            }),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let trailers = req.trailing_headers.clone();
        let input = req.input;
        check_key(&input.key)?;
        refuse_unsupported(
            input.sse_customer_algorithm.is_some(),
            input.server_side_encryption.as_ref(),
            input.tagging.is_some(),
        )?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "conditional writes (If-Match/If-None-Match) are not supported"
            ));
        }
        let opts = PutOptions {
            content_type: input.content_type.clone(),
            user_meta: user_meta(input.metadata.clone())?,
            retention: parse_retention(
                input
                    .object_lock_mode
                    .as_ref()
                    .map(dto::ObjectLockMode::as_str),
                input.object_lock_retain_until_date.as_ref(),
            )?,
            legal_hold: parse_legal_hold(
                input
                    .object_lock_legal_hold_status
                    .as_ref()
                    .map(|s| s.as_str()),
            )?,
        };
        let limits = self.limits(
            input.content_length,
            self.cfg.max_object_size,
            content_md5(input.content_md5.as_ref())?,
        )?;
        let check = ChecksumCheck::new(
            dto::Checksum {
                checksum_crc32: input.checksum_crc32.clone(),
                checksum_crc32c: input.checksum_crc32c.clone(),
                checksum_sha1: input.checksum_sha1.clone(),
                checksum_sha256: input.checksum_sha256.clone(),
                checksum_crc64nvme: input.checksum_crc64nvme.clone(),
                ..Default::default()
            },
            input.checksum_algorithm.as_ref(),
            trailers,
        )?;
        // A zero-length request may come without a body; the length check still applies.
        let body = input
            .body
            .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let (bucket, key) = (input.bucket, input.key);
        let info = self
            .with_body(
                PutBody {
                    body,
                    limits,
                    check,
                },
                move |s, b| s.put_object(&bucket, &key, &opts, b),
            )
            .await?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(ETag::Strong(info.etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        if input.part_number.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "GET by part number is not supported; use a Range"
            ));
        }
        if input.sse_customer_algorithm.is_some() {
            return Err(s3_error!(NotImplemented, "SSE-C is not supported"));
        }
        let range = input.range.map(range_from);
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let (info, byte_range, body) = self
            .run(move |s| {
                let g = s.get_object(&bucket, &key, range)?;
                let len = g.range.end - g.range.start;
                let body = if len <= INLINE_MAX {
                    let mut r = g.reader;
                    let n = usize::try_from(len).unwrap_or(0);
                    let b =
                        read_exact_or_eof(&mut r, n).map_err(|e| ObjectStoreError::Internal {
                            detail: format!("reading object data: {e}"),
                        })?;
                    if b.len() != n {
                        return Err(ObjectStoreError::Internal {
                            detail: format!("store reader gave {} of {n} bytes", b.len()),
                        });
                    }
                    GetBody::Inline(b)
                } else {
                    GetBody::Stream(g.reader)
                };
                Ok((g.info, g.range, body))
            })
            .await?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
            false,
        )?;
        let len = byte_range.end - byte_range.start;
        let blob = match body {
            GetBody::Inline(b) => StreamingBlob::from(s3s::Body::from(b)),
            GetBody::Stream(r) => self.stream_out(r, len),
        };
        let content_range = range.map(|_| {
            format!(
                "bytes {}-{}/{}",
                byte_range.start,
                byte_range.end.saturating_sub(1),
                info.size
            )
        });
        let (mode, until, hold) = lock_out(&info);
        Ok(S3Response::new(dto::GetObjectOutput {
            body: Some(blob),
            content_length: Some(i64::try_from(len).map_err(|e| internal("length", &e))?),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: input.response_content_type.or(info.content_type.clone()),
            cache_control: input.response_cache_control,
            content_disposition: input.response_content_disposition,
            content_encoding: input.response_content_encoding,
            content_language: input.response_content_language,
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(ts(info.last_modified)),
            metadata: meta_out(&info.user_meta),
            parts_count: info.parts_count.and_then(|n| i32::try_from(n).ok()),
            object_lock_mode: mode,
            object_lock_retain_until_date: until,
            object_lock_legal_hold_status: hold,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let info = self.run(move |s| s.head_object(&bucket, &key)).await?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
            false,
        )?;
        let (mode, until, hold) = lock_out(&info);
        let (len, content_range) = match input.range.map(range_from) {
            Some(r) => {
                let rg = parse::resolve_range(r, info.size).map_err(map_store_error)?;
                (
                    rg.end - rg.start,
                    Some(format!("bytes {}-{}/{}", rg.start, rg.end - 1, info.size)),
                )
            }
            None => (info.size, None),
        };
        Ok(S3Response::new(dto::HeadObjectOutput {
            content_length: Some(i64::try_from(len).map_err(|e| internal("length", &e))?),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: info.content_type.clone(),
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(ts(info.last_modified)),
            metadata: meta_out(&info.user_meta),
            parts_count: info.parts_count.and_then(|n| i32::try_from(n).ok()),
            object_lock_mode: mode,
            object_lock_retain_until_date: until,
            object_lock_legal_hold_status: hold,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let bypass = bypass(&req);
        if bypass {
            self.authorize(&req, &req.input.bucket, Access::Manage)
                .await?;
        }
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let (bucket, key) = (input.bucket, input.key);
        self.run(move |s| s.delete_object(&bucket, &key, bypass))
            .await?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let bypass = req.input.bypass_governance_retention.unwrap_or(false) || bypass(&req);
        if bypass {
            self.authorize(&req, &req.input.bucket, Access::Manage)
                .await?;
        }
        let input = req.input;
        let objects = input.delete.objects;
        if objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "at most 1000 keys per DeleteObjects request"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let bucket = input.bucket;
        let results = self
            .run(move |s| {
                let mut out = Vec::with_capacity(objects.len());
                for o in objects {
                    let r = if let Err(e) = parse::validate_key(&o.key) {
                        Err(key_error(e))
                    } else if o.version_id.as_deref().is_some_and(|v| v != "null") {
                        Err(s3_error!(NotImplemented, "S3 versioning is not supported"))
                    } else {
                        s.delete_object(&bucket, &o.key, bypass)
                            .map_err(map_store_error)
                    };
                    out.push((o.key, r));
                }
                Ok(out)
            })
            .await?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, r) in results {
            match r {
                Ok(()) if !quiet => deleted.push(dto::DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(e) => errors.push(dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(key),
                    message: e.message().map(str::to_owned),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let (src_bucket, src_key) = copy_source(&req.input.copy_source)?;
        self.authorize(&req, &src_bucket, Access::Read).await?;
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_unsupported(
            input.sse_customer_algorithm.is_some(),
            input.server_side_encryption.as_ref(),
            input.tagging.is_some(),
        )?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == "REPLACE");
        if !replace && src_bucket == input.bucket && src_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let directive = if replace {
            MetadataDirective::Replace(PutOptions {
                content_type: input.content_type.clone(),
                user_meta: user_meta(input.metadata.clone())?,
                retention: parse_retention(
                    input
                        .object_lock_mode
                        .as_ref()
                        .map(dto::ObjectLockMode::as_str),
                    input.object_lock_retain_until_date.as_ref(),
                )?,
                legal_hold: parse_legal_hold(
                    input
                        .object_lock_legal_hold_status
                        .as_ref()
                        .map(|s| s.as_str()),
                )?,
            })
        } else {
            MetadataDirective::Copy
        };
        let has_cond = input.copy_source_if_match.is_some()
            || input.copy_source_if_none_match.is_some()
            || input.copy_source_if_modified_since.is_some()
            || input.copy_source_if_unmodified_since.is_some();
        if has_cond {
            let (b, k) = (src_bucket.clone(), src_key.clone());
            let src = self.run(move |s| s.head_object(&b, &k)).await?;
            check_conditions(
                &src,
                input.copy_source_if_match.as_ref(),
                input.copy_source_if_none_match.as_ref(),
                input.copy_source_if_modified_since.as_ref(),
                input.copy_source_if_unmodified_since.as_ref(),
                true,
            )?;
        }
        let (dst_bucket, dst_key) = (input.bucket, input.key);
        let info = self
            .run(move |s| s.copy_object(&src_bucket, &src_key, &dst_bucket, &dst_key, &directive))
            .await?;
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: Some(ts(info.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        let url = want_url_encoding(input.encoding_type.as_ref())?;
        let q = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            start_after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max_keys(input.max_keys)?,
        };
        let bucket = input.bucket.clone();
        let page = self.run(move |s| s.list_objects(&bucket, &q)).await?;
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(url, input.prefix.unwrap_or_default())),
            marker: Some(enc(url, input.marker.unwrap_or_default())),
            max_keys: input.max_keys.or(Some(1000)),
            is_truncated: Some(page.is_truncated),
            next_marker: page.next_marker.map(|m| enc(url, m)),
            delimiter: input.delimiter.map(|d| enc(url, d)),
            encoding_type: input.encoding_type,
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|e| list_entry(url, e))
                    .collect(),
            ),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        let url = want_url_encoding(input.encoding_type.as_ref())?;
        let start_after =
            match input.continuation_token.as_deref() {
                Some(t) => Some(parse::decode_continuation_token(t).map_err(|e| {
                    S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string())
                })?),
                None => input.start_after.clone().filter(|s| !s.is_empty()),
            };
        let q = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            start_after,
            max_keys: max_keys(input.max_keys)?,
        };
        let bucket = input.bucket.clone();
        let page = self.run(move |s| s.list_objects(&bucket, &q)).await?;
        let key_count =
            i32::try_from(page.objects.len() + page.common_prefixes.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(url, input.prefix.unwrap_or_default())),
            max_keys: input.max_keys.or(Some(1000)),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            next_continuation_token: page
                .next_marker
                .as_deref()
                .map(parse::encode_continuation_token),
            is_truncated: Some(page.is_truncated),
            start_after: input.start_after.map(|s| enc(url, s)),
            delimiter: input.delimiter.map(|d| enc(url, d)),
            encoding_type: input.encoding_type,
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|e| list_entry(url, e))
                    .collect(),
            ),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(url, p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_unsupported(
            input.sse_customer_algorithm.is_some(),
            input.server_side_encryption.as_ref(),
            input.tagging.is_some(),
        )?;
        let opts = PutOptions {
            content_type: input.content_type.clone(),
            user_meta: user_meta(input.metadata.clone())?,
            retention: parse_retention(
                input
                    .object_lock_mode
                    .as_ref()
                    .map(dto::ObjectLockMode::as_str),
                input.object_lock_retain_until_date.as_ref(),
            )?,
            legal_hold: parse_legal_hold(
                input
                    .object_lock_legal_hold_status
                    .as_ref()
                    .map(|s| s.as_str()),
            )?,
        };
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let upload_id = self
            .run(move |s| s.create_multipart_upload(&bucket, &key, &opts))
            .await?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let trailers = req.trailing_headers.clone();
        let input = req.input;
        check_key(&input.key)?;
        let part = part_number(input.part_number)?;
        let limits = self.limits(
            input.content_length,
            MAX_PART_SIZE,
            content_md5(input.content_md5.as_ref())?,
        )?;
        let check = ChecksumCheck::new(
            dto::Checksum {
                checksum_crc32: input.checksum_crc32.clone(),
                checksum_crc32c: input.checksum_crc32c.clone(),
                checksum_sha1: input.checksum_sha1.clone(),
                checksum_sha256: input.checksum_sha256.clone(),
                checksum_crc64nvme: input.checksum_crc64nvme.clone(),
                ..Default::default()
            },
            input.checksum_algorithm.as_ref(),
            trailers,
        )?;
        // A zero-length request may come without a body; the length check still applies.
        let body = input
            .body
            .unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
        let info = self
            .with_body(
                PutBody {
                    body,
                    limits,
                    check,
                },
                move |s, b| s.upload_part(&bucket, &key, &id, part, b),
            )
            .await?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(ETag::Strong(info.etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let (src_bucket, src_key) = copy_source(&req.input.copy_source)?;
        self.authorize(&req, &src_bucket, Access::Read).await?;
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        let part = part_number(input.part_number)?;
        let range = input
            .copy_source_range
            .as_deref()
            .map(|r| {
                parse::parse_copy_source_range(r)
                    .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()))
            })
            .transpose()?;
        let max = MAX_PART_SIZE.min(self.cfg.max_object_size);
        let conds = (
            input.copy_source_if_match,
            input.copy_source_if_none_match,
            input.copy_source_if_modified_since,
            input.copy_source_if_unmodified_since,
        );
        let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
        let info = self
            .run(move |s| {
                let g = s.get_object(&src_bucket, &src_key, range)?;
                let cond = check_conditions(
                    &g.info,
                    conds.0.as_ref(),
                    conds.1.as_ref(),
                    conds.2.as_ref(),
                    conds.3.as_ref(),
                    true,
                );
                if let Err(e) = cond {
                    return Ok(Err(e));
                }
                let len = g.range.end - g.range.start;
                if len > max {
                    return Err(ObjectStoreError::EntityTooLarge { size: len, max });
                }
                let mut body = ObjectBody::from_reader(
                    g.reader,
                    BodyLimits {
                        expected_len: Some(len),
                        max_len: max,
                        content_md5: None,
                    },
                );
                s.upload_part(&bucket, &key, &id, part, &mut body).map(Ok)
            })
            .await??;
        Ok(S3Response::new(dto::UploadPartCopyOutput {
            copy_part_result: Some(dto::CopyPartResult {
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: Some(ts(info.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        let requested = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if requested.len() > usize::try_from(MAX_PART_NUMBER).unwrap_or(usize::MAX) {
            return Err(s3_error!(MalformedXML, "at most 10000 parts"));
        }
        let mut parts = Vec::with_capacity(requested.len());
        for p in requested {
            let n = p
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "a part has no PartNumber"))?;
            let etag = p
                .e_tag
                .ok_or_else(|| s3_error!(InvalidPart, "a part has no ETag"))?;
            parts.push(CompletedPart {
                part_number: u32::try_from(n)
                    .map_err(|_| s3_error!(InvalidPart, "negative part number"))?,
                etag: parse::unquote_etag(etag.value()).to_owned(),
            });
        }
        let (bucket, key, id) = (input.bucket.clone(), input.key.clone(), input.upload_id);
        let info = self
            .run(move |s| s.complete_multipart_upload(&bucket, &key, &id, &parts))
            .await?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(info.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
        self.run(move |s| s.abort_multipart_upload(&bucket, &key, &id))
            .await?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        let url = want_url_encoding(input.encoding_type.as_ref())?;
        let q = UploadQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            key_marker: input.key_marker.clone().filter(|s| !s.is_empty()),
            upload_id_marker: input.upload_id_marker.clone().filter(|s| !s.is_empty()),
            max_uploads: max_keys(input.max_uploads)?,
        };
        let bucket = input.bucket.clone();
        let page = self
            .run(move |s| s.list_multipart_uploads(&bucket, &q))
            .await?;
        let last = page
            .uploads
            .last()
            .map(|u| (u.key.clone(), u.upload_id.clone()));
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.map(|p| enc(url, p)),
            key_marker: input.key_marker.map(|p| enc(url, p)),
            upload_id_marker: input.upload_id_marker,
            max_uploads: input.max_uploads.or(Some(1000)),
            is_truncated: Some(page.is_truncated),
            next_key_marker: page
                .is_truncated
                .then(|| last.as_ref().map(|l| enc(url, l.0.clone())))
                .flatten(),
            next_upload_id_marker: page.is_truncated.then(|| last.map(|l| l.1)).flatten(),
            encoding_type: input.encoding_type,
            uploads: Some(
                page.uploads
                    .into_iter()
                    .map(|u| dto::MultipartUpload {
                        key: Some(enc(url, u.key)),
                        upload_id: Some(u.upload_id),
                        initiated: Some(ts(u.initiated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        let marker = u32::try_from(input.part_number_marker.unwrap_or(0))
            .map_err(|_| s3_error!(InvalidArgument, "part-number-marker must not be negative"))?;
        let max = max_keys(input.max_parts)?;
        let (bucket, key, id) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let page = self
            .run(move |s| s.list_parts(&bucket, &key, &id, marker, max))
            .await?;
        let next = page
            .parts
            .last()
            .and_then(|p| i32::try_from(p.part_number).ok());
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if page.is_truncated { next } else { None },
            max_parts: input.max_parts.or(Some(1000)),
            is_truncated: Some(page.is_truncated),
            parts: Some(
                page.parts
                    .into_iter()
                    .map(|p| dto::Part {
                        part_number: i32::try_from(p.part_number).ok(),
                        e_tag: Some(ETag::Strong(p.etag)),
                        size: i64::try_from(p.size).ok(),
                        last_modified: Some(ts(p.last_modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn put_object_retention(
        &self,
        req: S3Request<dto::PutObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::PutObjectRetentionOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let bypass = req.input.bypass_governance_retention.unwrap_or(false) || bypass(&req);
        if bypass {
            self.authorize(&req, &req.input.bucket, Access::Manage)
                .await?;
        }
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let retention = match input.retention {
            None => None,
            Some(r) => parse_retention(
                r.mode.as_ref().map(dto::ObjectLockRetentionMode::as_str),
                r.retain_until_date.as_ref(),
            )?,
        };
        let (bucket, key) = (input.bucket, input.key);
        self.run(move |s| s.put_object_retention(&bucket, &key, retention, bypass))
            .await?;
        Ok(S3Response::new(dto::PutObjectRetentionOutput::default()))
    }

    async fn get_object_retention(
        &self,
        req: S3Request<dto::GetObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::GetObjectRetentionOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let (bucket, key) = (input.bucket, input.key);
        let r = self
            .run(move |s| s.get_object_retention(&bucket, &key))
            .await?;
        let r = r.ok_or_else(|| {
            s3_error!(
                NoSuchObjectLockConfiguration,
                "the object does not have an object lock configuration"
            )
        })?;
        Ok(S3Response::new(dto::GetObjectRetentionOutput {
            retention: Some(dto::ObjectLockRetention {
                mode: Some(dto::ObjectLockRetentionMode::from(
                    r.mode.as_s3().to_owned(),
                )),
                retain_until_date: Some(ts(r.retain_until)),
            }),
        }))
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<dto::PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::PutObjectLegalHoldOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Write)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let on = parse_legal_hold(
            input
                .legal_hold
                .as_ref()
                .and_then(|h| h.status.as_ref())
                .map(|s| s.as_str()),
        )?;
        let (bucket, key) = (input.bucket, input.key);
        self.run(move |s| s.put_object_legal_hold(&bucket, &key, on))
            .await?;
        Ok(S3Response::new(dto::PutObjectLegalHoldOutput::default()))
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<dto::GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::GetObjectLegalHoldOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let input = req.input;
        check_key(&input.key)?;
        refuse_version(input.version_id.as_ref())?;
        let (bucket, key) = (input.bucket, input.key);
        let on = self
            .run(move |s| s.get_object_legal_hold(&bucket, &key))
            .await?;
        Ok(S3Response::new(dto::GetObjectLegalHoldOutput {
            legal_hold: Some(dto::ObjectLockLegalHold {
                status: Some(dto::ObjectLockLegalHoldStatus::from(
                    if on { "ON" } else { "OFF" }.to_owned(),
                )),
            }),
        }))
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<dto::PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutObjectLockConfigurationOutput>> {
        self.authorize(&req, &req.input.bucket, Access::Manage)
            .await?;
        let input = req.input;
        let cfg = input
            .object_lock_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "missing ObjectLockConfiguration"))?;
        if cfg.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some("Enabled") {
            return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
        }
        let default_retention = match cfg.rule.and_then(|r| r.default_retention) {
            None => None,
            Some(d) => {
                let mode = parse_mode(d.mode.as_ref().map_or("", |m| m.as_str()))?;
                let days = match (d.days, d.years) {
                    (Some(days), None) if days > 0 => u32::try_from(days).ok(),
                    (None, Some(y)) if y > 0 => {
                        u32::try_from(y).ok().and_then(|y| y.checked_mul(365))
                    }
                    _ => None,
                }
                .ok_or_else(|| {
                    s3_error!(
                        MalformedXML,
                        "DefaultRetention needs a positive Days or Years, not both"
                    )
                })?;
                Some(DefaultRetention { mode, days })
            }
        };
        let bucket = input.bucket;
        let config = BucketLockConfig { default_retention };
        self.run(move |s| s.put_bucket_lock_config(&bucket, &config))
            .await?;
        Ok(S3Response::new(
            dto::PutObjectLockConfigurationOutput::default(),
        ))
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<dto::GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetObjectLockConfigurationOutput>> {
        let b = self
            .authorize(&req, &req.input.bucket, Access::Read)
            .await?;
        let lock = b.lock.ok_or_else(|| {
            s3_error!(
                ObjectLockConfigurationNotFoundError,
                "object lock is not enabled on this bucket"
            )
        })?;
        Ok(S3Response::new(dto::GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(dto::ObjectLockConfiguration {
                object_lock_enabled: Some(dto::ObjectLockEnabled::from("Enabled".to_owned())),
                rule: lock.default_retention.map(|d| dto::ObjectLockRule {
                    default_retention: Some(dto::DefaultRetention {
                        days: i32::try_from(d.days).ok(),
                        mode: Some(dto::ObjectLockRetentionMode::from(
                            d.mode.as_s3().to_owned(),
                        )),
                        years: None,
                    }),
                }),
            }),
        }))
    }
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

fn list_entry(url: bool, e: crate::store::ListEntry) -> dto::Object {
    dto::Object {
        key: Some(enc(url, e.key)),
        size: i64::try_from(e.size).ok(),
        e_tag: Some(ETag::Strong(e.etag)),
        last_modified: Some(ts(e.last_modified)),
        storage_class: Some(dto::ObjectStorageClass::from("STANDARD".to_owned())),
        ..Default::default()
    }
}

fn owner_grant(owner: &str) -> dto::Grant {
    dto::Grant {
        grantee: Some(dto::Grantee {
            display_name: Some(owner.to_owned()),
            id: Some(owner.to_owned()),
            type_: dto::Type::from("CanonicalUser".to_owned()),
            email_address: None,
            uri: None,
        }),
        permission: Some(dto::Permission::from("FULL_CONTROL".to_owned())),
    }
}

/// s3s authentication: secret keys come from the [`Authorizer`].
pub(crate) struct AuthBridge(pub(crate) Arc<dyn Authorizer>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for AuthBridge {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        match self.0.secret_key(access_key) {
            Some(s) => Ok(s3s::auth::SecretKey::from(s)),
            None => {
                warn!(access_key, "request with an unknown access key");
                Err(s3_error!(
                    InvalidAccessKeyId,
                    "the access key id does not exist"
                ))
            }
        }
    }
}

/// s3s access hook: refuses unsigned requests and records the operation name for metrics.
/// Per-bucket permissions are checked in the handlers, which know every bucket a request touches.
pub(crate) struct AccessBridge;

#[async_trait::async_trait]
impl s3s::access::S3Access for AccessBridge {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let name = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>()
            && let Ok(mut g) = slot.0.lock()
        {
            *g = Some(name);
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(
                AccessDenied,
                "anonymous access is not allowed: sign the request"
            )),
        }
    }
}

/// Bucket name rules for s3s' path parser: ours, so the parser and handlers agree.
pub(crate) struct NameRules;

impl s3s::validation::NameValidation for NameRules {
    fn validate_bucket_name(&self, name: &str) -> bool {
        parse::validate_bucket_name(name).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let cases = [
            (
                ObjectStoreError::NoSuchBucket { bucket: "b".into() },
                "NoSuchBucket",
                404,
            ),
            (
                ObjectStoreError::WormProtected {
                    reason: "legal hold".into(),
                },
                "AccessDenied",
                403,
            ),
            (
                ObjectStoreError::QuotaExceeded { detail: "x".into() },
                "QuotaExceeded",
                403,
            ),
            (
                ObjectStoreError::InvalidRange { size: 1 },
                "InvalidRange",
                416,
            ),
            (ObjectStoreError::BadDigest, "BadDigest", 400),
            (
                ObjectStoreError::ObjectLockNotEnabled { bucket: "b".into() },
                "InvalidRequest",
                400,
            ),
        ];
        for (e, code, status) in cases {
            let s = map_store_error(e);
            assert_eq!(s.code().as_str(), code);
            assert_eq!(s.status_code().map(|c| c.as_u16()), Some(status));
        }
        let s = map_store_error(ObjectStoreError::Internal {
            detail: "secret path /dev/sda".into(),
        });
        assert_eq!(s.code().as_str(), "InternalError");
        assert!(!s.message().unwrap_or_default().contains("sda"));
    }

    #[test]
    fn conditions() {
        let info = ObjectInfo {
            key: "k".into(),
            size: 1,
            etag: "abc".into(),
            content_type: None,
            user_meta: UserMeta::new(),
            created: SystemTime::UNIX_EPOCH,
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            version: 1,
            parts_count: None,
            retention: None,
            legal_hold: false,
        };
        let m = ETagCondition::ETag(ETag::Strong("abc".into()));
        let n = ETagCondition::ETag(ETag::Strong("zzz".into()));
        assert!(check_conditions(&info, Some(&m), None, None, None, false).is_ok());
        assert!(check_conditions(&info, Some(&n), None, None, None, false).is_err());
        let e = check_conditions(&info, None, Some(&m), None, None, false).err();
        assert_eq!(
            e.map(|e| e.code().as_str().to_owned()).as_deref(),
            Some("NotModified")
        );
        let later = ts(SystemTime::UNIX_EPOCH + Duration::from_secs(2000));
        assert!(check_conditions(&info, None, None, Some(&later), None, false).is_err());
        assert!(check_conditions(&info, None, None, None, Some(&later), false).is_ok());
    }
}
