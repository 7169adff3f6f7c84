//! Fixed newstyle negotiation.
//!
//! [`Negotiation`] is the pure option state machine: it takes one option (code and payload)
//! and appends the encoded replies to a buffer, so it can be unit-tested and fuzzed without
//! I/O. [`negotiate`] drives it over an async stream with bounded reads.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::export::{BlockExport, ExportCatalog};
use crate::proto::{self, ClientFlags, DecodeError, handshake_flags, info, opt, rep, tflag};

/// Largest option payload the server reads; longer options get `NBD_REP_ERR_TOO_BIG`.
/// The biggest legitimate payload is `NBD_OPT_INFO` with a 4 KiB name.
pub const MAX_OPTION_PAYLOAD: u32 = 64 * 1024;
/// Options longer than [`MAX_OPTION_PAYLOAD`] but at most this long are read and discarded
/// before answering `NBD_REP_ERR_TOO_BIG`; longer ones end the connection.
pub const OPTION_DRAIN_LIMIT: u32 = 1024 * 1024;
/// Most options accepted on one connection before it is dropped.
pub const MAX_OPTIONS_PER_CONNECTION: u32 = 4096;

/// The handshake flags this server sends.
pub const SERVER_HANDSHAKE_FLAGS: u16 =
    handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;

/// What the server advertised for an export, and what it enforces on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`).
    pub flags: u16,
    /// Minimum block size: offsets and lengths must be multiples.
    pub minimum: u32,
    /// Preferred block size.
    pub preferred: u32,
    /// Largest read or write payload.
    pub max_payload: u32,
}

impl ExportLimits {
    /// Limits for `export` on a server that accepts payloads of at most `max_request_bytes`.
    /// Fails with a reason if the export's block sizes break the protocol's rules.
    pub fn for_export(export: &dyn BlockExport, max_request_bytes: u32) -> Result<Self, String> {
        let bs = export.block_sizes();
        bs.validate().map_err(|e| e.to_string())?;
        let mut max_payload = bs.maximum.min(max_request_bytes);
        max_payload -= max_payload % bs.minimum;
        if max_payload == 0 {
            return Err(format!(
                "maximum request size {max_request_bytes} is below the export's minimum block size {}",
                bs.minimum
            ));
        }
        // Largest power of two not above max_payload keeps "preferred <= maximum".
        let cap = 1u32 << (31 - max_payload.leading_zeros());
        let preferred = bs.preferred.min(cap).max(bs.minimum);
        let read_only = export.read_only();
        let mut flags = tflag::HAS_FLAGS;
        if read_only {
            flags |= tflag::READ_ONLY;
        }
        if export.can_flush() {
            flags |= tflag::SEND_FLUSH;
            if export.can_fua() && !read_only {
                flags |= tflag::SEND_FUA;
            }
        }
        if export.is_rotational() {
            flags |= tflag::ROTATIONAL;
        }
        if export.can_trim() && !read_only {
            flags |= tflag::SEND_TRIM;
        }
        if export.can_write_zeroes() && !read_only {
            flags |= tflag::SEND_WRITE_ZEROES;
        }
        if export.can_multi_conn() {
            flags |= tflag::CAN_MULTI_CONN;
        }
        Ok(Self {
            size: export.size(),
            flags,
            minimum: bs.minimum,
            preferred,
            max_payload,
        })
    }

    /// Whether a transmission flag is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// The export a client selected.
#[derive(Clone)]
pub struct NegotiatedExport {
    /// Name the client asked for (empty for the default export).
    pub name: String,
    /// The export.
    pub export: Arc<dyn BlockExport>,
    /// What was advertised.
    pub limits: ExportLimits,
}

impl std::fmt::Debug for NegotiatedExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NegotiatedExport")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the driver does after sending the replies of one option.
#[derive(Debug)]
pub enum OptionAction {
    /// Read the next option.
    Continue,
    /// The client aborted (`NBD_OPT_ABORT`, already acknowledged): close.
    Close,
    /// Drop the connection without a reply (the protocol offers no error reply here).
    Disconnect(String),
    /// Enter transmission with this export.
    Transmit(NegotiatedExport),
}

#[derive(Debug, Clone)]
enum Mode {
    Serve,
    /// Answer every option except `NBD_OPT_ABORT` with this error.
    Refuse {
        reply: u32,
        message: String,
    },
}

/// The option state machine of one connection.
pub struct Negotiation {
    catalog: Arc<dyn ExportCatalog>,
    client: ClientFlags,
    max_request_bytes: u32,
    mode: Mode,
}

impl std::fmt::Debug for Negotiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiation")
            .field("client", &self.client)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Negotiation {
    /// A negotiation serving `catalog` to a client that sent `client` flags.
    pub fn new(
        catalog: Arc<dyn ExportCatalog>,
        client: ClientFlags,
        max_request_bytes: u32,
    ) -> Self {
        Self {
            catalog,
            client,
            max_request_bytes,
            mode: Mode::Serve,
        }
    }

    /// A negotiation that refuses every option with `reply` (an `NBD_REP_ERR_*` value) and
    /// `message`, used to turn clients away politely.
    pub fn refusing(
        catalog: Arc<dyn ExportCatalog>,
        client: ClientFlags,
        reply: u32,
        message: String,
    ) -> Self {
        Self {
            catalog,
            client,
            max_request_bytes: 0,
            mode: Mode::Refuse { reply, message },
        }
    }

    /// Handles one option, appending every reply to `out`.
    pub fn handle_option(
        &mut self,
        option: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> OptionAction {
        if option == opt::ABORT {
            proto::put_option_reply(out, option, rep::ACK, &[]);
            return OptionAction::Close;
        }
        if let Mode::Refuse { reply, message } = &self.mode {
            if option == opt::EXPORT_NAME {
                return OptionAction::Disconnect(message.clone());
            }
            proto::put_option_error(out, option, *reply, message);
            return OptionAction::Continue;
        }
        match option {
            opt::EXPORT_NAME => self.export_name(payload, out),
            opt::LIST => {
                if payload.is_empty() {
                    for e in self.catalog.list() {
                        if e.name.len() <= proto::MAX_STRING_LEN {
                            proto::put_server_reply(out, &e.name, &e.description);
                        }
                    }
                    proto::put_option_reply(out, option, rep::ACK, &[]);
                } else {
                    proto::put_option_error(
                        out,
                        option,
                        rep::ERR_INVALID,
                        "NBD_OPT_LIST takes no data",
                    );
                }
                OptionAction::Continue
            }
            opt::INFO | opt::GO => self.info_or_go(option, payload, out),
            opt::STARTTLS => {
                proto::put_option_error(
                    out,
                    option,
                    rep::ERR_UNSUP,
                    "TLS is not supported by this NBD server; reach it over a trusted network or a Unix socket",
                );
                OptionAction::Continue
            }
            opt::STRUCTURED_REPLY => {
                proto::put_option_error(
                    out,
                    option,
                    rep::ERR_UNSUP,
                    "structured replies are not implemented; this server uses simple replies",
                );
                OptionAction::Continue
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                proto::put_option_error(
                    out,
                    option,
                    rep::ERR_INVALID,
                    "metadata contexts need structured replies, which this server does not offer",
                );
                OptionAction::Continue
            }
            _ => {
                proto::put_option_error(
                    out,
                    option,
                    rep::ERR_UNSUP,
                    &format!("option {option} is not supported by this server"),
                );
                OptionAction::Continue
            }
        }
    }

    fn export_name(&self, payload: &[u8], out: &mut Vec<u8>) -> OptionAction {
        let name = match proto::parse_export_name(payload) {
            Ok(n) => n,
            Err(e) => return OptionAction::Disconnect(format!("NBD_OPT_EXPORT_NAME: {e}")),
        };
        let Some(export) = self.catalog.open(name) else {
            return OptionAction::Disconnect(format!(
                "NBD_OPT_EXPORT_NAME asked for unknown export {name:?}"
            ));
        };
        let limits = match ExportLimits::for_export(export.as_ref(), self.max_request_bytes) {
            Ok(l) => l,
            Err(reason) => {
                return OptionAction::Disconnect(format!("export {name:?} is unusable: {reason}"));
            }
        };
        if limits.minimum > 1 {
            return OptionAction::Disconnect(format!(
                "export {name:?} needs {}-byte aligned requests, but NBD_OPT_EXPORT_NAME cannot \
                 tell the client; use a client that sends NBD_OPT_GO",
                limits.minimum
            ));
        }
        proto::put_export_name_reply(out, limits.size, limits.flags, self.client.no_zeroes);
        OptionAction::Transmit(NegotiatedExport {
            name: name.to_owned(),
            export,
            limits,
        })
    }

    fn info_or_go(&self, option: u32, payload: &[u8], out: &mut Vec<u8>) -> OptionAction {
        let request = match proto::parse_info_request(payload) {
            Ok(r) => r,
            Err(e) => {
                proto::put_option_error(out, option, rep::ERR_INVALID, &e.to_string());
                return OptionAction::Continue;
            }
        };
        let name = request.name;
        let Some(export) = self.catalog.open(name) else {
            proto::put_option_error(
                out,
                option,
                rep::ERR_UNKNOWN,
                &format!("there is no export named {name:?}"),
            );
            return OptionAction::Continue;
        };
        let limits = match ExportLimits::for_export(export.as_ref(), self.max_request_bytes) {
            Ok(l) => l,
            Err(reason) => {
                proto::put_option_error(
                    out,
                    option,
                    rep::ERR_UNKNOWN,
                    &format!("export {name:?} is unusable: {reason}"),
                );
                return OptionAction::Continue;
            }
        };
        let wants = |t: u16| request.requests.contains(&t);
        proto::put_info_export(out, option, limits.size, limits.flags);
        if wants(info::NAME) {
            proto::put_info_string(out, option, info::NAME, name);
        }
        if wants(info::DESCRIPTION)
            && let Some(d) = self.catalog.describe(name).filter(|d| !d.is_empty())
        {
            proto::put_info_string(out, option, info::DESCRIPTION, &d);
        }
        // Always sent: it is how clients learn the maximum payload.
        proto::put_info_block_size(
            out,
            option,
            limits.minimum,
            limits.preferred,
            limits.max_payload,
        );
        if limits.minimum > 1 && !wants(info::BLOCK_SIZE) {
            proto::put_option_error(
                out,
                option,
                rep::ERR_BLOCK_SIZE_REQD,
                &format!(
                    "export {name:?} needs {}-byte aligned requests; request NBD_INFO_BLOCK_SIZE",
                    limits.minimum
                ),
            );
            return OptionAction::Continue;
        }
        proto::put_option_reply(out, option, rep::ACK, &[]);
        if option == opt::GO {
            OptionAction::Transmit(NegotiatedExport {
                name: name.to_owned(),
                export,
                limits,
            })
        } else {
            OptionAction::Continue
        }
    }
}

/// How negotiation ended without entering transmission.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// Reading or writing the socket failed (includes the client closing it).
    #[error("connection failed during negotiation: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that break the protocol.
    #[error("client broke the NBD handshake: {0}")]
    Protocol(#[from] DecodeError),
    /// The client does not speak fixed newstyle.
    #[error(
        "client does not speak fixed newstyle negotiation (client flags {0:#x}); only fixed newstyle clients are served"
    )]
    NotFixedNewstyle(u32),
    /// The connection was dropped on purpose.
    #[error("negotiation ended: {0}")]
    Disconnected(String),
    /// Too many options.
    #[error("client sent more than {MAX_OPTIONS_PER_CONNECTION} options")]
    TooManyOptions,
    /// An option payload was too large even to discard.
    #[error(
        "option {option} announced {length} bytes of data, more than the {OPTION_DRAIN_LIMIT}-byte limit"
    )]
    OptionTooLarge {
        /// Option code.
        option: u32,
        /// Announced length.
        length: u32,
    },
}

/// How a successful negotiation ended.
#[derive(Debug)]
pub enum NegotiateOutcome {
    /// The client selected an export.
    Transmit(NegotiatedExport),
    /// The client sent `NBD_OPT_ABORT`.
    Aborted,
}

/// Runs negotiation on `stream`: greeting, client flags, then options until the client
/// selects an export or aborts. `make` builds the state machine once the client flags are
/// known. Timeouts are the caller's business (wrap this future).
pub async fn negotiate<R, W>(
    rd: &mut R,
    wr: &mut W,
    make: impl FnOnce(ClientFlags) -> Negotiation,
) -> Result<NegotiateOutcome, NegotiateError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    wr.write_all(&proto::encode_greeting(SERVER_HANDSHAKE_FLAGS))
        .await?;
    wr.flush().await?;
    let raw_flags = rd.read_u32().await?;
    let client = proto::parse_client_flags(raw_flags)?;
    if !client.fixed_newstyle {
        return Err(NegotiateError::NotFixedNewstyle(raw_flags));
    }
    let mut negotiation = make(client);
    let mut payload = Vec::new();
    let mut out = Vec::with_capacity(512);
    for _ in 0..MAX_OPTIONS_PER_CONNECTION {
        let mut header = [0u8; proto::OPTION_HEADER_LEN];
        rd.read_exact(&mut header).await?;
        let header = proto::parse_option_header(&header)?;
        out.clear();
        if header.length > MAX_OPTION_PAYLOAD {
            if header.length > OPTION_DRAIN_LIMIT || header.option == opt::EXPORT_NAME {
                return Err(NegotiateError::OptionTooLarge {
                    option: header.option,
                    length: header.length,
                });
            }
            let drained = tokio::io::copy(
                &mut (&mut *rd).take(u64::from(header.length)),
                &mut tokio::io::sink(),
            )
            .await?;
            if drained != u64::from(header.length) {
                return Err(NegotiateError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            proto::put_option_error(
                &mut out,
                header.option,
                rep::ERR_TOO_BIG,
                &format!(
                    "option data of {} bytes exceeds the {MAX_OPTION_PAYLOAD}-byte limit",
                    header.length
                ),
            );
            wr.write_all(&out).await?;
            wr.flush().await?;
            continue;
        }
        let len = usize::try_from(header.length).unwrap_or(0);
        payload.resize(len, 0);
        rd.read_exact(&mut payload).await?;
        let action = negotiation.handle_option(header.option, &payload, &mut out);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
        match action {
            OptionAction::Continue => {}
            OptionAction::Close => return Ok(NegotiateOutcome::Aborted),
            OptionAction::Disconnect(reason) => return Err(NegotiateError::Disconnected(reason)),
            OptionAction::Transmit(t) => return Ok(NegotiateOutcome::Transmit(t)),
        }
    }
    Err(NegotiateError::TooManyOptions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{BlockSizes, StaticCatalog};
    use crate::memory::{MemoryExport, MemoryExportOptions};
    use crate::proto::{OPTION_REPLY_HEADER_LEN, parse_option_reply_header};

    fn catalog() -> Arc<dyn ExportCatalog> {
        let rw = Arc::new(MemoryExport::new(1 << 20).unwrap());
        let ro = Arc::new(
            MemoryExport::with_options(
                1 << 20,
                MemoryExportOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let aligned = Arc::new(
            MemoryExport::with_options(
                1 << 20,
                MemoryExportOptions {
                    block_sizes: BlockSizes {
                        minimum: 4096,
                        preferred: 4096,
                        maximum: 1 << 20,
                    },
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        Arc::new(
            StaticCatalog::new()
                .with_export("rw", "read-write volume", rw)
                .with_export("ro", "", ro)
                .with_export("aligned", "4k volume", aligned)
                .with_default("rw"),
        )
    }

    fn neg() -> Negotiation {
        Negotiation::new(
            catalog(),
            ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true,
            },
            32 << 20,
        )
    }

    /// Splits encoded option replies into (option, type, data).
    fn replies(out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let h = parse_option_reply_header(&out[at..at + OPTION_REPLY_HEADER_LEN]).unwrap();
            let start = at + OPTION_REPLY_HEADER_LEN;
            let end = start + usize::try_from(h.length).unwrap();
            v.push((h.option, h.reply_type, out[start..end].to_vec()));
            at = end;
        }
        v
    }

    fn info_payload(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&u16::try_from(reqs.len()).unwrap().to_be_bytes());
        for r in reqs {
            p.extend_from_slice(&r.to_be_bytes());
        }
        p
    }

    #[test]
    fn list_returns_every_export_then_ack() {
        let mut out = Vec::new();
        assert!(matches!(
            neg().handle_option(opt::LIST, &[], &mut out),
            OptionAction::Continue
        ));
        let r = replies(&out);
        assert_eq!(r.len(), 4);
        assert!(
            r[..3]
                .iter()
                .all(|(o, t, _)| *o == opt::LIST && *t == rep::SERVER)
        );
        // Sorted by name: name length, name, then the description as free text.
        assert_eq!(&r[0].2[..4], &7u32.to_be_bytes());
        assert_eq!(&r[0].2[4..], b"aligned4k volume");
        assert_eq!(&r[2].2[4..], b"rwread-write volume");
        assert_eq!(r[3].1, rep::ACK);
        out.clear();
        neg().handle_option(opt::LIST, &[1], &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
    }

    #[test]
    fn go_sends_export_name_description_block_size_and_ack() {
        let mut out = Vec::new();
        let action = neg().handle_option(
            opt::GO,
            &info_payload("rw", &[info::NAME, info::DESCRIPTION, info::BLOCK_SIZE]),
            &mut out,
        );
        let OptionAction::Transmit(t) = action else {
            panic!("GO did not enter transmission: {action:?}");
        };
        assert_eq!(t.name, "rw");
        let r = replies(&out);
        let types: Vec<u16> = r[..r.len() - 1]
            .iter()
            .map(|(_, t, d)| {
                assert_eq!(*t, rep::INFO);
                u16::from_be_bytes([d[0], d[1]])
            })
            .collect();
        assert_eq!(
            types,
            vec![
                info::EXPORT,
                info::NAME,
                info::DESCRIPTION,
                info::BLOCK_SIZE
            ]
        );
        let export = &r[0].2;
        assert_eq!(
            u64::from_be_bytes(export[2..10].try_into().unwrap()),
            1 << 20
        );
        let flags = u16::from_be_bytes(export[10..12].try_into().unwrap());
        for f in [
            tflag::HAS_FLAGS,
            tflag::SEND_FLUSH,
            tflag::SEND_FUA,
            tflag::SEND_TRIM,
            tflag::SEND_WRITE_ZEROES,
            tflag::CAN_MULTI_CONN,
        ] {
            assert_ne!(flags & f, 0, "flag {f:#x} missing");
        }
        assert_eq!(flags & tflag::READ_ONLY, 0);
        assert_eq!(&r[1].2[2..], b"rw");
        assert_eq!(&r[2].2[2..], b"read-write volume");
        let bs = &r[3].2;
        assert_eq!(u32::from_be_bytes(bs[2..6].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(bs[6..10].try_into().unwrap()), 4096);
        assert_eq!(u32::from_be_bytes(bs[10..14].try_into().unwrap()), 32 << 20);
        assert_eq!(r.last().unwrap().1, rep::ACK);
    }

    #[test]
    fn info_does_not_enter_transmission_and_default_export_works() {
        let mut out = Vec::new();
        assert!(matches!(
            neg().handle_option(opt::INFO, &info_payload("", &[]), &mut out),
            OptionAction::Continue
        ));
        assert_eq!(replies(&out).last().unwrap().1, rep::ACK);
    }

    #[test]
    fn read_only_flags() {
        let mut out = Vec::new();
        let OptionAction::Transmit(t) =
            neg().handle_option(opt::GO, &info_payload("ro", &[]), &mut out)
        else {
            panic!("GO on ro failed");
        };
        assert!(t.limits.has(tflag::READ_ONLY));
        assert!(!t.limits.has(tflag::SEND_TRIM));
        assert!(!t.limits.has(tflag::SEND_WRITE_ZEROES));
        assert!(!t.limits.has(tflag::SEND_FUA));
    }

    #[test]
    fn unknown_export_and_bad_payloads() {
        let mut out = Vec::new();
        neg().handle_option(opt::GO, &info_payload("nope", &[]), &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_UNKNOWN);
        out.clear();
        neg().handle_option(opt::GO, &[0, 0, 0, 9, b'x'], &mut out);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        out.clear();
        assert!(matches!(
            neg().handle_option(opt::EXPORT_NAME, b"nope", &mut out),
            OptionAction::Disconnect(_)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn block_size_required_for_aligned_exports() {
        let mut out = Vec::new();
        let a = neg().handle_option(opt::GO, &info_payload("aligned", &[]), &mut out);
        assert!(matches!(a, OptionAction::Continue));
        assert_eq!(replies(&out).last().unwrap().1, rep::ERR_BLOCK_SIZE_REQD);
        out.clear();
        let a = neg().handle_option(
            opt::GO,
            &info_payload("aligned", &[info::BLOCK_SIZE]),
            &mut out,
        );
        let OptionAction::Transmit(t) = a else {
            panic!("GO with block size failed");
        };
        assert_eq!(t.limits.minimum, 4096);
        assert_eq!(t.limits.max_payload, 1 << 20);
        out.clear();
        assert!(matches!(
            neg().handle_option(opt::EXPORT_NAME, b"aligned", &mut out),
            OptionAction::Disconnect(_)
        ));
    }

    #[test]
    fn export_name_reply() {
        let mut out = Vec::new();
        let OptionAction::Transmit(_) = neg().handle_option(opt::EXPORT_NAME, b"rw", &mut out)
        else {
            panic!("EXPORT_NAME failed");
        };
        assert_eq!(out.len(), 10, "NO_ZEROES negotiated: size + flags only");
        let mut n = Negotiation::new(
            catalog(),
            ClientFlags {
                fixed_newstyle: true,
                no_zeroes: false,
            },
            1 << 20,
        );
        out.clear();
        n.handle_option(opt::EXPORT_NAME, b"", &mut out);
        assert_eq!(out.len(), 134);
    }

    #[test]
    fn unsupported_options_keep_the_session() {
        for o in [
            opt::STARTTLS,
            opt::STRUCTURED_REPLY,
            opt::LIST_META_CONTEXT,
            opt::SET_META_CONTEXT,
            opt::EXTENDED_HEADERS,
            opt::PEEK_EXPORT,
            0,
            12345,
            u32::MAX,
        ] {
            let mut out = Vec::new();
            assert!(matches!(
                neg().handle_option(o, b"junk", &mut out),
                OptionAction::Continue
            ));
            let r = replies(&out);
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].0, o);
            assert_ne!(r[0].1 & rep::ERROR_BIT, 0);
            assert!(!r[0].2.is_empty(), "error replies carry a message");
        }
    }

    #[test]
    fn abort_acks_and_closes() {
        let mut out = Vec::new();
        assert!(matches!(
            neg().handle_option(opt::ABORT, &[], &mut out),
            OptionAction::Close
        ));
        assert_eq!(replies(&out)[0].1, rep::ACK);
    }

    #[test]
    fn refusing_mode() {
        let mut n = Negotiation::refusing(
            catalog(),
            ClientFlags {
                fixed_newstyle: true,
                no_zeroes: false,
            },
            rep::ERR_POLICY,
            "busy".into(),
        );
        let mut out = Vec::new();
        n.handle_option(opt::GO, &info_payload("rw", &[]), &mut out);
        let r = replies(&out);
        assert_eq!(
            (r[0].1, r[0].2.as_slice()),
            (rep::ERR_POLICY, b"busy".as_slice())
        );
        assert!(matches!(
            n.handle_option(opt::EXPORT_NAME, b"rw", &mut out),
            OptionAction::Disconnect(_)
        ));
    }

    #[test]
    fn limits_clamp_to_server_maximum() {
        let e = MemoryExport::with_options(
            1 << 30,
            MemoryExportOptions {
                block_sizes: BlockSizes {
                    minimum: 512,
                    preferred: 1 << 20,
                    maximum: 64 << 20,
                },
                ..Default::default()
            },
        )
        .unwrap();
        let l = ExportLimits::for_export(&e, 100_000).unwrap();
        assert_eq!(l.max_payload, 100_000 - 100_000 % 512);
        assert_eq!(l.preferred, 65536);
        assert!(l.preferred <= l.max_payload);
    }
}
