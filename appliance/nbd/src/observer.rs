//! Hooks for metrics: the daemon turns these calls into Prometheus counters and histograms.

use std::time::Duration;

/// Kind of a transmission request, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// Any other command (answered with an error).
    Other,
}

impl RequestKind {
    /// The kind of the NBD command code `command`.
    pub fn from_command(command: u16) -> Self {
        use crate::proto::cmd;
        match command {
            cmd::READ => Self::Read,
            cmd::WRITE => Self::Write,
            cmd::FLUSH => Self::Flush,
            cmd::TRIM => Self::Trim,
            cmd::WRITE_ZEROES => Self::WriteZeroes,
            _ => Self::Other,
        }
    }

    /// A short lowercase label (`read`, `write`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Flush => "flush",
            Self::Trim => "trim",
            Self::WriteZeroes => "write_zeroes",
            Self::Other => "other",
        }
    }
}

/// Why a connection was turned away before negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// `ServerConfig::max_connections` connections were already open.
    TooManyConnections,
    /// The server is shutting down.
    ShuttingDown,
}

/// Receives server events. Every method has an empty default; calls come from connection
/// tasks and blocking-pool threads, so implementations must be cheap and must not block.
pub trait NbdObserver: Send + Sync + 'static {
    /// A client connected (`peer` is its address, or a label for in-memory streams).
    fn on_connect(&self, peer: &str) {
        let _ = peer;
    }

    /// A client was turned away.
    fn on_refused(&self, peer: &str, reason: RefuseReason) {
        let _ = (peer, reason);
    }

    /// A client finished negotiation and entered transmission on `export`.
    fn on_export_opened(&self, peer: &str, export: &str) {
        let _ = (peer, export);
    }

    /// A request completed (`ok` false if it was answered with an error). `bytes` is the
    /// request length; `latency` runs from the arrival of the header to the reply being queued.
    fn on_request(&self, export: &str, kind: RequestKind, bytes: u64, latency: Duration, ok: bool) {
        let _ = (export, kind, bytes, latency, ok);
    }

    /// A connection ended; `export` is `None` if it never left negotiation.
    fn on_disconnect(&self, peer: &str, export: Option<&str>) {
        let _ = (peer, export);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl NbdObserver for NoopObserver {}
