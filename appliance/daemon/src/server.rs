//! The listeners: the API on the Unix socket and HTTPS, S3, NBD and plain-HTTP metrics; and
//! the daemon's life: single-instance lock, readiness, watchdog, signals, clean shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use crate::api::{PeerAddr, Transport};
use crate::appliance::Appliance;
use crate::config::Config;

/// How long shutdown waits for API connections (event streams never end by themselves).
const API_GRACE: Duration = Duration::from_secs(5);
/// TLS handshakes must finish within this.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// HTTPS connections at once.
const MAX_HTTPS_CONNECTIONS: usize = 256;

/// The addresses actually bound (port 0 in the configuration picks a free one).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Bound {
    /// Unix socket.
    pub socket: PathBuf,
    /// HTTPS.
    pub https: Option<SocketAddr>,
    /// S3.
    pub s3: Option<SocketAddr>,
    /// NBD.
    pub nbd: Option<SocketAddr>,
    /// Metrics.
    pub metrics: Option<SocketAddr>,
    /// HTTPS certificate fingerprint.
    pub fingerprint: Option<String>,
}

/// Holds the state directory's lock for the daemon's lifetime.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes `<state>/dwd.lock`, refusing a second daemon on the same state.
///
/// # Errors
/// Another daemon holds it, or the file cannot be made.
pub fn lock_state(dir: &Path) -> anyhow::Result<InstanceLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let path = dir.join("dwd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(InstanceLock { _lock: l }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another dwd is already running on the state directory {} (it holds {})",
            dir.display(),
            path.display()
        ),
        Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
    }
}

fn spawn_conn<I>(io: I, router: axum::Router, graceful: &GracefulShutdown)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .header_read_timeout(Duration::from_secs(30))
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(TokioIo::new(dw_s3::linger::Lingering::new(io)), svc);
    let fut = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::debug!("API connection ended: {e}");
        }
    });
}

async fn serve_unix(
    app: Arc<Appliance>,
    listener: tokio::net::UnixListener,
    mut stop: watch::Receiver<bool>,
) {
    let router = crate::api::router(Arc::clone(&app), Transport::Socket);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => spawn_conn(s, router.clone(), &graceful),
                Err(e) => {
                    tracing::warn!("API socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(API_GRACE, graceful.shutdown()).await;
}

async fn serve_https(
    app: Arc<Appliance>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let router = crate::api::router(Arc::clone(&app), Transport::Https);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTPS_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("HTTPS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone().layer(axum::Extension(PeerAddr(peer.ip())));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = TowerToHyperService::new(router);
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .header_read_timeout(Duration::from_secs(30))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(dw_s3::linger::Lingering::new(tls)), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "HTTPS connection ended: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(API_GRACE, graceful.shutdown()).await;
}

async fn serve_metrics(
    app: Arc<Appliance>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(app): axum::extract::State<Arc<Appliance>>| async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        crate::metrics::render(&app),
                    )
                },
            ),
        )
        .with_state(app);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            r = listener.accept() => if let Ok((s, _)) = r { spawn_conn(s, router.clone(), &graceful) },
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(API_GRACE, graceful.shutdown()).await;
}

fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        // We hold the instance lock, so no live daemon owns this socket: it is stale.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // Created owner-only from the start (umask), then made explicit.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(l)
}

async fn bind_tcp(what: &str, addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    Ok(Some(l))
}

fn url_host(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) if v.ip().is_unspecified() => format!("127.0.0.1:{}", v.port()),
        SocketAddr::V6(v) if v.ip().is_unspecified() => format!("[::1]:{}", v.port()),
        a => a.to_string(),
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down cleanly. In demo mode the demo is
/// set up (or found) before serving, and its summary printed once everything listens.
///
/// # Errors
/// Start-up failures (state, listeners), with the reason.
pub async fn run(cfg: Config, demo: Option<crate::demo::DemoOptions>) -> anyhow::Result<()> {
    let _lock = lock_state(&cfg.state_dir)?;
    crate::metrics::install();
    let socket_path = cfg.socket_path();
    let app = tokio::task::spawn_blocking(move || Appliance::start(cfg))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = app.cfg.clone();
    if let Some(opts) = demo.clone() {
        let a = Arc::clone(&app);
        tokio::task::spawn_blocking(move || crate::demo::prepare(&a, &opts))
            .await?
            .context("setting up the demo")?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound = Bound {
        socket: socket_path.clone(),
        ..Bound::default()
    };

    let unix = bind_unix(&socket_path)?;
    tasks.spawn(serve_unix(Arc::clone(&app), unix, stop_rx.clone()));

    if let Some(l) = bind_tcp("HTTPS", &cfg.api.https_listen).await? {
        let id = {
            let dir = cfg.state_dir.join("tls");
            tokio::task::spawn_blocking(move || crate::tls::load_or_create(&dir))
                .await?
                .map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let addr = l.local_addr()?;
        bound.https = Some(addr);
        bound.fingerprint = Some(id.fingerprint.clone());
        tasks.spawn(serve_https(Arc::clone(&app), l, id.config, stop_rx.clone()));
    }

    if let Some(l) = bind_tcp("S3", &cfg.s3.listen).await? {
        bound.s3 = Some(l.local_addr()?);
        let s3cfg = dw_s3::S3Config {
            region: cfg.s3.region.clone(),
            max_concurrent_requests: cfg.s3.max_concurrent_requests,
            max_connections: cfg.s3.max_connections,
            ..dw_s3::S3Config::default()
        };
        let store: Arc<dyn dw_s3::ObjectStore> =
            Arc::new(crate::s3store::VdeStore::new(Arc::clone(&app)));
        let auth: Arc<dyn dw_s3::Authorizer> =
            Arc::new(crate::s3store::DbAuth::new(Arc::clone(&app.db)));
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = dw_s3::serve(
                l,
                s3cfg,
                store,
                auth,
                Some(Arc::new(crate::metrics::S3Metrics)),
                shutdown,
            )
            .await
            {
                tracing::error!("S3 server stopped: {e}");
            }
        });
    }

    if let Some(l) = bind_tcp("NBD", &cfg.nbd.listen).await? {
        bound.nbd = Some(l.local_addr()?);
        let catalog = Arc::new(crate::nbdexport::VolumeCatalog::new(Arc::clone(&app)));
        let nbdcfg = dw_nbd::ServerConfig {
            max_connections: cfg.nbd.max_connections,
            ..dw_nbd::ServerConfig::default()
        };
        let server = dw_nbd::NbdServer::new(catalog, nbdcfg)
            .map_err(|e| anyhow::anyhow!("NBD configuration: {e}"))?
            .with_observer(Arc::new(crate::metrics::NbdMetrics));
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = server.serve(l, shutdown).await {
                tracing::error!("NBD server stopped: {e}");
            }
        });
    }

    if let Some(l) = bind_tcp("metrics", &cfg.metrics.listen).await? {
        bound.metrics = Some(l.local_addr()?);
        tasks.spawn(serve_metrics(Arc::clone(&app), l, stop_rx.clone()));
    }

    {
        let mut ep = app.endpoints.write();
        ep.https_url = bound.https.map(|a| format!("https://{}", url_host(a)));
        ep.fingerprint.clone_from(&bound.fingerprint);
        ep.s3_url = bound.s3.map(|a| format!("http://{}", url_host(a)));
        ep.nbd_url = bound.nbd.map(|a| format!("nbd://{}", url_host(a)));
        ep.metrics_url = bound
            .metrics
            .map(|a| format!("http://{}/metrics", url_host(a)));
    }
    let endpoints = cfg.state_dir.join("endpoints.json");
    std::fs::write(&endpoints, serde_json::to_vec_pretty(&bound)?)
        .with_context(|| format!("cannot write {}", endpoints.display()))?;

    tasks.spawn(crate::scheduler::run(Arc::clone(&app), stop_rx.clone()));

    if demo.is_some() {
        let (a, b) = (Arc::clone(&app), bound.clone());
        tokio::task::spawn_blocking(move || crate::demo::report(&a, &b)).await??;
    }
    tracing::info!(
        "dwd {} ready: socket {}, HTTPS {:?}, S3 {:?}, NBD {:?}",
        dw_api::VERSION,
        socket_path.display(),
        bound.https,
        bound.s3,
        bound.nbd
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(every) = sd_notify::watchdog_enabled() {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    _ = stop.changed() => break,
                }
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    // Servers stop accepting and drain (bounded by their grace periods).
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 30 s");
    }
    let app2 = Arc::clone(&app);
    tokio::task::spawn_blocking(move || app2.shutdown()).await?;
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(&endpoints);
    tracing::info!("dwd stopped cleanly");
    Ok(())
}
