//! RAID engine benchmark.
//!
//! 1. Parity: encode and reconstruct throughput of our GF(2^8) kernels against ISA-L on the
//!    same buffers, cache-resident ("hot") and streaming from memory.
//! 2. Arrays: for each level over N member files (on tmpfs, and on the disk with O_DIRECT),
//!    sequential full-stripe write and read, degraded read (one member missing), and 4 KiB
//!    random read IOPS — each next to the raw aggregate of the same N files, measured right
//!    before it with the same threads and block pattern.
//!
//! Writes are reported as physical efficiency: bytes that reached the members (data plus
//! parity or copies) per second over the raw aggregate write rate. Reads are logical bytes per
//! second over the raw aggregate read rate.

// Rates and ratios are floating point; byte counts here are far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use dw_bench::isal::Isal;
use dw_bench::{fill_random, gbs, pct, per_sec, rate};
use dw_blockdev::{AlignedBuf, BlockDev, DiskDev, DiskOptions};
use dw_raid::{Array, AssembleOptions, CreateSpec, Level, parity};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Benchmark the RAID engine against raw member throughput and ISA-L")]
struct Args {
    /// Directory on tmpfs for member files (CPU-path ceiling).
    #[arg(long, default_value = "/dev/shm/dw-bench-raid")]
    tmpfs_dir: PathBuf,
    /// Directory on the disk for member files (end-to-end, O_DIRECT).
    #[arg(long, default_value = "/var/tmp/dw-bench-raid")]
    disk_dir: PathBuf,
    /// Skip the disk run.
    #[arg(long)]
    no_disk: bool,
    /// Skip the array runs (parity kernels only).
    #[arg(long)]
    parity_only: bool,
    /// Members per array.
    #[arg(long, default_value_t = 6)]
    members: usize,
    /// Size of each member file in MiB.
    #[arg(long, default_value_t = 384)]
    member_mib: u64,
    /// Threads issuing I/O (same for raw and array).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per random-read measurement.
    #[arg(long, default_value_t = 2.0)]
    rand_secs: f64,
    /// Levels to run (default: all).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<Level>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("# dw-bench-raid");
    println!();
    parity_bench()?;
    write_amplification(args.members)?;
    if args.parity_only {
        return Ok(());
    }
    arrays(&args, &args.tmpfs_dir, false)?;
    if !args.no_disk {
        arrays(&args, &args.disk_dir, true)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------ parity

fn parity_bench() -> Result<()> {
    let isal = Isal::load();
    if let Err(e) = &isal {
        println!("ISA-L not available ({e}); ISA-L columns are empty");
    }
    let isal = isal.ok();
    println!("## Parity kernels (single core, k = 8 data shards; GB/s of data processed)");
    println!();
    println!("| operation | buffers | ours | ISA-L | ours / ISA-L |");
    println!("|---|---|---|---|---|");
    let min = Duration::from_millis(600);
    for (shard, label) in [
        (32 * 1024usize, "hot (8 x 32 KiB)"),
        (8 << 20, "streaming (8 x 8 MiB)"),
    ] {
        let k = 8usize;
        let mut data: Vec<AlignedBuf> = (0..k).map(|_| AlignedBuf::zeroed(shard)).collect();
        for (i, d) in data.iter_mut().enumerate() {
            fill_random(d, i as u64 + 1);
        }
        let dref: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let bytes = (k * shard) as u64;
        for p in 1..=3usize {
            let mut par: Vec<AlignedBuf> = (0..p).map(|_| AlignedBuf::zeroed(shard)).collect();
            let ours = rate(bytes, min, || {
                let mut o: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
                parity::encode(&dref, &mut o);
            });
            let theirs = isal.as_ref().map(|i| {
                let mut ipar: Vec<AlignedBuf> = (0..p).map(|_| AlignedBuf::zeroed(shard)).collect();
                if p <= 2 {
                    rate(bytes, min, || {
                        let mut o: Vec<&mut [u8]> = ipar.iter_mut().map(|b| &mut b[..]).collect();
                        let _ = i.raid_gen(&dref, &mut o);
                    })
                } else {
                    let mut m = i.cauchy(k, p).unwrap_or_default();
                    let mut t = i.tables(k, p, &mut m[k * k..]).unwrap_or_default();
                    rate(bytes, min, || {
                        let mut o: Vec<&mut [u8]> = ipar.iter_mut().map(|b| &mut b[..]).collect();
                        let _ = i.encode(k, &mut t, &dref, &mut o);
                    })
                }
            });
            let what = ["encode P (8+1)", "encode P+Q (8+2)", "encode P+Q+R (8+3)"][p - 1];
            row(what, label, ours, theirs);
        }
        // Reconstruction of e lost data shards from the survivors (k + 3 code).
        let p = 3usize;
        let mut par: Vec<AlignedBuf> = (0..p).map(|_| AlignedBuf::zeroed(shard)).collect();
        {
            let mut o: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
            parity::encode(&dref, &mut o);
        }
        for e in 1..=3usize {
            let mut shards: Vec<AlignedBuf> = data.iter().chain(par.iter()).cloned().collect();
            let erased: Vec<usize> = (0..e).collect();
            // Ours uses only as many parity rows as it needs (P, then Q, then R).
            let ours = rate(bytes, min, || {
                let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|b| &mut b[..]).collect();
                let _ = parity::reconstruct(&mut refs, k, p, &erased);
            });
            let theirs = isal
                .as_ref()
                .and_then(|i| isal_decode(i, &data, e, shard, min).ok());
            let what = [
                "rebuild 1 lost data shard",
                "rebuild 2 lost data shards",
                "rebuild 3 lost data shards",
            ][e - 1];
            row(what, label, ours, theirs);
        }
    }
    println!();
    Ok(())
}

/// ISA-L's decode of `e` lost data shards of an 8+3 Cauchy code: invert the surviving rows,
/// then one `ec_encode_data` pass from the k survivors.
fn isal_decode(
    i: &Isal,
    data: &[AlignedBuf],
    e: usize,
    shard: usize,
    min: Duration,
) -> Result<f64> {
    let k = data.len();
    let p = 3;
    let mut enc = i.cauchy(k, p)?;
    let mut t = i.tables(k, p, &mut enc[k * k..])?;
    let mut par: Vec<AlignedBuf> = (0..p).map(|_| AlignedBuf::zeroed(shard)).collect();
    {
        let d: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
        let mut o: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
        i.encode(k, &mut t, &d, &mut o)?;
    }
    // Survivors: data e..k, then parity 0..e.
    let survivors: Vec<usize> = (e..k).chain(k..k + e).collect();
    let mut sub = vec![0u8; k * k];
    for (r, &s) in survivors.iter().enumerate() {
        sub[r * k..(r + 1) * k].copy_from_slice(&enc[s * k..(s + 1) * k]);
    }
    let inv = i.invert(&sub, k)?;
    let mut dec = vec![0u8; e * k];
    for r in 0..e {
        dec[r * k..(r + 1) * k].copy_from_slice(&inv[r * k..(r + 1) * k]);
    }
    let mut dt = i.tables(k, e, &mut dec)?;
    let ins: Vec<&[u8]> = survivors
        .iter()
        .map(|&s| if s < k { &data[s][..] } else { &par[s - k][..] })
        .collect();
    let mut out: Vec<AlignedBuf> = (0..e).map(|_| AlignedBuf::zeroed(shard)).collect();
    let bytes = (k * shard) as u64;
    let r = rate(bytes, min, || {
        let mut o: Vec<&mut [u8]> = out.iter_mut().map(|b| &mut b[..]).collect();
        let _ = i.encode(k, &mut dt, &ins, &mut o);
    });
    anyhow::ensure!(out[0][..] == data[0][..], "ISA-L decode check failed");
    Ok(r)
}

fn row(what: &str, label: &str, ours: f64, theirs: Option<f64>) {
    match theirs {
        Some(t) => println!(
            "| {what} | {label} | {} | {} | {} |",
            gbs(ours),
            gbs(t),
            pct(ours, t)
        ),
        None => println!("| {what} | {label} | {} | - | - |", gbs(ours)),
    }
}

// ------------------------------------------------------------------------------ write amplification

/// Bytes reaching the members per byte written by the user, for small random writes and for
/// full stripes, counting everything: data, parity or copies, journal, bitmap, superblocks.
fn write_amplification(n: usize) -> Result<()> {
    use dw_blockdev::{FaultConfig, FaultDev, MemDev};
    println!(
        "## Write amplification ({n} members, 64 KiB chunks; member bytes written / user bytes)"
    );
    println!();
    println!("| level | 4 KiB random writes | full-stripe writes | where small writes go |");
    println!("|---|---|---|---|");
    for level in Level::ALL {
        if n < level.min_members() {
            continue;
        }
        let mut handles = Vec::new();
        let devs: Vec<Arc<dyn BlockDev>> = (0..n)
            .map(|i| {
                let m = Arc::new(MemDev::new(&format!("wa{i}"), 512 << 20, 4096));
                let (d, h) = FaultDev::new(m, FaultConfig::default(), None);
                handles.push(h);
                Arc::new(d) as Arc<dyn BlockDev>
            })
            .collect();
        let mut spec = CreateSpec::new(level, "wa");
        spec.chunk = 64 * 1024;
        let a = Array::create(&devs, &[], &spec)?;
        let g = a.geometry();
        let written =
            |h: &[dw_blockdev::FaultHandle]| h.iter().map(|h| h.stats().bytes_written).sum::<u64>();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let mut buf = AlignedBuf::zeroed(4096);
        fill_random(&mut buf, 3);
        // Small writes land in the small-write region (RAID-Z) or anywhere.
        let before = written(&handles);
        let count = 4000u64;
        for i in 0..count {
            let off = rng.random_range(0..g.small_write_end / 4096) * 4096;
            a.write(off, &buf)?;
            if i % 32 == 31 {
                a.flush()?;
            }
        }
        a.flush()?;
        #[allow(clippy::cast_precision_loss)]
        let small = (written(&handles) - before) as f64 / (count * 4096) as f64;
        let unit = if level.parity() > 0 {
            g.stripe_bytes
        } else {
            g.chunk * 16
        };
        let start = if g.full_stripe_only {
            g.small_write_end
        } else {
            0
        };
        let mut big = AlignedBuf::zeroed(usize::try_from(unit).unwrap_or(0));
        fill_random(&mut big, 5);
        let before = written(&handles);
        let stripes = ((g.size - start) / unit).min(200);
        for s in 0..stripes {
            a.write(start + s * unit, &big)?;
        }
        a.flush()?;
        #[allow(clippy::cast_precision_loss)]
        let full = (written(&handles) - before) as f64 / (stripes * unit) as f64;
        let place = match level {
            l if l.is_z() => "mirrored small-write region (p+1 copies)",
            Level::Raid5 | Level::Raid6 => "read-modify-write + journal",
            Level::Raid1 | Level::Raid10 => "every copy",
            _ => "in place",
        };
        println!("| {level} | {small:.2} | {full:.2} | {place} |");
    }
    println!();
    Ok(())
}

// ------------------------------------------------------------------------------ arrays

fn member_files(dir: &Path, n: usize, size: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("member{i}.img"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)?;
        f.set_len(size)?;
        out.push(p);
    }
    prealloc(&out, size)?;
    Ok(out)
}

/// Allocates every block of the files (array creation punches its data region free), so raw
/// and array runs both write into allocated space.
fn prealloc(paths: &[PathBuf], size: u64) -> Result<()> {
    for p in paths {
        let f = OpenOptions::new().write(true).open(p)?;
        nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::empty(),
            0,
            i64::try_from(size)?,
        )
        .with_context(|| format!("preallocating {}", p.display()))?;
    }
    Ok(())
}

fn open_all(paths: &[PathBuf], direct: bool) -> Result<Vec<Arc<dyn BlockDev>>> {
    paths
        .iter()
        .map(|p| {
            let d = DiskDev::open(
                p,
                DiskOptions {
                    direct: Some(direct),
                    read_only: false,
                    use_uring: true,
                },
            )?;
            Ok(Arc::new(d) as Arc<dyn BlockDev>)
        })
        .collect()
}

/// Runs `threads` workers; each calls `f(thread, iteration)` until `total` units are done
/// (shared counter) and returns elapsed time.
fn parallel(threads: usize, total: u64, f: impl Fn(usize, u64) + Sync) -> Duration {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, f) = (&next, &f);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    f(t, i);
                }
            });
        }
    });
    start.elapsed()
}

/// Random 4 KiB reads for `secs` on `threads` threads; returns IOPS.
fn rand_reads(threads: usize, secs: f64, span: u64, read: impl Fn(&mut [u8], u64) + Sync) -> f64 {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (done, read) = (&done, &read);
            s.spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(t as u64);
                let mut buf = AlignedBuf::zeroed(4096);
                let mut n = 0;
                while Instant::now() < stop {
                    for _ in 0..64 {
                        let off = rng.random_range(0..span / 4096) * 4096;
                        read(&mut buf, off);
                        n += 1;
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    per_sec(done.load(Ordering::Relaxed), start.elapsed())
}

struct Raw {
    write: f64,
    read: f64,
    iops: f64,
}

/// The raw aggregate of the member files: `unit`-sized blocks striped over them in order.
fn raw(args: &Args, devs: &[Arc<dyn BlockDev>], unit: u64, bytes: u64) -> Raw {
    let n = devs.len() as u64;
    let blocks = bytes / unit;
    let per_dev = devs[0].info().size / unit;
    let bufs: Vec<AlignedBuf> = (0..args.threads)
        .map(|t| {
            let mut b = AlignedBuf::zeroed(usize::try_from(unit).unwrap_or(0));
            fill_random(&mut b, t as u64 + 7);
            b
        })
        .collect();
    let place = |i: u64| {
        (
            usize::try_from(i % n).unwrap_or(0),
            ((i / n) % per_dev) * unit,
        )
    };
    let wt = parallel(args.threads, blocks, |t, i| {
        let (d, off) = place(i);
        devs[d].write_at(&bufs[t], off).expect("raw write");
    });
    for d in devs {
        d.flush().expect("flush");
    }
    let write = per_sec(blocks * unit, wt);
    let rbufs: Vec<std::sync::Mutex<AlignedBuf>> = (0..args.threads)
        .map(|_| std::sync::Mutex::new(AlignedBuf::zeroed(usize::try_from(unit).unwrap_or(0))))
        .collect();
    let rt = parallel(args.threads, blocks, |t, i| {
        let (d, off) = place(i);
        let mut b = rbufs[t].lock().expect("buf");
        devs[d].read_at(&mut b, off).expect("raw read");
    });
    let read = per_sec(blocks * unit, rt);
    let span = devs[0].info().size;
    let iops = rand_reads(args.threads, args.rand_secs, span * n, |b, off| {
        let d = usize::try_from(off / span).unwrap_or(0).min(devs.len() - 1);
        devs[d].read_at(b, off % span).expect("raw rand read");
    });
    Raw { write, read, iops }
}

fn arrays(args: &Args, dir: &Path, direct: bool) -> Result<()> {
    let n = args.members;
    let size = args.member_mib << 20;
    let paths = member_files(dir, n, size)?;
    let levels: Vec<Level> = if args.levels.is_empty() {
        Level::ALL.to_vec()
    } else {
        args.levels.clone()
    };
    let medium = if direct {
        "files on the disk, O_DIRECT + io_uring"
    } else {
        "files on tmpfs"
    };
    println!(
        "## Arrays over {n} x {} MiB {medium}, {} threads",
        args.member_mib, args.threads
    );
    println!();
    println!(
        "Write efficiency = (data + parity/copies reaching the members per second) / raw aggregate write. Reads = logical bytes per second / raw aggregate read."
    );
    println!();
    println!(
        "| level | raw write GB/s | array write GB/s (logical) | write efficiency | raw read GB/s | array read GB/s | read / raw | degraded read GB/s | degraded / raw | raw 4K IOPS | array 4K IOPS | IOPS / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for level in levels {
        if n < level.min_members() {
            continue;
        }
        let devs = open_all(&paths, direct)?;
        let raw = raw(args, &devs, 64 * 1024, 512 << 20);
        let mut spec = CreateSpec::new(level, "bench");
        spec.chunk = 64 * 1024;
        let a = Array::create(&devs, &[], &spec)?;
        prealloc(&paths, size)?;
        let g = a.geometry();
        let l = a.layout().clone();
        let (unit, physical, start) = match level {
            Level::Jbod | Level::Raid0 => (l.chunk * n as u64, 1.0, 0),
            Level::Raid1 => (l.chunk, n as f64, 0),
            Level::Raid10 => (l.chunk * (n / l.copies).max(1) as u64, l.copies as f64, 0),
            _ => {
                #[allow(clippy::cast_precision_loss)]
                let phys = n as f64 / l.k() as f64;
                (g.stripe_bytes, phys, g.small_write_end)
            }
        };
        // About 1 MiB per call, whole units.
        let per_call = unit * (1u64 << 20).div_ceil(unit);
        let calls = (g.size - start) / per_call;
        let budget_calls = calls.min((1u64 << 30) / per_call).max(1);
        let bytes = budget_calls * per_call;
        let wbufs: Vec<AlignedBuf> = (0..args.threads)
            .map(|t| {
                let mut b = AlignedBuf::zeroed(usize::try_from(per_call).unwrap_or(0));
                fill_random(&mut b, 100 + t as u64);
                b
            })
            .collect();
        let wt = parallel(args.threads, budget_calls, |t, i| {
            a.write(start + i * per_call, &wbufs[t])
                .expect("array write");
        });
        a.flush()?;
        let aw = per_sec(bytes, wt);
        let rbufs: Vec<std::sync::Mutex<AlignedBuf>> = (0..args.threads)
            .map(|_| {
                std::sync::Mutex::new(AlignedBuf::zeroed(usize::try_from(per_call).unwrap_or(0)))
            })
            .collect();
        let rt = parallel(args.threads, budget_calls, |t, i| {
            let mut b = rbufs[t].lock().expect("buf");
            a.read(start + i * per_call, &mut b).expect("array read");
        });
        let ar = per_sec(bytes, rt);
        let span = start + budget_calls * per_call;
        let aiops = rand_reads(args.threads, args.rand_secs, span, |b, off| {
            a.read(off, b).expect("array rand read");
        });
        a.close()?;
        drop(devs);
        // Degraded: assemble without member 0.
        let dr = if level.tolerance(n, l.copies) > 0 {
            let devs = open_all(&paths, direct)?;
            let asm = Array::assemble(
                devs[1..].to_vec(),
                &AssembleOptions {
                    auto_rebuild: false,
                    ..AssembleOptions::default()
                },
            )?;
            let a = asm.array;
            let t = parallel(args.threads, budget_calls, |t, i| {
                let mut b = rbufs[t].lock().expect("buf");
                a.read(start + i * per_call, &mut b).expect("degraded read");
            });
            drop(a);
            Some(per_sec(bytes, t))
        } else {
            None
        };
        let eff = aw * physical;
        println!(
            "| {level} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
            gbs(raw.write),
            gbs(aw),
            pct(eff, raw.write),
            gbs(raw.read),
            gbs(ar),
            pct(ar, raw.read),
            dr.map_or("-".into(), gbs),
            dr.map_or("-".into(), |d| pct(d, raw.read)),
            raw.iops,
            aiops,
            pct(aiops, raw.iops),
        );
    }
    println!();
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
