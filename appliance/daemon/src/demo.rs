//! Demo mode (`dwd --demo`): a whole appliance on file-backed drives in a local directory.
//!
//! First start: four sparse drive files, an array chosen by the planner, a VDE with a
//! generated recovery passphrase (and a TPM2 slot when a TPM or swtpm answers), an S3 key, a
//! bucket and a volume, an admin account. Later starts reopen the same data: the demo keeps its
//! recovery passphrase in `demo-passphrase` (mode 0600) and unlocks with it — exactly what a
//! real appliance must never do, which is why only demo mode configures it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use dw_api::types::{
    CreateArrayRequest, CreateContainerRequest, CreateS3KeyRequest, CreateVdeRequest, PolicyDto,
    TpmSlotRequest, VdeBacking,
};
use serde::{Deserialize, Serialize};

use crate::appliance::Appliance;
use crate::config::Config;
use crate::server::Bound;
use crate::state::{META, S3_KEYS, S3KeyRecord};

/// File holding the demo's recovery passphrase (relative to the state directory).
pub const PASSPHRASE_FILE: &str = "demo-passphrase";
/// Name of the demo VDE, bucket and volume.
pub const VDE: &str = "demo";
/// The demo bucket.
pub const BUCKET: &str = "demo";
/// The demo volume (NBD export).
pub const VOLUME: &str = "demo-vol";

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// File-backed drives.
    pub drives: usize,
    /// Size of each, bytes.
    pub drive_bytes: u64,
    /// Size of the demo volume, bytes.
    pub volume_bytes: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            drives: 4,
            drive_bytes: 1 << 30,
            volume_bytes: 512 << 20,
        }
    }
}

/// Secrets the demo must show at every start (kept 0600 in the state directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DemoSecrets {
    admin_user: String,
    admin_password: String,
    access_key: String,
}

/// What `demo.json` holds (and the banner prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSummary {
    /// State directory.
    pub state_dir: String,
    /// S3.
    pub s3: DemoS3,
    /// NBD.
    pub nbd: Option<DemoNbd>,
    /// Management API.
    pub api: DemoApi,
    /// Prometheus metrics URL.
    pub metrics_url: Option<String>,
    /// Array chosen by the planner.
    pub array: String,
    /// Recovery passphrase of the demo VDE.
    pub recovery_passphrase: String,
    /// Whether the VDE has a TPM2 slot.
    pub tpm_slot: bool,
}

/// S3 part of the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoS3 {
    /// Endpoint URL.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Demo bucket.
    pub bucket: String,
}

/// NBD part of the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoNbd {
    /// `nbd://host:port/export`.
    pub uri: String,
    /// Export name.
    pub export: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// API part of the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoApi {
    /// Unix socket.
    pub socket: String,
    /// HTTPS URL.
    pub https_url: Option<String>,
    /// Certificate fingerprint.
    pub tls_fingerprint_sha256: Option<String>,
    /// Admin account.
    pub admin_user: String,
    /// Its password.
    pub admin_password: String,
}

/// The demo's configuration: loopback listeners, passphrase file, swtpm if configured.
#[must_use]
pub fn config(mut cfg: Config) -> Config {
    for addr in [
        &mut cfg.api.https_listen,
        &mut cfg.s3.listen,
        &mut cfg.nbd.listen,
        &mut cfg.metrics.listen,
    ] {
        if let Some(rest) = addr.strip_prefix("0.0.0.0:") {
            *addr = format!("127.0.0.1:{rest}");
        }
    }
    cfg.unlock.passphrase_file = Some(PASSPHRASE_FILE.into());
    if let Ok(t) = std::env::var("DW_TPM_TCTI") {
        cfg.unlock.tcti = t;
    }
    // File-backed drives have no SMART; scrubs weekly so the demo shows one in practice.
    cfg.schedule.scrub_interval_days = 7;
    cfg
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(err)`
fn err(e: crate::error::OpError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Creates whatever the demo does not have yet. Idempotent: a restart changes nothing.
///
/// # Errors
/// Any step failing, with its reason.
pub fn prepare(app: &Arc<Appliance>, opts: &DemoOptions) -> anyhow::Result<()> {
    let dir = app.cfg.state_dir.clone();
    let secrets_path = dir.join("demo-secrets.json");
    let mut secrets: Option<DemoSecrets> = std::fs::read(&secrets_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());

    if !app.auth.has_users().map_err(|e| anyhow::anyhow!("{e}"))? {
        let password = crate::util::random_string(
            20,
            b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        app.auth
            .create_user("admin", &password)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        secrets = Some(DemoSecrets {
            admin_user: "admin".into(),
            admin_password: password,
            access_key: secrets.map(|s| s.access_key).unwrap_or_default(),
        });
    }

    if app.arrays().is_empty() {
        let mut paths = Vec::new();
        for i in 0..opts.drives {
            let p = dir.join("drives").join(format!("drive{i}.img"));
            crate::devices::create_file(&p, opts.drive_bytes).map_err(err)?;
            paths.push(p.display().to_string());
        }
        let plan = app.plan(&paths).map_err(err)?;
        let best = plan
            .proposals
            .iter()
            .find(|p| p.recommended)
            .or_else(|| plan.proposals.first())
            .context("the planner proposed nothing for the demo drives")?;
        tracing::info!("demo: {}", best.summary);
        app.create_array(&CreateArrayRequest {
            name: "demo".into(),
            level: best.level.clone(),
            devices: best.members.clone(),
            spares: best.spares.clone(),
            chunk_bytes: None,
            copies: (best.copies > 0).then_some(best.copies),
            force: false,
        })
        .map_err(err)?;
    }

    if app.vdes().is_empty() {
        let array = app
            .arrays()
            .first()
            .map(|a| a.id.clone())
            .context("no array")?;
        let tpm = dw_keys::tpm::Tpm::open(&app.cfg.unlock.tcti).is_ok();
        let created = app
            .create_vde(&CreateVdeRequest {
                name: VDE.into(),
                backing: VdeBacking::Array(array),
                profile: Some("standard".into()),
                admin_contact: "demo appliance (dwd --demo)".into(),
                passphrase: None,
                tpm: tpm.then(TpmSlotRequest::default),
            })
            .map_err(err)?;
        let pass = created
            .recovery_passphrase
            .context("no recovery passphrase was generated")?;
        write_private(&dir.join(PASSPHRASE_FILE), pass.as_bytes())?;
    }

    let keys: Vec<(String, S3KeyRecord)> =
        app.db.list(S3_KEYS).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut s =
        secrets.context("demo secrets are missing (delete the demo directory to start over)")?;
    if s.access_key.is_empty() || !keys.iter().any(|(k, _)| *k == s.access_key) {
        let k = crate::s3keys::create(
            &app.db,
            &CreateS3KeyRequest {
                name: "demo".into(),
                admin: false,
                can_create_buckets: true,
            },
        )
        .map_err(err)?;
        s.access_key = k.info.access_key;
    }
    write_private(&secrets_path, &serde_json::to_vec_pretty(&s)?)?;

    let have: Vec<String> = app
        .container_records()
        .map_err(err)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    if !have.iter().any(|n| n == BUCKET) {
        app.create_container(
            &CreateContainerRequest {
                name: BUCKET.into(),
                kind: "bucket".into(),
                vde: Some(VDE.into()),
                size_bytes: None,
                policy: None,
                record_size: None,
                owner: Some(s.access_key.clone()),
            },
            false,
        )
        .map_err(err)?;
    }
    if !have.iter().any(|n| n == VOLUME) {
        app.create_container(
            &CreateContainerRequest {
                name: VOLUME.into(),
                kind: "volume".into(),
                vde: Some(VDE.into()),
                size_bytes: Some(opts.volume_bytes),
                policy: Some(PolicyDto {
                    profile: Some("balanced".into()),
                    ..PolicyDto::default()
                }),
                record_size: None,
                owner: None,
            },
            false,
        )
        .map_err(err)?;
    }
    let _ = app.db.put(META, "demo", &true);
    Ok(())
}

/// Writes `demo.json` and prints the banner.
///
/// # Errors
/// The files cannot be read or written.
pub fn report(app: &Arc<Appliance>, bound: &Bound) -> anyhow::Result<DemoSummary> {
    let dir = &app.cfg.state_dir;
    let s: DemoSecrets = serde_json::from_slice(
        &std::fs::read(dir.join("demo-secrets.json")).context("demo-secrets.json")?,
    )?;
    let key: S3KeyRecord = app
        .db
        .get(S3_KEYS, &s.access_key)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("the demo S3 key is gone")?;
    let pass = std::fs::read_to_string(dir.join(PASSPHRASE_FILE)).unwrap_or_default();
    let info = app.info();
    let vol = app.container(VOLUME).ok();
    let vde = app.vde_info(VDE).ok();
    let tpm_slot = app
        .slots(VDE)
        .map(|v| v.iter().any(|s| s.kind == "tpm2"))
        .unwrap_or(false);
    let array = app
        .arrays()
        .first()
        .map(|a| {
            format!(
                "{} {} ({}, {} members)",
                a.name,
                a.level,
                a.state,
                a.members.len()
            )
        })
        .unwrap_or_default();
    let summary = DemoSummary {
        state_dir: dir.display().to_string(),
        s3: DemoS3 {
            endpoint: info.s3_url.clone(),
            region: info.s3_region.clone(),
            access_key: key.access_key,
            secret_key: key.secret,
            bucket: BUCKET.into(),
        },
        nbd: info.nbd_url.as_ref().map(|u| DemoNbd {
            uri: format!("{u}/{VOLUME}"),
            export: VOLUME.into(),
            size_bytes: vol.as_ref().and_then(|v| v.size_bytes).unwrap_or(0),
        }),
        api: DemoApi {
            socket: bound.socket.display().to_string(),
            https_url: info.https_url.clone(),
            tls_fingerprint_sha256: info.tls_fingerprint_sha256.clone(),
            admin_user: s.admin_user,
            admin_password: s.admin_password,
        },
        metrics_url: info.metrics_url.clone(),
        array,
        recovery_passphrase: pass.trim().to_owned(),
        tpm_slot,
    };
    write_private(
        &dir.join("demo.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    let vde_state = vde.map(|v| v.state).unwrap_or_default();
    let mut out = String::new();
    out.push_str("\n  DataWarehouse demo appliance is running\n\n");
    out.push_str(&format!("  State directory  {}\n", summary.state_dir));
    out.push_str(&format!("  Array            {}\n", summary.array));
    out.push_str(&format!(
        "  VDE              {VDE} ({vde_state}; recovery passphrase {}{})\n",
        summary.recovery_passphrase,
        if tpm_slot { "; TPM2 slot" } else { "" }
    ));
    if let Some(e) = &summary.s3.endpoint {
        out.push_str(&format!(
            "  S3 endpoint      {e}  (region {})\n",
            summary.s3.region
        ));
        out.push_str(&format!("  S3 access key    {}\n", summary.s3.access_key));
        out.push_str(&format!("  S3 secret key    {}\n", summary.s3.secret_key));
        out.push_str(&format!("  S3 bucket        {}\n", summary.s3.bucket));
    }
    if let Some(n) = &summary.nbd {
        out.push_str(&format!(
            "  NBD export       {}  ({} bytes)\n",
            n.uri, n.size_bytes
        ));
    }
    if let Some(u) = &summary.api.https_url {
        out.push_str(&format!("  API (HTTPS)      {u}\n"));
    }
    if let Some(f) = &summary.api.tls_fingerprint_sha256 {
        out.push_str(&format!("  TLS fingerprint  {f}\n"));
    }
    out.push_str(&format!("  API (socket)     {}\n", summary.api.socket));
    out.push_str(&format!(
        "  Admin login      {} / {}\n",
        summary.api.admin_user, summary.api.admin_password
    ));
    if let Some(m) = &summary.metrics_url {
        out.push_str(&format!("  Metrics          {m}\n"));
    }
    out.push_str(&format!(
        "\n  The same as JSON: {}/demo.json\n  CLI: dw --socket {} health\n  Stop with Ctrl-C; starting again reopens the same data.\n\n",
        summary.state_dir, summary.api.socket
    ));
    // The banner is the demo's user interface: stdout, not the log.
    print!("{out}");
    Ok(summary)
}
