//! SEV-SNP: report parsing and signature verification against a report recorded on real
//! hardware (the `sev` crate's Milan fixture) and against a chain generated for these tests;
//! negative cases (tampered report, wrong VCEK, wrong root); and the derived-key slot code path
//! through the `SnpFirmware` trait with a fake firmware.

mod common;

use common::fake_snp::{FakeSnp, MILAN_REPORT_HEX, TEST_VCEK, sign_report, test_ca, unhex};
use dw_keys::snp::{SnpCa, SnpKeyRequest, SnpVerifyError, parse_report, verify_report};
use dw_keys::{
    Argon2Params, AttemptFailure, KeyStore, MasterKey, NewSlot, SlotKind, SnpSlotError, UnixTime,
    UnlockConfig, VdeId, unlock, unlock_with,
};

const VCEK_MILAN: &[u8] = include_bytes!("data/vcek_milan.der");
const VCEK_TURIN: &[u8] = include_bytes!("data/vcek_turin.der");
const VDE: VdeId = VdeId([0x51; 16]);

fn milan_report() -> Vec<u8> {
    unhex(MILAN_REPORT_HEX)
}

#[test]
fn recorded_milan_report_parses() {
    let r = parse_report(&milan_report()).unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.vmpl, 0);
    assert_ne!(r.measurement, [0; 48]);
    assert_ne!(r.chip_id, [0; 64]);
}

#[test]
fn recorded_milan_report_verifies_against_amds_chain() {
    let parsed = verify_report(&milan_report(), VCEK_MILAN, &SnpCa::Milan).unwrap();
    assert_eq!(parsed, parse_report(&milan_report()).unwrap());
}

#[test]
fn tampered_report_bytes_are_rejected() {
    // One byte in the policy, one in the measurement, one in report data, one in the signature.
    for offset in [0x08, 0x95, 0x60, 0x2a5] {
        let mut r = milan_report();
        r[offset] ^= 0x01;
        let err = verify_report(&r, VCEK_MILAN, &SnpCa::Milan).unwrap_err();
        assert!(
            matches!(
                err,
                SnpVerifyError::Signature(_) | SnpVerifyError::Report(_)
            ),
            "offset {offset:#x}: {err}"
        );
    }
}

#[test]
fn wrong_vcek_is_rejected() {
    // A genuine VCEK of another chip: the chain to Milan's ASK breaks.
    let err = verify_report(&milan_report(), VCEK_TURIN, &SnpCa::Milan).unwrap_err();
    assert!(
        matches!(
            err,
            SnpVerifyError::Chain {
                link: "ASK → VCEK",
                ..
            }
        ),
        "{err}"
    );
    // Our test VCEK chains to the test root but did not sign the Milan report.
    let err = verify_report(&milan_report(), TEST_VCEK, &test_ca()).unwrap_err();
    assert!(matches!(err, SnpVerifyError::Signature(_)), "{err}");
    // A VCEK with a flipped byte in its signed part.
    let mut bad = VCEK_MILAN.to_vec();
    bad[40] ^= 0xff;
    assert!(verify_report(&milan_report(), &bad, &SnpCa::Milan).is_err());
    // Garbage instead of a certificate.
    let err = verify_report(&milan_report(), b"not a certificate", &SnpCa::Milan).unwrap_err();
    assert!(
        matches!(err, SnpVerifyError::Certificate { which: "VCEK", .. }),
        "{err}"
    );
}

#[test]
fn own_test_chain_signs_reports_that_verify() {
    let mut fw = FakeSnp::new([0x77; 48]);
    let report = dw_keys::snp::SnpFirmware::attestation_report(&mut fw, &[9; 64]).unwrap();
    let parsed = verify_report(&report, TEST_VCEK, &test_ca()).unwrap();
    assert_eq!(parsed.measurement, [0x77; 48]);
    assert_eq!(parsed.report_data, [9; 64]);
    // The same report does not chain to AMD's real root.
    let err = verify_report(&report, TEST_VCEK, &SnpCa::Milan).unwrap_err();
    assert!(matches!(err, SnpVerifyError::Chain { .. }), "{err}");
    // Changing the measurement after signing breaks it; re-signing mends it.
    let mut forged = report.clone();
    forged[0x90] ^= 1;
    assert!(matches!(
        verify_report(&forged, TEST_VCEK, &test_ca()),
        Err(SnpVerifyError::Signature(_))
    ));
    sign_report(&mut forged);
    assert!(verify_report(&forged, TEST_VCEK, &test_ca()).is_ok());
    // A chain whose ASK is not signed by the ARK is refused.
    let swapped = SnpCa::Custom {
        ark_pem: common::fake_snp::TEST_ASK.to_vec(),
        ask_pem: common::fake_snp::TEST_ARK.to_vec(),
    };
    assert!(matches!(
        verify_report(&report, TEST_VCEK, &swapped),
        Err(SnpVerifyError::Chain { .. })
    ));
}

#[test]
fn report_parser_rejects_wrong_sizes_and_versions() {
    let r = milan_report();
    assert!(parse_report(&r[..r.len() - 1]).is_err());
    let mut long = r.clone();
    long.push(0);
    assert!(parse_report(&long).is_err());
    let mut v = r;
    v[0] = 7;
    assert!(parse_report(&v).is_err());
}

fn store_with_snp(fw: &mut FakeSnp, mk: &MasterKey) -> (KeyStore, dw_keys::Passphrase) {
    let store = KeyStore::new(VDE, mk, UnixTime(1));
    let (slot, pass) =
        NewSlot::generated_passphrase("recovery", Argon2Params::new(64, 1, 1).unwrap()).unwrap();
    let (store, _) = store.add_slot(VDE, mk, slot, UnixTime(2)).unwrap();
    let slot = NewSlot::sev_snp(fw, "snp", SnpKeyRequest::DEFAULT).unwrap();
    let (store, _) = store.add_slot(VDE, mk, slot, UnixTime(3)).unwrap();
    (store, pass)
}

#[test]
fn derived_key_slot_through_the_firmware_trait() {
    let mut fw = FakeSnp::new([0x11; 48]);
    let mk = MasterKey::generate().unwrap();
    let (store, _) = store_with_snp(&mut fw, &mk);
    // The request asked for a key bound to the measurement and the guest policy, VCEK root.
    let req = fw.requests[0];
    assert!(req.binds_measurement());
    assert_eq!(req, SnpKeyRequest::DEFAULT);
    let store = KeyStore::decode(&store.encode()).unwrap();
    let cfg = UnlockConfig::default();
    let out = unlock_with(&store, VDE, &cfg, Some(&mut fw), UnixTime(10)).unwrap();
    assert_eq!(out.kind, SlotKind::SevSnp);
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    assert_eq!(
        fw.requests.last(),
        Some(&SnpKeyRequest::DEFAULT),
        "unlock sent the recorded request"
    );
}

#[test]
fn changed_measurement_is_named_and_reseal_recovers() {
    let mut fw = FakeSnp::new([0x11; 48]);
    let mk = MasterKey::generate().unwrap();
    let (store, pass) = store_with_snp(&mut fw, &mk);
    let mut updated = FakeSnp::new([0x22; 48]);
    let cfg = UnlockConfig::default();
    let err = unlock_with(&store, VDE, &cfg, Some(&mut updated), UnixTime(10)).unwrap_err();
    let a = err
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::SevSnp)
        .unwrap();
    assert_eq!(
        a.reason,
        AttemptFailure::SnpMeasurementChanged {
            enrolled: [0x11; 48],
            current: [0x22; 48]
        }
    );
    assert!(
        a.to_string()
            .contains("launch measurement changed (enrolled 11111111…, now 22222222…)"),
        "{a}"
    );
    // The owner trusts the new image: open with the passphrase, re-wrap for the new measurement.
    let opened = dw_keys::unlock_with_passphrase(&store, VDE, &pass, UnixTime(11)).unwrap();
    let mut env = dw_keys::ResealEnv {
        snp: Some(&mut updated),
        ..Default::default()
    };
    let (resealed, report) = dw_keys::reseal(
        &opened.store,
        VDE,
        &opened.master_key,
        &mut env,
        UnixTime(12),
    )
    .unwrap();
    assert!(report.complete(), "{report:?}");
    let out = unlock_with(&resealed, VDE, &cfg, Some(&mut updated), UnixTime(13)).unwrap();
    assert_eq!(out.kind, SlotKind::SevSnp);
    // The old image no longer opens it.
    assert!(
        unlock_with(
            &resealed,
            VDE,
            &UnlockConfig {
                order: vec![dw_keys::SlotRef::Kind(SlotKind::SevSnp)],
                ..cfg
            },
            Some(&mut fw),
            UnixTime(14)
        )
        .is_err()
    );
}

#[test]
fn request_must_bind_the_measurement() {
    let mut fw = FakeSnp::new([0x11; 48]);
    let req = SnpKeyRequest {
        field_select: SnpKeyRequest::FIELD_POLICY,
        ..SnpKeyRequest::DEFAULT
    };
    assert!(matches!(
        NewSlot::sev_snp(&mut fw, "x", req),
        Err(SnpSlotError::MeasurementNotBound)
    ));
}

#[test]
fn not_available_on_this_machine_says_why() {
    if !matches!(
        dw_keys::snp::availability(),
        dw_keys::snp::SnpAvailability::NotAvailable { .. }
    ) {
        eprintln!(
            "this machine is an SEV-SNP guest; the not-available path is covered by unit tests"
        );
        return;
    }
    let mut fw = FakeSnp::new([0x11; 48]);
    let mk = MasterKey::generate().unwrap();
    let (store, _) = store_with_snp(&mut fw, &mk);
    let err = unlock(&store, VDE, &UnlockConfig::default(), UnixTime(10)).unwrap_err();
    let a = err
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::SevSnp)
        .unwrap();
    let text = a.to_string();
    assert!(
        text.starts_with(
            "SEV-SNP slot 2 (\"snp\"): not available on this machine: /dev/sev-guest is not present"
        ),
        "{text}"
    );
}
