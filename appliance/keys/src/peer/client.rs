//! The peer-release client used by unlock, enrollment and re-sealing. Blocking I/O with
//! timeouts (rustls over `std::net::TcpStream`), so it runs on the same thread as the `!Send`
//! TPM context and needs no async runtime.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use zeroize::Zeroizing;

use super::proto::{
    Enrollment, Evidence, FrameError, Message, RefuseCode, SnpEvidence, read_frame, write_frame,
};
use super::tls::{SERVER_NAME, client_config};
use super::{QuotePurpose, qualifying_data, share_proof, snp_report_data};
use crate::pcr::{PcrSelection, PcrValues};
use crate::snp::{SnpFirmware, SnpFirmwareError};
use crate::tpm::{Tpm, TpmError};

/// Timeouts for talking to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each read and write.
    pub io: Duration,
}

impl Default for PeerTimeouts {
    fn default() -> Self {
        PeerTimeouts {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(10),
        }
    }
}

/// Talking to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No TCP connection.
    #[error("peer {endpoint} unreachable: {reason}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// TLS failed (including a certificate that is not the pinned one).
    #[error("TLS with peer {endpoint} failed: {reason}")]
    Tls {
        /// `host:port`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The peer sent something unexpected or closed the connection.
    #[error("peer {endpoint} did not follow the key-release protocol: {reason}")]
    Protocol {
        /// `host:port`.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer refused.
    #[error("peer {endpoint} refused: {reason}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// Stable code.
        code: RefuseCode,
        /// The peer's explanation.
        reason: String,
    },
    /// The TPM could not produce evidence.
    #[error("cannot produce a TPM quote for peer {endpoint}: {source}")]
    Tpm {
        /// `host:port`.
        endpoint: String,
        /// Why.
        source: TpmError,
    },
    /// The SEV-SNP firmware could not produce evidence.
    #[error("cannot produce an SEV-SNP report for peer {endpoint}: {source}")]
    Snp {
        /// `host:port`.
        endpoint: String,
        /// Why.
        source: SnpFirmwareError,
    },
}

/// A client for one key-release service.
#[derive(Clone, Debug)]
pub struct PeerClient {
    endpoint: String,
    pinned: [u8; 32],
    timeouts: PeerTimeouts,
}

type Session = StreamOwned<ClientConnection, TcpStream>;

impl PeerClient {
    /// A client for the service at `endpoint` (`host:port`) whose certificate has SHA-256
    /// `pinned`.
    #[must_use]
    pub fn new(
        endpoint: impl Into<String>,
        pinned: [u8; 32],
        timeouts: PeerTimeouts,
    ) -> PeerClient {
        PeerClient {
            endpoint: endpoint.into(),
            pinned,
            timeouts,
        }
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn unreachable(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: reason.into(),
        }
    }

    fn protocol(&self, reason: impl Into<String>) -> PeerError {
        PeerError::Protocol {
            endpoint: self.endpoint.clone(),
            reason: reason.into(),
        }
    }

    fn connect(&self) -> Result<Session, PeerError> {
        let addrs: Vec<SocketAddr> = self
            .endpoint
            .to_socket_addrs()
            .map_err(|e| self.unreachable(format!("cannot resolve the address: {e}")))?
            .take(8)
            .collect();
        let mut last = String::from("the address resolves to nothing");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeouts.connect) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        let mut tcp = tcp.ok_or_else(|| self.unreachable(last))?;
        let io = |e: std::io::Error| self.unreachable(e.to_string());
        tcp.set_read_timeout(Some(self.timeouts.io)).map_err(io)?;
        tcp.set_write_timeout(Some(self.timeouts.io)).map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let tls_err = |reason: String| PeerError::Tls {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let cfg = client_config(self.pinned).map_err(|e| tls_err(e.to_string()))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| tls_err(e.to_string()))?;
        let mut conn = ClientConnection::new(cfg, name).map_err(|e| tls_err(e.to_string()))?;
        // Finish the handshake here so that certificate problems are reported as TLS errors.
        let mut rounds = 0;
        while conn.is_handshaking() {
            rounds += 1;
            if rounds > 16 {
                return Err(tls_err("the handshake does not finish".into()));
            }
            conn.complete_io(&mut tcp)
                .map_err(|e| tls_err(e.to_string()))?;
        }
        Ok(StreamOwned::new(conn, tcp))
    }

    fn exchange(&self, s: &mut Session, msg: &Message) -> Result<Message, PeerError> {
        let frame = |e: FrameError| match e {
            FrameError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.protocol("the peer closed the connection")
            }
            FrameError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.unreachable(format!("no answer within {:?}", self.timeouts.io))
            }
            other => self.protocol(other.to_string()),
        };
        write_frame(s, msg).map_err(frame)?;
        let reply = read_frame(s).map_err(frame)?;
        if let Message::Refused { code, reason } = reply {
            return Err(PeerError::Refused {
                endpoint: self.endpoint.clone(),
                code,
                reason,
            });
        }
        Ok(reply)
    }

    fn get_nonce(&self, s: &mut Session, machine_id: [u8; 16]) -> Result<[u8; 32], PeerError> {
        match self.exchange(s, &Message::NonceRequest { machine_id })? {
            Message::Nonce { nonce, .. } => Ok(nonce),
            other => Err(self.protocol(format!("expected a nonce, got {other:?}"))),
        }
    }

    fn evidence(
        &self,
        tpm: &mut Tpm,
        selection: PcrSelection,
        purpose: QuotePurpose,
        machine_id: &[u8; 16],
        nonce: &[u8; 32],
        snp: Option<&mut dyn SnpFirmware>,
    ) -> Result<Evidence, PeerError> {
        let tpm_err = |source| PeerError::Tpm {
            endpoint: self.endpoint.clone(),
            source,
        };
        let quote = tpm
            .quote(selection, &qualifying_data(purpose, machine_id, nonce))
            .map_err(tpm_err)?;
        let snp = match snp {
            None => None,
            Some(fw) => {
                let snp_err = |source| PeerError::Snp {
                    endpoint: self.endpoint.clone(),
                    source,
                };
                let report = fw
                    .attestation_report(&snp_report_data(purpose, machine_id, nonce))
                    .map_err(snp_err)?;
                let vcek_der = fw
                    .vcek_der()
                    .map_err(snp_err)?
                    .ok_or_else(|| PeerError::Snp {
                        endpoint: self.endpoint.clone(),
                        source: SnpFirmwareError::Firmware {
                            request: "VCEK certificate",
                            reason: "the host supplies no VCEK certificate with extended reports"
                                .into(),
                        },
                    })?;
                Some(SnpEvidence { report, vcek_der })
            }
        };
        Ok(Evidence {
            pcrs: quote.pcrs,
            attest: quote.attest,
            signature: quote.signature,
            snp,
        })
    }

    /// Proves this machine's state with a fresh quote and returns the released share.
    ///
    /// # Errors
    /// [`PeerError`], naming what failed.
    pub fn fetch_share(
        &self,
        tpm: &mut Tpm,
        machine_id: [u8; 16],
        selection: PcrSelection,
        snp: Option<&mut dyn SnpFirmware>,
    ) -> Result<Zeroizing<[u8; 32]>, PeerError> {
        let mut s = self.connect()?;
        let nonce = self.get_nonce(&mut s, machine_id)?;
        let evidence = self.evidence(
            tpm,
            selection,
            QuotePurpose::Release,
            &machine_id,
            &nonce,
            snp,
        )?;
        match self.exchange(
            &mut s,
            &Message::Release {
                machine_id,
                nonce,
                evidence,
            },
        )? {
            Message::Share { share } => Ok(share),
            other => Err(self.protocol(format!("expected the share, got {other:?}"))),
        }
    }

    /// Sends a release request for a nonce the caller already used: only for tests of the
    /// service's replay protection.
    ///
    /// # Errors
    /// [`PeerError`].
    #[doc(hidden)]
    pub fn raw_exchange(&self, messages: &[Message]) -> Result<Vec<Message>, PeerError> {
        let mut s = self.connect()?;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            match self.exchange(&mut s, m) {
                Ok(r) => out.push(r),
                Err(PeerError::Refused { code, reason, .. }) => {
                    out.push(Message::Refused { code, reason })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Enrolls a machine.
    ///
    /// # Errors
    /// [`PeerError`].
    pub fn enroll(&self, enrollment: Enrollment) -> Result<(), PeerError> {
        let mut s = self.connect()?;
        match self.exchange(&mut s, &Message::Enroll(enrollment))? {
            Message::Enrolled => Ok(()),
            other => Err(self.protocol(format!(
                "expected an enrollment confirmation, got {other:?}"
            ))),
        }
    }

    /// Tells the service that this machine's current state is trusted (after a planned update),
    /// proven by a fresh quote and possession of the share. Returns the PCR values now enrolled.
    ///
    /// # Errors
    /// [`PeerError`].
    pub fn update_policy(
        &self,
        tpm: &mut Tpm,
        machine_id: [u8; 16],
        selection: PcrSelection,
        share: &[u8; 32],
        snp: Option<&mut dyn SnpFirmware>,
    ) -> Result<PcrValues, PeerError> {
        let mut s = self.connect()?;
        let nonce = self.get_nonce(&mut s, machine_id)?;
        let evidence = self.evidence(
            tpm,
            selection,
            QuotePurpose::UpdatePolicy,
            &machine_id,
            &nonce,
            snp,
        )?;
        let proof = share_proof(
            share,
            b"update-policy",
            &machine_id,
            &nonce,
            &evidence.digest(),
        );
        let pcrs = evidence.pcrs.clone();
        match self.exchange(
            &mut s,
            &Message::UpdatePolicy {
                machine_id,
                nonce,
                proof,
                evidence,
            },
        )? {
            Message::PolicyUpdated { .. } => Ok(pcrs),
            other => Err(self.protocol(format!("expected a policy confirmation, got {other:?}"))),
        }
    }

    /// Asks the service to forget this machine.
    ///
    /// # Errors
    /// [`PeerError`].
    pub fn unenroll(&self, machine_id: [u8; 16], share: &[u8; 32]) -> Result<(), PeerError> {
        let mut s = self.connect()?;
        let nonce = self.get_nonce(&mut s, machine_id)?;
        let proof = share_proof(share, b"unenroll", &machine_id, &nonce, &[0; 32]);
        match self.exchange(
            &mut s,
            &Message::Unenroll {
                machine_id,
                nonce,
                proof,
            },
        )? {
            Message::Unenrolled => Ok(()),
            other => Err(self.protocol(format!(
                "expected an unenrollment confirmation, got {other:?}"
            ))),
        }
    }
}
