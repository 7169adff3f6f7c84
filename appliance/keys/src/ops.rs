//! Slot constructors that need a device (TPM, SEV-SNP firmware, a peer), and the operations
//! that keep a VDE openable across planned changes: [`prepare_update`] and [`reseal`].
//!
//! Like the store functions, these return a new [`KeyStore`] and leave the old one untouched;
//! device side effects (a sealed object, a peer's enrolled policy) are designed so that the old
//! store keeps working until the new one is persisted (see docs/KEYS.md, "Crash safety").

use zeroize::Zeroizing;

use crate::audit::AuditAction;
use crate::passphrase::{
    Argon2Params, Passphrase, PassphraseKdfError, WeakPassphrase, check_strength, derive_kek,
};
use crate::pcr::{PcrChange, PcrSelection, PcrValues, PcrValuesError, describe_changes};
use crate::peer::client::{PeerClient, PeerError, PeerTimeouts};
use crate::peer::proto::Enrollment;
use crate::secret::{Entropy, MasterKey, OsEntropy, Pin, RandomError, contexts, random_array};
use crate::snp::{SnpFirmware, SnpFirmwareError, SnpKeyRequest, SnpReportError, parse_report};
use crate::store::{
    KeyStore, NewSlot, PassphraseParams, PeerParams, SlotParams, SnpParams, TpmParams,
    WrongMasterKey, WrongVde,
};
use crate::tpm::{Tpm, TpmError};
use crate::types::{SlotId, SlotKind, UnixTime, VdeId};

/// Creating a passphrase slot failed.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseSlotError {
    /// The passphrase is too weak.
    #[error(transparent)]
    Weak(#[from] WeakPassphrase),
    /// Argon2id failed.
    #[error(transparent)]
    Kdf(#[from] PassphraseKdfError),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Creating a TPM2 slot failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmSlotError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// Expected values do not fit the selection.
    #[error(transparent)]
    Values(#[from] PcrValuesError),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Creating an SEV-SNP slot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnpSlotError {
    /// The firmware is absent or refused.
    #[error(transparent)]
    Firmware(#[from] SnpFirmwareError),
    /// The request does not bind the launch measurement.
    #[error(
        "the derived-key request must select the launch measurement (GUEST_FIELD_SELECT bit 3), otherwise the key does not depend on what was booted"
    )]
    MeasurementNotBound,
    /// The report does not parse.
    #[error(transparent)]
    Report(#[from] SnpReportError),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Enrolling with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerSlotError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The SEV-SNP firmware failed.
    #[error(transparent)]
    Snp(#[from] SnpFirmwareError),
    /// The SEV-SNP report does not parse.
    #[error(transparent)]
    Report(#[from] SnpReportError),
    /// The peer failed or refused.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Invalid options.
    #[error("invalid peer enrollment: {0}")]
    Invalid(String),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Options of a TPM2 slot.
#[derive(Debug, Default)]
pub struct TpmSlotOptions {
    /// PCRs to bind (default [`PcrSelection::DEFAULT`] when `None`).
    pub pcrs: Option<PcrSelection>,
    /// PIN required in addition to the PCR policy.
    pub pin: Option<Pin>,
    /// Values to seal to instead of the current ones (predicted values after an update).
    pub expected: Option<PcrValues>,
}

/// Options of a peer-release enrollment.
#[derive(Debug)]
pub struct PeerEnrollOptions {
    /// `host:port` of the key-release service.
    pub endpoint: String,
    /// SHA-256 of its certificate (printed by `dw-keyd fingerprint`).
    pub server_cert_sha256: [u8; 32],
    /// The service's enrollment token (printed once by `dw-keyd init`).
    pub token: Zeroizing<[u8; 32]>,
    /// PCRs the service will require.
    pub pcrs: PcrSelection,
    /// Timeouts.
    pub timeouts: PeerTimeouts,
}

impl NewSlot {
    /// A slot for a passphrase a person chose. It is strength-checked first.
    ///
    /// # Errors
    /// When the passphrase is weak (with the reason) or Argon2id fails.
    pub fn user_passphrase(
        label: &str,
        passphrase: &Passphrase,
        params: Argon2Params,
    ) -> Result<NewSlot, PassphraseSlotError> {
        check_strength(passphrase)?;
        Self::passphrase_with(label, passphrase, false, params, &mut OsEntropy)
    }

    /// A slot for a newly generated passphrase (200 bits), returned to be shown once.
    ///
    /// # Errors
    /// When Argon2id or the RNG fails.
    pub fn generated_passphrase(
        label: &str,
        params: Argon2Params,
    ) -> Result<(NewSlot, Passphrase), PassphraseSlotError> {
        let passphrase = Passphrase::generate()?;
        let slot = Self::passphrase_with(label, &passphrase, true, params, &mut OsEntropy)?;
        Ok((slot, passphrase))
    }

    pub(crate) fn passphrase_with(
        label: &str,
        passphrase: &Passphrase,
        generated: bool,
        params: Argon2Params,
        rng: &mut dyn Entropy,
    ) -> Result<NewSlot, PassphraseSlotError> {
        let salt = *random_array::<32>(rng)?;
        let kek = derive_kek(passphrase, generated, &salt, &params)?;
        Ok(NewSlot {
            label: label.to_string(),
            params: SlotParams::Passphrase(PassphraseParams {
                argon2: params,
                generated,
                salt,
            }),
            secret: Zeroizing::new(kek.0),
            temporary_boots: None,
        })
    }

    /// A TPM2 slot: a random wrapping key sealed under PolicyPCR (current values of the chosen
    /// PCRs, or `options.expected`) and optionally PolicyAuthValue with a PIN.
    ///
    /// # Errors
    /// When the TPM fails.
    pub fn tpm2(
        tpm: &mut Tpm,
        label: &str,
        options: &TpmSlotOptions,
    ) -> Result<NewSlot, TpmSlotError> {
        let pcrs = options.pcrs.unwrap_or(PcrSelection::DEFAULT);
        tpm_slot(
            tpm,
            label,
            pcrs,
            options.expected.clone(),
            options.pin.as_ref(),
            None,
            &mut OsEntropy,
        )
    }

    /// An SEV-SNP slot: the wrapping key is derived by the firmware (bound to the launch
    /// measurement) and this slot's random salt; the enrollment report is kept for diagnosis.
    ///
    /// # Errors
    /// When SEV-SNP is not available here or the firmware refuses.
    pub fn sev_snp(
        fw: &mut dyn SnpFirmware,
        label: &str,
        request: SnpKeyRequest,
    ) -> Result<NewSlot, SnpSlotError> {
        if !request.binds_measurement() {
            return Err(SnpSlotError::MeasurementNotBound);
        }
        let salt = *random_array::<32>(&mut OsEntropy)?;
        let kek = snp_kek(fw, &request, &salt)?;
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(&salt);
        let report = fw.attestation_report(&report_data)?;
        let measurement = parse_report(&report)?.measurement;
        Ok(NewSlot {
            label: label.to_string(),
            params: SlotParams::SevSnp(SnpParams {
                request,
                salt,
                measurement,
                report,
            }),
            secret: kek,
            temporary_boots: None,
        })
    }

    /// A peer-release slot: enrolls this machine (its TPM attestation key, the current values
    /// of `options.pcrs`, and the SEV-SNP measurement when `snp` is given) with the service and
    /// gives it a random share; the other half stays in the slot.
    ///
    /// # Errors
    /// When the TPM, the firmware or the service fails.
    pub fn peer(
        tpm: &mut Tpm,
        label: &str,
        options: &PeerEnrollOptions,
        snp: Option<&mut dyn SnpFirmware>,
    ) -> Result<NewSlot, PeerSlotError> {
        if options.endpoint.len() > crate::store::MAX_ENDPOINT_BYTES || options.endpoint.is_empty()
        {
            return Err(PeerSlotError::Invalid(
                "the endpoint must be 1 to 255 bytes of host:port".into(),
            ));
        }
        if label.len() > crate::peer::proto::MAX_ENROLL_LABEL {
            return Err(PeerSlotError::Invalid(
                "the label is longer than 64 bytes".into(),
            ));
        }
        let rng = &mut OsEntropy;
        let machine_id = *random_array::<16>(rng)?;
        let share = random_array::<32>(rng)?;
        let local_half = *random_array::<32>(rng)?;
        let ak = tpm.attestation_key()?;
        let pcrs = tpm.read_pcrs(options.pcrs)?;
        let snp_measurement = match snp {
            Some(fw) => Some(parse_report(&fw.attestation_report(&[0; 64])?)?.measurement),
            None => None,
        };
        let client = PeerClient::new(
            options.endpoint.clone(),
            options.server_cert_sha256,
            options.timeouts,
        );
        client.enroll(Enrollment {
            token: options.token.clone(),
            machine_id,
            ak_public: ak.0,
            pcrs: pcrs.clone(),
            snp_measurement,
            share: share.clone(),
            label: label.to_string(),
        })?;
        Ok(NewSlot {
            label: label.to_string(),
            params: SlotParams::Peer(PeerParams {
                endpoint: options.endpoint.clone(),
                server_cert_sha256: options.server_cert_sha256,
                machine_id,
                local_half,
                pcrs,
                snp: snp_measurement.is_some(),
            }),
            secret: share,
            temporary_boots: None,
        })
    }
}

pub(crate) fn snp_kek(
    fw: &mut dyn SnpFirmware,
    request: &SnpKeyRequest,
    salt: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, SnpFirmwareError> {
    let fw_key = fw.derived_key(request)?;
    let mut input = Zeroizing::new([0u8; 64]);
    input[..32].copy_from_slice(fw_key.as_ref());
    input[32..].copy_from_slice(salt);
    Ok(Zeroizing::new(blake3::derive_key(
        contexts::SNP_KEK,
        input.as_ref(),
    )))
}

fn tpm_slot(
    tpm: &mut Tpm,
    label: &str,
    pcrs: PcrSelection,
    expected: Option<PcrValues>,
    pin: Option<&Pin>,
    temporary_boots: Option<u32>,
    rng: &mut dyn Entropy,
) -> Result<NewSlot, TpmSlotError> {
    let expected = match expected {
        Some(v) => PcrValues::new(pcrs, v.values().to_vec())?,
        None => tpm.read_pcrs(pcrs)?,
    };
    let kek = random_array::<32>(rng)?;
    let sealed = tpm.seal(&kek, &expected, pin)?;
    Ok(NewSlot {
        label: label.to_string(),
        params: SlotParams::Tpm2(TpmParams {
            expected,
            pin: pin.is_some(),
            sealed,
        }),
        secret: kek,
        temporary_boots,
    })
}

/// Preparing for an update failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareUpdateError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// Bad boot allowance.
    #[error("a temporary update slot may be valid for 1 to {max} boots, not {given}")]
    Boots {
        /// Requested.
        given: u32,
        /// Maximum.
        max: u32,
    },
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmSlotError),
    /// Adding the slot failed.
    #[error(transparent)]
    Add(#[from] crate::store::AddSlotError),
    /// Removing an older temporary slot failed.
    #[error(transparent)]
    Remove(#[from] crate::store::RemoveSlotError),
}

/// The most boots a temporary update slot may open.
pub const MAX_UPDATE_BOOTS: u32 = 16;

/// Before a planned firmware or boot-chain update (like BitLocker's "suspend"): with the open
/// master key, adds a temporary TPM2 slot bound only to the PCRs in `keep` (those the update
/// does not change; [`PcrSelection::NONE`] binds to nothing), valid for `boots` boots. The next
/// successful [`reseal`] removes it. Any older temporary slot is replaced.
///
/// While it exists, anyone who boots this machine with any state of the *other* PCRs can
/// open the VDE (see docs/KEYS.md, "Exposure window").
///
/// # Errors
/// See [`PrepareUpdateError`].
pub fn prepare_update(
    store: &KeyStore,
    vde: VdeId,
    master: &MasterKey,
    tpm: &mut Tpm,
    keep: PcrSelection,
    boots: u32,
    now: UnixTime,
) -> Result<(KeyStore, SlotId), PrepareUpdateError> {
    store.check(vde, master).map_err(|e| match e {
        crate::store::CheckError::Vde(v) => PrepareUpdateError::WrongVde(v),
        crate::store::CheckError::Key(k) => PrepareUpdateError::WrongMasterKey(k),
    })?;
    if boots == 0 || boots > MAX_UPDATE_BOOTS {
        return Err(PrepareUpdateError::Boots {
            given: boots,
            max: MAX_UPDATE_BOOTS,
        });
    }
    let mut next = store.clone();
    let old: Vec<SlotId> = next
        .slots
        .iter()
        .filter(|s| s.temporary)
        .map(|s| s.id)
        .collect();
    for id in old {
        next = next.remove_slot(
            vde,
            master,
            id,
            crate::store::RemovePolicy::KeepRecovery,
            now,
        )?;
    }
    let slot = tpm_slot(
        tpm,
        "planned update",
        keep,
        None,
        None,
        Some(boots),
        &mut OsEntropy,
    )?;
    Ok(next.add_slot(vde, master, slot, now)?)
}

/// What a reseal did to one slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResealOutcome {
    /// Re-sealed or re-wrapped to the current state; the changes it absorbed.
    Resealed {
        /// PCRs whose enrolled value changed.
        changes: Vec<PcrChange>,
    },
    /// Already matched the current state.
    Unchanged,
    /// Not attempted, and why.
    Skipped(String),
    /// Attempted and failed, and why.
    Failed(String),
    /// A temporary update slot that was removed.
    TemporaryRemoved,
}

/// The result of [`reseal`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ResealReport {
    /// One outcome per slot considered.
    pub slots: Vec<(SlotId, SlotKind, ResealOutcome)>,
}

impl ResealReport {
    /// Whether every slot that could be brought to the current state was, and temporary slots
    /// are gone.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.slots
            .iter()
            .all(|(_, _, o)| !matches!(o, ResealOutcome::Skipped(_) | ResealOutcome::Failed(_)))
    }
}

/// Devices available to [`reseal`].
#[derive(Default)]
pub struct ResealEnv<'a> {
    /// The TPM (TPM2 and peer slots).
    pub tpm: Option<&'a mut Tpm>,
    /// PIN for TPM2 slots that have one (their new sealed object needs the same authValue).
    pub pin: Option<Pin>,
    /// The SEV-SNP firmware (SEV-SNP slots; peer slots enrolled with SNP).
    pub snp: Option<&'a mut dyn SnpFirmware>,
    /// Contact peers to update their enrolled policy (`None`: peer slots are skipped).
    pub peers: Option<PeerTimeouts>,
}

impl std::fmt::Debug for ResealEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResealEnv")
            .field("tpm", &self.tpm.is_some())
            .field("pin", &self.pin.is_some())
            .field("snp", &self.snp.is_some())
            .field("peers", &self.peers)
            .finish()
    }
}

/// Re-sealing failed before any slot was touched.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// RNG failure.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Telling a peer to forget this machine failed.
#[derive(Debug, thiserror::Error)]
pub enum UnenrollError {
    /// Wrong VDE.
    #[error(transparent)]
    WrongVde(#[from] WrongVde),
    /// Wrong master key.
    #[error(transparent)]
    WrongMasterKey(#[from] WrongMasterKey),
    /// No such slot.
    #[error("there is no slot {0}")]
    NoSuchSlot(SlotId),
    /// The slot is not a peer slot.
    #[error("slot {0} is not a peer-release slot")]
    NotPeer(SlotId),
    /// The escrowed share does not decrypt.
    #[error("the escrowed share of slot {0} does not decrypt (damaged key-slot area)")]
    Damaged(SlotId),
    /// The peer failed or refused.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// Asks the service behind peer slot `slot` to forget this machine (its enrollment and share),
/// proving possession of the share with the escrowed copy. Call it before removing the slot:
/// afterwards the share is gone and only the service's operator can revoke the enrollment.
///
/// # Errors
/// [`UnenrollError`].
pub fn unenroll_peer(
    store: &KeyStore,
    vde: VdeId,
    master: &MasterKey,
    slot: SlotId,
    timeouts: PeerTimeouts,
) -> Result<(), UnenrollError> {
    store.check(vde, master).map_err(|e| match e {
        crate::store::CheckError::Vde(v) => UnenrollError::WrongVde(v),
        crate::store::CheckError::Key(k) => UnenrollError::WrongMasterKey(k),
    })?;
    let idx = store
        .slot_index(slot)
        .ok_or(UnenrollError::NoSuchSlot(slot))?;
    let SlotParams::Peer(p) = &store.slots[idx].params else {
        return Err(UnenrollError::NotPeer(slot));
    };
    let share = store
        .escrowed_secret(idx, master)
        .map_err(|_| UnenrollError::Damaged(slot))?;
    PeerClient::new(p.endpoint.clone(), p.server_cert_sha256, timeouts)
        .unenroll(p.machine_id, &share)?;
    Ok(())
}

/// "The new state is trusted": with the open master key, brings every slot to the machine's
/// current state. TPM2 slots are re-sealed to the current PCR values (their wrapping key comes
/// from the escrow, so no passphrase is needed), SEV-SNP slots are re-wrapped under the key the
/// firmware derives now, and peers are told to enroll the current PCR values (proven with a
/// fresh quote and the share). Temporary update slots are removed only when every permanent
/// TPM2 slot ended up matching the current state, so a partial reseal never strands the machine.
///
/// # Errors
/// Only for a wrong VDE/key or RNG failure; per-slot problems are in the report.
pub fn reseal(
    store: &KeyStore,
    vde: VdeId,
    master: &MasterKey,
    env: &mut ResealEnv<'_>,
    now: UnixTime,
) -> Result<(KeyStore, ResealReport), ResealError> {
    store.check(vde, master).map_err(|e| match e {
        crate::store::CheckError::Vde(v) => ResealError::WrongVde(v),
        crate::store::CheckError::Key(k) => ResealError::WrongMasterKey(k),
    })?;
    let rng = &mut OsEntropy;
    let mut next = store.clone();
    let mut report = ResealReport::default();
    let mut tpm_complete = true;
    for idx in 0..next.slots.len() {
        let (id, kind, temporary) = (
            next.slots[idx].id,
            next.slots[idx].kind(),
            next.slots[idx].temporary,
        );
        if temporary {
            continue;
        }
        let outcome = match kind {
            SlotKind::Tpm2 => reseal_tpm(&mut next, idx, master, env, rng)?,
            SlotKind::SevSnp => reseal_snp(&mut next, idx, master, env, rng)?,
            SlotKind::Peer => reseal_peer(&mut next, idx, master, env, rng)?,
            SlotKind::Passphrase => continue,
        };
        if kind == SlotKind::Tpm2
            && matches!(
                outcome,
                ResealOutcome::Skipped(_) | ResealOutcome::Failed(_)
            )
        {
            tpm_complete = false;
        }
        if let ResealOutcome::Resealed { changes } = &outcome {
            let detail = if changes.is_empty() {
                "re-sealed to the current state".to_string()
            } else {
                describe_changes(changes)
            };
            next.record(
                master,
                now,
                AuditAction::Resealed,
                Some((id, kind)),
                &detail,
            );
        }
        report.slots.push((id, kind, outcome));
    }
    if tpm_complete {
        let temps: Vec<SlotId> = next
            .slots
            .iter()
            .filter(|s| s.temporary)
            .map(|s| s.id)
            .collect();
        for id in temps {
            if let Some(i) = next.slot_index(id) {
                next.slots.remove(i);
                next.record(
                    master,
                    now,
                    AuditAction::TemporarySlotRemoved,
                    Some((id, SlotKind::Tpm2)),
                    "removed after a successful reseal",
                );
                report
                    .slots
                    .push((id, SlotKind::Tpm2, ResealOutcome::TemporaryRemoved));
            }
        }
    } else {
        for s in next.slots.iter().filter(|s| s.temporary) {
            report.slots.push((
                s.id,
                SlotKind::Tpm2,
                ResealOutcome::Skipped(
                    "kept: not every TPM2 slot matches the current state yet".into(),
                ),
            ));
        }
    }
    next.generation += 1;
    Ok((next, report))
}

fn reseal_tpm(
    next: &mut KeyStore,
    idx: usize,
    master: &MasterKey,
    env: &mut ResealEnv<'_>,
    rng: &mut dyn Entropy,
) -> Result<ResealOutcome, ResealError> {
    let SlotParams::Tpm2(t) = &next.slots[idx].params else {
        return Ok(ResealOutcome::Failed("not a TPM2 slot".into()));
    };
    let t = t.clone();
    let Some(tpm) = env.tpm.as_deref_mut() else {
        return Ok(ResealOutcome::Skipped("no TPM given".into()));
    };
    if t.pin && env.pin.is_none() {
        return Ok(ResealOutcome::Skipped(
            "this slot has a PIN; re-sealing it needs the PIN".into(),
        ));
    }
    let current = match tpm.read_pcrs(t.expected.selection()) {
        Ok(v) => v,
        Err(e) => return Ok(ResealOutcome::Failed(e.to_string())),
    };
    let changes = t.expected.changes(&current);
    let Ok(secret) = next.escrowed_secret(idx, master) else {
        return Ok(ResealOutcome::Failed(
            "the escrowed key does not decrypt (damaged key-slot area)".into(),
        ));
    };
    let pin = if t.pin { env.pin.as_ref() } else { None };
    let sealed = match tpm.seal(&secret, &current, pin) {
        Ok(s) => s,
        Err(e) => return Ok(ResealOutcome::Failed(e.to_string())),
    };
    // Unchanged PCRs under the same SRK need no new object.
    if changes.is_empty() && sealed.srk_name == t.sealed.srk_name {
        return Ok(ResealOutcome::Unchanged);
    }
    next.slots[idx].params = SlotParams::Tpm2(TpmParams {
        expected: current,
        pin: t.pin,
        sealed,
    });
    next.seal_slot(idx, master, &secret, rng)?;
    Ok(ResealOutcome::Resealed { changes })
}

fn reseal_snp(
    next: &mut KeyStore,
    idx: usize,
    master: &MasterKey,
    env: &mut ResealEnv<'_>,
    rng: &mut dyn Entropy,
) -> Result<ResealOutcome, ResealError> {
    let SlotParams::SevSnp(p) = &next.slots[idx].params else {
        return Ok(ResealOutcome::Failed("not an SEV-SNP slot".into()));
    };
    let p = p.clone();
    let Some(fw) = crate::unlock::reborrow(&mut env.snp) else {
        return Ok(ResealOutcome::Skipped("no SEV-SNP firmware here".into()));
    };
    let kek = match snp_kek(fw, &p.request, &p.salt) {
        Ok(k) => k,
        Err(e) => return Ok(ResealOutcome::Failed(e.to_string())),
    };
    if next.open_slot(idx, &crate::secret::Kek(*kek)).is_ok() {
        return Ok(ResealOutcome::Unchanged);
    }
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(&p.salt);
    let (report, measurement) = match fw.attestation_report(&report_data).map(|r| {
        let m = parse_report(&r).map(|x| x.measurement);
        (r, m)
    }) {
        Ok((r, Ok(m))) => (r, m),
        Ok((_, Err(e))) => return Ok(ResealOutcome::Failed(e.to_string())),
        Err(e) => return Ok(ResealOutcome::Failed(e.to_string())),
    };
    next.slots[idx].params = SlotParams::SevSnp(SnpParams {
        report,
        measurement,
        ..p
    });
    next.seal_slot(idx, master, &kek, rng)?;
    Ok(ResealOutcome::Resealed {
        changes: Vec::new(),
    })
}

fn reseal_peer(
    next: &mut KeyStore,
    idx: usize,
    master: &MasterKey,
    env: &mut ResealEnv<'_>,
    rng: &mut dyn Entropy,
) -> Result<ResealOutcome, ResealError> {
    let SlotParams::Peer(p) = &next.slots[idx].params else {
        return Ok(ResealOutcome::Failed("not a peer slot".into()));
    };
    let p = p.clone();
    let Some(timeouts) = env.peers else {
        return Ok(ResealOutcome::Skipped("peers not contacted".into()));
    };
    let Some(tpm) = env.tpm.as_deref_mut() else {
        return Ok(ResealOutcome::Skipped("no TPM given".into()));
    };
    let snp = if p.snp {
        match crate::unlock::reborrow(&mut env.snp) {
            Some(fw) => Some(fw),
            None => {
                return Ok(ResealOutcome::Skipped(
                    "enrolled with SEV-SNP but no SEV-SNP firmware here".into(),
                ));
            }
        }
    } else {
        None
    };
    let Ok(share) = next.escrowed_secret(idx, master) else {
        return Ok(ResealOutcome::Failed(
            "the escrowed share does not decrypt (damaged key-slot area)".into(),
        ));
    };
    let client = PeerClient::new(p.endpoint.clone(), p.server_cert_sha256, timeouts);
    let current = match client.update_policy(tpm, p.machine_id, p.pcrs.selection(), &share, snp) {
        Ok(v) => v,
        Err(e) => return Ok(ResealOutcome::Failed(e.to_string())),
    };
    let changes = p.pcrs.changes(&current);
    if changes.is_empty() {
        return Ok(ResealOutcome::Unchanged);
    }
    next.slots[idx].params = SlotParams::Peer(PeerParams { pcrs: current, ..p });
    next.seal_slot(idx, master, &share, rng)?;
    // The wrapping key is unchanged (share and local half are the same): the re-wrap only
    // re-binds the new parameters.
    Ok(ResealOutcome::Resealed { changes })
}
