//! Request header parsing and validation: anything accepted must be inside the export,
//! aligned, within the payload limit, and never a change to a read-only export.
#![no_main]

use dw_nbd::handshake::ExportLimits;
use dw_nbd::proto::{self, tflag};
use dw_nbd::transmission::{Command, validate_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) =
        proto::parse_request_header(data.get(..proto::REQUEST_HEADER_LEN).unwrap_or(data))
    else {
        return;
    };
    let tail = data.get(proto::REQUEST_HEADER_LEN..).unwrap_or(&[]);
    let byte = |i: usize| tail.get(i).copied().unwrap_or(0);
    let size = u64::from_be_bytes([
        byte(0),
        byte(1),
        byte(2),
        byte(3),
        byte(4),
        byte(5),
        byte(6),
        byte(7),
    ]);
    let minimum = 1u32 << (byte(8) % 17);
    let max_payload =
        (u32::from_be_bytes([byte(9), byte(10), byte(11), byte(12)]) | minimum) / minimum * minimum;
    let flags = u16::from_be_bytes([byte(13), byte(14)]) | tflag::HAS_FLAGS;
    let limits = ExportLimits {
        size,
        flags,
        minimum,
        preferred: minimum.max(512),
        max_payload,
    };
    let Ok(command) = validate_request(&header, &limits) else {
        return;
    };
    let read_only = flags & tflag::READ_ONLY != 0;
    match command {
        Command::Disconnect => assert_eq!(header.command, proto::cmd::DISC),
        Command::Flush => assert!(flags & tflag::SEND_FLUSH != 0),
        Command::Read { offset, length } | Command::Write { offset, length, .. } => {
            assert!(
                offset
                    .checked_add(u64::from(length))
                    .is_some_and(|e| e <= size)
            );
            assert!(length <= max_payload);
            assert!(offset % u64::from(minimum) == 0 && length % minimum == 0);
            assert!(!read_only || matches!(command, Command::Read { .. }));
        }
        Command::Trim { offset, length, .. } | Command::WriteZeroes { offset, length, .. } => {
            assert!(
                offset
                    .checked_add(u64::from(length))
                    .is_some_and(|e| e <= size)
            );
            assert!(!read_only);
            assert!(offset % u64::from(minimum) == 0 && length % minimum == 0);
        }
    }
});
