//! Shared helpers for the integration tests: a dw-s3 server on 127.0.0.1:0 with MemStore,
//! raw signed HTTP, tool discovery with skip-or-fail.

#![allow(
    dead_code,
    clippy::print_stdout,
    reason = "each test binary uses a subset; skips are printed"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dw_s3::{Access, MemStore, RequestEvent, S3Config, S3Observer, StaticAuth};

pub const ALICE: (&str, &str) = (
    "AKIAALICE0000000",
    "alice-secret-key-0000000000000000000000",
);
pub const BOB: (&str, &str) = (
    "AKIABOB000000000",
    "bob-secret-key-00000000000000000000000000",
);
pub const CAROL: (&str, &str) = (
    "AKIACAROL0000000",
    "carol-secret-key-000000000000000000000000",
);
pub const REGION: &str = "us-east-1";

/// Records every request event.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<RequestEvent>>,
    pub count: AtomicU64,
}

impl S3Observer for Recorder {
    fn on_request(&self, e: &RequestEvent) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.events.lock() {
            v.push(e.clone());
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<MemStore>,
    pub observer: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keys: ALICE and BOB ordinary, CAROL may read BOB's bucket `bob-shared` and create nothing.
pub fn auth() -> StaticAuth {
    StaticAuth::new()
        .with_key(ALICE.0, ALICE.1)
        .with_key(BOB.0, BOB.1)
        .with_key(CAROL.0, CAROL.1)
        .without_create(CAROL.0)
        .with_grant(CAROL.0, "bob-shared", Access::Read)
}

pub fn start(config: S3Config) -> Server {
    start_with(config, MemStore::new())
}

pub fn start_with(config: S3Config, store: MemStore) -> Server {
    let store = Arc::new(store);
    let observer = Arc::new(Recorder::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = std::sync::mpsc::channel();
    let st = Arc::clone(&store);
    let ob = Arc::clone(&observer);
    let thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => panic!("bind: {e}"),
            };
            let _ = atx.send(listener.local_addr());
            let r = dw_s3::serve(
                listener,
                config,
                st,
                Arc::new(auth()),
                Some(ob),
                async move {
                    let _ = rx.await;
                },
            )
            .await;
            if let Err(e) = r {
                panic!("serve: {e}");
            }
        });
    });
    let addr = match arx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(a)) => a,
        other => panic!("server did not start: {other:?}"),
    };
    Server {
        addr,
        store,
        observer,
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// True if the prerequisite is there; otherwise prints why the test is skipped, or panics when
/// DW_REQUIRE_ALL_TESTS=1.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !std::env::var("DW_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1"),
        "required test prerequisite missing: {what}"
    );
    println!("SKIP: {what} is not available");
    false
}

pub fn have_cmd(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A python interpreter that can import boto3.
pub fn python_with_boto3() -> Option<String> {
    ["python3", "/usr/bin/python3"].into_iter().find_map(|p| {
        Command::new(p)
            .args(["-c", "import boto3"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| p.to_owned())
    })
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    match cmd.output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        v.extend_from_slice(&x.to_le_bytes()[..(len - v.len()).min(8)]);
    }
    v
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    dw_s3::parse::hex(&Md5::digest(data))
}

pub fn md5_file(p: &Path) -> String {
    std::fs::read(p).map(|d| md5_hex(&d)).unwrap_or_default()
}

/// SigV4 headers for a raw request (UNSIGNED-PAYLOAD). `path_and_query` must be as sent.
pub fn sign(
    key: (&str, &str),
    method: &str,
    host: &str,
    path_and_query: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    let identity = aws_credential_types::Credentials::new(key.0, key.1, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    // S3 signs the path as sent: no normalisation, no double percent-encoding.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = match aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
    {
        Ok(p) => p.into(),
        Err(e) => panic!("signing params: {e}"),
    };
    let url = format!("http://{host}{path_and_query}");
    let mut headers: Vec<(String, String)> = vec![("host".into(), host.into())];
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let signable = match SignableRequest::new(
        method,
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    ) {
        Ok(s) => s,
        Err(e) => panic!("signable: {e}"),
    };
    let (instr, _) = match sign(signable, &params) {
        Ok(o) => o.into_parts(),
        Err(e) => panic!("sign: {e}"),
    };
    for (k, v) in instr.headers() {
        headers.push((k.to_owned(), v.to_owned()));
    }
    headers
}

/// Sends raw bytes, optionally half-closing, and returns what the server answered (up to
/// `timeout`), or an empty string if the connection was closed without an answer.
pub fn raw(addr: SocketAddr, bytes: &[u8], half_close: bool, timeout: Duration) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // Bounded by the read timeout and the 1 MiB cap.
    while out.len() < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if response_complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn response_complete(b: &[u8]) -> bool {
    let s = String::from_utf8_lossy(b);
    let Some(head_end) = s.find("\r\n\r\n") else {
        return false;
    };
    let head = s[..head_end].to_ascii_lowercase();
    let len = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    });
    match len {
        Some(n) => b.len() >= head_end + 4 + n,
        None => !head.contains("transfer-encoding: chunked") || s.ends_with("0\r\n\r\n"),
    }
}

/// Builds a signed raw request head (without body).
pub fn request_head(
    key: Option<(&str, &str)>,
    method: &str,
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> String {
    let host = addr.to_string();
    let headers = match key {
        Some(k) => sign(k, method, &host, path, extra),
        None => {
            let mut h = vec![("host".to_owned(), host.clone())];
            h.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            h
        }
    };
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s
}

pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
