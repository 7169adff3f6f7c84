//! The peer-release wire protocol (version 1). Every message is one frame:
//!
//! ```text
//! u32 LE body length (at most MAX_FRAME)
//! body: "DWKP" | u8 version = 1 | u8 message type | u16 reserved (0) | payload
//! ```
//!
//! Payload layouts are in docs/KEYS.md. Every decoder is bounded, consumes the body exactly,
//! and returns an error instead of panicking.

use std::fmt;
use std::io::{Read, Write};

use zeroize::Zeroizing;

use crate::codec::{Reader, Truncated, Writer, len_u8, len_u16, len_u32};
use crate::pcr::{PcrSelection, PcrValues};
use crate::snp::{MAX_VCEK_DER, REPORT_LEN};

/// Largest frame body.
pub const MAX_FRAME: usize = 16 * 1024;
/// Largest marshalled TPMS_ATTEST accepted.
pub const MAX_ATTEST: usize = 1024;
/// Longest refusal reason in bytes.
pub const MAX_REASON: usize = 1024;
/// Longest enrollment label in bytes.
pub const MAX_ENROLL_LABEL: usize = 64;
const MAGIC: &[u8; 4] = b"DWKP";
const VERSION: u8 = 1;

/// Why the service refused (stable codes; the reason text explains).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RefuseCode {
    /// The request did not parse.
    Malformed,
    /// The machine id is not enrolled.
    Unenrolled,
    /// The nonce is unknown, used, expired, or issued to another machine.
    NonceInvalid,
    /// The quote signature does not verify with the enrolled attestation key.
    SignatureInvalid,
    /// The quote does not cover the nonce or the enrolled PCR selection.
    QuoteMismatch,
    /// The quoted PCR values differ from the enrolled policy.
    PcrMismatch,
    /// The SEV-SNP evidence is missing or does not verify.
    SnpInvalid,
    /// The enrollment token is wrong.
    EnrollmentDenied,
    /// The machine id is already enrolled.
    AlreadyEnrolled,
    /// The proof of share possession is wrong.
    ProofInvalid,
    /// Too many outstanding nonces or connections.
    Busy,
    /// The service failed internally (for example, it could not write its state).
    Internal,
}

impl RefuseCode {
    fn code(self) -> u16 {
        match self {
            RefuseCode::Malformed => 1,
            RefuseCode::Unenrolled => 2,
            RefuseCode::NonceInvalid => 3,
            RefuseCode::SignatureInvalid => 4,
            RefuseCode::QuoteMismatch => 5,
            RefuseCode::PcrMismatch => 6,
            RefuseCode::SnpInvalid => 7,
            RefuseCode::EnrollmentDenied => 8,
            RefuseCode::AlreadyEnrolled => 9,
            RefuseCode::ProofInvalid => 10,
            RefuseCode::Busy => 11,
            RefuseCode::Internal => 12,
        }
    }

    fn from_code(c: u16) -> Option<RefuseCode> {
        Some(match c {
            1 => RefuseCode::Malformed,
            2 => RefuseCode::Unenrolled,
            3 => RefuseCode::NonceInvalid,
            4 => RefuseCode::SignatureInvalid,
            5 => RefuseCode::QuoteMismatch,
            6 => RefuseCode::PcrMismatch,
            7 => RefuseCode::SnpInvalid,
            8 => RefuseCode::EnrollmentDenied,
            9 => RefuseCode::AlreadyEnrolled,
            10 => RefuseCode::ProofInvalid,
            11 => RefuseCode::Busy,
            12 => RefuseCode::Internal,
            _ => return None,
        })
    }
}

/// SEV-SNP evidence: a report and the VCEK certificate that signs it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SnpEvidence {
    /// The attestation report ([`REPORT_LEN`] bytes).
    pub report: Vec<u8>,
    /// The VCEK certificate (DER).
    pub vcek_der: Vec<u8>,
}

/// What a machine presents to be trusted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Evidence {
    /// The PCR values (checked against the quoted digest).
    pub pcrs: PcrValues,
    /// The marshalled TPMS_ATTEST of a TPM2_Quote.
    pub attest: Vec<u8>,
    /// ECDSA P-256 `r || s` over SHA-256(attest) by the attestation key.
    pub signature: [u8; 64],
    /// SEV-SNP evidence, when the machine is an SNP guest.
    pub snp: Option<SnpEvidence>,
}

/// An enrollment request.
#[derive(PartialEq, Eq)]
pub struct Enrollment {
    /// The service's enrollment token.
    pub token: Zeroizing<[u8; 32]>,
    /// The id the machine will use.
    pub machine_id: [u8; 16],
    /// Its attestation key (uncompressed P-256 point).
    pub ak_public: [u8; 65],
    /// The PCR policy: the values the machine must quote.
    pub pcrs: PcrValues,
    /// The SEV-SNP launch measurement to require, if any.
    pub snp_measurement: Option<[u8; 48]>,
    /// The share to release.
    pub share: Zeroizing<[u8; 32]>,
    /// A label for the service's listing.
    pub label: String,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("machine_id", &crate::types::hex(&self.machine_id))
            .field("pcrs", &self.pcrs.selection())
            .field("snp", &self.snp_measurement.is_some())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// One protocol message.
#[derive(PartialEq, Eq)]
pub enum Message {
    /// Client: "give me a nonce".
    NonceRequest {
        /// The asking machine.
        machine_id: [u8; 16],
    },
    /// Service: a fresh single-use nonce.
    Nonce {
        /// The nonce.
        nonce: [u8; 32],
        /// Seconds it stays valid.
        ttl_secs: u32,
    },
    /// Client: evidence over the nonce; asks for the share.
    Release {
        /// The machine.
        machine_id: [u8; 16],
        /// The nonce being answered.
        nonce: [u8; 32],
        /// The evidence.
        evidence: Evidence,
    },
    /// Service: the share.
    Share {
        /// The share (secret).
        share: Zeroizing<[u8; 32]>,
    },
    /// Service: refused, and why.
    Refused {
        /// Stable code.
        code: RefuseCode,
        /// Text for the administrator.
        reason: String,
    },
    /// Client: enroll.
    Enroll(Enrollment),
    /// Service: enrolled.
    Enrolled,
    /// Client: "my current state is trusted", proven by possession of the share.
    UpdatePolicy {
        /// The machine.
        machine_id: [u8; 16],
        /// The nonce being answered.
        nonce: [u8; 32],
        /// Keyed BLAKE3 over the nonce and the evidence with a key derived from the share.
        proof: [u8; 32],
        /// Evidence of the new state.
        evidence: Evidence,
    },
    /// Service: the enrolled PCR values were replaced.
    PolicyUpdated {
        /// The PCR selection now enrolled.
        pcr_mask: u32,
    },
    /// Client: forget this machine (proof of share possession).
    Unenroll {
        /// The machine.
        machine_id: [u8; 16],
        /// The nonce being answered.
        nonce: [u8; 32],
        /// Proof of share possession.
        proof: [u8; 32],
    },
    /// Service: forgotten.
    Unenrolled,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::NonceRequest { .. } => f.write_str("NonceRequest"),
            Message::Nonce { ttl_secs, .. } => write!(f, "Nonce(ttl {ttl_secs}s)"),
            Message::Release { evidence, .. } => {
                write!(f, "Release(PCRs {})", evidence.pcrs.selection())
            }
            Message::Share { .. } => f.write_str("Share(redacted)"),
            Message::Refused { code, reason } => write!(f, "Refused({code:?}: {reason})"),
            Message::Enroll(e) => write!(f, "Enroll({e:?})"),
            Message::Enrolled => f.write_str("Enrolled"),
            Message::UpdatePolicy { evidence, .. } => {
                write!(f, "UpdatePolicy(PCRs {})", evidence.pcrs.selection())
            }
            Message::PolicyUpdated { pcr_mask } => write!(f, "PolicyUpdated({pcr_mask:#x})"),
            Message::Unenroll { .. } => f.write_str("Unenroll"),
            Message::Unenrolled => f.write_str("Unenrolled"),
        }
    }
}

/// A message body that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeMessageError {
    /// Wrong magic.
    #[error("not a DataWarehouse key-release message (bad magic)")]
    BadMagic,
    /// Other protocol version.
    #[error("key-release protocol version {0} is not supported (this side speaks version 1)")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown key-release message type {0}")]
    UnknownType(u8),
    /// Truncated.
    #[error("truncated key-release message: {0}")]
    Truncated(#[from] Truncated),
    /// Invalid field.
    #[error("invalid key-release message field `{field}`: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Frame too large.
    #[error("key-release message of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeMessageError {
    DecodeMessageError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn read_pcrs(r: &mut Reader<'_>, field: &'static str) -> Result<PcrValues, DecodeMessageError> {
    let mask = r.u32_le(field)?;
    let sel = PcrSelection::from_mask(mask).map_err(|e| invalid(field, e.to_string()))?;
    let mut values = Vec::with_capacity(sel.len());
    for _ in 0..sel.len() {
        values.push(r.array::<32>(field)?);
    }
    PcrValues::new(sel, values).map_err(|e| invalid(field, e.to_string()))
}

fn write_pcrs(w: &mut Writer, v: &PcrValues) {
    w.u32(v.selection().mask());
    for value in v.values() {
        w.bytes(value);
    }
}

fn read_blob(
    r: &mut Reader<'_>,
    max: usize,
    field: &'static str,
) -> Result<Vec<u8>, DecodeMessageError> {
    let len = usize::from(r.u16_le(field)?);
    if len > max {
        return Err(invalid(field, format!("{len} bytes, at most {max}")));
    }
    Ok(r.bytes(len, field)?.to_vec())
}

fn read_str(
    r: &mut Reader<'_>,
    len: usize,
    max: usize,
    field: &'static str,
) -> Result<String, DecodeMessageError> {
    if len > max {
        return Err(invalid(field, format!("{len} bytes, at most {max}")));
    }
    std::str::from_utf8(r.bytes(len, field)?)
        .map(str::to_string)
        .map_err(|_| invalid(field, "not UTF-8"))
}

fn read_flag(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeMessageError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(invalid(field, format!("{v} is neither 0 nor 1"))),
    }
}

impl Evidence {
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        write_pcrs(w, &self.pcrs);
        w.u16(len_u16(self.attest.len()));
        w.bytes(&self.attest);
        w.bytes(&self.signature);
        match &self.snp {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                w.u16(len_u16(s.report.len()));
                w.bytes(&s.report);
                w.u16(len_u16(s.vcek_der.len()));
                w.bytes(&s.vcek_der);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Evidence, DecodeMessageError> {
        let pcrs = read_pcrs(r, "evidence.pcrs")?;
        let attest = read_blob(r, MAX_ATTEST, "evidence.attest")?;
        let signature = r.array::<64>("evidence.signature")?;
        let snp = if read_flag(r, "evidence.has_snp")? {
            let report = read_blob(r, REPORT_LEN, "evidence.snp_report")?;
            if report.len() != REPORT_LEN {
                return Err(invalid(
                    "evidence.snp_report",
                    format!("{} bytes, a report is {REPORT_LEN}", report.len()),
                ));
            }
            let vcek_der = read_blob(r, MAX_VCEK_DER, "evidence.vcek")?;
            Some(SnpEvidence { report, vcek_der })
        } else {
            None
        };
        Ok(Evidence {
            pcrs,
            attest,
            signature,
            snp,
        })
    }

    /// The bytes a policy-update proof covers.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut w = Writer::default();
        self.encode_into(&mut w);
        *blake3::hash(&w.buf).as_bytes()
    }
}

impl Message {
    fn type_code(&self) -> u8 {
        match self {
            Message::NonceRequest { .. } => 1,
            Message::Nonce { .. } => 2,
            Message::Release { .. } => 3,
            Message::Share { .. } => 4,
            Message::Refused { .. } => 5,
            Message::Enroll(_) => 6,
            Message::Enrolled => 7,
            Message::UpdatePolicy { .. } => 8,
            Message::PolicyUpdated { .. } => 9,
            Message::Unenroll { .. } => 10,
            Message::Unenrolled => 11,
        }
    }

    /// Encodes the message body (without the frame length).
    ///
    /// # Panics
    /// Only on a bug: a field longer than its documented maximum.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.bytes(MAGIC);
        w.u8(VERSION);
        w.u8(self.type_code());
        w.u16(0);
        match self {
            Message::NonceRequest { machine_id } => w.bytes(machine_id),
            Message::Nonce { nonce, ttl_secs } => {
                w.bytes(nonce);
                w.u32(*ttl_secs);
            }
            Message::Release {
                machine_id,
                nonce,
                evidence,
            } => {
                w.bytes(machine_id);
                w.bytes(nonce);
                evidence.encode_into(&mut w);
            }
            Message::Share { share } => w.bytes(share.as_ref()),
            Message::Refused { code, reason } => {
                let reason = crate::audit::truncate_utf8(reason, MAX_REASON);
                w.u16(code.code());
                w.u16(len_u16(reason.len()));
                w.bytes(reason.as_bytes());
            }
            Message::Enroll(e) => {
                w.bytes(e.token.as_ref());
                w.bytes(&e.machine_id);
                w.bytes(&e.ak_public);
                w.bytes(e.share.as_ref());
                match &e.snp_measurement {
                    None => w.u8(0),
                    Some(m) => {
                        w.u8(1);
                        w.bytes(m);
                    }
                }
                w.u8(len_u8(e.label.len()));
                w.bytes(e.label.as_bytes());
                write_pcrs(&mut w, &e.pcrs);
            }
            Message::Enrolled | Message::Unenrolled => {}
            Message::UpdatePolicy {
                machine_id,
                nonce,
                proof,
                evidence,
            } => {
                w.bytes(machine_id);
                w.bytes(nonce);
                w.bytes(proof);
                evidence.encode_into(&mut w);
            }
            Message::PolicyUpdated { pcr_mask } => w.u32(*pcr_mask),
            Message::Unenroll {
                machine_id,
                nonce,
                proof,
            } => {
                w.bytes(machine_id);
                w.bytes(nonce);
                w.bytes(proof);
            }
        }
        assert!(
            w.len() <= MAX_FRAME,
            "encoded message of {} bytes exceeds the frame limit",
            w.len()
        );
        w.buf
    }

    /// Decodes a message body.
    ///
    /// # Errors
    /// When the body is not exactly one valid message.
    pub fn decode(body: &[u8]) -> Result<Message, DecodeMessageError> {
        if body.len() > MAX_FRAME {
            return Err(DecodeMessageError::TooLarge(body.len()));
        }
        let mut r = Reader::new(body);
        if r.bytes(4, "magic")? != MAGIC {
            return Err(DecodeMessageError::BadMagic);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeMessageError::Version(version));
        }
        let kind = r.u8("type")?;
        if r.u16_le("reserved")? != 0 {
            return Err(invalid("reserved", "not zero"));
        }
        let msg = match kind {
            1 => Message::NonceRequest {
                machine_id: r.array("machine_id")?,
            },
            2 => Message::Nonce {
                nonce: r.array("nonce")?,
                ttl_secs: r.u32_le("ttl_secs")?,
            },
            3 => Message::Release {
                machine_id: r.array("machine_id")?,
                nonce: r.array("nonce")?,
                evidence: Evidence::decode(&mut r)?,
            },
            4 => Message::Share {
                share: Zeroizing::new(r.array("share")?),
            },
            5 => {
                let c = r.u16_le("code")?;
                let code = RefuseCode::from_code(c)
                    .ok_or_else(|| invalid("code", format!("unknown refusal code {c}")))?;
                let len = usize::from(r.u16_le("reason_len")?);
                Message::Refused {
                    code,
                    reason: read_str(&mut r, len, MAX_REASON, "reason")?,
                }
            }
            6 => {
                let token = Zeroizing::new(r.array("token")?);
                let machine_id = r.array("machine_id")?;
                let ak_public: [u8; 65] = r.array("ak_public")?;
                if ak_public[0] != 4 {
                    return Err(invalid("ak_public", "not an uncompressed EC point"));
                }
                let share = Zeroizing::new(r.array("share")?);
                let snp_measurement = if read_flag(&mut r, "has_snp")? {
                    Some(r.array("snp_measurement")?)
                } else {
                    None
                };
                let len = usize::from(r.u8("label_len")?);
                let label = read_str(&mut r, len, MAX_ENROLL_LABEL, "label")?;
                let pcrs = read_pcrs(&mut r, "pcrs")?;
                Message::Enroll(Enrollment {
                    token,
                    machine_id,
                    ak_public,
                    pcrs,
                    snp_measurement,
                    share,
                    label,
                })
            }
            7 => Message::Enrolled,
            8 => Message::UpdatePolicy {
                machine_id: r.array("machine_id")?,
                nonce: r.array("nonce")?,
                proof: r.array("proof")?,
                evidence: Evidence::decode(&mut r)?,
            },
            9 => {
                let pcr_mask = r.u32_le("pcr_mask")?;
                PcrSelection::from_mask(pcr_mask)
                    .map_err(|e| invalid("pcr_mask", e.to_string()))?;
                Message::PolicyUpdated { pcr_mask }
            }
            10 => Message::Unenroll {
                machine_id: r.array("machine_id")?,
                nonce: r.array("nonce")?,
                proof: r.array("proof")?,
            },
            11 => Message::Unenrolled,
            other => return Err(DecodeMessageError::UnknownType(other)),
        };
        if r.remaining() != 0 {
            return Err(invalid(
                "message",
                format!("{} bytes after the message", r.remaining()),
            ));
        }
        Ok(msg)
    }
}

/// Reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O error (including timeouts).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The frame is too large.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body does not parse.
    #[error(transparent)]
    Decode(#[from] DecodeMessageError),
}

/// Writes one frame (blocking).
///
/// # Errors
/// On I/O failure.
pub fn write_frame(w: &mut impl Write, msg: &Message) -> Result<(), FrameError> {
    let body = Zeroizing::new(msg.encode());
    let mut frame = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    frame.extend_from_slice(&len_u32(body.len()).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame (blocking), bounded by [`MAX_FRAME`].
///
/// # Errors
/// On I/O failure, an oversized frame, or a body that does not parse.
pub fn read_frame(r: &mut impl Read) -> Result<Message, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body)?;
    Ok(Message::decode(&body)?)
}
