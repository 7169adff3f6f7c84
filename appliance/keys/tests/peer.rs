//! Peer release end to end on loopback: a key-release service in-process, swtpm as the
//! machine's TPM, the real TLS client. Success; a wrong quote (PCR changed after enrollment,
//! and a quote from another TPM); a replayed nonce and a replayed quote; an unenrolled machine;
//! a peer that is down; a wrong enrollment token; a certificate that is not the pinned one;
//! SEV-SNP evidence; and the trusted-update policy change.

mod common;

use std::time::{Duration, Instant};

use common::service::Service;
use common::{Outcome, Swtpm};
use dw_keys::peer::client::{PeerClient, PeerError, PeerTimeouts};
use dw_keys::peer::proto::{Evidence, Message, RefuseCode};
use dw_keys::peer::{QuotePurpose, qualifying_data};
use dw_keys::tpm::Tpm;
use dw_keys::{
    Argon2Params, AttemptFailure, KeyStore, MasterKey, NewSlot, Passphrase, PcrSelection,
    PeerEnrollOptions, ResealEnv, ResealOutcome, SlotDetails, SlotKind, SlotRef, UnixTime,
    UnlockConfig, VdeId, reseal, unlock, unlock_with,
};
use zeroize::Zeroizing;

const VDE: VdeId = VdeId([0x9e; 16]);

fn t(n: u64) -> UnixTime {
    UnixTime(1_700_000_000 + n)
}

fn options(svc: &Service, pcrs: &[u32]) -> PeerEnrollOptions {
    PeerEnrollOptions {
        endpoint: svc.endpoint(),
        server_cert_sha256: svc.fingerprint,
        token: Zeroizing::new(svc.token),
        pcrs: PcrSelection::new(pcrs).unwrap(),
        timeouts: PeerTimeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
        },
    }
}

struct Machine {
    store: KeyStore,
    pass: Passphrase,
    machine_id: [u8; 16],
}

fn enroll(
    sw: &Swtpm,
    svc: &Service,
    mk: &MasterKey,
    snp: Option<&mut dyn dw_keys::snp::SnpFirmware>,
) -> Machine {
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let store = KeyStore::new(VDE, mk, t(0));
    let (slot, pass) =
        NewSlot::generated_passphrase("recovery", Argon2Params::new(64, 1, 1).unwrap()).unwrap();
    let (store, _) = store.add_slot(VDE, mk, slot, t(1)).unwrap();
    let slot = NewSlot::peer(&mut tpm, "rack-2 keyd", &options(svc, &[7, 11]), snp).unwrap();
    let (store, id) = store.add_slot(VDE, mk, slot, t(2)).unwrap();
    let SlotDetails::Peer { machine_id, .. } = store.slot(id).unwrap().details else {
        panic!()
    };
    Machine {
        store: KeyStore::decode(&store.encode()).unwrap(),
        pass,
        machine_id,
    }
}

fn peer_only(sw: &Swtpm) -> UnlockConfig {
    UnlockConfig {
        order: vec![SlotRef::Kind(SlotKind::Peer)],
        tcti: sw.tcti(),
        peer: PeerTimeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
        },
        ..UnlockConfig::default()
    }
}

fn client(svc: &Service) -> PeerClient {
    PeerClient::new(svc.endpoint(), svc.fingerprint, PeerTimeouts::default())
}

fn nonce(svc: &Service, machine_id: [u8; 16]) -> [u8; 32] {
    match &client(svc)
        .raw_exchange(&[Message::NonceRequest { machine_id }])
        .unwrap()[0]
    {
        Message::Nonce { nonce, .. } => *nonce,
        other => panic!("{other:?}"),
    }
}

fn evidence(tpm: &mut Tpm, machine_id: &[u8; 16], nonce: &[u8; 32]) -> Evidence {
    let q = tpm
        .quote(
            PcrSelection::new(&[7, 11]).unwrap(),
            &qualifying_data(QuotePurpose::Release, machine_id, nonce),
        )
        .unwrap();
    Evidence {
        pcrs: q.pcrs,
        attest: q.attest,
        signature: q.signature,
        snp: None,
    }
}

fn refused(m: &Message) -> (RefuseCode, &str) {
    match m {
        Message::Refused { code, reason } => (*code, reason.as_str()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn success() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    let out = unlock(&m.store, VDE, &peer_only(&sw), t(10)).unwrap();
    assert_eq!(out.kind, SlotKind::Peer);
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    // The service's state file lists the machine and survives a reload.
    let state = dw_keys::peer::state::ServiceState::load(&svc.state_path).unwrap();
    assert_eq!(state.machines().len(), 1);
    assert_eq!(state.machines()[0].machine_id, m.machine_id);
    assert_eq!(state.machines()[0].label, "rack-2 keyd");
    Outcome::Passed
}

fn wrong_quote_is_refused() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    // The machine's state changes after enrollment.
    Tpm::open(&sw.tcti())
        .unwrap()
        .extend_pcr(7, b"tampered boot loader")
        .unwrap();
    let err = unlock(&m.store, VDE, &peer_only(&sw), t(10)).unwrap_err();
    let a = &err.attempts[0];
    let AttemptFailure::PeerAttestationFailed(reason) = &a.reason else {
        panic!("{a}")
    };
    assert!(reason.contains("PCR 7 changed (enrolled "), "{reason}");
    assert!(!reason.contains("PCR 11"), "{reason}");
    assert!(
        a.to_string()
            .starts_with("peer release slot 2 (\"rack-2 keyd\"): attestation failed: "),
        "{a}"
    );

    // A quote signed by another TPM (not the enrolled attestation key) is refused too.
    let other = swtpm_or_skip!();
    let mut other_tpm = Tpm::open(&other.tcti()).unwrap();
    let n = nonce(&svc, m.machine_id);
    let ev = evidence(&mut other_tpm, &m.machine_id, &n);
    let reply = client(&svc)
        .raw_exchange(&[Message::Release {
            machine_id: m.machine_id,
            nonce: n,
            evidence: ev,
        }])
        .unwrap();
    let (code, reason) = refused(&reply[0]);
    assert_eq!(code, RefuseCode::SignatureInvalid, "{reason}");

    // PCR values that do not match the quoted digest are refused.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let n = nonce(&svc, m.machine_id);
    let mut ev = evidence(&mut tpm, &m.machine_id, &n);
    // Claim all-zero values (PCR 7 is not zero any more).
    ev.pcrs = dw_keys::PcrValues::new(ev.pcrs.selection(), vec![[0; 32]; 2]).unwrap();
    let reply = client(&svc)
        .raw_exchange(&[Message::Release {
            machine_id: m.machine_id,
            nonce: n,
            evidence: ev,
        }])
        .unwrap();
    let (code, reason) = refused(&reply[0]);
    assert_eq!(code, RefuseCode::QuoteMismatch, "{reason}");
    Outcome::Passed
}

fn replayed_nonce_is_refused() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let n = nonce(&svc, m.machine_id);
    let ev = evidence(&mut tpm, &m.machine_id, &n);
    let release = Message::Release {
        machine_id: m.machine_id,
        nonce: n,
        evidence: ev.clone(),
    };
    let first = client(&svc)
        .raw_exchange(std::slice::from_ref(&release))
        .unwrap();
    assert!(matches!(first[0], Message::Share { .. }), "{:?}", first[0]);
    // The same request again (a recorded exchange replayed): the nonce is spent.
    let again = client(&svc).raw_exchange(&[release]).unwrap();
    let (code, reason) = refused(&again[0]);
    assert_eq!(code, RefuseCode::NonceInvalid);
    assert!(reason.contains("already used"), "{reason}");
    // An old quote presented with a fresh nonce: the quote does not cover it.
    let fresh = nonce(&svc, m.machine_id);
    let reply = client(&svc)
        .raw_exchange(&[Message::Release {
            machine_id: m.machine_id,
            nonce: fresh,
            evidence: ev,
        }])
        .unwrap();
    let (code, reason) = refused(&reply[0]);
    assert_eq!(code, RefuseCode::QuoteMismatch);
    assert!(reason.contains("not made for this nonce"), "{reason}");
    // A nonce that was never issued.
    let mut tpm2 = Tpm::open(&sw.tcti()).unwrap();
    let made_up = [7u8; 32];
    let ev = evidence(&mut tpm2, &m.machine_id, &made_up);
    let reply = client(&svc)
        .raw_exchange(&[Message::Release {
            machine_id: m.machine_id,
            nonce: made_up,
            evidence: ev,
        }])
        .unwrap();
    assert_eq!(refused(&reply[0]).0, RefuseCode::NonceInvalid);
    Outcome::Passed
}

fn unenrolled_machine_is_refused() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    // A machine id the service never saw.
    let reply = client(&svc)
        .raw_exchange(&[Message::NonceRequest {
            machine_id: [0xab; 16],
        }])
        .unwrap();
    let (code, reason) = refused(&reply[0]);
    assert_eq!(code, RefuseCode::Unenrolled);
    assert!(reason.contains("abababab"), "{reason}");
    // An enrolled machine that the administrator revoked.
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    assert!(svc.service.lock().unwrap().revoke(&m.machine_id).unwrap());
    let err = unlock(&m.store, VDE, &peer_only(&sw), t(10)).unwrap_err();
    let AttemptFailure::PeerAttestationFailed(reason) = &err.attempts[0].reason else {
        panic!("{err}")
    };
    assert!(reason.contains("is not enrolled"), "{reason}");
    Outcome::Passed
}

/// The appliance removing a peer slot first tells the service to forget it (proof of share from
/// the escrow); another slot or a wrong master key cannot.
fn unenroll_with_the_escrowed_share() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    let peer_slot = m
        .store
        .slots()
        .into_iter()
        .find(|s| s.kind == SlotKind::Peer)
        .unwrap()
        .id;
    let timeouts = options(&svc, &[7]).timeouts;
    let other = MasterKey::generate().unwrap();
    assert!(matches!(
        dw_keys::unenroll_peer(&m.store, VDE, &other, peer_slot, timeouts),
        Err(dw_keys::UnenrollError::WrongMasterKey(_))
    ));
    let recovery = m
        .store
        .slots()
        .into_iter()
        .find(|s| s.kind == SlotKind::Passphrase)
        .unwrap()
        .id;
    assert!(matches!(
        dw_keys::unenroll_peer(&m.store, VDE, &mk, recovery, timeouts),
        Err(dw_keys::UnenrollError::NotPeer(_))
    ));
    // Still enrolled: unlock works.
    unlock(&m.store, VDE, &peer_only(&sw), t(10)).unwrap();
    dw_keys::unenroll_peer(&m.store, VDE, &mk, peer_slot, timeouts).unwrap();
    let err = unlock(&m.store, VDE, &peer_only(&sw), t(11)).unwrap_err();
    let AttemptFailure::PeerAttestationFailed(reason) = &err.attempts[0].reason else {
        panic!("{err}")
    };
    assert!(reason.contains("is not enrolled"), "{reason}");
    // A second time: the service no longer knows the machine, and says so.
    let e = dw_keys::unenroll_peer(&m.store, VDE, &mk, peer_slot, timeouts).unwrap_err();
    assert!(e.to_string().contains("not enrolled"), "{e}");
    Outcome::Passed
}

fn peer_down_is_reported_quickly() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    svc.stop();
    let started = Instant::now();
    // Timeouts far longer than the assertion allows: a refused connection must be reported at
    // once, not after waiting them out (the passphrase's Argon2id is in the time too).
    let cfg = UnlockConfig {
        passphrase: Some(Passphrase::new(m.pass.expose_secret())),
        order: vec![],
        peer: PeerTimeouts {
            connect: Duration::from_secs(60),
            io: Duration::from_secs(60),
        },
        ..peer_only(&sw)
    };
    let out = unlock(&m.store, VDE, &cfg, t(10)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.kind,
        SlotKind::Passphrase,
        "the passphrase still opens the VDE"
    );
    let a = out
        .attempts
        .iter()
        .find(|a| a.kind == SlotKind::Peer)
        .unwrap();
    let AttemptFailure::PeerUnreachable(reason) = &a.reason else {
        panic!("{a}")
    };
    assert!(
        reason.to_lowercase().contains("connection refused"),
        "{reason}"
    );
    assert!(
        a.to_string().contains("peer unreachable: 127.0.0.1:"),
        "{a}"
    );
    Outcome::Passed
}

fn wrong_token_and_wrong_certificate() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut opts = options(&svc, &[7]);
    opts.token = Zeroizing::new([0; 32]);
    let err = NewSlot::peer(&mut tpm, "x", &opts, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enrollment token is wrong"), "{err}");
    let mut opts = options(&svc, &[7]);
    opts.server_cert_sha256 = [1; 32];
    let err = NewSlot::peer(&mut tpm, "x", &opts, None).unwrap_err();
    assert!(
        err.to_string().contains("not the one pinned at enrollment"),
        "{err}"
    );
    assert!(matches!(
        err,
        dw_keys::PeerSlotError::Peer(PeerError::Tls { .. })
    ));
    assert!(
        dw_keys::peer::state::ServiceState::load(&svc.state_path)
            .unwrap()
            .machines()
            .is_empty()
    );
    Outcome::Passed
}

fn trusted_update_moves_the_peer_policy() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), None);
    let mk = MasterKey::generate().unwrap();
    let m = enroll(&sw, &svc, &mk, None);
    Tpm::open(&sw.tcti())
        .unwrap()
        .extend_pcr(11, b"new kernel")
        .unwrap();
    assert!(unlock(&m.store, VDE, &peer_only(&sw), t(10)).is_err());
    let opened = dw_keys::unlock_with_passphrase(&m.store, VDE, &m.pass, t(11)).unwrap();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let mut env = ResealEnv {
        tpm: Some(&mut tpm),
        peers: Some(PeerTimeouts::default()),
        ..Default::default()
    };
    let (store, report) = reseal(&opened.store, VDE, &opened.master_key, &mut env, t(12)).unwrap();
    let (_, _, o) = report
        .slots
        .iter()
        .find(|(_, k, _)| *k == SlotKind::Peer)
        .unwrap();
    let ResealOutcome::Resealed { changes } = o else {
        panic!("{o:?}")
    };
    assert_eq!(
        changes.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![11]
    );
    drop(tpm);
    let out = unlock(&store, VDE, &peer_only(&sw), t(13)).unwrap();
    assert_eq!(out.master_key.expose_secret(), mk.expose_secret());
    // A policy update without the share is refused.
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let c = client(&svc);
    let n = nonce(&svc, m.machine_id);
    let q = tpm
        .quote(
            PcrSelection::new(&[7, 11]).unwrap(),
            &qualifying_data(QuotePurpose::UpdatePolicy, &m.machine_id, &n),
        )
        .unwrap();
    let ev = Evidence {
        pcrs: q.pcrs,
        attest: q.attest,
        signature: q.signature,
        snp: None,
    };
    let reply = c
        .raw_exchange(&[Message::UpdatePolicy {
            machine_id: m.machine_id,
            nonce: n,
            proof: [0; 32],
            evidence: ev,
        }])
        .unwrap();
    assert_eq!(refused(&reply[0]).0, RefuseCode::ProofInvalid);
    Outcome::Passed
}

fn snp_evidence_is_verified() -> Outcome {
    let sw = swtpm_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(dir.path(), Some(common::fake_snp::test_ca()));
    let mk = MasterKey::generate().unwrap();
    let mut fw = common::fake_snp::FakeSnp::new([0x33; 48]);
    let m = enroll(&sw, &svc, &mk, Some(&mut fw));
    let out = unlock_with(&m.store, VDE, &peer_only(&sw), Some(&mut fw), t(10)).unwrap();
    assert_eq!(out.kind, SlotKind::Peer);
    // Another launch measurement is refused and named.
    let mut other = common::fake_snp::FakeSnp::new([0x44; 48]);
    let err = unlock_with(&m.store, VDE, &peer_only(&sw), Some(&mut other), t(11)).unwrap_err();
    let AttemptFailure::PeerAttestationFailed(reason) = &err.attempts[0].reason else {
        panic!("{err}")
    };
    assert!(
        reason.contains("launch measurement changed (enrolled 33333333…, now 44444444…)"),
        "{reason}"
    );
    // Without SEV-SNP the slot says so.
    let err = unlock_with(&m.store, VDE, &peer_only(&sw), None, t(12)).unwrap_err();
    assert!(
        matches!(err.attempts[0].reason, AttemptFailure::SnpUnavailable(_)),
        "{err}"
    );
    Outcome::Passed
}

fn main() {
    common::env::quiet_tss_logging();
    common::run(
        "peer",
        &[
            ("success", success),
            ("wrong_quote_is_refused", wrong_quote_is_refused),
            ("replayed_nonce_is_refused", replayed_nonce_is_refused),
            (
                "unenrolled_machine_is_refused",
                unenrolled_machine_is_refused,
            ),
            (
                "unenroll_with_the_escrowed_share",
                unenroll_with_the_escrowed_share,
            ),
            (
                "peer_down_is_reported_quickly",
                peer_down_is_reported_quickly,
            ),
            (
                "wrong_token_and_wrong_certificate",
                wrong_token_and_wrong_certificate,
            ),
            (
                "trusted_update_moves_the_peer_policy",
                trusted_update_moves_the_peer_policy,
            ),
            ("snp_evidence_is_verified", snp_evidence_is_verified),
        ],
    );
}
