//! The storage interface the S3 layer needs: [`ObjectStore`].
//!
//! The trait is blocking on purpose: the VDE engine has a blocking API, and the S3 layer calls
//! every method from tokio's blocking pool. Object data always streams through
//! [`std::io::Read`]: a PUT body arrives as an [`ObjectBody`] that the store reads to the end, a GET
//! returns a reader the S3 layer drains in bounded chunks. No method ever needs a whole object in
//! memory, so objects up to [`MAX_OBJECT_SIZE`] (5 TiB) work.
//!
//! Contract shared by all methods:
//! - Bucket names and keys are validated by the S3 layer before they reach the store (see
//!   [`crate::parse`]); keys are opaque UTF-8 strings compared byte-wise. `a/../b` is a key
//!   like any other, never a path.
//! - A failed call changes nothing that a later call can observe.
//! - Writes of object data (put, upload part, copy, complete) become visible atomically.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::time::SystemTime;

use crate::body::ObjectBody;

/// Largest object S3 allows (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Largest single part of a multipart upload (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Smallest part of a multipart upload, except the last one (5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Highest multipart part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Most keys, prefixes, uploads or parts one list call returns.
pub const MAX_LIST_KEYS: usize = 1000;

/// User metadata (`x-amz-meta-*`), keys lower-case without the prefix.
pub type UserMeta = BTreeMap<String, String>;

/// Object lock retention mode, as in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionMode {
    /// Protected until the date, but a key with [`crate::Access::Manage`] on the bucket may
    /// shorten or remove it with `x-amz-bypass-governance-retention`.
    Governance,
    /// Nobody can delete, overwrite or shorten it until the date. Maps to the VDE's WORM policy.
    Compliance,
}

impl RetentionMode {
    /// The S3 spelling (`GOVERNANCE` / `COMPLIANCE`).
    #[must_use]
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// Retention of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How strict the protection is.
    pub mode: RetentionMode,
    /// The object is protected while `now < retain_until`.
    pub retain_until: SystemTime,
}

/// Default retention a bucket applies to every new object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetention {
    /// Mode given to new objects.
    pub mode: RetentionMode,
    /// Period in days (S3 `Years` are converted to `365 * years` days).
    pub days: u32,
}

/// Object lock configuration of a bucket. A bucket has one only if it was created with object
/// lock enabled (S3 cannot enable it later through this API either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketLockConfig {
    /// Retention applied to new objects that do not ask for their own.
    pub default_retention: Option<DefaultRetention>,
}

/// Options for creating a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateBucketOptions {
    /// Access key that creates (and so owns) the bucket.
    pub owner: String,
    /// Enable object lock (WORM) on the bucket; cannot be turned off later.
    pub object_lock: bool,
}

/// What a store knows about a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Bucket name.
    pub name: String,
    /// Creation time.
    pub created: SystemTime,
    /// Access key that created it; the [`crate::Authorizer`] gives the owner full access.
    pub owner: String,
    /// Object lock configuration, `None` when object lock is not enabled on the bucket.
    pub lock: Option<BucketLockConfig>,
}

/// Metadata for a new object (put, create multipart, copy with `REPLACE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutOptions {
    /// `Content-Type`, stored verbatim.
    pub content_type: Option<String>,
    /// User metadata.
    pub user_meta: UserMeta,
    /// Retention requested with the object; `None` applies the bucket default, if any.
    pub retention: Option<Retention>,
    /// Legal hold requested with the object.
    pub legal_hold: bool,
}

/// What a store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// S3 ETag without quotes: hex MD5 of the data, or `md5-of-md5s-N` for multipart objects.
    pub etag: String,
    /// `Content-Type` given at upload.
    pub content_type: Option<String>,
    /// User metadata given at upload.
    pub user_meta: UserMeta,
    /// When this key was first written (survives overwrites).
    pub created: SystemTime,
    /// When this version of the object was written.
    pub last_modified: SystemTime,
    /// Store-wide monotonic write generation; S3 versioning is not offered, this is informative.
    pub version: u64,
    /// Number of parts for multipart objects.
    pub parts_count: Option<u32>,
    /// Current retention, if any.
    pub retention: Option<Retention>,
    /// Legal hold status.
    pub legal_hold: bool,
}

/// A byte range asked for by a client, before it is resolved against the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=first-` or `bytes=first-last` (inclusive).
    FromTo {
        /// First byte.
        first: u64,
        /// Last byte, inclusive; `None` means to the end.
        last: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// Reader of object data returned by [`ObjectStore::get_object`].
pub type ObjectReader = Box<dyn Read + Send>;

/// Result of [`ObjectStore::get_object`].
pub struct GetObject {
    /// The object as it was when the read started.
    pub info: ObjectInfo,
    /// The byte range the reader yields (the whole object when no range was asked for).
    pub range: Range<u64>,
    /// Yields exactly `range.end - range.start` bytes.
    pub reader: ObjectReader,
}

impl std::fmt::Debug for GetObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObject")
            .field("info", &self.info)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// How [`ObjectStore::copy_object`] sets the metadata of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataDirective {
    /// Keep the source's content type and user metadata (S3 default).
    Copy,
    /// Use these instead.
    Replace(PutOptions),
}

/// A list request (ListObjects v1 and v2 both map to it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only keys that start with this.
    pub prefix: String,
    /// Roll up keys that contain this after the prefix into common prefixes.
    pub delimiter: Option<String>,
    /// Only keys and common prefixes strictly greater than this (v1 marker, v2 start-after or
    /// decoded continuation token). A marker that is a common prefix skips all keys under it.
    pub start_after: Option<String>,
    /// At most this many keys plus common prefixes (0..=[`MAX_LIST_KEYS`]).
    pub max_keys: usize,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Last modification.
    pub last_modified: SystemTime,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// Objects, sorted by key.
    pub objects: Vec<ListEntry>,
    /// Common prefixes (each ends with the delimiter), sorted.
    pub common_prefixes: Vec<String>,
    /// More entries follow.
    pub is_truncated: bool,
    /// When truncated: the last key or prefix returned, to pass as `start_after` next time.
    pub next_marker: Option<String>,
}

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// Part number, 1..=10000.
    pub part_number: u32,
    /// ETag the client got from UploadPart (without quotes).
    pub etag: String,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Part number.
    pub part_number: u32,
    /// Hex MD5 of the part (no quotes).
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// Upload time.
    pub last_modified: SystemTime,
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Target key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was created.
    pub initiated: SystemTime,
}

/// A ListMultipartUploads request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadQuery {
    /// Only uploads whose key starts with this.
    pub prefix: String,
    /// Continue after this key ...
    pub key_marker: Option<String>,
    /// ... and, for that key, after this upload id.
    pub upload_id_marker: Option<String>,
    /// At most this many uploads (0..=[`MAX_LIST_KEYS`]).
    pub max_uploads: usize,
}

/// A page of uploads in progress, sorted by key, then upload id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadPage {
    /// The uploads.
    pub uploads: Vec<UploadInfo>,
    /// More follow.
    pub is_truncated: bool,
}

/// A page of parts, sorted by part number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartPage {
    /// The parts.
    pub parts: Vec<PartInfo>,
    /// More follow.
    pub is_truncated: bool,
}

/// Why a store call failed. The S3 layer maps every variant to an S3 error (see docs/S3.md);
/// [`ObjectStoreError::Internal`] details are logged, never sent to the client.
///
/// One enum serves the whole trait because the S3 layer needs the same mapping for every call
/// and a store implementation shares most failure causes between operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectStoreError {
    /// The bucket does not exist.
    #[error("bucket {bucket:?} does not exist")]
    NoSuchBucket {
        /// Bucket name.
        bucket: String,
    },
    /// The key does not exist in the bucket.
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey {
        /// Bucket name.
        bucket: String,
        /// Key.
        key: String,
    },
    /// CreateBucket of a bucket the caller already owns.
    #[error("bucket {bucket:?} already exists and is owned by you")]
    BucketAlreadyOwnedByYou {
        /// Bucket name.
        bucket: String,
    },
    /// CreateBucket of a bucket someone else owns.
    #[error("bucket {bucket:?} already exists and belongs to another key")]
    BucketAlreadyExists {
        /// Bucket name.
        bucket: String,
    },
    /// DeleteBucket of a bucket that still holds objects or uploads.
    #[error("bucket {bucket:?} is not empty: delete its objects and uploads first")]
    BucketNotEmpty {
        /// Bucket name.
        bucket: String,
    },
    /// The bucket name breaks the S3 naming rules.
    #[error("invalid bucket name {bucket:?}: {reason}")]
    InvalidBucketName {
        /// Bucket name.
        bucket: String,
        /// Which rule.
        reason: String,
    },
    /// A key that the store cannot hold (should have been caught by the S3 layer).
    #[error("invalid object key: {reason}")]
    InvalidKey {
        /// Which rule.
        reason: String,
    },
    /// The byte range does not overlap the object.
    #[error("range not satisfiable for an object of {size} bytes")]
    InvalidRange {
        /// Object size.
        size: u64,
    },
    /// The data is larger than allowed.
    #[error("entity of at least {size} bytes exceeds the limit of {max} bytes")]
    EntityTooLarge {
        /// Bytes seen (or announced).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A multipart part other than the last is smaller than [`MIN_PART_SIZE`].
    #[error("part {part_number} has {size} bytes; every part but the last needs at least {min}")]
    EntityTooSmall {
        /// Part number.
        part_number: u32,
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// A completed part was never uploaded or its ETag does not match.
    #[error("part {part_number} is invalid: {reason}")]
    InvalidPart {
        /// Part number.
        part_number: u32,
        /// Why.
        reason: String,
    },
    /// The completed part list is not in ascending order.
    #[error("the part list must be in ascending part number order without duplicates")]
    InvalidPartOrder,
    /// The upload id is unknown (never created, completed or aborted).
    #[error("upload {upload_id:?} does not exist (completed, aborted or never created)")]
    NoSuchUpload {
        /// Upload id.
        upload_id: String,
    },
    /// A delete or overwrite refused by retention, legal hold or the VDE's WORM policy.
    #[error("object is write-protected: {reason}")]
    WormProtected {
        /// Which protection, in words for the client.
        reason: String,
    },
    /// A container or VDE quota would be exceeded.
    #[error("quota exceeded: {detail}")]
    QuotaExceeded {
        /// Which quota.
        detail: String,
    },
    /// The operation does not fit the object's or bucket's state (e.g. object lock operations on
    /// a bucket without object lock).
    #[error("invalid object state: {detail}")]
    InvalidObjectState {
        /// What is wrong.
        detail: String,
    },
    /// An object lock operation on a bucket created without object lock.
    #[error(
        "bucket {bucket:?} has no object lock configuration (create it with object lock enabled)"
    )]
    ObjectLockNotEnabled {
        /// Bucket name.
        bucket: String,
    },
    /// The Content-MD5 sent by the client does not match the data.
    #[error("the Content-MD5 does not match the received data")]
    BadDigest,
    /// The body ended before Content-Length bytes arrived, or the client went away.
    #[error("request body incomplete: {detail}")]
    IncompleteBody {
        /// What happened.
        detail: String,
    },
    /// An argument the store rejects (e.g. a retention date in the past).
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What is wrong.
        detail: String,
    },
    /// A feature this store does not have.
    #[error("not supported by this store: {what}")]
    NotSupported {
        /// The feature.
        what: String,
    },
    /// Anything else; logged by the S3 layer, the client sees only `InternalError`.
    #[error("internal store error: {detail}")]
    Internal {
        /// What failed, for the log.
        detail: String,
    },
}

impl From<std::io::Error> for ObjectStoreError {
    /// Read errors from an [`ObjectBody`] carry the body's own verdict (truncated, too large,
    /// bad digest); other I/O errors are internal.
    fn from(e: std::io::Error) -> Self {
        match crate::body::BodyError::from_io(&e) {
            Some(b) => b.into(),
            None => Self::Internal {
                detail: e.to_string(),
            },
        }
    }
}

/// The storage engine behind the S3 API. Implemented by `MemStore` here and by the daemon over
/// the VDE. All methods block; the S3 layer calls them from tokio's blocking pool.
pub trait ObjectStore: Send + Sync + 'static {
    // ---- buckets ----

    /// All buckets, sorted by name.
    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ObjectStoreError>;
    /// Creates a bucket. `BucketAlreadyOwnedByYou` when `opts.owner` already owns it,
    /// `BucketAlreadyExists` when another key does.
    fn create_bucket(
        &self,
        bucket: &str,
        opts: &CreateBucketOptions,
    ) -> Result<BucketInfo, ObjectStoreError>;
    /// Deletes an empty bucket (no objects, no uploads in progress).
    fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectStoreError>;
    /// Bucket metadata, `NoSuchBucket` when absent.
    fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, ObjectStoreError>;

    // ---- objects ----

    /// Stores an object from `body`, replacing any object with that key (unless protected).
    ///
    /// The store must read `body` until it returns `Ok(0)` and only then make the object
    /// visible. A read error (truncated body, size limit, Content-MD5 mismatch, client gone)
    /// means abort: nothing may change. After `Ok(0)`, [`ObjectBody::digest`] gives size and
    /// MD5 for the ETag.
    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        body: &mut ObjectBody,
    ) -> Result<ObjectInfo, ObjectStoreError>;
    /// Opens an object for reading, optionally a byte range of it (resolve with
    /// [`crate::parse::resolve_range`]). `InvalidRange` when the range misses the object.
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<GetObject, ObjectStoreError>;
    /// Object metadata.
    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectStoreError>;
    /// Deletes an object. Deleting a missing key succeeds (S3 semantics); a protected object
    /// fails with `WormProtected` unless `bypass_governance` and only governance retention applies.
    fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        bypass_governance: bool,
    ) -> Result<(), ObjectStoreError>;
    /// Server-side copy; the store may share data instead of copying it. Copying an object onto
    /// itself with [`MetadataDirective::Replace`] updates its metadata.
    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        metadata: &MetadataDirective,
    ) -> Result<ObjectInfo, ObjectStoreError>;
    /// One page of the keys in a bucket (see [`crate::listing::paginate`] for the exact rules).
    fn list_objects(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, ObjectStoreError>;

    // ---- multipart uploads ----

    /// Starts a multipart upload; returns its id (opaque, ASCII, at most 128 bytes).
    fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<String, ObjectStoreError>;
    /// Stores one part (same body rules as [`ObjectStore::put_object`]); a part uploaded again
    /// replaces the earlier one.
    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut ObjectBody,
    ) -> Result<PartInfo, ObjectStoreError>;
    /// Joins the listed parts into the object (the VDE can do this without copying data) and
    /// ends the upload. Check the list with [`crate::parse::check_completion`]; the ETag is
    /// [`crate::parse::multipart_etag`].
    fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectInfo, ObjectStoreError>;
    /// Drops an upload and its parts.
    fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), ObjectStoreError>;
    /// Uploads in progress in a bucket.
    fn list_multipart_uploads(
        &self,
        bucket: &str,
        query: &UploadQuery,
    ) -> Result<UploadPage, ObjectStoreError>;
    /// Parts of an upload with number greater than `part_number_marker`, at most `max_parts`.
    fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: u32,
        max_parts: usize,
    ) -> Result<PartPage, ObjectStoreError>;

    // ---- object lock (WORM) ----

    /// Sets retention. Extending is always allowed; shortening or removing governance retention
    /// needs `bypass_governance`; compliance retention can never be shortened. `InvalidObjectState`
    /// (mapped to InvalidRequest) if the bucket has no object lock.
    fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<(), ObjectStoreError>;
    /// Current retention.
    fn get_object_retention(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Retention>, ObjectStoreError>;
    /// Sets or clears the legal hold.
    fn put_object_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        on: bool,
    ) -> Result<(), ObjectStoreError>;
    /// Current legal hold.
    fn get_object_legal_hold(&self, bucket: &str, key: &str) -> Result<bool, ObjectStoreError>;
    /// Replaces the bucket's object lock configuration (object lock must be enabled already).
    fn put_bucket_lock_config(
        &self,
        bucket: &str,
        config: &BucketLockConfig,
    ) -> Result<(), ObjectStoreError>;
}
