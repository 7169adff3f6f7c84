//! NBD wire format: constants, bounded parsers and encoders.
//!
//! Everything here is pure: parsers take byte slices of a known size, never trust a length
//! field beyond the bytes they were given, and return [`DecodeError`] instead of panicking.
//! All integers on the NBD wire are big-endian ("network byte order"), as the protocol
//! specification (`doc/proto.md` of the NBD project) requires; there is no version field
//! because the version is negotiated through flags and options.

use thiserror::Error;

/// `NBDMAGIC`: first eight bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle magic, sent by the server in the greeting and by the client before
/// every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple transmission reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Size of the server greeting: `NBDMAGIC`, `IHAVEOPT`, 16-bit handshake flags.
pub const GREETING_LEN: usize = 18;
/// Size of an option header sent by the client.
pub const OPTION_HEADER_LEN: usize = 16;
/// Size of a transmission request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Longest string (export name, description, message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;

/// Handshake flags (server to client).
pub mod handshake_flags {
    /// The server speaks fixed newstyle negotiation.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (client to server, 32 bits).
pub mod client_flags {
    /// The client speaks fixed newstyle negotiation.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// The client does not want the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u32 = 1 << 1;
    /// Every flag this server understands.
    pub const KNOWN: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Option codes (`NBD_OPT_*`).
pub mod opt {
    /// Select an export and enter transmission (no error reply possible).
    pub const EXPORT_NAME: u32 = 1;
    /// End negotiation.
    pub const ABORT: u32 = 2;
    /// List exports.
    pub const LIST: u32 = 3;
    /// Withdrawn extension.
    pub const PEEK_EXPORT: u32 = 4;
    /// Upgrade to TLS.
    pub const STARTTLS: u32 = 5;
    /// Ask about an export without selecting it.
    pub const INFO: u32 = 6;
    /// Ask about an export and select it.
    pub const GO: u32 = 7;
    /// Ask for structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
    /// Ask for 64-bit extended headers.
    pub const EXTENDED_HEADERS: u32 = 11;
}

/// Option reply types (`NBD_REP_*`).
pub mod rep {
    /// Option accepted / end of a list.
    pub const ACK: u32 = 1;
    /// One export in an `NBD_OPT_LIST` answer.
    pub const SERVER: u32 = 2;
    /// One piece of export information for `NBD_OPT_INFO` / `NBD_OPT_GO`.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    /// Bit set on every error reply.
    pub const ERROR_BIT: u32 = 1 << 31;
    /// Option unknown to this server.
    pub const ERR_UNSUP: u32 = ERROR_BIT | 1;
    /// Option forbidden by server policy.
    pub const ERR_POLICY: u32 = ERROR_BIT | 2;
    /// Option syntactically or semantically invalid.
    pub const ERR_INVALID: u32 = ERROR_BIT | 3;
    /// Option not supported on this platform.
    pub const ERR_PLATFORM: u32 = ERROR_BIT | 4;
    /// TLS required first.
    pub const ERR_TLS_REQD: u32 = ERROR_BIT | 5;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = ERROR_BIT | 6;
    /// Server is shutting down.
    pub const ERR_SHUTDOWN: u32 = ERROR_BIT | 7;
    /// The client must ask for block size information to use this export.
    pub const ERR_BLOCK_SIZE_REQD: u32 = ERROR_BIT | 8;
    /// Request or reply too large.
    pub const ERR_TOO_BIG: u32 = ERROR_BIT | 9;
}

/// Information types (`NBD_INFO_*`) inside `NBD_REP_INFO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// Canonical export name.
    pub const NAME: u16 = 1;
    /// Human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags (`NBD_FLAG_*`, 16 bits, sent with the export size).
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// The export behaves like a rotational medium.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is supported (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Several connections to the export see one consistent cache.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_RESIZE` is supported.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// `NBD_CMD_CACHE` is supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Command types (`NBD_CMD_*`).
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (payload follows the header).
    pub const WRITE: u16 = 1;
    /// Soft disconnect.
    pub const DISC: u16 = 2;
    /// Flush to stable storage.
    pub const FLUSH: u16 = 3;
    /// Discard.
    pub const TRIM: u16 = 4;
    /// Prefetch hint.
    pub const CACHE: u16 = 5;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
    /// Block status (structured replies only).
    pub const BLOCK_STATUS: u16 = 7;
    /// Resize.
    pub const RESIZE: u16 = 8;
}

/// Command flags (`NBD_CMD_FLAG_*`).
pub mod cmd_flag {
    /// Force unit access: persist before replying.
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_WRITE_ZEROES` must not punch a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Do not fragment a structured read reply.
    pub const DF: u16 = 1 << 2;
    /// One extent per block status reply.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Fail write-zeroes that would be slow.
    pub const FAST_ZERO: u16 = 1 << 4;
    /// Extended headers: length is a payload length.
    pub const PAYLOAD_LEN: u16 = 1 << 5;
}

/// Error values allowed in transmission replies.
pub mod errno {
    /// Operation not permitted (write to a read-only export).
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Cannot allocate memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument (bad flags, unaligned, beyond the end, unknown command).
    pub const EINVAL: u32 = 22;
    /// No space left (write beyond the end, volume full).
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Operation not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Why bytes received from a client could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The client flags contain bits this server does not know.
    #[error(
        "client flags {flags:#x} contain unknown bits {unknown:#x}; the server must drop the connection"
    )]
    UnknownClientFlags {
        /// Flags as received.
        flags: u32,
        /// The unknown bits.
        unknown: u32,
    },
    /// An option header did not start with `IHAVEOPT`.
    #[error(
        "option header magic {found:#018x} is not IHAVEOPT; the client is not speaking newstyle NBD"
    )]
    BadOptionMagic {
        /// Magic as received.
        found: u64,
    },
    /// A request header did not start with the request magic.
    #[error("request magic {found:#010x} is not {REQUEST_MAGIC:#010x}; the stream is out of sync")]
    BadRequestMagic {
        /// Magic as received.
        found: u32,
    },
    /// A fixed-size structure was given the wrong number of bytes.
    #[error("{what} needs {expected} bytes but {found} were given")]
    WrongLength {
        /// Structure being decoded.
        what: &'static str,
        /// Bytes required.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// A length field inside an option payload points outside the payload.
    #[error("{what} length {length} does not fit in an option payload of {payload} bytes")]
    LengthOutOfBounds {
        /// Field being decoded.
        what: &'static str,
        /// Declared length.
        length: u64,
        /// Bytes available.
        payload: usize,
    },
    /// A string is longer than the protocol allows.
    #[error("{what} is {length} bytes long; the protocol allows at most {MAX_STRING_LEN}")]
    StringTooLong {
        /// Field being decoded.
        what: &'static str,
        /// Declared length.
        length: usize,
    },
    /// A string is not valid UTF-8 or contains NUL.
    #[error("{what} is not a valid NBD string (UTF-8 without NUL)")]
    BadString {
        /// Field being decoded.
        what: &'static str,
    },
    /// An option payload has trailing or missing bytes.
    #[error("{what} payload is {found} bytes but its fields describe {expected}")]
    PayloadMismatch {
        /// Option being decoded.
        what: &'static str,
        /// Length implied by the fields.
        expected: usize,
        /// Length received.
        found: usize,
    },
}

/// Client flags after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle.
    pub fixed_newstyle: bool,
    /// The client asked to omit the 124 zero bytes.
    pub no_zeroes: bool,
}

/// One option header (`IHAVEOPT`, option, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option code (`NBD_OPT_*`).
    pub option: u32,
    /// Length of the option payload that follows.
    pub length: u32,
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Export name (empty selects the default export).
    pub name: &'a str,
    /// Information types requested (`NBD_INFO_*`), in the client's order.
    pub requests: Vec<u16>,
}

/// One transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub command: u16,
    /// Opaque handle echoed in the reply.
    pub handle: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Length in bytes (payload length for writes).
    pub length: u32,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn exact<'a>(
    what: &'static str,
    bytes: &'a [u8],
    expected: usize,
) -> Result<&'a [u8], DecodeError> {
    if bytes.len() == expected {
        Ok(bytes)
    } else {
        Err(DecodeError::WrongLength {
            what,
            expected,
            found: bytes.len(),
        })
    }
}

/// Validates the 32-bit client flags sent after the greeting.
pub fn parse_client_flags(raw: u32) -> Result<ClientFlags, DecodeError> {
    let unknown = raw & !client_flags::KNOWN;
    if unknown != 0 {
        return Err(DecodeError::UnknownClientFlags {
            flags: raw,
            unknown,
        });
    }
    Ok(ClientFlags {
        fixed_newstyle: raw & client_flags::FIXED_NEWSTYLE != 0,
        no_zeroes: raw & client_flags::NO_ZEROES != 0,
    })
}

/// Decodes a 16-byte option header.
pub fn parse_option_header(bytes: &[u8]) -> Result<OptionHeader, DecodeError> {
    let b = exact("option header", bytes, OPTION_HEADER_LEN)?;
    let magic = be_u64(b, 0);
    if magic != IHAVEOPT {
        return Err(DecodeError::BadOptionMagic { found: magic });
    }
    Ok(OptionHeader {
        option: be_u32(b, 8),
        length: be_u32(b, 12),
    })
}

/// Validates an NBD string: at most [`MAX_STRING_LEN`] bytes of UTF-8 without NUL.
pub fn parse_string<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(DecodeError::StringTooLong {
            what,
            length: bytes.len(),
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadString { what })?;
    if s.contains('\0') {
        return Err(DecodeError::BadString { what });
    }
    Ok(s)
}

/// Decodes the payload of `NBD_OPT_EXPORT_NAME` (the whole payload is the name).
pub fn parse_export_name(payload: &[u8]) -> Result<&str, DecodeError> {
    parse_string("export name", payload)
}

/// Decodes the payload of `NBD_OPT_INFO` / `NBD_OPT_GO`:
/// u32 name length, name, u16 count, count x u16 information types.
pub fn parse_info_request(payload: &[u8]) -> Result<InfoRequest<'_>, DecodeError> {
    const WHAT: &str = "NBD_OPT_INFO/NBD_OPT_GO";
    if payload.len() < 6 {
        return Err(DecodeError::PayloadMismatch {
            what: WHAT,
            expected: 6,
            found: payload.len(),
        });
    }
    let name_len = be_u32(payload, 0);
    let name_len_usize = usize::try_from(name_len).unwrap_or(usize::MAX);
    // 4 bytes of name length and 2 bytes of count must still fit after the name.
    if name_len_usize > payload.len() - 6 {
        return Err(DecodeError::LengthOutOfBounds {
            what: "export name",
            length: u64::from(name_len),
            payload: payload.len(),
        });
    }
    let name = parse_string("export name", &payload[4..4 + name_len_usize])?;
    let count_at = 4 + name_len_usize;
    let count = usize::from(be_u16(payload, count_at));
    let expected = count_at + 2 + count * 2;
    if expected != payload.len() {
        return Err(DecodeError::PayloadMismatch {
            what: WHAT,
            expected,
            found: payload.len(),
        });
    }
    let requests = payload[count_at + 2..]
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Ok(InfoRequest { name, requests })
}

/// Decodes a 28-byte transmission request header.
pub fn parse_request_header(bytes: &[u8]) -> Result<RequestHeader, DecodeError> {
    let b = exact("request header", bytes, REQUEST_HEADER_LEN)?;
    let magic = be_u32(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(DecodeError::BadRequestMagic { found: magic });
    }
    Ok(RequestHeader {
        flags: be_u16(b, 4),
        command: be_u16(b, 6),
        handle: be_u64(b, 8),
        offset: be_u64(b, 16),
        length: be_u32(b, 24),
    })
}

/// Encodes a request header (used by tests, fuzzers and the benchmark's own client).
pub fn encode_request_header(h: &RequestHeader) -> [u8; REQUEST_HEADER_LEN] {
    let mut b = [0u8; REQUEST_HEADER_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&h.flags.to_be_bytes());
    b[6..8].copy_from_slice(&h.command.to_be_bytes());
    b[8..16].copy_from_slice(&h.handle.to_be_bytes());
    b[16..24].copy_from_slice(&h.offset.to_be_bytes());
    b[24..28].copy_from_slice(&h.length.to_be_bytes());
    b
}

/// The server greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn encode_greeting(flags: u16) -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&flags.to_be_bytes());
    b
}

/// Encodes an option header (client side; used by tests and fuzzers).
pub fn encode_option_header(option: u32, length: u32) -> [u8; OPTION_HEADER_LEN] {
    let mut b = [0u8; OPTION_HEADER_LEN];
    b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[8..12].copy_from_slice(&option.to_be_bytes());
    b[12..16].copy_from_slice(&length.to_be_bytes());
    b
}

/// Appends one option reply to `out`. `data` longer than `u32::MAX` cannot occur: every reply
/// body this server builds is bounded by [`MAX_STRING_LEN`]-sized strings.
pub fn put_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::try_from(len).unwrap_or(0).min(data.len())]);
}

/// Appends an error reply carrying a human-readable message (truncated to
/// [`MAX_STRING_LEN`] at a character boundary).
pub fn put_option_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
    put_option_reply(out, option, reply_type, truncate_str(message).as_bytes());
}

/// Appends `NBD_REP_SERVER` for `NBD_OPT_LIST`: name length, name, description.
pub fn put_server_reply(out: &mut Vec<u8>, name: &str, description: &str) {
    let name = truncate_str(name);
    let description = truncate_str(description);
    let mut data = Vec::with_capacity(4 + name.len() + description.len());
    // truncate_str bounds the name to 4096 bytes, so the length fits in u32.
    let name_len = u32::try_from(name.len()).unwrap_or(0);
    data.extend_from_slice(&name_len.to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(description.as_bytes());
    put_option_reply(out, opt::LIST, rep::SERVER, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_EXPORT`: size and transmission flags.
pub fn put_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let mut data = [0u8; 12];
    data[0..2].copy_from_slice(&info::EXPORT.to_be_bytes());
    data[2..10].copy_from_slice(&size.to_be_bytes());
    data[10..12].copy_from_slice(&flags.to_be_bytes());
    put_option_reply(out, option, rep::INFO, &data);
}

/// Appends `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`).
pub fn put_info_string(out: &mut Vec<u8>, option: u32, info_type: u16, value: &str) {
    let value = truncate_str(value);
    let mut data = Vec::with_capacity(2 + value.len());
    data.extend_from_slice(&info_type.to_be_bytes());
    data.extend_from_slice(value.as_bytes());
    put_option_reply(out, option, rep::INFO, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn put_info_block_size(
    out: &mut Vec<u8>,
    option: u32,
    minimum: u32,
    preferred: u32,
    maximum: u32,
) {
    let mut data = [0u8; 14];
    data[0..2].copy_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    data[2..6].copy_from_slice(&minimum.to_be_bytes());
    data[6..10].copy_from_slice(&preferred.to_be_bytes());
    data[10..14].copy_from_slice(&maximum.to_be_bytes());
    put_option_reply(out, option, rep::INFO, &data);
}

/// Appends the answer to `NBD_OPT_EXPORT_NAME`: size, flags and (unless the client
/// negotiated `NO_ZEROES`) 124 zero bytes.
pub fn put_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

/// Encodes a simple reply header.
pub fn encode_simple_reply(error: u32, handle: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A decoded simple reply header (client side; tests and fuzzers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// Error value, 0 on success.
    pub error: u32,
    /// Handle of the request.
    pub handle: u64,
}

/// Decodes a simple reply header (client side; tests and fuzzers).
pub fn parse_simple_reply(bytes: &[u8]) -> Result<SimpleReply, DecodeError> {
    let b = exact("simple reply", bytes, SIMPLE_REPLY_LEN)?;
    let magic = be_u32(b, 0);
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(DecodeError::BadRequestMagic { found: magic });
    }
    Ok(SimpleReply {
        error: be_u32(b, 4),
        handle: be_u64(b, 8),
    })
}

/// A decoded option reply header (client side; tests and fuzzers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// Option being answered.
    pub option: u32,
    /// Reply type (`NBD_REP_*`).
    pub reply_type: u32,
    /// Length of the reply data.
    pub length: u32,
}

/// Size of an option reply header.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

/// Decodes a 20-byte option reply header (client side; tests and fuzzers).
pub fn parse_option_reply_header(bytes: &[u8]) -> Result<OptionReplyHeader, DecodeError> {
    let b = exact("option reply header", bytes, OPTION_REPLY_HEADER_LEN)?;
    let magic = be_u64(b, 0);
    if magic != OPTION_REPLY_MAGIC {
        return Err(DecodeError::BadOptionMagic { found: magic });
    }
    Ok(OptionReplyHeader {
        option: be_u32(b, 8),
        reply_type: be_u32(b, 12),
        length: be_u32(b, 16),
    })
}

/// Cuts a string to at most [`MAX_STRING_LEN`] bytes without splitting a character.
fn truncate_str(s: &str) -> &str {
    if s.len() <= MAX_STRING_LEN {
        return s;
    }
    let mut end = MAX_STRING_LEN;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting_layout() {
        let g = encode_greeting(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..18], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            parse_client_flags(3),
            Ok(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
        assert_eq!(
            parse_client_flags(0),
            Ok(ClientFlags {
                fixed_newstyle: false,
                no_zeroes: false
            })
        );
        assert!(matches!(
            parse_client_flags(4),
            Err(DecodeError::UnknownClientFlags { unknown: 4, .. })
        ));
    }

    #[test]
    fn option_header_roundtrip_and_bad_magic() {
        let h = encode_option_header(opt::GO, 77);
        assert_eq!(
            parse_option_header(&h),
            Ok(OptionHeader {
                option: opt::GO,
                length: 77
            })
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert!(matches!(
            parse_option_header(&bad),
            Err(DecodeError::BadOptionMagic { .. })
        ));
        assert!(matches!(
            parse_option_header(&h[..15]),
            Err(DecodeError::WrongLength { .. })
        ));
    }

    fn info_payload(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&u16::try_from(reqs.len()).unwrap().to_be_bytes());
        for r in reqs {
            p.extend_from_slice(&r.to_be_bytes());
        }
        p
    }

    #[test]
    fn info_request_parses() {
        let p = info_payload(b"vol1", &[info::NAME, info::BLOCK_SIZE]);
        let r = parse_info_request(&p).unwrap();
        assert_eq!(r.name, "vol1");
        assert_eq!(r.requests, vec![info::NAME, info::BLOCK_SIZE]);
        let empty = info_payload(b"", &[]);
        assert_eq!(parse_info_request(&empty).unwrap().name, "");
    }

    #[test]
    fn info_request_rejects_bad_lengths() {
        // Name length pointing past the payload.
        let mut p = info_payload(b"vol1", &[]);
        p[3] = 200;
        assert!(matches!(
            parse_info_request(&p),
            Err(DecodeError::LengthOutOfBounds { .. })
        ));
        // Name length u32::MAX.
        let mut p = info_payload(b"vol1", &[]);
        p[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_info_request(&p).is_err());
        // Count claims more requests than present.
        let mut p = info_payload(b"v", &[1]);
        let at = 4 + 1;
        p[at..at + 2].copy_from_slice(&5u16.to_be_bytes());
        assert!(matches!(
            parse_info_request(&p),
            Err(DecodeError::PayloadMismatch { .. })
        ));
        // Trailing garbage.
        let mut p = info_payload(b"v", &[1]);
        p.push(0);
        assert!(parse_info_request(&p).is_err());
        // Too short.
        assert!(parse_info_request(&[0, 0, 0]).is_err());
        // Invalid UTF-8 and NUL.
        assert!(matches!(
            parse_info_request(&info_payload(&[0xff, 0xfe], &[])),
            Err(DecodeError::BadString { .. })
        ));
        assert!(matches!(
            parse_info_request(&info_payload(b"a\0b", &[])),
            Err(DecodeError::BadString { .. })
        ));
    }

    #[test]
    fn export_name_limits() {
        assert_eq!(parse_export_name(b"disk"), Ok("disk"));
        assert!(parse_export_name(&[b'a'; MAX_STRING_LEN]).is_ok());
        assert!(matches!(
            parse_export_name(&[b'a'; MAX_STRING_LEN + 1]),
            Err(DecodeError::StringTooLong { .. })
        ));
    }

    #[test]
    fn request_header_roundtrip() {
        let h = RequestHeader {
            flags: cmd_flag::FUA,
            command: cmd::WRITE,
            handle: 0x0102_0304_0506_0708,
            offset: u64::MAX - 5,
            length: 4096,
        };
        let b = encode_request_header(&h);
        assert_eq!(parse_request_header(&b), Ok(h));
        let mut bad = b;
        bad[3] ^= 0x80;
        assert!(matches!(
            parse_request_header(&bad),
            Err(DecodeError::BadRequestMagic { .. })
        ));
    }

    #[test]
    fn option_reply_layout() {
        let mut out = Vec::new();
        put_option_error(&mut out, 42, rep::ERR_UNSUP, "nope");
        let h = parse_option_reply_header(&out[..OPTION_REPLY_HEADER_LEN]).unwrap();
        assert_eq!(h.option, 42);
        assert_eq!(h.reply_type, rep::ERR_UNSUP);
        assert_eq!(h.length, 4);
        assert_eq!(&out[OPTION_REPLY_HEADER_LEN..], b"nope");
    }

    #[test]
    fn long_strings_are_truncated_on_char_boundary() {
        let s = "é".repeat(MAX_STRING_LEN); // 2 bytes each
        let t = truncate_str(&s);
        assert!(t.len() <= MAX_STRING_LEN);
        assert!(t.len() >= MAX_STRING_LEN - 1);
        let mut out = Vec::new();
        put_server_reply(&mut out, &s, &s);
        let h = parse_option_reply_header(&out[..OPTION_REPLY_HEADER_LEN]).unwrap();
        assert_eq!(
            usize::try_from(h.length).unwrap(),
            out.len() - OPTION_REPLY_HEADER_LEN
        );
    }

    #[test]
    fn export_name_reply_zero_padding() {
        let mut out = Vec::new();
        put_export_name_reply(&mut out, 1 << 20, tflag::HAS_FLAGS, false);
        assert_eq!(out.len(), 8 + 2 + 124);
        out.clear();
        put_export_name_reply(&mut out, 1 << 20, tflag::HAS_FLAGS, true);
        assert_eq!(out.len(), 10);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_option_header(&bytes);
            let _ = parse_info_request(&bytes);
            let _ = parse_export_name(&bytes);
            let _ = parse_request_header(&bytes);
            let _ = parse_simple_reply(&bytes);
            let _ = parse_option_reply_header(&bytes);
            if bytes.len() >= 4 {
                let _ = parse_client_flags(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
            }
            if bytes.len() >= OPTION_HEADER_LEN {
                let _ = parse_option_header(&bytes[..OPTION_HEADER_LEN]);
            }
            if bytes.len() >= REQUEST_HEADER_LEN {
                let _ = parse_request_header(&bytes[..REQUEST_HEADER_LEN]);
            }
        }

        #[test]
        fn info_request_roundtrip(name in "[a-z0-9/_-]{0,64}", reqs in proptest::collection::vec(any::<u16>(), 0..32)) {
            let p = info_payload(name.as_bytes(), &reqs);
            let r = parse_info_request(&p).unwrap();
            prop_assert_eq!(r.name, name.as_str());
            prop_assert_eq!(r.requests, reqs);
        }

        #[test]
        fn request_header_roundtrip_prop(flags: u16, command: u16, handle: u64, offset: u64, length: u32) {
            let h = RequestHeader { flags, command, handle, offset, length };
            prop_assert_eq!(parse_request_header(&encode_request_header(&h)), Ok(h));
        }
    }
}
