//! [`MemStore`]: a complete in-memory [`ObjectStore`] for tests and benchmarks.
//!
//! Object data is a list of immutable `Bytes` segments shared through `Arc`, so copies and
//! multipart completion join segments instead of copying data, as the VDE does with extents.
//! The lock is held only for metadata; body data is read before it is taken.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::body::ObjectBody;
use crate::listing::paginate;
use crate::parse::{check_completion, multipart_etag, resolve_range};
use crate::store::{
    BucketInfo, BucketLockConfig, CompletedPart, CreateBucketOptions, GetObject, ListEntry,
    ListPage, ListQuery, MAX_LIST_KEYS, MetadataDirective, ObjectInfo, ObjectStore,
    ObjectStoreError, PartInfo, PartPage, PutOptions, RangeRequest, Retention, RetentionMode,
    UploadInfo, UploadPage, UploadQuery,
};

/// Segment size used when reading a body into memory.
const SEGMENT: usize = 1024 * 1024;

type Data = Arc<Vec<Bytes>>;

/// Data and identity of an object about to be committed.
struct NewData {
    data: Data,
    etag: String,
    parts_count: Option<u32>,
}

#[derive(Debug, Clone)]
struct MemObject {
    info: ObjectInfo,
    data: Data,
}

#[derive(Debug)]
struct MemUpload {
    key: String,
    opts: PutOptions,
    initiated: SystemTime,
    parts: BTreeMap<u32, (PartInfo, Data)>,
}

#[derive(Debug)]
struct MemBucket {
    info: BucketInfo,
    objects: BTreeMap<String, MemObject>,
    uploads: BTreeMap<String, MemUpload>,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, MemBucket>,
    /// Bytes held by objects and parts (shared segments count once per reference).
    used: u64,
}

/// In-memory object store. Optional byte quota to exercise `QuotaExceeded`.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<State>,
    generation: AtomicU64,
    quota: Option<u64>,
}

fn data_len(d: &[Bytes]) -> u64 {
    d.iter()
        .map(|b| u64::try_from(b.len()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add)
}

/// Reads a body completely into segments; any read error aborts (nothing is stored).
fn read_body(
    body: &mut ObjectBody,
) -> Result<(Vec<Bytes>, crate::body::BodyDigest), ObjectStoreError> {
    let expected = body.limits().expected_len;
    // Segments sized to what is still expected, so small objects do not pin 1 MiB each.
    let seg_len = |received: u64| -> usize {
        let rest = expected.map_or(u64::MAX, |e| e.saturating_sub(received).max(1));
        usize::try_from(rest).unwrap_or(SEGMENT).min(SEGMENT)
    };
    let mut segs = Vec::new();
    let mut received = 0u64;
    let mut buf = BytesMut::zeroed(seg_len(0));
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            segs.push(buf.split().freeze());
            buf = BytesMut::zeroed(seg_len(received));
            filled = 0;
        }
        match body.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                received += u64::try_from(n).unwrap_or(0);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if filled > 0 {
        buf.truncate(filled);
        segs.push(buf.freeze());
    }
    let digest = body.digest().ok_or_else(|| ObjectStoreError::Internal {
        detail: "body ended without a digest".into(),
    })?;
    Ok((segs, digest))
}

/// Why an object may not be deleted or overwritten now, if it may not.
fn protection(info: &ObjectInfo, bypass_governance: bool) -> Option<String> {
    if info.legal_hold {
        return Some(format!("object {:?} is under legal hold", info.key));
    }
    let r = info.retention?;
    if r.retain_until <= SystemTime::now() {
        return None;
    }
    match r.mode {
        RetentionMode::Compliance => Some(format!(
            "object {:?} is under COMPLIANCE retention (WORM) until {}",
            info.key,
            fmt_time(r.retain_until)
        )),
        RetentionMode::Governance if !bypass_governance => Some(format!(
            "object {:?} is under GOVERNANCE retention until {}; a key with Manage access may bypass it",
            info.key,
            fmt_time(r.retain_until)
        )),
        RetentionMode::Governance => None,
    }
}

fn fmt_time(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("unix time {}", d.as_secs()),
        Err(_) => "before 1970".into(),
    }
}

impl MemStore {
    /// An empty store without quota.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that refuses writes beyond `bytes` in total.
    #[must_use]
    pub fn with_quota(bytes: u64) -> Self {
        Self {
            quota: Some(bytes),
            ..Self::default()
        }
    }

    /// Bytes stored (objects and uploaded parts).
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.lock().map(|s| s.used).unwrap_or(0)
    }

    /// Number of objects in all buckets (for tests that check nothing changed).
    #[must_use]
    pub fn object_count(&self) -> usize {
        self.lock()
            .map(|s| s.buckets.values().map(|b| b.objects.len()).sum())
            .unwrap_or(0)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, ObjectStoreError> {
        self.state.lock().map_err(|_| ObjectStoreError::Internal {
            detail: "memory store lock poisoned by an earlier panic".into(),
        })
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn check_quota(&self, used: u64, add: u64) -> Result<(), ObjectStoreError> {
        match self.quota {
            Some(q) if used.saturating_add(add) > q => Err(ObjectStoreError::QuotaExceeded {
                detail: format!(
                    "storing {add} more bytes would exceed the quota of {q} bytes ({used} used)"
                ),
            }),
            _ => Ok(()),
        }
    }

    fn ensure_bucket(&self, bucket: &str) -> Result<(), ObjectStoreError> {
        let st = self.lock()?;
        if st.buckets.contains_key(bucket) {
            Ok(())
        } else {
            Err(no_bucket(bucket))
        }
    }

    /// Stores `data` under `key`, replacing an unprotected old object. Lock held by caller.
    fn commit(
        &self,
        st: &mut State,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        new: NewData,
    ) -> Result<ObjectInfo, ObjectStoreError> {
        let NewData {
            data,
            etag,
            parts_count,
        } = new;
        let size = data_len(&data);
        let used = st.used;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        let old = b.objects.get(key);
        if let Some(old) = old
            && let Some(reason) = protection(&old.info, false)
        {
            return Err(ObjectStoreError::WormProtected { reason });
        }
        let old_size = old.map_or(0, |o| o.info.size);
        if let Some(q) = self.quota
            && used.saturating_sub(old_size).saturating_add(size) > q
        {
            return Err(ObjectStoreError::QuotaExceeded {
                detail: format!(
                    "storing {size} bytes would exceed the quota of {q} bytes ({used} used)"
                ),
            });
        }
        let now = SystemTime::now();
        let retention = opts.retention.or_else(|| {
            b.info
                .lock
                .and_then(|l| l.default_retention)
                .map(|d| Retention {
                    mode: d.mode,
                    retain_until: now + Duration::from_secs(u64::from(d.days) * 86_400),
                })
        });
        if (retention.is_some() || opts.legal_hold) && b.info.lock.is_none() {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.into(),
            });
        }
        let info = ObjectInfo {
            key: key.to_owned(),
            size,
            etag,
            content_type: opts.content_type.clone(),
            user_meta: opts.user_meta.clone(),
            created: old.map_or(now, |o| o.info.created),
            last_modified: now,
            version: self.next_generation(),
            parts_count,
            retention,
            legal_hold: opts.legal_hold,
        };
        b.objects.insert(
            key.to_owned(),
            MemObject {
                info: info.clone(),
                data,
            },
        );
        st.used = used.saturating_sub(old_size).saturating_add(size);
        Ok(info)
    }

    fn with_object<T>(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(&mut MemObject, bool) -> Result<T, ObjectStoreError>,
    ) -> Result<T, ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        let locked = b.info.lock.is_some();
        let o = b.objects.get_mut(key).ok_or_else(|| no_key(bucket, key))?;
        f(o, locked)
    }
}

fn no_bucket(bucket: &str) -> ObjectStoreError {
    ObjectStoreError::NoSuchBucket {
        bucket: bucket.into(),
    }
}

fn no_key(bucket: &str, key: &str) -> ObjectStoreError {
    ObjectStoreError::NoSuchKey {
        bucket: bucket.into(),
        key: key.into(),
    }
}

fn no_upload(upload_id: &str) -> ObjectStoreError {
    ObjectStoreError::NoSuchUpload {
        upload_id: upload_id.into(),
    }
}

/// Reader over a range of shared segments.
struct SegReader {
    data: Data,
    seg: usize,
    off: usize,
    remaining: u64,
}

impl SegReader {
    fn new(data: Data, start: u64, len: u64) -> Self {
        let mut seg = 0;
        let mut skip = start;
        while let Some(s) = data.get(seg) {
            let l = u64::try_from(s.len()).unwrap_or(u64::MAX);
            if skip < l {
                break;
            }
            skip -= l;
            seg += 1;
        }
        Self {
            data,
            seg,
            off: usize::try_from(skip).unwrap_or(usize::MAX),
            remaining: len,
        }
    }
}

impl Read for SegReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each iteration moves to the next segment or returns.
        loop {
            if self.remaining == 0 || buf.is_empty() {
                return Ok(0);
            }
            let Some(s) = self.data.get(self.seg) else {
                return Ok(0);
            };
            if self.off >= s.len() {
                self.seg += 1;
                self.off = 0;
                continue;
            }
            let avail = &s[self.off..];
            let want = usize::try_from(self.remaining).unwrap_or(usize::MAX);
            let n = avail.len().min(buf.len()).min(want);
            buf[..n].copy_from_slice(&avail[..n]);
            self.off += n;
            self.remaining -= u64::try_from(n).unwrap_or(0);
            return Ok(n);
        }
    }
}

fn new_upload_id(bucket: &str, key: &str, generation: u64) -> String {
    use md5::{Digest, Md5};
    use std::hash::{BuildHasher, RandomState};
    let mut h = Md5::new();
    h.update(bucket.as_bytes());
    h.update(key.as_bytes());
    h.update(generation.to_le_bytes());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(nanos.to_le_bytes());
    // RandomState is seeded from the OS: makes ids unguessable enough for a test store.
    h.update(RandomState::new().hash_one(generation).to_le_bytes());
    crate::parse::hex(&h.finalize())
}

impl ObjectStore for MemStore {
    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ObjectStoreError> {
        Ok(self
            .lock()?
            .buckets
            .values()
            .map(|b| b.info.clone())
            .collect())
    }

    fn create_bucket(
        &self,
        bucket: &str,
        opts: &CreateBucketOptions,
    ) -> Result<BucketInfo, ObjectStoreError> {
        crate::parse::validate_bucket_name(bucket).map_err(|e| {
            ObjectStoreError::InvalidBucketName {
                bucket: bucket.into(),
                reason: e.to_string(),
            }
        })?;
        let mut st = self.lock()?;
        if let Some(b) = st.buckets.get(bucket) {
            return Err(if b.info.owner == opts.owner {
                ObjectStoreError::BucketAlreadyOwnedByYou {
                    bucket: bucket.into(),
                }
            } else {
                ObjectStoreError::BucketAlreadyExists {
                    bucket: bucket.into(),
                }
            });
        }
        let info = BucketInfo {
            name: bucket.to_owned(),
            created: SystemTime::now(),
            owner: opts.owner.clone(),
            lock: opts.object_lock.then(BucketLockConfig::default),
        };
        st.buckets.insert(
            bucket.to_owned(),
            MemBucket {
                info: info.clone(),
                objects: BTreeMap::new(),
                uploads: BTreeMap::new(),
            },
        );
        Ok(info)
    }

    fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        if !b.objects.is_empty() || !b.uploads.is_empty() {
            return Err(ObjectStoreError::BucketNotEmpty {
                bucket: bucket.into(),
            });
        }
        st.buckets.remove(bucket);
        Ok(())
    }

    fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, ObjectStoreError> {
        let st = self.lock()?;
        st.buckets
            .get(bucket)
            .map(|b| b.info.clone())
            .ok_or_else(|| no_bucket(bucket))
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        body: &mut ObjectBody,
    ) -> Result<ObjectInfo, ObjectStoreError> {
        // Fail fast before reading a large body into a bucket that does not exist.
        self.ensure_bucket(bucket)?;
        if let Some(len) = body.limits().expected_len {
            self.check_quota(self.used_bytes(), len)?;
        }
        let (segs, digest) = read_body(body)?;
        let mut st = self.lock()?;
        let new = NewData {
            data: Arc::new(segs),
            etag: digest.etag(),
            parts_count: None,
        };
        self.commit(&mut st, bucket, key, opts, new)
    }

    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<GetObject, ObjectStoreError> {
        let st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        let o = b.objects.get(key).ok_or_else(|| no_key(bucket, key))?;
        let size = o.info.size;
        let range = match range {
            Some(r) => resolve_range(r, size)?,
            None => 0..size,
        };
        Ok(GetObject {
            info: o.info.clone(),
            reader: Box::new(SegReader::new(
                Arc::clone(&o.data),
                range.start,
                range.end - range.start,
            )),
            range,
        })
    }

    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectStoreError> {
        let st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        b.objects
            .get(key)
            .map(|o| o.info.clone())
            .ok_or_else(|| no_key(bucket, key))
    }

    fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        bypass_governance: bool,
    ) -> Result<(), ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        let Some(o) = b.objects.get(key) else {
            return Ok(());
        };
        if let Some(reason) = protection(&o.info, bypass_governance) {
            return Err(ObjectStoreError::WormProtected { reason });
        }
        let size = o.info.size;
        b.objects.remove(key);
        st.used = st.used.saturating_sub(size);
        Ok(())
    }

    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        metadata: &MetadataDirective,
    ) -> Result<ObjectInfo, ObjectStoreError> {
        let mut st = self.lock()?;
        let src = st
            .buckets
            .get(src_bucket)
            .ok_or_else(|| no_bucket(src_bucket))?
            .objects
            .get(src_key)
            .ok_or_else(|| no_key(src_bucket, src_key))?
            .clone();
        let opts = match metadata {
            MetadataDirective::Copy => PutOptions {
                content_type: src.info.content_type.clone(),
                user_meta: src.info.user_meta.clone(),
                retention: None,
                legal_hold: false,
            },
            MetadataDirective::Replace(o) => o.clone(),
        };
        // Shares the segments: no data is copied.
        let new = NewData {
            data: src.data,
            etag: src.info.etag,
            parts_count: src.info.parts_count,
        };
        self.commit(&mut st, dst_bucket, dst_key, &opts, new)
    }

    fn list_objects(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, ObjectStoreError> {
        let st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        let mut q = query.clone();
        q.max_keys = q.max_keys.min(MAX_LIST_KEYS);
        let from = match &q.start_after {
            Some(sa) if sa.as_str() >= q.prefix.as_str() => Bound::Excluded(sa.clone()),
            _ => Bound::Included(q.prefix.clone()),
        };
        let iter = b
            .objects
            .range::<String, _>((from, Bound::Unbounded))
            .map(|(k, o)| ListEntry {
                key: k.clone(),
                size: o.info.size,
                etag: o.info.etag.clone(),
                last_modified: o.info.last_modified,
            });
        Ok(paginate(iter, &q))
    }

    fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<String, ObjectStoreError> {
        let generation = self.next_generation();
        let mut st = self.lock()?;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        if (opts.retention.is_some() || opts.legal_hold) && b.info.lock.is_none() {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.into(),
            });
        }
        let id = new_upload_id(bucket, key, generation);
        b.uploads.insert(
            id.clone(),
            MemUpload {
                key: key.to_owned(),
                opts: opts.clone(),
                initiated: SystemTime::now(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut ObjectBody,
    ) -> Result<PartInfo, ObjectStoreError> {
        {
            let st = self.lock()?;
            let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
            let u = b
                .uploads
                .get(upload_id)
                .ok_or_else(|| no_upload(upload_id))?;
            if u.key != key {
                return Err(no_upload(upload_id));
            }
            if let Some(len) = body.limits().expected_len {
                self.check_quota(st.used, len)?;
            }
        }
        let (segs, digest) = read_body(body)?;
        let mut st = self.lock()?;
        let used = st.used;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        // The upload may have been completed or aborted while the body was read.
        let u = b
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| no_upload(upload_id))?;
        let old = u.parts.get(&part_number).map_or(0, |(p, _)| p.size);
        let new_used = used.saturating_sub(old).saturating_add(digest.size);
        if let Some(q) = self.quota
            && new_used > q
        {
            return Err(ObjectStoreError::QuotaExceeded {
                detail: format!(
                    "part of {} bytes would exceed the quota of {q} bytes",
                    digest.size
                ),
            });
        }
        let info = PartInfo {
            part_number,
            etag: digest.etag(),
            size: digest.size,
            last_modified: SystemTime::now(),
        };
        u.parts.insert(part_number, (info.clone(), Arc::new(segs)));
        st.used = new_used;
        Ok(info)
    }

    fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectInfo, ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        let u = b
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_upload(upload_id))?;
        let chosen = check_completion(parts, |n| u.parts.get(&n).map(|(p, _)| p))?;
        let etag = multipart_etag(chosen.iter().map(|p| p.etag.as_str()))?;
        // Join the parts' segments: no data is copied.
        let mut segs = Vec::new();
        let mut part_bytes = 0u64;
        for p in parts {
            if let Some((_, d)) = u.parts.get(&p.part_number) {
                segs.extend(d.iter().cloned());
            }
        }
        for (p, _) in u.parts.values() {
            part_bytes = part_bytes.saturating_add(p.size);
        }
        let opts = u.opts.clone();
        let count = u32::try_from(parts.len()).map_err(|_| ObjectStoreError::InvalidPartOrder)?;
        // The parts' bytes move to the object: release them before commit accounts the object.
        st.used = st.used.saturating_sub(part_bytes);
        let new = NewData {
            data: Arc::new(segs),
            etag,
            parts_count: Some(count),
        };
        match self.commit(&mut st, bucket, key, &opts, new) {
            Ok(info) => {
                if let Some(b) = st.buckets.get_mut(bucket) {
                    b.uploads.remove(upload_id);
                }
                Ok(info)
            }
            Err(e) => {
                st.used = st.used.saturating_add(part_bytes);
                Err(e)
            }
        }
    }

    fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        if b.uploads.get(upload_id).is_none_or(|u| u.key != key) {
            return Err(no_upload(upload_id));
        }
        let freed = b.uploads.remove(upload_id).map_or(0, |u| {
            u.parts
                .values()
                .map(|(p, _)| p.size)
                .fold(0, u64::saturating_add)
        });
        st.used = st.used.saturating_sub(freed);
        Ok(())
    }

    fn list_multipart_uploads(
        &self,
        bucket: &str,
        query: &UploadQuery,
    ) -> Result<UploadPage, ObjectStoreError> {
        let st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        let all = b.uploads.iter().map(|(id, u)| UploadInfo {
            key: u.key.clone(),
            upload_id: id.clone(),
            initiated: u.initiated,
        });
        Ok(crate::listing::paginate_uploads(all, query))
    }

    fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: u32,
        max_parts: usize,
    ) -> Result<PartPage, ObjectStoreError> {
        let st = self.lock()?;
        let b = st.buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        let u = b
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_upload(upload_id))?;
        let max = max_parts.min(MAX_LIST_KEYS);
        let mut parts: Vec<PartInfo> = u
            .parts
            .range((Bound::Excluded(part_number_marker), Bound::Unbounded))
            .take(max.saturating_add(1))
            .map(|(_, (p, _))| p.clone())
            .collect();
        let is_truncated = parts.len() > max;
        parts.truncate(max);
        Ok(PartPage {
            parts,
            is_truncated,
        })
    }

    fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<(), ObjectStoreError> {
        self.with_object(bucket, key, |o, locked| {
            if !locked {
                return Err(ObjectStoreError::ObjectLockNotEnabled { bucket: bucket.into() });
            }
            let now = SystemTime::now();
            if let Some(new) = retention
                && new.retain_until <= now
            {
                return Err(ObjectStoreError::InvalidArgument {
                    detail: "the retain-until date must be in the future".into(),
                });
            }
            if let Some(cur) = o.info.retention.filter(|c| c.retain_until > now) {
                let weakens = match retention {
                    None => true,
                    Some(new) => {
                        new.retain_until < cur.retain_until
                            || (cur.mode == RetentionMode::Compliance && new.mode == RetentionMode::Governance)
                    }
                };
                if weakens {
                    match cur.mode {
                        RetentionMode::Compliance => {
                            return Err(ObjectStoreError::WormProtected {
                                reason: format!(
                                    "COMPLIANCE retention of {key:?} cannot be shortened or removed before it ends"
                                ),
                            });
                        }
                        RetentionMode::Governance if !bypass_governance => {
                            return Err(ObjectStoreError::WormProtected {
                                reason: format!(
                                    "GOVERNANCE retention of {key:?} can only be shortened with x-amz-bypass-governance-retention"
                                ),
                            });
                        }
                        RetentionMode::Governance => {}
                    }
                }
            }
            o.info.retention = retention;
            Ok(())
        })
    }

    fn get_object_retention(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Retention>, ObjectStoreError> {
        self.with_object(bucket, key, |o, locked| {
            if locked {
                Ok(o.info.retention)
            } else {
                Err(ObjectStoreError::ObjectLockNotEnabled {
                    bucket: bucket.into(),
                })
            }
        })
    }

    fn put_object_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        on: bool,
    ) -> Result<(), ObjectStoreError> {
        self.with_object(bucket, key, |o, locked| {
            if !locked {
                return Err(ObjectStoreError::ObjectLockNotEnabled {
                    bucket: bucket.into(),
                });
            }
            o.info.legal_hold = on;
            Ok(())
        })
    }

    fn get_object_legal_hold(&self, bucket: &str, key: &str) -> Result<bool, ObjectStoreError> {
        self.with_object(bucket, key, |o, locked| {
            if locked {
                Ok(o.info.legal_hold)
            } else {
                Err(ObjectStoreError::ObjectLockNotEnabled {
                    bucket: bucket.into(),
                })
            }
        })
    }

    fn put_bucket_lock_config(
        &self,
        bucket: &str,
        config: &BucketLockConfig,
    ) -> Result<(), ObjectStoreError> {
        let mut st = self.lock()?;
        let b = st
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| no_bucket(bucket))?;
        match &mut b.info.lock {
            Some(l) => {
                *l = *config;
                Ok(())
            }
            None => Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BodyLimits;
    use crate::store::DefaultRetention;

    fn body(data: &[u8]) -> ObjectBody {
        ObjectBody::from_bytes(Bytes::copy_from_slice(data), BodyLimits::max(1 << 30))
    }

    fn owner() -> CreateBucketOptions {
        CreateBucketOptions {
            owner: "A".into(),
            object_lock: false,
        }
    }

    fn read_all(s: &MemStore, b: &str, k: &str, r: Option<RangeRequest>) -> Vec<u8> {
        let mut v = Vec::new();
        if let Ok(mut g) = s.get_object(b, k, r) {
            let _ = g.reader.read_to_end(&mut v);
        }
        v
    }

    #[test]
    fn bucket_lifecycle() {
        let s = MemStore::new();
        assert!(s.create_bucket("bkt", &owner()).is_ok());
        assert!(matches!(
            s.create_bucket("bkt", &owner()),
            Err(ObjectStoreError::BucketAlreadyOwnedByYou { .. })
        ));
        let other = CreateBucketOptions {
            owner: "B".into(),
            object_lock: false,
        };
        assert!(matches!(
            s.create_bucket("bkt", &other),
            Err(ObjectStoreError::BucketAlreadyExists { .. })
        ));
        assert!(
            s.put_object("bkt", "k", &PutOptions::default(), &mut body(b"x"))
                .is_ok()
        );
        assert!(matches!(
            s.delete_bucket("bkt"),
            Err(ObjectStoreError::BucketNotEmpty { .. })
        ));
        assert!(s.delete_object("bkt", "k", false).is_ok());
        assert!(s.delete_bucket("bkt").is_ok());
        assert!(matches!(
            s.head_bucket("bkt"),
            Err(ObjectStoreError::NoSuchBucket { .. })
        ));
    }

    #[test]
    fn put_get_range_copy() {
        let s = MemStore::new();
        let _ = s.create_bucket("bkt", &owner());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let info = s.put_object("bkt", "a/../b", &PutOptions::default(), &mut body(&data));
        assert_eq!(info.map(|i| i.size).ok(), Some(3_000_000));
        assert_eq!(read_all(&s, "bkt", "a/../b", None), data);
        let r = Some(RangeRequest::FromTo {
            first: 1_048_570,
            last: Some(1_048_590),
        });
        assert_eq!(
            read_all(&s, "bkt", "a/../b", r),
            data[1_048_570..=1_048_590].to_vec()
        );
        assert_eq!(
            read_all(&s, "bkt", "a/../b", Some(RangeRequest::Suffix(5))),
            data[data.len() - 5..].to_vec()
        );
        assert!(matches!(
            s.get_object(
                "bkt",
                "a/../b",
                Some(RangeRequest::FromTo {
                    first: 5_000_000,
                    last: None
                })
            ),
            Err(ObjectStoreError::InvalidRange { .. })
        ));
        assert!(
            s.copy_object("bkt", "a/../b", "bkt", "c", &MetadataDirective::Copy)
                .is_ok()
        );
        assert_eq!(read_all(&s, "bkt", "c", None), data);
        // "b" was never written: the key is opaque, not a path.
        assert!(matches!(
            s.head_object("bkt", "b"),
            Err(ObjectStoreError::NoSuchKey { .. })
        ));
    }

    #[test]
    fn failed_body_stores_nothing() {
        let s = MemStore::new();
        let _ = s.create_bucket("bkt", &owner());
        let mut b = ObjectBody::from_bytes(
            Bytes::from_static(b"abc"),
            BodyLimits {
                expected_len: Some(4),
                max_len: 10,
                content_md5: None,
            },
        );
        assert!(matches!(
            s.put_object("bkt", "k", &PutOptions::default(), &mut b),
            Err(ObjectStoreError::IncompleteBody { .. })
        ));
        assert_eq!(s.object_count(), 0);
        assert_eq!(s.used_bytes(), 0);
    }

    #[test]
    fn multipart_joins_parts() {
        let s = MemStore::new();
        let _ = s.create_bucket("bkt", &owner());
        let id = s
            .create_multipart_upload("bkt", "big", &PutOptions::default())
            .unwrap_or_default();
        let p1 = vec![1u8; usize::try_from(crate::store::MIN_PART_SIZE).unwrap_or(0)];
        let e1 = s
            .upload_part("bkt", "big", &id, 1, &mut body(&p1))
            .map(|p| p.etag)
            .unwrap_or_default();
        let e2 = s
            .upload_part("bkt", "big", &id, 2, &mut body(b"tail"))
            .map(|p| p.etag)
            .unwrap_or_default();
        let page = s.list_parts("bkt", "big", &id, 0, 1000).unwrap_or_default();
        assert_eq!(page.parts.len(), 2);
        let parts = [
            CompletedPart {
                part_number: 1,
                etag: e1,
            },
            CompletedPart {
                part_number: 2,
                etag: e2,
            },
        ];
        let info = s.complete_multipart_upload("bkt", "big", &id, &parts);
        let info = info.ok();
        assert!(info.as_ref().is_some_and(|i| i.etag.ends_with("-2")));
        let mut want = p1.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(read_all(&s, "bkt", "big", None), want);
        assert_eq!(s.used_bytes(), u64::try_from(want.len()).unwrap_or(0));
        assert!(matches!(
            s.complete_multipart_upload("bkt", "big", &id, &parts),
            Err(ObjectStoreError::NoSuchUpload { .. })
        ));
    }

    #[test]
    fn worm_blocks_delete_and_overwrite() {
        let s = MemStore::new();
        let lock = CreateBucketOptions {
            owner: "A".into(),
            object_lock: true,
        };
        let _ = s.create_bucket("lkb", &lock);
        let _ = s.put_object("lkb", "k", &PutOptions::default(), &mut body(b"v1"));
        let until = SystemTime::now() + Duration::from_secs(3600);
        let gov = Retention {
            mode: RetentionMode::Governance,
            retain_until: until,
        };
        assert!(s.put_object_retention("lkb", "k", Some(gov), false).is_ok());
        assert!(matches!(
            s.delete_object("lkb", "k", false),
            Err(ObjectStoreError::WormProtected { .. })
        ));
        assert!(matches!(
            s.put_object("lkb", "k", &PutOptions::default(), &mut body(b"v2")),
            Err(ObjectStoreError::WormProtected { .. })
        ));
        assert!(s.put_object_retention("lkb", "k", None, false).is_err());
        assert!(s.put_object_retention("lkb", "k", None, true).is_ok());
        let comp = Retention {
            mode: RetentionMode::Compliance,
            retain_until: until,
        };
        assert!(
            s.put_object_retention("lkb", "k", Some(comp), false)
                .is_ok()
        );
        assert!(s.put_object_retention("lkb", "k", None, true).is_err());
        assert!(s.delete_object("lkb", "k", true).is_err());
        // Legal hold on an unlocked bucket is refused.
        let _ = s.create_bucket("plain", &owner());
        let _ = s.put_object("plain", "k", &PutOptions::default(), &mut body(b"x"));
        assert!(matches!(
            s.put_object_legal_hold("plain", "k", true),
            Err(ObjectStoreError::ObjectLockNotEnabled { .. })
        ));
        // Default retention applies to new objects.
        let cfg = BucketLockConfig {
            default_retention: Some(DefaultRetention {
                mode: RetentionMode::Governance,
                days: 1,
            }),
        };
        assert!(s.put_bucket_lock_config("lkb", &cfg).is_ok());
        let info = s.put_object("lkb", "new", &PutOptions::default(), &mut body(b"x"));
        assert!(info.is_ok_and(|i| i.retention.is_some()));
    }

    #[test]
    fn quota() {
        let s = MemStore::with_quota(10);
        let _ = s.create_bucket("bkt", &owner());
        assert!(
            s.put_object("bkt", "a", &PutOptions::default(), &mut body(b"12345678"))
                .is_ok()
        );
        assert!(matches!(
            s.put_object("bkt", "b", &PutOptions::default(), &mut body(b"12345")),
            Err(ObjectStoreError::QuotaExceeded { .. })
        ));
        // Overwriting frees the old size first.
        assert!(
            s.put_object("bkt", "a", &PutOptions::default(), &mut body(b"1234567890"))
                .is_ok()
        );
    }
}
