//! Serving the S3 API: [`S3Config`], [`S3Observer`] and [`serve`].
//!
//! hyper (HTTP/1.1 and HTTP/2) on a TCP listener, with bounds on everything a client controls:
//! connections, concurrent requests, header size and count, idle time while reading headers or
//! a body, object size. TLS is the daemon's business: pass an [`Acceptor`] that wraps the TCP
//! stream (e.g. tokio-rustls) to [`serve_with`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::auth::Authorizer;
use crate::service::{AccessBridge, AuthBridge, NameRules, OpSlot, S3Api};
use crate::store::{MAX_OBJECT_SIZE, ObjectStore};

/// Settings of the S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Region reported to clients (GetBucketLocation, HeadBucket). Signatures are accepted for
    /// any region name the client signs with. Default `us-east-1`, which every client assumes
    /// when nothing is configured.
    pub region: String,
    /// Largest object accepted by PutObject and largest part (capped at 5 GiB for parts).
    pub max_object_size: u64,
    /// Requests served at once; beyond it requests get `503 SlowDown` immediately.
    pub max_concurrent_requests: usize,
    /// Open connections at once; beyond it the accept loop waits.
    pub max_connections: usize,
    /// Largest request head (request line plus headers) in bytes; larger gets `431`.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets `431`.
    pub max_headers: usize,
    /// Longest wait for request headers, and longest gap between two body chunks.
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Size of the chunks a GET streams out of the store reader.
    pub get_chunk_size: usize,
    /// Domain for virtual-hosted-style requests (`bucket.<domain>`); path style always works.
    pub virtual_host_domain: Option<String>,
    /// Most seconds a presigned URL may be used after its signing time beyond its expiry check
    /// (clock skew allowance, s3s default 900).
    pub presigned_max_skew_secs: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            max_object_size: MAX_OBJECT_SIZE,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            get_chunk_size: 1024 * 1024,
            virtual_host_domain: None,
            presigned_max_skew_secs: 900,
        }
    }
}

/// One finished request, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEvent {
    /// S3 operation name (e.g. `PutObject`), `unknown` when the request failed before routing
    /// (bad signature, malformed path), `Throttled` when refused by the concurrency bound.
    pub op: String,
    /// HTTP status sent.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From request start to the end (or abort) of the response body.
    pub latency: Duration,
}

/// Metrics hook: called once per request when its response body is finished or dropped.
/// Must be cheap and must not block (the daemon feeds Prometheus counters and histograms).
pub trait S3Observer: Send + Sync + 'static {
    /// Records one request.
    fn on_request(&self, event: &RequestEvent);
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting connections failed persistently.
    #[error("accepting S3 connections on {addr} failed: {source}")]
    Accept {
        /// Listening address.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid S3 configuration: {0}")]
    Config(String),
}

/// Wraps accepted TCP streams, e.g. in TLS. [`PlainTcp`] passes them through.
pub trait Acceptor: Send + Sync + 'static {
    /// The stream hyper speaks HTTP on.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Handshake for one connection; an error drops just that connection.
    fn accept(&self, tcp: TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Self::Io>> + Send>>;
}

/// Plain HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Acceptor for PlainTcp {
    type Io = TcpStream;
    fn accept(
        &self,
        tcp: TcpStream,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        Box::pin(async move { Ok(tcp) })
    }
}

/// Builds the s3s service (SigV4/SigV2 auth, access hook, our name rules) without serving it,
/// for callers that run their own HTTP loop.
#[must_use]
pub fn build_service(
    config: &S3Config,
    store: Arc<dyn ObjectStore>,
    auth: Arc<dyn Authorizer>,
) -> S3Service {
    let cfg = Arc::new(config.clone());
    let mut b = S3ServiceBuilder::new(S3Api::new(store, Arc::clone(&auth), Arc::clone(&cfg)));
    b.set_auth(AuthBridge(auth));
    b.set_access(AccessBridge);
    b.set_validation(NameRules);
    let mut s3cfg = s3s::config::S3Config::default();
    s3cfg.presigned_url_max_skew_time_secs = config.presigned_max_skew_secs;
    // XML bodies (multi-delete, complete multipart with 10000 parts) stay well under this.
    s3cfg.xml_max_body_size = 2 * 1024 * 1024;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        s3cfg,
    ))));
    if let Some(d) = &config.virtual_host_domain {
        match s3s::host::SingleDomain::new(d) {
            Ok(h) => b.set_host(h),
            Err(e) => {
                warn!(domain = %d, %e, "virtual host domain rejected; only path-style requests work")
            }
        }
    }
    b.build()
}

/// Serves S3 over plain HTTP until `shutdown` completes, then waits up to
/// [`S3Config::shutdown_grace`] for requests in flight.
///
/// # Errors
/// Invalid configuration, or the listener failing persistently.
pub async fn serve(
    listener: TcpListener,
    config: S3Config,
    store: Arc<dyn ObjectStore>,
    auth: Arc<dyn Authorizer>,
    observer: Option<Arc<dyn S3Observer>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(listener, PlainTcp, config, store, auth, observer, shutdown).await
}

/// [`serve`] with an [`Acceptor`] (TLS hook).
///
/// # Errors
/// Invalid configuration, or the listener failing persistently.
#[allow(clippy::too_many_arguments)] // the daemon passes each piece from a different owner
pub async fn serve_with<A: Acceptor>(
    listener: TcpListener,
    acceptor: A,
    config: S3Config,
    store: Arc<dyn ObjectStore>,
    auth: Arc<dyn Authorizer>,
    observer: Option<Arc<dyn S3Observer>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if config.max_concurrent_requests == 0 || config.max_connections == 0 {
        return Err(ServeError::Config(
            "max_concurrent_requests and max_connections must be > 0".into(),
        ));
    }
    if config.max_header_bytes < 8192 {
        return Err(ServeError::Config(
            "max_header_bytes must be at least 8192 (hyper's minimum)".into(),
        ));
    }
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let service = build_service(&config, store, auth);
    let handler = Arc::new(Handler {
        service,
        requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        observer,
    });
    let conns = Arc::new(Semaphore::new(config.max_connections));
    let acceptor = Arc::new(acceptor);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.request_timeout)
        .max_buf_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(u32::try_from(config.max_concurrent_requests).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    info!(%addr, "S3 endpoint listening");
    let mut shutdown = std::pin::pin!(shutdown);
    let mut consecutive_errors = 0u32;
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&conns).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => { consecutive_errors = 0; x }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; give up if it persists.
                    consecutive_errors += 1;
                    warn!(%e, "accept failed");
                    if consecutive_errors > 100 {
                        return Err(ServeError::Accept { addr, source: e });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = Arc::clone(&acceptor);
        let builder = Arc::clone(&builder);
        let handler = Arc::clone(&handler);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let io = match acceptor.accept(tcp).await {
                Ok(io) => io,
                Err(e) => {
                    debug!(%peer, %e, "connection handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let h = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(h.handle(req).await) }
            });
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(crate::linger::Lingering::new(io)),
                svc,
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%peer, %e, "connection ended with an error");
            }
        });
    }
    info!(%addr, "S3 endpoint shutting down");
    drop(listener);
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("S3 requests still running after the shutdown grace period; dropping them");
    }
    Ok(())
}

struct Handler {
    service: S3Service,
    requests: Arc<Semaphore>,
    observer: Option<Arc<dyn S3Observer>>,
}

impl Handler {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<ObservedBody> {
        let start = Instant::now();
        let bytes_in = Arc::new(AtomicU64::new(0));
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        let (body, body_end) = crate::linger::track(body);
        let Ok(permit) = Arc::clone(&self.requests).try_acquire_owned() else {
            let body = s3s::Body::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>too many concurrent requests; retry later</Message></Error>"
                    .to_owned(),
            );
            let mut resp = http::Response::new(body);
            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/xml"),
            );
            body_end.close_if_unread(version, &mut resp);
            return self.observe(resp, "Throttled".into(), start, bytes_in, None);
        };
        let slot = OpSlot::default();
        parts.extensions.insert(slot.clone());
        let counted = CountingBody {
            inner: body,
            count: Arc::clone(&bytes_in),
        };
        let req = http::Request::from_parts(parts, s3s::Body::http_body_unsync(counted));
        let mut resp = match self.service.call(req).await {
            Ok(r) => r,
            Err(e) => {
                // s3s turns protocol errors into S3 error responses itself; this is a bug path.
                tracing::error!(?e, "S3 service failed");
                let mut r = http::Response::new(s3s::Body::from(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>internal error</Message></Error>".to_owned(),
                ));
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        body_end.close_if_unread(version, &mut resp);
        let op = slot.get().unwrap_or_else(|| "unknown".into());
        self.observe(resp, op, start, bytes_in, Some(permit))
    }

    fn observe(
        &self,
        resp: http::Response<s3s::Body>,
        op: String,
        start: Instant,
        bytes_in: Arc<AtomicU64>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> http::Response<ObservedBody> {
        let status = resp.status().as_u16();
        resp.map(|inner| ObservedBody {
            inner,
            sent: 0,
            done: Some(Finish {
                observer: self.observer.clone(),
                op,
                status,
                start,
                bytes_in,
                _permit: permit,
            }),
        })
    }
}

/// Counts request body bytes.
struct CountingBody {
    inner: crate::linger::TrackedBody<Incoming>,
    count: Arc<AtomicU64>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            self.count
                .fetch_add(u64::try_from(d.len()).unwrap_or(0), Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Finish {
    observer: Option<Arc<dyn S3Observer>>,
    op: String,
    status: u16,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
    /// Holds the request's concurrency slot until the response is fully sent.
    _permit: Option<OwnedSemaphorePermit>,
}

/// Response body that reports the request to the observer when it ends or is dropped.
pub struct ObservedBody {
    inner: s3s::Body,
    sent: u64,
    done: Option<Finish>,
}

impl std::fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl ObservedBody {
    fn finish(&mut self) {
        if let Some(f) = self.done.take()
            && let Some(o) = &f.observer
        {
            o.on_request(&RequestEvent {
                op: f.op,
                status: f.status,
                bytes_in: f.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.sent,
                latency: f.start.elapsed(),
            });
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.sent += u64::try_from(d.len()).unwrap_or(0);
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
