//! TPM2 slots against swtpm: seal/unseal, a PCR change refused with the PCR named, re-seal
//! after a trusted update, the temporary update slot, PINs, a cleared TPM and a missing TPM.
//! Each test starts its own swtpm on free loopback ports (skipped with a reason when swtpm is
//! missing, unless DW_REQUIRE_ALL_TESTS=1).

mod common;

use common::{Outcome, skip};
use dw_keys::ops::{ResealEnv, ResealOutcome, prepare_update, reseal};
use dw_keys::pcr::policy_digest;
use dw_keys::tpm::Tpm;
use dw_keys::{
    Argon2Params, AttemptFailure, KeyStore, MasterKey, NewSlot, Passphrase, PcrSelection,
    PcrValues, Pin, SlotKind, SlotRef, TpmSlotOptions, UnixTime, UnlockConfig, VdeId, unlock,
};

const VDE: VdeId = VdeId([0x42; 16]);

fn cheap() -> Argon2Params {
    Argon2Params::new(64, 1, 1).unwrap()
}

fn t(n: u64) -> UnixTime {
    UnixTime(1_700_000_000 + n)
}

/// A store with a recovery passphrase and one TPM2 slot.
fn store_with_tpm(tpm: &mut Tpm, mk: &MasterKey, opts: &TpmSlotOptions) -> (KeyStore, Passphrase) {
    let store = KeyStore::new(VDE, mk, t(0));
    let (slot, pass) = NewSlot::generated_passphrase("recovery", cheap()).unwrap();
    let (store, _) = store.add_slot(VDE, mk, slot, t(1)).unwrap();
    let slot = NewSlot::tpm2(tpm, "boot", opts).unwrap();
    let (store, _) = store.add_slot(VDE, mk, slot, t(2)).unwrap();
    (store, pass)
}

fn cfg(tcti: &str) -> UnlockConfig {
    UnlockConfig {
        tcti: tcti.to_string(),
        ..UnlockConfig::default()
    }
}

fn seal_and_unseal() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let opts = TpmSlotOptions {
        pcrs: Some(PcrSelection::new(&[7, 11]).unwrap()),
        ..Default::default()
    };
    let (store, _) = store_with_tpm(&mut tpm, &mk, &opts);
    drop(tpm);
    // Round-trip through the on-disk form, as the daemon does at boot.
    let store = KeyStore::decode(&store.encode()).unwrap();
    let out = unlock(&store, VDE, &cfg(&sw.tcti()), t(10)).unwrap();
    assert_eq!(out.kind, SlotKind::Tpm2);
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    assert!(out.attempts.is_empty());
    assert!(!out.reseal_recommended);
    let info = out.store.slot(out.slot_used).unwrap();
    assert_eq!(info.last_used, Some(t(10)));
    Outcome::Passed
}

fn extended_pcr_is_refused_and_named() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let opts = TpmSlotOptions {
        pcrs: Some(PcrSelection::new(&[7, 11]).unwrap()),
        ..Default::default()
    };
    let (store, pass) = store_with_tpm(&mut tpm, &mk, &opts);
    tpm.extend_pcr(7, b"a different Secure Boot policy")
        .unwrap();
    drop(tpm);

    let err = unlock(&store, VDE, &cfg(&sw.tcti()), t(10)).unwrap_err();
    let tpm_attempt = err
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::Tpm2)
        .unwrap();
    let AttemptFailure::PcrMismatch(changes) = &tpm_attempt.reason else {
        panic!("{tpm_attempt}")
    };
    assert_eq!(
        changes.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![7],
        "only PCR 7 changed"
    );
    let text = err.to_string();
    assert!(
        text.contains("TPM2 slot 2 (\"boot\"): PCR 7 changed (enrolled 00000000…, now "),
        "{text}"
    );
    assert!(!text.contains("PCR 11"), "{text}");
    assert!(text.contains("no passphrase given"), "{text}");
    assert!(text.contains("enter the recovery passphrase"), "{text}");

    // The recovery path still works, and says why the TPM slot did not.
    let with_pass = UnlockConfig {
        passphrase: Some(Passphrase::new(pass.expose_secret())),
        ..cfg(&sw.tcti())
    };
    let out = unlock(&store, VDE, &with_pass, t(11)).unwrap();
    assert_eq!(out.kind, SlotKind::Passphrase);
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    assert_eq!(out.attempts.len(), 1);
    assert!(out.reseal_recommended);
    Outcome::Passed
}

fn reseal_after_trusted_update() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let (store, pass) = store_with_tpm(&mut tpm, &mk, &TpmSlotOptions::default());
    tpm.extend_pcr(7, b"firmware update").unwrap();
    drop(tpm);
    // Boot after the update: the TPM slot fails, the person types the passphrase.
    let opened = dw_keys::unlock_with_passphrase(&store, VDE, &pass, t(10)).unwrap();
    // "The new state is trusted": re-seal with the open key, no passphrase needed.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut env = ResealEnv {
        tpm: Some(&mut tpm),
        ..Default::default()
    };
    let (resealed, report) =
        reseal(&opened.store, VDE, &opened.master_key, &mut env, t(11)).unwrap();
    assert!(report.complete(), "{report:?}");
    let (_, _, outcome) = report
        .slots
        .iter()
        .find(|(_, k, _)| *k == SlotKind::Tpm2)
        .unwrap();
    let ResealOutcome::Resealed { changes } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(changes[0].index, 7);
    drop(tpm);
    let resealed = KeyStore::decode(&resealed.encode()).unwrap();
    let out = unlock(&resealed, VDE, &cfg(&sw.tcti()), t(12)).unwrap();
    assert_eq!(out.kind, SlotKind::Tpm2);
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    assert!(resealed.verify_audit(Some(&mk)).is_ok());
    assert!(
        resealed
            .audit_entries()
            .iter()
            .any(|e| e.action == dw_keys::AuditAction::Resealed && e.detail.contains("PCR 7"))
    );
    // A second reseal in the same state changes nothing.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut env = ResealEnv {
        tpm: Some(&mut tpm),
        ..Default::default()
    };
    let (_, again) = reseal(&resealed, VDE, &mk, &mut env, t(13)).unwrap();
    assert!(
        again
            .slots
            .iter()
            .all(|(_, _, o)| *o == ResealOutcome::Unchanged),
        "{again:?}"
    );
    Outcome::Passed
}

fn prepare_update_survives_the_update() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let opts = TpmSlotOptions {
        pcrs: Some(PcrSelection::new(&[7, 11]).unwrap()),
        ..Default::default()
    };
    let (store, _) = store_with_tpm(&mut tpm, &mk, &opts);
    // Before the update: a temporary slot bound to PCR 11 only (the update changes PCR 7).
    let keep = PcrSelection::new(&[11]).unwrap();
    let (store, temp) = prepare_update(&store, VDE, &mk, &mut tpm, keep, 2, t(5)).unwrap();
    assert_eq!(store.slot(temp).unwrap().temporary_boots_left, Some(2));
    tpm.extend_pcr(7, b"new boot loader").unwrap();
    drop(tpm);
    // First boot after the update: the permanent slot fails and names PCR 7, the temporary
    // slot opens the VDE unattended.
    let out = unlock(&store, VDE, &cfg(&sw.tcti()), t(10)).unwrap();
    assert_eq!(out.slot_used, temp);
    assert!(out.reseal_recommended);
    assert!(
        out.attempts[0].to_string().contains("PCR 7 changed"),
        "{}",
        out.attempts[0]
    );
    assert_eq!(out.store.slot(temp).unwrap().temporary_boots_left, Some(1));
    // The daemon re-seals because the owner declared the update trusted in advance.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut env = ResealEnv {
        tpm: Some(&mut tpm),
        ..Default::default()
    };
    let (after, report) = reseal(&out.store, VDE, &out.master_key, &mut env, t(11)).unwrap();
    assert!(
        report
            .slots
            .iter()
            .any(|(id, _, o)| *id == temp && *o == ResealOutcome::TemporaryRemoved),
        "{report:?}"
    );
    assert!(after.slot(temp).is_none());
    drop(tpm);
    let out = unlock(&after, VDE, &cfg(&sw.tcti()), t(12)).unwrap();
    assert_eq!(out.kind, SlotKind::Tpm2);
    assert!(!out.reseal_recommended);
    assert!(after.verify_audit(Some(&mk)).is_ok());
    Outcome::Passed
}

fn temporary_slot_boot_allowance_runs_out() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let (store, _) = store_with_tpm(&mut tpm, &mk, &TpmSlotOptions::default());
    let (store, temp) =
        prepare_update(&store, VDE, &mk, &mut tpm, PcrSelection::NONE, 1, t(5)).unwrap();
    tpm.extend_pcr(7, b"update").unwrap();
    drop(tpm);
    let out = unlock(&store, VDE, &cfg(&sw.tcti()), t(10)).unwrap();
    assert_eq!(out.slot_used, temp);
    let err = unlock(&out.store, VDE, &cfg(&sw.tcti()), t(11)).unwrap_err();
    let a = err.attempts.iter().find(|a| a.slot == temp).unwrap();
    assert_eq!(a.reason, AttemptFailure::TemporaryExhausted);
    Outcome::Passed
}

fn pin_right_and_wrong() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let opts = TpmSlotOptions {
        pin: Some(Pin::new("482913")),
        ..Default::default()
    };
    let (store, _) = store_with_tpm(&mut tpm, &mk, &opts);
    drop(tpm);
    let order = vec![SlotRef::Kind(SlotKind::Tpm2)];
    let no_pin = UnlockConfig {
        order: order.clone(),
        ..cfg(&sw.tcti())
    };
    let err = unlock(&store, VDE, &no_pin, t(10)).unwrap_err();
    assert_eq!(err.attempts[0].reason, AttemptFailure::PinRequired);
    let wrong = UnlockConfig {
        order: order.clone(),
        tpm_pin: Some(Pin::new("000000")),
        ..cfg(&sw.tcti())
    };
    let err = unlock(&store, VDE, &wrong, t(11)).unwrap_err();
    assert_eq!(err.attempts[0].reason, AttemptFailure::WrongPin, "{err}");
    let right = UnlockConfig {
        order,
        tpm_pin: Some(Pin::new("482913")),
        ..cfg(&sw.tcti())
    };
    let out = unlock(&store, VDE, &right, t(12)).unwrap();
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    Outcome::Passed
}

fn software_policy_digest_matches_the_tpm() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    for pcrs in [&[7u32][..], &[0, 2, 4, 7], &[11, 23], &[]] {
        let sel = PcrSelection::new(pcrs).unwrap();
        let values = PcrValues::new(
            sel,
            (0..sel.len())
                .map(|i| [u8::try_from(i).unwrap() + 1; 32])
                .collect(),
        )
        .unwrap();
        for pin in [false, true] {
            let ours = policy_digest(&values, pin);
            let tpms = tpm.trial_policy_digest(&values, pin).unwrap();
            assert_eq!(ours, tpms, "PCRs {sel} pin {pin}");
        }
    }
    Outcome::Passed
}

fn sealed_to_predicted_values() -> Outcome {
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    // Predict PCR 7 after extending it with "next": SHA-256(old || SHA-256(data)).
    let sel = PcrSelection::new(&[7]).unwrap();
    let old = tpm.read_pcrs(sel).unwrap().values()[0];
    let data_digest = ring::digest::digest(&ring::digest::SHA256, b"next");
    let mut cat = old.to_vec();
    cat.extend_from_slice(data_digest.as_ref());
    let predicted: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &cat)
        .as_ref()
        .try_into()
        .unwrap();
    let opts = TpmSlotOptions {
        pcrs: Some(sel),
        expected: Some(PcrValues::new(sel, vec![predicted]).unwrap()),
        ..Default::default()
    };
    let (store, _) = store_with_tpm(&mut tpm, &mk, &opts);
    drop(tpm);
    let order = UnlockConfig {
        order: vec![SlotRef::Kind(SlotKind::Tpm2)],
        ..cfg(&sw.tcti())
    };
    assert!(
        unlock(&store, VDE, &order, t(10)).is_err(),
        "opened before the predicted state"
    );
    Tpm::open(&sw.tcti())
        .unwrap()
        .extend_pcr(7, b"next")
        .unwrap();
    assert!(
        unlock(&store, VDE, &order, t(11)).is_ok(),
        "did not open in the predicted state"
    );
    Outcome::Passed
}

fn cleared_tpm_is_explained() -> Outcome {
    let sw = swtpm_or_skip!();
    if common::which_pub("tpm2_clear").is_none() {
        return skip("tpm2_clear (tpm2-tools) is not installed");
    }
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let (store, _) = store_with_tpm(&mut tpm, &mk, &TpmSlotOptions::default());
    drop(tpm);
    let status = std::process::Command::new("tpm2_clear")
        .arg("-T")
        .arg(format!("swtpm:host=127.0.0.1,port={}", sw.port))
        .env("TSS2_LOG", "all+none")
        .status()
        .unwrap();
    assert!(status.success());
    let err = unlock(&store, VDE, &cfg(&sw.tcti()), t(10)).unwrap_err();
    let a = err
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::Tpm2)
        .unwrap();
    assert_eq!(a.reason, AttemptFailure::TpmCleared, "{a}");
    assert!(a.to_string().contains("cleared or replaced"));
    Outcome::Passed
}

fn tpm_absent() -> Outcome {
    // Opening a missing device is a clear error, not a panic (needs no swtpm).
    let err = Tpm::open("device:/nonexistent/tpmrm0")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "no TPM: /nonexistent/tpmrm0 is not present (enable the TPM 2.0 in the firmware setup and check that the tpm_crb or tpm_tis driver is loaded)"
    );
    // A store with a TPM slot unlocked on a machine without a TPM names the slot and the reason.
    let sw = swtpm_or_skip!();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mk = MasterKey::generate().unwrap();
    let (store, pass) = store_with_tpm(&mut tpm, &mk, &TpmSlotOptions::default());
    drop(tpm);
    let no_tpm = UnlockConfig {
        tcti: "device:/nonexistent/tpmrm0".into(),
        ..UnlockConfig::default()
    };
    let err = unlock(&store, VDE, &no_tpm, t(10)).unwrap_err();
    let a = err
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::Tpm2)
        .unwrap();
    assert!(
        a.to_string()
            .starts_with("TPM2 slot 2 (\"boot\"): no TPM: /nonexistent/tpmrm0 is not present"),
        "{a}"
    );
    // A TPM that went away (swtpm stopped) is reported too, and the passphrase still works.
    let tcti = sw.tcti();
    drop(sw);
    let gone = UnlockConfig {
        tcti,
        passphrase: Some(Passphrase::new(pass.expose_secret())),
        ..UnlockConfig::default()
    };
    let out = unlock(&store, VDE, &gone, t(11)).unwrap();
    assert_eq!(out.kind, SlotKind::Passphrase);
    assert!(
        matches!(out.attempts[0].reason, AttemptFailure::TpmUnavailable(_)),
        "{}",
        out.attempts[0]
    );
    Outcome::Passed
}

fn main() {
    common::env::quiet_tss_logging();
    common::run(
        "tpm",
        &[
            ("seal_and_unseal", seal_and_unseal),
            (
                "extended_pcr_is_refused_and_named",
                extended_pcr_is_refused_and_named,
            ),
            ("reseal_after_trusted_update", reseal_after_trusted_update),
            (
                "prepare_update_survives_the_update",
                prepare_update_survives_the_update,
            ),
            (
                "temporary_slot_boot_allowance_runs_out",
                temporary_slot_boot_allowance_runs_out,
            ),
            ("pin_right_and_wrong", pin_right_and_wrong),
            (
                "software_policy_digest_matches_the_tpm",
                software_policy_digest_matches_the_tpm,
            ),
            ("sealed_to_predicted_values", sealed_to_predicted_values),
            ("cleared_tpm_is_explained", cleared_tpm_is_explained),
            ("tpm_absent", tpm_absent),
        ],
    );
}
