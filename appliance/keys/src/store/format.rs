//! The key store's binary format (version 1). Byte-by-byte description in docs/KEYS.md.
//!
//! ```text
//! header (64 bytes, little-endian)
//!   0  4  magic "DWKS"            4  2  version = 1          6  2  header length = 64
//!   8  4  total length           12  2  slot count          14  2  audit entry count
//!  16 16  VDE id                 32  8  generation          40  4  next slot id
//!  44  1  rotation pending 0/1   45  3  reserved (0)        48 16  master key id
//! records: u16 type, u16 reserved (0), u32 payload length, payload
//!   type 1 slot (slot count of them), type 2 rotation (if pending),
//!   type 3 audit anchor (exactly one), type 4 audit entry (audit entry count of them)
//! trailer: 32-byte BLAKE3 (derive-key mode) checksum of everything before it
//! ```
//!
//! The decoder checks the length, magic, version and checksum first, then walks the records
//! with a bounded reader; every length is checked against what is left and against a per-field
//! maximum, and the result is validated like the encoder validates its input.

use crate::audit::{AuditAction, AuditEntry, AuditLog, MAX_AUDIT_DETAIL, MAX_AUDIT_ENTRIES};
use crate::codec::{Reader, Truncated, Writer, len_u8, len_u16, len_u32};
use crate::passphrase::Argon2Params;
use crate::pcr::{PcrSelection, PcrValues, TPM_ALG_SHA256};
use crate::snp::{REPORT_LEN, SnpKeyRequest, SnpRootKey};
use crate::tpm::{MAX_NAME, MAX_SEALED_BLOB, SealedObject};
use crate::types::{SlotId, SlotKind, UnixTime, VdeId};
use crate::wrap::{WRAPPED_LEN, Wrapped};

use super::{
    KeyStore, PassphraseParams, PeerParams, Rotation, Slot, SlotParams, SnpParams, TpmParams,
};

/// The largest encoded store (the VDE's key-slot area limit).
pub const MAX_ENCODED_LEN: usize = 256 * 1024;
/// The most slots a store holds.
pub const MAX_SLOTS: usize = 32;
/// The longest slot label in bytes.
pub const MAX_LABEL_BYTES: usize = 64;
/// The longest peer endpoint in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 255;

const MAGIC: &[u8; 4] = b"DWKS";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 64;
const CHECKSUM_LEN: usize = 32;
const CHECKSUM_CONTEXT: &str = "DataWarehouse dw-keys v1 keystore checksum";

const REC_SLOT: u16 = 1;
const REC_ROTATION: u16 = 2;
const REC_AUDIT_ANCHOR: u16 = 3;
const REC_AUDIT_ENTRY: u16 = 4;

/// A key-slot area that is not a valid key store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeKeyStoreError {
    /// Shorter than a header and checksum.
    #[error("the key-slot area is {len} bytes, too short for a key store (at least {min})")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// Minimum.
        min: usize,
    },
    /// Longer than the limit.
    #[error("the key-slot area is {len} bytes, more than the {max} a key store may have")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// Not a key store.
    #[error(
        "the key-slot area does not start with the key store magic \"DWKS\" (it is empty or holds something else)"
    )]
    BadMagic,
    /// A newer format.
    #[error(
        "key store format version {0} is not supported by this software (it reads version 1); update the appliance software"
    )]
    UnsupportedVersion(u16),
    /// Length field mismatch.
    #[error("the key store says it is {header} bytes long but {actual} bytes were given")]
    LengthMismatch {
        /// Length in the header.
        header: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Checksum mismatch.
    #[error(
        "the key store checksum does not match: the key-slot area is damaged (the VDE keeps a second copy)"
    )]
    Checksum,
    /// Ran out of bytes.
    #[error("the key store is truncated: {0}")]
    Truncated(#[from] Truncated),
    /// A field holds an invalid value.
    #[error("the key store field `{field}` is invalid: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeKeyStoreError {
    DecodeKeyStoreError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// Rewrites the length field and checksum of a would-be key store so that fuzzers and property
/// tests reach the parser behind the checksum. Not for production use.
#[doc(hidden)]
pub fn repair_checksum_for_fuzzing(b: &mut [u8]) {
    if b.len() >= HEADER_LEN + CHECKSUM_LEN {
        let n = u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
        b[8..12].copy_from_slice(&n);
        let end = b.len() - CHECKSUM_LEN;
        let sum = checksum(&b[..end]);
        b[end..].copy_from_slice(&sum);
    }
}

fn write_pcr_values(v: &PcrValues, w: &mut Writer) {
    for value in v.values() {
        w.bytes(value);
    }
}

pub(crate) fn encode_params(params: &SlotParams, w: &mut Writer) {
    match params {
        SlotParams::Tpm2(t) => {
            w.u16(TPM_ALG_SHA256);
            w.u32(t.expected.selection().mask());
            w.u8(u8::from(t.pin));
            w.u8(0);
            w.bytes(&t.sealed.policy_digest);
            write_pcr_values(&t.expected, w);
            for blob in [&t.sealed.srk_name, &t.sealed.public, &t.sealed.private] {
                w.u16(len_u16(blob.len()));
                w.bytes(blob);
            }
        }
        SlotParams::Passphrase(p) => {
            w.u32(p.argon2.memory_kib());
            w.u32(p.argon2.iterations());
            w.u32(p.argon2.lanes());
            w.u8(u8::from(p.generated));
            w.bytes(&[0; 3]);
            w.bytes(&p.salt);
        }
        SlotParams::SevSnp(s) => {
            w.u8(match s.request.root_key {
                SnpRootKey::Vcek => 0,
                SnpRootKey::Vmrk => 1,
            });
            w.u8(u8::from(s.request.launch_mit_vector.is_some()));
            w.u16(0);
            w.u64(s.request.field_select);
            w.u32(s.request.vmpl);
            w.u32(s.request.guest_svn);
            w.u64(s.request.tcb_version);
            w.u64(s.request.launch_mit_vector.unwrap_or(0));
            w.bytes(&s.salt);
            w.bytes(&s.measurement);
            w.u16(len_u16(s.report.len()));
            w.bytes(&s.report);
        }
        SlotParams::Peer(p) => {
            w.bytes(&p.machine_id);
            w.bytes(&p.local_half);
            w.bytes(&p.server_cert_sha256);
            w.u32(p.pcrs.selection().mask());
            w.u8(u8::from(p.snp));
            w.u8(len_u8(p.endpoint.len()));
            w.u16(0);
            write_pcr_values(&p.pcrs, w);
            w.bytes(p.endpoint.as_bytes());
        }
    }
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeKeyStoreError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(invalid(field, format!("{v} is neither 0 nor 1"))),
    }
}

fn read_zero(r: &mut Reader<'_>, n: usize, field: &'static str) -> Result<(), DecodeKeyStoreError> {
    if r.bytes(n, field)?.iter().any(|b| *b != 0) {
        return Err(invalid(field, "reserved bytes are not zero"));
    }
    Ok(())
}

fn read_pcr_values(
    r: &mut Reader<'_>,
    mask: u32,
    field: &'static str,
) -> Result<PcrValues, DecodeKeyStoreError> {
    let sel = PcrSelection::from_mask(mask).map_err(|e| invalid(field, e.to_string()))?;
    let mut values = Vec::with_capacity(sel.len());
    for _ in 0..sel.len() {
        values.push(r.array::<32>(field)?);
    }
    PcrValues::new(sel, values).map_err(|e| invalid(field, e.to_string()))
}

fn read_blob(
    r: &mut Reader<'_>,
    max: usize,
    field: &'static str,
) -> Result<Vec<u8>, DecodeKeyStoreError> {
    let len = usize::from(r.u16_le(field)?);
    if len > max {
        return Err(invalid(field, format!("{len} bytes, at most {max}")));
    }
    Ok(r.bytes(len, field)?.to_vec())
}

fn decode_params(kind: SlotKind, r: &mut Reader<'_>) -> Result<SlotParams, DecodeKeyStoreError> {
    Ok(match kind {
        SlotKind::Tpm2 => {
            let bank = r.u16_le("tpm.bank")?;
            if bank != TPM_ALG_SHA256 {
                return Err(invalid(
                    "tpm.bank",
                    format!("PCR bank {bank:#06x} is not SHA-256"),
                ));
            }
            let mask = r.u32_le("tpm.pcr_mask")?;
            let pin = read_bool(r, "tpm.pin")?;
            read_zero(r, 1, "tpm.reserved")?;
            let policy_digest = r.array::<32>("tpm.policy_digest")?;
            let expected = read_pcr_values(r, mask, "tpm.expected_pcrs")?;
            let srk_name = read_blob(r, MAX_NAME, "tpm.srk_name")?;
            let public = read_blob(r, MAX_SEALED_BLOB, "tpm.public")?;
            let private = read_blob(r, MAX_SEALED_BLOB, "tpm.private")?;
            SlotParams::Tpm2(TpmParams {
                expected,
                pin,
                sealed: SealedObject {
                    srk_name,
                    public,
                    private,
                    policy_digest,
                },
            })
        }
        SlotKind::Passphrase => {
            let m = r.u32_le("passphrase.memory_kib")?;
            let t = r.u32_le("passphrase.iterations")?;
            let p = r.u32_le("passphrase.lanes")?;
            let argon2 = Argon2Params::new(m, t, p)
                .map_err(|e| invalid("passphrase.argon2", e.to_string()))?;
            let generated = read_bool(r, "passphrase.generated")?;
            read_zero(r, 3, "passphrase.reserved")?;
            let salt = r.array::<32>("passphrase.salt")?;
            SlotParams::Passphrase(PassphraseParams {
                argon2,
                generated,
                salt,
            })
        }
        SlotKind::SevSnp => {
            let root_key = match r.u8("snp.root_key")? {
                0 => SnpRootKey::Vcek,
                1 => SnpRootKey::Vmrk,
                v => return Err(invalid("snp.root_key", format!("unknown root key {v}"))),
            };
            let has_mit = read_bool(r, "snp.has_mit")?;
            read_zero(r, 2, "snp.reserved")?;
            let field_select = r.u64_le("snp.field_select")?;
            if field_select >> 7 != 0 {
                return Err(invalid("snp.field_select", "unknown bits set"));
            }
            let vmpl = r.u32_le("snp.vmpl")?;
            if vmpl > 3 {
                return Err(invalid("snp.vmpl", format!("VMPL {vmpl} does not exist")));
            }
            let guest_svn = r.u32_le("snp.guest_svn")?;
            let tcb_version = r.u64_le("snp.tcb_version")?;
            let mit = r.u64_le("snp.launch_mit_vector")?;
            if !has_mit && mit != 0 {
                return Err(invalid(
                    "snp.launch_mit_vector",
                    "set although marked absent",
                ));
            }
            let salt = r.array::<32>("snp.salt")?;
            let measurement = r.array::<48>("snp.measurement")?;
            let report = read_blob(r, REPORT_LEN, "snp.report")?;
            if !report.is_empty() && report.len() != REPORT_LEN {
                return Err(invalid(
                    "snp.report",
                    format!("{} bytes, a report is {REPORT_LEN}", report.len()),
                ));
            }
            let request = SnpKeyRequest {
                root_key,
                field_select,
                vmpl,
                guest_svn,
                tcb_version,
                launch_mit_vector: has_mit.then_some(mit),
            };
            SlotParams::SevSnp(SnpParams {
                request,
                salt,
                measurement,
                report,
            })
        }
        SlotKind::Peer => {
            let machine_id = r.array::<16>("peer.machine_id")?;
            let local_half = r.array::<32>("peer.local_half")?;
            let server_cert_sha256 = r.array::<32>("peer.server_cert_sha256")?;
            let mask = r.u32_le("peer.pcr_mask")?;
            let snp = read_bool(r, "peer.snp")?;
            let endpoint_len = usize::from(r.u8("peer.endpoint_len")?);
            read_zero(r, 2, "peer.reserved")?;
            let pcrs = read_pcr_values(r, mask, "peer.pcrs")?;
            let endpoint = std::str::from_utf8(r.bytes(endpoint_len, "peer.endpoint")?)
                .map_err(|_| invalid("peer.endpoint", "not UTF-8"))?
                .to_string();
            SlotParams::Peer(PeerParams {
                endpoint,
                server_cert_sha256,
                machine_id,
                local_half,
                pcrs,
                snp,
            })
        }
    })
}

fn record(w: &mut Writer, kind: u16, payload: impl FnOnce(&mut Writer)) {
    w.u16(kind);
    w.u16(0);
    let len_at = w.len();
    w.u32(0);
    let start = w.len();
    payload(w);
    let len = w.len() - start;
    w.patch_u32(len_at, len_u32(len));
}

fn encode_slot(s: &Slot, w: &mut Writer) {
    w.u32(s.id.0);
    w.u8(s.kind().code());
    w.u8(len_u8(s.label.len()));
    w.u8(u8::from(s.temporary));
    w.u8(0);
    w.u64(s.created.0);
    w.u64(s.last_used.0);
    w.u32(s.remaining_boots);
    let mut params = Writer::default();
    encode_params(&s.params, &mut params);
    w.u32(len_u32(params.len()));
    w.bytes(&s.wrapped_master.0);
    w.bytes(&s.escrow.0);
    w.bytes(s.label.as_bytes());
    w.bytes(&params.buf);
}

fn decode_slot(r: &mut Reader<'_>) -> Result<Slot, DecodeKeyStoreError> {
    let id = SlotId(r.u32_le("slot.id")?);
    let kind_code = r.u8("slot.kind")?;
    let kind = SlotKind::from_code(kind_code)
        .ok_or_else(|| invalid("slot.kind", format!("unknown slot kind {kind_code}")))?;
    let label_len = usize::from(r.u8("slot.label_len")?);
    if label_len > MAX_LABEL_BYTES {
        return Err(invalid(
            "slot.label_len",
            format!("{label_len} bytes, at most {MAX_LABEL_BYTES}"),
        ));
    }
    let flags = r.u8("slot.flags")?;
    if flags > 1 {
        return Err(invalid("slot.flags", format!("unknown flags {flags:#04x}")));
    }
    read_zero(r, 1, "slot.reserved")?;
    let created = UnixTime(r.u64_le("slot.created")?);
    let last_used = UnixTime(r.u64_le("slot.last_used")?);
    let remaining_boots = r.u32_le("slot.remaining_boots")?;
    let params_len = usize::try_from(r.u32_le("slot.params_len")?).unwrap_or(usize::MAX);
    let wrapped_master = Wrapped(r.array::<WRAPPED_LEN>("slot.wrapped_master")?);
    let escrow = Wrapped(r.array::<WRAPPED_LEN>("slot.escrow")?);
    let label = std::str::from_utf8(r.bytes(label_len, "slot.label")?)
        .map_err(|_| invalid("slot.label", "not UTF-8"))?
        .to_string();
    let mut pr = Reader::new(r.bytes(params_len, "slot.params")?);
    let params = decode_params(kind, &mut pr)?;
    if pr.remaining() != 0 {
        return Err(invalid(
            "slot.params",
            format!("{} bytes left over", pr.remaining()),
        ));
    }
    Ok(Slot {
        id,
        label,
        created,
        last_used,
        temporary: flags & 1 != 0,
        remaining_boots,
        wrapped_master,
        escrow,
        params,
    })
}

fn encode_entry(e: &AuditEntry, w: &mut Writer) {
    w.u64(e.seq);
    w.u64(e.time.0);
    w.u8(e.action.code());
    w.u8(e.kind.map_or(0, SlotKind::code));
    w.u16(len_u16(e.detail.len()));
    w.u32(e.slot.map_or(u32::MAX, |s| s.0));
    w.bytes(&e.prev_hash);
    w.bytes(&e.hash);
    w.bytes(&e.mac);
    w.bytes(e.detail.as_bytes());
}

fn decode_entry(r: &mut Reader<'_>) -> Result<AuditEntry, DecodeKeyStoreError> {
    let seq = r.u64_le("audit.seq")?;
    let time = UnixTime(r.u64_le("audit.time")?);
    let action_code = r.u8("audit.action")?;
    let action = AuditAction::from_code(action_code)
        .ok_or_else(|| invalid("audit.action", format!("unknown action {action_code}")))?;
    let kind = match r.u8("audit.kind")? {
        0 => None,
        c => Some(
            SlotKind::from_code(c)
                .ok_or_else(|| invalid("audit.kind", format!("unknown slot kind {c}")))?,
        ),
    };
    let detail_len = usize::from(r.u16_le("audit.detail_len")?);
    if detail_len > MAX_AUDIT_DETAIL {
        return Err(invalid(
            "audit.detail_len",
            format!("{detail_len} bytes, at most {MAX_AUDIT_DETAIL}"),
        ));
    }
    let slot = match r.u32_le("audit.slot")? {
        u32::MAX => None,
        s => Some(SlotId(s)),
    };
    let prev_hash = r.array::<32>("audit.prev_hash")?;
    let hash = r.array::<32>("audit.hash")?;
    let mac = r.array::<32>("audit.mac")?;
    let detail = std::str::from_utf8(r.bytes(detail_len, "audit.detail")?)
        .map_err(|_| invalid("audit.detail", "not UTF-8"))?
        .to_string();
    Ok(AuditEntry {
        seq,
        time,
        action,
        slot,
        kind,
        detail,
        prev_hash,
        hash,
        mac,
    })
}

impl KeyStore {
    /// Checks the invariants every encodable store satisfies.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.slots.len() > MAX_SLOTS {
            return Err(format!("{} slots, at most {MAX_SLOTS}", self.slots.len()));
        }
        if self.audit.entries.len() > MAX_AUDIT_ENTRIES {
            return Err(format!(
                "{} audit entries, at most {MAX_AUDIT_ENTRIES}",
                self.audit.entries.len()
            ));
        }
        let mut ids: Vec<u32> = self.slots.iter().map(|s| s.id.0).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("duplicate slot ids".into());
        }
        for s in &self.slots {
            if s.id.0 == 0 || s.id.0 >= self.next_slot_id {
                return Err(format!("slot id {} outside 1..{}", s.id, self.next_slot_id));
            }
            if s.label.len() > MAX_LABEL_BYTES {
                return Err(format!("slot {} label too long", s.id));
            }
            if s.temporary && s.kind() != SlotKind::Tpm2 {
                return Err(format!("slot {} is temporary but not a TPM2 slot", s.id));
            }
            if !s.temporary && s.remaining_boots != 0 {
                return Err(format!(
                    "slot {} is permanent but has a boot allowance",
                    s.id
                ));
            }
            match &s.params {
                SlotParams::Tpm2(t) => {
                    let sz = [
                        t.sealed.srk_name.len(),
                        t.sealed.public.len(),
                        t.sealed.private.len(),
                    ];
                    if sz[0] > MAX_NAME || sz[1] > MAX_SEALED_BLOB || sz[2] > MAX_SEALED_BLOB {
                        return Err(format!("slot {} sealed blobs too large", s.id));
                    }
                }
                SlotParams::SevSnp(p) => {
                    if !p.report.is_empty() && p.report.len() != REPORT_LEN {
                        return Err(format!("slot {} report size", s.id));
                    }
                }
                SlotParams::Peer(p) => {
                    if p.endpoint.len() > MAX_ENDPOINT_BYTES {
                        return Err(format!("slot {} endpoint too long", s.id));
                    }
                }
                SlotParams::Passphrase(_) => {}
            }
        }
        for e in &self.audit.entries {
            if e.detail.len() > MAX_AUDIT_DETAIL {
                return Err("audit detail too long".into());
            }
        }
        Ok(())
    }

    /// Serializes the store (format version 1, see docs/KEYS.md). The result is at most
    /// [`MAX_ENCODED_LEN`] bytes and contains no secret in clear.
    ///
    /// # Panics
    /// Only on a bug in this crate: every store built through its API is valid.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        if let Err(e) = self.validate() {
            panic!("refusing to encode an invalid key store: {e}");
        }
        let mut w = Writer::with_capacity(4096);
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.u16(len_u16(HEADER_LEN));
        w.u32(0); // total length, patched below
        w.u16(len_u16(self.slots.len()));
        w.u16(len_u16(self.audit.entries.len()));
        w.bytes(&self.vde.0);
        w.u64(self.generation);
        w.u32(self.next_slot_id);
        w.u8(u8::from(self.rotation.is_some()));
        w.bytes(&[0; 3]);
        w.bytes(&self.master_key_id);
        debug_assert_eq!(w.len(), HEADER_LEN);
        for s in &self.slots {
            record(&mut w, REC_SLOT, |w| encode_slot(s, w));
        }
        if let Some(rot) = &self.rotation {
            record(&mut w, REC_ROTATION, |w| {
                w.bytes(&rot.previous_key_id);
                w.bytes(&rot.wrapped_previous.0);
            });
        }
        record(&mut w, REC_AUDIT_ANCHOR, |w| {
            w.u64(self.audit.dropped);
            w.bytes(&self.audit.anchor);
        });
        for e in &self.audit.entries {
            record(&mut w, REC_AUDIT_ENTRY, |w| encode_entry(e, w));
        }
        let total = w.len() + CHECKSUM_LEN;
        w.patch_u32(8, len_u32(total));
        let sum = checksum(&w.buf);
        w.bytes(&sum);
        let out = w.buf;
        assert!(
            out.len() <= MAX_ENCODED_LEN,
            "key store grew to {} bytes",
            out.len()
        );
        debug_assert_eq!(KeyStore::decode(&out).as_ref(), Ok(self));
        out
    }

    /// Parses an encoded store. Bounded: never trusts a length, never panics.
    ///
    /// # Errors
    /// [`DecodeKeyStoreError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<KeyStore, DecodeKeyStoreError> {
        let min = HEADER_LEN + CHECKSUM_LEN;
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            if bytes.len() < min {
                return Err(DecodeKeyStoreError::TooShort {
                    len: bytes.len(),
                    min,
                });
            }
            return Err(DecodeKeyStoreError::BadMagic);
        }
        if bytes.len() < min {
            return Err(DecodeKeyStoreError::TooShort {
                len: bytes.len(),
                min,
            });
        }
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(DecodeKeyStoreError::TooLong {
                len: bytes.len(),
                max: MAX_ENCODED_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        r.bytes(4, "magic")?;
        let version = r.u16_le("version")?;
        if version != VERSION {
            return Err(DecodeKeyStoreError::UnsupportedVersion(version));
        }
        let header_len = usize::from(r.u16_le("header_len")?);
        if header_len != HEADER_LEN {
            return Err(invalid(
                "header_len",
                format!("{header_len}, expected {HEADER_LEN}"),
            ));
        }
        let total = usize::try_from(r.u32_le("total_len")?).unwrap_or(usize::MAX);
        if total != bytes.len() {
            return Err(DecodeKeyStoreError::LengthMismatch {
                header: total,
                actual: bytes.len(),
            });
        }
        let body_end = bytes.len() - CHECKSUM_LEN;
        if !crate::audit::constant_time_eq(&checksum(&bytes[..body_end]), &bytes[body_end..]) {
            return Err(DecodeKeyStoreError::Checksum);
        }
        let slot_count = usize::from(r.u16_le("slot_count")?);
        if slot_count > MAX_SLOTS {
            return Err(invalid(
                "slot_count",
                format!("{slot_count}, at most {MAX_SLOTS}"),
            ));
        }
        let audit_count = usize::from(r.u16_le("audit_count")?);
        if audit_count > MAX_AUDIT_ENTRIES {
            return Err(invalid(
                "audit_count",
                format!("{audit_count}, at most {MAX_AUDIT_ENTRIES}"),
            ));
        }
        let vde = VdeId(r.array::<16>("vde_id")?);
        let generation = r.u64_le("generation")?;
        let next_slot_id = r.u32_le("next_slot_id")?;
        let rotation_pending = read_bool(&mut r, "rotation_pending")?;
        read_zero(&mut r, 3, "header.reserved")?;
        let master_key_id = r.array::<16>("master_key_id")?;
        debug_assert_eq!(r.position(), HEADER_LEN);

        let mut body = Reader::new(&bytes[HEADER_LEN..body_end]);
        let mut slots = Vec::with_capacity(slot_count);
        for _ in 0..slot_count {
            let mut rr = next_record(&mut body, REC_SLOT, "slot record")?;
            slots.push(decode_slot(&mut rr)?);
            finish_record(&rr, "slot record")?;
        }
        let rotation = if rotation_pending {
            let mut rr = next_record(&mut body, REC_ROTATION, "rotation record")?;
            let previous_key_id = rr.array::<16>("rotation.previous_key_id")?;
            let wrapped_previous = Wrapped(rr.array::<WRAPPED_LEN>("rotation.wrapped_previous")?);
            finish_record(&rr, "rotation record")?;
            Some(Rotation {
                previous_key_id,
                wrapped_previous,
            })
        } else {
            None
        };
        let mut rr = next_record(&mut body, REC_AUDIT_ANCHOR, "audit anchor record")?;
        let dropped = rr.u64_le("audit.dropped")?;
        let anchor = rr.array::<32>("audit.anchor")?;
        finish_record(&rr, "audit anchor record")?;
        let mut entries = Vec::with_capacity(audit_count);
        for _ in 0..audit_count {
            let mut rr = next_record(&mut body, REC_AUDIT_ENTRY, "audit entry record")?;
            entries.push(decode_entry(&mut rr)?);
            finish_record(&rr, "audit entry record")?;
        }
        if body.remaining() != 0 {
            return Err(invalid(
                "records",
                format!("{} bytes after the last record", body.remaining()),
            ));
        }
        let store = KeyStore {
            vde,
            generation,
            next_slot_id,
            master_key_id,
            slots,
            rotation,
            audit: AuditLog {
                dropped,
                anchor,
                entries,
            },
        };
        store.validate().map_err(|e| invalid("store", e))?;
        Ok(store)
    }
}

fn next_record<'a>(
    body: &mut Reader<'a>,
    want: u16,
    field: &'static str,
) -> Result<Reader<'a>, DecodeKeyStoreError> {
    let kind = body.u16_le(field)?;
    if kind != want {
        return Err(invalid(
            field,
            format!("record type {kind} where type {want} was expected"),
        ));
    }
    if body.u16_le(field)? != 0 {
        return Err(invalid(field, "reserved bytes are not zero"));
    }
    let len = usize::try_from(body.u32_le(field)?).unwrap_or(usize::MAX);
    Ok(Reader::new(body.bytes(len, field)?))
}

fn finish_record(rr: &Reader<'_>, field: &'static str) -> Result<(), DecodeKeyStoreError> {
    if rr.remaining() != 0 {
        return Err(invalid(
            field,
            format!("{} bytes left over", rr.remaining()),
        ));
    }
    Ok(())
}
