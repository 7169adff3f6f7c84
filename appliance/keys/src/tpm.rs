//! TPM 2.0 access through `tss-esapi` 7.x: sealing a wrapping key under a PolicyPCR (and
//! optionally PolicyAuthValue) policy, unsealing it, reading and extending PCRs, and quoting PCRs
//! with an attestation key for peer release.
//!
//! A [`Tpm`] owns a `tss_esapi::Context`, which is `!Send`: keep each `Tpm` on one thread.
//!
//! Keys used here are primary keys re-derived on every use from the hierarchy seeds with fixed
//! templates (nothing is stored in TPM NV memory):
//! - the storage root key (SRK): ECC P-256 restricted decryption key in the owner hierarchy (the
//!   TCG "SRK template"); sealed objects are its children. Clearing the TPM changes the owner
//!   seed, so sealed slots then fail with "the TPM's storage root key changed".
//! - the attestation key (AK): ECC P-256 restricted ECDSA-SHA256 signing key in the endorsement
//!   hierarchy. It survives an owner clear; the peer service enrols its public key.
//!
//! Sealing sends the wrapping key to the TPM inside an HMAC session salted with the SRK and
//! parameter encryption on; unsealing uses a salted policy session with response encryption, so
//! the key never crosses the bus in clear. The SRK's name is recorded at sealing and compared
//! before every unseal (a different SRK means the TPM was cleared, replaced, or is being
//! impersonated).

use std::path::Path;
use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, Data, Digest, DigestValues, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
    KeyedHashScheme, PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, Signature,
    SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, Error as TssError};
use zeroize::Zeroizing;

use crate::pcr::{PcrSelection, PcrValues, policy_digest, sha256};
use crate::secret::Pin;

/// The TCTI used on the appliance: the kernel's TPM resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Largest marshalled public area / private blob of a sealed object accepted from disk.
pub const MAX_SEALED_BLOB: usize = 512;
/// Largest TPM object name accepted (algorithm id + SHA-512 digest).
pub const MAX_NAME: usize = 66;

/// A connection to a TPM 2.0.
pub struct Tpm {
    ctx: Context,
    tcti: String,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tpm({})", self.tcti)
    }
}

/// The TPM could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum TpmOpenError {
    /// The TPM device node does not exist.
    #[error(
        "no TPM: {path} is not present (enable the TPM 2.0 in the firmware setup and check that the tpm_crb or tpm_tis driver is loaded)"
    )]
    DeviceAbsent {
        /// The device path the TCTI names.
        path: String,
    },
    /// The TCTI string is malformed.
    #[error("the TCTI \"{tcti}\" is not valid: {reason}")]
    BadTcti {
        /// The TCTI string.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// The TCTI library could not connect.
    #[error("cannot connect to the TPM through \"{tcti}\": {reason}")]
    Connect {
        /// The TCTI string.
        tcti: String,
        /// Why.
        reason: String,
    },
}

/// A TPM command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TpmError {
    /// A command returned an error.
    #[error("TPM {operation} failed: {reason}")]
    Command {
        /// What was being done.
        operation: &'static str,
        /// The TPM's or the TSS library's explanation.
        reason: String,
    },
    /// The TPM has no SHA-256 PCR bank allocated.
    #[error(
        "the TPM has no SHA-256 value for PCR {index}: allocate the SHA-256 PCR bank (tpm2_pcrallocate sha256:all) and reboot"
    )]
    NoSha256Bank {
        /// The PCR that could not be read.
        index: u8,
    },
    /// The TPM returned a value of an unexpected shape.
    #[error("the TPM returned an unexpected {what}")]
    Unexpected {
        /// What.
        what: &'static str,
    },
}

fn cmd(operation: &'static str) -> impl Fn(TssError) -> TpmError {
    move |e| TpmError::Command {
        operation,
        reason: e.to_string(),
    }
}

/// A wrapping key sealed to the TPM: what a TPM2 slot stores.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedObject {
    /// Name of the SRK the object was sealed under.
    pub srk_name: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the sealed object.
    pub public: Vec<u8>,
    /// The sealed object's `TPM2B_PRIVATE` contents (encrypted by the TPM).
    pub private: Vec<u8>,
    /// The object's authPolicy.
    pub policy_digest: [u8; 32],
}

/// Why an unseal failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UnsealError {
    /// The SRK differs from the one at sealing.
    #[error(
        "the TPM's storage root key is not the one this slot was sealed under (the TPM was cleared or replaced)"
    )]
    SrkChanged,
    /// The policy was not satisfied (PCR values differ from the sealed ones).
    #[error("the TPM refused the PCR policy")]
    PolicyFailed,
    /// The PIN was wrong.
    #[error("the PIN is wrong")]
    WrongPin,
    /// The TPM is in dictionary-attack lockout.
    #[error(
        "the TPM is in dictionary-attack lockout after too many wrong PINs; wait for the lockout to expire or reset it with the lockout authorization"
    )]
    Lockout,
    /// The stored blobs could not be loaded.
    #[error("the TPM cannot load the sealed object: {0}")]
    Load(String),
    /// Another TPM failure.
    #[error(transparent)]
    Tpm(#[from] TpmError),
}

/// The public part of the attestation key: an uncompressed P-256 point `04 || X || Y`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AkPublic(pub [u8; 65]);

/// A TPM2_Quote over a PCR selection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TpmQuote {
    /// The marshalled `TPMS_ATTEST` the TPM signed.
    pub attest: Vec<u8>,
    /// ECDSA P-256 signature `r || s` (each 32 bytes, big-endian) over SHA-256(attest).
    pub signature: [u8; 64],
    /// The PCR values read right after the quote (the verifier checks them against the quoted
    /// digest, so they cannot lie).
    pub pcrs: PcrValues,
}

fn pcr_slot(index: u8) -> Result<PcrSlot, TpmError> {
    PcrSlot::try_from(1u32 << u32::from(index)).map_err(cmd("PCR index conversion"))
}

fn pcr_handle(index: u8) -> Result<PcrHandle, TpmError> {
    const HANDLES: [PcrHandle; 24] = [
        PcrHandle::Pcr0,
        PcrHandle::Pcr1,
        PcrHandle::Pcr2,
        PcrHandle::Pcr3,
        PcrHandle::Pcr4,
        PcrHandle::Pcr5,
        PcrHandle::Pcr6,
        PcrHandle::Pcr7,
        PcrHandle::Pcr8,
        PcrHandle::Pcr9,
        PcrHandle::Pcr10,
        PcrHandle::Pcr11,
        PcrHandle::Pcr12,
        PcrHandle::Pcr13,
        PcrHandle::Pcr14,
        PcrHandle::Pcr15,
        PcrHandle::Pcr16,
        PcrHandle::Pcr17,
        PcrHandle::Pcr18,
        PcrHandle::Pcr19,
        PcrHandle::Pcr20,
        PcrHandle::Pcr21,
        PcrHandle::Pcr22,
        PcrHandle::Pcr23,
    ];
    HANDLES
        .get(usize::from(index))
        .copied()
        .ok_or(TpmError::Unexpected { what: "PCR index" })
}

fn selection_list(sel: PcrSelection) -> Result<tss_esapi::structures::PcrSelectionList, TpmError> {
    let slots: Vec<PcrSlot> = sel.indices().map(pcr_slot).collect::<Result<_, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("PCR selection"))
}

fn srk_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(cmd("SRK template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(cmd("SRK template"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("SRK template"))
}

fn ak_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(cmd("AK template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_signing_key(true)
                .with_is_decryption_key(false)
                .with_restricted(true)
                .build()
                .map_err(cmd("AK template"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("AK template"))
}

fn sealed_template(policy: &[u8; 32], with_pin: bool) -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        // Only the policy can authorise use; a PIN (authValue) is checked through
        // PolicyAuthValue and is then subject to dictionary-attack protection.
        .with_user_with_auth(false)
        .with_admin_with_policy(true)
        .with_no_da(!with_pin)
        .build()
        .map_err(cmd("sealed object template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(Digest::try_from(policy.to_vec()).map_err(cmd("policy digest"))?)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(cmd("sealed object template"))
}

fn ecc_param_32(p: &[u8]) -> Result<[u8; 32], TpmError> {
    // TPMs may strip leading zero bytes of an ECC parameter; left-pad to 32.
    if p.len() > 32 {
        return Err(TpmError::Unexpected {
            what: "ECC parameter size",
        });
    }
    let mut out = [0u8; 32];
    out[32 - p.len()..].copy_from_slice(p);
    Ok(out)
}

fn classify_unseal(e: TssError) -> UnsealError {
    if let TssError::Tss2Error(rc) = e {
        match rc.kind() {
            Some(Tss2ResponseCodeKind::PolicyFail | Tss2ResponseCodeKind::Value) => {
                return UnsealError::PolicyFailed;
            }
            Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                return UnsealError::WrongPin;
            }
            Some(Tss2ResponseCodeKind::Lockout) => return UnsealError::Lockout,
            _ => {}
        }
    }
    UnsealError::Tpm(TpmError::Command {
        operation: "unseal",
        reason: e.to_string(),
    })
}

impl Tpm {
    /// Connects through a TCTI: `device:/dev/tpmrm0` on the appliance,
    /// `swtpm:host=127.0.0.1,port=P` against swtpm.
    ///
    /// # Errors
    /// [`TpmOpenError::DeviceAbsent`] when a `device:` TCTI names a missing node, otherwise
    /// when the TCTI is malformed or the connection fails.
    pub fn open(tcti: &str) -> Result<Tpm, TpmOpenError> {
        if let Some(rest) = tcti
            .strip_prefix("device:")
            .or((tcti == "device").then_some(""))
        {
            let path = if rest.is_empty() { "/dev/tpmrm0" } else { rest };
            if !Path::new(path).exists() {
                return Err(TpmOpenError::DeviceAbsent {
                    path: path.to_string(),
                });
            }
        }
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmOpenError::BadTcti {
            tcti: tcti.to_string(),
            reason: e.to_string(),
        })?;
        let ctx = Context::new(conf).map_err(|e| TpmOpenError::Connect {
            tcti: tcti.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Tpm {
            ctx,
            tcti: tcti.to_string(),
        })
    }

    /// The TCTI this connection uses.
    #[must_use]
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Reads the SHA-256 values of the selected PCRs.
    ///
    /// # Errors
    /// When the TPM fails or has no SHA-256 bank.
    pub fn read_pcrs(&mut self, sel: PcrSelection) -> Result<PcrValues, TpmError> {
        let mut values = Vec::with_capacity(sel.len());
        // One PCR per read: a TPM returns at most 8 digests per call, and this keeps the
        // mapping from index to value trivial.
        for index in sel.indices() {
            let list = selection_list(
                PcrSelection::new(&[u32::from(index)])
                    .map_err(|_| TpmError::Unexpected { what: "PCR index" })?,
            )?;
            let (_, _, digests) = self
                .ctx
                .execute_without_session(|ctx| ctx.pcr_read(list))
                .map_err(cmd("PCR read"))?;
            let d = digests
                .value()
                .first()
                .ok_or(TpmError::NoSha256Bank { index })?;
            let v: [u8; 32] = d
                .value()
                .try_into()
                .map_err(|_| TpmError::NoSha256Bank { index })?;
            values.push(v);
        }
        PcrValues::new(sel, values).map_err(|_| TpmError::Unexpected { what: "PCR count" })
    }

    /// Extends PCR `index` of the SHA-256 bank with SHA-256(`data`). The boot chain does this
    /// on a real machine; tests and tools use it to simulate a measured change.
    ///
    /// # Errors
    /// When the TPM refuses (for example PCRs that need a higher locality).
    pub fn extend_pcr(&mut self, index: u8, data: &[u8]) -> Result<(), TpmError> {
        let handle = pcr_handle(index)?;
        let mut vals = DigestValues::new();
        vals.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(sha256(data).to_vec()).map_err(cmd("PCR extend"))?,
        );
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, vals))
            .map_err(cmd("PCR extend"))
    }

    /// Creates the SRK and returns its handle and name. The caller flushes the handle.
    fn srk(&mut self) -> Result<(KeyHandle, Vec<u8>), TpmError> {
        let template = srk_template()?;
        let handle = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(cmd("create SRK"))?
            .key_handle;
        match self
            .ctx
            .execute_without_session(|ctx| ctx.read_public(handle))
        {
            Ok((_, name, _)) => Ok((handle, name.value().to_vec())),
            Err(e) => {
                self.flush(handle.into());
                Err(cmd("read SRK name")(e))
            }
        }
    }

    fn flush(&mut self, handle: ObjectHandle) {
        // A failed flush leaves a transient object until the resource manager or a TPM restart
        // drops it; there is nothing better to do with the error.
        let _ = self.ctx.flush_context(handle);
    }

    fn salted_session(
        &mut self,
        srk: KeyHandle,
        kind: SessionType,
    ) -> Result<AuthSession, TpmError> {
        let session = self
            .ctx
            .start_auth_session(
                Some(srk),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd("start session"))?
            .ok_or(TpmError::Unexpected {
                what: "empty session handle",
            })?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(session, attrs, mask)
            .map_err(cmd("session attributes"))?;
        Ok(session)
    }

    /// Seals `secret` so that only a policy session satisfying PolicyPCR(`expected`) (and
    /// PolicyAuthValue with `pin`, if given) can unseal it. `expected` need not be the current
    /// PCR values: the policy is computed from them in software.
    pub(crate) fn seal(
        &mut self,
        secret: &[u8; 32],
        expected: &PcrValues,
        pin: Option<&Pin>,
    ) -> Result<SealedObject, TpmError> {
        let policy = policy_digest(expected, pin.is_some());
        let template = sealed_template(&policy, pin.is_some())?;
        let (srk, srk_name) = self.srk()?;
        let result = (|| {
            let session = self.salted_session(srk, SessionType::Hmac)?;
            let auth = match pin {
                Some(p) => Some(Auth::try_from(p.auth_value().to_vec()).map_err(cmd("PIN"))?),
                None => None,
            };
            let data = SensitiveData::try_from(secret.to_vec()).map_err(cmd("seal"))?;
            let created = self.ctx.execute_with_session(Some(session), |ctx| {
                ctx.create(srk, template, auth, Some(data), None, None)
            });
            let _ = self
                .ctx
                .flush_context(ObjectHandle::from(SessionHandle::from(session)));
            let created = created.map_err(cmd("seal"))?;
            let public = created
                .out_public
                .marshall()
                .map_err(cmd("marshal sealed public"))?;
            let private = created.out_private.value().to_vec();
            if public.len() > MAX_SEALED_BLOB || private.len() > MAX_SEALED_BLOB {
                return Err(TpmError::Unexpected {
                    what: "sealed object size",
                });
            }
            Ok(SealedObject {
                srk_name,
                public,
                private,
                policy_digest: policy,
            })
        })();
        self.flush(srk.into());
        result
    }

    /// Unseals a [`SealedObject`]. On [`UnsealError::PolicyFailed`], read the PCRs and compare
    /// them with the enrolled values to say which changed.
    pub(crate) fn unseal(
        &mut self,
        sealed: &SealedObject,
        selection: PcrSelection,
        pin: Option<&Pin>,
    ) -> Result<Zeroizing<[u8; 32]>, UnsealError> {
        let public = Public::unmarshall(&sealed.public)
            .map_err(|e| UnsealError::Load(format!("stored public area does not parse: {e}")))?;
        let private = Private::try_from(sealed.private.clone())
            .map_err(|e| UnsealError::Load(format!("stored private blob: {e}")))?;
        let (srk, srk_name) = self.srk()?;
        if srk_name != sealed.srk_name {
            self.flush(srk.into());
            return Err(UnsealError::SrkChanged);
        }
        let result = self.unseal_under(srk, public, private, selection, pin);
        self.flush(srk.into());
        result
    }

    fn unseal_under(
        &mut self,
        srk: KeyHandle,
        public: Public,
        private: Private,
        selection: PcrSelection,
        pin: Option<&Pin>,
    ) -> Result<Zeroizing<[u8; 32]>, UnsealError> {
        let object = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(srk, private, public))
            .map_err(|e| UnsealError::Load(e.to_string()))?;
        let result = (|| {
            if let Some(p) = pin {
                let auth = Auth::try_from(p.auth_value().to_vec()).map_err(cmd("PIN"))?;
                self.ctx
                    .tr_set_auth(object.into(), auth)
                    .map_err(cmd("set PIN"))?;
            }
            let session = self.salted_session(srk, SessionType::Policy)?;
            let out = (|| {
                let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
                if !selection.is_empty() {
                    let list = selection_list(selection)?;
                    // An empty digest makes the TPM use the current PCR values; a mismatch then
                    // surfaces as a policy failure at unseal.
                    self.ctx
                        .execute_without_session(|ctx| {
                            ctx.policy_pcr(policy, Digest::default(), list)
                        })
                        .map_err(classify_unseal)?;
                }
                if pin.is_some() {
                    self.ctx
                        .execute_without_session(|ctx| ctx.policy_auth_value(policy))
                        .map_err(classify_unseal)?;
                }
                let data = self
                    .ctx
                    .execute_with_session(Some(session), |ctx| ctx.unseal(object.into()))
                    .map_err(classify_unseal)?;
                let bytes = Zeroizing::new(data.value().to_vec());
                let mut out = Zeroizing::new([0u8; 32]);
                if bytes.len() != 32 {
                    return Err(UnsealError::Tpm(TpmError::Unexpected {
                        what: "unsealed size",
                    }));
                }
                out.copy_from_slice(&bytes);
                Ok(out)
            })();
            let _ = self
                .ctx
                .flush_context(ObjectHandle::from(SessionHandle::from(session)));
            out
        })();
        self.flush(object.into());
        result
    }

    /// The policy digest the TPM itself computes for PolicyPCR(`expected`) [+ PolicyAuthValue],
    /// using a trial session. Used to cross-check the software computation.
    ///
    /// # Errors
    /// When the TPM fails.
    pub fn trial_policy_digest(
        &mut self,
        expected: &PcrValues,
        with_pin: bool,
    ) -> Result<[u8; 32], TpmError> {
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Trial,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd("start trial session"))?
            .ok_or(TpmError::Unexpected {
                what: "empty session handle",
            })?;
        let result = (|| {
            let policy = PolicySession::try_from(session).map_err(cmd("trial session"))?;
            if !expected.selection().is_empty() {
                let list = selection_list(expected.selection())?;
                let d = Digest::try_from(expected.digest().to_vec()).map_err(cmd("PCR digest"))?;
                self.ctx
                    .execute_without_session(|ctx| ctx.policy_pcr(policy, d, list))
                    .map_err(cmd("trial PolicyPCR"))?;
            }
            if with_pin {
                self.ctx
                    .execute_without_session(|ctx| ctx.policy_auth_value(policy))
                    .map_err(cmd("trial PolicyAuthValue"))?;
            }
            let d = self
                .ctx
                .execute_without_session(|ctx| ctx.policy_get_digest(policy))
                .map_err(cmd("policy digest"))?;
            d.value().try_into().map_err(|_| TpmError::Unexpected {
                what: "policy digest size",
            })
        })();
        let _ = self
            .ctx
            .flush_context(ObjectHandle::from(SessionHandle::from(session)));
        result
    }

    fn ak(&mut self) -> Result<(KeyHandle, AkPublic), TpmError> {
        let template = ak_template()?;
        let created = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map_err(cmd("create attestation key"))?;
        let point = match &created.out_public {
            Public::Ecc { unique, .. } => unique.clone(),
            _ => {
                self.flush(created.key_handle.into());
                return Err(TpmError::Unexpected {
                    what: "attestation key type",
                });
            }
        };
        let (x, y) = match (
            ecc_param_32(point.x().value()),
            ecc_param_32(point.y().value()),
        ) {
            (Ok(x), Ok(y)) => (x, y),
            _ => {
                self.flush(created.key_handle.into());
                return Err(TpmError::Unexpected {
                    what: "attestation key point",
                });
            }
        };
        let mut public = [0u8; 65];
        public[0] = 4;
        public[1..33].copy_from_slice(&x);
        public[33..].copy_from_slice(&y);
        Ok((created.key_handle, AkPublic(public)))
    }

    /// The attestation key's public point (the same on every call: it is re-derived from the
    /// endorsement seed).
    ///
    /// # Errors
    /// When the TPM fails.
    pub fn attestation_key(&mut self) -> Result<AkPublic, TpmError> {
        let (handle, public) = self.ak()?;
        self.flush(handle.into());
        Ok(public)
    }

    /// Quotes the selected PCRs with `qualifying_data` (the verifier's nonce, hashed) and
    /// returns the signed attestation with the PCR values.
    ///
    /// # Errors
    /// When the TPM fails.
    pub fn quote(
        &mut self,
        selection: PcrSelection,
        qualifying_data: &[u8; 32],
    ) -> Result<TpmQuote, TpmError> {
        let (ak, _) = self.ak()?;
        let result = (|| {
            let list = selection_list(selection)?;
            let data = Data::try_from(qualifying_data.to_vec()).map_err(cmd("quote"))?;
            let (attest, signature) = self
                .ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.quote(ak, data, SignatureScheme::Null, list)
                })
                .map_err(cmd("quote"))?;
            let attest = attest.marshall().map_err(cmd("marshal quote"))?;
            let Signature::EcDsa(sig) = signature else {
                return Err(TpmError::Unexpected {
                    what: "quote signature algorithm",
                });
            };
            let mut rs = [0u8; 64];
            rs[..32].copy_from_slice(&ecc_param_32(sig.signature_r().value())?);
            rs[32..].copy_from_slice(&ecc_param_32(sig.signature_s().value())?);
            let pcrs = self.read_pcrs(selection)?;
            Ok(TpmQuote {
                attest,
                signature: rs,
                pcrs,
            })
        })();
        self.flush(ak.into());
        result
    }
}
