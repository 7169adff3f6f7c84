//! dw-bench-appliance: the whole appliance against peers, side by side in one run.
//!
//! - **S3**: `dwd --demo` (a RAID-Z2 of file drives under `--dir`, a VDE, a bucket per profile)
//!   and a peer S3 server (garage, given by `--garage PATH`, single node, data under `--dir` on
//!   the same disk) are driven by the same load generator (`dw-s3-bench`, same connections,
//!   sizes and duration); PUT and GET throughput and request rates are reported as ratios.
//! - **NBD**: fio's `nbd` engine against a `dwd` volume and against `qemu-nbd` serving a raw
//!   file on the same disk, same jobs; ratios per job.
//!
//! Nothing of the peers is built or fetched here: pass the binaries. Output is Markdown on
//! stdout (docs/PERFORMANCE.md takes it as is).

#![allow(
    clippy::cast_precision_loss,
    reason = "throughput arithmetic for a report; exactness is not needed"
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "dwd against garage (S3) and qemu-nbd (NBD), same machine, same run")]
struct Args {
    /// Working directory on the disk to measure (drive files, peer data).
    #[arg(long, default_value = "/var/tmp/dw-bench-appliance")]
    dir: PathBuf,
    /// The dwd binary.
    #[arg(long, default_value = "target/release/dwd")]
    dwd: PathBuf,
    /// The S3 load generator (dw-s3-bench).
    #[arg(long, default_value = "target/release/dw-s3-bench")]
    s3_bench: PathBuf,
    /// The garage binary (the S3 peer); without it the S3 peer column is empty.
    #[arg(long)]
    garage: Option<PathBuf>,
    /// Run garage with `metadata_fsync` and `data_fsync` on (its defaults are off: an
    /// acknowledged PUT may be lost at a power cut, which dwd never allows).
    #[arg(long)]
    garage_fsync: bool,
    /// Size of each of dwd's four drive files.
    #[arg(long, default_value = "4G")]
    drive_size: String,
    /// VDE profiles to measure (S3 buckets and NBD volumes get these).
    #[arg(long, value_delimiter = ',', default_value = "speed,balanced,standard")]
    profiles: Vec<String>,
    /// S3 object sizes.
    #[arg(long, default_value = "4KiB,16MiB")]
    sizes: String,
    /// S3 object contents, passed to dw-s3-bench: `compressible` or `random`.
    #[arg(long, default_value = "compressible")]
    payload: String,
    /// S3 connections.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds per S3 phase and per fio job.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Skip the S3 part.
    #[arg(long)]
    no_s3: bool,
    /// Skip the NBD part.
    #[arg(long)]
    no_nbd: bool,
}

/// A child process killed on drop.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so dwd closes cleanly; then make sure.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        eprintln!("{} had to be killed", self.1);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn api(socket: &str, method: &str, path: &str, body: &Value) -> Result<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let b = serde_json::to_vec(body)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        b.len()
    )?;
    s.write_all(&b)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if !head.contains(" 200 ") && !head.contains(" 204 ") {
        bail!("{method} {path}: {head}\n{body}");
    }
    Ok(serde_json::from_str(body).unwrap_or(Value::Null))
}

fn start_dwd(a: &Args) -> Result<(Proc, Value)> {
    let state = a.dir.join("dwd");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let log = std::fs::File::create(a.dir.join("dwd.log"))?;
    let child = Command::new(&a.dwd)
        .args(["--demo", "--state-dir"])
        .arg(&state)
        .args([
            "--demo-drive-size",
            &a.drive_size,
            "--demo-volume-size",
            "1G",
        ])
        .args(["--https-listen", "", "--metrics-listen", ""])
        .args(["--s3-listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", a.dwd.display()))?;
    let p = Proc(child, "dwd");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(b) = std::fs::read(state.join("demo.json"))
            && let Ok(v) = serde_json::from_slice::<Value>(&b)
        {
            return Ok((p, v));
        }
        if Instant::now() > deadline {
            bail!("dwd did not start; see {}", a.dir.join("dwd.log").display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of dw-s3-bench: (op, size, req/s, MB/s, p50 ms, p99 ms).
type S3Line = (String, String, f64, f64, f64, f64);

fn s3_bench(
    a: &Args,
    endpoint: &str,
    key: &str,
    secret: &str,
    bucket: &str,
) -> Result<Vec<S3Line>> {
    let out = Command::new(&a.s3_bench)
        .args([
            "--endpoint",
            endpoint,
            "--access-key",
            key,
            "--secret-key",
            secret,
        ])
        .args(["--bucket", bucket, "--sizes", &a.sizes])
        .args(["--payload", &a.payload])
        .args(["--concurrency", &a.concurrency.to_string()])
        .args(["--duration", &a.seconds.to_string()])
        .output()
        .with_context(|| format!("running {}", a.s3_bench.display()))?;
    if !out.status.success() {
        bail!(
            "dw-s3-bench against {endpoint} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 12 || !(w[0] == "PUT" || w[0] == "GET") {
            continue;
        }
        let num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        // PUT 4KiB conc=8 ops=N X req/s Y MB/s p50 A ms p99 B ms errors E
        lines.push((
            w[0].to_owned(),
            w[1].to_owned(),
            num(w[4]),
            num(w[6]),
            num(w[9]),
            num(w[12]),
        ));
        if w.last().is_some_and(|e| *e != "0") {
            eprintln!("warning: errors in {l}");
        }
    }
    Ok(lines)
}

fn garage(a: &Args, bin: &Path) -> Result<(Proc, String, String, String)> {
    let dir = a.dir.join("garage");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
    let secret: String = (0..32)
        .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
        .collect();
    let cfg = dir.join("garage.toml");
    std::fs::write(
        &cfg,
        format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
             replication_factor = 1\nmetadata_fsync = {fsync}\ndata_fsync = {fsync}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            d = dir.display(),
            fsync = a.garage_fsync
        ),
    )?;
    let log = std::fs::File::create(a.dir.join("garage.log"))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&cfg)
        .arg("server")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let p = Proc(child, "garage");
    let g = |args: &[&str]| -> Result<String> {
        let o = Command::new(bin).arg("-c").arg(&cfg).args(args).output()?;
        if !o.status.success() {
            bail!("garage {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut id = String::new();
    for _ in 0..100 {
        if let Ok(s) = g(&["node", "id", "-q"]) {
            id = s.trim().split('@').next().unwrap_or("").to_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if id.is_empty() {
        bail!(
            "garage did not start; see {}",
            a.dir.join("garage.log").display()
        );
    }
    g(&["layout", "assign", "-z", "dc1", "-c", "10G", &id])?;
    g(&["layout", "apply", "--version", "1"])?;
    let k = g(&["key", "create", "bench"])?;
    let find = |label: &str| {
        k.lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("")
            .to_owned()
    };
    let (ak, sk) = (find("Key ID"), find("Secret key"));
    g(&["bucket", "create", "bench"])?;
    g(&[
        "bucket", "allow", "--read", "--write", "--owner", "bench", "--key", "bench",
    ])?;
    Ok((p, format!("http://127.0.0.1:{s3}"), ak, sk))
}

fn s3_part(a: &Args) -> Result<()> {
    let (_d, demo) = start_dwd(a)?;
    let socket = demo["api"]["socket"].as_str().context("socket")?.to_owned();
    let endpoint = demo["s3"]["endpoint"]
        .as_str()
        .context("endpoint")?
        .to_owned();
    let key = api(
        &socket,
        "POST",
        "/api/v1/s3/keys",
        &json!({"name": "bench", "admin": true}),
    )?;
    let ak = key["info"]["access_key"]
        .as_str()
        .context("key")?
        .to_owned();
    let sk = key["secret_key"].as_str().context("secret")?.to_owned();
    let mut ours = Vec::new();
    for p in &a.profiles {
        let bucket = format!("bench-{p}");
        api(
            &socket,
            "POST",
            "/api/v1/containers",
            &json!({"name": bucket, "kind": "bucket", "policy": {"profile": p}}),
        )?;
        ours.push((p.clone(), s3_bench(a, &endpoint, &ak, &sk, &bucket)?));
    }
    drop(_d);
    let peer = match &a.garage {
        Some(bin) => {
            let (_g, ep, gk, gs) = garage(a, bin)?;
            Some(s3_bench(a, &ep, &gk, &gs, "bench")?)
        }
        None => None,
    };
    println!("### S3: dwd vs garage\n");
    println!(
        "dw-s3-bench, {} connections, {} s per phase, {} payload; dwd on a RAID-Z2 of four {} drive files, \
         garage single node (replication 1, LMDB, zstd level 1 default, fsync {}), both under `{}`.\n",
        a.concurrency,
        a.seconds,
        a.payload,
        a.drive_size,
        if a.garage_fsync {
            "on"
        } else {
            "off (its default)"
        },
        a.dir.display()
    );
    println!(
        "| profile | op | size | dwd req/s | dwd MB/s | dwd p50 ms | dwd p99 ms | garage req/s | garage MB/s | garage p50 ms | garage p99 ms | dwd/garage |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (p, lines) in &ours {
        for (op, size, rps, mbs, p50, p99) in lines {
            let g = peer
                .as_ref()
                .and_then(|v| v.iter().find(|l| &l.0 == op && &l.1 == size));
            let (grps, gmbs, gp50, gp99, ratio) = match g {
                Some(g) => (
                    format!("{:.1}", g.2),
                    format!("{:.1}", g.3),
                    format!("{:.2}", g.4),
                    format!("{:.2}", g.5),
                    format!("{:.2}", rps / g.2.max(1e-9)),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {p} | {op} | {size} | {rps:.1} | {mbs:.1} | {p50:.2} | {p99:.2} | {grps} | {gmbs} | {gp50} | {gp99} | {ratio} |"
            );
        }
    }
    println!();
    Ok(())
}

struct FioJob {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    qd: u32,
}

const JOBS: &[FioJob] = &[
    FioJob {
        name: "seq-write 1M qd16",
        rw: "write",
        bs: "1M",
        qd: 16,
    },
    FioJob {
        name: "seq-read 1M qd16",
        rw: "read",
        bs: "1M",
        qd: 16,
    },
    FioJob {
        name: "rand-write 4K qd32",
        rw: "randwrite",
        bs: "4k",
        qd: 32,
    },
    FioJob {
        name: "rand-read 4K qd32",
        rw: "randread",
        bs: "4k",
        qd: 32,
    },
];

/// (MB/s, IOPS) of one fio job against `uri`.
fn fio(uri: &str, job: &FioJob, secs: u32, size: &str) -> Result<(f64, f64)> {
    let out = Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=nbd",
            "--output-format=json",
            "--time_based",
        ])
        .arg(format!("--uri={uri}"))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.bs))
        .arg(format!("--iodepth={}", job.qd))
        .arg(format!("--runtime={secs}"))
        .arg(format!("--size={size}"))
        .stderr(Stdio::inherit())
        .output()
        .context("running fio")?;
    if !out.status.success() {
        bail!("fio {} against {uri} failed", job.name);
    }
    // fio may print notes before its JSON document.
    let text = String::from_utf8_lossy(&out.stdout);
    let json_start = text.find('{').context("fio printed no JSON")?;
    let v: Value = serde_json::from_str(&text[json_start..]).context("fio JSON")?;
    let j = &v["jobs"][0];
    let side = if job.rw.contains("write") {
        "write"
    } else {
        "read"
    };
    let bw = j[side]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    let iops = j[side]["iops"].as_f64().unwrap_or(0.0);
    Ok((bw, iops))
}

fn nbd_part(a: &Args) -> Result<()> {
    let (_d, demo) = start_dwd(a)?;
    let socket = demo["api"]["socket"].as_str().context("socket")?.to_owned();
    let base = demo["nbd"]["uri"]
        .as_str()
        .context("nbd")?
        .trim_end_matches("/demo-vol")
        .to_owned();
    // Half the volume: the benchmark measures throughput, not a full device.
    let size = "512M";
    let mut ours = Vec::new();
    for p in &a.profiles {
        let name = format!("vol-{p}");
        api(
            &socket,
            "POST",
            "/api/v1/containers",
            &json!({"name": name, "kind": "volume", "size_bytes": 1u64 << 30, "policy": {"profile": p}}),
        )?;
        let uri = format!("{base}/{name}");
        let mut r = Vec::new();
        for j in JOBS {
            r.push(fio(&uri, j, a.seconds, size)?);
        }
        ours.push((p.clone(), r));
    }
    drop(_d);
    // qemu-nbd serving a raw file on the same disk.
    let img = a.dir.join("qemu-nbd.raw");
    std::fs::File::create(&img)?.set_len(1 << 30)?;
    let port = free_port()?;
    let q = Command::new("qemu-nbd")
        .args([
            "-f",
            "raw",
            "-x",
            "disk",
            "--persistent",
            "--shared=8",
            "--cache=writeback",
        ])
        .args([
            "--aio=threads",
            "--discard=unmap",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg(&img)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-nbd")?;
    let _q = Proc(q, "qemu-nbd");
    std::thread::sleep(Duration::from_millis(500));
    let quri = format!("nbd://127.0.0.1:{port}/disk");
    let mut peer = Vec::new();
    for j in JOBS {
        peer.push(fio(&quri, j, a.seconds, size)?);
    }
    println!("### NBD: dwd volume vs qemu-nbd raw file\n");
    println!(
        "fio {} `--ioengine=nbd`, {} s per job, 512 MiB of a 1 GiB volume; dwd volume on a RAID-Z2 of four {} drive \
         files, qemu-nbd (`--cache=writeback --aio=threads`) serving one raw file, both under `{}`.\n",
        fio_version(),
        a.seconds,
        a.drive_size,
        a.dir.display()
    );
    println!(
        "| profile | job | dwd MB/s | dwd IOPS | qemu-nbd MB/s | qemu-nbd IOPS | dwd/qemu-nbd |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (p, r) in &ours {
        for (j, ((bw, iops), (qbw, qiops))) in JOBS.iter().zip(r.iter().zip(peer.iter())) {
            println!(
                "| {p} | {} | {bw:.0} | {iops:.0} | {qbw:.0} | {qiops:.0} | {:.2} |",
                j.name,
                iops / qiops.max(1e-9)
            );
        }
    }
    println!();
    Ok(())
}

fn fio_version() -> String {
    Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir)?;
    println!(
        "## Appliance benchmark ({} CPUs, load average at start {})\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !a.no_s3 {
        s3_part(&a)?;
    }
    if !a.no_nbd {
        nbd_part(&a)?;
    }
    Ok(())
}
