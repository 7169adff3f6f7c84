//! Glue between the keys layer (`dw-keys`: key slots, unlock) and the VDE (`dw-vde`).
//!
//! The key store lives in the VDE's key-slot area, written twice so both A/B copies hold the
//! newest store (the VDE writes to the older copy each time). The VDE's own key generation is
//! read from its header: during a master-key rotation the header may still carry the previous
//! generation (a crash between the key store and the header update), so opening tries both.

use std::sync::Arc;

use dw_keys::{
    Argon2Params, Clock, KeyStore, MasterKey, NewSlot, Passphrase, PcrSelection, Pin, SlotKind,
    SlotRef, SystemClock, TpmSlotOptions, UnlockConfig, UnlockOutcome, VdeId,
};
use dw_vde::{Backing, OpenError, Vde};

use crate::error::{OpError, OpResult};

/// The VDE's view of a master key of `generation`.
#[must_use]
pub fn vde_key(mk: &MasterKey, generation: u32) -> dw_vde::MasterKey {
    dw_vde::MasterKey::from_bytes(*mk.expose_secret(), generation)
}

/// The keys layer's name for a VDE.
#[must_use]
pub fn vde_id(uuid: uuid::Uuid) -> VdeId {
    VdeId(*uuid.as_bytes())
}

/// Writes `store` to both copies of the key-slot area.
///
/// # Errors
/// [`OpError::Internal`] on I/O errors.
pub fn write_store(backing: &dyn Backing, store: &KeyStore) -> OpResult<()> {
    let blob = store.encode();
    for _ in 0..2 {
        Vde::write_keyslots(backing, &blob)
            .map_err(|e| OpError::Internal(format!("cannot write the key slots: {e}")))?;
    }
    Ok(())
}

/// Reads the key store of a VDE.
///
/// # Errors
/// [`OpError`] when there is none or it is damaged.
pub fn read_store(backing: &dyn Backing) -> OpResult<KeyStore> {
    let blob = Vde::read_keyslots(backing)
        .map_err(|e| OpError::Internal(format!("cannot read the key slots: {e}")))?
        .ok_or_else(|| {
            OpError::Internal("the VDE has no key slots (it was never finished)".into())
        })?;
    KeyStore::decode(&blob).map_err(|e| OpError::Internal(format!("the key store is damaged: {e}")))
}

/// Opens the VDE with an unlocked master key.
///
/// # Errors
/// [`OpError`] with the VDE's reason.
pub fn open_vde(backing: Arc<dyn Backing>, store: &KeyStore, mk: &MasterKey) -> OpResult<Vde> {
    let g = Vde::probe(backing.as_ref())?.header.key_generation;
    if !store.rotation_pending() {
        return Ok(Vde::open(backing, &vde_key(mk, g), &[])?);
    }
    let prev = store
        .previous_master_key(store.vde_id(), mk)
        .map_err(|e| OpError::Internal(format!("the previous master key is unusable: {e}")))?
        .ok_or_else(|| OpError::Internal("rotation pending without a previous key".into()))?;
    // Header already at the new key's generation?
    let older: Vec<dw_vde::MasterKey> = g
        .checked_sub(1)
        .map(|p| vde_key(&prev, p))
        .into_iter()
        .collect();
    match Vde::open(Arc::clone(&backing), &vde_key(mk, g), &older) {
        Err(OpenError::WrongKey | OpenError::SealMismatch) => {
            // No: the header is still sealed with the previous key; the new key is g + 1.
            Ok(Vde::open(
                backing,
                &vde_key(mk, g + 1),
                &[vde_key(&prev, g)],
            )?)
        }
        other => Ok(other?),
    }
}

/// Parses PCR indices (empty: the default, PCR 7).
///
/// # Errors
/// [`OpError::Invalid`].
pub fn pcrs(list: &[u8]) -> OpResult<PcrSelection> {
    if list.is_empty() {
        return Ok(PcrSelection::DEFAULT);
    }
    let idx: Vec<u32> = list.iter().map(|&p| u32::from(p)).collect();
    PcrSelection::new(&idx).map_err(|e| OpError::Invalid(format!("PCR selection: {e}")))
}

/// A passphrase slot: the user's (strength-checked) or a generated one (returned).
///
/// # Errors
/// [`OpError::Invalid`] for a weak passphrase.
pub fn passphrase_slot(label: &str, own: Option<&str>) -> OpResult<(NewSlot, Option<String>)> {
    match own {
        Some(p) => {
            let slot = NewSlot::user_passphrase(label, &Passphrase::new(p), Argon2Params::DEFAULT)
                .map_err(|e| OpError::Invalid(format!("recovery passphrase: {e}")))?;
            Ok((slot, None))
        }
        None => {
            let (slot, pass) = NewSlot::generated_passphrase(label, Argon2Params::DEFAULT)
                .map_err(|e| OpError::Internal(format!("cannot create a passphrase slot: {e}")))?;
            Ok((slot, Some(pass.expose_secret().to_owned())))
        }
    }
}

/// A TPM2 slot sealed to the current values of `pcrs`.
///
/// # Errors
/// [`OpError::NotAvailable`] when there is no TPM, [`OpError::Internal`] when it fails.
pub fn tpm_slot(tcti: &str, label: &str, pcr_list: &[u8], pin: Option<&str>) -> OpResult<NewSlot> {
    let mut tpm = dw_keys::tpm::Tpm::open(tcti)
        .map_err(|e| OpError::NotAvailable(format!("no TPM at {tcti}: {e}")))?;
    let opts = TpmSlotOptions {
        pcrs: Some(pcrs(pcr_list)?),
        pin: pin.map(Pin::new),
        expected: None,
    };
    NewSlot::tpm2(&mut tpm, label, &opts)
        .map_err(|e| OpError::Internal(format!("cannot seal to the TPM: {e}")))
}

/// 32 bytes from 64 hex digits (colons and spaces ignored, as fingerprints are often printed),
/// decoded straight into zeroizing memory.
fn hex32(what: &str, s: &str) -> OpResult<zeroize::Zeroizing<[u8; 32]>> {
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    if dw_api::client::decode_hex32(s, &mut out) {
        Ok(out)
    } else {
        Err(OpError::Invalid(format!("{what} must be 64 hex digits")))
    }
}

/// A peer-release slot: enrolls this machine's TPM attestation key and current PCR values with
/// the key-release service (`dw-keyd`), which keeps half of the wrapping key.
///
/// # Errors
/// [`OpError::Invalid`] for malformed options, [`OpError::NotAvailable`] without a TPM,
/// [`OpError::Conflict`] when the service refuses or cannot be reached.
pub fn peer_slot(
    tcti: &str,
    label: &str,
    req: &dw_api::types::PeerSlotRequest,
) -> OpResult<NewSlot> {
    let options = dw_keys::PeerEnrollOptions {
        endpoint: req.endpoint.trim().to_owned(),
        server_cert_sha256: *hex32("cert_sha256", &req.cert_sha256)?,
        token: hex32("token", &req.token)?,
        pcrs: pcrs(&req.pcrs)?,
        timeouts: dw_keys::peer::client::PeerTimeouts::default(),
    };
    let mut tpm = dw_keys::tpm::Tpm::open(tcti).map_err(|e| {
        OpError::NotAvailable(format!(
            "a peer slot needs this machine's TPM for attestation; no TPM at {tcti}: {e}"
        ))
    })?;
    // Bind the SEV-SNP launch measurement too when this is an SEV-SNP guest.
    let mut snp = dw_keys::snp::SevGuest::open().ok();
    let snp_ref = snp
        .as_mut()
        .map(|f| f as &mut dyn dw_keys::snp::SnpFirmware);
    NewSlot::peer(&mut tpm, label, &options, snp_ref).map_err(|e| match e {
        dw_keys::PeerSlotError::Invalid(m) => OpError::Invalid(m),
        e => OpError::Conflict(format!(
            "cannot enroll with the peer {}: {e}",
            options.endpoint
        )),
    })
}

/// An SEV-SNP slot, bound to the launch measurement and guest policy.
///
/// # Errors
/// [`OpError::NotAvailable`] with the reason outside an SEV-SNP guest.
pub fn snp_slot(label: &str) -> OpResult<NewSlot> {
    let mut fw = dw_keys::snp::SevGuest::open().map_err(|e| {
        OpError::NotAvailable(format!("SEV-SNP is not available on this machine: {e}"))
    })?;
    NewSlot::sev_snp(&mut fw, label, dw_keys::snp::SnpKeyRequest::DEFAULT)
        .map_err(|e| OpError::Internal(format!("cannot create the SEV-SNP slot: {e}")))
}

/// Adds a slot to the store and persists it.
///
/// # Errors
/// [`OpError`].
pub fn add_slot(
    backing: &dyn Backing,
    store: &KeyStore,
    mk: &MasterKey,
    slot: NewSlot,
) -> OpResult<(KeyStore, dw_keys::SlotId)> {
    let (next, id) = store
        .add_slot(store.vde_id(), mk, slot, SystemClock.now())
        .map_err(|e| OpError::Conflict(format!("cannot add the slot: {e}")))?;
    write_store(backing, &next)?;
    Ok((next, id))
}

/// Unlock configuration from the daemon's settings.
#[must_use]
pub fn unlock_config(
    order: &[String],
    tcti: &str,
    passphrase: Option<&str>,
    pin: Option<&str>,
) -> UnlockConfig {
    let mut cfg = UnlockConfig {
        tcti: tcti.to_owned(),
        tpm_pin: pin.map(Pin::new),
        passphrase: passphrase.map(Passphrase::new),
        ..UnlockConfig::default()
    };
    cfg.order = order
        .iter()
        .filter_map(|k| match k.as_str() {
            "tpm2" => Some(SlotRef::Kind(SlotKind::Tpm2)),
            "sev_snp" => Some(SlotRef::Kind(SlotKind::SevSnp)),
            "peer" => Some(SlotRef::Kind(SlotKind::Peer)),
            _ => None,
        })
        .collect();
    if passphrase.is_some() {
        cfg.order.push(SlotRef::Kind(SlotKind::Passphrase));
    }
    if cfg.order.is_empty() {
        // An empty order would mean "every kind": with nothing automatic configured and no
        // passphrase, try nothing rather than everything.
        cfg.order.push(SlotRef::Kind(SlotKind::Passphrase));
    }
    cfg
}

/// Tries to unlock.
///
/// # Errors
/// A description of every attempt (for people).
pub fn unlock(store: &KeyStore, config: &UnlockConfig) -> Result<UnlockOutcome, String> {
    dw_keys::unlock(store, store.vde_id(), config, SystemClock.now()).map_err(|e| e.to_string())
}

/// Slot kind as the API spells it.
#[must_use]
pub fn kind_name(k: SlotKind) -> &'static str {
    match k {
        SlotKind::Tpm2 => "tpm2",
        SlotKind::Passphrase => "passphrase",
        SlotKind::SevSnp => "sev_snp",
        SlotKind::Peer => "peer",
    }
}

/// One slot for the API.
#[must_use]
pub fn slot_info(s: &dw_keys::SlotInfo) -> dw_api::types::SlotInfo {
    use dw_keys::SlotDetails as D;
    let details = match &s.details {
        D::Tpm2 { expected, pin } => format!(
            "PCRs {}{}",
            expected
                .selection()
                .indices()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if *pin { " + PIN" } else { "" }
        ),
        D::Passphrase { argon2, generated } => format!(
            "Argon2id m={} KiB t={} p={}{}",
            argon2.memory_kib(),
            argon2.iterations(),
            argon2.lanes(),
            if *generated {
                ", generated"
            } else {
                ", chosen by a person"
            }
        ),
        D::SevSnp { has_report, .. } => format!(
            "bound to the launch measurement{}",
            if *has_report { ", report stored" } else { "" }
        ),
        D::Peer {
            endpoint,
            pcrs,
            snp,
            ..
        } => format!(
            "peer {endpoint}, PCRs {}{}",
            pcrs.indices()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if *snp { " + SEV-SNP" } else { "" }
        ),
    };
    dw_api::types::SlotInfo {
        id: s.id.0,
        kind: kind_name(s.kind).into(),
        label: s.label.clone(),
        created: s.created.0,
        last_used: s.last_used.map(|t| t.0),
        details: match s.temporary_boots_left {
            Some(n) => format!("{details}; temporary, {n} boots left"),
            None => details,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_accepts_fingerprint_spellings_and_refuses_the_rest() {
        let plain = "00".repeat(31) + "fF";
        let want = {
            let mut w = [0u8; 32];
            w[31] = 0xff;
            w
        };
        assert_eq!(*hex32("token", &plain).unwrap(), want);
        let colons = plain
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(*hex32("cert", &colons).unwrap(), want);
        assert_eq!(*hex32("cert", &format!(" {plain}\n")).unwrap(), want);
        for bad in [
            String::new(),
            "ab".repeat(31),
            "ab".repeat(33),
            "zz".repeat(32),
            "+1".repeat(32),
            // A multi-byte character split across a pair must be refused, not panic.
            "é".repeat(32),
        ] {
            let e = hex32("token", &bad).unwrap_err();
            assert!(
                e.to_string().contains("token must be 64 hex digits"),
                "{bad:?}: {e}"
            );
        }
    }
}
