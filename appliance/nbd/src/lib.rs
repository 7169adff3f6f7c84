//! NBD (Network Block Device) server for DataWarehouse volumes.
//!
//! The server speaks the fixed newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_LIST`, `NBD_OPT_EXPORT_NAME`, `NBD_OPT_ABORT`) and serves `NBD_CMD_READ`, `WRITE`,
//! `FLUSH`, `TRIM`, `WRITE_ZEROES` and `DISC` with simple replies, several requests in flight
//! per connection and several connections at once (`NBD_FLAG_CAN_MULTI_CONN` when the
//! export allows it). It runs on tokio and serves anything that implements the blocking
//! [`BlockExport`] trait, looked up by name through an [`ExportCatalog`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use dw_nbd::{MemoryExport, NbdServer, ServerConfig, StaticCatalog};
//!
//! let disk = Arc::new(MemoryExport::new(64 << 20)?);
//! let catalog = Arc::new(StaticCatalog::new().with_export("disk", "scratch disk", disk));
//! let server = NbdServer::new(catalog, ServerConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10809").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Protocol details, limits and the error mapping are documented in `docs/NBD.md`.

pub mod export;
pub mod file;
pub mod handshake;
pub mod memory;
pub mod observer;
mod pool;
pub mod proto;
pub mod server;
pub mod transmission;

pub use export::{
    BlockExport, BlockSizes, BlockSizesError, ExportCatalog, ExportError, ExportInfo,
    StaticCatalog, write_zeroes_by_writing,
};
pub use file::{FileExport, FileExportError, FileExportOptions};
pub use memory::{MemoryExport, MemoryExportError, MemoryExportOptions};
pub use observer::{NbdObserver, NoopObserver, RefuseReason, RequestKind};
pub use server::{
    ConfigError, ConnectionEnd, ConnectionError, ConnectionSummary, NbdListener, NbdServer,
    ServeError, ServerConfig,
};
pub use transmission::TransmissionStats;

/// Serves `catalog` on `listener` with `config` until `shutdown` completes.
/// Shorthand for [`NbdServer::new`] followed by [`NbdServer::serve`].
pub async fn serve(
    listener: impl Into<NbdListener>,
    catalog: std::sync::Arc<dyn ExportCatalog>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    NbdServer::new(catalog, config)?
        .serve(listener, shutdown)
        .await
}
