//! `dw-probe`: prints what the appliance knows about this machine.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dw_probe::{ProbeConfig, TpmAccess, UdevMode};

/// Hardware discovery for the DataWarehouse appliance: block devices (identity, kind, size,
/// whether they are in use, health) and the platform (CPU, memory, TPM, SEV, network).
#[derive(Debug, Parser)]
#[command(name = "dw-probe", version)]
struct Args {
    /// Print JSON (schema version 1, see docs/PROBE.md) instead of tables.
    #[arg(long)]
    json: bool,
    /// Probe only this whole device (kernel name, e.g. sda or nvme0n1).
    #[arg(long, value_name = "NAME")]
    device: Option<String>,
    /// Probe a recorded tree: sets the sys, dev, proc and run roots at once.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory that contains sys/ (default /).
    #[arg(long, value_name = "DIR")]
    sys_root: Option<PathBuf>,
    /// Directory that contains dev/ (default /).
    #[arg(long, value_name = "DIR")]
    dev_root: Option<PathBuf>,
    /// Directory that contains proc/ (default /).
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,
    /// Directory that contains run/ (default /).
    #[arg(long, value_name = "DIR")]
    run_root: Option<PathBuf>,
    /// Do not read drive health (no NVMe admin commands, no smartctl).
    #[arg(long)]
    no_health: bool,
    /// Do not read device contents. No device can then be `available`.
    #[arg(long)]
    no_signatures: bool,
    /// Do not talk to the TPM (sysfs and /dev are still looked at).
    #[arg(long)]
    no_tpm: bool,
    /// Ignore the udev database (sysfs only).
    #[arg(long)]
    no_udev: bool,
    /// smartctl program to run (default: smartctl from PATH; with a recorded tree: none).
    #[arg(long, value_name = "PATH")]
    smartctl: Option<PathBuf>,
    /// Print the JSON Schema of the --json output and exit.
    #[arg(long)]
    schema: bool,
}

fn config(args: &Args) -> ProbeConfig {
    let recorded = args.root.is_some()
        || args.sys_root.is_some()
        || args.dev_root.is_some()
        || args.proc_root.is_some()
        || args.run_root.is_some();
    let mut c = match &args.root {
        Some(root) => ProbeConfig::recorded(root),
        None if recorded => ProbeConfig::recorded(&PathBuf::from("/")),
        None => ProbeConfig::system(),
    };
    if let Some(p) = &args.sys_root {
        c.sys_root.clone_from(p);
    }
    if let Some(p) = &args.dev_root {
        c.dev_root.clone_from(p);
    }
    if let Some(p) = &args.proc_root {
        c.proc_root.clone_from(p);
    }
    if let Some(p) = &args.run_root {
        c.run_root.clone_from(p);
    }
    c.device.clone_from(&args.device);
    c.health = !args.no_health;
    c.signatures = !args.no_signatures;
    if args.no_tpm {
        c.tpm = TpmAccess::Disabled("switched off with --no-tpm".to_owned());
    }
    if args.no_udev {
        c.udev = UdevMode::Disabled;
    }
    if let Some(s) = &args.smartctl {
        c.smartctl.program = Some(s.clone());
    }
    c
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if args.schema {
        let text = serde_json::to_string_pretty(&dw_probe::json_schema())?;
        writeln!(stdout, "{text}").context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = config(args);
    let inventory = dw_probe::probe(&cfg);
    if args.json {
        let text = serde_json::to_string_pretty(&inventory).context("serialising the inventory")?;
        writeln!(stdout, "{text}").context("writing to stdout")?;
    } else {
        write!(stdout, "{}", dw_probe::table::render(&inventory)).context("writing to stdout")?;
    }
    if inventory.nothing_probed() {
        eprintln!(
            "dw-probe: nothing could be probed: {}",
            inventory
                .unknown
                .get("devices")
                .map_or("no devices", String::as_str)
        );
        return Ok(ExitCode::FAILURE);
    }
    if let (Some(name), true) = (&cfg.device, inventory.devices.is_empty()) {
        eprintln!("dw-probe: no whole block device named {name:?}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dw-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
