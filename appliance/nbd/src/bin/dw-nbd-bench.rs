//! `dw-nbd-bench`: throughput of the dw-nbd server against qemu-nbd and nbdkit, all serving
//! the same raw file in the same run, measured with fio's nbd engine (and nbdcopy).
//!
//! `dw-nbd-bench run` prints a table of MB/s and IOPS with the ratios ours/qemu-nbd and
//! ours/nbdkit. `dw-nbd-bench serve` only serves a file (for manual tests with qemu-img,
//! nbdinfo, fio).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dw_nbd::{FileExport, FileExportOptions, NbdServer, ServerConfig, StaticCatalog};

#[derive(Parser, Debug)]
#[command(about = "Benchmark the dw-nbd server against qemu-nbd and nbdkit")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the comparison (the default).
    Run(RunArgs),
    /// Serve a file until interrupted.
    Serve(ServeArgs),
}

#[derive(Parser, Debug, Clone)]
struct RunArgs {
    /// Directory for the image and sockets (tmpfs measures CPU efficiency).
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Image size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Seconds per fio job.
    #[arg(long, default_value_t = 3)]
    runtime: u64,
    /// Repetitions of every job (the best run of each server is reported).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Transport: unix or tcp.
    #[arg(long, default_value = "unix")]
    transport: String,
    /// qemu-nbd --aio mode.
    #[arg(long, default_value = "threads")]
    qemu_aio: String,
    /// Skip nbdkit.
    #[arg(long)]
    no_nbdkit: bool,
    /// Skip qemu-nbd.
    #[arg(long)]
    no_qemu: bool,
    /// Also time nbdcopy reading the whole image with 1 and 2 connections.
    #[arg(long)]
    nbdcopy: bool,
    /// Only run jobs whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Tokio worker threads for our server (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Override FileExport's inline I/O limit in bytes.
    #[arg(long)]
    inline: Option<u32>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// File to export.
    #[arg(long)]
    file: PathBuf,
    /// TCP address, e.g. 127.0.0.1:10809.
    #[arg(long)]
    tcp: Option<String>,
    /// Unix socket path.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Export name.
    #[arg(long, default_value = "disk")]
    name: String,
    /// Override FileExport's inline I/O limit in bytes.
    #[arg(long)]
    inline: Option<u32>,
    /// Export read-only.
    #[arg(long)]
    read_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Serve(s)) => serve(s),
        Some(Cmd::Run(r)) => run(&r),
        None => run(&RunArgs::parse_from(["run"])),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let export = Arc::new(FileExport::open(
            &args.file,
            FileExportOptions {
                inline_io_limit: args.inline,
                read_only: args.read_only,
                ..Default::default()
            },
        )?);
        let catalog = Arc::new(
            StaticCatalog::new()
                .with_export(args.name.clone(), "dw-nbd-bench serve", export)
                .with_default(args.name),
        );
        let server = NbdServer::new(catalog, ServerConfig::default())?;
        let mut tasks = Vec::new();
        if let Some(addr) = args.tcp {
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let s = server.clone();
            tasks.push(tokio::spawn(async move {
                s.serve(l, std::future::pending()).await
            }));
        }
        if let Some(path) = args.unix {
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {}", path.display()))?;
            let s = server.clone();
            tasks.push(tokio::spawn(async move {
                s.serve(l, std::future::pending()).await
            }));
        }
        if tasks.is_empty() {
            bail!("give --tcp and/or --unix");
        }
        let _ = tokio::signal::ctrl_c().await;
        server.begin_shutdown();
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}

/// A server under test.
struct Target {
    name: &'static str,
    uri: String,
    child: Option<Child>,
}

impl Target {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or_else(std::process::id, Child::id)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Job {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    iodepth: u32,
    numjobs: u32,
}

const JOBS: &[Job] = &[
    Job {
        name: "seq-read 1M qd16 1conn",
        rw: "read",
        bs: "1M",
        iodepth: 16,
        numjobs: 1,
    },
    Job {
        name: "seq-write 1M qd16 1conn",
        rw: "write",
        bs: "1M",
        iodepth: 16,
        numjobs: 1,
    },
    Job {
        name: "rand-read 4K qd32 1conn",
        rw: "randread",
        bs: "4k",
        iodepth: 32,
        numjobs: 1,
    },
    Job {
        name: "rand-write 4K qd32 1conn",
        rw: "randwrite",
        bs: "4k",
        iodepth: 32,
        numjobs: 1,
    },
    Job {
        name: "seq-read 1M qd16 2conn",
        rw: "read",
        bs: "1M",
        iodepth: 16,
        numjobs: 2,
    },
    Job {
        name: "seq-write 1M qd16 2conn",
        rw: "write",
        bs: "1M",
        iodepth: 16,
        numjobs: 2,
    },
    Job {
        name: "rand-read 4K qd32 2conn",
        rw: "randread",
        bs: "4k",
        iodepth: 32,
        numjobs: 2,
    },
    Job {
        name: "rand-write 4K qd32 2conn",
        rw: "randwrite",
        bs: "4k",
        iodepth: 32,
        numjobs: 2,
    },
];

#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    mbps: f64,
    iops: f64,
    /// Server CPU time per I/O in microseconds (user + system, all threads).
    cpu_us_per_io: f64,
}

/// CPU seconds (user + system, all threads, including exited ones) used by `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ (the unit of these fields) is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fills `path` with `size` pseudo-random bytes (incompressible, no zero runs, so no server
/// can skip work by detecting holes).
fn make_image(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size.div_ceil(1 << 20) {
        for chunk in block.chunks_exact_mut(8) {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(())
}

fn wait_for_socket(path: &Path, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not create {} within 10 s", path.display())
}

fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for_tcp(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 10 s")
}

fn uri(transport: &str, sock: &Path, port: u16) -> String {
    if transport == "tcp" {
        format!("nbd://127.0.0.1:{port}/disk")
    } else {
        format!("nbd+unix:///disk?socket={}", sock.display())
    }
}

fn start_ours(
    args: &RunArgs,
    image: &Path,
) -> Result<(Target, std::thread::JoinHandle<()>, NbdServer)> {
    let sock = args.dir.join("dw-nbd-bench-ours.sock");
    let _ = std::fs::remove_file(&sock);
    let port = free_tcp_port()?;
    let export = Arc::new(FileExport::open(
        image,
        FileExportOptions {
            inline_io_limit: args.inline,
            ..Default::default()
        },
    )?);
    let catalog = Arc::new(StaticCatalog::new().with_export("disk", "bench", export));
    let server = NbdServer::new(catalog, ServerConfig::default())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(w) = args.workers {
        builder.worker_threads(w);
    }
    let rt = builder.enable_all().build()?;
    let (unix, tcp) = {
        let _guard = rt.enter();
        (
            tokio::net::UnixListener::bind(&sock)?,
            rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))?,
        )
    };
    let s = server.clone();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let s2 = s.clone();
            let a = tokio::spawn(async move { s2.serve(unix, std::future::pending()).await });
            let _ = s.serve(tcp, std::future::pending()).await;
            let _ = a.await;
        });
    });
    Ok((
        Target {
            name: "dw-nbd",
            uri: uri(&args.transport, &sock, port),
            child: None,
        },
        thread,
        server,
    ))
}

fn start_qemu(args: &RunArgs, image: &Path) -> Result<Target> {
    let sock = args.dir.join("dw-nbd-bench-qemu.sock");
    let _ = std::fs::remove_file(&sock);
    let port = free_tcp_port()?;
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-f", "raw", "-x", "disk", "--persistent", "--shared=8"])
        .args([
            "--cache=writeback",
            &format!("--aio={}", args.qemu_aio),
            "--discard=unmap",
        ]);
    if args.transport == "tcp" {
        cmd.args(["-b", "127.0.0.1", "-p", &port.to_string()]);
    } else {
        cmd.arg(format!("--socket={}", sock.display()));
    }
    let mut child = cmd
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-nbd")?;
    if args.transport == "tcp" {
        wait_for_tcp(port)?;
    } else {
        wait_for_socket(&sock, &mut child, "qemu-nbd")?;
    }
    Ok(Target {
        name: "qemu-nbd",
        uri: uri(&args.transport, &sock, port),
        child: Some(child),
    })
}

fn start_nbdkit(args: &RunArgs, image: &Path) -> Result<Target> {
    let sock = args.dir.join("dw-nbd-bench-nbdkit.sock");
    let _ = std::fs::remove_file(&sock);
    let port = free_tcp_port()?;
    let mut cmd = Command::new("nbdkit");
    cmd.args(["--foreground", "--exit-with-parent", "-e", "disk"]);
    if args.transport == "tcp" {
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    } else {
        cmd.arg("-U").arg(&sock);
    }
    let mut child = cmd
        .arg("file")
        .arg(format!("file={}", image.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nbdkit")?;
    if args.transport == "tcp" {
        wait_for_tcp(port)?;
    } else {
        wait_for_socket(&sock, &mut child, "nbdkit")?;
    }
    Ok(Target {
        name: "nbdkit",
        uri: uri(&args.transport, &sock, port),
        child: Some(child),
    })
}

fn fio(target: &Target, job: &Job, args: &RunArgs) -> Result<Measure> {
    let out_path = args.dir.join("dw-nbd-bench-fio.json");
    let cpu_before = cpu_seconds(target.pid());
    let status = Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=nbd",
            &format!("--uri={}", target.uri),
            &format!("--rw={}", job.rw),
            &format!("--bs={}", job.bs),
            &format!("--iodepth={}", job.iodepth),
            &format!("--numjobs={}", job.numjobs),
            "--group_reporting",
            "--time_based",
            &format!("--runtime={}", args.runtime),
            &format!("--size={}M", args.size_mib),
            "--output-format=json",
        ])
        .arg(format!("--output={}", out_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running fio")?;
    let cpu = cpu_seconds(target.pid()) - cpu_before;
    if !status.success() {
        bail!("fio failed against {} ({})", target.name, status);
    }
    let text = std::fs::read_to_string(&out_path)?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing fio JSON")?;
    let j = &v["jobs"][0];
    let sum =
        |k: &str| j["read"][k].as_f64().unwrap_or(0.0) + j["write"][k].as_f64().unwrap_or(0.0);
    // No ramp time, so total_ios covers the same span as the CPU measurement.
    let ios = sum("total_ios");
    Ok(Measure {
        mbps: sum("bw_bytes") / 1e6,
        iops: sum("iops"),
        cpu_us_per_io: if ios > 0.0 { cpu * 1e6 / ios } else { 0.0 },
    })
}

fn nbdcopy(target: &Target, connections: u32) -> Result<Measure> {
    let start = Instant::now();
    let status = Command::new("nbdcopy")
        .args([
            &format!("--connections={connections}"),
            &format!("--threads={connections}"),
        ])
        .arg(&target.uri)
        .arg("null:")
        .status()
        .context("running nbdcopy")?;
    if !status.success() {
        bail!("nbdcopy failed against {}", target.name);
    }
    let secs = start.elapsed().as_secs_f64();
    let size = Command::new("nbdinfo")
        .args(["--size", &target.uri])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    Ok(Measure {
        mbps: size / secs / 1e6,
        iops: 0.0,
        cpu_us_per_io: 0.0,
    })
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn machine_notes() -> String {
    let cmd = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!(
        "cpus={} ({cpu}), kernel {}, {}, {}, {}, load {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cmd("uname", &["-r"]),
        cmd("fio", &["--version"]),
        cmd("qemu-nbd", &["--version"]),
        cmd("nbdkit", &["--version"]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    )
}

fn run(args: &RunArgs) -> Result<()> {
    if !have("fio") {
        bail!("fio is not installed (apt-get install fio)");
    }
    std::fs::create_dir_all(&args.dir)?;
    let image = args.dir.join("dw-nbd-bench.img");
    eprintln!("creating {} MiB image {}", args.size_mib, image.display());
    make_image(&image, args.size_mib << 20)?;
    let (ours, ours_thread, ours_server) = start_ours(args, &image)?;
    let mut targets = vec![ours];
    if !args.no_qemu {
        if have("qemu-nbd") {
            targets.push(start_qemu(args, &image)?);
        } else {
            eprintln!("qemu-nbd not installed: skipping it");
        }
    }
    if !args.no_nbdkit {
        if have("nbdkit") {
            targets.push(start_nbdkit(args, &image)?);
        } else {
            eprintln!("nbdkit not installed: skipping it");
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    eprintln!("servers: {}", names.join(", "));
    let mut rows: Vec<(String, Vec<Option<Measure>>)> = Vec::new();
    for job in JOBS {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !job.name.contains(o.as_str()))
        {
            continue;
        }
        let mut best: Vec<Option<Measure>> = vec![None; targets.len()];
        // Interleave servers so load drift affects all alike.
        for _ in 0..args.repeat {
            for (i, t) in targets.iter().enumerate() {
                let m = fio(t, job, args)?;
                eprintln!(
                    "  {:<26} {:<9} {:>8.0} MB/s {:>9.0} IOPS {:>7.1} CPU µs/IO",
                    job.name, t.name, m.mbps, m.iops, m.cpu_us_per_io
                );
                // Best throughput, and separately the lowest CPU cost per I/O (the least
                // disturbed by other load on the machine).
                best[i] = Some(match best[i] {
                    None => m,
                    Some(b) => Measure {
                        mbps: b.mbps.max(m.mbps),
                        iops: b.iops.max(m.iops),
                        cpu_us_per_io: b.cpu_us_per_io.min(m.cpu_us_per_io),
                    },
                });
            }
        }
        rows.push((job.name.to_owned(), best));
    }
    if args.nbdcopy && have("nbdcopy") {
        for conns in [1, 2] {
            let mut best: Vec<Option<Measure>> = vec![None; targets.len()];
            for _ in 0..args.repeat {
                for (i, t) in targets.iter().enumerate() {
                    let m = nbdcopy(t, conns)?;
                    eprintln!(
                        "  nbdcopy {conns}conn -> null  {:<9} {:>8.0} MB/s",
                        t.name, m.mbps
                    );
                    if best[i].is_none_or(|b| m.mbps > b.mbps) {
                        best[i] = Some(m);
                    }
                }
            }
            rows.push((format!("nbdcopy read {conns}conn"), best));
        }
    }
    let idx = |n: &str| targets.iter().position(|t| t.name == n);
    let (q, k) = (idx("qemu-nbd"), idx("nbdkit"));
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| job | MB/s dw-nbd | MB/s qemu-nbd | MB/s nbdkit | IOPS dw-nbd | IOPS qemu-nbd | IOPS nbdkit \
         | CPU µs/IO dw-nbd | CPU µs/IO qemu-nbd | CPU µs/IO nbdkit | ours/qemu-nbd | ours/nbdkit |"
    );
    let _ = writeln!(
        table,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (name, m) in &rows {
        let get = |i: Option<usize>| i.and_then(|i| m[i]);
        let ours = m[0].unwrap_or_default();
        let cell = |x: Option<Measure>, f: fn(Measure) -> f64, digits: usize| {
            x.map_or("-".into(), |x| format!("{:.digits$}", f(x)))
        };
        let iops = |x: Option<Measure>| cell(x, |m| m.iops, 0);
        let mbps = |x: Option<Measure>| cell(x, |m| m.mbps, 0);
        let cpu = |x: Option<Measure>| {
            x.filter(|m| m.cpu_us_per_io > 0.0)
                .map_or("-".into(), |m| format!("{:.1}", m.cpu_us_per_io))
        };
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mbps(m[0]),
            mbps(get(q)),
            mbps(get(k)),
            iops(m[0]),
            iops(get(q)),
            iops(get(k)),
            cpu(m[0]),
            cpu(get(q)),
            cpu(get(k)),
            ratio(ours.mbps, get(q).map(|m| m.mbps)),
            ratio(ours.mbps, get(k).map(|m| m.mbps)),
        );
    }
    println!();
    println!(
        "dw-nbd-bench: {} MiB image in {}, transport {}, {} s per job, best of {}, qemu-nbd --cache=writeback --aio={}",
        args.size_mib,
        args.dir.display(),
        args.transport,
        args.runtime,
        args.repeat,
        args.qemu_aio
    );
    println!("machine: {}", machine_notes());
    println!();
    print!("{table}");
    drop(targets);
    ours_server.begin_shutdown();
    let _ = ours_thread.join();
    let _ = std::fs::remove_file(&image);
    Ok(())
}
