//! A fake SEV-SNP guest firmware for tests: derived keys are BLAKE3 of a per-"chip" seed and
//! the selected inputs; attestation reports are the recorded Milan report with our report data
//! and measurement, re-signed with the test VCEK key (tests/data/test-vcek-key.pk8), so that
//! the real verification code accepts them against the test chain.

use dw_keys::snp::{REPORT_SIGNED_LEN, SnpFirmware, SnpFirmwareError, SnpKeyRequest, SnpRootKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use zeroize::Zeroizing;

pub const TEST_ARK: &[u8] = include_bytes!("../data/test-ark.pem");
pub const TEST_ASK: &[u8] = include_bytes!("../data/test-ask.pem");
pub const TEST_VCEK: &[u8] = include_bytes!("../data/test-vcek.der");
const TEST_VCEK_KEY: &[u8] = include_bytes!("../data/test-vcek-key.pk8");
pub const MILAN_REPORT_HEX: &str = include_str!("../data/report_milan.hex");

pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn test_ca() -> dw_keys::snp::SnpCa {
    dw_keys::snp::SnpCa::Custom {
        ark_pem: TEST_ARK.to_vec(),
        ask_pem: TEST_ASK.to_vec(),
    }
}

/// Signs the first 0x2a0 bytes of `report` with the test VCEK and stores the signature in the
/// report's signature field (r then s, each 72 bytes little-endian).
pub fn sign_report(report: &mut [u8]) {
    let rng = SystemRandom::new();
    let kp =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, TEST_VCEK_KEY, &rng).unwrap();
    let sig = kp.sign(&rng, &report[..REPORT_SIGNED_LEN]).unwrap();
    let sig = sig.as_ref();
    let (r, s) = sig.split_at(48);
    let field = &mut report[REPORT_SIGNED_LEN..REPORT_SIGNED_LEN + 144];
    field.fill(0);
    for (i, b) in r.iter().rev().enumerate() {
        field[i] = *b;
    }
    for (i, b) in s.iter().rev().enumerate() {
        field[72 + i] = *b;
    }
}

pub struct FakeSnp {
    pub seed: [u8; 32],
    pub measurement: [u8; 48],
    pub requests: Vec<SnpKeyRequest>,
    pub provide_vcek: bool,
}

impl FakeSnp {
    pub fn new(measurement: [u8; 48]) -> FakeSnp {
        FakeSnp {
            seed: [0x5e; 32],
            measurement,
            requests: Vec::new(),
            provide_vcek: true,
        }
    }
}

impl SnpFirmware for FakeSnp {
    fn derived_key(&mut self, r: &SnpKeyRequest) -> Result<Zeroizing<[u8; 32]>, SnpFirmwareError> {
        self.requests.push(*r);
        let mut h = blake3::Hasher::new_keyed(&self.seed);
        if r.field_select & SnpKeyRequest::FIELD_MEASUREMENT != 0 {
            h.update(&self.measurement);
        }
        h.update(&r.field_select.to_le_bytes());
        h.update(&[u8::from(r.root_key == SnpRootKey::Vmrk)]);
        h.update(&r.vmpl.to_le_bytes());
        Ok(Zeroizing::new(*h.finalize().as_bytes()))
    }

    fn attestation_report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SnpFirmwareError> {
        let mut r = unhex(MILAN_REPORT_HEX);
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&self.measurement);
        sign_report(&mut r);
        Ok(r)
    }

    fn vcek_der(&mut self) -> Result<Option<Vec<u8>>, SnpFirmwareError> {
        Ok(self.provide_vcek.then(|| TEST_VCEK.to_vec()))
    }
}
