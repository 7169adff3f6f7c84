//! The server: configuration, accept loop, connection lifecycle and shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::export::ExportCatalog;
use crate::handshake::{NegotiateError, NegotiateOutcome, Negotiation, negotiate};
use crate::observer::{NbdObserver, NoopObserver, RefuseReason};
use crate::pool::BufferPool;
use crate::proto::rep;
use crate::transmission::{
    TransmissionEnd, TransmissionError, TransmissionSettings, TransmissionStats, WRITE_DRAIN_LIMIT,
    WorkerPool, run_transmission, wait_shutdown,
};

/// Size of the receive buffer in front of each connection: many pipelined request headers
/// arrive in one `read`. Write payloads beyond what is already buffered are read straight
/// into the request's buffer (64 KiB measured no different from 256 KiB).
const RECV_BUFFER: usize = 256 * 1024;
/// Idle buffer bytes the pool keeps per size class.
const POOL_RETAIN_PER_CLASS: usize = 16 << 20;
/// Connections turned away politely at the same time (more are just closed).
const MAX_CONCURRENT_REFUSALS: usize = 16;
/// How long a refused client may keep negotiating before it is dropped.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Smallest accepted `max_request_bytes`.
pub const MIN_REQUEST_BYTES_LIMIT: u32 = 64 * 1024;

/// Limits and timeouts of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections served at once; further clients are answered `NBD_REP_ERR_POLICY`
    /// ("too many connections") during negotiation.
    pub max_connections: usize,
    /// Largest read or write payload (advertised as the maximum block size).
    /// Between 64 KiB and 64 MiB.
    pub max_request_bytes: u32,
    /// Requests one connection may have in flight; the server stops reading requests from
    /// the connection while this many are unanswered.
    pub max_in_flight_per_connection: usize,
    /// Read and write buffer bytes one connection may have in flight. At least
    /// `max_request_bytes`. Worst-case buffer memory is `max_connections` times this.
    pub max_in_flight_bytes_per_connection: usize,
    /// Time a client has to finish negotiation.
    pub handshake_timeout: Duration,
    /// Close connections with nothing in flight and no request for this long. `None`
    /// (the default) keeps idle connections: a VM's disk may legitimately sit idle for hours.
    pub idle_timeout: Option<Duration>,
    /// On shutdown, time given to in-flight requests before connections are aborted.
    pub shutdown_grace: Duration,
    /// Threads that run requests which may block (exports with a zero
    /// `BlockExport::inline_io_limit`, larger requests, flushes). Shared by all connections;
    /// more threads keep more requests in flight on slow devices.
    pub io_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_request_bytes: 32 << 20,
            max_in_flight_per_connection: 64,
            max_in_flight_bytes_per_connection: 64 << 20,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: None,
            shutdown_grace: Duration::from_secs(10),
            io_threads: 8,
        }
    }
}

/// A [`ServerConfig`] value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `max_connections` is zero.
    #[error("max_connections must be at least 1")]
    NoConnections,
    /// `max_request_bytes` is out of range.
    #[error(
        "max_request_bytes {0} must be between {MIN_REQUEST_BYTES_LIMIT} and {WRITE_DRAIN_LIMIT}"
    )]
    RequestBytes(u32),
    /// `max_in_flight_per_connection` is zero or above the semaphore limit.
    #[error("max_in_flight_per_connection {0} must be between 1 and 65536")]
    InFlight(usize),
    /// `max_in_flight_bytes_per_connection` is below `max_request_bytes`.
    #[error(
        "max_in_flight_bytes_per_connection {bytes} must be at least max_request_bytes {request} and at most 4 GiB"
    )]
    InFlightBytes {
        /// Value given.
        bytes: usize,
        /// `max_request_bytes`.
        request: u32,
    },
    /// A timeout is zero.
    #[error("{0} must be longer than zero")]
    ZeroTimeout(&'static str),
    /// `io_threads` is zero or absurdly large.
    #[error("io_threads {0} must be between 1 and 1024")]
    IoThreads(usize),
}

impl ServerConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        if !(MIN_REQUEST_BYTES_LIMIT..=WRITE_DRAIN_LIMIT).contains(&self.max_request_bytes) {
            return Err(ConfigError::RequestBytes(self.max_request_bytes));
        }
        if !(1..=65536).contains(&self.max_in_flight_per_connection) {
            return Err(ConfigError::InFlight(self.max_in_flight_per_connection));
        }
        let request = self.max_request_bytes;
        let request_usize = usize::try_from(request).unwrap_or(usize::MAX);
        if self.max_in_flight_bytes_per_connection < request_usize
            || self.max_in_flight_bytes_per_connection > (4 << 30)
        {
            return Err(ConfigError::InFlightBytes {
                bytes: self.max_in_flight_bytes_per_connection,
                request,
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout("handshake_timeout"));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroTimeout("idle_timeout"));
        }
        if !(1..=1024).contains(&self.io_threads) {
            return Err(ConfigError::IoThreads(self.io_threads));
        }
        Ok(())
    }
}

/// A listening socket to serve.
#[derive(Debug)]
pub enum NbdListener {
    /// TCP (`nbd://host:port/export`).
    Tcp(TcpListener),
    /// Unix socket (`nbd+unix:///export?socket=path`).
    Unix(UnixListener),
}

impl From<TcpListener> for NbdListener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl From<UnixListener> for NbdListener {
    fn from(l: UnixListener) -> Self {
        Self::Unix(l)
    }
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl NbdListener {
    async fn accept(&self) -> std::io::Result<(Accepted, String)> {
        match self {
            Self::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                // Replies are batched by the writer; never let Nagle hold the last one back.
                s.set_nodelay(true)?;
                Ok((Accepted::Tcp(s), addr.to_string()))
            }
            Self::Unix(l) => {
                // Socket buffers stay at the kernel default: 4 MiB buffers measured up to 2x
                // slower for streaming reads (the data falls out of the CPU caches).
                let (s, _) = l.accept().await?;
                Ok((Accepted::Unix(s), "unix".to_owned()))
            }
        }
    }
}

/// Serving a listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error("invalid NBD server configuration: {0}")]
    Config(#[from] ConfigError),
}

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client sent `NBD_OPT_ABORT` during negotiation.
    Aborted,
    /// The client sent `NBD_CMD_DISC`.
    Disconnected,
    /// The client closed the connection.
    Closed,
    /// The idle timeout expired.
    IdleTimeout,
    /// The server shut down.
    Shutdown,
}

/// What happened on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// The export used, if negotiation finished.
    pub export: Option<String>,
    /// How it ended.
    pub end: ConnectionEnd,
    /// Request counters.
    pub stats: TransmissionStats,
}

/// A connection ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Negotiation did not finish within `handshake_timeout`.
    #[error("client did not finish NBD negotiation within {0:?}")]
    HandshakeTimeout(Duration),
    /// Negotiation failed.
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
    /// Transmission failed.
    #[error("transmission on export {export:?} failed: {source}")]
    Transmission {
        /// Export in use.
        export: String,
        /// Why.
        #[source]
        source: TransmissionError,
        /// Counters up to the failure.
        stats: TransmissionStats,
    },
}

/// An NBD server over an [`ExportCatalog`]. Cheap to clone; clones share connections
/// limits, buffers and the shutdown signal.
#[derive(Clone)]
pub struct NbdServer {
    catalog: Arc<dyn ExportCatalog>,
    config: Arc<ServerConfig>,
    observer: Arc<dyn NbdObserver>,
    pool: Arc<BufferPool>,
    workers: Arc<WorkerPool>,
    shutdown: Arc<watch::Sender<bool>>,
    connections: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("config", &self.config)
            .field("shutting_down", &*self.shutdown.borrow())
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// A server for `catalog` with `config`.
    pub fn new(catalog: Arc<dyn ExportCatalog>, config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let workers = WorkerPool::new(config.io_threads);
        Ok(Self {
            catalog,
            config: Arc::new(config),
            observer: Arc::new(NoopObserver),
            pool: BufferPool::new(POOL_RETAIN_PER_CLASS),
            workers,
            shutdown: Arc::new(watch::channel(false).0),
            connections,
            refusals: Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS)),
        })
    }

    /// Reports events to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn NbdObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Starts shutting down: listeners stop accepting, negotiating clients are dropped, and
    /// connections in transmission finish their in-flight requests and close.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether [`NbdServer::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Accepts and serves clients on `listener` until `shutdown` completes (or
    /// [`NbdServer::begin_shutdown`] is called), then waits up to `shutdown_grace` for
    /// connections to finish and aborts the rest.
    pub async fn serve(
        &self,
        listener: impl Into<NbdListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let listener = listener.into();
        let mut tasks = JoinSet::new();
        let mut stop = self.shutdown.subscribe();
        let shutdown = std::pin::pin!(shutdown);
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = wait_shutdown(&mut stop) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.dispatch(&mut tasks, stream, peer),
                    Err(e) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting an NBD connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        self.begin_shutdown();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tasks.len(),
                "NBD connections did not finish within the shutdown grace period; aborting them"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        Ok(())
    }

    fn dispatch(&self, tasks: &mut JoinSet<()>, stream: Accepted, peer: String) {
        match Arc::clone(&self.connections).try_acquire_owned() {
            Ok(permit) => {
                let server = self.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let _ = match stream {
                        Accepted::Tcp(s) => {
                            let (r, w) = s.into_split();
                            server.run_connection(r, w, &peer).await
                        }
                        Accepted::Unix(s) => {
                            let (r, w) = s.into_split();
                            server.run_connection(r, w, &peer).await
                        }
                    };
                });
            }
            Err(_) => {
                self.observer
                    .on_refused(&peer, RefuseReason::TooManyConnections);
                tracing::info!(%peer, limit = self.config.max_connections, "refusing NBD connection: too many connections");
                let Ok(permit) = Arc::clone(&self.refusals).try_acquire_owned() else {
                    return; // Dropping the stream closes it.
                };
                let server = self.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    match stream {
                        Accepted::Tcp(s) => {
                            let (r, w) = s.into_split();
                            server.refuse(r, w).await;
                        }
                        Accepted::Unix(s) => {
                            let (r, w) = s.into_split();
                            server.refuse(r, w).await;
                        }
                    }
                });
            }
        }
    }

    async fn refuse<R, W>(&self, r: R, mut w: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut r = BufReader::new(r);
        let message = format!(
            "too many connections: this server allows {} at once; try again later",
            self.config.max_connections
        );
        let catalog = Arc::clone(&self.catalog);
        let _ = tokio::time::timeout(
            REFUSAL_TIMEOUT.min(self.config.handshake_timeout),
            negotiate(&mut r, &mut w, |client| {
                Negotiation::refusing(catalog, client, rep::ERR_POLICY, message)
            }),
        )
        .await;
    }

    /// Serves one already-accepted stream (any `AsyncRead + AsyncWrite`, for example a
    /// `tokio::io::DuplexStream` in tests). Does not count against `max_connections`.
    pub async fn serve_connection<S>(
        &self,
        stream: S,
        peer: &str,
    ) -> Result<ConnectionSummary, ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        self.run_connection(r, w, peer).await
    }

    async fn run_connection<R, W>(
        &self,
        r: R,
        w: W,
        peer: &str,
    ) -> Result<ConnectionSummary, ConnectionError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.observer.on_connect(peer);
        let mut r = BufReader::with_capacity(RECV_BUFFER, r);
        let result = self.connection_phases(&mut r, w, peer).await;
        let export = match &result {
            Ok(s) => s.export.clone(),
            Err(ConnectionError::Transmission { export, .. }) => Some(export.clone()),
            Err(_) => None,
        };
        match &result {
            Ok(summary) => tracing::debug!(%peer, ?summary, "NBD connection ended"),
            Err(e) => tracing::info!(%peer, error = %e, "NBD connection ended with an error"),
        }
        self.observer.on_disconnect(peer, export.as_deref());
        result
    }

    async fn connection_phases<R, W>(
        &self,
        r: &mut BufReader<R>,
        mut w: W,
        peer: &str,
    ) -> Result<ConnectionSummary, ConnectionError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut stop = self.shutdown.subscribe();
        let closed = |end| ConnectionSummary {
            export: None,
            end,
            stats: TransmissionStats::default(),
        };
        if *stop.borrow() {
            return Ok(closed(ConnectionEnd::Shutdown));
        }
        let catalog = Arc::clone(&self.catalog);
        let max_request_bytes = self.config.max_request_bytes;
        let handshake = tokio::time::timeout(
            self.config.handshake_timeout,
            negotiate(r, &mut w, |client| {
                Negotiation::new(catalog, client, max_request_bytes)
            }),
        );
        let outcome = tokio::select! {
            o = handshake => match o {
                Ok(o) => o?,
                Err(_) => return Err(ConnectionError::HandshakeTimeout(self.config.handshake_timeout)),
            },
            () = wait_shutdown(&mut stop) => return Ok(closed(ConnectionEnd::Shutdown)),
        };
        let negotiated = match outcome {
            NegotiateOutcome::Aborted => return Ok(closed(ConnectionEnd::Aborted)),
            NegotiateOutcome::Transmit(n) => n,
        };
        let name = negotiated.name.clone();
        tracing::debug!(%peer, export = %name, limits = ?negotiated.limits, "NBD client entered transmission");
        self.observer.on_export_opened(peer, &name);
        let settings = TransmissionSettings {
            pool: Arc::clone(&self.pool),
            workers: Arc::clone(&self.workers),
            observer: Arc::clone(&self.observer),
            max_in_flight: self.config.max_in_flight_per_connection,
            max_in_flight_bytes: self.config.max_in_flight_bytes_per_connection,
            idle_timeout: self.config.idle_timeout,
            drain_timeout: self.config.shutdown_grace,
        };
        let (result, stats) = run_transmission(r, w, negotiated, &settings, stop).await;
        match result {
            Ok(end) => Ok(ConnectionSummary {
                export: Some(name),
                end: match end {
                    TransmissionEnd::Disconnected => ConnectionEnd::Disconnected,
                    TransmissionEnd::Closed => ConnectionEnd::Closed,
                    TransmissionEnd::IdleTimeout => ConnectionEnd::IdleTimeout,
                    TransmissionEnd::Shutdown => ConnectionEnd::Shutdown,
                },
                stats,
            }),
            Err(source) => Err(ConnectionError::Transmission {
                export: name,
                source,
                stats,
            }),
        }
    }
}
