//! Containers, and the objects of buckets: streaming put and get, listing, deletion with
//! retention and versioning, copies that share data, and multipart uploads whose completion
//! joins the parts without copying them.

use std::io::Read;
use std::sync::Arc;

use md5::{Digest, Md5};
use redb::{ReadableDatabase, ReadableTable};

use crate::accounting::RefChange;
use crate::engine::{Inner, Txn, VDE_SCOPE, now_ms, open_policy, seal_policy};
use crate::errors::VdeError;
use crate::policy::{self, Effective, Encryption, Level, Policy, RetentionMode};
use crate::records::{
    self, CONTAINER_IDS, CONTAINERS, ContainerRecord, EXTENTS, ExtentRecord, INODE_OBJECT,
    INODE_VOLUME, INODES, InodeRecord, KIND_BUCKET, KIND_VOLUME, LIVE, OBJ_COMPLIANCE,
    OBJ_DELETE_MARKER, OBJ_LEGAL_HOLD, OBJECTS, ObjectRecord, PARTS, PartRecord, UPLOADS,
    UploadRecord, WRITING, limits,
};

/// Default record size of buckets.
pub const BUCKET_RECORD: u32 = 128 * 1024;
/// Default record size of volumes: 16 KiB, as ZFS chose for zvols. 4 KiB records cost about
/// 110 bytes of metadata each (2.6 % of the data); 16 KiB ones a quarter of that, and smaller
/// client writes are read-modify-written within a record.
pub const VOLUME_RECORD: u32 = 16384;
/// Extents committed per transaction while streaming a large object.
const BATCH: usize = 256;

thread_local! {
    /// The record buffer objects are streamed through (reused: no allocation per put).
    static STREAM_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An inode whose data has been streamed and is waiting to be linked.
#[derive(Debug)]
pub(crate) struct Streamed {
    pub inode: u64,
    pub size: u64,
    pub stored: u64,
    pub md5: [u8; 16],
    /// Extents not yet in the metadata.
    pending: Vec<(u64, ExtentRecord)>,
    /// The inode record exists (listed in WRITING).
    created: bool,
    container: u64,
    record_size: u32,
}

impl Streamed {
    fn record(&self, refs: u32, live_refs: u32) -> InodeRecord {
        InodeRecord {
            kind: INODE_OBJECT,
            refs,
            live_refs,
            dead_refs: 0,
            container: self.container,
            size: self.size,
            stored: self.stored,
            record_size: self.record_size,
        }
    }
}

impl Txn<'_> {
    /// Records a streamed inode with no reference yet: its caller adds one in the same
    /// transaction (a live version with `adjust_refs`, or an upload's part record).
    pub(crate) fn adopt(&mut self, s: &Streamed) -> Result<(), VdeError> {
        if s.created {
            self.tx.open_table(WRITING)?.remove(s.inode)?;
            return Ok(());
        }
        for (off, e) in &s.pending {
            self.add_extent_space(e)?;
            self.tx
                .open_table(EXTENTS)?
                .insert((s.inode, *off, 0), e.encode().as_slice())?;
        }
        self.put_inode(s.inode, &s.record(0, 0))
    }

    /// [`Txn::adopt`] for an upload part: the part record holds the reference.
    fn adopt_part(&mut self, s: &Streamed) -> Result<(), VdeError> {
        self.adopt(s)?;
        let mut i = self.inode(s.inode)?;
        i.refs = 1;
        self.put_inode(s.inode, &i)
    }
}
/// Smallest part of a multipart upload except the last (S3's rule).
pub const MIN_PART: u64 = 5 << 20;

/// What kind of container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// Objects addressed by key.
    Bucket,
    /// A thin-provisioned block device of this many bytes.
    Volume {
        /// Declared size (a multiple of the record size).
        size: u64,
    },
}

/// How to create a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Kind.
    pub kind: ContainerKind,
    /// Container policy.
    pub policy: Policy,
    /// Record size (4 KiB .. 1 MiB, power of two); default 128 KiB for buckets, 4 KiB for
    /// volumes.
    pub record_size: Option<u32>,
}

/// A container as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u64,
    /// Kind.
    pub kind: ContainerKind,
    /// Created, Unix seconds.
    pub created: u64,
    /// Record size.
    pub record_size: u32,
    /// Live objects.
    pub objects: u64,
    /// Logical bytes of live data: the sizes of its live objects (a copy counts in full) or
    /// its written volume blocks. Quotas count these.
    pub logical_bytes: u64,
    /// Stored bytes (after compression and encryption) of live data this container wrote.
    /// Data shared by copies is counted once, for the container that wrote it, while any live
    /// object anywhere uses it.
    pub stored_bytes: u64,
    /// Stored bytes this container wrote that only snapshots or old versions keep.
    pub retained_bytes: u64,
    /// Its own policy settings.
    pub policy: Policy,
}

/// One object (version) as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag (quoted hex MD5, or `"md5-of-md5s-N"` for multipart uploads).
    pub etag: String,
    /// Content type.
    pub content_type: String,
    /// User metadata.
    pub user_meta: Vec<(String, String)>,
    /// Created, Unix milliseconds.
    pub created_ms: u64,
    /// Version id.
    pub version: u64,
    /// Cannot change or be deleted before this Unix second (0 = none).
    pub retain_until: u64,
    /// Retention mode when `retain_until` is set.
    pub retention_mode: RetentionMode,
    /// Legal hold.
    pub legal_hold: bool,
}

/// Options of a put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Content type (default `application/octet-stream`).
    pub content_type: Option<String>,
    /// User metadata.
    pub user_meta: Vec<(String, String)>,
    /// Object-level policy.
    pub policy: Option<Policy>,
    /// Expected MD5 of the body; a mismatch fails the put and stores nothing.
    pub content_md5: Option<[u8; 16]>,
    /// Explicit retention (Unix second, mode), at least the policy's.
    pub retain_until: Option<(u64, RetentionMode)>,
    /// Legal hold.
    pub legal_hold: bool,
}

/// Listing options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys with this prefix.
    pub prefix: String,
    /// Group keys sharing the prefix up to this delimiter into common prefixes.
    pub delimiter: Option<String>,
    /// Start after this key (or common prefix).
    pub start_after: Option<String>,
    /// At most this many keys plus common prefixes (1..=1000; 0 means 1000).
    pub max_keys: usize,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes (with a delimiter).
    pub common_prefixes: Vec<String>,
    /// More follow: continue after `next_start_after`.
    pub truncated: bool,
    /// The last key or prefix returned.
    pub next_start_after: Option<String>,
}

/// A multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Upload id.
    pub upload_id: String,
    /// Target key.
    pub key: String,
    /// Started, Unix milliseconds.
    pub created_ms: u64,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Part number (1..=10000).
    pub number: u32,
    /// Bytes.
    pub size: u64,
    /// ETag (quoted hex MD5).
    pub etag: String,
}

pub(crate) fn validate_name(name: &str) -> Result<(), VdeError> {
    if name.is_empty()
        || name.len() > limits::NAME
        || name.contains(['/', '\0'])
        || name.chars().any(char::is_control)
    {
        return Err(VdeError::Invalid(format!(
            "container name {name:?} must be 1 to {} bytes without '/', NUL or control characters",
            limits::NAME
        )));
    }
    Ok(())
}

pub(crate) fn validate_key(key: &str) -> Result<(), VdeError> {
    if key.is_empty() || key.len() > limits::KEY || key.contains('\0') {
        return Err(VdeError::Invalid(format!(
            "object key must be 1 to {} bytes of UTF-8 without NUL",
            limits::KEY
        )));
    }
    Ok(())
}

fn validate_meta(content_type: &str, meta: &[(String, String)]) -> Result<(), VdeError> {
    if content_type.len() > limits::CONTENT_TYPE {
        return Err(VdeError::Invalid("content type too long".into()));
    }
    let total: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > limits::USER_META || meta.len() > 256 {
        return Err(VdeError::Invalid(format!(
            "user metadata over {} bytes",
            limits::USER_META
        )));
    }
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> VdeError {
    VdeError::Corrupt(e.to_string())
}

pub(crate) fn md5_hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, VdeError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(VdeError::Invalid(format!(
                    "reading the request body failed: {e}"
                )));
            }
        }
    }
    Ok(n)
}

fn info_of(key: &str, birth: u64, o: &ObjectRecord) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size: o.size,
        etag: o.etag.clone(),
        content_type: o.content_type.clone(),
        user_meta: o.user_meta.clone(),
        created_ms: o.created_ms,
        version: birth,
        retain_until: o.retain_until,
        retention_mode: if o.flags & OBJ_COMPLIANCE != 0 {
            RetentionMode::Compliance
        } else {
            RetentionMode::Governance
        },
        legal_hold: o.flags & OBJ_LEGAL_HOLD != 0,
    }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

impl Inner {
    // -------------------------------------------------------------------- containers

    pub(crate) fn container_record(&self, name: &str) -> Result<ContainerRecord, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(CONTAINERS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| VdeError::NoSuchContainer(name.to_owned()))?;
        ContainerRecord::decode(v.value()).map_err(corrupt)
    }

    pub(crate) fn container_policy(&self, c: &ContainerRecord) -> Result<Policy, VdeError> {
        open_policy(&self.keys.read(), &self.uuid, c.id, &c.policy)
    }

    pub(crate) fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<ContainerInfo, VdeError> {
        self.meta_guard()?;
        validate_name(name)?;
        let vde_pol = *self.vde_policy.read();
        policy::check_child(&[(Level::Vde, &vde_pol)], Level::Container, &spec.policy)
            .map_err(VdeError::Policy)?;
        let default_record = match spec.kind {
            ContainerKind::Bucket => BUCKET_RECORD,
            ContainerKind::Volume { .. } => VOLUME_RECORD,
        };
        let record_size = spec.record_size.unwrap_or(default_record);
        if !record_size.is_power_of_two() || !(4096..=1 << 20).contains(&record_size) {
            return Err(VdeError::Invalid(format!(
                "record size {record_size} must be a power of two from 4 KiB to 1 MiB"
            )));
        }
        if let ContainerKind::Volume { size } = spec.kind
            && (size == 0 || size % u64::from(record_size) != 0)
        {
            return Err(VdeError::Invalid(format!(
                "volume size {size} must be a nonzero multiple of {record_size}"
            )));
        }
        let volume_inode = match spec.kind {
            ContainerKind::Volume { .. } => self.next_inode()?,
            ContainerKind::Bucket => 0,
        };
        let (rec, _) = self.txn_sync(|t| {
            if t.tx.open_table(CONTAINERS)?.get(name)?.is_some() {
                return Err(VdeError::ContainerExists(name.to_owned()));
            }
            let mut s = crate::engine::read_state(&t.tx)?;
            let id = s.next_container;
            s.next_container += 1;
            t.tx.open_table(records::META)?
                .insert("state", s.encode().as_slice())?;
            let rec = ContainerRecord {
                kind: match spec.kind {
                    ContainerKind::Bucket => KIND_BUCKET,
                    ContainerKind::Volume { .. } => KIND_VOLUME,
                },
                record_size,
                id,
                created: now_secs(),
                volume_size: match spec.kind {
                    ContainerKind::Volume { size } => size,
                    ContainerKind::Bucket => 0,
                },
                volume_inode,
                logical_bytes: 0,
                stored_bytes: 0,
                retained_bytes: 0,
                objects: 0,
                last_snapshot: 0,
                policy: seal_policy(&self.keys.read(), &self.uuid, id, &spec.policy),
            };
            if volume_inode != 0 {
                t.put_inode(
                    volume_inode,
                    &InodeRecord {
                        kind: INODE_VOLUME,
                        refs: 1,
                        live_refs: 0,
                        dead_refs: 0,
                        container: id,
                        size: rec.volume_size,
                        stored: 0,
                        record_size,
                    },
                )?;
            }
            t.tx.open_table(CONTAINERS)?
                .insert(name, rec.encode().as_slice())?;
            t.tx.open_table(CONTAINER_IDS)?.insert(id, name)?;
            Ok(rec)
        })?;

        self.container_info(name, &rec)
    }

    pub(crate) fn container_info(
        &self,
        name: &str,
        c: &ContainerRecord,
    ) -> Result<ContainerInfo, VdeError> {
        Ok(ContainerInfo {
            name: name.to_owned(),
            id: c.id,
            kind: if c.kind == KIND_VOLUME {
                ContainerKind::Volume {
                    size: c.volume_size,
                }
            } else {
                ContainerKind::Bucket
            },
            created: c.created,
            record_size: c.record_size,
            objects: c.objects,
            logical_bytes: c.logical_bytes,
            stored_bytes: c.stored_bytes,
            retained_bytes: c.retained_bytes,
            policy: self.container_policy(c)?,
        })
    }

    pub(crate) fn list_containers(&self) -> Result<Vec<ContainerInfo>, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(CONTAINERS)?;
        let mut out = Vec::new();
        for r in t.iter()? {
            let (k, v) = r?;
            let c = ContainerRecord::decode(v.value()).map_err(corrupt)?;
            out.push(self.container_info(k.value(), &c)?);
        }
        Ok(out)
    }

    pub(crate) fn set_container_policy(&self, name: &str, p: &Policy) -> Result<(), VdeError> {
        let vde_pol = *self.vde_policy.read();
        policy::check_child(&[(Level::Vde, &vde_pol)], Level::Container, p)
            .map_err(VdeError::Policy)?;
        self.txn_sync(|t| {
            let mut c = t.container(name)?;
            c.policy = seal_policy(&self.keys.read(), &self.uuid, c.id, p);
            t.put_container(name, &c)
        })?;
        Ok(())
    }

    pub(crate) fn set_vde_policy(&self, p: &Policy) -> Result<(), VdeError> {
        let sealed = seal_policy(&self.keys.read(), &self.uuid, VDE_SCOPE, p);
        self.txn_sync(|t| {
            t.tx.open_table(records::META)?
                .insert("vde_policy", sealed.as_slice())?;
            Ok(())
        })?;

        *self.vde_policy.write() = *p;
        Ok(())
    }

    pub(crate) fn delete_container(&self, name: &str) -> Result<(), VdeError> {
        self.txn_sync(|t| {
            let c = t.container(name)?;
            if t.tx
                .open_table(records::SNAPSHOTS)?
                .range((c.id, 0)..=(c.id, u64::MAX))?
                .next()
                .is_some()
            {
                return Err(VdeError::ContainerNotEmpty(format!(
                    "{name} (it has snapshots: delete them first)"
                )));
            }
            if t.tx
                .open_table(UPLOADS)?
                .range((c.id, "")..)?
                .next()
                .is_some_and(|r| r.is_ok_and(|(k, _)| k.value().0 == c.id))
            {
                return Err(VdeError::ContainerNotEmpty(format!(
                    "{name} (multipart uploads in progress)"
                )));
            }
            // Every version of every object: live ones make it non-empty; retained ones too.
            let versions: Vec<((u64, String, u64), ObjectRecord)> = {
                let o = t.tx.open_table(OBJECTS)?;
                let mut v = Vec::new();
                for r in o.range((c.id, "", 0)..)? {
                    let (k, val) = r?;
                    let (cid, key, birth) = k.value();
                    if cid != c.id {
                        break;
                    }
                    v.push((
                        (cid, key.to_owned(), birth),
                        ObjectRecord::decode(val.value()).map_err(corrupt)?,
                    ));
                }
                v
            };
            if versions
                .iter()
                .any(|(_, o)| o.death == LIVE && o.flags & OBJ_DELETE_MARKER == 0)
            {
                return Err(VdeError::ContainerNotEmpty(name.to_owned()));
            }
            let now = now_secs();
            if versions
                .iter()
                .any(|(_, o)| o.retain_until > now || o.flags & OBJ_LEGAL_HOLD != 0)
            {
                return Err(VdeError::Retained(format!(
                    "{name} holds object versions under retention or legal hold"
                )));
            }
            for ((cid, key, birth), o) in versions {
                t.tx.open_table(OBJECTS)?
                    .remove((cid, key.as_str(), birth))?;
                for (i, _) in &o.parts {
                    t.adjust_refs(*i, RefChange::DropDead)?;
                }
            }
            if c.volume_inode != 0 {
                t.decref(c.volume_inode)?;
            } else {
                // What is still charged to this bucket is data other containers' copies refer
                // to: it moves to the VDE's orphan counters (accounting.rs).
                t.apply_charges()?;
                let c = t.container(name)?;
                let mut s = crate::engine::read_state(&t.tx)?;
                s.orphan_stored += c.stored_bytes;
                s.orphan_retained += c.retained_bytes;
                t.tx.open_table(records::META)?
                    .insert("state", s.encode().as_slice())?;
            }
            t.tx.open_table(CONTAINERS)?.remove(name)?;
            t.tx.open_table(CONTAINER_IDS)?.remove(c.id)?;
            Ok(())
        })?;

        self.drain_free_queue()
    }

    /// The effective policy of a container (and optionally of an object's own settings).
    pub(crate) fn effective(
        &self,
        c: &ContainerRecord,
        object: Option<&Policy>,
    ) -> Result<Effective, VdeError> {
        let vp = *self.vde_policy.read();
        let cp = self.container_policy(c)?;
        Ok(policy::effective(&vp, Some(&cp), object))
    }

    // -------------------------------------------------------------------- writing data

    /// Streams `body` into a new inode of `c`, record by record. Small bodies (up to
    /// `BATCH` records) touch no metadata here: their extents and inode are recorded by the
    /// caller's transaction ([`Txn::adopt`]); larger ones are tracked in the WRITING table
    /// while they stream, so a crash frees them.
    pub(crate) fn stream_inode(
        &self,
        c: &ContainerRecord,
        eff: &Effective,
        body: &mut dyn Read,
        quota_room: Option<u64>,
    ) -> Result<Streamed, VdeError> {
        let inode = self.next_inode()?;
        let rs = c.record_size;
        let mut st = Streamed {
            inode,
            size: 0,
            stored: 0,
            md5: [0; 16],
            pending: Vec::new(),
            created: false,
            container: c.id,
            record_size: rs,
        };
        let mut buf = STREAM_BUF.with(std::cell::Cell::take);
        buf.resize(rs as usize, 0);
        let r = (|| -> Result<(), VdeError> {
            let mut md5 = Md5::new();
            loop {
                let n = read_full(body, &mut buf)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                if quota_room.is_some_and(|room| st.size + n as u64 > room) {
                    return Err(VdeError::QuotaExceeded(format!(
                        "container quota reached after {} bytes of this object",
                        st.size
                    )));
                }
                let e = self.write_record(
                    &buf[..n],
                    c.id,
                    inode,
                    st.size,
                    eff.compression.value,
                    eff.encryption.value,
                )?;
                st.stored += u64::from(e.stored_len);
                st.pending.push((st.size, e));
                st.size += n as u64;
                if st.pending.len() >= BATCH {
                    if !st.created {
                        self.txn(|t| {
                            t.tx.open_table(WRITING)?.insert(inode, now_secs())?;
                            t.put_inode(inode, &st.record(0, 0))
                        })?;
                        st.created = true;
                    }
                    self.commit_extents(inode, &mut st.pending, st.size, st.stored)?;
                }
                if n < buf.len() {
                    break;
                }
            }
            if st.created {
                self.commit_extents(inode, &mut st.pending, st.size, st.stored)?;
            }
            st.md5 = md5.finalize().into();
            Ok(())
        })();
        STREAM_BUF.with(|b| b.set(buf));
        match r {
            Ok(()) => Ok(st),
            Err(e) => {
                self.abandon(&st);
                Err(e)
            }
        }
    }

    fn commit_extents(
        &self,
        inode: u64,
        pending: &mut Vec<(u64, ExtentRecord)>,
        size: u64,
        stored: u64,
    ) -> Result<(), VdeError> {
        let batch = std::mem::take(pending);
        self.txn(|t| {
            {
                let mut ext = t.tx.open_table(EXTENTS)?;
                for (off, e) in &batch {
                    ext.insert((inode, *off, 0), e.encode().as_slice())?;
                }
            }
            let added: Vec<ExtentRecord> = batch.iter().map(|(_, e)| *e).collect();
            t.add_extents_space(&added)?;
            let mut i = t.inode(inode)?;
            i.size = size;
            i.stored = stored;
            t.put_inode(inode, &i)
        })?;
        Ok(())
    }

    /// A streamed inode that will not be linked: freed if it reached the metadata (extents
    /// that did not are unreferenced space the cleaner reclaims).
    pub(crate) fn abandon(&self, s: &Streamed) {
        if s.created {
            self.abandon_inode(s.inode);
        }
    }

    /// A write that failed half-way: its inode is freed.
    pub(crate) fn abandon_inode(&self, inode: u64) {
        let r = self.txn(|t| {
            t.tx.open_table(WRITING)?.remove(inode)?;
            t.tx.open_table(records::FREE_QUEUE)?
                .insert(inode, now_secs())?;
            t.queued_free = true;
            Ok(())
        });
        if let Err(e) = r.and_then(|_| self.drain_free_queue()) {
            tracing::warn!(
                "VDE {}: freeing abandoned inode {inode} failed (retried at next open): {e}",
                self.uuid
            );
        }
    }

    // -------------------------------------------------------------------- objects

    pub(crate) fn put_object(
        &self,
        cname: &str,
        key: &str,
        opts: &PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectInfo, VdeError> {
        self.meta_guard()?;
        validate_key(key)?;
        let content_type = opts
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        validate_meta(&content_type, &opts.user_meta)?;
        let c = self.container_record(cname)?;
        if c.kind != KIND_BUCKET {
            return Err(VdeError::WrongKind {
                name: cname.to_owned(),
                kind: "volume",
                wanted: "bucket",
            });
        }
        let cp = self.container_policy(&c)?;
        let vp = *self.vde_policy.read();
        if let Some(op) = &opts.policy {
            policy::check_child(
                &[(Level::Vde, &vp), (Level::Container, &cp)],
                Level::Object,
                op,
            )
            .map_err(VdeError::Policy)?;
        }
        let eff = policy::effective(&vp, Some(&cp), opts.policy.as_ref());
        let replaced = self.check_overwrite(&c, key, &eff)?;
        // An overwrite frees the replaced version's logical bytes: the quota counts the net
        // change (checked again, exactly, when the version is linked).
        let room = eff
            .quota_bytes
            .value
            .map(|q| q.saturating_sub(c.logical_bytes.saturating_sub(replaced)));
        // Held until the transaction recording the object's extents is done (segments.rs).
        let writer = self.segs.writer();
        let st = self.stream_inode(&c, &eff, body, room)?;
        if let Some(want) = opts.content_md5
            && want != st.md5
        {
            self.abandon(&st);
            return Err(VdeError::Invalid(format!(
                "BadDigest: the body's MD5 is {} but Content-MD5 says {}",
                md5_hex(&st.md5),
                md5_hex(&want)
            )));
        }
        let etag = format!("\"{}\"", md5_hex(&st.md5));
        let r = self
            .new_version(
                &eff,
                opts,
                etag,
                content_type,
                opts.user_meta.clone(),
                st.size,
                vec![(st.inode, st.size)],
            )
            .and_then(|rec| {
                self.txn_sync(|t| {
                    t.adopt(&st)?;
                    t.adjust_refs(st.inode, RefChange::AddLive)?;
                    t.link_version(cname, key, &rec, &eff)
                })
                .map(|((), txg)| (rec, txg))
            });
        drop(writer);
        match r {
            Ok((rec, txg)) => {
                self.drain_free_queue()?;
                Ok(info_of(key, txg, &rec))
            }
            Err(e) => {
                self.abandon(&st);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_version(
        &self,
        eff: &Effective,
        opts: &PutOptions,
        etag: String,
        content_type: String,
        user_meta: Vec<(String, String)>,
        size: u64,
        parts: Vec<(u64, u64)>,
    ) -> Result<ObjectRecord, VdeError> {
        let now = now_secs();
        let pol_until = if eff.retention.value.days > 0 {
            now + u64::from(eff.retention.value.days) * 86_400
        } else {
            0
        };
        let (mut until, mut mode) = (pol_until, eff.retention.value.mode);
        if let Some((u, m)) = opts.retain_until {
            if u > until {
                until = u;
            }
            mode = mode.max(m);
        }
        let mut flags = 0;
        if opts.legal_hold {
            flags |= OBJ_LEGAL_HOLD;
        }
        if until > 0 && mode == RetentionMode::Compliance {
            flags |= OBJ_COMPLIANCE;
        }
        Ok(ObjectRecord {
            flags,
            death: LIVE,
            size,
            created_ms: now_ms(),
            retain_until: until,
            etag,
            content_type,
            user_meta,
            policy: opts.policy.as_ref().map(policy::encode).unwrap_or_default(),
            parts,
        })
    }

    /// Refuses to overwrite a retained object when versioning is off (with versioning the
    /// retained version is kept); returns the logical size of the version a put would replace
    /// (0 if none).
    fn check_overwrite(
        &self,
        c: &ContainerRecord,
        key: &str,
        eff: &Effective,
    ) -> Result<u64, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(OBJECTS)?;
        let Some((_, o)) = live_version(&t, c.id, key)? else {
            return Ok(0);
        };
        if !eff.versioning.value {
            check_retention(key, &o, false)?;
        }
        Ok(o.size)
    }

    pub(crate) fn head_object(
        &self,
        cname: &str,
        key: &str,
        version: Option<u64>,
    ) -> Result<ObjectInfo, VdeError> {
        let c = self.container_record(cname)?;
        let rx = self.db.begin_read()?;
        let t = rx.open_table(OBJECTS)?;
        let (birth, o) = match version {
            None => live_version(&t, c.id, key)?,
            Some(v) => t
                .get((c.id, key, v))?
                .map(|x| ObjectRecord::decode(x.value()).map(|o| (v, o)))
                .transpose()
                .map_err(corrupt)?
                .filter(|(_, o)| o.flags & OBJ_DELETE_MARKER == 0),
        }
        .ok_or_else(|| VdeError::NoSuchObject {
            container: cname.to_owned(),
            key: key.to_owned(),
        })?;
        Ok(info_of(key, birth, &o))
    }

    pub(crate) fn open_object(
        self: &Arc<Self>,
        cname: &str,
        key: &str,
        version: Option<u64>,
        snapshot: Option<u64>,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, ObjectReader), VdeError> {
        let c = self.container_record(cname)?;
        if c.kind != KIND_BUCKET {
            return Err(VdeError::WrongKind {
                name: cname.to_owned(),
                kind: "volume",
                wanted: "bucket",
            });
        }
        let rx = self.db.begin_read()?;
        let t = rx.open_table(OBJECTS)?;
        let found = match (version, snapshot) {
            (Some(v), _) => t
                .get((c.id, key, v))?
                .map(|x| ObjectRecord::decode(x.value()).map(|o| (v, o)))
                .transpose()
                .map_err(corrupt)?,
            (None, Some(at)) => version_at(&t, c.id, key, at)?,
            (None, None) => live_version(&t, c.id, key)?,
        };
        let (birth, o) = found
            .filter(|(_, o)| o.flags & OBJ_DELETE_MARKER == 0)
            .ok_or_else(|| VdeError::NoSuchObject {
                container: cname.to_owned(),
                key: key.to_owned(),
            })?;
        let op = if o.policy.is_empty() {
            None
        } else {
            Some(policy::decode(&o.policy).map_err(VdeError::Corrupt)?)
        };
        let eff = self.effective(&c, op.as_ref())?;
        let (start, len) = match range {
            None => (0, o.size),
            Some((s, l)) => {
                if s > o.size || s.checked_add(l).is_none_or(|e| e > o.size) {
                    return Err(VdeError::OutOfRange {
                        what: "object",
                        off: s,
                        len: l,
                        size: o.size,
                    });
                }
                (s, l)
            }
        };
        let inodes = rx.open_table(INODES)?;
        let mut parts = Vec::new();
        for &(i, n) in &o.parts {
            let rec = inodes
                .get(i)?
                .map(|v| InodeRecord::decode(v.value()))
                .transpose()
                .map_err(corrupt)?
                .ok_or_else(|| {
                    VdeError::Corrupt(format!("object {key} refers to missing inode {i}"))
                })?;
            parts.push((i, n, rec.container, rec.record_size));
            self.pin(i);
        }
        drop(inodes);
        drop(t);
        let info = info_of(key, birth, &o);
        Ok((
            info,
            ObjectReader {
                inner: Arc::clone(self),
                rx,
                parts,
                pos: start,
                end: start + len,
                verify: eff.verify_checksums.value,
                cache: None,
            },
        ))
    }

    pub(crate) fn delete_object(
        &self,
        cname: &str,
        key: &str,
        bypass_governance: bool,
    ) -> Result<(), VdeError> {
        let c = self.container_record(cname)?;
        let eff = self.effective(&c, None)?;
        self.txn_sync(|t| {
            let c = t.container(cname)?;
            let found = {
                let o = t.tx.open_table(OBJECTS)?;
                live_version(&o, c.id, key)?
            };
            let Some((birth, o)) = found else {
                return Err(VdeError::NoSuchObject {
                    container: cname.to_owned(),
                    key: key.to_owned(),
                });
            };
            check_retention(key, &o, bypass_governance)?;
            let mut c = c;
            if eff.versioning.value {
                // Keep the version; a delete marker becomes the latest.
                t.retire_version(&mut c, key, birth, o, true)?;
                let marker = ObjectRecord {
                    flags: OBJ_DELETE_MARKER,
                    death: LIVE,
                    size: 0,
                    created_ms: now_ms(),
                    retain_until: 0,
                    etag: String::new(),
                    content_type: String::new(),
                    user_meta: Vec::new(),
                    policy: Vec::new(),
                    parts: Vec::new(),
                };
                t.tx.open_table(OBJECTS)?
                    .insert((c.id, key, t.txg), marker.encode().as_slice())?;
            } else {
                let keep = birth <= c.last_snapshot;
                t.retire_version(&mut c, key, birth, o, keep)?;
            }
            t.put_container(cname, &c)
        })?;

        self.drain_free_queue()
    }

    pub(crate) fn set_retention(
        &self,
        cname: &str,
        key: &str,
        until: u64,
        mode: RetentionMode,
        bypass_governance: bool,
    ) -> Result<(), VdeError> {
        self.txn_sync(|t| {
            let c = t.container(cname)?;
            let found = live_version(&t.tx.open_table(OBJECTS)?, c.id, key)?;
            let (birth, mut o) = found.ok_or_else(|| VdeError::NoSuchObject { container: cname.to_owned(), key: key.to_owned() })?;
            let now = now_secs();
            let active = o.retain_until > now;
            let shortening = until < o.retain_until || (mode == RetentionMode::Governance && o.flags & OBJ_COMPLIANCE != 0);
            if active && shortening {
                if o.flags & OBJ_COMPLIANCE != 0 {
                    return Err(VdeError::Retained(format!("{key} is under compliance retention until {}; it cannot be shortened", o.retain_until)));
                }
                if !bypass_governance {
                    return Err(VdeError::Retained(format!("{key} is under governance retention until {}; shortening needs the bypass permission", o.retain_until)));
                }
            }
            o.retain_until = until;
            if mode == RetentionMode::Compliance {
                o.flags |= OBJ_COMPLIANCE;
            } else {
                o.flags &= !OBJ_COMPLIANCE;
            }
            t.tx.open_table(OBJECTS)?.insert((c.id, key, birth), o.encode().as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn set_legal_hold(&self, cname: &str, key: &str, on: bool) -> Result<(), VdeError> {
        self.txn_sync(|t| {
            let c = t.container(cname)?;
            let found = live_version(&t.tx.open_table(OBJECTS)?, c.id, key)?;
            let (birth, mut o) = found.ok_or_else(|| VdeError::NoSuchObject {
                container: cname.to_owned(),
                key: key.to_owned(),
            })?;
            if on {
                o.flags |= OBJ_LEGAL_HOLD;
            } else {
                o.flags &= !OBJ_LEGAL_HOLD;
            }
            t.tx.open_table(OBJECTS)?
                .insert((c.id, key, birth), o.encode().as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// True when some part of `o` holds data stored without encryption.
    fn has_plain_data(&self, o: &ObjectRecord) -> Result<bool, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(EXTENTS)?;
        for (inode, _) in &o.parts {
            // One put or part is written under one policy: its first extent tells.
            if let Some(r) = t
                .range((*inode, 0, 0)..=(*inode, u64::MAX, u64::MAX))?
                .next()
            {
                let e = ExtentRecord::decode(r?.1.value()).map_err(corrupt)?;
                if e.flags & records::EXT_ENCRYPTED == 0 {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub(crate) fn copy_object(
        self: &Arc<Self>,
        src_c: &str,
        src_key: &str,
        dst_c: &str,
        dst_key: &str,
        replace_meta: Option<&(String, Vec<(String, String)>)>,
    ) -> Result<ObjectInfo, VdeError> {
        self.meta_guard()?;
        validate_key(dst_key)?;
        let dc = self.container_record(dst_c)?;
        if dc.kind != KIND_BUCKET {
            return Err(VdeError::WrongKind {
                name: dst_c.to_owned(),
                kind: "volume",
                wanted: "bucket",
            });
        }
        let eff = self.effective(&dc, None)?;
        if eff.encryption.value == Encryption::Aes256Gcm {
            let sc = self.container_record(src_c)?;
            let src = {
                let rx = self.db.begin_read()?;
                live_version(&rx.open_table(OBJECTS)?, sc.id, src_key)?
            };
            if let Some((_, o)) = src
                && self.has_plain_data(&o)?
            {
                // Sharing would leave this copy unencrypted in a container whose policy
                // requires encryption: it is written anew through the destination's data path.
                let (info, mut reader) = self.open_object(src_c, src_key, None, None, None)?;
                let (content_type, user_meta) = replace_meta
                    .cloned()
                    .unwrap_or((info.content_type, info.user_meta));
                let opts = PutOptions {
                    content_type: Some(content_type),
                    user_meta,
                    ..PutOptions::default()
                };
                return self.put_object(dst_c, dst_key, &opts, &mut reader);
            }
        }
        self.check_overwrite(&dc, dst_key, &eff)?;
        let (rec, txg) = self.txn_sync(|t| {
            let sc = t.container(src_c)?;
            let found = live_version(&t.tx.open_table(OBJECTS)?, sc.id, src_key)?;
            let (_, o) = found.ok_or_else(|| VdeError::NoSuchObject {
                container: src_c.to_owned(),
                key: src_key.to_owned(),
            })?;
            // The copy shares the data: its stored bytes stay counted once (accounting.rs).
            for (i, _) in &o.parts {
                t.adjust_refs(*i, RefChange::AddLive)?;
            }
            let (content_type, user_meta) = replace_meta
                .cloned()
                .unwrap_or((o.content_type.clone(), o.user_meta.clone()));
            validate_meta(&content_type, &user_meta)?;
            let rec = self.new_version(
                &eff,
                &PutOptions::default(),
                o.etag.clone(),
                content_type,
                user_meta,
                o.size,
                o.parts.clone(),
            )?;
            t.link_version(dst_c, dst_key, &rec, &eff)?;
            Ok(rec)
        })?;

        self.drain_free_queue()?;
        Ok(info_of(dst_key, txg, &rec))
    }

    pub(crate) fn list_objects(
        &self,
        cname: &str,
        opts: &ListOptions,
        snapshot: Option<u64>,
    ) -> Result<ListPage, VdeError> {
        let c = self.container_record(cname)?;
        let max = if opts.max_keys == 0 {
            1000
        } else {
            opts.max_keys.min(1000)
        };
        let rx = self.db.begin_read()?;
        let t = rx.open_table(OBJECTS)?;
        let start = match &opts.start_after {
            Some(s) if s.as_str() >= opts.prefix.as_str() => s.clone(),
            _ => opts.prefix.clone(),
        };
        let mut page = ListPage::default();
        let mut cur_key: Option<String> = None;
        let mut cur: Option<(u64, ObjectRecord)> = None;
        let emit = |key: String, v: Option<(u64, ObjectRecord)>, page: &mut ListPage| -> bool {
            let Some((birth, o)) = v else { return false };
            if opts
                .start_after
                .as_deref()
                .is_some_and(|s| key.as_str() <= s)
            {
                return false;
            }
            if let Some(d) = opts.delimiter.as_deref().filter(|d| !d.is_empty())
                && let Some(pos) = key[opts.prefix.len()..].find(d)
            {
                let cp = key[..opts.prefix.len() + pos + d.len()].to_owned();
                if page.common_prefixes.last() != Some(&cp)
                    && opts.start_after.as_deref().is_none_or(|s| cp.as_str() > s)
                {
                    if page.objects.len() + page.common_prefixes.len() >= max {
                        page.truncated = true;
                        return true;
                    }
                    page.next_start_after = Some(cp.clone());
                    page.common_prefixes.push(cp);
                }
                return false;
            }
            if page.objects.len() + page.common_prefixes.len() >= max {
                page.truncated = true;
                return true;
            }
            page.next_start_after = Some(key.clone());
            page.objects.push(info_of(&key, birth, &o));
            false
        };
        for r in t.range((c.id, start.as_str(), 0)..)? {
            let (k, v) = r?;
            let (cid, key, birth) = k.value();
            if cid != c.id || !key.starts_with(opts.prefix.as_str()) {
                break;
            }
            if cur_key.as_deref() != Some(key) {
                if let Some(prev) = cur_key.take()
                    && emit(prev, cur.take(), &mut page)
                {
                    return Ok(page);
                }
                cur_key = Some(key.to_owned());
                cur = None;
            }
            let o = ObjectRecord::decode(v.value()).map_err(corrupt)?;
            let visible = match snapshot {
                None => o.death == LIVE,
                Some(at) => birth <= at && o.death > at,
            };
            if visible && o.flags & OBJ_DELETE_MARKER == 0 {
                cur = Some((birth, o));
            } else if visible {
                cur = None;
            }
        }
        if let Some(prev) = cur_key.take() {
            emit(prev, cur.take(), &mut page);
        }
        Ok(page)
    }

    // -------------------------------------------------------------------- multipart

    pub(crate) fn create_upload(
        &self,
        cname: &str,
        key: &str,
        content_type: Option<String>,
        user_meta: Vec<(String, String)>,
    ) -> Result<UploadInfo, VdeError> {
        self.meta_guard()?;
        validate_key(key)?;
        let ct = content_type.unwrap_or_else(|| "application/octet-stream".into());
        validate_meta(&ct, &user_meta)?;
        let mut id = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        let upload_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let rec = UploadRecord {
            key: key.to_owned(),
            created_ms: now_ms(),
            content_type: ct,
            user_meta,
        };
        self.txn_sync(|t| {
            let c = t.container(cname)?;
            if c.kind != KIND_BUCKET {
                return Err(VdeError::WrongKind {
                    name: cname.to_owned(),
                    kind: "volume",
                    wanted: "bucket",
                });
            }
            t.tx.open_table(UPLOADS)?
                .insert((c.id, upload_id.as_str()), rec.encode().as_slice())?;
            Ok(())
        })?;

        Ok(UploadInfo {
            upload_id,
            key: key.to_owned(),
            created_ms: rec.created_ms,
        })
    }

    pub(crate) fn put_part(
        &self,
        cname: &str,
        upload_id: &str,
        number: u32,
        body: &mut dyn Read,
        content_md5: Option<[u8; 16]>,
    ) -> Result<PartInfo, VdeError> {
        if !(1..=10_000).contains(&number) {
            return Err(VdeError::Invalid(format!(
                "part number {number} must be 1 to 10000"
            )));
        }
        let c = self.container_record(cname)?;
        {
            let rx = self.db.begin_read()?;
            if rx.open_table(UPLOADS)?.get((c.id, upload_id))?.is_none() {
                return Err(VdeError::NoSuchUpload(upload_id.to_owned()));
            }
        }
        let eff = self.effective(&c, None)?;
        let room = eff
            .quota_bytes
            .value
            .map(|q| q.saturating_sub(c.logical_bytes));
        // Held until the transaction recording the part's extents is done (segments.rs).
        let writer = self.segs.writer();
        let st = self.stream_inode(&c, &eff, body, room)?;
        let (inode, size, md5) = (st.inode, st.size, st.md5);
        if content_md5.is_some_and(|m| m != md5) {
            self.abandon(&st);
            return Err(VdeError::Invalid(
                "BadDigest: the part's MD5 does not match Content-MD5".into(),
            ));
        }
        let etag = format!("\"{}\"", md5_hex(&md5));
        let part = PartRecord {
            inode,
            size,
            etag: etag.clone(),
        };
        let r = self.txn_sync(|t| {
            if t.tx.open_table(UPLOADS)?.get((c.id, upload_id))?.is_none() {
                return Err(VdeError::NoSuchUpload(upload_id.to_owned()));
            }
            t.adopt_part(&st)?;
            let old =
                t.tx.open_table(PARTS)?
                    .insert((c.id, upload_id, number), part.encode().as_slice())?
                    .map(|v| v.value().to_vec());
            if let Some(old) = old {
                let p = PartRecord::decode(&old).map_err(corrupt)?;
                t.decref(p.inode)?;
            }
            Ok(())
        });
        drop(writer);
        match r {
            Ok(((), _)) => {
                self.drain_free_queue()?;
                Ok(PartInfo { number, size, etag })
            }
            Err(e) => {
                self.abandon(&st);
                Err(e)
            }
        }
    }

    pub(crate) fn list_parts(
        &self,
        cname: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, VdeError> {
        let c = self.container_record(cname)?;
        let rx = self.db.begin_read()?;
        if rx.open_table(UPLOADS)?.get((c.id, upload_id))?.is_none() {
            return Err(VdeError::NoSuchUpload(upload_id.to_owned()));
        }
        let t = rx.open_table(PARTS)?;
        let mut out = Vec::new();
        for r in t.range((c.id, upload_id, 0)..=(c.id, upload_id, u32::MAX))? {
            let (k, v) = r?;
            let p = PartRecord::decode(v.value()).map_err(corrupt)?;
            out.push(PartInfo {
                number: k.value().2,
                size: p.size,
                etag: p.etag,
            });
        }
        Ok(out)
    }

    pub(crate) fn list_uploads(&self, cname: &str) -> Result<Vec<UploadInfo>, VdeError> {
        let c = self.container_record(cname)?;
        let rx = self.db.begin_read()?;
        let t = rx.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for r in t.range((c.id, "")..)? {
            let (k, v) = r?;
            let (cid, id) = k.value();
            if cid != c.id {
                break;
            }
            let u = UploadRecord::decode(v.value()).map_err(corrupt)?;
            out.push(UploadInfo {
                upload_id: id.to_owned(),
                key: u.key,
                created_ms: u.created_ms,
            });
        }
        Ok(out)
    }

    pub(crate) fn abort_upload(&self, cname: &str, upload_id: &str) -> Result<(), VdeError> {
        self.txn_sync(|t| {
            let c = t.container(cname)?;
            if t.tx
                .open_table(UPLOADS)?
                .remove((c.id, upload_id))?
                .is_none()
            {
                return Err(VdeError::NoSuchUpload(upload_id.to_owned()));
            }
            for (n, p) in t.parts(c.id, upload_id)? {
                t.tx.open_table(PARTS)?.remove((c.id, upload_id, n))?;
                t.decref(p.inode)?;
            }
            Ok(())
        })?;

        self.drain_free_queue()
    }

    /// Completes an upload from the listed parts (numbers ascending, ETags matching): the
    /// object refers to the parts' data; nothing is copied.
    pub(crate) fn complete_upload(
        &self,
        cname: &str,
        upload_id: &str,
        list: &[(u32, String)],
    ) -> Result<ObjectInfo, VdeError> {
        if list.is_empty() {
            return Err(VdeError::Invalid(
                "InvalidPart: a completion needs at least one part".into(),
            ));
        }
        if list.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(VdeError::Invalid(
                "InvalidPartOrder: parts must be listed in ascending order".into(),
            ));
        }
        let c = self.container_record(cname)?;
        let eff = self.effective(&c, None)?;
        let ((key, rec), txg) = self.txn_sync(|t| {
            let c = t.container(cname)?;
            let up =
                t.tx.open_table(UPLOADS)?
                    .get((c.id, upload_id))?
                    .map(|v| UploadRecord::decode(v.value()))
                    .transpose()
                    .map_err(corrupt)?
                    .ok_or_else(|| VdeError::NoSuchUpload(upload_id.to_owned()))?;
            let have = t.parts(c.id, upload_id)?;
            let mut parts = Vec::new();
            let mut md5s = Vec::new();
            let mut size = 0u64;
            for (i, (n, etag)) in list.iter().enumerate() {
                let Some((_, p)) = have.iter().find(|(pn, _)| pn == n) else {
                    return Err(VdeError::Invalid(format!(
                        "InvalidPart: part {n} was not uploaded"
                    )));
                };
                let norm = |s: &str| s.trim_matches('"').to_ascii_lowercase();
                if norm(etag) != norm(&p.etag) {
                    return Err(VdeError::Invalid(format!(
                        "InvalidPart: part {n} has ETag {}, not {etag}",
                        p.etag
                    )));
                }
                if i + 1 < list.len() && p.size < MIN_PART {
                    return Err(VdeError::Invalid(format!(
                        "EntityTooSmall: part {n} has {} bytes; all but the last need 5 MiB",
                        p.size
                    )));
                }
                let hex = norm(&p.etag);
                let raw: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).ok())
                    .collect();
                md5s.extend_from_slice(&raw);
                parts.push((p.inode, p.size));
                size += p.size;
            }
            // Parts not in the list are freed; listed ones move to the object.
            for (n, p) in &have {
                t.tx.open_table(PARTS)?.remove((c.id, upload_id, *n))?;
                if !list.iter().any(|(ln, _)| ln == n) {
                    t.decref(p.inode)?;
                }
            }
            t.tx.open_table(UPLOADS)?.remove((c.id, upload_id))?;
            // The part records' references become the object's.
            for (inode, _) in &parts {
                t.adjust_refs(*inode, RefChange::PartToLive)?;
            }
            let etag = format!("\"{}-{}\"", md5_hex(&Md5::digest(&md5s).into()), list.len());
            let rec = self.new_version(
                &eff,
                &PutOptions::default(),
                etag,
                up.content_type.clone(),
                up.user_meta.clone(),
                size,
                parts,
            )?;
            t.link_version(cname, &up.key, &rec, &eff)?;
            Ok((up.key, rec))
        })?;
        self.drain_free_queue()?;
        Ok(info_of(&key, txg, &rec))
    }
}

/// The newest live version of a key, if any (delete markers count as none).
pub(crate) fn live_version(
    t: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    cid: u64,
    key: &str,
) -> Result<Option<(u64, ObjectRecord)>, VdeError> {
    let mut out = None;
    for r in t.range((cid, key, 0)..=(cid, key, u64::MAX))? {
        let (k, v) = r?;
        let o = ObjectRecord::decode(v.value()).map_err(corrupt)?;
        if o.death == LIVE {
            out = (o.flags & OBJ_DELETE_MARKER == 0).then(|| (k.value().2, o));
        }
    }
    Ok(out)
}

/// The version of a key visible at txg `at` (a snapshot).
pub(crate) fn version_at(
    t: &impl ReadableTable<(u64, &'static str, u64), &'static [u8]>,
    cid: u64,
    key: &str,
    at: u64,
) -> Result<Option<(u64, ObjectRecord)>, VdeError> {
    let mut out = None;
    for r in t.range((cid, key, 0)..=(cid, key, at))? {
        let (k, v) = r?;
        let o = ObjectRecord::decode(v.value()).map_err(corrupt)?;
        if o.death > at {
            out = Some((k.value().2, o));
        }
    }
    Ok(out.filter(|(_, o)| o.flags & OBJ_DELETE_MARKER == 0))
}

fn check_retention(key: &str, o: &ObjectRecord, bypass_governance: bool) -> Result<(), VdeError> {
    if o.flags & OBJ_LEGAL_HOLD != 0 {
        return Err(VdeError::Retained(format!("{key} is under legal hold")));
    }
    if o.retain_until > now_secs() {
        let compliance = o.flags & OBJ_COMPLIANCE != 0;
        if compliance || !bypass_governance {
            return Err(VdeError::Retained(format!(
                "{key} is under {} retention until {} (Unix time)",
                if compliance {
                    "compliance"
                } else {
                    "governance"
                },
                o.retain_until
            )));
        }
    }
    Ok(())
}

impl Txn<'_> {
    pub(crate) fn container(&self, name: &str) -> Result<ContainerRecord, VdeError> {
        let t = self.tx.open_table(CONTAINERS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| VdeError::NoSuchContainer(name.to_owned()))?;
        ContainerRecord::decode(v.value()).map_err(corrupt)
    }

    pub(crate) fn put_container(
        &mut self,
        name: &str,
        c: &ContainerRecord,
    ) -> Result<(), VdeError> {
        self.tx
            .open_table(CONTAINERS)?
            .insert(name, c.encode().as_slice())?;
        Ok(())
    }

    fn parts(&self, cid: u64, upload: &str) -> Result<Vec<(u32, PartRecord)>, VdeError> {
        let t = self.tx.open_table(PARTS)?;
        let mut out = Vec::new();
        for r in t.range((cid, upload, 0)..=(cid, upload, u32::MAX))? {
            let (k, v) = r?;
            out.push((k.value().2, PartRecord::decode(v.value()).map_err(corrupt)?));
        }
        Ok(out)
    }

    /// Makes `rec` the live version of `key` (born in this txn), retiring the previous one.
    /// The caller has added `rec`'s references to its inodes.
    fn link_version(
        &mut self,
        cname: &str,
        key: &str,
        rec: &ObjectRecord,
        eff: &Effective,
    ) -> Result<(), VdeError> {
        let mut c = self.container(cname)?;
        let prev = live_version(&self.tx.open_table(OBJECTS)?, c.id, key)?;
        if let Some((birth, o)) = prev {
            if !eff.versioning.value {
                check_retention(key, &o, false)?;
            }
            let keep = eff.versioning.value || birth <= c.last_snapshot;
            self.retire_version(&mut c, key, birth, o, keep)?;
        }
        // After retiring: an overwrite is charged its net change (the transaction is dropped
        // as a whole when this refuses).
        if let Some(q) = eff.quota_bytes.value
            && c.logical_bytes + rec.size > q
        {
            return Err(VdeError::QuotaExceeded(format!(
                "the object would exceed the container quota of {q} bytes"
            )));
        }
        self.tx
            .open_table(OBJECTS)?
            .insert((c.id, key, self.txg), rec.encode().as_slice())?;
        c.objects += 1;
        c.logical_bytes += rec.size;
        self.put_container(cname, &c)
    }

    /// Ends a live version: kept (dead, for snapshots or versioning) or removed with its data.
    fn retire_version(
        &mut self,
        c: &mut ContainerRecord,
        key: &str,
        birth: u64,
        mut o: ObjectRecord,
        keep: bool,
    ) -> Result<(), VdeError> {
        c.objects = c.objects.saturating_sub(1);
        c.logical_bytes = c.logical_bytes.saturating_sub(o.size);
        let change = if keep {
            o.death = self.txg;
            self.tx
                .open_table(OBJECTS)?
                .insert((c.id, key, birth), o.encode().as_slice())?;
            RefChange::Died
        } else {
            self.tx.open_table(OBJECTS)?.remove((c.id, key, birth))?;
            RefChange::DropLive
        };
        for (i, _) in &o.parts {
            self.adjust_refs(*i, change)?;
        }
        Ok(())
    }
}

/// Streams an object's bytes (a byte range of it), record by record, verifying and healing.
#[derive(Debug)]
pub struct ObjectReader {
    inner: Arc<Inner>,
    rx: redb::ReadTransaction,
    /// (inode, bytes, container the inode was written in, record size).
    parts: Vec<(u64, u64, u64, u32)>,
    pos: u64,
    end: u64,
    verify: bool,
    /// (inode, record offset, plaintext) of the last record read.
    cache: Option<(u64, u64, Vec<u8>)>,
}

impl ObjectReader {
    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<usize, VdeError> {
        if self.pos >= self.end {
            return Ok(0);
        }
        // Find the part.
        let mut base = 0u64;
        let mut hit = None;
        for &(inode, len, cid, rs) in &self.parts {
            if self.pos < base + len {
                hit = Some((inode, self.pos - base, cid, rs, len));
                break;
            }
            base += len;
        }
        let Some((inode, off, cid, rs, plen)) = hit else {
            return Ok(0);
        };
        let rs = u64::from(rs);
        let rec_off = off / rs * rs;
        let cached = self
            .cache
            .as_ref()
            .is_some_and(|(i, o, _)| *i == inode && *o == rec_off);
        if !cached {
            let t = self.rx.open_table(EXTENTS).map_err(VdeError::meta)?;
            let e = t
                .get((inode, rec_off, 0))
                .map_err(VdeError::meta)?
                .map(|v| ExtentRecord::decode(v.value()))
                .transpose()
                .map_err(corrupt)?
                .ok_or_else(|| {
                    VdeError::Corrupt(format!("inode {inode} has no extent at {rec_off}"))
                })?;
            // The previous record's buffer is reused: no allocation per record.
            let mut plain = self.cache.take().map(|c| c.2).unwrap_or_default();
            self.inner
                .read_record(&e, cid, inode, rec_off, self.verify, &mut plain)?;
            self.cache = Some((inode, rec_off, plain));
        }
        let plain = self.cache.as_ref().map(|c| &c.2[..]).unwrap_or(&[]);
        let within = usize::try_from(off - rec_off).unwrap_or(0);
        let avail = plain.len().saturating_sub(within);
        let part_left = usize::try_from(plen - off).unwrap_or(usize::MAX);
        let want = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let n = out.len().min(avail).min(part_left).min(want);
        if n == 0 {
            return Err(VdeError::Corrupt(format!(
                "inode {inode} record at {rec_off} is shorter than the object says"
            )));
        }
        out[..n].copy_from_slice(&plain[within..within + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.fill(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        let freed_any = self.parts.iter().map(|p| p.0).collect::<Vec<_>>();
        for i in freed_any {
            self.inner.unpin(i);
        }
    }
}
