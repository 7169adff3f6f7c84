//! Parsing and verifying TPM2 quotes on the service side, without the TSS library: the service
//! handles untrusted input, so the parser is small, bounded and fuzzed.
//!
//! `TPMS_ATTEST` (TPM 2.0 Part 2, 10.12.12), big-endian:
//! `magic u32 (0xFF544347) | type u16 (0x8018 quote) | qualifiedSigner TPM2B_NAME |
//!  extraData TPM2B_DATA | clockInfo (clock u64, resetCount u32, restartCount u32, safe u8) |
//!  firmwareVersion u64 | TPMS_QUOTE_INFO (TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST)`.

use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

use crate::codec::{Reader, Truncated};
use crate::pcr::{PcrSelection, TPM_ALG_SHA256};
use crate::tpm::AkPublic;

const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// The fields of a quote the service checks.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QuoteInfo {
    /// Name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// The qualifying data (our hashed nonce).
    pub extra_data: Vec<u8>,
    /// TPM clock in milliseconds.
    pub clock: u64,
    /// TPM reset count.
    pub reset_count: u32,
    /// TPM restart count.
    pub restart_count: u32,
    /// Firmware version.
    pub firmware_version: u64,
    /// The quoted PCRs (SHA-256 bank).
    pub selection: PcrSelection,
    /// SHA-256 over the quoted PCR values.
    pub pcr_digest: [u8; 32],
}

/// A quote that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestParseError {
    /// Truncated.
    #[error("the quote is truncated: {0}")]
    Truncated(#[from] Truncated),
    /// Not produced by a TPM.
    #[error("the attestation does not carry TPM_GENERATED_VALUE: it was not produced by a TPM")]
    NotTpmGenerated,
    /// Not a quote.
    #[error("the attestation is of type {0:#06x}, not a quote")]
    NotAQuote(u16),
    /// Invalid field.
    #[error("the quote field `{field}` is invalid: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AttestParseError {
    AttestParseError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn tpm2b<'a>(
    r: &mut Reader<'a>,
    max: usize,
    field: &'static str,
) -> Result<&'a [u8], AttestParseError> {
    let len = usize::from(r.u16_be(field)?);
    if len > max {
        return Err(invalid(field, format!("{len} bytes, at most {max}")));
    }
    Ok(r.bytes(len, field)?)
}

/// Parses a marshalled `TPMS_ATTEST` of type quote with exactly one SHA-256 PCR selection.
///
/// # Errors
/// When it is anything else.
pub fn parse_quote(attest: &[u8]) -> Result<QuoteInfo, AttestParseError> {
    let mut r = Reader::new(attest);
    if r.u32_be("magic")? != TPM_GENERATED_VALUE {
        return Err(AttestParseError::NotTpmGenerated);
    }
    let st = r.u16_be("type")?;
    if st != TPM_ST_ATTEST_QUOTE {
        return Err(AttestParseError::NotAQuote(st));
    }
    let qualified_signer = tpm2b(&mut r, 68, "qualifiedSigner")?.to_vec();
    let extra_data = tpm2b(&mut r, 64, "extraData")?.to_vec();
    let clock = r.u64_be("clock")?;
    let reset_count = r.u32_be("resetCount")?;
    let restart_count = r.u32_be("restartCount")?;
    if r.u8("safe")? > 1 {
        return Err(invalid("safe", "not a boolean"));
    }
    let firmware_version = r.u64_be("firmwareVersion")?;
    let count = r.u32_be("pcrSelect.count")?;
    if count != 1 {
        return Err(invalid(
            "pcrSelect.count",
            format!("{count} banks quoted, exactly 1 (SHA-256) expected"),
        ));
    }
    let hash = r.u16_be("pcrSelect.hash")?;
    if hash != TPM_ALG_SHA256 {
        return Err(invalid(
            "pcrSelect.hash",
            format!("bank {hash:#06x} is not SHA-256"),
        ));
    }
    let size = usize::from(r.u8("pcrSelect.sizeofSelect")?);
    if !(3..=4).contains(&size) {
        return Err(invalid(
            "pcrSelect.sizeofSelect",
            format!("{size}, expected 3 or 4"),
        ));
    }
    let bitmap = r.bytes(size, "pcrSelect.pcrSelect")?;
    let mut mask_bytes = [0u8; 4];
    mask_bytes[..size].copy_from_slice(bitmap);
    let selection = PcrSelection::from_mask(u32::from_le_bytes(mask_bytes))
        .map_err(|e| invalid("pcrSelect.pcrSelect", e.to_string()))?;
    let digest = tpm2b(&mut r, 64, "pcrDigest")?;
    let pcr_digest: [u8; 32] = digest.try_into().map_err(|_| {
        invalid(
            "pcrDigest",
            format!("{} bytes, a SHA-256 digest is 32", digest.len()),
        )
    })?;
    if r.remaining() != 0 {
        return Err(invalid(
            "attest",
            format!("{} bytes after the quote", r.remaining()),
        ));
    }
    Ok(QuoteInfo {
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        firmware_version,
        selection,
        pcr_digest,
    })
}

/// Whether `signature` (`r || s`) is the attestation key's ECDSA P-256 signature over
/// SHA-256(`attest`).
#[must_use]
pub fn verify_quote_signature(ak: &AkPublic, attest: &[u8], signature: &[u8; 64]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ak.0[..])
        .verify(attest, signature)
        .is_ok()
}

#[cfg(test)]
pub(crate) fn build_quote(extra: &[u8], sel: PcrSelection, digest: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
    v.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
    v.extend_from_slice(&34u16.to_be_bytes());
    v.extend_from_slice(&[0, 0x0b]);
    v.extend_from_slice(&[0xaa; 32]);
    v.extend_from_slice(&u16::try_from(extra.len()).unwrap().to_be_bytes());
    v.extend_from_slice(extra);
    v.extend_from_slice(&5u64.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.push(1);
    v.extend_from_slice(&7u64.to_be_bytes());
    v.extend_from_slice(&sel.marshal_tpml());
    v.extend_from_slice(&32u16.to_be_bytes());
    v.extend_from_slice(digest);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_well_formed_quote() {
        let sel = PcrSelection::new(&[7, 11]).unwrap();
        let q = build_quote(&[9; 32], sel, &[3; 32]);
        let info = parse_quote(&q).unwrap();
        assert_eq!(info.selection, sel);
        assert_eq!(info.extra_data, vec![9; 32]);
        assert_eq!(info.pcr_digest, [3; 32]);
        assert_eq!(info.clock, 5);
    }

    #[test]
    fn rejects_malformed_quotes() {
        let sel = PcrSelection::DEFAULT;
        let good = build_quote(&[9; 32], sel, &[3; 32]);
        for cut in 0..good.len() {
            assert!(parse_quote(&good[..cut]).is_err(), "prefix {cut} accepted");
        }
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(parse_quote(&bad), Err(AttestParseError::NotTpmGenerated));
        let mut bad = good.clone();
        bad[5] = 0x14;
        assert!(matches!(
            parse_quote(&bad),
            Err(AttestParseError::NotAQuote(_))
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(parse_quote(&long).is_err());
    }

    #[test]
    fn signature_check_rejects_garbage() {
        let ak = AkPublic([4; 65]);
        assert!(!verify_quote_signature(&ak, b"x", &[1; 64]));
    }
}
