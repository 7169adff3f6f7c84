//! Snapshots: instant, read-only, copy-on-write views of a container.
//!
//! A snapshot is a transaction group number T. Every versioned entry (object version or volume
//! block) carries its birth txg and, once superseded, its death txg; the snapshot sees the
//! entries with birth ≤ T < death. Taking one writes a single record: later overwrites keep the
//! superseded entries dead-but-present instead of freeing them. Deleting a snapshot frees the
//! dead entries no remaining snapshot (and, for objects, no versioning policy) still needs;
//! rollback removes everything born after T and revives what died after it.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use crate::accounting::RefChange;
use crate::engine::{Inner, now_ms};
use crate::errors::VdeError;
use crate::records::{
    EXTENTS, ExtentRecord, INODES, InodeRecord, KIND_VOLUME, LIVE, OBJ_DELETE_MARKER,
    OBJ_LEGAL_HOLD, OBJECTS, ObjectRecord, SNAPSHOTS, SnapshotRecord, limits,
};

/// A snapshot as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Name.
    pub name: String,
    /// Transaction group it captures.
    pub txg: u64,
    /// Created, Unix seconds.
    pub created: u64,
    /// Logical bytes of the container when taken.
    pub logical_bytes: u64,
    /// Stored bytes only this snapshot holds (freed if it is deleted).
    pub unique_bytes: u64,
}

fn corrupt(e: impl std::fmt::Display) -> VdeError {
    VdeError::Corrupt(e.to_string())
}

impl Inner {
    fn snapshot_list(&self, cid: u64) -> Result<Vec<(u64, SnapshotRecord)>, VdeError> {
        let rx = self.db.begin_read()?;
        let t = rx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for r in t.range((cid, 0)..=(cid, u64::MAX))? {
            let (k, v) = r?;
            out.push((
                k.value().1,
                SnapshotRecord::decode(v.value()).map_err(corrupt)?,
            ));
        }
        Ok(out)
    }

    pub(crate) fn create_snapshot(
        &self,
        cname: &str,
        sname: &str,
    ) -> Result<SnapshotInfo, VdeError> {
        self.meta_guard()?;
        if sname.is_empty()
            || sname.len() > limits::SNAPSHOT_NAME
            || sname.chars().any(char::is_control)
        {
            return Err(VdeError::Invalid(format!(
                "snapshot name must be 1 to {} printable bytes",
                limits::SNAPSHOT_NAME
            )));
        }
        let c = self.container_record(cname)?;
        if self
            .snapshot_list(c.id)?
            .iter()
            .any(|(_, s)| s.name == sname)
        {
            return Err(VdeError::Invalid(format!(
                "{cname} already has a snapshot named {sname:?}"
            )));
        }
        let (info, _) = self.txn_sync(|t| {
            let mut c = t.container(cname)?;
            let rec = SnapshotRecord {
                name: sname.to_owned(),
                created: now_ms() / 1000,
                logical_bytes: c.logical_bytes,
            };
            t.tx.open_table(SNAPSHOTS)?
                .insert((c.id, t.txg), rec.encode().as_slice())?;
            c.last_snapshot = t.txg;
            t.put_container(cname, &c)?;
            Ok(SnapshotInfo {
                name: rec.name,
                txg: t.txg,
                created: rec.created,
                logical_bytes: rec.logical_bytes,
                unique_bytes: 0,
            })
        })?;

        Ok(info)
    }

    /// Stored bytes only one snapshot holds, per snapshot txg: what deleting it would free.
    ///
    /// Volume blocks are not shared: a dead block counts for the snapshot if it is the only one
    /// that sees it. Object data can be shared (copies, versions of one object that refer to
    /// the same parts): an inode counts for a snapshot only if every reference to it is a dead
    /// version of this container seen by that snapshot alone. With versioning on, deleting a
    /// snapshot frees nothing (versioning keeps the old versions), so nothing is unique.
    fn unique_bytes(
        &self,
        c: &crate::records::ContainerRecord,
        snaps: &[u64],
    ) -> Result<BTreeMap<u64, u64>, VdeError> {
        let holder = |birth: u64, death: u64| -> Option<u64> {
            let mut it = snaps.iter().filter(|&&s| birth <= s && s < death);
            match (it.next(), it.next()) {
                (Some(&s), None) => Some(s),
                _ => None,
            }
        };
        let rx = self.db.begin_read()?;
        let mut unique: BTreeMap<u64, u64> = BTreeMap::new();
        if c.volume_inode != 0 {
            let t = rx.open_table(EXTENTS)?;
            let inode = c.volume_inode;
            for r in t.range((inode, 0, 0)..=(inode, u64::MAX, u64::MAX))? {
                let (k, v) = r?;
                let e = ExtentRecord::decode(v.value()).map_err(corrupt)?;
                if e.death != LIVE
                    && let Some(s) = holder(k.value().2, e.death)
                {
                    *unique.entry(s).or_insert(0) += u64::from(e.stored_len);
                }
            }
            return Ok(unique);
        }
        if self.effective(c, None)?.versioning.value {
            return Ok(unique);
        }
        // inode -> (dead references seen here, the one snapshot holding all of them).
        let mut seen: BTreeMap<u64, (u32, Option<u64>)> = BTreeMap::new();
        let t = rx.open_table(OBJECTS)?;
        for r in t.range((c.id, "", 0)..)? {
            let (k, v) = r?;
            let (cid, _, birth) = k.value();
            if cid != c.id {
                break;
            }
            let o = ObjectRecord::decode(v.value()).map_err(corrupt)?;
            if o.death == LIVE {
                continue;
            }
            let h = holder(birth, o.death);
            for (i, _) in &o.parts {
                let e = seen.entry(*i).or_insert((0, h));
                e.0 += 1;
                if e.1 != h {
                    e.1 = None;
                }
            }
        }
        let inodes = rx.open_table(INODES)?;
        for (i, (refs, h)) in seen {
            let Some(s) = h else { continue };
            let Some(rec) = inodes
                .get(i)?
                .map(|v| InodeRecord::decode(v.value()))
                .transpose()
                .map_err(corrupt)?
            else {
                continue;
            };
            if rec.refs == refs && rec.dead_refs == refs {
                *unique.entry(s).or_insert(0) += rec.stored;
            }
        }
        Ok(unique)
    }

    pub(crate) fn list_snapshots(&self, cname: &str) -> Result<Vec<SnapshotInfo>, VdeError> {
        let c = self.container_record(cname)?;
        let snaps = self.snapshot_list(c.id)?;
        let txgs: Vec<u64> = snaps.iter().map(|s| s.0).collect();
        let unique = self.unique_bytes(&c, &txgs)?;
        Ok(snaps
            .into_iter()
            .map(|(txg, s)| SnapshotInfo {
                name: s.name,
                txg,
                created: s.created,
                logical_bytes: s.logical_bytes,
                unique_bytes: unique.get(&txg).copied().unwrap_or(0),
            })
            .collect())
    }

    pub(crate) fn snapshot_txg(&self, cname: &str, sname: &str) -> Result<u64, VdeError> {
        let c = self.container_record(cname)?;
        self.snapshot_list(c.id)?
            .into_iter()
            .find(|(_, s)| s.name == sname)
            .map(|(t, _)| t)
            .ok_or_else(|| VdeError::NoSuchSnapshot {
                container: cname.to_owned(),
                snapshot: sname.to_owned(),
            })
    }

    pub(crate) fn delete_snapshot(&self, cname: &str, sname: &str) -> Result<(), VdeError> {
        let at = self.snapshot_txg(cname, sname)?;
        let c = self.container_record(cname)?;
        let versioning = self.effective(&c, None)?.versioning.value;
        self.txn_sync(|t| {
            let mut c = t.container(cname)?;
            t.tx.open_table(SNAPSHOTS)?.remove((c.id, at))?;
            let remaining: Vec<u64> = {
                let s = t.tx.open_table(SNAPSHOTS)?;
                let mut v = Vec::new();
                for r in s.range((c.id, 0)..=(c.id, u64::MAX))? {
                    v.push(r?.0.value().1);
                }
                v
            };
            let needed =
                |birth: u64, death: u64| remaining.iter().any(|&s| birth <= s && s < death);
            if c.kind == KIND_VOLUME {
                let inode = c.volume_inode;
                let dead: Vec<((u64, u64, u64), ExtentRecord)> = {
                    let e = t.tx.open_table(EXTENTS)?;
                    let mut v = Vec::new();
                    for r in e.range((inode, 0, 0)..=(inode, u64::MAX, u64::MAX))? {
                        let (k, val) = r?;
                        let rec = ExtentRecord::decode(val.value()).map_err(corrupt)?;
                        if rec.death != LIVE && !needed(k.value().2, rec.death) {
                            v.push((k.value(), rec));
                        }
                    }
                    v
                };
                // Dead blocks are not in the inode's (live) stored bytes: only the container's
                // retained bytes change.
                for (k, rec) in dead {
                    t.free_extent_space(&rec)?;
                    t.tx.open_table(EXTENTS)?.remove(k)?;
                    c.retained_bytes = c.retained_bytes.saturating_sub(u64::from(rec.stored_len));
                }
            } else if !versioning {
                let dead: Vec<((String, u64), ObjectRecord)> = {
                    let o = t.tx.open_table(OBJECTS)?;
                    let mut v = Vec::new();
                    for r in o.range((c.id, "", 0)..)? {
                        let (k, val) = r?;
                        let (cid, key, birth) = k.value();
                        if cid != c.id {
                            break;
                        }
                        let rec = ObjectRecord::decode(val.value()).map_err(corrupt)?;
                        if rec.death != LIVE && !needed(birth, rec.death) {
                            v.push(((key.to_owned(), birth), rec));
                        }
                    }
                    v
                };
                for ((key, birth), rec) in dead {
                    t.tx.open_table(OBJECTS)?
                        .remove((c.id, key.as_str(), birth))?;
                    for (i, _) in &rec.parts {
                        t.adjust_refs(*i, RefChange::DropDead)?;
                    }
                }
            }
            c.last_snapshot = remaining.iter().copied().max().unwrap_or(0);
            t.put_container(cname, &c)
        })?;

        self.drain_free_queue()
    }

    /// Rolls a container back to its newest snapshot `sname`.
    pub(crate) fn rollback(&self, cname: &str, sname: &str) -> Result<(), VdeError> {
        let at = self.snapshot_txg(cname, sname)?;
        let c = self.container_record(cname)?;
        if self.snapshot_list(c.id)?.iter().any(|(t, _)| *t > at) {
            return Err(VdeError::Invalid(format!(
                "{sname} is not the newest snapshot of {cname}: delete the newer snapshots first"
            )));
        }
        self.txn_sync(|t| {
            let mut c = t.container(cname)?;
            if c.kind == KIND_VOLUME {
                let inode = c.volume_inode;
                let all: Vec<((u64, u64, u64), ExtentRecord)> = {
                    let e = t.tx.open_table(EXTENTS)?;
                    let mut v = Vec::new();
                    for r in e.range((inode, 0, 0)..=(inode, u64::MAX, u64::MAX))? {
                        let (k, val) = r?;
                        v.push((
                            k.value(),
                            ExtentRecord::decode(val.value()).map_err(corrupt)?,
                        ));
                    }
                    v
                };
                let (mut logical, mut stored, mut retained) = (0u64, 0u64, 0u64);
                for (k, mut rec) in all {
                    if k.2 > at {
                        t.free_extent_space(&rec)?;
                        t.tx.open_table(EXTENTS)?.remove(k)?;
                        continue;
                    }
                    if rec.death != LIVE && rec.death > at {
                        rec.death = LIVE;
                        t.tx.open_table(EXTENTS)?
                            .insert(k, rec.encode().as_slice())?;
                    }
                    if rec.death == LIVE {
                        logical += u64::from(c.record_size);
                        stored += u64::from(rec.stored_len);
                    } else {
                        retained += u64::from(rec.stored_len);
                    }
                }
                let mut ino = t.inode(inode)?;
                ino.stored = stored;
                t.put_inode(inode, &ino)?;
                c.logical_bytes = logical;
                c.stored_bytes = stored;
                c.retained_bytes = retained;
            } else {
                let all: Vec<((String, u64), ObjectRecord)> = {
                    let o = t.tx.open_table(OBJECTS)?;
                    let mut v = Vec::new();
                    for r in o.range((c.id, "", 0)..)? {
                        let (k, val) = r?;
                        let (cid, key, birth) = k.value();
                        if cid != c.id {
                            break;
                        }
                        v.push((
                            (key.to_owned(), birth),
                            ObjectRecord::decode(val.value()).map_err(corrupt)?,
                        ));
                    }
                    v
                };
                // Rollback deletes what was born after the snapshot: never an object version
                // that retention or a legal hold protects (WORM would be bypassed).
                let now = now_ms() / 1000;
                if let Some(((key, birth), rec)) = all.iter().find(|((_, birth), rec)| {
                    *birth > at
                        && rec.flags & OBJ_DELETE_MARKER == 0
                        && (rec.flags & OBJ_LEGAL_HOLD != 0 || rec.retain_until > now)
                }) {
                    return Err(VdeError::Retained(format!(
                        "rolling {cname} back to snapshot {sname} would delete {key} (version {birth}), which is {}",
                        if rec.flags & OBJ_LEGAL_HOLD != 0 {
                            "under legal hold".to_owned()
                        } else {
                            format!("retained until {} (Unix time)", rec.retain_until)
                        }
                    )));
                }
                // Stored and retained bytes follow the reference changes (accounting.rs);
                // object counts and logical bytes are recomputed.
                let (mut objects, mut logical) = (0u64, 0u64);
                for ((key, birth), mut rec) in all {
                    if birth > at {
                        t.tx.open_table(OBJECTS)?
                            .remove((c.id, key.as_str(), birth))?;
                        let change = if rec.death == LIVE {
                            RefChange::DropLive
                        } else {
                            RefChange::DropDead
                        };
                        for (i, _) in &rec.parts {
                            t.adjust_refs(*i, change)?;
                        }
                        continue;
                    }
                    if rec.death != LIVE && rec.death > at {
                        rec.death = LIVE;
                        t.tx.open_table(OBJECTS)?
                            .insert((c.id, key.as_str(), birth), rec.encode().as_slice())?;
                        for (i, _) in &rec.parts {
                            t.adjust_refs(*i, RefChange::Revived)?;
                        }
                    }
                    if rec.death == LIVE && rec.flags & OBJ_DELETE_MARKER == 0 {
                        objects += 1;
                        logical += rec.size;
                    }
                }
                c.objects = objects;
                c.logical_bytes = logical;
            }
            t.put_container(cname, &c)
        })?;

        self.drain_free_queue()
    }
}
