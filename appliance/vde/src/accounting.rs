//! Space accounting of object data shared between versions, copies and snapshots.
//!
//! An object inode (the data of one put or one multipart part) can be referenced by several
//! object versions: copies share it, and overwritten or deleted versions kept for snapshots or
//! versioning still refer to it. Its stored (physical) bytes are counted exactly once, for the
//! container that wrote it (its *owner*, also bound into its extents' associated data):
//!
//! - as *stored* while at least one live version anywhere refers to it,
//! - as *retained* while only dead versions do (freed when the last snapshot or old version
//!   that needs it goes),
//! - not at all while only an upload's part record refers to it (not yet an object).
//!
//! Logical bytes are per version: every live object counts its full size in its own container,
//! copies included. When an owner container is deleted while another container's copies still
//! refer to its data, those bytes move to the VDE's orphan counters, so the VDE totals stay
//! exact.
//!
//! Every change of an inode's references goes through [`Txn::adjust_refs`], which records the
//! change of charge; [`Txn::apply_charges`] applies the sums to the containers once per
//! transaction (callers hold their own copy of a container record while they work, so the
//! charges must not be written under them).

use std::collections::BTreeMap;

use redb::ReadableTable;

use crate::engine::{Txn, read_state};
use crate::errors::VdeError;
use crate::records::{
    CONTAINER_IDS, CONTAINERS, ContainerRecord, FREE_QUEUE, INODE_OBJECT, InodeRecord, META,
};

/// How an inode's stored bytes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    /// Not counted (part of an upload in progress, volume data, or free).
    None,
    /// Stored bytes of live data.
    Live,
    /// Kept only for snapshots or old versions.
    Retained,
}

fn charge_of(i: &InodeRecord) -> Charge {
    if i.kind != INODE_OBJECT {
        // Volume data is accounted per block, in `volumes.rs`.
        Charge::None
    } else if i.live_refs > 0 {
        Charge::Live
    } else if i.dead_refs > 0 {
        Charge::Retained
    } else {
        Charge::None
    }
}

/// Pending changes of one container's counters (applied at the end of a transaction).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charges {
    stored_add: u64,
    stored_sub: u64,
    retained_add: u64,
    retained_sub: u64,
}

impl Charges {
    fn add(&mut self, c: Charge, bytes: u64) {
        match c {
            Charge::None => {}
            Charge::Live => self.stored_add += bytes,
            Charge::Retained => self.retained_add += bytes,
        }
    }

    fn sub(&mut self, c: Charge, bytes: u64) {
        match c {
            Charge::None => {}
            Charge::Live => self.stored_sub += bytes,
            Charge::Retained => self.retained_sub += bytes,
        }
    }

    fn apply(&self, stored: &mut u64, retained: &mut u64) {
        *stored = (*stored + self.stored_add).saturating_sub(self.stored_sub);
        *retained = (*retained + self.retained_add).saturating_sub(self.retained_sub);
    }
}

/// One change of references to an object inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefChange {
    /// A new live version refers to it.
    AddLive,
    /// A live version referring to it was removed.
    DropLive,
    /// A dead version referring to it was removed.
    DropDead,
    /// A live version referring to it died (kept for a snapshot or versioning).
    Died,
    /// A dead version referring to it became live again (rollback).
    Revived,
    /// An upload's part reference became a live version's reference (multipart completion).
    PartToLive,
}

impl Txn<'_> {
    /// Applies `change` to `inode`'s reference counts, queues it for freeing when no
    /// reference is left, and records how its owner's counters change.
    pub(crate) fn adjust_refs(&mut self, inode: u64, change: RefChange) -> Result<(), VdeError> {
        let mut r = self.inode(inode)?;
        let before = charge_of(&r);
        let bad = |what: &str| {
            VdeError::Corrupt(format!(
                "inode {inode}: {what} with {} references ({} live, {} dead)",
                r.refs, r.live_refs, r.dead_refs
            ))
        };
        match change {
            RefChange::AddLive => {
                r.refs += 1;
                r.live_refs += 1;
            }
            RefChange::DropLive | RefChange::Died => {
                r.live_refs = r
                    .live_refs
                    .checked_sub(1)
                    .ok_or_else(|| bad("a live reference dropped"))?;
                if change == RefChange::Died {
                    r.dead_refs += 1;
                } else {
                    r.refs = r.refs.saturating_sub(1);
                }
            }
            RefChange::DropDead | RefChange::Revived => {
                r.dead_refs = r
                    .dead_refs
                    .checked_sub(1)
                    .ok_or_else(|| bad("a dead reference dropped"))?;
                if change == RefChange::Revived {
                    r.live_refs += 1;
                } else {
                    r.refs = r.refs.saturating_sub(1);
                }
            }
            RefChange::PartToLive => {
                if r.refs <= r.live_refs + r.dead_refs {
                    return Err(bad("a part reference moved to a version"));
                }
                r.live_refs += 1;
            }
        }
        let after = charge_of(&r);
        if before != after {
            let c = self.charges.entry(r.container).or_default();
            c.sub(before, r.stored);
            c.add(after, r.stored);
        }
        if r.refs == 0 {
            self.tx
                .open_table(FREE_QUEUE)?
                .insert(inode, crate::engine::now_ms() / 1000)?;
            self.queued_free = true;
        }
        self.put_inode(inode, &r)
    }

    /// Writes the pending charges into the container records (and, for containers that no
    /// longer exist, into the VDE's orphan counters).
    pub(crate) fn apply_charges(&mut self) -> Result<(), VdeError> {
        let pending: BTreeMap<u64, Charges> = std::mem::take(&mut self.charges);
        for (cid, ch) in pending {
            let name = self
                .tx
                .open_table(CONTAINER_IDS)?
                .get(cid)?
                .map(|v| String::from(v.value()));
            let rec = match &name {
                Some(n) => self
                    .tx
                    .open_table(CONTAINERS)?
                    .get(n.as_str())?
                    .map(|v| ContainerRecord::decode(v.value()))
                    .transpose()
                    .map_err(|e| VdeError::Corrupt(e.to_string()))?,
                None => None,
            };
            match (name, rec) {
                (Some(n), Some(mut c)) => {
                    ch.apply(&mut c.stored_bytes, &mut c.retained_bytes);
                    self.put_container(&n, &c)?;
                }
                _ => {
                    let mut s = read_state(&self.tx)?;
                    ch.apply(&mut s.orphan_stored, &mut s.orphan_retained);
                    self.tx
                        .open_table(META)?
                        .insert("state", s.encode().as_slice())?;
                }
            }
        }
        Ok(())
    }
}
