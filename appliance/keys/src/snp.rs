//! AMD SEV-SNP: firmware-derived keys bound to the launch measurement, attestation reports, and
//! their verification against the AMD certificate chain (ARK → ASK → VCEK, ECDSA P-384 report
//! signature).
//!
//! The firmware is reached through the [`SnpFirmware`] trait: [`SevGuest`] talks to
//! `/dev/sev-guest` with the `sev` crate; tests substitute a fake. On a machine that is not an
//! SEV-SNP guest, [`availability`] says why.

use std::fmt;
use std::path::Path;

use sev::certs::snp::{Certificate, Verifiable, ca};
use sev::firmware::guest::{AttestationReport, DerivedKey, Firmware, GuestFieldSelect};
use sev::parser::ByteParser;
use zeroize::Zeroizing;

use crate::types::short_hex;

/// Size of an attestation report.
pub const REPORT_LEN: usize = 1184;
/// Bytes of the report covered by the signature.
pub const REPORT_SIGNED_LEN: usize = 0x2a0;
/// Largest VCEK certificate accepted.
pub const MAX_VCEK_DER: usize = 4096;
/// Largest ARK/ASK PEM accepted for a custom CA.
pub const MAX_CA_PEM: usize = 8192;

/// Which firmware root key the derived key comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SnpRootKey {
    /// The chip's versioned endorsement key (bound to this CPU).
    Vcek,
    /// The VM root key (migrates with the guest, if a migration agent is used).
    Vmrk,
}

/// A `MSG_KEY_REQ` request: which inputs the firmware mixes into the derived key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SnpKeyRequest {
    /// Root key.
    pub root_key: SnpRootKey,
    /// `GUEST_FIELD_SELECT` bits (bit 0 guest policy, 1 image id, 2 family id, 3 measurement,
    /// 4 guest SVN, 5 TCB version, 6 launch mitigation vector).
    pub field_select: u64,
    /// VMPL mixed in (must be ≥ the caller's VMPL).
    pub vmpl: u32,
    /// Guest SVN mixed in (only if selected).
    pub guest_svn: u32,
    /// TCB version mixed in (only if selected).
    pub tcb_version: u64,
    /// Launch mitigation vector (message version 2 firmware); `None` uses message version 1.
    pub launch_mit_vector: Option<u64>,
}

impl SnpKeyRequest {
    /// Field-select bit: guest policy.
    pub const FIELD_POLICY: u64 = 1 << 0;
    /// Field-select bit: launch measurement.
    pub const FIELD_MEASUREMENT: u64 = 1 << 3;
    /// The default: VCEK root, bound to the guest policy and the launch measurement, VMPL 0.
    pub const DEFAULT: SnpKeyRequest = SnpKeyRequest {
        root_key: SnpRootKey::Vcek,
        field_select: Self::FIELD_POLICY | Self::FIELD_MEASUREMENT,
        vmpl: 0,
        guest_svn: 0,
        tcb_version: 0,
        launch_mit_vector: None,
    };

    /// Whether the key is bound to the launch measurement (required for a slot).
    #[must_use]
    pub fn binds_measurement(&self) -> bool {
        self.field_select & Self::FIELD_MEASUREMENT != 0
    }
}

/// A firmware request failed.
#[derive(Debug, thiserror::Error)]
pub enum SnpFirmwareError {
    /// There is no SEV-SNP guest firmware interface here.
    #[error("SEV-SNP is not available on this machine: {0}")]
    NotAvailable(String),
    /// The firmware refused.
    #[error("the SEV-SNP firmware refused the {request}: {reason}")]
    Firmware {
        /// Which request.
        request: &'static str,
        /// Why.
        reason: String,
    },
}

/// The AMD SEV-SNP guest firmware, as this crate needs it.
pub trait SnpFirmware {
    /// A key derived by the firmware from the selected root key and guest fields.
    ///
    /// # Errors
    /// When the firmware refuses or is absent.
    fn derived_key(
        &mut self,
        request: &SnpKeyRequest,
    ) -> Result<Zeroizing<[u8; 32]>, SnpFirmwareError>;

    /// A signed attestation report carrying `report_data`.
    ///
    /// # Errors
    /// When the firmware refuses or is absent.
    fn attestation_report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SnpFirmwareError>;

    /// The VCEK certificate (DER) the host provides with extended reports, if any.
    ///
    /// # Errors
    /// When the firmware refuses or is absent.
    fn vcek_der(&mut self) -> Result<Option<Vec<u8>>, SnpFirmwareError>;
}

/// Whether SEV-SNP slots can work on this machine.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SnpAvailability {
    /// `/dev/sev-guest` is present.
    Available,
    /// Not available, and why.
    NotAvailable {
        /// A sentence for the administrator.
        reason: String,
    },
}

/// Probes this machine.
#[must_use]
pub fn availability() -> SnpAvailability {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    availability_from(
        Path::new("/dev/sev-guest").exists(),
        Path::new("/dev/sev").exists(),
        &cpuinfo,
    )
}

pub(crate) fn availability_from(guest_dev: bool, host_dev: bool, cpuinfo: &str) -> SnpAvailability {
    if guest_dev {
        return SnpAvailability::Available;
    }
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let hypervisor = flags.contains(&"hypervisor");
    let snp_flag = flags.contains(&"sev_snp");
    let mut reason = String::from("/dev/sev-guest is not present");
    if host_dev {
        reason.push_str("; /dev/sev exists, so this is an SEV host, not a guest: SNP-derived keys exist only inside an SEV-SNP guest VM");
    } else if !hypervisor {
        reason.push_str(
            "; this is bare metal, and SNP-derived keys exist only inside an SEV-SNP guest VM",
        );
    } else if !snp_flag {
        reason.push_str("; this VM is not an SEV-SNP guest (the CPU flags have no sev_snp)");
    } else {
        reason.push_str(
            "; the CPU reports SEV-SNP but the sev-guest driver is not loaded (modprobe sev-guest)",
        );
    }
    SnpAvailability::NotAvailable { reason }
}

/// The real firmware through `/dev/sev-guest`.
pub struct SevGuest(Firmware);

impl fmt::Debug for SevGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SevGuest(/dev/sev-guest)")
    }
}

impl SevGuest {
    /// Opens `/dev/sev-guest`.
    ///
    /// # Errors
    /// [`SnpFirmwareError::NotAvailable`] with the reason when it cannot.
    pub fn open() -> Result<SevGuest, SnpFirmwareError> {
        if let SnpAvailability::NotAvailable { reason } = availability() {
            return Err(SnpFirmwareError::NotAvailable(reason));
        }
        Firmware::open()
            .map(SevGuest)
            .map_err(|e| SnpFirmwareError::NotAvailable(format!("cannot open /dev/sev-guest: {e}")))
    }
}

impl SnpFirmware for SevGuest {
    fn derived_key(&mut self, r: &SnpKeyRequest) -> Result<Zeroizing<[u8; 32]>, SnpFirmwareError> {
        let request = DerivedKey::new(
            r.root_key == SnpRootKey::Vmrk,
            GuestFieldSelect(r.field_select),
            r.vmpl,
            r.guest_svn,
            r.tcb_version,
            r.launch_mit_vector,
        );
        let version = if r.launch_mit_vector.is_some() {
            Some(2)
        } else {
            Some(1)
        };
        let key =
            self.0
                .get_derived_key(version, request)
                .map_err(|e| SnpFirmwareError::Firmware {
                    request: "derived-key request",
                    reason: e.to_string(),
                })?;
        Ok(Zeroizing::new(key))
    }

    fn attestation_report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SnpFirmwareError> {
        self.0
            .get_report(None, Some(*report_data), None)
            .map_err(|e| SnpFirmwareError::Firmware {
                request: "attestation report",
                reason: e.to_string(),
            })
    }

    fn vcek_der(&mut self) -> Result<Option<Vec<u8>>, SnpFirmwareError> {
        let (_, certs) = self
            .0
            .get_ext_report(None, Some([0; 64]), None)
            .map_err(|e| SnpFirmwareError::Firmware {
                request: "extended report",
                reason: e.to_string(),
            })?;
        Ok(certs.and_then(|list| {
            list.into_iter()
                .find(|c| c.cert_type == sev::firmware::host::CertType::VCEK)
                .map(|c| c.data)
        }))
    }
}

/// The fields of an attestation report this crate uses.
#[derive(Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// Report format version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy bits.
    pub policy: u64,
    /// VMPL of the requester.
    pub vmpl: u32,
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Data the guest put in the report.
    pub report_data: [u8; 64],
    /// Host-provided data.
    pub host_data: [u8; 32],
    /// Chip identifier (may be masked).
    pub chip_id: [u8; 64],
}

impl fmt::Debug for SnpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SnpReport(v{} vmpl {} measurement {})",
            self.version,
            self.vmpl,
            short_hex(&self.measurement)
        )
    }
}

/// A report does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpReportError {
    /// Wrong length.
    #[error("an SEV-SNP attestation report is {REPORT_LEN} bytes, this one is {0}")]
    Length(usize),
    /// Unknown version.
    #[error("SEV-SNP report version {0} is not supported (2, 3 and 5 are)")]
    Version(u32),
    /// The `sev` crate refused it.
    #[error("the SEV-SNP report does not parse: {0}")]
    Parse(String),
}

fn parse_inner(bytes: &[u8]) -> Result<(SnpReport, AttestationReport), SnpReportError> {
    if bytes.len() != REPORT_LEN {
        return Err(SnpReportError::Length(bytes.len()));
    }
    let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if !matches!(version, 2 | 3 | 5) {
        return Err(SnpReportError::Version(version));
    }
    let r =
        AttestationReport::from_bytes(bytes).map_err(|e| SnpReportError::Parse(e.to_string()))?;
    let parsed = SnpReport {
        version: r.version,
        guest_svn: r.guest_svn,
        policy: r.policy.0,
        vmpl: r.vmpl,
        measurement: r.measurement,
        report_data: r.report_data,
        host_data: r.host_data,
        chip_id: r.chip_id,
    };
    Ok((parsed, r))
}

/// Parses an attestation report (bounded: exactly [`REPORT_LEN`] bytes).
///
/// # Errors
/// When it is not a well-formed report.
pub fn parse_report(bytes: &[u8]) -> Result<SnpReport, SnpReportError> {
    parse_inner(bytes).map(|(p, _)| p)
}

/// The AMD root of trust a report is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnpCa {
    /// AMD's Milan ARK/ASK (built into the `sev` crate).
    Milan,
    /// AMD's Genoa ARK/ASK.
    Genoa,
    /// AMD's Turin ARK/ASK.
    Turin,
    /// A given ARK and ASK in PEM (tests, private CAs).
    Custom {
        /// The root key certificate.
        ark_pem: Vec<u8>,
        /// The signing key certificate.
        ask_pem: Vec<u8>,
    },
}

/// A report does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpVerifyError {
    /// Bad report.
    #[error(transparent)]
    Report(#[from] SnpReportError),
    /// A certificate does not parse.
    #[error("the {which} certificate does not parse: {reason}")]
    Certificate {
        /// ARK, ASK or VCEK.
        which: &'static str,
        /// Why.
        reason: String,
    },
    /// A link of the chain does not verify.
    #[error("SEV-SNP certificate chain broken: {link}: {reason}")]
    Chain {
        /// Which link.
        link: &'static str,
        /// Why.
        reason: String,
    },
    /// The report's signature does not verify with the VCEK.
    #[error("the SEV-SNP report signature does not verify with the VCEK: {0}")]
    Signature(String),
}

fn ca_chain(ca: &SnpCa) -> Result<ca::Chain, SnpVerifyError> {
    use sev::certs::snp::builtin::{genoa, milan, turin};
    let bad = |which: &'static str| {
        move |e: std::io::Error| SnpVerifyError::Certificate {
            which,
            reason: e.to_string(),
        }
    };
    Ok(match ca {
        SnpCa::Milan => ca::Chain {
            ark: milan::ark().map_err(bad("ARK"))?,
            ask: milan::ask().map_err(bad("ASK"))?,
        },
        SnpCa::Genoa => ca::Chain {
            ark: genoa::ark().map_err(bad("ARK"))?,
            ask: genoa::ask().map_err(bad("ASK"))?,
        },
        SnpCa::Turin => ca::Chain {
            ark: turin::ark().map_err(bad("ARK"))?,
            ask: turin::ask().map_err(bad("ASK"))?,
        },
        SnpCa::Custom { ark_pem, ask_pem } => {
            if ark_pem.len() > MAX_CA_PEM || ask_pem.len() > MAX_CA_PEM {
                return Err(SnpVerifyError::Certificate {
                    which: "CA",
                    reason: "PEM too large".into(),
                });
            }
            ca::Chain {
                ark: Certificate::from_pem(ark_pem).map_err(bad("ARK"))?,
                ask: Certificate::from_pem(ask_pem).map_err(bad("ASK"))?,
            }
        }
    })
}

/// Verifies a report: ARK self-signature, ARK → ASK, ASK → VCEK (RSA-PSS), then the report's
/// ECDSA P-384 signature with the VCEK. Returns the parsed report.
///
/// # Errors
/// Naming the link that failed.
pub fn verify_report(
    report: &[u8],
    vcek_der: &[u8],
    ca: &SnpCa,
) -> Result<SnpReport, SnpVerifyError> {
    let (parsed, raw) = parse_inner(report)?;
    if vcek_der.len() > MAX_VCEK_DER {
        return Err(SnpVerifyError::Certificate {
            which: "VCEK",
            reason: "larger than 4096 bytes".into(),
        });
    }
    let chain = ca_chain(ca)?;
    let vcek = Certificate::from_der(vcek_der).map_err(|e| SnpVerifyError::Certificate {
        which: "VCEK",
        reason: e.to_string(),
    })?;
    (&chain.ark, &chain.ark)
        .verify()
        .map_err(|e| SnpVerifyError::Chain {
            link: "ARK self-signature",
            reason: e.to_string(),
        })?;
    (&chain.ark, &chain.ask)
        .verify()
        .map_err(|e| SnpVerifyError::Chain {
            link: "ARK → ASK",
            reason: e.to_string(),
        })?;
    (&chain.ask, &vcek)
        .verify()
        .map_err(|e| SnpVerifyError::Chain {
            link: "ASK → VCEK",
            reason: e.to_string(),
        })?;
    (&vcek, &raw)
        .verify()
        .map_err(|e| SnpVerifyError::Signature(e.to_string()))?;
    Ok(parsed)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A firmware fake for unit tests: keys are BLAKE3 of a per-"chip" seed, the measurement and
    //! the request; reports are unsigned templates (signature checks live in tests/snp.rs).
    use super::*;

    pub(crate) struct FakeFirmware {
        pub seed: [u8; 32],
        pub measurement: [u8; 48],
        pub requests: Vec<SnpKeyRequest>,
        pub fail: bool,
    }

    impl FakeFirmware {
        pub(crate) fn new(measurement: [u8; 48]) -> Self {
            FakeFirmware {
                seed: [0x5e; 32],
                measurement,
                requests: Vec::new(),
                fail: false,
            }
        }
    }

    impl SnpFirmware for FakeFirmware {
        fn derived_key(
            &mut self,
            r: &SnpKeyRequest,
        ) -> Result<Zeroizing<[u8; 32]>, SnpFirmwareError> {
            self.requests.push(*r);
            if self.fail {
                return Err(SnpFirmwareError::NotAvailable(
                    "fake firmware switched off".into(),
                ));
            }
            let mut h = blake3::Hasher::new_keyed(&self.seed);
            if r.field_select & SnpKeyRequest::FIELD_MEASUREMENT != 0 {
                h.update(&self.measurement);
            }
            h.update(&r.field_select.to_le_bytes());
            h.update(&[u8::from(r.root_key == SnpRootKey::Vmrk)]);
            h.update(&r.vmpl.to_le_bytes());
            Ok(Zeroizing::new(*h.finalize().as_bytes()))
        }

        fn attestation_report(
            &mut self,
            report_data: &[u8; 64],
        ) -> Result<Vec<u8>, SnpFirmwareError> {
            let mut r = vec![0u8; REPORT_LEN];
            r[0] = 2; // version 2
            r[0x50..0x90].copy_from_slice(report_data);
            r[0x90..0xC0].copy_from_slice(&self.measurement);
            r[0x1A0..0x1A8].copy_from_slice(&[1; 8]); // a Turin-like chip id, not masked
            Ok(r)
        }

        fn vcek_der(&mut self) -> Result<Option<Vec<u8>>, SnpFirmwareError> {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_explains_why_not() {
        assert_eq!(
            availability_from(true, false, ""),
            SnpAvailability::Available
        );
        let bare = "flags\t\t: fpu vme sev sev_es sev_snp\n";
        let SnpAvailability::NotAvailable { reason } = availability_from(false, false, bare) else {
            panic!()
        };
        assert!(reason.contains("bare metal"), "{reason}");
        let host = availability_from(false, true, bare);
        assert!(
            matches!(host, SnpAvailability::NotAvailable { reason } if reason.contains("SEV host"))
        );
        let vm = "flags : fpu hypervisor\n";
        assert!(
            matches!(availability_from(false, false, vm), SnpAvailability::NotAvailable { reason } if reason.contains("not an SEV-SNP guest"))
        );
        let snp_vm = "flags : fpu hypervisor sev_snp\n";
        assert!(
            matches!(availability_from(false, false, snp_vm), SnpAvailability::NotAvailable { reason } if reason.contains("sev-guest"))
        );
    }

    #[test]
    fn this_machine_reports_something_sensible() {
        match availability() {
            SnpAvailability::Available => {}
            SnpAvailability::NotAvailable { reason } => {
                assert!(
                    reason.starts_with("/dev/sev-guest is not present"),
                    "{reason}"
                );
                let err = SevGuest::open().unwrap_err().to_string();
                assert!(err.contains("not available on this machine"), "{err}");
            }
        }
    }

    #[test]
    fn report_parser_is_bounded() {
        assert_eq!(parse_report(&[0; 10]), Err(SnpReportError::Length(10)));
        let mut r = vec![0u8; REPORT_LEN];
        r[0] = 9;
        assert_eq!(parse_report(&r), Err(SnpReportError::Version(9)));
        let mut fw = fake::FakeFirmware::new([7; 48]);
        let rep = fw.attestation_report(&[1; 64]).unwrap();
        let parsed = parse_report(&rep).unwrap();
        assert_eq!(parsed.measurement, [7; 48]);
        assert_eq!(parsed.report_data, [1; 64]);
    }
}
