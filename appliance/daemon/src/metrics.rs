//! Prometheus metrics (`/metrics`): drives, arrays, VDEs, and request rates and latencies of
//! S3, NBD and the API. Alert rules on these are in docs/ALERTS.md.
//!
//! Counters and histograms are recorded as requests happen; gauges of state (array state,
//! capacity, drive health) are refreshed at each scrape, so they are never stale.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

use crate::appliance::Appliance;

/// Latency buckets, seconds: 100 µs .. 30 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Last health poll per device: (verdict 0 ok / 1 warning / 2 failing / 3 unknown, °C).
static DRIVES: Mutex<BTreeMap<String, (u8, Option<i64>)>> = Mutex::new(BTreeMap::new());

/// Installs the recorder (once per process; later calls reuse it).
pub fn install() {
    HANDLE.get_or_init(|| {
        let b = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?;
        match b.install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("metrics recorder not installed: {e}");
                None
            }
        }
    });
}

/// Records the health poll result of a drive.
pub fn drive_health(device: &str, verdict: u8, temperature: Option<i64>) {
    DRIVES
        .lock()
        .insert(device.to_owned(), (verdict, temperature));
}

/// Records one API request.
pub fn api_request(method: &str, path: &str, status: u16, latency: Duration) {
    counter!("dw_api_requests_total", "method" => method.to_owned(), "path" => path.to_owned(), "status" => status.to_string()).increment(1);
    histogram!("dw_api_request_duration_seconds", "path" => path.to_owned())
        .record(latency.as_secs_f64());
}

/// Observes S3 requests.
#[derive(Debug, Default)]
pub struct S3Metrics;

impl dw_s3::S3Observer for S3Metrics {
    fn on_request(&self, e: &dw_s3::RequestEvent) {
        counter!("dw_s3_requests_total", "op" => e.op.clone(), "status" => e.status.to_string())
            .increment(1);
        histogram!("dw_s3_request_duration_seconds", "op" => e.op.clone())
            .record(e.latency.as_secs_f64());
        counter!("dw_s3_received_bytes_total").increment(e.bytes_in);
        counter!("dw_s3_sent_bytes_total").increment(e.bytes_out);
    }
}

/// Observes NBD requests.
#[derive(Debug, Default)]
pub struct NbdMetrics;

impl dw_nbd::NbdObserver for NbdMetrics {
    fn on_connect(&self, _peer: &str) {
        counter!("dw_nbd_connections_total").increment(1);
    }

    fn on_request(
        &self,
        export: &str,
        kind: dw_nbd::RequestKind,
        bytes: u64,
        latency: Duration,
        ok: bool,
    ) {
        let kind = format!("{kind:?}").to_ascii_lowercase();
        counter!("dw_nbd_requests_total", "export" => export.to_owned(), "kind" => kind.clone(), "ok" => ok.to_string()).increment(1);
        counter!("dw_nbd_bytes_total", "export" => export.to_owned(), "kind" => kind.clone())
            .increment(bytes);
        histogram!("dw_nbd_request_duration_seconds", "kind" => kind).record(latency.as_secs_f64());
    }
}

#[allow(clippy::cast_precision_loss)] // byte counts as f64 gauges: exact below 2^53 bytes
fn refresh(app: &Appliance) {
    for a in app.arrays() {
        let state = match a.state.as_str() {
            "healthy" => 0.0,
            "degraded" => 1.0,
            "offline" => 2.0,
            _ => 3.0,
        };
        gauge!("dw_array_state", "array" => a.name.clone()).set(state);
        gauge!("dw_array_size_bytes", "array" => a.name.clone()).set(a.size_bytes as f64);
        let failed = a
            .members
            .iter()
            .filter(|m| m.state == "failed" || m.state == "absent")
            .count();
        gauge!("dw_array_failed_members", "array" => a.name.clone()).set(failed as f64);
        let spares = a.members.iter().filter(|m| m.state == "spare").count();
        gauge!("dw_array_spares", "array" => a.name.clone()).set(spares as f64);
        let (ratio, running) = match &a.rebuild {
            Some(r) if r.total_bytes > 0 => (
                r.done_bytes as f64 / r.total_bytes as f64,
                if r.finished { 0.0 } else { 1.0 },
            ),
            _ => (1.0, 0.0),
        };
        gauge!("dw_array_rebuild_progress_ratio", "array" => a.name.clone()).set(ratio);
        gauge!("dw_array_rebuild_running", "array" => a.name.clone()).set(running);
        gauge!("dw_array_reconstructed_reads", "array" => a.name.clone())
            .set(a.reconstructed_reads as f64);
    }
    for v in app.vdes() {
        gauge!("dw_vde_unlocked", "vde" => v.name.clone()).set(if v.state == "unlocked" {
            1.0
        } else {
            0.0
        });
        if let Some(c) = v.capacity {
            for (kind, val) in [
                ("data", c.data_bytes),
                ("free", c.free_bytes),
                ("logical", c.logical_bytes),
                ("stored", c.stored_bytes),
                ("retained", c.retained_bytes),
                ("metadata", c.metadata_bytes),
                ("metadata_used", c.metadata_used),
            ] {
                gauge!("dw_vde_capacity_bytes", "vde" => v.name.clone(), "kind" => kind)
                    .set(val as f64);
            }
            gauge!("dw_vde_healed_total", "vde" => v.name.clone()).set(c.healed as f64);
        }
    }
    for (dev, (verdict, temp)) in DRIVES.lock().iter() {
        gauge!("dw_drive_health", "device" => dev.clone()).set(f64::from(*verdict));
        if let Some(t) = temp {
            gauge!("dw_drive_temperature_celsius", "device" => dev.clone()).set(*t as f64);
        }
    }
    gauge!("dw_uptime_seconds").set(app.health().uptime_secs as f64);
}

/// The metrics in Prometheus text format.
#[must_use]
pub fn render(app: &Arc<Appliance>) -> String {
    install();
    refresh(app);
    HANDLE.get().and_then(Option::as_ref).map_or_else(
        || "# metrics recorder unavailable\n".to_owned(),
        PrometheusHandle::render,
    )
}
