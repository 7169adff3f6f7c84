//! Background work on schedules: scrubs, drive health polling with predictive replacement,
//! and retention of automatic snapshots. Alerts go to the event stream and the log.
//!
//! Scrub times are remembered in the state database, so a monthly scrub stays monthly across
//! restarts. Health: block devices are read with discovery (NVMe log, SMART); when a member's
//! verdict turns `failing` and its array has a hot spare, the member is replaced from the spare
//! while it still reads (a copy, not a reconstruction), before it dies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::appliance::Appliance;
use crate::state::META;
use crate::util::now_secs;

/// How often the scheduler looks at what is due.
const TICK: Duration = Duration::from_secs(5);

/// Health of one device: 0 ok, 1 warning, 2 failing, 3 unknown; temperature; reasons.
type DriveHealth = (u8, Option<i64>, String);

fn probe_health(paths: &[String]) -> HashMap<String, DriveHealth> {
    let mut out = HashMap::new();
    // Test hook (documented in docs/DAEMON.md): a JSON map of device path to verdict, so the
    // predictive path can be exercised with file-backed drives that have no SMART.
    if let Some(p) = std::env::var_os("DW_TEST_HEALTH_FILE")
        && let Ok(text) = std::fs::read_to_string(p)
        && let Ok(map) = serde_json::from_str::<HashMap<String, String>>(&text)
    {
        for (dev, v) in map {
            let code = match v.as_str() {
                "ok" => 0,
                "warning" => 1,
                "failing" => 2,
                _ => 3,
            };
            out.insert(dev, (code, None, format!("test hook: {v}")));
        }
    }
    let blocks: Vec<&String> = paths
        .iter()
        .filter(|p| !out.contains_key(*p))
        .filter(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        })
        .collect();
    if blocks.is_empty() {
        return out;
    }
    let inv = dw_probe::probe(&dw_probe::ProbeConfig::system());
    for p in blocks {
        let canon = std::fs::canonicalize(p).ok();
        let Some(d) = inv.devices.iter().find(|d| {
            canon.as_deref() == Some(std::path::Path::new(&d.path))
                || d.by_id.iter().any(|l| l == p)
        }) else {
            continue;
        };
        let code = match d.health.verdict {
            dw_probe::HealthVerdict::Ok => 0,
            dw_probe::HealthVerdict::Warning => 1,
            dw_probe::HealthVerdict::Failing => 2,
            dw_probe::HealthVerdict::Unknown => 3,
        };
        let why = d
            .health
            .reasons
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join("; ");
        out.insert(p.clone(), (code, d.health.temperature_celsius, why));
    }
    out
}

fn poll_health(app: &Arc<Appliance>, last: &mut HashMap<String, u8>) {
    for (array_id, paths) in app.array_devices() {
        let health = probe_health(&paths);
        for (dev, (code, temp, why)) in &health {
            crate::metrics::drive_health(dev, *code, *temp);
            let before = last.insert(dev.clone(), *code);
            if before == Some(*code) || *code == 0 || *code == 3 {
                continue;
            }
            let level = if *code == 2 { "error" } else { "warning" };
            let verdict = if *code == 2 { "failing" } else { "degrading" };
            app.events.emit(
                "drive",
                level,
                format!("drive {dev} is {verdict}: {why}"),
                serde_json::json!({"device": dev, "array": array_id}),
            );
            if *code == 2 && app.cfg.schedule.predictive_replace {
                predictive_replace(app, &array_id, dev);
            }
        }
    }
}

fn predictive_replace(app: &Arc<Appliance>, array_id: &str, dev: &str) {
    let Ok(info) = app.array_info(array_id) else {
        return;
    };
    let Some(role) = info
        .members
        .iter()
        .find(|m| m.device.as_deref() == Some(dev) && m.state == "in_sync")
        .and_then(|m| m.role)
    else {
        return;
    };
    if !info.members.iter().any(|m| m.state == "spare") {
        app.events.emit(
            "alert",
            "error",
            format!("array {}: drive {dev} is failing and there is no hot spare: add one (`dw array add-spare`)", info.name),
            serde_json::json!({"array": array_id}),
        );
        return;
    }
    match app.replace(array_id, role, None, false) {
        Ok(_) => app.events.emit(
            "alert",
            "warning",
            format!(
                "array {}: copying failing drive {dev} (role {role}) to a hot spare before it dies",
                info.name
            ),
            serde_json::json!({"array": array_id, "role": role}),
        ),
        Err(e) => app.events.emit(
            "alert",
            "error",
            format!(
                "array {}: cannot replace failing drive {dev}: {e}",
                info.name
            ),
            serde_json::json!({"array": array_id}),
        ),
    }
}

fn scrubs_due(app: &Arc<Appliance>) {
    let days = app.cfg.schedule.scrub_interval_days;
    if days == 0 {
        return;
    }
    let every = u64::from(days) * 86_400;
    for a in app.arrays() {
        if a.state == "offline" || a.state == "missing" {
            continue;
        }
        let key = format!("last_scrub/{}", a.id);
        let last: u64 = match app.db.get(META, &key) {
            Ok(Some(t)) => t,
            Ok(None) => {
                // A new array is scrubbed one interval after it is first seen, not at once.
                let _ = app.db.put(META, &key, &now_secs());
                continue;
            }
            Err(_) => continue,
        };
        if now_secs().saturating_sub(last) < every {
            continue;
        }
        match app.scrub(&a.id, true) {
            Ok(j) => {
                let _ = app.db.put(META, &key, &now_secs());
                tracing::info!("scheduled scrub of array {} started ({})", a.name, j.job_id);
            }
            Err(e) => tracing::debug!("scheduled scrub of array {} not started: {e}", a.name),
        }
    }
}

fn snapshot_retention(app: &Arc<Appliance>) {
    let days = app.cfg.schedule.snapshot_retention_days;
    if days == 0 {
        return;
    }
    let cutoff = now_secs().saturating_sub(u64::from(days) * 86_400);
    let Ok(containers) = app.containers() else {
        return;
    };
    for c in containers {
        let Ok(snaps) = app.snapshots(&c.name) else {
            continue;
        };
        for s in snaps {
            if s.name.starts_with("auto-") && s.created < cutoff {
                match app.delete_snapshot(&c.name, &s.name) {
                    Ok(()) => {
                        tracing::info!("snapshot {}@{} expired and was deleted", c.name, s.name)
                    }
                    Err(e) => tracing::warn!("snapshot {}@{} expired but: {e}", c.name, s.name),
                }
            }
        }
    }
}

/// Watches arrays for state changes and reports them (a member failing, a rebuild finishing).
fn watch_arrays(app: &Arc<Appliance>, last: &mut HashMap<String, (String, usize, bool)>) {
    for a in app.arrays() {
        let failed = a
            .members
            .iter()
            .filter(|m| m.state == "failed" || m.state == "absent")
            .count();
        let rebuilding = a.rebuild.as_ref().is_some_and(|r| !r.finished);
        let now = (a.state.clone(), failed, rebuilding);
        let before = last.insert(a.id.clone(), now.clone());
        let Some(before) = before else {
            continue;
        };
        if before == now {
            continue;
        }
        let level = match a.state.as_str() {
            "healthy" => "info",
            "degraded" => "warning",
            _ => "error",
        };
        let mut msg = format!("array {} is {}", a.name, a.state);
        if failed > before.1 {
            msg.push_str(&format!(", {failed} member(s) failed"));
        }
        if rebuilding && !before.2 {
            msg.push_str(", rebuilding onto a spare");
        }
        if !rebuilding && before.2 {
            match a.rebuild.as_ref().and_then(|r| r.error.clone()) {
                Some(e) => msg.push_str(&format!(", rebuild stopped: {e}")),
                None => msg.push_str(", rebuild finished"),
            }
        }
        app.events.emit(
            "array",
            level,
            msg,
            serde_json::to_value(&a).unwrap_or_default(),
        );
    }
}

/// Runs until `stop` changes.
pub async fn run(app: Arc<Appliance>, mut stop: watch::Receiver<bool>) {
    let mut last_health: Option<Instant> = None;
    let mut health_state = HashMap::new();
    let mut array_state = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let poll_every = app.cfg.schedule.health_poll_secs;
        let poll = poll_every > 0
            && last_health.is_none_or(|t| t.elapsed() >= Duration::from_secs(poll_every));
        if poll {
            last_health = Some(Instant::now());
        }
        let a = Arc::clone(&app);
        let mut hs = std::mem::take(&mut health_state);
        let mut ars = std::mem::take(&mut array_state);
        let r = tokio::task::spawn_blocking(move || {
            watch_arrays(&a, &mut ars);
            if poll {
                poll_health(&a, &mut hs);
            }
            scrubs_due(&a);
            snapshot_retention(&a);
            (hs, ars)
        })
        .await;
        match r {
            Ok((hs, ars)) => {
                health_state = hs;
                array_state = ars;
            }
            Err(e) => tracing::error!("scheduler pass failed: {e}"),
        }
    }
}
