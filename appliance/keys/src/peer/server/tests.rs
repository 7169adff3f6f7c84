use std::time::Duration;

use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use zeroize::Zeroizing;

use super::*;
use crate::pcr::{PcrSelection, PcrValues};
use crate::peer::attest::{build_quote, parse_quote};
use crate::peer::proto::{Enrollment, Evidence, Message, SnpEvidence};
use crate::peer::state::ServiceState;
use crate::secret::SeededEntropy;

const MID: [u8; 16] = [0x3c; 16];
const TOKEN: [u8; 32] = [0x70; 32];

struct Ak {
    kp: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Ak {
    fn new() -> Ak {
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Ak {
            kp: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng)
                .unwrap(),
            rng,
        }
    }
    fn public(&self) -> [u8; 65] {
        self.kp.public_key().as_ref().try_into().unwrap()
    }
    /// Evidence as a TPM would produce it for `pcrs` and `nonce`.
    fn evidence(&self, pcrs: &PcrValues, purpose: QuotePurpose, nonce: &[u8; 32]) -> Evidence {
        let attest = build_quote(
            &qualifying_data(purpose, &MID, nonce),
            pcrs.selection(),
            &pcrs.digest(),
        );
        let sig = self.kp.sign(&self.rng, &attest).unwrap();
        Evidence {
            pcrs: pcrs.clone(),
            attest,
            signature: sig.as_ref().try_into().unwrap(),
            snp: None,
        }
    }
}

fn pcrs(v7: u8) -> PcrValues {
    PcrValues::new(
        PcrSelection::new(&[7, 11]).unwrap(),
        vec![[v7; 32], [0; 32]],
    )
    .unwrap()
}

fn now(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall: UnixTime(1_700_000_000 + ms / 1000),
    }
}

fn service(dir: &std::path::Path) -> KeyService {
    KeyService::open(ServiceConfig::new(
        dir.join("state.bin"),
        token_hash(&TOKEN),
    ))
    .unwrap()
}

fn enroll(svc: &mut KeyService, ak: &Ak) -> Message {
    svc.handle(
        Message::Enroll(Enrollment {
            token: Zeroizing::new(TOKEN),
            machine_id: MID,
            ak_public: ak.public(),
            pcrs: pcrs(1),
            snp_measurement: None,
            share: Zeroizing::new([0x5a; 32]),
            label: "unit".into(),
        }),
        now(0),
    )
}

fn get_nonce(svc: &mut KeyService, at: u64) -> [u8; 32] {
    match svc.handle(Message::NonceRequest { machine_id: MID }, now(at)) {
        Message::Nonce { nonce, ttl_secs } => {
            assert_eq!(ttl_secs, 30);
            nonce
        }
        other => panic!("{other:?}"),
    }
}

fn refusal(m: &Message) -> RefuseCode {
    match m {
        Message::Refused { code, .. } => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn nonces_are_single_use_bound_and_short_lived() {
    let mut book = NonceBook::default();
    let rng = &mut SeededEntropy::new(1);
    let ttl = Duration::from_secs(30);
    let n = book.issue(MID, 1000, ttl, 10, 2, rng).unwrap();
    assert_eq!(
        book.consume(&n, &[1; 16], 1001),
        Err(NonceProblem::OtherMachine)
    );
    let n = book.issue(MID, 1000, ttl, 10, 2, rng).unwrap();
    assert_eq!(book.consume(&n, &MID, 1001), Ok(()));
    assert_eq!(
        book.consume(&n, &MID, 1002),
        Err(NonceProblem::UnknownOrUsed)
    );
    let n = book.issue(MID, 1000, ttl, 10, 2, rng).unwrap();
    assert_eq!(book.consume(&n, &MID, 31_000), Err(NonceProblem::Expired));
    // Bounds: per machine and in total; expired nonces free their place.
    book.issue(MID, 1000, ttl, 10, 2, rng).unwrap();
    book.issue(MID, 1000, ttl, 10, 2, rng).unwrap();
    assert_eq!(
        book.issue(MID, 1000, ttl, 10, 2, rng),
        Err(NonceProblem::Busy)
    );
    assert!(book.issue(MID, 40_000, ttl, 10, 2, rng).is_ok());
    for i in 0..9u8 {
        book.issue([i; 16], 40_000, ttl, 10, 2, rng).unwrap();
    }
    assert_eq!(
        book.issue([99; 16], 40_000, ttl, 10, 2, rng),
        Err(NonceProblem::Busy)
    );
    assert!(book.len() <= 10);
}

#[test]
fn release_checks_every_part_of_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(dir.path());
    let ak = Ak::new();
    assert!(matches!(enroll(&mut svc, &ak), Message::Enrolled));
    assert_eq!(refusal(&enroll(&mut svc, &ak)), RefuseCode::AlreadyEnrolled);

    // Success.
    let n = get_nonce(&mut svc, 10);
    let ok = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ak.evidence(&pcrs(1), QuotePurpose::Release, &n),
        },
        now(20),
    );
    let Message::Share { share } = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(*share, [0x5a; 32]);

    // PCR 7 differs from the policy: refused and named.
    let n = get_nonce(&mut svc, 30);
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ak.evidence(&pcrs(2), QuotePurpose::Release, &n),
        },
        now(40),
    );
    let Message::Refused { code, reason } = r else {
        panic!()
    };
    assert_eq!(code, RefuseCode::PcrMismatch);
    assert!(
        reason.contains("PCR 7 changed (enrolled 01010101…, now 02020202…)"),
        "{reason}"
    );

    // Expired nonce.
    let n = get_nonce(&mut svc, 50);
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ak.evidence(&pcrs(1), QuotePurpose::Release, &n),
        },
        now(50 + 31_000),
    );
    assert_eq!(refusal(&r), RefuseCode::NonceInvalid);

    // Quote for another purpose (an update-policy quote replayed as a release).
    let n = get_nonce(&mut svc, 100_000);
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ak.evidence(&pcrs(1), QuotePurpose::UpdatePolicy, &n),
        },
        now(100_001),
    );
    assert_eq!(refusal(&r), RefuseCode::QuoteMismatch);

    // Signed by another key.
    let n = get_nonce(&mut svc, 100_002);
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: Ak::new().evidence(&pcrs(1), QuotePurpose::Release, &n),
        },
        now(100_003),
    );
    assert_eq!(refusal(&r), RefuseCode::SignatureInvalid);

    // A different PCR selection than enrolled.
    let n = get_nonce(&mut svc, 100_004);
    let only7 = PcrValues::new(PcrSelection::new(&[7]).unwrap(), vec![[1; 32]]).unwrap();
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ak.evidence(&only7, QuotePurpose::Release, &n),
        },
        now(100_005),
    );
    assert_eq!(refusal(&r), RefuseCode::QuoteMismatch);

    // Garbage instead of a quote.
    let n = get_nonce(&mut svc, 100_006);
    let mut ev = ak.evidence(&pcrs(1), QuotePurpose::Release, &n);
    ev.attest.truncate(10);
    let r = svc.handle(
        Message::Release {
            machine_id: MID,
            nonce: n,
            evidence: ev,
        },
        now(100_007),
    );
    assert_eq!(refusal(&r), RefuseCode::Malformed);

    // SNP evidence required but no CA configured is a clear refusal, not a panic.
    let r = svc.handle(
        Message::Share {
            share: Zeroizing::new([0; 32]),
        },
        now(100_008),
    );
    assert_eq!(refusal(&r), RefuseCode::Malformed);
}

#[test]
fn wrong_token_is_refused_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(dir.path());
    let ak = Ak::new();
    let bad = svc.handle(
        Message::Enroll(Enrollment {
            token: Zeroizing::new([0; 32]),
            machine_id: MID,
            ak_public: ak.public(),
            pcrs: pcrs(1),
            snp_measurement: None,
            share: Zeroizing::new([1; 32]),
            label: String::new(),
        }),
        now(0),
    );
    assert_eq!(refusal(&bad), RefuseCode::EnrollmentDenied);
    assert!(matches!(enroll(&mut svc, &ak), Message::Enrolled));
    drop(svc);
    let mut again = service(dir.path());
    assert_eq!(again.state().machines().len(), 1);
    let n = get_nonce(&mut again, 0);
    assert!(matches!(
        again.handle(
            Message::Release {
                machine_id: MID,
                nonce: n,
                evidence: ak.evidence(&pcrs(1), QuotePurpose::Release, &n)
            },
            now(1)
        ),
        Message::Share { .. }
    ));
    assert!(again.revoke(&MID).unwrap());
    assert_eq!(
        refusal(&again.handle(Message::NonceRequest { machine_id: MID }, now(2))),
        RefuseCode::Unenrolled
    );
}

#[test]
fn policy_update_needs_the_share_and_a_fresh_quote() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(dir.path());
    let ak = Ak::new();
    enroll(&mut svc, &ak);
    let n = get_nonce(&mut svc, 0);
    let ev = ak.evidence(&pcrs(9), QuotePurpose::UpdatePolicy, &n);
    let proof = share_proof(&[0x5a; 32], b"update-policy", &MID, &n, &ev.digest());
    let wrong = share_proof(&[0x5b; 32], b"update-policy", &MID, &n, &ev.digest());
    let r = svc.handle(
        Message::UpdatePolicy {
            machine_id: MID,
            nonce: n,
            proof: wrong,
            evidence: ev.clone(),
        },
        now(1),
    );
    assert_eq!(refusal(&r), RefuseCode::ProofInvalid);
    let n = get_nonce(&mut svc, 2);
    let ev = ak.evidence(&pcrs(9), QuotePurpose::UpdatePolicy, &n);
    let proof2 = share_proof(&[0x5a; 32], b"update-policy", &MID, &n, &ev.digest());
    assert_ne!(proof, proof2, "proofs are bound to the nonce");
    let r = svc.handle(
        Message::UpdatePolicy {
            machine_id: MID,
            nonce: n,
            proof: proof2,
            evidence: ev,
        },
        now(3),
    );
    assert!(matches!(r, Message::PolicyUpdated { .. }), "{r:?}");
    assert_eq!(svc.state().machines()[0].pcrs, pcrs(9));
    // Unenroll with proof.
    let n = get_nonce(&mut svc, 4);
    let p = share_proof(&[0x5a; 32], b"unenroll", &MID, &n, &[0; 32]);
    assert!(matches!(
        svc.handle(
            Message::Unenroll {
                machine_id: MID,
                nonce: n,
                proof: p
            },
            now(5)
        ),
        Message::Unenrolled
    ));
    assert!(
        ServiceState::load(&dir.path().join("state.bin"))
            .unwrap()
            .machines()
            .is_empty()
    );
}

/// One of every message, deterministic (the golden file's content).
fn sample_messages() -> Vec<Message> {
    let ev = Evidence {
        pcrs: pcrs(3),
        attest: build_quote(
            &[1; 32],
            PcrSelection::new(&[7, 11]).unwrap(),
            &pcrs(3).digest(),
        ),
        signature: [7; 64],
        snp: None,
    };
    let mut ev_snp = ev.clone();
    ev_snp.snp = Some(SnpEvidence {
        report: vec![2; crate::snp::REPORT_LEN],
        vcek_der: vec![3; 100],
    });
    vec![
        Message::NonceRequest { machine_id: MID },
        Message::Nonce {
            nonce: [4; 32],
            ttl_secs: 30,
        },
        Message::Release {
            machine_id: MID,
            nonce: [4; 32],
            evidence: ev.clone(),
        },
        Message::Release {
            machine_id: MID,
            nonce: [4; 32],
            evidence: ev_snp,
        },
        Message::Share {
            share: Zeroizing::new([5; 32]),
        },
        Message::Refused {
            code: RefuseCode::PcrMismatch,
            reason: "PCR 7 changed".into(),
        },
        Message::Enroll(Enrollment {
            token: Zeroizing::new([6; 32]),
            machine_id: MID,
            ak_public: [4; 65],
            pcrs: pcrs(8),
            snp_measurement: Some([9; 48]),
            share: Zeroizing::new([10; 32]),
            label: "rack 2".into(),
        }),
        Message::Enrolled,
        Message::UpdatePolicy {
            machine_id: MID,
            nonce: [11; 32],
            proof: [12; 32],
            evidence: ev,
        },
        Message::PolicyUpdated { pcr_mask: 0x880 },
        Message::Unenroll {
            machine_id: MID,
            nonce: [13; 32],
            proof: [14; 32],
        },
        Message::Unenrolled,
    ]
}

#[test]
fn messages_roundtrip_and_match_the_golden_file() {
    let mut all = Vec::new();
    for m in sample_messages() {
        let body = m.encode();
        assert_eq!(Message::decode(&body).unwrap(), m);
        let mut framed = Vec::new();
        crate::peer::proto::write_frame(&mut framed, &m).unwrap();
        assert_eq!(crate::peer::proto::read_frame(&mut &framed[..]).unwrap(), m);
        all.extend_from_slice(&framed);
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/peer_messages_v1.bin");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &all).unwrap();
    }
    let golden = std::fs::read(&path)
        .expect("tests/golden/peer_messages_v1.bin missing: run with UPDATE_GOLDEN=1");
    assert_eq!(
        all, golden,
        "the peer protocol encoding changed (bump the protocol version) or run with UPDATE_GOLDEN=1"
    );
    // The golden stream decodes frame by frame to the same messages.
    let mut r = &golden[..];
    for m in sample_messages() {
        assert_eq!(crate::peer::proto::read_frame(&mut r).unwrap(), m);
    }
    assert!(r.is_empty());
}

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let mut frame = (u32::MAX).to_le_bytes().to_vec();
    frame.extend_from_slice(b"DWKP");
    assert!(matches!(
        crate::peer::proto::read_frame(&mut &frame[..]),
        Err(crate::peer::proto::FrameError::TooLarge(_))
    ));
}

#[test]
fn state_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(dir.path());
    enroll(&mut svc, &Ak::new());
    let bytes = std::fs::read(dir.path().join("state.bin")).unwrap();
    let st = ServiceState::decode(&bytes).unwrap();
    assert_eq!(st.encode(), bytes);
    assert!(ServiceState::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    assert!(ServiceState::decode(&bad).is_err());
}

fn fix_state_checksum(b: &mut [u8]) {
    if b.len() >= 48 {
        let n = u32::try_from(b.len()).unwrap().to_le_bytes();
        b[8..12].copy_from_slice(&n);
        let end = b.len() - 32;
        let mut h = blake3::Hasher::new_derive_key("DataWarehouse dw-keyd v1 state checksum");
        h.update(&b[..end]);
        let sum = *h.finalize().as_bytes();
        b[end..].copy_from_slice(&sum);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), kind in 0u8..14) {
        let _ = Message::decode(&bytes);
        let mut b = b"DWKP\x01".to_vec();
        b.push(kind);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&bytes);
        if let Ok(m) = Message::decode(&b) {
            prop_assert_eq!(m.encode(), b);
        }
    }

    #[test]
    fn mutated_messages_decode_canonically(which in 0usize..12, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut b = sample_messages()[which].encode();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        if let Ok(m) = Message::decode(&b) {
            prop_assert_eq!(m.encode(), b);
        }
    }

    #[test]
    fn quote_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_quote(&bytes);
        let mut b = 0xFF54_4347u32.to_be_bytes().to_vec();
        b.extend_from_slice(&0x8018u16.to_be_bytes());
        b.extend_from_slice(&bytes);
        let _ = parse_quote(&b);
    }

    #[test]
    fn state_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ServiceState::decode(&bytes);
        let mut b = b"DWKD\x01\x00\x00\x00\x00\x00\x00\x00".to_vec();
        b.extend_from_slice(&bytes);
        fix_state_checksum(&mut b);
        if let Ok(s) = ServiceState::decode(&b) {
            prop_assert_eq!(s.encode(), b);
        }
    }

    #[test]
    fn snp_report_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), crate::snp::REPORT_LEN..=crate::snp::REPORT_LEN), version in 0u8..8) {
        let mut b = bytes;
        b[0] = version;
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        let _ = crate::snp::parse_report(&b);
    }
}
