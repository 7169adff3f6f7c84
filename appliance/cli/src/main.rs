//! `dw`: the DataWarehouse command-line client of the management API. See docs/CLI.md.
//!
//! Every command is one or a few calls of the API (`dw_api::ENDPOINTS`); tables by default,
//! the API's own JSON with `--json`. Exit codes are part of the interface (see [`EXIT_CODES`]).

mod cmd;
mod input;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dw_api::ClientError;

use crate::input::{PolicySet, parse_policy_key, parse_policy_set, parse_rate, parse_size};

/// Default socket of an installed appliance.
pub const DEFAULT_SOCKET: &str = "/var/lib/datawarehouse/dwd.sock";

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  other error (bad request, server error, a job that failed)
  2  usage error
  3  unauthorized (no or bad token: HTTP 401)
  4  not found (404)
  5  conflict: exists already, not empty, busy (409)
  6  locked: unlock the VDE first (423)
  7  cannot reach dwd, or TLS failed (wrong fingerprint, untrusted certificate)
  8  forbidden: wrong passphrase, refused by policy or retention (403)
  9  unavailable, not available on this machine, or no space (503, 501, 507)

Connection: --socket PATH (default $DW_SOCKET, else /var/lib/datawarehouse/dwd.sock), or
--url https://HOST:PORT (or $DW_URL) with --token ($DW_TOKEN) and --fingerprint
($DW_FINGERPRINT) or --ca FILE ($DW_CA). Secrets are read from stdin, never from arguments.";

/// The DataWarehouse command-line client: arrays, VDEs, buckets and volumes, keys, jobs.
#[derive(Debug, Parser)]
#[command(name = "dw", version, after_long_help = EXIT_CODES, after_help = "Exit codes and connection settings: dw --help")]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Where the daemon is.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Unix socket of dwd [env: DW_SOCKET; default /var/lib/datawarehouse/dwd.sock].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "url")]
    pub socket: Option<PathBuf>,
    /// HTTPS URL of dwd, e.g. https://10.0.0.5:8443 [env: DW_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token for HTTPS (from `dw login` or `dw token create`) [env: DW_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// SHA-256 fingerprint of dwd's certificate (hex, colons optional) [env: DW_FINGERPRINT].
    #[arg(long, global = true, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// CA certificate (PEM) that dwd's certificate chains to, instead of a fingerprint
    /// [env: DW_CA].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "fingerprint"
    )]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Overall health: arrays, VDEs, problems.
    Health,
    /// Where the appliance serves what (API, S3, NBD, metrics).
    Info,
    /// Hardware inventory: every drive and whether it may be used.
    Devices,
    /// Prometheus metrics (text, also with --json).
    Metrics,
    /// Follow the event stream (job progress, alerts, state changes); --json: one JSON per line.
    Events {
        /// Stop after this many events.
        #[arg(long, short = 'n', value_name = "N")]
        count: Option<u64>,
    },
    /// The OpenAPI document of the management API (always JSON).
    Openapi,
    /// Log in over HTTPS and print a session token: export DW_TOKEN=$(dw login ...).
    Login {
        /// Account name.
        #[arg(long, short = 'u', value_name = "NAME")]
        user: String,
        /// Read the password from stdin without prompting (the default when stdin is not a
        /// terminal).
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the session of the token in use.
    Logout,
    /// Administrator accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens (for scripts and automation).
    #[command(subcommand)]
    Token(TokenCmd),
    /// S3 access keys and their bucket grants.
    #[command(subcommand, name = "s3-key")]
    S3Key(S3KeyCmd),
    /// Arrays: drives combined with redundancy.
    #[command(subcommand)]
    Array(ArrayCmd),
    /// VDEs: encrypted data stores on an array or a file.
    #[command(subcommand)]
    Vde(VdeCmd),
    /// Buckets (S3) and volumes (NBD).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Snapshots of buckets and volumes.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Long-running operations (scrubs, key rotations).
    #[command(subcommand)]
    Job(JobCmd),
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List accounts.
    List,
    /// Create an account; the password (at least 12 characters) is read from stdin.
    Add { name: String },
    /// Delete an account (never the last).
    Delete { name: String },
    /// Change a password (read from stdin); ends the account's sessions.
    Passwd { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List API tokens.
    List,
    /// Create an API token (printed once).
    Create {
        /// Label.
        name: String,
        /// Days until it expires (default: never).
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Revoke an API token.
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Access {
    /// Read objects.
    Read,
    /// Read and write objects.
    Write,
    /// Write, and manage the bucket's policy and snapshots.
    Manage,
    /// Revoke the grant.
    #[value(name = "none")]
    Revoke,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Manage => "manage",
            Access::Revoke => "none",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum S3KeyCmd {
    /// List S3 access keys and their grants.
    List,
    /// Create an S3 access key (the secret is printed once).
    Create {
        /// Label.
        name: String,
        /// Full access to every bucket.
        #[arg(long)]
        admin: bool,
        /// The key may not create buckets.
        #[arg(long)]
        no_create_buckets: bool,
    },
    /// Delete an S3 access key.
    Delete {
        #[arg(value_name = "ACCESS_KEY")]
        access_key: String,
    },
    /// Give a key access to a bucket (none: revoke).
    Grant {
        #[arg(value_name = "ACCESS_KEY")]
        access_key: String,
        bucket: String,
        #[arg(value_enum)]
        access: Access,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArrayCmd {
    /// Propose ways to combine drives (none given: every available drive).
    Plan {
        #[arg(value_name = "DEV")]
        devices: Vec<String>,
    },
    /// List arrays.
    List,
    /// One array with its members and rebuild progress.
    Show {
        /// Array name or UUID.
        id: String,
    },
    /// Create an array. Everything on the devices is lost.
    Create {
        name: String,
        /// jbod, raid0, raid1, raid10, raid5, raid6, raidz1, raidz2 or raidz3.
        #[arg(long, short = 'l')]
        level: String,
        /// Member devices in role order.
        #[arg(value_name = "DEV", required = true)]
        devices: Vec<String>,
        /// Hot spare (repeatable).
        #[arg(long = "spare", value_name = "DEV")]
        spares: Vec<String>,
        /// Chunk size (power of two, 4K-16M; default 64K).
        #[arg(long, value_name = "SIZE", value_parser = input::parse_size32)]
        chunk: Option<u32>,
        /// RAID-10 copies (default 2).
        #[arg(long, value_name = "N")]
        copies: Option<u32>,
        /// Use devices even when discovery finds data on them.
        #[arg(long)]
        force: bool,
    },
    /// Add a hot spare.
    AddSpare {
        id: String,
        #[arg(value_name = "DEV")]
        device: String,
        /// Use it even when discovery finds data on it.
        #[arg(long)]
        force: bool,
    },
    /// Replace the member of ROLE by DEV, or by a hot spare when no DEV is given.
    Replace {
        id: String,
        role: u32,
        #[arg(value_name = "DEV")]
        device: Option<String>,
        /// Use DEV even when discovery finds data on it.
        #[arg(long)]
        force: bool,
    },
    /// Take the member of ROLE out as failed (refused when data would become unreadable).
    Fail { id: String, role: u32 },
    /// Start a scrub: verify every stripe and repair what is provably wrong.
    Scrub {
        id: String,
        /// Only report, do not repair.
        #[arg(long)]
        no_repair: bool,
        /// Wait for the scrub to finish (progress on stderr).
        #[arg(long)]
        wait: bool,
    },
    /// Limit rebuild bandwidth, e.g. 100M (per second; 0: unlimited).
    Throttle {
        id: String,
        #[arg(value_parser = parse_rate)]
        rate: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlotKind {
    /// A passphrase (yours from stdin with --passphrase-stdin, else generated).
    Passphrase,
    /// Sealed to this machine's TPM2 and measured boot state.
    Tpm2,
    /// Half held by a key-release service (`dw-keyd`) that checks a TPM2 quote first.
    Peer,
    /// Derived by the AMD SEV-SNP firmware, bound to the launch measurement.
    SevSnp,
}

const PROFILES: [&str; 5] = ["speed", "balanced", "standard", "strict", "paranoid"];

#[derive(Debug, Subcommand)]
pub enum VdeCmd {
    /// List VDEs.
    List,
    /// One VDE with capacity.
    Show {
        /// VDE name or UUID.
        id: String,
    },
    /// Create a VDE on an array or in a file. The recovery passphrase is generated and printed
    /// once, unless you give yours with --passphrase-stdin.
    Create {
        name: String,
        /// Array (name or UUID) to hold it.
        #[arg(
            long,
            value_name = "ID",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        array: Option<String>,
        /// File to hold it (created when missing).
        #[arg(long, value_name = "PATH", requires = "size")]
        file: Option<PathBuf>,
        /// Size of the file.
        #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "file")]
        size: Option<u64>,
        /// Policy profile (default standard).
        #[arg(long, value_parser = PROFILES)]
        profile: Option<String>,
        /// Administrator contact, readable without keys in the recovery block.
        #[arg(long, value_name = "TEXT")]
        contact: Option<String>,
        /// Read your recovery passphrase from stdin (first line).
        #[arg(long)]
        passphrase_stdin: bool,
        /// Add a TPM2 slot (unlocks automatically at boot while the measured state holds).
        #[arg(long)]
        tpm: bool,
        /// PCRs the TPM2 slot is bound to (default 7).
        #[arg(long, value_delimiter = ',', value_name = "N,N")]
        pcrs: Vec<u8>,
        /// The TPM2 slot also needs a PIN, read from stdin (after the passphrase).
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Unlock with the automatic slots, or with a passphrase from stdin.
    Unlock {
        id: String,
        /// Read the recovery passphrase from stdin.
        #[arg(long)]
        passphrase_stdin: bool,
        /// Read a TPM2 PIN from stdin (after the passphrase).
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Flush, close and forget the key.
    Lock { id: String },
    /// List key slots.
    Slots { id: String },
    /// Add a key slot.
    AddSlot {
        id: String,
        #[arg(value_enum)]
        kind: SlotKind,
        /// Label.
        #[arg(long)]
        label: Option<String>,
        /// Passphrase slots: read the passphrase from stdin (otherwise one is generated).
        #[arg(long)]
        passphrase_stdin: bool,
        /// TPM2 and peer slots: PCRs to bind (default 7).
        #[arg(long, value_delimiter = ',', value_name = "N,N")]
        pcrs: Vec<u8>,
        /// TPM2 slots: require a PIN, read from stdin.
        #[arg(long)]
        pin_stdin: bool,
        /// Peer slots: the key-release service, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// Peer slots: its certificate SHA-256 (`dw-keyd fingerprint`).
        #[arg(long, value_name = "HEX")]
        cert_sha256: Option<String>,
        /// Peer slots: read its enrollment token (`dw-keyd init`) from stdin.
        #[arg(long)]
        token_stdin: bool,
    },
    /// Remove a key slot (never the last recovery passphrase).
    RemoveSlot { id: String, slot: u32 },
    /// Trust the current measured boot state: re-seal every slot to it.
    Reseal {
        id: String,
        /// Read the TPM2 PIN from stdin.
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Rotate the master key and re-encrypt (a job).
    RotateKey {
        id: String,
        /// Wait for the job to finish (progress on stderr).
        #[arg(long)]
        wait: bool,
    },
    /// The key audit log.
    Audit { id: String },
    /// The VDE-level policy.
    Policy { id: String },
    /// Change the VDE-level policy (other settings are kept).
    SetPolicy {
        id: String,
        #[command(flatten)]
        edit: PolicyEdit,
    },
}

/// Policy changes.
#[derive(Debug, Args)]
pub struct PolicyEdit {
    /// KEY=VALUE, or KEY=VALUE! to enforce it on the levels below. Keys: profile, compression
    /// (none, zstd:1-19), encryption (none, aes-256-gcm), verify_checksums, versioning
    /// (true/false), retention (<days>d:governance|compliance), quota_bytes (10G).
    #[arg(long = "set", value_name = "KEY=VALUE[!]", value_parser = parse_policy_set)]
    pub set: Vec<PolicySet>,
    /// Remove a setting (it is inherited again).
    #[arg(long = "unset", value_name = "KEY", value_parser = parse_policy_key)]
    pub unset: Vec<&'static str>,
    /// Start from an empty policy instead of the current one.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCmd {
    /// List buckets and volumes of every unlocked VDE.
    List,
    /// One bucket or volume.
    Show { name: String },
    /// Create a bucket or a volume.
    Create {
        name: String,
        /// bucket (S3) or volume (NBD).
        #[arg(long, value_parser = ["bucket", "volume"])]
        kind: String,
        /// Volume size.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: Option<u64>,
        /// VDE (name or UUID); default: the configured default VDE, else the first unlocked one.
        #[arg(long, value_name = "ID")]
        vde: Option<String>,
        /// Policy profile.
        #[arg(long, value_parser = PROFILES)]
        profile: Option<String>,
        /// Policy setting KEY=VALUE[!] (see set-policy).
        #[arg(long = "set", value_name = "KEY=VALUE[!]", value_parser = parse_policy_set)]
        set: Vec<PolicySet>,
        /// Record size (power of two, 4K-1M).
        #[arg(long, value_name = "SIZE", value_parser = input::parse_size32)]
        record_size: Option<u32>,
        /// Buckets: S3 access key that owns it.
        #[arg(long, value_name = "ACCESS_KEY")]
        owner: Option<String>,
    },
    /// Delete an empty bucket or volume.
    Delete { name: String },
    /// The effective policy and where each value comes from.
    Policy { name: String },
    /// Change the container's own policy (other settings are kept).
    SetPolicy {
        name: String,
        #[command(flatten)]
        edit: PolicyEdit,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// List snapshots of a bucket or volume.
    List { container: String },
    /// Take a snapshot.
    Create { container: String, name: String },
    /// Delete a snapshot.
    Delete { container: String, name: String },
    /// Roll the container back to its newest snapshot NAME (newer data is lost).
    Rollback { container: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Jobs of this daemon run.
    List,
    /// One job.
    Show { id: String },
    /// Wait until a job finishes (progress on stderr); exits 1 if it failed or was cancelled.
    Wait { id: String },
    /// Ask a job to stop.
    Cancel { id: String },
}

/// Why a command failed: the exit code and one line for stderr.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub message: String,
}

impl Fail {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(1, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Connect { .. } | ClientError::Tls { .. } | ClientError::Http(_) => 7,
            ClientError::Invalid(_) => 2,
            ClientError::Api { status, .. } => match status {
                401 => 3,
                403 => 8,
                404 => 4,
                409 => 5,
                423 => 6,
                501 | 503 | 507 => 9,
                _ => 1,
            },
            _ => 1,
        };
        Fail::new(code, e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dw: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let one_line = f.message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("dw: {one_line}");
            ExitCode::from(f.code)
        }
    }
}
