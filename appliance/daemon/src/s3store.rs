//! The S3 API's storage and authorization, over the appliance's VDEs and state database.
//!
//! A bucket is a VDE container of kind bucket; its S3-only attributes (owning key, object lock,
//! default retention) are in the daemon's container record. Objects, multipart uploads,
//! retention and legal holds are the VDE's own. Buckets created through S3 go to the default
//! VDE (`s3.default_vde`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dw_api::types::CreateContainerRequest;
use dw_s3::store::{
    BucketInfo, BucketLockConfig, CompletedPart, CreateBucketOptions, DefaultRetention, GetObject,
    ListEntry, ListPage, ListQuery, MAX_LIST_KEYS, MetadataDirective, ObjectInfo, PartInfo,
    PartPage, PutOptions, RangeRequest, Retention, RetentionMode, UploadInfo, UploadPage,
    UploadQuery,
};
use dw_s3::{Access, Authorizer, ObjectBody, ObjectStore, ObjectStoreError};
use dw_vde::VdeError;
use parking_lot::Mutex;

use crate::appliance::{Appliance, OpenVde};
use crate::error::OpError;
use crate::state::{CONTAINERS, ContainerRecord, GRANTS, S3_KEYS, S3KeyRecord, StateDb};

/// Retention options of multipart uploads in progress, applied at completion. Bounded: beyond
/// this many, the oldest entries are dropped (and those uploads complete without the retention
/// they asked for, which the bucket default then covers).
const MAX_PENDING_UPLOAD_OPTS: usize = 10_000;

/// The [`ObjectStore`] of `dwd`.
pub struct VdeStore {
    app: Arc<Appliance>,
    upload_opts: Mutex<HashMap<String, PutOptions>>,
}

impl std::fmt::Debug for VdeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VdeStore").finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> ObjectStoreError {
    ObjectStoreError::Internal {
        detail: e.to_string(),
    }
}

fn op_err(e: OpError, bucket: &str) -> ObjectStoreError {
    match e {
        OpError::NotFound(_) => ObjectStoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        },
        OpError::Invalid(detail) => ObjectStoreError::InvalidArgument { detail },
        OpError::Conflict(_) => ObjectStoreError::BucketNotEmpty {
            bucket: bucket.to_owned(),
        },
        OpError::Forbidden(reason) => ObjectStoreError::WormProtected { reason },
        OpError::NoSpace(detail) => ObjectStoreError::QuotaExceeded { detail },
        // Locked or unavailable storage is a server-side condition: 500 with a logged reason.
        e => internal(e),
    }
}

fn vde_err(e: VdeError, bucket: &str, key: &str) -> ObjectStoreError {
    match e {
        VdeError::NoSuchContainer(_) => ObjectStoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        },
        VdeError::NoSuchObject { .. } => ObjectStoreError::NoSuchKey {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        VdeError::NoSuchUpload(upload_id) => ObjectStoreError::NoSuchUpload { upload_id },
        VdeError::Retained(reason) => ObjectStoreError::WormProtected { reason },
        VdeError::QuotaExceeded(detail) | VdeError::NoSpace(detail) => {
            ObjectStoreError::QuotaExceeded { detail }
        }
        VdeError::ContainerNotEmpty(_) => ObjectStoreError::BucketNotEmpty {
            bucket: bucket.to_owned(),
        },
        VdeError::Invalid(detail) | VdeError::Policy(detail) => {
            ObjectStoreError::InvalidArgument { detail }
        }
        VdeError::OutOfRange { .. } => ObjectStoreError::InvalidArgument {
            detail: e.to_string(),
        },
        e => internal(e),
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_owned()
}

fn ms_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mode_to_vde(m: RetentionMode) -> dw_vde::policy::RetentionMode {
    match m {
        RetentionMode::Governance => dw_vde::policy::RetentionMode::Governance,
        RetentionMode::Compliance => dw_vde::policy::RetentionMode::Compliance,
    }
}

fn mode_from_vde(m: dw_vde::policy::RetentionMode) -> RetentionMode {
    match m {
        dw_vde::policy::RetentionMode::Governance => RetentionMode::Governance,
        dw_vde::policy::RetentionMode::Compliance => RetentionMode::Compliance,
    }
}

fn object_info(o: &dw_vde::ObjectInfo) -> ObjectInfo {
    ObjectInfo {
        key: o.key.clone(),
        size: o.size,
        etag: unquote(&o.etag),
        content_type: Some(o.content_type.clone()),
        user_meta: o.user_meta.iter().cloned().collect(),
        created: ms_time(o.created_ms),
        last_modified: ms_time(o.created_ms),
        version: o.version,
        parts_count: o
            .etag
            .trim_matches('"')
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok()),
        retention: (o.retain_until > 0).then(|| Retention {
            mode: mode_from_vde(o.retention_mode),
            retain_until: UNIX_EPOCH + Duration::from_secs(o.retain_until),
        }),
        legal_hold: o.legal_hold,
    }
}

fn lock_config(r: &ContainerRecord) -> Option<BucketLockConfig> {
    r.object_lock.then(|| BucketLockConfig {
        default_retention: r.default_retention.as_ref().map(|(m, d)| DefaultRetention {
            mode: if m == "compliance" {
                RetentionMode::Compliance
            } else {
                RetentionMode::Governance
            },
            days: *d,
        }),
    })
}

fn bucket_info(r: &ContainerRecord) -> BucketInfo {
    BucketInfo {
        name: r.name.clone(),
        created: UNIX_EPOCH + Duration::from_secs(r.created),
        owner: r.owner.clone().unwrap_or_default(),
        lock: lock_config(r),
    }
}

/// Removes every grant on `bucket` (when it is deleted; a new bucket of that name starts clean).
///
/// # Errors
/// State database errors.
pub fn forget_bucket_grants(db: &StateDb, bucket: &str) -> Result<(), crate::state::StateError> {
    for (k, _) in db.list::<String>(GRANTS)? {
        if k.rsplit_once('/').is_some_and(|(_, b)| b == bucket) {
            db.remove(GRANTS, &k)?;
        }
    }
    Ok(())
}

impl VdeStore {
    /// Over `app`.
    #[must_use]
    pub fn new(app: Arc<Appliance>) -> Self {
        Self {
            app,
            upload_opts: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, bucket: &str) -> Result<ContainerRecord, ObjectStoreError> {
        match self.app.db.get::<ContainerRecord>(CONTAINERS, bucket) {
            Ok(Some(r)) if r.kind == "bucket" => Ok(r),
            Ok(_) => Err(ObjectStoreError::NoSuchBucket {
                bucket: bucket.to_owned(),
            }),
            Err(e) => Err(internal(e)),
        }
    }

    fn vde(&self, bucket: &str) -> Result<(ContainerRecord, Arc<OpenVde>), ObjectStoreError> {
        let r = self.record(bucket)?;
        let v = self.app.open_vde(&r.vde).map_err(internal)?;
        Ok((r, v))
    }

    /// Runs `f` on the bucket's VDE, mapping VDE errors for this bucket and key.
    fn run<T>(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(&dw_vde::Vde) -> Result<T, VdeError>,
    ) -> Result<T, ObjectStoreError> {
        let (_, v) = self.vde(bucket)?;
        v.with(|vde| Ok(f(vde)))
            .map_err(internal)?
            .map_err(|e| vde_err(e, bucket, key))
    }

    /// Retention to give a new object: the one asked for, else the bucket default.
    fn retention_for(
        r: &ContainerRecord,
        asked: Option<Retention>,
    ) -> Option<(u64, dw_vde::policy::RetentionMode)> {
        if let Some(x) = asked {
            return Some((secs(x.retain_until), mode_to_vde(x.mode)));
        }
        let d = lock_config(r)?.default_retention?;
        let until = crate::util::now_secs() + u64::from(d.days) * 86_400;
        Some((until, mode_to_vde(d.mode)))
    }
}

impl ObjectStore for VdeStore {
    fn list_buckets(&self) -> Result<Vec<BucketInfo>, ObjectStoreError> {
        let recs = self.app.container_records().map_err(internal)?;
        Ok(recs
            .iter()
            .filter(|r| r.kind == "bucket" && self.app.open_vde(&r.vde).is_ok())
            .map(bucket_info)
            .collect())
    }

    fn create_bucket(
        &self,
        bucket: &str,
        opts: &CreateBucketOptions,
    ) -> Result<BucketInfo, ObjectStoreError> {
        if let Ok(Some(r)) = self.app.db.get::<ContainerRecord>(CONTAINERS, bucket) {
            return Err(if r.owner.as_deref() == Some(opts.owner.as_str()) {
                ObjectStoreError::BucketAlreadyOwnedByYou {
                    bucket: bucket.to_owned(),
                }
            } else {
                ObjectStoreError::BucketAlreadyExists {
                    bucket: bucket.to_owned(),
                }
            });
        }
        let req = CreateContainerRequest {
            name: bucket.to_owned(),
            kind: "bucket".into(),
            vde: None,
            size_bytes: None,
            policy: None,
            record_size: None,
            owner: Some(opts.owner.clone()),
        };
        match self.app.create_container(&req, opts.object_lock) {
            Ok(_) => self.head_bucket(bucket),
            Err(OpError::Conflict(_)) => Err(ObjectStoreError::BucketAlreadyExists {
                bucket: bucket.to_owned(),
            }),
            Err(OpError::Invalid(reason)) => Err(ObjectStoreError::InvalidBucketName {
                bucket: bucket.to_owned(),
                reason,
            }),
            Err(e) => Err(op_err(e, bucket)),
        }
    }

    fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectStoreError> {
        self.record(bucket)?;
        let uploads = self.run(bucket, "", |v| v.list_uploads(bucket))?;
        if !uploads.is_empty() {
            return Err(ObjectStoreError::BucketNotEmpty {
                bucket: bucket.to_owned(),
            });
        }
        self.app
            .delete_container(bucket)
            .map_err(|e| op_err(e, bucket))
    }

    fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, ObjectStoreError> {
        let (r, _) = self.vde(bucket)?;
        Ok(bucket_info(&r))
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
        body: &mut ObjectBody,
    ) -> Result<ObjectInfo, ObjectStoreError> {
        let (r, v) = self.vde(bucket)?;
        if (opts.retention.is_some() || opts.legal_hold) && !r.object_lock {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.to_owned(),
            });
        }
        let vopts = dw_vde::PutOptions {
            content_type: opts.content_type.clone(),
            user_meta: opts
                .user_meta
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            policy: None,
            content_md5: None,
            retain_until: Self::retention_for(&r, opts.retention),
            legal_hold: opts.legal_hold,
        };
        let verdict = body.verdict();
        let out = v
            .with(|vde| Ok(vde.put_object(bucket, key, &vopts, body)))
            .map_err(internal)?;
        match out {
            Ok(o) => Ok(object_info(&o)),
            // The body's own verdict (truncated, too large, bad digest) wins over the VDE's
            // report of a failed read.
            Err(e) => Err(verdict
                .failure()
                .map_or_else(|| vde_err(e, bucket, key), Into::into)),
        }
    }

    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<GetObject, ObjectStoreError> {
        // Resolve the range against the current size, then open that version's range; if the
        // object was replaced in between, resolve again (bounded).
        for _ in 0..4 {
            let head = self.run(bucket, key, |v| v.head_object(bucket, key))?;
            let (r, vr) = match range {
                None => (0..head.size, None),
                Some(rq) => {
                    let r = dw_s3::parse::resolve_range(rq, head.size)?;
                    (r.clone(), Some((r.start, r.end - r.start)))
                }
            };
            let (info, reader) = self.run(bucket, key, |v| v.get_object(bucket, key, vr))?;
            if info.version != head.version || info.size != head.size {
                continue;
            }
            return Ok(GetObject {
                info: object_info(&info),
                range: r,
                reader: Box::new(reader),
            });
        }
        Err(internal("the object kept changing while it was opened"))
    }

    fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectStoreError> {
        self.run(bucket, key, |v| v.head_object(bucket, key))
            .map(|o| object_info(&o))
    }

    fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        bypass_governance: bool,
    ) -> Result<(), ObjectStoreError> {
        match self.run(bucket, key, |v| {
            v.delete_object(bucket, key, bypass_governance)
        }) {
            Err(ObjectStoreError::NoSuchKey { .. }) => Ok(()),
            other => other,
        }
    }

    fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        metadata: &MetadataDirective,
    ) -> Result<ObjectInfo, ObjectStoreError> {
        let (_, sv) = self.vde(src_bucket)?;
        let (dr, dv) = self.vde(dst_bucket)?;
        if sv.id != dv.id {
            return Err(ObjectStoreError::NotSupported {
                what: "copying between buckets on different VDEs".into(),
            });
        }
        let meta = match metadata {
            MetadataDirective::Copy => None,
            MetadataDirective::Replace(o) => Some((
                o.content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                o.user_meta
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            )),
        };
        let info = self
            .run(dst_bucket, dst_key, |v| {
                v.copy_object(src_bucket, src_key, dst_bucket, dst_key, meta.as_ref())
            })
            .map_err(|e| match e {
                ObjectStoreError::NoSuchKey { .. } => ObjectStoreError::NoSuchKey {
                    bucket: src_bucket.to_owned(),
                    key: src_key.to_owned(),
                },
                e => e,
            })?;
        // The copy is a new object: the destination bucket's default retention applies.
        if let Some((until, mode)) = Self::retention_for(&dr, None) {
            self.run(dst_bucket, dst_key, |v| {
                v.set_retention(dst_bucket, dst_key, until, mode, false)
            })?;
            return self.head_object(dst_bucket, dst_key);
        }
        Ok(object_info(&info))
    }

    fn list_objects(&self, bucket: &str, query: &ListQuery) -> Result<ListPage, ObjectStoreError> {
        self.record(bucket)?;
        if query.max_keys == 0 {
            return Ok(ListPage::default());
        }
        let opts = dw_vde::ListOptions {
            prefix: query.prefix.clone(),
            delimiter: query.delimiter.clone(),
            start_after: query.start_after.clone(),
            max_keys: query.max_keys.min(MAX_LIST_KEYS),
        };
        let page = self.run(bucket, "", |v| v.list_objects(bucket, &opts))?;
        Ok(ListPage {
            objects: page
                .objects
                .iter()
                .map(|o| ListEntry {
                    key: o.key.clone(),
                    size: o.size,
                    etag: unquote(&o.etag),
                    last_modified: ms_time(o.created_ms),
                })
                .collect(),
            common_prefixes: page.common_prefixes,
            is_truncated: page.truncated,
            next_marker: page.next_start_after,
        })
    }

    fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<String, ObjectStoreError> {
        let (r, _) = self.vde(bucket)?;
        if (opts.retention.is_some() || opts.legal_hold) && !r.object_lock {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.to_owned(),
            });
        }
        let meta: Vec<(String, String)> = opts
            .user_meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let u = self.run(bucket, key, |v| {
            v.create_upload(bucket, key, opts.content_type.clone(), meta)
        })?;
        if opts.retention.is_some() || opts.legal_hold {
            let mut m = self.upload_opts.lock();
            if m.len() >= MAX_PENDING_UPLOAD_OPTS
                && let Some(k) = m.keys().next().cloned()
            {
                m.remove(&k);
            }
            m.insert(u.upload_id.clone(), opts.clone());
        }
        Ok(u.upload_id)
    }

    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &mut ObjectBody,
    ) -> Result<PartInfo, ObjectStoreError> {
        self.check_upload(bucket, key, upload_id)?;
        let verdict = body.verdict();
        let (_, v) = self.vde(bucket)?;
        let out = v
            .with(|vde| Ok(vde.put_part(bucket, upload_id, part_number, body, None)))
            .map_err(internal)?;
        match out {
            Ok(p) => Ok(PartInfo {
                part_number: p.number,
                etag: unquote(&p.etag),
                size: p.size,
                last_modified: SystemTime::now(),
            }),
            Err(e) => Err(verdict
                .failure()
                .map_or_else(|| vde_err(e, bucket, key), Into::into)),
        }
    }

    fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectInfo, ObjectStoreError> {
        self.check_upload(bucket, key, upload_id)?;
        let have: Vec<PartInfo> = self
            .run(bucket, key, |v| v.list_parts(bucket, upload_id))?
            .into_iter()
            .map(|p| PartInfo {
                part_number: p.number,
                etag: unquote(&p.etag),
                size: p.size,
                last_modified: SystemTime::now(),
            })
            .collect();
        dw_s3::parse::check_completion(parts, |n| have.iter().find(|p| p.part_number == n))?;
        let list: Vec<(u32, String)> = parts
            .iter()
            .map(|p| (p.part_number, format!("\"{}\"", unquote(&p.etag))))
            .collect();
        let info = self.run(bucket, key, |v| v.complete_upload(bucket, upload_id, &list))?;
        let (r, _) = self.vde(bucket)?;
        let opts = self.upload_opts.lock().remove(upload_id);
        let asked = opts.as_ref().and_then(|o| o.retention);
        if let Some((until, mode)) = Self::retention_for(&r, asked) {
            self.run(bucket, key, |v| {
                v.set_retention(bucket, key, until, mode, false)
            })?;
        }
        if opts.is_some_and(|o| o.legal_hold) {
            self.run(bucket, key, |v| v.set_legal_hold(bucket, key, true))?;
        }
        if r.object_lock {
            return self.head_object(bucket, key);
        }
        Ok(object_info(&info))
    }

    fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), ObjectStoreError> {
        self.check_upload(bucket, key, upload_id)?;
        self.upload_opts.lock().remove(upload_id);
        self.run(bucket, key, |v| v.abort_upload(bucket, upload_id))
    }

    fn list_multipart_uploads(
        &self,
        bucket: &str,
        query: &UploadQuery,
    ) -> Result<UploadPage, ObjectStoreError> {
        let all = self
            .run(bucket, "", |v| v.list_uploads(bucket))?
            .into_iter()
            .map(|u| UploadInfo {
                key: u.key,
                upload_id: u.upload_id,
                initiated: ms_time(u.created_ms),
            });
        Ok(dw_s3::listing::paginate_uploads(all, query))
    }

    fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number_marker: u32,
        max_parts: usize,
    ) -> Result<PartPage, ObjectStoreError> {
        self.check_upload(bucket, key, upload_id)?;
        let max = max_parts.min(MAX_LIST_KEYS);
        let mut parts: Vec<PartInfo> = self
            .run(bucket, key, |v| v.list_parts(bucket, upload_id))?
            .into_iter()
            .filter(|p| p.number > part_number_marker)
            .map(|p| PartInfo {
                part_number: p.number,
                etag: unquote(&p.etag),
                size: p.size,
                last_modified: SystemTime::now(),
            })
            .collect();
        parts.sort_by_key(|p| p.part_number);
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
        self.lock_enabled(bucket)?;
        let (until, mode) = match retention {
            Some(x) => (secs(x.retain_until), mode_to_vde(x.mode)),
            None => (0, dw_vde::policy::RetentionMode::Governance),
        };
        self.run(bucket, key, |v| {
            v.set_retention(bucket, key, until, mode, bypass_governance)
        })
    }

    fn get_object_retention(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Retention>, ObjectStoreError> {
        self.lock_enabled(bucket)?;
        Ok(self.head_object(bucket, key)?.retention)
    }

    fn put_object_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        on: bool,
    ) -> Result<(), ObjectStoreError> {
        self.lock_enabled(bucket)?;
        self.run(bucket, key, |v| v.set_legal_hold(bucket, key, on))
    }

    fn get_object_legal_hold(&self, bucket: &str, key: &str) -> Result<bool, ObjectStoreError> {
        self.lock_enabled(bucket)?;
        Ok(self.head_object(bucket, key)?.legal_hold)
    }

    fn put_bucket_lock_config(
        &self,
        bucket: &str,
        config: &BucketLockConfig,
    ) -> Result<(), ObjectStoreError> {
        let mut r = self.record(bucket)?;
        if !r.object_lock {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.to_owned(),
            });
        }
        r.default_retention = config.default_retention.map(|d| {
            (
                match d.mode {
                    RetentionMode::Governance => "governance".to_owned(),
                    RetentionMode::Compliance => "compliance".to_owned(),
                },
                d.days,
            )
        });
        self.app.db.put(CONTAINERS, bucket, &r).map_err(internal)
    }
}

impl VdeStore {
    /// The bucket's record, if object lock is enabled on it (S3 refuses lock operations
    /// otherwise).
    fn lock_enabled(&self, bucket: &str) -> Result<ContainerRecord, ObjectStoreError> {
        let (r, _) = self.vde(bucket)?;
        if !r.object_lock {
            return Err(ObjectStoreError::ObjectLockNotEnabled {
                bucket: bucket.to_owned(),
            });
        }
        Ok(r)
    }

    fn check_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), ObjectStoreError> {
        let uploads = self.run(bucket, key, |v| v.list_uploads(bucket))?;
        if uploads
            .iter()
            .any(|u| u.upload_id == upload_id && u.key == key)
        {
            Ok(())
        } else {
            Err(ObjectStoreError::NoSuchUpload {
                upload_id: upload_id.to_owned(),
            })
        }
    }
}

/// S3 keys and grants from the state database.
#[derive(Debug)]
pub struct DbAuth {
    db: Arc<StateDb>,
}

impl DbAuth {
    /// Over the state database.
    #[must_use]
    pub fn new(db: Arc<StateDb>) -> Self {
        Self { db }
    }
}

/// Parses `read`, `write`, `manage`.
///
/// # Errors
/// A message for anything else.
pub fn parse_access(s: &str) -> Result<Access, String> {
    match s {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "manage" => Ok(Access::Manage),
        _ => Err(format!("access {s:?} is not read, write, manage or none")),
    }
}

impl Authorizer for DbAuth {
    fn secret_key(&self, access_key: &str) -> Option<String> {
        self.db
            .get::<S3KeyRecord>(S3_KEYS, access_key)
            .ok()
            .flatten()
            .map(|k| k.secret)
    }

    fn can_create_buckets(&self, access_key: &str) -> bool {
        self.db
            .get::<S3KeyRecord>(S3_KEYS, access_key)
            .ok()
            .flatten()
            .is_some_and(|k| k.can_create_buckets || k.admin)
    }

    fn allowed(&self, access_key: &str, bucket: &BucketInfo, access: Access) -> bool {
        let Some(k) = self
            .db
            .get::<S3KeyRecord>(S3_KEYS, access_key)
            .ok()
            .flatten()
        else {
            return false;
        };
        if k.admin || (!bucket.owner.is_empty() && bucket.owner == access_key) {
            return true;
        }
        self.db
            .get::<String>(GRANTS, &format!("{access_key}/{}", bucket.name))
            .ok()
            .flatten()
            .and_then(|g| parse_access(&g).ok())
            .is_some_and(|level| level >= access)
    }
}
