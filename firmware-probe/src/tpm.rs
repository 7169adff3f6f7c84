//! Asking the TPM itself (GetCapability) through tss-esapi; only with the `tpm` feature.

use std::str::FromStr;

use thiserror::Error;
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::CapabilityData;
use tss_esapi::{Context, TctiNameConf};

use crate::model::{PcrBank, Unknown};

/// What the TPM reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TpmQuery {
    pub(crate) pcr_banks: Vec<PcrBank>,
    pub(crate) manufacturer: Option<String>,
    pub(crate) firmware_version: Option<String>,
    pub(crate) unknown: Unknown,
}

/// Querying the TPM failed.
#[derive(Debug, Error)]
pub enum TpmQueryError {
    /// The TCTI string is not valid.
    #[error("invalid TCTI configuration {tcti:?}: {source}")]
    Tcti {
        /// The configuration string.
        tcti: String,
        /// The error.
        source: tss_esapi::Error,
    },
    /// No connection to the TPM.
    #[error("cannot open the TPM through {tcti}: {source}")]
    Connect {
        /// The configuration string.
        tcti: String,
        /// The error.
        source: tss_esapi::Error,
    },
    /// GetCapability failed.
    #[error("TPM2_GetCapability(TPM_CAP_PCRS) failed: {0}")]
    Capability(tss_esapi::Error),
    /// The TPM answered with something else than a PCR selection.
    #[error("TPM2_GetCapability(TPM_CAP_PCRS) returned another capability")]
    WrongCapability,
}

fn algorithm_name(alg: HashingAlgorithm) -> String {
    match alg {
        HashingAlgorithm::Sha1 => "sha1".to_owned(),
        HashingAlgorithm::Sha256 => "sha256".to_owned(),
        HashingAlgorithm::Sha384 => "sha384".to_owned(),
        HashingAlgorithm::Sha512 => "sha512".to_owned(),
        HashingAlgorithm::Sm3_256 => "sm3_256".to_owned(),
        HashingAlgorithm::Sha3_256 => "sha3_256".to_owned(),
        HashingAlgorithm::Sha3_384 => "sha3_384".to_owned(),
        HashingAlgorithm::Sha3_512 => "sha3_512".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// TPM_PT_MANUFACTURER is four ASCII characters, big endian, padded with NUL or space.
fn manufacturer_name(v: u32) -> String {
    v.to_be_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|b| char::from(*b))
        .collect()
}

/// Connects through `tcti` and reads the allocated PCR banks, manufacturer and firmware version.
pub(crate) fn query(tcti: &str) -> Result<TpmQuery, TpmQueryError> {
    let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmQueryError::Tcti {
        tcti: tcti.to_owned(),
        source,
    })?;
    let mut ctx = Context::new(conf).map_err(|source| TpmQueryError::Connect {
        tcti: tcti.to_owned(),
        source,
    })?;
    let (data, _more) = ctx
        .get_capability(CapabilityType::AssignedPcr, 0, 16)
        .map_err(TpmQueryError::Capability)?;
    let CapabilityData::AssignedPcr(list) = data else {
        return Err(TpmQueryError::WrongCapability);
    };
    let mut pcr_banks: Vec<PcrBank> = list
        .get_selections()
        .iter()
        .map(|sel| {
            let mut pcrs: Vec<u8> = sel
                .selected()
                .into_iter()
                .filter_map(|slot| u8::try_from(u32::from(slot).trailing_zeros()).ok())
                .collect();
            pcrs.sort_unstable();
            PcrBank {
                algorithm: algorithm_name(sel.hashing_algorithm()),
                pcrs,
            }
        })
        .collect();
    pcr_banks.sort_by(|a, b| a.algorithm.cmp(&b.algorithm));
    let mut unknown = Unknown::new();
    let manufacturer = match ctx.get_tpm_property(PropertyTag::Manufacturer) {
        Ok(Some(v)) => Some(manufacturer_name(v)),
        Ok(None) => {
            unknown.insert(
                "manufacturer".into(),
                "TPM does not report TPM_PT_MANUFACTURER".into(),
            );
            None
        }
        Err(e) => {
            unknown.insert(
                "manufacturer".into(),
                format!("GetCapability(TPM_PT_MANUFACTURER): {e}"),
            );
            None
        }
    };
    let firmware_version = match ctx.get_tpm_property(PropertyTag::FirmwareVersion1) {
        Ok(Some(v)) => Some(format!("{}.{}", v >> 16, v & 0xffff)),
        Ok(None) => {
            unknown.insert(
                "firmware_version".into(),
                "TPM does not report TPM_PT_FIRMWARE_VERSION_1".into(),
            );
            None
        }
        Err(e) => {
            unknown.insert(
                "firmware_version".into(),
                format!("GetCapability(TPM_PT_FIRMWARE_VERSION_1): {e}"),
            );
            None
        }
    };
    Ok(TpmQuery {
        pcr_banks,
        manufacturer,
        firmware_version,
        unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manufacturer_ids() {
        assert_eq!(manufacturer_name(0x4942_4D00), "IBM");
        assert_eq!(manufacturer_name(u32::from_be_bytes(*b"STM ")), "STM");
    }

    #[test]
    fn bad_tcti_is_an_error() {
        assert!(matches!(
            query("nonsense:x"),
            Err(TpmQueryError::Tcti { .. })
        ));
    }
}
