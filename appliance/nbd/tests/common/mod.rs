//! Helpers shared by the integration tests: a minimal NBD client, servers on 127.0.0.1,
//! test exports and the skip rule for missing tools.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dw_nbd::proto::{self, RequestHeader, cmd, info, opt, rep};
use dw_nbd::{BlockExport, BlockSizes, ExportCatalog, ExportError, NbdServer, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Whether `tool` can run. Missing tools skip the test with a printed reason, unless
/// DW_REQUIRE_ALL_TESTS=1 is set, in which case the test fails.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let msg =
        format!("`{tool}` is not installed (Debian package: see appliance/scripts/packages.txt)");
    assert!(
        std::env::var("DW_REQUIRE_ALL_TESTS").as_deref() != Ok("1"),
        "{msg}; DW_REQUIRE_ALL_TESTS=1 forbids skipping"
    );
    eprintln!("SKIPPED: {msg}");
    false
}

/// A server listening on 127.0.0.1:<ephemeral> on its own runtime thread.
pub struct TcpServer {
    pub addr: SocketAddr,
    pub server: NbdServer,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts connections in transmission and the most that were open at once.
#[derive(Default)]
pub struct PeakObserver {
    pub current: AtomicU64,
    pub peak: AtomicU64,
    pub opened: AtomicU64,
}

impl dw_nbd::NbdObserver for PeakObserver {
    fn on_export_opened(&self, _peer: &str, _export: &str) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn on_disconnect(&self, _peer: &str, export: Option<&str>) {
        if export.is_some() {
            self.current.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl TcpServer {
    pub fn start(catalog: Arc<dyn ExportCatalog>, config: ServerConfig) -> Self {
        Self::start_observed(catalog, config, Arc::new(dw_nbd::NoopObserver))
    }

    pub fn start_observed(
        catalog: Arc<dyn ExportCatalog>,
        config: ServerConfig,
        observer: Arc<dyn dw_nbd::NbdObserver>,
    ) -> Self {
        let server = NbdServer::new(catalog, config)
            .unwrap()
            .with_observer(observer);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = server.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                s.serve(l, std::future::pending()).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Self {
            addr,
            server,
            thread: Some(thread),
        }
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{}", self.addr, export)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.server.begin_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Random bytes from a fixed seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An export whose reads at chosen offsets sleep, and which records the order of operations.
pub struct SlowExport {
    pub inner: dw_nbd::MemoryExport,
    pub delays: HashMap<u64, Duration>,
    pub log: parking_lot::Mutex<Vec<String>>,
    pub ops: AtomicU64,
    /// Delayed operations sleeping right now, and the most there ever were at once.
    pub sleeping: AtomicU64,
    pub max_sleeping: AtomicU64,
    /// An offset whose reads and writes wait until [`SlowExport::release`] (or a minute, so a
    /// failed test cannot hang the runtime's shutdown).
    held: parking_lot::Mutex<Option<u64>>,
    released: parking_lot::Condvar,
}

impl SlowExport {
    pub fn new(size: u64, delays: HashMap<u64, Duration>) -> Self {
        Self {
            inner: dw_nbd::MemoryExport::new(size).unwrap(),
            delays,
            log: parking_lot::Mutex::new(Vec::new()),
            ops: AtomicU64::new(0),
            sleeping: AtomicU64::new(0),
            max_sleeping: AtomicU64::new(0),
            held: parking_lot::Mutex::new(None),
            released: parking_lot::Condvar::new(),
        }
    }

    /// Makes requests at `offset` wait until [`SlowExport::release`].
    pub fn hold(&self, offset: u64) {
        *self.held.lock() = Some(offset);
    }

    pub fn release(&self) {
        *self.held.lock() = None;
        self.released.notify_all();
    }

    fn delay(&self, offset: u64) {
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut h = self.held.lock();
            while *h == Some(offset) {
                if self.released.wait_until(&mut h, deadline).timed_out() {
                    break;
                }
            }
        }
        if let Some(d) = self.delays.get(&offset) {
            let now = self.sleeping.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_sleeping.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(*d);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl BlockExport for SlowExport {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_sizes(&self) -> BlockSizes {
        BlockSizes::DEFAULT
    }
    fn can_trim(&self) -> bool {
        true
    }
    fn can_write_zeroes(&self) -> bool {
        true
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError> {
        self.delay(offset);
        self.ops.fetch_add(1, Ordering::SeqCst);
        self.log.lock().push(format!("read {offset}"));
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ExportError> {
        self.delay(offset);
        self.ops.fetch_add(1, Ordering::SeqCst);
        self.log.lock().push(format!("write {offset} fua={fua}"));
        self.inner.write(offset, data, fua)
    }
    fn flush(&self) -> Result<(), ExportError> {
        self.log.lock().push("flush".into());
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), ExportError> {
        self.log.lock().push(format!("trim {offset} {len}"));
        self.inner.trim(offset, len, fua)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        self.log
            .lock()
            .push(format!("zero {offset} {len} may_trim={may_trim}"));
        self.inner.write_zeroes(offset, len, may_trim, fua)
    }
}

/// An export whose every operation fails or panics, to test error paths.
pub struct BrokenExport {
    pub panic: bool,
}

impl BlockExport for BrokenExport {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn read(&self, _offset: u64, _buf: &mut [u8]) -> Result<(), ExportError> {
        assert!(!self.panic, "deliberate panic in BrokenExport::read");
        Err(ExportError::Io(std::io::Error::other("medium error")))
    }
    fn write(&self, _offset: u64, _data: &[u8], _fua: bool) -> Result<(), ExportError> {
        Err(ExportError::NoSpace("volume full".into()))
    }
    fn flush(&self) -> Result<(), ExportError> {
        Err(ExportError::Io(std::io::Error::from_raw_os_error(
            nix::libc::EIO,
        )))
    }
}

/// One reply read by [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub handle: u64,
    pub error: u32,
    pub data: Vec<u8>,
}

/// A minimal NBD client for tests (simple replies only).
pub struct Client<S> {
    pub s: S,
    pub size: u64,
    pub flags: u16,
    pub block_sizes: Option<(u32, u32, u32)>,
    next_handle: u64,
    /// Lengths of outstanding reads by handle, to know which replies carry data.
    pending_reads: HashMap<u64, usize>,
}

/// Reads the greeting and sends client flags; returns the handshake flags.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, client_flags: u32) -> u16 {
    let mut g = [0u8; proto::GREETING_LEN];
    s.read_exact(&mut g).await.unwrap();
    assert_eq!(&g[..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    s.write_all(&client_flags.to_be_bytes()).await.unwrap();
    u16::from_be_bytes([g[16], g[17]])
}

/// Sends one option and collects replies until the final one (ACK or error).
pub async fn option<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    payload: &[u8],
) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
    s.write_all(&proto::encode_option_header(
        option,
        u32::try_from(payload.len()).unwrap(),
    ))
    .await?;
    s.write_all(payload).await?;
    let mut replies = Vec::new();
    loop {
        let mut h = [0u8; proto::OPTION_REPLY_HEADER_LEN];
        s.read_exact(&mut h).await?;
        let h = proto::parse_option_reply_header(&h).unwrap();
        assert_eq!(h.option, option, "reply for the wrong option");
        let mut data = vec![0u8; usize::try_from(h.length).unwrap()];
        s.read_exact(&mut data).await?;
        let last = !matches!(h.reply_type, rep::INFO | rep::SERVER);
        replies.push((h.reply_type, data));
        if last {
            return Ok(replies);
        }
    }
}

pub fn info_payload(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&u16::try_from(reqs.len()).unwrap().to_be_bytes());
    for r in reqs {
        p.extend_from_slice(&r.to_be_bytes());
    }
    p
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Negotiates with NBD_OPT_GO (asking for block sizes).
    pub async fn connect(mut s: S, name: &str) -> Result<Self, (u32, String)> {
        let hf = greet(&mut s, 3).await;
        assert_eq!(hf, 3);
        let replies = option(&mut s, opt::GO, &info_payload(name, &[info::BLOCK_SIZE]))
            .await
            .unwrap();
        let (last_type, last_data) = replies.last().unwrap().clone();
        if last_type != rep::ACK {
            return Err((last_type, String::from_utf8_lossy(&last_data).into_owned()));
        }
        let mut size = 0;
        let mut flags = 0;
        let mut block_sizes = None;
        for (t, d) in &replies[..replies.len() - 1] {
            assert_eq!(*t, rep::INFO);
            match u16::from_be_bytes([d[0], d[1]]) {
                info::EXPORT => {
                    size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                    flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
                }
                info::BLOCK_SIZE => {
                    let g = |i: usize| u32::from_be_bytes(d[i..i + 4].try_into().unwrap());
                    block_sizes = Some((g(2), g(6), g(10)));
                }
                _ => {}
            }
        }
        Ok(Self {
            s,
            size,
            flags,
            block_sizes,
            next_handle: 1,
            pending_reads: HashMap::new(),
        })
    }

    /// Sends a request (with payload for writes) without waiting; returns its handle.
    pub async fn send(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        let h = RequestHeader {
            flags,
            command,
            handle,
            offset,
            length,
        };
        if command == cmd::READ {
            self.pending_reads
                .insert(handle, usize::try_from(length).unwrap());
        }
        self.s
            .write_all(&proto::encode_request_header(&h))
            .await
            .unwrap();
        self.s.write_all(payload).await.unwrap();
        handle
    }

    /// Sends several payload-less requests in a single write, so the server sees them
    /// arrive together; returns their handles.
    pub async fn send_batch(&mut self, requests: &[(u16, u16, u64, u32)]) -> Vec<u64> {
        let mut bytes = Vec::new();
        let mut handles = Vec::new();
        for &(command, flags, offset, length) in requests {
            let handle = self.next_handle;
            self.next_handle += 1;
            if command == cmd::READ {
                self.pending_reads
                    .insert(handle, usize::try_from(length).unwrap());
            }
            bytes.extend_from_slice(&proto::encode_request_header(&RequestHeader {
                flags,
                command,
                handle,
                offset,
                length,
            }));
            handles.push(handle);
        }
        self.s.write_all(&bytes).await.unwrap();
        handles
    }

    /// Reads one reply (with data if it answers a successful read).
    pub async fn reply(&mut self) -> std::io::Result<Reply> {
        let mut h = [0u8; proto::SIMPLE_REPLY_LEN];
        self.s.read_exact(&mut h).await?;
        let r = proto::parse_simple_reply(&h).expect("bad reply magic");
        let len = self.pending_reads.remove(&r.handle).unwrap_or(0);
        let mut data = Vec::new();
        if r.error == 0 && len > 0 {
            data.resize(len, 0);
            self.s.read_exact(&mut data).await?;
        }
        Ok(Reply {
            handle: r.handle,
            error: r.error,
            data,
        })
    }

    pub async fn read(&mut self, offset: u64, length: u32) -> Result<Vec<u8>, u32> {
        let h = self.send(cmd::READ, 0, offset, length, &[]).await;
        let r = self.reply().await.unwrap();
        assert_eq!(r.handle, h);
        if r.error == 0 {
            Ok(r.data)
        } else {
            Err(r.error)
        }
    }

    pub async fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> Result<(), u32> {
        let h = self
            .send(
                cmd::WRITE,
                flags,
                offset,
                u32::try_from(data.len()).unwrap(),
                data,
            )
            .await;
        let r = self.reply().await.unwrap();
        assert_eq!(r.handle, h);
        if r.error == 0 { Ok(()) } else { Err(r.error) }
    }

    /// Sends a command without payload and returns its error value.
    pub async fn command(&mut self, command: u16, flags: u16, offset: u64, length: u32) -> u32 {
        let h = self.send(command, flags, offset, length, &[]).await;
        let r = self.reply().await.unwrap();
        assert_eq!(r.handle, h);
        r.error
    }

    pub async fn disconnect(mut self) -> S {
        self.send(cmd::DISC, 0, 0, 0, &[]).await;
        self.s
    }
}

/// A server plus an in-memory duplex connection to it.
pub async fn duplex_client(
    server: &NbdServer,
    name: &str,
) -> (
    Result<Client<tokio::io::DuplexStream>, (u32, String)>,
    tokio::task::JoinHandle<Result<dw_nbd::ConnectionSummary, dw_nbd::ConnectionError>>,
) {
    let (c, s) = tokio::io::duplex(1 << 20);
    let srv = server.clone();
    let task = tokio::spawn(async move { srv.serve_connection(s, "duplex").await });
    (Client::connect(c, name).await, task)
}
