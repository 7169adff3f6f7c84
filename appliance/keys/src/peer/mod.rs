//! Peer release: network-bound, attested unlock.
//!
//! A key-release service (`dw-keyd`, or any appliance running it) holds a *share* for each
//! enrolled machine. The machine's slot keeps the other half; the wrapping key is
//! BLAKE3-derived from both. To unlock, the machine asks for a nonce, answers with a TPM2 quote
//! over the enrolled PCRs whose qualifying data is bound to that nonce (and an SEV-SNP report
//! when enrolled with one), and the service releases the share only if the quote is signed by
//! the enrolled attestation key, covers the unused, unexpired nonce issued to that machine, and
//! shows exactly the enrolled PCR values. All of it runs over TLS with the service certificate
//! pinned at enrollment. The protocol is described in docs/KEYS.md.

pub mod attest;
pub mod client;
pub mod proto;
pub mod server;
pub mod state;
pub mod tls;

use ring::digest::{SHA256, SHA512, digest};

use crate::secret::contexts;

/// What a quote answers: binds the TPM's qualifying data to the purpose, machine and nonce.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuotePurpose {
    /// Releasing the share.
    Release,
    /// Replacing the enrolled policy with the current state.
    UpdatePolicy,
}

fn binding_input(purpose: QuotePurpose, machine_id: &[u8; 16], nonce: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(b"DWKP quote v1");
    v.push(match purpose {
        QuotePurpose::Release => 1,
        QuotePurpose::UpdatePolicy => 2,
    });
    v.extend_from_slice(machine_id);
    v.extend_from_slice(nonce);
    v
}

/// The TPM2_Quote qualifying data: SHA-256("DWKP quote v1" || purpose || machine id || nonce).
#[must_use]
pub fn qualifying_data(purpose: QuotePurpose, machine_id: &[u8; 16], nonce: &[u8; 32]) -> [u8; 32] {
    let d = digest(&SHA256, &binding_input(purpose, machine_id, nonce));
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The SEV-SNP report_data: SHA-512 of the same input.
#[must_use]
pub fn snp_report_data(purpose: QuotePurpose, machine_id: &[u8; 16], nonce: &[u8; 32]) -> [u8; 64] {
    let d = digest(&SHA512, &binding_input(purpose, machine_id, nonce));
    let mut out = [0u8; 64];
    out.copy_from_slice(d.as_ref());
    out
}

/// Proof that the sender holds the share: keyed BLAKE3 under a key derived from the share.
pub(crate) fn share_proof(
    share: &[u8; 32],
    what: &[u8],
    machine_id: &[u8; 16],
    nonce: &[u8; 32],
    extra: &[u8; 32],
) -> [u8; 32] {
    let key = blake3::derive_key(contexts::PEER_PROOF, share);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(what);
    h.update(machine_id);
    h.update(nonce);
    h.update(extra);
    *h.finalize().as_bytes()
}
