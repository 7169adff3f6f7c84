//! dw-s3-bench: PUT/GET load generator for any S3 endpoint (ours, garage, MinIO, ...).
//!
//! Each of N workers owns one keep-alive connection and loops PUT (then GET) of objects of the
//! given sizes for a fixed time, signing with SigV4 (UNSIGNED-PAYLOAD, so the client does not
//! hash the data). Reports requests/s, MB/s and latency percentiles per phase.
//!
//! `--self-test` starts dw-s3 with MemStore on 127.0.0.1 in this process and benchmarks it.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "report arithmetic and test-pattern bytes; exactness is not needed"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Parser, Debug, Clone)]
#[command(about = "PUT/GET load generator for S3 endpoints")]
struct Args {
    /// Endpoint URL, e.g. http://127.0.0.1:3900 (ignored with --self-test).
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    endpoint: String,
    /// Access key id.
    #[arg(long, default_value = "benchkey")]
    access_key: String,
    /// Secret access key.
    #[arg(long, default_value = "benchsecret")]
    secret_key: String,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Bucket (created if missing).
    #[arg(long, default_value = "dw-bench")]
    bucket: String,
    /// Object sizes, e.g. 4KiB,16MiB.
    #[arg(long, value_delimiter = ',', default_value = "4KiB,16MiB")]
    sizes: Vec<String>,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 8)]
    concurrency: usize,
    /// Seconds per phase (PUT, then GET) and size.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Distinct keys per worker (objects are overwritten cyclically, bounding space use).
    #[arg(long, default_value_t = 4)]
    keys_per_worker: usize,
    /// Start dw-s3 with MemStore on loopback and benchmark it.
    #[arg(long)]
    self_test: bool,
    /// Object contents: `compressible` (a repeating byte ramp) or `random` (incompressible;
    /// what encrypted or already-compressed data looks like to the server).
    #[arg(long, value_enum, default_value_t = Payload::Compressible)]
    payload: Payload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Payload {
    Compressible,
    Random,
}

/// `size` bytes of the chosen kind (the same bytes every run).
fn payload(kind: Payload, size: usize) -> Vec<u8> {
    match kind {
        Payload::Compressible => (0..size).map(|i| (i % 251) as u8).collect(),
        Payload::Random => {
            // xorshift64*: fast, and zstd finds nothing to compress in it.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut out = Vec::with_capacity(size + 8);
            while out.len() < size {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
            out.truncate(size);
            out
        }
    }
}

fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1024 * 1024 * 1024)
    } else {
        (s, 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .with_context(|| format!("bad size {s:?}"))?;
    n.checked_mul(mult).context("size overflows")
}

struct Signer {
    identity: aws_smithy_runtime_api::client::identity::Identity,
    region: String,
}

impl Signer {
    fn sign(&self, req: &mut http::Request<Full<Bytes>>) -> Result<()> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        };
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        // S3 signs the path as sent: no normalisation, no double percent-encoding.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .context("signing parameters")?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .context("signable request")?;
        let (instructions, _) = sign(signable, &params).context("signing")?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(c)
}

/// Sends a signed request; returns status and the number of body bytes received (counted
/// frame by frame, never buffered).
async fn send(
    c: &HttpClient,
    signer: &Signer,
    method: http::Method,
    url: &str,
    body: Bytes,
) -> Result<(u16, u64)> {
    let host = url.split('/').nth(2).unwrap_or_default().to_owned();
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))?;
    signer.sign(&mut req)?;
    let resp = c.request(req).await?;
    let status = resp.status().as_u16();
    let mut b = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = b.frame().await {
        if let Some(d) = f?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
}

struct PhaseResult {
    ops: u64,
    bytes: u64,
    errors: u64,
    lat: Vec<Duration>,
    elapsed: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

async fn phase(
    args: &Args,
    endpoint: &str,
    signer: &Arc<Signer>,
    size: usize,
    op: Op,
) -> PhaseResult {
    let data = Bytes::from(payload(args.payload, size));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let c = client();
        let signer = Arc::clone(signer);
        let data = data.clone();
        let base = format!("{endpoint}/{}/bench-{size}-w{w}-", args.bucket);
        let keys = args.keys_per_worker.max(1);
        tasks.push(tokio::spawn(async move {
            let mut r = PhaseResult {
                ops: 0,
                bytes: 0,
                errors: 0,
                lat: Vec::new(),
                elapsed: Duration::ZERO,
            };
            let mut i = 0usize;
            while Instant::now() < deadline {
                let url = format!("{base}{}", i % keys);
                i += 1;
                let t = Instant::now();
                let res = match op {
                    Op::Put => send(&c, &signer, http::Method::PUT, &url, data.clone()).await,
                    Op::Get => send(&c, &signer, http::Method::GET, &url, Bytes::new()).await,
                };
                match res {
                    Ok((200, n)) => {
                        r.ops += 1;
                        r.bytes += if op == Op::Put { data.len() as u64 } else { n };
                        r.lat.push(t.elapsed());
                    }
                    Ok((s, _)) => {
                        r.errors += 1;
                        if r.errors <= 3 {
                            eprintln!("{url}: HTTP {s}");
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.errors <= 3 {
                            eprintln!("{url}: {e:#}");
                        }
                    }
                }
            }
            r
        }));
    }
    let mut total = PhaseResult {
        ops: 0,
        bytes: 0,
        errors: 0,
        lat: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok(r) = t.await {
            total.ops += r.ops;
            total.bytes += r.bytes;
            total.errors += r.errors;
            total.lat.extend(r.lat);
        }
    }
    total.elapsed = start.elapsed();
    total
}

fn report(label: &str, size: usize, conc: usize, mut r: PhaseResult) {
    r.lat.sort();
    let pct = |p: f64| -> f64 {
        if r.lat.is_empty() {
            return 0.0;
        }
        let idx = ((r.lat.len() - 1) as f64 * p).round() as usize;
        r.lat[idx.min(r.lat.len() - 1)].as_secs_f64() * 1000.0
    };
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{label:<4} {:>8} conc={conc:<3} ops={:<7} {:>9.1} req/s {:>9.1} MB/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
        human(size),
        r.ops,
        r.ops as f64 / secs,
        r.bytes as f64 / secs / 1e6,
        pct(0.5),
        pct(0.99),
        r.errors
    );
}

fn human(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

async fn run(args: Args) -> Result<()> {
    let sizes: Vec<usize> = args
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let (endpoint, server) = if args.self_test {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(dw_s3::MemStore::new());
        let auth = Arc::new(dw_s3::StaticAuth::new().with_key(&args.access_key, &args.secret_key));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(dw_s3::serve(
            listener,
            dw_s3::S3Config::default(),
            store,
            auth,
            None,
            async move {
                let _ = rx.await;
            },
        ));
        println!("self-test: dw-s3 with MemStore on http://{addr}");
        (format!("http://{addr}"), Some((tx, h)))
    } else {
        (args.endpoint.trim_end_matches('/').to_owned(), None)
    };
    let signer = Arc::new(Signer {
        identity: aws_credential_types::Credentials::new(
            &args.access_key,
            &args.secret_key,
            None,
            None,
            "dw-s3-bench",
        )
        .into(),
        region: args.region.clone(),
    });
    let c = client();
    let (st, _) = send(
        &c,
        &signer,
        http::Method::PUT,
        &format!("{endpoint}/{}", args.bucket),
        Bytes::new(),
    )
    .await
    .context("creating the bucket")?;
    if st != 200 && st != 409 {
        bail!("creating bucket {} failed with HTTP {st}", args.bucket);
    }
    for &size in &sizes {
        let r = phase(&args, &endpoint, &signer, size, Op::Put).await;
        report("PUT", size, args.concurrency, r);
        let r = phase(&args, &endpoint, &signer, size, Op::Get).await;
        report("GET", size, args.concurrency, r);
    }
    if let Some((tx, h)) = server {
        let _ = tx.send(());
        h.await.context("server task")?.context("server")?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
