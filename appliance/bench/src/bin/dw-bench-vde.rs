//! VDE benchmark.
//!
//! 1. AEAD choice: AES-256-GCM from `ring` (what the VDE uses) next to the RustCrypto
//!    `aes-gcm` crate, on 4 KiB and 128 KiB buffers.
//! 2. Data path: the per-extent encode (compress when it pays, encrypt, checksum) and decode
//!    (verify, decrypt, decompress) of every profile, through the engine's own code
//!    (`dw_vde::bench::Codec`), in µs per KiB, next to the sum of the raw primitives (zstd,
//!    ring, BLAKE3, memcpy) run on the same records in the same run, on one thread and on two.
//! 3. Objects: put and get of 4 KiB, 1 MiB and 64 MiB objects per profile on a VDE over a file
//!    (tmpfs by default), next to the raw file's write and read rate measured right before,
//!    combined with the per-byte primitive cost of the profile (and MD5, which S3 ETags need);
//!    and 1 MiB puts from two client threads against one.
//! 4. Write amplification: bytes written to the device(s) per logical byte for 4 KiB volume
//!    writes (flushed after each write, and every 256), 4 KiB, 1 MiB and 64 MiB objects, on a
//!    plain memory device and on a 6-member RAID-Z2 array of memory devices; split by VDE
//!    region (data segments, intent log, metadata) as the VDE writes them, and in total as
//!    the members receive them (mirroring and parity included).
//!
//! Data is a deterministic mix of log-like text and random blocks (zstd-3 ratio about 2.5).

// Rates and ratios are floating point; byte counts here are far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use anyhow::{Context, Result};
use clap::Parser;
use dw_bench::{fill_random, per_sec};
use dw_blockdev::{AlignedBuf, BlockDev, DiskDev, DiskOptions};
use dw_vde::bench::Codec;
use dw_vde::{ContainerKind, ContainerSpec, FormatOptions, MasterKey, Policy, Profile, PutOptions};
use md5::Digest;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the VDE data path and object I/O against the raw primitives")]
struct Args {
    /// Directory for the VDE's backing file (tmpfs measures the CPU path).
    #[arg(long, default_value = "/dev/shm/dw-bench-vde")]
    dir: PathBuf,
    /// Backing file size in MiB.
    #[arg(long, default_value_t = 2048)]
    device_mib: u64,
    /// Minimum seconds per data-path measurement.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Skip the object section.
    #[arg(long)]
    codec_only: bool,
    /// Object sizes to run: any of 4k, 1m, 64m (default: all).
    #[arg(long, value_delimiter = ',')]
    objects: Vec<String>,
    /// Profiles (default: all).
    #[arg(long, value_delimiter = ',')]
    profiles: Vec<String>,
    /// Skip the write-amplification section.
    #[arg(long)]
    skip_wa: bool,
    /// Run only the write-amplification section.
    #[arg(long)]
    wa_only: bool,
    /// Passes of each object workload (fresh VDE each); the best is reported.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
}

const ORIGINAL_US_PER_KIB: [(Profile, f64); 3] = [
    (Profile::Speed, 12.0),
    (Profile::Standard, 50.0),
    (Profile::Paranoid, 590.0),
];

fn main() -> Result<()> {
    let args = Args::parse();
    let profiles: Vec<Profile> = if args.profiles.is_empty() {
        Profile::ALL.to_vec()
    } else {
        args.profiles
            .iter()
            .map(|p| {
                Profile::ALL
                    .iter()
                    .copied()
                    .find(|x| x.name() == p.to_lowercase())
                    .with_context(|| format!("unknown profile {p}"))
            })
            .collect::<Result<_>>()?
    };
    let min = Duration::from_secs_f64(args.secs);
    let corpus = corpus(16 << 20);

    println!("# dw-bench-vde\n");
    if args.wa_only {
        return write_amplification();
    }
    aead_choice(min);
    let mut per_byte = Vec::new();
    println!(
        "## Data path per KiB (µs/KiB; ratio = data path / sum of primitives, same records)\n"
    );
    println!(
        "| profile | record | stored/logical | encode | primitives | ratio | decode | primitives | ratio | encode 2 threads vs 1 | vs original design |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &p in &profiles {
        for record in [4096usize, 128 * 1024] {
            // Three rounds of the whole case, best of each component: the data path and its
            // primitives then see the same (shared, noisy) machine, a few seconds apart.
            let mut r = codec_case(p, record, &corpus, min)?;
            for _ in 0..2 {
                let again = codec_case(p, record, &corpus, min)?;
                r.enc_us = r.enc_us.min(again.enc_us);
                r.enc_prim_us = r.enc_prim_us.min(again.enc_prim_us);
                r.dec_us = r.dec_us.min(again.dec_us);
                r.dec_prim_us = r.dec_prim_us.min(again.dec_prim_us);
                r.two_thread_scaling = r.two_thread_scaling.max(again.two_thread_scaling);
            }
            let orig = ORIGINAL_US_PER_KIB
                .iter()
                .find(|(q, _)| *q == p)
                .map_or("-".to_owned(), |(_, us)| {
                    format!("{:.0}x faster", us / r.enc_us)
                });
            println!(
                "| {} | {} KiB | {:.2} | {:.3} | {:.3} | {:.2}x | {:.3} | {:.3} | {:.2}x | {:.2}x | {orig} |",
                p.name(),
                record / 1024,
                r.ratio,
                r.enc_us,
                r.enc_prim_us,
                r.enc_us / r.enc_prim_us,
                r.dec_us,
                r.dec_prim_us,
                r.dec_us / r.dec_prim_us,
                r.two_thread_scaling,
            );
            if record == 128 * 1024 {
                per_byte.push((p, r));
            }
        }
    }
    println!();
    if args.codec_only {
        return Ok(());
    }
    objects(&args, &profiles, &per_byte, &corpus)?;
    two_clients(&args, &profiles, &corpus)?;
    if !args.skip_wa {
        write_amplification()?;
    }
    Ok(())
}

/// Log-like text interleaved with random blocks.
fn corpus(len: usize) -> Vec<u8> {
    let words = [
        "GET",
        "PUT",
        "DELETE",
        "/bucket/photos/",
        "/volumes/db0",
        "status=200",
        "status=404",
        "bytes=",
        "user=alice",
        "user=bob",
        "latency_ms=",
        "region=eu-west",
        "INFO",
        "WARN",
        "request_id=",
        "storage-node-",
        "object",
        "etag=",
    ];
    let mut out = Vec::with_capacity(len);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while out.len() < len {
        let r = next();
        if r % 16 == 0 {
            let mut b = vec![0u8; 512];
            fill_random(&mut b, next());
            out.extend_from_slice(&b);
            continue;
        }
        out.extend_from_slice(
            format!(
                "2026-11-22T{:02}:{:02}:{:02}.{:03}Z ",
                r % 24,
                r / 24 % 60,
                r / 1440 % 60,
                r % 1000
            )
            .as_bytes(),
        );
        for i in 0..6 {
            let w = words[usize::try_from((r >> (i * 5)) % words.len() as u64).unwrap_or(0)];
            out.extend_from_slice(w.as_bytes());
            out.extend_from_slice(format!("{:x} ", next() % 100_000).as_bytes());
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

fn aead_choice(min: Duration) {
    println!("## AES-256-GCM implementation (single core, seal in place)\n");
    println!("| buffer | ring GB/s | aes-gcm (RustCrypto) GB/s | ring advantage |");
    println!("|---|---|---|---|");
    let key = [7u8; 32];
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key)
            .unwrap_or_else(|_| unreachable!()),
    );
    let rc = aes_gcm::Aes256Gcm::new(&key.into());
    for size in [4096usize, 128 * 1024] {
        let mut buf = vec![0u8; size];
        fill_random(&mut buf, 3);
        let mut n = 0u64;
        let ring_rate = dw_bench::rate(size as u64, min, || {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            let t = ring_key.seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&[1u8; 56]),
                &mut buf,
            );
            std::hint::black_box(t.is_ok());
        });
        let rc_rate = dw_bench::rate(size as u64, min, || {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            let t = rc.encrypt_inout_detached(&nonce.into(), &[1u8; 56], (&mut buf[..]).into());
            std::hint::black_box(t.is_ok());
        });
        println!(
            "| {} KiB | {:.2} | {:.2} | {:.1}x |",
            size / 1024,
            ring_rate / 1e9,
            rc_rate / 1e9,
            ring_rate / rc_rate
        );
    }
    println!();
}

struct CodecResult {
    ratio: f64,
    enc_us: f64,
    enc_prim_us: f64,
    dec_us: f64,
    dec_prim_us: f64,
    two_thread_scaling: f64,
}

/// Encoded records of one case, for the decode and primitive loops.
struct Prepared {
    records: Vec<(usize, usize)>,
    stored: Vec<(Vec<u8>, dw_vde::bench::Encoded)>,
}

fn prepare(codec: &Codec, corpus: &[u8], record: usize) -> Prepared {
    // 2 MiB of records spread over the corpus: a pass takes a few milliseconds, so that on a
    // shared machine many passes run undisturbed and the best one is a clean measurement.
    let all = corpus.len() / record;
    let want = ((2 << 20) / record).clamp(16, all);
    let records: Vec<(usize, usize)> = (0..all)
        .step_by(all / want)
        .take(want)
        .map(|i| (i * record, record))
        .collect();
    let mut buf = vec![0u8; codec.max_len(record)];
    let stored = records
        .iter()
        .enumerate()
        .map(|(i, &(o, l))| {
            let e = codec.encode(i as u64, &corpus[o..o + l], &mut buf);
            (buf[..e.len].to_vec(), e)
        })
        .collect();
    Prepared { records, stored }
}

/// Runs `f` (one pass over all records) repeatedly for at least `min`; returns µs per KiB of
/// logical data of the fastest pass. The machine is shared: a pass that other processes
/// preempted is slower, never faster, so the best pass is the least disturbed measurement.
fn us_per_kib(logical: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut best = f64::INFINITY;
    while start.elapsed() < min || rounds < 3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        rounds += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let kib = logical as f64 / 1024.0;
    best * 1e6 / kib
}

fn codec_case(p: Profile, record: usize, corpus: &[u8], min: Duration) -> Result<CodecResult> {
    let codec = Codec::for_profile(p);
    let prep = prepare(&codec, corpus, record);
    let logical: usize = prep.records.iter().map(|r| r.1).sum();
    let stored_total: usize = prep.stored.iter().map(|s| s.1.len).sum();
    #[allow(clippy::cast_precision_loss)]
    let ratio = stored_total as f64 / logical as f64;

    // The engine's encode.
    let mut buf = vec![0u8; codec.max_len(record)];
    let enc_us = us_per_kib(logical, min, || {
        for (i, &(o, l)) in prep.records.iter().enumerate() {
            std::hint::black_box(codec.encode(i as u64, &corpus[o..o + l], &mut buf));
        }
    });

    // Primitives on the same records with the same decisions.
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[9u8; 32])
            .unwrap_or_else(|_| unreachable!()),
    );
    let mut prim = 0.0;
    if let Some(level) = codec.level() {
        let mut z = zstd::bulk::Compressor::new(level)?;
        prim += us_per_kib(logical, min, || {
            for &(o, l) in &prep.records {
                std::hint::black_box(z.compress_to_buffer(&corpus[o..o + l], &mut buf[..]).ok());
            }
        });
    }
    // Records stored uncompressed are copied into the segment buffer.
    let copied: Vec<(usize, usize)> = prep
        .records
        .iter()
        .zip(&prep.stored)
        .filter(|(_, s)| s.1.flags & dw_vde::records::EXT_COMPRESSED == 0)
        .map(|(r, _)| *r)
        .collect();
    if !copied.is_empty() {
        prim += us_per_kib(logical, min, || {
            for &(o, l) in &copied {
                buf[..l].copy_from_slice(&corpus[o..o + l]);
                std::hint::black_box(&buf);
            }
        });
    }
    let mut scratch: Vec<Vec<u8>> = prep.stored.iter().map(|s| s.0.clone()).collect();
    let tag = 16;
    if codec.encrypts() {
        let mut n = 0u64;
        prim += us_per_kib(logical, min, || {
            for s in &mut scratch {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                let len = s.len() - tag;
                let t = key.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&[1u8; 56]),
                    &mut s[..len],
                );
                std::hint::black_box(t.is_ok());
            }
        });
    }
    let hash_us = us_per_kib(logical, min, || {
        for s in &prep.stored {
            std::hint::black_box(blake3::hash(&s.0));
        }
    });
    let enc_prim_us = prim + hash_us;

    // Decode through the engine's code.
    let mut work: Vec<Vec<u8>> = prep.stored.iter().map(|s| s.0.clone()).collect();
    let mut out = Vec::with_capacity(record);
    let mut failed = None;
    let dec_us = us_per_kib(logical, min, || {
        for (i, (s, w)) in prep.stored.iter().zip(&mut work).enumerate() {
            // Decryption works in place: restore the ciphertext first (copied in the
            // primitive sum below too).
            w.copy_from_slice(&s.0);
            if let Err(e) = codec.decode(i as u64, &s.1, w, record, &mut out) {
                failed = Some(e);
            }
            std::hint::black_box(&out);
        }
    });
    if let Some(e) = failed {
        anyhow::bail!("decode failed: {e}");
    }
    let mut dprim = 0.0;
    dprim += us_per_kib(logical, min, || {
        for (s, w) in prep.stored.iter().zip(&mut work) {
            w.copy_from_slice(&s.0);
        }
        std::hint::black_box(&work);
    });
    if codec.verifies() {
        dprim += hash_us;
    }
    if codec.encrypts() {
        // Opening costs what sealing costs (same AES-CTR + GHASH passes); measured directly
        // on fresh ciphertext.
        let mut n = 0u64;
        let sealed: Vec<(Vec<u8>, [u8; 12])> = prep
            .stored
            .iter()
            .map(|s| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&n.to_le_bytes());
                let mut v = s.0[..s.0.len() - tag].to_vec();
                let t = key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(&[1u8; 56]),
                        &mut v,
                    )
                    .map_or([0u8; 16], |t| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(t.as_ref());
                        a
                    });
                v.extend_from_slice(&t);
                (v, nonce)
            })
            .collect();
        let mut w2: Vec<Vec<u8>> = sealed.iter().map(|s| s.0.clone()).collect();
        let open_and_copy = us_per_kib(logical, min, || {
            for (s, w) in sealed.iter().zip(&mut w2) {
                w.copy_from_slice(&s.0);
                let r = key.open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(s.1),
                    ring::aead::Aad::from(&[1u8; 56]),
                    w,
                );
                std::hint::black_box(r.is_ok());
            }
        });
        // The restore copy is already counted above.
        let copy_only = us_per_kib(logical, min, || {
            for (s, w) in sealed.iter().zip(&mut w2) {
                w.copy_from_slice(&s.0);
            }
            std::hint::black_box(&w2);
        });
        dprim += (open_and_copy - copy_only).max(0.0);
    }
    let mut d = zstd::bulk::Decompressor::new()?;
    let plain_for_copy: Vec<&[u8]> = prep
        .records
        .iter()
        .map(|&(o, l)| &corpus[o..o + l])
        .collect();
    // Decompressing (or, for records stored plain, copying) into the output.
    let plain_stored: Vec<(Vec<u8>, bool)> = prep
        .stored
        .iter()
        .zip(&plain_for_copy)
        .map(|(s, p)| {
            if s.1.flags & dw_vde::records::EXT_COMPRESSED != 0 {
                let mut z = zstd::bulk::Compressor::new(codec.level().unwrap_or(3))
                    .unwrap_or_else(|_| unreachable!());
                (z.compress(p).unwrap_or_default(), true)
            } else {
                (p.to_vec(), false)
            }
        })
        .collect();
    dprim += us_per_kib(logical, min, || {
        for (s, compressed) in &plain_stored {
            out.clear();
            if *compressed {
                std::hint::black_box(d.decompress_to_buffer(s, &mut out).ok());
            } else {
                out.extend_from_slice(s);
            }
        }
        std::hint::black_box(&out);
    });

    // Two threads, each its own share of the records.
    let half = prep.records.len() / 2;
    let one = us_per_kib(logical / 2, min, || {
        for (i, &(o, l)) in prep.records[..half].iter().enumerate() {
            std::hint::black_box(codec.encode(i as u64, &corpus[o..o + l], &mut buf));
        }
    });
    let two = std::thread::scope(|s| {
        let hs: Vec<_> = [&prep.records[..half], &prep.records[half..2 * half]]
            .into_iter()
            .map(|part| {
                let codec = &codec;
                s.spawn(move || {
                    let mut b = vec![0u8; codec.max_len(record)];
                    us_per_kib(logical / 2, min, || {
                        for (i, &(o, l)) in part.iter().enumerate() {
                            std::hint::black_box(codec.encode(i as u64, &corpus[o..o + l], &mut b));
                        }
                    })
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(f64::INFINITY))
            .collect::<Vec<_>>()
    });
    // Aggregate throughput of two threads relative to one.
    let scaling = two.iter().map(|us| one / us).sum::<f64>();
    Ok(CodecResult {
        ratio,
        enc_us,
        enc_prim_us,
        dec_us,
        dec_prim_us: dprim,
        two_thread_scaling: scaling,
    })
}

fn objects(
    args: &Args,
    profiles: &[Profile],
    per_byte: &[(Profile, CodecResult)],
    corpus: &[u8],
) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let path = args.dir.join("vde.img");
    let size = args.device_mib << 20;
    let md5_us = {
        let block = &corpus[..1 << 20];
        us_per_kib(block.len(), Duration::from_secs_f64(args.secs), || {
            std::hint::black_box(md5::Md5::digest(block));
        })
    };
    println!(
        "## Objects on a VDE over a {} MiB file in {} (single client thread)\n",
        args.device_mib,
        args.dir.display()
    );
    println!(
        "MD5 (S3 ETag) measured at {md5_us:.3} µs/KiB. Baseline per object = raw file write (or read) of the stored bytes at the rate measured right before + primitive data-path cost of the profile (+ MD5 on put) + for puts, one flush.\n"
    );
    println!(
        "| profile | object | objects | put MB/s | put baseline MB/s | put ratio | get MB/s | get baseline MB/s | get ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &p in profiles {
        let Some((_, cr)) = per_byte.iter().find(|(q, _)| *q == p) else {
            continue;
        };
        for (label, obj, count) in [
            ("4 KiB", 4096usize, 2000usize),
            ("1 MiB", 1 << 20, 200),
            ("64 MiB", 64 << 20, 6),
        ] {
            let tag = label
                .replace(' ', "")
                .replace("KiB", "k")
                .replace("MiB", "m");
            if !args.objects.is_empty() && !args.objects.iter().any(|o| o.to_lowercase() == tag) {
                continue;
            }
            // Best of `repeat` passes, each on a fresh file and VDE (shared, noisy machine).
            let (mut raw_w, mut raw_r) = (0.0f64, 0.0f64);
            let (mut put_el, mut get_el) = (Duration::MAX, Duration::MAX);
            let mut dev_kept: Option<Arc<dyn BlockDev>> = None;
            for _ in 0..args.repeat.max(1) {
                let _ = std::fs::remove_file(&path);
                let f = std::fs::File::create(&path)?;
                f.set_len(size)?;
                drop(f);
                let dev: Arc<dyn BlockDev> =
                    Arc::new(DiskDev::open(&path, DiskOptions::default())?);
                // Raw baseline on the same file: sequential writes of the object size (1 MiB
                // chunks) and a flush per object, then reads.
                let chunk = obj.min(1 << 20);
                let mut ab = AlignedBuf::zeroed(chunk);
                fill_random(&mut ab, 5);
                let raw_bytes = (count * obj).min(256 << 20) as u64;
                let t = Instant::now();
                let mut off = 0u64;
                while off < raw_bytes {
                    dev.write_at(&ab, off)?;
                    off += chunk as u64;
                    if off.is_multiple_of(obj as u64) {
                        dev.flush()?;
                    }
                }
                raw_w = raw_w.max(per_sec(raw_bytes, t.elapsed()));
                let t = Instant::now();
                let mut off = 0u64;
                while off < raw_bytes {
                    dev.read_at(&mut ab, off)?;
                    off += chunk as u64;
                }
                raw_r = raw_r.max(per_sec(raw_bytes, t.elapsed()));

                let backing = dw_vde::plain_backing(Arc::clone(&dev));
                let key = MasterKey::from_bytes([0x42; 32], 1);
                let vde = dw_vde::Vde::format(
                    backing,
                    &key,
                    &FormatOptions {
                        label: "bench".into(),
                        admin_contact: String::new(),
                        policy: Policy {
                            profile: Some(p),
                            ..Policy::default()
                        },
                        metadata_bytes: None,
                        log_bytes: None,
                        identity: None,
                    },
                )?;
                vde.create_container(
                    "b",
                    &ContainerSpec {
                        kind: ContainerKind::Bucket,
                        policy: Policy::default(),
                        record_size: None,
                    },
                )?;
                let span = corpus.len() - obj.min(corpus.len());
                let body_at = |i: usize| (i * 7919 * 4096) % span.max(1);
                let mut big = Vec::new();
                if obj > corpus.len() {
                    while big.len() < obj {
                        big.extend_from_slice(corpus);
                    }
                    big.truncate(obj);
                }
                let t = Instant::now();
                for i in 0..count {
                    let body: &[u8] = if obj > corpus.len() {
                        &big
                    } else {
                        &corpus[body_at(i)..body_at(i) + obj]
                    };
                    vde.put_object(
                        "b",
                        &format!("o{i:06}"),
                        &PutOptions::default(),
                        &mut &body[..],
                    )?;
                }
                put_el = put_el.min(t.elapsed());
                let mut sink = vec![0u8; 1 << 20];
                let t = Instant::now();
                for i in 0..count {
                    let (_, mut r) = vde.get_object("b", &format!("o{i:06}"), None)?;
                    loop {
                        let n = r.read(&mut sink)?;
                        if n == 0 {
                            break;
                        }
                    }
                }
                get_el = get_el.min(t.elapsed());
                vde.close()?;
                dev_kept = Some(dev);
            }
            let Some(dev) = dev_kept else {
                continue;
            };
            let total = (count * obj) as u64;
            #[allow(clippy::cast_precision_loss)]
            let per_kib_s = |us: f64| us * 1e-6 * (obj as f64 / 1024.0);
            #[allow(clippy::cast_precision_loss)]
            let objf = obj as f64;
            let flush_s = {
                let t = Instant::now();
                for _ in 0..50 {
                    dev.flush()?;
                }
                t.elapsed().as_secs_f64() / 50.0
            };
            let put_base_s = objf * cr.ratio / raw_w + per_kib_s(cr.enc_prim_us + md5_us) + flush_s;
            let get_base_s = objf * cr.ratio / raw_r + per_kib_s(cr.dec_prim_us);
            let put = per_sec(total, put_el);
            let get = per_sec(total, get_el);
            println!(
                "| {} | {label} | {count} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
                p.name(),
                put / 1e6,
                objf / put_base_s / 1e6,
                put * put_base_s / objf,
                get / 1e6,
                objf / get_base_s / 1e6,
                get * get_base_s / objf,
            );
        }
    }
    let _ = std::fs::remove_file(&path);
    println!();
    Ok(())
}

/// A VDE on a fresh file of the benchmark's size, with one bucket of the profile.
fn bench_vde(args: &Args, p: Profile) -> Result<(dw_vde::Vde, PathBuf)> {
    std::fs::create_dir_all(&args.dir)?;
    let path = args.dir.join("vde2.img");
    let _ = std::fs::remove_file(&path);
    let f = std::fs::File::create(&path)?;
    f.set_len(args.device_mib << 20)?;
    drop(f);
    let dev: Arc<dyn BlockDev> = Arc::new(DiskDev::open(&path, DiskOptions::default())?);
    let vde = dw_vde::Vde::format(
        dw_vde::plain_backing(dev),
        &MasterKey::from_bytes([0x42; 32], 1),
        &FormatOptions {
            policy: Policy {
                profile: Some(p),
                ..Policy::default()
            },
            ..FormatOptions::default()
        },
    )?;
    vde.create_container(
        "b",
        &ContainerSpec {
            kind: ContainerKind::Bucket,
            policy: Policy::default(),
            record_size: None,
        },
    )?;
    Ok((vde, path))
}

/// 1 MiB puts from one client thread, then from two (each its own keys): does the engine use
/// both cores when there is parallel work?
fn two_clients(args: &Args, profiles: &[Profile], corpus: &[u8]) -> Result<()> {
    if !args.objects.is_empty() && !args.objects.iter().any(|o| o.to_lowercase() == "1m") {
        return Ok(());
    }
    println!("## 1 MiB object puts: two client threads against one\n");
    println!("| profile | put MB/s 1 thread | put MB/s 2 threads | scaling |");
    println!("|---|---|---|---|");
    let obj = 1usize << 20;
    let count = 200usize;
    for &p in profiles {
        let mut rates = [0.0f64; 2];
        for pass in 0..2 * args.repeat.max(1) {
            // Interleaved one thread / two threads, best of each.
            let threads = 1 + pass % 2;
            let (vde, path) = bench_vde(args, p)?;
            let t = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let hs: Vec<_> = (0..threads)
                    .map(|th| {
                        let vde = &vde;
                        s.spawn(move || -> Result<()> {
                            for i in 0..count / threads {
                                let at = ((th * count + i) * 7919 * 4096) % (corpus.len() - obj);
                                vde.put_object(
                                    "b",
                                    &format!("t{th}-{i:06}"),
                                    &PutOptions::default(),
                                    &mut &corpus[at..at + obj],
                                )?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in hs {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
                }
                Ok(())
            })?;
            rates[threads - 1] = rates[threads - 1].max(per_sec((count * obj) as u64, t.elapsed()));
            vde.close()?;
            let _ = std::fs::remove_file(&path);
        }
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x |",
            p.name(),
            rates[0] / 1e6,
            rates[1] / 1e6,
            rates[1] / rates[0]
        );
    }
    println!();
    Ok(())
}

/// Bytes written, by VDE region.
#[derive(Debug, Default)]
struct Written {
    fixed: std::sync::atomic::AtomicU64,
    metadata: std::sync::atomic::AtomicU64,
    log: std::sync::atomic::AtomicU64,
    data: std::sync::atomic::AtomicU64,
    /// Region starts: metadata, log, data (set after format).
    bounds: std::sync::Mutex<[u64; 3]>,
}

impl Written {
    fn add(&self, off: u64, len: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let b = *self
            .bounds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = if off >= b[2] {
            &self.data
        } else if off >= b[1] {
            &self.log
        } else if off >= b[0] {
            &self.metadata
        } else {
            &self.fixed
        };
        c.fetch_add(len, Relaxed);
    }

    fn take(&self) -> [u64; 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            self.fixed.swap(0, Relaxed),
            self.metadata.swap(0, Relaxed),
            self.log.swap(0, Relaxed),
            self.data.swap(0, Relaxed),
        ]
    }
}

/// A device that counts what the VDE writes to it, by region.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn BlockDev>,
    written: Arc<Written>,
}

impl BlockDev for Counting {
    fn info(&self) -> &dw_blockdev::DevInfo {
        self.inner.info()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), dw_blockdev::IoError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), dw_blockdev::IoError> {
        self.written.add(offset, buf.len() as u64);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), dw_blockdev::IoError> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), dw_blockdev::IoError> {
        self.inner.discard(offset, len)
    }
}

/// A backing whose device is counted; redundancy requests go to the real backing.
#[derive(Debug)]
struct CountingBacking {
    inner: Arc<dyn dw_vde::Backing>,
    dev: Counting,
}

impl dw_vde::Backing for CountingBacking {
    fn dev(&self) -> &dyn BlockDev {
        &self.dev
    }
    fn geometry(&self) -> dw_vde::BackingGeometry {
        self.inner.geometry()
    }
    fn alternatives(&self, off: u64, len: u64) -> Result<Vec<Vec<u8>>, dw_blockdev::IoError> {
        self.inner.alternatives(off, len)
    }
    fn repair(&self, off: u64, good: &[u8]) -> Result<(), dw_blockdev::IoError> {
        self.inner.repair(off, good)
    }
}

/// A VDE on counted memory devices: (VDE, region counters, member fault handles).
fn wa_rig(raid: bool) -> Result<(dw_vde::Vde, Arc<Written>, Vec<dw_blockdev::FaultHandle>)> {
    let members = if raid { 6 } else { 1 };
    let size = if raid { 512u64 << 20 } else { 2u64 << 30 };
    let mut handles = Vec::new();
    let devs: Vec<Arc<dyn BlockDev>> = (0..members)
        .map(|i| {
            let mem = Arc::new(dw_blockdev::MemDev::new(&format!("m{i}"), size, 4096));
            let (f, h) = dw_blockdev::FaultDev::new(mem, dw_blockdev::FaultConfig::default(), None);
            handles.push(h);
            Arc::new(f) as Arc<dyn BlockDev>
        })
        .collect();
    let written = Arc::new(Written::default());
    let backing: Arc<dyn dw_vde::Backing> = if raid {
        let mut spec = dw_raid::CreateSpec::new(dw_raid::Level::RaidZ2, "wa");
        spec.chunk = 64 * 1024;
        let array = Arc::new(dw_raid::Array::create(&devs, &[], &spec)?);
        let ab: Arc<dyn dw_vde::Backing> = Arc::new(dw_vde::ArrayBacking::new(array.clone()));
        Arc::new(CountingBacking {
            inner: ab,
            dev: Counting {
                inner: array,
                written: written.clone(),
            },
        })
    } else {
        let counted: Arc<dyn BlockDev> = Arc::new(Counting {
            inner: devs[0].clone(),
            written: written.clone(),
        });
        dw_vde::plain_backing(counted)
    };
    let vde = dw_vde::Vde::format(
        backing.clone(),
        &MasterKey::from_bytes([0x42; 32], 1),
        &FormatOptions::default(),
    )?;
    let rd = dw_blockdev::read_vec(backing.dev(), dw_vde::format::REGDIR_A, 4096)?;
    let rd = dw_vde::format::RegionDirectory::decode(&rd, backing.geometry().size)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = |k| {
        rd.get(k)
            .map_or(u64::MAX, |r: dw_vde::format::Region| r.offset)
    };
    *written
        .bounds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = [
        start(dw_vde::format::RegionKind::Metadata),
        start(dw_vde::format::RegionKind::Log),
        start(dw_vde::format::RegionKind::Data),
    ];
    Ok((vde, written, handles))
}

#[derive(Debug, Clone, Copy)]
enum WaLoad {
    /// 4 KiB random volume writes, flushed every n writes.
    Volume4k { flush_every: u64 },
    /// Objects of this size, each put durable when it returns.
    Objects { size: usize },
}

fn wa_case(raid: bool, load: WaLoad) -> Result<(u64, [u64; 4], u64)> {
    let (vde, written, handles) = wa_rig(raid)?;
    let mut logical = 0u64;
    let mut body = vec![0u8; 64 << 20];
    fill_random(&mut body, 9);
    match load {
        WaLoad::Volume4k { flush_every } => {
            let size = 256u64 << 20;
            vde.create_container(
                "v",
                &ContainerSpec {
                    kind: ContainerKind::Volume { size },
                    policy: Policy::default(),
                    record_size: None,
                },
            )?;
            let vol = vde.volume("v")?;
            // Steady state: the volume written once before measuring.
            for blk in (0..size).step_by(1 << 20) {
                vol.write_at(&body[..1 << 20], blk)?;
            }
            vol.flush()?;
            written.take();
            for h in &handles {
                h.reset_stats();
            }
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..8192u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let blk = x % (size / 4096);
                let at = usize::try_from(i % 4096).unwrap_or(0) * 4096;
                vol.write_at(&body[at..at + 4096], blk * 4096)?;
                logical += 4096;
                if (i + 1) % flush_every == 0 {
                    vol.flush()?;
                }
            }
            vol.flush()?;
        }
        WaLoad::Objects { size } => {
            vde.create_container(
                "b",
                &ContainerSpec {
                    kind: ContainerKind::Bucket,
                    policy: Policy::default(),
                    record_size: None,
                },
            )?;
            written.take();
            for h in &handles {
                h.reset_stats();
            }
            let total = (64u64 << 20).max(size as u64 * 4);
            let mut i = 0usize;
            while logical < total {
                let at = (i * 4096) % (body.len() - size + 1);
                vde.put_object(
                    "b",
                    &format!("o{i:06}"),
                    &PutOptions::default(),
                    &mut &body[at..at + size],
                )?;
                logical += size as u64;
                i += 1;
            }
        }
    }
    let by_region = written.take();
    let members: u64 = handles.iter().map(|h| h.stats().bytes_written).sum();
    drop(vde);
    Ok((logical, by_region, members))
}

fn write_amplification() -> Result<()> {
    println!("## Write amplification (bytes written / logical bytes)\n");
    println!(
        "Default policy (no compression or encryption: stored = logical). Memory devices; RAID-Z2 is 6 members, 64 KiB chunks (4 data + 2 parity per stripe; its small-write region keeps 3 copies). `VDE` = what the VDE writes to its device (data segments, intent log, metadata: redb pages and length slots), `devices` = what reaches the member disks. The open segment's data not yet written in place is not counted (it is in the log).\n"
    );
    println!("| backing | workload | logical MiB | VDE WA | data | log | metadata | devices WA |");
    println!("|---|---|---|---|---|---|---|---|");
    let loads = [
        (
            "4 KiB volume writes, flush each",
            WaLoad::Volume4k { flush_every: 1 },
        ),
        (
            "4 KiB volume writes, flush every 256",
            WaLoad::Volume4k { flush_every: 256 },
        ),
        ("4 KiB objects", WaLoad::Objects { size: 4096 }),
        ("1 MiB objects", WaLoad::Objects { size: 1 << 20 }),
        ("64 MiB objects", WaLoad::Objects { size: 64 << 20 }),
    ];
    for raid in [false, true] {
        for (name, load) in loads {
            let (logical, r, members) = wa_case(raid, load)?;
            #[allow(clippy::cast_precision_loss)]
            let ratio = |b: u64| b as f64 / logical as f64;
            let vde: u64 = r.iter().sum();
            println!(
                "| {} | {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                if raid { "RAID-Z2 6" } else { "plain" },
                logical >> 20,
                ratio(vde),
                ratio(r[3]),
                ratio(r[2]),
                ratio(r[1] + r[0]),
                ratio(members),
            );
        }
    }
    println!();
    Ok(())
}
