//! Long operations as jobs with progress, and the event stream they (and state changes) feed.
//!
//! A job runs on its own thread (the work below is blocking I/O), reports progress through a
//! [`JobCtx`], and may be asked to stop. Progress reaches the event stream at most once a second
//! per job; the start and the end always do. Finished jobs are kept (bounded) so `dw job show`
//! works after the fact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dw_api::types::{Event, JobInfo};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::error::OpResult;
use crate::util::now_secs;

/// Events buffered for slow subscribers; a subscriber that falls further behind is told how
/// many it missed.
const EVENT_BUFFER: usize = 1024;
/// Finished jobs remembered.
const KEEP_FINISHED: usize = 256;

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    seq: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            tx,
            seq: AtomicU64::new(0),
        }
    }
}

impl Events {
    /// Publishes an event (and logs warnings and errors).
    pub fn emit(
        &self,
        kind: &str,
        level: &str,
        message: impl Into<String>,
        data: serde_json::Value,
    ) {
        let message = message.into();
        match level {
            "error" => tracing::error!(kind, "{message}"),
            "warning" => tracing::warn!(kind, "{message}"),
            _ => tracing::debug!(kind, "{message}"),
        }
        let ev = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time: now_secs(),
            kind: kind.to_owned(),
            level: level.to_owned(),
            message,
            data,
        };
        // No subscribers is fine.
        let _ = self.tx.send(ev);
    }

    /// A new subscription.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[derive(Debug, Clone)]
enum JobState {
    Running,
    Succeeded(Option<serde_json::Value>, String),
    Failed(String),
    Cancelled(String),
}

/// One job.
#[derive(Debug)]
pub struct Job {
    id: String,
    kind: String,
    target: String,
    unit: String,
    started: u64,
    finished: Mutex<Option<u64>>,
    state: Mutex<JobState>,
    done: AtomicU64,
    total: AtomicU64,
    cancel: Arc<AtomicBool>,
}

impl Job {
    /// Id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The API view.
    #[must_use]
    pub fn info(&self) -> JobInfo {
        // State and finish time are read under the state lock, as they are written, so a
        // finished job always shows its finish time.
        let (state, finished) = {
            let st = self.state.lock();
            (st.clone(), *self.finished.lock())
        };
        let (state, message, result) = match state {
            JobState::Running => ("running", None, None),
            JobState::Succeeded(r, m) => ("succeeded", Some(m), r),
            JobState::Failed(m) => ("failed", Some(m), None),
            JobState::Cancelled(m) => ("cancelled", Some(m), None),
        };
        JobInfo {
            id: self.id.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            state: state.into(),
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            unit: self.unit.clone(),
            started: self.started,
            finished,
            message,
            result,
        }
    }

    /// Whether it still runs.
    #[must_use]
    pub fn running(&self) -> bool {
        matches!(*self.state.lock(), JobState::Running)
    }

    /// Asks it to stop.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// What a job's body sees.
#[derive(Debug)]
pub struct JobCtx {
    job: Arc<Job>,
    events: Arc<Events>,
    last_event: Mutex<Instant>,
}

impl JobCtx {
    /// Reports progress.
    pub fn progress(&self, done: u64, total: u64) {
        self.job.done.store(done, Ordering::Relaxed);
        self.job.total.store(total, Ordering::Relaxed);
        let mut last = self.last_event.lock();
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            let info = self.job.info();
            self.events.emit(
                "job",
                "info",
                format!(
                    "{} {}: {done}/{total} {}",
                    info.kind, info.target, info.unit
                ),
                serde_json::to_value(info).unwrap_or_default(),
            );
        }
    }

    /// Whether the job was asked to stop.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed)
    }

    /// The cancel flag, for lower layers that take one.
    #[must_use]
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.job.cancel)
    }
}

/// Every job of this daemon run.
#[derive(Debug)]
pub struct Jobs {
    events: Arc<Events>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    /// Jobs publishing on `events`.
    #[must_use]
    pub fn new(events: Arc<Events>) -> Self {
        Self {
            events,
            jobs: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// A running job of `kind` on `target`, if any (to refuse duplicates).
    #[must_use]
    pub fn running(&self, kind: &str, target: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .values()
            .find(|j| j.kind == kind && j.target == target && j.running())
            .cloned()
    }

    /// Starts `body` on a new thread. It returns a result value and a message for people;
    /// an error fails the job.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn<F>(&self, kind: &str, target: &str, unit: &str, body: F) -> OpResult<Arc<Job>>
    where
        F: FnOnce(&JobCtx) -> OpResult<(Option<serde_json::Value>, String)> + Send + 'static,
    {
        let id = format!("{}-{}", kind, self.next.fetch_add(1, Ordering::Relaxed));
        let job = Arc::new(Job {
            id: id.clone(),
            kind: kind.to_owned(),
            target: target.to_owned(),
            unit: unit.to_owned(),
            started: now_secs(),
            finished: Mutex::new(None),
            state: Mutex::new(JobState::Running),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        {
            let mut jobs = self.jobs.lock();
            if jobs.len() >= KEEP_FINISHED {
                let old: Vec<String> = jobs
                    .iter()
                    .filter(|(_, j)| !j.running())
                    .map(|(k, _)| k.clone())
                    .take(jobs.len() + 1 - KEEP_FINISHED)
                    .collect();
                for k in old {
                    jobs.remove(&k);
                }
            }
            jobs.insert(id.clone(), Arc::clone(&job));
        }
        self.events.emit(
            "job",
            "info",
            format!("{kind} {target}: started ({id})"),
            serde_json::to_value(job.info()).unwrap_or_default(),
        );
        let ctx = JobCtx {
            job: Arc::clone(&job),
            events: Arc::clone(&self.events),
            last_event: Mutex::new(Instant::now()),
        };
        std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                let out = body(&ctx);
                let job = &ctx.job;
                let (level, msg) = {
                    let mut st = job.state.lock();
                    *st = match out {
                        Ok((r, m)) if job.cancel.load(Ordering::Relaxed) => {
                            let _ = r;
                            JobState::Cancelled(m)
                        }
                        Ok((r, m)) => JobState::Succeeded(r, m),
                        Err(e) => JobState::Failed(e.to_string()),
                    };
                    *job.finished.lock() = Some(now_secs());
                    match &*st {
                        JobState::Succeeded(_, m) => ("info", format!("succeeded: {m}")),
                        JobState::Cancelled(m) => ("warning", format!("cancelled: {m}")),
                        JobState::Failed(m) => ("error", format!("failed: {m}")),
                        JobState::Running => ("info", String::new()),
                    }
                };
                let info = job.info();
                ctx.events.emit(
                    "job",
                    level,
                    format!("{} {} {msg}", info.kind, info.target),
                    serde_json::to_value(info).unwrap_or_default(),
                );
            })
            .map_err(|e| {
                crate::error::OpError::Internal(format!("cannot start a job thread: {e}"))
            })?;
        Ok(job)
    }

    /// Every job, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<Arc<Job>> {
        let mut v: Vec<Arc<Job>> = self.jobs.lock().values().cloned().collect();
        v.sort_by_key(|j| (j.started, j.id.clone()));
        v
    }

    /// One job.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_report_and_finish() {
        let events = Arc::new(Events::default());
        let mut rx = events.subscribe();
        let jobs = Jobs::new(Arc::clone(&events));
        let j = jobs
            .spawn("scrub", "a1", "bytes", |ctx| {
                ctx.progress(5, 10);
                Ok((Some(serde_json::json!({"ok": true})), "clean".into()))
            })
            .unwrap();
        while j.running() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let info = j.info();
        assert_eq!(info.state, "succeeded");
        assert_eq!(info.done, 5);
        assert_eq!(info.message.as_deref(), Some("clean"));
        assert!(info.finished.is_some());
        let first = rx.try_recv().unwrap();
        assert!(first.message.contains("started"));
        let failed = jobs
            .spawn("scrub", "a2", "bytes", |_| {
                Err(crate::error::OpError::Unavailable("offline".into()))
            })
            .unwrap();
        while failed.running() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(failed.info().state, "failed");
        assert_eq!(jobs.list().len(), 2);
        assert!(jobs.get(j.id()).is_some());
    }
}
