//! Unlocking a VDE at boot: try the slots in the configured order, report exactly which slot
//! failed and why, and return the master key from the first slot that works.
//!
//! Waiting for a recovery passphrase (console or API) is the daemon's loop; it calls
//! [`unlock_with_passphrase`] with what a person typed.

use std::fmt;

use crate::audit::AuditAction;
use crate::passphrase::{Passphrase, derive_kek};
use crate::pcr::{PcrChange, describe_changes};
use crate::peer::client::{PeerClient, PeerError, PeerTimeouts};
use crate::peer::proto::RefuseCode;
use crate::secret::{Kek, MasterKey, Pin};
use crate::snp::{SevGuest, SnpAvailability, SnpFirmware, availability, parse_report};
use crate::store::{KeyStore, Slot, SlotParams, peer_kek};
use crate::tpm::{DEFAULT_TCTI, Tpm, UnsealError};
use crate::types::{SlotId, SlotKind, UnixTime, VdeId, short_hex};

/// A slot, or every slot of a kind, in the unlock order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SlotRef {
    /// One slot.
    Slot(SlotId),
    /// Every slot of this kind, in slot-id order.
    Kind(SlotKind),
}

/// How to unlock.
#[derive(Debug)]
pub struct UnlockConfig {
    /// The order to try slots in. Empty means: TPM2, SEV-SNP, peer, passphrase.
    pub order: Vec<SlotRef>,
    /// TCTI of the TPM (`device:/dev/tpmrm0` on the appliance).
    pub tcti: String,
    /// PIN for TPM2 slots that need one.
    pub tpm_pin: Option<Pin>,
    /// A recovery passphrase, if one was given.
    pub passphrase: Option<Passphrase>,
    /// Timeouts for peers.
    pub peer: PeerTimeouts,
}

impl Default for UnlockConfig {
    fn default() -> Self {
        UnlockConfig {
            order: Vec::new(),
            tcti: DEFAULT_TCTI.to_string(),
            tpm_pin: None,
            passphrase: None,
            peer: PeerTimeouts::default(),
        }
    }
}

/// Why one slot did not open the VDE.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AttemptFailure {
    /// No usable TPM (absent, unreachable).
    TpmUnavailable(String),
    /// PCR values differ from the sealed policy.
    PcrMismatch(Vec<PcrChange>),
    /// The TPM refused the policy although the PCRs read back as enrolled.
    PolicyRefused,
    /// The TPM's storage root key changed (cleared or replaced TPM).
    TpmCleared,
    /// The slot needs a PIN and none was given.
    PinRequired,
    /// The PIN is wrong.
    WrongPin,
    /// The TPM is locked out.
    TpmLockout,
    /// Another TPM failure.
    Tpm(String),
    /// A temporary update slot whose boot allowance is used up.
    TemporaryExhausted,
    /// No passphrase was given.
    PassphraseNotGiven,
    /// The passphrase does not open this slot.
    WrongPassphrase,
    /// Argon2id could not run.
    PassphraseKdf(String),
    /// SEV-SNP not available here.
    SnpUnavailable(String),
    /// The launch measurement differs from enrollment.
    SnpMeasurementChanged {
        /// At enrollment.
        enrolled: [u8; 48],
        /// Now.
        current: [u8; 48],
    },
    /// The firmware-derived key does not open the slot, though the measurement matches.
    SnpKeyMismatch,
    /// The firmware refused.
    SnpFirmware(String),
    /// The peer could not be reached.
    PeerUnreachable(String),
    /// The peer refused this machine's attestation.
    PeerAttestationFailed(String),
    /// The peer refused for another reason, or TLS failed.
    Peer(String),
    /// The slot's data does not authenticate with the key it produced (damaged or tampered).
    SlotDamaged,
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::TpmUnavailable(r) => f.write_str(r),
            AttemptFailure::PcrMismatch(c) => write!(f, "{}", describe_changes(c)),
            AttemptFailure::PolicyRefused => f.write_str("the TPM refused the policy although the PCRs match the enrolled values (the sealed object's policy differs)"),
            AttemptFailure::TpmCleared => f.write_str("the TPM's storage root key changed: the TPM was cleared or replaced; unlock with the recovery passphrase and re-seal"),
            AttemptFailure::PinRequired => f.write_str("this slot needs a PIN and none was given"),
            AttemptFailure::WrongPin => f.write_str("the PIN is wrong"),
            AttemptFailure::TpmLockout => f.write_str("the TPM is in dictionary-attack lockout after wrong PINs"),
            AttemptFailure::Tpm(r) => write!(f, "TPM error: {r}"),
            AttemptFailure::TemporaryExhausted => f.write_str("this temporary update slot has used up its boots; unlock with another slot"),
            AttemptFailure::PassphraseNotGiven => f.write_str("no passphrase given"),
            AttemptFailure::WrongPassphrase => f.write_str("the passphrase does not open this slot"),
            AttemptFailure::PassphraseKdf(r) => f.write_str(r),
            AttemptFailure::SnpUnavailable(r) => write!(f, "not available on this machine: {r}"),
            AttemptFailure::SnpMeasurementChanged { enrolled, current } => write!(
                f,
                "the SEV-SNP launch measurement changed (enrolled {}, now {})",
                short_hex(enrolled),
                short_hex(current)
            ),
            AttemptFailure::SnpKeyMismatch => f.write_str("the key the SEV-SNP firmware derives now does not open this slot (guest policy, VMPL or TCB changed)"),
            AttemptFailure::SnpFirmware(r) => f.write_str(r),
            AttemptFailure::PeerUnreachable(r) => write!(f, "peer unreachable: {r}"),
            AttemptFailure::PeerAttestationFailed(r) => write!(f, "attestation failed: {r}"),
            AttemptFailure::Peer(r) => f.write_str(r),
            AttemptFailure::SlotDamaged => f.write_str("the slot's data does not authenticate (damaged or tampered key-slot area)"),
        }
    }
}

/// One failed attempt.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Attempt {
    /// The slot.
    pub slot: SlotId,
    /// Its kind.
    pub kind: SlotKind,
    /// Its label.
    pub label: String,
    /// Why it failed.
    pub reason: AttemptFailure,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} slot {} (\"{}\"): {}",
            self.kind, self.slot, self.label, self.reason
        )
    }
}

/// The VDE is open.
#[derive(Debug)]
pub struct UnlockOutcome {
    /// The master key: hand `expose_secret()` to the VDE.
    pub master_key: MasterKey,
    /// The slot that opened it.
    pub slot_used: SlotId,
    /// Its kind.
    pub kind: SlotKind,
    /// Slots tried before it, and why they failed.
    pub attempts: Vec<Attempt>,
    /// The store with "last used" updated (and a temporary slot's allowance decremented):
    /// persist it.
    pub store: KeyStore,
    /// A temporary update slot was used, or a slot failed because the measured state changed:
    /// once the new state is trusted, call [`crate::ops::reseal`].
    pub reseal_recommended: bool,
}

/// No slot opened the VDE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UnlockFailed {
    /// The VDE.
    pub vde: VdeId,
    /// Every slot tried, and why it failed.
    pub attempts: Vec<Attempt>,
    /// A problem with the store itself (wrong VDE, no slots).
    pub store_problem: Option<String>,
}

impl UnlockFailed {
    fn describe(&self) -> String {
        let mut s = format!("VDE {} stays locked", self.vde);
        if let Some(p) = &self.store_problem {
            s.push_str(": ");
            s.push_str(p);
        }
        for a in &self.attempts {
            s.push_str("; ");
            s.push_str(&a.to_string());
        }
        // Only suggest the passphrase when a passphrase slot exists and was not tried.
        if self
            .attempts
            .iter()
            .any(|a| a.reason == AttemptFailure::PassphraseNotGiven)
        {
            s.push_str("; enter the recovery passphrase to unlock");
        }
        s
    }
}

/// Unlocks with this machine's devices: the TPM at `config.tcti` and `/dev/sev-guest` if present.
///
/// # Errors
/// [`UnlockFailed`] listing every slot tried and why it failed.
pub fn unlock(
    store: &KeyStore,
    vde: VdeId,
    config: &UnlockConfig,
    now: UnixTime,
) -> Result<UnlockOutcome, UnlockFailed> {
    let needs_snp = store.slots.iter().any(|s| {
        matches!(&s.params, SlotParams::SevSnp(_))
            || matches!(&s.params, SlotParams::Peer(p) if p.snp)
    });
    if !needs_snp {
        return unlock_with(store, vde, config, None, now);
    }
    match SevGuest::open() {
        Ok(mut fw) => unlock_with(store, vde, config, Some(&mut fw), now),
        Err(_) => unlock_with(store, vde, config, None, now),
    }
}

/// Tries only the passphrase slots with `passphrase` (the daemon's recovery prompt).
///
/// # Errors
/// [`UnlockFailed`].
pub fn unlock_with_passphrase(
    store: &KeyStore,
    vde: VdeId,
    passphrase: &Passphrase,
    now: UnixTime,
) -> Result<UnlockOutcome, UnlockFailed> {
    let config = UnlockConfig {
        order: vec![SlotRef::Kind(SlotKind::Passphrase)],
        passphrase: Some(Passphrase::new(passphrase.expose_secret())),
        ..UnlockConfig::default()
    };
    unlock_with(store, vde, &config, None, now)
}

fn ordered(store: &KeyStore, order: &[SlotRef]) -> Vec<usize> {
    let default: Vec<SlotRef> = SlotKind::ALL.iter().map(|k| SlotRef::Kind(*k)).collect();
    let order = if order.is_empty() {
        &default[..]
    } else {
        order
    };
    let mut out: Vec<usize> = Vec::new();
    for r in order {
        let mut matching: Vec<usize> = store
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| match r {
                SlotRef::Slot(id) => s.id == *id,
                SlotRef::Kind(k) => s.kind() == *k,
            })
            .map(|(i, _)| i)
            .collect();
        // Permanent slots before temporary ones, then by id.
        matching.sort_by_key(|i| (store.slots[*i].temporary, store.slots[*i].id));
        for i in matching {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

struct Devices<'a, 'f> {
    tcti: &'a str,
    /// Opened on first use, so a store without TPM slots never touches the TPM.
    tpm: Option<Result<Tpm, String>>,
    snp: Option<&'f mut dyn SnpFirmware>,
}

fn tpm_of<'b>(
    tcti: &str,
    slot: &'b mut Option<Result<Tpm, String>>,
) -> Result<&'b mut Tpm, AttemptFailure> {
    match slot.get_or_insert_with(|| Tpm::open(tcti).map_err(|e| e.to_string())) {
        Ok(t) => Ok(t),
        Err(e) => Err(AttemptFailure::TpmUnavailable(e.clone())),
    }
}

/// Unlocks with an explicit SEV-SNP firmware (tests, or a daemon that opened it itself).
///
/// # Errors
/// [`UnlockFailed`] listing every slot tried and why it failed.
pub fn unlock_with(
    store: &KeyStore,
    vde: VdeId,
    config: &UnlockConfig,
    snp: Option<&mut dyn SnpFirmware>,
    now: UnixTime,
) -> Result<UnlockOutcome, UnlockFailed> {
    let fail = |attempts: Vec<Attempt>, problem: Option<String>| UnlockFailed {
        vde,
        attempts,
        store_problem: problem,
    };
    if store.vde != vde {
        return Err(fail(
            Vec::new(),
            Some(format!("the key-slot area belongs to VDE {}", store.vde)),
        ));
    }
    if store.slots.is_empty() {
        return Err(fail(Vec::new(), Some("the key store has no slots".into())));
    }
    let order = ordered(store, &config.order);
    if order.is_empty() {
        return Err(fail(
            Vec::new(),
            Some("no slot matches the configured unlock order".into()),
        ));
    }
    let mut devices = Devices {
        tcti: &config.tcti,
        tpm: None,
        snp,
    };
    let mut attempts = Vec::new();
    for idx in order {
        let slot = &store.slots[idx];
        match try_slot(store, idx, config, &mut devices) {
            Ok(master_key) => {
                let reseal_recommended = slot.temporary
                    || attempts.iter().any(|a: &Attempt| {
                        matches!(
                            a.reason,
                            AttemptFailure::PcrMismatch(_)
                                | AttemptFailure::SnpMeasurementChanged { .. }
                        )
                    });
                let next = after_unlock(store, idx, &master_key, now);
                return Ok(UnlockOutcome {
                    master_key,
                    slot_used: slot.id,
                    kind: slot.kind(),
                    attempts,
                    store: next,
                    reseal_recommended,
                });
            }
            Err(reason) => attempts.push(Attempt {
                slot: slot.id,
                kind: slot.kind(),
                label: slot.label.clone(),
                reason,
            }),
        }
    }
    Err(fail(attempts, None))
}

fn after_unlock(store: &KeyStore, idx: usize, master: &MasterKey, now: UnixTime) -> KeyStore {
    let mut next = store.clone();
    let slot = &mut next.slots[idx];
    slot.last_used = now;
    let (id, kind) = (slot.id, slot.kind());
    if slot.temporary {
        slot.remaining_boots = slot.remaining_boots.saturating_sub(1);
        let left = slot.remaining_boots;
        next.record(
            master,
            now,
            AuditAction::TemporarySlotUsed,
            Some((id, kind)),
            &format!("{left} boots left"),
        );
    }
    next.generation += 1;
    next
}

fn open(store: &KeyStore, idx: usize, kek: &Kek) -> Result<MasterKey, AttemptFailure> {
    store
        .open_slot(idx, kek)
        .map_err(|_| AttemptFailure::SlotDamaged)
}

fn try_slot(
    store: &KeyStore,
    idx: usize,
    config: &UnlockConfig,
    devices: &mut Devices<'_, '_>,
) -> Result<MasterKey, AttemptFailure> {
    let slot: &Slot = &store.slots[idx];
    if slot.temporary && slot.remaining_boots == 0 {
        return Err(AttemptFailure::TemporaryExhausted);
    }
    match &slot.params {
        SlotParams::Passphrase(p) => {
            let pass = config
                .passphrase
                .as_ref()
                .ok_or(AttemptFailure::PassphraseNotGiven)?;
            let kek = derive_kek(pass, p.generated, &p.salt, &p.argon2)
                .map_err(|e| AttemptFailure::PassphraseKdf(e.to_string()))?;
            store
                .open_slot(idx, &kek)
                .map_err(|_| AttemptFailure::WrongPassphrase)
        }
        SlotParams::Tpm2(t) => {
            let pin = if t.pin {
                Some(config.tpm_pin.as_ref().ok_or(AttemptFailure::PinRequired)?)
            } else {
                None
            };
            let tpm = tpm_of(devices.tcti, &mut devices.tpm)?;
            match tpm.unseal(&t.sealed, t.expected.selection(), pin) {
                Ok(secret) => open(store, idx, &Kek(*secret)),
                Err(UnsealError::PolicyFailed) => {
                    let current = tpm
                        .read_pcrs(t.expected.selection())
                        .map_err(|e| AttemptFailure::Tpm(e.to_string()))?;
                    let changes = t.expected.changes(&current);
                    if changes.is_empty() {
                        Err(AttemptFailure::PolicyRefused)
                    } else {
                        Err(AttemptFailure::PcrMismatch(changes))
                    }
                }
                Err(UnsealError::SrkChanged) => Err(AttemptFailure::TpmCleared),
                Err(UnsealError::WrongPin) => Err(AttemptFailure::WrongPin),
                Err(UnsealError::Lockout) => Err(AttemptFailure::TpmLockout),
                Err(e) => Err(AttemptFailure::Tpm(e.to_string())),
            }
        }
        SlotParams::SevSnp(p) => {
            let Some(fw) = reborrow(&mut devices.snp) else {
                return Err(AttemptFailure::SnpUnavailable(match availability() {
                    SnpAvailability::NotAvailable { reason } => reason,
                    SnpAvailability::Available => "/dev/sev-guest could not be opened".into(),
                }));
            };
            let kek = crate::ops::snp_kek(fw, &p.request, &p.salt)
                .map_err(|e| AttemptFailure::SnpFirmware(e.to_string()))?;
            store.open_slot(idx, &Kek(*kek)).map_err(|_| {
                // Say why: compare the measurement now with the enrolled one.
                match fw
                    .attestation_report(&[0; 64])
                    .ok()
                    .and_then(|r| parse_report(&r).ok())
                {
                    Some(r) if r.measurement != p.measurement => {
                        AttemptFailure::SnpMeasurementChanged {
                            enrolled: p.measurement,
                            current: r.measurement,
                        }
                    }
                    _ => AttemptFailure::SnpKeyMismatch,
                }
            })
        }
        SlotParams::Peer(p) => {
            if p.snp && devices.snp.is_none() {
                return Err(AttemptFailure::SnpUnavailable(
                    "this peer slot was enrolled with SEV-SNP evidence".into(),
                ));
            }
            let client = PeerClient::new(p.endpoint.clone(), p.server_cert_sha256, config.peer);
            let tpm = tpm_of(devices.tcti, &mut devices.tpm)?;
            let snp = if p.snp {
                reborrow(&mut devices.snp)
            } else {
                None
            };
            let share = client
                .fetch_share(tpm, p.machine_id, p.pcrs.selection(), snp)
                .map_err(|e| peer_failure(&e))?;
            open(store, idx, &peer_kek(&share, &p.local_half))
        }
    }
}

/// Re-borrows an optional firmware for one call.
pub(crate) fn reborrow<'b>(
    snp: &'b mut Option<&mut dyn SnpFirmware>,
) -> Option<&'b mut dyn SnpFirmware> {
    match snp {
        Some(fw) => Some(&mut **fw),
        None => None,
    }
}

fn peer_failure(e: &PeerError) -> AttemptFailure {
    match e {
        PeerError::Unreachable { endpoint, reason } => {
            AttemptFailure::PeerUnreachable(format!("{endpoint}: {reason}"))
        }
        PeerError::Refused { code, reason, .. } => match code {
            RefuseCode::PcrMismatch
            | RefuseCode::SignatureInvalid
            | RefuseCode::QuoteMismatch
            | RefuseCode::NonceInvalid
            | RefuseCode::SnpInvalid
            | RefuseCode::Unenrolled => AttemptFailure::PeerAttestationFailed(reason.clone()),
            _ => AttemptFailure::Peer(format!("the peer refused: {reason}")),
        },
        other => AttemptFailure::Peer(other.to_string()),
    }
}
