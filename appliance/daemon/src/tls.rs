//! The HTTPS certificate: self-signed, generated at first start, kept in `<state>/tls/`.
//!
//! People verify it by its SHA-256 fingerprint, which `dwd` prints and `/api/v1/info` returns;
//! `dw --fingerprint` pins it. Replacing `cert.pem`/`key.pem` with a CA-issued pair works too.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{OpError, OpResult};

/// A loaded certificate.
#[derive(Debug)]
pub struct Identity {
    /// rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, colon-separated hex.
    pub fingerprint: String,
}

fn write_private(path: &Path, data: &[u8]) -> OpResult<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| OpError::Internal(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| OpError::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Loads `<dir>/cert.pem` and `<dir>/key.pem`, generating them first if absent.
///
/// # Errors
/// [`OpError::Internal`] when they cannot be made or read.
pub fn load_or_create(dir: &Path) -> OpResult<Identity> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OpError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() && !names.iter().any(|n| n == h) {
                names.push(h.to_owned());
            }
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| OpError::Internal(format!("cannot generate a certificate: {e}")))?;
        // The key first: a certificate without its key is useless, the reverse is regenerated.
        write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())?;
        write_private(&cert_path, ck.cert.pem().as_bytes())?;
        tracing::info!(
            "generated a self-signed HTTPS certificate in {}",
            dir.display()
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| OpError::Internal(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| OpError::Internal(format!("{}: {e}", cert_path.display())))?;
    let leaf = certs.first().ok_or_else(|| {
        OpError::Internal(format!("{} holds no certificate", cert_path.display()))
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| OpError::Internal(format!("{}: {e}", key_path.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| OpError::Internal(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| OpError::Internal(format!("certificate and key do not fit: {e}")))?;
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
