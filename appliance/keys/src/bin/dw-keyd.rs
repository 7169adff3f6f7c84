//! `dw-keyd`: the DataWarehouse key-release service.
//!
//! ```text
//! dw-keyd init        --state-dir DIR     create the TLS identity and an enrollment token
//! dw-keyd serve       --state-dir DIR --listen ADDR [--snp-ca milan|genoa|turin]
//! dw-keyd fingerprint --state-dir DIR     print the certificate SHA-256 clients pin
//! dw-keyd list        --state-dir DIR     list enrolled machines (no secrets)
//! dw-keyd revoke      --state-dir DIR --machine HEX   forget a machine (a stolen appliance)
//! ```
//!
//! `serve` holds `DIR/lock` while it runs; `revoke` takes it too, so a revocation never races
//! the service's own saves of the enrollment state (stop the service, revoke, start it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dw_keys::peer::server::{KeyService, ServiceConfig, serve, token_hash};
use dw_keys::peer::state::{ServiceState, write_atomically};
use dw_keys::peer::tls::{
    ServerIdentity, cert_fingerprint, generate_server_identity, server_config,
};
use dw_keys::snp::SnpCa;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "dw-keyd",
    about = "DataWarehouse key-release service (attested, network-bound unlock)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the state directory, a TLS identity and an enrollment token (printed once).
    Init {
        /// State directory (created with mode 0700).
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Serve key-release requests.
    Serve {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:7475.
        #[arg(long)]
        listen: String,
        /// AMD root for SEV-SNP evidence.
        #[arg(long, value_parser = ["milan", "genoa", "turin"])]
        snp_ca: Option<String>,
    },
    /// Print the SHA-256 of the TLS certificate (what appliances pin at enrollment).
    Fingerprint {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// List enrolled machines.
    List {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Forget an enrolled machine: its key share is deleted and it can never unlock through
    /// this service again (a stolen or decommissioned appliance). The service must be stopped.
    Revoke {
        /// State directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Machine id as printed by `list` (32 hex digits).
        #[arg(long)]
        machine: String,
    },
}

const CERT: &str = "tls-cert.der";
const KEY: &str = "tls-key.der";
const TOKEN: &str = "enroll-token.hash";
const STATE: &str = "enrollments.bin";
const LOCK: &str = "lock";

/// Takes the state directory's lock, or says who holds it.
fn lock_state(dir: &Path) -> anyhow::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
        .with_context(|| format!("opening {}", dir.join(LOCK).display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by a running dw-keyd: stop it first",
            dir.display()
        ),
        Err(fs::TryLockError::Error(e)) => Err(e).context("locking the state directory"),
    }
}

fn parse_machine(s: &str) -> anyhow::Result<[u8; 16]> {
    let s = s.trim();
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("machine id {s:?} is not 32 hex digits");
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .with_context(|| format!("machine id {s:?} is not hex"))?;
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn load_identity(dir: &Path) -> anyhow::Result<ServerIdentity> {
    let cert_der = fs::read(dir.join(CERT))
        .with_context(|| format!("reading {}", dir.join(CERT).display()))?;
    let key_der = Zeroizing::new(
        fs::read(dir.join(KEY)).with_context(|| format!("reading {}", dir.join(KEY).display()))?,
    );
    Ok(ServerIdentity { cert_der, key_der })
}

fn init(dir: &Path) -> anyhow::Result<()> {
    if dir.join(CERT).exists() {
        bail!(
            "{} is already initialised; remove it first to start over",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let id = generate_server_identity()?;
    let mut token = Zeroizing::new([0u8; 32]);
    getrandom::fill(token.as_mut()).map_err(|e| anyhow::anyhow!("random number generator: {e}"))?;
    write_atomically(&dir.join(KEY), &id.key_der)?;
    write_atomically(&dir.join(CERT), &id.cert_der)?;
    write_atomically(&dir.join(TOKEN), &token_hash(&token))?;
    ServiceState::default().save(&dir.join(STATE))?;
    println!(
        "certificate sha256: {}",
        hex(&cert_fingerprint(&id.cert_der))
    );
    println!(
        "enrollment token (shown once, give it to the appliance that enrolls): {}",
        hex(token.as_ref())
    );
    Ok(())
}

fn run(dir: &Path, listen: &str, snp_ca: Option<&str>) -> anyhow::Result<()> {
    let _lock = lock_state(dir)?;
    let id = load_identity(dir)?;
    let hash: [u8; 32] = fs::read(dir.join(TOKEN))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is damaged", dir.join(TOKEN).display()))?;
    let mut config = ServiceConfig::new(dir.join(STATE), hash);
    config.snp_ca = match snp_ca {
        Some("milan") => Some(SnpCa::Milan),
        Some("genoa") => Some(SnpCa::Genoa),
        Some("turin") => Some(SnpCa::Turin),
        _ => None,
    };
    let service = Arc::new(Mutex::new(KeyService::open(config)?));
    let tls = server_config(&id)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        eprintln!("dw-keyd: serving on {}", listener.local_addr()?);
        serve(listener, service, tls, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Init { state_dir } => init(&state_dir),
        Command::Serve {
            state_dir,
            listen,
            snp_ca,
        } => run(&state_dir, &listen, snp_ca.as_deref()),
        Command::Fingerprint { state_dir } => {
            let id = load_identity(&state_dir)?;
            println!("{}", hex(&cert_fingerprint(&id.cert_der)));
            Ok(())
        }
        Command::Revoke { state_dir, machine } => {
            let machine = parse_machine(&machine)?;
            let _lock = lock_state(&state_dir)?;
            let hash: [u8; 32] = fs::read(state_dir.join(TOKEN))?
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} is damaged", state_dir.join(TOKEN).display()))?;
            let mut service = KeyService::open(ServiceConfig::new(state_dir.join(STATE), hash))?;
            if service.revoke(&machine)? {
                println!("revoked {}", hex(&machine));
                Ok(())
            } else {
                bail!("no machine {} is enrolled", hex(&machine))
            }
        }
        Command::List { state_dir } => {
            let state = ServiceState::load(&state_dir.join(STATE))?;
            for m in state.machines() {
                println!(
                    "{}  \"{}\"  PCRs {}  SEV-SNP {}  enrolled {}  updated {}",
                    hex(&m.machine_id),
                    m.label,
                    m.pcrs.selection(),
                    if m.snp_measurement.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    m.enrolled_at.0,
                    m.updated_at.0
                );
            }
            Ok(())
        }
    }
}
