//! TLS for peer release: a self-signed service certificate, and a client that accepts exactly
//! the certificate whose SHA-256 it recorded at enrollment (no CA, no name check).
//!
//! Only rustls with the `ring` provider is used. TLS protects the share in transit and
//! authenticates the service; the machine authenticates itself with its TPM quote, not with TLS.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use zeroize::Zeroizing;

use crate::pcr::sha256;
use crate::types::hex;

/// The TLS server name used by clients (the certificate is pinned, so it is only a label).
pub const SERVER_NAME: &str = "dw-keyd";

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Certificate generation failed.
    #[error("cannot generate the service certificate: {0}")]
    Generate(String),
    /// The certificate or key is unusable.
    #[error("the service certificate or key is unusable: {0}")]
    Config(String),
}

/// The service's certificate and private key (PKCS#8 DER).
pub struct ServerIdentity {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServerIdentity(sha256 {})",
            hex(&cert_fingerprint(&self.cert_der))
        )
    }
}

/// SHA-256 of a DER certificate: what a client pins.
#[must_use]
pub fn cert_fingerprint(cert_der: &[u8]) -> [u8; 32] {
    sha256(cert_der)
}

/// A new self-signed ECDSA P-256 certificate for the service.
///
/// # Errors
/// When key generation fails.
pub fn generate_server_identity() -> Result<ServerIdentity, TlsSetupError> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    Ok(ServerIdentity {
        cert_der: ck.cert.der().to_vec(),
        key_der: Zeroizing::new(ck.signing_key.serialize_der()),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The service's rustls configuration.
///
/// # Errors
/// When the certificate or key is unusable.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.to_vec()));
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(identity.cert_der.clone())], key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct PinnedVerifier {
    pinned: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = cert_fingerprint(end_entity.as_ref());
        if crate::audit::constant_time_eq(&got, &self.pinned) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the key-release service's certificate (sha256 {}) is not the one pinned at enrollment (sha256 {})",
                hex(&got),
                hex(&self.pinned)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration that trusts only the certificate with SHA-256 `pinned`.
///
/// # Errors
/// When the provider offers no protocol version (never with `ring`).
pub fn client_config(pinned: [u8; 32]) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let p = provider();
    let verifier = Arc::new(PinnedVerifier {
        pinned,
        algorithms: p.signature_verification_algorithms,
    });
    let cfg = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
