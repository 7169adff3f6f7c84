//! The key store: a VDE's key slots, rotation state and audit log, and the pure functions that
//! turn one store into the next.
//!
//! Every operation takes `&self` and returns a new [`KeyStore`] (or an error and no change), so
//! the daemon can persist the result atomically (the VDE keeps two copies of the key-slot area)
//! and a crash at any point leaves either the old or the new store, both of which open the VDE.

pub(crate) mod format;

use std::fmt;

use zeroize::Zeroizing;

pub use format::{
    DecodeKeyStoreError, MAX_ENCODED_LEN, MAX_ENDPOINT_BYTES, MAX_LABEL_BYTES, MAX_SLOTS,
    repair_checksum_for_fuzzing,
};

use crate::audit::{AuditAction, AuditEntry, AuditLog, AuditSummary, AuditVerifyError};
use crate::passphrase::Argon2Params;
use crate::pcr::{PcrSelection, PcrValues};
use crate::secret::{Entropy, Kek, MasterKey, OsEntropy, RandomError, contexts};
use crate::snp::{SnpKeyRequest, SnpRootKey};
use crate::tpm::SealedObject;
use crate::types::{SlotId, SlotKind, UnixTime, VdeId, hex, short_hex};
use crate::wrap::{self, Binding, Purpose, UnwrapFailed, Wrapped};

/// Parameters of a TPM2 slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct TpmParams {
    /// The PCR values the object is sealed to.
    pub expected: PcrValues,
    /// Whether a PIN (PolicyAuthValue) is required.
    pub pin: bool,
    /// The sealed object.
    pub sealed: SealedObject,
}

/// Parameters of a passphrase slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct PassphraseParams {
    pub argon2: Argon2Params,
    /// Generated passphrases are compared in canonical form.
    pub generated: bool,
    pub salt: [u8; 32],
}

/// Parameters of an SEV-SNP slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct SnpParams {
    pub request: SnpKeyRequest,
    pub salt: [u8; 32],
    /// The launch measurement at enrollment (for error messages).
    pub measurement: [u8; 48],
    /// The attestation report at enrollment (report_data = salt || zeros), possibly empty.
    pub report: Vec<u8>,
}

/// Parameters of a peer-release slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct PeerParams {
    /// `host:port` of the key-release service.
    pub endpoint: String,
    /// SHA-256 of the service's TLS certificate (pinned).
    pub server_cert_sha256: [u8; 32],
    /// This machine's enrollment id at the service.
    pub machine_id: [u8; 16],
    /// Local half of the wrapping key; the service holds the share.
    pub local_half: [u8; 32],
    /// The PCR values enrolled with the service.
    pub pcrs: PcrValues,
    /// Whether the service also expects an SEV-SNP report.
    pub snp: bool,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum SlotParams {
    Tpm2(TpmParams),
    Passphrase(PassphraseParams),
    SevSnp(SnpParams),
    Peer(PeerParams),
}

impl SlotParams {
    pub(crate) fn kind(&self) -> SlotKind {
        match self {
            SlotParams::Tpm2(_) => SlotKind::Tpm2,
            SlotParams::Passphrase(_) => SlotKind::Passphrase,
            SlotParams::SevSnp(_) => SlotKind::SevSnp,
            SlotParams::Peer(_) => SlotKind::Peer,
        }
    }
}

/// One key slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Slot {
    pub id: SlotId,
    pub label: String,
    pub created: UnixTime,
    /// 0 = never.
    pub last_used: UnixTime,
    /// A temporary update slot (TPM2 only), removed by the next successful reseal.
    pub temporary: bool,
    /// Boots a temporary slot may still open (0 for permanent slots).
    pub remaining_boots: u32,
    pub wrapped_master: Wrapped,
    pub escrow: Wrapped,
    pub params: SlotParams,
}

impl Slot {
    pub(crate) fn kind(&self) -> SlotKind {
        self.params.kind()
    }

    /// BLAKE3 over everything about the slot that must not change without a re-wrap.
    pub(crate) fn params_digest(&self) -> [u8; 32] {
        params_digest(&self.label, self.temporary, &self.params)
    }

    fn binding(&self, vde: VdeId, purpose: Purpose) -> Binding {
        Binding {
            purpose,
            vde,
            slot: self.id,
            kind: Some(self.kind()),
            params_digest: self.params_digest(),
        }
    }

    /// Turns the escrowed secret into the wrapping key (the identity except for peer slots).
    pub(crate) fn kek_from_secret(&self, secret: &[u8; 32]) -> Kek {
        match &self.params {
            SlotParams::Peer(p) => peer_kek(secret, &p.local_half),
            _ => Kek(*secret),
        }
    }
}

pub(crate) fn params_digest(label: &str, temporary: bool, params: &SlotParams) -> [u8; 32] {
    let mut w = crate::codec::Writer::default();
    format::encode_params(params, &mut w);
    let mut h = blake3::Hasher::new_derive_key("DataWarehouse dw-keys v1 slot parameters");
    h.update(&[params.kind().code(), u8::from(temporary)]);
    h.update(&u32::try_from(label.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.update(label.as_bytes());
    h.update(&w.buf);
    *h.finalize().as_bytes()
}

/// The peer slot's wrapping key from the service's share and the locally stored half.
pub(crate) fn peer_kek(share: &[u8; 32], local_half: &[u8; 32]) -> Kek {
    let mut input = Zeroizing::new([0u8; 64]);
    input[..32].copy_from_slice(share);
    input[32..].copy_from_slice(local_half);
    Kek(blake3::derive_key(contexts::PEER_KEK, input.as_ref()))
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Rotation {
    pub previous_key_id: [u8; 16],
    pub wrapped_previous: Wrapped,
}

/// Every slot's wrapping key, by slot (see [`KeyStore::wrapping_keys`]).
pub type SlotWrappingKeys = Vec<(SlotId, Zeroizing<[u8; 32]>)>;

/// A VDE's key slots, serialized into the VDE's key-slot area with [`KeyStore::encode`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyStore {
    pub(crate) vde: VdeId,
    pub(crate) generation: u64,
    pub(crate) next_slot_id: u32,
    pub(crate) master_key_id: [u8; 16],
    pub(crate) slots: Vec<Slot>,
    pub(crate) rotation: Option<Rotation>,
    pub(crate) audit: AuditLog,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("vde", &self.vde)
            .field("generation", &self.generation)
            .field("master_key_id", &short_hex(&self.master_key_id))
            .field(
                "slots",
                &self
                    .slots
                    .iter()
                    .map(|s| (s.id.0, s.kind()))
                    .collect::<Vec<_>>(),
            )
            .field("rotation_pending", &self.rotation.is_some())
            .field("audit_entries", &self.audit.entries.len())
            .finish()
    }
}

/// A slot ready to be added: its parameters and its wrapping secret, produced by the
/// kind-specific constructors (`NewSlot::passphrase`, `NewSlot::tpm2`, ... in [`crate::ops`]).
pub struct NewSlot {
    pub(crate) label: String,
    pub(crate) params: SlotParams,
    /// The escrowed secret: the KEK itself, or the peer share.
    pub(crate) secret: Zeroizing<[u8; 32]>,
    pub(crate) temporary_boots: Option<u32>,
}

impl fmt::Debug for NewSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewSlot({} \"{}\")", self.params.kind(), self.label)
    }
}

impl NewSlot {
    /// The kind of slot this will be.
    #[must_use]
    pub fn kind(&self) -> SlotKind {
        self.params.kind()
    }
}

/// Kind-specific, secret-free details of a slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SlotDetails {
    /// TPM2 slot.
    Tpm2 {
        /// The PCR values sealed to.
        expected: PcrValues,
        /// Whether a PIN is needed.
        pin: bool,
    },
    /// Passphrase slot.
    Passphrase {
        /// KDF parameters.
        argon2: Argon2Params,
        /// Whether the passphrase was generated by the appliance.
        generated: bool,
    },
    /// SEV-SNP slot.
    SevSnp {
        /// Launch measurement at enrollment.
        measurement: [u8; 48],
        /// Root key of the derived key.
        root_key: SnpRootKey,
        /// Whether the enrollment report is stored.
        has_report: bool,
    },
    /// Peer-release slot.
    Peer {
        /// `host:port` of the service.
        endpoint: String,
        /// Pinned certificate hash.
        server_cert_sha256: [u8; 32],
        /// Enrollment id.
        machine_id: [u8; 16],
        /// Enrolled PCRs.
        pcrs: PcrSelection,
        /// Whether an SEV-SNP report is part of the evidence.
        snp: bool,
    },
}

/// A slot as listed: no secrets.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SlotInfo {
    /// Slot number.
    pub id: SlotId,
    /// Kind.
    pub kind: SlotKind,
    /// Label given at creation.
    pub label: String,
    /// Creation time.
    pub created: UnixTime,
    /// Last time this slot opened the VDE.
    pub last_used: Option<UnixTime>,
    /// A temporary update slot, and how many boots it may still open.
    pub temporary_boots_left: Option<u32>,
    /// Kind-specific details.
    pub details: SlotDetails,
}

impl fmt::Display for SlotInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slot {} {} \"{}\" created {}",
            self.id, self.kind, self.label, self.created.0
        )?;
        match self.last_used {
            Some(t) => write!(f, ", last used {}", t.0)?,
            None => f.write_str(", never used")?,
        }
        if let Some(b) = self.temporary_boots_left {
            write!(f, ", TEMPORARY ({b} boots left)")?;
        }
        match &self.details {
            SlotDetails::Tpm2 { expected, pin } => {
                write!(f, ", PCRs {}", expected.selection())?;
                if *pin {
                    f.write_str(" + PIN")?;
                }
            }
            SlotDetails::Passphrase { argon2, generated } => {
                write!(
                    f,
                    ", {argon2}, {}",
                    if *generated {
                        "generated"
                    } else {
                        "chosen by a person"
                    }
                )?;
            }
            SlotDetails::SevSnp { measurement, .. } => {
                write!(f, ", measurement {}", short_hex(measurement))?;
            }
            SlotDetails::Peer {
                endpoint,
                pcrs,
                snp,
                ..
            } => {
                write!(
                    f,
                    ", peer {endpoint}, PCRs {pcrs}{}",
                    if *snp { " + SEV-SNP" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}

/// The master key given is not the one this store protects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master key given (id {given}) is not the one this key store protects (id {expected})")]
pub struct WrongMasterKey {
    /// Id of the key given.
    pub given: String,
    /// Id the store expects.
    pub expected: String,
}

/// The store belongs to another VDE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this key-slot area belongs to VDE {store}, not VDE {given}")]
pub struct WrongVde {
    /// The VDE the store names.
    pub store: VdeId,
    /// The VDE the caller named.
    pub given: VdeId,
}

/// Adding a slot failed.
#[derive(Debug, thiserror::Error)]
pub enum AddSlotError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// The store is full.
    #[error("the key store already has {max} slots; remove one first")]
    TooManySlots {
        /// The limit.
        max: usize,
    },
    /// The label is unusable.
    #[error("the slot label is longer than {max} bytes")]
    LabelTooLong {
        /// The limit.
        max: usize,
    },
    /// The encoded store would exceed its size limit.
    #[error("the key store would grow beyond {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// How careful removal is about recovery.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemovePolicy {
    /// Refuse to remove the last recovery passphrase.
    KeepRecovery,
    /// Allow removing the last recovery passphrase (a TPM or firmware change may then lock the
    /// VDE for good).
    AllowNoRecovery,
}

/// Removing a slot failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveSlotError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// No such slot.
    #[error("there is no slot {0}")]
    NoSuchSlot(SlotId),
    /// It is the last slot that can open the VDE.
    #[error("slot {slot} ({kind}) is the last slot that can open this VDE; add another slot first")]
    LastSlot {
        /// The slot.
        slot: SlotId,
        /// Its kind.
        kind: SlotKind,
    },
    /// It is the last recovery passphrase.
    #[error(
        "slot {slot} is the only recovery passphrase: without it a TPM, firmware or hardware change can lock this VDE for good; add a new passphrase first, or remove it explicitly allowing no recovery"
    )]
    LastRecovery {
        /// The slot.
        slot: SlotId,
    },
}

/// Rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// A rotation is already in progress.
    #[error(
        "a master-key rotation is already in progress: the VDE must finish re-encrypting and call finish_rotation first"
    )]
    AlreadyRotating,
    /// No rotation to finish.
    #[error("no master-key rotation is in progress")]
    NotRotating,
    /// The new key equals the old one.
    #[error("the new master key is the current one")]
    SameKey,
    /// A slot's escrow does not open.
    #[error(
        "slot {slot} ({kind}) cannot be re-wrapped: its escrowed key does not decrypt (the key-slot area is damaged); remove that slot first"
    )]
    SlotEscrow {
        /// The slot.
        slot: SlotId,
        /// Its kind.
        kind: SlotKind,
    },
    /// The stored previous key does not decrypt.
    #[error(
        "the previous master key stored for the pending rotation does not decrypt (the key-slot area is damaged)"
    )]
    PreviousKeyDamaged,
    /// The audit log does not verify under the current key.
    #[error("the audit log does not verify, so it is not re-signed under the new key: {0}")]
    Audit(#[from] AuditVerifyError),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Reading the escrowed secrets failed.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// A slot's escrow does not open.
    #[error("slot {0}'s escrowed key does not decrypt (the key-slot area is damaged)")]
    Damaged(SlotId),
}

impl KeyStore {
    /// An empty store for `vde`, protecting `master`. Add at least one slot before persisting it.
    #[must_use]
    pub fn new(vde: VdeId, master: &MasterKey, now: UnixTime) -> KeyStore {
        let mut s = KeyStore {
            vde,
            generation: 1,
            next_slot_id: 1,
            master_key_id: master.key_id(),
            slots: Vec::new(),
            rotation: None,
            audit: AuditLog::default(),
        };
        s.record(
            master,
            now,
            AuditAction::Created,
            None,
            &format!("key store created for VDE {vde}"),
        );
        s
    }

    /// The VDE this store belongs to.
    #[must_use]
    pub fn vde_id(&self) -> VdeId {
        self.vde
    }

    /// Incremented by every change (the daemon may use it to pick the newer of two copies).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The id of the master key this store protects.
    #[must_use]
    pub fn master_key_id(&self) -> [u8; 16] {
        self.master_key_id
    }

    /// Whether a master-key rotation awaits [`KeyStore::finish_rotation`].
    #[must_use]
    pub fn rotation_pending(&self) -> bool {
        self.rotation.is_some()
    }

    /// The slots, without secrets.
    #[must_use]
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.slots.iter().map(slot_info).collect()
    }

    /// One slot, without secrets.
    #[must_use]
    pub fn slot(&self, id: SlotId) -> Option<SlotInfo> {
        self.slots.iter().find(|s| s.id == id).map(slot_info)
    }

    /// The audit log entries kept (oldest first).
    #[must_use]
    pub fn audit_entries(&self) -> &[AuditEntry] {
        &self.audit.entries
    }

    /// Verifies the audit log's hash chain, and with the master key also every MAC.
    ///
    /// # Errors
    /// When the log was modified.
    pub fn verify_audit(
        &self,
        master: Option<&MasterKey>,
    ) -> Result<AuditSummary, AuditVerifyError> {
        let key = master.map(|m| m.derive_key(contexts::AUDIT));
        self.audit.verify(self.vde, key.as_deref())
    }

    pub(crate) fn check(&self, vde: VdeId, master: &MasterKey) -> Result<(), CheckError> {
        if vde != self.vde {
            return Err(CheckError::Vde(WrongVde {
                store: self.vde,
                given: vde,
            }));
        }
        let id = master.key_id();
        if !crate::audit::constant_time_eq(&id, &self.master_key_id) {
            return Err(CheckError::Key(WrongMasterKey {
                given: hex(&id),
                expected: hex(&self.master_key_id),
            }));
        }
        Ok(())
    }

    pub(crate) fn record(
        &mut self,
        master: &MasterKey,
        now: UnixTime,
        action: AuditAction,
        slot: Option<(SlotId, SlotKind)>,
        detail: &str,
    ) {
        let key = master.derive_key(contexts::AUDIT);
        self.audit.append(self.vde, &key, now, action, slot, detail);
    }

    pub(crate) fn slot_index(&self, id: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Unwraps a slot's escrowed secret with the open master key.
    pub(crate) fn escrowed_secret(
        &self,
        idx: usize,
        master: &MasterKey,
    ) -> Result<Zeroizing<[u8; 32]>, UnwrapFailed> {
        let slot = &self.slots[idx];
        let key = master.derive_key(contexts::ESCROW);
        wrap::unwrap(
            &key,
            &slot.escrow,
            &slot.binding(self.vde, Purpose::SlotSecretEscrow),
        )
    }

    /// Opens the master key from a slot with its wrapping key.
    pub(crate) fn open_slot(&self, idx: usize, kek: &Kek) -> Result<MasterKey, UnwrapFailed> {
        let slot = &self.slots[idx];
        let bytes = wrap::unwrap(
            &kek.0,
            &slot.wrapped_master,
            &slot.binding(self.vde, Purpose::MasterUnderKek),
        )?;
        let key = MasterKey::from_bytes(*bytes);
        // A slot that authenticates but holds another key means the store was assembled from
        // pieces of different stores of the same VDE; refuse rather than hand out a wrong key.
        if key.key_id() != self.master_key_id {
            return Err(UnwrapFailed);
        }
        Ok(key)
    }

    /// (Re)wraps slot `idx` for `master` with `secret`, after its parameters were set.
    pub(crate) fn seal_slot(
        &mut self,
        idx: usize,
        master: &MasterKey,
        secret: &[u8; 32],
        rng: &mut dyn Entropy,
    ) -> Result<(), RandomError> {
        let vde = self.vde;
        let slot = &mut self.slots[idx];
        let kek = slot.kek_from_secret(secret);
        slot.wrapped_master = wrap::wrap(
            &kek.0,
            master.expose_secret(),
            &slot.binding(vde, Purpose::MasterUnderKek),
            rng,
        )?;
        let escrow_key = master.derive_key(contexts::ESCROW);
        slot.escrow = wrap::wrap(
            &escrow_key,
            secret,
            &slot.binding(vde, Purpose::SlotSecretEscrow),
            rng,
        )?;
        Ok(())
    }

    /// Adds a slot that opens this VDE.
    ///
    /// # Errors
    /// On a wrong VDE or key, a full store, or RNG failure.
    pub fn add_slot(
        &self,
        vde: VdeId,
        master: &MasterKey,
        slot: NewSlot,
        now: UnixTime,
    ) -> Result<(KeyStore, SlotId), AddSlotError> {
        self.add_slot_with(vde, master, slot, now, &mut OsEntropy)
    }

    pub(crate) fn add_slot_with(
        &self,
        vde: VdeId,
        master: &MasterKey,
        slot: NewSlot,
        now: UnixTime,
        rng: &mut dyn Entropy,
    ) -> Result<(KeyStore, SlotId), AddSlotError> {
        self.check(vde, master).map_err(AddSlotError::from)?;
        if self.slots.len() >= MAX_SLOTS {
            return Err(AddSlotError::TooManySlots { max: MAX_SLOTS });
        }
        if slot.label.len() > MAX_LABEL_BYTES {
            return Err(AddSlotError::LabelTooLong {
                max: MAX_LABEL_BYTES,
            });
        }
        let mut next = self.clone();
        let id = SlotId(next.next_slot_id);
        next.next_slot_id += 1;
        let kind = slot.params.kind();
        let detail = new_slot_detail(&slot);
        next.slots.push(Slot {
            id,
            label: slot.label,
            created: now,
            last_used: UnixTime(0),
            temporary: slot.temporary_boots.is_some(),
            remaining_boots: slot.temporary_boots.unwrap_or(0),
            wrapped_master: Wrapped([0; wrap::WRAPPED_LEN]),
            escrow: Wrapped([0; wrap::WRAPPED_LEN]),
            params: slot.params,
        });
        let idx = next.slots.len() - 1;
        next.seal_slot(idx, master, &slot.secret, rng)?;
        let action = if slot.temporary_boots.is_some() {
            AuditAction::UpdatePrepared
        } else {
            AuditAction::SlotAdded
        };
        next.record(master, now, action, Some((id, kind)), &detail);
        next.generation += 1;
        if next.encoded_len() > MAX_ENCODED_LEN {
            return Err(AddSlotError::TooLarge {
                max: MAX_ENCODED_LEN,
            });
        }
        Ok((next, id))
    }

    /// Removes a slot. Refuses to remove the last slot that can open the VDE, and (unless
    /// `policy` allows it) the last recovery passphrase.
    ///
    /// # Errors
    /// See [`RemoveSlotError`].
    pub fn remove_slot(
        &self,
        vde: VdeId,
        master: &MasterKey,
        id: SlotId,
        policy: RemovePolicy,
        now: UnixTime,
    ) -> Result<KeyStore, RemoveSlotError> {
        self.check(vde, master).map_err(RemoveSlotError::from)?;
        let idx = self.slot_index(id).ok_or(RemoveSlotError::NoSuchSlot(id))?;
        let slot = &self.slots[idx];
        let others_permanent = self
            .slots
            .iter()
            .filter(|s| s.id != id && !s.temporary)
            .count();
        if !slot.temporary && others_permanent == 0 {
            return Err(RemoveSlotError::LastSlot {
                slot: id,
                kind: slot.kind(),
            });
        }
        let other_recovery = self
            .slots
            .iter()
            .any(|s| s.id != id && s.kind() == SlotKind::Passphrase);
        if slot.kind() == SlotKind::Passphrase
            && !other_recovery
            && policy == RemovePolicy::KeepRecovery
        {
            return Err(RemoveSlotError::LastRecovery { slot: id });
        }
        let mut next = self.clone();
        let removed = next.slots.remove(idx);
        let action = if removed.temporary {
            AuditAction::TemporarySlotRemoved
        } else {
            AuditAction::SlotRemoved
        };
        next.record(
            master,
            now,
            action,
            Some((id, removed.kind())),
            &format!("removed \"{}\"", removed.label),
        );
        next.generation += 1;
        Ok(next)
    }

    /// Starts a master-key rotation: every slot is re-wrapped for `new` (their wrapping keys are
    /// recovered from the escrow with `current`, so no passphrase or TPM is needed), the audit
    /// log is re-signed under `new`, and `current` is kept wrapped under `new` until the VDE
    /// has re-encrypted everything and calls [`KeyStore::finish_rotation`].
    ///
    /// The VDE must not write anything under `new` before the returned store is durable.
    ///
    /// # Errors
    /// See [`RotateError`].
    pub fn begin_rotation(
        &self,
        vde: VdeId,
        current: &MasterKey,
        new: &MasterKey,
        now: UnixTime,
    ) -> Result<KeyStore, RotateError> {
        self.begin_rotation_with(vde, current, new, now, &mut OsEntropy)
    }

    pub(crate) fn begin_rotation_with(
        &self,
        vde: VdeId,
        current: &MasterKey,
        new: &MasterKey,
        now: UnixTime,
        rng: &mut dyn Entropy,
    ) -> Result<KeyStore, RotateError> {
        self.check(vde, current).map_err(RotateError::from)?;
        if self.rotation.is_some() {
            return Err(RotateError::AlreadyRotating);
        }
        if new.key_id() == current.key_id() {
            return Err(RotateError::SameKey);
        }
        let mut next = self.clone();
        for idx in 0..next.slots.len() {
            let secret =
                self.escrowed_secret(idx, current)
                    .map_err(|_| RotateError::SlotEscrow {
                        slot: self.slots[idx].id,
                        kind: self.slots[idx].kind(),
                    })?;
            next.seal_slot(idx, new, &secret, rng)?;
        }
        let old_audit = current.derive_key(contexts::AUDIT);
        let new_audit = new.derive_key(contexts::AUDIT);
        next.audit.remac(self.vde, &old_audit, &new_audit)?;
        let prev_key = new.derive_key(contexts::PREVIOUS);
        next.rotation = Some(Rotation {
            previous_key_id: current.key_id(),
            wrapped_previous: wrap::wrap(
                &prev_key,
                current.expose_secret(),
                &previous_binding(vde),
                rng,
            )?,
        });
        next.master_key_id = new.key_id();
        next.record(
            new,
            now,
            AuditAction::RotationStarted,
            None,
            &format!(
                "master key {} replaced by {}",
                short_hex(&current.key_id()),
                short_hex(&new.key_id())
            ),
        );
        next.generation += 1;
        Ok(next)
    }

    /// During a rotation, the previous master key (which the VDE needs to read data it has not
    /// re-encrypted yet). `None` when no rotation is pending.
    ///
    /// # Errors
    /// On a wrong VDE or key, or damage.
    pub fn previous_master_key(
        &self,
        vde: VdeId,
        current: &MasterKey,
    ) -> Result<Option<MasterKey>, RotateError> {
        self.check(vde, current).map_err(RotateError::from)?;
        let Some(rot) = &self.rotation else {
            return Ok(None);
        };
        let prev_key = current.derive_key(contexts::PREVIOUS);
        let bytes = wrap::unwrap(&prev_key, &rot.wrapped_previous, &previous_binding(vde))
            .map_err(|_| RotateError::PreviousKeyDamaged)?;
        let key = MasterKey::from_bytes(*bytes);
        if key.key_id() != rot.previous_key_id {
            return Err(RotateError::PreviousKeyDamaged);
        }
        Ok(Some(key))
    }

    /// Ends a rotation: the previous master key is forgotten.
    ///
    /// # Errors
    /// On a wrong VDE or key, or when no rotation is pending.
    pub fn finish_rotation(
        &self,
        vde: VdeId,
        current: &MasterKey,
        now: UnixTime,
    ) -> Result<KeyStore, RotateError> {
        self.check(vde, current).map_err(RotateError::from)?;
        let Some(rot) = &self.rotation else {
            return Err(RotateError::NotRotating);
        };
        let mut next = self.clone();
        let prev = rot.previous_key_id;
        next.rotation = None;
        next.record(
            current,
            now,
            AuditAction::RotationFinished,
            None,
            &format!("previous master key {} forgotten", short_hex(&prev)),
        );
        next.generation += 1;
        Ok(next)
    }

    /// Every slot's wrapping key, recovered through the escrow. Meant for audits such as the
    /// "nothing secret on disk" test; anyone holding the master key can do this anyway.
    ///
    /// # Errors
    /// On a wrong VDE or key, or a damaged escrow.
    #[doc(hidden)]
    pub fn wrapping_keys(
        &self,
        vde: VdeId,
        master: &MasterKey,
    ) -> Result<SlotWrappingKeys, EscrowError> {
        self.check(vde, master).map_err(EscrowError::from)?;
        let mut out = Vec::with_capacity(self.slots.len());
        for idx in 0..self.slots.len() {
            let id = self.slots[idx].id;
            let secret = self
                .escrowed_secret(idx, master)
                .map_err(|_| EscrowError::Damaged(id))?;
            let kek = self.slots[idx].kek_from_secret(&secret);
            out.push((id, Zeroizing::new(kek.0)));
        }
        Ok(out)
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

fn previous_binding(vde: VdeId) -> Binding {
    Binding {
        purpose: Purpose::PreviousMaster,
        vde,
        slot: SlotId(0),
        kind: None,
        params_digest: [0; 32],
    }
}

fn new_slot_detail(slot: &NewSlot) -> String {
    let what = match &slot.params {
        SlotParams::Tpm2(t) => format!(
            "TPM2 PCRs {}{}",
            t.expected.selection(),
            if t.pin { " + PIN" } else { "" }
        ),
        SlotParams::Passphrase(p) => format!(
            "passphrase ({}, {})",
            p.argon2,
            if p.generated { "generated" } else { "chosen" }
        ),
        SlotParams::SevSnp(s) => format!("SEV-SNP measurement {}", short_hex(&s.measurement)),
        SlotParams::Peer(p) => format!("peer {} PCRs {}", p.endpoint, p.pcrs.selection()),
    };
    match slot.temporary_boots {
        Some(b) => format!("\"{}\" temporary {what}, {b} boots", slot.label),
        None => format!("\"{}\" {what}", slot.label),
    }
}

/// Errors of the shared VDE/key check.
#[derive(Debug)]
pub(crate) enum CheckError {
    Vde(WrongVde),
    Key(WrongMasterKey),
}

macro_rules! from_check {
    ($($t:ty),*) => {$(
        impl From<CheckError> for $t {
            fn from(e: CheckError) -> Self {
                match e {
                    CheckError::Vde(v) => Self::WrongVde(v),
                    CheckError::Key(k) => Self::WrongMasterKey(k),
                }
            }
        }
    )*};
}
from_check!(AddSlotError, RemoveSlotError, RotateError, EscrowError);

fn slot_info(s: &Slot) -> SlotInfo {
    let details = match &s.params {
        SlotParams::Tpm2(t) => SlotDetails::Tpm2 {
            expected: t.expected.clone(),
            pin: t.pin,
        },
        SlotParams::Passphrase(p) => SlotDetails::Passphrase {
            argon2: p.argon2,
            generated: p.generated,
        },
        SlotParams::SevSnp(p) => SlotDetails::SevSnp {
            measurement: p.measurement,
            root_key: p.request.root_key,
            has_report: !p.report.is_empty(),
        },
        SlotParams::Peer(p) => SlotDetails::Peer {
            endpoint: p.endpoint.clone(),
            server_cert_sha256: p.server_cert_sha256,
            machine_id: p.machine_id,
            pcrs: p.pcrs.selection(),
            snp: p.snp,
        },
    };
    SlotInfo {
        id: s.id,
        kind: s.kind(),
        label: s.label.clone(),
        created: s.created,
        last_used: (s.last_used.0 != 0).then_some(s.last_used),
        temporary_boots_left: s.temporary.then_some(s.remaining_boots),
        details,
    }
}

#[cfg(test)]
mod tests;
