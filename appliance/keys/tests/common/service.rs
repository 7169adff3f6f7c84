//! Runs the key-release service in-process on 127.0.0.1:0 (its own thread and tokio runtime).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dw_keys::peer::server::{KeyService, ServiceConfig, serve, token_hash};
use dw_keys::peer::tls::{cert_fingerprint, generate_server_identity, server_config};
use dw_keys::snp::SnpCa;

pub struct Service {
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
    pub token: [u8; 32],
    pub state_path: PathBuf,
    pub service: Arc<Mutex<KeyService>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    pub fn start(dir: &Path, snp_ca: Option<SnpCa>) -> Service {
        let id = generate_server_identity().unwrap();
        let fingerprint = cert_fingerprint(&id.cert_der);
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).unwrap();
        let state_path = dir.join("enrollments.bin");
        let mut config = ServiceConfig::new(state_path.clone(), token_hash(&token));
        config.snp_ca = snp_ca;
        config.io_timeout = std::time::Duration::from_secs(5);
        let service = Arc::new(Mutex::new(KeyService::open(config).unwrap()));
        let tls = server_config(&id).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let svc = service.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, svc, tls, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().unwrap();
        Service {
            addr,
            fingerprint,
            token,
            state_path,
            service,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}
