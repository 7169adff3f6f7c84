//! The key-release service: request handling (synchronous and testable) and a tokio TLS server
//! around it.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::attest::{parse_quote, verify_quote_signature};
use super::proto::{Enrollment, Evidence, MAX_ENROLL_LABEL, MAX_FRAME, Message, RefuseCode};
use super::state::{EnrolledMachine, MAX_ENROLLMENTS, ServiceState, StateIoError};
use super::{QuotePurpose, qualifying_data, share_proof, snp_report_data};
use crate::audit::constant_time_eq;
use crate::pcr::describe_changes;
use crate::secret::{Entropy, OsEntropy};
use crate::snp::{SnpCa, verify_report};
use crate::tpm::AkPublic;
use crate::types::{Clock, SystemClock, UnixTime, hex, short_hex};

/// How the service behaves.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The state file.
    pub state_path: PathBuf,
    /// BLAKE3 of the enrollment token (the token itself is shown once at `dw-keyd init`).
    pub token_hash: [u8; 32],
    /// Where SEV-SNP reports chain to (`None`: machines enrolled with SNP cannot be verified).
    pub snp_ca: Option<SnpCa>,
    /// How long a nonce stays valid.
    pub nonce_ttl: Duration,
    /// Most outstanding nonces overall.
    pub max_nonces: usize,
    /// Most outstanding nonces per machine.
    pub max_nonces_per_machine: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Per-read/write timeout.
    pub io_timeout: Duration,
    /// Most messages per connection.
    pub max_messages_per_connection: usize,
}

impl ServiceConfig {
    /// Defaults: 30 s nonces, 4096 outstanding (16 per machine), 64 connections, 10 s I/O
    /// timeout, 8 messages per connection.
    #[must_use]
    pub fn new(state_path: PathBuf, token_hash: [u8; 32]) -> ServiceConfig {
        ServiceConfig {
            state_path,
            token_hash,
            snp_ca: None,
            nonce_ttl: Duration::from_secs(30),
            max_nonces: 4096,
            max_nonces_per_machine: 16,
            max_connections: 64,
            io_timeout: Duration::from_secs(10),
            max_messages_per_connection: 8,
        }
    }
}

/// The hash stored for an enrollment token.
#[must_use]
pub fn token_hash(token: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("DataWarehouse dw-keyd v1 enrollment token", token)
}

/// "Now", injected: a monotonic clock for nonce lifetimes and the wall clock for records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic milliseconds.
    pub mono_ms: u64,
    /// Wall clock.
    pub wall: UnixTime,
}

#[derive(Debug)]
struct NonceEntry {
    machine_id: [u8; 16],
    expires_ms: u64,
}

/// Outstanding nonces: random, single use, short-lived, bound to a machine, bounded in number.
#[derive(Debug, Default)]
pub struct NonceBook {
    entries: HashMap<[u8; 32], NonceEntry>,
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceProblem {
    /// Never issued, or already used (a replay).
    #[error("the nonce is unknown or was already used (replayed request?)")]
    UnknownOrUsed,
    /// Too old.
    #[error("the nonce expired before the request arrived")]
    Expired,
    /// Issued to someone else.
    #[error("the nonce was issued to another machine")]
    OtherMachine,
    /// Too many outstanding.
    #[error("too many outstanding nonces; try again shortly")]
    Busy,
}

impl NonceBook {
    fn purge(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| e.expires_ms > now_ms);
    }

    /// Issues a nonce (bounded in total and per machine).
    ///
    /// # Errors
    /// [`NonceProblem::Busy`] when the bounds are reached.
    pub(crate) fn issue(
        &mut self,
        machine_id: [u8; 16],
        now_ms: u64,
        ttl: Duration,
        max_total: usize,
        max_per_machine: usize,
        rng: &mut dyn Entropy,
    ) -> Result<[u8; 32], NonceProblem> {
        self.purge(now_ms);
        if self.entries.len() >= max_total {
            return Err(NonceProblem::Busy);
        }
        if self
            .entries
            .values()
            .filter(|e| e.machine_id == machine_id)
            .count()
            >= max_per_machine
        {
            return Err(NonceProblem::Busy);
        }
        let mut nonce = [0u8; 32];
        rng.fill(&mut nonce).map_err(|_| NonceProblem::Busy)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.entries.insert(
            nonce,
            NonceEntry {
                machine_id,
                expires_ms: now_ms.saturating_add(ttl_ms),
            },
        );
        Ok(nonce)
    }

    /// Consumes a nonce: it is gone after this call whatever the outcome.
    ///
    /// # Errors
    /// When it is unknown, used, expired, or another machine's.
    pub fn consume(
        &mut self,
        nonce: &[u8; 32],
        machine_id: &[u8; 16],
        now_ms: u64,
    ) -> Result<(), NonceProblem> {
        let entry = self
            .entries
            .remove(nonce)
            .ok_or(NonceProblem::UnknownOrUsed)?;
        if entry.expires_ms <= now_ms {
            return Err(NonceProblem::Expired);
        }
        if &entry.machine_id != machine_id {
            return Err(NonceProblem::OtherMachine);
        }
        Ok(())
    }

    /// Outstanding nonces.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are outstanding.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The service's request handling.
#[derive(Debug)]
pub struct KeyService {
    config: ServiceConfig,
    state: ServiceState,
    nonces: NonceBook,
}

fn refuse(code: RefuseCode, reason: impl Into<String>) -> Message {
    Message::Refused {
        code,
        reason: reason.into(),
    }
}

/// A refusal on its way to becoming a reply (small, unlike [`Message`]).
#[derive(Debug)]
struct Refusal {
    code: RefuseCode,
    reason: String,
}

fn refusal(code: RefuseCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

impl From<Refusal> for Message {
    fn from(r: Refusal) -> Message {
        Message::Refused {
            code: r.code,
            reason: r.reason,
        }
    }
}

impl KeyService {
    /// Loads the state file (a missing file is an empty state).
    ///
    /// # Errors
    /// When the state file cannot be read or is damaged.
    pub fn open(config: ServiceConfig) -> Result<KeyService, StateIoError> {
        let state = ServiceState::load(&config.state_path)?;
        Ok(KeyService {
            config,
            state,
            nonces: NonceBook::default(),
        })
    }

    /// The enrolled machines.
    #[must_use]
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// Forgets a machine (administrator action, e.g. a stolen appliance). Returns whether it
    /// was enrolled.
    ///
    /// # Errors
    /// When the state cannot be saved; the machine then stays enrolled.
    pub fn revoke(&mut self, machine_id: &[u8; 16]) -> Result<bool, StateIoError> {
        let Some(idx) = self.state.find(machine_id) else {
            return Ok(false);
        };
        let mut next = self.state.clone();
        next.machines.remove(idx);
        next.save(&self.config.state_path)?;
        self.state = next;
        Ok(true)
    }

    /// Handles one request and returns the reply.
    pub fn handle(&mut self, msg: Message, now: Now) -> Message {
        self.handle_with(msg, now, &mut OsEntropy)
    }

    pub(crate) fn handle_with(&mut self, msg: Message, now: Now, rng: &mut dyn Entropy) -> Message {
        match msg {
            Message::NonceRequest { machine_id } => self.nonce(machine_id, now, rng),
            Message::Release {
                machine_id,
                nonce,
                evidence,
            } => self.release(machine_id, nonce, &evidence, now),
            Message::Enroll(e) => self.enroll(&e, now),
            Message::UpdatePolicy {
                machine_id,
                nonce,
                proof,
                evidence,
            } => self.update_policy(machine_id, nonce, proof, &evidence, now),
            Message::Unenroll {
                machine_id,
                nonce,
                proof,
            } => self.unenroll(machine_id, nonce, proof, now),
            other => refuse(RefuseCode::Malformed, format!("{other:?} is not a request")),
        }
    }

    fn nonce(&mut self, machine_id: [u8; 16], now: Now, rng: &mut dyn Entropy) -> Message {
        if self.state.find(&machine_id).is_none() {
            return refuse(
                RefuseCode::Unenrolled,
                format!(
                    "machine {} is not enrolled with this key-release service",
                    hex(&machine_id)
                ),
            );
        }
        let c = &self.config;
        match self.nonces.issue(
            machine_id,
            now.mono_ms,
            c.nonce_ttl,
            c.max_nonces,
            c.max_nonces_per_machine,
            rng,
        ) {
            Ok(nonce) => Message::Nonce {
                nonce,
                ttl_secs: u32::try_from(c.nonce_ttl.as_secs()).unwrap_or(u32::MAX),
            },
            Err(p) => refuse(RefuseCode::Busy, p.to_string()),
        }
    }

    /// Checks the nonce and the quote; returns the machine's index.
    fn check_evidence(
        &mut self,
        machine_id: [u8; 16],
        nonce: [u8; 32],
        evidence: &Evidence,
        purpose: QuotePurpose,
        now: Now,
        proof: Option<([u8; 32], &[u8])>,
    ) -> Result<usize, Refusal> {
        let idx = self.state.find(&machine_id).ok_or_else(|| {
            refusal(
                RefuseCode::Unenrolled,
                format!(
                    "machine {} is not enrolled with this key-release service",
                    hex(&machine_id)
                ),
            )
        })?;
        self.nonces
            .consume(&nonce, &machine_id, now.mono_ms)
            .map_err(|p| refusal(RefuseCode::NonceInvalid, p.to_string()))?;
        let m = &self.state.machines[idx];
        if let Some((proof, what)) = proof {
            let expected = share_proof(&m.share, what, &machine_id, &nonce, &evidence.digest());
            if !constant_time_eq(&expected, &proof) {
                return Err(refusal(
                    RefuseCode::ProofInvalid,
                    "the request does not prove possession of this machine's share",
                ));
            }
        }
        let quote = parse_quote(&evidence.attest)
            .map_err(|e| refusal(RefuseCode::Malformed, e.to_string()))?;
        if !verify_quote_signature(&m.ak_public, &evidence.attest, &evidence.signature) {
            return Err(refusal(
                RefuseCode::SignatureInvalid,
                "the quote is not signed by the attestation key enrolled for this machine",
            ));
        }
        let want = qualifying_data(purpose, &machine_id, &nonce);
        if !constant_time_eq(&quote.extra_data, &want) {
            return Err(refusal(
                RefuseCode::QuoteMismatch,
                "the quote was not made for this nonce (a replayed or foreign quote)",
            ));
        }
        let enrolled_sel = m.pcrs.selection();
        if purpose == QuotePurpose::Release && quote.selection != enrolled_sel {
            return Err(refusal(
                RefuseCode::QuoteMismatch,
                format!(
                    "the quote covers PCRs {} but PCRs {enrolled_sel} are enrolled",
                    quote.selection
                ),
            ));
        }
        if evidence.pcrs.selection() != quote.selection
            || evidence.pcrs.digest() != quote.pcr_digest
        {
            return Err(refusal(
                RefuseCode::QuoteMismatch,
                "the PCR values sent do not match the digest the TPM quoted",
            ));
        }
        // A policy update checks (and adopts) the SNP report separately.
        if let (QuotePurpose::Release, Some(expected)) = (purpose, m.snp_measurement) {
            self.check_snp(&machine_id, &nonce, purpose, evidence, Some(expected))?;
        }
        Ok(idx)
    }

    fn check_snp(
        &self,
        machine_id: &[u8; 16],
        nonce: &[u8; 32],
        purpose: QuotePurpose,
        evidence: &Evidence,
        expected_measurement: Option<[u8; 48]>,
    ) -> Result<[u8; 48], Refusal> {
        let snp = evidence.snp.as_ref().ok_or_else(|| {
            refusal(
                RefuseCode::SnpInvalid,
                "this machine was enrolled with SEV-SNP but sent no attestation report",
            )
        })?;
        let ca = self.config.snp_ca.as_ref().ok_or_else(|| {
            refusal(
                RefuseCode::SnpInvalid,
                "this service has no AMD root configured to verify SEV-SNP reports",
            )
        })?;
        let report = verify_report(&snp.report, &snp.vcek_der, ca)
            .map_err(|e| refusal(RefuseCode::SnpInvalid, e.to_string()))?;
        if !constant_time_eq(
            &report.report_data,
            &snp_report_data(purpose, machine_id, nonce),
        ) {
            return Err(refusal(
                RefuseCode::SnpInvalid,
                "the SEV-SNP report was not made for this nonce (replayed report)",
            ));
        }
        if let Some(m) = expected_measurement
            && report.measurement != m
        {
            return Err(refusal(
                RefuseCode::SnpInvalid,
                format!(
                    "SEV-SNP launch measurement changed (enrolled {}, now {})",
                    short_hex(&m),
                    short_hex(&report.measurement)
                ),
            ));
        }
        Ok(report.measurement)
    }

    fn release(
        &mut self,
        machine_id: [u8; 16],
        nonce: [u8; 32],
        evidence: &Evidence,
        now: Now,
    ) -> Message {
        let idx = match self.check_evidence(
            machine_id,
            nonce,
            evidence,
            QuotePurpose::Release,
            now,
            None,
        ) {
            Ok(i) => i,
            Err(r) => return r.into(),
        };
        let m = &self.state.machines[idx];
        let changes = m.pcrs.changes(&evidence.pcrs);
        if !changes.is_empty() {
            return refuse(
                RefuseCode::PcrMismatch,
                format!(
                    "the machine's state differs from the enrolled policy: {}",
                    describe_changes(&changes)
                ),
            );
        }
        Message::Share {
            share: m.share.clone(),
        }
    }

    fn update_policy(
        &mut self,
        machine_id: [u8; 16],
        nonce: [u8; 32],
        proof: [u8; 32],
        evidence: &Evidence,
        now: Now,
    ) -> Message {
        let idx = match self.check_evidence(
            machine_id,
            nonce,
            evidence,
            QuotePurpose::UpdatePolicy,
            now,
            Some((proof, b"update-policy")),
        ) {
            Ok(i) => i,
            Err(r) => return r.into(),
        };
        let new_measurement = if self.state.machines[idx].snp_measurement.is_some() {
            match self.check_snp(
                &machine_id,
                &nonce,
                QuotePurpose::UpdatePolicy,
                evidence,
                None,
            ) {
                Ok(m) => Some(m),
                Err(r) => return r.into(),
            }
        } else {
            None
        };
        let mut next = self.state.clone();
        let m = &mut next.machines[idx];
        m.pcrs = evidence.pcrs.clone();
        if new_measurement.is_some() {
            m.snp_measurement = new_measurement;
        }
        m.updated_at = now.wall;
        let mask = m.pcrs.selection().mask();
        self.commit(next, Message::PolicyUpdated { pcr_mask: mask })
    }

    fn unenroll(
        &mut self,
        machine_id: [u8; 16],
        nonce: [u8; 32],
        proof: [u8; 32],
        now: Now,
    ) -> Message {
        let Some(idx) = self.state.find(&machine_id) else {
            return refuse(
                RefuseCode::Unenrolled,
                format!("machine {} is not enrolled", hex(&machine_id)),
            );
        };
        if let Err(p) = self.nonces.consume(&nonce, &machine_id, now.mono_ms) {
            return refuse(RefuseCode::NonceInvalid, p.to_string());
        }
        let expected = share_proof(
            &self.state.machines[idx].share,
            b"unenroll",
            &machine_id,
            &nonce,
            &[0; 32],
        );
        if !constant_time_eq(&expected, &proof) {
            return refuse(
                RefuseCode::ProofInvalid,
                "the request does not prove possession of this machine's share",
            );
        }
        let mut next = self.state.clone();
        next.machines.remove(idx);
        self.commit(next, Message::Unenrolled)
    }

    fn enroll(&mut self, e: &Enrollment, now: Now) -> Message {
        if !constant_time_eq(&token_hash(&e.token), &self.config.token_hash) {
            return refuse(
                RefuseCode::EnrollmentDenied,
                "the enrollment token is wrong (see `dw-keyd init` on the service)",
            );
        }
        if self.state.find(&e.machine_id).is_some() {
            return refuse(
                RefuseCode::AlreadyEnrolled,
                format!("machine {} is already enrolled", hex(&e.machine_id)),
            );
        }
        if self.state.machines.len() >= MAX_ENROLLMENTS {
            return refuse(
                RefuseCode::Busy,
                format!("this service already holds {MAX_ENROLLMENTS} machines"),
            );
        }
        if e.label.len() > MAX_ENROLL_LABEL {
            return refuse(RefuseCode::Malformed, "label too long");
        }
        let mut next = self.state.clone();
        next.machines.push(EnrolledMachine {
            machine_id: e.machine_id,
            ak_public: AkPublic(e.ak_public),
            pcrs: e.pcrs.clone(),
            snp_measurement: e.snp_measurement,
            share: e.share.clone(),
            label: e.label.clone(),
            enrolled_at: now.wall,
            updated_at: now.wall,
        });
        self.commit(next, Message::Enrolled)
    }

    /// Writes the new state; only a durable state becomes the service's state.
    fn commit(&mut self, next: ServiceState, reply: Message) -> Message {
        match next.save(&self.config.state_path) {
            Ok(()) => {
                self.state = next;
                reply
            }
            Err(e) => refuse(
                RefuseCode::Internal,
                format!("the service could not save its state: {e}"),
            ),
        }
    }
}

async fn read_frame_async<S: AsyncReadExt + Unpin>(
    s: &mut S,
    timeout: Duration,
) -> Result<Option<Message>, String> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(timeout, s.read_exact(&mut len)).await {
        Err(_) => return Err("timed out".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(_)) => {}
    }
    let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes is too large"));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    match tokio::time::timeout(timeout, s.read_exact(&mut body)).await {
        Err(_) => return Err("timed out".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(_)) => {}
    }
    Message::decode(&body).map(Some).map_err(|e| e.to_string())
}

async fn write_frame_async<S: AsyncWriteExt + Unpin>(
    s: &mut S,
    msg: &Message,
    timeout: Duration,
) -> Result<(), String> {
    let body = Zeroizing::new(msg.encode());
    let mut frame = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    frame.extend_from_slice(&crate::codec::len_u32(body.len()).to_le_bytes());
    frame.extend_from_slice(&body);
    match tokio::time::timeout(timeout, async {
        s.write_all(&frame).await?;
        s.flush().await
    })
    .await
    {
        Err(_) => Err("timed out".into()),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Serves key-release requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Mutex<KeyService>>,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let (max_conn, io_timeout, max_msgs) = match service.lock() {
        Ok(s) => (
            s.config.max_connections,
            s.config.io_timeout,
            s.config.max_messages_per_connection,
        ),
        Err(_) => return,
    };
    let permits = Arc::new(Semaphore::new(max_conn));
    let acceptor = TlsAcceptor::from(tls);
    let started = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _peer)) = accepted else { continue };
        // Bounded: beyond max_connections, new connections are closed at once.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut tls)) = tokio::time::timeout(io_timeout, acceptor.accept(tcp)).await
            else {
                return;
            };
            for _ in 0..max_msgs {
                let reply = match read_frame_async(&mut tls, io_timeout).await {
                    Ok(None) | Err(_) => return,
                    Ok(Some(msg)) => {
                        let now = Now {
                            mono_ms: u64::try_from(started.elapsed().as_millis())
                                .unwrap_or(u64::MAX),
                            wall: SystemClock.now(),
                        };
                        // The lock is held only for one request; request handling is bounded.
                        match service.lock() {
                            Ok(mut s) => s.handle(msg, now),
                            Err(_) => {
                                refuse(RefuseCode::Internal, "the service is in a failed state")
                            }
                        }
                    }
                };
                if write_frame_async(&mut tls, &reply, io_timeout)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
