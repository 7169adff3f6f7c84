//! The VDE engine: creating and opening a VDE, transactions and durable commits, id
//! reservation, and the data path (compress, encrypt, checksum, place; read, verify, heal).
//!
//! Commit protocol. Operations change metadata in redb write transactions committed without
//! durability (visible at once). [`Inner::sync`] makes everything up to a transaction durable
//! with a group commit: the leader takes redb's write lock (so no other transaction commits in
//! between), writes the unlogged tails of open segments to the intent log, records segment
//! states, and commits with two-phase durability: redb's first flush makes every data write and
//! log record durable before its second write makes the new metadata root visible. Followers
//! wait for the leader. So metadata that references data is never durable before that data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dw_blockdev::AlignedBuf;
use parking_lot::{Condvar, Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use uuid::Uuid;

use crate::backing::Backing;
use crate::codec;
use crate::crypto::{KeySchedule, MasterKey, TAG_LEN, extent_aad, extent_nonce};
use crate::errors::{OpenError, VdeError};
use crate::format::{
    self, BLOCK, FormatError, Header, KEYSLOTS_A, KEYSLOTS_B, KEYSLOTS_LEN, KEYSLOTS_MAX_BLOB,
    META_START, RECOVERY, REGDIR_A, REGDIR_B, RecoveryBlock, Region, RegionDirectory, RegionKind,
};
use crate::metastore::{MetaBackend, MetaGauge};
use crate::policy::{self, Compression, Encryption, Policy};
use crate::records::{
    self, ExtentRecord, FREE_QUEUE, INODES, InodeRecord, LIVE, META, SEG_OPEN, SEG_SEALED,
    SEGMENTS, SegmentRecord, StateRecord, WRITING,
};
use crate::segments::{SegmentLayout, Segments};

/// Ids are reserved this many at a time, in a durable commit, before any is used: an id is an
/// AES-GCM nonce and must never repeat, also not after a crash.
const ID_BLOCK: u64 = 1 << 20;
/// Extents freed per transaction when draining the free queue.
const FREE_BATCH: usize = 4096;
/// Intent-log sequence numbers are reserved this many at a time, durably, before any is used
/// (see `StateRecord::log_seq_limit`) ...
const LOG_SEQ_BLOCK: u64 = 1 << 20;
/// ... and the reservation is raised when fewer than this many are left (a commit writes at
/// most one record per open segment slot, far fewer).
const LOG_SEQ_MARGIN: u64 = 1 << 16;

/// What the metadata guard charges one operation between measurements: five 4 KiB pages, a
/// leaf and its branch path copied (redb copies on write, and pages a transaction frees are
/// reused only after the next durable commit).
const META_CHARGE: u64 = 20 << 10;

/// The metadata guard's last measurement and what it has charged since.
#[derive(Debug, Default)]
struct MetaCheck {
    /// Bytes the store had allocated when last measured.
    used: u64,
    /// Charged since then.
    charged: u64,
    /// Found over the limit: when, and the free epoch and durable txg then (a free or a
    /// durable commit makes it look again).
    full: Option<(std::time::Instant, (u64, u64))>,
}

/// A segment's record, or a fresh open one when it has none yet.
fn segment_or_open(
    t: &impl ReadableTable<u64, &'static [u8]>,
    seg: u64,
) -> Result<SegmentRecord, VdeError> {
    Ok(match t.get(seg)? {
        Some(v) => {
            SegmentRecord::decode(v.value()).map_err(|e| VdeError::Corrupt(e.to_string()))?
        }
        None => SegmentRecord {
            state: SEG_OPEN,
            live_bytes: 0,
            logged: 0,
        },
    })
}

fn meta_full(used: u64, reach: u64, reserve: u64) -> VdeError {
    VdeError::NoSpace(format!(
        "the metadata region is full ({used} of {reach} bytes in use, {reserve} kept for deletes); delete data or snapshots, or use larger records (fewer metadata entries per byte)"
    ))
}

/// Options for [`crate::Vde::format`].
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// A label for people (at most 128 bytes), also in the recovery block.
    pub label: String,
    /// Administrator contact for whoever finds the disk (at most 1024 bytes).
    pub admin_contact: String,
    /// VDE-level policy.
    pub policy: Policy,
    /// Metadata region size (default: 2 % of the device, 16 MiB .. 64 GiB).
    pub metadata_bytes: Option<u64>,
    /// Intent log size (default: 0.5 % of the device, 8 MiB .. 1 GiB).
    pub log_bytes: Option<u64>,
    /// Identity and creation time (Unix seconds) to use instead of a random UUID and the
    /// current time: for reproducible images (format tests, golden files). Never reuse an
    /// identity for two VDEs.
    pub identity: Option<(Uuid, u64)>,
}

/// What a caller can learn about a device without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The header (from the valid copy with the higher generation).
    pub header: Header,
    /// The recovery block, if readable.
    pub recovery: Option<RecoveryBlock>,
}

#[derive(Debug)]
struct Ids {
    next_extent: u64,
    extent_limit: u64,
    next_inode: u64,
    inode_limit: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    durable: u64,
    leader: bool,
}

/// What a durable commit recorded, to finish once redb's commit returned.
#[derive(Debug)]
struct DurableWork {
    changes: crate::segments::SegmentChanges,
    /// Segments released by this commit (reusable once it is durable).
    released: Vec<u64>,
    /// The log sequence limit it recorded.
    seq_limit: u64,
}

/// Shared state of an open VDE.
#[derive(Debug)]
pub(crate) struct Inner {
    pub backing: Arc<dyn Backing>,
    pub uuid: Uuid,
    pub header: Mutex<Header>,
    pub regdir: RegionDirectory,
    pub recovery: Mutex<RecoveryBlock>,
    pub keys: RwLock<KeySchedule>,
    pub db: Database,
    /// The metadata store's size (for the space guard).
    pub meta: MetaGauge,
    /// The metadata guard's state.
    meta_check: Mutex<MetaCheck>,
    pub segs: Segments,
    ids: Mutex<Ids>,
    /// The last txg handed out.
    txg: AtomicU64,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    pub vde_policy: RwLock<Policy>,
    pub healed: AtomicU64,
    pins: Mutex<HashMap<u64, u32>>,
    /// Bumped after a commit queues inodes for freeing (or an inode is unpinned); the free
    /// queue is scanned only when it moved since the last drain, so most operations do not pay
    /// a transaction for an empty queue.
    free_epoch: AtomicU64,
    free_drained: AtomicU64,
    pub read_only: Option<String>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ulen(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn read_block(backing: &dyn Backing, at: u64) -> Result<AlignedBuf, dw_blockdev::IoError> {
    let mut b = AlignedBuf::zeroed(BLOCK);
    backing.dev().read_at(&mut b, at)?;
    Ok(b)
}

/// Plans the regions for a device.
fn plan_regions(
    g: &crate::backing::BackingGeometry,
    opts: &FormatOptions,
) -> Result<RegionDirectory, OpenError> {
    const MIB: u64 = 1 << 20;
    let size = g.size;
    if size < 64 * MIB {
        return Err(OpenError::Unsuitable(format!(
            "{size} bytes; a VDE needs at least 64 MiB"
        )));
    }
    let align = |v: u64| v / BLOCK as u64 * BLOCK as u64;
    let mut meta = align(
        opts.metadata_bytes
            .unwrap_or((size / 32).clamp(16 * MIB, 64 << 30)),
    );
    let mut log = align(
        opts.log_bytes
            .unwrap_or((size / 200).clamp(8 * MIB, 1 << 30)),
    );
    // Metadata and log must sit in the part of the device that accepts small writes.
    let room = g.small_write_end.saturating_sub(META_START);
    if meta + log > room {
        let total = meta + log;
        meta = align(meta * room / total);
        log = align(log * room / total);
    }
    if meta < 4 * MIB || log < 2 * MIB {
        return Err(OpenError::Unsuitable(format!(
            "only {} bytes accept small writes on this device; the VDE needs at least 6 MiB there for metadata and its intent log (create the array with a larger small-write region)",
            room
        )));
    }
    let log_start = META_START + meta;
    let log_end = log_start + log;
    let stripe = g.stripe_bytes.max(BLOCK as u64);
    let base = g.stripe_base;
    let data_start = if log_end <= base {
        base
    } else {
        base + (log_end - base).div_ceil(stripe) * stripe
    };
    let seg_bytes = stripe * (2 * MIB).div_ceil(stripe);
    let count = size.saturating_sub(data_start) / seg_bytes;
    if count < 4 {
        return Err(OpenError::Unsuitable(format!(
            "{size} bytes leave room for {count} data segments of {seg_bytes} bytes; at least 4 are needed"
        )));
    }
    let mk = |kind, offset, length| Region {
        kind,
        offset,
        length,
    };
    let rd = RegionDirectory {
        regions: vec![
            mk(RegionKind::HeaderA, format::HEADER_A, BLOCK as u64),
            mk(RegionKind::HeaderB, format::HEADER_B, BLOCK as u64),
            mk(RegionKind::RegdirA, REGDIR_A, BLOCK as u64),
            mk(RegionKind::RegdirB, REGDIR_B, BLOCK as u64),
            mk(RegionKind::Recovery, RECOVERY, BLOCK as u64),
            mk(RegionKind::KeyslotsA, KEYSLOTS_A, KEYSLOTS_LEN),
            mk(RegionKind::KeyslotsB, KEYSLOTS_B, KEYSLOTS_LEN),
            mk(RegionKind::Metadata, META_START, meta),
            mk(RegionKind::Log, log_start, log),
            mk(RegionKind::Data, data_start, count * seg_bytes),
        ],
        segment_bytes: seg_bytes,
    };
    rd.validate(size)?;
    Ok(rd)
}

fn seg_layout(rd: &RegionDirectory) -> SegmentLayout {
    let data = rd.get(RegionKind::Data).unwrap_or(Region {
        kind: RegionKind::Data,
        offset: 0,
        length: 0,
    });
    let log = rd.get(RegionKind::Log).unwrap_or(Region {
        kind: RegionKind::Log,
        offset: 0,
        length: 0,
    });
    SegmentLayout {
        data_start: data.offset,
        seg_bytes: rd.segment_bytes,
        count: data.length / rd.segment_bytes,
        log_start: log.offset,
        log_len: log.length,
    }
}

/// The header seal over header bytes 0..176 and the region directory block.
fn compute_seal(keys: &KeySchedule, header: &Header, regdir_block: &[u8]) -> [u8; 32] {
    let b = header.encode();
    keys.seal_mac(&[&b[..format::SEALED_HEADER_BYTES], regdir_block])
}

/// The header's key check value with the current seal key.
fn key_check(keys: &KeySchedule, uuid: &Uuid) -> [u8; 32] {
    keys.seal_mac(&[KEY_CHECK_CONTEXT, uuid.as_bytes()])
}

/// What the key check value authenticates, before the identity.
const KEY_CHECK_CONTEXT: &[u8] = b"DWVD key check";

/// Seals a policy with the policy key (random nonce: policy writes are rare).
pub(crate) fn seal_policy(keys: &KeySchedule, vde: &Uuid, scope: u64, p: &Policy) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    let aad = policy_aad(vde, scope);
    let mut buf = policy::encode(p);
    keys.policy().seal(nonce, &aad, &mut buf);
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Opens a sealed policy; a policy that fails authentication was altered offline.
pub(crate) fn open_policy(
    keys: &KeySchedule,
    vde: &Uuid,
    scope: u64,
    b: &[u8],
) -> Result<Policy, VdeError> {
    if b.is_empty() {
        return Ok(Policy::default());
    }
    if b.len() < 12 + TAG_LEN {
        return Err(VdeError::Corrupt("policy record too short".into()));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&b[..12]);
    for k in keys.policy_keys() {
        let mut buf = b[12..].to_vec();
        if let Ok(n) = k.open(nonce, &policy_aad(vde, scope), &mut buf) {
            return policy::decode(&buf[..n]).map_err(VdeError::Corrupt);
        }
    }
    Err(VdeError::Corrupt(
        "a policy record fails authentication: it was altered without the key".into(),
    ))
}

pub(crate) fn policy_aad(vde: &Uuid, scope: u64) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(b"DWVD-POL");
    a[8..24].copy_from_slice(vde.as_bytes());
    a[24..32].copy_from_slice(&scope.to_le_bytes());
    a
}

/// Scope of the VDE-level policy (containers use their id, which starts at 1).
pub(crate) const VDE_SCOPE: u64 = 0;

/// What `Inner::finish_open` must repair in the header.
#[derive(Debug, Clone, Copy)]
struct HeaderFix {
    /// Key generation the header on disk is sealed with.
    sealed_with: u32,
    /// A key rotation was interrupted before the header was rewritten.
    roll_forward: bool,
    /// The recovery block on disk verified.
    recovery_found: bool,
    /// A header or region-directory copy is damaged or stale, or the key check value is
    /// missing.
    repair_copies: bool,
}

/// A recovery block rebuilt from what the header knows (label, contact and note are lost).
fn rebuilt_recovery(h: &Header) -> RecoveryBlock {
    RecoveryBlock {
        uuid: h.uuid,
        created: h.created,
        major: h.major,
        minor: h.minor,
        device_bytes: h.device_bytes,
        label: String::new(),
        contact: String::new(),
        note: "This disk holds a DataWarehouse VDE. This block was rebuilt after damage; the label and administrator contact were lost.".into(),
    }
}

impl Inner {
    // -------------------------------------------------------------------- creation and opening

    pub(crate) fn format(
        backing: Arc<dyn Backing>,
        key: &MasterKey,
        opts: &FormatOptions,
    ) -> Result<Arc<Self>, OpenError> {
        let g = backing.geometry();
        let rd = plan_regions(&g, opts)?;
        let (uuid, created) = opts
            .identity
            .unwrap_or_else(|| (Uuid::new_v4(), now_secs()));
        let recovery = RecoveryBlock {
            uuid,
            created,
            major: format::VERSION_MAJOR,
            minor: format::VERSION_MINOR,
            device_bytes: g.size,
            label: opts.label.clone(),
            contact: opts.admin_contact.clone(),
            note: "This disk holds a DataWarehouse VDE (virtual disk environment). Its contents may be encrypted; \
                   they open with the appliance's TPM, a recovery passphrase or a peer release. Contact the administrator above."
                .into(),
        };
        recovery.validate()?;
        let keys = KeySchedule::new(key, &[]);
        let rd_block = rd.encode();
        let rc_block = recovery.encode();
        let mut header = Header {
            major: format::VERSION_MAJOR,
            minor: format::VERSION_MINOR,
            incompat: format::INCOMPAT_SEGMENTS,
            ro_compat: 0,
            compat: 0,
            min_reader: 1,
            min_writer: 1,
            uuid,
            created,
            generation: 1,
            device_bytes: g.size,
            key_generation: key.generation(),
            regdir_hash: *blake3::hash(&rd_block).as_bytes(),
            recovery_mac: keys.seal_mac(&[&rc_block]),
            seal: [0; 32],
            key_check: key_check(&keys, &uuid),
        };
        header.seal = compute_seal(&keys, &header, &rd_block);
        let dev = backing.dev();
        // Clear what an earlier occupant left in the fixed area, metadata slots and log head.
        let zeros = AlignedBuf::zeroed(ulen(META_START));
        dev.write_at(&zeros, 0)?;
        let meta = rd.get(RegionKind::Metadata).map_or(0, |r| r.offset);
        let log = rd.get(RegionKind::Log).map_or(
            Region {
                kind: RegionKind::Log,
                offset: 0,
                length: 0,
            },
            |r| r,
        );
        dev.write_at(&zeros[..2 * BLOCK], meta)?;
        // The log must read as zeros (no stale record of an earlier VDE with this identity).
        // A discard says so without writing it all (up to 1 GiB); devices that cannot discard
        // get zeros written.
        if dev.discard(log.offset, log.length).is_err() {
            let mut at = log.offset;
            let chunk = zeros.len() as u64;
            while at < log.offset + log.length {
                let n = chunk.min(log.offset + log.length - at);
                dev.write_at(&zeros[..ulen(n)], at)?;
                at += n;
            }
        }
        dev.write_at(&AlignedBuf::from_slice(&rc_block), RECOVERY)?;
        dev.write_at(&AlignedBuf::from_slice(&rd_block), REGDIR_A)?;
        dev.write_at(&AlignedBuf::from_slice(&rd_block), REGDIR_B)?;
        dev.write_at(&AlignedBuf::from_slice(&header.encode()), format::HEADER_A)?;
        dev.flush()?;
        dev.write_at(&AlignedBuf::from_slice(&header.encode()), format::HEADER_B)?;
        dev.flush()?;
        let inner = Self::start(backing, header, rd, recovery, keys, None, true)?;
        {
            let sealed = seal_policy(&inner.keys.read(), &inner.uuid, VDE_SCOPE, &opts.policy);
            let (_, txg) = inner
                .txn(|t| {
                    let mut m = t.tx.open_table(META)?;
                    m.insert("vde_policy", sealed.as_slice())?;
                    // A copy of the recovery block, to repair the block from when it is damaged.
                    m.insert("recovery", rc_block.as_slice())?;
                    Ok(())
                })
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            inner
                .sync(txg)
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            *inner.vde_policy.write() = opts.policy;
        }
        tracing::info!(
            "formatted VDE {uuid} ({} bytes, {} data segments)",
            g.size,
            inner.segs.layout.count
        );
        Ok(inner)
    }

    /// Reads the header, region directory and recovery block without keys.
    pub(crate) fn probe(
        backing: &dyn Backing,
    ) -> Result<(Header, RegionDirectory, Option<RecoveryBlock>, Vec<String>), OpenError> {
        let mut notes = Vec::new();
        let a = read_block(backing, format::HEADER_A).map(|b| Header::decode(&b));
        let b = read_block(backing, format::HEADER_B).map(|b| Header::decode(&b));
        let (a, b) = (a?, b?);
        let header = match (&a, &b) {
            (Ok(x), Ok(y)) => {
                if x != y {
                    notes.push("header copies differ; using the newer".into());
                }
                if y.generation > x.generation {
                    y.clone()
                } else {
                    x.clone()
                }
            }
            (Ok(x), Err(e)) | (Err(e), Ok(x)) => {
                notes.push(format!(
                    "a header copy is unusable ({e}); it will be repaired"
                ));
                x.clone()
            }
            (Err(FormatError::NoMagic(_)), Err(FormatError::NoMagic(_))) => {
                return Err(OpenError::NotAVde);
            }
            (Err(ea), Err(eb)) => {
                return Err(OpenError::HeaderDamaged {
                    a: ea.to_string(),
                    b: eb.to_string(),
                });
            }
        };
        let mut regdir = None;
        let mut rd_errs = Vec::new();
        for at in [REGDIR_A, REGDIR_B] {
            let blk = read_block(backing, at)?;
            if *blake3::hash(&blk).as_bytes() != header.regdir_hash {
                rd_errs.push(format!("copy at {at} does not match the header"));
                continue;
            }
            match RegionDirectory::decode(&blk, header.device_bytes) {
                Ok(rd) => {
                    regdir.get_or_insert(rd);
                }
                Err(e) => rd_errs.push(e.to_string()),
            }
        }
        let Some(regdir) = regdir else {
            return Err(OpenError::HeaderDamaged {
                a: "region directory unusable".into(),
                b: rd_errs.join("; "),
            });
        };
        if !rd_errs.is_empty() {
            notes.push(format!(
                "a region directory copy is unusable ({}); it will be repaired",
                rd_errs.join("; ")
            ));
        }
        let recovery = match read_block(backing, RECOVERY).map(|b| RecoveryBlock::decode(&b)) {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                notes.push(format!("recovery block unusable: {e}"));
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok((header, regdir, recovery, notes))
    }

    pub(crate) fn open(
        backing: Arc<dyn Backing>,
        key: &MasterKey,
        older: &[MasterKey],
        read_only: bool,
    ) -> Result<Arc<Self>, OpenError> {
        let (header, regdir, recovery, notes) = Self::probe(backing.as_ref())?;
        for n in &notes {
            tracing::warn!("VDE {}: {n}", header.uuid);
        }
        let g = backing.geometry();
        if g.size < header.device_bytes {
            return Err(OpenError::Unsuitable(format!(
                "the VDE spans {} bytes but the device has {}",
                header.device_bytes, g.size
            )));
        }
        let mut keys = KeySchedule::new(key, older);
        let rd_block = regdir.encode();
        // The header is sealed with the generation it records; a rotation interrupted before
        // the header was rewritten leaves it sealed with an older key, which is rolled forward.
        let sealed_with = header.key_generation;
        if key.generation() < sealed_with {
            return Err(OpenError::Unsuitable(format!(
                "the key given as current is generation {} but the VDE's master key was rotated to generation {sealed_with}: open it with the newer key",
                key.generation()
            )));
        }
        let hb = header.encode();
        let mac = keys.seal_mac_with(
            sealed_with,
            &[&hb[..format::SEALED_HEADER_BYTES], &rd_block],
        );
        let check = keys.seal_mac_with(sealed_with, &[KEY_CHECK_CONTEXT, header.uuid.as_bytes()]);
        if mac != Some(header.seal) {
            // The key check value tells a wrong key from an altered header (all zero: a header
            // written before it existed, which cannot tell).
            return Err(if header.key_check == [0; 32] {
                OpenError::SealMismatch
            } else if check == Some(header.key_check) {
                OpenError::Tampered
            } else {
                OpenError::WrongKey
            });
        }
        let roll_forward = sealed_with != key.generation();
        // The recovery block is informational: a damaged one is rebuilt (finish_open); one that
        // decodes but does not match its MAC was edited by someone without the key, and its
        // contact details must not be trusted silently.
        let (recovery, recovery_found) = match recovery {
            Some(r)
                if keys.seal_mac_with(sealed_with, &[&r.encode()]) == Some(header.recovery_mac) =>
            {
                (r, true)
            }
            Some(_) => return Err(OpenError::RecoveryBlockAltered),
            None => (rebuilt_recovery(&header), false),
        };
        let ro = if read_only {
            Some("opened read-only".to_owned())
        } else {
            header.write_blocker()
        };
        if ro.is_none() && roll_forward {
            keys = keys.rotated(key);
        }
        let fix = HeaderFix {
            sealed_with,
            roll_forward,
            recovery_found,
            repair_copies: !notes.is_empty() || check != Some(header.key_check),
        };
        let inner = Self::start(backing, header, regdir, recovery, keys, ro, false)?;
        inner.finish_open(&fix)?;
        Ok(inner)
    }

    /// After the metadata store is open: rebuilds a damaged recovery block (from the copy in
    /// the metadata, else from the header), finishes the header of an interrupted key rotation
    /// and repairs damaged or stale header and region-directory copies.
    fn finish_open(&self, fix: &HeaderFix) -> Result<(), OpenError> {
        let mut rb = self.recovery.lock().clone();
        let mut mac_ok = fix.recovery_found;
        if !fix.recovery_found {
            let copy = self
                .db
                .begin_read()
                .ok()
                .and_then(|rx| rx.open_table(META).ok())
                .and_then(|m| m.get("recovery").ok().flatten().map(|v| v.value().to_vec()))
                .and_then(|b| RecoveryBlock::decode(&b).ok());
            let header_mac = self.header.lock().recovery_mac;
            if let Some(c) = copy
                && self
                    .keys
                    .read()
                    .seal_mac_with(fix.sealed_with, &[&c.encode()])
                    == Some(header_mac)
            {
                rb = c;
                mac_ok = true;
            }
            tracing::warn!(
                "VDE {}: the emergency recovery block is damaged; rebuilt from {}",
                self.uuid,
                if mac_ok {
                    "its copy in the metadata"
                } else {
                    "the header (label and contact lost: set them again)"
                }
            );
            *self.recovery.lock() = rb.clone();
        }
        if self.read_only.is_some() {
            return Ok(());
        }
        let dev = self.backing.dev();
        if !fix.recovery_found {
            dev.write_at(&AlignedBuf::from_slice(&rb.encode()), RECOVERY)?;
        }
        if !(fix.roll_forward || !mac_ok || fix.repair_copies) {
            return Ok(());
        }
        let keys = self.keys.read();
        let mut header = self.header.lock();
        let mut h = header.clone();
        h.key_generation = keys.current;
        h.generation += 1;
        h.recovery_mac = keys.seal_mac(&[&rb.encode()]);
        h.key_check = key_check(&keys, &self.uuid);
        let rd_block = self.regdir.encode();
        h.seal = compute_seal(&keys, &h, &rd_block);
        dev.write_at(&AlignedBuf::from_slice(&rd_block), REGDIR_A)?;
        dev.write_at(&AlignedBuf::from_slice(&rd_block), REGDIR_B)?;
        dev.write_at(&AlignedBuf::from_slice(&h.encode()), format::HEADER_A)?;
        dev.flush()?;
        dev.write_at(&AlignedBuf::from_slice(&h.encode()), format::HEADER_B)?;
        dev.flush()?;
        *header = h;
        tracing::info!(
            "VDE {}: header rewritten (repaired copies, key rotation finished or recovery block rebuilt)",
            self.uuid
        );
        Ok(())
    }

    /// Opens the metadata store, recovers segments and the free queue, reserves ids.
    fn start(
        backing: Arc<dyn Backing>,
        header: Header,
        regdir: RegionDirectory,
        recovery: RecoveryBlock,
        keys: KeySchedule,
        read_only: Option<String>,
        fresh: bool,
    ) -> Result<Arc<Self>, OpenError> {
        let meta = regdir
            .get(RegionKind::Metadata)
            .ok_or_else(|| OpenError::Unsuitable("no metadata region".into()))?;
        let be = MetaBackend::open(Arc::clone(&backing), meta.offset, meta.length)
            .map_err(|e| OpenError::Metadata(e.to_string()))?;
        let meta_gauge = be.gauge();
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create_with_backend(be)
            .map_err(|e| OpenError::Metadata(e.to_string()))?;
        let state;
        let mut used = Vec::new();
        let mut open_segs = Vec::new();
        let mut stale_segs = Vec::new();
        let mut vde_policy = Policy::default();
        if fresh {
            state = StateRecord {
                next_container: 1,
                next_inode: 1,
                extent_id_limit: 1,
                txg: 0,
                log_checkpoint: 0,
                healed: 0,
                log_seq_limit: 0,
                orphan_stored: 0,
                orphan_retained: 0,
            };
            let tx = db
                .begin_write()
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            {
                let mut m = tx
                    .open_table(META)
                    .map_err(|e| OpenError::Metadata(e.to_string()))?;
                m.insert("state", state.encode().as_slice())
                    .map_err(|e| OpenError::Metadata(e.to_string()))?;
            }
            create_tables(&tx).map_err(|e| OpenError::Metadata(e.to_string()))?;
            tx.commit()
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
        } else {
            let rx = db
                .begin_read()
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            let m = rx
                .open_table(META)
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            let s = m
                .get("state")
                .map_err(|e| OpenError::Metadata(e.to_string()))?
                .ok_or_else(|| OpenError::Metadata("no state record".into()))?;
            state =
                StateRecord::decode(s.value()).map_err(|e| OpenError::Metadata(e.to_string()))?;
            if let Some(p) = m
                .get("vde_policy")
                .map_err(|e| OpenError::Metadata(e.to_string()))?
            {
                vde_policy = open_policy(&keys, &header.uuid, VDE_SCOPE, p.value())
                    .map_err(|e| OpenError::Metadata(e.to_string()))?;
            }
            let segs = rx
                .open_table(SEGMENTS)
                .map_err(|e| OpenError::Metadata(e.to_string()))?;
            for r in segs
                .iter()
                .map_err(|e| OpenError::Metadata(e.to_string()))?
            {
                let (k, v) = r.map_err(|e| OpenError::Metadata(e.to_string()))?;
                let rec = SegmentRecord::decode(v.value())
                    .map_err(|e| OpenError::Metadata(e.to_string()))?;
                used.push(k.value());
                if rec.state == SEG_OPEN && rec.logged > 0 {
                    open_segs.push((k.value(), rec.logged));
                } else if rec.live_bytes == 0 || rec.state == SEG_OPEN {
                    // Empty sealed segments whose release a crash interrupted, and open
                    // segments with nothing in the log (an older version's leak): repaired
                    // below.
                    stale_segs.push(k.value());
                }
            }
        }
        let layout = seg_layout(&regdir);
        let segs = Segments::new(
            Arc::clone(&backing),
            layout,
            header.uuid,
            &used,
            state.log_seq_limit.max(state.log_checkpoint),
        );
        if !open_segs.is_empty() {
            segs.recover(&open_segs, state.log_checkpoint)
                .map_err(|e| OpenError::Recovery(e.to_string()))?;
        }
        let inner = Arc::new(Self {
            uuid: header.uuid,
            backing,
            header: Mutex::new(header),
            regdir,
            recovery: Mutex::new(recovery),
            keys: RwLock::new(keys),
            db,
            meta: meta_gauge,
            meta_check: Mutex::new(MetaCheck::default()),
            segs,
            ids: Mutex::new(Ids {
                next_extent: state.extent_id_limit,
                extent_limit: state.extent_id_limit,
                next_inode: state.next_inode,
                inode_limit: state.next_inode,
            }),
            txg: AtomicU64::new(state.txg),
            sync: Mutex::new(SyncState {
                durable: state.txg,
                leader: false,
            }),
            sync_cv: Condvar::new(),
            vde_policy: RwLock::new(vde_policy),
            healed: AtomicU64::new(state.healed),
            pins: Mutex::new(HashMap::new()),
            free_epoch: AtomicU64::new(1),
            free_drained: AtomicU64::new(0),
            read_only,
        });
        if inner.read_only.is_none() {
            let rec = |e: VdeError| OpenError::Recovery(e.to_string());
            if !open_segs.is_empty() {
                // Put the recovered segments in place (padded) before the log is reused.
                inner.segs.seal_all().map_err(rec)?;
                let t = inner.durable_commit().map_err(rec)?;
                inner.sync.lock().durable = t;
                tracing::warn!(
                    "VDE {}: recovered {} open segments from the intent log",
                    inner.uuid,
                    open_segs.len()
                );
            }
            // Inodes a crash left half-written are freed; segments left empty are released.
            let (_, txg) = inner
                .txn(|t| {
                    t.repair_segments(&stale_segs)?;
                    let mut w = t.tx.open_table(WRITING)?;
                    let mut q = t.tx.open_table(FREE_QUEUE)?;
                    let stale: Vec<u64> = w
                        .iter()?
                        .filter_map(Result::ok)
                        .map(|(k, _)| k.value())
                        .collect();
                    for i in stale {
                        w.remove(i)?;
                        q.insert(i, now_secs())?;
                    }
                    t.queued_free = true;
                    Ok(())
                })
                .map_err(rec)?;
            inner.sync(txg).map_err(rec)?;
            inner.reserve_ids().map_err(rec)?;
            inner.drain_free_queue().map_err(rec)?;
        }
        Ok(inner)
    }

    // -------------------------------------------------------------------- transactions

    pub(crate) fn writable(&self) -> Result<(), VdeError> {
        match &self.read_only {
            Some(r) => Err(VdeError::ReadOnly(r.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f` in a write transaction committed without durability; returns its result and
    /// txg. Durability comes with [`Inner::sync`].
    pub(crate) fn txn<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, VdeError>,
    ) -> Result<(T, u64), VdeError> {
        self.txn_with(false, f)
    }

    /// [`Inner::txn`] made durable in the same redb transaction (with everything committed
    /// before it): one transaction instead of a transaction and a group commit, which halves
    /// the metadata pages an acknowledged operation writes.
    pub(crate) fn txn_sync<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, VdeError>,
    ) -> Result<(T, u64), VdeError> {
        self.txn_with(true, f)
    }

    fn txn_with<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, VdeError>,
    ) -> Result<(T, u64), VdeError> {
        self.writable()?;
        let mut tx = self.db.begin_write()?;
        if durable {
            tx.set_two_phase_commit(true);
        } else {
            tx.set_durability(redb::Durability::None)?;
        }
        // Taken under redb's write lock, so txgs follow commit order. Only durable commits
        // store it (in the state record): a crash loses the non-durable ones anyway.
        let txg = self.txg.fetch_add(1, Ordering::SeqCst) + 1;
        let mut t = Txn {
            tx,
            txg,
            released: Vec::new(),
            queued_free: false,
            inner: self,
            charges: std::collections::BTreeMap::new(),
        };
        let out = f(&mut t)?;
        t.apply_charges()?;
        let Txn {
            tx,
            released,
            queued_free,
            ..
        } = t;
        let work = if durable {
            Some(self.record_durable(&tx, txg)?)
        } else {
            None
        };
        if let Err(e) = tx.commit() {
            if let Some(w) = &work {
                self.durable_failed(w);
            }
            return Err(e.into());
        }
        if let Some(w) = &work {
            self.durable_done(w);
            let mut st = self.sync.lock();
            st.durable = st.durable.max(txg);
            self.sync_cv.notify_all();
        }
        if queued_free {
            self.free_epoch.fetch_add(1, Ordering::AcqRel);
        }
        for seg in released {
            self.segs.release(seg);
        }
        Ok((out, txg))
    }

    /// Makes every transaction up to `txg` durable (group commit).
    pub(crate) fn sync(&self, txg: u64) -> Result<(), VdeError> {
        let mut st = self.sync.lock();
        loop {
            if st.durable >= txg {
                return Ok(());
            }
            if st.leader {
                self.sync_cv.wait(&mut st);
                continue;
            }
            st.leader = true;
            drop(st);
            let r = self.durable_commit();
            st = self.sync.lock();
            st.leader = false;
            self.sync_cv.notify_all();
            match r {
                Ok(t) => st.durable = st.durable.max(t),
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes everything committed so far durable; returns the txg it covers.
    pub(crate) fn durable_commit(&self) -> Result<u64, VdeError> {
        let mut tx = self.db.begin_write()?;
        tx.set_two_phase_commit(true);
        let txg = self.txg.fetch_add(1, Ordering::SeqCst) + 1;
        let w = self.record_durable(&tx, txg)?;
        match tx.commit() {
            Ok(()) => {
                self.durable_done(&w);
                Ok(txg)
            }
            Err(e) => {
                self.durable_failed(&w);
                Err(e.into())
            }
        }
    }

    /// Records in `tx` (a two-phase, durable transaction, the write lock held, so nothing
    /// commits in between) what a durable commit must: logs the unlogged tails of open
    /// segments, records segment states, releases what can be released, and stores the state
    /// (txg, log checkpoint, log sequence limit, heal count). redb's first flush then makes the
    /// data and log writes durable before its second makes this metadata visible.
    fn record_durable(&self, tx: &WriteTransaction, txg: u64) -> Result<DurableWork, VdeError> {
        let mut state = read_state(tx)?;
        state.txg = txg;
        let changes = self.segs.prepare_commit(state.log_checkpoint)?;
        let mut w = DurableWork {
            changes,
            released: Vec::new(),
            seq_limit: 0,
        };
        let applied = (|| -> Result<(), VdeError> {
            let changes = &w.changes;
            let mut segs = tx.open_table(SEGMENTS)?;
            for &(seg, logged) in &changes.open {
                let mut r = segment_or_open(&segs, seg)?;
                r.state = SEG_OPEN;
                r.logged = logged;
                segs.insert(seg, r.encode().as_slice())?;
            }
            for &seg in &changes.sealed {
                let rec = segs
                    .get(seg)?
                    .map(|v| SegmentRecord::decode(v.value()))
                    .transpose()
                    .map_err(|e| VdeError::Corrupt(e.to_string()))?;
                // A segment without a record may still be referenced by a transaction that
                // has not committed yet (its writer is active): it is recorded as sealed and
                // empty, so that transaction finds it, and released later if it stays empty.
                let mut r = rec.unwrap_or(SegmentRecord {
                    state: SEG_SEALED,
                    live_bytes: 0,
                    logged: 0,
                });
                r.state = SEG_SEALED;
                r.logged = 0;
                if r.live_bytes == 0 && self.segs.quiescent(seg) {
                    segs.remove(seg)?;
                    w.released.push(seg);
                } else {
                    if r.live_bytes == 0 {
                        self.segs.defer_release(seg);
                    }
                    segs.insert(seg, r.encode().as_slice())?;
                }
            }
            for seg in self.segs.take_quiescent_deferred() {
                let rec = segs
                    .get(seg)?
                    .map(|v| SegmentRecord::decode(v.value()))
                    .transpose()
                    .map_err(|e| VdeError::Corrupt(e.to_string()))?;
                if rec.is_some_and(|r| r.state == SEG_SEALED && r.live_bytes == 0) {
                    segs.remove(seg)?;
                    w.released.push(seg);
                }
            }
            state.log_checkpoint = changes.log_checkpoint;
            // The records this commit wrote are below the durable limit; raise it ahead so the
            // next commits' records are too. A crashed session's records can then never carry
            // a number a later session uses again (recovery would take them for current ones).
            if state.log_seq_limit < changes.next_seq + LOG_SEQ_MARGIN {
                state.log_seq_limit = changes.next_seq + LOG_SEQ_BLOCK;
            }
            state.healed = self.healed.load(Ordering::Relaxed);
            let mut m = tx.open_table(META)?;
            m.insert("state", state.encode().as_slice())?;
            Ok(())
        })();
        w.seq_limit = state.log_seq_limit;
        if let Err(e) = applied {
            self.durable_failed(&w);
            return Err(e);
        }
        Ok(w)
    }

    /// The durable commit of `w` failed: what it would have recorded is still pending.
    fn durable_failed(&self, w: &DurableWork) {
        self.segs.commit_failed(&w.changes);
        // Their records still say sealed and empty: try again at the next commit.
        for &s in &w.released {
            self.segs.defer_release(s);
        }
    }

    /// The durable commit of `w` succeeded.
    fn durable_done(&self, w: &DurableWork) {
        self.segs.committed(&w.changes, w.seq_limit);
        for &s in &w.released {
            self.segs.release(s);
        }
    }

    /// Refuses an operation that adds metadata when the metadata store is nearly full, with
    /// a reserve left so deletes, discards, cleaning and commits of what was already written
    /// still fit. Without it the store would ask for more room than its region has, and redb
    /// stops accepting any write until the VDE is reopened.
    ///
    /// Measuring exactly walks the store's trees, so between measurements each call is
    /// charged [`META_CHARGE`], a bound on what one record or object operation adds; a
    /// measurement happens only when the charges could have crossed the limit.
    /// Once over it, operations are refused without measuring until something is freed or
    /// made durable (or a second has passed).
    pub(crate) fn meta_guard(&self) -> Result<(), VdeError> {
        const MIB: u64 = 1 << 20;
        let reach = self.meta.reachable();
        let reserve = (reach / 8).clamp(MIB / 2, 512 * MIB);
        let limit = reach.saturating_sub(reserve);
        // Frees take effect at the next durable commit; either makes a full store look again.
        let epoch = (
            self.free_epoch.load(Ordering::Acquire),
            self.sync.lock().durable,
        );
        let mut check = self.meta_check.lock();
        match check.full {
            // Full: nothing was freed or made durable since, and the last look is recent.
            Some((at, e)) if e == epoch && at.elapsed() < std::time::Duration::from_secs(1) => {
                return Err(meta_full(check.used, reach, reserve));
            }
            Some(_) => {}
            None => {
                check.charged = check.charged.saturating_add(META_CHARGE);
                if check.used.saturating_add(check.charged) <= limit {
                    return Ok(());
                }
            }
        }
        let used = self.meta_used()?;
        check.used = used;
        check.charged = 0;
        if used > limit {
            check.full = Some((std::time::Instant::now(), epoch));
            return Err(meta_full(used, reach, reserve));
        }
        check.full = None;
        Ok(())
    }

    /// Bytes the metadata store occupies (capacity reports; 0 if it cannot be measured).
    pub(crate) fn meta_used_or_zero(&self) -> u64 {
        self.meta_used().unwrap_or(0)
    }

    /// Bytes the metadata store occupies.
    pub(crate) fn meta_used(&self) -> Result<u64, VdeError> {
        let tx = self.db.begin_write()?;
        let s = tx.stats()?;
        let used = s.allocated_pages() * s.page_size() as u64;
        tx.abort()?;
        Ok(used)
    }

    /// The latest txg handed out (committed or being committed).
    pub(crate) fn current_txg(&self) -> Result<u64, VdeError> {
        Ok(self.txg.load(Ordering::SeqCst))
    }

    /// The latest committed state record (durable or not).
    pub(crate) fn state_record(&self) -> Result<StateRecord, VdeError> {
        let rx = self.db.begin_read()?;
        let m = rx.open_table(META)?;
        let s = m
            .get("state")?
            .ok_or_else(|| VdeError::Corrupt("no state record".into()))?;
        StateRecord::decode(s.value()).map_err(|e| VdeError::Corrupt(e.to_string()))
    }

    // -------------------------------------------------------------------- ids

    /// Makes sure ids can be handed out (durably raising the reservation when needed).
    fn reserve_ids(&self) -> Result<(), VdeError> {
        let (need_ext, need_ino) = {
            let ids = self.ids.lock();
            (
                ids.next_extent + 1 >= ids.extent_limit,
                ids.next_inode + 1 >= ids.inode_limit,
            )
        };
        if !need_ext && !need_ino {
            return Ok(());
        }
        let (limits, txg) = self.txn(|t| {
            let mut s = read_state(&t.tx)?;
            let ids = self.ids.lock();
            if need_ext {
                s.extent_id_limit = s.extent_id_limit.max(ids.next_extent) + ID_BLOCK;
            }
            if need_ino {
                s.next_inode = s.next_inode.max(ids.next_inode) + ID_BLOCK;
            }
            drop(ids);
            let mut m = t.tx.open_table(META)?;
            m.insert("state", s.encode().as_slice())?;
            Ok((s.extent_id_limit, s.next_inode))
        })?;
        self.sync(txg)?;
        let mut ids = self.ids.lock();
        ids.extent_limit = limits.0;
        ids.inode_limit = limits.1;
        Ok(())
    }

    pub(crate) fn next_extent_id(&self) -> Result<u64, VdeError> {
        loop {
            {
                let mut ids = self.ids.lock();
                if ids.next_extent < ids.extent_limit {
                    let id = ids.next_extent;
                    ids.next_extent += 1;
                    return Ok(id);
                }
            }
            self.reserve_ids()?;
        }
    }

    pub(crate) fn next_inode(&self) -> Result<u64, VdeError> {
        loop {
            {
                let mut ids = self.ids.lock();
                if ids.next_inode < ids.inode_limit {
                    let id = ids.next_inode;
                    ids.next_inode += 1;
                    return Ok(id);
                }
            }
            self.reserve_ids()?;
        }
    }

    // -------------------------------------------------------------------- pins

    pub(crate) fn pin(&self, inode: u64) {
        *self.pins.lock().entry(inode).or_insert(0) += 1;
    }

    pub(crate) fn unpin(&self, inode: u64) {
        let mut p = self.pins.lock();
        if let Some(n) = p.get_mut(&inode) {
            *n -= 1;
            if *n == 0 {
                p.remove(&inode);
                // A drain may have skipped it while pinned.
                self.free_epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn pinned(&self, inode: u64) -> bool {
        self.pins.lock().contains_key(&inode)
    }

    /// Frees the extents of queued inodes in bounded transactions (skipping pinned ones).
    pub(crate) fn drain_free_queue(&self) -> Result<(), VdeError> {
        let epoch = self.free_epoch.load(Ordering::Acquire);
        if self.free_drained.load(Ordering::Acquire) >= epoch {
            return Ok(());
        }
        // Bounded: each round frees at least one batch or finds nothing to do.
        for _ in 0..1_000_000 {
            let (progress, txg) = self.txn(|t| {
                let queued: Vec<u64> = {
                    let q = t.tx.open_table(FREE_QUEUE)?;
                    q.iter()?
                        .filter_map(Result::ok)
                        .map(|(k, _)| k.value())
                        .collect()
                };
                for inode in queued {
                    if t.inner.pinned(inode) {
                        continue;
                    }
                    let done = t.free_inode_extents(inode, FREE_BATCH)?;
                    if done {
                        t.tx.open_table(FREE_QUEUE)?.remove(inode)?;
                        t.tx.open_table(INODES)?.remove(inode)?;
                    }
                    return Ok(true);
                }
                Ok(false)
            })?;
            if !progress {
                // Everything queued before `epoch` was seen (pinned inodes bump the epoch when
                // unpinned).
                self.free_drained.fetch_max(epoch, Ordering::AcqRel);
                return Ok(());
            }
            let _ = txg;
        }
        Ok(())
    }

    // -------------------------------------------------------------------- data path

    /// Encodes one record (compress, encrypt, checksum) and places it; returns its extent.
    pub(crate) fn write_record(
        &self,
        plain: &[u8],
        container: u64,
        inode: u64,
        offset: u64,
        compression: Compression,
        encryption: Encryption,
    ) -> Result<ExtentRecord, VdeError> {
        self.meta_guard()?;
        match self.try_write_record(plain, container, inode, offset, compression, encryption) {
            Err(VdeError::NoSpace(why)) => {
                // Out of free segments: reclaim mostly-dead ones, then try once more.
                if self.clean(16)?.segments == 0 {
                    return Err(VdeError::NoSpace(why));
                }
                self.try_write_record(plain, container, inode, offset, compression, encryption)
            }
            r => r,
        }
    }

    fn try_write_record(
        &self,
        plain: &[u8],
        container: u64,
        inode: u64,
        offset: u64,
        compression: Compression,
        encryption: Encryption,
    ) -> Result<ExtentRecord, VdeError> {
        let extent_id = self.next_extent_id()?;
        let keys = self.keys.read();
        let generation = keys.current;
        let key = match encryption {
            Encryption::Aes256Gcm => Some(
                keys.data_key(generation)
                    .ok_or(VdeError::MissingKey(generation))?,
            ),
            Encryption::None => None,
        };
        let level = match compression {
            Compression::Zstd(l) => Some(i32::from(l)),
            Compression::None => None,
        };
        let max = codec::max_encoded_len(plain.len(), level, key.is_some());
        let aad = extent_aad(&self.uuid, container, inode, offset, extent_id);
        let sealing = key.map(|key| codec::Sealing {
            key,
            nonce: extent_nonce(extent_id, generation),
            aad: &aad,
        });
        let mut meta = (0u8, [0u8; 32]);
        // Encodes straight into the open segment: no intermediate buffer.
        let mut encode = |buf: &mut [u8]| -> Result<usize, VdeError> {
            let e = codec::encode(plain, buf, level, sealing);
            meta = (e.flags, e.checksum);
            Ok(e.len)
        };
        let (addr, n) = self.segs.append_with(max, false, &mut encode)?;
        drop(keys);
        Ok(ExtentRecord {
            flags: meta.0,
            key_generation: generation,
            addr,
            stored_len: u32::try_from(n)
                .map_err(|_| VdeError::Invalid("record too large".into()))?,
            logical_len: u32::try_from(plain.len())
                .map_err(|_| VdeError::Invalid("record too large".into()))?,
            extent_id,
            checksum: meta.1,
            death: LIVE,
        })
    }

    /// Reads and decodes an extent into `out` (its capacity reused); verifies the checksum
    /// (when `verify`, or always when decryption or decompression fails) and heals from
    /// redundancy.
    pub(crate) fn read_record(
        &self,
        e: &ExtentRecord,
        container: u64,
        inode: u64,
        offset: u64,
        verify: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), VdeError> {
        let padded = ulen(u64::from(e.stored_len).div_ceil(BLOCK as u64) * BLOCK as u64);
        let stored = ulen(u64::from(e.stored_len));
        READ_BUF.with(|rb| {
            let mut rb = rb.borrow_mut();
            if rb.len() < padded {
                *rb = AlignedBuf::zeroed(padded);
            }
            let buf = &mut rb[..padded];
            if !self.segs.read_buffered(e.addr, buf) {
                self.backing.dev().read_at(buf, e.addr)?;
            }
            if verify && !codec::verify(&buf[..stored], &e.checksum) {
                self.heal(e, buf)?;
            }
            match self.decode_stored(&mut buf[..stored], e, container, inode, offset, out) {
                Err(VdeError::Corrupt(_)) if !verify => {
                    // Unverified read whose decryption or decompression failed: heal, retry.
                    self.heal(e, buf)?;
                    self.decode_stored(&mut buf[..stored], e, container, inode, offset, out)
                }
                r => r,
            }
        })
    }

    /// Asks the backing for its other reconstructions of the extent and keeps the one that
    /// matches the checksum, writing it back.
    fn heal(&self, e: &ExtentRecord, buf: &mut [u8]) -> Result<(), VdeError> {
        let stored = ulen(u64::from(e.stored_len));
        let alts = self.backing.alternatives(e.addr, buf.len() as u64)?;
        let tried = alts.len();
        for alt in alts {
            if alt.len() >= stored && codec::verify(&alt[..stored], &e.checksum) {
                self.backing.repair(e.addr, &alt)?;
                self.healed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "VDE {}: checksum failure at device offset {} healed from redundancy",
                    self.uuid,
                    e.addr
                );
                buf[..stored].copy_from_slice(&alt[..stored]);
                return Ok(());
            }
        }
        Err(VdeError::Unrecoverable {
            addr: e.addr,
            len: u64::from(e.stored_len),
            detail: if tried == 0 {
                "the device has no redundancy to heal from".into()
            } else {
                format!("none of {tried} reconstructions matched")
            },
        })
    }

    fn decode_stored(
        &self,
        stored: &mut [u8],
        e: &ExtentRecord,
        container: u64,
        inode: u64,
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), VdeError> {
        let keys = self.keys.read();
        let key = if e.flags & records::EXT_ENCRYPTED != 0 {
            Some(
                keys.data_key(e.key_generation)
                    .ok_or(VdeError::MissingKey(e.key_generation))?,
            )
        } else {
            None
        };
        let aad = extent_aad(&self.uuid, container, inode, offset, e.extent_id);
        let sealing = key.map(|key| codec::Sealing {
            key,
            nonce: extent_nonce(e.extent_id, e.key_generation),
            aad: &aad,
        });
        codec::decode(
            stored,
            e.flags,
            ulen(u64::from(e.logical_len)),
            sealing,
            out,
        )
        .map_err(|err| VdeError::Corrupt(format!("extent at {} {err}", e.addr)))
    }

    /// Re-encrypts an extent's stored bytes under the current key generation (decrypt with
    /// the old generation, encrypt with a new extent id); compression is kept as it is.
    pub(crate) fn reseal(
        &self,
        e: &ExtentRecord,
        container: u64,
        inode: u64,
        offset: u64,
    ) -> Result<ExtentRecord, VdeError> {
        let padded = u64::from(e.stored_len).div_ceil(BLOCK as u64) * BLOCK as u64;
        let mut buf = AlignedBuf::zeroed(ulen(padded));
        if !self.segs.read_buffered(e.addr, &mut buf) {
            self.backing.dev().read_at(&mut buf, e.addr)?;
        }
        let stored = ulen(u64::from(e.stored_len));
        if !codec::verify(&buf[..stored], &e.checksum) {
            self.heal(e, &mut buf)?;
        }
        let mut data = buf[..stored].to_vec();
        let keys = self.keys.read();
        let old = keys
            .data_key(e.key_generation)
            .ok_or(VdeError::MissingKey(e.key_generation))?;
        let n = old
            .open(
                extent_nonce(e.extent_id, e.key_generation),
                &extent_aad(&self.uuid, container, inode, offset, e.extent_id),
                &mut data,
            )
            .map_err(|_| VdeError::Corrupt(format!("extent at {} fails authentication", e.addr)))?;
        data.truncate(n);
        drop(keys);
        let extent_id = self.next_extent_id()?;
        let keys = self.keys.read();
        let generation = keys.current;
        let k = keys
            .data_key(generation)
            .ok_or(VdeError::MissingKey(generation))?;
        k.seal(
            extent_nonce(extent_id, generation),
            &extent_aad(&self.uuid, container, inode, offset, extent_id),
            &mut data,
        );
        drop(keys);
        let checksum = *blake3::hash(&data).as_bytes();
        let addr = self.segs.append(&data)?;
        Ok(ExtentRecord {
            key_generation: generation,
            addr,
            stored_len: u32::try_from(data.len())
                .map_err(|_| VdeError::Invalid("record too large".into()))?,
            extent_id,
            checksum,
            ..*e
        })
    }

    /// Makes `new` the current master key: policies are re-sealed and the header re-sealed
    /// with it; data encrypted under older generations stays readable until re-encrypted.
    pub(crate) fn rotate_key(&self, new: &MasterKey) -> Result<(), VdeError> {
        self.writable()?;
        let cur = self.keys.read().current;
        if new.generation() <= cur {
            return Err(VdeError::Invalid(format!(
                "the new key's generation {} must be above the current {cur}",
                new.generation()
            )));
        }
        let rotated = self.keys.read().rotated(new);
        // Policies first (readable with either key), then the header (switches the seal).
        let vp = *self.vde_policy.read();
        let (_, txg) = self.txn(|t| {
            t.tx.open_table(META)?.insert(
                "vde_policy",
                seal_policy(&rotated, &self.uuid, VDE_SCOPE, &vp).as_slice(),
            )?;
            let names: Vec<String> = {
                let c = t.tx.open_table(records::CONTAINERS)?;
                c.iter()?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value().to_owned())
                    .collect()
            };
            for name in names {
                let mut c = t.container(&name)?;
                let p = open_policy(&self.keys.read(), &self.uuid, c.id, &c.policy)?;
                c.policy = seal_policy(&rotated, &self.uuid, c.id, &p);
                t.put_container(&name, &c)?;
            }
            Ok(())
        })?;
        self.sync(txg)?;
        let mut header = self.header.lock();
        let mut h = header.clone();
        h.key_generation = new.generation();
        h.generation += 1;
        h.recovery_mac = rotated.seal_mac(&[&self.recovery.lock().encode()]);
        h.key_check = key_check(&rotated, &self.uuid);
        h.seal = compute_seal(&rotated, &h, &self.regdir.encode());
        let dev = self.backing.dev();
        dev.write_at(&AlignedBuf::from_slice(&h.encode()), format::HEADER_A)?;
        dev.flush()?;
        dev.write_at(&AlignedBuf::from_slice(&h.encode()), format::HEADER_B)?;
        dev.flush()?;
        *header = h;
        *self.keys.write() = rotated;
        tracing::info!(
            "VDE {}: master key rotated to generation {}",
            self.uuid,
            new.generation()
        );
        Ok(())
    }

    // -------------------------------------------------------------------- key slots

    pub(crate) fn keyslots(backing: &dyn Backing) -> Result<Option<(u64, Vec<u8>)>, VdeError> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        for at in [KEYSLOTS_A, KEYSLOTS_B] {
            let mut area = AlignedBuf::zeroed(ulen(KEYSLOTS_LEN));
            backing.dev().read_at(&mut area, at)?;
            let Ok((generation, len, hash)) = format::decode_keyslots_header(&area[..BLOCK]) else {
                continue;
            };
            let blob = &area[BLOCK..BLOCK + len];
            if *blake3::hash(blob).as_bytes() == hash
                && best.as_ref().is_none_or(|b| generation > b.0)
            {
                best = Some((generation, blob.to_vec()));
            }
        }
        Ok(best)
    }

    pub(crate) fn write_keyslots(backing: &dyn Backing, blob: &[u8]) -> Result<(), VdeError> {
        if blob.len() > KEYSLOTS_MAX_BLOB {
            return Err(VdeError::Invalid(format!(
                "key-slot data of {} bytes exceeds {KEYSLOTS_MAX_BLOB}",
                blob.len()
            )));
        }
        // Overwrite the older copy (or the invalid one), so a torn write leaves the newer.
        let mut gens = [None, None];
        for (i, at) in [KEYSLOTS_A, KEYSLOTS_B].into_iter().enumerate() {
            let blk = read_block(backing, at)?;
            gens[i] = format::decode_keyslots_header(&blk).ok().map(|x| x.0);
        }
        let next = gens.iter().flatten().max().map_or(1, |g| g + 1);
        let target = match gens {
            [None, _] => KEYSLOTS_A,
            [_, None] => KEYSLOTS_B,
            [Some(a), Some(b)] => {
                if a <= b {
                    KEYSLOTS_A
                } else {
                    KEYSLOTS_B
                }
            }
        };
        let framed = format::encode_keyslots(next, blob);
        backing
            .dev()
            .write_at(&AlignedBuf::from_slice(&framed), target)?;
        backing.dev().flush()?;
        Ok(())
    }
}

fn create_tables(tx: &WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_table(records::CONTAINERS)?;
    tx.open_table(records::CONTAINER_IDS)?;
    tx.open_table(records::OBJECTS)?;
    tx.open_table(INODES)?;
    tx.open_table(records::EXTENTS)?;
    tx.open_table(SEGMENTS)?;
    tx.open_table(records::SNAPSHOTS)?;
    tx.open_table(records::UPLOADS)?;
    tx.open_table(records::PARTS)?;
    tx.open_table(WRITING)?;
    tx.open_table(FREE_QUEUE)?;
    Ok(())
}

pub(crate) fn read_state(tx: &WriteTransaction) -> Result<StateRecord, VdeError> {
    let m = tx.open_table(META)?;
    let s = m
        .get("state")?
        .ok_or_else(|| VdeError::Corrupt("no state record".into()))?;
    StateRecord::decode(s.value()).map_err(|e| VdeError::Corrupt(e.to_string()))
}

thread_local! {
    /// The aligned buffer extents are read into (grown to the largest record, then reused).
    static READ_BUF: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::zeroed(0));
}

/// A write transaction with the VDE's helpers.
pub(crate) struct Txn<'a> {
    pub tx: WriteTransaction,
    pub txg: u64,
    released: Vec<u64>,
    /// Something was put in the free queue.
    pub queued_free: bool,
    pub inner: &'a Inner,
    /// Container counter changes from shared-data accounting (accounting.rs), applied when
    /// the closure is done.
    pub charges: std::collections::BTreeMap<u64, crate::accounting::Charges>,
}

impl Txn<'_> {
    /// Accounts a new extent in its segment.
    pub(crate) fn add_extent_space(&mut self, e: &ExtentRecord) -> Result<(), VdeError> {
        self.add_extents_space(std::slice::from_ref(e))
    }

    /// [`Txn::add_extent_space`] for many extents: one update per segment they fall in.
    pub(crate) fn add_extents_space(&mut self, es: &[ExtentRecord]) -> Result<(), VdeError> {
        let mut per_seg: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        for e in es {
            let seg = self.inner.segs.layout.segment_of(e.addr).ok_or_else(|| {
                VdeError::Corrupt(format!("extent address {} outside the data region", e.addr))
            })?;
            let padded = u64::from(e.stored_len).div_ceil(BLOCK as u64) * BLOCK as u64;
            *per_seg.entry(seg).or_insert(0) += padded;
        }
        let mut t = self.tx.open_table(SEGMENTS)?;
        for (seg, padded) in per_seg {
            let mut r = segment_or_open(&t, seg)?;
            r.live_bytes += padded;
            t.insert(seg, r.encode().as_slice())?;
        }
        Ok(())
    }

    /// Releases an extent's space; a sealed segment left empty becomes free once this
    /// transaction is durable.
    pub(crate) fn free_extent_space(&mut self, e: &ExtentRecord) -> Result<(), VdeError> {
        let Some(seg) = self.inner.segs.layout.segment_of(e.addr) else {
            return Err(VdeError::Corrupt(format!(
                "extent address {} outside the data region",
                e.addr
            )));
        };
        let padded = u64::from(e.stored_len).div_ceil(BLOCK as u64) * BLOCK as u64;
        let mut t = self.tx.open_table(SEGMENTS)?;
        let Some(v) = t.get(seg)? else {
            return Err(VdeError::Corrupt(format!(
                "extent in segment {seg}, which is not in use"
            )));
        };
        let mut r =
            SegmentRecord::decode(v.value()).map_err(|e| VdeError::Corrupt(e.to_string()))?;
        drop(v);
        r.live_bytes = r.live_bytes.saturating_sub(padded);
        if r.live_bytes == 0 && r.state == SEG_SEALED {
            // A writer may still hold extents in it that its transaction has not recorded
            // yet: then it is released by a later commit (segments.rs, "quiescent").
            if self.inner.segs.quiescent(seg) {
                t.remove(seg)?;
                self.released.push(seg);
                return Ok(());
            }
            self.inner.segs.defer_release(seg);
        }
        t.insert(seg, r.encode().as_slice())?;
        Ok(())
    }

    /// At open (no writer is active): releases the listed segments whose records say they
    /// are empty, and marks open segments with nothing in the intent log sealed (their data,
    /// if any, was written in place).
    fn repair_segments(&mut self, segs: &[u64]) -> Result<(), VdeError> {
        let mut t = self.tx.open_table(SEGMENTS)?;
        for &seg in segs {
            let Some(mut r) = t
                .get(seg)?
                .map(|v| SegmentRecord::decode(v.value()))
                .transpose()
                .map_err(|e| VdeError::Corrupt(e.to_string()))?
            else {
                continue;
            };
            if r.state == SEG_OPEN && r.logged > 0 {
                continue;
            }
            if r.live_bytes == 0 {
                t.remove(seg)?;
                self.released.push(seg);
            } else {
                r.state = SEG_SEALED;
                r.logged = 0;
                t.insert(seg, r.encode().as_slice())?;
            }
        }
        Ok(())
    }

    /// Frees up to `max` extents of `inode`; true when none are left.
    pub(crate) fn free_inode_extents(&mut self, inode: u64, max: usize) -> Result<bool, VdeError> {
        let batch: Vec<((u64, u64, u64), ExtentRecord)> = {
            let t = self.tx.open_table(records::EXTENTS)?;
            let mut out = Vec::new();
            for r in t.range((inode, 0, 0)..=(inode, u64::MAX, u64::MAX))? {
                let (k, v) = r?;
                out.push((
                    k.value(),
                    ExtentRecord::decode(v.value())
                        .map_err(|e| VdeError::Corrupt(e.to_string()))?,
                ));
                if out.len() >= max {
                    break;
                }
            }
            out
        };
        let done = batch.len() < max;
        for (k, e) in batch {
            self.free_extent_space(&e)?;
            self.tx.open_table(records::EXTENTS)?.remove(k)?;
        }
        Ok(done)
    }

    /// Reads an inode record.
    pub(crate) fn inode(&self, inode: u64) -> Result<InodeRecord, VdeError> {
        let t = self.tx.open_table(INODES)?;
        let v = t
            .get(inode)?
            .ok_or_else(|| VdeError::Corrupt(format!("inode {inode} missing")))?;
        InodeRecord::decode(v.value()).map_err(|e| VdeError::Corrupt(e.to_string()))
    }

    /// Writes an inode record.
    pub(crate) fn put_inode(&mut self, inode: u64, r: &InodeRecord) -> Result<(), VdeError> {
        self.tx
            .open_table(INODES)?
            .insert(inode, r.encode().as_slice())?;
        Ok(())
    }

    /// Drops a reference that is not an object version's (an upload part, a volume); at zero
    /// the inode is queued for freeing. Versions go through `adjust_refs` (accounting.rs).
    pub(crate) fn decref(&mut self, inode: u64) -> Result<(), VdeError> {
        let mut r = self.inode(inode)?;
        r.refs = r.refs.saturating_sub(1);
        if r.refs == 0 {
            self.tx.open_table(FREE_QUEUE)?.insert(inode, now_secs())?;
            self.queued_free = true;
        }
        self.put_inode(inode, &r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::PlainBacking;
    use dw_blockdev::{BlockDev, MemDev};

    fn key() -> MasterKey {
        MasterKey::from_bytes([0x42; 32], 0)
    }

    /// Rewrites both header copies with `edit` applied, sealed with the right key (as a newer
    /// version of this software would write them).
    fn reseal(dev: &MemDev, edit: impl Fn(&mut Header)) {
        let b = format::tests::read(dev, format::HEADER_A);
        let mut h = Header::decode(&b).expect("header");
        edit(&mut h);
        let keys = KeySchedule::new(&key(), &[]);
        let rd = format::tests::read(dev, REGDIR_A);
        h.seal = compute_seal(&keys, &h, &rd);
        for at in [format::HEADER_A, format::HEADER_B] {
            dev.write_at(&h.encode(), at).expect("write");
        }
    }

    /// Goal: a VDE that a newer writer marked (minimum writer revision, or read-only-compatible
    /// features this software does not know) opens read-only, and says why. Method: reseal the
    /// header with each marking, open, try a write.
    #[test]
    fn newer_writers_and_unknown_ro_features_open_read_only() {
        let dev = Arc::new(MemDev::new("m", 128 << 20, 4096));
        let backing: Arc<dyn Backing> = Arc::new(PlainBacking::new(dev.clone(), 65536));
        let v =
            crate::Vde::format(backing.clone(), &key(), &FormatOptions::default()).expect("format");
        v.close().expect("close");
        for (edit, why) in [
            (
                Box::new(|h: &mut Header| h.min_writer = format::WRITER_VERSION + 1)
                    as Box<dyn Fn(&mut Header)>,
                "minimum writer",
            ),
            (
                Box::new(|h: &mut Header| h.ro_compat = 1 << 7),
                "read-only-compatible",
            ),
        ] {
            let before = format::tests::read(dev.as_ref(), format::HEADER_A);
            reseal(&dev, edit);
            let v = crate::Vde::open(backing.clone(), &key(), &[]).expect("opens");
            let e = v
                .create_container(
                    "c",
                    &crate::ContainerSpec {
                        kind: crate::ContainerKind::Bucket,
                        policy: Policy::default(),
                        record_size: None,
                    },
                )
                .expect_err("read-only");
            assert!(matches!(e, VdeError::ReadOnly(_)), "{e}");
            assert!(e.to_string().contains(why), "{e}");
            drop(v);
            dev.write_at(&before, format::HEADER_A).expect("restore");
            dev.write_at(&before, format::HEADER_B).expect("restore");
        }
        // A minimum reader above ours refuses to open at all.
        reseal(&dev, |h| h.min_reader = format::READER_VERSION + 1);
        assert!(matches!(
            crate::Vde::open(backing, &key(), &[]),
            Err(OpenError::HeaderDamaged { .. } | OpenError::Format(_))
        ));
    }
}
