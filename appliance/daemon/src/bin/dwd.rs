//! `dwd`: the DataWarehouse appliance daemon. See docs/DAEMON.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dw_daemon::Config;
use dw_daemon::demo::DemoOptions;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The DataWarehouse appliance daemon: owns drives, arrays, VDEs and keys; serves the
/// management API (Unix socket and HTTPS), S3 and NBD.
#[derive(Debug, Parser)]
#[command(name = "dwd", version)]
struct Args {
    /// Configuration file (TOML; every key optional, see `--print-default-config`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// State directory (overrides the file; demo default `./dw-demo`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Run the demo appliance on file-backed drives in the state directory.
    #[arg(long)]
    demo: bool,
    /// Demo: number of file-backed drives.
    #[arg(long, default_value_t = 4, requires = "demo")]
    demo_drives: usize,
    /// Demo: size of each drive (sparse), e.g. 1G.
    #[arg(long, default_value = "1G", requires = "demo")]
    demo_drive_size: String,
    /// Demo: size of the demo volume, e.g. 512M.
    #[arg(long, default_value = "512M", requires = "demo")]
    demo_volume_size: String,
    /// HTTPS listen address ("" disables).
    #[arg(long)]
    https_listen: Option<String>,
    /// S3 listen address ("" disables).
    #[arg(long)]
    s3_listen: Option<String>,
    /// NBD listen address ("" disables).
    #[arg(long)]
    nbd_listen: Option<String>,
    /// Metrics listen address ("" disables).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Unix socket of the API.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `dw_daemon=debug,info`).
    #[arg(long)]
    log_level: Option<String>,
    /// Print the default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    openapi: bool,
    /// Print the state database as JSON (secrets redacted) and exit. The daemon must be stopped.
    #[arg(long)]
    dump_state: bool,
}

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = match cfg.log.target.as_str() {
        "stderr" => None,
        _ => tracing_journald::layer().ok(),
    };
    if cfg.log.target == "journald" && journald.is_none() {
        eprintln!("dwd: journald is not reachable; logging to stderr");
    }
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(j) => {
            let _ = registry.with(j).try_init();
        }
        None => {
            let _ = registry
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .try_init();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    if args.openapi {
        print!("{}", dw_api::openapi_json());
        return Ok(());
    }
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if args.demo {
        cfg = dw_daemon::demo::config(cfg);
        if args.state_dir.is_none() && args.config.is_none() {
            cfg.state_dir = PathBuf::from("dw-demo");
        }
    }
    if let Some(d) = args.state_dir {
        cfg.state_dir = d;
    }
    // Relative state directories are made absolute so paths recorded in the state stay valid
    // whatever directory the daemon is started from next time.
    if cfg.state_dir.is_relative() {
        cfg.state_dir = std::env::current_dir()?.join(&cfg.state_dir);
    }
    for (opt, slot) in [
        (args.https_listen, &mut cfg.api.https_listen),
        (args.s3_listen, &mut cfg.s3.listen),
        (args.nbd_listen, &mut cfg.nbd.listen),
        (args.metrics_listen, &mut cfg.metrics.listen),
    ] {
        if let Some(v) = opt {
            *slot = v;
        }
    }
    if let Some(s) = args.socket {
        cfg.api.socket = s;
    }
    if let Some(l) = args.log_level {
        cfg.log.level = l;
    }
    cfg.validate()?;
    if args.dump_state {
        let _lock = dw_daemon::server::lock_state(&cfg.state_dir)?;
        let db = dw_daemon::state::StateDb::open(&cfg.state_dir.join("state.redb"))?;
        println!("{}", serde_json::to_string_pretty(&db.dump()?)?);
        return Ok(());
    }
    init_logging(&cfg);
    let demo = if args.demo {
        let parse = |s: &str, what: &str| {
            dw_daemon::devices::parse_size(s)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| what.to_owned())
        };
        Some(DemoOptions {
            drives: args.demo_drives,
            drive_bytes: parse(&args.demo_drive_size, "--demo-drive-size")?,
            volume_bytes: parse(&args.demo_volume_size, "--demo-volume-size")?,
        })
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dwd")
        .build()?;
    let r = rt.block_on(dw_daemon::server::run(cfg, demo));
    if let Err(e) = &r {
        tracing::error!("dwd failed: {e:#}");
    }
    r
}
