//! A client of the management API over the local Unix socket or HTTPS.
//!
//! One HTTP/1.1 connection per call: calls are administrative and rare, and a fresh connection
//! never carries state from an earlier failure. HTTPS certificates are verified by pinning the
//! SHA-256 fingerprint `dwd` prints at first start (its certificate is self-signed), or against
//! a CA certificate file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{ErrorBody, Event};
use crate::{Method, fill_path};

/// Largest response body read into memory.
const MAX_RESPONSE: usize = 64 << 20;
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an HTTPS server certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificate's SHA-256 fingerprint must be this.
    Fingerprint([u8; 32]),
    /// The certificate must chain to this CA (PEM file contents).
    CaPem(Vec<u8>),
}

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local Unix socket (acts as the administrator).
    Unix(PathBuf),
    /// HTTPS with a bearer token.
    Https {
        /// `host:port`.
        addr: String,
        /// Name to verify in the certificate (the host part of the URL).
        host: String,
        /// How the certificate is trusted.
        trust: Trust,
        /// Bearer token (session or API token); none only for login.
        token: Option<String>,
    },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error("cannot reach dwd at {target}: {source} (is dwd running? is the address right?)")]
    Connect {
        /// Where we tried.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS set-up or handshake failed (wrong fingerprint, untrusted certificate, ...).
    #[error("TLS with {target} failed: {detail}")]
    Tls {
        /// Where.
        target: String,
        /// Why.
        detail: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with dwd failed: {0}")]
    Http(String),
    /// The daemon answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code (see [`ErrorBody`]).
        code: String,
        /// Message.
        message: String,
    },
    /// The answer was not what this client understands.
    #[error("cannot decode the answer to {what}: {detail}")]
    Decode {
        /// Which call.
        what: String,
        /// Why.
        detail: String,
    },
    /// A URL or fingerprint given to the client is malformed.
    #[error("invalid client setting: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status, for API errors.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Decodes 64 hex digits into `out`, ignoring `:` separators and whitespace (fingerprints and
/// tokens are printed both ways). Writes into the caller's buffer so a secret can be decoded
/// straight into zeroizing memory. Returns false (with `out` unspecified) on anything else.
pub fn decode_hex32(s: &str, out: &mut [u8; 32]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        // Only hex digits count (u8::from_str_radix would also take a sign, as in "+1").
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut digits = s.bytes().filter(|c| *c != b':' && !c.is_ascii_whitespace());
    for byte in out.iter_mut() {
        let (Some(hi), Some(lo)) = (
            digits.next().and_then(nibble),
            digits.next().and_then(nibble),
        ) else {
            return false;
        };
        *byte = hi << 4 | lo;
    }
    digits.next().is_none()
}

/// Parses a fingerprint written as 64 hex digits, with or without `:` separators.
///
/// # Errors
/// [`ClientError::Invalid`] when it is not 32 bytes of hex.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], ClientError> {
    let mut out = [0u8; 32];
    if decode_hex32(s, &mut out) {
        Ok(out)
    } else {
        Err(ClientError::Invalid(format!(
            "fingerprint {s:?} is not a SHA-256 hash (64 hex digits)"
        )))
    }
}

/// Formats a fingerprint as colon-separated upper-case hex (as `dwd` prints it).
#[must_use]
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Pins the end-entity certificate by its SHA-256; signatures are still verified.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned {}",
                format_fingerprint(&got.as_ref().try_into().unwrap_or([0; 32])),
                format_fingerprint(&self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(match trust {
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaPem(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let mut reader = std::io::BufReader::new(pem.as_slice());
            let mut n = 0;
            for cert in rustls::pki_types::pem::PemObject::pem_reader_iter(&mut reader) {
                let cert: CertificateDer<'static> = cert.map_err(|e| e.to_string())?;
                roots.add(cert).map_err(|e| e.to_string())?;
                n += 1;
            }
            if n == 0 {
                return Err("the CA file holds no PEM certificate".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    })
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
}

impl Client {
    /// A client of the local socket.
    #[must_use]
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self {
            target: Target::Unix(path.into()),
        }
    }

    /// A client of `https://host:port`.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] for a malformed URL.
    pub fn https(url: &str, trust: Trust, token: Option<String>) -> Result<Self, ClientError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Invalid(format!("{url:?} is not an https:// URL")))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(ClientError::Invalid(format!("{url:?} has no host")));
        }
        let (host, addr) = if let Some(h) = authority.strip_prefix('[') {
            let host = h.split(']').next().unwrap_or_default().to_owned();
            let addr = if authority.contains("]:") {
                authority.to_owned()
            } else {
                format!("{authority}:443")
            };
            (host, addr)
        } else if let Some((h, _)) = authority.rsplit_once(':') {
            (h.to_owned(), authority.to_owned())
        } else {
            (authority.to_owned(), format!("{authority}:443"))
        };
        Ok(Self {
            target: Target::Https {
                addr,
                host,
                trust,
                token,
            },
        })
    }

    /// The same client with another bearer token (HTTPS only).
    #[must_use]
    pub fn with_token(mut self, new: Option<String>) -> Self {
        if let Target::Https { token, .. } = &mut self.target {
            *token = new;
        }
        self
    }

    /// Where it connects.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Unix(p) => format!("unix:{}", p.display()),
            Target::Https { addr, .. } => format!("https://{addr}"),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let target = self.describe();
        let fut = async {
            match &self.target {
                Target::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await.map_err(|source| {
                        ClientError::Connect {
                            target: target.clone(),
                            source,
                        }
                    })?;
                    Ok(Box::new(s) as Box<dyn Io>)
                }
                Target::Https {
                    addr, host, trust, ..
                } => {
                    let tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|source| ClientError::Connect {
                            target: target.clone(),
                            source,
                        })?;
                    let cfg = tls_config(trust).map_err(|detail| ClientError::Tls {
                        target: target.clone(),
                        detail,
                    })?;
                    let name = ServerName::try_from(host.clone()).map_err(|e| {
                        ClientError::Invalid(format!("{host:?} is not a valid server name: {e}"))
                    })?;
                    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ClientError::Tls {
                            target: target.clone(),
                            detail: e.to_string(),
                        })?;
                    Ok(Box::new(tls) as Box<dyn Io>)
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Connect {
                target: self.describe(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"),
            })?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            // Errors here surface to the sender as a failed request.
            let _ = conn.await;
        });
        let method = match method {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Delete => http::Method::DELETE,
        };
        let host = match &self.target {
            Target::Unix(_) => "localhost".to_owned(),
            Target::Https { addr, .. } => addr.clone(),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host)
            .header(
                http::header::USER_AGENT,
                concat!("dw/", env!("CARGO_PKG_VERSION")),
            );
        if let Target::Https { token: Some(t), .. } = &self.target {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let has_body = body.is_some();
        if has_body {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Sends a request to `path` and returns the status and the body (at most 64 MiB).
    ///
    /// # Errors
    /// [`ClientError`] for transport problems (API errors are returned as the status).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Calls the endpoint `operation` (see [`crate::ENDPOINTS`]) with path `params` and an
    /// optional JSON `body`; decodes the JSON answer (use `serde_json::Value` for `204`).
    ///
    /// # Errors
    /// [`ClientError::Api`] with the daemon's error, or transport and decoding errors.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        operation: &str,
        params: &[&str],
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let e = crate::endpoint(operation);
        let path = fill_path(e.path, params);
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                what: operation.to_owned(),
                detail: e.to_string(),
            })?),
            None if e.method == Method::Post || e.method == Method::Put => Some(b"{}".to_vec()),
            None => None,
        };
        let (status, bytes) = self.raw(e.method, &path, body).await?;
        decode(operation, status, &bytes)
    }

    /// Calls a text endpoint (metrics).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_text(&self, operation: &str) -> Result<String, ClientError> {
        let e = crate::endpoint(operation);
        let (status, bytes) = self.raw(e.method, e.path, None).await?;
        if (200..300).contains(&status) {
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        Err(api_error(status, &bytes))
    }

    /// Follows the event stream, calling `f` for each event until it returns `false` or the
    /// stream ends.
    ///
    /// # Errors
    /// Transport errors, or the daemon refusing the request.
    pub async fn events(&self, mut f: impl FnMut(Event) -> bool) -> Result<(), ClientError> {
        let resp = self.send(Method::Get, "/api/v1/events", None).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = http_body_util::Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            if buf.len() > MAX_RESPONSE {
                return Err(ClientError::Http("event larger than 64 MiB".into()));
            }
            while let Some(end) = find_blank_line(&buf) {
                let chunk: Vec<u8> = buf.drain(..end).collect();
                let text = String::from_utf8_lossy(&chunk);
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                let ev: Event = serde_json::from_str(&data).map_err(|e| ClientError::Decode {
                    what: "events".into(),
                    detail: e.to_string(),
                })?;
                if !f(ev) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Index just past the first `\n\n` (the end of one server-sent event).
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn api_error(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => ClientError::Api {
            status,
            code: b.code,
            message: b.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
        },
    }
}

fn decode<T: DeserializeOwned>(what: &str, status: u16, bytes: &[u8]) -> Result<T, ClientError> {
    if !(200..300).contains(&status) {
        return Err(api_error(status, bytes));
    }
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let fp = [0xABu8; 32];
        let s = format_fingerprint(&fp);
        assert_eq!(parse_fingerprint(&s).unwrap(), fp);
        assert_eq!(parse_fingerprint(&s.replace(':', "")).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(
            parse_fingerprint(&"+1".repeat(32)).is_err(),
            "a sign is not a digit"
        );
    }

    #[test]
    fn urls_parse() {
        let c =
            Client::https("https://10.0.0.1:8443/x", Trust::Fingerprint([0; 32]), None).unwrap();
        match c.target() {
            Target::Https { addr, host, .. } => {
                assert_eq!(addr, "10.0.0.1:8443");
                assert_eq!(host, "10.0.0.1");
            }
            Target::Unix(_) => unreachable!(),
        }
        let c = Client::https("https://[::1]:9", Trust::Fingerprint([0; 32]), None).unwrap();
        assert!(
            matches!(c.target(), Target::Https { addr, host, .. } if addr == "[::1]:9" && host == "::1")
        );
        assert!(Client::https("http://x", Trust::Fingerprint([0; 32]), None).is_err());
    }

    #[test]
    fn sse_framing() {
        assert_eq!(find_blank_line(b"data: {}\n\nrest"), Some(10));
        assert_eq!(find_blank_line(b"data: {}\n"), None);
    }

    #[test]
    fn errors_decode() {
        let e = api_error(404, br#"{"code":"not_found","message":"no array x"}"#);
        assert!(matches!(e, ClientError::Api { status: 404, ref code, .. } if code == "not_found"));
        let e = api_error(502, b"<html>");
        assert_eq!(e.status(), Some(502));
    }
}
