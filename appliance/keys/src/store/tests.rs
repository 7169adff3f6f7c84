use proptest::prelude::*;

use super::*;
use crate::passphrase::{Argon2Params, Passphrase, derive_kek};
use crate::pcr::{PcrSelection, PcrValues};
use crate::secret::SeededEntropy;
use crate::snp::fake::FakeFirmware;
use crate::tpm::SealedObject;
use crate::types::hex;
use crate::unlock::{AttemptFailure, unlock_with_passphrase};

const VDE: VdeId = VdeId([0x11; 16]);

fn cheap() -> Argon2Params {
    Argon2Params::new(64, 1, 1).unwrap()
}

fn mk(seed: u8) -> MasterKey {
    MasterKey::from_bytes([seed; 32])
}

fn pass_slot(label: &str, pass: &str, rng: &mut SeededEntropy) -> NewSlot {
    NewSlot::passphrase_with(label, &Passphrase::new(pass), false, cheap(), rng).unwrap()
}

fn fake_tpm_slot(temporary: Option<u32>) -> NewSlot {
    let sel = PcrSelection::new(&[7]).unwrap();
    NewSlot {
        label: "tpm".into(),
        params: SlotParams::Tpm2(TpmParams {
            expected: PcrValues::new(sel, vec![[0x3d; 32]]).unwrap(),
            pin: false,
            sealed: SealedObject {
                srk_name: vec![0, 0x0b, 1, 2],
                public: vec![3; 40],
                private: vec![4; 60],
                policy_digest: [5; 32],
            },
        }),
        secret: Zeroizing::new([0x77; 32]),
        temporary_boots: temporary,
    }
}

fn snp_slot() -> NewSlot {
    let mut fw = FakeFirmware::new([0x42; 48]);
    let salt = [0x24; 32];
    let kek = crate::ops::snp_kek(&mut fw, &SnpKeyRequest::DEFAULT, &salt).unwrap();
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&salt);
    let report = crate::snp::SnpFirmware::attestation_report(&mut fw, &rd).unwrap();
    NewSlot {
        label: "snp".into(),
        params: SlotParams::SevSnp(SnpParams {
            request: SnpKeyRequest::DEFAULT,
            salt,
            measurement: [0x42; 48],
            report,
        }),
        secret: kek,
        temporary_boots: None,
    }
}

fn peer_slot() -> NewSlot {
    let sel = PcrSelection::new(&[7, 11]).unwrap();
    NewSlot {
        label: "peer".into(),
        params: SlotParams::Peer(PeerParams {
            endpoint: "10.0.0.2:7475".into(),
            server_cert_sha256: [0xce; 32],
            machine_id: [0x1d; 16],
            local_half: [0x4a; 32],
            pcrs: PcrValues::new(sel, vec![[1; 32], [2; 32]]).unwrap(),
            snp: false,
        }),
        secret: Zeroizing::new([0x5a; 32]),
        temporary_boots: None,
    }
}

/// A store with one slot of every kind, built deterministically.
fn full_store(rng: &mut SeededEntropy) -> KeyStore {
    let key = mk(1);
    let s = KeyStore::new(VDE, &key, UnixTime(1_700_000_000));
    let (s, _) = s
        .add_slot_with(
            VDE,
            &key,
            pass_slot("recovery", "correct horse battery staple", rng),
            UnixTime(1_700_000_001),
            rng,
        )
        .unwrap();
    let (s, _) = s
        .add_slot_with(VDE, &key, fake_tpm_slot(None), UnixTime(1_700_000_002), rng)
        .unwrap();
    let (s, _) = s
        .add_slot_with(VDE, &key, snp_slot(), UnixTime(1_700_000_003), rng)
        .unwrap();
    let (s, _) = s
        .add_slot_with(VDE, &key, peer_slot(), UnixTime(1_700_000_004), rng)
        .unwrap();
    let (s, _) = s
        .add_slot_with(
            VDE,
            &key,
            fake_tpm_slot(Some(2)),
            UnixTime(1_700_000_005),
            rng,
        )
        .unwrap();
    s
}

#[test]
fn passphrase_right_and_wrong() {
    let rng = &mut SeededEntropy::new(1);
    let key = mk(1);
    let s = KeyStore::new(VDE, &key, UnixTime(1));
    let (s, id) = s
        .add_slot_with(
            VDE,
            &key,
            pass_slot("recovery", "correct horse battery staple", rng),
            UnixTime(2),
            rng,
        )
        .unwrap();
    let s = KeyStore::decode(&s.encode()).unwrap();
    let out = unlock_with_passphrase(
        &s,
        VDE,
        &Passphrase::new("correct horse battery staple"),
        UnixTime(3),
    )
    .unwrap();
    assert_eq!(out.master_key.expose_secret(), key.expose_secret());
    assert_eq!(out.slot_used, id);
    assert_eq!(out.store.slot(id).unwrap().last_used, Some(UnixTime(3)));
    let err = unlock_with_passphrase(
        &s,
        VDE,
        &Passphrase::new("correct horse battery stapler"),
        UnixTime(3),
    )
    .unwrap_err();
    assert_eq!(err.attempts.len(), 1);
    assert_eq!(err.attempts[0].reason, AttemptFailure::WrongPassphrase);
    assert_eq!(
        err.to_string(),
        "VDE 11111111-1111-1111-1111-111111111111 stays locked; recovery passphrase slot 1 (\"recovery\"): the passphrase does not open this slot"
    );
}

#[test]
fn stored_argon2_parameters_are_the_ones_used() {
    let rng = &mut SeededEntropy::new(2);
    let key = mk(2);
    let params = Argon2Params::new(128, 2, 1).unwrap();
    let pass = Passphrase::new("an unusual pass phrase 42");
    let slot = NewSlot::passphrase_with("p", &pass, false, params, rng).unwrap();
    let (s, id) = KeyStore::new(VDE, &key, UnixTime(1))
        .add_slot_with(VDE, &key, slot, UnixTime(2), rng)
        .unwrap();
    let s = KeyStore::decode(&s.encode()).unwrap();
    let SlotDetails::Passphrase { argon2, .. } = s.slot(id).unwrap().details else {
        panic!()
    };
    assert_eq!(argon2, params, "recorded in the slot");
    let SlotParams::Passphrase(p) = &s.slots[0].params else {
        panic!()
    };
    let kek = &s.wrapping_keys(VDE, &key).unwrap()[0].1;
    assert_eq!(
        **kek,
        derive_kek(&pass, false, &p.salt, &params).unwrap().0,
        "the recorded parameters derive the key"
    );
    assert_ne!(
        **kek,
        derive_kek(&pass, false, &p.salt, &cheap()).unwrap().0,
        "other parameters do not"
    );
    assert!(unlock_with_passphrase(&s, VDE, &pass, UnixTime(3)).is_ok());
}

#[test]
fn removing_the_last_slot_is_refused() {
    let rng = &mut SeededEntropy::new(3);
    let key = mk(3);
    let s = KeyStore::new(VDE, &key, UnixTime(1));
    let (s, only) = s
        .add_slot_with(
            VDE,
            &key,
            pass_slot("recovery", "p1 p1 p1 p1 p1 x", rng),
            UnixTime(2),
            rng,
        )
        .unwrap();
    let err = s
        .remove_slot(VDE, &key, only, RemovePolicy::AllowNoRecovery, UnixTime(3))
        .unwrap_err();
    assert!(matches!(err, RemoveSlotError::LastSlot { .. }));
    assert_eq!(
        err.to_string(),
        "slot 1 (recovery passphrase) is the last slot that can open this VDE; add another slot first"
    );
    // A temporary update slot does not count as a working slot.
    let (s, temp) = s
        .add_slot_with(VDE, &key, fake_tpm_slot(Some(1)), UnixTime(3), rng)
        .unwrap();
    assert!(matches!(
        s.remove_slot(VDE, &key, only, RemovePolicy::AllowNoRecovery, UnixTime(4)),
        Err(RemoveSlotError::LastSlot { .. })
    ));
    // With an SEV-SNP slot, the passphrase is the last *recovery* slot.
    let (s, snp) = s
        .add_slot_with(VDE, &key, snp_slot(), UnixTime(4), rng)
        .unwrap();
    let err = s
        .remove_slot(VDE, &key, only, RemovePolicy::KeepRecovery, UnixTime(5))
        .unwrap_err();
    assert!(matches!(err, RemoveSlotError::LastRecovery { .. }), "{err}");
    assert!(err.to_string().contains("only recovery passphrase"));
    let s2 = s
        .remove_slot(VDE, &key, only, RemovePolicy::AllowNoRecovery, UnixTime(5))
        .unwrap();
    assert_eq!(s2.slots().len(), 2);
    // The SEV-SNP slot is now the last permanent one.
    assert!(matches!(
        s2.remove_slot(VDE, &key, snp, RemovePolicy::AllowNoRecovery, UnixTime(6)),
        Err(RemoveSlotError::LastSlot { .. })
    ));
    // Temporary slots can always go.
    assert!(
        s2.remove_slot(VDE, &key, temp, RemovePolicy::KeepRecovery, UnixTime(6))
            .is_ok()
    );
    assert!(matches!(
        s.remove_slot(
            VDE,
            &key,
            SlotId(99),
            RemovePolicy::KeepRecovery,
            UnixTime(6)
        ),
        Err(RemoveSlotError::NoSuchSlot(_))
    ));
    // Every change is in the audit log.
    let actions: Vec<_> = s2.audit_entries().iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Created,
            AuditAction::SlotAdded,
            AuditAction::UpdatePrepared,
            AuditAction::SlotAdded,
            AuditAction::SlotRemoved
        ]
    );
    assert!(s2.verify_audit(Some(&key)).is_ok());
}

#[test]
fn wrong_key_or_vde_is_refused() {
    let rng = &mut SeededEntropy::new(4);
    let key = mk(4);
    let s = KeyStore::new(VDE, &key, UnixTime(1));
    let err = s
        .add_slot_with(VDE, &mk(5), pass_slot("x", "y", rng), UnixTime(2), rng)
        .unwrap_err();
    assert!(matches!(err, AddSlotError::WrongMasterKey(_)), "{err}");
    let err = s
        .add_slot_with(
            VdeId([9; 16]),
            &key,
            pass_slot("x", "y", rng),
            UnixTime(2),
            rng,
        )
        .unwrap_err();
    assert!(err.to_string().contains("belongs to VDE 11111111"), "{err}");
}

#[test]
fn slots_cannot_move_between_vdes_or_slots() {
    let rng = &mut SeededEntropy::new(5);
    let key = mk(5);
    let other_vde = VdeId([0x22; 16]);
    let a = KeyStore::new(VDE, &key, UnixTime(1));
    let (a, _) = a
        .add_slot_with(
            VDE,
            &key,
            pass_slot("r", "same passphrase here", rng),
            UnixTime(2),
            rng,
        )
        .unwrap();
    let b = KeyStore::new(other_vde, &key, UnixTime(1));
    let (b, _) = b
        .add_slot_with(
            other_vde,
            &key,
            pass_slot("r", "other passphrase here", rng),
            UnixTime(2),
            rng,
        )
        .unwrap();
    // Copy A's slot into B: same master key, same slot id, but bound to VDE A.
    let mut moved = b.clone();
    moved.slots[0] = a.slots[0].clone();
    let err = unlock_with_passphrase(
        &moved,
        other_vde,
        &Passphrase::new("same passphrase here"),
        UnixTime(3),
    )
    .unwrap_err();
    assert_eq!(err.attempts[0].reason, AttemptFailure::WrongPassphrase);
    // Renumber a slot inside A.
    let mut renumbered = a.clone();
    renumbered.slots[0].id = SlotId(2);
    renumbered.next_slot_id = 3;
    assert!(
        unlock_with_passphrase(
            &renumbered,
            VDE,
            &Passphrase::new("same passphrase here"),
            UnixTime(3)
        )
        .is_err()
    );
    // Relabel a slot: its parameters are bound too.
    let mut relabeled = a.clone();
    relabeled.slots[0].label = "evil".into();
    assert!(
        unlock_with_passphrase(
            &relabeled,
            VDE,
            &Passphrase::new("same passphrase here"),
            UnixTime(3)
        )
        .is_err()
    );
    assert!(
        unlock_with_passphrase(
            &a,
            VDE,
            &Passphrase::new("same passphrase here"),
            UnixTime(3)
        )
        .is_ok()
    );
}

#[test]
fn rotation_rewraps_keeps_the_previous_key_and_finishes() {
    let rng = &mut SeededEntropy::new(6);
    let (old, new) = (mk(6), mk(7));
    let s = KeyStore::new(VDE, &old, UnixTime(1));
    let (s, _) = s
        .add_slot_with(
            VDE,
            &old,
            pass_slot("a", "first pass phrase", rng),
            UnixTime(2),
            rng,
        )
        .unwrap();
    let (s, _) = s
        .add_slot_with(VDE, &old, snp_slot(), UnixTime(3), rng)
        .unwrap();
    let rotating = s
        .begin_rotation_with(VDE, &old, &new, UnixTime(4), rng)
        .unwrap();
    let rotating = KeyStore::decode(&rotating.encode()).unwrap();
    assert!(rotating.rotation_pending());
    // Every slot now yields the new key, without asking for any secret during the rotation.
    let out = unlock_with_passphrase(
        &rotating,
        VDE,
        &Passphrase::new("first pass phrase"),
        UnixTime(5),
    )
    .unwrap();
    assert_eq!(out.master_key.expose_secret(), new.expose_secret());
    let mut fw = FakeFirmware::new([0x42; 48]);
    let cfg = crate::UnlockConfig {
        order: vec![crate::SlotRef::Kind(SlotKind::SevSnp)],
        ..Default::default()
    };
    let out = crate::unlock_with(&rotating, VDE, &cfg, Some(&mut fw), UnixTime(5)).unwrap();
    assert_eq!(out.master_key.expose_secret(), new.expose_secret());
    // The VDE can still read data under the previous key.
    let prev = rotating.previous_master_key(VDE, &new).unwrap().unwrap();
    assert_eq!(prev.expose_secret(), old.expose_secret());
    assert!(matches!(
        rotating.begin_rotation(VDE, &new, &mk(8), UnixTime(6)),
        Err(RotateError::AlreadyRotating)
    ));
    assert!(matches!(
        rotating.previous_master_key(VDE, &old),
        Err(RotateError::WrongMasterKey(_))
    ));
    // The pre-rotation store still opens with the old key (crash before persisting).
    assert_eq!(
        unlock_with_passphrase(&s, VDE, &Passphrase::new("first pass phrase"), UnixTime(5))
            .unwrap()
            .master_key
            .expose_secret(),
        old.expose_secret()
    );
    // The audit log was re-signed under the new key.
    assert!(rotating.verify_audit(Some(&new)).is_ok());
    assert!(matches!(
        rotating.verify_audit(Some(&old)),
        Err(AuditVerifyError::Mac { .. })
    ));
    let done = rotating.finish_rotation(VDE, &new, UnixTime(7)).unwrap();
    assert!(!done.rotation_pending());
    assert!(done.previous_master_key(VDE, &new).unwrap().is_none());
    assert!(matches!(
        done.finish_rotation(VDE, &new, UnixTime(8)),
        Err(RotateError::NotRotating)
    ));
    assert!(matches!(
        s.begin_rotation(VDE, &old, &old, UnixTime(8)),
        Err(RotateError::SameKey)
    ));
    let last = &done.audit_entries()[done.audit_entries().len() - 1];
    assert_eq!(last.action, AuditAction::RotationFinished);
}

#[test]
fn rotation_refuses_to_launder_a_forged_audit_log() {
    let rng = &mut SeededEntropy::new(7);
    let key = mk(8);
    let s = KeyStore::new(VDE, &key, UnixTime(1));
    let (mut s, _) = s
        .add_slot_with(VDE, &key, pass_slot("a", "pass", rng), UnixTime(2), rng)
        .unwrap();
    s.audit.entries[1].detail = "nothing happened".into();
    s.audit.entries[1].hash = crate::audit::entry_hash(VDE, &s.audit.entries[1]);
    assert!(matches!(
        s.begin_rotation(VDE, &key, &mk(9), UnixTime(3)),
        Err(RotateError::Audit(_))
    ));
}

#[test]
fn audit_tampering_on_disk_is_detected() {
    let rng = &mut SeededEntropy::new(8);
    let key = mk(9);
    let s = full_store(&mut SeededEntropy::new(8));
    let _ = rng;
    let bytes = s.encode();
    let detail = s.audit.entries[2].detail.as_bytes().to_vec();
    let pos = bytes
        .windows(detail.len())
        .position(|w| w == detail)
        .unwrap();
    let mut forged = bytes.clone();
    forged[pos] ^= 0x20;
    // Without fixing the checksum the store is rejected as damaged...
    assert_eq!(
        KeyStore::decode(&forged),
        Err(DecodeKeyStoreError::Checksum)
    );
    // ...with it fixed, it decodes (slots still work) but the audit log does not verify.
    let end = forged.len() - 32;
    let sum = format::checksum(&forged[..end]);
    forged[end..].copy_from_slice(&sum);
    let decoded = KeyStore::decode(&forged).unwrap();
    assert!(matches!(
        decoded.verify_audit(None),
        Err(AuditVerifyError::Hash { seq: 2 })
    ));
    assert!(s.verify_audit(Some(&mk(1))).is_ok());
    assert!(s.verify_audit(Some(&key)).is_err());
}

#[test]
fn list_shows_details_without_secrets() {
    let s = full_store(&mut SeededEntropy::new(9));
    let list = s.slots();
    assert_eq!(
        list.iter().map(|i| i.kind).collect::<Vec<_>>(),
        [
            SlotKind::Passphrase,
            SlotKind::Tpm2,
            SlotKind::SevSnp,
            SlotKind::Peer,
            SlotKind::Tpm2
        ]
    );
    let text: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert!(text[0].starts_with("slot 1 recovery passphrase \"recovery\" created 1700000001, never used, Argon2id m=64 KiB t=1 p=1"), "{}", text[0]);
    assert!(text[1].contains("PCRs 7"), "{}", text[1]);
    assert!(
        text[3].contains("peer 10.0.0.2:7475, PCRs 7,11"),
        "{}",
        text[3]
    );
    assert!(text[4].contains("TEMPORARY (2 boots left)"), "{}", text[4]);
    let dbg = format!("{s:?} {list:?}");
    for secret in [[0x77u8; 32], [0x5a; 32], [1; 32]] {
        assert!(!dbg.contains(&hex(&secret)));
    }
}

fn golden_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keystore_v1.bin")
}

#[test]
fn golden_file() {
    let rng = &mut SeededEntropy::new(42);
    let s = full_store(rng);
    let s = s
        .begin_rotation_with(VDE, &mk(1), &mk(2), UnixTime(1_700_000_100), rng)
        .unwrap();
    let bytes = s.encode();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path)
        .expect("tests/golden/keystore_v1.bin missing: run with UPDATE_GOLDEN=1");
    assert_eq!(
        bytes, golden,
        "the encoder's output changed: this is a format change (bump the version) or run with UPDATE_GOLDEN=1 if intended"
    );
    let decoded = KeyStore::decode(&golden).unwrap();
    assert_eq!(decoded, s);
    assert_eq!(decoded.encode(), golden);
    // The golden store opens with its passphrase to the (post-rotation) master key.
    let out = unlock_with_passphrase(
        &decoded,
        VDE,
        &Passphrase::new("correct horse battery staple"),
        UnixTime(1),
    )
    .unwrap();
    assert_eq!(out.master_key.expose_secret(), mk(2).expose_secret());
    assert_eq!(&golden[..4], b"DWKS");
    assert_eq!(u16::from_le_bytes([golden[4], golden[5]]), 1);
    assert_eq!(
        usize::try_from(u32::from_le_bytes([
            golden[8], golden[9], golden[10], golden[11]
        ]))
        .unwrap(),
        golden.len()
    );
}

#[test]
fn decoder_rejects_bad_headers_with_reasons() {
    let good = full_store(&mut SeededEntropy::new(10)).encode();
    assert!(matches!(
        KeyStore::decode(&[]),
        Err(DecodeKeyStoreError::TooShort { .. })
    ));
    assert_eq!(
        KeyStore::decode(&[0u8; 4096]),
        Err(DecodeKeyStoreError::BadMagic)
    );
    let mut v2 = good.clone();
    v2[4] = 2;
    assert_eq!(
        KeyStore::decode(&v2),
        Err(DecodeKeyStoreError::UnsupportedVersion(2))
    );
    assert!(
        KeyStore::decode(&v2)
            .unwrap_err()
            .to_string()
            .contains("update the appliance software")
    );
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        KeyStore::decode(&long),
        Err(DecodeKeyStoreError::LengthMismatch { .. })
    ));
    let huge = vec![b'D'; MAX_ENCODED_LEN + 1];
    assert!(KeyStore::decode(&huge).is_err());
    let mut huge = good.clone();
    huge.resize(MAX_ENCODED_LEN + 1, 0);
    assert!(matches!(
        KeyStore::decode(&huge),
        Err(DecodeKeyStoreError::TooLong { .. })
    ));
    for cut in [0, 10, 64, 95, good.len() / 2, good.len() - 1] {
        assert!(KeyStore::decode(&good[..cut]).is_err());
    }
}

/// Re-checksums a mutated encoding so the decoder's deeper checks are exercised.
fn fix_checksum(b: &mut [u8]) {
    if b.len() >= 96 && &b[..4] == b"DWKS" {
        let n = u32::try_from(b.len()).unwrap().to_le_bytes();
        b[8..12].copy_from_slice(&n);
        let end = b.len() - 32;
        let sum = format::checksum(&b[..end]);
        b[end..].copy_from_slice(&sum);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = KeyStore::decode(&bytes);
        let mut with_magic = b"DWKS\x01\x00\x40\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        fix_checksum(&mut with_magic);
        let _ = KeyStore::decode(&with_magic);
    }

    #[test]
    fn decode_never_panics_on_mutated_stores(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let good = full_store(&mut SeededEntropy::new(11)).encode();
        let mut b = good.clone();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        fix_checksum(&mut b);
        if let Ok(s) = KeyStore::decode(&b) {
            // Whatever decodes re-encodes to the same bytes (pair assertion of the format).
            let again = s.encode();
            let first_diff = again.iter().zip(&b).position(|(x, y)| x != y);
            prop_assert!(again == b, "re-encoding differs: lengths {} vs {}, first difference at {:?}", again.len(), b.len(), first_diff);
        }
    }
}
