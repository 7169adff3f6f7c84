//! The metadata store's tables and the byte layout of every record (docs/FORMAT.md §2.6).
//! Records are explicit little-endian with a version byte; decoders are bounded (every length
//! is checked against a limit and the remaining bytes) and return errors, never panic.

use redb::TableDefinition;

/// Counters and VDE-wide settings: name → record.
pub const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Container name → [`ContainerRecord`].
pub const CONTAINERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("containers");
/// Container id → container name.
pub const CONTAINER_IDS: TableDefinition<'_, u64, &str> = TableDefinition::new("container_ids");
/// (container, key, birth txg) → [`ObjectRecord`].
pub const OBJECTS: TableDefinition<'_, (u64, &str, u64), &[u8]> = TableDefinition::new("objects");
/// Inode → [`InodeRecord`].
pub const INODES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("inodes");
/// (inode, offset, birth txg) → [`ExtentRecord`].
pub const EXTENTS: TableDefinition<'_, (u64, u64, u64), &[u8]> = TableDefinition::new("extents");
/// Segment → [`SegmentRecord`] (absent = free).
pub const SEGMENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("segments");
/// (container, snapshot txg) → [`SnapshotRecord`].
pub const SNAPSHOTS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("snapshots");
/// (container, upload id) → [`UploadRecord`].
pub const UPLOADS: TableDefinition<'_, (u64, &str), &[u8]> = TableDefinition::new("uploads");
/// (container, upload id, part number) → [`PartRecord`].
pub const PARTS: TableDefinition<'_, (u64, &str, u32), &[u8]> = TableDefinition::new("parts");
/// Inodes being written (freed at open if a crash left them) → start time.
pub const WRITING: TableDefinition<'_, u64, u64> = TableDefinition::new("writing");
/// Inodes whose references are gone, waiting for their extents to be freed (in batches).
pub const FREE_QUEUE: TableDefinition<'_, u64, u64> = TableDefinition::new("free_queue");

/// "Never died": the death txg of a live version.
pub const LIVE: u64 = u64::MAX;

/// Limits enforced on decode and on the API.
pub mod limits {
    /// Object key bytes.
    pub const KEY: usize = 1024;
    /// Content type bytes.
    pub const CONTENT_TYPE: usize = 256;
    /// ETag bytes.
    pub const ETAG: usize = 128;
    /// Total user metadata bytes (keys + values).
    pub const USER_META: usize = 8192;
    /// Parts of one object.
    pub const PARTS: usize = 10_000;
    /// Container name bytes.
    pub const NAME: usize = 255;
    /// Snapshot name bytes.
    pub const SNAPSHOT_NAME: usize = 255;
    /// Sealed policy blob bytes.
    pub const POLICY: usize = 512;
}

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged {what} record: {why}")]
pub struct RecordError {
    /// Which record.
    pub what: &'static str,
    /// What is wrong.
    pub why: String,
}

struct W(Vec<u8>);

impl W {
    fn new(version: u8) -> Self {
        Self(vec![version])
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let n = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.0.extend_from_slice(&v[..usize::from(n)]);
        self
    }
}

struct R<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> R<'a> {
    fn new(b: &'a [u8], what: &'static str, version: u8) -> Result<Self, RecordError> {
        let mut r = Self { b, what };
        let v = r.u8()?;
        if v != version {
            return Err(r.err(format!("version {v}, expected {version}")));
        }
        Ok(r)
    }
    fn err(&self, why: String) -> RecordError {
        RecordError {
            what: self.what,
            why,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(self.err(format!(
                "truncated ({} bytes left, {n} needed)",
                self.b.len()
            )));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], RecordError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(self.err(format!("field of {n} bytes exceeds {max}")));
        }
        self.take(n)
    }
    fn string(&mut self, max: usize) -> Result<String, RecordError> {
        let b = self.bytes(max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.err("text is not UTF-8".into()))
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.b.len())))
        }
    }
}

// ------------------------------------------------------------------------------ extents

/// Flag: stored bytes are zstd-compressed.
pub const EXT_COMPRESSED: u8 = 1;
/// Flag: stored bytes are AES-256-GCM ciphertext + tag.
pub const EXT_ENCRYPTED: u8 = 2;

/// Where one record of data lives and how to read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentRecord {
    /// Flags ([`EXT_COMPRESSED`], [`EXT_ENCRYPTED`]).
    pub flags: u8,
    /// Key generation it is encrypted with.
    pub key_generation: u32,
    /// Device address (4 KiB aligned).
    pub addr: u64,
    /// Stored bytes.
    pub stored_len: u32,
    /// Logical (plaintext, uncompressed) bytes.
    pub logical_len: u32,
    /// Unique extent id (the AEAD nonce).
    pub extent_id: u64,
    /// BLAKE3 of the stored bytes.
    pub checksum: [u8; 32],
    /// Txg in which this version was superseded ([`LIVE`] if current).
    pub death: u64,
}

/// Encoded size of an extent record.
pub const EXTENT_RECORD_LEN: usize = 72;

impl ExtentRecord {
    /// Encodes (72 bytes).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u8(self.flags)
            .u16(0)
            .u32(self.key_generation)
            .u64(self.addr)
            .u32(self.stored_len)
            .u32(self.logical_len)
            .u64(self.extent_id);
        w.0.extend_from_slice(&self.checksum);
        w.u64(self.death);
        debug_assert_eq!(w.0.len(), EXTENT_RECORD_LEN);
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "extent", 1)?;
        let flags = r.u8()?;
        if flags & !(EXT_COMPRESSED | EXT_ENCRYPTED) != 0 {
            return Err(r.err(format!("unknown flags {flags:#x}")));
        }
        r.u16()?;
        let e = Self {
            flags,
            key_generation: r.u32()?,
            addr: r.u64()?,
            stored_len: r.u32()?,
            logical_len: r.u32()?,
            extent_id: r.u64()?,
            checksum: r
                .take(32)?
                .try_into()
                .map_err(|_| r.err("checksum".into()))?,
            death: r.u64()?,
        };
        r.end()?;
        if !e.addr.is_multiple_of(4096) || e.stored_len == 0 || e.logical_len == 0 {
            return Err(RecordError {
                what: "extent",
                why: "unaligned address or empty extent".into(),
            });
        }
        Ok(e)
    }
}

// ------------------------------------------------------------------------------ inodes

/// Kinds of inode.
pub const INODE_OBJECT: u8 = 1;
/// A volume's block map.
pub const INODE_VOLUME: u8 = 2;

/// A stream of extents: an object part or a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeRecord {
    /// [`INODE_OBJECT`] or [`INODE_VOLUME`].
    pub kind: u8,
    /// All references: object versions, an upload's part record, a volume (freed at zero).
    pub refs: u32,
    /// References from live object versions.
    pub live_refs: u32,
    /// References from dead object versions (kept for snapshots or versioning).
    pub dead_refs: u32,
    /// Owning container.
    pub container: u64,
    /// Logical size in bytes.
    pub size: u64,
    /// Stored bytes of its live extents.
    pub stored: u64,
    /// Record size used for its extents.
    pub record_size: u32,
}

impl InodeRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u8(self.kind)
            .u16(0)
            .u32(self.refs)
            .u64(self.container)
            .u64(self.size)
            .u64(self.stored)
            .u32(self.record_size)
            .u32(self.live_refs)
            .u32(self.dead_refs);
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "inode", 1)?;
        let kind = r.u8()?;
        r.u16()?;
        let i = Self {
            kind,
            refs: r.u32()?,
            container: r.u64()?,
            size: r.u64()?,
            stored: r.u64()?,
            record_size: r.u32()?,
            live_refs: r.u32()?,
            dead_refs: r.u32()?,
        };
        r.end()?;
        if !matches!(kind, INODE_OBJECT | INODE_VOLUME)
            || i.record_size < 4096
            || i.record_size > (1 << 20)
        {
            return Err(RecordError {
                what: "inode",
                why: "bad kind or record size".into(),
            });
        }
        if u64::from(i.live_refs) + u64::from(i.dead_refs) > u64::from(i.refs) {
            return Err(RecordError {
                what: "inode",
                why: "more version references than references".into(),
            });
        }
        Ok(i)
    }
}

// ------------------------------------------------------------------------------ objects

/// Object version flags.
pub const OBJ_DELETE_MARKER: u8 = 1;
/// Legal hold in force.
pub const OBJ_LEGAL_HOLD: u8 = 2;
/// Retention is in compliance mode.
pub const OBJ_COMPLIANCE: u8 = 4;

/// One version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Flags ([`OBJ_DELETE_MARKER`], [`OBJ_LEGAL_HOLD`], [`OBJ_COMPLIANCE`]).
    pub flags: u8,
    /// Txg in which it was superseded ([`LIVE`] if current).
    pub death: u64,
    /// Size in bytes.
    pub size: u64,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Cannot change or be deleted before this Unix second (0 = no retention).
    pub retain_until: u64,
    /// ETag.
    pub etag: String,
    /// Content type.
    pub content_type: String,
    /// User metadata.
    pub user_meta: Vec<(String, String)>,
    /// Object-level policy (encoded [`crate::policy::Policy`]), empty if none.
    pub policy: Vec<u8>,
    /// Data, in order: (inode, bytes).
    pub parts: Vec<(u64, u64)>,
}

impl ObjectRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u8(self.flags)
            .u16(0)
            .u64(self.death)
            .u64(self.size)
            .u64(self.created_ms)
            .u64(self.retain_until);
        w.bytes(self.etag.as_bytes())
            .bytes(self.content_type.as_bytes());
        w.u16(u16::try_from(self.user_meta.len()).unwrap_or(0));
        for (k, v) in &self.user_meta {
            w.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        w.bytes(&self.policy);
        w.u32(u32::try_from(self.parts.len()).unwrap_or(0));
        for (i, n) in &self.parts {
            w.u64(*i).u64(*n);
        }
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "object", 1)?;
        let flags = r.u8()?;
        r.u16()?;
        let death = r.u64()?;
        let size = r.u64()?;
        let created_ms = r.u64()?;
        let retain_until = r.u64()?;
        let etag = r.string(limits::ETAG)?;
        let content_type = r.string(limits::CONTENT_TYPE)?;
        let n = usize::from(r.u16()?);
        let mut user_meta = Vec::with_capacity(n.min(64));
        let mut total = 0usize;
        for _ in 0..n {
            let k = r.string(limits::USER_META)?;
            let v = r.string(limits::USER_META)?;
            total += k.len() + v.len();
            if total > limits::USER_META {
                return Err(r.err("user metadata too large".into()));
            }
            user_meta.push((k, v));
        }
        let policy = r.bytes(limits::POLICY)?.to_vec();
        let np = r.u32()? as usize;
        if np > limits::PARTS {
            return Err(r.err(format!("{np} parts")));
        }
        let mut parts = Vec::with_capacity(np);
        let mut sum = 0u64;
        for _ in 0..np {
            let (i, len) = (r.u64()?, r.u64()?);
            sum = sum
                .checked_add(len)
                .ok_or_else(|| r.err("part sizes overflow".into()))?;
            parts.push((i, len));
        }
        r.end()?;
        if sum != size {
            return Err(RecordError {
                what: "object",
                why: format!("parts total {sum} but size {size}"),
            });
        }
        Ok(Self {
            flags,
            death,
            size,
            created_ms,
            retain_until,
            etag,
            content_type,
            user_meta,
            policy,
            parts,
        })
    }
}

// ------------------------------------------------------------------------------ containers

/// A bucket.
pub const KIND_BUCKET: u8 = 1;
/// A volume.
pub const KIND_VOLUME: u8 = 2;

/// A container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// [`KIND_BUCKET`] or [`KIND_VOLUME`].
    pub kind: u8,
    /// Record size of its data.
    pub record_size: u32,
    /// Id.
    pub id: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Volume size (0 for buckets).
    pub volume_size: u64,
    /// Volume inode (0 for buckets).
    pub volume_inode: u64,
    /// Logical bytes of live data.
    pub logical_bytes: u64,
    /// Stored bytes of live data.
    pub stored_bytes: u64,
    /// Stored bytes kept only for snapshots or old versions.
    pub retained_bytes: u64,
    /// Live objects (buckets).
    pub objects: u64,
    /// Txg of the newest snapshot (0 = none).
    pub last_snapshot: u64,
    /// The container's policy, sealed with the policy key (nonce + ciphertext + tag).
    pub policy: Vec<u8>,
}

impl ContainerRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u8(self.kind)
            .u16(0)
            .u32(self.record_size)
            .u64(self.id)
            .u64(self.created)
            .u64(self.volume_size)
            .u64(self.volume_inode);
        w.u64(self.logical_bytes)
            .u64(self.stored_bytes)
            .u64(self.retained_bytes)
            .u64(self.objects)
            .u64(self.last_snapshot);
        w.bytes(&self.policy);
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "container", 1)?;
        let kind = r.u8()?;
        r.u16()?;
        let c = Self {
            kind,
            record_size: r.u32()?,
            id: r.u64()?,
            created: r.u64()?,
            volume_size: r.u64()?,
            volume_inode: r.u64()?,
            logical_bytes: r.u64()?,
            stored_bytes: r.u64()?,
            retained_bytes: r.u64()?,
            objects: r.u64()?,
            last_snapshot: r.u64()?,
            policy: r.bytes(limits::POLICY)?.to_vec(),
        };
        r.end()?;
        if !matches!(kind, KIND_BUCKET | KIND_VOLUME) {
            return Err(RecordError {
                what: "container",
                why: format!("kind {kind}"),
            });
        }
        Ok(c)
    }
}

// ------------------------------------------------------------------------------ segments

/// Segment state: being filled (its committed bytes are in the intent log).
pub const SEG_OPEN: u8 = 1;
/// Written in place.
pub const SEG_SEALED: u8 = 2;

/// A segment in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRecord {
    /// [`SEG_OPEN`] or [`SEG_SEALED`].
    pub state: u8,
    /// Stored bytes of live extents in it.
    pub live_bytes: u64,
    /// Open: bytes durable in the intent log.
    pub logged: u64,
}

impl SegmentRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u8(self.state)
            .u16(0)
            .u64(self.live_bytes)
            .u64(self.logged);
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "segment", 1)?;
        let state = r.u8()?;
        r.u16()?;
        let s = Self {
            state,
            live_bytes: r.u64()?,
            logged: r.u64()?,
        };
        r.end()?;
        if !matches!(state, SEG_OPEN | SEG_SEALED) {
            return Err(RecordError {
                what: "segment",
                why: format!("state {state}"),
            });
        }
        Ok(s)
    }
}

// ------------------------------------------------------------------------------ snapshots, uploads, state

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Name.
    pub name: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Logical bytes of the container when taken.
    pub logical_bytes: u64,
}

impl SnapshotRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u64(self.created)
            .u64(self.logical_bytes)
            .bytes(self.name.as_bytes());
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "snapshot", 1)?;
        let s = Self {
            created: r.u64()?,
            logical_bytes: r.u64()?,
            name: r.string(limits::SNAPSHOT_NAME)?,
        };
        r.end()?;
        Ok(s)
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// Target key.
    pub key: String,
    /// Started, Unix milliseconds.
    pub created_ms: u64,
    /// Content type.
    pub content_type: String,
    /// User metadata.
    pub user_meta: Vec<(String, String)>,
}

impl UploadRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u64(self.created_ms)
            .bytes(self.key.as_bytes())
            .bytes(self.content_type.as_bytes());
        w.u16(u16::try_from(self.user_meta.len()).unwrap_or(0));
        for (k, v) in &self.user_meta {
            w.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "upload", 1)?;
        let created_ms = r.u64()?;
        let key = r.string(limits::KEY)?;
        let content_type = r.string(limits::CONTENT_TYPE)?;
        let n = usize::from(r.u16()?);
        let mut user_meta = Vec::new();
        let mut total = 0;
        for _ in 0..n {
            let (k, v) = (r.string(limits::USER_META)?, r.string(limits::USER_META)?);
            total += k.len() + v.len();
            if total > limits::USER_META {
                return Err(r.err("user metadata too large".into()));
            }
            user_meta.push((k, v));
        }
        r.end()?;
        Ok(Self {
            key,
            created_ms,
            content_type,
            user_meta,
        })
    }
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    /// Inode holding it.
    pub inode: u64,
    /// Bytes.
    pub size: u64,
    /// MD5 of the part, hex.
    pub etag: String,
}

impl PartRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u64(self.inode).u64(self.size).bytes(self.etag.as_bytes());
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "part", 1)?;
        let p = Self {
            inode: r.u64()?,
            size: r.u64()?,
            etag: r.string(limits::ETAG)?,
        };
        r.end()?;
        Ok(p)
    }
}

/// VDE-wide counters (meta key "state").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateRecord {
    /// Next container id.
    pub next_container: u64,
    /// Next inode.
    pub next_inode: u64,
    /// Extent ids below this may have been handed out; a new session starts here.
    pub extent_id_limit: u64,
    /// Last committed transaction group.
    pub txg: u64,
    /// Oldest intent-log sequence still needed.
    pub log_checkpoint: u64,
    /// Self-heal events (checksum failures repaired from redundancy).
    pub healed: u64,
    /// Intent-log sequence numbers below this may have been written; a new session starts
    /// here, so no number is ever used twice (also not by records of a commit a crash cut
    /// short).
    pub log_seq_limit: u64,
    /// Stored bytes of live object data whose owning container was deleted while another
    /// container's copy still refers to it.
    pub orphan_stored: u64,
    /// Same, for data kept only by snapshots or old versions.
    pub orphan_retained: u64,
}

impl StateRecord {
    /// Encodes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.u64(self.next_container)
            .u64(self.next_inode)
            .u64(self.extent_id_limit)
            .u64(self.txg)
            .u64(self.log_checkpoint)
            .u64(self.healed)
            .u64(self.log_seq_limit)
            .u64(self.orphan_stored)
            .u64(self.orphan_retained);
        w.0
    }

    /// Decodes.
    ///
    /// # Errors
    /// [`RecordError`].
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        let mut r = R::new(b, "state", 1)?;
        let s = Self {
            next_container: r.u64()?,
            next_inode: r.u64()?,
            extent_id_limit: r.u64()?,
            txg: r.u64()?,
            log_checkpoint: r.u64()?,
            healed: r.u64()?,
            log_seq_limit: r.u64()?,
            orphan_stored: r.u64()?,
            orphan_retained: r.u64()?,
        };
        r.end()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn object() -> ObjectRecord {
        ObjectRecord {
            flags: OBJ_LEGAL_HOLD,
            death: LIVE,
            size: 300,
            created_ms: 1_790_000_000_000,
            retain_until: 1_800_000_000,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            content_type: "text/plain".into(),
            user_meta: vec![("owner".into(), "ops".into())],
            policy: vec![1, 0, 0, 0, 0, 0, 0, 0],
            parts: vec![(7, 100), (9, 200)],
        }
    }

    #[test]
    fn records_roundtrip() {
        let e = ExtentRecord {
            flags: EXT_COMPRESSED | EXT_ENCRYPTED,
            key_generation: 2,
            addr: 1 << 30,
            stored_len: 1000,
            logical_len: 4096,
            extent_id: 99,
            checksum: [5; 32],
            death: LIVE,
        };
        assert_eq!(ExtentRecord::decode(&e.encode()), Ok(e));
        let o = object();
        assert_eq!(ObjectRecord::decode(&o.encode()), Ok(o));
        let c = ContainerRecord {
            kind: KIND_VOLUME,
            record_size: 4096,
            id: 3,
            created: 4,
            volume_size: 1 << 30,
            volume_inode: 8,
            logical_bytes: 1,
            stored_bytes: 2,
            retained_bytes: 3,
            objects: 0,
            last_snapshot: 12,
            policy: vec![9; 40],
        };
        assert_eq!(ContainerRecord::decode(&c.encode()), Ok(c));
        let i = InodeRecord {
            kind: INODE_OBJECT,
            refs: 2,
            container: 3,
            size: 10,
            stored: 9,
            record_size: 131_072,
            live_refs: 1,
            dead_refs: 1,
        };
        assert_eq!(InodeRecord::decode(&i.encode()), Ok(i));
        let s = SegmentRecord {
            state: SEG_OPEN,
            live_bytes: 10,
            logged: 8192,
        };
        assert_eq!(SegmentRecord::decode(&s.encode()), Ok(s));
        let st = StateRecord {
            next_container: 1,
            next_inode: 2,
            extent_id_limit: 3,
            txg: 4,
            log_checkpoint: 5,
            healed: 6,
            log_seq_limit: 7,
            orphan_stored: 8,
            orphan_retained: 9,
        };
        assert_eq!(StateRecord::decode(&st.encode()), Ok(st));
        let sn = SnapshotRecord {
            name: "daily".into(),
            created: 1,
            logical_bytes: 2,
        };
        assert_eq!(SnapshotRecord::decode(&sn.encode()), Ok(sn));
        let u = UploadRecord {
            key: "k".into(),
            created_ms: 1,
            content_type: "x".into(),
            user_meta: vec![],
        };
        assert_eq!(UploadRecord::decode(&u.encode()), Ok(u));
        let p = PartRecord {
            inode: 1,
            size: 2,
            etag: "e".into(),
        };
        assert_eq!(PartRecord::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let mut o = object();
        o.size = 301;
        assert!(
            ObjectRecord::decode(&o.encode()).is_err(),
            "parts must add up"
        );
        let mut b = object().encode();
        b.push(0);
        assert!(ObjectRecord::decode(&b).is_err(), "trailing bytes");
        assert!(ObjectRecord::decode(&[2]).is_err(), "version");
    }

    proptest::proptest! {
        #[test]
        fn decoders_are_total(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = ExtentRecord::decode(&b);
            let _ = InodeRecord::decode(&b);
            let _ = ObjectRecord::decode(&b);
            let _ = ContainerRecord::decode(&b);
            let _ = SegmentRecord::decode(&b);
            let _ = SnapshotRecord::decode(&b);
            let _ = UploadRecord::decode(&b);
            let _ = PartRecord::decode(&b);
            let _ = StateRecord::decode(&b);
        }
    }
}
