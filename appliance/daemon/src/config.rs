//! `dwd`'s configuration: a TOML file (every key optional, defaults below and in
//! docs/DAEMON.md) plus command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("configuration {path} is invalid: {detail}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message (line and column included).
        detail: String,
    },
    /// A value is out of range.
    #[error("configuration value {key} is invalid: {detail}")]
    Value {
        /// Key.
        key: &'static str,
        /// Why.
        detail: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where `dwd` keeps its state database, TLS certificate, socket and drive files.
    pub state_dir: PathBuf,
    /// Management API.
    pub api: ApiConfig,
    /// S3 endpoint.
    pub s3: S3Section,
    /// NBD server.
    pub nbd: NbdSection,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsSection,
    /// Unlocking VDEs at start.
    pub unlock: UnlockSection,
    /// Arrays.
    pub arrays: ArraysSection,
    /// Scheduled background work.
    pub schedule: ScheduleSection,
    /// Logging.
    pub log: LogSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/datawarehouse"),
            api: ApiConfig::default(),
            s3: S3Section::default(),
            nbd: NbdSection::default(),
            metrics: MetricsSection::default(),
            unlock: UnlockSection::default(),
            arrays: ArraysSection::default(),
            schedule: ScheduleSection::default(),
            log: LogSection::default(),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket (owner-only); relative paths are under `state_dir`.
    pub socket: PathBuf,
    /// HTTPS listen address; empty disables HTTPS.
    pub https_listen: String,
    /// Lifetime of a login session, seconds.
    pub session_ttl_secs: u64,
    /// Failed logins allowed per client address per minute before `429`.
    pub login_attempts_per_minute: u32,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Requests served at once (beyond: `503`).
    pub max_concurrent_requests: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("dwd.sock"),
            https_listen: "0.0.0.0:8443".into(),
            session_ttl_secs: 12 * 3600,
            login_attempts_per_minute: 10,
            max_body_bytes: 1 << 20,
            max_concurrent_requests: 64,
        }
    }
}

/// `[s3]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// Listen address; empty disables S3.
    pub listen: String,
    /// Region reported to clients.
    pub region: String,
    /// VDE (name or UUID) that holds buckets created through S3; empty: the first unlocked.
    pub default_vde: String,
    /// Requests served at once (beyond: `503 SlowDown`).
    pub max_concurrent_requests: usize,
    /// Open connections at once.
    pub max_connections: usize,
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9000".into(),
            region: "us-east-1".into(),
            default_vde: String::new(),
            max_concurrent_requests: 256,
            max_connections: 1024,
        }
    }
}

/// `[nbd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NbdSection {
    /// Listen address; empty disables NBD.
    pub listen: String,
    /// Open connections at once.
    pub max_connections: usize,
}

impl Default for NbdSection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:10809".into(),
            max_connections: 64,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Plain-HTTP listen address for Prometheus (`GET /metrics`, no authentication: bind it to
    /// a management network); empty disables it. The same metrics are on the API with a token.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9477".into(),
        }
    }
}

/// `[unlock]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnlockSection {
    /// Slot kinds to try at start, in order (`tpm2`, `sev_snp`, `peer`). A recovery
    /// passphrase is then asked for on the console and the API.
    pub order: Vec<String>,
    /// TPM TCTI.
    pub tcti: String,
    /// File holding a recovery passphrase to try at start (demo mode writes one; never use on
    /// a real appliance).
    pub passphrase_file: Option<PathBuf>,
}

impl Default for UnlockSection {
    fn default() -> Self {
        Self {
            order: vec!["tpm2".into(), "sev_snp".into(), "peer".into()],
            tcti: "device:/dev/tpmrm0".into(),
            passphrase_file: None,
        }
    }
}

/// `[arrays]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArraysSection {
    /// Rebuild onto a hot spare as soon as a member fails.
    pub auto_rebuild: bool,
    /// Rebuild bandwidth limit, bytes per second (0: unlimited).
    pub rebuild_bytes_per_sec: u64,
}

impl Default for ArraysSection {
    fn default() -> Self {
        Self {
            auto_rebuild: true,
            rebuild_bytes_per_sec: 0,
        }
    }
}

/// `[schedule]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// Days between scrubs of each array (0: never).
    pub scrub_interval_days: u32,
    /// Seconds between health (SMART) polls of array members (0: never).
    pub health_poll_secs: u64,
    /// Start a rebuild onto a hot spare when a member's health turns `failing`.
    pub predictive_replace: bool,
    /// Snapshots whose name starts with `auto-` older than this many days are deleted (0: keep).
    pub snapshot_retention_days: u32,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            scrub_interval_days: 30,
            health_poll_secs: 300,
            predictive_replace: true,
            snapshot_retention_days: 0,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `tracing` filter (`info`, `dw_daemon=debug,info`, ...); `RUST_LOG` wins when set.
    pub level: String,
    /// `auto` (journald when its socket exists, else stderr), `journald` or `stderr`.
    pub target: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            target: "auto".into(),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and addresses.
    ///
    /// # Errors
    /// [`ConfigError::Value`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, addr) in [
            ("api.https_listen", &self.api.https_listen),
            ("s3.listen", &self.s3.listen),
            ("nbd.listen", &self.nbd.listen),
            ("metrics.listen", &self.metrics.listen),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::Value {
                    key,
                    detail: format!("{addr:?} is not an address like 0.0.0.0:9000 or [::]:9000"),
                });
            }
        }
        let nonzero = [
            ("api.session_ttl_secs", self.api.session_ttl_secs),
            ("api.max_body_bytes", self.api.max_body_bytes as u64),
            (
                "api.max_concurrent_requests",
                self.api.max_concurrent_requests as u64,
            ),
            (
                "s3.max_concurrent_requests",
                self.s3.max_concurrent_requests as u64,
            ),
            ("s3.max_connections", self.s3.max_connections as u64),
            ("nbd.max_connections", self.nbd.max_connections as u64),
        ];
        for (key, v) in nonzero {
            if v == 0 {
                return Err(ConfigError::Value {
                    key,
                    detail: "must be greater than 0".into(),
                });
            }
        }
        for k in &self.unlock.order {
            if !matches!(k.as_str(), "tpm2" | "sev_snp" | "peer") {
                return Err(ConfigError::Value {
                    key: "unlock.order",
                    detail: format!("unknown slot kind {k:?} (tpm2, sev_snp, peer)"),
                });
            }
        }
        if !matches!(self.log.target.as_str(), "auto" | "journald" | "stderr") {
            return Err(ConfigError::Value {
                key: "log.target",
                detail: format!("{:?} is not auto, journald or stderr", self.log.target),
            });
        }
        Ok(())
    }

    /// A path under the state directory unless absolute.
    #[must_use]
    pub fn in_state(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.state_dir.join(p)
        }
    }

    /// The socket path.
    #[must_use]
    pub fn socket_path(&self) -> PathBuf {
        self.in_state(&self.api.socket)
    }

    /// The documented defaults as TOML (`dwd --print-default-config`).
    ///
    /// # Panics
    /// Never: the defaults always serialize.
    #[must_use]
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).expect("defaults serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_validate() {
        let text = Config::default_toml();
        let c = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn partial_files_take_defaults() {
        let c = Config::parse(
            "state_dir = \"/tmp/x\"\n[s3]\nlisten = \"127.0.0.1:0\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.s3.listen, "127.0.0.1:0");
        assert_eq!(c.s3.region, "us-east-1");
        assert_eq!(c.nbd, NbdSection::default());
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        let e = Config::parse("[s3]\nlisten = \"nowhere\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("s3.listen"), "{e}");
        let e = Config::parse("[s3]\nlisen = \"1.2.3.4:5\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::parse("[unlock]\norder = [\"magic\"]\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let e = Config::parse("[api]\nsession_ttl_secs = 0\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("session_ttl_secs"), "{e}");
    }
}
