//! RAID engine benchmark (results and how to read them: docs/PERFORMANCE.md, "RAID engine").
//!
//! 1. Parity: encode and reconstruct throughput of our GF(2^8) kernels against ISA-L on the
//!    same buffers, cache-resident ("hot") and streaming from memory; the two alternate round by
//!    round and each keeps its best, so load from other processes hits both alike.
//! 2. Write amplification: member bytes written per user byte for small random writes (two
//!    passes, the first also setting write-intent bits) and full stripes, counting everything.
//! 3. Arrays: for each level over N member files (on tmpfs, and on the disk with O_DIRECT),
//!    sequential full-stripe write and read, degraded read (member 0 missing), and random
//!    4 KiB read IOPS, each next to the raw aggregate of the same N files driven the way the
//!    array drives them (one chunk-sized I/O on every member per batch, same threads, same
//!    region), raw and array alternating round by round.
//!
//! Writes are reported both ways: physical (data plus parity or copies reaching the members
//! per second, over the raw aggregate write rate) and logical (user bytes per second over the
//! same). Reads are logical bytes per second over the raw aggregate read rate.

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
use dw_blockdev::{AlignedBuf, BlockDev, DiskDev, DiskOptions, IoBuf, IoReq, run_batch};
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
    /// Skip the parity kernels and write amplification (array runs only).
    #[arg(long)]
    arrays_only: bool,
    /// Members per array.
    #[arg(long, default_value_t = 6)]
    members: usize,
    /// Size of each member file in MiB.
    #[arg(long, default_value_t = 384)]
    member_mib: u64,
    /// Threads issuing I/O (same for raw and array).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per random-read measurement (each round measures raw and array once).
    #[arg(long, default_value_t = 1.0)]
    rand_secs: f64,
    /// Levels to run (default: all).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<Level>,
    /// Rounds per level: raw and array measurements alternate round by round, and the best of
    /// each figure is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("# dw-bench-raid");
    println!();
    if !args.arrays_only {
        parity_bench()?;
        write_amplification(args.members)?;
    }
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

/// Rounds per parity measurement: ours and ISA-L alternate round by round and each keeps its
/// best, so that a burst of load from other processes on this shared machine hits both alike.
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(150);

/// Best rates of two alternating measurements.
fn duel(
    bytes: u64,
    mut ours: impl FnMut(),
    mut theirs: Option<impl FnMut()>,
) -> (f64, Option<f64>) {
    let (mut a, mut b) = (0.0f64, None::<f64>);
    for _ in 0..ROUNDS {
        a = a.max(rate(bytes, ROUND, &mut ours));
        if let Some(t) = theirs.as_mut() {
            let r = rate(bytes, ROUND, t);
            b = Some(b.map_or(r, |x: f64| x.max(r)));
        }
    }
    (a, b)
}

fn parity_bench() -> Result<()> {
    let isal = Isal::load();
    if let Err(e) = &isal {
        println!("ISA-L not available ({e}); ISA-L columns are empty");
    }
    let isal = isal.ok();
    println!(
        "## Parity kernels (single core, k = 8 data shards; GB/s of data processed; our kernel: {}; best of {ROUNDS} alternating rounds)",
        parity::kernel_name()
    );
    println!();
    println!("| operation | buffers | ours | ISA-L | ours / ISA-L |");
    println!("|---|---|---|---|---|");
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
            let mut ipar: Vec<AlignedBuf> = (0..p).map(|_| AlignedBuf::zeroed(shard)).collect();
            let ours = || {
                let mut o: Vec<&mut [u8]> = par.iter_mut().map(|b| &mut b[..]).collect();
                parity::encode(&dref, &mut o);
            };
            let (ours, theirs) = match &isal {
                Some(i) if p <= 2 => duel(
                    bytes,
                    ours,
                    Some(|| {
                        let mut o: Vec<&mut [u8]> = ipar.iter_mut().map(|b| &mut b[..]).collect();
                        let _ = i.raid_gen(&dref, &mut o);
                    }),
                ),
                Some(i) => {
                    let mut m = i.cauchy(k, p).unwrap_or_default();
                    let mut t = i.tables(k, p, &mut m[k * k..]).unwrap_or_default();
                    duel(
                        bytes,
                        ours,
                        Some(|| {
                            let mut o: Vec<&mut [u8]> =
                                ipar.iter_mut().map(|b| &mut b[..]).collect();
                            let _ = i.encode(k, &mut t, &dref, &mut o);
                        }),
                    )
                }
                None => duel(bytes, ours, None::<fn()>),
            };
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
            let ours = || {
                let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|b| &mut b[..]).collect();
                let _ = parity::reconstruct(&mut refs, k, p, &erased);
            };
            let (ours, theirs) = match isal.as_ref().map(|i| IsalDecode::new(i, &data, e)) {
                Some(Ok(mut d)) => duel(bytes, ours, Some(|| d.run())),
                _ => duel(bytes, ours, None::<fn()>),
            };
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
/// then one `ec_encode_data` pass from the k survivors (prepared once, run per round).
struct IsalDecode<'a> {
    isal: &'a Isal,
    k: usize,
    tables: Vec<u8>,
    ins: Vec<AlignedBuf>,
    out: Vec<AlignedBuf>,
}

impl<'a> IsalDecode<'a> {
    fn new(i: &'a Isal, data: &[AlignedBuf], e: usize) -> Result<Self> {
        let k = data.len();
        let p = 3;
        let shard = data[0].len();
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
        let tables = i.tables(k, e, &mut dec)?;
        let ins: Vec<AlignedBuf> = survivors
            .iter()
            .map(|&s| {
                if s < k {
                    data[s].clone()
                } else {
                    par[s - k].clone()
                }
            })
            .collect();
        let out: Vec<AlignedBuf> = (0..e).map(|_| AlignedBuf::zeroed(shard)).collect();
        let mut me = Self {
            isal: i,
            k,
            tables,
            ins,
            out,
        };
        me.run();
        anyhow::ensure!(me.out[0][..] == data[0][..], "ISA-L decode check failed");
        Ok(me)
    }

    fn run(&mut self) {
        let ins: Vec<&[u8]> = self.ins.iter().map(|b| &b[..]).collect();
        let mut o: Vec<&mut [u8]> = self.out.iter_mut().map(|b| &mut b[..]).collect();
        let _ = self.isal.encode(self.k, &mut self.tables, &ins, &mut o);
    }
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
    println!(
        "Small writes: 2 x 4000 random 4 KiB writes, a flush every 32; first pass / second pass. Everything written counts: data, parity or copies, journal, bitmap pages, superblocks. Bitmap: page writes per member per 1000 small writes (the first pass sets the bit of each region it touches; regions stay dirty while written within the idle time)."
    );
    println!();
    println!(
        "| level | 4 KiB random writes | full-stripe writes | bitmap page writes | where small writes go |"
    );
    println!("|---|---|---|---|---|");
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
        // Small writes land in the small-write region (RAID-Z) or anywhere, flushed every 32
        // writes. Two passes: the first also sets the write-intent bits of every region it
        // touches for the first time; in the second (within the bitmap's idle time) they are set.
        let count = 4000u64;
        let mut pass = || -> Result<(f64, f64)> {
            let before = written(&handles);
            let bitmap_before = a.status().counters.bitmap_writes;
            for i in 0..count {
                let off = rng.random_range(0..g.small_write_end / 4096) * 4096;
                a.write(off, &buf)?;
                if i % 32 == 31 {
                    a.flush()?;
                }
            }
            a.flush()?;
            #[allow(clippy::cast_precision_loss)]
            let amp = (written(&handles) - before) as f64 / (count * 4096) as f64;
            // Page writes per member (the counter counts one per member per page).
            #[allow(clippy::cast_precision_loss)]
            let bitmap = (a.status().counters.bitmap_writes - bitmap_before) as f64 * 1000.0
                / count as f64
                / n as f64;
            Ok((amp, bitmap))
        };
        let (small, bitmap_cold) = pass()?;
        let (small_warm, bitmap_warm) = pass()?;
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
        println!(
            "| {level} | {small:.2} / {small_warm:.2} | {full:.2} | {bitmap_cold:.1} / {bitmap_warm:.1} | {place} |"
        );
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

/// Random 4 KiB reads for `secs` on `threads` threads; returns IOPS per wall second and per
/// CPU second.
fn rand_reads(
    threads: usize,
    secs: f64,
    span: u64,
    read: impl Fn(&mut [u8], u64) + Sync,
) -> (f64, f64) {
    let c0 = cpu_secs();
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
    let done = done.load(Ordering::Relaxed);
    let cpu = (cpu_secs() - c0).max(0.01);
    (per_sec(done, start.elapsed()), done as f64 / cpu)
}

/// CPU seconds this process has used so far: every thread, including the kernel's io_uring
/// workers (they belong to the process), from /proc/self/stat (10 ms resolution).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis start at field 3; utime and stime
    // are fields 14 and 15, in clock ticks (USER_HZ = 100 on Linux).
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Runs `f` (which moves `amount` units) and returns (units per wall second, units per CPU
/// second of this process).
fn measure(amount: u64, f: impl FnOnce() -> Duration) -> (f64, f64) {
    let c0 = cpu_secs();
    let wall = f();
    let cpu = (cpu_secs() - c0).max(0.01);
    (per_sec(amount, wall), amount as f64 / cpu)
}

/// The member files driven directly, exactly as the array drives them for a full stripe: each
/// call puts one `unit`-sized I/O on every file at once (one batch through the same
/// `run_batch` the array uses), rows in order, on the same threads. The rows are the array's
/// own data region, so raw and array I/O touch the same places of the same files.
struct RawFiles<'a> {
    devs: &'a [Arc<dyn BlockDev>],
    /// Byte offset of the first row on every file.
    base: u64,
    /// Rows available.
    rows: u64,
    unit: u64,
}

impl RawFiles<'_> {
    /// Bytes one batch moves (all files together).
    fn batch_bytes(&self) -> u64 {
        self.unit * self.devs.len() as u64
    }

    /// Writes `batches` batches; returns the time taken.
    fn write(&self, threads: usize, batches: u64) -> Duration {
        let ulen = usize::try_from(self.unit).unwrap_or(0);
        let bufs: Vec<AlignedBuf> = (0..threads)
            .map(|t| {
                let mut b = AlignedBuf::zeroed(ulen);
                fill_random(&mut b, t as u64 + 7);
                b
            })
            .collect();
        parallel(threads, batches, |t, i| {
            let off = self.base + (i % self.rows) * self.unit;
            let mut reqs: Vec<IoReq<'_>> = self
                .devs
                .iter()
                .map(|d| IoReq {
                    dev: d.as_ref(),
                    offset: off,
                    buf: IoBuf::Write(&bufs[t]),
                })
                .collect();
            for r in run_batch(&mut reqs) {
                r.expect("raw write");
            }
        })
    }

    /// Reads `batches` batches; returns the time taken.
    fn read(&self, threads: usize, batches: u64) -> Duration {
        let n = self.devs.len();
        let ulen = usize::try_from(self.unit).unwrap_or(0);
        let bufs: Vec<std::sync::Mutex<Vec<AlignedBuf>>> = (0..threads)
            .map(|_| std::sync::Mutex::new((0..n).map(|_| AlignedBuf::zeroed(ulen)).collect()))
            .collect();
        parallel(threads, batches, |t, i| {
            let off = self.base + (i % self.rows) * self.unit;
            let mut b = bufs[t].lock().expect("buf");
            let mut reqs: Vec<IoReq<'_>> = self
                .devs
                .iter()
                .zip(b.iter_mut())
                .map(|(d, buf)| IoReq {
                    dev: d.as_ref(),
                    offset: off,
                    buf: IoBuf::Read(&mut buf[..]),
                })
                .collect();
            for r in run_batch(&mut reqs) {
                r.expect("raw read");
            }
        })
    }

    /// Random 4 KiB reads over the first `rows` rows of every file (the ones written: on the
    /// disk, never-written extents would read as zeros without I/O); returns IOPS.
    fn iops(&self, threads: usize, secs: f64, rows: u64) -> (f64, f64) {
        let span = rows.clamp(1, self.rows) * self.unit;
        let n = self.devs.len();
        rand_reads(threads, secs, span * n as u64, |b, off| {
            let d = usize::try_from(off / span).unwrap_or(0).min(n - 1);
            self.devs[d]
                .read_at(b, self.base + off % span)
                .expect("raw rand read");
        })
    }
}

/// Best (wall-clock rate, rate per CPU second) of one figure over the rounds.
#[derive(Default, Clone, Copy)]
struct Best(f64, f64);

impl Best {
    fn add(&mut self, (wall, cpu): (f64, f64)) {
        self.0 = self.0.max(wall);
        self.1 = self.1.max(cpu);
    }
}

/// One level's results: bytes per second, IOPS.
#[derive(Default, Clone, Copy)]
struct LevelResult {
    raw_write: Best,
    raw_read: Best,
    raw_iops: Best,
    raw_read_degraded: Best,
    write: Best,
    read: Best,
    iops: Best,
    degraded: Option<Best>,
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
        "files on tmpfs, buffered, io_uring"
    };
    let rounds = args.repeat.max(1);
    println!(
        "## Arrays over {n} x {} MiB {medium}, {} threads, 64 KiB chunks, best of {rounds} interleaved rounds",
        args.member_mib, args.threads
    );
    println!();
    println!(
        "Raw = the same {n} files, in the array's own data region, driven like a full-stripe write: one 64 KiB I/O on every file per batch (the array's `run_batch`), same threads; raw and array measurements alternate round by round and each keeps its best. Physical write = data + parity (or copies) reaching the members per second / raw write; logical = user bytes per second / raw write (physical x k/n for parity levels). Reads and degraded reads (member 0 missing) = user bytes per second / raw read. 4K IOPS: random 4 KiB reads, one per thread at a time."
    );
    println!();
    println!(
        "| level | raw write GB/s | array write GB/s (logical) | physical / raw | logical / raw | raw read GB/s | array read GB/s | read / raw | degraded read GB/s | degraded / raw | raw 4K IOPS | array 4K IOPS | IOPS / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu_rows = Vec::new();
    for level in levels {
        if n < level.min_members() {
            continue;
        }
        let (r, physical) = one_level(args, &paths, size, level, direct)?;
        println!(
            "| {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
            gbs(r.raw_write.0),
            gbs(r.write.0),
            pct(r.write.0 * physical, r.raw_write.0),
            pct(r.write.0, r.raw_write.0),
            gbs(r.raw_read.0),
            gbs(r.read.0),
            pct(r.read.0, r.raw_read.0),
            r.degraded.map_or("-".into(), |d| gbs(d.0)),
            r.degraded
                .map_or("-".into(), |d| pct(d.0, r.raw_read_degraded.0)),
            r.raw_iops.0,
            r.iops.0,
            pct(r.iops.0, r.raw_iops.0),
        );
        cpu_rows.push(format!(
            "| {level} | {} | {} | {} | {} | {} |",
            pct(r.write.1 * physical, r.raw_write.1),
            pct(r.write.1, r.raw_write.1),
            pct(r.read.1, r.raw_read.1),
            r.degraded
                .map_or("-".into(), |d| pct(d.1, r.raw_read_degraded.1)),
            pct(r.iops.1, r.raw_iops.1),
        ));
    }
    // On tmpfs every byte is CPU work, so the CPU view is the steady one on a shared machine; on
    // the disk the process mostly waits, and 10 ms CPU ticks say little.
    if !direct {
        println!();
        println!(
            "Per CPU second (bytes or I/Os per CPU second of the whole process, kernel work and io_uring workers included; array / raw): what the array costs in CPU, independent of how much CPU other processes left us."
        );
        println!();
        println!("| level | physical write | logical write | read | degraded read | 4K IOPS |");
        println!("|---|---|---|---|---|---|");
        for r in cpu_rows {
            println!("{r}");
        }
    }
    println!();
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Creates the array, then alternates raw and array measurements for `--repeat` rounds:
/// sequential full-stripe writes, sequential reads, random 4 KiB reads; then degraded reads
/// (member 0 missing) alternating with raw reads of the same files. Returns the best of each
/// and the physical/logical write factor.
fn one_level(
    args: &Args,
    paths: &[PathBuf],
    size: u64,
    level: Level,
    direct: bool,
) -> Result<(LevelResult, f64)> {
    let n = paths.len();
    let threads = args.threads;
    let rounds = args.repeat.max(1);
    let devs = open_all(paths, direct)?;
    let mut spec = CreateSpec::new(level, "bench");
    spec.chunk = 64 * 1024;
    let a = Array::create(&devs, &[], &spec)?;
    // Creation deallocates the data region; allocate it again so that raw and array writes
    // both land in allocated space.
    prealloc(paths, size)?;
    let g = a.geometry();
    let l = a.layout().clone();
    let data_offset = Array::read_superblock(devs[0].as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .data_offset;
    // One call = one full stripe (or one row of chunks): the unit whose member I/O is one
    // raw batch.
    let (unit, physical) = match level {
        Level::Jbod | Level::Raid0 => (l.chunk * n as u64, 1.0),
        Level::Raid1 => (l.chunk, n as f64),
        Level::Raid10 => (l.chunk * (n / l.copies).max(1) as u64, l.copies as f64),
        _ => (g.stripe_bytes, n as f64 / l.k() as f64),
    };
    // Stripes start after the small-write region on RAID-Z; everywhere else at 0.
    let start = if g.full_stripe_only {
        g.small_write_end
    } else {
        0
    };
    // Per round: about 512 MiB reaching the members (long enough for the 10 ms CPU clock).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let logical_budget = ((512u64 << 20) as f64 / physical) as u64;
    let calls = ((g.size - start) / unit).min(logical_budget / unit).max(1);
    let bytes = calls * unit;
    let raw = RawFiles {
        devs: &devs,
        base: data_offset,
        rows: l.rows,
        unit: l.chunk,
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let raw_batches = ((bytes as f64 * physical) as u64 / (l.chunk * n as u64)).max(1);
    let ulen = usize::try_from(unit).unwrap_or(0);
    let wbufs: Vec<AlignedBuf> = (0..threads)
        .map(|t| {
            let mut b = AlignedBuf::zeroed(ulen);
            fill_random(&mut b, 100 + t as u64);
            b
        })
        .collect();
    let rbufs: Vec<std::sync::Mutex<AlignedBuf>> = (0..threads)
        .map(|_| std::sync::Mutex::new(AlignedBuf::zeroed(ulen)))
        .collect();
    let mut r = LevelResult::default();
    let raw_bytes = raw_batches * raw.batch_bytes();
    for _ in 0..rounds {
        r.raw_write
            .add(measure(raw_bytes, || raw.write(threads, raw_batches)));
        r.write.add(measure(bytes, || {
            parallel(threads, calls, |t, i| {
                a.write(start + i * unit, &wbufs[t]).expect("array write");
            })
        }));
        r.raw_read
            .add(measure(raw_bytes, || raw.read(threads, raw_batches)));
        r.read.add(measure(bytes, || {
            parallel(threads, calls, |t, i| {
                let mut b = rbufs[t].lock().expect("buf");
                a.read(start + i * unit, &mut b).expect("array read");
            })
        }));
        // Both over what the writes above covered: the same number of member rows.
        r.raw_iops
            .add(raw.iops(threads, args.rand_secs, raw_batches));
        r.iops
            .add(rand_reads(threads, args.rand_secs, bytes, |b, off| {
                a.read(start + off, b).expect("array rand read");
            }));
    }
    a.close()?;
    // Degraded: assemble without member 0; raw reads of the same files alternate with it.
    if level.tolerance(n, l.copies) > 0 {
        let asm = Array::assemble(
            devs[1..].to_vec(),
            &AssembleOptions {
                auto_rebuild: false,
                ..AssembleOptions::default()
            },
        )?;
        let a = asm.array;
        let mut best = Best::default();
        for _ in 0..rounds {
            r.raw_read_degraded
                .add(measure(raw_bytes, || raw.read(threads, raw_batches)));
            best.add(measure(bytes, || {
                parallel(threads, calls, |t, i| {
                    let mut b = rbufs[t].lock().expect("buf");
                    a.read(start + i * unit, &mut b).expect("degraded read");
                })
            }));
        }
        r.degraded = Some(best);
    }
    Ok((r, physical))
}
