//! Transmission phase: request validation (pure) and the pipelined request loop.
//!
//! One connection runs a reader (this module's [`run_transmission`], on the connection's
//! task) and a writer task. The reader parses and validates requests, reads write payloads
//! into pooled buffers and runs each request either inline (small requests on exports that
//! say their I/O is cheap) or on tokio's blocking pool. Completed requests send their reply
//! through a channel to the writer, which batches whatever replies are ready into one
//! vectored write. Replies may therefore leave in a different order than requests arrived;
//! the handle in each reply identifies its request. In-flight requests are bounded by count
//! and by buffered bytes, so a client cannot make the server buffer without limit.

use std::future::Future;
use std::io::IoSlice;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::export::BlockExport;
use crate::handshake::{ExportLimits, NegotiatedExport};
use crate::observer::{NbdObserver, RequestKind};
use crate::pool::{BufferPool, PooledBuf};
use crate::proto::{self, DecodeError, RequestHeader, cmd, cmd_flag, errno, tflag};

/// Write payloads above the advertised maximum but at most this long are read and discarded
/// (the request fails with `EINVAL`); longer ones end the connection, since the server
/// cannot stay in sync without reading them.
pub const WRITE_DRAIN_LIMIT: u32 = 64 << 20;

/// Replies gathered into one vectored write (two iovecs each, well under `IOV_MAX`).
const MAX_REPLY_BATCH: usize = 128;

/// A request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `length` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        length: u32,
    },
    /// Write the `length`-byte payload at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        length: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Discard a range.
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        length: u32,
        /// Persist before replying.
        fua: bool,
    },
    /// Zero a range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        length: u32,
        /// The client did not set `NBD_CMD_FLAG_NO_HOLE`.
        may_trim: bool,
        /// Persist before replying.
        fua: bool,
    },
    /// Soft disconnect.
    Disconnect,
}

impl Command {
    /// Bytes of buffer the request needs (read result or write payload).
    pub fn buffer_len(&self) -> u32 {
        match *self {
            Self::Read { length, .. } | Self::Write { length, .. } => length,
            _ => 0,
        }
    }

    /// Bytes the request touches.
    pub fn length(&self) -> u32 {
        match *self {
            Self::Read { length, .. }
            | Self::Write { length, .. }
            | Self::Trim { length, .. }
            | Self::WriteZeroes { length, .. } => length,
            Self::Flush | Self::Disconnect => 0,
        }
    }
}

/// Why a request is refused; the connection continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestError {
    /// NBD error value for the reply.
    pub errno: u32,
    /// What was wrong (for logs).
    pub reason: &'static str,
}

fn refuse(errno: u32, reason: &'static str) -> RequestError {
    RequestError { errno, reason }
}

/// Checks a request against what was negotiated. Pure: the caller sends the reply.
///
/// Order of checks: command known, flags allowed, export writable, command advertised,
/// range inside the export (overflow included), alignment, payload size.
pub fn validate_request(h: &RequestHeader, limits: &ExportLimits) -> Result<Command, RequestError> {
    let is_write_like = matches!(h.command, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    let mut allowed = 0u16;
    if limits.has(tflag::SEND_FUA) {
        // The specification makes FUA acceptable on every command once negotiated.
        allowed |= cmd_flag::FUA;
    }
    match h.command {
        cmd::DISC => return Ok(Command::Disconnect),
        cmd::READ | cmd::WRITE | cmd::FLUSH | cmd::TRIM => {}
        cmd::WRITE_ZEROES => allowed |= cmd_flag::NO_HOLE,
        cmd::CACHE => return Err(refuse(errno::EINVAL, "NBD_CMD_CACHE is not supported")),
        cmd::BLOCK_STATUS => {
            return Err(refuse(
                errno::EINVAL,
                "NBD_CMD_BLOCK_STATUS needs metadata contexts, which were not negotiated",
            ));
        }
        _ => return Err(refuse(errno::EINVAL, "unknown command")),
    }
    if h.flags & !allowed != 0 {
        return Err(refuse(
            errno::EINVAL,
            "command flag not valid for this command",
        ));
    }
    if is_write_like && limits.has(tflag::READ_ONLY) {
        return Err(refuse(errno::EPERM, "export is read-only"));
    }
    let fua = h.flags & cmd_flag::FUA != 0;
    match h.command {
        cmd::FLUSH => {
            return if limits.has(tflag::SEND_FLUSH) {
                Ok(Command::Flush)
            } else {
                Err(refuse(errno::EINVAL, "flush was not advertised"))
            };
        }
        cmd::TRIM if !limits.has(tflag::SEND_TRIM) => {
            return Err(refuse(errno::EINVAL, "trim was not advertised"));
        }
        cmd::WRITE_ZEROES if !limits.has(tflag::SEND_WRITE_ZEROES) => {
            return Err(refuse(errno::EINVAL, "write-zeroes was not advertised"));
        }
        _ => {}
    }
    let Some(end) = h.offset.checked_add(u64::from(h.length)) else {
        return Err(refuse(errno::EINVAL, "offset + length overflows"));
    };
    if end > limits.size {
        return Err(if matches!(h.command, cmd::WRITE | cmd::WRITE_ZEROES) {
            refuse(errno::ENOSPC, "write beyond the end of the export")
        } else {
            refuse(errno::EINVAL, "request beyond the end of the export")
        });
    }
    let min = u64::from(limits.minimum);
    if min > 1 && (!h.offset.is_multiple_of(min) || !u64::from(h.length).is_multiple_of(min)) {
        return Err(refuse(
            errno::EINVAL,
            "request not aligned to the minimum block size",
        ));
    }
    if matches!(h.command, cmd::READ | cmd::WRITE) && h.length > limits.max_payload {
        return Err(refuse(
            errno::EINVAL,
            "request larger than the maximum payload",
        ));
    }
    let (offset, length) = (h.offset, h.length);
    Ok(match h.command {
        cmd::READ => Command::Read { offset, length },
        cmd::WRITE => Command::Write {
            offset,
            length,
            fua,
        },
        cmd::TRIM => Command::Trim {
            offset,
            length,
            fua,
        },
        _ => Command::WriteZeroes {
            offset,
            length,
            may_trim: h.flags & cmd_flag::NO_HOLE == 0,
            fua,
        },
    })
}

/// Per-server settings the transmission loop needs.
#[derive(Clone)]
pub(crate) struct TransmissionSettings {
    pub pool: Arc<BufferPool>,
    pub workers: Arc<WorkerPool>,
    pub observer: Arc<dyn NbdObserver>,
    pub max_in_flight: usize,
    pub max_in_flight_bytes: usize,
    pub idle_timeout: Option<Duration>,
    pub drain_timeout: Duration,
}

/// How the transmission phase ended cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmissionEnd {
    /// The client sent `NBD_CMD_DISC`.
    Disconnected,
    /// The client closed the connection.
    Closed,
    /// No request arrived within the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
}

/// Why the transmission phase ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum TransmissionError {
    /// Reading requests failed.
    #[error("reading from the client failed: {0}")]
    Read(#[source] std::io::Error),
    /// Sending replies failed.
    #[error("sending replies to the client failed: {0}")]
    Write(#[source] std::io::Error),
    /// The client sent a request the server cannot recover from.
    #[error("client broke the transmission protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// A write announced a payload too large to discard.
    #[error(
        "write request announced {0} bytes of payload, more than the {WRITE_DRAIN_LIMIT}-byte limit; dropping the connection"
    )]
    PayloadTooLarge(u32),
    /// Replies could not be delivered in time after the request stream ended.
    #[error("client stopped reading replies; {0} replies were discarded")]
    RepliesAbandoned(&'static str),
}

/// Counters of one transmission phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransmissionStats {
    /// Requests received (including refused ones).
    pub requests: u64,
    /// Requests refused by validation.
    pub refused: u64,
    /// Bytes requested by valid reads.
    pub bytes_read: u64,
    /// Bytes received in valid writes.
    pub bytes_written: u64,
}

struct Reply {
    handle: u64,
    error: u32,
    data: Option<PooledBuf>,
    // Held until the reply is on the wire: bounds in-flight requests and bytes.
    _count: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What the writer task receives: replies of blocking-pool jobs one by one, replies of
/// inline requests in batches (one wake-up of the writer per burst of requests).
enum Outgoing {
    One(Reply),
    Batch(Vec<Reply>),
}

struct Shared {
    export: Arc<dyn BlockExport>,
    name: Arc<str>,
    observer: Arc<dyn NbdObserver>,
    tx: mpsc::UnboundedSender<Outgoing>,
}

struct Job {
    handle: u64,
    command: Command,
    buf: Option<PooledBuf>,
    start: Instant,
    count: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

fn kind_of(c: &Command) -> RequestKind {
    match c {
        Command::Read { .. } => RequestKind::Read,
        Command::Write { .. } => RequestKind::Write,
        Command::Flush => RequestKind::Flush,
        Command::Trim { .. } => RequestKind::Trim,
        Command::WriteZeroes { .. } => RequestKind::WriteZeroes,
        Command::Disconnect => RequestKind::Other,
    }
}

fn execute(
    export: &dyn BlockExport,
    command: &Command,
    buf: Option<&mut PooledBuf>,
) -> Result<(), u32> {
    let r = match (*command, buf) {
        (Command::Read { offset, .. }, Some(buf)) => export.read(offset, buf),
        (Command::Write { offset, fua, .. }, Some(buf)) => export.write(offset, buf, fua),
        (Command::Flush, _) => export.flush(),
        (
            Command::Trim {
                offset,
                length,
                fua,
            },
            _,
        ) => export.trim(offset, u64::from(length), fua),
        (
            Command::WriteZeroes {
                offset,
                length,
                may_trim,
                fua,
            },
            _,
        ) => export.write_zeroes(offset, u64::from(length), may_trim, fua),
        // Zero-length reads and writes carry no buffer and do nothing.
        (Command::Read { .. } | Command::Write { .. }, None) | (Command::Disconnect, _) => Ok(()),
    };
    r.map_err(|e| {
        tracing::warn!(error = %e, ?command, "NBD request failed in the export");
        e.nbd_errno()
    })
}

/// Runs a job and builds its reply.
fn run_job(shared: &Shared, mut job: Job) -> Reply {
    let export = shared.export.as_ref();
    let command = job.command;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        execute(export, &command, job.buf.as_mut())
    }))
    .unwrap_or_else(|_| {
        tracing::error!(
            ?command,
            "the export panicked while serving an NBD request; answering EIO"
        );
        Err(errno::EIO)
    });
    shared.observer.on_request(
        &shared.name,
        kind_of(&command),
        u64::from(command.length()),
        job.start.elapsed(),
        outcome.is_ok(),
    );
    let (error, data) = match outcome {
        Ok(()) if matches!(command, Command::Read { .. }) => (0, job.buf.take()),
        Ok(()) => (0, None),
        Err(e) => (e, None),
    };
    Reply {
        handle: job.handle,
        error,
        data,
        _count: job.count,
        _bytes: job.bytes,
    }
}

/// Writes all of `slices`, however the stream splits it.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        let n = wr.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The writer task: sends replies in batches until every sender is gone.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> std::io::Result<()> {
    let mut messages: Vec<Outgoing> = Vec::with_capacity(MAX_REPLY_BATCH);
    let mut queue: std::collections::VecDeque<Reply> = std::collections::VecDeque::new();
    let mut batch: Vec<Reply> = Vec::with_capacity(MAX_REPLY_BATCH);
    let mut headers: Vec<[u8; proto::SIMPLE_REPLY_LEN]> = Vec::with_capacity(MAX_REPLY_BATCH);
    loop {
        if queue.is_empty() {
            if rx.recv_many(&mut messages, MAX_REPLY_BATCH).await == 0 {
                break;
            }
            for m in messages.drain(..) {
                match m {
                    Outgoing::One(r) => queue.push_back(r),
                    Outgoing::Batch(v) => queue.extend(v),
                }
            }
        }
        let n = queue.len().min(MAX_REPLY_BATCH);
        batch.extend(queue.drain(..n));
        headers.clear();
        headers.extend(
            batch
                .iter()
                .map(|r| proto::encode_simple_reply(r.error, r.handle)),
        );
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
        for (h, r) in headers.iter().zip(&batch) {
            slices.push(IoSlice::new(h));
            if let Some(d) = r.data.as_deref().filter(|d| !d.is_empty()) {
                slices.push(IoSlice::new(d));
            }
        }
        write_all_vectored(&mut wr, &mut slices).await?;
        drop(slices);
        wr.flush().await?;
        // Dropping the replies returns buffers to the pool and releases in-flight permits.
        batch.clear();
    }
    wr.shutdown().await
}

/// A fixed set of threads running requests that may block (everything not run inline).
///
/// tokio's `spawn_blocking` measured about 7x the CPU per 4 KiB request of inline execution
/// here, mostly from growing to one thread per queued request; a bounded set of workers
/// sharing one queue keeps context switches down. Threads start on first use and stop when
/// the pool is dropped.
pub(crate) struct WorkerPool {
    inner: Arc<WorkerQueue>,
    threads: usize,
    started: std::sync::Once,
}

struct WorkerQueue {
    queue: parking_lot::Mutex<std::collections::VecDeque<(Arc<Shared>, Job)>>,
    ready: parking_lot::Condvar,
    stop: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    pub(crate) fn new(threads: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(WorkerQueue {
                queue: parking_lot::Mutex::new(std::collections::VecDeque::new()),
                ready: parking_lot::Condvar::new(),
                stop: std::sync::atomic::AtomicBool::new(false),
            }),
            threads: threads.max(1),
            started: std::sync::Once::new(),
        })
    }

    fn start(&self) {
        for i in 0..self.threads {
            let queue = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name(format!("dw-nbd-io-{i}"))
                .spawn(move || queue.work());
            if let Err(e) = spawned {
                // Fewer workers only means less parallelism; with none at all jobs would
                // never run, so the first failure is fatal for this pool's users.
                tracing::error!(error = %e, "cannot start an NBD I/O worker thread");
            }
        }
    }

    /// Queues `jobs` and wakes workers: one per job that may block (exports without inline
    /// I/O, and flushes), so a slow device sees the whole queue depth; and one per 256 KiB
    /// of memory-copy work, since a burst of small copies is cheaper for one thread to run
    /// back to back than to spread over several sleeping threads.
    fn submit(&self, jobs: &mut Vec<(Arc<Shared>, Job)>) {
        if jobs.is_empty() {
            return;
        }
        self.started.call_once(|| self.start());
        let mut blocking = 0usize;
        let mut copy_bytes = 0u64;
        for (shared, job) in jobs.iter() {
            if job.command == Command::Flush || shared.export.inline_io_limit() == 0 {
                blocking += 1;
            } else {
                copy_bytes += u64::from(job.command.length());
            }
        }
        let copies = usize::try_from(copy_bytes.div_ceil(256 * 1024)).unwrap_or(usize::MAX);
        let wake = blocking.saturating_add(copies).clamp(1, jobs.len());
        self.inner.queue.lock().extend(jobs.drain(..));
        for _ in 0..wake {
            if !self.inner.ready.notify_one() {
                break;
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.inner
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Take the lock so no worker misses the wake-up between its check and its wait.
        drop(self.inner.queue.lock());
        self.inner.ready.notify_all();
    }
}

impl WorkerQueue {
    fn work(&self) {
        loop {
            let (shared, job) = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(item) = queue.pop_front() {
                        break item;
                    }
                    if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    self.ready.wait(&mut queue);
                }
            };
            let reply = run_job(&shared, job);
            // If the writer is gone the connection is closing; the reply has nowhere to go.
            let _ = shared.tx.send(Outgoing::One(reply));
        }
    }
}

#[derive(Clone, Copy)]
enum Stopped {
    Shutdown,
    Idle,
}

/// Runs reads under the connection's stop conditions: server shutdown and idle timeout.
struct Guard {
    shutdown: watch::Receiver<bool>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    // tokio's clock, so paused-time tests see the same time as the timer.
    last_activity: tokio::time::Instant,
    count: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Guard {
    async fn run<F: Future>(&mut self, fut: F) -> Result<F::Output, Stopped> {
        let fut = std::pin::pin!(fut);
        let mut fut = fut;
        loop {
            let Self {
                shutdown,
                idle,
                last_activity,
                count,
                max_in_flight,
            } = self;
            let idle_fired = async {
                match idle.as_mut() {
                    Some((_, sleep)) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                out = &mut fut => return Ok(out),
                () = wait_shutdown(shutdown) => return Err(Stopped::Shutdown),
                () = idle_fired => {
                    let Some((timeout, sleep)) = idle.as_mut() else { continue };
                    // The reader holds one permit itself while it waits.
                    let busy = count.available_permits() + 1 < *max_in_flight;
                    if !busy && last_activity.elapsed() >= *timeout {
                        return Err(Stopped::Idle);
                    }
                    let base = if busy { tokio::time::Instant::now() } else { *last_activity };
                    sleep.as_mut().reset(base + *timeout);
                }
            }
        }
    }
}

/// Result of reading exactly one buffer under the guard.
enum ReadOutcome {
    Done,
    Eof,
    Stopped(Stopped),
}

async fn guarded_read_exact<R: AsyncRead + Unpin>(
    guard: &mut Guard,
    rd: &mut R,
    buf: &mut [u8],
) -> Result<ReadOutcome, TransmissionError> {
    match guard.run(rd.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(ReadOutcome::Done),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(ReadOutcome::Eof),
        Ok(Err(e)) => Err(TransmissionError::Read(e)),
        Err(s) => Ok(ReadOutcome::Stopped(s)),
    }
}

/// Runs the transmission phase on an already negotiated connection. Returns when the client
/// disconnects, on shutdown or idle timeout, or on an unrecoverable error; in-flight
/// requests are completed and their replies sent before it returns (bounded by
/// `drain_timeout`).
pub(crate) async fn run_transmission<R, W>(
    rd: &mut BufReader<R>,
    wr: W,
    negotiated: NegotiatedExport,
    settings: &TransmissionSettings,
    shutdown: watch::Receiver<bool>,
) -> (
    Result<TransmissionEnd, TransmissionError>,
    TransmissionStats,
)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_replies(wr, rx));
    let shared = Arc::new(Shared {
        export: Arc::clone(&negotiated.export),
        name: Arc::from(negotiated.name.as_str()),
        observer: Arc::clone(&settings.observer),
        tx,
    });
    let mut stats = TransmissionStats::default();
    let mut pending = Pending::new(Arc::clone(&settings.workers));
    let result = request_loop(
        rd,
        &shared,
        &negotiated.limits,
        settings,
        shutdown,
        &mut stats,
        &mut pending,
    )
    .await;
    // Replies of requests already answered inline still go out; then the writer ends once
    // the last sender (ours and those of running jobs) is dropped.
    let _ = pending.flush(&shared.tx);
    drop(shared);
    let writer_result = match tokio::time::timeout(settings.drain_timeout, &mut writer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(TransmissionError::Write(e)),
        Ok(Err(join)) => Err(TransmissionError::Write(std::io::Error::other(
            join.to_string(),
        ))),
        Err(_) => {
            writer.abort();
            Err(TransmissionError::RepliesAbandoned(
                "the drain timeout expired",
            ))
        }
    };
    let result = match (result, writer_result) {
        (Err(e), _) => Err(e),
        // A client that disconnects may close its socket before reading the last replies.
        (Ok(end @ (TransmissionEnd::Disconnected | TransmissionEnd::Closed)), Err(_)) => Ok(end),
        (Ok(_), Err(e)) => Err(e),
        (Ok(end), Ok(())) => Ok(end),
    };
    (result, stats)
}

/// Replies of requests answered on the reader task, handed to the writer in one message
/// before the reader would block. They hold in-flight permits, so they must be flushed
/// before waiting for a permit.
struct Pending {
    replies: Vec<Reply>,
    /// Requests for the I/O threads, submitted together for the same reason.
    jobs: Vec<(Arc<Shared>, Job)>,
    workers: Arc<WorkerPool>,
}

impl Pending {
    fn new(workers: Arc<WorkerPool>) -> Self {
        Self {
            replies: Vec::with_capacity(MAX_REPLY_BATCH),
            jobs: Vec::with_capacity(MAX_REPLY_BATCH),
            workers,
        }
    }

    fn push_job(&mut self, shared: &Arc<Shared>, job: Job) {
        self.jobs.push((Arc::clone(shared), job));
        if self.jobs.len() >= MAX_REPLY_BATCH {
            self.workers.submit(&mut self.jobs);
        }
    }

    fn push(
        &mut self,
        reply: Reply,
        tx: &mpsc::UnboundedSender<Outgoing>,
    ) -> Result<(), TransmissionError> {
        self.replies.push(reply);
        if self.replies.len() >= MAX_REPLY_BATCH {
            self.flush(tx)?;
        }
        Ok(())
    }

    /// Sends the ready replies, then hands the queued jobs to the I/O threads (in this order,
    /// so replies of requests that arrived earlier and are already done go out first).
    fn flush(&mut self, tx: &mpsc::UnboundedSender<Outgoing>) -> Result<(), TransmissionError> {
        let sent = if self.replies.is_empty() {
            Ok(())
        } else {
            let batch = std::mem::replace(&mut self.replies, Vec::with_capacity(MAX_REPLY_BATCH));
            tx.send(Outgoing::Batch(batch))
                .map_err(|_| TransmissionError::Write(std::io::ErrorKind::BrokenPipe.into()))
        };
        self.workers.submit(&mut self.jobs);
        sent
    }

    /// Flushes unless `needed` bytes are already buffered (so the next read cannot block).
    fn flush_unless_buffered<R: AsyncRead>(
        &mut self,
        rd: &BufReader<R>,
        needed: usize,
        tx: &mpsc::UnboundedSender<Outgoing>,
    ) -> Result<(), TransmissionError> {
        if rd.buffer().len() < needed {
            self.flush(tx)?;
        }
        Ok(())
    }
}

async fn request_loop<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    shared: &Arc<Shared>,
    limits: &ExportLimits,
    settings: &TransmissionSettings,
    shutdown: watch::Receiver<bool>,
    stats: &mut TransmissionStats,
    pending: &mut Pending,
) -> Result<TransmissionEnd, TransmissionError> {
    let tx = &shared.tx;
    let count = Arc::new(Semaphore::new(settings.max_in_flight));
    let bytes = Arc::new(Semaphore::new(settings.max_in_flight_bytes));
    let now = tokio::time::Instant::now();
    let mut guard = Guard {
        shutdown,
        idle: settings
            .idle_timeout
            .map(|t| (t, Box::pin(tokio::time::sleep_until(now + t)))),
        last_activity: now,
        count: Arc::clone(&count),
        max_in_flight: settings.max_in_flight,
    };
    let inline_limit = shared.export.inline_io_limit();
    let mut header = [0u8; proto::REQUEST_HEADER_LEN];
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        if tx.is_closed() {
            return Err(TransmissionError::Write(
                std::io::ErrorKind::BrokenPipe.into(),
            ));
        }
        let count_permit = match Arc::clone(&count).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                pending.flush(tx)?;
                match guard.run(Arc::clone(&count).acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed.
                    Ok(Err(_)) => return Ok(TransmissionEnd::Shutdown),
                    Err(s) => return Ok(stopped_end(s)),
                }
            }
        };
        pending.flush_unless_buffered(rd, proto::REQUEST_HEADER_LEN, tx)?;
        match guarded_read_exact(&mut guard, rd, &mut header).await? {
            ReadOutcome::Done => {}
            ReadOutcome::Eof => return Ok(TransmissionEnd::Closed),
            ReadOutcome::Stopped(s) => return Ok(stopped_end(s)),
        }
        let start = Instant::now();
        if guard.idle.is_some() {
            guard.last_activity = tokio::time::Instant::now();
        }
        let request = proto::parse_request_header(&header)?;
        stats.requests += 1;
        let command = match validate_request(&request, limits) {
            Ok(Command::Disconnect) => return Ok(TransmissionEnd::Disconnected),
            Ok(c) => c,
            Err(refusal) => {
                stats.refused += 1;
                if request.command == cmd::WRITE && request.length > 0 {
                    if request.length > WRITE_DRAIN_LIMIT {
                        return Err(TransmissionError::PayloadTooLarge(request.length));
                    }
                    pending.flush(tx)?;
                    match drain(&mut guard, rd, u64::from(request.length), &mut scratch).await? {
                        ReadOutcome::Done => {}
                        ReadOutcome::Eof => return Ok(TransmissionEnd::Closed),
                        ReadOutcome::Stopped(s) => return Ok(stopped_end(s)),
                    }
                }
                tracing::debug!(
                    handle = request.handle,
                    command = request.command,
                    offset = request.offset,
                    length = request.length,
                    reason = refusal.reason,
                    "refusing NBD request"
                );
                shared.observer.on_request(
                    &shared.name,
                    RequestKind::from_command(request.command),
                    u64::from(request.length),
                    start.elapsed(),
                    false,
                );
                let reply = Reply {
                    handle: request.handle,
                    error: refusal.errno,
                    data: None,
                    _count: count_permit,
                    _bytes: None,
                };
                pending.push(reply, tx)?;
                continue;
            }
        };
        let buffer_len = command.buffer_len();
        let (mut buf, bytes_permit) = if buffer_len > 0 {
            let permit = match Arc::clone(&bytes).try_acquire_many_owned(buffer_len) {
                Ok(p) => p,
                Err(_) => {
                    pending.flush(tx)?;
                    match guard
                        .run(Arc::clone(&bytes).acquire_many_owned(buffer_len))
                        .await
                    {
                        Ok(Ok(p)) => p,
                        Ok(Err(_)) => return Ok(TransmissionEnd::Shutdown),
                        Err(s) => return Ok(stopped_end(s)),
                    }
                }
            };
            let len = usize::try_from(buffer_len).unwrap_or(usize::MAX);
            (Some(settings.pool.get(len)), Some(permit))
        } else {
            (None, None)
        };
        if let (Command::Write { .. }, Some(b)) = (&command, buf.as_mut()) {
            pending.flush_unless_buffered(rd, b.len(), tx)?;
            match guarded_read_exact(&mut guard, rd, b).await? {
                ReadOutcome::Done => {}
                ReadOutcome::Eof => return Ok(TransmissionEnd::Closed),
                ReadOutcome::Stopped(s) => return Ok(stopped_end(s)),
            }
            stats.bytes_written += u64::from(buffer_len);
        } else if let Command::Read { length, .. } = command {
            stats.bytes_read += u64::from(length);
        }
        let job = Job {
            handle: request.handle,
            command,
            buf,
            start,
            count: count_permit,
            bytes: bytes_permit,
        };
        if command != Command::Flush && command.length() <= inline_limit {
            pending.push(run_job(shared, job), tx)?;
        } else {
            pending.push_job(shared, job);
        }
    }
}

/// Completes once the server's shutdown flag is set (or its sender is gone). Does not hold
/// the watch lock after returning, so futures using it stay `Send`.
pub(crate) async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&stop| stop).await;
}

fn stopped_end(s: Stopped) -> TransmissionEnd {
    match s {
        Stopped::Shutdown => TransmissionEnd::Shutdown,
        Stopped::Idle => TransmissionEnd::IdleTimeout,
    }
}

async fn drain<R: AsyncRead + Unpin>(
    guard: &mut Guard,
    rd: &mut R,
    mut remaining: u64,
    scratch: &mut Vec<u8>,
) -> Result<ReadOutcome, TransmissionError> {
    scratch.resize(64 * 1024, 0);
    while remaining > 0 {
        let step = usize::try_from(remaining.min(scratch.len() as u64)).unwrap_or(scratch.len());
        match guarded_read_exact(guard, rd, &mut scratch[..step]).await? {
            ReadOutcome::Done => remaining -= step as u64,
            other => return Ok(other),
        }
    }
    Ok(ReadOutcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ExportLimits {
        ExportLimits {
            size: 1 << 20,
            flags: tflag::HAS_FLAGS
                | tflag::SEND_FLUSH
                | tflag::SEND_FUA
                | tflag::SEND_TRIM
                | tflag::SEND_WRITE_ZEROES,
            minimum: 1,
            preferred: 4096,
            max_payload: 65536,
        }
    }

    fn req(command: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            command,
            handle: 1,
            offset,
            length,
        }
    }

    #[test]
    fn valid_commands() {
        let l = limits();
        assert_eq!(
            validate_request(&req(cmd::READ, 0, 0, 4096), &l),
            Ok(Command::Read {
                offset: 0,
                length: 4096
            })
        );
        assert_eq!(
            validate_request(&req(cmd::WRITE, cmd_flag::FUA, 100, 10), &l),
            Ok(Command::Write {
                offset: 100,
                length: 10,
                fua: true
            })
        );
        assert_eq!(
            validate_request(&req(cmd::FLUSH, 0, 0, 0), &l),
            Ok(Command::Flush)
        );
        assert_eq!(
            validate_request(&req(cmd::WRITE_ZEROES, cmd_flag::NO_HOLE, 0, 1 << 20), &l),
            Ok(Command::WriteZeroes {
                offset: 0,
                length: 1 << 20,
                may_trim: false,
                fua: false
            })
        );
        assert_eq!(
            validate_request(&req(cmd::TRIM, 0, 4096, 4096), &l),
            Ok(Command::Trim {
                offset: 4096,
                length: 4096,
                fua: false
            })
        );
        assert_eq!(
            validate_request(&req(cmd::DISC, 0xffff, 5, 5), &l),
            Ok(Command::Disconnect)
        );
        // Zero-length requests at the very end are in range.
        assert!(validate_request(&req(cmd::READ, 0, 1 << 20, 0), &l).is_ok());
        // FUA is accepted on reads once negotiated.
        assert!(validate_request(&req(cmd::READ, cmd_flag::FUA, 0, 1), &l).is_ok());
    }

    #[test]
    fn errors() {
        let l = limits();
        let e = |h: RequestHeader| validate_request(&h, &l).unwrap_err().errno;
        assert_eq!(e(req(cmd::READ, 0, (1 << 20) - 1, 2)), errno::EINVAL);
        assert_eq!(e(req(cmd::READ, 0, (1 << 20) + 1, 0)), errno::EINVAL);
        assert_eq!(e(req(cmd::WRITE, 0, (1 << 20) - 1, 2)), errno::ENOSPC);
        assert_eq!(e(req(cmd::WRITE_ZEROES, 0, 1 << 20, 1)), errno::ENOSPC);
        assert_eq!(e(req(cmd::TRIM, 0, 1 << 20, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::READ, 0, u64::MAX, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::WRITE, 0, u64::MAX - 1, 4)), errno::EINVAL);
        assert_eq!(e(req(cmd::READ, 0, 0, 65537)), errno::EINVAL);
        assert_eq!(e(req(cmd::WRITE, 0, 0, 65537)), errno::EINVAL);
        assert_eq!(e(req(cmd::READ, cmd_flag::NO_HOLE, 0, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::READ, cmd_flag::DF, 0, 1)), errno::EINVAL);
        assert_eq!(
            e(req(cmd::WRITE_ZEROES, cmd_flag::FAST_ZERO, 0, 1)),
            errno::EINVAL
        );
        assert_eq!(e(req(cmd::READ, 1 << 15, 0, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::CACHE, 0, 0, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::BLOCK_STATUS, 0, 0, 1)), errno::EINVAL);
        assert_eq!(e(req(cmd::RESIZE, 0, 0, 0)), errno::EINVAL);
        assert_eq!(e(req(999, 0, 0, 0)), errno::EINVAL);
    }

    #[test]
    fn read_only_and_unadvertised() {
        let mut l = limits();
        l.flags = tflag::HAS_FLAGS | tflag::READ_ONLY;
        let e = |h: RequestHeader| validate_request(&h, &l).unwrap_err().errno;
        assert_eq!(e(req(cmd::WRITE, 0, 0, 1)), errno::EPERM);
        assert_eq!(e(req(cmd::TRIM, 0, 0, 1)), errno::EPERM);
        assert_eq!(e(req(cmd::WRITE_ZEROES, 0, 0, 1)), errno::EPERM);
        assert_eq!(e(req(cmd::FLUSH, 0, 0, 0)), errno::EINVAL);
        // No FUA without SEND_FUA.
        assert_eq!(e(req(cmd::READ, cmd_flag::FUA, 0, 1)), errno::EINVAL);
        assert!(validate_request(&req(cmd::READ, 0, 0, 1), &l).is_ok());
        let mut l = limits();
        l.flags = tflag::HAS_FLAGS;
        assert_eq!(
            validate_request(&req(cmd::TRIM, 0, 0, 1), &l)
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
        assert_eq!(
            validate_request(&req(cmd::WRITE_ZEROES, 0, 0, 1), &l)
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
    }

    #[test]
    fn alignment() {
        let mut l = limits();
        l.minimum = 512;
        let e = |h: RequestHeader| validate_request(&h, &l).map_err(|e| e.errno);
        assert!(e(req(cmd::READ, 0, 512, 1024)).is_ok());
        assert_eq!(e(req(cmd::READ, 0, 1, 512)), Err(errno::EINVAL));
        assert_eq!(e(req(cmd::WRITE, 0, 512, 100)), Err(errno::EINVAL));
        assert_eq!(e(req(cmd::TRIM, 0, 0, 511)), Err(errno::EINVAL));
    }

    proptest::proptest! {
        #[test]
        fn validated_requests_are_in_range(flags: u16, command in 0u16..10, offset: u64, length: u32, ro: bool) {
            let mut l = limits();
            if ro { l.flags |= tflag::READ_ONLY; }
            if let Ok(c) = validate_request(&req(command, flags, offset, length), &l)
                && c != Command::Disconnect
                && c != Command::Flush
            {
                {
                    proptest::prop_assert!(offset + u64::from(c.length()) <= l.size);
                    let is_read = matches!(c, Command::Read { .. });
                    proptest::prop_assert!(!ro || is_read, "read-only export accepted {:?}", c);
                    proptest::prop_assert!(c.buffer_len() <= l.max_payload);
                }
            }
        }
    }
}
