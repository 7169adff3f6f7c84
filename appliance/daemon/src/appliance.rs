//! The appliance: every array, VDE and container `dwd` owns, and every operation on them.
//!
//! All methods block (they do disk I/O, Argon2, TPM calls): the API calls them from tokio's
//! blocking pool. Configuration changes are serialised by one lock (`ops`); data I/O (S3, NBD)
//! never takes it. An unlocked VDE is shared as an [`OpenVde`] whose gate lets `lock` and
//! shutdown wait for I/O in flight before closing it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dw_api::types::{
    self as api, AddSlotRequest, AddSlotResponse, ArrayInfo, ArraySummary, AuditEntryInfo,
    ContainerInfo, CreateArrayRequest, CreateContainerRequest, CreateVdeRequest, CreateVdeResponse,
    EffectivePolicy, Health, JobRef, MemberInfo, PlanResponse, PolicyDto, RebuildProgress,
    ResealResponse, SnapshotInfo, VdeBacking, VdeInfo, VdeSummary,
};
use dw_keys::{Clock, KeyStore, MasterKey, SystemClock};
use dw_raid::{Array, ArrayState, AssembleOptions, CreateSpec, JobKind, Level, MemberState};
use dw_vde::{ArrayBacking, Backing, ContainerKind, ContainerSpec, FormatOptions, Vde};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::Config;
use crate::devices;
use crate::error::{OpError, OpResult};
use crate::jobs::{Events, Jobs};
use crate::policy_dto;
use crate::state::{
    ARRAYS, ArrayRecord, BackingRecord, CONTAINERS, ContainerRecord, StateDb, VDES, VdeRecord,
};
use crate::util::now_secs;
use crate::vdekeys;

/// Where the appliance serves what (filled in by the servers once bound).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// `https://host:port`.
    pub https_url: Option<String>,
    /// Certificate fingerprint.
    pub fingerprint: Option<String>,
    /// `http://host:port`.
    pub s3_url: Option<String>,
    /// `nbd://host:port`.
    pub nbd_url: Option<String>,
    /// `http://host:port/metrics`.
    pub metrics_url: Option<String>,
}

struct KeyState {
    store: KeyStore,
    mk: MasterKey,
}

/// An unlocked VDE.
pub struct OpenVde {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: String,
    vde: Vde,
    backing: Arc<dyn Backing>,
    /// `true` while the VDE serves; `lock` and shutdown take it for writing.
    gate: RwLock<bool>,
    keys: Mutex<KeyState>,
    unlocked_by: String,
    reseal_recommended: AtomicBool,
}

impl std::fmt::Debug for OpenVde {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVde")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OpenVde {
    /// Runs `f` on the VDE unless it is being locked.
    ///
    /// # Errors
    /// [`OpError::Locked`] once the VDE is closing, or `f`'s error.
    pub fn with<T>(&self, f: impl FnOnce(&Vde) -> OpResult<T>) -> OpResult<T> {
        let g = self.gate.read();
        if !*g {
            return Err(OpError::Locked(format!("VDE {} is locked", self.name)));
        }
        f(&self.vde)
    }

    /// Stops new I/O, waits for I/O in flight, and closes the VDE cleanly.
    fn close(&self) -> OpResult<()> {
        let mut g = self.gate.write();
        if !*g {
            return Ok(());
        }
        *g = false;
        self.vde
            .clone()
            .close()
            .map_err(|e| OpError::Internal(format!("closing VDE {}: {e}", self.name)))
    }
}

enum VdeState {
    /// Its backing is missing or offline.
    Unavailable(String),
    /// Waiting for a key.
    Locked(String),
    /// Serving.
    Unlocked(Arc<OpenVde>),
}

struct VdeEntry {
    rec: VdeRecord,
    state: VdeState,
}

struct ArrayEntry {
    rec: ArrayRecord,
    array: Option<Arc<Array>>,
    reason: Option<String>,
    rejected: Vec<String>,
}

#[derive(Default)]
struct Registry {
    arrays: BTreeMap<Uuid, ArrayEntry>,
    vdes: BTreeMap<Uuid, VdeEntry>,
}

/// The appliance.
pub struct Appliance {
    /// Configuration.
    pub cfg: Config,
    /// State database.
    pub db: Arc<StateDb>,
    /// Accounts and tokens.
    pub auth: Arc<Auth>,
    /// Event stream.
    pub events: Arc<Events>,
    /// Jobs.
    pub jobs: Jobs,
    /// Bound addresses.
    pub endpoints: RwLock<Endpoints>,
    started: Instant,
    reg: RwLock<Registry>,
    ops: Mutex<()>,
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance")
            .field("state_dir", &self.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

fn parse_level(s: &str) -> OpResult<Level> {
    s.parse::<Level>()
        .map_err(|e| OpError::Invalid(e.to_string()))
}

fn state_name(s: ArrayState) -> &'static str {
    match s {
        ArrayState::Healthy => "healthy",
        ArrayState::Degraded => "degraded",
        ArrayState::Offline => "offline",
    }
}

/// Checks a VDE, volume or snapshot name.
fn check_plain_name(what: &str, name: &str) -> OpResult<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(OpError::Invalid(format!(
            "{what} name {name:?} must be 1-64 characters of a-z A-Z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn rebuild_progress(j: &dw_raid::JobStatus) -> RebuildProgress {
    let (kind, role) = match j.kind {
        JobKind::Rebuild { role, .. } => ("rebuild", Some(role)),
        JobKind::Replace { role, .. } => ("replace", Some(role)),
        JobKind::Resync { .. } => ("resync", None),
    };
    RebuildProgress {
        kind: kind.into(),
        role: role.and_then(|r| u32::try_from(r).ok()),
        done_bytes: j.done_bytes,
        total_bytes: j.total_bytes,
        rate_bytes_per_sec: j.rate_bytes_per_sec,
        eta_secs: j.eta_secs,
        finished: j.finished,
        error: j.error.clone(),
    }
}

fn member_info(m: &dw_raid::MemberStatus) -> MemberInfo {
    let (state, reason, done, total) = match &m.state {
        MemberState::InSync => ("in_sync", None, None, None),
        MemberState::Rebuilding {
            done_bytes,
            total_bytes,
        } => ("rebuilding", None, Some(*done_bytes), Some(*total_bytes)),
        MemberState::Replacing {
            done_bytes,
            total_bytes,
        } => ("replacing", None, Some(*done_bytes), Some(*total_bytes)),
        MemberState::Spare => ("spare", None, None, None),
        MemberState::Failed { reason } => ("failed", Some(reason.clone()), None, None),
        MemberState::Absent => ("absent", None, None, None),
    };
    MemberInfo {
        uuid: m.uuid.to_string(),
        device: m.device.clone(),
        role: m.role.and_then(|r| u32::try_from(r).ok()),
        state: state.into(),
        reason,
        done_bytes: done,
        total_bytes: total,
    }
}

fn array_info(e: &ArrayEntry) -> ArrayInfo {
    let Some(a) = &e.array else {
        return ArrayInfo {
            id: e.rec.id.clone(),
            name: e.rec.name.clone(),
            level: String::new(),
            state: "missing".into(),
            reason: e.reason.clone(),
            size_bytes: 0,
            chunk_bytes: 0,
            members: Vec::new(),
            rebuild: None,
            generation: 0,
            reconstructed_reads: 0,
            read_errors_repaired: 0,
            rejected: e.rejected.clone(),
        };
    };
    let s = a.status();
    ArrayInfo {
        id: s.uuid.to_string(),
        name: s.name.clone(),
        level: s.level.to_string(),
        state: state_name(s.state).into(),
        reason: s.offline_reason.clone(),
        size_bytes: s.size,
        chunk_bytes: s.chunk,
        members: s.members.iter().map(member_info).collect(),
        rebuild: s.job.as_ref().map(rebuild_progress),
        generation: s.generation,
        reconstructed_reads: s.counters.reconstructed_reads,
        read_errors_repaired: s.counters.read_errors_repaired,
        rejected: e.rejected.clone(),
    }
}

fn capacity(c: &dw_vde::Capacity) -> api::Capacity {
    api::Capacity {
        device_bytes: c.device_bytes,
        data_bytes: c.data_bytes,
        free_bytes: c.free_bytes,
        logical_bytes: c.logical_bytes,
        stored_bytes: c.stored_bytes,
        retained_bytes: c.retained_bytes,
        metadata_bytes: c.metadata_bytes,
        metadata_used: c.metadata_used,
        healed: c.healed,
    }
}

fn backing_text(b: &BackingRecord) -> String {
    match b {
        BackingRecord::Array { id } => format!("array:{id}"),
        BackingRecord::File { path } => format!("file:{path}"),
    }
}

impl Appliance {
    /// Opens the state, assembles every known array and unlocks what can be unlocked.
    ///
    /// # Errors
    /// The state directory or database cannot be used.
    pub fn start(cfg: Config) -> OpResult<Arc<Self>> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            OpError::Internal(format!(
                "cannot create the state directory {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
        let db = Arc::new(StateDb::open(&cfg.state_dir.join("state.redb"))?);
        let auth = Arc::new(Auth::new(
            Arc::clone(&db),
            std::time::Duration::from_secs(cfg.api.session_ttl_secs),
            cfg.api.login_attempts_per_minute,
        ));
        let events = Arc::new(Events::default());
        let app = Arc::new(Self {
            jobs: Jobs::new(Arc::clone(&events)),
            cfg,
            db,
            auth,
            events,
            endpoints: RwLock::new(Endpoints::default()),
            started: Instant::now(),
            reg: RwLock::new(Registry::default()),
            ops: Mutex::new(()),
        });
        let _g = app.ops.lock();
        for (id, rec) in app.db.list::<ArrayRecord>(ARRAYS)? {
            let Ok(uuid) = id.parse::<Uuid>() else {
                tracing::error!("state: array record {id:?} has no valid UUID; ignored");
                continue;
            };
            let entry = app.assemble(uuid, rec);
            app.reg.write().arrays.insert(uuid, entry);
        }
        for (id, rec) in app.db.list::<VdeRecord>(VDES)? {
            let Ok(uuid) = id.parse::<Uuid>() else {
                tracing::error!("state: VDE record {id:?} has no valid UUID; ignored");
                continue;
            };
            let state = match app.backing_of(&rec.backing) {
                Err(e) => VdeState::Unavailable(e.to_string()),
                Ok(b) => app.auto_unlock(uuid, &rec.name, &b),
            };
            app.reg.write().vdes.insert(uuid, VdeEntry { rec, state });
        }
        app.reconcile_containers();
        Ok(Arc::clone(&app))
    }

    fn assemble(&self, uuid: Uuid, rec: ArrayRecord) -> ArrayEntry {
        let mut devs = Vec::new();
        let mut rejected = Vec::new();
        for p in &rec.devices {
            match devices::open(p) {
                Ok(d) => devs.push(d),
                Err(e) => rejected.push(format!("{p}: {e}")),
            }
        }
        let opts = AssembleOptions {
            array: Some(uuid),
            allow_degraded: true,
            auto_rebuild: self.cfg.arrays.auto_rebuild,
            background_resync: true,
            throttle_bytes_per_sec: self.cfg.arrays.rebuild_bytes_per_sec,
        };
        match Array::assemble(devs, &opts) {
            Ok(a) => {
                for n in &a.notes {
                    tracing::info!("array {}: {n}", rec.name);
                }
                rejected.extend(
                    a.rejected
                        .iter()
                        .map(|r| format!("{}: {}", r.device, r.reason)),
                );
                let array = Arc::new(a.array);
                let st = array.status();
                let level = if st.state == ArrayState::Healthy {
                    "info"
                } else {
                    "warning"
                };
                self.events.emit(
                    "array",
                    level,
                    format!("array {} assembled: {}", rec.name, state_name(st.state)),
                    serde_json::json!({"id": uuid.to_string()}),
                );
                ArrayEntry {
                    rec,
                    array: Some(array),
                    reason: None,
                    rejected,
                }
            }
            Err(e) => {
                self.events.emit(
                    "array",
                    "error",
                    format!("array {} cannot start: {e}", rec.name),
                    serde_json::json!({"id": uuid.to_string()}),
                );
                ArrayEntry {
                    rec,
                    array: None,
                    reason: Some(e.to_string()),
                    rejected,
                }
            }
        }
    }

    fn backing_of(&self, b: &BackingRecord) -> OpResult<Arc<dyn Backing>> {
        match b {
            BackingRecord::Array { id } => {
                let uuid: Uuid = id
                    .parse()
                    .map_err(|_| OpError::Internal(format!("bad array id {id:?}")))?;
                let reg = self.reg.read();
                let e = reg
                    .arrays
                    .get(&uuid)
                    .ok_or_else(|| OpError::Unavailable(format!("array {id} is unknown")))?;
                let a = e.array.as_ref().ok_or_else(|| {
                    OpError::Unavailable(format!(
                        "array {} is not assembled: {}",
                        e.rec.name,
                        e.reason.as_deref().unwrap_or("unknown reason")
                    ))
                })?;
                Ok(Arc::new(ArrayBacking::new(Arc::clone(a))))
            }
            BackingRecord::File { path } => Ok(dw_vde::plain_backing(devices::open(path)?)),
        }
    }

    /// Boot unlock: the configured automatic slots, then a passphrase file if configured.
    fn auto_unlock(&self, uuid: Uuid, name: &str, backing: &Arc<dyn Backing>) -> VdeState {
        let passphrase = self
            .cfg
            .unlock
            .passphrase_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(self.cfg.in_state(p)).ok())
            .map(|s| s.trim().to_owned());
        match self.try_unlock(uuid, name, backing, passphrase.as_deref(), None) {
            Ok((open, attempts)) => {
                for a in attempts {
                    tracing::warn!("VDE {name}: {a}");
                }
                VdeState::Unlocked(open)
            }
            Err(OpError::Locked(why)) => {
                self.events.emit(
                    "vde",
                    "warning",
                    format!("VDE {name} is locked: {why}; unlock it with the recovery passphrase (`dw vde unlock {name}`)"),
                    serde_json::json!({"id": uuid.to_string()}),
                );
                VdeState::Locked(why)
            }
            Err(e) => {
                self.events.emit(
                    "vde",
                    "error",
                    format!("VDE {name} cannot be opened: {e}"),
                    serde_json::json!({"id": uuid.to_string()}),
                );
                VdeState::Unavailable(e.to_string())
            }
        }
    }

    /// Unlocks (automatic slots, plus the passphrase when given) and opens the VDE.
    fn try_unlock(
        &self,
        uuid: Uuid,
        name: &str,
        backing: &Arc<dyn Backing>,
        passphrase: Option<&str>,
        pin: Option<&str>,
    ) -> OpResult<(Arc<OpenVde>, Vec<String>)> {
        let store = vdekeys::read_store(backing.as_ref())?;
        if store.vde_id() != vdekeys::vde_id(uuid) {
            return Err(OpError::Internal(format!(
                "the key store on VDE {name} belongs to VDE {}",
                store.vde_id()
            )));
        }
        let cfg = vdekeys::unlock_config(
            &self.cfg.unlock.order,
            &self.cfg.unlock.tcti,
            passphrase,
            pin,
        );
        let out = vdekeys::unlock(&store, &cfg).map_err(OpError::Locked)?;
        let attempts: Vec<String> = out.attempts.iter().map(ToString::to_string).collect();
        // Persist "last used" (and a temporary slot's decremented allowance).
        vdekeys::write_store(backing.as_ref(), &out.store)?;
        let vde = vdekeys::open_vde(Arc::clone(backing), &out.store, &out.master_key)?;
        let used = format!("{} slot {}", vdekeys::kind_name(out.kind), out.slot_used);
        self.events.emit(
            "vde",
            "info",
            format!("VDE {name} unlocked with its {used}"),
            serde_json::json!({"id": uuid.to_string()}),
        );
        if out.reseal_recommended {
            self.events.emit(
                "vde",
                "warning",
                format!("VDE {name}: the measured boot state changed or a temporary slot was used; once the new state is trusted, run `dw vde reseal {name}`"),
                serde_json::json!({"id": uuid.to_string()}),
            );
        }
        let open = Arc::new(OpenVde {
            id: uuid,
            name: name.to_owned(),
            vde,
            backing: Arc::clone(backing),
            gate: RwLock::new(true),
            keys: Mutex::new(KeyState {
                store: out.store,
                mk: out.master_key,
            }),
            unlocked_by: used,
            reseal_recommended: AtomicBool::new(out.reseal_recommended),
        });
        Ok((open, attempts))
    }

    /// Brings the container table in line with what the unlocked VDEs hold.
    fn reconcile_containers(&self) {
        let open: Vec<Arc<OpenVde>> = self.open_vdes();
        for v in open {
            let Ok(list) = v.with(|vde| Ok(vde.containers()?)) else {
                continue;
            };
            let recs: Vec<(String, ContainerRecord)> = self.db.list(CONTAINERS).unwrap_or_default();
            for c in &list {
                if !recs.iter().any(|(n, _)| n == &c.name) {
                    let kind = match c.kind {
                        ContainerKind::Bucket => "bucket",
                        ContainerKind::Volume { .. } => "volume",
                    };
                    let _ = self.db.put(
                        CONTAINERS,
                        &c.name,
                        &ContainerRecord {
                            name: c.name.clone(),
                            vde: v.id.to_string(),
                            kind: kind.into(),
                            owner: None,
                            object_lock: false,
                            default_retention: None,
                            created: c.created,
                        },
                    );
                }
            }
            for (n, r) in recs {
                if r.vde == v.id.to_string() && !list.iter().any(|c| c.name == n) {
                    tracing::warn!("container {n} is gone from VDE {}; forgetting it", v.name);
                    let _ = self.db.remove(CONTAINERS, &n);
                }
            }
        }
    }

    // ------------------------------------------------------------------------- lookups

    /// Every unlocked VDE.
    #[must_use]
    pub fn open_vdes(&self) -> Vec<Arc<OpenVde>> {
        self.reg
            .read()
            .vdes
            .values()
            .filter_map(|e| match &e.state {
                VdeState::Unlocked(o) => Some(Arc::clone(o)),
                _ => None,
            })
            .collect()
    }

    fn find_array(&self, id: &str) -> OpResult<Uuid> {
        let reg = self.reg.read();
        if let Ok(u) = id.parse::<Uuid>()
            && reg.arrays.contains_key(&u)
        {
            return Ok(u);
        }
        reg.arrays
            .iter()
            .find(|(_, e)| e.rec.name == id)
            .map(|(u, _)| *u)
            .ok_or_else(|| OpError::NotFound(format!("no array {id:?}")))
    }

    fn array(&self, id: &str) -> OpResult<Arc<Array>> {
        let u = self.find_array(id)?;
        let reg = self.reg.read();
        let e = &reg.arrays[&u];
        e.array.clone().ok_or_else(|| {
            OpError::Unavailable(format!(
                "array {} is not assembled: {}",
                e.rec.name,
                e.reason.as_deref().unwrap_or("unknown")
            ))
        })
    }

    fn find_vde(&self, id: &str) -> OpResult<Uuid> {
        let reg = self.reg.read();
        if let Ok(u) = id.parse::<Uuid>()
            && reg.vdes.contains_key(&u)
        {
            return Ok(u);
        }
        reg.vdes
            .iter()
            .find(|(_, e)| e.rec.name == id)
            .map(|(u, _)| *u)
            .ok_or_else(|| OpError::NotFound(format!("no VDE {id:?}")))
    }

    /// An unlocked VDE by name or UUID.
    ///
    /// # Errors
    /// [`OpError::NotFound`], [`OpError::Locked`].
    pub fn open_vde(&self, id: &str) -> OpResult<Arc<OpenVde>> {
        let u = self.find_vde(id)?;
        let reg = self.reg.read();
        let e = &reg.vdes[&u];
        match &e.state {
            VdeState::Unlocked(o) => Ok(Arc::clone(o)),
            VdeState::Locked(why) => Err(OpError::Locked(format!(
                "VDE {} is locked ({why}): unlock it first",
                e.rec.name
            ))),
            VdeState::Unavailable(why) => Err(OpError::Unavailable(format!(
                "VDE {} is unavailable: {why}",
                e.rec.name
            ))),
        }
    }

    /// The container record and its unlocked VDE.
    ///
    /// # Errors
    /// [`OpError::NotFound`], [`OpError::Locked`].
    pub fn container_vde(&self, name: &str) -> OpResult<(ContainerRecord, Arc<OpenVde>)> {
        let rec: ContainerRecord = self
            .db
            .get(CONTAINERS, name)?
            .ok_or_else(|| OpError::NotFound(format!("no bucket or volume {name:?}")))?;
        let v = self.open_vde(&rec.vde)?;
        Ok((rec, v))
    }

    /// Every container record.
    ///
    /// # Errors
    /// State database errors.
    pub fn container_records(&self) -> OpResult<Vec<ContainerRecord>> {
        Ok(self
            .db
            .list::<ContainerRecord>(CONTAINERS)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The VDE new buckets go to: `s3.default_vde`, else the only (or first) unlocked VDE.
    ///
    /// # Errors
    /// [`OpError::Unavailable`] when no VDE is unlocked.
    pub fn default_vde(&self) -> OpResult<Arc<OpenVde>> {
        if !self.cfg.s3.default_vde.is_empty() {
            return self.open_vde(&self.cfg.s3.default_vde);
        }
        self.open_vdes().into_iter().next().ok_or_else(|| {
            OpError::Unavailable("no VDE is unlocked: create or unlock one first".into())
        })
    }

    // ------------------------------------------------------------------------- system

    /// Overall health.
    #[must_use]
    pub fn health(&self) -> Health {
        let reg = self.reg.read();
        let mut problems = Vec::new();
        let mut worst = 0u8;
        let mut arrays = Vec::new();
        for e in reg.arrays.values() {
            let (state, reason) = match &e.array {
                None => ("missing", e.reason.clone()),
                Some(a) => {
                    let s = a.status();
                    (state_name(s.state), s.offline_reason.clone())
                }
            };
            match state {
                "healthy" => {}
                "degraded" => {
                    worst = worst.max(1);
                    problems.push(format!("array {} is degraded", e.rec.name));
                }
                _ => {
                    worst = 2;
                    problems.push(format!(
                        "array {} is {state}: {}",
                        e.rec.name,
                        reason.unwrap_or_default()
                    ));
                }
            }
            arrays.push(ArraySummary {
                id: e.rec.id.clone(),
                name: e.rec.name.clone(),
                state: state.into(),
            });
        }
        let mut vdes = Vec::new();
        for e in reg.vdes.values() {
            let state = match &e.state {
                VdeState::Unlocked(o) => {
                    if o.reseal_recommended.load(Ordering::Relaxed) {
                        worst = worst.max(1);
                        problems.push(format!(
                            "VDE {}: measured state changed, confirm with `dw vde reseal`",
                            e.rec.name
                        ));
                    }
                    "unlocked"
                }
                VdeState::Locked(why) => {
                    worst = 2;
                    problems.push(format!("VDE {} is locked: {why}", e.rec.name));
                    "locked"
                }
                VdeState::Unavailable(why) => {
                    worst = 2;
                    problems.push(format!("VDE {} is unavailable: {why}", e.rec.name));
                    "unavailable"
                }
            };
            vdes.push(VdeSummary {
                id: e.rec.id.clone(),
                name: e.rec.name.clone(),
                state: state.into(),
            });
        }
        Health {
            status: ["ok", "degraded", "failed"][usize::from(worst)].into(),
            version: dw_api::VERSION.into(),
            uptime_secs: self.started.elapsed().as_secs(),
            problems,
            arrays,
            vdes,
        }
    }

    /// Where everything is served.
    #[must_use]
    pub fn info(&self) -> api::Info {
        let ep = self.endpoints.read().clone();
        api::Info {
            version: dw_api::VERSION.into(),
            api_version: "v1".into(),
            state_dir: self.cfg.state_dir.display().to_string(),
            socket: self.cfg.socket_path().display().to_string(),
            https_url: ep.https_url,
            tls_fingerprint_sha256: ep.fingerprint,
            s3_url: ep.s3_url,
            s3_region: self.cfg.s3.region.clone(),
            nbd_url: ep.nbd_url,
            metrics_url: ep.metrics_url,
        }
    }

    /// Hardware inventory.
    #[must_use]
    pub fn devices(&self) -> serde_json::Value {
        serde_json::to_value(dw_probe::probe(&dw_probe::ProbeConfig::system())).unwrap_or_default()
    }

    // ------------------------------------------------------------------------- arrays

    /// Proposals for these devices (or every available one).
    ///
    /// # Errors
    /// [`OpError::Invalid`] for unusable devices.
    pub fn plan(&self, devices: &[String]) -> OpResult<PlanResponse> {
        let mut drives = Vec::new();
        if devices.is_empty() {
            let inv = dw_probe::probe(&dw_probe::ProbeConfig::system());
            for d in inv.devices {
                if d.verdict == dw_probe::Verdict::Available
                    && let Some(size) = d.size_bytes
                {
                    drives.push(dw_raid::plan::Drive { id: d.path, size });
                }
            }
        } else {
            for p in devices {
                drives.push(dw_raid::plan::Drive {
                    id: p.clone(),
                    size: devices::size_of(p)?,
                });
            }
        }
        if drives.is_empty() {
            return Err(OpError::Invalid(
                "no drives: name some, or free drives discovery can see".into(),
            ));
        }
        let proposals = dw_raid::plan::plan(&drives)
            .into_iter()
            .map(|p| api::Proposal {
                level: p.level.to_string(),
                members: p.members,
                spares: p.spares,
                copies: u32::try_from(p.copies).unwrap_or(u32::MAX),
                usable_bytes: p.usable_bytes,
                raw_bytes: p.raw_bytes,
                wasted_bytes: p.wasted_bytes,
                fault_tolerance: u32::try_from(p.fault_tolerance).unwrap_or(u32::MAX),
                recommended: p.recommended,
                summary: p.summary,
            })
            .collect();
        Ok(PlanResponse { proposals })
    }

    /// Creates an array.
    ///
    /// # Errors
    /// [`OpError`] naming the device or setting at fault.
    pub fn create_array(&self, req: &CreateArrayRequest) -> OpResult<ArrayInfo> {
        let _g = self.ops.lock();
        let level = parse_level(&req.level)?;
        if self
            .reg
            .read()
            .arrays
            .values()
            .any(|e| e.rec.name == req.name)
        {
            return Err(OpError::Conflict(format!(
                "an array named {:?} exists",
                req.name
            )));
        }
        let all: Vec<&String> = req.devices.iter().chain(req.spares.iter()).collect();
        if all.is_empty() {
            return Err(OpError::Invalid("no devices given".into()));
        }
        for p in &all {
            if self.device_in_use(p) {
                return Err(OpError::Conflict(format!(
                    "{p} already belongs to an array"
                )));
            }
            devices::check_unused(p, req.force)?;
        }
        let members = req
            .devices
            .iter()
            .map(|p| devices::open(p))
            .collect::<OpResult<Vec<_>>>()?;
        let spares = req
            .spares
            .iter()
            .map(|p| devices::open(p))
            .collect::<OpResult<Vec<_>>>()?;
        // RAID-Z: the mirrored small-write region holds the VDE's metadata and intent log.
        // 3 % (the array's default) is plenty on real drives; on small ones it is raised so
        // the region has at least 64 MiB (at most a quarter of the array).
        let small_write_percent = if level.is_z() {
            let smallest = members.iter().map(|d| d.info().size).min().unwrap_or(0);
            let data_cols = u64::try_from(members.len().saturating_sub(level.parity()))
                .unwrap_or(1)
                .max(1);
            let usable = smallest.saturating_mul(data_cols).max(1);
            let want = (64u64 << 20).saturating_mul(100).div_ceil(usable);
            u32::try_from(want.clamp(3, 25)).unwrap_or(25)
        } else {
            0
        };
        let spec = CreateSpec {
            level,
            name: req.name.clone(),
            chunk: req.chunk_bytes.unwrap_or(0),
            copies: req
                .copies
                .map_or(0, |c| usize::try_from(c).unwrap_or(usize::MAX)),
            small_write_percent,
        };
        let array = Array::create(&members, &spares, &spec)?;
        array.set_auto_rebuild(self.cfg.arrays.auto_rebuild);
        if self.cfg.arrays.rebuild_bytes_per_sec > 0 {
            array.set_throttle(self.cfg.arrays.rebuild_bytes_per_sec);
        }
        let uuid = array.uuid();
        let rec = ArrayRecord {
            id: uuid.to_string(),
            name: req.name.clone(),
            devices: all.iter().map(|s| (*s).clone()).collect(),
        };
        self.db.put(ARRAYS, &rec.id, &rec)?;
        let entry = ArrayEntry {
            rec,
            array: Some(Arc::new(array)),
            reason: None,
            rejected: Vec::new(),
        };
        let info = array_info(&entry);
        self.reg.write().arrays.insert(uuid, entry);
        self.events.emit(
            "array",
            "info",
            format!(
                "array {} created ({level}, {} members)",
                req.name,
                req.devices.len()
            ),
            serde_json::json!({"id": uuid.to_string()}),
        );
        Ok(info)
    }

    fn device_in_use(&self, path: &str) -> bool {
        let canon = std::fs::canonicalize(path).ok();
        let same =
            |p: &String| p == path || canon.is_some() && std::fs::canonicalize(p).ok() == canon;
        let reg = self.reg.read();
        reg.arrays.values().any(|e| e.rec.devices.iter().any(same))
            || reg
                .vdes
                .values()
                .any(|e| matches!(&e.rec.backing, BackingRecord::File { path: p } if same(p)))
    }

    /// Every array.
    #[must_use]
    pub fn arrays(&self) -> Vec<ArrayInfo> {
        self.reg.read().arrays.values().map(array_info).collect()
    }

    /// One array.
    ///
    /// # Errors
    /// [`OpError::NotFound`].
    pub fn array_info(&self, id: &str) -> OpResult<ArrayInfo> {
        let u = self.find_array(id)?;
        Ok(array_info(&self.reg.read().arrays[&u]))
    }

    fn remember_device(&self, id: &str, path: &str) -> OpResult<()> {
        let u = self.find_array(id)?;
        let mut reg = self.reg.write();
        let e = reg
            .arrays
            .get_mut(&u)
            .ok_or_else(|| OpError::NotFound(format!("no array {id:?}")))?;
        if !e.rec.devices.iter().any(|d| d == path) {
            e.rec.devices.push(path.to_owned());
            self.db.put(ARRAYS, &e.rec.id, &e.rec)?;
        }
        Ok(())
    }

    /// Adds a hot spare.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn add_spare(&self, id: &str, path: &str, force: bool) -> OpResult<ArrayInfo> {
        let _g = self.ops.lock();
        let a = self.array(id)?;
        if self.device_in_use(path) {
            return Err(OpError::Conflict(format!(
                "{path} already belongs to an array"
            )));
        }
        devices::check_unused(path, force)?;
        let dev = devices::open(path)?;
        // Recorded first: if the daemon stops right after, assembly still offers the device.
        self.remember_device(id, path)?;
        a.add_spare(dev)?;
        self.events.emit(
            "array",
            "info",
            format!("array {}: spare {path} added", a.name()),
            serde_json::json!({"id": a.uuid().to_string()}),
        );
        self.array_info(id)
    }

    /// Replaces the member of `role` with a named device or a spare.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn replace(
        &self,
        id: &str,
        role: u32,
        path: Option<&str>,
        force: bool,
    ) -> OpResult<ArrayInfo> {
        let _g = self.ops.lock();
        let a = self.array(id)?;
        let dev = match path {
            Some(p) => {
                if self.device_in_use(p) {
                    return Err(OpError::Conflict(format!(
                        "{p} already belongs to an array"
                    )));
                }
                devices::check_unused(p, force)?;
                let d = devices::open(p)?;
                self.remember_device(id, p)?;
                Some(d)
            }
            None => None,
        };
        a.replace_member(usize::try_from(role).unwrap_or(usize::MAX), dev)?;
        self.events.emit(
            "array",
            "info",
            format!("array {}: replacing role {role}", a.name()),
            serde_json::json!({"id": a.uuid().to_string()}),
        );
        self.array_info(id)
    }

    /// Takes a member out as failed (a spare takes over when auto-rebuild is on).
    ///
    /// # Errors
    /// [`OpError`] (refused when it would make data unreadable).
    pub fn fail_member(&self, id: &str, role: u32) -> OpResult<ArrayInfo> {
        let _g = self.ops.lock();
        let a = self.array(id)?;
        a.remove_member(usize::try_from(role).unwrap_or(usize::MAX))?;
        self.events.emit(
            "array",
            "warning",
            format!(
                "array {}: member of role {role} taken out by an administrator",
                a.name()
            ),
            serde_json::json!({"id": a.uuid().to_string()}),
        );
        self.array_info(id)
    }

    /// Sets the rebuild bandwidth limit.
    ///
    /// # Errors
    /// [`OpError::NotFound`].
    pub fn throttle(&self, id: &str, bytes_per_sec: u64) -> OpResult<ArrayInfo> {
        self.array(id)?.set_throttle(bytes_per_sec);
        self.array_info(id)
    }

    /// Starts a scrub job.
    ///
    /// # Errors
    /// [`OpError::Conflict`] when one already runs.
    pub fn scrub(self: &Arc<Self>, id: &str, repair: bool) -> OpResult<JobRef> {
        let a = self.array(id)?;
        let target = a.uuid().to_string();
        if let Some(j) = self.jobs.running("scrub", &target) {
            return Err(OpError::Conflict(format!(
                "a scrub of this array is already running ({})",
                j.id()
            )));
        }
        let total = {
            let s = a.status();
            let members =
                u64::try_from(s.members.iter().filter(|m| m.role.is_some()).count()).unwrap_or(0);
            let l = a.layout();
            l.rows.saturating_mul(s.chunk).saturating_mul(members)
        };
        let events = Arc::clone(&self.events);
        let job = self.jobs.spawn("scrub", &target, "bytes", move |ctx| {
            let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let report = std::thread::scope(|s| {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        ctx.progress(progress.load(Ordering::Relaxed), total);
                        std::thread::sleep(std::time::Duration::from_millis(250));
                    }
                });
                let r = a.scrub(&dw_raid::ScrubOptions {
                    repair,
                    cancel: Some(ctx.cancel_flag()),
                    progress: Some(Arc::clone(&progress)),
                });
                done.store(true, Ordering::Relaxed);
                r
            })?;
            // The total was an estimate; a finished scrub knows exactly what it read.
            if report.cancelled {
                ctx.progress(report.bytes_read, total);
            } else {
                ctx.progress(report.bytes_read, report.bytes_read);
            }
            let msg = format!(
                "{} units checked, {} mismatches, {} repaired, {} unrepaired, {} read errors fixed{}",
                report.units_checked,
                report.mismatches,
                report.repaired.len(),
                report.unrepaired.len(),
                report.read_errors,
                if report.skipped_degraded > 0 {
                    format!(", {} skipped (degraded)", report.skipped_degraded)
                } else {
                    String::new()
                }
            );
            if report.mismatches > 0 || report.read_errors > 0 {
                events.emit(
                    "alert",
                    if report.unrepaired.is_empty() { "warning" } else { "error" },
                    format!("scrub of array {}: {msg}", a.name()),
                    serde_json::json!({"id": a.uuid().to_string()}),
                );
            }
            let result = serde_json::json!({
                "units_checked": report.units_checked,
                "bytes_read": report.bytes_read,
                "mismatches": report.mismatches,
                "repaired": report.repaired.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
                "unrepaired": report.unrepaired.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
                "read_errors": report.read_errors,
                "skipped_degraded": report.skipped_degraded,
                "cancelled": report.cancelled,
            });
            Ok((Some(result), msg))
        })?;
        Ok(JobRef {
            job_id: job.id().to_owned(),
        })
    }

    // ------------------------------------------------------------------------- VDEs

    /// Creates a VDE with a recovery passphrase slot (and a TPM2 slot when asked).
    ///
    /// # Errors
    /// [`OpError`].
    pub fn create_vde(&self, req: &CreateVdeRequest) -> OpResult<CreateVdeResponse> {
        let _g = self.ops.lock();
        check_plain_name("VDE", &req.name)?;
        if self
            .reg
            .read()
            .vdes
            .values()
            .any(|e| e.rec.name == req.name)
        {
            return Err(OpError::Conflict(format!(
                "a VDE named {:?} exists",
                req.name
            )));
        }
        if req.admin_contact.len() > 1024 {
            return Err(OpError::Invalid(
                "the admin contact must be at most 1024 bytes".into(),
            ));
        }
        let profile = policy_dto::profile(req.profile.as_deref().unwrap_or("standard"))?;
        let (backing_rec, backing): (BackingRecord, Arc<dyn Backing>) = match &req.backing {
            VdeBacking::Array(a) => {
                let u = self.find_array(a)?;
                if self.reg.read().vdes.values().any(
                    |e| matches!(&e.rec.backing, BackingRecord::Array { id } if *id == u.to_string()),
                ) {
                    return Err(OpError::Conflict(format!("array {a} already holds a VDE")));
                }
                let rec = BackingRecord::Array { id: u.to_string() };
                let b = self.backing_of(&rec)?;
                (rec, b)
            }
            VdeBacking::File { path, size_bytes } => {
                if self.device_in_use(path) {
                    return Err(OpError::Conflict(format!("{path} is already in use")));
                }
                let p = std::path::Path::new(path);
                if !p.exists() {
                    devices::create_file(p, *size_bytes)?;
                } else {
                    devices::check_unused(path, false)?;
                }
                let rec = BackingRecord::File { path: path.clone() };
                let b = self.backing_of(&rec)?;
                (rec, b)
            }
        };
        // Slots are prepared before anything is written, so a weak passphrase or a missing
        // TPM leaves the device untouched.
        let (pass_slot, generated) =
            vdekeys::passphrase_slot("recovery", req.passphrase.as_deref())?;
        let tpm_slot = match &req.tpm {
            Some(t) => Some(vdekeys::tpm_slot(
                &self.cfg.unlock.tcti,
                "tpm2",
                &t.pcrs,
                t.pin.as_deref(),
            )?),
            None => None,
        };
        let mk = MasterKey::generate()
            .map_err(|e| OpError::Internal(format!("cannot generate a master key: {e}")))?;
        let opts = FormatOptions {
            label: req.name.clone(),
            admin_contact: req.admin_contact.clone(),
            policy: dw_vde::Policy {
                profile: Some(profile),
                ..dw_vde::Policy::default()
            },
            ..FormatOptions::default()
        };
        let vde = Vde::format(Arc::clone(&backing), &vdekeys::vde_key(&mk, 0), &opts)?;
        let uuid = vde.uuid();
        let vid = vdekeys::vde_id(uuid);
        let mut store = KeyStore::new(vid, &mk, SystemClock.now());
        let mut used = "passphrase slot".to_owned();
        for slot in std::iter::once(pass_slot).chain(tpm_slot) {
            let (next, id) = store
                .add_slot(vid, &mk, slot, SystemClock.now())
                .map_err(|e| OpError::Internal(format!("cannot add a key slot: {e}")))?;
            used = format!("slot {id}");
            store = next;
        }
        let _ = used;
        vdekeys::write_store(backing.as_ref(), &store)?;
        vde.commit()?;
        let rec = VdeRecord {
            id: uuid.to_string(),
            name: req.name.clone(),
            backing: backing_rec,
            created: now_secs(),
        };
        self.db.put(VDES, &rec.id, &rec)?;
        let open = Arc::new(OpenVde {
            id: uuid,
            name: req.name.clone(),
            vde,
            backing,
            gate: RwLock::new(true),
            keys: Mutex::new(KeyState { store, mk }),
            unlocked_by: "creation".into(),
            reseal_recommended: AtomicBool::new(false),
        });
        self.reg.write().vdes.insert(
            uuid,
            VdeEntry {
                rec,
                state: VdeState::Unlocked(open),
            },
        );
        self.events.emit(
            "vde",
            "info",
            format!("VDE {} created", req.name),
            serde_json::json!({"id": uuid.to_string()}),
        );
        Ok(CreateVdeResponse {
            vde: self.vde_info(&uuid.to_string())?,
            recovery_passphrase: generated,
        })
    }

    /// Every VDE.
    #[must_use]
    pub fn vdes(&self) -> Vec<VdeInfo> {
        let ids: Vec<Uuid> = self.reg.read().vdes.keys().copied().collect();
        ids.into_iter()
            .filter_map(|u| self.vde_info(&u.to_string()).ok())
            .collect()
    }

    /// One VDE.
    ///
    /// # Errors
    /// [`OpError::NotFound`].
    pub fn vde_info(&self, id: &str) -> OpResult<VdeInfo> {
        let u = self.find_vde(id)?;
        let reg = self.reg.read();
        let e = &reg.vdes[&u];
        let mut info = VdeInfo {
            id: e.rec.id.clone(),
            name: e.rec.name.clone(),
            state: String::new(),
            reason: None,
            backing: backing_text(&e.rec.backing),
            admin_contact: None,
            unlocked_by: None,
            reseal_recommended: false,
            capacity: None,
            profile: None,
        };
        match &e.state {
            VdeState::Unavailable(why) => {
                info.state = "unavailable".into();
                info.reason = Some(why.clone());
            }
            VdeState::Locked(why) => {
                info.state = "locked".into();
                info.reason = Some(why.clone());
            }
            VdeState::Unlocked(o) => {
                info.state = "unlocked".into();
                info.unlocked_by = Some(o.unlocked_by.clone());
                info.reseal_recommended = o.reseal_recommended.load(Ordering::Relaxed);
                let _ = o.with(|v| {
                    info.admin_contact = Some(v.recovery().contact);
                    info.capacity = v.capacity().ok().map(|c| capacity(&c));
                    info.profile = v.vde_policy().profile.map(|p| p.name().to_owned());
                    Ok(())
                });
            }
        }
        Ok(info)
    }

    /// Unlocks a locked VDE with the automatic slots or a recovery passphrase.
    ///
    /// # Errors
    /// [`OpError::Forbidden`] with every attempt when it stays locked.
    pub fn unlock(
        &self,
        id: &str,
        passphrase: Option<&str>,
        pin: Option<&str>,
    ) -> OpResult<api::UnlockResponse> {
        let _g = self.ops.lock();
        let u = self.find_vde(id)?;
        let (rec, already) = {
            let reg = self.reg.read();
            let e = &reg.vdes[&u];
            (e.rec.clone(), matches!(e.state, VdeState::Unlocked(_)))
        };
        if already {
            return Ok(api::UnlockResponse {
                vde: self.vde_info(id)?,
                attempts: vec!["already unlocked".into()],
            });
        }
        let backing = match self.backing_of(&rec.backing) {
            Ok(b) => b,
            Err(e) => {
                if let Some(v) = self.reg.write().vdes.get_mut(&u) {
                    v.state = VdeState::Unavailable(e.to_string());
                }
                return Err(e);
            }
        };
        match self.try_unlock(u, &rec.name, &backing, passphrase, pin) {
            Ok((open, attempts)) => {
                if let Some(v) = self.reg.write().vdes.get_mut(&u) {
                    v.state = VdeState::Unlocked(open);
                }
                self.reconcile_containers();
                Ok(api::UnlockResponse {
                    vde: self.vde_info(id)?,
                    attempts,
                })
            }
            Err(OpError::Locked(why)) => {
                if let Some(v) = self.reg.write().vdes.get_mut(&u) {
                    v.state = VdeState::Locked(why.clone());
                }
                Err(OpError::Forbidden(why))
            }
            Err(e) => Err(e),
        }
    }

    /// Flushes and closes a VDE and forgets its key.
    ///
    /// # Errors
    /// [`OpError::NotFound`], or closing failed.
    pub fn lock(&self, id: &str) -> OpResult<VdeInfo> {
        let _g = self.ops.lock();
        let u = self.find_vde(id)?;
        let open = {
            let mut reg = self.reg.write();
            let e = reg
                .vdes
                .get_mut(&u)
                .ok_or_else(|| OpError::NotFound(format!("no VDE {id:?}")))?;
            match std::mem::replace(
                &mut e.state,
                VdeState::Locked("locked by an administrator".into()),
            ) {
                VdeState::Unlocked(o) => Some(o),
                other => {
                    e.state = other;
                    None
                }
            }
        };
        if let Some(o) = open {
            o.close()?;
            self.events.emit(
                "vde",
                "info",
                format!("VDE {} locked", o.name),
                serde_json::json!({"id": u.to_string()}),
            );
        }
        self.vde_info(id)
    }

    fn with_keys<T>(
        &self,
        id: &str,
        f: impl FnOnce(&OpenVde, &mut KeyState) -> OpResult<T>,
    ) -> OpResult<T> {
        let o = self.open_vde(id)?;
        let mut k = o.keys.lock();
        f(&o, &mut k)
    }

    /// Key slots.
    ///
    /// # Errors
    /// [`OpError::Locked`] (slots are listed from the unlocked store).
    pub fn slots(&self, id: &str) -> OpResult<Vec<api::SlotInfo>> {
        self.with_keys(id, |_, k| {
            Ok(k.store.slots().iter().map(vdekeys::slot_info).collect())
        })
    }

    /// Adds a key slot.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn add_slot(&self, id: &str, req: &AddSlotRequest) -> OpResult<AddSlotResponse> {
        let _g = self.ops.lock();
        let tcti = self.cfg.unlock.tcti.clone();
        self.with_keys(id, |o, k| {
            let label = if req.label.is_empty() {
                req.kind.clone()
            } else {
                req.label.clone()
            };
            let (slot, pass) = match req.kind.as_str() {
                "passphrase" => vdekeys::passphrase_slot(&label, req.passphrase.as_deref())?,
                "tpm2" => {
                    let t = req.tpm.clone().unwrap_or_default();
                    (
                        vdekeys::tpm_slot(&tcti, &label, &t.pcrs, t.pin.as_deref())?,
                        None,
                    )
                }
                "peer" => {
                    let p = req.peer.as_ref().ok_or_else(|| {
                        OpError::Invalid(
                            "a peer slot needs \"peer\": {endpoint, cert_sha256, token}".into(),
                        )
                    })?;
                    (vdekeys::peer_slot(&tcti, &label, p)?, None)
                }
                "sev_snp" => (vdekeys::snp_slot(&label)?, None),
                other => {
                    return Err(OpError::Invalid(format!(
                        "slot kind {other:?}: one of passphrase, tpm2, peer, sev_snp"
                    )));
                }
            };
            let (next, sid) = vdekeys::add_slot(o.backing.as_ref(), &k.store, &k.mk, slot)?;
            k.store = next;
            let info = k
                .store
                .slot(sid)
                .map(|s| vdekeys::slot_info(&s))
                .ok_or_else(|| OpError::Internal("the new slot vanished".into()))?;
            self.events.emit(
                "vde",
                "info",
                format!("VDE {}: {} slot {sid} added", o.name, req.kind),
                serde_json::json!({"id": o.id.to_string()}),
            );
            Ok(AddSlotResponse {
                slot: info,
                passphrase: pass,
            })
        })
    }

    /// Removes a key slot (never the last permanent one or the last recovery passphrase).
    ///
    /// # Errors
    /// [`OpError::Conflict`] with the reason.
    pub fn remove_slot(&self, id: &str, slot: &str) -> OpResult<()> {
        let _g = self.ops.lock();
        let sid: u32 = slot
            .parse()
            .map_err(|_| OpError::Invalid(format!("slot {slot:?} is not a number")))?;
        self.with_keys(id, |o, k| {
            // A peer keeps its half of the key until told to forget this machine, and only the
            // escrowed share (gone once the slot is) proves the right to tell it.
            let is_peer = k
                .store
                .slot(dw_keys::SlotId(sid))
                .is_some_and(|s| s.kind == dw_keys::SlotKind::Peer);
            let unenrolled = if is_peer {
                Some(dw_keys::unenroll_peer(
                    &k.store,
                    k.store.vde_id(),
                    &k.mk,
                    dw_keys::SlotId(sid),
                    dw_keys::peer::client::PeerTimeouts::default(),
                ))
            } else {
                None
            };
            let next = k
                .store
                .remove_slot(
                    k.store.vde_id(),
                    &k.mk,
                    dw_keys::SlotId(sid),
                    dw_keys::RemovePolicy::KeepRecovery,
                    SystemClock.now(),
                )
                .map_err(|e| match e {
                    dw_keys::RemoveSlotError::NoSuchSlot(_) => {
                        OpError::NotFound(format!("VDE {} has no slot {sid}", o.name))
                    }
                    e => OpError::Conflict(e.to_string()),
                })?;
            vdekeys::write_store(o.backing.as_ref(), &next)?;
            k.store = next;
            self.events.emit(
                "vde",
                "info",
                format!("VDE {}: slot {sid} removed", o.name),
                serde_json::json!({"id": o.id.to_string()}),
            );
            if let Some(Err(e)) = unenrolled {
                // The slot is gone either way: a dead peer must not keep a slot alive.
                self.events.emit(
                    "vde",
                    "warning",
                    format!(
                        "VDE {}: the peer of removed slot {sid} was not told to forget this machine ({e}); revoke it there with `dw-keyd revoke`",
                        o.name
                    ),
                    serde_json::json!({"id": o.id.to_string(), "slot": sid}),
                );
            }
            Ok(())
        })
    }

    /// The measured state is trusted: re-seal every slot to it.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn reseal(&self, id: &str, pin: Option<&str>) -> OpResult<ResealResponse> {
        let _g = self.ops.lock();
        let tcti = self.cfg.unlock.tcti.clone();
        self.with_keys(id, |o, k| {
            let mut tpm = dw_keys::tpm::Tpm::open(&tcti).ok();
            let mut snp = dw_keys::snp::SevGuest::open().ok();
            let mut env = dw_keys::ResealEnv {
                tpm: tpm.as_mut(),
                pin: pin.map(dw_keys::Pin::new),
                snp: snp
                    .as_mut()
                    .map(|f| f as &mut dyn dw_keys::snp::SnpFirmware),
                peers: Some(dw_keys::peer::client::PeerTimeouts::default()),
            };
            let (next, report) = dw_keys::reseal(
                &k.store,
                k.store.vde_id(),
                &k.mk,
                &mut env,
                SystemClock.now(),
            )
            .map_err(|e| OpError::Internal(format!("re-seal failed: {e}")))?;
            vdekeys::write_store(o.backing.as_ref(), &next)?;
            k.store = next;
            o.reseal_recommended.store(false, Ordering::Relaxed);
            let slots = report
                .slots
                .iter()
                .map(|(id, kind, out)| {
                    format!("slot {id} ({}): {out:?}", vdekeys::kind_name(*kind))
                })
                .collect();
            self.events.emit(
                "vde",
                "info",
                format!("VDE {}: key slots re-sealed to the current state", o.name),
                serde_json::json!({"id": o.id.to_string()}),
            );
            Ok(ResealResponse { slots })
        })
    }

    /// Rotates the master key and re-encrypts in a job (resumable: an interrupted rotation
    /// continues at the next unlock with `rotate-key` again).
    ///
    /// # Errors
    /// [`OpError`].
    pub fn rotate_key(self: &Arc<Self>, id: &str) -> OpResult<JobRef> {
        let o = self.open_vde(id)?;
        let target = o.id.to_string();
        if let Some(j) = self.jobs.running("rekey", &target) {
            return Err(OpError::Conflict(format!(
                "a key rotation is running ({})",
                j.id()
            )));
        }
        let job = self.jobs.spawn("rekey", &target, "extents", move |ctx| {
            {
                let mut k = o.keys.lock();
                if !k.store.rotation_pending() {
                    let new = MasterKey::generate()
                        .map_err(|e| OpError::Internal(format!("cannot generate a key: {e}")))?;
                    let next = k
                        .store
                        .begin_rotation(k.store.vde_id(), &k.mk, &new, SystemClock.now())
                        .map_err(|e| {
                            OpError::Internal(format!("cannot begin the rotation: {e}"))
                        })?;
                    // The new store (holding the previous key for the data not yet
                    // re-encrypted) is durable in both copies before the VDE switches keys.
                    vdekeys::write_store(o.backing.as_ref(), &next)?;
                    o.with(|v| {
                        let g = v.key_generations().into_iter().max().unwrap_or(0);
                        v.rotate_key(&vdekeys::vde_key(&new, g + 1))?;
                        Ok(())
                    })?;
                    k.store = next;
                    k.mk = new;
                }
            }
            let mut done = 0u64;
            loop {
                if ctx.cancelled() {
                    return Ok((None, "stopped; run rotate-key again to continue".into()));
                }
                let p = o.with(|v| Ok(v.reencrypt_step(256)?))?;
                done += p.rewritten;
                ctx.progress(done, done + p.remaining);
                if p.remaining == 0 {
                    break;
                }
            }
            let mut k = o.keys.lock();
            let next = k
                .store
                .finish_rotation(k.store.vde_id(), &k.mk, SystemClock.now())
                .map_err(|e| OpError::Internal(format!("cannot finish the rotation: {e}")))?;
            vdekeys::write_store(o.backing.as_ref(), &next)?;
            k.store = next;
            Ok((None, format!("master key of VDE {} rotated", o.name)))
        })?;
        Ok(JobRef {
            job_id: job.id().to_owned(),
        })
    }

    /// The key audit log.
    ///
    /// # Errors
    /// [`OpError::Locked`].
    pub fn audit(&self, id: &str) -> OpResult<Vec<AuditEntryInfo>> {
        self.with_keys(id, |_, k| {
            Ok(k.store
                .audit_entries()
                .iter()
                .map(|e| AuditEntryInfo {
                    seq: e.seq,
                    time: e.time.0,
                    action: match (e.slot, e.detail.is_empty()) {
                        (Some(s), true) => format!("{} (slot {s})", e.action),
                        (Some(s), false) => format!("{} (slot {s}): {}", e.action, e.detail),
                        (None, true) => e.action.to_string(),
                        (None, false) => format!("{}: {}", e.action, e.detail),
                    },
                })
                .collect())
        })
    }

    /// The VDE-level policy.
    ///
    /// # Errors
    /// [`OpError::Locked`].
    pub fn vde_policy(&self, id: &str) -> OpResult<PolicyDto> {
        self.open_vde(id)?
            .with(|v| Ok(policy_dto::to_dto(&v.vde_policy())))
    }

    /// Sets the VDE-level policy.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn set_vde_policy(&self, id: &str, p: &PolicyDto) -> OpResult<PolicyDto> {
        let policy = policy_dto::from_dto(p)?;
        self.open_vde(id)?.with(|v| {
            v.set_vde_policy(&policy)?;
            Ok(policy_dto::to_dto(&v.vde_policy()))
        })
    }

    // ------------------------------------------------------------------------- containers

    fn container_dto(&self, rec: &ContainerRecord, c: &dw_vde::ContainerInfo) -> ContainerInfo {
        let (kind, size) = match c.kind {
            ContainerKind::Bucket => ("bucket", None),
            ContainerKind::Volume { size } => ("volume", Some(size)),
        };
        ContainerInfo {
            name: c.name.clone(),
            kind: kind.into(),
            vde: rec.vde.clone(),
            size_bytes: size,
            created: c.created,
            record_size: c.record_size,
            objects: c.objects,
            logical_bytes: c.logical_bytes,
            stored_bytes: c.stored_bytes,
            retained_bytes: c.retained_bytes,
            policy: policy_dto::to_dto(&c.policy),
            owner: rec.owner.clone(),
            nbd_export: (kind == "volume").then(|| c.name.clone()),
        }
    }

    /// Creates a bucket or volume (`owner`, `object_lock` are for S3).
    ///
    /// # Errors
    /// [`OpError`].
    pub fn create_container(
        &self,
        req: &CreateContainerRequest,
        object_lock: bool,
    ) -> OpResult<ContainerInfo> {
        let kind = match (req.kind.as_str(), req.size_bytes) {
            ("bucket", None) => {
                dw_s3::parse::validate_bucket_name(&req.name)
                    .map_err(|e| OpError::Invalid(e.to_string()))?;
                ContainerKind::Bucket
            }
            ("bucket", Some(_)) => {
                return Err(OpError::Invalid("a bucket has no size (it grows)".into()));
            }
            ("volume", Some(size)) => {
                check_plain_name("volume", &req.name)?;
                ContainerKind::Volume { size }
            }
            ("volume", None) => {
                return Err(OpError::Invalid("a volume needs size_bytes".into()));
            }
            (k, _) => {
                return Err(OpError::Invalid(format!(
                    "kind {k:?} is not bucket or volume"
                )));
            }
        };
        let policy = req
            .policy
            .as_ref()
            .map(policy_dto::from_dto)
            .transpose()?
            .unwrap_or_default();
        let v = match &req.vde {
            Some(id) => self.open_vde(id)?,
            None => self.default_vde()?,
        };
        let rec = ContainerRecord {
            name: req.name.clone(),
            vde: v.id.to_string(),
            kind: req.kind.clone(),
            owner: req.owner.clone(),
            object_lock,
            default_retention: None,
            created: now_secs(),
        };
        // Reserve the name across the appliance first; undo if the VDE refuses.
        if !self.db.insert_new(CONTAINERS, &req.name, &rec)? {
            return Err(OpError::Conflict(format!(
                "a bucket or volume named {:?} exists",
                req.name
            )));
        }
        let spec = ContainerSpec {
            kind,
            policy,
            record_size: req.record_size,
        };
        match v.with(|vde| Ok(vde.create_container(&req.name, &spec)?)) {
            Ok(c) => {
                self.events.emit(
                    "container",
                    "info",
                    format!("{} {} created on VDE {}", req.kind, req.name, v.name),
                    serde_json::json!({"name": req.name}),
                );
                Ok(self.container_dto(&rec, &c))
            }
            Err(e) => {
                let _ = self.db.remove(CONTAINERS, &req.name);
                Err(e)
            }
        }
    }

    /// Every container of the unlocked VDEs.
    ///
    /// # Errors
    /// State database errors.
    pub fn containers(&self) -> OpResult<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        for rec in self.container_records()? {
            let Ok(v) = self.open_vde(&rec.vde) else {
                continue;
            };
            if let Ok(c) = v.with(|vde| Ok(vde.container(&rec.name)?)) {
                out.push(self.container_dto(&rec, &c));
            }
        }
        Ok(out)
    }

    /// One container.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn container(&self, name: &str) -> OpResult<ContainerInfo> {
        let (rec, v) = self.container_vde(name)?;
        let c = v.with(|vde| Ok(vde.container(name)?))?;
        Ok(self.container_dto(&rec, &c))
    }

    /// Deletes an empty container.
    ///
    /// # Errors
    /// [`OpError::Conflict`] when not empty.
    pub fn delete_container(&self, name: &str) -> OpResult<()> {
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| Ok(vde.delete_container(name)?))?;
        self.db.remove(CONTAINERS, name)?;
        crate::s3store::forget_bucket_grants(&self.db, name)?;
        self.events.emit(
            "container",
            "info",
            format!("{name} deleted"),
            serde_json::json!({"name": name}),
        );
        Ok(())
    }

    /// Effective policy with sources.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn effective_policy(&self, name: &str) -> OpResult<EffectivePolicy> {
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| {
            Ok(policy_dto::effective_dto(
                &vde.effective_policy(name, None)?,
            ))
        })
    }

    /// Sets a container's policy.
    ///
    /// # Errors
    /// [`OpError`] (refused when it contradicts an enforced VDE setting).
    pub fn set_policy(&self, name: &str, p: &PolicyDto) -> OpResult<EffectivePolicy> {
        let policy = policy_dto::from_dto(p)?;
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| {
            vde.set_container_policy(name, &policy)?;
            Ok(policy_dto::effective_dto(
                &vde.effective_policy(name, None)?,
            ))
        })
    }

    /// Snapshots.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn snapshots(&self, name: &str) -> OpResult<Vec<SnapshotInfo>> {
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| {
            Ok(vde
                .snapshots(name)?
                .into_iter()
                .map(|s| SnapshotInfo {
                    name: s.name,
                    created: s.created,
                    unique_bytes: s.unique_bytes,
                })
                .collect())
        })
    }

    /// Takes a snapshot.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn create_snapshot(&self, name: &str, snap: &str) -> OpResult<SnapshotInfo> {
        check_plain_name("snapshot", snap)?;
        let (_, v) = self.container_vde(name)?;
        let s = v.with(|vde| {
            if vde.snapshots(name)?.iter().any(|s| s.name == snap) {
                return Err(OpError::Conflict(format!(
                    "{name} already has a snapshot named {snap:?}"
                )));
            }
            Ok(vde.create_snapshot(name, snap)?)
        })?;
        self.events.emit(
            "container",
            "info",
            format!("snapshot {name}@{snap} taken"),
            serde_json::json!({"name": name, "snapshot": snap}),
        );
        Ok(SnapshotInfo {
            name: s.name,
            created: s.created,
            unique_bytes: s.unique_bytes,
        })
    }

    /// Deletes a snapshot.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn delete_snapshot(&self, name: &str, snap: &str) -> OpResult<()> {
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| Ok(vde.delete_snapshot(name, snap)?))
    }

    /// Rolls back to the newest snapshot.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn rollback(&self, name: &str, snap: &str) -> OpResult<ContainerInfo> {
        let (_, v) = self.container_vde(name)?;
        v.with(|vde| Ok(vde.rollback(name, snap)?))?;
        self.events.emit(
            "container",
            "warning",
            format!("{name} rolled back to snapshot {snap}"),
            serde_json::json!({"name": name, "snapshot": snap}),
        );
        self.container(name)
    }

    // ------------------------------------------------------------------------- background

    /// Arrays that are assembled, with their names.
    #[must_use]
    pub fn assembled_arrays(&self) -> Vec<(String, Arc<Array>)> {
        self.reg
            .read()
            .arrays
            .values()
            .filter_map(|e| {
                e.array
                    .as_ref()
                    .map(|a| (e.rec.name.clone(), Arc::clone(a)))
            })
            .collect()
    }

    /// Device paths of every array, for health polling.
    #[must_use]
    pub fn array_devices(&self) -> Vec<(String, Vec<String>)> {
        self.reg
            .read()
            .arrays
            .values()
            .map(|e| (e.rec.id.clone(), e.rec.devices.clone()))
            .collect()
    }

    /// Flushes and closes every VDE, then every array. Called once at shutdown.
    pub fn shutdown(&self) {
        let _g = self.ops.lock();
        let vdes: Vec<Arc<OpenVde>> = {
            let mut reg = self.reg.write();
            reg.vdes
                .values_mut()
                .filter_map(|e| {
                    match std::mem::replace(&mut e.state, VdeState::Locked("daemon stopped".into()))
                    {
                        VdeState::Unlocked(o) => Some(o),
                        other => {
                            e.state = other;
                            None
                        }
                    }
                })
                .collect()
        };
        for o in vdes {
            match o.close() {
                Ok(()) => tracing::info!("VDE {} closed cleanly", o.name),
                Err(e) => tracing::error!("VDE {}: {e}", o.name),
            }
        }
        let arrays: Vec<(String, Arc<Array>)> = {
            let mut reg = self.reg.write();
            reg.arrays
                .values_mut()
                .filter_map(|e| e.array.take().map(|a| (e.rec.name.clone(), a)))
                .collect()
        };
        for (name, a) in arrays {
            match Arc::try_unwrap(a) {
                Ok(a) => match a.close() {
                    Ok(()) => tracing::info!("array {name} closed cleanly"),
                    Err(e) => tracing::error!("array {name}: {e}"),
                },
                Err(a) => {
                    // Still referenced (a job thread); flush so nothing acknowledged is lost.
                    if let Err(e) = a.flush() {
                        tracing::error!("array {name}: {e}");
                    }
                    tracing::warn!("array {name} still in use at shutdown; flushed");
                }
            }
        }
    }
}
