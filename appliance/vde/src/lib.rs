//! The VDE (virtual disk environment): DataWarehouse's self-describing, versioned container
//! format and storage engine.
//!
//! A VDE lives on a RAID array (or a plain device or file) and holds containers: buckets of
//! objects and thin-provisioned volumes. Data is cut into records, each optionally compressed
//! (zstd, skipped when it does not pay) and encrypted (AES-256-GCM, nonce from a never-reused
//! extent id, associated data binding the VDE, container, inode and offset), and checksummed
//! (BLAKE3, kept in the referencing metadata and verified on read; a mismatch asks the array
//! for its other reconstructions and writes the good one back). Records are packed into
//! stripe-aligned segments written in place once, as full stripes; commits make the partial
//! tail of a segment durable in a mirrored intent log. Metadata lives in redb on a region of
//! the device, committed with two-phase durability after the data it references.
//!
//! The on-disk format is in docs/FORMAT.md §2; the design in docs/ARCHITECTURE.md.

#![deny(missing_docs)]

mod accounting;
mod backing;
#[doc(hidden)]
pub mod bench;
mod codec;
mod crypto;
mod engine;
mod errors;
pub mod format;
#[cfg(test)]
mod golden;
mod maintenance;
mod metastore;
mod objects;
pub mod policy;
pub mod records;
mod segments;
mod snapshots;
mod volumes;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dw_blockdev::BlockDev;
use redb::ReadableDatabase;

pub use backing::{ArrayBacking, Backing, BackingGeometry, PlainBacking};
pub use crypto::MasterKey;
pub use engine::{FormatOptions, Probe};
pub use errors::{OpenError, VdeError};
pub use format::RecoveryBlock;
pub use maintenance::{CleanReport, RekeyProgress};
pub use objects::{
    BUCKET_RECORD, ContainerInfo, ContainerKind, ContainerSpec, ListOptions, ListPage, MIN_PART,
    ObjectInfo, ObjectReader, PartInfo, PutOptions, UploadInfo, VOLUME_RECORD,
};
pub use policy::{Effective, Policy, Profile};
pub use snapshots::SnapshotInfo;
pub use volumes::Volume;

use engine::Inner;

/// An open VDE. Cheap to clone (shared handle).
#[derive(Debug, Clone)]
pub struct Vde {
    inner: Arc<Inner>,
}

/// Capacity of a VDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes of the device the VDE spans.
    pub device_bytes: u64,
    /// Bytes of the data region.
    pub data_bytes: u64,
    /// Free bytes in the data region.
    pub free_bytes: u64,
    /// Bytes of the metadata region.
    pub metadata_bytes: u64,
    /// Bytes the metadata store uses.
    pub metadata_used: u64,
    /// Logical bytes of live data in all containers: object sizes (every copy counts) and
    /// written volume blocks.
    pub logical_bytes: u64,
    /// Stored bytes of live data (after compression and encryption), data shared by copies
    /// counted once.
    pub stored_bytes: u64,
    /// Stored bytes kept only for snapshots and old versions (counted once).
    pub retained_bytes: u64,
    /// Checksum failures healed from redundancy since the VDE was created.
    pub healed: u64,
}

impl Vde {
    /// Creates a VDE on `backing` (destroying whatever is there) with the master key `key`.
    /// The key-slot area is left empty: the keys layer writes it with [`Vde::write_keyslots`].
    ///
    /// # Errors
    /// [`OpenError`] when the device is unsuitable or writing fails.
    pub fn format(
        backing: Arc<dyn Backing>,
        key: &MasterKey,
        opts: &FormatOptions,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            inner: Inner::format(backing, key, opts)?,
        })
    }

    /// Opens a VDE with its current master key (and older generations while a key rotation is
    /// in progress). Verifies the tamper seal, repairs a damaged header copy, recovers from a
    /// crash.
    ///
    /// # Errors
    /// [`OpenError`] saying exactly why it does not open.
    pub fn open(
        backing: Arc<dyn Backing>,
        key: &MasterKey,
        older: &[MasterKey],
    ) -> Result<Self, OpenError> {
        Ok(Self {
            inner: Inner::open(backing, key, older, false)?,
        })
    }

    /// Opens read-only (no recovery writes; every change is refused).
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open_read_only(
        backing: Arc<dyn Backing>,
        key: &MasterKey,
        older: &[MasterKey],
    ) -> Result<Self, OpenError> {
        Ok(Self {
            inner: Inner::open(backing, key, older, true)?,
        })
    }

    /// What the device says without keys: header and emergency recovery block.
    ///
    /// # Errors
    /// [`OpenError::NotAVde`] and friends.
    pub fn probe(backing: &dyn Backing) -> Result<Probe, OpenError> {
        let (header, _, recovery, _) = Inner::probe(backing)?;
        Ok(Probe { header, recovery })
    }

    /// Reads the key-slot blob (newest valid copy), without keys.
    ///
    /// # Errors
    /// I/O errors.
    pub fn read_keyslots(backing: &dyn Backing) -> Result<Option<Vec<u8>>, VdeError> {
        Ok(Inner::keyslots(backing)?.map(|x| x.1))
    }

    /// Writes the key-slot blob (to the older copy, then flushes).
    ///
    /// # Errors
    /// Too large, or I/O errors.
    pub fn write_keyslots(backing: &dyn Backing, blob: &[u8]) -> Result<(), VdeError> {
        Inner::write_keyslots(backing, blob)
    }

    /// Identity.
    #[must_use]
    pub fn uuid(&self) -> uuid::Uuid {
        self.inner.uuid
    }

    /// The recovery block (label, contact).
    #[must_use]
    pub fn recovery(&self) -> RecoveryBlock {
        self.inner.recovery.lock().clone()
    }

    /// The backing device.
    #[must_use]
    pub fn backing(&self) -> &Arc<dyn Backing> {
        &self.inner.backing
    }

    /// Makes everything done so far durable.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn commit(&self) -> Result<(), VdeError> {
        let txg = self.inner.current_txg()?;
        self.inner.sync(txg)
    }

    /// Shuts down cleanly: writes open segments in place and commits.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn close(self) -> Result<(), VdeError> {
        if self.inner.read_only.is_some() {
            return Ok(());
        }
        self.inner.segs.seal_all()?;
        self.commit()?;
        self.inner.durable_commit()?;
        Ok(())
    }

    // -------------------------------------------------------------------- policy

    /// The VDE-level policy.
    #[must_use]
    pub fn vde_policy(&self) -> Policy {
        *self.inner.vde_policy.read()
    }

    /// Sets the VDE-level policy.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn set_vde_policy(&self, p: &Policy) -> Result<(), VdeError> {
        self.inner.set_vde_policy(p)
    }

    /// Sets a container's policy (refused if it contradicts an enforced VDE setting).
    ///
    /// # Errors
    /// [`VdeError::Policy`] and friends.
    pub fn set_container_policy(&self, container: &str, p: &Policy) -> Result<(), VdeError> {
        self.inner.set_container_policy(container, p)
    }

    /// The policy in force for a container, or for one object of it, with every value's source.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn effective_policy(
        &self,
        container: &str,
        key: Option<&str>,
    ) -> Result<Effective, VdeError> {
        let c = self.inner.container_record(container)?;
        let object_policy = match key {
            None => None,
            Some(k) => {
                let rx = self.inner.db.begin_read()?;
                let t = rx.open_table(records::OBJECTS)?;
                let (_, o) = objects_live(&t, c.id, k)?.ok_or_else(|| VdeError::NoSuchObject {
                    container: container.to_owned(),
                    key: k.to_owned(),
                })?;
                if o.policy.is_empty() {
                    None
                } else {
                    Some(policy::decode(&o.policy).map_err(VdeError::Corrupt)?)
                }
            }
        };
        self.inner.effective(&c, object_policy.as_ref())
    }

    // -------------------------------------------------------------------- containers

    /// Creates a bucket or volume.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> Result<ContainerInfo, VdeError> {
        self.inner.create_container(name, spec)
    }

    /// Deletes an empty container (a volume's data goes with it; snapshots must be deleted
    /// first).
    ///
    /// # Errors
    /// [`VdeError::ContainerNotEmpty`], [`VdeError::Retained`] and friends.
    pub fn delete_container(&self, name: &str) -> Result<(), VdeError> {
        self.inner.delete_container(name)
    }

    /// Every container.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn containers(&self) -> Result<Vec<ContainerInfo>, VdeError> {
        self.inner.list_containers()
    }

    /// One container.
    ///
    /// # Errors
    /// [`VdeError::NoSuchContainer`].
    pub fn container(&self, name: &str) -> Result<ContainerInfo, VdeError> {
        let c = self.inner.container_record(name)?;
        self.inner.container_info(name, &c)
    }

    // -------------------------------------------------------------------- objects

    /// Stores an object, streaming `body`; durable when this returns.
    ///
    /// # Errors
    /// [`VdeError`] (nothing is stored on error).
    pub fn put_object(
        &self,
        container: &str,
        key: &str,
        opts: &PutOptions,
        body: &mut dyn Read,
    ) -> Result<ObjectInfo, VdeError> {
        self.inner.put_object(container, key, opts, body)
    }

    /// Opens an object (optionally a byte range `(offset, length)`) for streaming.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn get_object(
        &self,
        container: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, ObjectReader), VdeError> {
        self.inner.open_object(container, key, None, None, range)
    }

    /// Opens a specific version (with versioning).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn get_object_version(
        &self,
        container: &str,
        key: &str,
        version: u64,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, ObjectReader), VdeError> {
        self.inner
            .open_object(container, key, Some(version), None, range)
    }

    /// Opens an object as it was in a snapshot.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn get_object_at_snapshot(
        &self,
        container: &str,
        snapshot: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, ObjectReader), VdeError> {
        let at = self.inner.snapshot_txg(container, snapshot)?;
        self.inner
            .open_object(container, key, None, Some(at), range)
    }

    /// An object's metadata.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn head_object(&self, container: &str, key: &str) -> Result<ObjectInfo, VdeError> {
        self.inner.head_object(container, key, None)
    }

    /// Deletes an object (refused under retention or legal hold; `bypass_governance` lets an
    /// administrator with that right delete under governance retention).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn delete_object(
        &self,
        container: &str,
        key: &str,
        bypass_governance: bool,
    ) -> Result<(), VdeError> {
        self.inner.delete_object(container, key, bypass_governance)
    }

    /// Copies an object; `meta` replaces content type and user metadata. The data is shared,
    /// not copied, unless the destination's policy requires encryption and the source's data
    /// is not encrypted: then it is written anew, encrypted.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn copy_object(
        &self,
        src: &str,
        src_key: &str,
        dst: &str,
        dst_key: &str,
        meta: Option<&(String, Vec<(String, String)>)>,
    ) -> Result<ObjectInfo, VdeError> {
        self.inner.copy_object(src, src_key, dst, dst_key, meta)
    }

    /// Lists objects by prefix, with delimiter grouping and pagination.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn list_objects(&self, container: &str, opts: &ListOptions) -> Result<ListPage, VdeError> {
        self.inner.list_objects(container, opts, None)
    }

    /// Lists objects as they were in a snapshot.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn list_objects_at_snapshot(
        &self,
        container: &str,
        snapshot: &str,
        opts: &ListOptions,
    ) -> Result<ListPage, VdeError> {
        let at = self.inner.snapshot_txg(container, snapshot)?;
        self.inner.list_objects(container, opts, Some(at))
    }

    /// Sets an object's retention (extending is always allowed; shortening governance
    /// retention needs `bypass_governance`; compliance retention cannot be shortened).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn set_retention(
        &self,
        container: &str,
        key: &str,
        until: u64,
        mode: policy::RetentionMode,
        bypass_governance: bool,
    ) -> Result<(), VdeError> {
        self.inner
            .set_retention(container, key, until, mode, bypass_governance)
    }

    /// Sets or clears an object's legal hold.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn set_legal_hold(&self, container: &str, key: &str, on: bool) -> Result<(), VdeError> {
        self.inner.set_legal_hold(container, key, on)
    }

    /// Starts a multipart upload.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn create_upload(
        &self,
        container: &str,
        key: &str,
        content_type: Option<String>,
        user_meta: Vec<(String, String)>,
    ) -> Result<UploadInfo, VdeError> {
        self.inner
            .create_upload(container, key, content_type, user_meta)
    }

    /// Uploads (or replaces) a part.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn put_part(
        &self,
        container: &str,
        upload_id: &str,
        number: u32,
        body: &mut dyn Read,
        content_md5: Option<[u8; 16]>,
    ) -> Result<PartInfo, VdeError> {
        self.inner
            .put_part(container, upload_id, number, body, content_md5)
    }

    /// Completes an upload: the object is the listed parts, joined without copying.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn complete_upload(
        &self,
        container: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectInfo, VdeError> {
        self.inner.complete_upload(container, upload_id, parts)
    }

    /// Aborts an upload, freeing its parts.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn abort_upload(&self, container: &str, upload_id: &str) -> Result<(), VdeError> {
        self.inner.abort_upload(container, upload_id)
    }

    /// Uploads in progress.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn list_uploads(&self, container: &str) -> Result<Vec<UploadInfo>, VdeError> {
        self.inner.list_uploads(container)
    }

    /// Parts of an upload.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn list_parts(&self, container: &str, upload_id: &str) -> Result<Vec<PartInfo>, VdeError> {
        self.inner.list_parts(container, upload_id)
    }

    // -------------------------------------------------------------------- volumes

    /// Opens a volume for block I/O.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn volume(&self, name: &str) -> Result<Volume, VdeError> {
        self.inner.open_volume(name)
    }

    // -------------------------------------------------------------------- snapshots

    /// Takes a snapshot (instant).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn create_snapshot(&self, container: &str, name: &str) -> Result<SnapshotInfo, VdeError> {
        self.inner.create_snapshot(container, name)
    }

    /// A container's snapshots, with the bytes only each one holds.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn snapshots(&self, container: &str) -> Result<Vec<SnapshotInfo>, VdeError> {
        self.inner.list_snapshots(container)
    }

    /// Deletes a snapshot, freeing what only it held.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn delete_snapshot(&self, container: &str, name: &str) -> Result<(), VdeError> {
        self.inner.delete_snapshot(container, name)
    }

    /// Rolls a container back to its newest snapshot.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn rollback(&self, container: &str, snapshot: &str) -> Result<(), VdeError> {
        self.inner.rollback(container, snapshot)
    }

    // -------------------------------------------------------------------- maintenance

    /// Empties up to `max_segments` mostly-dead segments by moving their live extents, making
    /// the space of scattered overwrites and deletions reusable. Safe to run at any time.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn clean(&self, max_segments: usize) -> Result<CleanReport, VdeError> {
        self.inner.clean(max_segments)
    }

    /// Makes `new` (the next generation) the master key. Data encrypted under older
    /// generations stays readable (their keys must be passed to [`Vde::open`] as `older`) until
    /// [`Vde::reencrypt_step`] has rewritten all of it.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn rotate_key(&self, new: &MasterKey) -> Result<(), VdeError> {
        self.inner.rotate_key(new)
    }

    /// Re-encrypts up to `batch` extents written under older key generations. Resumable: call
    /// until `remaining` is 0 (across restarts too).
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn reencrypt_step(&self, batch: usize) -> Result<RekeyProgress, VdeError> {
        self.inner.reencrypt_step(batch)
    }

    /// The key generations this session holds.
    #[must_use]
    pub fn key_generations(&self) -> Vec<u32> {
        self.inner.keys.read().generations()
    }

    // -------------------------------------------------------------------- capacity

    /// Capacity of the whole VDE.
    ///
    /// # Errors
    /// [`VdeError`].
    pub fn capacity(&self) -> Result<Capacity, VdeError> {
        let l = self.inner.segs.layout;
        let meta = self
            .inner
            .regdir
            .get(format::RegionKind::Metadata)
            .map_or(0, |r| r.length);
        let mut cap = Capacity {
            device_bytes: self.inner.header.lock().device_bytes,
            data_bytes: l.count * l.seg_bytes,
            free_bytes: self.inner.segs.free_bytes(),
            metadata_bytes: meta,
            metadata_used: 0,
            logical_bytes: 0,
            stored_bytes: 0,
            retained_bytes: 0,
            healed: self.inner.healed.load(Ordering::Relaxed),
        };
        for c in self.containers()? {
            cap.logical_bytes += c.logical_bytes;
            cap.stored_bytes += c.stored_bytes;
            cap.retained_bytes += c.retained_bytes;
        }
        // Data of deleted buckets that copies elsewhere still use (src/accounting.rs).
        let st = self.inner.state_record()?;
        cap.stored_bytes += st.orphan_stored;
        cap.retained_bytes += st.orphan_retained;
        cap.metadata_used = self.inner.meta_used_or_zero();
        Ok(cap)
    }
}

fn objects_live(
    t: &redb::ReadOnlyTable<(u64, &'static str, u64), &'static [u8]>,
    cid: u64,
    key: &str,
) -> Result<Option<(u64, records::ObjectRecord)>, VdeError> {
    objects::live_version(t, cid, key)
}

/// Opens a backing device for a VDE: an array, or a plain device/file with 64 KiB units.
#[must_use]
pub fn plain_backing(dev: Arc<dyn BlockDev>) -> Arc<dyn Backing> {
    Arc::new(PlainBacking::new(dev, 64 * 1024))
}
